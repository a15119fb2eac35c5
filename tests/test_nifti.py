"""NIfTI I/O: round trips on every real volume kind, orientation, oblique, bad inputs."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_mentalmap.io.nifti import (
    CANONICAL_AXCODES,
    MAX_VOXELS_ENV,
    Volume,
    VolumeReadError,
    affine_from_scale_translate,
    looks_like_labels,
    read_volume,
    write_volume,
)

SHARED_DATA = (Path(__file__).parents[1] / ".." / "shared" / "data").resolve()

# (relative path, axis codes in the file, expected labels-like)
REAL_VOLUMES = [
    ("nichart_demo/t1/Subj1_T1.nii.gz", ("L", "P", "S"), False),
    ("nichart_demo/parcellation/Subj1_T1_DLMUSE.nii.gz", ("L", "P", "S"), True),
    ("nichart_demo/flair/Subj1_FL.nii.gz", ("L", "P", "S"), False),
    ("nichart_demo/wml_auto/Subj1_FL_DLWMLS.nii.gz", ("L", "P", "S"), True),
    ("ixi/t1/IXI012-HH-1211_T1.nii.gz", ("P", "S", "R"), False),
    ("open_ms/patient07/T1.nii.gz", ("L", "A", "S"), False),
    ("open_ms/patient07/lesion_consensus.nii.gz", ("L", "A", "S"), True),
    ("mni152/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz", ("R", "A", "S"), False),
    ("mni152/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz", ("R", "A", "S"), False),
]


def real_path(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def axis_aligned_affine(axcodes: tuple[str, str, str], spacing=(1.0, 2.0, 3.0)) -> np.ndarray:
    """Affine whose array axes point along ``axcodes`` (e.g. ("P", "S", "R"))."""
    directions = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
    affine = np.eye(4)
    affine[:3, :3] = 0
    for axis, code in enumerate(axcodes):
        world_axis, sign = directions[code]
        affine[world_axis, axis] = sign * spacing[axis]
    affine[:3, 3] = (-10.0, 20.0, -30.0)
    return affine


@pytest.mark.parametrize(("relative", "axcodes", "labels"), REAL_VOLUMES)
def test_real_volume_round_trip(tmp_path: Path, relative: str, axcodes, labels: bool) -> None:
    path = real_path(relative)
    original = nib.load(str(path))
    volume = read_volume(path)
    assert volume.axcodes_original == axcodes
    assert tuple(nib.aff2axcodes(volume.affine)) == CANONICAL_AXCODES
    assert volume.is_labels is labels
    assert volume.data.dtype == (np.asanyarray(original.dataobj).dtype if labels else np.float32)
    assert not volume.warnings

    out = write_volume(tmp_path / "copy.nii", volume.data, volume)  # .nii: gzip is slow here
    written = nib.load(str(out))
    assert written.shape == original.shape
    np.testing.assert_allclose(written.affine, original.affine, atol=1e-5)
    np.testing.assert_allclose(written.get_fdata(), original.get_fdata(), atol=1e-3)
    again = read_volume(out)
    np.testing.assert_array_equal(again.data, volume.data)
    np.testing.assert_allclose(again.affine, volume.affine, atol=1e-5)
    assert again.is_labels is labels

    # Through the plain-data metadata dict too (what napari layers carry).
    out_meta = write_volume(tmp_path / "from_meta.nii", volume.data, volume.metadata())
    np.testing.assert_allclose(nib.load(str(out_meta)).affine, original.affine, atol=1e-5)
    np.testing.assert_array_equal(read_volume(out_meta).data, volume.data)


@pytest.mark.parametrize("relative", [entry[0] for entry in REAL_VOLUMES[:8:2]] + [REAL_VOLUMES[7][0]])
def test_canonical_voxels_match_file_voxels_through_affines(relative: str) -> None:
    """Every canonical voxel holds the file voxel at the same world position."""
    path = real_path(relative)
    original = nib.load(str(path))
    file_data = np.asanyarray(original.dataobj)
    volume = read_volume(path)
    # Axis 0 goes superior (+z), axis 1 posterior (-y), axis 2 left (-x).
    assert volume.affine[2, 0] > 0 and volume.affine[1, 1] < 0 and volume.affine[0, 2] < 0
    rng = np.random.default_rng(0)
    indices = np.stack([rng.integers(0, s, 200) for s in volume.data.shape], axis=1)
    world = volume.affine @ np.c_[indices, np.ones(len(indices))].T
    file_indices = np.rint(np.linalg.inv(original.affine) @ world)[:3].astype(int).T
    expected = file_data[tuple(file_indices.T)].astype(np.float64)
    actual = volume.data[tuple(indices.T)].astype(np.float64)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("axcodes", [("L", "P", "S"), ("P", "S", "R"), ("L", "A", "S"), ("R", "A", "S"), ("I", "R", "P")])
def test_marker_lands_superior_anterior_right(tmp_path: Path, axcodes) -> None:
    """A voxel placed at the right-anterior-superior corner shows up at canonical (-1, 0, 0)."""
    affine = axis_aligned_affine(axcodes)
    data = np.zeros((5, 6, 7), dtype=np.float32)
    corner = [0, 0, 0]
    for axis, code in enumerate(axcodes):
        # Last index when the axis points towards R, A or S; first index otherwise.
        corner[axis] = data.shape[axis] - 1 if code in "RAS" else 0
    data[tuple(corner)] = 100.0
    volume = read_volume(save_nifti(tmp_path / "marker.nii.gz", data, affine))
    marker = np.unravel_index(int(np.argmax(volume.data)), volume.data.shape)
    assert marker == (volume.data.shape[0] - 1, 0, 0)
    # Spacing follows the canonical axes.
    spacing_by_code = {code: (1.0, 2.0, 3.0)[axis] for axis, code in enumerate(axcodes)}
    expected_spacing = tuple(
        spacing_by_code.get(a, spacing_by_code.get({"S": "I", "P": "A", "L": "R"}[a]))
        for a in CANONICAL_AXCODES
    )
    assert volume.spacing == pytest.approx(expected_spacing)


def test_scale_translate_affine_matches_canonical_affine(tmp_path: Path) -> None:
    affine = axis_aligned_affine(("L", "A", "S"), spacing=(1.5, 1.0, 4.0))
    data = np.random.default_rng(1).random((4, 5, 6)).astype(np.float32)
    volume = read_volume(save_nifti(tmp_path / "v.nii", data, affine))
    rebuilt = affine_from_scale_translate(volume.spacing, volume.origin)
    np.testing.assert_allclose(rebuilt, volume.affine, atol=1e-6)


def test_oblique_affine_warns_once_and_keeps_true_affine(tmp_path: Path) -> None:
    angle = np.deg2rad(15)
    rotation = np.array(
        [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([1.0, 1.2, 2.5])
    affine[:3, 3] = (5.0, -7.0, 3.0)
    data = np.random.default_rng(2).random((6, 7, 8)).astype(np.float32)
    volume = read_volume(save_nifti(tmp_path / "oblique.nii.gz", data, affine))
    assert volume.is_oblique
    assert len([w for w in volume.warnings if "oblique" in w]) == 1
    assert volume.spacing == pytest.approx((2.5, 1.2, 1.0))
    out = write_volume(tmp_path / "saved.nii.gz", volume.data, volume)
    saved = nib.load(str(out))
    np.testing.assert_allclose(saved.affine, affine, atol=1e-5)
    np.testing.assert_allclose(saved.get_fdata(), data, atol=1e-6)


def test_two_dimensional_image_is_refused(tmp_path: Path) -> None:
    path = save_nifti(tmp_path / "slice.nii.gz", np.ones((10, 12), dtype=np.float32), np.eye(4))
    with pytest.raises(VolumeReadError, match="2-D"):
        read_volume(path)


def test_four_dimensional_series_first_or_channels(tmp_path: Path) -> None:
    data = np.stack([np.full((4, 5, 6), t, dtype=np.float32) for t in (1, 2, 3)], axis=-1)
    path = save_nifti(tmp_path / "series.nii.gz", data, axis_aligned_affine(("R", "A", "S")))
    first = read_volume(path)
    assert first.data.shape == (6, 5, 4)
    assert np.all(first.data == 1)
    assert any("4-D series of 3 volumes" in w for w in first.warnings)
    channels = read_volume(path, four_d="channels")
    assert channels.data.shape == (3, 6, 5, 4)
    assert [float(channels.data[c].mean()) for c in range(3)] == [1.0, 2.0, 3.0]
    out = write_volume(tmp_path / "series_out.nii.gz", channels.data, channels)
    assert nib.load(str(out)).shape == (4, 5, 6, 3)
    np.testing.assert_array_equal(nib.load(str(out)).get_fdata(), data)


def test_nan_and_inf_replaced_with_count(tmp_path: Path) -> None:
    data = np.ones((4, 4, 4), dtype=np.float32)
    data[0, 0, :3] = np.nan
    data[1, 1, 1] = np.inf
    data[2, 2, 2] = -np.inf
    volume = read_volume(save_nifti(tmp_path / "nan.nii.gz", data, np.eye(4)))
    assert np.all(np.isfinite(volume.data))
    assert float(volume.data.sum()) == 64 - 5
    assert any("5 NaN/Inf voxels replaced by 0" in w for w in volume.warnings)


def test_truncated_gzip_raises_naming_the_file(tmp_path: Path) -> None:
    full = save_nifti(tmp_path / "full.nii.gz", np.random.default_rng(3).random((20, 20, 20)), np.eye(4))
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    with pytest.raises(VolumeReadError, match="truncated.nii.gz"):
        read_volume(truncated)
    assert issubclass(VolumeReadError, ValueError)


def test_text_file_named_nii_raises(tmp_path: Path) -> None:
    fake = tmp_path / "notes.nii"
    fake.write_text("this is not an image\n" * 20)
    with pytest.raises(VolumeReadError, match="notes.nii"):
        read_volume(fake)
    fake_gz = tmp_path / "notes.nii.gz"
    fake_gz.write_bytes(gzip.compress(b"not an image either"))
    with pytest.raises(VolumeReadError, match="notes.nii.gz"):
        read_volume(fake_gz)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(VolumeReadError, match="no such file"):
        read_volume(tmp_path / "absent.nii.gz")


def test_all_zero_volume_warns(tmp_path: Path) -> None:
    volume = read_volume(save_nifti(tmp_path / "zero.nii.gz", np.zeros((4, 5, 6), np.float32), np.eye(4)))
    assert any("every voxel is zero" in w for w in volume.warnings)


def test_huge_volume_refused_with_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_nifti(tmp_path / "big.nii.gz", np.ones((10, 10, 10), np.float32), np.eye(4))
    with pytest.raises(VolumeReadError, match=r"1,000 voxels .*0\.00 GB.*limit of 999 voxels"):
        read_volume(path, max_voxels=999)
    monkeypatch.setenv(MAX_VOXELS_ENV, "500")
    with pytest.raises(VolumeReadError, match="limit of 500"):
        read_volume(path)
    monkeypatch.setenv(MAX_VOXELS_ENV, "1000")
    assert read_volume(path).data.shape == (10, 10, 10)


def test_labels_detection(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    mask = np.zeros((10, 10, 10), dtype=np.uint8)
    mask[3:6, 3:6, 3:6] = 1
    assert looks_like_labels(mask)
    segmentation = np.repeat(np.arange(10, dtype=np.int16), 100).reshape(10, 10, 10)
    assert looks_like_labels(segmentation)
    noisy_uint8 = rng.integers(1, 255, (10, 10, 10)).astype(np.uint8)
    assert not looks_like_labels(noisy_uint8)
    many_values = np.arange(1000, dtype=np.int32).reshape(10, 10, 10)
    assert not looks_like_labels(many_values)
    assert not looks_like_labels(mask.astype(np.float32))
    volume = read_volume(save_nifti(tmp_path / "mask.nii.gz", mask, np.eye(4)))
    assert volume.is_labels and volume.data.dtype == np.uint8
    forced = read_volume(tmp_path / "mask.nii.gz", as_labels=False)
    assert not forced.is_labels and forced.data.dtype == np.float32


def test_mgz_round_trip(tmp_path: Path) -> None:
    data = np.random.default_rng(5).random((6, 7, 8)).astype(np.float32)
    affine = axis_aligned_affine(("L", "I", "A"), spacing=(1.0, 1.0, 1.0))
    path = tmp_path / "brain.mgz"
    nib.save(nib.MGHImage(data, affine), str(path))
    volume = read_volume(path)
    assert volume.axcodes_original == ("L", "I", "A")
    out = write_volume(tmp_path / "copy.mgz", volume.data, volume)
    np.testing.assert_allclose(nib.load(str(out)).affine, affine, atol=1e-5)
    np.testing.assert_array_equal(nib.load(str(out)).get_fdata(dtype=np.float32), data)
    out_nii = write_volume(tmp_path / "copy.nii.gz", volume.data, volume)
    np.testing.assert_array_equal(read_volume(out_nii).data, volume.data)


def test_write_rejects_wrong_shape_and_suffix(tmp_path: Path) -> None:
    volume = read_volume(save_nifti(tmp_path / "v.nii", np.ones((4, 5, 6), np.float32), np.eye(4)))
    assert isinstance(volume, Volume)
    with pytest.raises(ValueError, match="does not match"):
        write_volume(tmp_path / "bad.nii", np.ones((3, 3, 3)), volume)
    with pytest.raises(ValueError, match=".nii"):
        write_volume(tmp_path / "bad.png", volume.data, volume)


def test_reading_raises_no_python_warnings(tmp_path: Path) -> None:
    """Notes go to Volume.warnings; only the napari reader turns them into warnings."""
    path = save_nifti(tmp_path / "zero.nii.gz", np.zeros((3, 3, 3), np.float32), np.eye(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_volume(path)
