"""Bad inputs to the data scripts, one row each: what the user gives, the exit status, a fragment of what
is printed, and the files that must stay untouched. The next case is one more row.

Exit 2 is a bad command line (argparse), exit 1 one ``error: ...`` line on stderr (no traceback), exit 0
a run that copes (its extra ``check`` says how). Each setup builds its inputs in ``in/`` (and, where a
symlink leads out, ``outside/``) under a fresh folder and returns the command line.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from conftest import REPO, write_image

import DataAugmentation
import DataDeleter
import DataMerger
import DataSplitD1
import DataSplitD2
import DataUnZipper
import DataZipper
import MoveAugmentedImages
from realvsai.files import MAX_NAME_BYTES
from realvsai.moving import plan_copies

LONG_STEM = "x" * 246  # with ".png", a 250-byte name: fine itself, too long with anything added


# ---- inputs -------------------------------------------------------------------------------------------------


def classes(root: Path, counts: dict[str, int] | None = None, seed: int = 0) -> Path:
    """``root/<Class>/img_<i>.png``, distinct images (4 REAL, 4 FAKE unless ``counts``)."""
    for class_index, (name, count) in enumerate(sorted((counts or {"REAL": 4, "FAKE": 4}).items())):
        for index in range(count):
            write_image(root / name / f"img_{index}.png", seed=seed * 1000 + class_index * 100 + index)
    return root


def cifake(root: Path) -> Path:
    classes(root / "train", seed=1)
    classes(root / "test", {"REAL": 2, "FAKE": 2}, seed=2)
    return root


def split_dataset(root: Path, seed: int = 3) -> Path:
    for split in ("train", "validation", "test"):
        classes(root / split, {"REAL": 2, "FAKE": 2}, seed=seed * 10 + len(split))
    return root


def symlink_to_images(link: Path, target: Path, seed: int) -> None:
    """``link`` -> ``target``, a folder of two images outside ``in/``."""
    classes(target.parent, {target.name: 2}, seed=seed)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=True)


def zip_of(path: Path, entries: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return path


def zip_declaring_less(path: Path) -> Path:
    """An entry whose deflate stream inflates to 2,000 bytes, while the archive declares the first 1,000 and
    their CRC-32: zipfile alone stops at 1,000 bytes and finds nothing wrong."""
    data = bytes(range(200)) * 10
    zip_of(path, {"photo.bmp": data}, zipfile.ZIP_DEFLATED)
    raw = bytearray(path.read_bytes())
    declared = struct.pack("<I", zlib.crc32(data[:1000]))
    raw[14:18], raw[22:26] = declared, struct.pack("<I", 1000)  # the local header's CRC-32 and size
    central = raw.index(b"PK\x01\x02")
    raw[central + 16:central + 20], raw[central + 24:central + 28] = declared, struct.pack("<I", 1000)
    path.write_bytes(bytes(raw))
    return path


def zip_with_raw_name(path: Path, name: bytes, flags: int) -> Path:
    """An archive with one entry named by the bytes ``name`` (4 bytes, then ``.png``), UTF-8 flag as ``flags``."""
    raw = bytearray(zip_of(path, {"XXXX.png": b"x"}).read_bytes().replace(b"XXXX", name))
    central = raw.index(b"PK\x01\x02")
    raw[6] |= flags >> 8  # the flag bits: at 6 in the local header, at 8 in the central directory
    raw[central + 9] |= flags >> 8
    path.write_bytes(bytes(raw))
    return path


def out_dir(tmp: Path) -> str:
    return str(tmp / "out")


# ---- the table ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    script: ModuleType
    setup: Callable[[Path], list[str]]  # builds the inputs in a fresh folder; returns the command line
    status: int
    message: str  # part of the error line (exit 1, 2), or of what is printed (exit 0)
    untouched: str = "in"  # the folder whose files must not change
    check: Callable[[Path], None] | None = None  # more for a run that copes


def skipped_reasons(tmp: Path) -> dict[str, str]:
    with open(tmp / "out" / "skipped.csv", newline="", encoding="utf-8", errors="surrogateescape") as stream:
        return {os.path.basename(row["source"]): row["reason"] for row in csv.DictReader(stream)}


def check_long_name_split(tmp: Path) -> None:
    names = [path.name for path in (tmp / "out").rglob("*.png")]
    assert len(names) == 9 and all(len(os.fsencode(name)) <= MAX_NAME_BYTES for name in names)
    assert any(name.startswith(f"subfolder__{LONG_STEM[:200]}") for name in names)
    assert DataSplitD1.main([str(tmp / "in"), "--out", out_dir(tmp), "-q"]) == 0, "the same command again"


def check_merge_renamed_long_name(tmp: Path) -> None:
    kept = sorted((tmp / "out" / "train" / "REAL").iterdir())
    assert len(kept) == 5 and all(len(os.fsencode(path.name)) <= MAX_NAME_BYTES for path in kept)


def check_loops_listed(tmp: Path) -> None:
    reasons = skipped_reasons(tmp)
    assert "loop" in reasons["self"] and "not followed" in reasons["up"]
    assert len(list((tmp / "out").rglob("*.png"))) == 8, "the real images, each once"


def check_non_utf8_name(tmp: Path) -> None:
    with open(tmp / "out" / "manifest.csv", "rb") as stream:
        assert b"caf\xe9.png" in stream.read()
    assert DataSplitD1.main([str(tmp / "in"), "--out", out_dir(tmp), "-q"]) == 0, "the same command again"
    assert len(list((tmp / "out").rglob("*.png"))) == 9


def check_symlinked_subfolder_left(tmp: Path) -> None:
    assert "symlink to a folder" in skipped_reasons(tmp)["linked"]
    assert len(list((tmp / "out").rglob("*.png"))) == 12


def check_symlinked_class_left(tmp: Path) -> None:
    reasons = skipped_reasons(tmp)
    assert [name for name, reason in reasons.items() if "outside SOURCE" in reason] == ["img_0.png", "img_1.png"]


def check_merge_refused_outside(tmp: Path) -> None:
    assert (tmp / "out" / "merge-refused.csv").read_text().count("through a symlink") == 2


def check_move_refused_outside(tmp: Path) -> None:
    assert (tmp / "in" / "augmented_train" / "FAKE").is_symlink()
    assert (tmp / "in" / "move-refused.csv").read_text().count("symlink") == 2


def check_only_the_link_removed(tmp: Path) -> None:
    assert not os.path.lexists(tmp / "in" / "augmented_train") and (tmp / "outside" / "aug").is_dir()
    assert len(list((tmp / "in" / "train" / "REAL").iterdir())) == 4


def check_stray_removed(tmp: Path) -> None:
    assert list((tmp / "out").rglob(".*.tmp")) == []


def check_loose_files_listed(tmp: Path) -> None:
    assert "beside the class folders" in skipped_reasons(tmp)["README.txt"]


def check_long_entry_shortened(tmp: Path) -> None:
    (written,) = (tmp / "out").iterdir()
    assert written.read_bytes() == b"long" and len(os.fsencode(written.name)) <= MAX_NAME_BYTES
    assert DataUnZipper.main([str(tmp / "in" / "a.zip"), "--to", out_dir(tmp), "-q"]) == 0, "the same command again"


def check_nothing_written(tmp: Path) -> None:
    assert files_below(tmp / "out") == {}


def d1(*extra: str) -> Callable[[Path], list[str]]:
    """DataSplitD1 on 4 REAL and 4 FAKE images, with ``extra`` flags."""
    return lambda tmp: [str(classes(tmp / "in")), "--out", out_dir(tmp), "-q", *extra]


def d2(*extra: str) -> Callable[[Path], list[str]]:
    return lambda tmp: [str(cifake(tmp / "in")), "--out", out_dir(tmp), "-q", *extra]


def unzip(entries: dict[str, bytes], *extra: str, **options) -> Callable[[Path], list[str]]:
    return lambda tmp: [str(zip_of(tmp / "in" / "a.zip", entries, **options)), "--to", out_dir(tmp), "-q", *extra]


def with_files(make: Callable[[Path], object], argv: Callable[[Path], list[str]]) -> Callable[[Path], list[str]]:
    """``argv``'s setup, then ``make(tmp)`` adds to it."""
    def setup(tmp: Path) -> list[str]:
        command = argv(tmp)
        make(tmp)
        return command
    return setup


