"""Render the model card of a weights file from the record stored in it (Markdown on stdout).

    .venv/bin/python scripts/model_card.py src/napari_mentalmap/weights/bruno_t1.pt > docs/model_cards/bruno_t1.md
    .venv/bin/python scripts/model_card.py --all      # every shipped file + docs/model_cards/README.md

Everything measured (configuration, command, split, metrics, training time) comes from the
record, read with the package's safe loader (``torch.load(..., weights_only=True)``); the
hand-written parts (what the model is, intended use, limitations, data description) live in
:data:`KINDS`, keyed by the registry kind (``ShippedModel.format`` in
``napari_mentalmap/checkpoints.py``). Data sets and their licences are recognised from the
subject ids of the stored split (:data:`SOURCES`, after ``../shared/data/README.md``), so a
model retrained on other sets gets the right licence terms when its card is rendered again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

from napari_mentalmap.checkpoints import SHIPPED, WEIGHTS_DIR, load_record

REPO_ROOT = Path(__file__).resolve().parent.parent
CARDS_DIR = REPO_ROOT / "docs" / "model_cards"

NOT_DIAGNOSIS = (
    "**Research and annotation support, not diagnosis.** napari-mentalmap is not a medical "
    "device; its outputs must not be used for clinical decisions about a patient."
)

# --------------------------------------------------------------------------- data sets

SOURCES: dict[str, dict[str, str]] = {
    "nichart": {
        "short": "NiChart",
        "pattern": r"^Subj\d+",
        "name": "NiChart demo data (`nichart_demo`)",
        "origin": "NiChart project, CBICA, UPenn (`CBICA/NiChart_Project`, `sample_datasets/demo_dataset`); "
                  "elderly cohort (ages ~75-83); T1 and FLAIR with skull, automatic DLMUSE parcellation and "
                  "automatic DLWMLS white-matter-lesion masks",
        "licence": "image licence not stated by the source",
        "terms": "used for development and evaluation only; the images are never shipped",
    },
    "oasis": {
        "short": "OASIS",
        "pattern": r"^OAS\d+",
        "name": "OASIS-1 with MICCAI 2012 multi-atlas labels (`oasis_malf`)",
        "origin": "OASIS project (scans) and Neuromorphometrics, Inc. (labels); healthy adults, skull-stripped T1",
        "licence": "CC BY-NC",
        "terms": "non-commercial: weights trained on it are for non-commercial research use only; credit the "
                 "scans to the OASIS project and the labels to Neuromorphometrics, Inc.; development and "
                 "evaluation only, the images are never shipped",
    },
    "ixi": {
        "short": "IXI",
        "pattern": r"^IXI\d+",
        "name": "IXI data set (`ixi`)",
        "origin": "IXI (Guys and HH sites); healthy adults, T1",
        "licence": "CC BY-SA 3.0",
        "terms": "credit the IXI data set (share-alike); the images are never shipped",
    },
    "open_ms": {
        "short": "open_ms",
        "pattern": r"^(patient\d+|open_ms)",
        "name": "open_ms (`open_ms`)",
        "origin": "Lesjak et al. 2017, *Neuroinformatics*, doi:10.1007/s12021-017-9348-7; MS patients, manual "
                  "consensus lesion masks",
        "licence": "CC-BY",
        "terms": "cite Lesjak et al.; patient07 (downsampled) is the sample shipped with the plugin and is "
                 "never used for training",
    },
    "cbica_wml": {
        "short": "cbica_wml",
        "pattern": r"^(\d{3}D\d+|cbica)",
        "name": "CBICA white-matter-lesion tutorial data (`cbica_wml`)",
        "origin": "CBICA (UPenn) image-processing tutorial data; manual lesion masks",
        "licence": "SBIA licence",
        "terms": "evaluation only, never shipped",
    },
    "brats2018": {
        "short": "BraTS",
        "pattern": r"^(CBICA_|TCIA|brats)",
        "name": "BraTS 2018 training set (`brats2018`)",
        "origin": "Menze et al. 2015, *IEEE TMI*; Bakas et al. 2017, *Sci. Data*; glioma, manual tumour masks",
        "licence": "research use (cite both papers)",
        "terms": "evaluation only, never shipped",
    },
}
SHIPPED_SAMPLE = "patient07"


def source_of(name: str) -> str | None:
    """The :data:`SOURCES` key of a subject id or test-set name (``None`` if unknown)."""
    for key, source in SOURCES.items():
        if re.match(source["pattern"], str(name), flags=re.IGNORECASE):
            return key
    return None


# --------------------------------------------------------------------------- hand-written parts

KINDS: dict[str, dict[str, str]] = {
    "bruno": {
        "title": "Conditional BRUNO on axial T1 slices (mental maps)",
        "what": (
            "Given a few acquired axial slices of a T1-weighted brain MRI (the *contexts*), the model "
            "predicts the whole axial stack on its model grid: a posterior-mean volume, a voxel-wise "
            "standard deviation and posterior samples. A conditional RealNVP flow maps each slice, given "
            "its position in the stack (its *pose*), to a latent vector (with `pose_latent_mean`, minus the "
            "training subjects' mean latent at that pose); one Student-t (or Gaussian) "
            "process per latent dimension conditions on the contexts' latents: the paper's "
            "`exchangeable` process, or the `pose_aware` process whose covariance is a kernel of the pose "
            "distance. Used by the *Mental maps (BRUNO)* dock and `mentalmap predict bruno`."
        ),
        "data": (
            "Axial T1-weighted slices of the training subjects, brain-masked (NiChart: parcellation > 0; "
            "the skull-stripped sets: intensity > 0), normalised with percentiles inside the brain and "
            "resampled to the model grid (`grid`, under Architecture)."
        ),
        "intended_use": (
            "Exploring what a few acquired slices imply for the rest of the stack and where that "
            "prediction is uncertain; teaching; research on slice-sparse acquisitions."
        ),
        "limitations": (
            "- Predicted slices are plausible images, not measurements: they must never replace acquired "
            "slices. Anatomy absent from the contexts (a lesion, a tumour, a resection) is predicted as "
            "typical anatomy of the training population.\n"
            "- Trained only on the adult T1s of the sources listed under Training data; children, "
            "tumours, MS and other pathology, other contrasts and unusual fields of view are outside its "
            "training distribution.\n"
            "- Low resolution: the model grid (`grid`: slices of `size` x `size`); the mean image is smooth.\n"
            "- The model grid is placed from the brain mask's extent: a wrong brain mask shifts the "
            "slice positions the model sees."
        ),
        "references": (
            "- I. Korshunova, J. Degrave, F. Huszár, Y. Gal, A. Gretton, J. Dambre, \"BRUNO: A Deep "
            "Recurrent Model for Exchangeable Data\", NeurIPS 2018.\n"
            "- I. Korshunova, Y. Gal, A. Gretton, J. Dambre, \"Conditional BRUNO: A neural process for "
            "exchangeable labelled data\", *Neurocomputing* 2020."
        ),
    },
    "skullstrip": {
        "title": "Learned brain extraction (2.5-D U-Net, T1 and FLAIR)",
        "what": (
            "A 2.5-D U-Net that segments the brain in T1 or FLAIR volumes that still have their skull "
            "(three neighbouring axial slices in, the middle slice's brain mask out). "
            "`inference.brain.auto_brain_mask` uses it for volumes with skull (skull-stripped volumes take "
            "their non-zero region), so it feeds the anomaly maps and the mental maps."
        ),
        "data": (
            "NiChart volumes of the training subjects in the contrasts listed in the training "
            "configuration (`modalities`), both with skull and skull-stripped (share `stripped_prob`); "
            "target: the automatic DLMUSE parcellation > 0 (on the FLAIR grid for FLAIR). FLAIRs that are "
            "misregistered with their parcellation (Subj15, Subj20, Subj23) are left out."
        ),
        "intended_use": (
            "Brain masks for research pipelines and for annotation in napari; check the mask visually."
        ),
        "limitations": (
            "- Training targets are automatic (DLMUSE), not manual; one elderly cohort from one source.\n"
            "- Works at about 2 mm (`slice_mm`); fine detail of the brain surface is lost.\n"
            "- T1 and FLAIR only; other contrasts, children, large lesions or post-surgical anatomy are "
            "outside its training distribution."
        ),
        "references": "",
    },
    "slice_vae": {
        "title": "Slice VAE and latent volume models on axial T1 slices (latent explorer)",
        "what": (
            "A 2-D VAE on axial T1 slices of the model grid, with two latent volume models fitted on the "
            "training subjects' slice latents: a per-slice Gaussian (mean and covariance per slice "
            "position, positions sampled independently) and a coherent probabilistic PCA over the whole "
            "latent sequence (a sample moves all slices together). Used by the *Latent explorer (slice "
            "VAE)* dock: sample volumes, walk principal directions, interpolate between subjects."
        ),
        "data": (
            "Axial T1-weighted slices of the training subjects, brain-masked and normalised inside the "
            "brain, on the model grid (`grid`, under Architecture)."
        ),
        "intended_use": "Exploring the variability of brain anatomy in a latent space; teaching; research.",
        "limitations": (
            "- Decoded volumes are blurry and smoother from slice to slice than real anatomy; they are "
            "not realistic enough to stand in for real data.\n"
            "- The latent models are fitted on few subjects (see the split), so they cover little of "
            "the population's variability."
        ),
        "references": "",
    },
    "tissue_segnet": {
        "title": "Tissue segmentation net for the latent explorer's realism score",
        "what": (
            "A small 2-D U-Net that segments axial T1 slices of the model grid into the classes listed "
            "below. It is used only to score the realism of volumes sampled from the slice VAE "
            "(`mentalmap eval slicevae`), not as a tissue segmentation tool."
        ),
        "data": (
            "Axial T1 slices of the training subjects on the model grid; target: the automatic DLMUSE "
            "parcellation collapsed to CSF, grey matter and white matter."
        ),
        "intended_use": "An evaluation helper inside this project.",
        "limitations": (
            "- Coarse (model-grid resolution, automatic training targets): do not use it for tissue "
            "volumetry.\n"
            "- Only validated on the validation subjects listed below."
        ),
        "references": "",
    },
    "uad_vae": {
        "title": "Anomaly VAE on FLAIR ({kind})",
        "what": (
            "An unsupervised anomaly-detection VAE after Lambert et al.: trained to reconstruct FLAIR of "
            "brains without known pathology, so that what it cannot reconstruct stands out. `{kind}`: "
            "dense = vector latent, spatial = latent map; 2d = axial slices, 3d = the whole volume. The "
            "anomaly map is the reconstruction error inside the brain on the input's own grid; the "
            "default score is max(x - x_hat - r, 0) with r the stored mean healthy residual "
            "(`healthy_residual`), the paper's |x - x_hat| is the alternative. Offered by the *Anomaly maps* "
            "dock and `mentalmap predict anomaly`."
        ),
        "data": (
            "FLAIR of the training subjects, normalised inside the brain mask (0.5th / 99.5th "
            "percentiles) and resampled to the model grid; the voxels of the automatic `wml_auto` lesion "
            "masks are left out of the reconstruction loss (these elderly brains have some white-matter "
            "lesions). The stored `healthy_residual` is a voxel-wise mean over the training FLAIRs."
        ),
        "intended_use": (
            "Highlighting candidate hyperintense regions in a FLAIR for a human annotator to review; "
            "research on unsupervised anomaly detection."
        ),
        "limitations": (
            "- Lesion Dice is low (see the metrics): most detected voxels are not lesions and many "
            "lesions are missed. A map is a prompt for review, never a segmentation to trust.\n"
            "- Trained on few subjects from one elderly cohort; scanners, protocols and ages unlike "
            "theirs raise the error everywhere.\n"
            "- The stored threshold (`threshold`) was chosen on the validation FLAIRs (see `threshold_note`).\n"
            "- The model grid is coarse (about 1.4-2.7 mm); lesions of a few voxels are hard to see."
        ),
        "references": (
            "- B. Lambert, M. Louis, S. Doyle, F. Forbes, M. Dojat, A. Tucholka, \"Leveraging 3D "
            "Information in Unsupervised Brain MRI Segmentation\", ISBI 2021 (arXiv:2101.10674)."
        ),
    },
    "uad_dae": {
        "title": "Denoising autoencoder on FLAIR ({kind})",
        "what": (
            "A 2-D U-Net trained to remove coarse (low-resolution, upsampled) Gaussian noise from healthy "
            "FLAIR slices, after Kascenas et al. 2022; the anomaly map is max(x - x_hat, 0) of the clean "
            "input inside the brain, on the input's own grid. Offered by the *Anomaly maps* dock and "
            "`mentalmap predict anomaly --model {kind}`; its residual also gates the FLAIR intensity in "
            "the default method, the DAE-gated FLAIR intensity (docs/uad.md)."
        ),
        "data": (
            "FLAIR of the NiChart training subjects (Subj1-17), median-standardised inside the brain mask "
            "and resampled to the model grid; the automatic `wml_auto` lesion voxels are left out of the "
            "loss. Noise scale, standardisation, score and training length chosen on Subj18-20."
        ),
        "intended_use": "Highlighting candidate hyperintense regions in a FLAIR for review; research.",
        "limitations": (
            "- On every manual-label test set the FLAIR intensity threshold (the dock's default) is better "
            "(docs/uad.md); this model is the best learned one, not the best method.\n"
            "- Trained on 17 elderly subjects from one site; longer training reconstructs lesions too "
            "(validation AUPRC fell from 0.553 at 5 epochs to 0.281 at 35), so the 5-epoch model ships."
        ),
        "references": (
            "- A. Kascenas, N. Pugeault, A. Q. O'Neil, \"Denoising Autoencoders for Unsupervised Anomaly "
            "Detection in Brain MRI\", MIDL 2022."
        ),
    },
}

# Stored entries shown under "Evaluation" besides ``metrics``.
EVALUATION_KEYS = ("final_val_l1", "threshold", "threshold_note", "eval_command", "residual",
                   "healthy_residual_validation", "classes")
# Columns of a metrics table of many rows (the rest stay in the full record below it).
PREFERRED_COLUMNS = ("method", "test set", "dice", "dice std", "dice (wide)", "AUPRC", "AUROC",
                     "best fixed-threshold dice (oracle)", "seconds per volume")


# --------------------------------------------------------------------------- formatting


def fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return "`" + json.dumps(plain(value), ensure_ascii=False) + "`"
    return str(value).replace("|", "\\|")


def plain(value: Any) -> Any:
    """JSON-able copy (tensors as shape summaries, floats rounded)."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"<tensor {list(value.shape)}>" if value.numel() != 1 else round(float(value), 6)
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, float):
        return round(value, 6)
    return value


