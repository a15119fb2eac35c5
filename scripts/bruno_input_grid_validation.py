"""Validation table of the input-grid refinement (the 9 t1_val subjects, input grid, SSIM / CC on
every non-context slice inside the model's range): the refined default, BRUNO alone (its mean
resampled, contexts put back), linear interpolation, and the C-VAE mean refined the same way
(the few-contexts choice), per source and context count. Writes
results/bruno/input_grid_validation.md.

    MENTALMAP_CACHE=/work/cache .venv/bin/python scripts/bruno_input_grid_validation.py [--cases DIR]

``--cases`` keeps each validation case (the model's mean and samples on the input grid) as
``<subject>_<count>.npz`` so a rerun skips the model.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from napari_mentalmap.data.splits import SPLITS, source_of
from napari_mentalmap.inference.detail_transfer import (
    linear_interpolation,
    model_weight,
    neighbours,
    transfer_detail,
)
from napari_mentalmap.inference.mental_map import load_bruno
from napari_mentalmap.inference.refined_maps import InputGridSettings
from napari_mentalmap.metrics import slice_cc, slice_ssim
from napari_mentalmap.training.bruno_input_grid import Case, collect_case

OUT = Path(__file__).resolve().parents[1] / "results" / "bruno" / "input_grid_validation.md"
CVAE = Path(__file__).resolve().parents[1] / "results" / "bruno" / "cvae_t1.pt"


def load_case(subject: str, count: int, folder: Path | None) -> tuple[Case, np.ndarray | None]:
    path = folder / f"{subject}_{count}.npz" if folder else None
    if path is not None and path.is_file():
        z = np.load(path)
        case = Case(subject, count, z["data"], z["mean"], z["samples"].astype(np.float32), list(z["contexts"]),
                    z["mask"], tuple(int(v) for v in z["covered"]), tuple(float(v) for v in z["spacing"]))
        return case, (z["cvae"] if "cvae" in z.files else None)
    case = collect_case(subject, count)
    if path is not None:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, data=case.truth, mean=case.mean, samples=case.samples.astype(np.float16),
                            contexts=np.array(case.contexts), mask=case.brain, covered=np.array(case.covered),
                            spacing=np.array(case.spacing), source=source_of(subject))
    return case, None


def scores(prediction: np.ndarray, case: Case) -> tuple[float, float]:
    queries = case.queries()
    clipped = np.clip(prediction, 0, 1)
    return (float(np.mean([slice_ssim(clipped[s], np.clip(case.truth[s], 0, 1)) for s in queries])),
            float(np.mean([slice_cc(prediction[s], case.truth[s]) for s in queries])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=None, help="folder to keep the validation cases in")
    args = parser.parse_args()
    _, record = load_bruno(None)
    settings = InputGridSettings.from_dict(record["input_grid"])
    table: dict[tuple[str, str, int], list[tuple[float, float]]] = defaultdict(list)
    for subject in SPLITS["t1_val"]:
        for count in (1, 3, 5, 9):
            case, cvae = load_case(subject, count, Path(args.cases) if args.cases else None)
            weight = model_weight(case.brain, *case.covered, settings.detail_transfer.edge_voxels)

            def refined(base: np.ndarray, case: Case = case, weight: np.ndarray = weight) -> np.ndarray:
                return transfer_detail(base, case.truth, case.contexts, case.spacing, case.brain, weight,
                                       case.covered, settings.detail_transfer)

            alone = case.mean.copy()
            alone[case.contexts] = case.truth[case.contexts]
            near = neighbours(case.truth.shape[0], case.contexts, case.spacing[0])
            methods = {"default (BRUNO refined)": refined(case.mean), "BRUNO alone": alone,
                       "linear interpolation": linear_interpolation(case.truth, near)}
            if cvae is not None:
                methods["C-VAE refined"] = refined(cvae.astype(np.float32))
            for name, prediction in methods.items():
                table[source_of(subject), name, count].append(scores(prediction, case))
            print(subject, count, flush=True)
    lines = ["# Input-grid refinement on validation (t1_val, SSIM / CC, non-context slices)", "",
             "Command: `MENTALMAP_CACHE=/work/cache .venv/bin/python scripts/bruno_input_grid_validation.py "
             "--cases /work/runs/refine_cache`", "",
             f"Settings (from the shipped weights): `{settings.to_dict()['detail_transfer']}`", "",
             "| source | method | 1 | 3 | 5 | 9 |", "|---|---|---|---|---|---|"]
    for source in dict.fromkeys(k[0] for k in table):
        for name in dict.fromkeys(k[1] for k in table if k[0] == source):
            cells = [" / ".join(f"{v:.3f}" for v in np.mean(table[source, name, c], 0)) if table[source, name, c]
                     else "—" for c in (1, 3, 5, 9)]
            lines.append(f"| {source} | {name} | " + " | ".join(cells) + " |")
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
