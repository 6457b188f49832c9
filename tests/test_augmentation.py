"""realvsai.augmentation and offline_augmentation: presets, layers, seeding, saving, offline copies."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_same_copies, run_script, transparent_images, write_image

from realvsai import augmentation, files
from realvsai.augmentation import (
    PRESETS,
    RandomAffine,
    RandomBlur,
    RandomCropPad,
    RandomJpegQuality,
    apply_transformations,
    augment_copies,
    build_augmentation,
    copy_transformations,
)
from realvsai.offline_augmentation import plan_batches, write_augmented_copies

AUGMENTING = ("classic", "detector")
# The model's layers are keras.ops: inside tf.function, tf.data or TensorFlow's XLA they run TensorFlow's ops
# only on the TensorFlow backend (on JAX they run JAX's, which cannot take a symbolic tf.Tensor).
tensorflow_backend_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                             reason="tf.function / tf.data / TF XLA: the TensorFlow backend's path")


def random_images(shape=(4, 32, 32, 3), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


def smooth_images(shape=(4, 32, 32, 3)) -> np.ndarray:
    """Gradients: unlike noise, their blurred and JPEG-compressed versions stay close to them."""
    rows = np.linspace(0, 255, shape[1], dtype="float32")[:, None, None]
    columns = np.linspace(0, 255, shape[2], dtype="float32")[None, :, None]
    image = (0.5 * rows + 0.5 * columns + np.zeros((1, 1, 3), "float32"))
    return np.broadcast_to(image, shape).copy()


def test_presets_are_the_published_names():
    assert PRESETS == ("classic", "detector", "none")


def test_none_preset_builds_no_augmentation():
    assert build_augmentation("none", seed=1) is None


def test_unknown_preset_is_a_value_error():
    with pytest.raises(ValueError, match="unknown augmentation preset 'fancy'"):
        build_augmentation("fancy")


@pytest.mark.parametrize("preset", AUGMENTING)
def test_preset_is_a_sequential_named_augmentation(preset):
    layers = build_augmentation(preset, seed=1)
    assert isinstance(layers, keras.Sequential)
    assert layers.name == "augmentation"


def test_classic_preset_is_one_affine_layer_with_the_image_data_generator_ranges():
    layers = build_augmentation("classic", seed=1).layers
    assert [type(layer).__name__ for layer in layers] == ["RandomAffine"]
    affine = layers[0]
    assert (affine.rotation_degrees, affine.shift_fraction, affine.shear_factor, affine.zoom_fraction) == (
        20.0, 0.2, 0.2, 0.2)
    assert affine.horizontal_flip and affine.fill_mode == "nearest"


def test_detector_preset_does_not_resample():
    names = [type(layer).__name__ for layer in build_augmentation("detector", seed=1).layers]
    assert names == ["RandomJpegQuality", "RandomBlur", "RandomCropPad"]


@pytest.mark.parametrize("preset", AUGMENTING)
def test_the_model_part_of_every_preset_supports_xla_and_the_input_part_holds_the_rest(preset):
    everything = build_augmentation(preset, seed=1)
    in_model = build_augmentation(preset, seed=1, part="model")
    in_input = build_augmentation(preset, seed=1, part="input")

    assert all(layer.supports_jit for layer in in_model.layers)
    input_layers = in_input.layers if in_input is not None else []
    def settings(layers):  # everything but the names Keras numbers
        return [(type(layer), {k: v for k, v in layer.get_config().items() if k != "name"}) for layer in layers]

    assert settings([*input_layers, *in_model.layers]) == settings(everything.layers)


def test_detector_recompresses_jpegs_in_the_input_pipeline():
    names = [type(layer).__name__ for layer in build_augmentation("detector", seed=1, part="input").layers]
    assert names == ["RandomJpegQuality"]


@pytest.mark.parametrize("preset", AUGMENTING)
def test_every_layer_gets_its_own_seed_from_the_preset_seed(preset):
    seeds = [layer.seed for layer in build_augmentation(preset, seed=7).layers]
    assert None not in seeds
    assert len(set(seeds)) == len(seeds)
    assert seeds != [layer.seed for layer in build_augmentation(preset, seed=8).layers]


@pytest.mark.parametrize("preset", AUGMENTING)
def test_augmentation_is_an_exact_identity_when_not_training(preset):
    images = random_images((3, 24, 40, 3))
    output = build_augmentation(preset, seed=1)(images, training=False)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(output), images)


@pytest.mark.parametrize("preset", AUGMENTING)
def test_augmentation_called_without_a_training_flag_is_an_identity_as_keras_noise_is(preset):
    images = random_images((3, 24, 40, 3))
    augmentation = build_augmentation(preset, seed=1)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(augmentation(images)), images)
    assert not np.array_equal(keras.ops.convert_to_numpy(augmentation(images, training=True)), images)


@pytest.mark.parametrize("preset", AUGMENTING)
def test_augmentation_keeps_shape_dtype_and_pixel_range(preset):
    images = random_images((3, 24, 40, 3))
    output = keras.ops.convert_to_numpy(build_augmentation(preset, seed=1)(images, training=True))
    assert output.shape == images.shape
    assert output.dtype == np.float32
    assert output.min() >= 0.0 and output.max() <= 255.0


@pytest.mark.parametrize("preset", AUGMENTING)
def test_augmentation_changes_the_images_when_training(preset):
    images = random_images((8, 32, 32, 3))
    output = keras.ops.convert_to_numpy(build_augmentation(preset, seed=1)(images, training=True))
    assert not np.array_equal(output, images)


def test_classic_and_detector_give_different_images():
    images = random_images((4, 32, 32, 3))
    classic = keras.ops.convert_to_numpy(build_augmentation("classic", seed=1)(images, training=True))
    detector = keras.ops.convert_to_numpy(build_augmentation("detector", seed=1)(images, training=True))
    assert not np.allclose(classic, detector)


@pytest.mark.parametrize("preset", AUGMENTING)
def test_same_seed_repeats_the_augmentation_and_another_seed_does_not(preset):
    images = random_images((4, 32, 32, 3))

    def run(seed):
        return keras.ops.convert_to_numpy(build_augmentation(preset, seed=seed)(images, training=True))

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))


@tensorflow_backend_only
@pytest.mark.parametrize("preset", AUGMENTING)
def test_augmentation_runs_in_a_tf_function_for_any_image_size(preset):
    layers = build_augmentation(preset, seed=1)
    augment = tf.function(lambda images: layers(images, training=True),
                          input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
    for shape in ((2, 32, 32, 3), (3, 20, 44, 3)):
        assert tuple(augment(random_images(shape)).shape) == shape


@tensorflow_backend_only
@pytest.mark.parametrize("preset", AUGMENTING)
def test_augmentation_runs_inside_tf_data_map(preset):
    layers = build_augmentation(preset, seed=1)
    dataset = tf.data.Dataset.from_tensor_slices(random_images((6, 32, 32, 3))).batch(3)
    batches = list(dataset.map(lambda images: layers(images, training=True)).as_numpy_iterator())
    assert [batch.shape for batch in batches] == [(3, 32, 32, 3), (3, 32, 32, 3)]


@pytest.mark.parametrize("preset", AUGMENTING)
def test_model_with_augmentation_survives_an_hdf5_round_trip(preset, tmp_path):
    inputs = keras.Input((None, None, 3))
    features = build_augmentation(preset, seed=1)(inputs)
    features = keras.layers.GlobalAveragePooling2D()(features)
    model = keras.Model(inputs, keras.layers.Dense(2)(features))
    model.save(tmp_path / "model.h5")

    loaded = keras.models.load_model(tmp_path / "model.h5")

    images = random_images((2, 28, 36, 3))
    np.testing.assert_allclose(loaded(images, training=False), model(images, training=False), rtol=1e-6)
    original, restored = model.get_layer("augmentation"), loaded.get_layer("augmentation")
    assert [type(layer) for layer in restored.layers] == [type(layer) for layer in original.layers]
    assert [layer.get_config() for layer in restored.layers] == [layer.get_config() for layer in original.layers]


def only(**ranges) -> RandomAffine:
    """A RandomAffine with every range zero (and no flip) except the ones given."""
    settings = dict(rotation_degrees=0.0, shift_fraction=0.0, shear_factor=0.0, zoom_fraction=0.0,
                    horizontal_flip=False, seed=1)
    return RandomAffine(**{**settings, **ranges})


def transformation(batch: int, **values) -> dict:
    """RandomAffine parameters for ``batch`` images: the identity, except ``values`` (one per image)."""
    neutral = dict(angle=0.0, shift_x=0.0, shift_y=0.0, shear=0.0, zoom_x=1.0, zoom_y=1.0)
    result = {name: np.array(values.get(name, [value] * batch), "float32") for name, value in neutral.items()}
    result["flip"] = np.array(values.get("flip", [False] * batch))
    return result


def test_random_affine_is_an_exact_identity_at_inference():
    images = random_images((3, 24, 40, 3))
    output = RandomAffine(seed=1)(images, training=False)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(output), images)


def test_random_affine_changes_every_image_when_training():
    images = random_images((6, 32, 32, 3))
    output = keras.ops.convert_to_numpy(RandomAffine(seed=1)(images, training=True))
    assert all(not np.allclose(output[index], images[index]) for index in range(6))


def test_random_affine_draws_new_parameters_for_each_image():
    images = np.repeat(random_images((1, 32, 32, 3)), 6, axis=0)
    output = keras.ops.convert_to_numpy(RandomAffine(seed=1)(images, training=True))
    assert len({output[index].tobytes() for index in range(6)}) == 6


def test_random_affine_with_only_the_flip_mirrors_whole_images_exactly():
    images = random_images((16, 20, 28, 3))
    output = keras.ops.convert_to_numpy(only(horizontal_flip=True)(images, training=True))
    flipped = [np.array_equal(out, image[:, ::-1]) for out, image in zip(output, images)]
    kept = [np.array_equal(out, image) for out, image in zip(output, images)]
    assert all(flip != keep for flip, keep in zip(flipped, kept))  # each exactly one of the two
    assert 0 < sum(flipped) < 16


def test_random_affine_whole_pixel_shift_moves_pixels_exactly():
    images = random_images((2, 20, 28, 3))
    shift = transformation(2, shift_x=[3.0, -2.0], shift_y=[2.0, 0.0])
    output = keras.ops.convert_to_numpy(only().transform_images(images, shift))
    # The content moves right and down by the shift; the uncovered border repeats the edge (fill "nearest").
    np.testing.assert_array_equal(output[0], np.pad(images[0], ((2, 0), (3, 0), (0, 0)), mode="edge")[:20, :28])
    np.testing.assert_array_equal(output[1], np.pad(images[1], ((0, 0), (0, 2), (0, 0)), mode="edge")[:, 2:])


def test_random_affine_turns_about_the_image_centre():
    images = random_images((1, 24, 24, 3))
    quarter_turn = transformation(1, angle=[np.pi / 2])
    output = keras.ops.convert_to_numpy(only().transform_images(images, quarter_turn))
    np.testing.assert_allclose(output[0], np.rot90(images[0]), atol=1e-2)


def test_random_affine_zoom_above_one_shows_more_of_the_image():
    images = random_images((1, 21, 21, 3))
    zoom_out = transformation(1, zoom_x=[2.0], zoom_y=[2.0])
    output = keras.ops.convert_to_numpy(only().transform_images(images, zoom_out))
    # Output pixel p reads input pixel 10 + 2 (p - 10): the middle 11 x 11 hold every other input pixel.
    np.testing.assert_array_equal(output[0, 5:16, 5:16], images[0, ::2, ::2])


def test_random_affine_same_seed_repeats_and_another_seed_does_not():
    images = random_images((4, 32, 32, 3))

    def run(seed):
        return keras.ops.convert_to_numpy(RandomAffine(seed=seed)(images, training=True))

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))


def test_random_affine_survives_an_hdf5_round_trip_with_its_settings(tmp_path):
    inputs = keras.Input((None, None, 3))
    layer = RandomAffine(rotation_degrees=10.0, shift_fraction=0.1, shear_factor=0.3, zoom_fraction=0.05,
                         horizontal_flip=False, seed=5)
    features = keras.layers.GlobalAveragePooling2D()(layer(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(features))
    model.save(tmp_path / "model.h5")

    loaded = keras.models.load_model(tmp_path / "model.h5")

    restored = loaded.layers[1]
    assert isinstance(restored, RandomAffine)
    assert restored.get_config() == layer.get_config()
    images = random_images((2, 28, 36, 3))
    np.testing.assert_allclose(loaded(images, training=False), model(images, training=False), rtol=1e-6)


def random_affine_rows(count: int, seed: int = 0, shift: float = 40.0) -> np.ndarray:
    """Affine maps with turns, shears, mirrored zooms and shifts reaching well outside a 24 x 32 image."""
    rng = np.random.default_rng(seed)
    angle, shear = rng.uniform(-0.6, 0.6, count), rng.uniform(-0.3, 0.3, count)
    zoom_x = rng.uniform(0.7, 1.3, count) * rng.choice([-1.0, 1.0], count)
    zoom_y = rng.uniform(0.7, 1.3, count)
    cos, sin = np.cos(angle), np.sin(angle)
    a0, a1, b0, b1 = cos * zoom_x, (cos * shear - sin) * zoom_y, sin * zoom_x, (sin * shear + cos) * zoom_y
    a2, b2 = rng.uniform(-shift, shift, count), rng.uniform(-shift, shift, count)
    return np.stack([a0, a1, a2, b0, b1, b2, np.zeros(count), np.zeros(count)], axis=1).astype("float32")


def test_affine_resample_gives_the_numbers_of_keras_affine_transform():
    images = random_images((16, 24, 32, 3), seed=2)
    transforms = random_affine_rows(16)

    expected = keras.ops.image.affine_transform(images, transforms, interpolation="bilinear", fill_mode="nearest")

    np.testing.assert_allclose(augmentation.affine_resample(images, transforms), expected, atol=1e-3)


@tensorflow_backend_only
def test_random_affine_under_xla_resamples_as_it_does_without():
    images = random_images((8, 24, 32, 3))
    layer = RandomAffine(seed=3)
    transformation = layer.get_random_transformation(images)  # the draws, fixed for both

    def run(batch):
        return layer.transform_images(batch, transformation)

    np.testing.assert_allclose(tf.function(run, jit_compile=True)(images), tf.function(run)(images), atol=1e-3)


@tensorflow_backend_only
@pytest.mark.parametrize("preset", AUGMENTING)
def test_every_layer_that_claims_xla_support_compiles_with_xla(preset):
    """Keras XLA-compiles a model on a GPU ("auto") when all its layers claim support: a false claim is a crash."""
    images = random_images((4, 24, 32, 3))
    for layer in build_augmentation(preset, seed=1).layers:
        if layer.supports_jit:
            output = tf.function(lambda batch, layer=layer: layer(batch, training=True), jit_compile=True)(images)
            assert tuple(output.shape) == images.shape, layer.name


def test_crop_pad_shifts_by_whole_pixels_within_the_reflected_border():
    image = random_images((1, 16, 24, 3), seed=5)
    output = keras.ops.convert_to_numpy(RandomCropPad(0.125, seed=3)(np.repeat(image, 8, axis=0), training=True))
    padded = np.pad(image[0], ((2, 2), (3, 3), (0, 0)), mode="reflect")  # 16 // 8 rows, 24 // 8 columns
    crops = {(y, x): padded[y:y + 16, x:x + 24] for y in range(5) for x in range(7)}
    offsets = [[key for key, crop in crops.items() if np.array_equal(crop, shifted)] for shifted in output]
    assert all(len(found) == 1 for found in offsets)  # every output is exactly one integer shift
    assert len({found[0] for found in offsets}) > 1  # and the shifts differ across the batch


def test_crop_pad_flip_mirrors_whole_columns():
    image = random_images((1, 16, 24, 3), seed=5)
    layer = RandomCropPad(0.0, horizontal_flip=True, seed=3)
    output = keras.ops.convert_to_numpy(layer(np.repeat(image, 16, axis=0), training=True))
    flipped = [np.array_equal(out, image[0, :, ::-1]) for out in output]
    kept = [np.array_equal(out, image[0]) for out in output]
    assert all(flip != keep for flip, keep in zip(flipped, kept))
    assert 0 < sum(flipped) < 16


def test_blur_draws_a_sigma_per_image():
    images = np.repeat(random_images((1, 16, 16, 3)), 6, axis=0)
    output = keras.ops.convert_to_numpy(RandomBlur((0.3, 1.0), probability=1.0, seed=1)(images, training=True))
    assert output.std() < images.std()  # smoothed
    assert len({output[index].tobytes() for index in range(6)}) == 6  # each image its own sigma


def test_blur_with_probability_zero_is_an_exact_identity():
    images = random_images((4, 16, 16, 3))
    output = RandomBlur((0.0, 1.0), probability=0.0, seed=1)(images, training=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(output), images)


def test_blur_works_on_images_smaller_than_its_kernel():
    images = random_images((2, 2, 3, 3))
    output = RandomBlur((1.0, 1.0), probability=1.0, seed=1)(images, training=True)
    assert tuple(output.shape) == (2, 2, 3, 3)


def test_jpeg_layer_recompresses_at_the_drawn_quality():
    images = smooth_images((2, 32, 32, 3))
    output = keras.ops.convert_to_numpy(RandomJpegQuality((70, 70), probability=1.0, seed=1)(images, training=True))
    expected = tf.image.adjust_jpeg_quality(tf.cast(tf.round(images[0]), tf.uint8), 70).numpy()
    np.testing.assert_array_equal(output[0], expected.astype("float32"))


def test_jpeg_layer_with_probability_zero_is_an_exact_identity():
    images = random_images((3, 16, 16, 3))
    output = RandomJpegQuality((65, 100), probability=0.0, seed=1)(images, training=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(output), images)


def test_jpeg_layer_opts_out_of_xla():
    assert RandomJpegQuality().supports_jit is False


@pytest.mark.parametrize("make", [lambda: RandomAffine(seed=1),
                                  lambda: RandomBlur((0.5, 2.0), probability=1.0, seed=1),
                                  lambda: RandomCropPad(horizontal_flip=True, seed=1)],
                         ids=["affine", "blur", "crop-pad"])
def test_a_band_of_rows_of_a_layer_is_those_rows_of_its_whole_image_from_uint8_pixels(make):
    """A large image's copies are made a band of output rows at a time, each from the whole image as uint8 (its
    float32 copy, and the whole output's intermediates, took 13.5 GB at 190 MP)."""
    layer, pixels = make(), np.random.default_rng(0).integers(0, 256, (2, 37, 29, 3), np.uint8)
    images = pixels.astype("float32")
    transformation = layer.get_random_transformation(images)
    whole = keras.ops.convert_to_numpy(layer.transform_images(images, transformation))
    for start, rows in [(0, 5), (3, 7), (30, 7), (0, 37)]:
        band = keras.ops.convert_to_numpy(layer.transform_rows(pixels, transformation, start, rows))
        np.testing.assert_array_equal(band, whole[:, start:start + rows], err_msg=f"rows {start}-{start + rows}")


