"""One 1 mm (input-grid) figure per source of the test split: truth, default mean, std, two
samples, interpolation and BRUNO alone at 3 and 9 contexts (results/bruno/figure_input_grid_*.png).

    MENTALMAP_CACHE=/work/cache .venv/bin/python scripts/bruno_input_grid_figures.py [--weights PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from napari_mentalmap.data.splits import SPLITS, by_source
from napari_mentalmap.data.subjects import subject_files
from napari_mentalmap.evaluation.bruno_input_figure import input_grid_figure
from napari_mentalmap.inference.brain import auto_brain_mask
from napari_mentalmap.io.nifti import read_volume

OUT = Path(__file__).resolve().parents[1] / "results" / "bruno"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None)
    args = parser.parse_args()
    chosen = {f"{source} test": subjects[0] for source, subjects in by_source(SPLITS["t1_test"]).items()}
    chosen["open_ms without patient07"] = [s for s in SPLITS["open_ms"] if not s.endswith("07")][0]
    chosen["IXI with skull"] = SPLITS["ixi_head"][0]
    for label, subject in chosen.items():
        volume = read_volume(subject_files(subject, "t1")["image"])
        data = np.asarray(volume.data, np.float32)
        path = OUT / f"figure_input_grid_{label.split(' ')[0]}{'_with_skull' if 'skull' in label else ''}.png"
        input_grid_figure(data, volume.spacing, auto_brain_mask(data, volume.spacing), f"{label}: {subject}", path,
                          args.weights)
        print(path)


if __name__ == "__main__":
    main()
