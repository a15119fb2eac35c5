"""Print the summary tables of docs/results/bruno.md from results/bruno/{bruno_eval,samples}.csv:
the mean (SSIM at each context count, one row per dataset and grid, one column per method) and
where the shipped default (the method ending "(default)": what the dock and ``predict bruno``
show; on the model grid, which the dock does not show, the BRUNO mean) stands against every
other method, cell by cell.

    .venv/bin/python scripts/bruno_summary_tables.py [--metric ssim|cc]
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results" / "bruno"
MODEL_GRID_MEAN = "BRUNO mean (latent mean)"


def shipped(dataset: str, methods: list[str], values: dict) -> str:
    """The dataset's default row: the method ending "(default)", else the BRUNO mean."""
    return next((m for m in methods if m.endswith("(default)") and (dataset, m) in values), MODEL_GRID_MEAN)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metric", choices=["ssim", "cc"], default="ssim")
    parser.add_argument("--csv", default=str(RESULTS / "bruno_eval.csv"))
    parser.add_argument("--methods", nargs="+", default=None, help="columns of the first table (default: all)")
    args = parser.parse_args()
    values: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    datasets: list[str] = []
    methods: list[str] = []
    with open(args.csv, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["poses"] != "non-context":
                continue
            dataset, method = row["dataset"], row["method"]
            datasets += [dataset] if dataset not in datasets else []
            methods += [method] if method not in methods else []
            values[dataset, method][int(row["n_contexts"])] = float(row[args.metric])
    counts = sorted({c for cells in values.values() for c in cells})
    columns = args.methods or methods
    print(f"| dataset | {' | '.join(columns)} |")
    print("|---|" + "---|" * len(columns))
    for dataset in datasets:
        cells = [" / ".join(f"{values[dataset, m][c]:.3f}" for c in counts) if (dataset, m) in values else "—"
                 for m in columns]
        print(f"| {dataset} | {' | '.join(cells)} |")
    print(f"\nWhere the shipped default is below another method ({args.metric}; contexts):\n")
    for dataset in datasets:
        losses = []
        default = shipped(dataset, methods, values)
        for method in methods:
            if method.startswith("BRUNO") or (dataset, method) not in values:
                continue
            lost = [c for c in counts if c in values[dataset, default]
                    and values[dataset, method][c] > values[dataset, default][c]]
            if lost:
                losses.append(f"{method} at {', '.join(map(str, lost))}")
        print(f"- {dataset} ({default}): {'; '.join(losses) if losses else 'none'}")
    print(f"\nMargin of the default over linear interpolation ({args.metric}; contexts):\n")
    for dataset in datasets:
        default = shipped(dataset, methods, values)
        if (dataset, "linear interpolation") in values and default.endswith("(default)"):
            margins = [f"{c}: {values[dataset, default][c] - values[dataset, 'linear interpolation'][c]:+.3f}"
                       for c in counts if c in values[dataset, default]]
            print(f"- {dataset}: {', '.join(margins)}")


if __name__ == "__main__":
    main()