def json_block(value: Any) -> str:
    return "```json\n" + json.dumps(plain(value), indent=2, ensure_ascii=False) + "\n```"


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s ({seconds / 60:.1f} min)"


def render_metrics(metrics: Any) -> str:
    """Tables for the shapes of stored metrics: flat dict, dict of per-subject dicts, list of rows."""
    if isinstance(metrics, list) and metrics and all(isinstance(row, dict) for row in metrics):
        keys = list(dict.fromkeys(key for row in metrics for key in row))
        columns = [key for key in PREFERRED_COLUMNS if key in keys] if len(keys) > 9 else keys
        text = table(columns, [[row.get(key, "") for key in columns] for row in metrics])
        if len(columns) < len(keys):
            text += f"\n\n{len(keys) - len(columns)} more stored columns per row are in the full record below."
        return text
    if not isinstance(metrics, dict):
        return fmt(metrics)
    parts = []
    scalars = [[key, value] for key, value in metrics.items() if not isinstance(value, dict)]
    if scalars:
        parts.append(table(["metric", "value"], scalars))
    for key, value in metrics.items():
        if isinstance(value, dict):
            inner = list(dict.fromkeys(k for item in value.values() if isinstance(item, dict) for k in item))
            if inner:
                rows = [[name, *[item.get(k, "") for k in inner]] for name, item in value.items()]
                parts.append(f"`{key}`:\n\n" + table(["", *inner], rows))
            else:
                parts.append(f"`{key}`:\n\n" + table(["metric", "value"], list(value.items())))
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- the card


