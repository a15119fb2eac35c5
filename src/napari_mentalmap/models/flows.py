"""Conditional RealNVP: a multi-scale normalising flow for 2-D slices, conditioned on pose.

Every layer maps ``(x, pose_features) -> (y, logdet)`` forward and has an exact inverse.
The pose enters each coupling's scale/shift network as an extra input (one-hot slice
index as in the paper, or a continuous encoding of the slice position in [0, 1]); for
a spatially constant input this is exactly a learned per-pose bias after the first
convolution, which is how it is implemented.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import DictConfig


@dataclass
class FlowConfig(DictConfig):
    """Architecture of :class:`ConditionalRealNVP`."""

    image_size: int = 64
    n_poses: int = 48
    pose_encoding: str = "onehot"  # "onehot" or "continuous"
    n_scales: int = 3
    couplings_per_stage: int = 3
    final_couplings: int = 4
    width: int = 32
    res_blocks: int = 2
    logit_alpha: float = 0.05
    pose_norm: bool = True  # learned per-pose mean/log-scale layer after the logit
    pose_norm_min_scale: float | None = None  # floor of its scale (logit units); None = no floor
    initial_squeeze: bool = True  # squeeze to 4 x S/2 x S/2 first: 4x cheaper couplings



def dequantize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantisation of [0, 1] intensities seen as 8-bit levels: (255 x + u) / 256.

    Without it, the exact zeros of the skull-stripped background would let the flow
    put unbounded density on one value.
    """
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x.clamp(0, 1) * 255 + noise) / 256


def pose_features(poses: torch.Tensor, n_poses: int, encoding: str) -> torch.Tensor:
    """Encode pose indices (float, ``[0, n_poses - 1]``) as conditioning vectors."""
    poses = poses.float()
    if encoding == "onehot":
        # linear interpolation between neighbouring one-hot vectors for fractional poses
        low = poses.floor().clamp(0, n_poses - 1)
        frac = (poses - low).unsqueeze(-1)
        low_hot = F.one_hot(low.long(), n_poses).float()
        high_hot = F.one_hot((low + 1).clamp(max=n_poses - 1).long(), n_poses).float()
        return low_hot * (1 - frac) + high_hot * frac
    if encoding == "continuous":
        position = (poses / max(n_poses - 1, 1)).unsqueeze(-1)
        frequencies = torch.arange(1, 9, device=poses.device, dtype=torch.float32) * math.pi
        return torch.cat([position, torch.sin(position * frequencies), torch.cos(position * frequencies)], -1)
    raise ValueError(f"unknown pose encoding {encoding!r} (use 'onehot' or 'continuous')")


def pose_feature_size(n_poses: int, encoding: str) -> int:
    return n_poses if encoding == "onehot" else 17


class ResidualBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.conv2(F.relu(self.conv1(F.relu(h))))


