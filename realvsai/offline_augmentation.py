"""Offline augmentation: decodes the training images, augments them and writes every copy as a JPEG.

Every copy's draws come from its own seed (the run's seed, its source's name and its number), so the
same images and seed give the same bytes, whatever --copies and --batch-size, and a re-run makes exactly
the missing copies.
"""

from __future__ import annotations

import collections
import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from realvsai.augmentation import copy_transformations
from realvsai.data import decode_rgb
from realvsai.files import write_new
from realvsai.moving import SourceImage

# A batch holds at most this many pixels of copies (about 400 MB as float32 RGB), so a folder of
# 12-megapixel photos never needs more than a few full-size float copies at once.
MAX_BATCH_PIXELS = 1 << 25
# XLA-compiling the augmentation costs about 0.15 s a batch shape and saves a fifth of a 32 px run's
# CPU time (80,000 copies: 12.8 s, not 15.5 s): sizes whose images hold at least this many pixels compile
# (about 10 copies' worth of the old rule's 1 << 24). The images count, not the copies: XLA's numbers differ
# from the graph's in the last bits, so the choice must not depend on --copies either.
MIN_COMPILED_PIXELS = 1 << 21


@dataclass(frozen=True)
class CopyBatch:
    """Images of one size, their copies' targets (None: one that exists, computed all the same) and each
    copy's own seed, ``seeds[image][copy]`` beside ``targets``."""

    sources: tuple[Path, ...]
    targets: tuple[tuple[str | None, ...], ...]
    seeds: tuple[tuple[int, ...], ...]
    needs_pil: tuple[bool, ...]
    jit_compile: bool = False

    @property
    def copies(self) -> int:
        return len(self.targets[0])


