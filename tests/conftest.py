"""Shared fixtures: tiny synthetic image folders and the broken files users really have."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import os
import struct
import subprocess
import sys
import tracemalloc
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from realvsai import files

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
# The model, training, inference and app tests: CI runs them a second time under KERAS_BACKEND=jax
# (`-m backends`), so every script works on both Keras backends. test_backends.py is not among them: it
# runs each backend in a subprocess of its own, so one pass covers both.
BOTH_BACKENDS = frozenset({"test_model.py", "test_augmentation.py", "test_pixels.py",
                           "test_training.py", "test_callbacks.py", "test_inference.py", "test_prediction.py",
                           "test_app.py"})
SHARED_DATASETS = REPO.parent / "shared" / "datasets"
# jax is optional (requirements-jax.txt): the tests that run code under KERAS_BACKEND=jax skip without it, so the
# suite passes after `pip install -r requirements.txt` alone.
needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                               reason="jax is not installed: pip install -r requirements-jax.txt")


def pytest_configure(config):
    """One JAX compilation cache for the whole run, made by the process that starts it: xdist's workers and every
    script's subprocess inherit it through the environment. The same small ResNets compiled again and again (each
    test builds its own model, each subprocess starts afresh), tens of seconds each time on 2 cores: the JAX
    training-recipe test took 91 s, and 21 s with the cache warm. JAX keys the cache on the program itself, its
    version and its flags, so a hit is the program that would have been compiled. A cache the user set up is kept."""
    if hasattr(config, "workerinput") or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="realvsai-tests-jax-cache-")
    os.environ.update(JAX_COMPILATION_CACHE_DIR=folder, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name in BOTH_BACKENDS:
            item.add_marker(pytest.mark.backends)


@pytest.fixture(autouse=True)
def _restore_project_logger():
    """Scripts run in-process configure the "realvsai" logger (no propagation); undo it after each test
    so caplog and later tests see the default setup."""
    logger = logging.getLogger("realvsai")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture(autouse=True)
def _ctrl_c_as_in_a_terminal():
    """Ctrl-C raises KeyboardInterrupt in every test, as in a terminal, also where the suite itself runs with
    SIGINT ignored (started in the background by a non-interactive shell, or under nohup)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def write_image(
    path: Path, seed: int, size: tuple[int, int] = (32, 32), mode: str = "RGB", fmt: str | None = None
) -> Path:
    """Writes a random image whose content depends only on ``seed``."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt or ("JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else None))
    return path


# A 2000x1500 JPEG plays a 200 MP phone photo (16320x12240) in the tests of the pixel limit: over PHOTO_LIMIT at its
# full size (3 MP), 250x188 (47,000 pixels) where libjpeg decodes it at 1/8 of its sides, as a resize model's path does.
PHOTO_LIMIT = 1_000_000


def phone_photo(seed: int = 0, size: tuple[int, int] = (2000, 1500), mode: str = "RGB", **options: Any) -> bytes:
    """A large JPEG of a photo's smooth content, made in milliseconds (a few random colours enlarged): sequential, as
    cameras write them, unless ``options`` say ``progressive=True``."""
    colours = np.random.default_rng(seed).integers(0, 256, (15, 20, 3), np.uint8)
    image = Image.fromarray(colours).resize(size, Image.Resampling.BILINEAR).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


def write_phone_photo(path: Path, seed: int = 0, **options: Any) -> Path:
    """``phone_photo`` written to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(phone_photo(seed, **options))
    return path


def predictor(model, image_size: int, batch_size: int, input_mode: str = "resize",
              class_names: tuple[str, ...] = ("FAKE", "REAL")):
    """The run's one predict path (``run.Predictor``) for ``model``, as evaluation and --predict make it."""
    from realvsai.run import ModelInfo, Predictor

    return Predictor(model, ModelInfo(tuple(class_names), image_size, input_mode), batch_size)


