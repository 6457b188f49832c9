"""The dataset layout: ``DATA/{train,validation,test}/<Class>/<images>`` plus ``DATA/manifest.csv``."""

from __future__ import annotations

import csv
import os
import posixpath
import re
import shlex
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from realvsai.archives import MACOS_JUNK_FOLDER, is_archive
from realvsai.cli import printable
from realvsai.config import (
    EVALUATION_CARD_FILE,
    MANIFEST_NAME,
    METRICS_FILE,
    PREDICTIONS_FILE,
    UNREADABLE_FILE,
    TrainConfig,
    run_mark,
    shell_path,
)
from realvsai.errors import UserError
from realvsai.files import MAX_NAME_BYTES, list_images, name_key, open_csv, write_csv

TRAIN, VALIDATION, TEST = "train", "validation", "test"
SPLITS = (TRAIN, VALIDATION, TEST)
AUGMENTED_TRAIN = "augmented_train"
# source: where the file was taken from (its path when split or merged); dataset: the name of the dataset it
# belongs to (the SOURCE folder it was split from; a merge gives a second dataset of one name NAME-2), the unit
# of model.json's per-source validation accuracy.
MANIFEST_FIELDS = ("split", "class", "path", "sha256", "source", "dataset")


def refuse_missing_folder(folder: Path, flag: str) -> None:
    """A UserError when ``folder`` (given as ``flag``: SOURCE, --data) is no folder; for an archive, with the
    command that unzips it (the step before)."""
    if Path(folder).is_dir():
        return
    if Path(folder).is_file() and is_archive(folder):
        kind = "a zip archive" if Path(folder).name.lower().endswith(".zip") else "an archive"
        raise UserError(f"{flag} {folder} is {kind}, not a folder: unzip it first: python DataUnZipper.py "
                        f"{shell_path(folder)}")
    raise UserError(f"{flag} {folder} is not an existing folder. Check the path.")


def typed_parent(folder: Path) -> Path:
    """The folder that holds ``folder``, as typed (data for data/train); for ".", ".." and the like, which have no
    name, the absolute one."""
    folder = Path(folder)
    return Path(os.path.abspath(folder)).parent if folder.name in ("", ".", "..") else folder.parent


def split_folder_error(folder: Path, flag: str) -> UserError:
    """The refusal of a ``flag`` (--data, --into, SOURCE) that names one split folder of a dataset (data/train), with
    the dataset folder to give instead."""
    parent = shell_path(typed_parent(folder))
    return UserError(f"{flag} {folder} is a split folder; give the dataset folder that holds train/, e.g. "
                     f"{parent if flag == 'SOURCE' else f'{flag} {parent}'}.")


def refuse_split_folder(data_dir: Path) -> None:
    """A UserError when ``--data`` names one split folder of a dataset (train/, augmented_train/, any letter case),
    not the dataset folder that holds it (training, DataAugmentation.py, MoveAugmentedImages.py). A dataset that
    happens to be called test, holding train/, is none."""
    name = Path(os.path.abspath(data_dir)).name
    holds_train = Path(data_dir).is_dir() and find_child_folder(data_dir, TRAIN)
    if name_key(name) in (*SPLITS, AUGMENTED_TRAIN) and not holds_train:
        raise split_folder_error(data_dir, "--data")


def no_train_folder(data_dir: Path, advice: str) -> UserError:
    """The refusal of a ``--data`` folder with no train/: a split folder given for its dataset (``refuse_split_folder``
    raises it), a download not yet split (``download_split_hint``), or else ``advice`` ("Run DataSplitD1.py ...")."""
    refuse_split_folder(data_dir)
    return UserError(f"{data_dir} has no {TRAIN} folder{download_split_hint(data_dir) or f'. {advice}'}.")


def enclosing_split(folder: Path) -> tuple[Path, str] | None:
    """The split (a folder with a manifest.csv) that ``folder`` lies inside one of the folders of, with that
    folder's name (train, validation, test or augmented_train), or None: written there, a dataset's folders would be
    mixed with that split's images."""
    resolved = Path(folder).resolve()
    own_folders = {name_key(name) for name in (*SPLITS, AUGMENTED_TRAIN)}
    for split_dir in (parent for parent in resolved.parents if (parent / MANIFEST_NAME).is_file()):
        inner = resolved.relative_to(split_dir).parts[0]
        if name_key(inner) in own_folders:
            return split_dir, inner
    return None


