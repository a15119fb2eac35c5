"""``mentalmap eval ...``: one subcommand per model family."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval`` with its model subcommands."""
    from .bruno_commands import add_bruno_parser
    from .slicevae_commands import add_slicevae_parser
    from .uad_commands import (
        add_uad_baseline_threshold_parser,
        add_uad_parser,
        add_uad_residual_parser,
    )

    evaluate = subparsers.add_parser("eval", help="evaluate models on the held-out data")
    models = evaluate.add_subparsers(dest="model", metavar="MODEL")
    for add in (add_bruno_parser, add_uad_parser, add_uad_residual_parser, add_uad_baseline_threshold_parser,
                add_slicevae_parser):
        add(models)
