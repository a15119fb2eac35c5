"""napari hooks: reader / writer layer data tuples, sample data, and a real viewer round trip."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_mentalmap._reader import METADATA_KEY, napari_get_reader, read_nifti
from napari_mentalmap._sample_data import (
    SAMPLE_FLAIR,
    SAMPLE_LESIONS,
    SAMPLE_T1,
    sample_flair,
    sample_flair_with_lesions,
    sample_t1,
)
from napari_mentalmap._writer import write_image, write_labels

SHARED_DATA = (Path(__file__).parents[1] / ".." / "shared" / "data").resolve()


def lps_volume(tmp_path: Path, name: str = "lps.nii.gz", dtype=np.float32) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    data = (rng.random((8, 9, 10)) * 100).astype(dtype)
    affine = np.array([[-2.0, 0, 0, 40], [0, -2.0, 0, 50], [0, 0, 3.0, -20], [0, 0, 0, 1]])
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path, data, affine


def test_get_reader_accepts_only_volumes(tmp_path: Path) -> None:
    assert napari_get_reader("brain.nii") is read_nifti
    assert napari_get_reader("brain.NII.GZ") is read_nifti
    assert napari_get_reader("brain.mgz") is read_nifti
    assert napari_get_reader(["a.nii.gz", "b.nii"]) is read_nifti
    assert napari_get_reader("image.tif") is None
    assert napari_get_reader(["a.nii.gz", "b.png"]) is None


def test_reader_layer_tuple(tmp_path: Path) -> None:
    path, data, affine = lps_volume(tmp_path)
    [(array, kwargs, layer_type)] = read_nifti(str(path))
    assert layer_type == "image"
    assert array.shape == (10, 9, 8) and array.dtype == np.float32
    assert kwargs["name"] == "lps"
    assert kwargs["scale"] == pytest.approx((3.0, 2.0, 2.0))
    assert kwargs["translate"] == pytest.approx((-20.0, -50.0, -40.0))
    assert kwargs["colormap"] == "gray"
    low, high = kwargs["contrast_limits"]
    assert 0 <= low < high <= 100
    stored = kwargs["metadata"][METADATA_KEY]
    assert stored["axcodes_original"] == ["L", "P", "S"]
    np.testing.assert_allclose(stored["original_affine"], affine)
    assert isinstance(stored["header"], bytes)


def test_reader_labels_and_warnings(tmp_path: Path) -> None:
    mask = np.zeros((6, 6, 6), dtype=np.uint8)
    mask[2:4, 2:4, 2:4] = 1
    nib.save(nib.Nifti1Image(mask, np.eye(4)), str(tmp_path / "mask.nii.gz"))
    [(array, kwargs, layer_type)] = read_nifti(tmp_path / "mask.nii.gz")
    assert layer_type == "labels" and array.dtype == np.uint8 and "colormap" not in kwargs

    data = np.ones((4, 4, 4), np.float32)
    data[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "nan.nii.gz"))
    with pytest.warns(UserWarning, match="1 NaN/Inf voxels replaced by 0"):
        read_nifti(tmp_path / "nan.nii.gz")


def test_writer_uses_metadata_for_original_orientation(tmp_path: Path) -> None:
    path, data, affine = lps_volume(tmp_path)
    [(array, kwargs, _)] = read_nifti(path)
    [written] = write_image(str(tmp_path / "saved.nii.gz"), array * 2, kwargs)
    saved = nib.load(written)
    assert saved.shape == data.shape
    np.testing.assert_allclose(saved.affine, affine)
    np.testing.assert_allclose(saved.get_fdata(), data * 2, rtol=1e-6)


def test_writer_without_metadata_uses_scale_translate(tmp_path: Path) -> None:
    path, data, affine = lps_volume(tmp_path)
    [(array, kwargs, _)] = read_nifti(path)
    meta = {"scale": kwargs["scale"], "translate": kwargs["translate"], "metadata": {}}
    [written] = write_image(str(tmp_path / "plain"), array, meta)
    assert written.endswith("plain.nii.gz")
    [(again, again_kwargs, _)] = read_nifti(written)
    np.testing.assert_array_equal(again, array)
    assert again_kwargs["scale"] == pytest.approx(kwargs["scale"])
    assert again_kwargs["translate"] == pytest.approx(kwargs["translate"])
    # Same voxel -> same RAS+ world position as in the original file.
    np.testing.assert_allclose(
        nib.load(written).affine, kwargs["metadata"][METADATA_KEY]["affine"], atol=1e-6
    )


def test_writer_ignores_metadata_of_another_grid(tmp_path: Path) -> None:
    path, _, _ = lps_volume(tmp_path)
    [(array, kwargs, _)] = read_nifti(path)
    cropped = array[:, :5, :5]
    [written] = write_image(str(tmp_path / "cropped.nii"), cropped, kwargs)
    np.testing.assert_array_equal(read_nifti(written)[0][0], cropped)


def test_labels_writer_keeps_integers(tmp_path: Path) -> None:
    path, _, affine = lps_volume(tmp_path)
    [(array, kwargs, _)] = read_nifti(path)
    labels = (array > 50).astype(np.int32) * 3
    [written] = write_labels(str(tmp_path / "labels.nii.gz"), labels, kwargs)
    saved = nib.load(written)
    assert saved.get_data_dtype() == np.uint8
    np.testing.assert_allclose(saved.affine, affine)
    [(again, _, layer_type)] = read_nifti(written)
    assert layer_type == "labels"
    np.testing.assert_array_equal(again, labels)


def test_sample_data() -> None:
    for path in (SAMPLE_T1, SAMPLE_FLAIR, SAMPLE_LESIONS):
        assert path.exists(), path
    [(t1, t1_kwargs, t1_type)] = sample_t1()
    assert t1_type == "image" and t1.shape == (91, 109, 91)
    assert t1_kwargs["scale"] == pytest.approx((2.0, 2.0, 2.0))
    assert t1_kwargs["name"] == "sample T1"
    [(flair, _, _)] = sample_flair()
    assert flair.shape == t1.shape
    layers = sample_flair_with_lesions()
    assert [layer[2] for layer in layers] == ["image", "labels"]
    assert 0 < int(layers[1][0].sum()) < 1000
    total_mb = sum(p.stat().st_size for p in (SAMPLE_T1, SAMPLE_FLAIR, SAMPLE_LESIONS)) / 1e6
    assert total_mb < 5


def test_sample_matches_the_full_resolution_source() -> None:
    """The 2 mm affine is right: sample voxels match the 1 mm source at the same world point."""
    source = SHARED_DATA / "open_ms" / "patient07" / "T1.nii.gz"
    if not source.exists():
        pytest.skip("open_ms data not available")
    full = nib.load(str(source))
    full_data = full.get_fdata(dtype=np.float32)
    small = nib.load(str(SAMPLE_T1))
    small_data = small.get_fdata(dtype=np.float32)
    index = np.array([45, 60, 40])
    world = small.affine @ np.r_[index, 1]
    # The 2 mm voxel centre lies between 8 source voxels: their mean is the sample value.
    corner = np.floor(np.linalg.inv(full.affine) @ world)[:3].astype(int)
    block = full_data[corner[0] : corner[0] + 2, corner[1] : corner[1] + 2, corner[2] : corner[2] + 2]
    assert small_data[tuple(index)] == pytest.approx(float(block.mean()), rel=1e-3, abs=0.1)


def test_viewer_open_and_save(make_napari_viewer, tmp_path: Path) -> None:
    path, data, affine = lps_volume(tmp_path)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin="napari-mentalmap")
    assert layer.scale == pytest.approx((3.0, 2.0, 2.0))
    out = tmp_path / "saved_from_napari.nii.gz"
    layer.save(str(out), plugin="napari-mentalmap")
    saved = nib.load(str(out))
    np.testing.assert_allclose(saved.affine, affine)
    np.testing.assert_allclose(saved.get_fdata(), data, rtol=1e-6)


def test_derived_maps_get_clean_headers(tmp_path: Path) -> None:
    path, data, affine = lps_volume(tmp_path)
    image = nib.load(str(path))
    image.header["cal_min"], image.header["cal_max"] = 0, 800
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, str(path))
    [(array, kwargs, _)] = read_nifti(path)
    [labels_file] = write_labels(str(tmp_path / "labels.nii.gz"), (array > 50).astype(np.int32), kwargs)
    [map_file] = write_image(str(tmp_path / "map.nii.gz"), array * 0.5, dict(kwargs, name="T1 anomaly"))
    labels_header, map_header = nib.load(labels_file).header, nib.load(map_file).header
    assert labels_header.get_intent()[0] == "label" and map_header.get_intent()[0] == "none"
    for header in (labels_header, map_header):
        assert float(header["cal_max"]) == 0 and header.get_xyzt_units() == ("mm", "unknown")
    assert b"T1 anomaly" in map_header["descrip"].tobytes()
    samples = np.stack([array, array])
    [samples_file] = write_image(str(tmp_path / "samples.nii.gz"), samples, kwargs)
    assert nib.load(samples_file).header.get_xyzt_units() == ("mm", "unknown")  # samples, not seconds


@pytest.mark.parametrize("transform", [
    {"scale": (-1.0, 1.0, 1.0)},
    {"scale": (1.0, 1.0, 1.0), "rotate": np.array([[1.0, 0, 0], [0, 0.8, -0.6], [0, 0.6, 0.8]])},
    {"scale": (1.0, 1.0, 1.0), "affine": np.diag([1.0, 1.0, 2.0, 1.0])},
])
def test_foreign_layer_is_refused_not_missaved(tmp_path: Path, transform: dict) -> None:
    from napari_mentalmap._writer import ForeignLayerError

    meta = {"name": "from another reader", "metadata": {}, "translate": (0.0, 0.0, 0.0), **transform}
    with pytest.raises(ForeignLayerError, match="from another reader.*orientation is unknown"):
        write_labels(str(tmp_path / "foreign.nii.gz"), np.ones((4, 5, 6), np.uint8), meta)
    assert list(tmp_path.iterdir()) == []


def test_new_labels_over_oblique_image_take_its_reference(make_napari_viewer, tmp_path: Path) -> None:
    """napari's "New labels layer" over a plugin image: no metadata, saved with the image's
    own (oblique) affine and file axis order, not napari's scale/translate."""
    data = np.random.default_rng(0).random((10, 12, 14)).astype(np.float32)
    angle = np.deg2rad(12)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([1.5, 1.0, 2.0])
    affine[:3, 3] = (10.0, -20.0, 5.0)
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "oblique.nii.gz"))
    viewer = make_napari_viewer()
    [image] = viewer.open(str(tmp_path / "oblique.nii.gz"), plugin="napari-mentalmap")
    drawn = np.zeros(image.data.shape, np.uint8)
    drawn[2:5, 3:7, 4:9] = 1
    labels = viewer.add_labels(drawn, name="drawn", scale=image.scale, translate=image.translate)
    assert "mentalmap_volume" not in labels.metadata
    [written] = write_labels(str(tmp_path / "drawn.nii.gz"), labels.data,
                             {"name": labels.name, "scale": labels.scale, "translate": labels.translate,
                              "metadata": labels.metadata})
    saved = nib.load(written)
    np.testing.assert_allclose(saved.affine, affine, atol=1e-5)
    assert saved.shape == data.shape
    [(again, _, _)] = read_nifti(written)
    np.testing.assert_array_equal(again, drawn)  # same voxels as drawn, in the image's frame
