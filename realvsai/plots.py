"""Evaluation plots as PNG files, drawn on ``matplotlib.figure.Figure`` with the Agg canvas.

No pyplot: nothing global is created, so plotting from a training run, a test or the app leaks
no figure and needs no display. Every file is written atomically. The numbers come from
scikit-learn (curves, confusion matrices) or from ``realvsai.evaluation`` (calibration bins).

    plot_confusion_matrix(labels, predicted, class_names, Path("confusion_matrix.png"))
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

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


def _new_figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    figure = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(figure)  # Agg, whatever backend pyplot may have chosen elsewhere
    return figure


def _save(figure: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


def plot_confusion_matrix(labels: Sequence[int], predicted: Sequence[int], class_names: Sequence[str],
                          path: Path, title: str = "Confusion matrix") -> Path:
    """Counts and row-normalised rates (each true class sums to 1) side by side.

    Rows are the true classes, columns the predicted ones, both in ``class_names`` order.
    """
    class_ids = list(range(len(class_names)))
    counts = confusion_matrix(labels, predicted, labels=class_ids)
    rates = confusion_matrix(labels, predicted, labels=class_ids, normalize="true")
    side = max(4.0, 0.9 * len(class_names) + 2.5)
    figure = _new_figure(2 * side + 1, side)
    font_size = max(6, 12 - len(class_names) // 2)
    for axes, matrix, subtitle, text in (
        (figure.add_subplot(1, 2, 1), counts, "counts", "{:,.0f}"),
        (figure.add_subplot(1, 2, 2), rates, "row-normalised (recall on the diagonal)", "{:.2f}"),
    ):
        upper = matrix.max() if matrix.max() > 0 else 1
        image = axes.imshow(matrix, cmap="Blues", vmin=0, vmax=upper)
        figure.colorbar(image, ax=axes, shrink=0.8)
        for row, column in np.ndindex(matrix.shape):
            value = matrix[row, column]
            axes.text(column, row, text.format(value), ha="center", va="center", fontsize=font_size,
                      color="white" if value > upper / 2 else "black")
        axes.set_xticks(class_ids, list(class_names), rotation=45 if len(class_names) > 3 else 0, ha="right"
                        if len(class_names) > 3 else "center")
        axes.set_yticks(class_ids, list(class_names))
        axes.set_xlabel("predicted class")
        axes.set_ylabel("true class")
        axes.set_title(subtitle)
    figure.suptitle(f"{title} ({len(labels):,} images)")
    return _save(figure, path)


def _one_vs_rest(labels: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str],
                 positive_index: int | None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(class name, is-that-class, score) per curve: the positive class alone for binary problems."""
    indices = [positive_index if positive_index is not None else 1] if len(class_names) == 2 else range(
        len(class_names))
    curves = []
    for index in indices:
        truth = labels == index
        if truth.all() or not truth.any():
            logger.warning("no curve for %s: the labels hold only one side of it", class_names[index])
            continue
        curves.append((class_names[index], truth, probabilities[:, index]))
    return curves


