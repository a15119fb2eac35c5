"""Issue #27: training variants of the default segmenter on the validation folds only.

    OMP_NUM_THREADS=1 python scripts/segmenter_variants.py --out results/segmenter/validation_variants.csv

Each variant changes one field of ``SegmenterTrainConfig`` (augmentation: the chosen default) and
is trained and scored on every validation fold (NiChart Subj18-20 vs wml_auto, n = 1 and 2).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from napari_mentalmap.evaluation.segmenter_curves import (
    COLUMNS,
    FOLDS,
    TRAIN_COUNTS,
    VALIDATION_SET,
    ScanStore,
    folds,
    segmenter_rows,
)
from napari_mentalmap.inference.segmenter_augment import DEFAULT_AUGMENTATION

VARIANTS = {"threshold path frozen": {"train_threshold": False},
            "lesion crops 30 %": {"lesion_fraction": 0.3}, "600 steps": {"steps": 600}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="results/segmenter/validation_variants.csv")
    parser.add_argument("--cache", default=None)
    args = parser.parse_args()
    store = ScanStore(Path(args.cache) if args.cache else None)
    out = Path(args.out)
    rows = []
    (test_set, subjects), = VALIDATION_SET.items()
    for name, overrides in VARIANTS.items():
        for n in TRAIN_COUNTS[test_set]:
            for fold, train in enumerate(folds(subjects, n, FOLDS[test_set][n])):
                test = [s for s in subjects if s not in train]
                for row in segmenter_rows(store, test_set, n, fold, train, test, DEFAULT_AUGMENTATION, "",
                                          overrides=overrides):
                    rows.append({**row, "method": f"U-Net segmenter, {name}"})
        print(name, {n: round(float(np.mean([r["dice"] for r in rows if r["method"].endswith(name)
                                             and r["n_train"] == n])), 3) for n in TRAIN_COUNTS[test_set]},
              "mean", round(float(np.mean([r["dice"] for r in rows if r["method"].endswith(name)])), 3), flush=True)
    with open(out, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
