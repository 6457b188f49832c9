"""Evaluation of a trained classifier on class folders: predictions, metrics, threshold and outputs.

Predictions come from ``model.predict`` over ``data.make_dataset(..., shuffle=False)``, so every
probability lines up with its file and its label; the numbers come from ``realvsai.metrics``. The
same model and folders always give the same numbers.

Written atomically into the output folder:

    metrics.json                 every number, the class names and the skipped files (evaluate_folders:
                                 also per source, and under perturbations with robustness=True)
    predictions.csv              one row per image: file, true, predicted, probabilities, uncertain, unfamiliar
                                 (``prediction.write_predictions``, the same file ``--predict`` writes)
    classification_report.txt    scikit-learn's per-class report (and at the decision threshold)
    confusion_matrix.png  roc_curve.png  precision_recall_curve.png  reliability_diagram.png
    class_distribution.png  confident_errors.png  robustness.png (robustness=True)
    MODEL_CARD.md                evaluate_run (it also adds "test_metrics" to model.json)
    EVALUATION.md                evaluate_folders

Usage (ModelTraining.py calls these; the model takes raw RGB 0..255 and returns softmax):

    metrics = evaluate_run(model, model_info, Path("data"), Path("models/run1"))
    metrics = evaluate_folders(model, model_info, [Path("data/test"), Path("photos/test")],
                               Path("models/run1/eval-test+test"), robustness=True)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.metrics import classification_report

from realvsai import plots
from realvsai.cli import progress
from realvsai.config import (
    EVALUATION_CARD_FILE,
    METRICS_FILE,
    MODEL_CARD_FILE,
    MODEL_JSON_FILE,
    PREDICTIONS_FILE,
    REPORT_FILE,
    ROBUSTNESS_PLOT_FILE,
    UNREADABLE_FILE,
)
from realvsai.decision import DecisionRule, positive_index
from realvsai.errors import UserError
from realvsai.files import atomic_write_text, list_images
from realvsai.layout import SPLITS, TEST, VALIDATION
from realvsai.metrics import (  # noqa: F401  (choose_threshold and the others are evaluation's API too)
    CALIBRATION_BINS,
    NUM_ERROR_IMAGES,
    calibration_bins,
    choose_threshold,
    compute_metrics,
    expected_calibration_error,
    format_summary,
    most_confident_errors,
    threshold_metrics,
)
from realvsai.model_card import PLOT_FILES, render_card
from realvsai.prediction import (
    FALLBACK_IMAGE_SIZE,
    model_image_size,
    predict_images,
    relative_name,
    unfamiliar_reasons,
    write_predictions,
)
from realvsai.robustness import PERTURBATIONS, plot_robustness
from realvsai.robustness import perturbation as robustness_perturbation

if TYPE_CHECKING:  # TensorFlow is imported only when predicting, so the metrics load fast
    import keras

    from realvsai.data import LabelledImages

logger = logging.getLogger(__name__)

# Any of these in a folder means it already holds results, which an evaluation never replaces.
RESULT_FILES = (METRICS_FILE, REPORT_FILE, MODEL_CARD_FILE, EVALUATION_CARD_FILE, MODEL_JSON_FILE,
                ROBUSTNESS_PLOT_FILE, PREDICTIONS_FILE, UNREADABLE_FILE, *PLOT_FILES.values())
# The metrics copied into model.json's "test_metrics" (the app and the README read them there).
SUMMARY_KEYS = ("loss", "accuracy", "precision", "recall", "f1", "roc_auc", "average_precision",
                "expected_calibration_error", "num_images")


@dataclass(frozen=True)
class EvaluationConfig:
    """Defaults of the evaluation, held once."""

    batch_size: int = 64
    calibration_bins: int = CALIBRATION_BINS
    num_error_images: int = NUM_ERROR_IMAGES


DEFAULTS = EvaluationConfig()


# ---------------------------------------------------------------------------------------------
# Predictions


def predict(model: keras.Model, images: LabelledImages, batch_size: int = DEFAULTS.batch_size,
            image_size: int = FALLBACK_IMAGE_SIZE,
            perturbation: tuple[str, float] | None = None, input_mode: str = "resize") -> np.ndarray:
    """Class probabilities (images, classes) of every image, in the images' file order.

    Args:
        model: a classifier taking raw RGB 0..255 float32 images and returning softmax probabilities.
        images: ``data.scan_images`` output.
        batch_size: images per forward pass.
        image_size: resize target when the images differ in size.
        perturbation: ``(kind, strength)`` of ``robustness.perturb``, applied to every decoded image
            first (``robustness.perturbation``); None predicts the images as they are.
        input_mode: model.json's ``input_mode`` (``prediction.predict_images``), with or without a
            perturbation.

    Raises:
        UserError: if a file broke after the scan (the pipeline drops it; every later prediction
            would then sit against its neighbour's label).
    """
    probabilities = predict_images(model, images, batch_size, image_size, input_mode=input_mode,
                                   transform=perturbation and robustness_perturbation(*perturbation))
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


def source_metrics(labels: Sequence[int], probabilities: np.ndarray, class_names: Sequence[str],
                   positive_class: str | None = None, threshold: float | None = None) -> dict[str, Any]:
    """What papers report per test source: accuracy, average precision, ROC AUC and the accuracy on each class.

    Taken from ``compute_metrics``. The accuracies follow the decision rule (``decision.DecisionRule``:
    P(positive) >= ``threshold`` when there is one, else argmax), so they are the app's; the accuracy on
    a class is its recall. For two classes ``accuracy_positive`` is the accuracy on the positive
    (fake, generated) images and ``accuracy_negative`` on the other (real) ones; ``class_accuracy``
    names every class. A class without images has None.
    """
    metrics = compute_metrics(labels, probabilities, class_names, positive_class, threshold)
    decided = metrics.get("at_threshold") or metrics
    matrix = np.asarray(decided["confusion_matrix"])
    totals = matrix.sum(axis=1)
    class_accuracy = {name: float(matrix[index, index] / totals[index]) if totals[index] else None
                      for index, name in enumerate(class_names)}
    numbers = {"num_images": metrics["num_images"], "accuracy": decided["accuracy"],
               "average_precision": metrics["average_precision"], "roc_auc": metrics["roc_auc"],
               "class_accuracy": class_accuracy}
    if metrics["positive_class"] is not None:
        negative = next(name for name in class_names if name != metrics["positive_class"])
        numbers["accuracy_positive"] = class_accuracy[metrics["positive_class"]]
        numbers["accuracy_negative"] = class_accuracy[negative]
    return numbers


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


def _write_outputs(out_dir: Path, folder: str, images: LabelledImages, probabilities: np.ndarray,
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


@dataclass(frozen=True)
class Source:
    """One evaluated folder: its name in metrics.json, its usable images and their probabilities."""

    name: str
    folder: Path
    images: LabelledImages
    probabilities: np.ndarray


def source_names(folders: Sequence[Path]) -> list[str]:
    """Each folder's name, with as many parent folders as it takes to tell equal names apart.

    ``data/test`` and ``photos/test`` become ``data/test`` and ``photos/test``; ``data/test`` and
    ``photos/validation`` stay ``test`` and ``validation``.

    Raises:
        UserError: if one folder is given twice.
    """
    seen: dict[Path, Path] = {}
    for folder in folders:
        if Path(folder).resolve() in seen:
            raise UserError(f"{folder} is given twice (as {seen[Path(folder).resolve()]} before); give each "
                            "--test-dir once.")
        seen[Path(folder).resolve()] = Path(folder)
    paths = [Path(folder).absolute() for folder in folders]

    def tail(path: Path, depth: int) -> str:
        return Path(*path.parts[-depth:]).as_posix()

    names = []
    for path in paths:
        depth = 1
        while depth < len(path.parts) and any(tail(path, depth) == tail(other, depth)
                                              for other in paths if other is not path):
            depth += 1
        names.append(tail(path, depth))
    return names


def _predict_sources(model: keras.Model, model_info: Mapping[str, Any], folders: Sequence[Path],
                     batch_size: int) -> list[Source]:
    """Each folder's usable images (its classes must be the model's) and their probabilities."""
    from realvsai.data import scan_images

    sources = []
    for name, folder in zip(source_names(folders), folders, strict=True):
        images = scan_images(Path(folder), class_names=model_info["class_names"])
        probabilities = predict(model, images, batch_size, model_image_size(model, model_info),
                                input_mode=model_info.get("input_mode", "resize"))
        if probabilities.shape[1] != len(model_info["class_names"]):
            raise UserError(f"the model predicts {probabilities.shape[1]} classes, but its model.json names "
                            f"{len(model_info['class_names'])}: {model_info['class_names']}. Use the model.json "
                            "saved with this model.")
        sources.append(Source(name, Path(folder), images, probabilities))
    return sources


def _combined(sources: Sequence[Source]) -> tuple[LabelledImages, np.ndarray]:
    """The images of every source as one set, and their probabilities in the same order."""
    from realvsai.data import LabelledImages

    def joined(field: str) -> list[Any]:
        return [item for source in sources for item in getattr(source.images, field)]

    images = LabelledImages(joined("files"), joined("labels"), sources[0].images.class_names, joined("sizes"),
                            joined("needs_pil"), joined("skipped"), joined("formats"))
    return images, np.concatenate([source.probabilities for source in sources])


def _evaluate(model_info: Mapping[str, Any], sources: Sequence[Source], out_dir: Path, threshold: float | None,
              split_counts: Mapping[str, Mapping[str, int]] | None,
              **extra: Any) -> tuple[dict[str, Any], Mapping[str, Mapping[str, int]]]:
    """Metrics over every source together, the report and the plots (metrics.json is the caller's to
    write); returns the metrics and the split counts they show (for foreign folders: the model's
    training splits, then the evaluated images)."""
    class_names = list(model_info["class_names"])
    images, probabilities = _combined(sources)
    several = len(sources) > 1
    metrics = {"folder": ", ".join(str(source.folder) for source in sources),
               **compute_metrics(images.labels, probabilities, class_names,
                                 model_info.get("positive_class") if len(class_names) == 2 else None, threshold),
               "num_skipped": len(images.skipped),
               "skipped_files": [{**({"source": source.name} if several else {}),
                                  "file": relative_name(path, source.folder), "reason": reason}
                                 for source in sources for path, reason in source.images.skipped],
               **extra}
    if split_counts is None:
        split_counts = {split: dict(counts) for split, counts in (model_info.get("counts") or {}).items()
                        if split != TEST}
        split_counts["evaluated"] = images.counts()
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics["plots"] = _write_outputs(out_dir, metrics["folder"], images, probabilities, metrics, split_counts)
    # One row per image, at the threshold these metrics use (on a run's test split: the one chosen on
    # validation); file names are relative to the folder all sources share.
    rule = DecisionRule.from_model_info({**model_info, "decision_threshold": threshold})
    root = Path(os.path.commonpath([source.folder.resolve() for source in sources]))
    unfamiliar = unfamiliar_reasons(model_info, images.sizes, images.formats)
    write_predictions(out_dir / PREDICTIONS_FILE, root, [path.resolve() for path in images.files], probabilities,
                      class_names, rule, unfamiliar, true_labels=images.labels)
    return metrics, split_counts


def evaluate_robustness(model: keras.Model, model_info: Mapping[str, Any], sources: Sequence[Source],
                        batch_size: int = DEFAULTS.batch_size) -> dict[str, Any]:
    """Accuracy (and for two classes ROC AUC) of every source together under each perturbation.

    Every image of ``sources`` is predicted again after each ``robustness.PERTURBATIONS`` entry,
    applied to its decoded pixels before the model's resize, and scored by the same decision rule
    as the clean images (``source_metrics`` at model.json's decision threshold).

    Returns:
        ``{"clean": {"accuracy": ..., "roc_auc": ...}, "perturbations": {kind: {strength: {...}}}}``,
        strengths as text ("90", "0.5") since JSON keys are strings.
    """
    class_names = list(model_info["class_names"])
    binary = len(class_names) == 2
    positive_class = model_info.get("positive_class") if binary else None
    threshold = DecisionRule.from_model_info(model_info).decision_threshold
    labels = [label for source in sources for label in source.images.labels]

    def scored(probabilities: np.ndarray) -> dict[str, float | None]:
        numbers = source_metrics(labels, probabilities, class_names, positive_class, threshold)
        return {"accuracy": numbers["accuracy"], **({"roc_auc": numbers["roc_auc"]} if binary else {})}

    image_size = model_image_size(model, model_info)
    steps = [(kind, strength) for kind, strengths in PERTURBATIONS.items() for strength in strengths]
    results: dict[str, dict[str, dict[str, float | None]]] = {kind: {} for kind in PERTURBATIONS}
    for kind, strength in progress(steps, desc="robustness", unit="perturbation"):
        probabilities = np.concatenate([predict(model, source.images, batch_size, image_size, (kind, strength))
                                        for source in sources])
        results[kind][f"{strength:g}"] = scored(probabilities)
    return {"clean": scored(_combined(sources)[1]), "perturbations": results}


def evaluate_folders(model: keras.Model, model_info: Mapping[str, Any], folders: Sequence[Path], out_dir: Path,
                     batch_size: int = DEFAULTS.batch_size, *, robustness: bool = False) -> dict[str, Any]:
    """Evaluates the model on folders of class folders (one source each); writes metrics, report, plots, EVALUATION.md.

    Each folder's class folders must be exactly the model's classes (matched by name, any order);
    images may have any size; broken files are skipped and listed. The metrics, report and plots
    cover every source together; ``sources`` in metrics.json gives each folder's ``source_metrics``
    (named by ``source_names``) and ``combined`` the same numbers over all of them. For two classes
    the metrics at model.json's ``decision_threshold`` are added when it has one.

    Args:
        model: the classifier (raw RGB 0..255 in, softmax out).
        model_info: its model.json (``class_names``, ``image_size``, ``positive_class``, ...).
        folders: the sources, each with one sub-folder per class.
        out_dir: where the outputs go (created; outputs already there are replaced, so callers pick
            the folder with ``unused_output_folder``).
        batch_size: images per forward pass.
        robustness: also evaluate under every perturbation (``evaluate_robustness``): metrics.json
            gains ``robustness`` and ``robustness_clean``, and robustness.png is written.

    Returns:
        The metrics, as written to metrics.json.

    Raises:
        UserError: if a folder is missing or given twice, its classes differ from the model's, or it holds
            no image; or ``out_dir`` is a run folder (holds model.json), whose test results must not be replaced.
    """
    folders, out_dir = [Path(folder) for folder in folders], Path(out_dir)
    if not folders:
        raise ValueError("evaluate_folders needs at least one folder")
    if (out_dir / MODEL_JSON_FILE).is_file():
        # A run folder's metrics.json, report and plots describe its test split; keep them.
        raise UserError(f"{out_dir} is a training run's folder (it has {MODEL_JSON_FILE}); evaluating there would "
                        "replace the run's test results. Choose another output folder, e.g. "
                        f"{out_dir / 'evaluations' / folders[0].name}.")
    class_names = list(model_info["class_names"])
    rule = DecisionRule.from_model_info(model_info)
    threshold = rule.decision_threshold
    extra = {"threshold_source": "model.json"} if threshold is not None else {}
    sources = _predict_sources(model, model_info, folders, batch_size)
    metrics, split_counts = _evaluate(model_info, sources, out_dir, threshold, None, **extra)
    positive_class = metrics["positive_class"]
    metrics["decision_rule"] = rule.describe(class_names)
    metrics["sources"] = {source.name: {"folder": str(source.folder), "num_skipped": len(source.images.skipped),
                                        **source_metrics(source.images.labels, source.probabilities, class_names,
                                                         positive_class, threshold)}
                          for source in sources}
    images, probabilities = _combined(sources)
    metrics["combined"] = source_metrics(images.labels, probabilities, class_names, positive_class, threshold)
    if robustness:
        results = evaluate_robustness(model, model_info, sources, batch_size)
        metrics["robustness_clean"], metrics["robustness"] = results["clean"], results["perturbations"]
        plot_robustness(results["clean"]["accuracy"],
                        {kind: {float(strength): values["accuracy"] for strength, values in by_strength.items()}
                         for kind, by_strength in results["perturbations"].items()},
                        out_dir / ROBUSTNESS_PLOT_FILE)
        metrics["plots"]["robustness"] = ROBUSTNESS_PLOT_FILE
    _write_json(out_dir / METRICS_FILE, metrics)
    title = ", ".join(source.name for source in sources)
    atomic_write_text(out_dir / EVALUATION_CARD_FILE,
                      render_card(model_info, metrics, f"Evaluation on {title}", split_counts, f"Metrics on {title}"))
    logger.info("evaluated %s: %s", metrics["folder"], format_summary(metrics))
    return metrics


def evaluate_folder(model: keras.Model, model_info: Mapping[str, Any], folder: Path, out_dir: Path,
                    batch_size: int = DEFAULTS.batch_size) -> dict[str, Any]:
    """``evaluate_folders`` on one folder."""
    return evaluate_folders(model, model_info, [folder], out_dir, batch_size)


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
    sources = _predict_sources(model, model_info, [test_dir], batch_size)
    metrics, _ = _evaluate(model_info, sources, out_dir, threshold, split_counts, **extra)
    _write_json(out_dir / METRICS_FILE, metrics)
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
    (source,) = _predict_sources(model, model_info, [folder], batch_size)
    images, probabilities = source.images, source.probabilities
    positive = positive_index(model_info["class_names"], model_info.get("positive_class"))
    labels, scores = np.asarray(images.labels), probabilities[:, positive].astype(np.float64)
    try:
        threshold = choose_threshold(labels == positive, scores)
    except ValueError as error:
        logger.warning("no decision threshold from %s: %s", folder, error)
        return None, None
    at = threshold_metrics(labels, scores, positive, threshold)
    return threshold, {"split": VALIDATION, "num_images": len(images), "num_skipped": len(images.skipped),
                       "f1": at["f1"], "accuracy": at["accuracy"]}
