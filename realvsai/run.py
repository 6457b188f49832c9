"""What a trained run is: its model.json (``ModelInfo``, validated once, when read), its folder
(``ModelRun``), the one loader (``load_run``) and the one predict path (``Predictor``) that the app,
``--predict`` and the evaluation all call.

    model, run = load_run(Path("models/run1"))
    probabilities = Predictor(model, run.info, batch_size=16).predict_arrays(prepared_images)

Keras is imported when a model is loaded or predicts, so listing the runs stays fast.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from realvsai.cli import permission_denied, plural, raise_if_ctrl_c
from realvsai.config import (
    BACKUP_DIR,
    CONFIDENCE_THRESHOLD,
    CROP_GRID,
    HISTORY_FILE,
    INPUT_MODES,
    METRICS_FILE,
    MODEL_FILE,
    MODEL_JSON_FILE,
    MONITOR,
    is_stopped_run,
    resume_command,
    run_mark,
    shell_path,
)
from realvsai.errors import UserError
from realvsai.files import claimed_by
from realvsai.image_stats import unfamiliar_reason
from realvsai.layout import TEST
from realvsai.metrics import DecisionRule, uncertain_text

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

# Metrics worth a headline on the app's model card (all written by evaluation), in the order shown, with their labels.
HEADLINE_METRICS = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "f1": "F1", "roc_auc": "ROC AUC",
                    "precision": "precision", "recall": "recall"}


class ModelInfoError(UserError):
    """A model.json that cannot describe a run; the message names the file and the field."""


def _fail(source: str, field_name: str, problem: str) -> ModelInfoError:
    return ModelInfoError(f"{source}: {field_name} {problem}. Restore the model.json that ModelTraining.py wrote "
                          "beside the model, or train the model again.")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _grayscale_counts_fit(profile: Mapping[str, Any]) -> bool:
    """Whether ``training_images`` has no counts (written before them), or 0 <= grayscale <= images."""
    if "images" not in profile and "grayscale" not in profile:
        return True
    images, grayscale = profile.get("images"), profile.get("grayscale")
    return (all(isinstance(count, int) and not isinstance(count, bool) for count in (images, grayscale))
            and 0 <= grayscale <= images)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _all_values(value: Any, fits: Callable[[Any], bool]) -> bool:
    """Whether ``value`` is an object whose every value ``fits``."""
    return isinstance(value, Mapping) and all(fits(item) for item in value.values())


def _kind_fits(numbers: Any) -> bool:
    """Whether one kind of image of ``validation_by_kind`` holds what the model card and ``doubt`` read of it."""
    missing = (numbers.get("missing_classes") or []) if isinstance(numbers, Mapping) else None
    return (isinstance(numbers, Mapping) and _is_count(numbers.get("num_images"))
            and _is_number(numbers.get("accuracy")) and _is_number(numbers.get("balanced_accuracy"))
            and _is_number(numbers.get("chance", 0.5))  # runs before recorded none: 1 / classes
            and isinstance(numbers.get("near_chance", False), bool)
            and isinstance(missing, list) and all(isinstance(name, str) for name in missing))


def _by_kind_fits(by_kind: Any) -> bool:
    return (isinstance(by_kind, Mapping)
            and all(_is_number(by_kind.get(key, 0.5)) for key in ("chance", "near_chance_margin"))
            and all(_all_values(by_kind[kind], _kind_fits) for kind in ("source", "size")
                    if by_kind.get(kind) is not None))


# What the model card and the evaluation read of model.json beyond the fields serving needs: the test each value
# passes, and what it must be; null (or no key) is a record the run does not have. A wrong type ended --evaluate in
# a traceback after all its predicting, so each is checked as model.json is read.
_RECORDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    **dict.fromkeys(("backbone", "weights", "preprocessing", "created", "shortcut_warning"),
                    (lambda value: isinstance(value, str), "text")),
    "counts": (lambda value: _all_values(value, lambda split: _all_values(split, _is_count)),
               "an object of each split's images per class (whole numbers)"),
    "augmented_copies": (lambda value: isinstance(value, Mapping) and _is_count(value.get("count"))
                         and isinstance(value.get("settings") or {}, Mapping),
                         "an object of the number of copies (count) and their settings (an object or null)"),
    "best_epoch": (lambda value: isinstance(value, Mapping), "an object of the best epoch's figures"),
    "monitor": (lambda value: value in ("val_loss", MONITOR), f"val_loss or {MONITOR}"),
    "validation_by_kind": (_by_kind_fits, "an object of the accuracy by kind of image as the evaluation wrote it"),
}


def _shown(value: Any) -> str:
    """``value`` as a message quotes it: its repr, cut short."""
    shown = repr(value)
    return shown if len(shown) <= 60 else f"{shown[:57]}..."


@dataclass(frozen=True)
class ModelInfo:
    """model.json, checked: the fields serving needs, typed, and every key as read (``content``), those the model
    card and the evaluation read checked for their type (``_RECORDS``)."""

    class_names: tuple[str, ...]
    image_size: int
    input_mode: str = "resize"
    positive_class: str | None = None  # two classes only
    decision_threshold: float | None = None  # on P(positive); two classes only
    confidence_threshold: float = CONFIDENCE_THRESHOLD
    demo: bool = False  # trained on the synthetic demo data
    training_images: Mapping[str, Any] | None = None  # smallest and largest side, formats, grayscale count
    content: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, content: Mapping[str, Any], source: str | Path = MODEL_JSON_FILE) -> ModelInfo:
        """The checked model.json ``content``; ModelInfoError names ``source`` and the first bad field."""
        source = str(source)
        if not isinstance(content, Mapping):
            raise ModelInfoError(f"{source} does not hold a JSON object. Train the model again or restore the file.")
        class_names = content.get("class_names")
        if (not isinstance(class_names, list) or len(class_names) < 2
                or not all(isinstance(name, str) and name for name in class_names)
                or len(set(class_names)) != len(class_names)):
            raise _fail(source, "class_names", "must be a list of at least two different class names")
        image_size = content.get("image_size")
        if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size <= 0:
            raise _fail(source, "image_size", f"must be a positive whole number of pixels, not {image_size!r}")
        input_mode = content.get("input_mode") or "resize"
        if input_mode not in INPUT_MODES:
            raise _fail(source, "input_mode", f"must be one of {', '.join(INPUT_MODES)}, not {input_mode!r}")
        binary = len(class_names) == 2
        positive_class = content.get("positive_class") or None
        if binary and positive_class is not None and positive_class not in class_names:
            raise _fail(source, "positive_class", f"{positive_class!r} is not one of the class_names {class_names}")
        threshold = content.get("decision_threshold")
        if threshold is not None and (not _is_number(threshold) or not 0.0 <= threshold <= 1.0):
            raise _fail(source, "decision_threshold", f"must be a probability between 0 and 1 or null, not "
                        f"{threshold!r}")
        confidence = content.get("confidence_threshold", CONFIDENCE_THRESHOLD)
        if confidence is None:
            confidence = CONFIDENCE_THRESHOLD
        if not _is_number(confidence) or not 0.0 <= confidence <= 1.0:
            raise _fail(source, "confidence_threshold", f"must be a probability between 0 and 1, not {confidence!r}")
        profile = content.get("training_images")
        if profile is not None and not (isinstance(profile, Mapping) and _is_number(profile.get("min_side"))
                                        and _is_number(profile.get("max_side"))
                                        and isinstance(profile.get("formats", []), list)
                                        and _grayscale_counts_fit(profile)):
            raise _fail(source, "training_images", "must be an object with min_side, max_side and formats (and, "
                        "where recorded, whole numbers of images and of grayscale ones among them)")
        config = content.get("config")
        if config is not None and not isinstance(config, Mapping):
            raise _fail(source, "config", "must be an object")
        for name, mark in (("demo", content.get("demo")), ("config.demo", (config or {}).get("demo"))):
            if mark is not None and not isinstance(mark, bool):  # is_demo would take "no" for a demo
                raise _fail(source, name, f"must be true or false, not {_shown(mark)}")
        for name, (fits, expected) in _RECORDS.items():
            value = content.get(name)
            if value is not None and not fits(value):
                raise _fail(source, name, f"must be {expected} or null, not {_shown(value)}")
        return cls(tuple(class_names), image_size, input_mode, positive_class if binary else None,
                   float(threshold) if binary and threshold is not None else None, float(confidence), is_demo(content),
                   profile, dict(content))

    @property
    def crop_size(self) -> int | None:
        """The side of the crops the model sees in crops mode (the pixel limit holds for the image they enlarge,
        ``images.pixel_problem``); None in resize mode."""
        return self.image_size if self.input_mode == "crops" else None

    @property
    def decode_size(self) -> int | None:
        """The side a large JPEG is decoded reduced for (``images.jpeg_scale``), which the pixel limit counts
        (``images.limit_scale``): the model's in resize mode; None in crops mode, which takes the native pixels."""
        return None if self.crop_size else self.image_size

    @classmethod
    def of(cls, info: ModelInfo | Mapping[str, Any]) -> ModelInfo:
        """``info`` itself, or a model.json's content checked (for callers that hold the dict training wrote)."""
        return info if isinstance(info, ModelInfo) else cls.from_dict(info)

    def rule(self, confidence_threshold: float | None = None) -> DecisionRule:
        """The decision rule this model.json records; ``confidence_threshold`` (the app's slider) wins."""
        return DecisionRule.from_model_info(self.content | {"class_names": list(self.class_names),
                                                            "positive_class": self.positive_class,
                                                            "decision_threshold": self.decision_threshold,
                                                            "confidence_threshold": self.confidence_threshold},
                                            confidence_threshold)

    def get(self, key: str, default: Any = None) -> Any:
        """Any other key of model.json as read (``counts``, ``config``, ``backbone``, ...)."""
        return self.content.get(key, default)

    def __getitem__(self, key: str) -> Any:
        """model.json's ``key`` as read, for the callers that hold it as the dict training wrote."""
        return self.content[key]

    def __contains__(self, key: object) -> bool:
        return key in self.content


