"""Anomaly maps from the UAD VAEs, and their post-processing into lesion labels.

``anomaly_map`` is a generator (yields ``(done, total, message)``, returns an
:class:`AnomalyResult`): the FLAIR is normalised inside its brain mask and resampled to
the model grid and reconstructed by the VAE; the reconstruction is mapped back onto the
input's voxel grid and the map is the residual ``max(x - x_hat, 0)`` (hyperintensities,
default) or ``|x - x_hat|`` (the paper's) x the eroded brain mask, minus the healthy mean
residual stored with the weights, if any. It stops cleanly between batches when the
consumer stops iterating (a napari worker's ``quit``).

``intensity_anomaly_map`` is the intensity baseline as a method with the same interface:
the FLAIR normalised with its brain median at 0.5, x the eroded mask, median-filtered.
Thresholding into labels lives in :mod:`.labels`.
"""

from __future__ import annotations

import warnings
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from ..checkpoints import WeightsError, WeightsNotFoundError, load_record, shipped
from ..device import pick_device
from ..io.preprocess import (
    GridSpec,
    ModelGridVolume,
    bounding_box,
    intensity_range,
    normalize_intensity,
    resample_from_grid,
    to_model_grid,
)
from ..models.uad_dae import DAE_KINDS, DAEConfig, DenoisingUNet
from ..models.uad_vae import UADVAE, VAEConfig
from .anomaly_methods import (  # noqa: F401 (re-exported)
    ANOMALY_KINDS,
    GATE_SCALE,
    GATED_METHOD,
    GATED_MODEL,
    INTENSITY_AUTO_THRESHOLD,
    INTENSITY_MEDIAN_AT,
    INTENSITY_METHOD,
    RESIDUALS,
    modality_warning,
    weights_path,
)
from .brain import brain_mask_job
from .jobs import Progress, part_of
from .jobs import run_to_completion as run_job  # noqa: F401 (re-exported for the evaluation)
from .labels import DEFAULT_MIN_SIZE, LabelUpdater, remove_small, threshold_labels  # noqa: F401 (re-exported)
from .scan_threshold import ScanThresholdError, bulk_fit

DEFAULT_MEDIAN_SIZE = 3
def train_command(kind: str) -> str:
    """The command that (re)creates the shipped weights of ``kind``."""
    if kind in DAE_KINDS:
        return shipped(f"uad_{kind}").command
    epochs = {"dense2d": 50, "spatial2d": 30, "dense3d": 75, "spatial3d": 50}.get(kind, 50)
    return f"mentalmap train uad --kind {kind} --epochs {epochs} --period 50"


@dataclass
class AnomalyModel:
    """A loaded anomaly VAE (or denoising autoencoder) plus what was stored with it."""

    model: UADVAE | DenoisingUNet
    kind: str
    grid: GridSpec
    threshold: float | None = None
    record: dict = field(default_factory=dict)

    @property
    def reference_error(self) -> float | None:
        """Mean in-brain L1 error on the validation FLAIRs (to flag unusual inputs)."""
        value = self.record.get("final_val_l1")
        return float(value) if value is not None else None

    @property
    def healthy_residual(self) -> np.ndarray | None:
        """Voxel-wise mean ``|x - x_hat|`` of the healthy training FLAIRs on the model grid,
        stored with the weights when it helped on the validation subjects (else None)."""
        value = self.record.get("healthy_residual")
        return None if value is None else np.asarray(value, dtype=np.float32)

    @property
    def residual_kind(self) -> str:
        """The score the stored healthy residual (and threshold) were computed for."""
        return str(self.record.get("residual", "absolute"))


def load_anomaly_model(kind_or_path: str | Path, device: str | torch.device = "cpu") -> AnomalyModel:
    """Load shipped weights by kind (``dense3d`` ..., ``dae2d``) or from a file path."""
    path = weights_path(str(kind_or_path)) if str(kind_or_path) in ANOMALY_KINDS else Path(kind_or_path)
    kind = str(kind_or_path) if str(kind_or_path) in ANOMALY_KINDS else path.stem.removeprefix("uad_")
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file {path} not found; train it with: {train_command(kind)}")
    record = load_record(path)
    dae = record.get("format") == "uad_dae"
    if not dae:
        record = load_record(path, "uad_vae")
    try:
        if dae:
            model = DenoisingUNet(DAEConfig.from_dict(record["config"]))
            model.load_state_dict({k: v.float() if v.is_floating_point() else v
                                   for k, v in record["state_dict"].items()})
        else:
            model = UADVAE(VAEConfig.from_dict(record["config"]))
            model.load_state_dict(record["state_dict"])
    except (KeyError, RuntimeError, TypeError, ValueError) as error:
        raise WeightsError(
            f"weights file {path} does not match the model code ({error}); retrain with: {train_command(kind)}"
        ) from error
    device = device if isinstance(device, torch.device) else pick_device(device)
    model.to(device).eval()
    return AnomalyModel(model, record.get("kind", kind), GridSpec(**record["grid"]),
                        record.get("threshold"), record)


