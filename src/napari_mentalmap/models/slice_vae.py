"""Slice VAE (Volokitin et al.): a 2-D VAE on axial slices plus latent volume models.

* :class:`SliceVAE` - residual encoder/decoder, vector latent, on ``(B, 1, S, S)`` slices.
* :class:`PerSliceGaussian` - the paper's model: for every slice position a Gaussian
  (mean + full covariance) over the latent means of the training subjects' slices.
  Positions are sampled independently of each other.
* :class:`CoherentPPCA` - a low-rank Gaussian (probabilistic PCA) over the whole sequence
  of slice latents of a volume, so that a sampled volume is consistent from slice to slice.
* :class:`TissueSegNet` - a small U-Net for the realism score (background / CSF / GM / WM).

Pure torch; no napari.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .config import DictConfig


@dataclass(frozen=True)
class SliceVAEConfig(DictConfig):
    """Architecture of :class:`SliceVAE`; ``size`` must be divisible by ``2 ** len(channels[1:])``."""

    size: int = 64
    latent_dim: int = 32
    channels: tuple[int, ...] = (16, 32, 64, 64)



def _groups(channels: int) -> int:
    return 8 if channels % 8 == 0 else 1


class ResBlock(nn.Module):
    """Two 3x3 convolutions with GroupNorm + SiLU and an identity skip."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(_groups(channels), channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(_groups(channels), channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SliceVAE(nn.Module):
    """2-D VAE with a residual encoder/decoder and a ``latent_dim`` vector latent."""

    def __init__(self, config: SliceVAEConfig = SliceVAEConfig()):
        super().__init__()
        self.config = config
        ch = config.channels
        n_down = len(ch) - 1
        if config.size % (2**n_down):
            raise ValueError(f"size {config.size} is not divisible by 2**{n_down}")
        self.bottom = config.size // (2**n_down)
        enc: list[nn.Module] = [nn.Conv2d(1, ch[0], 3, padding=1)]
        for c_in, c_out in zip(ch[:-1], ch[1:], strict=True):
            enc += [ResBlock(c_in), nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)]
        enc += [ResBlock(ch[-1]), nn.GroupNorm(_groups(ch[-1]), ch[-1]), nn.SiLU()]
        self.encoder = nn.Sequential(*enc)
        flat = ch[-1] * self.bottom * self.bottom
        self.to_stats = nn.Linear(flat, 2 * config.latent_dim)
        self.from_latent = nn.Linear(config.latent_dim, flat)
        dec: list[nn.Module] = [ResBlock(ch[-1])]
        for c_in, c_out in zip(ch[::-1][:-1], ch[::-1][1:], strict=True):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1), ResBlock(c_out)]
        dec += [nn.GroupNorm(_groups(ch[0]), ch[0]), nn.SiLU(), nn.Conv2d(ch[0], 1, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 1, S, S)`` (or ``(B, S, S)``) slices -> latent mean and log-variance ``(B, D)``."""
        if x.dim() == 3:
            x = x.unsqueeze(1)
        h = self.encoder(x).flatten(1)
        mu, logvar = self.to_stats(h).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_latent(z).view(-1, self.config.channels[-1], self.bottom, self.bottom)
        return self.decoder(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, D)`` -> slices ``(B, 1, S, S)`` in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction logits, mean and log-variance (reparameterised sample decoded)."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode_logits(z), mu, logvar


def vae_loss(
    logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Negative ELBO per slice: Bernoulli (BCE) reconstruction summed over pixels + beta * KL."""
    if x.dim() == 3:
        x = x.unsqueeze(1)
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1).mean()
    kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()
    return recon + beta * kl, recon, kl


def _sym_sqrt_factor(cov: torch.Tensor) -> torch.Tensor:
    """A factor ``L`` with ``L @ L.T == cov`` for (batches of) symmetric PSD matrices."""
    eigvals, eigvecs = torch.linalg.eigh(cov)
    return eigvecs * eigvals.clamp(min=0).sqrt().unsqueeze(-2)


