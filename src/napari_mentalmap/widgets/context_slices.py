"""Context slices widget: choose the acquired axial slices of an image layer.

Add the slice under the current axial position, remove the selected ones, clear, pick
N evenly spaced slices over the range the model covers, or type indices. The chosen
slices are listed and shown in a "<name> contexts" layer that holds only those slices
(zero elsewhere, additive), so the sparse input is visible in 2-D and 3-D.

The range the model covers needs the layer's brain mask, which for a T1 with skull
takes seconds (learned brain extraction): it is computed in a worker thread when a
layer is bound, and whatever needs it (evenly spaced slices, the demo) waits for it
through :meth:`ContextSlicesWidget.when_range_ready` instead of freezing the viewer.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QGridLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..inference.brain import auto_brain_mask
from ..io.preprocess import GridSpec, NoBrainError, plan_grid
from ._layers import RESULT_KEY, aligned_with, find_result

if TYPE_CHECKING:
    import napari



def parse_indices(text: str) -> list[int]:
    """``"10, 20 30-34"`` -> ``[10, 20, 30, 31, 32, 33, 34]`` (sorted, unique)."""
    values: set[int] = set()
    for token in text.replace(",", " ").replace(";", " ").split():
        if "-" in token.strip("-"):
            low, high = token.split("-", 1)
            start, stop = int(low), int(high)
            if stop < start:
                raise ValueError(f"range {token!r} goes backwards")
            values.update(range(start, stop + 1))
        else:
            values.add(int(token))
    return sorted(values)


def volume_of(layer) -> np.ndarray:
    """The layer's array (level 0 if multiscale)."""
    return np.asarray(layer.data[0] if layer.multiscale else layer.data)


def covered_range(mask: np.ndarray, spacing: tuple[float, float, float],
                  coverage: float = GridSpec().coverage) -> tuple[int, int]:
    """First and last axial slice inside the brain range the model covers (middle ``coverage``)."""
    return plan_grid(mask, spacing, GridSpec(coverage=coverage)).covered_slices()


def brain_range(volume: np.ndarray, spacing: tuple[float, float, float]
                ) -> Generator[tuple[int, int, str], None, tuple[np.ndarray | None, tuple[int, int] | None]]:
    """Brain mask and the axial range the model covers (None, None when there is no brain), as
    a job: a dock closed before it started (e.g. queued behind other workers) stops it."""
    yield 0, 1, "finding the brain"
    try:
        mask = auto_brain_mask(volume, spacing)
        return mask, covered_range(mask, spacing)
    except NoBrainError:
        return None, None


def same_layer(a, b) -> bool:
    """Whether two layer references are the same layer (plugin widgets get fresh proxies per access)."""
    if a is None or b is None:
        return a is b
    return a.unique_id == b.unique_id


