"""The plugin docks in one window: every control reachable at 1920x1080 and 1366x768, a
reopened dock re-links to its layers, per-image context picks, subject-bearing layer names."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from qtpy.QtCore import QPoint
from qtpy.QtWidgets import (
    QAbstractButton,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QDockWidget,
    QLineEdit,
    QScrollArea,
    QSlider,
    QWidget,
)
from superqt import QCollapsible
from test_slice_vae import write_tiny_weights

from napari_mentalmap.widgets._layout import MIN_DOCK_HEIGHT, DockScroll

TIMEOUT_MS = 30_000
SCREENS = [(1920, 1080), (1366, 768)]


def _flair() -> np.ndarray:
    volume = np.zeros((20, 24, 24), np.float32)
    volume[3:17, 4:20, 4:20] = 100.0 + 5 * np.random.default_rng(0).random((14, 16, 16))
    volume[7:13, 8:14, 8:14] = 300.0  # a bright "lesion"
    return volume


def _controls(content: QWidget) -> list[QWidget]:
    """The controls a user works with inside a dock's scrolled content."""
    kinds = (QAbstractButton, QComboBox, QAbstractSpinBox, QLineEdit, QSlider)
    return [w for w in content.findChildren(QWidget) if isinstance(w, kinds)
            and not (isinstance(w, QLineEdit) and isinstance(w.parentWidget(), QAbstractSpinBox | QComboBox))]


def _section_of(widget: QWidget) -> QCollapsible | None:
    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QCollapsible):
        parent = parent.parentWidget()
    return parent


def _shown_size(area: QScrollArea, widget: QWidget) -> tuple[int, int]:
    """Width and height of ``widget`` that can be seen once its scroll area scrolls to it
    (to its whole rectangle: ``ensureWidgetVisible`` only shows a line edit's text cursor)."""
    corner = widget.mapTo(area.widget(), QPoint(0, 0))
    half_width, half_height = widget.width() // 2 + 1, widget.height() // 2 + 1
    area.ensureVisible(corner.x() + half_width, corner.y() + half_height, half_width, half_height)
    QApplication.processEvents()
    shown = widget.visibleRegion().boundingRect()
    return shown.width(), shown.height()


@pytest.mark.parametrize("screen", SCREENS, ids=lambda s: f"{s[0]}x{s[1]}")
def test_three_docks_fit_and_every_control_can_be_reached(make_napari_viewer, qtbot, tmp_path, screen) -> None:
    from napari_mentalmap.widgets.anomaly import AnomalyWidget
    from napari_mentalmap.widgets.latent_explorer import LatentExplorerWidget
    from napari_mentalmap.widgets.mental_map import MentalMapWidget
    from napari_mentalmap.widgets.segmenter import SegmenterWidget

    width, height = screen
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(width, height)
    viewer.add_image(_flair(), name="FLAIR")
    docks = {}
    explorer = LatentExplorerWidget(viewer, weights=write_tiny_weights(tmp_path / "tiny.pt"))
    for name, widget in (("Mental maps", MentalMapWidget(viewer)), ("Anomaly maps", AnomalyWidget(viewer)),
                         ("Latent explorer", explorer), ("Lesion segmenter", SegmenterWidget(viewer))):
        docks[name] = widget
        viewer.window.add_dock_widget(widget, name=name, area="right")  # as napari adds a plugin dock
    qtbot.waitUntil(lambda: not explorer.loading, timeout=TIMEOUT_MS)  # it then docks its embedding plot
    qtbot.wait(200)  # the docks share the height once shown
    assert "Latent embedding (PCA)" in viewer.window.dock_widgets
    assert window.width() <= width and window.height() <= height  # the minimum heights fit the screen

    for name, widget in docks.items():
        dock = widget.parentWidget()
        while not isinstance(dock, QDockWidget):
            dock = dock.parentWidget()
        dock.raise_()  # a fourth dock opens as a tab: its tab is chosen
        qtbot.wait(50)
        assert dock.isVisible() and not dock.isFloating(), name
        area = widget.findChild(DockScroll)
        content = area.widget()
        viewport = area.viewport().height()
        assert viewport >= min(MIN_DOCK_HEIGHT, content.sizeHint().height()) - 2, name
        if height >= 1080:  # room enough: more than the minimum (it was 89 px for Mental maps)
            assert viewport >= 1.3 * MIN_DOCK_HEIGHT, (name, viewport)
        assert not area.horizontalScrollBar().isVisible(), name
        # collapsed (as opened): a control in a closed section is reached through its toggle
        sections = content.findChildren(QCollapsible)
        controls = _controls(content)
        assert len(controls) >= 5, name
        for control in controls:
            section = _section_of(control)
            target = control if section is None or section.isExpanded() else section.toggleButton()
            shown = _shown_size(area, target)
            assert shown == (target.width(), target.height()), (name, target, shown)
            assert target.height() >= target.minimumSizeHint().height(), (name, target)
        # every section opened: every control fully visible once scrolled to
        for section in sections:
            section.expand(animate=False)
        qtbot.wait(50)  # the scroll area's content grows (posted layout requests)
        for control in controls:
            shown = _shown_size(area, control)
            assert shown == (control.width(), control.height()) and shown[1] > 0, (name, control, shown)
            assert control.height() >= control.minimumSizeHint().height(), (name, control)


