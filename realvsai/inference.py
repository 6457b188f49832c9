"""Serving a trained model: find the runs, load one, decode uploads, predict in batches, explain.

    results = inference.classify_uploads(classifier, [("cat.jpg", jpeg_bytes)])

Each upload goes through the model's own ``resize`` layer before the uploads are stacked into one
batch, so a batch gives the probabilities of each image alone. TensorFlow is imported lazily.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from realvsai.config import CROP_GRID, MAX_IMAGE_PIXELS, METRICS_FILE, MODEL_FILE, MODEL_JSON_FILE
from realvsai.errors import UserError
from realvsai.image_stats import unfamiliar_reason
from realvsai.images import ImageDecodeError, load_rgb, read_header
from realvsai.metrics import DecisionRule

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

logger = logging.getLogger(__name__)

UPLOAD_TYPES = ("jpg", "jpeg", "png", "webp", "bmp")
# What the app says at the top and beside every answer of a demo model, and its model card says too.
DEMO_WARNING = "Demo model trained on synthetic data: it detects nothing real."
# Metrics worth a headline on the app's model card, in the order shown (all written by evaluation).
HEADLINE_METRICS = ("accuracy", "f1", "roc_auc", "precision", "recall")


@dataclass(frozen=True)
class ServeConfig:
    """Defaults of the app and of the prediction path, held once."""

    models_dir: Path = Path("models")
    batch_size: int = 16  # uploads per model call
    max_pixels: int = MAX_IMAGE_PIXELS  # larger uploads are refused before decoding (decompression bombs)
    preview_size: int = 384  # longest side of the picture shown per upload, in pixels
    colormap: str = "turbo"  # matplotlib colormap of the Grad-CAM overlay (jet's perceptual successor)
    # Grad-CAM explains from the deepest feature map at least this many cells a side; a smaller one
    # cannot say where (ResNet's last block is 1x1 at 32 px, so the map would be one flat tint).
    grad_cam_min_size: int = 4
    heatmap_opacity: float = 0.45


DEFAULTS = ServeConfig()


def is_demo(info: Mapping[str, Any]) -> bool:
    """Whether model.json says the model was trained on the synthetic demo data (``--demo``)."""
    config = info.get("config") or {}
    return bool(info.get("demo") or (isinstance(config, Mapping) and config.get("demo")))


@dataclass(frozen=True)
class ModelRun:
    """One trained model on disk: ``model.h5`` with its ``model.json`` (and ``metrics.json``)."""

    path: Path  # the run folder
    model_file: Path
    info: dict[str, Any]  # model.json
    metrics: dict[str, Any]  # metrics.json; empty when the run has none
    created: datetime  # timezone-aware
    class_names: list[str]
    image_size: int
    demo: bool
    confidence_threshold: float

    @property
    def name(self) -> str:
        return self.path.name

    def test_metrics(self) -> dict[str, float]:
        """Headline test metrics: model.json's ``test_metrics``, else the numbers metrics.json holds."""
        for source in (self.info.get("test_metrics"), self.metrics):
            found = {name: float(source[name]) for name in HEADLINE_METRICS if isinstance(source, dict)
                     and isinstance(source.get(name), int | float) and not isinstance(source.get(name), bool)}
            if found:
                return found
        return {}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path} cannot be read ({error}). Train the model again or restore the file.") from error
    if not isinstance(value, dict):
        raise UserError(f"{path} does not hold a JSON object. Train the model again or restore the file.")
    return value


