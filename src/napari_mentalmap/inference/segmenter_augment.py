"""Augmentations for the user's lesion segmenter (the levers of the Middleton seminar).

* ``none``: the crops as they are.
* ``classical``: MONAI transforms - intensity (gamma, bias field) and spatial (affine, elastic),
  the same spatial draw for FLAIR, mask and labels.
* ``learned``: deformations learned from the training scans themselves, sampled as PADDIT does:
  each scan's slices are registered (optical flow) onto the matching slices of the other training
  scans and of its own mirror image; a crop is warped by a random fraction of one of them, so the
  anatomy moves towards another real brain rather than along a random field.
* ``c4``: no explicit augmentation; the model is the C4-equivariant U-Net (implicit augmentation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

AUGMENTATIONS: tuple[str, ...] = ("none", "classical", "learned", "c4")
DEFAULT_AUGMENTATION = "learned"
"""The dock's and the CLI's default: the best mean Dice over the validation folds (NiChart
Subj18-20 vs ``wml_auto``, n = 1 and 2; ``results/segmenter/validation_choice.json``)."""
FLOW_POSITIONS = 12
"""Axial positions per scan at which the learned deformations are registered."""
FLOW_STEP = 2
"""Registrations run on every second in-plane voxel (fields are smooth)."""


def missing_dependency(augmentation: str) -> str | None:
    """Why ``augmentation`` cannot run here (its library is not installed), or None."""
    if augmentation == "classical":
        try:
            import monai.transforms  # noqa: F401
        except ImportError:
            return "the classical augmentation needs MONAI: pip install 'napari-mentalmap[train]'"
    return None


def classical_transform(seed: int):
    """The MONAI pipeline of the ``classical`` option (keys ``flair``, ``mask``, ``label``)."""
    from monai.transforms import (
        Compose,
        Rand2DElasticd,
        RandAdjustContrastd,
        RandAffined,
        RandBiasFieldd,
    )

    keys = ("flair", "mask", "label")
    spatial = ("bilinear", "nearest", "nearest")
    transform = Compose([
        RandAdjustContrastd(keys="flair", prob=0.5, gamma=(0.7, 1.5)),
        RandBiasFieldd(keys="flair", prob=0.5, coeff_range=(0.0, 0.15)),
        RandAffined(keys=keys, prob=0.7, rotate_range=(0.26,), scale_range=(0.1, 0.1), mode=spatial,
                    padding_mode="zeros"),
        Rand2DElasticd(keys=keys, prob=0.3, spacing=(20, 20), magnitude_range=(1.0, 2.5), mode=spatial,
                       padding_mode="zeros"),
    ])
    transform.set_random_state(seed=seed)
    return transform


def apply_classical(transform, channels: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One crop (``(4, H, W)`` channels, ``(H, W)`` labels) through the MONAI pipeline."""
    out = transform({"flair": channels[:3].copy(), "mask": channels[3:4].copy(), "label": label[None].astype(np.float32)})
    flair = np.asarray(out["flair"], np.float32)
    mask = np.asarray(out["mask"], np.float32) > 0.5
    return np.concatenate([np.clip(flair, 0.0, None), mask.astype(np.float32)]), np.asarray(out["label"])[0] > 0.5


@dataclass
class FlowBank:
    """Per scan: the axial positions registered and, per position, the displacement fields
    ``(2, H, W)`` (voxels, on the scan's in-plane grid) towards every partner."""

    positions: list[np.ndarray]
    fields: list[list[list[np.ndarray]]]

    def field_for(self, scan: int, z: int, rng: np.random.Generator) -> np.ndarray | None:
        """A random field registered at the position nearest to slice ``z`` of ``scan``."""
        if not self.fields[scan]:
            return None
        nearest = int(np.argmin(np.abs(self.positions[scan] - z)))
        partners = self.fields[scan][nearest]
        return partners[int(rng.integers(len(partners)))] if partners else None


def _register(reference: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """Displacement ``u`` (2, H, W) with ``moving(x + u(x)) ~ reference(x)``, full resolution."""
    from skimage.registration import optical_flow_ilk
    from skimage.transform import resize

    small_ref, small_mov = reference[::FLOW_STEP, ::FLOW_STEP], moving[::FLOW_STEP, ::FLOW_STEP]
    flow = optical_flow_ilk(small_ref, small_mov, radius=5, num_warp=5)
    flow = np.stack([ndimage.gaussian_filter(f, 2.0) for f in flow]) * FLOW_STEP
    return np.stack([resize(f, reference.shape, order=1, mode="edge") for f in flow]).astype(np.float32)


def _matching_slice(volume: np.ndarray, box: tuple[slice, ...], fraction: float, shape: tuple[int, int]) -> np.ndarray:
    """The in-box axial slice at ``fraction`` of the brain's height, resized to ``shape``."""
    from skimage.transform import resize

    z = int(round(box[0].start + fraction * (box[0].stop - 1 - box[0].start)))
    return resize(volume[z, box[1], box[2]], shape, order=1, mode="edge", anti_aliasing=False)


def build_flow_bank(flairs: list[np.ndarray], boxes: list[tuple[slice, ...]]) -> FlowBank:
    """Register every training scan's slices onto the other scans' and its own mirror's
    (the brain boxes are matched first, a crude affine alignment; the flow does the rest)."""
    positions, fields = [], []
    for index, (flair, box) in enumerate(zip(flairs, boxes, strict=True)):
        zs = np.linspace(box[0].start, box[0].stop - 1, FLOW_POSITIONS + 2)[1:-1].round().astype(int)
        positions.append(zs)
        per_position = []
        for z in zs:
            fraction = (z - box[0].start) / max(box[0].stop - 1 - box[0].start, 1)
            reference = flair[z, box[1], box[2]]
            partners = [reference[:, ::-1]]
            partners += [_matching_slice(other, other_box, fraction, reference.shape)
                         for j, (other, other_box) in enumerate(zip(flairs, boxes, strict=True)) if j != index]
            per_position.append([_register(partner, reference) for partner in partners])
        fields.append(per_position)
    return FlowBank(positions, fields)


def warp(channels: np.ndarray, label: np.ndarray, displacement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``channels`` (C, H, W) and ``label`` (H, W) sampled at ``x + displacement(x)``."""
    grid = np.mgrid[0:label.shape[0], 0:label.shape[1]].astype(np.float32) + displacement
    warped = np.stack([ndimage.map_coordinates(c, grid, order=1, mode="constant") for c in channels[:3]])
    mask = ndimage.map_coordinates(channels[3], grid, order=0, mode="constant")
    lesions = ndimage.map_coordinates(label.astype(np.float32), grid, order=0, mode="constant") > 0.5
    return np.concatenate([warped, mask[None]]).astype(np.float32), lesions
