"""Tests for realvsai.layout: class folders, split folders and --rename pairs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from conftest import write_image

from realvsai.errors import UserError
from realvsai.layout import (
    ManifestRow,
    class_folder_problem,
    find_child_folder,
    find_class_folders,
    find_class_root,
    parse_renames,
    read_manifest,
    read_split_classes,
    write_manifest,
)


def test_find_class_folders_returns_sorted_visible_folders(tmp_path):
    for name in ("REAL", "FAKE", ".ipynb_checkpoints", "__MACOSX_is_visible"):
        (tmp_path / name).mkdir()
    (tmp_path / "readme.txt").write_text("a file is not a class")
    assert find_class_folders(tmp_path) == ["FAKE", "REAL", "__MACOSX_is_visible"]


def test_find_class_folders_leaves_out_the_macosx_folder_of_a_mac_zip(tmp_path):
    """A zip made on a Mac (Finder's Compress) holds __MACOSX/<Class>/._<name> beside the class folders, and unzip,
    Windows' Explorer and most other tools extract it: it was taken for a class of no images."""
    for name in ("REAL", "FAKE", "__MACOSX/REAL"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "__MACOSX" / "REAL" / "._img.png").write_bytes(b"\x00\x05\x16\x07 fork")
    assert find_class_folders(tmp_path) == ["FAKE", "REAL"]


def test_a_manifest_a_windows_editor_saved_with_a_byte_order_mark_and_crlf_reads_as_written(tmp_path):
    """Training names manifest.csv to edit where its files were removed by hand; saved by Excel ("CSV UTF-8") or an
    older Notepad, it was refused as "not a manifest written by this project (no column 'split')"."""
    rows = [ManifestRow("train", "REAL", "train/REAL/a.png", "0" * 64, "/raw/REAL/a.png", "raw")]
    manifest = tmp_path / "manifest.csv"
    write_manifest(manifest, rows)
    manifest.write_bytes(b"\xef\xbb\xbf" + manifest.read_bytes().replace(b"\n", b"\r\n"))
    assert read_manifest(manifest) == rows


def test_find_class_folders_without_subfolders_is_a_user_error(tmp_path):
    write_image(tmp_path / "loose.png", seed=0)
    with pytest.raises(UserError, match="no class folders"):
        find_class_folders(tmp_path)


def test_find_class_folders_of_a_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="is not a folder"):
        find_class_folders(tmp_path / "missing")


@pytest.mark.parametrize(("files", "root"), [
    (["Top/REAL/a.png", "Top/FAKE/b.png"], "Top"),
    (["Top/REAL/a.png", "Top/FAKE/b.png", "README.txt", ".DS_Store"], "Top"),  # no image beside it
    (["REAL/a.png"], "."),  # one class
    (["Top/a.png", "Top/REAL/b.png"], "."),  # one class with a sub-folder
    # An image beside it, a cover or a sample: a file beside the dataset (Top as the one class mixed REAL and FAKE)
    (["Top/REAL/a.png", "Top/FAKE/b.png", "loose.png"], "Top"),
    (["Top/REAL/a.png", "Top/FAKE/b.png", "cover.png", "README.txt"], "Top"),
])
def test_find_class_root_looks_inside_only_a_lone_folder_of_class_folders(tmp_path, files, root):
    for index, name in enumerate(files):
        if name.endswith(".png"):
            write_image(tmp_path / name, seed=index)
        else:
            (tmp_path / name).write_text("not an image")
    assert find_class_root(tmp_path) == tmp_path / root


@pytest.mark.parametrize("on_disk", ["train", "Train", "TRAIN"])
def test_find_child_folder_matches_any_letter_case(tmp_path, on_disk):
    (tmp_path / on_disk).mkdir()
    assert find_child_folder(tmp_path, "train") == tmp_path / on_disk


def test_find_child_folder_missing_is_none(tmp_path):
    (tmp_path / "test").mkdir()
    (tmp_path / "train.txt").write_text("a file, not a folder")
    assert find_child_folder(tmp_path, "train") is None


def test_find_child_folder_refuses_two_folders_differing_by_case(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "Train").mkdir()
    if len(list(tmp_path.iterdir())) < 2:
        pytest.skip("case-insensitive file system")
    with pytest.raises(UserError, match="different letter cases") as refused:
        find_child_folder(tmp_path, "TRAIN")
    # "Keep one" invited deleting a folder of other images: a zip made where the two are one folder (Windows, macOS)
    assert "Keep one" not in str(refused.value)
    assert f"move what {tmp_path / 'train'} holds into {tmp_path / 'Train'}" in str(refused.value)


def test_parse_renames_builds_the_mapping():
    mapping = parse_renames(["RealArt=Real", " GeneratedArt = Fake "])
    assert mapping == {"RealArt": "Real", "GeneratedArt": "Fake"}


@pytest.mark.parametrize("pair", ["RealArt", "=Real", "RealArt="])
def test_parse_renames_rejects_malformed_pairs(pair):
    with pytest.raises(UserError, match="is not OLD=NEW"):
        parse_renames([pair])


