"""Evaluation plots as PNG files: scikit-learn's displays drawn on a bare ``matplotlib.figure.Figure``
(it saves through Agg by itself: no pyplot, no backend switch, no figure leaked).
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from PIL import Image
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

from realvsai.cli import plural
from realvsai.config import CROSS_ENTROPY, MAX_IMAGE_PIXELS
from realvsai.files import atomic_write_bytes
from realvsai.images import ImageDecodeError, load_rgb
from realvsai.metrics import CALIBRATION_BINS, threshold_metrics

logger = logging.getLogger(__name__)

DPI = 120
THUMBNAIL_SIDE = 256  # the error grid shows each image at most this big, so huge photos cost little
_LINE_NAMES = {"jpeg": "JPEG re-compression (quality)", "blur": "Gaussian blur (σ)", "downscale": "downscale (scale)"}
_POINT_LABELS = {"jpeg": "q{:g}", "blur": "σ{:g}", "downscale": "×{:g}"}


@dataclass(frozen=True)
class ErrorExample:
    """One wrongly classified image for the error grid."""

    file: Path
    true_name: str
    predicted_name: str
    confidence: float  # probability the model gave its (wrong) predicted class
    name: str | None = None  # as predictions.csv names it (sources apart: a/test/FAKE/00001.png); else the file's


def _save(figure: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


def plot_confusion_matrix(labels: Sequence[int], predicted: Sequence[int], class_names: Sequence[str],
                          path: Path) -> Path:
    """Counts and row-normalised rates (recall on the diagonal) side by side."""
    side = max(4.0, 0.9 * len(class_names) + 2.5)
    figure = Figure(figsize=(2 * side + 1, side), layout="constrained")
    for axes, normalize, subtitle, values_format in zip(
            figure.subplots(1, 2), (None, "true"), ("counts", "row-normalised (recall on the diagonal)"),
            (",d", ".2f")):
        ConfusionMatrixDisplay.from_predictions(
            labels, predicted, labels=list(range(len(class_names))), display_labels=list(class_names),
            normalize=normalize, values_format=values_format, cmap="Blues", ax=axes,
            xticks_rotation=45 if len(class_names) > 3 else "horizontal")
        axes.set(xlabel="predicted class", ylabel="true class", title=subtitle)
    figure.suptitle(f"Confusion matrix ({plural(len(labels), 'image')})")
    return _save(figure, path)


def _curves(display: type[RocCurveDisplay] | type[PrecisionRecallDisplay], labels: Sequence[int],
            probabilities: np.ndarray, class_names: Sequence[str], positive_index: int,
            title: str) -> tuple[Figure, list]:
    """One curve of P(positive) for two classes, one-vs-rest for more; a class with one side only gets none."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    figure = Figure(figsize=(6, 5.5), layout="constrained")
    axes = figure.add_subplot()
    binary = len(class_names) == 2
    drawn = []
    for index in [positive_index] if binary else range(len(class_names)):
        truth = labels == index
        if truth.all() or not truth.any():
            logger.warning("%s: none for %s, the labels hold only one side of it", title, class_names[index])
            continue
        # ROC's chance line is one diagonal for every class; precision-recall's is each class's share of images.
        chance = display is PrecisionRecallDisplay or not drawn
        drawn.append(display.from_predictions(truth, probabilities[:, index], ax=axes, plot_chance_level=chance,
                                              name=class_names[index] + ("" if binary else " vs rest")))
    if not drawn:
        axes.text(0.5, 0.5, "undefined: the labels hold one class only", ha="center", va="center")
    else:  # scikit-learn's labels add "(Positive label: 1)", the one-vs-rest truth's encoding
        axes.set(**({"xlabel": "false positive rate", "ylabel": "true positive rate (recall)"}
                    if display is RocCurveDisplay else {"xlabel": "recall", "ylabel": "precision"}))
    axes.set_title(title if binary else f"{title}s, one vs rest")
    axes.grid(alpha=0.3)
    return figure, drawn


def plot_roc_curves(labels: Sequence[int], probabilities: np.ndarray, class_names: Sequence[str], path: Path,
                    positive_index: int = 1) -> Path:
    """ROC curve(s) with the AUC in the legend."""
    return _save(_curves(RocCurveDisplay, labels, probabilities, class_names, positive_index, "ROC curve")[0], path)


def plot_precision_recall_curves(labels: Sequence[int], probabilities: np.ndarray, class_names: Sequence[str],
                                 path: Path, positive_index: int = 1, threshold: float | None = None) -> Path:
    """Precision-recall curve(s) with average precision in the legend; two classes mark ``threshold``."""
    figure, drawn = _curves(PrecisionRecallDisplay, labels, probabilities, class_names, positive_index,
                            "Precision-recall curve")
    if threshold is not None and len(class_names) == 2 and drawn:
        at = threshold_metrics(np.asarray(labels), np.asarray(probabilities)[:, positive_index], positive_index,
                               threshold)
        drawn[0].ax_.plot(at["recall"], at["precision"], "o", color="black", label=f"threshold {threshold:.3f}")
        drawn[0].ax_.legend(loc="lower left", fontsize=8)
    return _save(figure, path)


