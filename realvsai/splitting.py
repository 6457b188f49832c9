"""Stratified, seeded, leak-free splits written as ``DATA/{train,validation,test}/<Class>/<images>``."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import json
import logging
import os
import posixpath
import random
import re
import threading
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TypeVar

from realvsai.cli import bounded, default_workers, format_table, integer, nonempty_path, plural, positive_int, progress
from realvsai.config import CHECKS_NAME, LIMITS, MAX_IMAGE_PIXELS, TrainConfig, is_split_checks, shell_path
from realvsai.errors import UserError
from realvsai.files import (
    CANNOT_LINK,
    IMAGE_EXTENSIONS,
    as_typed,
    fit_name,
    free_name,
    is_inside,
    list_images,
    map_in_threads,
    numbered,
    read_json,
    read_verified,
    reading_workers,
    remove_temporaries,
    sha256_file,
    write_changed,
    write_csv,
    write_new_in_batches,
)
from realvsai.image_stats import ImageFacts, describe_profiles, profile_classes
from realvsai.images import ImageHeader, checks_made_with, inspect_file, read_checks
from realvsai.layout import (
    AUGMENTED_TRAIN,
    MANIFEST_NAME,
    SPLITS,
    TEST,
    TRAIN,
    VALIDATION,
    ManifestRow,
    class_folder_of,
    enclosing_split,
    find_child_folder,
    find_class_folders,
    find_class_root,
    find_label_conflicts,
    find_train_test_root,
    find_validation_folder,
    folders_down,
    mask_images,
    name_key,
    read_manifest,
    refuse_missing_folder,
    refuse_nested_copy,
    refuse_one_split_of_a_download,
    refuse_split_folders,
    refuse_unfit_dataset_folder,
    rename_classes,
    rename_option,
    subfolders,
    write_manifest,
)
from realvsai.merging import REFUSED_NAME as MERGE_REFUSED_NAME
from realvsai.moving import MOVE_REFUSED_NAME, MOVED_COPIES_NAME, MOVED_SETTINGS_NAME, copies_beside_their_images

logger = logging.getLogger(__name__)
T = TypeVar("T")

COPY, MOVE, LINK = "copy", "move", "link"  # how a split places its files (the mode)
_KEEP_FILE_BYTES, _KEEP_TOTAL_BYTES = 1 << 20, 2 << 30  # see _run_split's scan
SKIPPED_NAME = "skipped.csv"
SKIPPED_FIELDS = ("source", "reason")
# Why a file is left out, by kind: each row of skipped.csv is of one kind, and the summary and the warnings
# count and show each kind from those rows, so their numbers add up to skipped.csv.
UNUSABLE, BESIDE, OUTSIDE, IN_TEST, TWO_CLASSES = "unusable", "beside", "outside", "in test", "two classes"
MASK, AUGMENTED_COPY = "mask", "augmented copy"
_SKIPPED_KINDS = {  # kind -> the files, as "N files ..." names them (one file: _ONE_SKIPPED where it differs)
    UNUSABLE: "that cannot be used (not an image, unreadable, too large or hidden)",
    MASK: "that are segmentation masks beside their images",
    AUGMENTED_COPY: "that are augmented copies beside their images (DataAugmentation.py's aug_*.jpg)",
    BESIDE: "outside the class folders",
    OUTSIDE: "in a folder that leads outside SOURCE",
    IN_TEST: "identical to a held-out file (kept in test, or in the download's validation, only)",
    TWO_CLASSES: "whose content is under two classes",
}
_ONE_SKIPPED = {
    MASK: "that is a segmentation mask beside its image",
    AUGMENTED_COPY: "that is an augmented copy beside its image (DataAugmentation.py's aug_*.jpg)",
}


def _skipped_words(kind: str, count: int) -> str:
    """What ``count`` files of ``kind`` are, after their number: "that is a ..." for one, "that are ..." for more."""
    return _ONE_SKIPPED.get(kind, _SKIPPED_KINDS[kind]) if count == 1 else _SKIPPED_KINDS[kind]


@dataclass(frozen=True)
class SplitDefaults:
    """The split scripts' defaults, held once; argparse reads them from here."""

    out: Path = TrainConfig.data
    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15)  # train, validation, test (DataSplitD1)
    val_fraction: float = 0.2  # of train, carved out as validation (DataSplitD2)
    seed: int = TrainConfig.seed
    workers: int | None = None  # files.reading_workers to check the images, one per core to place them
    max_pixels: int = MAX_IMAGE_PIXELS  # larger images are skipped: a guard against decompression bombs


@dataclass
class SplitReport:
    """What a split did; ``counts`` is the number of files per (split, class)."""

    out: Path
    counts: Counter = field(default_factory=Counter)
    skipped: dict[str, list[tuple[str, str]]] = field(  # kind (UNUSABLE...) -> (source, reason) of each file
        default_factory=lambda: {kind: [] for kind in _SKIPPED_KINDS})
    num_duplicates: int = 0  # exact duplicates placed with their first copy
    # Distinct images (by decoded pixels) per (split, class): a class of five copies of one image has one to share
    distinct_counts: Counter = field(default_factory=Counter)
    num_written: int = 0
    num_in_place: int = 0  # already at their target with the same content
    mode: str = COPY
    moved_aside: Path | None = None
    class_profiles: dict[str, dict] = field(default_factory=dict)  # image_stats.class_profiles of the placed files
    shortcut_warning: str | None = None  # set when one property (size, format...) alone predicts the class

    @property
    def num_files(self) -> int:
        return sum(self.counts.values())

    @property
    def not_trainable(self) -> str | None:
        """Why training cannot run on this split as it is (``not_trainable``), or None."""
        return not_trainable(self.counts)

    @property
    def skipped_rows(self) -> list[tuple[str, str]]:
        """Every file left out, (source, reason), sorted: the rows of skipped.csv."""
        return sorted(row for rows in self.skipped.values() for row in rows)


@dataclass
class _Item:
    """One file of SOURCE on its way to a split."""

    key: str  # path relative to the dataset root, POSIX: the sort key, so listing order never matters
    group: str  # "" (DataSplitD1) or "train" / "test" (DataSplitD2)
    class_name: str  # after --rename
    name: str  # file name in the output: sub-folders of a class folder flattened with "__"
    source: str  # where the file is (or was, for a resumed --move)
    read_from: str  # where its bytes are now
    digest: str | None = None  # sha256 of the file: its identity in manifest.csv
    pixels: str | None = None  # sha256 of its decoded pixels: the same image in other bytes (images.decode_check)
    problem: str | None = None
    facts: ImageFacts | None = None  # size, format, file size and JPEG quality, for the shortcut check
    checked: list | None = None  # inspect_file's (sha256, problem, pixels, header), for the record of checks
    data: bytes | None = None  # the bytes the scan read, kept for the copy when small


