"""``mentalmap train segmenter``: train the user's lesion segmenter on labelled FLAIR files.

Images and labels are matched by file stem (:func:`pair_files`). Each pair is read, checked
(labels on the image's grid and not empty, the image a FLAIR) and prepared as the dock does;
a bad pair is named on stderr in one line and left out. Exit codes: **0** every image was
used, **1** the model was written but some image was left out (each named), **2** nothing
was written (no usable pair, an existing output without ``--overwrite``, a missing library).
Nothing heavy is imported until the command runs (``mentalmap --help`` stays fast).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ..predict.inputs import (
    EXIT_FILE_FAILED,
    EXIT_SETUP_FAILED,
    collect_inputs,
    positive_int,
    volume_stem,
)

GRID_TOLERANCE = 0.1
"""Largest offset between the image's and the labels' affines, as a fraction of the smallest voxel size."""


def off_grid(image, labels) -> float | None:
    """The largest difference of two volumes' affines when it exceeds ``GRID_TOLERANCE`` of the
    image's smallest voxel (the labels are elsewhere or of another voxel size), else None."""
    import numpy as np

    offset = float(np.abs(np.asarray(image.affine, float) - np.asarray(labels.affine, float)).max())
    return offset if offset > GRID_TOLERANCE * min(image.spacing) else None


def _collect(specs: list[str]) -> list[Path]:
    """The volume files named by several folder, file or glob arguments, once each, sorted."""
    found: dict[Path, None] = {}
    for spec in specs:
        for path in collect_inputs(spec):
            found.setdefault(path, None)
    return sorted(found)


def _continues(label_stem: str, image_stem: str) -> bool:
    """True when ``label_stem`` is ``image_stem`` followed by a non-alphanumeric character and more
    (``p07_FLAIR`` -> ``p07_FLAIR_lesions``, but ``p1`` does not claim ``p10_lesions``)."""
    return (len(label_stem) > len(image_stem) and label_stem.startswith(image_stem)
            and not label_stem[len(image_stem)].isalnum())


def pair_files(images: list[Path], labels: list[Path]) -> tuple[list[tuple[Path, Path]], list[str], list[Path]]:
    """Match each image with its labels file by stem; returns (pairs, problems, unused labels).

    Rule: a labels file with exactly the image's stem; otherwise the one labels file whose stem
    is the image's stem followed by a non-alphanumeric character (``_``, ``-``, ``.``) and more,
    a labels file going to the longest image stem it continues. An image with none, or with
    several such files, is a problem (one line each). A file given both as an image and as
    labels is only used as labels when it is another image's labels.
    """
    both = set(images) & set(labels)
    images = [path for path in images if path not in both or not _labels_of_another(path, images)]
    by_stem: dict[str, list[Path]] = {}
    for path in labels:
        by_stem.setdefault(volume_stem(path), []).append(path)
    image_stems = {volume_stem(path) for path in images}
    claims: dict[str, list[Path]] = {}  # image stem -> labels continuing it (longest image stem wins)
    for path in labels:
        stem = volume_stem(path)
        owners = [image for image in image_stems if _continues(stem, image)]
        if owners:
            claims.setdefault(max(owners, key=len), []).append(path)
    pairs: list[tuple[Path, Path]] = []
    problems: list[str] = []
    for image in images:
        stem = volume_stem(image)
        exact = [path for path in by_stem.get(stem, []) if path != image]
        candidates = exact or [path for path in claims.get(stem, []) if path != image]
        if len(candidates) == 1:
            pairs.append((image, candidates[0]))
        elif not candidates:
            problems.append(f"{image}: no labels file named {stem}.* or {stem}_*; left out")
        else:
            problems.append(f"{image}: several labels files match ({', '.join(p.name for p in candidates)}); "
                            "left out (rename them so that one matches)")
    used = {label for _, label in pairs}
    unused = [path for path in labels if path not in used and path not in images]
    return pairs, problems, unused


def _labels_of_another(path: Path, images: list[Path]) -> bool:
    """Whether ``path``'s stem continues another image's (it is that image's labels)."""
    stem = volume_stem(path)
    return any(other != path and _continues(stem, volume_stem(other)) for other in images)


