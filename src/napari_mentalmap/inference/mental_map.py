"""Mental maps: generate every missing axial slice of a volume from a few acquired ones.

:func:`hallucinate` is a plain generator: it yields ``(done, total, message)`` progress
and returns a :class:`MentalMap`. The napari widget runs it in a worker thread (stopping
it between batches cancels the job) and the CLI drives it with tqdm; both share this code.

Intensities: the model works on [0, 1] (percentiles 0.5/99.5 inside the brain); results are
mapped back to the input's intensity units. The model's mean and samples come on its grid
(with the world transform that places them over the input); :func:`on_input_grid` brings
them to the input's voxel grid and, with weights that carry input-grid settings, refines
them with the acquired slices at the input resolution (:mod:`.refined_maps`): what the dock
and ``mentalmap predict bruno`` show.
"""

from __future__ import annotations

import functools
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpoints import load_record, resolve, shipped
from ..device import pick_device
from ..io.preprocess import (
    GridMapping,
    GridSpec,
    anti_alias,
    resample_from_grid,
    resample_to_grid,
    to_model_grid,
)
from ..models.bruno import Bruno
from .brain import brain_mask_job
from .jobs import Progress, run_to_completion  # noqa: F401 (run_to_completion re-exported)
from .refined_maps import InputGridSettings, refined_maps_job

DEFAULT_WEIGHTS = shipped("bruno_t1").path


def evenly_spaced(n_contexts: int, n_poses: int) -> list[int]:
    """Context poses spread evenly over the stack (centres of equal parts), as the paper."""
    if n_contexts <= 0:
        return []
    if n_contexts >= n_poses:
        return list(range(n_poses))
    return sorted({int(round((i + 0.5) * n_poses / n_contexts - 0.5)) for i in range(n_contexts)})


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, device: str, mtime: float) -> tuple[Bruno, dict]:
    model, record = Bruno.load(path, map_location="cpu")
    return model.to(device), record


def load_bruno(weights: str | Path | None = None, device: str | torch.device = "cpu") -> tuple[Bruno, dict]:
    """Load (once, then cached) BRUNO weights: the shipped ones by default."""
    path = resolve(weights, "bruno_t1")
    if not path.is_file():
        load_record(path, "bruno")  # raises WeightsError naming the file
    return _load_cached(str(path.resolve()), str(device), path.stat().st_mtime)


@dataclass
class MentalMap:
    """Result of :func:`hallucinate` (intensities in the input's units)."""

    mean_grid: np.ndarray  # (P, S, S) mean image on the model grid
    std_grid: np.ndarray  # (P, S, S) voxel-wise std of the samples (zeros if none drawn)
    samples_grid: np.ndarray | None  # (N, P, S, S) or None
    mapping: GridMapping
    context_slices: list[int]  # input axial indices used as contexts
    context_poses: list[float]  # their (fractional) model poses
    intensity_range: tuple[float, float]
    mean_definition: str  # "latent mean" (flow inverse of the posterior mean) or "sample average"
    spacing: tuple[float, float, float] | None = None  # the input's voxel size (mm)
    brain_mask: np.ndarray | None = None  # the input-grid brain mask the model's grid was placed on
    input_grid: dict | None = None  # the weights' input-grid settings (refined_maps.InputGridSettings)

    def to_input_grid(self, grid: np.ndarray, fill_value: float = 0.0,
                      acquired: np.ndarray | None = None) -> np.ndarray:
        """Resample a (P, S, S) grid array onto the input voxel grid.

        With ``acquired`` (the input volume), its context slices are put back exactly.
        """
        return run_to_completion(self.to_input_grid_job(grid, fill_value, acquired))

    def to_input_grid_job(self, grid: np.ndarray, fill_value: float = 0.0, acquired: np.ndarray | None = None,
                          progress: Progress = (0, 1, "resampling onto the input grid"),
                          slabs: int = 4) -> Generator[Progress, None, np.ndarray]:
        """:meth:`to_input_grid` in ``slabs`` axial slabs, reporting ``progress`` after each."""
        rows = self.mapping.input_shape[0]
        out = np.empty(self.mapping.input_shape, np.float32)
        edges = [round(i * rows / slabs) for i in range(slabs + 1)]
        for first, stop in zip(edges[:-1], edges[1:], strict=True):
            out[first:stop] = resample_from_grid(grid, self.mapping, fill_value=fill_value, rows=slice(first, stop))
            yield progress
        if acquired is not None:
            out[self.context_slices] = acquired[self.context_slices]
        return out

    def grid_world_transform(self, spacing, origin) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """napari ``scale`` and ``translate`` that place a model-grid array over the input."""
        return grid_world_transform(self.mapping, spacing, origin)