# Kinds of image by size: the short side in pixels, from the file's header (lower bound of each band).
SIZE_BANDS = (0, 64, 256, 1024)
# A kind of image whose validation balanced accuracy is not shown (by its one-sided 95 % lower bound) more than
# this far above chance (1 / classes) is one the model cannot tell apart: the app and --predict answer Uncertain.
NEAR_CHANCE = 0.05
# A decision threshold chosen on fewer validation images of either class than this is said to be (the card).
MIN_IMAGES_PER_KIND = 10
# What validation_by_kind's "source" is keyed by: the dataset (SOURCE folder) each image was split from, as
# manifest.csv's dataset column names it. Runs without this key keyed it by each file's own path.
SOURCE_UNIT = "dataset"


# What the app says at the top and beside every answer of a demo model, and its model card says too.
DEMO_WARNING = "Demo model trained on synthetic data: it detects nothing real."


def is_demo(info: Mapping[str, Any]) -> bool:
    """Whether model.json says the model was trained on the synthetic demo data (``--demo``)."""
    config = info.get("config") or {}
    return bool(info.get("demo") or (isinstance(config, Mapping) and config.get("demo")))


def size_band(width: int, height: int) -> str:
    """The name of the ``SIZE_BANDS`` band of an image's short side: ``"64-255 px"``, ``"1024+ px"``."""
    side = min(width, height)
    lower = max(bound for bound in SIZE_BANDS if bound <= side)
    index = SIZE_BANDS.index(lower)
    return f"{lower}+ px" if index == len(SIZE_BANDS) - 1 else f"{lower}-{SIZE_BANDS[index + 1] - 1} px"


