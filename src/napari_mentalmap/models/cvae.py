"""A conditional VAE for missing slices: the baseline the Conditional BRUNO paper compares with.

Each context slice is encoded with its pose; the context features are averaged (so any
number of contexts, in any order, can be given); a query pose then gets a latent prior
``p(z | contexts, pose)`` and a decoder ``p(x | z, contexts, pose)``. Training maximises
the ELBO with the approximate posterior ``q(z | x, contexts, pose)``. The mean image decodes
the prior mean; a sample decodes a prior draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import DictConfig


@dataclass(frozen=True)
class CVAEConfig(DictConfig):
    """Architecture of :class:`ConditionalVAE`."""

    image_size: int = 64
    n_poses: int = 48
    width: int = 32
    features: int = 256
    latent: int = 32



def _encoder(width: int, features: int, size: int) -> nn.Sequential:
    """(B, 1, S, S) -> (B, features): four stride-2 convolutions and a linear layer."""
    layers: list[nn.Module] = []
    channels = 1
    for out in (width, 2 * width, 4 * width, 4 * width):
        layers += [nn.Conv2d(channels, out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        channels = out
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * (size // 16) ** 2, features))


class ConditionalVAE(nn.Module):
    """C-VAE over (context slices with poses) -> slice at a query pose, on the model grid."""

    def __init__(self, config: CVAEConfig):
        super().__init__()
        if config.image_size % 16:
            raise ValueError("image_size must be a multiple of 16")
        self.config = config
        f, w, s = config.features, config.width, config.image_size
        self.context_encoder = _encoder(w, f, s)
        self.query_encoder = _encoder(w, f, s)
        self.pose_embedding = nn.Embedding(config.n_poses, f)
        self.prior = nn.Sequential(nn.Linear(2 * f, f), nn.LeakyReLU(0.2), nn.Linear(f, 2 * config.latent))
        self.posterior = nn.Sequential(nn.Linear(3 * f, f), nn.LeakyReLU(0.2), nn.Linear(f, 2 * config.latent))
        self.decoder_input = nn.Linear(config.latent + 2 * f, 4 * w * (s // 16) ** 2)
        layers: list[nn.Module] = []
        channels = 4 * w
        for out in (4 * w, 2 * w, w):
            layers += [nn.ConvTranspose2d(channels, out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            channels = out
        self.decoder = nn.Sequential(*layers, nn.ConvTranspose2d(channels, 1, 4, stride=2, padding=1))

    def _pose(self, poses: torch.Tensor) -> torch.Tensor:
        return self.pose_embedding(poses.round().long().clamp(0, self.config.n_poses - 1))

    def summarise(self, contexts: torch.Tensor, context_poses: torch.Tensor) -> torch.Tensor:
        """(B, K, S, S) contexts at (B, K) poses -> (B, features), the mean over contexts."""
        b, k, s, _ = contexts.shape
        features = self.context_encoder(contexts.reshape(b * k, 1, s, s)).reshape(b, k, -1)
        return (features + self._pose(context_poses)).mean(1)

    def _condition(self, summary: torch.Tensor, query_poses: torch.Tensor) -> torch.Tensor:
        """(B, F) summary, (B, Q) poses -> (B, Q, 2F) conditioning of every query."""
        q = query_poses.shape[1]
        return torch.cat([summary[:, None].expand(-1, q, -1), self._pose(query_poses)], -1)

    def decode(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """(N, latent), (N, 2F) -> logits (N, S, S)."""
        w, s = self.config.width, self.config.image_size
        h = F.leaky_relu(self.decoder_input(torch.cat([z, condition], -1)), 0.2)
        return self.decoder(h.reshape(-1, 4 * w, s // 16, s // 16))[:, 0]

    def loss(self, contexts: torch.Tensor, context_poses: torch.Tensor, queries: torch.Tensor,
             query_poses: torch.Tensor, beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Negative ELBO per query pixel (binary cross-entropy + beta KL); also both terms."""
        b, q, s, _ = queries.shape
        condition = self._condition(self.summarise(contexts, context_poses), query_poses).reshape(b * q, -1)
        prior_mu, prior_logvar = self.prior(condition).chunk(2, -1)
        encoded = self.query_encoder(queries.reshape(b * q, 1, s, s))
        mu, logvar = self.posterior(torch.cat([encoded, condition], -1)).chunk(2, -1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        logits = self.decode(z, condition)
        reconstruction = F.binary_cross_entropy_with_logits(logits, queries.reshape(b * q, s, s), reduction="none")
        reconstruction = reconstruction.flatten(1).sum(1)
        kl = 0.5 * (prior_logvar - logvar + (logvar.exp() + (mu - prior_mu) ** 2) / prior_logvar.exp() - 1).sum(1)
        pixels = s * s
        return ((reconstruction + beta * kl) / pixels).mean(), reconstruction.mean() / pixels, kl.mean() / pixels

    @torch.no_grad()
    def predict(self, contexts: torch.Tensor, context_poses: torch.Tensor, query_poses: torch.Tensor,
                n_samples: int = 0, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean image (Q, S, S) from the prior mean, and ``n_samples`` samples (N, Q, S, S).

        ``contexts`` (K, S, S) at ``context_poses`` (K,); no contexts is not supported (the
        C-VAE has no prior without them).
        """
        if len(context_poses) == 0:
            raise ValueError("the C-VAE needs at least one context slice")
        summary = self.summarise(contexts[None], context_poses[None].float())
        condition = self._condition(summary, query_poses[None].float())[0]
        mu, logvar = self.prior(condition).chunk(2, -1)
        mean = torch.sigmoid(self.decode(mu, condition))
        samples = []
        for _ in range(n_samples):
            noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            samples.append(torch.sigmoid(self.decode(mu + noise * (0.5 * logvar).exp(), condition)))
        empty = mean.new_zeros((0, *mean.shape))
        return mean, torch.stack(samples) if samples else empty


def kl_warmup(step: int, warmup_steps: int) -> float:
    """KL weight rising from 0 to 1 over ``warmup_steps`` (cosine)."""
    if step >= warmup_steps:
        return 1.0
    return 0.5 * (1 - math.cos(math.pi * step / max(warmup_steps, 1)))