def test_jpeg_layer_recompresses_uint8_pixels_into_uint8_of_the_same_values():
    images = np.random.default_rng(0).integers(0, 256, (2, 24, 16, 3), np.uint8)
    layer = RandomJpegQuality((60, 90), probability=1.0, seed=1)
    transformation = layer.get_random_transformation(images)
    output = keras.ops.convert_to_numpy(layer.transform_images(images, transformation))
    expected = keras.ops.convert_to_numpy(layer.transform_images(images.astype("float32"), transformation))
    assert output.dtype == np.uint8 and np.array_equal(output, expected)


@pytest.mark.parametrize("make", [
    lambda: RandomAffine(rotation_degrees=-1.0),
    lambda: RandomAffine(shift_fraction=1.5),
    lambda: RandomAffine(shear_factor=-0.2),
    lambda: RandomAffine(zoom_fraction=1.0),
    lambda: RandomAffine(fill_mode="mirror"),
    lambda: RandomCropPad(pad_fraction=1.0),
    lambda: RandomBlur(sigma_range=(1.0, 0.5)),
    lambda: RandomBlur(probability=1.5),
    lambda: RandomJpegQuality(quality_range=(90, 50)),
    lambda: RandomJpegQuality(quality_range=(50, 101)),
])
def test_layers_reject_impossible_settings(make):
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize("preset", AUGMENTING)
def test_copy_transformations_give_each_row_what_its_own_seed_gives(preset):
    layers = build_augmentation(preset, seed=1)
    images = random_images((6, 32, 32, 3))

    def copies(rows, seeds):
        return keras.ops.convert_to_numpy(apply_transformations(layers.layers, images[rows],
                                                                copy_transformations(layers, images[rows], seeds)))

    seeds = [bytes([k]) for k in range(6)]
    first = copies([0, 1, 2, 3, 4, 5], seeds)
    layers(images, training=True)  # advancing the layers' own random state changes nothing here
    assert np.array_equal(copies([0, 1, 2, 3, 4, 5], seeds), first)
    assert np.array_equal(copies([4, 1], [seeds[4], seeds[1]]), first[[4, 1]])  # in any batch
    changed = copies([0, 1, 2, 3, 4, 5], [*seeds[:5], b"other"])
    assert np.array_equal(changed[:5], first[:5]) and not np.array_equal(changed[5], first[5])