def split_by_class(source: Path, out: Path = SplitDefaults.out, *, ratios: Sequence[float] = SplitDefaults.ratios,
                   seed: int = SplitDefaults.seed, mode: str = COPY, renames: Mapping[str, str] | None = None,
                   overwrite: bool = False, workers: int | None = None, max_pixels: int = MAX_IMAGE_PIXELS
                   ) -> SplitReport:
    """Splits ``SOURCE/<Class>/<images>`` into train, validation and test, per class (DataSplitD1).
    ``mode``: copy, move or link; ``overwrite`` moves a different split in ``out`` aside instead of refusing."""
    fractions = check_ratios(ratios)
    source, out = _check_paths(source, out)
    refuse_one_split_of_a_download(source)
    root = find_class_root(source)
    _announce_root(root, source)
    class_folders = find_class_folders(root)
    refuse_split_folders(root, class_folders, class_folder_of(renames or {}, class_folders).values(), out)
    refuse_nested_copy(root, class_folders)
    class_names = rename_classes(class_folders, renames or {}, root)

    def locate(key: str) -> tuple[str, str, str] | None:
        parts = key.split("/")
        if len(parts) < 2 or parts[0] not in class_names:
            return None
        return "", class_names[parts[0]], _flat_name(parts[1:])

    def plan(items: list[_Item]) -> tuple[list[tuple[str, _Item]], list[_Item]]:
        return _assign(items, dict(zip(SPLITS, fractions)), seed), []

    # The files beside a folder that wraps the class folders are listed too: nothing in SOURCE goes unsaid.
    loose = sorted((str(path), "a file beside the class folders: only images inside a class folder are split")
                   for folder in folders_down(source, root) for path in folder.iterdir()
                   if not path.name.startswith(".") and not path.is_dir())
    settings = _settings(seed, f"--ratios {' '.join(map(str, fractions))}", mode, renames, max_pixels)
    report = _run_split(root, [root / name for name in class_folders], out, locate, plan, mode=mode,
                        overwrite=overwrite, workers=workers, max_pixels=max_pixels, settings=settings,
                        beside=loose + _hidden_in(folders_down(source, root)), validation_share="--ratios")
    if fractions[2] > 0 and not any(count for (split, _), count in report.counts.items() if split == TEST):
        # Each class went to train and validation first (2 images: 1 / 1 / 0): nothing made a test folder.
        logger.warning("no test image: each class is too small to spare one for the test share (--ratios "
                       "%s), so training will report no test numbers or model card (only its decision threshold "
                       "and accuracy by kind of image, chosen on validation). Add images and split again, or "
                       "evaluate a trained model on other images: python ModelTraining.py --evaluate MODEL "
                       "--test-dir DIR", " ".join(f"{ratio:g}" for ratio in fractions))
    return report


def split_train_test(source: Path, out: Path = SplitDefaults.out, *, val_fraction: float = SplitDefaults.val_fraction,
                     seed: int = SplitDefaults.seed, mode: str = COPY, renames: Mapping[str, str] | None = None,
                     overwrite: bool = False, workers: int | None = None, max_pixels: int = MAX_IMAGE_PIXELS
                     ) -> SplitReport:
    """Splits ``SOURCE/{train,test}/<Class>/<images>``: validation is carved out of train (DataSplitD2), or is the
    download's own ``valid/`` (``val/``, ``validation/``) where it has one. A file identical to one of a held-out
    split (a train file to a test or validation file, a validation file to a test file) is left out (listed in
    ``skipped.csv``), and so is every image outside the class folders (loose, or in another folder)."""
    if not 0 < val_fraction < 1:
        raise UserError(f"--val-fraction {val_fraction} is outside (0, 1). Use e.g. --val-fraction 0.2.")
    wrapper, out = _check_paths(source, out)
    source = find_train_test_root(wrapper, out)
    _announce_root(source, wrapper)
    group_dirs = {TRAIN: find_child_folder(source, TRAIN), TEST: find_child_folder(source, TEST)}
    if given := find_validation_folder(source):  # the download's own: its makers chose it (Kaggle's 140k faces)
        group_dirs[VALIDATION] = given
        logger.info("validation: the images of %s (--val-fraction is not used)", given)
    names = _group_class_names(group_dirs, renames or {}, source)  # group -> class folder -> class name
    group_names = {folder.name: group for group, folder in group_dirs.items()}

    def locate(key: str) -> tuple[str, str, str] | None:
        parts = key.split("/")
        if len(parts) < 3 or parts[0] not in group_names or parts[1] not in names[group_names[parts[0]]]:
            return None
        group = group_names[parts[0]]
        return group, names[group][parts[1]], _flat_name(parts[2:])

    def plan(items: list[_Item]) -> tuple[list[tuple[str, _Item]], list[_Item]]:
        kept: dict[str, list[_Item]] = {}
        held: dict[str, tuple[str, _Item]] = {}  # pixels -> the held-out split and its first copy in key order
        dropped = []
        for group in (TEST, VALIDATION, TRAIN):  # an image held out stays out of the splits that learn before it
            kept[group] = []
            for item in (item for item in items if item.group == group):
                if item.pixels in held and held[item.pixels][0] != group:
                    split, first = held[item.pixels]
                    item.problem = f"same image as {split} file {first.key}; kept in {split} only"
                    dropped.append(item)
                else:
                    kept[group].append(item)
                    held.setdefault(item.pixels, (group, item))
        carved = ([(TRAIN, item) for item in kept[TRAIN]] + [(VALIDATION, item) for item in kept[VALIDATION]]
                  if VALIDATION in group_dirs else
                  _assign(kept[TRAIN], {TRAIN: 1 - val_fraction, VALIDATION: val_fraction}, seed))
        return carved + [(TEST, item) for item in kept[TEST]], dropped

    # The images outside the class folders are listed too: nothing in SOURCE that could be split goes unsaid.
    rule = f"only images in the class folders of {', '.join(folder.name for folder in group_dirs.values())} are split"
    beside = (*folders_down(wrapper, source), *group_dirs.values())
    loose = [(str(path), f"an image beside the class folders: {rule}")
             for folder in beside for path in list_images(folder)]
    elsewhere = [(str(path), f"in {folder.name}/, which is not one of those: {rule} (move it into one to include it)")
                 for folder in subfolders(source) if folder not in group_dirs.values()
                 for path in list_images(folder, recursive=True)]
    down = folders_down(wrapper, source)  # the folders a wrapper holds beside the dataset folder are not read
    elsewhere += [(str(path), f"in {folder.name}/, beside {inner.name}/, the dataset folder: {rule} (move it into "
                              "one to include it)")
                  for outer, inner in itertools.pairwise(down) for folder in subfolders(outer) if folder != inner
                  for path in list_images(folder, recursive=True)]
    folders = [folder / name for group, folder in group_dirs.items() for name in names[group]]
    share = "" if VALIDATION in group_dirs else f"--val-fraction {float(val_fraction)}"  # a given one: not used
    return _run_split(source, folders, out, locate, plan, mode=mode, overwrite=overwrite, workers=workers,
                      max_pixels=max_pixels, settings=_settings(seed, share, mode, renames, max_pixels),
                      beside=loose + elsewhere + _hidden_in(beside))


def _settings(seed: int, share: str, mode: str, renames: Mapping[str, str] | None, max_pixels: int
              ) -> dict[str, str]:
    """What decides where a split puts each file, as the options that give it (``share``: DataSplitD1's --ratios or
    DataSplitD2's --val-fraction); "" for a setting no option gives (a copy, no --rename, a download's own
    validation). Recorded with the split's checks, so that a run refused as another split names those that made it."""
    return {"seed": f"--seed {seed}", "share": share, "mode": {COPY: "", MOVE: "--move", LINK: "--link"}[mode],
            "rename": " ".join(rename_option(old, new) for old, new in sorted((renames or {}).items())),
            "max_pixels": f"--max-pixels {max_pixels}"}


