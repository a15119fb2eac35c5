"""Anomaly VAEs: shapes, loss schedule, tiny training, post-processing, protocol, bad inputs."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_mentalmap.data.subjects import SubjectGrid, healthy_weight
from napari_mentalmap.evaluation.uad import (
    dice_table,
    half_half_protocol,
    half_split,
    markdown_table,
)
from napari_mentalmap.inference.anomaly import (
    LabelUpdater,
    WeightsError,
    anomaly_map,
    load_anomaly_model,
    remove_small,
    run_job,
    threshold_labels,
)
from napari_mentalmap.inference.labels import EditedLabels
from napari_mentalmap.io.preprocess import GridSpec, NoBrainError
from napari_mentalmap.metrics import average_precision, roc_auc
from napari_mentalmap.models.uad_vae import (
    KINDS,
    UADVAE,
    MovingMean,
    VAEConfig,
    cyclical_beta,
    default_config,
    kl_divergence,
)
from napari_mentalmap.training.uad import UADTrainConfig, export_weights, train_uad

TINY_GRID = GridSpec(n_poses=8, size=16, coverage=1.0)


def tiny_config(kind: str) -> VAEConfig:
    shape = (16, 16) if kind.endswith("2d") else (8, 16, 16)
    return VAEConfig(kind=kind, input_shape=shape, channels=(2, 4, 4, 4), latent_dim=8, latent_channels=2)


@pytest.mark.parametrize("kind", KINDS)
def test_model_shapes(kind: str) -> None:
    model = UADVAE(tiny_config(kind))
    x = torch.rand(2, 1, *model.config.input_shape)
    with torch.no_grad():
        x_hat, mu, logvar = model(x)
    assert x_hat.shape == x.shape
    assert mu.shape == logvar.shape
    if kind.startswith("dense"):
        assert mu.shape == (2, 8)
    else:
        assert mu.ndim == x.ndim and mu.shape[1] == 2
    assert 0 <= float(x_hat.min()) and float(x_hat.max()) <= 1
    assert float(kl_divergence(mu, logvar)) >= 0
    with pytest.raises(ValueError):
        model(torch.rand(2, 1, *(s + 1 for s in model.config.input_shape)))


@pytest.mark.parametrize("kind", KINDS)
def test_default_configs_fit_the_grid(kind: str) -> None:
    model = UADVAE(default_config(kind, 48, 64))
    x = torch.rand(1, 1, *model.config.input_shape)
    with torch.no_grad():
        assert model.reconstruct(x).shape == x.shape
    assert sum(p.numel() for p in model.parameters()) * 4 < 15e6  # a few MB shipped


def test_config_validation_and_round_trip() -> None:
    with pytest.raises(ValueError):
        VAEConfig(kind="dense4d")
    with pytest.raises(ValueError):
        VAEConfig(kind="dense2d", input_shape=(8, 16, 16))
    config = tiny_config("spatial3d")
    assert VAEConfig.from_dict(config.to_dict()) == config


def test_cyclical_beta_schedule() -> None:
    assert cyclical_beta(0, 50) == 0.0
    assert cyclical_beta(12.5, 50) == pytest.approx(0.5)
    assert cyclical_beta(25, 50) == 1.0
    assert cyclical_beta(40, 50) == 1.0
    assert cyclical_beta(50, 50) == 0.0  # next cycle restarts
    assert cyclical_beta(60, 50) == pytest.approx(0.4)


def test_moving_mean_keeps_last_ten() -> None:
    mean = MovingMean(10)
    for value in range(1, 21):
        result = mean.update(value)
    assert result == pytest.approx(np.mean(np.arange(11, 21)))
    copy = MovingMean()
    copy.load_state_dict(mean.state_dict())
    assert copy.values == mean.values


def _synthetic_subjects(n: int, seed: int = 0) -> list[SubjectGrid]:
    from napari_mentalmap.io.preprocess import GridMapping

    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:8, :16, :16]
    mask = ((y - 7.5) ** 2 + (x - 7.5) ** 2) < 36
    mapping = GridMapping((8, 16, 16), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (8, 16, 16))
    subjects = []
    for i in range(n):
        image = (0.5 + 0.05 * rng.standard_normal((8, 16, 16))).clip(0, 1).astype(np.float32) * mask
        lesions = np.zeros_like(mask)
        lesions[4, 7:9, 7:9] = True
        image[lesions] = 1.0
        subjects.append(SubjectGrid(f"s{i}", image, mask, mapping, lesions))
    return subjects


def test_healthy_weight_excludes_lesions() -> None:
    subject = _synthetic_subjects(1)[0]
    weight = healthy_weight(subject)
    assert weight[subject.lesions].sum() == 0
    assert weight.sum() < weight.size - subject.lesions.sum()  # dilated


@pytest.mark.parametrize("kind", ["dense3d", "spatial2d"])
def test_tiny_training_resume_export_and_anomaly_map(tmp_path, kind: str) -> None:
    subjects = {"train": _synthetic_subjects(3), "val": _synthetic_subjects(1, seed=1)}
    config = UADTrainConfig(kind=kind, out_dir=str(tmp_path / "run"), epochs=2, period=4, batch_size=2,
                            grid=TINY_GRID.to_dict(), model=tiny_config(kind).to_dict(), num_threads=1)
    summary = train_uad(config, subjects=subjects, progress=False, command="test")
    assert summary["epoch"] == 2 and np.isfinite(summary["history"][-1]["loss"])
    config.epochs = 3
    summary = train_uad(config, resume=True, subjects=subjects, progress=False)
    assert summary["epoch"] == 3 and len(summary["history"]) == 3

    path = export_weights(tmp_path / "run", tmp_path / f"uad_{kind}.pt")
    model = load_anomaly_model(path)
    assert model.kind == kind and model.grid == TINY_GRID
    volume = np.zeros((20, 24, 24), np.float32)
    volume[3:17, 4:20, 4:20] = 100.0 + np.random.default_rng(0).random((14, 16, 16))
    messages = []
    job = anomaly_map(volume, (1.0, 1.0, 1.0), model, mask=volume > 0)
    try:
        while True:
            messages.append(next(job))
    except StopIteration as stop:
        result = stop.value
    assert messages[-1][0] == messages[-1][1]
    assert result.anomaly.shape == volume.shape
    assert (result.anomaly[volume == 0] == 0).all() and np.isfinite(result.anomaly).all()


def test_cancel_between_batches(tmp_path) -> None:
    subjects = {"train": _synthetic_subjects(2), "val": []}
    config = UADTrainConfig(kind="dense2d", out_dir=str(tmp_path / "run"), epochs=1, batch_size=4,
                            grid=TINY_GRID.to_dict(), model=tiny_config("dense2d").to_dict())
    train_uad(config, subjects=subjects, progress=False)
    model = load_anomaly_model(export_weights(tmp_path / "run", tmp_path / "uad_dense2d.pt"))
    volume = np.zeros((20, 24, 24), np.float32)
    volume[3:17, 4:20, 4:20] = 1.0 + np.random.default_rng(0).random((14, 16, 16))
    job = anomaly_map(volume, (1.0, 1.0, 1.0), model, batch_size=2)
    seen = [next(job) for _ in range(4)]
    job.close()  # what a napari worker's quit amounts to: no more batches run
    assert all(len(item) == 3 for item in seen)


def test_bad_inputs(tmp_path) -> None:
    subjects = {"train": _synthetic_subjects(2), "val": _synthetic_subjects(1)}
    config = UADTrainConfig(kind="dense2d", out_dir=str(tmp_path / "run"), epochs=1, batch_size=4,
                            grid=TINY_GRID.to_dict(), model=tiny_config("dense2d").to_dict())
    train_uad(config, subjects=subjects, progress=False)
    # a reference error far below anything a real input gives: the unusual-input warning fires
    path = export_weights(tmp_path / "run", tmp_path / "uad_dense2d.pt", {"final_val_l1": 1e-6})
    model = load_anomaly_model(path)
    volume = np.zeros((20, 24, 24), np.float32)
    volume[3:17, 4:20, 4:20] = 1.0 + np.random.default_rng(0).random((14, 16, 16))
    with pytest.warns(UserWarning, match="FLAIR"):
        result = run_job(anomaly_map(volume, (1.0, 1.0, 1.0), model))
    assert result.warnings and result.anomaly.shape == volume.shape
    with pytest.raises(NoBrainError):
        run_job(anomaly_map(np.zeros((20, 24, 24), np.float32), (1.0, 1.0, 1.0), model))
    with pytest.raises(ValueError):
        run_job(anomaly_map(volume, (1.0, 1.0, 1.0), model, mask=np.ones((5, 5, 5), bool)))
    with pytest.raises(ValueError):
        run_job(anomaly_map(volume[0], (1.0, 1.0, 1.0), model))
    with pytest.raises(WeightsError, match="mentalmap train uad"):
        load_anomaly_model(tmp_path / "uad_spatial3d.pt")
    torch.save({"config": tiny_config("dense3d").to_dict(), "state_dict": {}, "grid": TINY_GRID.to_dict()},
               tmp_path / "broken.pt")
    with pytest.raises(WeightsError, match="does not match"):
        load_anomaly_model(tmp_path / "broken.pt")



def test_healthy_residual_is_subtracted(tmp_path) -> None:
    from napari_mentalmap.evaluation.calibration import healthy_residual

    train = _synthetic_subjects(2)
    config = UADTrainConfig(kind="dense2d", out_dir=str(tmp_path / "run"), epochs=1, batch_size=4,
                            grid=TINY_GRID.to_dict(), model=tiny_config("dense2d").to_dict())
    train_uad(config, subjects={"train": train, "val": []}, progress=False)
    model = load_anomaly_model(export_weights(tmp_path / "run", tmp_path / "uad_dense2d.pt"))
    residual = healthy_residual(model.model, train)
    assert residual.shape == train[0].image.shape and (residual >= 0).all() and residual.max() > 0
    volume = np.zeros((20, 24, 24), np.float32)
    volume[3:17, 4:20, 4:20] = 1.0 + np.random.default_rng(0).random((14, 16, 16))
    plain = run_job(anomaly_map(volume, (1.0, 1.0, 1.0), model)).anomaly
    model.record["healthy_residual"] = residual
    model.record["residual"] = "absolute"  # stored for another score: not applied
    np.testing.assert_allclose(run_job(anomaly_map(volume, (1.0, 1.0, 1.0), model)).anomaly, plain)
    model.record["residual"] = "positive"
    subtracted = run_job(anomaly_map(volume, (1.0, 1.0, 1.0), model)).anomaly
    assert (subtracted <= plain + 1e-6).all() and subtracted.sum() < plain.sum()
    off = run_job(anomaly_map(volume, (1.0, 1.0, 1.0), model, subtract_healthy=False)).anomaly
    np.testing.assert_allclose(off, plain)
    model.record["healthy_residual"] = residual[:-1]
    with pytest.raises(WeightsError, match="healthy residual"):
        run_job(anomaly_map(volume, (1.0, 1.0, 1.0), model))

def test_residual_scores_on_the_input_grid(tmp_path) -> None:
    """The residual is taken at the input's resolution: a one-voxel hyperintensity stays one
    voxel; the positive score keeps only what is brighter than the reconstruction."""
    train = _synthetic_subjects(2)
    config = UADTrainConfig(kind="dense2d", out_dir=str(tmp_path / "run"), epochs=1, batch_size=4,
                            grid=TINY_GRID.to_dict(), model=tiny_config("dense2d").to_dict())
    train_uad(config, subjects={"train": train, "val": []}, progress=False)
    model = load_anomaly_model(export_weights(tmp_path / "run", tmp_path / "uad_dense2d.pt"))
    volume = np.zeros((40, 48, 48), np.float32)
    volume[4:36, 6:42, 6:42] = 1.0 + 0.1 * np.random.default_rng(0).random((32, 36, 36))
    unfiltered = {"erosion_mm": 0, "median_size": 0}
    without = run_job(anomaly_map(volume, (1.0, 1.0, 1.0), model, **unfiltered)).anomaly
    volume[20, 24, 24] = 3.0  # far above the 99.5th percentile: 1 after normalisation
    positive = run_job(anomaly_map(volume, (1.0, 1.0, 1.0), model, **unfiltered)).anomaly
    absolute = run_job(anomaly_map(volume, (1.0, 1.0, 1.0), model, residual="absolute", **unfiltered)).anomaly
    assert positive.shape == volume.shape
    assert (positive <= absolute + 1e-6).all()
    change = positive - without
    assert change[20, 24, 24] > 0.1
    change[20, 24, 24] = 0.0
    assert np.abs(change).max() < 0.02  # the spike barely moves the (grid) reconstruction elsewhere
    # the default median filter removes an isolated voxel (the paper's post-processing)
    filtered = run_job(anomaly_map(volume, (1.0, 1.0, 1.0), model, erosion_mm=0)).anomaly
    assert filtered[20, 24, 24] < positive[20, 24, 24] - 0.1
    with pytest.raises(ValueError, match="unknown residual"):
        run_job(anomaly_map(volume, (1.0, 1.0, 1.0), model, residual="squared"))


def test_median_filter_over_the_box_matches_scipy() -> None:
    from napari_mentalmap.inference.anomaly import median_filtered

    anomaly = np.zeros((20, 30, 25), np.float32)
    anomaly[4:15, 6:22, 3:20] = np.random.default_rng(1).random((11, 16, 17))
    expected = ndimage.median_filter(anomaly, size=3, mode="constant", cval=0.0)
    np.testing.assert_array_equal(median_filtered(anomaly, 3), expected)
    np.testing.assert_array_equal(median_filtered(anomaly, 0), anomaly)
    assert not median_filtered(np.zeros((4, 4, 4), np.float32), 3).any()


def test_modality_warning_from_names() -> None:
    from napari_mentalmap.inference.anomaly import modality_warning

    assert "T1" in modality_warning("sample T1")
    assert "T2" in modality_warning("patient19_T2")
    assert modality_warning("sample FLAIR") is None
    assert modality_warning("Subj21_FL") is None
    assert modality_warning("volume") is None


def test_threshold_post_processing_on_a_known_blob() -> None:
    anomaly = np.zeros((20, 20, 20), np.float32)
    anomaly[5:9, 5:9, 5:9] = 0.5  # 64-voxel blob
    anomaly[15, 15, 15:18] = 0.9  # 3-voxel speck, removed at min size 10
    truth = np.zeros(anomaly.shape, bool)
    truth[5:9, 5:9, 5:11] = True  # 96 voxels; overlap 64
    labels = threshold_labels(anomaly, 0.2, min_size=10)
    assert labels.max() == 1 and (labels > 0).sum() == 64
    assert dice_table([anomaly], [truth], [0.2])[0, 0] == pytest.approx(2 * 64 / (64 + 96))
    assert threshold_labels(anomaly, 0.2, min_size=1).max() == 2
    assert threshold_labels(anomaly, 0.95).max() == 0
    updater = LabelUpdater(anomaly)
    for threshold, min_size in [(0.2, 10), (0.6, 1), (0.95, 10), (0.2, 1), (0.1, 100)]:
        expected = threshold_labels(anomaly, threshold, min_size) > 0
        np.testing.assert_array_equal(updater.update(threshold, min_size) > 0, expected)
    assert remove_small(np.zeros((3, 3, 3), bool)).max() == 0


def test_half_half_threshold_selection() -> None:
    thresholds = [0.1, 0.2, 0.3]
    # volumes 0,1 (half A) prefer 0.2; volume 2 (half B) prefers 0.3
    dices = np.array([[0.1, 0.8, 0.2], [0.2, 0.6, 0.4], [0.0, 0.3, 0.9]])
    assert half_split(3) == ([0, 1], [2])
    result = half_half_protocol(dices, thresholds)
    assert result["threshold A->B"] == 0.2 and result["dice A->B"] == pytest.approx(0.3)
    assert result["threshold B->A"] == 0.3 and result["dice B->A"] == pytest.approx(0.3)
    assert result["dice"] == pytest.approx(np.mean([0.3, 0.2, 0.4]))
    assert "| method |" in markdown_table([{"method": "m", "test set": "t", **result, "AUPRC": 0.5}])


def test_voxelwise_auc_metrics() -> None:
    truth = np.array([0, 0, 1, 1, 0, 1], bool)
    perfect = truth.astype(float)
    assert roc_auc(perfect, truth) == 1.0
    assert average_precision(perfect, truth) == 1.0
    assert roc_auc(-perfect, truth) == 0.0
    assert roc_auc(np.ones(6), truth) == 0.5  # ties
    scores = np.array([0.9, 0.1, 0.8, 0.7, 0.2, 0.3])  # ranks: 1st is a false positive
    assert average_precision(scores, truth) == pytest.approx((1 / 2 + 2 / 3 + 3 / 4) / 3)
    assert np.isnan(average_precision(scores, np.zeros(6, bool)))


@pytest.mark.parametrize("kind", [*KINDS, "dae2d"])
def test_shipped_weights_carry_their_provenance(kind: str) -> None:
    from napari_mentalmap.inference.anomaly import weights_path

    path = weights_path(kind)
    if not path.exists():
        pytest.skip(f"{path.name} not shipped")
    assert path.stat().st_size < 8e6
    model = load_anomaly_model(kind)
    record = model.record
    assert record["split"]["train"][0] == "Subj1" and "Subj21" not in record["split"]["train"]
    assert record["command"].startswith(f"mentalmap train uad --kind {kind}")
    assert model.threshold is not None and 0 < model.threshold < 1
    assert record["metrics"] and model.grid.coverage == 1.0


def test_label_updater_equals_reference_on_a_random_map() -> None:
    rng = np.random.default_rng(0)
    anomaly = ndimage.gaussian_filter(rng.random((24, 30, 26)), 1.0).astype(np.float32)
    anomaly[:3] = 0.0  # a flat band outside the "brain"
    updater = LabelUpdater(anomaly)
    low, high = float(anomaly[anomaly > 0].min()), float(anomaly.max())
    for threshold in [*np.linspace(low, high, 9), 0.5 * (low + high), low - 0.01, high + 0.01, 0.0]:
        for min_size in (1, 3, 10, 50):
            expected = threshold_labels(anomaly, float(threshold), min_size)
            labels = updater.update(float(threshold), min_size)
            np.testing.assert_array_equal(labels, expected)
            assert updater.n_components == expected.max()
            assert updater.n_labelled == np.count_nonzero(expected)
            truth_index = np.flatnonzero(anomaly > np.median(anomaly))
            assert updater.overlap(truth_index) == np.count_nonzero(expected.ravel()[truth_index])


@pytest.mark.parametrize("threads", [1, 2])
def test_median_filter_in_slabs_equals_the_whole_box(threads: int) -> None:
    """Filtering in axial slabs, ``threads`` at a time (a progress report after each round, for
    Cancel), changes nothing."""
    from napari_mentalmap.inference.anomaly import median_filtered_job
    from napari_mentalmap.io.preprocess import bounding_box

    rng = np.random.default_rng(2)
    anomaly = np.zeros((23, 30, 28), np.float32)
    anomaly[3:20, 4:27, 2:25] = rng.random((17, 23, 23))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for size, slabs in ((3, 4), (5, 3), (3, 17)):
            box = bounding_box(anomaly > 0, pad=size // 2)
            expected = np.zeros_like(anomaly)
            expected[box] = ndimage.median_filter(anomaly[box], size=size, mode="constant", cval=0.0)
            reports: list = []
            result = run_job(median_filtered_job(anomaly, size, slabs=slabs, progress=(3, 4)), reports.append)
            np.testing.assert_array_equal(result, expected)
            assert len(reports) == -(-slabs // threads) and all(report[:2] == (3, 4) for report in reports)
    finally:
        torch.set_num_threads(before)


def test_edited_labels_are_the_proposal_under_every_kept_edit() -> None:
    """Invariant over random slider moves (repeats included), paints, erases, a re-computed
    map carrying the edits over, and a proposal prepared elsewhere: the labels are always the
    thresholded map except where the user changed a voxel, which keeps the user's value."""
    rng = np.random.default_rng(1)
    shape = (20, 26, 22)

    def random_map() -> np.ndarray:
        return ndimage.gaussian_filter(rng.random(shape), 1.5).astype(np.float32)

    anomaly = random_map()
    labels = EditedLabels(anomaly)
    user = np.full(shape, -1, np.int32)  # -1: untouched; else the value the user left there
    thresholds = list(np.quantile(anomaly, [0.5, 0.7, 0.9, 0.99, 0.7, 0.7, 0.3]))
    for step, threshold in enumerate(thresholds):
        if step in (1, 3, 5):  # paint a block with label 7, erase a few voxels
            z, y, x = rng.integers(0, 14, 3)
            labels.labels[z:z + 4, y:y + 5, x:x + 3] = 1000  # above any proposed component number
            user[z:z + 4, y:y + 5, x:x + 3] = 1000
            erased = tuple(rng.integers(0, 20, (3, 6)))
            visible = labels.labels[erased] != 0  # erasing an empty voxel changes nothing
            labels.labels[erased] = 0
            user[tuple(index[visible] for index in erased)] = 0
        if step == 4:  # re-computed map of the same image: edits carry over
            anomaly = random_map()
            prepared = LabelUpdater(anomaly)  # as the dock's worker does, at the threshold to come
            prepared.update(float(threshold), 2)
            labels = EditedLabels(anomaly, previous=labels, proposal=prepared)
        if step in (2, 6):  # the dock's slider: proposals made in a worker, merged afterwards
            labels.proposal.update(float(thresholds[0]), 2)
            labels.proposal.update(float(threshold), 2)
        shown = labels.update(float(threshold), 2)
        expected = np.where(user >= 0, user, threshold_labels(anomaly, float(threshold), 2))
        np.testing.assert_array_equal(shown, expected)
        assert labels.n_edited == np.count_nonzero(user >= 0)
    np.testing.assert_array_equal(labels.reset(), threshold_labels(anomaly, float(thresholds[-1]), 2))


