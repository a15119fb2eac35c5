"""Volume-to-volume resampling through the affines (world coordinates are kept)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .nifti import Volume


def resample_to_reference(source: Volume, reference: Volume, order: int = 0) -> np.ndarray:
    """Resample ``source`` onto ``reference``'s canonical voxel grid through their affines."""
    # reference index -> world -> source index
    matrix = np.linalg.inv(source.affine) @ reference.affine
    data = source.data.astype(np.float32 if order > 0 else source.data.dtype)
    return ndimage.affine_transform(
        data, matrix[:3, :3], offset=matrix[:3, 3], output_shape=reference.data.shape[:3], order=order
    )
