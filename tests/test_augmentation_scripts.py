"""DataAugmentation.py, MoveAugmentedImages.py and realvsai.moving: counts, sizes, seeds, refusals, moves."""

from __future__ import annotations

import csv
import hashlib
import importlib
import io
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    PHOTO_LIMIT,
    REPO,
    assert_same_copies,
    follow_deleter_hint,
    run_script,
    sha256,
    snapshot,
    watch_hashing,
    write_image,
    write_phone_photo,
)
from PIL import ExifTags, Image
from test_cli import drop_a_ctrl_c

from realvsai import moving
from realvsai.errors import UserError

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
DataAugmentation = importlib.import_module("DataAugmentation")
MoveAugmentedImages = importlib.import_module("MoveAugmentedImages")

CLASSES = {"FAKE": 3, "REAL": 3}


@pytest.fixture(autouse=True)
def keep_logging_open(monkeypatch):
    """cli.run_main calls logging.shutdown() on exit 1, which in a process that lives on (pytest) closes
    handlers it does not own: absl's, once TensorFlow is loaded, closes a stream pytest still writes
    to, and the session dies with "lost sys.stderr". A real script exits right after, so skip it here."""
    monkeypatch.setattr(logging, "shutdown", lambda *args, **kwargs: None)


@pytest.fixture
def data(tmp_path, make_class_folder) -> Path:
    """``data/train/{FAKE,REAL}`` with three 32 px images each."""
    make_class_folder(tmp_path / "data" / "train", CLASSES)
    return tmp_path / "data"


def augment(data: Path, *args: str) -> int:
    return DataAugmentation.main(["--data", str(data), "--copies", "2", "--seed", "1", "--quiet", *args])


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def digests(folder: Path) -> list[str]:
    """The sha256 of every file under ``folder`` but augmented_train's records of its copies."""
    return sorted(hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.rglob("*")
                  if path.is_file() and path.name not in moving.RECORD_NAMES)


# DataAugmentation.py


def test_augmentation_writes_the_copies_of_every_image_of_every_class(data):
    assert augment(data) == 0
    for class_name, count in CLASSES.items():
        names = sorted(path.name for path in (data / "augmented_train" / class_name).iterdir())
        assert names == sorted(f"aug_img_{index:03d}_{k}.jpg" for index in range(count) for k in range(2))


def test_copies_keep_each_image_native_size(tmp_path):
    data = tmp_path / "data"
    write_image(data / "train" / "REAL" / "wide.png", seed=1, size=(40, 24))
    write_image(data / "train" / "REAL" / "square.jpg", seed=2, size=(32, 32))
    assert augment(data) == 0
    sizes = {path.name: Image.open(path).size for path in (data / "augmented_train" / "REAL").iterdir()}
    assert sizes == {"aug_wide_0.jpg": (40, 24), "aug_wide_1.jpg": (40, 24),
                     "aug_square_0.jpg": (32, 32), "aug_square_1.jpg": (32, 32)}


def test_size_option_resizes_every_copy(data):
    write_image(data / "train" / "REAL" / "wide.png", seed=9, size=(40, 24))
    assert augment(data, "--size", "16") == 0
    copies = list((data / "augmented_train").rglob("*.jpg"))
    assert len(copies) == 14
    for path in copies:
        with Image.open(path) as image:
            image.load()  # decodes completely
            assert image.size == (16, 16)


def test_size_option_takes_the_centre_square_as_the_model_does_rather_than_squashing(tmp_path):
    """The model sees a wide image's centre square; a --size copy squashed the whole width into N x N, so the
    copies showed training another geometry (and the borders) than the originals and the app ever do."""
    data = tmp_path / "data"
    pixels = np.zeros((32, 64, 3), np.uint8)
    pixels[:, :, 2] = 255  # a blue centre square between red quarters
    pixels[:, :16] = pixels[:, 48:] = (255, 0, 0)
    (data / "train" / "REAL").mkdir(parents=True)
    Image.fromarray(pixels).save(data / "train" / "REAL" / "wide.png")

    assert augment(data, "--size", "16", "--preset", "detector") == 0

    for path in (data / "augmented_train" / "REAL").glob("*.jpg"):
        copy = np.asarray(Image.open(path).convert("RGB")).astype(int)
        assert copy.shape == (16, 16, 3) and copy[..., 0].max() < 64, path.name  # no red: the borders are cut