def _labelled(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)


def test_reopened_anomaly_dock_relinks_to_its_layers_and_edits(make_napari_viewer, qtbot) -> None:
    from napari_mentalmap.inference.anomaly_methods import INTENSITY_METHOD
    from napari_mentalmap.widgets.anomaly import AnomalyWidget

    viewer = make_napari_viewer()
    viewer.add_image(_flair(), name="patient07 FLAIR", scale=(2.0, 1.5, 1.5))
    first = AnomalyWidget(viewer)
    dock = viewer.window.add_dock_widget(first, name="Anomaly maps")
    first.model_combo.setCurrentIndex(first.model_combo.findData(INTENSITY_METHOD))
    first.compute()
    _labelled(qtbot, first)
    first.threshold_slider.setValue(0.6)
    _labelled(qtbot, first)
    image, labels = first.image_layer, first.labels_layer
    assert image.name == "patient07 FLAIR anomaly"
    painted = (slice(2, 3), slice(1, 8), slice(1, 4))
    labels.data[painted] = 7
    names = [layer.name for layer in viewer.layers]
    viewer.window.remove_dock_widget(dock)

    second = AnomalyWidget(viewer)  # the dock opened again
    viewer.window.add_dock_widget(second, name="Anomaly maps")
    assert second.labels_layer is labels and second.image_layer is image
    assert second.threshold_slider.isEnabled() and second.threshold_slider.value() == pytest.approx(0.6)
    assert second.current.method == INTENSITY_METHOD and second.auto_button.isEnabled()
    for threshold in (0.5, 0.9):  # the slider works on the same layer and keeps the edit
        second.threshold_slider.setValue(threshold)
        _labelled(qtbot, second)
        assert (labels.data[painted] == 7).all()
        outside = np.ones(labels.data.shape, bool)
        outside[painted] = False  # elsewhere the labels are the proposal at this threshold
        np.testing.assert_array_equal(labels.data[outside] > 0, second.current.labels.proposal.labels[outside] > 0)
    assert "21 voxels edited" in second.timing_label.text()
    second.model_combo.setCurrentIndex(second.model_combo.findData(INTENSITY_METHOD))
    second.compute()  # a re-computation updates the same layers in place
    _labelled(qtbot, second)
    assert second.labels_layer is labels and (labels.data[painted] == 7).all()
    assert [layer.name for layer in viewer.layers] == names


def test_reopened_mental_map_dock_keeps_contexts_and_updates_its_layers(
        qtbot, mental_map_dock, tiny_bruno_weights) -> None:
    from napari_mentalmap.widgets.mental_map import MentalMapWidget

    first = mental_map_dock
    viewer = first.viewer
    dock = viewer.window.add_dock_widget(first, name="Mental maps")
    picked = first.contexts.evenly_spaced(3)
    assert first.run("mean") is not None
    qtbot.waitUntil(lambda: not first.busy, timeout=TIMEOUT_MS)
    mean, contexts = viewer.layers["T1 BRUNO mean"], viewer.layers["T1 contexts"]
    names = [layer.name for layer in viewer.layers]
    viewer.window.remove_dock_widget(dock)

    second = MentalMapWidget(viewer)
    viewer.window.add_dock_widget(second, name="Mental maps")
    second.weights_edit.setText(str(tiny_bruno_weights))
    second.device_combo.setCurrentText("cpu")
    qtbot.waitUntil(lambda: not second.contexts.range_pending, timeout=TIMEOUT_MS)
    assert second.contexts.slices == picked  # read back from "T1 contexts"
    assert second.run("mean") is not None
    qtbot.waitUntil(lambda: not second.busy, timeout=TIMEOUT_MS)
    assert viewer.layers["T1 BRUNO mean"] is mean and viewer.layers["T1 contexts"] is contexts
    second.contexts.set_slices(picked[:2])
    assert contexts.metadata["mentalmap_result"]["slices"] == picked[:2]
    assert [layer.name for layer in viewer.layers] == names  # updated in place, no duplicates


