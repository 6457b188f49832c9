"""Data augmentation as Keras layers: one definition for training and for offline copies.

``build_augmentation(preset, seed)`` maps float32 RGB batches in 0..255 of any size to the same shape
and range and is an exact identity unless ``training=True``, so it can be the model's (saved) first block.
``detector`` keeps the pixel texture a real-vs-generated detector relies on (Wang et al. 2020).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import keras
import tensorflow as tf

from realvsai.config import PRESETS


def build_augmentation(preset: str, seed: int | None = None, part: str = "all") -> keras.Sequential | None:
    """The augmentation block for ``preset``, or None for ``"none"`` or a part the preset has no layer in.

    ``part``: ``"model"`` (the model's first block, XLA-compiled), ``"input"`` (training's tf.data
    pipeline, via ``augment_copies``) or ``"all"``, input first (offline copies).
    """
    if preset == "none":
        return None
    if preset == "classic":
        layers = [("model", RandomAffine)]  # its defaults are the notebook's ImageDataGenerator settings
    elif preset == "detector":
        # JPEG first, in the input pipeline (in the model it would turn XLA off for the whole step).
        # Then blur (Wang et al. blur before compressing), crop and flip, so the 8x8 JPEG grid lands
        # at a random offset, as in images cropped after compression. Wang et al. blur (sigma 0-3)
        # and re-compress (quality 30-100) with probability 0.5 or 0.1; on small images (CIFAKE is
        # 32 px) the layers' defaults keep both milder and rarer.
        layers = [("input", RandomJpegQuality), ("model", RandomBlur),
                  ("model", lambda **kw: RandomCropPad(horizontal_flip=True, **kw))]
    else:
        raise ValueError(f"unknown augmentation preset {preset!r}; choose one of {', '.join(PRESETS)}")
    # float32 even under a mixed-precision policy: float16 would round pixel values above 128 to steps of 0.125.
    chosen = [make(seed=_layer_seed(seed, index), dtype="float32") for index, (where, make) in enumerate(layers)
              if part in ("all", where)]
    return keras.Sequential(chosen, name="augmentation") if chosen else None


def _layer_seed(seed: int | None, index: int) -> int | None:
    """The ``index``-th layer's own stable seed (a non-negative int32), the same whichever part is built."""
    digest = hashlib.sha256(f"realvsai-augmentation:{seed}:{index}".encode()).digest()
    return None if seed is None else int.from_bytes(digest[:4], "little") >> 1


def augment_copies(augmentation: keras.Sequential, images, seed) -> tf.Tensor:
    """``augmentation(images, training=True)`` with every draw from ``seed`` (an int tensor of shape (2,)) alone."""
    images = tf.cast(images, tf.float32)
    return apply_transformations(augmentation.layers, images, random_transformations(augmentation, images, seed))


def random_transformations(augmentation: keras.Sequential, images, seed) -> list:
    """Each layer's random parameters for ``images``, drawn only from ``seed``; they depend on the batch's
    shape alone, so they can be drawn outside a function XLA compiles (XLA's random numbers differ)."""
    return [layer.get_random_transformation(images, tf.random.experimental.stateless_fold_in(seed, index))
            for index, layer in enumerate(augmentation.layers)]


def apply_transformations(layers: Sequence[keras.layers.Layer], images, transformations: Sequence) -> tf.Tensor:
    """Applies each layer's ``transformations`` (from ``random_transformations``) to float32 ``images``, in order."""
    for layer, transformation in zip(layers, transformations):
        images = layer.transform_images(images, transformation)
    return images


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


