"""The dock's per-scan Auto (``mentalmap eval uad-per-scan``): its constant per method, score and
target, chosen on validation only, and the Dice it gives on the manual-label test sets.

**Choice** (:func:`per_scan_choices`). The per-scan threshold is ``sds`` fitted SDs above the
bulk of the scan's own map (:mod:`..inference.scan_threshold`). ``sds`` is the value on
``SDS_GRID`` with the best mean Dice over the validation cases of the target
(:mod:`.validation_cases`): for **lesions** the validation FLAIRs (Subj18-20 vs ``wml_auto``)
as given, under five site shifts, as the two other sites acquire them and at three synthetic
lesion loads (33 volumes); for **tumour** the synthetic tumours of the fixed tumour Auto plus
larger ones (12). The per-scan rule ships for a method, score and target only when its mean
Dice there beats the best single fixed threshold on the same cases; otherwise the fixed Auto
(``AUTO_THRESHOLDS``) stays.

**Test** (:func:`per_scan_test_rows`, report only). For every scan of every manual-label set,
the Dice at the shipped Auto (the dock's code path: lesions on ``open_ms`` and ``cbica_wml``,
tumour on ``brats2018``) and at ONE best fixed threshold per set and method (an oracle chosen
on that set), written as ``results/uad/auto_per_scan.csv``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..inference.anomaly_methods import (
    ANOMALY_KINDS,
    GATED_METHOD,
    INTENSITY_METHOD,
    SCORELESS_METHODS,
    auto_key,
    per_scan_thresholds,
    scan_auto_threshold,
)
from ..inference.auto_calibration import calibrate_auto, calibrated_threshold
from ..inference.labels import DEFAULT_MIN_SIZE, LabelUpdater
from ..inference.scan_threshold import ScanThresholdError, false_positive_rate
from ..metrics import dice
from .auto_thresholds import GATED_GRID, method_residuals, method_results

SDS_GRID = np.round(np.arange(0.25, 6.001, 0.05), 2)
"""Candidate SDs of the per-scan rule."""
FIXED_GRIDS = {GATED_METHOD: GATED_GRID, INTENSITY_METHOD: GATED_GRID}
"""Fixed thresholds the per-scan rule is compared with (models: ``calibration.FINE_THRESHOLDS``)."""
TEST_SET_TARGETS = {"open_ms (manual GT)": "lesions", "cbica_wml (manual GT)": "lesions",
                    "brats2018 FLAIR (manual GT, tumours)": "tumour"}
"""The manual-label sets of ``auto_per_scan.csv`` and the Auto target each is scored with."""
TEST_COLUMNS = ("test set", "scan", "method", "dice_auto", "dice_best_fixed")
CALIBRATED_COLUMNS = (*TEST_COLUMNS, "calibrated from", "calibrated value", "dice_calibrated")


def fixed_grid(method: str) -> np.ndarray:
    """The fixed thresholds a method's per-scan rule is compared with (and the test oracle's grid)."""
    from .calibration import FINE_THRESHOLDS

    return FIXED_GRIDS.get(method, FINE_THRESHOLDS)


def method_label(method: str, residual: str) -> str:
    """A method's name in the tables: the default ends in "(default)", a model names its score."""
    if method == GATED_METHOD:
        return f"{method} (default)"
    return method if method in SCORELESS_METHODS else f"{method} ({residual})"


def dice_at_thresholds(anomaly: np.ndarray, truth: np.ndarray, thresholds,
                       min_size: int = DEFAULT_MIN_SIZE) -> np.ndarray:
    """Dice of the plugin's labels (threshold, small components removed) at each threshold."""
    updater = LabelUpdater(anomaly)
    return np.array([dice(updater.update(float(t), min_size) > 0, truth) for t in thresholds])


def sds_dice_table(maps: list[np.ndarray], volumes: list, grid=SDS_GRID, method: str = "",
                   bulks: list | None = None) -> np.ndarray:
    """Dice of every volume (rows) at the per-scan threshold of every ``grid`` SDs (columns,
    ``per_scan_thresholds`` of ``method``; an empty one, or a model, fits its own map; ``bulks``:
    the results' ``intensity_bulk``); 0 where it cannot fit."""
    rows = []
    for i, (anomaly, volume) in enumerate(zip(maps, volumes, strict=True)):
        try:
            thresholds = per_scan_thresholds(method, grid, anomaly, volume.mask,
                                             None if bulks is None else bulks[i])
        except ScanThresholdError:
            rows.append(np.zeros(len(grid)))
            continue
        rows.append(dice_at_thresholds(anomaly, volume.truth, thresholds))
    return np.array(rows)


def choose_rule(maps: list[np.ndarray], volumes: list, fixed: np.ndarray, method: str = "",
                bulks: list | None = None) -> dict:
    """Best per-scan SDs and best fixed threshold on the same cases, and which of the two wins."""
    per_scan = sds_dice_table(maps, volumes, SDS_GRID, method, bulks).mean(axis=0)
    fixed_curve = np.array([dice_at_thresholds(m, v.truth, fixed) for m, v in zip(maps, volumes, strict=True)])
    fixed_curve = fixed_curve.mean(axis=0)
    best, best_fixed = int(np.argmax(per_scan)), int(np.argmax(fixed_curve))
    return {"sds": float(SDS_GRID[best]), "nominal false-positive rate": round(false_positive_rate(SDS_GRID[best]), 5),
            "validation dice per scan": round(float(per_scan[best]), 4),
            "best fixed threshold": float(fixed[best_fixed]),
            "validation dice best fixed": round(float(fixed_curve[best_fixed]), 4),
            "rule": "per scan" if per_scan[best] > fixed_curve[best_fixed] else "fixed"}


