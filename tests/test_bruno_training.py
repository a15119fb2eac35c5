"""BRUNO training loop: data-parallel (DDP, gloo, 2 CPU processes) and resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_mentalmap.data.subjects import SubjectGrid
from napari_mentalmap.inference.mental_map import evenly_spaced
from napari_mentalmap.io.preprocess import GridMapping
from napari_mentalmap.models.bruno import Bruno, BrunoConfig
from napari_mentalmap.models.flows import FlowConfig
from napari_mentalmap.training.bruno import TrainConfig, train_bruno


def _subjects(n: int, seed: int) -> list[SubjectGrid]:
    """Smooth synthetic 'brains' on an 8-pose 16x16 grid: a blob whose size varies with pose."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(-1, 1, 16), np.linspace(-1, 1, 16), indexing="ij")
    subjects = []
    for index in range(n):
        radius = 0.5 + 0.1 * rng.standard_normal()
        poses = []
        for pose in range(8):
            r = radius * (1 - ((pose - 3.5) / 6) ** 2)
            poses.append(np.clip(1.2 - np.sqrt(xx**2 + yy**2) / r, 0, 1) * (0.8 + 0.1 * rng.random()))
        image = np.stack(poses).astype(np.float32)
        mapping = GridMapping((8, 16, 16), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (8, 16, 16))
        subjects.append(SubjectGrid(f"synthetic{index}", image, image > 0, mapping))
    return subjects


def _config(tmp_path, steps: int, **overrides) -> TrainConfig:
    flow = FlowConfig(image_size=16, n_poses=8, n_scales=2, couplings_per_stage=1, final_couplings=1, width=8,
                      res_blocks=1)
    bruno = BrunoConfig(flow=flow, grid={"n_poses": 8, "size": 16, "coverage": 0.75, "margin": 0.06})
    values = dict(out_dir=str(tmp_path / "run"), steps=steps, batch_size=2, lr=3e-3, warmup_steps=2,
                  val_every=steps, checkpoint_every=5, num_threads=1, accelerator="cpu", val_contexts=(2,),
                  bruno=bruno)
    values.update(overrides)
    return TrainConfig.create(**values)


def test_ddp_training_on_two_cpu_processes_reduces_the_loss(tmp_path):
    subjects = {"train": _subjects(6, 0), "val": _subjects(2, 1)}
    config = _config(tmp_path, steps=40, devices=2, strategy="ddp_spawn")
    result = train_bruno(config, resume=False, subjects=subjects, progress=False)
    losses = np.array([entry["bpd"] for entry in result["history"]])
    assert len(losses) == 40 and np.isfinite(losses).all()
    assert losses[-8:].mean() < losses[:8].mean() - 0.05
    model, record = Bruno.load(tmp_path / "run" / "best.pt")
    assert record["split"]["train"][0] == "Subj1" and "val_bpd" in record["metrics"]


def test_training_resumes_from_its_last_checkpoint(tmp_path):
    subjects = {"train": _subjects(4, 0), "val": _subjects(2, 1)}
    first = train_bruno(_config(tmp_path, steps=10), resume=False, subjects=subjects, progress=False)
    assert first["step"] == 10
    second = train_bruno(_config(tmp_path, steps=15), resume=True, subjects=subjects, progress=False)
    assert second["step"] == 15 and len(second["history"]) == 15
    record = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert record["train_state"]["step"] == 15


@pytest.mark.parametrize("count, n_poses, expected", [(1, 48, [24]), (3, 48, [8, 24, 40]), (0, 48, []),
                                                       (5, 4, [0, 1, 2, 3])])
def test_evenly_spaced_contexts(count, n_poses, expected):
    assert evenly_spaced(count, n_poses) == expected


def test_train_config_dict_round_trip_and_flat_records(tmp_path):
    from dataclasses import asdict

    from napari_mentalmap.training.bruno import config_from_dict, config_to_dict

    config = _config(tmp_path, steps=7, max_minutes=3.0)
    assert config.loop.steps == 7 and config.loop.max_minutes == 3.0 and config.batch_size == 2
    assert config_from_dict(config_to_dict(config)) == config
    flat = config_to_dict(config)  # records written before the loop was nested held its fields flat
    flat.update(flat.pop("loop"))
    assert config_from_dict(flat) == config
    assert asdict(config_from_dict(flat).loop)["out_dir"] == str(tmp_path / "run")


