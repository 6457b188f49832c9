"""Training input from images held in memory: model.fit's feed where TensorFlow is not installed.

ModelTraining.py needs TensorFlow: tf.data (``data.make_dataset``) feeds model.fit on every backend. On a
machine set up for JAX alone (a GPU box without TensorFlow), the GPU benchmark (``benchmarks/
bench_gpu_cifake.py``) trains the project's recipe through ``fitting.fit_phases`` fed from here: ``load_images`` decodes
a scanned split once (``images.load_rgb``, the pixels tf.data decodes), and ``EpochBatches`` batches it
as ``make_dataset(first_epoch=...)`` does: endless passes, each shuffled from ``(seed, epoch)`` alone, so
a resumed run reads what the uninterrupted one read. The images must share one size (the model resizes
each batch, but one array holds one shape), and the input part of an augmentation preset (the JPEG
step: TensorFlow's codec) does not run here.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np

from realvsai.cli import plural
from realvsai.errors import UserError
from realvsai.files import map_in_threads, reading_workers
from realvsai.images import ImageDecodeError, decoded_size, load_rgb
from realvsai.metrics import class_weight_list

if TYPE_CHECKING:
    from realvsai.data import LabelledImages

logger = logging.getLogger(__name__)


def load_images(images: LabelledImages, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``images``' pixels as one uint8 array ``(count, height, width, 3)``, and their int32 labels: decoded for a
    model of side ``image_size`` as tf.data decodes them (a large JPEG reduced, ``images.jpeg_scale``), so the
    model, which resizes each batch, sees the pixels training with TensorFlow gives it.

    Raises:
        UserError: when the images differ in size, or a file no longer decodes.
    """
    formats = images.formats or [""] * len(images)
    sizes = sorted({decoded_size(*size, image_format, image_size) for size, image_format in zip(images.sizes, formats)})
    if len(sizes) > 1:
        raise UserError(f"the {len(images)} images decode in {len(sizes)} sizes (e.g. {sizes[0][0]}x{sizes[0][1]} "
                        f"and {sizes[-1][0]}x{sizes[-1][1]}), but images in memory need one size. Resize them to "
                        "one size, or train with TensorFlow installed (its input resizes as it reads).")

    def decode(paths: list[Path]) -> list[np.ndarray]:
        try:
            return [load_rgb(path, images.max_pixels, image_size) for path in paths]
        except ImageDecodeError as error:
            raise UserError(f"{error}: a file changed since the scan. Replace or remove it and start again.") from None

    width, height = sizes[0]
    logger.info("decoding %s of %dx%d into memory (%.1f GB)", plural(len(images), "image"), width, height,
                len(images) * width * height * 3 / 1e9)
    pixels = map_in_threads(decode, images.files, reading_workers(images.files), "decoding")
    return np.stack(pixels), np.asarray(images.labels, np.int32)


class EpochBatches(keras.utils.PyDataset):
    """Endless batches ``(float32 images 0..255, int32 labels)`` for model.fit (with ``steps_per_epoch``):
    batch ``index`` is step ``index % steps`` of pass ``first_epoch + index // steps``. Each pass is in an
    order drawn from ``(seed, epoch)`` alone when ``shuffle``, else in the arrays' order.

    Args:
        drop_remainder: leave out each pass's last, smaller batch.
        class_weight: adds each image's class weight as a third element (model.fit weights validation
            only so: the validation loss weighted as training's is).
        workers: threads that make batches ahead of the step (Keras' PyDataset).
    """

    def __init__(self, pixels: np.ndarray, labels: np.ndarray, *, batch_size: int, shuffle: bool = False,
                 seed: int = 0, first_epoch: int = 0, drop_remainder: bool = False,
                 class_weight: Mapping[int, float] | None = None, workers: int = 1):
        super().__init__(workers=workers)
        self.pixels, self.labels = pixels, np.asarray(labels, np.int32)
        self.batch_size, self.shuffle, self.seed, self.first_epoch = batch_size, shuffle, seed, first_epoch
        self.steps = len(labels) // batch_size if drop_remainder else math.ceil(len(labels) / batch_size)
        self.weights = None if class_weight is None else np.array(class_weight_list(class_weight), np.float32)

    @property
    def num_batches(self) -> None:
        return None  # endless: model.fit's steps_per_epoch says how many make an epoch

    @functools.lru_cache(maxsize=2)  # noqa: B019 (one dataset per phase: a few instances live)
    def _order(self, epoch: int) -> np.ndarray:
        count = len(self.labels)
        return np.random.default_rng([self.seed, epoch]).permutation(count) if self.shuffle else np.arange(count)

    def __getitem__(self, index: int) -> tuple[np.ndarray, ...]:
        epoch, step = divmod(index, self.steps)
        chosen = self._order(self.first_epoch + epoch)[step * self.batch_size:(step + 1) * self.batch_size]
        batch = (self.pixels[chosen].astype(np.float32), self.labels[chosen])
        return batch if self.weights is None else (*batch, self.weights[batch[1]])
