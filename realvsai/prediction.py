"""Predicting a folder of images of unknown class, and the per-file predictions.csv that --evaluate writes too.

    DIR/**/*.jpg ...   ->   OUT/predictions.csv   file, predicted, probability_<class>..., uncertain, unfamiliar
                            OUT/unreadable.csv    file, reason (not images, broken, too many pixels)

Images stream through ``data.make_dataset`` (no cache) into ``model.predict``, batch by batch, so a
folder of any size needs the memory of a few batches. Each file carries its index through the
pipeline: a file that fails to decode is dropped there, and the index says which one it was, so it
is listed as unreadable instead of shifting every later row onto the wrong file.

``predicted`` and ``uncertain`` follow the model's ``decision.DecisionRule`` (model.json's decision
and confidence thresholds), the rule of the app; ``unfamiliar`` names why an image is unlike the
training images (``image_stats.unfamiliar_reason`` against model.json's ``training_images``), and
such an image is always uncertain.

Usage (ModelTraining.py --predict calls this):

    summary = predict_folder(model, model_info, Path("my_images"), Path("models/run1/predictions-my_images"))
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from realvsai import images as image_io
from realvsai.config import MAX_IMAGE_PIXELS, PREDICTIONS_FILE, UNREADABLE_FILE
from realvsai.decision import DecisionRule
from realvsai.errors import UserError
from realvsai.files import list_images, write_csv
from realvsai.image_stats import unfamiliar_reason
from realvsai.inference import training_profile

if TYPE_CHECKING:  # TensorFlow is imported only when predicting
    import keras

    from realvsai.data import LabelledImages

logger = logging.getLogger(__name__)

FALLBACK_IMAGE_SIZE = 224  # resize target for mixed sizes when neither model.json nor the model says


@dataclass(frozen=True)
class PredictionSummary:
    """What ``predict_folder`` did, for the script's summary line."""

    out_dir: Path
    counts: dict[str, int]  # images per predicted class, uncertain ones included
    num_uncertain: int
    num_unfamiliar: int
    unreadable: list[tuple[str, str]]  # (file relative to the folder, reason)

    @property
    def num_images(self) -> int:
        return sum(self.counts.values())

    def describe(self, folder: Path) -> str:
        """One line: ``predicted 2,000 images in DIR: 1,200 FAKE, 800 REAL (35 uncertain) ...``."""
        classes = ", ".join(f"{count:,} {name}" for name, count in self.counts.items())
        line = f"predicted {self.num_images:,} images in {folder}: {classes} ({self.num_uncertain:,} uncertain"
        line += f", {self.num_unfamiliar:,} unlike the training images)" if self.num_unfamiliar else ")"
        line += f"; predictions in {self.out_dir / PREDICTIONS_FILE}"
        if self.unreadable:
            line += f"; {len(self.unreadable):,} unreadable files listed in {self.out_dir / UNREADABLE_FILE}"
        return line


# ---------------------------------------------------------------------------------------------
# Predicting


def model_image_size(model: keras.Model, model_info: Mapping[str, Any]) -> int:
    """The side mixed-size images are resized to: model.json's, else the model's resize layer's."""
    try:
        return int(model_info.get("image_size") or model.get_layer("resize").height)
    except ValueError:
        return FALLBACK_IMAGE_SIZE


