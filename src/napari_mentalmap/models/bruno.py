"""Conditional BRUNO: a pose-conditioned RealNVP whose latents follow a Student-t process.

``log_prob`` scores a sequence of (slice, pose) pairs of one subject with the chain rule
(each element given its predecessors); ``posterior`` conditions on context slices and
returns a :class:`BrunoPosterior` that draws samples or the mean image at any query poses.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .config import DictConfig
from .flows import ConditionalRealNVP, FlowConfig
from .tprocess import LatentProcess, Posterior, concatenate_posteriors, make_process


@dataclass
class BrunoConfig(DictConfig):
    flow: FlowConfig = field(default_factory=FlowConfig)
    process: str = "pose_aware"  # or "exchangeable" (the paper's)
    student_t: bool = True
    kernel: str = "exponential"  # pose-aware kernel: "exponential" or "matern32"
    kernel_components: int = 1  # 2 adds a second length scale
    grid: dict = field(default_factory=dict)  # GridSpec of the data it was trained on
    # Context latents are clamped to +-this before conditioning (None: not clamped): a context
    # far outside the training population (another pipeline's intensities, an outlying slice)
    # is then taken as the most extreme plausible anatomy instead of being extrapolated.
    context_latent_limit: float | None = None
    # The flow's latents keep a pose-dependent mean that the process (one prior mean per
    # dimension, for every pose) cannot represent; with this the mean latent of each pose
    # (buffer ``pose_latent_mean``, interpolated between poses) is subtracted after the flow:
    # a pose-conditioned shift, invertible with log-determinant 0.
    pose_latent_mean: bool = False

    @classmethod
    def from_dict(cls, values: dict) -> BrunoConfig:
        values = dict(values)
        values["flow"] = FlowConfig(**values.get("flow", {}))
        return cls(**values)


class BrunoPosterior:
    """Predictive over query poses given contexts; draws images from the flow's inverse."""

    def __init__(self, model: Bruno, latent: Posterior, query_poses: torch.Tensor):
        self.model = model
        self.latent = latent
        self.query_poses = query_poses

    def mean_image(self, batch_size: int = 64) -> torch.Tensor:
        """Flow inverse of the posterior-mean latent (the default "mean image"), (Q, S, S)."""
        return self.model.decode(self.latent.mean, self.query_poses, batch_size)

    def samples(
        self,
        n_samples: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        batch_size: int = 64,
    ) -> torch.Tensor:
        """Posterior samples ("hallucinations"), (n_samples, Q, S, S)."""
        z = self.latent.sample(n_samples, temperature, generator)
        return torch.stack([self.model.decode(zi, self.query_poses, batch_size) for zi in z])