def plot_roc_curves(labels: Sequence[int], probabilities: np.ndarray, class_names: Sequence[str], path: Path,
                    positive_index: int | None = None) -> Path:
    """ROC curve of P(positive class) for two classes, one-vs-rest curves for more; AUC in the legend."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    figure = _new_figure(6, 5.5)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance (AUC 0.5)")
    curves = _one_vs_rest(labels, probabilities, class_names, positive_index)
    for name, truth, score in curves:
        false_positive_rate, true_positive_rate, _ = roc_curve(truth, score)
        auc = roc_auc_score(truth, score)
        suffix = "" if len(class_names) == 2 else " vs rest"
        axes.plot(false_positive_rate, true_positive_rate, linewidth=2, label=f"{name}{suffix} (AUC {auc:.3f})")
    if not curves:
        axes.text(0.5, 0.5, "undefined: the labels hold one class only", ha="center", va="center")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate (recall)")
    axes.set_title("ROC curve" if len(class_names) == 2 else "ROC curves, one vs rest")
    axes.legend(loc="lower right", fontsize=8)
    axes.grid(alpha=0.3)
    return _save(figure, path)


def plot_precision_recall_curves(labels: Sequence[int], probabilities: np.ndarray, class_names: Sequence[str],
                                 path: Path, positive_index: int | None = None,
                                 threshold: float | None = None) -> Path:
    """Precision-recall curve(s) with average precision in the legend and each class's base rate dashed.

    For two classes, ``threshold`` (on P(positive)) is marked with a dot.
    """
    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    figure = _new_figure(6, 5.5)
    axes = figure.add_subplot()
    curves = _one_vs_rest(labels, probabilities, class_names, positive_index)
    for name, truth, score in curves:
        precision, recall, thresholds = precision_recall_curve(truth, score)
        average = average_precision_score(truth, score)
        suffix = "" if len(class_names) == 2 else " vs rest"
        (line,) = axes.step(recall, precision, where="post", linewidth=2, label=f"{name}{suffix} (AP {average:.3f})")
        axes.axhline(truth.mean(), linestyle="--", linewidth=1, color=line.get_color(), alpha=0.6)
        if threshold is not None and len(class_names) == 2 and len(thresholds):
            # thresholds ascend; the first at or above the chosen one is the point it gives
            point = min(int(np.searchsorted(thresholds, threshold, side="left")), len(thresholds) - 1)
            axes.plot(recall[point], precision[point], "o", color="black",
                      label=f"threshold {threshold:.3f}")
    if not curves:
        axes.text(0.5, 0.5, "undefined: the labels hold one class only", ha="center", va="center")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_title("Precision-recall curve (dashed: base rate)" if len(class_names) == 2
                   else "Precision-recall curves, one vs rest (dashed: base rates)")
    if curves:
        axes.legend(loc="lower left", fontsize=8)
    axes.grid(alpha=0.3)
    return _save(figure, path)


def plot_reliability_diagram(bins: Sequence[Mapping[str, float | int | None]], ece: float, path: Path) -> Path:
    """Accuracy against top-class confidence per bin (the diagonal is perfect calibration), and bin sizes.

    Args:
        bins: ``realvsai.evaluation.calibration_bins`` output: lower, upper, count, confidence, accuracy.
        ece: the expected calibration error of those bins.
    """
    figure = _new_figure(6, 7)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    lower = np.array([entry["lower"] for entry in bins], dtype=float)
    width = np.array([entry["upper"] for entry in bins], dtype=float) - lower
    filled = [index for index, entry in enumerate(bins) if entry["count"]]
    accuracy = np.array([bins[index]["accuracy"] for index in filled], dtype=float)
    confidence = np.array([bins[index]["confidence"] for index in filled], dtype=float)
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    top.bar(lower[filled], accuracy, width=width[filled], align="edge", edgecolor="black", color="tab:blue",
            alpha=0.8, label="accuracy")
    # The gap between mean confidence and accuracy is what the ECE adds up (weighted by bin size).
    top.bar(lower[filled], confidence - accuracy, bottom=accuracy, width=width[filled], align="edge",
            color="tab:red", alpha=0.3, edgecolor="tab:red", hatch="//", label="gap to mean confidence")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"Reliability diagram, ECE = {ece:.4f} ({len(bins)} bins)")
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    bottom.bar(lower, [entry["count"] for entry in bins], width=width, align="edge", color="grey", edgecolor="black")
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
    figure = _new_figure(max(6.0, 1.2 * len(class_names) * max(1, len(splits)) / 2 + 3), 4.5)
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
        figure = _new_figure(5, 2)
        axes = figure.add_subplot()
        axes.axis("off")
        axes.text(0.5, 0.5, "No errors: every image was classified correctly.", ha="center", va="center",
                  fontsize=12)
        return _save(figure, path)
    columns = min(columns, len(examples))
    rows = -(-len(examples) // columns)
    height = 3.0 * rows + 0.8
    figure = _new_figure(2.6 * columns, height, layout=None)
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
