"""Image statistics: shortcuts by size or format, and images unlike the training images."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from PIL import Image

from realvsai.image_stats import (
    ImageFacts,
    check_shortcuts,
    class_profiles,
    describe_profiles,
    is_grayscale_mode,
    shortcut_warning,
    training_profile,
    training_record,
    unfamiliar_reason,
)
from realvsai.images import read_header


def facts(class_name: str, count: int, sizes: list[tuple[int, int]], image_format: str, seed: int) -> list[ImageFacts]:
    rng = random.Random(seed)
    return [ImageFacts(class_name, *rng.choice(sizes), image_format) for _ in range(count)]


PHOTO_SIZES = [(640, 427), (1024, 768), (800, 1200), (1600, 1067), (2048, 1536), (900, 900)]


def by_feature(shortcuts) -> dict[str, float]:
    return {shortcut.feature: shortcut.balanced_accuracy for shortcut in shortcuts}


def test_fakes_all_png_512_are_a_size_and_format_shortcut():
    data = facts("FAKE", 30, [(512, 512)], "PNG", 1) + facts("REAL", 30, PHOTO_SIZES, "JPEG", 2)
    accuracy = by_feature(check_shortcuts(data))
    assert accuracy["size"] >= 0.9 and accuracy["format"] >= 0.9
    warning = shortcut_warning(check_shortcuts(data), class_profiles(data))
    assert "shortcut" in warning and "size" in warning and "format" in warning
    assert "Classes: FAKE 512 px a side, 30 PNG; REAL" in warning
    assert "balanced accuracy; file format alone" in warning or "balanced accuracy; image size" in warning


def test_classes_alike_in_size_and_format_have_no_shortcut():
    data = facts("FAKE", 30, PHOTO_SIZES, "JPEG", 3) + facts("REAL", 30, PHOTO_SIZES, "JPEG", 4)
    accuracy = by_feature(check_shortcuts(data))
    assert accuracy["size"] < 0.9 and accuracy["format"] < 0.9
    assert shortcut_warning(check_shortcuts(data), class_profiles(data)) is None


def test_cifake_like_thumbnails_have_no_shortcut():
    data = facts("FAKE", 20, [(32, 32)], "JPEG", 5) + facts("REAL", 20, [(32, 32)], "JPEG", 6)
    assert shortcut_warning(check_shortcuts(data), class_profiles(data)) is None


def test_format_alone_is_found_when_sizes_are_alike():
    data = facts("FAKE", 25, PHOTO_SIZES, "PNG", 7) + facts("REAL", 25, PHOTO_SIZES, "JPEG", 8)
    accuracy = by_feature(check_shortcuts(data))
    assert accuracy["format"] == 1.0 and accuracy["size"] < 0.9


def test_three_classes_one_of_them_all_one_size_is_a_shortcut_to_that_class():
    """Size tells normal from the rest, not every class (about 0.67 over all three), and a model can learn it."""
    data = (facts("benign", 20, PHOTO_SIZES, "JPEG", 9) + facts("malignant", 20, PHOTO_SIZES, "JPEG", 10)
            + facts("normal", 20, [(256, 256)], "JPEG", 11))
    shortcuts = check_shortcuts(data)
    assert by_feature(shortcuts)["size"] < 0.9  # two classes stay apart only by content
    warning = shortcut_warning(shortcuts, class_profiles(data))
    assert "image size (width and height) alone tells normal from the other classes with 100% balanced accuracy" \
        in warning
    assert "file format" not in warning  # one format everywhere


def test_a_class_of_a_few_images_is_not_called_given_away():
    """With 4 images a class, one of the 15 one-class checks (3 classes x 5 properties) clears 0.9 by chance about
    once in 20 draws from one distribution: too few images to tell."""
    data = (facts("benign", 4, PHOTO_SIZES, "JPEG", 18) + facts("malignant", 4, PHOTO_SIZES, "JPEG", 19)
            + facts("normal", 4, [(256, 256)], "JPEG", 20))
    assert shortcut_warning(check_shortcuts(data), class_profiles(data)) is None


def test_three_classes_alike_in_size_and_format_have_no_shortcut():
    data = (facts("benign", 20, PHOTO_SIZES, "JPEG", 15) + facts("malignant", 20, PHOTO_SIZES, "JPEG", 16)
            + facts("normal", 20, PHOTO_SIZES, "JPEG", 17))
    assert shortcut_warning(check_shortcuts(data), class_profiles(data)) is None


def test_one_class_or_a_single_image_gives_no_verdict():
    assert check_shortcuts(facts("REAL", 10, PHOTO_SIZES, "JPEG", 12)) == []
    assert check_shortcuts(facts("REAL", 10, PHOTO_SIZES, "JPEG", 13) + facts("FAKE", 1, [(512, 512)], "PNG", 14)) == []


def test_profiles_report_sizes_and_formats_per_class():
    data = [ImageFacts("FAKE", 512, 512, "PNG"), ImageFacts("FAKE", 1024, 1024, "PNG"),
            ImageFacts("REAL", 640, 427, "JPEG"), ImageFacts("REAL", 800, 600, "PNG")]
    assert class_profiles(data) == {
        "FAKE": {"images": 2, "min_side": 512, "max_side": 1024, "formats": {"PNG": 2}},
        "REAL": {"images": 2, "min_side": 427, "max_side": 800, "formats": {"JPEG": 1, "PNG": 1}},
    }


CIFAKE_PROFILE = {"min_side": 32, "max_side": 32, "formats": ["JPEG"]}


def test_training_profile_records_the_side_range_and_formats():
    data = [ImageFacts("FAKE", 512, 512, "PNG"), ImageFacts("REAL", 640, 427, "JPEG")]
    assert training_profile(data) == {"min_side": 427, "max_side": 640, "formats": ["JPEG", "PNG"]}


def test_a_photo_is_unfamiliar_to_a_model_trained_on_thumbnails():
    reason = unfamiliar_reason(CIFAKE_PROFILE, 1024, 768, "JPEG")
    assert reason == "1024x768 px, but the training images were 32 px a side"


def test_a_thumbnail_is_unfamiliar_to_a_model_trained_on_photos():
    """A short side under half the smallest training side is as far outside the training sizes as a long side
    over twice the largest."""
    photos = {"min_side": 428, "max_side": 640, "formats": ["JPEG"]}
    assert unfamiliar_reason(photos, 200, 300, "JPEG") == "200x300 px, but the training images were 428-640 px a side"
    assert unfamiliar_reason(photos, 214, 300, "JPEG") is None  # half the smallest: still within


def test_an_image_like_the_training_images_is_familiar():
    assert unfamiliar_reason(CIFAKE_PROFILE, 32, 32, "JPEG") is None
    assert unfamiliar_reason(CIFAKE_PROFILE, 48, 40, "JPEG") is None  # within twice the training size


def test_a_format_no_training_image_had_is_unfamiliar():
    assert "PNG" in unfamiliar_reason(CIFAKE_PROFILE, 32, 32, "PNG")


def test_without_a_recorded_profile_nothing_is_flagged():
    assert unfamiliar_reason(None, 4000, 3000, "PNG") is None


def test_a_phone_jpeg_read_as_mpo_counts_as_jpeg_in_profiles_and_familiarity():
    data = [ImageFacts("REAL", 640, 480, "MPO"), ImageFacts("REAL", 640, 480, "JPEG")]
    assert training_profile(data)["formats"] == ["JPEG"]
    assert class_profiles(data)["REAL"]["formats"] == {"JPEG": 2}
    assert unfamiliar_reason({"min_side": 480, "max_side": 640, "formats": ["JPEG"]}, 640, 480, "MPO") is None
    # model.json written before MPO was named JPEG
    assert unfamiliar_reason({"min_side": 480, "max_side": 640, "formats": ["MPO"]}, 640, 480, "JPEG") is None
    assert "PNG" in unfamiliar_reason({"min_side": 480, "max_side": 640, "formats": ["MPO"]}, 640, 480, "PNG")


# The shortcut detector sees patterns a shallow tree misses, and names the property


def alternating_sizes() -> list[ImageFacts]:
    """Square sizes 200, 202, 204... taking turns between the classes, three images each."""
    return [ImageFacts("FAKE" if step % 2 else "REAL", 200 + 2 * step, 200 + 2 * step, "JPEG")
            for step in range(30) for _ in range(3)]


def test_sizes_that_take_turns_between_the_classes_are_a_size_shortcut():
    data = alternating_sizes()
    assert by_feature(check_shortcuts(data))["size"] >= 0.9
    assert "image size (width and height) alone predicts the class" in shortcut_warning(
        check_shortcuts(data), class_profiles(data))


def test_file_size_alone_is_found_and_named():
    rng = random.Random(15)
    data = ([ImageFacts("FAKE", 512, 512, "PNG", file_bytes=rng.randint(300_000, 400_000)) for _ in range(30)]
            + [ImageFacts("REAL", 512, 512, "PNG", file_bytes=rng.randint(500_000, 700_000)) for _ in range(30)])
    accuracy = by_feature(check_shortcuts(data))
    assert accuracy["file_size"] == 1.0 and accuracy["size"] < 0.9 and accuracy["format"] < 0.9
    warning = shortcut_warning(check_shortcuts(data), class_profiles(data), data)
    assert "file size alone predicts the class with 100% balanced accuracy (FAKE 29" in warning
    assert "KB, REAL 4" in warning


def test_a_shortcut_on_a_few_images_says_it_may_be_chance_and_shows_sizes_that_differ():
    """Two CIFAKE thumbnails a class (947 and 961 bytes against 907 and 914) were "file size alone predicts the
    class with 100% balanced accuracy (FAKE 1 KB, REAL 1 KB)": ranges that read alike, and advice to re-encode a
    set whose four file sizes fall apart by chance (pure noise does so in about 1 draw in 4 at 2 images a class)."""
    data = ([ImageFacts("FAKE", 32, 32, "JPEG", file_bytes=size, jpeg_quality=75) for size in (947, 961)]
            + [ImageFacts("REAL", 32, 32, "JPEG", file_bytes=size, jpeg_quality=75) for size in (907, 914)])
    warning = shortcut_warning(check_shortcuts(data), class_profiles(data), data)

    assert "file size alone predicts the class" in warning
    assert "FAKE 947-961 bytes, REAL 907-914 bytes" in warning
    assert "may be chance" in warning and "2 FAKE and 2 REAL images" in warning


def test_a_shortcut_on_enough_images_of_each_class_is_not_called_chance():
    data = facts("FAKE", 10, [(512, 512)], "PNG", 1) + facts("REAL", 10, PHOTO_SIZES, "JPEG", 2)
    warning = shortcut_warning(check_shortcuts(data), class_profiles(data), data)
    assert "format alone predicts the class" in warning and "chance" not in warning


def test_jpeg_quality_alone_is_found_and_named():
    data = ([ImageFacts("FAKE", 640, 480, "JPEG", jpeg_quality=95) for _ in range(20)]
            + [ImageFacts("REAL", 640, 480, "JPEG", jpeg_quality=quality) for quality in (70, 75, 80, 85) * 5])
    accuracy = by_feature(check_shortcuts(data))
    assert accuracy["jpeg_quality"] == 1.0 and accuracy["size"] < 0.9
    warning = shortcut_warning(check_shortcuts(data), class_profiles(data), data)
    assert "JPEG quality alone predicts the class" in warning and "FAKE 95" in warning


def test_the_verdict_is_the_same_on_every_run_and_in_any_order():
    data = facts("FAKE", 40, PHOTO_SIZES, "JPEG", 16) + facts("REAL", 40, PHOTO_SIZES[:4], "JPEG", 17)
    first = check_shortcuts(data)
    assert check_shortcuts(list(reversed(data))) == first == check_shortcuts(data)


def test_properties_the_facts_do_not_carry_are_not_judged():
    data = facts("FAKE", 10, PHOTO_SIZES, "JPEG", 18) + facts("REAL", 10, PHOTO_SIZES, "JPEG", 19)
    assert set(by_feature(check_shortcuts(data))) == {"size", "aspect", "format"}


def test_colour_alone_is_found_and_named_with_each_class_s_grayscale_count():
    """One class all colour (annotated screenshots beside gray ultrasound scans) gave no warning, though colour
    alone told it from the others, and the class profiles already counted the grayscale images."""
    data = ([ImageFacts("benign", *size, "PNG", grayscale=True) for size in PHOTO_SIZES * 4]
            + [ImageFacts("malignant", *size, "PNG", grayscale=True) for size in PHOTO_SIZES * 4]
            + [ImageFacts("normal", *size, "PNG", grayscale=False) for size in PHOTO_SIZES * 4])
    shortcuts = check_shortcuts(data)
    assert by_feature(shortcuts)["size"] < 0.9
    warning = shortcut_warning(shortcuts, class_profiles(data), data)
    assert "colour or grayscale alone tells normal from the other classes with 100% balanced accuracy" in warning
    assert "benign 427-2048 px a side, 24 PNG, 24 grayscale" in warning and "make the classes alike" in warning


# Grayscale images: one header criterion for the training scan and the upload


COLOUR_ONLY = {"min_side": 32, "max_side": 32, "formats": ["PNG"], "images": 8, "grayscale": 0}
GRAYSCALE_ONLY = {"min_side": 32, "max_side": 32, "formats": ["PNG"], "images": 8, "grayscale": 8}


def test_the_profiles_count_the_grayscale_images_per_class_and_in_total():
    data = [ImageFacts("FAKE", 32, 32, "PNG", grayscale=False), ImageFacts("FAKE", 32, 32, "PNG", grayscale=True),
            ImageFacts("REAL", 32, 32, "PNG", grayscale=False), ImageFacts("REAL", 32, 32, "PNG", grayscale=False)]

    assert training_profile(data) == {"min_side": 32, "max_side": 32, "formats": ["PNG"], "images": 4, "grayscale": 1}
    assert {name: profile["grayscale"] for name, profile in class_profiles(data).items()} == {"FAKE": 1, "REAL": 0}
    assert describe_profiles(class_profiles(data)) == {"FAKE": "32 px a side, 2 PNG, 1 grayscale",
                                                       "REAL": "32 px a side, 2 PNG"}


def test_a_grayscale_image_is_unfamiliar_to_a_model_trained_on_colour_images_only():
    reason = unfamiliar_reason(COLOUR_ONLY, 32, 32, "PNG", grayscale=True)
    assert reason == "a grayscale image; the model was trained on colour images only"
    assert unfamiliar_reason(COLOUR_ONLY, 32, 32, "PNG", grayscale=False) is None


def test_a_colour_image_is_unfamiliar_to_a_model_trained_on_grayscale_images_only():
    reason = unfamiliar_reason(GRAYSCALE_ONLY, 32, 32, "PNG", grayscale=False)
    assert reason == "a colour image; the model was trained on grayscale images only"
    assert unfamiliar_reason(GRAYSCALE_ONLY, 32, 32, "PNG", grayscale=True) is None


def test_a_grayscale_image_is_familiar_once_a_training_image_was_grayscale():
    assert unfamiliar_reason(COLOUR_ONLY | {"grayscale": 1}, 32, 32, "PNG", grayscale=True) is None


def test_without_grayscale_counts_or_the_image_s_mode_nothing_is_flagged_for_colour():
    old_profile = {"min_side": 32, "max_side": 32, "formats": ["PNG"]}  # a model.json written before the counts
    assert unfamiliar_reason(old_profile, 32, 32, "PNG", grayscale=True) is None
    assert unfamiliar_reason(COLOUR_ONLY, 32, 32, "PNG") is None  # the caller does not know the image's mode
    data = [ImageFacts("REAL", 32, 32, "PNG"), ImageFacts("REAL", 32, 32, "PNG", grayscale=True)]
    assert "grayscale" not in training_profile(data)  # one image of unknown mode: no count at all


def test_grayscale_and_colour_reasons_join_the_size_reason():
    reason = unfamiliar_reason(COLOUR_ONLY, 1024, 768, "PNG", grayscale=True)
    assert reason == ("1024x768 px, but the training images were 32 px a side; "
                      "a grayscale image; the model was trained on colour images only")


@pytest.mark.parametrize(("mode", "fmt", "grayscale"), [
    ("L", "PNG", True), ("LA", "PNG", True), ("I;16", "PNG", True), ("1", "PNG", True), ("L", "JPEG", True),
    ("RGB", "PNG", False), ("RGBA", "PNG", False), ("P", "PNG", False), ("RGB", "JPEG", False),
    ("CMYK", "JPEG", False)])
def test_the_header_says_whether_an_image_is_grayscale(mode, fmt, grayscale):
    buffer = io.BytesIO()
    colour = {"RGB": "red", "RGBA": "red", "P": "red", "CMYK": (0, 255, 255, 0)}.get(mode, 1)  # red; else gray
    Image.new(mode, (8, 8), colour).save(buffer, fmt)

    assert read_header(buffer.getvalue()).grayscale is grayscale
    assert is_grayscale_mode(mode) is grayscale


@pytest.mark.parametrize("shape", [(1, 2, 3), (32, 32, 3), (7, 300, 3), (512, 384, 3)])
def test_the_gray_check_sums_each_pixel_s_largest_minus_smallest_channel(shape):
    """``gray_pixels``' sum, exact at any size (it once reduced over the channel axis, ten times slower)."""
    from realvsai.images import _spread

    pixels = np.random.default_rng(sum(shape)).integers(0, 256, shape, np.uint8)
    pixels.reshape(-1, 3)[:2] = [[0, 255, 0], [255, 0, 255]]  # the widest spreads, either way round
    expected = sum(max(pixel) - min(pixel) for pixel in pixels.reshape(-1, 3).tolist())
    assert _spread(pixels) == expected and isinstance(_spread(pixels), int)


