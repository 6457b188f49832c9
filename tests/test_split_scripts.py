"""DataSplitD1.py, DataSplitD2.py and DataMerger.py as a user runs them: exit codes, messages, end to end."""

from __future__ import annotations

import csv
import hashlib
import os
import shlex
import shutil
import signal
import time
import zipfile
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import (
    PHOTO_LIMIT,
    REPO,
    SHARED_DATASETS,
    one_error_line,
    phone_photo,
    run_script,
    snapshot,
    write_image,
)
from test_cli import drop_a_ctrl_c

import DataAugmentation
import DataMerger
import DataSplitD1
import DataSplitD2
import MoveAugmentedImages
from realvsai.files import temporary_name
from realvsai.layout import read_manifest

CIFAKE_MINI = SHARED_DATASETS / "cifake-mini"


def test_datasplitd1_main_prints_the_table_of_renamed_classes(tmp_path, make_class_folder, capsys):
    source = make_class_folder(tmp_path / "art", {"RealArt": 10, "GeneratedArt": 10})
    code = DataSplitD1.main([str(source), "--out", str(tmp_path / "data"), "--rename", "RealArt=Real",
                             "--rename", "GeneratedArt=Fake", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "Fake" in printed and "Real" in printed and "RealArt" not in printed
    assert "20 files in" in printed
    assert sorted(path.name for path in (tmp_path / "data" / "validation").iterdir()) == ["Fake", "Real"]


def test_a_ctrl_c_dropped_at_a_split_s_first_files_stops_it_there(tmp_path, make_class_folder, monkeypatch, capsys):
    """It was noticed only once every file was checked and copied, then the finished split was reported as
    interrupted. The threads read and copy the files; the main thread, where Python raises a Ctrl-C, takes their
    results a chunk at a time."""
    from realvsai import files

    source = make_class_folder(tmp_path / "raw", {"REAL": 6, "FAKE": 6})
    taken = []

    class DroppedAtTheFirstChunk:
        def update(self, count):
            taken.append(count)
            if len(taken) == 1:
                drop_a_ctrl_c()
            time.sleep(0.01)  # the main thread's share of a chunk of large files

        def close(self):
            pass

    monkeypatch.setattr(files, "_CHUNK", 1)
    monkeypatch.setattr(files, "progress", lambda *args, **kwargs: DroppedAtTheFirstChunk())
    assert DataSplitD1.main([str(source), "--out", str(tmp_path / "data"), "--workers", "1", "--quiet"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: interrupted. ")
    assert len(taken) <= 12, f"went on for {len(taken)} of 24 chunks (12 files checked, then copied)"


def test_a_ctrl_c_dropped_at_a_merge_s_first_file_stops_it_there(tmp_path, make_class_folder, monkeypatch, capsys):
    """It was noticed only once every file was merged, then the finished merge was reported as interrupted."""
    from realvsai import files

    make_class_folder(tmp_path / "more" / "train", {"REAL": 6, "FAKE": 6})
    real_read_verified, calls = files.read_verified, []

    def dropped_at_the_first(*args, **kwargs):  # each copy's bytes are read, then a batch of them written
        calls.append(args)
        if len(calls) == 1:
            drop_a_ctrl_c()
        time.sleep(0.02)  # a large file takes longer
        return real_read_verified(*args, **kwargs)

    monkeypatch.setattr(files, "read_verified", dropped_at_the_first)
    assert DataMerger.main([str(tmp_path / "more"), "--into", str(tmp_path / "data"), "--quiet"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: interrupted. ")
    assert len(calls) <= 6, f"went on for {len(calls)} of 12 files"  # the next, but for a loaded machine


@pytest.mark.parametrize("script", ["DataSplitD1.py", "DataSplitD2.py"])
def test_a_split_ends_with_the_next_steps_commands(tmp_path, make_class_folder, capsys, script):
    if script == "DataSplitD1.py":
        make_class_folder(tmp_path / "raw", {"REAL": 10, "FAKE": 10})
        code = DataSplitD1.main([str(tmp_path / "raw"), "--out", str(tmp_path / "data"), "--quiet"])
    else:
        make_class_folder(tmp_path / "raw" / "train", {"REAL": 10, "FAKE": 10}, seed=1)
        make_class_folder(tmp_path / "raw" / "test", {"REAL": 3, "FAKE": 3}, seed=2)
        code = DataSplitD2.main([str(tmp_path / "raw"), "--out", str(tmp_path / "data"), "--quiet"])

    assert code == 0
    data = tmp_path / "data"
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"Next: python DataAugmentation.py --data {data} (optional), or train: python ModelTraining.py --data {data}")


def test_a_split_into_a_folder_of_another_split_dataset_names_the_merge_first(tmp_path, make_class_folder, capsys):
    """The README's worked example splits the photos into data/photos beside CIFAKE's split in data; the Next: line
    named only augmenting and training data/photos alone, not the merge the README runs next."""
    make_class_folder(tmp_path / "raw", {"REAL": 10, "FAKE": 10})
    make_class_folder(tmp_path / "photos", {"REAL": 10, "FAKE": 10}, seed=3)
    data = tmp_path / "data"
    assert DataSplitD1.main([str(tmp_path / "raw"), "--out", str(data), "--quiet"]) == 0
    capsys.readouterr()

    assert DataSplitD1.main([str(tmp_path / "photos"), "--out", str(data / "photos"), "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"Next: merge it into the split beside it: python DataMerger.py {data / 'photos'} --into {data} "
        f"(or train on it alone: python ModelTraining.py --data {data / 'photos'})")


@pytest.mark.parametrize("script", ["DataSplitD1.py", "DataSplitD2.py"])
@pytest.mark.parametrize("out, what", [("flat/REAL", "is a class folder of images"),
                                       ("flat/REAL/split", "lies inside a class folder of images"),
                                       ("models/run", "is a training run's folder"),
                                       ("flat", "holds class folders of images (FAKE, REAL)"),
                                       ("download", "is a download not yet split (train/, test/")])
def test_a_split_into_a_class_folder_or_a_run_folder_is_refused_in_one_line(tmp_path, make_class_folder, script, out,
                                                                             what):
    """--out flat/REAL wrote train/, validation/ and test/ among the images of REAL, which the next split of flat
    read as images of REAL; --out models/run wrote them among a training run's files. --out flat (another
    dataset's class folders) and --out download (a download's train/ and test/) mixed the split with them: flat then
    split as classes train, validation and test, and the download's split read the new test/ as its own."""
    for seed, group in enumerate(["train", "test"] if script == "DataSplitD2.py" else [""]):
        make_class_folder(tmp_path / "raw" / group, {"REAL": 4, "FAKE": 4}, seed=seed)
    for seed, split in enumerate(["train", "test"], start=8):
        make_class_folder(tmp_path / "download" / split, {"REAL": 2, "FAKE": 2}, seed=seed)
    make_class_folder(tmp_path / "flat", {"REAL": 2, "FAKE": 2}, seed=5)
    (tmp_path / "models" / "run").mkdir(parents=True)
    (tmp_path / "models" / "run" / "model.json").write_text("{}")
    before, paths = snapshot(tmp_path), sorted(tmp_path.rglob("*"))

    line = one_error_line(run_script(script, tmp_path / "raw", "--out", tmp_path / out))

    assert line.startswith(f"error: --out {tmp_path / out} {what}") and "Choose an --out of its own" in line, line
    assert snapshot(tmp_path) == before and sorted(tmp_path.rglob("*")) == paths


def test_each_step_ends_with_the_next_steps_command_that_runs_for_a_folder_with_a_space(tmp_path, make_class_folder,
                                                                                        capsys):
    """DataMerger printed no next step, and DataAugmentation's ``--data /tmp/my data`` was two words."""
    import shlex

    def next_words() -> list[str]:
        (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Next: ")]
        return shlex.split(line.removeprefix("Next: ").split(" (optional)")[0])

    data, art = tmp_path / "my data", tmp_path / "my art"
    make_class_folder(tmp_path / "raw", {"REAL": 10, "FAKE": 10})
    make_class_folder(tmp_path / "raw art", {"REAL": 10, "FAKE": 10}, seed=7)
    assert DataSplitD1.main([str(tmp_path / "raw"), "--out", str(data), "--quiet"]) == 0
    assert DataSplitD1.main([str(tmp_path / "raw art"), "--out", str(art), "--quiet"]) == 0
    capsys.readouterr()

    assert DataMerger.main([str(art), "--into", str(data), "--quiet"]) == 0
    assert next_words() == ["python", "DataAugmentation.py", "--data", str(data)]
    assert DataAugmentation.main(["--data", str(data), "--copies", "1", "--quiet"]) == 0
    assert next_words() == ["python", "MoveAugmentedImages.py", "--data", str(data)]


def test_datasplitd1_says_in_one_line_that_it_looked_inside_a_single_wrapper_folder(tmp_path, make_class_folder):
    make_class_folder(tmp_path / "raw_art" / "Top Folder", {"RealArt": 5, "GeneratedArt": 5})
    process = run_script("DataSplitD1.py", tmp_path / "raw_art", "--out", tmp_path / "data")
    assert process.returncode == 0, process.stderr
    assert [line for line in process.stderr.splitlines() if "inside" in line] == [
        f"using {tmp_path / 'raw_art' / 'Top Folder'} (the dataset folder inside {tmp_path / 'raw_art'})"]


def test_datasplitd1_splits_the_class_folders_of_a_mac_zip_beside_its_macosx_folder(tmp_path, make_class_folder):
    """Finder's Compress of REAL/ and FAKE/, unzipped with unzip: __MACOSX/{REAL,FAKE}/._* beside them was read as a
    third class folder, and the split refused it as the dataset packed twice, naming __MACOSX as the SOURCE to give."""
    source = make_class_folder(tmp_path / "raw", {"REAL": 5, "FAKE": 5})
    for class_name in ("REAL", "FAKE"):
        (source / "__MACOSX" / class_name).mkdir(parents=True)
        (source / "__MACOSX" / class_name / "._img_000.png").write_bytes(b"\x00\x05\x16\x07 fork")
    process = run_script("DataSplitD1.py", source, "--out", tmp_path / "data", "--quiet")
    assert process.returncode == 0, process.stderr
    assert sorted(path.name for path in (tmp_path / "data" / "train").iterdir()) == ["FAKE", "REAL"]


def test_a_split_run_again_without_its_flags_names_in_one_line_the_flags_that_finish_it(tmp_path, make_class_folder):
    """A user back at a split (interrupted, or done) with the flags forgotten: the line names the ones it was made
    with, and the same command with them runs to its end."""
    make_class_folder(tmp_path / "raw", {"RealArt": 8, "GeneratedArt": 8})
    command = [tmp_path / "raw", "--out", tmp_path / "data"]
    made_with = ["--seed", "7", "--ratios", "0.5", "0.25", "0.25", "--rename", "GeneratedArt=FAKE", "--rename",
                 "RealArt=REAL"]
    assert run_script("DataSplitD1.py", *command, *made_with).returncode == 0
    line = one_error_line(run_script("DataSplitD1.py", *command, "--quiet"))  # without the planning line
    named = line.partition("; it was made with ")[2].partition(" (this run: ")[0]
    assert shlex.split(named) == made_with, line
    assert run_script("DataSplitD1.py", *command, *shlex.split(named)).returncode == 0


@pytest.mark.parametrize("script", ["DataSplitD1.py", "DataSplitD2.py"])
def test_a_split_says_what_it_does_between_its_checking_and_copying_bars(tmp_path, make_class_folder, script):
    """Planning and the shortcut check (scikit-learn's import alone takes seconds) left 5-14 s without a word
    between the two bars on 10,000 to 100,000 CIFAKE images."""
    source = tmp_path / "raw"
    if script == "DataSplitD2.py":
        make_class_folder(source / "train", {"REAL": 4, "FAKE": 4})
        make_class_folder(source / "test", {"REAL": 2, "FAKE": 2}, seed=100)
    else:
        make_class_folder(source, {"REAL": 6, "FAKE": 6})

    process = run_script(script, source, "--out", tmp_path / "data")

    assert process.returncode == 0, process.stderr
    assert any(line.startswith("planning the split of 12 images: ") and "shortcuts" in line
               for line in process.stderr.splitlines()), process.stderr


def test_a_split_says_it_writes_its_records_before_it_copies(tmp_path, make_class_folder, caplog,
                                                            monkeypatch):
    """Writing manifest.csv, skipped.csv and .checks.json, and clearing what a killed run left, took 4 s after the
    shortcut check of a re-run on 100,000 CIFAKE images, under the planning line."""
    import logging

    from realvsai import splitting

    make_class_folder(tmp_path / "raw", {"REAL": 6, "FAKE": 6})
    line = f"writing manifest.csv, skipped.csv and .checks.json in {tmp_path / 'data'}"
    said_before_writing, write_checks = [], splitting._write_checks

    def write_first_record(*args, **kwargs):
        said_before_writing.append(any(record.getMessage() == line for record in caplog.records))
        return write_checks(*args, **kwargs)

    monkeypatch.setattr(splitting, "_write_checks", write_first_record)
    with caplog.at_level(logging.INFO, logger="realvsai"):
        splitting.split_by_class(tmp_path / "raw", tmp_path / "data")

    assert said_before_writing == [True]


def test_datasplitd2_main_splits_train_and_test(tmp_path, make_class_folder, capsys):
    make_class_folder(tmp_path / "cifake" / "train", {"REAL": 10, "FAKE": 10}, seed=1)
    make_class_folder(tmp_path / "cifake" / "test", {"REAL": 3, "FAKE": 3}, seed=2)
    code = DataSplitD2.main([str(tmp_path / "cifake"), "--out", str(tmp_path / "data"), "--val-fraction", "0.3",
                             "--link", "--quiet"])
    assert code == 0
    assert "26 files in" in capsys.readouterr().out
    assert len(list((tmp_path / "data" / "validation" / "REAL").iterdir())) == 3


def test_a_mac_s_class_folders_take_a_rename_typed_with_composed_accents_and_are_never_two_classes_that_print_alike(
        tmp_path, make_class_folder, capsys):
    """A zip from a Mac names "tumör" with a decomposed accent: DataSplitD2 refused --rename tumör=malignant typed
    on Linux ("--rename names ['tumör'], but the class folders are [... 'tumör' ...]"), and DataSplitD1 split
    "tumör" typed beside the Mac's "tumör" as two classes."""
    composed, decomposed = "tum\u00f6r", "tumo\u0308r"
    make_class_folder(tmp_path / "mac" / "train", {decomposed: 10, "normal": 10}, seed=1)
    make_class_folder(tmp_path / "mac" / "test", {decomposed: 3, "normal": 3}, seed=2)
    assert DataSplitD2.main([str(tmp_path / "mac"), "--out", str(tmp_path / "data"), "--rename",
                             f"{composed}=malignant", "--quiet"]) == 0
    assert sorted(path.name for path in (tmp_path / "data" / "test").iterdir()) == ["malignant", "normal"]

    make_class_folder(tmp_path / "both", {composed: 5, decomposed: 5, "normal": 5}, seed=3)
    capsys.readouterr()
    assert DataSplitD1.main([str(tmp_path / "both"), "--out", str(tmp_path / "both-data"), "--quiet"]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert "differ only in letter case or accent encoding" in line and "Move their images into one folder" in line
    assert not (tmp_path / "both-data").exists()


def test_datasplitd2_warns_with_examples_of_the_images_it_leaves_outside_train_and_test(tmp_path, make_class_folder,
                                                                                           capsys):
    make_class_folder(tmp_path / "cifake" / "train", {"REAL": 10, "FAKE": 10}, seed=1)
    make_class_folder(tmp_path / "cifake" / "test", {"REAL": 3, "FAKE": 3}, seed=2)
    extra = write_image(tmp_path / "cifake" / "extra" / "REAL" / "extra.png", seed=3)
    assert DataSplitD2.main([str(tmp_path / "cifake"), "--out", str(tmp_path / "data"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "skipped: 1 file (list: " in captured.out
    [warning] = [line for line in captured.err.splitlines() if str(extra) in line]
    assert warning.startswith("left out 1 file ") and "skipped.csv" in warning


def test_datasplitd1_max_pixels_sets_the_limit_its_skipped_list_names(tmp_path, make_class_folder):
    source = make_class_folder(tmp_path / "art", {"RealArt": 4, "GeneratedArt": 4})
    write_image(source / "RealArt" / "big.png", seed=5, size=(64, 64))
    assert DataSplitD1.main([str(source), "--out", str(tmp_path / "data"), "--max-pixels", "2000", "--quiet"]) == 0
    with open(tmp_path / "data" / "skipped.csv", newline="") as stream:
        reasons = {Path(row["source"]).name: row["reason"] for row in csv.DictReader(stream)}
    assert list(reasons) == ["big.png"]
    assert "limit of 2,000 pixels" in reasons["big.png"] and "--max-pixels" in reasons["big.png"]


def test_a_phone_photo_over_the_limit_whole_is_split_and_its_duplicates_found_by_its_reduced_pixels(
        tmp_path, make_class_folder):
    """A 200 MP JPEG (conftest's stand-in) is checked and compared at 1/8 of its sides, the pixels a resize model
    takes of it: it is split, and the same photo with other metadata under another class is still one image."""
    source = make_class_folder(tmp_path / "art", {"RealArt": 4, "GeneratedArt": 4})
    data = phone_photo()
    (source / "RealArt" / "phone.jpg").write_bytes(data)
    (source / "RealArt" / "other.jpg").write_bytes(phone_photo(seed=1))
    (source / "GeneratedArt" / "again.jpg").write_bytes(data[:2] + b"\xff\xfe\x00\x07edited" + data[2:])

    assert DataSplitD1.main([str(source), "--out", str(tmp_path / "data"), "--max-pixels", str(PHOTO_LIMIT),
                             "--quiet"]) == 0

    with open(tmp_path / "data" / "skipped.csv", newline="") as stream:
        reasons = {Path(row["source"]).name: row["reason"] for row in csv.DictReader(stream)}
    assert sorted(reasons) == ["again.jpg", "phone.jpg"]  # one image under two classes: every copy left out
    assert all("GeneratedArt" in reason or "RealArt" in reason for reason in reasons.values())
    assert str(source / "RealArt" / "other.jpg") in {row.source for row in read_manifest(tmp_path / "data" /
                                                                                            "manifest.csv")}


@pytest.mark.parametrize("script", ["DataSplitD1.py", "DataSplitD2.py", "DataMerger.py"])
def test_a_zip_given_as_source_is_told_the_unzip_command(script, tmp_path):
    # "is not an existing folder. Check the path.": the path was right, the step before was missing.
    archive = tmp_path / "my downloads" / "cifake.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as packed:
        packed.writestr("train/REAL/a.txt", "x")
    flags = ["--into", tmp_path / "data"] if script == "DataMerger.py" else ["--out", tmp_path / "data"]

    process = run_script(script, archive, *flags)

    assert (f"is a zip archive, not a folder: unzip it first: python DataUnZipper.py '{archive}'"
            in one_error_line(process))
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("script", ["DataSplitD1.py", "DataSplitD2.py"])
def test_a_missing_source_exits_1_with_one_line(script, tmp_path):
    process = run_script(script, tmp_path / "no_such_folder", "--out", tmp_path / "data")
    assert "no_such_folder is not an existing folder" in one_error_line(process)
    assert not (tmp_path / "data").exists()


def test_datasplitd2_on_a_folder_per_class_layout_exits_1_with_one_line(tmp_path, make_class_folder):
    source = make_class_folder(tmp_path / "art", {"RealArt": 2, "GeneratedArt": 2})
    process = run_script("DataSplitD2.py", source, "--out", tmp_path / "data")
    line = one_error_line(process)
    assert "no train/ and test/" in line and "DataSplitD1.py" in line


@pytest.mark.parametrize("script", ["DataSplitD1.py", "DataSplitD2.py"])
@pytest.mark.parametrize("given", ["train", "Test"])
def test_a_split_folder_of_a_train_and_test_download_is_refused_naming_the_download(tmp_path, make_class_folder,
                                                                                   script, given):
    """DataSplitD2 said "for one folder per class, use DataSplitD1.py", and DataSplitD1 split train's images alone:
    the test images were silently left out."""
    source = tmp_path / "my set"
    make_class_folder(source / given, {"REAL": 3, "FAKE": 3})
    make_class_folder(source / ("test" if given == "train" else "train"), {"REAL": 3, "FAKE": 3}, seed=1)
    line = one_error_line(run_script(script, source / given, "--out", tmp_path / "data"))
    command = f"python DataSplitD2.py {shlex.quote(str(source))} --out data"
    assert command in line and not (tmp_path / "data").exists()
    advised = shlex.split(line[line.index(command):])[2:-1]  # as pasted, with an --out of the test's own
    assert run_script("DataSplitD2.py", *advised, str(tmp_path / "out")).returncode == 0
    assert {row.split for row in read_manifest(tmp_path / "out" / "manifest.csv")} == {"train", "validation", "test"}


def loose_images(folder: Path, count: int, seed: int = 7) -> Path:
    """``count`` distinct images right in ``folder``, in no class folder: images nothing labels."""
    for index in range(count):
        write_image(folder / f"{index:04x}.png", seed=seed * 1000 + index)
    return folder


@pytest.mark.parametrize("script", ["DataSplitD1.py", "DataSplitD2.py"])
def test_a_download_whose_test_folder_is_unlabelled_is_told_to_split_train_alone(tmp_path, make_class_folder, script):
    """A competition's layout, train/<class>/ beside a test/ of loose images: DataSplitD2 said test/ "has no class
    folders", DataSplitD1 to use DataSplitD2, and DataSplitD1 on train/ that it was one split of the download: each
    way led back to another refusal."""
    source = tmp_path / "raw" / "competition"
    make_class_folder(source / "train", {"REAL": 4, "FAKE": 4})
    loose_images(source / "test", 5)
    line = one_error_line(run_script(script, source, "--out", tmp_path / "data"))
    command = f"python DataSplitD1.py {shlex.quote(str(source / 'train'))} --out {tmp_path / 'data'}"
    assert "test" in line and "no class folders" in line and command in line
    assert not (tmp_path / "data").exists()
    advised = shlex.split(line[line.index(command):])[2:-1]  # as pasted, with an --out of the test's own
    process = run_script("DataSplitD1.py", *advised, str(tmp_path / "out"))
    assert process.returncode == 0, process.stderr
    assert {(row.split, row.class_name) for row in read_manifest(tmp_path / "out" / "manifest.csv")} == {
        (split, name) for split in ("train", "validation", "test") for name in ("REAL", "FAKE")}


@pytest.mark.parametrize("script", ["DataSplitD1.py", "DataSplitD2.py"])
def test_the_split_of_train_alone_it_advises_keeps_the_out_given(tmp_path, make_class_folder, script):
    """Given --out mine, the advice to split a competition's train/ alone named --out data."""
    source = tmp_path / "raw" / "competition"
    make_class_folder(source / "train", {"REAL": 4, "FAKE": 4})
    loose_images(source / "test", 5)
    line = one_error_line(run_script(script, source, "--out", tmp_path / "mine"))
    assert line.endswith(f"python DataSplitD1.py {source / 'train'} --out {tmp_path / 'mine'}"), line


@pytest.mark.parametrize("script", ["DataSplitD1.py", "DataSplitD2.py"])
@pytest.mark.parametrize("with_test", [False, True], ids=["train-only", "train-and-test"])
def test_a_train_folder_of_loose_images_is_told_to_sort_them_into_class_folders(tmp_path, script, with_test):
    """Labels kept in a CSV (train_data/ of images beside train.csv): the line said to use DataSplitD2.py, the
    command that had just refused it, for ever."""
    source = tmp_path / "raw" / "labels-in-csv"
    loose_images(source / "train", 6)
    (source / "train.csv").write_text("file_name,label\n" + "".join(f"train/{index:04x}.png,{index % 2}\n"
                                                                     for index in range(6)))
    if with_test:
        loose_images(source / "test", 3, seed=8)
    line = one_error_line(run_script(script, source, "--out", tmp_path / "data"))
    train = source / "train"
    assert f"{train} holds images but no class folders" in line and "train.csv" in line
    assert f"{train}/REAL" in line
    assert f"python DataSplitD1.py {shlex.quote(str(train))} --out {tmp_path / 'data'}" in line
    assert "DataSplitD2" not in line and not (tmp_path / "data").exists()


@pytest.mark.parametrize("table", ["train-00000-of-00001.parquet", "data-00000-of-00001.arrow"])
def test_a_hugging_face_download_of_tables_is_named_as_such(tmp_path, table):
    """Its data/ of .parquet files was "class folder data holds no image files. Remove it or put its images in it":
    removed, nothing was left to split."""
    source = tmp_path / "raw" / "hf"
    (source / "data").mkdir(parents=True)
    (source / "data" / table).write_bytes(b"PAR1 the images are in here PAR1")
    (source / "README.md").write_text("---\ndataset_info: ...\n")

    line = one_error_line(run_script("DataSplitD1.py", source, "--out", tmp_path / "data"))

    assert f"{source / 'data'} holds no image files but {Path(table).suffix} files" in line, line
    assert "Hugging Face" in line and "one folder of image files per class" in line and "Remove it" not in line


@pytest.mark.parametrize("script", ["DataSplitD1.py", "DataSplitD2.py"])
def test_a_class_folder_named_train_beside_other_classes_is_told_the_rename_that_splits_it(tmp_path, make_class_folder,
                                                                                          script):
    """A vehicles set (train/ car/ bus/): DataSplitD1 said to use DataSplitD2, which said the same of itself, and
    --rename train=locomotive was refused with that same line."""
    source = make_class_folder(tmp_path / "raw" / "vehicles", {"train": 4, "car": 4, "bus": 4})
    line = one_error_line(run_script(script, source, "--out", tmp_path / "data"))
    assert "--rename train=" in line and "python DataSplitD2.py" not in line
    assert not (tmp_path / "data").exists()
    assert run_script("DataSplitD1.py", source, "--out", tmp_path / "data", "--rename", "train=locomotive",
                      "--quiet").returncode == 0
    assert {row.class_name for row in read_manifest(tmp_path / "data" / "manifest.csv")} == {"bus", "car",
                                                                                               "locomotive"}


def test_datasplitd1_on_a_folder_without_class_folders_exits_1_with_one_line(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "photo.jpg").write_bytes(b"")
    process = run_script("DataSplitD1.py", tmp_path / "flat", "--out", tmp_path / "data")
    assert "no class folders" in one_error_line(process)


def test_a_dataset_packed_twice_in_one_of_its_class_folders_is_refused_naming_the_copy(tmp_path, make_class_folder):
    """Dataset/{Real,Fake} beside Dataset/Dataset/{Real,Fake}: "Dataset" became a third class, every image of it
    the same as one of Real or Fake, all left out: a split of no images, with exit 0."""
    source = make_class_folder(tmp_path / "raw" / "Dataset", {"Real": 2, "Fake": 2})
    make_class_folder(source / "Dataset", {"Real": 2, "Fake": 2})
    process = run_script("DataSplitD1.py", tmp_path / "raw", "--out", tmp_path / "data")
    assert process.returncode == 1  # after the line that says it looked inside raw/
    line = process.stderr.strip().splitlines()[-1]
    assert "holds its class folders twice" in line and "['Fake', 'Real']" in line
    assert f"give {source / 'Dataset'} as SOURCE" in line and not (tmp_path / "data").exists()


def test_a_split_that_would_place_no_image_exits_1_with_why_and_writes_nothing(tmp_path, make_class_folder):
    """Every image under both classes: all left out, a split of no images, "Not ready for training" and exit 0."""
    make_class_folder(tmp_path / "raw", {"Real": 2})
    shutil.copytree(tmp_path / "raw" / "Real", tmp_path / "raw" / "Fake")
    process = run_script("DataSplitD1.py", tmp_path / "raw", "--out", tmp_path / "data", "--quiet")
    line = one_error_line(process)
    assert "no image of" in line and "is left to split" in line and "same image as" in line
    assert not (tmp_path / "data").exists()


def test_a_split_refused_for_placing_no_image_names_a_relative_source_as_typed(tmp_path, make_class_folder):
    """It said "no image of /home/me/project/raw is left to split (e.g. /home/me/project/raw/Fake/img_000.png: ..."
    for DataSplitD1.py raw."""
    make_class_folder(tmp_path / "raw", {"Real": 1})
    shutil.copytree(tmp_path / "raw" / "Real", tmp_path / "raw" / "Fake")

    line = one_error_line(run_script("DataSplitD1.py", "raw", "--out", "data", "--quiet", cwd=tmp_path))

    assert line.startswith(f"error: no image of raw is left to split: each is left out (e.g. "
                           f"{Path('raw', 'Fake', 'img_000.png')}: "), line


@pytest.mark.parametrize(("script", "args", "error"), [
    ("DataSplitD1.py", ["data/raw", "--ratios", "0.5", "0.5", "0.5"], "add up to 1.5, not 1"),
    ("ModelTraining.py", ["--resume"], "--resume needs --name NAME"),
    ("MoveAugmentedImages.py", ["--dataa", "data"], "unrecognized arguments: --dataa data"),
])
def test_a_bad_command_line_is_one_line_naming_the_help(script, args, error, tmp_path):
    """It printed argparse's usage first: 21 lines of ModelTraining.py's options above the line that mattered. The
    help is named as the script was given, so that the command runs from any folder."""
    process = run_script(script, *args, cwd=tmp_path)  # as ``python /path/to/repo/SCRIPT ...``
    assert process.returncode == 2
    [line] = process.stderr.strip().splitlines()
    assert line.startswith(f"{script}: error: ") and error in line
    assert line.endswith(f"(python {REPO / script} --help)")


def test_ratios_that_do_not_add_up_are_bad_usage(tmp_path, make_class_folder):
    source = make_class_folder(tmp_path / "art", {"A": 2, "B": 2})
    process = run_script("DataSplitD1.py", source, "--out", tmp_path / "data", "--ratios", "0.8", "0.2", "0.2")
    assert process.returncode == 2
    assert "error: --ratios 0.8 0.2 0.2 add up to 1.2, not 1" in process.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("script", ["DataSplitD1.py", "DataSplitD2.py"])
@pytest.mark.parametrize(("renames", "said"), [(["FOO"], "'FOO' is not OLD=NEW"),
                                               (["A=X", "A=Y"], "names 'A' twice"),
                                               (["A=test"], "'test' is not a usable class name"),
                                               (["A=" + "x" * 256], "longer than a folder name may be")],
                         ids=["no_equals", "twice", "split_name", "over_255_bytes"])
def test_a_malformed_rename_is_bad_usage(script, renames, said, tmp_path, make_class_folder):
    source = make_class_folder(tmp_path / "art", {"A": 2, "B": 2})
    flags = [flag for rename in renames for flag in ("--rename", rename)]
    process = run_script(script, source, "--out", tmp_path / "data", *flags)
    assert process.returncode == 2
    assert said in process.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "data").exists()


def test_move_and_link_together_are_bad_usage(tmp_path, make_class_folder):
    source = make_class_folder(tmp_path / "art", {"A": 2, "B": 2})
    process = run_script("DataSplitD1.py", source, "--move", "--link")
    assert process.returncode == 2
    assert "not allowed with argument" in process.stderr


def test_a_merge_says_what_it_does_before_each_wait_without_a_bar(tmp_path, make_class_folder):
    """On CIFAKE's 100,000 images a merge went 2-3 s before its first bar, 4-5 s between reading and copying, and
    3-6 s after copying, without a word."""
    make_class_folder(tmp_path / "data" / "train", {"REAL": 2, "FAKE": 2})
    make_class_folder(tmp_path / "art" / "train", {"REAL": 2, "FAKE": 2}, seed=7)

    process = run_script("DataMerger.py", tmp_path / "art", "--into", tmp_path / "data")

    assert process.returncode == 0, process.stderr
    assert [line.split(" ")[0] for line in process.stderr.splitlines()] == ["listing", "listing", "planning",
                                                                           "counting"], process.stderr


def test_datamerger_with_a_missing_source_exits_1_with_one_line(tmp_path):
    process = run_script("DataMerger.py", tmp_path / "nowhere", "--into", tmp_path / "merged")
    assert "nowhere is not an existing folder" in one_error_line(process)


def test_datamerger_with_mismatched_classes_exits_1_with_one_line(tmp_path, make_class_folder):
    make_class_folder(tmp_path / "a" / "train", {"REAL": 1, "FAKE": 1})
    make_class_folder(tmp_path / "b" / "train", {"Real": 1, "Fake": 1})
    process = run_script("DataMerger.py", tmp_path / "a", tmp_path / "b", "--into", tmp_path / "merged")
    assert "--rename" in one_error_line(process)


def test_datamerger_dry_run_says_so_and_writes_nothing(tmp_path, make_class_folder, capsys):
    make_class_folder(tmp_path / "a" / "train", {"REAL": 2, "FAKE": 2})
    code = DataMerger.main([str(tmp_path / "a"), "--into", str(tmp_path / "merged"), "--dry-run", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "0 before + 4 would be added = 4 after" in printed and "dry run" in printed
    assert not (tmp_path / "merged").exists()


@pytest.mark.skipif(not CIFAKE_MINI.is_dir(), reason="../shared/datasets/cifake-mini is not here")
def test_datasplitd2_splits_cifake_mini_without_cross_split_duplicates(tmp_path):
    out = tmp_path / "data"
    process = run_script("DataSplitD2.py", CIFAKE_MINI, "--out", out, "--link", "--quiet")
    assert process.returncode == 0, process.stderr
    rows = read_manifest(out / "manifest.csv")
    counts = defaultdict(int)
    splits_of = defaultdict(set)
    for row in rows:
        counts[row.split] += 1
        splits_of[row.sha256].add(row.split)
    dropped = sum(1 for line in (out / "skipped.csv").read_text().splitlines() if "kept in test only" in line)
    assert counts["train"] + counts["validation"] + dropped == 8000
    assert counts["test"] == 2000
    assert all(len(splits) == 1 for splits in splits_of.values())
    sample = rows[:: len(rows) // 50]
    assert all(hashlib.sha256((out / row.path).read_bytes()).hexdigest() == row.sha256 for row in sample)


def test_a_split_whose_classes_differ_in_size_and_format_warns_of_a_shortcut(tmp_path, capsys):
    for index in range(12):
        write_image(tmp_path / "photos" / "ai" / f"ai_{index}.png", seed=index, size=(64, 64))
        write_image(tmp_path / "photos" / "real" / f"real_{index}.jpg", seed=100 + index, size=(48 + index, 40))
    code = DataSplitD1.main([str(tmp_path / "photos"), "--out", str(tmp_path / "data"), "--quiet"])
    assert code == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "shortcut" in line]
    assert len(warnings) == 1 and "size alone" in warnings[0] and "format alone" in warnings[0]


def test_a_split_reports_size_and_format_per_class_and_no_shortcut_when_alike(tmp_path, make_class_folder, capsys):
    source = make_class_folder(tmp_path / "cifake", {"REAL": 8, "FAKE": 8}, suffix=".jpg")
    assert DataSplitD1.main([str(source), "--out", str(tmp_path / "data"), "--quiet"]) == 0
    printed = capsys.readouterr()
    assert "FAKE: 32 px a side, 8 JPEG" in printed.out and "REAL: 32 px a side, 8 JPEG" in printed.out
    assert "shortcut" not in printed.err


def test_a_class_folder_that_is_a_symlink_to_elsewhere_is_split_like_a_folder(tmp_path, make_class_folder, capsys):
    make_class_folder(tmp_path / "elsewhere", {"FAKE": 6}, seed=3)
    make_class_folder(tmp_path / "mixed", {"REAL": 6}, seed=4)
    (tmp_path / "mixed" / "FAKE").symlink_to(tmp_path / "elsewhere" / "FAKE", target_is_directory=True)
    assert DataSplitD1.main([str(tmp_path / "mixed"), "--out", str(tmp_path / "data"), "--quiet"]) == 0
    assert "12 files in" in capsys.readouterr().out
    assert len(list((tmp_path / "data" / "train" / "FAKE").iterdir())) == 4


def plant_leftovers(folder: Path, *names: str) -> list[Path]:
    """The hidden temporary file a kill -9 during the atomic write of each of ``names`` leaves in ``folder``."""
    planted = [folder / f"{temporary_name(name)}{index + 0x1234abcd:08x}.tmp" for index, name in enumerate(names)]
    for path in planted:
        path.write_bytes(b"half a record")
    return planted


def test_each_data_script_run_again_removes_what_a_kill_left_of_its_records(tmp_path, make_class_folder):
    """A kill between writing a record (manifest.csv, settings.json, ...) and renaming it leaves a hidden
    temporary file; running the same command again finishes the work, and this too."""
    for group in ("train", "test"):
        make_class_folder(tmp_path / "raw" / group, {"REAL": 4, "FAKE": 4}, seed=len(group))
    make_class_folder(tmp_path / "more", {"REAL": 6}, seed=7)
    data, more, quiet = tmp_path / "data", tmp_path / "more-split", "--quiet"
    steps = [
        (lambda: DataSplitD2.main([str(tmp_path / "raw"), "--out", str(data), quiet]), data,
         ("manifest.csv", "skipped.csv")),
        (lambda: DataSplitD1.main([str(tmp_path / "more"), "--out", str(more), quiet]), more,
         ("manifest.csv", "skipped.csv")),
        (lambda: DataMerger.main([str(more), "--into", str(data), quiet]), data,
         ("manifest.csv", "merge-refused.csv", "augmented-copies.csv", "augmented-settings.json")),
        (lambda: DataAugmentation.main(["--data", str(data), "--copies", "1", quiet]), data / "augmented_train",
         ("settings.json", "sources.csv")),
        (lambda: MoveAugmentedImages.main(["--data", str(data), quiet]), data,
         ("augmented-copies.csv", "augmented-settings.json", "move-refused.csv")),
    ]
    for step, (run, folder, records) in enumerate(steps):
        assert run() == 0
        planted = plant_leftovers(folder, *records)
        assert run() == 0
        assert [path.name for path in planted if path.exists()] == [], f"step {step + 1}"


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="file-size limits (ulimit -f) are POSIX's")
def test_a_split_over_the_file_size_limit_says_which_file_and_what_limit(tmp_path, make_class_folder):
    """Under ``ulimit -f`` (a cluster's job limit) the split ended "error: File too large. Fix the cause": no file
    named, no limit either."""
    source = make_class_folder(tmp_path / "raw", {"REAL": 8, "FAKE": 8})
    line = one_error_line(run_script("DataSplitD1.py", source, "--out", tmp_path / "data", "--quiet",
                                     max_file_bytes=512))
    assert line.startswith(f"error: {tmp_path / 'data'}{os.sep}") and "ulimit -f" in line, line


def test_a_split_into_a_folder_it_may_not_write_names_that_folder_not_a_file_that_is_not_there(
        tmp_path, make_class_folder, permissions_bind):
    """It said "data/manifest.csv: permission denied. Check the file's owner and mode": there is no such file."""
    source = make_class_folder(tmp_path / "raw", {"REAL": 4, "FAKE": 4})
    out = tmp_path / "data"
    out.mkdir()
    out.chmod(0o555)
    try:
        line = one_error_line(run_script("DataSplitD1.py", source, "--out", out, "--quiet"))
    finally:
        out.chmod(0o755)
    assert line.startswith(f"error: {out}: permission denied") and "folder's owner and mode" in line, line
