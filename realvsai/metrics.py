"""The numbers of an evaluation, from labels and probabilities alone: metrics, calibration, threshold.

Every metric comes from scikit-learn, except the expected calibration error, defined in
``calibration_bins``. No TensorFlow and no files here: ``evaluation`` predicts and writes.

    metrics = compute_metrics(labels, probabilities, ["FAKE", "REAL"], positive_class="FAKE")
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    log_loss,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
)
from sklearn.preprocessing import label_binarize

from realvsai.decision import DecisionRule, positive_index

logger = logging.getLogger(__name__)

CALIBRATION_BINS = 15  # equal-width bins over the top-class confidence, as in Guo et al. (2017)
NUM_ERROR_IMAGES = 16  # tiles in the confident-errors grid
# Softmax rows sum to 1 up to float32 rounding; anything further off is not a probability output.
_SUM_TOLERANCE = 1e-3


def _check_probabilities(probabilities: np.ndarray, num_classes: int, num_labels: int) -> np.ndarray:
    """Float64 rows that sum to exactly 1, or a ValueError when they are not probabilities at all."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.shape != (num_labels, num_classes):
        raise ValueError(f"probabilities have shape {probabilities.shape}, but {num_labels} images and "
                         f"{num_classes} classes need ({num_labels}, {num_classes})")
    sums = probabilities.sum(axis=1)
    if (probabilities < 0).any() or not np.allclose(sums, 1.0, atol=_SUM_TOLERANCE):
        raise ValueError("the model's outputs are not probabilities (negative, or rows not summing to 1); "
                         "the model must end in a softmax")
    # Only float32 rounding is removed here; scikit-learn warns about rows a hair away from 1.
    return probabilities / sums[:, None]


def _score(metric: Callable[..., float], *args: Any, **kwargs: Any) -> float | None:
    """A ranking metric, or None where the labels make it undefined (a single class present)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.filterwarnings("ignore", message=".*(Only one class|No positive class|not defined).*")
        try:
            value = float(metric(*args, **kwargs))
        except ValueError as error:
            logger.warning("%s is undefined here: %s", metric.__name__, error)
            return None
    return None if math.isnan(value) else value


def calibration_bins(labels: Sequence[int], probabilities: np.ndarray,
                     num_bins: int = CALIBRATION_BINS) -> list[dict[str, float | int | None]]:
    """Top-class confidence against accuracy in ``num_bins`` equal-width bins over [0, 1].

    The confidence of an image is the largest probability it got (that of the predicted class). Bin
    ``b`` holds the confidences in ``(b / num_bins, (b + 1) / num_bins]`` (a confidence of 0 goes to
    the first bin). The expected calibration error (ECE) is the bin-size-weighted mean gap,
    ``ECE = sum_b (n_b / N) * |accuracy(b) - mean confidence(b)|``: 0 for a model whose 80%-sure
    answers are right 80% of the time, up to 1 for one that is sure and always wrong.

    Returns:
        One dict per bin: lower, upper, count, confidence (mean) and accuracy (None when empty).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidences = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    members = np.clip(np.searchsorted(edges, confidences, side="left") - 1, 0, num_bins - 1)
    counts = np.bincount(members, minlength=num_bins)
    confidence_sums = np.bincount(members, confidences, minlength=num_bins)
    correct_sums = np.bincount(members, correct, minlength=num_bins)
    return [{"lower": float(edges[index]), "upper": float(edges[index + 1]), "count": int(count),
             "confidence": float(confidence_sums[index] / count) if count else None,
             "accuracy": float(correct_sums[index] / count) if count else None}
            for index, count in enumerate(counts)]


def expected_calibration_error(bins: Sequence[Mapping[str, float | int | None]]) -> float:
    """ECE of ``calibration_bins`` output (its docstring gives the definition)."""
    total = sum(entry["count"] for entry in bins)
    return float(sum(entry["count"] / total * abs(entry["accuracy"] - entry["confidence"])
                     for entry in bins if entry["count"])) if total else 0.0


def choose_threshold(labels: Sequence[int] | Sequence[bool], positive_probabilities: Sequence[float]) -> float:
    """The threshold on P(positive) that maximises F1 on these (validation) images.

    An image counts as positive when its probability is at or above the threshold. The candidates
    are the distinct probabilities themselves (every other threshold gives the same predictions as
    one of them); on a tie the lowest wins.

    Args:
        labels: 1 (or True) for the positive class, 0 for the other.
        positive_probabilities: the model's probability of the positive class per image.

    Raises:
        ValueError: if the labels hold only one class, so F1 cannot pick anything.
    """
    truth = np.asarray(labels).astype(bool)
    if truth.all() or not truth.any():
        raise ValueError("choosing a threshold needs images of both classes")
    precision, recall, thresholds = precision_recall_curve(truth, np.asarray(positive_probabilities, np.float64))
    # The curve ends with (precision 1, recall 0), which belongs to no threshold.
    precision, recall = precision[:-1], recall[:-1]
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return float(thresholds[int(np.argmax(f1))])


