"""The paper's mental-map protocol, with honest baselines.

For each held-out subject on the model grid and each number of contexts (evenly spread
over the stack), every pose is queried; SSIM and CC against the real slice are averaged
over slices, then over subjects. Scores are reported on the non-context poses (what the
model has to invent) and on all poses (context poses included, as in the paper where the
contexts are part of the generated stack).

Rows: BRUNO mean image (flow inverse of the posterior-mean latent), BRUNO average of
samples, one BRUNO sample, and the baselines linear interpolation between the nearest
contexts (constant beyond the outermost), nearest context slice, and the population mean
slice per pose (average of the training subjects).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.subjects import SubjectGrid
from ..inference.mental_map import evenly_spaced
from ..metrics import slice_cc, slice_ssim
from ..models.bruno import Bruno

CONTEXT_COUNTS = (1, 3, 5, 9)


def linear_interpolation(volume: np.ndarray, contexts: list[int]) -> np.ndarray:
    """Every pose linearly interpolated between its two nearest contexts (constant outside)."""
    n_poses = volume.shape[0]
    out = np.empty_like(volume)
    for pose in range(n_poses):
        below = [c for c in contexts if c <= pose]
        above = [c for c in contexts if c >= pose]
        if not below:
            out[pose] = volume[above[0]]
        elif not above:
            out[pose] = volume[below[-1]]
        else:
            low, high = below[-1], above[0]
            weight = 0.0 if high == low else (pose - low) / (high - low)
            out[pose] = (1 - weight) * volume[low] + weight * volume[high]
    return out


def nearest_context(volume: np.ndarray, contexts: list[int]) -> np.ndarray:
    """Every pose replaced by the closest context slice (ties: the lower one)."""
    nearest = [min(contexts, key=lambda c: (abs(c - pose), c)) for pose in range(volume.shape[0])]
    return volume[nearest]


@dataclass
class Row:
    dataset: str
    method: str
    n_contexts: int
    poses: str  # "non-context" or "all"
    ssim: float
    cc: float
    ssim_per_pose: list[float]


def _scores(generated: np.ndarray, real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ssim = np.array([slice_ssim(g, r) for g, r in zip(generated, real, strict=True)])
    cc = np.array([slice_cc(g, r) for g, r in zip(generated, real, strict=True)])
    return ssim, cc


Sampler = Callable[[np.ndarray, list[int], int, int], tuple[np.ndarray, np.ndarray]]
"""(volume, contexts, n_samples, seed) -> (mean (P, S, S), samples (N, P, S, S)) on the model grid."""


def bruno_sampler(model: Bruno, device: torch.device) -> Sampler:
    """BRUNO's posterior mean image and samples at every pose (no contexts: the prior)."""

    def sample(volume: np.ndarray, contexts: list[int], n_samples: int, seed: int):
        poses = torch.arange(model.n_poses, dtype=torch.float32, device=device)
        with torch.inference_mode():
            posterior = model.posterior(torch.from_numpy(volume[contexts]).to(device),
                                        torch.tensor(contexts, dtype=torch.float32, device=device), poses)
            generator = torch.Generator(device=device).manual_seed(seed)
            return (posterior.mean_image().cpu().numpy(),
                    posterior.samples(n_samples, generator=generator).cpu().numpy())

    return sample


def cvae_sampler(model, device: torch.device) -> Sampler:
    """The C-VAE's mean image (prior-mean latent) and samples at every pose."""

    def sample(volume: np.ndarray, contexts: list[int], n_samples: int, seed: int):
        poses = torch.arange(volume.shape[0], dtype=torch.float32, device=device)
        generator = torch.Generator(device=device).manual_seed(seed)
        mean, samples = model.predict(torch.from_numpy(volume[contexts]).to(device),
                                      torch.tensor(contexts, dtype=torch.float32, device=device), poses,
                                      n_samples, generator)
        return mean.cpu().numpy(), samples.cpu().numpy()

    return sample


def sampler_predictors(sampler: Sampler, n_samples: int, seed: int, label: str) -> dict[str, Callable]:
    """Predictors (volume, contexts) -> generated volume: mean, average of samples, one sample."""
    cache: dict = {}  # the rows of one model reuse one posterior per volume and context set

    def outputs(volume: np.ndarray, contexts: list[int]):
        key = (hash(volume.tobytes()), tuple(contexts))
        if key not in cache:
            cache[key] = sampler(volume, contexts, n_samples, seed)
        return cache[key]

    return {
        f"{label} mean (latent mean)": lambda v, c: outputs(v, c)[0],
        f"{label} mean ({n_samples} samples)": lambda v, c: outputs(v, c)[1].mean(0),
        f"{label} single sample": lambda v, c: outputs(v, c)[1][0],
    }


