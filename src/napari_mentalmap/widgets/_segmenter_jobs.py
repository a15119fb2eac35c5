"""The Lesion segmenter dock's jobs (no Qt: plain generators run by ``_worker.JobRunner``).

:func:`training_job` checks every pair before any training (a brain mask and the FLAIR check
per image; a bad pair stops it with its reason and nothing is trained or saved), trains, and
saves the model with its card atomically. :func:`prediction_job` segments an image and
prepares the labels' proposal at the cutoff in the worker thread.
"""

from __future__ import annotations

import datetime
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..inference.jobs import Progress, part_of
from ..inference.labels import LabelUpdater
from ..inference.segment import SegmenterInputError, SegmentResult, UserSegmenter
from ._segmenter_pairs import PairData

MODULES = ("napari_mentalmap.inference.segment", "napari_mentalmap.models.segmenter",
           "napari_mentalmap.inference.segmenter_training", "pandas")
"""Imported in a worker thread when the dock opens (torch; pandas, which napari imports when
the first Labels layer is made)."""


def model_path(folder: Path, now: datetime.datetime | None = None) -> Path:
    """A new file name in ``folder`` for a model trained ``now`` (never an existing one)."""
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
    path = folder / f"segmenter_{stamp}.pt"
    count = 1
    while path.exists():
        count += 1
        path = folder / f"segmenter_{stamp}_{count}.pt"
    return path


def training_job(pairs: list[PairData], config, folder: Path) -> Generator[Progress, None, UserSegmenter]:
    """Check and prepare every pair, train the segmenter (``config``: a
    :class:`~napari_mentalmap.inference.segmenter_training.SegmenterTrainConfig`) and save it in
    ``folder`` with its card; returns the loaded segmenter (with its file)."""
    from ..inference.brain import brain_mask_job
    from ..inference.segment import check_flair, prepare_inputs, save_segmenter
    from ..inference.segmenter_augment import missing_dependency
    from ..inference.segmenter_training import TrainingScan, train_segmenter_job

    problem = missing_dependency(config.augmentation)
    if problem is not None:
        raise SegmenterInputError(problem)
    scans = []
    for index, pair in enumerate(pairs):
        report = f"checking {pair.image_name} ({index + 1}/{len(pairs)})"
        mask = yield from part_of(brain_mask_job(pair.volume, pair.spacing), index, 1, len(pairs))
        yield index, len(pairs), report
        check_flair(pair.volume, pair.spacing, mask, name=repr(pair.image_name))
        scans.append(TrainingScan(prepare_inputs(pair.volume, mask, pair.spacing), pair.lesions, pair.name))
        yield index + 1, len(pairs), report
    model, card = yield from train_segmenter_job(scans, config)
    card["pairs"] = [{"image": p.image_name, "labels": p.labels_name, "image_file": p.image_file,
                      "labels_file": p.labels_file} for p in pairs]
    card["trained_at"] = datetime.datetime.now().isoformat(timespec="seconds")
    yield config.steps, config.steps, "saving the model"
    folder.mkdir(parents=True, exist_ok=True)
    path = save_segmenter(model_path(folder), model, card)
    return UserSegmenter(model, card, path)


@dataclass
class PreparedSegmentation:
    """A segmentation and its labels' proposal at the cutoff (made in the worker thread)."""

    result: SegmentResult
    proposal: LabelUpdater
    cutoff: float


def prediction_job(volume: np.ndarray, spacing: tuple[float, float, float], segmenter: UserSegmenter,
                   device: str, cutoff: float, min_size: int) -> Generator[Progress, None, PreparedSegmentation]:
    """Segment ``volume`` on ``device`` ("auto": the best here) and label it at ``cutoff``."""
    from ..device import pick_device
    from ..inference.segment import segment_job

    chosen = pick_device(device)
    segmenter.model.to(chosen)
    result = yield from segment_job(volume, spacing, segmenter, device=str(chosen))
    yield 1, 1, "labelling"
    proposal = LabelUpdater(result.probability)
    proposal.update(cutoff, min_size)
    return PreparedSegmentation(result, proposal, cutoff)
