"""npe2 sample data: open_ms patient07 (CC-BY, Lesjak et al. 2017) at 2 mm isotropic."""

from __future__ import annotations

from pathlib import Path

from ._reader import LayerDataTuple, read_nifti

SAMPLE_DIR = Path(__file__).parent / "sample_data"
SAMPLE_T1 = SAMPLE_DIR / "patient07_T1_2mm.nii.gz"
SAMPLE_FLAIR = SAMPLE_DIR / "patient07_FLAIR_2mm.nii.gz"
SAMPLE_LESIONS = SAMPLE_DIR / "patient07_lesions_2mm.nii.gz"


def _named(path: Path, name: str) -> list[LayerDataTuple]:
    data, kwargs, layer_type = read_nifti(path)[0]
    kwargs["name"] = name
    return [(data, kwargs, layer_type)]


def sample_t1() -> list[LayerDataTuple]:
    """T1-weighted MRI of open_ms patient07 (skull-stripped, MNI space, 2 mm)."""
    return _named(SAMPLE_T1, "sample T1")


def sample_flair() -> list[LayerDataTuple]:
    """FLAIR MRI of open_ms patient07 (skull-stripped, MNI space, 2 mm)."""
    return _named(SAMPLE_FLAIR, "sample FLAIR")


def sample_flair_with_lesions() -> list[LayerDataTuple]:
    """FLAIR of open_ms patient07 plus its manual consensus lesion mask (labels)."""
    return _named(SAMPLE_FLAIR, "sample FLAIR") + _named(SAMPLE_LESIONS, "sample lesions")
