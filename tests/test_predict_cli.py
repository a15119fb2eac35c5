"""``mentalmap predict anomaly|bruno`` on the shipped sample with the shipped weights."""

from __future__ import annotations

import json
import pathlib
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_mentalmap import cli

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data"
FLAIR = SAMPLES / "patient07_FLAIR_2mm.nii.gz"
T1 = SAMPLES / "patient07_T1_2mm.nii.gz"


def _same_grid(output: Path, reference: Path) -> None:
    out, ref = nib.load(str(output)), nib.load(str(reference))
    assert out.shape == ref.shape
    assert np.allclose(out.affine, ref.affine)


def test_predict_anomaly_folder_with_a_truncated_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(FLAIR, inputs / "a_FLAIR.nii.gz")
    shutil.copy(FLAIR, inputs / "b_FLAIR.nii.gz")
    (inputs / "broken.nii.gz").write_bytes(FLAIR.read_bytes()[:200])
    out = tmp_path / "out" / "nested"

    code = cli.main(["predict", "anomaly", "-i", str(inputs), "-o", str(out), "--device", "cpu", "--threads", "2"])

    assert code != 0
    assert "broken.nii.gz" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [f"{n}_FLAIR_anomaly.{e}" for n in "ab" for e in ("json", "nii.gz")]
    for name in ("a_FLAIR", "b_FLAIR"):
        output = out / f"{name}_anomaly.nii.gz"
        _same_grid(output, FLAIR)
        assert np.isfinite(np.asanyarray(nib.load(str(output)).dataobj)).all()


def test_predict_bruno_contexts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = cli.main(["predict", "bruno", "-i", str(T1), "-o", str(out), "--contexts", "20,30,40",
                     "--device", "cpu", "--threads", "2"])
    assert code == 0
    stem = "patient07_T1_2mm"
    assert sorted(p.name for p in out.iterdir()) == [f"{stem}_bruno_{m}.{e}" for m in ("mean", "std")
                                                     for e in ("json", "nii.gz")]
    for kind in ("mean", "std"):
        _same_grid(out / f"{stem}_bruno_{kind}.nii.gz", T1)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.mark.parametrize("command", [["anomaly"], ["bruno", "--contexts", "20,30,40"], ["latent"]])
def test_predict_refuses_pickle_payload_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                command: list[str]) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "config": _Payload(marker)}, evil)
    out = tmp_path / "out"

    code = cli.main(["predict", *command, "-i", str(FLAIR), "-o", str(out), "--weights", str(evil),
                     "--device", "cpu"])

    assert code != 0
    assert str(evil) in capsys.readouterr().err
    assert not marker.exists()
    assert not out.exists() or not any(out.iterdir())


def test_predict_bruno_n_contexts_and_samples_placed_over_input(tmp_path: Path) -> None:
    from scipy import ndimage

    out = tmp_path / "out"
    code = cli.main(["predict", "bruno", "-i", str(SAMPLES / "*T1*.nii.gz"), "-o", str(out), "--n-contexts", "5",
                     "--samples", "2", "--device", "cpu", "--threads", "2"])
    assert code == 0
    stem = "patient07_T1_2mm"
    mean = nib.load(str(out / f"{stem}_bruno_mean.nii.gz"))
    samples = nib.load(str(out / f"{stem}_bruno_samples.nii.gz"))
    _same_grid(out / f"{stem}_bruno_mean.nii.gz", T1)
    assert samples.ndim == 4 and samples.shape[-1] == 2
    # The samples' affine must put the model grid over the input: resampled onto the
    # input grid, their average matches the written mean.
    to_samples = np.linalg.inv(samples.affine) @ mean.affine
    average = np.asanyarray(samples.dataobj).mean(-1)
    mean_data = np.asanyarray(mean.dataobj)
    resampled = ndimage.affine_transform(average, to_samples[:3, :3], to_samples[:3, 3],
                                         output_shape=mean_data.shape, order=1, cval=np.nan)
    inside = np.isfinite(resampled) & (mean_data != 0)
    assert inside.sum() > 10_000
    assert np.corrcoef(resampled[inside], mean_data[inside])[0, 1] > 0.8


def test_predict_mask_over_two_processes(tmp_path: Path) -> None:
    """``--devices 2`` splits the files over two CPU processes (Lightning Fabric's launcher);
    a bad file in either process makes the exit code non-zero."""
    import os
    import subprocess
    import sys

    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(T1, inputs / f"{name}.nii.gz")
    (inputs / "d_broken.nii.gz").write_bytes(T1.read_bytes()[:300])
    out = tmp_path / "out"
    command = [sys.executable, "-m", "napari_mentalmap.cli", "predict", "mask", "-i", str(inputs), "-o", str(out),
               "--devices", "2", "--threads", "1", "--device", "cpu"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 1, result.stderr[-2000:]
    assert "d_broken.nii.gz" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"{n}_brain_mask.{e}" for n in "abc" for e in ("json", "nii.gz")]
    mask = nib.load(str(out / "a_brain_mask.nii.gz"))
    assert np.allclose(mask.affine, nib.load(str(T1)).affine) and mask.header.get_intent()[0] == "label"
    assert 0.05 < np.asanyarray(mask.dataobj).mean() < 0.6


