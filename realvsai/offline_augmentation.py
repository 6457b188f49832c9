"""Offline augmentation: decodes the training images, augments them and writes every copy as a JPEG.

Every draw comes from a batch's own seed, so the same images and seed give the same bytes, and a
re-run makes exactly the missing copies.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from realvsai.augmentation import apply_transformations, random_transformations
from realvsai.data import decode_rgb
from realvsai.files import write_new
from realvsai.moving import SourceImage, is_made

# A batch holds at most this many pixels of copies (about 400 MB as float32 RGB), so a folder of
# 12-megapixel photos never needs more than a few full-size float copies at once.
MAX_BATCH_PIXELS = 1 << 25
# XLA-compiling the augmentation costs about 0.15 s a batch shape and saves a fifth of a 32 px run's
# CPU time (80,000 copies: 12.8 s, not 15.5 s): sizes with at least this many pixels of copies compile.
MIN_COMPILED_PIXELS = 1 << 24


@dataclass(frozen=True)
class CopyBatch:
    """Images of one size and their copies' targets; one that exists (None) is still computed, so the others
    come out as in a fresh run."""

    sources: tuple[Path, ...]
    targets: tuple[tuple[str | None, ...], ...]
    seed: tuple[int, int]
    needs_pil: tuple[bool, ...]
    jit_compile: bool = False

    @property
    def copies(self) -> int:
        return len(self.targets[0])


def plan_batches(images: Sequence[SourceImage], seed: int, image_size: int | None = None, batch_size: int = 32,
                 max_batch_pixels: int = MAX_BATCH_PIXELS) -> list[CopyBatch]:
    """Groups images by their output size into batches of at most ``batch_size`` images, all copies each
    (fewer where they pass ``max_batch_pixels``). The batches depend only on the images, their order and
    the arguments, so a re-run draws as the first run did."""
    groups: dict[tuple[int, int], list[SourceImage]] = {}
    for image in images:
        groups.setdefault((image_size, image_size) if image_size else (image.height, image.width), []).append(image)
    batches = []
    for (height, width), members in sorted(groups.items()):
        copies, pixels_per_copy = len(members[0].targets), max(1, height * width)
        # All the images count, also those whose copies exist: a re-run must choose as the first run did.
        jit_compile = len(members) * copies * pixels_per_copy >= MIN_COMPILED_PIXELS
        per_batch = max(1, min(batch_size, max_batch_pixels // (pixels_per_copy * copies)))
        copies_per_batch = min(copies, max(1, max_batch_pixels // pixels_per_copy))
        for start in range(0, len(members), per_batch):
            chunk = members[start:start + per_batch]
            key = f"{chunk[0].class_name}/{chunk[0].source.name}"  # the first image names the batch stably
            for first in range(0, copies, copies_per_batch):
                digest = hashlib.sha256(f"realvsai-copies:{seed}:{key}:{first}".encode()).digest()
                batches.append(CopyBatch(
                    sources=tuple(image.source for image in chunk),
                    targets=tuple(tuple(image.targets[first:first + copies_per_batch]) for image in chunk),
                    seed=(int.from_bytes(digest[:4], "little") >> 1, int.from_bytes(digest[4:8], "little") >> 1),
                    needs_pil=tuple(image.needs_pil for image in chunk),
                    jit_compile=jit_compile,
                ))
    return batches


@dataclass
class CopyReport:
    """What ``write_augmented_copies`` did."""

    written: int = 0
    already_there: int = 0
    undecodable: list[Path] = field(default_factory=list)
    in_the_way: list[str] = field(default_factory=list)  # files kept at a copy's name: not copies


def write_augmented_copies(batches: Sequence[CopyBatch], augmentation: keras.Sequential | None,
                           image_size: int | None = None, jpeg_quality: int = 95, writers: int = 2,
                           on_image_done: Callable[[int], None] | None = None) -> CopyReport:
    """Makes every batch's copies and writes each with ``files.write_new``, never over another file.

    A file at a copy's name counts as already there when ``moving.is_made`` (an earlier or concurrent
    run made it); any other is kept and listed in ``in_the_way``. ``writers`` threads write a batch at a
    time while TensorFlow makes the next; ``on_image_done`` gets the number of source images finished.
    """
    report, decoded = CopyReport(), set()
    for folder in {os.path.dirname(target) for batch in batches for targets in batch.targets for target in targets
                   if target}:
        os.makedirs(folder, exist_ok=True)
    in_flight: collections.deque = collections.deque()  # bounds the encoded copies held in memory
    with ThreadPoolExecutor(max_workers=writers) as pool:
        dataset = _copies_dataset(batches, augmentation, image_size, jpeg_quality)
        for batch_index, positions, encoded in dataset.as_numpy_iterator():
            batch = batches[batch_index]
            files = []
            for row, position in enumerate(positions):
                decoded.add((int(batch_index), int(position)))
                copies = encoded[row * batch.copies:(row + 1) * batch.copies]
                files.extend((target, data) for target, data in zip(batch.targets[position], copies) if target)
            in_flight.append(pool.submit(_write_files, files, report.in_the_way))
            while len(in_flight) > 2 * writers:
                report.written += in_flight.popleft().result()
            if on_image_done:
                on_image_done(len(positions))
        report.written += sum(future.result() for future in in_flight)
    report.already_there = (sum(batches[index].copies for index, _ in decoded) - report.written
                            - len(report.in_the_way))
    report.undecodable = sorted({source for index, batch in enumerate(batches)
                                 for position, source in enumerate(batch.sources) if (index, position) not in decoded})
    if report.undecodable and on_image_done:
        on_image_done(len(report.undecodable))
    report.in_the_way.sort()
    return report


def _write_files(files: Sequence[tuple[str, bytes]], in_the_way: list[str]) -> int:
    """Writes each ``(path, bytes)``; returns how many it wrote, adds the others not made to ``in_the_way``."""
    written = 0
    for path, data in files:
        try:
            write_new(path, data)
            written += 1
        except FileExistsError:
            if not is_made(path):
                in_the_way.append(path)
    return written


def _copies_dataset(batches: Sequence[CopyBatch], augmentation, image_size, jpeg_quality) -> tf.data.Dataset:
    """Elements ``(batch index, positions of its decoded images, JPEG bytes of their copies)``."""
    elements = [(batch_index, position, str(source), batch.needs_pil[position])
                for batch_index, batch in enumerate(batches) for position, source in enumerate(batch.sources)]
    batch_lengths = tf.constant([len(batch.sources) for batch in batches], tf.int64)
    copies = tf.constant([batch.copies for batch in batches], tf.int32)
    seeds = tf.constant(np.array([batch.seed for batch in batches], np.int64).reshape(-1, 2))
    layers = augmentation.layers if augmentation else []
    apply, compiled = functools.partial(apply_transformations, layers), None
    if layers and any(batch.jit_compile for batch in batches) and all(layer.supports_jit for layer in layers):
        compiled = tf.function(apply, jit_compile=True, autograph=False)
        wanted = tf.constant([batch.jit_compile for batch in batches])

    # No autograph: these functions use Python control flow on Python values only, and converting
    # them and the layers they call cost a fifth of a 5,000-copy run's CPU time (2.4 s, 1.9 without).
    plain = tf.autograph.experimental.do_not_convert

    @plain
    def decode(batch_index, position, path, pil):
        image = tf.cast(decode_rgb(path, pil), tf.float32)  # as training decodes it: upright, RGB
        if image_size is not None:
            image = tf.image.resize(image, (image_size, image_size), antialias=True)
        return batch_index, position, image

    @plain
    def augment_and_encode(batch_index, position, images):
        batch_index = batch_index[0]
        images = tf.repeat(images, copies[batch_index], axis=0)  # each image's copies side by side
        if layers:
            drawn = random_transformations(augmentation, images, seeds[batch_index])
            if compiled:
                images = tf.cond(wanted[batch_index], lambda: compiled(images, drawn), lambda: apply(images, drawn))
            else:
                images = apply(images, drawn)
        pixels = tf.cast(tf.clip_by_value(tf.round(images), 0.0, 255.0), tf.uint8)
        encoded = tf.map_fn(lambda image: tf.io.encode_jpeg(image, quality=jpeg_quality), pixels,
                            fn_output_signature=tf.string)
        return batch_index, position, encoded

    # (batch index, position in it, path, decode with Pillow) of every image
    dataset = tf.data.Dataset.from_tensor_slices(tuple(np.array(column) for column in zip(*elements)))
    # Where broken images are found (plan_copies reads only headers): one TensorFlow cannot decode drops
    # out and is reported by its missing position. Errors after decoding are bugs and stop the run.
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
    # Each window closes as soon as its batch is complete: only the batches being assembled are held.
    dataset = dataset.group_by_window(key_func=plain(lambda batch_index, position, image: batch_index),
                                      reduce_func=plain(lambda key, window: window.batch(batch_lengths[key])),
                                      window_size_func=plain(lambda key: batch_lengths[key]))
    dataset = dataset.map(augment_and_encode, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
    # tf.data's default graph rewrites add start-up and gain nothing for this short, already
    # parallel pipeline (measured: a 5,000-copy run took 3.2 s with them, 2.5 s without).
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    return dataset.with_options(options)
