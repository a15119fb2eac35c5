"""Atomic file replacement for volume writers: a crashed or killed save never corrupts a file."""

from __future__ import annotations

import os
import re
import secrets
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz", ".mgz")
STALE_TEMPORARY_SECONDS = 600.0
"""A temporary file of a target untouched this long is a killed save's leftover (any host)."""


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


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", socket.gethostname())[:40].strip("-") or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # exists but belongs to someone else, or cannot tell
        return True
    return True


def temporary_name(path: Path) -> str:
    """Hidden temporary name for ``path``: ``.<stem>.<host>-<pid>-<random>.tmp<suffix>``."""
    suffix = volume_suffix(path.name)
    stem = path.name[: len(path.name) - len(suffix)]
    return f".{stem}.{_host_tag()}-{os.getpid()}-{secrets.token_hex(6)}.tmp{suffix}"


def remove_stale_temporaries(path: Path, max_age: float = STALE_TEMPORARY_SECONDS) -> list[Path]:
    """Remove the temporary files that killed saves of ``path`` left in its folder.

    A temporary of ``path`` goes when its writer (host and pid in its name) is this host's
    and no longer runs, or when it has not been touched for ``max_age`` seconds (a writer on
    another host, or a name without a pid). Temporaries of other targets are left alone.
    Returns the files removed.
    """
    path = Path(path)
    suffix = volume_suffix(path.name)
    stem = path.name[: len(path.name) - len(suffix)]
    pattern = re.compile(rf"\.{re.escape(stem)}\.(?:(?P<host>[A-Za-z0-9-]+)-(?P<pid>\d+)-)?[0-9a-f]{{12}}"
                         rf"\.tmp{re.escape(suffix)}")
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return []
    removed, host, now = [], _host_tag(), time.time()
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None:
            continue
        pid = int(match["pid"]) if match["pid"] else None
        if pid == os.getpid() and match["host"] == host:
            continue  # this process's own save (another thread)
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        dead_here = pid is not None and match["host"] == host and not _pid_alive(pid)
        if dead_here or age > max_age:
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


def replace_atomically(path: Path, write: Callable[[Path], None], mode: int | None = None) -> None:
    """Write ``path`` through ``write(temporary)`` so that ``path`` is never left half written.

    ``write`` fills a hidden temporary file in the same folder whose name ends with the real
    suffix (nibabel picks the format from it); the file is fsynced and then renamed onto
    ``path`` with :func:`os.replace` (atomic on POSIX and Windows within one file system).
    The permissions are those of the file being replaced, else ``mode`` when given. On any
    error the temporary file is removed and an existing ``path`` is left untouched. A process
    killed mid-save can leave a ``.<stem>.<host>-<pid>-<random>.tmp<suffix>`` file behind,
    but never a truncated ``path``; the next save of ``path`` removes it
    (:func:`remove_stale_temporaries`).
    """
    path = Path(path)
    remove_stale_temporaries(path)
    temporary = path.with_name(temporary_name(path))
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
    import nibabel as nib

    replace_atomically(path, lambda temporary: nib.save(image, str(temporary)))


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`replace_atomically`)."""
    replace_atomically(path, lambda temporary: Path(temporary).write_bytes(data))
