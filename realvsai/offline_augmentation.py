"""Offline augmentation: decodes the training images, augments them and writes every copy as a JPEG.

Every copy's random transformation comes from its own seed (the run's seed, its source's class and name, its
number): the same images and seed give the same bytes, a re-run makes exactly the missing copies, and neither
--copies, --batch-size nor the Keras backend changes what is done to a copy. (Computed in batches of another
shape, or on the other backend, a pixel may round one level apart now and then: floating point; 1 copy in 6,000
at 32 px with --batch-size 7 instead of 32.)
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

from realvsai.augmentation import copy_transformations
from realvsai.config import MAX_IMAGE_PIXELS
from realvsai.data import decode_rgb, resize_to_square
from realvsai.files import write_new_files
from realvsai.moving import SourceImage

# A batch holds at most this many pixels of copies (about 50 MB as float32 RGB), or one copy where a copy holds
# more: augmenting a batch takes 60-130 bytes a pixel at its peak (XLA or graph), so two copies of a 12 MP photo
# in one batch (the budget was 1 << 25) peaked at 3.4 GB. Batches of fewer copies give the same bytes (measured
# on 4000x3000 photos and real-or-ai-photos, both presets), and 32 px batches stay whole (32 images x 10 copies
# are 0.3 M pixels).
MAX_BATCH_PIXELS = 1 << 22
# Rounding a batch to uint8 pixels takes this many pixels at a time: whole, it held two more float batches.
ROUNDING_PIXELS = 1 << 20
# XLA-compiling the augmentation costs about 0.15 s a batch shape and saves a fifth of a 32 px run's
# CPU time (80,000 copies: 12.8 s, not 15.5 s): sizes whose images hold at least this many pixels compile
# (about 10 copies' worth of the old rule's 1 << 24). The images count, not the copies: XLA's numbers differ
# from the graph's in the last bits, so the choice must not depend on --copies either.
MIN_COMPILED_PIXELS = 1 << 21
WRITERS = 2  # threads that encode and write a batch of copies while the next batch is made


@dataclass(frozen=True)
class CopyBatch:
    """Images of one size, the copies of each still to be made and each such copy's own seed,
    ``seeds[image][k]`` beside ``targets[image][k]``."""

    sources: tuple[Path, ...]
    targets: tuple[tuple[str, ...], ...]
    seeds: tuple[tuple[bytes, ...], ...]
    needs_pil: tuple[bool, ...]
    jit_compile: bool = False


def plan_batches(images: Sequence[SourceImage], seed: int, image_size: int | None = None, batch_size: int = 32,
                 max_batch_pixels: int = MAX_BATCH_PIXELS) -> list[CopyBatch]:
    """Groups the images with copies to make (a target that is not None) by their output size into batches of
    at most ``batch_size`` images, all those copies each (fewer where they pass ``max_batch_pixels``). Copy ``k``
    of an image is drawn from ``(seed, its class and file name, k)`` alone, so neither the batches nor the
    copies made before change its transformation, and the copies that exist are not made again."""
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
        # (image, [(k, target), ...]) of the images with copies to make
        missing = [(image, to_make) for image in members
                   if (to_make := [(number, target) for number, target in enumerate(image.targets) if target])]
        for start in range(0, len(missing), per_batch):
            for first in range(0, copies, copies_per_batch):
                chunk = [(image, part) for image, to_make in missing[start:start + per_batch]
                         if (part := to_make[first:first + copies_per_batch])]
                if chunk:
                    batches.append(CopyBatch(
                        sources=tuple(image.source for image, _ in chunk),
                        targets=tuple(tuple(target for _, target in part) for _, part in chunk),
                        seeds=tuple(tuple(copy_seed(seed, image, number) for number, _ in part)
                                    for image, part in chunk),
                        needs_pil=tuple(image.needs_pil for image, _ in chunk),
                        jit_compile=jit_compile,
                    ))
    return batches


def copy_seed(seed: int, image: SourceImage, number: int) -> bytes:
    """Copy ``number`` of ``image``'s own seed, from the run's ``seed`` and the image's class and name (the bytes
    the file system holds: a name need not be UTF-8)."""
    key = f"realvsai-copies:{seed}:{image.class_name}/{image.source.name}:{number}"
    return hashlib.sha256(os.fsencode(key)).digest()


@dataclass
class CopyReport:
    """What ``write_augmented_copies`` did."""

    written: int = 0
    already_there: int = 0
    undecodable: list[Path] = field(default_factory=list)
    in_the_way: list[str] = field(default_factory=list)  # files kept at a copy's name: not copies
    # copies written, or found with their very bytes, so far: {path: sha256 of those bytes}
    made: dict[str, str] = field(default_factory=dict)


def write_augmented_copies(batches: Sequence[CopyBatch], augmentation: keras.Sequential | None,
                           image_size: int | None = None, jpeg_quality: int = 95,
                           on_copies_done: Callable[[int], None] | None = None,
                           report: CopyReport | None = None, max_pixels: int = MAX_IMAGE_PIXELS) -> CopyReport:
    """Makes every batch's copies and writes them with ``files.write_new_files``, never over another file.

    A file at a copy's name counts as already there when it holds the copy's very bytes (an earlier or
    concurrent run made it); any other is kept and listed in ``in_the_way``. TensorFlow decodes the images in
    parallel, the augmentation runs on the Keras backend, and ``WRITERS`` threads encode and write a batch
    at a time while the next is made; ``on_copies_done`` gets the number of copies computed, of all the
    batches' targets: an image's copies may span several batches. ``report.already_there`` counts the targets
    found holding their copy's very bytes.
    ``report``: filled as the copies are written, so a caller that passes one knows them when interrupted.
    """
    report, decoded = CopyReport() if report is None else report, set()
    for folder in {os.path.dirname(target) for batch in batches for targets in batch.targets for target in targets}:
        os.makedirs(folder, exist_ok=True)
    augment = _augmenter(augmentation, any(batch.jit_compile for batch in batches))
    in_flight: collections.deque = collections.deque()  # bounds the copies held in memory
    with ThreadPoolExecutor(max_workers=WRITERS) as pool:
        for batch_index, positions, images in _decoded_batches(batches, image_size, max_pixels).as_numpy_iterator():
            batch = batches[batch_index]
            decoded.update((int(batch_index), int(position)) for position in positions)
            targets = [target for position in positions for target in batch.targets[position]]
            # Each image's copies side by side, each from its own seed.
            copies = augment(np.repeat(images, [len(batch.targets[position]) for position in positions], axis=0),
                             [seed for position in positions for seed in batch.seeds[position]], batch.jit_compile)
            in_flight.append(pool.submit(_write_files, targets, copies, jpeg_quality, report))
            while len(in_flight) > 2 * WRITERS:
                report.written += in_flight.popleft().result()
            if on_copies_done:
                on_copies_done(len(targets))
        report.written += sum(future.result() for future in in_flight)
    missing = [(batch.targets[position], source) for index, batch in enumerate(batches)
               for position, source in enumerate(batch.sources) if (index, position) not in decoded]
    report.already_there = (sum(len(batches[index].targets[position]) for index, position in decoded)
                            - report.written - len(report.in_the_way))
    report.undecodable = sorted({source for _, source in missing})
    if on_copies_done:  # those of the images that did not decode
        on_copies_done(sum(len(targets) for targets, _ in missing))
    report.in_the_way.sort()
    return report


@functools.cache
def _jpeg_encoder(quality: int) -> Callable[[np.ndarray], tf.Tensor]:
    """``encode(copies)``: each of a batch of uint8 RGB images as JPEG bytes, in one graph call, traced once for
    any batch and image size. The same bytes as one eager ``encode_jpeg`` call per copy, whose overhead made the
    writer threads the bottleneck (cifake-mini's 80,000 copies: 14 s with it, 8 s without)."""
    return tf.function(lambda copies: tf.map_fn(lambda image: tf.io.encode_jpeg(image, quality=quality), copies,
                                                fn_output_signature=tf.string),
                       input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)], autograph=False)