def test_augment_copies_of_the_input_part_in_tf_data_depends_only_on_the_seed():
    """Training's input pipeline: a seed tensor per batch, TensorFlow's ops, on every Keras backend."""
    layers = build_augmentation("detector", seed=1, part="input")
    images = random_images((16, 32, 32, 3))
    seed = tf.constant([11, 12], tf.int64)
    dataset = tf.data.Dataset.from_tensors(images).repeat(3)
    mapped = list(dataset.map(lambda batch: augment_copies(layers, batch, seed), num_parallel_calls=3,
                              deterministic=False).as_numpy_iterator())
    assert all(np.array_equal(batch, mapped[0]) for batch in mapped)
    other = dataset.take(1).map(lambda batch: augment_copies(layers, batch, tf.constant([11, 13], tf.int64)))
    assert not np.array_equal(next(other.as_numpy_iterator()), mapped[0])


@dataclass
class FakeSource:
    source: Path
    targets: tuple
    width: int
    height: int
    needs_pil: bool = False
    class_name: str = "REAL"


def test_plan_batches_groups_images_of_one_size_up_to_the_batch_size(tmp_path):
    images = [FakeSource(tmp_path / f"{index}.png", tuple(f"copy_{index}_{k}.jpg" for k in range(3)),
                         *((32, 32) if index % 2 else (48, 24)))
              for index in range(7)]
    batches = plan_batches(images, seed=1, batch_size=2)
    sizes = {image.source: (image.width, image.height) for image in images}
    assert sorted(source for batch in batches for source in batch.sources) == sorted(sizes)
    assert all(len(batch.sources) <= 2 for batch in batches)
    assert all(len({sizes[source] for source in batch.sources}) == 1 for batch in batches)
    seeds = [seed for batch in batches for image_seeds in batch.seeds for seed in image_seeds]
    assert len(set(seeds)) == len(seeds) == 7 * 3  # one for each copy