def load_pair(image_path: Path, labels_path: Path, check_contrast: bool = True, device: str = "cpu"):
    """One :class:`~.segmenter.TrainingScan` from an image file and its labels file.

    Raises:
        VolumeReadError: a file cannot be read.
        SegmenterInputError: the image is a label map or not a FLAIR, the labels are not on its
            grid or mark nothing.
    """
    import numpy as np

    from ..inference.brain import brain_mask_job
    from ..inference.jobs import run_to_completion
    from ..inference.segment import SegmenterInputError, check_flair, check_labels, prepare_inputs
    from ..inference.segmenter_training import TrainingScan
    from ..io.nifti import read_volume

    image = read_volume(image_path)
    if image.is_labels:
        raise SegmenterInputError(f"{image_path.name} looks like a label map, not a FLAIR image")
    labels = read_volume(labels_path, as_labels=True)
    lesions = check_labels(image.data.shape, labels.data, labels_path.name)
    offset = off_grid(image, labels)
    if offset is not None:
        raise SegmenterInputError(f"{labels_path.name}: same shape but another position or voxel size than "
                                  f"its image (affines differ by up to {offset:.3g}); resample the labels "
                                  "onto the image first")
    volume = np.nan_to_num(np.asarray(image.data, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    mask = run_to_completion(brain_mask_job(volume, image.spacing, device=device))
    if check_contrast:
        check_flair(volume, image.spacing, mask, name=image_path.name)
    return TrainingScan(prepare_inputs(volume, mask, image.spacing), lesions, image_path.name)


def _refuse(message: str) -> int:
    print(f"mentalmap train segmenter: {message}; nothing was written", file=sys.stderr)
    return EXIT_SETUP_FAILED


def run_train_segmenter(args: argparse.Namespace) -> int:
    """Pair, check and prepare the files, train, write ``-o`` with its card; the exit code."""
    from tqdm.auto import tqdm

    from ..inference.segmenter_augment import missing_dependency

    output = Path(args.output)
    if output.is_dir():
        return _refuse(f"{output} is a folder; give the model's file name (e.g. {output / 'segmenter.pt'})")
    if output.exists() and not args.overwrite:
        return _refuse(f"{output} already exists (pass --overwrite to replace it)")
    problem = missing_dependency(args.augmentation)
    if problem:
        return _refuse(problem)
    images, labels = _collect(args.images), _collect(args.labels)
    if not images or not labels:
        return _refuse(f"no .nii/.nii.gz/.mgz {'images' if not images else 'labels'} found for "
                       f"{' '.join(args.images if not images else args.labels)}")
    pairs, problems, unused = pair_files(images, labels)
    for line in problems:
        print(f"SKIPPED {line}", file=sys.stderr)
    for path in unused:
        print(f"NOTE {path}: no image with this stem; not used", file=sys.stderr)
    for image, label in pairs:
        print(f"pair: {image} + {label}")
    if args.threads:
        import torch

        torch.set_num_threads(int(args.threads))
    scans, used, skipped = [], [], len(problems)
    for image, label in tqdm(pairs, desc="reading pairs", unit="pair", disable=not pairs):
        try:
            scans.append(load_pair(image, label, check_contrast=not args.no_contrast_check))
            used.append((image, label))
        except (ValueError, OSError) as error:  # VolumeReadError, SegmenterInputError
            skipped += 1
            tqdm.write(f"SKIPPED {image} + {label}: {error}", file=sys.stderr)
    if not scans:
        return _refuse(f"no usable image/labels pair among {len(images)} image(s) and {len(labels)} labels file(s)")
    return _train_and_save(args, scans, used, skipped)


def _train_and_save(args: argparse.Namespace, scans: list, used: list[tuple[Path, Path]], skipped: int) -> int:
    from tqdm.auto import tqdm

    from ..inference.jobs import run_to_completion
    from ..inference.segment import save_segmenter
    from ..inference.segmenter_training import SegmenterTrainConfig, train_segmenter_job

    config = SegmenterTrainConfig(steps=args.steps, seed=args.seed, augmentation=args.augmentation)
    with tqdm(total=config.steps, desc=f"training ({len(scans)} scan(s), {config.augmentation})",
              unit="step") as bar:
        def report(progress: tuple[int, int, str]) -> None:
            bar.update(progress[0] - bar.n)

        model, card = run_to_completion(train_segmenter_job(scans, config), on_progress=report)
    card.update(images=[image.name for image, _ in used], labels=[label.name for _, label in used],
                contrast_checked=not args.no_contrast_check, left_out=skipped,
                command_line="mentalmap " + " ".join(shlex.quote(a) for a in getattr(args, "argv", sys.argv[1:])))
    path = save_segmenter(args.output, model, card)
    print(f"wrote {path} (trained on {len(scans)} scan(s) in {card['seconds']:.0f} s, "
          f"threshold start {card['initial_threshold']:.2f}, final loss {card['final_loss']:.3f})")
    if skipped:
        print(f"{skipped} image(s) left out (named above)", file=sys.stderr)
    return EXIT_FILE_FAILED if skipped else 0


def add_segmenter_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``segmenter`` to the ``train`` subcommand group."""
    from ..inference.segmenter_augment import AUGMENTATIONS, DEFAULT_AUGMENTATION

    parser = subparsers.add_parser(
        "segmenter", help="lesion segmenter from your labelled FLAIR files (for predict segment)",
        description="Train the lesion segmenter on FLAIR images and their lesion labels. Labels are matched "
                    "to images by file stem: the same stem first, else the image's stem followed by _, - or . "
                    "and more (patient07_FLAIR.nii.gz <- patient07_FLAIR_lesions.nii.gz).")
    parser.add_argument("-i", "--images", nargs="+", required=True, metavar="IMAGES",
                        help="FLAIR files, folders or quoted globs")
    parser.add_argument("-l", "--labels", nargs="+", required=True, metavar="LABELS",
                        help="lesion label files, folders or quoted globs (non-zero = lesion)")
    parser.add_argument("-o", "--output", required=True, metavar="MODEL.pt", help="the segmenter file to write")
    parser.add_argument("--augmentation", choices=AUGMENTATIONS, default=DEFAULT_AUGMENTATION,
                        help="none, classical (MONAI), learned deformations (default, chosen on validation), "
                             "or c4 (rotation-equivariant model)")
    parser.add_argument("--steps", type=positive_int, default=300, help="training steps (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=positive_int, default=None, metavar="T", help="torch CPU threads")
    parser.add_argument("--no-contrast-check", action="store_true",
                        help="train on images even when their contrast does not look like FLAIR")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing MODEL.pt")
    parser.set_defaults(func=run_train_segmenter)
    return parser