def per_scan_choices(methods: tuple[str, ...] | None = None, log: Callable[[str], None] = print,
                     volumes: list | None = None) -> list[dict]:
    """One row per method, score and target: the per-scan SDs chosen on validation, the best fixed
    threshold on the same cases, and the rule that ships (:func:`choose_rule`)."""
    from .calibration import validation_volumes
    from .validation_cases import lesion_validation_cases, tumour_validation_cases

    volumes = validation_volumes() if volumes is None else volumes
    cases = {"lesions": lesion_validation_cases(volumes), "tumour": tumour_validation_cases(volumes)}
    rows = []
    for method in methods or (*SCORELESS_METHODS, *ANOMALY_KINDS):
        for residual in method_residuals(method):
            for target, targets in cases.items():
                results = method_results(method, residual, targets)
                choice = choose_rule([r.anomaly for r in results], targets, fixed_grid(method), method,
                                     [r.intensity_bulk for r in results])
                rows.append({"method": method, "score": residual, "target": target, **choice,
                             "validation cases": len(targets)})
                log(f"{method} {residual or '-'} {target}: per scan {choice['sds']} SDs (Dice "
                    f"{choice['validation dice per scan']:.3f}) vs fixed {choice['best fixed threshold']} (Dice "
                    f"{choice['validation dice best fixed']:.3f}) -> {choice['rule']}")
    return rows


def shipped_sds_table(rows: list[dict]) -> dict[str, float]:
    """``rows`` as the ``PER_SCAN_SDS`` dict of :mod:`..inference.anomaly_methods`."""
    return {auto_key(r["method"], r["score"], r["target"]): r["sds"] for r in rows if r["rule"] == "per scan"}


def calibrated_rows(method: str, residual: str, target: str, results: list, volumes: list,
                    common: dict[str, dict]) -> list[dict]:
    """The Auto calibrated to one scan's manual labels (as a user's corrected scan:
    :func:`..inference.auto_calibration.calibrate_auto`) and applied to each other scan of the
    set: one row per (scan, calibrated from); ``common``: the scan's other columns by subject."""
    rows = []
    for source, volume in zip(results, volumes, strict=True):
        calibration = calibrate_auto(method, residual, target, source.anomaly, volume.mask, volume.truth,
                                     source.intensity_bulk, source=volume.subject)
        for result, other in zip(results, volumes, strict=True):
            if other is volume:
                continue
            value = calibrated_threshold(calibration, result.anomaly, other.mask, result.intensity_bulk)
            rows.append({**common[other.subject], "calibrated from": volume.subject,
                         "calibrated value": calibration.sds if calibration.sds is not None else calibration.threshold,
                         "dice_calibrated": round(float(dice_at_thresholds(result.anomaly, other.truth, [value])[0]), 4)})
    return rows


def per_scan_test_rows(methods: tuple[str, ...] = (GATED_METHOD, INTENSITY_METHOD),
                       log: Callable[[str], None] = print,
                       calibrated: list[dict] | None = None) -> list[dict]:
    """Report only: per scan of every manual-label set, the Dice at the shipped Auto (as the dock
    computes it) and at the one best fixed threshold of the set for that method; ``calibrated``
    (a list) also gets :func:`calibrated_rows` of every set and method."""
    from .uad import TEST_SETS, load_test_volume

    rows = []
    for test_set, target in TEST_SET_TARGETS.items():
        volumes = [load_test_volume(subject) for subject in TEST_SETS[test_set]]
        truths = [v.truth for v in volumes]
        for method in methods:
            for residual in method_residuals(method):
                results = method_results(method, residual, volumes)
                maps = [r.anomaly for r in results]
                grid = fixed_grid(method)
                fixed = np.array([dice_at_thresholds(m, t, grid) for m, t in zip(maps, truths, strict=True)])
                best = int(np.argmax(fixed.mean(axis=0)))
                label = method_label(method, residual or "positive")
                for i, (anomaly, volume) in enumerate(zip(maps, volumes, strict=True)):
                    auto = scan_auto_threshold(method, residual or "positive", target, anomaly, volume.mask,
                                               results[i].intensity_bulk)
                    rows.append({"test set": test_set, "scan": volume.subject, "method": label,
                                 "dice_auto": round(float(dice_at_thresholds(anomaly, volume.truth, [auto])[0]), 4),
                                 "dice_best_fixed": round(float(fixed[i, best]), 4)})
                log(f"{label} {test_set}: Dice at Auto {np.mean([r['dice_auto'] for r in rows[-len(volumes):]]):.3f}, "
                    f"best fixed {grid[best]:g} {fixed[:, best].mean():.3f}")
                if calibrated is not None:
                    common = {r["scan"]: r for r in rows[-len(volumes):]}
                    calibrated += calibrated_rows(method, residual or "positive", target, results, volumes, common)
    return rows


def set_means(rows: list[dict]) -> list[dict]:
    """Per test set and method: mean Dice at Auto, at the best fixed threshold, and the gap."""
    out = []
    for key in dict.fromkeys((r["test set"], r["method"]) for r in rows):
        group = [r for r in rows if (r["test set"], r["method"]) == key]
        auto, fixed = (float(np.mean([r[c] for r in group])) for c in ("dice_auto", "dice_best_fixed"))
        out.append({"test set": key[0], "method": key[1], "dice_auto": auto, "dice_best_fixed": fixed,
                    "gap": fixed - auto, "scans": len(group)})
    return out
