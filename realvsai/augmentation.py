"""Data augmentation as Keras preprocessing layers: one definition for training and for offline copies.

``build_augmentation(preset, seed)`` returns a ``keras.Sequential(name="augmentation")`` that takes
float32 RGB batches in 0..255 of any size, ``(batch, H, W, 3)``, and returns the same shape and range.
It augments only when called with ``training=True`` and is an exact identity with ``training=False``,
so it can be the first block of the model (before resizing) and be saved with it (HDF5 included).

Presets:

- ``classic``: what ImageDataGenerator(rotation_range=20, width/height_shift_range=0.2,
  shear_range=0.2, zoom_range=0.2, horizontal_flip=True, fill_mode="nearest") did, and the way it
  did it: one ``RandomAffine`` layer composes each image's rotation, shifts, shear, zoom and flip
  into one matrix and resamples the pixels once (bilinear interpolation).
- ``detector``: transforms that keep the fine pixel texture a real-vs-generated detector relies on,
  after Wang et al. 2020 ("CNN-generated images are surprisingly easy to spot... for now"): JPEG
  re-compression and mild Gaussian blur, each with a small probability, then crop-and-pad by whole
  pixels (no resampling) and a horizontal flip.
- ``none``: no augmentation (``build_augmentation`` returns None).

A preset has two parts. Its ``"input"`` part (the JPEG step: TensorFlow's JPEG codec runs only on
the CPU and has no XLA kernel) runs in training's ``tf.data`` input pipeline, through
``augment_copies`` with a seed per batch; its ``"model"`` part is the model's first block, which XLA
compiles. Offline copies get both parts, in the same order (``part="all"``).

``augment_copies`` runs the same layers inside ``tf.data`` with every random draw taken from a
seed tensor, so offline copies do not depend on order or parallelism; ``plan_batches`` and
``write_augmented_copies`` are the batched, parallel offline pipeline DataAugmentation.py runs.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import gc
import hashlib
import math
import os
import secrets
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import keras
import numpy as np
import tensorflow as tf

from realvsai.config import PRESETS
from realvsai.data import decode_rgb
from realvsai.moving import is_made



@dataclass(frozen=True)
class ClassicSettings:
    """The ImageDataGenerator parameters of the original notebook, in ``RandomAffine``'s units.

    ``shear_factor``: ImageDataGenerator read ``shear_range=0.2`` as an angle in *degrees* (±0.2°, a
    shift of 0.1 px across a 32 px image: no visible shear, only a resampling). The 0.2 that people
    write reads like the fraction other libraries use, so ``classic`` shears along x by a factor of
    up to ±0.2 of the height (about ±11°), like ImageDataGenerator's single-axis shear was meant to.
    ``zoom_fraction`` applies to each axis independently, as ImageDataGenerator's ``zoom_range`` did.
    """

    rotation_degrees: float = 20.0
    shift_fraction: float = 0.2
    shear_factor: float = 0.2
    zoom_fraction: float = 0.2
    fill_mode: str = "nearest"


@dataclass(frozen=True)
class DetectorSettings:
    """Texture-preserving augmentation for real-vs-generated detectors (Wang et al. 2020).

    Wang et al. blur (sigma 0-3) and re-compress (quality 30-100) with probability 0.5 or 0.1; on
    small images (CIFAKE is 32 px, JPEG blocks are 8 px) we keep both milder and rarer.
    """

    pad_fraction: float = 0.125  # pad each side by 1/8 of the image side, then crop back at random
    blur_sigma: tuple[float, float] = (0.0, 1.0)
    blur_probability: float = 0.1
    jpeg_quality: tuple[int, int] = (65, 100)
    jpeg_probability: float = 0.1


CLASSIC = ClassicSettings()
DETECTOR = DetectorSettings()

# An offline batch holds at most this many pixels of copies (about 400 MB as float32 RGB), so a
# folder of 12-megapixel photos never needs more than a few full-size float copies at once.
MAX_BATCH_PIXELS = 1 << 25
MAX_IMAGES_PER_BATCH = 1 << 20  # no real limit: plan_batches decides, this only bounds Dataset.batch
# Offline, the augmentation of a size of which a run makes at least this many pixels of copies is
# compiled with XLA: about 0.15 s a batch shape, repaid by about 25 ns a pixel saved (bilinear
# resampling, measured at 32 and 224 px on 2 cores), so from about 16,000 copies at 32 px.
MIN_COMPILED_PIXELS = 1 << 24
# tf.io.encode_jpeg takes one image. map_fn over a batch costs about 14 us an iteration, more than
# encoding a 32 px image, so each iteration encodes this many images, unrolled in the graph.
ENCODE_CHUNK = 32


def layer_seed(seed: int | None, index: int) -> int | None:
    """A distinct, stable seed for the ``index``-th layer, derived from the preset's ``seed``."""
    if seed is None:
        return None
    digest = hashlib.sha256(f"realvsai-augmentation:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") >> 1  # keras wants a non-negative int32


