"""Does a piecewise-linear (Nyul) intensity standardisation make the FLAIR intensity method's
Auto threshold transfer across sites? (docs/uad.md, "Nyul standardisation")

    MENTALMAP_CACHE=/work/cache .venv/bin/python scripts/uad_nyul_standardisation.py 10,20,30,40,50,60,70,80,90

Landmarks: the given percentiles of the brain voxels. Reference: the NiChart training FLAIRs'
landmarks (Subj15, misregistered, left out), each scaled so the first maps to 0.3 and the
median to 0.5 (as the shipped median normalisation), averaged. A volume's intensities are
mapped piecewise-linearly onto the reference (linear beyond the outer landmarks), times the
eroded brain mask, median-filtered: the shipped method with another standardisation. The
Auto threshold is chosen on the validation FLAIRs (Subj18-20 vs wml_auto); the test sets are
only reported (half/half Dice, Dice at Auto, best Dice).
"""

from __future__ import annotations

import sys

import numpy as np

from napari_mentalmap.data.splits import SPLITS
from napari_mentalmap.evaluation.uad import (
    TEST_SETS,
    dice_table,
    half_half_protocol,
    intensity_baseline,
    load_test_volume,
)
from napari_mentalmap.inference.anomaly import brain_erosion, median_filtered

GRID = np.round(np.arange(0.5, 1.2, 0.01), 3)


def standardise(volume, percentiles: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Piecewise-linear map of the volume's landmarks onto ``reference``, linear beyond them."""
    marks = np.percentile(volume.image[volume.mask], percentiles)
    x = volume.image.astype(np.float64)
    out = np.interp(x, marks, reference)
    low = (reference[1] - reference[0]) / max(marks[1] - marks[0], 1e-6)
    high = (reference[-1] - reference[-2]) / max(marks[-1] - marks[-2], 1e-6)
    out = np.where(x < marks[0], reference[0] + (x - marks[0]) * low, out)
    return np.where(x > marks[-1], reference[-1] + (x - marks[-1]) * high, out)


def main() -> None:
    percentiles = np.array([float(p) for p in sys.argv[1].split(",")])
    middle = int(np.argmin(np.abs(percentiles - 50)))
    references = []
    for subject in SPLITS["nichart_train"]:
        if subject == "Subj15":
            continue
        volume = load_test_volume(subject)
        marks = np.percentile(volume.image[volume.mask], percentiles)
        references.append(0.3 + (marks - marks[0]) / (marks[middle] - marks[0]) * 0.2)
    reference = np.mean(references, axis=0)
    print("reference landmarks", np.round(reference, 3))

    def nyul(volume):
        score = standardise(volume, percentiles, reference) * brain_erosion(volume.mask, volume.spacing, 3.0)
        return median_filtered(score.astype(np.float32), 3)

    methods = {"median normalisation (shipped)": lambda v: intensity_baseline(v, median_at=0.5), "Nyul": nyul}
    validation = [load_test_volume(s) for s in SPLITS["nichart_val"]]
    autos = {}
    for name, score in methods.items():
        curve = dice_table([score(v) for v in validation], [v.truth for v in validation], GRID).mean(axis=0)
        autos[name] = float(GRID[int(np.argmax(curve))])
        print(f"{name}: validation Auto {autos[name]} (Dice {curve.max():.3f})")
    print("| test set | method | half/half Dice | Dice at Auto | best Dice (threshold) |")
    print("|---|---|---|---|---|")
    for set_name, subjects in TEST_SETS.items():
        if "manual" not in set_name:
            continue
        volumes = [load_test_volume(s) for s in subjects]
        for name, score in methods.items():
            table = dice_table([score(v) for v in volumes], [v.truth for v in volumes], GRID)
            curve = table.mean(axis=0)
            at_auto = float(table[:, list(GRID).index(autos[name])].mean())
            print(f"| {set_name} | {name} | {half_half_protocol(table, GRID)['dice']:.3f} | {at_auto:.3f} | "
                  f"{curve.max():.3f} ({GRID[int(np.argmax(curve))]}) |", flush=True)


if __name__ == "__main__":
    main()