# Files the scripts write into a folder beside images: a folder holding one is theirs, not a class of images.
_RESULTS_MARKS = (MANIFEST_NAME, PREDICTIONS_FILE, UNREADABLE_FILE, METRICS_FILE, EVALUATION_CARD_FILE)


def _class_folder_around(folder: Path) -> tuple[Path, Path] | None:
    """The class folder of images that ``folder`` is or would be made in, with one of its images, or None: the
    nearest existing folder at or above ``folder``, where it holds images of its own (flat/REAL) and none of the
    files the scripts write beside images (``_RESULTS_MARKS``: a dataset's manifest, results whose plots are images
    too). The working folder is none: a stray screenshot there must not refuse ``--out evals``, and no script reads
    it as a class."""
    existing = next((path for path in (Path(folder), *Path(folder).parents) if os.path.lexists(path)), None)
    if (existing is None or not existing.is_dir() or existing.resolve() == Path.cwd().resolve()
            or run_mark(existing) or any((existing / name).is_file() for name in _RESULTS_MARKS)):
        return None
    try:
        images = list_images(existing)
    except OSError:  # a folder that cannot be listed: the step's own write there says why
        return None
    return (existing, images[0]) if images else None


def class_folder_problem(folder: Path, flag: str, what: str) -> str | None:
    """Why ``what`` a step writes into ``folder`` (given as ``flag``) cannot go there, where ``folder`` is or lies
    inside a class folder of images (``_class_folder_around``): the next step that reads that class would read it
    too. None elsewhere."""
    if not (found := _class_folder_around(folder)):
        return None
    classes, image = found
    where, holder = ("is", "it") if classes == Path(folder) else ("lies inside", str(classes))
    return (f"{flag} {folder} {where} a class folder of images ({holder} holds {image.name}): {what} there would be "
            f"read with the images of {classes.name} the next time")


def refuse_unfit_dataset_folder(folder: Path, flag: str) -> None:
    """A UserError when ``folder`` (``flag``: a splitter's --out, DataMerger's --into), where a dataset's train/,
    validation/ and test/ go, holds no manifest.csv and is a training run's folder, or is or lies inside a class
    folder of images (``class_folder_problem``)."""
    folder = Path(folder)
    if (folder / MANIFEST_NAME).is_file():
        return
    fix = f"Choose an {flag} of its own, e.g. {flag} data."
    if mark := run_mark(folder):
        raise UserError(f"{flag} {folder} is a training run's folder (it holds {mark}): train/, validation/ and "
                        f"test/ there would be mixed with the run's files. {fix}")
    if problem := class_folder_problem(folder, flag, "train/, validation/ and test/"):
        raise UserError(f"{problem}. {fix}")
    children = subfolders(folder) if folder.is_dir() else []
    if classes := [child.name for child in children if name_key(child.name) not in SPLIT_WORDS and list_images(child)]:
        raise UserError(f"{flag} {folder} holds class folders of images ({', '.join(classes)}), another dataset: "
                        "train/, validation/ and test/ there would be mixed with them (and read as classes the next "
                        f"time it is split); nothing was written. {fix}")
    if splits := unsplit_download_splits(folder):
        raise UserError(f"{flag} {folder} is a download not yet split ({'/, '.join(splits)}/, no validation/ nor "
                        f"{MANIFEST_NAME}): train/, validation/ and test/ there would be mixed with its images, which "
                        f"no split has checked for duplicates; nothing was written. {fix} To add to that dataset, "
                        f"split it first: {split_folders_fix(folder, splits)}")


def subfolders(folder: Path) -> list[Path]:
    """The visible sub-folders of ``folder``, sorted; a Mac zip's ``__MACOSX/`` of resource forks is none."""
    return sorted(child for child in Path(folder).iterdir()
                  if child.is_dir() and not child.name.startswith(".") and child.name != MACOS_JUNK_FOLDER)


def find_class_folders(folder: Path) -> list[str]:
    """Sorted names of the visible sub-folders of ``folder``: the class names (UserError when there are none)."""
    if not Path(folder).is_dir():
        raise UserError(f"{folder} is not a folder. Check the path (it should hold one folder per class).")
    classes = [child.name for child in subfolders(folder)]
    if not classes:
        raise UserError(f"{folder} has no class folders. Put the images of each class in a sub-folder named after it, "
                        f"e.g. {folder}/REAL and {folder}/FAKE.")
    for name in classes:  # a class name is text in model.json, the app and every report
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise UserError(f"{folder} has a class folder whose name is not UTF-8: {printable(name)}. Rename it to "
                            "a name in UTF-8 (your file manager, or mv), then run the command again.") from None
    return classes