@pytest.mark.parametrize("pair", ["RealArt=a/b", "RealArt=a\\b", "RealArt=..", "RealArt=.", "RealArt=.hidden"])
def test_parse_renames_says_a_new_name_that_is_no_folder_name_is_not_a_usable_class_name(pair):
    """The pair is OLD=NEW all right: what is wrong is NEW, and the line says so."""
    with pytest.raises(UserError, match="is not a usable class name"):
        parse_renames([pair])


def test_a_rename_that_clashes_in_letter_case_with_another_class_names_the_rename(tmp_path):
    """FAKE=Real beside REAL: the folders differ in more than letter case; the new name is what clashes."""
    from realvsai.layout import rename_classes

    with pytest.raises(UserError) as error:
        rename_classes(["FAKE", "REAL"], {"FAKE": "Real"}, tmp_path)
    message = str(error.value)
    assert "--rename" in message and "'Real'" in message and "'REAL'" in message
    assert "Move their images into one folder" not in message


def test_name_key_is_one_for_names_that_differ_only_in_letter_case_or_accent_encoding():
    """One folder on macOS (and, for letter case, Windows): "café" typed (NFC), "cafe" + a combining accent (NFD,
    as macOS writes names), and any letter case of either."""
    from realvsai.layout import name_key

    assert len({name_key(name) for name in ("caf\u00e9", "cafe\u0301", "CAF\u00c9", "CAFE\u0301")}) == 1
    assert name_key("TRAIN") == name_key("train") and name_key("cafe") != name_key("caf\u00e9")


def test_class_folders_that_differ_only_in_accent_encoding_are_refused_as_letter_case_twins_are(tmp_path):
    """"café" beside "cafe" + a combining accent print alike and are one folder on macOS: they were two classes."""
    from realvsai.layout import rename_classes

    with pytest.raises(UserError, match="differ only in letter case or accent encoding") as error:
        rename_classes(["B", "cafe\u0301", "caf\u00e9"], {}, tmp_path)
    assert "Move their images into one folder" in str(error.value)


def test_a_rename_to_a_name_that_differs_only_in_accent_encoding_from_another_class_names_the_rename(tmp_path):
    from realvsai.layout import rename_classes

    with pytest.raises(UserError, match="differ only in letter case or accent encoding") as error:
        rename_classes(["A", "caf\u00e9"], {"A": "cafe\u0301"}, tmp_path)
    assert "--rename A=cafe\u0301" in str(error.value)


def test_parse_renames_rejects_the_same_old_name_twice():
    with pytest.raises(UserError, match="twice"):
        parse_renames(["RealArt=Real", "RealArt=Fake"])


@pytest.mark.parametrize("pair", ["RealArt=..", "RealArt=."])
def test_parse_renames_rejects_dot_names(pair):
    with pytest.raises(UserError):
        parse_renames([pair])


def test_read_split_classes_reads_the_splits_present(tmp_path, make_class_folder):
    make_class_folder(tmp_path / "train", {"REAL": 1, "FAKE": 1})
    make_class_folder(tmp_path / "test", {"REAL": 1, "FAKE": 1})
    assert read_split_classes(tmp_path) == {"train": ["FAKE", "REAL"], "test": ["FAKE", "REAL"]}


def test_read_split_classes_without_splits_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"DataSplitD1\.py"):
        read_split_classes(tmp_path)


@pytest.mark.skipif(sys.platform != "linux", reason="a folder name that is not UTF-8 needs a POSIX file system")
def test_a_class_folder_whose_name_is_not_utf8_is_refused_in_one_line_that_says_to_rename_it(tmp_path):
    """Training on a class folder named in Latin-1 ended with a UnicodeEncodeError writing model.json: a class name
    is text there, in the app and in every report."""
    (tmp_path / "REAL").mkdir()
    os.mkdir(os.fsencode(tmp_path) + b"/FAK\xc9")

    with pytest.raises(UserError) as caught:
        find_class_folders(tmp_path)

    message = str(caught.value)
    assert "\n" not in message and "FAK\\xc9" in message and "not UTF-8" in message and "rename" in message.lower()


def test_a_new_folder_in_the_working_folder_is_no_class_folder_for_a_stray_image_there(tmp_path, monkeypatch):
    """A screenshot left in the folder a user works in made ``--out evals`` (or a splitter's default ``--out data``,
    where data/ is not made yet) "lie inside a class folder of images"; a class folder given by its path still is."""
    write_image(tmp_path / "screenshot.png", seed=1)
    monkeypatch.chdir(tmp_path)

    assert class_folder_problem(Path("evals"), "--out", "its results") is None
    assert class_folder_problem(tmp_path / "evals", "--out", "its results") is None
    write_image(tmp_path / "flat" / "REAL" / "a.png", seed=2)
    assert "lies inside a class folder" in class_folder_problem(Path("flat/REAL/evals"), "--out", "its results")