def a_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a folder\n")


def long_name_in_subfolder(tmp: Path) -> None:
    write_image(tmp / "in" / "REAL" / "subfolder" / f"{LONG_STEM}.png", seed=77)


def merge_with_taken_long_name(tmp: Path) -> list[str]:
    write_image(classes(tmp / "out" / "train", {"REAL": 2}, seed=5) / "REAL" / f"{LONG_STEM}.png", seed=50)
    write_image(classes(tmp / "in" / "train", {"REAL": 1}, seed=6) / "REAL" / f"{LONG_STEM}.png", seed=60)
    return [str(tmp / "in"), "--into", out_dir(tmp), "-q"]


def symlink_loops(tmp: Path) -> None:
    os.symlink("self", tmp / "in" / "REAL" / "self")
    os.symlink("..", tmp / "in" / "REAL" / "up")


def non_utf8_name(tmp: Path, folder: str = "in/REAL") -> None:
    write_image(Path(os.fsdecode(os.fsencode(tmp / folder) + b"/caf\xe9.png")), seed=88)


def deleter_setup(tmp: Path) -> list[str]:
    classes(tmp / "in" / "victim", {"REAL": 1})
    symlink_to_images(tmp / "in" / "victim" / "link", tmp / "outside" / "kept", seed=9)
    return [str(tmp / "in" / "victim"), "--yes", "--allow-outside", "-q"]


