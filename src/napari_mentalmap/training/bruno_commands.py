"""``mentalmap train bruno``: command-line options of :func:`train_bruno`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .options import fabric_missing


def add_bruno_parser(models: argparse._SubParsersAction) -> None:
    """Add ``bruno`` to the ``train`` model subcommands."""
    parser = models.add_parser("bruno", help="train Conditional BRUNO on the T1 train split")
    parser.add_argument("--out", default="runs/bruno", help="run folder (checkpoints, logs)")
    parser.add_argument("--process", choices=["pose_aware", "exchangeable"], default="pose_aware")
    parser.add_argument("--kernel", choices=["exponential", "matern32", "matern52"], default="exponential",
                        help="pose-distance kernel of the pose-aware process")
    parser.add_argument("--kernel-components", type=int, choices=[1, 2], default=1,
                        help="length scales in the pose kernel")
    parser.add_argument("--prediction-weight", type=float, default=0.0,
                        help="add this x the squared error of the process's predictive mean (kernel only)")
    parser.add_argument("--process-lr-factor", type=float, default=10.0,
                        help="learning-rate multiplier of the process and pose-norm parameters")
    parser.add_argument("--gaussian", action="store_true", help="Gaussian instead of Student-t process")
    parser.add_argument("--pose-encoding", choices=["onehot", "continuous"], default="onehot")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--sequence-length", type=int, default=9, help="slices per training sequence")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--res-blocks", type=int, default=2)
    parser.add_argument("--couplings", type=int, default=3, help="couplings per stage and kind")
    parser.add_argument("--scales", type=int, default=3)
    parser.add_argument("--pose-norm-min-scale", type=float, default=None,
                        help="floor of the per-pose scale in logit units (robustness to unusual anatomy)")
    parser.add_argument("--final-couplings", type=int, default=4, help="checkerboard couplings at the last scale")
    parser.add_argument("--poses", type=int, default=48)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--val-every", type=int, default=500)
    parser.add_argument("--max-minutes", type=float, default=None, help="stop (and checkpoint) after this")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--accelerator", default="auto", help="cpu, cuda, mps or auto")
    parser.add_argument("--devices", default="1", help="number of devices (DDP when > 1)")
    parser.add_argument("--strategy", default="auto", help="e.g. ddp, ddp_spawn")
    parser.add_argument("--no-resume", action="store_true", help="start afresh even if last.pt exists")
    parser.add_argument("--export", default=None, help="after training, write best.pt's weights here")
    parser.set_defaults(func=run_train_bruno)

    refit = models.add_parser(
        "bruno-latent-mean",
        help="remove the per-pose latent mean of trained BRUNO weights and refit their process (flow frozen)")
    refit.add_argument("--weights", required=True, help="trained BRUNO weights (shipped file or best.pt)")
    refit.add_argument("--out", required=True, help="write the new weights here")
    refit.add_argument("--steps", type=int, default=1500)
    refit.add_argument("--lr", type=float, default=0.02)
    refit.add_argument("--seed", type=int, default=0)
    refit.add_argument("--dequantised", action="store_true",
                       help="fit the latents of dequantised slices (the training objective's) instead of "
                            "the slices as inference sees them")
    refit.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    refit.set_defaults(func=run_refit_latent_mean)

    grid = models.add_parser(
        "bruno-input-grid",
        help="fit the input-grid refinement (detail transfer) and std calibration of BRUNO weights on t1_val")
    grid.add_argument("--weights", default=None, help="BRUNO weights (default: shipped)")
    grid.add_argument("--out", required=True, help="write the weights with the fitted settings here")
    grid.add_argument("--contexts", nargs="+", type=int, default=[1, 3, 5, 9])
    grid.add_argument("--samples", type=int, default=8, help="posterior samples per volume for the std fit")
    grid.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    grid.set_defaults(func=run_fit_input_grid)


def run_train_bruno(args: argparse.Namespace) -> int:
    if fabric_missing("bruno"):
        return 2
    from ..io.preprocess import GridSpec
    from ..models.bruno import Bruno, BrunoConfig
    from ..models.flows import FlowConfig
    from .bruno import TrainConfig, export_weights, train_bruno

    flow = FlowConfig(image_size=args.size, n_poses=args.poses, pose_encoding=args.pose_encoding,
                      n_scales=args.scales, couplings_per_stage=args.couplings, width=args.width,
                      final_couplings=args.final_couplings, pose_norm_min_scale=args.pose_norm_min_scale,
                      res_blocks=args.res_blocks)
    bruno = BrunoConfig(flow=flow, process=args.process, student_t=not args.gaussian, kernel=args.kernel,
                        kernel_components=args.kernel_components,
                        grid=GridSpec(n_poses=args.poses, size=args.size).to_dict())
    devices = int(args.devices) if str(args.devices).isdigit() else args.devices
    config = TrainConfig.create(out_dir=args.out, steps=args.steps, batch_size=args.batch_size,
                                sequence_length=args.sequence_length, lr=args.lr,
                                process_lr_factor=args.process_lr_factor, prediction_weight=args.prediction_weight,
                                val_every=args.val_every, max_minutes=args.max_minutes, num_threads=args.threads,
                                accelerator=args.accelerator, devices=devices, strategy=args.strategy, bruno=bruno)
    result = train_bruno(config, resume=not args.no_resume)
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))
    if args.export:
        from ..data.subjects import load_split
        from .bruno import latent_limit

        best = Path(args.out) / "best.pt"
        model, _ = Bruno.load(best)
        spec = GridSpec(**model.config.grid)
        limit = latent_limit(model, [s.image for s in load_split("t1_val", "t1", spec)])
        export_weights(best, Path(args.export), context_latent_limit=limit)
        print(f"weights written to {args.export} (context latents clamped at ±{limit})")
    return 0


def run_refit_latent_mean(args: argparse.Namespace) -> int:
    """Fit the per-pose latent mean and the process; validate; write weights with the
    validation metrics, the clamp computed on validation, and the command."""
    import sys
    import time

    import torch

    from ..checkpoints import save_record
    from ..data.splits import SPLITS
    from ..data.subjects import load_split
    from ..io.preprocess import GridSpec
    from ..models.bruno import Bruno
    from .bruno import LatentMeanConfig, fit_pose_latent_mean, latent_limit, validate

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()
    model, base = Bruno.load(args.weights)
    spec = GridSpec(**model.config.grid)
    train = [s.image for s in load_split("t1_train", "t1", spec)]
    val = [s.image for s in load_split("t1_val", "t1", spec)]
    fitted = fit_pose_latent_mean(model, train, LatentMeanConfig(steps=args.steps, lr=args.lr, seed=args.seed,
                                                                       dequantised=args.dequantised))
    limit = latent_limit(fitted, val)
    fitted.config.context_latent_limit = limit
    metrics = validate(fitted, val, (1, 3, 5, 9), torch.device("cpu"))
    seconds = time.time() - started
    record = {
        "format": "bruno", "config": fitted.config.to_dict(),
        "state_dict": {k: v.float() for k, v in fitted.state_dict().items()},
        "split": {k: SPLITS[f"t1_{k}"] for k in ("train", "val")},
        "metrics": metrics,
        "train_config": {**base.get("train_config", {}),
                         "latent_mean_refit": {"steps": args.steps, "lr": args.lr, "seed": args.seed,
                                               "dequantised": args.dequantised}},
        "train_seconds": float(base.get("train_seconds", 0.0)) + seconds,
        "refit_seconds": seconds,
        "steps": base.get("steps"),
        "base_command": base.get("command"),
        "command": "mentalmap " + " ".join(sys.argv[1:]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_record(args.out, record)
    print(json.dumps({"metrics": metrics, "context_latent_limit": limit, "seconds": round(seconds)}))
    print(f"weights written to {args.out}")
    return 0


def run_fit_input_grid(args: argparse.Namespace) -> int:
    """Collect the validation cases, fit the detail transfer and the std calibration, write
    the weights with ``record["input_grid"]`` and the command."""
    import sys
    import time

    import torch
    from tqdm.auto import tqdm

    from ..checkpoints import load_record, resolve, save_record
    from ..data.splits import SPLITS
    from ..inference.refined_maps import InputGridSettings
    from .bruno_input_grid import collect_case, fit_decays, fit_std_calibration

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()
    path = resolve(args.weights, "bruno_t1")
    subjects = SPLITS["t1_val"]
    cases = [collect_case(subject, count, path, args.samples)
             for subject in tqdm(subjects, desc="validation subjects") for count in args.contexts]
    transfer, score = fit_decays(cases)
    calibration = fit_std_calibration(cases, transfer)
    settings = InputGridSettings(transfer, calibration)
    record = load_record(path, "bruno")
    record["input_grid"] = settings.to_dict()
    record["input_grid_fit"] = {"subjects": subjects, "contexts": list(args.contexts), "samples": args.samples,
                                "validation_ssim": score, "seconds": round(time.time() - started),
                                "command": "mentalmap " + " ".join(sys.argv[1:])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_record(args.out, record)
    print(json.dumps({"input_grid": settings.to_dict(), "validation_ssim": round(score, 4),
                      "seconds": round(time.time() - started)}))
    print(f"weights written to {args.out}")
    return 0
