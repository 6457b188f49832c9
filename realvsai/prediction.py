"""Predicting a folder of images of unknown class, and the per-file predictions.csv and unreadable.csv that --evaluate
writes too.

    DIR/**/*.jpg ...   ->   OUT/predictions.csv   file, predicted, probability_<class>..., uncertain, unfamiliar
                            OUT/unreadable.csv    file, reason (not images, broken, too many pixels, masks)

Images stream through ``data.make_dataset``, so any folder needs the memory of a few batches.

    summary = predict_folder(model, model_info, Path("my_images"), Path("models/run1/predictions-my_images"))
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from realvsai import images as image_io
from realvsai.cli import plural, progress
from realvsai.config import (
    FEW_CLASSES,
    MAX_IMAGE_PIXELS,
    PREDICTIONS_FILE,
    UNREADABLE_FILE,
    TrainConfig,
)
from realvsai.errors import UserError
from realvsai.files import (
    IMAGE_EXTENSIONS,
    list_images,
    misnamed_image,
    not_an_image_name,
    spreadsheet_safe,
    write_csv,
)
from realvsai.layout import leave_out_masks
from realvsai.metrics import DecisionRule, skipped_why
from realvsai.run import ModelInfo, Predictor, doubt

if TYPE_CHECKING:  # TensorFlow is imported only when predicting
    import keras

    from realvsai.data import LabelledImages

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictionSummary:
    """What ``predict_folder`` did, for the script's summary line."""

    out_dir: Path
    counts: dict[str, int]  # images per predicted class, uncertain ones included
    num_uncertain: int
    num_unfamiliar: int
    unreadable: list[tuple[str, str]]  # (file relative to the folder, reason), the masks included
    num_masks: int = 0  # segmentation masks beside their images, left out as training and --evaluate leave them
    answer: str | None = None  # one image given (--input photo.jpg): its answer and why, as the app's card says it

    def describe(self, folder: Path) -> str:
        """One line: ``predicted 2,000 images in DIR: 1,200 FAKE, 800 REAL (35 uncertain) ...``."""
        line = (f"predicted {plural(sum(self.counts.values()), 'image')} in {folder}: "
                f"{describe_counts(self.counts, self.num_uncertain, self.num_unfamiliar)}")
        line += f"; predictions in {self.out_dir / PREDICTIONS_FILE}"
        others = len(self.unreadable) - self.num_masks
        left_out = [plural(count, what) for count, what in ((self.num_masks, "segmentation mask"),
                                                            (others, "other file" if self.num_masks else "file"))
                    if count]
        if left_out:  # not images, unreadable, over the pixel limit: unreadable.csv gives each one's reason
            reason = "each one's reason" if len(self.unreadable) > 1 else "its reason"
            line += f"; {' and '.join(left_out)} left out, listed in {self.out_dir / UNREADABLE_FILE} with {reason}"
        return line


# What the unfamiliar column's flag means: it names one of two reasons for each image it flags.
UNFAMILIAR_MEANS = "unlike the training images, or of a size validation found the model at chance on or had no image of"


def describe_counts(counts: Mapping[str, int], num_uncertain: int, num_unfamiliar: int, explained: bool = True) -> str:
    """``1,200 FAKE, 800 REAL (35 uncertain)``: the images of each decided class (an uncertain answer counted in its
    class too), as --predict and the app sum up their answers. With more than FEW_CLASSES classes, the classes
    answered, most frequent first, FEW_CLASSES of them by name (``40 cat, 12 dog, ..., 9 in 4 other classes``).
    Unfamiliar images are counted with ``UNFAMILIAR_MEANS`` (``explained``) or as ``3 unfamiliar`` (the app's heading,
    which says it beneath)."""
    if len(counts) > FEW_CLASSES:
        answered = sorted(((name, count) for name, count in counts.items() if count), key=lambda item: -item[1])
        counts = dict(answered[:FEW_CLASSES])
        if rest := answered[FEW_CLASSES:]:
            counts[f"in {plural(len(rest), 'other class', 'other classes')}"] = sum(count for _, count in rest)
    line = ", ".join(f"{count:,} {name}" for name, count in counts.items()) + f" ({num_uncertain:,} uncertain"
    if not num_unfamiliar:
        return line + ")"
    return line + (f", {num_unfamiliar:,} flagged in the unfamiliar column: {UNFAMILIAR_MEANS})" if explained
                   else f", {num_unfamiliar:,} unfamiliar)")