def predict_images(model: keras.Model, images: LabelledImages, batch_size: int, image_size: int,
                   *, cache_bytes: int = 0, verbose: int | str = 0, input_mode: str = "resize",
                   transform: Callable[[Any], Any] | None = None) -> np.ndarray:
    """Class probabilities (images, classes) in the images' file order; NaN rows for files that failed to decode.

    Args:
        model: a classifier taking raw RGB 0..255 float32 images and returning softmax probabilities.
        images: ``data.scan_images`` output (its labels are not used).
        batch_size: images per forward pass.
        image_size: resize target when the images differ in size.
        cache_bytes: ``data.make_dataset``'s; 0 streams, one pass needs no cache.
        verbose: ``model.predict``'s progress bar ("auto", 1) or none (0).
        input_mode: model.json's ``input_mode``; "crops" averages the softmax over ``data.grid_crops``.
        transform: ``data.make_dataset``'s, applied to each decoded image (``robustness.perturbation``).
    """
    import keras

    from realvsai.config import CROP_GRID
    from realvsai.data import make_dataset
    from realvsai.model import crop_averaging

    # The labels become file indices: the pipeline drops a file it cannot decode, and the index
    # that comes out beside each row says which file the row belongs to.
    indexed = dataclasses.replace(images, labels=list(range(len(images))))
    crops = input_mode == "crops"
    dataset = make_dataset(indexed, batch_size=batch_size, image_size=image_size, shuffle=False,
                           cache_bytes=cache_bytes, crops="grid" if crops else None, transform=transform)
    if crops:
        model = crop_averaging(model, image_size)
    pixels = keras.Input((CROP_GRID**2, image_size, image_size, 3) if crops else (None, None, 3), name="pixels")
    index = keras.Input((), dtype="int32", name="index")
    with_index = keras.Model([pixels, index], [model(pixels), keras.layers.Identity()(index)])
    with warnings.catch_warnings():
        # The pipeline skips unreadable files, so its length is unknown and Keras warns when it ends.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        rows, kept = with_index.predict(dataset.map(lambda batch, indices: ((batch, indices),)), verbose=verbose)
    probabilities = np.full((len(images), rows.shape[-1]), np.nan, dtype=np.float32)
    probabilities[np.asarray(kept, dtype=np.int64)] = np.asarray(rows, dtype=np.float32)
    return probabilities


def unfamiliar_reasons(model_info: Mapping[str, Any], sizes: Sequence[tuple[int, int]],
                       formats: Sequence[str]) -> list[str | None]:
    """Per image, why it is unlike model.json's ``training_images``; all None when model.json has no profile.

    ``sizes`` (width, height) and ``formats`` come from the headers the scan already read, so this reads
    no file; without formats (an older scan) only the size is compared.
    """
    profile = training_profile(model_info)
    formats = list(formats) or [None] * len(sizes)
    return [unfamiliar_reason(profile, width, height, image_format)
            for (width, height), image_format in zip(sizes, formats, strict=True)]


# ---------------------------------------------------------------------------------------------
# The file


