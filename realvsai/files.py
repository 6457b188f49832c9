"""Safe file handling: listing, hashing, atomic writes (``atomic_write``), no-clobber writes (``write_new``),
collision-safe copy and move (``place_file``), CSV lists."""

from __future__ import annotations

import contextlib
import csv
import ctypes
import enum
import errno
import hashlib
import io
import itertools
import json
import os
import re
import secrets
import shutil
import stat
import sys
import tempfile
import threading
import time
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from realvsai.cli import default_workers, progress, raise_if_ctrl_c
from realvsai.errors import UserError

_CHUNK = 256  # files per task of map_in_threads, at most
# Below this mean size a file is a small image (CIFAKE's 32 px JPEGs: 1.2 KB), whose check or decode is Python holding
# the GIL: threads only wait on each other. On 2 cores, threads broke even at 128 px JPEGs (4.7 KB).
SMALL_FILE_BYTES = 4 << 10
# The bytes of the files write_new_in_batches holds in memory and writes together (the copies of a split, a merge)
COPY_BATCH_BYTES = 64 << 20
# os.link errors that mean "no hard link here" (another file system, FAT, a share, protected links)
CANNOT_LINK = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES)
T = TypeVar("T")
_MAX_NAME_BYTES = 200  # leaves room for a temporary name's prefix and suffix within the usual 255 bytes
MAX_NAME_BYTES = 255  # the longest file name ext4, APFS, NTFS and most others take
_NOT_ON_WINDOWS = re.compile(r'[<>:"|?*\x00-\x1f]')  # and / and \\, which separate folders
_WINDOWS_DEVICES = frozenset({"CON", "PRN", "AUX", "NUL", *(f"{port}{number}" for port in ("COM", "LPT")
                                                          for number in range(1, 10))})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".webp"})  # read here, in any letter case
# Pillow's names of the formats read here, whatever a file's name says (MPO: a phone's JPEG with previews): a TIFF or
# GIF named .jpg is no more read than one named .tiff or .gif (``images.open_image``).
IMAGE_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP"})
# Images of formats the pipeline does not read (TensorFlow and the app neither), by their names' extensions: named as
# such when left out (``format_not_read``).
_OTHER_IMAGE_FORMATS = {".gif": "GIF", ".tif": "TIFF", ".tiff": "TIFF", ".heic": "HEIC", ".heif": "HEIF",
                        ".avif": "AVIF", ".jp2": "JPEG 2000", ".dng": "DNG", ".psd": "PSD"}
# The first bytes of the formats read here, with the extension to give a file of one named otherwise. A BMP's "BM"
# alone is too short to tell: its info header's size follows at byte 14, one of the sizes its versions have.
IMAGE_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG", ".png"), (b"\xff\xd8\xff", "JPEG", ".jpg"))
_BMP_INFO_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})


class Outcome(enum.Enum):
    """What ``place_file`` did with one file."""

    COPIED = "copied"
    MOVED = "moved"
    IDENTICAL = "identical"  # the same content was already at the target: nothing written
    RENAMED = "renamed"  # the name was taken by other content: written under a new name


def list_images(folder: Path, recursive: bool = False, skipped: list[tuple[str, str]] | None = None,
                nested: list[str] | None = None) -> list[Path]:
    """The image files in ``folder`` (and below it when ``recursive``), sorted by path; the hidden and
    other files left out are added to ``skipped`` as (path, reason), and (without ``recursive``) the visible
    sub-folders not entered to ``nested``.

    A symlinked sub-folder is not entered (it could lead outside ``folder``, or back into it in a loop);
    a symlink that leads nowhere is listed as skipped. ``folder`` itself may be a symlink.
    """
    found: list[str] = []
    skipped = [] if skipped is None else skipped
    folders = [os.fspath(folder)]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                try:
                    is_dir, is_file = entry.is_dir(), entry.is_file()
                except OSError:  # a symlink loop (ELOOP)
                    is_dir = is_file = False
                if entry.name.startswith("."):
                    skipped.append((entry.path, "hidden folder (names starting with '.' are left out; its files "
                                    "are not read)" if is_dir else "hidden file (names starting with '.' "
                                    "are left out)"))
                elif is_dir and entry.is_symlink():
                    if recursive:
                        skipped.append((entry.path, "symlink to a folder: not followed, so nothing outside the "
                                        "folder is read twice or moved (copy the folder in to include it)"))
                elif is_dir:
                    if recursive:
                        folders.append(entry.path)
                    elif nested is not None:
                        nested.append(entry.path)
                elif is_file and (reason := not_an_image_name(entry.name)):
                    skipped.append((entry.path, misnamed_image(entry.path) or reason))
                elif is_file:
                    found.append(entry.path)
                elif entry.is_symlink():
                    skipped.append((entry.path, "symlink that leads nowhere (its target is missing, or it is "
                                    "a loop)"))
                else:  # never opened: reading a pipe would wait for a writer
                    skipped.append((entry.path, "not a regular file (a named pipe, socket or device)"))
    return [Path(path) for path in sorted(found)]


def not_an_image_name(name: str) -> str | None:
    """Why a file of this name is not listed as an image (``list_images``' reason), or None when it is."""
    if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
        return None
    return other_image_format(name) or f"not an image file (image names end in {', '.join(sorted(IMAGE_EXTENSIONS))})"


