"""BRUNO speed and memory on this CPU; prints a Markdown table.

    .venv/bin/python benchmarks/bruno_bench.py [--weights PATH] [--threads 2] [--volume PATH]

Times (best of ``--repeats``) on the real open_ms patient07 T1 at 1 mm (182x218x182), 5
evenly spaced contexts: the posterior mean volume, and 16 posterior samples of the whole
volume; each both for the model alone (model grid) and for the whole job the dock runs
(``hallucinate``: brain mask, normalisation, grid resampling, model; then ``on_input_grid``:
the mean, the 16 samples and the std on the input grid, refined with the acquired slices).
Peak memory is the process's resident-set growth (``ru_maxrss``) over the run; the same job
on the T1 padded to 256^3 runs in a fresh process for its peak. Goals: mean <= 3 s,
16 samples <= 10 s, peak <= 4 GiB.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import torch

from napari_mentalmap.inference.mental_map import (
    evenly_spaced,
    hallucinate,
    load_bruno,
    on_input_grid,
    run_to_completion,
)
from napari_mentalmap.io.nifti import read_volume

REPO = Path(__file__).resolve().parents[1]
OPEN_MS_T1 = (REPO / ".." / "shared" / "data" / "open_ms" / "patient07" / "T1.nii.gz").resolve()


def best_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


FRESH = """
import sys, time, torch
torch.set_num_threads({threads})
from napari_mentalmap.inference.mental_map import hallucinate, run_to_completion
from napari_mentalmap.io.nifti import read_volume
volume = read_volume({volume!r})
def mean():
    start = time.perf_counter()
    run_to_completion(hallucinate(volume.data, volume.spacing, {contexts!r}, weights={weights!r}, device="cpu"))
    return time.perf_counter() - start
first = mean()
print(first, min(mean() for _ in range(2)))
"""


BIG = """
import resource, numpy as np, torch
torch.set_num_threads({threads})
from napari_mentalmap.inference.mental_map import hallucinate, on_input_grid, run_to_completion
from napari_mentalmap.io.nifti import read_volume
data = read_volume({volume!r}).data.astype(np.float32)
big = np.zeros((256, 256, 256), np.float32)
offset = [(256 - n) // 2 for n in data.shape]
big[offset[0]:offset[0] + data.shape[0], offset[1]:offset[1] + data.shape[1], offset[2]:offset[2] + data.shape[2]] = data
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = run_to_completion(hallucinate(big, (1.0, 1.0, 1.0), [c + offset[0] for c in {contexts!r}], n_samples=16,
                                       weights={weights!r}, device="cpu"))
on_input_grid(result, big, keep_contexts=True)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def peak_on_256(args: argparse.Namespace, contexts: list[int]) -> float:
    """Peak resident memory (MB) of the dock's mean + 16 samples job on the T1 padded to 256^3."""
    import subprocess
    import sys

    code = BIG.format(threads=args.threads, volume=args.volume, contexts=contexts, weights=args.weights)
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split()[-1])


def first_and_warm_mean(args: argparse.Namespace, contexts: list[int]) -> tuple[float, float]:
    """(first, warm) seconds of the whole mean job in a new Python process (imports excluded:
    the docks import torch and the model in a background thread when they open)."""
    import subprocess
    import sys

    code = FRESH.format(threads=args.threads, volume=args.volume, contexts=contexts, weights=args.weights)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    first, warm = (float(v) for v in out.split()[-2:])
    return first, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--volume", default=str(OPEN_MS_T1))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model, _ = load_bruno(args.weights, "cpu")
    volume = read_volume(args.volume)
    n_poses = model.n_poses

    # the job on the real volume: the contexts are input slices at evenly spaced poses
    probe = run_to_completion(hallucinate(volume.data, volume.spacing, [], weights=args.weights, device="cpu"))
    contexts = [probe.mapping.pose_to_slice(p) for p in evenly_spaced(5, n_poses)]

    def job(samples: int):
        def run() -> None:
            result = run_to_completion(hallucinate(volume.data, volume.spacing, contexts, n_samples=samples,
                                                   weights=args.weights, device="cpu"))
            on_input_grid(result, volume.data, keep_contexts=True)
        return run

    grid = torch.rand(5, model.image_size, model.image_size)
    context_poses = torch.tensor(evenly_spaced(5, n_poses), dtype=torch.float32)
    query = torch.arange(n_poses, dtype=torch.float32)

    def model_mean():
        with torch.inference_mode():
            model.posterior(grid, context_poses, query).mean_image()

    def model_samples():
        with torch.inference_mode():
            model.posterior(grid, context_poses, query).samples(16, generator=torch.Generator().manual_seed(0))

    rows = [
        ("posterior mean volume, model only", best_time(model_mean, args.repeats), 3.0),
        ("16 samples of a volume, model only", best_time(model_samples, args.repeats), 10.0),
        ("mean volume, whole job on the 1 mm T1", best_time(job(0), args.repeats), 3.0),
        ("mean + 16 samples, whole job on the 1 mm T1", best_time(job(16), args.repeats), 10.0),
    ]
    first, warm = first_and_warm_mean(args, contexts)
    rows.append(("first mean in a fresh process (weights + brain-mask model load, first run)", first, 2 * warm))
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"BRUNO on CPU, {torch.get_num_threads()} threads, {n_poses} poses x {model.image_size}^2, "
          f"volume {volume.data.shape}, 5 contexts\n")
    print("| task | time (s) | goal (s) | met |  (the last goal is 2 x the warm job in that process)")
    print("|---|---|---|---|")
    for name, seconds, goal in rows:
        print(f"| {name} | {seconds:.2f} | {goal:.0f} | {'yes' if seconds <= goal else 'no'} |")
    print(f"\npeak resident memory growth: {rss_peak - rss_before:.0f} MB "
          f"(input float32 volume: {volume.data.astype(np.float32).nbytes / 2**20:.0f} MB)")
    peak = peak_on_256(args, contexts)
    print(f"peak resident memory, mean + 16 samples on a 256^3 volume (fresh process): {peak:.0f} MB "
          f"(goal 4096 MB: {'met' if peak <= 4096 else 'not met'})")


if __name__ == "__main__":
    main()
