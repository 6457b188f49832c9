"""Image sizes, formats and colour per class: shortcuts (size, aspect, file size, format, JPEG quality or colour
alone giving the label away) and unfamiliar inputs (far outside model.json's ``training_images``, never called certain).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SHORTCUT_ACCURACY = 0.9  # balanced accuracy from one property at which the property is a shortcut
# The images a class needs before one property is said to give it away (three classes or more): with 4 a class,
# one of the 15 checks of 3 classes and 5 properties clears SHORTCUT_ACCURACY by chance in about 1 draw in 20.
# A shortcut judged on fewer images of some class is said to be maybe chance (``shortcut_warning``).
ONE_CLASS_MIN_IMAGES = 10
# A side more than this many times smaller or larger than the training images' sides is unfamiliar:
# the model's resize then erases or invents the detail it was trained on.
SIZE_TOLERANCE = 2.0
# Pillow names a file by its container; these are the formats a user (and the model) knows them as.
# MPO is a JPEG with more frames appended (most phone cameras write it): its first frame is the photo.
FORMAT_ALIASES = {"MPO": "JPEG"}
# Pillow's modes of one gray channel (1, 8, 16 or 32 bits, with or without alpha): a header naming one of them is a
# grayscale image, which decoding turns into three equal channels. An image of another mode (RGB, a palette) is
# gray when its decoded channels agree (``images.looks_gray``).
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def format_name(pillow_format: str | None) -> str:
    """The name a user knows ``pillow_format`` by: Pillow's ``"MPO"`` is ``"JPEG"``; others as they are."""
    return FORMAT_ALIASES.get(pillow_format or "", pillow_format or "")


def is_grayscale_mode(mode: str) -> bool:
    """Whether Pillow's ``mode``, as an image's header gives it, is a grayscale image (``GRAYSCALE_MODES``)."""
    return mode in GRAYSCALE_MODES


@dataclass(frozen=True)
class ImageFacts:
    """One image's class and what its header says; the file size and JPEG quality where they are known."""

    class_name: str
    width: int
    height: int
    image_format: str  # Pillow's name: "JPEG", "PNG", ...
    file_bytes: int | None = None
    jpeg_quality: int | None = None  # images.read_header's estimate, for JPEGs
    grayscale: bool | None = None  # images.read_header's ``looks_gray``; None where it was not read


@dataclass(frozen=True)
class Shortcut:
    """How well one property (a key of ``PROPERTIES``) alone predicts the class."""

    feature: str
    balanced_accuracy: float  # of telling every class from every other
    # With three classes or more: the class it tells best from the others together, and that balanced accuracy.
    # A property that gives one class away is a shortcut the score over all classes hides (at most 2/3 with three).
    one_class: str | None = None
    one_class_accuracy: float | None = None


# The properties the shortcut check judges, with their words for the warning.
PROPERTIES = {
    "size": "image size (width and height)",
    "aspect": "aspect ratio",
    "file_size": "file size",
    "format": "file format",
    "jpeg_quality": "JPEG quality",
    "colour": "colour or grayscale",  # the class profiles give each class's grayscale count
}


def training_profile(facts: Sequence[ImageFacts]) -> dict[str, object]:
    """The smallest and largest side and the formats: model.json's ``training_images``; where every fact says
    whether it is grayscale, also the number of ``images`` and how many of them are ``grayscale``."""
    profile: dict[str, object] = {"min_side": min(min(fact.width, fact.height) for fact in facts),
                                  "max_side": max(max(fact.width, fact.height) for fact in facts),
                                  "formats": sorted({format_name(fact.image_format) for fact in facts})}
    if all(fact.grayscale is not None for fact in facts):
        profile.update(images=len(facts), grayscale=sum(bool(fact.grayscale) for fact in facts))
    return profile


def class_profiles(facts: Sequence[ImageFacts]) -> dict[str, dict[str, object]]:
    """Per class: image count, smallest and largest side, how many files of each format (and how many are
    grayscale, as ``training_profile`` counts them)."""
    names = sorted({fact.class_name for fact in facts})
    by_class = {name: [fact for fact in facts if fact.class_name == name] for name in names}
    return {name: {"images": len(members), **training_profile(members),
                   "formats": dict(sorted(Counter(format_name(fact.image_format) for fact in members).items()))}
            for name, members in by_class.items()}