def format_by_start(head: bytes) -> tuple[str, str] | None:
    """The format read here whose first bytes ``head`` (18 or more) begins with, and its extension: ("JPEG",
    ".jpg"); None for any other."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP", ".webp"
    if head[:2] == b"BM" and int.from_bytes(head[14:18], "little") in _BMP_INFO_SIZES:
        return "BMP", ".bmp"
    return next(((name, extension) for magic, name, extension in IMAGE_SIGNATURES if head.startswith(magic)), None)


def misnamed_image(path: Path | str) -> str | None:
    """Why a file not named as an image (``not_an_image_name``) that is one of the formats read here by its first
    bytes (a JPEG saved without an extension, a browser's .jpg_large) is left out, with the fix; None for any other
    file, or one that cannot be read."""
    if other_image_format(os.fspath(path)):
        return None
    try:
        with open(path, "rb") as stream:
            found = format_by_start(stream.read(32))
    except OSError:
        return None
    if found is None:
        return None
    name, extension = found
    return (f"a {name} image whose name does not end in {extension} (or another image extension): rename it to "
            f"{os.path.basename(path)}{extension} to include it")


def format_not_read(found: str) -> str:
    """Why an image of the format ``found`` ("TIFF", "HEIC"), found by its name or by its content, is left out or
    refused, with the fix: the one sentence every path says it in."""
    return (f"{'an' if found[0] in 'AEIOU' else 'a'} {found} image, a format not read here (JPEG, PNG, WebP or BMP, "
            "whatever the file's name): convert it to PNG (lossless) or JPEG")


def other_image_format(name: str) -> str | None:
    """Why a file of this name is no image read here though it is one (a GIF, a TIFF, an iPhone's HEIC), or None."""
    found = _OTHER_IMAGE_FORMATS.get(os.path.splitext(name)[1].lower())
    return format_not_read(found) if found else None


def refuse_unwritable(folder: Path) -> None:
    """Raises the OSError that making ``folder`` (and the folders above it) and writing into it would meet, and
    writes nothing: for a dry run, which must fail where the run would. A file in its path (ENOTDIR), a read-only
    file system (EROFS), or a folder the user may not write in (EACCES), found at the nearest folder that exists."""
    folder = Path(os.path.abspath(folder))
    existing = next(path for path in (folder, *folder.parents) if os.path.lexists(path))
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
    if hasattr(os, "statvfs") and os.statvfs(existing).f_flag & os.ST_RDONLY:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(folder))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(existing))


def name_key(name: str) -> str:
    """What ``name`` is to a person, and to the file systems of macOS (and, for letter case, Windows): one key for
    names that differ only in letter case (REAL, real) or accent encoding ("é" as one letter, NFC, as typed on Linux
    and Windows, or "e" and a combining accent, NFD, as macOS writes names). Unicode's canonical caseless match."""
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", name).casefold())


def locate(path: Path | str) -> Path:
    """``path`` made absolute as the file system finds it, its parent folders resolved (``link/..`` is the folder
    that holds what link leads to) but its own name kept (a symlink stays the link)."""
    path = Path(path)
    return path.resolve() if path.name in ("", ".", "..") else Path(os.path.realpath(path.parent)) / path.name


def as_typed(path: Path | str, given: Path | str) -> Path:
    """``path``, found from what a user gave (``given``: ``locate``'s absolute path of it, or one inside or beside
    it), as they would type it: relative to the current folder where ``given`` was relative, else as it is. A
    summary or a ``Next:`` line then names data/raw/x, not /home/me/project/data/raw/x."""
    if Path(given).is_absolute():
        return Path(path)
    try:  # from what was typed, not the current folder: a data/ that is a symlink to ../big stays data/
        inside = os.path.relpath(os.path.realpath(path), os.path.realpath(given))
    except ValueError:  # Windows: on another drive than what was typed
        return Path(path)
    return Path(os.path.normpath(os.path.join(given, inside)))


def is_inside(path: Path | str, root: Path | str) -> bool:
    """True when ``path``, with every symlink resolved, lies inside ``root`` (also resolved)."""
    return os.path.realpath(path).startswith(os.path.join(os.path.realpath(root), ""))


