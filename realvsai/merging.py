"""Merge split datasets (``train|validation|test/<Class>/``) into one, without loss, overwrite or leakage."""

from __future__ import annotations

import dataclasses
import logging
import os
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from realvsai.cli import format_table, plural, progress, refuse_given_twice
from realvsai.config import CHECKS_NAME, MAX_IMAGE_PIXELS, shell_path
from realvsai.errors import UserError
from realvsai.files import (
    Outcome,
    append_csv,
    atomic_write_bytes,
    free_name,
    is_inside,
    keep_times,
    list_images,
    map_in_threads,
    numbered,
    place_files,
    read_list,
    reading_workers,
    refuse_unwritable,
    remove_temporaries,
    sha256_file,
)
from realvsai.images import ImageHeader, read_and_check, read_checks
from realvsai.layout import (
    MANIFEST_NAME,
    SPLITS,
    TRAIN,
    ManifestRow,
    alike_names,
    class_folder_of,
    enclosing_split,
    find_label_conflicts,
    name_key,
    read_manifest,
    read_split_classes,
    refuse_missing_folder,
    refuse_unfit_dataset_folder,
    rename_option,
    split_folder_error,
    subfolders,
    typed_parent,
    write_manifest,
)
from realvsai.moving import (
    MOVED_SETTINGS_NAME,
    CopySource,
    MovedCopies,
    add_moved_copies,
    moved_copies,
    read_copy_settings,
    read_moved_copies,
    remove_copy_record_temporaries,
)

logger = logging.getLogger(__name__)

REFUSED_NAME = "merge-refused.csv"
_PLACE_CHUNK = 256  # files placed together (files.place_files: one wait on the disk for their copies)
REFUSED_FIELDS = ("merged_at", "source", "reason")
REFUSED_KEY = ("source", "reason")  # a file refused again for the same reason keeps one row
# Why a merge refuses a file, in the words its summary and DataMerger.py's error line use
REFUSED_WHY = ("content already in another split or under another class, not a usable image, or outside SOURCE "
               "with --move")


@dataclass(frozen=True)
class _File:
    """One image of a split dataset."""

    split: str
    class_name: str
    path: Path
    digest: str  # sha256 of its bytes: its identity in manifest.csv and when it is copied
    pixels: str | None  # sha256 of its decoded pixels (images.read_and_check): its identity for leakage and labels
    problem: str | None  # why it is not a usable image (images.read_and_check), or None
    dataset: str = ""  # the dataset it belongs to (manifest.csv's column), carried into the target's manifest
    copy_of: CopySource | None = None  # an augmented copy's source (DATA/augmented-copies.csv), carried too
    origin: str = ""  # where its dataset's manifest.csv says it was taken from (its source column), or ""


@dataclass
class MergeReport:
    """What a merge did (or, with ``dry_run``, would do)."""

    into: Path
    dry_run: bool
    before: int = 0
    added: int = 0  # written, under their own name or a new one
    renamed: int = 0  # of ``added``: written under a new name because theirs was taken
    identical: int = 0  # skipped: the same bytes are already in that split and class
    refused: list[tuple[str, str]] = field(default_factory=list)  # (source file, reason)
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (source file, reason): not an image it reads
    after: int = 0
    counts: Counter = field(default_factory=Counter)  # files per (split, class) after
    added_counts: Counter = field(default_factory=Counter)  # files added per (split, class)
    started: str = field(default_factory=lambda: datetime.now().isoformat(timespec="seconds"))


def _split_again(source: Path, into: Path, renames: str, add_classes: bool) -> str:
    """The commands that split ``source`` again with ``renames`` (its --rename options) into a folder of its own,
    SOURCE-renamed (a re-split where it is would be refused as another split), and merge that into ``into``."""
    renamed = source.with_name(f"{source.name}-renamed")
    return (f"python DataSplitD2.py {shell_path(source)} --out {shell_path(renamed)} {renames}, then merge that: "
            f"python DataMerger.py {shell_path(renamed)} --into {shell_path(into)}"
            f"{' --add-classes' if add_classes else ''}")