class _RandomImageLayer(keras.layers.Layer):
    """Draws each image's parameters (from a given seed tensor, or the layer's own), then applies them."""

    config_names: tuple[str, ...] = ()

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        images = tf.cast(images, self.compute_dtype)
        return self.transform_images(images, self.get_random_transformation(images)) if training else images

    def _uniform(self, images, count: int, seed=None):
        seed = self.generator.next() if seed is None else seed
        return tf.random.stateless_uniform((tf.shape(images)[0], count), seed=tf.cast(seed, tf.int64))

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

    def get_random_transformation(self, images, seed=None):
        shape = tf.shape(images)
        # A range of 0 gives exactly 0 (a zoom of exactly 1), so a layer with only the flip on, or
        # only whole-pixel shifts, moves whole pixels.
        scale = [self.rotation_degrees * math.pi / 180.0, self.shift_fraction, self.shift_fraction,
                 self.shear_factor, self.zoom_fraction, self.zoom_fraction, 1.0]
        draws = (self._uniform(images, 7, seed) * 2.0 - 1.0) * scale
        angle, shift_x, shift_y, shear, zoom_x, zoom_y, flip = tf.unstack(draws, num=7, axis=1)
        return {"angle": angle, "shift_x": shift_x * tf.cast(shape[2], tf.float32),
                "shift_y": shift_y * tf.cast(shape[1], tf.float32), "shear": shear,
                "zoom_x": 1.0 + zoom_x, "zoom_y": 1.0 + zoom_y,
                "flip": (flip < 0.0) if self.horizontal_flip else tf.zeros_like(flip, tf.bool)}

    def transform_images(self, images, transformation):
        # Each image's row [a0, a1, a2, b0, b1, b2, 0, 0] for affine_resample; zoom is input pixels per output pixel.
        shape = tf.shape(images)
        cos, sin = tf.cos(transformation["angle"]), tf.sin(transformation["angle"])
        zoom_x = tf.where(transformation["flip"], -transformation["zoom_x"], transformation["zoom_x"])  # F, then Z
        zoom_y, shear = transformation["zoom_y"], transformation["shear"]
        shift_x, shift_y = transformation["shift_x"], transformation["shift_y"]
        # Pixel centres are whole numbers, so the image's centre is ((width - 1) / 2, (height - 1) / 2).
        center_x, center_y = (tf.cast(shape[2], tf.float32) - 1.0) / 2.0, (tf.cast(shape[1], tf.float32) - 1.0) / 2.0
        # L = R H Z F: [[cos, -sin], [sin, cos]] [[1, s], [0, 1]] [[zx, 0], [0, zy]] with the flip in zx.
        a0, a1 = cos * zoom_x, (cos * shear - sin) * zoom_y
        b0, b1 = sin * zoom_x, (sin * shear + cos) * zoom_y
        # Offset c - L c - R t: the map turns about the centre and moves the content by t.
        a2 = center_x - a0 * center_x - a1 * center_y - (cos * shift_x - sin * shift_y)
        b2 = center_y - b0 * center_x - b1 * center_y - (sin * shift_x + cos * shift_y)
        zeros = tf.zeros_like(a0)
        return affine_resample(images, tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1))


def affine_resample(images, transforms) -> tf.Tensor:
    """``keras.ops.image.affine_transform(images, transforms, "bilinear", "nearest")`` as gathers XLA compiles
    (TensorFlow's resampling op behind it has none, and Keras XLA-compiles the training step)."""
    shape = tf.shape(images)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    rows = tf.cast(tf.range(height), tf.float32)[None, :, None]
    columns = tf.cast(tf.range(width), tf.float32)[None, None, :]
    t = tf.cast(transforms, tf.float32)[:, :, None, None]
    x = tf.clip_by_value(t[:, 0] * columns + t[:, 1] * rows + t[:, 2], 0.0, tf.cast(width - 1, tf.float32))
    y = tf.clip_by_value(t[:, 3] * columns + t[:, 4] * rows + t[:, 5], 0.0, tf.cast(height - 1, tf.float32))
    x_floor, y_floor = tf.floor(x), tf.floor(y)
    x_weight, y_weight = (x - x_floor)[..., None], (y - y_floor)[..., None]
    # The clamped points lie inside, so a neighbour past the last row or column has weight 0: clamp it too.
    left, top = tf.cast(x_floor, tf.int32), tf.cast(y_floor, tf.int32)
    right, bottom = tf.minimum(left + 1, width - 1), tf.minimum(top + 1, height - 1)
    pixels = tf.reshape(images, [-1, channels])
    first_row = tf.range(batch)[:, None, None] * height

    def row(index):  # one row of neighbours, interpolated along x
        start = (first_row + index) * width
        return tf.gather(pixels, start + left) * (1.0 - x_weight) + tf.gather(pixels, start + right) * x_weight

    return row(top) * (1.0 - y_weight) + row(bottom) * y_weight