def move_augmented_setup(make: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        split_dataset(tmp / "in")
        make(tmp)  # copies made by hand, without DataAugmentation's sources.csv
        return ["--data", str(tmp / "in"), "--move-unlisted", "-q"]
    return setup


def merge_killed_after_link(tmp: Path) -> list[str]:
    command = [str(split_dataset(tmp / "in")), "--into", out_dir(tmp), "-q"]
    assert DataMerger.main(command) == 0
    placed = sorted((tmp / "out" / "train" / "REAL").iterdir())[0]
    os.link(placed, placed.with_name(f".{placed.name}.99999.tmp"))
    return command


def stray_hard_link(tmp: Path) -> None:
    assert DataSplitD2.main([str(tmp / "in"), "--out", out_dir(tmp), "-q"]) == 0
    placed = sorted((tmp / "out" / "train" / "REAL").iterdir())[0]
    os.link(placed, placed.with_name(f".{placed.name}.99999.tmp"))  # what a run killed after os.link leaves


CASES = [
    # 3: values no run can use are command-line errors
    Case("d1_ratios_nan", DataSplitD1, d1("--ratios", "nan", "0.5", "0.5"), 2, "--ratios"),
    Case("d1_ratios_negative", DataSplitD1, d1("--ratios", "1.2", "-0.1", "-0.1"), 2, "--ratios"),
    Case("d2_val_fraction_nan", DataSplitD2, d2("--val-fraction", "nan"), 2, "--val-fraction"),
    Case("d2_val_fraction_one", DataSplitD2, d2("--val-fraction", "1"), 2, "--val-fraction"),
    Case("d1_max_pixels_nan", DataSplitD1, d1("--max-pixels", "nan"), 2, "--max-pixels"),
    Case("d1_max_pixels_negative", DataSplitD1, d1("--max-pixels", "-5"), 2, "--max-pixels"),
    Case("unzip_max_ratio_nan", DataUnZipper, unzip({"a.txt": b"a"}, "--max-ratio", "nan"), 2, "--max-ratio"),
    Case("unzip_max_total_bytes_zero", DataUnZipper, unzip({"a.txt": b"a"}, "--max-total-bytes", "0"), 2,
         "--max-total-bytes"),
    # 4: what the file system refuses is one line, and the same command completes once it is fixed
    Case("d1_out_under_a_file", DataSplitD1,
         with_files(lambda tmp: a_file(tmp / "in" / "notes"), lambda tmp: [
             str(classes(tmp / "in" / "art")), "--out", str(tmp / "in" / "notes" / "data"), "-q"]),
         1, "a folder in this path is a file"),
    Case("unzip_to_under_a_file", DataUnZipper,
         with_files(lambda tmp: a_file(tmp / "in" / "notes"), lambda tmp: [
             str(zip_of(tmp / "in" / "a.zip", {"a.txt": b"a"})), "--to", str(tmp / "in" / "notes" / "x"), "-q"]),
         1, "a folder in this path is a file"),
    Case("merge_into_under_a_file", DataMerger,
         with_files(lambda tmp: a_file(tmp / "in" / "notes"), lambda tmp: [
             str(split_dataset(tmp / "in" / "art")), "--into", str(tmp / "in" / "notes" / "data"), "-q"]),
         1, "a folder in this path is a file"),
    Case("d1_out_name_over_255_bytes", DataSplitD1,
         lambda tmp: [str(classes(tmp / "in")), "--out", str(tmp / ("o" * 300)), "-q"],
         1, "longer than the file system allows"),
    Case("d1_derived_name_over_255_bytes", DataSplitD1, with_files(long_name_in_subfolder, d1()), 0, "9 files in",
         check=check_long_name_split),
    Case("merge_new_name_over_255_bytes", DataMerger, merge_with_taken_long_name, 0, "renamed",
         check=check_merge_renamed_long_name),
    Case("d1_symlink_loops_in_a_class_folder", DataSplitD1, with_files(symlink_loops, d1()), 0, "8 files in",
         check=check_loops_listed),
    Case("d1_name_not_utf8", DataSplitD1, with_files(non_utf8_name, d1()), 0, "9 files in",
         check=check_non_utf8_name),
    Case("merge_name_not_utf8", DataMerger,
         lambda tmp: (classes(tmp / "in" / "train"), non_utf8_name(tmp, "in/train/REAL"),
                      [str(tmp / "in"), "--into", out_dir(tmp), "-q"])[-1], 0, "9 added"),
    Case("augment_name_not_utf8", DataAugmentation,
         lambda tmp: (split_dataset(tmp / "in"), non_utf8_name(tmp, "in/train/REAL"),
                      ["--data", str(tmp / "in"), "--copies", "1", "-q"])[-1], 0, "Wrote 5 copies",
         untouched="in/train"),
    Case("zip_missing_folder", DataZipper, lambda tmp: [str(tmp / "nowhere"), "-q"], 1, "is not a folder"),
    Case("zip_name_not_utf8", DataZipper,
         with_files(non_utf8_name, lambda tmp: [str(classes(tmp / "in")), "--out", str(tmp / "a.zip"), "-q"]),
         1, "not valid UTF-8"),
    Case("zip_out_under_a_file", DataZipper,
         with_files(lambda tmp: a_file(tmp / "in" / "notes"), lambda tmp: [
             str(classes(tmp / "in" / "art")), "--out", str(tmp / "in" / "notes" / "a.zip"), "-q"]),
         1, "is a file, but a folder is needed here"),
    Case("unzip_entry_name_not_utf8_though_flagged", DataUnZipper,
         lambda tmp: [str(zip_with_raw_name(tmp / "in" / "a.zip", b"caf\xe9", 0x800)), "--to", out_dir(tmp), "-q"],
         1, "not valid UTF-8"),
    Case("unzip_entry_name_not_utf8", DataUnZipper,  # no UTF-8 flag: read as code page 437, as zip tools do
         lambda tmp: [str(zip_with_raw_name(tmp / "in" / "a.zip", b"caf\xe9", 0)), "--to", out_dir(tmp), "-q"],
         0, "Extracted 1 file "),
    Case("unzip_entry_name_over_255_bytes", DataUnZipper, unzip({"y" * 300 + ".txt": b"long"}), 0,
         "Extracted 1 file ", check=check_long_entry_shortened),
    # 2: nothing outside SOURCE is ever moved or deleted
    Case("d2_move_symlinked_folder_in_a_class_folder", DataSplitD2,
         with_files(lambda tmp: symlink_to_images(tmp / "in" / "train" / "REAL" / "linked", tmp / "outside" / "REAL",
                                                  seed=8), d2("--move")),
         0, "12 files in", untouched="outside", check=check_symlinked_subfolder_left),
    Case("d1_move_symlinked_class_folder", DataSplitD1,
         lambda tmp: (classes(tmp / "in", {"REAL": 4}), symlink_to_images(tmp / "in" / "FAKE", tmp / "outside" / "F",
                                                                           seed=8),
                      [str(tmp / "in"), "--out", out_dir(tmp), "-q", "--move"])[-1],
         0, "4 files in", untouched="outside", check=check_symlinked_class_left),
    Case("merge_move_symlinked_class_folder", DataMerger,
         lambda tmp: (classes(tmp / "in" / "train", {"REAL": 2}), classes(tmp / "out" / "train", seed=4),
                      symlink_to_images(tmp / "in" / "train" / "FAKE", tmp / "outside" / "F", seed=8),
                      [str(tmp / "in"), "--into", out_dir(tmp), "--move", "-q"])[-1],
         1, "refused 2 files", untouched="outside", check=check_merge_refused_outside),
    Case("move_augmented_symlinked_class_folder", MoveAugmentedImages,
         move_augmented_setup(lambda tmp: symlink_to_images(tmp / "in" / "augmented_train" / "FAKE",
                                                            tmp / "outside" / "F", seed=8)),
         1, "refused 2 copies (in a symlinked folder)", untouched="outside", check=check_move_refused_outside),
    Case("deleter_symlink_to_outside", DataDeleter, deleter_setup, 0, "Deleted 2 files", untouched="outside"),
    # 6: exit statuses and messages tell the truth; a killed run's leftovers go on the next run
    Case("move_augmented_folder_is_a_symlink", MoveAugmentedImages,  # followed, as a SOURCE given as a link
         move_augmented_setup(lambda tmp: (classes(tmp / "outside" / "aug", {"REAL": 2}, seed=8),
                                           (tmp / "in" / "augmented_train").symlink_to(tmp / "outside" / "aug"))),
         0, "Removed the emptied", untouched="in/validation", check=check_only_the_link_removed),
    Case("move_augmented_file_in_the_way", MoveAugmentedImages,
         move_augmented_setup(lambda tmp: a_file(tmp / "in" / "augmented_train")), 1, "augmented_train is a file"),
    Case("d2_rerun_removes_a_temporary_hard_link", DataSplitD2, with_files(stray_hard_link, d2()), 0,
         "0 copied", check=check_stray_removed),
    Case("merge_rerun_removes_a_temporary_hard_link", DataMerger, merge_killed_after_link, 0, "0 added",
         check=check_stray_removed),
    # 5: an entry that inflates beyond what it declares
    Case("unzip_entry_longer_than_declared", DataUnZipper,
         lambda tmp: [str(zip_declaring_less(tmp / "in" / "a.zip")), "--to", out_dir(tmp), "-q"],
         1, "inflates to more than", check=check_nothing_written),
    # 7: nothing is passed over in silence
    Case("d1_top_level_files_listed", DataSplitD1,
         with_files(lambda tmp: a_file(tmp / "in" / "README.txt"), d1()), 0, "beside the class folders",
         check=check_loose_files_listed),
    # earlier reliability cases
    Case("unzip_zip_slip", DataUnZipper, unzip({"../evil.txt": b"x"}), 1, "zip slip"),
    Case("unzip_zip_bomb", DataUnZipper, unzip({"zeros.bin": bytes(2 << 20)}, compression=zipfile.ZIP_DEFLATED), 1,
         "zip bomb"),
    Case("deleter_outside_data_without_allow_outside", DataDeleter,
         lambda tmp: [str(classes(tmp / "in", {"REAL": 1})), "--yes", "-q"], 1, "refusing to delete"),
]


def files_below(folder: Path) -> dict[str, str]:
    """Every file and symlink below ``folder`` (no link followed) with its sha256 or link target."""
    found = {}
    for path, folder_names, file_names in os.walk(folder):
        for name in folder_names + file_names:
            full = os.path.join(path, name)
            if os.path.islink(full):
                found[full] = "-> " + os.readlink(full)
            elif name in file_names:
                with open(full, "rb") as stream:
                    found[full] = hashlib.sha256(stream.read()).hexdigest()
    return found


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input(case, tmp_path, capsys):
    argv = case.setup(tmp_path)
    watched = tmp_path / case.untouched
    before = files_below(watched)
    capsys.readouterr()
    try:
        status = case.script.main(argv)
    except SystemExit as exit_:  # argparse
        status = exit_.code
    out, err = capsys.readouterr()
    assert status == case.status, out + err
    assert "Traceback" not in err
    if case.status == 1:
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    if case.status == 2:
        assert "error:" in err.strip().splitlines()[-1], err
    assert case.message in (out + err if case.status == 0 else err.strip().splitlines()[-1]), out + err
    assert files_below(watched) == before, f"{case.untouched}/ changed"
    if case.check:
        case.check(tmp_path)


def test_copy_names_of_a_long_name_fit_a_file_system(tmp_path):
    classes(tmp_path / "data" / "train", {"REAL": 1})
    write_image(tmp_path / "data" / "train" / "REAL" / f"{LONG_STEM}.png", seed=7)
    plan = plan_copies(tmp_path / "data", copies=2)
    names = [os.path.basename(target) for image in plan.images for target in image.targets]
    assert len(set(names)) == 4 and all(len(os.fsencode(name)) <= MAX_NAME_BYTES for name in names)


def test_the_worked_examples_prediction_folder_is_git_ignored():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "-q", "predicted/predictions.csv"], cwd=REPO)
    assert ignored.returncode == 0, "README's `--out predicted` folder must be git-ignored"


