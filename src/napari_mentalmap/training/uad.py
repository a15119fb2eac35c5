"""Training loop of the anomaly VAEs (Lambert et al.) on Lightning Fabric.

Data: the FLAIR of the ``train`` split (Subj1-17) on the model grid (whole brain extent,
``coverage=1``), intensities in [0, 1] inside the brain. Voxels of the automatic
white-matter-lesion masks (``wml_auto``, dilated by one voxel) are left out of the loss.

Loss = L1 / (moving mean of the last 10 L1 values) + β(epoch) · kl_weight · KL, with the
cyclical annealing of the paper (β = 2t/T over the first half of each period T, then 1).
Runs on :func:`.loop.fit` with one unit = one epoch: ``last.pt`` (weights, optimiser, epoch,
moving mean, history) is written after every epoch, so an interrupted run continues with
``--resume``; ``export_weights`` writes the small file shipped in ``napari_mentalmap/weights``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..checkpoints import load_record, save_record
from ..data.splits import SPLITS
from ..data.subjects import SubjectGrid, healthy_weight, load_split
from ..io.preprocess import GridSpec
from ..models.uad_vae import (
    UADVAE,
    MovingMean,
    VAEConfig,
    cyclical_beta,
    default_config,
    kl_divergence,
)
from .loop import LoopConfig, StepContext, fit

UAD_GRID = GridSpec(n_poses=48, size=64, coverage=1.0)
"""Model grid of the anomaly VAEs: the whole brain (not the middle 75 %), 48 x 64 x 64."""


@dataclass
class FlairTrainConfig:
    """What a training run on the healthy FLAIR shares (stored in checkpoints and weights);
    ``None`` fields take the model family's default (``DEFAULTS``) when the config is made."""

    DEFAULTS: ClassVar[dict] = {}
    kind: str = ""
    out_dir: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float = 1e-3
    flip: bool = True
    seed: int = 0
    num_threads: int | None = 1
    max_minutes: float | None = None
    accelerator: str = "auto"
    grid: dict | None = None
    model: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in self.DEFAULTS.items():
            if getattr(self, name) in (None, ""):
                setattr(self, name, value() if callable(value) else value)
        if self.out_dir is None:
            self.out_dir = f"runs/uad_{self.kind}"

    def load_subjects(self) -> dict[str, list[SubjectGrid]]:
        """The healthy FLAIR of the fixed NiChart train/val split on this run's grid."""
        spec = GridSpec(**self.grid)
        return {split: load_split(f"nichart_{split}", "flair", spec) for split in ("train", "val")}


@dataclass
class UADTrainConfig(FlairTrainConfig):
    """One anomaly-VAE run: the shared fields plus the paper's β schedule."""

    DEFAULTS: ClassVar[dict] = {"kind": "dense3d", "epochs": 100, "batch_size": 4, "grid": UAD_GRID.to_dict}
    period: float = 50.0
    kl_weight: float = 1.0

    def vae_config(self) -> VAEConfig:
        if self.model:
            return VAEConfig.from_dict(self.model)
        spec = GridSpec(**self.grid)
        return default_config(self.kind, spec.n_poses, spec.size)


class UADDataset(Dataset):
    """(image, loss weight) pairs: whole volumes (3-D) or every axial slice (2-D)."""

    def __init__(self, subjects: list[SubjectGrid], ndim: int, flip: bool = False, seed: int = 0):
        self.images = torch.from_numpy(np.stack([s.image for s in subjects]).astype(np.float32))
        self.weights = torch.from_numpy(np.stack([healthy_weight(s) for s in subjects]))
        if ndim == 2:
            self.images = self.images.flatten(0, 1)
            self.weights = self.weights.flatten(0, 1)
        self.flip = flip
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, weight = self.images[index][None], self.weights[index][None]
        if self.flip and torch.rand(1, generator=self.generator) < 0.5:
            image, weight = image.flip(-1), weight.flip(-1)
        return image, weight


