"""Offline augmentation: decodes the training images, augments them and writes every copy as a JPEG.

Every copy's random transformation comes from its own seed (the run's seed, its source's class and name, its
number): the same images and seed give the same bytes, a re-run makes exactly the missing copies, and neither
--copies, --batch-size nor the Keras backend changes what is done to a copy. (Computed in batches of another
shape, or on the other backend, a pixel may round one level apart now and then: floating point; 1 copy in 6,000
at 32 px with --batch-size 7 instead of 32.)

A copy of a large image is made a band of rows at a time from the image's uint8 pixels, into the bytes it has when
made whole, and the largest images are decoded one at a time: a 190 MP photo's copies peak at 2.8 GB, not 14 GB.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import itertools
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from realvsai.augmentation import RandomJpegQuality, copy_transformations
from realvsai.config import MAX_IMAGE_PIXELS
from realvsai.data import decode_rgb, input_tensorflow, resize_to_square
from realvsai.files import write_new_files
from realvsai.images import ImageDecodeError
from realvsai.moving import SourceImage

# A batch holds at most this many pixels of copies (about 50 MB as float32 RGB), or one copy where a copy holds
# more: augmenting a batch takes 60-130 bytes a pixel at its peak (XLA or graph), so two copies of a 12 MP photo
# in one batch (the budget was 1 << 25) peaked at 3.4 GB. Batches of fewer copies give the same bytes (measured
# on 4000x3000 photos and real-or-ai-photos, both presets), and 32 px batches stay whole (32 images x 10 copies
# are 0.3 M pixels).
MAX_BATCH_PIXELS = 1 << 22
# Rounding a batch to uint8 pixels takes this many pixels at a time: whole, it held two more float batches.
ROUNDING_PIXELS = 1 << 20
# A copy of more pixels than this (made alone, in a batch of its own) is made BAND_PIXELS of output rows at a time,
# each layer's in turn (``transform_rows``), from the whole image held as uint8 between layers where that is exact:
# made whole, a 190 MP photo's classic copy peaked at 13.5 GB (the float32 image, the affine map's coordinate grids,
# four gathers of its pixels), a 178 MP photo's detector copy at 18 GB. The same bytes as made whole.
BANDED_PIXELS = MAX_BATCH_PIXELS
BAND_PIXELS = 1 << 20  # a band's intermediates: about 70 bytes a pixel (four gathers of float32 RGB, the grids)
# Images of more pixels are decoded in the main thread, one at a time, when their batch is made, not ahead by
# tf.data, one per core: its threads decoded a 190 MP photo through 1.8 GB (Pillow's image, its array, the
# tensor), and held 3.3 GB from one of its copies to the next.
DECODED_AHEAD_PIXELS = 1 << 25
# Copies handed to the writer threads that pass this many bytes are written before the next batch is decoded: the
# 2 * WRITERS batches of 32 px or 12 MP copies that may wait are far below it; a 190 MP copy (570 MB, and its tensor
# as it is encoded) is written alone, as that photo's next decode takes 1.7 GB at its peak (Pillow's).
MAX_WAITING_BYTES = 1 << 28
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
    pixels: int = 0  # of its largest image, as decoded (its own size) and as augmented (--size)


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
                        pixels=max(max(image.width * image.height, height * width) for image, _ in chunk),
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
    input_tensorflow()  # it decodes and encodes; under JAX, the GPUs are for the augmentation
    report, decoded = CopyReport() if report is None else report, set()
    for folder in {os.path.dirname(target) for batch in batches for targets in batch.targets for target in targets}:
        os.makedirs(folder, exist_ok=True)
    augment = _augmenter(augmentation, any(batch.jit_compile for batch in batches))
    in_flight: collections.deque = collections.deque()  # (future, bytes): bounds the copies held in memory
    pool = ThreadPoolExecutor(max_workers=WRITERS)
    try:
        # Tensors, not NumPy arrays: a large image's copies are made from the decoded tensor itself (a NumPy copy of
        # a 190 MP photo, and the tensor made of it again, held 1.1 GB more).
        for batch_index, positions, images in itertools.chain(_decoded_batches(batches, image_size, max_pixels),
                                                              _decoded_alone(batches, image_size, max_pixels)):
            batch_index, positions = int(batch_index), np.asarray(positions)
            batch = batches[batch_index]
            decoded.update((int(batch_index), int(position)) for position in positions)
            targets = [target for position in positions for target in batch.targets[position]]
            # Each image's copies side by side, each from its own seed.
            copies = augment(images, [len(batch.targets[position]) for position in positions],
                             [seed for position in positions for seed in batch.seeds[position]], batch.jit_compile)
            del images  # before the copies are encoded (a 190 MP photo: 570 MB)
            in_flight.append((pool.submit(_write_files, targets, copies, jpeg_quality, report), copies.nbytes))
            del copies  # the writer holds them
            while len(in_flight) > 2 * WRITERS or sum(size for _, size in in_flight) > MAX_WAITING_BYTES:
                report.written += in_flight.popleft()[0].result()
            if on_copies_done:
                on_copies_done(len(targets))
        report.written += sum(future.result() for future, _ in in_flight)
    finally:
        # On a Ctrl-C (or a failed write) the writers finish the batch each holds, and the batches waiting for
        # them are dropped: writing those too wrote 500 copies, for seconds, after a Ctrl-C.
        pool.shutdown(cancel_futures=True)
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
    writer threads the bottleneck (cifake-mini's 80,000 copies: 14 s with it, 8 s without). One copy (a large
    image's) is encoded as it is: map_fn would first copy it into a TensorArray (570 MB at 190 MP)."""
    batch = tf.function(lambda copies: tf.map_fn(lambda image: tf.io.encode_jpeg(image, quality=quality), copies,
                                                 fn_output_signature=tf.string),
                        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)], autograph=False)

    def encode(copies: np.ndarray) -> tf.Tensor:
        return tf.io.encode_jpeg(copies[0], quality=quality)[None] if len(copies) == 1 else batch(copies)

    return encode