@keras.saving.register_keras_serializable(package="realvsai")
class RandomCropPad(_RandomImageLayer):
    """Pads each side by ``pad_fraction`` of the image side (reflecting), crops back at random, may flip:
    whole pixels move, never interpolated, so the texture a detector looks at survives."""

    config_names = ("pad_fraction", "horizontal_flip")

    def __init__(self, pad_fraction: float = 0.125, horizontal_flip: bool = False, seed: int | None = None,
                 **kwargs):
        super().__init__(seed=seed, **kwargs)
        _require(0.0 <= pad_fraction < 1.0, f"pad_fraction must be in [0, 1), got {pad_fraction}")
        self.pad_fraction, self.horizontal_flip = float(pad_fraction), bool(horizontal_flip)

    def _pads(self, images):
        # floor(side * fraction) < side, so REFLECT padding (which needs pad < side) always works.
        sides = tf.cast(tf.shape(images)[1:3], tf.float32)
        return tf.unstack(tf.cast(tf.floor(sides * self.pad_fraction), tf.int32))

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
        shape = tf.shape(images)
        pad_height, pad_width = self._pads(images)
        padded = tf.pad(images, [[0, 0], [pad_height, pad_height], [pad_width, pad_width], [0, 0]], mode="REFLECT")
        rows = transformation["offset_y"][:, None] + tf.range(shape[1])[None, :]
        columns = tf.where(transformation["flip"][:, None], tf.range(shape[2] - 1, -1, -1)[None, :],
                           tf.range(shape[2])[None, :])
        cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
        cropped = tf.gather(cropped, transformation["offset_x"][:, None] + columns, axis=2, batch_dims=1)
        return tf.ensure_shape(cropped, images.shape)


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

    def get_random_transformation(self, images, seed=None):
        draws = self._uniform(images, 2, seed)
        low, high = self.sigma_range
        # A sigma of 0 means "not blurred"; the floor keeps a drawn sigma of exactly 0 from dividing by 0.
        sigma = tf.maximum(low + (high - low) * draws[:, 1], 1e-3)
        return {"sigma": tf.where(draws[:, 0] < self.probability, sigma, tf.zeros_like(sigma))}

    def transform_images(self, images, transformation):
        # Only the chosen images are blurred, then put back in place; the others are not touched at all.
        chosen = tf.where(transformation["sigma"] > 0.0)
        sigma = tf.cast(tf.gather_nd(transformation["sigma"], chosen), self.compute_dtype)[:, None]
        offsets = tf.cast(tf.range(-self.radius, self.radius + 1), self.compute_dtype)[None, :]
        weights = tf.exp(-0.5 * tf.square(offsets / sigma))
        weights = weights / tf.reduce_sum(weights, axis=1, keepdims=True)
        blurred = tf.gather_nd(images, chosen)
        for axis in (1, 2):
            length = tf.shape(blurred)[axis]
            # Indices clamped into the image: edge padding that, unlike tf.pad(mode="REFLECT"), works
            # for images smaller than the kernel.
            indices = tf.clip_by_value(tf.range(-self.radius, length + self.radius), 0, length - 1)
            padded = tf.gather(blurred, indices, axis=axis)
            blurred = sum(weights[:, tap, None, None, None]
                          * (padded[:, tap:tap + length] if axis == 1 else padded[:, :, tap:tap + length])
                          for tap in range(2 * self.radius + 1))
        return tf.tensor_scatter_nd_update(images, chosen, blurred)


@keras.saving.register_keras_serializable(package="realvsai")
class RandomJpegQuality(_RandomImageLayer):
    """Re-compresses a ``probability`` share of the images as JPEG at a quality in ``quality_range`` (inclusive).

    Pixels are rounded to uint8 first, as in any saved JPEG. The JPEG op has no XLA kernel: ``supports_jit
    = False`` keeps Keras from compiling a model holding it.
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

    def get_random_transformation(self, images, seed=None):
        draws = self._uniform(images, 2, seed)
        low, high = self.quality_range
        quality = tf.cast(tf.floor(low + (high + 1 - low) * draws[:, 1]), tf.int32)
        return {"apply": draws[:, 0] < self.probability, "quality": tf.minimum(quality, high)}

    def transform_images(self, images, transformation):
        images = tf.cast(images, self.compute_dtype)

        def one_image(args):
            image, apply, quality = args
            pixels = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
            return tf.cond(apply, lambda: tf.cast(tf.image.adjust_jpeg_quality(pixels, quality), image.dtype),
                           lambda: image)

        compressed = tf.map_fn(one_image, (images, transformation["apply"], transformation["quality"]),
                               fn_output_signature=images.dtype)
        return tf.ensure_shape(compressed, images.shape)
