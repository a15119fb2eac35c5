"""What ``mentalmap predict`` writes: each output with a JSON sidecar saying what made it.

Every output ``<stem>_<map>.<ext>`` gets ``<stem>_<map>.json`` beside it (method, weights
file and its sha256, package version, contexts or threshold, input file and its sha256,
date, device, command line) and, for NIfTI files, a short form of it in the header's
``descrip`` field (80 bytes). An existing output is never replaced without ``--overwrite``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..io.atomic import write_bytes_atomically
from .inputs import volume_stem

DESCRIP_BYTES = 79
"""Room in the NIfTI-1 ``descrip`` field (80 bytes, the last one a terminating NUL)."""


class OutputExistsError(FileExistsError):
    """An output (or its sidecar) is already there and ``--overwrite`` was not given."""


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: str | Path) -> dict[str, Any]:
    """Absolute path (links kept as named), size, modification time (UTC) and sha256 of a file."""
    path = Path(path).absolute()
    status = path.stat()
    mtime = _dt.datetime.fromtimestamp(status.st_mtime, _dt.timezone.utc)
    return {"path": str(path), "size": status.st_size, "mtime": mtime.isoformat(timespec="seconds"),
            "sha256": sha256_of(path)}


def sidecar_path(output: str | Path) -> Path:
    """``a_anomaly.nii.gz`` -> ``a_anomaly.json`` (same folder, same stem)."""
    output = Path(output)
    return output.with_name(f"{volume_stem(output)}.json")


def blocking_outputs(out_dir: Path, names: list[str]) -> list[Path]:
    """The outputs among ``names`` (and their sidecars) that already exist in ``out_dir``."""
    candidates = [out_dir / name for name in names]
    candidates += [sidecar_path(path) for path in candidates]
    return [path for path in dict.fromkeys(candidates) if path.exists()]


def refuse_existing(out_dir: Path, names: list[str]) -> None:
    """Raise :class:`OutputExistsError` naming the first existing output, if any."""
    found = blocking_outputs(out_dir, names)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise OutputExistsError(f"{found[0]} already exists{more}; nothing was replaced "
                                "(pass --overwrite to replace it)")


def duplicate_stems(paths: list[Path]) -> dict[Path, Path]:
    """Inputs whose outputs would have the same names as an earlier input's (``a.nii``, ``a.nii.gz``):
    ``{later: first}``."""
    first: dict[str, Path] = {}
    duplicates: dict[Path, Path] = {}
    for path in sorted(paths):
        stem = volume_stem(path)
        if stem in first:
            duplicates[path] = first[stem]
        else:
            first[stem] = path
    return duplicates


def now_utc() -> str:
    """The current time, ISO 8601 in UTC, to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Provenance:
    """What makes this run's outputs: command, method, weights file, device."""

    command: str
    method: str
    short_method: str
    weights: Path | None
    device: str
    argv: list[str] = field(default_factory=lambda: ["mentalmap", *sys.argv[1:]])
    process: dict[str, Any] = field(default_factory=dict)
    _weights_record: dict[str, Any] | None = None

    def weights_record(self) -> dict[str, Any] | None:
        """Path and sha256 of the weights file (hashed once per run)."""
        if self.weights is None:
            return None
        if self._weights_record is None:
            path = Path(self.weights).absolute()
            self._weights_record = {"path": str(path), "sha256": sha256_of(path)}
        return self._weights_record


@dataclass
class InputOutputs:
    """The outputs of one input file: each written atomically with its sidecar."""

    out_dir: Path
    source: Path
    provenance: Provenance
    overwrite: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)
    _source_record: dict[str, Any] | None = None

    @property
    def stem(self) -> str:
        return volume_stem(self.source)

    def record(self, output: Path, map_name: str, extra: dict[str, Any]) -> dict[str, Any]:
        """The sidecar contents of ``output``."""
        if self._source_record is None:
            self._source_record = file_record(self.source)
        return {
            "output": output.name,
            "map": map_name,
            "made_by": f"napari-mentalmap {__version__}",
            "package_version": __version__,
            "command": f"mentalmap predict {self.provenance.command}",
            "command_line": self.provenance.argv,
            "method": self.provenance.method,
            "weights": self.provenance.weights_record(),
            **self.details,
            **extra,
            "input": self._source_record,
            "date": now_utc(),
            "device": self.provenance.device,
            "process": self.provenance.process,
        }

    def descrip(self, map_name: str, extra: dict[str, Any]) -> str:
        """Short form for the NIfTI ``descrip`` field, e.g. ``mentalmap 0.1.0 bruno mean ctx=5 w=ab12cd34``."""
        words = ["mentalmap", __version__]
        for word in (self.provenance.command, self.provenance.short_method, map_name):
            if word not in words:
                words.append(word)
        contexts = self.details.get("contexts")
        if contexts is not None:
            words.append(f"ctx={len(contexts)}")
        threshold = extra.get("threshold")
        if threshold is not None:
            words.append(f"t={threshold['value']:.4g}")
        weights = self.provenance.weights_record()
        if weights is not None:
            words.append(f"w={weights['sha256'][:8]}")
        return " ".join(words).encode("ascii", "replace")[:DESCRIP_BYTES].decode("ascii")

    def _target(self, name: str) -> Path:
        path = self.out_dir / name
        if not self.overwrite:
            refuse_existing(self.out_dir, [name])  # again: another job may have written it since
        return path

    def _sidecar(self, path: Path, map_name: str, extra: dict[str, Any]) -> None:
        text = json.dumps(self.record(path, map_name, extra), indent=2, default=_json_default) + "\n"
        write_bytes_atomically(sidecar_path(path), text.encode("utf-8"))

    def volume(self, suffix: str, data: np.ndarray, reference: Any, *, is_labels: bool, map_name: str,
               **extra: Any) -> Path:
        """Write ``<stem><suffix>`` (``write_volume``) and its sidecar; returns the volume's path."""
        from ..io.nifti import write_volume

        path = self._target(f"{self.stem}{suffix}")
        write_volume(path, data, reference, is_labels=is_labels, description=self.descrip(map_name, extra))
        self._sidecar(path, map_name, extra)
        self.written.append(path)
        return path

    def npz(self, suffix: str, map_name: str, arrays: dict[str, np.ndarray], **extra: Any) -> Path:
        """Write ``<stem><suffix>`` (a numpy ``.npz``) and its sidecar; returns the archive's path."""
        path = self._target(f"{self.stem}{suffix}")
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        write_bytes_atomically(path, buffer.getvalue())
        self._sidecar(path, map_name, extra)
        self.written.append(path)
        return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
