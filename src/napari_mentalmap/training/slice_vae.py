"""Training of the slice VAE, its latent volume models and the tissue segmentation net.

``mentalmap train slicevae`` runs :func:`train_slice_vae` then :func:`fit_latent_models`
and writes ``weights/slice_vae.pt``; ``mentalmap train slicevae --part segnet`` trains the
realism-score segmentation net into ``weights/slice_vae_segnet.pt``. Both loops run on
Lightning Fabric, show tqdm bars and resume from ``<checkpoint dir>/<part>_last.pt``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from ..checkpoints import (
    WEIGHTS_DIR,  # noqa: E402
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


def _fabric():
    from lightning_fabric import Fabric

    fabric = Fabric(accelerator="cpu", devices=1, precision="32-true")
    fabric.launch()
    return fabric


def train_slice_vae(
    config: SliceVAETrainConfig,
    checkpoint_dir: Path,
    out: Path = VAE_WEIGHTS,
    command: str = TRAIN_COMMAND,
) -> dict:
    """Train the VAE on the train split, fit the latent models, write ``out``; returns metrics."""
    from tqdm.auto import tqdm

    torch.manual_seed(config.seed)
    fabric = _fabric()
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    last = checkpoint_dir / "vae_last.pt"
    spec = GridSpec(**config.spec)
    model_config = SliceVAEConfig(size=spec.size, latent_dim=config.latent_dim, channels=tuple(config.channels))
    model = SliceVAE(model_config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.epochs, 1))
    train = _grids("train", config)
    val = _grids("val", config)
    dataset = AugmentedSlices(np.stack([s.image for s in train]), seed=config.seed)
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(config.seed))
    model, optimizer = fabric.setup(model, optimizer)
    loader = fabric.setup_dataloaders(loader)
    state = {"model": model, "optimizer": optimizer, "epoch": 0, "history": [], "seconds": 0.0}
    if last.exists():
        fabric.load(last, state)
        for _ in range(state["epoch"]):
            scheduler.step()
    val_images = torch.from_numpy(np.stack([s.image for s in val]).reshape(-1, 1, spec.size, spec.size))
    bar = tqdm(range(state["epoch"], config.epochs), desc="slice VAE", initial=state["epoch"], total=config.epochs)
    for epoch in bar:
        started = time.perf_counter()
        dataset.epoch = epoch
        beta = config.beta * min(1.0, (epoch + 1) / max(config.kl_warmup_epochs, 1))
        model.train()
        totals = np.zeros(3)
        for images, _ in loader:
            logits, mu, logvar = model(images)
            loss, recon, kl = vae_loss(logits, images, mu, logvar, beta)
            optimizer.zero_grad()
            fabric.backward(loss)
            optimizer.step()
            totals += [loss.item() * len(images), recon.item() * len(images), kl.item() * len(images)]
        scheduler.step()
        totals /= len(dataset)
        val_metrics = evaluate_reconstruction(model.module if hasattr(model, "module") else model, val_images)
        state["epoch"] = epoch + 1
        state["seconds"] += time.perf_counter() - started
        state["history"].append({"epoch": epoch + 1, "loss": float(totals[0]), "recon": float(totals[1]),
                                 "kl": float(totals[2]), "beta": float(beta), **val_metrics})
        bar.set_postfix(loss=f"{totals[0]:.1f}", kl=f"{totals[2]:.1f}", val_mse=f"{val_metrics['val_mse']:.4f}")
        fabric.save(last, state)
    raw = model.module if hasattr(model, "module") else model
    raw.eval()
    metrics = {
        **state["history"][-1],
        "train_seconds": round(state["seconds"], 1),
    }
    models = fit_latent_models(raw, train, config)
    metrics["grid_mm"] = grid_spacing_mm(train)
    payload = {
        "model": raw.state_dict(),
        "model_config": model_config.to_dict(),
        "train_config": {**asdict(config), "channels": list(config.channels)},
        "spec": spec.to_dict(),
        "split": {"train": _subjects("train", config), "val": _subjects("val", config), "test": _subjects("test", config)},
        "metrics": metrics,
        "history": state["history"],
        "command": command,
        **models,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_record(out, payload)
    (checkpoint_dir / "vae_metrics.json").write_text(json.dumps(metrics, indent=2))
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


def train_segnet(
    config: SliceVAETrainConfig,
    checkpoint_dir: Path,
    out: Path = SEGNET_WEIGHTS,
    command: str = SEGNET_COMMAND,
) -> dict:
    """Train :class:`TissueSegNet` on train-split slices with collapsed parcellation labels."""
    from tqdm.auto import tqdm

    torch.manual_seed(config.seed)
    fabric = _fabric()
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    last = checkpoint_dir / "segnet_last.pt"
    spec = GridSpec(**config.spec)
    train, val = _grids("train", config), _grids("val", config)
    train_labels = np.stack([load_subject_tissue(s.subject, spec) for s in train])
    val_labels = np.stack([load_subject_tissue(s.subject, spec) for s in val])
    dataset = AugmentedSlices(np.stack([s.image for s in train]), train_labels, seed=config.seed)
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(config.seed))
    model = TissueSegNet(width=config.seg_width)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    model, optimizer = fabric.setup(model, optimizer)
    loader = fabric.setup_dataloaders(loader)
    state = {"model": model, "optimizer": optimizer, "epoch": 0, "history": [], "seconds": 0.0}
    if last.exists():
        fabric.load(last, state)
    val_images = np.stack([s.image for s in val])
    bar = tqdm(range(state["epoch"], config.seg_epochs), desc="tissue seg net", initial=state["epoch"],
               total=config.seg_epochs)
    for epoch in bar:
        started = time.perf_counter()
        dataset.epoch = epoch
        model.train()
        total = 0.0
        for images, labels in loader:
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            fabric.backward(loss)
            optimizer.step()
            total += loss.item() * len(images)
        raw = model.module if hasattr(model, "module") else model
        predicted = segment_volumes(raw, val_images)
        dice = mean_class_dice(predicted, val_labels)
        state["epoch"] = epoch + 1
        state["seconds"] += time.perf_counter() - started
        state["history"].append({"epoch": epoch + 1, "loss": float(total / len(dataset)), "val_dice": dice})
        bar.set_postfix(loss=f"{total / len(dataset):.3f}", val_dice=f"{dice:.3f}")
        fabric.save(last, state)
    raw = model.module if hasattr(model, "module") else model
    metrics = {**state["history"][-1], "train_seconds": round(state["seconds"], 1)}
    payload = {
        "model": raw.state_dict(),
        "width": config.seg_width,
        "classes": list(TISSUE_CLASSES),
        "spec": spec.to_dict(),
        "split": {"train": _subjects("train", config), "val": _subjects("val", config)},
        "metrics": metrics,
        "history": state["history"],
        "command": command,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_record(out, payload)
    return metrics