def test_plan_batches_spreads_the_copies_of_a_huge_image_over_batches(tmp_path):
    image = FakeSource(tmp_path / "big.png", tuple(tmp_path / f"copy_{k}.jpg" for k in range(10)), 100, 100)
    batches = plan_batches([image], seed=1, max_batch_pixels=3 * 100 * 100)
    assert [len(batch.targets[0]) for batch in batches] == [3, 3, 3, 1]
    assert [target for batch in batches for target in batch.targets[0]] == list(image.targets)


def test_a_phone_photos_copies_are_made_one_at_a_time(tmp_path):
    """Two copies of a 4000x3000 photo made in one batch peaked at 3.4 GB; one copy a batch bounds the floats in
    flight by the larger of the batch budget and one copy."""
    photo = FakeSource(tmp_path / "photo.jpg", tuple(tmp_path / f"copy_{k}.jpg" for k in range(3)), 4000, 3000)
    batches = plan_batches([photo], seed=1)
    assert [len(batch.targets[0]) for batch in batches] == [1, 1, 1]


def test_images_wait_for_their_batch_as_uint8_not_as_floats(tmp_path):
    """The decoded images waiting in tf.data's buffers took 4 bytes a channel (800 MB for four 12 MP photos);
    they are cast to float32 only when their batch is augmented."""
    from realvsai.offline_augmentation import _decoded_batches

    source = write_image(tmp_path / "train" / "REAL" / "photo.png", seed=1, size=(40, 30))
    batches = plan_batches([FakeSource(source, (str(tmp_path / "copy_0.jpg"),), 40, 30)], seed=1)
    [(_, _, images)] = list(_decoded_batches(batches, None, 10**6).as_numpy_iterator())
    assert images.dtype == np.uint8 and images.shape == (1, 30, 40, 3)


