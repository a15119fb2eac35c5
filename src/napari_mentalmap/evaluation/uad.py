"""Lesion detection by the anomaly VAEs and the denoising autoencoder (``dae2d``, Kascenas et
al. 2022): the protocol of Lambert et al. plus two intensity baselines.

Test sets (``TEST_SETS``), each scored on its own: ``open_ms`` (MS, manual; with and without
the shipped sample patient07), ``cbica_wml`` (white-matter lesions, manual, 3 mm slices),
``brats2018`` (FLAIR vs the manual whole-tumour mask) and Subj21-23 (automatic ``wml_auto``).
For each test set, the threshold is chosen from 15 values (``VAE_THRESHOLDS`` =
0.01 ... 0.15) as the one with the best mean Dice on one half of the volumes, then
applied to the other half, and the halves are swapped (both reported). Our CPU-sized
VAEs reconstruct less sharply than the paper's, so their residuals inside a healthy
brain are often above 0.15: the same protocol is also run on a wider range
(``WIDE_THRESHOLDS`` = 0.05 ... 0.75, 15 values) and reported as "dice (wide)". Post-processing
as in the plugin: threshold -> components under 10 voxels removed. AUROC and AUPRC are
voxel-wise inside the brain mask, per volume, averaged. Everything is computed on each
volume's own (input) voxel grid against its ground truth; ``uad_cases.csv`` keeps every volume's
Dice at the threshold chosen on the other half. Each model is scored twice: with
the paper's ``|x - x_hat|`` and with the plugin's default ``max(x - x_hat, 0)`` (FLAIR
lesions are hyperintense; a blurry reconstruction is also too bright in dark CSF next to
the ventricles, which the absolute residual counts as anomalous).

Baselines: the normalised FLAIR intensity itself (× the same eroded brain mask),
thresholded the same way over 15 values in [0.5, 0.99]; normalised as the VAEs' input
(percentiles), and with the brain's median mapped to 0.5 (stronger across scanners and
lesion loads).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.splits import SPLITS
from ..data.subjects import brain_mask_for, subject_files
from ..inference.anomaly import (
    DEFAULT_MEDIAN_SIZE,
    DEFAULT_MIN_SIZE,
    GATED_METHOD,
    GATED_MODEL,
    INTENSITY_MEDIAN_AT,
    AnomalyModel,
    LabelUpdater,
    anomaly_map,
    gated_intensity,
    intensity_score,
    run_job,
)
from ..io.nifti import read_volume
from ..io.resample import resample_to_reference
from ..metrics import average_precision, dice, roc_auc

VAE_THRESHOLDS = np.round(np.linspace(0.01, 0.15, 15), 4)
WIDE_THRESHOLDS = np.round(np.linspace(0.05, 0.75, 15), 4)
BASELINE_THRESHOLDS = np.round(np.linspace(0.5, 0.99, 15), 4)
TEST_SETS: dict[str, list[str]] = {
    "open_ms (manual GT)": SPLITS["open_ms"],
    "open_ms w/o shipped patient07 (manual GT)": [s for s in SPLITS["open_ms"] if s != "patient07"],
    "cbica_wml (manual GT)": SPLITS["cbica_wml"],
    "brats2018 FLAIR (manual GT, tumours)": SPLITS["brats2018"],
    "Subj21-23 (automatic wml_auto GT)": SPLITS["nichart_test"],
}
"""Every evaluation set, each scored on its own (the half/half protocol runs within a set)."""


@dataclass
class TestVolume:
    """One evaluation volume on its own grid."""

    subject: str
    image: np.ndarray
    spacing: tuple[float, float, float]
    mask: np.ndarray
    truth: np.ndarray


def load_test_volume(subject: str) -> TestVolume:
    """FLAIR, brain mask and lesion ground truth of a test subject (input grid)."""
    files = subject_files(subject, "flair")
    volume = read_volume(files["image"])
    mask = brain_mask_for(subject, volume, "flair")
    truth = resample_to_reference(read_volume(files["lesions"], as_labels=True), volume, order=0) > 0
    return TestVolume(subject, volume.data.astype(np.float32), tuple(volume.spacing), mask, truth)


def dice_table(maps: Sequence[np.ndarray], truths: Sequence[np.ndarray], thresholds: Sequence[float],
               min_size: int = DEFAULT_MIN_SIZE) -> np.ndarray:
    """Dice of every volume (rows) at every threshold (columns)."""
    rows = []
    for anomaly, truth in zip(maps, truths, strict=True):
        updater = LabelUpdater(anomaly)
        rows.append([dice(updater.update(float(t), min_size) > 0, truth) for t in thresholds])
    return np.array(rows)


def half_split(n: int) -> tuple[list[int], list[int]]:
    """The two halves of ``n`` volumes (first ceil(n/2), the rest)."""
    half = (n + 1) // 2
    return list(range(half)), list(range(half, n))


def half_half_protocol(dices: np.ndarray, thresholds: Sequence[float]) -> dict:
    """Choose the threshold on one half (best mean Dice), apply it to the other; and swapped.

    ``dices``: (volumes, thresholds). Returns the chosen thresholds and test Dice of both
    directions plus their mean over all test volumes.
    """
    first, second = half_split(dices.shape[0])
    out: dict = {}
    all_test = []
    for name, (select, apply) in {"A->B": (first, second), "B->A": (second, first)}.items():
        if not select or not apply:
            continue
        best = int(np.argmax(dices[select].mean(axis=0)))
        out[f"threshold {name}"] = float(thresholds[best])
        out[f"dice {name}"] = float(dices[apply, best].mean())
        all_test.extend(dices[apply, best].tolist())
    out["dice"] = float(np.mean(all_test)) if all_test else float("nan")
    out["dice std"] = float(np.std(all_test)) if all_test else float("nan")
    return out


def intensity_baseline(volume: TestVolume, erosion_mm: float = 3.0, median_at: float | None = None,
                       median_size: int = DEFAULT_MEDIAN_SIZE) -> np.ndarray:
    """The baseline's map: :func:`inference.anomaly.intensity_score` (what the dock runs)."""
    return intensity_score(volume.image, volume.spacing, volume.mask, erosion_mm, median_at, median_size)


