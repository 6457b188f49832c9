"""Safe file handling: listing, hashing, atomic writes, collision-safe copy and move, CSV lists.

Nothing here overwrites a file by accident: ``atomic_write`` replaces a whole file only once its
new content is complete, ``write_new`` never replaces, and ``place_file`` recognises identical
content and gives a different file under a taken name a stable new name derived from its content.
"""

from __future__ import annotations

import contextlib
import csv
import enum
import errno
import functools
import hashlib
import io
import itertools
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, TypeVar

from realvsai.cli import progress
from realvsai.config import IMAGE_EXTENSIONS
from realvsai.errors import UserError

_HASH_CHUNK = 1 << 20
_CHUNK = 256  # files per task of map_in_threads
T = TypeVar("T")
_MAX_NAME_BYTES = 200  # leaves room for a temporary name's prefix and suffix within the usual 255 bytes


COPY, MOVE, LINK = "copy", "move", "link"  # how place_new_files places a file


class PlannedFile(Protocol):
    """A file on its way to a planned target (splitting's items)."""

    source: str  # where the file is (or was), for messages
    read_from: str  # where its bytes are now
    digest: str
    data: bytes | None  # its bytes, when the caller still holds them


class Outcome(enum.Enum):
    """What ``place_file`` did with one file."""

    COPIED = "copied"
    MOVED = "moved"
    LINKED = "linked"
    IDENTICAL = "identical"  # the same content was already at the target: nothing written
    RENAMED = "renamed"  # the name was taken by other content: written under a new name


# ----------------------------------------------------------------------------------------------
# Listing


def is_image_file(entry: Path | os.DirEntry) -> bool:
    """True for a visible regular file with an image extension (any letter case).

    Takes an ``os.scandir`` entry as well as a path: an entry knows its type without a stat.
    """
    name = entry.name
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and entry.is_file()


def list_images(folder: Path, recursive: bool = False, skipped: list[tuple[str, str]] | None = None) -> list[Path]:
    """The image files in ``folder`` (and below it when ``recursive``), sorted by path.

    Hidden files and folders (``.DS_Store``, ``._x.jpg``, ``.git``) and other files are left out;
    when ``skipped`` is given, each one left out is added to it as (path, reason), so a ``.cat.jpg``
    is reported as visibly as a ``cat.txt``. ``os.scandir`` knows each entry's type from the
    listing itself: one system call per folder instead of a ``stat`` per file (0.03 s against
    0.8 s for a folder of 45,000 images). Sorting makes every later step independent of the order
    the file system lists entries in.
    """
    found: list[str] = []
    _scan_folder(os.fspath(folder), recursive, found, skipped)
    return [Path(path) for path in sorted(found)]


def _scan_folder(folder: str, recursive: bool, found: list[str], skipped: list[tuple[str, str]] | None) -> None:
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                if skipped is not None:
                    skipped.append((entry.path, "hidden folder (names starting with '.' are left out; its files are "
                                    "not read)" if entry.is_dir() else "hidden file (names starting with '.' are "
                                    "left out)"))
            elif entry.is_dir():
                if recursive:
                    _scan_folder(entry.path, recursive, found, skipped)
            elif is_image_file(entry):
                found.append(entry.path)
            elif skipped is not None and entry.is_file():
                skipped.append((entry.path, f"not an image file (image names end in "
                                f"{', '.join(sorted(IMAGE_EXTENSIONS))})"))


def map_in_threads(function: Callable[[Sequence[T]], list], items: Sequence[T], workers: int, desc: str) -> list:
    """``function(chunk)`` for chunks of ``items`` in ``workers`` threads; the results in order, flattened.

    The project's one concurrency rule for file work: threads, never processes. Reading, writing,
    hashing (hashlib) and decoding (Pillow) release the GIL, and on cifake-mini (10,000 files, 2 cores)
    a process pool checked files no faster than one thread (benchmarks/bench_split.py). Chunks keep
    the per-task overhead small. The first error (or Ctrl-C) cancels the chunks not yet started.
    """
    chunks = [items[start:start + _CHUNK] for start in range(0, len(items), _CHUNK)]
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


# ----------------------------------------------------------------------------------------------
# Hashing and writing


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_verified(path: str | Path, digest: str) -> bytes:
    """The bytes of ``path``, checked against the ``digest`` read before.

    Raises:
        UserError: if the file changed since it was read.
    """
    with open(path, "rb") as stream:
        data = stream.read()
    if hashlib.sha256(data).hexdigest() != digest:
        raise UserError(f"{path} changed while it was being copied. Run the same command again.")
    return data


