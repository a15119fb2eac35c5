"""Training loop for Conditional BRUNO on Lightning Fabric (CPU, one GPU or DDP unchanged).

Loss: the negative log-likelihood of sequences of ``length`` (slice, pose) pairs of one
subject, every element scored given its predecessors (as BRUNO), in bits per pixel.
Checkpoints (``last.pt``, ``best.pt``) hold weights, optimiser, step and the config, so a
run interrupted at any point continues with ``--resume``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..checkpoints import load_record, save_record
from ..data.splits import SPLITS
from ..data.subjects import load_split
from ..inference.mental_map import evenly_spaced
from ..io.preprocess import GridSpec
from ..models.bruno import Bruno, BrunoConfig
from ..models.flows import dequantize
from .datasets import SequenceDataset
from .loop import LoopConfig, StepContext, fit


def _default_loop() -> LoopConfig:
    return LoopConfig(out_dir="runs/bruno", steps=20_000, accelerator="auto")


@dataclass
class TrainConfig:
    """One BRUNO run: ``loop`` (run folder, steps, validation period, time budget, seed, threads,
    accelerator: what every training shares) and BRUNO's own optimisation and DDP settings."""

    loop: LoopConfig = field(default_factory=_default_loop)
    batch_size: int = 4
    sequence_length: int = 9
    lr: float = 1e-3
    process_lr_factor: float = 10.0  # the per-dimension process and pose-norm parameters learn faster
    warmup_steps: int = 200
    weight_decay: float = 0.0
    grad_clip: float = 50.0
    devices: int | str = 1
    strategy: str = "auto"
    val_contexts: tuple[int, ...] = (1, 3, 5, 9)
    prediction_weight: float = 0.0  # weight of the process's predictive-mean squared error
    bruno: BrunoConfig = field(default_factory=BrunoConfig)

    @classmethod
    def create(cls, **values) -> TrainConfig:
        """A config from flat keywords: the :class:`.loop.LoopConfig` ones go into ``loop``."""
        names = {f.name for f in fields(LoopConfig)}
        loop = {name: values.pop(name) for name in list(values) if name in names}
        return cls(loop=replace(_default_loop(), **loop), **values)


def init_pose_norm(model: Bruno, volumes: list[np.ndarray]) -> None:
    """Data-dependent init: the pose-norm layer starts at the training set's per-pose
    mean and standard deviation in logit space."""
    if model.flow.pose_norm is None:
        return
    images = torch.from_numpy(np.stack(volumes))  # (N, P, S, S)
    logits, _ = model.flow.preprocess(images)
    mean = logits.mean(0)
    std = logits.std(0).clamp(min=0.05)
    with torch.no_grad():
        model.flow.pose_norm.mean.copy_(mean.unsqueeze(1))
    model.flow.pose_norm.set_log_scale(std.log().unsqueeze(1))


@torch.no_grad()
def validate(model: Bruno, volumes: list[np.ndarray], context_counts, device: torch.device) -> dict:
    """Validation bits/dim (fixed sequences) and SSIM/CC of the mean image on non-context
    poses, averaged over ``context_counts`` (evenly spaced contexts) and subjects."""
    from ..metrics import slice_cc, slice_ssim

    model.eval()
    dataset = SequenceDataset(volumes, length=9, epoch_size=32, augment=False, seed=12345)
    bpd = []
    generator = torch.Generator().manual_seed(0)
    for i in range(0, len(dataset), 8):
        batch = [dataset[j] for j in range(i, min(i + 8, len(dataset)))]
        images = dequantize(torch.stack([b[0] for b in batch]), generator).to(device)
        poses = torch.stack([b[1] for b in batch]).to(device)
        bpd.append(model.bits_per_dim(model.log_prob(images, poses)).mean().item())
    n_poses = model.n_poses
    ssim, cc, sample_ac, truth_ac, sample_ssim = [], [], [], [], []
    for real, n_contexts in [(v, c) for v in volumes for c in np.atleast_1d(context_counts)]:
        contexts = evenly_spaced(int(n_contexts), n_poses)
        queries = [p for p in range(n_poses) if p not in contexts]
        volume = torch.from_numpy(real).to(device)
        context_poses = torch.tensor(contexts, device=device, dtype=torch.float32)
        query_poses = torch.tensor(queries, device=device, dtype=torch.float32)
        posterior = model.posterior(volume[contexts], context_poses, query_poses)
        mean = posterior.mean_image().cpu().numpy()
        ssim.append(np.mean([slice_ssim(mean[i], real[q]) for i, q in enumerate(queries)]))
        cc.append(np.mean([slice_cc(mean[i], real[q]) for i, q in enumerate(queries)]))
        if n_contexts == SAMPLE_CHECK_CONTEXTS:
            coherence = sample_coherence(posterior, mean, real[queries], generator)
            sample_ac.append(coherence["sample_ac"])
            truth_ac.append(coherence["truth_ac"])
            sample_ssim.append(coherence["sample_ssim"])
    model.train()
    metrics = {"val_bpd": float(np.mean(bpd)), "val_ssim": float(np.mean(ssim)), "val_cc": float(np.mean(cc))}
    if sample_ac:
        metrics.update(val_sample_ac=float(np.mean(sample_ac)), val_truth_ac=float(np.mean(truth_ac)),
                       val_sample_ssim=float(np.mean(sample_ssim)))
    return metrics