def _write_files(targets: Sequence[str], copies: np.ndarray, jpeg_quality: int, report: CopyReport) -> int:
    """Encodes each of ``copies`` (uint8 RGB images of one size) and writes it to its path in ``targets``
    (``files.write_new_files``); returns how many it wrote. Adds each path, with the sha256 of its bytes, to
    ``report.made`` once it holds its copy, or to ``report.in_the_way``."""
    encoded = _jpeg_encoder(jpeg_quality)(copies).numpy()
    wrote = write_new_files(list(zip(targets, encoded)))  # one wait on the disk for the batch
    for path, data, new in zip(targets, encoded, wrote):
        if not new:
            # The same bytes: this copy, from a run cut off before sources.csv recorded it (that run planned
            # these batches too: nothing was recorded since). Anything else is not a copy.
            with open(path, "rb") as stream:
                if stream.read() != data:
                    report.in_the_way.append(path)
                    continue
        report.made[path] = hashlib.sha256(data).hexdigest()  # atomic: the writer threads share the report
    return sum(wrote)


def _augmenter(augmentation: keras.Sequential | None, compile_some: bool
               ) -> Callable[[np.ndarray, Sequence[bytes], bool], np.ndarray]:
    """``augment(images, seeds, jit_compile)``: each image augmented from its own seed, rounded to uint8 pixels.

    Each layer runs compiled: on TensorFlow as a graph, XLA-compiled for a batch with ``jit_compile`` when
    the layer can be; on JAX (which has no graph without XLA) jit-compiled whenever it can be.
    """
    layers = augmentation.layers if augmentation else []
    on_jax = keras.backend.backend() == "jax"
    plain = [_compiled(layer.transform_images, xla=on_jax and layer.supports_jit) for layer in layers]
    xla = [_compiled(layer.transform_images, xla=layer.supports_jit) if compile_some and not on_jax else function
           for layer, function in zip(layers, plain)]

    def augment(images: np.ndarray, seeds: Sequence[bytes], jit_compile: bool) -> np.ndarray:
        images = images.astype(np.float32, copy=False)  # exact: uint8 at native size, float32 from --size
        if layers:
            drawn = copy_transformations(augmentation, images, seeds)  # on the host, outside the compiled functions
            for transform, transformation in zip(xla if jit_compile else plain, drawn):
                images = transform(images, transformation)
        return _rounded_pixels(keras.ops.convert_to_numpy(images))

    return augment


