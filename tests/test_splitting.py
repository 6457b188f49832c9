"""realvsai.splitting: reproducible, stratified, leak-free and lossless splits."""

from __future__ import annotations

import argparse
import csv
import functools
import os
import random
import re
import shutil
import threading
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from conftest import disk_full_at_write, record_disk_waits, sha256, snapshot, syncs_a_batch, write_image
from PIL import Image

from realvsai import files, splitting
from realvsai.errors import UserError
from realvsai.layout import find_train_test_root, parse_renames, read_manifest
from realvsai.splitting import (
    IN_TEST,
    TWO_CLASSES,
    UNUSABLE,
    SplitDefaults,
    check_ratios,
    format_report,
    split_by_class,
    split_files,
    split_train_test,
)


def manifest_keys(out: Path) -> list[tuple[str, str, str, str]]:
    return [row.key() for row in read_manifest(out / "manifest.csv")]


def skipped_sources(out: Path) -> dict[str, str]:
    with open(out / "skipped.csv", newline="") as stream:
        return {Path(row["source"]).name: row["reason"] for row in csv.DictReader(stream)}


@pytest.fixture
def art(tmp_path, make_class_folder) -> Path:
    """A one-folder-per-class set: 20 RealArt and 20 GeneratedArt images."""
    return make_class_folder(tmp_path / "art", {"RealArt": 20, "GeneratedArt": 20})


@pytest.fixture
def cifake(tmp_path, make_class_folder) -> Path:
    """A train/test set: 20 + 20 train and 5 + 5 test images per class REAL and FAKE."""
    make_class_folder(tmp_path / "cifake" / "train", {"REAL": 20, "FAKE": 20}, seed=1)
    make_class_folder(tmp_path / "cifake" / "test", {"REAL": 5, "FAKE": 5}, seed=2)
    return tmp_path / "cifake"


@pytest.fixture
def art_with_skipped_files(art, bad_files) -> Path:
    """``art`` plus a file of every kind a split leaves out: 7 rows of skipped.csv."""
    bad_files(art / "RealArt")  # truncated, empty, text named .jpg
    (art / "RealArt" / "notes.txt").write_text("not an image")
    (art / "README.txt").write_text("beside the class folders")
    shutil.copyfile(art / "RealArt" / "img_004.png", art / "GeneratedArt" / "also_generated.png")  # 2 rows
    return art


def skipped_count(summary: str) -> int:
    """N in the summary's ``skipped: N files`` (or ``1 file``) line."""
    return int(re.search(r"skipped: ([\d,]+) files?\b", summary).group(1).replace(",", ""))


# ----------------------------------------------------------------------------------------------
# split_files and ratios


def test_split_files_is_the_same_whatever_the_input_order():
    files = [f"img_{index:03d}.png" for index in range(50)]
    shuffled = random.Random(7).sample(files, len(files))
    assert split_files(files, {"a": 0.7, "b": 0.3}, seed=3) == split_files(shuffled, {"a": 0.7, "b": 0.3}, seed=3)


def test_split_files_puts_every_file_in_exactly_one_split():
    files = list(range(37))
    result = split_files(files, {"train": 0.7, "validation": 0.15, "test": 0.15}, seed=0)
    assert sorted(file for chosen in result.values() for file in chosen) == files
    assert [len(result[name]) for name in ("train", "validation", "test")] == [26, 5, 6]


@pytest.mark.parametrize(("count", "fractions", "expected"), [
    (2, {"train": 0.8, "validation": 0.2}, [1, 1]),  # DataSplitD2's validation carve
    (3, {"train": 0.7, "validation": 0.15, "test": 0.15}, [1, 1, 1]),
    (4, {"train": 0.7, "validation": 0.15, "test": 0.15}, [2, 1, 1]),  # was 3, 0, 1: training refused
    (5, {"train": 0.7, "validation": 0.15, "test": 0.15}, [3, 1, 1]),
    (6, {"train": 0.7, "validation": 0.15, "test": 0.15}, [4, 1, 1]),
    (1, {"train": 0.8, "validation": 0.2}, [1, 0]),  # too few for both
    (4, {"train": 0.8, "validation": 0.2, "test": 0.0}, [3, 1, 0]),  # no test asked for
    (4, {"train": 0.5, "validation": 0.01, "test": 0.49}, [1, 1, 2]),  # 2 / 0 / 2: the first of the largest gives
])
def test_split_files_gives_each_split_asked_for_a_file_while_there_are_enough(count, fractions, expected):
    """Training needs a validation image of every class: rounding must not leave validation empty while another
    split has files to spare (a class of 4 was cut 3 / 0 / 1)."""
    result = split_files(list(range(count)), fractions, seed=0)
    assert [len(result[name]) for name in fractions] == expected


def test_a_split_that_leaves_every_class_without_validation_images_warns_that_training_needs_them(
        tmp_path, make_class_folder, caplog):
    """The warning named the splits some class had files in: with none in validation at all, it said nothing,
    and training refused the split."""
    source = make_class_folder(tmp_path / "raw", {"REAL": 1, "FAKE": 1})
    with caplog.at_level("WARNING", logger="realvsai"):
        split_by_class(source, tmp_path / "out")
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert sum("no files in validation" in message and "training needs a validation image" in message
               for message in warnings) == 2


def _class_warnings(caplog, class_name: str) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.levelname == "WARNING" and record.getMessage().startswith(f"class {class_name} has no files")]


@pytest.mark.parametrize("script", ["D1", "D2"])
def test_a_class_of_one_image_is_told_to_get_more_images_not_a_share_that_cannot_help(
        tmp_path, make_class_folder, caplog, script):
    """A class of one image has none to spare for validation, whatever the shares: the warning said "or a larger
    validation share (--ratios)", a flag DataSplitD2 does not have, and one that moves the lone image out of train."""
    if script == "D1":
        source = make_class_folder(tmp_path / "raw", {"REAL": 1, "FAKE": 10})
        split = functools.partial(split_by_class, source, tmp_path / "out")
    else:
        make_class_folder(tmp_path / "raw" / "train", {"REAL": 1, "FAKE": 10}, seed=1)
        make_class_folder(tmp_path / "raw" / "test", {"REAL": 2, "FAKE": 2}, seed=2)
        split = functools.partial(split_train_test, tmp_path / "raw", tmp_path / "out")
    with caplog.at_level("WARNING", logger="realvsai"):
        report = split()

    assert report.counts[("validation", "REAL")] == 0
    (warning,) = _class_warnings(caplog, "REAL")
    assert "training needs a validation image" in warning
    assert "--ratios" not in warning and "validation share" not in warning
    assert "1 usable image" in warning and "add images of it" in warning


def test_a_download_s_validation_left_without_a_class_is_not_told_of_a_share_option(
        tmp_path, make_class_folder, caplog):
    """A download's own valid/ whose one REAL image is also in test: REAL is left without validation, and the
    warning named --ratios, which DataSplitD2 lacks (it carves nothing out of train beside a given valid/)."""
    make_class_folder(tmp_path / "raw" / "train", {"REAL": 5, "FAKE": 5}, seed=1)
    make_class_folder(tmp_path / "raw" / "test", {"REAL": 2, "FAKE": 2}, seed=2)
    make_class_folder(tmp_path / "raw" / "valid", {"FAKE": 2}, seed=3)
    (tmp_path / "raw" / "valid" / "REAL").mkdir()
    shutil.copyfile(tmp_path / "raw" / "test" / "REAL" / "img_000.png", tmp_path / "raw" / "valid" / "REAL" / "x.png")
    with caplog.at_level("WARNING", logger="realvsai"):
        report = split_train_test(tmp_path / "raw", tmp_path / "out")

    assert report.counts[("validation", "REAL")] == 0 and report.counts[("train", "REAL")] == 5
    (warning,) = _class_warnings(caplog, "REAL")
    assert "training needs a validation image" in warning and "--ratios" not in warning
    assert "validation folder" in warning


def test_a_class_of_copies_of_one_image_is_told_to_get_more_images_not_a_validation_share(
        tmp_path, make_class_folder, caplog):
    """Five files of REAL with the same bytes are one image, which stays in train with its copies: the warning
    counted the five files as images to spare and said "split again with a validation share above 0 (--ratios)",
    which the split already had and which cannot help."""
    source = make_class_folder(tmp_path / "raw", {"FAKE": 5})
    write_image(source / "REAL" / "real_0.png", seed=99)
    for index in range(1, 5):
        shutil.copyfile(source / "REAL" / "real_0.png", source / "REAL" / f"real_{index}.png")
    with caplog.at_level("WARNING", logger="realvsai"):
        report = split_by_class(source, tmp_path / "out")

    assert report.counts[("validation", "REAL")] == 0 and report.counts[("train", "REAL")] == 5
    (warning,) = _class_warnings(caplog, "REAL")
    assert "--ratios" not in warning and "validation share" not in warning
    assert "1 usable image" in warning and "add images of it" in warning
    assert f"add images of it to {source} and split again" in warning  # it said "to SOURCE"


@pytest.mark.parametrize(("count", "ratios"), [(5, (0.8, 0.0, 0.2)), (2, (1.0, 0.0, 0.0))])  # 2: one to spare
def test_a_split_without_a_validation_share_is_told_to_give_one(tmp_path, make_class_folder, caplog, count, ratios):
    source = make_class_folder(tmp_path / "raw", {"REAL": count, "FAKE": count})
    with caplog.at_level("WARNING", logger="realvsai"):
        split_by_class(source, tmp_path / "out", ratios=ratios)

    (warning,) = _class_warnings(caplog, "REAL")
    assert "training needs a validation image" in warning and "validation share above 0 (--ratios)" in warning


def test_a_split_too_small_for_any_test_image_says_so(tmp_path, make_class_folder, caplog):
    """Two images a class go to train and validation, none to test: the split asked 15 % for test and made no
    test folder, without a word, and training then skipped its evaluation (no test numbers, threshold or card)."""
    source = make_class_folder(tmp_path / "raw", {"REAL": 2, "FAKE": 2})
    with caplog.at_level("WARNING", logger="realvsai"):
        report = split_by_class(source, tmp_path / "out")

    assert not any(report.counts[("test", name)] for name in ("REAL", "FAKE"))
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert any("no test image" in message and "--evaluate" in message for message in warnings), warnings


def test_a_split_without_a_test_share_does_not_warn_of_no_test_images(tmp_path, make_class_folder, caplog):
    source = make_class_folder(tmp_path / "raw", {"REAL": 2, "FAKE": 2})
    with caplog.at_level("WARNING", logger="realvsai"):
        split_by_class(source, tmp_path / "out", ratios=(0.5, 0.5, 0.0))

    assert not [record for record in caplog.records if "no test image" in record.getMessage()]