class CouplingNet(nn.Module):
    """A small ResNet producing per-pixel log-scale and shift, conditioned on pose."""

    def __init__(self, in_channels: int, out_channels: int, width: int, blocks: int, pose_size: int):
        super().__init__()
        self.inp = nn.Conv2d(in_channels, width, 3, padding=1)
        self.pose = nn.Linear(pose_size, width)
        self.blocks = nn.Sequential(*[ResidualBlock(width) for _ in range(blocks)])
        self.out = nn.Conv2d(width, 2 * out_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.log_scale_factor = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: torch.Tensor, pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.inp(x) + self.pose(pose)[:, :, None, None]
        h = self.out(F.relu(self.blocks(h)))
        raw_scale, shift = h.chunk(2, dim=1)
        log_scale = torch.tanh(raw_scale) * self.log_scale_factor.exp()
        return log_scale, shift


def checkerboard(height: int, width: int, parity: int, like: torch.Tensor) -> torch.Tensor:
    """A (1, 1, H, W) 0/1 checkerboard with the device and dtype of ``like``."""
    rows = torch.arange(height, device=like.device)[:, None]
    cols = torch.arange(width, device=like.device)[None, :]
    return (((rows + cols) % 2) == parity).to(like.dtype)[None, None]


class CheckerboardCoupling(nn.Module):
    """Affine coupling: pixels of one checkerboard colour transform given the other."""

    def __init__(self, channels: int, parity: int, width: int, blocks: int, pose_size: int):
        super().__init__()
        self.parity = parity
        self.net = CouplingNet(channels + 1, channels, width, blocks, pose_size)

    def _params(self, x: torch.Tensor, pose: torch.Tensor):
        mask = checkerboard(x.shape[2], x.shape[3], self.parity, x)
        log_scale, shift = self.net(torch.cat([x * mask, mask.expand(x.shape[0], 1, -1, -1)], 1), pose)
        return mask, log_scale * (1 - mask), shift * (1 - mask)

    def forward(self, x, pose):
        mask, log_scale, shift = self._params(x, pose)
        y = x * log_scale.exp() + shift
        return y, log_scale.flatten(1).sum(1)

    def inverse(self, y, pose):
        mask, log_scale, shift = self._params(y, pose)  # masked pixels are unchanged
        x = (y - shift) * (-log_scale).exp()
        return x, -log_scale.flatten(1).sum(1)


class ChannelCoupling(nn.Module):
    """Affine coupling: one half of the channels transforms given the other half."""

    def __init__(self, channels: int, flip: bool, width: int, blocks: int, pose_size: int):
        super().__init__()
        self.flip = flip
        self.half = channels // 2
        self.net = CouplingNet(self.half, channels - self.half, width, blocks, pose_size)

    def _split(self, x):
        a, b = x[:, : self.half], x[:, self.half :]
        return (b, a) if self.flip else (a, b)

    def _join(self, conditioner, transformed):
        return torch.cat([transformed, conditioner] if self.flip else [conditioner, transformed], 1)

    def forward(self, x, pose):
        conditioner, target = self._split(x)
        log_scale, shift = self.net(conditioner, pose)
        return self._join(conditioner, target * log_scale.exp() + shift), log_scale.flatten(1).sum(1)

    def inverse(self, y, pose):
        conditioner, target = self._split(y)
        log_scale, shift = self.net(conditioner, pose)
        return self._join(conditioner, (target - shift) * (-log_scale).exp()), -log_scale.flatten(1).sum(1)


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2)."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * 4, h // 2, w // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.view(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // 4, h * 2, w * 2)


