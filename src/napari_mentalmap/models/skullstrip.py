"""Learned brain extraction for T1 with or without skull (pure torch + numpy).

A small 2.5-D U-Net segments brain vs. not on axial slices. Every volume goes through
the same fixed preprocessing (:func:`head_grid`): a rough head mask gives a square
in-plane field of view (in mm) around the head and robust intensity percentiles; the
volume is resampled to ``size`` x ``size`` pixels in-plane and to ``slice_mm`` axially,
and each axial slice is fed with its two neighbours as three channels. The brain
probability is resampled back to the input grid, thresholded at 0.5 and cleaned
(largest 3-D component, hole filling).

Arrays are in the canonical orientation of :mod:`napari_mentalmap.io.nifti`
(axis 0 = axial, inferior -> superior), ``spacing`` in mm in the same axis order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from skimage import filters
from torch import nn

from ..io.masks import largest_component_filled
from .config import DictConfig


@dataclass(frozen=True)
class SkullStripConfig(DictConfig):
    """Network width/depth and the fixed input grid of the brain-extraction model."""

    size: int = 96
    """In-plane pixels of the head grid (square)."""
    slice_mm: float = 2.0
    """Axial spacing of the head grid (mm)."""
    margin: float = 0.05
    """Extra field of view around the head, as a fraction of its in-plane extent."""
    base: int = 12
    """Channels of the U-Net's first level (doubled at each level)."""
    depth: int = 3
    """Down-sampling levels of the U-Net."""
    low_percentile: float = 1.0
    """Head intensity percentile mapped to 0."""
    high_percentile: float = 99.0
    """Head intensity percentile mapped to 1."""



DEFAULT_CONFIG = SkullStripConfig()
"""The grid and network of the shipped weights (immutable, so safe as a default)."""


@dataclass
class HeadGrid:
    """A volume resampled to the model grid plus the map back to its voxels.

    Grid index ``(p, r, c)`` sits at input voxel ``start + step * (p, r, c)``.
    """

    image: np.ndarray  # (n_slices, size, size) float32, normalised intensities
    start: np.ndarray  # (3,) input voxel coordinate of grid index (0, 0, 0)
    step: np.ndarray  # (3,) input voxels per grid step
    input_shape: tuple[int, int, int]

    def to_grid(self, array: np.ndarray, order: int = 1) -> np.ndarray:
        """Resample another array on the input grid (e.g. a label map) onto this grid."""
        return ndimage.map_coordinates(
            np.asarray(array, dtype=np.float32), self._coords(), order=order, mode="constant", cval=0.0
        ).reshape(self.image.shape)

    def to_input(self, grid_array: np.ndarray, order: int = 1) -> np.ndarray:
        """Resample a grid array (e.g. a probability map) back onto the input voxels."""
        coords = [
            (np.arange(n, dtype=np.float32) - s) / st
            for n, s, st in zip(self.input_shape, self.start, self.step, strict=True)
        ]
        mesh = np.meshgrid(*coords, indexing="ij")
        return ndimage.map_coordinates(
            np.asarray(grid_array, dtype=np.float32), mesh, order=order, mode="nearest"
        )

    def _coords(self) -> list[np.ndarray]:
        axes = [s + st * np.arange(n, dtype=np.float32)
                for s, st, n in zip(self.start, self.step, self.image.shape, strict=True)]
        return np.meshgrid(*axes, indexing="ij")