def size_bands() -> list[str]:
    """The names of the ``SIZE_BANDS`` bands, smallest first (``size_band``'s)."""
    return [size_band(lower, lower) for lower in SIZE_BANDS]


def validation_by_kind(by_kind: Any) -> dict[str, Any] | None:
    """model.json's ``validation_by_kind`` as this version reads it (None when it is no object): without the
    ``source`` rows of a run that keyed them by file (no ``source_unit``), one image each, so they never held a
    verdict, only the training machine's paths, thousands of them on a full dataset."""
    if not isinstance(by_kind, Mapping):
        return None
    if by_kind.get("source_unit") == SOURCE_UNIT:
        return dict(by_kind)
    return {key: value for key, value in by_kind.items() if key != "source"}


def at_chance(by_kind: Mapping[str, Any] | None, width: int, height: int) -> str | None:
    """Why validation says the model is at or near chance on images of this size (model.json's
    ``validation_by_kind``), or None."""
    if not isinstance(by_kind, Mapping) or not isinstance(by_kind.get("size"), Mapping):
        return None
    band = size_band(width, height)
    numbers = by_kind["size"].get(band)
    if not isinstance(numbers, Mapping) or not numbers.get("near_chance"):
        return None
    missing = ", ".join(numbers.get("missing_classes") or [])  # of three classes or more: which it had none of
    verdict = chance_verdict(by_kind, numbers)
    luck = ": too few to tell it from luck" if verdict == NOT_SHOWN else ""  # at 1.00 on 8 images too
    return (f"on validation images of {band} a side the model is {verdict} (balanced accuracy "
            f"{numbers['balanced_accuracy']:.2f} on {plural(numbers['num_images'], 'image')}, chance "
            f"{kind_chance(by_kind, numbers):.2f}{luck}{f'; no {missing} image among them' if missing else ''})")


def kind_chance(by_kind: Mapping[str, Any], numbers: Mapping[str, Any]) -> float:
    """The chance level of one kind of ``validation_by_kind``: 1 / the classes it has (runs before recorded
    only 1 / classes, for all kinds)."""
    return numbers.get("chance", by_kind.get("chance", 0.5))


NOT_SHOWN = "not shown above chance"  # ``chance_verdict``'s of a kind above chance on too few images to tell


def chance_verdict(by_kind: Mapping[str, Any], numbers: Mapping[str, Any]) -> str:
    """"at chance"; "below chance" for a kind of image the model gets wrong more often than chance would (a
    band of one class that it answers with another); "not shown above chance" for one whose balanced accuracy is
    above chance by more than the margin, on too few images to tell it from luck: ``numbers`` are one kind's of
    ``validation_by_kind``."""
    chance, margin = kind_chance(by_kind, numbers), by_kind.get("near_chance_margin", NEAR_CHANCE)
    if numbers["balanced_accuracy"] < chance - margin:
        return "below chance"
    return "at chance" if numbers["balanced_accuracy"] <= chance + margin else NOT_SHOWN


def of_one_class(numbers: Mapping[str, Any], num_classes: int) -> bool:
    """Whether one kind of ``validation_by_kind`` says nothing of telling the ``num_classes`` classes apart: its
    images are all of one class (of a run before kinds had a ``chance`` of their own: it lacked a class)."""
    missing = numbers.get("missing_classes") or []  # runs before: not recorded
    return bool(missing) and (len(missing) >= num_classes - 1 or "chance" not in numbers)