# Each script's command, with the path another run is working on (T) as the one it writes, or moves from.
SCRIPTS_WORKING_ON = {
    "DataUnZipper": (DataUnZipper, lambda t: [str(t.parent / "in.zip"), "--to", str(t)]),
    "DataZipper": (DataZipper, lambda t: [str(t.parent / "in"), "--out", str(t)]),
    "DataSplitD1": (DataSplitD1, lambda t: [str(t.parent / "in"), "--out", str(t)]),
    "DataSplitD2": (DataSplitD2, lambda t: [str(t.parent / "in"), "--out", str(t)]),
    "DataSplitD2 --move (its SOURCE)": (DataSplitD2, lambda t: [str(t), "--out", str(t.parent / "out"), "--move"]),
    "DataMerger": (DataMerger, lambda t: [str(t.parent / "in"), "--into", str(t)]),
    "DataMerger --move (its SOURCE)": (DataMerger, lambda t: [str(t), "--into", str(t.parent / "out"), "--move"]),
    "DataAugmentation": (DataAugmentation, lambda t: ["--data", str(t)]),
    "MoveAugmentedImages": (MoveAugmentedImages, lambda t: ["--data", str(t)]),
    "DataDeleter": (DataDeleter, lambda t: [str(t), "--yes", "--allow-outside"]),
}


