"""Denoising autoencoder for unsupervised anomaly detection (Kascenas et al., MIDL 2022).

A small 2-D U-Net on axial FLAIR slices of the model grid. During training the clean slice
``x`` is corrupted by *coarse* Gaussian noise (drawn at ``noise_res`` x ``noise_res`` pixels
and upsampled bilinearly to the slice size, ``noise_std`` in normalised intensity units) and
the network is trained to return the clean slice. At inference the clean input is passed
through unchanged (no noise): anomalies, which the network never saw, are "denoised" towards
healthy tissue, so the residual ``x - denoise(x)`` is the anomaly score.

The interface matches :class:`.uad_vae.UADVAE` where the anomaly maps need it:
``config.kind``, ``config.ndim`` (2), ``config.input_shape`` and ``reconstruct(x)``.
Pure torch; spatial sizes must be divisible by ``2 ** (len(channels) - 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from .config import DictConfig, check_kind_and_shapes
from .kinds import DAE_KINDS


@dataclass
class DAEConfig(DictConfig):
    """Architecture and corruption of one denoising autoencoder (stored with its weights)."""

    kind: str = "dae2d"
    input_shape: tuple[int, ...] = (64, 64)
    channels: tuple[int, ...] = (16, 32, 64, 128)
    noise_std: float = 0.1
    noise_res: int = 8
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_kind_and_shapes(self, DAE_KINDS, "DAE")
        if len(self.input_shape) != 2:
            raise ValueError(f"{self.kind} needs a 2-D input_shape, got {self.input_shape}")
        if len(self.channels) < 2:
            raise ValueError("channels must list at least 2 U-Net widths")
        factor = 2 ** (len(self.channels) - 1)
        if any(s % factor for s in self.input_shape):
            raise ValueError(f"input_shape {self.input_shape} must be divisible by {factor}")
        if self.noise_std < 0 or self.noise_res < 1:
            raise ValueError("noise_std must be >= 0 and noise_res >= 1")

    @property
    def ndim(self) -> int:
        return 2



def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2),
        nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2),
    )


class DenoisingUNet(nn.Module):
    """2-D U-Net: ``forward(x)`` returns the denoised slice, same shape as ``x`` ``(B, 1, H, W)``."""

    def __init__(self, config: DAEConfig):
        super().__init__()
        self.config = config
        widths = config.channels
        self.down = nn.ModuleList([_block(1, widths[0])] + [_block(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(b, a, 2, stride=2) for a, b in zip(widths[:-1], widths[1:], strict=True)])
        self.merge = nn.ModuleList([_block(2 * a, a) for a in widths[:-1]])
        self.head = nn.Conv2d(widths[0], 1, 1)

    def _check(self, x: torch.Tensor) -> None:
        expected = (1, *self.config.input_shape)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"{self.config.kind} expects (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        skips = []
        h = x
        for level, block in enumerate(self.down):
            if level:
                h = F.max_pool2d(h, 2)
            h = block(h)
            skips.append(h)
        for level in reversed(range(len(self.up))):
            h = self.up[level](h)
            h = self.merge[level](torch.cat([h, skips[level]], dim=1))
        return self.head(h)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The denoised clean input (no noise added), clipped to [0, 1]: used for anomaly maps."""
        return self.forward(x).clamp(0.0, 1.0)


def coarse_noise(shape: tuple[int, ...], std: float, resolution: int,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """Gaussian noise drawn at ``resolution`` x ``resolution`` and upsampled (bilinear) to ``shape``
    ``(B, 1, H, W)``: the coarse noise of Kascenas et al."""
    batch, channels, height, width = shape
    low = torch.randn((batch, channels, resolution, resolution), generator=generator) * std
    return F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False).to(device)


def default_dae_config(size: int = 64, noise_std: float = 0.1) -> DAEConfig:
    """The CPU-sized U-Net on a ``size`` x ``size`` grid, noise at 1/8 of the slice size."""
    return DAEConfig(input_shape=(size, size), channels=(16, 32, 64, 128), noise_std=noise_std,
                     noise_res=max(1, size // 8))
