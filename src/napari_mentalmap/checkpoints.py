"""The weights registry: the shipped models by name and the one safe checkpoint loader.

This is the only module that knows where the shipped weights live. Every weights file,
shipped or picked by the user, is read by :func:`load_record`: tensors and plain data only
(``torch.load(..., weights_only=True)``), so a file carrying a pickle payload is refused
before anything in it runs. One error type, :class:`WeightsError`, names the file.

A record is a dict with one key vocabulary: ``format`` (which model family), ``config``,
``state_dict``, ``grid`` (the model grid), ``split``, ``metrics``, ``command`` (what made it),
plus family-specific entries.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .io.atomic import replace_atomically

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MODEL_CARDS_URL = "docs/model_cards/README.md"


class WeightsError(ValueError):
    """A weights file is missing, unsafe, corrupt or of the wrong kind (the message names it)."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """The weights file does not exist."""


@dataclass(frozen=True)
class ShippedModel:
    """One shipped weights file."""

    name: str
    file: str
    format: str
    description: str
    command: str

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.file


SHIPPED: dict[str, ShippedModel] = {
    model.name: model
    for model in (
        ShippedModel("bruno_t1", "bruno_t1.pt", "bruno", "Conditional BRUNO on axial T1 slices",
                     "mentalmap train bruno"),
        ShippedModel("skullstrip", "skullstrip.pt", "skullstrip", "learned brain extraction (T1, FLAIR)",
                     "mentalmap train skullstrip --modalities t1 flair"),
        ShippedModel("slice_vae", "slice_vae.pt", "slice_vae", "slice VAE + latent volume models (T1)",
                     "mentalmap train slicevae"),
        ShippedModel("slice_vae_segnet", "slice_vae_segnet.pt", "tissue_segnet",
                     "tissue segmentation for the realism score (evaluation)", "mentalmap train slicevae --part segnet"),
        *(
            ShippedModel(f"uad_{kind}", f"uad_{kind}.pt", "uad_vae", f"anomaly VAE ({kind}, FLAIR)",
                         f"mentalmap train uad --kind {kind}")
            for kind in ("dense2d", "dense3d", "spatial2d", "spatial3d")
        ),
        ShippedModel("uad_dae2d", "uad_dae2d.pt", "uad_dae",
                     "denoising autoencoder (2-D U-Net, coarse noise; Kascenas et al. 2022; FLAIR)",
                     "mentalmap train uad --kind dae2d --noise-std 0.1 --median-at 0.5 --epochs 5 --threads 1"),
    )
}

# older checkpoints used other names for the same things
_KEY_ALIASES = {"model": "state_dict", "model_config": "config", "spec": "grid"}


def shipped(name: str) -> ShippedModel:
    """The shipped model called ``name`` (see :data:`SHIPPED`)."""
    try:
        return SHIPPED[name]
    except KeyError:
        raise WeightsError(f"no shipped model called {name!r}; known: {', '.join(SHIPPED)}") from None


def resolve(weights: str | os.PathLike | None, default: str) -> Path:
    """A weights path: ``weights`` when given (a shipped name or a file), else the shipped ``default``."""
    if weights is None or str(weights) == "":
        return shipped(default).path
    if str(weights) in SHIPPED:
        return SHIPPED[str(weights)].path
    return Path(weights)


def load_record(path: str | os.PathLike, expected_format: str | None = None,
                map_location: Any = "cpu") -> dict:
    """Read a checkpoint safely and return its record with the canonical keys.

    Raises :class:`WeightsError` when the file is missing, not a checkpoint, carries Python
    objects (a pickle payload: refused, nothing runs), or is of another model family.
    """
    import torch

    path = Path(path)
    hint = _retrain_hint(expected_format)
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file {path} not found{hint}")
    try:
        with open(path, "rb") as stream:
            head = stream.read(2)
    except OSError as error:
        raise WeightsError(f"weights file {path} cannot be read ({error.strerror or error})") from None
    if head != b"PK" and head[:1] != b"\x80":  # neither a zip checkpoint nor a (legacy) pickle
        raise WeightsError(f"weights file {path} is not a readable PyTorch checkpoint "
                           f"({'empty file' if not head else 'not a zip archive or pickle'}){hint}")
    try:
        record = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        what = f"a pickle payload ({found[1]})" if found else "a pickle payload"
        raise WeightsError(f"weights file {path} was refused: it holds {what} that could run code; "
                           "nothing in it was executed") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, IndexError, KeyError, TypeError,
            UnicodeDecodeError) as error:  # what a garbled pickle stream raises inside the unpickler
        raise WeightsError(f"weights file {path} is not a readable PyTorch checkpoint ({_first_line(error)})") from None
    if not isinstance(record, dict):
        raise WeightsError(f"weights file {path} holds a {type(record).__name__}, not a checkpoint record")
    record = {_KEY_ALIASES.get(key, key): value for key, value in record.items()}
    found = record.get("format")
    if expected_format is not None:
        if found is None and not _looks_like(record, expected_format):
            raise WeightsError(f"weights file {path} is not a {expected_format} checkpoint{hint}")
        if found is not None and found != expected_format:
            raise WeightsError(f"weights file {path} holds a {found} model, not a {expected_format} model{hint}")
        record["format"] = expected_format
    return record


def plain(value: Any) -> Any:
    """``value`` with numpy arrays/scalars, paths and tuples turned into tensors, numbers,
    strings and lists, so that :func:`load_record` can read it back without unpickling."""
    import numpy as np
    import torch

    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def save_record(path: str | os.PathLike, record: dict) -> Path:
    """Write a checkpoint record atomically (temporary file in the same folder, then rename).

    The record is made :func:`plain` first, so every checkpoint loads with ``weights_only``.
    """
    import torch

    record = plain(record)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as stream:
            torch.save(record, stream)

    replace_atomically(path, write, mode=0o644)  # weights are shared files
    return path


def load_state(model: Any, record: dict, path: str | os.PathLike) -> Any:
    """``model.load_state_dict(record["state_dict"])`` with a :class:`WeightsError` naming ``path``."""
    try:
        model.load_state_dict(record["state_dict"])
    except (KeyError, RuntimeError) as error:
        raise WeightsError(
            f"weights file {path} does not match the model code ({_first_line(error)})"
            f"{_retrain_hint(record.get('format'))}"
        ) from None
    return model


_REQUIRED = {
    "bruno": ("config", "state_dict"),
    "skullstrip": ("config", "state_dict"),
    "slice_vae": ("config", "state_dict", "per_slice", "ppca", "train_latents", "grid"),
    "tissue_segnet": ("state_dict", "classes", "width"),
    "uad_vae": ("config", "state_dict", "grid"),
    "uad_dae": ("config", "state_dict", "grid"),
}


def _looks_like(record: dict, expected_format: str) -> bool:
    keys = _REQUIRED.get(expected_format, ("state_dict",))
    if not all(key in record for key in keys):
        return False
    config = record.get("config")
    if expected_format == "bruno":
        return isinstance(config, dict) and "flow" in config
    if expected_format == "uad_vae":
        return isinstance(config, dict) and "kind" in config or "kind" in record
    if expected_format == "skullstrip":
        return isinstance(config, dict) and "depth" in config
    return True


def _retrain_hint(expected_format: str | None) -> str:
    commands = {model.format: model.command for model in SHIPPED.values()}
    command = commands.get(expected_format or "")
    return f"; train one with `{_short_command(command)}`" if command else ""


def _short_command(command: str) -> str:
    """``mentalmap train X`` with only the options that pick the model (the rest are in the model card)."""
    words, kept = command.split(), []
    for index, word in enumerate(words):
        if index < 3 or (word in ("--kind", "--part") or words[index - 1] in ("--kind", "--part")):
            kept.append(word)
    return " ".join(kept)


def _first_line(error: BaseException, limit: int = 100) -> str:
    """The cause for a one-line message: first line, no terminal colour codes, at most ``limit`` characters."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip().splitlines()
    line = text[0].strip() if text else type(error).__name__
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"
