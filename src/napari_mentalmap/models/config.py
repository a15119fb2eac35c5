"""The dictionary form every model config is stored in (checkpoints, weights, records)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, TypeVar

Config = TypeVar("Config", bound="DictConfig")


class DictConfig:
    """Mixin for config dataclasses: ``to_dict`` gives plain data (tuples as lists) and
    ``from_dict`` makes the config again (lists back to tuples)."""

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls: type[Config], values: dict[str, Any]) -> Config:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
