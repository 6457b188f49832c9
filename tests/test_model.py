"""The classifier's structure, its call modes, the from-scratch recipe, weights lookup and the metrics."""

from __future__ import annotations

import inspect
import json
import warnings

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from realvsai import model as model_module
from realvsai.errors import UserError
from realvsai.model import (
    ClassificationScore,
    SparseAUC,
    backbone_blocks,
    build_model,
    check_weights_file,
    float32_copy,
    make_metrics,
    set_backbone_trainable,
)
from realvsai.run import load_model, load_run

HEAD = ["head_noise", "head_pool", "head_dense", "head_dropout", "predictions"]


@pytest.fixture(scope="module")
def resnet101():
    """The project's default backbone at test size, with the classic augmentation in front."""
    return build_model(2, image_size=32, backbone="resnet101", weights=None, augment="classic", head_units=16)


@pytest.fixture(scope="module")
def backbone_weights_file(tmp_path_factory):
    """A weights file for ResNet50 made offline, standing in for the ImageNet file."""
    path = tmp_path_factory.mktemp("weights") / "resnet50_notop.weights.h5"
    keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(path)
    return path


def broken_hdf5(path, kind: str):
    """Writes the broken model or weights files users really have into ``path``."""
    if kind in ("truncated", "not_a_model"):
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax")])
        model.save(path)
        if kind == "truncated":  # an interrupted copy or download
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        else:
            with h5py.File(path, "w") as stream:  # HDF5, but data of something else
                stream["numbers"] = [1, 2, 3]
    else:
        path.write_bytes({"empty": b"", "text": b"<html>404 Not Found</html>"}[kind])
    return path


def raw_images(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (batch, height, width, 3)).astype("float32")


def test_layers_are_named_and_ordered_as_the_contract_says(resnet101):
    names = [layer.name for layer in resnet101.layers]
    assert names == ["image", "augmentation", "resize", "preprocess", "backbone", *HEAD]
    assert resnet101.get_layer("backbone").layers[-1].name == "conv5_block3_out"  # Grad-CAM reads this map
    assert resnet101.get_layer("resize").get_config()["size"] == 32


def test_head_has_the_known_layers_and_a_float32_softmax(resnet101):
    assert resnet101.get_layer("head_noise").stddev == pytest.approx(0.1)
    assert resnet101.get_layer("head_dropout").rate == pytest.approx(0.4)
    dense = resnet101.get_layer("head_dense")
    assert dense.units == 16 and dense.activation.__name__ == "relu"
    assert dense.kernel_regularizer.get_config()["l2"] == pytest.approx(1e-4)
    predictions = resnet101.get_layer("predictions")
    assert predictions.activation.__name__ == "softmax" and predictions.dtype_policy.compute_dtype == "float32"


def test_model_takes_raw_images_of_any_size_and_returns_probabilities(resnet101):
    for height, width in ((32, 32), (57, 91), (200, 120)):
        probabilities = keras.ops.convert_to_numpy(resnet101(raw_images(2, height, width), training=False))
        assert probabilities.shape == (2, 2) and probabilities.dtype == np.float32
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_the_head_noise_and_dropout_draw_from_streams_of_their_own(resnet101):
    """Both took the run's seed: every step drew the dropout mask and the noise from one key (on JAX the kept
    units and the noise at the same positions correlated, -0.1)."""
    noise, dropout = (resnet101.get_layer(name).seed_generator for name in ("head_noise", "head_dropout"))
    seeds = [int(keras.ops.convert_to_numpy(generator.state.value)[0]) for generator in (noise, dropout)]
    assert seeds[0] != seeds[1]
    # ... and each stays the run seed's: the same seed builds the same streams
    again = build_model(2, image_size=32, backbone="resnet50", weights=None, augment="none", head_units=4)
    assert [int(keras.ops.convert_to_numpy(again.get_layer(name).seed_generator.state.value)[0])
            for name in ("head_noise", "head_dropout")] == seeds


