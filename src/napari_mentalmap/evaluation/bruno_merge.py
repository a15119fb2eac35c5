"""Replace the ``(input grid)`` rows of existing result tables with new ones (the model-grid
rows are kept as they were): ``mentalmap eval bruno --input-grid-only``."""

from __future__ import annotations

import csv
from pathlib import Path

from .bruno import Row

INPUT_GRID = "(input grid)"


def _kept(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [row for row in csv.DictReader(handle) if not row["dataset"].endswith(INPUT_GRID)]


def _number(value: str):
    try:
        return float(value)
    except ValueError:
        return value


def merge_input_grid(out: Path, rows: list[Row], samples: list[dict], coherence: list[dict]
                     ) -> tuple[list[Row], list[dict], list[dict]]:
    """Model-grid rows from ``out``'s CSVs followed by the new input-grid rows."""
    kept_rows = [Row(r["dataset"], r["method"], int(r["n_contexts"]), r["poses"], float(r["ssim"]), float(r["cc"]), [])
                 for r in _kept(out / "bruno_eval.csv")]
    kept_samples = [{k: _number(v) if k not in ("dataset", "method", "n_contexts") else v for k, v in r.items()}
                    for r in _kept(out / "samples.csv")]
    kept_coherence = [{k: _number(v) if k not in ("dataset", "method", "n_contexts") else v for k, v in r.items()}
                      for r in _kept(out / "coherence.csv")]
    return kept_rows + rows, kept_samples + samples, kept_coherence + coherence