def read_run(path: Path) -> ModelRun:
    """Reads a run folder, or a ``model.h5`` with its ``model.json`` beside it (UserError if unusable)."""
    path = Path(path)
    folder, model_file = (path.parent, path) if path.suffix.lower() in (".h5", ".keras") else (path, path / MODEL_FILE)
    if not model_file.is_file():
        raise UserError(f"{model_file} does not exist. Give a run folder under models/ or its model.h5, "
                        "or train one with: python ModelTraining.py --demo")
    info_file = folder / MODEL_JSON_FILE
    if not info_file.is_file():
        raise UserError(f"{info_file} is missing: the app needs it for the class names and image size. "
                        "Use a folder written by ModelTraining.py.")
    info = _read_json(info_file)
    class_names, image_size = info.get("class_names"), info.get("image_size")
    if not isinstance(class_names, list) or len(class_names) < 2:
        raise UserError(f"{info_file} has no list of at least two class_names. Train the model again.")
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size <= 0:
        raise UserError(f"{info_file} has no positive integer image_size. Train the model again.")
    try:
        rule = DecisionRule.from_model_info(info)
    except ValueError as error:
        raise UserError(f"{info_file}: its positive_class does not fit ({error}). Set positive_class to one "
                        "of the class_names, or train the model again.") from error
    metrics = {}
    if (folder / METRICS_FILE).is_file():
        try:
            metrics = _read_json(folder / METRICS_FILE)
        except UserError as error:  # the metrics only decorate the model card; the model still works
            logger.warning("%s", error)
    # model.json's creation time (a naive one is local), else the model file's.
    created = datetime.fromtimestamp(model_file.stat().st_mtime, tz=timezone.utc)
    if isinstance(info.get("created"), str):
        try:
            created = datetime.fromisoformat(info["created"]).astimezone()
        except ValueError:
            logger.warning("%s: created %r is not an ISO time; using the file's time", folder, info["created"])
    return ModelRun(folder, model_file, info, metrics, created, [str(name) for name in class_names], image_size,
                    is_demo(info), rule.confidence_threshold)


def list_runs(models_dir: Path) -> tuple[list[ModelRun], list[tuple[Path, str]]]:
    """The usable runs under ``models_dir`` (sub-folders holding model.h5), newest first, and those skipped, why."""
    models_dir = Path(models_dir)
    runs, skipped = [], []
    # A folder without model.h5 is a run still training, or notes.
    folders = sorted(child for child in models_dir.iterdir() if not child.name.startswith(".")
                     and (child / MODEL_FILE).is_file()) if models_dir.is_dir() else []
    for folder in folders:
        try:
            runs.append(read_run(folder))
        except UserError as error:
            logger.warning("skipping %s: %s", folder, error)
            skipped.append((folder, str(error)))
    runs.sort(key=lambda run: (run.created, run.name), reverse=True)
    return runs, skipped


