"""Learning curves of the user's lesion segmenter, the way a user meets it (issue #27).

For each manual-label set, fixed folds pick *n* training scans; the segmenter trains on them
with every augmentation option and is scored on every other scan of the set. The baselines
(intensity threshold, DAE-gated map, the best VAE) are scored on the same test scans with their
threshold chosen on the same *n* training scans (what a user with *n* labelled scans could do).
``n = 0`` rows are the label-free default at its shipped Auto. Validation folds (the default
augmentation is chosen on them) use NiChart ``Subj18-20`` against the automatic ``wml_auto``
masks, never a test set. Rows are appended to the CSV as they are made, so a killed run resumes.
"""

from __future__ import annotations

import csv
import itertools
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..data.splits import SPLITS
from ..inference.anomaly_methods import GATED_METHOD, scan_auto_threshold
from ..inference.labels import DEFAULT_MIN_SIZE, remove_small
from ..inference.scan_threshold import bulk_fit
from ..inference.segment import SegmenterInputs, prepare_inputs, probability_job
from ..inference.segmenter_augment import AUGMENTATIONS
from ..inference.segmenter_training import SegmenterTrainConfig, TrainingScan, train_segmenter_job
from ..metrics import average_precision, dice
from .uad import TestVolume, load_test_volume

COLUMNS = ("test set", "method", "augmentation", "n_train", "fold", "dice", "AUPRC", "scan", "threshold",
           "train seconds")
SETS = {"open_ms (manual GT)": SPLITS["open_ms"], "cbica_wml (manual GT)": SPLITS["cbica_wml"],
        "brats2018 (manual GT, tumours)": SPLITS["brats2018"]}
VALIDATION_SET = {"NiChart Subj18-20 (validation, automatic wml_auto GT)": SPLITS["nichart_val"]}
TRAIN_COUNTS = {"open_ms (manual GT)": (1, 2), "cbica_wml (manual GT)": (1, 2, 4, 8),
                "brats2018 (manual GT, tumours)": (1, 2, 4),
                "NiChart Subj18-20 (validation, automatic wml_auto GT)": (1, 2)}
FOLDS = {"open_ms (manual GT)": {1: 2, 2: 3}, "cbica_wml (manual GT)": {1: 2, 2: 2, 4: 2, 8: 2},
         "brats2018 (manual GT, tumours)": {1: 2, 2: 2, 4: 2},
         "NiChart Subj18-20 (validation, automatic wml_auto GT)": {1: 3, 2: 3}}
"""Folds per set and *n* (all 3 for open_ms at n = 2; 2 elsewhere: 2 CPU cores, 2 hours)."""
CROSS_FOLDS = 1
CROSS_SETS = {"open_ms (cross-set: trained on the other white-matter set)": ("cbica_wml (manual GT)", "open_ms (manual GT)", 4),
              "cbica_wml (cross-set: trained on the other white-matter set)": ("open_ms (manual GT)", "cbica_wml (manual GT)", 2)}
"""Cross-set rows: (set trained on, set tested on, n)."""
BASELINE_GRIDS = {"FLAIR intensity threshold (baseline)": np.round(np.arange(0.50, 1.0001, 0.02), 2),
                  "DAE-gated FLAIR intensity (baseline)": np.round(np.arange(0.50, 1.0001, 0.02), 2),
                  "VAE spatial2d (baseline)": np.round(np.arange(0.05, 0.7501, 0.025), 3)}
DEFAULT_METHOD = "U-Net segmenter (default)"
OTHER_METHOD = "U-Net segmenter"
LABEL_FREE_METHOD = "DAE-gated FLAIR intensity, shipped Auto (label-free)"


def folds(subjects: list[str], n: int, count: int) -> list[list[str]]:
    """``count`` fixed training subsets of size ``n`` (all of them when there are fewer)."""
    combos = list(itertools.combinations(subjects, n))
    order = np.random.default_rng(len(subjects) * 100 + n).permutation(len(combos))
    return [list(combos[i]) for i in order[:count]]