@pytest.mark.parametrize("script", sorted(SCRIPTS_WORKING_ON))
def test_a_script_refuses_in_one_line_a_path_another_run_is_working_on(script, tmp_path, capsys):
    """Two runs on one folder at once (two terminals, a double start) would remove each other's temporary files and
    write back each other's stale records (a merge's manifest.csv lost rows): the second waits its turn."""
    from realvsai.files import working_on

    module, arguments = SCRIPTS_WORKING_ON[script]
    target = tmp_path / "target"
    write_image(tmp_path / "in" / "A" / "a.png", seed=1)
    write_image(target / "A" / "t.png", seed=2)
    before = sorted(path for path in tmp_path.rglob("*"))

    with working_on([target], "Another.py"):
        assert module.main([*arguments(target), "-q"]) == 1

    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{target} is being worked on by Another.py" in err
    assert sorted(path for path in tmp_path.rglob("*")) == before


def _source(root: Path, counts: dict[str, int], first_seed: int) -> Path:
    """Class folders A and B in each of ``counts``' folders ("" for none), that many distinct images each."""
    seeds = iter(range(first_seed, first_seed + 100))
    for split, count in counts.items():
        for name in ("A", "B"):
            for index in range(count):
                write_image(root / split / name / f"{f'{split}_' if split else ''}{index}.png", seed=next(seeds))
    return root


