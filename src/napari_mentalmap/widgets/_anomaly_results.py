"""The Anomaly maps dock's per-input results, and finding them again from the viewer's layers.

A result's state (method, Auto thresholds, threshold, min size) is also written into its
anomaly layer's tag (``metadata["mentalmap_result"]``), so a dock closed and opened again
in the same viewer re-links to "<name> anomaly" and "<name> anomaly labels": the slider and
the user's label edits go on working on those layers instead of new duplicates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..inference.labels import EditedLabels
from ._layers import RESULT_KEY, find_result


@dataclass
class SourceResult:
    """What the dock shows for one input image."""

    source: Any
    method: str
    image_layer: Any
    labels_layer: Any
    labels: EditedLabels
    auto_thresholds: dict[str, float]  # target -> Auto threshold (a ScanThreshold when from this scan)
    threshold: float
    notes: list[str] = field(default_factory=list)
    residual: str = "positive"  # the score (VAEs and the DAE)
    fit: tuple[float, float] | None = None  # the gated method's intensity fit (its per-scan Auto)

    def remember(self, threshold: float, min_size: int) -> None:
        """Write what a reopened dock needs into the anomaly layer's tag: the method, score, the
        Auto thresholds and their fit, and the threshold and min size the labels now show."""
        self.image_layer.metadata.setdefault(RESULT_KEY, {}).update(
            method=self.method, residual=self.residual, fit=self.fit, auto_thresholds=dict(self.auto_thresholds),
            threshold=float(threshold), min_size=int(min_size))


def propose(request: tuple[SourceResult, float, int]) -> tuple[SourceResult, float, int, float]:
    """Worker side of a slider move: the model's proposal at the new threshold and min size."""
    started = time.perf_counter()
    request[0].labels.proposal.update(*request[1:])
    return (*request, 1000 * (time.perf_counter() - started))


def adopt_result(viewer: Any, source: Any, kind: str = "anomaly") -> SourceResult | None:
    """``source``'s result made by an earlier dock in ``viewer`` (None when there is none, or
    when its layers no longer fit together: then the next computation adds new ones). The
    layers are tagged ``kind`` (the map) and ``"<kind> labels"``."""
    image_layer = find_result(viewer, source.name, kind)
    labels_layer = find_result(viewer, source.name, f"{kind} labels")
    if image_layer is None or labels_layer is None:
        return None
    tag = image_layer.metadata.get(RESULT_KEY) or {}
    if "threshold" not in tag:  # its dock is still adding it
        return None
    anomaly, labels = np.asarray(image_layer.data), labels_layer.data
    if (not isinstance(labels, np.ndarray) or labels.dtype != np.int32 or labels.shape != anomaly.shape
            or not labels.flags.c_contiguous):
        return None
    edited = EditedLabels.adopt(anomaly, labels, float(tag["threshold"]), int(tag.get("min_size", 1)))
    return SourceResult(source, str(tag.get("method", "")), image_layer, labels_layer, edited,
                        {str(k): v if isinstance(v, float) else float(v)  # a ScanThreshold stays one
                         for k, v in (tag.get("auto_thresholds") or {}).items()},
                        float(tag["threshold"]), residual=str(tag.get("residual", "positive")),
                        fit=tuple(tag["fit"]) if tag.get("fit") else None)
