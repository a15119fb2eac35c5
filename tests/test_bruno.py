"""Conditional BRUNO: flow exactness, process maths against brute force, inference job,
bad inputs and a DDP training run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_mentalmap.inference.mental_map import hallucinate, run_to_completion
from napari_mentalmap.io.preprocess import NoBrainError
from napari_mentalmap.models.bruno import Bruno, BrunoConfig
from napari_mentalmap.models.flows import (
    ChannelCoupling,
    CheckerboardCoupling,
    ConditionalRealNVP,
    FlowConfig,
    PoseNorm,
    pose_features,
    squeeze,
    unsqueeze,
)
from napari_mentalmap.models.tprocess import ExchangeableProcess, PoseAwareProcess

TINY_FLOW = FlowConfig(image_size=8, n_poses=6, n_scales=2, couplings_per_stage=2, final_couplings=2,
                       width=8, res_blocks=1)


def _perturb(module: torch.nn.Module, scale: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """Move parameters off their (identity-like) initialisation so tests are not trivial."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return module


def tiny_bruno(process: str = "pose_aware", student_t: bool = True, size: int = 16, n_poses: int = 8) -> Bruno:
    flow = FlowConfig(image_size=size, n_poses=n_poses, n_scales=2, couplings_per_stage=1, final_couplings=1,
                      width=8, res_blocks=1)
    grid = {"n_poses": n_poses, "size": size, "coverage": 0.75, "margin": 0.06}
    return Bruno(BrunoConfig(flow=flow, process=process, student_t=student_t, grid=grid))


@pytest.mark.parametrize(
    "layer, channels, size",
    [
        (CheckerboardCoupling(1, 0, 8, 1, 6), 1, 8),
        (CheckerboardCoupling(2, 1, 8, 1, 6), 2, 8),
        (ChannelCoupling(4, False, 8, 1, 6), 4, 4),
        (ChannelCoupling(4, True, 8, 1, 6), 4, 4),
    ],
)
def test_every_coupling_is_exactly_invertible(layer, channels, size):
    layer = _perturb(layer.double())
    x = torch.randn(3, channels, size, size, dtype=torch.float64)
    pose = pose_features(torch.tensor([0.0, 2.5, 5.0]), 6, "onehot").double()
    y, logdet_forward = layer(x, pose)
    x_back, logdet_inverse = layer.inverse(y, pose)
    assert torch.allclose(x, x_back, atol=1e-10)
    assert torch.allclose(logdet_forward + logdet_inverse, torch.zeros(3, dtype=torch.float64), atol=1e-10)
    assert not torch.allclose(x, y)


@pytest.mark.parametrize("min_scale", [None, 0.3])
def test_pose_norm_and_squeeze_are_invertible(min_scale):
    layer = _perturb(PoseNorm(6, 8, min_scale).double())
    if min_scale is not None:
        layer.set_log_scale(torch.full((6, 1, 8, 8), -5.0, dtype=torch.float64))
        assert (layer.effective_log_scale() >= math.log(min_scale)).all()
        layer.set_log_scale(torch.full((6, 1, 8, 8), 0.5, dtype=torch.float64))
        assert torch.allclose(layer.effective_log_scale(), torch.tensor(0.5, dtype=torch.float64), atol=1e-6)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    poses = torch.tensor([1.0, 4.3], dtype=torch.float64)
    y, ld = layer(x, poses)
    x_back, ld_inv = layer.inverse(y, poses)
    assert torch.allclose(x, x_back, atol=1e-12) and torch.allclose(ld + ld_inv, torch.zeros_like(ld))
    assert torch.equal(unsqueeze(squeeze(x)), x)


@pytest.mark.parametrize("encoding", ["onehot", "continuous"])
def test_flow_round_trip_and_logdet_against_autograd(encoding):
    config = FlowConfig(**{**TINY_FLOW.to_dict(), "pose_encoding": encoding})
    flow = _perturb(ConditionalRealNVP(config).double(), 0.05)
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64) * 0.9 + 0.05
    poses = torch.tensor([0.0, 2.0, 5.0])
    z, logdet = flow(x, poses)
    assert z.shape == (3, 64)
    assert torch.allclose(flow.inverse(z, poses), x, atol=1e-4)
    jacobian = torch.autograd.functional.jacobian(lambda t: flow(t.view(1, 1, 8, 8), poses[1:2])[0].view(-1),
                                                  x[1].reshape(-1))
    assert math.isclose(logdet[1].item(), torch.linalg.slogdet(jacobian)[1].item(), rel_tol=1e-6, abs_tol=1e-6)