def untested(by_kind: Mapping[str, Any] | None, width: int, height: int, num_classes: int) -> str | None:
    """Why validation says nothing of the model on images of this size: no validation image was of its size band
    (a gap between the training sizes, as CIFAKE's 32 px merged with photos of 800 px leaves), or all were of one of
    its ``num_classes`` classes (CIFAKE merged with photos that are all REAL: a model calling every photo REAL scores
    1.0 there), or None. A band of some of the classes (3 or more) is judged by how well it tells those apart
    (``at_chance``); runs that did not record that judgement (no ``chance`` of the band's own) are untested there."""
    if not isinstance(by_kind, Mapping) or not isinstance(by_kind.get("size"), Mapping) or not by_kind["size"]:
        return None
    band = size_band(width, height)
    numbers = by_kind["size"].get(band)
    if numbers is None:
        return f"no validation image was of {band} a side: its answers on such images are untested"
    if isinstance(numbers, Mapping) and of_one_class(numbers, num_classes):
        missing = numbers["missing_classes"]
        return (f"no validation image of {', '.join(missing)} was of {band} a side: its answers on such images are "
                "untested")
    return None


def doubt(info: ModelInfo, width: int, height: int, image_format: str | None,
          grayscale: bool | None = None, frames: int = 1) -> str | None:
    """Why the model's answer on this image is never certain: unlike the training images in size, format or
    colour (``image_stats.unfamiliar_reason``; MPO counts as JPEG; ``grayscale`` is ``images.looks_gray``'s, None: not
    known), of a kind validation shows it at chance on (``at_chance``), of a size no validation image had
    (``untested``), or an animation of ``frames`` of which only the first is classified; None when none is. The app,
    --predict and the evaluation call it."""
    by_kind = info.get("validation_by_kind")
    reasons = [unfamiliar_reason(info.training_images, width, height, image_format, grayscale),
               # untested first: a band of one class says nothing of telling the classes apart, near chance or not
               untested(by_kind, width, height, len(info.class_names)) or at_chance(by_kind, width, height),
               f"an animation of {frames} frames: only its first is classified" if frames > 1 else None]
    return "; ".join(reason for reason in reasons if reason) or None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # UTF-8, with or without the byte order mark Windows editors write
        value = json.loads(text) if text.strip() else None
    except PermissionError:  # whole, but not this user's to read: training again would not help
        raise UserError(permission_denied(path)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path} cannot be read ({error}). Train the model again or restore the file.") from error
    if not text.strip():
        raise UserError(f"{path} is empty. Train the model again or restore the file.")
    if not isinstance(value, dict):
        raise UserError(f"{path} does not hold a JSON object. Train the model again or restore the file.")
    return value


def read_info(path: Path) -> ModelInfo:
    """The checked model.json at ``path`` (UserError naming the file, and the field when one is bad)."""
    return ModelInfo.from_dict(_read_json(Path(path)), Path(path))


