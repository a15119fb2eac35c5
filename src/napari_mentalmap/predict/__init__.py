"""``mentalmap predict anomaly|bruno|mask|latent``: run the models over files without napari.

Inputs: a file, a folder (its ``.nii``/``.nii.gz``/``.mgz`` files) or a glob. Outputs go into
the output folder (:mod:`.commands`), each with a JSON sidecar saying what made it
(:mod:`.outputs`); an existing output is not replaced without ``--overwrite``. A failing file
is named on stderr and skipped (exit code 1); the reader's notes go to stderr; a label map is
refused. Weights load once before any file: a
:class:`~napari_mentalmap.checkpoints.WeightsError`, an unusable ``--device`` or output folder
is reported and the command exits with 2 before any file is processed. Several processes,
machines (``--devices``, ``--num-nodes``) or array jobs (``--shard``): :mod:`.runner`.
"""

from .commands import STD_SAMPLES, run_anomaly, run_bruno, run_latent, run_mask
from .inputs import (
    EXIT_FILE_FAILED,
    EXIT_SETUP_FAILED,
    collect_inputs,
    evenly_spaced_contexts,
    grid_affine,
    parse_contexts,
    parse_shard,
    shard_of,
    volume_stem,
)
from .outputs import OutputExistsError, sidecar_path
from .parser import add_parser

__all__ = [
    "EXIT_FILE_FAILED", "EXIT_SETUP_FAILED", "STD_SAMPLES", "OutputExistsError", "add_parser", "collect_inputs",
    "evenly_spaced_contexts", "grid_affine", "parse_contexts", "parse_shard", "run_anomaly", "run_bruno",
    "run_latent", "run_mask", "shard_of", "sidecar_path", "volume_stem",
]
