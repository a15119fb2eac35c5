"""Realism and smoothness of slice-VAE volumes (in the spirit of the Realistic Atlas Score).

A small tissue segmentation net (trained on real train-split slices) segments every volume
into background / CSF / grey / white matter; each segmentation is compared with the real
training subjects' tissue maps on the model grid (which already aligns brains by their
extent, standing in for the paper's registration): the realism score is the mean Dice over
the three tissue classes against the best-matching subject. Smoothness is the mean SSIM of
neighbouring slices. Rows: real test subjects (the ceiling), VAE reconstructions of them,
the coherent PPCA model, the paper's per-slice Gaussian and the naive N(0, I) sampler.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from skimage.metrics import structural_similarity

from ..checkpoints import load_record, load_state, resolve, shipped
from ..io.preprocess import GridSpec
from ..metrics import dice
from ..models.slice_vae import TISSUE_CLASSES, TissueSegNet

SEGNET_WEIGHTS = shipped("slice_vae_segnet").path
SEGNET_COMMAND = "mentalmap train slicevae --part segnet"
ROWS: tuple[tuple[str, str], ...] = (
    ("real", "real test subjects (ceiling)"),
    ("recon", "VAE reconstruction of test subjects"),
    ("ppca", "coherent PPCA model (ours)"),
    ("per_slice", "per-slice Gaussian (paper)"),
    ("naive", "naive N(0, I) per slice"),
)


def realism_score(
    segmentation: np.ndarray, references: np.ndarray, classes: tuple[int, ...] = (1, 2, 3)
) -> tuple[float, list[float], int]:
    """Best-matching-reference mean Dice over ``classes``.

    ``segmentation`` ``(P, S, S)`` labels; ``references`` ``(M, P, S, S)``. Returns the score,
    the per-class Dice against the best reference, and that reference's index.
    """
    best = (-1.0, [], -1)
    for index, reference in enumerate(references):
        per_class = [dice(segmentation == c, reference == c) for c in classes]
        score = float(np.mean(per_class))
        if score > best[0]:
            best = (score, per_class, index)
    return best


def neighbour_ssim(volume: np.ndarray) -> float:
    """Mean SSIM between neighbouring slices ``volume[i]`` and ``volume[i + 1]`` (data range 1)."""
    volume = np.asarray(volume, dtype=np.float64)
    values = [
        structural_similarity(volume[i], volume[i + 1], data_range=1.0) for i in range(len(volume) - 1)
    ]
    return float(np.mean(values))


def load_segnet(path: str | Path | None = None) -> TissueSegNet:
    """The realism-score segmentation net (clear error naming the training command)."""
    path = resolve(path, "slice_vae_segnet")
    payload = load_record(path, "tissue_segnet")
    net = TissueSegNet(n_classes=len(payload["classes"]), width=payload["width"])
    load_state(net, payload, path)
    return net.eval()


@dataclass
class RowResult:
    key: str
    label: str
    n: int
    realism: float
    realism_std: float
    dice_per_class: list[float]
    smoothness: float
    smoothness_std: float


def _summarise(key: str, label: str, volumes: np.ndarray, segnet: TissueSegNet, references: np.ndarray) -> RowResult:
    from ..inference.latent import segment_volumes

    segmentations = segment_volumes(segnet, volumes)
    scores, per_class = [], []
    for seg in segmentations:
        score, classes, _ = realism_score(seg, references)
        scores.append(score)
        per_class.append(classes)
    smooth = [neighbour_ssim(v) for v in volumes]
    return RowResult(key, label, len(volumes), float(np.mean(scores)), float(np.std(scores)),
                     [float(v) for v in np.mean(per_class, 0)], float(np.mean(smooth)), float(np.std(smooth)))


def evaluate_slice_vae(
    bundle, segnet: TissueSegNet, n_samples: int = 10, seed: int = 0, split: str = "test"
) -> tuple[list[RowResult], dict[str, np.ndarray], dict]:
    """Table rows, one example volume per row, and extra metrics (reconstruction error)."""
    from ..data.splits import SPLITS
    from ..data.subjects import load_subject_grid
    from ..data.tissue import load_subject_tissue
    from ..inference.latent import decode, run, sample_volume

    spec: GridSpec = bundle.spec
    train_subjects = bundle.info.get("split", {}).get("train") or SPLITS["nichart_train"]
    references = np.stack([load_subject_tissue(s, spec) for s in train_subjects])
    real = np.stack([load_subject_grid(s, "t1", spec).image for s in SPLITS[split]])
    from ..inference.latent import encode

    latents = np.stack([encode(bundle, v) for v in real])
    recon = np.stack([decode(bundle, z) for z in latents])
    masks = np.stack([load_subject_grid(s, "t1", spec).mask for s in SPLITS[split]])
    extra = {
        "recon_mse": float(((recon - real) ** 2).mean()),
        "recon_mae_brain": float(np.abs(recon - real)[masks].mean()),
    }
    volumes = {"real": real, "recon": recon}
    for offset, name in enumerate(("ppca", "per_slice", "naive")):
        volumes[name] = run(sample_volume(bundle, n_samples, model=name, seed=seed + offset))
    rows = [_summarise(key, label, volumes[key], segnet, references) for key, label in ROWS]
    examples = {key: vols[0] for key, vols in volumes.items()}
    return rows, examples, extra


def markdown_table(rows: list[RowResult]) -> str:
    """The results as a Markdown table."""
    names = [c.replace(" matter", "") for c in TISSUE_CLASSES[1:]]
    header = "| volumes | n | realism (mean Dice) | " + " | ".join(f"Dice {n}" for n in names) + " | neighbour-slice SSIM |"
    lines = [header, "|" + "---|" * (4 + len(names))]
    for r in rows:
        per = " | ".join(f"{v:.3f}" for v in r.dice_per_class)
        lines.append(f"| {r.label} | {r.n} | {r.realism:.3f} ± {r.realism_std:.3f} | {per} | "
                     f"{r.smoothness:.3f} ± {r.smoothness_std:.3f} |")
    return "\n".join(lines)


def write_results(rows: list[RowResult], examples: dict[str, np.ndarray], extra: dict, out_dir: Path) -> dict[str, Path]:
    """Write ``table.md``, ``table.csv`` and ``figure.png`` into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows)
    extras = ", ".join(f"{k} {v:.4f}" for k, v in extra.items())
    (out_dir / "table.md").write_text(table + f"\n\nReconstruction (test subjects): {extras}\n")
    with open(out_dir / "table.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "volumes", "n", "realism", "realism_std", "dice_csf", "dice_grey", "dice_white",
                         "neighbour_ssim", "neighbour_ssim_std"])
        for r in rows:
            writer.writerow([r.key, r.label, r.n, f"{r.realism:.4f}", f"{r.realism_std:.4f}",
                             *(f"{v:.4f}" for v in r.dice_per_class), f"{r.smoothness:.4f}", f"{r.smoothness_std:.4f}"])
    keys = [k for k, _ in ROWS]
    figure, axes = plt.subplots(len(keys), 4, figsize=(8, 2.1 * len(keys)))
    for row, key in enumerate(keys):
        volume = examples[key]
        p, s = volume.shape[0], volume.shape[1]
        panels = [volume[p // 4], volume[p // 2], volume[3 * p // 4], volume[:, :, s // 2][::-1]]
        titles = ["axial 1/4", "axial 1/2", "axial 3/4", "sagittal reformat"]
        for col, (panel, title) in enumerate(zip(panels, titles, strict=True)):
            ax = axes[row, col]
            ax.imshow(panel, cmap="gray", vmin=0, vmax=1, aspect="auto" if col == 3 else "equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=9)
            if col == 0:
                ax.set_ylabel(dict(ROWS)[key].split(" (")[0], fontsize=8)
    figure.suptitle("Slice VAE: real vs sampled volumes (reformat shows slice-to-slice coherence)", fontsize=9)
    figure.tight_layout()
    figure.savefig(out_dir / "figure.png", dpi=110)
    plt.close(figure)
    return {"table": out_dir / "table.md", "csv": out_dir / "table.csv", "figure": out_dir / "figure.png"}


def run_evaluation(out_dir: Path, n_samples: int = 10, seed: int = 0, device: str = "cpu",
                   weights: Path | None = None, segnet_weights: Path | None = None) -> str:
    """Evaluate the shipped (or given) weights, write the results, return the Markdown table."""
    from ..inference.latent import load_slice_vae

    started = time.perf_counter()
    bundle = load_slice_vae(weights, device=device)
    segnet = load_segnet(segnet_weights)
    rows, examples, extra = evaluate_slice_vae(bundle, segnet, n_samples=n_samples, seed=seed)
    write_results(rows, examples, extra, out_dir)
    extras = ", ".join(f"{k} {v:.4f}" for k, v in extra.items())
    return (markdown_table(rows) + f"\n\nReconstruction (test subjects): {extras}"
            + f"\n({time.perf_counter() - started:.1f} s; results in {out_dir})")
