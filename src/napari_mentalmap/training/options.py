"""Command-line pieces every ``mentalmap train`` subcommand shares."""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys

from ..checkpoints import WEIGHTS_DIR


def add_run_options(parser: argparse.ArgumentParser, out_dir: str | None, max_minutes: float | None,
                    threads: int = 1) -> None:
    """Seed, threads, time budget, run folder and where (whether) the shipped weights are written."""
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=threads, help="torch CPU threads")
    parser.add_argument("--max-minutes", type=float, default=max_minutes,
                        help="stop (checkpointed, resumable) after this long")
    parser.add_argument("--out-dir", default=out_dir, help="run folder (checkpoints, logs)")
    parser.add_argument("--weights-dir", default=str(WEIGHTS_DIR), help="where the exported weights go")
    parser.add_argument("--no-export", action="store_true", help="do not write the shipped weights")
    parser.add_argument("--command-line", default=None, help=argparse.SUPPRESS)


def command_line(args: argparse.Namespace) -> str:
    """The command that made a run, as stored in its weights."""
    if getattr(args, "command_line", None) is not None:
        return args.command_line
    return "mentalmap " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def fabric_missing(command: str) -> bool:
    """True (after saying how to install it) when Lightning Fabric, the ``[train]`` extra, is absent."""
    if importlib.util.find_spec("lightning_fabric") is not None:
        return False
    print(f"mentalmap train {command} needs Lightning Fabric, which is not installed: "
          "pip install 'napari-mentalmap[train]'", file=sys.stderr)
    return True