@dataclass(frozen=True)
class ModelRun:
    """One trained model on disk: ``model.h5`` with its ``model.json`` (and ``metrics.json``)."""

    path: Path  # the run folder
    model_file: Path
    info: ModelInfo
    metrics: dict[str, Any]  # metrics.json; empty when the run has none
    created: datetime  # timezone-aware

    @property
    def name(self) -> str:
        """The run folder's name, also where its path ends in ``.`` or ``..`` (``--model .`` or ``--model model.h5``
        inside it), whose last part names nothing; a link to a run is named as the link, not its target."""
        return Path(os.path.abspath(self.path)).name

    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names)

    @property
    def image_size(self) -> int:
        return self.info.image_size

    @property
    def demo(self) -> bool:
        return self.info.demo

    @property
    def confidence_threshold(self) -> float:
        return self.info.confidence_threshold

    @property
    def unfinished(self) -> str | None:
        """Why this run's answers are not its final ones (its BACKUP_DIR is there: model.h5 is the best epoch so
        far, and model.json has no decision rule yet), with the command that finishes it; None once finished."""
        if not is_stopped_run(self.path):  # what --resume continues, as it decides
            return None
        if holder := claimed_by(self.path):
            return (f"{self.path} has not finished training: it is training now in {holder}; its best model so far "
                    "answers, with no final test numbers yet.")
        return (f"{self.path} has not finished training (its {BACKUP_DIR}/ folder is there: it was stopped before "
                "it finished): its best model so far answers, with no final test numbers yet. Finish it with "
                f"{resume_command(self.path)}")

    def test_metrics(self) -> dict[str, float]:
        """Headline test metrics, those of the decision rule: model.json's ``test_metrics``, else the numbers
        metrics.json holds; none for a run that has not finished (``unfinished``): a run stopped during its final
        evaluation may have metrics.json at a threshold its model.json does not hold yet."""
        for source in self._test_sources():
            if isinstance(source, dict) and _is_number(source.get("accuracy_at_threshold")):
                # Written before the headline followed the rule: only accuracy and F1 were kept at the threshold.
                source = {"accuracy": source["accuracy_at_threshold"], "f1": source.get("f1_at_threshold"),
                          "roc_auc": source.get("roc_auc")}
            found = {name: float(source[name]) for name in HEADLINE_METRICS
                     if isinstance(source, dict) and _is_number(source.get(name))}
            if found:
                return found
        return {}

    def _test_sources(self) -> tuple[Any, ...]:
        """Where the test numbers are, in order of preference: none before the run has finished, nor where they were
        measured at another decision threshold than model.json's (``unmeasured``)."""
        return () if self.unfinished or self.unmeasured else (self.info.get("test_metrics"), self.metrics)

    @property
    def unmeasured(self) -> str | None:
        """Why the recorded test numbers are not those of model.json's decision rule: its decision_threshold is not
        the one the run's evaluation measured them at (metrics.json's, else the one model.json's test_metrics
        records), so it was edited by hand; None where it is, where neither records one (an older run), or before
        the run has finished (``unfinished`` says why)."""
        if self.unfinished:
            return None
        for record, source in ((METRICS_FILE, self.metrics), (f"{MODEL_JSON_FILE}'s test_metrics",
                                                               self.info.get("test_metrics"))):
            if isinstance(source, Mapping) and "decision_threshold" in source:
                measured, own = source["decision_threshold"], self.info.decision_threshold
                if measured == own:
                    return None
                at = "the most probable class" if measured is None else f"the decision threshold {measured}"
                now = "none (the most probable class)" if own is None else own
                # --evaluate needs --test-dir: the run's own test folder where it is still there
                data = (self.info.get("config") or {}).get("data")
                test_dir = shell_path(Path(data) / TEST) if data and (Path(data) / TEST).is_dir() else "DIR"
                return (f"the test numbers of {self.name} were measured at {at} ({record}), but the decision_threshold "
                        f"of its {MODEL_JSON_FILE} is {now}: edited by hand, so they are not its rule's. Put the "
                        "threshold back, or measure this rule (--evaluate writes its numbers in a folder of the "
                        "run's own (eval-...), not in these records, which go on holding the old rule's) with "
                        f"python ModelTraining.py --evaluate {shell_path(self.path)} --test-dir {test_dir}")
        return None

    def test_uncertain(self, confidence_threshold: float | None = None) -> str | None:
        """How often the decision rule answered Uncertain on the test images (``metrics.uncertain_text``), where the
        headline metrics' source records it: at ``confidence_threshold`` (the app's slider) where the evaluation
        counted it at that step (``uncertain_by_confidence``), else at model.json's, saying so when the two differ."""
        asked = self.confidence_threshold if confidence_threshold is None else confidence_threshold
        for source in self._test_sources():
            if not isinstance(source, dict) or not isinstance(source.get("num_images"), int):
                continue
            by_confidence = source.get("uncertain_by_confidence")
            on_a_step = abs(asked - round(asked, 2)) < 1e-9  # the table's keys: a model.json's 0.655 is on none
            counted = by_confidence.get(f"{asked:.2f}") if isinstance(by_confidence, dict) and on_a_step else None
            if isinstance(counted, list) and len(counted) == 2 and isinstance(counted[0], int):
                return uncertain_text({"num_images": source["num_images"], "uncertain": counted[0],
                                       "accuracy_when_certain": counted[1]})
            if said := uncertain_text(source):
                own = self.confidence_threshold
                shown = f"{own:.2f}" if own == round(own, 2) else f"{own:g}"  # 0.60, and an edited 0.655 in full
                return said if asked == own else f"{said} at the confidence threshold {shown} of model.json"
        return None

    def num_test_images(self) -> int | None:
        """How many test images the headline metrics were measured on (where ``test_metrics`` finds them), or None
        where that is not recorded."""
        for source in self._test_sources():
            count = source.get("num_images") if isinstance(source, dict) else None
            if isinstance(count, int) and not isinstance(count, bool):
                return count
        return None


def _epochs_ended(folder: Path) -> int:
    """How many epochs the history.csv of the run in ``folder`` holds (0 without one)."""
    try:
        with open(folder / HISTORY_FILE, encoding="utf-8") as stream:
            return max(0, sum(1 for line in stream if line.strip()) - 1)  # less its header
    except (OSError, UnicodeDecodeError):
        return 0