def _split_source(root: Path) -> Path:
    """A split dataset: train/, validation/ and test/ with class folders A and B."""
    return _source(root, {"train": 4, "validation": 2, "test": 2}, 100)


def _download_source(root: Path) -> Path:
    """A download: train/ and test/ with class folders A and B."""
    return _source(root, {"train": 6, "test": 2}, 200)


def _class_source(root: Path) -> Path:
    """Class folders A and B."""
    return _source(root, {"": 8}, 300)


# Each script that reads a folder it does not change (SOURCE: made by the first function), its command and the name
# of the function that reads it.
SCRIPTS_READING = {
    "DataSplitD1": (DataSplitD1, _class_source, lambda s: [str(s), "--out", str(s.parent / "out")], "split_by_class"),
    "DataSplitD2": (DataSplitD2, _download_source, lambda s: [str(s), "--out", str(s.parent / "out")],
                    "split_train_test"),
    "DataMerger": (DataMerger, _split_source, lambda s: [str(s), "--into", str(s.parent / "out")], "merge_datasets"),
    "DataZipper": (DataZipper, _split_source, lambda s: [str(s), "--out", str(s.parent / "out.zip")], "zip_folder"),
}


@pytest.mark.skipif(os.name == "nt", reason="Windows' file locks have no shared mode: a reading claim is not taken")
@pytest.mark.parametrize("other", ["writes SOURCE", "deletes a file in SOURCE"])
@pytest.mark.parametrize("script", sorted(SCRIPTS_READING))
def test_a_script_refuses_to_read_a_folder_another_run_writes_in(script, other, tmp_path, capsys):
    """A split ran (exit 0, "Next: train") on a folder DataUnZipper was still extracting (2,683 REAL and 5,000 FAKE
    of 10,000), or that DataDeleter deleted meanwhile; DataZipper zipped a folder an augmentation was writing."""
    from realvsai.files import working_on

    module, make_source, arguments, _ = SCRIPTS_READING[script]
    source = make_source(tmp_path / "source")
    path, holder = ((source, "DataUnZipper.py") if other == "writes SOURCE" else
                    (sorted(source.rglob("*.png"))[0], "DataDeleter.py"))
    before = sorted(tmp_path.rglob("*"))

    with working_on([path], holder):
        assert module.main([*arguments(source), "-q"]) == 1

    err = capsys.readouterr().err
    expected = (f"{source} is being worked on by DataUnZipper.py" if other == "writes SOURCE" else
                f"another run works on a folder or file inside {source}")
    assert err.count("\n") == 1 and expected in err and "wait for it to finish" in err
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.skipif(os.name == "nt", reason="Windows' file locks have no shared mode: a reading claim is not taken")
@pytest.mark.parametrize("script", sorted(SCRIPTS_READING))
def test_a_folder_a_script_reads_is_refused_to_other_runs_writing_in_it_until_it_ends(script, tmp_path, monkeypatch,
                                                                                      capsys):
    """A copy merge ran while a --move merge emptied its SOURCE; a deletion or a re-extraction (DataUnZipper.py
    --overwrite) of a folder that a split was reading went ahead."""
    from realvsai.errors import UserError
    from realvsai.files import working_on

    module, make_source, arguments, reader = SCRIPTS_READING[script]
    source = make_source(tmp_path / "source")
    image = sorted(source.rglob("*.png"))[0]
    refused = []

    def meanwhile(*args, **kwargs):
        for other, path in (("DataUnZipper.py", source), ("DataDeleter.py", image.parent),
                            ("DataDeleter.py", image), ("DataMerger.py", tmp_path)):
            try:
                with working_on([path], other):
                    pass
            except UserError as error:
                refused.append(str(error))
        raise UserError("stopped here")

    monkeypatch.setattr(module, reader, meanwhile)
    assert module.main([*arguments(source), "-q"]) == 1
    assert "stopped here" in capsys.readouterr().err
    assert len(refused) == 4 and all("another run reads" in message for message in refused), refused
    with working_on([source], "DataUnZipper.py"):  # free again once it ended
        pass


