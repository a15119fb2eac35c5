"""Issue #27: validation folds (choose the default augmentation), then the learning curves.

    OMP_NUM_THREADS=2 python scripts/segmenter_curves.py --out results/segmenter --cache /work/cache/segmenter_maps

As run for the shipped results (two 1-thread processes, then the cross-set rows apart):

    OMP_NUM_THREADS=1 python scripts/segmenter_curves.py --cache C --sets cbica --no-cross --csv learning_curves_cbica.csv
    OMP_NUM_THREADS=1 python scripts/segmenter_curves.py --cache C --sets open_ms brats --no-cross --csv learning_curves_other.csv
    OMP_NUM_THREADS=1 python scripts/segmenter_curves.py --cache C --sets open_ms cbica --cross-only --csv cross_set.csv
    python scripts/segmenter_figures.py --out results/segmenter --overlays

Resumable: rows already in the CSVs are skipped. The default is the augmentation with the best
mean Dice over every validation fold (NiChart Subj18-20 vs wml_auto, n = 1 and 2).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from napari_mentalmap.evaluation.segmenter_curves import SETS, VALIDATION_SET, run_curves
from napari_mentalmap.inference.segmenter_augment import AUGMENTATIONS


def choose_default(validation_csv: Path) -> tuple[str, dict]:
    """The augmentation with the best mean Dice over the validation folds (and the table)."""
    with open(validation_csv, newline="") as stream:
        rows = [r for r in csv.DictReader(stream) if r["method"].startswith("U-Net")]
    table = {}
    for aug in AUGMENTATIONS:
        per_n = {n: float(np.mean([float(r["dice"]) for r in rows if r["augmentation"] == aug and r["n_train"] == n]))
                 for n in sorted({r["n_train"] for r in rows})}
        table[aug] = {"mean": float(np.mean(list(per_n.values()))), **{f"n={n}": v for n, v in per_n.items()}}
    return max(table, key=lambda a: table[a]["mean"]), table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="results/segmenter")
    parser.add_argument("--cache", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--validation-only", action="store_true")
    parser.add_argument("--sets", nargs="*", default=None,
                        help="test sets to run (substrings of their names; default all), e.g. to split the "
                             "work over two processes with their own --csv")
    parser.add_argument("--csv", default="learning_curves.csv", help="file name of the rows under --out")
    parser.add_argument("--no-cross", action="store_true", help="leave out the cross-set rows")
    parser.add_argument("--cross-only", action="store_true", help="only the cross-set rows")
    args = parser.parse_args()
    out = Path(args.out)
    validation = run_curves(out / "validation_folds.csv", sets=VALIDATION_SET, default="", cross=False,
                            steps=args.steps, cache=args.cache)
    default, table = choose_default(validation)
    (out / "validation_choice.json").write_text(json.dumps({"default": default, "table": table}, indent=1))
    print("default augmentation (validation):", default, json.dumps(table, indent=1))
    if not args.validation_only:
        sets = {name: subjects for name, subjects in SETS.items()
                if args.sets is None or any(part in name for part in args.sets)}
        run_curves(out / args.csv, sets=sets, default=default, steps=args.steps, cache=args.cache,
                   cross=not args.no_cross, cross_only=args.cross_only)


if __name__ == "__main__":
    main()
