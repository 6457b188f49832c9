"""One truth from file to model: training, evaluation and the app decode and resize an image alike."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import transparent_images
from PIL import Image

from realvsai import data, inference
from realvsai.model import SquareResize, build_model

JPEG_KINDS = {
    "baseline": ("RGB", {}),
    "progressive": ("RGB", {"progressive": True}),
    "cmyk": ("CMYK", {}),
}


def noisy_pixels(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Noise: every DCT coefficient matters, so two JPEG decoders that round differently disagree."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)


def dataset_pixels(folder, image_size: int) -> np.ndarray:
    """What training and evaluation feed the model for the images under ``folder/<class>/``, in file order."""
    scanned = data.scan_images(folder)
    return np.concatenate([pixels.numpy() for pixels, _ in data.make_dataset(scanned, batch_size=8,
                                                                              image_size=image_size)])


@pytest.mark.parametrize("kind", JPEG_KINDS)
def test_training_decodes_a_jpeg_to_exactly_the_apps_pixels(tmp_path, kind):
    mode, options = JPEG_KINDS[kind]
    path = tmp_path / "a" / f"{kind}.jpg"
    path.parent.mkdir()
    Image.fromarray(noisy_pixels(40, 56)).convert(mode).save(path, "JPEG", quality=90, **options)

    trained_on = dataset_pixels(tmp_path, image_size=32)[0]

    shown_to_app, _ = inference.decode_upload(path.read_bytes())
    np.testing.assert_array_equal(trained_on, shown_to_app.astype(np.float32))


# Every format and mode a user's folder may hold that the pipeline decodes (with TensorFlow or Pillow).
OTHER_KINDS = {
    "palette.bmp": ("P", "BMP", {}),
    "palette16.bmp": ("P16", "BMP", {}),
    "bilevel.bmp": ("1", "BMP", {}),
    "gray.bmp": ("L", "BMP", {}),
    "rgb.bmp": ("RGB", "BMP", {}),
    "palette.png": ("P", "PNG", {}),
    "rgba.png": ("RGBA", "PNG", {}),
    "bilevel.png": ("1", "PNG", {}),
    "lossless.webp": ("RGB", "WEBP", {"lossless": True}),
    "alpha.webp": ("RGBA", "WEBP", {"lossless": True}),  # TensorFlow cannot give it 3 channels
}


@pytest.mark.parametrize("name", OTHER_KINDS)
def test_training_decodes_every_other_format_to_exactly_the_apps_pixels(tmp_path, name):
    mode, file_format, options = OTHER_KINDS[name]
    path = tmp_path / "a" / name
    path.parent.mkdir()
    image = Image.fromarray(noisy_pixels(40, 56))
    image = image.quantize(16) if mode == "P16" else image.convert(mode)
    if mode == "RGBA":
        image.putalpha(200)  # a translucent alpha channel, which the file keeps
    image.save(path, file_format, **options)

    trained_on = dataset_pixels(tmp_path, image_size=32)[0]

    shown_to_app, _ = inference.decode_upload(path.read_bytes())
    np.testing.assert_array_equal(trained_on, shown_to_app.astype(np.float32))


@pytest.mark.parametrize("name", sorted(transparent_images()))
def test_training_and_the_app_see_a_transparent_image_on_white_as_the_user_does(tmp_path, name):
    """Training decoded a PNG with transparency with TensorFlow (and Pillow's route dropped the alpha too): the model
    learnt the colours stored under the transparent pixels, black or junk, which the user never sees, while a
    browser and the app's preview show the image on white."""
    data, shown = transparent_images()[name]
    path = tmp_path / "a" / name
    path.parent.mkdir()
    path.write_bytes(data)

    trained_on = dataset_pixels(tmp_path, image_size=32)[0]

    shown_to_app, _ = inference.decode_upload(data)
    np.testing.assert_array_equal(trained_on, shown.astype(np.float32))
    np.testing.assert_array_equal(shown_to_app, shown)
    np.testing.assert_array_equal(inference.preview_image(shown_to_app), shown)  # the card's picture


def test_an_opaque_rgba_png_trains_on_exactly_its_rgb_pixels(tmp_path):
    """Every alpha 255: the pixels TensorFlow gave before transparency counted, whatever route decodes it now."""
    rgb = noisy_pixels(40, 56, seed=4)
    (tmp_path / "a").mkdir()
    Image.fromarray(np.dstack([rgb, np.full((40, 56), 255, np.uint8)]), "RGBA").save(tmp_path / "a" / "1_rgba.png")
    Image.fromarray(rgb).save(tmp_path / "a" / "2_rgb.png")

    rgba_pixels, rgb_pixels = dataset_pixels(tmp_path, image_size=32)

    np.testing.assert_array_equal(rgba_pixels, rgb_pixels)
    np.testing.assert_array_equal(rgb_pixels, tf.io.decode_png((tmp_path / "a" / "1_rgba.png").read_bytes(),
                                                               channels=3).numpy().astype(np.float32))


def test_dataset_and_model_crop_a_non_square_image_identically(tmp_path):
    wide = noisy_pixels(48, 96, seed=1)
    (tmp_path / "a").mkdir()
    Image.fromarray(wide).save(tmp_path / "a" / "1_wide.png")
    Image.fromarray(noisy_pixels(80, 40, seed=2)).save(tmp_path / "a" / "2_tall.png")  # mixed sizes
    model = build_model(2, image_size=32, backbone="resnet50", weights=None, augment="none", head_units=8)

    from_dataset = dataset_pixels(tmp_path, image_size=32)[0]
    from_model = keras.ops.convert_to_numpy(model.get_layer("resize")(wide[None].astype(np.float32)))[0]

    centre = tf.cast(wide[:, 24:72], tf.float32)  # the middle 48x48 square
    cropped = tf.image.resize(centre, (32, 32), antialias=True).numpy()
    np.testing.assert_allclose(from_model, cropped, atol=1e-3)
    np.testing.assert_allclose(from_dataset, from_model, atol=1e-3)


def test_app_prepares_an_image_as_the_models_resize_layer():
    wide = noisy_pixels(48, 96, seed=1)
    model = build_model(2, image_size=32, backbone="resnet50", weights=None, augment="none", head_units=8)
    classifier = inference.Classifier(model, ["a", "b"], image_size=32)

    from_app = np.asarray(classifier.prepare(wide))

    from_model = keras.ops.convert_to_numpy(model.get_layer("resize")(wide[None].astype(np.float32)))[0]
    np.testing.assert_allclose(from_app, from_model, atol=1e-4)


@pytest.mark.parametrize("height, width", [(90, 60), (40, 56), (20, 24), (32, 32), (301, 203)])
def test_input_pipeline_and_model_resize_to_the_same_pixels(height, width):
    """tf.data resizes mixed-size images with TensorFlow's ops on every backend; the model with keras.ops."""
    image = noisy_pixels(height, width).astype(np.float32)
    dataset = tf.data.Dataset.from_tensors(image).map(lambda pixels: data.resize_to_square(pixels, 32))

    from_pipeline = next(dataset.as_numpy_iterator())
    from_model = keras.ops.convert_to_numpy(SquareResize(32)(image[None]))[0]

    assert from_pipeline.shape == (32, 32, 3)
    np.testing.assert_allclose(from_pipeline, from_model, atol=1e-4)