SAMPLE_CHECK_CONTEXTS = 3
"""Context count at which validation draws samples to measure their coherence."""

MIN_SAMPLE_AC = 0.5
"""A checkpoint ships only if its samples' deviation from the mean has at least this lag-1
spatial autocorrelation inside the brain (real slices: about 0.8; pixel noise: about 0)."""


def sample_coherence(posterior, mean: np.ndarray, truth: np.ndarray,
                     generator: torch.Generator | None = None, n_samples: int = 2) -> dict:
    """How anatomical the samples are: lag-1 autocorrelation of (sample - mean) and of
    (truth - mean) inside the brain, and the SSIM of a sample to the truth."""
    from ..metrics import lag1_autocorrelation, slice_ssim

    samples = posterior.samples(n_samples, generator=generator).cpu().numpy()
    brain = truth > 0.05
    sample_ac = np.mean([lag1_autocorrelation(s - mean, brain) for s in samples])
    truth_ac = lag1_autocorrelation(truth - mean, brain)
    sample_ssim = np.mean([slice_ssim(s[i], truth[i]) for s in samples for i in range(len(truth))])
    return {"sample_ac": float(sample_ac), "truth_ac": float(truth_ac), "sample_ssim": float(sample_ssim)}


def selection_key(metrics: dict) -> tuple[int, float]:
    """The validation rule that picks the shipped checkpoint: among checkpoints whose samples
    are coherent (``val_sample_ac >= MIN_SAMPLE_AC``) the best mean SSIM; before any is,
    the most coherent samples. Larger is better."""
    coherent = metrics.get("val_sample_ac", 0.0) >= MIN_SAMPLE_AC
    return (1, metrics["val_ssim"]) if coherent else (0, metrics.get("val_sample_ac", 0.0))


def _lr_factor(step: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.loop.steps - config.warmup_steps)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def config_to_dict(config: TrainConfig) -> dict:
    values = dict(config.__dict__)
    values["loop"] = asdict(config.loop)
    values["bruno"] = config.bruno.to_dict()
    return values


def config_from_dict(values: dict) -> TrainConfig:
    """The inverse of :func:`config_to_dict` (records written before ``loop`` existed are flat)."""
    values = dict(values)
    values["bruno"] = BrunoConfig.from_dict(values["bruno"])
    loop = values.pop("loop", {})
    return TrainConfig.create(**loop, **values)


def train_bruno(config: TrainConfig, resume: bool = True, subjects: dict | None = None,
                progress: bool = True) -> dict:
    """Train (or continue training) BRUNO; returns the final metrics record (rank 0).

    ``subjects`` ({"train": [SubjectGrid, ...], "val": [...]}) overrides the fixed splits. With
    ``strategy="ddp_spawn"`` (or ``"ddp"`` from the command line) and ``devices > 1`` the
    same loop runs data-parallel; gradients are averaged by Fabric.
    """
    from lightning_fabric import Fabric

    if config.loop.num_threads:
        torch.set_num_threads(config.loop.num_threads)
    fabric = Fabric(accelerator=config.loop.accelerator, devices=config.devices, strategy=config.strategy)
    # plain arrays: they cross process boundaries with spawn-based DDP
    volumes = None if subjects is None else {k: [s.image for s in v] for k, v in subjects.items()}
    # a plain dict crosses process boundaries (Fabric rebuilds dataclass arguments, which a frozen one refuses)
    return fabric.launch(_train_loop, config_to_dict(config), resume, volumes, progress)


