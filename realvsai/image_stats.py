"""Image sizes and formats per class: shortcuts (size or format alone giving the label away, as in
CIFAKE) and unfamiliar inputs (far outside model.json's ``training_images``, never called certain).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SHORTCUT_ACCURACY = 0.9  # balanced accuracy from one property at which the property is a shortcut
# A side more than this many times smaller or larger than the training images' sides is unfamiliar:
# the model's resize then erases or invents the detail it was trained on.
SIZE_TOLERANCE = 2.0


@dataclass(frozen=True)
class ImageFacts:
    """One image's class and what its header says."""

    class_name: str
    width: int
    height: int
    image_format: str  # Pillow's name: "JPEG", "PNG", ...


@dataclass(frozen=True)
class Shortcut:
    """How well one property ("size" or "format") alone predicts the class."""

    feature: str
    balanced_accuracy: float


def training_profile(facts: Sequence[ImageFacts]) -> dict[str, object]:
    """The smallest and largest side and the formats: model.json's ``training_images``."""
    return {"min_side": min(min(fact.width, fact.height) for fact in facts),
            "max_side": max(max(fact.width, fact.height) for fact in facts),
            "formats": sorted({fact.image_format for fact in facts})}


def class_profiles(facts: Sequence[ImageFacts]) -> dict[str, dict[str, object]]:
    """Per class: image count, smallest and largest side, and how many files of each format."""
    names = sorted({fact.class_name for fact in facts})
    by_class = {name: [fact for fact in facts if fact.class_name == name] for name in names}
    return {name: {"images": len(members), **training_profile(members),
                   "formats": dict(sorted(Counter(fact.image_format for fact in members).items()))}
            for name, members in by_class.items()}


def describe_profiles(profiles: Mapping[str, Mapping[str, object]]) -> dict[str, str]:
    """Each class's profile in words: "32-32 px a side; JPEG 4,000"."""
    return {name: f"{profile['min_side']}-{profile['max_side']} px a side; "
                  + ", ".join(f"{fmt} {count:,}" for fmt, count in profile["formats"].items())
            for name, profile in profiles.items()}


def check_shortcuts(facts: Sequence[ImageFacts], seed: int = 0) -> list[Shortcut]:
    """Cross-validated balanced accuracy of a depth-3 tree on size alone and on format alone ([] with too few)."""
    counts = Counter(fact.class_name for fact in facts)
    if len(counts) < 2 or min(counts.values()) < 2:
        return []
    import numpy as np  # scikit-learn and NumPy only when a split asks: --help stays instant
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.tree import DecisionTreeClassifier

    labels = np.array([fact.class_name for fact in facts])
    formats = sorted({fact.image_format for fact in facts})
    features = {
        "size": np.array([[fact.width, fact.height, fact.width * fact.height, fact.width / max(fact.height, 1)]
                          for fact in facts], dtype=np.float64),
        "format": np.array([[fact.image_format == name for name in formats] for fact in facts], dtype=np.float64),
    }
    folds = StratifiedKFold(n_splits=min(5, min(counts.values())), shuffle=True, random_state=seed)
    return [Shortcut(feature, float(balanced_accuracy_score(labels, cross_val_predict(
                DecisionTreeClassifier(max_depth=3, random_state=seed), values, labels, cv=folds))))
            for feature, values in features.items()]


def shortcut_warning(shortcuts: Sequence[Shortcut], profiles: Mapping[str, Mapping[str, object]]) -> str | None:
    """One warning naming every property that alone predicts the class, or None when none does."""
    found = [shortcut for shortcut in shortcuts if shortcut.balanced_accuracy >= SHORTCUT_ACCURACY]
    if not found:
        return None
    named = " and ".join(f"image {shortcut.feature} alone predicts the class with "
                         f"{shortcut.balanced_accuracy:.0%} balanced accuracy" for shortcut in found)
    classes = "; ".join(f"{name}: {text}" for name, text in describe_profiles(profiles).items())
    return (f"shortcut: {named} ({classes}). A model can learn that instead of the content; make the "
            "classes alike in size and format (re-encode or resize one side) before trusting its accuracy.")


def profile_classes(facts: Sequence[ImageFacts]) -> tuple[dict[str, dict[str, object]], str | None]:
    """``class_profiles`` and the shortcut warning (or None), as the split scripts report them."""
    profiles = class_profiles(facts)
    return profiles, shortcut_warning(check_shortcuts(facts), profiles)


def unfamiliar_reason(profile: Any, width: int, height: int, image_format: str | None) -> str | None:
    """Why an image is unlike model.json's ``training_images`` ``profile`` (a side off by over
    ``SIZE_TOLERANCE`` or an unseen format), or None (also without a profile)."""
    if not isinstance(profile, Mapping) or "min_side" not in profile or "max_side" not in profile:
        return None
    min_side, max_side = int(profile["min_side"]), int(profile["max_side"])
    reasons = []
    if min(width, height) * SIZE_TOLERANCE < min_side or max(width, height) > max_side * SIZE_TOLERANCE:
        reasons.append(f"{width}x{height} px, but the training images were {min_side}-{max_side} px a side")
    formats = list(profile.get("formats") or [])
    if image_format and formats and image_format not in formats:
        reasons.append(f"{image_format}, but the training images were {', '.join(formats)}")
    return "; ".join(reasons) or None
