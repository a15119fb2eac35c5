"""The lesion segmenter that learns from the user's labels: a small 2.5-D U-Net over FLAIR.

Input: ``IN_CHANNELS`` per axial slice - the normalised FLAIR of the slice below, the slice and
the slice above (brain's median at 0.5, its 99.5th percentile at 1), and the brain mask eroded
by 3 mm. Output: one logit per voxel, the sum of

* a *threshold path* ``scale * (flair * eroded_mask - threshold)``: the intensity threshold a user
  would tune, with ``threshold`` set from the training scans before training, so an untrained
  model is that threshold;
* the U-Net's correction, whose last layer starts at zero: labels only add to the threshold.

``equivariant=True`` builds the same U-Net from C4 group convolutions (the four 90-degree
rotations share each filter; Cohen & Welling 2016), with half the fields per layer so that the
parameter count stays about equal (Middleton seminar: implicit augmentation).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

IN_CHANNELS = 4
"""FLAIR slices z-1, z, z+1 and the eroded brain mask."""
ROTATIONS = 4


@dataclass(frozen=True)
class SegmenterConfig:
    """Architecture of :class:`LesionSegmenter`."""

    base_channels: int = 16
    levels: int = 3
    equivariant: bool = False
    initial_scale: float = 30.0
    initial_threshold: float = 0.75

    def to_dict(self) -> dict:
        """Plain values for a weights record."""
        return asdict(self)

    @property
    def multiple(self) -> int:
        """In-plane sizes must be a multiple of this (one halving per level below the top)."""
        return 2 ** (self.levels - 1)


def _norm(channels: int, fields: int | None = None) -> nn.GroupNorm:
    groups = fields if fields is not None else math.gcd(8, channels)
    return nn.GroupNorm(groups, channels)


class _Block(nn.Module):
    """Two 3x3 convolutions with group norm and LeakyReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1), _norm(cout), nn.LeakyReLU(0.1),
            nn.Conv2d(cout, cout, 3, padding=1), _norm(cout), nn.LeakyReLU(0.1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class LiftingConv(nn.Module):
    """Plane -> C4 feature fields: every filter at the four rotations (channels field-major)."""

    def __init__(self, cin: int, fields: int, kernel: int = 3) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(fields, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(fields))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = torch.stack([torch.rot90(self.weight, r, dims=(2, 3)) for r in range(ROTATIONS)], dim=1)
        weight = weight.reshape(-1, *self.weight.shape[1:])
        return F.conv2d(x, weight, self.bias.repeat_interleave(ROTATIONS), padding=self.padding)


class GroupConv(nn.Module):
    """C4 fields -> C4 fields: rotating the filter also shifts it along the rotation axis."""

    def __init__(self, fields_in: int, fields_out: int, kernel: int = 3) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(fields_out, fields_in, ROTATIONS, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(fields_out))
        fan_in = fields_in * ROTATIONS * kernel * kernel
        nn.init.uniform_(self.weight, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_f, in_f, _, k, _ = self.weight.shape
        rotated = [torch.rot90(torch.roll(self.weight, r, dims=2), r, dims=(3, 4)).reshape(out_f, in_f * ROTATIONS, k, k)
                   for r in range(ROTATIONS)]
        weight = torch.stack(rotated, dim=1).reshape(out_f * ROTATIONS, in_f * ROTATIONS, k, k)
        return F.conv2d(x, weight, self.bias.repeat_interleave(ROTATIONS), padding=self.padding)


class _GroupBlock(nn.Module):
    """:class:`_Block` in C4 fields (the first one lifts the plane onto the group)."""

    def __init__(self, fields_in: int, fields_out: int, lift: bool = False) -> None:
        super().__init__()
        first = LiftingConv(fields_in, fields_out) if lift else GroupConv(fields_in, fields_out)
        self.body = nn.Sequential(
            first, _norm(fields_out * ROTATIONS, fields_out), nn.LeakyReLU(0.1),
            GroupConv(fields_out, fields_out), _norm(fields_out * ROTATIONS, fields_out), nn.LeakyReLU(0.1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class LesionSegmenter(nn.Module):
    """Threshold path + U-Net correction (see the module docstring). Input ``(B, 4, H, W)`` with
    H and W multiples of ``config.multiple``; output logits ``(B, 1, H, W)``."""

    def __init__(self, config: SegmenterConfig = SegmenterConfig()) -> None:
        super().__init__()
        self.config = config
        self.log_scale = nn.Parameter(torch.tensor(math.log(config.initial_scale)))
        self.threshold = nn.Parameter(torch.tensor(float(config.initial_threshold)))
        widths = [config.base_channels * 2 ** i for i in range(config.levels)]
        if config.equivariant:
            widths = [max(1, w // 2) for w in widths]
        block = _GroupBlock if config.equivariant else _Block
        self.down = nn.ModuleList()
        cin = IN_CHANNELS
        for i, width in enumerate(widths):
            self.down.append(block(cin, width, lift=True) if config.equivariant and i == 0 else block(cin, width))
            cin = width
        self.up = nn.ModuleList(block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(len(widths) - 1)))
        self.head = GroupConv(widths[0], 1, kernel=1) if config.equivariant else nn.Conv2d(widths[0], 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def threshold_logit(self, x: torch.Tensor) -> torch.Tensor:
        """The threshold path alone: ``scale * (flair * eroded_mask - threshold)``."""
        return self.log_scale.exp() * (x[:, 1:2] * x[:, 3:4] - self.threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips, h = [], x
        for i, block in enumerate(self.down):
            if i:
                h = F.max_pool2d(h, 2)
            h = block(h)
            skips.append(h)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], dim=1))
        correction = self.head(h)
        if self.config.equivariant:
            correction = correction.view(correction.shape[0], 1, ROTATIONS, *correction.shape[-2:]).mean(2)
        return self.threshold_logit(x) + correction


def channels_last(model: LesionSegmenter) -> LesionSegmenter:
    """The model with its 4-D weights in channels-last order (2-3x faster CPU convolutions);
    the C4 model's weights are 5-D and built per call, so it is left as it is."""
    return model if model.config.equivariant else model.to(memory_format=torch.channels_last)


def parameter_count(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
