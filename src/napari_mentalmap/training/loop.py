"""The training skeleton: Fabric set-up, time budget, checkpoint/resume, tqdm, run record.

Every model's training supplies what is specific to it — how to build the model and its
optimiser, one unit of training (an optimisation step, or a whole epoch for the
epoch-based models), a validation and the key that picks the best checkpoint — and
:func:`fit` does the rest the same way for every model:

* ``last.pt`` (weights, optimiser, unit count, history, extra state such as RNGs,
  schedulers or moving means) every ``checkpoint_every`` units, after every validation and
  at the end, so a run killed at any point continues where it stopped (``resume=True``);
* ``best.pt`` whenever the validation key improves (larger is better; a number or a tuple);
* a wall-clock budget (``max_minutes``) after which it checkpoints and stops;
* ``val_log.jsonl`` (one line per validation) and ``run.json`` (the summary).

Checkpoints are plain tensors and data, loadable with the safe loader of
:mod:`napari_mentalmap.checkpoints`. With a launched multi-process Fabric (``fabric=``)
only rank zero writes files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoints import load_record, save_record


@dataclass(frozen=True)
class LoopConfig:
    """What every training run shares. ``unit`` names what one ``train_step`` call does."""

    out_dir: str
    steps: int
    val_every: int = 500
    checkpoint_every: int = 200
    max_minutes: float | None = None
    seed: int = 0
    num_threads: int | None = None
    accelerator: str = "cpu"
    unit: str = "step"


@dataclass
class StepContext:
    """What a ``train_step`` works with: the (Fabric-wrapped) model and optimiser, Fabric,
    how many units are done and how much of the time budget is used (0 without one)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    fabric: Any
    index: int
    time_used: float

    @property
    def module(self) -> torch.nn.Module:
        """The bare model (for calls that must not go through the wrapper)."""
        return self.model.module if hasattr(self.model, "module") else self.model

    def backward(self, loss: torch.Tensor) -> None:
        self.fabric.backward(loss)


class GeneratorState:
    """A ``torch.Generator`` with ``state_dict``/``load_state_dict``, to resume its stream."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(int(seed))

    def state_dict(self) -> dict:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["state"])


def _as_key(value: float | Sequence[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else (float(value),)


def make_fabric(accelerator: str = "cpu", devices: int | str = 1, strategy: str = "auto"):
    """A Lightning Fabric (imported on use: it is the ``[train]`` extra)."""
    from lightning_fabric import Fabric

    return Fabric(accelerator=accelerator, devices=devices, strategy=strategy)


def fit(config: LoopConfig, build: Callable[[], tuple[torch.nn.Module, torch.optim.Optimizer]],
        train_step: Callable[[StepContext, Any], dict[str, float]],
        batches: Callable[[int, Any], Iterator[Any]],
        validate: Callable[[torch.nn.Module], dict[str, Any]] | None = None,
        select: Callable[[dict[str, Any]], float | Sequence[float]] = lambda metrics: -metrics.get("val_loss", 0.0),
        record: dict[str, Any] | None = None, resume: bool = True, progress: bool = True, desc: str = "train",
        stateful: dict[str, Any] | None = None, fabric: Any = None,
        forward_methods: Sequence[str] = ()) -> dict[str, Any]:
    """Run (or continue) a training; returns the run summary (with the history).

    ``build()`` makes the model and optimiser; ``batches(start, fabric)`` yields what
    ``train_step`` consumes from unit ``start`` on (so a resumed run sees new data);
    ``train_step(context, batch)`` does one unit and returns scalars to log;
    ``validate(model)`` returns metrics (merged into that unit's history entry);
    ``select(metrics)`` is the key ``best.pt`` maximises; ``record`` is stored in every
    checkpoint (config, split, ...); ``stateful`` objects (``state_dict`` /
    ``load_state_dict``) are saved and restored with the run; ``fabric`` is a launched
    Fabric (default: one device of ``config.accelerator``); ``forward_methods`` are model
    methods other than ``forward`` that the training calls through the wrapper.
    """
    from tqdm.auto import tqdm

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    fabric = fabric or make_fabric(config.accelerator)
    fabric.seed_everything(config.seed + fabric.global_rank)
    stateful = stateful or {}
    out = Path(config.out_dir)
    if fabric.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
    model, optimizer = build()
    state: dict[str, Any] = {"step": 0, "history": [], "train_seconds": 0.0, "best": None, "best_metrics": {}}
    last = out / "last.pt"
    if resume and last.exists():
        saved = load_record(last)
        model.load_state_dict(saved["state_dict"])
        optimizer.load_state_dict(saved["optimizer"])
        state.update(saved["train_state"])
        for name, holder in stateful.items():
            holder.load_state_dict(saved["stateful"][name])
        fabric.print(f"resumed from {last} at {config.unit} {state['step']}")
    model, optimizer = fabric.setup(model, optimizer)
    for name in forward_methods:
        model.mark_forward_method(name)
    module = model.module if hasattr(model, "module") else model

    def save(path: Path, metrics: dict | None = None) -> None:
        if fabric.is_global_zero:
            save_record(path, {**(record or {}), "state_dict": module.state_dict(), "optimizer": optimizer.state_dict(),
                               "train_state": state, "loop": asdict(config), "metrics": metrics or {},
                               "stateful": {name: holder.state_dict() for name, holder in stateful.items()}})

    started, before = time.time(), state["train_seconds"]
    budget = None if config.max_minutes is None else 60.0 * config.max_minutes
    bar = tqdm(total=config.steps, initial=state["step"], desc=desc, unit=config.unit,
               disable=not (progress and fabric.is_global_zero))
    iterator = batches(state["step"], fabric)
    metrics: dict[str, Any] = {}
    model.train()
    while state["step"] < config.steps:
        elapsed = time.time() - started
        context = StepContext(model, optimizer, fabric, state["step"], 0.0 if budget is None else elapsed / budget)
        logged = {k: float(v) for k, v in train_step(context, next(iterator)).items()}
        state["step"] += 1
        state["train_seconds"] = before + time.time() - started
        entry = {"step": state["step"], **logged}
        state["history"].append(entry)
        bar.update(1)
        bar.set_postfix({k: f"{v:.4g}" for k, v in logged.items()})
        out_of_time = budget is not None and time.time() - started > budget
        if validate is not None and (state["step"] % config.val_every == 0 or state["step"] == config.steps
                                     or out_of_time):
            model.eval()
            with torch.no_grad():
                metrics = {**validate(module), "step": state["step"], "train_seconds": state["train_seconds"]}
            model.train()
            entry.update({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
            if fabric.is_global_zero:
                with open(out / "val_log.jsonl", "a") as log:
                    log.write(json.dumps(metrics) + "\n")
            key = _as_key(select(metrics))
            if state["best"] is None or key > _as_key(state["best"]):
                state["best"], state["best_metrics"] = list(key), metrics
                save(out / "best.pt", metrics)
            save(last, metrics)
        elif state["step"] % config.checkpoint_every == 0:
            save(last, metrics)
        if out_of_time:
            fabric.print(f"stopping after {config.max_minutes} min; run again to continue")
            break
    bar.close()
    save(last, metrics)
    summary = {"step": state["step"], "train_seconds": state["train_seconds"], "best": state["best"],
               "best_metrics": state["best_metrics"], "metrics": metrics, "loop": asdict(config)}
    if fabric.is_global_zero:
        (out / "run.json").write_text(json.dumps(summary, indent=1, default=str))
    return {**summary, "history": state["history"]}