def test_a_test_folder_without_a_class_of_train_names_the_class_rather_than_say_to_remove_folders(
        tmp_path, make_class_folder):
    """test/ held REAL only: the refusal said "rename or remove folders so they match", which read as removing
    train/FAKE, the class the user came to learn."""
    make_class_folder(tmp_path / "raw" / "train", {"REAL": 3, "FAKE": 3}, seed=1)
    make_class_folder(tmp_path / "raw" / "test", {"REAL": 2}, seed=2)

    with pytest.raises(UserError) as refused:
        split_train_test(tmp_path / "raw", tmp_path / "out")
    message = str(refused.value)
    assert "FAKE" in message.split(". ", 1)[1] and "remove folders" not in message
    assert str(tmp_path / "raw" / "test" / "FAKE") in message
    assert not (tmp_path / "out").exists()


def test_split_files_depends_on_the_seed():
    files = list(range(40))
    assert split_files(files, {"a": 0.5, "b": 0.5}, seed=1) != split_files(files, {"a": 0.5, "b": 0.5}, seed=2)


@pytest.mark.parametrize("ratios", [(0.7, 0.2, 0.2), (0.5, 0.5), (1.2, -0.1, -0.1), (0, 0.5, 0.5), (0.7, 0.15, 0.145)])
def test_check_ratios_rejects_shares_that_are_not_three_adding_up_to_one(ratios):
    with pytest.raises(UserError, match="--ratios"):
        check_ratios(ratios)


# ----------------------------------------------------------------------------------------------
# DataSplitD1 layout


def test_split_by_class_is_reproducible_whatever_order_files_were_created_in(tmp_path):
    for folder, order in (("first", range(12)), ("second", reversed(range(12)))):
        for index in order:
            for class_index, class_name in enumerate(("cat", "dog")):
                write_image(tmp_path / folder / class_name / f"{index:02d}.png", seed=class_index * 100 + index)
    split_by_class(tmp_path / "first", tmp_path / "out1", seed=5)
    split_by_class(tmp_path / "second", tmp_path / "out2", seed=5)
    assert manifest_keys(tmp_path / "out1") == manifest_keys(tmp_path / "out2")


def test_split_by_class_is_reproducible_whatever_order_the_file_system_lists(art, tmp_path, monkeypatch):
    split_by_class(art, tmp_path / "out1", seed=5)
    real_scandir = os.scandir

    class ShuffledScandir:
        def __init__(self, path):
            self.entries = list(real_scandir(path))
            random.Random(str(path)).shuffle(self.entries)

        def __enter__(self):
            return iter(self.entries)

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(os, "scandir", ShuffledScandir)
    split_by_class(art, tmp_path / "out2", seed=5)
    assert manifest_keys(tmp_path / "out1") == manifest_keys(tmp_path / "out2")


def test_split_by_class_cuts_each_class_as_split_files_does_with_the_seed(art, tmp_path):
    """Each class on its own, its files in path order: another class, or images added to one, move none of a
    class's files, and --seed seeds the shuffle of each class."""
    split_by_class(art, tmp_path / "out", seed=7)

    placed = read_manifest(tmp_path / "out" / "manifest.csv")
    for class_name in ("GeneratedArt", "RealArt"):
        names = sorted(path.name for path in (art / class_name).iterdir())
        expected = split_files(names, {"train": 0.7, "validation": 0.15, "test": 0.15}, seed=7)
        assert {Path(row.path).name: row.split for row in placed if row.class_name == class_name} == {
            name: split for split, chosen in expected.items() for name in chosen}


def test_a_copy_of_an_image_under_a_later_name_moves_no_other_file(art, tmp_path):
    split_by_class(art, tmp_path / "before", seed=11)
    shutil.copyfile(art / "GeneratedArt" / "img_005.png", art / "GeneratedArt" / "zz_copy.png")
    split_by_class(art, tmp_path / "after", seed=11)

    before, after = ({(row.class_name, Path(row.path).name): row.split for row in read_manifest(out / "manifest.csv")}
                     for out in (tmp_path / "before", tmp_path / "after"))
    assert after.pop(("GeneratedArt", "zz_copy.png")) == before[("GeneratedArt", "img_005.png")]
    assert after == before


def test_split_by_class_keeps_each_class_proportions(art, tmp_path):
    report = split_by_class(art, tmp_path / "out", ratios=(0.7, 0.15, 0.15))
    for class_name in ("RealArt", "GeneratedArt"):
        assert [report.counts[(split, class_name)] for split in ("train", "validation", "test")] == [14, 3, 3]


def test_split_by_class_loses_no_file_and_puts_none_in_two_splits(art, tmp_path):
    out = tmp_path / "out"
    split_by_class(art, out)
    source_hashes = sorted(sha256(path) for path in art.rglob("*.png"))
    placed = sorted(out.glob("*/*/*.png"))
    assert sorted(sha256(path) for path in placed) == source_hashes
    splits_of = defaultdict(set)
    for path in placed:
        splits_of[sha256(path)].add(path.parent.parent.name)
    assert all(len(splits) == 1 for splits in splits_of.values())
    assert sorted(row.path for row in read_manifest(out / "manifest.csv")) == sorted(
        path.relative_to(out).as_posix() for path in placed)


def test_split_by_class_leaves_the_source_untouched_when_copying(art, tmp_path):
    before = snapshot(art)
    split_by_class(art, tmp_path / "out")
    assert snapshot(art) == before


@syncs_a_batch
@pytest.mark.parametrize("mode", [splitting.COPY, splitting.MOVE])
def test_a_copy_split_waits_on_the_disk_once_a_batch_not_once_a_copy(art, tmp_path, monkeypatch, mode):
    """Each copy was fsynced: 100,000 CIFAKE files spent most of a split waiting on the disk
    (benchmarks/bench_split.py). The copies of a batch are written (on Linux without a name), synced together,
    then named: no cut file under an image's name after a power cut, as before."""
    calls = record_disk_waits(monkeypatch)
    monkeypatch.setattr(splitting, "_cross_device", lambda root, out: True)  # a move copies, then deletes
    monkeypatch.setattr(files, "_CHUNK", 16)

    report = split_by_class(art, tmp_path / "out", workers=1, mode=mode)

    assert report.num_written == 40
    assert [call for call in calls if call[1] in ("RealArt", "GeneratedArt")] == []
    assert calls.count(("sync", "")) == 3  # 40 images in chunks of 16
    assert sorted(path.name for path in (tmp_path / "out").rglob("*") if path.name.startswith(".")) == [
        ".checks.json"]


def test_accented_names_split_alike_whichever_unicode_form_the_disk_gives(tmp_path):
    # macOS (and zips made there) spell "é" as e + a combining accent (NFD); Linux and Windows as one letter.
    import unicodedata

    for form in ("NFC", "NFD"):
        for class_name in ("Real", "Fake"):
            for index in range(12):
                name = f"{'été' if index % 2 else 'photo'}_{index:02d}{'é' * (index % 3)}.png"
                write_image(tmp_path / form / class_name / unicodedata.normalize(form, name),
                            seed=index + 100 * (class_name == "Real"))
    splits = {}
    for form in ("NFC", "NFD"):
        split_by_class(tmp_path / form, tmp_path / f"out-{form}", seed=4)
        splits[form] = sorted((row.split, row.class_name, unicodedata.normalize("NFC", Path(row.path).name))
                              for row in read_manifest(tmp_path / f"out-{form}" / "manifest.csv"))
    assert splits["NFC"] == splits["NFD"]


def test_duplicates_under_other_names_follow_their_first_copy(art, tmp_path):
    original = art / "GeneratedArt" / "img_005.png"
    (art / "GeneratedArt" / "sub").mkdir()
    for copy in (art / "GeneratedArt" / "zz_copy.png", art / "GeneratedArt" / "aa_copy.png",
                 art / "GeneratedArt" / "sub" / "zz.png"):
        shutil.copyfile(original, copy)
    out = tmp_path / "out"
    report = split_by_class(art, out, seed=11)
    rows = [row for row in read_manifest(out / "manifest.csv") if row.sha256 == sha256(original)]
    assert len(rows) == 4
    assert len({row.split for row in rows}) == 1
    assert report.num_duplicates == 3


def test_the_same_pixels_in_other_bytes_follow_their_first_copy(art, tmp_path):
    # The same image as PNG, BMP and lossless WebP, and a JPEG with and without its metadata: other
    # bytes, the same pixels. In train and validation it would be learnt and then scored as unseen.
    pixels = Image.open(art / "GeneratedArt" / "img_005.png")
    for name in ("zz_same.bmp", "aa_same.webp"):
        pixels.save(art / "GeneratedArt" / name, lossless=True)
    pixels.save(art / "RealArt" / "photo.jpg", quality=90)
    jpeg = (art / "RealArt" / "photo.jpg").read_bytes()  # a comment segment after the start marker: metadata only
    comment = b"from another site"
    (art / "RealArt" / "zz_photo_saved_again.jpg").write_bytes(
        jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:])
    out = tmp_path / "out"
    report = split_by_class(art, out, seed=11)
    where = {Path(row.path).name: row.split for row in read_manifest(out / "manifest.csv")}
    assert len({where["img_005.png"], where["zz_same.bmp"], where["aa_same.webp"]}) == 1
    assert len({where["photo.jpg"], where["zz_photo_saved_again.jpg"]}) == 1
    assert report.num_duplicates >= 3


def test_the_same_pixels_under_two_classes_are_left_out_of_both(art, tmp_path):
    Image.open(art / "RealArt" / "img_004.png").save(art / "GeneratedArt" / "also_generated.bmp")
    report = split_by_class(art, tmp_path / "out", seed=3)
    assert {Path(source).name for source, _ in report.skipped[TWO_CLASSES]} == {"img_004.png", "also_generated.bmp"}


@pytest.mark.parametrize("mode", ["move", "link"])
def test_move_and_link_place_a_symlinked_files_bytes_not_the_link(art, tmp_path, mode):
    outside = write_image(tmp_path / "elsewhere" / "photo.png", seed=99)
    link = art / "RealArt" / "linked.png"
    link.symlink_to(os.path.relpath(outside, link.parent))  # relative: renamed or hard-linked, it leads nowhere
    out = tmp_path / "out"
    split_by_class(art, out, mode=mode)
    [placed] = [path for split in ("train", "validation", "test")
                if os.path.lexists(path := out / split / "RealArt" / "linked.png")]
    assert not placed.is_symlink() and sha256(placed) == sha256(outside)
    assert outside.is_file()  # never moved: it is outside SOURCE


