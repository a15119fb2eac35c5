"""The npe2 manifest is installed, valid, and declares every contribution."""

from __future__ import annotations

from pathlib import Path

import npe2
import pytest
from npe2.manifest.utils import import_python_name

PLUGIN = "napari-mentalmap"
REPO = Path(__file__).parents[1]


def resolve(manifest: npe2.PluginManifest, command_id: str):
    """The Python object behind a manifest command."""
    [command] = [c for c in manifest.contributions.commands if c.id == command_id]
    return import_python_name(command.python_name)


@pytest.fixture(scope="module")
def manifest() -> npe2.PluginManifest:
    plugin_manager = npe2.PluginManager.instance()
    plugin_manager.discover()
    return plugin_manager.get_manifest(PLUGIN)


def test_manifest_file_is_shipped_and_linked() -> None:
    package_manifest = REPO / "src" / "napari_mentalmap" / "napari.yaml"
    assert package_manifest.is_file()
    top_level = REPO / "napari.yaml"
    assert top_level.resolve() == package_manifest.resolve()
    npe2.PluginManifest.from_file(package_manifest)  # raises when invalid


def test_reader(manifest: npe2.PluginManifest) -> None:
    [reader] = manifest.contributions.readers
    assert set(reader.filename_patterns) == {"*.nii", "*.nii.gz", "*.mgz"}
    assert resolve(manifest, reader.command).__name__ == "napari_get_reader"
    plugin_manager = npe2.PluginManager.instance()
    readers = [r.command for r in plugin_manager.iter_compatible_readers(["brain.nii.gz"])]
    assert reader.command in readers


def test_writers(manifest: npe2.PluginManifest) -> None:
    writers = {tuple(w.layer_types): w for w in manifest.contributions.writers}
    assert set(writers) == {("image",), ("labels",)}
    for writer in writers.values():
        assert {".nii", ".nii.gz"} <= set(writer.filename_extensions)
        assert callable(resolve(manifest, writer.command))


def test_sample_data(manifest: npe2.PluginManifest) -> None:
    samples = {sample.key: sample for sample in manifest.contributions.sample_data}
    assert {"t1", "flair"} <= set(samples)
    [(data, kwargs, layer_type)] = samples["t1"].open()
    assert layer_type == "image" and data.ndim == 3
    assert kwargs["scale"] == pytest.approx((2.0, 2.0, 2.0))


def test_widget(manifest: npe2.PluginManifest) -> None:
    widgets = {widget.display_name: widget for widget in manifest.contributions.widgets}
    widget = widgets["Mental maps (BRUNO)"]
    assert widget.command == "napari-mentalmap.mental_map_widget"
    commands = {command.id: command for command in manifest.contributions.commands}
    assert (
        commands[widget.command].python_name == "napari_mentalmap.widgets.mental_map:MentalMapWidget"
    )


def test_widget_docks_in_viewer(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    dock_widget, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Mental maps (BRUNO)")
    assert type(widget).__name__ == "MentalMapWidget"
