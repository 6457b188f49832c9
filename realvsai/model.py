"""The classifier: raw RGB 0..255 of any size in, softmax out, with a ResNet backbone and the project's head.

Layers, by name and in order (the app, Grad-CAM and the tests rely on them): ``augmentation``
(optional, training only), ``resize`` (SquareResize), ``preprocess`` (caffe), ``backbone``,
``head_noise``, ``head_pool``, ``head_dense``, ``head_dropout``, ``predictions`` (float32 softmax).
Importing the module registers the custom layers, so ``keras.models.load_model`` reads model.h5.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import h5py
import keras
from keras import ops

from realvsai.augmentation import build_augmentation, layer_seed  # also registers its layers for load_model
from realvsai.config import BACKBONES, CROP_GRID, TrainConfig, weights_source
from realvsai.errors import UserError

APPLICATIONS = {
    "resnet50": keras.applications.ResNet50,
    "resnet101": keras.applications.ResNet101,
    "resnet152": keras.applications.ResNet152,
}
# Where keras.applications caches (and checks, by its hash) the ImageNet weights it downloads.
KERAS_MODELS_DIR = Path.home() / ".keras" / "models"
# ImageNet channel means in BGR order (keras.applications.imagenet_utils, mode "caffe").
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# From-scratch recipe: the moving statistics follow the weights within a few dozen steps instead
# of Keras' default 0.99 (several hundred), so validation in the first epochs is meaningful.
SCRATCH_BATCHNORM_MOMENTUM = 0.9
_FLOAT32_STEM = ("conv1_pad", "conv1_conv")  # the backbone's layers that take the pixels (keras.applications' names)
_RESIDUAL_LAST_BN = re.compile(r"^conv\d+_block\d+_3_bn$")
_BLOCK = re.compile(r"^(conv\d+_block\d+)_")
_DEFAULTS = TrainConfig()  # build_model's defaults: training's, defined once in config.py


@keras.saving.register_keras_serializable(package="realvsai")
class CaffePreprocess(keras.layers.Layer):
    """``keras.applications.resnet.preprocess_input`` (RGB 0..255 -> BGR minus the ImageNet means) as a layer."""

    def call(self, inputs):
        bgr = ops.flip(inputs, axis=-1)
        return bgr - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=bgr.dtype)


def _resize_weights(input_length, output_length: int):
    """``(output_length, input_length)`` weights of an antialiased (triangle filter) resize, as TensorFlow's."""
    scale = ops.cast(input_length, "float32") / float(output_length)
    support = ops.maximum(scale, 1.0)
    centres = (ops.cast(ops.arange(output_length), "float32") + 0.5) * scale
    positions = ops.cast(ops.arange(input_length), "float32") + 0.5
    weights = ops.relu(1.0 - ops.abs(positions[None, :] - centres[:, None]) / support)
    return weights / ops.sum(weights, axis=1, keepdims=True)


def resize_to_square(images, size: int, dtype: str = "float32"):
    """The centre square of ``images`` ``(..., height, width, channels)``, resized to size x size in ``dtype``.

    The square is cut before it is cast: a large uint8 image is never held whole as floats.

    ``keras.ops.image.resize(crop_to_aspect_ratio=True, antialias=True)``'s triangle filter as two matrix
    products, with exact weights (the built-in's float32 kernel is up to 4e-4 off on TensorFlow). Not the
    built-in: on TensorFlow its antialiased resize (``ScaleAndTranslate``) has no XLA kernel (measured with
    Keras 3.15 / TF 2.21: a jit_compile=True model holding it fails to compile).
    """
    height, width = ops.shape(images)[-3], ops.shape(images)[-2]
    # Python ints on JAX (static shapes, needed to slice), tensors on TensorFlow for a dimension unknown
    # until run time.
    side = min(height, width) if isinstance(height, int) and isinstance(width, int) else ops.minimum(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = ops.cast(images[..., top:top + side, left:left + side, :], dtype)
    weights = ops.cast(_resize_weights(side, size), dtype)
    rows = ops.einsum("oh,...hwc->...owc", weights, square)
    return ops.einsum("pw,...owc->...opc", weights, rows)


@keras.saving.register_keras_serializable(package="realvsai")
class SquareResize(keras.layers.Layer):
    """``resize_to_square`` as a layer, so the model crops and resizes as the input pipeline does."""

    def __init__(self, size: int, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)

    def call(self, inputs):
        return resize_to_square(inputs, self.size, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-3], self.size, self.size, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "size": self.size}