def sides(min_side: object, max_side: object) -> str:
    """A side range in words: "32 px a side", "427-640 px a side"."""
    return f"{min_side} px a side" if min_side == max_side else f"{min_side}-{max_side} px a side"


def describe_profiles(profiles: Mapping[str, Mapping[str, object]]) -> dict[str, str]:
    """Each class's profile in words: "32 px a side, 4,000 JPEG", with ", 12 grayscale" where some are."""
    return {name: f"{sides(profile['min_side'], profile['max_side'])}, "
                  + ", ".join(f"{count:,} {fmt}" for fmt, count in profile["formats"].items())
                  + (f", {profile['grayscale']:,} grayscale" if profile.get("grayscale") else "")
            for name, profile in profiles.items()}


def check_shortcuts(facts: Sequence[ImageFacts]) -> list[Shortcut]:
    """Cross-validated balanced accuracy of predicting the class from each property in ``PROPERTIES`` alone.

    The predictor takes the class most images of the nearest value seen in training have (1-nearest-neighbour
    over the distinct values): it finds values that take turns between the classes, which a shallow tree
    misses. Deterministic: the same facts in any order give the same numbers. A property some image does
    not carry (file size, JPEG quality) is not judged; [] with fewer than two images in some class.
    """
    counts = Counter(fact.class_name for fact in facts)
    if len(counts) < 2 or min(counts.values()) < 2:
        return []
    import numpy as np  # scikit-learn and NumPy only when a split asks: --help stays instant
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold

    columns = _property_columns(facts)
    class_names = sorted(counts)
    labels = np.array([class_names.index(fact.class_name) for fact in facts])
    # One order whatever order the facts came in: the folds then depend on the facts alone.
    order = np.lexsort([*np.concatenate(list(columns.values()), axis=1).T[::-1], labels])
    labels = labels[order]
    folds = list(StratifiedKFold(n_splits=min(5, min(counts.values())), shuffle=True, random_state=0)
                 .split(np.zeros(len(labels)), labels))
    shortcuts = []
    for name, values in columns.items():
        predicted = _nearest_value_predictions(values[order], labels, folds, len(class_names))
        shortcut = Shortcut(name, float(balanced_accuracy_score(labels, predicted)))
        judged = [index for index, name in enumerate(class_names) if counts[name] >= ONE_CLASS_MIN_IMAGES]
        if len(class_names) > 2 and judged:
            scores = [balanced_accuracy_score(labels == index, predicted == index) for index in judged]
            best = int(np.argmax(scores))  # a tie: the first class by name
            shortcut = dataclasses.replace(shortcut, one_class=class_names[judged[best]],
                                           one_class_accuracy=float(scores[best]))
        shortcuts.append(shortcut)
    return shortcuts


def _property_columns(facts: Sequence[ImageFacts]) -> dict:
    """``PROPERTIES`` name -> (images, values) float array, for the properties every image carries (colour: 1 for a
    grayscale image)."""
    import numpy as np

    widths = np.maximum([fact.width for fact in facts], 1).astype(np.float64)
    heights = np.maximum([fact.height for fact in facts], 1).astype(np.float64)
    names = [format_name(fact.image_format) for fact in facts]
    formats = sorted(set(names))
    columns = {
        "size": np.log(np.stack([widths, heights], axis=1)),  # logarithms: 2x larger is as far at any size
        "aspect": np.log(widths / heights)[:, None],
        "format": np.array([[name == known for known in formats] for name in names], dtype=np.float64),
    }
    if all(fact.file_bytes is not None for fact in facts):
        columns["file_size"] = np.log(np.maximum([fact.file_bytes for fact in facts], 1))[:, None]
    qualities = [fact.jpeg_quality if name == "JPEG" else 0 for fact, name in zip(facts, names)]  # 0: not a JPEG
    if all(quality is not None for quality in qualities):
        columns["jpeg_quality"] = np.array(qualities, dtype=np.float64)[:, None]
    if all(fact.grayscale is not None for fact in facts):
        columns["colour"] = np.array([[float(bool(fact.grayscale))] for fact in facts])
    return {name: columns[name] for name in PROPERTIES if name in columns}