def threshold_metrics(labels: np.ndarray, scores: np.ndarray, positive: int, threshold: float) -> dict[str, Any]:
    # The app's rule, so that the numbers at the threshold are the app's.
    probabilities = np.stack([1 - scores, scores] if positive == 1 else [scores, 1 - scores], axis=-1)
    predicted = DecisionRule(decision_threshold=threshold, positive_index=positive).decide(probabilities)
    precision, recall, f1, _ = precision_recall_fscore_support(labels, predicted, labels=[0, 1], pos_label=positive,
                                                               average="binary", zero_division=0)
    return {"threshold": float(threshold), "accuracy": float(accuracy_score(labels, predicted)),
            "precision": float(precision), "recall": float(recall), "f1": float(f1),
            "confusion_matrix": confusion_matrix(labels, predicted, labels=[0, 1]).tolist()}


def compute_metrics(labels: Sequence[int], probabilities: np.ndarray, class_names: Sequence[str],
                    positive_class: str | None = None, threshold: float | None = None, *,
                    calibration_bin_count: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Every metric of one set of predictions, as a JSON-ready dict (scikit-learn throughout).

    Predictions are the argmax class. For two classes, precision/recall/F1/ROC AUC/average precision
    are those of the positive class (``positive_class``, or index 1 when None), and with a
    ``threshold`` on P(positive) the metrics at it are added under ``"at_threshold"``. For more
    classes they are macro averages, ROC AUC one-vs-rest. A metric the labels leave undefined (ROC
    AUC with a single class present) is None.

    Args:
        labels: true class index per image.
        probabilities: (images, classes) softmax outputs, columns in ``class_names`` order.
        class_names: the label order.
        positive_class: name of the positive class (binary only).
        threshold: decision threshold on P(positive) (binary only).
        calibration_bin_count: bins of the expected calibration error.

    Raises:
        ValueError: for outputs that are not probabilities or an unknown positive class.
    """
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = _check_probabilities(probabilities, len(class_names), len(labels))
    class_ids = list(range(len(class_names)))
    predicted = probabilities.argmax(axis=1)
    binary = len(class_names) == 2
    bins = calibration_bins(labels, probabilities, calibration_bin_count)
    if binary:
        positive = positive_index(class_names, positive_class)
        truth, scores = labels == positive, probabilities[:, positive]
        averaged = precision_recall_fscore_support(labels, predicted, labels=class_ids, pos_label=positive,
                                                   average="binary", zero_division=0)
        ranking = {"roc_auc": _score(roc_auc_score, truth, scores),
                   "average_precision": _score(average_precision_score, truth, scores)}
    else:
        averaged = precision_recall_fscore_support(labels, predicted, labels=class_ids, average="macro",
                                                   zero_division=0)
        ranking = {"roc_auc": _score(roc_auc_score, labels, probabilities, multi_class="ovr", average="macro",
                                     labels=class_ids),
                   "average_precision": _score(average_precision_score, label_binarize(labels, classes=class_ids),
                                               probabilities, average="macro")}
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=class_ids,
                                                                     zero_division=0)
    metrics: dict[str, Any] = {
        "class_names": list(class_names),
        "num_images": len(labels),
        "loss": float(log_loss(labels, probabilities, labels=class_ids)),
        "accuracy": float(accuracy_score(labels, predicted)),
        "average": "binary" if binary else "macro",
        "positive_class": class_names[positive] if binary else None,
        "precision": float(averaged[0]),
        "recall": float(averaged[1]),
        "f1": float(averaged[2]),
        **ranking,
        "expected_calibration_error": expected_calibration_error(bins),
        "per_class": {name: {"precision": float(precision[index]), "recall": float(recall[index]),
                             "f1": float(f1[index]), "support": int(support[index])}
                      for index, name in enumerate(class_names)},
        "confusion_matrix": confusion_matrix(labels, predicted, labels=class_ids).tolist(),
        "confusion_matrix_axes": "rows: true class, columns: predicted class, both in class_names order",
        "calibration_bins": bins,
    }
    if binary:
        metrics["decision_threshold"] = None if threshold is None else float(threshold)
        if threshold is not None:
            metrics["at_threshold"] = threshold_metrics(labels, scores, positive, threshold)
    return metrics


def most_confident_errors(labels: Sequence[int], probabilities: np.ndarray,
                          limit: int = NUM_ERROR_IMAGES) -> list[int]:
    """Indices of the wrongly classified images (argmax), highest predicted probability first."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probabilities[wrong, predicted[wrong]]
    return [int(index) for index in wrong[np.argsort(-confidence, kind="stable")][:limit]]


def format_summary(metrics: Mapping[str, Any]) -> str:
    """One line for a script to print: ``accuracy 0.9120, F1 0.9050, ROC AUC 0.9700 on 2,000 images``."""
    def number(key: str) -> str:
        value = metrics.get(key)
        return "n/a" if value is None else f"{value:.4f}"

    line = (f"accuracy {number('accuracy')}, F1 {number('f1')}, ROC AUC {number('roc_auc')} "
            f"on {metrics['num_images']:,} images")
    if metrics.get("at_threshold"):
        at = metrics["at_threshold"]
        line += f" (at threshold {at['threshold']:.3f}: accuracy {at['accuracy']:.4f}, F1 {at['f1']:.4f})"
    if metrics.get("num_skipped"):
        line += f"; {metrics['num_skipped']:,} broken files skipped"
    return line
