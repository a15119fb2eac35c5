"""Per-scan Auto rules for lesions, compared on validation cases only (issue 28).

``cache``: the default (DAE-gated) and the intensity map of every lesion validation case
(``evaluation.validation_cases.lesion_validation_cases``) saved as ``.npz`` with the brain
mask and the truth, so that rules can be compared without recomputing maps (about 1 minute).
``compare``: the default method's two per-scan rules (the shipped one, from the brain's
intensity, and the stop 25-30 one, from the gated map itself) at every ``SDS_GRID`` value: the
best *k* and its mean Dice over all cases and per group of cases, the Dice at *k* -/+ 0.3 and
0.6, and the best fixed threshold on the same cases.

    MENTALMAP_CACHE=/work/cache python scripts/per_scan_rules.py cache --out /work/cache/per_scan_val
    python scripts/per_scan_rules.py compare --out /work/cache/per_scan_val
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def cache(out: Path) -> None:
    from napari_mentalmap.evaluation.auto_thresholds import method_maps
    from napari_mentalmap.evaluation.calibration import validation_volumes
    from napari_mentalmap.evaluation.validation_cases import lesion_validation_cases
    from napari_mentalmap.inference.anomaly_methods import GATED_METHOD, INTENSITY_METHOD

    out.mkdir(parents=True, exist_ok=True)
    volumes = validation_volumes()
    for i, case in enumerate(lesion_validation_cases(volumes)):
        path = out / f"{i:03d}.npz"
        if path.exists():
            continue
        start = time.perf_counter()
        gated = method_maps(GATED_METHOD, "", [case])[0]
        intensity = method_maps(INTENSITY_METHOD, "", [case])[0]
        np.savez_compressed(path.with_suffix(".tmp.npz"), gated=gated.astype(np.float32),
                            intensity=intensity.astype(np.float32), mask=case.mask, truth=case.truth,
                            subject=np.array(case.subject))
        path.with_suffix(".tmp.npz").rename(path)
        print(f"{i:03d} {case.subject}: {time.perf_counter() - start:.1f} s", flush=True)


def _group(subject: str) -> str:
    name = subject.split(" ", 1)[1] if " " in subject else "as given"
    return "shifts" if name in ("gamma 0.7", "gamma 1.4", "thick slices", "bias ±20 %", "noise 5 %") else name


def compare(folder: Path) -> None:
    from napari_mentalmap.evaluation.per_scan_auto import (
        SDS_GRID,
        dice_at_thresholds,
    )
    from napari_mentalmap.inference.anomaly_methods import GATED_METHOD, per_scan_thresholds
    from napari_mentalmap.inference.scan_threshold import bulk_fit

    fixed = np.round(np.arange(0.60, 1.0001, 0.01), 2)
    tables: dict[str, list] = {"intensity fit (shipped)": [], "gated map's own fit (stop 25-30)": [], "fixed": []}
    groups = []
    for path in sorted(folder.glob("[0-9][0-9][0-9].npz")):
        case = np.load(path)
        gated, mask, truth = case["gated"], case["mask"], case["truth"]
        bulk = bulk_fit(case["intensity"], mask)
        tables["intensity fit (shipped)"].append(dice_at_thresholds(
            gated, truth, per_scan_thresholds(GATED_METHOD, SDS_GRID, gated, mask, bulk)))
        tables["gated map's own fit (stop 25-30)"].append(dice_at_thresholds(gated, truth, per_scan_thresholds("", SDS_GRID, gated, mask)))
        tables["fixed"].append(dice_at_thresholds(gated, truth, fixed))
        groups.append(_group(str(case["subject"])))
    print(f"{len(groups)} cases from {folder}")
    for name, rows in tables.items():
        table, grid = np.array(rows), fixed if name == "fixed" else SDS_GRID
        curve = table.mean(axis=0)
        best = int(np.argmax(curve))
        line = f"{name}: best {grid[best]:g} -> mean Dice {curve[best]:.3f}"
        if name != "fixed":
            line += "; at k -/+ 0.3: {:.3f} / {:.3f}; -/+ 0.6: {:.3f} / {:.3f}".format(
                *(curve[min(max(best + d, 0), len(grid) - 1)] for d in (-6, 6, -12, 12)))
        print(line)
        for group in dict.fromkeys(groups):
            rows_of = table[[g == group for g in groups]].mean(axis=0)
            print(f"    {group}: best {grid[int(np.argmax(rows_of))]:g} (Dice {rows_of.max():.3f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("cache", "compare"))
    parser.add_argument("--out", type=Path, default=Path("per_scan_val"), help="the folder of the cached cases")
    args = parser.parse_args(argv)
    cache(args.out) if args.command == "cache" else compare(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
