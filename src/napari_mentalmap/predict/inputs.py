"""What ``mentalmap predict`` reads: the input files, the argument values, one input volume."""

from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..io.atomic import volume_suffix

if TYPE_CHECKING:
    from ..io.nifti import Volume

EXIT_FILE_FAILED = 1
EXIT_SETUP_FAILED = 2


def volume_stem(path: str | Path) -> str:
    """File name without its volume suffix (``a.nii.gz`` -> ``a``)."""
    name = Path(path).name
    return name[: len(name) - len(volume_suffix(name))]


def collect_inputs(spec: str) -> list[Path]:
    """Volume files named by ``spec``: a file, a folder (its volume files) or a glob; sorted."""
    from ..io.nifti import is_volume_path

    path = Path(spec)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and is_volume_path(p))
    if path.is_file():
        return [path]
    matches = sorted(Path(p) for p in glob.glob(spec, recursive=True))
    return [p for p in matches if p.is_file() and is_volume_path(p)]


def shard_of(paths: list[Path], shard: tuple[int, int] | None) -> list[Path]:
    """The files of shard ``(i, n)``: file ``k`` of the sorted list goes to shard ``k % n``."""
    if shard is None:
        return list(paths)
    index, count = shard
    return [path for k, path in enumerate(sorted(paths)) if k % count == index]


def parse_contexts(text: str) -> list[int]:
    """``"20,30,40"`` -> ``[20, 30, 40]``."""
    try:
        values = [int(token) for token in text.replace(";", ",").replace(" ", ",").split(",") if token]
    except ValueError:
        raise argparse.ArgumentTypeError(f"context slices must be integers separated by commas, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one context slice")
    return values


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/8"`` -> ``(2, 8)`` (shard 2 of 8, counted from 0)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"give the shard as I/N (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"shard I/N needs N >= 1 and 0 <= I < N, got {text!r}")
    return index, count


def _at_least(minimum: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {'0 or more' if minimum == 0 else f'at least {minimum}'}, "
                                             f"got {value}")
        return value
    return parse


positive_int, non_negative_int = _at_least(1), _at_least(0)


def read_input(path: Path) -> Volume:
    """Read one input image; its reader notes go to stderr, a label map is refused."""
    from ..io.nifti import read_volume

    volume = read_volume(path)
    if volume.is_labels:
        n_values = int(np.unique(volume.data).size)
        raise ValueError(f"{path} looks like a label map (segmentation or mask: {n_values} integer values), "
                         "not an MRI image")
    for note in volume.warnings:
        print(f"{path}: {note}", file=sys.stderr)
    return volume


def prepare_output(out_dir: Path) -> str | None:
    """Create the output folder; the reason it cannot be used, or None when it can."""
    if out_dir.exists() and not out_dir.is_dir():
        return f"output folder {out_dir} is an existing file"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"cannot create the output folder {out_dir} ({error.strerror or error})"
    if not os.access(out_dir, os.W_OK | os.X_OK):
        return f"output folder {out_dir} is not writable"
    return None


def grid_affine(volume: Volume, mapping) -> np.ndarray:
    """Affine (model-grid index -> world) of a model-grid array over ``volume``.

    Grid index ``(p, r, c)`` sits at canonical input voxel ``start + step * index``
    (axis-aligned, see ``GridMapping``), and the canonical affine maps that to world.
    """
    index_to_input = np.eye(4)
    index_to_input[:3, :3] = np.diag(np.asarray(mapping.step, dtype=float))
    index_to_input[:3, 3] = np.asarray(mapping.start, dtype=float)
    return np.asarray(volume.affine, dtype=float) @ index_to_input


def evenly_spaced_contexts(first: int, last: int, n: int) -> list[int]:
    """``n`` slices evenly spread over ``first..last`` (as the context slices widget)."""
    return sorted({int(round(v)) for v in np.linspace(first, last, n)})
