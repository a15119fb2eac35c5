"""``mentalmap predict`` outputs that say what made them, never overwrite silently, and a cohort
split over shards, processes or machines (each file written exactly once)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_mentalmap import __version__, cli
from napari_mentalmap._sample_data import SAMPLE_FLAIR, SAMPLE_T1
from napari_mentalmap.checkpoints import shipped

CPU = ["--device", "cpu", "--threads", "1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def tiny_inputs(folder: Path, n: int = 5, broken: bool = False) -> list[Path]:
    """``n`` skull-stripped 12^3 "brains" (a noisy ball; the mask is their non-zero region)."""
    folder.mkdir(parents=True, exist_ok=True)
    z, y, x = np.mgrid[:12, :12, :12]
    ball = (z - 6) ** 2 + (y - 6) ** 2 + (x - 6) ** 2 < 20
    paths = []
    for i in range(n):
        data = np.where(ball, np.random.default_rng(i).uniform(50, 100, ball.shape), 0).astype(np.float32)
        paths.append(folder / f"s{i}.nii.gz")
        nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), str(paths[-1]))
    if broken:
        paths.append(folder / "s9_broken.nii.gz")
        paths[-1].write_bytes(paths[0].read_bytes()[:120])
    return paths


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sidecar(path: Path) -> dict:
    return json.loads(path.with_name(path.name.replace(".nii.gz", ".json").replace(".npz", ".json")).read_text())


def descrip(path: Path) -> str:
    return bytes(nib.load(str(path)).header["descrip"]).rstrip(b"\0").decode("ascii")


# --------------------------------------------------------------------------- never overwrite silently


def test_existing_outputs_are_refused_per_file_then_replaced_with_overwrite(tmp_path: Path, capsys) -> None:
    inputs = tiny_inputs(tmp_path / "in", n=2)
    out = tmp_path / "out"
    out.mkdir()
    earlier = out / "s0_brain_mask.nii.gz"
    earlier.write_bytes(b"yesterday's result")

    code = cli.main(["predict", "mask", "-i", str(tmp_path / "in"), "-o", str(out), *CPU])
    err = capsys.readouterr().err
    assert code == 1
    assert (f"FAILED {inputs[0]}: OutputExistsError: {earlier} already exists; nothing was replaced "
            "(pass --overwrite to replace it)") in err
    assert earlier.read_bytes() == b"yesterday's result"  # nothing lost
    assert sorted(p.name for p in out.iterdir()) == ["s0_brain_mask.nii.gz", "s1_brain_mask.json",
                                                     "s1_brain_mask.nii.gz"]  # the other file still done

    code = cli.main(["predict", "mask", "-i", str(inputs[1]), "-o", str(out), *CPU])
    assert code == 1 and "s1_brain_mask.nii.gz already exists (and 1 more)" in capsys.readouterr().err
    (out / "s1_brain_mask.nii.gz").unlink()  # a sidecar alone blocks too: it belongs to an earlier output
    code = cli.main(["predict", "mask", "-i", str(inputs[1]), "-o", str(out), *CPU])
    assert code == 1 and f"{out / 's1_brain_mask.json'} already exists;" in capsys.readouterr().err

    code = cli.main(["predict", "mask", "-i", str(tmp_path / "in"), "-o", str(out), "--overwrite", *CPU])
    assert code == 0, capsys.readouterr().err
    assert nib.load(str(earlier)).shape == (12, 12, 12) and sidecar(earlier)["map"] == "mask"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left


def test_inputs_with_the_same_stem_do_not_overwrite_each_other(tmp_path: Path, capsys) -> None:
    [first] = tiny_inputs(tmp_path / "in", n=1)
    twin = first.with_name("s0.nii")
    nib.save(nib.load(str(first)), str(twin))
    out = tmp_path / "out"
    code = cli.main(["predict", "mask", "-i", str(tmp_path / "in"), "-o", str(out), "--overwrite", *CPU])
    err = capsys.readouterr().err
    assert code == 1
    assert f"FAILED {first}: OutputExistsError: its outputs would have the names of s0.nii's" in err
    assert sidecar(out / "s0_brain_mask.nii.gz")["input"]["path"] == str(twin.absolute())


# --------------------------------------------------------------------------- sidecar and descrip


def test_sidecar_and_descrip_say_what_made_the_mask(tmp_path: Path) -> None:
    [source] = tiny_inputs(tmp_path / "in", n=1)
    out = tmp_path / "out"
    before = time.time()
    assert cli.main(["predict", "mask", "-i", str(source), "-o", str(out), *CPU]) == 0
    output = out / "s0_brain_mask.nii.gz"
    record = sidecar(output)
    weights = shipped("skullstrip").path
    assert record["output"] == output.name and record["map"] == "mask"
    assert record["package_version"] == __version__ and record["command"] == "mentalmap predict mask"
    assert record["method"].startswith("brain extraction")
    assert record["weights"] == {"path": str(weights.absolute()), "sha256": sha256(weights)}
    assert record["input"]["path"] == str(source.absolute()) and record["input"]["sha256"] == sha256(source)
    assert record["input"]["size"] == source.stat().st_size
    assert datetime.fromisoformat(record["date"]).timestamp() >= int(before)
    assert record["device"] == "cpu"
    assert record["command_line"] == ["mentalmap", "predict", "mask", "-i", str(source), "-o", str(out), *CPU]
    assert record["process"] == {"host": socket.gethostname(), "rank": 0, "world_size": 1, "shard": None}
    assert descrip(output) == f"mentalmap {__version__} mask w={sha256(weights)[:8]}"


def test_bruno_prints_and_records_the_contexts_it_chose(tmp_path: Path, capsys, tiny_bruno_weights) -> None:
    out = tmp_path / "out"
    code = cli.main(["predict", "bruno", "-i", str(SAMPLE_T1), "-o", str(out), "--n-contexts", "3",
                     "--weights", str(tiny_bruno_weights), *CPU])
    printed = capsys.readouterr().out
    assert code == 0
    line = next(line for line in printed.splitlines() if "context slices" in line)
    assert line.startswith(f"{SAMPLE_T1}: context slices ") and "evenly spaced over the axial slices" in line
    chosen = [int(v) for v in line.split("context slices ")[1].split(" ")[0].split(",")]
    assert len(chosen) == 3 and chosen == sorted(chosen)
    for kind in ("mean", "std"):
        record = sidecar(out / f"patient07_T1_2mm_bruno_{kind}.nii.gz")
        assert record["contexts"] == chosen and record["contexts_chosen"].startswith("3 evenly spaced")
        assert record["weights"]["sha256"] == sha256(tiny_bruno_weights)
        assert record["modality"]["expected"] == "T1" and record["map"] == kind
        text = descrip(out / f"patient07_T1_2mm_bruno_{kind}.nii.gz")
        assert text == f"mentalmap {__version__} bruno {kind} ctx=3 w={sha256(tiny_bruno_weights)[:8]}"
        assert len(text.encode()) <= 79


def test_anomaly_labels_record_the_threshold_they_were_cut_at(tmp_path: Path) -> None:
    from napari_mentalmap.inference.anomaly_methods import INTENSITY_METHOD, per_scan_sds
    from napari_mentalmap.inference.labels import threshold_labels

    out = tmp_path / "out"
    assert cli.main(["predict", "anomaly", "--model", "intensity", "--labels", "lesions", "-i", str(SAMPLE_FLAIR),
                     "-o", str(out), *CPU]) == 0
    labels_path = out / "patient07_FLAIR_2mm_anomaly_labels.nii.gz"
    record = sidecar(labels_path)
    assert record["threshold"]["sds"] == per_scan_sds(INTENSITY_METHOD, "positive", "lesions")  # Auto per scan
    assert np.isfinite(record["threshold"]["value"])
    assert record["threshold"]["chosen"].startswith("Auto for lesions") and record["weights"] is None
    assert record["method"] == INTENSITY_METHOD and record["min_component_voxels"] > 0
    # the recorded value reproduces the written labels from the written map
    anomaly = np.asanyarray(nib.load(str(out / "patient07_FLAIR_2mm_anomaly.nii.gz")).dataobj)
    labels = np.asanyarray(nib.load(str(labels_path)).dataobj) > 0
    assert np.array_equal(labels, threshold_labels(anomaly, record["threshold"]["value"],
                                                   record["min_component_voxels"]) > 0)
    assert descrip(labels_path) == f"mentalmap {__version__} anomaly intensity labels t={record['threshold']['value']:.4g}"
    assert "threshold" not in sidecar(out / "patient07_FLAIR_2mm_anomaly.nii.gz")

    given = float(np.percentile(anomaly[anomaly > 0], 99))  # flags voxels for sure
    assert cli.main(["predict", "anomaly", "--model", "intensity", "--threshold", str(given), "--overwrite",
                     "-i", str(SAMPLE_FLAIR), "-o", str(out), *CPU]) == 0
    record = sidecar(labels_path)
    assert record["threshold"] == {"value": given, "chosen": "given (--threshold)"}
    labels = np.asanyarray(nib.load(str(labels_path)).dataobj) > 0
    assert labels.any() and np.array_equal(labels, threshold_labels(anomaly, given, record["min_component_voxels"]) > 0)


# --------------------------------------------------------------------------- modality


def test_modality_mismatch_warns_and_strict_refuses(tmp_path: Path, capsys) -> None:
    from napari_mentalmap.inference.modality import classify_modality, modality_mismatch
    from napari_mentalmap.io.nifti import read_volume

    inputs = tmp_path / "in"
    inputs.mkdir()
    for sample in (SAMPLE_T1, SAMPLE_FLAIR):
        (inputs / sample.name).write_bytes(sample.read_bytes())
    t1, flair = inputs / SAMPLE_T1.name, inputs / SAMPLE_FLAIR.name

    code = cli.main(["predict", "anomaly", "--model", "intensity", "-i", str(inputs), "-o", str(tmp_path / "a"),
                     *CPU])
    err = capsys.readouterr().err
    assert code == 0
    warnings = [line for line in re.split(r"[\r\n]", err) if line.startswith("WARNING")]
    volume = read_volume(t1)
    expected = modality_mismatch(classify_modality(volume.data, volume.spacing), "FLAIR")
    assert expected and "T1-weighted" in expected
    assert warnings == [f"WARNING {t1}: {expected}"]  # one line, for the T1 only
    assert sidecar(tmp_path / "a" / "patient07_FLAIR_2mm_anomaly.nii.gz")["modality"]["matches"] is True

    code = cli.main(["predict", "anomaly", "--model", "intensity", "--strict", "-i", str(inputs),
                     "-o", str(tmp_path / "b"), *CPU])
    err = capsys.readouterr().err
    assert code == 1
    assert f"FAILED {t1}: ModalityMismatchError: this looks T1-weighted" in err and "--strict" in err
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["patient07_FLAIR_2mm_anomaly.json",
                                                                   "patient07_FLAIR_2mm_anomaly.nii.gz"]
    assert flair.exists()


def test_bruno_warns_on_a_flair(tmp_path: Path, capsys, tiny_bruno_weights) -> None:
    code = cli.main(["predict", "bruno", "-i", str(SAMPLE_FLAIR), "-o", str(tmp_path / "out"), "--contexts",
                     "30,40", "--weights", str(tiny_bruno_weights), "--strict", *CPU])
    err = capsys.readouterr().err
    assert code == 1 and f"FAILED {SAMPLE_FLAIR}: ModalityMismatchError: this looks FLAIR" in err
    assert not any((tmp_path / "out").iterdir())


# --------------------------------------------------------------------------- shards, processes, machines


def test_two_shards_cover_every_file_once(tmp_path: Path, capsys) -> None:
    inputs = tiny_inputs(tmp_path / "in", n=5)
    out = tmp_path / "out"
    written: dict[int, list[str]] = {}
    for shard in (0, 1):
        assert cli.main(["predict", "mask", "-i", str(tmp_path / "in"), "-o", str(out), "--shard", f"{shard}/2",
                         *CPU]) == 0
        written[shard] = sorted(line.split("/")[-1] for line in capsys.readouterr().out.splitlines()
                                if line.startswith("wrote "))
    names = [f"{p.name[:-7]}_brain_mask.nii.gz" for p in sorted(inputs)]
    assert written == {0: names[0::2], 1: names[1::2]}
    for k, name in enumerate(names):
        assert sidecar(out / name)["process"]["shard"] == f"{k % 2}/2"
    # an empty shard is not an error; a bad shard is a usage error
    assert cli.main(["predict", "mask", "-i", str(inputs[0]), "-o", str(out), "--shard", "1/2", *CPU]) == 0
    assert "shard 1/2 has no file (1 inputs)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        cli.main(["predict", "mask", "-i", str(inputs[0]), "-o", str(out), "--shard", "2/2"])
    assert usage.value.code == 2 and "0 <= I < N" in capsys.readouterr().err


def test_num_nodes_without_torchrun_or_slurm_is_refused(tmp_path: Path, capsys) -> None:
    tiny_inputs(tmp_path / "in", n=1)
    code = cli.main(["predict", "mask", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--num-nodes", "2",
                     *CPU])
    assert code == 2 and "--num-nodes 2 needs one process per node" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("launcher", [
    {"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "RANK": "0"},
    {"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "2", "SLURM_NTASKS": "2", "SLURM_JOB_NAME": "cohort"},
], ids=["torchrun", "srun"])
def test_processes_started_by_torchrun_without_num_nodes_are_refused(tmp_path: Path, capsys, monkeypatch,
                                                                     launcher: dict[str, str]) -> None:
    """Without --num-nodes/--devices every process would do every file: refused before any."""
    tiny_inputs(tmp_path / "in", n=1)
    for name, value in launcher.items():
        monkeypatch.setenv(name, value)
    code = cli.main(["predict", "mask", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *CPU])
    assert code == 2 and "2 processes were started (torchrun or srun) but each would do every file" in \
        capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_nodes_under_torchrun_write_every_file_exactly_once(tmp_path: Path) -> None:
    """Two "machines" on localhost (two torchrun launches, one process each, gloo on CPU)."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this Python")
    inputs = tiny_inputs(tmp_path / "in", n=5, broken=True)
    out = tmp_path / "out"
    port = _free_port()
    nodes = [subprocess.Popen(
        [str(torchrun), "--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "1", "--master-addr",
         "127.0.0.1", "--master-port", str(port), "-m", "napari_mentalmap.cli", "predict", "mask",
         "-i", str(tmp_path / "in"), "-o", str(out), "--num-nodes", "2", *CPU],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=ENV) for rank in (0, 1)]
    results = [node.communicate(timeout=240) for node in nodes]
    logs = "\n".join(stdout + stderr for stdout, stderr in results)
    # the broken file fails on the node that had it, and both nodes' exit codes say so
    assert [node.returncode for node in nodes] == [1, 1], logs[-3000:]
    assert logs.count(f"FAILED {tmp_path / 'in' / 's9_broken.nii.gz'}") == 1
    good = sorted(p for p in inputs if "broken" not in p.name)
    names = [f"{p.name[:-7]}_brain_mask.nii.gz" for p in good]
    wrote = sorted(line.split("/")[-1] for stdout, _ in results for line in stdout.splitlines()
                   if line.startswith("wrote "))
    assert wrote == names  # every file once, none twice
    assert sorted(p.name for p in out.iterdir()) == sorted(names + [n.replace(".nii.gz", ".json") for n in names])
    ranks = [sidecar(out / name)["process"] for name in names]
    assert [r["rank"] for r in ranks] == [k % 2 for k in range(len(names))]  # file k of the sorted list on rank k % 2
    assert {r["world_size"] for r in ranks} == {2}


# --------------------------------------------------------------------------- --help speed (imports)


def test_cli_import_and_help_import_no_torch() -> None:
    script = ("import sys, contextlib, io\n"
              "import napari_mentalmap.cli as cli\n"
              "heavy = ('torch', 'napari', 'scipy', 'lightning_fabric', 'nibabel')\n"
              "print(sorted(m for m in heavy if m in sys.modules))\n"
              "for argv in (['--help'], ['predict', '--help'], ['predict', 'bruno', '--help']):\n"
              "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
              "        cli.main(argv)\n"
              "    print(sorted(m for m in heavy[:4] if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:4] == ["[]"] * 4
