"""Tests for realvsai.files: listing, collision-safe placing, atomic writes, path containment."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import sys
from pathlib import Path

import pytest
from conftest import record_disk_waits, syncs_a_batch, write_image
from PIL import Image

from realvsai import files
from realvsai.errors import UserError
from realvsai.files import (
    Outcome,
    atomic_write,
    atomic_write_text,
    human_bytes,
    list_images,
    place_file,
    sha256_file,
)

# ---- list_images ---------------------------------------------------------------------------------


def test_list_images_accepts_extensions_in_any_case(tmp_path):
    for name in ("a.jpg", "b.JPG", "c.Jpeg", "d.PNG", "e.webp", "f.bmp"):
        write_image(tmp_path / name, seed=len(name), fmt="PNG")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "no_suffix").write_bytes(b"x")
    assert [path.name for path in list_images(tmp_path)] == ["a.jpg", "b.JPG", "c.Jpeg", "d.PNG", "e.webp", "f.bmp"]


def test_a_jfif_file_is_a_jpeg_image_for_every_script_and_the_app(tmp_path):
    """Browsers save JPEGs from the web as .jfif: they were "not an image file", left out of splits and refused by
    the app's uploader (which now takes any file)."""
    write_image(tmp_path / "photo.jfif", seed=1, fmt="JPEG")
    assert [path.name for path in list_images(tmp_path)] == ["photo.jfif"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX's")
def test_list_images_names_a_named_pipe_among_the_files_left_out(tmp_path):
    """A pipe called fifo.jpg vanished from --predict's outputs: in neither predictions.csv nor unreadable.csv."""
    os.mkfifo(tmp_path / "fifo.jpg")
    skipped = []
    assert list_images(tmp_path, skipped=skipped) == []
    assert skipped == [(str(tmp_path / "fifo.jpg"), "not a regular file (a named pipe, socket or device)")]


def test_list_images_skips_hidden_files_and_hidden_folders(tmp_path):
    write_image(tmp_path / "visible.png", seed=1)
    write_image(tmp_path / "._visible.png", seed=2)  # macOS resource fork
    write_image(tmp_path / ".cache" / "inside.png", seed=3)
    write_image(tmp_path / "sub" / "deep.png", seed=4)
    assert list_images(tmp_path) == [tmp_path / "visible.png"]
    assert list_images(tmp_path, recursive=True) == [tmp_path / "sub" / "deep.png", tmp_path / "visible.png"]


def test_list_images_reports_what_it_leaves_out(tmp_path):
    write_image(tmp_path / "visible.png", seed=1)
    write_image(tmp_path / ".hidden.png", seed=2)
    write_image(tmp_path / ".cache" / "inside.png", seed=3)
    (tmp_path / "notes.txt").write_text("not an image")
    skipped = []
    assert list_images(tmp_path, recursive=True, skipped=skipped) == [tmp_path / "visible.png"]
    reasons = {Path(path).name: reason for path, reason in skipped}
    assert sorted(reasons) == [".cache", ".hidden.png", "notes.txt"]
    assert reasons[".cache"].startswith("hidden folder") and reasons[".hidden.png"].startswith("hidden file")
    assert reasons["notes.txt"].startswith("not an image file")


def test_an_image_of_a_format_not_read_is_named_so_with_how_to_include_it(tmp_path):
    # A scan set in TIFF is images: "not an image file" would send its owner looking for damage.
    (tmp_path / "scan.tif").write_bytes(b"II*\0")
    (tmp_path / "anim.GIF").write_bytes(b"GIF89a")
    skipped = []
    list_images(tmp_path, skipped=skipped)
    assert {Path(path).name: reason.split(";")[0] for path, reason in skipped} == {
        "scan.tif": "a TIFF image, a format not read here (JPEG, PNG, WebP or BMP, whatever the file's name): convert "
                    "it to PNG (lossless) or JPEG",
        "anim.GIF": "a GIF image, a format not read here (JPEG, PNG, WebP or BMP, whatever the file's name): convert "
                    "it to PNG (lossless) or JPEG"}
    assert all("convert it to PNG" in reason for _, reason in skipped)


@pytest.mark.parametrize("name, fmt, extension", [("noext", "JPEG", ".jpg"), ("photo.jpg_large", "JPEG", ".jpg"),
                                                   ("scan", "PNG", ".png"), ("frame.dat", "WebP", ".webp"),
                                                   ("paint", "BMP", ".bmp")])
def test_an_image_whose_name_lacks_its_extension_is_named_as_that_image_with_the_new_name(tmp_path, name, fmt,
                                                                                          extension):
    # It was "not an image file": a JPEG saved without an extension, or as a browser's .jpg_large, is an image the
    # app reads by its content, and the fix is a new name.
    Image.new("RGB", (8, 8)).save(tmp_path / name, format=fmt.upper())
    skipped = []
    assert list_images(tmp_path, skipped=skipped) == []
    [(_, reason)] = skipped
    assert reason == (f"a {fmt} image whose name does not end in {extension} (or another image extension): rename "
                      f"it to {name}{extension} to include it")


def test_list_images_is_sorted(tmp_path):
    for name in ("c.png", "a.png", "b.png", "10.png", "2.png"):
        write_image(tmp_path / name, seed=0)
    names = [path.name for path in list_images(tmp_path)]
    assert names == sorted(names) == ["10.png", "2.png", "a.png", "b.png", "c.png"]


def test_list_images_skips_folders_named_like_images(tmp_path):
    (tmp_path / "album.jpg").mkdir()
    assert list_images(tmp_path) == []


# ---- place_file ------------------------------------------------------------------------------------


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_place_file_copies_to_a_free_name(tmp_path):
    source = write(tmp_path / "src" / "cat.jpg", b"cat")
    placed, outcome = place_file(source, tmp_path / "dst" / "cat.jpg")
    assert (placed, outcome) == (tmp_path / "dst" / "cat.jpg", Outcome.COPIED)
    assert placed.read_bytes() == b"cat" and source.exists()


def test_place_file_never_overwrites_different_content(tmp_path):
    source = write(tmp_path / "src" / "cat.jpg", b"new cat")
    taken = write(tmp_path / "dst" / "cat.jpg", b"old cat")
    placed, outcome = place_file(source, taken)
    assert outcome is Outcome.RENAMED
    assert taken.read_bytes() == b"old cat"
    digest = hashlib.sha256(b"new cat").hexdigest()
    assert placed == tmp_path / "dst" / f"cat_{digest[:8]}.jpg" and placed.read_bytes() == b"new cat"


def test_a_name_whose_digest_names_are_taken_too_is_numbered_from_2(tmp_path):
    digest = hashlib.sha256(b"new cat").hexdigest()
    for name in ("cat", f"cat_{digest[:8]}", f"cat_{digest[:16]}", f"cat_{digest}"):
        write(tmp_path / "dst" / f"{name}.jpg", b"another cat")
    placed, outcome = place_file(write(tmp_path / "src" / "cat.jpg", b"new cat"), tmp_path / "dst" / "cat.jpg")
    assert outcome is Outcome.RENAMED and placed.name == f"cat_{digest[:8]}_2.jpg"


def test_place_files_places_each_as_place_file_does_also_where_a_name_was_taken_since(tmp_path, monkeypatch):
    sources = [write(tmp_path / "src" / f"{name}.jpg", name.encode()) for name in ("cat", "dog", "owl", "bee")]
    write(tmp_path / "dst" / "dog.jpg", b"dog")  # the same content: identical
    write(tmp_path / "dst" / "owl.jpg", b"another owl")  # other content: placed beside it
    real_write_new_files = files.write_new_files

    def taken_meanwhile(batch):  # another program takes bee.jpg between the check and the write
        write(tmp_path / "dst" / "bee.jpg", b"another bee")
        return real_write_new_files(batch)

    monkeypatch.setattr(files, "write_new_files", taken_meanwhile)
    placed = files.place_files([(source, tmp_path / "dst" / source.name, None) for source in sources])

    digest = {name: hashlib.sha256(name.encode()).hexdigest()[:8] for name in ("owl", "bee")}
    assert placed == [(tmp_path / "dst" / "cat.jpg", Outcome.COPIED), (tmp_path / "dst" / "dog.jpg", Outcome.IDENTICAL),
                      (tmp_path / "dst" / f"owl_{digest['owl']}.jpg", Outcome.RENAMED),
                      (tmp_path / "dst" / f"bee_{digest['bee']}.jpg", Outcome.RENAMED)]
    assert [target.read_bytes() for target, _ in placed] == [b"cat", b"dog", b"owl", b"bee"]
    assert (tmp_path / "dst" / "bee.jpg").read_bytes() == b"another bee"
    assert sorted(path.name for path in (tmp_path / "dst").iterdir()) == sorted(
        ["cat.jpg", "dog.jpg", "owl.jpg", "bee.jpg", placed[2][0].name, placed[3][0].name])


@syncs_a_batch
def test_place_files_holds_about_copy_batch_bytes_of_copies_at_a_time(tmp_path, monkeypatch):
    sources = [write(tmp_path / "src" / f"{name}.jpg", name.encode()) for name in ("cat", "dog", "owl")]
    monkeypatch.setattr(files, "COPY_BATCH_BYTES", 4)
    calls = record_disk_waits(monkeypatch)

    files.place_files([(source, tmp_path / "dst" / source.name, None) for source in sources])

    assert calls == [("sync", ""), ("sync", "")]  # cat and dog (6 bytes), then owl
    assert [(tmp_path / "dst" / source.name).read_bytes() for source in sources] == [b"cat", b"dog", b"owl"]


def test_place_file_skips_identical_content_without_writing(tmp_path):
    source = write(tmp_path / "src" / "cat.jpg", b"cat")
    target = write(tmp_path / "dst" / "cat.jpg", b"cat")
    before = target.stat()
    assert place_file(source, target) == (target, Outcome.IDENTICAL)
    # the same file, not written again; with the source's time, as a copy killed before its time was copied gets it
    assert (target.stat().st_ino, target.stat().st_mtime_ns) == (before.st_ino, source.stat().st_mtime_ns)


def test_place_file_rerun_recognises_its_renamed_copy(tmp_path):
    source = write(tmp_path / "src" / "cat.jpg", b"new cat")
    write(tmp_path / "dst" / "cat.jpg", b"old cat")
    first, _ = place_file(source, tmp_path / "dst" / "cat.jpg")
    again, outcome = place_file(source, tmp_path / "dst" / "cat.jpg")
    assert (again, outcome) == (first, Outcome.IDENTICAL)
    assert sorted(path.name for path in (tmp_path / "dst").iterdir()) == ["cat.jpg", first.name]


def test_place_file_finding_its_content_in_a_file_of_another_owner_places_it_without_its_time(tmp_path, monkeypatch):
    """A shared train folder holds a colleague's file with these bytes: setting its time is its owner's to do
    (EPERM), and the identical file found is placed all the same, as before the time came to be kept."""
    source = write(tmp_path / "src" / "cat.jpg", b"cat")
    target = write(tmp_path / "dst" / "cat.jpg", b"cat")
    os.utime(source, (1_000_000_000, 1_000_000_000))

    def not_the_owner(*args, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(shutil, "copystat", not_the_owner)

    assert place_file(source, target, move=True) == (target, Outcome.IDENTICAL)
    assert not source.exists() and target.read_bytes() == b"cat"


def test_place_file_move_removes_the_source_once_placed(tmp_path):
    source = write(tmp_path / "src" / "cat.jpg", b"cat")
    placed, outcome = place_file(source, tmp_path / "dst" / "cat.jpg", move=True)
    assert outcome is Outcome.MOVED and placed.read_bytes() == b"cat" and not source.exists()


def test_place_file_move_of_a_symlink_places_the_bytes_and_leaves_its_target(tmp_path):
    # Hard-linking or renaming the link itself would leave a link that a relative target no longer reaches.
    outside = write(tmp_path / "elsewhere" / "cat.jpg", b"cat")
    source = tmp_path / "src" / "class" / "cat.jpg"
    source.parent.mkdir(parents=True)
    source.symlink_to(os.path.relpath(outside, source.parent))
    placed, outcome = place_file(source, tmp_path / "dst" / "deeper" / "class" / "cat.jpg", move=True)
    assert outcome is Outcome.MOVED and not placed.is_symlink() and placed.read_bytes() == b"cat"
    assert not os.path.lexists(source) and outside.read_bytes() == b"cat"


def test_place_file_move_onto_identical_content_removes_the_source(tmp_path):
    source = write(tmp_path / "src" / "cat.jpg", b"cat")
    target = write(tmp_path / "dst" / "cat.jpg", b"cat")
    assert place_file(source, target, move=True) == (target, Outcome.IDENTICAL)
    assert not source.exists() and target.read_bytes() == b"cat"


def test_place_file_move_keeps_the_source_when_the_copy_fails(tmp_path, monkeypatch):
    source = write(tmp_path / "src" / "cat.jpg", b"cat")

    def cross_device(*args, **kwargs):
        raise OSError(errno.EXDEV, "cross-device link")

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "no space left on device")

    monkeypatch.setattr(files.os, "link", cross_device)
    monkeypatch.setattr(files, "write_new", disk_full)
    with pytest.raises(OSError, match="no space"):
        place_file(source, tmp_path / "dst" / "cat.jpg", move=True)
    assert source.read_bytes() == b"cat"
    assert not (tmp_path / "dst" / "cat.jpg").exists()


def test_place_file_move_across_file_systems_copies_then_removes(tmp_path, monkeypatch):
    source = write(tmp_path / "src" / "cat.jpg", b"cat")

    def cross_device(*args, **kwargs):
        raise OSError(errno.EXDEV, "cross-device link")

    monkeypatch.setattr(files.os, "link", cross_device)
    placed, outcome = place_file(source, tmp_path / "dst" / "cat.jpg", move=True)
    assert outcome is Outcome.MOVED and placed.read_bytes() == b"cat" and not source.exists()


def test_place_file_keeps_the_modification_time_of_what_it_copies_or_moves_across_file_systems(tmp_path,
                                                                                             monkeypatch):
    """A copy placed beside a taken name, and a move that cannot link, keep the source's time as a move does."""
    stamp = 1_000_000_000
    renamed = write(tmp_path / "src" / "cat.jpg", b"new cat")
    os.utime(renamed, (stamp, stamp))
    write(tmp_path / "dst" / "cat.jpg", b"old cat")
    placed, outcome = place_file(renamed, tmp_path / "dst" / "cat.jpg")
    assert outcome is Outcome.RENAMED and placed.stat().st_mtime == stamp

    def cross_device(*args, **kwargs):
        raise OSError(errno.EXDEV, "cross-device link")

    moved = write(tmp_path / "src" / "dog.jpg", b"dog")
    os.utime(moved, (stamp, stamp))
    monkeypatch.setattr(files.os, "link", cross_device)
    placed, outcome = place_file(moved, tmp_path / "dst" / "dog.jpg", move=True)
    assert outcome is Outcome.MOVED and placed.stat().st_mtime == stamp


def killed_as_it_copies_the_time(monkeypatch) -> None:
    """The next shutil.copystat raises KeyboardInterrupt, as a kill between a copy's bytes and its time stops it."""
    def killed(source, target, **kwargs):
        monkeypatch.undo()
        raise KeyboardInterrupt

    monkeypatch.setattr(files.shutil, "copystat", killed)


def test_a_copy_killed_between_its_bytes_and_its_time_gets_the_time_when_placed_again(tmp_path, monkeypatch):
    """Killed after the bytes and before the source's time was copied, the re-run found the file identical and left
    it with the time of the killed copy, where an uninterrupted copy has the source's."""
    stamp = 1_000_000_000
    source = write(tmp_path / "src" / "cat.jpg", b"cat")
    os.chmod(source, 0o640)
    os.utime(source, (stamp, stamp))
    killed_as_it_copies_the_time(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        place_file(source, tmp_path / "dst" / "cat.jpg")
    placed, outcome = place_file(source, tmp_path / "dst" / "cat.jpg")
    assert outcome is Outcome.IDENTICAL
    assert (placed.stat().st_mtime, placed.stat().st_mode & 0o777) == (stamp, 0o640)


def test_a_move_across_file_systems_killed_between_its_bytes_and_its_time_keeps_the_time_of_its_source(
        tmp_path, monkeypatch):
    """As MoveAugmentedImages' move to another disk, killed after the copy's bytes: the re-run deleted the source
    and kept the copy with the time of the killed copy, the source's time lost for good."""
    stamp = 1_000_000_000
    source = write(tmp_path / "src" / "dog.jpg", b"dog")
    os.utime(source, (stamp, stamp))

    def cross_device(*args, **kwargs):
        raise OSError(errno.EXDEV, "cross-device link")

    monkeypatch.setattr(files.os, "link", cross_device)
    killed_as_it_copies_the_time(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        place_file(source, tmp_path / "dst" / "dog.jpg", move=True)
    placed, outcome = place_file(source, tmp_path / "dst" / "dog.jpg", move=True)
    assert outcome is Outcome.IDENTICAL and not source.exists()
    assert placed.stat().st_mtime == stamp


def test_place_file_move_never_deletes_the_only_copy(tmp_path):
    digest = hashlib.sha256(b"new cat").hexdigest()
    write(tmp_path / "cat.jpg", b"old cat")
    source = write(tmp_path / f"cat_{digest[:8]}.jpg", b"new cat")
    place_file(source, tmp_path / "cat.jpg", move=True)
    assert source.exists(), "the only copy of b'new cat' was deleted"


# ---- atomic writes ------------------------------------------------------------------------------------


def test_atomic_write_leaves_no_partial_file_when_interrupted(tmp_path):
    target = tmp_path / "model.json"
    with pytest.raises(RuntimeError), atomic_write(target) as stream:
        stream.write(b"half of the")
        raise RuntimeError("interrupted mid-write")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path):
    target = write(tmp_path / "model.json", b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as stream:
        stream.write(b"new but incomplete")
        raise RuntimeError("interrupted mid-write")
    assert list(tmp_path.iterdir()) == [target] and target.read_bytes() == b"old"


def _write_with_atomic_write(path: Path) -> None:
    with atomic_write(path) as stream:
        stream.write(b"data")


@pytest.mark.parametrize("when", ["as the open returns", "at the next call"])
@pytest.mark.parametrize("write", [lambda path: files.atomic_write_bytes(path, b"data"), _write_with_atomic_write],
                         ids=["atomic_write_bytes", "atomic_write"])
def test_ctrl_c_just_after_the_temporary_file_is_made_leaves_no_file(tmp_path, monkeypatch, write, when):
    """Python raises a Ctrl-C that came during os.open as the open returns (CPython checks after a call to C) or at
    the next call of a Python function: either came before the clean-up was in place (the next call was a context
    manager's exit), and DataUnZipper left a hidden 0-byte file behind."""
    real_open, made = os.open, []

    def open_and_note(*args, **kwargs):
        made.append(real_open(*args, **kwargs))
        if when == "as the open returns":
            raise KeyboardInterrupt
        return made[-1]

    def ctrl_c_at_the_next_call(frame, event, arg):
        if event == "call" and made:
            sys.settrace(None)
            raise KeyboardInterrupt
        return None

    monkeypatch.setattr(files.os, "open", open_and_note)
    if when == "at the next call":
        sys.settrace(ctrl_c_at_the_next_call)
    try:
        with pytest.raises(KeyboardInterrupt):
            write(tmp_path / "a.jpg")
    finally:
        sys.settrace(None)
    assert made and list(tmp_path.iterdir()) == []


def test_atomic_write_text_writes_utf8(tmp_path):
    atomic_write_text(tmp_path / "sub" / "card.md", "Grad-CAM für Bilder\n")
    assert (tmp_path / "sub" / "card.md").read_bytes() == "Grad-CAM für Bilder\n".encode()


def test_json_is_written_atomically_and_read_back_or_none_when_missing(tmp_path):
    path = tmp_path / "run" / "model.json"
    path.parent.mkdir()
    assert files.read_json(path) is None
    files.write_json(path, {"data": Path("d"), "loss": float("nan"), "name": "é"})
    assert path.read_text(encoding="utf-8").endswith("\n") and "é" in path.read_text(encoding="utf-8")
    content = files.read_json(path)
    assert content["data"] == "d" and content["loss"] != content["loss"]  # NaN kept, Path as text
    with pytest.raises(ValueError):
        files.write_json(path, {"loss": float("nan")}, strict=True)  # metrics.json stays strict JSON
    assert files.read_json(path)["data"] == "d"  # the refused write left the file as it was


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    atomic_write_text(tmp_path / "metrics.json", "{}")
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o666 & ~umask


# ---- small helpers --------------------------------------------------------------------------------------


def test_sha256_file_matches_hashlib(tmp_path):
    data = random.Random(0).randbytes(3 * 1024 * 1024 + 5)  # more than one read chunk, the same every run
    assert sha256_file(write(tmp_path / "blob", data)) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(("num_bytes", "text"), [(0, "0 B"), (1536, "1.5 KB"), (5 * 1024**3, "5.0 GB")])
def test_human_bytes(num_bytes, text):
    assert human_bytes(num_bytes) == text


def test_place_file_move_finishes_a_move_cut_off_after_the_hard_link(tmp_path):
    source = tmp_path / "in" / "cat.jpg"
    source.parent.mkdir()
    source.write_bytes(b"cat")
    target = tmp_path / "out" / "cat.jpg"
    target.parent.mkdir()
    os.link(source, target)  # the state a move leaves when cut off between link and unlink

    placed, outcome = place_file(source, target, move=True)

    assert (placed, outcome) == (target, Outcome.IDENTICAL)
    assert not source.exists() and target.read_bytes() == b"cat"


# ---- what the file system refuses, and what a kill or a power cut leaves --------------------------


def test_list_images_lists_a_symlinked_sub_folder_without_entering_it(tmp_path):
    write_image(tmp_path / "elsewhere" / "outside.png", seed=1)
    write_image(tmp_path / "class" / "inside.png", seed=2)
    (tmp_path / "class" / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "class" / "loop").symlink_to("loop")
    skipped = []
    assert [path.name for path in list_images(tmp_path / "class", recursive=True, skipped=skipped)] == ["inside.png"]
    assert {Path(path).name: reason.split(":")[0] for path, reason in skipped} == {
        "linked": "symlink to a folder", "loop": "symlink that leads nowhere (its target is missing, or it is a loop)"}


def test_fit_name_cuts_only_long_names_and_keeps_them_apart():
    assert files.fit_name("cat.jpg") == "cat.jpg"
    long_a, long_b = "é" * 200 + "a.jpg", "é" * 200 + "b.jpg"  # 405 bytes each, the same first 250
    fitted = {files.fit_name(long_a), files.fit_name(long_b)}
    assert len(fitted) == 2 and all(len(name.encode()) <= 255 and name.endswith(".jpg") for name in fitted)
    assert files.fit_name(long_a) == files.fit_name(long_a)
    assert len(files.fit_name("a." + "b" * 300).encode()) <= 255  # a "suffix" that is most of the name


def test_write_new_syncs_the_bytes_before_the_name_appears(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_link = os.fsync, os.link
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "link", lambda *args, **kwargs: (calls.append("link"), real_link(*args, **kwargs))[1])
    files.write_new(tmp_path / "a.bin", b"data")
    assert calls == ["fsync", "link"] and (tmp_path / "a.bin").read_bytes() == b"data"


@pytest.mark.skipif(files._syncfs is None, reason="no syncfs here: each file is fsynced")
def test_write_new_files_syncs_a_batch_once_before_any_name_appears(tmp_path, monkeypatch):
    """One sync for the batch (one fsync a file made DataAugmentation's copies wait on the disk), and still no
    name before the bytes are on disk; a path taken already is left as it is and answered False."""
    (tmp_path / "taken.jpg").write_bytes(b"someone else's")
    calls = []
    real_syncfs, real_link = files._syncfs, os.link
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append("fsync"))
    monkeypatch.setattr(files, "_syncfs", lambda handle: (calls.append("sync"), real_syncfs(handle))[1])
    monkeypatch.setattr(os, "link", lambda *args, **kwargs: (calls.append("link"), real_link(*args, **kwargs))[1])
    batch = [(str(tmp_path / f"{index}.jpg"), bytes([index]) * 10) for index in range(3)]
    assert files.write_new_files([*batch, (str(tmp_path / "taken.jpg"), b"mine")]) == [True, True, True, False]
    assert calls == ["sync", "link", "link", "link", "link"]
    assert all(Path(path).read_bytes() == data for path, data in batch)
    assert (tmp_path / "taken.jpg").read_bytes() == b"someone else's"
    assert sorted(os.listdir(tmp_path)) == ["0.jpg", "1.jpg", "2.jpg", "taken.jpg"]  # no temporary file left


@pytest.mark.skipif(not hasattr(os, "O_TMPFILE"), reason="files without a name are Linux's (O_TMPFILE)")
def test_a_batch_killed_before_its_names_appear_leaves_nothing_in_the_folder(tmp_path):
    """Killed (kill -9, a power cut) while a batch waits on the disk: no copy, and no hidden temporary file that only
    a re-run of the same script would clear. The files have no name until they are on the disk."""
    import signal
    import subprocess

    from conftest import REPO

    killed = subprocess.run([sys.executable, "-c", "import os, signal; from realvsai import files\n"
                             "files._syncfs = lambda handle: os.kill(os.getpid(), signal.SIGKILL)\n"
                             f"files.write_new_files([({str(tmp_path / 'a.jpg')!r}, b'a'), "
                             f"({str(tmp_path / 'b.jpg')!r}, b'b')])"], cwd=REPO)
    assert killed.returncode == -signal.SIGKILL
    assert os.listdir(tmp_path) == []


def assert_a_batch_beside_a_taken_path_written(folder: Path) -> None:
    """write_new_files of two new paths and one taken: the two written, the taken one as it was, nothing else left."""
    (folder / "taken.jpg").write_bytes(b"someone else's")
    batch = [(str(folder / f"{index}.jpg"), bytes([index]) * 10) for index in range(2)]
    assert files.write_new_files([*batch, (str(folder / "taken.jpg"), b"mine")]) == [True, True, False]
    assert all(Path(path).read_bytes() == data for path, data in batch)
    assert (folder / "taken.jpg").read_bytes() == b"someone else's"
    assert sorted(os.listdir(folder)) == ["0.jpg", "1.jpg", "taken.jpg"]


@pytest.mark.skipif(not hasattr(os, "O_TMPFILE"), reason="files without a name are Linux's (O_TMPFILE)")
@pytest.mark.parametrize("no_unnamed_files", [errno.EOPNOTSUPP, errno.EISDIR, errno.EMFILE])
def test_a_file_system_without_unnamed_files_takes_a_batch_under_temporary_names(tmp_path, monkeypatch,
                                                                                 no_unnamed_files):
    """Where O_TMPFILE fails (a file system without it, a kernel before 3.11, or other threads holding the open
    files the process may have), nothing is lost: the batch is written as before, once the handles it held are
    closed, and each path taken already is left as it is."""
    real_open, names = os.open, []

    def open_file(path, flags, *args, **kwargs):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(no_unnamed_files, os.strerror(no_unnamed_files), path)
        names.append(os.path.basename(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_file)
    assert_a_batch_beside_a_taken_path_written(tmp_path)
    assert any(files.temporary_of(name) for name in names)  # written under temporary names


@pytest.mark.skipif(not hasattr(os, "O_TMPFILE"), reason="files without a name are Linux's (O_TMPFILE)")
def test_a_proc_whose_fd_links_do_not_link_takes_the_batch_under_temporary_names(tmp_path, monkeypatch):
    """A file without a name takes its name through /proc/self/fd/N. Where that /proc shows the links but they do
    not lead to the open file (a sandbox's own /proc), linking found nothing, and the batch failed with "No such
    file or directory" naming the user's first file. The batch is written under temporary names instead."""
    real_link, linked, through_proc = os.link, [], []

    def link(source, target, *args, src_dir_fd=None, **kwargs):
        if src_dir_fd is not None:  # /proc/self/fd/N
            through_proc.append(source)
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), source)
        linked.append(os.path.basename(source))
        return real_link(source, target, *args, src_dir_fd=src_dir_fd, **kwargs)

    monkeypatch.setattr(os, "link", link)
    monkeypatch.setattr(files._unnamed_files, "linkable", True)  # put back after the test
    assert_a_batch_beside_a_taken_path_written(tmp_path)
    assert linked and all(files.temporary_of(name) for name in linked)  # written under temporary names

    # The next batch of the run goes straight to temporary names: no write and sync the links cannot name.
    assert files.write_new_files([(str(tmp_path / "2.jpg"), b"2")]) == [True] and len(through_proc) == 1


@pytest.mark.skipif(not hasattr(os, "O_TMPFILE"), reason="files without a name are Linux's (O_TMPFILE)")
def test_a_batch_of_more_files_than_the_process_may_hold_open_is_written_all_the_same(tmp_path):
    """Files without a name stay open until the batch is on the disk: a split writes a batch of 256 a thread, one
    thread a core. Where that would take more than a share of the process's limit of open files (1024 is common),
    the batch is written as before, under temporary names, and handles are left for the files the process reads."""
    import subprocess

    from conftest import REPO

    code = ("import resource; from realvsai import files\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
            f"batch = [(f'{tmp_path}/{{index}}.jpg', bytes([index])) for index in range(100)]\n"
            "print(sum(files.write_new_files(batch)))")
    process = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert process.returncode == 0, process.stderr[-2000:]
    assert process.stdout.strip() == "100"
    assert sorted(os.listdir(tmp_path)) == sorted(f"{index}.jpg" for index in range(100))
    assert all((tmp_path / f"{index}.jpg").read_bytes() == bytes([index]) for index in range(100))


def test_write_new_files_that_fails_leaves_no_file_and_names_the_users_file(tmp_path):
    batch = [(str(tmp_path / "a.jpg"), b"a"), (str(tmp_path / "missing" / "b.jpg"), b"b")]
    with pytest.raises(FileNotFoundError) as error:
        files.write_new_files(batch)
    assert error.value.filename == str(tmp_path / "missing" / "b.jpg")
    assert os.listdir(tmp_path) == []  # neither a.jpg nor its temporary file


def test_a_failed_write_names_the_users_file_not_the_hidden_temporary(tmp_path, monkeypatch):
    def disk_full(source, target, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", os.fspath(source), os.fspath(target))

    monkeypatch.setattr(os, "link", disk_full)
    monkeypatch.setattr(os, "replace", disk_full)
    for write in (files.write_new, files.atomic_write_bytes):
        with pytest.raises(OSError) as error:
            write(tmp_path / "photo.jpg", b"data")
        assert error.value.filename == str(tmp_path / "photo.jpg")
    assert sorted(os.listdir(tmp_path)) == []


def test_remove_temporaries_removes_only_what_a_killed_write_left(tmp_path):
    names = ["cat.jpg", "dog.jpg", ".dog.jpg.tmp", "cat.jpg.tmp", ".other.jpg.123.tmp",
             ".cat.jpg.backup.tmp", ".dog.jpg.my copy.tmp"]  # a user's own files, named alike
    for name in [*names, ".cat.jpg.4242.tmp", ".dog.jpg.x7k2_ab9.tmp"]:  # write_new's pid, mkstemp's 8 random
        (tmp_path / name).write_bytes(b"x")
    files.remove_temporaries(tmp_path, ["cat.jpg", "dog.jpg"])
    assert sorted(os.listdir(tmp_path)) == sorted(names)


def test_csv_lists_keep_a_file_name_that_is_not_utf8(tmp_path):
    name = os.fsdecode(b"caf\xe9.png")
    files.write_csv(tmp_path / "list.csv", ["source"], [[name]])
    files.append_csv(tmp_path / "list.csv", ["source"], [["b.png"]])
    assert (tmp_path / "list.csv").read_bytes() == b"source\ncaf\xe9.png\nb.png\n"


def test_appending_to_a_list_this_project_did_not_write_is_refused_and_keeps_it(tmp_path):
    """A list saved by a spreadsheet with ';' between its columns lost every row to empty ones, without a word."""
    listed = tmp_path / "merge-refused.csv"
    listed.write_text("merged_at;source;reason\n2026-11-01T10:00:00;a.png;two splits\n")
    before = listed.read_bytes()
    with pytest.raises(UserError) as refused:
        files.append_csv(listed, ["merged_at", "source", "reason"], [["now", "b.png", "why"]], key=("source",))
    assert str(refused.value) == (
        f"{listed} is not a list this project wrote: it has no column 'source' (a spreadsheet may have saved it "
        "with other separators). Move it away, or save it again as comma-separated, and run the same command "
        "again.")
    assert listed.read_bytes() == before


def test_a_list_a_windows_editor_saved_with_a_byte_order_mark_keeps_its_first_column(tmp_path):
    """Excel's "CSV UTF-8" and older Notepad write a byte order mark and CRLF: the first column's name read as
    "\\ufeffmerged_at", so every row lost its merge time when the next merge added to the list."""
    listed = tmp_path / "merge-refused.csv"
    listed.write_bytes(b"\xef\xbb\xbfmerged_at,source,reason\r\n2026-11-01T10:00:00,a.png,two splits\r\n")
    files.append_csv(listed, ["merged_at", "source", "reason"], [["now", "b.png", "why"]], key=("source",))
    assert files.read_list(listed, ["merged_at", "source", "reason"]) == [
        ["2026-11-01T10:00:00", "a.png", "two splits"], ["now", "b.png", "why"]]


def test_a_second_claim_on_a_folder_being_worked_on_is_refused_in_one_line_naming_the_first(tmp_path):
    folder = tmp_path / "data"
    second = files.working_on([tmp_path / "other", tmp_path / "." / "data"], "DataAugmentation.py")
    with files.working_on([folder], "DataMerger.py"), pytest.raises(UserError) as error, second:
        pass
    message = str(error.value)
    assert "\n" not in message and str(folder) in message and "DataMerger.py" in message
    assert "wait for it to finish" in message
    with files.working_on([folder], "DataAugmentation.py"):  # free again once the first run ended
        pass


def test_a_claim_holds_its_folder_in_any_letter_case_or_accent_encoding(tmp_path):
    # models/Merged and models/merged are one folder on macOS and Windows: claimed apart, two trainings (a run and a
    # --resume --name merged) wrote it at once there.
    claimed = tmp_path / "models" / "Merged-caf\u00e9"
    with files.working_on([claimed], "ModelTraining.py"):
        for other in (tmp_path / "models" / "merged-caf\u00e9", tmp_path / "MODELS" / "Merged-cafe\u0301"):
            assert files.claimed_by(other) == f"ModelTraining.py (process {os.getpid()})"
            with pytest.raises(UserError, match="wait for it to finish"), files.working_on([other], "DataDeleter.py"):
                pass


@pytest.mark.parametrize(("paths", "reading"), [(["data", "Data"], []), (["raw/out"], ["Raw"])],
                         ids=["one-folder", "one-inside-the-other"])
def test_a_run_on_folders_that_are_one_on_macos_and_windows_is_refused_in_one_line(tmp_path, paths, reading):
    # There DataMerger.py Data --into data --move merged a folder into itself, deleting each file as "identical",
    # and a split wrote inside its SOURCE; claimed apart, such a run found its own claim taken.
    second = files.working_on([tmp_path / path for path in paths], "DataMerger.py",
                              reading=[tmp_path / path for path in reading])
    with pytest.raises(UserError) as error, second:
        pass
    message = str(error.value)
    assert "\n" not in message and "one folder on macOS and Windows" in message and "by DataMerger.py" not in message


@pytest.mark.skipif(os.name == "nt", reason="Windows' file locks have no shared mode: claims there are per path")
def test_a_claim_on_a_folder_inside_or_around_one_being_worked_on_is_refused(tmp_path):
    data, train = tmp_path / "data", tmp_path / "data" / "train"
    second = files.working_on([train], "DataDeleter.py")
    with files.working_on([data], "DataAugmentation.py"), pytest.raises(UserError) as inside, second:
        pass
    message = str(inside.value)
    assert "\n" not in message and f"{train} is inside {data}" in message and "DataAugmentation.py" in message
    second = files.working_on([data], "MoveAugmentedImages.py")
    with files.working_on([train], "DataDeleter.py"), pytest.raises(UserError) as around, second:
        pass
    message = str(around.value)
    assert "\n" not in message and f"another run reads {data} or works on a folder inside it" in message
    assert "wait for it to finish" in message


@pytest.mark.skipif(os.name == "nt", reason="Windows' file locks have no shared mode: claims there are per path")
def test_a_folder_being_read_is_refused_to_its_writers_and_shared_with_its_readers(tmp_path):
    data, train = tmp_path / "data", tmp_path / "data" / "train"
    with files.working_on([tmp_path / "models" / "run"], "ModelTraining.py", reading=[data, train]):
        for writer, path in (("DataMerger.py", data), ("DataDeleter.py", train)):
            with pytest.raises(UserError) as refused, files.working_on([path], writer):
                pass
            message = str(refused.value)
            assert "\n" not in message and f"another run reads {path} or works on a folder inside it" in message
            assert "wait for it to finish" in message
        with files.working_on([tmp_path / "models" / "other"], "ModelTraining.py", reading=[data, train]):
            pass  # a second training on the same data
        with files.working_on([tmp_path / "raw"], "DataSplitD2.py"):
            pass  # and a run beside it
    second = files.working_on([], "ModelTraining.py", reading=[data])
    with files.working_on([data], "DataMerger.py"), pytest.raises(UserError) as refused, second:
        pass
    assert str(refused.value) == (f"{data} is being worked on by DataMerger.py (process {os.getpid()}); wait for it "
                                  "to finish (or stop it), then run the command again.")
    with files.working_on([data], "DataMerger.py"):  # all free again
        pass


@pytest.mark.skipif(os.name == "nt", reason="Windows' file locks have no shared mode: claims there are per path")
def test_a_folder_being_read_is_refused_to_a_writer_of_anything_inside_it_and_the_other_way_round(tmp_path):
    """A folder read (a split's SOURCE, a training's train/) was refused only to a claim of itself or of a folder
    around it: a deletion of one of its files, or of a folder deeper than those the reader named, went ahead, and
    a split read a folder while a deletion inside it went on."""
    raw = tmp_path / "raw"
    image, deeper = raw / "train" / "REAL" / "a.png", raw / "train" / "REAL" / "trip"
    with files.working_on([tmp_path / "data"], "DataSplitD2.py", reading=[raw]):
        for path in (image, deeper):
            with pytest.raises(UserError) as refused, files.working_on([path], "DataDeleter.py"):
                pass
            message = str(refused.value)
            assert "\n" not in message and f"{path} is inside {raw}, which another run reads" in message
            assert "wait for it to finish" in message
        with files.working_on([tmp_path / "raw-2" / "a.png"], "DataDeleter.py"):
            pass  # beside it
        with files.working_on([tmp_path / "data-2"], "DataSplitD2.py", reading=[raw]):
            pass  # a second reader
    for path in (image, deeper):
        second = files.working_on([tmp_path / "data"], "DataSplitD2.py", reading=[raw])
        with files.working_on([path], "DataDeleter.py"), pytest.raises(UserError) as refused, second:
            pass
        message = str(refused.value)
        assert "\n" not in message and f"another run works on a folder or file inside {raw}" in message
        assert "wait for it to finish" in message
    with files.working_on([image], "DataDeleter.py"), files.working_on([raw / "test"], "DataSplitD2.py"):
        pass  # all free again


@pytest.mark.skipif(os.name == "nt", reason="Windows' file locks have no shared mode: claims there are per path")
def test_a_run_that_reads_a_folder_and_writes_inside_it_goes_ahead_and_holds_all_of_it(tmp_path):
    raw = tmp_path / "raw"
    first, second = (files.working_on([raw / "split"], "DataSplitD1.py", reading=[raw]),
                      files.working_on([], "DataZipper.py", reading=[raw]))
    with first, pytest.raises(UserError) as refused, second:
        pass
    assert f"{raw} is being worked on by DataSplitD1.py" in str(refused.value)
    with files.working_on([tmp_path / "data"], "DataMerger.py", reading=[tmp_path / "data" / "art"]):
        pass  # a merge of a source inside its target


def test_claims_on_folders_side_by_side_or_one_run_s_nested_folders_go_ahead(tmp_path):
    with files.working_on([tmp_path / "data" / "art"], "DataSplitD1.py"):
        with files.working_on([tmp_path / "data" / "cifake"], "DataSplitD2.py"):
            pass
        with files.working_on([tmp_path / "raw" / "art", tmp_path / "raw"], "DataSplitD1.py"):
            pass
    with files.working_on([tmp_path / "data"], "DataMerger.py"):  # all free again
        pass


def test_a_killed_run_leaves_no_claim_behind(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from realvsai import files\n"
                               f"with files.working_on([{str(tmp_path)!r}], 'DataSplitD2.py'):\n"
                               "    print('held', flush=True); time.sleep(60)"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=r"DataSplitD2\.py"), files.working_on([tmp_path], "DataMerger.py"):
            pass
    finally:
        holder.kill()
        holder.wait()
    with files.working_on([tmp_path], "DataMerger.py"):
        pass


def _lock_file_of(path: Path) -> Path:
    """The lock file ``files.working_on`` claims ``path`` with."""
    return files._claim_file(Path(path).resolve())


@pytest.mark.skipif(os.name == "nt", reason="Windows cannot remove a file that is open")
def test_a_claim_removes_its_lock_files_when_it_ends(tmp_path):
    train = tmp_path / "data" / "train"
    paths = [train, train.parent, tmp_path]  # the claimed folder and the folders around it that are this test's
    with files.working_on([train], "DataDeleter.py"):
        assert all(_lock_file_of(path).is_file() for path in paths)
    assert not any(_lock_file_of(path).exists() for path in paths)
    with files.working_on([train.parent / "art"], "DataSplitD1.py"):  # a parent still held keeps its file
        with files.working_on([train], "DataDeleter.py"):
            pass
        assert _lock_file_of(train.parent).is_file() and not _lock_file_of(train).exists()
    assert not _lock_file_of(train.parent).exists()


@pytest.mark.skipif(os.name == "nt", reason="Windows cannot remove a file that is open")
def test_a_claim_removes_the_lock_files_of_what_it_writes_inside_and_reads_when_it_ends(tmp_path):
    data, raw = tmp_path / "data", tmp_path / "raw"
    kinds = [files._claim_file(path.resolve(), kind) for path in (data, raw, tmp_path)
             for kind in (files._WRITING_INSIDE, files._READ)]
    with files.working_on([data / "train"], "DataSplitD2.py", reading=[raw]):
        assert files._claim_file(data.resolve(), files._WRITING_INSIDE).is_file()
        assert files._claim_file(raw.resolve(), files._READ).is_file()
    assert not any(path.exists() for path in kinds)


@pytest.mark.skipif(os.name == "nt", reason="Windows cannot remove a file that is open")
def test_a_claim_whose_lock_file_is_removed_before_it_locks_takes_the_new_file(tmp_path, monkeypatch):
    folder, real_lock, removed = tmp_path / "data", files._lock, []

    def lock_after_the_holder_released(handle, *, shared):
        # The run that held the claim ended between this run's opening of the lock file and its lock, and removed it.
        if not shared and not removed:
            removed.append(_lock_file_of(folder))
            _lock_file_of(folder).unlink()
        return real_lock(handle, shared=shared)

    monkeypatch.setattr(files, "_lock", lock_after_the_holder_released)
    with files.working_on([folder], "DataMerger.py"):
        monkeypatch.setattr(files, "_lock", real_lock)
        assert removed and _lock_file_of(folder).is_file()
        with pytest.raises(UserError, match=r"DataMerger\.py"), files.working_on([folder], "DataAugmentation.py"):
            pass


@pytest.mark.skipif(os.name == "nt", reason="Windows' file locks have no shared mode: claims there are per path")
def test_a_claim_waits_out_the_moment_an_ending_run_holds_a_lock_alone_to_remove_its_file(tmp_path):
    """A run that ends takes the lock of each folder around its path alone for a moment, to remove the file: a run
    on a folder beside it that starts just then goes ahead."""
    import threading

    lock = _lock_file_of(tmp_path)
    lock.parent.mkdir(mode=0o700, exist_ok=True)
    with open(lock, "a+", encoding="utf-8") as ending:
        assert files._lock(ending, shared=False)
        threading.Timer(0.05, ending.close).start()
        with files.working_on([tmp_path / "art"], "DataSplitD1.py"):
            pass


@pytest.mark.parametrize("name", ["photo\r2.jpg", "Icon\r", "two\nlines.png"])
def test_a_csv_cell_with_a_line_break_reads_back_as_it_was_written(tmp_path, name):
    # csv quotes only the writer's own line terminator ("\n"): a bare CR (macOS' "Icon\r", a name made by a script)
    # was written as it is, and csv.reader read the row as two; a re-run then found manifest.csv "different".
    import csv

    rows = [["file", "class"], [name, "REAL"], ["plain.jpg", "FAKE"]]
    files.write_csv(tmp_path / "list.csv", rows[0], rows[1:])

    with open(tmp_path / "list.csv", newline="", encoding="utf-8") as stream:
        assert list(csv.reader(stream)) == rows
    assert files.csv_text(rows[0], rows[1:]) == (tmp_path / "list.csv").read_bytes().decode("utf-8")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="syncfs(2) is Linux's")
def test_a_batch_waits_on_its_own_file_system_not_on_every_one(tmp_path, monkeypatch):
    """``os.sync`` flushed every file system of the machine: a batch of copies waited on a USB stick being written
    to, or a network share. A batch syncs the file system it was written to (Linux's syncfs), and nothing else."""
    synced = []
    monkeypatch.setattr(os, "sync", lambda: pytest.fail("os.sync waits on every file system"))
    monkeypatch.setattr(files, "_syncfs", lambda handle: synced.append(os.fstat(handle).st_dev) or 0)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    batch = [(str(tmp_path / folder / f"{index}.jpg"), bytes([index]) * 10) for folder in "ab" for index in range(2)]

    assert files.write_new_files(batch) == [True] * 4
    assert synced == [tmp_path.stat().st_dev]  # one file system, synced once
    assert all(Path(path).read_bytes() == data for path, data in batch)


@pytest.mark.skipif(files._syncfs is None, reason="no syncfs here: each file is fsynced")
def test_a_batch_whose_file_system_fails_to_sync_gives_no_name(tmp_path, monkeypatch):
    """A disk that fails to write (syncfs's EIO) is an OSError naming the folder, and no copy takes its name."""
    import ctypes

    monkeypatch.setattr(files, "_syncfs", lambda handle: (ctypes.set_errno(errno.EIO), -1)[1])
    with pytest.raises(OSError, match="Input/output error") as raised:
        files.write_new_files([(str(tmp_path / "a.jpg"), b"data")])
    assert raised.value.errno == errno.EIO and raised.value.filename == str(tmp_path)
    assert os.listdir(tmp_path) == []


def test_a_few_items_are_shared_among_the_threads():
    """162 photos (real-or-ai-photos) were one chunk of 256, read by one thread however many cores there were."""
    chunks = []
    files.map_in_threads(lambda chunk: chunks.append(len(chunk)) or list(chunk), list(range(16)), 2, "reading")
    assert len(chunks) >= 2 * 2 and sum(chunks) == 16


def test_a_path_found_through_a_symlinked_folder_is_printed_as_typed(tmp_path, monkeypatch):
    """data/ a symlink to a larger disk (../big): the summary of data/raw named ../big/raw, a path never typed."""
    (tmp_path / "big" / "raw").mkdir(parents=True)
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "data").symlink_to(tmp_path / "big")
    monkeypatch.chdir(tmp_path / "project")
    found = files.locate("data/raw")
    assert files.as_typed(found, "data/raw") == Path("data/raw")
    assert files.as_typed(found.with_name("raw.zip"), "data/raw") == Path("data/raw.zip")
    assert files.as_typed(found / "x" / "REAL", "data/raw") == Path("data/raw/x/REAL")