def temporary_name(path: Path | str) -> str:
    """The hidden name a write to ``path`` starts under: ``.<name>.``, shortened when ``name`` is very long."""
    name = os.path.basename(os.fspath(path))
    if len(os.fsencode(name)) > _MAX_NAME_BYTES:
        name = f"{zlib.crc32(os.fsencode(name)):08x}"
    return f".{name}."


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "wb", durable: bool = True) -> Iterator[object]:
    """Opens a temporary file beside ``path`` and renames it onto ``path`` only on success.

    An interrupted write leaves at most a hidden ``.<name>.<random>.tmp`` file, never a half-written
    file under the final name. The rename replaces ``path``: callers decide beforehand whether that
    is allowed. ``durable`` also fsyncs before the rename (survives a power cut; costs ~10 ms a file
    on some disks, so bulk writers such as the unzipper pass False and check their work on a re-run).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=temporary_name(path), suffix=".tmp", dir=path.parent)
    try:
        os.chmod(temporary, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual mode
        with os.fdopen(handle, mode) as stream:
            yield stream
            stream.flush()
            if durable:
                os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as stream:
        stream.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_new(path: Path | str, data: bytes) -> None:
    """Creates ``path`` holding ``data``, never replacing anything: the writer for bulk image copies.

    The bytes go to a hidden temporary file beside ``path``, which is then hard-linked to ``path``:
    the link fails if ``path`` exists, so no file is ever replaced, and an interrupted write leaves
    at most the temporary file, never a cut file under the real name. No fsync: for a hundred
    thousand small images it would cost far more than the copies, and a re-run checks its work.

    Raises:
        FileExistsError: if ``path`` exists (it is left as it is).
    """
    folder = os.path.dirname(os.fspath(path))
    temporary = os.path.join(folder, f"{temporary_name(path)}{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as stream:
            stream.write(data)
        try:
            os.link(temporary, path)
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links (FAT, some network shares): create exclusively
            with open(path, "xb") as stream:
                stream.write(data)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def atomic_copy(source: Path, target: Path) -> None:
    """Copies ``source`` to ``target`` completely under a temporary name, then renames it into place.

    No fsync: dataset copies come in the hundred thousands, and a re-run re-checks them by content.
    """
    with open(source, "rb") as reader, atomic_write(target, "wb", durable=False) as writer:
        shutil.copyfileobj(reader, writer, _HASH_CHUNK)
    shutil.copystat(source, target)


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> bool:
    """Writes a CSV atomically; returns False (and writes nothing) when ``path`` already holds exactly that."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    text = buffer.getvalue()
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False  # a re-run leaves an identical file untouched, its time stamp included
    atomic_write_text(path, text)
    return True