PARTS = ("all", "input", "model")


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
        layers = _classic_layers(CLASSIC)
    elif preset == "detector":
        layers = _detector_layers(DETECTOR)
    else:
        raise ValueError(f"unknown augmentation preset {preset!r}; choose one of {', '.join(PRESETS)}")
    # float32 even under a mixed-precision policy: the contract is 0..255 float32 out, and float16
    # would round pixel values above 128 to steps of 0.125.
    chosen = [make(seed=layer_seed(seed, index), dtype="float32") for index, (where, make) in enumerate(layers)
              if part in ("all", where)]
    return keras.Sequential(chosen, name="augmentation") if chosen else None


def _classic_layers(settings: ClassicSettings) -> list[tuple[str, Callable[..., keras.layers.Layer]]]:
    return [("model", lambda **kw: RandomAffine(
        rotation_degrees=settings.rotation_degrees, shift_fraction=settings.shift_fraction,
        shear_factor=settings.shear_factor, zoom_fraction=settings.zoom_fraction, horizontal_flip=True,
        fill_mode=settings.fill_mode, **kw))]


def _detector_layers(settings: DetectorSettings) -> list[tuple[str, Callable[..., keras.layers.Layer]]]:
    # JPEG first, in the input pipeline: inside the model it would turn XLA off for the whole
    # training step and encode one image at a time on the CPU. Then blur (Wang et al. blur before
    # compressing; only the rare image drawn for both sees the other order), crop and flip, so the
    # 8x8 JPEG grid ends up at a random offset, as it does in images cropped after compression.
    return [
        ("input", lambda **kw: RandomJpegQuality(settings.jpeg_quality, settings.jpeg_probability, **kw)),
        ("model", lambda **kw: RandomBlur(settings.blur_sigma, settings.blur_probability, **kw)),
        ("model", lambda **kw: RandomCropPad(settings.pad_fraction, **kw)),
        ("model", lambda **kw: keras.layers.RandomFlip("horizontal", **kw)),
    ]


class _RandomImageLayer(keras.layers.Layer):
    """Base of the project's augmentation layers, with the interface of Keras's own image layers.

    ``get_random_transformation`` draws the random parameters (from ``seed`` when given, else from
    the layer's own generator) and ``transform_images`` applies them, like Keras's built-in image
    preprocessing layers, so ``augment_copies`` can drive all of them the same way. As with those,
    ``training`` defaults to True: pass ``training=False`` for the identity.
    """

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        images = tf.cast(images, self.compute_dtype)
        if not training:
            return images
        transformation = self.get_random_transformation(images, training=True)
        return self.transform_images(images, transformation, training=True)

    def get_random_transformation(self, images, training=True, seed=None):
        raise NotImplementedError

    def transform_images(self, images, transformation, training=True):
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["seed"] = self.seed
        return config


def _uniform(images, seed, minval=0.0, maxval=1.0):
    """One float per image of the batch, in [minval, maxval)."""
    return keras.random.uniform((tf.shape(images)[0],), minval=minval, maxval=maxval, seed=seed)


def _clamped_indices(length, radius):
    """Indices ``-radius .. length+radius-1`` clamped into ``0 .. length-1`` (edge padding).

    Gathering with them pads by repeating the edge pixel; unlike ``tf.pad(mode="REFLECT")`` it works
    for images smaller than the padding.
    """
    return tf.clip_by_value(tf.range(-radius, length + radius), 0, length - 1)


FILL_MODES = ("nearest", "reflect", "wrap", "constant")


