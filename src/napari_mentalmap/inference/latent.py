"""Slice VAE inference: load the shipped weights, encode / decode slices, walk and sample the
latent space, and sample whole volumes from a latent volume model.

Long jobs (:func:`sample_volume`, :func:`encode_volume`) are generators that yield
``(done, total, message)`` and return numpy arrays (``StopIteration.value``); :func:`run`
drives one to completion. Everything runs under ``torch.inference_mode()``.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpoints import WeightsError, load_record, resolve, shipped
from ..device import pick_device
from ..io.preprocess import GridMapping, GridSpec, to_model_grid
from ..models.kinds import LATENT_MODEL_NAMES, STRATEGIES  # noqa: F401 (re-exported)
from ..models.slice_vae import (
    CoherentPPCA,
    NaivePrior,
    PerSliceGaussian,
    SliceVAE,
    SliceVAEConfig,
    TissueSegNet,
)

WEIGHTS = shipped("slice_vae").path
TRAIN_COMMAND = "mentalmap train slicevae"

Progress = Generator[tuple[int, int, str], None, np.ndarray]


@dataclass
class SliceVAEBundle:
    """A loaded slice VAE with its latent volume models and training latents."""

    model: SliceVAE
    per_slice: PerSliceGaussian
    ppca: CoherentPPCA
    train_latents: torch.Tensor  # (N, P, D) latent means of the training subjects
    spec: GridSpec
    device: torch.device
    info: dict

    @property
    def latent_dim(self) -> int:
        return self.model.latent_dim

    @property
    def n_poses(self) -> int:
        return self.spec.n_poses

    def latent_model(self, name: str):
        """``"ppca"`` (coherent), ``"per_slice"`` (the paper's) or ``"naive"`` (N(0, I))."""
        if name == "ppca":
            return self.ppca
        if name == "per_slice":
            return self.per_slice
        if name == "naive":
            return NaivePrior(self.n_poses, self.latent_dim)
        raise ValueError(f"unknown latent model {name!r}; choose one of {', '.join(LATENT_MODEL_NAMES)}")


def load_slice_vae(path: str | Path | None = None, device: str = "auto") -> SliceVAEBundle:
    """Load ``weights/slice_vae.pt`` (or ``path``); a clear error names the training command."""
    path = resolve(path, "slice_vae")
    payload = load_record(path, "slice_vae")
    try:
        model = SliceVAE(SliceVAEConfig.from_dict(payload["config"]))
        model.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError, TypeError) as error:
        raise WeightsError(
            f"{path} is not a matching slice VAE checkpoint ({error}); retrain with `{TRAIN_COMMAND}`"
        ) from error
    target = pick_device(device)
    model.to(target).eval()
    info = {k: payload.get(k) for k in ("metrics", "split", "command", "train_config")}
    return SliceVAEBundle(
        model=model,
        per_slice=PerSliceGaussian.from_state_dict(payload["per_slice"]),
        ppca=CoherentPPCA.from_state_dict(payload["ppca"]),
        train_latents=payload["train_latents"].float(),
        spec=GridSpec(**payload["grid"]),
        device=target,
        info=info,
    )


