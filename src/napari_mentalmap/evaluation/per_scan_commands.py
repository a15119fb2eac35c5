"""``mentalmap eval uad-per-scan``: the per-scan Auto's SDs (validation) and its test table."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

METHOD_ALIASES = {"gated": "DAE-gated FLAIR intensity", "intensity": "FLAIR intensity (baseline)"}


def add_uad_per_scan_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``uad-per-scan`` to the ``eval`` subcommand group."""
    from ..inference.anomaly_methods import ANOMALY_KINDS

    parser = subparsers.add_parser(
        "uad-per-scan", help="the per-scan Auto: its SDs chosen on validation; --test: Dice at Auto vs the "
                             "best fixed threshold per manual-label set (auto_per_scan.csv)")
    parser.add_argument("--methods", nargs="+", choices=[*METHOD_ALIASES, *ANOMALY_KINDS], default=None,
                        help="methods (default: every one for the choice; gated and intensity for --test)")
    parser.add_argument("--test", action="store_true", help="also write auto_per_scan.csv (the shipped Auto) and auto_calibrated.csv (the "
                                                             "Auto calibrated to each other scan's labels)")
    parser.add_argument("--skip-choice", action="store_true", help="only the test table")
    parser.add_argument("--out", default="results/uad", help="folder for per_scan_choice.csv and auto_per_scan.csv")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.set_defaults(func=run_uad_per_scan)


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")


def run_uad_per_scan(args: argparse.Namespace) -> int:
    """Choose the SDs on validation (and compare with the shipped table); with ``--test`` score
    the shipped Auto on the manual-label sets."""
    import numpy as np
    import torch

    from ..inference.anomaly_methods import GATED_METHOD, INTENSITY_METHOD, PER_SCAN_SDS
    from .per_scan_auto import (
        CALIBRATED_COLUMNS,
        TEST_COLUMNS,
        per_scan_choices,
        per_scan_test_rows,
        set_means,
        shipped_sds_table,
    )

    torch.set_num_threads(args.threads)
    methods = tuple(METHOD_ALIASES.get(m, m) for m in args.methods) if args.methods else None
    out = Path(args.out)
    if not args.skip_choice:
        rows = per_scan_choices(methods)
        _write(out / "per_scan_choice.csv", rows)
        table = shipped_sds_table(rows)
        shipped = {k: v for k, v in PER_SCAN_SDS.items() if k.split("|")[0] in {r["method"] for r in rows}}
        print("PER_SCAN_SDS = " + repr(table))
        print("shipped table " + ("matches" if table == shipped else "differs: update inference/anomaly_methods.py"))
    if args.test:
        calibrated: list[dict] = []
        rows = per_scan_test_rows(methods or (GATED_METHOD, INTENSITY_METHOD), calibrated=calibrated)
        _write(out / "auto_per_scan.csv", [{c: r[c] for c in TEST_COLUMNS} for r in rows])
        _write(out / "auto_calibrated.csv", [{c: r[c] for c in CALIBRATED_COLUMNS} for r in calibrated])
        print("| test set | method | Dice at Auto | calibrated to 1 other scan | best fixed threshold | gap | "
              "gap calibrated |\n|---|---|---|---|---|---|---|")
        for m in set_means(rows):
            group = [r["dice_calibrated"] for r in calibrated if (r["test set"], r["method"]) == (m["test set"], m["method"])]
            mean = float(np.mean(group)) if group else float("nan")
            print(f"| {m['test set']} | {m['method']} | {m['dice_auto']:.3f} | {mean:.3f} | {m['dice_best_fixed']:.3f} | "
                  f"{m['gap']:+.3f} | {m['dice_best_fixed'] - mean:+.3f} |")
    return 0
