"""Atomic file replacement for volume writers: a crashed or killed save never corrupts a file."""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib

NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz", ".mgz")


def volume_suffix(name: str) -> str:
    """The file's volume suffix as spelled in ``name`` (``.nii.gz`` counts as one suffix)."""
    lower = name.lower()
    for suffix in sorted(NIFTI_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[len(name) - len(suffix):]
    return Path(name).suffix


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(str(directory), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_atomically(path: Path, write: Callable[[Path], None], mode: int | None = None) -> None:
    """Write ``path`` through ``write(temporary)`` so that ``path`` is never left half written.

    ``write`` fills a hidden temporary file in the same folder whose name ends with the real
    suffix (nibabel picks the format from it); the file is fsynced and then renamed onto
    ``path`` with :func:`os.replace` (atomic on POSIX and Windows within one file system).
    The permissions are those of the file being replaced, else ``mode`` when given. On any
    error the temporary file is removed and an existing ``path`` is left untouched. A process
    killed mid-save can leave a ``.<name>.<random>.tmp<suffix>`` file behind, but never a
    truncated ``path``.
    """
    path = Path(path)
    suffix = volume_suffix(path.name)
    stem = path.name[: len(path.name) - len(suffix)]
    temporary = path.with_name(f".{stem}.{secrets.token_hex(6)}.tmp{suffix}")
    try:
        write(temporary)
        try:  # keep the permissions of the file being replaced
            os.chmod(temporary, stat.S_IMODE(os.stat(path).st_mode))
        except FileNotFoundError:
            if mode is not None:
                os.chmod(temporary, mode)
        _fsync_file(temporary)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(path.parent)


def save_atomically(image: Any, path: Path) -> None:
    """Save a nibabel image to ``path`` atomically (see :func:`replace_atomically`)."""
    replace_atomically(path, lambda temporary: nib.save(image, str(temporary)))


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`replace_atomically`)."""
    replace_atomically(path, lambda temporary: Path(temporary).write_bytes(data))