def _nearest_value_predictions(values, labels, folds, num_classes: int):
    """Out-of-fold predictions: each image gets the majority class of the nearest distinct training value."""
    import numpy as np
    from sklearn.neighbors import KNeighborsClassifier

    distinct, value_ids = np.unique(values, axis=0, return_inverse=True)  # sorted: the same in any order
    value_ids = value_ids.reshape(-1)  # NumPy 2.0.0 returns a column here
    predicted = np.empty_like(labels)
    for train, held_out in folds:
        votes = np.zeros((len(distinct), num_classes))
        np.add.at(votes, (value_ids[train], labels[train]), 1)
        seen = votes.any(axis=1)  # the distinct values in this fold's training images
        nearest = KNeighborsClassifier(n_neighbors=1).fit(distinct[seen], votes[seen].argmax(axis=1))
        predicted[held_out] = nearest.predict(values[held_out])  # a tie in votes goes to the first class by name
    return predicted


def _ranges(facts: Sequence[ImageFacts], feature: str) -> str:
    """Each class's range of ``feature`` in words, for the numbers the class profiles do not show."""
    def span(low: str, high: str) -> str:
        return low if low == high else f"{low}-{high}"

    parts = []
    # Thumbnails' sizes in bytes: in whole KB, 907-914 and 947-961 bytes read "1 KB" alike.
    small_files = feature == "file_size" and max(fact.file_bytes for fact in facts) < 10 * 1024
    for name in sorted({fact.class_name for fact in facts}):
        members = [fact for fact in facts if fact.class_name == name]
        if feature == "file_size" and small_files:
            sizes = [fact.file_bytes for fact in members]
            parts.append(f"{name} {span(str(min(sizes)), str(max(sizes)))} bytes")
        elif feature == "file_size":
            sizes = [fact.file_bytes / 1024 for fact in members]
            parts.append(f"{name} {span(f'{min(sizes):.0f}', f'{max(sizes):.0f}')} KB")
        elif feature == "aspect":
            ratios = [fact.width / max(fact.height, 1) for fact in members]
            parts.append(f"{name} {span(f'{min(ratios):.2f}', f'{max(ratios):.2f}')}")
        elif feature == "jpeg_quality":
            qualities = sorted({fact.jpeg_quality for fact in members if fact.jpeg_quality is not None})
            parts.append(f"{name} " + (span(str(qualities[0]), str(qualities[-1])) if qualities else "no JPEG"))
    return f" ({', '.join(parts)})" if parts else ""


def shortcut_warning(shortcuts: Sequence[Shortcut], profiles: Mapping[str, Mapping[str, object]],
                     facts: Sequence[ImageFacts] = ()) -> str | None:
    """One warning naming every property that alone predicts the class, or None when none does.

    With ``facts``, the warning also gives each class's range of a shortcut the profiles do not show
    (file size, aspect, JPEG quality).
    """
    def verdict(shortcut: Shortcut) -> str | None:
        words = PROPERTIES.get(shortcut.feature, shortcut.feature)
        if shortcut.balanced_accuracy >= SHORTCUT_ACCURACY:
            return f"{words} alone predicts the class with {shortcut.balanced_accuracy:.0%} balanced accuracy"
        if (shortcut.one_class_accuracy or 0) >= SHORTCUT_ACCURACY:
            return (f"{words} alone tells {shortcut.one_class} from the other classes with "
                    f"{shortcut.one_class_accuracy:.0%} balanced accuracy")
        return None

    found = [(shortcut, said) for shortcut in shortcuts if (said := verdict(shortcut))]
    if not found:
        return None
    named = "; ".join(said + (_ranges(facts, shortcut.feature) if facts else "") for shortcut, said in found)
    classes = "; ".join(f"{name} {text}" for name, text in describe_profiles(profiles).items())
    return (f"shortcut: {named}. Classes: {classes}. A model can learn that instead of the content; make the "
            "classes alike in size, format and colour (re-encode, resize or convert one side) before trusting its "
            "accuracy."
            + _few_images_caveat(profiles))


