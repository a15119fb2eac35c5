"""write_volume replaces the destination atomically: a failed or killed save never corrupts it."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_mentalmap.io import nifti
from napari_mentalmap.io.nifti import write_volume

REFERENCE = {"scale": (1.0, 1.0, 1.0), "translate": (0.0, 0.0, 0.0)}
SHAPE = (128, 128, 128)


def labels_volume(seed: int, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """Random uint8 labels (incompressible, so a gzip save takes a measurable time)."""
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def kill_after_ready(script_and_args: list[str], seconds: float) -> subprocess.Popen:
    """Run ``python -c SCRIPT ARGS``, wait for its "ready" line, let it save for ``seconds``, SIGKILL it."""
    process = subprocess.Popen([sys.executable, "-c", *script_and_args], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        time.sleep(seconds)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()
    return process


@pytest.mark.parametrize("name", ["seg.nii.gz", "seg.nii", "seg.mgz"])
def test_failed_save_keeps_previous_file(tmp_path: Path, monkeypatch, name: str) -> None:
    path = tmp_path / name
    old = labels_volume(0, (8, 9, 10))
    write_volume(path, old, REFERENCE, is_labels=True)
    assert leftovers(tmp_path) == []

    real_save = nib.save
    seen: list[str] = []

    def half_save(image, filename):
        seen.append(str(filename))
        real_save(image, filename)  # the temporary file is complete on disk ...
        with open(filename, "r+b") as handle:  # ... then cut in half, and the save "crashes"
            handle.truncate(os.path.getsize(filename) // 2)
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(nifti.nib, "save", half_save)
    with pytest.raises(OSError, match="simulated"):
        write_volume(path, labels_volume(1, (8, 9, 10)), REFERENCE, is_labels=True)

    # The save went to a hidden temporary in the same folder with the real suffix last.
    assert len(seen) == 1
    temporary = Path(seen[0])
    assert temporary.parent == tmp_path
    assert temporary.name.startswith(".seg.") and temporary.name.endswith(".tmp" + name[3:])
    # Previous file intact, temporary removed.
    np.testing.assert_array_equal(np.asanyarray(nib.load(str(path)).dataobj), old)
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_failed_first_save_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    def broken_save(image, filename):
        Path(filename).write_bytes(b"partial")
        raise RuntimeError("boom")

    monkeypatch.setattr(nifti.nib, "save", broken_save)
    with pytest.raises(RuntimeError, match="boom"):
        write_volume(tmp_path / "new.nii.gz", labels_volume(0, (4, 4, 4)), REFERENCE, is_labels=True)
    assert list(tmp_path.iterdir()) == []


def test_replace_keeps_mode_and_clears_cal_range(tmp_path: Path) -> None:
    path = tmp_path / "map.nii"
    write_volume(path, labels_volume(0, (4, 5, 6)), REFERENCE, is_labels=True)
    os.chmod(path, 0o640)
    source = nib.Nifti1Image(np.ones((4, 5, 6), np.float32), np.eye(4))
    source.header["cal_min"] = 10
    source.header["cal_max"] = 200
    reference = dict(REFERENCE, header=source.header.binaryblock, header_format="Nifti1Header")
    write_volume(path, np.zeros((4, 5, 6), np.float32), reference)
    image = nib.load(str(path))
    assert float(image.header["cal_min"]) == 0.0 and float(image.header["cal_max"]) == 0.0
    if os.name == "posix":
        assert (os.stat(path).st_mode & 0o777) == 0o640
    assert leftovers(tmp_path) == []


WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from napari_mentalmap.io.nifti import write_volume

    path = sys.argv[1]
    seeds = [int(s) for s in sys.argv[2:]]
    volumes = [np.random.default_rng(s).integers(0, 256, size={shape}, dtype=np.uint8) for s in seeds]
    reference = {{"scale": (1.0, 1.0, 1.0), "translate": (0.0, 0.0, 0.0)}}
    print("ready", flush=True)
    i = 0
    while True:
        write_volume(path, volumes[i % len(volumes)], reference, is_labels=True)
        i += 1
    """
).format(shape=SHAPE)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_killed_writer_never_corrupts_file(tmp_path: Path) -> None:
    path = tmp_path / "labels.nii.gz"
    old = labels_volume(0)
    new_seeds = (1, 2)
    candidates = [old] + [labels_volume(s) for s in new_seeds]
    write_volume(path, old, REFERENCE, is_labels=True)

    rng = random.Random(1234)
    seen = set()
    for _ in range(8):
        process = kill_after_ready([WRITER, str(path), *map(str, new_seeds)], rng.uniform(0.05, 0.6))
        assert process.returncode == -signal.SIGKILL

        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
        assert data.shape == SHAPE and data.dtype == np.uint8
        matches = [i for i, candidate in enumerate(candidates) if np.array_equal(data, candidate)]
        assert matches, "file after a killed save is neither the old nor a new volume"
        seen.add(matches[0])
    # Killed temporaries may remain (SIGKILL cannot be cleaned up) but are hidden and distinct.
    for name in leftovers(tmp_path):
        assert name.startswith(".labels.") and name.endswith(".tmp.nii.gz")


