"""Contrast (T1 / T2 / FLAIR) read from the image, over every scan of the shared data.

    .venv/bin/python benchmarks/modality_table.py [--data ../shared/data] [--out docs/modality.md] [--brain-mask]

Reads each intensity scan with :func:`napari_mentalmap.io.nifti.read_volume` (canonical
orientation, full resolution), classifies it with
:func:`napari_mentalmap.inference.modality.classify_modality` without a mask (what the docks
do), and writes a Markdown page: the confusion table, accuracy per set, the time per scan,
the closest calls and a row per error. The truth comes from the folder and file names
(``flair``/``_FL`` -> FLAIR, ``T2`` -> T2, else T1); the classifier never sees a name.
Probability maps, labels and masks are left out. With ``--brain-mask`` every scan is also
classified with the project's brain mask (``inference.brain.auto_brain_mask``, what
``predict`` may pass; ~4 s more per scan with skull).
"""

from __future__ import annotations

import argparse
import re
import time
from collections import Counter, defaultdict
from pathlib import Path

from napari_mentalmap.inference.modality import (
    MODALITIES,
    T1_CONTRAST,
    T2_OUTER_RISE,
    classify_modality,
    contrast_cues,
)
from napari_mentalmap.io.nifti import read_volume

REPO = Path(__file__).resolve().parents[1]
NOT_INTENSITY = re.compile(r"wml_auto|parcellation|labels|lesion|tumour|mask|_gm_|_wm_", re.IGNORECASE)


def truth_of(relative: Path) -> str:
    """The contrast a scan's own name gives (only used as the truth, never by the classifier)."""
    name = relative.name.lower()
    if "flair" in name or re.search(r"_fl\.nii", name):
        return "FLAIR"
    if "t2" in name:
        return "T2"
    return "T1"


