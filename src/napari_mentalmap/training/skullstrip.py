"""Train the learned brain extraction (:mod:`napari_mentalmap.models.skullstrip`).

Inputs are the NiChart volumes *with* skull of the fixed ``train`` split, T1 and (with
``modalities``) FLAIR; the target is the brain = DLMUSE parcellation > 0 (on the T1 grid,
resampled onto the FLAIR grid for the FLAIR). With probability
``stripped_prob`` a training slice comes from the skull-stripped version of the volume
(T1 x brain mask, preprocessed on its own), so stripped inputs map to their non-zero
region. Augmentation: intensity scale and gamma, left-right flips and a small random
in-plane rotation / zoom / shift. Validation Dice is measured on whole volumes of the
``val`` split; the best checkpoint is exported with its config, split, metrics and the
exact training command.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..checkpoints import load_record, save_record
from ..data.splits import SPLITS, misregistered
from ..data.subjects import brain_mask_for, subject_files
from ..io.nifti import read_volume
from ..metrics import dice
from ..models.skullstrip import (
    DEFAULT_CONFIG,
    SkullStripConfig,
    SkullStripUNet,
    head_grid,
    postprocess,
    predict_grid,
    slice_stack,
)


def with_reference(subjects: list[str], modalities) -> list[tuple[str, str]]:
    """(subject, modality) pairs that have a reference brain mask (not a misregistered FLAIR)."""
    return [(s, m) for s in subjects for m in modalities if not misregistered(s, m)]


@dataclass
class SkullStripTrainConfig:
    out_dir: str = "runs/skullstrip"
    steps: int = 3000
    batch_size: int = 16
    lr: float = 3e-3
    stripped_prob: float = 0.3
    eval_every: int = 100
    seed: int = 0
    num_threads: int = 1
    max_minutes: float = 11.0
    modalities: tuple[str, ...] = ("t1",)


def load_brain(subject: str, modality: str = "t1") -> tuple[np.ndarray, tuple, np.ndarray]:
    """A NiChart subject's T1 or FLAIR (with skull), spacing and brain mask (parcellation > 0)."""
    files = subject_files(subject, modality)
    volume = read_volume(files["image"])
    if modality != "t1":  # the parcellation lives on the T1 grid
        if misregistered(subject, modality):
            raise ValueError(f"{subject}'s FLAIR is not aligned with its parcellation: no reference mask")
        return volume.data.astype(np.float32), tuple(volume.spacing), brain_mask_for(subject, volume, modality)
    labels = read_volume(files["mask_source"]).data
    if labels.shape != volume.data.shape:
        raise ValueError(f"{subject}: parcellation shape {labels.shape} != T1 shape {volume.data.shape}")
    return volume.data.astype(np.float32), tuple(volume.spacing), labels > 0


def grid_pairs(volume: np.ndarray, spacing, brain: np.ndarray, model_config: SkullStripConfig,
               keep_all: bool = False):
    """(inputs (n, 3, H, W), targets (n, H, W)) for one preprocessed version of a volume."""
    grid = head_grid(volume, spacing, model_config)
    target = grid.to_grid(brain.astype(np.float32), order=1) > 0.5
    keep = np.ones(len(target), dtype=bool)
    if keep_all:
        return slice_stack(grid.image), target
    empty = ~target.any(axis=(1, 2))
    # keep every brain slice and a third of the empty ones (neck, skull top)
    keep[empty] = np.arange(empty.sum()) % 3 == 0
    return slice_stack(grid.image)[keep], target[keep]


