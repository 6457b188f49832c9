"""Zip archives in and out: safe extraction (DataUnZipper.py) and deterministic zipping (DataZipper.py)."""

from __future__ import annotations

import bz2
import contextlib
import copy
import dataclasses
import gzip
import logging
import lzma
import math
import os
import shlex
import shutil
import stat
import struct
import time
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from realvsai.cli import plural, progress
from realvsai.config import is_split_checks, shell_path
from realvsai.errors import UserError
from realvsai.files import (
    atomic_write,
    atomic_write_bytes,
    fit_name,
    free_name,
    human_bytes,
    name_key,
    remove_temporaries,
    temporary_of,
    windows_name,
)

logger = logging.getLogger(__name__)

# Already-compressed formats gain nothing from deflate; storing them makes zipping and unzipping fast.
STORED_SUFFIXES = frozenset({".jpg", ".jpeg", ".jfif", ".png", ".webp", ".gif"})
_READABLE_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})
_CHUNK = 1 << 20  # also the most an entry read in one go may hold: larger ones are streamed through zipfile
# A local file header: signature, 22 bytes of fields the central directory repeats, name and extra lengths.
_LOCAL_HEADER = struct.Struct("<4s22xHH")
# Small entries cannot be bombs however well they compress (a 100 KB text file of spaces is fine),
# so the ratio limit only applies above this size.
_RATIO_FLOOR_BYTES = 1 << 20
# The folder macOS' zips (Finder's Compress) keep the resource forks of their files in, as ._<name>: unzip and
# Windows' Explorer extract it beside the dataset.
MACOS_JUNK_FOLDER = "__MACOSX"
_WINDOWS = os.name == "nt"  # where an entry's name may be one the file system cannot hold (files.windows_name)
_UTF8_NAME = 1 << 11  # general-purpose flag bit 11: the entry's name is UTF-8 (else, by the spec, cp437)
_EXTRA_RECORD = struct.Struct("<HH")  # each record of an extra field: header id, size of the data that follows
_EXTENDED_TIMESTAMP = 0x5455  # Info-ZIP's "UT" record: a flags byte, then (flag bit 0) the modification time
_UNIX_TIME = struct.Struct("<i")
_MADE_ON_UNIX = 3  # ZipInfo.create_system: the high 16 bits of external_attr then hold the st_mode
# What zipfile raises for bytes it cannot inflate (a damaged or truncated archive); NotImplementedError for a garbled
# "version needed to extract" or flag (zip 26.1, "compressed patched data"), which no real zip tool writes either.
_DAMAGE_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError)


class _UnreadableEntry(Exception):
    """The archive's own bytes could not be read (an I/O error of the disk or stick holding it), as opposed to a
    failed write of the extracted file or an entry whose bytes do not inflate."""

    def __init__(self, entry: str, error: OSError):
        super().__init__(entry, error)
        self.entry, self.error = entry, error