def test_augmentation_noise_and_dropout_are_inactive_at_inference(resnet101):
    batch = raw_images(3, 48, 48)
    first = keras.ops.convert_to_numpy(resnet101(batch, training=False))
    second = keras.ops.convert_to_numpy(resnet101(batch, training=False))
    np.testing.assert_array_equal(first, second)


def test_a_direct_call_of_the_model_is_inference_as_predict_is(resnet101):
    """``model(x)`` on a loaded model.h5, the usual next step after ``keras.models.load_model``, applied random
    crops, flips and blur: two calls differed by 0.23. Keras' own GaussianNoise and Dropout are off unless asked."""
    batch = raw_images(3, 48, 48)
    first, second = (keras.ops.convert_to_numpy(resnet101(batch)) for _ in range(2))
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, resnet101.predict(batch, verbose=0), atol=1e-6)


def test_preprocess_is_caffe_preprocessing():
    batch = raw_images(2, 8, 8)
    layer = model_module.CaffePreprocess()
    expected = keras.applications.resnet.preprocess_input(batch.copy())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(batch)), expected, rtol=1e-6, atol=1e-4)


def test_from_scratch_recipe_sets_batchnorm_momentum_and_zero_gamma_on_residual_ends(resnet101):
    backbone = resnet101.get_layer("backbone")
    norms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert all(layer.momentum == pytest.approx(0.9) for layer in norms)
    block_ends = [layer for layer in norms if layer.name.endswith("_3_bn")]
    assert len(block_ends) == 33  # ResNet101: 3 + 4 + 23 + 3 residual blocks
    assert all(not np.any(keras.ops.convert_to_numpy(layer.gamma)) for layer in block_ends)
    assert np.all(keras.ops.convert_to_numpy(backbone.get_layer("conv1_bn").gamma) == 1.0)


def test_from_scratch_backbone_batchnorm_trains_with_the_model():
    model = build_model(2, image_size=32, backbone="resnet50", weights=None, augment="none", head_units=8)
    bn = model.get_layer("backbone").get_layer("conv1_bn")
    before = keras.ops.convert_to_numpy(bn.moving_mean).copy()
    model(raw_images(4, 32, 32), training=True)
    assert not np.allclose(before, keras.ops.convert_to_numpy(bn.moving_mean))


def test_pretrained_backbone_batchnorm_stays_frozen_while_fine_tuning(backbone_weights_file):
    model = build_model(2, image_size=32, backbone="resnet50", weights=backbone_weights_file, augment="none",
                        head_units=8)
    set_backbone_trainable(model, True)
    backbone = model.get_layer("backbone")
    bn = backbone.get_layer("conv1_bn")
    before = keras.ops.convert_to_numpy(bn.moving_mean).copy()
    model(raw_images(4, 32, 32), training=True)
    np.testing.assert_array_equal(before, keras.ops.convert_to_numpy(bn.moving_mean))
    assert not bn.trainable and backbone.get_layer("conv1_conv").trainable


def test_pretrained_weights_are_loaded_from_a_file(backbone_weights_file):
    reference = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    reference.load_weights(backbone_weights_file)
    model = build_model(2, image_size=32, backbone="resnet50", weights=backbone_weights_file, augment="none")
    np.testing.assert_array_equal(reference.get_layer("conv1_conv").get_weights()[0],
                                  model.get_layer("backbone").get_layer("conv1_conv").get_weights()[0])


def test_fine_tune_blocks_unfreezes_only_the_top_residual_blocks(backbone_weights_file):
    model = build_model(2, image_size=32, backbone="resnet50", weights=backbone_weights_file, augment="none")
    backbone = model.get_layer("backbone")
    assert set_backbone_trainable(model, False) == 0
    assert not backbone.trainable_weights
    assert set_backbone_trainable(model, True, top_blocks=2) == 2
    trainable = {weight.path.split("/")[0] for weight in backbone.trainable_weights}
    assert {name.rsplit("_", 1)[0] for name in trainable} == {"conv5_block2_1", "conv5_block2_2", "conv5_block2_3",
                                                             "conv5_block3_1", "conv5_block3_2", "conv5_block3_3"}
    assert backbone_blocks(backbone)[-2:] == ["conv5_block2", "conv5_block3"]