def encode(bundle: SliceVAEBundle, slices: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Latent means ``(N, D)`` of model-grid slices ``(N, S, S)`` (or one ``(S, S)`` -> ``(D,)``)."""
    slices = np.asarray(slices, dtype=np.float32)
    single = slices.ndim == 2
    if single:
        slices = slices[None]
    size = bundle.spec.size
    if slices.shape[-2:] != (size, size):
        raise ValueError(f"slices must be {size}x{size} (model grid), got {slices.shape[-2:]}")
    out = []
    with torch.inference_mode():
        for i in range(0, len(slices), batch_size):
            batch = torch.from_numpy(slices[i : i + batch_size]).unsqueeze(1).to(bundle.device)
            out.append(bundle.model.encode(batch)[0].cpu())
    latents = torch.cat(out).numpy()
    return latents[0] if single else latents


def decode(bundle: SliceVAEBundle, latents: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Slices ``(N, S, S)`` in [0, 1] of latents ``(N, D)`` (or one ``(D,)`` -> ``(S, S)``)."""
    latents = np.asarray(latents, dtype=np.float32)
    single = latents.ndim == 1
    if single:
        latents = latents[None]
    out = []
    with torch.inference_mode():
        for i in range(0, len(latents), batch_size):
            batch = torch.from_numpy(latents[i : i + batch_size]).to(bundle.device)
            out.append(bundle.model.decode(batch)[:, 0].cpu())
    slices = torch.cat(out).numpy()
    return slices[0] if single else slices


def run(job: Progress) -> np.ndarray:
    """Drive a progress generator to its end and return its value."""
    while True:
        try:
            next(job)
        except StopIteration as stop:
            return stop.value


def sample_latent_volumes(bundle: SliceVAEBundle, n: int, model: str = "ppca", seed: int | None = None) -> np.ndarray:
    """``n`` latent volumes ``(n, P, D)`` from a latent volume model."""
    generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    return bundle.latent_model(model).sample(n, generator=generator).numpy()


def sample_volume(
    bundle: SliceVAEBundle, n: int = 1, model: str = "ppca", seed: int | None = None
) -> Progress:
    """Sample ``n`` volumes ``(n, P, S, S)`` with a latent model; yields once per volume."""
    latents = sample_latent_volumes(bundle, n, model, seed)
    volumes = []
    for i in range(n):
        yield i, n, f"decoding volume {i + 1}/{n} ({model})"
        volumes.append(decode(bundle, latents[i]))
    yield n, n, "done"
    return np.stack(volumes)


def encode_volume(bundle: SliceVAEBundle, grid_volume: np.ndarray, chunk: int = 16) -> Progress:
    """Latent means ``(P, D)`` of a model-grid volume ``(P, S, S)``, in chunks of slices."""
    grid_volume = np.asarray(grid_volume, dtype=np.float32)
    out = []
    total = len(grid_volume)
    for start in range(0, total, chunk):
        yield start, total, "encoding slices"
        out.append(encode(bundle, grid_volume[start : start + chunk]))
    yield total, total, "done"
    return np.concatenate(out)


@dataclass
class EncodedVolume:
    """Latents of every model-grid slice of a volume and their decoded reconstruction."""

    latents: np.ndarray  # (P, D) latent means
    reconstruction: np.ndarray  # (P, S, S) in [0, 1], decoded latents
    prepared: PreparedVolume


def encode_volume_job(bundle: SliceVAEBundle, data: np.ndarray,
                      spacing: tuple[float, float, float]) -> Generator[tuple[int, int, str], None, EncodedVolume]:
    """Bring a 3-D volume (canonical axes) to the model grid, encode every slice and decode
    the latents again (what ``mentalmap predict latent`` writes)."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {data.shape}")
    yield 0, 3, "bringing the image to the model grid"
    prepared = prepare_volume(data, tuple(spacing), bundle.spec)
    yield 1, 3, "encoding slices"
    latents = encode(bundle, prepared.grid)
    yield 2, 3, "decoding latents"
    reconstruction = decode(bundle, latents)
    yield 3, 3, "done"
    return EncodedVolume(latents, reconstruction, prepared)


def principal_directions(bundle: SliceVAEBundle, pose: int, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` principal directions ``(k, D)`` and their std ``(k,)`` at slice position ``pose``."""
    pose = int(np.clip(pose, 0, bundle.n_poses - 1))
    directions, stds = bundle.per_slice.principal_directions(pose, k)
    return directions.numpy(), stds.numpy()


def walk(base: np.ndarray, directions: np.ndarray, stds: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """``base + sum_k steps[k] * stds[k] * directions[k]`` (steps in standard deviations)."""
    steps = np.asarray(steps, dtype=np.float32)
    return (np.asarray(base, np.float32) + (steps * stds) @ directions).astype(np.float32)


def interpolate(z0: np.ndarray, z1: np.ndarray, t: float) -> np.ndarray:
    """Linear interpolation ``(1 - t) z0 + t z1`` of latents (any matching shapes)."""
    return ((1.0 - t) * np.asarray(z0, np.float32) + t * np.asarray(z1, np.float32)).astype(np.float32)


def strategy_latents(
    bundle: SliceVAEBundle,
    strategy: str,
    pose: int,
    n: int,
    instances: np.ndarray | None = None,
    scale: float = 0.5,
    seed: int | None = None,
) -> np.ndarray:
    """``n`` slice latents ``(n, D)`` at ``pose`` by one of the slides' sampling strategies.

    * ``naive``: the prior N(0, I).
    * ``instance-specific``: around one encoded instance, ``z + scale * N(0, cov[pose])``.
    * ``mixed-instance``: a random convex mix of two instances plus a little such noise.

    Without given instances, the training subjects' latents at ``pose`` are used.
    """
    rng = np.random.default_rng(seed)
    d = bundle.latent_dim
    if strategy == "naive":
        return rng.standard_normal((n, d)).astype(np.float32)
    pose = int(np.clip(pose, 0, bundle.n_poses - 1))
    pool = bundle.train_latents[:, pose].numpy() if instances is None else np.atleast_2d(instances)
    factor = np.linalg.cholesky(bundle.per_slice.cov[pose].numpy())
    noise = rng.standard_normal((n, d)) @ factor.T
    if strategy == "instance-specific":
        base = np.repeat(pool[:1], n, axis=0) if instances is not None else pool[rng.integers(len(pool), size=n)]
        return (base + scale * noise).astype(np.float32)
    if strategy == "mixed-instance":
        if len(pool) < 2:
            raise ValueError("mixed-instance sampling needs at least two instances")
        first = rng.integers(len(pool), size=n)
        second = (first + rng.integers(1, len(pool), size=n)) % len(pool)
        weights = rng.uniform(0, 1, size=(n, 1))
        mixed = weights * pool[first] + (1 - weights) * pool[second]
        return (mixed + 0.25 * scale * noise).astype(np.float32)
    raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")


@dataclass
class LatentEmbedding:
    """2-D PCA of the training slice latents, for the embedding plot."""

    mean: np.ndarray  # (D,)
    components: np.ndarray  # (2, D)
    points: np.ndarray  # (N * P, 2)
    poses: np.ndarray  # (N * P,) slice position of every point
    subjects: np.ndarray  # (N * P,) subject index of every point
    latents: np.ndarray  # (N * P, D)

    def project(self, z: np.ndarray) -> np.ndarray:
        return (np.asarray(z, np.float32) - self.mean) @ self.components.T

    def nearest(self, xy: tuple[float, float]) -> int:
        """Index of the point nearest to ``xy`` in the plot."""
        return int(np.argmin(((self.points - np.asarray(xy)) ** 2).sum(1)))


def latent_embedding(bundle: SliceVAEBundle) -> LatentEmbedding:
    """PCA (2 components) of every training subject's slice latents."""
    latents = bundle.train_latents.numpy()
    n, p, d = latents.shape
    flat = latents.reshape(n * p, d)
    mean = flat.mean(0)
    _, _, vh = np.linalg.svd(flat - mean, full_matrices=False)
    components = vh[:2].astype(np.float32)
    points = (flat - mean) @ components.T
    poses = np.tile(np.arange(p), n)
    subjects = np.repeat(np.arange(n), p)
    return LatentEmbedding(mean.astype(np.float32), components, points.astype(np.float32), poses, subjects, flat)


@dataclass
class PreparedVolume:
    """A user volume on the model grid, with a note on what was done to it."""

    grid: np.ndarray  # (P, S, S) in [0, 1]
    mapping: GridMapping | None
    note: str


def prepare_volume(
    data: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0), spec: GridSpec | None = None
) -> PreparedVolume:
    """Bring a 3-D volume (canonical axes) or a 2-D slice to the model grid.

    A volume already on the model grid (``(P, S, S)`` in [0, 1]) is used as is; other 3-D
    volumes go through :func:`~napari_mentalmap.io.preprocess.to_model_grid` (automatic brain
    mask); a 2-D slice is normalised by its percentiles and resized to ``S x S``.
    """
    from skimage.transform import resize

    spec = spec or GridSpec()
    data = np.asarray(data, dtype=np.float32)
    size = spec.size
    if data.ndim == 3 and data.shape == (spec.n_poses, size, size) and data.min() >= 0 and data.max() <= 1:
        return PreparedVolume(data, None, "")
    if data.ndim == 3:
        grid = to_model_grid(data, spacing, None, spec)
        return PreparedVolume(
            grid.image, grid.mapping,
            f"resampled {data.shape} to the model grid {grid.image.shape} (automatic brain mask)",
        )
    if data.ndim == 2:
        lo, hi = np.percentile(data, [0.5, 99.5])
        scaled = np.clip((data - lo) / max(hi - lo, 1e-6), 0, 1)
        note = "" if data.shape == (size, size) else f"resized slice {data.shape} to {size}x{size}"
        resized = resize(scaled, (size, size), anti_aliasing=True).astype(np.float32)
        return PreparedVolume(resized[None], None, note)
    raise ValueError(f"expected a 2-D slice or 3-D volume, got shape {data.shape}")


@torch.inference_mode()
def segment_volumes(model: TissueSegNet, volumes: np.ndarray, batch_size: int = 96) -> np.ndarray:
    """Tissue classes ``(N, P, S, S)`` uint8 of ``(N, P, S, S)`` volumes."""
    model.eval()
    volumes = torch.as_tensor(np.asarray(volumes, dtype=np.float32))
    shape = volumes.shape
    flat = volumes.reshape(-1, 1, *shape[-2:])
    out = [model(flat[i : i + batch_size]).argmax(1) for i in range(0, len(flat), batch_size)]
    return torch.cat(out).reshape(shape).numpy().astype(np.uint8)


@dataclass
class EncodedSlice:
    """A slice of a user volume encoded at its model-grid position, and where that grid sits."""

    z: np.ndarray  # (D,)
    pose: int
    note: str
    grid_scale: tuple[float, float, float] | None  # napari scale of the model grid over the input
    grid_translate: tuple[float, float, float] | None  # (None for a 2-D slice: no placement)


def encode_slice_job(bundle: SliceVAEBundle, data: np.ndarray, spacing: tuple[float, ...],
                     origin: tuple[float, ...], slice_index: float | None, default_pose: int,
                     cache: dict | None = None) -> Generator[tuple[int, int, str], None, EncodedSlice]:
    """Bring ``data`` (3-D canonical volume or 2-D slice) to the model grid and encode the
    slice at input index ``slice_index`` (its nearest model position; ``default_pose`` for a
    2-D slice). ``cache`` (a dict) keeps the last prepared volume between calls."""
    from .mental_map import grid_world_transform

    data = np.asarray(data, dtype=np.float32)
    key = (id(data), data.shape, tuple(spacing))
    yield 0, 2, "bringing the image to the model grid"
    if cache is not None and key in cache:
        prepared = cache[key]
    else:
        prepared = prepare_volume(data, tuple(spacing) if data.ndim == 3 else (1.0, *spacing[-2:]), bundle.spec)
        if cache is not None:
            cache.clear()
            cache[key] = prepared
    note = prepared.note
    scale = translate = None
    if data.ndim == 2:
        pose, grid_slice = int(default_pose), prepared.grid[0]
    else:
        index = float(slice_index or 0.0)
        if prepared.mapping is None:
            pose = int(np.clip(round(index), 0, bundle.n_poses - 1))
            scale, translate = tuple(float(s) for s in spacing[-3:]), tuple(float(o) for o in origin[-3:])
        else:
            raw = prepared.mapping.slice_to_pose(index)
            pose = int(np.clip(round(raw), 0, bundle.n_poses - 1))
            if abs(raw - pose) > 0.5:
                note = (note + "; " if note else "") + (
                    f"slice {index:.0f} is outside the modelled range (middle 75 % of the brain): "
                    f"using the nearest position {pose}")
            scale, translate = grid_world_transform(prepared.mapping, spacing[-3:], origin[-3:])
        grid_slice = prepared.grid[pose]
    yield 1, 2, "encoding"
    z = encode(bundle, grid_slice)
    yield 2, 2, "encoded"
    return EncodedSlice(z, pose, note, scale, translate)
