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


def check_kind_and_shapes(config: Any, kinds: tuple[str, ...], family: str) -> None:
    """Refuse an unknown ``config.kind``; make ``input_shape`` and ``channels`` tuples of ints
    (they arrive as lists from stored records and command lines)."""
    if config.kind not in kinds:
        raise ValueError(f"unknown {family} kind {config.kind!r}; choose one of {', '.join(kinds)}")
    config.input_shape = tuple(int(v) for v in config.input_shape)
    config.channels = tuple(int(v) for v in config.channels)
