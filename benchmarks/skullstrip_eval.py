"""Brain-extraction evaluation: Dice vs. NiChart parcellation > 0 on the test split (T1,
and FLAIR with the parcellation resampled onto its grid, except Subj23 whose FLAIR is not
aligned with its T1) for the classic threshold mask,
the learned mask and ``auto_brain_mask``; open_ms patient07 (stripped) vs. its non-zero
region; a PNG of IXI axial slices with the mask contours. Prints a Markdown table.

    .venv/bin/python benchmarks/skullstrip_eval.py [out_dir]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from napari_mentalmap.data.splits import SPLITS, misregistered  # noqa: E402
from napari_mentalmap.data.subjects import brain_mask_for, subject_files  # noqa: E402
from napari_mentalmap.inference.brain import auto_brain_mask, stripped_shell_fraction  # noqa: E402
from napari_mentalmap.io.nifti import read_volume  # noqa: E402
from napari_mentalmap.io.preprocess import brain_mask  # noqa: E402
from napari_mentalmap.metrics import dice  # noqa: E402
from napari_mentalmap.models.skullstrip import background_value, learned_brain_mask  # noqa: E402


def main(out_dir: str = "runs/skullstrip_eval") -> dict:
    torch.set_num_threads(1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"nichart_test": {}, "ixi": {}}
    for subject in SPLITS["nichart_test"]:
        files = subject_files(subject)
        volume = read_volume(files["image"])
        truth = read_volume(files["mask_source"]).data > 0
        start = time.time()
        learned = learned_brain_mask(volume.data, volume.spacing)
        seconds = time.time() - start
        row = {
            "classic": dice(brain_mask(volume.data, volume.spacing), truth),
            "learned": dice(learned, truth),
            "learned_flip_average": dice(learned_brain_mask(volume.data, volume.spacing, flip_average=True), truth),
            "auto": dice(auto_brain_mask(volume.data, volume.spacing), truth),
            "stripped_input_learned": dice(learned_brain_mask(volume.data * truth, volume.spacing), truth),
            "stripped_input_auto": dice(auto_brain_mask(volume.data * truth, volume.spacing), truth),
            "learned_seconds": seconds,
        }
        results["nichart_test"][subject] = row
        print(subject, json.dumps(row), flush=True)
    for name in ("classic", "learned", "learned_flip_average", "auto", "stripped_input_learned", "stripped_input_auto"):
        results[f"mean_{name}"] = float(np.mean([r[name] for r in results["nichart_test"].values()]))
    results["nichart_test_flair"] = {}
    for subject in SPLITS["nichart_test"]:
        if misregistered(subject, "flair"):  # no reference mask on its FLAIR grid
            continue
        volume = read_volume(subject_files(subject, "flair")["image"])
        truth = brain_mask_for(subject, volume, "flair")
        row = {"classic": dice(brain_mask(volume.data, volume.spacing), truth),
               "learned": dice(learned_brain_mask(volume.data, volume.spacing), truth),
               "auto": dice(auto_brain_mask(volume.data, volume.spacing), truth),
               "stripped_input_auto": dice(auto_brain_mask(volume.data * truth, volume.spacing), truth)}
        results["nichart_test_flair"][subject] = row
        print(subject, "FLAIR", json.dumps(row), flush=True)
    for name in ("classic", "learned", "auto", "stripped_input_auto"):
        results[f"mean_flair_{name}"] = float(np.mean([r[name] for r in results["nichart_test_flair"].values()]))

    ms = read_volume(subject_files("patient07")["image"])
    nonzero = ms.data != background_value(ms.data)
    results["open_ms_patient07"] = {
        "shell_fraction": stripped_shell_fraction(ms.data, ms.spacing),
        "auto_vs_nonzero": dice(auto_brain_mask(ms.data, ms.spacing), nonzero),
        "learned_vs_nonzero": dice(learned_brain_mask(ms.data, ms.spacing), nonzero),
    }
    print("patient07", json.dumps(results["open_ms_patient07"]), flush=True)

    for subject in SPLITS["ixi_head"]:
        volume = read_volume(subject_files(subject)["image"])
        learned = auto_brain_mask(volume.data, volume.spacing)
        classic = brain_mask(volume.data, volume.spacing)
        results["ixi"][subject] = {"learned_ml": float(learned.sum() * np.prod(volume.spacing) / 1000),
                                   "classic_ml": float(classic.sum() * np.prod(volume.spacing) / 1000)}
        z = np.flatnonzero(learned.any(axis=(1, 2)))
        slices = np.linspace(z[0] + 0.1 * len(z), z[-1] - 0.05 * len(z), 6).astype(int)
        figure, axes = plt.subplots(2, 6, figsize=(18, 6.5))
        for column, index in enumerate(slices):
            axes[0, column].set_title(f"{subject} axial {index}", fontsize=8)
            for row, (label, mask) in enumerate((("learned", learned), ("classic", classic))):
                axis = axes[row, column]
                axis.imshow(volume.data[index], cmap="gray")
                if mask[index].any():
                    axis.contour(mask[index], levels=[0.5], colors="r" if row == 0 else "y", linewidths=1)
                axis.set_xticks([])
                axis.set_yticks([])
                if column == 0:
                    axis.set_ylabel(label)
        figure.tight_layout()
        figure.savefig(out / f"{subject}_mask.png", dpi=80)
        plt.close(figure)
        # a sagittal view shows face/neck leakage best
        figure, axes = plt.subplots(1, 2, figsize=(9, 5))
        x = volume.data.shape[2] // 2
        for axis, (label, mask) in zip(axes, (("learned", learned), ("classic", classic)), strict=True):
            axis.imshow(volume.data[::-1, :, x], cmap="gray")
            axis.contour(mask[::-1, :, x], levels=[0.5], colors="r")
            axis.set_title(f"{subject} mid-sagittal, {label}", fontsize=9)
            axis.axis("off")
        figure.tight_layout()
        figure.savefig(out / f"{subject}_sagittal.png", dpi=80)
        plt.close(figure)
    print("ixi", json.dumps(results["ixi"]))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print("\n| Subj21-23, Dice vs parcellation > 0 | classic mask | learned | auto | auto on the stripped volume |")
    print("|---|---|---|---|---|")
    for label, prefix in (("T1 with skull", "mean_"), ("FLAIR with skull", "mean_flair_")):
        print(f"| {label} | " + " | ".join(f"{results[prefix + name]:.3f}" for name in
                                            ("classic", "learned", "auto", "stripped_input_auto")) + " |")
    return results


if __name__ == "__main__":
    main(*sys.argv[1:])