def class_folder_of(class_names: Iterable[str], found: Iterable[str]) -> dict[str, str]:
    """Each class name's folder among ``found`` folder names: its own name, else the one with the same NFC form
    (a name typed with composed accents and one macOS wrote with decomposed ones print alike), else itself."""
    found = list(found)
    by_form = {unicodedata.normalize("NFC", name): name for name in found}
    return {name: name if name in found else by_form.get(unicodedata.normalize("NFC", name), name)
            for name in class_names}


def find_child_folder(parent: Path, name: str) -> Path | None:
    """The sub-folder of ``parent`` called ``name`` in any letter case (``Train``, ``TEST``), or None;
    UserError when two differ only by letter case, so the choice would be a guess."""
    matches = [child for child in Path(parent).iterdir() if child.is_dir() and name_key(child.name) == name_key(name)]
    if len(matches) > 1:
        first, *others = sorted(matches)
        raise UserError(f"{parent} has several folders named {name!r} in different letter cases: "
                        f"{sorted(m.name for m in matches)} (one folder where the download was made: Windows, "
                        f"macOS). Join them: move what {', '.join(map(str, others))} "
                        f"{'holds' if len(others) == 1 else 'hold'} into {first}, then run the command again.")
    return matches[0] if matches else None


def rename_option(old: str, new: str) -> str:
    """``--rename OLD=NEW`` as words to paste into a shell: quoted, and joined by ``=`` where OLD starts with a dash
    (argparse would read ``-REAL=-real`` as an option)."""
    return shlex.quote(f"--rename={old}={new}") if old.startswith("-") else f"--rename {shlex.quote(f'{old}={new}')}"


def parse_renames(pairs: Iterable[str]) -> dict[str, str]:
    """Turns ``["RealArt=Real", "GeneratedArt=Fake"]`` into ``{"RealArt": "Real", ...}``, refusing malformed pairs."""
    renames: dict[str, str] = {}
    for pair in pairs:
        old, sep, new = pair.partition("=")
        old, new = old.strip(), new.strip()
        if not sep or not old or not new:
            raise UserError(f"--rename {pair!r} is not OLD=NEW. Write e.g. --rename RealArt=Real.")
        refuse_unusable_class_name(new)
        if old in renames:
            raise UserError(f"--rename names {old!r} twice. Give each class folder one new name.")
        renames[old] = new
    return renames


def refuse_unusable_class_name(new: str) -> None:
    """UserError when ``new``, a --rename's NEW, cannot name a class folder: it holds '/' or '\\' (a path, not a
    folder), is hidden ('.', '..' too), is a split folder's name, or is too long for a folder's name."""
    if "/" in new or "\\" in new or new.startswith(".") or new in SPLITS:
        raise UserError(f"--rename to {new!r} is not a usable class name. Choose a plain name such as Real.")
    if (size := len(os.fsencode(new))) > MAX_NAME_BYTES:
        raise UserError(f"--rename to {new[:20]!r}... is {size:,} bytes, longer than a folder name may be "
                        f"({MAX_NAME_BYTES} bytes). Choose a shorter name such as Real.")


def find_dataset_root(source: Path, holds_dataset: Callable[[Path], bool]) -> Path:
    """``source``, or the folder below it that ``holds_dataset`` when ``source`` does not: a download often
    unpacks into a folder or two of its own (``raw/<Top Folder>/<Dataset>/...``). Looks into each sub-folder,
    and goes down through a folder whose one visible folder is its only content besides files that are not
    images. The caller checks what it returns (and says which folder it reads).

    Raises:
        UserError: when several sub-folders hold a dataset, so the choice would be a guess.
    """
    folder = source
    while not holds_dataset(folder):
        children = subfolders(folder)
        candidates = [child for child in children if holds_dataset(child)]
        if len(candidates) > 1:
            raise UserError(f"{folder} holds several datasets: {[child.name for child in candidates]}. "
                            "Pass the one to split as SOURCE.")
        if candidates:
            folder = candidates[0]
        elif len(children) == 1 and not list_images(folder):
            folder = children[0]
        else:
            return source
    return folder


