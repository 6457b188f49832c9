"""Evaluation of a trained classifier on class folders: metrics.json, predictions.csv, unreadable.csv (the files
left out), the report, the plots and MODEL_CARD.md (evaluate_run, which also adds "test_metrics" to model.json) or
EVALUATION.md.

    metrics = evaluate_run(model, model_info, Path("data"), Path("models/run1"))
    metrics = evaluate_folders(model, model_info, [Path("data/test"), Path("photos/test")], Path("out"))
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageFilter
from sklearn.metrics import classification_report

from realvsai import config, plots, prediction
from realvsai import metrics as scoring  # "metrics" names the dict of numbers here
from realvsai.cli import columns, pad, plural, progress, refuse_given_twice
from realvsai.errors import UserError
from realvsai.files import (
    as_typed,
    atomic_write_text,
    claimed_by,
    list_images,
    numbered,
    read_json,
    same_bytes_across,
    working_on,
    write_json,
)
from realvsai.images import ImageDecodeError, load_rgb, pixel_problem
from realvsai.layout import (
    MANIFEST_NAME,
    SPLIT_WORDS,
    SPLITS,
    TEST,
    TRAIN,
    VALIDATION,
    class_folder_of,
    find_class_folders,
    name_key,
    read_manifest,
)
from realvsai.model_card import PLOT_FILES, few_threshold_images, render_card
from realvsai.run import NEAR_CHANCE, SOURCE_UNIT, ModelInfo, Predictor, doubt, size_band

if TYPE_CHECKING:  # TensorFlow is imported only when predicting, so the metrics load fast
    import keras

    from realvsai.data import LabelledImages

logger = logging.getLogger(__name__)

# Any of these in a folder means it already holds results, which an evaluation never replaces.
RESULT_FILES = (config.METRICS_FILE, config.REPORT_FILE, config.MODEL_CARD_FILE, config.EVALUATION_CARD_FILE,
                config.MODEL_JSON_FILE, config.ROBUSTNESS_PLOT_FILE, config.PREDICTIONS_FILE, config.UNREADABLE_FILE,
                *PLOT_FILES.values())
# The metrics copied into model.json's "test_metrics" (the app and the README read them there).
SUMMARY_KEYS = ("loss", "accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc", "average_precision",
                "expected_calibration_error", "num_images", "decided_by", "argmax_accuracy", "argmax_f1", "uncertain",
                "accuracy_when_certain", "uncertain_by_confidence", "missing_classes", "majority_class",
                "majority_baseline", "single_answer")
# The rule the test numbers were measured by, recorded beside them in model.json's test_metrics (as metrics.json
# records it): a model.json edited by hand is then told from the training's own also without metrics.json beside it.
RULE_KEYS = ("class_names", "positive_class", "decision_threshold")
# --robustness: each perturbation of the full-resolution decoded pixels with its strengths, mildest first (JPEG
# quality, Gaussian sigma in pixels, scale): the traces a detector leans on rarely survive a re-save.
PERTURBATIONS: dict[str, tuple[float, ...]] = {"jpeg": (90, 70, 50, 30), "blur": (1, 2), "downscale": (0.5, 0.25)}


def perturb(pixels: np.ndarray, kind: str, strength: float) -> np.ndarray:
    """``pixels`` (H x W x 3 uint8) after one perturbation: Pillow's JPEG, Gaussian blur or box downscale."""
    image = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    if kind == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(strength))
        # Its pixels passed the run's limit once decoded: Pillow's own (warning from 89.5 MP) must not apply.
        return load_rgb(buffer.getvalue(), max_pixels=image.width * image.height)
    if kind == "blur":
        return np.asarray(image.filter(ImageFilter.GaussianBlur(radius=strength)))  # radius is sigma
    if kind == "downscale":
        size = (max(1, round(image.width * strength)), max(1, round(image.height * strength)))
        return np.asarray(image.resize(size, Image.Resampling.BOX))
    raise ValueError(f"unknown perturbation {kind!r}; choose one of {', '.join(PERTURBATIONS)}")


def describe(perturbation: tuple[str, float] | None) -> str:
    """A perturbation in words: "jpeg 30", or "unchanged" for None."""
    return "unchanged" if perturbation is None else f"{perturbation[0]} {perturbation[1]:g}"


# The most perturbed copies on disk at once (rounded down to whole batches): 256 PNGs of 2-megapixel photos
# take about 0.5 GB; all at once, a pass over a large test folder could fill the disk.
COPIES_AT_ONCE = 256


def perturbed_copies(images: LabelledImages, perturbation: tuple[str, float] | None,
                     folder: Path, bar: Any = None) -> list[tuple[Path, tuple[int, int]] | None]:
    """Each image as the user's changed copy would be: decoded at full resolution (never the reduced JPEG
    decode the model's path takes, which would make the same perturbation cost more on larger files),
    ``perturb``-ed by ``(kind, strength)`` (None: unchanged), written losslessly (PNG) into ``folder`` as
    (path, (width, height)); None for a file that no longer decodes. ``bar``: a ``cli.progress`` bar of images
    that counts each one done."""
    copies: list[tuple[Path, tuple[int, int]] | None] = []
    for index, path in enumerate(images.files):
        copies.append(_perturbed_copy(path, images.max_pixels, perturbation, folder / f"{index:07d}.png"))
        if bar is not None:
            bar.update()
    return copies


