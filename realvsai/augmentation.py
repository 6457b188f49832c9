"""Data augmentation as Keras layers: one definition for training and for offline copies.

``build_augmentation(preset, seed)`` maps float32 RGB batches in 0..255 of any size to the same shape
and range and is an exact identity unless ``training=True``, so it can be the model's (saved) first block.
``detector`` keeps the pixel texture a real-vs-generated detector relies on (Wang et al. 2020).

The model's layers are written with ``keras.ops`` and ``keras.random`` (a ``SeedGenerator`` per layer), so
they run on every backend and import no TensorFlow. ``RandomJpegQuality`` is the exception: Keras has no
JPEG codec, so it calls TensorFlow and belongs to the tf.data input pipeline (``part="input"``).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from realvsai.config import PRESETS


def build_augmentation(preset: str, seed: int | None = None, part: str = "all") -> keras.Sequential | None:
    """The augmentation block for ``preset``, or None for ``"none"`` or a part the preset has no layer in.

    ``part``: ``"model"`` (the model's first block: ``keras.ops``, XLA-compiled), ``"input"`` (TensorFlow
    ops for training's tf.data pipeline, via ``augment_copies``) or ``"all"``, input first (offline copies).
    """
    if preset == "none":
        return None
    if preset == "classic":
        layers = [("model", RandomAffine)]  # its defaults are the notebook's ImageDataGenerator settings
    elif preset == "detector":
        # JPEG first, in the input pipeline (in the model it would turn XLA off for the whole step, and
        # Keras has no JPEG op for the other backends). Then blur (Wang et al. blur before compressing),
        # crop and flip, so the 8x8 JPEG grid lands at a random offset, as in images cropped after
        # compression. Wang et al. blur (sigma 0-3) and re-compress (quality 30-100) with probability
        # 0.5 or 0.1; on small images (CIFAKE is 32 px) the layers' defaults keep both milder and rarer.
        layers = [("input", RandomJpegQuality), ("model", RandomBlur),
                  ("model", lambda **kw: RandomCropPad(horizontal_flip=True, **kw))]
    else:
        raise ValueError(f"unknown augmentation preset {preset!r}; choose one of {', '.join(PRESETS)}")
    # float32 even under a mixed-precision policy: float16 would round pixel values above 128 to steps of 0.125.
    chosen = [make(seed=layer_seed(seed, index), dtype="float32") for index, (where, make) in enumerate(layers)
              if part in ("all", where)]
    return keras.Sequential(chosen, name="augmentation") if chosen else None


def layer_seed(seed: Any, key: int | str) -> int | None:
    """A random layer's own stable seed (a non-negative int32) from the run's ``seed`` (None: none), for the
    ``key``: a preset layer's index, or another layer's name. Layers that shared a seed would draw from one key."""
    digest = hashlib.sha256(f"realvsai-augmentation:{seed}:{key}".encode()).digest()
    return None if seed is None else int.from_bytes(digest[:4], "little") >> 1


def augment_copies(augmentation: keras.Sequential, images, seed):
    """``augmentation(images, training=True)`` inside training's tf.data map, every draw from ``seed`` alone.

    Args:
        seed: an int tensor of shape (2,), the batch's; the layers must be TensorFlow's (the ``"input"`` part).
    """
    fold_in = _tensorflow().random.experimental.stateless_fold_in
    images = _tensorflow().cast(images, "float32")
    return apply_transformations(augmentation.layers, images, [
        layer.get_random_transformation(images, fold_in(seed, index))
        for index, layer in enumerate(augmentation.layers)])


def copy_transformations(augmentation: keras.Sequential, images, seeds: Sequence[bytes]) -> list:
    """Each layer's random parameters for a batch of copies, row ``i`` drawn from ``seeds[i]`` alone: a copy
    depends on its own seed, never on the batch it is made in nor on the backend.

    A seed's draws are its SHAKE-256 output read as 24-bit numbers in [0, 1), the layers' in turn: 1 us a
    copy, where a NumPy generator per copy took 20 (a sixth of a 32 px run).
    """
    counts = [layer.num_draws for layer in augmentation.layers]
    words = np.frombuffer(b"".join(hashlib.shake_256(seed).digest(4 * sum(counts)) for seed in seeds), "<u4")
    draws = (words.reshape(len(seeds), sum(counts)) >> 8).astype("float32") / 2**24
    return [layer.transformation(images, layer_draws)
            for layer, layer_draws in zip(augmentation.layers, np.split(draws, np.cumsum(counts)[:-1], axis=1))]


def apply_transformations(layers: Sequence[keras.layers.Layer], images, transformations: Sequence):
    """Applies each layer's ``transformations`` to float32 ``images``, in order."""
    for layer, transformation in zip(layers, transformations):
        images = layer.transform_images(images, transformation)
    return images


def _tensorflow():
    """TensorFlow, imported only where a JPEG op or a tf.data seed needs it (the model's layers never do)."""
    import tensorflow as tf

    return tf


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


class _RandomImageLayer(keras.layers.Layer):
    """Draws ``num_draws`` numbers in [0, 1) per image (from a given seed, or the layer's own generator), makes
    them the image's parameters (``transformation``), then applies those (``transform_images``).

    A layer with ``transform_rows(images, transformation, start, rows)`` also gives output rows ``start`` to
    ``start + rows`` alone (``start`` may be a tensor, ``rows`` is a number), the numbers ``transform_images``
    gives there, from the whole ``images``, uint8 ones read as the floats they equal: the offline copies of a large
    image are made so, a band of rows at a time. ``moves_whole_pixels``: every output pixel is an input pixel, so
    the layer commutes with rounding to uint8.
    """

    config_names: tuple[str, ...] = ()
    num_draws: int = 0
    moves_whole_pixels = False

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=False):  # as Keras' GaussianNoise and Dropout: model(x) is inference
        images = ops.cast(images, self.compute_dtype)
        return self.transform_images(images, self.get_random_transformation(images)) if training else images

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_random_transformation(self, images, seed=None):
        """``transformation`` of ``(batch, num_draws)`` draws: from ``seed`` when given, else the layer's generator."""
        return self.transformation(images, keras.random.uniform(
            (ops.shape(images)[0], self.num_draws), seed=self.generator if seed is None else seed))

    def transformation(self, images, draws):
        """The parameters of each image of ``images`` from its row of ``draws``, ``(batch, num_draws)`` in [0, 1)."""
        raise NotImplementedError

    def get_config(self):
        return {**super().get_config(), "seed": self.seed, **{name: getattr(self, name) for name in self.config_names}}