def _record_training(monkeypatch, module, name: str) -> dict:
    """Replace ``module.name`` (a training function) by one that records its config and command."""
    seen: dict = {}

    def fake_train(config, resume, command):
        seen["config"], seen["command"] = config, command
        return {"epoch": 0, "train_seconds": 0.0}

    monkeypatch.setattr(module, name, fake_train)
    return seen


def test_train_uad_command_architecture_and_normalisation_flags(monkeypatch, tmp_path) -> None:
    """``--latent-dim``, ``--channels`` and ``--median-at`` reach the stored training config."""
    from napari_mentalmap import cli
    from napari_mentalmap.training import uad as uad_training

    seen = _record_training(monkeypatch, uad_training, "train_uad")
    assert cli.main(["train", "uad", "--kind", "dense2d", "--latent-dim", "32", "--channels", "4", "8", "8", "16",
                     "--median-at", "0.5", "--out-dir", str(tmp_path / "run"), "--no-export"]) == 0
    config = seen["config"]
    assert config.model["latent_dim"] == 32 and config.model["channels"] == [4, 8, 8, 16]
    assert config.grid["median_at"] == 0.5 and GridSpec(**config.grid).median_at == 0.5
    assert VAEConfig.from_dict(config.model).kind == "dense2d"
    assert cli.main(["train", "uad", "--kind", "spatial3d", "--latent-dim", "3", "--out-dir", str(tmp_path / "s"),
                     "--no-export"]) == 0
    spatial = seen["config"]
    assert spatial.model["latent_channels"] == 3 and spatial.model["latent_dim"] == 256  # dense size untouched
    assert spatial.grid.get("median_at") is None