def test_unreadable_and_non_image_files_are_skipped_and_listed(art, tmp_path, bad_files):
    bad = bad_files(art / "RealArt")
    (art / "RealArt" / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    report = split_by_class(art, out)
    assert len(report.skipped[UNUSABLE]) == len(bad) + 1
    assert set(skipped_sources(out)) == {path.name for path in bad.values()} | {"notes.txt"}
    assert not any(path.name in {p.name for p in bad.values()} for path in out.rglob("*.jpg"))
    assert report.num_files == 40


def test_a_tiff_named_jpg_is_left_out_of_a_split_as_a_tiff_named_tiff_is(art, tmp_path):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), np.uint8))
    image.save(art / "RealArt" / "scan.tiff", "TIFF")
    image.save(art / "RealArt" / "scan_named.jpg", "TIFF")
    out = tmp_path / "out"
    split_by_class(art, out)
    skipped = skipped_sources(out)
    assert "format not read here" in skipped["scan.tiff"]
    assert "a TIFF image, a format not read here" in skipped["scan_named.jpg"]
    assert not list(out.rglob("scan_named.jpg"))


def test_hidden_files_in_a_class_folder_are_listed_in_skipped_csv(art, tmp_path):
    write_image(art / "RealArt" / ".hidden.jpg", seed=999)
    (art / "GeneratedArt" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    out = tmp_path / "out"
    split_by_class(art, out)
    skipped = skipped_sources(out)
    assert "hidden" in skipped[".hidden.jpg"] and "hidden" in skipped[".DS_Store"]


def test_segmentation_masks_beside_their_images_are_left_out_and_listed(tmp_path, make_class_folder, caplog):
    """BUSI's layout: benign (1).png with benign (1)_mask.png (and _mask_1.png) in the same class folder. A mask
    is a lesion's outline, not an image of the class: split with its image elsewhere it leaks where the lesion is,
    and in test it is scored as a case. A file named like a mask with no image of that name beside it stays."""
    source = tmp_path / "Dataset_BUSI_with_GT"
    for class_name, seed in (("benign", 0), ("malignant", 100)):
        for index in range(1, 9):
            image = write_image(source / class_name / f"{class_name} ({index}).png", seed=seed + index, mode="L")
            write_image(image.with_name(f"{class_name} ({index})_mask.png"), seed=seed + 50 + index, mode="L")
        write_image(source / class_name / f"{class_name} (1)_Mask_1.png", seed=seed + 99, mode="L")
    write_image(source / "benign" / "gas_mask.png", seed=500)  # no gas.png: an image of the class

    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="realvsai"):
        report = split_by_class(source, out)

    placed = {Path(row.path).name for row in read_manifest(out / "manifest.csv")}
    assert placed == {f"{name} ({index}).png" for name in ("benign", "malignant") for index in range(1, 9)} | {
        "gas_mask.png"}
    skipped = skipped_sources(out)
    assert len(skipped) == 18 and report.num_files == 17
    assert "segmentation mask of benign (1).png" in skipped["benign (1)_Mask_1.png"]
    assert "segmentation mask" in format_report(report)
    assert any("18 files" in record.getMessage() and "segmentation mask" in record.getMessage()
               for record in caplog.records if record.levelname == "WARNING")


def test_a_one_class_dataset_is_split_with_a_warning_that_a_classifier_needs_two(tmp_path, make_class_folder,
                                                                                 caplog):
    source = make_class_folder(tmp_path / "only", {"REAL": 10})
    with caplog.at_level("WARNING", logger="realvsai"):
        report = split_by_class(source, tmp_path / "out")
    assert report.num_files == 10
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert any("only one class" in message and "at least two" in message for message in warnings)
    assert any(f"Add a folder of images for each other class to {source} and split again" in message
               for message in warnings)  # it said "to SOURCE"


def test_a_one_class_split_with_files_left_out_names_the_folder_split_not_a_file_left_out(tmp_path,
                                                                                          make_class_folder, caplog):
    """The warning that one class is not enough named the last file the split left out as the folder to add a class
    folder to: the list of left-out files reused its name."""
    source = make_class_folder(tmp_path / "only", {"REAL": 10})
    (source / "REAL" / "broken.png").write_bytes(b"not an image")
    with caplog.at_level("WARNING", logger="realvsai"):
        split_by_class(source, tmp_path / "out")
    [warning] = [record.getMessage() for record in caplog.records if "only one class" in record.getMessage()]
    assert f"Add a folder of images for each other class to {source} and split again" in warning, warning


def test_a_one_class_split_whose_file_names_begin_with_classes_names_them(tmp_path, caplog):
    """images/real_001.jpg beside images/fake_001.jpg: one class, images, and a warning to add a folder for each
    other class, with no word of the two kinds its names tell apart."""
    for index in range(12):
        write_image(tmp_path / "raw" / "images" / f"{('real_', 'fake-')[index % 2]}{index:03d}.png", seed=index)
    with caplog.at_level("WARNING", logger="realvsai"):
        split_by_class(tmp_path / "raw", tmp_path / "out")
    [warning] = [record.getMessage() for record in caplog.records if "only one class" in record.getMessage()]
    assert "its file names begin with fake- (6 files) and real_ (6 files)" in warning
    assert "sort them into a folder each (fake/ and real/)" in warning


def test_class_folders_that_differ_only_in_letter_case_are_refused_before_anything_is_written(tmp_path,
                                                                                               make_class_folder):
    source = make_class_folder(tmp_path / "raw", {"REAL": 2, "real": 2, "FAKE": 2})
    with pytest.raises(UserError, match="letter case") as error:
        split_by_class(source, tmp_path / "out")
    assert "'REAL'" in str(error.value) and "'real'" in str(error.value) and "--rename" in str(error.value)
    assert not (tmp_path / "out").exists()


def test_class_folders_that_differ_only_in_accent_encoding_are_refused_before_anything_is_written(
        tmp_path, make_class_folder):
    """"café" (NFC) beside "cafe" + a combining accent (NFD, from a Mac) print alike: they were split as two
    classes, which macOS holds as one folder."""
    source = make_class_folder(tmp_path / "raw", {"caf\u00e9": 2, "cafe\u0301": 2, "FAKE": 2})
    with pytest.raises(UserError, match="differ only in letter case or accent encoding") as error:
        split_by_class(source, tmp_path / "out")
    assert "Move their images into one folder" in str(error.value)
    assert not (tmp_path / "out").exists()


def test_file_names_that_differ_only_in_accent_encoding_get_names_of_their_own(art, tmp_path):
    """Two files of one class, "café.png" typed and one from a Mac, were written under both names: one file on
    macOS, as REAL.png and real.png are (those get a name of their own)."""
    import unicodedata

    write_image(art / "RealArt" / "caf\u00e9.png", seed=901)
    write_image(art / "RealArt" / "cafe\u0301.png", seed=902)
    split_by_class(art, tmp_path / "out", ratios=(1, 0, 0))  # all in train, so the two names do meet
    names = [path.name for path in (tmp_path / "out" / "train" / "RealArt").iterdir()]
    assert len(names) == 22
    assert len({unicodedata.normalize("NFC", name).casefold() for name in names}) == 22


def test_skipped_list_is_the_same_on_every_run(art, tmp_path, bad_files):
    bad_files(art / "RealArt")
    out = tmp_path / "out"
    split_by_class(art, out)
    first = (out / "skipped.csv").read_text()
    split_by_class(art, out)
    assert (out / "skipped.csv").read_text() == first
    assert "0x" not in first  # no memory addresses in Pillow's messages


def test_renames_change_the_class_folder_names(art, tmp_path):
    out = tmp_path / "out"
    split_by_class(art, out, renames={"RealArt": "Real", "GeneratedArt": "Fake"})
    assert sorted(path.name for path in (out / "train").iterdir()) == ["Fake", "Real"]
    assert {row.class_name for row in read_manifest(out / "manifest.csv")} == {"Fake", "Real"}


def test_rename_of_a_folder_that_is_not_a_class_is_an_error(art, tmp_path):
    with pytest.raises(UserError, match=r"RealArtt.*GeneratedArt"):
        split_by_class(art, tmp_path / "out", renames={"RealArtt": "Real"})
    assert not (tmp_path / "out").exists()


def test_rename_finds_a_folder_macos_named_with_decomposed_accents(tmp_path, make_class_folder):
    """--rename typed with composed accents names the folder that prints alike."""
    art = make_class_folder(tmp_path / "art", {"tumo\u0308r": 20, "normal": 20})
    out = tmp_path / "out"
    split_by_class(art, out, renames={"tum\u00f6r": "malignant"})
    assert sorted(path.name for path in (out / "train").iterdir()) == ["malignant", "normal"]


def test_rename_of_two_classes_to_one_name_is_an_error(art, tmp_path):
    with pytest.raises(UserError, match="same name"):
        split_by_class(art, tmp_path / "out", renames={"RealArt": "GeneratedArt"})


def test_link_makes_hard_links_to_the_source_files(art, tmp_path):
    out = tmp_path / "out"
    split_by_class(art, out, mode="link")
    for row in read_manifest(out / "manifest.csv"):
        assert os.stat(out / row.path).st_ino == os.stat(row.source).st_ino


def test_link_across_file_systems_is_one_clear_error(art, tmp_path, monkeypatch):
    monkeypatch.setattr(splitting, "_cross_device", lambda source, out: True)
    with pytest.raises(UserError, match="--link needs SOURCE and --out on one file system"):
        split_by_class(art, tmp_path / "out", mode="link")


def test_move_empties_the_source_but_leaves_skipped_files(art, tmp_path, bad_files):
    bad = bad_files(art / "RealArt")
    out = tmp_path / "out"
    hashes = sorted(sha256(path) for path in art.rglob("*.png"))
    split_by_class(art, out, mode="move")
    assert sorted(path.name for path in art.rglob("*") if path.is_file()) == sorted(p.name for p in bad.values())
    assert sorted(sha256(path) for path in out.glob("*/*/*.png")) == hashes


def test_images_in_sub_folders_are_flattened_without_name_clashes(art, tmp_path):
    write_image(art / "RealArt" / "extra" / "img_000.png", seed=999)
    write_image(art / "RealArt" / "extra__img_000.png", seed=998)
    out = tmp_path / "out"
    report = split_by_class(art, out, ratios=(1, 0, 0))  # all in train, so the two names do meet
    assert report.num_files == 42
    names = sorted(path.name for path in (out / "train" / "RealArt").iterdir())
    assert len(names) == 22
    assert "extra__img_000.png" in names
    assert any(name.startswith("extra__img_000_") for name in names)


@pytest.mark.parametrize("splits", [("Train", "Validation"), ("train", "val"), ("Train", "Test", "Validation")])
def test_split_folders_are_not_taken_for_classes(tmp_path, make_class_folder, splits):
    # A Kaggle download that comes split (Dataset/Train/Real, Dataset/Validation/Fake) is not two classes
    # "Train" and "Validation".
    for split in splits:
        make_class_folder(tmp_path / "raw" / "Dataset" / split, {"Real": 3, "Fake": 3})

    with pytest.raises(UserError, match="split folders") as raised:
        split_by_class(tmp_path / "raw", tmp_path / "data")

    assert "DataSplitD2.py" in str(raised.value) and not (tmp_path / "data").exists()