def merge_datasets(
    sources: Sequence[Path], into: Path, *, move: bool = False, dry_run: bool = False, workers: int | None = None,
    max_pixels: int = MAX_IMAGE_PIXELS, add_classes: bool = False,
) -> MergeReport:
    """Merges the split datasets ``sources`` into ``into``; ``move`` removes each source file once its
    content is safely in the target (refused files stay). A source adds to the target's classes (a new target's:
    those of the source with the most); a class the target has not is a UserError unless ``add_classes``.

    One image is one set of decoded pixels, as the splitters see it: the same image in other bytes (another
    lossless format, other metadata) is kept out of a second split and a second class. A source file that does not
    decode, or has more than ``max_pixels`` pixels, is refused.
    """
    into, sources = Path(into), [Path(source) for source in sources]
    _check_folders(sources, into)
    manifest = into / MANIFEST_NAME  # also lists the classes a merge cut short had yet to write
    folders = {child.name for split in SPLITS if (into / split).is_dir() for child in subfolders(into / split)}
    old_rows = read_manifest(manifest) if manifest.is_file() else []  # as the merge finds it, before its records
    listed = {row.class_name for row in old_rows}
    # A class manifest.csv names that a folder spells otherwise (macOS decomposes accents) is that folder's class.
    target_classes = sorted(folders | {name for name, folder in class_folder_of(listed, folders).items()
                                       if folder not in folders})
    source_classes = {source: sorted({name for names in read_split_classes(source).values() for name in names})
                      for source in sources}
    # The classes a merge adds to: the target's, or a new target's source with the most (the first of those).
    reference = (into, target_classes) if target_classes else max(source_classes.items(), key=lambda item: len(item[1]))
    known = list(reference[1])
    spelling = {}  # source -> its class folder -> the known spelling (macOS writes accents decomposed)
    for source, classes in source_classes.items():
        spelling[source] = class_folder_of(classes, known)
        if unknown := [name for name in classes if spelling[source][name] not in known]:
            # REAL beside Real: one class to whoever made them, and one folder on macOS and Windows
            case_of = {name_key(name): name for name in known}
            if alike := {name: case_of[name_key(name)] for name in unknown if name_key(name) in case_of}:
                renames = " ".join(rename_option(old, new) for old, new in sorted(alike.items()))
                raise UserError(
                    f"{source} has classes {classes}, and {sorted(alike)} differ only in letter case or accent "
                    f"encoding from {sorted(alike.values())} of {reference[0]}: nothing was merged. Split it again "
                    f"under those names: {_split_again(source, into, renames, add_classes)}"
                )
            if not add_classes:
                raise UserError(
                    f"{source} has classes {classes}, but {reference[0]} has {reference[1]}, not {unknown}: a merge "
                    f"adds images to the classes a dataset has. To add {', '.join(unknown)} as "
                    f"{'a new class' if len(unknown) == 1 else 'new classes'}, run again "
                    f"with --add-classes; where a class is spelled otherwise, split it again under the names of "
                    f"{reference[0]}: "
                    f"{_split_again(source, into, '--rename OLD=NEW (one for each class to rename)', add_classes)}"
                )
            known += unknown
        if doubled := alike_names(classes):
            raise UserError(f"{source} has classes {doubled}, which differ only in letter case or accent encoding (one "
                            "folder on macOS): move the images of one into the other, then merge again.")

    existing = _hash_dataset(into, workers, "reading target", max_pixels)
    # Whether the target's train holds augmented copies, by the rule DataAugmentation and training follow (its own
    # record of them, as it was before this merge adds to it).
    moved = moved_copies(into)
    copies_in_train = any(file.copy_of or moved.holds(file.path, file.digest)
                          for file in existing if file.split == TRAIN)
    left_out: list[tuple[str, str]] = []
    incoming = [(source, dataclasses.replace(file, class_name=spelling[source][file.class_name])) for source in sources
                for file in _hash_dataset(source, workers, f"reading {source.name}", max_pixels,
                                          dataset=source.resolve().name, left_out=left_out)]
    # Two datasets split from folders of one name (two downloads that both unzip to Dataset/) stay two sources.
    dataset_names = _dataset_names(manifest, incoming)
    incoming = [(source, dataclasses.replace(file, dataset=dataset_names[(source, file.dataset)]))
                for source, file in incoming]
    if left_out:  # macOS' .DS_Store and the like are not worth a word
        logger.warning("%s in the sources %s left out (e.g. %s: %s)%s",
                       plural(len(left_out), "file"), "is" if len(left_out) == 1 else "are", *left_out[0],
                       "; they stay where they are" if move else "")
    if broken := [file for file in existing if file.problem]:
        logger.warning("the target holds %s (e.g. %s: %s); kept as found, though a split leaves such files out",
                       plural(len(broken), "file that is not a usable image", "files that are not usable images"),
                       broken[0].path, broken[0].problem)
    # A class folder that is a symlink leads outside its SOURCE: --move never takes files from there.
    outside = [(str(file.path), f"its folder leads to {file.path.parent.resolve()}, outside {source}, through a "
                "symlink; --move never moves files outside SOURCE (merge without --move, or move that folder in)")
               for source, file in incoming if move and not is_inside(file.path.parent, source)]
    outside_paths = {path for path, _ in outside}
    # Seconds without a bar on a large dataset, up to the copying bar.
    logger.info("planning the merge of %s into %s: duplicates, names taken, images under two classes%s",
                plural(len(incoming), "file"), into, "" if dry_run else ", and its manifest.csv")
    actions = _plan(existing, [file for _, file in incoming if str(file.path) not in outside_paths], into)

    read_list(into / REFUSED_NAME, REFUSED_FIELDS, REFUSED_KEY)  # one it cannot add to stops it before it starts
    report = MergeReport(into=into, dry_run=dry_run, before=len(existing), left_out=left_out)
    report.refused = outside + [(str(file.path), reason) for file, kind, _, reason in actions if kind == "refuse"]
    source_of = {file.path: source for source, file in incoming}
    adding = {(source_of[file.path], file.dataset) for file, _, target, _ in actions if target}
    for (source, name), new in sorted(dataset_names.items()):
        if new != name and (source, new) in adding:
            logger.warning("%s: its dataset %s %s recorded as %s in %s, since another dataset there has its name "
                           "(the accuracy per source names it so)", source, name, "would be" if dry_run else "is",
                           new, manifest)
    report.identical = sum(kind == "identical" for _, kind, _, _ in actions)
    report.renamed = sum(kind == "rename" for _, kind, _, _ in actions)
    report.added_counts = Counter((file.split, file.class_name) for file, _, target, _ in actions if target)
    report.added = sum(report.added_counts.values())
    report.counts = Counter((file.split, file.class_name) for file in existing) + report.added_counts
    taken = {file.path for file, kind, _, _ in actions if kind != "refuse"}
    with_copies = {source for source, file in incoming if file.copy_of and file.path in taken}
    mixed = copies_in_train and _mixed_copy_settings(into, with_copies)
    if dry_run:  # fails where the merge would: --into, and each class folder it would write into
        for folder in sorted({into, *(target.parent for _, _, target, _ in actions if target)}):
            refuse_unwritable(folder)
        if mixed:
            logger.warning("would remove %s: the augmented copies it merges into %s were made with other settings "
                           "than those there", into / MOVED_SETTINGS_NAME, into / TRAIN)
        report.after = report.before + report.added
        return report

    names_in: dict[Path, list[str]] = defaultdict(list)
    for path in [file.path for file in existing] + [target for _, _, target, _ in actions if target]:
        names_in[path.parent].append(path.name)
    for folder, names in [*names_in.items(), (into, [MANIFEST_NAME, REFUSED_NAME])]:
        if folder.is_dir():
            remove_temporaries(folder, names)  # what a killed merge left
    remove_copy_record_temporaries(into)
    # The records first, so a merge cut short keeps them for every file it placed (a re-run completes the rest):
    # each file's source and dataset, each augmented copy's source, and the copies' settings.
    into.mkdir(parents=True, exist_ok=True)
    # Each file of the target by the source its manifest row names, with the sha256 of its bytes now (the records
    # come first, as below): a copy that a merge killed before its source's time left is "identical" now, and gets it.
    on_disk = {file.path.relative_to(into).as_posix(): file.digest for file in existing}
    copies = {row.source: (into / row.path, on_disk.get(row.path)) for row in old_rows}
    _update_manifest(into, existing, [(target, file) for file, _, target, _ in actions if target], actions, moved)
    add_moved_copies(into, [file.copy_of for file, kind, _, _ in actions if file.copy_of and kind != "refuse"])
    if mixed:  # no one record holds for them all: one that named half of them would be read as all of theirs
        (into / MOVED_SETTINGS_NAME).unlink()
        logger.warning("the augmented copies merged into %s were made with other settings than those in its train: "
                       "removed %s, which no longer holds for them all (the model card names no settings for "
                       "them, and DataAugmentation.py adds copies there with any)", into / TRAIN,
                       into / MOVED_SETTINGS_NAME)
    elif not copies_in_train and not (into / MOVED_SETTINGS_NAME).exists():
        _carry_copy_settings(into, with_copies)
    added = []  # (target path, source file)
    # Counts the files it places only: with those it skips or refuses, a merge that added nothing showed
    # "copying: 0/10000" standing still. None where there is none to place.
    to_place = sum(1 for _, _, target, _ in actions if target)
    bar = progress(None, total=to_place, desc="moving" if move else "copying") if to_place else None
    try:
        for start in range(0, len(actions), _PLACE_CHUNK):
            chunk = actions[start:start + _PLACE_CHUNK]
            for file, kind, _, _ in chunk:
                if kind != "identical":
                    continue
                copy, digest = copies.get(str(file.path.resolve()), (None, None))
                if digest == file.digest:
                    keep_times(file.path, copy)
                if move:  # its content was read from the target during this run: safe there
                    file.path.unlink()
            placing = [(file, target) for file, _, target, _ in chunk if target]
            # place_files never overwrites: should a name have been taken since the plan, it keeps both.
            placed = place_files([(file.path, target, file.digest) for file, target in placing], move=move)
            for (file, _), (target, outcome) in zip(placing, placed):
                if outcome is Outcome.IDENTICAL:
                    report.added, report.identical = report.added - 1, report.identical + 1
                    report.added_counts[(file.split, file.class_name)] -= 1
                else:
                    added.append((target, file))
            if bar is not None:
                bar.update(len(placing))
    finally:
        if bar is not None:
            bar.close()
    logger.info("counting the images now in %s, and writing its manifest.csv", into)  # seconds for 100,000
    report.after = sum(1 for _ in _list_dataset(into))
    if report.before + report.added != report.after:
        logger.warning("the target held %s, %s added, but it now holds %s: something else changed it during "
                       "the merge", plural(report.before, "file"), plural(report.added, "was", "were"),
                       plural(report.after, "file"))
    _update_manifest(into, existing, added, actions, moved)
    if report.refused:
        # Appended: the lists of earlier merges into this folder stay, each row dated by its merge; a file refused
        # again for the same reason keeps one row, dated by this merge.
        append_csv(into / REFUSED_NAME, REFUSED_FIELDS,
                   [(report.started, source, reason) for source, reason in report.refused], key=REFUSED_KEY)
    return report


