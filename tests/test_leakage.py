"""No training image is a copy of a validation or test image: augmented copies carry their source's identity."""

from __future__ import annotations

import csv
import hashlib
import importlib
import logging
import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import REPO, write_image

from realvsai.splitting import split_by_class

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
DataAugmentation = importlib.import_module("DataAugmentation")
MoveAugmentedImages = importlib.import_module("MoveAugmentedImages")
DataMerger = importlib.import_module("DataMerger")


@pytest.fixture(autouse=True)
def keep_logging_open(monkeypatch):
    """cli.run_main calls logging.shutdown() on exit 1, which would close streams pytest still writes to."""
    monkeypatch.setattr(logging, "shutdown", lambda *args, **kwargs: None)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def augment(data: Path, *args: str) -> int:
    return DataAugmentation.main(["--data", str(data), "--copies", "2", "--seed", "1", "--quiet", *args])


def move(data: Path, *args: str) -> int:
    return MoveAugmentedImages.main(["--data", str(data), "--quiet", *args])


def refused_rows(data: Path) -> list[dict[str, str]]:
    with open(data / "move-refused.csv", newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def source_rows(data: Path) -> list[dict[str, str]]:
    with open(data / "augmented_train" / "sources.csv", newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


@pytest.fixture(scope="module")
def augmented_once(tmp_path_factory) -> Path:
    """A split dataset (3 train images per class) with two augmented copies of each: TensorFlow runs once."""


    data = tmp_path_factory.mktemp("augmented") / "data"
    for class_index, class_name in enumerate(("FAKE", "REAL")):
        for index in range(3):
            write_image(data / "train" / class_name / f"img_{index:03d}.png", seed=class_index * 100 + index)
        write_image(data / "validation" / class_name / "val_000.png", seed=class_index * 100 + 50)
        write_image(data / "test" / class_name / "test_000.png", seed=class_index * 100 + 60)
    assert augment(data) == 0
    return data


@pytest.fixture
def augmented(augmented_once, tmp_path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(augmented_once, data)
    return data


# Recording each copy's source


def test_augmentation_records_every_copys_source_and_its_sha256(augmented):
    rows = {row["copy"]: row for row in source_rows(augmented)}
    copies = sorted(path.relative_to(augmented / "augmented_train").as_posix()
                    for path in (augmented / "augmented_train").glob("*/aug_*.jpg"))
    assert sorted(rows) == copies and len(copies) == 12
    for copy, row in rows.items():
        class_name, name = copy.split("/")
        source = augmented / row["source"]
        assert source == augmented / "train" / class_name / (name[len("aug_"):].rsplit("_", 1)[0] + ".png")
        assert row["source_sha256"] == sha256(source)
        assert row["copy_sha256"] == sha256(augmented / "augmented_train" / copy)


def test_a_rerun_with_more_copies_appends_their_sources_and_keeps_the_earlier_rows(augmented):
    before = source_rows(augmented)
    assert augment(augmented, "--copies", "3") == 0
    after = source_rows(augmented)
    assert all(row in after for row in before)
    assert sorted(row["copy"] for row in after if row not in before) == sorted(
        f"{class_name}/aug_img_{index:03d}_2.jpg" for class_name in ("FAKE", "REAL") for index in range(3))


def test_a_rerun_records_copies_an_interrupted_run_wrote_but_did_not_record(augmented):
    listed = augmented / "augmented_train" / "sources.csv"
    expected = listed.read_bytes()
    listed.unlink()  # killed after the copies, before the record
    assert augment(augmented) == 0
    assert listed.read_bytes() == expected


# MoveAugmentedImages.py refuses what would leak


@pytest.mark.parametrize("split", ["validation", "test"])
def test_move_refuses_the_copies_of_an_image_now_in_validation_or_test(augmented, split, capsys):
    source = augmented / "train" / "REAL" / "img_001.png"
    held_out = augmented / split / "REAL" / "img_001.png"
    source.rename(held_out)  # what a re-split does to it
    assert move(augmented) == 1
    leaked = sorted((augmented / "augmented_train" / "REAL").glob("aug_img_001_*.jpg"))
    assert [path.name for path in leaked] == ["aug_img_001_0.jpg", "aug_img_001_1.jpg"]
    assert not list((augmented / "train" / "REAL").glob("aug_img_001_*"))
    rows = refused_rows(augmented)
    assert sorted(Path(row["source"]).name for row in rows) == ["aug_img_001_0.jpg", "aug_img_001_1.jpg"]
    assert all(str(held_out) in row["reason"] and "copy of" in row["reason"] for row in rows)
    assert len(list((augmented / "train" / "REAL").glob("aug_*"))) == 4  # the other copies moved
    assert "Refused 2" in capsys.readouterr().out


def test_move_refuses_a_copy_whose_source_left_train(augmented):
    (augmented / "train" / "FAKE" / "img_002.png").unlink()
    assert move(augmented) == 1
    assert sorted(path.name for path in (augmented / "augmented_train" / "FAKE").glob("*.jpg")) == [
        "aug_img_002_0.jpg", "aug_img_002_1.jpg"]
    assert all("no longer in train" in row["reason"] for row in refused_rows(augmented))


def test_move_refuses_a_copy_whose_source_s_name_in_train_holds_another_image_now(augmented):
    """The name alone is no proof: the image its copies were made from is gone, another took its name."""
    source = augmented / "train" / "FAKE" / "img_002.png"
    write_image(source, seed=999)
    assert move(augmented) == 1
    assert sorted(path.name for path in (augmented / "augmented_train" / "FAKE").glob("*.jpg")) == [
        "aug_img_002_0.jpg", "aug_img_002_1.jpg"]
    assert all("no longer in train" in row["reason"] for row in refused_rows(augmented))


def test_move_finds_a_source_that_is_in_train_under_another_name(augmented):
    source = augmented / "train" / "FAKE" / "img_002.png"
    source.rename(source.with_name("renamed.png"))
    assert move(augmented) == 0
    assert not (augmented / "augmented_train").exists()


def test_move_refuses_a_copy_without_a_recorded_source_and_says_how_to_fix_it(augmented, capsys):
    stray = augmented / "augmented_train" / "REAL" / "aug_mine_0.jpg"
    stray.write_bytes((augmented / "augmented_train" / "REAL" / "aug_img_000_0.jpg").read_bytes()[:-2]
                      + b"\x00\xff\xd9")  # other content, still a complete JPEG
    assert move(augmented) == 1
    assert stray.is_file()
    [row] = refused_rows(augmented)
    assert row["source"] == str(stray) and "no recorded source" in row["reason"]
    assert "--move-unlisted" in row["reason"]
    assert (augmented / "augmented_train" / "sources.csv").is_file()  # kept: it names the refused copies' sources
    assert "Refused 1" in capsys.readouterr().out


def test_move_unlisted_moves_a_copy_without_a_recorded_source(augmented):
    stray = augmented / "augmented_train" / "REAL" / "aug_mine_0.jpg"
    stray.write_bytes((augmented / "augmented_train" / "REAL" / "aug_img_000_0.jpg").read_bytes()[:-2]
                      + b"\x00\xff\xd9")
    assert move(augmented, "--move-unlisted") == 0
    assert (augmented / "train" / "REAL" / stray.name).is_file()
    assert not (augmented / "augmented_train").exists()


def test_move_refuses_a_copy_changed_since_its_source_was_recorded(augmented):
    copy = augmented / "augmented_train" / "FAKE" / "aug_img_000_1.jpg"
    shutil.copy2(augmented / "augmented_train" / "FAKE" / "aug_img_001_1.jpg", copy)
    assert move(augmented) == 1
    assert copy.is_file()
    [row] = refused_rows(augmented)
    assert row["source"] == str(copy) and "changed" in row["reason"]


def test_move_removes_sources_csv_with_the_emptied_folder(augmented, capsys):
    assert move(augmented) == 0
    assert not (augmented / "augmented_train").exists()
    assert len(list((augmented / "train").glob("*/aug_*.jpg"))) == 12
    assert "Removed the emptied" in capsys.readouterr().out


def test_move_dry_run_counts_the_refusals_and_changes_nothing(augmented, capsys):
    (augmented / "train" / "REAL" / "img_001.png").rename(augmented / "test" / "REAL" / "img_001.png")
    before = sorted(path for path in augmented.rglob("*"))
    assert move(augmented, "--dry-run") == 0
    assert sorted(path for path in augmented.rglob("*")) == before
    assert "Would refuse 2" in capsys.readouterr().out


# A re-split takes augmented_train aside with the old split


def test_overwrite_moves_augmented_train_and_its_records_aside_with_the_old_split(tmp_path, make_class_folder):
    raw = make_class_folder(tmp_path / "raw", {"REAL": 10, "FAKE": 10})
    out = tmp_path / "data"
    split_by_class(raw, out, seed=1)
    copy = out / "augmented_train" / "REAL" / "aug_x_0.jpg"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(b"\xff\xd8 a copy \xff\xd9")
    (out / "move-refused.csv").write_text("moved_at,source,reason\n")
    (out / "augmented-copies.csv").write_text("copy_sha256,source,source_sha256\n")  # copies moved into train
    (out / "augmented-settings.json").write_text("{}")
    report = split_by_class(raw, out, seed=2, overwrite=True)
    assert not (out / "augmented_train").exists() and not (out / "move-refused.csv").exists()
    assert not (out / "augmented-copies.csv").exists()
    assert (report.moved_aside / "augmented_train" / "REAL" / "aug_x_0.jpg").read_bytes() == b"\xff\xd8 a copy \xff\xd9"
    assert (report.moved_aside / "move-refused.csv").read_text() == "moved_at,source,reason\n"
    assert (report.moved_aside / "augmented-copies.csv").is_file()
    assert (report.moved_aside / "augmented-settings.json").is_file() and not (out / "augmented-settings.json").exists()


@pytest.mark.parametrize("renames_before_the_kill", range(1, 8))
def test_overwrite_cut_short_while_moving_the_old_split_aside_moves_the_rest_when_run_again(
        tmp_path, make_class_folder, monkeypatch, renames_before_the_kill):
    raw = make_class_folder(tmp_path / "raw", {"REAL": 10, "FAKE": 10})
    out = tmp_path / "data"
    split_by_class(raw, out, seed=1)
    (out / "augmented_train" / "REAL").mkdir(parents=True)
    (out / "augmented_train" / "REAL" / "aug_x_0.jpg").write_bytes(b"\xff\xd8 a copy \xff\xd9")
    (out / "move-refused.csv").write_text("moved_at,source,reason\n")
    (out / "augmented-copies.csv").write_text("copy_sha256,source,source_sha256\n")
    (out / "augmented-settings.json").write_text("{}")
    real_rename, calls = os.rename, []

    def rename_then_stop(*args):
        if len(calls) == renames_before_the_kill:
            raise KeyboardInterrupt
        calls.append(args)
        real_rename(*args)

    monkeypatch.setattr(os, "rename", rename_then_stop)
    with pytest.raises(KeyboardInterrupt):
        split_by_class(raw, out, seed=2, overwrite=True)
    monkeypatch.setattr(os, "rename", real_rename)
    split_by_class(raw, out, seed=2, overwrite=True)
    for name in ("augmented_train", "move-refused.csv", "augmented-copies.csv", "augmented-settings.json"):
        assert not (out / name).exists()  # the old split's, all aside
    assert len(list(out.glob("previous-split-*/augmented_train/REAL/aug_x_0.jpg"))) == 1


def test_completing_the_same_split_leaves_augmented_train_in_place(tmp_path, make_class_folder):
    raw = make_class_folder(tmp_path / "raw", {"REAL": 6, "FAKE": 6})
    out = tmp_path / "data"
    split_by_class(raw, out, seed=1)
    (out / "augmented_train" / "REAL").mkdir(parents=True)
    split_by_class(raw, out, seed=1)
    assert (out / "augmented_train" / "REAL").is_dir()


def test_copies_made_before_a_re_split_never_reach_train_with_their_source_held_out(tmp_path, make_class_folder):
    raw = make_class_folder(tmp_path / "raw", {"REAL": 7, "FAKE": 7})
    data = tmp_path / "data"
    split_by_class(raw, data, seed=1)
    assert augment(data, "--copies", "1") == 0
    split_by_class(raw, data, seed=7, overwrite=True)
    for folder in data.glob("previous-split-*/augmented_train"):  # a user who brings the old copies back
        shutil.move(str(folder), str(data / "augmented_train"))
    assert move(data) == 1
    held_out = {path.stem for split in ("validation", "test") for path in (data / split).rglob("*.png")}
    trained = {path.name[len("aug_"):].rsplit("_", 1)[0] for path in (data / "train").rglob("aug_*.jpg")}
    assert trained and not trained & held_out
    refused = {path.name[len("aug_"):].rsplit("_", 1)[0] for path in (data / "augmented_train").rglob("aug_*.jpg")}
    assert refused and refused <= held_out


# DataMerger.py refuses moved copies of an image another split holds


def test_merge_keeps_moved_copies_of_an_image_in_the_targets_test_out_of_its_train(augmented, tmp_path):
    assert move(augmented) == 0
    target = tmp_path / "target"
    for class_index, class_name in enumerate(("FAKE", "REAL")):
        write_image(target / "train" / class_name / "own.png", seed=900 + class_index)
        write_image(target / "test" / class_name / "own_test.png", seed=950 + class_index)
        write_image(target / "validation" / class_name / "own_validation.png", seed=970 + class_index)
    shutil.copyfile(augmented / "train" / "REAL" / "img_001.png", target / "test" / "REAL" / "held_out.png")
    copies = {sha256(path) for path in (augmented / "train" / "REAL").glob("aug_img_001_*.jpg")}
    assert len(copies) == 2
    assert DataMerger.main([str(augmented), "--into", str(target), "--quiet"]) == 1
    assert not {sha256(path) for path in (target / "train").rglob("*.jpg")} & copies
    assert len(list((target / "train").rglob("aug_*.jpg"))) == 10  # the other copies were merged