def folders_down(source: Path, root: Path) -> list[Path]:
    """``source`` and each folder below it down to ``root`` (``find_dataset_root``'s answer): those whose files
    lie beside the dataset."""
    parts = root.relative_to(source).parts
    return [source.joinpath(*parts[:depth]) for depth in range(len(parts) + 1)]


def _holds_train_and_test(folder: Path) -> bool:
    return bool(find_child_folder(folder, TRAIN) and find_child_folder(folder, TEST))


def _holds_class_folders(folder: Path) -> bool:
    """False when ``folder`` only wraps the dataset: its one visible folder has sub-folders and no images. An image
    beside that folder (a cover, a sample) is a file beside the dataset: taking the folder for the one class would
    mix its classes. A lone folder that holds images is one class, not a wrapper."""
    folders = subfolders(folder)
    if len(folders) != 1:
        return True
    return bool(list_images(folders[0])) or not subfolders(folders[0])


# Folder names that mean a split, not a class: Kaggle downloads come as Train/ Validation/, train/ val/, ...
SPLIT_WORDS = {"train": TRAIN, "training": TRAIN, "validation": VALIDATION, "valid": VALIDATION,
               "val": VALIDATION, "test": TEST, "testing": TEST}


def find_validation_folder(source: Path) -> Path | None:
    """The validation split a download comes with beside train/ and test/ (``valid/``, ``val/``, ``validation/``, any
    letter case), or None; a UserError when it has several, so the choice would be a guess."""
    found = [child for child in subfolders(source) if SPLIT_WORDS.get(name_key(child.name)) == VALIDATION]
    if len(found) > 1:
        raise UserError(f"{source} has several validation folders: {sorted(child.name for child in found)}. Keep "
                        "one (move the other's images into it).")
    return found[0] if found else None


def split_folders_fix(root: Path, class_folders: Sequence[str], renamed: Iterable[str] = (),
                      out: Callable[[Path], Path] = lambda folder: TrainConfig.data) -> str | None:
    """What DataSplitD2 needs of ``root`` when its "class folders" are split folders (Kaggle's Train/ Validation/),
    as a sentence that ends with its command; None when none of them is a split folder. A folder ``renamed``
    (by --rename) is a class; so are split names beside other folders unless train/ and a held-out split are among
    them: valid/ beside forged/ (a signature set), train/ beside car/ and bus/ (a vehicles set). ``out``: the --out
    the command names for the folder it splits (the unzipper's ``splitting.advised_out``)."""
    renamed = set(renamed)
    splits = {name: SPLIT_WORDS[name_key(name)] for name in class_folders
              if name_key(name) in SPLIT_WORDS and name not in renamed}
    whole = TRAIN in splits.values() and any(split != TRAIN for split in splits.values())
    if not splits or (not whole and len(splits) < len(class_folders)):
        return None
    if fix := unlabelled_fix(root, splits, out):
        return fix
    command = f"python DataSplitD2.py {shell_path(root)} --out {shell_path(out(root))}"
    held_out = sorted(name for name, split in splits.items() if split != TRAIN)
    if TEST in splits.values() or not held_out:
        return f"use DataSplitD2.py, which reads train/ and test/ folders of class folders: {command}"
    # train/ and validation/ only: the dataset's held-out images become the test split
    return (f"rename {shell_path(root / held_out[0])} to test (DataSplitD2.py reads train/ and test/, and carves "
            f"validation out of train), then run {command}")


def unlabelled(folder: Path) -> bool:
    """True when ``folder`` holds images and no visible sub-folder: images that no folder names the class of (a
    competition's test set, or a download that keeps its labels in a CSV file)."""
    return not subfolders(folder) and bool(list_images(folder))


