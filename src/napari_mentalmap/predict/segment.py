"""``mentalmap predict segment``: the user's lesion segmenter (``mentalmap train segmenter``) over files.

For each input ``<stem>``: ``<stem>_segment_probability.nii.gz`` (float lesion probability, 0
outside the brain) and ``<stem>_segment_labels.nii.gz`` (uint8: probability above ``--cutoff``,
components under :data:`~..inference.labels.DEFAULT_MIN_SIZE` voxels removed), both on the
input's grid and affine, each with its JSON sidecar (the segmenter's card included).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .outputs import InputOutputs
from .runner import Command, run

DEFAULT_CUTOFF = 0.5
"""Same value as :data:`napari_mentalmap.inference.segment.DEFAULT_CUTOFF` (not imported: no torch at parse time)."""


def _cutoff(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"the cutoff is a probability strictly between 0 and 1, got {text}")
    return value


def run_segment(args: argparse.Namespace) -> int:
    """``mentalmap predict segment``: lesion probability and labels of each FLAIR."""
    cutoff = {"value": float(args.cutoff),
              "chosen": "given (--cutoff)" if args.cutoff != DEFAULT_CUTOFF else "default probability cutoff"}

    def load(device):
        from ..inference.segment import load_segmenter

        return load_segmenter(args.weights, str(device))

    def make_process(device, segmenter):
        from ..inference.jobs import run_to_completion
        from ..inference.labels import DEFAULT_MIN_SIZE
        from ..inference.segment import segment_job

        def process(volume, outputs: InputOutputs) -> None:
            # the runner checked the contrast already (a warning, or refused under --strict)
            result = run_to_completion(segment_job(volume.data, volume.spacing, segmenter, device=str(device),
                                                   check_contrast=False))
            for note in result.warnings:
                print(f"{outputs.source}: {note}", file=sys.stderr)
            outputs.details["segmenter"] = segmenter.card
            outputs.volume("_segment_probability.nii.gz", result.probability, volume, is_labels=False,
                           map_name="probability")
            outputs.volume("_segment_labels.nii.gz", result.labels(cutoff["value"], DEFAULT_MIN_SIZE), volume,
                           is_labels=True, map_name="labels", threshold=cutoff,
                           min_component_voxels=DEFAULT_MIN_SIZE)
        return process

    return run(args, Command(
        "segment", "lesion segmenter trained on the user's labels (threshold path + U-Net correction)",
        "segmenter", Path(args.weights), load,
        lambda stem: [f"{stem}_segment_probability.nii.gz", f"{stem}_segment_labels.nii.gz"],
        make_process, expects="FLAIR"))


def add_segment_parser(kinds: argparse._SubParsersAction, add_common) -> argparse.ArgumentParser:
    """Add ``segment`` to the ``predict`` subcommands (``add_common`` adds the options every one has)."""
    segment = kinds.add_parser("segment", help="lesion probability and labels of each FLAIR with your segmenter "
                                               "(<stem>_segment_probability/_labels.nii.gz)")
    add_common(segment, expects="FLAIR")
    for action in segment._actions:  # no shipped segmenter: the user's file is required
        if action.dest == "weights":
            action.required = True
            action.help = "the segmenter file written by 'mentalmap train segmenter' (or the dock)"
    segment.add_argument("--cutoff", type=_cutoff, default=DEFAULT_CUTOFF, metavar="P",
                         help=f"label voxels whose lesion probability is above P (default {DEFAULT_CUTOFF})")
    segment.set_defaults(func=run_segment)
    return segment