# A downloaded archive's name ends in one of these: the folder it is extracted into is named without it.
_ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tbz2", ".txz", ".tar", ".zip", ".7z", ".rar")
# What gets downloaded instead of a zip, by its magic bytes: (offset, magic, what it is, the tool that extracts it,
# and for a compression: the module that reads it, its name and the command that undoes it, as a zip compressed
# again needs).
_OTHER_FORMATS = (
    (0, b"\x1f\x8b", "gzip-compressed (a .tar.gz or .tgz)", "tar", (gzip, "gzip", "gunzip -c")),
    (0, b"BZh", "bzip2-compressed (a .tar.bz2)", "tar", (bz2, "bzip2", "bunzip2 -c")),
    (0, b"\xfd7zXZ\x00", "xz-compressed (a .tar.xz)", "tar", (lzma, "xz", "xz -dc")),
    (257, b"ustar", "a tar archive", "tar", None),
    (0, b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", "7z", None),
    (0, b"Rar!\x1a\x07", "a RAR archive", "7z", None),
)


def _decompressed_head(archive: Path, module) -> bytes:
    """The first 4 bytes ``archive`` holds once decompressed by ``module`` (gzip, bz2 or lzma); b"" if unreadable."""
    try:
        with module.open(archive, "rb") as stream:
            return stream.read(4)
    except (OSError, EOFError, ValueError):
        return b""


@dataclasses.dataclass(frozen=True)
class UnzipLimits:
    """What an archive may declare before extraction refuses it as a zip bomb."""

    max_total_bytes: int = 100 * 1024**3  # the uncompressed size of all entries together
    # Uncompressed / compressed, for each entry above 1 MB and for the whole archive. Deflate cannot
    # exceed about 1,030, JPEGs are about 1 and text about 3 to 10.
    max_ratio: float = 200.0


@dataclasses.dataclass(frozen=True)
class ExtractResult:
    """What ``extract_archive`` did."""

    target: Path
    extracted: int  # files written
    already_there: int  # files skipped because the same content was already in place
    junk_skipped: int  # __MACOSX/ and .DS_Store entries left out
    bytes_written: int
    archives: tuple[str, ...] = ()  # the archive's files that are archives themselves (their files stay packed)


@dataclasses.dataclass(frozen=True)
class ZipResult:
    """What ``zip_folder`` wrote."""

    archive: Path
    stored: int  # files kept as they are (already-compressed images)
    deflated: int
    empty_folders: int
    left_out: tuple[str, ...]  # symlinks and special files, which an archive should not carry
    archive_bytes: int
    unchanged: bool = False  # the archive already held these files (a run killed once it had its name): none written
    junk_left_out: int = 0  # macOS junk (.DS_Store, ._name, __MACOSX/), which DataUnZipper would skip


def entry_parts(name: str) -> list[str] | None:
    """The folder and file names an entry would create (either separator), or None when it points outside
    (absolute names, drive letters, ``..`` anywhere)."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (parts[0][:1].isalpha() and parts[0][1:2] == ":") or ".." in parts:
        return None
    return [part for part in parts if part not in ("", ".")]


def is_archive(path: Path) -> bool:
    """Whether ``path`` is named as an archive (.zip, .tar.gz, .7z, ...)."""
    return Path(path).name.lower().endswith(_ARCHIVE_SUFFIXES)


def archive_stem(archive: Path) -> str:
    """``archive``'s name without its archive suffix: ``x.zip``, ``x.tar.gz`` and ``x.tgz`` all give ``x``."""
    name = Path(archive).name
    suffix = next((suffix for suffix in _ARCHIVE_SUFFIXES if name.lower().endswith(suffix) and name != suffix), "")
    return name[:len(name) - len(suffix)] if suffix else Path(archive).stem


def folder_beside(archive: Path) -> Path:
    """Where an archive a download holds is unzipped: the folder of its name beside it."""
    return Path(archive).parent / archive_stem(archive)


def _is_junk(parts: Sequence[str]) -> bool:
    """True for what macOS adds to archives: ``__MACOSX/`` resource forks, ``.DS_Store``, and the AppleDouble
    ``._name`` files that some tools keep beside their files rather than in ``__MACOSX/``."""
    return bool(parts) and (parts[-1] == ".DS_Store" or parts[-1].startswith("._") or MACOS_JUNK_FOLDER in parts)


def extract_archive(
    archive: Path, target: Path, *, overwrite: bool = False, limits: UnzipLimits = UnzipLimits(),
    name_encoding: str | None = None,
) -> ExtractResult:
    """Extracts ``archive`` into ``target`` once all of it passed the checks (zip slip, symlinks, zip bombs,
    free space); a re-run finishes an interrupted one. Each file gets the modification time the archive gives it:
    the exact UTC time of Info-ZIP's extended timestamp field where the entry has one, else its DOS time (the
    zipping machine's local time, to 2 seconds) read as local time, as unzip does. A zip made on Unix gives each
    file its permission bits, as unzip does, but never setuid, setgid or sticky, and the owner can always read and
    write it; folders keep the mode the umask gives, so that their files can be written.

    Args:
        name_encoding: how the entry names not flagged UTF-8 are read (``shift_jis`` for Japanese Windows zips).
            None reads each as UTF-8 when it is valid UTF-8 (as Info-ZIP's unzip does), else as cp437, with one
            warning that names the option.
    """
    archive, target = Path(archive), Path(target)
    if target.exists() and not target.is_dir():
        raise UserError(f"{target} is a file. Give --to a folder to extract into.")
    root, finished, fresh = os.path.realpath(target), 0, False  # fresh: this run made the target folder
    try:
        with zipfile.ZipFile(archive) as zip_file:
            # Before any check: the offsets of a split zip count from the start of each part.
            if other := _other_format(archive, target, _head(archive), zip_file.infolist()):
                raise UserError(other)
            # Seconds for 100,000 entries before the first bar; said once the file is known to be a zip.
            logger.info("checking the entries of %s before writing anything", archive)
            _decode_names(archive, zip_file.infolist(), name_encoding)  # before the checks: they see these names
            entries, folders, junk = _check_entries(archive, zip_file.infolist(), limits)
            if not entries:  # folders alone hold no data either
                what = ("only macOS junk: __MACOSX/, .DS_Store" if junk else "only empty folders" if folders
                        else "no entries")
                raise UserError(f"{archive} holds no file to extract ({what}); nothing was written. Check that it is "
                                "the archive you meant, or download it again.")
            data_offsets = _check_overlaps(archive, zip_file.infolist())
            if existed := os.path.isdir(root):
                existing_folders = _check_folders(root, folders)
                to_write, already_there = _compare_existing(root, entries, existing_folders, overwrite)
                _remove_strays(root, to_write, existing_folders)
            else:  # a fresh extraction: nothing to compare, no stat call per file
                existing_folders, to_write, already_there = set(), entries, 0
            num_bytes, disk = sum(info.file_size for info, _ in to_write), root
            while not os.path.isdir(disk):
                disk = os.path.dirname(disk)
            if num_bytes > shutil.disk_usage(disk).free:
                raise UserError(f"extracting needs {human_bytes(num_bytes)}, but only "
                                f"{human_bytes(shutil.disk_usage(disk).free)} is free on the disk holding {root}. "
                                "Free some space or extract elsewhere with --to.")
            fresh = not existed
            for folder in ["", *sorted(folders - existing_folders)]:
                os.makedirs(os.path.join(root, folder), exist_ok=True)
            # Each entry writes exactly the size it declares (or fails), so the bytes written stay
            # within the declared total that --max-total-bytes and the free space were checked against.
            mtimes: dict[tuple[int, ...], float | None] = {}  # archives often give many files one time
            default_permissions = _default_permissions()
            with open(archive, "rb") as stream:
                for info, relative in progress(to_write, desc=f"unzip {archive.name}"):
                    path = root + os.sep + relative
                    mtime = _extended_mtime(info.extra)
                    if mtime is None:
                        if info.date_time not in mtimes:
                            mtimes[info.date_time] = _local_timestamp(info.date_time)
                        mtime = mtimes[info.date_time]
                    permissions = _permissions(info, default_permissions)
                    try:
                        if info.compress_size <= _CHUNK and info.file_size <= _CHUNK and info.compress_type in (
                                zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                            try:
                                data = _read_small_entry(stream, info, data_offsets[info.header_offset])
                            except OSError as error:
                                raise _UnreadableEntry(info.filename, error) from error
                            atomic_write_bytes(path, data, durable=False, mtime=mtime, permissions=permissions)
                        else:
                            _extract_entry(zip_file, info, path, mtime, permissions)
                        finished += 1
                    except _UnreadableEntry as error:  # a failing USB stick or network drive under the archive
                        raise UserError(f"could not read {error.entry!r} from {archive} "
                                        f"({error.error.strerror or error.error}): the disk holding the archive "
                                        "failed to read it. Files finished so far are complete; copy the archive to "
                                        "a local disk (or download it again) and unzip that copy into the same "
                                        "folder to finish.") from error.error
                    except OSError as error:  # a full disk, a read-only folder: the user can fix it and re-run
                        raise UserError(f"could not write {path} ({error.strerror or error}). Files finished so "
                                        "far are complete; fix the cause and re-run the same command.") from error
    except UnicodeDecodeError as error:  # zipfile decodes names flagged as UTF-8 when it opens the archive
        raise UserError(f"{archive} has an entry name that is not valid UTF-8, though the archive says its names "
                        "are; nothing was extracted. Extract it with `unzip` or `7z x` instead.") from error
    except _DAMAGE_ERRORS as error:  # a tar, 7z or rar file, or one part of a split zip, fails here too
        if finished:
            raise UserError(f"{archive} is damaged or incomplete ({error}). Files finished before the damage are "
                            "complete; download the archive again and re-run the same command to finish.") from error
        if fresh and not finished:  # only the empty folders made for its entries: none is kept
            for folder, _, _ in sorted(os.walk(root), reverse=True):
                with contextlib.suppress(OSError):
                    os.rmdir(folder)
        head = _head(archive)
        raise UserError(_other_format(archive, target, head) or _not_a_zip(archive, head) or f"{archive} is damaged "
                        f"or incomplete ({error}); nothing was written. Download the archive again and re-run the same "
                        "command.") from error
    archives = tuple(sorted(relative for _, relative in entries if relative.lower().endswith(_ARCHIVE_SUFFIXES)
                            and not relative.rsplit("/", 1)[-1].startswith(".")))  # macOS' ._name files are none
    # The files of its own archives, unzipped beside them, are this download's, not another archive's.
    unpacked = {folder_beside(Path(relative)).as_posix() for relative in archives}
    others = _files_not_in(root, {relative for _, relative in entries}, unpacked) if existed else []
    if others:
        logger.warning("%s holds %d file%s that this archive does not (e.g. %s): it mixes another archive's files; "
                       "unzip into a new --to folder for this archive alone", target, len(others),
                       "s" * (len(others) > 1), min(others))
    return ExtractResult(target, len(to_write), already_there, junk, num_bytes, archives)


def _head(archive: Path) -> bytes:
    """The first bytes of ``archive``, by which ``_other_format`` and ``_not_a_zip`` tell what it is."""
    with open(archive, "rb") as stream:
        return stream.read(512)


def _other_format(archive: Path, target: Path, head: bytes, infos: Sequence[zipfile.ZipInfo] = ()) -> str | None:
    """One line naming what ``archive`` (starting with ``head``) is when it is not one whole zip, with the command
    that reads it: a tar, 7z or rar archive (by its magic bytes), or one part of a split zip (a .z01 beside it, the
    first part's signature, or entries on another part); None when it looks like a zip."""
    if head.startswith(b"PK\x07\x08") or archive.with_suffix(".z01").exists() or any(info.volume for info in infos):
        last, whole = archive.with_suffix(".zip"), archive.with_name(f"{archive.stem}-whole.zip")
        return (f"{archive} is one part of a split zip archive ({archive.stem}.z01, .z02, ... and {last.name}); "
                f"nothing was written. Join the parts with `zip -s 0 {shell_path(last)} --out "
                f"{shell_path(whole)}`, then unzip {whole}.")
    for offset, magic, what, tool, compressed in _OTHER_FORMATS:
        if head[offset:offset + len(magic)] == magic:
            file, folder = shell_path(archive), shell_path(target)
            module, compression, command = compressed or (None, "", "")
            if module and _decompressed_head(archive, module) == b"PK\x03\x04":  # not a tar: `tar xf` would pass
                whole = shell_path(archive.with_name(f"{archive_stem(archive)}-unpacked.zip"))
                return (f"{archive} is a zip archive compressed again with {compression} (as a web server may send "
                        f"one); nothing was written. Get the zip back with `{command} {file} > {whole}`, then unzip "
                        "that.")
            command = (f"mkdir -p {folder} && tar xf {file} -C {folder}" if tool == "tar"
                       else f"7z x {file} {shlex.quote(f'-o{target}')}")
            return f"{archive} is {what}, not a zip; nothing was written. Extract it with `{command}`."
    return None


def _not_a_zip(archive: Path, head: bytes) -> str | None:
    """One line naming what ``archive`` (starting with ``head``), which zipfile could not read, is when it is no zip
    at all rather than a damaged one: an empty file, a web page saved in place of the download, or another file; None
    when it starts as a zip (or as a self-extracting one, an executable) does."""
    if not head:
        return (f"{archive} is empty (0 bytes): the download did not finish; nothing was written. Download the archive "
                "again and re-run the same command.")
    if head.lstrip()[:1] == b"<":  # <!DOCTYPE html>, <html>: a sign-in or error page
        return (f"{archive} is a web page (HTML), not a zip: the download saved a page (a sign-in or error page) in "
                "place of the archive; nothing was written. Download the archive again from its page in a browser, "
                "then re-run the same command.")
    if not head.startswith((b"PK", b"MZ")):
        return (f"{archive} is not a zip archive (a zip begins with PK); nothing was written. Give DataUnZipper.py "
                "the .zip you downloaded.")
    return None


def _decode_names(archive: Path, infos: Sequence[zipfile.ZipInfo], name_encoding: str | None) -> None:
    """Re-reads the names not flagged UTF-8, which zipfile read as cp437 (see ``extract_archive``)."""
    as_cp437 = []
    for info in infos:
        if info.flag_bits & _UTF8_NAME or (name_encoding is None and info.filename.isascii()):
            continue  # an ASCII name reads the same as UTF-8 and as cp437
        as_read = info.orig_filename.split("\0")[0]  # what zipfile did: cut at a NUL, its own separator made "/"
        if as_read.replace(os.sep, "/") != info.filename:
            continue  # Python 3.12+ took the name from an Info-ZIP Unicode Path extra field, which is UTF-8
        raw = as_read.encode("cp437")  # cp437 gives each of the 256 bytes its own character, so this is lossless
        try:
            info.filename = raw.decode(name_encoding or "utf-8")
        except UnicodeDecodeError:
            if name_encoding:
                raise UserError(f"{archive} has the entry name {raw!r}, which is not valid {name_encoding}. Nothing "
                                "was extracted; give the encoding the archive was made with as --name-encoding "
                                "(e.g. cp932, gbk, cp866), or leave the option out.") from None
            as_cp437.append(info.filename)
    if as_cp437:
        raw_names = [name.encode("cp437") for name in as_cp437]
        fits = [f"{encoding} reads them as {names[0]!r}" for encoding in NAME_ENCODINGS
                if (names := _as_letters(raw_names, encoding))]
        example = (", ".join(fits) + " (the one that reads them right is theirs)" if fits else
                   "--name-encoding shift_jis for a Japanese Windows zip")
        logger.warning("%d entry name%s not marked UTF-8 and not valid UTF-8, so they were read as cp437 (e.g. %r); if "
                       "they look wrong, extract into a new --to folder with the archive's encoding as "
                       "--name-encoding, e.g. %s", len(as_cp437), "s are" if len(as_cp437) > 1 else " is", as_cp437[0],
                       example)


# Windows' encodings of zips made without the UTF-8 flag, which the cp437 warning tries: Western European,
# Japanese, Chinese, Cyrillic; each with the code points of the letters its names are written in (Latin, kana and
# kanji, hanzi, Cyrillic): read in another encoding, the bytes of a name give letters of other scripts, or none.
NAME_ENCODINGS = {"cp1252": ((0xC0, 0x24F),), "shift_jis": ((0x3040, 0x30FF), (0x4E00, 0x9FFF)),
                  "gbk": ((0x4E00, 0x9FFF),), "cp866": ((0x400, 0x4FF),)}


def _as_letters(raw_names: Sequence[bytes], encoding: str) -> list[str] | None:
    """``raw_names`` read in ``encoding`` where each of them reads, and every character of them not ASCII as a letter
    of that encoding's scripts (``NAME_ENCODINGS``: é, 表), as a name in that encoding does; else None."""
    try:
        names = [name.decode(encoding) for name in raw_names]
    except UnicodeDecodeError:
        return None
    scripts = NAME_ENCODINGS[encoding]
    letters = all(character.isascii() or (character.isalpha() and any(low <= ord(character) <= high
                                                                        for low, high in scripts))
                  for name in names for character in name)
    return names if letters else None


def _expansion(size: int, compressed: int) -> float:
    """How many times ``size`` bytes inflate from ``compressed`` ones, as the ratio limit counts it: 0 at or below
    ``_RATIO_FLOOR_BYTES``."""
    return size / max(compressed, 1) if size > _RATIO_FLOOR_BYTES else 0.0


def _check_entries(
    archive: Path, infos: Sequence[zipfile.ZipInfo], limits: UnzipLimits
) -> tuple[list[tuple[zipfile.ZipInfo, str]], set[str], int]:
    """(info, path below the target) of each entry to extract, the folders they need, and the junk count."""
    entries: dict[str, zipfile.ZipInfo] = {}
    folders: set[str] = set()
    junk = total_size = total_compressed = 0
    shortened = []
    for info in infos:
        name = info.filename
        parts = entry_parts(name)
        # A name of 63 characters or fewer fits in 255 bytes (UTF-8 takes at most 4 a character): most skip this.
        if parts is not None and len(name) > 63 and parts != (fitted := [fit_name(part) for part in parts]):
            shortened.append(name)  # no file system takes a name over 255 bytes: cut short, the same each run
            parts = fitted
        if parts is None:
            raise UserError(
                f"{archive} is unsafe: entry {name!r} would be written outside the target folder (zip slip). "
                "Nothing was extracted; only extract archives you trust."
            )
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UserError(f"{archive} is unsafe: entry {name!r} is a symbolic link, which could point anywhere. "
                            "Nothing was extracted; only extract archives you trust.")
        if info.flag_bits & 0x1:
            raise UserError(f"{archive} is password-protected ({name!r}). Extract it with a tool that asks "
                            "for the password, e.g. `unzip`, then use the folder.")
        if info.compress_type not in _READABLE_METHODS:
            raise UserError(f"{archive} uses compression method {info.compress_type} ({name!r}), which Python "
                            "cannot read. Extract it with `7z x` or `unzip` instead.")
        total_size += info.file_size
        total_compressed += info.compress_size
        if (ratio := _expansion(info.file_size, info.compress_size)) > limits.max_ratio:
            raise _bomb_error(archive, f"entry {name!r} expands {ratio:,.0f} times, more than --max-ratio "
                              f"{limits.max_ratio:g}", "--max-ratio")
        if not parts:  # "./": the target folder itself
            continue
        if _is_junk(parts):
            junk += 1
            continue
        is_folder = name.endswith(("/", "\\"))  # a folder entry (backslash: made on Windows)
        relative = os.sep.join(parts)
        # Every parent is listed, since each must be checked for symlinks on disk; a listed folder's parents are.
        if (parent := relative if is_folder else relative.rpartition(os.sep)[0]) and parent not in folders:
            folders.update(os.sep.join(parts[:depth]) for depth in range(1, len(parts) + is_folder))
        if not is_folder and entries.setdefault(relative, info) is not info:
            raise _duplicate_error(archive, relative)
    if total_size > limits.max_total_bytes:
        raise _bomb_error(archive, f"it declares {human_bytes(total_size)} uncompressed, more than "
                          f"--max-total-bytes {human_bytes(limits.max_total_bytes)}", "--max-total-bytes")
    if (ratio := _expansion(total_size, total_compressed)) > limits.max_ratio:
        raise _bomb_error(archive, f"it expands {ratio:,.0f} times, more than --max-ratio {limits.max_ratio:g}",
                          "--max-ratio")
    if shortened:
        logger.warning("%s longer than a file system allows (255 bytes); %s extracted under a shortened name "
                       "(e.g. %r)", plural(len(shortened), "entry name is", "entry names are"),
                       "it is" if len(shortened) == 1 else "they are", shortened[0])
    clash = next((relative for relative in entries if relative in folders), None)
    if clash:
        raise _duplicate_error(archive, clash)
    return (*_own_names(entries, folders), junk)


def _own_names(entries: dict[str, zipfile.ZipInfo], folders: set[str]
               ) -> tuple[list[tuple[zipfile.ZipInfo, str]], set[str]]:
    """(info, path below the target) of each entry, and the folders they need, each under a name the file system
    holds: on Windows, ``windows_name``'s of each part. An entry whose path is then one file (or folder) on macOS and
    Windows with an earlier one's (``name_key``: IMG_1.jpg and img_1.jpg) gets ``free_name``'s name from its CRC-32,
    on every system alike: written as it is, it would replace the earlier there without a word."""
    def held(relative: str) -> str:
        return os.sep.join(map(windows_name, relative.split(os.sep))) if _WINDOWS else relative

    folders = {held(folder) for folder in folders}
    taken, named, renamed, unholdable = {name_key(folder) for folder in folders}, [], [], []
    for relative, info in entries.items():
        if (written := held(relative)) != relative:
            unholdable.append(relative)
        if name_key(written) in taken:
            new = str(free_name(Path(written), f"{info.CRC:08x}", lambda path: name_key(str(path)) not in taken))
            renamed.append((written, new))
            written = new
        taken.add(name_key(written))
        named.append((info, written))
    if unholdable:
        logger.warning("%s Windows can hold (a character among <>:\"|?*, a trailing dot or space, or a device name "
                       "such as CON): extracted with _ in its place, without the dot or space (e.g. %r)",
                       plural(len(unholdable), "entry name is not one", "entry names are not ones"), unholdable[0])
    if renamed:
        logger.warning("%s only in letter case or accent encoding%s from another (one file on macOS and Windows), "
                       "so each is extracted under a name of its own (e.g. %r as %r)",
                       plural(len(renamed), "entry name differs", "entry names differ"),
                       " (or a trailing dot or space, which Windows drops)" if unholdable else "", *renamed[0])
    return named, folders


def _files_not_in(root: str, relatives: set[str], skipped: set[str] = frozenset()) -> list[str]:
    """The regular files below ``root`` (macOS junk and the folders ``skipped`` left out: paths below it, with "/")
    whose paths below it are not in ``relatives``."""
    others = []
    for folder, folder_names, file_names in os.walk(root):
        prefix = "" if folder == root else folder[len(root) + 1:] + os.sep
        folder_names[:] = [name for name in folder_names if name != MACOS_JUNK_FOLDER
                           and (prefix + name).replace(os.sep, "/") not in skipped]
        others += [prefix + name for name in file_names if prefix + name not in relatives and not _is_junk([name])
                   and stat.S_ISREG(os.lstat(os.path.join(folder, name)).st_mode)]
    return others


def _check_overlaps(archive: Path, infos: Sequence[zipfile.ZipInfo]) -> dict[int, int]:
    """Where each entry's compressed bytes start, by its header offset, once its local header was found to carry
    its name; refuses entries whose bytes overlap ("quoted overlap" bombs; zipfile only checks this from 3.12 on)."""
    previous_name, previous_end, data_offsets = "", 0, {}
    with open(archive, "rb") as stream:  # buffered: the headers of small entries lie close together
        archive_size = os.fstat(stream.fileno()).st_size
        for info in sorted(infos, key=lambda info: info.header_offset):
            # Offsets in a damaged central directory can point anywhere, before the start included (zipfile
            # shifts them all when it finds the directory elsewhere than it says).
            if not 0 <= info.header_offset <= archive_size - _LOCAL_HEADER.size:
                raise zipfile.BadZipFile(f"entry {info.filename!r} starts at byte {info.header_offset:,}, outside "
                                         f"the archive ({archive_size:,} bytes)")
            stream.seek(info.header_offset)
            header = stream.read(_LOCAL_HEADER.size)
            if len(header) < _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
                raise zipfile.BadZipFile(f"entry {info.filename!r} has no local header")
            _, name_length, extra_length = _LOCAL_HEADER.unpack(header)
            # zipfile.open makes the same check; extraction reads small entries without it
            name = info.orig_filename.encode("utf-8" if info.flag_bits & _UTF8_NAME else "cp437")
            if stream.read(name_length) != name:
                raise zipfile.BadZipFile(f"entry {info.filename!r} has another name in its local header")
            if info.header_offset < previous_end:
                raise UserError(
                    f"{archive} looks like a zip bomb: entries {previous_name!r} and {info.filename!r} overlap "
                    "(they share compressed bytes, so they could write far more than the archive holds). "
                    "Nothing was extracted; a normal zip never does this, so get the archive from its source again."
                )
            previous_name = info.filename
            data_offsets[info.header_offset] = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
            previous_end = data_offsets[info.header_offset] + info.compress_size
    return data_offsets


def _bomb_error(archive: Path, reason: str, flag: str) -> UserError:
    return UserError(f"{archive} looks like a zip bomb: {reason}. Nothing was extracted; "
                     f"if you trust the archive, raise {flag}.")


def _duplicate_error(archive: Path, relative: str) -> UserError:
    return UserError(f"{archive} has two entries for {relative!r}, so one would replace the other. "
                     "Nothing was extracted; ask for an archive without duplicate names.")


def _check_folders(root: str, folders: set[str]) -> set[str]:
    """The folders that already exist, each checked to be a real folder inside ``root`` (not a symlink out)."""
    existing: set[str] = set()
    for folder in sorted(folders):  # a parent comes before its children
        path = os.path.join(root, folder)
        if not os.path.lexists(path):
            continue
        if not os.path.realpath(path).startswith(root + os.sep):  # ``root`` is a real path already
            raise UserError(f"{path} is a symlink that leads outside {root}; nothing was extracted. "
                            "Remove the link or extract elsewhere with --to.")
        if not os.path.isdir(path):
            raise UserError(f"{path} is a file, but the archive has a folder there. Move the file away "
                            "or extract elsewhere with --to.")
        existing.add(folder)
    return existing


def _compare_existing(root: str, entries: Sequence[tuple[zipfile.ZipInfo, str]], existing_folders: set[str],
                      overwrite: bool) -> tuple[list[tuple[zipfile.ZipInfo, str]], int]:
    """The entries to write, and the number already in place (same size and CRC-32)."""
    to_write, clashes = [], []
    for info, relative in progress(entries, desc="comparing with the files there"):
        path = os.path.join(root, relative)
        try:  # a file in a folder that does not exist yet needs no stat call
            new_folder = os.sep in relative and os.path.dirname(relative) not in existing_folders
            status = None if new_folder else os.lstat(path)
        except FileNotFoundError:
            status = None
        if status is None:
            to_write.append((info, relative))
            continue
        if stat.S_ISDIR(status.st_mode):
            raise UserError(f"{path} is a folder, but the archive has a file there. Move the folder away "
                            "or extract elsewhere with --to.")
        if stat.S_ISREG(status.st_mode) and status.st_size == info.file_size and _crc32(path) == info.CRC:
            continue
        clashes.append(path)
        to_write.append((info, relative))
    if clashes and not overwrite:
        raise UserError(f"{plural(len(clashes), 'file already exists', 'files already exist')} with other content "
                        f"(first: {clashes[0]}). Nothing was "
                        "extracted; add --overwrite to replace them, or extract elsewhere with --to.")
    if clashes:
        logger.warning("replacing %s with other content (first: %s)", plural(len(clashes), "existing file"),
                       clashes[0])
    return to_write, len(entries) - len(to_write)


def _crc32(path: str) -> int:
    crc = 0
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def _remove_strays(root: str, entries: Sequence[tuple[zipfile.ZipInfo, str]], existing_folders: set[str]) -> None:
    """Removes the temporary files (``.<name>.<random>.tmp``) a killed run left for ``entries``."""
    names: dict[str, list[str]] = {}
    for _, relative in entries:
        folder, name = os.path.split(relative)
        if not folder or folder in existing_folders:
            names.setdefault(folder, []).append(name)
    for folder, wanted in names.items():
        remove_temporaries(os.path.join(root, folder), wanted)


def _read_small_entry(stream: IO[bytes], info: zipfile.ZipInfo, data_offset: int) -> bytes:
    """The bytes of a stored or deflated entry of at most ``_CHUNK`` bytes, read in one go (1 us, where zipfile.open
    and its reads take 13: it counts for 100,000 small files); BadZipFile unless they are as declared."""
    stream.seek(data_offset)
    packed = stream.read(info.compress_size)
    if len(packed) < info.compress_size:
        raise zipfile.BadZipFile(f"entry {info.filename!r} is cut short: the archive ends inside it")
    data, complete = packed, True
    if info.compress_type == zipfile.ZIP_DEFLATED:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, as in a zip
        try:
            data = inflater.decompress(packed, info.file_size + 1)  # one byte more: a longer stream shows
        except zlib.error as error:
            raise zipfile.BadZipFile(f"entry {info.filename!r} cannot be inflated: {error}") from error
        complete = inflater.eof
    if len(data) > info.file_size:
        raise zipfile.BadZipFile(f"entry {info.filename!r} inflates to more than the "
                                 f"{human_bytes(info.file_size)} it declares")
    if len(data) < info.file_size or not complete:
        raise zipfile.BadZipFile(f"entry {info.filename!r} inflates to {human_bytes(len(data))}"
                                 f"{'' if complete else ' and stops mid-stream'}, less than the "
                                 f"{human_bytes(info.file_size)} it declares")
    if zlib.crc32(data) != info.CRC:
        raise zipfile.BadZipFile(f"Bad CRC-32 for entry {info.filename!r}")
    return data


def _local_timestamp(date_time: tuple[int, int, int, int, int, int]) -> float | None:
    """A zip's modification time (local time, as unzip reads it) as a timestamp; None for a date that cannot be."""
    try:
        return time.mktime((*date_time, 0, 0, -1))
    except (OverflowError, ValueError):
        return None


def _extended_mtime(extra: bytes) -> int | None:
    """The modification time (a Unix time) in the Info-ZIP extended timestamp record of an entry's extra field;
    None where there is none, or where the field is malformed (a record cut short or running past the end)."""
    offset = 0
    while offset + _EXTRA_RECORD.size <= len(extra):
        header_id, size = _EXTRA_RECORD.unpack_from(extra, offset)
        offset += _EXTRA_RECORD.size
        if offset + size > len(extra):
            return None
        if header_id == _EXTENDED_TIMESTAMP:
            # In the central directory the record holds at most the modification time, and its flags tell which
            # times the local header holds (appnote's extrafld.txt): bit 0 with a size of 1 leaves the time there.
            return _UNIX_TIME.unpack_from(extra, offset + 1)[0] if size >= 5 and extra[offset] & 1 else None
        offset += size
    return None


def _default_permissions() -> int:
    """The permission bits a new file gets (0666 less the umask), which need no chmod."""
    umask = os.umask(0o077)  # the umask is read by setting it: a strict one, for the moment until it is put back
    os.umask(umask)
    return 0o666 & ~umask


def _permissions(info: zipfile.ZipInfo, default: int) -> int | None:
    """The permission bits to give an entry's file, None where they are ``default`` (no chmod call): those a zip
    made on Unix records, less setuid, setgid and sticky, plus read and write for the owner (later steps read the
    file; the user deletes it). Where it records none (0, as some tools write for every file), the default."""
    bits = info.external_attr >> 16 & 0o777 if info.create_system == _MADE_ON_UNIX else 0
    return None if not bits or bits | 0o600 == default else bits | 0o600


def _extract_entry(zip_file: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, mtime: float | None,
                   permissions: int | None) -> None:
    """Writes one entry (no fsync: a re-run checks size and CRC-32) with modification time ``mtime`` and permission
    bits ``permissions`` (None: the default); BadZipFile unless it is as declared."""
    # zipfile stops at the declared size, so a stream that inflates further would be cut short without a
    # word (and pass the CRC-32 check, which then covers only the declared part). Declaring one byte more
    # lets the read go past the declared size, where any byte is an error.
    probe = copy.copy(info)
    probe.file_size = info.file_size + 1
    with (atomic_write(path, "wb", durable=False, mtime=mtime, permissions=permissions) as writer,
          _open_entry(zip_file, probe) as reader):
        left = info.file_size
        try:
            while left and (chunk := _read_entry(reader, min(_CHUNK, left), info)):
                writer.write(chunk)
                left -= len(chunk)
            longer = _read_entry(reader, 1, info) != b""
        except zipfile.BadZipFile:  # damage, or zipfile's CRC-32 check, which reads ahead, maybe past the declared size
            if not _declared_part_is_intact(zip_file, info):
                raise
            longer = True
        if longer:
            raise zipfile.BadZipFile(f"entry {info.filename!r} inflates to more than the "
                                     f"{human_bytes(info.file_size)} it declares")
        if left:
            raise zipfile.BadZipFile(f"entry {info.filename!r} inflates to {human_bytes(info.file_size - left)}, "
                                     f"less than the {human_bytes(info.file_size)} it declares")


def _open_entry(zip_file: zipfile.ZipFile, info: zipfile.ZipInfo) -> IO[bytes]:
    """``zip_file.open(info)``; _UnreadableEntry when the archive's disk fails to read its local header."""
    try:
        return zip_file.open(info)
    except OSError as error:
        raise _UnreadableEntry(info.filename, error) from error


def _read_entry(reader: IO[bytes], size: int, info: zipfile.ZipInfo) -> bytes:
    """``reader.read(size)``; BadZipFile naming the entry when its bytes cannot be inflated, _UnreadableEntry when
    the archive's disk fails to read them."""
    try:
        return reader.read(size)
    except OSError as error:
        # bz2 reports a damaged stream as a bare OSError ("Invalid data stream", no errno): damage, not a failed
        # read. One with an errno (EIO) is the disk's.
        if error.errno is not None:
            raise _UnreadableEntry(info.filename, error) from error
        raise zipfile.BadZipFile(f"entry {info.filename!r} cannot be inflated: {error}") from error
    except (zlib.error, lzma.LZMAError, EOFError) as error:
        raise zipfile.BadZipFile(f"entry {info.filename!r} cannot be inflated: {error}") from error


def _declared_part_is_intact(zip_file: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
    """True when the first ``info.file_size`` bytes an entry inflates to match its CRC-32."""
    try:
        with zip_file.open(info) as reader:  # zipfile checks the CRC-32 once it has read the declared size
            while _read_entry(reader, _CHUNK, info):
                pass
    except zipfile.BadZipFile:
        return False
    return True


def zip_folder(folder: Path, out: Path, *, overwrite: bool = False, verify: bool = False) -> ZipResult:
    """Zips ``folder`` into ``out`` atomically, in sorted order; images are stored, the rest deflated,
    symlinks left out. ``verify`` checks every CRC-32 before ``out`` gets its name. A name ``extract_archive``
    would not give back as it is (``entry_parts``: a backslash, a drive letter) is refused before anything is
    written, and the partial archive a killed run left is removed. ``folder`` is one (DataZipper.py checks)."""
    folder, out = Path(folder), Path(out)
    real_folder, real_out = Path(os.path.realpath(folder)), Path(os.path.realpath(out))
    if real_folder == real_out or real_folder in real_out.parents:
        raise UserError(f"{out} is inside {folder}, the folder being zipped. Write the archive elsewhere with --out.")
    if out.is_dir():
        raise UserError(f"{out} is a folder; --out names the archive file to write, e.g. --out "
                        f"{shell_path(out / f'{folder.name}.zip')}.")
    files, empty_folders, left_out, junk = _folder_contents(folder)
    if os.path.lexists(out) and not overwrite:
        if not _holds(out, folder, files, empty_folders, verify):
            raise UserError(f"{out} already exists. Add --overwrite to replace it, or choose another --out.")
        stored = sum(map(_is_stored, files))
        return ZipResult(out, stored, len(files) - stored, len(empty_folders), tuple(left_out), out.stat().st_size,
                         unchanged=True, junk_left_out=junk)
    if not files and not empty_folders:
        raise UserError(f"{folder} has no files to zip (symlinks are left out). Give a folder that holds files, "
                        "e.g. data/train.")
    for name in [*files, *empty_folders]:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:  # os.listdir keeps such bytes as surrogates
            raise UserError(f"{folder / name}: this name is not valid UTF-8, which a zip archive cannot hold; "
                            "nothing was written. Rename it (e.g. with convmv), then zip again.") from None
        if entry_parts(name) != name.split("/"):
            raise UserError(f"{folder / name}: DataUnZipper.py would not extract this name as it is (it reads a "
                            "backslash as a folder separator and refuses a drive letter such as C:); nothing was "
                            "written. Rename it (no backslash, no leading drive letter), then zip again.")
    named: dict[str, str] = {}
    for name in sorted([*files, *empty_folders]):
        if (twin := named.setdefault(name_key(name), name)) != name:
            raise UserError(f"{folder / twin} and {folder / name} differ only in letter case or accent encoding: one "
                            "file on macOS and Windows, so DataUnZipper.py would give the second another name; "
                            "nothing was written. Rename one, then zip again.")
    for name in left_out:
        logger.warning("left out %s: symlinks and special files are not archived", name)
    stored = 0
    if out.parent.is_dir():
        remove_temporaries(out.parent, [out.name])  # a killed run's partial archive
    with atomic_write(out, "w+b") as stream:
        with zipfile.ZipFile(stream, "w", zipfile.ZIP_DEFLATED, strict_timestamps=False) as zip_file:
            for name in progress(sorted([*files, *(f"{name}/" for name in empty_folders)]), desc=f"zip {folder.name}"):
                keep = _is_stored(name)
                stored += keep
                try:
                    zip_file.write(folder / name, name, zipfile.ZIP_STORED if keep else zipfile.ZIP_DEFLATED)
                except OSError as error:
                    raise UserError(f"zipping stopped at {name} ({error.strerror or error}), so {out} was not "
                                    "written. Fix the cause (disk space, permissions) and run again.") from error
            _warn_of_ratios(out, zip_file.infolist())
        if verify:
            stream.flush()
            stream.seek(0)
            try:
                with zipfile.ZipFile(stream) as zip_file:
                    bad = _first_bad_entry(zip_file, f"verify {out.name}")
            except (zipfile.BadZipFile, zlib.error, EOFError) as error:
                bad = str(error)
            if bad is not None:
                raise UserError(f"the new archive failed its check ({bad}), so {out} was not written. "
                                "Check the disk (space, errors) and run again.")
    return ZipResult(out, stored, len(files) - stored, len(empty_folders), tuple(left_out), out.stat().st_size,
                     junk_left_out=junk)


def _first_bad_entry(zip_file: zipfile.ZipFile, desc: str) -> str | None:
    """``ZipFile.testzip`` under a progress bar (``desc``): the name of the first entry whose data does not read
    back to its CRC-32, or None. testzip took 3-12 s for 100,000 entries without a word."""
    for info in progress(zip_file.infolist(), desc=desc):
        try:
            with zip_file.open(info) as entry:
                while entry.read(_CHUNK):
                    pass
        except zipfile.BadZipFile:
            return info.filename
    return None


def _is_stored(name: str) -> bool:
    """Whether ``zip_folder`` stores the file ``name`` as it is (already compressed) rather than deflating it."""
    return os.path.splitext(name)[1].lower() in STORED_SUFFIXES


def _holds(out: Path, folder: Path, files: Sequence[str], empty_folders: Sequence[str], verify: bool) -> bool:
    """Whether the archive ``out`` holds exactly what ``zip_folder`` would write of ``folder``: the same entries,
    each once, and each file's size and CRC-32; with ``verify``, its data read back matches them too."""
    try:
        with zipfile.ZipFile(out) as archive:
            listed = archive.infolist()
            if verify and _first_bad_entry(archive, f"verify {out.name}") is not None:
                return False
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError):
        return False
    infos = {info.filename: info for info in listed}
    if len(infos) != len(listed) or infos.keys() != {*files, *(f"{name}/" for name in empty_folders)}:
        return False
    return all(os.path.getsize(folder / name) == infos[name].file_size and _crc32(str(folder / name)) == infos[name].CRC
               for name in files)


def _warn_of_ratios(out: Path, infos: Sequence[zipfile.ZipInfo]) -> None:
    """Warns when DataUnZipper, as it stands by default, would refuse ``out`` as a zip bomb (``_check_entries``):
    a file that compresses more than ``UnzipLimits.max_ratio`` times (logs, zeros), or all of them together (flat
    masks, each too small to be checked alone), with the --max-ratio that extracts it."""
    limit = UnzipLimits().max_ratio
    ratios = {info.filename: _expansion(info.file_size, info.compress_size) for info in infos}
    over = {name: ratio for name, ratio in ratios.items() if ratio > limit}
    total = _expansion(sum(info.file_size for info in infos), sum(info.compress_size for info in infos))
    needed = math.ceil(max([*over.values(), total if total > limit else 0]))
    if over:
        name = max(over, key=over.get)
        logger.warning("%d file%s in %s compress%s more than %g times (e.g. %s: %.0f times): DataUnZipper.py refuses "
                       "that as a zip bomb unless given --max-ratio %d", len(over), "s" * (len(over) > 1), out,
                       "" if len(over) > 1 else "es", limit, name, over[name], needed)
    elif needed:
        logger.warning("%s expands %.0f times (its files together), more than %g: DataUnZipper.py refuses that as a "
                       "zip bomb unless given --max-ratio %d", out, total, limit, needed)


def _folder_contents(folder: Path) -> tuple[list[str], list[str], list[str], int]:
    """Regular files, empty folders and left-out entries (symlinks, special files) under ``folder``, POSIX paths,
    and how many macOS junk files (``_is_junk``: DataUnZipper skips them) were left out."""
    files, empty_folders, left_out, junk = [], [], [], 0

    def fail(error: OSError) -> None:
        raise error

    for path, folder_names, file_names in os.walk(folder, onerror=fail):
        prefix = "" if path == os.fspath(folder) else Path(path).relative_to(folder).as_posix() + "/"
        if MACOS_JUNK_FOLDER in prefix.split("/"):  # junk as a whole, which DataUnZipper skips
            junk += len(file_names)
            continue
        names = [name for name in file_names if not is_split_checks(name, file_names)]
        junk += sum(_is_junk([name]) for name in names)
        names = [name for name in names if not _is_junk([name])]
        for name in [name for name in names if temporary_of(name)]:  # half a file: unzipped, it would be one
            logger.warning("left out %s%s: the half-written file of a run that was killed (run it again to finish "
                           "it)", prefix, name)
            names.remove(name)
        regular = {name for name in names if stat.S_ISREG(os.lstat(os.path.join(path, name)).st_mode)}
        links = [name for name in folder_names if os.path.islink(os.path.join(path, name))]  # os.walk skips them
        files += [prefix + name for name in names if name in regular]
        left_out += [prefix + name for name in links + [name for name in names if name not in regular]]
        if prefix and not regular and len(links) == len(folder_names):
            empty_folders.append(prefix[:-1])
    return files, empty_folders, sorted(left_out), junk
