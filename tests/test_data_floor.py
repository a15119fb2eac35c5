"""The data floor: the fixed splits of shared/data/README.md and where data and caches live."""

from __future__ import annotations

import pytest

from napari_mentalmap.data import subjects
from napari_mentalmap.data.splits import SPLITS, by_source, source_of


def test_t1_splits_are_the_readme_splits():
    train, val, test = SPLITS["t1_train"], SPLITS["t1_val"], SPLITS["t1_test"]
    assert len(train) == 50 and len(val) == 9 and len(test) == 9
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    assert {k: len(v) for k, v in by_source(train).items()} == {"NiChart": 17, "OASIS": 22, "IXI": 11}
    assert {k: len(v) for k, v in by_source(test).items()} == {"NiChart": 3, "OASIS": 4, "IXI": 2}
    assert set(SPLITS["t1_test"]) >= {"OAS1003", "OAS1012", "OAS1113", "OAS1125", "IXI057-HH-1342"}
    assert source_of("IXI012-HH-1211") == "IXI (with skull)"


def test_data_root_from_environment_and_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(subjects.DATA_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(subjects.DataNotFoundError, match="--data"):
        subjects.data_root()
    subjects.set_data_root(tmp_path)
    assert subjects.data_root() == tmp_path.resolve()


def test_cache_goes_to_the_user_cache_not_the_package(tmp_path, monkeypatch):
    import napari_mentalmap

    monkeypatch.delenv(subjects.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = subjects.cache_dir()
    assert str(path).startswith(str(tmp_path))
    assert not str(path).startswith(str(napari_mentalmap.__path__[0]))


def test_every_registered_subject_has_its_files():
    try:
        subjects.data_root()
    except subjects.DataNotFoundError:
        pytest.skip("shared data absent")
    for split in SPLITS.values():
        for subject in split:
            modality = "flair" if subject in SPLITS["cbica_wml"] + SPLITS["brats2018"] else "t1"
            assert subjects.subject_files(subject, modality)["image"].exists()
