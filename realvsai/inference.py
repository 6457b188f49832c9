"""Serving a trained model: find the runs, load one, decode uploads, predict in batches, explain.

    from realvsai import inference, model
    runs, _ = inference.list_runs(Path("models"))
    classifier = inference.Classifier(model.load_classifier(runs[0].model_file)[0], runs[0].class_names,
                                      runs[0].image_size)
    results = inference.classify_uploads(classifier, [("cat.jpg", jpeg_bytes)])
    heatmap = classifier.grad_cam(image)  # (H, W) float32 in [0, 1]

The model does its own resizing and preprocessing (raw RGB 0..255 in), so the app sees what
training saw. Each upload is cropped to its centre square and resized to the model's image size
with the model's own ``resize`` layer before the uploads are stacked into one batch; the model's
resize is then a no-op, so a batch gives the same probabilities as calling the model on each
original image.

TensorFlow and Keras are imported when a model is used, so listing runs stays instant.
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

from realvsai.config import CONFIDENCE_THRESHOLD, CROP_GRID, MAX_IMAGE_PIXELS, METRICS_FILE, MODEL_FILE, MODEL_JSON_FILE
from realvsai.decision import DecisionRule
from realvsai.errors import UserError
from realvsai.image_stats import unfamiliar_reason
from realvsai.images import ImageDecodeError, load_rgb, read_header

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

logger = logging.getLogger(__name__)

UPLOAD_TYPES = ("jpg", "jpeg", "png", "webp", "bmp")
# The layers Grad-CAM runs before the backbone; "augmentation" is skipped (it only acts in training).
_AUGMENTATION_LAYER, _BACKBONE_LAYER, _RESIZE_LAYER = "augmentation", "backbone", "resize"
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
    confidence_threshold: float = CONFIDENCE_THRESHOLD  # "Uncertain" below this, when model.json names none
    preview_size: int = 384  # longest side of the picture shown per upload, in pixels
    colormap: str = "turbo"  # matplotlib colormap of the Grad-CAM overlay (jet's perceptual successor)
    # Grad-CAM explains from the deepest feature map at least this many cells on each side; a smaller
    # one cannot say where (ResNet's last block is 1x1 at 32 px, so the map would be one flat tint).
    grad_cam_min_size: int = 4
    heatmap_opacity: float = 0.45


DEFAULTS = ServeConfig()


# ----------------------------------------------------------------------------------- run folders


def training_profile(info: Mapping[str, Any]) -> dict[str, Any] | None:
    """The training images' sides and formats that model.json records as ``training_images``, or None.

    A model trained before the profile was recorded has none, and then no image is flagged unfamiliar.
    """
    profile = info.get("training_images")
    return dict(profile) if isinstance(profile, Mapping) and "min_side" in profile and "max_side" in profile else None


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

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def class_names(self) -> list[str]:
        return [str(name) for name in self.info["class_names"]]

    @property
    def image_size(self) -> int:
        return int(self.info["image_size"])

    @property
    def demo(self) -> bool:
        return is_demo(self.info)

    @property
    def confidence_threshold(self) -> float:
        return self.decision_rule().confidence_threshold

    def decision_rule(self, confidence_threshold: float | None = None) -> DecisionRule:
        """The rule this model decides by; ``confidence_threshold`` replaces model.json's."""
        return DecisionRule.from_model_info(self.info, confidence_threshold)

    def test_metrics(self) -> dict[str, float]:
        """Headline test metrics: model.json's ``test_metrics``, else the numbers metrics.json holds."""
        for source in (self.info.get("test_metrics"), self.metrics.get("test"), self.metrics):
            if isinstance(source, dict):
                found = {name: float(source[name]) for name in HEADLINE_METRICS
                         if isinstance(source.get(name), int | float) and not isinstance(source.get(name), bool)}
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


def _created(info: dict[str, Any], model_file: Path) -> datetime:
    """model.json's ``created`` time (naive times are taken as local), else the model file's mtime."""
    text = info.get("created")
    if isinstance(text, str):
        try:
            moment = datetime.fromisoformat(text)
            return moment.astimezone() if moment.tzinfo is None else moment
        except ValueError:
            logger.warning("%s: created %r is not an ISO time; using the file's time", model_file.parent, text)
    return datetime.fromtimestamp(model_file.stat().st_mtime, tz=timezone.utc)