class PerSliceGaussian:
    """For each slice position ``p``, ``z_p ~ N(mean[p], cov[p])``, independently across ``p``.

    ``fit`` takes the latent means of training subjects, shape ``(N, P, D)``. With fewer
    subjects than latent dimensions the sample covariance is singular, so it is shrunk
    towards its diagonal by ``shrinkage`` (plus ``eps`` on the diagonal).
    """

    kind = "per_slice"

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor):
        self.mean = mean.double()
        self.cov = cov.double()
        self._factor = _sym_sqrt_factor(self.cov)

    @classmethod
    def fit(cls, latents: torch.Tensor, shrinkage: float = 0.1, eps: float = 1e-4) -> PerSliceGaussian:
        latents = torch.as_tensor(latents).double()
        if latents.dim() != 3 or latents.shape[0] < 2:
            raise ValueError(f"expected latents (N >= 2, P, D), got {tuple(latents.shape)}")
        mean = latents.mean(0)
        centred = (latents - mean).permute(1, 0, 2)  # (P, N, D)
        cov = centred.transpose(1, 2) @ centred / (latents.shape[0] - 1)
        diag = torch.diag_embed(torch.diagonal(cov, dim1=-2, dim2=-1))
        cov = (1 - shrinkage) * cov + shrinkage * diag + eps * torch.eye(cov.shape[-1], dtype=cov.dtype)
        return cls(mean, cov)

    @property
    def n_poses(self) -> int:
        return self.mean.shape[0]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` latent volumes ``(n, P, D)`` (float32), positions independent."""
        noise = torch.randn((n, *self.mean.shape), generator=generator, dtype=torch.float64)
        return (self.mean + torch.einsum("pde,npe->npd", self._factor, noise)).float()

    def principal_directions(self, pose: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top ``k`` eigenvectors ``(k, D)`` and standard deviations ``(k,)`` at ``pose``."""
        eigvals, eigvecs = torch.linalg.eigh(self.cov[pose])
        order = eigvals.argsort(descending=True)[:k]
        return eigvecs[:, order].T.float(), eigvals[order].clamp(min=0).sqrt().float()

    def state_dict(self) -> dict:
        return {"kind": self.kind, "mean": self.mean.float(), "cov": self.cov.float()}

    @classmethod
    def from_state_dict(cls, state: dict) -> PerSliceGaussian:
        return cls(state["mean"], state["cov"])


class CoherentPPCA:
    """Probabilistic PCA over the flattened latent sequence ``(P * D)`` of a whole volume.

    ``x = mean + W z + sigma * eps`` with ``z ~ N(0, I_q)``: the ``q`` components are shared
    by all slice positions, so neighbouring slices move together. ML fit (Tipping & Bishop):
    ``W = U_q (Lambda_q - sigma^2 I)^{1/2}``, ``sigma^2`` = mean of the discarded eigenvalues.
    """

    kind = "ppca"

    def __init__(self, mean: torch.Tensor, weight: torch.Tensor, sigma2: float, shape: tuple[int, int]):
        self.mean = mean.double()  # (P*D,)
        self.weight = weight.double()  # (P*D, q)
        self.sigma2 = float(sigma2)
        self.shape = (int(shape[0]), int(shape[1]))

    @classmethod
    def fit(cls, latents: torch.Tensor, rank: int | None = None) -> CoherentPPCA:
        latents = torch.as_tensor(latents).double()
        if latents.dim() != 3 or latents.shape[0] < 2:
            raise ValueError(f"expected latents (N >= 2, P, D), got {tuple(latents.shape)}")
        n, p, d = latents.shape
        flat = latents.reshape(n, p * d)
        mean = flat.mean(0)
        centred = flat - mean
        # eigen-decomposition through the small N x N Gram matrix
        _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
        eigvals = singular**2 / (n - 1)
        dim = p * d
        rank = min(rank if rank is not None else n - 2, n - 1, dim - 1)
        rank = max(rank, 1)
        discarded = eigvals[rank:].sum()
        sigma2 = float(discarded / (dim - rank))
        scale = (eigvals[:rank] - sigma2).clamp(min=0).sqrt()
        weight = vh[:rank].T * scale
        return cls(mean, weight, sigma2, (p, d))

    @property
    def n_poses(self) -> int:
        return self.shape[0]

    @property
    def rank(self) -> int:
        return self.weight.shape[1]

    def covariance(self) -> torch.Tensor:
        """The model's full covariance ``W W^T + sigma^2 I`` (``(P*D, P*D)``; small models only)."""
        return self.weight @ self.weight.T + self.sigma2 * torch.eye(self.weight.shape[0], dtype=torch.float64)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` latent volumes ``(n, P, D)`` (float32), coherent across positions."""
        z = torch.randn((n, self.rank), generator=generator, dtype=torch.float64)
        noise = torch.randn((n, self.weight.shape[0]), generator=generator, dtype=torch.float64)
        flat = self.mean + z @ self.weight.T + self.sigma2**0.5 * noise
        return flat.reshape(n, *self.shape).float()

    def state_dict(self) -> dict:
        return {
            "kind": self.kind,
            "mean": self.mean.float(),
            "weight": self.weight.float(),
            "sigma2": self.sigma2,
            "shape": list(self.shape),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> CoherentPPCA:
        return cls(state["mean"], state["weight"], state["sigma2"], tuple(state["shape"]))


class NaivePrior:
    """The VAE prior ``N(0, I)`` for every slice, independently: the naive sampler."""

    kind = "naive"

    def __init__(self, n_poses: int, latent_dim: int):
        self.shape = (n_poses, latent_dim)

    @property
    def n_poses(self) -> int:
        return self.shape[0]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn((n, *self.shape), generator=generator)


LATENT_MODELS = {"per_slice": PerSliceGaussian, "ppca": CoherentPPCA}


# --- tissue segmentation network for the realism score --------------------------------

TISSUE_CLASSES: tuple[str, ...] = ("background", "csf", "grey matter", "white matter")


class _DoubleConv(nn.Sequential):
    def __init__(self, c_in: int, c_out: int):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1),
            nn.GroupNorm(_groups(c_out), c_out),
            nn.SiLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1),
            nn.GroupNorm(_groups(c_out), c_out),
            nn.SiLU(),
        )


class TissueSegNet(nn.Module):
    """A slim 3-level U-Net: ``(B, 1, S, S)`` slice -> ``(B, n_classes, S, S)`` logits."""

    def __init__(self, n_classes: int = len(TISSUE_CLASSES), width: int = 16):
        super().__init__()
        self.n_classes = n_classes
        self.width = width
        w = width
        self.enc1, self.enc2, self.enc3 = _DoubleConv(1, w), _DoubleConv(w, 2 * w), _DoubleConv(2 * w, 4 * w)
        self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.dec2 = _DoubleConv(4 * w, 2 * w)
        self.up1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.dec1 = _DoubleConv(2 * w, w)
        self.head = nn.Conv2d(w, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(e3), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.head(d1)
