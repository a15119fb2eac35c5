"""How ``mentalmap predict`` runs one model over many files, on one or several processes.

The files are sorted; ``--shard I/N`` keeps file ``k`` when ``k % N == I`` (scheduler array
jobs); the processes of one run (``--devices`` per node, ``--num-nodes`` under ``torchrun``
or SLURM: Lightning Fabric, ranks from the environment) then take every ``world``-th of
those. Each file is thus written by exactly one process, atomically. A failing file is
named on stderr and the others go on (exit 1); a setup problem stops the run before any
file (exit 2).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoints import WeightsError
from .inputs import (
    EXIT_FILE_FAILED,
    EXIT_SETUP_FAILED,
    collect_inputs,
    prepare_output,
    read_input,
    shard_of,
    volume_stem,
)
from .outputs import InputOutputs, OutputExistsError, Provenance, duplicate_stems, refuse_existing


class SetupError(RuntimeError):
    """The run cannot start (exit code 2, no file processed)."""


class ModalityMismatchError(ValueError):
    """The input's contrast is not the one the model expects (refused under ``--strict``)."""


@dataclass
class Command:
    """One ``predict`` subcommand as the runner sees it.

    ``load(device)`` gives the model (once per process); ``planned(stem)`` the output names
    of one input; ``make_process(device, model)`` the function that writes one input's
    outputs through an :class:`InputOutputs`.
    """

    label: str
    method: str
    short_method: str
    weights: Path | None
    load: Callable[[Any], Any]
    planned: Callable[[str], list[str]]
    make_process: Callable[[Any, Any], Callable[[Any, InputOutputs], None]]
    expects: str | None = None


def _cluster_world_size() -> int:
    """Processes started for this run by torchrun (``WORLD_SIZE``) or ``srun`` (``SLURM_STEP_NUM_TASKS``,
    not set in a batch script's own step); 1 otherwise."""
    if "TORCHELASTIC_RUN_ID" in os.environ or ("WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ):
        return int(os.environ.get("WORLD_SIZE", "1"))
    if "SLURM_PROCID" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        return int(os.environ.get("SLURM_STEP_NUM_TASKS", "1"))
    return 1


def launch(args: argparse.Namespace):
    """Lightning Fabric over ``--devices`` per node and ``--num-nodes`` nodes, or None for one process.

    Under ``torchrun`` or ``srun`` the processes exist already and Fabric reads the ranks from the
    environment; otherwise (``--devices`` > 1 on one machine) its launcher starts them (the
    command runs again in each).
    """
    devices, nodes = int(getattr(args, "devices", 1)), int(getattr(args, "num_nodes", 1))
    started = _cluster_world_size()
    if devices * nodes == 1:
        if started > 1:
            raise SetupError(f"{started} processes were started (torchrun or srun) but each would do every file; "
                             "give --num-nodes and --devices (processes per node) to match")
        return None
    if nodes > 1 and started == 1:
        raise SetupError(f"--num-nodes {nodes} needs one process per node and device started by torchrun "
                         "(--nnodes) or SLURM (srun); see docs/cli.md")
    try:
        from lightning_fabric import Fabric
    except ImportError:
        raise SetupError("--devices/--num-nodes > 1 need Lightning Fabric: "
                         "pip install 'napari-mentalmap[train]'") from None
    accelerator = "cuda" if str(args.device).startswith("cuda") else "cpu"
    try:
        fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=nodes, strategy="ddp")
    except (ValueError, RuntimeError) as error:  # e.g. devices * nodes != the started world size
        raise SetupError(str(error).strip().splitlines()[0]) from None
    fabric.launch()
    return fabric


def setup_model(args: argparse.Namespace, command: Command, fabric) -> tuple[Any, Any]:
    """Threads, device (this process's GPU under Fabric) and the model; :class:`SetupError` if unusable."""
    from ..device import pick_device

    if args.threads:
        import torch

        torch.set_num_threads(int(args.threads))
    try:
        device = pick_device(args.device)
    except (ValueError, RuntimeError) as error:  # unknown or unavailable device
        raise SetupError(str(error)) from None
    if fabric is not None and device.type == "cuda":
        device = fabric.device
    try:
        return device, command.load(device)
    except WeightsError as error:
        raise SetupError(str(error)) from None