def _few_images_caveat(profiles: Mapping[str, Mapping[str, object]]) -> str:
    """A sentence for a shortcut judged on fewer than ``ONE_CLASS_MIN_IMAGES`` images of some class, "" otherwise:
    a few images fall apart in one property by luck (file sizes of noise, at 2 images a class, about 1 draw in 4)."""
    few = {name: profile["images"] for name, profile in profiles.items()
           if isinstance(profile.get("images"), int) and profile["images"] < ONE_CLASS_MIN_IMAGES}
    if not few:
        return ""
    counts = " and ".join(f"{count} {name}" for name, count in few.items())
    return (f" Judged on only {counts} images, this may be chance: so few images often differ in one property by "
            "luck; judge it again once the classes have more images.")


def profile_classes(facts: Sequence[ImageFacts]) -> tuple[dict[str, dict[str, object]], str | None]:
    """``class_profiles`` and the shortcut warning (or None), as the split scripts report them."""
    profiles = class_profiles(facts)
    return profiles, shortcut_warning(check_shortcuts(facts), profiles, facts)


def training_record(facts: Sequence[ImageFacts], judged: Sequence[ImageFacts] | None = None) -> dict[str, Any]:
    """model.json's ``training_images`` of ``facts`` (the app flags inputs unlike them), and the ``shortcuts`` and
    ``shortcut_warning`` of ``judged`` (default ``facts``): the properties the split judges (size, aspect, file
    size, format, JPEG quality, colour), for data split elsewhere."""
    judged = facts if judged is None else judged
    shortcuts = check_shortcuts(judged)
    return {
        "training_images": training_profile(facts),
        "shortcuts": {shortcut.feature: shortcut.balanced_accuracy for shortcut in shortcuts},
        "shortcut_warning": shortcut_warning(shortcuts, class_profiles(judged), judged),
    }


def grayscale_counts(profile: Any) -> tuple[int, int] | None:
    """``(images, grayscale)`` of model.json's ``training_images`` ``profile``; None where it does not count them
    (written before the counts)."""
    if not isinstance(profile, Mapping):
        return None
    images, grayscale = profile.get("images"), profile.get("grayscale")
    if not isinstance(images, int) or not isinstance(grayscale, int) or images <= 0:
        return None
    return images, grayscale


def unseen_colour(profile: Any) -> str | None:
    """``"grayscale"`` when no image of model.json's ``training_images`` ``profile`` was grayscale, ``"colour"``
    when every one was; None when both kinds were seen, or the profile does not count them (written before
    the counts).

    One image of a kind is enough to make that kind familiar, as one file of a format is: a share below which a
    kind still counts as unseen would be a number no user could check against the model card, which gives the count.
    """
    if (counts := grayscale_counts(profile)) is None:
        return None
    images, grayscale = counts
    return "grayscale" if grayscale == 0 else "colour" if grayscale == images else None


def unfamiliar_reason(profile: Any, width: int, height: int, image_format: str | None,
                      grayscale: bool | None = None) -> str | None:
    """Why an image is unlike model.json's ``training_images`` ``profile`` (a side off by over
    ``SIZE_TOLERANCE``, an unseen format, or grayscale or colour where no training image was: ``unseen_colour``),
    or None (also without a profile). ``grayscale``: the image's ``images.looks_gray``; None: not known."""
    if not isinstance(profile, Mapping) or "min_side" not in profile or "max_side" not in profile:
        return None
    min_side, max_side = int(profile["min_side"]), int(profile["max_side"])
    reasons = []
    if min(width, height) * SIZE_TOLERANCE < min_side or max(width, height) > max_side * SIZE_TOLERANCE:
        reasons.append(f"{width}x{height} px, but the training images were {sides(min_side, max_side)}")
    formats = sorted({format_name(name) for name in profile.get("formats") or []})  # model.json may say MPO
    image_format = format_name(image_format)
    if image_format and formats and image_format not in formats:
        reasons.append(f"{image_format}, but the training images were {', '.join(formats)}")
    kind = None if grayscale is None else "grayscale" if grayscale else "colour"
    if kind is not None and kind == unseen_colour(profile):
        seen = "colour" if grayscale else "grayscale"
        reasons.append(f"a {kind} image; the model was trained on {seen} images only")
    return "; ".join(reasons) or None
