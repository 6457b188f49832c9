"""Tests for realvsai.archives, DataUnZipper.py and DataZipper.py: hostile archives, resuming, round trips."""

from __future__ import annotations

import contextlib
import datetime
import errno
import importlib
import io
import os
import random
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import time
import zipfile
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import REPO, SHARED_DATASETS, one_error_line, run_script, write_image

from realvsai import archives
from realvsai.archives import UnzipLimits, entry_parts, extract_archive, zip_folder
from realvsai.errors import UserError
from realvsai.files import fit_name
from realvsai.layout import name_key

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
DataUnZipper = importlib.import_module("DataUnZipper")
DataZipper = importlib.import_module("DataZipper")

CONTENT = {
    "train/REAL/a.jpg": b"\xff\xd8 real a",
    "train/REAL/b.jpg": b"\xff\xd8 real b" * 50,
    "train/FAKE/c.jpg": b"\xff\xd8 fake c" * 7,
    "test/FAKE/d.jpg": b"\xff\xd8 fake d" * 3,
    "notes.txt": b"read me\n" * 40,
}


def make_zip(path: Path, entries: dict[str, bytes] | None = None,
             compression: int = zipfile.ZIP_STORED) -> Path:
    """An archive whose entries are written as given, names untouched (so hostile names survive)."""
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in (CONTENT if entries is None else entries).items():
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return path


def make_zip_with_raw_names(path: Path, entries: dict[bytes, bytes]) -> Path:
    """A zip whose entry names are these bytes with the UTF-8 flag (bit 11) unset, as Windows and many other tools
    write them. zipfile flags every non-ASCII name it writes, so each name is written as an ASCII stand-in of the
    same length (one letter repeated), then swapped for the bytes in the local header and the central directory."""
    stand_ins = {name: bytes([ord("A") + index]) * len(name) for index, name in enumerate(entries)}
    make_zip(path, {stand_ins[name].decode(): data for name, data in entries.items()})
    raw = path.read_bytes()
    for name, stand_in in stand_ins.items():
        assert raw.count(stand_in) == 2, "a stand-in must name its entry only"
        raw = raw.replace(stand_in, name)
    path.write_bytes(raw)
    return path


def make_overlapping_zip(path: Path, num_entries: int = 40, kernel_bytes: int = 64_000) -> Path:
    """David Fifield's "quoted overlap" zip bomb: every entry's compressed data ends in one shared kernel.

    Entry i's deflate stream is a stored block quoting entry i+1's local header, then entry i+1's
    own stream, so each entry's compressed bytes hold all the later entries. The kernel is random
    bytes, so each entry (and the sum of all) expands only about once as declared, yet the archive
    writes about ``num_entries`` times its size. Each local header keeps its own name, so zipfile reads it.
    """
    kernel = np.random.default_rng(0).integers(0, 256, kernel_bytes, dtype=np.uint8).tobytes()
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate, as inside a zip
    compressed, content = compressor.compress(kernel) + compressor.flush(), kernel
    entries: list[tuple[bytes, int, int, int, bytes]] = []  # name, CRC, compressed size, size, local header
    for index in reversed(range(num_entries)):
        if entries:  # a non-final stored block quoting the next entry's local header, which follows in the file
            quoted = entries[0][4]
            compressed = b"\x00" + struct.pack("<HH", len(quoted), len(quoted) ^ 0xFFFF) + quoted + compressed
            content = quoted + content
        name, crc = f"file{index:02d}.bin".encode(), zlib.crc32(content)
        header = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, zipfile.ZIP_DEFLATED, 0, 0x21, crc,
                             len(compressed), len(content), len(name), 0) + name
        entries.insert(0, (name, crc, len(compressed), len(content), header))
    body = entries[0][4] + compressed
    central, offset = b"", 0
    for name, crc, compressed_size, size, header in entries:
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, zipfile.ZIP_DEFLATED, 0, 0x21, crc,
                               compressed_size, size, len(name), 0, 0, 0, 0, 0, offset) + name
        offset += len(header) + 5  # the header and the stored-block header that quotes the next one
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(body), 0)
    path.write_bytes(body + central + end)
    return path