def masked_l1(x_hat: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the voxels with weight 1."""
    return ((x_hat - x).abs() * weight).sum() / weight.sum().clamp(min=1.0)


@torch.no_grad()
def validation_l1(model: UADVAE, subjects: list[SubjectGrid], device: torch.device) -> float:
    """Mean L1 reconstruction error (posterior mean) inside the brain of ``subjects``."""
    model.eval()
    errors = []
    for subject in subjects:
        x = torch.from_numpy(subject.image)[None, None].to(device)
        if model.config.ndim == 2:
            x = x[0].transpose(0, 1)  # (P, 1, S, S)
        x_hat = model.reconstruct(x)
        mask = torch.from_numpy(subject.mask).to(device)
        mask = mask[None, None] if model.config.ndim == 3 else mask[:, None]
        errors.append(float(((x_hat - x).abs() * mask).sum() / mask.sum().clamp(min=1)))
    model.train()
    return float(np.mean(errors))


def train_uad(config: UADTrainConfig, resume: bool = True, subjects: dict | None = None,
              progress: bool = True, command: str = "") -> dict:
    """Train (or continue) one anomaly VAE on :func:`.loop.fit` (one unit = one epoch);
    returns a summary record.

    ``subjects`` ({"train": [...], "val": [...]}) overrides the fixed splits (tests).
    """
    subjects = subjects or config.load_subjects()
    vae_config = config.vae_config()
    config.model = vae_config.to_dict()
    moving = MovingMean(10)
    last = Path(config.out_dir) / "last.pt"
    if resume and not command and last.exists():  # a resumed run keeps its original command line
        command = load_record(last).get("command", "")

    def build():
        model = UADVAE(vae_config)
        return model, torch.optim.Adam(model.parameters(), lr=config.lr)

    def epochs(start: int, fabric) -> Iterator:
        dataset = UADDataset(subjects["train"], vae_config.ndim, flip=config.flip, seed=config.seed + start)
        loader = fabric.setup_dataloaders(DataLoader(dataset, batch_size=config.batch_size, shuffle=True,
                                                     drop_last=len(dataset) > config.batch_size))
        while True:
            yield loader

    def epoch(context: StepContext, loader) -> dict[str, float]:
        totals, steps = np.zeros(3), max(len(loader), 1)
        for step, (images, weights) in enumerate(loader):
            beta = cyclical_beta(context.index + step / steps, config.period)
            x_hat, mu, logvar = context.model(images)
            l1 = masked_l1(x_hat, images, weights)
            kl = kl_divergence(mu, logvar)
            loss = l1 / moving.update(l1.item()) + beta * config.kl_weight * kl
            context.optimizer.zero_grad(set_to_none=True)
            context.backward(loss)
            context.optimizer.step()
            totals += (loss.item(), l1.item(), kl.item())
        loss_mean, l1_mean, kl_mean = totals / steps
        return {"loss": loss_mean, "l1": l1_mean, "kl": kl_mean, "beta": cyclical_beta(context.index + 1, config.period)}

    def validate(model: UADVAE) -> dict[str, float]:
        return {"val_l1": validation_l1(model, subjects["val"], next(model.parameters()).device)}

    loop = LoopConfig(out_dir=config.out_dir, steps=config.epochs, val_every=1, checkpoint_every=1,
                      max_minutes=config.max_minutes, seed=config.seed, num_threads=config.num_threads,
                      accelerator=config.accelerator, unit="epoch")
    record = {"train_config": asdict(config), "command": command}
    summary = fit(loop, build, epoch, epochs, validate if subjects.get("val") else None,
                  select=lambda metrics: -metrics["val_l1"], record=record, resume=resume, progress=progress,
                  desc=f"train {config.kind}", stateful={"moving_mean": moving})
    return {"epoch": summary["step"], "train_seconds": summary["train_seconds"], "history": summary["history"],
            "last": str(last)}


def export_weights(run_dir: str | Path, path: str | Path, extra: dict | None = None) -> Path:
    """Write the small shipped file (float16 weights + config + split + grid + command) from a run."""
    record = load_record(Path(run_dir) / "last.pt")
    train_config = record["train_config"]
    history = record["train_state"]["history"]
    out = {
        "format": "uad_vae",
        "kind": train_config["kind"],
        "config": train_config["model"],
        "grid": train_config["grid"],
        "state_dict": {k: v.to(torch.float16) if v.is_floating_point() else v
                       for k, v in record["state_dict"].items()},
        "split": {"train": SPLITS["nichart_train"], "val": SPLITS["nichart_val"]},
        "train_config": train_config,
        "train_seconds": record["train_state"]["train_seconds"],
        "epochs": record["train_state"]["step"],
        "final_val_l1": history[-1].get("val_l1") if history else None,
        "command": record.get("command", ""),
        "threshold": None,
        "metrics": {},
    }
    out.update(extra or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_record(path, out)
    return path


