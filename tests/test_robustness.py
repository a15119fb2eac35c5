"""Bad input never costs work: every bad input gets a clear message and nothing is lost.

One test (or parametrized case) per row of ``docs/robustness.md``. Each asserts the message
the user gets (exception text, stderr of the command line, or the dock's error
notification) AND that nothing was lost: the input files unchanged, no (partial) output
files, an existing file untouched, the viewer's layers unchanged, the exit code.
Volumes are tiny synthetic ones written into ``tmp_path``; the bundled sample is used only
where a real brain is needed (predict, the dock).
"""

from __future__ import annotations

import gzip
import os
import pathlib
import re
import shutil
import stat
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_mentalmap import cli, predict
from napari_mentalmap._reader import napari_get_reader, read_nifti
from napari_mentalmap._sample_data import SAMPLE_FLAIR, SAMPLE_LESIONS, SAMPLE_T1
from napari_mentalmap.checkpoints import WeightsError, load_record, shipped
from napari_mentalmap.io.nifti import MAX_VOXELS_ENV, VolumeReadError, read_volume
from napari_mentalmap.widgets.mental_map import MentalMapWidget

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
SHAPE = (10, 12, 14)
TIMEOUT_MS = 30_000
CPU = ["--device", "cpu", "--threads", "1"]
T1_STEM = "patient07_T1_2mm"


# --------------------------------------------------------------------------- helpers


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path


def noise(shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    return np.random.default_rng(0).random(shape, dtype=np.float32)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden temporary files included) with its bytes."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def mentalmap(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run ``mentalmap ARGS`` in-process; (exit code, stderr + stdout)."""
    try:
        code = cli.main(args)
    except SystemExit as exit_:  # argparse usage errors
        code = exit_.code
    captured = capsys.readouterr()
    return int(code), captured.err + captured.out


def t1_folder(tmp_path: Path, name: str = "in") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    shutil.copy(SAMPLE_T1, folder / f"{T1_STEM}.nii.gz")
    return folder