def files_under(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` by relative POSIX path, hidden ones included."""
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def assert_refused_untouched(error_text: str, target: Path, outside: Path) -> None:
    assert not target.exists(), "nothing may be written when an archive is refused"
    assert not outside.exists()
    assert "Nothing was extracted" in error_text


# ---- entry names -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "/etc/passwd", "\\evil.txt",
                                  "..\\..\\evil.txt", "C:/Windows/evil.txt", "c:evil.txt"])
def test_entry_parts_rejects_names_that_leave_the_target(name):
    assert entry_parts(name) is None


def test_entry_parts_drops_empty_and_dot_parts_and_splits_backslashes():
    assert entry_parts("./train//REAL\\a.jpg") == ["train", "REAL", "a.jpg"]


# Japanese Windows writes names in Shift-JIS without the UTF-8 flag. The second byte of 表 and ソ is 0x5C, which
# cp437 (zipfile's reading of such names) takes for a backslash, a folder separator.
SHIFT_JIS_CONTENT = {"写真/表.jpg": b"\xff\xd8 omote", "写真/ソフト.jpg": b"\xff\xd8 sofuto", "readme.txt": b"ascii"}


def shift_jis_zip(path: Path) -> Path:
    return make_zip_with_raw_names(path, {name.encode("shift_jis"): data for name, data in SHIFT_JIS_CONTENT.items()})


def test_names_not_flagged_utf8_that_are_valid_utf8_are_read_as_utf8(tmp_path, caplog):
    archive = make_zip_with_raw_names(tmp_path / "mac.zip", {"réel/été.jpg".encode(): b"\xff\xd8 a", b"b.jpg": b"b"})
    with caplog.at_level("WARNING", logger="realvsai"):
        extract_archive(archive, tmp_path / "target")
    assert files_under(tmp_path / "target") == {"réel/été.jpg": b"\xff\xd8 a", "b.jpg": b"b"}
    assert caplog.records == []


def test_names_neither_flagged_nor_valid_utf8_are_read_as_cp437_and_one_warning_names_the_option(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="realvsai"):
        result = extract_archive(shift_jis_zip(tmp_path / "jp.zip"), tmp_path / "target")
    assert result.extracted == 3
    assert len(caplog.records) == 1 and "\n" not in caplog.records[0].getMessage()
    assert "2 entry names are not marked UTF-8" in caplog.records[0].getMessage()
    assert "cp437" in caplog.records[0].getMessage() and "--name-encoding" in caplog.records[0].getMessage()


@pytest.mark.parametrize("encoding, names", [
    ("cp1252", {"Données/Réel/photo_é0.jpg": b"\xff\xd8 a", "Données/Généré/b.jpg": b"\xff\xd8 b"}),
    ("shift_jis", SHIFT_JIS_CONTENT), ("shift_jis", {"テスト.jpg": b"\xff\xd8 a"}),
    ("gbk", {"中文/真实.jpg": b"\xff\xd8 a", "图片.png": b"\x89PNG b"}),
    ("cp866", {"фото/Тест.png": b"\x89PNG a"})],
    ids=["western-windows", "japanese-windows", "katakana", "chinese-windows", "russian-dos"])
def test_the_cp437_warning_names_the_encodings_that_read_the_names_as_letters(tmp_path, caplog, encoding, names):
    """A French Windows zip was read as 'DonnΘes/RΘel' and told "e.g. --name-encoding shift_jis for a Japanese
    Windows zip"; cp1252 reads it. Each encoding named shows how it reads the names, for the user to tell."""
    raw = {name.encode(encoding): data for name, data in names.items()}
    archive = make_zip_with_raw_names(tmp_path / "win.zip", raw)
    with caplog.at_level("WARNING", logger="realvsai"):
        extract_archive(archive, tmp_path / "target")
    first = next(name for name in names if not name.isascii())
    assert f"{encoding} reads them as {first!r}" in caplog.records[0].getMessage(), caplog.records[0].getMessage()


def test_name_encoding_reads_the_names_not_flagged_utf8(tmp_path):
    extract_archive(shift_jis_zip(tmp_path / "jp.zip"), tmp_path / "target", name_encoding="shift_jis")
    assert files_under(tmp_path / "target") == SHIFT_JIS_CONTENT


def test_name_encoding_leaves_names_flagged_utf8_alone(tmp_path):
    extract_archive(make_zip(tmp_path / "a.zip", {"réel/été.jpg": b"a"}), tmp_path / "target", name_encoding="cp866")
    assert files_under(tmp_path / "target") == {"réel/été.jpg": b"a"}


def test_the_zip_slip_check_applies_to_the_decoded_name(tmp_path):
    archive = make_zip_with_raw_names(tmp_path / "a.zip", {b"+AC4ALg-/evil.txt": b"owned", b"ok.txt": b"ok"})
    with pytest.raises(UserError, match=r"'\.\./evil\.txt' would be written outside the target") as error:
        extract_archive(archive, tmp_path / "out" / "target", name_encoding="utf-7")  # +AC4ALg- is ".." in UTF-7
    assert_refused_untouched(str(error.value), tmp_path / "out" / "target", tmp_path / "out" / "evil.txt")


def test_a_0x5c_byte_inside_a_decoded_character_is_not_a_folder_separator(tmp_path):
    archive = make_zip_with_raw_names(tmp_path / "a.zip", {"表..\\ok.txt".encode("shift_jis"): b"ok"})
    extract_archive(archive, tmp_path / "target", name_encoding="shift_jis")  # as cp437: "ò\\..\\ok.txt"
    assert files_under(tmp_path / "target") == {"表../ok.txt": b"ok"}


def test_a_name_the_name_encoding_cannot_read_is_refused_before_anything_is_written(tmp_path):
    archive = make_zip_with_raw_names(tmp_path / "a.zip", {b"ok.txt": b"ok", b"\xff\xfe.jpg": b"x"})
    with pytest.raises(UserError, match=r"b'\\xff\\xfe\.jpg', which is not valid shift_jis.*--name-encoding") as error:
        extract_archive(archive, tmp_path / "target", name_encoding="shift_jis")
    assert "\n" not in str(error.value) and not (tmp_path / "target").exists()


# ---- hostile archives ----------------------------------------------------------------------------


def test_zip_slip_entry_is_refused_and_nothing_is_written(tmp_path):
    archive = make_zip(tmp_path / "slip.zip", {"good.txt": b"fine", "../evil.txt": b"owned"})
    target = tmp_path / "out" / "target"
    with pytest.raises(UserError, match="outside the target") as error:
        extract_archive(archive, target)
    assert_refused_untouched(str(error.value), target, tmp_path / "out" / "evil.txt")


def test_absolute_path_entry_is_refused(tmp_path):
    outside = tmp_path / "absolute_evil.txt"
    archive = make_zip(tmp_path / "abs.zip", {"good.txt": b"fine", str(outside): b"owned"})
    with pytest.raises(UserError, match="outside the target") as error:
        extract_archive(archive, tmp_path / "target")
    assert_refused_untouched(str(error.value), tmp_path / "target", outside)


def test_symlink_entry_is_refused(tmp_path):
    link = zipfile.ZipInfo("passwd")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zip_file:
        zip_file.writestr("good.txt", b"fine")
        zip_file.writestr(link, "/etc/passwd")
    with pytest.raises(UserError, match="symbolic link") as error:
        extract_archive(archive, tmp_path / "target")
    assert_refused_untouched(str(error.value), tmp_path / "target", tmp_path / "passwd")


def test_zip_bomb_ratio_is_refused(tmp_path):
    archive = make_zip(tmp_path / "bomb.zip", {"zeros.bin": bytes(5_000_000)}, zipfile.ZIP_DEFLATED)
    with pytest.raises(UserError, match=r"zip bomb.*--max-ratio") as error:
        extract_archive(archive, tmp_path / "target", limits=UnzipLimits(max_ratio=10))
    assert_refused_untouched(str(error.value), tmp_path / "target", tmp_path / "zeros.bin")


def test_zip_bomb_total_size_is_refused(tmp_path):
    archive = make_zip(tmp_path / "bomb.zip", {"a.bin": bytes(600_000), "b.bin": bytes(600_000)}, zipfile.ZIP_DEFLATED)
    with pytest.raises(UserError, match=r"zip bomb.*--max-total-bytes") as error:
        extract_archive(archive, tmp_path / "target", limits=UnzipLimits(max_total_bytes=1_000_000))
    assert_refused_untouched(str(error.value), tmp_path / "target", tmp_path / "a.bin")


def test_overlapping_entries_are_refused_as_a_zip_bomb(tmp_path):
    archive = make_overlapping_zip(tmp_path / "overlap.zip")
    with pytest.raises(UserError, match=r"overlap.zip looks like a zip bomb.*overlap") as error:
        extract_archive(archive, tmp_path / "target")
    assert_refused_untouched(str(error.value), tmp_path / "target", tmp_path / "file00.bin")


def central_entry(raw: bytes, name: str) -> int:
    """Where the central directory's record of entry ``name`` starts in ``raw``."""
    start = raw.index(b"PK\x01\x02")
    while raw[start + 46:start + 46 + struct.unpack("<H", raw[start + 28:start + 30])[0]] != name.encode():
        start = raw.index(b"PK\x01\x02", start + 1)
    return start


@pytest.mark.parametrize("change", [-3, 100], ids=["longer-than-declared", "shorter-than-declared"])
@pytest.mark.parametrize(("size", "compression"), [(50, zipfile.ZIP_STORED), (5000, zipfile.ZIP_DEFLATED),
                                                   (3 << 20, zipfile.ZIP_DEFLATED), (5000, zipfile.ZIP_BZIP2)],
                         ids=["stored", "deflated", "deflated-streamed", "bzip2-streamed"])
def test_entry_that_inflates_to_other_than_its_declared_size_is_refused_and_leaves_no_file(
        tmp_path, size, compression, change):
    archive = make_zip(tmp_path / "a.zip", {"ok.txt": b"fine", "big.bin": random.Random(0).randbytes(size)},
                       compression)
    raw = bytearray(archive.read_bytes())
    entry = central_entry(raw, "big.bin")  # zipfile reads the sizes there, not in the local header
    raw[entry + 24:entry + 28] = struct.pack("<L", size + change)
    archive.write_bytes(bytes(raw))
    target = tmp_path / "target"
    # Streamed through zipfile, a longer entry fails its CRC-32 first (the CRC covers all of it, not the declared part)
    with pytest.raises(UserError, match=r"damaged or incomplete \((.*big\.bin.*it declares|Bad CRC-32 .*big\.bin)"):
        extract_archive(archive, target)
    assert not (target / "big.bin").exists() and list(target.glob(".big.bin*")) == []


def test_an_entry_whose_local_header_has_another_name_is_called_damaged(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"REAL/a.jpg": b"\xff\xd8 a", "REAL/b.jpg": b"\xff\xd8 b"})
    raw = archive.read_bytes()
    archive.write_bytes(raw.replace(b"REAL/b.jpg", b"REAL/c.jpg", 1))  # the local header comes first
    with pytest.raises(UserError, match=r"damaged or incomplete .*'REAL/b\.jpg' has another name"):
        extract_archive(archive, tmp_path / "target")
    assert not (tmp_path / "target").exists()


def test_well_compressed_small_text_is_not_a_bomb(tmp_path):
    archive = make_zip(tmp_path / "text.zip", {"spaces.txt": b" " * 500_000}, zipfile.ZIP_DEFLATED)
    result = extract_archive(archive, tmp_path / "target", limits=UnzipLimits(max_ratio=10))
    assert result.extracted == 1


@pytest.mark.parametrize(("entries", "what"), [
    ({}, "no entries"),
    ({"__MACOSX/._a.jpg": b"fork", "__MACOSX/": b"", ".DS_Store": b"junk"}, "only macOS junk"),
    ({"emptydir/": b"", "emptydir/inner/": b""}, "only empty folders"),
    ({"__MACOSX/._a.jpg": b"fork", "d/.DS_Store": b"junk", "d/": b""}, "only macOS junk"),  # was "empty folders"
], ids=["empty", "only-macos-junk", "only-folders", "junk-in-a-folder"])
def test_an_archive_with_no_file_to_extract_is_refused_and_leaves_no_folder(tmp_path, entries, what):
    with pytest.raises(UserError, match="no file to extract") as error:
        extract_archive(make_zip(tmp_path / "a.zip", entries), tmp_path / "target")
    assert what in str(error.value)
    assert not (tmp_path / "target").exists()


def test_symlinked_folder_on_disk_cannot_carry_files_outside(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "train").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UserError, match="symlink that leads outside"):
        extract_archive(make_zip(tmp_path / "a.zip"), target)
    assert list(outside.iterdir()) == []


def test_duplicate_entries_are_refused(tmp_path):
    archive = tmp_path / "dup.zip"
    with zipfile.ZipFile(archive, "w") as zip_file, pytest.warns(UserWarning, match="Duplicate name"):
        zip_file.writestr("a.txt", b"first")
        zip_file.writestr("a.txt", b"second")
    with pytest.raises(UserError, match="two entries"):
        extract_archive(archive, tmp_path / "target")
    assert not (tmp_path / "target").exists()


# ---- damaged archives ------------------------------------------------------------------------------


def test_corrupt_archive_gives_a_clear_error(tmp_path):
    archive = tmp_path / "corrupt.zip"
    archive.write_bytes(b"PK\x03\x04" + random.Random(0).randbytes(4096))  # a zip's start, then garbage
    with pytest.raises(UserError, match="damaged or incomplete"):
        extract_archive(archive, tmp_path / "target")
    assert not (tmp_path / "target").exists()


@pytest.mark.parametrize("content, said", [
    (b"", r"photo\.zip is empty \(0 bytes\): the download did not finish; nothing was written\. Download"),
    (b"\n<!DOCTYPE html><html><head><title>Sign in</title>",
     r"photo\.zip is a web page \(HTML\), not a zip: the download saved a page .*nothing was written\. Download"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(100),
     r"photo\.zip is not a zip archive \(a zip begins with PK\); nothing was written\. Give DataUnZipper\.py the"),
], ids=["empty", "web_page", "jpeg"])
def test_a_file_that_is_no_zip_at_all_is_not_called_a_damaged_download(tmp_path, content, said):
    """A photo given by mistake, a sign-in page saved by wget in place of a Kaggle download, a download that never
    started: each was "damaged or incomplete (File is not a zip file) ... Download the archive again", which is the
    wrong advice for the first and does not say what happened to the others."""
    archive = tmp_path / "photo.zip"
    archive.write_bytes(content)
    with pytest.raises(UserError, match=said):
        extract_archive(archive, tmp_path / "target")
    assert not (tmp_path / "target").exists()


def test_truncated_archive_gives_a_clear_error(tmp_path):
    whole = make_zip(tmp_path / "whole.zip").read_bytes()
    archive = tmp_path / "truncated.zip"
    archive.write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(UserError, match="damaged or incomplete"):
        extract_archive(archive, tmp_path / "target")


def test_crc_mismatch_is_an_error_and_leaves_no_file(tmp_path):
    data = b"pixels " * 100
    archive = make_zip(tmp_path / "crc.zip", {"ok.txt": b"fine", "bad.jpg": data})
    raw = archive.read_bytes()
    flipped = raw.index(data) + 10
    archive.write_bytes(raw[:flipped] + bytes([raw[flipped] ^ 0xFF]) + raw[flipped + 1:])
    target = tmp_path / "target"
    with pytest.raises(UserError, match=r"CRC.*Files finished before the damage are complete"):
        extract_archive(archive, target)
    assert files_under(target) == {"ok.txt": b"fine"}, "the damaged file and its temporary must both be gone"


def damage_first_entry(archive: Path) -> Path:
    """Flips two bytes early in the first entry's compressed data, past LZMA's 9-byte properties header."""
    raw = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zip_file:
        first = zip_file.infolist()[0]
    start = first.header_offset + 30 + len(first.filename.encode()) + 10  # a local header is 30 bytes + the name
    raw[start] ^= 0xFF
    raw[start + 1] ^= 0xFF
    archive.write_bytes(bytes(raw))
    return archive


@pytest.mark.parametrize("compression", [zipfile.ZIP_LZMA, zipfile.ZIP_BZIP2], ids=["lzma", "bzip2"])
def test_corrupt_lzma_or_bzip2_entry_is_called_damaged_not_a_failed_write(tmp_path, compression):
    data = random.Random(0).randbytes(5000)
    archive = damage_first_entry(make_zip(tmp_path / "a.zip", {"A/a.txt": data}, compression))
    with pytest.raises(UserError, match=r"a\.zip is damaged or incomplete.*'A/a\.txt'") as error:
        extract_archive(archive, tmp_path / "target")
    assert "could not write" not in str(error.value)
    assert files_under(tmp_path / "target") == {}


def failing_read(*args, **kwargs):
    raise OSError(errno.EIO, "Input/output error")


@pytest.mark.parametrize("where", ["opening a large entry", "reading a large entry", "reading a small entry"])
def test_an_io_error_reading_the_archive_names_the_archive_and_entry_not_the_file_written(tmp_path, monkeypatch,
                                                                                           where):
    # A failing USB stick: the read of the zip fails, not the write of the extracted file.
    if where == "reading a small entry":  # small stored entries are read in one go, past zipfile
        archive = make_zip(tmp_path / "a.zip", {"A/a.jpg": b"\xff\xd8" * 50})
        monkeypatch.setattr(archives, "_read_small_entry", failing_read)
    else:
        archive = make_zip(tmp_path / "a.zip", {"A/a.jpg": random.Random(0).randbytes(2 << 20)}, zipfile.ZIP_DEFLATED)
        if where == "opening a large entry":
            monkeypatch.setattr(zipfile.ZipFile, "open", failing_read)
        else:
            monkeypatch.setattr(zipfile.ZipExtFile, "read", failing_read)
    with pytest.raises(UserError) as error:
        extract_archive(archive, tmp_path / "target")
    message = str(error.value)
    assert "could not read 'A/a.jpg' from" in message and str(archive) in message, message
    assert "Input/output error" in message and "local disk" in message and "download" in message, message
    assert "could not write" not in message and "damaged" not in message, message
    assert not [path for path in (tmp_path / "target").rglob("*") if path.is_file()]


def test_a_failed_write_of_a_bzip2_entry_is_still_called_a_failed_write(tmp_path, monkeypatch):
    class FullDisk(io.BytesIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(archives, "atomic_write", lambda path, mode, **options: contextlib.nullcontext(FullDisk()))
    archive = make_zip(tmp_path / "a.zip", {"A/a.txt": b"x" * 5000}, zipfile.ZIP_BZIP2)
    with pytest.raises(UserError, match=r"could not write .*a\.txt \(No space left on device\)"):
        extract_archive(archive, tmp_path / "target")

def test_an_archive_damaged_before_anything_was_written_says_so(tmp_path):
    archive = tmp_path / "corrupt.zip"
    archive.write_bytes(b"PK\x03\x04" + random.Random(0).randbytes(4096))
    with pytest.raises(UserError, match="damaged or incomplete") as error:
        extract_archive(archive, tmp_path / "target")
    assert "nothing was written" in str(error.value) and "Files finished" not in str(error.value)


def cut_before_the_central_directory(raw: bytes) -> bytes:
    directory = raw.index(b"PK\x01\x02")
    return raw[:directory - 10] + raw[directory:]  # the first entry's offset now points before the file's start


def version_needed_garbled(raw: bytes) -> bytes:
    directory = raw.index(b"PK\x01\x02")
    return raw[:directory + 6] + struct.pack("<H", 0x0A55) + raw[directory + 8:]  # "needs zip 26.1"


def local_header_offset_past_the_end(raw: bytes) -> bytes:
    """The first entry's offset in a ZIP64 extra field, far past the end (as a flipped high byte would make it)."""
    directory, end = raw.index(b"PK\x01\x02"), raw.index(b"PK\x05\x06")
    name_length = struct.unpack("<H", raw[directory + 28:directory + 30])[0]
    extra = struct.pack("<HHQ", 1, 8, 0xFF00_0000_0000_0000)
    entry = bytearray(raw[directory:directory + 46 + name_length])
    entry[30:32] = struct.pack("<H", len(extra))
    entry[42:46] = struct.pack("<L", 0xFFFF_FFFF)  # "see the ZIP64 extra field"
    central = bytes(entry) + extra + raw[directory + 46 + name_length:end]
    return raw[:directory] + central + raw[end:end + 12] + struct.pack("<L", len(central)) + raw[end + 16:]


@pytest.mark.parametrize("damage", [cut_before_the_central_directory, version_needed_garbled,
                                    local_header_offset_past_the_end])
def test_an_archive_whose_central_directory_does_not_match_its_bytes_is_called_damaged(tmp_path, damage):
    archive = tmp_path / "a.zip"
    archive.write_bytes(damage(make_zip(tmp_path / "whole.zip").read_bytes()))
    with pytest.raises(UserError, match=r"a\.zip is damaged or incomplete.*nothing was written.*Download the archive "
                                        r"again") as error:
        extract_archive(archive, tmp_path / "target")
    assert "\n" not in str(error.value) and not (tmp_path / "target").exists()


@pytest.mark.parametrize(("name", "what", "command"), [
    ("a.tar", "a tar archive", "tar xf"), ("a.tar.gz", "gzip", "tar xf"), ("a.tgz", "gzip", "tar xf"),
    ("a.tar.bz2", "bzip2", "tar xf"), ("a.tar.xz", "xz", "tar xf"),
    ("a.7z", "7-Zip", "7z x"), ("a.rar", "RAR", "7z x"),
])
def test_a_tar_7z_or_rar_archive_is_named_with_the_command_that_extracts_it(tmp_path, name, what, command):
    archive = tmp_path / name
    if name.endswith(".7z"):
        archive.write_bytes(b"7z\xbc\xaf\x27\x1c\x00\x04" + random.Random(0).randbytes(500))
    elif name.endswith(".rar"):
        archive.write_bytes(b"Rar!\x1a\x07\x01\x00" + random.Random(0).randbytes(500))
    else:
        (tmp_path / "a.jpg").write_bytes(b"\xff\xd8 photo")
        compression = {"tar": "", "tgz": "gz"}.get(name.rsplit(".", 1)[1], name.rsplit(".", 1)[1])
        with tarfile.open(archive, f"w:{compression}") as tar:
            tar.add(tmp_path / "a.jpg", "REAL/a.jpg")
    with pytest.raises(UserError, match=f"{name} is .*{what}.*nothing was written.*`.*{command} .*{name}") as error:
        extract_archive(archive, tmp_path / "target")
    assert "damaged" not in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "target").exists()