def fit_name(name: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """``name``, or when longer than ``max_bytes`` (UTF-8) its stem cut short plus ``~`` and a CRC-32 of the
    whole name, so different long names stay different and the same name always fits the same way."""
    if len(os.fsencode(name)) <= max_bytes:
        return name
    stem, suffix = os.path.splitext(name)
    if len(os.fsencode(suffix)) > 16:  # not an extension but most of the name
        stem, suffix = name, ""
    tail = f"~{zlib.crc32(os.fsencode(name)):08x}{suffix}"
    while stem and len(os.fsencode(stem + tail)) > max_bytes:
        stem = stem[:-1]
    return stem + tail


def windows_name(name: str) -> str:
    """``name`` as Windows can hold it: ``_`` for each character it refuses (``<>:"|?*`` and control characters),
    without the trailing dots and spaces it would drop (``_`` for a name of nothing else), and ``_`` after a device
    name (``CON.jpg``, ``aux``: ``CON_.jpg``, ``aux_``), which names no file there."""
    name = _NOT_ON_WINDOWS.sub("_", name).rstrip(" .") or "_"
    stem, dot, rest = name.partition(".")
    return f"{stem}_{dot}{rest}" if stem.rstrip(" ").upper() in _WINDOWS_DEVICES else name


def map_in_threads(function: Callable[[Sequence[T]], list], items: Sequence[T], workers: int, desc: str, *,
                   spread: bool = True) -> list:
    """``function(chunk)`` for chunks of ``items`` in ``workers`` threads (for images: ``reading_workers``); the
    results in order, flattened. Threads: file work releases the GIL, and processes were no faster
    (benchmarks/bench_split.py). ``spread``: chunks small enough for each thread to take a few (162 photos were one
    chunk, read by one thread); else chunks of up to ``_CHUNK`` items (a split's copies wait on the disk once a
    chunk)."""
    size = max(1, min(_CHUNK, len(items) // (4 * workers))) if spread else _CHUNK
    chunks = [items[start:start + size] for start in range(0, len(items), size)]
    results: list = []
    pool, bar = ThreadPoolExecutor(max_workers=workers), progress(None, total=len(items), desc=desc)
    try:
        for chunk_results in pool.map(function, chunks):
            results.extend(chunk_results)
            bar.update(len(chunk_results))
    finally:
        pool.shutdown(cancel_futures=True)
        bar.close()
    return results


def reading_workers(paths: Sequence[str | Path]) -> int:
    """The threads worth reading, checking or decoding the images ``paths`` in: one per core, or one where they are
    small (``SMALL_FILE_BYTES`` on average, of up to 64 of them). Measured on 2 cores: the scan of 20,000 CIFAKE images
    took 1.9 s in one thread, 3.4 s in 2 and 4.6 s in 16; two threads halved the check of real-or-ai-photos (332 KB
    photos)."""
    sample = paths[::max(1, len(paths) // 64)]
    sizes = []
    for path in sample:
        with contextlib.suppress(OSError):  # gone or unreadable: its reader says so
            sizes.append(os.stat(path).st_size)
    return 1 if sizes and sum(sizes) < SMALL_FILE_BYTES * len(sizes) else default_workers()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def same_bytes_across(groups: Sequence[Sequence[Path]], desc: str,
                      digests: dict[Path, str] | None = None) -> list[list[tuple[int, Path]]]:
    """The files of ``groups`` whose bytes a file of another group has: for each such content, its files as (group
    number, path), in the groups' order. Only files that share their size with another group's file are read (their
    sha256, under a progress bar named ``desc``); ``digests``, where given, gets those sha256s."""
    by_size: dict[int, list[tuple[int, Path]]] = {}
    for number, paths in enumerate(groups):
        for path in paths:
            by_size.setdefault(os.stat(path).st_size, []).append((number, path))
    compared = [(size, member) for size, members in by_size.items() if len({number for number, _ in members}) > 1
                for member in members]
    by_content: dict[tuple[int, str], list[tuple[int, Path]]] = {}
    for size, (number, path) in progress(compared, total=len(compared), desc=desc):
        digest = sha256_file(path)
        if digests is not None:
            digests[path] = digest
        by_content.setdefault((size, digest), []).append((number, path))
    return [members for members in by_content.values() if len({number for number, _ in members}) > 1]


def read_verified(path: str | Path, digest: str) -> bytes:
    """The bytes of ``path``, checked against the ``digest`` read before (UserError if it changed, or went)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:  # found by the scan, not given by the user: "check the path" would not help
        raise UserError(f"{path} went away while its folder was being copied (deleted or moved meanwhile). Put it "
                        "back, or leave it out, and run the same command again.") from None
    if hashlib.sha256(data).hexdigest() != digest:
        raise UserError(f"{path} changed while it was being copied. Run the same command again.")
    return data


def numbered(name: str) -> Iterator[str]:
    """``name``, then ``name-2``, ``name-3``, ...: the names a new file or folder tries where another holds one."""
    yield name
    for number in itertools.count(2):
        yield f"{name}-{number}"


def temporary_name(path: Path | str) -> str:
    """The hidden name a write to ``path`` starts under: ``.<name>.``, shortened when ``name`` is very long."""
    name = os.path.basename(os.fspath(path))
    if len(os.fsencode(name)) > _MAX_NAME_BYTES:
        name = f"{zlib.crc32(os.fsencode(name)):08x}"
    return f".{name}."


@contextlib.contextmanager
def naming(path: Path | str, unnamed: str | None = None) -> Iterator[None]:
    """Re-raises an OSError about a hidden temporary file (or ``unnamed``: what an error about a file without a name
    gives, its folder or its link), or about no file at all (a write or sync that failed: a full disk, a file-size
    limit; h5py's errors too), as one about ``path``, the file the user knows."""
    try:
        yield
    except OSError as error:
        name = os.fspath(error.filename or "")
        if error.errno is None or (name and temporary_of(os.path.basename(name)) is None and name != unnamed):
            raise
        raise type(error)(error.errno, error.strerror, os.fspath(path)) from error


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "wb", durable: bool = True, mtime: float | None = None,
                 permissions: int | None = None) -> Iterator[object]:
    """Opens a hidden temporary file beside ``path``, renamed onto ``path`` only on success, with modification
    time ``mtime`` (a timestamp) and permission bits ``permissions`` when given (else those open() gives: 0666
    less the umask). ``durable`` also fsyncs (~10 ms a file on some disks: bulk writers pass False and check on a
    re-run)."""
    path = Path(path)
    with naming(path):
        handle, temporary = _new_temporary_in_folder(path)
        try:  # in naming: its exit is a call, where a Ctrl-C during the open would be raised (_new_temporary)
            stream = os.fdopen(handle, mode)
        except BaseException:
            os.close(handle)
            os.unlink(temporary)
            raise
    try:
        # naming the body's writes too, and the close, which writes again what a failed write left in the buffer
        # (its error, naming no file, replaced the first: a zip over the file-size limit named none)
        with naming(path), stream:
            yield stream
            stream.flush()
            _finish(stream.fileno(), temporary, durable, mtime, permissions)
        with naming(path):
            os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _new_temporary_in_folder(path: Path | str) -> tuple[int, str]:
    """``_new_temporary``, making the folder when it is missing (a mkdir call per file is not free); where a file
    is in its way, mkdir names that file."""
    try:
        return _new_temporary(path)
    except (FileNotFoundError, NotADirectoryError):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return _new_temporary(path)


def _finish(handle: int, temporary: str, durable: bool, mtime: float | None, permissions: int | None) -> None:
    """What a written temporary file needs before it takes its name: its modification time and permission bits,
    its bytes on disk."""
    # Before the rename: a kill never leaves the file under its name with another time or mode.
    if mtime is not None:
        os.utime(handle if os.utime in os.supports_fd else temporary, (mtime, mtime))
    if permissions is not None:
        os.chmod(handle if os.chmod in os.supports_fd else temporary, permissions)
    if durable:
        os.fsync(handle)


def _new_temporary(path: Path | str) -> tuple[int, str]:
    """A new hidden file beside ``path`` (``.<name>.<8 random hex>.tmp``), open to write and read, with the mode
    open() gives (0666 less the umask). tempfile.mkstemp makes it 0600, and the chmod and two umask calls that
    mended it made an atomic write of a small file take 60 us instead of 33 on a RAM disk (DataUnZipper writes
    100,000 such files: benchmarks/bench_unzip.py)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    while True:
        temporary = os.path.join(os.path.dirname(path), f"{temporary_name(path)}{secrets.token_hex(4)}.tmp")
        # A Ctrl-C that comes during the open is raised as it returns (CPython checks after a call to C), or at the
        # next call of a Python function: none comes between this and the caller's clean-up (no contextlib.suppress).
        try:
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            pass
        except BaseException:  # the file may be made (an O_EXCL open that failed made none, and no other is named so)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


def _write_all(handle: int, data: bytes) -> None:
    """Writes all of ``data`` to the open file ``handle`` (os.write may write less than it is given)."""
    view = memoryview(data)
    while view:
        view = view[os.write(handle, view):]


def atomic_write_bytes(path: Path | str, data: bytes, *, durable: bool = True, mtime: float | None = None,
                       permissions: int | None = None) -> None:
    """Writes ``data`` to ``path`` as ``atomic_write`` does, without its buffered stream: a small file in about
    half the time, which counts where DataUnZipper writes 100,000 of them (benchmarks/bench_unzip.py)."""
    with naming(path):
        handle, temporary = _new_temporary_in_folder(path)
        try:
            try:
                _write_all(handle, data)
                _finish(handle, temporary, durable, mtime, permissions)
            finally:
                os.close(handle)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise


def atomic_write_text(path: Path, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, content: Any, *, strict: bool = False) -> None:
    """Writes ``content`` as indented JSON to ``path`` atomically; ``strict`` refuses NaN (a ValueError) and
    values JSON has no type for, which otherwise are written as their ``str``."""
    text = json.dumps(content, indent=2, ensure_ascii=False, allow_nan=not strict, default=None if strict else str)
    atomic_write_text(path, text + "\n")


def read_json(path: Path) -> Any:
    """The content of a JSON file this program wrote, or None when there is none."""
    return json.loads(Path(path).read_text(encoding="utf-8")) if Path(path).is_file() else None


def write_new(path: Path | str, data: bytes) -> None:
    """Creates ``path`` holding ``data``; raises FileExistsError rather than replacing anything.
    A hidden temporary file, synced to disk, is hard-linked to ``path``, so neither an interruption nor a
    power cut leaves a cut or empty file under that name (``remove_temporaries`` clears what a kill left)."""
    if not _write_new_files([(path, data)], sync_each=True)[0]:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fspath(path))


def write_new_files(files: Sequence[tuple[Path | str, bytes]]) -> list[bool]:
    """``write_new`` for a batch: creates each path holding its bytes, never over another file; True where it
    wrote, False where the path was taken already (left as it is, for the caller to compare). Every file is
    written first (on Linux without a name, ``_write_unnamed``; else under a temporary one), one ``syncfs`` puts
    them on disk together, and only then does each take its name: ``write_new``'s guarantee at one wait on the disk
    a batch, not one a file (DataAugmentation's copies on an ext4 disk: benchmarks/bench_augmentation.py). Without
    it (macOS, Windows) each file is fsynced."""
    return _write_new_files(files, sync_each=_syncfs is None)


def _load_syncfs() -> Callable[[int], int] | None:
    """Linux's syncfs(2), which puts on disk what was written to the file system an open file is on, and nothing
    else: os.sync flushes every file system, so a batch waited on a USB stick or a network share written to by
    other programs. None elsewhere: macOS's sync(2) returns before the data is on disk, and Windows has none."""
    function = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None) if sys.platform.startswith("linux") else None
    if function is not None:
        function.argtypes, function.restype = [ctypes.c_int], ctypes.c_int
    return function


_syncfs = _load_syncfs()


def _sync_file_systems(paths: Iterable[str]) -> None:
    """Puts what was written at ``paths`` on disk: one ``_syncfs`` a file system they are on."""
    synced: set[int] = set()
    for folder in dict.fromkeys(os.path.dirname(path) or "." for path in paths):
        handle = os.open(folder, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            if (device := os.fstat(handle).st_dev) not in synced:
                synced.add(device)
                if _syncfs(handle) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, os.strerror(code), folder)
        finally:
            os.close(handle)


def write_new_in_batches(files: Iterable[tuple[Path | str, bytes]]) -> Iterator[bool]:
    """``write_new_files`` over ``files`` a batch at a time, each batch up to about ``COPY_BATCH_BYTES``: each file's
    result (True: written, False: the path was taken) in order, once its batch is on the disk. ``files`` may read each
    one's bytes when it is asked for them, so that only a batch of them is held in memory."""
    batch: list[tuple[Path | str, bytes]] = []
    held = 0
    for path, data in files:
        batch.append((path, data))
        held += len(data)
        if held >= COPY_BATCH_BYTES:
            yield from write_new_files(batch)
            batch, held = [], 0
    if batch:
        yield from write_new_files(batch)


def _write_new_files(files: Sequence[tuple[Path | str, bytes]], sync_each: bool) -> list[bool]:
    if not sync_each and _O_TMPFILE and (written := _write_unnamed(files)) is not None:
        return written
    temporaries: list[str] = []
    try:
        for path, data in files:
            temporary = os.path.join(os.path.dirname(os.fspath(path)), f"{temporary_name(path)}{os.getpid()}.tmp")
            with naming(path):
                # os.open and os.write, not a buffered stream: a third less time a file
                handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
                                 | getattr(os, "O_BINARY", 0), 0o666)
                temporaries.append(temporary)
                try:
                    _write_all(handle, data)
                    if sync_each:
                        os.fsync(handle)
                finally:
                    os.close(handle)
        if not sync_each:
            _sync_file_systems(temporaries)
        return [_link_new(temporary, path, data) for temporary, (path, data) in zip(temporaries, files)]
    finally:
        for temporary in temporaries:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)


# Where a file without a name cannot be made: not supported by the folder's file system, a kernel before 3.11, or
# no open file left to the process or the system (other threads hold them); a temporary name takes one at a time.
_NO_UNNAMED_FILES = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.EMFILE, errno.ENFILE)
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)  # Linux's


def _open_files_limit() -> int:
    """The most files this process may hold open (its soft RLIMIT_NOFILE); a million where there is none."""
    import resource  # Unix only, as O_TMPFILE is

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


class _UnnamedFiles:
    """The files without a name held open across the process's threads, at most half its limit of open files: a
    batch that would pass it is written under temporary names (a split writes a batch of 256 a thread, one thread a
    core, and 1024 files is a common limit), so the files the threads read always have handles left. It reserves
    none once ``linkable`` is False: there is no /proc/self/fd, or its links did not lead to the files."""

    def __init__(self) -> None:
        self.lock, self.held, self.linkable = threading.Lock(), 0, True

    def reserve(self, count: int) -> bool:
        with self.lock:
            if not self.linkable or self.held + count > _open_files_limit() // 2:
                return False
            self.held += count
            return True

    def release(self, count: int) -> None:
        with self.lock:
            self.held -= count


_unnamed_files = _UnnamedFiles()


def _write_unnamed(files: Sequence[tuple[Path | str, bytes]]) -> list[bool] | None:
    """``write_new_files``' batch as files without a name (O_TMPFILE), each linked to its path once they are all on
    the disk: no temporary name is made and removed a file (80,000 small files in a sixth less time, on a disk or in
    memory: benchmarks/bench_write.py), and a killed run leaves nothing. None, having written nothing, where they
    cannot be made (``_NO_UNNAMED_FILES``), would hold more than ``_unnamed_files`` allows, or there is no /proc to
    link them through, or its links lead nowhere: the caller writes them under temporary names."""
    if not _unnamed_files.reserve(len(files) + 1):  # and the handle of /proc/self/fd
        return None
    handles: list[int] = []
    try:
        try:
            links = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:  # no /proc: none of the run's batches can link one
            _unnamed_files.linkable = False
            return None
        handles.append(links)
        for path, data in files:
            folder = os.path.dirname(os.fspath(path)) or "."
            with naming(path, unnamed=folder):
                try:
                    handles.append(os.open(folder, _O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666))
                except OSError as error:
                    if error.errno in _NO_UNNAMED_FILES:
                        return None
                    raise
                _write_all(handles[-1], data)
        _sync_file_systems([os.fspath(path) for path, _ in files])
        written: list[bool] = []
        for handle, (path, data) in zip(handles[1:], files):
            try:  # through /proc/self/fd/N, followed: linkat(AT_EMPTY_PATH) would need privileges
                written.append(_link_new(str(handle), path, data, src_dir_fd=links))
            except FileNotFoundError:
                if written:  # the links work: the file's folder went away
                    raise
                _unnamed_files.linkable = False  # a /proc whose links lead nowhere (a sandbox's own)
                return None
        return written
    finally:
        for handle in handles:
            os.close(handle)
        _unnamed_files.release(len(files) + 1)


def _link_new(temporary: str, path: Path | str, data: bytes, src_dir_fd: int | None = None) -> bool:
    """Gives the synced ``temporary`` (relative to ``src_dir_fd``, followed where it is a link) the name ``path``;
    False when ``path`` is taken."""
    with naming(path, unnamed=temporary):
        try:
            os.link(temporary, path, src_dir_fd=src_dir_fd, follow_symlinks=True)
        except FileExistsError:
            return False
        except OSError as error:
            if error.errno not in CANNOT_LINK:
                raise
            try:
                with open(path, "xb") as stream:  # no hard links here (FAT, some network shares)
                    stream.write(data)
                    stream.flush()
                    os.fsync(stream.fileno())
            except FileExistsError:
                return False
    return True


# The part a temporary file's name has between ``.<name>.`` and ``.tmp``: 8 random characters (token_hex; mkstemp's
# in earlier versions), or write_new's process id.
_TEMPORARY_PART = re.compile(r"[a-z0-9_]{8}|[0-9]+")


def temporary_of(name: str) -> str | None:
    """The ``temporary_name`` (``.<name>.``) whose write a file named ``name`` is the hidden temporary of
    (``.<name>.<random or pid>.tmp``), or None for any other file."""
    if not (name.startswith(".") and name.endswith(".tmp")):
        return None
    stem = name[:-len(".tmp")]
    cut = stem.rfind(".") + 1
    return stem[:cut] if cut > 1 and _TEMPORARY_PART.fullmatch(stem[cut:]) else None


def remove_temporaries(folder: Path | str, names: Iterable[str]) -> None:
    """Removes the hidden temporary files (``.<name>.<random or pid>.tmp``) that a killed write of one of
    ``names`` left in ``folder``; other files are never touched."""
    wanted = {temporary_name(name) for name in names}
    with os.scandir(folder) as listing:
        for item in listing:
            if temporary_of(item.name) in wanted and item.is_file(follow_symlinks=False):
                os.unlink(item.path)


def csv_text(header: Sequence[object], rows: Iterable[Sequence[object]]) -> str:
    """``header`` and ``rows`` as CSV text with "\n" line ends. csv quotes a cell holding its line terminator, not
    one holding a bare CR (a name such as macOS' "Icon\r"), which a reader then splits: such a file quotes all."""
    table = [list(header), *(list(row) for row in rows)]
    carriage_return = any(isinstance(cell, str) and "\r" in cell for row in table for cell in row)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL if carriage_return else csv.QUOTE_MINIMAL
               ).writerows(table)
    return buffer.getvalue()


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> bool:
    """Writes a CSV (``csv_text``) atomically; returns False (and writes nothing) when ``path`` already holds exactly
    that."""
    # surrogateescape: a file name that is not UTF-8 is written (and read back) as the bytes it has on disk
    return write_changed(path, csv_text(header, rows).encode("utf-8", "surrogateescape"))


