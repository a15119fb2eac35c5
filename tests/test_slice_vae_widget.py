"""Latent explorer widget: sliders decode live, sampling, bad inputs (tiny untrained weights)."""

from __future__ import annotations

import numpy as np
import pytest
from test_slice_vae import write_tiny_weights

from napari_mentalmap.widgets.latent_explorer import (
    DECODED_LAYER,
    SAMPLES_LAYER,
    LatentExplorerWidget,
)


@pytest.fixture()
def explorer(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    widget = LatentExplorerWidget(viewer, weights=write_tiny_weights(tmp_path / "tiny.pt"))
    return viewer, widget


def test_no_layer_selected_gives_message(explorer):
    viewer, widget = explorer
    assert widget.encode_current_slice() is None
    assert "no image layer" in widget.status.text()


def test_sliders_change_decoded_layer(explorer):
    viewer, widget = explorer
    grid = np.random.default_rng(0).uniform(0, 1, (5, 16, 16)).astype(np.float32)
    viewer.add_image(grid, name="grid volume")
    z = widget.encode_current_slice()
    assert z is not None and DECODED_LAYER in viewer.layers
    before = viewer.layers[DECODED_LAYER].data.copy()
    widget.sliders[0].setValue(25)
    after = viewer.layers[DECODED_LAYER].data
    assert not np.allclose(before, after)
    assert widget.last_latency_ms < 1000
    widget.store("A")
    widget.sliders[0].setValue(-25)
    widget.store("B")
    widget.t_slider.setValue(50)
    assert np.allclose(widget.current, (widget.stored["A"] + widget.stored["B"]) / 2, atol=1e-5)


def test_wrong_size_layer_is_resampled_with_note(explorer):
    viewer, widget = explorer
    viewer.add_image(np.random.default_rng(1).uniform(0, 100, (40, 30)), name="odd slice")
    assert widget.encode_current_slice() is not None
    assert "resized" in widget.status.text()


def test_sampling_strategies_and_volume(explorer, qtbot):
    viewer, widget = explorer
    widget.decode_training_point(3)
    for index in range(widget.strategy_combo.count()):
        widget.strategy_combo.setCurrentIndex(index)
        images = widget.sample_slices()
        assert images.shape == (widget.n_spin.value(), 16, 16)
    assert SAMPLES_LAYER in viewer.layers
    widget.sample_volume()
    qtbot.waitUntil(lambda: any(layer.name.startswith("slice VAE sample") for layer in viewer.layers), timeout=10000)
    layer = next(layer for layer in viewer.layers if layer.name.startswith("slice VAE sample"))
    assert layer.data.shape == (5, 16, 16)
    assert tuple(layer.scale) == (2.0, 3.0, 3.0)


def test_missing_weights_disables_widget(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    widget = LatentExplorerWidget(viewer, weights=tmp_path / "missing.pt")
    assert "mentalmap train slicevae" in widget.status.text()
    assert not widget.encode_button.isEnabled()
