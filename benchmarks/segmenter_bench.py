"""Speed of the user's lesion segmenter on 1 mm FLAIR (prints a Markdown table).

Training: the dock's default configuration on two labelled open_ms scans (patient19, patient26;
1 mm, 182 x 218 x 182), from reading the arrays to the trained model. Prediction: the whole
``segment_job`` on patient07 (brain mask, inputs, network), as the dock and ``predict segment``
run it; the Dice reached is printed so the time is "to the reported Dice".

    OMP_NUM_THREADS=2 python benchmarks/segmenter_bench.py [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from napari_mentalmap.evaluation.segmenter_curves import ScanStore, dice_at
    from napari_mentalmap.inference.jobs import run_to_completion
    from napari_mentalmap.inference.segment import UserSegmenter, segment_job
    from napari_mentalmap.inference.segmenter_training import (
        SegmenterTrainConfig,
        train_segmenter_job,
    )

    store = ScanStore()
    started = time.perf_counter()
    scans = [store.training_scan(s) for s in ("patient19", "patient26")]
    prepare = time.perf_counter() - started
    config = SegmenterTrainConfig()
    started = time.perf_counter()
    model, card = run_to_completion(train_segmenter_job(scans, config))
    train = time.perf_counter() - started
    test = store.volume("patient07")
    segmenter = UserSegmenter(model, card)
    times, result = [], None
    for _ in range(args.repeats):
        started = time.perf_counter()
        result = run_to_completion(segment_job(test.image, test.spacing, segmenter))
        times.append(time.perf_counter() - started)
    score = dice_at(result.probability, test.truth, 0.5)
    print(f"torch threads {torch.get_num_threads()}, default config {config}\n")
    print("| measurement | seconds |\n|---|---|")
    print(f"| reading + preparing 2 scans (1 mm) | {prepare:.1f} |")
    print(f"| training on 2 scans, {config.steps} steps, augmentation {config.augmentation} | {train:.1f} |")
    print(f"| prediction of a 1 mm FLAIR {test.image.shape} (brain mask + network), min of {args.repeats} | "
          f"{min(times):.2f} |")
    print(f"| ... median | {float(np.median(times)):.2f} |")
    print(f"\nDice on patient07 at p > 0.5: {score:.3f}")


if __name__ == "__main__":
    main()
