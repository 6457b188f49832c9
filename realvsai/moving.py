"""The file side of offline augmentation: which copies each training image gets, and moving them into train.

    DATA/train/<Class>/cat.jpg  --DataAugmentation.py-->   DATA/augmented_train/<Class>/aug_cat_0.jpg ...
    DATA/augmented_train/<Class>/*  --MoveAugmentedImages.py-->  DATA/train/<Class>/

Copy names derive from the source name, so a re-run finds the copies it made before (in either
folder) and does not multiply them. Each copy's source is recorded by its sha256 in
``augmented_train/sources.csv``, so the move can refuse a copy whose source is no longer a training
image (a re-split put it in validation or test). No TensorFlow here: planning and moving start instantly.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import logging
import os
import posixpath
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath

from realvsai.cli import progress
from realvsai.config import MAX_IMAGE_PIXELS, flag_name, shell_path
from realvsai.errors import UserError
from realvsai.files import (
    Outcome,
    append_csv,
    atomic_write_bytes,
    fit_name,
    free_name,
    is_inside,
    list_images,
    open_csv,
    place_file,
    read_json,
    read_list,
    remove_temporaries,
    sha256_file,
    temporary_of,
    write_csv,
    write_json,
)
from realvsai.images import MAX_JPEG_QUALITY, MIN_JPEG_QUALITY, read_headers
from realvsai.layout import (
    AUGMENTED_TRAIN,
    MANIFEST_NAME,
    TEST,
    TRAIN,
    VALIDATION,
    find_child_folder,
    find_class_folders,
    leave_out_masks,
    name_key,
    no_train_folder,
    read_manifest,
    refuse_split_folder,
    subfolders,
)

logger = logging.getLogger(__name__)

COPY_PREFIX = "aug_"
EARLIER_COPIES = "checking earlier copies"  # the progress bar of the copies planning reads
MOVE_REFUSED_NAME = "move-refused.csv"
MOVE_REFUSED_FIELDS = ("moved_at", "source", "reason")
MOVE_REFUSED_KEY = ("source", "reason")  # a copy refused again for the same reason keeps one row
SOURCES_NAME = "sources.csv"  # in augmented_train: which training image each copy was made from
SOURCES_FIELDS = ("copy", "copy_sha256", "source", "source_sha256")
SETTINGS_NAME = "settings.json"  # in augmented_train: the settings its copies were made with
RECORD_NAMES = (SOURCES_NAME, SETTINGS_NAME)  # augmented_train's records of its copies: go with the last copy
MOVED_COPIES_NAME = "augmented-copies.csv"  # in DATA: the source of each copy moved into train, by content
MOVED_COPIES_FIELDS = ("copy_sha256", "source", "source_sha256")
MOVED_SETTINGS_NAME = "augmented-settings.json"  # in DATA: the settings of the copies moved into train


def _whole_number(value: object, low: int | None = None, high: int | None = None) -> bool:
    # bool is an int to Python, but true is no number of copies
    return (isinstance(value, int) and not isinstance(value, bool)
            and (low is None or value >= low) and (high is None or value <= high))


# What DataAugmentation.py records in the settings files (SETTINGS_NAME, MOVED_SETTINGS_NAME): what a copy's bytes
# depend on besides its source and number, and how many copies each image has. name -> (what it must hold, in
# words; the check), as its flags take them.
COPY_SETTINGS: dict[str, tuple[str, Callable[[object], bool]]] = {
    "copies": ("a whole number above 0", lambda value: _whole_number(value, low=1)),
    "preset": ('a preset name such as "classic"', lambda value: isinstance(value, str) and value != ""),
    "seed": ("a whole number", _whole_number),
    "size": ('"native" or a whole number of pixels above 0',
             lambda value: value == "native" or _whole_number(value, low=1)),
    "jpeg_quality": (f"a whole number from {MIN_JPEG_QUALITY} to {MAX_JPEG_QUALITY}",
                     lambda value: _whole_number(value, low=MIN_JPEG_QUALITY, high=MAX_JPEG_QUALITY)),
}


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
    not_images: list[tuple[Path, str]] = field(default_factory=list)  # (file in a class folder, why it is no image)
    masks: list[tuple[Path, str]] = field(default_factory=list)  # (segmentation mask beside its image, why left out)
    copy_names: dict[Path, tuple[str, ...]] = field(default_factory=dict)  # source -> all its copies' names


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
    """``(DATA/train, DATA/augmented_train)`` (either letter case); ``UserError`` if DATA or train is missing, or
    where augmented_train leads to one of DATA's splits, or into or around one, through a symlink: copies written
    there would be that split's images (in validation, copies of train's images choose the best epoch)."""
    data_dir = Path(data_dir)
    refuse_split_folder(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"{data_dir} is not a folder. Give the dataset folder that holds train/ with --data.")
    train_dir = find_child_folder(data_dir, TRAIN)
    if train_dir is None:
        raise no_train_folder(data_dir, "Run DataSplitD1.py or DataSplitD2.py first")
    augmented_dir = find_child_folder(data_dir, AUGMENTED_TRAIN) or data_dir / AUGMENTED_TRAIN
    if augmented_dir.is_symlink():
        target = os.path.realpath(augmented_dir)
        for split in (TRAIN, VALIDATION, TEST):
            if not (folder := find_child_folder(data_dir, split)):
                continue
            where = ("" if target == os.path.realpath(folder) else ", inside " if is_inside(target, folder)
                     else ", around " if is_inside(folder, target) else None)
            if where is not None:
                raise UserError(f"{augmented_dir} leads to {target}{where and where + str(folder)} through a symlink: "
                                f"copies written there would mix with the {split} images. Remove that link, or point "
                                "it at a folder of its own, then run the same command again.")
    return train_dir, augmented_dir


def plan_copies(data_dir: Path, copies: int, max_pixels: int = MAX_IMAGE_PIXELS, verify: bool = False) -> CopyPlan:
    """Lists the training images, reads each one's header and names its copies ``aug_<stem>_<k>.jpg`` (or,
    where names collide, ``aug_<stem>_<extension>_<k>.jpg``: ``_copy_bases``).

    Earlier copies in train (``MovedCopies``) are not augmented again. A copy in augmented_train
    is made when ``sources.csv`` records it with its sha256; any other file under its name is planned as
    missing, and the writer compares it with the copy it makes (``offline_augmentation``). Files whose
    ``verify`` plans the copies ``sources.csv`` records as missing too, so each is compared (copies whose
    settings were not recorded: ``has_unrecorded_copies``). Files whose
    header is broken are skipped with a warning (the augmentation pipeline decodes the pixels); other files
    that are not images read here go to ``plan.not_images``.
    ``UserError`` if the dataset folder, train, or its class folders are missing.
    """
    train_dir, output_dir = dataset_folders(data_dir)
    plan = CopyPlan(train_dir=train_dir, output_dir=output_dir)
    recorded = {} if verify else read_copy_sources(output_dir)
    listed: dict[str, list[Path]] = {}
    for class_name in find_class_folders(train_dir):
        skipped: list[tuple[str, str]] = []
        files = list_images(train_dir / class_name, skipped=skipped)
        # Hidden files (.DS_Store, an interrupted write's .tmp) are left out without a word, as everywhere.
        plan.not_images += [(Path(path), reason) for path, reason in skipped if os.path.basename(path)[0] != "."]
        listed[class_name], masks = leave_out_masks(files)  # a lesion's outline, not an image of its class
        plan.masks += masks
    # Earlier copies are told by their bytes, each read under a progress bar (CIFAKE's, moved into train: 13 s).
    moved = moved_copies(data_dir)
    earlier = moved.among([path for files in listed.values() for path in files], desc=EARLIER_COPIES)
    made_here = _recorded_copies(output_dir, list(listed), recorded)
    targets: dict[Path, tuple[str | None, ...]] = {}
    for class_name, files in listed.items():
        sources = [path for path in files if path not in earlier]
        plan.earlier_copies += len(files) - len(sources)
        earlier_here = {path.name for path in files if path in earlier}
        # A copy told by its bytes holds a recorded copy's, which is whole: only one told by its name is opened.
        made = {entry.name for entry in _copy_entries(train_dir / class_name)
                if entry.name in earlier_here and (moved.digests is not None or is_made(entry.path))}
        made |= made_here.get(class_name, set())
        folder, bases = f"{output_dir / class_name}{os.sep}", _copy_bases(sources)
        for path in sources:
            names = [fit_name(f"{COPY_PREFIX}{bases[path]}_{k}.jpg") for k in range(copies)]
            plan.copy_names[path] = tuple(names)
            targets[path] = tuple(None if name in made else folder + name for name in names)
    # One thread: reading a header takes tens of microseconds, mostly Python (measured slower with 4).
    headers = read_headers(list(targets), max_pixels, desc="checking", workers=1, gray=False)
    for (source, copy_targets), header in zip(targets.items(), headers):
        if isinstance(header, str):
            logger.warning("skipping %s: %s", source, header)
            plan.broken.append((source, header))
        else:
            plan.images.append(SourceImage(source, source.parent.name, copy_targets, header.width, header.height,
                                           header.needs_pil))
    return plan


@dataclass(frozen=True)
class MovedCopies:
    """Which files in a dataset's train are augmented copies moved there (MoveAugmentedImages.py): named ``aug_*``
    and, where ``DATA/augmented-copies.csv`` exists, listed there by content (``digests``), since a training image
    may be called aug_holiday.jpg too. Without that record (no copy moved yet, or moved by an older version) the
    name decides, except for the images the split placed (``DATA/manifest.csv``'s train rows, ``originals``): a
    download augmented by its makers names its own images aug_0_123.png."""

    digests: frozenset[str] | None
    originals: frozenset[str] = frozenset()  # "train/<Class>/<name>" of the split's own images

    def holds(self, path: Path, digest: str | None = None) -> bool:
        """Whether ``path``, in train, is a moved copy; ``digest``: its sha256 where the caller has it already."""
        if not os.path.basename(path).startswith(COPY_PREFIX):  # most are not: no Path made (243,579 in CIFAKE)
            return False
        if self.digests is not None:
            return (digest or sha256_file(path)) in self.digests
        path = Path(path)
        return f"{TRAIN}/{path.parent.name}/{path.name}" not in self.originals

    def among(self, paths: Iterable[Path], digests: Mapping[Path, str] | None = None, *, desc: str) -> set[Path]:
        """The moved copies among ``paths``, in train (``holds``). Where their bytes decide, the files named like
        copies whose sha256 ``digests`` lacks are read under a progress bar (``desc``): each is a file to read."""
        named = [path for path in paths if os.path.basename(path).startswith(COPY_PREFIX)]
        known = digests or {}
        if self.digests is not None and (unread := [path for path in named if path not in known]):
            read = {path: sha256_file(path) for path in progress(unread, total=len(unread), desc=desc)}
            known = {**known, **read}
        return {path for path in named if self.holds(path, known.get(path))}


def moved_copies(data_dir: Path) -> MovedCopies:
    """``MovedCopies`` of the dataset ``data_dir``, from its records."""
    if (Path(data_dir) / MOVED_COPIES_NAME).is_file():
        return MovedCopies(frozenset(read_moved_copies(data_dir)))
    manifest = Path(data_dir) / MANIFEST_NAME
    rows = read_manifest(manifest) if manifest.is_file() else []
    return MovedCopies(None, frozenset(row.path for row in rows if row.split == TRAIN))


def _recorded_copies(output_dir: Path, class_names: Iterable[str], recorded: Mapping[str, CopySource]
                     ) -> dict[str, set[str]]:
    """The names of the copies in each ``output_dir/<class>/`` that hold the bytes ``recorded`` (``sources.csv``)
    has for them, read under a progress bar."""
    listed = [(class_name, entry, record) for class_name in class_names
              for entry in _copy_entries(Path(output_dir) / class_name)
              if (record := recorded.get(f"{class_name}/{entry.name}")) is not None
              and entry.is_file(follow_symlinks=False)]
    made: dict[str, set[str]] = defaultdict(set)
    for class_name, entry, record in progress(listed, total=len(listed), desc=EARLIER_COPIES) if listed else ():
        if sha256_file(entry.path) == record.copy_sha256:
            made[class_name].add(entry.name)
    return made


def _copy_bases(sources: Iterable[Path]) -> dict[Path, str]:
    """What each of one folder's ``sources`` is called in its copies' names, ``aug_<base>_<k>.jpg``: its stem,
    or where several share a stem (cat.png, cat.jpg) stem and extension (cat_png), numbered (cat_png_2) if a
    stem or an earlier base took that.

    Bases differ in more than letter case and accent encoding (aug_Cat_0.jpg is aug_cat_0.jpg on macOS and Windows:
    ``name_key``), so no two sources write the same file, and the same files always get the same bases, whatever
    order they come in.
    """
    sources = sorted(sources)
    stems = Counter(name_key(path.stem) for path in sources)
    bases = {path: path.stem for path in sources if stems[name_key(path.stem)] == 1}
    taken = {name_key(base) for base in bases.values()}
    for path in sources:
        if path not in bases:
            base = f"{path.stem}_{path.suffix.lstrip('.').lower()}"
            bases[path] = next(name for name in itertools.chain([base], (f"{base}_{n}" for n in itertools.count(2)))
                               if name_key(name) not in taken)
            taken.add(name_key(bases[path]))
    # Different bases give different names: <k> has no "_", so the last "_" of a name ends its base.
    return bases


def copies_beside_their_images(paths: Iterable[str]) -> dict[str, str]:
    """The augmented copies among ``paths`` (POSIX) whose image lies beside them, each with that image's path:
    DataAugmentation names the copies of an image ``aug_<base>_<k>.jpg`` (``_copy_bases``), and MoveAugmentedImages
    puts them in its class folder. A file named aug_* with no such image beside it (a download's own aug_0_123.png)
    is none."""
    by_folder: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        by_folder[posixpath.dirname(path)].append(path)
    found = {}
    for names in by_folder.values():
        images = [PurePosixPath(path) for path in names if not posixpath.basename(path).startswith(COPY_PREFIX)]
        image_of = {name_key(f"{COPY_PREFIX}{base}"): str(path) for path, base in _copy_bases(images).items()}
        for path in names:
            head, _, tail = posixpath.basename(path).rpartition("_")  # <k> has no "_" (_copy_bases)
            number, _, extension = tail.partition(".")
            if number.isdigit() and extension.lower() == "jpg" and name_key(head) in image_of:
                found[path] = image_of[name_key(head)]
    return found


def _copy_entries(folder: Path) -> list[os.DirEntry]:
    """The entries of ``folder`` named like copies (``aug_*``); removes the hidden temporary files of copies
    (``.aug_*.<random or pid>.tmp``, as ``files.temporary_of`` reads them) an interrupted write left."""
    if not folder.is_dir():
        return []
    with os.scandir(folder) as entries:
        entries = list(entries)
    for entry in entries:
        if (temporary_of(entry.name) or "").startswith("." + COPY_PREFIX):
            os.unlink(entry.path)
    return [entry for entry in entries if entry.name.startswith(COPY_PREFIX)]


@dataclass(frozen=True)
class CopySource:
    """What ``sources.csv`` records of one copy: its own sha256, and its source's path under DATA and sha256."""

    copy_sha256: str
    source: str  # POSIX, relative to DATA: train/<Class>/cat.jpg
    source_sha256: str


def read_copy_sources(augmented_dir: Path) -> dict[str, CopySource]:
    """``augmented_train/sources.csv`` as ``{"<Class>/<copy name>": CopySource}`` ({} without the file).

    ``UserError`` when the file lacks the columns this project writes.
    """
    path = Path(augmented_dir) / SOURCES_NAME
    if not path.is_file():
        return {}
    with open_csv(path) as stream:
        reader = csv.DictReader(stream)
        if missing := [name for name in SOURCES_FIELDS if name not in (reader.fieldnames or [])]:
            raise UserError(f"{path} is not a list written by DataAugmentation.py (no column {missing[0]!r}). "
                            "Move it away and run DataAugmentation.py again: it records the copies' sources.")
        return {row["copy"]: CopySource(row["copy_sha256"], row["source"], row["source_sha256"]) for row in reader}


def add_copy_sources(augmented_dir: Path, sources: Mapping[str, CopySource]) -> None:
    """Adds ``sources`` (keyed as ``read_copy_sources``) to ``augmented_train/sources.csv``, keeping its rows.

    Rows are sorted by copy, so the same copies give the same file however many runs made them.
    """
    if not sources:
        return
    rows = {**read_copy_sources(augmented_dir), **sources}
    write_csv(Path(augmented_dir) / SOURCES_NAME, SOURCES_FIELDS,
              [(copy, record.copy_sha256, record.source, record.source_sha256)
               for copy, record in sorted(rows.items())])


def record_copy_sources(plan: CopyPlan, data_dir: Path, made: Mapping[str, str]) -> int:
    """Records in ``sources.csv`` each copy of ``plan``'s images at a path in ``made`` that has no row yet.

    ``made``: the paths this run wrote, or found holding the very bytes it makes, with the sha256 of those bytes
    (``CopyReport.made``); only those, so a file under a copy's name that no run compared is never taken for the
    copy. Run also when the run is interrupted, so the copies written so far keep their record. Returns the number
    of rows added.
    """
    made = {os.path.normpath(path): digest for path, digest in made.items()}
    known = read_copy_sources(plan.output_dir)
    added: dict[str, CopySource] = {}
    for source, names in plan.copy_names.items():
        class_name, source_name, source_digest = source.parent.name, None, None
        folder = os.path.normpath(os.path.join(plan.output_dir, class_name)) + os.sep  # names have no separator
        for name in names:
            key, copy = f"{class_name}/{name}", folder + name
            if key in known or copy not in made:
                continue
            source_name = source_name or source.relative_to(data_dir).as_posix()
            source_digest = source_digest or sha256_file(source)
            added[key] = CopySource(made[copy], source_name, source_digest)
    add_copy_sources(plan.output_dir, added)
    return len(added)


def read_moved_copies(data_dir: Path) -> dict[str, CopySource]:
    """``DATA/augmented-copies.csv`` as ``{copy sha256: CopySource}`` ({} without the file): what each augmented copy
    moved into train was made from, found by content wherever the copy has gone since (a merge, a new name).

    ``UserError`` when the file lacks the columns this project writes.
    """
    path = Path(data_dir) / MOVED_COPIES_NAME
    if not path.is_file():
        return {}
    with open_csv(path) as stream:
        reader = csv.DictReader(stream)
        if missing := [name for name in MOVED_COPIES_FIELDS if name not in (reader.fieldnames or [])]:
            raise UserError(f"{path} is not a list written by MoveAugmentedImages.py (no column {missing[0]!r}). "
                            "Move it away and run the step again.")
        return {row["copy_sha256"]: CopySource(row["copy_sha256"], row["source"], row["source_sha256"])
                for row in reader}


def add_moved_copies(data_dir: Path, records: Iterable[CopySource]) -> None:
    """Adds ``records`` to ``DATA/augmented-copies.csv``, keeping its rows (sorted, so the same copies give the same
    file)."""
    rows = read_moved_copies(data_dir)
    new = {record.copy_sha256: record for record in records if record.copy_sha256 not in rows}
    if new:
        write_csv(Path(data_dir) / MOVED_COPIES_NAME, MOVED_COPIES_FIELDS,
                  [(record.copy_sha256, record.source, record.source_sha256)
                   for _, record in sorted({**rows, **new}.items())])


def read_copy_settings(path: Path) -> dict[str, object] | None:
    """The settings record at ``path`` (augmented_train's ``SETTINGS_NAME`` or DATA's ``MOVED_SETTINGS_NAME``),
    None where there is none.

    Raises:
        UserError: in one line naming the file, and the key and what it should hold, when the record is not what
            DataAugmentation.py writes (a hand edit): not JSON, not an object, without one of ``COPY_SETTINGS``, or
            with a value its flag does not take. Keys it does not know are left alone.
    """
    path = Path(path)
    if not path.is_file():
        return None
    remedy = "Set it back to what the copies were made with, or delete the file if no one knows that."
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:  # not JSON, or not UTF-8
        raise UserError(f"{path} is not valid JSON ({error}), but DataAugmentation.py records the settings of the "
                        f"copies there as a JSON object. {remedy}") from None
    if not isinstance(recorded, dict):
        raise UserError(f"{path} is not a JSON object of settings (such as {{\"copies\": 10, \"seed\": 42, ...}}), "
                        f"which DataAugmentation.py records there. {remedy}")
    for name, (expected, check) in COPY_SETTINGS.items():
        if name not in recorded:
            raise UserError(f'{path} has no "{name}": it should hold {expected}, the {flag_name(name)} the copies '
                            f"were made with. {remedy}")
        if not check(recorded[name]):
            shown = json.dumps(recorded[name], ensure_ascii=False)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise UserError(f'{path}: "{name}" is {shown}, but it should be {expected}, the {flag_name(name)} the '
                            f"copies were made with. {remedy}")
    return recorded


def changed_copy_settings(data_dir: Path, settings: Mapping[str, object]
                          ) -> tuple[Path, dict[str, tuple[object, object]]]:
    """The folder whose copies (aug_*) new ones would join, and ``{name: (recorded, given)}`` for each of
    ``settings`` other than those copies were made with, less a higher ``copies`` (the copies there stay and
    the missing ones are added).

    The folder is augmented_train while it holds copies (their record: its ``settings.json``), else train when
    it holds copies moved there (``DATA/augmented-settings.json``). {} when neither holds copies to mix with, or
    there is no record (copies made before settings were recorded: completed, not refused). ``UserError`` when
    the record is not one DataAugmentation.py writes (``read_copy_settings``).
    """
    train_dir, augmented_dir = dataset_folders(data_dir)
    if any(augmented_dir.glob(f"*/{COPY_PREFIX}*")):
        folder, path = augmented_dir, augmented_dir / SETTINGS_NAME
    elif holds_moved_copies(data_dir):
        folder, path = train_dir, Path(data_dir) / MOVED_SETTINGS_NAME
    else:
        return augmented_dir, {}
    recorded = read_copy_settings(path)
    if recorded is None:
        return folder, {}
    changed = {name: (recorded.get(name), value) for name, value in settings.items() if recorded.get(name) != value}
    old_copies, new_copies = changed.get("copies", (None, None))
    if isinstance(old_copies, int) and isinstance(new_copies, int) and old_copies < new_copies:
        del changed["copies"]
    return folder, changed


def moved_copies_in_train(data_dir: Path) -> Iterator[Path]:
    """The augmented copies moved there (``MovedCopies``) that the train folder of the dataset ``data_dir`` holds."""
    moved = moved_copies(data_dir)
    return (copy for copy in dataset_folders(data_dir)[0].glob(f"*/{COPY_PREFIX}*") if moved.holds(copy))


def holds_moved_copies(data_dir: Path) -> bool:
    """Whether the train folder of the dataset ``data_dir`` holds augmented copies moved there (``MovedCopies``)."""
    return next(moved_copies_in_train(data_dir), None) is not None


def has_unrecorded_copies(augmented_dir: Path) -> bool:
    """True when ``augmented_dir`` holds copies (aug_*) but no ``settings.json``: made before settings were
    recorded, with settings no one knows, so a run's own settings are recorded only once it has found every
    copy there to be its own (``record_copy_settings``)."""
    augmented_dir = Path(augmented_dir)
    return not (augmented_dir / SETTINGS_NAME).is_file() and any(augmented_dir.glob(f"*/{COPY_PREFIX}*"))


def record_copy_settings(augmented_dir: Path, settings: Mapping[str, object]) -> None:
    """Writes ``settings`` to ``augmented_train/settings.json`` (atomically) unless it holds them already.

    Run before the first copy is written, so no copy is ever there without its settings; where copies are there
    without a record already (``has_unrecorded_copies``), only after a run found each of them to be its own.
    """
    path = Path(augmented_dir) / SETTINGS_NAME
    with contextlib.suppress(ValueError):  # an unreadable record (beside no copies) is replaced
        if read_json(path) == dict(settings):
            return
    write_json(path, dict(settings), strict=True)


@dataclass
class MoveReport:
    """What ``move_augmented`` did (or, with ``dry_run``, would do)."""

    # class -> {"train before", "moved", "identical", "renamed", "refused", "train after": count}; refused:
    # copies that would leak a validation or test image, or whose source is unknown, left in augmented_train
    counts: dict[str, Counter]
    refused_files: list[tuple[str, str]] = field(default_factory=list)  # (copy, reason)
    refused_kinds: Counter = field(default_factory=Counter)  # REFUSED_* -> count
    refused_path: Path | None = None  # where they are listed (None for a dry run or no refusal)
    augmented_dir: Path | None = None  # where the refused copies stay
    left_behind: list[Path] = field(default_factory=list)  # non-image files kept in augmented_train
    removed_folder: bool = False


# Why a copy stays in augmented_train, as the summary counts them
REFUSED_IDENTICAL = "identical to a validation or test image"
REFUSED_HELD_OUT_SOURCE = "made from a validation or test image"
REFUSED_SOURCE_GONE = "made from an image no longer in train"
REFUSED_UNLISTED = "without a recorded source"
REFUSED_SYMLINK = "in a symlinked folder"


def remove_copy_record_temporaries(data_dir: Path) -> None:
    """Removes the temporary files a kill during the write of a record of augmented copies left: in DATA (the
    copies moved into train, their settings, the move's refusals) and in augmented_train (its settings, sources)."""
    if not Path(data_dir).is_dir():
        return
    for folder, names in ((Path(data_dir), (MOVED_COPIES_NAME, MOVED_SETTINGS_NAME, MOVE_REFUSED_NAME)),
                          (find_child_folder(data_dir, AUGMENTED_TRAIN), (SETTINGS_NAME, SOURCES_NAME))):
        if folder is not None and folder.is_dir():
            remove_temporaries(folder, names)


def move_augmented(data_dir: Path, dry_run: bool = False, move_unlisted: bool = False) -> MoveReport | None:
    """Moves every image in ``DATA/augmented_train/<Class>/`` into ``DATA/train/<Class>/``, then removes the folder.

    Never overwrites (``files.place_file``). A copy stays where it is, added (dated) to ``DATA/move-refused.csv``
    with the reason, when it has the content of a validation or test image, or when ``sources.csv`` says its
    source is now in validation or test, or in no split: in train it would leak that image. So does a copy
    ``sources.csv`` does not list (or lists with other content), unless ``move_unlisted``.
    An interrupted run can simply be run again. None when there is no augmented_train. ``UserError``
    if the dataset or its train is missing, or augmented_train has a class train has not (nothing moves).
    """
    train_dir, augmented_dir = dataset_folders(data_dir)
    if os.path.lexists(augmented_dir) and not augmented_dir.is_dir():
        raise UserError(f"{augmented_dir} is a file, but it should be the folder of augmented copies; nothing was "
                        "moved. Move or rename that file, then run DataAugmentation.py and this again.")
    if not dry_run:
        remove_copy_record_temporaries(data_dir)  # what a killed run left
    if not augmented_dir.is_dir():
        return None
    train_classes = find_class_folders(train_dir)
    classes = [child.name for child in subfolders(augmented_dir)]
    unknown = sorted(set(classes) - set(train_classes))
    if unknown:
        raise UserError(
            f"{augmented_dir} has class folders {unknown} that {train_dir} does not have "
            f"(train has {train_classes}). Rename them to a train class or remove them, then run again."
        )
    report = MoveReport({name: Counter({"train before": len(list_images(train_dir / name))}) for name in classes},
                        augmented_dir=augmented_dir)
    sources = [path for name in classes for path in list_images(augmented_dir / name)]
    # Checked before anything moves: the move makes it the record of the copies in train.
    settings = read_copy_settings(augmented_dir / SETTINGS_NAME) if sources else None
    held_out = {sha256_file(path): path  # every validation and test image (none needed when nothing moves)
                for split in (VALIDATION, TEST) if sources and (folder := find_child_folder(data_dir, split))
                for path in list_images(folder, recursive=True)}
    refusal = _Refusal(Path(data_dir), train_dir, augmented_dir, held_out, move_unlisted, settings)
    inside = {name: is_inside(augmented_dir / name, augmented_dir) for name in classes}
    checked = []  # (copy, sha256, reason it stays or None)
    for source in progress(sources, total=len(sources), desc="checking"):
        if not inside[source.parent.name]:  # a class folder that is a symlink to elsewhere
            checked.append((source, None, (REFUSED_SYMLINK, f"its folder leads to {source.parent.resolve()}, outside "
                                                            f"{augmented_dir}, through a symlink; files there are "
                                                            "never moved (move that folder into augmented_train)")))
        else:
            digest = sha256_file(source)
            checked.append((source, digest, refusal.why(source, digest)))
    read_list(Path(data_dir) / MOVE_REFUSED_NAME, MOVE_REFUSED_FIELDS, MOVE_REFUSED_KEY)  # before anything moves
    read_moved_copies(data_dir)  # the record the move adds to: one it cannot read stops a dry run too
    if not dry_run and any(not reason for _, _, reason in checked):
        # Before the first copy moves: in train, only these records say what a copy was made from and how. The
        # settings only where every copy in train has them: beside copies of unknown settings (a merge of copies
        # made otherwise, or an older version's) a record would misstate those.
        record_settings = settings is not None and (
            not holds_moved_copies(data_dir) or read_copy_settings(Path(data_dir) / MOVED_SETTINGS_NAME) == settings)
        if settings is not None and not record_settings:
            logger.warning("%s holds augmented copies of other or unknown settings: %s is not written for the "
                           "copies moved beside them", train_dir, Path(data_dir) / MOVED_SETTINGS_NAME)
        add_moved_copies(data_dir, [record for source, digest, reason in checked if not reason
                                    and (record := refusal.records.get(f"{source.parent.name}/{source.name}"))
                                    and record.copy_sha256 == digest])
        if record_settings:
            atomic_write_bytes(Path(data_dir) / MOVED_SETTINGS_NAME, (augmented_dir / SETTINGS_NAME).read_bytes())
    for source, digest, reason in progress(checked, desc="moving"):
        target = train_dir / source.parent.name / source.name
        if reason:
            kind, text = reason
            report.refused_files.append((str(source), text))
            report.refused_kinds[kind] += 1
            outcome = "refused"
        elif dry_run:
            outcome = _would_place(source, target, digest).value
        else:
            try:
                outcome = place_file(source, target, move=True, source_digest=digest)[1].value
            except PermissionError as error:
                folder = _unwritable_folder(error, source, target)
                raise UserError(f"cannot write to {folder} (permission denied): check its owner and permissions "
                                f"(e.g. chmod u+w {folder}), then run the same command again; the copies moved so "
                                "far stay in train.") from error
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
                   [(moved_at, source, reason) for source, reason in report.refused_files], key=MOVE_REFUSED_KEY)
    report.left_behind, report.removed_folder = _remove_emptied(
        augmented_dir, {Path(source) for source, _ in report.refused_files})
    return report


class _Refusal:
    """Why a copy must not go into train, from its content and its recorded source."""

    def __init__(self, data_dir: Path, train_dir: Path, augmented_dir: Path, held_out: Mapping[str, Path],
                 move_unlisted: bool, settings: Mapping[str, object] | None):
        self.data_dir, self.train_dir, self.augmented_dir = data_dir, train_dir, augmented_dir
        self.held_out, self.move_unlisted = held_out, move_unlisted
        self.records = read_copy_sources(augmented_dir)
        self._in_train: set[str] | None = None  # sha256 of every train image, hashed only when needed
        self._checked: dict[tuple[str, str], bool] = {}  # (source, sha256): a source's ten copies hash it once
        data = shell_path(data_dir)  # the commands name it: pasted without it, they work on data/
        if settings is not None:
            # A run killed before it recorded the copies it wrote: a re-run with their settings records each copy
            # it finds to be its own.
            flags = " ".join(f"{flag_name(name)} {value}" for name, value in settings.items())
            self.remedy = (f"Run DataAugmentation.py again with their settings first, as it records the copies it "
                           f"made (python DataAugmentation.py --data {data} {flags})")
        else:
            self.remedy = "Make copies with DataAugmentation.py, which records their sources"
        self.move_unlisted_command = f"python MoveAugmentedImages.py --data {data} --move-unlisted"

    def why(self, copy: Path, digest: str) -> tuple[str, str] | None:
        """``(REFUSED_* kind, reason in words)``, or None when ``copy`` (sha256 ``digest``) may go into train."""
        if digest in self.held_out:
            return REFUSED_IDENTICAL, (f"same content as {self.held_out[digest]}; in train it would leak that image "
                                       "into training")
        record = self.records.get(f"{copy.parent.name}/{copy.name}")
        if record is None or record.copy_sha256 != digest:
            if self.move_unlisted:
                return None
            listed = self.augmented_dir / SOURCES_NAME
            what = (f"no recorded source (not in {listed})" if record is None
                    else f"changed since it was recorded in {listed} (other sha256)")
            return REFUSED_UNLISTED, (
                f"{what}, so it may be a copy of a validation or test image. {self.remedy}, or, if you know this one "
                f"was made from a training image, move it anyway ({self.move_unlisted_command})")
        if record.source_sha256 in self.held_out:
            return REFUSED_HELD_OUT_SOURCE, (
                f"a copy of {record.source}, which is now {self.held_out[record.source_sha256]}; in train it would "
                "leak that image into training (the split changed after the copies were made)")
        if not self._is_in_train(record):
            return REFUSED_SOURCE_GONE, (
                f"a copy of {record.source}, which is no longer in train (nor in validation or test); put the image "
                "back into train to keep its copies, or delete them")
        return None

    def _is_in_train(self, record: CopySource) -> bool:
        key = (record.source, record.source_sha256)
        if key not in self._checked:
            recorded = self.data_dir / record.source
            if recorded.is_file() and sha256_file(recorded) == record.source_sha256:
                self._checked[key] = True
            else:
                if self._in_train is None:  # moved or renamed since: look for its content anywhere in train
                    moved = moved_copies(self.data_dir)
                    self._in_train = {sha256_file(path) for path in list_images(self.train_dir, recursive=True)
                                      if not moved.holds(path)}
                self._checked[key] = record.source_sha256 in self._in_train
        return self._checked[key]


def _unwritable_folder(error: PermissionError, source: Path, target: Path) -> Path:
    """The folder that refused a move of ``source`` to ``target``: train's class folder (the copy goes in) or
    augmented_train's (it goes out). The error's own file name may be either file (a hard link names both)."""
    for folder in (target.parent, source.parent):
        if not os.access(folder, os.W_OK | os.X_OK):
            return folder
    return Path(error.filename).parent if error.filename else target.parent


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

    The hidden temporary files of interrupted writes (``.<name>.<random or pid>.tmp``, as ``files.temporary_of``
    reads them) go, and the records (``RECORD_NAMES``) once nothing else is left; anything else not ``refused``
    (a user's own hidden ``.notes.tmp`` too) is kept and returned.
    """
    kept = []
    records = {augmented_dir / name for name in RECORD_NAMES}
    for path in sorted(augmented_dir.rglob("*"), reverse=True):  # children before their folders
        if path.is_symlink():
            continue  # a link is kept, and what it leads to is never touched
        if path.is_dir():
            if not any(path.iterdir()):
                path.rmdir()
        elif temporary_of(path.name) is not None:
            path.unlink()
        elif path not in refused and path not in records:
            kept.append(path)
    left = list(augmented_dir.iterdir())
    if set(left) <= records:
        for path in left:
            path.unlink()  # their copies are all in train now, which a re-split moves aside whole (records too)
    if not any(augmented_dir.iterdir()):
        # A symlinked augmented_train loses the link only: the emptied folder it leads to stays.
        (augmented_dir.unlink if augmented_dir.is_symlink() else augmented_dir.rmdir)()
        return [], True
    for path in sorted(kept):
        logger.warning("kept %s: not an image, so it was not moved", path)
    return sorted(kept), False
