"""The Auto calibrated to the user's corrected labels (inference.auto_calibration): it recovers
the parameter that made the labels, refuses labels it cannot use, and its file round-trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_mentalmap.inference.anomaly_jobs import auto_text, shipped_auto_thresholds
from napari_mentalmap.inference.anomaly_methods import (
    GATED_METHOD,
    INTENSITY_METHOD,
    auto_key,
    auto_threshold,
    per_scan_threshold,
)
from napari_mentalmap.inference.auto_calibration import (
    SDS_CHOICES,
    AutoCalibration,
    CalibratedThreshold,
    CalibrationError,
    calibrate_auto,
    calibrated_threshold,
    forget_calibration,
    load_calibrations,
    save_calibration,
)
from napari_mentalmap.inference.labels import threshold_labels

SHAPE = (24, 40, 40)


def _scan(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(map, mask): a noisy bulk in a ball (0 on a rim) with bright blobs of graded intensity."""
    rng = np.random.default_rng(seed)
    radius = np.sqrt(((np.indices(SHAPE) - np.array(SHAPE)[:, None, None, None] / 2) ** 2).sum(axis=0))
    mask = radius < 12
    score = np.where(radius < 11, rng.normal(0.5, 0.06, SHAPE), 0.0)
    for k, (z, y, x) in enumerate([(8, 14, 14), (12, 24, 20), (16, 18, 26), (10, 26, 12)]):
        blob = ((np.indices(SHAPE) - np.array([z, y, x])[:, None, None, None]) ** 2).sum(axis=0) <= 4
        score[blob] = 0.75 + 0.04 * k + rng.normal(0, 0.01, int(blob.sum()))
    return np.clip(score, 0, 1).astype(np.float32) * mask, mask


@pytest.mark.parametrize("sds", [2.0, 3.0, 4.0])
def test_calibration_recovers_the_sds_that_made_the_labels(sds: float) -> None:
    anomaly, mask = _scan()
    bulk = (0.5, 0.06)  # the gated method's fit, as its job returns it
    labels = threshold_labels(anomaly, per_scan_threshold(GATED_METHOD, sds, anomaly, mask, bulk)) > 0
    assert labels.any()
    calibration = calibrate_auto(GATED_METHOD, "", "lesions", anomaly, mask, labels, bulk, source="scan 1")
    assert calibration.dice == pytest.approx(1.0)
    # every SDs between the same two voxel values gives the same labels: the first one wins
    again = threshold_labels(anomaly, per_scan_threshold(GATED_METHOD, calibration.sds, anomaly, mask, bulk)) > 0
    assert np.array_equal(again, labels) and calibration.sds in SDS_CHOICES
    assert calibration.threshold is None and calibration.key == "DAE-gated FLAIR intensity||lesions"
    assert "learned from scan 1" in calibration.describe()


def test_a_fixed_auto_is_calibrated_to_a_threshold() -> None:
    anomaly, mask = _scan(1)
    assert auto_threshold(GATED_METHOD, "", "tumour") is not None  # the tumour Auto is fixed
    labels = threshold_labels(anomaly, 0.8) > 0
    calibration = calibrate_auto(GATED_METHOD, "", "tumour", anomaly, mask, labels)
    assert calibration.sds is None and calibration.dice == pytest.approx(1.0)
    assert np.array_equal(threshold_labels(anomaly, calibration.threshold) > 0, labels)
    assert calibrated_threshold(calibration, anomaly, mask) == calibration.threshold


def test_labels_it_cannot_use_are_refused() -> None:
    anomaly, mask = _scan()
    with pytest.raises(CalibrationError, match="labels are empty"):
        calibrate_auto(GATED_METHOD, "", "lesions", anomaly, mask, np.zeros(SHAPE, bool), (0.5, 0.06))
    with pytest.raises(CalibrationError, match="differ in shape"):
        calibrate_auto(GATED_METHOD, "", "lesions", anomaly, mask, np.ones((2, 2, 2), bool), (0.5, 0.06))
    with pytest.raises(ValueError, match="intensity could not be fitted"):  # no fit came with the map
        calibrate_auto(GATED_METHOD, "", "lesions", anomaly, mask, anomaly > 0.7, None)


def test_calibrations_round_trip_and_replace_the_shipped_auto(tmp_path) -> None:
    anomaly, mask = _scan()
    path = tmp_path / "calibration.json"
    assert load_calibrations(path) == {}
    lesions = AutoCalibration(GATED_METHOD, "", "lesions", 4.0, None, 0.8, "scan 1", "2026-12-06T00:00:00+00:00")
    save_calibration(lesions, path)
    tumour = AutoCalibration(INTENSITY_METHOD, "", "tumour", None, 0.9, 0.7, "scan 2", "2026-12-06T00:00:00+00:00")
    save_calibration(tumour, path)
    loaded = load_calibrations(path)
    assert loaded == {lesions.key: lesions, tumour.key: tumour}
    assert auto_key("dae2d", "positive", "lesions") == "dae2d|positive|lesions"
    assert auto_key(GATED_METHOD, "positive", "lesions") == lesions.key  # no score for the gated method

    class Result:  # what the job hands over
        pass

    result = Result()
    result.anomaly, result.brain_mask, result.intensity_bulk, result.warnings = anomaly, mask, (0.5, 0.06), []
    found = shipped_auto_thresholds(GATED_METHOD, "", result, loaded)
    assert isinstance(found["lesions"], CalibratedThreshold)
    assert found["lesions"] == pytest.approx(np.sqrt(0.5 + 4.0 * 0.06))
    assert auto_text(found["lesions"]).endswith("(your calibration)")
    assert found["tumour"] == auto_threshold(GATED_METHOD, "", "tumour")  # another method's calibration
    assert forget_calibration(lesions.key, path) and not forget_calibration(lesions.key, path)
    assert load_calibrations(path) == {tumour.key: tumour}


def test_an_unreadable_file_is_reported_and_replaced_on_the_next_save(tmp_path) -> None:
    path = tmp_path / "calibration.json"
    path.write_text("{not json")
    with pytest.raises(CalibrationError, match="cannot be read"):
        load_calibrations(path)
    path.write_text(json.dumps({"x": {"method": "m"}}))  # a field missing
    with pytest.raises(CalibrationError, match="cannot be read"):
        load_calibrations(path)
    good = {"method": GATED_METHOD, "score": "", "target": "lesions", "sds": 3.0, "threshold": None, "dice": 0.5,
            "source": "s", "created": "t"}
    for bad in ({"sds": "3"}, {"sds": None}, {"threshold": 0.8}, {"sds": float("nan")}):
        path.write_text(json.dumps({"x": {**good, **bad}}))
        with pytest.raises(CalibrationError, match="one finite sds or threshold"):
            load_calibrations(path)
    calibration = AutoCalibration(GATED_METHOD, "", "lesions", 3.0, None, 0.5, "s", "t")
    save_calibration(calibration, path)
    assert load_calibrations(path) == {calibration.key: calibration}
    assert not list(tmp_path.glob("*.tmp*"))  # no temporary file left
