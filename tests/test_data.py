"""realvsai.data: scanning class folders and the tf.data input pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import PHOTO_LIMIT, REPO, jpeg_header_only, watch_hashing, write_image, write_phone_photo
from PIL import Image

from realvsai import data, files, images
from realvsai.errors import UserError
from realvsai.model import SquareResize


def test_scan_images_labels_files_in_class_name_order(tmp_path, make_class_folder):
    make_class_folder(tmp_path, {"REAL": 3, "FAKE": 2})

    scanned = data.scan_images(tmp_path)

    assert scanned.class_names == ["FAKE", "REAL"]
    assert scanned.labels == [0, 0, 1, 1, 1]
    assert scanned.counts() == {"FAKE": 2, "REAL": 3}
    assert [path.parent.name for path in scanned.files] == ["FAKE"] * 2 + ["REAL"] * 3


def test_scan_images_labels_files_in_the_order_of_the_class_names_it_is_given(tmp_path, make_class_folder):
    """A model's class names are its label order, whatever the folders' sorted order: REAL is 0 for a model that
    says so, or every answer of the evaluation would be scored against the other class."""
    make_class_folder(tmp_path, {"REAL": 3, "FAKE": 2})

    scanned = data.scan_images(tmp_path, class_names=["REAL", "FAKE"])

    assert scanned.class_names == ["REAL", "FAKE"]
    assert {(path.parent.name, label) for path, label in zip(scanned.files, scanned.labels)} == {("REAL", 0),
                                                                                               ("FAKE", 1)}
    assert scanned.counts() == {"REAL": 3, "FAKE": 2}


def test_scan_images_skips_and_names_files_without_an_image_header(tmp_path, make_class_folder, bad_files):
    make_class_folder(tmp_path, {"a": 2, "b": 2})
    broken = bad_files(tmp_path / "a")

    scanned = data.scan_images(tmp_path)

    assert len(scanned) == 4
    assert {path for path, _ in scanned.skipped} == set(broken.values())


def test_scan_images_names_an_image_named_without_its_extension_first_with_its_fix(tmp_path, make_class_folder,
                                                                                   caplog):
    """Of 5 files left out, the warning named bmpnoext alone ("e.g."), and three more images named without their
    extension nowhere; one file was said to be "not images"."""
    make_class_folder(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "a" / "notes.txt").write_bytes(b"x")
    (tmp_path / "b" / "notes.txt").write_bytes(b"x")
    write_image(tmp_path / "a" / "photo.png", seed=3)
    (tmp_path / "a" / "photo.png").rename(tmp_path / "a" / "photo")

    with caplog.at_level("WARNING", logger="realvsai"):
        data.scan_images(tmp_path)

    (said,) = [record.getMessage() for record in caplog.records]
    assert said.startswith(f"{tmp_path}: 3 files in its class folders are not images read here, left out (e.g. "
                           f"{tmp_path / 'a' / 'photo'}: a PNG image whose name does not end in .png"), said
    caplog.clear()
    (tmp_path / "a" / "photo").unlink()
    (tmp_path / "b" / "notes.txt").unlink()
    with caplog.at_level("WARNING", logger="realvsai"):
        data.scan_images(tmp_path)
    (said,) = [record.getMessage() for record in caplog.records]
    assert said.startswith(f"{tmp_path}: 1 file in its class folders is not an image read here, left out (e.g. "), said


def test_scan_images_says_how_many_files_are_not_images_it_reads(tmp_path, make_class_folder, caplog):
    """Training's scan left out GIF, TIFF and AVIF files, and any file that is not an image, without a word, while
    the splitters, --predict and --evaluate list them."""
    make_class_folder(tmp_path, {"a": 2, "b": 2})
    for name in ("animated.gif", "scan.tif", "notes.txt"):
        (tmp_path / "a" / name).write_bytes(b"x")
    (tmp_path / "b" / ".DS_Store").write_bytes(b"x")  # hidden: left out without a word, as everywhere

    with caplog.at_level("WARNING", logger="realvsai"):
        scanned = data.scan_images(tmp_path)

    assert len(scanned) == 4
    (said,) = [record.getMessage() for record in caplog.records]
    assert said.startswith(f"{tmp_path}: 3 files in its class folders are not images read here, left out (e.g. "
                           f"{tmp_path / 'a' / 'animated.gif'}: a GIF image, a format not read here")


def test_scan_images_says_how_many_images_sit_in_sub_folders_of_its_class_folders(tmp_path, make_class_folder,
                                                                                   caplog):
    """A class folder of a dataset made by hand (REAL/2023/*.jpg) lost those images to training without a word, and
    its class weights changed, while --evaluate and DataMerger list them."""
    make_class_folder(tmp_path, {"a": 2, "b": 2})
    make_class_folder(tmp_path / "a" / "batch2", {"deeper": 2}, seed=4)
    make_class_folder(tmp_path / "b", {"more": 1}, seed=5)
    (tmp_path / "b" / "more" / "notes.txt").write_text("not an image: not counted")

    with caplog.at_level("WARNING", logger="realvsai"):
        scanned = data.scan_images(tmp_path)

    assert len(scanned) == 4
    (said,) = [record.getMessage() for record in caplog.records]
    assert said == (f"{tmp_path}: 3 images in sub-folders of its class folders are left out: only the images right in "
                    f"a class folder are read (move them up to use them; e.g. {tmp_path / 'a' / 'batch2' / 'deeper'})")


def jpeg_cut_after_its_header(path: Path) -> Path:
    """A noisy JPEG whose last third is missing: its header reads, its pixels do not all decode."""
    write_image(path, seed=9, size=(64, 64))
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) * 2 // 3])
    return path


def test_scan_images_decodes_a_large_jpeg_only_at_one_eighth_to_tell_gray_ones(tmp_path, monkeypatch):
    """The scan reads headers, and a colour image's pixels only to tell gray ones: a large JPEG at 1/8."""
    from PIL import JpegImagePlugin

    write_image(tmp_path / "a" / "large.jpg", seed=1, size=(1200, 900))
    drafts = []
    real_draft = JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft",
                        lambda image, mode, size: drafts.append(size) or real_draft(image, mode, size))

    def no_decoding(*args, **kwargs):
        raise AssertionError("scan_images decoded an image as training does")

    monkeypatch.setattr(images, "load_rgb", no_decoding)
    assert len(data.scan_images(tmp_path)) == 1
    assert drafts == [(150, 112)]


def test_scan_images_names_and_skips_a_file_broken_after_its_header(tmp_path, make_class_folder):
    make_class_folder(tmp_path, {"a": 2, "b": 2})
    truncated = jpeg_cut_after_its_header(tmp_path / "a" / "truncated.jpg")

    scanned = data.scan_images(tmp_path)

    assert len(scanned) == 4 and [path for path, _ in scanned.skipped] == [truncated]
    assert "the image data is broken" in scanned.skipped[0][1]


def test_dataset_drops_a_file_broken_after_the_scan(tmp_path, make_class_folder):
    make_class_folder(tmp_path, {"a": 2, "b": 2})
    write_image(tmp_path / "a" / "truncated.jpg", seed=9, size=(64, 64))
    scanned = data.scan_images(tmp_path)
    assert len(scanned) == 5
    jpeg_cut_after_its_header(tmp_path / "a" / "truncated.jpg")  # changed since the scan

    labels = np.concatenate([y.numpy() for _, y in data.make_dataset(scanned, batch_size=8, image_size=32)])

    assert labels.tolist() == [0, 0, 1, 1]


def test_scan_images_with_other_classes_names_both_sides(tmp_path, make_class_folder):
    make_class_folder(tmp_path, {"REAL": 1, "OTHER": 1})

    with pytest.raises(UserError, match=r"missing \['FAKE'\].*unexpected \['OTHER'\]"):
        data.scan_images(tmp_path, class_names=["FAKE", "REAL"])


def test_scan_images_finds_a_class_folder_whose_name_macos_wrote_with_decomposed_accents(tmp_path, make_class_folder):
    """"café" typed (NFC) and "cafe" + a combining accent (NFD, as macOS may write a folder's name) print alike:
    a model's class is found in a test folder copied from a Mac."""
    import unicodedata

    decomposed = unicodedata.normalize("NFD", "normal café")
    make_class_folder(tmp_path, {"benign": 2, decomposed: 1})

    scanned = data.scan_images(tmp_path, class_names=["benign", "normal café"])

    assert scanned.class_names == ["benign", "normal café"] and sorted(scanned.labels) == [0, 0, 1]
    assert scanned.files[scanned.labels.index(1)].parent.name == decomposed


def split_with_a_rare_class(root: Path, make_class_folder, test_classes=("benign tumour", "maligné ñ")) -> Path:
    """DataSplitD1's split of a dataset whose class "rare" had too few images to give test one."""
    make_class_folder(root / "train", {"benign tumour": 3, "maligné ñ": 3, "rare": 2})
    make_class_folder(root / "validation", {"benign tumour": 1, "maligné ñ": 1, "rare": 1}, seed=1)
    make_class_folder(root / "test", dict.fromkeys(test_classes, 1), seed=2)
    return root


def test_scan_splits_takes_a_test_split_without_a_class_folder_as_one_without_images(tmp_path, make_class_folder,
                                                                                    caplog):
    data_dir = split_with_a_rare_class(tmp_path, make_class_folder)

    _, _, test = data.scan_splits(data_dir)

    assert test.class_names == ["benign tumour", "maligné ñ", "rare"] and test.counts()["rare"] == 0
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1 and "'rare'" in warnings[0] and str(data_dir / "test") in warnings[0], warnings


@pytest.mark.parametrize("test_classes", [("benign tumour", "malign"), ("benign tumour", "maligné ñ", "rare", "x")],
                         ids=["renamed", "extra"])
def test_scan_splits_refuses_a_test_split_with_other_class_names_with_the_rename_advice(tmp_path, make_class_folder,
                                                                                        test_classes):
    data_dir = split_with_a_rare_class(tmp_path, make_class_folder, test_classes)

    with pytest.raises(UserError, match=r"unexpected \[.*--rename OLD=NEW"):
        data.scan_splits(data_dir)


def test_scan_splits_refuses_class_folders_that_differ_only_in_letter_case(tmp_path, make_class_folder):
    """A class folder renamed in the split (REAL to Real) and the split run again: train/ held REAL/ and Real/ with
    the same images, and training learnt three classes without a word (half its answers then Uncertain)."""
    for split, seed in (("train", 0), ("validation", 1)):
        make_class_folder(tmp_path / split, {"FAKE": 2, "REAL": 2, "Real": 2}, seed=seed)

    with pytest.raises(UserError, match=r"'REAL', 'Real'.* differ only in letter case.*one folder"):
        data.scan_splits(tmp_path)


def test_scan_splits_warns_of_the_same_file_under_two_classes_and_of_test_files_it_trains_on(
        tmp_path, make_class_folder, caplog):
    """A split made by hand whose REAL folder was copied into FAKE trained a model at chance without a word (the
    split scripts leave such images out); so did one whose test folder holds training images."""
    import shutil

    for split, seed in (("train", 0), ("validation", 1), ("test", 2)):
        make_class_folder(tmp_path / split, {"FAKE": 3, "REAL": 3}, seed=seed)
    for index in range(3):
        shutil.copyfile(tmp_path / "train" / "REAL" / f"img_{index:03d}.png",
                        tmp_path / "train" / "FAKE" / f"copy_{index}.png")
    shutil.copyfile(tmp_path / "train" / "FAKE" / "img_000.png", tmp_path / "test" / "FAKE" / "seen.png")
    caplog.set_level("WARNING", logger="realvsai")

    data.scan_splits(tmp_path)

    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    (classes,) = [message for message in warnings if "under two classes" in message]
    assert "3 files" in classes and "train/FAKE/copy_0.png" in classes and "train/REAL/img_000.png" in classes
    (leak,) = [message for message in warnings if "the model trains on" in message]
    assert "1 test file" in leak and "test/FAKE/seen.png" in leak


def test_scan_splits_says_nothing_of_distinct_files_of_one_size(tmp_path, make_class_folder, caplog):
    for split, seed in (("train", 0), ("validation", 1), ("test", 2)):
        make_class_folder(tmp_path / split, {"FAKE": 3, "REAL": 3}, seed=seed, suffix=".bmp")  # all one size
    caplog.set_level("WARNING", logger="realvsai")

    data.scan_splits(tmp_path)

    assert not [record for record in caplog.records if record.levelname == "WARNING"]


@pytest.mark.skipif(sys.platform != "linux", reason="a file name that is not UTF-8 needs a POSIX file system")
def test_the_data_digest_takes_a_file_name_that_is_not_utf8(tmp_path, make_class_folder):
    """A file named in Latin-1 (copied off an old disk) ended training with a UnicodeEncodeError in the digest; the
    digest of every other name is the one it was."""
    for split in ("train", "validation"):
        make_class_folder(tmp_path / split, {"FAKE": 2, "REAL": 2})
    splits = [data.scan_images(tmp_path / split) for split in ("train", "validation")]
    before = data.data_digest(tmp_path, *splits)
    write_image(Path(os.fsdecode(os.fsencode(tmp_path / "train" / "REAL") + b"/caf\xe9.png")), seed=9)
    splits = [data.scan_images(tmp_path / split) for split in ("train", "validation")]

    assert len(splits[0]) == 5 and data.data_digest(tmp_path, *splits) not in (before, None)
    assert data.data_digest(tmp_path, *[data.scan_images(tmp_path / split) for split in ("train", "validation")
                                        ]) == data.data_digest(tmp_path, *splits)


def test_scan_splits_reads_each_file_it_compares_under_a_progress_bar(tmp_path, make_class_folder, monkeypatch):
    """The identical-file check hashes every file that shares its size with one of another split or class: nearly all
    of CIFAKE's 243,579, for several seconds with nothing on the screen before the settings table."""
    for split, seed in (("train", 0), ("validation", 1), ("test", 2)):
        make_class_folder(tmp_path / split, {"FAKE": 3, "REAL": 3}, seed=seed, suffix=".bmp")  # all one size
    watch = watch_hashing(monkeypatch, files)  # the check hashes through files.same_bytes_across
    digests = {}

    data.scan_splits(tmp_path, digests=digests)

    assert len(digests) == 18 and watch.hashed_outside == []
    assert watch.bars == [("checking for identical files", 18)]


def test_training_on_a_data_folder_that_does_not_exist_says_so(tmp_path):
    """It said "has no train folder. Run DataSplitD1.py or DataSplitD2.py first": of a folder that is not there,
    a mistyped --data most likely."""
    with pytest.raises(UserError, match=r"missing is not an existing folder\. Check --data"):
        data.scan_splits(tmp_path / "missing")


def test_training_on_a_download_s_own_capitalised_split_says_to_split_it_first(tmp_path, make_class_folder):
    # Kaggle's Dataset/{Train,Validation,Test}/: "has no train folder" read as a lie beside Train/.
    from realvsai.layout import read_split_classes

    for split in ("Train", "Validation", "Test"):
        make_class_folder(tmp_path / "Dataset" / split, {"Real": 2, "Fake": 2})

    for read in (data.scan_splits, read_split_classes):
        with pytest.raises(UserError, match=r"it has Train/.* python DataSplitD2\.py .*Dataset --out data"):
            read(tmp_path / "Dataset")


def test_a_folder_that_wraps_a_download_not_yet_split_is_named_with_the_split_command(tmp_path, make_class_folder):
    """data/raw/cifake (the unzipper's folder, around cifake/train and cifake/test) given as --data: training and
    DataAugmentation said "has no train folder. Run DataSplitD1.py or DataSplitD2.py first" with no command."""
    from realvsai.moving import dataset_folders

    wrapper = tmp_path / "raw" / "cifake"
    for split in ("train", "test"):
        make_class_folder(wrapper / "cifake" / split, {"REAL": 2, "FAKE": 2})

    for read in (data.scan_splits, dataset_folders):
        with pytest.raises(UserError, match=r"it holds a download not yet split in .*cifake/cifake.* python "
                                            r"DataSplitD2\.py .*raw/cifake --out data"):
            read(wrapper)


def test_training_on_a_download_s_train_and_test_names_the_split_command_that_fits(tmp_path, make_class_folder):
    """--data data/raw/cifake (train/ and test/, not yet split): it said "Split off one with DataSplitD1.py or
    DataSplitD2.py", and DataSplitD1.py refuses a folder of train/ and test/."""
    for split in ("train", "test"):
        make_class_folder(tmp_path / "cifake" / split, {"REAL": 2, "FAKE": 2})

    with pytest.raises(UserError) as refused:
        data.scan_splits(tmp_path / "cifake")
    assert str(refused.value).endswith(f"python DataSplitD2.py {tmp_path / 'cifake'} --out data"), str(refused.value)
    assert "DataSplitD1" not in str(refused.value)


def test_training_on_a_split_folder_names_the_dataset_folder_to_give_as_augmentation_does(tmp_path,
                                                                                          make_class_folder):
    """--data data/train: training said "data/train has no train folder. Run DataSplitD1.py or DataSplitD2.py
    first", where DataAugmentation and the move name the dataset folder to give."""
    from realvsai.moving import dataset_folders

    for split in ("train", "validation"):
        make_class_folder(tmp_path / "data" / split, {"REAL": 2, "FAKE": 2})

    for read in (data.scan_splits, dataset_folders):
        with pytest.raises(UserError) as refused:
            read(tmp_path / "data" / "train")
        assert str(refused.value) == (f"--data {tmp_path / 'data' / 'train'} is a split folder; give the dataset "
                                      f"folder that holds train/, e.g. --data {tmp_path / 'data'}.")


def test_scan_images_leaves_out_segmentation_masks_beside_their_images_as_the_split_does(tmp_path):
    # BUSI's layout: --evaluate --test-dir on the download scored 57 masks as ultrasound images of their class.
    for index, name in enumerate(["benign (1).png", "benign (1)_mask.png", "benign (1)_mask_1.png", "lone_mask.png"]):
        write_image(tmp_path / "busi" / "benign" / name, seed=index)
    for index, name in enumerate(["normal (1).png", "normal (1)_mask.png"]):
        write_image(tmp_path / "busi" / "normal" / name, seed=10 + index)

    scanned = data.scan_images(tmp_path / "busi")

    assert sorted(path.name for path in scanned.files) == ["benign (1).png", "lone_mask.png", "normal (1).png"]
    reasons = {path.name: why for path, why in scanned.skipped}
    assert set(reasons) == {"benign (1)_mask.png", "benign (1)_mask_1.png", "normal (1)_mask.png"}
    assert all("segmentation mask of" in why for why in reasons.values())


@pytest.mark.parametrize("split", ["test", "validation"])
def test_scan_splits_refuses_a_split_that_was_stopped_before_it_placed_every_file(tmp_path, make_class_folder, split):
    # A split killed while it copied: its manifest lists every file, the folders hold some. Training on it went on
    # and reported its test accuracy on the part that was there.
    from realvsai.splitting import split_by_class

    split_by_class(make_class_folder(tmp_path / "raw", {"REAL": 20, "FAKE": 20}), tmp_path / "data")
    data.scan_splits(tmp_path / "data")  # finished: no complaint
    for path in sorted((tmp_path / "data" / split / "REAL").iterdir())[:2]:
        path.unlink()

    with pytest.raises(UserError, match=r"manifest\.csv lists 2 files that are not there .* run the split or merge "
                                        "that made it again"):
        data.scan_splits(tmp_path / "data")


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_scan_splits_refuses_a_class_without_validation_images_saying_so(tmp_path, make_class_folder, folder):
    # The best epoch, the stop rules and the decision threshold are chosen on validation: blind to the class.
    data_dir = split_with_a_rare_class(tmp_path, make_class_folder)
    for image in (data_dir / "validation" / "rare").iterdir():
        image.unlink()
    if folder == "missing":
        (data_dir / "validation" / "rare").rmdir()

    with pytest.raises(UserError) as refused:
        data.scan_splits(data_dir)
    assert str(refused.value).startswith(f"class 'rare' has no readable image in {data_dir / 'validation'}: add some")
    assert "re-split" in str(refused.value) and "--rename" not in str(refused.value)


def test_scan_splits_tells_a_class_of_one_image_to_get_more_images_not_to_re_split(tmp_path, make_class_folder):
    """DataSplitD1 keeps a class's one image in train (none to spare for validation): training said "add some there,
    or re-split the dataset so that every class has some", and a re-split places that lone image in train again."""
    from realvsai.splitting import split_by_class

    split_by_class(make_class_folder(tmp_path / "raw", {"REAL": 1, "FAKE": 20}), tmp_path / "data")

    with pytest.raises(UserError) as refused:
        data.scan_splits(tmp_path / "data")
    message = str(refused.value)
    assert message.startswith(f"class 'REAL' has no readable image in {tmp_path / 'data' / 'validation'} and 1 in ")
    assert "add images of it" in message.lower() and "re-split" not in message


@pytest.mark.parametrize("script", ["D1", "D2"])
def test_scan_splits_tells_a_split_of_one_image_a_class_to_get_more_images_not_to_split_off_validation(
        tmp_path, make_class_folder, script):
    """One image a class leaves nothing to spare for validation, and the split makes no validation folder: training
    said "Split off one with DataSplitD1.py or DataSplitD2.py", which the user had just run and which makes none."""
    from realvsai.splitting import split_by_class, split_train_test

    if script == "D1":
        split_by_class(make_class_folder(tmp_path / "raw", {"REAL": 1, "FAKE": 1}), tmp_path / "data")
    else:
        make_class_folder(tmp_path / "raw" / "train", {"REAL": 1, "FAKE": 1}, seed=1)
        make_class_folder(tmp_path / "raw" / "test", {"REAL": 1, "FAKE": 1}, seed=2)
        split_train_test(tmp_path / "raw", tmp_path / "data")
    assert not (tmp_path / "data" / "validation").exists()

    with pytest.raises(UserError) as refused:
        data.scan_splits(tmp_path / "data")
    message = str(refused.value)
    assert "1 image" in message and "add images" in message.lower() and "Split off one" not in message


def test_scan_splits_tells_a_class_of_copies_of_one_image_to_get_more_images_not_to_re_split(tmp_path,
                                                                                              make_class_folder):
    """A class whose files are exact copies of one image stays whole in train (the split places copies together):
    training said "re-split the dataset so that every class has some", which places them in train again."""
    import shutil

    from realvsai.splitting import split_by_class

    raw = make_class_folder(tmp_path / "raw", {"REAL": 1, "FAKE": 20})
    (lone,) = (raw / "REAL").iterdir()
    for number in range(4):
        shutil.copy(lone, lone.with_name(f"copy{number}{lone.suffix}"))
    split_by_class(raw, tmp_path / "data")

    with pytest.raises(UserError) as refused:
        data.scan_splits(tmp_path / "data")
    message = str(refused.value)
    assert message.startswith(f"class 'REAL' has no readable image in {tmp_path / 'data' / 'validation'} and 1 ")
    assert "copies" in message and "add images of it" in message.lower() and "re-split" not in message


def test_scan_images_of_an_empty_dataset_says_so(tmp_path):
    (tmp_path / "a").mkdir()

    with pytest.raises(UserError, match="no readable image"):
        data.scan_images(tmp_path)


def test_scan_images_of_class_folders_holding_only_sub_folders_names_one_and_says_to_move_them_up(tmp_path):
    """The Fake-or-Real download's layout, REAL/RealArt/*.jpg: --evaluate on it said only "holds no readable
    image ... Check the folder and its files"."""
    write_image(tmp_path / "REAL" / "RealArt" / "a.jpg", seed=1)
    write_image(tmp_path / "FAKE" / "AiArtData" / "b.png", seed=2)

    with pytest.raises(UserError) as refused:
        data.scan_images(tmp_path, ["FAKE", "REAL"])

    message = str(refused.value)
    assert "sub-folder" in message and str(tmp_path / "FAKE" / "AiArtData" / "b.png") in message
    assert "move them up" in message and "\n" not in message


def test_dataset_keeps_file_order_and_raw_pixel_values_without_shuffle(tmp_path, make_class_folder):
    make_class_folder(tmp_path, {"a": 3, "b": 2}, suffix=".png")
    scanned = data.scan_images(tmp_path)

    batches = list(data.make_dataset(scanned, batch_size=2, image_size=16))
    pixels = np.concatenate([x.numpy() for x, _ in batches])
    labels = np.concatenate([y.numpy() for _, y in batches])

    expected = np.stack([np.asarray(Image.open(path).convert("RGB")) for path in scanned.files])
    assert pixels.dtype == np.float32 and pixels.shape == (5, 32, 32, 3)  # one size: not resized
    np.testing.assert_array_equal(pixels, expected.astype(np.float32))
    assert labels.tolist() == scanned.labels


@pytest.mark.parametrize("suffix", [".png", ".bmp"])  # TensorFlow's decoders, and Pillow's
def test_dataset_reads_a_file_whose_name_is_not_utf8(tmp_path, suffix):
    name = os.fsdecode(b"caf\xe9" + suffix.encode())  # as a Latin-1 zip or a Windows share leaves it
    write_image(tmp_path / "a" / name, seed=3)
    scanned = data.scan_images(tmp_path)

    (pixels, _), = data.make_dataset(scanned, batch_size=2, image_size=32)

    expected = np.asarray(Image.open(tmp_path / "a" / name).convert("RGB"), np.float32)
    np.testing.assert_array_equal(pixels[0], expected)


def test_dataset_resizes_only_when_sizes_differ(tmp_path):
    write_image(tmp_path / "a" / "small.png", seed=1, size=(20, 10))
    write_image(tmp_path / "a" / "large.png", seed=2, size=(50, 40))

    (pixels, _), = data.make_dataset(data.scan_images(tmp_path), batch_size=4, image_size=24)

    assert pixels.shape == (2, 24, 24, 3)


def test_dataset_decodes_exif_rotated_files_like_the_app(tmp_path):
    source = np.random.default_rng(0).integers(0, 255, (10, 20, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "a" / "rotated.png"
    path.parent.mkdir()
    Image.fromarray(source).save(path, exif=exif)
    scanned = data.scan_images(tmp_path)

    (pixels, _), = data.make_dataset(scanned, batch_size=1, image_size=8)

    np.testing.assert_array_equal(pixels.numpy()[0], images.load_rgb(path).astype(np.float32))


def test_shuffled_dataset_is_seeded(tmp_path, make_class_folder):
    make_class_folder(tmp_path, {"a": 8, "b": 8})
    scanned = data.scan_images(tmp_path)

    def first_epoch_labels(seed):
        dataset = data.make_dataset(scanned, batch_size=16, image_size=32, shuffle=True, seed=seed)
        return next(iter(dataset))[1].numpy().tolist()

    assert first_epoch_labels(3) == first_epoch_labels(3)
    assert first_epoch_labels(3) != scanned.labels


def epochs_of_paths(dataset: tf.data.Dataset, epochs: int) -> list[list[str]]:
    paths = [path.decode() for path, _, _ in dataset.repeat(epochs).as_numpy_iterator()]
    size = len(paths) // epochs
    return [paths[start:start + size] for start in range(0, len(paths), size)]


def test_shuffled_file_order_is_a_seeded_permutation_that_changes_every_epoch(tmp_path, make_class_folder):
    make_class_folder(tmp_path, {"a": 10, "b": 10})
    scanned = data.scan_images(tmp_path)
    in_file_order = [str(path) for path in scanned.files]

    first, second = epochs_of_paths(data.file_dataset(scanned, shuffle=True, seed=3), 2)

    assert sorted(first) == sorted(second) == sorted(in_file_order)
    assert first != in_file_order and second != first
    assert epochs_of_paths(data.file_dataset(scanned, shuffle=True, seed=3), 2) == [first, second]
    assert epochs_of_paths(data.file_dataset(scanned, shuffle=True, seed=4), 1)[0] != first


def test_uncached_dataset_shuffles_the_file_names_before_decoding(tmp_path, make_class_folder):
    make_class_folder(tmp_path, {"a": 6, "b": 6}, suffix=".png")
    scanned = data.scan_images(tmp_path)

    dataset = data.make_dataset(scanned, batch_size=1, image_size=32, shuffle=True, seed=5, cache_bytes=0)
    decoded = [pixels.numpy()[0] for pixels, _ in dataset.repeat(2)]

    # Decoding keeps the shuffled file names' order: no second shuffle holds decoded images.
    order = [path for epoch in epochs_of_paths(data.file_dataset(scanned, shuffle=True, seed=5), 2) for path in epoch]
    expected = [images.load_rgb(Path(path)).astype(np.float32) for path in order]
    np.testing.assert_array_equal(np.stack(decoded), np.stack(expected))


def test_cached_training_images_are_decoded_once_before_the_first_batch_is_asked_for(tmp_path, make_class_folder):
    """Cached, a training pass's shuffle draws from all the decoded images, so its first batch waited for the whole
    training set to decode with nothing on the screen: CIFAKE's 215,613 training images (two augmented copies of
    each) take 22 s on 2 cores. They are decoded into the cache as the dataset is made (under a progress bar), and
    every pass of every epoch reads that cache: nothing is read again once the files are gone."""
    import shutil

    make_class_folder(tmp_path / "train", {"a": 5, "b": 5}, suffix=".png")
    scanned = data.scan_images(tmp_path / "train")

    one_pass = data.make_dataset(scanned, batch_size=2, image_size=32, shuffle=True, seed=3)
    epochs = data.make_dataset(scanned, batch_size=2, image_size=32, shuffle=True, seed=3, first_epoch=0,
                               drop_remainder=True)  # as training makes it
    shutil.rmtree(tmp_path / "train")

    assert sorted(label for _, labels in one_pass.repeat(2) for label in labels.numpy()) == sorted(scanned.labels * 2)
    two_epochs = [label for _, labels in epochs.take(10) for label in labels.numpy()]
    assert sorted(two_epochs[:10]) == sorted(two_epochs[10:]) == sorted(scanned.labels)


def test_training_dataset_gives_the_input_augmentation_a_new_seed_every_batch_and_epoch(tmp_path, make_class_folder):
    make_class_folder(tmp_path, {"a": 4, "b": 4})
    scanned = data.scan_images(tmp_path)

    def stamp_seed(pixels, seed):  # stands in for the JPEG step: shows the seed each batch got
        # Below 2**24, so float32 holds it exactly; a modulus this large makes a collision of 8 draws negligible.
        return tf.fill(tf.shape(pixels), tf.cast(seed[0] % 16_777_213, tf.float32))

    def seeds(seed):
        dataset = data.make_dataset(scanned, batch_size=2, image_size=32, shuffle=True, seed=seed,
                                    augment=stamp_seed)
        return [int(pixels.numpy()[0, 0, 0, 0]) for pixels, _ in dataset.repeat(2)]

    drawn = seeds(7)
    assert len(set(drawn)) == len(drawn) == 8
    assert seeds(7) == drawn


# --- large JPEGs decode reduced --------------------------------------------------------------


def write_photo(path: Path, size: tuple[int, int], seed: int = 0, **save: object) -> Path:
    """A smooth, noisy JPEG like a photo (pure noise would hide differences between decoders)."""
    rng = np.random.default_rng(seed)
    width, height = size
    coarse = Image.fromarray(rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), np.uint8))
    pixels = np.asarray(coarse.resize(size, Image.BILINEAR), np.int16) + rng.integers(-20, 20, (height, width, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=90, **save)
    return path


@pytest.mark.parametrize(("width", "height", "image_size", "expected"), [
    (2000, 1500, 224, 2),  # 750 >= 448, 375 is not
    (2000, 1500, 64, 8),  # 188 >= 128
    (1200, 900, 100, 4),  # 225 >= 200, 113 is not
    (899, 1200, 100, 4),  # libjpeg rounds up: 225
    (300, 300, 224, 1),
    (2000, 1500, None, 1),
])
def test_jpeg_scale_keeps_the_short_side_at_least_twice_the_image_size(width, height, image_size, expected):
    assert images.jpeg_scale(width, height, image_size) == expected


@pytest.mark.parametrize("save", [{}, {"progressive": True}, {"subsampling": 0}])
def test_large_jpeg_decodes_reduced_with_the_same_pixels_in_training_and_the_app(tmp_path, save):
    from realvsai.inference import decode_upload

    path = write_photo(tmp_path / "a" / "photo.jpg", (1203, 901), **save)
    reduced = data.decode_rgb(tf.constant(str(path)), tf.constant(False), 100).numpy()
    by_pillow = data.decode_rgb(tf.constant(str(path)), tf.constant(True), 100).numpy()

    assert reduced.shape == (226, 301, 3)  # 1/4, rounded up
    np.testing.assert_array_equal(by_pillow, reduced)
    np.testing.assert_array_equal(images.load_rgb(path, image_size=100), reduced)
    np.testing.assert_array_equal(decode_upload(path.read_bytes(), image_size=100)[0], reduced)
    assert data.decode_rgb(tf.constant(str(path)), tf.constant(False)).shape == (901, 1203, 3)


def test_exif_rotated_large_jpeg_decodes_reduced_and_upright(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = write_photo(tmp_path / "a" / "rotated.jpg", (1200, 800), exif=exif)
    scanned = data.scan_images(tmp_path)
    assert scanned.needs_pil == [True]

    pixels = data.decode_rgb(tf.constant(str(path)), tf.constant(True), 100).numpy()

    assert pixels.shape == (300, 200, 3)  # 1/4 and a quarter turn
    np.testing.assert_array_equal(images.load_rgb(path, image_size=100), pixels)


def test_png_decodes_at_full_size_whatever_the_image_size(tmp_path):
    path = write_image(tmp_path / "a" / "large.png", seed=3, size=(900, 700))

    assert data.decode_rgb(tf.constant(str(path)), tf.constant(False), 64).shape == (700, 900, 3)
    assert images.load_rgb(path, image_size=64).shape == (700, 900, 3)


def test_dataset_of_large_jpegs_of_one_size_holds_images_of_the_model_size(tmp_path):
    for index in range(2):
        write_photo(tmp_path / "a" / f"{index}.jpg", (1000, 800), seed=index)
    scanned = data.scan_images(tmp_path)

    (pixels, _), = data.make_dataset(scanned, batch_size=4, image_size=32)
    expected = data.resize_to_square(tf.cast(images.load_rgb(scanned.files[0], image_size=32), tf.float32), 32)

    assert pixels.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(pixels.numpy()[0], expected.numpy(), atol=1e-3)


# --- crops mode ---------------------------------------------------------------------------------


def test_grid_crops_are_evenly_spaced_and_cover_the_image():
    image = tf.reshape(tf.range(70 * 100 * 3, dtype=tf.float32), (70, 100, 3))

    crops = data.grid_crops(image, 32).numpy()

    assert crops.shape == (9, 32, 32, 3)
    positions = [(top, left) for top in (0, 19, 38) for left in (0, 34, 68)]  # first at 0, last at the edge
    for crop, (top, left) in zip(crops, positions):
        np.testing.assert_array_equal(crop, image.numpy()[top:top + 32, left:left + 32])


def test_grid_crops_enlarge_an_image_smaller_than_the_crop():
    crops = data.grid_crops(tf.ones((20, 10, 3)), 32)

    assert crops.shape == (9, 32, 32, 3)


@pytest.mark.parametrize(("size", "crop_size"), [((1, 500), 32), ((500, 1), 32), ((20, 30), 32), ((7, 3), 224),
                                                  ((33, 31), 32), ((96, 64), 32)])
def test_cover_size_is_the_size_the_pipeline_enlarges_an_image_to(size, crop_size):
    width, height = size
    covered = data.cover(tf.zeros((height, width, 3)), crop_size)

    assert images.cover_size(width, height, crop_size) == (covered.shape[1], covered.shape[0])


def test_a_scan_for_crops_skips_and_names_an_image_its_crops_would_enlarge_past_the_pixel_limit(tmp_path, caplog):
    write_image(tmp_path / "a" / "photo.png", seed=1, size=(48, 40))
    strip = write_image(tmp_path / "a" / "strip.png", seed=2, size=(1, 5000))  # 32x160000 once enlarged

    scanned = data.scan_images(tmp_path, max_pixels=100_000, crop_size=32)

    assert [path.name for path in scanned.files] == ["photo.png"]
    ((path, reason),) = scanned.skipped
    assert path == strip and "32x160000" in reason and "limit of 100,000 pixels" in reason
    assert any(str(strip) in record.getMessage() for record in caplog.records if record.levelname == "WARNING")


def test_a_scan_for_a_resize_model_keeps_a_jpeg_it_decodes_reduced_within_the_limit(tmp_path):
    """A 200 MP phone photo (conftest's stand-in) is decoded at 1/8 for a resize model, by TensorFlow as by Pillow:
    the scan counts those pixels. Crops mode and a scan for no model (full decodes) count it whole."""
    phone = write_phone_photo(tmp_path / "a" / "phone.jpg")
    write_image(tmp_path / "b" / "photo.png", seed=2, size=(48, 40))

    scanned = data.scan_images(tmp_path, max_pixels=PHOTO_LIMIT, image_size=32)

    assert scanned.files == [phone, tmp_path / "b" / "photo.png"] and scanned.sizes[0] == (2000, 1500)
    assert not scanned.skipped and scanned.grayscale == [False, False]
    (batch, labels), = data.make_dataset(scanned, batch_size=2, image_size=32)
    assert batch.shape == (2, 32, 32, 3) and list(labels.numpy()) == [0, 1]
    for whole in (data.scan_images(tmp_path, max_pixels=PHOTO_LIMIT, crop_size=32),
                  data.scan_images(tmp_path, max_pixels=PHOTO_LIMIT)):
        ((path, reason),) = whole.skipped
        assert path == phone and "2000x1500 pixels is more than the limit of 1,000,000 pixels" in reason


def test_tensorflows_jpeg_decoder_refuses_whole_what_images_sends_to_pillow():
    """``images.TF_JPEG_MAX_PIXELS`` is TensorFlow's own limit: one pixel more is refused whole (before a pixel is
    decoded: "Image too large" in its log), and decoded at 1/8 of its sides."""
    width = 13378
    height = -(-(images.TF_JPEG_MAX_PIXELS + 1) // width)  # 13377: 536 pixels over
    over = jpeg_header_only(width, height)
    recover = {"channels": 3, "try_recover_truncated": True, "acceptable_fraction": 0.0}  # its data is 16x16's

    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.io.decode_jpeg(over, **recover)
    assert tuple(tf.io.decode_jpeg(over, ratio=8, **recover).shape) == (-(-height // 8), -(-width // 8), 3)


@pytest.mark.parametrize("crops", ["random", "centre", "grid"])
def test_crops_mode_decodes_a_jpeg_too_large_for_tensorflows_decoder_whole(tmp_path, tensorflow_jpeg_limit, crops):
    """A 190 MP photo under a raised --max-pixels was dropped by crops mode's pipeline (training, validation,
    --evaluate, --predict) as undecodable, unnamed: TensorFlow's JPEG decoder refuses 2^29 bytes of pixels
    (conftest's stand-in: its 2000x1500 photo over ``tensorflow_jpeg_limit``). Pillow decodes it, the same pixels."""
    phone = write_phone_photo(tmp_path / "a" / "phone.jpg")
    scanned = data.scan_images(tmp_path, max_pixels=10 * PHOTO_LIMIT, crop_size=32)
    assert scanned.files == [phone]

    batches = list(data.make_dataset(scanned, batch_size=1, image_size=32, shuffle=crops == "random", crops=crops))

    (pixels, _), = batches
    assert pixels.shape == {"random": (1, 32, 32, 3), "centre": (1, 32, 32, 3), "grid": (1, 9, 32, 32, 3)}[crops]
    if crops == "grid":
        whole = images.load_rgb(phone, 10 * PHOTO_LIMIT)
        assert np.array_equal(pixels[0, 0], whole[:32, :32]) and np.array_equal(pixels[0, -1], whole[-32:, -32:])


def test_training_crops_are_native_resolution_crops_of_the_model_size(tmp_path):
    path = write_image(tmp_path / "a" / "large.png", seed=4, size=(48, 40))
    write_image(tmp_path / "a" / "small.png", seed=5, size=(16, 16))
    scanned = data.scan_images(tmp_path)
    dataset = data.make_dataset(scanned, batch_size=4, image_size=32, shuffle=True, seed=1, crops="random")

    (first, _), = dataset
    (second, _), = dataset
    assert first.shape == (2, 32, 32, 3)
    large = images.load_rgb(path).astype(np.float32)
    native = [any(np.array_equal(crop, large[top:top + 32, left:left + 32]) for top in range(9) for left in range(17))
              for batch in (first, second) for crop in batch.numpy()]
    assert sum(native) == 2  # each epoch, the large image's crop is its own pixels, unresized (the small one is not)


def test_dataset_of_large_pngs_of_one_size_holds_images_of_the_model_size(tmp_path, make_class_folder):
    make_class_folder(tmp_path, {"a": 2}, size=(400, 300))
    scanned = data.scan_images(tmp_path)

    (pixels, _), = data.make_dataset(scanned, batch_size=4, image_size=32)
    native = images.load_rgb(scanned.files[0]).astype(np.float32)
    by_the_model = keras.ops.convert_to_numpy(SquareResize(32)(native[None]))[0]  # where they were resized before

    # Not (2, 300, 400, 3): a batch of 12-megapixel photos at their own size took gigabytes.
    assert pixels.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(pixels.numpy()[0], by_the_model, atol=1e-4)


@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
@pytest.mark.parametrize(("size", "image_size", "kept"), [
    ((64, 64), 32, True),  # as uint8 it takes what the 32x32 float32 square takes
    ((65, 64), 32, False),
    ((40, 56), 32, True),
    ((4032, 3024), 224, False),
    ((32, 32), 224, True),  # small images are enlarged by the model, not cached enlarged
])
def test_one_size_is_kept_only_while_it_takes_no_more_memory_than_the_resized_square(size, image_size, kept,
                                                                                      image_format):
    scanned = data.LabelledImages([Path("a/1"), Path("a/2")], [0, 0], ["a"], [size] * 2, [False] * 2,
                                  formats=[image_format] * 2)

    assert data.kept_size(scanned, image_size) == (size if kept else None)


@pytest.mark.slow
def test_the_large_image_benchmark_measures_reduced_and_full_decoding(tmp_path):
    for index in range(4):  # short side 400: at 32 px, decoded at 1/8 (reduced) or whole (full)
        write_image(tmp_path / "photos" / ("a" if index % 2 else "b") / f"{index}.jpg", seed=index, size=(600, 400))
    results = tmp_path / "large_images.json"

    process = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_large_images.py"), "--data",
                              str(tmp_path / "photos"), "--image-sizes", "32", "--batch-size", "2", "--repeats", "1",
                              "--variants", "reduced", "full", "all at once", "--results", str(results)],
                             capture_output=True, text=True, timeout=600)

    assert process.returncode == 0, process.stderr[-2000:]
    measured = json.loads(results.read_text())["sizes"]["32"]
    assert measured["reduced"]["images"] == measured["full"]["images"] == measured["all at once"]["images"] == 4
    assert {"reduced / full", "reduced / all at once"} <= set(measured) and "crops" not in measured
    assert measured["full"]["pipeline_peak_mib"] < measured["full"]["peak_rss_mib"] / 2  # TensorFlow not counted


def test_the_pipeline_decodes_under_the_pixel_limit_the_images_were_scanned_under(tmp_path, monkeypatch):
    write_image(tmp_path / "a" / "gray16.png", seed=1, size=(40, 30))  # 16-bit: decoded by Pillow
    Image.fromarray(np.full((30, 40), 30000, np.uint16)).save(tmp_path / "a" / "gray16.png")
    scanned = data.scan_images(tmp_path, max_pixels=10**10)
    limits = []
    real_load = images.load_rgb
    monkeypatch.setattr(images, "load_rgb", lambda *args, **kwargs: limits.append(kwargs.get("max_pixels"))
                        or real_load(*args, **kwargs))

    list(data.make_dataset(scanned, batch_size=1, image_size=32))

    assert scanned.max_pixels == 10**10 and limits == [10**10]


def scans(sizes_and_formats, max_pixels=200_000_000) -> data.LabelledImages:
    count = len(sizes_and_formats)
    return data.LabelledImages([Path(f"{number}.x") for number in range(count)], [0] * count, ["a", "b"],
                          [size for size, _ in sizes_and_formats], [False] * count,
                          formats=[image_format for _, image_format in sizes_and_formats], max_pixels=max_pixels)


def test_a_folder_of_huge_scans_is_decoded_fewer_at_a_time(monkeypatch):
    """tf.data decoded one image per core at once: 108 MP PNGs took 4.9 GB in --predict on 2 cores (one: 2.9 GB),
    and would take over 20 GB on 16."""
    import tensorflow as tf

    monkeypatch.setattr(data, "default_workers", lambda: 16)
    huge_png = ((12000, 9000), "PNG")
    assert data.decode_parallelism(scans([((640, 480), "PNG")] * 3), 224) == tf.data.AUTOTUNE
    assert data.decode_parallelism(scans([((640, 480), "PNG"), huge_png]), 224) == (
        data.DECODE_PIXEL_BUDGET // (12000 * 9000))
    assert data.decode_parallelism(scans([((120000, 9000), "PNG")], 2 * 10**9), 224) == 1
    # A JPEG decodes reduced for the model's size (1/8 of its sides here): a few at once as ever, but for crops
    # mode, which decodes it whole.
    assert data.decode_parallelism(scans([((12000, 9000), "JPEG")]), 224) == tf.data.AUTOTUNE
    assert data.decode_parallelism(scans([((12000, 9000), "JPEG")]), 224, crops=True) < 16


def test_decoding_fewer_at_a_time_gives_the_same_batches(tmp_path, make_class_folder, monkeypatch):
    make_class_folder(tmp_path / "train", {"a": 5, "b": 4})
    images = data.scan_images(tmp_path / "train")

    def batches():
        return [(pixels.numpy(), labels.numpy()) for pixels, labels in
                data.make_dataset(images, batch_size=4, image_size=16, cache_bytes=0)]

    expected = batches()
    monkeypatch.setattr(data, "DECODE_PIXEL_BUDGET", 1)  # one image at a time
    assert data.decode_parallelism(images, 16) == 1
    for (pixels, labels), (expected_pixels, expected_labels) in zip(batches(), expected, strict=True):
        assert np.array_equal(pixels, expected_pixels) and np.array_equal(labels, expected_labels)


def test_classes_without_images_are_named_in_the_plural(tmp_path, caplog):
    """Two classes of three without an image: "no readable image of classes 'malignant' and 'normal'", and with
    every_class "classes 'malignant' and 'normal' have no readable image", not "class 'malignant', 'normal'"."""
    write_image(tmp_path / "test" / "benign" / "a.png", seed=1)
    names = ["benign", "malignant", "normal"]
    with caplog.at_level("WARNING", logger="realvsai"):
        data.scan_images(tmp_path / "test", names)
    assert "has no readable image of classes 'malignant' and 'normal': counted as classes without images" in caplog.text
    with pytest.raises(UserError, match=r"^classes 'malignant' and 'normal' have no readable image in "):
        data.scan_images(tmp_path / "test", names, every_class=True)


@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_tensorflow_reads_the_images_off_the_gpus_when_another_keras_backend_trains(
        backend, tmp_path, make_class_folder, monkeypatch):
    """Under KERAS_BACKEND=jax, TensorFlow is the input alone (tf.data, the JPEG codec), and on a GPU machine with
    TensorFlow's CUDA build it would take nearly all the GPU's memory at its first op, leaving JAX none: the GPUs are
    hidden from it before. On TensorFlow, its own backend, they are its to train on."""
    make_class_folder(tmp_path, {"a": 2, "b": 2})
    hidden = []
    monkeypatch.setattr(tf.config, "set_visible_devices", lambda devices, kind=None: hidden.append((devices, kind)))
    monkeypatch.setattr(keras.backend, "backend", lambda: backend)

    data.make_dataset(data.scan_images(tmp_path), batch_size=2, image_size=32)

    assert hidden == ([([], "GPU")] if backend == "jax" else [])


@pytest.mark.parametrize("side, threads", [(32, 1), (128, 2)])
def test_the_scan_reads_small_images_in_one_thread_and_large_ones_in_several(side, threads, tmp_path, monkeypatch):
    """A 32 px JPEG's check is Python holding the GIL (about 1 KB to decode): threads only waited on each other (the
    scan of 20,000 CIFAKE images took 1.9 s in one thread, 3.4 s in 2 and 4.6 s in 16, on 2 cores). A larger image
    decodes with the GIL released: threads share its files (two halved the check of real-or-ai-photos)."""
    import threading
    import time

    for index in range(300 if side == 32 else 8):  # noise: a 128 px JPEG of it takes over 4 KB
        write_image(tmp_path / "a" / f"{index}.jpg", seed=index, size=(side, side))
    write_image(tmp_path / "b" / "0.jpg", seed=0, size=(side, side))
    read_by, read_header = set(), images.read_header

    def recorded(*args, **kwargs):
        read_by.add(threading.get_ident())
        time.sleep(0.002)  # so that every thread takes a share
        return read_header(*args, **kwargs)

    monkeypatch.setattr(images, "read_header", recorded)
    monkeypatch.setattr(files, "default_workers", lambda: 2, raising=False)

    assert len(data.scan_images(tmp_path)) == (301 if side == 32 else 9)
    assert len(read_by) == threads


def test_scan_splits_names_a_class_folder_it_may_not_read_not_a_split_stopped_part_way(tmp_path, make_class_folder,
                                                                                       permissions_bind):
    """A class folder of chmod 000 was called "not a finished split": run the split again, which would not help."""
    from realvsai.splitting import split_by_class

    split_by_class(make_class_folder(tmp_path / "raw", {"REAL": 20, "FAKE": 20}), tmp_path / "data")
    locked = tmp_path / "data" / "train" / "REAL"
    locked.chmod(0)
    try:
        with pytest.raises(PermissionError) as denied:
            data.scan_splits(tmp_path / "data")
    finally:
        locked.chmod(0o755)
    assert denied.value.filename == str(locked)
