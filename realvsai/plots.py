"""Evaluation plots as PNG files: scikit-learn's displays drawn on ``matplotlib.figure.Figure``.

No pyplot and no backend switch: a bare ``Figure`` saves a PNG through Agg by itself, so plotting
from a training run, a test or the app leaks no figure and needs no display. Every file is written
atomically.

    plot_confusion_matrix(labels, predicted, class_names, Path("confusion_matrix.png"))
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

from realvsai.files import atomic_write_bytes
from realvsai.images import ImageDecodeError, load_rgb

logger = logging.getLogger(__name__)

DPI = 120
_THUMBNAIL_SIDE = 256  # the error grid shows each image at most this big, so huge photos cost little


@dataclass(frozen=True)
class ErrorExample:
    """One wrongly classified image for the error grid."""

    file: Path
    true_name: str
    predicted_name: str
    confidence: float  # probability the model gave its (wrong) predicted class


def _save(figure: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


def plot_confusion_matrix(labels: Sequence[int], predicted: Sequence[int], class_names: Sequence[str],
                          path: Path) -> Path:
    """Counts and row-normalised rates (each true class sums to 1, recall on the diagonal) side by side."""
    side = max(4.0, 0.9 * len(class_names) + 2.5)
    figure = Figure(figsize=(2 * side + 1, side), layout="constrained")
    for axes, normalize, subtitle, values_format in (
        (figure.add_subplot(1, 2, 1), None, "counts", ",d"),
        (figure.add_subplot(1, 2, 2), "true", "row-normalised (recall on the diagonal)", ".2f"),
    ):
        ConfusionMatrixDisplay.from_predictions(
            labels, predicted, labels=list(range(len(class_names))), display_labels=list(class_names),
            normalize=normalize, values_format=values_format, cmap="Blues", ax=axes,
            xticks_rotation=45 if len(class_names) > 3 else "horizontal")
        axes.set_xlabel("predicted class")
        axes.set_ylabel("true class")
        axes.set_title(subtitle)
    figure.suptitle(f"Confusion matrix ({len(labels):,} images)")
    return _save(figure, path)


def _curves(display: type[RocCurveDisplay] | type[PrecisionRecallDisplay], labels: Sequence[int],
            probabilities: np.ndarray, class_names: Sequence[str], positive_index: int | None,
            title: str) -> tuple[Figure, list]:
    """One curve of P(positive) for two classes, one-vs-rest curves for more, each with its chance level.

    A class whose labels hold only one side gets no curve (it is undefined) and a warning.
    """
    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    figure = Figure(figsize=(6, 5.5), layout="constrained")
    axes = figure.add_subplot()
    binary = len(class_names) == 2
    drawn = []
    for index in [1 if positive_index is None else positive_index] if binary else range(len(class_names)):
        truth = labels == index
        if truth.all() or not truth.any():
            logger.warning("no curve for %s: the labels hold only one side of it", class_names[index])
            continue
        drawn.append(display.from_predictions(truth, probabilities[:, index], ax=axes, plot_chance_level=True,
                                              name=class_names[index] + ("" if binary else " vs rest")))
    if not drawn:
        axes.text(0.5, 0.5, "undefined: the labels hold one class only", ha="center", va="center")
    axes.set_title(title if binary else f"{title}s, one vs rest")
    axes.grid(alpha=0.3)
    return figure, drawn


def plot_roc_curves(labels: Sequence[int], probabilities: np.ndarray, class_names: Sequence[str], path: Path,
                    positive_index: int | None = None) -> Path:
    """ROC curve of P(positive class) for two classes, one-vs-rest curves for more; AUC in the legend."""
    figure, _ = _curves(RocCurveDisplay, labels, probabilities, class_names, positive_index, "ROC curve")
    return _save(figure, path)


def plot_precision_recall_curves(labels: Sequence[int], probabilities: np.ndarray, class_names: Sequence[str],
                                 path: Path, positive_index: int | None = None,
                                 threshold: float | None = None) -> Path:
    """Precision-recall curve(s) with average precision in the legend and each base rate as chance level.

    For two classes, ``threshold`` (on P(positive)) is marked with a dot.
    """
    figure, drawn = _curves(PrecisionRecallDisplay, labels, probabilities, class_names, positive_index,
                            "Precision-recall curve")
    if threshold is not None and len(class_names) == 2 and drawn:
        positive = 1 if positive_index is None else positive_index
        predicted = np.asarray(probabilities)[:, positive] >= threshold
        truth = np.asarray(labels) == positive
        true_positives = int((predicted & truth).sum())
        precision = true_positives / max(1, int(predicted.sum()))
        drawn[0].ax_.plot(true_positives / int(truth.sum()), precision, "o", color="black",
                          label=f"threshold {threshold:.3f}")
        drawn[0].ax_.legend(loc="lower left", fontsize=8)
    return _save(figure, path)


def plot_reliability_diagram(labels: Sequence[int], probabilities: np.ndarray, ece: float, path: Path,
                             num_bins: int = 15) -> Path:
    """Accuracy against top-class confidence in equal-width bins (the diagonal is perfect calibration).

    scikit-learn's calibration curve of "the predicted class is right" against the confidence in it
    is exactly the top-class reliability diagram whose gaps the ECE adds up; below it, the bin sizes.
    """
    probabilities = np.asarray(probabilities)
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == np.asarray(labels)).astype(int)
    figure = Figure(figsize=(6, 7), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    CalibrationDisplay.from_predictions(correct, confidence, n_bins=num_bins, strategy="uniform", ax=top,
                                        name="model", pos_label=1)
    top.set_ylim(0, 1)
    top.set_xlabel("")
    top.set_ylabel("accuracy")
    top.set_title(f"Reliability diagram, ECE = {ece:.4f} ({num_bins} bins)")
    top.grid(alpha=0.3)
    bottom.hist(confidence, bins=np.linspace(0.0, 1.0, num_bins + 1), color="grey", edgecolor="black")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (probability of the predicted class)")
    bottom.set_ylabel("images")
    return _save(figure, path)


def plot_class_distribution(counts: Mapping[str, Mapping[str, int]], path: Path) -> Path:
    """Grouped bars: images per class (groups) and split (bars), with the numbers on the bars."""
    splits = list(counts)
    class_names = list(dict.fromkeys(name for per_class in counts.values() for name in per_class))  # label order
    positions = np.arange(len(class_names))
    width = 0.8 / max(1, len(splits))
    figure = Figure(figsize=(max(6.0, 1.2 * len(class_names) * max(1, len(splits)) / 2 + 3), 4.5),
                    layout="constrained")
    axes = figure.add_subplot()
    for offset, split in enumerate(splits):
        values = [int(counts[split].get(name, 0)) for name in class_names]
        bars = axes.bar(positions + (offset - (len(splits) - 1) / 2) * width, values, width, label=split)
        axes.bar_label(bars, labels=[f"{value:,}" for value in values], fontsize=7, padding=2)
    axes.set_xticks(positions, class_names, rotation=45 if len(class_names) > 4 else 0)
    axes.set_ylabel("images")
    axes.set_title("Class distribution per split")
    axes.margins(y=0.12)
    axes.legend(fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def _thumbnail(path: Path) -> np.ndarray | None:
    try:
        image = Image.fromarray(load_rgb(path))
    except (ImageDecodeError, OSError) as error:
        logger.warning("cannot show %s in the error grid: %s", path, error)
        return None
    image.thumbnail((_THUMBNAIL_SIDE, _THUMBNAIL_SIDE))
    return np.asarray(image)


def plot_confident_errors(examples: Sequence[ErrorExample], path: Path, columns: int = 4) -> Path:
    """A grid of wrongly classified images, most confident first, titled true / predicted (probability).

    With no example the image just says so, so the file always exists.
    """
    if not examples:
        figure = Figure(figsize=(5, 2))
        axes = figure.add_subplot()
        axes.axis("off")
        axes.text(0.5, 0.5, "No errors: every image was classified correctly.", ha="center", va="center",
                  fontsize=12)
        return _save(figure, path)
    columns = min(columns, len(examples))
    rows = -(-len(examples) // columns)
    height = 3.0 * rows + 0.8
    figure = Figure(figsize=(2.6 * columns, height))
    # Fixed spacing in inches: constrained layout costs seconds on a 4x4 grid, and every tile is alike.
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.1 / height, top=1 - 1.05 / height, wspace=0.08,
                           hspace=0.25)
    grid = figure.subplots(rows, columns, squeeze=False).ravel()
    for axes in grid[len(examples):]:
        axes.axis("off")
    for axes, example in zip(grid, examples):
        axes.set_xticks([])
        axes.set_yticks([])
        pixels = _thumbnail(example.file)
        if pixels is None:
            axes.text(0.5, 0.5, "unreadable", ha="center", va="center")
        else:
            # nearest keeps 32-pixel images sharp instead of smoothing away what the model saw
            axes.imshow(pixels, interpolation="nearest")
        name = example.file.name
        name = name if len(name) <= 28 else name[:12] + "…" + name[-12:]
        axes.set_title(f"{name}\ntrue {example.true_name}\npredicted {example.predicted_name} "
                       f"({example.confidence:.3f})", fontsize=8)
    figure.suptitle("Most confident errors", y=1 - 0.1 / height, va="top")
    return _save(figure, path)
