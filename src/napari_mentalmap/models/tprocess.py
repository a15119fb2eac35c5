"""Student-t (and Gaussian) processes over flow latents, one independent process per
latent dimension.

Parametrisation follows BRUNO: ``K`` is the *covariance* of the process (finite for
ν > 2), so a univariate predictive with variance ``s`` and ``ν'`` degrees of freedom
has scale² ``s (ν' - 2) / ν'``.

Two covariance families:

* :class:`ExchangeableProcess` (the paper): ``K_ii = v``, ``K_ij = ρ`` (0 < ρ < v). The
  predictive of the next element depends only on the count and sum of the previous
  ones, so it is updated in O(1) per context (:meth:`ExchangeableProcess.update`).
* :class:`PoseAwareProcess` (our extension): ``K_ij = w δ_ij + c + a exp(-|p_i - p_j| / ℓ)``
  with poses ``p`` in [0, 1] (fraction of the pose range), so a context next to the
  query counts more than one far away. Exact conditionals use small batched Cholesky
  factorisations (contexts are few).

Both give ``log_prob`` of a sequence (chain rule, each element given its
predecessors), and the joint posterior over any set of query poses given contexts,
from which means and (jointly coherent) samples are drawn.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ALL_DIMS = slice(None)


def _inverse_softplus(value: float) -> float:
    return math.log(math.expm1(value))


def student_t_log_prob(x: torch.Tensor, mean: torch.Tensor, variance: torch.Tensor, dof: torch.Tensor) -> torch.Tensor:
    """Log density of a univariate Student-t given its mean, *variance* and dof (> 2)."""
    scale_sq = variance * (dof - 2) / dof
    return (
        torch.lgamma((dof + 1) / 2)
        - torch.lgamma(dof / 2)
        - 0.5 * torch.log(math.pi * dof * scale_sq)
        - (dof + 1) / 2 * torch.log1p((x - mean) ** 2 / (dof * scale_sq))
    )


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    return -0.5 * (math.log(2 * math.pi) + torch.log(variance) + (x - mean) ** 2 / variance)


@dataclass
class Posterior:
    """Joint predictive over query poses given contexts, per latent dimension.

    ``mean``: (Q, D); ``cov_factor``: (D, Q, Q) lower Cholesky factor of the Gaussian
    conditional covariance; ``dof``: (D,) or None for a Gaussian; ``variance_factor``:
    (D,) the Student-t rescaling ``(ν + β - 2) / (ν + n - 2)`` (ones for a Gaussian).
    """

    mean: torch.Tensor
    cov_factor: torch.Tensor
    dof: torch.Tensor | None
    variance_factor: torch.Tensor
    n_contexts: int

    @property
    def variance(self) -> torch.Tensor:
        """Marginal predictive variance per query and dimension, (Q, D)."""
        gaussian_variance = (self.cov_factor**2).sum(-1).transpose(0, 1)
        return gaussian_variance * self.variance_factor

    def sample(self, n_samples: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Jointly coherent samples over the queries, (n_samples, Q, D)."""
        q, d = self.mean.shape
        eps = torch.randn(n_samples, d, q, 1, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        correlated = (self.cov_factor @ eps).squeeze(-1).transpose(1, 2)  # (n, Q, D)
        scale = self.variance_factor
        if self.dof is not None:
            dof = self.dof + self.n_contexts
            chi2 = torch._standard_gamma((dof / 2).expand(n_samples, d).contiguous(), generator=generator) * 2
            scale = scale * (dof - 2) / chi2  # (n, D): mixing variable of the multivariate t
        return self.mean + temperature * correlated * scale.sqrt().unsqueeze(-2)


def concatenate_posteriors(parts: list[Posterior]) -> Posterior:
    """One posterior from posteriors of consecutive blocks of latent dimensions (the
    dimensions are independent, so this equals the posterior computed in one go)."""
    dofs = [part.dof for part in parts]
    return Posterior(
        torch.cat([part.mean for part in parts], dim=1),
        torch.cat([part.cov_factor for part in parts], dim=0),
        None if dofs[0] is None else torch.cat(dofs),
        torch.cat([part.variance_factor for part in parts]),
        parts[0].n_contexts,
    )


class LatentProcess(nn.Module, ABC):
    """Base class: prior mean, dof and covariance per latent dimension."""

    def __init__(self, dim: int, student_t: bool = True):
        super().__init__()
        self.dim = dim
        self.student_t = student_t
        self.prior_mean = nn.Parameter(torch.zeros(dim))
        self.raw_dof = nn.Parameter(torch.full((dim,), _inverse_softplus(10.0)))

    @property
    def dof(self) -> torch.Tensor | None:
        return 2.0 + F.softplus(self.raw_dof) + 1e-3 if self.student_t else None

    @abstractmethod
    def covariance(self, poses_a: torch.Tensor, poses_b: torch.Tensor | None = None,
                   dims: slice = ALL_DIMS) -> torch.Tensor:
        """Covariance between elements at poses_a (..., n) and at poses_b (..., m): (..., D, n, m).

        ``poses_b=None`` means the elements of ``poses_a`` with themselves (white noise on
        the diagonal); otherwise the two sets are different elements, even at equal poses.
        ``dims`` restricts it to those latent dimensions (they are independent).
        """

    def _chol(self, poses: torch.Tensor, dims: slice = ALL_DIMS) -> torch.Tensor:
        return torch.linalg.cholesky(self.covariance(poses, dims=dims))

    def _innovations(self, z: torch.Tensor, poses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised innovations and Gaussian conditional variances, both (B, D, n)."""
        chol = self._chol(poses)  # (B, D, n, n)
        centred = (z - self.prior_mean).transpose(1, 2).unsqueeze(-1)  # (B, D, n, 1)
        innovations = torch.linalg.solve_triangular(chol, centred, upper=False).squeeze(-1)
        return innovations, torch.diagonal(chol, dim1=-2, dim2=-1) ** 2

    def prediction_errors(self, z: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        """z_i minus its predictive mean given z_<i (the conditional mean), (B, D, n)."""
        innovations, cond_variance = self._innovations(z, poses)
        return innovations * cond_variance.sqrt()

    def log_prob(self, z: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        """Sum over elements and dimensions of log p(z_i | z_<i); z (B, n, D), poses (B, n).

        Returns (B, n): the log-likelihood of each element given its predecessors.
        """
        n = z.shape[1]
        innovations, cond_variance = self._innovations(z, poses)
        # standardised innovation e_i = (z_i - mu_i)/sqrt(s_i): z_i - mu_i = e_i sqrt(s_i)
        residual = innovations * cond_variance.sqrt()
        if not self.student_t:
            return gaussian_log_prob(residual, torch.zeros_like(residual), cond_variance).sum(1)
        beta = torch.cumsum(innovations**2, dim=-1) - innovations**2  # sum over predecessors
        count = torch.arange(n, device=z.device, dtype=z.dtype)
        dof = self.dof[None, :, None]
        predictive_dof = dof + count
        predictive_variance = cond_variance * (dof + beta - 2) / (dof + count - 2)
        return student_t_log_prob(residual, torch.zeros_like(residual), predictive_variance, predictive_dof).sum(1)

    def posterior(
        self, context_z: torch.Tensor, context_poses: torch.Tensor, query_poses: torch.Tensor,
        dims: slice = ALL_DIMS,
    ) -> Posterior:
        """Joint predictive at ``query_poses`` (Q,) given contexts (n, D) at (n,) poses
        (for the latent dimensions ``dims`` only: see :func:`concatenate_posteriors`)."""
        prior_mean = self.prior_mean[dims]
        dof = None if self.dof is None else self.dof[dims]
        d = len(prior_mean)
        mean = prior_mean.expand(len(query_poses), d)
        k_qq = self.covariance(query_poses, dims=dims)  # (D, Q, Q)
        jitter = 1e-5 * torch.eye(len(query_poses), device=k_qq.device, dtype=k_qq.dtype)
        n = len(context_poses)
        if n == 0:
            factor = torch.ones(d, device=mean.device, dtype=mean.dtype)
            return Posterior(mean.clone(), torch.linalg.cholesky(k_qq + jitter), dof, factor, 0)
        chol_cc = self._chol(context_poses, dims)  # (D, n, n)
        k_cq = self.covariance(context_poses, query_poses, dims=dims)  # (D, n, Q)
        centred = (context_z[:, dims] - prior_mean).transpose(0, 1).unsqueeze(-1)  # (D, n, 1)
        white = torch.linalg.solve_triangular(chol_cc, centred, upper=False)  # (D, n, 1)
        projection = torch.linalg.solve_triangular(chol_cc, k_cq, upper=False)  # (D, n, Q)
        mean = mean + (projection.transpose(1, 2) @ white).squeeze(-1).transpose(0, 1)
        cond_cov = k_qq - projection.transpose(1, 2) @ projection
        cov_factor = torch.linalg.cholesky(cond_cov + jitter)
        if dof is None:
            factor = torch.ones(d, device=mean.device, dtype=mean.dtype)
        else:
            beta = (white.squeeze(-1) ** 2).sum(-1)
            factor = (dof + beta - 2) / (dof + n - 2)
        return Posterior(mean, cov_factor, dof, factor, n)


class ExchangeableProcess(LatentProcess):
    """The paper's exchangeable process: covariance v on the diagonal, ρ off it."""

    kind = "exchangeable"

    def __init__(self, dim: int, student_t: bool = True, variance: float = 1.0, correlation: float = 0.5):
        super().__init__(dim, student_t)
        self.raw_variance = nn.Parameter(torch.full((dim,), _inverse_softplus(variance)))
        # ρ = v * sigmoid(raw): always 0 < ρ < v
        self.raw_correlation = nn.Parameter(torch.full((dim,), math.log(correlation / (1 - correlation))))

    @property
    def variance(self) -> torch.Tensor:
        return F.softplus(self.raw_variance) + 1e-4

    @property
    def covariance_offdiag(self) -> torch.Tensor:
        return self.variance * torch.sigmoid(self.raw_correlation)

    def covariance(self, poses_a: torch.Tensor, poses_b: torch.Tensor | None = None,
                   dims: slice = ALL_DIMS) -> torch.Tensor:
        """Poses are ignored: v between an element and itself, ρ between any two others."""
        v, rho = self.variance[dims], self.covariance_offdiag[dims]
        n = poses_a.shape[-1]
        m = n if poses_b is None else poses_b.shape[-1]
        shape = (*poses_a.shape[:-1], len(v), n, m)
        out = rho[:, None, None].expand(shape).clone()
        if poses_b is None:
            out = out + (v - rho)[:, None, None] * torch.eye(n, device=out.device, dtype=out.dtype)
        return out

    def update(self, state: dict | None, z: torch.Tensor) -> dict:
        """O(1) recurrent update with one more context ``z`` (D,): returns the new state."""
        if state is None:
            state = {"count": 0, "sum": torch.zeros_like(z), "beta": torch.zeros_like(z)}
        mean, variance = self.predictive(state)
        beta = state["beta"] + (z - mean) ** 2 / variance_gaussian(self, state["count"])
        return {"count": state["count"] + 1, "sum": state["sum"] + z - self.prior_mean, "beta": beta}

    def predictive(self, state: dict | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and Student-t variance of the next element given the recurrent state."""
        count = 0 if state is None else state["count"]
        v, rho = self.variance, self.covariance_offdiag
        if count == 0:
            return self.prior_mean.expand(self.dim), v
        weight = rho / (v + (count - 1) * rho)
        mean = self.prior_mean + weight * state["sum"]
        gaussian_variance = variance_gaussian(self, count)
        if self.dof is None:
            return mean, gaussian_variance
        return mean, gaussian_variance * (self.dof + state["beta"] - 2) / (self.dof + count - 2)


def variance_gaussian(process: ExchangeableProcess, count: int) -> torch.Tensor:
    """Gaussian conditional variance of the next element after ``count`` contexts."""
    v, rho = process.variance, process.covariance_offdiag
    if count == 0:
        return v
    return v - count * rho**2 / (v + (count - 1) * rho)


class PoseAwareProcess(LatentProcess):
    """Covariance ``w δ + c + a k(|Δp| / ℓ)`` per dimension, with ``k`` exponential
    (``exp(-r)``), Matérn-3/2 (``(1 + √3 r) exp(-√3 r)``) or Matérn-5/2 (smoother still);
    ``Δp`` is the pose distance as a fraction of the pose range."""

    kind = "pose_aware"
    KERNELS = ("exponential", "matern32", "matern52")

    def __init__(self, dim: int, n_poses: int, student_t: bool = True, kernel: str = "exponential",
                 components: int = 1):
        super().__init__(dim, student_t)
        if kernel not in self.KERNELS:
            raise ValueError(f"unknown kernel {kernel!r} (use one of {self.KERNELS})")
        if components not in (1, 2):
            raise ValueError("the pose kernel has 1 or 2 components (one length scale each)")
        self.kernel = kernel
        self.n_poses = n_poses
        if components == 2:  # a second, longer-range component
            self.raw_amplitude2 = nn.Parameter(torch.full((dim,), _inverse_softplus(0.3)))
            self.raw_length2 = nn.Parameter(torch.full((dim,), _inverse_softplus(0.4)))
        self.raw_noise = nn.Parameter(torch.full((dim,), _inverse_softplus(0.3)))
        self.raw_constant = nn.Parameter(torch.full((dim,), _inverse_softplus(0.2)))
        self.raw_amplitude = nn.Parameter(torch.full((dim,), _inverse_softplus(0.5)))
        self.raw_length = nn.Parameter(torch.full((dim,), _inverse_softplus(0.1)))

    @property
    def parameters_positive(self) -> dict[str, torch.Tensor]:
        values = {
            "noise": F.softplus(self.raw_noise) + 1e-4,
            "constant": F.softplus(self.raw_constant),
            "amplitude": F.softplus(self.raw_amplitude),
            "length": F.softplus(self.raw_length) + 1e-3,
        }
        if hasattr(self, "raw_amplitude2"):
            values["amplitude2"] = F.softplus(self.raw_amplitude2)
            values["length2"] = F.softplus(self.raw_length2) + 1e-3
        return values

    def _decay(self, distance: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        scaled = distance / length[:, None, None]
        if self.kernel == "matern32":
            scaled = math.sqrt(3) * scaled
            return (1 + scaled) * torch.exp(-scaled)
        if self.kernel == "matern52":
            scaled = math.sqrt(5) * scaled
            return (1 + scaled + scaled**2 / 3) * torch.exp(-scaled)
        return torch.exp(-scaled)

    def covariance(self, poses_a: torch.Tensor, poses_b: torch.Tensor | None = None,
                   dims: slice = ALL_DIMS) -> torch.Tensor:
        p = {name: value[dims] for name, value in self.parameters_positive.items()}
        same_elements = poses_b is None
        poses_b = poses_a if poses_b is None else poses_b
        scale = max(self.n_poses - 1, 1)
        distance = (poses_a.unsqueeze(-1) - poses_b.unsqueeze(-2)).abs().unsqueeze(-3) / scale  # (..., 1, n, m)
        out = p["amplitude"][:, None, None] * self._decay(distance, p["length"]) + p["constant"][:, None, None]
        if "amplitude2" in p:
            out = out + p["amplitude2"][:, None, None] * self._decay(distance, p["length2"])
        if same_elements:
            eye = torch.eye(poses_a.shape[-1], device=out.device, dtype=out.dtype)
            out = out + p["noise"][:, None, None] * eye
        return out


def make_process(kind: str, dim: int, n_poses: int, student_t: bool = True,
                 kernel: str = "exponential", components: int = 1) -> LatentProcess:
    """Build a latent process by name: ``exchangeable`` or ``pose_aware`` (with ``kernel``)."""
    if kind == "exchangeable":
        return ExchangeableProcess(dim, student_t)
    if kind == "pose_aware":
        return PoseAwareProcess(dim, n_poses, student_t, kernel, components)
    raise ValueError(f"unknown process {kind!r} (use 'exchangeable' or 'pose_aware')")
