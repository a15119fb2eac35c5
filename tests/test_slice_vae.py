"""Slice VAE: shapes, latent volume models, sampling, realism score (tiny configs, no data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_mentalmap.io.preprocess import GridSpec
from napari_mentalmap.models.slice_vae import (
    CoherentPPCA,
    PerSliceGaussian,
    SliceVAE,
    SliceVAEConfig,
    TissueSegNet,
    vae_loss,
)

TINY = SliceVAEConfig(size=16, latent_dim=4, channels=(4, 8, 8))


def test_encode_decode_shapes():
    model = SliceVAE(TINY)
    x = torch.rand(3, 1, 16, 16)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (3, 4)
    out = model.decode(mu)
    assert out.shape == (3, 1, 16, 16)
    assert float(out.detach().min()) >= 0 and float(out.detach().max()) <= 1
    logits, mu, logvar = model(x[:, 0])
    loss, recon, kl = vae_loss(logits, x[:, 0], mu, logvar)
    assert torch.isfinite(loss) and float(kl) >= 0
    loss.backward()


def test_bad_size_rejected():
    with pytest.raises(ValueError):
        SliceVAE(SliceVAEConfig(size=18, latent_dim=4, channels=(4, 8, 8)))


def test_per_slice_gaussian_recovers_mean_and_covariance():
    generator = torch.Generator().manual_seed(0)
    p, d, n = 3, 4, 20_000
    mean = torch.randn(p, d, generator=generator)
    a = torch.randn(p, d, d, generator=generator)
    cov = a @ a.transpose(1, 2) + 0.5 * torch.eye(d)
    factor = torch.linalg.cholesky(cov)
    latents = mean + torch.einsum("pde,npe->npd", factor, torch.randn(n, p, d, generator=generator))
    fitted = PerSliceGaussian.fit(latents, shrinkage=0.0, eps=0.0)
    assert torch.allclose(fitted.mean.float(), mean, atol=0.1)
    assert torch.allclose(fitted.cov.float(), cov, rtol=0.1, atol=0.15)
    samples = fitted.sample(20_000, generator=generator)
    assert samples.shape == (20_000, p, d)
    assert torch.allclose(samples.mean(0), mean, atol=0.1)
    # positions are independent under this model
    cross = ((samples[:, 0] - samples[:, 0].mean(0)).T @ (samples[:, 1] - samples[:, 1].mean(0))) / len(samples)
    assert cross.abs().max() < 0.2
    directions, stds = fitted.principal_directions(0, 2)
    assert directions.shape == (2, d) and stds[0] >= stds[1]


def test_ppca_sampling_covariance_matches_model():
    generator = torch.Generator().manual_seed(1)
    p, d, q = 4, 3, 2
    weight = torch.randn(p * d, q, generator=generator).double()
    model = CoherentPPCA(torch.zeros(p * d), weight, 0.05, (p, d))
    samples = model.sample(40_000, generator=generator).reshape(40_000, -1).double()
    empirical = torch.cov(samples.T)
    assert torch.allclose(empirical, model.covariance(), atol=0.12)
    # the fit on data from the model recovers the covariance (up to sampling error)
    refit = CoherentPPCA.fit(samples.reshape(-1, p, d), rank=q)
    assert torch.allclose(refit.covariance(), model.covariance(), atol=0.12)
    assert abs(refit.sigma2 - 0.05) < 0.02
    state = CoherentPPCA.from_state_dict(refit.state_dict())
    assert state.shape == (p, d) and state.rank == q


def test_ppca_couples_neighbouring_positions():
    # a shared factor across positions -> strongly correlated sampled positions
    generator = torch.Generator().manual_seed(2)
    n, p, d = 15, 6, 2
    shared = torch.randn(n, 1, d, generator=generator)
    latents = shared + 0.05 * torch.randn(n, p, d, generator=generator)
    ppca = CoherentPPCA.fit(latents, rank=3)
    per_slice = PerSliceGaussian.fit(latents)
    a = ppca.sample(4000, generator=generator)
    b = per_slice.sample(4000, generator=generator)
    corr_ppca = np.corrcoef(a[:, 0, 0], a[:, 1, 0])[0, 1]
    corr_slice = np.corrcoef(b[:, 0, 0], b[:, 1, 0])[0, 1]
    assert corr_ppca > 0.8 and abs(corr_slice) < 0.1


def test_realism_score_identical_is_one():
    from napari_mentalmap.evaluation.slice_vae import realism_score

    rng = np.random.default_rng(0)
    references = rng.integers(0, 4, size=(3, 5, 8, 8)).astype(np.uint8)
    score, per_class, best = realism_score(references[1], references)
    assert score == pytest.approx(1.0)
    assert best == 1
    assert all(v == pytest.approx(1.0) for v in per_class)
    other, _, _ = realism_score(rng.integers(0, 4, size=(5, 8, 8)).astype(np.uint8), references)
    assert other < 0.6


def test_neighbour_ssim_smooth_vs_noise():
    from napari_mentalmap.evaluation.slice_vae import neighbour_ssim

    base = np.zeros((6, 32, 32), np.float32)
    base[:, 8:24, 8:24] = 0.8
    noisy = np.random.default_rng(0).uniform(0, 1, size=(6, 32, 32)).astype(np.float32)
    assert neighbour_ssim(base) == pytest.approx(1.0, abs=1e-6)
    assert neighbour_ssim(noisy) < 0.2


def test_segnet_shapes():
    net = TissueSegNet(width=4)
    assert net(torch.rand(2, 1, 16, 16)).shape == (2, 4, 16, 16)


def write_tiny_weights(path):
    """Save a tiny untrained slice VAE with fitted latent models, as the training writes it."""
    from napari_mentalmap.data.subjects import SubjectGrid
    from napari_mentalmap.training.slice_vae import (
        SliceVAETrainConfig,
        encode_volumes,
        fit_latent_models,
    )

    torch.manual_seed(0)
    spec = GridSpec(n_poses=5, size=16)
    model = SliceVAE(TINY)
    rng = np.random.default_rng(0)
    subjects = [SubjectGrid(f"s{i}", rng.uniform(0, 1, (5, 16, 16)).astype(np.float32), None, None) for i in range(6)]
    models = fit_latent_models(model, subjects, SliceVAETrainConfig(ppca_rank=3))
    assert encode_volumes(model, np.stack([s.image for s in subjects])).shape == (6, 5, 4)
    torch.save({"model": model.state_dict(), "model_config": TINY.to_dict(), "spec": spec.to_dict(),
                "metrics": {"grid_mm": [2.0, 3.0, 3.0]}, "split": {}, "command": "test", "train_config": {},
                **models}, path)
    return path


@pytest.fixture()
def tiny_bundle(tmp_path):
    from napari_mentalmap.inference.latent import load_slice_vae

    return load_slice_vae(write_tiny_weights(tmp_path / "tiny.pt"), device="cpu")


def test_inference_generators(tiny_bundle):
    from napari_mentalmap.inference import latent

    bundle = tiny_bundle
    for name in latent.LATENT_MODEL_NAMES:
        job = latent.sample_volume(bundle, n=2, model=name, seed=0)
        progress = []
        while True:
            try:
                progress.append(next(job))
            except StopIteration as stop:
                volumes = stop.value
                break
        assert volumes.shape == (2, 5, 16, 16)
        assert progress[-1][0] == progress[-1][1] == 2
    z = latent.encode(bundle, np.zeros((16, 16), np.float32))
    assert z.shape == (4,)
    assert latent.decode(bundle, z).shape == (16, 16)
    assert latent.run(latent.encode_volume(bundle, np.zeros((5, 16, 16), np.float32), chunk=2)).shape == (5, 4)
    directions, stds = latent.principal_directions(bundle, 2, k=3)
    assert directions.shape == (3, 4) and stds.shape == (3,)
    moved = latent.walk(z, directions, stds, np.array([1.0, 0, 0]))
    assert np.allclose(moved - z, stds[0] * directions[0], atol=1e-5)
    assert np.allclose(latent.interpolate(z, moved, 0.5), (z + moved) / 2, atol=1e-6)
    for strategy in latent.STRATEGIES:
        assert latent.strategy_latents(bundle, strategy, 2, 3, seed=0).shape == (3, 4)
    embedding = latent.latent_embedding(bundle)
    assert embedding.points.shape == (30, 2)
    assert embedding.nearest(tuple(embedding.points[7])) == 7
    with pytest.raises(ValueError):
        latent.encode(bundle, np.zeros((3, 8, 8), np.float32))
    with pytest.raises(ValueError):
        bundle.latent_model("bogus")


def test_missing_weights_message(tmp_path):
    from napari_mentalmap.inference.latent import load_slice_vae

    with pytest.raises(FileNotFoundError, match="mentalmap train slicevae"):
        load_slice_vae(tmp_path / "nope.pt")


def test_prepare_volume_resizes_slice():
    from napari_mentalmap.inference.latent import prepare_volume

    prepared = prepare_volume(np.random.default_rng(0).uniform(0, 100, (40, 50)), spec=GridSpec(n_poses=5, size=16))
    assert prepared.grid.shape == (1, 16, 16) and "resized" in prepared.note


def test_results_table_csv_and_figure(tmp_path):
    from napari_mentalmap.evaluation.slice_vae import ROWS, RowResult, markdown_table, write_results

    rows = [RowResult(key, label, 2, 0.5, 0.1, [0.4, 0.5, 0.6], 0.9, 0.01) for key, label in ROWS]
    examples = {key: np.random.default_rng(0).uniform(0, 1, (6, 16, 16)).astype(np.float32) for key, _ in ROWS}
    paths = write_results(rows, examples, {"recon_mse": 0.01}, tmp_path)
    assert all(path.exists() for path in paths.values())
    assert markdown_table(rows).count("\n") == len(ROWS) + 1
    assert "realism" in paths["csv"].read_text().splitlines()[0]


def test_command_parsers():
    import argparse

    from napari_mentalmap.evaluation.slicevae_commands import add_slicevae_parser as add_eval
    from napari_mentalmap.training.slicevae_commands import add_slicevae_parser as add_train

    for add, argv in ((add_train, ["slicevae", "--part", "segnet", "--epochs", "2"]),
                      (add_eval, ["slicevae", "--n-samples", "3"])):
        parser = argparse.ArgumentParser()
        add(parser.add_subparsers())
        args = parser.parse_args(argv)
        assert callable(args.func)


def test_tiny_training_of_vae_and_segnet_resumes_and_writes_loadable_weights(tmp_path) -> None:
    """One epoch on two NiChart subjects, then a second epoch that continues the first; the
    written weights load as the explorer's bundle and the segmentation net."""
    from napari_mentalmap.inference.latent import load_slice_vae
    from napari_mentalmap.training.slice_vae import (
        SliceVAETrainConfig,
        train_segnet,
        train_slice_vae,
    )

    config = SliceVAETrainConfig(epochs=1, seg_epochs=1, batch_size=64, latent_dim=4, channels=(4, 4, 8, 8),
                                 ppca_rank=1, seg_width=4, subjects_limit=2)
    first = train_slice_vae(config, tmp_path / "runs", tmp_path / "vae.pt", command="test", progress=False)
    assert first["step"] == 1 and np.isfinite(first["val_mse"])
    config.epochs = 2
    second = train_slice_vae(config, tmp_path / "runs", tmp_path / "vae.pt", command="test", progress=False)
    assert second["step"] == 2  # continued from the first run's last.pt
    bundle = load_slice_vae(tmp_path / "vae.pt", device="cpu")
    assert bundle.latent_dim == 4 and bundle.info["command"] == "test"
    metrics = train_segnet(config, tmp_path / "runs", tmp_path / "segnet.pt", command="test", progress=False)
    assert 0.0 <= metrics["val_dice"] <= 1.0 and (tmp_path / "segnet.pt").exists()
