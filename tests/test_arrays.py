"""realvsai.arrays: the in-memory input that feeds model.fit where TensorFlow is not installed."""

from __future__ import annotations

import numpy as np
import pytest

from realvsai.arrays import EpochBatches, load_images
from realvsai.data import scan_images
from realvsai.errors import UserError
from realvsai.images import load_rgb

COUNT, BATCH = 10, 4
PIXELS = np.arange(COUNT, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 3, 3), np.uint8)  # image i is all i
LABELS = np.arange(COUNT, dtype=np.int32) % 2


def passes(batches: EpochBatches, count: int) -> list[list[int]]:
    """The image indices of the first ``count`` passes (each image holds its index in every pixel)."""
    steps = batches.steps
    return [[int(index) for step in range(steps) for index in batches[epoch * steps + step][0][:, 0, 0, 0]]
            for epoch in range(count)]


def test_batches_are_float32_images_with_their_labels_and_each_pass_holds_every_image_once():
    images, labels = (EpochBatches(PIXELS, LABELS, batch_size=BATCH, shuffle=True, seed=3)[0])

    assert images.dtype == np.float32 and images.shape == (BATCH, 2, 3, 3) and labels.dtype == np.int32
    np.testing.assert_array_equal(labels, images[:, 0, 0, 0].astype(np.int32) % 2)
    for order in passes(EpochBatches(PIXELS, LABELS, batch_size=BATCH, shuffle=True, seed=3), 3):
        assert sorted(order) == list(range(COUNT))


def test_each_pass_is_shuffled_from_the_seed_and_epoch_alone_so_a_resumed_run_reads_the_same():
    uninterrupted = passes(EpochBatches(PIXELS, LABELS, batch_size=BATCH, shuffle=True, seed=3), 4)
    resumed = passes(EpochBatches(PIXELS, LABELS, batch_size=BATCH, shuffle=True, seed=3, first_epoch=2), 2)
    other_seed = passes(EpochBatches(PIXELS, LABELS, batch_size=BATCH, shuffle=True, seed=4), 1)

    assert resumed == uninterrupted[2:]
    assert len({tuple(order) for order in uninterrupted}) == 4  # reshuffled every pass
    assert other_seed[0] != uninterrupted[0]
    assert passes(EpochBatches(PIXELS, LABELS, batch_size=BATCH), 2) == [list(range(COUNT))] * 2  # no shuffle


def test_drop_remainder_leaves_out_each_passs_short_batch_and_class_weights_come_as_sample_weights():
    batches = EpochBatches(PIXELS, LABELS, batch_size=BATCH, drop_remainder=True, class_weight={0: 0.5, 1: 2.0})
    first_pass = [batches[index] for index in range(3)]

    assert batches.steps == 2 and batches.num_batches is None  # endless: fit's steps_per_epoch cuts it
    assert [len(batch[1]) for batch in first_pass] == [BATCH, BATCH, BATCH]  # 4, 4, then the next pass
    assert [int(value) for value in first_pass[2][0][:, 0, 0, 0]] == [0, 1, 2, 3]
    for _, labels, weights in first_pass:
        np.testing.assert_array_equal(weights, np.where(labels == 1, 2.0, 0.5).astype(np.float32))


def test_load_images_decodes_a_scanned_folder_as_load_rgb_does(tmp_path, make_class_folder):
    images = scan_images(make_class_folder(tmp_path, {"FAKE": 2, "REAL": 3}, suffix=".jpg"))

    pixels, labels = load_images(images, image_size=32)

    assert pixels.dtype == np.uint8 and pixels.shape == (5, 32, 32, 3)
    np.testing.assert_array_equal(labels, images.labels)
    for index, path in enumerate(images.files):
        np.testing.assert_array_equal(pixels[index], load_rgb(path))


def test_load_images_gives_the_model_the_pixels_the_tf_data_input_gives_it_for_large_jpegs(tmp_path, make_class_folder):
    """A JPEG of more than twice the model's side decodes reduced in tf.data (``images.jpeg_scale``): in memory too,
    so that, resized by the model, the pixels are the ones training with TensorFlow sees."""
    from realvsai.data import make_dataset
    from realvsai.model import resize_to_square

    images = scan_images(make_class_folder(tmp_path, {"FAKE": 2, "REAL": 2}, suffix=".jpg", size=(300, 200)))

    pixels, _ = load_images(images, image_size=32)
    fed = np.concatenate([batch for batch, _ in make_dataset(images, batch_size=4, image_size=32)])

    assert pixels.shape == (4, 100, 150, 3)  # 1/2 of each side: the largest scale keeping twice 32 px
    np.testing.assert_allclose(np.asarray(resize_to_square(pixels, 32)), fed, atol=1e-3)


def test_load_images_refuses_images_of_several_sizes_in_one_line(tmp_path, make_class_folder):
    make_class_folder(tmp_path, {"FAKE": 1, "REAL": 1})
    make_class_folder(tmp_path, {"FAKE": 1}, seed=1, size=(40, 32))

    with pytest.raises(UserError, match=r"decode in 2 sizes .*one size"):
        load_images(scan_images(tmp_path), image_size=32)


def test_load_images_refuses_a_jpeg_and_a_png_of_one_size_that_decode_in_two(tmp_path, make_class_folder):
    make_class_folder(tmp_path, {"FAKE": 1}, suffix=".jpg", size=(300, 200))  # decoded at 1/2 for 32 px
    make_class_folder(tmp_path, {"REAL": 1}, suffix=".png", size=(300, 200))  # decoded whole

    with pytest.raises(UserError, match=r"decode in 2 sizes \(e.g. 150x100 and 300x200\)"):
        load_images(scan_images(tmp_path), image_size=32)


def test_load_images_decodes_a_phones_mpo_reduced_as_a_jpeg(tmp_path):
    """Phones save JPEGs with a second picture appended (Pillow's MPO): a JPEG for the reduced decode too."""
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (200, 300, 3), np.uint8)
    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    Image.fromarray(pixels).save(tmp_path / "A" / "phone.jpg", "MPO", save_all=True,
                                 append_images=[Image.fromarray(pixels[::2, ::2])])
    Image.fromarray(pixels).save(tmp_path / "B" / "camera.jpg", "JPEG")

    loaded, _ = load_images(scan_images(tmp_path), image_size=32)

    assert loaded.shape == (2, 100, 150, 3)
