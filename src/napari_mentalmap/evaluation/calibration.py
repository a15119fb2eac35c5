"""Calibration of the shipped anomaly VAEs: the healthy mean residual, kept in the weights
only if it raises the validation Dice (``mentalmap eval uad-residual``)."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from ..checkpoints import load_record, save_record
from ..data.splits import SPLITS
from ..data.subjects import SubjectGrid, healthy_weight, load_split
from ..models.uad_vae import UADVAE


def healthy_residual(model: UADVAE, subjects: list[SubjectGrid], erosion: int = 1,
                     residual: str = "positive") -> np.ndarray:
    """Voxel-wise mean residual (``max(x - x_hat, 0)`` or ``|x - x_hat|``, see
    ``inference.anomaly.RESIDUALS``) over healthy FLAIRs on the model grid (float32).

    Averaged over each subject's eroded brain mask with its automatic lesions left out
    (``healthy_weight``); 0 where no subject has brain.
    """
    from ..inference.anomaly import _reconstruct, run_job

    device = next(model.parameters()).device
    total = np.zeros(subjects[0].image.shape, np.float64)
    count = np.zeros_like(total)
    with torch.inference_mode():
        for subject in subjects:
            reconstruction = run_job(_reconstruct(model, subject.image, device, 16))
            weight = ndimage.binary_erosion(subject.mask, iterations=erosion) * healthy_weight(subject)
            difference = subject.image - reconstruction
            difference = np.abs(difference) if residual == "absolute" else np.clip(difference, 0.0, None)
            total += difference * weight
            count += weight
    return (total / np.maximum(count, 1.0)).astype(np.float32)


def validate_healthy_residual(kind: str, log=print, residual_kind: str = "positive") -> dict:
    """Compute the healthy residual of the shipped ``kind`` on the training FLAIRs and keep it
    in the weights only if it raises the validation Dice (Subj18-20 vs ``wml_auto``).

    Criterion: mean of the half/half Dice over the paper's and the wide threshold ranges
    (the protocol of ``mentalmap eval uad``), with and without the subtraction.
    """
    from ..inference.anomaly import anomaly_map, load_anomaly_model, run_job, weights_path
    from .uad import (
        VAE_THRESHOLDS,
        WIDE_THRESHOLDS,
        dice_table,
        half_half_protocol,
        load_test_volume,
    )

    model = load_anomaly_model(kind, "cpu")
    residual = healthy_residual(model.model, load_split("nichart_train", "flair", model.grid), residual=residual_kind)
    model.record["healthy_residual"] = residual
    model.record["residual"] = residual_kind
    volumes = [load_test_volume(subject) for subject in SPLITS["nichart_val"]]
    scores = {}
    for subtract in (False, True):
        maps = [run_job(anomaly_map(v.image, v.spacing, model, mask=v.mask, residual=residual_kind,
                                    subtract_healthy=subtract)).anomaly for v in volumes]
        truths = [v.truth for v in volumes]
        scores[subtract] = {name: half_half_protocol(dice_table(maps, truths, thresholds), thresholds)["dice"]
                            for name, thresholds in (("paper", VAE_THRESHOLDS), ("wide", WIDE_THRESHOLDS))}
    plain, subtracted = (float(np.mean(list(scores[k].values()))) for k in (False, True))
    keep = subtracted > plain
    path = weights_path(kind)
    record = load_record(path)
    record.pop("healthy_residual", None)
    record["residual"] = residual_kind
    if keep:
        record["healthy_residual"] = residual.astype(np.float16)
    record["healthy_residual_validation"] = {
        "subjects": SPLITS["nichart_val"], "residual": residual_kind, "plain": scores[False], "subtracted": scores[True],
        "criterion": "mean half/half Dice over paper and wide ranges", "kept": keep}
    save_record(path, record)
    log(f"{kind}: validation Dice plain {scores[False]} -> minus healthy residual {scores[True]}; "
        f"{'kept' if keep else 'not kept'} in {path}")
    return record["healthy_residual_validation"]


def validation_intensity_threshold(log=print) -> float:
    """The intensity baseline's Auto threshold: best mean Dice over the validation FLAIRs
    (Subj18-20 against ``wml_auto``), never the manual-label test sets
    (``mentalmap eval uad-baseline-threshold``; stored as ``INTENSITY_AUTO_THRESHOLD``)."""
    from ..inference.anomaly import INTENSITY_MEDIAN_AT
    from .uad import BASELINE_THRESHOLDS, dice_table, intensity_baseline, load_test_volume

    volumes = [load_test_volume(subject) for subject in SPLITS["nichart_val"]]
    maps = [intensity_baseline(v, median_at=INTENSITY_MEDIAN_AT) for v in volumes]
    dices = dice_table(maps, [v.truth for v in volumes], BASELINE_THRESHOLDS).mean(axis=0)
    best = float(BASELINE_THRESHOLDS[int(np.argmax(dices))])
    log(f"validation ({', '.join(SPLITS['nichart_val'])}): best threshold {best} (mean Dice {dices.max():.3f})")
    return best


FINE_THRESHOLDS = np.round(np.arange(0.01, 0.755, 0.01), 3)
"""Candidate Auto thresholds of the anomaly models on validation (0.01 steps up to 0.75)."""


def validation_volumes() -> list:
    """The validation FLAIRs (Subj18-20) with ``wml_auto`` as (automatic) ground truth."""
    from .uad import load_test_volume

    return [load_test_volume(subject) for subject in SPLITS["nichart_val"]]


def validation_scores(maps: list[np.ndarray], volumes: list, thresholds=FINE_THRESHOLDS) -> dict:
    """Validation summary of one method's maps: mean voxel AUPRC, the Auto threshold (best mean
    Dice over ``thresholds``), the Dice there, and the half/half Dice (the test protocol)."""
    from ..metrics import average_precision
    from .uad import dice_table, half_half_protocol

    truths = [v.truth for v in volumes]
    dices = dice_table(maps, truths, thresholds)
    curve = dices.mean(axis=0)
    best = int(np.argmax(curve))
    auprc = [average_precision(m[v.mask], v.truth[v.mask]) for m, v in zip(maps, volumes, strict=True)]
    return {"AUPRC": float(np.mean(auprc)),
            "threshold": float(thresholds[best]), "dice at threshold": float(curve[best]),
            "half/half dice": half_half_protocol(dices, thresholds)["dice"],
            "subjects": [v.subject for v in volumes]}


def validate_model(model, volumes: list | None = None, residual: str = "positive") -> dict:
    """:func:`validation_scores` of an anomaly model (VAE or DAE) with ``residual``."""
    import warnings

    from ..inference.anomaly import anomaly_map, run_job

    volumes = validation_volumes() if volumes is None else volumes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        maps = [run_job(anomaly_map(v.image, v.spacing, model, mask=v.mask, residual=residual)).anomaly
                for v in volumes]
    return validation_scores(maps, volumes)


def validate_baselines(volumes: list | None = None) -> dict[str, dict]:
    """:func:`validation_scores` of both intensity baselines (percentile vs median standardisation)."""
    from .uad import BASELINE_THRESHOLDS, BASELINES, intensity_baseline

    volumes = validation_volumes() if volumes is None else volumes
    return {name: validation_scores([intensity_baseline(v, median_at=median_at) for v in volumes], volumes,
                                    BASELINE_THRESHOLDS)
            for name, median_at in BASELINES.items()}