def scans(data: Path) -> list[Path]:
    """Every intensity volume under ``data`` (sorted), as paths relative to it."""
    return sorted(p.relative_to(data) for p in data.rglob("*.nii*") if not NOT_INTENSITY.search(str(p.relative_to(data))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / ".." / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "modality.md")
    parser.add_argument("--brain-mask", action="store_true", help="also classify with auto_brain_mask")
    args = parser.parse_args()
    data = args.data.resolve()
    rows, masked = [], []
    for relative in scans(data):
        volume = read_volume(data / relative)
        start = time.perf_counter()
        guess = classify_modality(volume.data, volume.spacing)
        seconds = time.perf_counter() - start
        cues = contrast_cues(volume.data, volume.spacing)
        rows.append((relative, truth_of(relative), guess, cues, seconds, volume.data.shape))
        mark = "" if guess.modality == rows[-1][1] else "  <-- wrong"
        if args.brain_mask:
            from napari_mentalmap.inference.brain import auto_brain_mask

            mask = auto_brain_mask(volume.data, volume.spacing)
            masked.append((relative, rows[-1][1], classify_modality(volume.data, volume.spacing, mask=mask)))
            mark += "" if masked[-1][2].modality == rows[-1][1] else "  <-- wrong with the brain mask"
        print(f"{relative}: {rows[-1][1]} -> {guess.modality} ({guess.confidence:.2f}, {seconds:.2f} s){mark}", flush=True)

    confusion = Counter((truth, guess.modality) for _, truth, guess, *_ in rows)
    per_set: dict[str, list[bool]] = defaultdict(list)
    for relative, truth, guess, *_ in rows:
        key = "/".join(relative.parts[:2]) if relative.parts[0] in ("nichart_demo", "ixi", "oasis_malf") else relative.parts[0]
        per_set[f"{key} {truth}"].append(guess.modality == truth)
    correct = sum(guess.modality == truth for _, truth, guess, *_ in rows)
    times = sorted(row[4] for row in rows)
    one_mm = [row[4] for row in rows if min(row[5]) >= 150]
    lines = [
        "# Contrast from the image: T1, T2 or FLAIR",
        "",
        "Produced by `benchmarks/modality_table.py` (do not edit by hand). Every intensity scan of",
        "`../shared/data`, read with `io.nifti.read_volume` and classified by",
        "`inference.modality.classify_modality` **without a mask** (what the docks do). The truth",
        "comes from folder/file names; the classifier never sees them. How it decides: the module",
        "docstring of `napari_mentalmap/inference/modality.py`.",
        "",
        f"**{correct} of {len(rows)} correct ({100 * correct / len(rows):.1f} %).** Time per scan "
        f"(this CPU, 1 thread of numpy/scipy): median {times[len(times) // 2]:.2f} s, max {times[-1]:.2f} s"
        + (f"; 1 mm volumes max {max(one_mm):.2f} s." if one_mm else "."),
        "",
        "The three thresholds of the classifier were placed between the contrasts' extremes on this",
        "same data (the cues are physical: CSF bright or dark, white matter brighter or darker than",
        "cortex), so this is not a held-out accuracy; the closest calls below show the margins.",
        "",
        "## Confusion (rows: truth, columns: guess)",
        "",
        "| truth \\ guess | " + " | ".join(MODALITIES) + " | scans |",
        "|---|" + "---|" * (len(MODALITIES) + 1),
    ]
    for truth in MODALITIES:
        counts = [confusion[(truth, guess)] for guess in MODALITIES]
        lines.append(f"| {truth} | " + " | ".join(str(c) for c in counts) + f" | {sum(counts)} |")
    if masked:
        wrong = [f"{relative} ({truth} -> {guess.modality})" for relative, truth, guess in masked
                 if guess.modality != truth]
        lines += ["", f"With the project's brain mask passed (`auto_brain_mask`; `--brain-mask`): "
                  f"**{len(masked) - len(wrong)} of {len(masked)} correct**" + (": wrong " + ", ".join(wrong) if wrong else ".")]
    lines += ["", "## Per set", "", "| set | contrast | correct |", "|---|---|---|"]
    for key, hits in sorted(per_set.items()):
        name, truth = key.rsplit(" ", 1)
        lines.append(f"| {name} | {truth} | {sum(hits)} / {len(hits)} |")
    lines += ["", "## Errors", ""]
    errors = [row for row in rows if row[2].modality != row[1]]
    if errors:
        lines += ["| scan | truth | guess | confidence | white rise | outer rise |", "|---|---|---|---|---|---|"]
        for relative, truth, guess, cues, *_ in errors:
            lines.append(f"| {relative} | {truth} | {guess.modality} | {guess.confidence:.2f} | "
                         f"{cues.white_rise:+.3f} | {cues.outer_rise:+.3f} |")
    else:
        lines.append("None.")
    lines += [
        "",
        "## Closest calls",
        "",
        f"Margins to the decision thresholds: T1 vs FLAIR at a white rise of {T1_CONTRAST:+.2f}, T2 at an",
        f"outer rise above {T2_OUTER_RISE:+.2f} (with dark deep white matter). The five T1 and five FLAIR",
        "scans nearest the T1/FLAIR threshold, and the nearest non-T2 scans to the T2 one:",
        "",
        "| scan | truth | guess | white rise | outer rise | deep WM position |",
        "|---|---|---|---|---|---|",
    ]
    by_margin = sorted((row for row in rows if row[1] == "T1"), key=lambda row: row[3].white_rise)[:5]
    by_margin += sorted((row for row in rows if row[1] == "FLAIR"), key=lambda row: -row[3].white_rise)[:5]
    by_margin += sorted((row for row in rows if row[1] != "T2"), key=lambda row: -row[3].outer_rise)[:3]
    for relative, truth, guess, cues, *_ in by_margin:
        lines.append(f"| {relative} | {truth} | {guess.modality} | {cues.white_rise:+.3f} | "
                     f"{cues.outer_rise:+.3f} | {cues.deep_mode:.2f} |")
    args.out.write_text("\n".join(lines) + "\n")
    print(f"{correct}/{len(rows)} correct; wrote {args.out}")


if __name__ == "__main__":
    main()
