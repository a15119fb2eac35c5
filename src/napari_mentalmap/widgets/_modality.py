"""Which input suits a dock's model, by the contrast read from each image (not its name).

The Mental maps model (BRUNO) was trained on T1, the anomaly models on FLAIR. A
:class:`ModalityWatch` per dock guesses each input layer's contrast with
:func:`~napari_mentalmap.inference.modality.classify_modality` in a worker thread (a guess
is cached per layer and its data, shared by the docks), proposes a matching layer while
the user has not picked one, and shows a warning line when the chosen image's contrast is
not the model's.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from qtpy.QtWidgets import QLabel

from ..inference.modality import ModalityGuess, classify_modality

_GUESSES: weakref.WeakKeyDictionary[Any, tuple[Callable[[], Any], ModalityGuess | None]] = weakref.WeakKeyDictionary()
"""Layer -> (reference to the data it was guessed on, guess or None when it cannot be told)."""

WARNING_STYLE = "color: #e8a33d;"


def layer_volume(layer: Any) -> tuple[np.ndarray, tuple[float, float, float]] | None:
    """The 3-D greyscale data and voxel size of an image layer, or None when it is not one."""
    if getattr(layer, "rgb", False) or getattr(layer, "multiscale", False) or getattr(layer, "ndim", 0) != 3:
        return None
    return layer.data, tuple(float(s) for s in layer.scale[-3:])  # type: ignore[return-value]


def guess_volume(data: Any, spacing: tuple[float, float, float]) -> ModalityGuess | None:
    """:func:`classify_modality` of a layer's data; None when it holds no brain to classify."""
    try:
        return classify_modality(np.asarray(data), spacing)
    except ValueError:
        return None


def known_guess(layer: Any) -> tuple[bool, ModalityGuess | None]:
    """(whether the layer's current data was guessed, the guess)."""
    entry = _GUESSES.get(layer)
    if entry is None or entry[0]() is not layer.data:
        return False, None
    return True, entry[1]


def remember(layer: Any, data: Any, guess: ModalityGuess | None) -> None:
    """Cache the guess of ``layer`` made on ``data``."""
    try:
        reference: Callable[[], Any] = weakref.ref(data)
    except TypeError:  # an object without weak references: hold it (it is the layer's data anyway)
        reference = lambda: data  # noqa: E731
    _GUESSES[layer] = (reference, guess)


def flair_by_name(names: Sequence[str], current: str, inserted: Any) -> str:
    """The Anomaly maps dock's choice before any image is guessed: a newly opened layer named
    FLAIR when the current one is not, else the current one, else the first named FLAIR."""
    if inserted is not None and inserted.name in names and "flair" in inserted.name.lower() \
            and "flair" not in current.lower():
        return inserted.name
    if current in names:
        return current
    return next((name for name in names if "flair" in name.lower()), names[0] if names else "")


class ModalityWatch:
    """The contrast a dock's model expects, the guesses of its inputs and the warning line."""

    def __init__(self, owner: Any, expected: str, model: str, on_guessed: Callable[[], None]) -> None:
        """``owner``: the dock (workers stop with it); ``on_guessed`` runs in the GUI thread
        after each new guess (the dock re-picks and updates the warning)."""
        self.owner = owner
        self.expected = expected
        self.model = model
        self.on_guessed = on_guessed
        self.user_chose = False
        """Set once the combo was changed outside a refresh: the choice is then kept."""
        self.label = QLabel("")
        self.label.setWordWrap(True)
        self.label.setStyleSheet(WARNING_STYLE)
        self.label.setVisible(False)
        self._running: set[int] = set()

    def chosen(self, *_: object) -> None:
        """The dock's combo changed outside a refresh (the user, a script or a result): keep it."""
        self.user_chose = True

    @property
    def pending(self) -> bool:
        """True while a guess is being computed."""
        return bool(self._running)

    def request(self, layers: Sequence[Any]) -> None:
        """Guess, in worker threads, every layer whose current data has no guess yet."""
        from ._threads import start_thread

        for layer in layers:
            volume = layer_volume(layer)
            if volume is None:
                remember(layer, layer.data, None)
                continue
            if known_guess(layer)[0] or id(layer.data) in self._running:
                continue
            data, spacing = volume
            self._running.add(id(data))

            def done(guess: ModalityGuess | None, layer: Any = layer, data: Any = data) -> None:
                self._running.discard(id(data))
                remember(layer, data, guess)
                self.on_guessed()

            def failed(error: BaseException, data: Any = data) -> None:
                self._running.discard(id(data))

            start_thread(guess_volume, data, spacing, on_returned=done, on_errored=failed, owner=self.owner)

    def matches(self, layer: Any) -> bool:
        """Whether the layer was guessed to have the model's contrast."""
        known, guess = known_guess(layer)
        return known and guess is not None and guess.modality == self.expected

    def pick(self, layers: Sequence[Any], current: str, preferred: str) -> str:
        """The layer name a dock should show: the user's choice once they made one; else
        ``current`` or ``preferred`` if it matches the model, else the first matching
        layer, else ``current`` (or ``preferred`` when ``current`` is gone)."""
        names = [layer.name for layer in layers]
        if self.user_chose and current in names:
            return current
        by_name = {layer.name: layer for layer in layers}
        for name in (current, preferred):
            if name in by_name and self.matches(by_name[name]):
                return name
        matching = [layer.name for layer in layers if self.matches(layer)]
        if matching:
            return matching[0]
        return current if current in names else preferred

    def warning(self, layer: Any) -> str:
        """The warning line for the chosen layer ("" when its contrast suits the model or is unknown)."""
        if layer is None:
            return ""
        known, guess = known_guess(layer)
        if not known or guess is None or guess.modality == self.expected:
            return ""
        verb = "expect" if self.model.endswith("s") else "expects"
        return f"⚠ {layer.name!r} looks {guess.describe()}; the {self.model} {verb} {self.expected}"

    def note(self, layer: Any, by_name: Callable[[str], str | None]) -> str | None:
        """The warning for a run on ``layer``: from its image once guessed, else from its name."""
        known, guess = known_guess(layer)
        return (self.warning(layer) or None) if known and guess is not None else by_name(layer.name)

    def show(self, layer: Any) -> None:
        """Update the warning line for the chosen layer."""
        text = self.warning(layer)
        self.label.setText(text)
        self.label.setVisible(bool(text))
