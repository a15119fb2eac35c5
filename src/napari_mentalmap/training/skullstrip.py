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

import math
import time
from collections.abc import Iterator
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
from .loop import GeneratorState, LoopConfig, StepContext, fit


def with_reference(subjects: list[str], modalities) -> list[tuple[str, str]]:
    """(subject, modality) pairs that have a reference brain mask (not a misregistered FLAIR)."""
    return [(s, m) for s in subjects for m in modalities if not misregistered(s, m)]


@dataclass
class SkullStripTrainConfig:
    """One brain-extraction training run (stored with the exported weights)."""

    out_dir: str = "runs/skullstrip"
    steps: int = 3000
    """Optimisation steps (the learning rate follows a cosine over steps or minutes, whichever ends first)."""
    batch_size: int = 16
    lr: float = 3e-3
    stripped_prob: float = 0.3
    """Share of a batch drawn from the skull-stripped versions of the volumes."""
    eval_every: int = 100
    """Validation (and checkpoint) period in steps."""
    seed: int = 0
    num_threads: int = 1
    max_minutes: float = 11.0
    modalities: tuple[str, ...] = ("t1",)
    """NiChart contrasts trained on, each with skull and stripped."""


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


def _slice_pairs(pairs: list[tuple[str, str]], model_config: SkullStripConfig) -> tuple:
    """Training tensors ((x, y) with skull, (x, y) skull-stripped) of (subject, modality) pairs."""
    raw_x, raw_y, strip_x, strip_y = [], [], [], []
    for subject, modality in pairs:
        volume, spacing, brain = load_brain(subject, modality)
        for xs, ys, source in ((raw_x, raw_y, volume), (strip_x, strip_y, volume * brain)):
            x, y = grid_pairs(source, spacing, brain, model_config)
            xs.append(x)
            ys.append(y)
    return ((torch.from_numpy(np.concatenate(raw_x)), torch.from_numpy(np.concatenate(raw_y))),
            (torch.from_numpy(np.concatenate(strip_x)), torch.from_numpy(np.concatenate(strip_y))))


def train_skullstrip(config: SkullStripTrainConfig, model_config: SkullStripConfig = DEFAULT_CONFIG,
                     command: str = "", subjects: dict[str, list[str]] | None = None,
                     progress: bool = True, resume: bool = True) -> dict:
    """Train (or continue) on :func:`.loop.fit`; the best validation checkpoint is
    ``out_dir/best.pt``. ``subjects`` ({"train": [...], "val": [...]}) overrides the split."""
    subjects = subjects or {"train": SPLITS["nichart_train"], "val": SPLITS["nichart_val"]}
    started = time.time()
    raw, stripped = _slice_pairs(with_reference(subjects["train"], config.modalities), model_config)
    val_grids = {}
    for subject, modality in with_reference(subjects["val"], config.modalities):
        volume, spacing, brain = load_brain(subject, modality)
        val_grids[f"{subject} {modality}"] = {"skull": grid_pairs(volume, spacing, brain, model_config, keep_all=True),
                                              "stripped": grid_pairs(volume * brain, spacing, brain, model_config,
                                                                     keep_all=True)}
    prep_seconds = time.time() - started
    print(f"data: {len(raw[0])} skull slices, {len(stripped[0])} stripped slices ({prep_seconds:.0f} s)", flush=True)
    random = GeneratorState(config.seed)

    def build():
        torch.manual_seed(config.seed)
        model = SkullStripUNet(base=model_config.base, depth=model_config.depth)
        return model, torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)

    def batches(start: int, fabric) -> Iterator:
        while True:
            n_stripped = int((torch.rand(config.batch_size, generator=random.generator) < config.stripped_prob).sum())
            parts_x, parts_y = [], []
            for (xs, ys), count in ((stripped, n_stripped), (raw, config.batch_size - n_stripped)):
                if count:
                    index = torch.randint(len(xs), (count,), generator=random.generator)
                    parts_x.append(xs[index])
                    parts_y.append(ys[index])
            yield _augment(torch.cat(parts_x), torch.cat(parts_y), random.generator)

    def step(context: StepContext, batch) -> dict[str, float]:
        # warm-up then cosine decay over whichever budget (steps or minutes) runs out first
        done = max(context.index / config.steps, context.time_used)
        for group in context.optimizer.param_groups:
            group["lr"] = config.lr * min(1.0, done / 0.05) * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))
        x, y = batch
        loss = _loss(context.model(x), y)
        context.optimizer.zero_grad()
        context.backward(loss)
        context.optimizer.step()
        return {"loss": loss.item()}

    def validate(model: SkullStripUNet) -> dict:
        scores = grid_dice(model, val_grids)
        return {"val_dice_skull": float(np.mean([v["skull"] for v in scores.values()])),
                "val_dice_stripped": float(np.mean([v["stripped"] for v in scores.values()])), "val": scores}

    loop = LoopConfig(out_dir=config.out_dir, steps=config.steps, val_every=config.eval_every,
                      checkpoint_every=config.eval_every, max_minutes=config.max_minutes, seed=config.seed,
                      num_threads=config.num_threads)
    record = {"config": model_config.to_dict(), "train_config": asdict(config), "command": command,
              "split": {**subjects, "test": SPLITS["nichart_test"]}, "prep_seconds": prep_seconds}
    summary = fit(loop, build, step, batches, validate, progress=progress, resume=resume, desc="train skullstrip",
                  select=lambda metrics: metrics["val_dice_skull"] + metrics["val_dice_stripped"], record=record,
                  stateful={"generator": random})
    return {"steps": summary["step"], "train_seconds": summary["train_seconds"], "prep_seconds": prep_seconds,
            "best_step": summary["best_metrics"].get("step"), "val": summary["best_metrics"].get("val"),
            "history": summary["history"], **record}


def export_weights(out_dir: str | Path, path: str | Path, test_subjects: list[str] | None = None) -> Path:
    """Best checkpoint + summary + test Dice (``test`` split, every trained modality) -> the
    shipped weights file."""
    out_dir = Path(out_dir)
    checkpoint = load_record(out_dir / "best.pt")
    last = load_record(out_dir / "last.pt")
    model_config = SkullStripConfig(**checkpoint["config"])
    model = SkullStripUNet(base=model_config.base, depth=model_config.depth)
    model.load_state_dict(checkpoint["state_dict"])
    summary = {**checkpoint, "val": checkpoint["metrics"]["val"], "best_step": checkpoint["metrics"]["step"],
               "steps": last["train_state"]["step"], "train_seconds": last["train_state"]["train_seconds"]}
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