# --- denoising autoencoder (Kascenas et al. 2022) and the per-set evaluation -------------------

def tiny_dae_config(noise_std: float = 0.1):
    from napari_mentalmap.models.uad_dae import DAEConfig

    return DAEConfig(input_shape=(16, 16), channels=(4, 8, 8), noise_std=noise_std, noise_res=4)


def test_dae_shapes_noise_and_config() -> None:
    from napari_mentalmap.models.uad_dae import (
        DAEConfig,
        DenoisingUNet,
        coarse_noise,
        default_dae_config,
    )

    model = DenoisingUNet(tiny_dae_config()).eval()
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        out = model(x)
        clean = model.reconstruct(x)
    assert out.shape == x.shape and clean.shape == x.shape
    assert 0 <= float(clean.min()) and float(clean.max()) <= 1
    with pytest.raises(ValueError):
        model(torch.rand(3, 1, 16, 20))
    noise = coarse_noise((3, 1, 16, 16), 0.2, 4, torch.Generator().manual_seed(0))
    assert noise.shape == x.shape
    # coarse: drawn at 4 x 4 and upsampled, so neighbouring pixels are strongly correlated
    assert float((noise[..., 1:, :] - noise[..., :-1, :]).abs().mean()) < 0.5 * float(noise.abs().mean())
    assert float(noise.std()) < 0.2 + 0.05
    assert DAEConfig.from_dict(tiny_dae_config().to_dict()) == tiny_dae_config()
    with pytest.raises(ValueError):
        DAEConfig(input_shape=(18, 18), channels=(4, 8, 8))  # not divisible by 4
    with pytest.raises(ValueError):
        DAEConfig(kind="dense2d")
    big = DenoisingUNet(default_dae_config(96))
    assert sum(p.numel() for p in big.parameters()) * 2 < 50e6  # float16 shipped: far under 50 MB
    with torch.no_grad():
        assert big.reconstruct(torch.rand(1, 1, 96, 96)).shape == (1, 1, 96, 96)


