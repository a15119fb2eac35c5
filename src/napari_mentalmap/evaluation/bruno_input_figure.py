"""One figure per source on the input's own grid: what a user sees in the dock.

Rows: 3 and 9 contexts. Columns: the truth, the default mean, its std, two refined
samples, linear interpolation, BRUNO alone; all at a non-context axial slice half-way
between two contexts (the hardest place), plus a sagittal cut through the middle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..inference.mental_map import (
    evenly_spaced,
    hallucinate,
    load_bruno,
    on_input_grid,
    run_to_completion,
)
from ..io.preprocess import GridSpec, plan_grid
from .bruno import linear_interpolation


def input_grid_figure(data: np.ndarray, spacing, mask: np.ndarray, title: str, path: Path,
                      weights=None, counts=(3, 9), n_samples: int = 8) -> Path:
    """Write the figure for one volume (canonical, axis 0 axial) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model, _ = load_bruno(weights, "cpu")
    mapping = plan_grid(mask, spacing, GridSpec(**model.config.grid))
    columns = ("truth", "default mean", "std", "sample 1", "sample 2", "linear interpolation", "BRUNO alone")
    fig, axes = plt.subplots(2 * len(counts), len(columns), figsize=(2.2 * len(columns), 4.6 * len(counts)))
    for row, count in enumerate(counts):
        contexts = sorted({mapping.pose_to_slice(p) for p in evenly_spaced(count, mapping.grid_shape[0])})
        result = run_to_completion(hallucinate(data, spacing, contexts, n_samples=n_samples, device="cpu",
                                               weights=weights, mask=mask))
        shown = on_input_grid(result, data, keep_contexts=True)
        alone = on_input_grid(result, data, keep_contexts=True, refine=False).mean
        first, last = result.mapping.covered_slices()
        bounds = [first, *contexts, last]
        gaps = [(b - a, (a + b) // 2) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        query = max(gaps)[1]
        samples = shown.samples if shown.samples is not None else np.stack([shown.mean, shown.mean])
        volumes = (data, shown.mean, shown.std, samples[0], samples[1], linear_interpolation(data, contexts), alone)
        low, high = np.percentile(data[mask], [0.5, 99.5])
        middle = data.shape[2] // 2
        for column, (name, volume) in enumerate(zip(columns, volumes, strict=True)):
            limits = (0, max(shown.std_top, 1e-6)) if name == "std" else (low, high)
            colour = plt.get_cmap("inferno" if name == "std" else "gray").with_extremes(bad="black")  # NaN: not modelled
            for offset, image in ((0, volume[query]), (1, volume[:, :, middle])):
                ax = axes[2 * row + offset, column]
                ax.imshow(image, cmap=colour, vmin=limits[0], vmax=limits[1], origin="lower" if offset else "upper",
                          aspect=spacing[0] / spacing[1] if offset else spacing[1] / spacing[2])
                ax.set_xticks([])
                ax.set_yticks([])
                if offset:
                    for context in contexts:
                        ax.axhline(context, color="c", lw=0.4)
                    ax.axhline(query, color="y", lw=0.6, ls="--")
            axes[2 * row, column].set_title(name if row == 0 else "", fontsize=9)
        axes[2 * row, 0].set_ylabel(f"{count} contexts\naxial {query}", fontsize=9)
        axes[2 * row + 1, 0].set_ylabel("sagittal\n(contexts cyan)", fontsize=9)
    fig.suptitle(f"{title}: the input grid ({' x '.join(f'{s:g}' for s in spacing)} mm)", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