def _dataset_names(manifest: Path, incoming: Sequence[tuple[Path, _File]]) -> dict[tuple[Path, str], str]:
    """The name each (SOURCE, dataset) of ``incoming`` goes by in the target of ``manifest``: the name of the
    target's dataset (or an earlier SOURCE's) that lists one of its files by where it was taken from (the same dataset
    merged again, or a merge cut short), else its own, else, when another dataset has that one (two downloads
    that both unzip to Dataset/; also spelled with another accent encoding), the first free of NAME-2, NAME-3, ..."""
    known: dict[str, set[str]] = defaultdict(set)  # dataset name -> where its files were taken from
    for row in read_manifest(manifest) if manifest.is_file() else []:
        if row.dataset:
            known[row.dataset].add(row.source)
    groups: dict[tuple[Path, str], set[str]] = defaultdict(set)
    for source, file in incoming:  # what the target records as its source, and what its own manifest records
        groups[(source, file.dataset)].update(filter(None, (str(file.path.resolve()), file.origin)))
    names = {}
    for (source, name), origins in groups.items():
        shared = Counter({other: len(origins & taken_from) for other, taken_from in known.items()})
        if (best := max(shared.items(), key=lambda item: (item[1], item[0] == name), default=(None, 0)))[1]:
            names[(source, name)] = best[0]
        else:  # a name that differs from a known one only in accent encoding (a Mac's "e" and accent) prints alike
            taken = {unicodedata.normalize("NFC", other) for other in known}
            names[(source, name)] = next(new for new in numbered(name)
                                         if unicodedata.normalize("NFC", new) not in taken)
        known[names[(source, name)]] |= origins
    return names


