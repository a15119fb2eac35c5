"""One figure per data source: truth, mean, std, three samples and interpolation at 3 contexts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.subjects import SubjectGrid
from ..inference.mental_map import evenly_spaced
from .bruno import Sampler, linear_interpolation


def source_figure(sampler: Sampler, subject: SubjectGrid, label: str, path: Path, n_contexts: int = 3,
                  n_rows: int = 3, seed: int = 0) -> Path:
    """Rows: non-context poses between the contexts; columns: truth, BRUNO mean, std of 16
    samples, three samples, linear interpolation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth = subject.image
    contexts = evenly_spaced(n_contexts, len(truth))
    mean, samples = sampler(truth, contexts, 16, seed)
    interpolation = linear_interpolation(truth, contexts)
    gaps = [(a + b) // 2 for a, b in zip(contexts[:-1], contexts[1:], strict=True)] or [len(truth) // 2]
    others = [p for p in range(len(truth)) if p not in contexts and p not in gaps]
    poses = sorted((gaps + others[len(others) // 2 :: max(1, len(others) // 4)])[:n_rows])
    columns = [("truth", truth), ("BRUNO mean", mean), ("std (16 samples)", samples.std(0)),
               ("sample 1", samples[0]), ("sample 2", samples[1]), ("sample 3", samples[2]),
               ("linear interpolation", interpolation)]
    fig, axes = plt.subplots(len(poses), len(columns), figsize=(1.9 * len(columns), 2.0 * len(poses)),
                             squeeze=False)
    std_top = float(np.percentile(samples.std(0), 99.5)) or 1.0
    for row, pose in enumerate(poses):
        for column, (name, volume) in enumerate(columns):
            axis = axes[row, column]
            is_std = name.startswith("std")
            axis.imshow(volume[pose], cmap="inferno" if is_std else "gray", vmin=0, vmax=std_top if is_std else 1)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(name, fontsize=8)
            if column == 0:
                axis.set_ylabel(f"pose {pose}", fontsize=8)
    fig.suptitle(f"{label}: {subject.subject}, {n_contexts} contexts at poses {contexts}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