def _train_loop(fabric, values: dict, resume: bool, volumes: dict | None, progress: bool) -> dict:
    """One process's part of the training, on :func:`.loop.fit` (``values``: :func:`config_to_dict`)."""
    config = config_from_dict(values)
    spec = GridSpec(**config.bruno.grid) if config.bruno.grid else GridSpec(
        n_poses=config.bruno.flow.n_poses, size=config.bruno.flow.image_size
    )
    config.bruno.grid = spec.to_dict()
    if volumes is None:
        volumes = {split: [s.image for s in load_split(f"t1_{split}", "t1", spec)] for split in ("train", "val")}
    running: dict[str, float] = {}

    def build():
        model = Bruno(config.bruno)
        init_pose_norm(model, volumes["train"])
        fast = [p for name, p in model.named_parameters() if name.startswith(("process.", "flow.pose_norm."))]
        fast_ids = {id(p) for p in fast}
        slow = [p for p in model.parameters() if id(p) not in fast_ids]
        optimizer = torch.optim.Adam(
            [{"params": slow, "lr_factor": 1.0}, {"params": fast, "lr_factor": config.process_lr_factor}],
            lr=config.lr, weight_decay=config.weight_decay,
        )
        return model, optimizer

    def batches(start: int, fabric) -> Iterator:
        dataset = SequenceDataset(volumes["train"], length=config.sequence_length,
                                  epoch_size=config.loop.steps * config.batch_size * fabric.world_size,
                                  seed=config.loop.seed + start)
        return iter(fabric.setup_dataloaders(DataLoader(dataset, batch_size=config.batch_size, shuffle=False)))

    def step(context: StepContext, batch) -> dict[str, float]:
        images, poses = batch
        for group in context.optimizer.param_groups:
            group["lr"] = config.lr * group["lr_factor"] * _lr_factor(context.index, config)
        log_prob, prediction_mse = context.model.training_terms(dequantize(images), poses)
        bpd = context.module.bits_per_dim(log_prob).mean()  # bits/dim of every element given its predecessors
        loss = bpd + config.prediction_weight * prediction_mse
        context.optimizer.zero_grad(set_to_none=True)
        context.backward(loss)
        context.fabric.clip_gradients(context.model, context.optimizer, max_norm=config.grad_clip,
                                      error_if_nonfinite=False)
        context.optimizer.step()
        value = bpd.item()
        running["bpd"] = value if "bpd" not in running else 0.98 * running["bpd"] + 0.02 * value
        return {"bpd": value}

    def validation(model: Bruno) -> dict:
        return {**validate(model, volumes["val"], config.val_contexts, next(model.parameters()).device),
                "train_bpd": running.get("bpd")}

    record = {"config": config.bruno.to_dict(), "train_config": config_to_dict(config),
              "split": {k: SPLITS[f"t1_{k}"] for k in ("train", "val")}}
    summary = fit(config.loop, build, step, batches, validation, select=selection_key, record=record, resume=resume,
                  progress=progress, desc="train bruno", fabric=fabric, forward_methods=("training_terms",))
    return {"step": summary["step"], "history": summary["history"], "train_seconds": summary["train_seconds"],
            "best_key": summary["best"], "best_val_ssim": summary["best_metrics"].get("val_ssim")}


LATENT_LIMIT_QUANTILE = 0.9999
"""Context latents are clamped at this quantile of |z| over the validation slices."""


def latent_limit(model: Bruno, volumes: list[np.ndarray], quantile: float = LATENT_LIMIT_QUANTILE) -> float:
    """The ``quantile`` of |z| over every slice of ``volumes`` (model-grid ``(P, S, S)`` in
    [0, 1], slice index = pose), rounded up to 0.1: the clamp on context latents
    (``BrunoConfig.context_latent_limit``) that keeps an unusual context from being
    extrapolated."""
    model.eval()
    values = []
    with torch.no_grad():
        for volume in volumes:
            images = torch.from_numpy(np.asarray(volume, np.float32))
            z, _ = model.encode(images, torch.arange(len(images), dtype=torch.float32))
            values.append(z.abs().flatten().numpy())
    return math.ceil(10 * float(np.quantile(np.concatenate(values), quantile))) / 10