def test_site_augment_keeps_shape_background_and_median() -> None:
    from napari_mentalmap.training.uad_dae import site_augment

    x = torch.zeros(64, 1, 16, 16)
    x[:, :, 4:12, 4:12] = 0.5 + 0.2 * torch.rand(64, 1, 8, 8) - 0.1
    first = site_augment(x, torch.Generator().manual_seed(3))
    again = site_augment(x, torch.Generator().manual_seed(3))
    assert first.shape == x.shape and torch.equal(first, again)  # seeded
    assert float(first[:, :, 0, 0].abs().max()) < 1e-4  # far background stays (about) 0
    inside = first[:, :, 6:10, 6:10]
    assert 0.35 < float(inside.median()) < 0.65  # the contrast change pivots about the median
    # each slice gets its own contrast: the brain's spread differs between slices
    spreads = inside.reshape(64, -1).std(dim=1) / inside.reshape(64, -1).mean(dim=1)
    assert float(spreads.max() / spreads.min()) > 1.3
    # no augmentation at zero strength: gamma 1, no bias (blur still possible, so compare blur-free slices)
    plain = site_augment(x, torch.Generator().manual_seed(3), max_gamma=1.0, max_blur=0.3, bias_std=0.0)
    assert float((plain[:, :, 6:10, 6:10] - x[:, :, 6:10, 6:10]).abs().max()) < 0.05


