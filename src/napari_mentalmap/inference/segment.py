"""The user's lesion segmenter at inference: its inputs, its weights file and its job.

A segmenter is the user's own model (:mod:`..models.segmenter`), trained on the scans they
labelled (:mod:`..inference.segmenter_training`). Its weights file is a safe checkpoint record
(``format = "lesion_segmenter"``) with a *card*: what it was trained on, when, how long, and
the threshold the user would have had without it. Nothing here imports napari.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io.masks import bounding_box
from ..io.preprocess import intensity_range
from .brain import brain_mask_job
from .labels import DEFAULT_MIN_SIZE, remove_small
from .modality import classify_modality, modality_mismatch

Progress = tuple[int, int, str]
FORMAT = "lesion_segmenter"
EROSION_MM = 3.0
MEDIAN_AT = 0.5
INTENSITY_CEILING = 2.0
"""Normalised FLAIR is clipped to [0, this]: lesions stay above the brain's 99.5th percentile."""
PREDICT_BATCH = 16
DEFAULT_CUTOFF = 0.5
"""Probability above which a voxel is labelled (the dock's slider starts here)."""


class SegmenterInputError(ValueError):
    """An image/labels pair the segmenter must not train on or predict (the message says why)."""


def eroded_mask(mask: np.ndarray, spacing: tuple[float, float, float], erosion_mm: float = EROSION_MM) -> np.ndarray:
    """``mask`` eroded by ``erosion_mm`` (as the intensity threshold's map is)."""
    from .anomaly import brain_erosion

    return brain_erosion(mask, spacing, erosion_mm)


def normalised_flair(volume: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """FLAIR with the brain's 0.5th percentile at 0, its median at 0.5, clipped to
    [0, ``INTENSITY_CEILING``] and 0 outside ``mask`` (float32)."""
    low, high = intensity_range(volume, mask, median_at=MEDIAN_AT)
    out = (np.asarray(volume, np.float32) - np.float32(low)) * np.float32(1.0 / (high - low))
    np.clip(out, 0.0, INTENSITY_CEILING, out=out)
    out[~mask] = 0.0
    return out


@dataclass
class SegmenterInputs:
    """One volume prepared for the segmenter: normalised FLAIR and eroded mask (full grid),
    and the brain's bounding box (the only region the model looks at)."""

    flair: np.ndarray
    eroded: np.ndarray
    mask: np.ndarray
    box: tuple[slice, ...]

    def slices(self, indices: np.ndarray | list[int], box: tuple[slice, slice] | None = None) -> np.ndarray:
        """Channels ``(len(indices), 4, H, W)`` of the given axial slices (z-1, z, z+1, eroded
        mask), in-plane ``box`` (default: the brain's); neighbours beyond the volume repeat."""
        rows, cols = box if box is not None else self.box[1:]
        last = self.flair.shape[0] - 1
        out = []
        for z in indices:
            below, above = max(z - 1, 0), min(z + 1, last)
            out.append(np.stack([self.flair[below, rows, cols], self.flair[z, rows, cols],
                                 self.flair[above, rows, cols], self.eroded[z, rows, cols]]))
        return np.asarray(out, dtype=np.float32)


def prepare_inputs(volume: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float]) -> SegmenterInputs:
    """The segmenter's inputs for a FLAIR ``volume`` and its brain ``mask``."""
    mask = np.asarray(mask, bool)
    if mask.shape != np.shape(volume):
        raise SegmenterInputError(f"brain mask shape {mask.shape} differs from the image's {np.shape(volume)}")
    box = bounding_box(mask)
    if box is None:
        raise SegmenterInputError("the brain mask is empty: nothing to segment")
    return SegmenterInputs(normalised_flair(volume, mask), eroded_mask(mask, spacing), mask, box)


def check_flair(volume: np.ndarray, spacing: tuple[float, float, float], mask: np.ndarray | None = None,
                name: str = "image") -> None:
    """Refuse an image whose contrast is not FLAIR (the segmenter reads FLAIR hyperintensities)."""
    try:
        guess = classify_modality(volume, spacing, mask)
    except ValueError as error:
        raise SegmenterInputError(f"{name}: cannot tell its contrast ({error})") from None
    problem = modality_mismatch(guess, "FLAIR")
    if problem is not None:
        raise SegmenterInputError(f"{name}: {problem}; the segmenter needs the FLAIR")


def check_labels(image_shape: tuple[int, ...], labels: np.ndarray, name: str = "labels") -> np.ndarray:
    """The labels as a boolean lesion mask; refused when their grid is not the image's or they are empty."""
    labels = np.asarray(labels)
    if labels.shape != tuple(image_shape):
        raise SegmenterInputError(f"{name}: grid {labels.shape} does not match its image {tuple(image_shape)}; "
                                  "resample the labels onto the image first")
    lesions = labels > 0
    if not lesions.any():
        raise SegmenterInputError(f"{name}: no voxel is labelled; paint the lesions first")
    return lesions


