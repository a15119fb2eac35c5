"""``mentalmap train ...``: one subcommand per model family."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` with its model subcommands."""
    from .bruno_commands import add_bruno_parser
    from .cvae import add_cvae_parser
    from .segmenter_commands import add_segmenter_parser
    from .skullstrip_commands import add_skullstrip_parser
    from .slicevae_commands import add_slicevae_parser
    from .uad_commands import add_uad_parser

    train = subparsers.add_parser("train", help="train a model (the shared data, or your own labelled scans: segmenter)")
    models = train.add_subparsers(dest="model", metavar="MODEL")
    for add in (add_bruno_parser, add_cvae_parser, add_uad_parser, add_slicevae_parser, add_skullstrip_parser,
                add_segmenter_parser):
        add(models)