def grid_world_transform(mapping: GridMapping, spacing, origin) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Scale/translate of grid arrays given the input's voxel spacing and origin (canonical)."""
    scale = tuple(float(s * d) for s, d in zip(spacing, mapping.step, strict=True))
    translate = tuple(float(o + s * a) for o, s, a in zip(origin, spacing, mapping.start, strict=True))
    return scale, translate


POSTERIOR_BLOCKS = 8  # the posterior in blocks of latent dimensions, a progress report (Cancel) after each
MEAN_BATCH = 16  # poses decoded per step of the mean image


def context_slice_images(normalised: np.ndarray, mapping: GridMapping, slices: list[int]) -> np.ndarray:
    """The acquired slices (input axial indices) resampled in-plane onto the model grid
    (with the volume's anti-aliasing, computed once for all of them).

    The anti-aliasing is 3-D, as for the training slices: a context mixes in about one
    neighbouring slice each side, as a thick-slice acquisition averages over its slab.
    """
    images = []
    filtered = anti_alias(np.asarray(normalised, dtype=np.float32), mapping.step) if slices else normalised
    for index in slices:
        single = GridMapping(mapping.input_shape, (float(index), *mapping.start[1:]), mapping.step,
                             (1, *mapping.grid_shape[1:]))
        images.append(resample_to_grid(filtered, single, prefiltered=True)[0])
    return np.stack(images) if images else np.zeros((0, *mapping.grid_shape[1:]), np.float32)


def validate_context_slices(context_slices, mapping: GridMapping) -> list[int]:
    """Check the contexts: integers inside the volume and inside the model's pose range."""
    n_slices = mapping.input_shape[0]
    first, last = mapping.covered_slices()
    checked = []
    for value in context_slices:
        index = int(value)
        if index != value:
            raise ValueError(f"context slice {value!r} is not an integer slice index")
        if not 0 <= index < n_slices:
            raise ValueError(f"context slice {index} is outside the volume (axial slices 0..{n_slices - 1})")
        if not first <= index <= last:
            raise ValueError(
                f"context slice {index} is outside the brain range the model covers "
                f"(axial slices {first}..{last}, the middle of the brain)"
            )
        checked.append(index)
    if len(set(checked)) != len(checked):
        raise ValueError(f"context slices repeat: {sorted(checked)}")
    return sorted(checked)