def append_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Adds ``rows`` to the CSV at ``path`` (created when missing), keeping every row already there.

    The file is rewritten atomically, so an interruption leaves the old list or the new one. Rows
    of an older file with other columns keep their values under the columns ``header`` shares.
    """
    old_rows = []
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as stream:
            old_rows = [[row.get(name) or "" for name in header] for row in csv.DictReader(stream)]
    write_csv(path, header, [*old_rows, *rows])


# ----------------------------------------------------------------------------------------------
# Placing files without overwriting


def free_name(target: Path, digest: str, is_free: Callable[[Path], bool] | None = None) -> Path:
    """A stable alternative name for content ``digest`` whose wanted name ``target`` is taken.

    The name derives from the content (``cat_1a2b3c4d.jpg``), so re-running a merge or a split gives
    the same name and recognises the file as already there. ``is_free`` decides whether a candidate
    may be used; by default, one that does not exist or already holds this content. Copies of one
    content that all want one name get numbered (``cat_1a2b3c4d_2.jpg``).
    """
    if is_free is None:
        def is_free(candidate: Path) -> bool:
            return not candidate.exists() or sha256_file(candidate) == digest
    stem, suffix = target.stem, target.suffix
    candidates = itertools.chain((f"{stem}_{digest[:length]}{suffix}" for length in (8, 16, 64)),
                                 (f"{stem}_{digest[:8]}_{number}{suffix}" for number in itertools.count(2)))
    return next(candidate for candidate in map(target.with_name, candidates) if is_free(candidate))


def place_file(
    source: Path,
    target: Path,
    *,
    move: bool = False,
    link: bool = False,
    source_digest: str | None = None,
) -> tuple[Path, Outcome]:
    """Copies, moves or hard-links ``source`` to ``target`` without ever overwriting anything.

    If ``target`` holds the same bytes, nothing is written (and with ``move`` the source is removed,
    since its content is safe at the target). If it holds other bytes, the file goes to a stable new
    name (see ``free_name``). A move across file systems copies completely before it deletes.

    Args:
        source: the file to place.
        target: the wanted path; its folder is created.
        move: remove ``source`` once its content is safely at the target.
        link: make a hard link instead of a copy (raises ``OSError`` across file systems).
        source_digest: ``sha256_file(source)`` when the caller already has it.

    Returns:
        The path the content now has, and what was done.
    """
    source, target = Path(source), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    outcome = Outcome.MOVED if move else Outcome.LINKED if link else Outcome.COPIED
    if target.exists() or target.is_symlink():
        digest = source_digest or sha256_file(source)
        if target.is_file() and sha256_file(target) == digest:
            if move and not _same_path(source, target):
                source.unlink()  # also when both are hard links of one file: what a cut-off move leaves
            return target, Outcome.IDENTICAL
        target = free_name(target, digest)
        if target.exists():  # free_name found this content already under the derived name
            if move and not _same_path(source, target):
                source.unlink()
            return target, Outcome.IDENTICAL
        outcome = Outcome.RENAMED
    if link:
        _link_no_clobber(source, target)
    elif move:
        _move_no_clobber(source, target)
    else:
        atomic_copy(source, target)
        if target.exists() and not _same_size(source, target):
            raise OSError(f"copy of {source} to {target} is incomplete")
    return target, outcome


def _same_path(first: Path, second: Path) -> bool:
    """True when both name the same directory entry (not merely the same inode, as hard links do)."""
    return Path(first).resolve() == Path(second).resolve()


def _same_size(first: Path, second: Path) -> bool:
    return first.stat().st_size == second.stat().st_size


def _link_no_clobber(source: Path, target: Path) -> None:
    os.link(source, target)  # raises FileExistsError rather than replacing


def _move_no_clobber(source: Path, target: Path) -> None:
    """Moves by a hard link plus unlink on one file system, by a full copy then unlink across."""
    try:
        os.link(source, target)
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
            raise
        atomic_copy(source, target)
        if not _same_size(source, target):
            raise OSError(f"copy of {source} to {target} is incomplete; the source was kept") from error
    source.unlink()


def place_new_files(jobs: Sequence[tuple[Path, PlannedFile]], mode: str, cross_device: bool, workers: int
                    ) -> tuple[int, int]:
    """Puts each planned file at its target, which must be free or hold the same content; returns
    (written, already in place). A copy writes ``data`` when the file has it (no second read), else
    the file's bytes checked against its ``digest``; ``cross_device`` turns a move into copy + delete.

    Raises:
        UserError: when a target holds other content (nothing is overwritten), or a hard link fails.
    """
    for folder in sorted({target.parent for target, _ in jobs}):
        folder.mkdir(parents=True, exist_ok=True)
    place = functools.partial(_place_chunk, mode=mode, cross_device=cross_device)
    written = map_in_threads(place, jobs, workers, {COPY: "copying", MOVE: "moving", LINK: "linking"}[mode])
    return sum(written), len(written) - sum(written)


def _place_chunk(jobs: Sequence[tuple[Path, PlannedFile]], mode: str, cross_device: bool) -> list[bool]:
    """For each job, True when the file was written, False when it was already in place."""
    written = []
    for target, item in jobs:
        target_text = str(target)
        if os.path.lexists(target_text):
            if not _holds(target_text, item):
                raise UserError(f"{target} exists with other content than the planned {item.source}; nothing was "
                                "overwritten. Move that file away (or delete it if it is a broken copy) and run "
                                "the same command again.")
            written.append(False)
            continue
        try:
            if mode == LINK:
                os.link(item.read_from, target_text)
            elif mode == MOVE and not cross_device:
                os.rename(item.read_from, target_text)  # the target was checked free just above
            else:
                write_new(target_text, item.data if item.data is not None else read_verified(item.read_from,
                                                                                             item.digest))
                if mode == MOVE:
                    os.unlink(item.read_from)
        except OSError as error:
            if mode == LINK and error.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise UserError(f"cannot hard-link {item.read_from} to {target} ({error.strerror}). --link needs "
                                "SOURCE and --out on one file system that supports hard links; drop --link to copy.")\
                    from error
            raise
        item.data = None  # free the memory as soon as the file is out
        written.append(True)
    return written


def _holds(target: str, item: PlannedFile) -> bool:
    try:
        if os.path.samefile(target, item.read_from):
            return True
    except OSError:
        pass
    return os.path.isfile(target) and sha256_file(Path(target)) == item.digest


def ensure_inside(path: Path, root: Path) -> Path:
    """``path`` resolved, checked to lie inside ``root`` (against ``..`` and symlink escapes).

    Raises:
        ValueError: if the resolved path is outside ``root``.
    """
    resolved_root = Path(root).resolve()
    resolved = (resolved_root / path).resolve()
    if resolved != resolved_root and resolved_root not in resolved.parents:
        raise ValueError(f"{path} points outside {root}")
    return resolved


def human_bytes(num_bytes: float) -> str:
    """``1536`` -> ``'1.5 KB'``."""
    if abs(num_bytes) < 1024:
        return f"{num_bytes:.0f} B"
    for unit in ("KB", "MB", "GB"):
        num_bytes /= 1024
        if abs(num_bytes) < 1024:
            return f"{num_bytes:.1f} {unit}"
    return f"{num_bytes / 1024:.1f} TB"
