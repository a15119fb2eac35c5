"""``mentalmap train segmenter`` and ``mentalmap predict segment`` (issue #27, command line).

Small synthetic FLAIR-like volumes (24x40x40 voxels of 2 mm, skull-stripped: a dark CSF rim,
bright cortex, darker white matter, a dark ventricle, one bright lesion blob) that the contrast
classifier reads as FLAIR; the same phantom with T1 intensities reads as T1.
"""

from __future__ import annotations

import contextlib
import io
import json
import pathlib
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_mentalmap import cli

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data"
SHAPE, SPACING = (24, 40, 40), 2.0
SPL_AFFINE = np.array([[0, 0, -SPACING, 40], [0, -SPACING, 0, 40], [SPACING, 0, 0, -24], [0, 0, 0, 1.0]])
"""Index -> RAS+ world of an array in the canonical (S, P, L) order: the file is read as written."""
FAST = ["--steps", "3", "--augmentation", "none", "--threads", "1"]
CPU = ["--device", "cpu", "--threads", "1"]


def phantom(seed: int, t1: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(volume, lesion mask) in canonical order; FLAIR intensities unless ``t1``."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * SPACING for n in SHAPE], indexing="ij")
    radii = [n * SPACING * 0.45 for n in SHAPE]
    r = np.sqrt((z / radii[0]) ** 2 + (y / radii[1]) ** 2 + (x / radii[2]) ** 2)
    brain, depth = r <= 1.0, (1 - r) * radii[1]
    gm, wm, csf, lesion = (60, 100, 20, 50) if t1 else (100, 75, 15, 160)
    volume = np.where(depth < 5, gm, wm).astype(np.float32)
    volume[depth < 2] = csf
    volume[(np.abs(z) < 4) & (np.abs(y) < 10) & (np.abs(x) < 3)] = csf  # ventricle
    centre = rng.integers(-3, 4, size=3) * SPACING + np.array([4.0, 10.0, 8.0])
    lesions = brain & (((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) <= 16)
    volume[lesions] = lesion
    volume += rng.normal(0, 3, SHAPE).astype(np.float32)
    volume[~brain] = 0
    return volume, lesions


def save(path: Path, data: np.ndarray, affine: np.ndarray = SPL_AFFINE, ras: bool = False) -> Path:
    """Write ``data`` (canonical order) as NIfTI; ``ras`` stores it in RAS order (not canonical)."""
    if ras:
        transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(affine),
                                                    nib.orientations.axcodes2ornt(("R", "A", "S")))
        affine = affine @ nib.orientations.inv_ornt_aff(transform, data.shape)
        data = nib.orientations.apply_orientation(data, transform)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), str(path))
    return path


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``mentalmap ARGV``: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One training run over a folder with two good pairs and one bad pair of each kind."""
    root = tmp_path_factory.mktemp("segmenter")
    images, labels = root / "images", root / "labels"
    truth = {}
    for name, seed in (("a_FLAIR", 0), ("b_FLAIR", 1)):
        volume, lesions = phantom(seed)
        save(images / f"{name}.nii.gz", volume, ras=name == "b_FLAIR")
        truth[name] = lesions
    save(labels / "a_FLAIR_lesions.nii.gz", truth["a_FLAIR"].astype(np.uint8))  # image stem + "_..."
    save(labels / "b_FLAIR.nii.gz", truth["b_FLAIR"].astype(np.uint8), ras=True)  # exact stem
    (images / "c_broken.nii.gz").write_bytes((images / "a_FLAIR.nii.gz").read_bytes()[:300])
    save(labels / "c_broken.nii.gz", truth["a_FLAIR"].astype(np.uint8))
    save(images / "d_empty.nii.gz", phantom(3)[0])
    save(labels / "d_empty.nii.gz", np.zeros(SHAPE, np.uint8))
    save(images / "e_grid.nii.gz", phantom(4)[0])
    save(labels / "e_grid.nii.gz", np.ones((24, 40, 39), np.uint8))
    save(images / "f_shifted.nii.gz", phantom(5)[0])
    moved = SPL_AFFINE.copy()
    moved[:3, 3] += 10.0
    save(labels / "f_shifted.nii.gz", phantom(5)[1].astype(np.uint8), affine=moved)
    save(images / "g_T1.nii.gz", phantom(6, t1=True)[0])
    save(labels / "g_T1.nii.gz", phantom(6, t1=True)[1].astype(np.uint8))
    save(images / "h_unlabelled.nii.gz", phantom(7)[0])
    model = root / "models" / "mine.pt"
    code, out, err = run_cli(["train", "segmenter", "-i", str(images), "-l", str(labels), "-o", str(model), *FAST])
    return {"root": root, "images": images, "labels": labels, "model": model, "truth": truth,
            "code": code, "out": out, "err": err}


def skipped_line(err: str, name: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("SKIPPED") and name in line.split(":")[0]]
    assert len(lines) == 1, err
    return lines[0]


def test_train_uses_the_good_pairs_and_records_them(trained: dict) -> None:
    from napari_mentalmap.inference.segment import load_segmenter

    assert trained["code"] == 1, trained["err"]  # written, but some images left out
    pairs = [line for line in trained["out"].splitlines() if line.startswith("pair: ")]
    assert f"pair: {trained['images'] / 'a_FLAIR.nii.gz'} + {trained['labels'] / 'a_FLAIR_lesions.nii.gz'}" in pairs
    assert f"pair: {trained['images'] / 'b_FLAIR.nii.gz'} + {trained['labels'] / 'b_FLAIR.nii.gz'}" in pairs
    card = load_segmenter(trained["model"]).card
    assert card["images"] == ["a_FLAIR.nii.gz", "b_FLAIR.nii.gz"]
    assert card["labels"] == ["a_FLAIR_lesions.nii.gz", "b_FLAIR.nii.gz"]
    assert card["n_scans"] == 2 and card["left_out"] == 6 and card["contrast_checked"] is True
    assert card["lesion_voxels"] == [int(trained["truth"][n].sum()) for n in ("a_FLAIR", "b_FLAIR")]
    assert re.search(r"training .*3/3 \[\d\d:\d\d<\d\d:\d\d", trained["err"])  # tqdm: elapsed<remaining


def test_train_names_each_bad_pair_once(trained: dict) -> None:
    err = trained["err"]
    assert "truncated or corrupt" in skipped_line(err, "c_broken")
    assert "no voxel is labelled" in skipped_line(err, "d_empty")
    assert "does not match its image" in skipped_line(err, "e_grid")
    assert "another position or voxel size" in skipped_line(err, "f_shifted")
    assert "needs the FLAIR" in skipped_line(err, "g_T1")
    assert "no labels file named h_unlabelled" in skipped_line(err, "h_unlabelled")


def test_pairing_rule(tmp_path: Path) -> None:
    from napari_mentalmap.training.segmenter_commands import pair_files

    def paths(folder: str, *names: str) -> list[Path]:
        return [tmp_path / folder / name for name in names]

    images = paths("images", "p1.nii.gz", "p10.nii.gz", "p2_FLAIR.nii.gz", "p3.nii", "p4.nii.gz")
    labels = paths("labels", "p1_seg.nii.gz", "p10_seg.nii.gz", "p2_FLAIR.nii.gz", "p2_FLAIR_seg.nii.gz",
                   "p3_a.nii.gz", "p3_b.nii.gz", "p4x.nii.gz", "zz.nii.gz")
    pairs, problems, unused = pair_files(images, labels)
    assert [(i.name, label.name) for i, label in pairs] == [
        ("p1.nii.gz", "p1_seg.nii.gz"), ("p10.nii.gz", "p10_seg.nii.gz"),  # p1 does not claim p10_seg
        ("p2_FLAIR.nii.gz", "p2_FLAIR.nii.gz")]  # the exact stem first
    assert len(problems) == 2 and "several labels files match (p3_a.nii.gz, p3_b.nii.gz)" in problems[0]
    assert "p4.nii.gz: no labels file" in problems[1]  # p4x does not continue p4 with a separator
    assert [p.name for p in unused] == ["p2_FLAIR_seg.nii.gz", "p3_a.nii.gz", "p3_b.nii.gz", "p4x.nii.gz",
                                        "zz.nii.gz"]
    # images and labels in one folder: a labels file is not also taken as an image
    together = paths("both", "q_FLAIR.nii.gz", "q_FLAIR_lesions.nii.gz")
    pairs, problems, _ = pair_files(together, together)
    assert [(i.name, label.name) for i, label in pairs] == [("q_FLAIR.nii.gz", "q_FLAIR_lesions.nii.gz")]
    assert problems == []


def test_train_without_a_usable_pair_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    volume = phantom(0)[0]
    save(tmp_path / "in" / "a.nii.gz", volume)
    save(tmp_path / "lab" / "a.nii.gz", np.zeros(SHAPE, np.uint8))
    save(tmp_path / "lab" / "zz.nii.gz", np.ones(SHAPE, np.uint8))
    model = tmp_path / "new" / "mine.pt"
    code, _, err = run_cli(["train", "segmenter", "-i", str(tmp_path / "in"), "-l", str(tmp_path / "lab"),
                            "-o", str(model), *FAST])
    assert code == 2
    assert "no voxel is labelled" in err and "no usable image/labels pair" in err and "nothing was written" in err
    assert not (tmp_path / "new").exists()

    code, _, err = run_cli(["train", "segmenter", "-i", str(tmp_path / "in" / "*.nii.gz"),
                            "-l", str(tmp_path / "lab" / "zz.nii.gz"), "-o", str(model), *FAST])
    assert code == 2 and "no labels file named a" in err and not (tmp_path / "new").exists()


def test_train_refuses_to_overwrite_a_model(trained: dict) -> None:
    before = trained["model"].read_bytes()
    code, out, err = run_cli(["train", "segmenter", "-i", str(trained["images"]), "-l", str(trained["labels"]),
                              "-o", str(trained["model"]), *FAST])
    assert code == 2 and "already exists (pass --overwrite to replace it); nothing was written" in err
    assert out == "" and "SKIPPED" not in err  # refused before any file was paired or read
    assert trained["model"].read_bytes() == before


def test_the_sample_t1_given_as_flair_is_refused(tmp_path: Path) -> None:
    """A real T1 (the shipped 2 mm sample) with real lesion labels on its grid."""
    (tmp_path / "labels").mkdir()
    labels = tmp_path / "labels" / "patient07_T1_2mm_lesions.nii.gz"
    labels.write_bytes((SAMPLES / "patient07_lesions_2mm.nii.gz").read_bytes())
    model = tmp_path / "mine.pt"
    code, _, err = run_cli(["train", "segmenter", "-i", str(SAMPLES / "patient07_T1_2mm.nii.gz"),
                            "-l", str(labels), "-o", str(model), *FAST])
    assert code == 2 and not model.exists()
    assert "patient07_T1_2mm.nii.gz: this looks T1-weighted" in skipped_line(err, "patient07_T1_2mm")
    assert "needs the FLAIR" in err


def test_no_contrast_check_trains_on_a_t1(tmp_path: Path) -> None:
    from napari_mentalmap.inference.segment import load_segmenter

    volume, lesions = phantom(6, t1=True)
    save(tmp_path / "in" / "t.nii.gz", volume)
    save(tmp_path / "lab" / "t_lesions.nii.gz", lesions.astype(np.uint8))
    code, out, err = run_cli(["train", "segmenter", "-i", str(tmp_path / "in"), "-l", str(tmp_path / "lab"),
                              "-o", str(tmp_path / "m.pt"), "--no-contrast-check", *FAST])
    assert code == 0, err
    assert "SKIPPED" not in err and load_segmenter(tmp_path / "m.pt").card["contrast_checked"] is False


def sidecar(path: Path) -> dict:
    return json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())


def test_predict_writes_one_set_per_good_input_on_its_grid(trained: dict, tmp_path: Path) -> None:
    from napari_mentalmap.inference.labels import remove_small

    inputs = tmp_path / "in"
    for name in ("a_FLAIR", "b_FLAIR", "c_broken"):
        (inputs / f"{name}.nii.gz").parent.mkdir(exist_ok=True)
        (inputs / f"{name}.nii.gz").write_bytes((trained["images"] / f"{name}.nii.gz").read_bytes())
    out = tmp_path / "out"
    code, _, err = run_cli(["predict", "segment", "--weights", str(trained["model"]), "-i", str(inputs),
                            "-o", str(out), "--cutoff", "0.4", *CPU])
    assert code == 1 and f"FAILED {inputs / 'c_broken.nii.gz'}: VolumeReadError" in err
    assert sorted(p.name for p in out.iterdir()) == [f"{n}_FLAIR_segment_{m}.{e}" for n in "ab"
                                                     for m in ("labels", "probability") for e in ("json", "nii.gz")]
    for name in ("a_FLAIR", "b_FLAIR"):  # b is stored in RAS order: outputs keep the input's own order
        source = nib.load(str(inputs / f"{name}.nii.gz"))
        probability = nib.load(str(out / f"{name}_segment_probability.nii.gz"))
        labels = nib.load(str(out / f"{name}_segment_labels.nii.gz"))
        for image in (probability, labels):
            assert image.shape == source.shape and np.allclose(image.affine, source.affine)
        p, lab = np.asanyarray(probability.dataobj), np.asanyarray(labels.dataobj)
        assert probability.get_data_dtype() == np.float32 and labels.get_data_dtype() == np.uint8
        assert p.min() >= 0 and p.max() <= 1
        assert np.array_equal(lab > 0, remove_small(p > 0.4, 10))
        truth = np.asanyarray(nib.load(str(trained["labels"] / ("a_FLAIR_lesions.nii.gz" if name == "a_FLAIR"
                                                                else "b_FLAIR.nii.gz"))).dataobj) > 0
        assert 2 * (truth & (lab > 0)).sum() / (truth.sum() + (lab > 0).sum()) > 0.7  # the blob, in place
        record = sidecar(out / f"{name}_segment_labels.nii.gz")
        assert record["threshold"] == {"value": 0.4, "chosen": "given (--cutoff)"}
        assert record["min_component_voxels"] == 10 and record["modality"]["matches"] is True
        assert record["segmenter"]["images"] == ["a_FLAIR.nii.gz", "b_FLAIR.nii.gz"]
        assert record["input"]["path"] == str((inputs / f"{name}.nii.gz").absolute())
        assert record["command"] == "mentalmap predict segment"
        assert len(record["weights"]["sha256"]) == 64
        assert sidecar(out / f"{name}_segment_probability.nii.gz")["map"] == "probability"
        assert labels.header["descrip"].tobytes().decode().startswith("mentalmap")
        assert "t=0.4" in labels.header["descrip"].tobytes().decode()


def test_predict_refuses_to_overwrite_then_overwrites(trained: dict, tmp_path: Path) -> None:
    source = trained["images"] / "a_FLAIR.nii.gz"
    out = tmp_path / "out"
    argv = ["predict", "segment", "--weights", str(trained["model"]), "-i", str(source), "-o", str(out), *CPU]
    assert run_cli(argv)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = run_cli(argv)
    assert code == 1 and "already exists" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert run_cli([*argv, "--overwrite"])[0] == 0
    assert sidecar(out / "a_FLAIR_segment_labels.nii.gz")["threshold"]["chosen"] == "default probability cutoff"


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_predict_refuses_a_pickle_payload_model(trained: dict, tmp_path: Path) -> None:
    marker, evil = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"format": "lesion_segmenter", "config": {}, "state_dict": {}, "card": _Payload(marker)}, evil)
    out = tmp_path / "out"
    code, _, err = run_cli(["predict", "segment", "--weights", str(evil), "-i", str(trained["images"]),
                            "-o", str(out), *CPU])
    assert code == 2 and not marker.exists() and not out.exists()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"mentalmap predict segment: weights file {evil} was refused")


def test_predict_warns_on_a_t1_and_strict_refuses(trained: dict, tmp_path: Path) -> None:
    t1 = save(tmp_path / "in" / "t1.nii.gz", phantom(6, t1=True)[0])
    argv = ["predict", "segment", "--weights", str(trained["model"]), "-i", str(t1), *CPU]
    code, _, err = run_cli([*argv, "-o", str(tmp_path / "warned")])
    assert code == 0 and f"WARNING {t1}: this looks T1-weighted" in err
    assert sidecar(tmp_path / "warned" / "t1_segment_labels.nii.gz")["modality"]["matches"] is False
    code, _, err = run_cli([*argv, "-o", str(tmp_path / "strict"), "--strict"])
    assert code == 1 and f"FAILED {t1}: ModalityMismatchError: this looks T1-weighted" in err
    assert not any((tmp_path / "strict").iterdir())


def test_segment_command_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from napari_mentalmap.inference.segment import DEFAULT_CUTOFF
    from napari_mentalmap.inference.segmenter_training import DEFAULT_AUGMENTATION
    from napari_mentalmap.predict import segment

    assert segment.DEFAULT_CUTOFF == DEFAULT_CUTOFF
    args = cli.build_parser("train").parse_args(["train", "segmenter", "-i", "a", "-l", "b", "-o", "m.pt"])
    assert (args.augmentation, args.steps) == (DEFAULT_AUGMENTATION, 300)  # the dock's defaults
    for extra in ([], ["--weights", "m.pt", "--cutoff", "1.5"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["predict", "segment", "-i", "x", "-o", str(tmp_path / "o"), *extra])
        assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--weights" in err and "strictly between 0 and 1" in err
    assert not (tmp_path / "o").exists()
