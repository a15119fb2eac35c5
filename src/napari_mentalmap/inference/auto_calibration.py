"""An Auto threshold calibrated to the user's own corrected labels (numpy only).

The shipped Auto is chosen on validation FLAIRs whose lesions were drawn by one protocol; a
site whose annotators draw tighter (or looser) margins wants another threshold. After the user
has corrected the labels of one scan, :func:`calibrate_auto` finds the value of the Auto's
parameter that reproduces them best (the SDs of a per-scan Auto, else the fixed threshold):
the best Dice between the dock's labels at that value (threshold, small components removed)
and the corrected labels. The calibration is saved per method, score and target in the user's
data folder (:func:`save_calibration`) and used by every later Auto of that method and target
(:func:`calibrated_threshold`), until the user forgets it.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Generator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .anomaly_methods import (
    auto_key,
    auto_threshold,
    per_scan_sds,
    per_scan_threshold,
    per_scan_thresholds,
    score_of,
)
from .jobs import Progress, run_to_completion
from .labels import DEFAULT_MIN_SIZE, LabelUpdater

SDS_CHOICES = np.round(np.arange(0.25, 8.0001, 0.05), 2)
"""The SDs a per-scan Auto can be calibrated to."""
THRESHOLD_STEPS = 200
"""Fixed thresholds tried between the map's median in the brain and its maximum."""
CALIBRATION_FILE = "auto_calibration.json"


class CalibrationError(ValueError):
    """The labels cannot calibrate the Auto (empty, another shape, a map with nothing to fit)."""


class CalibratedThreshold(float):
    """An Auto threshold from the user's calibration (a ``float``; lists say "your calibration")."""


@dataclass(frozen=True)
class AutoCalibration:
    """The Auto's parameter for one method, score and target, learned from one corrected scan."""

    method: str
    score: str
    target: str
    sds: float | None  # per-scan Auto: fitted SDs; None for a fixed Auto
    threshold: float | None  # fixed Auto: the threshold; None for a per-scan Auto
    dice: float  # Dice of the calibrated labels with the corrected ones on that scan
    source: str  # the scan it was learned from
    created: str

    @property
    def key(self) -> str:
        return auto_key(self.method, self.score, self.target)

    def describe(self) -> str:
        """One line for the dock and the CLI."""
        value = f"{self.sds:g} SDs" if self.sds is not None else f"threshold {self.threshold:.3g}"
        return f"{value}, learned from {self.source} (Dice {self.dice:.2f} there)"


@dataclass
class CalibrationSearch:
    """What :func:`search_job` tries: the candidate values of the Auto's parameter for one map."""

    method: str
    score: str
    target: str
    anomaly: np.ndarray
    labels: np.ndarray  # bool, the user's corrected labels
    values: np.ndarray  # the per-scan SDs (``per_scan``) or fixed thresholds tried
    thresholds: np.ndarray  # the threshold each value gives on this map
    per_scan: bool
    min_size: int
    source: str


def calibration_search(method: str, residual: str, target: str, anomaly: np.ndarray, mask: np.ndarray,
                       labels: np.ndarray, intensity_bulk: tuple[float, float] | None = None,
                       min_size: int = DEFAULT_MIN_SIZE, source: str = "") -> CalibrationSearch:
    """Check the inputs and list the candidates (fast; the search itself is :func:`search_job`).

    Raises :class:`CalibrationError` when ``labels`` is empty or of another shape than the map,
    and ``ScanThresholdError`` when a per-scan Auto cannot fit this scan.
    """
    anomaly, labels = np.asarray(anomaly), np.array(labels) > 0  # a copy: the user may paint meanwhile
    if labels.shape != anomaly.shape:
        raise CalibrationError(f"the labels {labels.shape} and the anomaly map {anomaly.shape} differ in shape")
    if not labels.any():
        raise CalibrationError("the labels are empty: keep or paint this scan's lesions first, then calibrate")
    score = score_of(method, residual)
    if per_scan_sds(method, residual, target) is not None:
        thresholds = per_scan_thresholds(method, SDS_CHOICES, anomaly, mask, intensity_bulk)
        return CalibrationSearch(method, score, target, anomaly, labels, SDS_CHOICES, thresholds, True,
                                 min_size, source)
    inside = anomaly[np.asarray(mask, bool)]
    if inside.size == 0 or float(inside.max()) <= float(np.median(inside)):
        raise CalibrationError("the anomaly map has nothing above its median inside the brain mask")
    thresholds = np.linspace(float(np.median(inside)), float(inside.max()), THRESHOLD_STEPS)
    return CalibrationSearch(method, score, target, anomaly, labels, thresholds, thresholds, False, min_size, source)