class _Payload:
    """Unpickling this object creates ``marker`` (what a malicious weights file does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


# --------------------------------------------------------------------------- reader


def _not_nifti(folder: Path) -> Path:
    path = folder / "scan.nii.gz"
    path.write_text("patient notes, not an image")
    return path


def _truncated_gzip(folder: Path) -> Path:
    full = write_nifti(folder / "full.nii.gz", noise((20, 20, 20)))
    path = folder / "scan.nii.gz"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    return path


def _truncated_nii(folder: Path) -> Path:
    full = write_nifti(folder / "full.nii", noise())
    path = folder / "scan.nii"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    return path


def _empty_file(folder: Path) -> Path:
    path = folder / "scan.nii.gz"
    path.write_bytes(b"")
    return path


def _gzip_of_garbage(folder: Path) -> Path:
    path = folder / "scan.nii.gz"
    path.write_bytes(gzip.compress(b"\x00garbage" * 100))
    return path


def _two_d(folder: Path) -> Path:
    return write_nifti(folder / "scan.nii.gz", noise((12, 14)))


def _five_d(folder: Path) -> Path:
    return write_nifti(folder / "scan.nii.gz", noise((4, 4, 4, 2, 2)))


def _folder_named_nifti(folder: Path) -> Path:
    path = folder / "scan.nii.gz"
    path.mkdir()
    return path


BAD_FILES = {
    "not-nifti": (_not_nifti, r"scan\.nii\.gz is not a readable NIfTI/MGZ file"),
    "truncated-gzip": (_truncated_gzip, r"scan\.nii\.gz could not be read completely; the file looks truncated"),
    "truncated-nii": (_truncated_nii, r"scan\.nii could not be read completely; the file looks truncated"),
    "empty-file": (_empty_file, r"scan\.nii\.gz is not a readable NIfTI/MGZ file .*Empty file"),
    "gzip-of-garbage": (_gzip_of_garbage, r"scan\.nii\.gz is not a readable NIfTI/MGZ file"),
    "2d-image": (_two_d, r"has shape \(12, 14\): a 3-D volume is needed"),
    "5d-image": (_five_d, r"has 5 dimensions .* only 3-D volumes and 4-D series are supported"),
    "folder-named-nii": (_folder_named_nifti, r"scan\.nii\.gz is not a readable NIfTI/MGZ file"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_reader_refuses_bad_file(tmp_path: Path, case: str) -> None:
    make, message = BAD_FILES[case]
    path = make(tmp_path)
    before = snapshot(tmp_path)
    assert napari_get_reader(str(path)) is read_nifti  # claimed by its name ...
    with pytest.raises(VolumeReadError, match=message):  # ... then refused with a message naming it
        read_nifti(str(path))
    with pytest.raises(VolumeReadError, match=message):
        read_volume(path)
    assert snapshot(tmp_path) == before  # the file is untouched, nothing written next to it


def test_reader_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "gone.nii.gz"
    with pytest.raises(VolumeReadError, match=r"gone\.nii\.gz: no such file"):
        read_nifti(str(path))
    assert not path.exists() and snapshot(tmp_path) == {}


def test_reader_four_d_keeps_first_volume(tmp_path: Path) -> None:
    series = noise((*SHAPE, 3))
    path = write_nifti(tmp_path / "series.nii.gz", series)
    before = snapshot(tmp_path)
    with pytest.warns(UserWarning, match="4-D series of 3 volumes; showing the first only"):
        [(data, kwargs, layer_type)] = read_nifti(str(path))
    assert layer_type == "image" and data.ndim == 3
    first = read_volume(write_nifti(tmp_path / "first.nii.gz", series[..., 0]))
    np.testing.assert_array_equal(data, first.data)  # exactly the first volume, same orientation
    (tmp_path / "first.nii.gz").unlink()
    assert read_volume(path, four_d="channels").data.shape == (3, *data.shape)  # all kept on request
    assert snapshot(tmp_path) == before


def test_reader_nan_inf_voxels(tmp_path: Path) -> None:
    volume = noise()
    volume[0, 0, 0], volume[1, 1, 1], volume[2, 2, 2] = np.nan, np.inf, -np.inf
    path = write_nifti(tmp_path / "nan.nii.gz", volume)
    with pytest.warns(UserWarning, match="3 NaN/Inf voxels replaced by 0"):
        [(data, kwargs, _)] = read_nifti(str(path))
    assert np.isfinite(data).all() and np.isfinite(kwargs["contrast_limits"]).all()
    finite = volume[np.isfinite(volume)]
    assert np.allclose(np.sort(data[data != 0]), np.sort(finite[finite != 0]))  # every other voxel kept
    assert np.count_nonzero(~np.isfinite(np.asanyarray(nib.load(str(path)).dataobj))) == 3  # file untouched


def test_reader_all_zero_volume(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "zero.nii.gz", np.zeros(SHAPE, np.float32))
    with pytest.warns(UserWarning, match="every voxel is zero"):
        [(data, kwargs, layer_type)] = read_nifti(str(path))
    assert layer_type == "image" and not data.any()
    low, high = kwargs["contrast_limits"]
    assert high > low  # a usable display range, no division by zero


def test_reader_over_voxel_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_nifti(tmp_path / "big.nii.gz", noise())
    before = snapshot(tmp_path)
    monkeypatch.setenv(MAX_VOXELS_ENV, "1000")
    with pytest.raises(VolumeReadError, match=r"1,680 voxels .* above the limit of 1,000 voxels; .*MENTALMAP_MAX_VOXELS"):
        read_nifti(str(path))
    monkeypatch.delenv(MAX_VOXELS_ENV)
    assert read_nifti(str(path))[0][0].shape == SHAPE[::-1]  # readable once the limit allows it
    assert snapshot(tmp_path) == before


def test_reader_voxel_limit_not_a_number(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_nifti(tmp_path / "scan.nii.gz", noise())
    monkeypatch.setenv(MAX_VOXELS_ENV, "lots")
    with pytest.raises(ValueError, match="MENTALMAP_MAX_VOXELS='lots' is not a number of voxels"):
        read_nifti(str(path))
    assert snapshot(tmp_path)["scan.nii.gz"] == path.read_bytes()


def test_reader_label_image_becomes_labels_layer(tmp_path: Path) -> None:
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:5, 3:7, 4:9] = 1
    labels[6:8, 2:6, 1:4] = 3
    path = write_nifti(tmp_path / "seg.nii.gz", labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no note: nothing was changed
        [(data, kwargs, layer_type)] = read_nifti(str(path))
    assert layer_type == "labels" and np.issubdtype(data.dtype, np.integer)
    assert "contrast_limits" not in kwargs and "colormap" not in kwargs
    assert sorted(np.unique(data)) == [0, 1, 3] and np.bincount(data.ravel()).tolist() == np.bincount(
        labels.ravel()).tolist()


def test_viewer_open_corrupt_file_keeps_layers(make_napari_viewer, tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    viewer.add_image(noise(), name="work in progress")
    path = _truncated_gzip(tmp_path)
    with pytest.raises(Exception, match="could not be read completely; the file looks truncated") as error:
        viewer.open(str(path), plugin="napari-mentalmap")
    assert "scan.nii.gz" in str(error.value)
    assert [layer.name for layer in viewer.layers] == ["work in progress"]


# --------------------------------------------------------------------------- command line: inputs


def test_cli_no_inputs_in_empty_folder(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a volume")
    out = tmp_path / "out"
    code, text = mentalmap(["predict", "anomaly", "-i", str(empty), "-o", str(out), *CPU], capsys)
    assert code == 1
    assert f"no .nii/.nii.gz/.mgz files found for {empty}" in text
    assert not out.exists()


@pytest.mark.parametrize("pattern", ["nothing*.nii.gz", "missing.nii.gz"])
def test_cli_glob_or_path_matching_nothing(tmp_path: Path, capsys, pattern: str) -> None:
    out = tmp_path / "out"
    spec = str(tmp_path / pattern)
    code, text = mentalmap(["predict", "bruno", "-i", spec, "-o", str(out), "--contexts", "20,30", *CPU], capsys)
    assert code == 1
    assert f"no .nii/.nii.gz/.mgz files found for {spec}" in text
    assert not out.exists()


def test_cli_one_good_one_bad_file(tmp_path: Path, capsys) -> None:
    inputs = t1_folder(tmp_path)
    _truncated_gzip(inputs).rename(inputs / "broken.nii.gz")
    before = snapshot(inputs)
    out = tmp_path / "out"
    code, text = mentalmap(["predict", "bruno", "-i", str(inputs), "-o", str(out), "--contexts", "20,30,40", *CPU],
                           capsys)
    assert code == 1
    assert f"FAILED {inputs / 'broken.nii.gz'}: VolumeReadError" in text and "looks truncated" in text
    assert "1 of 2 file(s) failed" in text
    assert sorted(snapshot(out)) == [f"{T1_STEM}_bruno_{m}.{e}" for m in ("mean", "std") for e in ("json", "nii.gz")]
    assert snapshot(inputs) == before


def test_cli_file_deleted_between_listing_and_reading(tmp_path: Path, capsys, monkeypatch) -> None:
    inputs = t1_folder(tmp_path)
    doomed = write_nifti(inputs / "a_doomed.nii.gz", noise())
    real_collect = predict.collect_inputs

    def collect_then_delete(spec: str) -> list[Path]:
        paths = real_collect(spec)
        doomed.unlink()  # another program removes it after we listed it
        return paths

    monkeypatch.setattr(predict.runner, "collect_inputs", collect_then_delete)
    out = tmp_path / "out"
    code, text = mentalmap(["predict", "bruno", "-i", str(inputs), "-o", str(out), "--contexts", "20,30,40", *CPU],
                           capsys)
    assert code == 1
    assert f"FAILED {doomed}: VolumeReadError: {doomed}: no such file" in text
    assert "1 of 2 file(s) failed" in text
    assert sorted(snapshot(out)) == [f"{T1_STEM}_bruno_{m}.{e}" for m in ("mean", "std") for e in ("json", "nii.gz")]


@pytest.mark.parametrize("case", ["not-nifti", "2d-image"])
def test_cli_bad_single_file(tmp_path: Path, capsys, case: str) -> None:
    make, message = BAD_FILES[case]
    path = make(tmp_path)
    before = snapshot(tmp_path)
    out = tmp_path / "out"
    code, text = mentalmap(["predict", "anomaly", "-i", str(path), "-o", str(out), *CPU], capsys)
    assert code == 1
    assert f"FAILED {path}: VolumeReadError" in text
    assert re.search(message, text)
    assert snapshot(out) == {}  # no (partial) output
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("out")} == before


def test_cli_four_d_and_nan_inputs_are_reported(tmp_path: Path, capsys) -> None:
    t1 = np.asanyarray(nib.load(str(SAMPLE_T1)).dataobj).astype(np.float32)
    affine = nib.load(str(SAMPLE_T1)).affine
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_nifti(inputs / "series.nii.gz", np.stack([t1, t1 * 0.5], -1), affine)
    holes = t1.copy()
    holes[40, 50:60, 40:50] = np.nan
    holes[41, 50:60, 40:50] = np.inf
    write_nifti(inputs / "holes.nii.gz", holes, affine)
    out = tmp_path / "out"
    code, text = mentalmap(["predict", "bruno", "-i", str(inputs), "-o", str(out), "--contexts", "20,30,40", *CPU],
                           capsys)
    assert code == 0, text
    assert "series.nii.gz is a 4-D series of 2 volumes; showing the first only" in text
    assert "holes.nii.gz: 200 NaN/Inf voxels replaced by 0" in text
    for stem in ("series", "holes"):
        for kind in ("mean", "std"):
            image = nib.load(str(out / f"{stem}_bruno_{kind}.nii.gz"))
            assert image.shape == t1.shape and np.allclose(image.affine, affine)
            values = np.asanyarray(image.dataobj)
            if kind == "mean":
                assert np.isfinite(values).all()
            else:  # the std has no value (NaN) only where nothing is modelled (outside the brain); never Inf
                assert not np.isinf(values).any() and np.isfinite(values).any()


def test_cli_all_zero_volume(tmp_path: Path, capsys) -> None:
    path = write_nifti(tmp_path / "zero.nii.gz", np.zeros((40, 48, 40), np.float32))
    out = tmp_path / "out"
    code, text = mentalmap(["predict", "anomaly", "-i", str(path), "-o", str(out), *CPU], capsys)
    assert code == 1
    assert f"FAILED {path}: NoBrainError" in text and "no brain to find" in text
    assert "every voxel is zero" in text
    assert snapshot(out) == {}


def test_cli_over_voxel_limit(tmp_path: Path, capsys, monkeypatch) -> None:
    inputs = t1_folder(tmp_path)
    monkeypatch.setenv(MAX_VOXELS_ENV, "100000")
    out = tmp_path / "out"
    code, text = mentalmap(["predict", "bruno", "-i", str(inputs), "-o", str(out), "--n-contexts", "3", *CPU], capsys)
    assert code == 1
    assert "902,629 voxels" in text and "above the limit of 100,000 voxels" in text and MAX_VOXELS_ENV in text
    assert snapshot(out) == {}


def test_cli_label_image_given_as_image(tmp_path: Path, capsys) -> None:
    """A segmentation given to predict is refused (before: a silent, meaningless map)."""
    t1 = np.asanyarray(nib.load(str(SAMPLE_T1)).dataobj).astype(np.float32)
    low, high = np.percentile(t1[t1 > 0], [33, 66])
    tissue = np.where(t1 > 0, 1 + (t1 > low) + (t1 > high), 0).astype(np.uint8)
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_nifti(inputs / "tissue.nii.gz", tissue, nib.load(str(SAMPLE_T1)).affine)
    shutil.copy(SAMPLE_LESIONS, inputs / "lesions.nii.gz")
    out = tmp_path / "out"
    for command in (["anomaly"], ["bruno", "--n-contexts", "3"]):
        code, text = mentalmap(["predict", *command, "-i", str(inputs), "-o", str(out), *CPU], capsys)
        assert code == 1
        assert f"FAILED {inputs / 'tissue.nii.gz'}: ValueError" in text
        assert "tissue.nii.gz looks like a label map (segmentation or mask: 4 integer values), not an MRI image" in text
        assert "lesions.nii.gz looks like a label map" in text
        assert "2 of 2 file(s) failed" in text
        assert snapshot(out) == {}


# --------------------------------------------------------------------------- command line: output


def test_cli_output_is_an_existing_file(tmp_path: Path, capsys) -> None:
    target = tmp_path / "results.nii.gz"
    target.write_bytes(b"a result from yesterday")
    code, text = mentalmap(["predict", "bruno", "-i", str(SAMPLE_T1), "-o", str(target), "--contexts", "20,30", *CPU],
                           capsys)
    assert code == predict.EXIT_SETUP_FAILED == 2
    assert f"output folder {target} is an existing file; nothing was processed" in text
    assert "Traceback" not in text
    assert target.read_bytes() == b"a result from yesterday"
    assert sorted(snapshot(tmp_path)) == ["results.nii.gz"]


def test_cli_output_folder_not_writable(tmp_path: Path, capsys) -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root: file permissions are not enforced (see the simulated variant below)")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "keep.txt").write_text("keep")
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        for out in (locked, locked / "new"):
            code, text = mentalmap(["predict", "anomaly", "-i", str(SAMPLE_FLAIR), "-o", str(out), *CPU], capsys)
            assert code == 2
            assert "nothing was processed" in text and str(out) in text
            assert ("is not writable" in text) or ("cannot create the output folder" in text)
    finally:
        locked.chmod(stat.S_IRWXU)
    assert snapshot(locked) == {"keep.txt": b"keep"}


@pytest.mark.parametrize("case", ["cannot-create", "not-writable"])
def test_cli_output_folder_permission_simulated(tmp_path: Path, capsys, monkeypatch, case: str) -> None:
    """The same refusals with the permission errors simulated (so they are checked as root too)."""
    out = tmp_path / "out"
    if case == "cannot-create":
        real_mkdir = Path.mkdir

        def denied(self: Path, *args, **kwargs) -> None:
            if self == out:
                raise PermissionError(13, "Permission denied", str(self))
            real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", denied)
        message = f"cannot create the output folder {out} (Permission denied); nothing was processed"
    else:
        out.mkdir()
        (out / "keep.txt").write_text("keep")
        real_access = os.access
        monkeypatch.setattr(os, "access",
                            lambda path, mode, **kw: False if Path(path) == out else real_access(path, mode, **kw))
        message = f"output folder {out} is not writable; nothing was processed"
    code, text = mentalmap(["predict", "anomaly", "-i", str(SAMPLE_FLAIR), "-o", str(out), *CPU], capsys)
    assert code == 2
    assert message in text and "FAILED" not in text
    assert snapshot(out) == ({} if case == "cannot-create" else {"keep.txt": b"keep"})


@pytest.mark.parametrize("device, message", [("tpu", "unknown device 'tpu'; choose one of auto, cuda, mps, cpu"),
                                             ("cuda", "device 'cuda' is not available on this machine")],
                         ids=["tpu", "cuda"])
def test_cli_unknown_or_unavailable_device(tmp_path: Path, capsys, device: str, message: str) -> None:
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("cuda is available here")
    out = tmp_path / "out"
    for command in (["anomaly"], ["bruno", "--contexts", "20,30"]):
        code, text = mentalmap(["predict", *command, "-i", str(SAMPLE_T1), "-o", str(out), "--device", device],
                               capsys)
        assert code == 2
        assert message in text and "Traceback" not in text
        assert not out.exists()


# --------------------------------------------------------------------------- command line: weights


@pytest.fixture
def evil_weights(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "bruno", "state_dict": {}, "config": _Payload(marker)}, evil)
    assert not marker.exists()
    return evil, marker


@pytest.mark.parametrize("command", [["anomaly"], ["bruno", "--contexts", "20,30,40"]], ids=["anomaly", "bruno"])
def test_cli_malicious_pickle_weights(tmp_path: Path, capsys, evil_weights, command: list[str]) -> None:
    evil, marker = evil_weights
    out = tmp_path / "out"
    before = evil.read_bytes()
    code, text = mentalmap(["predict", *command, "-i", str(SAMPLE_T1), "-o", str(out), "--weights", str(evil), *CPU],
                           capsys)
    assert code == 2
    assert f"weights file {evil} was refused" in text and "nothing in it was executed" in text
    assert not marker.exists()  # the payload never ran
    assert not out.exists() and evil.read_bytes() == before


WRONG_WEIGHTS = {
    "anomaly-weights-to-bruno": (["bruno", "--contexts", "20,30"], "uad_spatial2d",
                                 r"holds a uad_vae model, not a bruno model; train one with `mentalmap train bruno`"),
    "bruno-weights-to-anomaly": (["anomaly"], "bruno_t1",
                                 r"holds a bruno model, not a uad_vae model; train one with `mentalmap train uad"),
    "skullstrip-weights-to-bruno": (["bruno", "--contexts", "20,30"], "skullstrip",
                                    r"skullstrip\.pt is not a bruno checkpoint; train one with `mentalmap train bruno`"),
}


@pytest.mark.parametrize("case", list(WRONG_WEIGHTS))
def test_cli_weights_of_wrong_kind(tmp_path: Path, capsys, case: str) -> None:
    command, name, message = WRONG_WEIGHTS[case]
    weights = tmp_path / f"{name}.pt"
    shutil.copy(shipped(name).path, weights)
    out = tmp_path / "out"
    code, text = mentalmap(["predict", *command, "-i", str(SAMPLE_T1), "-o", str(out), "--weights", str(weights),
                            *CPU], capsys)
    assert code == 2
    assert str(weights) in text and re.search(message, text), text
    assert not out.exists()
    assert weights.read_bytes() == shipped(name).path.read_bytes()


def test_cli_truncated_weights(tmp_path: Path, capsys) -> None:
    full = shipped("bruno_t1").path.read_bytes()
    weights = tmp_path / "half.pt"
    weights.write_bytes(full[: len(full) // 2])
    out = tmp_path / "out"
    code, text = mentalmap(["predict", "bruno", "-i", str(SAMPLE_T1), "-o", str(out), "--weights", str(weights),
                            "--contexts", "20,30", *CPU], capsys)
    assert code == 2
    assert f"weights file {weights} is not a readable PyTorch checkpoint" in text
    assert not out.exists()


def test_cli_missing_weights(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code, text = mentalmap(["predict", "anomaly", "-i", str(SAMPLE_FLAIR), "-o", str(out), "--weights",
                            str(tmp_path / "absent.pt"), *CPU], capsys)
    assert code == 2
    assert f"weights file {tmp_path / 'absent.pt'} not found" in text
    assert not out.exists() and not (tmp_path / "absent.pt").exists()


def test_load_record_bad_files(tmp_path: Path) -> None:
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(WeightsError, match=r"tensor\.pt holds a Tensor, not a checkpoint record"):
        load_record(tensor, "bruno")
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match=r"notes\.pt is not a readable PyTorch checkpoint \(not a zip archive"):
        load_record(text, "bruno")  # before: "refused: ... a pickle payload", which it is not
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match=r"empty\.pt is not a readable PyTorch checkpoint \(empty file\)"):
        load_record(empty, "bruno")
    assert text.read_text() == "not a checkpoint" and empty.read_bytes() == b""


# --------------------------------------------------------------------------- command line: contexts


@pytest.mark.parametrize("value, message", [
    (["--contexts", "a,b"], "argument --contexts: context slices must be integers separated by commas, got 'a,b'"),
    (["--contexts", "2.5"], "context slices must be integers separated by commas, got '2.5'"),
    (["--contexts", ","], "argument --contexts: give at least one context slice"),
    (["--n-contexts", "0"], "argument --n-contexts: must be at least 1, got 0"),
    (["--n-contexts", "-3"], "argument --n-contexts: must be at least 1, got -3"),
    (["--n-contexts", "3", "--samples", "-1"], "argument --samples: must be 0 or more, got -1"),
    ([], "one of the arguments --contexts --n-contexts is required"),
], ids=["letters", "fraction", "empty", "n-zero", "n-negative", "samples-negative", "none"])
def test_cli_malformed_contexts(tmp_path: Path, capsys, value: list[str], message: str) -> None:
    out = tmp_path / "out"
    code, text = mentalmap(["predict", "bruno", "-i", str(SAMPLE_T1), "-o", str(out), *value, *CPU], capsys)
    assert code == 2
    assert "usage: mentalmap predict bruno" in text and message in text
    assert not out.exists()


@pytest.mark.parametrize("contexts, message", [
    ("999", "context slice 999 is outside the volume (axial slices 0..90)"),
    ("-5", "context slice -5 is outside the volume (axial slices 0..90)"),
    ("0,30", "context slice 0 is outside the brain range the model covers"),
    ("30,30,40", "context slices repeat: [30, 30, 40]"),
], ids=["out-of-range", "negative", "outside-brain", "duplicate"])
def test_cli_contexts_out_of_range_or_duplicate(tmp_path: Path, capsys, contexts: str, message: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    earlier = out / f"{T1_STEM}_bruno_mean.nii.gz"
    earlier.write_bytes(b"the result of an earlier, good run")
    code, text = mentalmap(["predict", "bruno", "-i", str(SAMPLE_T1), "-o", str(out), "--contexts", contexts,
                            "--overwrite", *CPU], capsys)
    assert code == 1
    assert f"FAILED {SAMPLE_T1}: ValueError: {message}" in text
    assert snapshot(out) == {earlier.name: b"the result of an earlier, good run"}  # kept, nothing added


def test_cli_info_bad_arguments(capsys) -> None:
    code, text = mentalmap(["info", "--bogus"], capsys)
    assert code == 2 and "unrecognized arguments: --bogus" in text
    code, text = mentalmap(["predict"], capsys)
    assert code == 1 and "anomaly" in text and "bruno" in text  # help, not a traceback
    code, text = mentalmap(["info"], capsys)
    assert code == 0 and "weights" in text


# --------------------------------------------------------------------------- the mental-map dock


@pytest.fixture
def tiny_weights(tiny_bruno_weights) -> Path:
    return tiny_bruno_weights


@pytest.fixture
def dock(mental_map_dock) -> MentalMapWidget:
    mental_map_dock.n_samples.setValue(2)
    mental_map_dock.contexts.evenly_spaced(3)
    return mental_map_dock


def layer_state(viewer) -> list[tuple[str, int]]:
    return [(layer.name, id(layer.data)) for layer in viewer.layers]


def test_dock_empty_viewer(make_napari_viewer, errors: list[str]) -> None:
    viewer = make_napari_viewer()
    widget = MentalMapWidget(viewer)
    for kind in ("mean", "samples", "prior"):
        assert widget.run(kind) is None
        assert errors[-1] == "Mental maps (BRUNO): no image layer: open a 3-D brain volume first (e.g. File > Open Sample)"
    assert len(viewer.layers) == 0 and not widget.busy


def test_dock_labels_only_viewer(make_napari_viewer, errors: list[str]) -> None:
    viewer = make_napari_viewer()
    viewer.open(str(SAMPLE_LESIONS), plugin="napari-mentalmap", name="lesions")
    before = layer_state(viewer)
    widget = MentalMapWidget(viewer)
    assert widget.layer_combo.count() == 0  # a label layer is never offered as the image
    assert widget.run("mean") is None and "no image layer" in errors[-1]
    assert layer_state(viewer) == before


@pytest.mark.parametrize("shape, rgb", [((2, 20, 24, 24), False), ((20, 24), False), ((20, 24, 3), True)],
                         ids=["4d", "2d", "rgb"])
def test_dock_layer_not_a_3d_volume(make_napari_viewer, qtbot, errors: list[str], shape, rgb: bool) -> None:
    viewer = make_napari_viewer()
    viewer.add_image(noise(shape), name="odd", rgb=rgb)
    before = layer_state(viewer)
    widget = MentalMapWidget(viewer)
    widget.layer_combo.setCurrentText("odd")
    for kind in ("mean", "samples", "prior"):
        assert widget.run(kind) is None
        assert errors[-1] == f"Mental maps (BRUNO): 'odd' has shape {shape}: a 3-D greyscale volume is needed"
    assert widget.runner.worker is None and widget.runner.stats is None  # no job was started
    widget.contexts.evenly_spaced(3)
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    assert layer_state(viewer) == before and widget.contexts.slices == []
    assert not any("could not find the brain" in message for message in errors)  # refused once


def test_dock_cancel_half_way(qtbot, dock: MentalMapWidget, errors: list[str]) -> None:
    dock.n_samples.setValue(100)
    before = layer_state(dock.viewer)
    worker = dock.run("samples")
    assert worker is not None
    with qtbot.waitSignal(worker.yielded, timeout=TIMEOUT_MS):
        pass
    dock.cancel_button.click()
    qtbot.waitUntil(lambda: not dock.busy, timeout=TIMEOUT_MS)
    assert dock.runner.stats.outcome == "cancelled"
    assert "cancelled, no layers added" in dock.status.text()
    assert layer_state(dock.viewer) == before
    assert not errors and dock.mean_button.isEnabled()


def test_dock_second_job_while_one_runs(qtbot, dock: MentalMapWidget, errors: list[str]) -> None:
    dock.n_samples.setValue(12)
    first = dock.run("samples")
    assert first is not None
    with qtbot.waitSignal(first.yielded, timeout=TIMEOUT_MS):
        pass
    assert not dock.mean_button.isEnabled() and not dock.prior_button.isEnabled()  # cannot be clicked
    assert dock.run("prior") is None  # refused when asked directly
    assert dock.runner.worker is first and dock.runner.stats.name.startswith("samples")
    assert any("already running" in message for message in errors)
    qtbot.waitUntil(lambda: not dock.busy, timeout=TIMEOUT_MS)  # the first job goes on to the end
    assert dock.runner.stats.outcome == "done"
    names = [layer.name for layer in dock.viewer.layers]
    assert "T1 BRUNO samples" in names and "T1 BRUNO mean" in names
    assert not any("prior" in name for name in names)
    assert dock.last_result.samples_grid.shape[0] == 12


def test_dock_weights_of_wrong_kind(qtbot, dock: MentalMapWidget, errors: list[str], tmp_path: Path) -> None:
    weights = tmp_path / "uad.pt"
    shutil.copy(shipped("uad_spatial2d").path, weights)
    dock.weights_edit.setText(str(weights))
    before = layer_state(dock.viewer)
    assert dock.run("mean") is not None
    qtbot.waitUntil(lambda: not dock.busy, timeout=TIMEOUT_MS)
    assert dock.runner.stats.outcome == "failed"
    assert errors and f"weights file {weights} holds a uad_vae model, not a bruno model" in errors[-1]
    assert layer_state(dock.viewer) == before and dock.mean_button.isEnabled()


def test_dock_malicious_pickle_weights(qtbot, dock: MentalMapWidget, errors: list[str], evil_weights) -> None:
    evil, marker = evil_weights
    dock.weights_edit.setText(str(evil))
    before = layer_state(dock.viewer)
    assert dock.run("mean") is not None
    qtbot.waitUntil(lambda: not dock.busy, timeout=TIMEOUT_MS)
    assert errors and f"weights file {evil} was refused" in errors[-1]
    assert not marker.exists()
    assert layer_state(dock.viewer) == before


def test_dock_bad_typed_contexts(dock: MentalMapWidget, errors: list[str]) -> None:
    chosen = dock.contexts.slices
    before = layer_state(dock.viewer)
    for text, message in (("a,b", "invalid literal for int()"), ("30, 999", "slice 999 is outside the volume"),
                          ("40-30", "range '40-30' goes backwards")):
        dock.contexts.typed.setText(text)
        dock.contexts.apply_typed()
        assert message in errors[-1] and dock.contexts.info.text().startswith("not set:")
        assert dock.contexts.slices == chosen
    assert layer_state(dock.viewer) == before


def test_dock_context_outside_model_range(qtbot, dock: MentalMapWidget, errors: list[str]) -> None:
    dock.contexts.set_slices([0, 40])  # slice 0 is inside the volume, below the brain range
    before = layer_state(dock.viewer)
    assert dock.run("mean") is not None
    qtbot.waitUntil(lambda: not dock.busy, timeout=TIMEOUT_MS)
    assert dock.runner.stats.outcome == "failed"
    assert errors and "context slice 0 is outside the brain range the model covers" in errors[-1]
    assert layer_state(dock.viewer) == before


def test_warm_up_after_the_dock_is_deleted_touches_nothing(make_napari_viewer, qtbot, errors: list[str]) -> None:
    """The models finish loading after the dock (and its device list) was deleted: no error."""
    from qtpy.QtWidgets import QComboBox, QWidget

    from napari_mentalmap.widgets._worker import warm_up

    make_napari_viewer()
    owner, combo = QWidget(), QComboBox()
    worker = warm_up(owner, ("json",), combo)
    combo.deleteLater()
    qtbot.wait(50)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=30_000)
    qtbot.wait(50)
    assert not errors