def unlabelled_fix(root: Path, splits: Mapping[str, str],
                   out: Callable[[Path], Path] = lambda folder: TrainConfig.data) -> str | None:
    """Where a split folder of ``root`` (``splits``: folder name -> split) holds images in no class folder, what to
    do, as a sentence that ends with its command; else None. A train/ of loose images is sorted into class folders
    first; held-out folders that are all loose images (a competition's unlabelled test set) can test nothing, so
    train/ is split alone, by DataSplitD1, which carves validation and test out of its classes. ``out``:
    ``split_folders_fix``'s."""
    train = next((root / name for name, split in splits.items() if split == TRAIN), None)
    if train is None:
        return None
    held_out = [root / name for name, split in splits.items() if split != TRAIN]
    labelled_held_out = [folder for folder in held_out if not unlabelled(folder)]
    command = (f"python DataSplitD2.py {shell_path(root)} --out {shell_path(out(root))}" if labelled_held_out else
               f"python DataSplitD1.py {shell_path(train)} --out {shell_path(out(train))}")
    if unlabelled(train):
        labels = sorted(path.name for folder in (root, train) for path in folder.glob("*.csv"))
        kept = f" (a download like this keeps its labels in a file: {', '.join(labels)})" if labels else ""
        return (f"{train} holds images but no class folders, so nothing says which class each is{kept}. Sort them "
                f"into one folder per class ({train}/REAL, {train}/FAKE, ...), then split them: {command}")
    if held_out and not labelled_held_out:
        return (f"{', '.join(map(str, held_out))} {'holds' if len(held_out) == 1 else 'hold'} images but no class "
                "folders: unlabelled (a competition's test set), they can test nothing. Split train/ alone with "
                f"DataSplitD1.py, which carves validation and test out of its classes: {command}")
    return None


def unsplit_download_splits(folder: Path) -> list[str]:
    """The split folders of ``folder`` where it is a download not yet split: train/ beside a held-out folder of its
    own (test/, valid/), with no validation/ folder nor manifest.csv; else []."""
    folder = Path(folder)
    if not folder.is_dir() or (folder / MANIFEST_NAME).is_file() or find_child_folder(folder, VALIDATION):
        return []
    splits = sorted((child.name for child in subfolders(folder) if name_key(child.name) in SPLIT_WORDS),
                    key=lambda name: SPLITS.index(SPLIT_WORDS[name_key(name)]))  # train/ first
    return splits if TRAIN in {SPLIT_WORDS[name_key(name)] for name in splits} and len(splits) >= 2 else []


def refuse_unsplit_download(data_dir: Path, step: str) -> None:
    """A UserError when ``data_dir`` is a download not yet split: train/ beside a held-out folder of its own (test/,
    valid/), with no validation/ folder nor manifest.csv: files a step placed there ("nothing was ``step``") would be
    trained on by no run (training needs validation/) and skipped by the split. Names the split command that fits."""
    if not (folders := unsplit_download_splits(data_dir)):
        return
    raise UserError(f"--data {data_dir} is not a split dataset: it has no validation/ folder (nor {MANIFEST_NAME}); "
                    f"nothing was {step}. Split it first, then give the split's folder as --data: "
                    f"{split_folders_fix(data_dir, folders)}")


def refuse_split_folders(root: Path, class_folders: Sequence[str], renamed: Iterable[str] = (),
                         out: Path = TrainConfig.data, lacking: str = "not one folder per class") -> None:
    """A UserError when ``root``'s "class folders" are split folders (DataSplitD1 would train on classes "Train" and
    "Validation"), with what DataSplitD2 needs (``split_folders_fix``, its command naming ``out``); ``renamed``
    folders are classes. ``lacking``: what the script that refuses them needs of ``root`` (DataSplitD1's unless
    given)."""
    if fix := split_folders_fix(root, class_folders, renamed, lambda folder: out):
        found = ", ".join(sorted(name for name in class_folders if name_key(name) in SPLIT_WORDS))
        raise UserError(f"{root} holds the split folders {found}, {lacking}: {fix}")


def class_named_like_a_split_fix(source: Path) -> str | None:
    """Where ``source`` holds one folder per class, one of them named like a split (a vehicles set's train/ beside
    car/ and bus/, no held-out split): the rest of a sentence naming the other folders and the DataSplitD1 command
    that splits them, with the --rename that the one named exactly as a split needs; else None."""
    root = find_class_root(source)
    folders = [folder.name for folder in subfolders(root)]
    if split_folders_fix(root, folders) or not any(name_key(name) in SPLIT_WORDS for name in folders):
        return None
    others = sorted(name for name in folders if name_key(name) not in SPLIT_WORDS)
    renames = "".join(f" {rename_option(name, f'{name}_class')}" for name in folders if name in SPLITS)
    return (f"the folders {', '.join(others)}: one folder per class, a class named like a split among them. Split "
            f"them with DataSplitD1.py{', giving it another name' if renames else ''}: python DataSplitD1.py "
            f"{shell_path(source)} --out data{renames}")