def _tiny_dae_run(tmp_path, epochs: int = 2):
    from napari_mentalmap.training.uad_dae import DAETrainConfig, train_dae

    subjects = {"train": _synthetic_subjects(3), "val": _synthetic_subjects(1, seed=1)}
    config = DAETrainConfig(out_dir=str(tmp_path / "run"), epochs=epochs, batch_size=4, grid=TINY_GRID.to_dict(),
                            model=tiny_dae_config().to_dict(), num_threads=1)
    return config, subjects, train_dae(config, subjects=subjects, progress=False, command="test dae")


def test_dae_tiny_training_with_site_augmentation(tmp_path) -> None:
    from napari_mentalmap.training.uad_dae import DAETrainConfig, train_dae

    subjects = {"train": _synthetic_subjects(2), "val": _synthetic_subjects(1, seed=1)}
    config = DAETrainConfig(out_dir=str(tmp_path / "run"), epochs=1, batch_size=4, grid=TINY_GRID.to_dict(),
                            model=tiny_dae_config().to_dict(), num_threads=1, site_augment=True)
    summary = train_dae(config, subjects=subjects, progress=False)
    assert summary["epoch"] == 1 and np.isfinite(summary["history"][-1]["mse"])


def test_dae_tiny_training_resume_export_and_anomaly_map(tmp_path) -> None:
    from napari_mentalmap.models.uad_dae import DenoisingUNet
    from napari_mentalmap.training.uad_dae import export_dae_weights, slice_tensors, train_dae

    images, weights = slice_tensors(_synthetic_subjects(2))
    assert images.shape == weights.shape and images.shape[1:] == (1, 16, 16)
    assert weights[images == 1.0].sum() == 0  # automatic lesions are out of the loss
    config, subjects, summary = _tiny_dae_run(tmp_path)
    assert summary["epoch"] == 2 and np.isfinite(summary["history"][-1]["mse"])
    assert np.isfinite(summary["history"][-1]["val_mse"])
    config.epochs = 3
    summary = train_dae(config, resume=True, subjects=subjects, progress=False)
    assert summary["epoch"] == 3 and len(summary["history"]) == 3

    path = export_dae_weights(tmp_path / "run", tmp_path / "uad_dae2d.pt")
    raw = torch.load(path, weights_only=True)  # the safe loader reads it
    assert raw["format"] == "uad_dae" and raw["command"] == "test dae"
    assert all(v.dtype == torch.float16 for v in raw["state_dict"].values() if v.is_floating_point())
    model = load_anomaly_model(path)
    assert isinstance(model.model, DenoisingUNet) and model.kind == "dae2d" and model.grid == TINY_GRID
    volume = np.zeros((20, 24, 24), np.float32)
    volume[3:17, 4:20, 4:20] = 100.0 + np.random.default_rng(0).random((14, 16, 16))
    job = anomaly_map(volume, (1.0, 1.0, 1.0), model, mask=volume > 0, batch_size=4)
    messages = []
    try:
        while True:
            messages.append(next(job))
    except StopIteration as stop:
        result = stop.value
    assert messages[-1][0] == messages[-1][1]
    assert result.anomaly.shape == volume.shape and result.reconstruction.shape == (8, 16, 16)
    assert (result.anomaly[volume == 0] == 0).all() and np.isfinite(result.anomaly).all()
    absolute = run_job(anomaly_map(volume, (1.0, 1.0, 1.0), model, mask=volume > 0, residual="absolute")).anomaly
    assert absolute.shape == volume.shape and (absolute >= 0).all()