@pytest.mark.parametrize(("module", "command"), [("gzip", "gunzip -c"), ("bz2", "bunzip2 -c"), ("lzma", "xz -dc")])
def test_a_zip_compressed_again_is_named_with_the_command_that_gives_the_zip_back(tmp_path, module, command):
    """A web server that sends a zip gzip-encoded leaves a gzip file named .zip: the tar command the error gave
    extracted nothing and exited 0."""
    archive = tmp_path / "served.zip"
    archive.write_bytes(importlib.import_module(module).compress(make_zip(tmp_path / "whole.zip").read_bytes()))
    with pytest.raises(UserError, match=f"served.zip is a zip archive compressed again .*nothing was written.*"
                                        f"`{command} .*served.zip > .*served-unpacked.zip`") as error:
        extract_archive(archive, tmp_path / "target")
    assert "tar" not in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "target").exists()


def split_zip_parts(tmp_path: Path) -> Path:
    """split.z01 and split.zip as ``zip -s`` writes them: the first part starts with the split signature, the last
    holds the central directory, whose entries say on which part (disk) they start."""
    whole = make_zip(tmp_path / "whole.zip", {"REAL/a.jpg": b"\xff\xd8 a" * 50, "REAL/b.jpg": b"\xff\xd8 b" * 50})
    raw = whole.read_bytes()
    middle = raw.index(b"PK\x03\x04", 1)  # the second entry starts the second part
    (tmp_path / "split.z01").write_bytes(b"PK\x07\x08" + raw[:middle])
    last = bytearray(raw[middle:])  # offsets in a part count from the part's start
    directory = last.index(b"PK\x01\x02")
    second = last.index(b"PK\x01\x02", directory + 1)
    last[second + 34: second + 46] = struct.pack("<HHLL", 1, 0, 0, 0)  # starts on disk 1, at offset 0
    end = last.index(b"PK\x05\x06")
    last[end + 4: end + 8] = struct.pack("<HH", 1, 1)  # this is disk 1, and the central directory is on it
    last[end + 16: end + 20] = struct.pack("<L", directory)
    (tmp_path / "split.zip").write_bytes(bytes(last))
    return tmp_path / "split.zip"


@pytest.mark.parametrize("part", ["last part", "first part", "last part alone"])
def test_one_part_of_a_split_zip_is_named_with_the_command_that_joins_it(tmp_path, part):
    archive = split_zip_parts(tmp_path)
    if part == "first part":
        archive = tmp_path / "split.z01"
    elif part == "last part alone":  # only the disk numbers in the central directory tell
        (tmp_path / "split.z01").unlink()
    with pytest.raises(UserError, match=r"split\.z.. is one part of a split zip.*nothing was written.*`zip -s 0 .*"
                                        r"split\.zip --out ") as error:
        extract_archive(archive, tmp_path / "target")
    assert "damaged" not in str(error.value)
    assert not (tmp_path / "target").exists()


@pytest.mark.skipif(shutil.which("zip") is None, reason="needs Info-ZIP's zip")
def test_a_split_zip_made_by_zip_is_named_and_the_joined_one_extracts(tmp_path):
    source = tmp_path / "source"
    for index in range(4):
        (source / "REAL").mkdir(parents=True, exist_ok=True)
        (source / "REAL" / f"{index}.jpg").write_bytes(random.Random(index).randbytes(100_000))
    subprocess.run(["zip", "-q", "-r", "-s", "100k", tmp_path / "split.zip", "REAL"], cwd=source, check=True)
    with pytest.raises(UserError, match=r"one part of a split zip.*`(zip -s 0 .*)`") as error:
        extract_archive(tmp_path / "split.zip", tmp_path / "target")
    assert not (tmp_path / "target").exists()
    join = error.value.args[0].split("`")[1]
    subprocess.run(join, shell=True, check=True, capture_output=True)
    whole = Path(join.split("--out ")[1])
    extract_archive(whole, tmp_path / "target")
    assert files_under(tmp_path / "target") == files_under(source)


# ---- normal extraction, resuming, overwriting ------------------------------------------------------------


def test_extraction_writes_every_file_byte_for_byte(tmp_path):
    result = extract_archive(make_zip(tmp_path / "a.zip", compression=zipfile.ZIP_DEFLATED), tmp_path / "target")
    assert files_under(tmp_path / "target") == CONTENT
    assert (result.extracted, result.already_there, result.bytes_written) == (
        len(CONTENT), 0, sum(map(len, CONTENT.values())))


@pytest.fixture
def tokyo_time(monkeypatch):
    """Local time 9 hours ahead of UTC (a POSIX TZ string: no tz database needed), so a time read as UTC shows."""
    monkeypatch.setenv("TZ", "JST-9")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_each_file_gets_the_modification_time_the_archive_gives_it_as_local_time(tmp_path, tokyo_time):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zip_file:
        zip_file.writestr(zipfile.ZipInfo("REAL/a.jpg", date_time=(2001, 2, 3, 4, 5, 6)), b"\xff\xd8 a")
        big = random.Random(0).randbytes(3 << 20)  # over 1 MB: streamed through zipfile, not read in one go
        zip_file.writestr(zipfile.ZipInfo("b.bin", date_time=(2023, 12, 31, 23, 59, 58)), big,
                          compress_type=zipfile.ZIP_DEFLATED)
    extract_archive(archive, tmp_path / "target")
    tokyo = datetime.timezone(datetime.timedelta(hours=9))
    assert (tmp_path / "target" / "REAL" / "a.jpg").stat().st_mtime == datetime.datetime(
        2001, 2, 3, 4, 5, 6, tzinfo=tokyo).timestamp()
    assert (tmp_path / "target" / "b.bin").stat().st_mtime == datetime.datetime(
        2023, 12, 31, 23, 59, 58, tzinfo=tokyo).timestamp()


def extended_timestamp(mtime: int, flags: int = 0b1, size: int = 5) -> bytes:
    """Info-ZIP's extended timestamp extra field (0x5455, "UT") as a central directory holds it: a flags byte (bit 0:
    the modification time follows), then that time in UTC as a 32-bit Unix time; ``size`` cuts the data short."""
    return struct.pack("<HHB", 0x5455, size, flags) + struct.pack("<i", mtime)[:size - 1]


def test_the_extended_timestamp_field_gives_the_exact_utc_modification_time(tmp_path, tokyo_time):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zip_file:
        small = zipfile.ZipInfo("REAL/a.jpg", date_time=(2001, 2, 3, 4, 5, 6))
        small.extra = extended_timestamp(1_000_000_001)  # an odd second, which a DOS time cannot hold
        zip_file.writestr(small, b"\xff\xd8 a")
        big = zipfile.ZipInfo("b.bin", date_time=(2023, 12, 31, 23, 59, 58))
        big.extra = struct.pack("<HH3s", 0xCAFE, 3, b"abc") + extended_timestamp(-86_399)  # after another record
        zip_file.writestr(big, random.Random(0).randbytes(3 << 20), compress_type=zipfile.ZIP_DEFLATED)
    extract_archive(archive, tmp_path / "target")
    assert (tmp_path / "target" / "REAL" / "a.jpg").stat().st_mtime == 1_000_000_001
    assert (tmp_path / "target" / "b.bin").stat().st_mtime == -86_399