def export_weights(checkpoint: Path, destination: Path, command: str | None = None,
                   context_latent_limit: float | None = None) -> None:
    """Write a slim shipped-weights file (no optimiser state) from a training checkpoint;
    ``context_latent_limit`` (see :func:`latent_limit`) goes into the stored config."""
    import sys

    record = load_record(checkpoint)
    config = dict(record["config"])
    if context_latent_limit is not None:
        config["context_latent_limit"] = float(context_latent_limit)
    shipped = {
        "format": "bruno",
        "config": config,
        "state_dict": {k: v.to(torch.float32) for k, v in record["state_dict"].items()},
        "split": record["split"],
        "metrics": record["metrics"],
        "train_config": record["train_config"],
        "train_seconds": record["train_state"]["train_seconds"],
        "steps": record["train_state"]["step"],
        "command": command or "mentalmap " + " ".join(sys.argv[1:]),
    }
    destination.parent.mkdir(parents=True, exist_ok=True)
    save_record(destination, shipped)


@dataclass
class LatentMeanConfig:
    """Refit of a trained BRUNO's process after removing the per-pose latent mean (the flow is
    frozen): optimisation of the process alone on the training subjects' latents."""

    steps: int = 1500
    batch_size: int = 16
    sequence_length: int = 9
    lr: float = 0.02
    seed: int = 0
    dequantised: bool = False  # fit the latents of dequantised slices (see _training_latents)


@torch.no_grad()
def _training_latents(model: Bruno, volumes: list[np.ndarray], dequantised: bool = False,
                      seed: int = 0) -> torch.Tensor:
    """Latents of every slice of ``volumes`` and of their left-right mirror images, (2N, P, D).

    By default of the slices as inference sees them (not dequantised): the process then fits
    the latents it will condition on. ``dequantised`` fits the training objective's latents
    instead (a sound bits/dim, but a worse validation mean: see docs/results/bruno.md)."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for volume in [*volumes, *(np.ascontiguousarray(v[:, :, ::-1]) for v in volumes)]:
        images = torch.from_numpy(np.asarray(volume, np.float32))
        if dequantised:
            images = dequantize(images, generator)
        out.append(model.encode(images, torch.arange(len(images), dtype=torch.float32))[0])
    return torch.stack(out)


def fit_pose_latent_mean(model: Bruno, volumes: list[np.ndarray], config: LatentMeanConfig | None = None,
                         progress: bool = True) -> Bruno:
    """A copy of ``model`` whose latents have the training subjects' per-pose mean removed
    (``BrunoConfig.pose_latent_mean``) and whose process is refitted to them by the
    chain-rule likelihood of sequences of one subject's slices; the flow is unchanged.

    ``volumes``: the training subjects on the model grid, (P, S, S) in [0, 1]."""
    import copy

    from tqdm.auto import tqdm

    from ..models.tprocess import make_process

    config = config or LatentMeanConfig()
    base = copy.deepcopy(model).eval()
    if base.config.pose_latent_mean:  # start from the flow's own latents
        base.pose_latent_mean.zero_()
    latents = _training_latents(base, volumes, config.dequantised, config.seed)
    pose_mean = latents.mean(0)
    centred = latents - pose_mean
    bruno_config = BrunoConfig.from_dict({**base.config.to_dict(), "pose_latent_mean": True})
    fitted = Bruno(bruno_config)
    state = {k: v for k, v in base.state_dict().items() if not k.startswith(("process.", "pose_latent_mean"))}
    fitted.load_state_dict(state, strict=False)
    with torch.no_grad():
        fitted.pose_latent_mean.copy_(pose_mean)
    c = bruno_config
    process = make_process(c.process, fitted.flow.dim, fitted.n_poses, c.student_t, c.kernel, c.kernel_components)
    with torch.no_grad():
        process.prior_mean.copy_(centred.mean((0, 1)))
    optimizer = torch.optim.Adam(process.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    n_subjects, n_poses, dim = centred.shape
    for step in tqdm(range(config.steps), desc="fit latent process", disable=not progress):
        for group in optimizer.param_groups:  # cosine decay to 5 %
            group["lr"] = config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / config.steps)))
        subjects = torch.randint(n_subjects, (config.batch_size,), generator=generator)
        poses = torch.stack([torch.randperm(n_poses, generator=generator)[: config.sequence_length]
                             for _ in range(config.batch_size)])
        loss = -process.log_prob(centred[subjects[:, None], poses], poses.float()).mean() / dim
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    fitted.process.load_state_dict(process.state_dict())
    return fitted.eval()