def search_job(search: CalibrationSearch) -> Generator[Progress, None, AutoCalibration]:
    """The candidate whose labels (threshold, small components removed) best match the user's
    (Dice), as a job: a progress report (Cancel point) every few candidates."""
    updater = LabelUpdater(search.anomaly)
    truth = int(search.labels.sum())
    dices = []
    for index, value in enumerate(search.thresholds):
        if index % 8 == 0:
            yield index, len(search.thresholds), "calibrating the Auto to your labels"
        found = updater.update(float(value), search.min_size) > 0
        dices.append(2.0 * int(np.count_nonzero(found & search.labels)) / (int(found.sum()) + truth))
    best = int(np.argmax(dices))
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    value = float(search.values[best])
    return AutoCalibration(search.method, search.score, search.target, value if search.per_scan else None,
                           None if search.per_scan else value, float(dices[best]), search.source, created)


def calibrate_auto(method: str, residual: str, target: str, anomaly: np.ndarray, mask: np.ndarray,
                   labels: np.ndarray, intensity_bulk: tuple[float, float] | None = None,
                   min_size: int = DEFAULT_MIN_SIZE, source: str = "") -> AutoCalibration:
    """The Auto parameter whose labels best match ``labels`` (the user's corrected labels):
    :func:`calibration_search` then :func:`search_job`, without a GUI."""
    search = calibration_search(method, residual, target, anomaly, mask, labels, intensity_bulk, min_size, source)
    return run_to_completion(search_job(search))


def calibrated_threshold(calibration: AutoCalibration, anomaly: np.ndarray, mask: np.ndarray,
                         intensity_bulk: tuple[float, float] | None = None) -> CalibratedThreshold:
    """The calibrated Auto for this scan (per scan with the calibrated SDs, or the fixed value)."""
    if calibration.sds is None:
        return CalibratedThreshold(calibration.threshold)
    return CalibratedThreshold(per_scan_threshold(calibration.method, calibration.sds, anomaly, mask, intensity_bulk))


def shipped_value(calibration: AutoCalibration) -> str:
    """What the shipped Auto of the calibration's method and target is, for comparison."""
    sds = per_scan_sds(calibration.method, calibration.score, calibration.target)
    if sds is not None:
        return f"{sds:g} SDs"
    fixed = auto_threshold(calibration.method, calibration.score, calibration.target)
    return "none" if fixed is None else f"threshold {fixed:g}"


def calibration_path() -> Path:
    """The user's calibrations (the user's data folder, platformdirs; ``MENTALMAP_CALIBRATION``
    overrides it, e.g. for a study's shared file)."""
    override = os.environ.get("MENTALMAP_CALIBRATION")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_data_dir("napari-mentalmap")) / CALIBRATION_FILE


def load_calibrations(path: Path | None = None) -> dict[str, AutoCalibration]:
    """Every saved calibration by key; an absent file gives none. Raises :class:`CalibrationError`
    with the file's name when it cannot be read (the caller shows it and goes on without)."""
    path = calibration_path() if path is None else Path(path)
    if not path.exists():
        return {}
    try:
        entries = json.loads(path.read_text())
        found = {}
        for entry in entries.values():
            calibration = _checked(AutoCalibration(**entry))
            found[calibration.key] = calibration
        return found
    except (OSError, ValueError, TypeError, AttributeError) as error:
        raise CalibrationError(f"the Auto calibrations in {path} cannot be read ({error}); the shipped Auto is "
                               "used (delete the file or calibrate again to replace it)") from error


def _checked(calibration: AutoCalibration) -> AutoCalibration:
    """``calibration`` as read from a file, refused (``ValueError``) unless exactly one of its SDs
    and threshold is a finite number and its names are strings."""
    values = [v for v in (calibration.sds, calibration.threshold) if v is not None]
    if (len(values) != 1 or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in values)
            or not all(isinstance(v, str) for v in (calibration.method, calibration.score, calibration.target))):
        raise ValueError(f"entry {calibration.key!r} needs one finite sds or threshold")
    return calibration


def _write(calibrations: dict[str, AutoCalibration], path: Path) -> None:
    from ..io.atomic import write_bytes_atomically

    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({key: asdict(c) for key, c in sorted(calibrations.items())}, indent=1)
    write_bytes_atomically(path, (text + "\n").encode())


def save_calibration(calibration: AutoCalibration, path: Path | None = None) -> Path:
    """Add (or replace) ``calibration`` in the user's file, atomically; an unreadable file is replaced."""
    path = calibration_path() if path is None else Path(path)
    try:
        calibrations = load_calibrations(path)
    except CalibrationError:
        calibrations = {}
    calibrations[calibration.key] = calibration
    _write(calibrations, path)
    return path


def forget_calibration(key: str, path: Path | None = None) -> bool:
    """Remove one calibration (True when there was one)."""
    path = calibration_path() if path is None else Path(path)
    calibrations = load_calibrations(path)
    if calibrations.pop(key, None) is None:
        return False
    _write(calibrations, path)
    return True
