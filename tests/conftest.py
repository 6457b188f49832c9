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
               timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs a top-level script as a user would; returns the finished process (text output)."""
    return subprocess.run(
        [sys.executable, str(REPO / script), *map(str, args)],
        cwd=cwd or REPO,
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)},
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, tuple[str, int, int]]:
    """Every file below ``folder`` with its sha256, modification time and inode: an equal snapshot
    means nothing was rewritten, replaced or changed."""
    return {path.relative_to(folder).as_posix(): (sha256(path), path.stat().st_mtime_ns, path.stat().st_ino)
            for path in sorted(Path(folder).rglob("*")) if path.is_file()}


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