class PoseNorm(nn.Module):
    """Element-wise affine map with a learned mean image and log-scale per pose.

    Subtracting a per-pose population mean lets the couplings and the latent process
    work on the patient-specific residual. Fractional poses interpolate linearly.
    """

    def __init__(self, n_poses: int, image_size: int, min_scale: float | None = None):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(n_poses, 1, image_size, image_size))
        self.log_scale = nn.Parameter(torch.zeros(n_poses, 1, image_size, image_size))
        # A floor keeps pixels that were always background in training from getting a
        # near-zero scale, which would turn any tissue there into a huge latent outlier.
        self.min_log_scale = None if min_scale is None else math.log(min_scale)

    def effective_log_scale(self) -> torch.Tensor:
        if self.min_log_scale is None:
            return self.log_scale
        return self.min_log_scale + F.softplus(self.log_scale - self.min_log_scale)

    def set_log_scale(self, log_scale: torch.Tensor) -> None:
        """Initialise so that :meth:`effective_log_scale` equals ``log_scale`` (above the floor)."""
        with torch.no_grad():
            if self.min_log_scale is None:
                self.log_scale.copy_(log_scale)
            else:
                excess = (log_scale - self.min_log_scale).clamp(min=1e-3)
                self.log_scale.copy_(self.min_log_scale + torch.log(torch.expm1(excess)))

    def _lookup(self, table: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        low = poses.floor().clamp(0, table.shape[0] - 1)
        frac = (poses - low)[:, None, None, None]
        high = (low + 1).clamp(max=table.shape[0] - 1)
        return table[low.long()] * (1 - frac) + table[high.long()] * frac

    def forward(self, x, poses):
        log_scale = self._lookup(self.effective_log_scale(), poses)
        y = (x - self._lookup(self.mean, poses)) * (-log_scale).exp()
        return y, -log_scale.flatten(1).sum(1)

    def inverse(self, y, poses):
        log_scale = self._lookup(self.effective_log_scale(), poses)
        return y * log_scale.exp() + self._lookup(self.mean, poses), log_scale.flatten(1).sum(1)


class ConditionalRealNVP(nn.Module):
    """Multi-scale RealNVP on ``(B, 1, S, S)`` images in [0, 1], conditioned on pose.

    ``forward(x, poses)`` returns the latent ``z`` (``(B, S*S)``, the factored-out parts of
    every scale concatenated) and ``log|det dz/dx|`` including the logit preprocessing.
    """

    def __init__(self, config: FlowConfig):
        super().__init__()
        self.config = config
        pose_size = pose_feature_size(config.n_poses, config.pose_encoding)
        self.pose_norm = (PoseNorm(config.n_poses, config.image_size, config.pose_norm_min_scale)
                          if config.pose_norm else None)
        self.stages = nn.ModuleList()
        channels = 4 if config.initial_squeeze else 1
        size = config.image_size // 2 if config.initial_squeeze else config.image_size
        for _ in range(config.n_scales - 1):
            layers = nn.ModuleList()
            for i in range(config.couplings_per_stage):
                layers.append(CheckerboardCoupling(channels, i % 2, config.width, config.res_blocks, pose_size))
            for i in range(config.couplings_per_stage):
                layers.append(ChannelCoupling(channels * 4, i % 2 == 1, config.width, config.res_blocks, pose_size))
            self.stages.append(layers)
            channels = channels * 4 // 2  # squeeze, then factor out half
            size //= 2
        self.final = nn.ModuleList(
            CheckerboardCoupling(channels, i % 2, config.width, config.res_blocks, pose_size)
            for i in range(config.final_couplings)
        )
        if size < 2:
            raise ValueError("image_size too small for the number of scales")

    @property
    def dim(self) -> int:
        return self.config.image_size**2

    def _pose(self, poses: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return pose_features(poses, self.config.n_poses, self.config.pose_encoding).to(dtype)

    def preprocess(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[0, 1] -> logit space, with its log-determinant."""
        alpha = self.config.logit_alpha
        p = alpha + (1 - 2 * alpha) * x.clamp(0, 1)
        y = torch.log(p) - torch.log1p(-p)
        logdet = (math.log(1 - 2 * alpha) - torch.log(p) - torch.log1p(-p)).flatten(1).sum(1)
        return y, logdet

    def postprocess(self, y: torch.Tensor) -> torch.Tensor:
        alpha = self.config.logit_alpha
        return ((torch.sigmoid(y) - alpha) / (1 - 2 * alpha)).clamp(0, 1)

    def forward(self, x: torch.Tensor, poses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pose = self._pose(poses, x.dtype)
        h, logdet = self.preprocess(x)
        return self._forward_latent(h, poses, pose, logdet)

    def _forward_latent(self, h, poses, pose, logdet):
        if self.pose_norm is not None:
            h, ld = self.pose_norm(h, poses)
            logdet = logdet + ld
        if self.config.initial_squeeze:
            h = squeeze(h)
        factored = []
        for layers in self.stages:
            n_checker = self.config.couplings_per_stage
            for i, layer in enumerate(layers):
                if i == n_checker:
                    h = squeeze(h)
                h, ld = layer(h, pose)
                logdet = logdet + ld
            keep = h.shape[1] // 2
            factored.append(h[:, keep:].flatten(1))
            h = h[:, :keep]
        for layer in self.final:
            h, ld = layer(h, pose)
            logdet = logdet + ld
        factored.append(h.flatten(1))
        return torch.cat(factored, 1), logdet

    def inverse(self, z: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        """Latent (B, S*S) -> image in [0, 1] (B, 1, S, S)."""
        return self.postprocess(self.inverse_logit(z, poses))

    def inverse_logit(self, z: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        """Latent -> image in logit space (before the sigmoid)."""
        pose = self._pose(poses, z.dtype)
        b = z.shape[0]
        shapes = []
        channels = 4 if self.config.initial_squeeze else 1
        size = self.config.image_size // 2 if self.config.initial_squeeze else self.config.image_size
        for _ in self.stages:
            channels, size = channels * 4, size // 2
            shapes.append((channels - channels // 2, size))
            channels = channels // 2
        final_shape = (channels, size)
        offset = z.shape[1] - final_shape[0] * final_shape[1] ** 2
        h = z[:, offset:].reshape(b, final_shape[0], final_shape[1], final_shape[1])
        for layer in reversed(self.final):
            h, _ = layer.inverse(h, pose)
        for layers, (factored_channels, size) in zip(reversed(self.stages), reversed(shapes), strict=True):
            n = factored_channels * size * size
            part = z[:, offset - n : offset].reshape(b, factored_channels, size, size)
            offset -= n
            h = torch.cat([h, part], 1)
            for i in reversed(range(len(layers))):
                h, _ = layers[i].inverse(h, pose)
                if i == self.config.couplings_per_stage:
                    h = unsqueeze(h)
        if self.config.initial_squeeze:
            h = unsqueeze(h)
        if self.pose_norm is not None:
            h, _ = self.pose_norm.inverse(h, poses)
        return h