def test_predict_latent_writes_latents_and_a_reconstruction_over_the_input(tmp_path: Path) -> None:
    from scipy import ndimage

    from napari_mentalmap.inference.latent import decode, load_slice_vae

    out = tmp_path / "out"
    code = cli.main(["predict", "latent", "-i", str(T1), "-o", str(out), "--device", "cpu", "--threads", "2"])
    assert code == 0
    stem = "patient07_T1_2mm"
    assert sorted(p.name for p in out.iterdir()) == [f"{stem}_latent_reconstruction.{e}" for e in ("json", "nii.gz")] + [
        f"{stem}_latents.{e}" for e in ("json", "npz")]
    with np.load(out / f"{stem}_latents.npz", allow_pickle=False) as stored:
        latents, affine = stored["latents"], stored["grid_affine"]
    reconstruction = nib.load(str(out / f"{stem}_latent_reconstruction.nii.gz"))
    assert np.allclose(reconstruction.affine, affine)
    # the stored latents decode to the written reconstruction
    assert np.allclose(decode(load_slice_vae(device="cpu"), latents), np.asanyarray(reconstruction.dataobj), atol=1e-3)
    # and the reconstruction sits over the input: resampled onto it, it correlates with the T1
    source = nib.load(str(T1))
    to_grid = np.linalg.inv(reconstruction.affine) @ source.affine
    resampled = ndimage.affine_transform(np.asanyarray(reconstruction.dataobj), to_grid[:3, :3], to_grid[:3, 3],
                                         output_shape=source.shape, order=1, cval=np.nan)
    t1 = np.asanyarray(source.dataobj).astype(float)
    inside = np.isfinite(resampled) & (resampled > 0.05)
    assert inside.sum() > 10_000
    assert np.corrcoef(resampled[inside], t1[inside])[0, 1] > 0.6


@pytest.mark.parametrize("target", ["lesions", "tumour"])
def test_predict_anomaly_labels_at_the_target_auto_threshold(tmp_path: Path, target: str) -> None:
    from napari_mentalmap.inference.anomaly import intensity_anomaly_map, run_job
    from napari_mentalmap.inference.anomaly_methods import GATED_METHOD, scan_auto_threshold
    from napari_mentalmap.inference.labels import threshold_labels
    from napari_mentalmap.inference.scan_threshold import bulk_fit
    from napari_mentalmap.io.nifti import read_volume

    out = tmp_path / "out"
    code = cli.main(["predict", "anomaly", "-i", str(FLAIR), "-o", str(out), "--labels", target,
                     "--device", "cpu", "--threads", "2"])
    assert code == 0
    stem = "patient07_FLAIR_2mm"
    labels = nib.load(str(out / f"{stem}_anomaly_labels.nii.gz"))
    _same_grid(out / f"{stem}_anomaly_labels.nii.gz", FLAIR)
    assert labels.header.get_intent()[0] == "label"
    anomaly = np.asanyarray(nib.load(str(out / f"{stem}_anomaly.nii.gz")).dataobj)
    # the default method's Auto, per scan where it is: from the brain's intensity, as the intensity
    # method's own job normalises it (same brain mask)
    volume = read_volume(FLAIR)
    intensity = run_job(intensity_anomaly_map(volume.data, volume.spacing, device="cpu"))
    auto = scan_auto_threshold(GATED_METHOD, "", target, anomaly, np.ones(anomaly.shape, bool),
                               bulk_fit(intensity.anomaly, intensity.brain_mask))
    expected = threshold_labels(anomaly, auto) > 0
    assert np.array_equal(np.asanyarray(labels.dataobj) > 0, expected)
    recorded = json.loads((out / f"{stem}_anomaly_labels.json").read_text())["threshold"]
    assert recorded["value"] == pytest.approx(auto, abs=1e-6)
    assert ("of this scan" in recorded["chosen"]) == (type(auto) is not float)  # a ScanThreshold