class Classifier:
    """A loaded model with its class names, a batched predict path and Grad-CAM (each traced once)."""

    def __init__(self, model: keras.Model, class_names: Sequence[str], image_size: int,
                 input_mode: str = "resize") -> None:
        import tensorflow as tf

        from realvsai.data import grid_crops
        from realvsai.model import crop_averaging

        self.model = model
        self.class_names = list(class_names)
        self.image_size = int(image_size)
        crops = input_mode == "crops"
        # decode_upload's image_size: crops mode sees native pixels, so no reduced JPEG decode there.
        self.decode_size = None if crops else self.image_size
        outputs = int(model.outputs[0].shape[-1])
        if outputs != len(self.class_names):
            raise UserError(f"the model outputs {outputs} classes, but model.json names {len(self.class_names)} "
                            f"({self.class_names}). The files do not belong together: train the model again.")
        self._resize = model.get_layer("resize")  # the model contract: build_model names it so
        # Crops mode: each image is its grid of crops (data.grid_crops), the softmax averaged over them.
        self._prepare_fn = tf.function(lambda image: grid_crops(image, self.image_size) if crops
                                       else self._resize(tf.cast(image, tf.float32)[tf.newaxis])[0],
                                       input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
        predictor = crop_averaging(model, self.image_size) if crops else model
        shape = [None, CROP_GRID**2, self.image_size, self.image_size, 3] if crops else [None, None, None, 3]
        self._call = tf.function(lambda batch: predictor(batch, training=False),
                                 input_signature=[tf.TensorSpec(shape, tf.float32)])
        self._grad_cam_fn = tf.function(self._grad_cam_graph, input_signature=[
            tf.TensorSpec([None, None, 3], tf.float32), tf.TensorSpec([], tf.int32)])

    def prepare(self, image: np.ndarray) -> tf.Tensor:
        """An (H, W, 3) uint8 image as the float32 (size, size, 3) tensor, or crops mode's (9, size, size, 3)."""
        return self._prepare_fn(np.ascontiguousarray(image, dtype=np.uint8))

    def predict_prepared(self, batch: tf.Tensor | np.ndarray) -> np.ndarray:
        """Probabilities (N, classes) of a float32 batch of prepared images, in one model call."""
        return self._call(batch).numpy()

    @functools.cached_property
    def grad_cam_layer(self) -> keras.layers.Layer | None:
        """The deepest backbone block output (ResNet's ``*_out`` layers, else any) at least 4x4; None if none is."""
        layers = [layer for layer in self.model.get_layer("backbone").layers if len(layer.output.shape) == 4]
        blocks = [layer for layer in layers if layer.name.endswith("_out")] or layers
        size = DEFAULTS.grad_cam_min_size
        return next((layer for layer in reversed(blocks) if min(layer.output.shape[1:3]) >= size), None)

    def _grad_cam_graph(self, image: tf.Tensor, class_index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        import keras
        import tensorflow as tf

        layers, backbone = self.model.layers, self.model.get_layer("backbone")
        # The backbone, giving the explained feature map as well as its own output (built once: traced once).
        explaining = keras.Model(backbone.inputs, [self.grad_cam_layer.output, backbone.outputs[0]])
        pixels = self.model.get_layer("preprocess")(self._resize(image[tf.newaxis]))  # no training-only augmentation
        with tf.GradientTape() as tape:
            # Watched: a frozen backbone has no trainable variables that would make the tape record it.
            tape.watch(pixels)
            explained, hidden = explaining(pixels, training=False)
            for layer in layers[layers.index(backbone) + 1:-1]:  # the head up to its last Dense
                hidden = layer(hidden, training=False)
            last = layers[-1]  # the softmax Dense "predictions": its logits do not saturate near 1
            logits = tf.cast(tf.matmul(tf.cast(hidden, last.kernel.dtype), last.kernel) + last.bias, tf.float32)
            target = tf.where(class_index < 0, tf.argmax(logits[0], output_type=tf.int32), class_index)
            # Minus the mean logit: softmax ignores a shift shared by all logits, so only this is evidence.
            score = logits[0, target] - tf.reduce_mean(logits[0])
        gradients = tf.cast(tape.gradient(score, explained), tf.float32)[0]  # (h, w, channels)
        cam = tf.nn.relu(tf.reduce_sum(tf.cast(explained[0], tf.float32) * tf.reduce_mean(gradients, axis=(0, 1)),
                                       axis=-1))
        return tf.math.divide_no_nan(cam, tf.reduce_max(cam)), target

    def grad_cam(self, image: np.ndarray, class_index: int | None = None,
                 output_size: tuple[int, int] | None = None) -> np.ndarray:
        """Grad-CAM heatmap (float32 in [0, 1], ``output_size`` or the image's) for ``class_index`` (default: argmax).

        Raises:
            ValueError: when no feature map is large enough to localise.
        """
        import tensorflow as tf

        if self.grad_cam_layer is None:
            raise ValueError(f"Grad-CAM cannot localise at {self.image_size} px: every feature map of the backbone "
                             f"is smaller than {DEFAULTS.grad_cam_min_size}x{DEFAULTS.grad_cam_min_size}")
        # The whole image through the model's own resize (crops mode too: one map for the whole image).
        cam, _ = self._grad_cam_fn(tf.cast(image, tf.float32), tf.constant(-1 if class_index is None else class_index))
        heatmap = tf.image.resize(cam[..., tf.newaxis], output_size or image.shape[:2], method="bilinear")[..., 0]
        return np.clip(heatmap.numpy(), 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class UploadResult:
    """What became of one uploaded file."""

    name: str
    probabilities: np.ndarray | None = None  # (classes,) float32; None when it could not be classified
    error: str | None = None  # why not, for the user
    preview: np.ndarray | None = field(default=None, repr=False)  # a small upright RGB copy to show
    size: tuple[int, int] | None = None  # (width, height) of the file's image
    unfamiliar: str | None = None  # why the image is unlike the training images

    @property
    def ok(self) -> bool:
        return self.probabilities is not None

    def answer(self, rule: DecisionRule) -> tuple[int, bool]:
        """The class index ``rule`` decides and whether the answer is Uncertain (always, when unfamiliar)."""
        unfamiliar = self.unfamiliar is not None
        return int(rule.decide(self.probabilities)), bool(rule.uncertain(self.probabilities, unfamiliar))


def decode_upload(data: bytes, max_pixels: int = DEFAULTS.max_pixels, image_size: int | None = None) -> np.ndarray:
    """An upload's bytes as an upright (H, W, 3) uint8 RGB image (ImageDecodeError if unusable)."""
    return load_rgb(bytes(data), max_pixels, image_size)


def preview_image(image: np.ndarray, max_side: int = DEFAULTS.preview_size) -> np.ndarray:
    """A copy of ``image`` no longer than ``max_side`` on either side (fast box reduction)."""
    factor = math.ceil(max(image.shape[:2]) / max_side)
    return np.asarray(Image.fromarray(image).reduce(factor)) if factor > 1 else image


def classify_uploads(classifier: Classifier, uploads: Iterable[tuple[str, bytes]], *,
                     batch_size: int = DEFAULTS.batch_size, max_pixels: int = DEFAULTS.max_pixels,
                     profile: Mapping[str, Any] | None = None) -> list[UploadResult]:
    """Classifies uploads in order, ``batch_size`` per model call, holding one full-size image at a time.

    A file that fails gets an ``error`` and the others go on; one far outside ``profile`` gets ``unfamiliar``.
    """
    import tensorflow as tf

    slots: list[dict[str, Any]] = []
    prepared: list[tuple[dict[str, Any], tf.Tensor]] = []  # resized, so they hold little memory
    for name, data in uploads:
        slot: dict[str, Any] = {"name": name}
        slots.append(slot)
        try:
            image = decode_upload(data, max_pixels, classifier.decode_size)
            header = read_header(data, max_pixels)  # the file's own size: a large JPEG is decoded reduced
            tensor = classifier.prepare(image)
            slot.update(preview=preview_image(image), size=(header.width, header.height),
                        unfamiliar=unfamiliar_reason(profile, header.width, header.height, header.image_format))
            prepared.append((slot, tensor))
        except ImageDecodeError as error:
            slot["error"] = str(error)
        except Exception as error:  # whatever one upload does, the others are still classified
            logger.exception("unexpected error on %s", name)
            slot["error"] = f"unexpected error ({type(error).__name__}: {error})"
    for start in range(0, len(prepared), batch_size):
        batch = prepared[start:start + batch_size]
        try:
            probabilities = classifier.predict_prepared(tf.stack([tensor for _, tensor in batch]))
        except Exception as error:  # the app must go on; the files of this batch are named instead
            logger.exception("the model failed on a batch")
            for slot, _ in batch:
                slot.update(error=f"the model failed ({type(error).__name__}: {error})", preview=None)
        else:
            for (slot, _), row in zip(batch, probabilities):
                slot["probabilities"] = row
    return [UploadResult(**slot) for slot in slots]


def explain_upload(classifier: Classifier, data: bytes, *, class_index: int | None = None,
                   max_pixels: int = DEFAULTS.max_pixels, preview_size: int = DEFAULTS.preview_size) -> np.ndarray:
    """The upload's preview with the Grad-CAM heatmap of ``class_index`` (default: argmax) laid over it."""
    image = decode_upload(data, max_pixels, classifier.decode_size)
    preview = preview_image(image, preview_size)
    return overlay_heatmap(preview, classifier.grad_cam(image, class_index, output_size=preview.shape[:2]))


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, *, opacity: float = DEFAULTS.heatmap_opacity,
                    colormap: str = DEFAULTS.colormap) -> np.ndarray:
    """``image`` (H, W, 3 uint8) blended with ``heatmap`` (H, W in 0..1) in a matplotlib colormap."""
    import matplotlib

    colours = matplotlib.colormaps[colormap](np.clip(heatmap, 0.0, 1.0))[..., :3] * 255.0
    blended = (1.0 - opacity) * image.astype(np.float32) + opacity * colours
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