def test_train_uad_command_dispatches_the_dae(monkeypatch, tmp_path) -> None:
    from napari_mentalmap import cli
    from napari_mentalmap.training import uad_dae

    seen = _record_training(monkeypatch, uad_dae, "train_dae")
    assert cli.main(["train", "uad", "--kind", "dae2d", "--noise-std", "0.2", "--epochs", "3",
                     "--out-dir", str(tmp_path / "run"), "--no-export"]) == 0
    config = seen["config"]
    assert config.noise_std == 0.2 and config.dae_config().noise_std == 0.2 and config.grid["median_at"] == 0.5
    assert cli.main(["train", "uad", "--kind", "dae2d", "--median-at", "0", "--out-dir", str(tmp_path / "p"),
                     "--no-export"]) == 0
    assert seen["config"].grid["median_at"] is None and not seen["config"].site_augment
    assert cli.main(["train", "uad", "--kind", "dae2d", "--site-augment", "--out-dir", str(tmp_path / "s"),
                     "--no-export"]) == 0
    assert seen["config"].site_augment


def _synthetic_test_volume(subject: str):
    from napari_mentalmap.evaluation.uad import TestVolume

    rng = np.random.default_rng(zlib.crc32(subject.encode()))  # stable across processes (hash() is salted)
    image = np.zeros((16, 24, 24), np.float32)
    mask = np.zeros(image.shape, bool)
    mask[2:14, 3:21, 3:21] = True
    image[mask] = 100 + 10 * rng.standard_normal(int(mask.sum()))
    truth = np.zeros(image.shape, bool)
    z, y = int(rng.integers(5, 10)), int(rng.integers(7, 14))
    truth[z:z + 3, y:y + 4, 9:13] = True
    image[truth] += 60
    return TestVolume(subject, image, (1.0, 1.0, 1.0), mask, truth)


