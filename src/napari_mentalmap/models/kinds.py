"""Names of model families and sampling strategies (no torch: the docks list them before torch loads)."""

from __future__ import annotations

KINDS: tuple[str, ...] = ("dense2d", "dense3d", "spatial2d", "spatial3d")
"""The anomaly VAEs of Lambert et al.: dense / spatial latent, 2-D slices / 3-D volumes."""
DAE_KINDS: tuple[str, ...] = ("dae2d",)
"""The denoising autoencoder (Kascenas et al. 2022)."""
LATENT_MODEL_NAMES: tuple[str, ...] = ("ppca", "per_slice", "naive")
"""Latent volume models of the slice VAE: coherent PPCA, the paper's per-slice Gaussian, N(0, I)."""
STRATEGIES: tuple[str, ...] = ("naive", "instance-specific", "mixed-instance")
"""How the latent explorer samples slices (Volokitin et al. 2020)."""