def test_offline_copies_are_made_from_a_transparent_image_shown_on_white(tmp_path, make_class_folder):
    """DataAugmentation decoded a cut-out as training did, without its alpha: its copies showed the colours stored
    under the transparent pixels (black, or junk), which neither the user nor, now, training sees."""
    from realvsai.moving import plan_copies
    from realvsai.offline_augmentation import _decoded_batches

    make_class_folder(tmp_path / "train", {"REAL": 1})
    kinds = transparent_images()
    for name, (data, _) in kinds.items():
        (tmp_path / "train" / "FAKE" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "train" / "FAKE" / name).write_bytes(data)
    batches = plan_batches(plan_copies(tmp_path, copies=1).images, seed=1, batch_size=len(kinds) + 1)

    decoded = {}
    for batch_index, positions, pixels in _decoded_batches(batches, None, 10**6).as_numpy_iterator():
        for position, image in zip(positions, pixels, strict=True):
            decoded[batches[batch_index].sources[position].name] = image

    for name, (_, shown) in kinds.items():
        np.testing.assert_array_equal(decoded[name], shown, err_msg=name)


def test_progress_counts_each_copy_once_when_an_images_copies_span_batches(tmp_path):
    """DataAugmentation's bar counted an image once per batch holding some of its copies: 356 of 353 images."""
    source = write_image(tmp_path / "train" / "REAL" / "big.png", seed=1, size=(40, 40))
    image = FakeSource(source, tuple(str(tmp_path / "out" / f"copy_{k}.jpg") for k in range(10)), 40, 40)
    batches = plan_batches([image], seed=1, max_batch_pixels=3 * 40 * 40)
    done = []
    write_augmented_copies(batches, None, on_copies_done=done.append)
    assert len(batches) == 4 and sum(done) == 10 == sum(len(batch.targets[0]) for batch in batches)


