"""The ``predict`` subcommands: what each loads, which files it writes for one input, and how.

Outputs go on the input's own grid and affine (``write_volume`` with the input as
reference; BRUNO mean, std and samples refined with the acquired slices), except latent
reconstructions and BRUNO samples too large for memory: model grid, with an affine that
places them over the input. Every output gets a JSON sidecar (:mod:`.outputs`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..checkpoints import resolve, shipped
from .inputs import EXIT_SETUP_FAILED, evenly_spaced_contexts, grid_affine
from .outputs import InputOutputs
from .runner import Command, SetupError, run

STD_SAMPLES = 8
"""Samples drawn for the std map when ``--samples`` asks for fewer than 2."""


def _anomaly_threshold(args: argparse.Namespace, method: str, model) -> dict | None:
    """The labels threshold ``{"value", "chosen"}`` (``value`` None and ``sds`` set when the Auto
    is computed per scan), None without labels; :class:`SetupError` when there is no Auto
    threshold for these weights."""
    from ..inference.anomaly_methods import auto_threshold, per_scan_sds

    if args.auto_sds is not None and (args.threshold is not None or not args.labels):
        raise SetupError("--auto-sds goes with --labels (and not with --threshold)")
    if args.auto_sds is not None and not 0.0 < args.auto_sds < 20.0:
        raise SetupError(f"--auto-sds must lie between 0 and 20 fitted SDs, got {args.auto_sds:g}")
    if args.threshold is not None:
        return {"value": float(args.threshold), "chosen": "given (--threshold)"}
    if not args.labels:
        return None
    value, chosen = None, f"Auto for {args.labels}, chosen on validation data for {method}"
    shipped = None if args.weights else per_scan_sds(method, "positive", args.labels)
    if args.auto_sds is not None and shipped is None:
        raise SetupError(f"--auto-sds: {method} has no per-scan Auto for {args.labels}; give --threshold")
    if args.auto_sds is not None:
        return {"value": None, "sds": float(args.auto_sds), "chosen": f"Auto for {args.labels}: {args.auto_sds:g} "
                f"fitted SDs above the bulk of this scan (given: --auto-sds; shipped {shipped:g}, "
                "anomaly_methods.per_scan_threshold)"}
    if shipped is not None:
        return {"value": None, "sds": shipped, "chosen": f"Auto for {args.labels}: {shipped:g} fitted SDs above the bulk "
                f"of this scan (anomaly_methods.per_scan_threshold; rule chosen on validation data for {method})"}
    if not args.weights:
        value = auto_threshold(method, "positive", args.labels)
    elif args.labels == "lesions" and model.residual_kind == "positive":
        value, chosen = model.threshold, f"Auto for lesions stored in {args.weights}"
    if value is None:
        raise SetupError(f"no {args.labels} Auto threshold for these weights; give --threshold")
    return {"value": float(value), "chosen": chosen}


def method_job(method: str, data: np.ndarray, spacing: tuple[float, float, float], model, device):
    """The anomaly-map job of ``method`` as ``predict`` runs it: the intensity method (no model),
    the gated method on the DAE ``model``, or the map of any other loaded ``model``."""
    from ..inference.anomaly import anomaly_map, gated_intensity_map, intensity_anomaly_map
    from ..inference.anomaly_methods import GATED_METHOD, INTENSITY_METHOD

    if method == INTENSITY_METHOD:
        return intensity_anomaly_map(data, spacing, device=device)
    if method == GATED_METHOD:
        return gated_intensity_map(data, spacing, model, device=device)
    return anomaly_map(data, spacing, model, device=device)


def run_anomaly(args: argparse.Namespace) -> int:
    """``mentalmap predict anomaly``; with ``--labels TARGET`` also the labels at that target's
    Auto threshold (or ``--threshold``), small components removed, as in the dock."""
    from ..inference.anomaly_methods import GATED_METHOD, GATED_MODEL, INTENSITY_METHOD

    intensity = args.model == "intensity" and not args.weights
    gated = args.model == "gated" and not args.weights
    method = INTENSITY_METHOD if intensity else GATED_METHOD if gated else args.model
    source = None if intensity else GATED_MODEL if gated else args.weights or args.model
    weights = None if source is None else Path(source) if args.weights else shipped(f"uad_{source}").path
    with_labels = bool(args.labels) or args.threshold is not None

    def load(device):
        from ..inference.anomaly import load_anomaly_model

        return None if intensity else load_anomaly_model(source, device)

    def make_process(device, model):
        from ..inference.anomaly_methods import per_scan_threshold
        from ..inference.jobs import run_to_completion
        from ..inference.labels import DEFAULT_MIN_SIZE, threshold_labels

        threshold = _anomaly_threshold(args, method, model)

        def process(volume, outputs: InputOutputs) -> None:
            result = run_to_completion(method_job(method, volume.data, volume.spacing, model, device))
            cut = threshold if threshold is None or threshold["value"] is not None else {  # per scan, before any file
                **threshold, "value": float(per_scan_threshold(method, threshold["sds"], result.anomaly,
                                                               result.brain_mask, result.intensity_bulk))}
            for note in result.warnings:
                print(f"{outputs.source}: {note}", file=sys.stderr)
            outputs.volume("_anomaly.nii.gz", result.anomaly, volume, is_labels=False, map_name="anomaly")
            if cut is not None:  # the value used here is the one the sidecar records
                labels = (threshold_labels(result.anomaly, cut["value"], DEFAULT_MIN_SIZE) > 0).astype(np.uint8)
                outputs.volume("_anomaly_labels.nii.gz", labels, volume, is_labels=True, map_name="labels",
                               threshold=cut, min_component_voxels=DEFAULT_MIN_SIZE)
        return process

    return run(args, Command(
        "anomaly", method, "gated" if gated else "intensity" if intensity else str(args.model), weights, load,
        lambda stem: [f"{stem}_anomaly.nii.gz"] + ([f"{stem}_anomaly_labels.nii.gz"] if with_labels else []),
        make_process, expects="FLAIR"))


def run_bruno(args: argparse.Namespace) -> int:
    """``mentalmap predict bruno``: mean and std (and ``--samples``) from a few axial slices."""

    def load(device):
        from ..inference.mental_map import load_bruno

        return load_bruno(args.weights, device)[0]

    def make_process(device, model):
        from ..inference.brain import auto_brain_mask
        from ..inference.jobs import run_to_completion
        from ..inference.mental_map import hallucinate, on_input_grid
        from ..io.preprocess import GridSpec, plan_grid

        spec = GridSpec(**model.config.grid) if model.config.grid else GridSpec(
            n_poses=model.n_poses, size=model.image_size)

        def process(volume, outputs: InputOutputs) -> None:
            data = np.nan_to_num(np.asarray(volume.data, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
            mask = auto_brain_mask(data, volume.spacing, device=str(device))
            if args.contexts is not None:
                contexts, how = list(args.contexts), "given (--contexts)"  # hallucinate checks the range
            else:
                first, last = plan_grid(mask, volume.spacing, spec).covered_slices()
                contexts = evenly_spaced_contexts(first, last, args.n_contexts)
                how = f"{len(contexts)} evenly spaced over the axial slices {first}..{last} the model covers"
            print(f"{outputs.source}: context slices {','.join(map(str, contexts))} ({how})", flush=True)
            # the std needs samples: draw STD_SAMPLES when fewer were asked for (not written then)
            n_draw = args.samples if args.samples >= 2 else STD_SAMPLES
            mental = run_to_completion(hallucinate(volume.data, volume.spacing, contexts, n_samples=n_draw,
                                                   weights=args.weights, device=str(device), mask=mask))
            maps = on_input_grid(mental, volume.data, keep_contexts=True)
            outputs.details.update(contexts=[int(c) for c in mental.context_slices], contexts_chosen=how,
                                   samples_drawn=len(mental.samples_grid),
                                   mean=("refined with the acquired slices on the input grid (default)"
                                         if maps.refined else "the model's mean resampled (BRUNO alone)"))
            outputs.volume("_bruno_mean.nii.gz", maps.mean, volume, is_labels=False, map_name="mean")
            outputs.volume("_bruno_std.nii.gz", maps.std, volume, is_labels=False, map_name="std")
            if args.samples > 0 and maps.samples is not None:  # refined, on the input grid
                outputs.volume("_bruno_samples.nii.gz", maps.samples[: args.samples], volume, is_labels=False,
                               map_name="samples")
            elif args.samples > 0:
                # (N, P, S, S) on the model grid, canonical axis order: written as-is (channels
                # last in the file) with the affine that places the grid over the input.
                outputs.volume("_bruno_samples.nii.gz", mental.samples_grid[: args.samples],
                               {"affine": grid_affine(volume, mental.mapping).tolist()}, is_labels=False,
                               map_name="samples")
        return process

    names = ["mean", "std"] + (["samples"] if args.samples > 0 else [])
    return run(args, Command("bruno", "BRUNO (conditional flow + exchangeable process)", "bruno",
                             resolve(args.weights, "bruno_t1"), load,
                             lambda stem: [f"{stem}_bruno_{name}.nii.gz" for name in names],
                             make_process, expects="T1"))


def run_mask(args: argparse.Namespace) -> int:
    """``mentalmap predict mask``: the brain mask every model uses (learned extraction for a
    T1 or FLAIR with skull, the non-zero region of a skull-stripped scan)."""
    if args.weights:
        print("mentalmap predict mask: the shipped brain extraction is used; --weights is not supported here",
              file=sys.stderr)
        return EXIT_SETUP_FAILED

    def make_process(device, _model):
        from ..inference.brain import auto_brain_mask

        def process(volume, outputs: InputOutputs) -> None:
            mask = auto_brain_mask(np.asarray(volume.data, np.float32), volume.spacing, device=device.type)
            outputs.volume("_brain_mask.nii.gz", mask.astype(np.uint8), volume, is_labels=True, map_name="mask")
        return process

    return run(args, Command("mask", "brain extraction (learned; non-zero region of a stripped scan)", "mask",
                             shipped("skullstrip").path, lambda device: None,
                             lambda stem: [f"{stem}_brain_mask.nii.gz"], make_process))


def run_latent(args: argparse.Namespace) -> int:
    """``mentalmap predict latent``: slice-VAE latents of every model-grid slice
    (``<stem>_latents.npz``) and their decoding (``<stem>_latent_reconstruction.nii.gz``,
    model grid placed over the input)."""

    def load(device):
        from ..inference.latent import load_slice_vae

        return load_slice_vae(args.weights, str(device))

    def make_process(_device, bundle):
        from ..inference.jobs import run_to_completion
        from ..inference.latent import encode_volume_job

        def process(volume, outputs: InputOutputs) -> None:
            encoded = run_to_completion(encode_volume_job(bundle, volume.data, volume.spacing))
            mapping = encoded.prepared.mapping
            affine = np.asarray(volume.affine, float) if mapping is None else grid_affine(volume, mapping)
            outputs.npz("_latents.npz", "latents", {"latents": encoded.latents.astype(np.float32),
                                                    "poses": np.arange(len(encoded.latents)), "grid_affine": affine})
            outputs.volume("_latent_reconstruction.nii.gz", encoded.reconstruction, {"affine": affine.tolist()},
                           is_labels=False, map_name="reconstruction")
        return process

    return run(args, Command("latent", "slice VAE", "latent", resolve(args.weights, "slice_vae"), load,
                             lambda stem: [f"{stem}_latents.npz", f"{stem}_latent_reconstruction.nii.gz"],
                             make_process))