NAPARI_SAVER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import napari
    from napari.layers import Labels
    from napari_mentalmap._reader import read_nifti

    path, source = sys.argv[1], sys.argv[2]
    [(data, kwargs, _)] = read_nifti(source)
    kwargs = {k: v for k, v in kwargs.items() if k in ("name", "scale", "translate", "metadata", "units", "axis_labels")}
    layers = [Labels(np.asarray(np.random.default_rng(s).integers(0, 256, size=data.shape), np.uint8), **kwargs)
              for s in (1, 2)]
    print("ready", flush=True)
    i = 0
    while True:
        napari.save_layers(path, [layers[i % 2]], plugin="napari-mentalmap")
        i += 1
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_killed_napari_save_layers_never_corrupts_the_annotation(tmp_path: Path) -> None:
    """napari's save_layers with this plugin's writer, killed at random moments over an
    existing annotation: the file is always the old or a new annotation, never broken."""
    source = tmp_path / "reference.nii.gz"
    nib.save(nib.Nifti1Image(labels_volume(0, (96, 96, 96)), np.diag([1.0, 1.0, 1.0, 1.0])), str(source))
    path = tmp_path / "annotation.nii.gz"
    old = labels_volume(5, (96, 96, 96))
    write_volume(path, old, {"original_affine": np.eye(4).tolist(), "original_shape": [96, 96, 96]},
                 is_labels=True)
    from napari_mentalmap.io.nifti import from_canonical

    new = [np.random.default_rng(s).integers(0, 256, size=(96, 96, 96)).astype(np.uint8) for s in (1, 2)]
    candidates = [from_canonical(v, np.eye(4)) for v in (old, *new)]
    rng = random.Random(7)
    for _ in range(4):
        process = kill_after_ready([NAPARI_SAVER, str(path), str(source)], rng.uniform(0.05, 0.8))
        assert process.returncode == -signal.SIGKILL
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)  # readable, complete
        assert data.shape == (96, 96, 96) and data.dtype == np.uint8
        assert any(np.array_equal(data, candidate) for candidate in candidates), "neither old nor new"


def test_next_save_removes_stale_temporaries_of_its_target(tmp_path: Path) -> None:
    """Leftovers of killed saves go at the next save of the same file: a dead writer's (pid in
    the name, this host) at once, any other after STALE_TEMPORARY_SECONDS; a live writer's, a
    fresh one of unknown origin and other targets' are kept."""
    from napari_mentalmap.io import atomic

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    host = atomic._host_tag()
    try:
        names = {
            "dead": f".seg.{host}-{dead_pid}-0123456789ab.tmp.nii.gz",
            "old-unnamed": ".seg.0123456789ab.tmp.nii.gz",
            "old-other-host": f".seg.elsewhere-{live.pid}-0123456789ab.tmp.nii.gz",
            "live": f".seg.{host}-{live.pid}-0123456789ab.tmp.nii.gz",
            "fresh-unnamed": ".seg.ba9876543210.tmp.nii.gz",
            "other-target": f".seg2.{host}-{dead_pid}-0123456789ab.tmp.nii.gz",
            "other-suffix": f".seg.{host}-{dead_pid}-0123456789ab.tmp.nii",
        }
        for name in names.values():
            (tmp_path / name).write_bytes(b"half a volume")
        hours_ago = time.time() - 7200
        for key in ("old-unnamed", "old-other-host"):
            os.utime(tmp_path / names[key], (hours_ago, hours_ago))

        write_volume(tmp_path / "seg.nii.gz", labels_volume(0, (4, 4, 4)), REFERENCE, is_labels=True)

        kept = {"live", "fresh-unnamed", "other-target", "other-suffix"}
        assert leftovers(tmp_path) == sorted(names[key] for key in kept)
    finally:
        live.kill()
        live.wait()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_killed_save_leftover_is_gone_after_the_next_save(tmp_path: Path) -> None:
    path = tmp_path / "labels.nii.gz"
    write_volume(path, labels_volume(0), REFERENCE, is_labels=True)
    for delay in (0.3, 0.15, 0.5, 0.05, 0.8):  # until a kill lands inside a save
        process = kill_after_ready([WRITER, str(path), "1", "2"], delay)
        assert process.returncode == -signal.SIGKILL
        if leftovers(tmp_path):
            break
    assert leftovers(tmp_path), "no kill landed inside a save"
    write_volume(path, labels_volume(3), REFERENCE, is_labels=True)
    assert leftovers(tmp_path) == []
    np.testing.assert_array_equal(np.asanyarray(nib.load(str(path)).dataobj), labels_volume(3))
