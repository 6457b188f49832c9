"""The Markdown cards written beside an evaluation: MODEL_CARD.md for a run, EVALUATION.md for folders.

One renderer for both: what the model is, the data it saw, its training configuration, the
metrics with the decision rule the app answers by, the metrics per source and under perturbations
(when the evaluation has them), the plots and the limitations.

    text = render_card(model_info, metrics, "Model card: run1", split_counts)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from realvsai.config import METRICS_FILE, REPORT_FILE
from realvsai.decision import DecisionRule
from realvsai.inference import DEMO_WARNING, is_demo
from realvsai.robustness import label as perturbation_label

# The plots every evaluation writes, by kind, with the caption the card gives each.
PLOT_FILES = {
    "confusion_matrix": "confusion_matrix.png",
    "roc_curve": "roc_curve.png",
    "precision_recall_curve": "precision_recall_curve.png",
    "reliability_diagram": "reliability_diagram.png",
    "class_distribution": "class_distribution.png",
    "confident_errors": "confident_errors.png",
}
_CAPTIONS = {
    "confusion_matrix": "Confusion matrix (counts and row-normalised)",
    "roc_curve": "ROC curve",
    "precision_recall_curve": "Precision-recall curve",
    "reliability_diagram": "Reliability diagram (calibration)",
    "class_distribution": "Class distribution per split",
    "confident_errors": "Most confident errors",
    "robustness": "Accuracy under perturbation",
}


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def sources_table(metrics: Mapping[str, Any]) -> list[str]:
    """Markdown lines: one row per source and one for all of them, by the decision rule.

    Columns: images, accuracy, average precision, ROC AUC, then the accuracy on each class (for two
    classes the positive, fake class first), as papers on generated-image detection report them.
    """
    class_names = list(metrics["class_names"])
    if metrics.get("positive_class"):
        class_names.remove(metrics["positive_class"])
        class_names.insert(0, metrics["positive_class"])
    headers = ["source", "images", "accuracy", "AP", "ROC AUC", *(f"accuracy on {name}" for name in class_names)]
    lines = ["| " + " | ".join(headers) + " |", "|---|" + "---:|" * (len(headers) - 1)]
    rows = [*metrics["sources"].items(), ("**all sources**", metrics["combined"])]
    for name, numbers in rows:
        lines.append(f"| {name} | {numbers['num_images']:,} | {_number(numbers['accuracy'])} | "
                     f"{_number(numbers['average_precision'])} | {_number(numbers['roc_auc'])} | "
                     + " | ".join(_number(numbers["class_accuracy"][class_name]) for class_name in class_names)
                     + " |")
    return lines


def robustness_table(metrics: Mapping[str, Any]) -> list[str]:
    """Markdown lines: accuracy (and ROC AUC for two classes) on clean images and under each perturbation."""
    clean = metrics["robustness_clean"]
    with_auc = "roc_auc" in clean
    lines = ["| images | accuracy | change |" + (" ROC AUC |" if with_auc else ""),
             "|---|---:|---:|" + ("---:|" if with_auc else "")]

    def row(name: str, values: Mapping[str, Any]) -> str:
        change = values["accuracy"] - clean["accuracy"]
        return (f"| {name} | {_number(values['accuracy'])} | {change:+.4f} |"
                + (f" {_number(values['roc_auc'])} |" if with_auc else ""))

    lines.append(row("clean", clean))
    for kind, by_strength in metrics["robustness"].items():
        lines += [row(perturbation_label(kind, float(strength)), values) for strength, values in by_strength.items()]
    return lines


def render_card(model_info: Mapping[str, Any], metrics: Mapping[str, Any], title: str,
                split_counts: Mapping[str, Mapping[str, int]] | None = None, metrics_heading: str = "Test metrics"
                ) -> str:
    """Markdown: data and counts, training configuration, metrics table, plots, limitations."""
    class_names = list(model_info["class_names"])
    lines = [f"# {title}", ""]
    lines.append(
        f"A {model_info.get('backbone', 'Keras')} image classifier (weights: {model_info.get('weights', 'unknown')}) "
        f"over {len(class_names)} classes, in label order: {', '.join(f'`{name}`' for name in class_names)}."
        + (f" Positive class: `{metrics['positive_class']}`." if metrics.get("positive_class") else ""))
    lines += ["", f"Input: {model_info.get('preprocessing', 'raw RGB 0..255 images of any size')}; resized to "
              f"{model_info.get('image_size', '?')} px inside the model."]
    if model_info.get("created"):
        lines.append(f"Created {model_info['created']}.")
    if is_demo(model_info):
        lines += ["", "**Demo model: trained on synthetic demo images, not on real data. Its numbers say nothing "
                  "about real photos or AI-generated images.**"]

    lines += ["", "## Data", ""]
    counts = split_counts or model_info.get("counts") or {}
    if counts:
        splits = list(counts)
        lines.append("| class | " + " | ".join(splits) + " |")
        lines.append("|---|" + "---:|" * len(splits))
        for name in class_names:
            lines.append(f"| {name} | " + " | ".join(f"{counts[split].get(name, 0):,}" for split in splits) + " |")
        lines.append("| **total** | " + " | ".join(f"{sum(counts[split].values()):,}" for split in splits) + " |")
        lines.append("")
    profile = model_info.get("training_images")
    if profile:
        lines.append(f"Training images: {profile['min_side']}-{profile['max_side']} px a side; "
                     f"{', '.join(profile.get('formats') or []) or 'format unknown'}. Images far outside this "
                     "(a side under half the smallest or over twice the largest, another format) are flagged "
                     "unfamiliar by the app and --predict.")
        lines.append("")
    if model_info.get("shortcut_warning"):
        lines += [f"**Warning: {model_info['shortcut_warning']}**", ""]
    lines.append(f"Evaluated on `{metrics['folder']}`: {metrics['num_images']:,} images"
                 + (f", {metrics['num_skipped']:,} broken files skipped (listed in metrics.json)."
                    if metrics.get("num_skipped") else ", no file skipped."))

    config = model_info.get("config") or {}
    if config:
        lines += ["", "## Training configuration", "", "| setting | value |", "|---|---|"]
        # A "|" inside a value would end the table cell; GitHub's Markdown takes "\|" even in code.
        lines += [f"| {key} | `{json.dumps(value, ensure_ascii=False).replace('|', chr(92) + '|')}` |"
                  for key, value in config.items()]
    if model_info.get("best_epoch"):
        best = ", ".join(f"{key} {_number(value)}" for key, value in model_info["best_epoch"].items())
        lines += ["", f"Best epoch (the saved model): {best}."]

    lines += ["", f"## {metrics_heading}", ""]
    at = metrics.get("at_threshold")
    average = ("of the positive class" if metrics["average"] == "binary"
               else "macro averages; ROC AUC one-vs-rest")
    if at:
        lines += [f"Two decision rules: the most probable class (argmax), and `{metrics['positive_class']}` when "
                  f"P({metrics['positive_class']}) >= {at['threshold']:.4f}, the threshold that maximised F1 "
                  "on the training run's validation images (kept in model.json). Precision, recall and F1 are "
                  f"{average}.", "", "| metric | argmax | at threshold |", "|---|---:|---:|"]
        for key in ("accuracy", "precision", "recall", "f1"):
            lines.append(f"| {key} | {_number(metrics[key])} | {_number(at[key])} |")
        for key in ("roc_auc", "average_precision", "loss", "expected_calibration_error"):
            lines.append(f"| {key} | {_number(metrics[key])} | |")
    else:
        lines += [f"Predicted class = the most probable one. Precision, recall and F1 are {average}.", "",
                  "| metric | value |", "|---|---:|"]
        for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "average_precision", "loss",
                    "expected_calibration_error"):
            lines.append(f"| {key} | {_number(metrics[key])} |")
    # model_info is the one training wrote, before this evaluation added the threshold to model.json.
    rule = DecisionRule.from_model_info({**model_info, "decision_threshold": metrics.get("decision_threshold"),
                                         "positive_class": metrics.get("positive_class")})
    lines += ["", f"{rule.describe(class_names)} The app answers by this rule"
              + ("; the at-threshold column holds its numbers." if at else ".")]
    lines += ["", "| class | precision | recall | F1 | images |", "|---|---:|---:|---:|---:|"]
    for name, values in metrics["per_class"].items():
        lines.append(f"| {name} | {values['precision']:.4f} | {values['recall']:.4f} | {values['f1']:.4f} | "
                     f"{values['support']:,} |")
    lines += ["", f"Full numbers: [{METRICS_FILE}]({METRICS_FILE}), [{REPORT_FILE}]({REPORT_FILE})."]

    if metrics.get("sources"):
        lines += ["", "## Per source", "", "Each test folder on its own, then all of them together (the metrics "
                  "above). Accuracy follows the decision rule above; the accuracy on a class is its recall; AP and "
                  "ROC AUC need no threshold.", "", *sources_table(metrics)]
    if metrics.get("robustness"):
        lines += ["", "## Robustness", "", "The same images again after each perturbation of the decoded pixels "
                  "(before the model's resize), scored by the same decision rule; change is against the clean "
                  "images.", "", *robustness_table(metrics)]

    lines += ["", "## Plots", ""]
    for kind, file_name in (metrics.get("plots") or {}).items():
        lines.append(f"- [{_CAPTIONS.get(kind, kind)}]({file_name})")

    lines += ["", "## Limitations", ""]
    lines.append("- These numbers hold for images like the test images above, and nothing else. Evaluate the model on "
                 "your own images before trusting it: `python ModelTraining.py --evaluate MODEL.h5 --test-dir DIR`.")
    if any(name.upper() in ("FAKE", "REAL") for name in class_names):
        lines.append("- A detector trained on CIFAKE is only known to work on CIFAKE-like images: 32×32 CIFAR-10 "
                     "photos against Stable Diffusion 1.4 images. Other generators, other resolutions, and "
                     "post-processing (JPEG re-compression, resizing, filters, screenshots) need their own evaluation.")
    if model_info.get("shortcut_warning"):
        lines.append("- The training classes differ in image size or format (the shortcut warning under Data): "
                     "the numbers above may measure that, not the content.")
    lines.append(f"- Every image is resized to {model_info.get('image_size', '?')} px; detail a larger image has is "
                 "lost before the model sees it.")
    lines.append("- Probabilities are not certainties: check the reliability diagram (ECE "
                 f"{_number(metrics['expected_calibration_error'])}) before reading them as such.")
    if metrics["num_images"] < 1000:
        lines.append(f"- The test set is small ({metrics['num_images']:,} images): a few images more or less right "
                     "move these numbers noticeably.")
    if is_demo(model_info):
        lines.append(f"- {DEMO_WARNING}")
    return "\n".join(lines) + "\n"