def _write_files(targets: Sequence[str], copies: np.ndarray, jpeg_quality: int, report: CopyReport) -> int:
    """Encodes each of ``copies`` (uint8 RGB images of one size) and writes it to its path in ``targets``
    (``files.write_new_files``); returns how many it wrote. Adds each path, with the sha256 of its bytes, to
    ``report.made`` once it holds its copy, or to ``report.in_the_way``."""
    encoded = _jpeg_encoder(jpeg_quality)(copies).numpy()
    wrote = write_new_files(list(zip(targets, encoded)))  # one wait on the disk for the batch
    for path, data, new in zip(targets, encoded, wrote):
        if not new:
            # The same bytes: this copy, from a run cut off before sources.csv recorded it (that run planned
            # these batches too: nothing was recorded since). Anything else is not a copy: a folder, a symlink, or
            # a named pipe, which is never opened (reading one waits for a writer: the run hung there).
            if not stat.S_ISREG(os.lstat(path).st_mode):
                report.in_the_way.append(path)
                continue
            with open(path, "rb") as stream:
                if stream.read() != data:
                    report.in_the_way.append(path)
                    continue
        report.made[path] = hashlib.sha256(data).hexdigest()  # atomic: the writer threads share the report
    return sum(wrote)


def _augmenter(augmentation: keras.Sequential | None, compile_some: bool
               ) -> Callable[[np.ndarray, Sequence[int], Sequence[bytes], bool], np.ndarray]:
    """``augment(images, counts, seeds, jit_compile)``: ``counts[i]`` copies of ``images[i]`` side by side, each
    augmented from its own seed, rounded to uint8 pixels; a copy of over ``BANDED_PIXELS`` a band of rows at a time
    (``_banded_copy``) where every layer can be so made or keeps uint8 pixels uint8.

    Each layer runs compiled: on TensorFlow as a graph, XLA-compiled for a batch with ``jit_compile`` when
    the layer can be; on JAX (which has no graph without XLA) jit-compiled whenever it can be.
    """
    layers = augmentation.layers if augmentation else []
    on_jax = keras.backend.backend() == "jax"
    plain = [_compiled(layer.transform_images, xla=on_jax and layer.supports_jit) for layer in layers]
    xla = [_compiled(layer.transform_images, xla=layer.supports_jit) if compile_some and not on_jax else function
           for layer, function in zip(layers, plain)]
    # Layers without transform_rows are made whole: the JPEG re-compression, whose uint8 pixels stay uint8.
    can_band = bool(layers) and all(hasattr(layer, "transform_rows") or isinstance(layer, RandomJpegQuality)
                                    for layer in layers)

    @functools.cache
    def band_function(index: int, rows: int, jit_compile: bool) -> Callable:
        layer = layers[index]
        return _compiled(lambda images, transformation, start: layer.transform_rows(images, transformation, start,
                                                                                    rows),
                         xla=layer.supports_jit and (on_jax or jit_compile))

    def augment(images: tf.Tensor, counts: Sequence[int], seeds: Sequence[bytes], jit_compile: bool) -> np.ndarray:
        if can_band and images.shape[1] * images.shape[2] > BANDED_PIXELS:
            whole, bands = xla if jit_compile else plain, functools.partial(band_function, jit_compile=jit_compile)
            images = images if keras.backend.backend() == "tensorflow" else images.numpy()
            copies = [_banded_copy(images[source:source + 1], copy_transformations(
                augmentation, images[source:source + 1], [seed]), layers, whole, bands)
                for source, seed in zip(np.repeat(np.arange(len(images)), counts), seeds)]
            return copies[0] if len(copies) == 1 else np.concatenate(copies)  # one copy: not copied again
        # exact: uint8 at native size, float32 from --size
        images = np.repeat(images.numpy(), counts, axis=0).astype(np.float32, copy=False)
        if layers:
            drawn = copy_transformations(augmentation, images, seeds)  # on the host, outside the compiled functions
            for transform, transformation in zip(xla if jit_compile else plain, drawn):
                images = transform(images, transformation)
        return _rounded_pixels(keras.ops.convert_to_numpy(images))

    return augment