def check_weights_file(weights: str | Path, backbone: str) -> None:
    """Raises a UserError for a ``--weights`` path that is missing, or not HDF5 (an interrupted copy, an HTML page);
    "imagenet" and "none" pass (``weights_source``)."""
    if weights_source(weights) in (None, "imagenet"):
        return
    path = Path(weights).expanduser()
    if path.is_dir():
        raise UserError(f"--weights {weights} is a folder. Give the {backbone} weights file inside it (an .h5), "
                        "'imagenet' or 'none'.")
    if not path.is_file():
        raise UserError(f"--weights {weights}: no such file. Give a {backbone} weights file, 'imagenet' or 'none'.")
    try:
        h5py.File(path, "r").close()
    except OSError as error:  # h5py's error for a missing signature or a file shorter than it says
        raise UserError(f"--weights {path} is corrupt, truncated or not an HDF5 weights file ({error}). "
                        f"Copy the {backbone} weights file again, or use 'imagenet' or 'none'.") from None


def _backbone(backbone: str, weights: str | None, image_size: int) -> keras.Model:
    """``keras.applications``' backbone without its top; a UserError when the ImageNet weights cannot be
    downloaded (offline, or a corrupt cached copy) or a weights file does not fit the backbone."""
    try:
        return APPLICATIONS[backbone](include_top=False, weights=weights, input_shape=(image_size, image_size, 3),
                                      name="backbone")
    except ValueError as error:
        if weights in (None, "imagenet"):
            raise
        # Keras' error for a readable HDF5 file whose layers are not this backbone's.
        raise UserError(f"--weights {weights} does not fit {backbone} ({error}). Give the weights of a {backbone} "
                        "without its top (include_top=False), 'imagenet' or 'none'.") from None
    except Exception as error:  # Keras' get_file turns every URL/HTTP failure into a bare Exception
        if weights != "imagenet" or "URL fetch failure" not in str(error):
            raise
        file_name = f"{backbone}_weights_tf_dim_ordering_tf_kernels_notop.h5"  # keras.applications' name
        cached = KERAS_MODELS_DIR / file_name
        if cached.is_file():
            raise UserError(f"{cached} is corrupt or truncated (its hash does not match), perhaps an interrupted "
                            "copy, and it cannot be downloaded again offline. Delete it, or copy it again from a "
                            "machine that has it.") from None
        raise UserError(f"could not download the ImageNet weights of {backbone} ({error}). Without internet, put "
                        f"{file_name} into {KERAS_MODELS_DIR}/ (copy it from a machine that has it), or pass "
                        f"--weights /path/to/{file_name}, or train from scratch with --weights none.") from None