def _recorded_settings(path: Path) -> dict[str, str] | None:
    """The ``_settings`` a split's record of checks at ``path`` holds; None for a split made before the record held
    them, or a damaged record."""
    try:
        settings = read_json(path).get("settings")
    except (OSError, ValueError, AttributeError):
        return None
    return settings if isinstance(settings, dict) and all(isinstance(text, str) for text in settings.values()) else None


def _made_with(recorded: Mapping[str, str] | None, settings: Mapping[str, str]) -> tuple[str, str]:
    """Why an existing split (made with the ``recorded`` settings) differs from the one a run with ``settings`` makes,
    and what finishes it: ("; it was made with --seed 7 (this run: --seed 42)", "Run the same command with those to
    finish it, add") where some setting differs; ("...; it was made with --seed 7, without --move (this run: --seed
    42 --move)", "Run the same command with --seed 7, without --move to finish it, add") where a flag it was made
    without differs."""
    if recorded is None:
        return " (other files, seed or ratios)", "Add"
    differ = [name for name in settings if name in recorded and recorded[name] != settings[name]]
    if not differ:
        return " (other files: it was made with this run's settings)", "Add"
    given = " ".join(recorded[name] for name in differ if recorded[name])
    lacking = " ".join(settings[name] for name in differ if not recorded[name])  # a copy made, a --move run now
    made = ", ".join(([f"with {given}"] if given else []) + ([f"without {lacking}"] if lacking else []))
    this_run = " ".join(settings[name] for name in differ if settings[name])
    # "with those", where it was made without a flag this run has, sent the user back with what was refused
    return (f"; it was made {made}{f' (this run: {this_run})' if this_run else ''}",
            f"Run the same command {made if lacking else 'with those'} to finish it, add")


def _announce_root(root: Path, source: Path) -> None:
    """Says which folder inside SOURCE a split reads, where it is not SOURCE itself (a download's wrapper)."""
    if root != source:
        logger.info("using %s (the dataset folder inside %s)", root, source)


def _group_class_names(group_dirs: Mapping[str, Path], renames: Mapping[str, str], source: Path
                       ) -> dict[str, dict[str, str]]:
    """Each group's (train, test, a given validation) class folder -> class name (``layout.rename_classes``, each
    OLD applied where it is a folder, also one that spells its accents otherwise); a UserError unless all end with
    train's classes, naming the folders to rename where they differ only in letter case or accent encoding
    (train/REAL, test/real)."""
    folders = {group: find_class_folders(folder) for group, folder in group_dirs.items()}
    # The renames of each group's folders (an OLD typed with composed accents, a macOS folder's not: class_folder_of)
    applied = {group: {old: new for old, new in renames.items() if class_folder_of([old], found)[old] in found}
               for group, found in folders.items()}
    if unknown := sorted(set(renames).difference(*applied.values())):
        listed = " and ".join(f"{found} ({group})" for group, found in folders.items())
        raise UserError(f"--rename names {unknown}, but the class folders in {source} are {listed}. Use the folder "
                        "names exactly as they are spelled.")
    names = {group: rename_classes(found, applied[group], group_dirs[group]) for group, found in folders.items()}
    train = sorted(names[TRAIN].values())
    for group in (group for group in names if group != TRAIN):
        if sorted(names[group].values()) == train:
            continue
        shown = [f"{group_dirs[side]} has class folders {folders[side]}" for side in (TRAIN, group)]
        alike = {name_key(name): name for name in train}
        if sorted(alike) == sorted(name_key(name) for name in names[group].values()):
            renames_needed = " ".join(rename_option(folder, alike[name_key(name)])
                                      for folder, name in names[group].items() if name not in train)
            raise UserError(f"{shown[0]}, but {shown[1]}: they differ only in letter case or accent encoding. Add "
                            f"{renames_needed} (or rename the {group} folders) and split again.")
        if set(names[group].values()) < set(train):  # a test/ (or valid/) without some class: name it
            missing = sorted(set(train) - set(names[group].values()))
            them, folders = ("it", "its folder") if len(missing) == 1 else ("them", "their folders")
            where = " and ".join(str(group_dirs[group] / name) for name in missing)
            raise UserError(f"{shown[0]}, but {shown[1]}: it has no folder of {' and '.join(missing)}. Put {group} "
                            f"images of {them} in {where} and split again, or move {folders} out of "
                            f"{group_dirs[TRAIN]} to split without {them}.")
        raise UserError(f"{shown[0]}, but {shown[1]}. Train and {group} need the same classes: rename or remove "
                        "folders so they match, or name a class folder as the other side does with --rename OLD=NEW.")
    return names


def _hidden_in(folders: Iterable[Path]) -> list[tuple[str, str]]:
    """The hidden files and folders right in ``folders`` (beside the class folders), with ``list_images``' reasons:
    left out as inside a class folder, and as there listed in skipped.csv. A split's own .checks.json (a split
    split again) is no file of the dataset: it goes unsaid, as its manifest.csv does."""
    hidden: list[tuple[str, str]] = []
    for folder in folders:
        skipped: list[tuple[str, str]] = []
        list_images(folder, skipped=skipped)
        beside = os.listdir(folder)
        hidden += [(path, reason) for path, reason in skipped if (name := os.path.basename(path)).startswith(".")
                   and not is_split_checks(name, beside)]
    return hidden


def split_files(files: Sequence[T], fractions: Mapping[str, float], seed: int, key: Callable[[T], object] | None = None
                ) -> dict[str, list[T]]:
    """Cuts files into named splits; the same files and seed always give the same split. Each split with a share
    above 0 gets a file while another has one to spare, in the order of ``fractions`` (training needs a
    validation image of every class, which rounding alone left out of a class of 4 or 5 files)."""
    ordered = sorted(files, key=key)
    random.Random(seed).shuffle(ordered)
    ends = [min(len(ordered), round(len(ordered) * total)) for total in itertools.accumulate(fractions.values())]
    ends[-1] = len(ordered)  # the last split takes what rounding leaves
    sizes = [end - start for start, end in zip([0, *ends], ends)]
    for index, fraction in enumerate(fractions.values()):
        largest = max(range(len(sizes)), key=sizes.__getitem__)  # the first of the largest
        if fraction > 0 and not sizes[index] and sizes[largest] > 1:
            sizes[largest] -= 1
            sizes[index] += 1
    ends = list(itertools.accumulate(sizes))
    return {name: ordered[start:end] for name, start, end in zip(fractions, [0, *ends], ends)}


def check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    """``ratios`` as (train, validation, test); UserError unless three, none negative, train above 0, sum 1."""
    ratios = tuple(float(ratio) for ratio in ratios)
    if len(ratios) != 3 or not all(ratio >= 0 for ratio in ratios) or not ratios[0] > 0:  # nan fails both
        raise UserError(f"--ratios {' '.join(map(str, ratios))} must be three shares (train validation test), "
                        "none negative and train above 0, e.g. --ratios 0.7 0.15 0.15.")
    if abs(sum(ratios) - 1) > 1e-6:
        raise UserError(f"--ratios {' '.join(map(str, ratios))} add up to {sum(ratios):g}, not 1. "
                        "Give shares that add up to 1, e.g. --ratios 0.7 0.15 0.15.")
    return ratios


def _order(item: _Item) -> tuple[str, str]:
    """The sort key of a file: its path in one Unicode spelling (NFC) first, so that a name macOS spells
    decomposed (NFD) sorts, and is split, as Linux and Windows spell it."""
    return unicodedata.normalize("NFC", item.key), item.key