def _banded_copy(pixels: np.ndarray, drawn: Sequence, layers: Sequence[keras.layers.Layer],
                 whole: Sequence[Callable], band_function: Callable[[int, int], Callable]) -> np.ndarray:
    """A copy of ``pixels`` (a batch of one image: uint8, or float32 from --size) by ``layers`` with its ``drawn``
    transformations, as a batch of one uint8 image: each layer's output ``BAND_PIXELS`` at a time, in bands of whole
    rows (``band_function(layer index, rows)``: its compiled ``transform_rows``) or, without ``transform_rows``,
    whole (``whole[index]``: the JPEG re-compression, uint8 pixels kept uint8). Between layers the image waits
    whole, as uint8 where that is exact (the values are whole numbers, or only layers that move whole pixels follow:
    those commute with the rounding), else as float32. Every number is the whole-image path's: each row is computed
    as there, and rounded as there (``_rounded_pixels``), both XLA-compiled, as a copy of over ``BANDED_PIXELS`` always
    is (over ``MIN_COMPILED_PIXELS``); uncompiled, TensorFlow's graph may round a band's floats apart in the last
    bits."""
    shape = tuple(pixels.shape)
    rows = max(1, min(shape[1], BAND_PIXELS // max(1, shape[2])))
    for index, (layer, transformation) in enumerate(zip(layers, drawn)):
        source = keras.ops.convert_to_tensor(pixels)  # once: a band reads it, not a copy of it
        if not hasattr(layer, "transform_rows"):
            pixels = whole[index](source, transformation)  # a tensor, which the next layer reads as it is
            continue
        rounded = all(later.moves_whole_pixels for later in layers[index + 1:])
        pixels = np.empty(shape, np.uint8 if rounded else np.float32)
        function = band_function(index, rows)
        for start in range(0, shape[1], rows):
            start = min(start, shape[1] - rows)  # the last band ends at the last row: one shape for every band
            band = keras.ops.convert_to_numpy(function(source, transformation,
                                                       keras.ops.convert_to_tensor(start, "int32")))
            pixels[:, start:start + rows] = band if band.dtype == pixels.dtype else np.clip(np.round(band), 0, 255)
        del source  # the layer's input, before the next layer's is made
    pixels = np.asarray(pixels)
    return pixels if pixels.dtype == np.uint8 else _rounded_pixels(pixels)


def _rounded_pixels(images: np.ndarray) -> np.ndarray:
    """``images`` rounded and clipped to uint8, ``ROUNDING_PIXELS`` at a time (the same values as at once)."""
    pixels = np.empty(images.shape, np.uint8)
    step = max(1, ROUNDING_PIXELS // max(1, images[0].size // images.shape[-1])) if len(images) else 1
    for start in range(0, len(images), step):
        # Clipped in place: np.clip's own new array made rounding cifake-mini's 80,000 copies take 0.9 s, not 0.16.
        rounded = np.round(images[start:start + step])
        pixels[start:start + step] = np.clip(rounded, 0, 255, out=rounded)
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

    def call(*args):  # images, transformation (and a band's first row)
        key = tuple((tuple(value.shape), str(value.dtype)) for value in tf.nest.flatten(args))
        if key not in by_shape:
            by_shape[key] = traced.get_concrete_function(*args)
        return by_shape[key](*args)

    return call


def _decoded(path: tf.Tensor, pil: tf.Tensor, image_size: int | None, max_pixels: int) -> tf.Tensor:
    """An image's pixels as its copies are made from them: as training decodes it (upright, RGB), and with
    ``image_size`` its centre square as the model sees it (squashing a wide image would show training another
    geometry)."""
    image = decode_rgb(path, pil, max_pixels=max_pixels)
    return image if image_size is None else resize_to_square(image, image_size)


def _decoded_batches(batches: Sequence[CopyBatch], image_size: int | None, max_pixels: int) -> tf.data.Dataset:
    """Elements ``(batch index, positions of its decoded images, images)``, one per batch of images of at most
    ``DECODED_AHEAD_PIXELS`` (``_decoded_alone`` gives the others): uint8 at native size (cast to float32 when the
    batch is augmented: waiting in tf.data's buffers, floats took four times the memory), float32 when resized to
    ``image_size``."""
    elements = [(batch_index, position, os.fsencode(source), batch.needs_pil[position])  # bytes: any name
                for batch_index, batch in enumerate(batches) if batch.pixels <= DECODED_AHEAD_PIXELS
                for position, source in enumerate(batch.sources)]
    batch_lengths = tf.constant([len(batch.sources) for batch in batches], tf.int64)

    # No autograph: these functions use Python control flow on Python values only (converting them
    # costs start-up time and gains nothing).
    plain = tf.autograph.experimental.do_not_convert

    @plain
    def decode(batch_index, position, path, pil):
        return batch_index, position, _decoded(path, pil, image_size, max_pixels)

    # (batch index, position in it, path, decode with Pillow) of every image, typed: there may be none
    dataset = tf.data.Dataset.from_tensor_slices(tuple(
        tf.constant([element[column] for element in elements], dtype)
        for column, dtype in enumerate((tf.int64, tf.int64, tf.string, tf.bool))))
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


def _decoded_alone(batches: Sequence[CopyBatch], image_size: int | None,
                   max_pixels: int) -> Iterator[tuple[int, np.ndarray, tf.Tensor]]:
    """``_decoded_batches``' elements of the batches of images of over ``DECODED_AHEAD_PIXELS``: decoded here, an
    image at a time, when its batch is wanted. An image that does not decode is left out, as there: TensorFlow's
    error, or Pillow's (``images.ImageDecodeError``), which tf.data turns into one of TensorFlow's but which comes
    here as it is (a phone photo stored turned, a JPEG over TensorFlow's limit, a 16-bit or transparent PNG)."""
    for batch_index, batch in enumerate(batches):
        if batch.pixels <= DECODED_AHEAD_PIXELS:
            continue
        positions, images = [], []
        for position, source in enumerate(batch.sources):
            try:
                images.append(_decoded(tf.constant(os.fsencode(source)), tf.constant(batch.needs_pil[position]),
                                       image_size, max_pixels))
            except (tf.errors.OpError, ImageDecodeError):
                continue
            positions.append(position)
        if images:
            yield batch_index, np.array(positions), _taken_as_batch(images)


def _taken_as_batch(images: list[tf.Tensor]) -> tf.Tensor:
    """``images`` as one batch (one image: itself, not a copy), the list emptied: a generator that yields the batch
    waits while its copies are made and written, and would hold the images as long."""
    batch = images[0][None] if len(images) == 1 else tf.stack(images)
    images.clear()
    return batch