def read_run(path: Path) -> ModelRun:
    """Reads a run folder, a ``model.h5`` with its ``model.json`` beside it, or that ``model.json`` (naming its
    folder); UserError if unusable."""
    path = Path(path)
    if path.name == MODEL_JSON_FILE:
        path = path.parent
    folder, model_file = (path.parent, path) if path.suffix.lower() in (".h5", ".keras") else (path, path / MODEL_FILE)
    if path.is_file() and path != model_file:
        raise UserError(f"{path} is a file, but a run folder (or its model.h5 or model.json) was expected. Give a "
                        "run folder under models/, or train one with: python ModelTraining.py --demo")
    if model_file.is_dir():  # not missing: a TensorFlow SavedModel saved under that name, which Keras 3 cannot load
        raise UserError(f"{model_file} is a folder, not a Keras HDF5 file (a TensorFlow SavedModel saved under that "
                        "name?). Put back the model.h5 file that ModelTraining.py saved, or train the run again.")
    if not model_file.is_file():
        if is_stopped_run(folder):  # model.h5 comes with the first epoch's best model
            if holder := claimed_by(folder):
                raise UserError(f"{folder} has no {MODEL_FILE} yet: it is training now in {holder}, and its first "
                                "epoch has not ended.")
            if epochs := _epochs_ended(folder):  # its best epoch's model was there: moved or deleted since
                raise UserError(f"{folder} has no {MODEL_FILE}, though {plural(epochs, 'epoch')} of its training "
                                f"ended: the file was moved or deleted. Put it back and finish the run with "
                                f"{resume_command(folder)}, or train a new run under another --name.")
            raise UserError(f"{folder} has no {MODEL_FILE} yet: its training stopped before its first epoch ended. "
                            f"Finish it with {resume_command(folder)}")
        if (folder / MODEL_JSON_FILE).is_file():
            raise UserError(f"{model_file} is missing beside its {MODEL_JSON_FILE}: copy the run folder whole, or "
                            "train the run again.")
        missing = model_file if folder.is_dir() else folder  # the path the user gave, or the model.h5 it lacks
        raise UserError(f"{missing} does not exist. Give a run folder under models/ or its model.h5, "
                        "or train one with: python ModelTraining.py --demo")
    info_file = folder / MODEL_JSON_FILE
    if not info_file.is_file():
        raise UserError(f"{info_file} is missing: it holds the class names and image size of {model_file.name}. "
                        "Copy it along with the model, or use a folder written by ModelTraining.py.")
    info = read_info(info_file)
    metrics = {}
    if (folder / METRICS_FILE).is_file():
        try:
            metrics = _read_json(folder / METRICS_FILE)
        except UserError as error:  # the metrics only decorate the model card; the model still works
            logger.warning("%s", error)
    _refuse_other_classes(info_file, info, metrics)
    # model.json's creation time (a naive one is local), else the model file's.
    created = datetime.fromtimestamp(model_file.stat().st_mtime, tz=UTC)
    if isinstance(info.get("created"), str):
        try:
            created = datetime.fromisoformat(info.get("created")).astimezone()
        except ValueError:
            logger.warning("%s: created %r is not an ISO time; using the file's time", folder, info.get("created"))
    return ModelRun(folder, model_file, info, metrics, created)


def list_runs(models_dir: Path) -> tuple[list[ModelRun], list[tuple[Path, str]]]:
    """The usable runs under ``models_dir`` (sub-folders holding model.h5 whose training finished), newest first,
    and the run folders skipped, why (one without model.h5 too: killed in its first epoch, or copied without it)."""
    models_dir = Path(models_dir)
    runs, skipped = [], []
    # A folder with no run mark is not a run (notes); one without model.h5 is skipped with why (read_run).
    folders = (sorted(child for child in models_dir.iterdir() if not child.name.startswith(".") and run_mark(child))
               if models_dir.is_dir() else [])
    for folder in folders:
        try:
            run = read_run(folder)
        except UserError as error:
            logger.warning("skipping %s: %s", folder, error)
            skipped.append((folder, str(error)))
            continue
        unfinished = run.unfinished  # model.h5 is the best epoch so far, from the first epoch on
        if unfinished:
            # After the sentence saying it is training now, or after the command that finishes it
            then = " Open" if unfinished.endswith(".") else ", or open"
            why = f"{unfinished}{then} it with --model {shell_path(folder)} to try it as it is"
            logger.warning("skipping %s: %s", folder, why)
            skipped.append((folder, why))
        else:
            runs.append(run)
    runs.sort(key=lambda run: (run.created, run.name), reverse=True)
    return runs, skipped


def _refuse_other_classes(info_file: Path, info: ModelInfo, metrics: Mapping[str, Any]) -> None:
    """A UserError where model.json names its classes, or its positive class, otherwise than the run's own evaluation
    did (``metrics``, metrics.json, where it records them, else model.json's own test_metrics, which record them too):
    edited by hand, every answer would be another class's."""
    recorded = {"class_names": list(info.class_names), "positive_class": info.positive_class}
    test_metrics = info.get("test_metrics")
    for record, source in ((METRICS_FILE, metrics), (f"{MODEL_JSON_FILE}'s test_metrics", test_metrics)):
        if not isinstance(source, Mapping):
            continue
        for field_name, value in recorded.items():
            evaluated = source.get(field_name)
            if evaluated is not None and value is not None and evaluated != value:
                raise _fail(str(info_file), field_name, f"is {value!r}, but the run's evaluation ({record}) names "
                            f"{evaluated!r}: the model's outputs are those, and any other would turn its answers into "
                            "other classes'")


