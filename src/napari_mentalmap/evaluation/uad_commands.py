"""``mentalmap eval uad``: the lesion-detection table of the anomaly VAEs."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ..checkpoints import load_record, save_record
from ..models.uad_vae import KINDS


def run_eval_uad(args: argparse.Namespace) -> int:
    """Evaluate the shipped (or given) weights; write results and store the auto thresholds."""
    import torch

    from ..inference.anomaly import load_anomaly_model, weights_path
    from .uad import evaluate_all, write_results

    torch.set_num_threads(args.threads)
    models = {kind: load_anomaly_model(kind, args.device) for kind in args.kinds}
    rows, thresholds = evaluate_all(models)
    paths = write_results(rows, args.out_dir)
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    if args.store_thresholds:
        command = "mentalmap " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        for kind in args.kinds:
            path = weights_path(kind)
            record = load_record(path)
            record["threshold"] = thresholds[kind]
            record["threshold_note"] = ("best mean Dice of the max(x - x_hat - r, 0) map over 15 thresholds in "
                                        "[0.05, 0.75] on every test volume except the shipped sample patient07")
            record["residual"] = "positive"
            record["metrics"] = [r for r in rows if r["method"].startswith(kind + " ")]
            record["eval_command"] = command
            save_record(path, record)
            print(f"{kind}: auto threshold {thresholds[kind]:g} stored in {path}")
    return 0


def add_uad_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``uad`` to the ``eval`` subcommand group."""
    parser = subparsers.add_parser("uad", help="lesion detection by the anomaly VAEs vs an intensity baseline")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--out-dir", default=str(Path("results") / "uad"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--store-thresholds", action="store_true",
                        help="also write the chosen Auto thresholds and metrics into the weights files "
                             "(a release step; evaluation alone writes only into --out-dir)")
    parser.set_defaults(func=run_eval_uad)
    return parser


def add_uad_residual_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``uad-residual`` to the ``eval`` subcommand group."""
    residual = subparsers.add_parser(
        "uad-residual", help="healthy mean residual of shipped anomaly VAEs, kept if it helps on validation")
    residual.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    residual.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    residual.set_defaults(func=run_uad_residual)


def run_uad_residual(args: argparse.Namespace) -> int:
    """Add the healthy residual to the shipped weights of ``--kinds`` where validation says so."""
    import torch

    from .calibration import validate_healthy_residual

    torch.set_num_threads(args.threads)
    for kind in args.kinds:
        validate_healthy_residual(kind)
    return 0


def add_uad_baseline_threshold_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``uad-baseline-threshold`` to the ``eval`` subcommand group."""
    parser = subparsers.add_parser(
        "uad-baseline-threshold", help="the intensity baseline's Auto threshold, chosen on validation")
    parser.set_defaults(func=run_uad_baseline_threshold)


def run_uad_baseline_threshold(args: argparse.Namespace) -> int:
    """Print the validation threshold of the intensity baseline and whether the shipped constant matches."""
    from ..inference.anomaly import INTENSITY_AUTO_THRESHOLD
    from .calibration import validation_intensity_threshold

    best = validation_intensity_threshold()
    print(f"shipped INTENSITY_AUTO_THRESHOLD = {INTENSITY_AUTO_THRESHOLD}"
          + ("" if abs(best - INTENSITY_AUTO_THRESHOLD) < 1e-9 else "  (differs: update it)"))
    return 0
