"""Training of the C-VAE baseline on the fixed T1 split (``mentalmap train cvae``).

As the Conditional BRUNO paper's C-VAE: 4 context slices with their poses and queries at
other poses of the same subject, all on the model grid. Runs on :func:`.loop.fit`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..data.splits import SPLITS
from ..data.subjects import load_split
from ..inference.mental_map import evenly_spaced
from ..io.preprocess import GridSpec
from ..models.cvae import ConditionalVAE, CVAEConfig, kl_warmup
from .datasets import SequenceDataset
from .loop import LoopConfig, StepContext, fit
from .options import fabric_missing

N_CONTEXTS = 4
N_QUERIES = 8


def validation_loss(model: ConditionalVAE, volumes: list[np.ndarray]) -> dict[str, float]:
    """Mean squared error of the mean image at 3 evenly spaced contexts on the validation subjects."""
    errors = []
    for volume in volumes:
        contexts = evenly_spaced(3, len(volume))
        queries = [p for p in range(len(volume)) if p not in contexts]
        device = next(model.parameters()).device
        mean, _ = model.predict(torch.from_numpy(volume[contexts]).to(device),
                                torch.tensor(contexts, device=device), torch.tensor(queries, device=device))
        errors.append(float(((mean.cpu().numpy() - volume[queries]) ** 2).mean()))
    return {"val_mse": float(np.mean(errors))}


def train_cvae(out_dir: str, steps: int, batch_size: int = 8, lr: float = 1e-3, max_minutes: float | None = None,
               threads: int | None = None, config: CVAEConfig | None = None, resume: bool = True,
               volumes: dict[str, list[np.ndarray]] | None = None, warmup: int = 2000, progress: bool = True) -> dict:
    """Train (or continue) the C-VAE; ``volumes`` ({"train": [...], "val": [...]}) overrides the split."""
    config = config or CVAEConfig()
    spec = GridSpec(n_poses=config.n_poses, size=config.image_size)
    if volumes is None:
        volumes = {split: [s.image for s in load_split(f"t1_{split}", "t1", spec)] for split in ("train", "val")}

    def build():
        torch.manual_seed(0)
        model = ConditionalVAE(config)
        return model, torch.optim.Adam(model.parameters(), lr=lr)

    def batches(start: int, fabric) -> Iterator:
        dataset = SequenceDataset(volumes["train"], length=N_CONTEXTS + N_QUERIES, epoch_size=1 << 30, seed=start)
        index = start * batch_size
        while True:
            items = [dataset[index + i] for i in range(batch_size)]
            index += batch_size
            yield fabric.to_device((torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items])))

    def step(context: StepContext, batch) -> dict[str, float]:
        images, poses = batch
        loss, reconstruction, kl = context.model.loss(images[:, :N_CONTEXTS], poses[:, :N_CONTEXTS],
                                                      images[:, N_CONTEXTS:], poses[:, N_CONTEXTS:],
                                                      beta=kl_warmup(context.index, warmup))
        context.optimizer.zero_grad(set_to_none=True)
        context.backward(loss)
        torch.nn.utils.clip_grad_norm_(context.model.parameters(), 10.0)
        context.optimizer.step()
        return {"loss": loss.item(), "kl": kl.item()}

    record = {"format": "cvae", "config": config.to_dict(), "grid": spec.to_dict(),
              "split": {k: SPLITS[f"t1_{k}"] for k in ("train", "val")},
              "command": "mentalmap " + " ".join(sys.argv[1:])}
    loop = LoopConfig(out_dir=out_dir, steps=steps, val_every=500, max_minutes=max_minutes, num_threads=threads)
    return fit(loop, build, step, batches, lambda m: validation_loss(m, volumes["val"]),
               select=lambda metrics: -metrics["val_mse"], record=record, resume=resume, progress=progress,
               desc="train cvae")


def add_cvae_parser(models: argparse._SubParsersAction) -> None:
    """Add ``cvae`` to the ``train`` model subcommands."""
    parser = models.add_parser("cvae", help="train the C-VAE baseline of the mental-map evaluation")
    parser.add_argument("--out", default="runs/cvae", help="run folder (checkpoints, logs)")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-resume", action="store_true")
    parser.add_argument("--export", default=None, help="after training, copy best.pt's weights here")
    parser.set_defaults(func=run_train_cvae)


def run_train_cvae(args: argparse.Namespace) -> int:
    if fabric_missing("cvae"):
        return 2
    from ..checkpoints import load_record, save_record

    summary = train_cvae(args.out, args.steps, args.batch_size, args.lr, args.max_minutes, args.threads,
                         resume=not args.no_resume)
    print(summary)
    if args.export:
        record = load_record(Path(args.out) / "best.pt")
        record.pop("optimizer", None)
        save_record(Path(args.export), record)
        print(f"weights written to {args.export}")
    return 0