def _plan(existing: Sequence[_File], incoming: Sequence[_File], into: Path
          ) -> list[tuple[_File, str, Path | None, str]]:
    """(file, kind, target, reason) for each incoming file; kind is add, rename, identical or refuse.
    Pure, so a dry run and a real run follow the same plan.

    The leak and label rules compare images by their decoded pixels, as the splitters do; names and the
    "identical" skip compare bytes, as copying does. A target file that does not decode takes part in neither
    rule: no usable file shares its bytes, let alone its pixels.
    """
    usable = [file for file in [*existing, *incoming] if not file.problem]
    # Across splits and sources, as the splitters do: every incoming copy of such an image is refused.
    conflicts = find_label_conflicts((file.pixels, file.class_name, str(file.path)) for file in usable)
    # An augmented copy records its source's bytes sha256: the pixels of the file with those bytes, when this
    # merge sees one. When it sees none, no file here is that image in those bytes; the same image in other bytes
    # goes unnoticed then.
    pixels_of = {file.digest: file.pixels for file in usable}
    # pixels sha256 -> (split that owns it, why in words): an image, and an augmented copy's source, which
    # must not be in another split than the copy.
    home: dict[str, tuple[str, str]] = {}

    def settle(file: _File, path: Path) -> None:  # path: where the file is (or goes) in the target
        home.setdefault(file.pixels, (file.split, f"same content as {path}"))
        if file.copy_of and file.copy_of.source_sha256 in pixels_of:
            home.setdefault(pixels_of[file.copy_of.source_sha256],
                            (file.split, f"augmented copies of it, e.g. {path}"))

    present: dict[tuple[str, str], set[str]] = defaultdict(set)  # (split, class) -> contents
    # name_key of a target path -> its content: IMG_1.jpg beside img_1.jpg is one file on macOS and Windows, so it
    # gets a name of its own on every system
    names: dict[str, str] = {}
    for file in existing:
        if not file.problem:
            settle(file, file.path)
        present[(file.split, file.class_name)].add(file.digest)
        names[name_key(str(file.path))] = file.digest
    actions = []
    for file in incoming:
        if file.problem:
            actions.append((file, "refuse", None, f"{file.problem}; the splitters leave such files out too"))
            continue
        if file.pixels in conflicts:
            others = ", ".join(f"{where} (class {name})" for name, where in sorted(conflicts[file.pixels].items())
                               if name != file.class_name)
            actions.append((file, "refuse", None, f"same content as {others}: one image under two classes would be "
                                                  "learnt under both labels; keep it in the folder of its true class "
                                                  "only and merge again"))
            continue
        owner, why = home.get(file.pixels, (file.split, ""))
        source = pixels_of.get(file.copy_of.source_sha256) if file.copy_of else None
        source_owner, source_why = home.get(source, (file.split, ""))
        if owner != file.split:
            actions.append((file, "refuse", None, f"{why} ({owner}); adding it to {file.split} would put one "
                                                  "image in two splits"))
        elif source_owner != file.split:
            actions.append((file, "refuse", None, f"an augmented copy of an image in {source_owner} ({source_why}); "
                                                  f"in {file.split} it would leak that image"))
        elif file.digest in present[(file.split, file.class_name)]:
            settle(file, file.path)
            actions.append((file, "identical", None, ""))
        else:
            wanted = into / file.split / file.class_name / file.path.name
            target = wanted if name_key(str(wanted)) not in names else free_name(
                wanted, file.digest,
                lambda candidate, digest=file.digest: names.get(name_key(str(candidate)), digest) == digest)
            # Named by its place in the target: the reason a refusal gives is then the same when the merge runs
            # again (an interrupted one), and merge-refused.csv keeps one row for it.
            settle(file, target)
            names[name_key(str(target))] = file.digest
            present[(file.split, file.class_name)].add(file.digest)
            actions.append((file, "add" if target == wanted else "rename", target, ""))
    return actions