def traced_peak(call: Callable[[], Any]) -> tuple[Any, int]:
    """``call()``'s result and the most memory Python's allocator held during it (NumPy's arrays included), in bytes:
    counted, not timed."""
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` but holds no pixel data: a bomb that costs nothing to make."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")



def jpeg_header_only(width: int, height: int) -> bytes:
    """A JPEG whose frame declares ``width`` x ``height`` but whose data is a 16x16 image's: its header reads as that
    size at no cost, and a decoder refuses it, or makes its pixels from a few blocks (``try_recover_truncated``)."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "gray").save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    frame = data.index(b"\xff\xc0")  # baseline start of frame: marker, length, precision, height, width
    data[frame + 5:frame + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.fixture
def tensorflow_jpeg_limit(monkeypatch) -> int:
    """TensorFlow's JPEG decoder refuses to make 2^29 bytes of pixels or more (178,956,971 pixels and up, as RGB):
    here it refuses more than PHOTO_LIMIT pixels, as it decodes them (at 1/``ratio`` of the sides), so that
    conftest's 2000x1500 stand-in of a 190 MP photo is refused whole and decoded at 1/8, as a real one is. The
    project's own knowledge of that limit (``images.TF_JPEG_MAX_PIXELS``) is lowered to match. Returns the limit."""
    import tensorflow as tf

    from realvsai import images

    decode_jpeg = tf.io.decode_jpeg

    def limited(contents, channels=0, ratio=1, **options):
        height, width = tf.unstack(tf.cast(tf.io.extract_jpeg_shape(contents)[:2], tf.int64))
        pixels = ((height + ratio - 1) // ratio) * ((width + ratio - 1) // ratio)  # libjpeg rounds up
        check = tf.debugging.assert_less_equal(pixels, tf.constant(PHOTO_LIMIT, tf.int64), message="Image too large")
        with tf.control_dependencies([check]):
            return decode_jpeg(contents, channels=channels, ratio=ratio, **options)

    monkeypatch.setattr(tf.io, "decode_jpeg", limited)
    monkeypatch.setattr(images, "TF_JPEG_MAX_PIXELS", PHOTO_LIMIT, raising=False)
    return PHOTO_LIMIT


def on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``rgb`` (H, W, 3 uint8) under ``alpha`` (H, W: 0 transparent, 255 opaque) as a browser or viewer shows it on
    a white page: each channel ``(colour * alpha + 255 * (255 - alpha)) / 255``, rounded (never a tie: 255 is odd)."""
    weight = alpha.astype(np.float64)[..., None]
    return np.rint((rgb * weight + 255.0 * (255.0 - weight)) / 255.0).astype(np.uint8)


def transparent_images() -> dict[str, tuple[bytes, np.ndarray]]:
    """32x32 images with transparency, of every kind a user has, by file name: (their bytes, what a viewer shows of
    them on a white page). Each has fully transparent pixels that store black and pixels that store red (the colours
    a decode that drops the alpha shows the model), half-transparent ones and opaque noise."""
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    rgb[:, :4], rgb[:, 4:8] = (0, 0, 0), (255, 0, 0)  # under the transparent columns: black, then red
    alpha = np.full((32, 32), 255, np.uint8)
    alpha[:, :8], alpha[:, 8:12], alpha[:, 12:16] = 0, 128, 30

    def saved(image: Image.Image, fmt: str, **options) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        return buffer.getvalue()

    gray = rgb[..., 1]  # the red columns store 0 here: black under the transparency too
    palette = np.array([(0, 0, 0), (255, 0, 0), (0, 200, 0), (0, 0, 255)], np.uint8)  # black and red transparent
    palette_alpha = np.array([0, 0, 128, 255], np.uint8)
    indices = rng.integers(0, 4, (32, 32), dtype=np.uint8)
    indexed = Image.fromarray(indices, "L").convert("P")
    indexed.putpalette(palette.ravel().tolist())
    key = np.array((255, 0, 0), np.uint8)  # the colour-key PNG: its red pixels are transparent
    keyed = Image.fromarray(rgb)
    keyed.info["transparency"] = tuple(int(value) for value in key)
    gray_keyed = Image.fromarray(gray)
    gray_keyed.info["transparency"] = 0
    return {
        "rgba.png": (saved(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "PNG"), on_white(rgb, alpha)),
        "gray_alpha.png": (saved(Image.fromarray(np.dstack([gray, alpha]), "LA"), "PNG"),
                           on_white(np.repeat(gray[..., None], 3, axis=-1), alpha)),
        "palette_trns.png": (saved(indexed, "PNG", transparency=palette_alpha.tobytes()),
                             on_white(palette[indices], palette_alpha[indices])),
        "colour_key.png": (saved(keyed, "PNG"), on_white(rgb, np.where((rgb == key).all(-1), 0, 255))),
        "gray_key.png": (saved(gray_keyed, "PNG"),
                         on_white(np.repeat(gray[..., None], 3, axis=-1), np.where(gray == 0, 0, 255))),
        "alpha.webp": (saved(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "WEBP", lossless=True, exact=True),
                       on_white(rgb, alpha)),  # exact: the colours under the transparent pixels are kept
    }


def assert_same_copies(first: Mapping[str, bytes], second: Mapping[str, bytes]) -> None:
    """The same augmented copies (JPEG bytes by name): each the same transformation of the same image. Computed in
    batches of another shape, a pixel may round one level apart (floating point), which JPEG turns into other
    bytes, so the decoded pixels are compared; another transformation differs by tens of levels."""
    assert first.keys() == second.keys()
    for name in first:
        if first[name] != second[name]:
            pixels = [np.asarray(Image.open(io.BytesIO(data)), np.int16) for data in (first[name], second[name])]
            assert np.abs(pixels[0] - pixels[1]).max() <= 2, name

@pytest.fixture
def permissions_bind(tmp_path) -> None:
    """Skips a test of what a chmod forbids where it forbids nothing: root (or any process with CAP_DAC_OVERRIDE)
    reads and writes every file whatever its mode."""
    probe = tmp_path / ".permission-probe"
    probe.write_bytes(b"")
    probe.chmod(0)
    try:
        probe.open("rb").close()
    except PermissionError:
        return
    finally:
        probe.unlink()
    pytest.skip("chmod does not bind this user: root reads and writes any file")


@pytest.fixture
def make_class_folder() -> Callable[..., Path]:
    """``make_class_folder(root, {"REAL": 6, "FAKE": 6})`` writes that many distinct images per class."""

    def make(root: Path, counts: Mapping[str, int], suffix: str = ".png", seed: int = 0,
             size: tuple[int, int] = (32, 32)) -> Path:
        for class_index, (class_name, count) in enumerate(sorted(counts.items())):
            for index in range(count):
                write_image(Path(root) / class_name / f"img_{index:03d}{suffix}",
                            seed=seed * 100_000 + class_index * 1000 + index, size=size)
        return Path(root)

    return make


@pytest.fixture
def decoded(monkeypatch) -> list[str]:
    """The names of the files a split or a merge decodes (``images._full_check``), as it decodes them."""
    from realvsai import images

    names, full_check = [], images._full_check
    monkeypatch.setattr(images, "_full_check", lambda source, *args, **kwargs:
                        names.append(source.name) or full_check(source, *args, **kwargs))
    return names


@pytest.fixture
def bad_files() -> Callable[[Path], dict[str, Path]]:
    """Writes the broken files a user really has into a folder; returns them by kind."""

    def make(folder: Path) -> dict[str, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        good = io.BytesIO()
        Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(good, "JPEG")
        files = {
            "truncated": folder / "truncated.jpg",
            "empty": folder / "empty.jpg",
            "text": folder / "notes.jpg",
        }
        files["truncated"].write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
        files["empty"].write_bytes(b"")
        files["text"].write_text("this is not an image\n")
        return files

    return make


def run_script(script: str, *args: str, cwd: Path | None = None, input_text: str | None = None,
               timeout: float = 300, max_file_bytes: int | None = None) -> subprocess.CompletedProcess:
    """Runs a top-level script as a user would; returns the finished process (text output). ``max_file_bytes``: the
    largest file it may write (``ulimit -f``, POSIX), past which a write fails (EFBIG) rather than kill it."""
    def limited() -> None:
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, resource.RLIM_INFINITY))

    return subprocess.run(
        [sys.executable, str(REPO / script), *map(str, args)],
        cwd=cwd or REPO,
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)},
        preexec_fn=None if max_file_bytes is None else limited,
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class HashingWatch:
    """What ``watch_hashing`` saw: each progress bar drawn, as (desc, total), and each file hashed while no bar was
    being read."""

    def __init__(self) -> None:
        self.bars: list[tuple[str | None, int | None]] = []
        self.hashed_outside: list[Path] = []
        self._reading: list[str | None] = []  # the bars being read from, innermost last

    def progress(self, iterable: Any, total: int | None = None, desc: str | None = None, unit: str = "file") -> Any:
        if iterable is None:  # a bar updated by hand (``files.map_in_threads``' header reads), which hashes nothing
            from realvsai.cli import progress

            return progress(None, total=total, desc=desc, unit=unit)
        self.bars.append((desc, total))

        def read() -> Any:
            self._reading.append(desc)
            try:
                yield from iterable
            finally:
                self._reading.pop()

        return read()

    def sha256_file(self, path: Path) -> str:
        if not self._reading:
            self.hashed_outside.append(Path(path))
        return sha256(path)


def watch_hashing(monkeypatch: pytest.MonkeyPatch, *modules: Any) -> HashingWatch:
    """Replaces ``progress`` and ``sha256_file`` of each of ``modules`` by a ``HashingWatch``'s: a file read with
    nothing on the screen is one hashed outside a bar."""
    watch = HashingWatch()
    for module in modules:
        monkeypatch.setattr(module, "progress", watch.progress)
        monkeypatch.setattr(module, "sha256_file", watch.sha256_file)
    return watch


def snapshot(folder: Path) -> dict[str, tuple[str, int, int]]:
    """Every file below ``folder`` with its sha256, modification time and inode: an equal snapshot
    means nothing was rewritten, replaced or changed."""
    return {path.relative_to(folder).as_posix(): (sha256(path), path.stat().st_mtime_ns, path.stat().st_ino)
            for path in sorted(Path(folder).rglob("*")) if path.is_file()}


# For the tests of record_disk_waits: a batch of files is synced by syncfs (Linux; elsewhere each file is fsynced),
# and /proc names the file an fsync is given (Linux).
syncs_a_batch = pytest.mark.skipif(files._syncfs is None or not os.path.isdir("/proc/self/fd"),
                                   reason="no syncfs here (each file is fsynced), or no /proc to name a synced file")


def record_disk_waits(monkeypatch) -> list[tuple[str, str]]:
    """The waits on the disk from now on, in order: ``("fsync", <the synced file's folder name>)`` and
    ``("sync", "")`` for a syncfs; each still happens (``syncs_a_batch`` marks the tests that use it)."""
    calls: list[tuple[str, str]] = []
    real_syncfs, real_fsync = files._syncfs, os.fsync

    def fsync(handle: int) -> None:
        calls.append(("fsync", Path(os.readlink(f"/proc/self/fd/{handle}")).parent.name))
        real_fsync(handle)

    def syncfs(handle: int) -> int:
        calls.append(("sync", ""))
        return real_syncfs(handle)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(files, "_syncfs", syncfs)
    return calls


def disk_full_at_write(monkeypatch, number: int) -> None:
    """The ``number``-th file write of ``realvsai.files`` from now on (``files._write_all``) fails as on a full
    disk (ENOSPC); the others write."""
    import errno

    from realvsai import files

    real_write_all, writes = files._write_all, []

    def write_all(handle: int, data: bytes) -> None:
        writes.append(1)
        if len(writes) == number:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write_all(handle, data)

    monkeypatch.setattr(files, "_write_all", write_all)


def one_error_line(process: subprocess.CompletedProcess) -> str:
    """The single ``error: ...`` line a failed script prints, after checking it exited 1 with just that."""
    assert process.returncode == 1, process.stdout + process.stderr
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), process.stderr
    return lines[0]


def follow_deleter_hint(message: str) -> int:
    """Runs the ``(python DataDeleter.py ...)`` command that ``message`` suggests, as its reader would (with
    --yes, as there is no terminal to ask on); its exit code."""
    import re
    import shlex

    import DataDeleter

    command = re.search(r"\(python (DataDeleter\.py [^)]*)\)", message)
    assert command, message
    return DataDeleter.main([*shlex.split(command.group(1))[1:], "--yes"])


def read_history_csv(path: Path) -> list[dict]:
    """The rows of a run's history.csv (numbers as float, ``epoch`` as int, empty cells left out)."""
    import csv

    with open(path, newline="", encoding="utf-8") as stream:
        return [{key: value if key == "phase" else int(value) if key == "epoch" else float(value)
                 for key, value in row.items() if value not in ("", None)} for row in csv.DictReader(stream)]


def free_ports(count: int) -> list[int]:
    """``count`` TCP ports free on 127.0.0.1 now, for a test cluster's workers."""
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
