"""``mentalmap eval bruno``: the mental-map protocol with baselines, as tables and figures.

Per data source of the fixed test split (NiChart, OASIS, IXI), open_ms (with and without
the shipped patient07) and the out-of-distribution IXI T1 with skull: SSIM/CC on the model
grid and on the input's own grid (``results/bruno/bruno_eval.csv``), and the samples'
realism, texture, calibration (``samples.csv``) and coherence (``coherence.csv``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_CVAE = Path("results/bruno/cvae_t1.pt")


def add_bruno_parser(models: argparse._SubParsersAction) -> None:
    """Add ``bruno`` to the ``eval`` model subcommands."""
    parser = models.add_parser("bruno", help="SSIM/CC of mental maps vs baselines on held-out subjects")
    parser.add_argument("--weights", default=None, help="BRUNO checkpoint (default: shipped weights)")
    parser.add_argument("--compare", nargs="*", default=[], metavar="LABEL=PATH",
                        help="more BRUNO checkpoints to score, e.g. exchangeable=runs/bruno_exch/best.pt")
    parser.add_argument("--cvae", default=str(DEFAULT_CVAE), help="C-VAE baseline weights ('' to skip)")
    parser.add_argument("--sets", nargs="+", default=["t1_test", "open_ms", "ixi_head"],
                        help="fixed splits (data.splits.SPLITS); t1_test is reported per source")
    parser.add_argument("--contexts", nargs="+", type=int, default=[1, 3, 5, 9])
    parser.add_argument("--samples", type=int, default=8, help="posterior samples per volume (mean table)")
    parser.add_argument("--metric-samples", type=int, default=20, help="samples for coverage / std metrics")
    parser.add_argument("--no-input-grid", action="store_true", help="skip the input-grid rows")
    parser.add_argument("--input-grid-only", action="store_true",
                        help="recompute only the '(input grid)' rows and replace them in the existing CSVs")
    parser.add_argument("--no-sample-metrics", action="store_true", help="skip samples.csv")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="results/bruno", help="folder for the CSV, figures and table")
    parser.set_defaults(func=run_eval_bruno)


def datasets(names: list[str]) -> dict[str, list[str]]:
    """Dataset label -> subjects: ``t1_test`` split per source, open_ms also without patient07."""
    from ..data.splits import SHIPPED_SAMPLE, SPLITS, by_source

    out: dict[str, list[str]] = {}
    for name in names:
        if name == "t1_test":
            for source, subjects in by_source(SPLITS[name]).items():
                out[f"{source} test"] = subjects
        elif name == "open_ms":
            out["open_ms"] = SPLITS[name]
            out["open_ms without patient07"] = [s for s in SPLITS[name] if s != SHIPPED_SAMPLE]
        elif name == "ixi_head":
            out["IXI with skull (out-of-distribution)"] = SPLITS[name]
        else:
            out[name] = SPLITS[name]
    return out


def run_eval_bruno(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ..checkpoints import load_record
    from ..data.subjects import load_split, load_subject_grid
    from ..data.tissue import load_subject_tissue
    from ..device import pick_device
    from ..inference.mental_map import load_bruno
    from ..io.preprocess import GridSpec
    from ..models.cvae import ConditionalVAE, CVAEConfig
    from .bruno import (
        baseline_predictors,
        bruno_predictors,
        bruno_sampler,
        cvae_sampler,
        evaluate,
        markdown_table,
        sampler_predictors,
        save_results,
    )
    from .bruno_figures import source_figure
    from .bruno_input_grid import evaluate_input_grid
    from .bruno_samples import COHERENCE_COLUMNS, SAMPLE_COLUMNS, markdown, sample_rows, write_csv
    from .slice_vae import load_segnet

    device = pick_device(args.device)
    model, record = load_bruno(args.weights, device)
    spec = GridSpec(**model.config.grid)
    predictors, samplers = {}, {"BRUNO": bruno_sampler(model, device)}
    predictors.update(bruno_predictors(model, args.samples, args.seed, device, "BRUNO"))
    for item in args.compare:
        label, _, path = item.partition("=")
        predictors.update(bruno_predictors(load_bruno(path, device)[0], args.samples, args.seed, device,
                                           f"BRUNO {label}"))
    grid_predictors = {}
    population_mean = np.mean([s.image for s in load_split("t1_train", "t1", spec)], axis=0)
    predictors.update(baseline_predictors(population_mean))
    grid_predictors["population mean"] = lambda contexts, poses: population_mean
    if args.cvae and Path(args.cvae).is_file():
        saved = load_record(args.cvae, "cvae")
        cvae = ConditionalVAE(CVAEConfig(**saved["config"]))
        cvae.load_state_dict(saved["state_dict"])
        cvae.to(device).eval()
        samplers["C-VAE"] = cvae_sampler(cvae, device)
        predictors.update(sampler_predictors(samplers["C-VAE"], args.samples, args.seed, "C-VAE"))

        def cvae_on_grid(contexts, poses):
            with torch.inference_mode():
                mean, _ = cvae.predict(torch.from_numpy(contexts).to(device), torch.tensor(poses, device=device),
                                       torch.arange(spec.n_poses, dtype=torch.float32, device=device))
            return mean.cpu().numpy()

        grid_predictors["C-VAE mean (latent mean)"] = cvae_on_grid
    else:
        print(f"no C-VAE weights at {args.cvae!r}: its rows are skipped (mentalmap train cvae --export ...)")
    out = Path(args.out)
    rows, sample_table, coherence = [], [], []
    segnet = None if args.no_sample_metrics else load_segnet()
    references = None
    if segnet is not None:
        from ..data.splits import SPLITS

        references = np.stack([load_subject_tissue(s, spec) for s in SPLITS["nichart_train"]])
    for label, subjects in datasets(args.sets).items():
        grids = [] if args.input_grid_only else [load_subject_grid(s, "t1", spec) for s in subjects]
        if grids:
            rows += evaluate(predictors, grids, label, args.contexts)
        if not args.no_input_grid:
            rows += evaluate_input_grid(subjects, label, args.weights, grid_predictors, args.contexts, str(device),
                                        n_samples=0 if segnet is None else args.metric_samples,
                                        sample_rows=sample_table, coherence_rows=coherence, segnet=segnet,
                                        references=references)
        if segnet is not None and grids:
            extra, more = sample_rows(samplers, grids, label, segnet, references, (0, *args.contexts),
                                      args.metric_samples, args.seed)
            sample_table += extra
            coherence += more
        if grids:
            source_figure(samplers["BRUNO"], grids[0], label, out / f"figure_{label.split(' ')[0]}.png")
    if args.input_grid_only:
        from .bruno_merge import merge_input_grid

        rows, sample_table, coherence = merge_input_grid(out, rows, sample_table, coherence)
    save_results(rows, out)
    tables = markdown_table(rows, "non-context") + "\n" + markdown_table(rows, "all")
    if sample_table:
        write_csv(sample_table, out / "samples.csv", SAMPLE_COLUMNS)
        write_csv(coherence, out / "coherence.csv", COHERENCE_COLUMNS)
        tables += "\n\n" + markdown(sample_table, SAMPLE_COLUMNS) + "\n\n" + markdown(coherence, COHERENCE_COLUMNS)
    (out / "bruno_eval.md").write_text(tables)
    print(tables)
    print(f"CSV, figures and tables written to {out}/ (weights: {record.get('command', args.weights)})")
    return 0