def relative_name(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` with forward slashes (the path itself when outside it)."""
    try:
        return Path(path).relative_to(folder).as_posix()
    except ValueError:
        return str(path)


def write_predictions(path: Path, folder: Path, files: Sequence[Path], probabilities: np.ndarray,
                      class_names: Sequence[str], rule: DecisionRule, unfamiliar: Sequence[str | None],
                      true_labels: Sequence[int] | None = None) -> None:
    """predictions.csv: one row per image, the one writer of --predict and --evaluate.

    Columns: ``file`` (relative to ``folder``), ``true`` (only with ``true_labels``), ``predicted``
    (``rule.decide``), ``probability_<class>`` per class (6 decimals), ``uncertain`` (``rule.uncertain``,
    always true for an unfamiliar image) and ``unfamiliar`` (empty, or why the image is unlike the
    training images).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    flagged = np.array([reason is not None for reason in unfamiliar], dtype=bool)
    predicted = rule.decide(probabilities) if len(files) else []
    uncertain = rule.uncertain(probabilities, flagged) if len(files) else []
    header = ["file", *(["true"] if true_labels is not None else []), "predicted",
              *(f"probability_{name}" for name in class_names), "uncertain", "unfamiliar"]
    rows = []
    for index, file in enumerate(files):
        rows.append([relative_name(file, folder),
                     *([class_names[true_labels[index]]] if true_labels is not None else []),
                     class_names[int(predicted[index])],
                     *(f"{value:.6f}" for value in probabilities[index]),
                     str(bool(uncertain[index])).lower(), unfamiliar[index] or ""])
    write_csv(Path(path), header, rows)


# ---------------------------------------------------------------------------------------------
# Entry point


def predict_folder(model: keras.Model, model_info: Mapping[str, Any], folder: Path, out_dir: Path, *,
                   batch_size: int = 64, max_pixels: int = MAX_IMAGE_PIXELS,
                   verbose: int | str = 0) -> PredictionSummary:
    """Predicts every image in ``folder`` and its sub-folders into ``out_dir/predictions.csv``.

    Files that are not images, are broken or have too many pixels are listed in
    ``out_dir/unreadable.csv`` (file, reason) and the others are predicted all the same.

    Args:
        model: the classifier (raw RGB 0..255 in, softmax out).
        model_info: its model.json (``class_names``, ``image_size``, thresholds, ``training_images``).
        folder: the images, at any depth.
        out_dir: where the two files go (created); one already holding predictions.csv is refused.
        batch_size: images per forward pass.
        max_pixels: larger images are listed as unreadable, undecoded (decompression bombs).
        verbose: ``model.predict``'s progress bar.

    Raises:
        UserError: if the folder is missing or holds no image file, or ``out_dir`` already has predictions.
    """
    from realvsai.data import LabelledImages

    folder, out_dir = Path(folder), Path(out_dir)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder. Give --input the folder of images to predict.")
    if (out_dir / PREDICTIONS_FILE).exists():
        raise UserError(f"{out_dir / PREDICTIONS_FILE} already exists and is kept. Choose another --out folder.")
    class_names = [str(name) for name in model_info["class_names"]]
    skipped: list[tuple[str, str]] = []
    candidates = list_images(folder, recursive=True, skipped=skipped)
    unreadable = [(relative_name(Path(path), folder), reason) for path, reason in skipped]
    headers = image_io.read_headers(candidates, max_pixels, f"checking {folder.name}")
    usable = [(path, header) for path, header in zip(candidates, headers) if isinstance(header, image_io.ImageHeader)]
    unreadable += [(relative_name(path, folder), header) for path, header in zip(candidates, headers)
                   if isinstance(header, str)]
    probabilities = np.zeros((0, len(class_names)), np.float32)
    files: list[Path] = [path for path, _ in usable]
    kept_headers = [header for _, header in usable]
    if usable:
        images = LabelledImages(files, [0] * len(files), class_names,
                                [(header.width, header.height) for header in kept_headers],
                                [header.needs_pil for header in kept_headers],
                                formats=[header.image_format for header in kept_headers])
        probabilities = predict_images(model, images, batch_size, model_image_size(model, model_info),
                                       verbose=verbose, input_mode=model_info.get("input_mode", "resize"))
        failed = np.isnan(probabilities).any(axis=1)
        for index in np.flatnonzero(failed):
            reason = image_io.image_problem(files[index], max_pixels) or "could not be decoded"
            unreadable.append((relative_name(files[index], folder), reason))
        files = [path for path, bad in zip(files, failed) if not bad]
        kept_headers = [header for header, bad in zip(kept_headers, failed) if not bad]
        probabilities = probabilities[~failed]
    if not files and not unreadable:
        raise UserError(f"{folder} holds no image file (names ending in .jpg, .jpeg, .png, .bmp or .webp).")
    rule = DecisionRule.from_model_info(model_info)
    unfamiliar = unfamiliar_reasons(model_info, [(header.width, header.height) for header in kept_headers],
                                    [header.image_format for header in kept_headers])
    out_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(out_dir / PREDICTIONS_FILE, folder, files, probabilities, class_names, rule, unfamiliar)
    unreadable.sort()
    if unreadable:
        write_csv(out_dir / UNREADABLE_FILE, ["file", "reason"], unreadable)
        logger.warning("%d files could not be read; they are listed in %s", len(unreadable), out_dir / UNREADABLE_FILE)
    predicted = rule.decide(probabilities) if files else np.zeros(0, np.int64)
    flagged = np.array([reason is not None for reason in unfamiliar], dtype=bool)
    uncertain = rule.uncertain(probabilities, flagged) if files else np.zeros(0, bool)
    return PredictionSummary(out_dir, {name: int(np.sum(predicted == index)) for index, name in enumerate(class_names)},
                             int(np.sum(uncertain)), int(flagged.sum()), unreadable)