def _update_manifest(into: Path, existing: Sequence[_File], added: Sequence[tuple[Path, _File]],
                     actions: Sequence[tuple[_File, str, Path | None, str]], moved: MovedCopies) -> None:
    """Rewrites ``into/manifest.csv`` to list every image now in the target, keeping known sources, but the
    augmented copies in train (``copy_of``, or ``moved`` as the target's records had them before the merge), which
    DATA/augmented-copies.csv lists instead, as after the split."""
    manifest = into / MANIFEST_NAME
    sources = {row.path: row.source for row in read_manifest(manifest)} if manifest.is_file() else {}
    # A file an interrupted merge already wrote is "identical" now: its source is the matching file.
    matched = {(file.split, file.class_name, file.digest): file for file, kind, _, _ in actions if kind == "identical"}
    rows = {}
    for file in existing:
        if file.copy_of or (file.split == TRAIN and moved.holds(file.path, file.digest)):
            continue
        relative = file.path.relative_to(into).as_posix()
        match = matched.get((file.split, file.class_name, file.digest))
        source = sources.get(relative) or (str(match.path.resolve()) if match else "")
        rows[relative] = ManifestRow(file.split, file.class_name, relative, file.digest, source,
                                     file.dataset or (match.dataset if match else ""))
    for target, file in added:
        if file.copy_of:
            continue
        relative = target.relative_to(into).as_posix()
        rows[relative] = ManifestRow(file.split, file.class_name, relative, file.digest, str(file.path.resolve()),
                                     file.dataset)
    write_manifest(manifest, sorted(rows.values(), key=ManifestRow.order))


