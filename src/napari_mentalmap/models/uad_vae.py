"""Dense and spatial VAEs for unsupervised anomaly detection (Lambert et al.), 2-D and 3-D.

Pure torch. The shape follows the paper, sized for a CPU: an encoder of 4 strided
convolutions (each + batch norm + LeakyReLU) and two layers producing the posterior's
mean and log-variance; a decoder of 5 layers (4 transposed convolutions and a final
convolution with a sigmoid, intensities being in [0, 1]).

* **dense**: the encoder's feature map is flattened and two linear layers give a vector
  latent of ``latent_dim``; the decoder starts with a linear layer back to the map.
* **spatial**: two 1x1 convolutions give a latent *map* of ``latent_channels`` channels
  (the last encoder convolution has stride 1, so the map keeps more spatial detail).

2-D models take axial slices ``(B, 1, S, S)``; 3-D models whole model-grid volumes
``(B, 1, P, S, S)``. Every spatial size must be divisible by 16 (8 for the spatial
kind), except the 3-D pose axis which is padded internally.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .config import DictConfig, check_kind_and_shapes
from .kinds import KINDS


@dataclass
class VAEConfig(DictConfig):
    """Architecture of one anomaly VAE (stored with its weights)."""

    kind: str = "dense3d"
    input_shape: tuple[int, ...] = (48, 64, 64)  # (S, S) for 2-D, (P, S, S) for 3-D
    channels: tuple[int, ...] = (16, 32, 64, 64)
    latent_dim: int = 128  # dense
    latent_channels: int = 4  # spatial
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_kind_and_shapes(self, KINDS, "VAE")
        expected = 2 if self.kind.endswith("2d") else 3
        if len(self.input_shape) != expected:
            raise ValueError(f"{self.kind} needs a {expected}-D input_shape, got {self.input_shape}")
        if len(self.channels) != 4:
            raise ValueError("channels must list the 4 encoder widths")

    @property
    def ndim(self) -> int:
        return 2 if self.kind.endswith("2d") else 3

    @property
    def dense(self) -> bool:
        return self.kind.startswith("dense")



def _strides(config: VAEConfig) -> tuple[int, ...]:
    return (2, 2, 2, 2) if config.dense else (2, 2, 2, 1)


def _padded_shape(config: VAEConfig) -> tuple[int, ...]:
    """Input shape rounded up so every strided convolution divides it exactly."""
    factor = 1
    for stride in _strides(config):
        factor *= stride
    return tuple(-(-s // factor) * factor for s in config.input_shape)


class UADVAE(nn.Module):
    """A dense or spatial, 2-D or 3-D VAE; ``forward`` returns ``(x_hat, mu, logvar)``."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        conv = nn.Conv2d if config.ndim == 2 else nn.Conv3d
        deconv = nn.ConvTranspose2d if config.ndim == 2 else nn.ConvTranspose3d
        norm = nn.BatchNorm2d if config.ndim == 2 else nn.BatchNorm3d
        strides = _strides(config)
        widths = (1, *config.channels)

        encoder: list[nn.Module] = []
        for c_in, c_out, stride in zip(widths[:-1], widths[1:], strides, strict=True):
            encoder += [conv(c_in, c_out, 3, stride=stride, padding=1), norm(c_out), nn.LeakyReLU(0.2)]
        self.encoder = nn.Sequential(*encoder)

        self.padded_shape = _padded_shape(config)
        factor = 1
        for stride in strides:
            factor *= stride
        self.feature_shape = (config.channels[-1], *(s // factor for s in self.padded_shape))
        n_features = 1
        for s in self.feature_shape:
            n_features *= s

        if config.dense:
            self.mu = nn.Linear(n_features, config.latent_dim)
            self.logvar = nn.Linear(n_features, config.latent_dim)
            self.expand = nn.Linear(config.latent_dim, n_features)
        else:
            self.mu = conv(config.channels[-1], config.latent_channels, 1)
            self.logvar = conv(config.channels[-1], config.latent_channels, 1)
            self.expand = conv(config.latent_channels, config.channels[-1], 1)

        decoder: list[nn.Module] = []
        back = list(reversed(widths[1:]))  # e.g. 64, 64, 32, 16
        outs = back[1:] + [back[-1]]
        for c_in, c_out, stride in zip(back, outs, reversed(strides), strict=True):
            if stride == 2:
                decoder.append(deconv(c_in, c_out, 4, stride=2, padding=1))
            else:
                decoder.append(conv(c_in, c_out, 3, padding=1))
            decoder += [norm(c_out), nn.LeakyReLU(0.2)]
        decoder += [conv(back[-1], 1, 3, padding=1), nn.Sigmoid()]
        self.decoder = nn.Sequential(*decoder)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for have, want in zip(reversed(x.shape[2:]), reversed(self.padded_shape), strict=True):
            pads += [0, want - have]
        return nn.functional.pad(x, pads) if any(pads) else x

    def _check(self, x: torch.Tensor) -> None:
        expected = (1, *self.config.input_shape)
        if x.ndim != self.config.ndim + 2 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"{self.config.kind} expects (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance of ``x``."""
        self._check(x)
        h = self.encoder(self._pad(x))
        if self.config.dense:
            h = h.flatten(1)
        return self.mu(h), self.logvar(h).clamp(-10.0, 10.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction (cropped to the input shape) from a latent."""
        h = self.expand(z)
        if self.config.dense:
            h = h.view(z.shape[0], *self.feature_shape)
        out = self.decoder(h)
        crop = (slice(None), slice(None)) + tuple(slice(0, s) for s in self.config.input_shape)
        return out[crop]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        if self.training:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        else:
            z = mu
        return self.decode(z), mu, logvar

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction (posterior mean), used for anomaly maps."""
        mu, _ = self.encode(x)
        return self.decode(mu)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)), averaged over the batch and every latent element."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean()


def cyclical_beta(epoch: float, period: float = 50.0) -> float:
    """Cyclical annealing: β = 2t/T over the first half of each period, then 1."""
    if period <= 0:
        return 1.0
    t = epoch % period
    return min(1.0, 2.0 * t / period)


class MovingMean:
    """Mean of the last ``size`` values (the L1 normaliser of the paper's loss)."""

    def __init__(self, size: int = 10):
        self.size = size
        self.values: list[float] = []

    def update(self, value: float) -> float:
        self.values.append(float(value))
        del self.values[: -self.size]
        return sum(self.values) / len(self.values)

    def state_dict(self) -> dict:
        return {"size": self.size, "values": list(self.values)}

    def load_state_dict(self, state: dict) -> None:
        self.size = int(state["size"])
        self.values = [float(v) for v in state["values"]]


def default_config(kind: str, n_poses: int = 48, size: int = 64) -> VAEConfig:
    """The CPU-sized architecture of each kind on a ``n_poses`` x ``size`` x ``size`` grid."""
    if kind.endswith("2d"):
        return VAEConfig(kind=kind, input_shape=(size, size), channels=(8, 16, 32, 64),
                         latent_dim=128, latent_channels=2)
    return VAEConfig(kind=kind, input_shape=(n_poses, size, size), channels=(8, 16, 32, 64),
                     latent_dim=256, latent_channels=2)