@pytest.mark.parametrize("extra", [
    extended_timestamp(1_000_000_001, flags=0b110),  # access and creation times only: no modification time
    extended_timestamp(1_000_000_001, size=1),  # the flags say the local header has the time; this one does not
    extended_timestamp(1_000_000_001, size=3),  # the time cut short
    b"UT\x05",  # too short for a record header
], ids=["no-mtime-flag", "flags-only", "cut-in-mtime", "cut-in-header"])
def test_a_malformed_extended_timestamp_field_falls_back_to_the_dos_time(tmp_path, tokyo_time, extra):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zip_file:
        info = zipfile.ZipInfo("a.jpg", date_time=(2001, 2, 3, 4, 5, 6))
        info.extra = extra
        zip_file.writestr(info, b"\xff\xd8 a")
    extract_archive(archive, tmp_path / "target")
    tokyo = datetime.timezone(datetime.timedelta(hours=9))
    assert (tmp_path / "target" / "a.jpg").stat().st_mtime == datetime.datetime(
        2001, 2, 3, 4, 5, 6, tzinfo=tokyo).timestamp()


@pytest.mark.parametrize("extra", [
    extended_timestamp(1_000_000_001)[:-1],  # the record says 5 bytes of data, 4 are left
    struct.pack("<HH", 0xCAFE, 100) + extended_timestamp(1_000_000_001),  # a record longer than the field
], ids=["cut-in-mtime", "record-past-the-end"])
def test_a_truncated_extra_field_gives_no_extended_timestamp(extra):
    # zipfile refuses an archive whose central directory has such a field (damaged), so this is only reachable
    # through a zipfile that stops checking: the parser must still not read past a record or raise.
    assert archives._extended_mtime(extra) is None


@pytest.mark.skipif(shutil.which("zip") is None, reason="needs Info-ZIP's zip")
def test_a_zip_made_by_zip_gives_each_file_its_exact_modification_time(tmp_path, tokyo_time):
    source = tmp_path / "source"
    (source / "REAL").mkdir(parents=True)
    for index, mtime in enumerate([1_000_000_001, 1_700_000_003]):  # odd seconds: a DOS time holds even ones
        (source / "REAL" / f"{index}.jpg").write_bytes(b"\xff\xd8 %d" % index)
        os.utime(source / "REAL" / f"{index}.jpg", (mtime, mtime))
    subprocess.run(["zip", "-q", "-r", tmp_path / "a.zip", "REAL"], cwd=source, check=True)
    extract_archive(tmp_path / "a.zip", tmp_path / "target")
    assert [(tmp_path / "target" / "REAL" / f"{index}.jpg").stat().st_mtime for index in range(2)] == [
        1_000_000_001, 1_700_000_003]


@pytest.fixture
def umask():
    """Sets the umask (so a new file's default mode is known wherever the tests run) until the test ends."""
    before = os.umask(0o022)
    yield os.umask
    os.umask(before)


def make_zip_with_modes(path: Path, modes: dict[str, int], create_system: int = 3) -> Path:
    """A zip whose entries carry these Unix modes (``external_attr >> 16``; ``create_system`` 3 is Unix), as zip on
    Linux or macOS writes them; a name starting with ``big`` holds 3 MB, which are streamed through zipfile."""
    with zipfile.ZipFile(path, "w") as zip_file:
        for name, mode in modes.items():
            info = zipfile.ZipInfo(name)
            info.create_system = create_system
            zip_file.writestr(info, random.Random(0).randbytes(3 << 20) if name.startswith("big") else name.encode())
            info.external_attr = mode << 16  # after writestr, which would make a 0 into 0o600 (the central
            # directory, which extraction reads, is written from it on closing)
    return path


def modes_under(folder: Path) -> dict[str, int]:
    """The permission bits of every file and folder below ``folder``, by relative POSIX path."""
    return {path.relative_to(folder).as_posix(): stat.S_IMODE(path.stat().st_mode) for path in folder.rglob("*")}


def test_each_file_gets_the_permission_bits_a_zip_made_on_unix_gives_it(tmp_path, umask):
    modes = {"run.sh": 0o755, "private.key": 0o600, "shared.txt": 0o640, "a.jpg": 0o644, "big.bin": 0o700}
    archive = make_zip_with_modes(tmp_path / "a.zip", {name: stat.S_IFREG | mode for name, mode in modes.items()})
    extract_archive(archive, tmp_path / "target")
    assert modes_under(tmp_path / "target") == modes


def test_setuid_setgid_and_sticky_bits_are_never_restored(tmp_path, umask):
    archive = make_zip_with_modes(tmp_path / "a.zip", {"setuid": 0o104755, "setgid": 0o102750, "sticky": 0o101777})
    extract_archive(archive, tmp_path / "target")
    assert modes_under(tmp_path / "target") == {"setuid": 0o755, "setgid": 0o750, "sticky": 0o777}


def test_the_owner_can_always_read_and_write_an_extracted_file(tmp_path, umask):
    archive = make_zip_with_modes(tmp_path / "a.zip", {"read-only": 0o100444, "write-only": 0o100200,
                                                       "others-only": 0o100044, "big-read-only": 0o100400})
    extract_archive(archive, tmp_path / "target")
    assert modes_under(tmp_path / "target") == {"read-only": 0o644, "write-only": 0o600, "others-only": 0o644,
                                                "big-read-only": 0o600}


@pytest.mark.parametrize("create_system, mode", [(3, 0), (3, stat.S_IFREG), (0, stat.S_IFREG | 0o755)],
                         ids=["no-mode", "no-permission-bits", "not-made-on-unix"])
def test_a_zip_without_unix_permission_bits_leaves_the_default_mode(tmp_path, umask, create_system, mode):
    umask(0o027)
    archive = make_zip_with_modes(tmp_path / "a.zip", {"a.jpg": mode, "big.bin": mode}, create_system)
    extract_archive(archive, tmp_path / "target")
    assert modes_under(tmp_path / "target") == {"a.jpg": 0o640, "big.bin": 0o640}


def test_folders_keep_their_default_mode_so_their_files_can_be_written(tmp_path, umask):
    archive = make_zip_with_modes(tmp_path / "a.zip", {"bin/": stat.S_IFDIR | 0o555, "bin/run.sh": 0o100755})
    extract_archive(archive, tmp_path / "target")
    assert modes_under(tmp_path / "target") == {"bin": 0o755, "bin/run.sh": 0o755}


def test_a_file_takes_its_name_with_its_permission_bits_already_set(tmp_path, umask, monkeypatch):
    archive = make_zip_with_modes(tmp_path / "a.zip", {"run.sh": 0o100755, "big.bin": 0o100700})
    real_replace, modes = os.replace, {}

    def replace_noting_the_mode(source, destination):
        modes[Path(destination).name] = stat.S_IMODE(os.stat(source).st_mode)
        real_replace(source, destination)

    monkeypatch.setattr(archives.os, "replace", replace_noting_the_mode)
    extract_archive(archive, tmp_path / "target")
    assert modes == {"run.sh": 0o755, "big.bin": 0o700}


@pytest.mark.skipif(shutil.which("zip") is None, reason="needs Info-ZIP's zip")
def test_a_zip_made_by_zip_gives_each_file_its_permission_bits(tmp_path, umask):
    source = tmp_path / "source"
    (source / "bin").mkdir(parents=True)
    for name, mode in {"run.sh": 0o755, "private.key": 0o600, "a.jpg": 0o644}.items():
        (source / "bin" / name).write_bytes(name.encode())
        (source / "bin" / name).chmod(mode)
    subprocess.run(["zip", "-q", "-r", tmp_path / "a.zip", "bin"], cwd=source, check=True)
    extract_archive(tmp_path / "a.zip", tmp_path / "target")
    assert modes_under(tmp_path / "target") == modes_under(source)


def test_macos_junk_entries_are_skipped(tmp_path):
    entries = {**CONTENT, "__MACOSX/train/REAL/._a.jpg": b"fork", "train/.DS_Store": b"view", ".DS_Store": b"v"}
    result = extract_archive(make_zip(tmp_path / "mac.zip", entries), tmp_path / "target")
    assert files_under(tmp_path / "target") == CONTENT
    assert result.junk_skipped == 3


def test_empty_folder_entries_are_created(tmp_path):
    archive = make_zip(tmp_path / "dirs.zip", {"empty/": b"", "a.txt": b"a"})
    extract_archive(archive, tmp_path / "target")
    assert (tmp_path / "target" / "empty").is_dir()


def test_a_name_longer_than_a_file_system_allows_is_shortened_and_one_just_short_enough_is_kept(tmp_path, caplog):
    longest, too_long = "😀" * 63, "😀" * 64  # 252 and 256 bytes in UTF-8
    archive = make_zip(tmp_path / "a.zip", {f"REAL/{longest}": b"kept", f"REAL/{too_long}": b"shortened"})
    with caplog.at_level("WARNING", logger="realvsai"):
        extract_archive(archive, tmp_path / "target")
    assert files_under(tmp_path / "target") == {f"REAL/{longest}": b"kept", f"REAL/{fit_name(too_long)}": b"shortened"}
    assert len(caplog.records) == 1 and "1 entry name is longer" in caplog.records[0].getMessage()

def test_entries_that_would_be_one_file_on_macos_and_windows_are_each_written_under_a_name_of_their_own(
        tmp_path, caplog):
    # Names that differ only in letter case or accent encoding, a file's and a folder's too: written as they are,
    # the later replaced the earlier there without a word.
    entries = {"REAL/IMG_1.jpg": b"first", "REAL/img_1.jpg": b"second", "real/IMG_1.jpg": b"third",
               "REAL/caf\u00e9.jpg": b"composed", "REAL/cafe\u0301.jpg": b"decomposed",
               "REAL/NOTES": b"a file", "REAL/notes/a.jpg": b"in a folder"}
    archive, target = make_zip(tmp_path / "a.zip", entries), tmp_path / "target"
    with caplog.at_level("WARNING", logger="realvsai"):
        extract_archive(archive, target)
    written = files_under(target)
    assert sorted(written.values()) == sorted(entries.values())
    assert len({name_key(path) for path in written}) == len(entries)
    assert written[f"REAL/img_1_{zlib.crc32(b'second'):08x}.jpg"] == b"second"
    assert written["REAL/IMG_1.jpg"] == b"first" and written["REAL/notes/a.jpg"] == b"in a folder"
    assert "differ only in letter case" in caplog.text
    assert extract_archive(archive, target).already_there == len(entries)  # a re-run finds them all


