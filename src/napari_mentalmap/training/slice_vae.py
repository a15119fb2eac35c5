"""Training of the slice VAE, its latent volume models and the tissue segmentation net.

``mentalmap train slicevae`` runs :func:`train_slice_vae` then :func:`fit_latent_models`
and writes ``weights/slice_vae.pt``; ``mentalmap train slicevae --part segnet`` trains the
realism-score segmentation net into ``weights/slice_vae_segnet.pt``. Both run on
:func:`.loop.fit` (one unit = one epoch) and resume from ``<checkpoint dir>/<part>/last.pt``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from ..checkpoints import (
    WEIGHTS_DIR,  # noqa: E402
    load_record,
    save_record,
)
from ..data.splits import SPLITS
from ..data.subjects import SubjectGrid, load_subject_grid
from ..data.tissue import load_subject_tissue
from ..inference.latent import segment_volumes
from ..io.preprocess import GridSpec
from ..metrics import mean_class_dice
from ..models.slice_vae import (
    TISSUE_CLASSES,
    CoherentPPCA,
    PerSliceGaussian,
    SliceVAE,
    SliceVAEConfig,
    TissueSegNet,
    vae_loss,
)
from .loop import GeneratorState, LoopConfig, StepContext, fit

VAE_WEIGHTS = WEIGHTS_DIR / "slice_vae.pt"
SEGNET_WEIGHTS = WEIGHTS_DIR / "slice_vae_segnet.pt"
TRAIN_COMMAND = "mentalmap train slicevae"
SEGNET_COMMAND = "mentalmap train slicevae --part segnet"


@dataclass
class SliceVAETrainConfig:
    """Hyper-parameters of one training run (stored in the weights file)."""

    epochs: int = 60
    batch_size: int = 32
    lr: float = 2e-3
    beta: float = 1.0
    kl_warmup_epochs: int = 10
    ppca_rank: int = 12
    shrinkage: float = 0.1
    seed: int = 0
    channels: tuple[int, ...] = (8, 16, 32, 64)
    latent_dim: int = 32
    seg_epochs: int = 30
    seg_width: int = 8
    spec: dict = field(default_factory=lambda: GridSpec().to_dict())
    subjects_limit: int | None = None  # tests: use only the first few subjects of each split


class AugmentedSlices(Dataset):
    """Slices (and optional tissue maps) of some subjects with flip / shift / gamma augmentation."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None = None, augment: bool = True, seed: int = 0):
        self.images = torch.from_numpy(images.reshape(-1, *images.shape[-2:]).astype(np.float32))
        self.labels = None if labels is None else torch.from_numpy(labels.reshape(-1, *labels.shape[-2:]).astype(np.int64))
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int):
        image = self.images[index]
        label = self.labels[index] if self.labels is not None else torch.zeros((), dtype=torch.int64)
        if self.augment:
            g = torch.Generator().manual_seed((self.seed * 7919 + self.epoch) * 1_000_003 + index)
            if torch.rand(1, generator=g) < 0.5:
                image, label = image.flip(-1), (label.flip(-1) if label.dim() else label)
            shift = [int(s) for s in torch.randint(-2, 3, (2,), generator=g)]
            image = torch.roll(image, shifts=shift, dims=(-2, -1))
            if label.dim():
                label = torch.roll(label, shifts=shift, dims=(-2, -1))
            image = image.clamp(min=0) ** float(0.9 + 0.2 * torch.rand(1, generator=g))
        return image.unsqueeze(0), label


def _subjects(split: str, config: SliceVAETrainConfig) -> list[str]:
    names = SPLITS[f"nichart_{split}"]
    return names[: config.subjects_limit] if config.subjects_limit else names


def _grids(split: str, config: SliceVAETrainConfig) -> list[SubjectGrid]:
    spec = GridSpec(**config.spec)
    return [load_subject_grid(s, "t1", spec) for s in _subjects(split, config)]


def _cosine_lr(config: SliceVAETrainConfig, epoch: int, epochs: int) -> float:
    """Cosine annealing from ``config.lr`` to 0 over ``epochs`` (as ``CosineAnnealingLR``)."""
    return config.lr * 0.5 * (1 + math.cos(math.pi * epoch / max(epochs, 1)))