@pytest.mark.parametrize("wrapped", [False, True])
def test_datasplitd2_on_train_and_validation_says_to_rename_the_held_out_folder(tmp_path, make_class_folder, wrapped):
    source = tmp_path / "raw" / ("Dataset" if wrapped else "")
    for split in ("Train", "Validation"):
        make_class_folder(source / split, {"Real": 3, "Fake": 3})

    with pytest.raises(UserError, match=r"rename \S*Validation to test \(.*\), then run python DataSplitD2\.py"):
        split_train_test(tmp_path / "raw", tmp_path / "data")


def test_datasplitd2_on_train_and_validation_says_what_it_lacks_not_what_datasplitd1_needs(tmp_path,
                                                                                           make_class_folder):
    """It said "raw holds the split folders Train, Validation, not one folder per class", DataSplitD1's need, to a
    DataSplitD2 run, which takes split folders."""
    for split in ("Train", "Validation"):
        make_class_folder(tmp_path / "raw" / split, {"Real": 3, "Fake": 3})

    with pytest.raises(UserError) as refused:
        split_train_test(tmp_path / "raw", tmp_path / "data")
    assert str(refused.value).startswith(f"{tmp_path / 'raw'} holds the split folders Train, Validation, but no test "
                                         "folder: rename "), str(refused.value)


@pytest.mark.parametrize("first, second", [("art", "photos"), ("a/Dataset", "b/Dataset")])
def test_a_second_dataset_split_into_the_first_one_s_out_is_told_to_split_apart_and_merge(tmp_path, make_class_folder,
                                                                                           first, second):
    # The unzipper's Next: line names --out data for every dataset: the second one lands on the first one's split.
    # Two downloads that both unzip to Dataset/ are two datasets of one name, not the first one split again.
    make_class_folder(tmp_path / "raw" / first, {"RealArt": 10, "GeneratedArt": 10})
    make_class_folder(tmp_path / "raw" / second, {"real": 10, "fake": 10}, seed=4)
    split_by_class(tmp_path / "raw" / first, tmp_path / "data")

    with pytest.raises(UserError) as refused:
        split_by_class(tmp_path / "raw" / second, tmp_path / "data")

    message, apart = str(refused.value), tmp_path / "data" / Path(second).name
    assert f"{tmp_path / 'data'} holds a split of another dataset ({Path(first).name})" in message
    assert "merged in" not in message
    assert f"the same command with --out {apart}, and --rename OLD=NEW to name its classes as the split there does: " \
           "GeneratedArt, RealArt" in message  # its classes are fake and real: the merge would refuse them
    assert f"python DataMerger.py {apart} --into {tmp_path / 'data'}" in message


def test_a_third_dataset_of_a_taken_name_is_told_a_folder_no_split_holds(tmp_path, make_class_folder):
    """Three downloads that all unzip to Dataset/: the third was told --out data/Dataset, where the second's split
    was, and then --out data/Dataset/Dataset, a split inside a split."""
    for index, name in enumerate(("a", "b", "c")):
        make_class_folder(tmp_path / "raw" / name / "Dataset", {"REAL": 10, "FAKE": 10}, seed=index)
    split_by_class(tmp_path / "raw" / "a", tmp_path / "data")
    split_by_class(tmp_path / "raw" / "b", tmp_path / "data" / "Dataset")

    with pytest.raises(UserError) as refused:
        split_by_class(tmp_path / "raw" / "c", tmp_path / "data")

    apart = tmp_path / "data" / "Dataset-2"
    assert f"the same command with --out {apart})" in str(refused.value)
    assert f"python DataMerger.py {apart} --into {tmp_path / 'data'}" in str(refused.value)


def test_a_dataset_split_through_a_symlink_is_not_advised_a_folder_apart_from_its_own_split(tmp_path,
                                                                                              make_class_folder):
    """Split as link/Dataset (link to store/), the same dataset given as store/Dataset was taken for another one,
    and advised --out data/Dataset: a second copy of it."""
    make_class_folder(tmp_path / "store" / "Dataset", {"REAL": 6, "FAKE": 6})
    (tmp_path / "link").symlink_to(tmp_path / "store")
    split_by_class(tmp_path / "link" / "Dataset", tmp_path / "data")

    assert splitting.advised_out(tmp_path / "data", tmp_path / "store" / "Dataset") == tmp_path / "data"
    assert splitting.advised_out(tmp_path / "data", tmp_path / "link" / "Dataset") == tmp_path / "data"


@pytest.mark.parametrize("classes", [{"REAL": 10, "FAKE": 10}, {"benign": 7, "malignant": 7, "normal": 7}])
def test_a_second_dataset_of_other_classes_is_told_it_may_be_trained_on_alone(tmp_path, make_class_folder, classes):
    """A medical set (benign, malignant, normal) split into CIFAKE's --out was told only to take CIFAKE's class names
    and merge: a five-class model, or three classes mapped onto two."""
    make_class_folder(tmp_path / "raw" / "cifake", {"REAL": 10, "FAKE": 10})
    make_class_folder(tmp_path / "raw" / "busi", classes, seed=3)
    split_by_class(tmp_path / "raw" / "cifake", tmp_path / "data")

    with pytest.raises(UserError) as refused:
        split_by_class(tmp_path / "raw" / "busi", tmp_path / "data")

    alone = f"python ModelTraining.py --data {tmp_path / 'data' / 'busi'}"
    assert (alone in str(refused.value)) == ("REAL" not in classes), str(refused.value)


def test_a_split_that_cannot_be_trained_on_names_no_training_step(art, tmp_path):
    report = split_by_class(art, tmp_path / "out", ratios=(1, 0, 0))  # a train-only share to merge elsewhere

    text = format_report(report)

    assert "ModelTraining.py" not in text
    assert "Not ready for training: no validation images of GeneratedArt, RealArt" in text


def test_the_summary_of_a_split_of_many_classes_has_a_row_per_class(tmp_path, make_class_folder):
    # A column per class made a 1,700-character line of 40 classes.
    names = [f"species_{index:02d}" for index in range(40)]
    make_class_folder(tmp_path / "raw", dict.fromkeys(names, 3))

    text = format_report(split_by_class(tmp_path / "raw", tmp_path / "out"))

    assert max(map(len, text.split("\n\n")[0].splitlines())) <= 60  # the table
    assert all(re.search(rf"^{name}\s+1\s+1\s+1\s+3$", text, re.MULTILINE) for name in names)
    assert re.search(r"^total\s+40\s+40\s+40\s+120$", text, re.MULTILINE)


def test_a_split_of_one_class_names_no_training_step(tmp_path, make_class_folder):
    make_class_folder(tmp_path / "raw", {"Only": 12})

    text = format_report(split_by_class(tmp_path / "raw", tmp_path / "out"))

    assert "ModelTraining.py" not in text and "Not ready for training: one class (Only)" in text


