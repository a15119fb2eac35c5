"""The per-scan Auto threshold (inference.scan_threshold) on synthetic maps: a healthy bulk plus
bright blobs, an affine change of the score, and maps it cannot fit."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mentalmap.inference.labels import threshold_labels
from napari_mentalmap.inference.scan_threshold import (
    MIN_VOXELS,
    ScanThreshold,
    ScanThresholdError,
    bulk_fit,
    false_positive_rate,
    scan_threshold,
)

SHAPE = (40, 40, 40)
BLOBS = [(slice(8, 12), slice(10, 14), slice(18, 22)), (slice(18, 22), slice(26, 30), slice(12, 16)),
         (slice(26, 30), slice(14, 18), slice(24, 28)), (slice(17, 21), slice(17, 21), slice(17, 21))]


def _brain_map(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(map, brain mask, blobs): Gaussian healthy bulk (0.4 +- 0.05) in a ball, 0 on its rim and
    outside (the eroded edge of a real map), four 64-voxel blobs at about 0.9."""
    rng = np.random.default_rng(seed)
    grid = np.indices(SHAPE) - 19.5
    radius = np.sqrt((grid ** 2).sum(axis=0))
    mask = radius < 18
    anomaly = np.where(radius < 16, rng.normal(0.4, 0.05, SHAPE), 0.0).astype(np.float32)
    blobs = np.zeros(SHAPE, bool)
    for box in BLOBS:
        blobs[box] = True
    anomaly[blobs] = rng.normal(0.9, 0.02, int(blobs.sum()))
    return anomaly, mask, blobs


def test_finds_the_blobs_at_the_chosen_false_positive_rate() -> None:
    anomaly, mask, blobs = _brain_map()
    location, scale = bulk_fit(anomaly, mask)
    assert location == pytest.approx(0.4, abs=0.005) and scale == pytest.approx(0.05, rel=0.05)
    sds = 3.0
    threshold = scan_threshold(anomaly, mask, sds)
    assert isinstance(threshold, ScanThreshold) and isinstance(threshold, float)
    healthy = mask & (anomaly > 0) & ~blobs
    rate = float((anomaly[healthy] > threshold).mean())
    assert 0.5 * false_positive_rate(sds) < rate < 2.0 * false_positive_rate(sds)  # 0.00135 nominal
    labels = threshold_labels(anomaly, threshold)
    assert labels.max() == len(BLOBS)  # the scattered false positives are under the 10-voxel minimum
    np.testing.assert_array_equal(labels > 0, blobs)
    assert false_positive_rate(0.0) == pytest.approx(0.5) and false_positive_rate(3.0) == pytest.approx(0.00135, 1e-2)


@pytest.mark.parametrize(("gain", "offset"), [(2.5, -3.0), (0.01, 7.0), (1.0, 0.25)])
def test_labels_do_not_change_under_an_affine_change_of_the_score(gain: float, offset: float) -> None:
    anomaly, mask, _ = _brain_map(seed=1)
    threshold = scan_threshold(anomaly, mask, 2.0)
    changed = (gain * anomaly.astype(np.float64) + offset).astype(np.float32)
    moved = scan_threshold(changed, mask, 2.0)
    assert moved == pytest.approx(gain * threshold + offset, rel=1e-5, abs=1e-6)
    np.testing.assert_array_equal(threshold_labels(changed, moved) > 0, threshold_labels(anomaly, threshold) > 0)


def test_maps_it_cannot_fit_get_a_clear_message() -> None:
    anomaly, mask, _ = _brain_map()
    with pytest.raises(ScanThresholdError, match="brain mask is empty"):
        scan_threshold(anomaly, np.zeros(SHAPE, bool), 2.0)
    with pytest.raises(ScanThresholdError, match="constant inside the brain mask"):
        scan_threshold(np.full(SHAPE, 0.3, np.float32), mask, 2.0)
    with pytest.raises(ScanThresholdError, match=r"mask \(40, 40, 39\) and the anomaly map \(40, 40, 40\) differ"):
        scan_threshold(anomaly, mask[:, :, :-1], 2.0)
    nan = anomaly.copy()
    nan[20, 20, 20] = np.nan
    with pytest.raises(ScanThresholdError, match="NaN or infinite"):
        scan_threshold(nan, mask, 2.0)
    few = np.zeros(SHAPE, np.float32)
    few.flat[: MIN_VOXELS - 1] = 1.0
    with pytest.raises(ScanThresholdError, match=f"only {MIN_VOXELS - 1} brain voxels"):
        scan_threshold(few, np.ones(SHAPE, bool), 2.0)
    assert issubclass(ScanThresholdError, ValueError)