def _carry_copy_settings(into: Path, sources: Iterable[Path]) -> None:
    """Gives ``into``, whose train held no augmented copies, the settings record of the ``sources`` whose copies
    it takes, when they agree: DataAugmentation then makes new copies alike. Copies of several settings leave
    it without one."""
    records = {(source / MOVED_SETTINGS_NAME).read_bytes() for source in sources
               if (source / MOVED_SETTINGS_NAME).is_file()}
    if len(records) == 1:
        atomic_write_bytes(into / MOVED_SETTINGS_NAME, records.pop())


def _mixed_copy_settings(into: Path, sources: Iterable[Path]) -> bool:
    """Whether ``into``, whose train holds augmented copies, has a settings record that the ``sources`` whose copies
    it takes do not share (theirs differ, or they kept none): the model card and DataAugmentation's check of new
    copies read it as the record of all."""
    settings = read_copy_settings(into / MOVED_SETTINGS_NAME)
    return settings is not None and any(read_copy_settings(source / MOVED_SETTINGS_NAME) != settings
                                        for source in sources)


def _check_folders(sources: Sequence[Path], into: Path) -> None:
    if into.exists() and not into.is_dir():
        raise UserError(f"--into {into} is a file, not a folder. Choose a folder, e.g. --into data.")
    _refuse_split_folder(into, "--into")
    if enclosing := enclosing_split(into):
        split_dir, folder = enclosing
        raise UserError(f"--into {into} is inside {folder}/ of the split in {split_dir}, whose images it would mix "
                        f"with; nothing was written. Merge into the dataset folder itself: --into "
                        f"{shell_path(split_dir)}.")
    refuse_unfit_dataset_folder(into, "--into")
    resolved_into = into.resolve()
    refuse_given_twice(sources, "SOURCE")
    for source in sources:
        refuse_missing_folder(source, "SOURCE")
        _refuse_split_folder(source, "SOURCE")
        resolved = source.resolve()
        # A source beside the target's split folders (data/art with --into data) is fine; one inside
        # them would be read as a class, and a target inside a source would merge into itself.
        inside_split = any(resolved_into / split in (resolved, *resolved.parents) for split in SPLITS)
        if resolved == resolved_into or resolved in resolved_into.parents or inside_split:
            raise UserError(f"SOURCE {source} and --into {into} overlap. Keep each SOURCE out of the target's "
                            "train/, validation/ and test/ folders, and the target out of every SOURCE.")


