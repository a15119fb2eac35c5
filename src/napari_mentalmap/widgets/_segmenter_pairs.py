"""The Lesion segmenter dock's training pairs: which Labels layer goes with which image.

A Labels layer is paired with, in this order: the pair the user added from files; the image
it was made from (a dock's labels record their source: "<name> anomaly labels", "<name>
lesion labels"); the image whose name it carries ("patient07 FLAIR lesions" ->
"patient07 FLAIR"); else an image of the same shape, one of the same subject (first word of
the name) first, a FLAIR-looking one first. A pair whose grids differ is still listed (the
dock refuses it with the reason); a Labels layer with no image of its name or shape is not.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._reader import METADATA_KEY, volume_to_layer_data
from ..inference.segment import SegmenterInputError, check_labels
from ._layers import input_images, result_source
from ._modality import known_guess


@dataclass
class Pair:
    """An image layer and the Labels layer painted over it."""

    image: Any
    labels: Any
    how: str  # "file", "made from", "named", "subject" or "shape"

    @property
    def key(self) -> tuple[str, str]:
        """What the pair list remembers a check mark by."""
        return self.image.name, self.labels.name

    @property
    def grids_match(self) -> bool:
        return np.shape(self.image.data) == np.shape(self.labels.data)

    def text(self) -> str:
        """The pair list's line."""
        return f"{self.labels.name}  →  {self.image.name}" + ("" if self.grids_match else "  ⚠ grids differ")


@dataclass
class PairData:
    """What the training job needs of one pair (arrays taken when Train is pressed)."""

    image_name: str
    labels_name: str
    volume: np.ndarray
    lesions: np.ndarray
    spacing: tuple[float, float, float]
    image_file: str | None = None
    labels_file: str | None = None

    @property
    def name(self) -> str:
        return f"{self.labels_name} on {self.image_name}"


def _flair_first(image: Any) -> tuple[bool, bool]:
    known, guess = known_guess(image)
    looks_flair = known and guess is not None and guess.modality == "FLAIR"
    return not looks_flair, "flair" not in image.name.lower()


def _carries(name: str, image_name: str) -> bool:
    return bool(image_name) and re.search(rf"(^|\s){re.escape(image_name)}(\s|$)", name) is not None


def pair_for(labels: Any, images: list[Any], explicit: dict[int, Any]) -> Pair | None:
    """The image ``labels`` goes with (see the module docstring), or None."""
    chosen = explicit.get(id(labels))
    if chosen is not None and any(chosen is image for image in images):
        return Pair(chosen, labels, "file")
    source = result_source(labels)
    made_from = [image for image in images if image.name == source]
    if made_from:
        return Pair(made_from[0], labels, "made from")
    named = [image for image in images if _carries(labels.name, image.name)]
    if named:
        return Pair(max(named, key=lambda image: len(image.name)), labels, "named")
    same = [image for image in images if np.shape(image.data) == np.shape(labels.data)]
    subject = labels.name.split()[:1]
    by_subject = [image for image in same if image.name.split()[:1] == subject]
    candidates = sorted(by_subject or same, key=_flair_first)
    if not candidates:
        return None
    return Pair(candidates[0], labels, "subject" if by_subject else "shape")


def find_pairs(viewer: Any, explicit: dict[int, Any]) -> list[Pair]:
    """Every Labels layer of ``viewer`` that has an image to go with, with that image.
    ``explicit``: labels layer id -> image layer, the pairs added from files."""
    from napari.layers import Labels

    images = input_images(viewer, ndim=3)
    pairs = []
    for layer in viewer.layers:
        if isinstance(layer, Labels) and layer.ndim == 3:
            pair = pair_for(layer, images, explicit)
            if pair is not None:
                pairs.append(pair)
    return pairs


def _file_of(layer: Any) -> str | None:
    return ((getattr(layer, "metadata", None) or {}).get(METADATA_KEY) or {}).get("source")


def pair_data(pair: Pair) -> PairData:
    """The arrays of ``pair`` for training; refused (:class:`SegmenterInputError`, naming the
    pair) when the image is not a 3-D volume, the grids differ or nothing is labelled."""
    volume = np.asarray(pair.image.data)
    name = f"{pair.labels.name!r} on {pair.image.name!r}"
    if volume.ndim != 3 or getattr(pair.image, "rgb", False):
        raise SegmenterInputError(f"{name}: the image has shape {volume.shape}; a 3-D greyscale volume is needed")
    lesions = check_labels(volume.shape, np.array(pair.labels.data), name)  # a copy: painting may go on
    spacing = tuple(float(s) for s in pair.image.scale[-3:])
    return PairData(pair.image.name, pair.labels.name, volume, lesions, spacing,  # type: ignore[arg-type]
                    _file_of(pair.image), _file_of(pair.labels))


def read_pair(image_path: str | Path, labels_path: str | Path) -> tuple[tuple, tuple, list[str]]:
    """Layer data tuples of an image file and its labels file (read with the package's
    reader; the labels as a label image whatever their type), and the reader's notes."""
    from ..io.nifti import read_volume

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the notes come back in ``volume.warnings``
        image = read_volume(image_path)
        labels = read_volume(labels_path, as_labels=True)
    if image.is_labels:
        raise SegmenterInputError(f"{Path(image_path).name} looks like a label map, not an MRI image: "
                                  "choose the image first, then its labels")
    if labels.data.shape != image.data.shape:
        raise SegmenterInputError(f"{Path(labels_path).name}: grid {labels.data.shape} does not match its image "
                                  f"{image.data.shape}; resample the labels onto the image first")
    return volume_to_layer_data(image), volume_to_layer_data(labels), [*image.warnings, *labels.warnings]