def test_evaluation_table_has_every_set_and_column(monkeypatch, tmp_path) -> None:
    import csv

    from napari_mentalmap.evaluation import uad as evaluation
    from napari_mentalmap.training.uad_dae import export_dae_weights

    _tiny_dae_run(tmp_path, epochs=1)
    model = load_anomaly_model(export_dae_weights(tmp_path / "run", tmp_path / "uad_dae2d.pt"))
    monkeypatch.setattr(evaluation, "load_test_volume", _synthetic_test_volume)
    cases: list[dict] = []
    rows = evaluation.evaluate_all({"dae2d": model}, log=lambda _: None, residuals=("positive",), cases=cases)
    paths = evaluation.write_results(rows, tmp_path / "out", cases)
    with open(paths["csv"]) as handle:
        table = list(csv.DictReader(handle))
    assert {"method", "test set", "dice", "AUPRC"} <= set(table[0])
    sets = {row["test set"] for row in table}
    assert sets == set(evaluation.TEST_SETS)
    for name in ("open_ms", "cbica_wml", "brats2018"):
        assert any(name in s and "manual" in s for s in sets)
    assert any("patient07" in s and "open_ms" in s for s in sets)  # with and without the shipped sample
    assert any("automatic" in s for s in sets)
    methods = {row["method"] for row in table}
    assert sum(m.endswith("(baseline)") for m in methods) == 2 and any(m.startswith("dae2d") for m in methods)
    assert evaluation.GATED_LABEL in methods and not evaluation.GATED_LABEL.endswith("(baseline)")
    for method in methods:  # every method on every set
        assert {row["test set"] for row in table if row["method"] == method} == sets
    assert all(0 <= float(row["dice"]) <= 1 and 0 <= float(row["AUPRC"]) <= 1 for row in table)
    with open(paths["cases"]) as handle:
        per_case = list(csv.DictReader(handle))
    assert {"method", "test set", "subject", "dice", "threshold", "AUPRC"} <= set(per_case[0])
    cbica = [c for c in per_case if c["test set"].startswith("cbica_wml") and c["method"] == table[0]["method"]]
    assert len(cbica) == 10
    baseline = [r for r in table if r["method"].endswith("(baseline)") and r["test set"].startswith("cbica")][0]
    assert float(baseline["dice"]) > 0.5  # a bright blob on a flat brain: the baseline finds it