def _rounded_pixels(images: np.ndarray) -> np.ndarray:
    """``images`` rounded and clipped to uint8, ``ROUNDING_PIXELS`` at a time (the same values as at once)."""
    pixels = np.empty(images.shape, np.uint8)
    step = max(1, ROUNDING_PIXELS // max(1, images[0].size // images.shape[-1])) if len(images) else 1
    for start in range(0, len(images), step):
        pixels[start:start + step] = np.clip(np.round(images[start:start + step]), 0, 255)
    return pixels


def _compiled(function: Callable, xla: bool) -> Callable:
    """``function(images, transformation)`` compiled by the current backend: XLA-compiled when ``xla``, else a
    TensorFlow graph (a detector batch ran twice as fast as eagerly) or, on JAX, as it is. Keras has no public API
    for this.

    On TensorFlow, one concrete function per shape of the inputs, as ``tf.function`` traces anyway: a folder's
    images come in several sizes, and a size's last batch is smaller. Called directly, they do the same work
    without TensorFlow's warning that this expected retracing is "expensive", and give the same bytes.
    ``reduce_retracing=True`` traces less, but its shape-generic graphs changed the last bits of copies (298 of
    6,000 from images of six sizes, 2 of 20,000 at 32 px) and were no faster.
    """
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(function) if xla else function
    traced = tf.function(function, jit_compile=xla, autograph=False)
    by_shape: dict[tuple, Callable] = {}

    def call(images, transformation):
        key = tuple((tuple(value.shape), str(value.dtype)) for value in tf.nest.flatten((images, transformation)))
        if key not in by_shape:
            by_shape[key] = traced.get_concrete_function(images, transformation)
        return by_shape[key](images, transformation)

    return call


def _decoded_batches(batches: Sequence[CopyBatch], image_size: int | None, max_pixels: int) -> tf.data.Dataset:
    """Elements ``(batch index, positions of its decoded images, images)``, one per batch: uint8 at native size
    (cast to float32 when the batch is augmented: waiting in tf.data's buffers, floats took four times the
    memory), float32 when resized to ``image_size``."""
    elements = [(batch_index, position, os.fsencode(source), batch.needs_pil[position])  # bytes: any name
                for batch_index, batch in enumerate(batches) for position, source in enumerate(batch.sources)]
    batch_lengths = tf.constant([len(batch.sources) for batch in batches], tf.int64)

    # No autograph: these functions use Python control flow on Python values only (converting them
    # costs start-up time and gains nothing).
    plain = tf.autograph.experimental.do_not_convert

    @plain
    def decode(batch_index, position, path, pil):
        image = decode_rgb(path, pil, max_pixels=max_pixels)  # as training decodes it: upright, RGB
        # As the model sees it: the centre square (squashing a wide image would show training another geometry).
        image = image if image_size is None else resize_to_square(image, image_size)
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
