"""Serving a trained model: decode uploads, prepare them as the model does, predict, explain (Grad-CAM).

    results = inference.classify_uploads(classifier, [("cat.jpg", jpeg_bytes)])

Each upload is decoded once, with Pillow, and goes through the model's own ``resize`` layer (crops
mode: its grid of crops) before the uploads are stacked into batches, so a batch gives the
probabilities of each image alone. Predictions take the run's one predict path (``run.Predictor``).
TensorFlow only for Grad-CAM's gradient on the TensorFlow backend: the app serves on any Keras backend.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from realvsai.config import CROP_GRID, MAX_IMAGE_PIXELS, TrainConfig
from realvsai.files import other_image_format
from realvsai.images import ImageDecodeError, ImageHeader, cover_size, grid_offsets, load_rgb_with_header
from realvsai.layout import mask_images
from realvsai.metrics import DecisionRule
from realvsai.run import ModelInfo, ModelRun, Predictor, check_model, doubt

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeConfig:
    """Defaults of the app, held once (``--predict`` takes its batch size and pixel limit from TrainConfig, as
    ModelTraining's other programs do)."""

    models_dir: Path = TrainConfig.out
    batch_size: int = 16  # uploads per model call (fewer padded to a power of two: few shapes for JAX to compile)
    max_pixels: int = MAX_IMAGE_PIXELS  # larger uploads are refused before decoding (decompression bombs)
    preview_size: int = 384  # longest side of the picture shown per upload, in pixels
    colormap: str = "turbo"  # matplotlib colormap of the Grad-CAM overlay (jet's perceptual successor)
    # Grad-CAM explains from the deepest feature map at least this many cells a side; a smaller one
    # cannot say where (ResNet's last block is 1x1 at 32 px, so the map would be one flat tint).
    grad_cam_min_size: int = 4
    heatmap_opacity: float = 0.45


DEFAULTS = ServeConfig()


def grid_crops(image: np.ndarray, size: int) -> np.ndarray:
    """``(CROP_GRID**2, size, size, 3)`` float32 crops of an (H, W, 3) image, as ``data.grid_crops`` cuts them
    in the tf.data pipeline: the image enlarged (bilinear) to a short side of at least ``size``, crops evenly
    spaced from edge to edge, in row order.

    Only the crops' pixels are interpolated: enlarging the whole of a 3x50000 strip took 204 MB on TensorFlow,
    and on JAX (``jax.image.resize`` weighs every input pixel of an axis against every output pixel) failed
    allocating 106 GB.
    """
    image = np.asarray(image)
    width, height = cover_size(image.shape[1], image.shape[0], size)
    rows, columns = (np.concatenate([np.arange(start, start + size) for start in grid_offsets(length, size)])
                     for length in (height, width))
    if image.shape[0] >= image.shape[1]:  # the longer axis first: it shrinks most
        picked = _linear_samples(_linear_samples(image, rows, height, 0), columns, width, 1)
    else:
        picked = _linear_samples(_linear_samples(image, columns, width, 1), rows, height, 0)
    grid = picked.reshape(CROP_GRID, size, CROP_GRID, size, 3).transpose(0, 2, 1, 3, 4)
    return grid.reshape(CROP_GRID**2, size, size, 3)


def _linear_samples(image: np.ndarray, positions: np.ndarray, new_length: int, axis: int) -> np.ndarray:
    """Float32 pixels ``positions`` along ``axis`` of ``image`` resized to ``new_length`` there, as bilinear
    ``tf.image.resize`` (and ``keras.ops.image.resize``) computes them: half-pixel centres, edges clamped."""
    length = image.shape[axis]
    if new_length == length:
        return np.take(image, positions, axis=axis).astype(np.float32)
    source = np.maximum((positions + np.float32(0.5)) * (np.float32(length) / np.float32(new_length))
                        - np.float32(0.5), 0).astype(np.float32)
    low = np.floor(source).astype(np.int64)
    weight = (source - low).reshape([-1 if dim == axis else 1 for dim in range(image.ndim)])
    return (np.take(image, low, axis=axis).astype(np.float32) * (1 - weight)
            + np.take(image, np.minimum(low + 1, length - 1), axis=axis).astype(np.float32) * weight)


def class_score_gradient(score: Callable[[Any], Any], features: Any) -> tuple[Any, Any]:
    """``score(features)`` and its gradient with respect to ``features``: ``jax.grad`` on JAX,
    ``tf.GradientTape`` on TensorFlow (they agree to 1e-6); ValueError on another backend."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.value_and_grad(score)(features)
    if backend == "tensorflow":
        import tensorflow as tf

        features = tf.convert_to_tensor(features)
        with tf.GradientTape() as tape:
            tape.watch(features)  # a tensor, not a variable: the tape watches it only when told
            value = score(features)
        return value, tape.gradient(value, features)
    raise ValueError(f"Grad-CAM needs the jax or tensorflow backend of Keras, not {backend}")


class Classifier:
    """A loaded model with its class names, the run's predict path and Grad-CAM."""

    def __init__(self, model: keras.Model, class_names: Sequence[str], image_size: int,
                 input_mode: str = "resize", *, batch_size: int = DEFAULTS.batch_size) -> None:
        self.model = model
        self.class_names = list(class_names)
        self.image_size = int(image_size)
        self.input_mode = input_mode
        info = ModelInfo(tuple(self.class_names), self.image_size, input_mode)
        # decode_upload's image_size: crops mode sees native pixels, so no reduced JPEG decode there; its
        # crop_size: crops mode enlarges a small image, and the pixel limit holds for the enlarged one.
        self.crop_size = info.crop_size
        self.decode_size = info.decode_size
        check_model(model, info)
        self._resize = model.get_layer("resize")  # the model contract: build_model names it so
        self.predictor = Predictor(model, info, batch_size)

    @classmethod
    def for_run(cls, model: keras.Model, run: ModelRun, batch_size: int = DEFAULTS.batch_size) -> Classifier:
        """The classifier of a loaded run (``run.load_run``)."""
        return cls(model, run.class_names, run.image_size, run.info.input_mode, batch_size=batch_size)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """An (H, W, 3) uint8 image as the model's float32 (size, size, 3) input, or crops mode's (9, size, size, 3)."""
        from keras import ops

        if self.input_mode == "crops":
            return grid_crops(image, self.image_size)
        # As decoded (uint8) into the layer, which casts the centre square alone: no full-size float copy.
        return ops.convert_to_numpy(self._resize(np.asarray(image)[np.newaxis]))[0].astype(np.float32)

    def predict_prepared(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (N, classes) of a float32 batch of prepared images, ``batch_size`` rows per model call."""
        return self.predictor.predict_arrays(np.asarray(batch, np.float32))

    def seen_regions(self, height: int, width: int) -> list[tuple[float, float, float, float]]:
        """(top, left, height, width) of each part of an image the model sees, in the image's pixels: the centre
        square the resize layer crops, or crops mode's grid."""
        if self.input_mode == "crops":
            # grid_crops' enlargement and offsets, mapped back to the image's pixels.
            scale = float(max(np.float32(1.0), np.float32(self.image_size) / np.float32(min(height, width))))
            covered = cover_size(width, height, self.image_size)[::-1]
            tops, lefts = (grid_offsets(length, self.image_size) for length in covered)
            side = self.image_size / scale
            return [(top / scale, left / scale, side, side) for top in tops for left in lefts]
        side = min(height, width)
        return [(float((height - side) // 2), float((width - side) // 2), float(side), float(side))]

    @functools.cached_property
    def grad_cam_layer(self) -> keras.layers.Layer | None:
        """The deepest backbone block output (ResNet's ``*_out`` layers, else any) at least 4x4; None if none is."""
        layers = [layer for layer in self.model.get_layer("backbone").layers if len(layer.output.shape) == 4]
        blocks = [layer for layer in layers if layer.name.endswith("_out")] or layers
        size = DEFAULTS.grad_cam_min_size
        return next((layer for layer in reversed(blocks) if min(layer.output.shape[1:3]) >= size), None)

    @property
    def grad_cam_problem(self) -> str | None:
        """Why Grad-CAM cannot explain this model (no feature map is large enough to localise), or None when it
        can: the app's note, and ``grad_cam_prepared``'s ValueError."""
        if self.grad_cam_layer is not None:
            return None
        size = DEFAULTS.grad_cam_min_size
        return (f"Grad-CAM cannot localise at {self.image_size} px: every feature map of the backbone is smaller "
                f"than {size}×{size}, so a heatmap would be one flat colour. Train at a larger --image-size to see "
                "where the evidence lies.")

    @functools.cached_property
    def _split(self) -> tuple[keras.Model, keras.Model | None, list[keras.layers.Layer]]:
        """The model cut at the explained block: backbone up to it, the backbone's rest (None when the block is
        its last), and the head's layers before the last Dense."""
        import keras

        backbone, layers = self.model.get_layer("backbone"), self.model.layers
        explained = self.grad_cam_layer.output
        features = keras.Model(backbone.inputs, explained)
        rest = None if explained is backbone.outputs[0] else keras.Model(explained, backbone.outputs[0])
        return features, rest, layers[layers.index(backbone) + 1:-1]

    def grad_cam_prepared(self, prepared: np.ndarray, class_index: int | None = None) -> list[np.ndarray]:
        """Grad-CAM maps (feature-map cells, float32 in [0, 1], scaled together) of one prepared image: one map
        of its (size, size, 3) input, or one per crop of crops mode's (9, size, size, 3).

        Raises:
            ValueError: when no feature map is large enough to localise.
        """
        if problem := self.grad_cam_problem:
            raise ValueError(problem)
        prepared = np.asarray(prepared, np.float32)
        if self.input_mode == "crops" and class_index is None:  # the class of the averaged softmax
            class_index = int(np.argmax(self.predict_prepared(prepared[np.newaxis])[0]))
        images = prepared if self.input_mode == "crops" else prepared[np.newaxis]
        cams = [self._raw_grad_cam(image, class_index) for image in images]
        peak = max(float(cam.max()) for cam in cams)
        return [(cam / peak if peak > 0 else cam).astype(np.float32) for cam in cams]

    def _raw_grad_cam(self, image: np.ndarray, class_index: int | None) -> np.ndarray:
        from keras import ops

        features_model, rest, head = self._split
        last = self.model.layers[-1]  # the softmax Dense "predictions": its logits do not saturate near 1
        pixels = self.model.get_layer("preprocess")(image[np.newaxis])
        features = features_model(pixels, training=False)

        def logits(explained: Any) -> Any:
            hidden = rest(explained, training=False) if rest is not None else explained
            for layer in head:
                hidden = layer(hidden, training=False)
            return ops.cast(ops.matmul(ops.cast(hidden, last.kernel.dtype), last.kernel) + last.bias, "float32")[0]

        target = int(np.argmax(ops.convert_to_numpy(logits(features)))) if class_index is None else int(class_index)

        def score(explained: Any) -> Any:
            values = logits(explained)
            # Minus the mean logit: softmax ignores a shift shared by all logits, so only this is evidence.
            return values[target] - ops.mean(values)

        _, gradients = class_score_gradient(score, features)
        explained = ops.convert_to_numpy(ops.cast(features, "float32"))[0]
        weights = ops.convert_to_numpy(ops.cast(gradients, "float32"))[0].mean(axis=(0, 1))
        return np.maximum((explained * weights).sum(axis=-1), 0.0)

    def grad_cam(self, image: np.ndarray, class_index: int | None = None) -> np.ndarray:
        """Grad-CAM heatmap (float32 in [0, 1], the image's size) for ``class_index`` (default: the decided class by
        argmax), over the parts of the image the model saw (``seen_regions``); zero elsewhere.

        Raises:
            ValueError: when no feature map is large enough to localise.
        """
        height, width = image.shape[:2]
        return self.place_heatmaps(self.grad_cam_prepared(self.prepare(image), class_index), (height, width),
                                   (height, width))

    def place_heatmaps(self, cams: Sequence[np.ndarray], image_shape: tuple[int, int],
                       output_size: tuple[int, int]) -> np.ndarray:
        """Each of ``cams`` stretched (bilinear) over its ``seen_regions`` region of an image of ``image_shape``,
        drawn at ``output_size`` (overlapping crops: the larger value)."""
        height, width = image_shape
        out_height, out_width = output_size
        heatmap = np.zeros((out_height, out_width), np.float32)
        for cam, (top, left, region_height, region_width) in zip(cams, self.seen_regions(height, width), strict=True):
            rows = (round(top * out_height / height), round((top + region_height) * out_height / height))
            cols = (round(left * out_width / width), round((left + region_width) * out_width / width))
            size = (max(1, cols[1] - cols[0]), max(1, rows[1] - rows[0]))
            stretched = np.asarray(Image.fromarray(np.asarray(cam, np.float32)).resize(size, Image.BILINEAR))
            window = heatmap[rows[0]:rows[0] + size[1], cols[0]:cols[0] + size[0]]
            np.maximum(window, stretched[:window.shape[0], :window.shape[1]], out=window)
        return np.clip(heatmap, 0.0, 1.0)


@dataclass(frozen=True)
class UploadResult:
    """What became of one uploaded file."""

    name: str
    probabilities: np.ndarray | None = None  # (classes,) float32; None when it could not be classified
    error: str | None = None  # why not, for the user
    preview: np.ndarray | None = field(default=None, repr=False)  # a small upright RGB copy to show
    size: tuple[int, int] | None = None  # (width, height) of the file's image
    unfamiliar: str | None = None  # why the answer is never certain: unlike the training images, or at chance
    prepared: np.ndarray | None = field(default=None, repr=False)  # the model's input, which Grad-CAM explains
    decoded_shape: tuple[int, int] | None = None  # (height, width) of the decoded image (a large JPEG: reduced)

    @property
    def ok(self) -> bool:
        return self.probabilities is not None

    def answer(self, rule: DecisionRule) -> tuple[int, bool]:
        """The class index ``rule`` decides and whether the answer is Uncertain (always, when unfamiliar)."""
        unfamiliar = self.unfamiliar is not None
        return int(rule.decide(self.probabilities)), bool(rule.uncertain(self.probabilities, unfamiliar))


def decode_upload(data: bytes, max_pixels: int = DEFAULTS.max_pixels, image_size: int | None = None,
                  crop_size: int | None = None) -> tuple[np.ndarray, ImageHeader]:
    """An upload's bytes, decoded once, as an upright (H, W, 3) uint8 RGB image, with Pillow: the pixels
    ``data.decode_rgb`` gives training; and its header (the file's own size: a large JPEG is decoded reduced),
    gray or not as the scan judges it (a JPEG decoded at another scale than that check's is decoded again at its
    scale: ``images.load_rgb_with_header``). ImageDecodeError if unusable, or if crops of ``crop_size`` would
    enlarge it past ``max_pixels``."""
    return load_rgb_with_header(bytes(data), max_pixels, image_size, crop_size)


def preview_image(image: np.ndarray) -> np.ndarray:
    """A copy of ``image`` no longer than ``DEFAULTS.preview_size`` on either side (fast box reduction)."""
    factor = math.ceil(max(image.shape[:2]) / DEFAULTS.preview_size)
    return np.asarray(Image.fromarray(image).reduce(factor)) if factor > 1 else image


def classify_uploads(classifier: Classifier, uploads: Iterable[tuple[str, bytes]], *,
                     batch_size: int | None = None, max_pixels: int = DEFAULTS.max_pixels,
                     info: ModelInfo | None = None, masks: Mapping[str, str] | None = None) -> list[UploadResult]:
    """Classifies uploads in order, ``batch_size`` per model call (default: the classifier's), each decoded once
    and holding one full-size image at a time.

    A file that fails gets an ``error`` and the others go on (so does a segmentation mask uploaded beside its image,
    ``layout.mask_images``, of ``uploads`` or given as ``masks``: name -> why); one unlike the run's training images,
    or of a size
    its validation shows it at chance on or had none of (``info``, model.json: ``run.doubt``), gets the reason in
    ``unfamiliar``.
    """
    batch_size = batch_size or classifier.predictor.batch_size
    uploads = list(uploads)
    if masks is None:  # beside their images, as --predict leaves them out
        masks = mask_images([name for name, _ in uploads])
    slots: list[dict[str, Any]] = []
    prepared: list[dict[str, Any]] = []  # resized, so they hold little memory
    for name, data in uploads:
        slot: dict[str, Any] = {"name": name}
        slots.append(slot)
        if reason := masks.get(name) or other_image_format(name):  # by its name, as --predict leaves it out
            slot["error"] = reason
            continue
        try:
            image, header = decode_upload(data, max_pixels, classifier.decode_size, classifier.crop_size)
            slot.update(prepared=classifier.prepare(image), preview=preview_image(image),
                        size=(header.width, header.height), decoded_shape=image.shape[:2],
                        unfamiliar=None if info is None else doubt(
                            info, header.width, header.height, header.image_format, header.grayscale, header.frames))
            prepared.append(slot)
        except ImageDecodeError as error:
            slot["error"] = str(error)
        except Exception as error:  # whatever one upload does, the others are still classified
            logger.exception("unexpected error on %s", name)
            slot["error"] = f"unexpected error ({type(error).__name__}: {error})"
    for start in range(0, len(prepared), batch_size):
        batch = prepared[start:start + batch_size]
        try:
            probabilities = classifier.predict_prepared(np.stack([slot["prepared"] for slot in batch]))
        except Exception as error:  # the app must go on; the files of this batch are named instead
            logger.exception("the model failed on a batch")
            for slot in batch:
                slot.update(error=f"the model failed ({type(error).__name__}: {error})", preview=None, prepared=None)
        else:
            for slot, row in zip(batch, probabilities):
                slot["probabilities"] = row
    return [UploadResult(**slot) for slot in slots]


def explain_result(classifier: Classifier, result: UploadResult, class_index: int | None = None) -> np.ndarray:
    """``result``'s preview with the Grad-CAM heatmap of ``class_index`` (default: argmax) laid over the parts of
    the image the model saw, each outlined; from the upload's one decode (its prepared model input)."""
    cams = classifier.grad_cam_prepared(result.prepared, class_index)
    heatmap = classifier.place_heatmaps(cams, result.decoded_shape, result.preview.shape[:2])
    regions = classifier.seen_regions(*result.decoded_shape)
    seen = np.zeros(result.preview.shape[:2], bool)  # what the model never saw is shown as it is, not as "cold"
    for first_row, last_row, first_col, last_col in _region_pixels(result.preview.shape, regions, result.decoded_shape):
        seen[first_row:last_row + 1, first_col:last_col + 1] = True
    overlay = np.where(seen[..., None], overlay_heatmap(result.preview, heatmap), result.preview)
    return outline_regions(overlay, regions, result.decoded_shape)


def outline_regions(image: np.ndarray, regions: Sequence[tuple[float, float, float, float]],
                    image_shape: tuple[int, int]) -> np.ndarray:
    """A copy of ``image`` with a white 1-pixel frame around each region (given in the pixels of ``image_shape``)."""
    framed = np.array(image)
    for first_row, last_row, first_col, last_col in _region_pixels(image.shape, regions, image_shape):
        framed[[first_row, last_row], first_col:last_col + 1] = 255
        framed[first_row:last_row + 1, [first_col, last_col]] = 255
    return framed


def _region_pixels(shape: tuple[int, ...], regions: Sequence[tuple[float, float, float, float]],
                   image_shape: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Each region (in the pixels of ``image_shape``) as the first and last row and column it covers in an image
    of ``shape``."""
    row_scale, col_scale = shape[0] / image_shape[0], shape[1] / image_shape[1]
    pixels = []
    for top, left, height, width in regions:
        # A region thinner than a preview pixel at the far edge rounds to past it: kept on the last pixel.
        first_row, first_col = min(round(top * row_scale), shape[0] - 1), min(round(left * col_scale), shape[1] - 1)
        pixels.append((first_row, max(first_row, min(shape[0], round((top + height) * row_scale)) - 1),
                       first_col, max(first_col, min(shape[1], round((left + width) * col_scale)) - 1)))
    return pixels


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """``image`` (H, W, 3 uint8) blended with ``heatmap`` (H, W in 0..1) in the matplotlib colormap
    ``DEFAULTS.colormap``, at ``DEFAULTS.heatmap_opacity``."""
    import matplotlib

    opacity = DEFAULTS.heatmap_opacity
    colours = matplotlib.colormaps[DEFAULTS.colormap](np.clip(heatmap, 0.0, 1.0))[..., :3] * 255.0
    blended = (1.0 - opacity) * image.astype(np.float32) + opacity * colours
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