@dataclass
class AnomalyResult:
    """Anomaly map on the input grid plus what produced it."""

    anomaly: np.ndarray  # input shape, float32, 0 outside the (eroded) brain
    brain_mask: np.ndarray  # input shape, bool
    grid: ModelGridVolume | None  # None for the intensity method (no model grid)
    reconstruction: np.ndarray | None  # model grid
    warnings: list[str] = field(default_factory=list)
    # the gated method: (location, scale) of the brain's normalised intensity (its per-scan Auto)
    intensity_bulk: tuple[float, float] | None = None


def _reconstruct(model: UADVAE | DenoisingUNet, image: np.ndarray, device: torch.device,
                 batch_size: int) -> Generator[Progress, None, np.ndarray]:
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    if model.config.ndim == 3:
        yield 0, 1, "reconstructing the volume"
        out = model.reconstruct(x[None, None].to(device))[0, 0]
        yield 1, 1, "reconstructed"
        return out.float().cpu().numpy()
    slices = x[:, None]
    parts = []
    total = slices.shape[0]
    for start in range(0, total, batch_size):
        yield start, total, f"reconstructing slices {start}-{min(start + batch_size, total) - 1}"
        parts.append(model.reconstruct(slices[start:start + batch_size].to(device)).float().cpu())
    yield total, total, "reconstructed"
    return torch.cat(parts)[:, 0].numpy()





def brain_erosion(mask: np.ndarray, spacing: tuple[float, float, float], erosion_mm: float) -> np.ndarray:
    """``mask`` eroded by about ``erosion_mm`` (whole voxels of the finest spacing; 0 = no erosion)."""
    mask = np.asarray(mask, bool)
    iterations = int(round(erosion_mm / min(spacing))) if erosion_mm > 0 else 0
    box = bounding_box(mask, pad=1) if iterations else None  # plus a ring of background
    if box is None:
        return mask
    eroded = np.zeros_like(mask)
    eroded[box] = ndimage.binary_erosion(mask[box], iterations=iterations)
    return eroded


def median_filtered(anomaly: np.ndarray, size: int) -> np.ndarray:
    """Median filter of ``size`` voxels per axis, computed only over the non-zero box."""
    return run_job(median_filtered_job(anomaly, size))


def median_filtered_job(anomaly: np.ndarray, size: int, slabs: int = 8,
                        progress: tuple[int, int] = (0, 1)) -> Generator[Progress, None, np.ndarray]:
    """:func:`median_filtered` in ``slabs`` axial slabs (each with the rows its window needs
    from its neighbours, so the result is the same), with a progress report after each round.
    Slabs run in as many threads as torch may use (scipy releases the GIL while filtering)."""
    if size <= 1 or not anomaly.any():
        return anomaly
    box = bounding_box(anomaly > 0, pad=size // 2)
    region = anomaly[box]
    filtered = np.empty_like(region)
    reach, rows = size // 2, region.shape[0]
    edges = np.linspace(0, rows, slabs + 1).round().astype(int)

    def filter_slab(first: int, stop: int) -> None:
        low, high = max(first - reach, 0), min(stop + reach, rows)
        window = ndimage.median_filter(region[low:high], size=size, mode="constant", cval=0.0)
        filtered[first:stop] = window[first - low:stop - low]

    workers = max(1, min(slabs, torch.get_num_threads()))
    bounds = list(zip(edges[:-1], edges[1:], strict=True))
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, slabs, workers):
            list(pool.map(lambda edge: filter_slab(*edge), bounds[start:start + workers]))
            yield *progress, f"median filter {min(start + workers, slabs)}/{slabs}"
    out = np.zeros_like(anomaly)
    out[box] = filtered
    return out