def _brute_force_joint_t(process, z: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
    """log density of the whole sequence as one multivariate Student-t per dimension."""
    covariance = process.covariance(poses)
    total = torch.zeros((), dtype=z.dtype)
    n = len(poses)
    for d in range(z.shape[1]):
        nu = process.dof[d]
        shape = covariance[d] * (nu - 2) / nu
        residual = z[:, d] - process.prior_mean[d]
        quadratic = residual @ torch.linalg.solve(shape, residual)
        total = total + (torch.lgamma((nu + n) / 2) - torch.lgamma(nu / 2) - n / 2 * torch.log(nu * math.pi)
                         - 0.5 * torch.logdet(shape) - (nu + n) / 2 * torch.log1p(quadratic / nu))
    return total


@pytest.mark.parametrize("process", [ExchangeableProcess(3), PoseAwareProcess(3, 10)])
def test_process_chain_rule_equals_joint_student_t(process):
    process = _perturb(process.double(), 0.3)
    z = torch.randn(5, 3, dtype=torch.float64)
    poses = torch.tensor([1.0, 7.0, 3.0, 9.0, 0.0], dtype=torch.float64)
    chain = process.log_prob(z[None], poses[None]).sum()
    assert torch.allclose(chain, _brute_force_joint_t(process, z, poses), atol=1e-8)


@pytest.mark.parametrize("process", [ExchangeableProcess(3), PoseAwareProcess(3, 10)])
def test_posterior_matches_brute_force_conditional(process):
    process = _perturb(process.double(), 0.3)
    z = torch.randn(4, 3, dtype=torch.float64)
    context_poses = torch.tensor([1.0, 7.0, 3.0], dtype=torch.float64)
    query = torch.tensor([5.0], dtype=torch.float64)
    posterior = process.posterior(z[:3], context_poses, query)
    all_poses = torch.cat([context_poses, query])
    covariance = process.covariance(all_poses)  # all four as distinct elements
    for d in range(3):
        k = covariance[d]
        k_cc, k_cq, k_qq = k[:3, :3], k[:3, 3], k[3, 3]
        residual = z[:3, d] - process.prior_mean[d]
        mean = process.prior_mean[d] + k_cq @ torch.linalg.solve(k_cc, residual)
        beta = residual @ torch.linalg.solve(k_cc, residual)
        nu = process.dof[d]
        variance = (k_qq - k_cq @ torch.linalg.solve(k_cc, k_cq)) * (nu + beta - 2) / (nu + 3 - 2)
        assert torch.allclose(posterior.mean[0, d], mean, atol=1e-8)
        assert torch.allclose(posterior.variance[0, d], variance, rtol=1e-3)


def test_exchangeable_recurrent_update_equals_batch_posterior():
    process = _perturb(ExchangeableProcess(4).double(), 0.3)
    z = torch.randn(5, 4, dtype=torch.float64)
    state = None
    for element in z:
        state = process.update(state, element)
    mean, variance = process.predictive(state)
    posterior = process.posterior(z, torch.arange(5.0, dtype=torch.float64), torch.tensor([7.0], dtype=torch.float64))
    assert torch.allclose(mean, posterior.mean[0], atol=1e-10)
    assert torch.allclose(variance, posterior.variance[0], rtol=1e-3)


@pytest.mark.parametrize("process", ["exchangeable", "pose_aware"])
def test_context_order_does_not_change_the_posterior(process):
    model = _perturb(tiny_bruno(process), 0.02)
    images = torch.rand(4, 16, 16)
    poses = torch.tensor([0.0, 3.0, 5.0, 7.0])
    query = torch.arange(8.0)
    order = torch.tensor([2, 0, 3, 1])
    first = model.posterior(images, poses, query)
    second = model.posterior(images[order], poses[order], query)
    assert torch.allclose(first.latent.mean, second.latent.mean, atol=1e-5)
    assert torch.allclose(first.latent.variance, second.latent.variance, atol=1e-5)


def test_gaussian_variant_matches_multivariate_normal():
    process = _perturb(PoseAwareProcess(2, 8, student_t=False).double(), 0.3)
    z = torch.randn(4, 2, dtype=torch.float64)
    poses = torch.tensor([0.0, 2.0, 5.0, 7.0], dtype=torch.float64)
    covariance = process.covariance(poses)
    expected = sum(
        torch.distributions.MultivariateNormal(process.prior_mean[d].expand(4), covariance[d]).log_prob(z[:, d])
        for d in range(2)
    )
    assert torch.allclose(process.log_prob(z[None], poses[None]).sum(), expected, atol=1e-8)


def test_pose_aware_nearby_context_counts_more():
    process = PoseAwareProcess(1, 48)
    z = torch.tensor([[1.0], [-1.0]])
    posterior = process.posterior(z, torch.tensor([10.0, 40.0]), torch.tensor([11.0, 39.0]))
    assert posterior.mean[0, 0] > 0.3 and posterior.mean[1, 0] < -0.3
    assert posterior.variance[0, 0] < process.covariance(torch.tensor([0.0]))[0, 0, 0]


def test_shapes_dtypes_and_seeded_samples_are_deterministic():
    model = _perturb(tiny_bruno(), 0.02)
    images = torch.rand(2, 16, 16)
    posterior = model.posterior(images, torch.tensor([1.0, 6.0]), torch.arange(8.0))
    mean = posterior.mean_image()
    assert mean.shape == (8, 16, 16) and mean.dtype == torch.float32
    assert 0.0 <= mean.min() and mean.max() <= 1.0
    a = posterior.samples(3, generator=torch.Generator().manual_seed(7))
    b = posterior.samples(3, generator=torch.Generator().manual_seed(7))
    c = posterior.samples(3, generator=torch.Generator().manual_seed(8))
    assert a.shape == (3, 8, 16, 16) and torch.equal(a, b) and not torch.equal(a, c)
    log_prob = model.log_prob(torch.rand(2, 3, 16, 16), torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 7.0]]))
    assert log_prob.shape == (2, 3) and torch.isfinite(log_prob).all()