def load_model(model_file: Path) -> keras.Model:
    """The Keras model in ``model_file`` (UserError if it is not a Keras HDF5 model)."""
    import keras

    import realvsai.model  # noqa: F401  (registers the project's layers, which model.h5 names)

    try:
        return keras.models.load_model(model_file, compile=False)
    except PermissionError:  # h5py's OSError of errno EACCES: a whole file, not this user's to read
        raise UserError(permission_denied(model_file)) from None
    except (OSError, ValueError, TypeError) as error:
        # h5py's OSError: truncated, or not HDF5 at all; Keras' ValueError: HDF5 that holds no model, or a model
        # of layers this project does not define (of a .keras archive: TypeError, the model's config after it).
        kind = _stored_kind(model_file)
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        reason = reason if len(reason) <= 200 else f"{reason[:197]}..."
        if kind == "archive":
            raise UserError(f"{model_file} is a .keras archive (a zip file), not a Keras HDF5 file. Load it in Keras "
                            "and save it as .h5 (rename it model.keras, then keras.models.load_model('model.keras')"
                            ".save('model.h5')), or train the run again.") from None
        if kind == "weights":
            raise UserError(f"{model_file} holds a model's weights without its architecture (a file of save_weights),"
                            " from which Keras cannot rebuild the model. Copy the model.h5 that ModelTraining.py saved "
                            "(the whole model), or train the run again.") from None
        if kind == "model" and not isinstance(error, OSError):
            raise UserError(f"{model_file} holds a Keras model that this project cannot rebuild ({reason}): one "
                            "saved by another program, or by a newer version of this project. Give a run folder that "
                            "ModelTraining.py wrote.") from None
        raise UserError(f"{model_file} is not a Keras HDF5 model: it is corrupt, truncated or another kind of file "
                        f"({reason}). Copy the model.h5 that ModelTraining.py saved again, or train it again."
                        ) from None


def _stored_kind(model_file: Path) -> str | None:
    """What ``model_file`` holds, of what Keras may fail to load as a model: ``"archive"`` (a .keras zip under
    another name), ``"model"`` (a .keras zip, or HDF5 with a Keras model's architecture, the ``model_config`` Keras
    saves), ``"weights"`` (HDF5 of ``save_weights``: Keras 3's ``layers`` group, Keras 2's ``layer_names``), or
    None."""
    import h5py

    try:
        with open(model_file, "rb") as stream:
            if stream.read(4) == b"PK\x03\x04":  # a zip: Keras reads it as a model only named .keras
                return "model" if Path(model_file).suffix.lower() == ".keras" else "archive"
        with h5py.File(model_file, "r") as stored:
            if "model_config" in stored.attrs:
                return "model"
            return "weights" if "layer_names" in stored.attrs or "layers" in stored else None
    except OSError:
        return None


def load_run(path: Path | ModelRun) -> tuple[keras.Model, ModelRun]:
    """The one loader: a run folder (or its model.h5 or model.json) as its model and its checked ``ModelRun``; a
    ``ModelRun`` already read (``read_run``: a caller that checks its input against the run before the model loads).

    Raises:
        UserError: for a missing or malformed model.json (naming the field), an unreadable model file, or a
            model that does not match its model.json (``check_model``).
    """
    run = path if isinstance(path, ModelRun) else read_run(path)
    logger.info("loading the model %s", run.model_file)  # 10-15 s for ResNet101 on a CPU, without a bar
    model = load_run_model(run)
    # TensorFlow's import (the first load's) calls Python from C++ code that clears what it raises: a Ctrl-C (or
    # SIGTERM) that lands there is lost, and the evaluation or prediction would run to its end (``cli.watch_ctrl_c``).
    raise_if_ctrl_c()
    if run.unfinished:
        logger.warning("%s", run.unfinished)
    return model, run


def load_run_model(run: ModelRun) -> keras.Model:
    """The model of a run already read (``read_run``), checked against that model.json (``check_model``): what
    ``load_run`` loads, for a caller that keeps the model.json it read (the app, while a training rewrites it).

    Raises:
        UserError: for an unreadable model file, or one that does not match the run's model.json.
    """
    model = load_model(run.model_file)
    check_model(model, run.info, run.model_file)
    return model


def check_model(model: keras.Model, info: ModelInfo, model_file: Path | str = MODEL_FILE) -> None:
    """UserError when ``model`` (from ``model_file``) and its ``info`` (model.json) do not belong together: the
    model has no ``resize`` layer (the contract of ``model.build_model``: raw RGB of any size in), takes another
    size than ``info.image_size``, or has another number of outputs than its class names."""
    try:
        resize = model.get_layer("resize")
    except ValueError:
        raise UserError(f"{model_file} has no layer named 'resize', so it is not a model ModelTraining.py trained "
                        "(those take raw RGB images of any size and resize them inside). Give a run folder that "
                        "ModelTraining.py wrote.") from None
    height, width = resize.output.shape[1:3]
    if (height, width) != (info.image_size, info.image_size):
        raise UserError(f"{model_file} takes {height} x {width} px images (its resize layer), but model.json says "
                        f"image_size {info.image_size}. The files do not belong together: put back the model.json "
                        "written with that model.h5.")
    class_names = list(info.class_names)
    outputs = int(model.outputs[0].shape[-1])
    if outputs != len(class_names):
        raise UserError(f"{model_file} outputs {plural(outputs, 'class', 'classes')}, but model.json names "
                        f"{len(class_names)} ({class_names}). The files do not belong together: put back the "
                        "model.json written with that model.h5, or train the model again.")