def test_export_stores_the_validation_latent_limit(tmp_path):
    from napari_mentalmap.training.bruno import export_weights, latent_limit

    subjects = {"train": _subjects(4, 0), "val": _subjects(2, 1)}
    train_bruno(_config(tmp_path, steps=6), resume=False, subjects=subjects, progress=False)
    model, _ = Bruno.load(tmp_path / "run" / "best.pt")
    volumes = [s.image for s in subjects["val"]]
    limit = latent_limit(model, volumes)
    with torch.no_grad():
        z = torch.cat([model.encode(torch.from_numpy(v), torch.arange(8, dtype=torch.float32))[0] for v in volumes])
    # the 99.99th percentile, rounded up: at most one value in 10 000 (or one value) above it
    assert float((z.abs() > limit).float().mean()) <= 1e-4 + 1.0 / z.numel()
    assert limit - 0.1 <= float(z.abs().max()) + 1e-6
    assert latent_limit(model, volumes, quantile=0.5) < limit
    export_weights(tmp_path / "run" / "best.pt", tmp_path / "bruno.pt", command="test", context_latent_limit=limit)
    shipped, record = Bruno.load(tmp_path / "bruno.pt")
    assert shipped.config.context_latent_limit == limit and record["command"] == "test"
    export_weights(tmp_path / "run" / "best.pt", tmp_path / "plain.pt", command="test")
    assert Bruno.load(tmp_path / "plain.pt")[0].config.context_latent_limit is None


def test_pose_latent_mean_refit_centres_the_latents_and_keeps_the_flow(tmp_path):
    from napari_mentalmap.training.bruno import (
        LatentMeanConfig,
        _training_latents,
        fit_pose_latent_mean,
    )

    torch.manual_seed(0)
    model = Bruno(_config(tmp_path, steps=1).bruno)
    volumes = [s.image for s in _subjects(4, 0)]
    before = [p.clone() for p in model.process.parameters()]
    fitted = fit_pose_latent_mean(model, volumes, LatentMeanConfig(steps=5, batch_size=2), progress=False)
    assert fitted.config.pose_latent_mean and not model.config.pose_latent_mean
    for name, value in model.flow.state_dict().items():
        assert torch.equal(value, fitted.flow.state_dict()[name]), name
    assert any(not torch.equal(a, b) for a, b in zip(before, fitted.process.parameters(), strict=True))
    # every pose's latents average to zero over the training volumes and their
    # mirror images, which they did not before
    assert _training_latents(fitted, volumes).mean(0).abs().max() < 1e-4
    assert _training_latents(model, volumes).mean(0).abs().max() > 1e-2
    # a second refit starts from the flow's own latents, not from the first refit's
    again = fit_pose_latent_mean(fitted, volumes, LatentMeanConfig(steps=1, batch_size=2), progress=False)
    assert torch.allclose(again.pose_latent_mean, fitted.pose_latent_mean, atol=1e-6)
    # saved and loaded, it decodes what it encodes, at fractional poses too
    fitted.save(tmp_path / "fitted.pt")
    loaded, _ = Bruno.load(tmp_path / "fitted.pt")
    images = torch.from_numpy(volumes[0][[1, 4, 6]])
    at = torch.tensor([1.0, 3.5, 6.25])
    with torch.no_grad():
        z, logdet = loaded.encode(images, at)
        _, flow_logdet = loaded.flow(images.unsqueeze(1), at)
        assert torch.allclose(loaded.decode(z, at), images, atol=1e-4)
        assert torch.equal(logdet, flow_logdet)  # a shift: log-determinant 0
        half = loaded.latent_shift(torch.tensor([3.5]))[0]
        assert torch.allclose(half, (loaded.pose_latent_mean[3] + loaded.pose_latent_mean[4]) / 2)