def _assign(items: Sequence[_Item], fractions: Mapping[str, float], seed: int) -> list[tuple[str, _Item]]:
    """Stratified split of usable ``items``; a duplicate (the same pixels) goes wherever its first copy (in key
    order) went."""
    first_of: dict[str, _Item] = {}
    for item in sorted(items, key=_order):
        first_of.setdefault(item.pixels, item)
    by_class: dict[str, list[_Item]] = defaultdict(list)
    for item in first_of.values():
        by_class[item.class_name].append(item)
    split_of: dict[str, str] = {}
    for class_name in sorted(by_class):
        for split, chosen in split_files(by_class[class_name], fractions, seed, key=_order).items():
            split_of.update((item.pixels, split) for item in chosen)
    return [(split_of[item.pixels], item) for item in items]


def _target_names(placements: Sequence[tuple[str, _Item]]) -> list[tuple[str, str, _Item]]:
    """(split, name, item) with names unique per split and class in any letter case and accent encoding (one file on
    macOS, Windows: ``name_key``)."""
    taken: set[tuple[str, str, str]] = set()
    result = []
    for split, item in sorted(placements, key=lambda placement: _order(placement[1])):
        name = item.name
        if (split, item.class_name, name_key(name)) in taken:
            name = free_name(Path(name), item.digest, lambda path, split=split, class_name=item.class_name:
                             (split, class_name, name_key(path.name)) not in taken).name
        taken.add((split, item.class_name, name_key(name)))
        result.append((split, name, item))
    return result


def _run_split(root: Path, class_dirs: Sequence[Path], out: Path, locate: Callable[[str], tuple[str, str, str] | None],
               plan: Callable[[list[_Item]], tuple[list[tuple[str, _Item]], list[_Item]]], *, mode: str,
               overwrite: bool, workers: int | None, max_pixels: int, settings: Mapping[str, str],
               beside: Sequence[tuple[str, str]] = (), validation_share: str | None = None) -> SplitReport:
    """List, check, plan, write ``manifest.csv`` (so a re-run only completes what is missing) and place;
    ``settings``: ``_settings``, recorded before the manifest (a run killed once it is written still has them);
    ``beside`` (path, reason): the files outside the class folders, listed in ``skipped.csv`` as they are;
    ``validation_share``: the option that sets validation's share, for the warnings (None: DataSplitD2's)."""
    report = SplitReport(out=out, mode=mode)
    given, root = root, root.resolve()
    old_rows = read_manifest(out / MANIFEST_NAME) if (out / MANIFEST_NAME).is_file() else None
    items, not_images = _list_items(root, class_dirs, locate)
    if old_rows and (moved := _moved_items(root, out, old_rows, locate, {item.key for item in items})):
        if mode != MOVE:  # left out, the images moved so far would stay only in the old split (even moved aside)
            raise UserError(f"{out} holds a --move split of {as_typed(root, given)}: {plural(len(moved), 'image')} "
                            f"it lists {'was' if len(moved) == 1 else 'were'} moved out of SOURCE into it. Run the "
                            "same command with --move: it finishes a stopped move (a finished one has nothing left to "
                            "do); without it they would be left out of this split.")
        items += moved
    items, masks = _leave_out_masks(items)
    items, copies = _leave_out_copies(items)
    if empty := _class_folders_without(class_dirs, root, items):  # often a nested or misnamed folder
        if tables := sorted({path.suffix for path in empty[0].rglob("*") if path.suffix in TABLE_EXTENSIONS}):
            raise UserError(f"class folder {empty[0]} holds no image files but {' and '.join(tables)} files: a "
                            "dataset's tables (a Hugging Face download), the images inside them. Export them to one "
                            "folder of image files per class first (the datasets library: load the dataset, then "
                            "save each row's image into the folder of its label), then split that folder.")
        raise UserError(f"class folder {empty[0]} holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}). "
                        "Remove it or put its images in it.")
    outside: list[tuple[str, str]] = []  # (source, reason)
    if mode == MOVE:  # a class folder that is a symlink leads outside SOURCE: nothing there is ever moved
        kept, folder_inside = [], {}
        for item in items:
            folder = os.path.dirname(item.source)
            if folder not in folder_inside:  # one realpath per folder, not per file
                folder_inside[folder] = is_inside(folder, root)
            if item.read_from != item.source or folder_inside[folder]:
                kept.append(item)
            else:
                outside.append((item.source, f"its folder leads to {os.path.realpath(folder)}, outside SOURCE, "
                                "through a symlink; --move never moves files outside SOURCE (split without --move, "
                                "or move that folder into SOURCE)"))
        items = kept
    cross_device = _cross_device(root, out)
    if mode == LINK and cross_device:
        raise UserError(f"--link needs SOURCE and --out on one file system, but {as_typed(root, given)} and {out} are "
                        "on different ones. Drop --link to copy, or choose an --out on the same disk.")
    # A copy writes the bytes the scan read for files up to _KEEP_FILE_BYTES, up to _KEEP_TOTAL_BYTES in all
    # (benchmarks/bench_split.py: reading them again costs about 15 % of a copy split of 100,000 files).
    budget, lock = [_KEEP_TOTAL_BYTES if mode == COPY or (mode == MOVE and cross_device) else 0], threading.Lock()
    checked_with = checks_made_with(max_pixels)
    known = read_checks(out / CHECKS_NAME, max_pixels)

    def inspect(item: _Item) -> None:
        data, *item.checked = inspect_file(item.read_from, max_pixels, known.get(item.source))
        item.digest, item.problem, item.pixels, header = item.checked
        item.facts = header and ImageFacts(item.class_name, header.width, header.height, header.image_format,
                                           len(data), header.jpeg_quality, header.grayscale)
        with lock:
            if item.problem is None and len(data) <= min(_KEEP_FILE_BYTES, budget[0]):
                budget[0] -= len(data)
                item.data = data

    map_in_threads(lambda chunk: [inspect(item) for item in chunk], items,
                   workers or reading_workers([item.read_from for item in items]), "checking")

    unreadable = [item for item in items if item.problem is not None]
    for broken in _class_folders_without(class_dirs, root, [item for item in items if item.problem is None]):
        if not (inside := [item for item in unreadable if _under(item.key, _inside(broken, root))]):
            continue  # a symlinked folder --move leaves out: listed as such
        raise UserError(f"class folder {broken} holds no usable image: its {plural(len(inside), 'image file')} "
                        f"{'does' if len(inside) == 1 else 'do'} not decode "
                        f"(e.g. {Path(inside[0].source).name}: {inside[0].problem}). Put readable images in it, or "
                        "remove it, and split again.")
    # Seconds without a bar on a large dataset (scikit-learn's import alone takes 2-6 s), between two bars.
    logger.info("planning the split of %s: duplicates, images under two classes, and shortcuts (a size, format or "
                "colour that alone tells a class)", plural(len(items) - len(unreadable), "image"))
    conflicting = _refuse_label_conflicts([item for item in items if item.problem is None])
    placements, dropped = plan(sorted((item for item in items if item.problem is None), key=_order))
    placed = sorted(((ManifestRow(split, item.class_name, f"{split}/{item.class_name}/{name}", item.digest,
                                  item.source, root.name), item) for split, name, item in _target_names(placements)),
                    key=lambda pair: pair[0].order())
    rows = [row for row, _ in placed]
    if not rows:  # every usable image under two classes (or, with --move, outside SOURCE): no split to write
        source, reason = min([(item.source, item.problem) for item in conflicting] + outside)
        raise UserError(f"no image of {as_typed(root, given)} is left to split: each is left out (e.g. "
                        f"{as_typed(source, given)}: {reason}). "
                        "Nothing was written.")
    distinct = {(row.split, row.class_name, item.pixels) for row, item in placed}
    report.num_duplicates = len(placed) - len(distinct)
    report.distinct_counts = Counter((split, class_name) for split, class_name, _ in distinct)
    report.skipped = {UNUSABLE: sorted(not_images + [(item.source, item.problem) for item in unreadable]),
                      MASK: sorted(masks),
                      AUGMENTED_COPY: sorted(copies),
                      BESIDE: sorted(beside),
                      OUTSIDE: sorted(outside),
                      IN_TEST: sorted((item.source, item.problem) for item in dropped),
                      TWO_CLASSES: sorted((item.source, item.problem) for item in conflicting)}
    report.counts = Counter((row.split, row.class_name) for row in rows)
    report.class_profiles, report.shortcut_warning = profile_classes([item.facts for _, item in placed])

    report.moved_aside = _prepare_out(out, rows, old_rows, overwrite, settings)
    if report.moved_aside:  # a resumed --move reads its files from their new place in the moved-aside split
        old, new = f"{out.resolve()}{os.sep}", f"{report.moved_aside.resolve()}{os.sep}"
        for item in items:
            if item.read_from.startswith(old):
                item.read_from = new + item.read_from[len(old):]
    # Seconds on a large split (the records, and in each folder what a killed run left), before the copying bar.
    logger.info("writing %s, %s and %s in %s", MANIFEST_NAME, SKIPPED_NAME, CHECKS_NAME, out)
    _write_checks(out / CHECKS_NAME, checked_with, items, settings)
    write_manifest(out / MANIFEST_NAME, rows)
    write_csv(out / SKIPPED_NAME, SKIPPED_FIELDS, report.skipped_rows)
    remove_temporaries(out, [MANIFEST_NAME, SKIPPED_NAME, CHECKS_NAME])  # what a kill during their writes left
    names_in: dict[Path, list[str]] = defaultdict(list)
    for row in rows:
        names_in[(out / row.path).parent].append(Path(row.path).name)
    for folder in sorted(names_in):
        folder.mkdir(parents=True, exist_ok=True)
        remove_temporaries(folder, names_in[folder])  # what a killed run left
    written = map_in_threads(lambda chunk: _place_chunk(chunk, mode, cross_device),
                             [(out / row.path, item) for row, item in placed], workers or default_workers(),
                             {COPY: "copying", MOVE: "moving", LINK: "linking"}[mode], spread=False)
    report.num_written, report.num_in_place = sum(written), len(written) - sum(written)
    _log_problems(report, root, validation_share)
    return report


