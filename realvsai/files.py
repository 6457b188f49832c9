"""Safe file handling: hashing, image checks, atomic writes, collision-safe copy and move.

Nothing here ever overwrites a file: identical content is recognised and skipped, and a different
file under a taken name gets a stable new name derived from its content.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import hashlib
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from PIL import Image

# Pillow's own default (about 89 megapixels) guards against decompression bombs; we keep a
# rounder, slightly larger limit so big camera photos (e.g. 100 MP medium format) still pass.
MAX_IMAGE_PIXELS = 120_000_000
_HASH_CHUNK = 1 << 20
_PILLOW_LIMIT_LOCK = threading.Lock()


class Outcome(enum.Enum):
    """What ``place_file`` did with one file."""

    COPIED = "copied"
    MOVED = "moved"
    LINKED = "linked"
    IDENTICAL = "identical"  # the same content was already at the target: nothing written
    RENAMED = "renamed"  # the name was taken by other content: written under a new name


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


class TooManyPixelsError(ValueError):
    """An image has more pixels than the project's limit; the message says so, and how to raise it."""


def open_image(source: Path | BinaryIO, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Opens an image with Pillow, which reads only its header; ``max_pixels`` decides what is too large.

    Pillow has a decompression-bomb limit of its own (a warning above about 89 megapixels, an error
    above twice that); ours replaces it, so an image is refused with our limit named, and one within
    a limit the user raised (``--max-pixels``) is not refused by Pillow's.

    Raises:
        TooManyPixelsError: if the image has more than ``max_pixels`` pixels (nothing is decoded).
        OSError, SyntaxError, ValueError: Pillow's errors for what it cannot open.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(source)
        except Image.DecompressionBombError:
            # Open the header again without Pillow's check, to measure the image against our limit.
            # The setting is global, so one thread at a time; the others' opens check our limit too.
            if hasattr(source, "seek"):
                source.seek(0)
            with _PILLOW_LIMIT_LOCK:
                pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                try:
                    image = Image.open(source)
                finally:
                    Image.MAX_IMAGE_PIXELS = pillow_limit
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise TooManyPixelsError(f"{width}x{height} pixels is more than the limit of {max_pixels:,} pixels (a guard "
                                 "against decompression bombs; raise it with --max-pixels)")
    return image


def image_problem(path: Path | BinaryIO, max_pixels: int = MAX_IMAGE_PIXELS) -> str | None:
    """Why ``path`` is not a usable image, or None when it decodes completely.

    The pixel count is checked from the header before any pixel is decoded (``open_image``), so a
    decompression bomb costs nothing. The full decode catches truncated files that the header alone hides.
    """
    try:
        with open_image(path, max_pixels) as image, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit was checked above
            image.load()
    except FileNotFoundError:
        return "file not found"
    except TooManyPixelsError as error:
        return str(error)
    except Image.DecompressionBombError as error:  # an animation frame larger than the image itself
        return f"too many pixels ({error})"
    except (OSError, SyntaxError, ValueError) as error:
        # Pillow raises UnidentifiedImageError (an OSError) for non-images, OSError for truncated
        # data and SyntaxError/ValueError for some malformed headers.
        return f"not a readable image ({type(error).__name__}: {error})"
    return None


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "wb", durable: bool = True) -> Iterator[object]:
    """Opens a temporary file beside ``path`` and renames it onto ``path`` only on success.

    An interrupted write leaves at most a ``.tmp`` file, never a half-written file under the final
    name. The rename replaces ``path``: callers decide beforehand whether that is allowed.
    ``durable`` also fsyncs before the rename (survives a power cut; costs ~10 ms a file on some disks).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
    folder, name = os.path.split(os.fspath(path))
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
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


def free_name(target: Path, digest: str) -> Path:
    """A stable alternative name for content ``digest`` whose wanted name ``target`` is taken.

    The name derives from the content (``cat_1a2b3c4d.jpg``), so re-running a merge gives the same
    name and recognises the file as already there.
    """
    for length in (8, 16, 64):
        candidate = target.with_name(f"{target.stem}_{digest[:length]}{target.suffix}")
        if not candidate.exists() or sha256_file(candidate) == digest:
            return candidate
    raise FileExistsError(f"no free name for {target}")


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