def test_the_class_folders_inside_a_single_wrapper_folder_are_the_classes(tmp_path, make_class_folder):
    make_class_folder(tmp_path / "raw_art" / "Top Folder", {"RealArt": 10, "GeneratedArt": 10})
    (tmp_path / "raw_art" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    out = tmp_path / "out"
    report = split_by_class(tmp_path / "raw_art", out)
    assert sorted({class_name for _, class_name in report.counts}) == ["GeneratedArt", "RealArt"]
    assert all(Path(row.path).name.startswith("img_") for row in read_manifest(out / "manifest.csv"))


def test_the_class_folders_two_wrapper_folders_deep_are_the_classes(tmp_path, make_class_folder):
    # Kaggle's "Fake or Real" zip unpacks as <Top>/<Dataset>/{RealArt,GeneratedArt}: one class of both would
    # merge real and generated images under one label.
    make_class_folder(tmp_path / "raw_art" / "Fake or Real" / "Art Dataset", {"RealArt": 10, "GeneratedArt": 10})
    (tmp_path / "raw_art" / "Fake or Real" / "README.txt").write_text("about the set")
    out = tmp_path / "out"
    report = split_by_class(tmp_path / "raw_art", out)
    assert sorted({class_name for _, class_name in report.counts}) == ["GeneratedArt", "RealArt"]
    assert [Path(path).name for path, _ in report.skipped_rows] == ["README.txt"]  # said, as beside one wrapper


def test_a_train_test_source_is_pointed_to_datasplitd2(cifake, tmp_path):
    with pytest.raises(UserError, match=r"DataSplitD2\.py"):
        split_by_class(cifake, tmp_path / "out")


def test_a_class_folder_without_images_is_an_error(art, tmp_path):
    (art / "Empty").mkdir()
    with pytest.raises(UserError, match="Empty holds no image files"):
        split_by_class(art, tmp_path / "out")


def test_a_class_folder_without_a_usable_image_is_an_error_naming_a_file(art, tmp_path, bad_files):
    # Left out file by file, the class would vanish from the split with a count in a summary line.
    bad_files(art / "Broken")
    with pytest.raises(UserError, match=r"Broken holds no usable image: its 3 image files do not decode \(e\.g\. "):
        split_by_class(art, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_output_inside_the_source_is_refused(art):
    with pytest.raises(UserError, match="inside SOURCE"):
        split_by_class(art, art / "split")


# ----------------------------------------------------------------------------------------------
# Existing output: refuse, resume, overwrite


def test_a_different_existing_split_is_refused_without_overwrite(art, tmp_path):
    out = tmp_path / "out"
    split_by_class(art, out, seed=1)
    before = snapshot(out)
    with pytest.raises(UserError, match="--overwrite"):
        split_by_class(art, out, seed=2)
    assert snapshot(out) == before


def test_a_split_refused_for_a_file_added_to_source_says_the_run_would_add_it(art, tmp_path):
    """It said "0 of its 40 files are not where this run would put them": nothing about the file that differs."""
    out = tmp_path / "out"
    split_by_class(art, out, seed=1)
    write_image(art / "RealArt" / "zz_new.png", seed=77)
    with pytest.raises(UserError) as refused:
        split_by_class(art, out, seed=1)
    assert re.match(rf"{re.escape(str(out / 'manifest.csv'))} lists a different split: ([1-9]\d* of its 40 files "
                    r"(is|are) not where this run would put them; )?this run would add 1 file it does not list \(other "
                    r"files: it was made with this run's settings\)\. Add --overwrite", str(refused.value)), str(
        refused.value)


def test_a_split_refused_for_other_settings_names_the_seed_and_ratios_it_was_made_with(art, tmp_path):
    """Back at an interrupted split with the flags forgotten, the user was told "(other files, seed or ratios)" and
    had to guess which seed and ratios finish it."""
    out = tmp_path / "out"
    split_by_class(art, out, ratios=(0.8, 0.1, 0.1), seed=7)
    with pytest.raises(UserError) as refused:
        split_by_class(art, out)
    assert (f"; it was made with --seed 7 --ratios 0.8 0.1 0.1 (this run: --seed {SplitDefaults.seed} --ratios 0.7 "
            "0.15 0.15). Run the same command with those to finish it, add --overwrite" in str(refused.value)), str(
        refused.value)


def test_a_split_refused_for_another_val_fraction_names_the_one_it_was_made_with(cifake, tmp_path):
    out = tmp_path / "out"
    split_train_test(cifake, out, val_fraction=0.5)
    with pytest.raises(UserError) as refused:
        split_train_test(cifake, out)
    assert (f"; it was made with --val-fraction 0.5 (this run: --val-fraction {SplitDefaults.val_fraction:g}). Run the "
            "same command with those to finish it" in str(refused.value)), str(refused.value)


def test_a_split_refused_for_a_rename_it_was_made_without_says_to_run_without_it(art, tmp_path):
    """It said "it was made without --rename RealArt=Real (this run: --rename RealArt=Real). Run the same command
    with those to finish it": the same command, with what it already has, was refused again."""
    out = tmp_path / "out"
    split_by_class(art, out)
    with pytest.raises(UserError) as refused:
        split_by_class(art, out, renames={"RealArt": "Real"})
    assert ("; it was made without --rename RealArt=Real (this run: --rename RealArt=Real). Run the same command "
            "without --rename RealArt=Real to finish it, add --overwrite" in str(refused.value)), str(refused.value)
    split_by_class(art, out)  # what it says finishes it


def test_a_move_split_stopped_before_it_moved_a_file_names_move_and_its_seed(art, tmp_path, monkeypatch):
    """No file moved yet, the re-run without --move cannot tell it from a copy split: its other seed made it
    "a different split", which the user could finish only by guessing both flags."""
    def killed(jobs, mode, cross_device):
        raise KeyboardInterrupt

    monkeypatch.setattr(splitting, "_place_chunk", killed)
    with pytest.raises(KeyboardInterrupt):
        split_by_class(art, tmp_path / "out", seed=7, mode="move")
    monkeypatch.undo()
    with pytest.raises(UserError) as refused:
        split_by_class(art, tmp_path / "out")
    assert "; it was made with --seed 7 --move (this run: --seed " in str(refused.value), str(refused.value)


def test_a_split_killed_once_its_manifest_was_written_still_names_its_settings(art, tmp_path, monkeypatch):
    """The settings are recorded before the manifest that makes the folder a split, not after it."""
    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(splitting, "write_csv", killed)  # skipped.csv, written after the manifest
    with pytest.raises(KeyboardInterrupt):
        split_by_class(art, tmp_path / "out", seed=7)
    monkeypatch.undo()
    assert (tmp_path / "out" / "manifest.csv").is_file()
    with pytest.raises(UserError, match=r"; it was made with --seed 7 \(this run: --seed "):
        split_by_class(art, tmp_path / "out")


def test_a_split_without_a_record_of_its_settings_is_refused_as_before(art, tmp_path):
    """A split made before its settings were recorded (or whose record is damaged) still reads."""
    out = tmp_path / "out"
    split_by_class(art, out, seed=1)
    (out / ".checks.json").unlink()
    with pytest.raises(UserError, match=r"would put them \(other files, seed or ratios\)\. Add --overwrite"):
        split_by_class(art, out, seed=2)


def test_files_without_a_manifest_in_the_output_are_refused(art, tmp_path):
    write_image(tmp_path / "out" / "train" / "RealArt" / "someone_elses.png", seed=5)
    with pytest.raises(UserError, match=r"no manifest\.csv"):
        split_by_class(art, tmp_path / "out")


def test_overwrite_moves_the_old_split_aside_and_writes_the_new_one(art, tmp_path):
    out = tmp_path / "out"
    split_by_class(art, out, seed=1)
    old = snapshot(out)
    report = split_by_class(art, out, seed=2, overwrite=True)
    assert report.moved_aside is not None and snapshot(report.moved_aside) == old
    assert manifest_keys(report.moved_aside) != manifest_keys(out)
    assert sorted(row.path for row in read_manifest(out / "manifest.csv")) == sorted(
        path.relative_to(out).as_posix() for path in out.glob("*/*/*.png"))
    assert report.num_written == 40


def test_overwrite_takes_a_merge_record_aside_with_the_old_split(art, tmp_path):
    # A merge's list of refused files describes the old dataset: beside the new split it would mislead.
    out = tmp_path / "out"
    split_by_class(art, out, seed=1)
    (out / "merge-refused.csv").write_text("merged_at,source,reason\n")
    report = split_by_class(art, out, seed=2, overwrite=True)
    assert not (out / "merge-refused.csv").exists()
    assert (report.moved_aside / "merge-refused.csv").read_text() == "merged_at,source,reason\n"


def test_re_running_the_same_split_changes_nothing(art, tmp_path, bad_files):
    bad_files(art / "RealArt")
    out = tmp_path / "out"
    split_by_class(art, out)
    before = snapshot(out)
    report = split_by_class(art, out)
    assert snapshot(out) == before
    assert (report.num_written, report.num_in_place) == (0, 40)


@pytest.mark.parametrize("mode", ["copy", "move", "link"])
def test_a_re_run_with_nothing_to_do_decodes_no_file(art, tmp_path, bad_files, decoded, mode):
    bad_files(art / "RealArt")
    first = split_by_class(art, tmp_path / "out", mode=mode)
    decoded.clear()
    again = split_by_class(art, tmp_path / "out", mode=mode)
    assert decoded == []
    assert (again.num_written, again.num_in_place) == (0, first.num_written)
    assert (again.skipped, again.class_profiles, again.num_duplicates) == (
        first.skipped, first.class_profiles, first.num_duplicates)


def test_a_source_file_changed_since_the_split_is_decoded_again_and_refused(tmp_path, make_class_folder, decoded):
    art = make_class_folder(tmp_path / "art", {"Real": 10, "Fake": 10}, suffix=".bmp")  # one size: 3,126 bytes
    split_by_class(art, tmp_path / "out")
    victim, other = art / "Real" / "img_003.bmp", write_image(tmp_path / "other.bmp", seed=99)
    before = victim.stat()
    victim.write_bytes(other.read_bytes())  # the same size and, below, time stamp: only the bytes tell
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert victim.stat().st_size == before.st_size
    decoded.clear()
    with pytest.raises(UserError, match=r"lists a different split: .*1 file it lists would not be in it"):
        split_by_class(art, tmp_path / "out")
    assert decoded == ["img_003.bmp"]


def test_a_re_run_with_another_max_pixels_checks_every_file_again(art, tmp_path, decoded):
    write_image(art / "RealArt" / "large.png", seed=99, size=(100, 100))
    split_by_class(art, tmp_path / "out")
    decoded.clear()
    report = split_by_class(art, tmp_path / "out", max_pixels=5000, overwrite=True)
    assert len(decoded) == 41
    assert [Path(source).name for source, _ in report.skipped[UNUSABLE]] == ["large.png"]


def test_a_damaged_record_of_checks_is_checked_again_and_rewritten(art, tmp_path, decoded):
    split_by_class(art, tmp_path / "out")
    record = tmp_path / "out" / splitting.CHECKS_NAME
    record.write_text('{"checked_with": "cut short')
    decoded.clear()
    report = split_by_class(art, tmp_path / "out")
    assert len(decoded) == 40 and report.num_in_place == 40
    decoded.clear()
    split_by_class(art, tmp_path / "out")
    assert decoded == []


def test_re_running_an_interrupted_split_completes_it(art, tmp_path):
    out = tmp_path / "out"
    split_by_class(art, out)
    complete = {path: sha256(out / path) for path in snapshot(out)}
    removed = sorted(out.glob("*/*/*.png"))[::3]
    for path in removed:
        path.unlink()
    report = split_by_class(art, out)
    assert report.num_written == len(removed)
    assert {path: sha256(out / path) for path in snapshot(out)} == complete


def test_a_split_stopped_by_a_full_disk_in_a_batch_of_copies_leaves_no_temporary_and_is_completed(
        art, tmp_path, monkeypatch):
    split_by_class(art, tmp_path / "expected")
    disk_full_at_write(monkeypatch, 20)  # the records, a batch of copies, then part of the next
    monkeypatch.setattr(files, "_CHUNK", 8)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="No space"):
        split_by_class(art, out, workers=1)
    assert not [path for path in out.rglob("*") if path.name.endswith(".tmp")]
    assert 0 < len(list(out.glob("*/*/*.png"))) < 40

    split_by_class(art, out, workers=1)

    assert {path: sha256(out / path) for path in snapshot(out) if path.endswith(".png")} == {
        path: sha256(tmp_path / "expected" / path) for path in snapshot(tmp_path / "expected") if path.endswith(".png")}


def test_a_file_changed_in_the_output_is_never_overwritten(art, tmp_path):
    out = tmp_path / "out"
    split_by_class(art, out)
    victim = sorted(out.glob("train/*/*.png"))[0]
    victim.write_bytes(b"edited by hand")
    with pytest.raises(UserError, match="other content"):
        split_by_class(art, out)
    assert victim.read_bytes() == b"edited by hand"


def test_an_interrupted_move_is_completed_by_a_re_run(art, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    shutil.copytree(art, reference)
    split_by_class(reference, tmp_path / "expected", mode="move")
    calls, lock = [], threading.Lock()
    place_chunk = splitting._place_chunk

    def interrupted(jobs, mode, cross_device):
        with lock:
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
        return place_chunk(jobs, mode, cross_device)

    monkeypatch.setattr(files, "_CHUNK", 5)
    monkeypatch.setattr(splitting, "_place_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        split_by_class(art, tmp_path / "out", mode="move")
    assert any(art.rglob("*.png"))  # the move did stop half-way
    monkeypatch.setattr(splitting, "_place_chunk", place_chunk)
    split_by_class(art, tmp_path / "out", mode="move")
    assert not any(art.rglob("*.png"))
    assert manifest_keys(tmp_path / "out") == manifest_keys(tmp_path / "expected")
    assert {path for path in snapshot(tmp_path / "out") if path.endswith(".png")} == {
        path for path in snapshot(tmp_path / "expected") if path.endswith(".png")}


def test_a_move_across_file_systems_killed_between_copy_and_delete_is_completed_by_a_re_run(art, tmp_path,
                                                                                          monkeypatch):
    """Killed after a file was copied to the split and before its source was deleted, the re-run found the copy
    in place and skipped it: the source stayed in SOURCE for good, a second copy of a file meant to be moved."""
    reference = tmp_path / "reference"
    shutil.copytree(art, reference)
    split_by_class(reference, tmp_path / "expected", mode="move")
    monkeypatch.setattr(splitting, "_cross_device", lambda source, out: True)
    unlink, deleted = os.unlink, []

    def killed_at_the_third(path, *args, **kwargs):
        if Path(path).is_relative_to(art):
            deleted.append(path)
            if len(deleted) == 3:
                raise KeyboardInterrupt
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", killed_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        split_by_class(art, tmp_path / "out", mode="move", workers=1)
    monkeypatch.setattr(os, "unlink", unlink)
    left = Path(deleted[2])
    assert left.is_file()  # copied into the split, not yet deleted
    split_by_class(art, tmp_path / "out", mode="move", workers=1)
    assert not any(art.rglob("*.png"))
    assert manifest_keys(tmp_path / "out") == manifest_keys(tmp_path / "expected")
    assert {path for path in snapshot(tmp_path / "out") if path.endswith(".png")} == {
        path for path in snapshot(tmp_path / "expected") if path.endswith(".png")}


def test_augmented_copies_beside_their_images_are_left_out_of_a_split(tmp_path, make_class_folder):
    """A train folder with moved copies (aug_<image>_<k>.jpg), split again (DataZipper, DataUnZipper, DataSplitD1):
    a copy landed in validation or test while its image stayed in train."""
    art = make_class_folder(tmp_path / "art", {"REAL": 6, "FAKE": 6})
    for k in range(2):
        write_image(art / "REAL" / f"aug_img_000_{k}.jpg", seed=900 + k, fmt="JPEG")
    write_image(art / "FAKE" / "aug_0_123.png", seed=950)  # a download's own name, no image of its own beside it
    report = split_by_class(art, tmp_path / "out")
    reasons = skipped_sources(tmp_path / "out")
    assert set(reasons) == {"aug_img_000_0.jpg", "aug_img_000_1.jpg"}
    assert "an augmented copy of img_000.png" in reasons["aug_img_000_0.jpg"]
    placed = {Path(row.path).name for row in read_manifest(tmp_path / "out" / "manifest.csv")}
    assert "aug_0_123.png" in placed and not placed & set(reasons) and report.num_files == 13


# ----------------------------------------------------------------------------------------------
# DataSplitD2 layout


def test_split_train_test_carves_validation_out_of_train_and_keeps_test(cifake, tmp_path):
    report = split_train_test(cifake, tmp_path / "out", val_fraction=0.2)
    assert {key: count for key, count in report.counts.items()} == {
        ("train", "REAL"): 16, ("train", "FAKE"): 16, ("validation", "REAL"): 4, ("validation", "FAKE"): 4,
        ("test", "REAL"): 5, ("test", "FAKE"): 5}
    test_sources = sorted(sha256(path) for path in (cifake / "test").rglob("*.png"))
    assert sorted(sha256(path) for path in (tmp_path / "out" / "test").rglob("*.png")) == test_sources


def test_split_train_test_carves_validation_out_of_each_class_as_split_files_does(cifake, tmp_path):
    split_train_test(cifake, tmp_path / "out", val_fraction=0.2, seed=3)

    placed = read_manifest(tmp_path / "out" / "manifest.csv")
    for class_name in ("FAKE", "REAL"):
        names = sorted(path.name for path in (cifake / "train" / class_name).iterdir())
        expected = split_files(names, {"train": 1 - 0.2, "validation": 0.2}, seed=3)
        assert sorted(Path(row.path).name for row in placed
                      if row.class_name == class_name and row.split == "validation") == sorted(expected["validation"])


@pytest.mark.parametrize("val_fraction", [0.0, 1.0])
def test_split_train_test_refuses_a_validation_fraction_of_none_or_all_of_train(cifake, tmp_path, val_fraction):
    with pytest.raises(UserError, match="--val-fraction"):
        split_train_test(cifake, tmp_path / "out", val_fraction=val_fraction)
    assert not (tmp_path / "out").exists()


def test_a_train_file_identical_to_a_test_file_is_left_out_of_train(cifake, tmp_path, caplog):
    test_file = cifake / "test" / "REAL" / "img_002.png"
    shutil.copyfile(test_file, cifake / "train" / "REAL" / "copy_of_test.png")
    shutil.copyfile(test_file, cifake / "train" / "REAL" / "another_copy.png")
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="realvsai"):
        report = split_train_test(cifake, out)
    assert "identical to a held-out file" not in caplog.text  # expected (CIFAKE has them): listed, not warned of
    splits = {row.split for row in read_manifest(out / "manifest.csv") if row.sha256 == sha256(test_file)}
    assert splits == {"test"}
    assert len(report.skipped[IN_TEST]) == 2
    reasons = skipped_sources(out)
    assert "kept in test only" in reasons["copy_of_test.png"] and "kept in test only" in reasons["another_copy.png"]


@pytest.mark.parametrize("saved_as", ["P", "L", "RGBA"])
def test_a_train_image_the_model_sees_as_a_test_image_is_left_out_whatever_its_mode(cifake, tmp_path, saved_as):
    """A lossless optimiser (optipng, oxipng) saves a few-colour RGB image as a palette PNG, a gray one as L, and an
    editor an opaque one as RGBA: the model sees the same RGB pixels, and the split kept both copies (one in test,
    one in validation), so the test accuracy counted an image the model had learnt."""
    pixels = np.random.default_rng(5).integers(0, 256, (24, 32, 3), np.uint8)
    if saved_as == "P":  # 64 colours at most
        pixels = pixels // 64 * 64
    elif saved_as == "L":  # gray
        pixels = np.repeat(pixels[..., :1], 3, axis=-1)
    Image.fromarray(pixels).save(cifake / "test" / "REAL" / "rgb.png")
    if saved_as == "P":  # its 64 colours in a palette, as an optimiser writes it
        colours, indices = np.unique(pixels.reshape(-1, 3), axis=0, return_inverse=True)
        other = Image.fromarray(indices.reshape(pixels.shape[:2]).astype(np.uint8)).convert("P")
        other.putpalette(colours.flatten().tolist())
    else:
        other = Image.fromarray(pixels).convert(saved_as)
    other.save(cifake / "train" / "REAL" / "optimised.png")
    with Image.open(cifake / "train" / "REAL" / "optimised.png") as saved:
        assert saved.mode == saved_as and np.array_equal(np.asarray(saved.convert("RGB")), pixels)
    report = split_train_test(cifake, tmp_path / "out")
    assert [Path(source).name for source, _ in report.skipped[IN_TEST]] == ["optimised.png"]


def test_a_train_image_with_the_pixels_of_a_test_image_is_left_out_of_train(cifake, tmp_path):
    Image.open(cifake / "test" / "REAL" / "img_002.png").save(cifake / "train" / "REAL" / "same_pixels.bmp")
    report = split_train_test(cifake, tmp_path / "out")
    assert [Path(source).name for source, _ in report.skipped[IN_TEST]] == ["same_pixels.bmp"]


def test_identical_files_within_train_never_straddle_train_and_validation(cifake, tmp_path):
    for index in range(10):
        shutil.copyfile(cifake / "train" / "REAL" / f"img_{index:03d}.png", cifake / "train" / "REAL" / f"d{index}.png")
    out = tmp_path / "out"
    report = split_train_test(cifake, out, val_fraction=0.5)
    splits_of = defaultdict(set)
    for row in read_manifest(out / "manifest.csv"):
        splits_of[row.sha256].add(row.split)
    assert all(len(splits) == 1 for splits in splits_of.values())
    assert report.num_duplicates == 10


def test_datasplitd2_rename_finds_a_folder_macos_named_with_decomposed_accents_but_not_one_in_another_case(
        tmp_path, make_class_folder):
    """--rename typed with composed accents names the folder that prints alike, in train and test; the error said
    "--rename names ['tumör'], but the class folders are [... 'tumör' ...]". Letter case still has to match."""
    decomposed = "tumo\u0308r"
    make_class_folder(tmp_path / "raw" / "train", {decomposed: 10, "normal": 10}, seed=1)
    make_class_folder(tmp_path / "raw" / "test", {decomposed: 3, "normal": 3}, seed=2)
    with pytest.raises(UserError, match="--rename names"):
        split_train_test(tmp_path / "raw", tmp_path / "out", renames={"Tum\u00f6r": "malignant"})

    report = split_train_test(tmp_path / "raw", tmp_path / "out", renames={"tum\u00f6r": "malignant"})

    assert {class_name for _, class_name in report.counts} == {"malignant", "normal"}
    assert report.counts[("test", "malignant")] == 3


def test_train_and_test_classes_in_other_accent_encoding_are_named_so_and_a_typed_rename_joins_them(
        cifake, tmp_path):
    """train/café typed, test/café from a Mac (decomposed): they were "need the same classes", with no word of why
    (they print alike); the line names the --rename that joins them, which works typed with composed accents too."""
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    (cifake / "train" / "REAL").rename(cifake / "train" / composed)
    (cifake / "test" / "REAL").rename(cifake / "test" / decomposed)
    with pytest.raises(UserError) as error:
        split_train_test(cifake, tmp_path / "out")
    assert "differ only in letter case or accent encoding" in str(error.value)
    assert f"--rename '{decomposed}={composed}'" in str(error.value)

    report = split_train_test(cifake, tmp_path / "out", renames={composed: composed})

    assert report.counts[("test", composed)] == 5 and {class_name for _, class_name in report.counts} == {
        "FAKE", composed}


def test_train_and_test_in_any_letter_case_are_found(cifake, tmp_path):
    (cifake / "train").rename(cifake / "Train")
    (cifake / "test").rename(cifake / "TEST")
    report = split_train_test(cifake, tmp_path / "out")
    assert report.num_files == 50


def test_a_folder_holding_one_dataset_folder_is_accepted(cifake, tmp_path, caplog):
    caplog.set_level("INFO", logger="realvsai")
    wrapper = tmp_path / "download"
    wrapper.mkdir()
    cifake.rename(wrapper / "cifake")
    assert find_train_test_root(wrapper) == wrapper / "cifake"
    report = split_train_test(wrapper, tmp_path / "out")
    assert report.num_files == 50
    assert "using" in caplog.text and "cifake" in caplog.text


def test_a_dataset_two_wrapper_folders_deep_is_found(cifake, tmp_path):
    (tmp_path / "download" / "CIFAKE").mkdir(parents=True)
    cifake.rename(tmp_path / "download" / "CIFAKE" / "cifake")
    assert find_train_test_root(tmp_path / "download") == tmp_path / "download" / "CIFAKE" / "cifake"
    assert split_train_test(tmp_path / "download", tmp_path / "out").num_files == 50


def test_train_and_test_with_different_classes_is_an_error_listing_both(cifake, tmp_path):
    (cifake / "test" / "FAKE").rename(cifake / "test" / "AI")
    with pytest.raises(UserError, match=r"\['FAKE', 'REAL'\].*\['AI', 'REAL'\]"):
        split_train_test(cifake, tmp_path / "out")


def test_train_and_test_classes_in_other_letter_case_are_named_so_and_a_rename_of_one_side_joins_them(cifake,
                                                                                                     tmp_path):
    """A download with train/REAL and test/real: the error said only "rename or remove folders", and
    --rename real=REAL, which the split scripts offer for a class folder's name, gave the same error."""
    (cifake / "test" / "REAL").rename(cifake / "test" / "real")
    with pytest.raises(UserError) as error:
        split_train_test(cifake, tmp_path / "out")
    assert "letter case" in str(error.value) and "--rename real=REAL" in str(error.value)

    report = split_train_test(cifake, tmp_path / "out", renames={"real": "REAL"})

    assert {(split, class_name) for split, class_name in report.counts} == {
        (split, name) for split in ("train", "validation", "test") for name in ("FAKE", "REAL")}
    assert report.counts[("test", "REAL")] == 5


def test_a_source_without_train_and_test_is_a_layout_error(art, tmp_path):
    with pytest.raises(UserError, match="no train/ and test/"):
        split_train_test(art, tmp_path / "out")


def test_renames_apply_to_train_and_test(cifake, tmp_path):
    report = split_train_test(cifake, tmp_path / "out", renames={"REAL": "Real", "FAKE": "Fake"})
    assert {class_name for _, class_name in report.counts} == {"Real", "Fake"}
    assert sorted(path.name for path in (tmp_path / "out" / "test").iterdir()) == ["Fake", "Real"]


def test_parallel_checking_gives_the_same_split_as_serial(cifake, tmp_path, bad_files):
    bad_files(cifake / "train" / "REAL")
    split_train_test(cifake, tmp_path / "serial", workers=1)
    report = split_train_test(cifake, tmp_path / "parallel", workers=2)
    assert manifest_keys(tmp_path / "parallel") == manifest_keys(tmp_path / "serial")
    assert (tmp_path / "parallel" / "skipped.csv").read_text() == (tmp_path / "serial" / "skipped.csv").read_text()
    assert len(report.skipped[UNUSABLE]) == 3


def test_every_copy_holds_the_bytes_of_its_source(art, tmp_path):
    out = tmp_path / "out"
    split_by_class(art, out)
    assert Counter(sha256(path) for path in out.glob("*/*/*.png")) == Counter(
        sha256(path) for path in art.rglob("*.png"))


def test_a_copy_split_reads_each_small_file_once(art, tmp_path, monkeypatch):
    def read_again(path, digest):
        raise AssertionError(f"{path} was read a second time")

    monkeypatch.setattr(splitting, "read_verified", read_again)
    report = split_by_class(art, tmp_path / "out")
    assert report.num_written == report.num_files > 0


def test_files_past_the_memory_budget_are_read_again_and_verified(art, tmp_path, monkeypatch):
    monkeypatch.setattr(splitting, "_KEEP_TOTAL_BYTES", 0, raising=False)
    reads = []
    real = splitting.read_verified
    monkeypatch.setattr(splitting, "read_verified", lambda path, digest: reads.append(path) or real(path, digest))
    report = split_by_class(art, tmp_path / "out")
    assert len(reads) == report.num_written == report.num_files > 0


# ----------------------------------------------------------------------------------------------
# one content, two labels


def test_a_file_under_two_classes_is_left_out_of_both_and_listed_with_the_reason(art, tmp_path):
    original = art / "RealArt" / "img_004.png"
    shutil.copyfile(original, art / "GeneratedArt" / "also_generated.png")
    out = tmp_path / "out"
    report = split_by_class(art, out, seed=3)
    assert sha256(original) not in {row.sha256 for row in read_manifest(out / "manifest.csv")}
    assert not [path for path in out.rglob("*.png") if sha256(path) == sha256(original)]
    reasons = skipped_sources(out)
    assert "GeneratedArt" in reasons["img_004.png"] and "two classes" in reasons["img_004.png"]
    assert "RealArt" in reasons["also_generated.png"] and "two classes" in reasons["also_generated.png"]
    assert len(report.skipped[TWO_CLASSES]) == 2 and report.num_files == 39


def test_a_train_file_identical_to_a_test_file_of_another_class_is_left_out_of_both(cifake, tmp_path):
    test_file = cifake / "test" / "REAL" / "img_002.png"
    shutil.copyfile(test_file, cifake / "train" / "FAKE" / "copy_of_test.png")
    out = tmp_path / "out"
    report = split_train_test(cifake, out)
    assert sha256(test_file) not in {row.sha256 for row in read_manifest(out / "manifest.csv")}
    assert {"img_002.png", "copy_of_test.png"} <= set(skipped_sources(out))
    assert report.counts[("test", "REAL")] == 4
    assert "2 whose content is under two classes" in splitting.format_report(report)


def test_a_split_warns_when_jpeg_quality_alone_gives_the_class_away(tmp_path):
    for index in range(12):
        for class_name, quality in (("REAL", 70), ("FAKE", 95)):
            image = Image.fromarray(np.random.default_rng(index).integers(0, 256, (32, 32, 3), dtype=np.uint8))
            path = tmp_path / "raw" / class_name / f"{index}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path, "JPEG", quality=quality)
    report = split_by_class(tmp_path / "raw", tmp_path / "out")
    assert "JPEG quality alone predicts the class with 100% balanced accuracy (FAKE 95, REAL 70)" in \
        report.shortcut_warning
    assert "image size" not in report.shortcut_warning


# ----------------------------------------------------------------------------------------------
# what is left out: the summary, the warnings and skipped.csv agree


def test_the_summary_counts_every_file_listed_in_skipped_csv(art_with_skipped_files, tmp_path):
    out = tmp_path / "out"
    report = split_by_class(art_with_skipped_files, out)
    assert skipped_count(splitting.format_report(report)) == len(skipped_sources(out)) == 7


def test_the_summary_of_a_train_test_split_counts_every_file_listed_in_skipped_csv(cifake, tmp_path, bad_files):
    bad_files(cifake / "train" / "REAL")
    shutil.copyfile(cifake / "test" / "FAKE" / "img_001.png", cifake / "train" / "FAKE" / "copy_of_test.png")
    shutil.copyfile(cifake / "train" / "REAL" / "img_003.png", cifake / "train" / "FAKE" / "also_fake.png")
    out = tmp_path / "out"
    report = split_train_test(cifake, out)
    assert skipped_count(splitting.format_report(report)) == len(skipped_sources(out)) == 6


@pytest.mark.parametrize("folder", ["valid", "Validation", "val"])
def test_split_train_test_keeps_the_downloads_own_validation_folder_as_validation(cifake, tmp_path, folder):
    """Kaggle's 140k faces come as train/ valid/ test/: valid/ was left out (20,000 images), and validation carved
    out of train; a split sent back through the pipeline (DataZipper, DataUnZipper) lost its validation the same way."""
    held = cifake / folder
    for index, name in enumerate(("REAL", "FAKE", "REAL")):
        write_image(held / name / f"held_{index}.png", seed=500 + index)
    report = split_train_test(cifake, tmp_path / "out")
    assert dict(report.counts) == {("train", "REAL"): 20, ("train", "FAKE"): 20, ("validation", "REAL"): 2,
                                   ("validation", "FAKE"): 1, ("test", "REAL"): 5, ("test", "FAKE"): 5}
    assert sorted(path.name for path in (tmp_path / "out" / "validation").rglob("*.png")) == [
        "held_0.png", "held_1.png", "held_2.png"]
    assert not skipped_sources(tmp_path / "out")


def test_a_train_copy_of_a_validation_image_and_a_validation_copy_of_a_test_image_are_left_out(cifake, tmp_path):
    write_image(cifake / "valid" / "REAL" / "held.png", seed=600)
    write_image(cifake / "valid" / "FAKE" / "held.png", seed=601)
    shutil.copyfile(cifake / "valid" / "REAL" / "held.png", cifake / "train" / "REAL" / "copy_of_valid.png")
    shutil.copyfile(cifake / "test" / "FAKE" / "img_001.png", cifake / "valid" / "FAKE" / "copy_of_test.png")
    report = split_train_test(cifake, tmp_path / "out")
    reasons = skipped_sources(tmp_path / "out")
    assert set(reasons) == {"copy_of_valid.png", "copy_of_test.png"}
    assert "kept in validation only" in reasons["copy_of_valid.png"]
    assert "kept in test only" in reasons["copy_of_test.png"]
    assert report.counts[("validation", "FAKE")] == 1 and report.counts[("train", "REAL")] == 20


def test_a_validation_folder_with_other_classes_is_refused_naming_it(cifake, tmp_path):
    write_image(cifake / "valid" / "REAL" / "held.png", seed=600)
    write_image(cifake / "valid" / "SCAN" / "held.png", seed=601)
    with pytest.raises(UserError, match=r"valid has class folders \['REAL', 'SCAN'\]"):
        split_train_test(cifake, tmp_path / "out")


def test_split_train_test_lists_images_outside_train_and_test_classes_in_skipped_csv(cifake, tmp_path):
    write_image(cifake / "extra" / "REAL" / "in_valid.png", seed=9)
    write_image(cifake / "train" / "loose.png", seed=10)
    write_image(cifake / "cover.jpg", seed=11)
    out = tmp_path / "out"
    report = split_train_test(cifake, out)
    skipped = skipped_sources(out)
    assert skipped.keys() == {"in_valid.png", "loose.png", "cover.jpg"}
    assert "extra/" in skipped["in_valid.png"] and "beside the class folders" in skipped["loose.png"]
    assert skipped_count(splitting.format_report(report)) == 3
    assert "3 outside the class folders" in splitting.format_report(report)  # extra/'s image is not "beside" them
    assert "in_valid.png" not in {Path(row.path).name for row in read_manifest(out / "manifest.csv")}


def test_the_unusable_files_warning_names_only_unusable_files(art_with_skipped_files, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="realvsai"):
        split_by_class(art_with_skipped_files, tmp_path / "out")
    (warning,) = [record.getMessage() for record in caplog.records if "cannot be used" in record.getMessage()]
    assert "empty.jpg" in warning
    assert [name for name in ("also_generated.png", "img_004.png", "README.txt") if name in warning] == []


def test_hidden_files_and_folders_outside_the_class_folders_are_listed_in_skipped_csv(cifake, art, tmp_path):
    """As inside a class folder: a hidden name is left out, never dropped unsaid (a notebook's checkpoints, a
    hidden folder of images beside train/ and test/)."""
    write_image(cifake / "train" / ".ipynb_checkpoints" / "x.png", seed=9)
    write_image(cifake / "train" / ".hidden.png", seed=10)
    write_image(cifake / ".extra" / "REAL" / "y.png", seed=11)
    out = tmp_path / "out-d2"
    report = split_train_test(cifake, out)
    skipped = skipped_sources(out)
    assert skipped.keys() == {".ipynb_checkpoints", ".hidden.png", ".extra"}, skipped
    assert "hidden folder" in skipped[".extra"] and "hidden file" in skipped[".hidden.png"]
    assert skipped_count(splitting.format_report(report)) == 3

    write_image(art / ".ipynb_checkpoints" / "a.png", seed=12)
    write_image(art / ".hidden.png", seed=13)
    out = tmp_path / "out-d1"
    report = split_by_class(art, out)
    assert skipped_sources(out).keys() == {".ipynb_checkpoints", ".hidden.png"}
    assert skipped_count(splitting.format_report(report)) == 2


def test_splitting_a_split_again_says_nothing_of_its_record_of_checks(cifake, tmp_path):
    """DataSplitD2 of a split folder (train/ validation/ test/, as a split of its own validation keeps it) listed
    the split's .checks.json in skipped.csv and warned of it as a hidden file beside the class folders, where
    its manifest.csv and skipped.csv, the same split's records, go unsaid: only a re-run of that split reads it."""
    first = tmp_path / "first"
    split_train_test(cifake, first)
    assert (first / splitting.CHECKS_NAME).is_file()
    out = tmp_path / "again"
    report = split_train_test(first, out)
    assert splitting.CHECKS_NAME not in skipped_sources(out)
    assert skipped_count(splitting.format_report(report)) == 0


def test_images_in_a_folder_beside_the_dataset_folder_a_wrapper_holds_are_listed_in_skipped_csv(tmp_path,
                                                                                                 make_class_folder):
    """A download of cifake/{train,test}/ beside extra_fakes/FAKE/: the split read cifake/ and said nothing of the
    other folder's images (in neither manifest.csv nor skipped.csv)."""
    download = tmp_path / "raw" / "download"
    for split in ("train", "test"):
        make_class_folder(download / "cifake" / split, {"REAL": 6, "FAKE": 6}, seed=len(split))
    write_image(download / "extra_fakes" / "FAKE" / "x0.png", seed=900)
    write_image(download / "extra_fakes" / "FAKE" / "x1.png", seed=901)
    out = tmp_path / "data"

    report = split_train_test(download, out)

    skipped = skipped_sources(out)
    assert {"x0.png", "x1.png"} <= skipped.keys()
    assert "extra_fakes/" in skipped["x0.png"] and "beside cifake/" in skipped["x0.png"]
    assert "2 outside the class folders" in splitting.format_report(report)


@pytest.mark.parametrize("name", ["train", "Test", "validation"])
def test_a_second_dataset_named_like_a_split_is_told_to_split_apart_into_a_folder_that_is_not_a_split(
        tmp_path, make_class_folder, name):
    """DataZipper data/train -> train.zip -> data/raw/train: the advice said --out data/train, the first split's
    own train folder, and the split then wrote into it."""
    make_class_folder(tmp_path / "raw" / "cats", {"REAL": 10, "FAKE": 10})
    make_class_folder(tmp_path / "raw" / name, {"REAL": 10, "FAKE": 10}, seed=4)
    split_by_class(tmp_path / "raw" / "cats", tmp_path / "data")

    with pytest.raises(UserError) as refused:
        split_by_class(tmp_path / "raw" / name, tmp_path / "data")

    apart = re.search(r"--out (\S+)\)", str(refused.value))[1]
    assert Path(apart).parent == tmp_path / "data"
    assert Path(apart).name.casefold() not in {"train", "validation", "test"} and not Path(apart).exists()
    split_by_class(tmp_path / "raw" / name, Path(apart))  # the advice works


@pytest.mark.parametrize("inside", [("train",), ("validation", "more"), ("augmented_train",)])
def test_a_split_into_a_folder_of_another_split_is_refused_before_anything_is_written(tmp_path, make_class_folder,
                                                                                      inside):
    make_class_folder(tmp_path / "raw" / "cats", {"REAL": 10, "FAKE": 10})
    make_class_folder(tmp_path / "raw" / "dogs", {"REAL": 10, "FAKE": 10}, seed=4)
    split_by_class(tmp_path / "raw" / "cats", tmp_path / "data")
    (tmp_path / "data" / "augmented_train").mkdir()
    before, paths = snapshot(tmp_path / "data"), sorted((tmp_path / "data").rglob("*"))

    with pytest.raises(UserError, match=rf"{inside[0]}/ of the split in {re.escape(str(tmp_path / 'data'))}.*"
                                        r"choose an --out outside it"):
        split_by_class(tmp_path / "raw" / "dogs", tmp_path / "data" / Path(*inside))

    assert snapshot(tmp_path / "data") == before and sorted((tmp_path / "data").rglob("*")) == paths


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_stopped_move_split_run_again_without_move_is_told_to_finish_it_with_move(cifake, tmp_path, overwrite):
    """Run again without --move, the split was "a different split" and --overwrite was the advice: it moved the
    stopped split aside (with the only copies of the images moved so far, in a folder it said to delete when no
    longer needed) and split what was left in SOURCE."""
    out = tmp_path / "out"
    split_train_test(cifake, out, mode=splitting.MOVE)
    for row in read_manifest(out / "manifest.csv")[::2]:  # where a stop partway leaves them: still in SOURCE
        shutil.move(out / row.path, row.source)
    before, left = snapshot(out), snapshot(cifake)

    with pytest.raises(UserError, match=r"holds a --move split of .*cifake: \d+ images it lists were moved out of "
                                        r"SOURCE into it\. Run the same command with --move") as refused:
        split_train_test(cifake, out, overwrite=overwrite)

    assert "--overwrite" not in str(refused.value).split("Run the same command")[1].split(";")[0]
    assert snapshot(out) == before and snapshot(cifake) == left
    split_train_test(cifake, out, mode=splitting.MOVE)  # what it says finishes the split
    assert len(read_manifest(out / "manifest.csv")) == 50 and not list(cifake.rglob("*.png"))


@pytest.mark.parametrize(("train_name", "test_name"), [("Real photos", "real photos"), ("-real", "-REAL")])
def test_the_rename_a_case_only_difference_needs_is_given_as_words_the_shell_keeps(tmp_path, make_class_folder,
                                                                                    train_name, test_name):
    """"Add --rename real photos=Real photos", pasted, split into three words; "--rename -REAL=-real" read -REAL as
    an option."""
    import shlex

    from realvsai.splitting import add_split_arguments

    make_class_folder(tmp_path / "raw" / "train", {train_name: 6, "fake": 6})
    make_class_folder(tmp_path / "raw" / "test", {test_name: 3, "fake": 3}, seed=2)
    with pytest.raises(UserError) as refused:
        split_train_test(tmp_path / "raw", tmp_path / "out")

    advice = re.search(r"Add (.*) \(or rename", str(refused.value))[1]
    parser = argparse.ArgumentParser()
    add_split_arguments(parser, splitting.SplitDefaults())
    renames = parser.parse_args(shlex.split(advice)).rename
    split_train_test(tmp_path / "raw", tmp_path / "out", renames=parse_renames(renames))
    assert {row.class_name for row in read_manifest(tmp_path / "out" / "manifest.csv")} == {train_name, "fake"}


@pytest.mark.parametrize("classes", [("valid", "forged"), ("testing", "other")])
def test_a_class_named_like_a_held_out_split_is_a_class_where_no_train_folder_is_beside_it(tmp_path,
                                                                                       make_class_folder, classes):
    """A "valid vs forged" signature set was refused as split folders, with advice to use DataSplitD2, which refused
    it the same way."""
    make_class_folder(tmp_path / "raw", dict.fromkeys(classes, 10))

    report = split_by_class(tmp_path / "raw", tmp_path / "out")

    assert {class_name for _, class_name in report.counts} == set(classes)


@pytest.mark.parametrize("new", ["a/b", "a\\b", ".hidden", "test"])
def test_a_rename_given_in_code_to_no_folder_name_is_refused_as_on_the_command_line(tmp_path, make_class_folder, new):
    """parse_renames refused '/' and '\\' in NEW, rename_classes not: a rename in code to "a/b" split the class into
    out/train/a/b/, and the manifest named a class "a/b" that is no folder."""
    make_class_folder(tmp_path / "raw", {"REAL": 10, "FAKE": 10})

    with pytest.raises(UserError, match=rf"--rename to {re.escape(repr(new))} is not a usable class name"):
        split_by_class(tmp_path / "raw", tmp_path / "out", renames={"REAL": new})

    assert not (tmp_path / "out").exists()


def test_a_class_named_as_a_split_folder_is_told_the_rename_that_splits_it(tmp_path, make_class_folder):
    """It said "--rename to 'test' is not a usable class name" of a folder no --rename had named."""
    make_class_folder(tmp_path / "raw", {"test": 10, "other": 10})

    with pytest.raises(UserError, match=r"class folder 'test' has the name of a split folder.*--rename test=") as no:
        split_by_class(tmp_path / "raw", tmp_path / "out")

    assert "--rename to" not in str(no.value)
    split_by_class(tmp_path / "raw", tmp_path / "out", renames={"test": "tested"})


def test_a_download_of_held_out_splits_alone_is_not_taken_for_classes(tmp_path, make_class_folder):
    for split in ("Validation", "Test"):
        make_class_folder(tmp_path / "raw" / split, {"Real": 3, "Fake": 3})
    with pytest.raises(UserError, match="not one folder per class"):
        split_by_class(tmp_path / "raw", tmp_path / "out")


def test_one_mask_left_out_is_counted_in_the_singular(tmp_path, make_class_folder, caplog):
    """One mask left out reads "1 file that is a segmentation mask beside its image", in the warning and the
    summary, not "1 file that are segmentation masks", and the warning names it without an "e.g."."""
    source = tmp_path / "busi"
    for class_name, seed in (("benign", 0), ("normal", 100)):
        for index in range(1, 5):
            write_image(source / class_name / f"{class_name} ({index}).png", seed=seed + index, mode="L")
    write_image(source / "benign" / "benign (1)_mask.png", seed=99, mode="L")

    with caplog.at_level("WARNING", logger="realvsai"):
        report = split_by_class(source, tmp_path / "out")

    warnings = " ".join(record.getMessage() for record in caplog.records if record.levelname == "WARNING")
    assert "left out 1 file that is a segmentation mask beside its image (" in warnings and "e.g." not in warnings
    assert "skipped: 1 file (list: " in format_report(report)
    assert "1 that is a segmentation mask beside its image" in format_report(report)
    assert "that are" not in warnings + format_report(report)


def test_a_file_deleted_between_the_check_and_its_copy_is_said_to_have_gone_meanwhile(art, tmp_path, monkeypatch):
    """It said "<file>: no such file or folder. Check the path": a path the user never gave, found by the scan."""
    monkeypatch.setattr(splitting, "_KEEP_TOTAL_BYTES", 0, raising=False)  # each file read again as it is copied
    gone = sorted((art / "RealArt").iterdir())[0]
    real = splitting.read_verified

    def deleted_first(path, digest):
        if os.path.exists(gone):
            gone.unlink()
        return real(path, digest)

    monkeypatch.setattr(splitting, "read_verified", deleted_first)
    with pytest.raises(UserError, match=r"went away while .* was being copied") as refused:
        split_by_class(art, tmp_path / "out")
    assert str(gone) in str(refused.value)
