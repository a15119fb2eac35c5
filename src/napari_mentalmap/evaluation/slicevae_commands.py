"""``mentalmap eval slicevae``: realism / smoothness table of the slice VAE's volume models."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_slicevae_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``slicevae`` evaluation subcommand to ``subparsers``."""
    parser = subparsers.add_parser("slicevae", help="realism (tissue Dice) and smoothness of sampled volumes")
    parser.add_argument("--n-samples", type=int, default=10, help="sampled volumes per latent model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="auto, cuda, mps or cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=Path("results/slicevae"), help="table.md, table.csv, figure.png")
    parser.add_argument("--weights", type=Path, default=None, help="slice VAE weights (default: shipped)")
    parser.add_argument("--segnet", type=Path, default=None, help="tissue seg net weights (default: shipped)")
    parser.set_defaults(func=run_eval_slicevae)
    return parser


def run_eval_slicevae(args: argparse.Namespace) -> int:
    """Print the Markdown table and write CSV + figure."""
    import torch

    from .slice_vae import run_evaluation

    torch.set_num_threads(args.threads)
    print(run_evaluation(args.out, args.n_samples, args.seed, args.device, args.weights, args.segnet))
    return 0
