"""The anomaly dock's Auto thresholds per method, score and target, chosen on validation only.

* **lesions** (MS, white-matter lesions): the threshold with the best mean Dice over the
  validation FLAIRs (NiChart Subj18-20) against their automatic lesion masks (``wml_auto``),
  with the plugin's post-processing (components under 10 voxels removed).
* **tumour**: there is no tumour validation set (``brats2018`` is a test set), so no tumour
  image is used. Instead two synthetic tumours are put into each validation FLAIR
  (:func:`with_synthetic_tumour`: the tissue in a smooth ellipsoid of 20-35 mm radii deep in
  the brain, brightened 1.6x with a mottled texture, as a glioma's FLAIR hyperintensity) and the
  threshold with the best mean Dice against them is taken. A threshold tuned for small
  lesions trades too much recall for precision on a large tumour (the dock's old single Auto
  gave Dice 0.41 on a glioma where 0.05 gave 0.66).

``mentalmap eval uad-auto`` prints the table (and with ``--test`` the Dice at Auto on every
manual-label test set, for the report only); the values the dock uses are
``inference.anomaly_methods.AUTO_THRESHOLDS``, and the command says when they differ. Where
``PER_SCAN_SDS`` lists a method, score and target, the dock computes that Auto from the scan's
own map instead (:mod:`.per_scan_auto`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..inference.anomaly_methods import (
    ANOMALY_KINDS,
    GATED_METHOD,
    GATED_MODEL,
    INTENSITY_METHOD,
    RESIDUALS,
    SCORELESS_METHODS,
    TARGETS,
)

GATED_GRID = np.round(np.arange(0.30, 1.0, 0.01), 3)
"""Candidate Auto thresholds of the gated method (its score is on the intensity's scale)."""

TUMOURS_PER_VOLUME = 2
TUMOUR_BRIGHTNESS = 1.6
"""FLAIR intensity of the synthetic tumours relative to the tissue they replace."""


def with_synthetic_tumour(volume, seed: int, brightness: float = TUMOUR_BRIGHTNESS,
                          radii_mm: tuple[float, float] = (20.0, 35.0)):
    """A copy of a validation volume with one synthetic tumour; ``truth`` is the tumour.

    The tumour is the brain tissue (not CSF: above 0.7 x the brain median) inside an ellipsoid
    (radii drawn from ``radii_mm``, about 35-180 cm3 as BraTS whole tumours) centred at least
    25 mm inside the brain, brightened ``brightness`` x with a 2-voxel smooth edge and a
    mottled texture (+-10 %, smoothed noise): the hyperintense whole tumour of a glioma on FLAIR.
    """
    from dataclasses import replace

    from scipy import ndimage

    rng = np.random.default_rng(seed)
    spacing = np.asarray(volume.spacing, dtype=float)
    depth = ndimage.distance_transform_edt(volume.mask, sampling=spacing)
    candidates = np.argwhere(depth > 25.0)
    if not len(candidates):
        candidates = np.argwhere(depth >= depth.max() * 0.8)
    centre = candidates[rng.integers(len(candidates))]
    radii = rng.uniform(*radii_mm, size=3)
    axes = np.ogrid[tuple(slice(0, n) for n in volume.image.shape)]
    radius = np.sqrt(sum(((axis - c) * s / r) ** 2 for axis, c, s, r in zip(axes, centre, spacing, radii,
                                                                            strict=True)))
    edge = 2.0 * float(spacing.mean()) / float(radii.mean())
    inside = 1.0 / (1.0 + np.exp(np.clip((radius - 1.0) / (edge / 4.0), -50, 50)))
    texture = ndimage.gaussian_filter(rng.standard_normal(volume.image.shape), 2.0)
    texture = 1.0 + 0.1 * texture / max(float(texture.std()), 1e-6)
    tissue = volume.mask & (volume.image > 0.7 * float(np.median(volume.image[volume.mask])))
    image = volume.image * (1.0 + (brightness - 1.0) * inside * texture * tissue)
    return replace(volume, subject=f"{volume.subject} + synthetic tumour {seed}", image=image.astype(np.float32),
                   truth=(radius <= 1.0) & tissue)


def synthetic_tumour_volumes(volumes: list) -> list:
    """``TUMOURS_PER_VOLUME`` synthetic-tumour copies of every validation volume (fixed seeds)."""
    return [with_synthetic_tumour(v, seed=1000 * i + k) for i, v in enumerate(volumes)
            for k in range(TUMOURS_PER_VOLUME)]


def method_residuals(method: str) -> tuple[str, ...]:
    """The scores a method offers: none for the intensity and gated methods, both residuals for a model."""
    return ("",) if method in SCORELESS_METHODS else RESIDUALS


def method_results(method: str, residual: str, volumes: list, load_model: Callable | None = None) -> list:
    """The :class:`..inference.anomaly.AnomalyResult` of each volume by a shipped method (as the
    dock computes it; the intensity method's carries only its map and mask)."""
    import warnings

    from ..inference.anomaly import (
        INTENSITY_MEDIAN_AT,
        AnomalyResult,
        anomaly_map,
        gated_intensity_map,
        load_anomaly_model,
        run_job,
    )
    from .uad import intensity_baseline

    if method == INTENSITY_METHOD:
        return [AnomalyResult(intensity_baseline(v, median_at=INTENSITY_MEDIAN_AT), v.mask, None, None)
                for v in volumes]
    model = (load_model or load_anomaly_model)(GATED_MODEL if method == GATED_METHOD else method, "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == GATED_METHOD:
            return [run_job(gated_intensity_map(v.image, v.spacing, model, mask=v.mask)) for v in volumes]
        return [run_job(anomaly_map(v.image, v.spacing, model, mask=v.mask, residual=residual)) for v in volumes]


def method_maps(method: str, residual: str, volumes: list, load_model: Callable | None = None) -> list[np.ndarray]:
    """The anomaly map of each volume by a shipped method (as the dock computes it)."""
    return [result.anomaly for result in method_results(method, residual, volumes, load_model)]


def auto_threshold_rows(volumes: list | None = None, methods: tuple[str, ...] | None = None,
                        log: Callable[[str], None] = print) -> list[dict]:
    """One row per method, score and target: the Auto threshold and the validation number behind it."""
    from .calibration import FINE_THRESHOLDS, validation_scores, validation_volumes
    from .uad import BASELINE_THRESHOLDS

    volumes = validation_volumes() if volumes is None else volumes
    tumours = synthetic_tumour_volumes(volumes)
    rows = []
    for method in methods or (*SCORELESS_METHODS, *ANOMALY_KINDS):
        for residual in method_residuals(method):
            grid = {INTENSITY_METHOD: BASELINE_THRESHOLDS, GATED_METHOD: GATED_GRID}.get(method, FINE_THRESHOLDS)
            for target, cases, criterion in (("lesions", volumes, "best mean Dice vs wml_auto (Subj18-20)"),
                                             ("tumour", tumours, "best mean Dice vs synthetic tumours in Subj18-20")):
                scores = validation_scores(method_maps(method, residual, cases), cases, grid)
                rows.append({"method": method, "score": residual, "target": target, "threshold": scores["threshold"],
                             "criterion": criterion, "validation dice": round(scores["dice at threshold"], 4)})
                log(f"{method} {residual or '-'} {target}: {scores['threshold']} (Dice {scores['dice at threshold']:.3f})")
    return rows


def test_dice_at_auto(rows: list[dict], log: Callable[[str], None] = print) -> list[dict]:
    """Report only: mean Dice at each Auto threshold on every manual-label test set (the lesion
    target on the lesion sets, both targets on the tumour set)."""
    from .uad import TEST_SETS, dice_table, load_test_volume

    tables = []
    sets = {name: [load_test_volume(s) for s in subjects] for name, subjects in TEST_SETS.items() if "manual" in name}
    by_method: dict[tuple[str, str], dict[str, float]] = {}
    for row in rows:
        by_method.setdefault((row["method"], row["score"]), {})[row["target"]] = row["threshold"]
    for (method, residual), thresholds in by_method.items():
        for name, volumes in sets.items():
            maps = method_maps(method, residual, volumes)
            truths = [v.truth for v in volumes]
            for target, threshold in thresholds.items():
                dice = float(dice_table(maps, truths, [threshold]).mean())
                tables.append({"method": method, "score": residual, "test set": name, "target": target,
                               "threshold": threshold, "dice": round(dice, 4)})
                log(f"{method} {residual or '-'} {name} {target} @ {threshold}: Dice {dice:.3f}")
    return tables


def shipped_table(rows: list[dict]) -> dict[str, float]:
    """``rows`` as the ``AUTO_THRESHOLDS`` dict of :mod:`..inference.anomaly_methods`."""
    return {f"{r['method']}|{r['score']}|{r['target']}": r["threshold"] for r in rows if r["target"] in TARGETS}
