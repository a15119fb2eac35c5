"""``mentalmap train uad``: train one anomaly VAE and export its shipped weights."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..models.uad_dae import DAE_KINDS
from ..models.uad_vae import KINDS
from .options import add_run_options, command_line, fabric_missing


def run_train_dae(args: argparse.Namespace) -> int:
    """Train the denoising autoencoder (resumable), then write ``weights/uad_dae2d.pt``."""
    from .uad_dae import DAETrainConfig, export_dae_weights, train_dae

    config = DAETrainConfig(
        kind=args.kind, out_dir=args.out_dir or f"runs/uad_{args.kind}", epochs=args.epochs,
        batch_size=args.batch_size or 16, lr=args.lr, noise_std=args.noise_std, seed=args.seed,
        num_threads=args.threads, max_minutes=args.max_minutes, site_augment=args.site_augment,
    )
    if args.median_at is not None:
        config.grid = {**config.grid, "median_at": None if args.median_at <= 0 else args.median_at}
    if args.channels:
        from ..io.preprocess import GridSpec
        from ..models.uad_dae import default_dae_config

        model = default_dae_config(GridSpec(**config.grid).size, args.noise_std).to_dict()
        model["channels"] = args.channels
        config.model = model
    return _train_and_export(args, config, train_dae, export_dae_weights)


def _train_and_export(args: argparse.Namespace, config, train, export) -> int:
    """Run ``train`` (resumable); once every epoch is done, ``export`` the shipped weights."""
    summary = train(config, resume=args.resume, command=command_line(args))
    print(f"{args.kind}: {summary['epoch']} epochs, {summary['train_seconds']:.0f} s of training")
    if not args.no_export and summary["epoch"] >= config.epochs:
        path = export(config.out_dir, Path(args.weights_dir) / f"uad_{args.kind}.pt")
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


def run_train_uad(args: argparse.Namespace) -> int:
    """Train (resumable), then write ``weights/uad_<kind>.pt`` unless ``--no-export``."""
    if fabric_missing("uad"):
        return 2
    if args.kind in DAE_KINDS:
        return run_train_dae(args)
    from ..io.preprocess import GridSpec
    from ..models.uad_vae import VAEConfig, default_config
    from .uad import UADTrainConfig, export_weights, train_uad

    config = UADTrainConfig(
        kind=args.kind, out_dir=args.out_dir or f"runs/uad_{args.kind}", epochs=args.epochs,
        period=args.period, batch_size=args.batch_size or (4 if args.kind.endswith("3d") else 32),
        lr=args.lr, kl_weight=args.kl_weight, seed=args.seed, num_threads=args.threads,
        max_minutes=args.max_minutes,
    )
    if args.median_at is not None:
        config.grid = {**config.grid, "median_at": args.median_at}
    if args.latent_dim or args.channels:
        spec = GridSpec(**config.grid)
        model = default_config(args.kind, spec.n_poses, spec.size).to_dict()
        if args.latent_dim:
            model["latent_dim" if args.kind.startswith("dense") else "latent_channels"] = args.latent_dim
        if args.channels:
            model["channels"] = args.channels
        config.model = VAEConfig.from_dict(model).to_dict()
    return _train_and_export(args, config, train_uad, export_weights)


def add_uad_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``uad`` to the ``train`` subcommand group."""
    parser = subparsers.add_parser(
        "uad", help="anomaly VAE (dense/spatial, 2-D/3-D) or denoising autoencoder (dae2d) on healthy FLAIR")
    parser.add_argument("--kind", choices=KINDS + DAE_KINDS, default="dense3d")
    parser.add_argument("--noise-std", type=float, default=0.1,
                        help="dae2d: std of the coarse training noise (normalised intensity units)")
    parser.add_argument("--site-augment", action="store_true",
                        help="dae2d: random contrast, blur and bias field on the training slices (other scanners)")
    parser.add_argument("--epochs", type=int, default=75)
    parser.add_argument("--period", type=float, default=50.0, help="cyclical β annealing period (epochs)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 4 volumes (3-D), 32 slices (2-D)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--kl-weight", type=float, default=1.0)
    parser.add_argument("--latent-dim", type=int, default=None,
                        help="latent size (dense) or latent channels (spatial); default per kind")
    parser.add_argument("--channels", type=int, nargs="+", default=None,
                        help="the 4 encoder widths (VAEs) or the U-Net level widths (dae2d)")
    parser.add_argument("--median-at", type=float, default=None,
                        help="normalise so that the brain's median intensity maps to this value "
                             "(default: the 99.5th percentile maps to 1; dae2d: 0.5, give 0 for percentiles)")
    add_run_options(parser, out_dir=None, max_minutes=None)
    parser.add_argument("--resume", action="store_true", help="continue from <out-dir>/last.pt")
    parser.set_defaults(func=run_train_uad)
    return parser