def refuse_nested_copy(root: Path, class_folders: Sequence[str]) -> None:
    """A UserError when a class folder holds the other class folders again (``Dataset/{Real,Fake}`` beside
    ``Dataset/Dataset/{Real,Fake}``, as some downloads are packed): split, it would be a class of its own whose
    every image is also under another class, all left out."""
    for name in class_folders:
        others = sorted(set(class_folders) - {name})
        inside = {folder.name for folder in subfolders(root / name)}
        if len(others) >= 2 and set(others) <= inside:
            raise UserError(f"{root} holds its class folders twice: {others}, and again inside {name}/ (the "
                            f"download packed the dataset twice). Split one copy: give {root / name} as SOURCE.")


def find_class_root(source: Path) -> Path:
    """The folder whose sub-folders are the classes: ``source``, or the one folder it wraps (a Kaggle zip often
    unpacks as ``raw/<Top Folder>/{RealArt,GeneratedArt}/``)."""
    return find_dataset_root(source, _holds_class_folders)


def refuse_one_split_of_a_download(folder: Path) -> None:
    """A UserError when ``folder`` is one split (``train/``, ``Test/``, ``valid/``: ``SPLIT_WORDS``) of a download
    whose folder holds train/ and test/: split alone, the other splits' images would be silently left out. It names
    the DataSplitD2 command that reads the download whole."""
    folder, parent = Path(folder), typed_parent(folder)
    if name_key(Path(os.path.abspath(folder)).name) not in SPLIT_WORDS or not _holds_train_and_test(parent):
        return
    given = name_key(Path(os.path.abspath(folder)).name)  # Train typed for train/ on macOS and Windows
    others = [child for child in subfolders(parent) if name_key(child.name) in SPLIT_WORDS.keys() - {given}]
    if all(unlabelled(other) for other in others):  # a competition's test set: nothing left out that could be used
        return
    if (parent / MANIFEST_NAME).is_file():  # this project's split: nothing to split
        raise UserError(f"{folder} is one split of {parent}, a dataset split already ({MANIFEST_NAME}); nothing "
                        f"was written. Train on it: python ModelTraining.py --data {shell_path(parent)}")
    raise UserError(f"{folder} is one split of the dataset in {parent}, which holds train/ and test/; split alone, "
                    "the other split's images would be left out. Split the dataset folder: python DataSplitD2.py "
                    f"{shell_path(parent)} --out data")


def find_train_test_root(source: Path, out: Path = TrainConfig.data) -> Path:
    """``source`` if it holds ``train/`` and ``test/`` (any letter case), else its one sub-folder that does; a
    UserError naming what to run instead (its --out: ``out``) where neither does."""
    refuse_one_split_of_a_download(source)
    if not _holds_train_and_test(root := find_dataset_root(source, _holds_train_and_test)):
        class_root = find_class_root(source)  # a split without test/: Dataset/Train/, Dataset/Validation/
        missing = [split for split in (TRAIN, TEST) if not find_child_folder(class_root, split)]
        refuse_split_folders(class_root, [folder.name for folder in subfolders(class_root)], out=out,
                             lacking=f"but no {' and no '.join(missing)} folder")
    train, test = find_child_folder(source, TRAIN), find_child_folder(source, TEST)
    if bool(train) != bool(test):
        found, missing = (train, TEST) if train else (test, TRAIN)
        if fix := class_named_like_a_split_fix(source):
            raise UserError(f"{source} has {found.name}/ but no {missing}/ folder, and beside it {fix}")
        raise UserError(f"{source} has {found.name}/ but no {missing}/ folder. DataSplitD2.py needs both train/ "
                        "and test/, each with one folder per class (for one folder per class, use DataSplitD1.py).")
    splits = {folder.name: SPLIT_WORDS[name_key(folder.name)] for folder in subfolders(root)
              if name_key(folder.name) in SPLIT_WORDS} if _holds_train_and_test(root) else {}
    if fix := unlabelled_fix(root, splits, lambda folder: out):
        raise UserError(fix)
    if not _holds_train_and_test(root):
        folders = [folder.name for folder in subfolders(source)]
        raise UserError(
            f"{source} has no train/ and test/ folders (it holds {folders or 'no folders'}). DataSplitD2.py expects "
            "SOURCE/train/<Class>/ and SOURCE/test/<Class>/ (e.g. CIFAKE); for one folder per class, use "
            "DataSplitD1.py."
        )
    return root