def _write_checks(path: Path, checked_with: str, items: Iterable[_Item], settings: Mapping[str, str]) -> None:
    """Records the check of each of ``items`` that was read, by source, in order (``images.read_checks`` reads it), and
    the split's ``settings`` (``_recorded_settings`` reads them): the same files and settings write the same bytes,
    which a re-run leaves untouched."""
    fields = [field.name for field in dataclasses.fields(ImageHeader)]  # not astuple: its deep copies took seconds
    files = {}
    for item in sorted(items, key=lambda item: item.source):
        digest, problem, pixels, header = item.checked
        if digest is not None:  # a file that could not be read is tried again
            files[item.source] = [digest, problem, pixels, header and [getattr(header, name) for name in fields]]
    write_changed(path, json.dumps({"checked_with": checked_with, "settings": settings, "files": files}).encode())


def _leave_out_masks(items: Sequence[_Item]) -> tuple[list[_Item], list[tuple[str, str]]]:
    """``items`` less the segmentation masks beside their images (``layout.mask_images``), and those masks with why
    (source, reason)."""
    masks = mask_images([item.key for item in items])
    return ([item for item in items if item.key not in masks],
            [(item.source, masks[item.key]) for item in items if item.key in masks])


def _flat_name(parts: Sequence[str]) -> str:
    """The output name of a file at ``parts`` below its class folder: sub-folders joined with ``__``, cut to fit."""
    return fit_name("__".join(parts))


def _leave_out_copies(items: Sequence[_Item]) -> tuple[list[_Item], list[tuple[str, str]]]:
    """``items`` less the augmented copies beside their images (``moving.copies_beside_their_images``: a train folder
    with moved copies, split again), and those copies with why (source, reason). Split as images, a copy could land
    in validation or test while its image trains."""
    copies = copies_beside_their_images(item.key for item in items)
    return ([item for item in items if item.key not in copies],
            [(item.source, f"an augmented copy of {posixpath.basename(copies[item.key])}: split, it could land in "
              "another split than its image; split the images alone, then augment the new split (DataAugmentation.py)")
             for item in items if item.key in copies])


def _refuse_label_conflicts(items: Sequence[_Item]) -> list[_Item]:
    """Sets the problem of every file whose image (its pixels) is also under another class (all its copies), and
    returns them."""
    conflicts = find_label_conflicts((item.pixels, item.class_name, item.key)
                                     for item in sorted(items, key=_order))
    conflicting = [item for item in items if item.pixels in conflicts]
    for item in conflicting:
        others = ", ".join(f"{key} (class {name})" for name, key in sorted(conflicts[item.pixels].items())
                           if name != item.class_name)
        item.problem = (f"same image as {others}: one image under two classes is left out of both; keep it "
                        "in the folder of its true class only and split again")
    return conflicting


def _under(key: str, folder: Path) -> bool:
    """Whether the file at ``key`` (relative to the dataset root) lies in ``folder`` (relative to it too)."""
    return key.startswith(f"{folder.as_posix()}/")


def _class_folders_without(class_dirs: Sequence[Path], root: Path, items: Sequence[_Item]) -> list[Path]:
    """Those of ``class_dirs`` that none of ``items`` lies in."""
    folders = {item.key.rsplit("/", 1)[0] for item in items}
    return [folder for folder in class_dirs if not any(_under(f"{key}/", _inside(folder, root)) for key in folders)]


def _inside(folder: Path, root: Path) -> Path:
    """``folder``'s path relative to ``root``; a class folder that is a symlink stays one (not followed out)."""
    return folder.parent.resolve().relative_to(root) / folder.name


def _list_items(root: Path, class_dirs: Sequence[Path], locate: Callable) -> tuple[list[_Item], list[tuple[str, str]]]:
    """The image files under ``class_dirs`` (recursively), and the other files with why they are skipped."""
    items, skipped = [], []
    prefix = len(str(root)) + 1
    for folder in progress(class_dirs, desc="listing", unit="folder"):
        for path in map(str, list_images(root / _inside(folder, root), recursive=True, skipped=skipped)):
            key = path[prefix:].replace(os.sep, "/")
            items.append(_Item(key, *locate(key), path, path))
    return items, skipped


def _moved_items(root: Path, out: Path, old_rows: Sequence[ManifestRow], locate: Callable, present: set[str]
                 ) -> list[_Item]:
    """Files an interrupted ``--move`` already moved, counted in again so the re-run makes the same plan."""
    items = []
    root_text, resolved_out = f"{root.resolve()}{os.sep}", out.resolve()
    for row in old_rows:
        key = row.source[len(root_text):].replace(os.sep, "/")
        if not row.source.startswith(root_text) or key in present:  # still in SOURCE: every row of a copy split
            continue
        if (located := locate(key)) and not os.path.exists(row.source) and (resolved_out / row.path).is_file():
            items.append(_Item(key, *located, row.source, str(resolved_out / row.path)))
    return items


