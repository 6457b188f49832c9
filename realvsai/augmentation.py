"""Data augmentation as Keras preprocessing layers: one definition for training and for offline copies.

``build_augmentation(preset, seed)`` returns a ``keras.Sequential(name="augmentation")`` that takes
float32 RGB batches in 0..255 of any size and returns the same shape and range. It augments only
with ``training=True`` and is an exact identity otherwise, so it can be the model's first block
and be saved with it (HDF5 included). Presets:

- ``classic``: ImageDataGenerator's rotation 20, shifts 0.2, shear 0.2, zoom 0.2, horizontal flip
  and nearest fill, composed into one affine map per image and resampled once (``RandomAffine``).
- ``detector``: what keeps the pixel texture a real-vs-generated detector relies on (Wang et al.
  2020, "CNN-generated images are surprisingly easy to spot... for now"): rare JPEG re-compression
  and mild blur, then crop-and-pad by whole pixels and a horizontal flip (no resampling).
- ``none``: no augmentation (``build_augmentation`` returns None).

A preset has two parts: its ``"input"`` part (the JPEG step: TensorFlow's JPEG codec has no XLA
kernel) runs in training's ``tf.data`` pipeline through ``augment_copies``, with a seed per batch;
its ``"model"`` part is the model's first block, which XLA compiles. Offline copies
(``realvsai.offline_augmentation``) get both parts, in order (``part="all"``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import keras
import tensorflow as tf

from realvsai.config import PRESETS

PARTS = ("all", "input", "model")
FILL_MODES = ("nearest", "constant")  # what affine_resample implements; the presets use "nearest"


def layer_seed(seed: int | None, index: int) -> int | None:
    """A distinct, stable seed for the ``index``-th layer, derived from the preset's ``seed``."""
    if seed is None:
        return None
    digest = hashlib.sha256(f"realvsai-augmentation:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") >> 1  # keras wants a non-negative int32


def build_augmentation(preset: str, seed: int | None = None, part: str = "all") -> keras.Sequential | None:
    """The augmentation block for ``preset``: a ``keras.Sequential(name="augmentation")``, or None.

    Args:
        preset: one of ``PRESETS``.
        seed: makes every layer's random stream repeatable (each layer gets its own seed from it,
            the same whichever part is built).
        part: ``"model"`` for the layers inside the model (all of them XLA-compile), ``"input"`` for
            those that run in the tf.data input pipeline, ``"all"`` for both, input first (offline copies).

    Returns:
        The layers, or None for ``"none"`` or a part the preset has no layer in. Call them with
        ``training=True`` to augment.

    Raises:
        ValueError: for an unknown preset or part.
    """
    if part not in PARTS:
        raise ValueError(f"unknown augmentation part {part!r}; choose one of {', '.join(PARTS)}")
    if preset == "none":
        return None
    if preset == "classic":
        # The layer's defaults are the notebook's ImageDataGenerator settings (see RandomAffine).
        layers = [("model", RandomAffine)]
    elif preset == "detector":
        # JPEG first, in the input pipeline: inside the model it would turn XLA off for the whole
        # training step and encode one image at a time on the CPU. Then blur (Wang et al. blur
        # before compressing), crop and flip, so the 8x8 JPEG grid ends up at a random offset, as
        # it does in images cropped after compression. Wang et al. blur (sigma 0-3) and re-compress
        # (quality 30-100) with probability 0.5 or 0.1; on small images (CIFAKE is 32 px, JPEG
        # blocks are 8 px) the layers' defaults keep both milder and rarer.
        layers = [("input", RandomJpegQuality), ("model", RandomBlur),
                  ("model", lambda **kw: RandomCropPad(horizontal_flip=True, **kw))]
    else:
        raise ValueError(f"unknown augmentation preset {preset!r}; choose one of {', '.join(PRESETS)}")
    # float32 even under a mixed-precision policy: the contract is 0..255 float32 out, and float16
    # would round pixel values above 128 to steps of 0.125.
    chosen = [make(seed=layer_seed(seed, index), dtype="float32") for index, (where, make) in enumerate(layers)
              if part in ("all", where)]
    return keras.Sequential(chosen, name="augmentation") if chosen else None


