"""I/O benchmark: read + canonicalise + normalise time and peak memory; prints a Markdown table.

    .venv/bin/python benchmarks/io_bench.py [--repeats 3]

Volumes: the real open_ms patient07 T1 (1 mm, 182 x 218 x 182, float32 .nii.gz, LAS) and a
synthetic 256^3 smoothed-noise volume (int16 .nii.gz, LPS) written to a temporary folder.
Goals: under 2 s per volume, peak memory under 4x the volume's float32 size.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from napari_mentalmap.io.nifti import read_volume

REPO = Path(__file__).resolve().parents[1]
OPEN_MS_T1 = (REPO / ".." / "shared" / "data" / "open_ms" / "patient07" / "T1.nii.gz").resolve()
TIME_GOAL_S = 2.0
MEMORY_GOAL = 4.0


def normaliser() -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """The project's ``normalize_intensity`` when present, else a labelled local fallback."""
    try:
        from napari_mentalmap.io.preprocess import normalize_intensity
    except ImportError:

        def percentile_normalise(data: np.ndarray) -> np.ndarray:
            low, high = np.percentile(data[data > data.min()], [0.5, 99.5])
            return np.clip((data - low) / (high - low), 0, 1).astype(np.float32)

        return "local percentile fallback (io.preprocess missing)", percentile_normalise
    return "io.preprocess.normalize_intensity", lambda data: normalize_intensity(data, mask=None)


def synthetic_256(folder: Path) -> Path:
    """Smoothed random 256^3 volume saved as int16 .nii.gz (1 mm, LPS)."""
    rng = np.random.default_rng(0)
    data = ndimage.gaussian_filter(rng.standard_normal((256, 256, 256), dtype=np.float32), 3)
    data = np.round((data - data.min()) / np.ptp(data) * 3000).astype(np.int16)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[:3, 3] = (128.0, 128.0, -128.0)
    path = folder / "synthetic_256.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def measure(path: Path, normalise: Callable[[np.ndarray], np.ndarray], repeats: int) -> dict[str, float]:
    """Best wall time of read+canonicalise, of normalise, and traced peak memory of both."""
    read_times, norm_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        volume = read_volume(path)
        middle = time.perf_counter()
        normalise(volume.data)
        end = time.perf_counter()
        read_times.append(middle - start)
        norm_times.append(end - middle)
        del volume
    tracemalloc.start()
    volume = read_volume(path)
    normalise(volume.data)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    float32_bytes = volume.data.size * 4
    return {
        "shape": "x".join(str(s) for s in volume.data.shape),
        "read": min(read_times),
        "normalise": min(norm_times),
        "total": min(r + n for r, n in zip(read_times, norm_times, strict=True)),
        "peak_mb": peak / 1e6,
        "float32_mb": float32_bytes / 1e6,
        "ratio": peak / float32_bytes,
    }


def main() -> None:
    """Run the benchmark and print the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    normaliser_name, normalise = normaliser()
    with tempfile.TemporaryDirectory() as folder:
        cases = []
        if OPEN_MS_T1.exists():
            cases.append(("open_ms T1 (float32 .nii.gz, LAS)", OPEN_MS_T1))
        cases.append(("synthetic 256³ (int16 .nii.gz, LPS)", synthetic_256(Path(folder))))
        print(f"Normalisation: `{normaliser_name}`; best of {args.repeats}; peak memory by tracemalloc.\n")
        print("| volume | canonical shape | read + canonicalise (s) | normalise (s) | total (s) | peak memory (MB) | float32 size (MB) | peak / size | goals (< 2 s, < 4×) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, path in cases:
            r = measure(path, normalise, args.repeats)
            ok = r["total"] < TIME_GOAL_S and r["ratio"] < MEMORY_GOAL
            print(
                f"| {name} | {r['shape']} | {r['read']:.2f} | {r['normalise']:.2f} | {r['total']:.2f} "
                f"| {r['peak_mb']:.0f} | {r['float32_mb']:.0f} | {r['ratio']:.1f}× | {'met' if ok else 'NOT met'} |"
            )


if __name__ == "__main__":
    main()