def build_model(
    num_classes: int,
    *,
    image_size: int = _DEFAULTS.image_size,
    backbone: str = _DEFAULTS.backbone,
    weights: str | Path | None = _DEFAULTS.weights,
    augment: str = _DEFAULTS.augment,
    head_units: int = _DEFAULTS.head_units,
    l2: float = _DEFAULTS.l2,
    dropout: float = _DEFAULTS.dropout,
    noise: float = _DEFAULTS.noise,
    seed: int = _DEFAULTS.seed,
) -> keras.Model:
    """Builds the classifier (uncompiled) under the current dtype policy; the defaults are ``TrainConfig``'s.

    Args:
        weights: ``"imagenet"``, a path to backbone weights, or None / ``"none"`` (from scratch).
        augment: a preset; the model holds its ``"model"`` part (the input pipeline runs the rest).

    Raises:
        ValueError: for an unknown backbone or fewer than two classes.
        UserError: if the weights cannot be found, read or do not fit the backbone.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    weights = weights_source(weights)
    check_weights_file(weights, backbone)

    inputs = keras.Input(shape=(None, None, 3), name="image")
    x = inputs
    augmentation = build_augmentation(augment, seed=seed, part="model") if augment != "none" else None
    if augmentation is not None:
        x = augmentation(x)
    # float32 even under mixed precision, as the augmentation, up to the first convolution's output: bfloat16
    # would round pixel levels above 128 to whole steps (float16 to eighths), so training would see other pixels
    # than the float32 model evaluation and the app serve. The first convolution is 1.5% of ResNet101's FLOPs.
    x = SquareResize(image_size, dtype="float32", name="resize")(x)
    x = CaffePreprocess(dtype="float32", name="preprocess")(x)
    base = _backbone(backbone, weights, image_size)
    for name in _FLOAT32_STEM:
        base.get_layer(name).dtype_policy = "float32"
    for layer in base.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        if weights is not None:
            # Frozen BatchNorm statistics even when fine-tuning (a small dataset would wreck them): Keras 3
            # lets the outer training flag override training=False, so non-trainable is what keeps them.
            layer.trainable = False
        else:
            # From scratch: each residual block starts as its shortcut (zero gamma at its end, Goyal et
            # al. 2017), so a 100-layer network trains like a shallow one at first.
            layer.momentum = SCRATCH_BATCHNORM_MOMENTUM
            if _RESIDUAL_LAST_BN.match(layer.name):
                layer.gamma.assign(ops.zeros(layer.gamma.shape, layer.gamma.dtype))
    features = base(x, training=False) if weights is not None else base(x)
    x = keras.layers.GaussianNoise(noise, seed=layer_seed(seed, "head_noise"), name="head_noise")(features)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = keras.layers.Dense(head_units, activation="relu", kernel_regularizer=keras.regularizers.L2(l2),
                           name="head_dense")(x)
    x = keras.layers.Dropout(dropout, seed=layer_seed(seed, "head_dropout"), name="head_dropout")(x)
    # float32 softmax even under mixed precision: float16 probabilities round 0.9999 to 1.
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"{backbone}_classifier")


def backbone_blocks(backbone: keras.Model) -> list[str]:
    """Names of the backbone's residual blocks (``conv2_block1`` ...), input side first."""
    return list(dict.fromkeys(match.group(1) for layer in backbone.layers if (match := _BLOCK.match(layer.name))))


def set_backbone_trainable(model: keras.Model, trainable: bool, top_blocks: int = 0) -> int:
    """Freezes the backbone, or unfreezes it (its last ``top_blocks`` residual blocks only when > 0, the
    stem then frozen) with BatchNorm kept frozen; returns how many blocks train. Recompile afterwards."""
    backbone = model.get_layer("backbone")
    backbone.trainable = trainable
    if not trainable:
        return 0
    blocks = backbone_blocks(backbone)
    chosen = set(blocks[-top_blocks:] if 0 < top_blocks < len(blocks) else blocks)
    for layer in backbone.layers:
        match = _BLOCK.match(layer.name)
        in_chosen = len(chosen) == len(blocks) or bool(match and match.group(1) in chosen)
        layer.trainable = in_chosen and not isinstance(layer, keras.layers.BatchNormalization)
    return len(chosen)