def _refuse_split_folder(folder: Path, flag: str) -> None:
    """UserError when ``folder`` (``flag``: --into or SOURCE) is one split of a dataset, not the dataset: merged
    into, it would get train/, validation/ and test/ of its own (test images inside train). A folder named like a
    split (any letter case) is one, unless it holds split folders and no class folders of images (a dataset that
    happens to be called test); so is an --into that holds class folders of images and no split folder. A SOURCE
    of class folders only is left to ``read_split_classes``, whose message says to split it first."""
    absolute = Path(os.path.abspath(folder))  # "." and ".." have a name here
    children = subfolders(folder) if folder.is_dir() else []
    holds_splits = any(name_key(child.name) in SPLITS for child in children)
    classes = [child.name for child in children if name_key(child.name) not in SPLITS and list_images(child)]
    if name_key(absolute.name) in SPLITS and (classes or not holds_splits):
        raise split_folder_error(folder, flag)
    if flag == "--into" and classes and not holds_splits:
        raise UserError(f"--into {folder} holds class folders of images ({', '.join(classes)}), not train/, "
                        "validation/ and test/; nothing was written. Give the dataset folder that holds train/ "
                        f"(e.g. --into {shell_path(typed_parent(folder))}, if {absolute.name} is one of its splits).")


def _list_dataset(root: Path, left_out: list[tuple[str, str]] | None = None) -> list[tuple[str, str, Path]]:
    """(split, class, path) of every image in ``root/<split>/<Class>/``, in a stable order; the other files of the
    class folders, and the images in their sub-folders, added to ``left_out`` as (path, reason), hidden ones not."""
    listed, skipped = [], []
    for split in SPLITS:
        for folder in subfolders(root / split) if (root / split).is_dir() else []:
            listed += [(split, folder.name, path) for path in list_images(folder, skipped=skipped)]
            skipped += [(str(path), "in a sub-folder of a class folder: only the images right in a class folder "
                                    "are merged (move it up to merge it)")
                        for nested in subfolders(folder) for path in list_images(nested, recursive=True)]
    if left_out is not None:
        left_out += [(path, reason) for path, reason in skipped if not os.path.basename(path).startswith(".")]
    return listed


