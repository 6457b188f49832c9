"""The shortcut check: size or format alone must not give the class away unnoticed."""

from __future__ import annotations

import random

from realvsai.shortcuts import ImageFacts, check_shortcuts, class_profiles, shortcut_warning


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
    assert "shortcut" in warning and "size" in warning and "format" in warning and "FAKE: 512-512 px, PNG 30" in warning


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


def test_three_classes_one_of_them_all_one_size():
    data = (facts("benign", 20, PHOTO_SIZES, "JPEG", 9) + facts("malignant", 20, PHOTO_SIZES, "JPEG", 10)
            + facts("normal", 20, [(256, 256)], "JPEG", 11))
    assert by_feature(check_shortcuts(data))["size"] < 0.9  # two classes stay apart only by content


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