def _fit_part(part: str, epochs: int, config: SliceVAETrainConfig, checkpoint_dir: Path,
              dataset: AugmentedSlices, build, epoch, validate, select, command: str, progress: bool):
    """Run one part's epochs on :func:`.loop.fit` (run folder ``checkpoint_dir/part``);
    returns the final model (from ``last.pt``, in eval mode), its metrics and the history."""
    shuffle = GeneratorState(config.seed)

    def loaders(start: int, fabric) -> Iterator:
        loader = fabric.setup_dataloaders(DataLoader(dataset, batch_size=config.batch_size, shuffle=True,
                                                     generator=shuffle.generator))
        while True:
            yield loader

    loop = LoopConfig(out_dir=str(Path(checkpoint_dir) / part), steps=epochs, val_every=1, checkpoint_every=1,
                      seed=config.seed, unit="epoch")
    summary = fit(loop, build, epoch, loaders, validate, select=select, progress=progress, desc=f"train slicevae {part}",
                  record={"train_config": asdict(config), "command": command}, stateful={"shuffle": shuffle})
    model, _ = build()
    model.load_state_dict(load_record(Path(loop.out_dir) / "last.pt")["state_dict"])
    model.eval()
    metrics = {**summary["history"][-1], "train_seconds": round(summary["train_seconds"], 1)}
    return model, metrics, summary["history"]