def test_model_rejects_poses_out_of_range_and_wrong_size():
    model = tiny_bruno()
    with pytest.raises(ValueError, match="poses must lie"):
        model.posterior(torch.rand(1, 16, 16), torch.tensor([9.0]), torch.arange(8.0))
    with pytest.raises(ValueError, match="poses must lie"):
        model.posterior(torch.rand(1, 16, 16), torch.tensor([1.0]), torch.tensor([-1.0]))
    with pytest.raises(ValueError, match="16x16"):
        model.posterior(torch.rand(1, 32, 32), torch.tensor([1.0]), torch.arange(8.0))


def _synthetic_head(shape=(40, 48, 44)) -> np.ndarray:
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    radius = np.sqrt((zz / 0.8) ** 2 + (yy / 0.85) ** 2 + (xx / 0.75) ** 2)
    volume = np.where(radius < 1, 100 + 50 * np.cos(6 * yy) * np.sin(4 * zz), 0).astype(np.float32)
    return volume


@pytest.fixture
def tiny_weights(tmp_path):
    path = tmp_path / "tiny_bruno.pt"
    _perturb(tiny_bruno(), 0.02).save(path)
    return path


def test_hallucinate_on_synthetic_volume(tiny_weights):
    volume = _synthetic_head()
    job = hallucinate(volume, (2.0, 2.0, 2.0), [14, 20, 26], n_samples=3, seed=1, device="cpu",
                      weights=tiny_weights)
    progress = []
    while True:
        try:
            progress.append(next(job))
        except StopIteration as stop:
            result = stop.value
            break
    assert progress[-1][0] == progress[-1][1]  # the last progress step is the total
    assert result.mean_grid.shape == (8, 16, 16) and result.samples_grid.shape == (3, 8, 16, 16)
    assert result.std_grid.shape == (8, 16, 16) and (result.std_grid >= 0).all()
    on_input = result.to_input_grid(result.mean_grid, acquired=volume)
    assert on_input.shape == volume.shape
    assert np.array_equal(on_input[20], volume[20])  # acquired slices kept exactly
    again = run_to_completion(hallucinate(volume, (2.0, 2.0, 2.0), [14, 20, 26], n_samples=3, seed=1,
                                          device="cpu", weights=tiny_weights))
    assert np.array_equal(again.samples_grid, result.samples_grid)


def test_hallucinate_without_contexts_gives_prior_samples(tiny_weights):
    result = run_to_completion(hallucinate(_synthetic_head(), (2.0, 2.0, 2.0), [], n_samples=2,
                                           device="cpu", weights=tiny_weights))
    assert result.context_slices == [] and result.samples_grid.shape[0] == 2
    assert result.std_grid.max() > 0


@pytest.mark.parametrize(
    "contexts, message",
    [([100], "outside the volume"), ([-1], "outside the volume"), ([1], "outside the brain range"),
     ([20, 20], "repeat")],
)
def test_hallucinate_rejects_bad_contexts(tiny_weights, contexts, message):
    with pytest.raises(ValueError, match=message):
        run_to_completion(hallucinate(_synthetic_head(), (2.0, 2.0, 2.0), contexts, device="cpu",
                                      weights=tiny_weights))


def test_hallucinate_rejects_volume_without_brain_and_2d_input(tiny_weights):
    with pytest.raises(NoBrainError):
        run_to_completion(hallucinate(np.zeros((30, 30, 30), np.float32), (1.0, 1.0, 1.0), [], device="cpu",
                                      weights=tiny_weights))
    with pytest.raises(ValueError, match="3-D"):
        run_to_completion(hallucinate(np.zeros((30, 30), np.float32), (1.0, 1.0, 1.0), [], device="cpu",
                                      weights=tiny_weights))