def alike_names(names: Iterable[str]) -> list[str]:
    """The ``names`` that share their ``name_key`` with another (REAL and Real; é composed and decomposed), sorted:
    one folder on macOS (and, for letter case, Windows), and most likely one class to the person who made them."""
    names = list(names)
    keys = Counter(name_key(name) for name in names)
    return sorted(name for name in names if keys[name_key(name)] > 1)


def rename_classes(class_folders: Sequence[str], renames: Mapping[str, str], source: Path) -> dict[str, str]:
    """Class folder -> output class name; UserError for an OLD that is not a class folder, or two classes
    ending with one name (also in another letter case or accent encoding: ``name_key``)."""
    folder_of = class_folder_of(renames, class_folders)  # an OLD typed with composed accents, a macOS folder's not
    if unknown := sorted(old for old, folder in folder_of.items() if folder not in class_folders):
        raise UserError(f"--rename names {unknown}, but the class folders in {source} are {list(class_folders)}. "
                        "Use the folder names exactly as they are spelled.")
    renames = {folder_of[old]: new for old, new in renames.items()}
    names = {folder: renames.get(folder, folder) for folder in class_folders}
    for folder, new in names.items():
        if folder not in renames and new in SPLITS:
            raise UserError(f"class folder {new!r} has the name of a split folder, which the split's own folders "
                            f"take: give it another with {rename_option(new, f'{new}_class')} (or a name of your "
                            "choice).")
        if folder in renames:  # a class folder's own name is a visible folder's, and a split's is refused above
            refuse_unusable_class_name(new)
    if doubled := sorted(name for name, count in Counter(names.values()).items() if count > 1):
        owners = sorted(folder for folder, name in names.items() if name in doubled)
        raise UserError(f"--rename gives the class folders {owners} the same name {doubled}. "
                        "Give each class its own name.")
    if alike := alike_names(names.values()):
        owners = sorted(folder for folder, name in names.items() if name in alike)
        if renamed := [folder for folder in owners if folder in renames]:
            clash = ", ".join(f"{folder!r} as {names[folder]!r}" for folder in owners)
            raise UserError(f"--rename {', '.join(f'{folder}={renames[folder]}' for folder in renamed)} gives "
                            f"class names that differ only in letter case or accent encoding ({clash}); nothing was "
                            "written. Give each class a name of its own.")
        raise UserError(f"the class folders {owners} in {source} differ only in letter case or accent encoding; "
                        "nothing was written. Move their images into one folder, or give one another name with "
                        "--rename OLD=NEW.")
    return names


