"""The Anomaly maps dock's "Calibrate Auto": the Auto learned from the user's corrected labels.

After correcting one scan's labels, *Calibrate Auto to these labels* finds the Auto parameter
(per-scan SDs, or a fixed threshold) whose labels match the corrections best
(:func:`..inference.auto_calibration.calibrate_auto`), saves it for the method, score and
target, and applies it to every result of that method in the dock and to every later
Compute. *Forget* goes back to the shipped Auto.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import QLabel, QPushButton

from ..inference.anomaly_methods import auto_key, scan_auto_threshold
from ..inference.auto_calibration import (
    AutoCalibration,
    CalibrationError,
    calibrated_threshold,
    calibration_search,
    forget_calibration,
    load_calibrations,
    save_calibration,
    search_job,
    shipped_value,
)
from ..inference.scan_threshold import ScanThresholdError
from ._forms import row


class AutoCalibrationControls:
    """The two buttons and the status line, working on ``dock`` (an ``AnomalyWidget``)."""

    def __init__(self, dock: Any) -> None:
        self.dock = dock
        self.calibrate_button = QPushButton("Calibrate Auto to these labels")
        self.calibrate_button.setToolTip(
            "after correcting this scan's labels: learn the Auto that reproduces them and use it for "
            "this method and target from now on (e.g. a site whose lesions are drawn tighter)")
        self.forget_button = QPushButton("Forget")
        self.forget_button.setToolTip("go back to the shipped Auto for this method and target")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.widget = row(self.calibrate_button, self.forget_button, stretch_first=True)
        self.calibrate_button.clicked.connect(self.calibrate)
        self.forget_button.clicked.connect(self.forget)

    def saved(self) -> dict[str, AutoCalibration]:
        """The user's calibrations (none, with a warning, when the file cannot be read)."""
        try:
            return load_calibrations()
        except CalibrationError as error:
            from napari.utils.notifications import show_warning

            show_warning(str(error))
            return {}

    def _key(self) -> str | None:
        result = self.dock.current
        return None if result is None else auto_key(result.method, result.residual, self.dock.target)

    def refresh(self) -> None:
        """Enable the buttons for the current result and say which Auto is in use."""
        key = self._key()
        self.calibrate_button.setEnabled(key is not None)
        try:  # quietly: Compute warns about an unreadable file
            calibration = None if key is None else load_calibrations().get(key)
        except CalibrationError:
            calibration = None
        self.forget_button.setEnabled(calibration is not None)
        self.status.setText("" if calibration is None else
                            f"Auto calibrated: {calibration.describe()}; shipped: {shipped_value(calibration)}"
                            + (f" (CLI: --auto-sds {calibration.sds:g})" if calibration.sds is not None else ""))

    def calibrate(self):
        """Learn the current target's Auto from the current labels layer (the user's corrections)
        in the dock's worker (progress, Cancel); the worker, or None when refused."""
        from napari.utils.notifications import show_error

        result, target = self.dock.current, self.dock.target
        if result is None or self.dock.runner.busy:
            return None
        anomaly = result.labels.proposal.anomaly
        try:
            search = calibration_search(result.method, result.residual, target, anomaly, _whole(anomaly),
                                        result.labels_layer.data, result.fit, int(self.dock.min_size.value()),
                                        result.source.name)
        except (CalibrationError, ScanThresholdError) as error:
            show_error(f"Anomaly maps: cannot calibrate the Auto: {error}")
            return None

        def on_returned(calibration: AutoCalibration) -> list:
            try:
                save_calibration(calibration)
            except OSError as error:
                show_error(f"Anomaly maps: cannot save the calibration: {error}")
                return []
            self._apply(calibration.key, calibration)
            return [lambda: f"Auto calibrated: {calibration.describe()}"]

        return self.dock.runner.start(f"calibrating the {target} Auto on {result.source.name}", search_job(search),
                                      on_returned)

    def forget(self) -> None:
        """Drop the current method and target's calibration: the shipped Auto again."""
        key = self._key()
        if key is None:
            return
        try:
            forget_calibration(key)
        except (CalibrationError, OSError) as error:
            from napari.utils.notifications import show_error

            show_error(f"Anomaly maps: cannot forget the calibration: {error}")
            return
        self._apply(key, None)

    def _apply(self, key: str, calibration: AutoCalibration | None) -> None:
        """Re-compute the Auto of ``key``'s target for every result of its method in the dock."""
        method, score, target = key.split("|")
        for result in self.dock.results.values():
            if auto_key(result.method, result.residual, target) != key:
                continue
            anomaly = result.labels.proposal.anomaly
            try:
                value = (calibrated_threshold(calibration, anomaly, _whole(anomaly), result.fit) if calibration
                         else scan_auto_threshold(method, result.residual, target, anomaly, _whole(anomaly), result.fit))
            except ScanThresholdError:
                continue  # e.g. a result re-linked by a reopened dock, without the intensity fit: kept
            if value is None:
                result.auto_thresholds.pop(target, None)
            else:
                result.auto_thresholds[target] = value
        self.dock._target_changed()
        self.refresh()


def _whole(anomaly: np.ndarray) -> np.ndarray:
    # the maps are 0 outside the eroded brain, and the fits leave out the map's floor: the whole
    # volume gives the brain mask's fit (the mask itself is not kept with a result)
    return np.ones(anomaly.shape, bool)