@pytest.mark.parametrize("preset", AUGMENTING)
def test_offline_copies_are_the_all_part_applied_to_images_decoded_as_training_decodes_them(
        preset, tmp_path, make_class_folder, monkeypatch):
    from realvsai import offline_augmentation
    from realvsai.data import decode_rgb
    from realvsai.moving import plan_copies

    make_class_folder(tmp_path / "train", {"REAL": 3})
    make_class_folder(tmp_path / "train", {"FAKE": 2}, size=(24, 24), seed=1)
    monkeypatch.setattr(offline_augmentation, "MIN_COMPILED_PIXELS", 3 * 32 * 32)  # XLA for the 32 px only
    batches = plan_batches(plan_copies(tmp_path, copies=4).images, seed=3, batch_size=2)
    assert sorted({batch.jit_compile for batch in batches}) == [False, True]
    layers = build_augmentation(preset, seed=3)
    assert write_augmented_copies(batches, layers).written == 5 * 4
    first = {path: path.read_bytes() for path in (tmp_path / "augmented_train").rglob("*.jpg")}
    for path in first:
        path.unlink()
    write_augmented_copies(batches, layers)
    assert {path: path.read_bytes() for path in first} == first  # the same bytes on every run

    for batch in batches:
        images = tf.stack([tf.cast(decode_rgb(str(source), False), tf.float32) for source in batch.sources])
        rows = np.repeat(images.numpy(), [len(targets) for targets in batch.targets], axis=0)
        seeds = [seed for image_seeds in batch.seeds for seed in image_seeds]
        expected = apply_transformations(layers.layers, rows, copy_transformations(layers, rows, seeds))
        expected = np.clip(np.round(keras.ops.convert_to_numpy(expected)), 0.0, 255.0).astype(np.uint8)
        targets = [target for targets in batch.targets for target in targets]
        for target, pixels in zip(targets, expected, strict=True):
            written = tf.io.decode_jpeg(Path(target).read_bytes()).numpy().astype(int)
            reference = tf.io.decode_jpeg(tf.io.encode_jpeg(pixels, quality=95)).numpy().astype(int)
            assert np.abs(written - reference).mean() < 0.5  # float rounding (graph, XLA) apart, the same


@pytest.mark.skipif(files._syncfs is None, reason="no syncfs here: each copy is fsynced")
def test_a_batch_of_copies_waits_on_the_disk_once_not_once_a_copy(tmp_path, make_class_folder, monkeypatch):
    from realvsai.moving import plan_copies

    make_class_folder(tmp_path / "train", {"REAL": 3})
    batches = plan_batches(plan_copies(tmp_path, copies=4).images, seed=3, batch_size=3)
    calls = []
    real_syncfs = files._syncfs
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append("fsync"))
    monkeypatch.setattr(files, "_syncfs", lambda handle: (calls.append("sync"), real_syncfs(handle))[1])
    assert write_augmented_copies(batches, build_augmentation("classic", seed=3)).written == 12
    assert len(batches) == 1 and calls == ["sync"]


