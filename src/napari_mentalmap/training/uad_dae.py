"""Training loop of the denoising autoencoder (Kascenas et al. 2022) for anomaly detection.

Data: every axial slice with brain of the FLAIR of ``nichart_train`` (Subj1-17) on the DAE's
model grid (``DAE_GRID``: whole brain, brain median at 0.5, the baseline's standardisation);
validation: Subj18-20. The input is the slice plus coarse Gaussian noise
(:func:`..models.uad_dae.coarse_noise`); the loss is the squared error to the clean slice
inside the brain mask, with the automatic lesions (``wml_auto``, dilated by one voxel) left
out (``healthy_weight``). With ``site_augment`` every training slice first gets a random
contrast, in-plane blur and smooth bias field (:func:`site_augment`), stand-ins for other
scanners and protocols; the target is the augmented clean slice. Runs on :func:`.loop.fit`
(CPU, 1 thread by default), one unit = one epoch: ``last.pt`` (weights, optimiser, epoch,
RNG state, history) is written after every epoch, so an interrupted run continues with
``--resume``; :func:`export_dae_weights` writes the small shipped file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from ..checkpoints import load_record
from ..data.subjects import SubjectGrid, healthy_weight
from ..io.preprocess import GridSpec
from ..models.uad_dae import DAEConfig, DenoisingUNet, coarse_noise, default_dae_config
from .loop import GeneratorState, LoopConfig, StepContext, fit
from .uad import FlairTrainConfig

DAE_GRID = GridSpec(n_poses=64, size=96, coverage=1.0, median_at=0.5)
"""Model grid of the DAE: the whole brain at about the NiChart FLAIR resolution (2 mm), with the
baseline's median standardisation (brain median at 0.5)."""


@dataclass
class DAETrainConfig(FlairTrainConfig):
    """One DAE run: the shared fields plus the training noise."""

    DEFAULTS: ClassVar[dict] = {"kind": "dae2d", "epochs": 5, "batch_size": 16, "grid": DAE_GRID.to_dict}
    noise_std: float = 0.1
    site_augment: bool = False

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


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable in-plane Gaussian blur of ``(B, 1, H, W)`` (``sigma`` in pixels, zero padding)."""
    radius = max(1, int(round(3 * sigma)))
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = torch.nn.functional.conv2d(x, kernel.view(1, 1, 1, -1), padding=(0, radius))
    return torch.nn.functional.conv2d(x, kernel.view(1, 1, -1, 1), padding=(radius, 0))


def site_augment(x: torch.Tensor, generator: torch.Generator, max_gamma: float = 1.5,
                 max_blur: float = 1.2, bias_std: float = 0.1) -> torch.Tensor:
    """Slices ``(B, 1, H, W)`` (brain median at 0.5) as another scanner might show them.

    Per slice: a contrast change about the median, ``0.5 * (x / 0.5) ** gamma`` with
    ``log(gamma)`` uniform in ±``log(max_gamma)``; with probability 1/2 an in-plane Gaussian
    blur (sigma uniform in 0.3..``max_blur`` pixels); and a smooth multiplicative bias field
    ``exp(coarse noise)`` with ``bias_std`` at 4 x 4 resolution. Background away from the
    brain stays 0.
    """
    batch = x.shape[0]
    log_gamma = (torch.rand(batch, 1, 1, 1, generator=generator) * 2 - 1) * float(np.log(max_gamma))
    out = 0.5 * (x.clamp(min=0.0) / 0.5) ** torch.exp(log_gamma)
    blur = torch.rand(batch, generator=generator) < 0.5
    sigmas = 0.3 + torch.rand(batch, generator=generator) * (max_blur - 0.3)
    out = torch.cat([_gaussian_blur(out[i:i + 1], float(sigmas[i])) if blur[i] else out[i:i + 1]
                     for i in range(batch)])
    bias = torch.exp(coarse_noise(tuple(x.shape), bias_std, 4, generator))
    return out * bias


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
    """Train (or continue) the DAE on :func:`.loop.fit` (one unit = one epoch); returns a
    summary record.

    ``subjects`` ({"train": [...], "val": [...]}) overrides the fixed splits (tests).
    """
    subjects = subjects or config.load_subjects()
    dae_config = config.dae_config()
    config.model = dae_config.to_dict()
    random = GeneratorState(config.seed)
    last = Path(config.out_dir) / "last.pt"
    if resume and not command and last.exists():  # a resumed run keeps its original command line
        command = load_record(last).get("command", "")
    images, weights = slice_tensors(subjects["train"])
    val = slice_tensors(subjects["val"]) if subjects.get("val") else None
    n = images.shape[0]
    batch = min(config.batch_size, n)

    def build():
        torch.manual_seed(config.seed)
        model = DenoisingUNet(dae_config)
        return model, torch.optim.Adam(model.parameters(), lr=config.lr)

    def epochs(start: int, fabric) -> Iterator:
        while True:
            yield torch.randperm(n, generator=random.generator)

    def epoch(context: StepContext, order: torch.Tensor) -> dict[str, float]:
        total, steps = 0.0, 0
        for start in range(0, n - batch + 1, batch):
            index = order[start:start + batch]
            x, w = images[index], weights[index]
            if config.flip and torch.rand(1, generator=random.generator) < 0.5:
                x, w = x.flip(-1), w.flip(-1)
            if config.site_augment:
                x = site_augment(x, random.generator)
            noise = coarse_noise(tuple(x.shape), dae_config.noise_std, dae_config.noise_res, random.generator)
            loss = masked_mse(context.model(x + noise), x, w)
            context.optimizer.zero_grad(set_to_none=True)
            context.backward(loss)
            context.optimizer.step()
            total += loss.item()
            steps += 1
        return {"mse": total / max(steps, 1)}

    loop = LoopConfig(out_dir=config.out_dir, steps=config.epochs, val_every=1, checkpoint_every=1,
                      max_minutes=config.max_minutes, seed=config.seed, num_threads=config.num_threads,
                      unit="epoch")
    summary = fit(loop, build, epoch, epochs, (lambda model: validation_losses(model, *val)) if val else None,
                  select=lambda metrics: -metrics["val_mse"], record={"train_config": asdict(config), "command": command},
                  resume=resume, progress=progress, desc=f"train {config.kind}", stateful={"generator": random})
    return {"epoch": summary["step"], "train_seconds": summary["train_seconds"], "history": summary["history"],
            "last": str(last)}


def export_dae_weights(run_dir: str | Path, path: str | Path, extra: dict | None = None) -> Path:
    """Write the small shipped file from a run: the UAD export with the DAE's format and score."""
    from .uad import export_weights

    return export_weights(run_dir, path, {"format": "uad_dae", "residual": "positive", **(extra or {})})
