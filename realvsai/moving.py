"""The file side of offline augmentation: which copies each training image gets, and moving them into train.

    DATA/train/<Class>/cat.jpg  --DataAugmentation.py-->   DATA/augmented_train/<Class>/aug_cat_0.jpg ...
    DATA/augmented_train/<Class>/*  --MoveAugmentedImages.py-->  DATA/train/<Class>/

Copy names derive from the source name, so a re-run finds the copies it made before (in either
folder) and does not multiply them. No TensorFlow here: planning and moving start instantly.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from realvsai.cli import progress
from realvsai.config import MAX_IMAGE_PIXELS
from realvsai.errors import UserError
from realvsai.files import Outcome, append_csv, free_name, list_images, place_file, sha256_file
from realvsai.images import read_headers
from realvsai.layout import AUGMENTED_TRAIN, TEST, TRAIN, VALIDATION, find_child_folder, find_class_folders

logger = logging.getLogger(__name__)

COPY_PREFIX = "aug_"
MOVE_REFUSED_NAME = "move-refused.csv"
MOVE_REFUSED_FIELDS = ("moved_at", "source", "reason")


@dataclass(frozen=True)
class SourceImage:
    """One training image, its upright size and decode route (``images.read_header``), and per copy its
    path in augmented_train, None where it exists already (strings: 10,000s of Paths cost half a second)."""

    source: Path
    class_name: str
    targets: tuple[str | None, ...]
    width: int
    height: int
    needs_pil: bool = False


@dataclass
class CopyPlan:
    """What ``plan_copies`` found."""

    train_dir: Path
    output_dir: Path
    images: list[SourceImage] = field(default_factory=list)
    broken: list[tuple[Path, str]] = field(default_factory=list)
    earlier_copies: int = 0  # aug_* files already in train: copies, not sources


def is_made(path: Path | str) -> bool:
    """True when ``path`` is a complete copy (``files.write_new``), not a user's file under a copy's name.

    That is, a JPEG ending with its end-of-image marker: in the coded data before it 0xFF is always
    followed by 0x00 or a restart marker, so a cut file cannot end with it.
    """
    try:
        with open(path, "rb") as stream:
            stream.seek(-2, os.SEEK_END)
            return stream.read() == b"\xff\xd9"
    except OSError:  # missing, shorter than the marker, or a folder
        return False


def dataset_folders(data_dir: Path) -> tuple[Path, Path]:
    """``(DATA/train, DATA/augmented_train)`` (either letter case); ``UserError`` if DATA or train is missing."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"{data_dir} is not a folder. Give the dataset folder that holds train/ with --data.")
    train_dir = find_child_folder(data_dir, TRAIN)
    if train_dir is None:
        raise UserError(f"{data_dir} has no train folder. Run DataSplitD1.py or DataSplitD2.py first.")
    return train_dir, find_child_folder(data_dir, AUGMENTED_TRAIN) or data_dir / AUGMENTED_TRAIN


def plan_copies(data_dir: Path, copies: int, max_pixels: int = MAX_IMAGE_PIXELS) -> CopyPlan:
    """Lists the training images, reads each one's header and names its copies ``aug_<stem>_<k>.jpg``.

    ``aug_*`` files in train are earlier copies (moved there), not augmented again. Files whose header
    is broken are skipped with a warning (the augmentation pipeline decodes the pixels).
    ``UserError`` if the dataset folder, train, or its class folders are missing.
    """
    train_dir, output_dir = dataset_folders(data_dir)
    plan = CopyPlan(train_dir=train_dir, output_dir=output_dir)
    targets: dict[Path, tuple[str | None, ...]] = {}
    for class_name in find_class_folders(train_dir):
        files = list_images(train_dir / class_name)
        sources = [path for path in files if not path.name.startswith(COPY_PREFIX)]
        plan.earlier_copies += len(files) - len(sources)
        made = _made_copies(output_dir / class_name) | _made_copies(train_dir / class_name)
        folder, stems = f"{output_dir / class_name}{os.sep}", Counter(path.stem for path in sources)
        for path in sources:
            # Sources sharing a stem (cat.png, cat.jpg) get their extension in the name (aug_cat_png_0.jpg),
            # so no two ever write the same file, whatever order they come in.
            base = path.stem if stems[path.stem] == 1 else f"{path.stem}_{path.suffix.lstrip('.').lower()}"
            names = [f"{COPY_PREFIX}{base}_{k}.jpg" for k in range(copies)]
            targets[path] = tuple(None if name in made else folder + name for name in names)
    # One thread: reading a header takes tens of microseconds, mostly Python (measured slower with 4).
    headers = read_headers(list(targets), max_pixels, desc="checking", workers=1)
    for (source, copy_targets), header in zip(targets.items(), headers):
        if isinstance(header, str):
            logger.warning("skipping %s: %s", source, header)
            plan.broken.append((source, header))
        else:
            plan.images.append(SourceImage(source, source.parent.name, copy_targets, header.width, header.height,
                                           header.needs_pil))
    return plan