def gray_noise(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width), np.uint8)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(("kind", "grayscale"), [
    ("gray pixels in an RGB PNG", True),  # a medical set's scans, saved as RGB (BUSI's ultrasound images are)
    ("gray pixels in a palette PNG", True),
    ("gray pixels in an RGB JPEG", True),
    ("gray pixels with a small coloured mark", True),  # a ruler or annotation on 0.5 % of a scan
    ("colour pixels in an RGB PNG", False),
    ("colour pixels on 5 % of a gray RGB PNG", False),
    ("colour pixels in a large RGB JPEG", False),  # decoded reduced for the check
])
def test_an_image_whose_colour_channels_agree_is_grayscale_whatever_its_mode(kind, grayscale):
    gray = np.repeat(gray_noise()[..., None], 3, axis=-1)
    marked = gray.copy()
    share = 0.05 if "5 %" in kind else 0.005
    marked.reshape(-1, 3)[:round(share * 48 * 64)] = (255, 0, 0)
    data = {
        "gray pixels in an RGB PNG": encoded(Image.fromarray(gray), "PNG"),
        "gray pixels in a palette PNG": encoded(Image.fromarray(gray_noise()).convert("P"), "PNG"),
        "gray pixels in an RGB JPEG": encoded(Image.fromarray(gray), "JPEG", quality=75),
        "gray pixels with a small coloured mark": encoded(Image.fromarray(marked), "PNG"),
        "colour pixels in an RGB PNG": encoded(Image.fromarray(
            np.random.default_rng(1).integers(0, 256, (48, 64, 3), np.uint8)), "PNG"),
        "colour pixels on 5 % of a gray RGB PNG": encoded(Image.fromarray(marked), "PNG"),
        "colour pixels in a large RGB JPEG": encoded(Image.fromarray(
            np.random.default_rng(2).integers(0, 256, (900, 1200, 3), np.uint8)), "JPEG", quality=90),
    }[kind]

    assert read_header(data).grayscale is grayscale


