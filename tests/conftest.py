"""Fixtures shared by the test modules: tiny untrained weights and captured notifications."""

from __future__ import annotations

from pathlib import Path

import pytest

TIMEOUT_MS = 30_000


@pytest.fixture(scope="session")
def tiny_bruno_weights(tmp_path_factory) -> Path:
    """An untrained BRUNO on an 8 x 16 x 16 grid (fast; dock and CLI logic need no good model)."""
    from napari_mentalmap.models.bruno import Bruno, BrunoConfig
    from napari_mentalmap.models.flows import FlowConfig

    path = tmp_path_factory.mktemp("bruno") / "tiny.pt"
    flow = FlowConfig(image_size=16, n_poses=8, n_scales=2, couplings_per_stage=1, final_couplings=1,
                      width=8, res_blocks=1)
    Bruno(BrunoConfig(flow=flow, grid={"n_poses": 8, "size": 16, "coverage": 0.75, "margin": 0.06})).save(path)
    return path


@pytest.fixture(scope="session")
def tiny_refining_weights(tmp_path_factory) -> Path:
    """Tiny untrained BRUNO weights that carry input-grid settings (refined mean, samples, std)."""
    from napari_mentalmap.inference.detail_transfer import DetailTransferConfig, StdCalibration
    from napari_mentalmap.inference.refined_maps import InputGridSettings
    from napari_mentalmap.models.bruno import Bruno, BrunoConfig
    from napari_mentalmap.models.flows import FlowConfig

    path = tmp_path_factory.mktemp("bruno_refined") / "tiny.pt"
    flow = FlowConfig(image_size=16, n_poses=8, n_scales=2, couplings_per_stage=1, final_couplings=1,
                      width=8, res_blocks=1)
    settings = InputGridSettings(DetailTransferConfig(), StdCalibration(-2.0, 0.4, -0.4, 0.2))
    Bruno(BrunoConfig(flow=flow, grid={"n_poses": 8, "size": 16, "coverage": 0.75, "margin": 0.06})).save(
        path, input_grid=settings.to_dict())
    return path


@pytest.fixture
def errors(monkeypatch) -> list[str]:
    """Error notifications shown by the docks (through ``widgets._worker.report_error``)."""
    from napari_mentalmap.widgets import _worker

    shown: list[str] = []
    monkeypatch.setattr(_worker, "show_error", shown.append)
    return shown


@pytest.fixture
def mental_map_dock(make_napari_viewer, qtbot, tiny_bruno_weights):
    """The Mental maps dock on the shipped sample T1 (layer "T1") with the tiny weights."""
    from napari_mentalmap._sample_data import SAMPLE_T1
    from napari_mentalmap.widgets.mental_map import MentalMapWidget

    viewer = make_napari_viewer()
    viewer.open(str(SAMPLE_T1), plugin="napari-mentalmap", name="T1")
    widget = MentalMapWidget(viewer)
    widget.weights_edit.setText(str(tiny_bruno_weights))
    widget.device_combo.setCurrentText("cpu")
    widget.n_samples.setValue(3)
    qtbot.waitUntil(lambda: not widget.contexts.range_pending, timeout=TIMEOUT_MS)  # brain mask in a worker
    return widget