@keras.saving.register_keras_serializable(package="realvsai")
class RandomAffine(_RandomImageLayer):
    """Rotation, shift, shear, zoom and horizontal flip composed into one affine map, resampled once.

    ImageDataGenerator's way: each image draws its own parameters, they are multiplied into one 3x3
    matrix about the image centre, and the pixels are interpolated once (bilinear), where a chain
    of RandomRotation, RandomTranslation, RandomShear and RandomZoom interpolates four times: four
    times the work and four blurs. The order is ImageDataGenerator's: with ``p`` an output pixel
    and ``c`` the centre, the pixel read is ``c + R (H Z F (p - c) - t)``; R rotates, ``t`` is the
    shift (how far the content moves, in pixels), H shears along x (``x += s * y``), Z zooms each
    axis by its own factor (above 1 shows more of the image, smaller), F flips left-right.

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

    def get_random_transformation(self, images, training=True, seed=None):
        if not training:
            return None
        seed = self.generator if seed is None else seed
        shape = tf.shape(images)
        # One draw of 7 numbers in [-1, 1) per image, scaled to the ranges: a handful of graph ops
        # (tracing costs about a millisecond an op, every offline run pays it) and one random stream.
        # A range of 0 gives exactly 0 (a zoom of exactly 1), so a layer with only the flip on, or only
        # whole-pixel shifts, moves whole pixels.
        scale = [self.rotation_degrees * math.pi / 180.0, self.shift_fraction, self.shift_fraction,
                 self.shear_factor, self.zoom_fraction, self.zoom_fraction, 1.0]
        draws = keras.random.uniform((shape[0], 7), minval=-1.0, maxval=1.0, seed=seed) * scale
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

    def transform_images(self, images, transformation, training=True):
        images = tf.cast(images, self.compute_dtype)
        if not training or transformation is None:
            return images
        shape = tf.shape(images)
        transforms = affine_transforms(transformation, shape[1], shape[2])
        if _compiling_with_xla():
            return affine_resample(images, transforms, self.fill_mode)
        output = keras.ops.image.affine_transform(images, transforms, interpolation="bilinear",
                                                  fill_mode=self.fill_mode, data_format="channels_last")
        return tf.cast(output, self.compute_dtype)

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


def _compiling_with_xla() -> bool:
    """True while TensorFlow traces a function for XLA (``jit_compile``, as Keras does by default on a GPU).

    TensorFlow's own resampling op (behind ``keras.ops.image.affine_transform``) has no XLA kernel,
    so ``RandomAffine`` switches to ``affine_resample`` there; outside XLA the op is about twice as
    fast as the gathers. TensorFlow has no public way to ask; if its private one moves, the gathers
    (correct everywhere) are used.
    """
    try:
        from tensorflow.python.ops import control_flow_util
    except ImportError:
        return True
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


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
    """Moves sampling coordinates into ``0 .. length - 1`` as ``ImageProjectiveTransformV3`` does."""
    size = tf.cast(length, tf.float32)
    if fill_mode == "constant":
        return coordinate
    if fill_mode == "reflect":  # ...cba|abcd|dcb...
        period = 2.0 * size
        below = period * tf.floor(-coordinate / period) + coordinate
        below = tf.where(below < -size, below + period, -below - 1.0)
        above = coordinate - period * tf.floor(coordinate / period)
        above = tf.where(above >= size, period - above - 1.0, above)
    elif fill_mode == "wrap":  # ...bcd|abcd|abc...
        below = coordinate + size * (tf.floor(-coordinate / (size - 1.0)) + 1.0)
        above = coordinate - size * tf.floor(coordinate / (size - 1.0))
    else:  # nearest: ...aaa|abcd|ddd...
        return tf.clip_by_value(coordinate, 0.0, size - 1.0)
    moved = tf.where(coordinate < 0.0, below, tf.where(coordinate > size - 1.0, above, coordinate))
    moved = tf.where(size <= 1.0, tf.zeros_like(moved), moved)
    return tf.clip_by_value(moved, 0.0, size - 1.0)


@keras.saving.register_keras_serializable(package="realvsai")
class RandomCropPad(_RandomImageLayer):
    """Pads each side by ``pad_fraction`` of the image side (reflecting), then crops back at random.

    The shift is a whole number of pixels in each direction (0 to twice the pad), so pixels are
    moved, never interpolated: the texture a detector looks at survives unchanged.

    Args:
        pad_fraction: padding per side as a fraction of the height (rows) and width (columns).
        seed: seed of the layer's random stream.
    """

    def __init__(self, pad_fraction: float = 0.125, seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if not 0.0 <= pad_fraction < 1.0:
            raise ValueError(f"pad_fraction must be in [0, 1), got {pad_fraction}")
        self.pad_fraction = float(pad_fraction)

    def _pads(self, images):
        shape = tf.shape(images)
        # floor(side * fraction) < side, so REFLECT padding (which needs pad < side) always works.
        pad_height = tf.cast(tf.floor(tf.cast(shape[1], tf.float32) * self.pad_fraction), tf.int32)
        pad_width = tf.cast(tf.floor(tf.cast(shape[2], tf.float32) * self.pad_fraction), tf.int32)
        return pad_height, pad_width

    def get_random_transformation(self, images, training=True, seed=None):
        if not training:
            return None
        seed = self.generator if seed is None else seed
        pad_height, pad_width = self._pads(images)
        # floor(u * (2p + 1)) is uniform over the 2p + 1 whole-pixel offsets 0 .. 2p.
        offset_y = tf.cast(tf.floor(_uniform(images, seed) * tf.cast(2 * pad_height + 1, tf.float32)), tf.int32)
        offset_x = tf.cast(tf.floor(_uniform(images, seed) * tf.cast(2 * pad_width + 1, tf.float32)), tf.int32)
        return {"offset_y": tf.minimum(offset_y, 2 * pad_height), "offset_x": tf.minimum(offset_x, 2 * pad_width)}

    def transform_images(self, images, transformation, training=True):
        images = tf.cast(images, self.compute_dtype)
        if not training or transformation is None:
            return images
        shape = tf.shape(images)
        pad_height, pad_width = self._pads(images)
        padded = tf.pad(images, [[0, 0], [pad_height, pad_height], [pad_width, pad_width], [0, 0]], mode="REFLECT")
        rows = transformation["offset_y"][:, None] + tf.range(shape[1])[None, :]
        columns = transformation["offset_x"][:, None] + tf.range(shape[2])[None, :]
        cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
        cropped = tf.gather(cropped, columns, axis=2, batch_dims=1)
        return tf.ensure_shape(cropped, images.shape)

    def get_config(self):
        config = super().get_config()
        config["pad_fraction"] = self.pad_fraction
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

    def get_random_transformation(self, images, training=True, seed=None):
        if not training:
            return None
        seed = self.generator if seed is None else seed
        apply = _uniform(images, seed) < self.probability
        # A sigma of 0 means "not blurred"; the floor keeps a drawn sigma of exactly 0 from dividing by 0.
        sigma = tf.maximum(_uniform(images, seed, *self.sigma_range), 1e-3)
        return {"sigma": tf.where(apply, sigma, tf.zeros_like(sigma))}

    def transform_images(self, images, transformation, training=True):
        images = tf.cast(images, self.compute_dtype)
        if not training or transformation is None:
            return images
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
        padded = tf.gather(images, _clamped_indices(length, self.radius), axis=axis)
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

    def get_random_transformation(self, images, training=True, seed=None):
        if not training:
            return None
        seed = self.generator if seed is None else seed
        low, high = self.quality_range
        apply = _uniform(images, seed) < self.probability
        quality = tf.cast(tf.floor(_uniform(images, seed, float(low), float(high) + 1.0)), tf.int32)
        return {"apply": apply, "quality": tf.minimum(quality, high)}

    def transform_images(self, images, transformation, training=True):
        images = tf.cast(images, self.compute_dtype)
        if not training or transformation is None:
            return images

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


class _StatelessSeeds(keras.random.SeedGenerator):
    """A seed source for one layer call that holds no state: every draw gets ``fold_in(base, n)``.

    Keras's random ops accept a ``SeedGenerator`` and call its ``next()`` once per draw. This one
    derives the seeds from a seed *tensor* (one per image, see ``copy_seed``) plus a counter that
    advances while the function is traced, so each draw site in a layer gets its own stream and the
    result depends on nothing but ``base``. ``SeedGenerator.__init__`` is skipped on purpose: it
    would create a state variable, which cannot be made inside a ``tf.data`` function.
    """

    def __init__(self, base):
        self.base = base
        self.draws = 0

    def next(self, ordered=True):
        self.draws += 1
        return tf.random.experimental.stateless_fold_in(self.base, self.draws)


def batch_seed(seed: int, key: str, first_copy: int = 0) -> tuple[int, int]:
    """The seed pair of one offline batch, from the run's ``seed`` and the batch's first image ``key``."""
    digest = hashlib.sha256(f"realvsai-copies:{seed}:{key}:{first_copy}".encode()).digest()
    return (int.from_bytes(digest[:4], "little") >> 1, int.from_bytes(digest[4:8], "little") >> 1)


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
    before any pixel moves, outside a function that XLA compiles: XLA's random numbers differ
    from TensorFlow's for the same seed.
    """
    return [
        layer.get_random_transformation(
            images, training=True, seed=_StatelessSeeds(tf.random.experimental.stateless_fold_in(seed, index)))
        for index, layer in enumerate(augmentation.layers)
    ]