def anomaly_map(
    volume: np.ndarray,
    spacing: tuple[float, float, float],
    model: AnomalyModel,
    mask: np.ndarray | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 16,
    erosion_mm: float = 3.0,
    residual: str = "positive",
    subtract_healthy: bool = True,
    median_size: int = DEFAULT_MEDIAN_SIZE,
) -> Generator[Progress, None, AnomalyResult]:
    """Anomaly map of a FLAIR on its own voxel grid: residual × eroded brain mask.

    The volume is normalised inside the brain, resampled to the model grid and
    reconstructed; the reconstruction is mapped back onto the input grid and compared
    with the normalised input at full resolution (small lesions are not blurred away by
    the model grid). ``residual`` picks the score (:data:`RESIDUALS`). When the weights
    carry a healthy residual (``AnomalyModel.healthy_residual``, same score) and
    ``subtract_healthy`` is set, that mean healthy residual is subtracted: what the model
    always reconstructs blurrily (cortex, ventricle edges) is discounted. As in the paper,
    a median filter (``median_size`` voxels wide, 0 = none) then removes isolated voxels
    and thin ribbons (cortex) while keeping lesion-sized blobs. ``mask`` is the
    brain mask (when None: the non-zero region of a skull-stripped scan, else the learned
    brain extraction, trained on T1 and FLAIR). Raises ``NoBrainError`` for a volume without a
    brain; a volume whose reconstruction error is far above the validation FLAIRs'
    (e.g. a T1) still runs, with a warning in the result.
    """
    if residual not in RESIDUALS:
        raise ValueError(f"unknown residual {residual!r}; choose one of {', '.join(RESIDUALS)}")
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {volume.shape}")
    if device is not None:
        target = device if isinstance(device, torch.device) else pick_device(device)
        model.model.to(target)
    target = next(model.model.parameters()).device
    yield 0, 4, "brain mask"
    if mask is None:
        mask = yield from brain_mask_job(volume, spacing, device=target.type)
    mask = np.asarray(mask, dtype=bool)
    yield 1, 4, "resampling to the model grid"
    grid = to_model_grid(volume, spacing, mask, model.grid)  # checks the mask's shape and size
    with torch.inference_mode():
        reconstruction = yield from _reconstruct(model.model, grid.image, target, batch_size)
    yield 3, 4, "comparing on the input grid"
    healthy = model.healthy_residual if subtract_healthy and model.residual_kind == residual else None
    if healthy is not None and healthy.shape != grid.image.shape:
        raise WeightsError(f"healthy residual shape {healthy.shape} differs from the model grid {grid.image.shape}")
    eroded = brain_erosion(mask, spacing, erosion_mm)
    yield 3, 4, "comparing on the input grid: residual"
    anomaly = np.zeros(volume.shape, np.float32)
    box = bounding_box(eroded)
    if box is not None:  # only the eroded brain's bounding box can be non-zero
        box_mapping = replace(grid.mapping, input_shape=tuple(b.stop - b.start for b in box),
                              start=tuple(s - b.start for s, b in zip(grid.mapping.start, box, strict=True)))
        if residual == "positive":
            # max(max(x - x_hat, 0) - r, 0) = max(x - (x_hat + r), 0) for r >= 0: one resampling
            expected = reconstruction if healthy is None else reconstruction + healthy
            difference = grid.normalised[box] - resample_from_grid(expected, box_mapping, order=1, fill_value=np.nan)
        else:
            difference = np.abs(grid.normalised[box]
                                - resample_from_grid(reconstruction, box_mapping, order=1, fill_value=np.nan))
            if healthy is not None:
                difference -= resample_from_grid(healthy, box_mapping, order=1, fill_value=0.0)
        difference = np.nan_to_num(difference, nan=0.0, copy=False)
        np.clip(difference, 0.0, None, out=difference)
        anomaly[box] = difference * eroded[box]
    anomaly = yield from median_filtered_job(anomaly, median_size, progress=(3, 4))
    notes = []
    reference = model.reference_error
    if reference:
        error = float(np.abs(grid.image - reconstruction)[grid.mask].mean())
        if error > 2.0 * reference:
            notes.append(
                f"reconstruction error {error:.3f} is {error / reference:.1f}x the validation FLAIRs' "
                f"({reference:.3f}): is this a FLAIR? The anomaly map may be meaningless."
            )
            warnings.warn(notes[-1], stacklevel=2)
    yield 4, 4, "done"
    return AnomalyResult(anomaly.astype(np.float32, copy=False), mask, grid, reconstruction, notes)





def intensity_score(volume: np.ndarray, spacing: tuple[float, float, float], mask: np.ndarray,
                    erosion_mm: float = 3.0, median_at: float | None = INTENSITY_MEDIAN_AT,
                    median_size: int = DEFAULT_MEDIAN_SIZE) -> np.ndarray:
    """The normalised FLAIR intensity x the eroded brain mask, median-filtered like the VAE maps.

    With ``median_at`` the brain's median maps there and its 99.5th percentile to 1 (robust
    across scanners and lesion loads); None: percentiles 0.5 / 99.5 -> 0 / 1.
    """
    return run_job(intensity_score_job(volume, spacing, mask, erosion_mm, median_at, median_size))