def test_same_seed_writes_byte_identical_files_and_another_seed_does_not(data, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(data, twin)
    other = tmp_path / "other"
    shutil.copytree(data, other)
    assert augment(data) == 0
    assert augment(twin, "--batch-size", "64") == 0
    assert DataAugmentation.main(["--data", str(other), "--copies", "2", "--seed", "2", "--quiet"]) == 0
    first, second, third = (tree(folder / "augmented_train") for folder in (data, twin, other))
    for files in (first, second, third):
        del files[moving.SETTINGS_NAME]  # each records its own run's flags
    assert first == second
    assert first.keys() == third.keys()
    assert all(first[name] != third[name] for name in first)


def test_presets_write_different_copies(data, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(data, twin)
    assert augment(data, "--preset", "classic") == 0
    assert augment(twin, "--preset", "detector") == 0
    classic, detector = tree(data / "augmented_train"), tree(twin / "augmented_train")
    assert classic.keys() == detector.keys()
    assert classic != detector


def test_max_pixels_is_the_decoder_s_limit_too(data, monkeypatch):
    """A 121 MP BMP under --max-pixels 130000000 passed the plan, then Pillow's decoder refused it at the default
    limit, and it was reported as "not a decodable image"."""
    from realvsai import offline_augmentation

    limits, decode = [], offline_augmentation.decode_rgb

    def spy(*args, **kwargs):
        limits.append(kwargs.get("max_pixels"))
        return decode(*args, **kwargs)

    monkeypatch.setattr(offline_augmentation, "decode_rgb", spy)
    assert augment(data, "--max-pixels", "130000000") == 0
    assert limits and set(limits) == {130_000_000}


def test_rerun_does_not_multiply_or_change_the_copies(data):
    assert augment(data) == 0
    before = tree(data / "augmented_train")
    assert augment(data) == 0
    assert tree(data / "augmented_train") == before


def test_rerun_reports_the_copies_already_there(data, capsys):
    assert augment(data) == 0
    capsys.readouterr()
    assert augment(data) == 0
    out = capsys.readouterr().out
    assert "Wrote 0 copies" in out
    assert "12 already made (skipped)" in out


def test_interrupted_run_is_completed_with_the_same_bytes_and_its_temporary_files_removed(data, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(data, twin)
    assert augment(data) == 0
    assert augment(twin) == 0
    lost = sorted((twin / "augmented_train").rglob("*.jpg"))[::3]
    for path in lost:
        path.unlink()
    # All a kill in the middle of files.write_new can leave: its hidden temporary file, cut short.
    (lost[0].parent / f".{lost[0].name}.12345.tmp").write_bytes(b"\xff\xd8 half a jpeg")
    assert augment(twin) == 0
    assert tree(twin / "augmented_train") == tree(data / "augmented_train")


def test_a_rerun_keeps_a_users_hidden_file_named_like_a_copys_temporary(data):
    """Any hidden .aug_*.tmp went as an interrupted write's; only a name files.temporary_of reads as one goes now."""
    assert augment(data) == 0
    own = data / "augmented_train" / "REAL" / ".aug_notes.tmp"
    own.write_text("mine")
    assert augment(data) == 0
    assert own.read_text() == "mine"


@pytest.mark.parametrize(("quality", "usable"), [(1, True), (100, True), (0, False), (101, False)])
def test_the_flag_and_the_settings_record_take_the_same_jpeg_qualities(quality, usable):
    """DataAugmentation.py's --jpeg-quality and moving.COPY_SETTINGS each wrote the range 1 to 100."""
    from argparse import ArgumentTypeError

    words, check = moving.COPY_SETTINGS["jpeg_quality"]
    assert check(quality) == usable and words == "a whole number from 1 to 100"
    if usable:
        assert DataAugmentation.jpeg_quality(str(quality)) == quality
    else:
        with pytest.raises(ArgumentTypeError, match=f"{quality} is not a JPEG quality between 1 and 100"):
            DataAugmentation.jpeg_quality(str(quality))


@pytest.mark.parametrize("text", ["nan", "", "1e3", "90.5"])
def test_a_jpeg_quality_that_is_no_whole_number_is_refused_with_the_range(text):
    """argparse said "invalid jpeg_quality value: 'nan'", with no range, where out-of-range numbers got it."""
    from argparse import ArgumentTypeError

    with pytest.raises(ArgumentTypeError) as refused:
        DataAugmentation.jpeg_quality(text)
    assert str(refused.value) == f"{text!r} is not a JPEG quality: give a whole number between 1 and 100"


def test_rerun_with_other_settings_is_refused_before_anything_is_written(data):
    assert augment(data) == 0
    for path in sorted((data / "augmented_train").rglob("*.jpg"))[::3]:  # an interrupted run's copies
        path.unlink()
    before = tree(data / "augmented_train")
    assert augment(data, "--preset", "detector") == 1
    assert tree(data / "augmented_train") == before


def test_another_batch_size_completes_the_copies_it_does_not_change(data, tmp_path):
    """--batch-size was recorded as a setting the copies depend on, and a run with another was refused; each copy is
    drawn from its own seed now, so it completes an interrupted run's copies as a fresh run would make them."""
    fresh = tmp_path / "fresh"
    shutil.copytree(data, fresh)
    assert augment(fresh) == 0
    assert augment(data) == 0
    for path in sorted((data / "augmented_train").rglob("*.jpg"))[::3]:  # an interrupted run's copies
        path.unlink()
    assert augment(data, "--batch-size", "3") == 0
    made, expected = (tree(folder / "augmented_train") for folder in (data, fresh))
    assert made.keys() == expected.keys()
    assert_same_copies({name: content for name, content in made.items() if name.endswith(".jpg")},
                       {name: content for name, content in expected.items() if name.endswith(".jpg")})
    assert "batch_size" not in json.loads((data / "augmented_train" / moving.SETTINGS_NAME).read_text())


def test_refusal_names_the_recorded_and_the_given_settings_in_one_line(data, capsys):
    assert augment(data) == 0
    capsys.readouterr()
    assert augment(data, "--seed", "2", "--size", "8") == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ")
    assert "made with --seed 1 --size native, not --seed 2 --size 8" in line
    assert follow_deleter_hint(line) == 0 and not (data / "augmented_train").exists()  # outside data/ too
    assert augment(data, "--seed", "2", "--size", "8") == 0


def ctrl_c_after_batches(monkeypatch, count: int) -> None:
    """A Ctrl-C once the writers have written ``count`` batches of copies: Python raises it in the main thread,
    whose writer threads finish the batches they hold, so it falls between batches."""
    from realvsai import offline_augmentation

    write_new_files, batches = offline_augmentation.write_new_files, []

    def write_then_stop(files):
        if len(batches) == count:
            raise KeyboardInterrupt
        batches.append(files)
        return write_new_files(files)

    monkeypatch.setattr(offline_augmentation, "write_new_files", write_then_stop)


def test_a_ctrl_c_while_the_copies_sources_are_recorded_waits_for_the_record(data, monkeypatch, capsys):
    """A Ctrl-C that landed while sources.csv was written (every copy made, a second of hashing the sources) lost
    the whole record: the same command then made every copy again to compare it, and the move refused them all."""
    import signal

    record = DataAugmentation.record_copy_sources

    def ctrl_c_as_it_records(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)
        return record(*args, **kwargs)

    monkeypatch.setattr(DataAugmentation, "record_copy_sources", ctrl_c_as_it_records)
    assert augment(data) == 1
    assert "interrupted" in capsys.readouterr().err

    copies = sorted((data / "augmented_train").rglob("aug_*.jpg"))
    with open(data / "augmented_train" / "sources.csv", newline="") as stream:
        assert len(list(csv.DictReader(stream))) == len(copies) > 0


def test_copies_of_a_run_interrupted_after_its_first_copies_are_not_mixed_with_other_settings(data, monkeypatch):
    with monkeypatch.context() as patched:
        ctrl_c_after_batches(patched, 1)
        assert augment(data, "--batch-size", "1") == 1
    assert len(list((data / "augmented_train").rglob("aug_*.jpg"))) == 2  # one image's two copies
    assert augment(data, "--seed", "2") == 1


def test_a_ctrl_c_dropped_in_the_first_batch_stops_the_augmentation_there(data, monkeypatch, capsys):
    """It was noticed only once every copy was written (a Ctrl-C's handler often runs in JAX's garbage-collection
    callback, which Keras registers on every backend, and is dropped there)."""
    from realvsai import offline_augmentation

    real_augmenter, batches = offline_augmentation._augmenter, []

    def augmenter(*args):
        augment_batch = real_augmenter(*args)

        def dropped_in_the_first(images, *args):
            batches.append(len(images))
            if len(batches) == 1:
                drop_a_ctrl_c()
            time.sleep(0.05)  # a batch of large images takes longer
            return augment_batch(images, *args)

        return dropped_in_the_first

    monkeypatch.setattr(offline_augmentation, "_augmenter", augmenter)
    assert augment(data, "--batch-size", "1") == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: interrupted. ")
    assert len(batches) <= 3, f"went on for {len(batches)} of 6 batches"  # the next, but for a loaded machine


def test_a_ctrl_c_writes_only_the_batches_the_writer_threads_hold_not_those_waiting_for_them(data, monkeypatch):
    """The batches queued for the writer threads (up to 2 * WRITERS + 1) were all encoded and written after a Ctrl-C:
    on a 72,000-image train split, 500 copies and seconds after it. The writers finish the batch each holds; the
    others are dropped, and the same command makes them."""
    import signal
    import threading

    from realvsai import offline_augmentation

    real_augmenter, write_new_files = offline_augmentation._augmenter, offline_augmentation.write_new_files
    signalled, written = threading.Event(), []

    def augmenter(*args):
        augment_batch = real_augmenter(*args)
        calls = []

        def ctrl_c_at_the_fifth(images, *args):
            calls.append(len(images))
            if len(calls) == 5:  # four batches handed to the two writers, which wait for the Ctrl-C
                signalled.set()
                signal.raise_signal(signal.SIGINT)
            return augment_batch(images, *args)

        return ctrl_c_at_the_fifth

    def write_after_the_ctrl_c(files):
        signalled.wait(30)
        time.sleep(0.5)  # while the main thread's KeyboardInterrupt leaves the loop
        written.extend(files)
        return write_new_files(files)

    monkeypatch.setattr(offline_augmentation, "_augmenter", augmenter)
    monkeypatch.setattr(offline_augmentation, "write_new_files", write_after_the_ctrl_c)
    assert augment(data, "--batch-size", "1") == 1
    assert len(written) == offline_augmentation.WRITERS * 2  # a batch of one image's two copies per writer
    copies = sorted((data / "augmented_train").rglob("aug_*.jpg"))
    with open(data / "augmented_train" / "sources.csv", newline="") as stream:
        assert len(list(csv.DictReader(stream))) == len(copies) == len(written)
    monkeypatch.undo()
    assert augment(data) == 0
    assert len(list((data / "augmented_train").rglob("aug_*.jpg"))) == 12


def test_rerun_with_fewer_copies_is_refused(data):
    """It would write nothing, and the move would take every copy there, not the fewer asked for."""
    assert augment(data) == 0
    assert augment(data, "--copies", "1") == 1


def test_folder_made_before_settings_were_recorded_is_completed(data, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(data, twin)
    assert augment(data) == 0
    assert augment(twin) == 0
    (twin / "augmented_train" / moving.SETTINGS_NAME).unlink()
    for path in sorted((twin / "augmented_train").rglob("*.jpg"))[::3]:
        path.unlink()
    assert augment(twin) == 0
    assert tree(twin / "augmented_train") == tree(data / "augmented_train")


def test_a_run_that_finds_unrecorded_copies_in_its_way_records_no_settings_for_them(data, capsys):
    """Copies made before settings were recorded, met by a run with another --seed: it writes nothing, and its
    settings must not become theirs (the right --seed would then be refused)."""
    assert augment(data) == 0
    for name in moving.RECORD_NAMES:
        (data / "augmented_train" / name).unlink()
    assert augment(data, "--seed", "2") == 1
    assert not (data / "augmented_train" / moving.SETTINGS_NAME).exists()
    capsys.readouterr()
    assert augment(data) == 0  # their own --seed 1 completes them
    assert "Wrote 0 copies" in capsys.readouterr().out
    assert json.loads((data / "augmented_train" / moving.SETTINGS_NAME).read_text())["seed"] == 1


def test_copies_written_before_ctrl_c_are_recorded(data, monkeypatch):
    ctrl_c_after_batches(monkeypatch, 2)
    assert augment(data, "--batch-size", "1") == 1
    written = sorted(f"{path.parent.name}/{path.name}" for path in (data / "augmented_train").rglob("aug_*.jpg"))
    assert len(written) >= 3
    assert sorted(moving.read_copy_sources(data / "augmented_train")) == written


def test_a_size_over_max_pixels_is_bad_usage_naming_both_flags(data, capsys):
    with pytest.raises(SystemExit) as exit_info:
        augment(data, "--size", "40", "--max-pixels", "1500")  # the 32 px sources pass, 40 x 40 copies do not
    assert exit_info.value.code == 2
    [line] = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert "--size 40" in line and "--max-pixels" in line
    assert not (data / "augmented_train").exists()



def test_a_max_pixels_too_large_for_tensorflow_is_bad_usage(data, capsys):
    """--max-pixels 99999999999999999999999 ended in an OverflowError traceback from TensorFlow, which takes the
    limit as an int64, once augmented_train/ had been made."""
    with pytest.raises(SystemExit) as exit_info:
        augment(data, "--max-pixels", "99999999999999999999999")
    assert exit_info.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "argument --max-pixels: 99999999999999999999999 is out of range" in line
    assert not (data / "augmented_train").exists()

def test_files_in_train_that_are_not_images_read_here_are_counted_in_one_line(data, capsys):
    (data / "train" / "REAL" / "notes.txt").write_text("my notes\n")
    Image.new("P", (8, 8)).save(data / "train" / "REAL" / "palette.gif")
    (data / "train" / "REAL" / ".DS_Store").write_bytes(b"\0")  # hidden: left out without a word
    assert augment(data) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "not images" in line]
    assert len(lines) == 1
    assert "2 files in train are not images this script reads" in lines[0] and "skipped" in lines[0]
    assert str(data / "train" / "REAL" / "notes.txt") in lines[0] or "palette.gif" in lines[0]


def test_segmentation_masks_beside_their_images_are_not_augmented(data, capsys):
    """A mask's copy, aug_benign (1)_mask_0.jpg, no longer sits beside its image's name: training took it for an
    image of its class."""
    write_image(data / "train" / "REAL" / "img_000_mask.png", seed=9)
    assert augment(data) == 0
    err = capsys.readouterr().err
    assert "1 segmentation mask in train left out" in err and "not an image this script reads" not in err
    names = sorted(path.name for path in (data / "augmented_train" / "REAL").iterdir())
    assert names == sorted(f"aug_img_{index:03d}_{k}.jpg" for index in range(CLASSES["REAL"]) for k in range(2))


def test_a_users_file_under_a_copys_name_is_never_replaced(data):
    folder = data / "augmented_train" / "REAL"
    picture = write_image(folder / "aug_img_000_0.jpg", seed=7, fmt="PNG")  # a PNG named .jpg: no JPEG end marker
    note = folder / "aug_img_001_1.jpg"
    note.write_text("my notes\n")
    kept = {picture: picture.read_bytes(), note: note.read_bytes()}
    augment(data)
    assert {path: path.read_bytes() for path in kept} == kept


def test_a_users_file_in_the_way_is_named_and_fails_the_run_after_the_other_copies(data, capsys):
    note = data / "augmented_train" / "REAL" / "aug_img_001_1.jpg"
    note.parent.mkdir(parents=True)
    note.write_text("my notes\n")
    assert augment(data) == 1
    err = capsys.readouterr().err
    assert str(note) in err and "kept" in err
    assert err.strip().splitlines()[-1].startswith("error: ")
    assert len(list((data / "augmented_train").rglob("aug_*.jpg"))) == 12  # the 11 copies, and the note


def test_another_jpeg_under_a_copys_name_is_kept_named_and_not_recorded_as_that_copy(data, capsys):
    other = write_image(data / "augmented_train" / "REAL" / "aug_img_000_0.jpg", seed=7)  # complete, but no copy
    before = other.read_bytes()
    assert augment(data) == 1
    err = capsys.readouterr().err
    assert str(other) in err and "kept" in err
    assert err.strip().splitlines()[-1].startswith("error: ")
    assert other.read_bytes() == before
    assert "REAL/aug_img_000_0.jpg" not in moving.read_copy_sources(data / "augmented_train")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX's")
def test_a_named_pipe_under_a_copys_name_is_kept_named_and_never_read(data):
    """Reading a pipe waits for a writer that never comes: the run hung there, at 0 % CPU, without a word."""
    pipe = data / "augmented_train" / "REAL" / "aug_img_000_0.jpg"
    pipe.parent.mkdir(parents=True)
    os.mkfifo(pipe)
    result = run_script("DataAugmentation.py", "--data", data, "--copies", "2", "--quiet", timeout=90)
    assert result.returncode == 1
    assert f"kept {pipe}" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert len(list((data / "augmented_train").rglob("aug_*.jpg"))) == 12  # the 11 copies, and the pipe


def test_an_augmented_train_that_leads_into_validation_through_a_symlink_is_refused(data, make_class_folder, capsys):
    """The copies of train's images were written into validation, exit 0: the best epoch and the decision threshold
    then came from images the model had trained on."""
    make_class_folder(data / "validation", CLASSES, seed=5)
    (data / "augmented_train").symlink_to(data / "validation", target_is_directory=True)
    before = snapshot(data / "validation")
    assert augment(data) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"error: {data / 'augmented_train'} leads to {data / 'validation'}"), line
    assert snapshot(data / "validation") == before


def test_a_recorded_copy_replaced_by_another_jpeg_is_kept_named_and_fails_the_run(data, capsys):
    assert augment(data) == 0
    copy = data / "augmented_train" / "REAL" / "aug_img_000_0.jpg"
    write_image(copy, seed=7)
    before = copy.read_bytes()
    capsys.readouterr()
    assert augment(data) == 1
    assert str(copy) in capsys.readouterr().err
    assert copy.read_bytes() == before


def test_copies_written_but_not_recorded_before_a_kill_count_as_made(data, tmp_path, capsys):
    """A kill after the last copies were linked into place, before sources.csv got their rows."""
    twin = tmp_path / "twin"
    shutil.copytree(data, twin)
    assert augment(data) == 0
    assert augment(twin) == 0
    (twin / "augmented_train" / moving.SOURCES_NAME).unlink()
    sorted((twin / "augmented_train").rglob("*.jpg"))[0].unlink()
    capsys.readouterr()
    assert augment(twin) == 0
    assert "Wrote 1 copy " in capsys.readouterr().out
    assert tree(twin / "augmented_train") == tree(data / "augmented_train")  # no hidden file left either


def test_copies_moved_into_train_are_neither_remade_nor_augmented_again(data):
    assert augment(data) == 0
    assert MoveAugmentedImages.main(["--data", str(data), "--quiet"]) == 0
    train_before = tree(data / "train")
    assert augment(data) == 0
    assert tree(data / "train") == train_before
    assert not list(data.glob("augmented_train/*/*"))


def test_planning_reads_the_earlier_copies_under_a_progress_bar(data, tmp_path, monkeypatch):
    """Planning tells each earlier copy by its bytes: those in augmented_train by sources.csv, those moved into train
    by augmented-copies.csv. After CIFAKE's copies were moved, 13 s of reading with nothing on the screen."""
    assert augment(data) == 0
    moved = shutil.copytree(data, tmp_path / "moved")
    assert MoveAugmentedImages.main(["--data", str(moved), "--quiet"]) == 0
    watch = watch_hashing(monkeypatch, moving)

    unmoved_plan, moved_plan = moving.plan_copies(data, copies=2), moving.plan_copies(moved, copies=2)

    assert [target for image in unmoved_plan.images for target in image.targets] == [None] * 12  # made already
    assert moved_plan.earlier_copies == 12
    assert watch.hashed_outside == [] and watch.bars == [("checking earlier copies", 12)] * 2


@pytest.mark.parametrize("moved", [False, True], ids=["copies_not_moved", "copies_moved"])
def test_a_run_with_every_copy_made_already_ends_with_the_step_left_to_do(data, capsys, moved):
    """Run again once its copies were made, it ended with no next step: the move where the copies still wait in
    augmented_train, training once they were moved into train."""
    assert augment(data) == 0
    if moved:
        assert MoveAugmentedImages.main(["--data", str(data), "--quiet"]) == 0
    capsys.readouterr()

    assert augment(data) == 0
    *_, wrote, last = capsys.readouterr().out.splitlines()
    assert last == (f"Next: python ModelTraining.py --data {data}" if moved else
                    f"Next: python MoveAugmentedImages.py --data {data}")
    # Moved, the copies are in train, and augmented_train is gone: the summary said "to DATA/augmented_train".
    assert ("12 already made and moved into train (skipped)" if moved else
            f"to {data / 'augmented_train'} in ") in wrote
    assert ("augmented_train" in wrote) is not moved


def test_the_move_ends_with_the_training_command(data, capsys):
    assert augment(data) == 0
    capsys.readouterr()
    assert MoveAugmentedImages.main(["--data", str(data), "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"Next: python ModelTraining.py --data {data}"


def test_after_the_move_a_run_with_other_settings_is_refused_as_before_it(data, capsys):
    """The copies in train keep their settings' record: new copies beside them are made the same way."""
    assert augment(data) == 0
    assert MoveAugmentedImages.main(["--data", str(data), "--quiet"]) == 0
    train_before = tree(data / "train")
    capsys.readouterr()
    assert augment(data, "--preset", "detector") == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "--preset classic, not --preset detector" in line and "train" in line
    assert tree(data / "train") == train_before and not list(data.glob("augmented_train/*/*"))
    assert augment(data, "--copies", "3") == 0  # a higher --copies adds the missing copies, as before the move
    assert len(list(data.glob("augmented_train/*/aug_*.jpg"))) == 6


def test_a_training_image_named_like_a_copy_is_augmented_where_the_record_lists_the_copies(data, capsys):
    assert augment(data) == 0
    assert MoveAugmentedImages.main(["--data", str(data), "--quiet"]) == 0
    write_image(data / "train" / "REAL" / "aug_holiday.jpg", seed=11)  # a real photo, not in augmented-copies.csv
    capsys.readouterr()
    assert augment(data) == 0
    assert sorted(path.name for path in (data / "augmented_train" / "REAL").iterdir()) == [
        "aug_aug_holiday_0.jpg", "aug_aug_holiday_1.jpg"]
    assert "12 earlier copies (aug_*) in train not augmented" in capsys.readouterr().out


def test_the_advice_to_delete_moved_copies_is_a_command_that_spares_training_images(data, capsys):
    assert augment(data) == 0
    assert MoveAugmentedImages.main(["--data", str(data), "--quiet"]) == 0
    photo = write_image(data / "train" / "REAL" / "aug_holiday.jpg", seed=11)
    capsys.readouterr()
    assert augment(data, "--preset", "detector") == 1
    [command] = re.findall(r"\((find .*?)\) to make", capsys.readouterr().err)
    subprocess.run(command, shell=True, check=True)
    assert sorted(path.name for path in (data / "train").rglob("aug_*")) == [photo.name]
    assert augment(data, "--preset", "detector") == 0


def test_the_advice_to_delete_moved_copies_works_for_a_folder_whose_name_begins_with_a_dash(data, capsys,
                                                                                              monkeypatch):
    """find reads a starting point that begins with a dash as an expression ("unknown predicate")."""
    monkeypatch.chdir(data.parent)
    data = data.rename("-data")
    given = ["--data", "./-data"]
    assert DataAugmentation.main([*given, "--copies", "2", "--seed", "1", "--quiet"]) == 0
    assert MoveAugmentedImages.main([*given, "--quiet"]) == 0
    photo = write_image(data / "train" / "REAL" / "aug_holiday.jpg", seed=11)
    capsys.readouterr()
    assert DataAugmentation.main([*given, "--copies", "2", "--seed", "1", "--preset", "detector", "--quiet"]) == 1
    [command] = re.findall(r"\((find .*?)\) to make", capsys.readouterr().err)
    subprocess.run(command, shell=True, check=True)
    assert sorted(path.name for path in (data / "train").rglob("aug_*")) == [photo.name]


def test_summaries_count_one_thing_in_the_singular(tmp_path, capsys):
    data = tmp_path / "data"
    write_image(data / "train" / "REAL" / "cat.png", seed=1)
    (data / "train" / "REAL" / "empty.jpg").write_bytes(b"")
    assert augment(data, "--copies", "1") == 0
    out = capsys.readouterr().out
    assert "Wrote 1 copy (1 per image" in out and "1 image skipped (broken, or over the pixel limit" in out
    assert MoveAugmentedImages.main(["--data", str(data), "--quiet"]) == 0
    assert "Moved 1 file into" in capsys.readouterr().out
    assert augment(data, "--copies", "1") == 0
    assert "1 earlier copy (aug_*) in train not augmented" in capsys.readouterr().out


@pytest.mark.parametrize("decoded", ["ahead", "alone"])
def test_broken_images_are_skipped_with_a_warning_naming_them(decoded, data, bad_files, capsys, monkeypatch):
    """Also where every image is decoded alone, when its batch is made, as a large one is."""
    from realvsai import offline_augmentation

    if decoded == "alone":
        monkeypatch.setattr(offline_augmentation, "DECODED_AHEAD_PIXELS", 0, raising=False)
    broken = bad_files(data / "train" / "REAL")
    assert augment(data) == 0
    err = capsys.readouterr().err
    for path in broken.values():
        assert str(path) in err
    assert len(list((data / "augmented_train" / "REAL").iterdir())) == 6


def test_a_broken_image_pillow_decodes_alone_is_skipped_as_one_decoded_ahead(data, capsys, monkeypatch):
    """An image of over ``DECODED_AHEAD_PIXELS`` is decoded alone, in the main thread, where Pillow's error came as
    it is (not as a TensorFlow error, as tf.data gives it): a 48 MP phone photo stored turned (EXIF), which Pillow
    decodes, cut short by a copy that broke off, ended the run with a traceback."""
    from realvsai import offline_augmentation

    monkeypatch.setattr(offline_augmentation, "DECODED_AHEAD_PIXELS", 0, raising=False)
    photo, exif = io.BytesIO(), Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # turned: Pillow decodes it (upright), not TensorFlow
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (48, 64, 3), np.uint8)).save(photo, "JPEG", exif=exif)
    broken = data / "train" / "REAL" / "turned.jpg"
    broken.write_bytes(photo.getvalue()[:len(photo.getvalue()) // 2])  # the header is whole, the data is not

    assert augment(data) == 0
    captured = capsys.readouterr()
    assert str(broken) in captured.err and "1 image skipped (broken, or over the pixel limit" in captured.out
    assert len(list((data / "augmented_train" / "REAL").iterdir())) == 6


def test_summary_counts_images_broken_in_the_header_and_in_the_pixels(data, bad_files, capsys):
    bad_files(data / "train" / "REAL")  # the truncated JPEG has a good header: only decoding finds it
    assert augment(data) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith(("FAKE", "REAL"))}
    assert rows == {"FAKE": ["3", "0"], "REAL": ["3", "3"]}
    assert "3 images skipped (broken, or over the pixel limit" in out


def test_max_pixels_sets_the_limit_the_skip_warning_names(data, capsys):
    assert augment(data, "--max-pixels", "1000") == 0  # every 32x32 image is over it
    out, err = capsys.readouterr()
    assert "limit of 1,000 pixels" in err and "--max-pixels" in err
    assert not list(data.glob("augmented_train/*/*"))
    # Not "broken": the summary called images it skipped for their size so.
    assert "broken image" not in out and "6 images skipped (broken, or over the pixel limit: each named above)" in out


def test_a_phone_photo_is_counted_whole_for_its_copies_are_made_from_its_full_decode(data, capsys):
    """Training decodes a 200 MP JPEG (conftest's stand-in) at 1/8; DataAugmentation makes its copies from the whole
    photo: the limit counts all its pixels, with --size too."""
    write_phone_photo(data / "train" / "REAL" / "phone.jpg")
    assert augment(data, "--max-pixels", str(PHOTO_LIMIT), "--size", "32") == 0
    err = capsys.readouterr().err
    assert "phone.jpg" in err and "2000x1500 pixels is more than the limit of 1,000,000 pixels" in err
    assert not list(data.glob("augmented_train/*/aug_phone*"))


def test_a_photo_too_large_for_tensorflows_jpeg_decoder_whole_gets_its_copies(data, capsys, tensorflow_jpeg_limit):
    """A 190 MP photo under a raised --max-pixels was skipped as "not a decodable image": TensorFlow's JPEG decoder
    refuses 2^29 bytes of pixels (conftest's stand-in: its 2000x1500 photo over ``tensorflow_jpeg_limit``). Pillow
    decodes it, for copies of its own size or --size."""
    write_phone_photo(data / "train" / "REAL" / "phone.jpg")

    assert augment(data, "--max-pixels", str(10 * PHOTO_LIMIT)) == 0

    assert "skipping" not in capsys.readouterr().err
    copies = sorted(data.glob("augmented_train/REAL/aug_phone_*.jpg"))
    assert len(copies) == 2 and all(Image.open(copy).size == (2000, 1500) for copy in copies)


def test_the_detector_preset_makes_no_copy_too_large_for_tensorflows_jpeg_codec(data, capsys, tensorflow_jpeg_limit):
    """The detector preset re-compresses copies with TensorFlow's JPEG codec, which decodes no more than
    ``images.TF_JPEG_MAX_PIXELS``: such a photo is skipped in one line saying why and what to do, the others are
    augmented; a --size over it is bad usage."""
    write_phone_photo(data / "train" / "REAL" / "phone.jpg")

    assert augment(data, "--preset", "detector", "--max-pixels", str(10 * PHOTO_LIMIT)) == 0

    (line,) = [line for line in capsys.readouterr().err.splitlines() if "phone.jpg" in line]
    assert "2000x1500 pixels" in line and "detector" in line and f"{PHOTO_LIMIT:,} pixels" in line
    assert "--size" in line and "--preset classic" in line and "python -c" in line
    assert not list(data.glob("augmented_train/*/aug_phone*")) and len(list(data.glob("augmented_train/*/*.jpg"))) == 12
    with pytest.raises(SystemExit):
        augment(data, "--preset", "detector", "--max-pixels", str(10 * PHOTO_LIMIT), "--size", "1001")
    assert "--size 1001" in capsys.readouterr().err


def test_image_only_pillow_reads_is_augmented_as_training_reads_it(data, capsys):
    bitmap = data / "train" / "REAL" / "scan.bmp"  # training decodes a BMP with Pillow, not TensorFlow
    Image.new("RGB", (32, 32), "red").save(bitmap, format="BMP")
    assert augment(data) == 0
    assert "skipping" not in capsys.readouterr().err
    copies = [data / "augmented_train" / "REAL" / f"aug_scan_{k}.jpg" for k in range(2)]
    assert all(Image.open(copy).size == (32, 32) for copy in copies)


def test_exif_rotated_photo_gets_upright_copies(tmp_path):
    """A phone photo stored sideways with an EXIF turn: training sees it upright, so must its copies."""
    data = tmp_path / "data"
    path = data / "train" / "REAL" / "phone.jpg"
    path.parent.mkdir(parents=True)
    pixels = np.zeros((24, 40, 3), np.uint8)  # stored 40 wide, 24 high, bright on the left half
    pixels[:, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: 24 wide, 40 high, bright on top
    Image.fromarray(pixels).save(path, quality=95, exif=exif)

    assert augment(data, "--size", "native") == 0

    for k in range(2):
        copy = np.asarray(Image.open(data / "augmented_train" / "REAL" / f"aug_phone_{k}.jpg").convert("L"), float)
        assert copy.shape == (40, 24)  # upright: 40 rows, 24 columns
        assert copy[:16].mean() > copy[-16:].mean() + 100  # the bright half stays on top (up to the small turns)


def test_cmyk_jpeg_is_augmented_not_skipped(data, capsys):
    cmyk = data / "train" / "REAL" / "print.jpg"
    Image.new("RGB", (32, 32), (200, 30, 30)).convert("CMYK").save(cmyk, "JPEG", quality=95)
    assert augment(data) == 0
    assert "skipping" not in capsys.readouterr().err
    copy = np.asarray(Image.open(data / "augmented_train" / "REAL" / "aug_print_0.jpg").convert("RGB"), float)
    assert copy[..., 0].mean() > copy[..., 1].mean() + 100  # still red, as load_rgb gives it


def test_sources_sharing_a_stem_get_distinct_copies(tmp_path):
    data = tmp_path / "data"
    write_image(data / "train" / "REAL" / "cat.png", seed=1)
    write_image(data / "train" / "REAL" / "cat.jpg", seed=2)
    assert augment(data) == 0
    names = sorted(path.name for path in (data / "augmented_train" / "REAL").iterdir())
    assert names == ["aug_cat_jpg_0.jpg", "aug_cat_jpg_1.jpg", "aug_cat_png_0.jpg", "aug_cat_png_1.jpg"]


def write_solid(path: Path, colour: tuple[int, int, int]) -> Path:
    """A one-colour 32 px image: every copy of it keeps that colour, so a copy tells its source."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), colour).save(path)
    return path


# cat.png's copies would be aug_cat_png_<k>.jpg, the names cat_png.jpg's copies have as well
NAMED_LIKE_A_COPY = {"cat.jpg": (255, 0, 0), "cat.png": (0, 255, 0), "cat_png.jpg": (0, 0, 255)}


def test_a_source_named_like_another_sources_copies_gets_copies_of_its_own(tmp_path):
    data = tmp_path / "data"
    for name, colour in NAMED_LIKE_A_COPY.items():
        write_solid(data / "train" / "REAL" / name, colour)
    assert augment(data) == 0
    assert len(list((data / "augmented_train" / "REAL").glob("aug_*.jpg"))) == 2 * len(NAMED_LIKE_A_COPY)


def test_sources_csv_names_the_image_each_copy_was_made_from(tmp_path):
    data = tmp_path / "data"
    for name, colour in NAMED_LIKE_A_COPY.items():
        write_solid(data / "train" / "REAL" / name, colour)
    assert augment(data) == 0
    for copy, record in moving.read_copy_sources(data / "augmented_train").items():
        pixels = np.asarray(Image.open(data / "augmented_train" / copy).convert("RGB"), float)
        channel = int(pixels.mean(axis=(0, 1)).argmax())
        assert channel == int(np.argmax(NAMED_LIKE_A_COPY[Path(record.source).name])), (copy, record.source)


def test_sources_csv_takes_each_copys_digest_from_the_bytes_written_without_reading_the_copy_back(data,
                                                                                               monkeypatch):
    read = []  # the files hashed from disk
    real_sha256_file = moving.sha256_file
    monkeypatch.setattr(moving, "sha256_file", lambda path: read.append(Path(path)) or real_sha256_file(path))

    assert augment(data) == 0

    assert sorted(path.name for path in read) == sorted(path.name for path in (data / "train").rglob("*.png"))
    records = moving.read_copy_sources(data / "augmented_train")
    assert len(records) == 12 and all(record.copy_sha256 == sha256(data / "augmented_train" / copy)
                                      for copy, record in records.items())


def test_copy_names_differ_in_more_than_letter_case(tmp_path):
    """Where letter case is ignored (macOS, Windows), aug_cat_png_0.jpg and aug_cat_PNG_0.jpg are one file."""
    data = tmp_path / "data"
    for index, name in enumerate(("cat.png", "cat.PNG", "Cat.jpg")):
        write_image(data / "train" / "REAL" / name, seed=index)
    names = [name.casefold() for names in moving.plan_copies(data, copies=2).copy_names.values() for name in names]
    assert len(set(names)) == len(names) == 6


def test_copy_names_differ_in_more_than_accent_encoding(tmp_path):
    """On macOS, aug_café_0.jpg typed and aug_café_0.jpg with a decomposed accent are one file."""
    import unicodedata

    data = tmp_path / "data"
    for index, name in enumerate(("caf\u00e9.png", "cafe\u0301.png")):
        write_image(data / "train" / "REAL" / name, seed=index)
    planned = moving.plan_copies(data, copies=2).copy_names
    names = [unicodedata.normalize("NFC", name) for names in planned.values() for name in names]
    assert len(set(names)) == len(names) == 4
    # Moved into train beside their images, each copy is still known as a copy of its own image.
    found = moving.copies_beside_their_images([f"REAL/{path.name}" for path in planned]
                                              + [f"REAL/{name}" for names in planned.values() for name in names])
    assert found == {f"REAL/{name}": f"REAL/{path.name}" for path, names in planned.items() for name in names}


def test_copy_names_do_not_depend_on_the_order_the_disk_lists_the_files(tmp_path, monkeypatch):
    data = tmp_path / "data"
    for index, name in enumerate(("cat.jpg", "cat.png", "cat.PNG", "cat_png.jpg", "cat_png_2.jpg")):
        write_image(data / "train" / "REAL" / name, seed=index)
    listed = moving.plan_copies(data, copies=2).copy_names
    list_images = moving.list_images
    monkeypatch.setattr(moving, "list_images", lambda folder, **kwargs: list_images(folder, **kwargs)[::-1])
    assert moving.plan_copies(data, copies=2).copy_names == listed


@pytest.mark.parametrize("split", ["validation", "test", "Test"])
def test_augmenting_validation_or_test_is_bad_usage(data, split, capsys):
    with pytest.raises(SystemExit) as exit_info:
        augment(data, "--split", split)
    assert exit_info.value.code == 2
    assert "only the train split is augmented" in capsys.readouterr().err
    assert not (data / "augmented_train").exists()


@pytest.mark.parametrize("split", ["validation", "test", "train"])
def test_refuses_data_pointing_at_a_split_folder(data, make_class_folder, split, capsys):
    make_class_folder(data / split, CLASSES)
    assert augment(data / split) == 1
    assert "is a split folder" in capsys.readouterr().err
    assert not list(data.rglob("aug_*"))


def test_the_dataset_folder_a_split_folder_refusal_names_is_quoted_where_it_has_a_space(tmp_path, make_class_folder,
                                                                                       capsys):
    """It said "e.g. --data .../my out": pasted, --data got ".../my" and "out" was an argument of its own."""
    data = tmp_path / "my out"
    make_class_folder(data / "train", CLASSES)
    assert augment(data / "train") == 1
    assert f"e.g. --data {shlex.quote(str(data))}." in capsys.readouterr().err


@pytest.mark.parametrize("folder", ["train", "augmented_train", "Validation"])
def test_moving_from_a_split_folder_is_refused_naming_the_dataset_folder(tmp_path, make_class_folder, folder,
                                                                         capsys):
    """MoveAugmentedImages said "Run DataSplitD1.py or DataSplitD2.py first" of data/train: a dead end."""
    data = tmp_path / "my out"
    make_class_folder(data / "train", CLASSES)
    make_class_folder(data / folder, CLASSES)
    assert MoveAugmentedImages.main(["--data", str(data / folder), "--quiet"]) == 1
    error = capsys.readouterr().err
    assert "is a split folder" in error and f"e.g. --data {shlex.quote(str(data))}" in error
    assert "DataSplitD1" not in error


def test_augmenting_a_download_not_yet_split_is_refused_with_its_split_command(tmp_path, make_class_folder, capsys):
    """A raw download's train/ and test/ got copies, which the move put into its train/: training was then refused
    (no validation) and DataSplitD2 skipped every copy."""
    raw = tmp_path / "raw" / "my set"
    make_class_folder(raw / "train", CLASSES)
    make_class_folder(raw / "test", CLASSES, seed=1)
    before = tree(raw)
    assert augment(raw) == 1
    error = capsys.readouterr().err
    command = f"python DataSplitD2.py {shlex.quote(str(raw))} --out data"
    assert len(error.strip().splitlines()) == 1 and "validation" in error and command in error
    assert tree(raw) == before
    advised = shlex.split(error[error.index(command):])[2:-1]  # as pasted, with an --out of the test's own
    assert run_script("DataSplitD2.py", *advised, str(tmp_path / "data"), "--quiet").returncode == 0
    assert augment(tmp_path / "data") == 0


def test_offline_presets_are_library_presets():
    from realvsai.augmentation import PRESETS

    assert set(DataAugmentation.OFFLINE_PRESETS) == set(PRESETS) - {"none"}


def test_data_scripts_start_without_tensorflow():
    code = ("import sys, DataAugmentation, MoveAugmentedImages, realvsai.moving; "
            "sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", ["DataAugmentation.py", "MoveAugmentedImages.py"])
def test_missing_data_folder_exits_1_with_one_line(script, tmp_path):
    result = run_script(script, "--data", tmp_path / "nowhere")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'nowhere'} is not a folder. "
                                                  "Give the dataset folder that holds train/ with --data."]


@pytest.mark.parametrize("args", [["--copies", "0"], ["--size", "big"], ["--preset", "none"]])
def test_bad_arguments_exit_2(args):
    assert run_script("DataAugmentation.py", *args).returncode == 2


def test_quiet_prints_no_tensorflow_absl_or_cuda_log_line(data):
    environ = {key: value for key, value in os.environ.items() if not key.startswith("TF_CPP")}
    process = subprocess.run([sys.executable, str(REPO / "DataAugmentation.py"), "--data", str(data), "--copies", "1",
                              "--quiet"], capture_output=True, text=True, timeout=300, cwd=data,
                             env={**environ, "PYTHONPATH": str(REPO)})
    assert process.returncode == 0 and process.stderr == "", process.stderr


def test_copies_beyond_any_use_are_a_command_line_error(capsys):
    """--copies 100000000 filled 21 GB planning the copies' names before the machine killed it, without a word."""
    assert DataAugmentation.parse_args(["--copies", "1000"]).copies == 1000
    with pytest.raises(SystemExit) as exit_:
        DataAugmentation.parse_args(["--copies", "1001"])
    assert exit_.value.code == 2
    assert "--copies 1001 is over 1,000 copies of each image" in capsys.readouterr().err


def test_a_size_that_is_no_number_names_native_too(capsys):
    with pytest.raises(SystemExit):
        DataAugmentation.parse_args(["--size", "big"])
    assert "'big' is neither 'native' nor a whole number of pixels" in capsys.readouterr().err


def test_refusing_validation_exits_2_with_argparse_s_line_as_a_subprocess(data):
    result = run_script("DataAugmentation.py", "--data", data, "--split", "validation")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        "DataAugmentation.py: error: argument --split: refusing to augment 'validation'")


# MoveAugmentedImages.py and realvsai.moving


@pytest.fixture
def augmented(data) -> Path:
    """``data`` plus two copies per training image in ``augmented_train`` (made without TensorFlow), their
    sources and settings recorded (``sources.csv``, ``settings.json``) as DataAugmentation.py records them."""
    settings = DataAugmentation.copy_settings(DataAugmentation.parse_args(["--copies", "2", "--seed", "1"]))
    moving.record_copy_settings(data / "augmented_train", settings)
    sources = {}
    for class_index, (class_name, count) in enumerate(sorted(CLASSES.items())):
        for index in range(count):
            source = f"train/{class_name}/img_{index:03d}.png"
            for k in range(2):
                copy = write_image(data / "augmented_train" / class_name / f"aug_img_{index:03d}_{k}.jpg",
                                   seed=50_000 + class_index * 100 + index * 10 + k)
                sources[f"{class_name}/{copy.name}"] = moving.CopySource(
                    hashlib.sha256(copy.read_bytes()).hexdigest(), source,
                    hashlib.sha256((data / source).read_bytes()).hexdigest())
    moving.add_copy_sources(data / "augmented_train", sources)
    return data


def move(data: Path, *args: str) -> int:
    return MoveAugmentedImages.main(["--data", str(data), "--quiet", *args])


def test_move_puts_every_copy_into_train_and_removes_the_augmented_folder(augmented, capsys):
    expected = sorted(digests(augmented / "train") + digests(augmented / "augmented_train"))
    assert move(augmented) == 0
    assert sorted(digests(augmented / "train")) == expected
    assert not (augmented / "augmented_train").exists()
    out = capsys.readouterr().out
    assert "Moved 12 files" in out and "Removed the emptied" in out


def test_move_reports_train_counts_before_and_after(augmented):
    counts = moving.move_augmented(augmented).counts
    assert {name: counts[name]["train before"] for name in counts} == {"FAKE": 3, "REAL": 3}
    assert {name: counts[name]["train after"] for name in counts} == {"FAKE": 9, "REAL": 9}
    assert {name: counts[name]["moved"] for name in counts} == {"FAKE": 6, "REAL": 6}


def test_move_skips_a_copy_whose_content_is_already_in_train(augmented):
    copy = augmented / "augmented_train" / "REAL" / "aug_img_000_0.jpg"
    shutil.copy2(copy, augmented / "train" / "REAL" / copy.name)
    report = moving.move_augmented(augmented)
    assert report.counts["REAL"]["identical"] == 1
    assert len(list((augmented / "train" / "REAL").iterdir())) == 3 + 6
    assert not (augmented / "augmented_train").exists()


def test_move_renames_a_copy_whose_name_is_taken_by_other_content(augmented):
    taken = augmented / "train" / "REAL" / "aug_img_000_0.jpg"
    write_image(taken, seed=999)
    original = taken.read_bytes()
    copy = (augmented / "augmented_train" / "REAL" / taken.name).read_bytes()
    report = moving.move_augmented(augmented)
    assert report.counts["REAL"]["renamed"] == 1
    assert taken.read_bytes() == original
    renamed = [path for path in taken.parent.glob("aug_img_000_0_*.jpg")]
    assert [path.read_bytes() for path in renamed] == [copy]


@pytest.mark.parametrize("split", ["validation", "test"])
def test_move_refuses_a_copy_identical_to_a_validation_or_test_image(augmented, split, capsys):
    copy = augmented / "augmented_train" / "REAL" / "aug_img_000_0.jpg"
    (augmented / split / "REAL").mkdir(parents=True)
    shutil.copy2(copy, augmented / split / "REAL" / "held_out.jpg")
    digest = hashlib.sha256(copy.read_bytes()).hexdigest()
    assert move(augmented) == 1
    assert copy.is_file()
    assert digest not in digests(augmented / "train")
    with open(augmented / "move-refused.csv", newline="") as stream:
        assert [Path(row["source"]).name for row in csv.DictReader(stream)] == [copy.name]
    assert "Refused 1 copy identical to a validation or test image" in capsys.readouterr().out


def test_a_copy_without_a_recorded_source_is_refused_with_commands_that_name_its_data(augmented):
    """A run killed before it recorded its copies: the reason said "Run DataAugmentation.py again with --copies 2
    ... first ... or run MoveAugmentedImages.py --move-unlisted", without --data: pasted, they worked on data/."""
    (augmented / "augmented_train" / moving.SOURCES_NAME).unlink()
    assert move(augmented) == 1
    with open(augmented / moving.MOVE_REFUSED_NAME, newline="") as stream:
        reason = next(csv.DictReader(stream))["reason"]
    assert f"python DataAugmentation.py --data {augmented} --copies 2 --preset classic --seed 1" in reason, reason
    assert f"python MoveAugmentedImages.py --data {augmented} --move-unlisted" in reason, reason
    assert MoveAugmentedImages.main(["--data", str(augmented), "--move-unlisted", "--quiet"]) == 0


def test_move_without_augmented_folder_names_the_augmentation_command_for_its_data(data, capsys):
    """It said "Run DataAugmentation.py first", which, pasted, augments data/ rather than the --data given."""
    assert move(data) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith(f"python DataAugmentation.py --data {data}")


def hold_out_a_copy(augmented: Path) -> Path:
    """Puts a copy's content into test, so the move refuses that copy; returns the copy."""
    copy = augmented / "augmented_train" / "REAL" / "aug_img_000_0.jpg"
    (augmented / "test" / "REAL").mkdir(parents=True)
    shutil.copy2(copy, augmented / "test" / "REAL" / "held_out.jpg")
    return copy


def test_a_move_that_refused_a_copy_exits_1_after_moving_the_others_and_its_summary(augmented, capsys):
    copy = hold_out_a_copy(augmented)
    assert move(augmented) == 1
    assert copy.is_file() and len(list((augmented / "train").glob("*/aug_*.jpg"))) == 11
    out, err = capsys.readouterr()
    assert "Moved 11 files" in out and "Refused 1 copy identical to a validation or test image" in out
    [line] = err.strip().splitlines()
    assert line.startswith("error: refused 1 copy (identical to a validation or test image)")
    assert str(augmented / "augmented_train") in line and str(augmented / moving.MOVE_REFUSED_NAME) in line
    assert "MoveAugmentedImages.py again" in line
    assert "Next:" not in out  # training now would miss the refused copies: the error line says what to do


def test_a_repeated_move_lists_each_refused_copy_once(augmented):
    copy = hold_out_a_copy(augmented)
    assert move(augmented) == 1
    assert move(augmented) == 1
    with open(augmented / moving.MOVE_REFUSED_NAME, newline="") as stream:
        assert [Path(row["source"]).name for row in csv.DictReader(stream)] == [copy.name]


def test_a_move_with_a_refused_list_it_cannot_read_stops_before_moving_anything(augmented, capsys):
    """It moved, then replaced an edited move-refused.csv with empty rows and its own."""
    hold_out_a_copy(augmented)
    (augmented / moving.MOVE_REFUSED_NAME).write_text("moved_at;source;reason\n2026-11-01T10:00:00;a.jpg;why\n")
    before = snapshot(augmented)
    assert move(augmented) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and "is not a list this project wrote" in line
    assert snapshot(augmented) == before


def test_a_move_that_refused_a_copy_stops_a_script_going_on_to_train(augmented):
    hold_out_a_copy(augmented)
    command = f"{shlex.quote(sys.executable)} MoveAugmentedImages.py --data {shlex.quote(str(augmented))} --quiet"
    process = subprocess.run(f"{command} && echo training", shell=True, cwd=REPO, capture_output=True, text=True)
    assert process.returncode == 1 and "training" not in process.stdout
    assert process.stderr.strip().splitlines()[-1].startswith("error: refused 1 copy")


def test_a_dry_run_that_would_refuse_a_copy_exits_0(augmented, capsys):
    hold_out_a_copy(augmented)
    assert move(augmented, "--dry-run") == 0
    out, err = capsys.readouterr()
    assert "Would refuse 1 copy identical to a validation or test image" in out and err == ""


def test_move_refuses_a_class_train_does_not_have_and_moves_nothing(augmented, capsys):
    write_image(augmented / "augmented_train" / "CATS" / "aug_cat_0.jpg", seed=3)
    before = tree(augmented)
    assert move(augmented) == 1
    assert "['CATS']" in capsys.readouterr().err
    assert tree(augmented) == before


def test_move_interrupted_half_way_loses_nothing_when_run_again(augmented, monkeypatch):
    expected = sorted(digests(augmented / "train") + digests(augmented / "augmented_train"))
    real_place_file, calls = moving.place_file, []

    def place_then_fail(*args, **kwargs):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(args)
        return real_place_file(*args, **kwargs)

    monkeypatch.setattr(moving, "place_file", place_then_fail)
    assert move(augmented) == 1
    assert len(list((augmented / "augmented_train").rglob("*.jpg"))) == 7
    monkeypatch.setattr(moving, "place_file", real_place_file)
    assert move(augmented) == 0
    assert sorted(digests(augmented / "train")) == expected  # every file exactly once
    assert not (augmented / "augmented_train").exists()


def test_a_ctrl_c_dropped_at_the_first_file_stops_the_move_there(augmented, monkeypatch, capsys):
    """It was noticed only once every copy was moved, then the finished move was reported as interrupted."""
    real_place_file, calls = moving.place_file, []

    def dropped_at_the_first(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            drop_a_ctrl_c()
        time.sleep(0.02)  # a large file takes longer (on another disk, a copy)
        return real_place_file(*args, **kwargs)

    monkeypatch.setattr(moving, "place_file", dropped_at_the_first)
    assert move(augmented) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: interrupted. ")
    assert len(calls) <= 6, f"went on for {len(calls)} of 12 files"  # the next, but for a loaded machine
    monkeypatch.setattr(moving, "place_file", real_place_file)
    assert move(augmented) == 0 and not (augmented / "augmented_train").exists()


def test_move_cut_between_link_and_unlink_finishes_when_run_again(augmented):
    copy = augmented / "augmented_train" / "FAKE" / "aug_img_001_1.jpg"
    (augmented / "train" / "FAKE" / copy.name).hardlink_to(copy)  # the state a crash mid-move leaves
    expected = sorted(set(digests(augmented / "train")) | set(digests(augmented / "augmented_train")))
    report = moving.move_augmented(augmented)
    assert report.counts["FAKE"]["identical"] == 1
    assert sorted(digests(augmented / "train")) == expected
    assert not (augmented / "augmented_train").exists()


def test_move_dry_run_changes_nothing_and_counts_what_would_happen(augmented, capsys):
    write_image(augmented / "train" / "REAL" / "aug_img_000_0.jpg", seed=999)  # a clash: would be renamed
    before = tree(augmented)
    assert move(augmented, "--dry-run") == 0
    assert tree(augmented) == before
    out = capsys.readouterr().out
    assert "Would move 12 files" in out and "1 under a new name" in out and "nothing was changed" in out


@pytest.mark.parametrize("flags", [[], ["--dry-run"]])
def test_a_record_of_moved_copies_that_cannot_be_read_stops_the_move_and_its_dry_run_alike(augmented, capsys, flags):
    """The dry run said "Would move 12 files" where the move itself stops on the record."""
    (augmented / "augmented-copies.csv").write_text("not,the,columns\n")
    before = tree(augmented)
    assert move(augmented, *flags) == 1
    assert tree(augmented) == before
    assert "augmented-copies.csv is not a list written by MoveAugmentedImages.py" in capsys.readouterr().err


def test_move_keeps_other_files_and_their_folder(augmented):
    note = augmented / "augmented_train" / "REAL" / "notes.txt"
    note.write_text("keep me")
    leftover = augmented / "augmented_train" / "FAKE" / ".aug_img_000_0.jpg.abc12345.tmp"
    leftover.write_bytes(b"half a jpeg")
    report = moving.move_augmented(augmented)
    assert report.left_behind == [note] and not report.removed_folder
    assert note.read_text() == "keep me"
    assert not leftover.exists()
    assert not (augmented / "augmented_train" / "FAKE").exists()


def test_move_keeps_a_users_hidden_file_named_like_a_temporary_and_its_folder(augmented):
    """Any hidden .tmp went as an interrupted write's; only a name files.temporary_of reads as one goes now."""
    own = augmented / "augmented_train" / "FAKE" / ".notes.tmp"
    own.write_text("mine")
    report = moving.move_augmented(augmented)
    assert report.left_behind == [own] and not report.removed_folder and own.read_text() == "mine"


def test_move_removes_the_settings_record_with_the_last_copy(augmented):
    report = moving.move_augmented(augmented)
    assert report.removed_folder and report.left_behind == []
    assert not (augmented / "augmented_train").exists()


def test_move_keeps_the_settings_record_beside_the_copies_it_refuses(augmented):
    record = augmented / "augmented_train" / moving.SETTINGS_NAME
    settings = record.read_bytes()
    copy = augmented / "augmented_train" / "REAL" / "aug_img_000_0.jpg"
    (augmented / "test" / "REAL").mkdir(parents=True)
    shutil.copy2(copy, augmented / "test" / "REAL" / "held_out.jpg")  # so the copy stays
    report = moving.move_augmented(augmented)
    assert copy.is_file() and record.read_bytes() == settings
    assert report.left_behind == []  # a record, not a file of the user's that was not moved


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into any folder")
@pytest.mark.parametrize("where", ["train/REAL", "augmented_train/FAKE"])  # a copy goes in, or comes out
def test_a_move_with_a_class_folder_it_cannot_write_names_that_folder_and_the_fix(augmented, where, capsys):
    folder = augmented / where
    folder.chmod(0o555)
    try:
        assert move(augmented) == 1
    finally:
        folder.chmod(0o755)
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: cannot write to {folder} (permission denied)")
    assert "check its owner and permissions" in line and "aug_" not in line
    assert move(augmented) == 0  # once it is writable, the same command completes the move
    assert not (augmented / "augmented_train").exists()


def test_move_without_augmented_folder_has_nothing_to_do(data, capsys):
    assert move(data) == 0
    assert "Nothing to move" in capsys.readouterr().out


def test_move_run_again_after_a_move_says_the_copies_are_in_train_and_the_next_step(augmented, capsys):
    """It said "Nothing to move: DATA has no augmented_train folder. Run DataAugmentation.py first." after the
    move had put 12 copies into train: the step it asked for was done, and training is next."""
    assert move(augmented) == 0
    capsys.readouterr()

    assert move(augmented) == 0

    out = capsys.readouterr().out
    assert "Run DataAugmentation.py first" not in out
    assert f"{augmented}/train holds the 12 augmented copies moved there already" in out
    assert out.splitlines()[-1] == f"Next: python ModelTraining.py --data {augmented}"


def test_move_records_each_copys_source_beside_the_dataset_before_it_moves(augmented, monkeypatch):
    """Once moved, a copy's source is known from ``DATA/augmented-copies.csv``: DataMerger reads it to keep copies
    of another split's image out of train. Written before the first copy moves, so a kill loses no record."""
    sources = moving.read_copy_sources(augmented / "augmented_train")
    real_place_file = moving.place_file

    def place_then_fail(*args, **kwargs):
        if len(list((augmented / "train").rglob("aug_*"))) == 5:
            raise KeyboardInterrupt
        return real_place_file(*args, **kwargs)

    monkeypatch.setattr(moving, "place_file", place_then_fail)
    assert move(augmented) == 1
    recorded = moving.read_moved_copies(augmented)
    moved = list((augmented / "train").rglob("aug_*"))
    assert len(moved) == 5 and {sha256(path) for path in moved} <= set(recorded)
    monkeypatch.setattr(moving, "place_file", real_place_file)
    assert move(augmented) == 0
    assert moving.read_moved_copies(augmented) == {record.copy_sha256: record for record in sources.values()}


def test_move_records_the_copies_settings_as_soon_as_a_copy_reaches_train(augmented):
    """Also when a refused copy keeps augmented_train (and its settings.json) there, which a user may delete."""
    settings = (augmented / "augmented_train" / moving.SETTINGS_NAME).read_bytes()
    copy = augmented / "augmented_train" / "REAL" / "aug_img_000_0.jpg"
    (augmented / "test" / "REAL").mkdir(parents=True)
    shutil.copy2(copy, augmented / "test" / "REAL" / "held_out.jpg")  # so the copy stays
    assert move(augmented) == 1 and copy.is_file()
    assert (augmented / moving.MOVED_SETTINGS_NAME).read_bytes() == settings


def test_move_advises_rerunning_the_augmentation_for_unrecorded_copies_beside_their_settings(augmented):
    (augmented / "augmented_train" / moving.SOURCES_NAME).unlink()  # as after a kill before the record was written
    assert move(augmented) == 1
    with open(augmented / moving.MOVE_REFUSED_NAME, newline="") as stream:
        reasons = {row["reason"] for row in csv.DictReader(stream)}
    assert len(reasons) == 1
    [reason] = reasons
    assert "DataAugmentation.py again with their settings first" in reason
    assert "--copies 2 --preset classic --seed 1" in reason


def test_a_sources_csv_that_is_not_text_is_one_line(augmented, capsys):
    (augmented / "augmented_train" / moving.SOURCES_NAME).write_bytes(b"\xff\xfe\x00bad")
    assert move(augmented) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and "sources.csv" in line


# Hand-edited settings records: one line naming the file, the key and what it should hold


# name -> (what a user wrote into the record, given the settings it held; what the error line must say)
HAND_EDITS = {
    "copies_a_word": (lambda settings: json.dumps({**settings, "copies": "five"}),
                      ['"copies"', '"five"', "a whole number above 0"]),
    "seed_a_list": (lambda settings: json.dumps({**settings, "seed": [1, 2]}), ['"seed"', "a whole number"]),
    "size_a_fraction": (lambda settings: json.dumps({**settings, "size": 12.5}),
                        ['"size"', '"native" or a whole number']),
    "copies_true": (lambda settings: json.dumps({**settings, "copies": True}), ['"copies"', "a whole number"]),
    "preset_missing": (lambda settings: json.dumps({k: v for k, v in settings.items() if k != "preset"}),
                       ['no "preset"', "a preset name"]),
    "not_an_object": (lambda settings: json.dumps(list(settings.values())), ["not a JSON object"]),
    "not_json": (lambda settings: json.dumps(settings)[:-1], ["not valid JSON"]),
}


def hand_edit(path: Path, edit: str) -> None:
    write, _ = HAND_EDITS[edit]
    path.write_text(write(json.loads(path.read_text())))


def assert_one_line_naming(err: str, path: Path, edit: str) -> None:
    [line] = err.strip().splitlines()
    assert line.startswith("error: ") and str(path) in line
    for words in HAND_EDITS[edit][1]:
        assert words in line


@pytest.mark.parametrize("edit", sorted(HAND_EDITS))
@pytest.mark.parametrize("script", ["augment", "move"])
def test_a_hand_edited_settings_json_stops_the_script_before_it_changes_anything(augmented, script, edit, capsys):
    record = augmented / "augmented_train" / moving.SETTINGS_NAME
    hand_edit(record, edit)
    before = tree(augmented)
    assert {"augment": augment, "move": move}[script](augmented) == 1
    assert_one_line_naming(capsys.readouterr().err, record, edit)
    assert tree(augmented) == before


@pytest.mark.parametrize("edit", sorted(HAND_EDITS))
def test_a_hand_edited_augmented_settings_json_stops_the_augmentation_in_one_line_naming_the_key(
        augmented, edit, capsys):
    assert move(augmented) == 0
    record = augmented / moving.MOVED_SETTINGS_NAME
    hand_edit(record, edit)
    capsys.readouterr()
    assert augment(augmented) == 1
    assert_one_line_naming(capsys.readouterr().err, record, edit)


@pytest.mark.parametrize("edit", sorted(HAND_EDITS))
def test_read_copy_settings_names_the_file_and_the_key_of_a_hand_edited_record(augmented, edit):
    """What training reads model.json's ``augmented_copies`` settings with."""
    record = augmented / "augmented_train" / moving.SETTINGS_NAME
    hand_edit(record, edit)
    with pytest.raises(UserError) as error:
        moving.read_copy_settings(record)
    assert_one_line_naming(f"error: {error.value}", record, edit)


@pytest.mark.parametrize("edit", sorted(HAND_EDITS))
def test_training_stops_in_one_line_on_a_hand_edited_record_of_the_copies_moved_into_train(augmented, edit):
    """model.json's ``augmented_copies`` (and the card) say what the copies were made with, or training stops
    before it starts: a record no run wrote must not reach the card."""
    from realvsai import data
    from realvsai.training import training_images_record

    assert move(augmented) == 0
    record = augmented / moving.MOVED_SETTINGS_NAME
    hand_edit(record, edit)
    train_images = data.scan_images(augmented / "train")
    with pytest.raises(UserError) as error:
        training_images_record(augmented, train_images)
    assert_one_line_naming(f"error: {error.value}", record, edit)


def test_read_copy_settings_returns_a_good_record_and_none_without_one(augmented):
    record = augmented / "augmented_train" / moving.SETTINGS_NAME
    assert moving.read_copy_settings(record) == json.loads(record.read_text())
    assert moving.read_copy_settings(augmented / moving.MOVED_SETTINGS_NAME) is None



def test_training_images_the_split_named_aug_are_augmented_before_any_copy_was_moved(tmp_path, capsys):
    """A download augmented by its makers names its images aug_0_123.png (Keras' save_prefix="aug"). Before any
    copy was moved there is no augmented-copies.csv; manifest.csv still says they are the split's own images, so
    they are sources, not earlier copies, and training's record of copies (model.json) counts none."""
    from realvsai.data import scan_splits
    from realvsai.splitting import split_by_class
    from realvsai.training import training_images_record

    for index in range(6):
        for offset, name in ((0, "REAL"), (100, "FAKE")):
            write_image(tmp_path / "raw" / name / f"aug_{index}_{name.lower()}.png", seed=index + offset)
    data = tmp_path / "data"
    split_by_class(tmp_path / "raw", data, ratios=(0.5, 0.25, 0.25), seed=1)
    train = sorted(path.name for path in data.glob("train/*/*.png"))
    assert train and all(name.startswith("aug_") for name in train)
    capsys.readouterr()
    assert augment(data, "--copies", "1") == 0
    assert "0 earlier copies" in capsys.readouterr().out
    assert len(list(data.glob("augmented_train/*/aug_*.jpg"))) == len(train)
    assert training_images_record(data, scan_splits(data)[0])["augmented_copies"] is None


def test_the_wait_while_tensorflow_loads_is_said_before_it(data):
    """Between the checking bar and the augmenting one, 12-20 s passed without a word on a 72,000-image train split:
    TensorFlow loading and the augmentation being built."""
    process = run_script("DataAugmentation.py", "--data", data, "--copies", "1", "--seed", "1")
    assert process.returncode == 0, process.stderr
    assert "loading TensorFlow to build the augmentation (classic)" in process.stderr, process.stderr
