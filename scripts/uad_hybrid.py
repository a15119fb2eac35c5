"""Is a FLAIR voxel an anomaly when it is bright *and* brighter than the DAE expects there?
(docs/uad.md, "DAE-gated intensity")

    MENTALMAP_CACHE=/work/cache .venv/bin/python scripts/uad_hybrid.py validate
    MENTALMAP_CACHE=/work/cache .venv/bin/python scripts/uad_hybrid.py test FORM SCALE
    MENTALMAP_CACHE=/work/cache .venv/bin/python scripts/uad_hybrid.py runs RUN_DIR...
    MENTALMAP_CACHE=/work/cache .venv/bin/python scripts/uad_hybrid.py shifts shipped RUN_DIR...

``validate`` scores every candidate score on the validation FLAIRs (Subj18-20 vs ``wml_auto``)
and prints the table the choice is made from; ``test`` scores one chosen candidate on the test
sets with the half/half protocol (thresholds chosen on the other half), next to the baseline.
``runs`` scores the shipped gate (geometric, scale 0.1) on validation with the DAE of each training
run folder (its ``last.pt``) instead of the shipped one: which DAE checkpoint gates best.
``shifts`` scores the shipped gate with each DAE (``shipped`` = the shipped weights) on the
validation FLAIRs as given and as another site might deliver them (:data:`SHIFTS`: contrast
changes, thicker slices, a bias field, more noise, each applied to the raw FLAIR): the
validation subjects are all from one site, the test sets from three others.
Both maps come from the shipped code (``intensity_score``: median-normalised intensity ×
eroded mask, median-filtered; ``anomaly_map`` with ``dae2d``: ``max(x - x_hat, 0)``, same
post-processing) and are cached under ``$MENTALMAP_CACHE/uad_hybrid``.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

from napari_mentalmap.data.splits import SPLITS
from napari_mentalmap.data.subjects import cache_dir
from napari_mentalmap.evaluation.calibration import validation_scores
from napari_mentalmap.evaluation.uad import TEST_SETS, load_test_volume
from napari_mentalmap.evaluation.validation_cases import SHIFTS, shifted
from napari_mentalmap.inference.anomaly import (
    anomaly_map,
    gated_intensity,
    intensity_score,
    load_anomaly_model,
    run_job,
)

GRID = np.round(np.arange(0.02, 1.0, 0.02), 3)


def maps_for(subject: str, model) -> tuple[np.ndarray, np.ndarray, object]:
    """(intensity score, DAE residual, volume) of one subject, cached."""
    path = cache_dir() / "uad_hybrid" / f"{subject}.npz"
    volume = load_test_volume(subject)
    if path.exists():
        with np.load(path) as stored:
            return stored["intensity"], stored["residual"], volume
    intensity = intensity_score(volume.image, volume.spacing, volume.mask)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        residual = run_job(anomaly_map(volume.image, volume.spacing, model, mask=volume.mask)).anomaly
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, intensity=intensity.astype(np.float16), residual=residual.astype(np.float16))
    return intensity, residual, volume


def hybrid(intensity: np.ndarray, residual: np.ndarray, form: str, scale: float) -> np.ndarray:
    """Candidate scores in [0, 1] from the intensity and the DAE residual (``scale`` = the residual
    that counts fully): the gated product, the geometric mean (the shipped
    :func:`gated_intensity`), their mean, or the intensity alone (for reference)."""
    intensity = intensity.astype(np.float32)
    gate = np.clip(residual.astype(np.float32) / scale, 0.0, 1.0)
    if form == "gated":
        return intensity * gate
    if form == "geometric":
        return gated_intensity(intensity, residual, scale)
    if form == "sum":
        return 0.5 * (np.clip(intensity, 0, 1) + gate)
    if form == "intensity":
        return intensity
    raise ValueError(form)


def shift_table(models: dict) -> None:
    """Gated (geometric, 0.1) validation AUPRC of each DAE under each shift, and the intensity's."""
    volumes = [load_test_volume(s) for s in SPLITS["nichart_val"]]
    names = list(SHIFTS)
    print("| DAE | " + " | ".join(names) + " | mean |\n|---|" + "---|" * (len(names) + 1))
    rows = {"intensity alone": []}
    for shift in names:
        changed = [shifted(v, shift) for v in volumes]
        intensities = [intensity_score(v.image, v.spacing, v.mask) for v in changed]
        rows["intensity alone"].append(validation_scores(intensities, changed, GRID)["AUPRC"])
        for label, model in models.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                residuals = [run_job(anomaly_map(v.image, v.spacing, model, mask=v.mask)).anomaly for v in changed]
            gated = [hybrid(i, r, "geometric", 0.1) for i, r in zip(intensities, residuals, strict=True)]
            rows.setdefault(label, []).append(validation_scores(gated, changed, GRID)["AUPRC"])
    for label, values in rows.items():
        print(f"| {label} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {np.mean(values):.3f} |", flush=True)


