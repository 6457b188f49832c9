"""Evaluation of a trained classifier on class folders: predictions, metrics, threshold and outputs.

Predictions come from ``model.predict`` over ``data.make_dataset(..., shuffle=False)``, so every
probability lines up with its file and its label. Every metric comes from scikit-learn, except the
expected calibration error, defined in ``calibration_bins``. The same model and folder always give
the same numbers.

Written atomically into the output folder:

    metrics.json                 every number, the class names and the skipped files
    predictions.csv              one row per image: file, true, predicted, probabilities, uncertain, unfamiliar
                                 (``prediction.write_predictions``, the same file ``--predict`` writes)
    classification_report.txt    scikit-learn's per-class report (and at the decision threshold)
    confusion_matrix.png  roc_curve.png  precision_recall_curve.png  reliability_diagram.png
    class_distribution.png  confident_errors.png
    MODEL_CARD.md                evaluate_run (it also adds "test_metrics" to model.json)
    EVALUATION.md                evaluate_folder

Usage (ModelTraining.py calls these; the model takes raw RGB 0..255 and returns softmax):

    metrics = evaluate_run(model, model_info, Path("data"), Path("models/run1"))
    metrics = evaluate_folder(model, model_info, Path("my_images"), Path("models/run1/eval-my_images"))
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    classification_report,
    confusion_matrix,
    log_loss,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
)
from sklearn.preprocessing import label_binarize

from realvsai import plots
from realvsai.config import (
    EVALUATION_CARD_FILE,
    METRICS_FILE,
    MODEL_CARD_FILE,
    MODEL_JSON_FILE,
    PREDICTIONS_FILE,
    REPORT_FILE,
    UNREADABLE_FILE,
)
from realvsai.errors import UserError
from realvsai.files import atomic_write_text, list_images
from realvsai.inference import DecisionRule, positive_index
from realvsai.layout import SPLITS, TEST, VALIDATION
from realvsai.model_card import PLOT_FILES, render_card
from realvsai.prediction import model_image_size, predict_images, relative_name, unfamiliar_reasons, write_predictions

if TYPE_CHECKING:  # TensorFlow is imported only when predicting, so the metrics load fast
    import keras

    from realvsai.data import LabelledImages

logger = logging.getLogger(__name__)

# Any of these in a folder means it already holds results, which an evaluation never replaces.
RESULT_FILES = (METRICS_FILE, REPORT_FILE, MODEL_CARD_FILE, EVALUATION_CARD_FILE, MODEL_JSON_FILE,
                PREDICTIONS_FILE, UNREADABLE_FILE, *PLOT_FILES.values())
# The metrics copied into model.json's "test_metrics" (the app and the README read them there).
SUMMARY_KEYS = ("loss", "accuracy", "precision", "recall", "f1", "roc_auc", "average_precision",
                "expected_calibration_error", "num_images")
# Softmax rows sum to 1 up to float32 rounding; anything further off is not a probability output.
_SUM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class EvaluationConfig:
    """Defaults of the evaluation, held once."""

    batch_size: int = 64
    calibration_bins: int = 15  # equal-width bins over the top-class confidence, as in Guo et al. (2017)
    num_error_images: int = 16  # tiles in the confident-errors grid
    fallback_image_size: int = 224  # resize target for mixed sizes when neither model.json nor the model says


DEFAULTS = EvaluationConfig()


# ---------------------------------------------------------------------------------------------
# Predictions


def predict(model: keras.Model, images: LabelledImages, batch_size: int = DEFAULTS.batch_size,
            image_size: int = DEFAULTS.fallback_image_size) -> np.ndarray:
    """Class probabilities (images, classes) of every image, in the images' file order.

    Args:
        model: a classifier taking raw RGB 0..255 float32 images and returning softmax probabilities.
        images: ``data.scan_images`` output.
        batch_size: images per forward pass.
        image_size: resize target when the images differ in size.

    Raises:
        UserError: if a file broke after the scan (the pipeline drops it; every later prediction
            would then sit against its neighbour's label).
    """
    probabilities = predict_images(model, images, batch_size, image_size)
    failed = [relative_name(path, path.parent.parent) for path, row in zip(images.files, probabilities)
              if np.isnan(row).any()]
    if failed:
        raise UserError(
            f"{len(failed)} of {len(images)} images could not be decoded while predicting ({', '.join(failed[:5])}"
            f"{', ...' if len(failed) > 5 else ''}). Remove or replace them and run the evaluation again."
        )
    return probabilities


# ---------------------------------------------------------------------------------------------
# Metrics


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
                     num_bins: int = DEFAULTS.calibration_bins) -> list[dict[str, float | int | None]]:
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


def _threshold_metrics(labels: np.ndarray, scores: np.ndarray, positive: int, threshold: float) -> dict[str, Any]:
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
                    calibration_bin_count: int = DEFAULTS.calibration_bins) -> dict[str, Any]:
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
            metrics["at_threshold"] = _threshold_metrics(labels, scores, positive, threshold)
    return metrics


def most_confident_errors(labels: Sequence[int], probabilities: np.ndarray,
                          limit: int = DEFAULTS.num_error_images) -> list[int]:
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


# ---------------------------------------------------------------------------------------------
# Files


def _write_json(path: Path, content: Mapping[str, Any]) -> None:
    atomic_write_text(path, json.dumps(content, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def _classification_report(labels: np.ndarray, probabilities: np.ndarray, metrics: Mapping[str, Any],
                           title: str) -> str:
    class_names = metrics["class_names"]
    report = {"labels": list(range(len(class_names))), "target_names": class_names, "digits": 4, "zero_division": 0}
    lines = [title, "", "Predicted class = the most probable class (argmax):", "",
             classification_report(labels, probabilities.argmax(axis=1), **report)]
    at = metrics.get("at_threshold")
    if at:
        positive = class_names.index(metrics["positive_class"])
        predicted = DecisionRule(decision_threshold=at["threshold"], positive_index=positive).decide(probabilities)
        lines += [f"Predicted class = {metrics['positive_class']} when P({metrics['positive_class']}) >= "
                  f"{at['threshold']:.4f} (the decision threshold):", "",
                  classification_report(labels, predicted, **report)]
    return "\n".join(lines)


def _write_outputs(out_dir: Path, folder: Path, images: LabelledImages, probabilities: np.ndarray,
                   metrics: dict[str, Any], split_counts: Mapping[str, Mapping[str, int]]) -> dict[str, str]:
    """Plots and the classification report; returns the plot files by kind (names inside out_dir)."""
    labels, predicted = np.asarray(images.labels), probabilities.argmax(axis=1)
    class_names = metrics["class_names"]
    positive = class_names.index(metrics["positive_class"]) if metrics["positive_class"] else None
    plots.plot_confusion_matrix(labels, predicted, class_names, out_dir / PLOT_FILES["confusion_matrix"])
    plots.plot_roc_curves(labels, probabilities, class_names, out_dir / PLOT_FILES["roc_curve"], positive)
    plots.plot_precision_recall_curves(labels, probabilities, class_names,
                                       out_dir / PLOT_FILES["precision_recall_curve"], positive,
                                       metrics.get("decision_threshold"))
    plots.plot_reliability_diagram(labels, probabilities, metrics["expected_calibration_error"],
                                   out_dir / PLOT_FILES["reliability_diagram"], len(metrics["calibration_bins"]))
    plots.plot_class_distribution(split_counts, out_dir / PLOT_FILES["class_distribution"])
    examples = [plots.ErrorExample(images.files[index], class_names[labels[index]], class_names[predicted[index]],
                                   float(probabilities[index, predicted[index]]))
                for index in most_confident_errors(labels, probabilities)]
    plots.plot_confident_errors(examples, out_dir / PLOT_FILES["confident_errors"])
    atomic_write_text(out_dir / REPORT_FILE, _classification_report(
        labels, probabilities, metrics, f"Classification report: {folder} ({len(labels):,} images)"))
    return dict(PLOT_FILES)


def _update_model_json(path: Path, model_info: Mapping[str, Any], metrics: Mapping[str, Any]) -> None:
    """Adds ``test_metrics`` (and ``decision_threshold``) to model.json, keeping every other key."""
    content = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else dict(model_info)
    content["test_metrics"] = {key: metrics[key] for key in SUMMARY_KEYS}
    if metrics.get("at_threshold"):
        content["test_metrics"].update({"accuracy_at_threshold": metrics["at_threshold"]["accuracy"],
                                        "f1_at_threshold": metrics["at_threshold"]["f1"]})
    if len(model_info["class_names"]) == 2:
        content["decision_threshold"] = metrics.get("decision_threshold")
    _write_json(path, content)


# ---------------------------------------------------------------------------------------------
# Entry points


def unused_output_folder(out_dir: Path) -> Path:
    """``out_dir``, or when it already holds results (or is a run folder), the first ``out_dir-2``,
    ``out_dir-3``, ... beside it that does not: earlier results are never replaced."""
    candidate, number = Path(out_dir), 1
    while any((candidate / name).exists() for name in RESULT_FILES):
        number += 1
        base = Path(out_dir).resolve()  # resolved, so that "." gets a name to number too
        candidate = base.with_name(f"{base.name}-{number}")
    return candidate


def _predict_folder(model: keras.Model, model_info: Mapping[str, Any], folder: Path,
                    batch_size: int) -> tuple[LabelledImages, np.ndarray]:
    """The folder's usable images (its classes must be the model's) and their probabilities."""
    from realvsai.data import scan_images

    images = scan_images(folder, class_names=model_info["class_names"])
    # The image size matters only for mixed sizes; the model's resize layer knows it too.
    probabilities = predict(model, images, batch_size, model_image_size(model, model_info))
    if probabilities.shape[1] != len(model_info["class_names"]):
        raise UserError(f"the model predicts {probabilities.shape[1]} classes, but its model.json names "
                        f"{len(model_info['class_names'])}: {model_info['class_names']}. Use the model.json saved "
                        "with this model.")
    return images, probabilities


def _evaluate(model: keras.Model, model_info: Mapping[str, Any], folder: Path, out_dir: Path, batch_size: int,
              threshold: float | None, split_counts: Mapping[str, Mapping[str, int]] | None,
              **extra: Any) -> tuple[dict[str, Any], Mapping[str, Mapping[str, int]]]:
    """Predicts ``folder``, writes metrics.json, the report and the plots; returns the metrics and the
    split counts they show (for a foreign folder: the model's training splits, then the folder's)."""
    class_names = list(model_info["class_names"])
    images, probabilities = _predict_folder(model, model_info, folder, batch_size)
    metrics = {"folder": str(folder),
               **compute_metrics(images.labels, probabilities, class_names,
                                 model_info.get("positive_class") if len(class_names) == 2 else None, threshold),
               "num_skipped": len(images.skipped),
               "skipped_files": [{"file": relative_name(path, folder), "reason": reason}
                                 for path, reason in images.skipped],
               **extra}
    if split_counts is None:
        split_counts = {split: dict(counts) for split, counts in (model_info.get("counts") or {}).items()
                        if split != TEST}
        split_counts["evaluated"] = images.counts()
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics["plots"] = _write_outputs(out_dir, folder, images, probabilities, metrics, split_counts)
    # The rule at the threshold these metrics use (on a run's test split: the one chosen on validation).
    rule = DecisionRule.from_model_info({**model_info, "decision_threshold": threshold})
    write_predictions(out_dir / PREDICTIONS_FILE, folder, images.files, probabilities, class_names, rule,
                      unfamiliar_reasons(model_info, images.files), true_labels=images.labels)
    _write_json(out_dir / METRICS_FILE, metrics)
    return metrics, split_counts


def evaluate_folder(model: keras.Model, model_info: Mapping[str, Any], folder: Path, out_dir: Path,
                    batch_size: int = DEFAULTS.batch_size) -> dict[str, Any]:
    """Evaluates the model on any folder of class folders; writes metrics, report, plots and EVALUATION.md.

    The folder's class folders must be exactly the model's classes (matched by name, any order);
    images may have any size; broken files are skipped and listed. For two classes the metrics at
    model.json's ``decision_threshold`` are added when it has one.

    Args:
        model: the classifier (raw RGB 0..255 in, softmax out).
        model_info: its model.json (``class_names``, ``image_size``, ``positive_class``, ...).
        folder: the images, one sub-folder per class.
        out_dir: where the outputs go (created; outputs already there are replaced, so callers pick
            the folder with ``unused_output_folder``).
        batch_size: images per forward pass.

    Returns:
        The metrics, as written to metrics.json.

    Raises:
        UserError: if the folder is missing, its classes differ from the model's, or it holds no image;
            or ``out_dir`` is a run folder (holds model.json), whose test results must not be replaced.
    """
    folder, out_dir = Path(folder), Path(out_dir)
    if (out_dir / MODEL_JSON_FILE).is_file():
        # A run folder's metrics.json, report and plots describe its test split; keep them.
        raise UserError(f"{out_dir} is a training run's folder (it has {MODEL_JSON_FILE}); evaluating {folder} there "
                        "would replace the run's test results. Choose another output folder, e.g. "
                        f"{out_dir / 'evaluations' / folder.name}.")
    threshold = model_info.get("decision_threshold") if len(model_info["class_names"]) == 2 else None
    extra = {"threshold_source": "model.json"} if threshold is not None else {}
    metrics, split_counts = _evaluate(model, model_info, folder, out_dir, batch_size, threshold, None, **extra)
    atomic_write_text(out_dir / EVALUATION_CARD_FILE,
                      render_card(model_info, metrics, f"Evaluation on {folder.name}", split_counts,
                                  f"Metrics on {folder.name}"))
    logger.info("evaluated %s: %s", folder, format_summary(metrics))
    return metrics


def evaluate_run(model: keras.Model, model_info: Mapping[str, Any], data_dir: Path, out_dir: Path,
                 batch_size: int = DEFAULTS.batch_size) -> dict[str, Any]:
    """The end-of-training evaluation: threshold on validation, metrics on test, every output.

    For two classes the decision threshold maximising F1 on P(positive) is chosen on
    ``data_dir/validation`` (skipped with a warning when that split is missing or holds one class);
    the test metrics are reported at argmax and at that threshold. Writes metrics.json,
    classification_report.txt, the plots and MODEL_CARD.md into ``out_dir`` and adds
    ``test_metrics`` and ``decision_threshold`` to ``out_dir/model.json``, keeping its other keys.

    Args:
        model: the trained classifier.
        model_info: its model.json content.
        data_dir: the prepared dataset, ``data_dir/{train,validation,test}/<Class>/``.
        out_dir: the run folder.
        batch_size: images per forward pass.

    Returns:
        The test metrics, as written to metrics.json.

    Raises:
        UserError: if ``data_dir/test`` is missing or its classes differ from the model's.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    test_dir = data_dir / TEST
    if not test_dir.is_dir():
        raise UserError(f"{data_dir} has no {TEST} folder to evaluate on. Run DataSplitD1.py or DataSplitD2.py to "
                        "make one, or evaluate another folder with --evaluate MODEL.h5 --test-dir DIR.")
    class_names = list(model_info["class_names"])
    threshold, extra = None, {}
    if len(class_names) == 2:
        threshold, selection = _threshold_from_validation(model, model_info, data_dir / VALIDATION, batch_size)
        extra = {"threshold_source": VALIDATION if threshold is not None else None, "threshold_selection": selection}
    split_counts = model_info.get("counts") or {
        split: {name: len(list_images(data_dir / split / name)) if (data_dir / split / name).is_dir() else 0
                for name in class_names}
        for split in SPLITS if (data_dir / split).is_dir()}
    metrics, _ = _evaluate(model, model_info, test_dir, out_dir, batch_size, threshold, split_counts, **extra)
    title = f"Model card: {out_dir.resolve().name}"
    atomic_write_text(out_dir / MODEL_CARD_FILE, render_card(model_info, metrics, title, split_counts))
    _update_model_json(out_dir / MODEL_JSON_FILE, model_info, metrics)
    logger.info("test: %s", format_summary(metrics))
    return metrics


def _threshold_from_validation(model: keras.Model, model_info: Mapping[str, Any], folder: Path,
                               batch_size: int) -> tuple[float | None, dict[str, Any] | None]:
    """The F1-maximising threshold on the validation split, and how it was found (None, None without one)."""
    if not folder.is_dir():
        logger.warning("no %s folder: the decision threshold stays at argmax", folder)
        return None, None
    images, probabilities = _predict_folder(model, model_info, folder, batch_size)
    positive = positive_index(model_info["class_names"], model_info.get("positive_class"))
    labels, scores = np.asarray(images.labels), probabilities[:, positive].astype(np.float64)
    try:
        threshold = choose_threshold(labels == positive, scores)
    except ValueError as error:
        logger.warning("no decision threshold from %s: %s", folder, error)
        return None, None
    at = _threshold_metrics(labels, scores, positive, threshold)
    return threshold, {"split": VALIDATION, "num_images": len(images), "num_skipped": len(images.skipped),
                       "f1": at["f1"], "accuracy": at["accuracy"]}