def check_modality(volume, path: Path, expected: str | None, strict: bool) -> dict[str, Any]:
    """Sidecar entries on the input's contrast; a one-line warning on stderr when it is not
    ``expected``, or :class:`ModalityMismatchError` under ``strict``."""
    if expected is None:
        return {}
    from tqdm.auto import tqdm

    try:
        from ..inference.modality import classify_modality, modality_mismatch
    except ImportError:  # the classifier is optional
        return {}
    try:
        guess = classify_modality(volume.data, volume.spacing)
    except ValueError as error:  # e.g. too few brain voxels: not checked, not refused
        if strict:
            tqdm.write(f"NOTE {path}: contrast not checked ({error})", file=sys.stderr)
        return {"modality": {"expected": expected, "found": None, "note": str(error)}}
    problem = modality_mismatch(guess, expected)
    if problem:
        if strict:
            raise ModalityMismatchError(f"{problem}; refused (--strict)")
        tqdm.write(f"WARNING {path}: {problem}", file=sys.stderr)
    return {"modality": {"expected": expected, "found": guess.modality,
                         "confidence": round(float(guess.confidence), 3), "matches": problem is None}}


def run(args: argparse.Namespace, command: Command) -> int:
    """Run ``command`` over the inputs of ``args``; the exit code (0, 1 or 2)."""
    from tqdm.auto import tqdm

    label = command.label
    paths = collect_inputs(args.input)
    if not paths:
        print(f"mentalmap predict {label}: no .nii/.nii.gz/.mgz files found for {args.input}", file=sys.stderr)
        return EXIT_FILE_FAILED
    shard = getattr(args, "shard", None)
    selected = shard_of(paths, shard)
    if not selected:
        print(f"mentalmap predict {label}: shard {shard[0]}/{shard[1]} has no file ({len(paths)} inputs)",
              file=sys.stderr)
        return 0
    try:
        fabric = launch(args)
        rank, world = (0, 1) if fabric is None else (fabric.global_rank, fabric.world_size)
        device, model = setup_model(args, command, fabric)
        process = command.make_process(device, model)
    except SetupError as error:
        if fabric_rank_zero():
            print(f"mentalmap predict {label}: {error}", file=sys.stderr)
        return EXIT_SETUP_FAILED
    out_dir = Path(args.output)  # created only once the model is there (a bad setup leaves no folder)
    problem = prepare_output(out_dir)
    if problem:
        print(f"mentalmap predict {label}: {problem}; nothing was processed", file=sys.stderr)
        return EXIT_SETUP_FAILED
    provenance = Provenance(label, command.method, command.short_method, command.weights, str(device))
    if getattr(args, "argv", None) is not None:
        provenance.argv = ["mentalmap", *args.argv]
    provenance.process = {"host": socket.gethostname(), "rank": rank, "world_size": world,
                          "shard": None if shard is None else f"{shard[0]}/{shard[1]}"}
    duplicates = duplicate_stems(paths)
    failed: list[Path] = []
    for path in tqdm(selected[rank::world], desc=f"predict {label}", unit="file", disable=rank > 0):
        outputs = InputOutputs(out_dir, path, provenance, overwrite=bool(args.overwrite))
        try:
            if path in duplicates:
                raise OutputExistsError(f"its outputs would have the names of {duplicates[path].name}'s "
                                        f"(same stem {volume_stem(path)!r}); rename one")
            if not args.overwrite:
                refuse_existing(out_dir, command.planned(volume_stem(path)))
            volume = read_input(path)
            outputs.details.update(check_modality(volume, path, command.expects, bool(getattr(args, "strict", False))))
            process(volume, outputs)
        except Exception as error:  # one bad file must not stop the others
            failed.append(path)
            tqdm.write(f"FAILED {path}: {type(error).__name__}: {error}", file=sys.stderr)
        for item in outputs.written:
            tqdm.write(f"wrote {item}")
    n_failed = len(failed)
    if fabric is not None:  # every process's failures count for the exit code
        import torch

        n_failed = int(fabric.all_reduce(torch.tensor(float(n_failed)), reduce_op="sum").item())
    if failed:
        print(f"{len(failed)} of {len(selected[rank::world])} file(s) failed: {', '.join(str(p) for p in failed)}",
              file=sys.stderr)
    return EXIT_FILE_FAILED if n_failed else 0


def fabric_rank_zero() -> bool:
    """True in the first process of a run (or when there is only one)."""
    return os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) == "0"