class Bruno(nn.Module):
    """Conditional RealNVP + latent process."""

    def __init__(self, config: BrunoConfig):
        super().__init__()
        self.config = config
        self.flow = ConditionalRealNVP(config.flow)
        self.process: LatentProcess = make_process(
            config.process, self.flow.dim, config.flow.n_poses, config.student_t, config.kernel,
            config.kernel_components,
        )
        if config.pose_latent_mean:
            self.register_buffer("pose_latent_mean", torch.zeros(config.flow.n_poses, self.flow.dim))

    @property
    def n_poses(self) -> int:
        return self.config.flow.n_poses

    @property
    def image_size(self) -> int:
        return self.config.flow.image_size

    def _check(self, images: torch.Tensor, poses: torch.Tensor) -> None:
        size = self.image_size
        if images.shape[-2:] != (size, size):
            raise ValueError(f"slices must be {size}x{size} on the model grid, got {tuple(images.shape[-2:])}")
        if poses.numel() and (poses.min() < 0 or poses.max() > self.n_poses - 1):
            raise ValueError(f"poses must lie in [0, {self.n_poses - 1}], got {poses.min():.2f}..{poses.max():.2f}")

    def latent_shift(self, poses: torch.Tensor) -> torch.Tensor | None:
        """The latent mean at (possibly fractional) poses (N,), linearly interpolated between
        the stored poses, (N, D); None without ``pose_latent_mean``."""
        if not self.config.pose_latent_mean:
            return None
        poses = poses.to(self.pose_latent_mean.dtype).clamp(0, self.n_poses - 1)
        below = poses.floor().long()
        above = (below + 1).clamp(max=self.n_poses - 1)
        weight = (poses - below).unsqueeze(-1)
        return (1 - weight) * self.pose_latent_mean[below] + weight * self.pose_latent_mean[above]

    def encode(self, images: torch.Tensor, poses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Slices (N, S, S) in [0, 1] at poses (N,) -> latents (N, D) and log-dets (N,)."""
        self._check(images, poses)
        z, logdet = self.flow(images.unsqueeze(1), poses)
        shift = self.latent_shift(poses)
        return (z, logdet) if shift is None else (z - shift, logdet)

    def decode(self, z: torch.Tensor, poses: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Latents (N, D) at poses (N,) -> slices (N, S, S) in [0, 1]."""
        shift = self.latent_shift(poses)
        if shift is not None:
            z = z + shift
        out = [
            self.flow.inverse(z[i : i + batch_size], poses[i : i + batch_size]).squeeze(1)
            for i in range(0, len(z), batch_size)
        ]
        return torch.cat(out) if out else z.new_zeros(0, self.image_size, self.image_size)

    def log_prob(self, images: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        """Per-element log p(x_i | x_<i) of sequences (B, n, S, S) at poses (B, n): (B, n)."""
        b, n = poses.shape
        z, logdet = self.encode(images.reshape(b * n, *images.shape[-2:]), poses.reshape(-1))
        latent_log_prob = self.process.log_prob(z.view(b, n, -1), poses)
        return latent_log_prob + logdet.view(b, n)

    def training_terms(self, images: torch.Tensor, poses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-element log-likelihoods (B, n) and the mean squared error of each element's
        predictive mean given at least one predecessor, on *detached* latents: it trains
        only the process (a cross-validation-style criterion for its kernel), so the flow
        cannot lower it by shrinking its latents."""
        b, n = poses.shape
        z, logdet = self.encode(images.reshape(b * n, *images.shape[-2:]), poses.reshape(-1))
        z = z.view(b, n, -1)
        log_prob = self.process.log_prob(z, poses) + logdet.view(b, n)
        errors = self.process.prediction_errors(z.detach(), poses)[..., 1:]
        return log_prob, errors.pow(2).mean()

    def bits_per_dim(self, log_prob: torch.Tensor) -> torch.Tensor:
        """Bits per pixel of 8-bit-quantised slices from a continuous log-density on [0, 1]."""
        dim = self.flow.dim
        return -(log_prob / dim - math.log(256)) / math.log(2)

    def posterior(
        self,
        context_images: torch.Tensor,
        context_poses: torch.Tensor,
        query_poses: torch.Tensor,
    ) -> BrunoPosterior:
        """Condition on context slices (n, S, S) at poses (n,); n = 0 gives the prior."""
        steps = self.posterior_steps(context_images, context_poses, query_poses)
        while True:
            try:
                next(steps)
            except StopIteration as stop:
                return stop.value

    def posterior_steps(
        self,
        context_images: torch.Tensor,
        context_poses: torch.Tensor,
        query_poses: torch.Tensor,
        blocks: int = 1,
    ) -> Generator[int, None, BrunoPosterior]:
        """:meth:`posterior` computed in ``blocks`` blocks of latent dimensions (they are
        independent: the result is the same), yielding how many are done after each, so
        that a job can be cancelled in between; returns the posterior."""
        with torch.no_grad():
            self._check(context_images, context_poses)
            self._check(torch.zeros(0, self.image_size, self.image_size), query_poses)
            if len(context_poses):
                z, _ = self.encode(context_images, context_poses)
                if self.config.context_latent_limit is not None:
                    z = z.clamp(-self.config.context_latent_limit, self.config.context_latent_limit)
            else:
                z = context_images.new_zeros(0, self.flow.dim)
        edges = [round(i * self.flow.dim / blocks) for i in range(blocks + 1)]
        parts = []
        for index, (first, stop) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
            with torch.no_grad():
                parts.append(self.process.posterior(z, context_poses.float(), query_poses.float(),
                                                    dims=slice(first, stop)))
            yield index + 1
        latent = parts[0] if len(parts) == 1 else concatenate_posteriors(parts)
        return BrunoPosterior(self, latent, query_poses.float())

    def save(self, path: str | Path, **extra) -> None:
        """Save weights with the config (and any metadata: split, metrics, command)."""
        from ..checkpoints import save_record

        save_record(path, {"format": "bruno", "config": self.config.to_dict(), "state_dict": self.state_dict(), **extra})

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> tuple[Bruno, dict]:
        """Load a checkpoint saved by :meth:`save`; returns the model and the whole record."""
        from ..checkpoints import WeightsError, load_record, load_state

        record = load_record(path, "bruno", map_location)
        try:
            model = cls(BrunoConfig.from_dict(record["config"]))
        except (KeyError, TypeError, ValueError) as error:
            raise WeightsError(f"weights file {path} has an unusable BRUNO config ({error})") from None
        load_state(model, record, path)
        model.eval()
        return model, record