class ScanStore:
    """Every evaluation scan loaded once: its volume, segmenter inputs and baseline maps."""

    def __init__(self, cache: Path | None = None) -> None:
        self.volumes: dict[str, TestVolume] = {}
        self.inputs: dict[str, SegmenterInputs] = {}
        self.maps: dict[tuple[str, str], np.ndarray] = {}
        self.dices: dict[tuple[str, str], np.ndarray] = {}
        self.cache = cache

    def volume(self, subject: str) -> TestVolume:
        """The scan (FLAIR, brain mask, lesions on its own grid)."""
        if subject not in self.volumes:
            v = load_test_volume(subject)
            self.volumes[subject] = v
            self.inputs[subject] = prepare_inputs(v.image, v.mask, v.spacing)
        return self.volumes[subject]

    def training_scan(self, subject: str) -> TrainingScan:
        """The scan as the segmenter trains on it."""
        return TrainingScan(self.inputs_of(subject), self.volume(subject).truth, subject)

    def inputs_of(self, subject: str) -> SegmenterInputs:
        """The scan's segmenter inputs (loaded with the scan)."""
        self.volume(subject)
        return self.inputs[subject]

    def dice_table(self, subject: str, method: str) -> np.ndarray:
        """A baseline's Dice on the scan at every threshold of its grid (computed once)."""
        key = (subject, method)
        if key not in self.dices:
            score, truth = self.baseline_map(subject, method), self.volume(subject).truth
            self.dices[key] = np.array([dice_at(score, truth, t) for t in BASELINE_GRIDS[method]])
        return self.dices[key]

    def baseline_map(self, subject: str, method: str) -> np.ndarray:
        """A baseline's map of the scan (cached on disk when a cache folder is given)."""
        key = (subject, method)
        if key in self.maps:
            return self.maps[key]
        slug = re.sub(r"[^a-z0-9]+", "_", method.lower()).strip("_")
        path = self.cache / f"{subject}_{slug}.npy" if self.cache else None
        if path is not None and path.exists():
            self.maps[key] = np.load(path)
            return self.maps[key]
        from ..inference.anomaly import (
            anomaly_map,
            gated_intensity_map,
            intensity_score,
            load_anomaly_model,
            run_job,
        )

        v = self.volume(subject)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if method.startswith("FLAIR intensity"):
                result = intensity_score(v.image, v.spacing, v.mask)
            elif method.startswith("DAE-gated"):
                result = run_job(gated_intensity_map(v.image, v.spacing, load_anomaly_model("dae2d"), mask=v.mask)).anomaly
            else:
                result = run_job(anomaly_map(v.image, v.spacing, load_anomaly_model("spatial2d"), mask=v.mask)).anomaly
        self.maps[key] = result.astype(np.float32)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, self.maps[key])
        return self.maps[key]


def dice_at(score: np.ndarray, truth: np.ndarray, threshold: float) -> float:
    """Dice of ``score > threshold`` after removing components under the dock's minimum size."""
    return dice(remove_small(score > threshold, DEFAULT_MIN_SIZE), truth)


def baseline_rows(store: ScanStore, test_set: str, n: int, fold: int, train: list[str], test: list[str]) -> list[dict]:
    """Each baseline on the test scans, at the threshold with the best mean Dice on ``train``."""
    rows = []
    for method, grid in BASELINE_GRIDS.items():
        table = np.array([store.dice_table(s, method) for s in train])
        best = int(np.argmax(table.mean(axis=0)))
        threshold = float(grid[best])
        for subject in test:
            v, score = store.volume(subject), store.baseline_map(subject, method)
            rows.append({"test set": test_set, "method": method, "augmentation": "-", "n_train": n, "fold": fold,
                         "dice": float(store.dice_table(subject, method)[best]),
                         "AUPRC": average_precision(score[v.mask], v.truth[v.mask]), "scan": subject,
                         "threshold": threshold, "train seconds": 0.0})
    return rows


def label_free_rows(store: ScanStore, test_set: str, subjects: list[str], target: str) -> list[dict]:
    """The label-free default (DAE-gated map) at its shipped Auto on every scan (``n = 0``)."""
    rows = []
    for subject in subjects:
        v = store.volume(subject)
        score = store.baseline_map(subject, "DAE-gated FLAIR intensity (baseline)")
        bulk = bulk_fit(store.baseline_map(subject, "FLAIR intensity threshold (baseline)"), v.mask)  # the gated job's fit
        threshold = float(scan_auto_threshold(GATED_METHOD, "positive", target, score, v.mask, bulk))
        rows.append({"test set": test_set, "method": LABEL_FREE_METHOD, "augmentation": "-", "n_train": 0,
                     "fold": 0, "dice": dice_at(score, v.truth, threshold),
                     "AUPRC": average_precision(score[v.mask], v.truth[v.mask]), "scan": subject,
                     "threshold": threshold, "train seconds": 0.0})
    return rows