@dataclass
class UserSegmenter:
    """A loaded segmenter: the torch module, its card and where it came from."""

    model: object
    card: dict
    path: Path | None = None

    def describe(self) -> str:
        """One line for the dock: scans, date and validation Dice if known."""
        card = self.card
        scans = card.get("n_scans", "?")
        when = str(card.get("trained_at", ""))[:16].replace("T", " ")
        return f"trained on {scans} scan(s) {when}, augmentation {card.get('augmentation', '?')}"


def user_segmenter_folder() -> Path:
    """Where the dock saves the user's segmenters (the user's data folder, platformdirs)."""
    import platformdirs

    return Path(platformdirs.user_data_dir("napari-mentalmap")) / "segmenters"


def save_segmenter(path: str | os.PathLike, model, card: dict) -> Path:
    """Write the segmenter and its card atomically as a safe checkpoint."""
    from ..checkpoints import save_record

    card = dict(card)
    card.setdefault("trained_at", datetime.datetime.now().isoformat(timespec="seconds"))
    record = {"format": FORMAT, "config": model.config.to_dict(), "state_dict": model.state_dict(), "card": card}
    return save_record(path, record)


def load_segmenter(path: str | os.PathLike, device: str = "cpu") -> UserSegmenter:
    """Load a user's segmenter (refused like every weights file: pickles never run)."""
    from ..checkpoints import WeightsError, load_record, load_state
    from ..models.segmenter import LesionSegmenter, SegmenterConfig

    record = load_record(path, expected_format=FORMAT, map_location=device)
    try:
        config = SegmenterConfig(**record["config"])
    except (KeyError, TypeError) as error:
        raise WeightsError(f"weights file {path} has no valid segmenter configuration ({error})") from None
    model = load_state(LesionSegmenter(config), record, path).to(device).eval()
    return UserSegmenter(model, dict(record.get("card", {})), Path(path))


@dataclass
class SegmentResult:
    """Lesion probability on the input grid, the brain mask and any warnings."""

    probability: np.ndarray
    mask: np.ndarray
    warnings: list[str] = field(default_factory=list)

    def labels(self, cutoff: float = DEFAULT_CUTOFF, min_size: int = DEFAULT_MIN_SIZE) -> np.ndarray:
        """Lesion labels (uint8): probability above ``cutoff``, components under ``min_size`` voxels removed."""
        return remove_small(self.probability > cutoff, min_size).astype(np.uint8)


def _padded(batch: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    height, width = batch.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w:
        batch = np.pad(batch, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)))
    return batch, (height, width)


def probability_job(model, inputs: SegmenterInputs, batch_size: int = PREDICT_BATCH) -> Generator[Progress, None, np.ndarray]:
    """Lesion probability of every voxel (0 outside the brain), a progress report per batch."""
    import torch

    from ..models.segmenter import channels_last

    device = next(model.parameters()).device
    out = np.zeros(inputs.flair.shape, np.float32)
    rows, cols = inputs.box[1:]
    depths = np.arange(inputs.box[0].start, inputs.box[0].stop)
    multiple = model.config.multiple
    model = channels_last(model)
    for first in range(0, len(depths), batch_size):
        chunk = depths[first:first + batch_size]
        batch, (height, width) = _padded(inputs.slices(chunk), multiple)
        tensor = torch.from_numpy(batch).to(device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            probability = torch.sigmoid(model(tensor))[:, 0, :height, :width].cpu().numpy()
        out[chunk, rows, cols] = probability
        yield first + len(chunk), len(depths), f"segmenting slice {first + len(chunk)}/{len(depths)}"
    out[~inputs.mask] = 0.0
    return out


def segment_job(volume: np.ndarray, spacing: tuple[float, float, float], segmenter: UserSegmenter,
                mask: np.ndarray | None = None, device: str = "cpu",
                check_contrast: bool = True) -> Generator[Progress, None, SegmentResult]:
    """Segment a FLAIR ``volume`` with the user's segmenter (a job: progress, cancellable between batches)."""
    volume = np.asarray(volume, np.float32)
    if volume.ndim != 3:
        raise SegmenterInputError(f"expected a 3-D volume, got shape {volume.shape}")
    yield 0, 1, "brain mask"
    if mask is None:
        mask = yield from brain_mask_job(volume, spacing, device=device)
    mask = np.asarray(mask, bool)
    warnings: list[str] = []
    if check_contrast:
        try:
            check_flair(volume, spacing, mask)
        except SegmenterInputError as error:
            warnings.append(str(error))
    inputs = prepare_inputs(volume, mask, spacing)
    probability = yield from probability_job(segmenter.model, inputs)
    return SegmentResult(probability, mask, warnings)
