"""``mentalmap eval bruno``: the mental-map protocol with baselines, as tables and figures."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_bruno_parser(models: argparse._SubParsersAction) -> None:
    """Add ``bruno`` to the ``eval`` model subcommands."""
    parser = models.add_parser("bruno", help="SSIM/CC of mental maps vs baselines on held-out subjects")
    parser.add_argument("--weights", default=None, help="BRUNO checkpoint (default: shipped weights)")
    parser.add_argument("--compare", nargs="*", default=[], metavar="LABEL=PATH",
                        help="more checkpoints to score, e.g. exchangeable=runs/bruno_exch/best.pt")
    parser.add_argument("--sets", nargs="+", default=["nichart_test", "ixi_head", "open_ms"],
                        help="fixed splits (data.splits.SPLITS), e.g. t1_test, nichart_test, ixi_head, open_ms")
    parser.add_argument("--contexts", nargs="+", type=int, default=[1, 3, 5, 9])
    parser.add_argument("--samples", type=int, default=8, help="posterior samples per volume")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="results/bruno", help="folder for the CSV, figures and table")
    parser.set_defaults(func=run_eval_bruno)


def run_eval_bruno(args: argparse.Namespace) -> int:
    import numpy as np

    from ..data.subjects import load_split
    from ..device import pick_device
    from ..inference.mental_map import load_bruno
    from ..io.preprocess import GridSpec
    from .bruno import baseline_predictors, bruno_predictors, evaluate, markdown_table, save_results

    device = pick_device(args.device)
    model, record = load_bruno(args.weights, device)
    models = {"BRUNO": model}
    for item in args.compare:
        label, _, path = item.partition("=")
        models[f"BRUNO {label}"] = load_bruno(path, device)[0]
    spec = GridSpec(**model.config.grid)
    population_mean = np.mean([s.image for s in load_split("t1_train", "t1", spec)], axis=0)
    predictors = {}
    for label, each in models.items():
        predictors.update(bruno_predictors(each, args.samples, args.seed, device, label))
    predictors.update(baseline_predictors(population_mean))
    rows = []
    for name in args.sets:
        subjects = load_split(name, "t1", spec)
        label = {"nichart_test": "NiChart test (Subj21-23)", "nichart_val": "NiChart val (Subj18-20)",
                 "ixi_head": "IXI (other site)",
                 "open_ms": "open_ms (3 patients)"}.get(name, name)
        rows += evaluate(predictors, subjects, label, args.contexts)
        if name == "open_ms":
            without = [s for s in subjects if s.subject != "patient07"]
            rows += evaluate(predictors, without, "open_ms without shipped patient07", args.contexts)
    out = Path(args.out)
    save_results(rows, out)
    tables = markdown_table(rows, "non-context") + "\n" + markdown_table(rows, "all")
    (out / "bruno_eval.md").write_text(tables)
    print(tables)
    print(f"CSV, figures and table written to {out}/")
    return 0