def write_changed(path: Path, data: bytes) -> bool:
    """Writes ``data`` to ``path`` atomically; returns False (and writes nothing) when ``path`` already holds exactly
    that, so a re-run leaves an identical file untouched, its time stamp included."""
    if path.is_file() and path.read_bytes() == data:
        return False
    atomic_write_bytes(path, data)
    return True


def spreadsheet_safe(value: object) -> object:
    """``value``, or a text starting with ``=``, ``+``, ``-``, ``@``, tab or CR behind a ``'``: the cell of a CSV
    meant for people, which a spreadsheet would otherwise run as a formula (a file named ``=HYPERLINK(...)``)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def open_csv(path: Path) -> io.TextIOWrapper:
    """``path``, a CSV list ``write_csv`` wrote, open to read: a file name that is not UTF-8 as the bytes it has on
    disk, without the byte order mark that Excel's "CSV UTF-8" and older Notepad put before the first column's name
    (CRLF line ends read as "\n")."""
    return open(path, newline="", encoding="utf-8-sig", errors="surrogateescape")


def read_list(path: Path, header: Sequence[str], key: Sequence[str] = ()) -> list[list[str]]:
    """The rows of the CSV list at ``path`` under ``header``'s columns (empty where a row has none: an older
    list's), none without the file. A UserError where it is not a list this project wrote: it lacks a ``key``
    column, or (without a key) all of ``header``'s, as where a spreadsheet saved it with other separators."""
    if not path.is_file():
        return []
    with open_csv(path) as stream:
        reader = csv.DictReader(stream)
        names = reader.fieldnames or []
        missing = [name for name in key or header if name not in names]
        if missing and (key or len(missing) == len(header)):
            raise UserError(f"{path} is not a list this project wrote: it has no column {missing[0]!r} (a spreadsheet "
                            "may have saved it with other separators). Move it away, or save it again as "
                            "comma-separated, and run the same command again.")
        return [[row.get(name) or "" for name in header] for row in reader]