def plan_batches(images: Sequence[SourceImage], seed: int, image_size: int | None = None, batch_size: int = 32,
                 max_batch_pixels: int = MAX_BATCH_PIXELS) -> list[CopyBatch]:
    """Groups images by their output size into batches of at most ``batch_size`` images, all copies each
    (fewer where they pass ``max_batch_pixels``). Copy ``k`` of an image is drawn from ``(seed, its class and
    file name, k)`` alone, so neither the batches nor the number of copies change it."""
    groups: dict[tuple[int, int], list[SourceImage]] = {}
    for image in images:
        groups.setdefault((image_size, image_size) if image_size else (image.height, image.width), []).append(image)
    batches = []
    for (height, width), members in sorted(groups.items()):
        copies, pixels_per_copy = len(members[0].targets), max(1, height * width)
        # All the images count, also those whose copies exist: a re-run must choose as the first run did.
        jit_compile = len(members) * pixels_per_copy >= MIN_COMPILED_PIXELS
        per_batch = max(1, min(batch_size, max_batch_pixels // (pixels_per_copy * copies)))
        copies_per_batch = min(copies, max(1, max_batch_pixels // pixels_per_copy))
        for start in range(0, len(members), per_batch):
            chunk = members[start:start + per_batch]
            for first in range(0, copies, copies_per_batch):
                numbers = range(first, min(first + copies_per_batch, copies))
                batches.append(CopyBatch(
                    sources=tuple(image.source for image in chunk),
                    targets=tuple(tuple(image.targets[first:first + copies_per_batch]) for image in chunk),
                    seeds=tuple(tuple(copy_seed(seed, image, number) for number in numbers) for image in chunk),
                    needs_pil=tuple(image.needs_pil for image in chunk),
                    jit_compile=jit_compile,
                ))
    return batches


def copy_seed(seed: int, image: SourceImage, number: int) -> int:
    """Copy ``number`` of ``image``'s own seed (128 bits), from the run's ``seed`` and the image's class and name."""
    key = f"realvsai-copies:{seed}:{image.class_name}/{image.source.name}:{number}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:16], "little")


@dataclass
class CopyReport:
    """What ``write_augmented_copies`` did."""

    written: int = 0
    already_there: int = 0
    undecodable: list[Path] = field(default_factory=list)
    in_the_way: list[str] = field(default_factory=list)  # files kept at a copy's name: not copies
    made: list[str] = field(default_factory=list)  # copies written, or found with their very bytes, so far


def write_augmented_copies(batches: Sequence[CopyBatch], augmentation: keras.Sequential | None,
                           image_size: int | None = None, jpeg_quality: int = 95, writers: int = 2,
                           on_copies_done: Callable[[int], None] | None = None,
                           report: CopyReport | None = None) -> CopyReport:
    """Makes every batch's copies and writes each with ``files.write_new``, never over another file.

    A file at a copy's name counts as already there when it holds the copy's very bytes (an earlier or
    concurrent run made it); any other is kept and listed in ``in_the_way``. TensorFlow decodes the images in
    parallel, the augmentation runs on the Keras backend, and ``writers`` threads encode and write a batch
    at a time while the next is made; ``on_copies_done`` gets the number of copies computed (those already there
    included), of ``sum(len(batch.sources) * batch.copies)``: an image's copies may span several batches.
    ``report``: filled as the copies are written, so a caller that passes one knows them when interrupted.
    """
    report, decoded = CopyReport() if report is None else report, set()
    for folder in {os.path.dirname(target) for batch in batches for targets in batch.targets for target in targets
                   if target}:
        os.makedirs(folder, exist_ok=True)
    augment = _augmenter(augmentation, any(batch.jit_compile for batch in batches))
    in_flight: collections.deque = collections.deque()  # bounds the copies held in memory
    with ThreadPoolExecutor(max_workers=writers) as pool:
        for batch_index, positions, images in _decoded_batches(batches, image_size).as_numpy_iterator():
            batch = batches[batch_index]
            copies = augment(np.repeat(images, batch.copies, axis=0), batch)  # each image's copies side by side
            files = []
            for row, position in enumerate(positions):
                decoded.add((int(batch_index), int(position)))
                pixels = copies[row * batch.copies:(row + 1) * batch.copies]
                files.extend((target, image) for target, image in zip(batch.targets[position], pixels) if target)
            in_flight.append(pool.submit(_write_files, files, jpeg_quality, report))
            while len(in_flight) > 2 * writers:
                report.written += in_flight.popleft().result()
            if on_copies_done:
                on_copies_done(len(positions) * batch.copies)
        report.written += sum(future.result() for future in in_flight)
    report.already_there = (sum(batches[index].copies for index, _ in decoded) - report.written
                            - len(report.in_the_way))
    missing = [(batch, source) for index, batch in enumerate(batches)
               for position, source in enumerate(batch.sources) if (index, position) not in decoded]
    report.undecodable = sorted({source for _, source in missing})
    if on_copies_done:  # those of the images that did not decode
        on_copies_done(sum(batch.copies for batch, _ in missing))
    report.in_the_way.sort()
    return report


def _write_files(files: Sequence[tuple[str, np.ndarray]], jpeg_quality: int, report: CopyReport) -> int:
    """Encodes and writes each ``(path, uint8 pixels)``; returns how many it wrote. Adds each path to
    ``report.made`` as soon as it holds its copy, or to ``report.in_the_way``."""
    written = 0
    for path, pixels in files:
        encoded = tf.io.encode_jpeg(pixels, quality=jpeg_quality).numpy()
        try:
            write_new(path, encoded)
            written += 1
        except FileExistsError:
            # The same bytes: this copy, from a run cut off before sources.csv recorded it (copies are
            # byte-identical for the settings settings.json holds). Anything else is not a copy.
            with open(path, "rb") as stream:
                if stream.read() != encoded:
                    report.in_the_way.append(path)
                    continue
        report.made.append(path)  # list.append is atomic: the writer threads share the report
    return written


def _augmenter(augmentation: keras.Sequential | None, compile_some: bool) -> Callable[[np.ndarray, CopyBatch],
                                                                                        np.ndarray]:
    """``augment(images, batch)``: each copy augmented from its own seed, rounded to uint8 pixels.

    Each layer runs compiled: on TensorFlow as a graph, XLA-compiled for a batch with ``jit_compile`` when
    the layer can be; on JAX (which has no graph without XLA) jit-compiled whenever it can be.
    """
    layers = augmentation.layers if augmentation else []
    on_jax = keras.backend.backend() == "jax"
    plain = [_compiled(layer.transform_images, xla=on_jax and layer.supports_jit) for layer in layers]
    xla = [_compiled(layer.transform_images, xla=layer.supports_jit) if compile_some and not on_jax else function
           for layer, function in zip(layers, plain)]

    def augment(images: np.ndarray, batch: CopyBatch) -> np.ndarray:
        if layers:
            # Drawn on the host, outside the compiled functions, each copy from its own seed.
            drawn = copy_transformations(augmentation, images, [seed for seeds in batch.seeds for seed in seeds])
            for transform, transformation in zip(xla if batch.jit_compile else plain, drawn):
                images = transform(images, transformation)
        return np.clip(np.round(keras.ops.convert_to_numpy(images)), 0, 255).astype(np.uint8)

    return augment


def _compiled(function: Callable, xla: bool) -> Callable:
    """``function`` compiled by the current backend: XLA-compiled when ``xla``, else a TensorFlow graph (a
    detector batch ran twice as fast as eagerly) or, on JAX, as it is. Keras has no public API for this."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(function) if xla else function
    return tf.function(function, jit_compile=xla, autograph=False)


def _decoded_batches(batches: Sequence[CopyBatch], image_size: int | None) -> tf.data.Dataset:
    """Elements ``(batch index, positions of its decoded images, float32 images)``, one per batch."""
    elements = [(batch_index, position, os.fsencode(source), batch.needs_pil[position])  # bytes: any name
                for batch_index, batch in enumerate(batches) for position, source in enumerate(batch.sources)]
    batch_lengths = tf.constant([len(batch.sources) for batch in batches], tf.int64)

    # No autograph: these functions use Python control flow on Python values only (converting them
    # costs start-up time and gains nothing).
    plain = tf.autograph.experimental.do_not_convert

    @plain
    def decode(batch_index, position, path, pil):
        image = tf.cast(decode_rgb(path, pil), tf.float32)  # as training decodes it: upright, RGB
        if image_size is not None:
            image = tf.image.resize(image, (image_size, image_size), antialias=True)
        return batch_index, position, image

    # (batch index, position in it, path, decode with Pillow) of every image
    dataset = tf.data.Dataset.from_tensor_slices(tuple(np.array(column) for column in zip(*elements)))
    # Where broken images are found (plan_copies reads only headers): one TensorFlow cannot decode drops
    # out and is reported by its missing position. Errors after decoding are bugs and stop the run.
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
    # Each window closes as soon as its batch is complete: only the batches being assembled are held.
    dataset = dataset.group_by_window(key_func=plain(lambda batch_index, position, image: batch_index),
                                      reduce_func=plain(lambda key, window: window.batch(batch_lengths[key])),
                                      window_size_func=plain(lambda key: batch_lengths[key]))
    dataset = dataset.map(plain(lambda batch_index, position, images: (batch_index[0], position, images)))
    # tf.data's default graph rewrites add start-up and gain nothing for this short, already
    # parallel pipeline (measured: a 5,000-copy run took 3.2 s with them, 2.5 s without).
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    return dataset.prefetch(2).with_options(options)