CANDIDATES = [("intensity", 1.0)] + [(form, scale) for form in ("gated", "geometric", "sum")
                                     for scale in (0.05, 0.1, 0.2, 0.3)]


def main() -> None:
    if sys.argv[1] == "shifts":
        from napari_mentalmap.evaluation.uad_commands import dae_from_run

        shift_table({run: load_anomaly_model("dae2d", "cpu") if run == "shipped" else dae_from_run(run)
                     for run in sys.argv[2:]})
        return
    if sys.argv[1] == "runs":
        from napari_mentalmap.evaluation.uad_commands import dae_from_run

        volumes = [load_test_volume(s) for s in SPLITS["nichart_val"]]
        intensities = [intensity_score(v.image, v.spacing, v.mask) for v in volumes]
        print("| run | AUPRC | Auto | Dice at Auto | half/half Dice |\n|---|---|---|---|---|")
        for run in sys.argv[2:]:
            model = dae_from_run(run)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                residuals = [run_job(anomaly_map(v.image, v.spacing, model, mask=v.mask)).anomaly for v in volumes]
            result = validation_scores([hybrid(i, r, "geometric", 0.1) for i, r in zip(intensities, residuals, strict=True)],
                                       volumes, GRID)
            print(f"| {run} | {result['AUPRC']:.3f} | {result['threshold']:.2f} | {result['dice at threshold']:.3f} | "
                  f"{result['half/half dice']:.3f} |", flush=True)
        return
    model = load_anomaly_model("dae2d", "cpu")
    if sys.argv[1] == "validate":
        data = [maps_for(s, model) for s in SPLITS["nichart_val"]]
        print("| form | scale | AUPRC | Auto | Dice at Auto | half/half Dice |\n|---|---|---|---|---|---|")
        for form, scale in CANDIDATES:
            result = validation_scores([hybrid(i, r, form, scale) for i, r, _ in data], [v for *_, v in data], GRID)
            print(f"| {form} | {scale} | {result['AUPRC']:.3f} | {result['threshold']:.2f} | "
                  f"{result['dice at threshold']:.3f} | {result['half/half dice']:.3f} |")
        return
    form, scale = sys.argv[2], float(sys.argv[3])
    print("| set | method | half/half Dice | AUPRC |\n|---|---|---|---|")
    for test_set, subjects in TEST_SETS.items():
        data = [maps_for(s, model) for s in subjects]
        volumes = [v for *_, v in data]
        for name, (f, s) in {"median-normalised intensity (baseline)": ("intensity", 1.0),
                             f"{form} {scale}": (form, scale)}.items():
            result = validation_scores([hybrid(i, r, f, s) for i, r, _ in data], volumes, GRID)
            print(f"| {test_set} | {name} | {result['half/half dice']:.3f} | {result['AUPRC']:.3f} |")


if __name__ == "__main__":
    main()