def append_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]], key: Sequence[str] = ()) -> None:
    """Adds ``rows`` to the CSV list at ``path`` (``read_list``'s UserError where it is not one), keeping every row
    already there (under the columns they share) but one that a new row repeats in the ``key`` columns: the new
    row replaces it."""
    rows = [list(row) for row in rows]
    columns = [header.index(name) for name in key]
    repeated = {tuple(row[column] for column in columns) for row in rows} if key else set()
    kept = [row for row in read_list(path, header, key) if tuple(row[column] for column in columns) not in repeated]
    write_csv(path, header, [*kept, *rows])


def free_name(target: Path, digest: str, is_free: Callable[[Path], bool] | None = None) -> Path:
    """A stable name from content ``digest`` (``cat_1a2b3c4d.jpg``, then ``cat_1a2b3c4d_2.jpg``...) for a
    taken ``target``; ``is_free`` (default: missing or holding this content) accepts a candidate."""
    is_free = is_free or (lambda candidate: not candidate.exists() or sha256_file(candidate) == digest)
    stem, suffix = target.stem, target.suffix
    candidates = itertools.chain((f"{stem}_{digest[:length]}{suffix}" for length in (8, 16, 64)),
                                 (f"{stem}_{digest[:8]}_{number}{suffix}" for number in itertools.count(2)))
    return next(candidate for candidate in (target.with_name(fit_name(name)) for name in candidates)
                if is_free(candidate))