def _place_chunk(jobs: Sequence[tuple[Path, _Item]], mode: str, cross_device: bool) -> list[bool]:
    """Places each planned file at its target (never over other content); True when written, False when there.
    Copies are written a batch at a time (``files.write_new_in_batches``: one wait on the disk a batch, not an fsync
    a file, which took most of a 100,000-file split: benchmarks/bench_split.py)."""
    written: list[bool] = []
    copies: list[tuple[int, Path, _Item]] = []  # (index in written, target, item)
    for target, item in jobs:
        written.append(False)
        if os.path.lexists(target):
            _check_placed(target, item, mode)
            continue
        # A symlinked file is placed as its target's bytes: the link itself, renamed or hard-linked (os.link links
        # a symlink, not its target, on Linux), would lead nowhere from the split when its target is relative.
        symlink = os.path.islink(item.read_from)
        if mode == LINK:
            try:
                os.link(os.path.realpath(item.read_from), target)
            except OSError as error:
                if error.errno in CANNOT_LINK:
                    raise UserError(f"cannot hard-link {item.read_from} to {target} ({error.strerror}). --link needs "
                                    "SOURCE and --out on one file system that supports hard links; drop --link to "
                                    "copy.") from error
                raise
        elif mode == MOVE and not cross_device and not symlink:
            os.rename(item.read_from, target)  # the target was checked free just above
        else:
            copies.append((len(written) - 1, target, item))
            continue
        written[-1] = True

    def read() -> Iterator[tuple[Path, bytes]]:  # the bytes the scan kept, or read again and checked against its sha256
        for _, target, item in copies:
            data = item.data if item.data is not None else read_verified(item.read_from, item.digest)
            item.data = None  # the batch holds them until they are out
            yield target, data

    for (index, target, item), new in zip(copies, write_new_in_batches(read())):
        if not new:  # taken since it was checked free (another process): left as it is unless it differs
            _check_placed(target, item, mode)
            continue
        if mode == MOVE:
            os.unlink(item.read_from)  # its copy is on disk under its name
        written[index] = True
    return written


def _check_placed(target: Path, item: _Item, mode: str) -> None:
    """``target`` exists already: the planned file placed by an earlier run, left as it is (a move's source, copied
    by a run stopped before it deleted it, is deleted now); a UserError where it holds other content."""
    if not (target.is_file() and sha256_file(target) == item.digest):
        raise UserError(f"{target} exists with other content than the planned {item.source}; nothing was "
                        "overwritten. Move that file away (or delete it if it is a broken copy) and run "
                        "the same command again.")
    if (mode == MOVE and os.path.realpath(item.read_from) != os.path.realpath(target)
            and os.path.isfile(item.read_from) and sha256_file(item.read_from) == item.digest):
        os.unlink(item.read_from)  # copied by a move across file systems stopped before it deleted it


def _refuse_another_dataset(out: Path, rows: Sequence[ManifestRow], old_rows: Sequence[ManifestRow],
                            overwrite: bool) -> None:
    """A UserError when ``out`` holds a split of other datasets only (the unzipper's Next: line names --out data
    for each download): two datasets are split apart and merged (DataMerger.py), which keeps each one's source.
    The old split is this dataset's when it has its name and took a file from where this one takes it (two
    downloads that both unzip to Dataset/ are two datasets)."""
    datasets, old_datasets = {row.dataset for row in rows}, {row.dataset for row in old_rows}
    if overwrite or len(datasets) != 1 or "" in old_datasets:
        return
    sources = {row.source for row in rows}
    if datasets & old_datasets and sources & {row.source for row in old_rows}:
        return
    apart = _folder_apart(out, next(iter(datasets)), sources.__contains__)
    classes, old_classes = ({row.class_name for row in listed} for listed in (rows, old_rows))
    renames = (", and --rename OLD=NEW to name its classes as the split there does: "
               f"{', '.join(sorted(old_classes))}" if classes - old_classes else "")  # a merge refuses others
    alone = (f"; or, its classes being others than those, train on it alone once split: python ModelTraining.py "
             f"--data {shell_path(apart)}" if not classes & old_classes else "")
    raise UserError(f"{out} holds a split of another dataset ({', '.join(sorted(old_datasets))}). Split this one into "
                    f"a folder of its own (the same command with --out {shell_path(apart)}{renames}), then merge the "
                    f"two: python DataMerger.py {shell_path(apart)} --into {shell_path(out)}{alone}; or add "
                    "--overwrite to move the old split aside.")


def advised_out(out: Path, root: Path) -> Path:
    """The --out to advise for a split of the dataset folder ``root`` (the unzipper's Next: line): ``out``, unless it
    holds another dataset's split, which the split would refuse once it had checked every file; then a folder of its
    own inside it (``_folder_apart``)."""
    ours = _from_folder(root)
    return _folder_apart(out, Path(os.path.abspath(root)).name, ours) if _holds_another_split(out, ours) else out


def _from_folder(root: Path) -> Callable[[str], bool]:
    """Whether a manifest's source path lies under the dataset folder ``root``: a file of this dataset (as the split
    writes sources: through the folder's symlinks)."""
    inside = os.path.join(Path(root).resolve(), "")
    return lambda source: source.startswith(inside)


def _holds_another_split(folder: Path, ours: Callable[[str], bool]) -> bool:
    """Whether ``folder`` holds a split (its manifest.csv, or one that cannot be read) that took no file that
    ``ours`` says is this dataset's (by its source path)."""
    if not (folder / MANIFEST_NAME).is_file():
        return False
    try:
        return not any(ours(row.source) for row in read_manifest(folder / MANIFEST_NAME))
    except (UserError, OSError, UnicodeError, csv.Error):
        return True


# The files of a dataset that keeps its images inside tables (Hugging Face's Parquet and Arrow downloads).
TABLE_EXTENSIONS = frozenset({".parquet", ".arrow"})


def _folder_apart(out: Path, dataset: str, ours: Callable[[str], bool]) -> Path:
    """The folder inside ``out`` that a split of ``dataset`` is advised into: named after it (unless that name is
    one of the split's own folders: a dataset zipped as ``train.zip``), numbered past one that holds another
    dataset's split (three downloads that all unzip to Dataset/); ``ours``: ``_holds_another_split``'s."""
    taken = {name_key(name) for name in (*SPLITS, AUGMENTED_TRAIN)}
    name = f"{dataset}-dataset" if name_key(dataset) in taken else dataset
    return next(out / free for free in numbered(name) if not _holds_another_split(out / free, ours))