def train_slice_vae(config: SliceVAETrainConfig, checkpoint_dir: Path, out: Path = VAE_WEIGHTS,
                    command: str = TRAIN_COMMAND, progress: bool = True) -> dict:
    """Train the VAE on the train split (:func:`.loop.fit`, one unit = one epoch, run folder
    ``checkpoint_dir/vae``), fit the latent models, write ``out``; returns metrics."""
    spec = GridSpec(**config.spec)
    model_config = SliceVAEConfig(size=spec.size, latent_dim=config.latent_dim, channels=tuple(config.channels))
    train = _grids("train", config)
    val = _grids("val", config)
    dataset = AugmentedSlices(np.stack([s.image for s in train]), seed=config.seed)
    val_images = torch.from_numpy(np.stack([s.image for s in val]).reshape(-1, 1, spec.size, spec.size))

    def build():
        model = SliceVAE(model_config)
        return model, torch.optim.Adam(model.parameters(), lr=config.lr)

    def epoch(context: StepContext, loader) -> dict[str, float]:
        dataset.epoch = context.index
        for group in context.optimizer.param_groups:
            group["lr"] = _cosine_lr(config, context.index, config.epochs)
        beta = config.beta * min(1.0, (context.index + 1) / max(config.kl_warmup_epochs, 1))
        totals = np.zeros(3)
        for images, _ in loader:
            logits, mu, logvar = context.model(images)
            loss, recon, kl = vae_loss(logits, images, mu, logvar, beta)
            context.optimizer.zero_grad()
            context.backward(loss)
            context.optimizer.step()
            totals += [loss.item() * len(images), recon.item() * len(images), kl.item() * len(images)]
        totals /= len(dataset)
        return {"loss": totals[0], "recon": totals[1], "kl": totals[2], "beta": beta}

    model, metrics, history = _fit_part("vae", config.epochs, config, checkpoint_dir, dataset, build, epoch,
                                        lambda model: evaluate_reconstruction(model, val_images),
                                        lambda m: -m["val_mse"], command, progress)
    models = fit_latent_models(model, train, config)
    metrics["grid_mm"] = grid_spacing_mm(train)
    payload = {
        "model": model.state_dict(),
        "model_config": model_config.to_dict(),
        "train_config": {**asdict(config), "channels": list(config.channels)},
        "spec": spec.to_dict(),
        "split": {"train": _subjects("train", config), "val": _subjects("val", config), "test": _subjects("test", config)},
        "metrics": metrics,
        "history": history,
        "command": command,
        **models,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_record(out, payload)
    (Path(checkpoint_dir) / "vae_metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def grid_spacing_mm(subjects: list[SubjectGrid]) -> list[float]:
    """Mean physical spacing (mm) of the model grid's (pose, row, column) axes over ``subjects``."""
    from ..data.subjects import subject_files
    from ..io.nifti import read_volume

    spacings = []
    for s in subjects:
        spacing = np.asarray(read_volume(subject_files(s.subject, "t1")["image"]).spacing, dtype=float)
        spacings.append(np.asarray(s.mapping.step) * spacing)
    return [round(float(v), 3) for v in np.mean(spacings, 0)]


@torch.inference_mode()
def encode_volumes(model: SliceVAE, volumes: np.ndarray, batch_size: int = 96) -> torch.Tensor:
    """Latent means of ``(N, P, S, S)`` volumes, slice by slice -> ``(N, P, D)``."""
    model.eval()
    volumes = torch.as_tensor(np.asarray(volumes, dtype=np.float32))
    n, p = volumes.shape[:2]
    flat = volumes.reshape(n * p, 1, *volumes.shape[-2:])
    mus = [model.encode(flat[i : i + batch_size])[0] for i in range(0, len(flat), batch_size)]
    return torch.cat(mus).reshape(n, p, -1)


def fit_latent_models(model: SliceVAE, subjects: list[SubjectGrid], config: SliceVAETrainConfig) -> dict:
    """Encode the training subjects and fit both latent volume models (state dicts)."""
    latents = encode_volumes(model, np.stack([s.image for s in subjects]))
    per_slice = PerSliceGaussian.fit(latents, shrinkage=config.shrinkage)
    ppca = CoherentPPCA.fit(latents, rank=min(config.ppca_rank, len(subjects) - 1))
    return {"train_latents": latents.float(), "per_slice": per_slice.state_dict(), "ppca": ppca.state_dict()}


@torch.inference_mode()
def evaluate_reconstruction(model: SliceVAE, images: torch.Tensor, batch_size: int = 128) -> dict:
    """Mean squared error of the reconstruction from the latent mean (validation metric)."""
    model.eval()
    errors = []
    for i in range(0, len(images), batch_size):
        batch = images[i : i + batch_size]
        mu, _ = model.encode(batch)
        errors.append(((model.decode(mu) - batch) ** 2).flatten(1).mean(1))
    return {"val_mse": float(torch.cat(errors).mean())}


def train_segnet(config: SliceVAETrainConfig, checkpoint_dir: Path, out: Path = SEGNET_WEIGHTS,
                 command: str = SEGNET_COMMAND, progress: bool = True) -> dict:
    """Train :class:`TissueSegNet` on train-split slices with collapsed parcellation labels
    (:func:`.loop.fit`, one unit = one epoch, run folder ``checkpoint_dir/segnet``)."""
    spec = GridSpec(**config.spec)
    train, val = _grids("train", config), _grids("val", config)
    train_labels = np.stack([load_subject_tissue(s.subject, spec) for s in train])
    val_labels = np.stack([load_subject_tissue(s.subject, spec) for s in val])
    dataset = AugmentedSlices(np.stack([s.image for s in train]), train_labels, seed=config.seed)
    val_images = np.stack([s.image for s in val])

    def build():
        model = TissueSegNet(width=config.seg_width)
        return model, torch.optim.Adam(model.parameters(), lr=config.lr)

    def epoch(context: StepContext, loader) -> dict[str, float]:
        dataset.epoch = context.index
        total = 0.0
        for images, labels in loader:
            loss = F.cross_entropy(context.model(images), labels)
            context.optimizer.zero_grad()
            context.backward(loss)
            context.optimizer.step()
            total += loss.item() * len(images)
        return {"loss": total / len(dataset)}

    model, metrics, history = _fit_part(
        "segnet", config.seg_epochs, config, checkpoint_dir, dataset, build, epoch,
        lambda model: {"val_dice": mean_class_dice(segment_volumes(model, val_images), val_labels)},
        lambda m: m["val_dice"], command, progress)
    payload = {
        "model": model.state_dict(),
        "width": config.seg_width,
        "classes": list(TISSUE_CLASSES),
        "spec": spec.to_dict(),
        "split": {"train": _subjects("train", config), "val": _subjects("val", config)},
        "metrics": metrics,
        "history": history,
        "command": command,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_record(out, payload)
    return metrics