def read_run(path: Path) -> ModelRun:
    """Reads a run folder, or a ``model.h5`` with its ``model.json`` beside it.

    Raises:
        UserError: if the model file or its model.json is missing or lacks class names / image size.
    """
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
        DecisionRule.from_model_info(info)
    except ValueError as error:
        raise UserError(f"{info_file}: its positive_class does not fit ({error}). Set positive_class to one "
                        "of the class_names, or train the model again.") from error
    metrics_file = folder / METRICS_FILE
    try:
        metrics = _read_json(metrics_file) if metrics_file.is_file() else {}
    except UserError as error:  # the metrics only decorate the model card; the model still works
        logger.warning("%s", error)
        metrics = {}
    return ModelRun(folder, model_file, info, metrics, _created(info, model_file))


def list_runs(models_dir: Path) -> tuple[list[ModelRun], list[tuple[Path, str]]]:
    """The usable runs under ``models_dir``, newest first, and the folders skipped with the reason.

    A run is a sub-folder holding ``model.h5``; folders without one (a run still training, notes)
    are ignored, and those whose model.json is missing or broken are returned as skipped.
    """
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return [], []
    runs, skipped = [], []
    for folder in sorted(child for child in models_dir.iterdir() if child.is_dir() and not child.name.startswith(".")):
        if not (folder / MODEL_FILE).is_file():
            continue
        try:
            runs.append(read_run(folder))
        except UserError as error:
            logger.warning("skipping %s: %s", folder, error)
            skipped.append((folder, str(error)))
    runs.sort(key=lambda run: (run.created, run.name), reverse=True)
    return runs, skipped


# ------------------------------------------------------------------------------------- the model