class ContextSlicesWidget(QWidget):
    """Pick context (acquired) axial slices of one image layer."""

    changed = Signal(list)

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.layer = None
        self.contexts_layer = None
        self._slices: list[int] = []
        self._range_cache: dict[int, tuple[int, int] | None] = {}
        self._mask_cache: dict[int, np.ndarray] = {}
        self._range_workers: dict[int, object] = {}  # layer-data id -> worker computing its range
        self._waiting: list[tuple[int, Callable[[], object]]] = []  # (layer-data id, callback)
        self._picks: dict[object, list[int]] = {}  # layer unique_id -> its pick when left

        self.list = QListWidget()
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.list.setMaximumHeight(110)
        self.add_button = QPushButton("Add current slice")
        self.remove_button = QPushButton("Remove selected")
        self.clear_button = QPushButton("Clear")
        self.n_spin = QSpinBox()
        self.n_spin.setRange(1, 48)
        self.n_spin.setValue(5)
        self.even_button = QPushButton("Evenly spaced")
        self.typed = QLineEdit()
        self.typed.setPlaceholderText("type slices, e.g. 20, 30, 40-42")
        self.apply_button = QPushButton("Set")
        self.info = QLabel("")
        self.info.setWordWrap(True)

        grid = QGridLayout()
        grid.addWidget(self.add_button, 0, 0)
        grid.addWidget(self.remove_button, 0, 1)
        grid.addWidget(self.clear_button, 0, 2)
        grid.addWidget(self.n_spin, 1, 0)
        grid.addWidget(self.even_button, 1, 1, 1, 2)
        grid.addWidget(self.typed, 2, 0, 1, 2)
        grid.addWidget(self.apply_button, 2, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.list)
        layout.addLayout(grid)
        layout.addWidget(self.info)

        self.add_button.clicked.connect(self.add_current)
        self.remove_button.clicked.connect(self.remove_selected)
        self.clear_button.clicked.connect(self.clear)
        self.even_button.clicked.connect(lambda: self.evenly_spaced())
        self.apply_button.clicked.connect(self.apply_typed)
        self.typed.returnPressed.connect(self.apply_typed)
        self._update_enabled()

    # --- state ------------------------------------------------------------------------
    @property
    def slices(self) -> list[int]:
        """The chosen context slices (axial indices of the layer, sorted)."""
        return list(self._slices)

    @property
    def n_axial(self) -> int:
        """Number of axial slices of the bound layer (0 if none or not 3-D)."""
        if self.layer is None or self.layer.ndim != 3 or getattr(self.layer, "rgb", False):
            return 0
        return int(self.layer.data.shape[-3] if not self.layer.multiscale else self.layer.data[0].shape[-3])

    def set_layer(self, layer) -> None:
        """Bind to ``layer``: its own earlier pick comes back (this dock's, or the one an earlier
        dock left in its contexts layer); an image without one gets the previous image's slices,
        remapped by their world position."""
        if same_layer(layer, self.layer):
            return
        old_layer, old = self.layer, self._slices
        if old_layer is not None:
            self._picks[old_layer.unique_id] = list(old)
        self.layer = layer
        self._slices = []
        earlier = self._earlier_pick(layer) if self.n_axial else None
        if earlier is not None:
            self._slices = sorted({int(i) for i in earlier if 0 <= int(i) < self.n_axial})
        elif old_layer is not None and old and self.n_axial:
            self._slices = self._remap(old_layer, layer, old)
        self._update_enabled()
        self._refresh()

    def _earlier_pick(self, layer) -> list[int] | None:
        """``layer``'s pick made before in this dock, else the one kept in its contexts layer."""
        if layer.unique_id in self._picks:
            return self._picks[layer.unique_id]
        found = find_result(self.viewer, layer.name, "contexts")
        return None if found is None else list(found.metadata[RESULT_KEY].get("slices", []))

    def _remap(self, old_layer, new_layer, slices: list[int]) -> list[int]:
        """Slices of ``old_layer`` -> nearest slices of ``new_layer`` at the same world position."""
        try:
            world = [np.asarray(old_layer.data_to_world((i, 0, 0)))[-3] for i in slices]
            mapped = {int(round(float(new_layer.world_to_data((w, 0.0, 0.0))[-3]))) for w in world}
        except (ValueError, IndexError):
            return []
        return sorted(i for i in mapped if 0 <= i < self.n_axial)

    def set_slices(self, indices) -> list[int]:
        """Replace the chosen slices; every index must be inside the volume."""
        if not self.n_axial:
            raise ValueError(self._why_unusable())
        checked = sorted({int(i) for i in indices})
        bad = [i for i in checked if not 0 <= i < self.n_axial]
        if bad:
            raise ValueError(f"slice {bad[0]} is outside the volume (axial slices 0..{self.n_axial - 1})")
        self._slices = checked
        self._refresh()
        return self.slices

    def _why_unusable(self) -> str:
        if self.layer is None:
            return "no image layer: open a 3-D volume first"
        return f"{self.layer.name!r} is not a 3-D greyscale volume (shape {tuple(self.layer.data.shape)})"

    def model_range(self) -> tuple[int, int] | None:
        """Axial slices the model covers on this layer (middle 75 % of the brain), cached.

        None when the layer has no brain, and while the range is being computed in a worker
        thread (started here if needed; see :attr:`range_pending`).
        """
        if not self.n_axial:
            return None
        key = id(self.layer.data)
        if key not in self._range_cache:
            self._start_range(key)
            return None
        return self._range_cache[key]

    @property
    def range_pending(self) -> bool:
        """True while the current layer's brain mask and model range are being computed."""
        return self.layer is not None and id(self.layer.data) in self._range_workers

    def when_range_ready(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` once the current layer's model range is known (now if it is)."""
        if not self.n_axial or id(self.layer.data) in self._range_cache:
            callback()
            return
        self._waiting.append((id(self.layer.data), callback))
        self.model_range()

    def _start_range(self, key: int) -> None:
        if key in self._range_workers:
            return
        from ._worker import start_thread

        spacing = tuple(float(s) for s in self.layer.scale[-3:])
        self._range_workers[key] = start_thread(
            brain_range, volume_of(self.layer), spacing,
            on_returned=lambda result, key=key: self._range_ready(key, result),
            on_errored=lambda error, key=key: self._range_failed(key, error), owner=self.info)
        self.info.setText(f"finding the brain in {self.layer.name} to show the model's range …")

    def _range_ready(self, key: int, result: tuple[np.ndarray | None, tuple[int, int] | None]) -> None:
        mask, covered = result
        self._range_cache[key] = covered
        if mask is not None:
            self._mask_cache = {key: mask}  # one layer at a time: the job reuses it
        self._range_finished(key)

    def _range_failed(self, key: int, error: Exception) -> None:
        from ._worker import report_error

        self._range_cache[key] = None
        report_error(f"Context slices: could not find the brain ({error})")
        self._range_finished(key)

    def _range_finished(self, key: int) -> None:
        self._range_workers.pop(key, None)
        ready = [callback for waiting_key, callback in self._waiting if waiting_key == key]
        self._waiting = [(k, callback) for k, callback in self._waiting if k != key]
        if self.layer is None or id(self.layer.data) != key:  # the user moved on: drop its requests
            return
        self._refresh()
        for callback in ready:
            callback()

    def cached_brain_mask(self) -> np.ndarray | None:
        """The brain mask computed for the current layer's range, if any (saves the job redoing it)."""
        if self.layer is None:
            return None
        return self._mask_cache.get(id(self.layer.data))

    # --- actions ----------------------------------------------------------------------
    def current_slice(self) -> int | None:
        """Axial index of the layer under the viewer's current position."""
        if not self.n_axial:
            return None
        point = self.viewer.dims.point[-self.layer.ndim :]
        return int(round(float(self.layer.world_to_data(point)[-3])))

    def add_current(self) -> None:
        """Add the slice under the current axial position."""
        index = self.current_slice()
        if index is None:
            self.info.setText(self._why_unusable())
            return
        if not 0 <= index < self.n_axial:
            self.info.setText(f"the current position (slice {index}) is outside {self.layer.name}")
            return
        self._slices = sorted(set(self._slices) | {index})
        self._refresh()
        covered = self.model_range()
        if covered is not None and not covered[0] <= index <= covered[1]:
            self.info.setText(f"slice {index} added, but the model only covers slices "
                              f"{covered[0]}..{covered[1]} (middle of the brain): remove it before running")

    def remove_selected(self) -> None:
        """Remove the slices selected in the list."""
        selected = {int(item.text().split()[1]) for item in self.list.selectedItems()}
        self._slices = [i for i in self._slices if i not in selected]
        self._refresh()

    def clear(self) -> None:
        """No contexts (running then gives the prior)."""
        self._slices = []
        self._refresh()

    def evenly_spaced(self, n: int | None = None) -> list[int]:
        """Choose ``n`` (default: the spin box) slices evenly spread over the model's range.

        While that range is still being computed, the choice is made when it is known
        (and the returned list is empty).
        """
        n = int(self.n_spin.value() if n is None else n)
        if not self.n_axial:
            self.info.setText(self._why_unusable())
            return []
        if id(self.layer.data) not in self._range_cache:
            self.when_range_ready(lambda: self.evenly_spaced(n))
            return []
        first, last = self.model_range() or (0, self.n_axial - 1)
        if n == 1:
            chosen = [int(round((first + last) / 2))]
        else:
            chosen = [int(round(v)) for v in np.linspace(first, last, n)]
        self._slices = sorted(set(chosen))
        self._refresh()
        return self.slices

    def apply_typed(self) -> None:
        """Set the slices typed in the text field (errors are shown, nothing changes)."""
        try:
            self.set_slices(parse_indices(self.typed.text()))
        except ValueError as error:
            self.info.setText(f"not set: {error}")
            from ._worker import report_error

            report_error(f"Context slices: {error}")

    # --- display ----------------------------------------------------------------------
    def _update_enabled(self) -> None:
        usable = bool(self.n_axial)
        for widget in (self.add_button, self.remove_button, self.clear_button, self.even_button,
                       self.apply_button, self.typed, self.n_spin):
            widget.setEnabled(usable)

    def outside_model_range(self) -> list[int]:
        """Chosen slices outside the range the model covers (e.g. remapped from another image)."""
        covered = self.model_range() if self.n_axial else None
        return [] if not covered else [i for i in self._slices if not covered[0] <= i <= covered[1]]

    def _refresh(self) -> None:
        self.list.clear()
        outside = set(self.outside_model_range())
        self.list.addItems([f"slice {i}" + (" — outside the model's range" if i in outside else "")
                            for i in self._slices])
        if self.layer is None or not self.n_axial:
            self.info.setText(self._why_unusable())
        else:
            covered = self.model_range()
            extent = (f"; model covers {covered[0]}..{covered[1]}" if covered
                      else "; finding the model's range …" if self.range_pending else "")
            warning = (f" — {len(outside)} outside the model's range: remove them before Mean"
                       if outside else "")
            self.info.setText(f"{len(self._slices)} context slices of {self.layer.name} "
                              f"(0..{self.n_axial - 1}{extent})"
                              + ("" if self._slices else " — none: running gives the prior") + warning)
        self.update_contexts_layer()
        self.changed.emit(self.slices)

    def update_contexts_layer(self) -> None:
        """Show only the chosen slices in "<name> contexts" (removed when there are none)."""
        if self.contexts_layer is not None and self.contexts_layer in self.viewer.layers:
            if self.layer is None or not self._slices or self.contexts_layer.metadata.get(
                    RESULT_KEY, {}).get("source") != self.layer.name:
                self.viewer.layers.remove(self.contexts_layer)
                self.contexts_layer = None
        if self.layer is None or not self._slices or not self.n_axial:
            return
        volume = volume_of(self.layer)
        sparse = np.zeros(volume.shape, np.float32)
        sparse[..., self._slices, :, :] = volume[..., self._slices, :, :]
        if self.contexts_layer is None or self.contexts_layer not in self.viewer.layers:
            self.contexts_layer = find_result(self.viewer, self.layer.name, "contexts")  # a reopened dock
        if self.contexts_layer is not None and self.contexts_layer.data.shape == sparse.shape:
            self.contexts_layer.data = sparse
        else:
            self.contexts_layer = self.viewer.add_image(
                sparse, name=f"{self.layer.name} contexts", colormap="cyan", blending="additive",
                contrast_limits=tuple(self.layer.contrast_limits), **aligned_with(self.layer, "contexts"))
        self.contexts_layer.metadata[RESULT_KEY]["slices"] = self.slices  # read back by a reopened dock