def apply_transformations(layers: Sequence[keras.layers.Layer], images, transformations: Sequence) -> tf.Tensor:
    """Applies each layer's ``transformations`` (from ``random_transformations``) to float32 ``images``, in order."""
    for layer, transformation in zip(layers, transformations):
        images = layer.transform_images(images, transformation, training=True)
    return images


class SourceImage(Protocol):
    """What ``plan_batches`` needs to know of a training image (``realvsai.moving.SourceImage``)."""

    source: Path
    targets: tuple[str | None, ...]
    width: int
    height: int
    needs_pil: bool

    @property
    def key(self) -> str: ...


@dataclass(frozen=True)
class CopyBatch:
    """Images of one size, and which of their copies one call of the augmentation makes.

    Attributes:
        sources: the image files; they all decode (and resize) to the same size.
        targets: for each source, one output path per copy made here; None for a copy that exists
            already (it is still computed, so that the others come out the same as in a fresh run).
        seed: the batch's seed pair, from ``batch_seed``.
        needs_pil: for each source, whether it decodes with Pillow, as in training (``data.decode_rgb``).
        jit_compile: XLA-compile the augmentation of this batch where its layers allow it: batches of
            its size make enough copies in the run to repay the compile (see ``MIN_COMPILED_PIXELS``).
    """

    sources: tuple[Path, ...]
    targets: tuple[tuple[str | None, ...], ...]
    seed: tuple[int, int]
    needs_pil: tuple[bool, ...]
    jit_compile: bool

    @property
    def copies(self) -> int:
        return len(self.targets[0])

    def done(self) -> bool:
        return all(target is None or is_made(target) for targets in self.targets for target in targets)