def _made_copies(folder: Path) -> set[str]:
    """Names of the complete copies in ``folder``; removes the ``.aug_*.tmp`` an interrupted write left."""
    if not folder.is_dir():
        return set()
    with os.scandir(folder) as entries:
        entries = list(entries)
    for entry in entries:
        if entry.name.startswith("." + COPY_PREFIX) and entry.name.endswith(".tmp"):
            os.unlink(entry.path)
    return {entry.name for entry in entries if entry.name.startswith(COPY_PREFIX) and is_made(entry.path)}


@dataclass
class MoveReport:
    """What ``move_augmented`` did (or, with ``dry_run``, would do)."""

    # class -> {"train before", "moved", "identical", "renamed", "refused", "train after": count}; refused:
    # copies identical to a validation or test image, left in augmented_train
    counts: dict[str, Counter]
    refused_files: list[tuple[str, str]] = field(default_factory=list)  # (copy, reason)
    refused_path: Path | None = None  # where they are listed (None for a dry run or no refusal)
    left_behind: list[Path] = field(default_factory=list)  # non-image files kept in augmented_train
    removed_folder: bool = False


def move_augmented(data_dir: Path, dry_run: bool = False) -> MoveReport | None:
    """Moves every image in ``DATA/augmented_train/<Class>/`` into ``DATA/train/<Class>/``, then removes the folder.

    Never overwrites (``files.place_file``). A copy with the content of a validation or test image is
    refused (it would leak that image): it stays and is added, dated, to ``DATA/move-refused.csv``.
    An interrupted run can simply be run again. None when there is no augmented_train. ``UserError``
    if the dataset or its train is missing, or augmented_train has a class train has not (nothing moves).
    """
    train_dir, augmented_dir = dataset_folders(data_dir)
    if not augmented_dir.is_dir():
        return None
    train_classes = find_class_folders(train_dir)
    classes = sorted(child.name for child in augmented_dir.iterdir() if child.is_dir() and child.name[0] != ".")
    unknown = sorted(set(classes) - set(train_classes))
    if unknown:
        raise UserError(
            f"{augmented_dir} has class folders {unknown} that {train_dir} does not have "
            f"(train has {train_classes}). Rename them to a train class or remove them, then run again."
        )
    report = MoveReport({name: Counter({"train before": len(list_images(train_dir / name))}) for name in classes})
    sources = [path for name in classes for path in list_images(augmented_dir / name)]
    held_out = {sha256_file(path): path  # every validation and test image (none needed when nothing moves)
                for split in (VALIDATION, TEST) if sources and (folder := find_child_folder(data_dir, split))
                for path in list_images(folder, recursive=True)}
    for source in progress(sources, total=len(sources), desc="moving"):
        target = train_dir / source.parent.name / source.name
        digest = sha256_file(source) if held_out else None
        if digest in held_out:
            report.refused_files.append((str(source), f"same content as {held_out[digest]}; in train it would "
                                                      "leak that image into training"))
            outcome = "refused"
        elif dry_run:
            outcome = _would_place(source, target, digest).value
        else:
            outcome = place_file(source, target, move=True, source_digest=digest)[1].value
        report.counts[source.parent.name][outcome] += 1
    for name, counts in report.counts.items():
        counts["train after"] = (counts["train before"] + counts["moved"] + counts["renamed"]
                                 if dry_run else len(list_images(train_dir / name)))
    if dry_run:
        return report
    if report.refused_files:
        report.refused_path = Path(data_dir) / MOVE_REFUSED_NAME
        moved_at = datetime.now().isoformat(timespec="seconds")
        append_csv(report.refused_path, MOVE_REFUSED_FIELDS,
                   [(moved_at, source, reason) for source, reason in report.refused_files])
        logger.warning("refused %d copies identical to a validation or test image; they stay in %s (list: %s)",
                       len(report.refused_files), augmented_dir, report.refused_path)
    report.left_behind, report.removed_folder = _remove_emptied(
        augmented_dir, {Path(source) for source, _ in report.refused_files})
    return report


def _would_place(source: Path, target: Path, digest: str | None = None) -> Outcome:
    """What ``place_file(source, target, move=True)`` would do, without doing it."""
    if not target.exists():
        return Outcome.MOVED
    digest = digest or sha256_file(source)
    if target.is_file() and sha256_file(target) == digest:
        return Outcome.IDENTICAL
    return Outcome.IDENTICAL if free_name(target, digest).exists() else Outcome.RENAMED


def _remove_emptied(augmented_dir: Path, refused: set[Path]) -> tuple[list[Path], bool]:
    """Removes augmented_train once its images are gone; returns the other files it keeps, and whether it went.

    Hidden ``.*.tmp`` files (interrupted writes) go; anything else not ``refused`` is kept and returned.
    """
    kept = []
    for path in sorted(augmented_dir.rglob("*"), reverse=True):  # children before their folders
        if path.is_dir():
            if not any(path.iterdir()):
                path.rmdir()
        elif path.name.startswith(".") and path.name.endswith(".tmp"):
            path.unlink()
        elif path not in refused:
            kept.append(path)
    if not any(augmented_dir.iterdir()):
        augmented_dir.rmdir()
        return [], True
    for path in sorted(kept):
        logger.warning("kept %s: not an image, so it was not moved", path)
    return sorted(kept), False