def _float32_policies(config: Any) -> Any:
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and str(config.get("config", {}).get("name", "")).startswith(
                "mixed_"):
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {key: _float32_policies(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_float32_policies(value) for value in config]
    return config


def crop_averaging(model: keras.Model, image_size: int) -> keras.Model:
    """A crops-mode model's predictor: ``data.grid_crops`` batches in, the mean softmax over the crops out."""
    crops = keras.Input((CROP_GRID**2, image_size, image_size, 3), name="crops")
    probabilities = model(ops.reshape(crops, (-1, image_size, image_size, 3)))
    per_image = ops.reshape(probabilities, (-1, CROP_GRID**2, probabilities.shape[-1]))
    return keras.Model(crops, ops.mean(per_image, axis=1), name=f"{model.name}_crop_average")


def float32_copy(model: keras.Model) -> keras.Model:
    """A mixed-precision model computing in float32 (its variables are float32: the weights carry over exactly)."""
    copy = type(model).from_config(_float32_policies(model.get_config()))
    copy.set_weights(model.get_weights())
    return copy


@keras.saving.register_keras_serializable(package="realvsai")
class ClassificationScore(keras.metrics.Metric):
    """Precision, recall or F1 (``kind``) of the argmax, of ``class_id`` or macro-averaged when None, from the
    epoch's confusion matrix: scikit-learn's score on the epoch (Keras' need one-hot labels)."""

    def __init__(self, kind: str, num_classes: int, class_id: int | None = None, name: str | None = None,
                 dtype: Any = None):
        super().__init__(name=name or kind, dtype=dtype)
        self.kind, self.num_classes, self.class_id = kind, int(num_classes), class_id
        self.confusion = self.add_variable(shape=(self.num_classes, self.num_classes), initializer="zeros",
                                           name="confusion", dtype="float32")

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        predicted = ops.argmax(y_pred, axis=-1)
        truth = ops.one_hot(labels, self.num_classes, dtype="float32")
        guess = ops.one_hot(predicted, self.num_classes, dtype="float32")
        self.confusion.assign_add(ops.matmul(ops.transpose(truth), guess))  # rows: truth, columns: prediction

    def result(self):
        hits = ops.diagonal(self.confusion)
        precision = ops.divide_no_nan(hits, ops.sum(self.confusion, axis=0))
        recall = ops.divide_no_nan(hits, ops.sum(self.confusion, axis=1))
        score = {"precision": precision, "recall": recall,
                 "f1": ops.divide_no_nan(2 * precision * recall, precision + recall)}[self.kind]
        return score[self.class_id] if self.class_id is not None else ops.mean(score)

    def reset_state(self):
        self.confusion.assign(ops.zeros(self.confusion.shape, self.confusion.dtype))

    def get_config(self):
        return {"kind": self.kind, "num_classes": self.num_classes, "class_id": self.class_id, "name": self.name}


@keras.saving.register_keras_serializable(package="realvsai")
class SparseAUC(keras.metrics.AUC):
    """ROC AUC from sparse labels: of ``class_id``'s probability, or macro one-vs-rest when None."""

    def __init__(self, num_classes: int, class_id: int | None = None, name: str = "auc", **kwargs: Any):
        kwargs.pop("multi_label", None)
        kwargs.pop("num_labels", None)
        super().__init__(name=name, multi_label=class_id is None,
                         num_labels=int(num_classes) if class_id is None else None, **kwargs)
        self.num_classes, self.class_id = int(num_classes), class_id

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        if self.class_id is not None:
            return super().update_state(ops.cast(ops.equal(labels, self.class_id), "float32"),
                                        y_pred[:, self.class_id])
        return super().update_state(ops.one_hot(labels, self.num_classes, dtype="float32"), y_pred)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "class_id": self.class_id}


def make_metrics(num_classes: int, positive_index: int | None) -> list[keras.metrics.Metric]:
    """accuracy, precision, recall, auc, f1: of the positive class when binary, else macro-averaged."""
    class_id = positive_index if num_classes == 2 else None
    return [
        keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
        ClassificationScore("precision", num_classes, class_id),
        ClassificationScore("recall", num_classes, class_id),
        SparseAUC(num_classes, class_id),
        ClassificationScore("f1", num_classes, class_id),
    ]