def registry_entry(path: Path):
    for model in SHIPPED.values():
        if model.file == path.name:
            return model
    return None


def first(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def training_facts(record: dict) -> tuple[str | None, dict | None, list[list[Any]]]:
    """(command, training configuration, rows of stored training facts)."""
    train = record.get("train") if isinstance(record.get("train"), dict) else {}
    metrics = record.get("metrics") if isinstance(record.get("metrics"), dict) else {}
    command = first(record.get("command"), train.get("command"))
    config = first(record.get("train_config"), train.get("train_config"))
    rows = []
    for label, value in (
        ("steps", first(record.get("steps"), train.get("steps"))),
        ("best (kept) step", train.get("best_step")),
        ("epochs", first(record.get("epochs"), metrics.get("epoch"))),
    ):
        if value is not None:
            rows.append([label, value])
    seconds = first(record.get("train_seconds"), train.get("train_seconds"), metrics.get("train_seconds"))
    if seconds is not None:
        rows.append(["training time (wall clock)", duration(float(seconds))])
    return command, config, rows


def split_section(split: dict) -> tuple[str, set[str], set[str]]:
    """Markdown of the split, the sources used to make the model (train + val), those of test."""
    made_with: set[str] = set()
    tested_on: set[str] = set()
    rows = []
    for name, subjects in split.items():
        subjects = [str(s) for s in subjects]
        counts: dict[str, int] = {}
        for subject in subjects:
            key = source_of(subject) or "other"
            counts[key] = counts.get(key, 0) + 1
        (tested_on if name == "test" else made_with).update(k for k in counts if k != "other")
        per_source = ", ".join(f"{SOURCES[k]['short'] if k in SOURCES else k} {n}" for k, n in counts.items())
        rows.append([f"`{name}`", len(subjects), per_source, ", ".join(subjects)])
    return table(["split", "subjects", "per source", "ids"], rows), made_with, tested_on


def evaluation_sources(record: dict) -> set[str]:
    metrics = record.get("metrics")
    names = []
    if isinstance(metrics, list):
        names = [row.get("test set", "") for row in metrics if isinstance(row, dict)]
    return {key for key in (source_of(name) for name in names) if key}


def weights_hold_training_data(record: dict) -> list[str]:
    notes = []
    if "train_latents" in record:
        notes.append("`train_latents`: the latent codes of every training subject's slices; decoding them "
                     "gives blurry approximations of those subjects' T1 slices")
    if "healthy_residual" in record:
        notes.append("`healthy_residual`: a voxel-wise mean over the training subjects (no single subject)")
    return notes


def card(path: Path, kind: str | None = None) -> str:
    path = Path(path)
    record = load_record(path)
    model = registry_entry(path)
    kind = kind or (model.format if model else record.get("format"))
    if kind not in KINDS:
        raise SystemExit(f"{path}: unknown model kind {kind!r}; pass --kind ({', '.join(KINDS)})")
    text = {key: value.format(kind=record.get("kind") or (record.get("config") or {}).get("kind", kind))
            for key, value in KINDS[kind].items()}
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    state = record.get("state_dict") or {}
    n_parameters = sum(int(t.numel()) for t in state.values() if hasattr(t, "is_floating_point")
                       and t.is_floating_point())
    command, train_config, facts = training_facts(record)
    split = record.get("split") or {}
    split_md, made_with, tested_on = split_section(split) if split else ("not stored", set(), set())
    evaluated_on = evaluation_sources(record) | tested_on
    name = model.name if model else path.stem

    out = [f"# Model card: `{path.name}` — {text['title']}", ""]
    out.append(f"*Generated by `scripts/model_card.py` from the record stored in the weights file; render it "
               f"again after retraining: `.venv/bin/python scripts/model_card.py "
               f"src/napari_mentalmap/weights/{path.name} > docs/model_cards/{path.stem}.md`.*")
    out += ["", table(["", ""], [
        ["file", f"`napari_mentalmap/weights/{path.name}` ({path.stat().st_size / 1e6:.2f} MB)"],
        ["sha256", f"`{digest}`"],
        ["registry name / kind", f"`{name}` / `{kind}`" + (f" ({model.description})" if model else "")],
        ["parameters", f"{n_parameters:,} (floating-point values in the state dict)"],
        ["licence of the code", "BSD-3-Clause (the weights carry the terms of their training data, below)"],
    ])]
    out += ["", "## What the model is", "", text["what"]]

    out += ["", "## Architecture and configuration", "", "Stored configuration (`config`):", "",
            json_block(record.get("config"))]
    if record.get("grid") is not None:  # else it is part of the configuration
        out += ["", "Model grid (`grid`):", "", json_block(record["grid"])]
    for key in ("width", "per_slice", "ppca"):
        if key in record:
            out += ["", f"`{key}`: {fmt(plain(record[key]))}"]

    out += ["", "## Training", "", "Exact command stored with the weights:", "",
            "```bash\n" + (command or "(not stored)") + "\n```"]
    if record.get("base_command"):
        out += ["", "It refines weights that were trained by this command:", "",
                "```bash\n" + str(record["base_command"]) + "\n```"]
    if facts:
        out += ["", table(["", ""], facts)]
    if record.get("input_grid_fit"):
        fit = record["input_grid_fit"]
        out += ["", "The input-grid settings (`input_grid`: detail transfer and std calibration, what the dock "
                "and `predict bruno` show) were then fitted on the validation subjects by:", "",
                "```bash\n" + str(fit.get("command")) + "\n```", "", json_block(record.get("input_grid")), "",
                f"Validation SSIM of the refined mean on the fitted slices: {fmt(fit.get('validation_ssim'))} "
                f"({fmt(fit.get('seconds'))} s, subjects {', '.join(fit.get('subjects', []))})."]
    if train_config is not None:
        out += ["", "Training configuration (`train_config`):", "", json_block(train_config)]

    out += ["", "## Training data and licences", "", text["data"], ""]
    uses = {k: " and ".join(use for use, sources in (("training / validation", made_with),
                                                      ("evaluation", evaluated_on)) if k in sources)
            for k in SOURCES}
    rows = [[SOURCES[k]["name"], uses[k], SOURCES[k]["licence"], SOURCES[k]["terms"]]
            for k in SOURCES if uses[k]]
    if rows:
        out += [table(["data set", "used for", "licence", "terms"], rows), ""]
        out += ["Sources: " + "; ".join(f"{SOURCES[k]['name']}: {SOURCES[k]['origin']}" for k in SOURCES
                                         if uses[k]) + ".", ""]
    terms = ["No training or evaluation image is shipped with the package: the data stay in "
             "`../shared/data` and are used for development and evaluation only. Data sets without a "
             "stated licence or with a non-commercial one are never shipped."]
    if "oasis" in made_with:
        terms.append("These weights were trained on OASIS-1 (CC BY-NC): **non-commercial research use only**.")
    if "ixi" in made_with:
        terms.append("These weights were trained on IXI (CC BY-SA 3.0): credit the IXI data set.")
    if "nichart" in made_with:
        terms.append("The NiChart demo images have no stated licence: they are used for research only and "
                     "are never shipped.")
    held = weights_hold_training_data(record)
    if held:
        terms.append("Besides network weights this file stores: " + "; ".join(held) + ".")
    if split:
        used = {str(s) for name_, subjects in split.items() if name_ != "test" for s in subjects}
        terms.append(f"The shipped sample (open_ms {SHIPPED_SAMPLE}, CC-BY) is "
                     + ("**among** the training / validation subjects." if SHIPPED_SAMPLE in used
                        else "not among the training or validation subjects."))
    out += ["- " + line for line in terms]

    out += ["", "## Split", "", split_md]

    out += ["", "## Metrics (as stored in the weights file)", ""]
    metrics = record.get("metrics")
    out += [render_metrics(metrics) if metrics is not None else "No metrics stored."]
    stored = [(key, record[key]) for key in EVALUATION_KEYS if key in record]
    if stored:
        out += ["", table(["stored entry", "value"], [[f"`{k}`", v] for k, v in stored])]
    if "history" in record:
        out += ["", f"A per-epoch history of {len(record['history'])} entries is stored as `history`."]
    if isinstance(metrics, list):
        out += ["", "<details><summary>Full stored metrics</summary>", "", json_block(metrics), "", "</details>"]

    out += ["", "## Intended use", "", NOT_DIAGNOSIS, "", text["intended_use"]]
    out += ["", "## Limitations", "", text["limitations"]]
    if text["references"]:
        out += ["", "## References", "", text["references"]]
    return "\n".join(out).rstrip() + "\n"


def index() -> str:
    lines = [
        "# Model cards",
        "",
        "One card per weights file shipped in `src/napari_mentalmap/weights/` (the registry is `SHIPPED` in",
        "`src/napari_mentalmap/checkpoints.py`). Each card is rendered from the record stored in its weights",
        "file by `scripts/model_card.py` (configuration, exact training command, split, metrics, training",
        "time); the hand-written parts (what the model is, data and licences, intended use, limitations)",
        "are kept in that script, per model kind. After retraining a model, render its card again:",
        "",
        "```bash",
        ".venv/bin/python scripts/model_card.py src/napari_mentalmap/weights/bruno_t1.pt > docs/model_cards/bruno_t1.md",
        ".venv/bin/python scripts/model_card.py --all   # every card and this index",
        "```",
        "",
        "All models are for **research and annotation support, not diagnosis**. The weights carry the",
        "terms of their training data (see each card); no training image is shipped.",
        "",
        "| card | model | kind | command stored with the weights |",
        "|---|---|---|---|",
    ]
    for model in SHIPPED.values():
        command = training_facts(load_record(model.path))[0] or "(not stored)"
        lines.append(f"| [{model.file}]({Path(model.file).stem}.md) | {model.description} | `{model.format}` | "
                     f"`{command}` |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="?", type=Path, help="weights file (.pt)")
    parser.add_argument("--kind", choices=sorted(KINDS), default=None,
                        help="model kind when the file is not in the registry")
    parser.add_argument("--all", action="store_true",
                        help=f"write the card of every shipped file and the index into {CARDS_DIR}")
    args = parser.parse_args(argv)
    if args.all:
        CARDS_DIR.mkdir(parents=True, exist_ok=True)
        for model in SHIPPED.values():
            target = CARDS_DIR / f"{Path(model.file).stem}.md"
            target.write_text(card(WEIGHTS_DIR / model.file), encoding="utf-8")
            print(f"wrote {target.relative_to(REPO_ROOT)}")
        (CARDS_DIR / "README.md").write_text(index(), encoding="utf-8")
        print(f"wrote {(CARDS_DIR / 'README.md').relative_to(REPO_ROOT)}")
        return 0
    if args.weights is None:
        parser.error("give a weights file or --all")
    sys.stdout.write(card(args.weights, args.kind))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