def head_mask(volume: np.ndarray) -> np.ndarray:
    """A rough head (or brain, if skull-stripped) mask: above half the Otsu threshold."""
    volume = np.nan_to_num(np.asarray(volume, dtype=np.float32))
    background = background_value(volume)
    sample = volume[volume != background]
    if sample.size < 100:
        raise ValueError("the volume is (almost) constant: no head to find")
    sample = sample[:: max(1, sample.size // 300_000)]
    threshold = filters.threshold_otsu(sample)
    return volume > background + 0.5 * (threshold - background)


def background_value(volume: np.ndarray) -> float:
    """The most common intensity (the exact background of stripped or padded volumes)."""
    values, counts = np.unique(np.asarray(volume)[::2, ::2, ::2], return_counts=True)
    return float(values[counts.argmax()])


def head_grid(volume: np.ndarray, spacing, config: SkullStripConfig = DEFAULT_CONFIG) -> HeadGrid:
    """Resample ``volume`` to the model grid around its head; normalise intensities."""
    volume = np.nan_to_num(np.asarray(volume, dtype=np.float32))
    if volume.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {volume.shape}")
    spacing = np.asarray(spacing, dtype=np.float64)
    head = head_mask(volume)
    if head.sum() < 100:
        raise ValueError("no head-like foreground found in the volume")
    lo_hi = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        profile = head.sum(axis=other).astype(np.float64)
        cumulative = np.cumsum(profile) / profile.sum()
        # robust extent: ignore the outermost 0.2 % of head voxels (noise specks)
        lo_hi.append((float(np.searchsorted(cumulative, 0.002)), float(np.searchsorted(cumulative, 0.998))))
    (z_lo, z_hi), (y_lo, y_hi), (x_lo, x_hi) = lo_hi
    side_mm = max((y_hi - y_lo + 1) * spacing[1], (x_hi - x_lo + 1) * spacing[2]) * (1 + 2 * config.margin)
    pixel_mm = side_mm / config.size
    step = np.array([config.slice_mm / spacing[0], pixel_mm / spacing[1], pixel_mm / spacing[2]])
    n_slices = max(3, int(np.ceil((z_hi - z_lo + 1) / step[0])) + 2)
    centre = np.array([(z_lo + z_hi) / 2, (y_lo + y_hi) / 2, (x_lo + x_hi) / 2])
    start = centre - step * (np.array([n_slices, config.size, config.size]) - 1) / 2
    values = volume[head]
    values = values[:: max(1, values.size // 500_000)]
    low, high = np.percentile(values, [config.low_percentile, config.high_percentile])
    scale = 1.0 / max(float(high - low), 1e-6)
    grid = HeadGrid(np.zeros((n_slices, config.size, config.size), np.float32), start, step,
                    tuple(int(s) for s in volume.shape))
    image = grid.to_grid(volume, order=1)
    background = background_value(volume)
    outside = grid.to_grid(np.ones_like(volume), order=0) < 0.5
    image = np.where(outside, background, image)
    grid.image = np.clip((image - low) * scale, -0.5, 2.0).astype(np.float32)
    return grid


def slice_stack(image: np.ndarray) -> np.ndarray:
    """(n, H, W) -> (n, 3, H, W): each slice with its inferior and superior neighbours."""
    padded = np.concatenate([image[:1], image, image[-1:]], axis=0)
    return np.stack([padded[:-2], padded[1:-1], padded[2:]], axis=1)


class _Block(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )


class SkullStripUNet(nn.Module):
    """2-D U-Net: (B, 3, H, W) neighbouring axial slices -> (B, 1, H, W) brain logits."""

    def __init__(self, base: int = 12, depth: int = 3, in_channels: int = 3):
        super().__init__()
        widths = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([_Block(in_channels, widths[0])])
        self.down.extend(_Block(widths[i], widths[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                for i in reversed(range(depth)))
        self.merge = nn.ModuleList(_Block(2 * widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], 1, 1)
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2**self.depth or x.shape[-2] % 2**self.depth:
            raise ValueError(f"height and width must be multiples of {2**self.depth}, got {tuple(x.shape)}")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(self.up, self.merge, strict=True):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


def postprocess(mask: np.ndarray) -> np.ndarray:
    """Largest 3-D connected component, then hole filling (3-D and per axial slice)."""
    return largest_component_filled(mask)


def load_model(weights=None, device: str = "cpu") -> tuple[SkullStripUNet, SkullStripConfig]:
    """The network and its config from a checkpoint (default: the shipped weights)."""
    from ..checkpoints import load_record, load_state, resolve

    path = resolve(weights, "skullstrip")
    checkpoint = load_record(path, "skullstrip", device)
    config = SkullStripConfig(**checkpoint["config"])
    model = SkullStripUNet(base=config.base, depth=config.depth)
    load_state(model, checkpoint, path)
    return model.to(device).eval(), config


@torch.no_grad()
def predict_grid(model: SkullStripUNet, image: np.ndarray, device: str = "cpu", batch: int = 32,
                 flip_average: bool = False) -> np.ndarray:
    """Brain probability on the model grid (optionally averaged with the left-right flip)."""
    stack = torch.from_numpy(slice_stack(image))
    out = []
    for first in range(0, len(stack), batch):
        x = stack[first:first + batch].to(device)
        logits = model(x)
        if flip_average:
            logits = (logits + model(x.flip(-1)).flip(-1)) / 2
        out.append(torch.sigmoid(logits)[:, 0].cpu())
    return torch.cat(out).numpy()


def learned_brain_mask(volume: np.ndarray, spacing, weights=None, device: str = "cpu",
                       flip_average: bool = False) -> np.ndarray:
    """Boolean brain mask of a T1 volume (with or without skull) on its own voxel grid.

    ``weights`` defaults to the shipped ``weights/skullstrip.pt``; raises
    ``FileNotFoundError`` when they are missing. ``flip_average`` also runs the
    left-right flipped volume (twice the time, +0.002 Dice on the NiChart test split).
    """
    model, config = load_model(weights, device)
    grid = head_grid(volume, spacing, config)
    probability = predict_grid(model, grid.image, device, flip_average=flip_average)
    mask = grid.to_input(probability, order=1) > 0.5
    return postprocess(mask)
