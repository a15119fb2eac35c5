"""Training loop of the anomaly VAEs (Lambert et al.) on Lightning Fabric.

Data: the FLAIR of the ``train`` split (Subj1-17) on the model grid (whole brain extent,
``coverage=1``), intensities in [0, 1] inside the brain. Voxels of the automatic
white-matter-lesion masks (``wml_auto``, dilated by one voxel) are left out of the loss.

Loss = L1 / (moving mean of the last 10 L1 values) + β(epoch) · kl_weight · KL, with the
cyclical annealing of the paper (β = 2t/T over the first half of each period T, then 1).
``last.pt`` (weights, optimiser, epoch, moving mean, history) is written after every
epoch, so an interrupted run continues with ``--resume``; ``export_weights`` writes the
small file shipped in ``napari_mentalmap/weights``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

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

UAD_GRID = GridSpec(n_poses=48, size=64, coverage=1.0)
"""Model grid of the anomaly VAEs: the whole brain (not the middle 75 %), 48 x 64 x 64."""


@dataclass
class UADTrainConfig:
    """Everything that defines one training run (stored in checkpoints and weights)."""

    kind: str = "dense3d"
    out_dir: str = "runs/uad_dense3d"
    epochs: int = 100
    period: float = 50.0
    batch_size: int = 4
    lr: float = 1e-3
    kl_weight: float = 1.0
    flip: bool = True
    seed: int = 0
    num_threads: int | None = 1
    max_minutes: float | None = None
    accelerator: str = "auto"
    grid: dict = field(default_factory=UAD_GRID.to_dict)
    model: dict = field(default_factory=dict)

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
    """Train (or continue) one anomaly VAE; returns a summary record.

    ``subjects`` ({"train": [...], "val": [...]}) overrides the fixed splits (tests).
    """
    from lightning_fabric import Fabric
    from tqdm.auto import tqdm

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    fabric = Fabric(accelerator=config.accelerator, devices=1)
    fabric.seed_everything(config.seed)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = GridSpec(**config.grid)
    if subjects is None:
        subjects = {"train": load_split("nichart_train", "flair", spec), "val": load_split("nichart_val", "flair", spec)}
    vae_config = config.vae_config()
    config.model = vae_config.to_dict()
    model = UADVAE(vae_config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    moving = MovingMean(10)
    state: dict = {"epoch": 0, "history": [], "train_seconds": 0.0}
    last_path = out_dir / "last.pt"
    if resume and last_path.exists():
        record = load_record(last_path)
        model.load_state_dict(record["state_dict"])
        optimizer.load_state_dict(record["optimizer"])
        moving.load_state_dict(record["moving_mean"])
        state.update(record["train_state"])
        fabric.print(f"resumed from {last_path} at epoch {state['epoch']}")
    model, optimizer = fabric.setup(model, optimizer)
    dataset = UADDataset(subjects["train"], vae_config.ndim, flip=config.flip, seed=config.seed + state["epoch"])
    loader = fabric.setup_dataloaders(DataLoader(dataset, batch_size=config.batch_size, shuffle=True,
                                                 drop_last=len(dataset) > config.batch_size))

    def save() -> None:
        module = model.module if hasattr(model, "module") else model
        record = {"state_dict": module.state_dict(), "optimizer": optimizer.state_dict(),
                  "moving_mean": moving.state_dict(), "train_state": state,
                  "train_config": asdict(config), "command": command}
        save_record(last_path, record)

    started = time.time()
    seconds_before = state["train_seconds"]
    steps_per_epoch = max(len(loader), 1)
    bar = tqdm(total=config.epochs, initial=state["epoch"], disable=not progress, desc=f"train {config.kind}")
    model.train()
    while state["epoch"] < config.epochs:
        totals = np.zeros(3)
        for step, (images, weights) in enumerate(loader):
            beta = cyclical_beta(state["epoch"] + step / steps_per_epoch, config.period)
            x_hat, mu, logvar = model(images)
            l1 = masked_l1(x_hat, images, weights)
            normaliser = moving.update(l1.item())
            kl = kl_divergence(mu, logvar)
            loss = l1 / normaliser + beta * config.kl_weight * kl
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(loss)
            optimizer.step()
            totals += (loss.item(), l1.item(), kl.item())
        state["epoch"] += 1
        module = model.module if hasattr(model, "module") else model
        val = validation_l1(module, subjects["val"], fabric.device) if subjects.get("val") else float("nan")
        loss_mean, l1_mean, kl_mean = totals / steps_per_epoch
        state["train_seconds"] = seconds_before + time.time() - started
        entry = {"epoch": state["epoch"], "loss": loss_mean, "l1": l1_mean, "kl": kl_mean, "val_l1": val,
                 "beta": cyclical_beta(state["epoch"], config.period), "seconds": state["train_seconds"]}
        state["history"].append(entry)
        with open(out_dir / "log.jsonl", "a") as log:
            log.write(json.dumps(entry) + "\n")
        save()
        bar.update(1)
        bar.set_postfix(l1=f"{l1_mean:.4f}", kl=f"{kl_mean:.3f}", val=f"{val:.4f}")
        if config.max_minutes is not None and time.time() - started > 60 * config.max_minutes:
            fabric.print(f"stopping after {config.max_minutes} min; continue with --resume")
            break
    bar.close()
    return {"epoch": state["epoch"], "train_seconds": state["train_seconds"], "history": state["history"],
            "last": str(last_path)}


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
        "epochs": record["train_state"]["epoch"],
        "final_val_l1": history[-1]["val_l1"] if history else None,
        "command": record.get("command", ""),
        "threshold": None,
        "metrics": {},
    }
    out.update(extra or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_record(path, out)
    return path