def half_half_cases(dices: np.ndarray, thresholds: Sequence[float]) -> list[tuple[float, float]]:
    """Per volume: (the threshold chosen on the *other* half, the volume's Dice at it) - the
    per-case view of :func:`half_half_protocol` (nan where a half is empty)."""
    first, second = half_split(dices.shape[0])
    out = [(float("nan"), float("nan"))] * dices.shape[0]
    for select, apply in ((first, second), (second, first)):
        if not select or not apply:
            continue
        best = int(np.argmax(dices[select].mean(axis=0)))
        for i in apply:
            out[i] = (float(thresholds[best]), float(dices[i, best]))
    return out


def evaluate_maps(name: str, maps: dict[str, np.ndarray], volumes: dict[str, TestVolume],
                  thresholds: Sequence[float], seconds: float = float("nan"),
                  wide: Sequence[float] | None = None, test_sets: dict[str, list[str]] | None = None,
                  cases: list[dict] | None = None) -> list[dict]:
    """Protocol (paper range, and ``wide`` range) + AUROC/AUPRC of one method on every test set
    (``TEST_SETS`` unless given; sets whose volumes are not in ``maps`` are skipped). Per-case
    rows (Dice at the threshold chosen on the other half, AUPRC, AUROC) go into ``cases``."""
    wide = thresholds if wide is None else wide
    test_sets = TEST_SETS if test_sets is None else test_sets
    per_subject = {}
    for subject, anomaly in maps.items():
        truth, mask = volumes[subject].truth, volumes[subject].mask
        per_subject[subject] = {
            "dice": dice_table([anomaly], [truth], thresholds)[0],
            "dice wide": dice_table([anomaly], [truth], wide)[0],
            "AUPRC": average_precision(anomaly[mask], truth[mask]),
            "AUROC": roc_auc(anomaly[mask], truth[mask]),
            "lesion voxels": int(truth.sum()),
        }
    rows = []
    for test_set, subjects in test_sets.items():
        if not all(s in per_subject for s in subjects):
            continue
        dices = np.stack([per_subject[s]["dice"] for s in subjects])
        wide_dices = np.stack([per_subject[s]["dice wide"] for s in subjects])
        row = {"method": name, "test set": test_set, **half_half_protocol(dices, thresholds)}
        wide_result = half_half_protocol(wide_dices, wide)
        row.update({k.replace("dice", "dice (wide)").replace("threshold", "threshold (wide)"): v
                    for k, v in wide_result.items()})
        row["AUPRC"] = float(np.nanmean([per_subject[s]["AUPRC"] for s in subjects]))
        row["AUROC"] = float(np.nanmean([per_subject[s]["AUROC"] for s in subjects]))
        row["best fixed-threshold dice (oracle)"] = float(wide_dices.mean(axis=0).max())
        row["seconds per volume"] = seconds
        row["volumes"] = len(subjects)
        rows.append(row)
        if cases is not None:
            chosen, chosen_wide = half_half_cases(dices, thresholds), half_half_cases(wide_dices, wide)
            for i, subject in enumerate(subjects):
                cases.append({"method": name, "test set": test_set, "subject": subject,
                              "dice": chosen[i][1], "threshold": chosen[i][0],
                              "dice (wide)": chosen_wide[i][1], "threshold (wide)": chosen_wide[i][0],
                              "AUPRC": per_subject[subject]["AUPRC"], "AUROC": per_subject[subject]["AUROC"],
                              "lesion voxels": per_subject[subject]["lesion voxels"]})
    return rows


