"""The Latent explorer dock's controls and their layout (kept out of the dock's logic)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QGroupBox,
    QLabel,
    QProgressBar,
    QPushButton,
    QSlider,
    QSpinBox,
)

from ..models.kinds import STRATEGIES
from ._forms import column, form, row
from ._layout import scroll_content, section

N_DIRECTIONS = 4
SLIDER_RANGE = 30  # slider units per direction: +-3 standard deviations in steps of 0.1


def build_explorer_ui(widget: Any) -> None:
    """Make the Latent explorer dock's controls as attributes of ``widget`` and lay them out:
    encode, the principal-direction sliders, then collapsed interpolation and sampling sections."""
    widget.status = QLabel()
    widget.status.setWordWrap(True)
    widget.encode_button = QPushButton("Encode current slice")
    widget.encode_button.clicked.connect(widget.encode_current_slice)
    widget.pose_spin = QSpinBox()
    widget.pose_spin.setToolTip("slice position on the model grid (principal directions are taken here)")
    widget.pose_spin.valueChanged.connect(widget._set_pose)

    widget.sliders = [_slider(-SLIDER_RANGE, SLIDER_RANGE, widget._sliders_changed) for _ in range(N_DIRECTIONS)]
    reset = QPushButton("Reset sliders")
    reset.clicked.connect(widget.reset_sliders)
    widget.latency_label = QLabel("decode: – ms")
    directions = QGroupBox("Principal directions at this position (±3 std)")
    directions.setLayout(form(*[(f"PC {k + 1}", slider) for k, slider in enumerate(widget.sliders)],
                              ("", row(reset, widget.latency_label))))

    store_buttons = [QPushButton(f"Set {name} = current") for name in ("A", "B")]
    for name, button in zip(("A", "B"), store_buttons, strict=True):
        button.clicked.connect(lambda _=False, n=name: widget.store(n))
    widget.t_slider = _slider(0, 100, widget._interpolate_changed)
    interpolation = section("Interpolation A → B", form(("", row(*store_buttons)), ("t", widget.t_slider)))

    widget.strategy_combo = QComboBox()
    widget.strategy_combo.addItems(STRATEGIES)
    widget.strategy_combo.setToolTip(
        "naive: prior N(0, I); instance-specific: around the current latent; "
        "mixed-instance: between training instances at this position"
    )
    widget.n_spin = QSpinBox()
    widget.n_spin.setRange(1, 64)
    widget.n_spin.setValue(8)
    widget.n_spin.setToolTip("how many slices to sample")
    widget.sample_slices_button = QPushButton("Sample slices")
    widget.sample_slices_button.clicked.connect(widget.sample_slices)
    widget.model_combo = QComboBox()
    widget.model_combo.addItems(["ppca (coherent)", "per_slice (paper)", "naive"])
    widget.sample_volume_button = QPushButton("Sample volume")
    widget.sample_volume_button.clicked.connect(widget.sample_volume)
    sampling = section("Sampling (slices, volumes)",
                       row(widget.strategy_combo, widget.n_spin, widget.sample_slices_button, stretch_first=True),
                       row(widget.model_combo, widget.sample_volume_button, stretch_first=True))
    widget.progress = QProgressBar()
    widget.cancel_button = QPushButton("Cancel")
    column(scroll_content(widget), row(widget.encode_button, QLabel("position"), widget.pose_spin), directions,
           interpolation, sampling, row(widget.progress, widget.cancel_button, stretch_first=True), widget.status)
    widget._buttons = [widget.encode_button, widget.sample_slices_button, widget.sample_volume_button, reset]


def _slider(low: int, high: int, on_change: Callable[[int], object]) -> QSlider:
    slider = QSlider(Qt.Orientation.Horizontal)
    slider.setRange(low, high)
    slider.setValue(0)
    slider.valueChanged.connect(on_change)
    return slider
