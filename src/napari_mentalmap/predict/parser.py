"""The ``mentalmap predict`` argument parser (no torch: ``--help`` answers at once)."""

from __future__ import annotations

import argparse

from .inputs import non_negative_int, parse_contexts, parse_shard, positive_int


def _add_common(parser: argparse.ArgumentParser, expects: str | None = None) -> None:
    parser.add_argument("-i", "--input", required=True, metavar="IN",
                        help="a volume file, a folder of .nii/.nii.gz/.mgz files, or a glob pattern (quoted)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT_DIR",
                        help="output folder (created if missing); nothing is written elsewhere")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing outputs (default: a file whose outputs exist fails, nothing replaced)")
    parser.add_argument("--weights", metavar="F", default=None, help="checkpoint file (default: shipped weights)")
    parser.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:1, mps (default auto)")
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="CPU threads for torch (torch.set_num_threads)")
    parser.add_argument("--devices", type=positive_int, default=1, metavar="N",
                        help="processes per machine: split the files over N GPUs (--device cuda) or CPU processes "
                             "(Lightning Fabric)")
    parser.add_argument("--num-nodes", type=positive_int, default=1, metavar="N",
                        help="machines of a torchrun or SLURM (srun) job; each file is written once (docs/cli.md)")
    parser.add_argument("--shard", type=parse_shard, default=None, metavar="I/N",
                        help="only the files k with k %% N == I of the sorted inputs (scheduler array jobs)")
    if expects:
        parser.add_argument("--strict", action="store_true",
                            help=f"refuse a file whose contrast does not look like {expects} (default: warn)")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``predict`` with its ``anomaly``, ``bruno``, ``mask``, ``latent``, ``segment`` and ``calibrate-auto`` subcommands."""
    from ..models.kinds import DAE_KINDS, KINDS
    from .calibrate import add_calibrate_parser
    from .commands import run_anomaly, run_bruno, run_latent, run_mask
    from .segment import add_segment_parser

    predict = subparsers.add_parser("predict", help="run a model over files: anomaly maps or BRUNO mental maps")
    kinds = predict.add_subparsers(dest="predict_command", metavar="MODEL")

    anomaly = kinds.add_parser("anomaly", help="anomaly map of each FLAIR (<stem>_anomaly.nii.gz)")
    _add_common(anomaly, expects="FLAIR")
    anomaly.add_argument("--model", default="gated", choices=["gated", "intensity", *KINDS, *DAE_KINDS],
                         help="gated (the FLAIR intensity gated by the DAE's residual, default: best on "
                              "validation), intensity (the FLAIR intensity baseline) or a shipped model; "
                              "--weights (a VAE/DAE file) overrides it")
    anomaly.add_argument("--labels", choices=["lesions", "tumour"], default=None,
                         help="also write <stem>_anomaly_labels.nii.gz at this target's Auto threshold "
                              "(chosen on validation data, as the dock's Auto)")
    anomaly.add_argument("--threshold", type=float, default=None, metavar="T",
                         help="write the labels at this threshold instead")
    anomaly.add_argument("--auto-sds", type=float, default=None, metavar="K",
                         help="with --labels: the per-scan Auto at K fitted SDs instead of the shipped "
                              "value (e.g. the dock's 'Calibrate Auto to these labels' for your site)")
    anomaly.set_defaults(func=run_anomaly)

    bruno = kinds.add_parser("bruno", help="BRUNO mean and std from a few axial slices of each T1 "
                                           "(<stem>_bruno_mean/_std.nii.gz)")
    _add_common(bruno, expects="T1")
    which = bruno.add_mutually_exclusive_group(required=True)
    which.add_argument("--contexts", type=parse_contexts, metavar="I,J,K",
                       help="acquired axial slice indices (canonical, inferior to superior), e.g. 20,30,40")
    which.add_argument("--n-contexts", type=positive_int, metavar="N",
                       help="N slices evenly spaced over the axial range the model covers (printed per file)")
    bruno.add_argument("--samples", type=non_negative_int, default=0, metavar="N",
                       help="also write N samples as <stem>_bruno_samples.nii.gz (4-D, model grid "
                            "placed over the input); the std uses them when N >= 2, else 8 samples")
    bruno.set_defaults(func=run_bruno)

    mask = kinds.add_parser("mask", help="brain mask of each T1 or FLAIR (<stem>_brain_mask.nii.gz)")
    _add_common(mask)
    mask.set_defaults(func=run_mask)

    latent = kinds.add_parser("latent", help="slice-VAE latents of each T1 (<stem>_latents.npz: latents (P, D), "
                                             "poses, grid_affine) and their decoding "
                                             "(<stem>_latent_reconstruction.nii.gz, model grid over the input)")
    _add_common(latent)
    latent.set_defaults(func=run_latent)

    add_segment_parser(kinds, _add_common)
    add_calibrate_parser(kinds)

    predict.set_defaults(func=lambda args: (predict.print_help(), 1)[1])
    return predict