def plot_reliability_diagram(labels: Sequence[int], probabilities: np.ndarray, ece: float, path: Path) -> Path:
    """Accuracy against top-class confidence in equal-width bins (the ECE's gaps), the bin sizes below."""
    probabilities = np.asarray(probabilities)
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == np.asarray(labels)).astype(int)
    figure = Figure(figsize=(6, 7), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    CalibrationDisplay.from_predictions(correct, confidence, n_bins=CALIBRATION_BINS, strategy="uniform", ax=top,
                                        name="model", pos_label=1)
    top.set(ylim=(0, 1), xlabel="", ylabel="accuracy",
            title=f"Reliability diagram, ECE = {ece:.4f} ({CALIBRATION_BINS} bins)")
    top.grid(alpha=0.3)
    bottom.hist(confidence, bins=np.linspace(0.0, 1.0, CALIBRATION_BINS + 1), color="grey", edgecolor="black")
    bottom.set(xlim=(0, 1), xlabel="confidence (probability of the predicted class)", ylabel="images")
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
    axes.set(ylabel="images", title="Class distribution per split")
    axes.margins(y=0.12)
    axes.legend(fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def plot_confident_errors(examples: Sequence[ErrorExample], path: Path, columns: int = 4,
                          max_pixels: int = MAX_IMAGE_PIXELS) -> Path:
    """A grid of wrongly classified images, titled true / predicted (probability); says so when there are none.
    Each image is decoded under ``max_pixels`` (the limit it was read under), a large JPEG reduced."""
    if not examples:
        figure = Figure(figsize=(5, 2))
        figure.text(0.5, 0.5, "No errors: every image was classified correctly.", ha="center", va="center", fontsize=12)
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
        axes.set(xticks=[], yticks=[])
        try:
            thumbnail = Image.fromarray(load_rgb(example.file, max_pixels, THUMBNAIL_SIDE))
            thumbnail.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            # nearest keeps 32-pixel images sharp instead of smoothing away what the model saw
            axes.imshow(np.asarray(thumbnail), interpolation="nearest")
        except (ImageDecodeError, OSError) as error:
            logger.warning("cannot show %s in the error grid: %s", example.file, error)
            axes.text(0.5, 0.5, "unreadable", ha="center", va="center")
        name = example.name or example.file.name
        name = name if len(name) <= 28 else name[:12] + "…" + name[-15:]
        axes.set_title(f"{name}\ntrue {example.true_name}\npredicted {example.predicted_name} "
                       f"({example.confidence:.3f})", fontsize=8)
    figure.suptitle("Most confident errors", y=1 - 0.1 / height, va="top")
    return _save(figure, path)


def robustness_figure(clean_accuracy: float, accuracies: Mapping[str, Mapping[float, float]]) -> Figure:
    """Accuracy against strength step (0 = clean), one line per perturbation, each point named by its strength."""
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.subplots()
    for line, (kind, by_strength) in enumerate(accuracies.items()):
        values = [clean_accuracy, *by_strength.values()]
        axes.plot(range(len(values)), values, marker="o", label=_LINE_NAMES[kind])
        for step, (strength, value) in enumerate(by_strength.items(), start=1):
            # Lines often run close together: each line's labels sit at its own height.
            axes.annotate(_POINT_LABELS[kind].format(strength), (step, value), textcoords="offset points",
                          xytext=(5, 6 - 12 * line), fontsize=8)
    axes.axhline(clean_accuracy, color="grey", linestyle=":", linewidth=1)
    axes.set(xlabel="strength step (0 = clean)", ylabel="accuracy", ylim=(0, 1.02), title="Accuracy under perturbation")
    axes.set_xticks(range(1 + max((len(values) for values in accuracies.values()), default=0)))
    axes.legend()
    return figure


def plot_robustness(clean_accuracy: float, accuracies: Mapping[str, Mapping[float, float]], path: Path) -> Path:
    """Saves ``robustness_figure`` as ``path``."""
    return _save(robustness_figure(clean_accuracy, accuracies), path)


def plot_training_curves(rows: Sequence[Mapping[str, Any]], path: Path, fine_tune_start: int | None = None) -> Path:
    """Cross-entropy (and the loss: it plus the L2 penalty), accuracy, precision, recall, AUC and F1 per epoch
    (history.csv's rows), with a line at ``fine_tune_start`` (from 1)."""
    figure = Figure(figsize=(15, 8), layout="constrained")
    axes = figure.subplots(2, 3).ravel()
    epochs = [row["epoch"] for row in rows]
    panels = ((CROSS_ENTROPY, "loss"), ("accuracy",), ("precision",), ("recall",), ("auc",), ("f1",))
    for axis, metrics in zip(axes, panels):
        for metric, line in zip(metrics, ("-", ":")):
            named = "" if metric == metrics[0] else f" {metric}"
            for key, label, style in ((metric, "training", "o"), (f"val_{metric}", "validation", "s")):
                values = [row.get(key, math.nan) for row in rows]
                if not all(math.isnan(value) for value in values):
                    axis.plot(epochs, values, line + style, label=label + named, markersize=3)
        if fine_tune_start is not None:
            axis.axvline(fine_tune_start - 0.5, color="gray", linestyle="--", label="fine-tuning starts")
        axis.set_title(metrics[0].replace("_", "-"))
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return _save(figure, path)
