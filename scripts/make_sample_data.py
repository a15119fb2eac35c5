"""Build the shipped sample (open_ms patient07: T1, FLAIR, lesion mask) at 2 mm isotropic.

Usage (from the repository root):

    .venv/bin/python scripts/make_sample_data.py --source ../shared/data/open_ms/patient07 \
        --out src/napari_mentalmap/sample_data

Each 1 mm volume (182 x 218 x 182, LAS, MNI space) is averaged over 2 x 2 x 2 blocks
(-> 91 x 109 x 91) and stored as int16 with a scale factor; the lesion mask keeps a
2 mm voxel when at least half of its eight 1 mm voxels are lesion. The affine is
updated for the new voxel size and for the shifted centre of voxel (0, 0, 0).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

FACTOR = 2
IMAGES = {"T1.nii.gz": "patient07_T1_2mm.nii.gz", "FLAIR.nii.gz": "patient07_FLAIR_2mm.nii.gz"}
MASK = {"lesion_consensus.nii.gz": "patient07_lesions_2mm.nii.gz"}


def block_mean(data: np.ndarray, factor: int) -> np.ndarray:
    """Average over factor**3 blocks (the shape is cropped to a multiple of ``factor``)."""
    shape = [s // factor for s in data.shape[:3]]
    cropped = data[: shape[0] * factor, : shape[1] * factor, : shape[2] * factor]
    blocks = cropped.reshape(shape[0], factor, shape[1], factor, shape[2], factor)
    return blocks.mean(axis=(1, 3, 5))


def downsampled_affine(affine: np.ndarray, factor: int) -> np.ndarray:
    """Affine of a block-averaged grid: voxels ``factor`` times larger, centre shifted."""
    new = affine.copy()
    new[:3, :3] = affine[:3, :3] * factor
    new[:3, 3] = affine[:3, :3] @ np.full(3, (factor - 1) / 2.0) + affine[:3, 3]
    return new


def save(data: np.ndarray, affine: np.ndarray, path: Path, as_int16: bool) -> None:
    """Save as int16 with a scale factor (images) or uint8 (masks), qform/sform = scanner."""
    if as_int16:
        slope = float(np.abs(data).max()) / 32000.0 or 1.0
        stored = np.round(data / slope).astype(np.int16)
        image = nib.Nifti1Image(stored, affine)
        image.set_data_dtype(np.int16)
        image.header.set_slope_inter(slope, 0.0)
    else:
        image = nib.Nifti1Image(data.astype(np.uint8), affine)
        image.set_data_dtype(np.uint8)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    image.header.set_xyzt_units("mm")
    nib.save(image, str(path))
    print(f"wrote {path} {data.shape} ({path.stat().st_size / 1e6:.2f} MB)")


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("../shared/data/open_ms/patient07"))
    parser.add_argument("--out", type=Path, default=Path("src/napari_mentalmap/sample_data"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for source_name, out_name in IMAGES.items():
        image = nib.load(str(args.source / source_name))
        data = image.get_fdata(dtype=np.float32)
        save(block_mean(data, FACTOR), downsampled_affine(image.affine, FACTOR), args.out / out_name, True)
    for source_name, out_name in MASK.items():
        image = nib.load(str(args.source / source_name))
        fraction = block_mean(np.asanyarray(image.dataobj).astype(np.float32), FACTOR)
        save(fraction >= 0.5, downsampled_affine(image.affine, FACTOR), args.out / out_name, False)


if __name__ == "__main__":
    main()