def model_maps(model: AnomalyModel, volumes: dict[str, TestVolume], residual: str = "positive",
               desc: str = "") -> dict[str, np.ndarray]:
    """The anomaly map of every volume (tqdm progress)."""
    from tqdm.auto import tqdm

    return {s: run_job(anomaly_map(v.image, v.spacing, model, mask=v.mask, residual=residual)).anomaly
            for s, v in tqdm(volumes.items(), desc=desc, leave=False)}


def evaluate_all(models: dict[str, AnomalyModel], log: Callable[[str], None] = print,
                 test_sets: dict[str, list[str]] | None = None, residuals: Sequence[str] = ("positive", "absolute"),
                 cases: list[dict] | None = None) -> list[dict]:
    """Every model and both intensity baselines on every volume of every test set (progress bars)."""
    import warnings

    from tqdm.auto import tqdm

    test_sets = TEST_SETS if test_sets is None else test_sets
    subjects = list(dict.fromkeys(s for group in test_sets.values() for s in group))
    volumes = {s: load_test_volume(s) for s in tqdm(subjects, desc="loading test volumes")}
    methods = [(name, None, None) for name in BASELINES] + [
        (kind, model, residual) for kind, model in models.items() for residual in residuals]
    rows: list[dict] = []
    kept: dict[str, tuple[dict[str, np.ndarray], float]] = {}  # what the gated method combines
    for name, model, residual in tqdm(methods, desc="methods"):
        started = time.time()
        if model is None:
            maps = {s: intensity_baseline(v, median_at=BASELINES[name]) for s, v in volumes.items()}
            thresholds, wide, label = BASELINE_THRESHOLDS, None, name
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the "is this a FLAIR?" note, expected on other sites
                maps = model_maps(model, volumes, residual, desc=f"{name} {residual}")
            thresholds, wide, label = VAE_THRESHOLDS, WIDE_THRESHOLDS, f"{name} {RESIDUAL_LABELS[residual]}"
        seconds = (time.time() - started) / len(volumes)
        if (model is None and BASELINES[name] == INTENSITY_MEDIAN_AT) or (name == GATED_MODEL and residual == "positive"):
            kept["intensity" if model is None else "residual"] = maps, seconds
        log(f"{label}: maps in {seconds:.2f} s per volume")
        rows += evaluate_maps(label, maps, volumes, thresholds, seconds, wide, test_sets, cases)
    if len(kept) == 2:  # the dock's default: the intensity gated by the DAE's residual
        (intensity, t_intensity), (residual_maps, t_residual) = kept["intensity"], kept["residual"]
        maps = {s: gated_intensity(intensity[s], residual_maps[s]) for s in volumes}
        rows += evaluate_maps(GATED_LABEL, maps, volumes, BASELINE_THRESHOLDS, t_intensity + t_residual, None,
                              test_sets, cases)
    return rows