def test_on_windows_an_entry_name_it_cannot_hold_is_written_as_one_it_can(tmp_path, monkeypatch, caplog):
    # Made on Linux or macOS, a zip can hold such names; Windows refuses them (a re-run failed at the same entry, so
    # the extraction never finished) or drops a trailing dot or space (the file replaced another without a word).
    monkeypatch.setattr(archives, "_WINDOWS", True)
    entries = {"REAL/CON.jpg": b"device", "REAL/12:30?.png": b"characters", "REAL/b.png ": b"space",
               "REAL/b.png": b"plain", "REAL./c.png": b"dot"}
    archive, target = make_zip(tmp_path / "a.zip", entries), tmp_path / "target"
    with caplog.at_level("WARNING", logger="realvsai"):
        extract_archive(archive, target)
    assert files_under(target) == {"REAL/CON_.jpg": b"device", "REAL/12_30_.png": b"characters", "REAL/b.png": b"space",
                                   f"REAL/b_{zlib.crc32(b'plain'):08x}.png": b"plain", "REAL/c.png": b"dot"}
    assert "Windows" in caplog.text
    assert extract_archive(archive, target).already_there == len(entries)


def test_windows_backslash_names_become_folders(tmp_path):
    archive = make_zip(tmp_path / "win.zip", {"train\\": b"", "train\\REAL\\a.jpg": b"a"})
    extract_archive(archive, tmp_path / "target")
    assert files_under(tmp_path / "target") == {"train/REAL/a.jpg": b"a"}


def test_rerun_completes_an_interrupted_extraction_without_redoing_finished_files(tmp_path):
    archive = make_zip(tmp_path / "a.zip")
    target = tmp_path / "target"
    extract_archive(archive, target)
    (target / "train/REAL/b.jpg").unlink()
    (target / "test/FAKE/d.jpg").unlink()
    (target / "train/REAL/.b.jpg.1a2b3c4d.tmp").write_bytes(b"half of b")  # what a killed run leaves
    kept = {name: (target / name).stat() for name in ("train/REAL/a.jpg", "train/FAKE/c.jpg", "notes.txt")}

    result = extract_archive(archive, target)

    assert files_under(target) == CONTENT, "complete, identical, and the stray temporary file is gone"
    assert (result.extracted, result.already_there) == (2, 3)
    for name, before in kept.items():
        after = (target / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), f"{name} was rewritten"