def segmenter_rows(store: ScanStore, test_set: str, n: int, fold: int, train: list[str], test: list[str],
                   augmentation: str, default: str, steps: int | None = None,
                   overrides: dict | None = None) -> list[dict]:
    """Train on ``train`` with ``augmentation`` (seed = fold; ``overrides``: other
    :class:`SegmenterTrainConfig` fields) and score every test scan."""
    from ..inference.jobs import run_to_completion

    config = SegmenterTrainConfig(augmentation=augmentation, seed=fold,
                                  **({"steps": steps} if steps is not None else {}), **(overrides or {}))
    started = time.perf_counter()
    model, card = run_to_completion(train_segmenter_job([store.training_scan(s) for s in train], config))
    seconds = time.perf_counter() - started
    rows = []
    for subject in test:
        v = store.volume(subject)
        probability = run_to_completion(probability_job(model, store.inputs_of(subject)))
        rows.append({"test set": test_set, "method": DEFAULT_METHOD if augmentation == default else OTHER_METHOD,
                     "augmentation": augmentation, "n_train": n, "fold": fold,
                     "dice": dice_at(probability, v.truth, 0.5),
                     "AUPRC": average_precision(probability[v.mask], v.truth[v.mask]), "scan": subject,
                     "threshold": 0.5, "train seconds": round(seconds, 1)})
    return rows


def _done_keys(path: Path) -> set[tuple]:
    if not path.exists():
        return set()
    with open(path, newline="") as stream:
        return {(r["test set"], r["method"].replace(" (default)", ""), r["augmentation"], int(r["n_train"]), int(r["fold"]))
                for r in csv.DictReader(stream)}


def _append(path: Path, rows: list[dict]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})


def run_curves(out_csv: str | Path, sets: dict[str, list[str]] | None = None,
               augmentations: tuple[str, ...] = AUGMENTATIONS, default: str = "classical",
               cross: bool = True, steps: int | None = None, cache: str | Path | None = None,
               cross_only: bool = False,
               log: Callable[[str], None] = print) -> Path:
    """Every fold of every set (and the cross-set rows): baselines, then each augmentation.
    Appends to ``out_csv``; folds already there are skipped (resume). ``cross_only``: only the
    cross-set rows (a second process can run them beside the per-set folds)."""
    out = Path(out_csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    sets = SETS if sets is None else sets
    store = ScanStore(Path(cache) if cache else None)
    done = _done_keys(out)
    jobs = []
    for test_set, subjects in ({} if cross_only else sets).items():
        for n in TRAIN_COUNTS[test_set]:
            for fold, train in enumerate(folds(subjects, n, FOLDS[test_set][n])):
                jobs.append((test_set, n, fold, train, [s for s in subjects if s not in train]))
    if cross:
        for name, (source, target, n) in CROSS_SETS.items():
            if source in sets and target in sets:
                for fold, train in enumerate(folds(sets[source], n, CROSS_FOLDS)):
                    jobs.append((name, n, fold, train, list(sets[target])))
    for test_set, subjects in ({} if cross_only else sets).items():
        if (test_set, LABEL_FREE_METHOD, "-", 0, 0) not in done and "validation" not in test_set:
            _append(out, label_free_rows(store, test_set, subjects, "tumour" if "tumour" in test_set else "lesions"))
    for test_set, n, fold, train, test in jobs:
        if (test_set, "FLAIR intensity threshold (baseline)", "-", n, fold) not in done:
            _append(out, baseline_rows(store, test_set, n, fold, train, test))
        for augmentation in augmentations:
            method = DEFAULT_METHOD if augmentation == default else OTHER_METHOD
            if (test_set, method.replace(" (default)", ""), augmentation, n, fold) in done:
                continue
            rows = segmenter_rows(store, test_set, n, fold, train, test, augmentation, default, steps)
            _append(out, rows)
            log(f"{test_set} n={n} fold={fold} {augmentation}: dice {np.mean([r['dice'] for r in rows]):.3f} "
                f"({rows[0]['train seconds']:.0f} s)")
    return out