GATED_LABEL = f"{GATED_METHOD} (dae2d × intensity)"
"""The gated method's row in the tables (the dock's default; not a baseline)."""


BASELINES = {"FLAIR intensity (baseline)": None, "FLAIR intensity, median-normalised (baseline)": 0.5}
"""Intensity baselines: name -> ``median_at`` of their normalisation (None = percentiles)."""
RESIDUAL_LABELS = {"positive": "max(x − x̂ − r̄, 0)", "absolute": "abs(x − x̂) (paper)"}
"""Scores each VAE is evaluated with (``inference.anomaly.RESIDUALS``) and their table labels."""

CASE_COLUMNS = ("method", "test set", "subject", "dice", "threshold", "dice (wide)", "threshold (wide)",
                "AUPRC", "AUROC", "lesion voxels")
COLUMNS = ("method", "test set", "dice", "dice std", "dice A->B", "dice B->A", "threshold A->B",
           "threshold B->A", "dice (wide)", "dice (wide) std", "dice (wide) A->B", "dice (wide) B->A",
           "threshold (wide) A->B", "threshold (wide) B->A", "AUPRC", "AUROC",
           "best fixed-threshold dice (oracle)", "seconds per volume")
TABLE_COLUMNS = ("method", "test set", "dice", "dice A->B", "dice B->A", "threshold A->B", "threshold B->A",
                 "dice (wide)", "threshold (wide) A->B", "threshold (wide) B->A", "AUPRC", "AUROC",
                 "seconds per volume")


def markdown_table(rows: list[dict]) -> str:
    """The results as a Markdown table (one line per method and test set)."""
    columns = list(TABLE_COLUMNS)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column, "")
            if column in ("dice", "dice (wide)") and f"{column} std" in row:
                cells.append(f"{value:.3f} ± {row[column + ' std']:.3f}")
            elif isinstance(value, float):
                cells.append("–" if np.isnan(value) else f"{value:.3f}" if "threshold" not in column else f"{value:g}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(rows: list[dict], out_dir: str | Path, cases: list[dict] | None = None) -> dict[str, Path]:
    """``uad_eval.md``, ``uad_eval.csv``, ``uad_eval.png`` (and ``uad_cases.csv``) in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / "uad_eval.md", "csv": out_dir / "uad_eval.csv", "png": out_dir / "uad_eval.png"}
    paths["md"].write_text(markdown_table(rows) + "\n")
    with open(paths["csv"], "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    if cases is not None:
        paths["cases"] = out_dir / "uad_cases.csv"
        with open(paths["cases"], "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(CASE_COLUMNS), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(cases)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    sets = list(dict.fromkeys(r["test set"] for r in rows))
    figure, axes = plt.subplots(1, 2, figsize=(16, 6))
    width = 0.8 / len(methods)
    for metric, axis in zip(("dice (wide)", "AUPRC"), axes, strict=True):
        for i, method in enumerate(methods):
            values = [next(r[metric] for r in rows if r["method"] == method and r["test set"] == s) for s in sets]
            axis.bar(np.arange(len(sets)) + i * width, values, width, label=method)
        axis.set_xticks(np.arange(len(sets)) + 0.4 - width / 2)
        axis.set_xticklabels([s.replace(" (", "\n(") for s in sets], fontsize=7)
        axis.set_ylabel(metric)
        axis.set_ylim(0, 1)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, frameon=False)
    figure.suptitle("Lesion detection: Dice (half/half threshold protocol) and voxel-wise AUPRC")
    figure.tight_layout(rect=(0, 0.14, 1, 1))
    figure.savefig(paths["png"], dpi=100)
    plt.close(figure)
    return paths