def augment_copies(augmentation: keras.Sequential, images, seed) -> tf.Tensor:
    """Augments a batch with randomness drawn only from ``seed`` (an int32/int64 tensor of shape (2,)).

    Runs the layers of ``augmentation`` in training mode, like ``augmentation(images, training=True)``,
    but without touching their own random state: the output depends only on ``images`` and ``seed``,
    so it is the same in any order and under any parallelism, e.g. inside ``tf.data.Dataset.map``.
    """
    images = tf.cast(images, tf.float32)
    return apply_transformations(augmentation.layers, images, random_transformations(augmentation, images, seed))


def random_transformations(augmentation: keras.Sequential, images, seed) -> list:
    """Each layer's random parameters for ``images``, drawn only from ``seed`` (see ``augment_copies``).

    The draws depend on the batch's shape alone, which no layer changes, so they can all be made
    before any pixel moves, outside a function that XLA compiles (XLA's random numbers differ).
    """
    return [layer.get_random_transformation(images, tf.random.experimental.stateless_fold_in(seed, index))
            for index, layer in enumerate(augmentation.layers)]


def apply_transformations(layers: Sequence[keras.layers.Layer], images, transformations: Sequence) -> tf.Tensor:
    """Applies each layer's ``transformations`` (from ``random_transformations``) to float32 ``images``, in order."""
    for layer, transformation in zip(layers, transformations):
        images = layer.transform_images(images, transformation)
    return images


class _RandomImageLayer(keras.layers.Layer):
    """Base of the project's augmentation layers: draw each image's random parameters, then apply them.

    ``get_random_transformation(images, seed)`` draws from a seed tensor (``augment_copies`` passes
    its own, so offline copies depend on nothing else) or, without one, from the layer's
    ``keras.random.SeedGenerator``; ``transform_images`` applies the draws. Every draw goes through
    ``_uniform``, one stateless call per layer. As with Keras's image layers, ``training`` defaults
    to True: pass ``training=False`` for the identity.
    """

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        images = tf.cast(images, self.compute_dtype)
        if not training:
            return images
        return self.transform_images(images, self.get_random_transformation(images))

    def _uniform(self, images, count: int, seed=None):
        """``(batch, count)`` floats in [0, 1), from ``seed`` or else the layer's own generator."""
        seed = self.generator.next() if seed is None else seed
        return tf.random.stateless_uniform((tf.shape(images)[0], count), seed=tf.cast(seed, tf.int64))

    def get_random_transformation(self, images, seed=None):
        raise NotImplementedError

    def transform_images(self, images, transformation):
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["seed"] = self.seed
        return config