def _augment(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    n = x.shape[0]

    def uniform(lo, hi, size=(n,)):
        return lo + (hi - lo) * torch.rand(size, generator=generator)

    # intensity: gamma on the positive part, global scale and offset
    gamma = torch.exp(uniform(math.log(0.7), math.log(1.5))).view(n, 1, 1, 1)
    x = torch.where(x > 0, x.clamp(min=0) ** gamma, x)
    x = x * uniform(0.85, 1.15).view(n, 1, 1, 1) + uniform(-0.05, 0.05).view(n, 1, 1, 1)
    # geometry: rotation, zoom, shift, left-right flip (one affine for input and target)
    angle = uniform(-0.2, 0.2)
    zoom = uniform(0.88, 1.12)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([
        torch.stack([cos * flip, -sin, uniform(-0.08, 0.08)], dim=1),
        torch.stack([sin * flip, cos, uniform(-0.08, 0.08)], dim=1),
    ], dim=1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    background = x[:, :, :2, :2].mean(dim=(2, 3), keepdim=True)
    x = F.grid_sample(x - background, grid, align_corners=False) + background
    y = F.grid_sample(y.unsqueeze(1).float(), grid, align_corners=False)
    return x, (y > 0.5).float()


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    soft_dice = (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
    return bce + (1 - soft_dice)


def volume_mask(model: SkullStripUNet, volume, spacing, config: SkullStripConfig) -> np.ndarray:
    grid = head_grid(volume, spacing, config)
    probability = predict_grid(model, grid.image)
    return postprocess(grid.to_input(probability) > 0.5)


@torch.no_grad()
def grid_dice(model: SkullStripUNet, grids: dict) -> dict:
    """Model-grid Dice (no flip averaging, no post-processing): the cheap validation score."""
    model.eval()
    scores = {}
    for subject, versions in grids.items():
        scores[subject] = {}
        for name, (x, target) in versions.items():
            logits = torch.cat([model(torch.from_numpy(x[i:i + 64])) for i in range(0, len(x), 64)])
            scores[subject][name] = dice(logits[:, 0].numpy() > 0, target)
    model.train()
    return scores


def evaluate(model, subjects: list[str], config: SkullStripConfig, cache: dict | None = None,
             modality: str = "t1") -> dict:
    """Whole-volume Dice vs. parcellation > 0, on the raw volume and on its stripped version."""
    model.eval()
    scores = {}
    for subject in subjects:
        volume, spacing, brain = cache[subject] if cache and subject in cache else load_brain(subject, modality)
        scores[subject] = {
            "skull": dice(volume_mask(model, volume, spacing, config), brain),
            "stripped": dice(volume_mask(model, volume * brain, spacing, config), brain),
        }
    model.train()
    return scores


def train_skullstrip(config: SkullStripTrainConfig, model_config: SkullStripConfig = DEFAULT_CONFIG,
                     command: str = "") -> dict:
    """Train, keep the best validation checkpoint in ``out_dir/best.pt``; return the summary."""
    torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    raw_x, raw_y, strip_x, strip_y = [], [], [], []
    for subject, modality in with_reference(SPLITS["nichart_train"], config.modalities):
        volume, spacing, brain = load_brain(subject, modality)
        x, y = grid_pairs(volume, spacing, brain, model_config)
        raw_x.append(x)
        raw_y.append(y)
        x, y = grid_pairs(volume * brain, spacing, brain, model_config)
        strip_x.append(x)
        strip_y.append(y)
    raw = (torch.from_numpy(np.concatenate(raw_x)), torch.from_numpy(np.concatenate(raw_y)))
    stripped = (torch.from_numpy(np.concatenate(strip_x)), torch.from_numpy(np.concatenate(strip_y)))
    val_grids = {}
    for subject, modality in with_reference(SPLITS["nichart_val"], config.modalities):
        volume, spacing, brain = load_brain(subject, modality)
        val_grids[f"{subject} {modality}"] = {"skull": grid_pairs(volume, spacing, brain, model_config, keep_all=True),
                              "stripped": grid_pairs(volume * brain, spacing, brain, model_config, keep_all=True)}
    prep_seconds = time.time() - started
    print(f"data: {len(raw[0])} skull slices, {len(stripped[0])} stripped slices ({prep_seconds:.0f} s)", flush=True)

    model = SkullStripUNet(base=model_config.base, depth=model_config.depth)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    history, best, step = [], {"score": -1.0}, 0
    train_start = time.time()
    deadline = train_start + 60 * config.max_minutes
    while step < config.steps and time.time() < deadline:
        # warm-up then cosine decay over whichever budget (steps or minutes) runs out first
        progress = max(step / config.steps, (time.time() - train_start) / (deadline - train_start))
        for group in optimiser.param_groups:
            group["lr"] = config.lr * min(1.0, progress / 0.05) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        n_stripped = int((torch.rand(config.batch_size, generator=generator) < config.stripped_prob).sum())
        parts_x, parts_y = [], []
        for (xs, ys), count in ((stripped, n_stripped), (raw, config.batch_size - n_stripped)):
            if count:
                index = torch.randint(len(xs), (count,), generator=generator)
                parts_x.append(xs[index])
                parts_y.append(ys[index])
        x, y = _augment(torch.cat(parts_x), torch.cat(parts_y), generator)
        loss = _loss(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        step += 1
        last = step == config.steps or time.time() >= deadline
        if step % config.eval_every == 0 or last:
            scores = grid_dice(model, val_grids)
            mean = float(np.mean([v["skull"] for v in scores.values()]))
            mean_stripped = float(np.mean([v["stripped"] for v in scores.values()]))
            entry = {"step": step, "loss": loss.item(), "val_dice_skull": mean,
                     "val_dice_stripped": mean_stripped, "seconds": time.time() - train_start}
            history.append(entry)
            print(json.dumps(entry), flush=True)
            if mean + mean_stripped > best["score"]:
                best = {"score": mean + mean_stripped, "step": step, "val": scores}
                save_record(out / "best.pt", {"model": model.state_dict(), "config": model_config.to_dict()})
    summary = {
        "steps": step, "train_seconds": time.time() - train_start, "prep_seconds": prep_seconds,
        "best_step": best["step"], "val": best["val"], "history": history,
        "train_config": asdict(config), "config": model_config.to_dict(),
        "split": {k: SPLITS[k] for k in ("train", "val", "test")}, "command": command,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def export_weights(out_dir: str | Path, path: str | Path, test_subjects: list[str] | None = None) -> Path:
    """Best checkpoint + summary + test Dice (``test`` split, every trained modality) -> the
    shipped weights file."""
    out_dir = Path(out_dir)
    summary = json.loads((out_dir / "summary.json").read_text())
    checkpoint = load_record(out_dir / "best.pt")
    model_config = SkullStripConfig(**checkpoint["config"])
    model = SkullStripUNet(base=model_config.base, depth=model_config.depth)
    model.load_state_dict(checkpoint["model"])
    modalities = summary["train_config"].get("modalities", ["t1"])
    test = {f"{subject} {modality}": evaluate(model, [subject], model_config, modality=modality)[subject]
            for subject, modality in with_reference(test_subjects or SPLITS["nichart_test"], modalities)}
    metrics = {"val": summary["val"], "test": test,
               "test_mean_skull": float(np.mean([v["skull"] for v in test.values()])),
               "test_mean_stripped": float(np.mean([v["stripped"] for v in test.values()]))}
    for modality in modalities:
        per_modality = [v for k, v in test.items() if k.endswith(f" {modality}")]
        metrics[f"test_mean_skull_{modality}"] = float(np.mean([v["skull"] for v in per_modality]))
        metrics[f"test_mean_stripped_{modality}"] = float(np.mean([v["stripped"] for v in per_modality]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_record(path, {
        "model": {k: v.clone() for k, v in model.state_dict().items()},
        "config": model_config.to_dict(),
        "split": summary["split"],
        "metrics": metrics,
        "train": {k: summary[k] for k in ("steps", "train_seconds", "best_step", "train_config", "command")},
    })
    return path
