"""``mentalmap train slicevae``: the slice VAE + latent models, or the tissue segmentation net."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .options import fabric_missing


def add_slicevae_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``slicevae`` training subcommand to ``subparsers``."""
    parser = subparsers.add_parser("slicevae", help="train the slice VAE (latent explorer) or its tissue seg net")
    parser.add_argument("--part", choices=("vae", "segnet"), default="vae",
                        help="vae: VAE + latent volume models; segnet: realism-score segmentation net")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default 60 for vae, 30 for segnet)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--ppca-rank", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--checkpoint-dir", type=Path, default=Path("checkpoints/slicevae"),
                        help="resumable checkpoints (rerun the same command to resume)")
    parser.add_argument("--out", type=Path, default=None, help="weights file (default: the shipped one)")
    parser.set_defaults(func=run_train_slicevae)
    return parser


def run_train_slicevae(args: argparse.Namespace) -> int:
    """Run the training part chosen by ``--part``."""
    if fabric_missing("slicevae"):
        return 2
    import torch

    from .slice_vae import (
        SEGNET_WEIGHTS,
        VAE_WEIGHTS,
        SliceVAETrainConfig,
        train_segnet,
        train_slice_vae,
    )

    torch.set_num_threads(args.threads)
    config = SliceVAETrainConfig(batch_size=args.batch_size, lr=args.lr, latent_dim=args.latent_dim,
                                 ppca_rank=args.ppca_rank, seed=args.seed)
    command = "mentalmap " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else None
    if args.part == "vae":
        if args.epochs:
            config.epochs = args.epochs
        metrics = train_slice_vae(config, args.checkpoint_dir, args.out or VAE_WEIGHTS,
                                  command=command or "mentalmap train slicevae")
    else:
        if args.epochs:
            config.seg_epochs = args.epochs
        metrics = train_segnet(config, args.checkpoint_dir, args.out or SEGNET_WEIGHTS,
                               command=command or "mentalmap train slicevae --part segnet")
    print(metrics)
    return 0
