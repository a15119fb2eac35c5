"""Model selection for BRUNO on the validation subjects (Subj18-20), never the test ones.

    .venv/bin/python benchmarks/bruno_selection.py runs/a/best.pt runs/b/best.pt ...

For each checkpoint: SSIM / CC of the mean image (flow inverse of the posterior-mean
latent) on the non-context poses for 1/3/5/9 evenly spaced contexts, and validation
bits/dim; prints a Markdown table. This is the table the shipped weights were chosen by.
"""

from __future__ import annotations

import sys

import torch

from napari_mentalmap.data.subjects import load_split
from napari_mentalmap.models.bruno import Bruno
from napari_mentalmap.training.bruno import validate

COUNTS = (1, 3, 5, 9)


def describe(record: dict) -> str:
    config = record["config"]
    flow = config["flow"]
    couplings = "no couplings" if flow["n_scales"] == 1 and flow["final_couplings"] == 0 else (
        f"{flow['n_scales']} scales, width {flow['width']}")
    kernel = "" if config["process"] == "exchangeable" else f", {config.get('kernel', 'exponential')}" + (
        " x2" if config.get("kernel_components", 1) == 2 else "")
    return f"{config['process']}{kernel}; flow: {couplings}"


def main(paths: list[str]) -> None:
    torch.set_num_threads(1)
    volumes = [s.image for s in load_split("t1_val")]
    print("| checkpoint | model | steps | val bits/dim | " + " | ".join(f"SSIM {c}" for c in COUNTS)
          + " | " + " | ".join(f"CC {c}" for c in COUNTS) + " |")
    print("|" + "---|" * (4 + 2 * len(COUNTS)))
    for path in paths:
        model, record = Bruno.load(path)
        rows = [validate(model, volumes, (count,), torch.device("cpu")) for count in COUNTS]
        steps = record.get("train_state", {}).get("step", record.get("steps", "?"))
        print(f"| `{path}` | {describe(record)} | {steps} | {rows[0]['val_bpd']:.3f} | "
              + " | ".join(f"{r['val_ssim']:.3f}" for r in rows) + " | "
              + " | ".join(f"{r['val_cc']:.3f}" for r in rows) + " |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