def intensity_score_job(volume: np.ndarray, spacing: tuple[float, float, float], mask: np.ndarray,
                        erosion_mm: float = 3.0, median_at: float | None = INTENSITY_MEDIAN_AT,
                        median_size: int = DEFAULT_MEDIAN_SIZE) -> Generator[Progress, None, np.ndarray]:
    """:func:`intensity_score` as a job (a progress report between its stages)."""
    value_range = intensity_range(volume, mask, median_at=median_at)
    normalised = normalize_intensity(volume, mask, value_range=value_range)
    yield 1, 2, "eroding the brain mask"
    normalised *= brain_erosion(mask, spacing, erosion_mm)
    filtered = yield from median_filtered_job(normalised, median_size, progress=(1, 2))
    return filtered.astype(np.float32)


def intensity_anomaly_map(volume: np.ndarray, spacing: tuple[float, float, float],
                          mask: np.ndarray | None = None, device: str | torch.device | None = None,
                          erosion_mm: float = 3.0) -> Generator[Progress, None, AnomalyResult]:
    """The intensity baseline as a job with the interface of :func:`anomaly_map`."""
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {volume.shape}")
    yield 0, 2, "brain mask"
    if mask is None:
        target = device if isinstance(device, torch.device) else pick_device(device or "auto")
        mask = yield from brain_mask_job(volume, spacing, device=target.type)
    mask = np.asarray(mask, dtype=bool)
    yield 1, 2, "normalising intensities"
    anomaly = yield from intensity_score_job(volume, spacing, mask, erosion_mm)
    yield 2, 2, "done"
    return AnomalyResult(anomaly, mask, None, None, [])


def gated_intensity(intensity: np.ndarray, residual: np.ndarray, scale: float = GATE_SCALE) -> np.ndarray:
    """The DAE-gated intensity score, in [0, 1]: ``sqrt(intensity * min(residual / scale, 1))``.

    ``intensity`` is the intensity method's map and ``residual`` the denoising autoencoder's
    ``max(x - x_hat, 0)`` (same mask and median filter). A voxel scores high only when it is
    bright for this brain *and* brighter than the DAE expects at that place, so bright normal
    tissue the DAE reconstructs is discounted. (The square root keeps the score on the
    intensity's scale; it does not change the ranking.)
    """
    if intensity.shape != residual.shape:
        raise ValueError(f"intensity {intensity.shape} and residual {residual.shape} differ")
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    out = np.zeros(intensity.shape, np.float32)
    box = bounding_box(np.asarray(residual) > 0)  # the score is 0 wherever the residual is
    if box is None:
        return out
    gate = np.clip(np.asarray(residual[box], np.float32) / np.float32(scale), 0.0, 1.0)
    gate *= np.clip(np.asarray(intensity[box], np.float32), 0.0, 1.0)
    out[box] = np.sqrt(gate, out=gate)
    return out


def gated_intensity_map(volume: np.ndarray, spacing: tuple[float, float, float], model: AnomalyModel,
                        mask: np.ndarray | None = None, device: str | torch.device | None = None,
                        erosion_mm: float = 3.0, scale: float = GATE_SCALE,
                        batch_size: int = 16) -> Generator[Progress, None, AnomalyResult]:
    """The default method (``GATED_METHOD``) as a job: the intensity method's map gated by the
    DAE ``model``'s residual (:func:`gated_intensity`), with the DAE's grid and reconstruction."""
    raw = yield from part_of(anomaly_map(volume, spacing, model, mask=mask, device=device, erosion_mm=erosion_mm,
                                         median_size=0, batch_size=batch_size), 0, 8, 10)
    if model.grid.median_at == INTENSITY_MEDIAN_AT and raw.grid is not None:
        # the DAE's input is normalised as the intensity method's: reuse it
        unfiltered = raw.grid.normalised * brain_erosion(raw.brain_mask, spacing, erosion_mm)
    else:
        unfiltered = yield from part_of(intensity_score_job(np.asarray(volume, np.float32), spacing, raw.brain_mask,
                                                            erosion_mm, median_size=0), 8, 0, 10)
    # both maps' median filters at once (each is single-threaded for the most part); a cancel
    # (the job closed at a yield) returns at once and leaves the running filters to finish unseen
    pool = ThreadPoolExecutor(2)
    try:
        filters = [pool.submit(median_filtered, a, DEFAULT_MEDIAN_SIZE) for a in (raw.anomaly, unfiltered)]
        while wait(filters, timeout=0.05).not_done:
            yield 8, 10, "median filters"
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    residual, intensity = (f.result() for f in filters)
    try:
        bulk = bulk_fit(intensity, raw.brain_mask)
    except ScanThresholdError:
        bulk = None  # no per-scan Auto: anomaly_methods.per_scan_threshold says so
    yield 10, 10, "done"
    return replace(raw, anomaly=gated_intensity(intensity, residual, scale), intensity_bulk=bulk)