def test_interrupted_extraction_leaves_no_partial_file_and_rerun_finishes(tmp_path, monkeypatch):
    archive = make_zip(tmp_path / "a.zip")
    target = tmp_path / "target"
    real_replace, calls = os.replace, []

    def replace_then_interrupt(source, destination):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(destination)
        real_replace(source, destination)

    monkeypatch.setattr(archives.os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        extract_archive(archive, target)
    monkeypatch.undo()
    written = files_under(target)
    assert len(written) == 2 and all(CONTENT[name] == data for name, data in written.items())

    result = extract_archive(archive, target)
    assert files_under(target) == CONTENT
    assert (result.extracted, result.already_there) == (len(CONTENT) - 2, 2)


def test_full_disk_while_writing_is_one_clear_error_and_leaves_no_partial_file(tmp_path, monkeypatch):
    def disk_full(source, destination):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(archives.os, "replace", disk_full)
    with pytest.raises(UserError, match=r"No space left on device.*re-run"):
        extract_archive(make_zip(tmp_path / "a.zip"), tmp_path / "target")
    assert files_under(tmp_path / "target") == {}


def test_existing_different_file_is_refused_without_overwrite(tmp_path):
    target = tmp_path / "target"
    (target / "train/REAL").mkdir(parents=True)
    (target / "train/REAL/a.jpg").write_bytes(b"my own edit")
    with pytest.raises(UserError, match=r"1 file already exists with other content.*a\.jpg.*--overwrite.*--to"):
        extract_archive(make_zip(tmp_path / "a.zip"), target)
    assert files_under(target) == {"train/REAL/a.jpg": b"my own edit"}, "nothing is written when refused"


def test_existing_different_file_is_replaced_with_overwrite(tmp_path):
    target = tmp_path / "target"
    (target / "train/REAL").mkdir(parents=True)
    (target / "train/REAL/a.jpg").write_bytes(b"my own edit")
    extract_archive(make_zip(tmp_path / "a.zip"), target, overwrite=True)
    assert files_under(target) == CONTENT


def test_existing_file_with_same_size_but_other_content_is_not_taken_as_done(tmp_path):
    target = tmp_path / "target"
    (target / "train/REAL").mkdir(parents=True)
    (target / "train/REAL/a.jpg").write_bytes(b"x" * len(CONTENT["train/REAL/a.jpg"]))
    with pytest.raises(UserError, match="already exist"):
        extract_archive(make_zip(tmp_path / "a.zip"), target)


def test_too_little_free_space_is_refused_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(archives.shutil, "disk_usage", lambda path: SimpleNamespace(total=10, used=0, free=10))
    with pytest.raises(UserError, match="only 10 B is free"):
        extract_archive(make_zip(tmp_path / "a.zip"), tmp_path / "target")
    assert not (tmp_path / "target").exists()


def test_a_second_archive_into_the_same_target_keeps_every_file_and_warns_that_they_mix(tmp_path):
    v1 = make_zip(tmp_path / "v1.zip", {"REAL/a.jpg": b"\xff\xd8 a", "REAL/old_only.jpg": b"\xff\xd8 old"})
    v2 = make_zip(tmp_path / "v2.zip", {"REAL/a.jpg": b"\xff\xd8 a", "REAL/new_only.jpg": b"\xff\xd8 new"})
    target = tmp_path / "out" / "v"
    assert run_script("DataUnZipper.py", v1, "--to", target, "-q").returncode == 0
    second = run_script("DataUnZipper.py", v2, "--to", target, "-q")
    assert second.returncode == 0, second.stderr
    assert second.stderr.count("\n") == 1 and "holds 1 file that this archive does not" in second.stderr
    assert "REAL/old_only.jpg" in second.stderr and "--to" in second.stderr
    assert set(files_under(target)) == {"REAL/a.jpg", "REAL/old_only.jpg", "REAL/new_only.jpg"}


def test_files_of_the_same_archive_and_macos_junk_are_not_taken_for_another_archives(tmp_path, caplog):
    archive = make_zip(tmp_path / "a.zip")
    target = tmp_path / "target"
    extract_archive(archive, target)
    (target / ".DS_Store").write_bytes(b"view")
    (target / "__MACOSX").mkdir()
    (target / "__MACOSX" / "._a.jpg").write_bytes(b"fork")
    (target / "train" / "REAL" / "b.jpg").unlink()
    with caplog.at_level("WARNING", logger="realvsai"):
        result = extract_archive(archive, target)
    assert result.extracted == 1 and caplog.records == []


# ---- zipping -----------------------------------------------------------------------------------------------


@pytest.fixture
def dataset(tmp_path, make_class_folder) -> Path:
    folder = make_class_folder(tmp_path / "dataset", {"REAL": 3, "FAKE": 3}, suffix=".jpg")
    write_image(folder / "FAKE" / "extra.PNG", seed=99)
    (folder / "labels.csv").write_text("name,label\n" * 200)
    (folder / "nested" / "deeper").mkdir(parents=True)
    (folder / "nested" / "deeper" / "ünïcode name.txt").write_text("unicode and spaces")
    (folder / "empty").mkdir()
    return folder


def test_zip_round_trip_gives_byte_identical_files(tmp_path, dataset):
    archive = zip_folder(dataset, tmp_path / "dataset.zip", verify=True).archive
    extract_archive(archive, tmp_path / "unzipped")
    assert files_under(tmp_path / "unzipped") == files_under(dataset)
    assert (tmp_path / "unzipped" / "empty").is_dir()


@pytest.mark.parametrize("files", [1, 30])
def test_zipping_a_file_that_unzipping_would_call_a_bomb_names_the_max_ratio_it_needs(tmp_path, caplog, files):
    """Also where no file alone is large enough for the check, but all of them together are: 30 flat 600 kB masks
    zipped without a word, and DataUnZipper.py refused the archive ("it expands 962 times")."""
    folder = tmp_path / "logs"
    folder.mkdir()
    for number in range(files):  # deflates over 1,000 times
        (folder / f"zeros{number}.bin").write_bytes(bytes((8 << 20) // files))
    caplog.set_level("WARNING", logger="realvsai")

    archive = zip_folder(folder, tmp_path / "logs.zip").archive

    (warning,) = [record.getMessage() for record in caplog.records if "--max-ratio" in record.getMessage()]
    needed = float(warning.split("--max-ratio ")[1].split()[0])
    with pytest.raises(UserError, match="zip bomb"):
        extract_archive(archive, tmp_path / "refused")
    extract_archive(archive, tmp_path / "unzipped", limits=UnzipLimits(max_ratio=needed))
    assert sum(path.stat().st_size for path in (tmp_path / "unzipped").iterdir()) == (8 << 20) // files * files


def test_zipping_is_deterministic_and_sorted(tmp_path, dataset):
    first = zipfile.ZipFile(zip_folder(dataset, tmp_path / "first.zip").archive).namelist()
    second = zipfile.ZipFile(zip_folder(dataset, tmp_path / "second.zip").archive).namelist()
    assert first == second == sorted(first)
    assert "REAL/img_000.jpg" in first and "empty/" in first, "names are relative to the folder"


def test_images_are_stored_and_other_files_deflated(tmp_path, dataset):
    with zipfile.ZipFile(zip_folder(dataset, tmp_path / "d.zip").archive) as archive:
        methods = {info.filename: info.compress_type for info in archive.infolist()}
    assert methods["REAL/img_000.jpg"] == methods["FAKE/extra.PNG"] == zipfile.ZIP_STORED
    assert methods["labels.csv"] == zipfile.ZIP_DEFLATED


def test_zipping_leaves_out_symlinks(tmp_path, dataset):
    outside = tmp_path / "secret.txt"
    outside.write_text("not part of the dataset")
    (dataset / "link.txt").symlink_to(outside)
    result = zip_folder(dataset, tmp_path / "d.zip")
    assert result.left_out == ("link.txt",)
    assert "link.txt" not in zipfile.ZipFile(result.archive).namelist()


def test_zipping_leaves_out_the_partial_file_a_killed_run_left_and_says_so(tmp_path, dataset, caplog):
    """A killed unzip (or augmentation, or copy) leaves its half-written file under a hidden temporary name; zipped,
    it came back from DataUnZipper.py as a file of the dataset."""
    partial = dataset / "REAL" / ".img_000.jpg.tg4oktwg.tmp"
    partial.write_bytes(b"\xff\xd8\xff half an image")
    (dataset / "REAL" / ".notes.tmp").write_text("a user's own hidden file")
    caplog.set_level("WARNING", logger="realvsai")

    names = zipfile.ZipFile(zip_folder(dataset, tmp_path / "d.zip").archive).namelist()

    assert "REAL/.img_000.jpg.tg4oktwg.tmp" not in names and "REAL/.notes.tmp" in names
    (warning,) = [record.getMessage() for record in caplog.records]
    assert "REAL/.img_000.jpg.tg4oktwg.tmp" in warning and "killed" in warning


def test_zipping_leaves_out_macos_junk_in_any_folder_and_says_how_many(tmp_path, dataset, capsys):
    """.DS_Store and ._name were left out without a word, and a file under __MACOSX/ was zipped, which DataUnZipper
    then skipped as junk: the round trip lost it."""
    (dataset / "__MACOSX" / "REAL").mkdir(parents=True)
    (dataset / "__MACOSX" / "REAL" / "._img_000.jpg").write_bytes(b"\x00\x05\x16\x07 fork")
    (dataset / "__MACOSX" / "data.csv").write_text("a,b\n")
    (dataset / ".DS_Store").write_bytes(b"Bud1")
    (dataset / "REAL" / "._img_000.jpg").write_bytes(b"\x00\x05\x16\x07 fork")
    out = tmp_path / "d.zip"

    assert DataZipper.main([str(dataset), "--out", str(out)]) == 0

    assert not [name for name in zipfile.ZipFile(out).namelist() if "__MACOSX" in name or "/._" in name
                or name.startswith(("._", ".DS_Store"))]
    assert "4 macOS junk files (.DS_Store, ._name, __MACOSX/) left out" in capsys.readouterr().out


@pytest.mark.parametrize("twin", ["img_000.JPG", "img_000.jpg".upper(), "caf\u00e9.txt"])
def test_zipping_refuses_names_that_differ_only_in_letter_case_or_accent_encoding(tmp_path, dataset, twin):
    """DataUnZipper gives the second of two such names another name (one file on macOS and Windows): the round
    trip was not the folder zipped, though DataZipper refuses the names DataUnZipper would not give back."""
    first = "cafe\u0301.txt" if twin.startswith("caf") else "img_000.jpg"
    (dataset / "REAL" / first).write_bytes(b"one")
    (dataset / "REAL" / twin).write_bytes(b"two")
    with pytest.raises(UserError, match=r"differ only in letter case or accent encoding.*nothing was written.*"
                                        r"Rename one"):
        zip_folder(dataset, tmp_path / "d.zip")
    assert not (tmp_path / "d.zip").exists()


def test_zipping_a_path_through_a_symlink_and_dot_dot_zips_the_folder_the_shell_shows(tmp_path):
    """``other/link/..`` is the folder that holds what link leads to (ls, cd and the other scripts follow the link);
    the zipper read it as text and zipped other/."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "a.txt").write_text("a")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "o.txt").write_text("o")
    (tmp_path / "other" / "link").symlink_to(tmp_path / "a" / "b")

    assert DataZipper.main([str(tmp_path / "other" / "link" / ".."), "--out", str(tmp_path / "d.zip"), "-q"]) == 0

    assert "a.txt" in zipfile.ZipFile(tmp_path / "d.zip").namelist()


def test_unzipping_to_a_path_through_a_missing_folder_and_dot_dot_finishes(tmp_path, capsys):
    """--to nosuch/../out: the files went to out/, then the next-step line looked through nosuch/ and the run ended
    in an error (exit 1), every time it was run."""
    archive = make_zip(tmp_path / "d.zip")
    assert DataUnZipper.main([str(archive), "--to", str(tmp_path / "nosuch" / ".." / "out"), "-q"]) == 0
    assert files_under(tmp_path / "out") == CONTENT and not (tmp_path / "nosuch").exists()


def test_zipping_a_split_leaves_out_its_record_of_checks_which_only_a_re_run_of_that_split_reads(tmp_path, dataset):
    """A split's .checks.json (23 MB for CIFAKE's 100,000 files) serves a re-run of the split where it was made;
    zipped with the split to train elsewhere, it made the archive about a quarter larger for nothing."""
    (dataset / "manifest.csv").write_text("split,class,path,sha256,source,dataset\n")
    (dataset / ".checks.json").write_text('{"checked_with": "1", "files": {}}')
    (dataset / "REAL" / ".checks.json").write_text("a user's own file, beside no manifest")

    names = zipfile.ZipFile(zip_folder(dataset, tmp_path / "d.zip").archive).namelist()

    assert ".checks.json" not in names and "manifest.csv" in names and "REAL/.checks.json" in names


def test_zipping_refuses_an_existing_archive_without_overwrite(tmp_path, dataset):
    out = tmp_path / "d.zip"
    out.write_bytes(b"precious")
    with pytest.raises(UserError, match=r"already exists.*--overwrite"):
        zip_folder(dataset, out)
    assert out.read_bytes() == b"precious"
    zip_folder(dataset, out, overwrite=True)
    assert zipfile.is_zipfile(out)


def test_zipping_again_into_an_archive_of_the_same_files_writes_nothing_and_succeeds(tmp_path, dataset, capsys):
    """A run killed after the archive took its name (before it said so) finishes when run again."""
    out = tmp_path / "d.zip"
    assert DataZipper.main([str(dataset), "--out", str(out), "--quiet"]) == 0
    before = (out.read_bytes(), out.stat().st_mtime_ns)
    capsys.readouterr()
    assert DataZipper.main([str(dataset), "--out", str(out), "--quiet"]) == 0
    assert f"{out} already holds these" in capsys.readouterr().out
    assert (out.read_bytes(), out.stat().st_mtime_ns) == before
    (dataset / "REAL" / "img_000.jpg").write_bytes((dataset / "FAKE" / "img_000.jpg").read_bytes())  # changed
    with pytest.raises(UserError, match=r"already exists.*--overwrite"):
        zip_folder(dataset, out)


def test_a_file_changed_since_the_zip_at_the_same_size_is_not_taken_for_zipped(tmp_path, dataset):
    """An image edited in place (a byte changed, its size kept) makes the archive another folder's: its CRC-32 tells."""
    out = tmp_path / "d.zip"
    zip_folder(dataset, out)
    image = dataset / "REAL" / "img_000.jpg"
    edited = bytearray(image.read_bytes())
    edited[len(edited) // 2] ^= 0xFF
    image.write_bytes(bytes(edited))
    with pytest.raises(UserError, match=r"already exists.*--overwrite"):
        zip_folder(dataset, out)


def test_an_archive_of_the_same_names_but_damaged_or_doubled_is_not_taken_for_the_folder_s_zip(tmp_path, dataset):
    out, doubled = tmp_path / "d.zip", tmp_path / "doubled.zip"
    zip_folder(dataset, out)
    with zipfile.ZipFile(out) as archive, zipfile.ZipFile(doubled, "w") as copy:
        entries = [(info.filename, archive.read(info)) for info in archive.infolist()]
        copy.writestr(entries[1][0], b"another first copy")  # DataUnZipper refuses two entries of one name
        with pytest.warns(UserWarning, match="Duplicate name"):
            for name, data in entries:
                copy.writestr(name, data)
    with pytest.raises(UserError, match="already exists"):
        zip_folder(dataset, doubled)
    info = next(info for info in zipfile.ZipFile(out).infolist() if info.filename.endswith(".jpg"))
    damaged = bytearray(out.read_bytes())
    damaged[info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 10] ^= 0xFF  # a flipped byte
    out.write_bytes(bytes(damaged))
    assert zip_folder(dataset, out).unchanged  # without --verify, as a new archive's data is not read back either
    with pytest.raises(UserError, match="already exists"):
        zip_folder(dataset, out, verify=True)


def test_zipping_a_folder_without_files_says_what_to_give_instead(tmp_path):
    """It said "models has no files to zip." and no more."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "link").symlink_to(tmp_path)  # left out, as every symlink
    with pytest.raises(UserError, match=r"has no files to zip\b.*Give a folder that holds files"):
        zip_folder(tmp_path / "models", tmp_path / "models.zip")
    assert not (tmp_path / "models.zip").exists()

def test_zipping_refuses_to_write_inside_the_folder(tmp_path, dataset):
    with pytest.raises(UserError, match="inside"):
        zip_folder(dataset, dataset / "REAL" / "self.zip")
    assert not (dataset / "REAL" / "self.zip").exists()


@pytest.mark.parametrize("name", ["back\\slash.jpg", "C:photo.jpg", "REAL/a\\b.jpg", "D:empty"])
def test_zipping_refuses_a_name_the_unzipper_would_not_extract_as_it_is_before_writing(tmp_path, dataset, name):
    (dataset / name).mkdir() if name.endswith("empty") else (dataset / name).write_bytes(b"\xff\xd8 photo")
    with pytest.raises(UserError, match="Rename it") as refused:
        zip_folder(dataset, tmp_path / "d.zip")
    assert str(dataset / name) in str(refused.value) and "\n" not in str(refused.value)
    assert list(tmp_path.glob("*d.zip*")) == []


def test_zipping_removes_the_partial_archive_a_killed_run_left(tmp_path, dataset):
    leftover = tmp_path / ".d.zip.tg4oktwg.tmp"  # what atomic_write leaves when the process is killed
    leftover.write_bytes(b"PK\x03\x04 half an archive")
    others = [tmp_path / ".other.zip.abcdefgh.tmp", tmp_path / "d.zip.notes"]
    for path in others:
        path.write_text("not ours")
    zip_folder(dataset, tmp_path / "d.zip")
    assert not leftover.exists()
    assert all(path.read_text() == "not ours" for path in others)


def test_failed_verification_leaves_no_archive(tmp_path, dataset, monkeypatch):
    monkeypatch.setattr(archives, "_first_bad_entry", lambda zip_file, desc: "REAL/img_000.jpg")
    with pytest.raises(UserError, match="failed its check"):
        zip_folder(dataset, tmp_path / "d.zip", verify=True)
    assert list(tmp_path.glob("*d.zip*")) == []


# ---- the scripts, as a user runs them ------------------------------------------------------------------------


def test_unzipper_script_extracts_to_data_raw_by_default(tmp_path):
    archive = make_zip(tmp_path / "cifake-x.zip")
    work = tmp_path / "project"
    work.mkdir()
    finished = run_script("DataUnZipper.py", archive, "--quiet", cwd=work)
    assert finished.returncode == 0, finished.stderr
    assert files_under(work / "data" / "raw" / "cifake-x") == CONTENT
    assert f"Extracted {len(CONTENT)} files" in finished.stdout


def test_the_unzipper_names_a_relative_to_folder_as_it_was_typed(tmp_path):
    """It named /home/me/project/data/raw/x in its summary and Next: line for --to data/raw/x."""
    archive = make_zip(tmp_path / "cifake-x.zip")
    work = tmp_path / "project"
    work.mkdir()

    finished = run_script("DataUnZipper.py", archive, "--to", "data/raw/x", "--quiet", cwd=work)

    assert finished.returncode == 0, finished.stderr
    assert " to data/raw/x;" in finished.stdout and str(work) not in finished.stdout, finished.stdout


def test_unzipping_again_compares_the_files_there_under_a_progress_bar(tmp_path, monkeypatch):
    """A re-run reads every file there for its CRC-32: 5 s without a word for CIFAKE's 100,000 images."""
    archive = make_zip(tmp_path / "download.zip")
    extract_archive(archive, tmp_path / "raw")
    bars = []

    def progress(iterable, total=None, desc=None, unit="file"):
        bars.append((desc, len(iterable)))
        return iterable

    monkeypatch.setattr(archives, "progress", progress)
    extract_archive(archive, tmp_path / "raw")

    assert ("comparing with the files there", len(CONTENT)) in bars


def test_the_unzipper_says_it_checks_the_archive_before_that_wait(tmp_path):
    """Reading and checking the entries of CIFAKE's 100,000 took 3 s before the first bar."""
    archive = make_zip(tmp_path / "download.zip")

    finished = run_script("DataUnZipper.py", archive, "--to", tmp_path / "raw", cwd=tmp_path)

    assert finished.returncode == 0, finished.stderr
    assert finished.stderr.splitlines()[0] == f"checking the entries of {archive} before writing anything"


def test_zipping_with_verify_reads_the_archive_back_under_a_progress_bar(tmp_path, dataset, monkeypatch):
    """--verify read 100,000 entries back for 3-12 s after the zip bar, without a word."""
    bars = []

    def progress(iterable, total=None, desc=None, unit="file"):
        bars.append(desc)
        return iterable

    monkeypatch.setattr(archives, "progress", progress)
    zip_folder(dataset, tmp_path / "out.zip", verify=True)

    assert bars == ["zip dataset", "verify out.zip"], bars


def test_a_tar_gz_is_refused_in_one_line_without_quiet(tmp_path):
    """The line that says the entries are checked came above the refusal of a file that is no zip."""
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(Path(__file__), "notes.txt")

    finished = run_script("DataUnZipper.py", archive, "--to", tmp_path / "raw")

    assert finished.returncode == 1 and finished.stderr.count("\n") == 1, finished.stderr


def test_unzipper_summary_says_1_file_for_an_archive_of_one_file(tmp_path):
    archive = tmp_path / "one.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("only/REAL/0001.jpg", b"not decoded here")
    finished = run_script("DataUnZipper.py", archive, "--to", tmp_path / "out", "--quiet")
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.startswith("Extracted 1 file (") and "0 macOS junk entries skipped" in finished.stdout


def test_unzipper_help_names_the_zip_format_and_says_defaults_as_a_user_writes_them(capsys):
    with pytest.raises(SystemExit) as exit_info:
        DataUnZipper.main(["--help"])
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert exit_info.value.code == 0
    assert "Only zip archives are read" in shown
    assert "None" not in shown and "(default: data/raw/<archive name without .zip>)" in shown
    assert "(default: 100G)" in shown and "107374182400" not in shown
    parsed = DataUnZipper.parse_args(["a.zip"])
    assert (parsed.to, parsed.max_total_bytes) == (None, UnzipLimits().max_total_bytes)


@pytest.mark.parametrize("kind", ["slip", "overlap", "corrupt", "corrupt-lzma", "tar-gz", "clash", "empty"])
def test_unzipper_script_fails_with_one_line(tmp_path, kind):
    target = tmp_path / "target"
    if kind == "tar-gz":
        archive = tmp_path / "a.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(Path(__file__), "notes.txt")
    elif kind == "corrupt-lzma":
        archive = damage_first_entry(make_zip(tmp_path / "a.zip", {"A/a.txt": b"x" * 100}, zipfile.ZIP_LZMA))
    elif kind == "empty":
        archive = make_zip(tmp_path / "a.zip", {})
    elif kind == "slip":
        archive = make_zip(tmp_path / "a.zip", {"../evil.txt": b"x"})
    elif kind == "overlap":
        archive = make_overlapping_zip(tmp_path / "a.zip")
    elif kind == "corrupt":
        archive = tmp_path / "a.zip"
        archive.write_bytes(b"PK\x03\x04 not really a zip")
    else:
        archive = make_zip(tmp_path / "a.zip")
        (target / "notes.txt").parent.mkdir(parents=True)
        (target / "notes.txt").write_text("mine")
    finished = run_script("DataUnZipper.py", archive, "--to", target, "--quiet")
    assert finished.returncode == 1
    assert finished.stderr.startswith("error: ") and finished.stderr.count("\n") == 1, finished.stderr
    assert "Traceback" not in finished.stderr


@pytest.mark.parametrize("name", ["x.tar.gz", "x.tgz", "x.tar.bz2", "x.tar.xz", "x.tar"])
def test_unzipper_script_suggests_a_data_raw_folder_named_without_the_archive_suffixes(tmp_path, name):
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8 photo")
    compression = {"tar": "", "tgz": "gz"}.get(name.rsplit(".", 1)[1], name.rsplit(".", 1)[1])
    with tarfile.open(tmp_path / name, f"w:{compression}") as tar:
        tar.add(tmp_path / "a.jpg", "REAL/a.jpg")
    work = tmp_path / "project"
    work.mkdir()
    refused = run_script("DataUnZipper.py", tmp_path / name, cwd=work)
    assert refused.returncode == 1
    assert f"`mkdir -p {Path('data/raw/x')} && tar xf " in refused.stderr, refused.stderr
    assert not (work / "data").exists()


def test_unzipper_script_says_in_one_line_that_names_were_read_as_cp437_and_its_option_reads_them(tmp_path):
    archive = shift_jis_zip(tmp_path / "jp.zip")
    guessed = run_script("DataUnZipper.py", archive, "--to", tmp_path / "guessed", "-q")
    assert guessed.returncode == 0 and guessed.stderr.count("\n") == 1, guessed.stderr
    assert "--name-encoding" in guessed.stderr
    read = run_script("DataUnZipper.py", archive, "--to", tmp_path / "read", "--name-encoding", "shift_jis", "-q")
    assert read.returncode == 0 and read.stderr == "", read.stderr
    assert files_under(tmp_path / "read") == SHIFT_JIS_CONTENT


@pytest.mark.parametrize("encoding", ["klingon", "base64", "utf-16"])
def test_unzipper_script_rejects_an_unknown_name_encoding_as_a_usage_error(tmp_path, capsys, encoding):
    archive = shift_jis_zip(tmp_path / "jp.zip")
    with pytest.raises(SystemExit) as exit_info:
        DataUnZipper.main([str(archive), "--to", str(tmp_path / "t"), "--name-encoding", encoding])
    assert exit_info.value.code == 2
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert f"error: argument --name-encoding: {encoding!r} is not a known text encoding" in last_line
    assert not (tmp_path / "t").exists()


def test_unzipper_script_bomb_limits_are_flags(tmp_path):
    archive = make_zip(tmp_path / "bomb.zip", {"zeros.bin": bytes(5_000_000)}, zipfile.ZIP_DEFLATED)
    by_default = run_script("DataUnZipper.py", archive, "--to", tmp_path / "t")
    assert by_default.returncode == 1 and "raise --max-ratio" in by_default.stderr
    too_big = run_script("DataUnZipper.py", archive, "--to", tmp_path / "t", "--max-ratio", "2000",
                         "--max-total-bytes", "1M")
    assert too_big.returncode == 1 and "raise --max-total-bytes" in too_big.stderr
    allowed = run_script("DataUnZipper.py", archive, "--to", tmp_path / "t", "--max-ratio", "2000", "-q")
    assert allowed.returncode == 0, allowed.stderr
    assert (tmp_path / "t" / "zeros.bin").stat().st_size == 5_000_000


@pytest.mark.parametrize(("flag", "value"), [
    ("--max-ratio", "nan"), ("--max-ratio", "inf"), ("--max-ratio", "-1"), ("--max-ratio", "0"),
    ("--max-ratio", "0.5"), ("--max-total-bytes", "0"), ("--max-total-bytes", "0.5"), ("--max-total-bytes", "-5"),
])
def test_unzipper_script_rejects_nonsense_limits_as_usage_errors(tmp_path, capsys, flag, value):
    archive = make_zip(tmp_path / "a.zip")
    with pytest.raises(SystemExit) as exit_info:
        DataUnZipper.main([str(archive), "--to", str(tmp_path / "t"), flag, value])
    assert exit_info.value.code == 2
    assert f"argument {flag}: " in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_zipper_then_unzipper_scripts_round_trip(tmp_path, dataset):
    zipped = run_script("DataZipper.py", dataset, "--verify", "--quiet")
    assert zipped.returncode == 0, zipped.stderr
    assert "verified" in zipped.stdout
    unzipped = run_script("DataUnZipper.py", tmp_path / "dataset.zip", "--to", tmp_path / "back", "--quiet")
    assert unzipped.returncode == 0, unzipped.stderr
    assert files_under(tmp_path / "back") == files_under(dataset)
    (dataset / "labels.csv").write_text("name,label\n")  # the folder changed since: the archive is not its zip
    again = run_script("DataZipper.py", dataset, "--quiet")
    assert again.returncode == 1 and "--overwrite" in again.stderr


def test_the_zipper_names_the_archive_of_a_relative_folder_as_typed(tmp_path, dataset):
    """It wrote "Wrote /home/me/project/dataset.zip" for DataZipper.py dataset."""
    finished = run_script("DataZipper.py", "dataset", "--quiet", cwd=tmp_path)

    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.startswith("Wrote dataset.zip ("), finished.stdout


def test_the_zipper_refusing_an_archive_that_exists_names_it_as_typed(tmp_path, dataset):
    """It said "error: /home/me/project/dataset.zip already exists" for DataZipper.py dataset."""
    assert run_script("DataZipper.py", "dataset", "--quiet", cwd=tmp_path).returncode == 0
    (dataset / "added.txt").write_text("new")

    line = one_error_line(run_script("DataZipper.py", "dataset", "--quiet", cwd=tmp_path))

    assert line == "error: dataset.zip already exists. Add --overwrite to replace it, or choose another --out.", line


def test_the_zipper_names_a_relative_folder_that_is_not_there_as_typed(tmp_path):
    """It said "error: /home/me/project/data/nope is not a folder" for DataZipper.py data/nope."""
    line = one_error_line(run_script("DataZipper.py", "data/nope", "--quiet", cwd=tmp_path))

    assert line == "error: data/nope is not a folder. Give the folder to zip, e.g. data/train.", line


def test_zipper_script_refuses_a_backslash_name_with_one_line(tmp_path, dataset):
    (dataset / "back\\slash.jpg").write_bytes(b"\xff\xd8 photo")
    refused = run_script("DataZipper.py", dataset, "--out", tmp_path / "d.zip")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: ") and refused.stderr.count("\n") == 1, refused.stderr
    assert "back\\slash.jpg" in refused.stderr and not (tmp_path / "d.zip").exists()



@pytest.mark.parametrize("name", ["d.tar.gz", "d.tgz", "d.tar", "d.7z", "D.RAR"])
def test_zipper_script_refuses_an_out_named_as_another_kind_of_archive(tmp_path, dataset, name):
    """It wrote a zip named d.tar.gz with exit 0: tar refuses it, and so does a person who trusts the name."""
    refused = run_script("DataZipper.py", dataset, "--out", tmp_path / name)
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert f"--out {tmp_path / name} is named as" in line and "writes a zip" in line
    assert not (tmp_path / name).exists()

@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATASETS / "cifake-trainsplit.zip").exists(), reason="needs ../shared/datasets")
def test_unzipper_extracts_the_real_cifake_archive(tmp_path):
    archive = SHARED_DATASETS / "cifake-trainsplit.zip"
    result = extract_archive(archive, tmp_path / "cifake")
    assert result.extracted == 100_000
    assert len(os.listdir(tmp_path / "cifake" / "cifake" / "train" / "REAL")) == 45_000
    shutil.rmtree(tmp_path / "cifake")  # pytest keeps recent tmp folders; 100,000 files are worth removing


@pytest.mark.parametrize(("layout", "splitter"), [
    ({"cifake/train/REAL/a.png", "cifake/train/FAKE/b.png", "cifake/test/REAL/c.png", "cifake/test/FAKE/d.png"},
     "DataSplitD2.py"),
    ({"art/RealArt/a.png", "art/AiArt/b.png"}, "DataSplitD1.py"),
])
def test_the_unzipper_ends_with_the_command_of_the_splitter_that_reads_what_it_extracted(tmp_path, capsys, layout,
                                                                                         splitter):
    """The README numbers the steps; each script names the next one, and the unzipper knows which splitter fits."""
    archive = make_zip(tmp_path / "download.zip", {name: b"\x89PNG an image by its name" for name in sorted(layout)})
    target = tmp_path / "raw" / "download"

    assert DataUnZipper.main([str(archive), "--to", str(target), "-q"]) == 0

    assert capsys.readouterr().out.splitlines()[-1] == f"Next: python {splitter} {target} --out data"


def test_the_unzipper_finds_its_next_step_without_the_splitters_own_notes(tmp_path):
    """It printed the splitter's "using .../cifake (the dataset folder inside ...)" twice before its Next: line."""
    layout = ["cifake/train/REAL/a.png", "cifake/train/FAKE/b.png", "cifake/test/REAL/c.png", "cifake/test/FAKE/d.png"]
    archive = make_zip(tmp_path / "download.zip", {name: b"\x89PNG an image by its name" for name in layout})

    unzipped = run_script("DataUnZipper.py", archive, "--to", tmp_path / "raw" / "download")

    assert unzipped.returncode == 0 and "using" not in unzipped.stderr, unzipped.stderr


def test_the_unzipper_says_what_a_train_and_validation_download_needs_before_its_splitter(tmp_path, capsys):
    """It named DataSplitD1.py, which refused the split folders and only then said to rename Validation to test."""
    layout = ["Dataset/Train/Real/a.png", "Dataset/Train/Fake/b.png", "Dataset/Validation/Real/c.png",
              "Dataset/Validation/Fake/d.png"]
    archive = make_zip(tmp_path / "download.zip", {name: b"\x89PNG an image by its name" for name in layout})
    target = tmp_path / "raw" / "download"

    assert DataUnZipper.main([str(archive), "--to", str(target), "-q"]) == 0

    assert capsys.readouterr().out.splitlines()[-1] == (
        f"Next: rename {target / 'Dataset' / 'Validation'} to test (DataSplitD2.py reads train/ and test/, and carves "
        f"validation out of train), then run python DataSplitD2.py {target / 'Dataset'} --out data")


def test_an_archive_inside_the_archive_is_named_with_the_command_that_unzips_it(tmp_path, capsys):
    """A Kaggle download is often a zip holding the dataset's own zip: unzipped, it gives no images, and the
    splitters would only say that they find no class folders."""
    inner = make_zip(tmp_path / "cifake.zip")
    outer = make_zip(tmp_path / "download.zip", {"README.txt": b"read me", "cifake.zip": inner.read_bytes()})
    target = tmp_path / "raw" / "download"
    assert DataUnZipper.main([str(outer), "--to", str(target), "-q"]) == 0
    out = capsys.readouterr().out
    assert "1 archive" in out and str(target / "cifake.zip") in out and "DataUnZipper.py" in out
    assert extract_archive(outer, tmp_path / "again").archives == ("cifake.zip",)
    assert extract_archive(make_zip(tmp_path / "plain.zip"), tmp_path / "plain").archives == ()


def test_a_macos_appledouble_file_of_an_inner_archive_is_not_taken_for_an_archive(tmp_path, capsys):
    """The unzipper named ._cifake.zip first, and its own command then said the file was damaged."""
    inner = make_zip(tmp_path / "cifake.zip")
    outer = make_zip(tmp_path / "download.zip", {"cifake.zip": inner.read_bytes(),
                                                 "._cifake.zip": b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X"})
    assert extract_archive(outer, tmp_path / "raw").archives == ("cifake.zip",)


def test_a_download_of_split_archives_is_unzipped_beside_them_then_split_as_one_dataset(tmp_path, capsys):
    """train.zip and test.zip inside a download: the unzipper's advice put each in data/raw/<stem>, two datasets
    whose Next: lines split the test images as a dataset of their own."""
    images = {split: make_zip(tmp_path / f"{split}.zip", {f"{name}/{split}{index}.png": b"\x89PNG an image"
                                                          for name in ("REAL", "FAKE") for index in range(2)})
              for split in ("train", "test")}
    outer = make_zip(tmp_path / "kaggle.zip", {f"{split}.zip": path.read_bytes() for split, path in images.items()})
    target = tmp_path / "raw" / "kaggle"

    commands = []
    for archive in (outer, None, None):
        argv = [str(outer), "--to", str(target)] if archive else commands[-1].split()[2:]
        assert DataUnZipper.main([*argv, "-q"]) == 0
        commands.append(capsys.readouterr().out.splitlines()[-1].split(": ")[-1])

    assert commands[0] == f"python DataUnZipper.py {target / 'test.zip'} --to {target / 'test'}"
    assert commands[1] == f"python DataUnZipper.py {target / 'train.zip'} --to {target / 'train'}"
    assert commands[2] == f"python DataSplitD2.py {target} --out data"


def test_a_download_unzipped_again_after_its_split_archives_knows_their_files(tmp_path, capsys):
    """Run again after train.zip and test.zip were unzipped beside themselves (as an interrupted run is), it called
    their images "another archive's files", said to unzip the archives again, and gave no split command."""
    outer = make_zip(tmp_path / "kaggle.zip", {f"ds/{split}.zip": make_zip(
        tmp_path / f"{split}.zip", {f"{name}/{split}{index}.png": b"\x89PNG an image" for name in ("REAL", "FAKE")
                                    for index in range(2)}).read_bytes() for split in ("train", "test")})
    target = tmp_path / "raw" / "kaggle"
    assert DataUnZipper.main([str(outer), "--to", str(target), "-q"]) == 0
    for split in ("test", "train"):
        assert DataUnZipper.main([str(target / "ds" / f"{split}.zip"), "--to", str(target / "ds" / split), "-q"]) == 0
    capsys.readouterr()

    assert DataUnZipper.main([str(outer), "--to", str(target)]) == 0

    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == f"Next: python DataSplitD2.py {target} --out data"
    assert "still packed" not in out and "another archive" not in err


def test_the_zipper_writes_beside_a_symlinked_folder_not_beside_its_target(tmp_path):
    store, project = tmp_path / "store" / "cifake-v2", tmp_path / "project" / "data"
    (store / "REAL").mkdir(parents=True)
    (store / "REAL" / "a.png").write_bytes(b"\x89PNG an image")
    project.mkdir(parents=True)
    (project / "train").symlink_to(store)

    zipped = run_script("DataZipper.py", "data/train", "--quiet", cwd=project.parent)

    assert zipped.returncode == 0, zipped.stderr
    assert (project / "train.zip").is_file() and not (tmp_path / "store" / "cifake-v2.zip").exists()


def test_the_zipper_says_in_one_line_that_an_out_that_is_a_folder_needs_a_file_name(tmp_path, dataset):
    """It said to add --overwrite, which then said the folder is not a file."""
    (tmp_path / "out.zip").mkdir()
    refused = run_script("DataZipper.py", dataset, "--out", tmp_path / "out.zip")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert "is a folder" in refused.stderr and "--overwrite" not in refused.stderr


def test_an_archive_damaged_in_its_first_entry_leaves_no_folder_behind(tmp_path):
    """It said "nothing was written" and left the archive's whole (empty) folder tree."""
    entries = {f"ds/{split}/{name}/a.bin": b"hello world " * 10 for split in ("train", "test") for name in "AB"}
    raw = bytearray(make_zip(tmp_path / "d.zip", entries).read_bytes())
    raw[raw.find(b"hello")] ^= 1
    (tmp_path / "d.zip").write_bytes(bytes(raw))

    with pytest.raises(UserError, match=r"damaged or incomplete .*nothing was written"):
        extract_archive(tmp_path / "d.zip", tmp_path / "raw" / "d")

    assert not (tmp_path / "raw" / "d").exists()


def test_macos_appledouble_files_beside_their_files_are_skipped_as_junk(tmp_path):
    """A zip made by some macOS tools keeps each file's ._name resource fork beside it, not in __MACOSX/: they were
    extracted as files (which the splitters then listed as hidden files)."""
    entries = {**CONTENT, "train/REAL/._a.jpg": b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X", "._train": b"fork"}
    result = extract_archive(make_zip(tmp_path / "mac.zip", entries), tmp_path / "target")
    assert files_under(tmp_path / "target") == CONTENT
    assert result.junk_skipped == 2


def test_zipping_again_a_folder_of_one_file_says_so_in_the_singular(tmp_path, capsys):
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "a.txt").write_text("a")
    out = tmp_path / "one.zip"
    assert DataZipper.main([str(tmp_path / "one"), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert DataZipper.main([str(tmp_path / "one"), "--out", str(out), "--quiet"]) == 0
    assert f"{out} already holds this file (its size and CRC-32 compared)" in capsys.readouterr().out


def test_the_unzipper_names_a_folder_of_its_own_where_data_holds_another_dataset_s_split(tmp_path, monkeypatch,
                                                                                         capsys):
    """Its Next: line named --out data, where CIFAKE was split: the split then refused it, after checking every file
    (86 s for 72,000)."""
    monkeypatch.chdir(tmp_path)
    for offset, name in enumerate(("REAL", "FAKE")):
        for index in range(4):
            write_image(tmp_path / "raw" / "cifake" / name / f"{index}.png", seed=index + 10 * offset)
    assert run_script("DataSplitD1.py", "raw/cifake", "--out", "data", "--quiet", cwd=tmp_path).returncode == 0
    layout = [f"art/{name}/{index}.png" for name in ("RealArt", "GeneratedArt") for index in range(3)]
    archive = make_zip(tmp_path / "art.zip", {name: b"\x89PNG an image by its name" for name in layout})

    assert DataUnZipper.main([str(archive), "--to", "raw/art", "-q"]) == 0

    last = capsys.readouterr().out.splitlines()[-1]
    assert last == "Next: python DataSplitD1.py raw/art --out data/art"
    # A competition's download, whose test/ is unlabelled: the split of train/ alone it names gets a folder too.
    layout = [f"comp/train/{name}/{index}.png" for name in ("cat", "dog") for index in range(3)] + ["comp/test/x.png"]
    archive = make_zip(tmp_path / "comp.zip", {name: b"\x89PNG an image by its name" for name in layout})
    assert DataUnZipper.main([str(archive), "--to", "raw/comp", "-q"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.endswith("python DataSplitD1.py raw/comp/comp/train --out data/train-dataset"), last


def test_the_unzipper_given_a_folder_names_the_next_step_for_it(tmp_path):
    """"is a folder, but a file was expected.": no word of what to do with a folder already unzipped."""
    folder = tmp_path / "my set"
    for name in ("real", "fake"):
        write_image(folder / name / "a.png", seed=len(name))

    refused = run_script("DataUnZipper.py", folder)

    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert (f"{folder} is a folder, not an archive: nothing to unzip. Next: python DataSplitD1.py '{folder}' "
            "--out data") in refused.stderr


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="file-size limits (ulimit -f) are POSIX's")
def test_zipper_script_over_the_file_size_limit_names_the_archive_and_leaves_none(tmp_path, dataset):
    """It ended "error: File too large. Fix the cause": neither the archive nor the limit named."""
    out = tmp_path / "d.zip"
    line = one_error_line(run_script("DataZipper.py", dataset, "--out", out, "--quiet", max_file_bytes=100))
    assert line.startswith(f"error: {out}: ") and "ulimit -f" in line, line
    assert not out.exists() and not list(tmp_path.glob(".d.zip.*"))
