"""``mentalmap eval uad``: the lesion-detection table of the anomaly VAEs."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ..checkpoints import load_record, save_record
from ..models.uad_dae import DAE_KINDS
from ..models.uad_vae import KINDS

ANOMALY_KINDS = KINDS + DAE_KINDS


def run_eval_uad(args: argparse.Namespace) -> int:
    """Evaluate the shipped (or given) weights on every test set; write the results (per set and
    per case) and, with ``--store-thresholds``, the Auto thresholds chosen on *validation*."""
    import torch

    from ..inference.anomaly import load_anomaly_model, weights_path
    from .calibration import validate_model
    from .uad import evaluate_all, write_results

    torch.set_num_threads(args.threads)
    models = {kind: load_anomaly_model(kind, args.device) for kind in args.kinds}
    cases: list[dict] = []
    rows = evaluate_all(models, residuals=args.residuals, cases=cases)
    paths = write_results(rows, args.out_dir, cases)
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    if args.store_thresholds:
        command = "mentalmap " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        for kind, model in models.items():
            scores = validate_model(model, residual="positive")
            path = weights_path(kind)
            record = load_record(path)
            record["threshold"] = scores["threshold"]
            record["threshold_note"] = ("best mean Dice of the max(x - x_hat - r, 0) map over thresholds "
                                        "0.01...0.75 (step 0.01) on the validation FLAIRs Subj18-20 against "
                                        "wml_auto; never on a test set")
            record["threshold_validation"] = scores
            record["residual"] = "positive"
            record["metrics"] = [r for r in rows if r["method"].startswith(kind + " ")]
            record["eval_command"] = command
            save_record(path, record)
            print(f"{kind}: auto threshold {scores['threshold']:g} (validation) stored in {path}")
    return 0


def add_uad_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``uad`` to the ``eval`` subcommand group."""
    parser = subparsers.add_parser("uad", help="lesion detection by the anomaly models vs the intensity baselines")
    parser.add_argument("--kinds", nargs="+", choices=ANOMALY_KINDS, default=list(ANOMALY_KINDS))
    parser.add_argument("--residuals", nargs="+", choices=("positive", "absolute"), default=["positive", "absolute"],
                        help="anomaly scores each model is evaluated with")
    parser.add_argument("--out-dir", default=str(Path("results") / "uad"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--store-thresholds", action="store_true",
                        help="also write the Auto thresholds (chosen on the validation FLAIRs) and the test "
                             "metrics into the weights files (a release step)")
    parser.set_defaults(func=run_eval_uad)
    return parser


def add_uad_validate_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``uad-validate`` to the ``eval`` subcommand group."""
    parser = subparsers.add_parser(
        "uad-validate", help="validation (Subj18-20 vs wml_auto) scores of anomaly models, runs and baselines")
    parser.add_argument("--kinds", nargs="*", choices=ANOMALY_KINDS, default=[], help="shipped weights")
    parser.add_argument("--runs", nargs="*", default=[], help="DAE run folders (their last.pt)")
    parser.add_argument("--residuals", nargs="+", choices=("positive", "absolute"), default=["positive"])
    parser.add_argument("--out", default=str(Path("results") / "uad" / "uad_validation.csv"))
    parser.add_argument("--threads", type=int, default=1)
    parser.set_defaults(func=run_uad_validate)


def dae_from_run(run_dir: str | Path):
    """The DAE of a training run folder (its ``last.pt``) as an ``AnomalyModel``."""
    from ..inference.anomaly import AnomalyModel
    from ..io.preprocess import GridSpec
    from ..models.uad_dae import DAEConfig, DenoisingUNet

    record = load_record(Path(run_dir) / "last.pt")
    config = record["train_config"]
    model = DenoisingUNet(DAEConfig.from_dict(config["model"]))
    model.load_state_dict(record["state_dict"])
    return AnomalyModel(model.eval(), config["kind"], GridSpec(**config["grid"]), None, {})


def run_uad_validate(args: argparse.Namespace) -> int:
    """Print and write the validation scores (AUPRC, Auto threshold, Dice) used for every choice."""
    import csv

    import torch

    from ..inference.anomaly import load_anomaly_model
    from .calibration import validate_baselines, validate_model, validation_volumes

    torch.set_num_threads(args.threads)
    volumes = validation_volumes()
    rows = [{"method": name, "residual": "", **scores} for name, scores in validate_baselines(volumes).items()]
    models = {kind: load_anomaly_model(kind, "cpu") for kind in args.kinds}
    for run in args.runs:
        models[run] = dae_from_run(run)
    for name, model in models.items():
        for residual in args.residuals:
            rows.append({"method": name, "residual": residual, **validate_model(model, volumes, residual)})
            print(rows[-1])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["method", "residual", "AUPRC", "threshold", "dice at threshold",
                                                    "half/half dice", "subjects"])
        writer.writeheader()
        writer.writerows({**r, "subjects": " ".join(r["subjects"])} for r in rows)
    for r in rows:
        print(f"{r['method']:<55} {r['residual']:<9} AUPRC {r['AUPRC']:.3f}  auto threshold {r['threshold']:g}  "
              f"Dice {r['dice at threshold']:.3f}  half/half {r['half/half dice']:.3f}")
    print(f"wrote {args.out}")
    return 0


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
    add_uad_validate_parser(subparsers)  # registered here: the group's command list is not this module's
    add_uad_auto_parser(subparsers)
    from .per_scan_commands import add_uad_per_scan_parser

    add_uad_per_scan_parser(subparsers)


def add_uad_auto_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``uad-auto`` to the ``eval`` subcommand group."""
    parser = subparsers.add_parser(
        "uad-auto", help="the anomaly dock's Auto thresholds per method, score and target (validation only)")
    parser.add_argument("--test", action="store_true", help="also report the Dice at Auto on the manual test sets")
    parser.add_argument("--out", default="results/uad", help="folder for auto_thresholds.csv (and auto_test.csv)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.set_defaults(func=run_uad_auto)


def run_uad_auto(args: argparse.Namespace) -> int:
    """Choose every Auto threshold on validation, write the CSV(s), compare with the shipped table."""
    import csv

    import torch

    from ..inference.anomaly_methods import AUTO_THRESHOLDS
    from .auto_thresholds import auto_threshold_rows, shipped_table, test_dice_at_auto

    torch.set_num_threads(args.threads)
    rows = auto_threshold_rows()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tables = {"auto_thresholds.csv": rows}
    if args.test:
        tables["auto_test.csv"] = test_dice_at_auto(rows)
    for name, table in tables.items():
        with open(out / name, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
        print(f"wrote {out / name}")
    table = shipped_table(rows)
    print("AUTO_THRESHOLDS = " + repr(table))
    print("shipped table " + ("matches" if table == AUTO_THRESHOLDS else "differs: update inference/anomaly_methods.py"))
    return 0


def run_uad_baseline_threshold(args: argparse.Namespace) -> int:
    """Print the validation threshold of the intensity baseline and whether the shipped constant matches."""
    from ..inference.anomaly import INTENSITY_AUTO_THRESHOLD
    from .calibration import validation_intensity_threshold

    best = validation_intensity_threshold()
    print(f"shipped INTENSITY_AUTO_THRESHOLD = {INTENSITY_AUTO_THRESHOLD}"
          + ("" if abs(best - INTENSITY_AUTO_THRESHOLD) < 1e-9 else "  (differs: update it)"))
    return 0