def _hash_dataset(root: Path, workers: int | None, desc: str, max_pixels: int, dataset: str = "",
                  left_out: list[tuple[str, str]] | None = None) -> list[_File]:
    """Every image of ``root`` with the sha256 of its bytes and of its pixels (or why it does not decode), and its
    dataset: as ``root/manifest.csv`` names it, else ``dataset``; ``left_out`` gets the files it does not read."""
    logger.info("listing the images of %s", root)  # seconds before the bar for 100,000 images
    listed = _list_dataset(root, left_out) if root.is_dir() else []
    manifest = root / MANIFEST_NAME
    rows = {row.path: row for row in read_manifest(manifest)} if manifest.is_file() else {}
    # A split's record of checks, by the source manifest.csv names for each file (read as its re-run reads it).
    known = read_checks(root / CHECKS_NAME, max_pixels) if rows else {}

    def check(path: Path) -> tuple[str, str | None, str | None]:
        row = rows.get(path.relative_to(root).as_posix())
        return _read_and_check(path, max_pixels, known.get(row.source) if row else None)

    # One read a file, for its sha256 and its decode: a file that cannot be read stops the merge, as it always has.
    checked = map_in_threads(lambda chunk: [check(path) for _, _, path in chunk], listed,
                             workers or reading_workers([path for _, _, path in listed]), desc)
    copies = read_moved_copies(root) if root.is_dir() else {}
    files = []
    for (split, class_name, path), (digest, problem, pixels) in zip(listed, checked):
        row = rows.get(path.relative_to(root).as_posix())
        files.append(_File(split, class_name, path, digest, pixels, problem, (row and row.dataset) or dataset,
                           copies.get(digest), row.source if row and row.sha256 == digest else ""))
    return files


def _read_and_check(path: Path, max_pixels: int,
                    known: tuple[str, str | None, str | None, ImageHeader | None] | None = None
                    ) -> tuple[str, str | None, str | None]:
    """``images.read_and_check``'s (sha256, problem, pixels) of ``path``, taken from ``known`` (its check in a split's
    record, ``read_checks``) when its bytes still have that sha256, as the split's re-run takes it
    (``images.inspect_file``): only a file new or changed since is decoded."""
    if known is not None and (digest := sha256_file(path)) == known[0]:
        return digest, known[1], known[2]
    return read_and_check(path, max_pixels)


def format_merge_report(report: MergeReport) -> str:
    """The table of files per split and class, and the counts that must add up, for DataMerger.py."""
    classes = sorted({class_name for _, class_name in report.counts})
    splits = [split for split in SPLITS if any(report.counts[(split, name)] for name in classes)]
    rows = [[split, name, f"{report.counts[(split, name)] - report.added_counts[(split, name)]:,}",
             f"{report.added_counts[(split, name)]:,}", f"{report.counts[(split, name)]:,}"]
            for split in splits for name in classes]
    would = "would be " if report.dry_run else ""
    lines = [
        format_table(["split", "class", "before", "added", "after"], rows),
        "",
        f"files in {report.into}: {report.before:,} before + {report.added:,} {would}added = {report.after:,} after",
        f"skipped identical: {report.identical:,}; {would}renamed (name taken by other content): {report.renamed:,}; "
        f"refused ({REFUSED_WHY}): {len(report.refused):,}"
        + (f" (list: {report.into / REFUSED_NAME}, rows merged at {report.started})"
           if report.refused and not report.dry_run else ""),
    ]
    if report.left_out:
        lines.append(f"left out of the sources: {plural(len(report.left_out), 'file')} (not images read here, or in "
                     "a sub-folder of a class folder): " + "; ".join(f"{path}: {reason}"
                                                                      for path, reason in report.left_out[:3])
                     + ("; ..." if len(report.left_out) > 3 else ""))
    if report.dry_run:
        lines.append("dry run: nothing was written or removed.")
    return "\n".join(lines)
