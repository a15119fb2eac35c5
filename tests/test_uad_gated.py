"""The DAE-gated intensity method (the anomaly dock's default) and the sub-job helper it runs on."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mentalmap.inference.anomaly import (
    GATE_SCALE,
    anomaly_map,
    gated_intensity,
    gated_intensity_map,
    intensity_score,
    load_anomaly_model,
    run_job,
)
from napari_mentalmap.inference.jobs import part_of
from napari_mentalmap.inference.labels import threshold_labels
from napari_mentalmap.inference.scan_threshold import bulk_fit


def test_gated_intensity_invariants() -> None:
    rng = np.random.default_rng(0)
    intensity = rng.uniform(-0.2, 1.3, (6, 7, 8)).astype(np.float32)
    residual = rng.uniform(0.0, 0.3, intensity.shape).astype(np.float32)
    score = gated_intensity(intensity, residual)
    assert score.dtype == np.float32 and score.shape == intensity.shape
    assert score.min() >= 0.0 and score.max() <= 1.0
    # no residual: nothing; a residual of at least the scale: the intensity counts fully
    assert not gated_intensity(intensity, np.zeros_like(residual)).any()
    full = residual >= GATE_SCALE
    np.testing.assert_allclose(score[full], np.sqrt(np.clip(intensity[full], 0, 1)), rtol=1e-6)
    # monotone in both inputs
    assert (gated_intensity(intensity + 0.1, residual) >= score).all()
    assert (gated_intensity(intensity, residual + 0.01) >= score).all()
    with pytest.raises(ValueError, match="differ"):
        gated_intensity(intensity, residual[:-1])
    with pytest.raises(ValueError, match="scale"):
        gated_intensity(intensity, residual, scale=0.0)


def _flair_with_lesion() -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    rng = np.random.default_rng(1)
    image = np.zeros((24, 40, 36), np.float32)
    mask = np.zeros(image.shape, bool)
    mask[3:21, 5:35, 5:31] = True
    image[mask] = 100 + 8 * rng.standard_normal(int(mask.sum()))
    image[10:14, 18:23, 15:20] += 70  # a hyperintense lesion
    return image, mask, (2.0, 2.0, 2.0)


def test_gated_map_combines_the_shipped_maps_on_the_input_grid() -> None:
    image, mask, spacing = _flair_with_lesion()
    model = load_anomaly_model("dae2d")
    reports: list = []
    result = run_job(gated_intensity_map(image, spacing, model, mask=mask), reports.append)
    residual = run_job(anomaly_map(image, spacing, model, mask=mask)).anomaly
    intensity = intensity_score(image, spacing, mask)
    np.testing.assert_array_equal(result.anomaly, gated_intensity(intensity, residual))
    assert result.anomaly.shape == image.shape and np.array_equal(result.brain_mask, mask)
    assert result.reconstruction is not None  # the DAE's, for the record
    assert reports[-1] == (10, 10, "done") and all(total == 10 for _, total, _ in reports)
    # the per-scan Auto's fit: the bulk of the intensity the map was gated from
    assert result.intensity_bulk == pytest.approx(bulk_fit(intensity, mask))


def test_the_gated_auto_labels_do_not_change_with_the_scanners_units() -> None:
    """The raw FLAIR under a positive gain and an offset (another scanner's units): the same
    per-scan lesion Auto and the same labels."""
    from napari_mentalmap.inference.anomaly_methods import GATED_METHOD, scan_auto_threshold

    image, mask, spacing = _flair_with_lesion()
    model = load_anomaly_model("dae2d")
    labels = []
    for raw in (image, 3.0 * image + 250.0 * mask):
        result = run_job(gated_intensity_map(raw, spacing, model, mask=mask))
        auto = scan_auto_threshold(GATED_METHOD, "", "lesions", result.anomaly, mask, result.intensity_bulk)
        labels.append(threshold_labels(result.anomaly, auto) > 0)
    assert labels[0][10:14, 18:23, 15:20].mean() > 0.5  # the lesion is found
    assert np.array_equal(labels[0], labels[1])
    lesion = np.zeros(image.shape, bool)
    lesion[10:14, 18:23, 15:20] = True
    assert result.anomaly[lesion].mean() > 2 * result.anomaly[mask & ~lesion].mean()


def test_gated_map_of_a_dae_normalised_otherwise_computes_the_intensity_itself() -> None:
    """A DAE whose input is percentile-normalised cannot lend its input to the intensity
    method (median-normalised): the map is still the composition of the two shipped maps."""
    from dataclasses import replace

    image, mask, spacing = _flair_with_lesion()
    shipped = load_anomaly_model("dae2d")
    model = replace(shipped, grid=replace(shipped.grid, median_at=None))
    result = run_job(gated_intensity_map(image, spacing, model, mask=mask))
    residual = run_job(anomaly_map(image, spacing, model, mask=mask)).anomaly
    np.testing.assert_array_equal(result.anomaly, gated_intensity(intensity_score(image, spacing, mask), residual))


def test_part_of_rescales_progress_and_closes_the_inner_job() -> None:
    closed = []

    def inner():
        try:
            for i in range(4):
                yield i, 4, f"step {i}"
            return "result"
        finally:
            closed.append(True)

    def outer():
        value = yield from part_of(inner(), 2, 6, 10)
        yield 10, 10, "done"
        return value

    reports: list = []
    assert run_job(outer(), reports.append) == "result"
    assert [r[0] for r in reports] == [2, 3, 5, 6, 10] and all(r[1] == 10 for r in reports)
    assert closed == [True]
    closed.clear()
    job = outer()
    next(job)
    job.close()  # a cancel in the middle
    assert closed == [True]


def _intensity_bulk(image: np.ndarray, spacing) -> tuple[float, float]:
    """The fit the gated job's per-scan Auto uses, from the intensity method's own job (same brain
    mask, same normalised intensity)."""
    from napari_mentalmap.inference.anomaly import intensity_anomaly_map, run_job
    from napari_mentalmap.inference.scan_threshold import bulk_fit

    result = run_job(intensity_anomaly_map(image, spacing, device="cpu"))
    return bulk_fit(result.anomaly, result.brain_mask)


def test_dock_runs_the_gated_method_by_default_at_its_auto_threshold(make_napari_viewer, qtbot) -> None:
    from napari_mentalmap.inference.anomaly_methods import GATED_METHOD, scan_auto_threshold
    from napari_mentalmap.inference.scan_threshold import ScanThreshold
    from napari_mentalmap.widgets.anomaly import AnomalyWidget

    image, _, spacing = _flair_with_lesion()
    viewer = make_napari_viewer()
    viewer.add_image(image, name="FLAIR", scale=spacing)
    widget = AnomalyWidget(viewer)
    assert widget.model_combo.currentData() == GATED_METHOD and not widget.residual_combo.isEnabled()
    assert widget.compute() is not None
    qtbot.waitUntil(lambda: not widget.busy and widget.current is not None, timeout=60_000)
    assert widget.current.method == GATED_METHOD
    anomaly = np.asarray(widget.image_layer.data)
    auto = scan_auto_threshold(GATED_METHOD, "", widget.target, anomaly, np.ones(anomaly.shape, bool),
                               _intensity_bulk(image, spacing))
    assert auto is not None and widget.threshold_slider.value() == pytest.approx(auto, abs=1e-3)
    # the lesion Auto is this scan's own, and the target list says so
    assert isinstance(widget.current.auto_thresholds["lesions"], ScanThreshold)
    assert widget.target_combo.itemText(widget.target_combo.findData("lesions")).endswith(
        f"{widget.current.auto_thresholds['lesions']:.3g} (this scan)")
    assert widget.image_layer.data.shape == image.shape
    np.testing.assert_allclose(widget.labels_layer.scale, spacing)


def test_cancel_during_the_median_filters_does_not_wait_for_them(monkeypatch) -> None:
    """Closing the job (a Cancel) while both median filters run returns at once; the filters
    finish unseen in their threads."""
    import threading

    from napari_mentalmap.inference import anomaly

    release, started, finished = threading.Event(), threading.Event(), threading.Event()

    def blocked_filter(values, size):
        started.set()
        release.wait(timeout=5)
        finished.set()
        return values

    image, mask, spacing = _flair_with_lesion()
    job = gated_intensity_map(image, spacing, load_anomaly_model("dae2d"), mask=mask)
    monkeypatch.setattr(anomaly, "median_filtered", blocked_filter)
    for _, _, message in job:
        if message == "median filters":
            break
    assert started.wait(timeout=5)
    job.close()
    assert not finished.is_set()  # close returned while the filters were still blocked
    release.set()