def hallucinate(
    volume: np.ndarray,
    spacing: tuple[float, float, float],
    context_slices: list[int],
    n_samples: int = 0,
    temperature: float = 1.0,
    seed: int = 0,
    device: str = "auto",
    weights: str | Path | None = None,
    mask: np.ndarray | None = None,
    keep_contexts: bool = True,
    mean_from_samples: bool = False,
    batch_size: int = 48,
) -> Generator[Progress, None, MentalMap]:
    """Posterior mean, std and ``n_samples`` hallucinations of every pose of ``volume``.

    ``volume`` is canonical (axis 0 axial); ``context_slices`` are its acquired axial slice
    indices (empty: prior samples, an atlas). ``keep_contexts`` puts the acquired slices
    back exactly wherever a pose coincides with one. The mean is the flow inverse of the
    posterior-mean latent, or with ``mean_from_samples`` the average of the samples.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"a 3-D volume is needed, got an array of shape {volume.shape}")
    if n_samples < 0 or n_samples > 1000:
        raise ValueError(f"number of samples must be in 0..1000, got {n_samples}")
    if mean_from_samples and n_samples < 2:
        raise ValueError("a mean from samples needs at least 2 samples")
    torch_device = pick_device(device)
    yield 0, 1, "loading model"
    model, record = load_bruno(weights, torch_device)
    spec = GridSpec(**model.config.grid) if model.config.grid else GridSpec(
        n_poses=model.n_poses, size=model.image_size)
    yield 0, 1, "preparing volume"
    volume = np.nan_to_num(volume.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if mask is None:
        yield 0, 1, "brain mask"
        mask = yield from brain_mask_job(volume, spacing, device=str(torch_device))
    yield 0, 1, "resampling to the model grid"
    prepared = to_model_grid(volume, spacing, mask, spec)
    mapping = prepared.mapping
    contexts = validate_context_slices(context_slices, mapping)
    lo, hi = prepared.intensity_range
    yield 0, 1, "context slices"
    context_images = context_slice_images(prepared.normalised, mapping, contexts)
    context_poses = [mapping.slice_to_pose(i) for i in contexts]

    n_poses = spec.n_poses
    sample_batches = max(1, int(np.ceil(n_poses / batch_size))) * n_samples
    total = 1 + (0 if mean_from_samples else 1) + sample_batches
    done = 0
    generator = torch.Generator(device=torch_device).manual_seed(int(seed))
    conditioning = f"conditioning on {len(contexts)} context slices"
    yield 0, total, conditioning
    with torch.inference_mode():
        query = torch.arange(n_poses, dtype=torch.float32, device=torch_device)
        steps = model.posterior_steps(
            torch.from_numpy(context_images).to(torch_device),
            torch.tensor(context_poses, dtype=torch.float32, device=torch_device),
            query,
            blocks=POSTERIOR_BLOCKS,
        )
        while True:
            try:
                block = next(steps)
            except StopIteration as stop:
                posterior = stop.value
                break
            yield done, total, f"{conditioning} ({block}/{POSTERIOR_BLOCKS})"
        done += 1
        yield done, total, f"conditioned on {len(contexts)} context slices"
        mean = None
        if not mean_from_samples:
            parts = []
            for start in range(0, n_poses, MEAN_BATCH):
                parts.append(model.decode(posterior.latent.mean[start:start + MEAN_BATCH],
                                          query[start:start + MEAN_BATCH]))
                yield done, total, f"mean image ({min(start + MEAN_BATCH, n_poses)}/{n_poses} poses)"
            mean = torch.cat(parts).cpu().numpy()
            done += 1
            yield done, total, "mean image"
        samples = []
        for index in range(n_samples):
            latent = posterior.latent.sample(1, temperature, generator)[0]
            parts = []
            for start in range(0, n_poses, batch_size):
                parts.append(model.decode(latent[start : start + batch_size], query[start : start + batch_size]))
                done += 1
                yield done, total, f"sample {index + 1}/{n_samples}"
            samples.append(torch.cat(parts).cpu().numpy())
    samples_grid = np.stack(samples) if samples else None
    if mean_from_samples:
        mean = samples_grid.mean(0)
    std = samples_grid.std(0) if samples_grid is not None and len(samples_grid) > 1 else np.zeros_like(mean)
    if keep_contexts:
        for image, pose in zip(context_images, context_poses, strict=True):
            if abs(pose - round(pose)) < 1e-3:
                mean[int(round(pose))] = image
                std[int(round(pose))] = 0.0
                if samples_grid is not None:
                    samples_grid[:, int(round(pose))] = image
    scale = np.float32(hi - lo)
    to_units = lambda array: array * scale + np.float32(lo)  # noqa: E731
    return MentalMap(
        mean_grid=to_units(mean).astype(np.float32),
        std_grid=(std * scale).astype(np.float32),
        samples_grid=None if samples_grid is None else to_units(samples_grid).astype(np.float32),
        mapping=mapping,
        context_slices=contexts,
        context_poses=context_poses,
        intensity_range=(float(lo), float(hi)),
        mean_definition="sample average" if mean_from_samples else "latent mean",
        spacing=tuple(float(s) for s in spacing),
        brain_mask=np.asarray(mask, bool),
        input_grid=record.get("input_grid"),
    )


@dataclass
class InputGridMaps:
    """A mental map's mean and std on the input's own voxel grid (what the dock shows)."""

    result: MentalMap
    mean: np.ndarray
    std: np.ndarray | None  # None when fewer than 2 samples were drawn; NaN where not modelled (refined)
    std_top: float  # 99.9th percentile of the positive std (display range)
    samples: np.ndarray | None = None  # (N, *input shape) refined samples, when refined and small enough
    refined: bool = False  # mean/samples refined with the acquired slices at the input resolution


def on_input_grid(result: MentalMap, volume: np.ndarray, keep_contexts: bool, refine: bool = True) -> InputGridMaps:
    """Resample mean and std onto the input grid; with ``keep_contexts`` the acquired slices
    are put back exactly into the mean and the std is 0 there (they are known). With
    ``refine`` (the default) and weights that carry input-grid settings, mean and samples are
    refined with the acquired slices at the input resolution and the std is calibrated."""
    return run_to_completion(on_input_grid_job(result, volume, keep_contexts, refine=refine))


def _display_top(std: np.ndarray) -> float:
    positive = std[std > 0]
    return max(float(np.percentile(positive, 99.9)), 1e-6) if positive.size else 1.0


def on_input_grid_job(result: MentalMap, volume: np.ndarray, keep_contexts: bool,
                      progress: tuple[int, int] = (0, 1), refine: bool = True) -> Generator[Progress, None, InputGridMaps]:
    """:func:`on_input_grid` as a job: a progress report after each map (for Cancel)."""
    settings = InputGridSettings.from_dict(result.input_grid) if refine and keep_contexts else None
    if settings is not None and result.context_slices and result.brain_mask is not None:
        maps = yield from refined_maps_job(result, volume, settings, progress)
        top = 1.0
        if maps.std is not None:
            top = _display_top(maps.std[maps.modelled])
            outside = ~maps.modelled
            outside[list(result.context_slices)] = False
            maps.std[outside] = np.nan  # not modelled (outside the brain, beyond the model's range): no value
        return InputGridMaps(result, maps.mean, maps.std, top, maps.samples, refined=True)
    acquired = volume if keep_contexts and result.context_slices else None
    mean = yield from result.to_input_grid_job(result.mean_grid, 0.0, acquired,
                                                (*progress, "resampling the mean onto the input grid"))
    std, top = None, 1.0
    if result.samples_grid is not None and len(result.samples_grid) > 1:
        std = yield from result.to_input_grid_job(result.std_grid, 0.0,
                                                   progress=(*progress, "resampling the std onto the input grid"))
        if acquired is not None:
            std[list(result.context_slices)] = 0.0
        top = _display_top(std)
    return InputGridMaps(result, mean, std, top)


def hallucinate_on_input_grid(job: Generator, volume: np.ndarray, keep_contexts: bool) -> Generator:
    """Drive a :func:`hallucinate` job, then :func:`on_input_grid` (all in the worker thread)."""
    last = (0, 1, "")
    while True:
        try:
            last = next(job)
        except StopIteration as stop:
            result: MentalMap = stop.value
            break
        yield last
    return (yield from on_input_grid_job(result, volume, keep_contexts, progress=(last[1], last[1])))