def test_missing_weights_name_the_training_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="mentalmap train bruno"):
        run_to_completion(hallucinate(_synthetic_head(), (2.0, 2.0, 2.0), [], device="cpu",
                                      weights=tmp_path / "absent.pt"))


def test_prediction_errors_are_the_residuals_of_the_posterior_mean():
    process = _perturb(PoseAwareProcess(3, 10, kernel="matern32", components=2).double(), 0.3)
    z = torch.randn(1, 4, 3, dtype=torch.float64)
    poses = torch.tensor([[1.0, 7.0, 3.0, 5.0]], dtype=torch.float64)
    errors = process.prediction_errors(z, poses)  # (1, D, n)
    posterior = process.posterior(z[0, :3], poses[0, :3], poses[0, 3:])
    assert torch.allclose(errors[0, :, 3], z[0, 3] - posterior.mean[0], atol=1e-8)


def test_training_terms_do_not_push_prediction_error_into_the_flow():
    model = _perturb(tiny_bruno(), 0.02)
    images, poses = torch.rand(2, 3, 16, 16), torch.tensor([[0.0, 2.0, 4.0], [1.0, 5.0, 7.0]])
    log_prob, prediction_mse = model.training_terms(images, poses)
    assert torch.allclose(log_prob, model.log_prob(images, poses))
    prediction_mse.backward()
    assert all(p.grad is None or not p.grad.any() for p in model.flow.parameters())
    assert model.process.raw_length.grad.abs().sum() > 0


def test_context_images_are_the_model_grid_poses_they_coincide_with():
    """A context slice lying exactly on a pose of the model grid is that pose of the resampled
    volume (same anti-aliasing, computed once for all contexts)."""
    from napari_mentalmap.inference.mental_map import context_slice_images
    from napari_mentalmap.io.preprocess import (
        GridMapping,
        GridSpec,
        resample_to_grid,
        to_model_grid,
    )

    rng = np.random.default_rng(0)
    volume = rng.random((90, 100, 80)).astype(np.float32)
    mask = np.zeros(volume.shape, bool)
    mask[10:80, 10:90, 10:70] = True
    prepared = to_model_grid(volume, (1.0, 1.0, 1.0), mask, GridSpec(n_poses=16, size=32))
    planned = prepared.mapping
    # the same grid shifted so that poses land on whole input slices
    mapping = GridMapping(planned.input_shape, (20.0, *planned.start[1:]), (3.0, *planned.step[1:]),
                          planned.grid_shape)
    grid = resample_to_grid(prepared.normalised, mapping)
    images = context_slice_images(prepared.normalised, mapping, [20, 29, 53])
    np.testing.assert_allclose(images, grid[[0, 3, 11]], atol=1e-6)


@pytest.mark.parametrize("process", ["exchangeable", "pose_aware"])
def test_posterior_in_blocks_of_dimensions_equals_one_go(process):
    """The job computes the posterior in blocks of latent dimensions (Cancel in between):
    same mean, covariance factor, dof and Student-t factor as in one go."""
    torch.manual_seed(0)
    model = tiny_bruno(process, n_poses=12).eval()
    with torch.no_grad():
        for parameter in model.process.parameters():  # distinct values per dimension
            parameter.add_(0.3 * torch.randn_like(parameter))
    images, poses, query = torch.rand(3, 16, 16), torch.tensor([1.0, 5.0, 9.0]), torch.arange(12.0)
    whole = model.posterior(images, poses, query).latent
    steps = model.posterior_steps(images, poses, query, blocks=5)
    done = []
    while True:
        try:
            done.append(next(steps))
        except StopIteration as stop:
            blocks = stop.value.latent
            break
    assert done == [1, 2, 3, 4, 5]
    for name in ("mean", "cov_factor", "dof", "variance_factor"):
        torch.testing.assert_close(getattr(blocks, name), getattr(whole, name))


def test_input_grid_in_slabs_equals_one_go():
    from napari_mentalmap.io.preprocess import GridSpec, resample_from_grid, to_model_grid

    rng = np.random.default_rng(3)
    volume = rng.random((50, 60, 40)).astype(np.float32)
    mask = np.zeros(volume.shape, bool)
    mask[5:45, 8:52, 5:35] = True
    mapping = to_model_grid(volume, (1.2, 1.0, 1.0), mask, GridSpec(n_poses=12, size=16)).mapping
    grid = rng.random(mapping.grid_shape).astype(np.float32)
    whole = resample_from_grid(grid, mapping, fill_value=-1.0)
    slabs = np.concatenate([resample_from_grid(grid, mapping, fill_value=-1.0, rows=slice(a, b))
                            for a, b in ((0, 7), (7, 30), (30, 50))])
    np.testing.assert_allclose(slabs, whole, atol=1e-6)
    assert (whole == -1.0).any() and (whole != -1.0).any()  # both inside and outside the grid
