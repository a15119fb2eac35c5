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
def explorer(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    widget = LatentExplorerWidget(viewer, weights=write_tiny_weights(tmp_path / "tiny.pt"))
    assert widget.busy and not widget.encode_button.isEnabled()  # the model loads in a worker thread
    qtbot.waitUntil(lambda: not widget.loading, timeout=30_000)
    assert widget.bundle is not None and widget.encode_button.isEnabled()
    return viewer, widget


def test_no_layer_selected_gives_message(explorer):
    viewer, widget = explorer
    assert widget.encode_current_slice() is None
    assert "no image layer" in widget.status.text()


def _settle(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: not widget.busy, timeout=10_000)


def test_sliders_change_decoded_layer(explorer, qtbot):
    viewer, widget = explorer
    grid = np.random.default_rng(0).uniform(0, 1, (5, 16, 16)).astype(np.float32)
    viewer.add_image(grid, name="grid volume")
    assert widget.encode_current_slice() is not None
    _settle(qtbot, widget)
    assert widget.base is not None and DECODED_LAYER in viewer.layers
    before = viewer.layers[DECODED_LAYER].data.copy()
    widget.sliders[0].setValue(25)
    _settle(qtbot, widget)
    after = viewer.layers[DECODED_LAYER].data
    assert not np.allclose(before, after)
    assert widget.last_latency_ms < 1000
    widget.store("A")
    widget.sliders[0].setValue(-25)
    _settle(qtbot, widget)
    widget.store("B")
    widget.t_slider.setValue(50)
    _settle(qtbot, widget)
    assert np.allclose(widget.current, (widget.stored["A"] + widget.stored["B"]) / 2, atol=1e-5)


def test_wrong_size_layer_is_resampled_with_note(explorer, qtbot):
    viewer, widget = explorer
    viewer.add_image(np.random.default_rng(1).uniform(0, 100, (40, 30)), name="odd slice")
    assert widget.encode_current_slice() is not None
    _settle(qtbot, widget)
    assert "resized" in widget.status.text()


def test_results_sit_over_the_input_and_keep_its_sliders(explorer, qtbot):
    """The decoded slice and the slice samples are placed at the encoded slice's position
    over a 1 mm volume; the samples add their own axis instead of stretching the axial one."""
    viewer, widget = explorer
    rng = np.random.default_rng(2)
    volume = np.zeros((60, 64, 64), np.float32)
    volume[10:50, 12:52, 12:52] = rng.uniform(50, 100, (40, 40, 40))
    source = viewer.add_image(volume, name="T1 1mm", scale=(1.0, 1.0, 1.0), translate=(-30.0, -40.0, -20.0))
    viewer.dims.set_point(0, 0.0)  # world z 0 = slice 30
    steps_before = viewer.dims.nsteps[0]
    assert widget.encode_current_slice() is not None
    _settle(qtbot, widget)
    decoded = viewer.layers[DECODED_LAYER]
    scale, translate = widget.placement
    # the decoded slice lies inside the input's extent, at the encoded position
    z_world = decoded.data_to_world((0, 0, 0))[0]
    assert abs(z_world - (translate[0] + scale[0] * widget.pose)) < 1e-6
    assert source.translate[0] <= z_world <= source.translate[0] + source.scale[0] * (volume.shape[0] - 1)
    corner = np.asarray(decoded.data_to_world((0, 15, 15)))
    assert np.all(corner[1:] >= source.translate[1:] - 1e-6)
    assert np.all(corner[1:] <= np.asarray(source.translate[1:]) + np.asarray(volume.shape[1:]) - 1 + 1e-6)
    assert widget.sample_slices() is not None
    _settle(qtbot, widget)
    samples = viewer.layers[SAMPLES_LAYER]
    assert samples.data.shape == (widget.n_spin.value(), 1, 16, 16)
    assert viewer.dims.nsteps[-3] == steps_before  # the axial slider keeps the input's steps


def test_sampling_strategies_and_volume(explorer, qtbot):
    viewer, widget = explorer
    widget.decode_training_point(3)
    _settle(qtbot, widget)
    for index in range(widget.strategy_combo.count()):
        widget.strategy_combo.setCurrentIndex(index)
        assert widget.sample_slices() is not None
        _settle(qtbot, widget)
        assert widget.last_samples.shape == (widget.n_spin.value(), 16, 16)
    assert SAMPLES_LAYER in viewer.layers
    widget.sample_volume()
    qtbot.waitUntil(lambda: any(layer.name.startswith("slice VAE sample") for layer in viewer.layers), timeout=10000)
    layer = next(layer for layer in viewer.layers if layer.name.startswith("slice VAE sample"))
    assert layer.data.shape == (5, 16, 16)
    assert tuple(layer.scale) == (2.0, 3.0, 3.0)
    first = np.array(layer.data)
    _settle(qtbot, widget)
    widget.sample_volume()  # a new sample replaces the last one in place
    qtbot.waitUntil(lambda: "updated slice VAE sample" in widget.status.text(), timeout=10000)
    samples = [layer for layer in viewer.layers if layer.name.startswith("slice VAE sample")]
    assert samples == [layer] and not np.array_equal(layer.data, first)
    assert tuple(layer.scale) == (2.0, 3.0, 3.0)


def test_missing_weights_disables_widget(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    widget = LatentExplorerWidget(viewer, weights=tmp_path / "missing.pt")
    qtbot.waitUntil(lambda: not widget.loading, timeout=30_000)
    assert "mentalmap train slicevae" in widget.status.text()
    assert not widget.encode_button.isEnabled()


def test_encode_while_the_model_loads_says_so(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((20, 32, 32)).astype(np.float32), name="img")
    widget = LatentExplorerWidget(viewer, weights=write_tiny_weights(tmp_path / "tiny.pt"))
    assert widget.loading  # nothing delivered yet: the load result arrives through the event loop
    assert widget.encode_current_slice() is None
    assert "still loading" in widget.status.text()
    qtbot.waitUntil(lambda: not widget.loading, timeout=30_000)


def test_embedding_marker_moves_without_a_full_redraw(explorer, qtbot):
    """The marker is blitted over the saved plot: each slider step draws only the markers."""
    viewer, widget = explorer
    plot = widget.embedding_plot
    plot.canvas.draw()  # the first full draw (showing the dock does this)
    assert plot.full_draws == 1 and plot.background is not None
    before = np.array(plot.canvas.buffer_rgba())
    widget.decode_training_point(3)
    _settle(qtbot, widget)
    qtbot.waitUntil(lambda: len(plot.marker.get_data()[0]) == 1, timeout=5000)  # after the slider settles
    assert plot.full_draws == 1  # no full redraw for the marker
    x, y = plot.embedding.project(widget.current)
    np.testing.assert_allclose(plot.marker.get_data(), ([x], [y]))
    assert not np.array_equal(np.array(plot.canvas.buffer_rgba()), before)  # the marker was drawn
