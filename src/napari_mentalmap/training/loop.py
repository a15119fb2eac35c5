"""The training skeleton: Fabric set-up, time budget, checkpoint/resume, tqdm, run record.

A model's training supplies what is specific to it — how to build the model and its
optimiser, one optimisation step, a validation and the key that picks the best
checkpoint — and :func:`fit` does the rest the same way for every model:

* ``last.pt`` (weights, optimiser, step, history) every ``checkpoint_every`` steps and at
  the end, so a run killed at any point continues where it stopped (``resume=True``);
* ``best.pt`` whenever the validation key improves (larger is better);
* a wall-clock budget (``max_minutes``) after which it checkpoints and stops;
* ``val_log.jsonl`` (one line per validation) and ``run.json`` (config, steps, seconds).

Checkpoints are plain tensors and data, loadable with the safe loader of
:mod:`napari_mentalmap.checkpoints`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoints import load_record, save_record


@dataclass(frozen=True)
class LoopConfig:
    """What every training run shares."""

    out_dir: str
    steps: int
    val_every: int = 500
    checkpoint_every: int = 200
    max_minutes: float | None = None
    seed: int = 0
    num_threads: int | None = None
    accelerator: str = "cpu"


def fit(config: LoopConfig, build: Callable[[], tuple[torch.nn.Module, torch.optim.Optimizer]],
        train_step: Callable[[torch.nn.Module, Any, int], dict[str, float]],
        batches: Callable[[int], Iterator[Any]],
        validate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
        select: Callable[[dict[str, float]], float] = lambda metrics: -metrics.get("val_loss", 0.0),
        record: dict[str, Any] | None = None, resume: bool = True, progress: bool = True,
        desc: str = "train") -> dict[str, Any]:
    """Run (or continue) a training; returns the run summary.

    ``build()`` makes the model and optimiser; ``batches(start_step)`` yields training
    batches from ``start_step`` on (so a resumed run sees new data); ``train_step(model,
    batch, step)`` does one optimisation step and returns scalars to log; ``validate(model)``
    returns metrics; ``select(metrics)`` is the key ``best.pt`` maximises; ``record`` is
    stored in every checkpoint (config, split, ...).
    """
    from lightning_fabric import Fabric
    from tqdm.auto import tqdm

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    fabric = Fabric(accelerator=config.accelerator, devices=1)
    fabric.seed_everything(config.seed)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, optimizer = build()
    state: dict[str, Any] = {"step": 0, "history": [], "train_seconds": 0.0, "best": None}
    last = out / "last.pt"
    if resume and last.exists():
        saved = load_record(last)
        model.load_state_dict(saved["state_dict"])
        optimizer.load_state_dict(saved["optimizer"])
        state.update(saved["train_state"])
        fabric.print(f"resumed from {last} at step {state['step']}")
    model, optimizer = fabric.setup(model, optimizer)
    module = model.module if hasattr(model, "module") else model

    def save(path: Path, metrics: dict | None = None) -> None:
        save_record(path, {**(record or {}), "state_dict": module.state_dict(), "optimizer": optimizer.state_dict(),
                           "train_state": state, "loop": asdict(config), "metrics": metrics or {}})

    started, before = time.time(), state["train_seconds"]
    bar = tqdm(total=config.steps, initial=state["step"], desc=desc, disable=not progress)
    iterator = batches(state["step"])
    model.train()
    while state["step"] < config.steps:
        logged = train_step(model, fabric.to_device(next(iterator)), state["step"])
        state["step"] += 1
        state["history"].append([state["step"], *[float(v) for v in logged.values()]])
        state["train_seconds"] = before + time.time() - started
        bar.update(1)
        bar.set_postfix({k: f"{v:.4f}" for k, v in logged.items()})
        out_of_time = config.max_minutes is not None and time.time() - started > 60 * config.max_minutes
        if validate is not None and (state["step"] % config.val_every == 0 or state["step"] == config.steps
                                     or out_of_time):
            model.eval()
            with torch.no_grad():
                metrics = {**validate(module), "step": state["step"], "train_seconds": state["train_seconds"]}
            model.train()
            with open(out / "val_log.jsonl", "a") as log:
                log.write(json.dumps(metrics) + "\n")
            key = select(metrics)
            if state["best"] is None or key > state["best"]:
                state["best"] = key
                save(out / "best.pt", metrics)
            save(last, metrics)
        elif state["step"] % config.checkpoint_every == 0:
            save(last)
        if out_of_time:
            fabric.print(f"stopping after {config.max_minutes} min; run again to continue")
            break
    bar.close()
    save(last)
    summary = {"step": state["step"], "train_seconds": state["train_seconds"], "best": state["best"],
               "loop": asdict(config)}
    (out / "run.json").write_text(json.dumps(summary, indent=1))
    return summary