def _perturbed_copy(path: Path, max_pixels: int, perturbation: tuple[str, float] | None,
                    copy: Path) -> tuple[Path, tuple[int, int]] | None:
    """``perturbed_copies``' copy of one image, written to ``copy``."""
    try:
        pixels = load_rgb(path, max_pixels)
    except ImageDecodeError as error:
        logger.warning("skipping %s under %s: %s", path, describe(perturbation), error)
        return None
    changed = Image.fromarray(np.asarray(perturb(pixels, *perturbation) if perturbation else pixels, np.uint8))
    changed.save(copy, compress_level=1)
    return copy, changed.size


def predict_perturbed(predictor: Predictor, images: LabelledImages, perturbation: tuple[str, float] | None,
                      bars: tuple[Any, Any] = (None, None)) -> np.ndarray:
    """Class probabilities (images, classes) of each image's ``perturbation``-ed copy (``perturbed_copies``; None:
    unchanged, the clean numbers' route), in file order, which takes the model's own path (its resize or crops) as
    any PNG does; NaN rows for files that broke after the scan. ``bars``: the ``cli.progress`` bars of images that
    count the copies made and the copies predicted.

    The copies are made and predicted ``COPIES_AT_ONCE`` (whole batches) at a time: a PNG copy is some 6 times a
    JPEG's size, so all of a 10 GB test folder's at once took some 57 GB of temporary space."""
    at_once = max(1, COPIES_AT_ONCE // predictor.batch_size) * predictor.batch_size  # the batches of one pass
    parts = [images.subset(range(start, min(start + at_once, len(images))))
             for start in range(0, len(images), at_once)]
    return np.concatenate([_predict_copies(predictor, part, perturbation, bars) for part in parts or [images]])


def _predict_copies(predictor: Predictor, images: LabelledImages, perturbation: tuple[str, float] | None,
                    bars: tuple[Any, Any]) -> np.ndarray:
    """``predict_perturbed`` of ``images``, their copies all made at once in a temporary folder."""
    copied, predicted = bars
    with tempfile.TemporaryDirectory(prefix="robustness-") as folder:
        copies = perturbed_copies(images, perturbation, Path(folder), copied)
        kept = [index for index, copy in enumerate(copies) if copy is not None]
        changed = dataclasses.replace(
            images, files=[copies[index][0] for index in kept], labels=[images.labels[index] for index in kept],
            sizes=[copies[index][1] for index in kept], needs_pil=[False] * len(kept), formats=["PNG"] * len(kept))
        rows = prediction.predict_images(predictor, changed, bar=predicted)
    probabilities = np.full((len(images), rows.shape[-1]), np.nan, np.float32)
    probabilities[kept] = rows
    return probabilities


def _within_limit_whole(images: LabelledImages) -> tuple[LabelledImages, list[tuple[Path, str]]]:
    """``images`` whose full-resolution decode (``perturbed_copies``) is within the limit they were read under, and
    the others with why (a JPEG the scan counted at its reduced decode)."""
    problems = [pixel_problem(width, height, images.max_pixels) for width, height in images.sizes]
    kept = [index for index, problem in enumerate(problems) if problem is None]
    left_out = [(path, problem) for path, problem in zip(images.files, problems) if problem is not None]
    return (images if not left_out else images.subset(kept)), left_out


def without_failed(images: LabelledImages, probabilities: np.ndarray) -> tuple[LabelledImages, np.ndarray]:
    """``images`` and their probabilities without the files that failed to decode (NaN rows), which join
    ``skipped`` as --predict's unreadable.csv lists them: a file truncated after its header ends no evaluation."""
    failed = np.isnan(probabilities).any(axis=1)
    if not failed.any():
        return images, probabilities
    kept = np.flatnonzero(~failed)
    broken = [(images.files[index], prediction.decode_failure(images.files[index], images.max_pixels))
              for index in np.flatnonzero(failed)]
    for path, reason in broken:
        logger.warning("skipping %s: %s", path, reason)
    return dataclasses.replace(images.subset(kept), skipped=[*images.skipped, *broken]), probabilities[kept]


def left_out_files(folder: Path, class_names: Sequence[str]) -> list[tuple[Path, str]]:
    """The files under ``folder`` that ``data.scan_images`` leaves out without a word, with why, as --predict's
    unreadable.csv lists them: what is not an image (or is hidden) beside or inside the class folders, and the
    images beside them or in a sub-folder of one (only the images right in a class folder have a known class)."""
    left_out: list[tuple[Path | str, str]] = []  # list_images adds the files that are not images
    beside = list_images(folder, skipped=left_out)
    left_out += [(path, "an image beside the class folders: its class is unknown, so it is not evaluated (move it "
                  "into its class folder)") for path in beside]
    folder_of = class_folder_of(class_names, find_class_folders(folder))
    for name in (folder_of[name] for name in class_names if (folder / folder_of[name]).is_dir()):
        nested = [path for path in list_images(folder / name, recursive=True, skipped=left_out)
                  if path.parent != folder / name]
        left_out += [(path, "in a sub-folder of a class folder: only the images right in a class folder are "
                      "evaluated (move it up to evaluate it)") for path in nested]
    return sorted((Path(path), reason) for path, reason in left_out)


def source_metrics(labels: Sequence[int], probabilities: np.ndarray, class_names: Sequence[str],
                   positive_class: str | None = None, threshold: float | None = None) -> dict[str, Any]:
    """Accuracy (by the decision rule), AP, ROC AUC and each class's recall (None without images) of one source;
    ``positive_class`` and ``threshold`` (on P(positive), two classes; None: the most probable class) as
    ``metrics.compute_metrics`` takes them."""
    metrics = scoring.compute_metrics(labels, probabilities, class_names, positive_class, threshold)
    matrix = np.asarray(metrics["confusion_matrix"])
    totals = matrix.sum(axis=1)
    class_accuracy = {name: float(matrix[index, index] / totals[index]) if totals[index] else None
                      for index, name in enumerate(class_names)}
    numbers = {"num_images": metrics["num_images"], "accuracy": metrics["accuracy"],
               "average_precision": metrics["average_precision"], "roc_auc": metrics["roc_auc"],
               "class_accuracy": class_accuracy}
    if metrics["positive_class"] is not None:
        negative = next(name for name in class_names if name != metrics["positive_class"])
        numbers["accuracy_positive"] = class_accuracy[metrics["positive_class"]]
        numbers["accuracy_negative"] = class_accuracy[negative]
    return numbers


def _report_table(labels: np.ndarray, decided: np.ndarray, class_names: Sequence[str]) -> str:
    """scikit-learn's classification report of the classes ``decided``, laid out as it lays it out, with each class's
    row as metrics.json's ``per_class`` holds it (``metrics.class_numbers``): n/a, not 0, where there is nothing to
    count, said under the table. The averages are scikit-learn's, which count an n/a as 0."""
    report = classification_report(labels, decided, labels=list(range(len(class_names))), target_names=class_names,
                                   zero_division=0, output_dict=True)
    width = max(len("weighted avg"), *(columns(name) for name in class_names))

    def row(name: str, values: Sequence[float | None], support: int) -> str:
        cells = ["n/a" if value is None else f"{value:.4f}" for value in values]
        return pad(name, width, right=True) + " " + "".join(f" {cell:>9}" for cell in [*cells, str(support)])

    per_class = scoring.class_numbers(labels, decided, class_names)
    lines = [f"{'':>{width}} " + "".join(f" {header:>9}" for header in ("precision", "recall", "f1-score", "support")),
             "", *(row(name, [numbers["precision"], numbers["recall"], numbers["f1"]], numbers["support"])
                   for name, numbers in per_class.items()),
             "", f"{'accuracy':>{width}} {'':>20} {np.mean(labels == decided):>9.4f} {len(labels):>9}",
             *(row(name, [report[name][key] for key in ("precision", "recall", "f1-score")], len(labels))
               for name in ("macro avg", "weighted avg")), ""]
    if any(value is None for numbers in per_class.values() for value in numbers.values()):
        lines += ["n/a: nothing to count (0 of 0), as in metrics.json: the precision of a class never answered, the "
                  "recall and F1 of a class without images; scikit-learn's averages count it as 0.", ""]
    return "\n".join(lines)


def _classification_report(labels: np.ndarray, probabilities: np.ndarray, predicted: np.ndarray,
                           metrics: Mapping[str, Any], title: str) -> str:
    """The report of the decision rule's classes (``predicted``), then, with a threshold, the argmax's."""
    class_names = metrics["class_names"]
    threshold, positive = metrics.get("decision_threshold"), metrics.get("positive_class")
    if threshold is None:
        lines = [title, "", "Predicted class = the most probable class (the decision rule):", "",
                 _report_table(labels, predicted, class_names)]
        missing = metrics["missing_classes"]
        if missing and metrics["average"] == "macro":
            it, its = ("it", "its") if len(missing) == 1 else ("them", "their")
            lines.append(f"No test images of {', '.join(missing)} (support 0): the macro recall and F1 of "
                         f"metrics.json, the card and the summary leave {it} out (recall {metrics['recall']:.4f}, F1 "
                         f"{metrics['f1']:.4f}), and their macro precision counts {it} only where the model answered "
                         f"{it} (precision {metrics['precision']:.4f}); scikit-learn's macro avg above counts {its} "
                         "n/a as 0.")
        return "\n".join(lines)
    [threshold_text] = scoring.distinct_figures([threshold], 4)
    return "\n".join([title, "", f"Predicted class = {positive} when P({positive}) >= {threshold_text} (the decision "
                      "rule the app answers by):", "", _report_table(labels, predicted, class_names),
                      "Predicted class = the most probable class (argmax, for comparison):", "",
                      _report_table(labels, probabilities.argmax(axis=1), class_names)])


def _update_model_json(path: Path, model_info: Mapping[str, Any], threshold: float | None,
                       metrics: Mapping[str, Any] | None) -> None:
    """Writes ``model_info`` (with its ``validation_by_kind``) to model.json with ``decision_threshold`` (two
    classes) and ``test_metrics`` (not without ``metrics``: no test split), keeping every other key."""
    content = {**(read_json(path) or {}), **model_info}
    if metrics is not None:
        content["test_metrics"] = {key: metrics[key] for key in SUMMARY_KEYS} | {key: metrics.get(key)
                                                                                 for key in RULE_KEYS}
    if len(model_info["class_names"]) == 2:
        content["decision_threshold"] = threshold
    write_json(path, content, strict=True)


def _numbered(out_dir: Path) -> Iterator[Path]:
    """``out_dir``, then ``out_dir-2``, ``out_dir-3``, ... beside it (``files.numbered``)."""
    yield Path(out_dir)
    base = Path(out_dir).resolve()  # resolved, so that "." gets a name to number too
    yield from (as_typed(base.with_name(name), out_dir) for name in itertools.islice(numbered(base.name), 1, None))


def _holds_results(folder: Path) -> bool:
    """Whether ``folder`` holds one of the files an evaluation or a prediction writes."""
    return any((folder / name).exists() for name in RESULT_FILES)


@contextlib.contextmanager
def claimed_output_folder(out_dir: Path, *, given: bool) -> Iterator[Path]:
    """``out_dir``, or when it already holds results the first free ``out_dir-2``, ``out_dir-3``, ... beside it,
    skipping too a folder another run writes (``files.working_on``), claimed for this run while the block runs: two
    --evaluate (or --predict) runs at once whose default folders coincide each write their own. ``given`` (an
    --out): a run that writes ``out_dir`` itself refuses this one instead (UserError), rather than a folder the user
    did not ask for. A warning names the folder written where it is not ``out_dir``."""
    out_dir, busy = Path(out_dir), None
    with contextlib.ExitStack() as claims:
        if given:
            claims.enter_context(working_on([out_dir], "ModelTraining.py"))
        for candidate in _numbered(out_dir):
            if _holds_results(candidate):
                continue
            claim = contextlib.ExitStack()
            if not (given and candidate == out_dir):
                try:
                    claim.enter_context(working_on([candidate], "ModelTraining.py"))
                except UserError:
                    if (holder := claimed_by(candidate)) is None:  # a run on a folder around it: all are refused
                        raise
                    busy = busy or holder
                    continue
            if _holds_results(candidate):  # written by a run that ended meanwhile
                claim.close()
                continue
            claims.enter_context(claim)
            break
        if candidate != out_dir:
            why = "already holds results, which are kept" if busy is None or _holds_results(out_dir) else (
                f"is being written by {busy}")
            logger.warning("%s %s; writing to %s instead", out_dir, why, candidate)
        yield candidate


@dataclass(frozen=True)
class Source:
    """One evaluated folder: its name in metrics.json, its usable images and their probabilities."""

    name: str
    folder: Path
    images: LabelledImages
    probabilities: np.ndarray


def source_names(folders: Sequence[Path]) -> list[str]:
    """Each folder's name with as many parents as tell equal names apart (UserError for a folder given twice)."""
    refuse_given_twice(folders, "--test-dir")
    paths = [Path(folder).absolute() for folder in folders]
    names = []
    for path in paths:
        depth = 1
        while depth < len(path.parts) and any(path.parts[-depth:] == other.parts[-depth:]
                                              for other in paths if other is not path):
            depth += 1
        names.append(Path(*path.parts[-depth:]).as_posix())
    return names


def check_folders(model_info: ModelInfo | Mapping[str, Any], folders: Sequence[Path],
                  max_pixels: int = config.MAX_IMAGE_PIXELS,
                  already_scanned: Mapping[Path, LabelledImages] | None = None) -> list[LabelledImages]:
    """Each folder's usable images (more than ``max_pixels`` pixels: skipped; ``skipped`` also lists the files
    ``left_out_files`` names), from the headers alone: what refuses an evaluation (a folder missing or given
    twice, class folders other than the model's, no readable image) fails here, before any image is predicted
    and before a caller chooses or announces an output folder. ``already_scanned``: folders the caller has read
    with ``data.scan_images`` under the model's settings and ``max_pixels`` (training's ``data.scan_splits``),
    taken as they are rather than read, and warned of, again.

    Raises:
        UserError: naming the folder and what is wrong with it.
    """
    from realvsai.data import scan_images

    info = ModelInfo.of(model_info)
    class_names = list(info.class_names)
    source_names(folders)  # a folder given twice fails before any is scanned
    checked = []
    for folder in map(Path, folders):
        _refuse_dataset_folder(folder, class_names)
        images = already_scanned[folder] if folder in (already_scanned or {}) else scan_images(
            folder, class_names=class_names, max_pixels=max_pixels, crop_size=info.crop_size,
            image_size=info.decode_size)
        checked.append(dataclasses.replace(images, skipped=[*images.skipped, *left_out_files(folder, class_names)]))
    _warn_of_images_in_two_folders(list(map(Path, folders)), checked)
    return checked


def _warn_of_images_in_two_folders(folders: Sequence[Path], checked: Sequence[LabelledImages]) -> None:
    """Warns, for each folder, of its images with the same bytes as an earlier folder's: each is scored in both, and
    the headline numbers count it twice. Only files sharing their size with another folder's file are read."""
    twins: dict[tuple[int, int], list[tuple[Path, Path]]] = {}  # (folder, earlier folder) -> (its file, the earlier)
    for (first, first_path), *others in same_bytes_across([images.files for images in checked],
                                                          "checking for images in two folders"):
        for number, path in others:
            if number != first:
                twins.setdefault((number, first), []).append((path, first_path))
    for (number, earlier), pairs in sorted(twins.items()):
        one = len(pairs) == 1
        logger.warning("%s in %s %s identical to %s in %s (e.g. %s = %s): each is scored once per folder, so the "
                       "numbers over all the folders count %s twice", plural(len(pairs), "image"), folders[number],
                       "is" if one else "are", "an image" if one else "images", folders[earlier], *min(pairs),
                       "it" if one else "them")


def _refuse_dataset_folder(folder: Path, class_names: Sequence[str]) -> None:
    """A UserError when the "class folders" of ``folder`` are a dataset's split folders (train/, validation/, test/,
    in any letter case or spelling of ``layout.SPLIT_WORDS``) that the model has no class of: a --test-dir given the
    dataset folder instead of its test split, which renaming the folders (as for other unknown classes) would
    damage. Names the split to give instead: test/, else validation/ (never train/, which the model learnt). A
    folder that also holds a class of the model is left to ``scan_images``, which names the folders it does not
    expect."""
    found = find_class_folders(folder) if folder.is_dir() else []
    splits = {name: SPLIT_WORDS[name_key(name)] for name in found if name_key(name) in SPLIT_WORDS}
    if not splits or set(class_folder_of(class_names, found).values()) & set(found):  # a class beside: not a dataset
        return
    held_out = sorted((name for name in splits if splits[name] != TRAIN), key=lambda name: (splits[name] != TEST, name))
    found = (f"{folder} is a dataset folder (it holds the split folders {', '.join(sorted(splits))}), not one folder "
             "per class")
    if not held_out:  # what the model learnt from says nothing of new images
        raise UserError(f"{found}, and it has no test or validation split: give a folder of images the model did "
                        "not train on.")
    raise UserError(f"{found}: give its {splits[held_out[0]]} split, --test-dir "
                    f"{config.shell_path(folder / held_out[0])}.")


def _predict_sources(predictor: Predictor, folders: Sequence[Path], scanned: Sequence[LabelledImages]
                     ) -> list[Source]:
    """Each folder's images (``check_folders``) with their probabilities, without the files that failed to decode."""
    class_names = list(predictor.info.class_names)
    sources = []
    for name, folder, images in zip(source_names(folders), folders, scanned, strict=True):
        with progress(None, total=len(images), desc=f"predicting {name}", unit="image") as bar:
            if bar.disable:  # a log, which draws no bar: a line says what the wait is
                logger.info("predicting %s in %s", plural(len(images), "image"), folder)
            probabilities = prediction.predict_images(predictor, images, bar=bar)
        if probabilities.shape[1] != len(class_names):
            raise UserError(f"the model predicts {plural(probabilities.shape[1], 'class', 'classes')}, but its "
                            f"model.json names {len(class_names)}: {class_names}. Use the model.json saved with "
                            "this model.")
        images, probabilities = without_failed(images, probabilities)
        if not len(images):
            raise UserError(f"{folder} holds no image that could be decoded. Check the folder and its files.")
        sources.append(Source(name, Path(folder), images, probabilities))
    return sources


def _evaluate(info: ModelInfo, sources: Sequence[Source], out_dir: Path, threshold: float | None,
              split_counts: Mapping[str, Mapping[str, int]], **extra: Any) -> dict[str, Any]:
    """Metrics over every source together, the report, the plots and predictions.csv (not metrics.json)."""
    from realvsai.data import LabelledImages

    class_names = list(info.class_names)
    images = dataclasses.replace(LabelledImages.join([source.images for source in sources]), class_names=class_names)
    probabilities = np.concatenate([source.probabilities for source in sources])
    metrics = {"folder": ", ".join(str(source.folder) for source in sources),
               **scoring.compute_metrics(images.labels, probabilities, class_names,
                                         info.positive_class, threshold),
               "num_skipped": len(images.skipped),
               "skipped_files": [{**({"source": source.name} if len(sources) > 1 else {}),
                                  "file": prediction.relative_name(path, source.folder), "reason": reason}
                                 for source in sources for path, reason in source.images.skipped],
               **extra}
    rule = dataclasses.replace(info, decision_threshold=threshold).rule()
    labels = np.asarray(images.labels)
    # At the threshold these metrics use; file names relative to the folder all sources share. The classes the
    # app would answer, and where it says Uncertain (the rule, or an image unlike the training images).
    # Absolute, not resolved: a symlinked file or class folder keeps the name it has in the folder, as --predict's.
    root = Path(os.path.commonpath([os.path.abspath(source.folder) for source in sources]))
    reasons = [doubt(info, width, height, image_format, grayscale, frames)
               for (width, height), image_format, grayscale, frames
               in zip(images.sizes, images.formats, images.grayscale or [None] * len(images),
                      images.frames or [1] * len(images))]
    predicted, uncertain = prediction.write_predictions(
        out_dir / config.PREDICTIONS_FILE, root, [Path(os.path.abspath(path)) for path in images.files], probabilities,
        class_names, rule, reasons, true_labels=images.labels)
    certain = ~uncertain
    metrics["uncertain"] = int(uncertain.sum())
    metrics["accuracy_when_certain"] = float(np.mean(predicted[certain] == labels[certain])) if certain.any() else None
    metrics["uncertain_by_confidence"] = scoring.uncertain_by_confidence(
        rule, labels, probabilities, np.array([reason is not None for reason in reasons], dtype=bool))
    positive = scoring.positive_index(class_names, metrics["positive_class"])  # 1, unused, for more classes
    plots.plot_confusion_matrix(labels, predicted, class_names, out_dir / PLOT_FILES["confusion_matrix"])
    plots.plot_roc_curves(labels, probabilities, class_names, out_dir / PLOT_FILES["roc_curve"], positive)
    plots.plot_precision_recall_curves(labels, probabilities, class_names,
                                       out_dir / PLOT_FILES["precision_recall_curve"], positive,
                                       metrics.get("decision_threshold"))
    plots.plot_reliability_diagram(labels, probabilities, metrics["expected_calibration_error"],
                                   out_dir / PLOT_FILES["reliability_diagram"])
    plots.plot_class_distribution(split_counts, out_dir / PLOT_FILES["class_distribution"])
    plots.plot_confident_errors([plots.ErrorExample(images.files[index], class_names[labels[index]],
                                                    class_names[predicted[index]],
                                                    float(probabilities[index, predicted[index]]),
                                                    prediction.relative_name(Path(os.path.abspath(images.files[index])),
                                                                             root))
                                 for index in scoring.most_confident_errors(labels, probabilities, predicted)],
                                out_dir / PLOT_FILES["confident_errors"], max_pixels=images.max_pixels)
    metrics["plots"] = dict(PLOT_FILES)
    atomic_write_text(out_dir / config.REPORT_FILE, _classification_report(
        labels, probabilities, predicted, metrics,
        f"Classification report: {metrics['folder']} ({plural(len(labels), 'image')})"))
    # As --predict lists them, absolute as predictions.csv's files are.
    prediction.write_unreadable(out_dir, root, [(Path(os.path.abspath(path)), reason)
                                                for path, reason in images.skipped])
    return metrics


def evaluate_folders(model: keras.Model, model_info: ModelInfo | Mapping[str, Any], folders: Sequence[Path],
                     out_dir: Path, batch_size: int = config.TrainConfig.batch_size, *, robustness: bool = False,
                     max_pixels: int = config.MAX_IMAGE_PIXELS,
                     scanned: Sequence[LabelledImages] | None = None) -> dict[str, Any]:
    """Evaluates the model on folders of class folders (one source each) into ``out_dir``, with EVALUATION.md;
    images of more than ``max_pixels`` pixels are skipped unread (decompression bombs). ``scanned``: the
    folders' ``check_folders``, when the caller made it (to check them before it chose ``out_dir``).

    metrics.json adds ``sources`` (each folder's ``source_metrics``) and ``combined``; ``robustness``
    adds the accuracy (and two-class ROC AUC) under every ``PERTURBATIONS`` entry and robustness.png.

    Raises:
        UserError: for a missing, repeated or mismatched folder, a malformed model.json, or a run folder (or a
            folder that cannot be written) as ``out_dir``; all before any image is predicted.
    """
    info = ModelInfo.of(model_info)
    folders, out_dir = [Path(folder) for folder in folders], Path(out_dir)
    if (out_dir / config.MODEL_JSON_FILE).is_file():
        raise UserError(f"{out_dir} is a training run's folder (it has {config.MODEL_JSON_FILE}); evaluating there "
                        "would replace the run's test results. Choose another output folder, e.g. "
                        f"{out_dir / 'evaluations' / folders[0].name}.")
    class_names = list(info.class_names)
    rule = info.rule()
    threshold = rule.decision_threshold
    scanned = scanned if scanned is not None else check_folders(info, folders, max_pixels)
    prediction.make_output_folder(out_dir)
    predictor = Predictor(model, info, batch_size)  # one for every prediction: each new one compiles the model
    sources = _predict_sources(predictor, folders, scanned)
    # The class distribution shows the model's training splits, then the evaluated images.
    split_counts = {split: dict(counts) for split, counts in (info.get("counts") or {}).items() if split != TEST}
    split_counts["evaluated"] = {name: sum(source.images.labels.count(index) for source in sources)
                                 for index, name in enumerate(class_names)}
    extra = {"threshold_source": "model.json"} if threshold is not None else {}
    metrics = _evaluate(info, sources, out_dir, threshold, split_counts, **extra)
    positive_class = metrics["positive_class"]
    metrics["decision_rule"] = rule.describe(class_names)
    metrics["sources"] = {source.name: {"folder": str(source.folder), "num_skipped": len(source.images.skipped),
                                        **source_metrics(source.images.labels, source.probabilities, class_names,
                                                         positive_class, threshold)}
                          for source in sources}
    labels = [label for source in sources for label in source.images.labels]
    keys = ("accuracy", "roc_auc") if len(class_names) == 2 else ("accuracy",)  # what robustness reports
    metrics["combined"] = source_metrics(labels, np.concatenate([source.probabilities for source in sources]),
                                         class_names, positive_class, threshold)
    # The perturbations change the full-resolution pixels: a JPEG within the pixel limit only at its reduced decode
    # (images.limit_scale: a 200 MP phone photo) is left out of them, and of their clean numbers.
    whole = [_within_limit_whole(source.images) for source in sources] if robustness else []
    if robustness:
        metrics["robustness_left_out"] = [
            {**({"source": source.name} if len(sources) > 1 else {}),
             "file": prediction.relative_name(path, source.folder), "reason": reason}
            for source, (_, left_out) in zip(sources, whole) for path, reason in left_out]
        for path, reason in (item for _, left_out in whole for item in left_out):
            logger.warning("%s is left out of --robustness, whose perturbations change the full-resolution pixels: "
                           "%s", path, reason)
    robust_labels = [label for kept, _ in whole for label in kept.labels]
    if robustness and not robust_labels:
        logger.warning("no image is left for --robustness: every one is over --max-pixels at full resolution")
    elif robustness:
        # Unchanged copies first: the clean numbers take the perturbed copies' route (a full decode written as
        # PNG), so the gap to each perturbation is the perturbation's alone, not also a large JPEG's reduced decode.
        steps = [None, *((kind, strength) for kind, strengths in PERTURBATIONS.items() for strength in strengths)]
        results: dict[str, dict[str, Any]] = {kind: {} for kind in PERTURBATIONS}
        for step in progress(steps, desc="robustness", unit="perturbation"):
            # A pass over the images takes a while (0.5 s a large photo): its copies and predictions are counted.
            with (progress(None, total=len(robust_labels), desc=f"{describe(step)}: copying", unit="image") as copied,
                  progress(None, total=len(robust_labels), desc=f"{describe(step)}: predicting", unit="image")
                  as predicted):
                probabilities = np.concatenate([predict_perturbed(predictor, kept, step, (copied, predicted))
                                                for kept, _ in whole])
            if np.isnan(probabilities).any():
                raise UserError(f"an image stopped decoding during the {describe(step)} evaluation; check the "
                                "files of the test folders and run it again.")
            numbers = source_metrics(robust_labels, probabilities, class_names, positive_class, threshold)
            if step is None:
                metrics["robustness_clean"] = {key: numbers[key] for key in keys}
            else:
                results[step[0]][f"{step[1]:g}"] = {key: numbers[key] for key in keys}
        clean = metrics["robustness_clean"]
        metrics["robustness"] = results
        plots.plot_robustness(clean["accuracy"], {kind: {float(strength): values["accuracy"]
                                                         for strength, values in by_strength.items()}
                                                  for kind, by_strength in results.items()},
                              out_dir / config.ROBUSTNESS_PLOT_FILE)
        metrics["plots"]["robustness"] = config.ROBUSTNESS_PLOT_FILE
    write_json(out_dir / config.METRICS_FILE, metrics, strict=True)
    title = ", ".join(source.name for source in sources)
    atomic_write_text(out_dir / config.EVALUATION_CARD_FILE,
                      render_card(info.content, metrics, f"Evaluation on {title}", split_counts, f"Metrics on {title}"))
    return metrics  # the summary line is the caller's (ModelTraining.py --evaluate prints it with the outputs)


def evaluate_run(model: keras.Model, model_info: ModelInfo | Mapping[str, Any], data_dir: Path, out_dir: Path,
                 batch_size: int = config.TrainConfig.batch_size, max_pixels: int = config.MAX_IMAGE_PIXELS,
                 already_scanned: Mapping[Path, LabelledImages] | None = None) -> dict[str, Any] | None:
    """The end-of-training evaluation: the threshold of the best balanced accuracy on validation (two classes:
    ``metrics.choose_threshold``) and the accuracy by kind of image there, then metrics on test. Both splits are read
    under the run's ``max_pixels``, as training read them: an image it skipped is skipped here too. Without
    ``data_dir/test`` only model.json is written (threshold and ``validation_by_kind``, no test numbers, so no card)
    and None is returned. ``already_scanned``: the validation and test images by folder as training scanned them
    (``check_folders``), so that each warning of that scan (a broken file, a class without images) is said once.

    Every output is written with model.json as it ends up, its ``validation_by_kind`` included, so predictions.csv's
    uncertain and unfamiliar columns are those --predict and the app give for the same images.

    Raises:
        UserError: if the classes of ``data_dir/test`` differ from the model's, or ``out_dir`` cannot be written.
    """
    info = ModelInfo.of(model_info)
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    class_names = list(info.class_names)
    test = (check_folders(info, [data_dir / TEST], max_pixels, already_scanned) if (data_dir / TEST).is_dir()
            else None)
    prediction.make_output_folder(out_dir)
    extra = {}
    predictor = Predictor(model, info, batch_size)  # one for validation and test: each new one compiles the model
    threshold, selection, by_kind = _validate(predictor, data_dir / VALIDATION, max_pixels, already_scanned)
    if len(class_names) == 2:
        extra = {"threshold_source": VALIDATION if threshold is not None else None, "threshold_selection": selection}
    if by_kind:
        info = ModelInfo.of({**info.content, "validation_by_kind": by_kind})
    if test is None:
        _update_model_json(out_dir / config.MODEL_JSON_FILE, info.content, threshold, None)
        logger.info("%s has no %s folder: no test numbers, and no model card; model.json has the %saccuracy by kind "
                    "of image on %s", data_dir, TEST, "decision threshold and the " if len(class_names) == 2 else "",
                    VALIDATION)
        return None
    split_counts = info.get("counts") or {
        split: {name: len(list_images(data_dir / split / name)) if (data_dir / split / name).is_dir() else 0
                for name in class_names}
        for split in SPLITS if (data_dir / split).is_dir()}
    sources = _predict_sources(predictor, [data_dir / TEST], test)
    metrics = _evaluate(info, sources, out_dir, threshold, split_counts, **extra)
    write_json(out_dir / config.METRICS_FILE, metrics, strict=True)
    atomic_write_text(out_dir / config.MODEL_CARD_FILE,
                      render_card(info.content, metrics, f"Model card: {out_dir.resolve().name}", split_counts))
    _update_model_json(out_dir / config.MODEL_JSON_FILE, info.content, metrics.get("decision_threshold"), metrics)
    logger.info("test: %s", scoring.format_summary(metrics))
    return metrics


def _validate(predictor: Predictor, folder: Path, max_pixels: int,
              already_scanned: Mapping[Path, LabelledImages] | None
              ) -> tuple[float | None, dict[str, Any] | None, dict[str, Any] | None]:
    """One pass over the validation split (``check_folders``, which takes it from ``already_scanned`` if there):
    with two classes the threshold of the best balanced accuracy and how it was found (None, None without one); for
    any number of classes the decision rule's accuracy by kind of image (``accuracy_by_kind``; None without the
    split)."""
    info = predictor.info
    if not folder.is_dir():
        logger.warning("no %s folder: %sno accuracy by kind of image", folder,
                       "the decision threshold stays at argmax, " if len(info.class_names) == 2 else "")
        return None, None, None
    (source,) = _predict_sources(predictor, [folder], check_folders(info, [folder], max_pixels, already_scanned))
    threshold, selection = None, None
    if len(info.class_names) == 2:
        threshold, selection = _choose_threshold(info, source, folder)
    decided = dataclasses.replace(info, decision_threshold=threshold).rule().decide(source.probabilities)
    by_kind = accuracy_by_kind(source.images, decided, folder.parent, len(info.class_names))
    return threshold, selection and {**selection, "by_kind": by_kind}, by_kind


def _choose_threshold(info: ModelInfo, source: Source, folder: Path) -> tuple[float | None, dict[str, Any] | None]:
    """The threshold of the best balanced accuracy on the validation images ``source``, and how it was found (None,
    None when none can be chosen)."""
    positive = scoring.positive_index(info.class_names, info.positive_class)
    labels, scores = np.asarray(source.images.labels), source.probabilities[:, positive].astype(np.float64)
    try:
        threshold = scoring.choose_threshold(labels == positive, scores)
    except ValueError as error:
        logger.warning("no decision threshold from %s: %s", folder, error)
        return None, None
    at = scoring.threshold_metrics(labels, scores, positive, threshold)
    num_positive = int(np.sum(labels == positive))
    if few := few_threshold_images({"num_positive": num_positive, "num_images": len(labels)},
                                   info.class_names[positive], info.class_names[1 - positive]):
        logger.warning("%s", few)
    return threshold, {"split": VALIDATION, "num_images": len(source.images), "num_positive": num_positive,
                       "num_skipped": len(source.images.skipped), "balanced_accuracy": at["balanced_accuracy"],
                       "accuracy": at["accuracy"], "f1": at["f1"]}


_ONE_SIDED_95 = 1.645  # the normal quantile of a one-sided 95 % bound


def _kind_numbers(labels: np.ndarray, decided: np.ndarray, chance: float, class_names: Sequence[str]
                  ) -> dict[str, Any]:
    present = np.unique(labels)
    right = np.array([np.sum(decided[labels == label] == label) for label in present], np.float64)
    total = np.array([np.sum(labels == label) for label in present], np.float64)
    balanced = float(np.mean(right / total))
    # A kind of some of the classes shows how well the model tells those apart: one answer for all of them scores
    # 1 / their number. A kind of one class says nothing of that (run.untested); its recall is held to chance.
    if len(present) > 1:
        chance = 1.0 / len(present)
    # Near chance unless validation shows it above: the one-sided 95 % lower bound of the balanced accuracy (the
    # mean of the class recalls), Agresti-Coull's: each recall's centre and variance from +4 answers, sound at 0
    # and 1 (below the raw recalls, 2 right of 2 passed: a coin does that one time in 4). The +4 are right at
    # chance's rate (+2 of +4 for two classes): drawn towards 0.5, the recalls of many classes kept that pull in
    # their mean as its spread shrank, and every answer wrong on 5 images of each of 10 classes passed.
    adjusted = (right + 4 * chance) / (total + 4)
    spread = math.sqrt(float(np.sum(adjusted * (1 - adjusted) / (total + 4)))) / len(present)
    lower_bound = float(np.mean(adjusted)) - _ONE_SIDED_95 * spread
    return {"num_images": len(labels), "accuracy": float(np.mean(decided == labels)), "balanced_accuracy": balanced,
            "chance": chance, "near_chance": lower_bound <= chance + NEAR_CHANCE,  # few images: a low bound
            "missing_classes": [name for index, name in enumerate(class_names) if index not in present]}


def accuracy_by_kind(images: LabelledImages, decided: np.ndarray, data_dir: Path, num_classes: int) -> dict[str, Any]:
    """The decision rule's accuracy on each kind of image: per ``source`` dataset (data_dir/manifest.csv's
    ``dataset`` column, where it has one: the folder each image was split from) and per ``size`` band
    (``run.size_band``), each with its balanced accuracy (the mean recall of the classes it has) and whether that
    is at or near its ``chance`` (1 / the classes it has, 1 / classes for a kind of one), and the classes it has no
    image of (``missing_classes``: a kind of one class scores its recall alone, which says nothing of telling the
    classes apart there); model.json's ``validation_by_kind``."""
    labels, decided = np.asarray(images.labels), np.asarray(decided)
    chance = 1.0 / num_classes
    kinds: dict[str, list[str]] = {"size": [size_band(width, height) for width, height in images.sizes]}
    result: dict[str, Any] = {"chance": chance, "near_chance_margin": NEAR_CHANCE}
    manifest = Path(data_dir) / MANIFEST_NAME
    datasets = {row.path: row.dataset for row in read_manifest(manifest)} if manifest.is_file() else {}
    if any(datasets.values()):  # a manifest from before the column names no dataset
        kinds["source"] = [datasets.get(prediction.relative_name(path, Path(data_dir))) or "unknown"
                           for path in images.files]
        result["source_unit"] = SOURCE_UNIT  # earlier runs keyed "source" by file (run.validation_by_kind)
    for kind, names in kinds.items():
        names_array = np.asarray(names)
        result[kind] = {name: _kind_numbers(labels[names_array == name], decided[names_array == name], chance,
                                            images.class_names)
                        for name in sorted(set(names))}
    return result