def test_predict_anomaly_explicit_threshold_and_weights_without_one(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code = cli.main(["predict", "anomaly", "-i", str(FLAIR), "-o", str(out), "--threshold", "0.55",
                     "--device", "cpu"])
    assert code == 0
    labels = np.asanyarray(nib.load(str(out / "patient07_FLAIR_2mm_anomaly_labels.nii.gz")).dataobj)
    assert labels.any()  # the sample's map peaks at about 0.68: 0.55 flags voxels
    # a VAE file of the user's, asked for a tumour Auto it does not carry: refused before any file
    from napari_mentalmap.inference.anomaly import weights_path

    code = cli.main(["predict", "anomaly", "-i", str(FLAIR), "-o", str(tmp_path / "o2"), "--weights",
                     str(weights_path("dense2d")), "--labels", "tumour", "--device", "cpu"])
    assert code == 2 and "give --threshold" in capsys.readouterr().err


def test_predict_anomaly_auto_sds_applies_a_calibrated_auto_and_says_so(tmp_path: Path, capsys) -> None:
    from napari_mentalmap.inference.anomaly import intensity_anomaly_map, run_job
    from napari_mentalmap.inference.anomaly_methods import GATED_METHOD, per_scan_threshold
    from napari_mentalmap.inference.labels import threshold_labels
    from napari_mentalmap.inference.scan_threshold import bulk_fit
    from napari_mentalmap.io.nifti import read_volume

    out = tmp_path / "out"
    code = cli.main(["predict", "anomaly", "-i", str(FLAIR), "-o", str(out), "--labels", "lesions",
                     "--auto-sds", "3.5", "--device", "cpu", "--threads", "2"])
    assert code == 0
    stem = "patient07_FLAIR_2mm"
    anomaly = np.asanyarray(nib.load(str(out / f"{stem}_anomaly.nii.gz")).dataobj)
    volume = read_volume(FLAIR)
    intensity = run_job(intensity_anomaly_map(volume.data, volume.spacing, device="cpu"))
    auto = per_scan_threshold(GATED_METHOD, 3.5, anomaly, np.ones(anomaly.shape, bool),
                              bulk_fit(intensity.anomaly, intensity.brain_mask))
    labels = np.asanyarray(nib.load(str(out / f"{stem}_anomaly_labels.nii.gz")).dataobj) > 0
    assert np.array_equal(labels, threshold_labels(anomaly, auto) > 0)
    recorded = json.loads((out / f"{stem}_anomaly_labels.json").read_text())["threshold"]
    assert recorded["sds"] == 3.5 and recorded["value"] == pytest.approx(auto, abs=1e-6)
    assert "--auto-sds" in recorded["chosen"]
    for bad, says in ((["--auto-sds", "3"], "goes with --labels"),
                      (["--labels", "lesions", "--auto-sds", "0"], "between 0 and 20"),
                      (["--labels", "lesions", "--threshold", "0.5", "--auto-sds", "3"], "goes with --labels"),
                      (["--labels", "lesions", "--model", "dense2d", "--auto-sds", "3"], "no per-scan Auto")):
        code = cli.main(["predict", "anomaly", "-i", str(FLAIR), "-o", str(tmp_path / "refused"), *bad,
                         "--device", "cpu"])
        assert code == 2 and says in capsys.readouterr().err, bad
    assert not (tmp_path / "refused").exists() or not any((tmp_path / "refused").iterdir())


def test_calibrate_auto_from_a_corrected_scan_prints_saves_and_refuses(tmp_path: Path, monkeypatch, capsys) -> None:
    from napari_mentalmap.inference.auto_calibration import load_calibrations

    path = tmp_path / "calibration.json"
    monkeypatch.setenv("MENTALMAP_CALIBRATION", str(path))
    lesions = SAMPLES / "patient07_lesions_2mm.nii.gz"
    code = cli.main(["predict", "calibrate-auto", "-i", str(FLAIR), "-l", str(lesions), "--device", "cpu",
                     "--threads", "2"])
    out = capsys.readouterr().out
    assert code == 0
    [calibration] = load_calibrations(path).values()
    assert calibration.sds is not None and calibration.source == FLAIR.name
    assert f"--auto-sds {calibration.sds:g}" in out and str(path) in out
    # the printed option gives the calibrated labels on that scan
    code = cli.main(["predict", "anomaly", "-i", str(FLAIR), "-o", str(tmp_path / "out"), "--labels", "lesions",
                     "--auto-sds", f"{calibration.sds:g}", "--device", "cpu", "--threads", "2"])
    labels = np.asanyarray(nib.load(str(tmp_path / "out" / "patient07_FLAIR_2mm_anomaly_labels.nii.gz")).dataobj) > 0
    truth = np.asanyarray(nib.load(str(lesions)).dataobj) > 0
    assert code == 0 and 2 * (labels & truth).sum() / (labels.sum() + truth.sum()) == pytest.approx(calibration.dice, abs=1e-6)
    # refused with the reason, nothing saved: empty labels, labels on another grid
    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(truth.shape, np.uint8), nib.load(str(lesions)).affine), str(empty))
    shifted = tmp_path / "shifted.nii.gz"
    affine = nib.load(str(lesions)).affine.copy()
    affine[:3, 3] += 6.0
    nib.save(nib.Nifti1Image(truth.astype(np.uint8), affine), str(shifted))
    for bad, says in ((empty, "labels are empty"), (shifted, "not on the grid")):
        code = cli.main(["predict", "calibrate-auto", "-i", str(FLAIR), "-l", str(bad), "--device", "cpu", "--no-save"])
        assert code == 2 and says in capsys.readouterr().err
    assert list(load_calibrations(path).values()) == [calibration]
