"""Anomaly map -> lesion labels: threshold, small components removed, user edits kept.

``threshold_labels`` / :class:`LabelUpdater`: threshold -> connected components under a
minimum size removed -> labels; the updater gives the same labels for a live slider: it
labels only the bounding box of the voxels above the threshold into reused buffers and
updates one labels array in place. :class:`EditedLabels` puts the user's painted and
erased voxels on top of that proposal, so that moving the threshold never undoes them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

DEFAULT_MIN_SIZE = 10


def remove_small(binary: np.ndarray, min_size: int = DEFAULT_MIN_SIZE) -> np.ndarray:
    """Label connected components (face connectivity) and drop those under ``min_size``.

    Returns int32 labels (0 = background, components renumbered 1..n).
    """
    labels, n = ndimage.label(binary)
    if n == 0:
        return labels.astype(np.int32)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= max(int(min_size), 1)
    keep[0] = False
    if keep[1:].all():
        return labels.astype(np.int32, copy=False)
    relabel = np.zeros(n + 1, dtype=np.int32)
    relabel[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return relabel[labels]


def threshold_labels(anomaly: np.ndarray, threshold: float, min_size: int = DEFAULT_MIN_SIZE) -> np.ndarray:
    """Lesion components of ``anomaly > threshold`` with at least ``min_size`` voxels (int32 labels)."""
    return remove_small(np.asarray(anomaly) > threshold, min_size)


def union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    """Smallest box holding boxes ``a`` and ``b`` (either may be None: no box)."""
    if a is None or b is None:
        return a if b is None else b
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True))


class LabelUpdater:
    """Fast repeated ``threshold_labels`` on one anomaly map (for a live slider).

    Gives exactly the labels of ``threshold_labels`` (same numbering). Per-axis maxima are
    precomputed, so each update labels only the bounding box of the voxels above the
    threshold, into reused buffers, and writes the result into one labels array in place
    (a napari Labels layer showing it only needs a refresh). The counts needed for a live
    Dice come for free: ``n_labelled`` voxels in ``n_components`` components.
    """

    def __init__(self, anomaly: np.ndarray):
        self.anomaly = np.ascontiguousarray(anomaly, dtype=np.float32)
        self.profiles = [self.anomaly.max(axis=tuple(a for a in range(self.anomaly.ndim) if a != axis))
                         for axis in range(self.anomaly.ndim)]
        self.labels = np.empty(self.anomaly.shape, dtype=np.int32)
        self.labels.fill(0)  # touches every page now (np.zeros would defer that to the first update)
        self._box: tuple[slice, ...] | None = None
        self._above = np.empty(0, bool)  # flat work buffers, grown on demand and reused
        self._work = np.empty(0, np.int32)
        widest = self.box(0.0)
        if widest is not None:  # allocate and touch them now, not on the slider's first move
            size = int(np.prod([s.stop - s.start for s in widest]))
            self._above, self._work = np.ones(size, bool), np.ones(size, np.int32)
        self.n_components = 0
        self.n_labelled = 0
        self.changed: tuple[slice, ...] | None = None  # where updates changed labels since take_changed
        self._last: tuple[float, int] | None = None

    def box(self, threshold: float) -> tuple[slice, ...] | None:
        """Bounding box of the voxels above ``threshold`` (None when there are none)."""
        box = []
        for profile in self.profiles:
            above = np.flatnonzero(profile > threshold)
            if above.size == 0:
                return None
            box.append(slice(int(above[0]), int(above[-1]) + 1))
        return tuple(box)

    def _buffers(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        size = int(np.prod(shape))
        if self._work.size < size:
            self._above = np.empty(size, bool)
            self._work = np.empty(size, np.int32)
        return self._above[:size].reshape(shape), self._work[:size].reshape(shape)

    def update(self, threshold: float, min_size: int = DEFAULT_MIN_SIZE) -> np.ndarray:
        """Labels for ``threshold`` and ``min_size`` (the same array, updated in place).

        ``changed`` grows to hold every voxel this may have changed, until :meth:`take_changed`.
        """
        if self._last == (float(threshold), int(min_size)):
            return self.labels
        self._last = (float(threshold), int(min_size))
        box = self.box(threshold)
        old = self._box
        self.changed = union_box(self.changed, union_box(old, box))
        if old is not None and (box is None or any(
                n.start > o.start or n.stop < o.stop for n, o in zip(box, old, strict=True))):
            self.labels[old] = 0  # the new box does not cover the old one
        self._box = box
        self.n_components = self.n_labelled = 0
        if box is None:
            return self.labels
        above, labels = self._buffers(tuple(s.stop - s.start for s in box))
        np.greater(self.anomaly[box], threshold, out=above)
        n = ndimage.label(above, output=labels)
        if n == 0:
            self.labels[box] = 0
            return self.labels
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        keep = sizes >= max(int(min_size), 1)
        keep[0] = False
        self.n_components = int(np.count_nonzero(keep))
        self.n_labelled = int(sizes[keep].sum())
        if self.n_components < n:  # renumber the kept components 1..k, in order
            relabel = np.zeros(n + 1, dtype=np.int32)
            relabel[keep] = np.arange(1, self.n_components + 1, dtype=np.int32)
            np.take(relabel, labels, out=labels, mode="clip")
        self.labels[box] = labels
        return self.labels

    def overlap(self, truth_index: np.ndarray) -> int:
        """Labelled voxels among the flat indices ``truth_index`` (for a live Dice)."""
        return int(np.count_nonzero(self.labels.ravel()[truth_index]))

    def take_changed(self) -> tuple[slice, ...] | None:
        """The box holding every voxel changed since the last call (None: nothing changed)."""
        changed, self.changed = self.changed, None
        return changed



class EditedLabels:
    """The labels a user sees and edits: the model's proposal with the user's edits on top.

    ``labels`` is the array a napari Labels layer shows and paints into. Before every new
    proposal the voxels that differ from what was last written are taken as user edits
    (painted, filled or erased) and kept from then on; the threshold and minimum size only
    change the voxels the user has not touched. :meth:`reset` drops the edits. A new map of
    the same shape (a re-computation) keeps the labels array and the edits (``previous``).
    """

    def __init__(self, anomaly: np.ndarray, previous: EditedLabels | None = None,
                 proposal: LabelUpdater | None = None):
        """``proposal``: a ready :class:`LabelUpdater` of ``anomaly`` (made in a worker thread)."""
        self.proposal = proposal if proposal is not None else LabelUpdater(anomaly)
        shape = self.proposal.anomaly.shape
        if previous is not None and previous.labels.shape == shape:
            previous.absorb_edits()
            self.labels, self.edited, self._shown = previous.labels, previous.edited, previous._shown
        else:
            self.labels = np.zeros(shape, np.int32)
            self.edited = np.zeros(shape, bool)
            self._shown = np.zeros(shape, np.int32)
        self._any_edit = bool(self.edited.any())
        self._whole_next = True  # the labels array may still hold another proposal anywhere

    @classmethod
    def adopt(cls, anomaly: np.ndarray, labels: np.ndarray, threshold: float,
              min_size: int = DEFAULT_MIN_SIZE) -> EditedLabels:
        """Take over ``labels`` (int32, shown before, maybe edited): the proposal at ``threshold``
        and ``min_size`` is made again and every voxel that differs from it counts as an edit.
        ``labels`` stays the array that is updated in place."""
        adopted = cls(anomaly)
        adopted.proposal.update(threshold, min_size)
        adopted.proposal.take_changed()
        adopted.labels = labels
        adopted.edited = labels != adopted.proposal.labels
        adopted._shown = labels.copy()
        adopted._any_edit = bool(adopted.edited.any())
        adopted._whole_next = False
        return adopted

    def absorb_edits(self) -> int:
        """Record the voxels changed since the last update as edits; returns how many changed."""
        changed = self.labels != self._shown
        n = int(np.count_nonzero(changed))
        if n:
            self.edited |= changed
            self._any_edit = True
            np.copyto(self._shown, self.labels, where=changed)
        return n

    def update(self, threshold: float, min_size: int = DEFAULT_MIN_SIZE) -> np.ndarray:
        """New proposal for ``threshold``/``min_size`` under the kept edits (same array, in place)."""
        self.absorb_edits()
        proposal = self.proposal.update(threshold, min_size)
        region = self.proposal.take_changed()
        if self._whole_next:
            region, self._whole_next = (...,), False
        if region is None:  # the proposal did not change; edits are already in place
            return self.labels
        if self._any_edit:
            np.copyto(self.labels[region], proposal[region], where=~self.edited[region])
        else:
            np.copyto(self.labels[region], proposal[region])
        np.copyto(self._shown[region], self.labels[region])
        return self.labels

    def reset(self) -> np.ndarray:
        """Back to the proposal: every edit dropped."""
        self.edited.fill(False)
        self._any_edit = False
        self._whole_next = False
        np.copyto(self.labels, self.proposal.labels)
        np.copyto(self._shown, self.labels)
        return self.labels

    @property
    def n_edited(self) -> int:
        """Voxels the user has painted or erased (kept across threshold changes)."""
        return int(np.count_nonzero(self.edited)) if self._any_edit else 0

    @property
    def n_labelled(self) -> int:
        return int(np.count_nonzero(self.labels))

    def overlap(self, truth_index: np.ndarray) -> int:
        """Labelled voxels (edits included) among the flat indices ``truth_index``."""
        return int(np.count_nonzero(self.labels.ravel()[truth_index]))