def test_each_backbone_the_settings_offer_is_built_by_its_keras_application():
    """config.BACKBONES (the --backbone choices, checked without Keras) and model.APPLICATIONS list the same models."""
    from realvsai.config import BACKBONES

    assert tuple(model_module.APPLICATIONS) == BACKBONES


def offline(*args, **kwargs):  # what keras.utils.get_file raises for a URLError (Keras 3.15)
    raise Exception("URL fetch failure on https://...: None -- no network")


def test_imagenet_weights_offline_give_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.setitem(model_module.APPLICATIONS, "resnet101", offline)
    monkeypatch.setattr(model_module, "KERAS_MODELS_DIR", tmp_path)
    with pytest.raises(UserError) as error:
        build_model(2, image_size=32, weights="imagenet")
    message = str(error.value)
    assert "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert str(tmp_path) in message and "--weights" in message


def test_corrupt_cached_imagenet_weights_say_to_delete_them(tmp_path, monkeypatch):
    cached = broken_hdf5(tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", "truncated")
    monkeypatch.setitem(model_module.APPLICATIONS, "resnet50", offline)  # Keras re-downloads a copy whose hash is off
    monkeypatch.setattr(model_module, "KERAS_MODELS_DIR", tmp_path)
    with pytest.raises(UserError, match="corrupt") as error:
        build_model(2, image_size=32, backbone="resnet50", weights="ImageNet")
    assert str(cached) in str(error.value) and "Delete it" in str(error.value)


def test_missing_weights_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        build_model(2, image_size=32, weights=str(tmp_path / "nope.h5"))


def test_a_weights_folder_is_named_as_a_folder_not_as_missing(tmp_path):
    with pytest.raises(UserError, match="is a folder") as error:
        check_weights_file(tmp_path, "resnet101")
    assert "no such file" not in str(error.value)


@pytest.mark.parametrize("kind", ["truncated", "empty", "text"])
def test_corrupt_weights_file_is_a_user_error_naming_it(tmp_path, kind):
    weights = broken_hdf5(tmp_path / "resnet101_notop.h5", kind)
    with pytest.raises(UserError, match="corrupt") as error:
        check_weights_file(weights, "resnet101")
    assert str(weights) in str(error.value) and "--weights" in str(error.value)


@pytest.mark.parametrize("kind", ["truncated", "empty", "text", "not_a_model"])
def test_corrupt_model_file_is_a_user_error_naming_it(tmp_path, kind):
    model_file = broken_hdf5(tmp_path / "model.h5", kind)
    (tmp_path / "model.json").write_text(json.dumps({"class_names": ["FAKE", "REAL"]}))
    with pytest.raises(UserError, match="not a Keras HDF5 model") as error:
        load_model(model_file)
    assert str(model_file) in str(error.value)


def test_load_run_needs_the_model_json_beside_the_model(tmp_path):
    model = keras.Sequential([keras.Input((None, None, 3)), model_module.SquareResize(32, name="resize"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")])
    model.save(tmp_path / "model.h5")
    with pytest.raises(UserError, match=r"model\.json"):
        load_run(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"class_names": ["FAKE", "REAL"], "image_size": 32}))
    loaded, run = load_run(tmp_path / "model.h5")
    info = run.info
    assert info["class_names"] == ["FAKE", "REAL"] and loaded.output_shape == (None, 2)


def test_float32_copy_of_a_mixed_precision_model_computes_the_same_in_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                                  keras.layers.Dense(2, activation="softmax", dtype="float32")])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    copy = float32_copy(mixed)
    assert {layer.dtype_policy.name for layer in copy.layers} == {"float32"}
    batch = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    np.testing.assert_allclose(copy(batch), mixed(batch), atol=2e-3)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_under_mixed_precision_the_first_convolution_sees_the_pixels_unrounded(policy):
    """The resize kept float32 so as not to round pixels, but the backbone's first layers cast them to the policy's
    type: bfloat16 rounds 0..255 levels above 128 to whole steps, so training saw other pixels than the float32
    model that evaluation and the app serve."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        mixed = build_model(2, image_size=32, backbone="resnet50", weights=None, augment="none", head_units=4)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    served = float32_copy(mixed)
    pixels = raw_images(2, 32, 32) + 0.37  # between the levels a 16-bit float can hold above 128
    stems = [keras.Model(model.get_layer("backbone").input, model.get_layer("backbone").get_layer("conv1_conv").output)
             for model in (mixed, served)]
    preprocess = served.get_layer("preprocess")
    first, second = (keras.ops.convert_to_numpy(stem(preprocess(pixels))) for stem in stems)
    assert first.dtype == np.float32
    np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-4)


# Metrics ------------------------------------------------------------------------------------------


def metric_value(metric: keras.metrics.Metric, labels: np.ndarray, probabilities: np.ndarray) -> float:
    metric.reset_state()
    for start in range(0, len(labels), 7):  # several batches, as in an epoch
        metric.update_state(labels[start:start + 7], probabilities[start:start + 7])
    return float(metric.result())


def random_predictions(num_classes: int, count: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, count).astype("int32")
    logits = rng.normal(size=(count, num_classes)) + 1.5 * np.eye(num_classes)[labels]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probabilities.astype("float32")


def test_binary_metrics_are_about_the_positive_class():
    labels, probabilities = random_predictions(2)
    predicted = probabilities.argmax(axis=1)
    for positive in (0, 1):
        expected = {"precision": precision_score(labels, predicted, pos_label=positive),
                    "recall": recall_score(labels, predicted, pos_label=positive),
                    "f1": f1_score(labels, predicted, pos_label=positive)}
        for kind, value in expected.items():
            assert metric_value(ClassificationScore(kind, 2, positive), labels, probabilities) == pytest.approx(value)
        auc = roc_auc_score(labels == positive, probabilities[:, positive])
        assert metric_value(SparseAUC(2, positive), labels, probabilities) == pytest.approx(auc, abs=0.01)


def test_multiclass_metrics_are_macro_averaged():
    labels, probabilities = random_predictions(3, count=90)
    predicted = probabilities.argmax(axis=1)
    assert metric_value(ClassificationScore("precision", 3), labels, probabilities) == pytest.approx(
        precision_score(labels, predicted, average="macro"))
    assert metric_value(ClassificationScore("recall", 3), labels, probabilities) == pytest.approx(
        recall_score(labels, predicted, average="macro"))
    assert metric_value(ClassificationScore("f1", 3), labels, probabilities) == pytest.approx(
        f1_score(labels, predicted, average="macro"))
    assert metric_value(SparseAUC(3), labels, probabilities) == pytest.approx(
        roc_auc_score(labels, probabilities, multi_class="ovr", average="macro"), abs=0.01)


def test_make_metrics_names_match_the_training_curves():
    assert [metric.name for metric in make_metrics(2, 0)] == ["accuracy", "precision", "recall", "auc", "f1"]


# Resizing -----------------------------------------------------------------------------------------


def high_frequency_energy(image: np.ndarray) -> float:
    """Mean squared difference between neighbouring pixels: what aliasing adds to a shrunk image."""
    image = np.asarray(image, np.float64)
    return float(np.mean(np.diff(image, axis=0) ** 2) + np.mean(np.diff(image, axis=1) ** 2))


def striped_photo(height: int = 427, width: int = 640) -> np.ndarray:
    """Fine stripes (a 3-pixel period) and noise: detail far beyond what 32 pixels can show."""
    stripes = np.where(np.arange(width) % 3 == 0, 220.0, 40.0)[None, :, None]
    noise = np.random.default_rng(0).normal(0.0, 30.0, (height, width, 3))
    return np.clip(stripes + noise, 0, 255).astype(np.float32)


def test_resize_shrinks_with_antialiasing(resnet101):
    photo = striped_photo()

    shrunk = keras.ops.convert_to_numpy(resnet101.get_layer("resize")(photo[None]))[0]

    # Pillow's bilinear filter widens with the shrink factor: an antialiased reference.
    centre = Image.fromarray(photo.astype(np.uint8)[:, 106:533]).resize((32, 32), Image.Resampling.BILINEAR)
    reference = high_frequency_energy(np.asarray(centre))
    assert 0.8 * reference < high_frequency_energy(shrunk) < 1.25 * reference


def test_resize_crops_the_centre_square_instead_of_squashing(resnet101):
    image = raw_images(1, 32, 64)

    resized = keras.ops.convert_to_numpy(resnet101.get_layer("resize")(image))

    np.testing.assert_array_equal(resized, image[:, :, 16:48])


def xla_compiled(function):
    """``function`` compiled by XLA the way the backend's ``jit_compile=True`` does it."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(function)
    return tf.function(function, jit_compile=True)


