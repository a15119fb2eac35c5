"""Lag-1 autocorrelation of (sample − sample average) of the shipped BRUNO on the shipped sample
(issue #16: ≥ 0.6; real slices give about 0.8; the per-pixel model gave 0.08).

    .venv/bin/python scripts/bruno_sample_coherence.py [--weights PATH] [--samples 8]
"""

from __future__ import annotations

import argparse

from napari_mentalmap.evaluation.bruno import shipped_sample_coherence


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None)
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args()
    print(f"{shipped_sample_coherence(args.weights, args.samples):.3f}")


if __name__ == "__main__":
    main()