def test_copies_are_encoded_a_batch_at_a_time_into_the_bytes_of_one_encode_per_copy():
    """The copies' bytes stay those of one ``encode_jpeg`` per copy, as earlier versions wrote them: a run
    they left unfinished is completed, not blocked by its own copies (which would count as files in the way)."""
    from realvsai.offline_augmentation import _jpeg_encoder

    rng = np.random.default_rng(0)
    for shape in ((3, 32, 32, 3), (2, 17, 40, 3), (1, 224, 150, 3)):
        copies = rng.integers(0, 256, shape, dtype=np.uint8)
        assert list(_jpeg_encoder(95)(copies).numpy()) == [tf.io.encode_jpeg(copy, quality=95).numpy()
                                                            for copy in copies]
    assert _jpeg_encoder(95) is _jpeg_encoder(95)  # one graph for every batch and size


@pytest.mark.parametrize("preset", AUGMENTING)
def test_model_augmentation_trains_in_an_xla_compiled_step_with_new_draws_each_step(preset):
    """Keras compiles the train step (XLA on JAX always): each layer's SeedGenerator must move on every step."""
    inputs = keras.Input((16, 16, 3))
    augmentation = build_augmentation(preset, seed=1, part="model")
    features = keras.layers.GlobalAveragePooling2D()(augmentation(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(features))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", jit_compile=True)
    states = [keras.ops.convert_to_numpy(layer.generator.state) for layer in augmentation.layers]

    model.fit(random_images((8, 16, 16, 3)), np.arange(8) % 2, batch_size=4, epochs=1, verbose=0)

    moved = [keras.ops.convert_to_numpy(layer.generator.state) for layer in augmentation.layers]
    assert all(after[1] == before[1] + 2 for before, after in zip(states, moved)), (states, moved)  # [seed, draws]


def copies_made(data: Path, copies: int, batch_size: int, preset: str, seed: int = 3) -> dict[str, bytes]:
    """Writes what is missing of ``copies`` copies of each training image into ``data``; returns every copy's bytes."""
    from realvsai.moving import plan_copies

    batches = plan_batches(plan_copies(data, copies=copies).images, seed=seed, batch_size=batch_size)
    write_augmented_copies(batches, build_augmentation(preset, seed=seed))
    return {path.relative_to(data).as_posix(): path.read_bytes()
            for path in sorted((data / "augmented_train").rglob("*.jpg"))}


@pytest.mark.parametrize("xla", [False, True])
@pytest.mark.parametrize("preset", [*AUGMENTING, "detector, blurred and re-compressed"])
def test_a_large_copy_is_made_in_bands_of_rows_into_the_bytes_of_the_whole_image(preset, xla, tmp_path, monkeypatch):
    """A classic copy of a 190 MP photo peaked at 13.5 GB, a detector copy of a 178 MP one at 18 GB: each layer
    made float32 arrays of the whole image (its pixels, the affine map's coordinate grids, four gathers of pixels).
    A copy of over ``BANDED_PIXELS`` is made ``BAND_PIXELS`` of output rows at a time, into the same bytes, and an
    image of over ``DECODED_AHEAD_PIXELS`` is decoded alone, when its batch is made, not ahead by tf.data."""
    from realvsai import offline_augmentation

    monkeypatch.setattr(offline_augmentation, "MIN_COMPILED_PIXELS", 1 if xla else 1 << 40)
    source = write_image(tmp_path / "train" / "REAL" / "large.png", seed=1, size=(90, 70))

    def made(folder: str) -> tuple[list[bytes], list[tuple[int, str]]]:
        """The copies' bytes, and the rows and dtype of every array a layer returned."""
        targets = tuple(str(tmp_path / folder / f"copy_{k}.jpg") for k in range(3))
        layers, results = build_augmentation(preset.split(",")[0], seed=5), []
        for layer in layers.layers:
            if preset.endswith("re-compressed"):
                layer.probability = 1.0  # the blur and the JPEG re-compression on every copy
            for name in ("transform_images", "transform_rows"):
                if hasattr(layer, name):
                    monkeypatch.setattr(layer, name, recorded(getattr(layer, name), results))
        write_augmented_copies(plan_batches([FakeSource(source, targets, 90, 70)], seed=5), layers)
        return [Path(target).read_bytes() for target in targets], results

    def recorded(function, results):
        def call(images, transformation, *band):  # band: (start, rows) of transform_rows
            output = function(images, transformation, *band)
            rows = band[1] if band else int(keras.ops.shape(images)[1])
            results.append((rows, keras.backend.standardize_dtype(output.dtype)))
            return output
        return call

    monkeypatch.setattr(offline_augmentation, "BANDED_PIXELS", 1 << 40, raising=False)
    whole, _ = made("whole")
    monkeypatch.setattr(offline_augmentation, "BANDED_PIXELS", 1000, raising=False)
    monkeypatch.setattr(offline_augmentation, "BAND_PIXELS", 90 * 8, raising=False)
    monkeypatch.setattr(offline_augmentation, "DECODED_AHEAD_PIXELS", 1000, raising=False)  # decoded alone, too
    banded, results = made("banded")
    assert banded == whole
    floats = [rows for rows, dtype in results if dtype != "uint8"]
    assert floats and max(floats) <= 8, results  # no float array of more than a band's rows


@pytest.mark.parametrize("xla", [False, True])
@pytest.mark.parametrize("preset", AUGMENTING)
def test_each_copy_depends_on_its_source_and_number_alone(preset, xla, tmp_path, make_class_folder, monkeypatch):
    """Raising --copies gave a folder that a fresh run with the new --copies did not make (the first copies
    were drawn in batches of another shape), and --batch-size changed every copy."""
    from realvsai import offline_augmentation

    monkeypatch.setattr(offline_augmentation, "MIN_COMPILED_PIXELS", 1 if xla else 1 << 40)
    for name in ("grown", "fresh", "other_batches"):
        make_class_folder(tmp_path / name / "train", {"REAL": 3, "FAKE": 2})
    copies_made(tmp_path / "grown", copies=2, batch_size=2, preset=preset)
    grown = copies_made(tmp_path / "grown", copies=4, batch_size=2, preset=preset)
    fresh = copies_made(tmp_path / "fresh", copies=4, batch_size=2, preset=preset)
    assert len(fresh) == 5 * 4
    assert_same_copies(grown, fresh)
    assert_same_copies(copies_made(tmp_path / "other_batches", copies=4, batch_size=3, preset=preset), fresh)
    assert len(set(fresh.values())) == len(fresh)  # and every copy its own


@tensorflow_backend_only
@pytest.mark.parametrize("preset", AUGMENTING)
def test_copies_of_images_of_several_sizes_show_no_retracing_warning(preset, tmp_path):
    """Each layer's compiled transform is traced once per batch shape, as expected: DataAugmentation.py printed
    TensorFlow's "triggered tf.function retracing. Tracing is expensive" for a folder of mixed sizes. Run as a
    script: TensorFlow warns about a function at most twice per process, so an earlier test could hide it."""
    for index, size in enumerate([(16, 16), (24, 16), (16, 24), (32, 32)]):
        for number in range(3):  # batches of 2 and 1 images: eight shapes
            write_image(tmp_path / "train" / "REAL" / f"size{index}_{number}.png", seed=10 * index + number, size=size)

    finished = run_script("DataAugmentation.py", "--data", tmp_path, "--copies", "2", "--batch-size", "2",
                          "--preset", preset)

    assert finished.returncode == 0, finished.stderr
    assert "Wrote 24 copies" in finished.stdout
    assert "retracing" not in finished.stderr


def test_only_the_missing_copies_are_planned_and_made(tmp_path):
    """A run resumed after Ctrl-C, or with a higher --copies, made every copy again and threw the existing ones
    away: each copy now depends on its own seed alone, so only the missing ones are made."""
    out = tmp_path / "out"
    done = write_image(tmp_path / "train" / "REAL" / "done.png", seed=1, size=(16, 16))
    half = write_image(tmp_path / "train" / "REAL" / "half.png", seed=2, size=(16, 16))
    images = [FakeSource(done, (None, None, None), 16, 16),
              FakeSource(half, (None, str(out / "half_1.jpg"), str(out / "half_2.jpg")), 16, 16)]
    batches = plan_batches(images, seed=1)
    assert [(batch.sources, batch.targets) for batch in batches] == [((half,), ((str(out / "half_1.jpg"),
                                                                                str(out / "half_2.jpg")),))]
    done_counts = []
    report = write_augmented_copies(batches, build_augmentation("classic", seed=1), on_copies_done=done_counts.append)
    assert sum(done_counts) == 2 and report.written == 2 and report.already_there == 0
    assert sorted(path.name for path in out.iterdir()) == ["half_1.jpg", "half_2.jpg"]


def test_dataaugmentation_reads_the_images_off_the_gpus_when_another_keras_backend_augments(tmp_path, monkeypatch):
    """DataAugmentation under KERAS_BACKEND=jax: TensorFlow decodes and encodes (tf.data, the JPEG codec) while JAX
    augments on the GPU; TensorFlow, seeing it, would take nearly all its memory at its first op."""
    source = write_image(tmp_path / "train" / "REAL" / "a.png", seed=1)
    image = FakeSource(source, (str(tmp_path / "out" / "copy_0.jpg"),), 32, 32)
    hidden = []
    monkeypatch.setattr(tf.config, "set_visible_devices", lambda devices, kind=None: hidden.append((devices, kind)))
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")

    write_augmented_copies(plan_batches([image], seed=1), None)

    assert hidden[:1] == [([], "GPU")]
