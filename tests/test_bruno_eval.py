"""Sample metrics, the C-VAE baseline, the training skeleton and BRUNO's selection rule."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_mentalmap.evaluation.bruno_samples import radial_power_spectrum, spectrum_distance
from napari_mentalmap.metrics import lag1_autocorrelation
from napari_mentalmap.models.cvae import ConditionalVAE, CVAEConfig
from napari_mentalmap.training.bruno import MIN_SAMPLE_AC, selection_key


def _smooth(rng, shape, sigma=2.0):
    return ndimage.gaussian_filter(rng.standard_normal(shape), sigma)


def test_lag1_autocorrelation_tells_noise_from_anatomy() -> None:
    rng = np.random.default_rng(0)
    assert abs(lag1_autocorrelation(rng.standard_normal((64, 64)))) < 0.05
    assert lag1_autocorrelation(_smooth(rng, (64, 64))) > 0.8
    assert lag1_autocorrelation(np.ones((8, 8))) == 0.0
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    stacked = np.stack([_smooth(rng, (64, 64)), _smooth(rng, (64, 64))])
    assert lag1_autocorrelation(stacked, mask) > 0.8  # a mask broadcast over a stack


def test_spectrum_distance_fails_pixel_noise() -> None:
    rng = np.random.default_rng(1)
    real = np.stack([_smooth(rng, (32, 32)) for _ in range(4)])
    similar = np.stack([_smooth(rng, (32, 32)) for _ in range(4)])
    noise = rng.standard_normal((4, 32, 32))
    assert spectrum_distance(real, real) == 0.0
    assert spectrum_distance(similar, real) < 0.5 * spectrum_distance(noise, real)
    assert radial_power_spectrum(real[0]).shape == (16,)


def test_selection_rule_weighs_samples() -> None:
    coherent = {"val_ssim": 0.65, "val_sample_ac": MIN_SAMPLE_AC + 0.1}
    noisy_but_sharp = {"val_ssim": 0.70, "val_sample_ac": 0.05}
    better_coherent = {"val_ssim": 0.68, "val_sample_ac": 0.7}
    assert selection_key(coherent) > selection_key(noisy_but_sharp)
    assert selection_key(better_coherent) > selection_key(coherent)
    assert selection_key({"val_ssim": 0.6, "val_sample_ac": 0.3}) > selection_key(noisy_but_sharp)


def test_cvae_shapes_and_loss() -> None:
    torch.manual_seed(0)
    model = ConditionalVAE(CVAEConfig(image_size=16, n_poses=8, width=4, features=16, latent=4))
    images = torch.rand(2, 6, 16, 16)
    poses = torch.tensor([[0, 2, 4, 6, 1, 3], [1, 3, 5, 7, 0, 2]], dtype=torch.float32)
    loss, reconstruction, kl = model.loss(images[:, :4], poses[:, :4], images[:, 4:], poses[:, 4:])
    assert torch.isfinite(loss) and float(kl.detach()) >= 0 and float(reconstruction.detach()) > 0
    loss.backward()
    mean, samples = model.predict(images[0, :2], poses[0, :2], torch.arange(8.0), n_samples=3)
    assert mean.shape == (8, 16, 16) and samples.shape == (3, 8, 16, 16)
    assert 0 <= float(mean.min()) and float(mean.max()) <= 1
    with pytest.raises(ValueError, match="at least one context"):
        model.predict(images[0, :0], poses[0, :0], torch.arange(8.0))


def test_cvae_training_resumes_on_the_skeleton(tmp_path) -> None:
    from napari_mentalmap.checkpoints import load_record
    from napari_mentalmap.training.cvae import train_cvae

    rng = np.random.default_rng(0)
    volumes = {"train": [rng.random((8, 16, 16), dtype=np.float32) for _ in range(2)],
               "val": [rng.random((8, 16, 16), dtype=np.float32)]}
    config = CVAEConfig(image_size=16, n_poses=8, width=4, features=16, latent=4)
    first = train_cvae(str(tmp_path), 3, batch_size=2, config=config, volumes=volumes, progress=False)
    assert first["step"] == 3 and (tmp_path / "best.pt").exists()
    again = train_cvae(str(tmp_path), 5, batch_size=2, config=config, volumes=volumes, progress=False)
    assert again["step"] == 5
    record = load_record(tmp_path / "last.pt", "cvae")
    assert record["train_state"]["step"] == 5 and len(record["train_state"]["history"]) == 5
    assert json.loads((tmp_path / "run.json").read_text())["step"] == 5
    assert len((tmp_path / "val_log.jsonl").read_text().splitlines()) == 2  # at the end of each run


def test_shipped_samples_are_anatomies_not_noise_on_the_shipped_sample() -> None:
    from napari_mentalmap.evaluation.bruno import shipped_sample_coherence

    # issue #16: lag-1 autocorrelation of (sample - sample average) >= 0.6 (pixel noise: about 0)
    assert shipped_sample_coherence(n_samples=4) >= 0.6