def test_resize_compiles_with_xla_and_gives_the_same_pixels(resnet101):
    resize = resnet101.get_layer("resize")
    image = raw_images(2, 90, 60)

    compiled = xla_compiled(lambda images: resize(images))

    np.testing.assert_allclose(keras.ops.convert_to_numpy(compiled(image)),
                               keras.ops.convert_to_numpy(resize(image)), atol=1e-3)


def exact_square_resize(image: np.ndarray, size: int) -> np.ndarray:
    """The centre square of ``image`` resized with the antialiased triangle filter, in float64."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    scale = side / size
    centres, positions = (np.arange(size) + 0.5) * scale, np.arange(side) + 0.5
    weights = np.maximum(0.0, 1.0 - np.abs(positions[None] - centres[:, None]) / max(scale, 1.0))
    weights /= weights.sum(axis=1, keepdims=True)
    square = image[top:top + side, left:left + side].astype(np.float64)
    return np.einsum("oh,pw,hwc->opc", weights, weights, square)


@pytest.mark.parametrize("height, width", [(90, 60), (40, 56), (20, 24), (301, 203)])
def test_resize_is_the_antialiased_triangle_filter_of_keras_resize(height, width):
    image = raw_images(1, height, width)

    resized = keras.ops.convert_to_numpy(model_module.SquareResize(32)(image))[0]

    np.testing.assert_allclose(resized, exact_square_resize(image[0], 32), atol=1e-4)
    # The built-in (no XLA kernel on TensorFlow) computes its weights in float32: up to 4e-4 off.
    builtin = keras.ops.image.resize(image, (32, 32), antialias=True, crop_to_aspect_ratio=True)
    np.testing.assert_allclose(resized, keras.ops.convert_to_numpy(builtin)[0], atol=1e-3)


@pytest.fixture
def without_op_determinism():
    """Training on a TensorFlow CPU turns op determinism on for the whole process (so a resumed run repeats the
    uninterrupted one), and Keras then turns XLA off for every model (Keras 3.15: ``model_supports_jit``). The
    XLA check below is about the layers, so it runs with determinism off; TF 2.21 has only a private switch back."""
    if keras.backend.backend() != "tensorflow":
        yield
        return
    from tensorflow.python.framework import config as tf_config

    was_enabled = tf_config.is_op_determinism_enabled()
    tf_config.disable_op_determinism()
    yield
    if was_enabled:
        tf_config.enable_op_determinism()


def test_default_augmentation_keeps_xla_on_when_compiled_with_it(without_op_determinism):
    model = build_model(2, image_size=32, backbone="resnet50", weights=None, augment="detector", head_units=8)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=True)

    assert model.jit_compile is True
    assert not [warning for warning in caught if "jit_compile" in str(warning.message)]


def test_build_model_defaults_are_the_train_config_defaults():
    """One home for each default (config.TrainConfig): build_model with no settings builds what training would."""
    from realvsai.config import TrainConfig

    parameters = inspect.signature(build_model).parameters
    settings = [name for name in parameters if name != "num_classes"]

    assert {name: parameters[name].default for name in settings} == {
        name: getattr(TrainConfig(), name) for name in settings}