@keras.saving.register_keras_serializable(package="realvsai")
class RandomAffine(_RandomImageLayer):
    """Rotation, shift, shear, zoom and flip composed into one affine map about the centre, resampled once
    (a chain of Keras's RandomRotation ... RandomZoom interpolates four times).

    Output pixel ``p`` reads ``c + R (H Z F (p - c) - t)``, ``c`` the centre: R rotates, ``t`` shifts
    the content, H shears (``x += s * y``), Z zooms each axis (above 1 shows more), F flips left-right.
    ``shear_factor`` 0.2 shears by up to ±0.2 of the height (about ±11°), as the notebook meant
    (ImageDataGenerator read it as 0.2 degrees). ``fill_mode`` is only ``"nearest"``.
    """

    config_names = ("rotation_degrees", "shift_fraction", "shear_factor", "zoom_fraction", "horizontal_flip",
                    "fill_mode")

    def __init__(self, rotation_degrees: float = 20.0, shift_fraction: float = 0.2, shear_factor: float = 0.2,
                 zoom_fraction: float = 0.2, horizontal_flip: bool = True, fill_mode: str = "nearest",
                 seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        _require(0.0 <= rotation_degrees <= 180.0, f"rotation_degrees must be in [0, 180], got {rotation_degrees}")
        _require(0.0 <= shift_fraction <= 1.0, f"shift_fraction must be in [0, 1], got {shift_fraction}")
        _require(shear_factor >= 0.0, f"shear_factor must be at least 0, got {shear_factor}")
        _require(0.0 <= zoom_fraction < 1.0, f"zoom_fraction must be in [0, 1), got {zoom_fraction}")
        _require(fill_mode == "nearest", f"fill_mode must be 'nearest', got {fill_mode!r}")
        self.rotation_degrees, self.shift_fraction = float(rotation_degrees), float(shift_fraction)
        self.shear_factor, self.zoom_fraction = float(shear_factor), float(zoom_fraction)
        self.horizontal_flip, self.fill_mode = bool(horizontal_flip), fill_mode

    num_draws = 7

    def transformation(self, images, draws):
        shape = ops.shape(images)
        # A range of 0 gives exactly 0 (a zoom of exactly 1), so a layer with only the flip on, or
        # only whole-pixel shifts, moves whole pixels.
        scale = ops.convert_to_tensor([self.rotation_degrees * math.pi / 180.0, self.shift_fraction,
                                       self.shift_fraction, self.shear_factor, self.zoom_fraction,
                                       self.zoom_fraction, 1.0], "float32")
        draws = (ops.convert_to_tensor(draws, "float32") * 2.0 - 1.0) * scale
        angle, shift_x, shift_y, shear, zoom_x, zoom_y, flip = ops.unstack(draws, num=7, axis=1)
        return {"angle": angle, "shift_x": shift_x * ops.cast(shape[2], "float32"),
                "shift_y": shift_y * ops.cast(shape[1], "float32"), "shear": shear,
                "zoom_x": 1.0 + zoom_x, "zoom_y": 1.0 + zoom_y,
                "flip": (flip < 0.0) if self.horizontal_flip else ops.zeros(ops.shape(flip), "bool")}

    def transform_images(self, images, transformation):
        return affine_resample(images, self.affine_maps(images, transformation))

    def transform_rows(self, images, transformation, start, rows):
        return affine_resample(images, self.affine_maps(images, transformation), start, rows)

    def affine_maps(self, images, transformation):
        """Each image's row [a0, a1, a2, b0, b1, b2, 0, 0] for ``affine_resample``; zoom is input pixels per output
        pixel."""
        shape = ops.shape(images)
        cos, sin = ops.cos(transformation["angle"]), ops.sin(transformation["angle"])
        zoom_x = ops.where(transformation["flip"], -transformation["zoom_x"], transformation["zoom_x"])  # F, then Z
        zoom_y, shear = transformation["zoom_y"], transformation["shear"]
        shift_x, shift_y = transformation["shift_x"], transformation["shift_y"]
        # Pixel centres are whole numbers, so the image's centre is ((width - 1) / 2, (height - 1) / 2).
        center_x = (ops.cast(shape[2], "float32") - 1.0) / 2.0
        center_y = (ops.cast(shape[1], "float32") - 1.0) / 2.0
        # L = R H Z F: [[cos, -sin], [sin, cos]] [[1, s], [0, 1]] [[zx, 0], [0, zy]] with the flip in zx.
        a0, a1 = cos * zoom_x, (cos * shear - sin) * zoom_y
        b0, b1 = sin * zoom_x, (sin * shear + cos) * zoom_y
        # Offset c - L c - R t: the map turns about the centre and moves the content by t.
        a2 = center_x - a0 * center_x - a1 * center_y - (cos * shift_x - sin * shift_y)
        b2 = center_y - b0 * center_x - b1 * center_y - (sin * shift_x + cos * shift_y)
        zeros = ops.zeros_like(a0)
        return ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def affine_resample(images, transforms, start=None, count=None):
    """``keras.ops.image.affine_transform(images, transforms, "bilinear", "nearest")`` as gathers; with ``start``,
    only its output rows ``start`` to ``start + count``, the same numbers (``images`` may be uint8: its pixels are
    read as the floats they equal).

    Not the built-in: on TensorFlow it runs ``ImageProjectiveTransformV3``, which has no XLA kernel
    (measured with Keras 3.15 / TF 2.21: a jit_compile=True model holding it fails to compile), and
    Keras XLA-compiles the training step (``--xla``, and "auto" on one GPU).
    """
    batch, height, width, channels = ops.shape(images)
    rows = ops.cast(ops.arange(height) if start is None else start + ops.arange(count), "float32")[None, :, None]
    columns = ops.cast(ops.arange(width), "float32")[None, None, :]
    t = ops.cast(transforms, "float32")[:, :, None, None]
    x = ops.clip(t[:, 0] * columns + t[:, 1] * rows + t[:, 2], 0.0, ops.cast(width - 1, "float32"))
    y = ops.clip(t[:, 3] * columns + t[:, 4] * rows + t[:, 5], 0.0, ops.cast(height - 1, "float32"))
    x_floor, y_floor = ops.floor(x), ops.floor(y)
    x_weight, y_weight = (x - x_floor)[..., None], (y - y_floor)[..., None]
    # The clamped points lie inside, so a neighbour past the last row or column has weight 0: clamp it too.
    left, top = ops.cast(x_floor, "int32"), ops.cast(y_floor, "int32")
    right, bottom = ops.minimum(left + 1, width - 1), ops.minimum(top + 1, height - 1)
    pixels = ops.reshape(images, (-1, channels))
    first_row = ops.arange(batch)[:, None, None] * height

    def row(index):  # one row of neighbours, interpolated along x
        first = (first_row + index) * width
        return ops.cast(ops.take(pixels, first + left, axis=0), "float32") * (1.0 - x_weight) + ops.cast(
            ops.take(pixels, first + right, axis=0), "float32") * x_weight

    return row(top) * (1.0 - y_weight) + row(bottom) * y_weight


def _reflect(index, length):
    """``index`` (at most ``length - 1`` outside ``[0, length)``) mirrored into it, as ``np.pad(mode="reflect")``."""
    index = ops.abs(index)
    return ops.where(index > length - 1, 2 * (length - 1) - index, index)


@keras.saving.register_keras_serializable(package="realvsai")
class RandomCropPad(_RandomImageLayer):
    """Pads each side by ``pad_fraction`` of the image side (reflecting), crops back at random, may flip:
    whole pixels move, never interpolated, so the texture a detector looks at survives."""

    config_names = ("pad_fraction", "horizontal_flip")
    moves_whole_pixels = True

    def __init__(self, pad_fraction: float = 0.125, horizontal_flip: bool = False, seed: int | None = None,
                 **kwargs):
        super().__init__(seed=seed, **kwargs)
        _require(0.0 <= pad_fraction < 1.0, f"pad_fraction must be in [0, 1), got {pad_fraction}")
        self.pad_fraction, self.horizontal_flip = float(pad_fraction), bool(horizontal_flip)

    def _pads(self, images):
        # floor(side * fraction) < side, so one reflection always lands inside the image.
        _, height, width, _ = ops.shape(images)
        return [ops.cast(ops.floor(ops.cast(side, "float32") * self.pad_fraction), "int32") for side in (height, width)]

    num_draws = 3

    def transformation(self, images, draws):
        pad_height, pad_width = self._pads(images)
        draws = ops.convert_to_tensor(draws, "float32")
        # floor(u * (2p + 1)) is uniform over the 2p + 1 whole-pixel offsets 0 .. 2p.
        offset_y = ops.cast(ops.floor(draws[:, 0] * ops.cast(2 * pad_height + 1, "float32")), "int32")
        offset_x = ops.cast(ops.floor(draws[:, 1] * ops.cast(2 * pad_width + 1, "float32")), "int32")
        flip = (draws[:, 2] < 0.5) if self.horizontal_flip else ops.zeros(ops.shape(draws[:, 2]), "bool")
        return {"offset_y": ops.minimum(offset_y, 2 * pad_height), "offset_x": ops.minimum(offset_x, 2 * pad_width),
                "flip": flip}

    def transform_images(self, images, transformation):
        return self.transform_rows(images, transformation, 0, ops.shape(images)[1])

    def transform_rows(self, images, transformation, start, rows):
        # The crop of the padded image as one gather: each output pixel's source row and column,
        # reflected back into the image, instead of materialising the padded batch.
        batch, height, width, channels = ops.shape(images)
        pad_height, pad_width = self._pads(images)
        sources = _reflect(transformation["offset_y"][:, None] - pad_height + (start + ops.arange(rows))[None, :],
                           height)
        columns = ops.where(transformation["flip"][:, None], width - 1 - ops.arange(width)[None, :],
                            ops.arange(width)[None, :])
        columns = _reflect(transformation["offset_x"][:, None] - pad_width + columns, width)
        flat = (ops.arange(batch)[:, None, None] * height + sources[:, :, None]) * width + columns[:, None, :]
        return ops.take(ops.reshape(images, (-1, channels)), flat, axis=0)


@keras.saving.register_keras_serializable(package="realvsai")
class RandomBlur(_RandomImageLayer):
    """Isotropic Gaussian blur, a ``sigma`` in ``sigma_range`` (pixels) drawn per image, on a ``probability`` share.

    Not ``keras.layers.RandomGaussianBlur``: that draws one sigma per *batch*.
    """

    config_names = ("sigma_range", "probability")

    def __init__(self, sigma_range: Sequence[float] = (0.0, 1.0), probability: float = 0.1,
                 seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        low, high = (float(value) for value in sigma_range)
        _require(0.0 <= low <= high, f"sigma_range must be (low, high) with 0 <= low <= high, got {sigma_range}")
        _require(0.0 <= probability <= 1.0, f"probability must be in [0, 1], got {probability}")
        self.sigma_range, self.probability = (low, high), float(probability)
        self.radius = max(1, math.ceil(3.0 * high))  # three sigmas hold 99.7% of the kernel's weight

    num_draws = 2

    def transformation(self, images, draws):
        draws = ops.convert_to_tensor(draws, "float32")
        low, high = self.sigma_range
        # A sigma of 0 means "not blurred"; the floor keeps a drawn sigma of exactly 0 from dividing by 0.
        sigma = ops.maximum(low + (high - low) * draws[:, 1], 1e-3)
        return {"sigma": ops.where(draws[:, 0] < self.probability, sigma, ops.zeros_like(sigma))}

    def transform_images(self, images, transformation):
        return self._blurred(images, transformation, 0, ops.shape(images)[1], images)

    def transform_rows(self, images, transformation, start, rows):
        batch, _, width, channels = ops.shape(images)
        return self._blurred(images, transformation, start, rows,
                             ops.slice(images, (0, start, 0, 0), (batch, rows, width, channels)))

    def _blurred(self, images, transformation, start, rows, kept):
        """Output rows ``start`` to ``start + rows``; ``kept``: those rows of ``images``, for the images not blurred."""
        # Every image is blurred and only the chosen ones are kept, the others returned untouched: a fixed
        # shape for XLA and JAX (a gather of the chosen ones has a data-dependent size).
        sigma = ops.cast(transformation["sigma"], self.compute_dtype)
        offsets = ops.cast(ops.arange(-self.radius, self.radius + 1), self.compute_dtype)[None, :]
        weights = ops.exp(-0.5 * ops.square(offsets / ops.maximum(sigma, 1e-3)[:, None]))
        weights = weights / ops.sum(weights, axis=1, keepdims=True)
        blurred = images
        for axis, first, length in ((1, start, rows), (2, 0, ops.shape(images)[2])):
            # Indices clamped into the image: edge padding that, unlike a reflection, works for images
            # smaller than the kernel.
            indices = ops.clip(first + ops.arange(-self.radius, length + self.radius), 0, ops.shape(images)[axis] - 1)
            padded = ops.cast(ops.take(blurred, indices, axis=axis), self.compute_dtype)
            blurred = sum(weights[:, tap, None, None, None]
                          * (padded[:, tap:tap + length] if axis == 1 else padded[:, :, tap:tap + length])
                          for tap in range(2 * self.radius + 1))
        return ops.where((sigma > 0.0)[:, None, None, None], blurred, ops.cast(kept, self.compute_dtype))


@keras.saving.register_keras_serializable(package="realvsai")
class RandomJpegQuality(_RandomImageLayer):
    """Re-compresses a ``probability`` share of the images as JPEG at a quality in ``quality_range`` (inclusive).

    Pixels are rounded to uint8 first, as in any saved JPEG. Keras has no JPEG codec, so this layer calls
    TensorFlow and runs in the tf.data input pipeline on the CPU (``build_augmentation(part="input")``);
    its JPEG op has no XLA kernel either: ``supports_jit = False`` keeps Keras from compiling a model holding it.
    """

    config_names = ("quality_range", "probability")

    def __init__(self, quality_range: Sequence[int] = (65, 100), probability: float = 0.1,
                 seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        low, high = (int(value) for value in quality_range)
        _require(0 <= low <= high <= 100,
                 f"quality_range must be (low, high) with 0 <= low <= high <= 100, got {quality_range}")
        _require(0.0 <= probability <= 1.0, f"probability must be in [0, 1], got {probability}")
        self.quality_range, self.probability = (low, high), float(probability)
        self.supports_jit = False

    num_draws = 2

    def get_random_transformation(self, images, seed=None):
        tf = _tensorflow()
        seed = self.generator.next() if seed is None else seed
        seed = [seed, 0] if isinstance(seed, int) else seed
        return self.transformation(images, tf.random.stateless_uniform((tf.shape(images)[0], self.num_draws),
                                                                       seed=tf.cast(seed, tf.int64)))

    def transformation(self, images, draws):
        tf = _tensorflow()
        draws = tf.convert_to_tensor(draws, tf.float32)
        low, high = self.quality_range
        quality = tf.cast(tf.floor(low + (high + 1 - low) * draws[:, 1]), tf.int32)
        return {"apply": draws[:, 0] < self.probability, "quality": tf.minimum(quality, high)}

    def transform_images(self, images, transformation):
        """uint8 ``images`` give uint8 ones (the same numbers: a copy's pixels wait as uint8), others float32."""
        tf = _tensorflow()
        dtype = "uint8" if keras.backend.standardize_dtype(images.dtype) == "uint8" else self.compute_dtype
        compressed = _jpeg_recompress()(tf.cast(images, dtype), transformation["apply"], transformation["quality"])
        if tf.executing_eagerly() and keras.backend.backend() != "tensorflow":
            return ops.convert_to_tensor(compressed.numpy())  # outside tf.data: the backend's tensors again
        return compressed


@functools.cache
def _jpeg_recompress():
    """``recompress(images, apply, quality)`` as one TensorFlow graph: called eagerly (offline copies), a
    ``map_fn`` would otherwise run Python for every image (a detector run took 27 s instead of 13)."""
    tf = _tensorflow()

    def one_image(args):
        image, apply, quality = args
        pixels = image if image.dtype == tf.uint8 else tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
        return tf.cond(apply, lambda: tf.cast(tf.image.adjust_jpeg_quality(pixels, quality), image.dtype),
                       lambda: image)

    @tf.function(autograph=False)
    def recompress(images, apply, quality):
        if images.shape[0] == 1:  # one image (a large copy's): map_fn would hold two more copies of it
            return one_image((images[0], apply[0], quality[0]))[None]
        compressed = tf.map_fn(one_image, (images, apply, quality), fn_output_signature=images.dtype)
        return tf.ensure_shape(compressed, images.shape)

    return recompress