@keras.saving.register_keras_serializable(package="realvsai")
class RandomAffine(_RandomImageLayer):
    """Rotation, shift, shear, zoom and horizontal flip composed into one affine map, resampled once.

    ImageDataGenerator's way: each image draws its own parameters, they are multiplied into one 3x3
    matrix about the image centre, and the pixels are interpolated once (bilinear), where a chain
    of RandomRotation, RandomTranslation, RandomShear and RandomZoom interpolates four times: four
    times the work and four blurs. The order is ImageDataGenerator's: with ``p`` an output pixel
    and ``c`` the centre, the pixel read is ``c + R (H Z F (p - c) - t)``; R rotates, ``t`` is the
    shift (how far the content moves, in pixels), H shears along x (``x += s * y``), Z zooms each
    axis by its own factor (above 1 shows more of the image, smaller), F flips left-right. The
    defaults are the original notebook's ImageDataGenerator parameters.

    ``shear_factor``: ImageDataGenerator read ``shear_range=0.2`` as an angle in *degrees* (±0.2°, a
    shift of 0.1 px across a 32 px image: no visible shear, only a resampling). The 0.2 people write
    reads like the fraction other libraries use, so here it shears along x by a factor of up to
    ±0.2 of the height (about ±11°), as ImageDataGenerator's single-axis shear was meant to.

    Args:
        rotation_degrees: the angle is drawn from ``[-rotation_degrees, rotation_degrees]``.
        shift_fraction: shifts are drawn up to this fraction of the width (x) and height (y).
        shear_factor: ``s`` is drawn from ``[-shear_factor, shear_factor]`` (0.2 is about 11 degrees).
        zoom_fraction: each axis's factor is drawn from ``[1 - zoom_fraction, 1 + zoom_fraction]``.
        horizontal_flip: flip half of the images left-right.
        fill_mode: how pixels from outside the image are filled, one of ``FILL_MODES``.
        seed: seed of the layer's random stream.
    """

    def __init__(self, rotation_degrees: float = 20.0, shift_fraction: float = 0.2, shear_factor: float = 0.2,
                 zoom_fraction: float = 0.2, horizontal_flip: bool = True, fill_mode: str = "nearest",
                 seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if not 0.0 <= rotation_degrees <= 180.0:
            raise ValueError(f"rotation_degrees must be in [0, 180], got {rotation_degrees}")
        if not 0.0 <= shift_fraction <= 1.0:
            raise ValueError(f"shift_fraction must be in [0, 1], got {shift_fraction}")
        if not shear_factor >= 0.0:
            raise ValueError(f"shear_factor must be at least 0, got {shear_factor}")
        if not 0.0 <= zoom_fraction < 1.0:
            raise ValueError(f"zoom_fraction must be in [0, 1), got {zoom_fraction}")
        if fill_mode not in FILL_MODES:
            raise ValueError(f"fill_mode must be one of {', '.join(FILL_MODES)}, got {fill_mode!r}")
        self.rotation_degrees = float(rotation_degrees)
        self.shift_fraction = float(shift_fraction)
        self.shear_factor = float(shear_factor)
        self.zoom_fraction = float(zoom_fraction)
        self.horizontal_flip = bool(horizontal_flip)
        self.fill_mode = fill_mode

    def get_random_transformation(self, images, seed=None):
        shape = tf.shape(images)
        # One draw of 7 numbers per image, scaled to the ranges. A range of 0 gives exactly 0 (a zoom
        # of exactly 1), so a layer with only the flip on, or only whole-pixel shifts, moves whole pixels.
        scale = [self.rotation_degrees * math.pi / 180.0, self.shift_fraction, self.shift_fraction,
                 self.shear_factor, self.zoom_fraction, self.zoom_fraction, 1.0]
        draws = (self._uniform(images, 7, seed) * 2.0 - 1.0) * scale
        angle, shift_x, shift_y, shear, zoom_x, zoom_y, flip = tf.unstack(draws, num=7, axis=1)
        return {
            "angle": angle,
            "shift_x": shift_x * tf.cast(shape[2], tf.float32),
            "shift_y": shift_y * tf.cast(shape[1], tf.float32),
            "shear": shear,
            "zoom_x": 1.0 + zoom_x,
            "zoom_y": 1.0 + zoom_y,
            "flip": (flip < 0.0) if self.horizontal_flip else tf.zeros_like(flip, tf.bool),
        }

    def transform_images(self, images, transformation):
        # Gathers, not keras.ops.image.affine_transform: TensorFlow's resampling op behind it has no
        # XLA kernel, and Keras XLA-compiles the model's training step ("auto"); the gathers give the
        # same numbers everywhere (tested against that op).
        images = tf.cast(images, self.compute_dtype)
        shape = tf.shape(images)
        return affine_resample(images, affine_transforms(transformation, shape[1], shape[2]), self.fill_mode)

    def get_config(self):
        config = super().get_config()
        config.update(rotation_degrees=self.rotation_degrees, shift_fraction=self.shift_fraction,
                      shear_factor=self.shear_factor, zoom_fraction=self.zoom_fraction,
                      horizontal_flip=self.horizontal_flip, fill_mode=self.fill_mode)
        return config


def affine_transforms(transformation: dict, height, width) -> tf.Tensor:
    """The ``(batch, 8)`` transforms of ``keras.ops.image.affine_transform`` for ``RandomAffine``'s parameters.

    Each row ``[a0, a1, a2, b0, b1, b2, 0, 0]`` maps an OUTPUT pixel ``(x, y)`` (column, row) to the
    INPUT point ``(a0 x + a1 y + a2, b0 x + b1 y + b2)`` it is read from; pixel centres are whole
    numbers, so the centre of the image is ``((width - 1) / 2, (height - 1) / 2)``.

    Args:
        transformation: per-image ``angle`` (radians), ``shift_x`` and ``shift_y`` (pixels the content
            moves), ``shear``, ``zoom_x``, ``zoom_y`` (input pixels per output pixel) and ``flip`` (bool).
        height, width: the images' size (Python or tensor scalars).
    """
    cos, sin = tf.cos(transformation["angle"]), tf.sin(transformation["angle"])
    zoom_x = tf.where(transformation["flip"], -transformation["zoom_x"], transformation["zoom_x"])  # F, then Z
    zoom_y, shear = transformation["zoom_y"], transformation["shear"]
    shift_x, shift_y = transformation["shift_x"], transformation["shift_y"]
    center_x = (tf.cast(width, tf.float32) - 1.0) / 2.0
    center_y = (tf.cast(height, tf.float32) - 1.0) / 2.0
    # L = R H Z F: [[cos, -sin], [sin, cos]] [[1, s], [0, 1]] [[zx, 0], [0, zy]] with the flip in zx.
    a0, a1 = cos * zoom_x, (cos * shear - sin) * zoom_y
    b0, b1 = sin * zoom_x, (sin * shear + cos) * zoom_y
    # Offset c - L c - R t: the map turns about the centre and moves the content by t.
    a2 = center_x - a0 * center_x - a1 * center_y - (cos * shift_x - sin * shift_y)
    b2 = center_y - b0 * center_x - b1 * center_y - (sin * shift_x + cos * shift_y)
    zeros = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def affine_resample(images, transforms, fill_mode: str = "nearest") -> tf.Tensor:
    """``keras.ops.image.affine_transform(images, transforms, "bilinear", fill_mode)`` as gathers XLA compiles.

    The same numbers as TensorFlow's ``ImageProjectiveTransformV3`` (the op Keras calls) with a fill
    value of 0: each output pixel ``(x, y)`` reads the input point ``(a0 x + a1 y + a2, b0 x + b1 y
    + b2)``, moved into the image by ``fill_mode`` as that op moves it, and interpolates its four
    neighbours; a neighbour outside the image counts as 0 (only "constant" gives it a weight).

    Args:
        images: ``(batch, height, width, channels)`` floats.
        transforms: ``(batch, 8)`` rows ``[a0, a1, a2, b0, b1, b2, 0, 0]`` (see ``affine_transforms``).
        fill_mode: one of ``FILL_MODES``.
    """
    shape = tf.shape(images)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    rows = tf.cast(tf.range(height), tf.float32)[None, :, None]
    columns = tf.cast(tf.range(width), tf.float32)[None, None, :]
    t = tf.cast(transforms, tf.float32)[:, :, None, None]
    x = _map_coordinate(t[:, 0] * columns + t[:, 1] * rows + t[:, 2], width, fill_mode)
    y = _map_coordinate(t[:, 3] * columns + t[:, 4] * rows + t[:, 5], height, fill_mode)
    x_floor, y_floor = tf.floor(x), tf.floor(y)
    x_weight, y_weight = x - x_floor, y - y_floor
    left, top = tf.cast(x_floor, tf.int32), tf.cast(y_floor, tf.int32)

    def inside(index, length):
        return tf.cast((index >= 0) & (index < length), tf.float32)

    # Each neighbour's weight, 0 where it lies outside the image; the indices are then clamped only
    # to keep the gathers in bounds.
    column_weights = ((1.0 - x_weight) * inside(left, width), x_weight * inside(left + 1, width))
    row_weights = ((1.0 - y_weight) * inside(top, height), y_weight * inside(top + 1, height))
    column_indices = (tf.clip_by_value(left, 0, width - 1), tf.clip_by_value(left + 1, 0, width - 1))
    first_row = tf.range(batch)[:, None, None] * height
    row_indices = (first_row + tf.clip_by_value(top, 0, height - 1),
                   first_row + tf.clip_by_value(top + 1, 0, height - 1))
    pixels = tf.reshape(images, [-1, channels])
    output = 0.0
    for row_index, row_weight in zip(row_indices, row_weights):
        for column_index, column_weight in zip(column_indices, column_weights):
            weight = tf.cast(row_weight * column_weight, images.dtype)[..., None]
            output += tf.gather(pixels, row_index * width + column_index) * weight
    return output


def _map_coordinate(coordinate, length, fill_mode: str):
    """Moves sampling coordinates into the image as ``ImageProjectiveTransformV3`` does ("constant": not at all)."""
    if fill_mode == "constant":
        return coordinate
    return tf.clip_by_value(coordinate, 0.0, tf.cast(length, tf.float32) - 1.0)  # nearest: ...aaa|abcd|ddd...


@keras.saving.register_keras_serializable(package="realvsai")
class RandomCropPad(_RandomImageLayer):
    """Pads each side by ``pad_fraction`` of the image side (reflecting), crops back at random, may flip.

    The shift is a whole number of pixels in each direction (0 to twice the pad), and the flip
    mirrors whole columns, so pixels are moved, never interpolated: the texture a detector looks at
    survives unchanged.

    Args:
        pad_fraction: padding per side as a fraction of the height (rows) and width (columns).
        horizontal_flip: also flip half of the images left-right.
        seed: seed of the layer's random stream.
    """

    def __init__(self, pad_fraction: float = 0.125, horizontal_flip: bool = False, seed: int | None = None,
                 **kwargs):
        super().__init__(seed=seed, **kwargs)
        if not 0.0 <= pad_fraction < 1.0:
            raise ValueError(f"pad_fraction must be in [0, 1), got {pad_fraction}")
        self.pad_fraction = float(pad_fraction)
        self.horizontal_flip = bool(horizontal_flip)

    def _pads(self, images):
        shape = tf.shape(images)
        # floor(side * fraction) < side, so REFLECT padding (which needs pad < side) always works.
        pad_height = tf.cast(tf.floor(tf.cast(shape[1], tf.float32) * self.pad_fraction), tf.int32)
        pad_width = tf.cast(tf.floor(tf.cast(shape[2], tf.float32) * self.pad_fraction), tf.int32)
        return pad_height, pad_width

    def get_random_transformation(self, images, seed=None):
        pad_height, pad_width = self._pads(images)
        draws = self._uniform(images, 3, seed)
        # floor(u * (2p + 1)) is uniform over the 2p + 1 whole-pixel offsets 0 .. 2p.
        offset_y = tf.cast(tf.floor(draws[:, 0] * tf.cast(2 * pad_height + 1, tf.float32)), tf.int32)
        offset_x = tf.cast(tf.floor(draws[:, 1] * tf.cast(2 * pad_width + 1, tf.float32)), tf.int32)
        flip = (draws[:, 2] < 0.5) if self.horizontal_flip else tf.zeros_like(draws[:, 2], tf.bool)
        return {"offset_y": tf.minimum(offset_y, 2 * pad_height), "offset_x": tf.minimum(offset_x, 2 * pad_width),
                "flip": flip}

    def transform_images(self, images, transformation):
        images = tf.cast(images, self.compute_dtype)
        shape = tf.shape(images)
        pad_height, pad_width = self._pads(images)
        padded = tf.pad(images, [[0, 0], [pad_height, pad_height], [pad_width, pad_width], [0, 0]], mode="REFLECT")
        rows = transformation["offset_y"][:, None] + tf.range(shape[1])[None, :]
        columns = tf.where(transformation["flip"][:, None], tf.range(shape[2] - 1, -1, -1)[None, :],
                           tf.range(shape[2])[None, :])
        columns = transformation["offset_x"][:, None] + columns
        cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
        cropped = tf.gather(cropped, columns, axis=2, batch_dims=1)
        return tf.ensure_shape(cropped, images.shape)

    def get_config(self):
        config = super().get_config()
        config.update(pad_fraction=self.pad_fraction, horizontal_flip=self.horizontal_flip)
        return config


@keras.saving.register_keras_serializable(package="realvsai")
class RandomBlur(_RandomImageLayer):
    """Isotropic Gaussian blur with a sigma drawn per image, applied to a random share of the images.

    ``keras.layers.RandomGaussianBlur`` is not used: it draws one sigma per *batch* (and separate
    ones for x and y), and its ``factor`` is itself a random probability. Here every image gets its
    own ``sigma`` in ``sigma_range`` with probability ``probability``; the others pass unchanged.
    The blur is separable, as weighted sums of whole-pixel shifts (edges repeated), which runs on
    any device, inside ``tf.data`` and under XLA, for any image size.

    Args:
        sigma_range: (low, high) standard deviation in pixels.
        probability: share of images that are blurred.
        seed: seed of the layer's random stream.
    """

    def __init__(self, sigma_range: Sequence[float] = (0.0, 1.0), probability: float = 0.1,
                 seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        low, high = (float(value) for value in sigma_range)
        if not 0.0 <= low <= high:
            raise ValueError(f"sigma_range must be (low, high) with 0 <= low <= high, got {sigma_range}")
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {probability}")
        self.sigma_range = (low, high)
        self.probability = float(probability)
        self.radius = max(1, math.ceil(3.0 * high))  # three sigmas hold 99.7% of the kernel's weight

    def get_random_transformation(self, images, seed=None):
        draws = self._uniform(images, 2, seed)
        low, high = self.sigma_range
        # A sigma of 0 means "not blurred"; the floor keeps a drawn sigma of exactly 0 from dividing by 0.
        sigma = tf.maximum(low + (high - low) * draws[:, 1], 1e-3)
        return {"sigma": tf.where(draws[:, 0] < self.probability, sigma, tf.zeros_like(sigma))}

    def transform_images(self, images, transformation):
        images = tf.cast(images, self.compute_dtype)
        # Only the chosen images are blurred (a tenth of them by default), then put back in place;
        # the others are not touched at all.
        chosen = tf.where(transformation["sigma"] > 0.0)
        sigma = tf.cast(tf.gather_nd(transformation["sigma"], chosen), self.compute_dtype)[:, None]
        offsets = tf.cast(tf.range(-self.radius, self.radius + 1), self.compute_dtype)[None, :]
        weights = tf.exp(-0.5 * tf.square(offsets / sigma))
        weights = weights / tf.reduce_sum(weights, axis=1, keepdims=True)
        blurred = self._blur_axis(tf.gather_nd(images, chosen), weights, axis=1)
        blurred = self._blur_axis(blurred, weights, axis=2)
        return tf.tensor_scatter_nd_update(images, chosen, blurred)

    def _blur_axis(self, images, weights, axis):
        length = tf.shape(images)[axis]
        # Indices -radius .. length+radius-1 clamped into the image: edge padding that, unlike
        # tf.pad(mode="REFLECT"), works for images smaller than the kernel.
        indices = tf.clip_by_value(tf.range(-self.radius, length + self.radius), 0, length - 1)
        padded = tf.gather(images, indices, axis=axis)
        total = tf.zeros_like(images)
        for tap in range(2 * self.radius + 1):
            window = padded[:, tap:tap + length] if axis == 1 else padded[:, :, tap:tap + length]
            total += weights[:, tap, None, None, None] * window
        return total

    def get_config(self):
        config = super().get_config()
        config.update(sigma_range=list(self.sigma_range), probability=self.probability)
        return config


@keras.saving.register_keras_serializable(package="realvsai")
class RandomJpegQuality(_RandomImageLayer):
    """Re-compresses a random share of the images as JPEG at a random quality.

    Images are rounded to uint8 before encoding (as any saved JPEG is); the others pass unchanged.
    ``tf.image.adjust_jpeg_quality`` has only a CPU kernel and no XLA one, so the presets run this
    layer in the tf.data input pipeline (their ``"input"`` part), never inside the model; it sets
    ``supports_jit = False`` so Keras does not try to XLA-compile a model that holds it anyway.

    Args:
        quality_range: (low, high) JPEG quality, both inclusive, within 0..100.
        probability: share of images that are re-compressed.
        seed: seed of the layer's random stream.
    """

    def __init__(self, quality_range: Sequence[int] = (65, 100), probability: float = 0.1,
                 seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        low, high = (int(value) for value in quality_range)
        if not 0 <= low <= high <= 100:
            raise ValueError(f"quality_range must be (low, high) with 0 <= low <= high <= 100, got {quality_range}")
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {probability}")
        self.quality_range = (low, high)
        self.probability = float(probability)
        self.supports_jit = False

    def get_random_transformation(self, images, seed=None):
        draws = self._uniform(images, 2, seed)
        low, high = self.quality_range
        quality = tf.cast(tf.floor(low + (high + 1 - low) * draws[:, 1]), tf.int32)
        return {"apply": draws[:, 0] < self.probability, "quality": tf.minimum(quality, high)}

    def transform_images(self, images, transformation):
        images = tf.cast(images, self.compute_dtype)

        def one_image(args):
            image, apply, quality = args

            def compress():
                pixels = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
                compressed = tf.image.adjust_jpeg_quality(pixels, quality)
                return tf.reshape(tf.cast(compressed, image.dtype), tf.shape(image))

            return tf.cond(apply, compress, lambda: image)

        compressed = tf.map_fn(
            one_image,
            (images, transformation["apply"], transformation["quality"]),
            fn_output_signature=tf.TensorSpec(images.shape[1:], images.dtype),
        )
        return tf.ensure_shape(compressed, images.shape)

    def get_config(self):
        config = super().get_config()
        config.update(quality_range=list(self.quality_range), probability=self.probability)
        return config
