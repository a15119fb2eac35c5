"""The per-scan Auto's evaluation (evaluation.per_scan_auto, validation_cases) on tiny synthetic
volumes: the choice against a fixed threshold, the test table's columns, the validation cases."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mentalmap.evaluation.per_scan_auto import (
    SDS_GRID,
    TEST_COLUMNS,
    choose_rule,
    method_label,
    sds_dice_table,
    set_means,
)
from napari_mentalmap.evaluation.uad import TestVolume as Volume  # not a test class
from napari_mentalmap.evaluation.validation_cases import (
    LESION_LOADS,
    SHIFTS,
    SITES,
    lesion_validation_cases,
    with_lesion_load,
)

SHAPE = (30, 36, 36)


def _volume(seed: int, gain: float = 1.0, offset: float = 0.0) -> tuple[np.ndarray, Volume]:
    """(score map, volume): a healthy bulk in a ball with a 1-voxel zero rim and two bright blobs,
    the map scaled by ``gain`` and shifted by ``offset`` inside the brain."""
    rng = np.random.default_rng(seed)
    radius = np.sqrt(((np.indices(SHAPE) - np.array(SHAPE)[:, None, None, None] / 2) ** 2).sum(axis=0))
    mask = radius < 14
    truth = np.zeros(SHAPE, bool)
    truth[10:14, 12:16, 12:16] = truth[16:20, 20:24, 18:22] = True
    score = np.where(radius < 13, rng.normal(0.4, 0.05, SHAPE), 0.0)
    score[truth] = rng.normal(0.8, 0.03, int(truth.sum()))
    score = np.where(mask, gain * score + offset, 0.0).astype(np.float32)
    image = np.where(mask, 100.0 + 20.0 * rng.random(SHAPE), 0.0).astype(np.float32)
    return score, Volume(f"s{seed}", image, (2.0, 2.0, 2.0), mask, truth)


def test_the_per_scan_rule_wins_where_no_fixed_threshold_fits_every_scan() -> None:
    """Two scans with the same anatomy, the second's score at another gain and offset: a fitted
    threshold labels both the same, one fixed threshold cannot."""
    first, second = _volume(0), _volume(0, gain=1.5, offset=0.35)
    maps, volumes = [first[0], second[0]], [first[1], second[1]]
    table = sds_dice_table(maps, volumes)
    assert table.shape == (2, len(SDS_GRID))
    np.testing.assert_allclose(table[0], table[1])  # invariant to the affine change
    choice = choose_rule(maps, volumes, np.round(np.arange(0.3, 1.6, 0.01), 3))
    assert choice["rule"] == "per scan" and choice["validation dice per scan"] > 0.95
    assert choice["validation dice best fixed"] < choice["validation dice per scan"]
    assert 0 < choice["nominal false-positive rate"] < 0.5


def test_a_map_it_cannot_fit_scores_zero_instead_of_stopping_the_choice() -> None:
    score, volume = _volume(1)
    table = sds_dice_table([np.zeros(SHAPE, np.float32), score], [volume, volume])
    assert not table[0].any() and table[1].max() > 0.9


def test_test_rows_and_their_set_means() -> None:
    assert TEST_COLUMNS == ("test set", "scan", "method", "dice_auto", "dice_best_fixed")
    assert method_label("DAE-gated FLAIR intensity", "").endswith("(default)")
    assert method_label("FLAIR intensity (baseline)", "") == "FLAIR intensity (baseline)"
    assert method_label("dae2d", "positive") == "dae2d (positive)"
    rows = [{"test set": "a", "scan": str(i), "method": "m", "dice_auto": d, "dice_best_fixed": 0.5}
            for i, d in enumerate((0.2, 0.4))]
    [means] = set_means(rows)
    assert means["dice_auto"] == pytest.approx(0.3) and means["gap"] == pytest.approx(0.2) and means["scans"] == 2


def test_lesion_validation_cases_cover_shifts_sites_and_loads() -> None:
    _, volume = _volume(2)
    volume.truth[:] = False
    volume.truth[12:15, 14:17, 14:17] = True  # an automatic lesion, in-painted by the load cases
    cases = lesion_validation_cases([volume])
    assert len(cases) == 1 + (len(SHIFTS) - 1) + len(SITES) + len(LESION_LOADS)
    assert len({c.subject for c in cases}) == len(cases)
    cbica, mni = cases[len(SHIFTS)], cases[len(SHIFTS) + 1]
    assert cbica.spacing == (3.0, 0.9375, 0.9375) and cbica.image.max() <= 255 and cbica.image.shape == cbica.mask.shape
    assert mni.spacing == (1.0, 1.0, 1.0) and abs(float(mni.image[mni.mask].mean())) < 1e-3
    loaded = with_lesion_load(volume, 0.05, seed=0)
    assert 0.05 <= loaded.truth.sum() / volume.mask.sum() < 0.1
    assert not (loaded.truth & ~volume.mask).any()
    assert float(loaded.image[loaded.truth].mean()) > 1.2 * float(np.median(volume.image[volume.mask]))


def test_the_command_is_registered(capsys: pytest.CaptureFixture[str]) -> None:
    from napari_mentalmap import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["eval", "uad-per-scan", "--help"])
    assert exit_info.value.code == 0 and "per_scan_choice.csv" in capsys.readouterr().out
