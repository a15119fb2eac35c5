"""Mental map and context slices widgets: contexts, worker jobs, result layers, alignment, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_mentalmap import cli
from napari_mentalmap._sample_data import SAMPLE_T1
from napari_mentalmap.inference.mental_map import DEFAULT_WEIGHTS
from napari_mentalmap.widgets.context_slices import parse_indices
from napari_mentalmap.widgets.mental_map import MentalMapWidget

TIMEOUT_MS = 30_000


@pytest.fixture
def tiny_weights(tiny_bruno_weights) -> Path:
    return tiny_bruno_weights


@pytest.fixture
def widget(mental_map_dock) -> MentalMapWidget:
    return mental_map_dock


def _run(qtbot, widget: MentalMapWidget, kind: str):
    worker = widget.run(kind)
    assert worker is not None
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)  # set in the GUI thread on finished
    return worker


def _corners(layer) -> np.ndarray:
    shape = np.array(layer.data.shape[-3:]) - 1
    corners = [np.array([a, b, c]) * shape for a in (0, 1) for b in (0, 1) for c in (0, 1)]
    lead = (0,) * (layer.ndim - 3)
    return np.array([np.asarray(layer.data_to_world((*lead, *c)))[-3:] for c in corners])


def test_parse_indices() -> None:
    assert parse_indices("10, 20 30-32;5") == [5, 10, 20, 30, 31, 32]
    with pytest.raises(ValueError):
        parse_indices("30-20")


def test_pick_contexts(widget: MentalMapWidget, errors: list[str]) -> None:
    contexts = widget.contexts
    assert contexts.layer is widget.viewer.layers["T1"]
    chosen = contexts.evenly_spaced(5)
    first, last = contexts.model_range()
    assert len(chosen) == 5 and chosen[0] == first and chosen[-1] == last
    assert contexts.list.count() == 5
    sparse = widget.viewer.layers["T1 contexts"].data
    assert sparse.shape == widget.viewer.layers["T1"].data.shape
    np.testing.assert_array_equal(sparse[chosen], widget.viewer.layers["T1"].data[chosen])
    assert not sparse[[i for i in range(sparse.shape[0]) if i not in chosen]].any()

    widget.viewer.dims.set_point(0, float(widget.viewer.layers["T1"].data_to_world((40, 0, 0))[0]))
    contexts.add_current()
    assert 40 in contexts.slices
    contexts.list.item(0).setSelected(True)
    contexts.remove_selected()
    assert chosen[0] not in contexts.slices

    contexts.typed.setText("30, 35")
    contexts.apply_typed()
    assert contexts.slices == [30, 35]
    contexts.typed.setText("30, 500")  # outside the volume: refused, nothing changes
    contexts.apply_typed()
    assert contexts.slices == [30, 35]
    assert errors and "outside the volume" in errors[-1]
    contexts.clear()
    assert contexts.slices == [] and "T1 contexts" not in widget.viewer.layers


def test_mean_and_samples_layers_aligned(qtbot, widget: MentalMapWidget, errors: list[str]) -> None:
    source = widget.viewer.layers["T1"]
    widget.contexts.evenly_spaced(3)
    _run(qtbot, widget, "mean")
    assert not errors, errors
    assert widget.runner.stats.outcome == "done"
    assert widget.runner.stats.torch_threads_used == widget.runner.stats.torch_threads_main
    mean, std = widget.viewer.layers["T1 BRUNO mean"], widget.viewer.layers["T1 BRUNO std"]
    for layer in (mean, std):
        assert layer.data.shape == source.data.shape
        np.testing.assert_allclose(_corners(layer), _corners(source))
        assert layer.metadata["mentalmap_volume"] == source.metadata["mentalmap_volume"]
    assert std.colormap.name == "inferno" and std.blending == "additive"
    context = widget.contexts.slices[1]
    np.testing.assert_array_equal(mean.data[context], source.data[context])  # acquired slice kept
    assert mean.metadata["mentalmap_result"]["kind"] == "mean"
    assert widget.mean_button.isEnabled() and not widget.cancel_button.isEnabled()

    _run(qtbot, widget, "samples")
    samples = widget.viewer.layers["T1 BRUNO samples"]
    result = widget.last_result
    assert samples.data.shape == (3, *result.mapping.grid_shape)
    # grid index (p, r, c) sits at input voxel start + step * index: same world point via both layers
    for index in [(0, 0, 0), (7, 15, 15), (3, 8, 2)]:
        voxel = np.array(result.mapping.start) + np.array(result.mapping.step) * np.array(index)
        np.testing.assert_allclose(np.asarray(samples.data_to_world((0, *index)))[-3:],
                                   np.asarray(source.data_to_world(voxel)), atol=1e-6)
    names = [layer.name for layer in widget.viewer.layers]
    assert names.count("T1 BRUNO mean") == 1 and names.count("T1 BRUNO std") == 1  # replaced, not piled
    assert tuple(str(u) for u in mean.units) == ("millimeter",) * 3
    assert mean.axis_labels == source.axis_labels and "axial" in source.axis_labels[0]


def test_std_is_zero_on_kept_acquired_slices(qtbot, widget: MentalMapWidget, errors: list[str]) -> None:
    widget.contexts.evenly_spaced(3)
    widget.keep_contexts.setChecked(True)
    _run(qtbot, widget, "samples")
    assert not errors, errors
    std = widget.viewer.layers["T1 BRUNO std"].data
    for context in widget.contexts.slices:
        assert np.all(std[context] == 0), context
    others = [s for s in range(std.shape[0]) if s not in widget.contexts.slices]
    assert std[others].max() > 0  # the missing slices are uncertain


def test_results_are_kept_per_input(qtbot, widget: MentalMapWidget, errors: list[str]) -> None:
    source = widget.viewer.layers["T1"]
    widget.contexts.evenly_spaced(3)
    _run(qtbot, widget, "mean")
    first_mean = widget.viewer.layers["T1 BRUNO mean"]
    first_data = first_mean.data.copy()
    widget.viewer.add_image(source.data[:, ::-1].copy(), name="flipped", scale=source.scale,
                            translate=source.translate, metadata=dict(source.metadata))
    assert "T1 BRUNO mean" not in [widget.layer_combo.itemText(i) for i in range(widget.layer_combo.count())]
    widget.layer_combo.setCurrentText("flipped")
    widget.contexts.evenly_spaced(3)
    _run(qtbot, widget, "mean")
    assert not errors, errors
    # the first image's result is untouched, the second image has its own
    assert widget.viewer.layers["T1 BRUNO mean"] is first_mean
    np.testing.assert_array_equal(first_mean.data, first_data)
    assert widget.viewer.layers["flipped BRUNO mean"].metadata["mentalmap_result"]["source"] == "flipped"
    # re-running on the first image updates its layer in place
    widget.layer_combo.setCurrentText("T1")
    widget.contexts.evenly_spaced(3)
    _run(qtbot, widget, "mean")
    names = [layer.name for layer in widget.viewer.layers]
    assert names.count("T1 BRUNO mean") == 1 and names.count("flipped BRUNO mean") == 1
    assert widget.viewer.layers["T1 BRUNO mean"] is first_mean


def test_prior_and_zero_contexts(qtbot, widget: MentalMapWidget, errors: list[str]) -> None:
    widget.contexts.clear()
    _run(qtbot, widget, "mean")  # zero contexts = the prior
    assert not errors, errors
    assert widget.last_result.context_slices == []
    assert "T1 BRUNO mean" in widget.viewer.layers
    widget.contexts.evenly_spaced(2)
    _run(qtbot, widget, "prior")
    assert widget.last_result.context_slices == []
    assert "T1 BRUNO prior mean" in widget.viewer.layers


def test_cancel_adds_no_layers(qtbot, widget: MentalMapWidget, errors: list[str]) -> None:
    widget.n_samples.setValue(100)
    widget.contexts.evenly_spaced(3)
    before = [layer.name for layer in widget.viewer.layers]
    worker = widget.run("samples")
    with qtbot.waitSignal(worker.yielded, timeout=TIMEOUT_MS):
        pass
    widget.cancel_button.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    assert widget.runner.stats.outcome == "cancelled"
    assert [layer.name for layer in widget.viewer.layers] == before
    assert widget.mean_button.isEnabled() and widget.samples_button.isEnabled()
    assert not errors


def test_failing_job_reports_and_reenables(qtbot, widget: MentalMapWidget, errors: list[str], tmp_path) -> None:
    widget.weights_edit.setText(str(tmp_path / "missing.pt"))
    widget.contexts.evenly_spaced(3)
    _run(qtbot, widget, "mean")
    assert widget.runner.stats.outcome == "failed"
    assert errors and "not found" in errors[-1] and "missing.pt" in errors[-1]
    assert widget.mean_button.isEnabled() and widget.prior_button.isEnabled()
    assert not widget.cancel_button.isEnabled()
    assert "T1 BRUNO mean" not in widget.viewer.layers


def test_context_outside_model_range_fails_clearly(qtbot, widget: MentalMapWidget, errors: list[str]) -> None:
    widget.contexts.set_slices([0])  # inside the volume, below the brain range the model covers
    _run(qtbot, widget, "mean")
    assert errors and "outside the brain range" in errors[-1]
    with pytest.raises(ValueError, match="outside the volume"):
        widget.contexts.set_slices([91])


def test_no_image_and_2d_image(make_napari_viewer, errors: list[str]) -> None:
    viewer = make_napari_viewer()
    widget = MentalMapWidget(viewer)
    assert widget.run("mean") is None
    assert errors and "no image layer" in errors[-1]
    assert not widget.contexts.even_button.isEnabled()
    viewer.add_image(np.random.default_rng(0).random((32, 32), dtype=np.float32), name="flat")
    assert widget.layer_combo.currentText() == "flat"
    assert widget.run("mean") is None
    assert "3-D greyscale volume" in errors[-1]
    assert widget.contexts.evenly_spaced(3) == []


def test_layer_change_remaps_contexts(widget: MentalMapWidget) -> None:
    source = widget.viewer.layers["T1"]
    widget.viewer.add_image(source.data[::2], name="coarse", scale=(source.scale[0] * 2, *source.scale[1:]),
                            translate=source.translate)
    widget.layer_combo.setCurrentText("T1")
    widget.contexts.set_slices([20, 40])
    widget.layer_combo.setCurrentText("coarse")
    assert widget.contexts.slices == [10, 20]


def test_brain_mask_is_found_without_freezing_the_viewer(make_napari_viewer, qtbot, monkeypatch) -> None:
    """A slow brain mask (a T1 with skull takes seconds) runs in a worker: binding the layer
    returns at once, the requested evenly spaced slices and the demo job start when it is done."""
    import threading
    import time

    from napari_mentalmap.widgets import context_slices

    release = threading.Event()
    real_mask = context_slices.auto_brain_mask

    def slow_mask(volume, spacing):
        release.wait(10)
        return real_mask(volume, spacing)

    monkeypatch.setattr(context_slices, "auto_brain_mask", slow_mask)
    viewer = make_napari_viewer()
    viewer.open(str(SAMPLE_T1), plugin="napari-mentalmap", name="T1")
    started = time.perf_counter()
    widget = MentalMapWidget(viewer)
    assert time.perf_counter() - started < 5  # not blocked by the (held) brain mask
    contexts = widget.contexts
    assert contexts.range_pending and widget.busy and contexts.model_range() is None
    assert "finding" in contexts.info.text()
    assert contexts.evenly_spaced(4) == []  # deferred until the range is known
    release.set()
    qtbot.waitUntil(lambda: len(contexts.slices) == 4, timeout=TIMEOUT_MS)
    first, last = contexts.model_range()
    assert contexts.slices[0] == first and contexts.slices[-1] == last
    assert not contexts.range_pending and contexts.cached_brain_mask() is not None


def test_demo_preselects_contexts(make_napari_viewer, qtbot) -> None:
    viewer = cli.setup_demo_viewer(make_napari_viewer())
    docked = [w for w in viewer.window.dock_widgets.values() if isinstance(w, MentalMapWidget)]
    assert len(docked) == 1
    widget = docked[0]
    qtbot.waitUntil(lambda: len(widget.contexts.slices) == 5, timeout=TIMEOUT_MS)
    assert "sample T1 contexts" in viewer.layers
    assert not cli.demo_widgets_busy(viewer)


@pytest.mark.skipif(not DEFAULT_WEIGHTS.exists(), reason=f"shipped BRUNO weights absent: {DEFAULT_WEIGHTS}")
def test_mean_with_shipped_weights(qtbot, widget: MentalMapWidget, errors: list[str]) -> None:
    widget.weights_edit.setText("")
    widget.n_samples.setValue(2)
    widget.contexts.evenly_spaced(5)
    _run(qtbot, widget, "mean")
    assert not errors, errors
    assert widget.viewer.layers["T1 BRUNO mean"].data.shape == widget.viewer.layers["T1"].data.shape


def test_contexts_outside_the_model_range_are_flagged(qtbot, widget: MentalMapWidget) -> None:
    covered = widget.contexts.model_range()
    assert covered is not None
    widget.contexts.set_slices([covered[0] - 3, (covered[0] + covered[1]) // 2])
    assert widget.contexts.outside_model_range() == [covered[0] - 3]
    assert "outside the model's range" in widget.contexts.info.text()
    assert "outside the model's range" in widget.contexts.list.item(0).text()
    assert "outside" not in widget.contexts.list.item(1).text()


def test_closing_the_dock_mid_job_adds_nothing(make_napari_viewer, qtbot, monkeypatch, tiny_bruno_weights) -> None:
    import time

    from napari_mentalmap.widgets import mental_map as mental_map_module

    def slow_job(*args, **kwargs):
        for i in range(100):
            time.sleep(0.02)
            yield i, 100, "sampling"
        raise AssertionError("the job should have been stopped")

    viewer = make_napari_viewer()
    viewer.open(str(SAMPLE_T1), plugin="napari-mentalmap", name="T1")
    widget = MentalMapWidget(viewer)
    dock = viewer.window.add_dock_widget(widget, name="mental maps")
    qtbot.waitUntil(lambda: not widget.contexts.range_pending, timeout=TIMEOUT_MS)
    monkeypatch.setattr(mental_map_module, "mental_map_job", lambda *a, **k: slow_job())
    runner = widget.runner
    worker = widget.run("mean")
    assert worker is not None
    with qtbot.waitSignal(worker.yielded, timeout=TIMEOUT_MS):
        pass
    names = [layer.name for layer in viewer.layers]
    viewer.window.remove_dock_widget(dock)
    qtbot.waitUntil(lambda: runner.worker is None, timeout=TIMEOUT_MS)
    qtbot.wait(100)
    assert runner.closed and runner.stats.outcome == "cancelled"
    assert [layer.name for layer in viewer.layers] == names


def test_refined_samples_sit_on_the_input_grid(qtbot, widget: MentalMapWidget, errors: list[str],
                                               tiny_refining_weights) -> None:
    """Weights with input-grid settings: samples at the input resolution, over the input, the
    acquired slices exact in every sample, and saved with the input's reference."""
    widget.weights_edit.setText(str(tiny_refining_weights))
    source = widget.viewer.layers["T1"]
    widget.contexts.evenly_spaced(3)
    _run(qtbot, widget, "samples")
    assert not errors, errors
    samples = widget.viewer.layers["T1 BRUNO samples"]
    assert samples.data.shape == (3, *source.data.shape)
    np.testing.assert_allclose(_corners(samples), _corners(source))
    for context in widget.contexts.slices:
        for sample in samples.data:
            np.testing.assert_array_equal(sample[context], source.data[context])
    assert widget.viewer.layers["T1 BRUNO mean"].data.shape == source.data.shape
