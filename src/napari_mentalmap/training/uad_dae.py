"""Training loop of the denoising autoencoder (Kascenas et al. 2022) for anomaly detection.

Data: every axial slice with brain of the FLAIR of ``nichart_train`` (Subj1-17) on the DAE's
model grid (``DAE_GRID``: whole brain, brain median at 0.5, the baseline's standardisation);
validation: Subj18-20. The input is the slice plus coarse Gaussian noise
(:func:`..models.uad_dae.coarse_noise`); the loss is the squared error to the clean slice
inside the brain mask, with the automatic lesions (``wml_auto``, dilated by one voxel) left
out (``healthy_weight``). Plain torch on the CPU (1 thread by default).

``last.pt`` (weights, optimiser, epoch, RNG state, history) is written after every epoch, so
an interrupted run continues with ``--resume``; :func:`export_dae_weights` writes the small
shipped file.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..checkpoints import load_record, save_record
from ..data.subjects import SubjectGrid, healthy_weight, load_split
from ..io.preprocess import GridSpec
from ..models.uad_dae import DAEConfig, DenoisingUNet, coarse_noise, default_dae_config

DAE_GRID = GridSpec(n_poses=64, size=96, coverage=1.0, median_at=0.5)
"""Model grid of the DAE: the whole brain at about the NiChart FLAIR resolution (2 mm), with the
baseline's median standardisation (brain median at 0.5)."""


@dataclass
class DAETrainConfig:
    """Everything that defines one DAE training run (stored in checkpoints and weights)."""

    kind: str = "dae2d"
    out_dir: str = "runs/uad_dae2d"
    epochs: int = 5
    batch_size: int = 16
    lr: float = 1e-3
    noise_std: float = 0.1
    flip: bool = True
    seed: int = 0
    num_threads: int | None = 1
    max_minutes: float | None = None
    grid: dict = field(default_factory=DAE_GRID.to_dict)
    model: dict = field(default_factory=dict)

    def dae_config(self) -> DAEConfig:
        if self.model:
            return DAEConfig.from_dict(self.model)
        return default_dae_config(GridSpec(**self.grid).size, self.noise_std)


def slice_tensors(subjects: list[SubjectGrid]) -> tuple[torch.Tensor, torch.Tensor]:
    """(slices, loss weights) ``(N, 1, S, S)`` of every axial slice that holds brain; the
    weight is the brain mask with the (dilated) automatic lesions removed."""
    images, weights = [], []
    for subject in subjects:
        weight = healthy_weight(subject) * subject.mask
        keep = subject.mask.reshape(subject.mask.shape[0], -1).any(axis=1)
        images.append(subject.image[keep])
        weights.append(weight[keep])
    return (torch.from_numpy(np.concatenate(images)[:, None].astype(np.float32)),
            torch.from_numpy(np.concatenate(weights)[:, None].astype(np.float32)))


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the voxels with weight 1."""
    return ((prediction - target) ** 2 * weight).sum() / weight.sum().clamp(min=1.0)


@torch.no_grad()
def validation_losses(model: DenoisingUNet, images: torch.Tensor, weights: torch.Tensor,
                      seed: int = 12345) -> dict:
    """Denoising MSE (fixed noise) and clean-input L1 error inside the healthy brain."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    config = model.config
    denoise, clean, total = 0.0, 0.0, 0.0
    for start in range(0, images.shape[0], 64):
        x, w = images[start:start + 64], weights[start:start + 64]
        noise = coarse_noise(tuple(x.shape), config.noise_std, config.noise_res, generator)
        denoise += float(((model(x + noise) - x) ** 2 * w).sum())
        clean += float(((model.reconstruct(x) - x).abs() * w).sum())
        total += float(w.sum())
    model.train()
    total = max(total, 1.0)
    return {"val_mse": denoise / total, "val_l1": clean / total}


def train_dae(config: DAETrainConfig, resume: bool = True, subjects: dict | None = None,
              progress: bool = True, command: str = "") -> dict:
    """Train (or continue) the DAE; returns a summary record.

    ``subjects`` ({"train": [...], "val": [...]}) overrides the fixed splits (tests).
    """
    from tqdm.auto import tqdm

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = GridSpec(**config.grid)
    if subjects is None:
        subjects = {"train": load_split("nichart_train", "flair", spec), "val": load_split("nichart_val", "flair", spec)}
    dae_config = config.dae_config()
    config.model = dae_config.to_dict()
    model = DenoisingUNet(dae_config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    state: dict = {"epoch": 0, "history": [], "train_seconds": 0.0}
    last_path = out_dir / "last.pt"
    if resume and last_path.exists():
        record = load_record(last_path)
        model.load_state_dict(record["state_dict"])
        optimizer.load_state_dict(record["optimizer"])
        generator.set_state(record["generator"])
        state.update(record["train_state"])
        command = command or record.get("command", "")
        print(f"resumed from {last_path} at epoch {state['epoch']}")
    images, weights = slice_tensors(subjects["train"])
    val = slice_tensors(subjects["val"]) if subjects.get("val") else None

    def save() -> None:
        save_record(last_path, {"state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "generator": generator.get_state(), "train_state": state,
                                "train_config": asdict(config), "command": command})

    started = time.time()
    seconds_before = state["train_seconds"]
    n = images.shape[0]
    batch = min(config.batch_size, n)
    bar = tqdm(total=config.epochs, initial=state["epoch"], disable=not progress, desc=f"train {config.kind}")
    model.train()
    while state["epoch"] < config.epochs:
        order = torch.randperm(n, generator=generator)
        total, steps = 0.0, 0
        for start in range(0, n - batch + 1, batch):
            index = order[start:start + batch]
            x, w = images[index], weights[index]
            if config.flip and torch.rand(1, generator=generator) < 0.5:
                x, w = x.flip(-1), w.flip(-1)
            noise = coarse_noise(tuple(x.shape), dae_config.noise_std, dae_config.noise_res, generator)
            loss = masked_mse(model(x + noise), x, w)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
            steps += 1
        state["epoch"] += 1
        state["train_seconds"] = seconds_before + time.time() - started
        entry = {"epoch": state["epoch"], "mse": total / max(steps, 1), "seconds": state["train_seconds"]}
        entry.update(validation_losses(model, *val) if val is not None else {"val_mse": float("nan"),
                                                                              "val_l1": float("nan")})
        state["history"].append(entry)
        with open(out_dir / "log.jsonl", "a") as log:
            log.write(json.dumps(entry) + "\n")
        save()
        bar.update(1)
        bar.set_postfix(mse=f"{entry['mse']:.5f}", val=f"{entry['val_mse']:.5f}")
        if config.max_minutes is not None and time.time() - started > 60 * config.max_minutes:
            print(f"stopping after {config.max_minutes} min; continue with --resume")
            break
    bar.close()
    return {"epoch": state["epoch"], "train_seconds": state["train_seconds"], "history": state["history"],
            "last": str(last_path)}


def export_dae_weights(run_dir: str | Path, path: str | Path, extra: dict | None = None) -> Path:
    """Write the small shipped file from a run: the UAD export with the DAE's format and score."""
    from .uad import export_weights

    return export_weights(run_dir, path, {"format": "uad_dae", "residual": "positive", **(extra or {})})
