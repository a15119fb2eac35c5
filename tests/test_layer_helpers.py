"""The docks' layer helpers: in-place result updates set only what changed."""

from __future__ import annotations

import numpy as np

from napari_mentalmap.widgets._layers import update_layer


def test_update_layer_sets_only_changed_attributes(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    layer = viewer.add_image(np.zeros((4, 5, 6), np.float32), scale=(2.0, 1.0, 1.0), translate=(0.0, 3.0, 0.0),
                             contrast_limits=(0.0, 1.0), metadata={"affine": np.eye(4)})
    fired: list[str] = []
    for name in ("scale", "translate", "contrast_limits", "data"):
        getattr(layer.events, name).connect(lambda event, name=name: fired.append(name))

    update_layer(layer, np.ones((4, 5, 6), np.float32), scale=(2.0, 1.0, 1.0), translate=[0, 3, 0],
                 contrast_limits=(0.0, 1.0), metadata={"affine": np.eye(4)}, name=layer.name)
    assert "data" in fired and not {"scale", "translate", "contrast_limits"} & set(fired)
    assert layer.data.max() == 1.0

    fired.clear()
    update_layer(layer, np.ones((4, 5, 6), np.float32), scale=(2.0, 0.5, 0.5), contrast_limits=(0.0, 2.0),
                 name="renamed")
    assert {"scale", "contrast_limits"} <= set(fired) and "translate" not in fired
    assert tuple(layer.scale) == (2.0, 0.5, 0.5) and tuple(layer.contrast_limits) == (0.0, 2.0)
    assert layer.name == "renamed"