def test_reopened_explorer_walks_on_from_the_decoded_latent(make_napari_viewer, qtbot, tmp_path) -> None:
    from napari_mentalmap.widgets.latent_explorer import DECODED_LAYER, LatentExplorerWidget

    weights = write_tiny_weights(tmp_path / "tiny.pt")
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).uniform(0, 1, (5, 16, 16)).astype(np.float32), name="grid volume")
    first = LatentExplorerWidget(viewer, weights=weights)
    qtbot.waitUntil(lambda: not first.loading, timeout=TIMEOUT_MS)
    assert first.encode_current_slice() is not None
    _labelled(qtbot, first)
    decoded, base, pose = viewer.layers[DECODED_LAYER], first.base.copy(), first.pose
    first.close()
    first.deleteLater()

    second = LatentExplorerWidget(viewer, weights=weights)
    qtbot.waitUntil(lambda: not second.loading, timeout=TIMEOUT_MS)
    np.testing.assert_allclose(second.base, base)
    assert second.pose == pose and second.source_name == "grid volume"
    before = decoded.data.copy()
    second.sliders[0].setValue(25)  # the sliders work at once, on the same layer
    _labelled(qtbot, second)
    assert viewer.layers[DECODED_LAYER] is decoded and not np.allclose(decoded.data, before)
    assert [layer.name for layer in viewer.layers].count(DECODED_LAYER) == 1


def test_switching_images_keeps_each_images_context_pick(mental_map_dock) -> None:
    widget = mental_map_dock
    source = widget.viewer.layers["T1"]
    widget.viewer.add_image(source.data[::2], name="coarse", scale=(source.scale[0] * 2, *source.scale[1:]),
                            translate=source.translate)
    widget.layer_combo.setCurrentText("T1")
    widget.contexts.set_slices([20, 40])
    widget.layer_combo.setCurrentText("coarse")
    assert widget.contexts.slices == [10, 20]  # a new image: the pick remapped by position
    widget.contexts.set_slices([15])
    widget.layer_combo.setCurrentText("T1")
    assert widget.contexts.slices == [20, 40]  # its own pick, not [15] remapped
    assert widget.viewer.layers["T1 contexts"].metadata["mentalmap_result"]["slices"] == [20, 40]
    widget.layer_combo.setCurrentText("coarse")
    assert widget.contexts.slices == [15]
    widget.contexts.clear()
    widget.layer_combo.setCurrentText("T1")
    widget.layer_combo.setCurrentText("coarse")
    assert widget.contexts.slices == []  # an emptied pick stays empty


def _nifti(path, data: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), str(path))
    return str(path)


def test_layer_names_carry_the_subject(make_napari_viewer, qtbot, tmp_path) -> None:
    from napari_mentalmap._reader import layer_name, read_nifti
    from napari_mentalmap._sample_data import sample_flair
    from napari_mentalmap.inference.anomaly_methods import INTENSITY_METHOD
    from napari_mentalmap.widgets.anomaly import AnomalyWidget

    flair = _flair()
    viewer = make_napari_viewer()
    for patient in ("patient07", "patient19"):
        viewer.open(_nifti(tmp_path / patient / "FLAIR.nii.gz", flair), plugin="napari-mentalmap")
    assert [layer.name for layer in viewer.layers] == ["patient07 FLAIR", "patient19 FLAIR"]
    widget = AnomalyWidget(viewer)
    widget.layer_combo.setCurrentText("patient19 FLAIR")
    widget.model_combo.setCurrentIndex(widget.model_combo.findData(INTENSITY_METHOD))
    widget.compute()
    _labelled(qtbot, widget)
    assert {"patient19 FLAIR anomaly", "patient19 FLAIR anomaly labels"} <= {layer.name for layer in viewer.layers}

    assert layer_name(tmp_path / "nichart" / "flair" / "Subj21_FL.nii.gz") == "Subj21_FL"  # names a subject
    assert layer_name(tmp_path / "bert" / "mri" / "T1.mgz") == "bert T1"  # generic folders skipped
    assert layer_name(tmp_path / "case3" / "lesion_mask_2mm.nii") == "case3 lesion_mask_2mm"
    # one call with equal non-generic names: the folder tells them apart
    same = [_nifti(tmp_path / folder / "scan01.nii.gz", flair) for folder in ("siteA", "siteB")]
    assert [kwargs["name"] for _, kwargs, _ in read_nifti(same)] == ["siteA scan01", "siteB scan01"]
    assert sample_flair()[0][1]["name"] == "sample FLAIR"