def bruno_predictors(model: Bruno, n_samples: int, seed: int, device: torch.device,
                     label: str = "BRUNO") -> dict[str, Callable]:
    """Predictors (volume, contexts) -> generated volume for the BRUNO rows."""
    return sampler_predictors(bruno_sampler(model, device), n_samples, seed, label)


def evaluate(
    predictors: dict[str, Callable[[np.ndarray, list[int]], np.ndarray]],
    subjects: list[SubjectGrid],
    dataset: str,
    context_counts=CONTEXT_COUNTS,
    keep_contexts: bool = True,
    progress: bool = True,
) -> list[Row]:
    """Score each predictor on each subject and context count (model grid, [0, 1])."""
    from tqdm.auto import tqdm

    rows = []
    bar = tqdm(total=len(predictors) * len(context_counts) * len(subjects), desc=f"eval {dataset}",
               disable=not progress, leave=False)
    for method, predict in predictors.items():
        for count in context_counts:
            per_subject = {"non-context": [], "all": []}
            for subject in subjects:
                real = subject.image
                contexts = evenly_spaced(count, real.shape[0])
                generated = np.asarray(predict(real, contexts), dtype=np.float32).copy()
                if keep_contexts:
                    generated[contexts] = real[contexts]
                ssim, cc = _scores(generated, real)
                queries = [p for p in range(real.shape[0]) if p not in contexts]
                per_subject["non-context"].append((ssim[queries].mean(), cc[queries].mean(),
                                                   np.where(np.isin(np.arange(len(ssim)), contexts), np.nan, ssim)))
                per_subject["all"].append((ssim.mean(), cc.mean(), ssim))
                bar.update(1)
            for poses, values in per_subject.items():
                rows.append(Row(dataset, method, count, poses,
                                float(np.mean([v[0] for v in values])), float(np.mean([v[1] for v in values])),
                                np.nanmean(np.stack([v[2] for v in values]), 0).tolist()))
    bar.close()
    return rows


def baseline_predictors(population_mean: np.ndarray) -> dict[str, Callable]:
    return {
        "linear interpolation": linear_interpolation,
        "nearest context": nearest_context,
        "population mean": lambda volume, contexts: population_mean,
    }