def plan_batches(
    images: Sequence[SourceImage], seed: int, image_size: int | None = None, batch_size: int = 32,
    max_batch_pixels: int = MAX_BATCH_PIXELS,
) -> list[CopyBatch]:
    """Groups images by their output size into batches of at most ``batch_size`` images, all copies each.

    Batching is what makes the offline run fast: the augmentation's hundred small ops then run once
    for a batch's copies (320 by default) instead of once per image; much larger batches only delay
    the first and last writes (the pipeline writes one batch while it computes the next). A batch
    also holds at most ``max_batch_pixels`` pixels of copies; an image too large for that alone gets
    its copies spread over several batches. The batches (and so the random draws) depend only on
    the images, their order, ``seed``, ``image_size`` and ``batch_size``: the same run always writes
    the same bytes, and a re-run after an interruption recomputes exactly the copies that are missing.
    """
    groups: dict[tuple[int, int], list[SourceImage]] = {}
    for image in images:
        size = (image_size, image_size) if image_size else (image.height, image.width)
        groups.setdefault(size, []).append(image)
    batches = []
    for (height, width), members in sorted(groups.items()):
        copies = len(members[0].targets)
        pixels_per_copy = max(1, height * width)
        # All the images are counted, also those whose copies exist: a re-run must choose as the first run did.
        jit_compile = len(members) * copies * pixels_per_copy >= MIN_COMPILED_PIXELS
        per_batch = max(1, min(batch_size, max_batch_pixels // (pixels_per_copy * copies)))
        copies_per_batch = min(copies, max(1, max_batch_pixels // pixels_per_copy))
        for start in range(0, len(members), per_batch):
            chunk = members[start:start + per_batch]
            for first_copy in range(0, copies, copies_per_batch):
                batches.append(CopyBatch(
                    sources=tuple(image.source for image in chunk),
                    targets=tuple(tuple(image.targets[first_copy:first_copy + copies_per_batch]) for image in chunk),
                    seed=batch_seed(seed, chunk[0].key, first_copy),
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
    in_the_way: list[str] = field(default_factory=list)  # files kept at a copy's name: not copies (write_new_file)


def write_augmented_copies(
    batches: Sequence[CopyBatch],
    augmentation: keras.Sequential | None,
    image_size: int | None = None,
    jpeg_quality: int = 95,
    writers: int = 2,
    on_image_done: Callable[[int], None] | None = None,
) -> CopyReport:
    """Decodes, augments and JPEG-encodes every batch in a parallel ``tf.data`` pipeline, and writes it.

    Images decode in parallel, one per element, and are regrouped into their batches; each batch
    is augmented with its own seed (``augment_copies``) and JPEG-encoded, batches in parallel. No
    random draw depends on the order or the parallelism, so the bytes written are the same on every
    run. The writes (``write_new_file``) run in a thread pool. Nothing is synced: the system writes
    the copies to disk in its own time, and one that a power cut loses or leaves unfinished is not
    a complete copy (``moving.is_made``), which the next run makes again. Targets that are None or
    already exist are left alone, counted as already there; a file at a target that is not a copy
    is kept, and its path listed in ``in_the_way``.

    Args:
        batches: what to make (see ``plan_batches``).
        augmentation: the layers to apply, or None to write (resized) copies unchanged.
        image_size: resize every image to this square size first; None keeps its own size.
        jpeg_quality: quality of the written JPEG files.
        writers: threads that write the files, a batch at a time.
        on_image_done: called with a number of source images finished, e.g. a progress bar's update.

    Returns:
        Counts, the sources TensorFlow could not decode (skipped; ``plan_copies`` reads only headers),
        and the files kept in the way of a copy.
    """
    report = CopyReport()
    pending = []
    for batch in batches:
        if batch.done():
            report.already_there += sum(len(targets) for targets in batch.targets)
            if on_image_done:
                on_image_done(len(batch.sources))
        else:
            pending.append(batch)
    if not pending:
        return report

    # A set of strings: 5,000 Path.parent calls would cost more than the mkdirs.
    for folder in {os.path.dirname(target) for batch in pending for targets in batch.targets for target in targets
                   if target}:
        os.makedirs(folder, exist_ok=True)
    with _frozen_heap():
        _run_pipeline(pending, augmentation, image_size, jpeg_quality, writers, on_image_done, report)
    report.undecodable = sorted(set(report.undecodable))
    report.in_the_way.sort()
    return report


@contextlib.contextmanager
def _frozen_heap():
    """Keeps Python's garbage collector off the objects that exist already (TensorFlow's, Keras's).

    After importing them the heap holds millions of objects, and one full collection, which tracing
    the pipeline's functions sets off, pauses the run for half a second (measured: a 5,000-copy
    run takes about one second). Frozen objects are skipped by collections until unfrozen.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _run_pipeline(pending, augmentation, image_size, jpeg_quality, writers, on_image_done, report) -> None:
    """The body of ``write_augmented_copies``: runs the dataset, writes the copies, fills ``report``."""
    dataset = _copies_dataset(pending, augmentation, image_size, jpeg_quality)
    decoded: set[tuple[int, int]] = set()
    in_flight: list[Future] = []
    # Writes go to a thread pool a batch at a time, while tf.data computes the next batches.
    with ThreadPoolExecutor(max_workers=writers) as pool:
        for batch_index, positions, encoded in dataset.as_numpy_iterator():
            batch = pending[batch_index]
            files = []
            for row, position in enumerate(positions):
                decoded.add((int(batch_index), int(position)))
                copies = encoded[row * batch.copies:(row + 1) * batch.copies]
                files.extend((target, data) for target, data in zip(batch.targets[position], copies) if target)
                report.already_there += sum(target is None for target in batch.targets[position])
            in_flight.append(pool.submit(_write_files, files))
            while len(in_flight) > 2 * writers:
                _count_writes(in_flight.pop(0), report)
            if on_image_done:
                on_image_done(len(positions))
        for future in in_flight:
            _count_writes(future, report)
    for batch_index, batch in enumerate(pending):
        lost = [batch.sources[position] for position in range(len(batch.sources))
                if (batch_index, position) not in decoded]
        report.undecodable.extend(lost)
        if lost and on_image_done:
            on_image_done(len(lost))


_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


def write_new_file(path: Path | str, data: bytes) -> bool:
    """Creates ``path`` (in an existing folder) holding ``data``; False if a complete copy is there already.

    An existing copy is never replaced, and neither is any other file: only what an interrupted
    write of these very bytes can leave is, atomically (renamed over). A copy is one ``write`` into
    a file created under its own name, and a failed write removes its file. A kill in the middle of
    that write, or a power cut, can leave an empty, cut or zero-filled file: not a complete JPEG
    (``moving.is_made``), and a start of ``data`` where it is not zero (``_is_unfinished``), since
    the same run always makes the same bytes. Writing under a temporary name and renaming, or
    linking an unnamed ``O_TMPFILE`` file, would avoid such files but costs 30 to 50 % more kernel
    time per file on ext4, the largest cost of a run. Unlike ``files.atomic_write_bytes`` there is
    no fsync: on a virtual disk one costs about 3 ms, many times more than making the copy, and a
    copy lost to a power cut is simply made again. Plain ``os`` calls on strings: pathlib and file
    objects would cost about as much as the system calls.

    Raises:
        FileExistsError: if ``path`` holds another file (a user's, or a copy an earlier run with
            other settings left unfinished); it is left as it is.
    """
    path = os.fspath(path)
    try:
        # Mode 0o666 lets the umask decide, as for any new file.
        handle = os.open(path, _NEW_FILE_FLAGS, 0o666)
    except FileExistsError:
        if is_made(path):
            return False
        if not _is_unfinished(path, data):
            raise FileExistsError(errno.EEXIST, "in the way of a copy, and not an unfinished copy", path) from None
        return _rename_temporary_file(os.path.dirname(path) or ".", path, data)
    try:
        _write_all(handle, data)
    except BaseException:
        os.close(handle)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise
    os.close(handle)
    return True


def _is_unfinished(path: str, data: bytes) -> bool:
    """True when ``path`` is at most as long as ``data`` and each of its bytes is zero or that byte of ``data``.

    That is all an interrupted write of ``data`` can leave: a start of it (a kill), with blocks the
    disk never got reading as zeros (a power cut). A user's file, a PNG say, differs in its first bytes.
    """
    with open(path, "rb") as stream:
        found = np.frombuffer(stream.read(len(data) + 1), np.uint8)
    if len(found) > len(data):
        return False
    expected = np.frombuffer(data, np.uint8, count=len(found))
    return bool(np.all((found == expected) | (found == 0)))


def _rename_temporary_file(folder: str, path: str, data: bytes) -> bool:
    """Writes ``data`` to a hidden temporary file in ``folder`` and renames it onto ``path`` (replacing it)."""
    name = os.path.basename(path)
    while True:
        temporary = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            handle = os.open(temporary, _NEW_FILE_FLAGS, 0o666)
            break
        except FileExistsError:
            continue
    try:
        try:
            _write_all(handle, data)
        finally:
            os.close(handle)
        # The copies are deterministic, so even a concurrent run that got here first wrote these bytes.
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return True


def _write_all(handle: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(handle, view):]


def _write_files(files: Sequence[tuple[str, bytes]]) -> tuple[int, int, list[str]]:
    """Writes each ``(path, bytes)`` with ``write_new_file``; returns (written, already there, in the way)."""
    written, in_the_way = 0, []
    for path, data in files:
        try:
            written += write_new_file(path, data)
        except FileExistsError:
            in_the_way.append(path)
    return written, len(files) - written - len(in_the_way), in_the_way


def _count_writes(future: Future, report: CopyReport) -> None:
    """Waits for one batch of writes and adds it to ``report``; re-raises a failed write."""
    written, already_there, in_the_way = future.result()
    report.written += written
    report.already_there += already_there
    report.in_the_way.extend(in_the_way)


@functools.cache
def xla_available() -> bool:
    """True where TensorFlow can XLA-compile for the CPU, where tf.data runs (every official build so far)."""
    try:
        with tf.device("/CPU:0"):
            tf.function(lambda value: value + 1.0, jit_compile=True)(tf.zeros(()))
    except (tf.errors.OpError, ValueError):
        return False
    return True


def encode_jpegs(pixels, quality: int) -> tf.Tensor:
    """The JPEG bytes of each image of a uint8 ``(batch, height, width, 3)`` batch, as a string vector."""

    def encode(image):
        return tf.io.encode_jpeg(image, quality=quality)

    def encode_chunk(chunk):
        return tf.stack([encode(image) for image in tf.unstack(chunk, ENCODE_CHUNK)])

    # Whole chunks first, then the few images left one by one (padding them up to a chunk would
    # encode up to 31 images for nothing: seconds, for a batch of two 12-megapixel copies).
    whole = tf.shape(pixels)[0] // ENCODE_CHUNK * ENCODE_CHUNK
    chunks = tf.reshape(pixels[:whole], tf.concat([[-1, ENCODE_CHUNK], tf.shape(pixels)[1:]], axis=0))
    encoded = tf.map_fn(encode_chunk, chunks, fn_output_signature=tf.TensorSpec([ENCODE_CHUNK], tf.string),
                        parallel_iterations=8)
    rest = tf.map_fn(encode, pixels[whole:], fn_output_signature=tf.string, parallel_iterations=8)
    return tf.concat([tf.reshape(encoded, [-1]), rest], axis=0)


def _transform_function(augmentation: keras.Sequential, batches: Sequence[CopyBatch]) -> Callable:
    """``transform(batch_index, images, transformations)`` for ``_copies_dataset``: applies the drawn transformations.

    XLA-compiled for the batches planned so (``CopyBatch.jit_compile``), where XLA works and every
    layer compiles; as TensorFlow ops for the others. Which way a batch goes is fixed by the plan,
    so the same run always writes the same bytes.
    """
    plain = functools.partial(apply_transformations, augmentation.layers)
    wanted = [batch.jit_compile for batch in batches]
    if not any(wanted) or not all(layer.supports_jit for layer in augmentation.layers) or not xla_available():
        return lambda batch_index, images, transformations: plain(images, transformations)
    compiled = tf.function(plain, jit_compile=True, autograph=False)
    if all(wanted):  # no tf.cond: tracing the other way too would cost a tenth of a second
        return lambda batch_index, images, transformations: compiled(images, transformations)
    wanted = tf.constant(wanted)
    return lambda batch_index, images, transformations: tf.cond(
        wanted[batch_index], lambda: compiled(images, transformations), lambda: plain(images, transformations))


def _copies_dataset(batches: Sequence[CopyBatch], augmentation, image_size, jpeg_quality) -> tf.data.Dataset:
    """Elements ``(batch index, positions of its decoded images, JPEG bytes of their copies)``."""
    batch_indices, positions, sources, use_pil = [], [], [], []
    for batch_index, batch in enumerate(batches):
        for position, source in enumerate(batch.sources):
            batch_indices.append(batch_index)
            positions.append(position)
            sources.append(str(source))
            use_pil.append(batch.needs_pil[position])
    batch_lengths = tf.constant([len(batch.sources) for batch in batches], tf.int64)
    copies = tf.constant([batch.copies for batch in batches], tf.int32)
    seeds = tf.constant(np.array([batch.seed for batch in batches], np.int64).reshape(-1, 2))
    transform = None if augmentation is None else _transform_function(augmentation, batches)

    # Plain Python control flow only (on Python values), so autograph is skipped: converting these
    # functions and the Keras layers they call costs seconds for nothing.
    @tf.autograph.experimental.do_not_convert
    def decode(batch_index, position, path, pil):
        image = tf.cast(decode_rgb(path, pil), tf.float32)  # as training decodes it: upright, RGB
        if image_size is not None:
            image = tf.image.resize(image, (image_size, image_size), antialias=True)
        return batch_index, position, image

    @tf.autograph.experimental.do_not_convert
    def augment_and_encode(batch_index, position, images):
        batch_index = batch_index[0]
        images = tf.repeat(images, copies[batch_index], axis=0)  # each image's copies side by side
        if transform is not None:
            images = transform(batch_index, images, random_transformations(augmentation, images, seeds[batch_index]))
        pixels = tf.cast(tf.clip_by_value(tf.round(images), 0.0, 255.0), tf.uint8)
        return batch_index, position, encode_jpegs(pixels, jpeg_quality)

    dataset = tf.data.Dataset.from_tensor_slices(
        (np.array(batch_indices, np.int64), np.array(positions, np.int64), sources, np.array(use_pil, bool)))
    # This is where broken images are found (plan_copies reads only their headers): one that
    # TensorFlow cannot decode (truncated, or a format it lacks) drops out here and is reported by
    # its missing position. Errors after decoding are bugs and still stop the run.
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
    # Regroup the decoded images into their batches. Each window closes as soon as its batch is
    # complete (window_size_func), so only the batches being assembled are held in memory; one
    # missing an undecodable image closes at the end of the input.
    # (The lambdas too skip autograph: converting them cost 0.3 s, a third of a 5,000-copy run.)
    plain = tf.autograph.experimental.do_not_convert
    dataset = dataset.group_by_window(
        key_func=plain(lambda batch_index, position, image: batch_index),
        reduce_func=plain(lambda key, window: window.batch(MAX_IMAGES_PER_BATCH)),
        window_size_func=plain(lambda key: batch_lengths[key]),
    )
    dataset = dataset.map(augment_and_encode, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
    # tf.data's default graph rewrites cost about a second of start-up and gain nothing for this
    # short, already parallel pipeline (measured in benchmarks/bench_augmentation.py).
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    return dataset.with_options(options)