def place_file(source: Path, target: Path, *, move: bool = False, source_digest: str | None = None
               ) -> tuple[Path, Outcome]:
    """Copies or moves ``source`` to ``target``, or to ``free_name``'s name when other bytes are there;
    returns where it went. ``source_digest``, when known, is checked against what is copied. A file found holding
    these bytes already is left there, with ``source``'s time (``keep_times``)."""
    source, target = Path(source), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    outcome = Outcome.MOVED if move else Outcome.COPIED
    if os.path.lexists(target):
        digest = source_digest or sha256_file(source)
        if not (target.is_file() and sha256_file(target) == digest):
            target, outcome = free_name(target, digest), Outcome.RENAMED
        if target.exists():  # this content is already there
            keep_times(source, target)
            if move and source.resolve() != target.resolve():
                source.unlink()  # also when both are hard links of one file: what a cut-off move leaves
            return target, Outcome.IDENTICAL
    linked = False
    if move and not source.is_symlink():  # a symlink's bytes are placed: the link could lead nowhere from target
        try:
            os.link(source, target)  # raises FileExistsError rather than replacing
            linked = True
        except OSError as error:
            if error.errno not in CANNOT_LINK:
                raise
    if not linked:  # a copy, or a move across file systems: copied completely before the source goes
        write_new(target, read_verified(source, source_digest) if source_digest else source.read_bytes())
        shutil.copystat(source, target)
    if move:
        source.unlink()
    return target, outcome


