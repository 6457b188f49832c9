"""Evaluation plots as PNG files: scikit-learn's displays and curves drawn on a bare ``matplotlib.figure.Figure``
(it saves through Agg by itself: no pyplot, no backend switch, no figure leaked). Each stays bounded in size and
readable whatever the number of classes.
"""

from __future__ import annotations

import io
import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import ConfusionMatrixDisplay, auc, average_precision_score, precision_recall_curve, roc_curve

from realvsai.cli import plural, printable
from realvsai.config import CROSS_ENTROPY, MAX_IMAGE_PIXELS, MODEL_FILE
from realvsai.files import atomic_write_bytes
from realvsai.images import ImageDecodeError, load_rgb
from realvsai.metrics import CALIBRATION_BINS, distinct_figures, threshold_metrics

logger = logging.getLogger(__name__)

DPI = 120
THUMBNAIL_SIDE = 256  # the error grid shows each image at most this big, so huge photos cost little
_LINE_NAMES = {"jpeg": "JPEG re-compression (quality)", "blur": "Gaussian blur (σ)", "downscale": "downscale (scale)"}
_POINT_LABELS = {"jpeg": "q{:g}", "blur": "σ{:g}", "downscale": "×{:g}"}
MAX_NAME = 22  # characters of a class name a plot shows; a longer one loses its middle to "…"
MAX_MATRIX_SIDE = 12.0  # inches a confusion-matrix panel grows to (100 classes made a 248-megapixel PNG)
MAX_CELL_VALUES = 25  # classes up to which each confusion-matrix cell shows its number; above, its colour only
MAX_NAMED_CURVES = 10  # one-vs-rest curves up to which each has a colour (tab10's) and a legend entry of its own
WORST_NAMED = 3  # above that, the classes of the lowest AUC or AP named; the others thin and grey, one entry
MAX_BARS_HEIGHT = 20.0  # inches the class-distribution plot grows to
# A class name in a script DejaVu Sans lacks (CJK) draws as boxes, with a warning a character: silenced.
_MISSING_GLYPH = r"Glyph \d+ \(.*\) missing from font"


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
    with warnings.catch_warnings():  # the layout and drawing measure and draw every text here
        warnings.filterwarnings("ignore", _MISSING_GLYPH, UserWarning)
        figure.savefig(buffer, format="png", dpi=DPI)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


def _short(name: str) -> str:
    """``name``, or its start and end around "…" where it is longer than ``MAX_NAME`` characters."""
    if len(name) <= MAX_NAME:
        return name
    tail = (MAX_NAME - 1) // 3
    return name[:MAX_NAME - 1 - tail] + "…" + name[-tail:]


def _name_ticks(count: int, spacing: float) -> tuple[float, range]:
    """The font size of the class names along an axis whose classes lie ``spacing`` points apart, and which of
    them are named: every one, or every n-th where even the smallest font would overlap its neighbours."""
    font = min(10.0, max(6.0, 0.8 * spacing))
    return font, range(0, count, math.ceil(1.2 * font / spacing))


def plot_confusion_matrix(labels: Sequence[int], predicted: Sequence[int], class_names: Sequence[str],
                          path: Path) -> Path:
    """Counts and row-normalised rates (recall on the diagonal) side by side; a panel at most ``MAX_MATRIX_SIDE``
    inches, with each cell's number up to ``MAX_CELL_VALUES`` classes. The rates of a class without images are 0 of
    0: its row is left blank, n/a on the diagonal, as metrics.json's ``per_class`` has its recall."""
    count = len(class_names)
    empty = np.bincount(np.asarray(labels, np.int64), minlength=count) == 0
    side = min(MAX_MATRIX_SIDE, max(4.0, 0.9 * count + 2.5))
    cell = (side - 2.5) * 72 / count  # points a class takes along an axis, about (names and colour bar aside)
    font, named = _name_ticks(count, cell)
    names = [_short(class_names[index]) for index in named]
    if max(map(len, names)) * 0.6 * font <= 0.9 * cell * named.step:  # the names fit side by side
        rotation = {"rotation": 0}
    elif cell >= 2 * font:
        rotation = {"rotation": 45, "ha": "right", "rotation_mode": "anchor"}
    else:
        rotation = {"rotation": 90}
    figure = Figure(figsize=(2 * side + 1, side), layout="constrained")
    for axes, normalize, subtitle, values_format in zip(
            figure.subplots(1, 2), (None, "true"), ("counts", "row-normalised (recall on the diagonal)"),
            (",d", ".2f")):
        display = ConfusionMatrixDisplay.from_predictions(
            labels, predicted, labels=list(range(count)), normalize=normalize, values_format=values_format,
            cmap="Blues", ax=axes, include_values=count <= MAX_CELL_VALUES, text_kw={"fontsize": min(10, 0.3 * cell)})
        if normalize and empty.any():  # scikit-learn writes 0 of 0 as 0.00
            display.im_.set_data(np.ma.masked_array(display.im_.get_array(), np.repeat(empty[:, None], count, 1)))
            for row in np.flatnonzero(empty) if display.text_ is not None else ():
                for column, text in enumerate(display.text_[row]):
                    text.set_text("n/a" if column == row else "")
        axes.set_xticks(named, names, fontsize=font, **rotation)
        axes.set_yticks(named, names, fontsize=font)
        axes.set(xlabel="predicted class", ylabel="true class", title=subtitle)
    figure.suptitle(f"Confusion matrix ({plural(len(labels), 'image')})")
    return _save(figure, path)