def test_an_empty_weights_is_a_command_line_error_not_the_current_folder(capsys):
    """``--weights "$WEIGHTS"`` with WEIGHTS unset read the current folder, after the data was checked: "--weights
    is a folder" (exit 1)."""
    import ModelTraining

    with pytest.raises(SystemExit) as exit_:
        ModelTraining.parse_args(["--data", "data", "--weights", ""])
    assert exit_.value.code == 2
    assert "argument --weights: empty; give imagenet, none or a weights file" in capsys.readouterr().err


def test_an_empty_positive_class_is_a_command_line_error_not_the_automatic_choice(capsys):
    """``--positive-class "$CLASS"`` with CLASS unset trained with the class chosen by name, in silence."""
    import ModelTraining

    with pytest.raises(SystemExit) as exit_:
        ModelTraining.parse_args(["--data", "data", "--positive-class", ""])
    assert exit_.value.code == 2
    assert "argument --positive-class: empty; give a class name, or leave the option out" in capsys.readouterr().err


@pytest.mark.parametrize("script, argv", [
    ("DataUnZipper", [""]), ("DataUnZipper", ["a.zip", "--to", ""]), ("DataZipper", [""]),
    ("DataZipper", ["data", "--out", ""]), ("DataSplitD1", ["", "--out", "x"]), ("DataSplitD1", ["raw", "--out", ""]),
    ("DataSplitD2", ["", "--out", "x"]), ("DataSplitD2", ["raw", "--out", ""]), ("DataMerger", ["", "--into", "x"]),
    ("DataMerger", ["a", "--into", ""]), ("DataAugmentation", ["--data", ""]), ("MoveAugmentedImages", ["--data", ""]),
    ("DataDeleter", [""]), ("ModelTraining", ["--data", ""]), ("ModelTraining", ["--out", ""]),
    ("ModelTraining", ["--evaluate", ""]), ("ModelTraining", ["--evaluate", "m.h5", "--test-dir", ""]),
    ("ModelTraining", ["--predict", ""]), ("ModelTraining", ["--predict", "run", "--input", ""]),
    ("App", ["--models", ""]), ("App", ["--model", ""]),
])
def test_an_empty_path_is_a_command_line_error_not_the_current_folder(script, argv, capsys):
    """``--out "$OUT"`` with OUT unset wrote a whole split into the folder the command ran in."""
    import importlib

    with pytest.raises(SystemExit) as exit_:
        importlib.import_module(script).parse_args(argv)
    assert exit_.value.code == 2
    assert "an empty path; give a file or folder (. for the current folder)" in capsys.readouterr().err