def test_a_thin_coloured_mark_counts_alike_on_a_large_jpeg_decoded_whole_and_at_one_eighth():
    """The scan checks a large JPEG at 1/8 of its sides, a split's inspection and the app at other scales: a 1 px
    line covers 8 times the share at 1/8, at an eighth of its strength, and must not tip the answer."""
    from realvsai import images

    gradient = np.repeat(np.linspace(0, 255, 1200, dtype=np.uint8)[None, :, None], 900, axis=0).repeat(3, axis=2)
    for share, grayscale in ((0.004, True), (0.04, False)):
        marked = gradient.copy()
        marked[::round(1 / share), :] = (255, 0, 0)  # 1 px red lines on about this share of the pixels
        data = encoded(Image.fromarray(marked), "JPEG", quality=95, subsampling=0)
        with Image.open(io.BytesIO(data)) as whole:
            whole.load()
            assert images.looks_gray(whole) is grayscale, share
        assert read_header(data).grayscale is grayscale, share  # at 1/8
        assert images.gray_pixels(images.load_rgb(data, image_size=64)) is grayscale, share  # the app's decode


def test_training_record_counts_scans_saved_in_colour_as_grayscale(tmp_path):
    """A medical set of gray scans saved as RGB files is a grayscale set: a colour photo is then unfamiliar."""
    from realvsai import data

    (tmp_path / "train" / "benign").mkdir(parents=True)
    for index in range(3):
        scan = np.repeat(gray_noise(seed=index)[..., None], 3, axis=-1)
        Image.fromarray(scan).save(tmp_path / "train" / "benign" / f"b{index}.png")

    profile = training_record(data.scan_images(tmp_path / "train").facts())["training_images"]

    assert profile["images"] == 3 and profile["grayscale"] == 3
    assert unfamiliar_reason(profile, 64, 48, "PNG", grayscale=False) == (
        "a colour image; the model was trained on grayscale images only")


def test_training_record_counts_the_grayscale_training_images_from_their_headers(tmp_path):
    from conftest import write_image

    from realvsai import data

    for index in range(4):
        write_image(tmp_path / "train" / "FAKE" / f"f{index}.png", seed=index, mode="L" if index == 0 else "RGB")
        write_image(tmp_path / "train" / "REAL" / f"r{index}.png", seed=10 + index)

    profile = training_record(data.scan_images(tmp_path / "train").facts())["training_images"]

    assert profile["images"] == 8 and profile["grayscale"] == 1