def _prepare_out(out: Path, rows: Sequence[ManifestRow], old_rows: Sequence[ManifestRow] | None,
                 overwrite: bool, settings: Mapping[str, str]) -> Path | None:
    """Checks that ``out`` holds nothing or this same split; returns where a different one was moved aside. A
    different one is refused (unless ``overwrite``) naming the settings it was made with that differ from this
    run's ``settings``, where its record of checks holds them."""
    if old_rows is not None:
        old_keys, new_keys = [row.key() for row in old_rows], [row.key() for row in rows]
        if old_keys == new_keys:
            return None  # the same split: complete it
        _refuse_another_dataset(out, rows, old_rows, overwrite)
        # By content and class: a file added to SOURCE, or gone from it, apart from one this run would put elsewhere.
        old_files, new_files = ({(row.class_name, row.sha256) for row in listed} for listed in (old_rows, rows))
        placed = set(new_keys)
        moved = sum((row.class_name, row.sha256) in new_files for row in old_rows if row.key() not in placed)
        datasets = {row.dataset for row in rows}  # this split's SOURCE, as its rows name it
        merged = len({(row.class_name, row.sha256) for row in old_rows if row.dataset not in datasets} - new_files)
        added, gone = len(new_files - old_files), len(old_files - new_files) - merged
        differences = [text for count, text in (
            (moved, f"{moved:,} of its {plural(len(old_keys), 'file')} {'is' if moved == 1 else 'are'} not where this "
                    "run would put them"),
            (added, f"this run would add {plural(added, 'file')} it does not list"),
            (merged, f"{plural(merged, 'file')} it lists {'was' if merged == 1 else 'were'} merged in from other "
                     "datasets (DataMerger.py)"),
            (gone, f"{plural(gone, 'file')} it lists would not be in it (gone from SOURCE, changed, or skipped "
                   "now)")) if count]
        made_with, advice = _made_with(_recorded_settings(out / CHECKS_NAME), settings)
        reason = (f"{out / MANIFEST_NAME} lists a different split: {'; '.join(differences) or 'in another order'}"
                  f"{made_with}")
    else:
        advice = "Add"
        planned = {row.path for row in rows}
        foreign = [relative for split in SPLITS if (out / split).is_dir()
                   for path in list_images(out / split, recursive=True)
                   if (relative := path.relative_to(out).as_posix()) not in planned]
        if not foreign:
            return None
        reason = (f"{out} already holds {plural(len(foreign), 'file')} in its split folders that this split does not "
                  f"make (e.g. {foreign[0]}) and no {MANIFEST_NAME}")
    if not overwrite:
        raise UserError(f"{reason}. {advice} --overwrite to move the old split aside into {out}/previous-split-<time>/ "
                        "and write this one, or choose another --out.")
    stamp = time.strftime("previous-split-%Y%m%d-%H%M%S")
    aside = next(out / name for name in numbered(stamp) if not (out / name).exists())
    aside.mkdir(parents=True)
    # augmented_train goes with the split its copies were made from: moved into the new train, a copy
    # of an image the new split puts in validation or test would leak it (its refusals and the records of the
    # copies moved into train go with it, as does a merge's list of refused files).
    augmented = find_child_folder(out, AUGMENTED_TRAIN)
    # Renamed, never deleted; the manifest last: until it goes, a re-run cut short here sees the old split and
    # moves the rest of it aside.
    for name in (*SPLITS, SKIPPED_NAME, CHECKS_NAME, augmented.name if augmented else AUGMENTED_TRAIN,
                 MOVE_REFUSED_NAME, MOVED_COPIES_NAME, MOVED_SETTINGS_NAME, MERGE_REFUSED_NAME, MANIFEST_NAME):
        if (out / name).exists():
            os.rename(out / name, aside / name)
    logger.warning("moved the previous split to %s; delete that folder when you no longer need it", aside)
    return aside


def _cross_device(source: Path, out: Path) -> bool:
    """True when ``out`` (or its nearest existing parent) is on another file system than ``source``."""
    existing = out.resolve()
    while not existing.exists():
        existing = existing.parent
    return os.stat(source).st_dev != os.stat(existing).st_dev


def _check_paths(source: Path, out: Path) -> tuple[Path, Path]:
    """``source`` and ``out``, checked: an existing SOURCE, not inside one of OUT's split folders, nor OUT in it."""
    source, out, resolved_source, resolved_out = Path(source), Path(out), Path(source).resolve(), Path(out).resolve()
    refuse_missing_folder(source, "SOURCE")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder. Choose a folder, e.g. --out data.")
    if resolved_out == resolved_source or resolved_source in resolved_out.parents:
        raise UserError(f"--out {out} is inside SOURCE {source}; its folders would be read as classes next time. "
                        "Choose an --out outside SOURCE, e.g. --out data.")
    for split in SPLITS:
        if resolved_source == resolved_out / split or (resolved_out / split) in resolved_source.parents:
            raise UserError(f"SOURCE {source} is inside the output split folder {out / split}. "
                            "Keep the raw dataset elsewhere, e.g. data/raw/.")
    if enclosing := enclosing_split(out):
        split_dir, folder = enclosing
        raise UserError(f"--out {out} is inside {folder}/ of the split in {split_dir}, whose images it would "
                        f"mix with; choose an --out outside it, e.g. --out "
                        f"{shell_path(_folder_apart(split_dir, source.resolve().name, _from_folder(source)))}.")
    refuse_unfit_dataset_folder(out, "--out")
    return source, out


_FILES_HELP = """\
- SOURCE is left untouched (copies), unless --move, which never moves a file from outside SOURCE
  (e.g. in a class folder that is a symlink to elsewhere: such files stay and are listed)
- --link makes hard links instead (instant, no extra disk; SOURCE and --out on one file system)
- the same command again completes an interrupted split and otherwise changes nothing
- a re-run reads every file again, but decodes only those new or changed since (by sha256:
  .checks.json)
- an --out that holds a different split is refused unless --overwrite, which moves the old split
  aside into OUT/previous-split-<time>/; the refusal names the settings it was made with (--seed,
  ...) where they differ from the run's, which finish it"""


def add_split_arguments(parser: argparse.ArgumentParser, defaults: SplitDefaults) -> None:
    """Adds the options DataSplitD1.py and DataSplitD2.py share, with ``defaults``; the ones that place the files
    under the rules they keep, which their --help shows above them."""
    files = parser.add_argument_group("your files and re-runs", _FILES_HELP)
    files.add_argument("--out", type=nonempty_path, default=defaults.out,
                        help="where train/, validation/, test/ and manifest.csv are written")
    parser.add_argument("--seed", type=integer, default=defaults.seed, help="seeds the shuffle of each class")
    placing = files.add_mutually_exclusive_group()
    placing.add_argument("--move", dest="mode", action="store_const", const=MOVE, default=COPY,
                         help="move the files out of SOURCE instead of copying them")
    placing.add_argument("--link", dest="mode", action="store_const", const=LINK,
                         help="hard-link the files instead of copying them (same file system only)")
    parser.add_argument("--rename", action="append", default=[], metavar="OLD=NEW",
                        help="name a class folder differently in the output; repeat for several classes")
    files.add_argument("--overwrite", action="store_true",
                        help="if --out holds a different split, move it aside into OUT/previous-split-<time>/")
    parser.add_argument("--workers", type=positive_int, default=defaults.workers,
                        help="threads that read, check and place the images (default: one per core; one to "
                             "check small images, such as CIFAKE's, where threads only wait on each other)")
    parser.add_argument("--max-pixels", type=bounded(int, LIMITS["max_pixels"]), default=defaults.max_pixels,
                        help="images with more pixels are skipped and listed (decompression bombs); a JPEG over it "
                             "is checked at its 1/8 decode, so a 200 MP phone photo passes")