class Predictor:
    """The model's one compiled predict function at fixed batch shapes (``model.predict`` over a dataset,
    ``predict_on_batch`` over arrays): every batch is padded to ``batch_size`` rows (fewer rows than that: to a
    power of two, see ``pad``), because JAX compiles the model once per input shape (and TensorFlow traces it
    once per shape).

    Each row travels with its index, so rows come back in order and padding (index -1) is dropped;
    a row that never arrives (a file the input pipeline could not decode) stays NaN. Make one per model and use
    it for every prediction: a new one compiles (JAX) or traces (TensorFlow) the model again on its first batch.
    """

    def __init__(self, model: keras.Model, info: ModelInfo, batch_size: int) -> None:
        self.model, self.info, self.batch_size = model, info, int(batch_size)

    @functools.cached_property
    def _indexed(self) -> keras.Model:
        """The model (crops mode: averaging its crops) with each row's index passed through beside it."""
        import keras

        size = self.info.image_size
        if self.info.input_mode == "crops":
            from realvsai.model import crop_averaging

            predictor = crop_averaging(self.model, size)
            pixels = keras.Input((CROP_GRID**2, size, size, 3), name="pixels")
        else:
            predictor = self.model
            pixels = keras.Input((None, None, 3), name="pixels")
        index = keras.Input((), dtype="int32", name="index")
        return keras.Model([pixels, index], [predictor(pixels), keras.layers.Identity()(index)])

    def rows_for(self, count: int) -> int:
        """The rows a batch of ``count`` images is padded to: ``batch_size``, or below it the next power of two, so
        one upload costs one row, not a full batch (nor 6 photos a --batch-size of 65,536), and the model still
        sees at most log2(batch_size) + 2 shapes (JAX compiles each once)."""
        return min(self.batch_size, 1 << max(0, count - 1).bit_length())

    def pad(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``pixels`` (N, ...) padded with zero rows, and their indices (-1: padding): to a multiple of
        ``batch_size``, or below it to ``rows_for``."""
        count = len(pixels)
        padded = -(-count // self.batch_size) * self.batch_size if count > self.batch_size else self.rows_for(count)
        rows = np.zeros((padded, *pixels.shape[1:]), np.float32)
        rows[:count] = pixels
        return rows, np.concatenate([np.arange(count), np.full(padded - count, -1)]).astype(np.int32)

    def predict_arrays(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities (N, classes) of prepared float32 images (N, size, size, 3), or crops (N, 9, size, size, 3).

        Batch by batch through ``predict_on_batch``, the compiled function ``model.predict`` calls, without its
        per-call set-up (a data adapter and an iterator), which on TensorFlow costs more than a photo's batch on a
        CPU: the app's answer to one upload in 71 ms, not 124 (``benchmarks/bench_app.py``); on JAX the two take
        the same time."""
        pixels = np.asarray(pixels, np.float32)
        if not len(pixels):
            return np.zeros((0, len(self.info.class_names)), np.float32)
        rows, indices = self.pad(pixels)
        outputs = [self._indexed.predict_on_batch([rows[start:start + self.batch_size],
                                                   indices[start:start + self.batch_size]])[0]
                   for start in range(0, len(rows), self.batch_size)]
        return np.concatenate(outputs).astype(np.float32)[:len(pixels)]

    def predict_indexed(self, inputs: Any, num_rows: int,
                        callbacks: Sequence[keras.callbacks.Callback] = ()) -> np.ndarray:
        """Probabilities (``num_rows``, classes) from ``inputs``, a dataset of ``((pixels, indices),)`` batches of
        ``rows_for(num_rows)`` rows; a row whose file the pipeline could not decode stays NaN. ``callbacks`` join
        Keras' predict (``callbacks.PredictionProgress``)."""
        import warnings

        from realvsai.callbacks import StopOnLostCtrlC

        with warnings.catch_warnings():
            # A pipeline that skips unreadable files has no known length; Keras warns when it ends.
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            # Keras' predict fails on a dataset that yields no batch (every file failed to decode), and on
            # JAX leaves the model's variables unset: looked for first, at the cost of one batch's decoding.
            if next(iter(inputs), None) is None:
                return np.full((num_rows, len(self.info.class_names)), np.nan, dtype=np.float32)
            rows, kept = self._indexed.predict(inputs, verbose=0, callbacks=[StopOnLostCtrlC(), *callbacks])
        kept = np.asarray(kept, dtype=np.int64).reshape(-1)
        probabilities = np.full((num_rows, rows.shape[-1]), np.nan, dtype=np.float32)
        real = kept >= 0
        probabilities[kept[real]] = np.asarray(rows, dtype=np.float32)[real]
        return probabilities