class Classifier:
    """A loaded model with its class names, a batched predict path and Grad-CAM.

    The model is called through ``tf.function``s with fixed input signatures, so it is traced
    once, not once per upload size or batch size.
    """

    def __init__(self, model: keras.Model, class_names: Sequence[str], image_size: int,
                 input_mode: str = "resize") -> None:
        import tensorflow as tf

        from realvsai.model import crop_averaging

        self.model = model
        self.class_names = list(class_names)
        self.image_size = int(image_size)
        self.input_mode = input_mode
        # decode_upload's image_size: crops mode sees native pixels, so no reduced JPEG decode there.
        self.decode_size = None if input_mode == "crops" else self.image_size
        outputs = int(model.outputs[0].shape[-1]) if getattr(model, "outputs", None) else None
        if outputs is not None and outputs != len(self.class_names):
            raise UserError(f"the model outputs {outputs} classes, but model.json names {len(self.class_names)} "
                            f"({self.class_names}). The files do not belong together: train the model again.")
        self._resize = model.get_layer(_RESIZE_LAYER)  # the model contract: build_model names it so
        image = tf.TensorSpec([None, None, 3], tf.uint8)
        self._prepare_fn = tf.function(self._prepare_graph, input_signature=[image])
        # Crops mode: each image is its grid of crops (data.grid_crops), the softmax averaged over them.
        crops = input_mode == "crops"
        predictor = crop_averaging(model, self.image_size) if crops else model
        shape = [None, CROP_GRID**2, self.image_size, self.image_size, 3] if crops else [None, None, None, 3]
        self._call = tf.function(lambda batch: predictor(batch, training=False),
                                 input_signature=[tf.TensorSpec(shape, tf.float32)])
        self._grad_cam_fn = tf.function(self._grad_cam_graph, input_signature=[
            tf.TensorSpec([None, None, 3], tf.float32), tf.TensorSpec([], tf.int32)])

    def _prepare_graph(self, image: tf.Tensor) -> tf.Tensor:
        import tensorflow as tf

        from realvsai.data import grid_crops
        if self.input_mode == "crops":
            return grid_crops(image, self.image_size)
        # The model's own resize layer, so the resize here equals the one inside the model (the
        # centre square, antialiased); the model's resize of an image already at image_size is a no-op.
        return self._resize(tf.cast(image, tf.float32)[tf.newaxis])[0]

    def prepare(self, image: np.ndarray) -> tf.Tensor:
        """An (H, W, 3) uint8 image as the float32 (size, size, 3) tensor, or crops mode's (9, size, size, 3)."""
        return self._prepare_fn(np.ascontiguousarray(image, dtype=np.uint8))

    def predict_prepared(self, batch: tf.Tensor | np.ndarray) -> np.ndarray:
        """Probabilities (N, classes) of a batch of prepared images, in one model call."""
        import tensorflow as tf

        return self._call(tf.convert_to_tensor(batch, tf.float32)).numpy()

    def predict(self, images: Sequence[np.ndarray], batch_size: int = DEFAULTS.batch_size) -> np.ndarray:
        """Probabilities (N, classes) of decoded (H, W, 3) uint8 images of any sizes, batch by batch."""
        import tensorflow as tf

        rows = [self.predict_prepared(tf.stack([self.prepare(image) for image in images[start:start + batch_size]]))
                for start in range(0, len(images), batch_size)]
        return np.concatenate(rows) if rows else np.zeros((0, len(self.class_names)), np.float32)

    # ------------------------------------------------------------------------------- Grad-CAM

    def _split_layers(self) -> tuple[list[Any], Any, list[Any]]:
        import keras

        layers = [layer for layer in self.model.layers if not isinstance(layer, keras.layers.InputLayer)]
        names = [layer.name for layer in layers]
        if _BACKBONE_LAYER not in names:
            raise ValueError(f"Grad-CAM needs a layer named {_BACKBONE_LAYER!r}; this model has {names}")
        index = names.index(_BACKBONE_LAYER)
        before = [layer for layer in layers[:index] if layer.name != _AUGMENTATION_LAYER]
        return before, layers[index], layers[index + 1:]

    @functools.cached_property
    def grad_cam_layer(self) -> keras.layers.Layer | None:
        """The backbone layer Grad-CAM explains from: the deepest block output at least 4x4.

        Block outputs are ResNet's ``*_out`` layers, which every path to the output passes through (the
        next block's shortcut starts there); a backbone without them offers all of its layers. At 224 px
        this is the last block (7x7); at 32 px, where the last block is 1x1, the last 4x4 one. None when
        no feature map is that large (a heatmap could not localise).
        """
        layers = [layer for layer in self._split_layers()[1].layers if len(layer.output.shape) == 4]
        blocks = [layer for layer in layers if layer.name.endswith("_out")] or layers
        if layers and blocks[-1] is not layers[-1]:
            blocks.append(layers[-1])  # the backbone's own output counts as a block output
        size = DEFAULTS.grad_cam_min_size
        return next((layer for layer in reversed(blocks) if min(layer.output.shape[1:3]) >= size), None)

    @functools.cached_property
    def _grad_cam_backbone(self) -> keras.Model:
        """The backbone, giving the explained feature map as well as its own output."""
        import keras

        backbone = self._split_layers()[1]
        return keras.Model(backbone.inputs, [self.grad_cam_layer.output, backbone.outputs[0]])

    def _grad_cam_graph(self, image: tf.Tensor, class_index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        import keras
        import tensorflow as tf

        before, _, head = self._split_layers()
        pixels = image[tf.newaxis]
        for layer in before:
            pixels = layer(pixels, training=False)
        with tf.GradientTape() as tape:
            # The explained map is inside the backbone: the tape records the backbone from its input
            # (a frozen backbone has no trainable variables that would make it record by itself).
            tape.watch(pixels)
            explained, features = self._grad_cam_backbone(pixels, training=False)
            hidden = features
            for layer in head[:-1]:
                hidden = layer(hidden, training=False)
            last = head[-1]
            if isinstance(last, keras.layers.Dense) and last.activation is keras.activations.softmax:
                logits = tf.matmul(tf.cast(hidden, last.kernel.dtype), last.kernel)
                logits = logits + last.bias if last.use_bias else logits
                probabilities = tf.nn.softmax(logits)
            else:
                probabilities = tf.cast(last(hidden, training=False), tf.float32)
                logits = tf.math.log(probabilities + 1e-12)
            logits = tf.cast(logits, tf.float32)
            target = tf.where(class_index < 0, tf.argmax(probabilities[0], output_type=tf.int32), class_index)
            # The class's logit minus the mean logit: softmax ignores a shift shared by all logits,
            # so only this centred score is evidence for the class over the others (for two classes
            # it is half the log-odds), and unlike the probability it does not saturate near 1.
            score = logits[0, target] - tf.reduce_mean(logits[0])
        gradients = tf.cast(tape.gradient(score, explained), tf.float32)[0]  # (h, w, channels)
        channel_weights = tf.reduce_mean(gradients, axis=(0, 1))
        cam = tf.nn.relu(tf.reduce_sum(tf.cast(explained[0], tf.float32) * channel_weights, axis=-1))
        peak = tf.reduce_max(cam)
        cam = tf.where(peak > 0, cam / tf.maximum(peak, 1e-12), tf.zeros_like(cam))
        return cam, target

    def grad_cam(self, image: np.ndarray, class_index: int | None = None,
                 output_size: tuple[int, int] | None = None) -> np.ndarray:
        """Grad-CAM heatmap of ``image`` for ``class_index`` (default: the most probable class).

        Gradients of the class score with respect to the feature map of ``grad_cam_layer`` (the
        backbone's last block, or the deepest one still 4x4 at small image sizes), averaged over
        space, weight its channels; the weighted map's positive part, scaled to a peak of 1 and
        upsampled, shows where the evidence for the class lies.

        Args:
            image: an (H, W, 3) uint8 image, as decoded.
            class_index: the class to explain; None explains the predicted one.
            output_size: (height, width) of the heatmap; default the image's.

        Returns:
            A float32 (height, width) array in [0, 1]; all zeros when nothing speaks for the class.

        Raises:
            ValueError: for an unknown class, or when no feature map is large enough to localise.
        """
        import tensorflow as tf

        if self.grad_cam_layer is None:
            raise ValueError(f"Grad-CAM cannot localise at {self.image_size} px: every feature map of the backbone "
                             f"is smaller than {DEFAULTS.grad_cam_min_size}x{DEFAULTS.grad_cam_min_size}")
        if class_index is not None and not 0 <= class_index < len(self.class_names):
            raise ValueError(f"class_index {class_index} is not one of the {len(self.class_names)} classes")
        # The whole image through the model's own resize (crops mode too: one map for the whole image).
        cam, _ = self._grad_cam_fn(tf.cast(image, tf.float32), tf.constant(-1 if class_index is None else class_index,
                                                                             tf.int32))
        height, width = output_size or image.shape[:2]
        heatmap = tf.image.resize(cam[..., tf.newaxis], (height, width), method="bilinear")[..., 0]
        return np.clip(heatmap.numpy(), 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------------------- uploads


@dataclass(frozen=True)
class UploadResult:
    """What became of one uploaded file."""

    name: str
    probabilities: np.ndarray | None = None  # (classes,) float32; None when it could not be classified
    error: str | None = None  # why not, for the user
    preview: np.ndarray | None = field(default=None, repr=False)  # a small upright RGB copy to show
    size: tuple[int, int] | None = None  # (width, height) of the decoded image
    unfamiliar: str | None = None  # why the image is unlike the training images; None when it is like them

    @property
    def ok(self) -> bool:
        return self.probabilities is not None

    def answer(self, rule: DecisionRule) -> tuple[int, bool]:
        """The class ``rule`` decides (its index) and whether the answer is Uncertain (always, when unfamiliar)."""
        return (int(rule.decide(self.probabilities)),
                bool(rule.uncertain(self.probabilities, self.unfamiliar is not None)))


def decode_upload(data: bytes, max_pixels: int = DEFAULTS.max_pixels, image_size: int | None = None) -> np.ndarray:
    """An upload's bytes as an upright (H, W, 3) uint8 RGB image (``images.load_rgb``; large JPEGs reduced).

    Raises:
        ImageDecodeError: if it is not an image, is broken, or has more than ``max_pixels`` pixels.
    """
    return load_rgb(bytes(data), max_pixels, image_size)


def preview_image(image: np.ndarray, max_side: int = DEFAULTS.preview_size) -> np.ndarray:
    """A copy of ``image`` no longer than ``max_side`` on either side (fast box reduction)."""
    factor = math.ceil(max(image.shape[:2]) / max_side)
    if factor <= 1:
        return image
    return np.asarray(Image.fromarray(image).reduce(factor))


def classify_uploads(
    classifier: Classifier,
    uploads: Iterable[tuple[str, bytes]],
    *,
    batch_size: int = DEFAULTS.batch_size,
    max_pixels: int = DEFAULTS.max_pixels,
    preview_size: int = DEFAULTS.preview_size,
    profile: Mapping[str, Any] | None = None,
) -> list[UploadResult]:
    """Classifies uploaded files, ``batch_size`` images per model call, in upload order.

    Each file is decoded and resized as it comes, so memory holds at most one full-size image.
    A file that is not an image, is too large or fails in any other way gets a result with an
    ``error`` for the user; the other files are classified all the same. With the training images'
    ``profile`` (model.json's ``training_images``), an upload far outside it gets ``unfamiliar``.
    """
    import tensorflow as tf

    slots: list[dict[str, Any]] = []
    pending: list[tuple[int, tf.Tensor]] = []

    def flush() -> None:
        if not pending:
            return
        try:
            probabilities = classifier.predict_prepared(tf.stack([prepared for _, prepared in pending]))
        except Exception as error:  # the app must go on; the files of this batch are named instead
            logger.exception("the model failed on a batch")
            for index, _ in pending:
                slots[index].update(error=f"the model failed ({type(error).__name__}: {error})", preview=None)
        else:
            for (index, _), row in zip(pending, probabilities):
                slots[index]["probabilities"] = row
        pending.clear()

    for name, data in uploads:
        slot: dict[str, Any] = {"name": name}
        slots.append(slot)
        try:
            image = decode_upload(data, max_pixels, classifier.decode_size)
            header = read_header(data, max_pixels)
            prepared = classifier.prepare(image)
            slot.update(preview=preview_image(image, preview_size), size=(header.width, header.height))
            if profile:
                slot["unfamiliar"] = unfamiliar_reason(profile, header.width, header.height, header.image_format)
            pending.append((len(slots) - 1, prepared))
        except ImageDecodeError as error:
            slot["error"] = str(error)
        except Exception as error:  # whatever one upload does, the others are still classified
            logger.exception("unexpected error on %s", name)
            slot["error"] = f"unexpected error ({type(error).__name__}: {error})"
        if len(pending) >= batch_size:
            flush()
    flush()
    return [UploadResult(**slot) for slot in slots]


def explain_upload(classifier: Classifier, data: bytes, *, class_index: int | None = None,
                   max_pixels: int = DEFAULTS.max_pixels, preview_size: int = DEFAULTS.preview_size,
                   opacity: float = DEFAULTS.heatmap_opacity, colormap: str = DEFAULTS.colormap) -> np.ndarray:
    """The upload's preview with the Grad-CAM heatmap of ``class_index`` (default: argmax) laid over it.

    Raises:
        ImageDecodeError: if the data is not a usable image.
    """
    image = decode_upload(data, max_pixels, classifier.decode_size)
    preview = preview_image(image, preview_size)
    heatmap = classifier.grad_cam(image, class_index, output_size=preview.shape[:2])
    return overlay_heatmap(preview, heatmap, opacity=opacity, colormap=colormap)


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, *, opacity: float = DEFAULTS.heatmap_opacity,
                    colormap: str = DEFAULTS.colormap) -> np.ndarray:
    """``image`` (H, W, 3 uint8) blended with ``heatmap`` (values 0..1) coloured by a matplotlib colormap.

    The heatmap is resized to the image when their sizes differ.
    """
    import matplotlib

    if heatmap.shape[:2] != image.shape[:2]:
        resized = Image.fromarray(np.asarray(heatmap, np.float32), mode="F").resize(
            (image.shape[1], image.shape[0]), Image.BILINEAR)
        heatmap = np.asarray(resized)
    colours = matplotlib.colormaps[colormap](np.clip(heatmap, 0.0, 1.0))[..., :3] * 255.0
    blended = (1.0 - opacity) * image.astype(np.float32) + opacity * colours
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