def test_per_case_threshold_comes_from_the_other_half() -> None:
    from napari_mentalmap.evaluation.uad import half_half_cases

    thresholds = [0.1, 0.2, 0.3]
    dices = np.array([[0.1, 0.8, 0.2], [0.2, 0.6, 0.4], [0.0, 0.3, 0.9]])
    cases = half_half_cases(dices, thresholds)
    assert cases[2] == (0.2, 0.3)  # chosen on volumes 0, 1
    assert cases[0] == (0.3, 0.2) and cases[1] == (0.3, 0.4)  # chosen on volume 2
    np.testing.assert_allclose(np.mean([d for _, d in cases]), half_half_protocol(dices, thresholds)["dice"])


def test_every_method_score_and_target_has_an_auto_threshold() -> None:
    from napari_mentalmap.evaluation.auto_thresholds import method_residuals
    from napari_mentalmap.inference.anomaly_methods import (
        ANOMALY_KINDS,
        AUTO_THRESHOLDS,
        INTENSITY_AUTO_THRESHOLD,
        INTENSITY_METHOD,
        SCORELESS_METHODS,
        TARGETS,
        auto_threshold,
    )

    for method in (*SCORELESS_METHODS, *ANOMALY_KINDS):
        for residual in method_residuals(method):
            for target in TARGETS:
                value = auto_threshold(method, residual, target)
                assert value is not None and 0.0 < value < 1.0, (method, residual, target)
    assert AUTO_THRESHOLDS[f"{INTENSITY_METHOD}||lesions"] == INTENSITY_AUTO_THRESHOLD


def test_synthetic_tumour_is_a_bright_mass_inside_the_brain() -> None:
    from napari_mentalmap.evaluation.auto_thresholds import TUMOUR_BRIGHTNESS, with_synthetic_tumour
    from napari_mentalmap.evaluation.uad import TestVolume

    shape = (60, 70, 60)
    axes = np.ogrid[tuple(slice(0, n) for n in shape)]
    brain = sum(((a - n / 2) / (0.45 * n)) ** 2 for a, n in zip(axes, shape, strict=True)) <= 1.0
    image = np.where(brain, 100.0 + np.random.default_rng(0).normal(0, 2, shape), 0.0).astype(np.float32)
    volume = TestVolume("healthy", image, (2.0, 2.0, 2.0), brain, np.zeros(shape, bool))
    tumour = with_synthetic_tumour(volume, seed=3)
    assert tumour.truth.any() and not (tumour.truth & ~brain).any()
    ratio = tumour.image[tumour.truth].mean() / image[tumour.truth].mean()
    assert 0.8 * TUMOUR_BRIGHTNESS < ratio < 1.2 * TUMOUR_BRIGHTNESS
    far = ~brain | (np.abs(tumour.image - image) < 1e-3)
    assert far.sum() > 0.8 * far.size  # the rest of the volume is unchanged
    assert np.array_equal(with_synthetic_tumour(volume, seed=3).image, tumour.image)  # deterministic