def _roc(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    false_positive_rate, true_positive_rate, _ = roc_curve(truth, scores)
    return false_positive_rate, true_positive_rate, float(auc(false_positive_rate, true_positive_rate))


def _precision_recall(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    precision, recall, _ = precision_recall_curve(truth, scores, drop_intermediate=True)
    return recall, precision, float(average_precision_score(truth, scores))


def _curves(curve: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, float]], labels: Sequence[int],
            probabilities: np.ndarray, class_names: Sequence[str], positive_index: int,
            title: str) -> tuple[Figure, Axes | None]:
    """One curve of P(positive) for two classes, one-vs-rest for more; a class with one side only gets none.
    Up to ``MAX_NAMED_CURVES`` curves each have a colour and an entry; more are drawn thin and grey under one entry,
    the ``WORST_NAMED`` lowest named, and their micro-average in bold. The axes, or None where none was drawn."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    roc = curve is _roc
    score_name, style = ("AUC", {}) if roc else ("AP", {"drawstyle": "steps-post"})
    figure = Figure(figsize=(6, 5.5), layout="constrained")
    axes = figure.add_subplot()
    binary = len(class_names) == 2
    indices = [positive_index] if binary else range(len(class_names))
    one_sided = [index for index in indices if (labels == index).all() or not (labels == index).any()]
    if one_sided:
        named = ", ".join(_short(class_names[index]) for index in one_sided[:5])
        logger.warning("%s: none for %s%s: a curve needs images of its class and of the others", title, named,
                       f" and {len(one_sided) - 5} more" if len(one_sided) > 5 else "")
    curves = {index: curve(labels == index, probabilities[:, index]) for index in indices if index not in one_sided}

    def name(index: int) -> str:
        return _short(class_names[index]) + ("" if binary else " vs rest") + f" ({score_name} = {curves[index][2]:.2f})"

    # Precision-recall's chance level: each class's share of the images (the micro-average's for many classes).
    shares = {index: float(np.mean(labels == index)) for index in curves}
    if len(curves) <= MAX_NAMED_CURVES:
        for colour, (index, (x, y, _score)) in enumerate(curves.items()):
            axes.plot(x, y, color=f"C{colour}", label=name(index), **style)
    else:
        worst = sorted(curves, key=lambda index: curves[index][2])[:WORST_NAMED]
        others = [index for index in curves if index not in worst]
        mean = np.mean([score for _x, _y, score in curves.values()])
        for number, index in enumerate(others):
            axes.plot(*curves[index][:2], color="0.6", linewidth=0.6, alpha=0.7, **style, label="_" if number else
                      f"{len(others)} more classes vs rest (mean {score_name} of all {len(curves)} = {mean:.2f})")
        for colour, index in enumerate(worst, start=1):
            axes.plot(*curves[index][:2], color=f"C{colour}", linewidth=1.2, label="lowest: " + name(index), **style)
        truth = labels[:, None] == np.arange(len(class_names))
        x, y, score = curve(truth.ravel(), probabilities.ravel())
        axes.plot(x, y, color="C0", linewidth=2.5, label=f"micro-average ({score_name} = {score:.2f})", **style)
        shares = {None: float(truth.mean())}
    if not curves:
        axes.text(0.5, 0.5, "undefined: the labels hold one class only", ha="center", va="center")
    else:
        if roc:
            axes.plot((0, 1), (0, 1), "k--", label="Chance level (AUC = 0.5)")
        elif len(set(shares.values())) == 1:
            share = next(iter(shares.values()))
            axes.plot((0, 1), (share, share), "k--", label=f"Chance level (AP = {share:.2f})")
        else:  # dotted, each in its class's colour, one entry
            for colour, share in enumerate(shares.values()):
                axes.plot((0, 1), (share, share), ":", color=f"C{colour}",
                          label="_" if colour else "Chance level (dotted: each class's share)")
        axes.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01),
                 **({"xlabel": "false positive rate", "ylabel": "true positive rate (recall)"} if roc
                    else {"xlabel": "recall", "ylabel": "precision"}))
        if binary:
            axes.legend(loc="lower right" if roc else "lower left")
        else:  # below the axes, where it hides no curve
            figure.set_size_inches(6, 5.5 + 0.25 * len(axes.get_legend_handles_labels()[1]))
            figure.legend(loc="outside lower center", fontsize="small")
    axes.set_title(title if binary else f"{title}s, one vs rest")
    axes.grid(alpha=0.3)
    return figure, axes if curves else None


def plot_roc_curves(labels: Sequence[int], probabilities: np.ndarray, class_names: Sequence[str], path: Path,
                    positive_index: int = 1) -> Path:
    """ROC curve(s) with the AUC in the legend."""
    return _save(_curves(_roc, labels, probabilities, class_names, positive_index, "ROC curve")[0], path)


def plot_precision_recall_curves(labels: Sequence[int], probabilities: np.ndarray, class_names: Sequence[str],
                                 path: Path, positive_index: int = 1, threshold: float | None = None) -> Path:
    """Precision-recall curve(s) with average precision in the legend; two classes mark ``threshold``."""
    figure, axes = _curves(_precision_recall, labels, probabilities, class_names, positive_index,
                           "Precision-recall curve")
    if threshold is not None and len(class_names) == 2 and axes is not None:
        at = threshold_metrics(np.asarray(labels), np.asarray(probabilities)[:, positive_index], positive_index,
                               threshold)
        [threshold_text] = distinct_figures([threshold], 3)
        axes.plot(at["recall"], at["precision"], "o", color="black", label=f"threshold {threshold_text}")
        axes.legend(loc="lower left", fontsize=8)
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
    """Grouped horizontal bars: images per class (rows, in label order) and split (bars), with the numbers on the
    bars where they fit; at most ``MAX_BARS_HEIGHT`` inches tall."""
    splits = list(counts)
    class_names = list(dict.fromkeys(name for per_class in counts.values() for name in per_class))  # label order
    groups = max(1, len(splits))
    height = min(MAX_BARS_HEIGHT, max(3.0, 1.2 + (0.16 * groups + 0.12) * len(class_names)))
    row = (height - 1.2) * 72 / max(1, len(class_names))  # points a class takes, about
    font, named = _name_ticks(len(class_names), row)
    positions = np.arange(len(class_names))
    width = 0.8 / groups
    figure = Figure(figsize=(8, height), layout="constrained")
    axes = figure.add_subplot()
    for offset, split in enumerate(splits):
        values = [int(counts[split].get(name, 0)) for name in class_names]
        bars = axes.barh(positions + (offset - (groups - 1) / 2) * width, values, width, label=split)
        if width * row >= 8:  # room for a 7-point number beside each bar
            axes.bar_label(bars, labels=[f"{value:,}" for value in values], fontsize=7, padding=2)
    axes.set_yticks(positions[named], [_short(class_names[index]) for index in named], fontsize=font)
    axes.set(ylim=(len(class_names) - 0.5, -0.5), xlabel="images", title="Class distribution per split")  # first on top
    axes.margins(x=0.12)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    axes.grid(axis="x", alpha=0.3)
    return _save(figure, path)


def plot_confident_errors(examples: Sequence[ErrorExample], path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> Path:
    """A grid of wrongly classified images, titled true / predicted (probability); says so when there are none.
    Each image is decoded under ``max_pixels`` (the limit it was read under), a large JPEG reduced."""
    if not examples:
        figure = Figure(figsize=(5, 2))
        figure.text(0.5, 0.5, "No errors: every image was classified correctly.", ha="center", va="center", fontsize=12)
        return _save(figure, path)
    columns = min(4, len(examples))  # at most 4 a row
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
        name = printable(example.name or example.file.name)  # a name that is not UTF-8 as \xe9: matplotlib's fonts
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


def plot_training_curves(rows: Sequence[Mapping[str, Any]], path: Path, fine_tune_start: int | None = None,
                         best_epoch: int | None = None) -> Path:
    """Cross-entropy (and the loss: it plus the L2 penalty), accuracy, precision, recall, AUC and F1 per epoch
    (history.csv's rows), with a line at ``fine_tune_start`` (from 1) and one at ``best_epoch``, whose weights
    model.h5 holds."""
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
        if best_epoch is not None:
            axis.axvline(best_epoch, color="black", linestyle=":", label=f"best epoch {best_epoch} ({MODEL_FILE})")
        axis.set_title(metrics[0].replace("_", "-"))
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        if epochs:  # every panel over the same epochs, a panel without values too
            axis.set_xlim(min(epochs) - 0.25, max(epochs) + 0.25)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return _save(figure, path)