def keep_times(source: Path | str, target: Path | str) -> None:
    """Gives ``target``, a copy of ``source`` found holding its bytes, ``source``'s modification time and permission
    bits (``shutil.copystat``) where it has others: a copy killed after its bytes and before its time, placed again,
    ends as an uninterrupted one. A symlink at ``target`` is no copy made here, and what it leads to is left alone;
    nor is a file of another owner (a colleague's in a shared folder), whose time only its owner may set."""
    if os.path.islink(target):
        return
    source_stat, target_stat = os.stat(source), os.stat(target)
    if ((source_stat.st_mtime_ns, stat.S_IMODE(source_stat.st_mode))
            != (target_stat.st_mtime_ns, stat.S_IMODE(target_stat.st_mode))):
        with contextlib.suppress(PermissionError):
            shutil.copystat(source, target)


def place_files(jobs: Iterable[tuple[Path, Path, str | None]], *, move: bool = False) -> list[tuple[Path, Outcome]]:
    """``place_file`` for each ``(source, target, source_digest)`` of ``jobs``; the results in order. The copies to
    free targets are written together (``write_new_in_batches``: one wait on the disk a batch, not an fsync a file,
    which took most of a merge of 100,000 files). A move links, as ``place_file`` does."""
    results: list[tuple[Path, Outcome]] = []
    copies: list[tuple[int, Path, Path, str | None]] = []  # (index in results, source, target, digest)
    for source, target, digest in jobs:
        raise_if_ctrl_c()  # a Ctrl-C that Python dropped: stop before the next file
        source, target = Path(source), Path(target)
        if move or os.path.lexists(target):
            results.append(place_file(source, target, move=move, source_digest=digest))
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        results.append((target, Outcome.COPIED))
        copies.append((len(results) - 1, source, target, digest))

    def read() -> Iterator[tuple[Path, bytes]]:
        for _, source, target, digest in copies:
            raise_if_ctrl_c()  # also between the reads of a batch, not only after it
            yield target, read_verified(source, digest) if digest else source.read_bytes()

    for (index, source, target, digest), new in zip(copies, write_new_in_batches(read())):
        if new:
            shutil.copystat(source, target)
        else:  # taken since it was found free: placed beside it, or found holding this content
            results[index] = place_file(source, target, source_digest=digest)
    return results


@contextlib.contextmanager
def working_on(paths: Iterable[Path | str], script: str, *, reading: Iterable[Path | str] = ()) -> Iterator[None]:
    """Claims each of ``paths`` (a folder or file a script writes or moves from, by its resolved path) for this
    run of ``script`` while the block runs, and each of ``reading`` (a folder it reads, with all that is inside it:
    a split's SOURCE, a training's splits) beside other readers; UserError naming the run that holds one already,
    or one around or inside it, or a run that reads one or a folder around it, or a run that writes inside a folder
    it reads. Two runs on one folder at once would remove each other's temporary files and write back each other's
    stale records; one deleting ``data/train`` while another moves copies into it would lose them; a split of a
    folder being extracted, or deleted file by file, would split part of it. A run that reads a folder and writes
    inside it claims the whole folder.

    A claim is a lock the operating system holds on a file in the user's folder of them in the temporary folder
    (named by the path's hash), so the folder itself gets no file, and the claim ends with the process, killed
    too: an interrupted run never leaves one behind. The last claim on a path removes its file as it ends (not on
    Windows, which cannot remove an open file). The folders around a claimed path are locked shared, as are those
    read, so runs on two folders side by side go ahead; two more files per folder say that a run writes inside it
    and that a run reads it (``_claim_inside``). Windows' locks have no shared mode: claims there are per path, and
    ``reading`` is not claimed. A run of another user, or on another machine through a network share, is not seen.
    """
    _claim_file(Path()).parent.mkdir(mode=0o700, exist_ok=True)
    claimed = {Path(os.path.abspath(path)).resolve() for path in paths}
    _refuse_twins(claimed | {Path(os.path.abspath(path)).resolve() for path in reading})
    read = set() if os.name == "nt" else {Path(os.path.abspath(path)).resolve() for path in reading} - claimed
    claimed |= {folder for folder in read if any(folder in path.parents for path in claimed)}  # written inside
    read -= claimed
    shared = set() if os.name == "nt" else (read | {parent for path in claimed | read for parent in path.parents}
                                            ) - claimed
    with contextlib.ExitStack() as claims:
        for path in sorted(claimed | shared):
            lock = _claim_file(path)
            handle, taken = claims.enter_context(_lock_file(lock, shared=path in shared))
            if path in shared:
                if not taken:
                    holder = _holder(handle)
                    inside = min((claimed_path for claimed_path in claimed | read if path in claimed_path.parents),
                                 default=None)
                    raise UserError((f"{path} is being worked on by {holder}" if inside is None else
                                     f"{inside} is inside {path}, which is being worked on by {holder}")
                                    + "; wait for it to finish (or stop it), then run the command again.")
                continue
            if not taken:
                holder = (f"another run reads {path} or works on a folder inside it" if _lock(handle, shared=True)
                          else f"{path} is being worked on by {_holder(handle)}")
                raise UserError(f"{holder}; wait for it to finish (or stop it), then run the command again.")
            handle.seek(0)
            handle.truncate()
            handle.write(f"{script} (process {os.getpid()})")
            handle.flush()
        if os.name != "nt":
            _claim_inside(claims, claimed, read)
        yield


def _refuse_twins(paths: set[Path]) -> None:
    """A UserError where two of a run's ``paths`` are one folder, or one inside the other, on macOS and Windows but
    not as spelled (``name_key``: data and Data). There DataMerger.py Data --into data --move merged a folder into
    itself, deleting each file as already there; here their claims are one (``_claim_file``)."""
    def key(path: Path) -> str:
        return name_key(os.fspath(path))

    for path, other in itertools.permutations(sorted(paths), 2):
        if path not in (other, *other.parents) and (twin := next(
                (folder for folder in (other, *other.parents) if key(folder) == key(path)), None)):
            raise UserError(f"{path} and {twin} differ only in letter case or accent encoding: one folder on macOS "
                            f"and Windows, so this run would work on it {'twice' if twin == other else 'and inside it'}"
                            " there. Spell them alike where you mean one folder, or rename one, then run the command "
                            "again.")