def markdown_table(rows: list[Row], poses: str = "non-context") -> str:
    """Rows = methods, columns = SSIM and CC per context count, per data set."""
    lines = []
    datasets = list(dict.fromkeys(r.dataset for r in rows if r.ssim_per_pose))  # rows read back have none
    counts = sorted({r.n_contexts for r in rows})
    for dataset in datasets:
        subset = [r for r in rows if r.dataset == dataset and r.poses == poses]
        if not subset:
            continue
        methods = list(dict.fromkeys(r.method for r in subset))
        lines.append(f"**{dataset}** — {poses} poses; SSIM / CC for {', '.join(map(str, counts))} contexts")
        lines.append("")
        header = "| method | " + " | ".join(f"SSIM {c}" for c in counts) + " | " + " | ".join(f"CC {c}" for c in counts) + " |"
        lines.append(header)
        lines.append("|" + "---|" * (1 + 2 * len(counts)))
        for method in methods:
            by_count = {r.n_contexts: r for r in subset if r.method == method}
            best_ssim = {c: max(r.ssim for r in subset if r.n_contexts == c) for c in counts}
            best_cc = {c: max(r.cc for r in subset if r.n_contexts == c) for c in counts}

            def cell(value: float, best: float) -> str:
                return f"**{value:.3f}**" if abs(value - best) < 5e-4 else f"{value:.3f}"

            lines.append(
                f"| {method} | "
                + " | ".join(cell(by_count[c].ssim, best_ssim[c]) for c in counts)
                + " | "
                + " | ".join(cell(by_count[c].cc, best_cc[c]) for c in counts)
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def save_results(rows: list[Row], out_dir: Path) -> None:
    """CSV of every row and a figure of SSIM per pose (as the paper's Figure 3c)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "bruno_eval.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dataset", "method", "n_contexts", "poses", "ssim", "cc"])
        for r in rows:
            writer.writerow([r.dataset, r.method, r.n_contexts, r.poses, f"{r.ssim:.4f}", f"{r.cc:.4f}"])
    datasets = list(dict.fromkeys(r.dataset for r in rows if r.ssim_per_pose))  # rows read back have none
    counts = sorted({r.n_contexts for r in rows})
    for dataset in datasets:
        fig, axes = plt.subplots(1, len(counts), figsize=(4 * len(counts), 3.4), sharey=True)
        for ax, count in zip(np.atleast_1d(axes), counts, strict=True):
            for r in rows:
                if r.dataset == dataset and r.n_contexts == count and r.poses == "all" and "sample" not in r.method:
                    ax.plot(r.ssim_per_pose, label=r.method)
            ax.set_title(f"{count} contexts")
            ax.set_xlabel("pose (inferior → superior)")
        np.atleast_1d(axes)[0].set_ylabel("SSIM")
        np.atleast_1d(axes)[-1].legend(fontsize=7)
        fig.suptitle(f"SSIM per pose — {dataset}")
        fig.tight_layout()
        fig.savefig(out_dir / f"ssim_per_pose_{dataset.replace('/', '-')}.png", dpi=110)
        plt.close(fig)


INTENSITY_SCALINGS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "as shipped": lambda v: v,
    "x 0.01 (float, tiny)": lambda v: v * 0.01,
    "x 40 + 1000 (offset)": lambda v: v * 40 + 1000,
    "gamma 0.5 (other contrast)": lambda v: np.power(np.clip(v, 0, None) / max(v.max(), 1e-6), 0.5) * 1000,
    "gamma 2 (other contrast)": lambda v: np.power(np.clip(v, 0, None) / max(v.max(), 1e-6), 2.0) * 1000,
}
"""Intensity scalings a T1 from another pipeline or scanner may come with (saturation checks)."""


def _spread_contexts(prior, count: int) -> list[int]:
    """``count`` input slices evenly spaced over those the model grid of ``prior`` (a
    :class:`MentalMap`) covers."""
    start, stop = prior.mapping.covered_slices()
    return sorted({int(round(v)) for v in np.linspace(start, stop, count)})


def _brain(prior, intensity_range: tuple[float, float]) -> np.ndarray:
    """The brain as the dock would show it: where the prior mean is above 5 % of the range."""
    low, high = intensity_range
    return (prior.mean_grid - low) / max(high - low, 1e-6) > 0.05


def mean_saturation(data: np.ndarray, spacing: tuple[float, float, float], counts=(3, 9),
                    weights: str | Path | None = None) -> dict[int, tuple[float, float]]:
    """Per context count: (overall, worst pose) fraction of the brain's model-grid pixels where
    the BRUNO mean sits at the top of the intensity range (:func:`metrics.saturated_fractions`).

    Contexts are evenly spaced over the slices the model grid covers; the brain is where the
    prior mean (no contexts) is above 5 % of the range, as the dock would show it.
    """
    from ..inference.jobs import run_to_completion
    from ..inference.mental_map import hallucinate
    from ..metrics import saturated_fractions

    prior = run_to_completion(hallucinate(data, spacing, [], weights=weights, device="cpu"))
    found = {}
    for count in counts:
        result = run_to_completion(hallucinate(data, spacing, _spread_contexts(prior, count), weights=weights,
                                               device="cpu"))
        found[count] = saturated_fractions(result.mean_grid, _brain(prior, result.intensity_range),
                                           result.intensity_range)
    return found


def shipped_sample_coherence(weights: str | Path | None = None, n_samples: int = 8, n_contexts: int = 5) -> float:
    """Mean lag-1 autocorrelation of (sample − sample average) on the model grid, over the
    non-context poses of the shipped sample T1 with ``n_contexts`` evenly spaced contexts,
    inside the brain (as in :func:`mean_saturation`)."""
    from .._sample_data import SAMPLE_T1
    from ..inference.jobs import run_to_completion
    from ..inference.mental_map import hallucinate
    from ..io.nifti import read_volume
    from ..metrics import lag1_autocorrelation

    volume = read_volume(SAMPLE_T1)
    data, spacing = np.asarray(volume.data, np.float32), tuple(volume.spacing)
    prior = run_to_completion(hallucinate(data, spacing, [], weights=weights, device="cpu"))
    result = run_to_completion(hallucinate(data, spacing, _spread_contexts(prior, n_contexts), n_samples=n_samples,
                                           weights=weights, device="cpu"))
    context_poses = set(np.round(result.context_poses).astype(int).tolist())
    queries = [p for p in range(result.mean_grid.shape[0]) if p not in context_poses]
    brain = _brain(prior, result.intensity_range)[queries]
    samples = np.asarray(result.samples_grid)[:, queries]
    average = samples.mean(axis=0)
    return float(np.mean([lag1_autocorrelation(s - average, brain) for s in samples]))
