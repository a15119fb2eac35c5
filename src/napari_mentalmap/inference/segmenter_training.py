"""Train the user's lesion segmenter on the scans they labelled (a job: progress, ETA, Cancel).

It lives in ``inference`` because the user's model learns at use time: an interactive job
(minutes, in the dock's worker or ``mentalmap train segmenter``), not a ``training.loop.fit``
run on the shared data - no Lightning Fabric, no checkpoints to resume, the model its only output.

Before any step, the threshold path is set to the intensity threshold with the best mean Dice
on the training scans (what the user could tune by hand); the U-Net then learns the correction
from crops of axial slices, most of them centred on a labelled voxel, with Dice + BCE.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass

import numpy as np

from .segment import SegmenterInputError, SegmenterInputs
from .segmenter_augment import (
    AUGMENTATIONS,
    DEFAULT_AUGMENTATION,
    FlowBank,
    apply_classical,
    build_flow_bank,
    classical_transform,
    missing_dependency,
    warp,
)

Progress = tuple[int, int, str]
THRESHOLD_GRID = np.round(np.arange(0.40, 1.60001, 0.01), 2)


@dataclass(frozen=True)
class SegmenterTrainConfig:
    """How the segmenter trains (defaults: the dock's)."""

    steps: int = 300
    batch_size: int = 8
    crop: int = 96
    learning_rate: float = 2e-3
    augmentation: str = DEFAULT_AUGMENTATION
    base_channels: int = 8
    lesion_fraction: float = 0.6
    train_threshold: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {self.augmentation!r}; expected one of {', '.join(AUGMENTATIONS)}")
        if self.steps < 1 or self.batch_size < 1 or self.crop < 16:
            raise ValueError("steps and batch size must be >= 1 and the crop >= 16 voxels")


@dataclass
class TrainingScan:
    """One labelled scan: the segmenter's inputs and the lesion mask, on the image's grid."""

    inputs: SegmenterInputs
    lesions: np.ndarray
    name: str = ""


def threshold_dice(scans: list[TrainingScan], grid: np.ndarray = THRESHOLD_GRID) -> np.ndarray:
    """Mean (over scans) voxel Dice of ``flair * eroded_mask > t`` for every ``t`` in ``grid``."""
    dices = []
    for scan in scans:
        values = (scan.inputs.flair * scan.inputs.eroded)[scan.inputs.mask]
        truth = scan.lesions[scan.inputs.mask]
        order = np.searchsorted(grid, values, side="left")  # values > grid[k] for k < order
        above = np.bincount(order, minlength=len(grid) + 1)[::-1].cumsum()[::-1][1:]
        hits = np.bincount(order[truth], minlength=len(grid) + 1)[::-1].cumsum()[::-1][1:]
        dices.append(2 * hits / np.maximum(above + truth.sum(), 1))
    return np.mean(dices, axis=0)


def best_threshold(scans: list[TrainingScan], grid: np.ndarray = THRESHOLD_GRID) -> float:
    """The intensity threshold with the best mean Dice on ``scans``."""
    return float(grid[int(np.argmax(threshold_dice(scans, grid)))])


class CropSampler:
    """Random training crops ``(B, 4, crop, crop)`` with their labels, augmented as configured."""

    def __init__(self, scans: list[TrainingScan], config: SegmenterTrainConfig, flows: FlowBank | None = None) -> None:
        self.scans, self.config, self.flows = scans, config, flows
        self.rng = np.random.default_rng(config.seed)
        self.lesion_voxels = [np.argwhere(scan.lesions) for scan in scans]
        self.brain_slices = [np.flatnonzero(scan.inputs.mask.any(axis=(1, 2))) for scan in scans]
        self.transform = classical_transform(config.seed) if config.augmentation == "classical" else None

    def _centre(self, index: int) -> tuple[int, int, int]:
        scan, rng = self.scans[index], self.rng
        if len(self.lesion_voxels[index]) and rng.random() < self.config.lesion_fraction:
            z, y, x = self.lesion_voxels[index][rng.integers(len(self.lesion_voxels[index]))]
            jitter = rng.integers(-self.config.crop // 4, self.config.crop // 4 + 1, size=2)
            return int(z), int(y + jitter[0]), int(x + jitter[1])
        z = int(rng.choice(self.brain_slices[index]))
        ys, xs = np.nonzero(scan.inputs.mask[z])
        k = rng.integers(len(ys))
        return z, int(ys[k]), int(xs[k])

    def _crop(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        scan, half, size = self.scans[index], self.config.crop // 2, self.config.crop
        z, y, x = self._centre(index)
        if self.flows is not None:  # warp the slice's brain box, then crop inside it
            rows, cols = scan.inputs.box[1:]
            channels = scan.inputs.slices([z])[0]
            label = scan.lesions[z, rows, cols]
            field = self.flows.field_for(index, z, self.rng)
            if field is not None:
                channels, label = warp(channels, label, field * self.rng.uniform(0.0, 1.0))
            y, x = y - rows.start, x - cols.start
        else:
            channels, label = None, scan.lesions[z]
        height, width = label.shape
        top, left = y - half, x - half
        src_r = slice(max(top, 0), min(top + size, height))
        src_c = slice(max(left, 0), min(left + size, width))
        dst_r = slice(src_r.start - top, src_r.stop - top)
        dst_c = slice(src_c.start - left, src_c.stop - left)
        out = np.zeros((4, size, size), np.float32)
        lesions = np.zeros((size, size), bool)
        if channels is None:
            out[:, dst_r, dst_c] = scan.inputs.slices([z], box=(src_r, src_c))[0]
        else:
            out[:, dst_r, dst_c] = channels[:, src_r, src_c]
        lesions[dst_r, dst_c] = label[src_r, src_c]
        if self.transform is not None:
            out, lesions = apply_classical(self.transform, out, lesions)
        return out, lesions

    def batch(self) -> tuple[np.ndarray, np.ndarray]:
        """One batch: channels ``(B, 4, crop, crop)`` and labels ``(B, 1, crop, crop)``."""
        items = [self._crop(int(self.rng.integers(len(self.scans)))) for _ in range(self.config.batch_size)]
        return (np.stack([c for c, _ in items]).astype(np.float32),
                np.stack([lab for _, lab in items])[:, None].astype(np.float32))


def _loss(logits, target):
    import torch.nn.functional as F

    probability = logits.sigmoid()
    overlap = (probability * target).sum()
    soft_dice = 1 - (2 * overlap + 1) / (probability.sum() + target.sum() + 1)
    return soft_dice + F.binary_cross_entropy_with_logits(logits, target)


def train_segmenter_job(scans: list[TrainingScan], config: SegmenterTrainConfig = SegmenterTrainConfig(),
                        ) -> Generator[Progress, None, tuple[object, dict]]:
    """Train a segmenter on ``scans``; yields ``(done, total, message with ETA)``; returns the
    model (eval mode, CPU) and its card. Closing the generator stops it (Cancel)."""
    import torch

    from ..models.segmenter import LesionSegmenter, SegmenterConfig, channels_last

    if not scans:
        raise SegmenterInputError("no labelled scan to train on")
    for scan in scans:
        if not scan.lesions.any():
            raise SegmenterInputError(f"{scan.name or 'a scan'}: no voxel is labelled; paint the lesions first")
    problem = missing_dependency(config.augmentation)
    if problem is not None:
        raise SegmenterInputError(problem)
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    threshold = best_threshold(scans)
    flows = None
    if config.augmentation == "learned":
        yield 0, config.steps, "registering the training scans (learned deformations)"
        flows = build_flow_bank([s.inputs.flair for s in scans], [s.inputs.box for s in scans])
    model_config = SegmenterConfig(base_channels=config.base_channels, equivariant=config.augmentation == "c4",
                                   initial_threshold=threshold)
    with torch.inference_mode(False):  # parameters must be ordinary tensors, whatever the thread's state
        model = channels_last(LesionSegmenter(model_config))
    if not config.train_threshold:  # keep the threshold path where the training scans put it
        model.log_scale.requires_grad_(False)
        model.threshold.requires_grad_(False)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    sampler = CropSampler(scans, config, flows)
    model.train()
    losses = []
    loop_start = time.perf_counter()
    for step in range(config.steps):
        factor = 0.5 * (1 + math.cos(math.pi * step / config.steps))
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate * factor
        channels, labels = sampler.batch()
        with torch.inference_mode(False), torch.enable_grad():  # whatever state the thread is in
            x = torch.from_numpy(channels).contiguous(memory_format=torch.channels_last)
            loss = _loss(model(x), torch.from_numpy(labels))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        losses.append(loss.item())
        # a report (a Cancel point) after every step: one step is 0.1-0.5 s on 2 CPU cores
        elapsed = time.perf_counter() - loop_start
        eta = elapsed / (step + 1) * (config.steps - step - 1)
        yield step + 1, config.steps, f"training step {step + 1}/{config.steps}, loss {np.mean(losses[-10:]):.3f}, ETA {eta:.0f} s"
    model.eval()
    card = {
        "n_scans": len(scans), "scans": [s.name for s in scans],
        "lesion_voxels": [int(s.lesions.sum()) for s in scans],
        "augmentation": config.augmentation, "train_config": asdict(config),
        "initial_threshold": threshold, "seconds": round(time.perf_counter() - start, 1),
        "final_loss": round(float(np.mean(losses[-20:])), 4),
    }
    return model, card