_WRITING_INSIDE = "-inside"  # the suffix of a folder's lock file that each run writing inside it holds shared
_READ = "-read"  # and of the one each run reading it holds shared


def _claim_inside(claims: contextlib.ExitStack, claimed: set[Path], read: set[Path]) -> None:
    """Keeps runs that write inside a folder and runs that read it apart (``working_on``): the locks of a path and
    the folders around it see a run on that path, not one on a file or folder deeper inside a folder read. So a run
    holds the ``_WRITING_INSIDE`` lock of each folder around what it claims, and the ``_READ`` lock of each folder
    it reads, both shared; then it checks that no other run holds the other kind (taking it alone for a moment,
    as the last claim does to remove its file). Held first, then checked: of two runs that start at once, the
    later checker sees the other's lock, or both refuse."""
    around = {folder for path in claimed for folder in path.parents}
    for kind, folders in ((_WRITING_INSIDE, around), (_READ, read)):
        for folder in sorted(folders):
            _, taken = claims.enter_context(_lock_file(_claim_file(folder, kind), shared=True))
            if not taken:  # a run checking it, for longer than _CLAIM_RETRY_S
                raise UserError(f"another run is taking its claim on {folder}; run the command again in a moment.")
    for folder in sorted(around, key=lambda folder: len(folder.parts), reverse=True):  # the nearest first
        with _lock_file(_claim_file(folder, _READ), shared=False) as (_, alone):
            if not alone:
                inside = min(path for path in claimed if folder in path.parents)
                raise UserError(f"{inside} is inside {folder}, which another run reads; wait for it to finish (or "
                                "stop it), then run the command again.")
    for folder in sorted(read):
        with _lock_file(_claim_file(folder, _WRITING_INSIDE), shared=False) as (_, alone):
            if not alone:
                raise UserError(f"another run works on a folder or file inside {folder}; wait for it to finish (or "
                                "stop it), then run the command again.")


def claimed_by(path: Path | str) -> str | None:
    """The script and process that claim ``path`` itself (``working_on``), or None when no run does. Reads the
    claim without taking it: a run that starts meanwhile is refused by its own claim, as ever."""
    try:  # opened for writing as a claim opens it (its lock taken alike), but never made here: "r+", not "a+"
        with open(_claim_file(Path(os.path.abspath(path)).resolve()), "r+", encoding="utf-8") as handle:
            return None if _lock(handle, shared=True) else _holder(handle)
    except FileNotFoundError:  # a claim keeps its file for as long as it holds it
        return None


def _claim_file(path: Path, kind: str = "") -> Path:
    """The lock file that claims the resolved ``path`` (``kind``: one of its other lock files, ``_claim_inside``):
    named by the hash of its ``name_key``, since models/Merged and models/merged are one folder on macOS and Windows,
    in the user's folder of them (one folder per user where the temporary folder is shared: POSIX's /tmp; Windows
    gives each user their own)."""
    folder = Path(tempfile.gettempdir()) / f"realvsai-locks{f'-{os.getuid()}' if hasattr(os, 'getuid') else ''}"
    return folder / f"{hashlib.sha256(os.fsencode(name_key(os.fspath(path)))).hexdigest()[:32]}{kind}.lock"


_CLAIM_RETRY_S = 0.2


@contextlib.contextmanager
def _lock_file(lock: Path, *, shared: bool) -> Iterator[tuple[Any, bool]]:
    """Opens ``lock`` and takes its lock without waiting: the open file, and whether the lock was taken. A lock
    taken on a file that the run before removed meanwhile (as it ended) is retaken on the file now at ``lock``.
    As the block ends, the file is removed when no other claim holds it (POSIX), so the folder of lock files does
    not grow with every path ever claimed."""
    # A run that ends holds its lock exclusively for a moment as it removes the file: a claim refused then is
    # tried again for up to _CLAIM_RETRY_S (a run that holds the path stays for longer).
    deadline = time.monotonic() + _CLAIM_RETRY_S
    while True:
        with contextlib.ExitStack() as opened:  # closed unless kept
            handle = opened.enter_context(open(lock, "a+", encoding="utf-8"))
            handle.seek(0)  # Windows locks bytes from the position on
            taken = _lock(handle, shared=shared)
            if (taken and (os.name == "nt" or _is_at(handle, lock))) or (not taken and time.monotonic() > deadline):
                opened.pop_all()
                break
        if not taken:
            time.sleep(0.01)
    try:
        yield handle, taken
    finally:
        # Exclusive only where no other run holds it; a run that opened the file before it goes takes the new one.
        if taken and os.name != "nt" and _lock(handle, shared=False):
            with contextlib.suppress(OSError):  # a file left behind costs nothing; the run's own error matters
                lock.unlink()
        handle.close()


def _is_at(handle: Any, path: Path) -> bool:
    """Whether the open file ``handle`` is still the file at ``path``."""
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def _lock(handle: Any, *, shared: bool) -> bool:
    """Takes the operating system's lock on ``handle``'s file without waiting (``shared``: beside other shared
    ones; POSIX only); False when another process holds it."""
    try:
        if os.name == "nt":
            import msvcrt

            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _holder(handle: Any) -> str:
    """The script and process a claim's lock file names."""
    try:
        return handle.read().strip() or "another run"
    except OSError:  # Windows: the holder's bytes are locked against reading too
        return "another run"


def human_bytes(num_bytes: float) -> str:
    """``1536`` -> ``'1.5 KB'``."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(num_bytes) < 1024 or unit == "TB":
            return f"{num_bytes:.0f} B" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