def test_the_docks_auto_leaves_out_a_target_it_cannot_fit_and_says_why() -> None:
    from types import SimpleNamespace

    from napari_mentalmap.inference.anomaly_jobs import shipped_auto_thresholds
    from napari_mentalmap.inference.anomaly_methods import (
        GATED_METHOD,
        TARGETS,
        auto_threshold,
        per_scan_sds,
    )

    anomaly, mask, _ = _brain_map()
    result = SimpleNamespace(anomaly=anomaly, brain_mask=mask, warnings=[], intensity_bulk=None)
    found = shipped_auto_thresholds(GATED_METHOD, "", result)  # the job could not fit the intensity
    per_scan = [t for t in TARGETS if per_scan_sds(GATED_METHOD, "", t) is not None]
    assert per_scan, "the default method has a per-scan Auto"
    assert sorted(found) == sorted(set(TARGETS) - set(per_scan))
    assert all(found[t] == auto_threshold(GATED_METHOD, "", t) for t in found)  # fixed ones stay
    assert result.warnings == [f"no {t} Auto for this scan: the brain's intensity could not be fitted (empty mask, "
                               "constant image or too few brain voxels): set the threshold by hand" for t in per_scan]
    result = SimpleNamespace(anomaly=anomaly, brain_mask=mask, warnings=[], intensity_bulk=(0.5, 0.1))
    found = shipped_auto_thresholds(GATED_METHOD, "", result)
    assert all(isinstance(found[t], ScanThreshold) for t in per_scan) and not result.warnings
    for target in per_scan:  # the intensity's fit, on the gated score's square-root scale
        assert found[target] == pytest.approx(np.sqrt(0.5 + per_scan_sds(GATED_METHOD, "", target) * 0.1))


def test_only_the_gated_method_thresholds_the_intensity_bulk() -> None:
    from napari_mentalmap.inference.anomaly_methods import (
        GATED_METHOD,
        INTENSITY_METHOD,
        per_scan_threshold,
    )

    anomaly, mask, _ = _brain_map()
    own = scan_threshold(anomaly, mask, 2.0)
    assert per_scan_threshold(INTENSITY_METHOD, 2.0, anomaly, mask, (9.0, 9.0)) == own  # its map is the intensity
    assert per_scan_threshold("dae2d", 2.0, anomaly, mask) == own
    assert per_scan_threshold(GATED_METHOD, 2.0, anomaly, mask, (0.3, 0.1)) == pytest.approx(np.sqrt(0.5))
    assert per_scan_threshold(GATED_METHOD, 2.0, anomaly, mask, (-0.5, 0.1)) == 0.0  # never a NaN
    with pytest.raises(ScanThresholdError, match="intensity could not be fitted"):
        per_scan_threshold(GATED_METHOD, 2.0, anomaly, mask, None)


def test_the_target_list_says_which_auto_comes_from_the_scan() -> None:
    from napari_mentalmap.inference.anomaly_jobs import auto_text

    assert auto_text(ScanThreshold(0.81234)) == ": 0.812 (this scan)"
    assert auto_text(0.85) == ": 0.85"
    assert auto_text(None) == ""


def test_every_per_scan_entry_names_a_method_score_and_target() -> None:
    from napari_mentalmap.evaluation.auto_thresholds import method_residuals
    from napari_mentalmap.inference.anomaly_methods import (
        ANOMALY_KINDS,
        PER_SCAN_SDS,
        SCORELESS_METHODS,
        TARGETS,
    )

    for key, sds in PER_SCAN_SDS.items():
        method, score, target = key.split("|")
        assert method in (*SCORELESS_METHODS, *ANOMALY_KINDS) and score in method_residuals(method), key
        assert target in TARGETS and 0.0 < sds < 10.0, key