def _name_prefixes(manifest: Path) -> str:
    """Where the files the ``manifest`` lists begin their names with a few words that may name their classes
    (``real_001.jpg``, ``fake_001.jpg``: the split's one class is every image), the end of its warning saying so;
    else "". Each word begins 2 names or more, and together they begin nine in ten."""
    try:
        names = [PurePosixPath(row.path).name for row in read_manifest(manifest)]
    except (UserError, OSError, UnicodeError, csv.Error):
        return ""
    words = Counter(found.group(1).lower() + found.group(2) for name in names
                    if (found := re.match(r"([A-Za-z]+)([_\- ])", name)))
    words = Counter({word: count for word, count in words.items() if count >= 2})
    if not 2 <= len(words) <= 10 or sum(words.values()) < 0.9 * len(names):
        return ""
    begun = " and ".join(f"{word} ({plural(count, 'file')})" for word, count in sorted(words.items()))
    folders = " and ".join(f"{word[:-1]}/" for word in sorted(words))
    return (f"; its file names begin with {begun}: if those name their classes, sort them into a folder each "
            f"({folders}) and split again")


def _log_problems(report: SplitReport, source: Path, validation_share: str | None = None) -> None:
    """Warns of the files left out and of classes too small for training, naming ``source``, the folder split."""
    for kind, rows in report.skipped.items():
        if rows and kind != IN_TEST:  # train copies of test images are expected (CIFAKE has them): no warning
            examples = "; ".join(f"{path}: {reason}" for path, reason in rows[:3])
            examples = f"e.g. {examples}" if len(rows) > 1 else examples
            logger.warning("left out %s %s (%s); the list is in %s", plural(len(rows), "file"),
                           _skipped_words(kind, len(rows)), examples, report.out / SKIPPED_NAME)
    classes = sorted({class_name for _, class_name in report.counts})
    if len(classes) == 1:
        # Not an error: another class can still be merged in (DataMerger.py) before training.
        logger.warning("only one class (%s) has usable images in this split, but a classifier needs at least two. "
                       "Add a folder of images for each other class to %s and split again, or merge another "
                       "split dataset of the other classes into %s with DataMerger.py --add-classes, before "
                       "training%s", classes[0], source, report.out, _name_prefixes(report.out / MANIFEST_NAME))
    if report.shortcut_warning:
        logger.warning("%s", report.shortcut_warning)
    # Training needs train and validation images of every class; test, where the split made one.
    used = [split for split in SPLITS if split != TEST or any(report.counts[(split, name)] for name in classes)]
    for class_name in classes:
        empty = [split for split in used if not report.counts[(split, class_name)]]
        if empty:
            logger.warning("class %s has no files in %s: too few usable images for this split's shares%s",
                           class_name, ", ".join(empty),
                           _no_validation_advice(report.distinct_counts[(TRAIN, class_name)], source,
                                                 validation_share, report.counts[(TRAIN, class_name)])
                           if VALIDATION in empty else "")


def _no_validation_advice(num_train: int, source: Path, validation_share: str | None, num_train_files: int = 0) -> str:
    """What to do about a class without validation images that has ``num_train`` distinct training images (exact
    copies of one image stay in its split: they are one image to share). With two or more,
    the split had one to spare: validation's share was 0 (``validation_share``, DataSplitD1's --ratios), or the
    download's own validation folder had none of the class left (DataSplitD2, which carves one otherwise); with one
    or none, no share helps: a larger one would take the lone image out of train: add images to ``source``, the folder
    split. ``num_train_files``, where more than ``num_train``, says the files are copies."""
    merge = "or merge this split into a dataset that has them (DataMerger.py)"
    if num_train >= 2 and validation_share:
        return ("; training needs a validation image of every class: split again with a validation share above 0 "
                f"({validation_share}), {merge}")
    if num_train >= 2:
        return ("; training needs a validation image of every class: add images of it to the download's validation "
                f"folder (none of its own is left there: see {SKIPPED_NAME}) and split again, {merge}")
    copies = (f" (its {num_train_files:,} files in train are exact copies of {'it' if num_train == 1 else 'them'})"
              if num_train_files > num_train else "")
    return (f"; training needs a validation image of every class, besides its training images, and this class has "
            f"{plural(num_train, 'usable image')}{copies} to share between them: add images of it to {source} and "
            f"split again, {merge}")


def format_report(report: SplitReport, next_step: bool = True) -> str:
    """The table of files per split and class, what was skipped, and (``next_step``) the next step's command, for
    the scripts to print."""
    classes = sorted({class_name for _, class_name in report.counts})
    splits = [split for split in SPLITS if any(report.counts[(split, name)] for name in classes)]
    # A row per class, as a merge's summary has: a column each made lines no terminal holds for many classes.
    rows = [[name, *(f"{report.counts[(split, name)]:,}" for split in splits),
             f"{sum(report.counts[(split, name)] for split in splits):,}"] for name in classes]
    rows.append(["total", *(f"{sum(report.counts[(split, name)] for name in classes):,}" for split in splits),
                 f"{report.num_files:,}"])
    verb = {COPY: "copied", MOVE: "moved", LINK: "linked"}[report.mode]
    num_skipped = sum(len(rows) for rows in report.skipped.values())
    by_kind = ", ".join(f"{len(rows):,} {_skipped_words(kind, len(rows))}" for kind, rows in report.skipped.items()
                        if rows)
    lines = [
        format_table(["class", *splits, "all"], rows),
        "",
        f"{plural(report.num_files, 'file')} in {report.out}: {report.num_written:,} {verb}, "
        f"{report.num_in_place:,} already in place.",
        f"exact duplicates: {report.num_duplicates:,} (each kept in the split of its first copy)",
        f"skipped: {plural(num_skipped, 'file')}"
        + (f" (list: {report.out / SKIPPED_NAME}): {by_kind}" if by_kind else ""),
        f"manifest: {report.out / MANIFEST_NAME}",
    ]
    lines += [f"{class_name}: {text}" for class_name, text in describe_profiles(report.class_profiles).items()]
    if report.moved_aside:
        lines.append(f"the previous split was moved to {report.moved_aside}")
    if next_step:
        why = report.not_trainable
        lines.append(f"Not ready for training: {why} (the warnings above say what to do)." if why
                     else next_step_line(report.out))
    return "\n".join(lines)


def not_trainable(counts: Mapping[tuple[str, str], int]) -> str | None:
    """Why training cannot run on a dataset of these ``(split, class)`` counts (one class; a class without train or
    validation images, as a train-only --ratios 1 0 0 leaves for a merge, or a merge's --add-classes brings), or
    None."""
    classes = sorted({class_name for _, class_name in counts})
    if len(classes) < 2:
        return f"one class ({classes[0]})" if classes else "no images"
    lacking = [f"no {split} images of {', '.join(without)}" for split in (TRAIN, VALIDATION)
               if (without := [name for name in classes if not counts.get((split, name))])]
    return "; ".join(lacking) or None


def next_step_line(data: Path) -> str:
    """The command that follows a split (or a merge) of the dataset ``data``: the merge first where ``data`` lies in
    the folder of another split dataset (data/photos beside data/train), as the README's worked example runs."""
    beside = Path(data).parent
    data = shell_path(data)
    if (beside / TRAIN).is_dir():
        return (f"Next: merge it into the split beside it: python DataMerger.py {data} --into {shell_path(beside)} "
                f"(or train on it alone: python ModelTraining.py --data {data})")
    return f"Next: python DataAugmentation.py --data {data} (optional), or train: python ModelTraining.py --data {data}"