def test_a_printed_command_names_a_path_that_begins_with_a_dash_so_that_it_runs(tmp_path, monkeypatch, capsys):
    """``Next: python DataAugmentation.py --data -out`` failed with "argument --data: expected one argument"."""
    import shlex

    import ModelTraining
    from realvsai.config import deleter_command, resume_command

    monkeypatch.chdir(tmp_path)
    for name in ("REAL", "FAKE"):
        for index in range(5):
            write_image(tmp_path / "-src" / name / f"{index}.png", seed=index + 100 * (name == "REAL"))
    assert DataSplitD1.main(["./-src", "--out", "./-out", "-q"]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Next: ")]
    words = shlex.split(line.split("(optional)")[0].removeprefix("Next: "))
    assert words[:3] == ["python", "DataAugmentation.py", "--data"]
    assert DataAugmentation.parse_args(words[2:]).data == Path("-out")

    assert shlex.split(deleter_command(Path("-out")))[2] == "./-out"
    assert shlex.split(resume_command(Path("-models") / "run"))[-2:] == ["--out", "./-models"]
    assert shlex.split(ModelTraining.serve_command(Path("-models") / "run"))[-1] == "./-models/run"


def test_a_printed_resume_command_names_a_run_that_begins_with_a_dash_so_that_it_runs():
    """``--resume --name -run`` failed with "argument --name: expected one argument"."""
    import shlex

    import ModelTraining
    from realvsai.config import resume_command

    words = shlex.split(resume_command(Path("models") / "-run"))
    assert ModelTraining.parse_args(words[2:]).name == "-run"


@pytest.mark.parametrize("script", ["DataUnZipper.py", "DataSplitD2.py", "ModelTraining.py", "App.py"])
def test_a_python_older_than_the_project_needs_is_refused_in_one_line(script):
    """Under Python 3.10 (whose support ended in October 2026; pip resolves Keras 3.12 and JAX 0.6 for it) 13 tests
    failed, a HEIC photo's check among them with a TypeError: a script would have ended in a traceback. App.py did:
    it imported datetime.UTC (new in 3.11), NumPy and Streamlit before the package's check. Here Python is 3.10, with
    no datetime.UTC and none of the requirements (a system Python the user runs by mistake)."""
    program = (f"import sys, datetime; sys.version_info = (3, 10, 13, 'final', 0); del datetime.UTC; "
               "sys.modules.update(dict.fromkeys(['numpy', 'streamlit', 'tensorflow', 'keras', 'PIL'])); "
               f"sys.argv = [{script!r}, '--help']; import runpy; runpy.run_path({script!r}, run_name='__main__')")
    process = subprocess.run([sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PYTHONPATH": str(REPO)})

    assert process.returncode == 1 and process.stdout == ""
    assert process.stderr.strip().splitlines() == [
        "error: Python 3.11 or newer is needed, and this is Python 3.10.13 (support for 3.10 ended in October "
        "2026). Install a newer Python, make a virtual environment with it, and install requirements.txt there."]