def leave_out_masks(paths: Sequence[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """``paths`` less the segmentation masks among them (``mask_images``), and those masks with why."""
    keys = [Path(path).as_posix() for path in paths]
    masks = mask_images(keys)
    return ([path for path, key in zip(paths, keys) if key not in masks],
            [(path, masks[key]) for path, key in zip(paths, keys) if key in masks])


def find_label_conflicts(files: Iterable[tuple[str, str, str]]) -> dict[str, dict[str, str]]:
    """The contents found under more than one class, from the ``(sha256, class, where)`` of each file:
    sha256 -> {class: where its first file (in the order given) is}.

    One image under two labels teaches the model nothing true, and in two splits it would leak: the split
    and merge steps leave out every copy they would place, for the user to decide which class it belongs to.
    """
    classes_of: dict[str, dict[str, str]] = defaultdict(dict)
    for digest, class_name, where in files:
        classes_of[digest].setdefault(class_name, where)
    return {digest: classes for digest, classes in classes_of.items() if len(classes) > 1}


def read_split_classes(data_dir: Path) -> dict[str, list[str]]:
    """Class names of each split folder present under ``data_dir`` (UserError when there is none)."""
    data_dir = Path(data_dir)
    found = {split: find_class_folders(data_dir / split) for split in SPLITS if (data_dir / split).is_dir()}
    if not found:
        raise UserError(f"{data_dir} has none of the folders {', '.join(SPLITS)}{download_split_hint(data_dir)}. "
                        "Run DataSplitD1.py or DataSplitD2.py first.")
    return found


def download_split_hint(data_dir: Path) -> str:
    """The end of a "has no train folder" line where ``data_dir`` holds split folders other than this project's
    (a download's own split, Kaggle's ``Dataset/Train/``), or wraps a download's train/ and test/ (the unzipper's
    ``data/raw/cifake/cifake/``): which, and the split command to run first; else ""."""
    if not Path(data_dir).is_dir():
        return ""
    command = f"python DataSplitD2.py {shell_path(data_dir)} --out data"
    own = sorted((folder.name for folder in subfolders(data_dir)
                  if name_key(folder.name) in SPLIT_WORDS and folder.name not in SPLITS),
                 key=lambda name: SPLITS.index(SPLIT_WORDS[name_key(name)]))
    if own:
        return (f", but it has {'/, '.join(own)}/, a download's own split: split it first (checked for duplicates "
                f"across the splits), {command}")
    try:
        root = find_dataset_root(Path(data_dir), _holds_train_and_test)
    except UserError:  # several datasets in it: no one command
        return ""
    if root == Path(data_dir) or not _holds_train_and_test(root):
        return ""
    return f", but it holds a download not yet split in {root}: split it first, {command}"


@dataclass(frozen=True)
class ManifestRow:
    """One file of a prepared dataset; ``path`` is relative to DATA, e.g. ``train/REAL/0001.jpg``."""

    split: str
    class_name: str
    path: str
    sha256: str
    source: str = ""
    dataset: str = ""  # empty in a manifest written before the column existed

    def key(self) -> tuple[str, str, str, str]:
        """What makes two splits the same: where each file is and what it holds (not where it came from)."""
        return self.split, self.class_name, self.path, self.sha256

    def order(self) -> tuple[int, str, str]:
        """The manifest's row order: split (train, validation, test), class, path."""
        return SPLITS.index(self.split), self.class_name, self.path


_MASK_NAME = re.compile(r"(?P<image>.+)_mask(?:_\d+)?", re.IGNORECASE)


def mask_images(paths: Sequence[str]) -> dict[str, str]:
    """The segmentation masks among ``paths`` (POSIX), each with why it is left out. A mask is named as its image with
    ``_mask`` (and maybe ``_<n>``) added, in the same folder: BUSI's ``benign (1).png``, ``benign (1)_mask.png`` and
    ``benign (1)_mask_1.png``. It is a lesion's outline, not an image of the class: trained on, it teaches the
    outline; in another split than its image, it leaks where the lesion is; evaluated, it scores outlines."""
    images = {posixpath.splitext(path)[0]: posixpath.basename(path) for path in paths}
    masks = {}
    for path in paths:
        match = _MASK_NAME.fullmatch(posixpath.splitext(path)[0])
        if match and match["image"] in images:
            masks[path] = (f"a segmentation mask of {images[match['image']]} (named as it is, with _mask): a mask is "
                           "not an image of its class, and is left out")
    return masks


def unplaced_rows(data_dir: Path) -> list[ManifestRow]:
    """The rows of ``data_dir``'s manifest.csv (none without one) whose file is not in its class folder: a split or
    merge stopped before it placed them (it writes the manifest and makes the folders first, so that a re-run
    completes the rest). A class or split folder that is gone was removed on purpose (DataDeleter.py data/test)."""
    manifest = Path(data_dir) / MANIFEST_NAME
    if not manifest.is_file():
        return []
    return [row for row in read_manifest(manifest)
            if (path := Path(data_dir) / row.path).parent.is_dir() and not _placed(path)]


def _placed(path: Path) -> bool:
    """Whether the file ``path`` is there; a PermissionError naming its folder where that may not be searched
    (chmod 000): its files are not missing, and running the split again would not help."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except PermissionError as error:
        raise PermissionError(error.errno, error.strerror, str(path.parent)) from None
    return True


def read_manifest(path: Path) -> list[ManifestRow]:
    """The rows of a ``manifest.csv`` (UserError when it lacks the manifest's columns)."""
    with open_csv(path) as stream:
        reader = csv.DictReader(stream)
        if missing := [name for name in MANIFEST_FIELDS[:4] if name not in (reader.fieldnames or [])]:
            raise UserError(f"{path} is not a manifest written by this project (no column {missing[0]!r}). "
                            "Move it away and run the step again.")
        return [ManifestRow(row["split"], row["class"], row["path"], row["sha256"], row.get("source") or "",
                            row.get("dataset") or "") for row in reader]


def write_manifest(path: Path, rows: Iterable[ManifestRow]) -> bool:
    """Writes ``rows`` to ``path`` atomically; returns False (and writes nothing) when it already holds them."""
    return write_csv(path, MANIFEST_FIELDS,
                     ((row.split, row.class_name, row.path, row.sha256, row.source, row.dataset) for row in rows))
