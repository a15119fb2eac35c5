"""``mentalmap train skullstrip``: train the learned brain extraction and export its weights."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .options import add_run_options, command_line, fabric_missing


def run_train_skullstrip(args: argparse.Namespace) -> int:
    """Train, then write ``weights/skullstrip.pt`` (with test Dice) unless ``--no-export``."""
    from .skullstrip import SkullStripTrainConfig, export_weights, train_skullstrip

    config = SkullStripTrainConfig(
        out_dir=args.out_dir, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        stripped_prob=args.stripped_prob, eval_every=args.eval_every, seed=args.seed,
        num_threads=args.threads, max_minutes=args.max_minutes, modalities=tuple(args.modalities),
    )
    if fabric_missing("skullstrip"):
        return 2
    summary = train_skullstrip(config, command=command_line(args))
    print(f"skullstrip: {summary['steps']} steps, {summary['train_seconds']:.0f} s of training, "
          f"best step {summary['best_step']}")
    if not args.no_export:
        path = export_weights(config.out_dir, Path(args.weights_dir) / "skullstrip.pt")
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


def add_skullstrip_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``skullstrip`` to the ``train`` subcommand group."""
    parser = subparsers.add_parser("skullstrip", help="2.5-D U-Net brain extraction on NiChart T1 (with skull)")
    return configure_parser(parser)


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``train skullstrip`` (shared by the CLI and :func:`main`)."""
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--stripped-prob", type=float, default=0.3, help="share of skull-stripped inputs")
    parser.add_argument("--eval-every", type=int, default=100, help="validation period (steps)")
    parser.add_argument("--modalities", nargs="+", choices=("t1", "flair"), default=["t1"],
                        help="NiChart contrasts to train on (each with skull and stripped)")
    add_run_options(parser, out_dir="runs/skullstrip", max_minutes=11.0)
    parser.set_defaults(func=run_train_skullstrip)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m napari_mentalmap.training.skullstrip_commands``."""
    parser = configure_parser(argparse.ArgumentParser(prog="mentalmap train skullstrip"))
    args = parser.parse_args(argv)
    if args.command_line is None:
        args.command_line = "python -m napari_mentalmap.training.skullstrip_commands " + " ".join(
            shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
