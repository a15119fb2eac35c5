"""``mentalmap predict calibrate-auto``: the anomaly Auto calibrated to one corrected scan.

The command-line twin of the dock's *Calibrate Auto to these labels*: the anomaly map of one
FLAIR, the Auto parameter whose labels best match that scan's corrected labels
(:func:`..inference.auto_calibration.calibrate_auto`), printed with the ``predict anomaly``
options that apply it to a folder, and saved (unless ``--no-save``) where the dock reads it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .inputs import positive_int


def add_calibrate_parser(kinds: argparse._SubParsersAction) -> None:
    """Add ``calibrate-auto`` to the ``predict`` subcommands."""
    from ..models.kinds import DAE_KINDS, KINDS

    parser = kinds.add_parser("calibrate-auto", help="the anomaly Auto calibrated to one scan's corrected labels "
                                                     "(for --auto-sds, and the dock's Auto)")
    parser.add_argument("-i", "--input", required=True, metavar="FLAIR", help="the corrected scan's FLAIR")
    parser.add_argument("-l", "--labels", required=True, metavar="LABELS",
                        help="its corrected lesion labels (> 0 is lesion), on the FLAIR's grid")
    parser.add_argument("--model", default="gated", choices=["gated", "intensity", *KINDS, *DAE_KINDS],
                        help="the anomaly method, as in predict anomaly (default gated)")
    parser.add_argument("--target", default="lesions", choices=["lesions", "tumour"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N")
    parser.add_argument("--no-save", action="store_true", help="print the calibration without saving it")
    parser.set_defaults(func=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    """Exit 0 with the calibration printed (and saved), 2 with the reason when the inputs cannot
    calibrate (unreadable, another grid, empty labels, a map that cannot be fitted)."""
    from ..device import pick_device
    from ..inference.anomaly import load_anomaly_model
    from ..inference.anomaly_methods import GATED_METHOD, GATED_MODEL, INTENSITY_METHOD
    from ..inference.auto_calibration import (
        CalibrationError,
        calibrate_auto,
        calibration_path,
        save_calibration,
    )
    from ..inference.jobs import run_to_completion
    from ..inference.scan_threshold import ScanThresholdError
    from ..io.nifti import VolumeReadError, read_volume
    from ..training.segmenter_commands import off_grid
    from .commands import method_job

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    method = {"gated": GATED_METHOD, "intensity": INTENSITY_METHOD}.get(args.model, args.model)
    try:
        image = read_volume(args.input)
        labels = read_volume(args.labels, as_labels=True)
        if labels.data.shape != image.data.shape or off_grid(image, labels) is not None:
            raise CalibrationError(f"{Path(args.labels).name} is not on the grid of {Path(args.input).name} "
                                   "(shape or position): resample the labels onto the FLAIR first")
        data = np.nan_to_num(np.asarray(image.data, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        device = pick_device(args.device)
        model = (None if method == INTENSITY_METHOD
                 else load_anomaly_model(GATED_MODEL if method == GATED_METHOD else method, device))
        result = run_to_completion(method_job(method, data, image.spacing, model, device))
        calibration = calibrate_auto(method, "positive", args.target, result.anomaly, result.brain_mask,
                                     labels.data, result.intensity_bulk, source=Path(args.input).name)
    except (VolumeReadError, CalibrationError, ScanThresholdError, OSError) as error:
        print(f"calibrate-auto: {error}", file=sys.stderr)
        return 2
    option = (f"--auto-sds {calibration.sds:g}" if calibration.sds is not None
              else f"--threshold {calibration.threshold:.4g}")
    print(f"{method}, {args.target}: {calibration.describe()}")
    print(f"apply it: mentalmap predict anomaly --model {args.model} --labels {args.target} {option} -i IN -o OUT")
    if not args.no_save:
        try:
            print(f"saved for the dock's Auto: {save_calibration(calibration)}")
        except OSError as error:
            print(f"calibrate-auto: cannot save {calibration_path()}: {error}", file=sys.stderr)
            return 2
    return 0