def predict_images(predictor: Predictor, images: LabelledImages, *, bar: Any = None) -> np.ndarray:
    """Class probabilities (images, classes) in file order, NaN rows for files that failed to decode.

    The files stream through ``data.make_dataset`` (at the predictor's image size and input mode) into the run's
    one predict path, every batch padded to the predictor's ``rows_for`` them. ``bar``: a ``cli.progress`` bar of
    images that counts them as they are predicted.
    """
    import tensorflow as tf

    from realvsai.data import make_dataset

    batch_size, info = predictor.rows_for(len(images)), predictor.info
    # Labels become file indices: the pipeline drops files it cannot decode, so each row carries its file's.
    indexed = dataclasses.replace(images, labels=list(range(len(images))))
    dataset = make_dataset(indexed, batch_size=batch_size, image_size=info.image_size, shuffle=False, cache_bytes=0,
                           crops="grid" if info.input_mode == "crops" else None)

    def pad(pixels: tf.Tensor, indices: tf.Tensor) -> tuple[tuple[tf.Tensor, tf.Tensor]]:
        missing = batch_size - tf.shape(indices)[0]
        pixels = tf.pad(pixels, [[0, missing]] + [[0, 0]] * (pixels.shape.rank - 1))
        return ((pixels, tf.pad(indices, [[0, missing]], constant_values=-1)),)

    from realvsai.callbacks import PredictionProgress

    return predictor.predict_indexed(dataset.map(pad), len(images),
                                     callbacks=[PredictionProgress(bar)] if bar is not None else [])


def decode_failure(path: Path, max_pixels: int) -> str:
    """Why a file the scan took did not decode in the input pipeline (it broke or changed since), as unreadable.csv
    says it."""
    return image_io.image_problem(path, max_pixels) or "could not be decoded"


