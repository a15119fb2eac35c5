"""``mentalmap predict anomaly|bruno|mask|latent``: run the models over files without napari.

Inputs: a file, a folder (its ``.nii``/``.nii.gz``/``.mgz`` files) or a glob. Outputs go into
the output folder, on the input's own grid and affine (``write_volume`` with the input as
reference), except BRUNO samples and latent reconstructions: model grid, with an affine that
places them over the input. A failing file is named on stderr and skipped (exit code 1); the
reader's notes go to stderr; a label map is refused. Weights load once before any file: a
:class:`~napari_mentalmap.checkpoints.WeightsError`, an unusable ``--device`` or output folder
is reported and the command exits with 2 before any file is processed.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path

import numpy as np

from .checkpoints import WeightsError
from .inference.jobs import run_to_completion
from .io.atomic import volume_suffix, write_bytes_atomically
from .io.nifti import Volume, is_volume_path, read_volume, write_volume

STD_SAMPLES = 8
"""Samples drawn for the std map when ``--samples`` asks for fewer than 2."""

EXIT_FILE_FAILED = 1
EXIT_SETUP_FAILED = 2


def volume_stem(path: str | Path) -> str:
    """File name without its volume suffix (``a.nii.gz`` -> ``a``)."""
    name = Path(path).name
    return name[: len(name) - len(volume_suffix(name))]


def collect_inputs(spec: str) -> list[Path]:
    """Volume files named by ``spec``: a file, a folder (its volume files) or a glob."""
    path = Path(spec)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and is_volume_path(p))
    if path.is_file():
        return [path]
    matches = sorted(Path(p) for p in glob.glob(spec, recursive=True))
    return [p for p in matches if p.is_file() and is_volume_path(p)]


def parse_contexts(text: str) -> list[int]:
    """``"20,30,40"`` -> ``[20, 30, 40]``."""
    try:
        values = [int(token) for token in text.replace(";", ",").replace(" ", ",").split(",") if token]
    except ValueError:
        raise argparse.ArgumentTypeError(f"context slices must be integers separated by commas, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one context slice")
    return values


def _at_least(minimum: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {'0 or more' if minimum == 0 else f'at least {minimum}'}, "
                                             f"got {value}")
        return value
    return parse


positive_int, non_negative_int = _at_least(1), _at_least(0)


def read_input(path: Path) -> Volume:
    """Read one input image; its reader notes go to stderr, a label map is refused."""
    volume = read_volume(path)
    if volume.is_labels:
        n_values = int(np.unique(volume.data).size)
        raise ValueError(f"{path} looks like a label map (segmentation or mask: {n_values} integer values), "
                         "not an MRI image")
    for note in volume.warnings:
        print(f"{path}: {note}", file=sys.stderr)
    return volume


def prepare_output(out_dir: Path) -> str | None:
    """Create the output folder; the reason it cannot be used, or None when it can."""
    if out_dir.exists() and not out_dir.is_dir():
        return f"output folder {out_dir} is an existing file"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"cannot create the output folder {out_dir} ({error.strerror or error})"
    if not os.access(out_dir, os.W_OK | os.X_OK):
        return f"output folder {out_dir} is not writable"
    return None


def grid_affine(volume: Volume, mapping) -> np.ndarray:
    """Affine (model-grid index -> world) of a model-grid array over ``volume``.

    Grid index ``(p, r, c)`` sits at canonical input voxel ``start + step * index``
    (axis-aligned, see ``GridMapping``), and the canonical affine maps that to world.
    """
    index_to_input = np.eye(4)
    index_to_input[:3, :3] = np.diag(np.asarray(mapping.step, dtype=float))
    index_to_input[:3, 3] = np.asarray(mapping.start, dtype=float)
    return np.asarray(volume.affine, dtype=float) @ index_to_input


def evenly_spaced_contexts(first: int, last: int, n: int) -> list[int]:
    """``n`` slices evenly spread over ``first..last`` (as the context slices widget)."""
    return sorted({int(round(v)) for v in np.linspace(first, last, n)})


# --------------------------------------------------------------------------- runners


def _process_all(args: argparse.Namespace, label: str, process) -> int:
    """Run ``process(path, out_dir)`` over every input; report failures by name."""
    from tqdm.auto import tqdm

    paths = collect_inputs(args.input)
    if not paths:
        print(f"mentalmap predict {label}: no .nii/.nii.gz/.mgz files found for {args.input}", file=sys.stderr)
        return EXIT_FILE_FAILED
    out_dir = Path(args.output)
    problem = prepare_output(out_dir)
    if problem:
        print(f"mentalmap predict {label}: {problem}; nothing was processed", file=sys.stderr)
        return EXIT_SETUP_FAILED
    rank, world, fabric = 0, 1, None
    if getattr(args, "devices", 1) > 1:
        fabric = _launch(args.devices, args.device)
        rank, world = fabric.global_rank, fabric.world_size
    failed: list[Path] = []
    for path in tqdm(paths[rank::world], desc=f"predict {label}", unit="file", disable=rank > 0):
        try:
            written = process(path, out_dir)
        except Exception as error:  # one bad file must not stop the others
            failed.append(path)
            tqdm.write(f"FAILED {path}: {type(error).__name__}: {error}", file=sys.stderr)
            continue
        for item in written:
            tqdm.write(f"wrote {item}")
    n_failed = len(failed)
    if fabric is not None:  # every process's failures count for the exit code
        import torch

        n_failed = int(fabric.all_reduce(torch.tensor(float(n_failed)), reduce_op="sum").item())
    if failed:
        print(f"{len(failed)} of {len(paths)} file(s) failed: {', '.join(str(p) for p in failed)}",
              file=sys.stderr)
    return EXIT_FILE_FAILED if n_failed else 0


def _launch(devices: int, device: str):
    """Start ``devices`` processes (GPUs, or CPU processes) with Lightning Fabric's launcher:
    the command runs again in each, and each takes every ``devices``-th input file."""
    try:
        from lightning_fabric import Fabric
    except ImportError:
        raise SystemExit("--devices > 1 needs Lightning Fabric: pip install 'napari-mentalmap[train]'") from None
    accelerator = "cuda" if str(device).startswith("cuda") else "cpu"
    fabric = Fabric(accelerator=accelerator, devices=devices, strategy="ddp")
    fabric.launch()
    return fabric


def _setup(args: argparse.Namespace, label: str, load) -> tuple | int:
    """Threads, device and ``load(device)`` (the model): ``(device, model)``, or the exit code
    after a message when either is unusable (nothing processed)."""
    from .device import pick_device

    if args.threads:
        import torch

        torch.set_num_threads(int(args.threads))
    try:
        device = pick_device(args.device)
    except (ValueError, RuntimeError) as error:  # unknown or unavailable device
        print(f"mentalmap predict {label}: {error}", file=sys.stderr)
        return EXIT_SETUP_FAILED
    try:
        return device, load(device)
    except WeightsError as error:
        print(f"mentalmap predict {label}: {error}", file=sys.stderr)
        return EXIT_SETUP_FAILED


def run_anomaly(args: argparse.Namespace) -> int:
    """``mentalmap predict anomaly``; with ``--labels TARGET`` also the labels at that target's
    Auto threshold (or ``--threshold``), small components removed, as in the dock."""
    from .inference.anomaly import (
        anomaly_map,
        gated_intensity_map,
        intensity_anomaly_map,
        load_anomaly_model,
    )
    from .inference.anomaly_methods import (
        GATED_METHOD,
        GATED_MODEL,
        INTENSITY_METHOD,
        auto_threshold,
    )
    from .inference.labels import DEFAULT_MIN_SIZE, threshold_labels

    intensity = args.model == "intensity" and not args.weights
    gated = args.model == "gated" and not args.weights
    method = INTENSITY_METHOD if intensity else GATED_METHOD if gated else args.model
    setup = _setup(args, "anomaly", lambda device: None if intensity else load_anomaly_model(
        GATED_MODEL if gated else args.weights or args.model, device))
    if isinstance(setup, int):
        return setup
    device, model = setup
    threshold = args.threshold
    if args.labels and threshold is None:
        if not args.weights:
            threshold = auto_threshold(method, "positive", args.labels)
        elif args.labels == "lesions" and model.residual_kind == "positive":
            threshold = model.threshold
        if threshold is None:
            print(f"mentalmap predict anomaly: no {args.labels} Auto threshold for these weights; give --threshold",
                  file=sys.stderr)
            return EXIT_SETUP_FAILED

    def process(path: Path, out_dir: Path) -> list[Path]:
        volume = read_input(path)
        job = (intensity_anomaly_map(volume.data, volume.spacing, device=device) if intensity
               else gated_intensity_map(volume.data, volume.spacing, model, device=device) if gated
               else anomaly_map(volume.data, volume.spacing, model, device=device))
        result = run_to_completion(job)
        for note in result.warnings:
            print(f"{path}: {note}", file=sys.stderr)
        stem = volume_stem(path)
        written = [write_volume(out_dir / f"{stem}_anomaly.nii.gz", result.anomaly, volume, is_labels=False)]
        if args.labels or args.threshold is not None:
            labels = (threshold_labels(result.anomaly, threshold, DEFAULT_MIN_SIZE) > 0).astype(np.uint8)
            written.append(write_volume(out_dir / f"{stem}_anomaly_labels.nii.gz", labels, volume, is_labels=True,
                                        description=f"napari-mentalmap anomaly labels, threshold {threshold:.3g}"))
        return written

    return _process_all(args, "anomaly", process)


def run_bruno(args: argparse.Namespace) -> int:
    """``mentalmap predict bruno``."""
    from .inference.brain import auto_brain_mask
    from .inference.mental_map import hallucinate, load_bruno, on_input_grid
    from .io.preprocess import GridSpec, plan_grid

    setup = _setup(args, "bruno", lambda device: load_bruno(args.weights, device)[0])
    if isinstance(setup, int):
        return setup
    device, model = setup
    spec = GridSpec(**model.config.grid) if model.config.grid else GridSpec(
        n_poses=model.n_poses, size=model.image_size)

    def process(path: Path, out_dir: Path) -> list[Path]:
        volume = read_input(path)
        data = np.nan_to_num(np.asarray(volume.data, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        mask = auto_brain_mask(data, volume.spacing, device=str(device))
        if args.contexts is not None:
            contexts = list(args.contexts)  # hallucinate validates them against the model's range
        else:
            first, last = plan_grid(mask, volume.spacing, spec).covered_slices()
            contexts = evenly_spaced_contexts(first, last, args.n_contexts)
        # the std needs samples: draw STD_SAMPLES when fewer were asked for (not written then)
        n_draw = args.samples if args.samples >= 2 else STD_SAMPLES
        mental = run_to_completion(hallucinate(volume.data, volume.spacing, contexts, n_samples=n_draw,
                                   weights=args.weights, device=str(device), mask=mask))
        maps = on_input_grid(mental, volume.data, keep_contexts=True)
        stem = volume_stem(path)
        written = [
            write_volume(out_dir / f"{stem}_bruno_mean.nii.gz", maps.mean, volume, is_labels=False,
                         description="napari-mentalmap BRUNO posterior mean"),
            write_volume(out_dir / f"{stem}_bruno_std.nii.gz", maps.std, volume, is_labels=False,
                         description=f"napari-mentalmap BRUNO std of {len(mental.samples_grid)} samples"),
        ]
        if args.samples > 0:
            # (N, P, S, S) on the model grid, canonical axis order: written as-is (channels
            # last in the file) with the affine that places the grid over the input.
            written.append(write_volume(out_dir / f"{stem}_bruno_samples.nii.gz", mental.samples_grid[: args.samples],
                                        {"affine": grid_affine(volume, mental.mapping).tolist()},
                                        is_labels=False))
        return written

    return _process_all(args, "bruno", process)


def run_mask(args: argparse.Namespace) -> int:
    """``mentalmap predict mask``: the brain mask every model uses (learned extraction for a
    T1 or FLAIR with skull, the non-zero region of a skull-stripped scan)."""
    from .inference.brain import auto_brain_mask

    if args.weights:
        print("mentalmap predict mask: the shipped brain extraction is used; --weights is not supported here",
              file=sys.stderr)
        return EXIT_SETUP_FAILED
    setup = _setup(args, "mask", lambda device: None)
    if isinstance(setup, int):
        return setup
    device, _ = setup

    def process(path: Path, out_dir: Path) -> list[Path]:
        volume = read_input(path)
        mask = auto_brain_mask(np.asarray(volume.data, np.float32), volume.spacing, device=device.type)
        return [write_volume(out_dir / f"{volume_stem(path)}_brain_mask.nii.gz", mask.astype(np.uint8), volume,
                             is_labels=True, description="napari-mentalmap brain mask")]

    return _process_all(args, "mask", process)


def run_latent(args: argparse.Namespace) -> int:
    """``mentalmap predict latent``: slice-VAE latents of every model-grid slice
    (``<stem>_latents.npz``) and their decoding (``<stem>_latent_reconstruction.nii.gz``,
    model grid placed over the input)."""
    from .inference.latent import encode_volume_job, load_slice_vae

    setup = _setup(args, "latent", lambda device: load_slice_vae(args.weights, str(device)))
    if isinstance(setup, int):
        return setup
    _, bundle = setup

    def process(path: Path, out_dir: Path) -> list[Path]:
        volume = read_input(path)
        encoded = run_to_completion(encode_volume_job(bundle, volume.data, volume.spacing))
        mapping = encoded.prepared.mapping
        affine = np.asarray(volume.affine, float) if mapping is None else grid_affine(volume, mapping)
        stem = volume_stem(path)
        latents = out_dir / f"{stem}_latents.npz"
        write_bytes_atomically(latents, _npz_bytes(latents=encoded.latents.astype(np.float32),
                                              poses=np.arange(len(encoded.latents)), grid_affine=affine))
        reconstruction = write_volume(out_dir / f"{stem}_latent_reconstruction.nii.gz", encoded.reconstruction,
                                      {"affine": affine.tolist()}, is_labels=False,
                                      description="napari-mentalmap slice-VAE reconstruction (model grid)")
        return [latents, reconstruction]

    return _process_all(args, "latent", process)


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


# --------------------------------------------------------------------------- parser


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--input", required=True, metavar="IN",
                        help="a volume file, a folder of .nii/.nii.gz/.mgz files, or a glob pattern (quoted)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT_DIR",
                        help="output folder (created if missing); nothing is written elsewhere")
    parser.add_argument("--weights", metavar="F", default=None, help="checkpoint file (default: shipped weights)")
    parser.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:1, mps (default auto)")
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="CPU threads for torch (torch.set_num_threads)")
    parser.add_argument("--devices", type=positive_int, default=1, metavar="N",
                        help="split the files over N processes (GPUs with --device cuda, else CPU processes; "
                             "Lightning Fabric's launcher)")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``predict`` with its ``anomaly`` and ``bruno`` subcommands."""
    from .inference.anomaly import ANOMALY_KINDS

    predict = subparsers.add_parser("predict", help="run a model over files: anomaly maps or BRUNO mental maps")
    kinds = predict.add_subparsers(dest="predict_command", metavar="MODEL")

    anomaly = kinds.add_parser("anomaly", help="anomaly map of each FLAIR (<stem>_anomaly.nii.gz)")
    _add_common(anomaly)
    anomaly.add_argument("--model", default="gated", choices=["gated", "intensity", *ANOMALY_KINDS],
                         help="gated (the FLAIR intensity gated by the DAE's residual, default: best on "
                              "validation), intensity (the FLAIR intensity baseline) or a shipped model; "
                              "--weights (a VAE/DAE file) overrides it")
    anomaly.add_argument("--labels", choices=["lesions", "tumour"], default=None,
                         help="also write <stem>_anomaly_labels.nii.gz at this target's Auto threshold "
                              "(chosen on validation data, as the dock's Auto)")
    anomaly.add_argument("--threshold", type=float, default=None, metavar="T",
                         help="write the labels at this threshold instead")
    anomaly.set_defaults(func=run_anomaly)

    bruno = kinds.add_parser("bruno", help="BRUNO mean and std from a few axial slices of each T1 "
                                           "(<stem>_bruno_mean/_std.nii.gz)")
    _add_common(bruno)
    which = bruno.add_mutually_exclusive_group(required=True)
    which.add_argument("--contexts", type=parse_contexts, metavar="I,J,K",
                       help="acquired axial slice indices (canonical, inferior to superior), e.g. 20,30,40")
    which.add_argument("--n-contexts", type=positive_int, metavar="N",
                       help="N slices evenly spaced over the axial range the model covers")
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

    predict.set_defaults(func=lambda args: (predict.print_help(), 1)[1])
    return predict
