"""Validation experiment (#16): does an orthogonal PCA rotation of the flow's latents (with a
per-pose latent mean removed first) under the Student-t process improve the mean image?

The shipped flow is frozen; its latents of the training subjects (and their mirror images)
are computed once. A pose-aware process is then fitted to sequences of those latents, either
as they are ("refit") or rotated into their principal axes ("pca"), and the validation
subjects' mean images are scored at 1/3/5/9 evenly spaced contexts (model grid, non-context
poses), next to the shipped model. Nothing here is shipped.

    MENTALMAP_CACHE=/work/cache .venv/bin/python scripts/bruno_latent_pca.py --steps 1500
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from napari_mentalmap.data.subjects import load_split
from napari_mentalmap.inference.mental_map import evenly_spaced, load_bruno
from napari_mentalmap.io.preprocess import GridSpec
from napari_mentalmap.metrics import lag1_autocorrelation, slice_cc, slice_ssim
from napari_mentalmap.models.tprocess import make_process
from napari_mentalmap.training.bruno import _training_latents


class LatentMap:
    """z -> (z - pose_mean[p]) @ basis, and back."""

    def __init__(self, pose_mean: torch.Tensor | None, basis: torch.Tensor | None):
        self.pose_mean = pose_mean
        self.basis = basis

    def forward(self, z: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        if self.pose_mean is not None:
            z = z - self.pose_mean[poses.long()]
        return z if self.basis is None else z @ self.basis

    def inverse(self, w: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        z = w if self.basis is None else w @ self.basis.T
        return z if self.pose_mean is None else z + self.pose_mean[poses.long()]


def fit_process(model, latents: torch.Tensor, steps: int, seed: int = 0, lr: float = 0.02, batch: int = 16):
    """A fresh pose-aware process (the shipped kernel) fitted by the chain-rule likelihood."""
    config = model.config
    process = make_process(config.process, latents.shape[-1], model.n_poses, config.student_t,
                           config.kernel, config.kernel_components)
    with torch.no_grad():
        process.prior_mean.copy_(latents.mean((0, 1)))
    optimizer = torch.optim.Adam(process.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    n, p, d = latents.shape
    for step in range(steps):
        subjects = torch.randint(n, (batch,), generator=generator)
        poses = torch.stack([torch.randperm(p, generator=generator)[:9] for _ in range(batch)])
        z = latents[subjects[:, None], poses]
        loss = -process.log_prob(z, poses.float()).mean() / d
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 250 == 0 or step == steps - 1:
            print(f"  step {step} nll/dim {loss.item():.4f}", flush=True)
    process.eval()
    return process


@torch.no_grad()
def score(model, process, latent_map: LatentMap | None, volumes, counts, generator) -> dict:
    results = {}
    limit = model.config.context_latent_limit
    for count in counts:
        ssim, cc, ac = [], [], []
        for real in volumes:
            contexts = evenly_spaced(count, model.n_poses)
            queries = [q for q in range(model.n_poses) if q not in contexts]
            cp = torch.tensor(contexts, dtype=torch.float32)
            qp = torch.tensor(queries, dtype=torch.float32)
            z, _ = model.encode(torch.from_numpy(real[contexts]), cp)
            if limit is not None:
                z = z.clamp(-limit, limit)
            mapped = z if latent_map is None else latent_map.forward(z, cp)
            posterior = process.posterior(mapped, cp, qp)

            def to_z(w: torch.Tensor, qp: torch.Tensor = qp) -> torch.Tensor:
                return w if latent_map is None else latent_map.inverse(w, qp)

            mean = model.decode(to_z(posterior.mean), qp).numpy()
            ssim.append(np.mean([slice_ssim(mean[i], real[q]) for i, q in enumerate(queries)]))
            cc.append(np.mean([slice_cc(mean[i], real[q]) for i, q in enumerate(queries)]))
            if count == 3:
                sample = model.decode(to_z(posterior.sample(1, 1.0, generator)[0]), qp).numpy()
                brain = real[queries] > 0.05
                ac.append(lag1_autocorrelation(sample - mean, brain))
        results[count] = (float(np.mean(ssim)), float(np.mean(cc)), float(np.mean(ac)) if ac else None)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--variants", nargs="+", default=["shipped", "refit", "posemean", "pca"])
    parser.add_argument("--save", default=None, help="save the fitted pca map + process here (torch.save)")
    # variants: shipped (as is), refit (process refitted on frozen latents), posemean (per-pose
    # latent mean removed, process refitted), posemean_shipped_process (removed, shipped process),
    # pca (removed and rotated to principal axes, process refitted)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, _ = load_bruno(args.weights)
    spec = GridSpec(**model.config.grid)
    start = time.time()
    train = [s.image for s in load_split("t1_train", "t1", spec)]
    val = [s.image for s in load_split("t1_val", "t1", spec)]
    latents = _training_latents(model, train)  # the training volumes and their mirror images
    print(f"encoded {tuple(latents.shape)} in {time.time() - start:.0f} s", flush=True)
    poses = torch.arange(model.n_poses)
    pose_mean = latents.mean(0)  # (P, D)
    counts = (1, 3, 5, 9)
    table = {}
    for variant in args.variants:
        t0 = time.time()
        generator = torch.Generator().manual_seed(0)
        if variant == "shipped":
            table[variant] = score(model, model.process, None, val, counts, generator)
        else:
            latent_map = None
            if variant in ("posemean", "pca"):
                latent_map = LatentMap(pose_mean, None)
            if variant == "pca":
                centred = (latents - pose_mean).reshape(-1, latents.shape[-1]).double()
                covariance = centred.T @ centred / len(centred)
                _, vectors = torch.linalg.eigh(covariance)
                latent_map = LatentMap(pose_mean, vectors.flip(-1).float())
            mapped = latents if latent_map is None else torch.stack(
                [latent_map.forward(z, poses) for z in latents])
            if variant == "posemean_shipped_process":
                latent_map = LatentMap(pose_mean, None)
                process = copy.deepcopy(model.process)
                with torch.no_grad():
                    process.prior_mean.zero_()
            else:
                process = fit_process(model, mapped, args.steps)
            table[variant] = score(model, process, latent_map, val, counts, generator)
            if args.save and variant == "pca":
                torch.save({"pose_mean": pose_mean, "basis": latent_map.basis,
                            "process": process.state_dict()}, args.save)
        print(variant, f"{time.time() - t0:.0f} s", table[variant], flush=True)
    print("\n| variant | " + " | ".join(f"{c} ctx SSIM / CC" for c in counts) + " | sample autocorr. (3 ctx) |")
    print("|---|" + "---|" * (len(counts) + 1))
    for variant, row in table.items():
        cells = " | ".join(f"{row[c][0]:.3f} / {row[c][1]:.3f}" for c in counts)
        print(f"| {variant} | {cells} | {row[3][2]:.3f} |")


if __name__ == "__main__":
    main()
