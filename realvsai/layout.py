"""The dataset layout every script reads and writes: split names, image files, class folders.

A prepared dataset is ``DATA/{train,validation,test}/<Class>/<images>``. Class names are the
folder names; their sorted order is the label order, and it travels with the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from realvsai.errors import UserError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
TRAIN, VALIDATION, TEST = "train", "validation", "test"
SPLITS = (TRAIN, VALIDATION, TEST)
AUGMENTED_TRAIN = "augmented_train"


def find_class_folders(folder: Path) -> list[str]:
    """Sorted names of the visible sub-folders of ``folder``: the class names.

    Raises:
        UserError: if ``folder`` is missing or has no sub-folders.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder. Check the path (it should hold one folder per class).")
    classes = sorted(child.name for child in folder.iterdir() if child.is_dir() and not child.name.startswith("."))
    if not classes:
        raise UserError(
            f"{folder} has no class folders. Put the images of each class in a sub-folder named after it, "
            f"e.g. {folder}/REAL and {folder}/FAKE."
        )
    return classes


def find_child_folder(parent: Path, name: str) -> Path | None:
    """The sub-folder of ``parent`` called ``name`` in any letter case (``Train``, ``TEST``), or None.

    Raises:
        UserError: if two sub-folders differ only by letter case, so the choice would be a guess.
    """
    matches = [child for child in Path(parent).iterdir() if child.is_dir() and child.name.lower() == name.lower()]
    if len(matches) > 1:
        raise UserError(f"{parent} has several folders named {name!r} in different letter cases: "
                        f"{sorted(m.name for m in matches)}. Keep one.")
    return matches[0] if matches else None


def parse_renames(pairs: Iterable[str]) -> dict[str, str]:
    """Turns ``["RealArt=Real", "GeneratedArt=Fake"]`` into ``{"RealArt": "Real", ...}``.

    Raises:
        UserError: for a pair without ``=``, an empty side, or the same old name twice.
    """
    renames: dict[str, str] = {}
    for pair in pairs:
        old, sep, new = pair.partition("=")
        old, new = old.strip(), new.strip()
        if not sep or not old or not new or "/" in new or "\\" in new or new in (".", ".."):
            raise UserError(f"--rename {pair!r} is not OLD=NEW. Write e.g. --rename RealArt=Real.")
        if old in renames:
            raise UserError(f"--rename names {old!r} twice. Give each class folder one new name.")
        renames[old] = new
    return renames


def renamed(class_name: str, renames: Mapping[str, str]) -> str:
    """The class name after ``--rename`` mapping (unchanged when not mapped)."""
    return renames.get(class_name, class_name)


def read_split_classes(data_dir: Path, splits: Iterable[str] = SPLITS) -> dict[str, list[str]]:
    """Class names of each split folder present under ``data_dir``.

    Raises:
        UserError: if ``data_dir`` has none of the splits.
    """
    data_dir = Path(data_dir)
    found = {split: find_class_folders(data_dir / split) for split in splits if (data_dir / split).is_dir()}
    if not found:
        raise UserError(
            f"{data_dir} has none of the folders {', '.join(splits)}. Run DataSplitD1.py or DataSplitD2.py first."
        )
    return found