def relative_name(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` with forward slashes (the path itself when outside it)."""
    return Path(path).relative_to(folder).as_posix() if Path(path).is_relative_to(folder) else str(path)


def write_unreadable(out_dir: Path, folder: Path, skipped: Sequence[tuple[Path, str]],
                     warn: bool = True) -> list[tuple[str, str]]:
    """Lists the files left out, ``(file, why)``, in ``out_dir/unreadable.csv`` (none: no file), named as
    predictions.csv names files (relative to ``folder``), with a warning unless not ``warn``; returns its rows."""
    unreadable = sorted((relative_name(Path(path), folder), reason) for path, reason in skipped)
    if unreadable:
        write_csv(out_dir / UNREADABLE_FILE, ["file", "reason"],
                  [(spreadsheet_safe(name), reason) for name, reason in unreadable])
    if unreadable and warn:
        one = len(unreadable) == 1
        logger.warning("%s left out (%s); %s listed in %s",
                       plural(len(unreadable), "file was", "files were"), skipped_why(len(unreadable)),
                       "it is" if one else "they are", out_dir / UNREADABLE_FILE)
    return unreadable


def write_predictions(path: Path, folder: Path, files: Sequence[Path], probabilities: np.ndarray,
                      class_names: Sequence[str], rule: DecisionRule, unfamiliar: Sequence[str | None],
                      true_labels: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Writes predictions.csv (``true`` only with ``true_labels``); returns the decided classes and uncertain flags.
    Each of ``files`` is named relative to ``folder`` (``relative_name``); ``unfamiliar`` holds each file's reason
    to doubt the answer (``run.doubt``) or None, and a reason makes that answer uncertain (``rule.uncertain``)."""
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(len(files), len(class_names))
    predicted = rule.decide(probabilities)
    uncertain = rule.uncertain(probabilities, np.array([reason is not None for reason in unfamiliar], dtype=bool))
    header = ["file", *(["true"] if true_labels is not None else []), "predicted",
              *(f"probability_{name}" for name in class_names), "uncertain", "unfamiliar"]
    rows = [[csv_cell(cell) for cell in (
        relative_name(file, folder), *([class_names[true_labels[index]]] if true_labels is not None else []),
        class_names[int(predicted[index])], *(float(value) for value in probabilities[index]),
        bool(uncertain[index]), unfamiliar[index])] for index, file in enumerate(files)]
    write_csv(Path(path), header, rows)
    return predicted, uncertain


def csv_cell(value: object) -> str:
    """A cell of predictions.csv (and of the app's CSV): a probability with 6 decimals, true/false, empty for None,
    and a text that a spreadsheet would run as a formula behind a ``'`` (``files.spreadsheet_safe``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:.6f}" if isinstance(value, float) else str(spreadsheet_safe(value))


def make_output_folder(out_dir: Path) -> None:
    """Creates ``out_dir`` and writes (and removes) a file there, so that a folder the outputs cannot go to fails
    before any image is predicted: a read-only one would otherwise fail only after the whole folder was predicted.

    Raises:
        UserError: naming the folder and why it cannot be written.
    """
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-check-"):
            pass
    except OSError as error:
        reason = "a file has that name" if out_dir.is_file() else (error.strerror or str(error)).lower()
        raise UserError(f"cannot write the outputs to {out_dir}: {reason}. Choose a writable --out folder, then run "
                        "the same command again (nothing was predicted yet).") from None


def check_input(source: Path) -> None:
    """UserError unless ``source`` (--input) is a folder that holds a file, or a file named as an image or, as the app
    reads an upload, one of a format read here by its content: checked before the model loads and an output folder
    is chosen or announced."""
    source = Path(source)
    if source.is_file() and (why := not_an_image_name(source.name)) and not misnamed_image(source):
        raise UserError(cannot_predict(source, why))
    if not source.is_file() and not source.is_dir():
        raise UserError(f"{source} is not a folder, nor a file. Give --input an image, or a folder of images.")
    listed: list[tuple[str, str]] = []  # the files that are not images: each is named in unreadable.csv
    if source.is_dir() and not list_images(source, recursive=True, skipped=listed) and not listed:
        raise no_image_file(source)


def no_image_file(folder: Path) -> UserError:
    """The error of a --input folder that holds no file to predict."""
    return UserError(f"{folder} holds no image file (names ending in {', '.join(sorted(IMAGE_EXTENSIONS))}).")


def cannot_predict(source: Path, why: str, read: bool = False) -> str:
    """The one line that ends a --predict of one file (``source``) that could not be predicted, for ``why``;
    ``read``: an image file it opened (broken, or over the pixel limit, whose ``why`` gives the fix)."""
    then = ("Fix that, or give --input another image or a folder of images." if read else
            "Give --input an image, or a folder of images.")
    return f"{source} could not be predicted: {why}. {then}"


def predict_folder(model: keras.Model, model_info: ModelInfo | Mapping[str, Any], folder: Path, out_dir: Path, *,
                   batch_size: int = TrainConfig.batch_size, max_pixels: int = MAX_IMAGE_PIXELS) -> PredictionSummary:
    """Predicts every image under ``folder`` (or the one image file it names) into ``out_dir/predictions.csv`` (not
    written where none could be), the unusable ones into unreadable.csv; files are named relative to the folder (a
    file given alone: by its name). The images are counted under a bar as they are predicted.

    Raises:
        UserError: if the folder is missing or holds no image file, the file is not named as an image, or
            ``out_dir`` already has predictions or cannot be written (checked before any image is predicted).
    """
    from realvsai.data import LabelledImages

    info = ModelInfo.of(model_info)
    source, out_dir = Path(folder), Path(out_dir)
    check_input(source)
    if (out_dir / PREDICTIONS_FILE).exists():
        raise UserError(f"{out_dir / PREDICTIONS_FILE} already exists and is kept. Choose another --out folder.")
    class_names = list(info.class_names)
    skipped: list[tuple[Path, str]] = []  # (file, why)
    alone = source.is_file()  # one image: named within its folder, as it would be among the folder's
    folder = source.parent if alone else source
    candidates = [source] if alone else list_images(folder, recursive=True, skipped=skipped)
    candidates, masks = leave_out_masks(candidates)
    skipped += masks
    headers = image_io.read_headers(candidates, max_pixels, f"checking {source.name}", crop_size=info.crop_size,
                                    image_size=info.decode_size)
    skipped += [(path, header) for path, header in zip(candidates, headers) if isinstance(header, str)]
    usable = [(path, header) for path, header in zip(candidates, headers) if not isinstance(header, str)]
    if not usable and not skipped:  # emptied since check_input
        raise no_image_file(folder)
    make_output_folder(out_dir)
    probabilities = np.zeros((0, len(class_names)), np.float32)
    if usable:
        files, kept = (list(column) for column in zip(*usable))
        images = LabelledImages(files, [0] * len(files), class_names,
                                [(header.width, header.height) for header in kept],
                                [header.needs_pil for header in kept], formats=[header.image_format for header in kept],
                                max_pixels=max_pixels)
        with progress(None, total=len(images), desc=f"predicting {source.name}", unit="image") as bar:
            probabilities = predict_images(Predictor(model, info, batch_size), images, bar=bar)
        failed = np.isnan(probabilities).any(axis=1)
        skipped += [(path, decode_failure(path, max_pixels)) for path, bad in zip(files, failed) if bad]
        usable = [pair for pair, bad in zip(usable, failed) if not bad]
        probabilities = probabilities[~failed]
    unlike = [doubt(info, header.width, header.height, header.image_format, header.grayscale, header.frames)
              for _, header in usable]
    predicted = uncertain = np.zeros(0)
    if usable:  # a predictions.csv of its header alone would be results that hold none
        predicted, uncertain = write_predictions(out_dir / PREDICTIONS_FILE, folder, [path for path, _ in usable],
                                                 probabilities, class_names, info.rule(), unlike)
    unreadable = write_unreadable(out_dir, folder, skipped, warn=bool(usable))  # none: the error line says it
    answer = None
    if alone and usable:  # one image given: its answer in the app's words
        verdict = "Uncertain" if uncertain[0] else class_names[predicted[0]]
        reason = info.rule().reason(probabilities[0], class_names, unlike[0] is not None).rstrip(".")
        answer = f"{source.name}: {verdict}. {reason}." + (f" Unfamiliar: {unlike[0]}." if unlike[0] else "")
    return PredictionSummary(out_dir, {name: int(np.sum(predicted == index)) for index, name in enumerate(class_names)},
                             int(np.sum(uncertain)), sum(reason is not None for reason in unlike), unreadable,
                             len(masks), answer)
