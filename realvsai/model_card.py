"""The Markdown card written beside an evaluation: MODEL_CARD.md for a run, EVALUATION.md for folders.

    text = render_card(model_info, metrics, "Model card: run1", split_counts)
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from realvsai.cli import plural
from realvsai.config import (
    CROP_GRID,
    EVALUATION_CARD_FILE,
    FEW_CLASSES,
    METRICS_FILE,
    MONITOR,
    REPORT_FILE,
    UNREADABLE_FILE,
    best_epoch_monitor,
)
from realvsai.image_stats import grayscale_counts, sides, unseen_colour
from realvsai.layout import TRAIN
from realvsai.metrics import (
    DecisionRule,
    balanced_accuracy_over,
    distinct_figures,
    one_answer_text,
    skipped_why,
    uncertain_text,
)
from realvsai.run import (
    DEMO_WARNING,
    MIN_IMAGES_PER_KIND,
    chance_verdict,
    is_demo,
    of_one_class,
    size_bands,
    validation_by_kind,
)

if TYPE_CHECKING:
    from realvsai.run import ModelRun

_CAPTIONS = {
    "confusion_matrix": "Confusion matrix (counts and row-normalised)",
    "roc_curve": "ROC curve",
    "precision_recall_curve": "Precision-recall curve",
    "reliability_diagram": "Reliability diagram (calibration)",
    "class_distribution": "Class distribution per split",
    "confident_errors": "Most confident errors",
    "robustness": "Accuracy under perturbation",
}
# The plots every evaluation writes, by kind (robustness.png only with --robustness).
PLOT_FILES = {kind: f"{kind}.png" for kind in _CAPTIONS if kind != "robustness"}
# A test set of fewer images than this is named as a limitation: on the card, and beside the app's test figures.
SMALL_TEST_SET = 1000
_PERTURBATION_LABELS = {"jpeg": "JPEG quality {:g}", "blur": "Gaussian blur σ={:g}", "downscale": "downscale ×{:g}"}


def _number(value: Any) -> str:
    """Four decimals; a float they would show as 0.0000 but is not (a learning rate of 1e-05) in full."""
    if not isinstance(value, float):
        return "n/a" if value is None else str(value)
    return f"{value:.4g}" if 0 < abs(value) < 0.00005 else f"{value:.4f}"


# The card's name of a metrics.json key where the key alone would mislead: the test's loss is not training's.
METRIC_LABELS = {"loss": "log loss (plain cross-entropy)"}


def _kind_verdict(by_kind: dict[str, Any], numbers: dict[str, Any], consequence: str, num_classes: int) -> str:
    """The last cell of a kind's row in "Validation by kind of image": at or below chance, or which classes it had
    no image of (its balanced accuracy is then the recall of the others alone), with ``consequence`` where that says
    nothing of telling the ``num_classes`` classes apart (``run.of_one_class``); else empty."""
    lacks = f"no {', '.join(numbers['missing_classes'])} image" if numbers.get("missing_classes") else ""
    if of_one_class(numbers, num_classes):  # before its chance verdict: of one class it is untested, as answers say
        return f"**{lacks}{consequence}**"
    if numbers["near_chance"]:
        return f"**{chance_verdict(by_kind, numbers)}{f', with {lacks}' if lacks else ''}{consequence}**"
    return lacks


def markdown_text(name: str) -> str:
    """A class, source or folder ``name`` as Markdown that shows it as it is: a "|" would end a table cell, "*x*"
    or "_x_" turn italic, "<b>" bold the rest of the page, and "$" begin LaTeX in the app (Streamlit's Markdown).
    An "_" inside a word (real_images) emphasises nothing and is kept as it is, so the card stays readable as
    text."""
    return re.sub(r"([\\`*\[\]<>|~$]|(?<![^\W_])_|_(?![^\W_]))", r"\\\1", name)


def code_span(name: str) -> str:
    """``name`` as inline code, shown as typed (never read as Markdown), fenced so that a backtick in it does not end
    the span: the card's and the app's."""
    return f"`` {name} ``" if "`" in name else f"`{name}`"


def _table(headers: list[str], rows: list[list[Any]], align: str = "---:") -> list[str]:
    """Markdown table lines; the first column is left-aligned."""
    return ["| " + " | ".join(headers) + " |", "|---|" + f"{align}|" * (len(headers) - 1),
            *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)]


def few_threshold_images(selection: Mapping[str, Any] | None, positive_class: str | None,
                         negative_class: str | None) -> str | None:
    """A sentence when the decision threshold was chosen on fewer than ``MIN_IMAGES_PER_KIND`` validation images
    of either class (``threshold_selection``'s ``num_positive``, and ``num_images`` less it for the negative class:
    balanced accuracy weighs the two recalls alike, so a lone image of either one moves the threshold), else None."""
    selection = selection or {}
    positives, total = selection.get("num_positive"), selection.get("num_images")
    if not isinstance(positives, int):
        return None
    counts = {positive_class: positives, **({negative_class: total - positives} if isinstance(total, int) else {})}
    few = [(name, count) for name, count in counts.items() if count < MIN_IMAGES_PER_KIND]
    if not few:
        return None
    chosen_on = " and ".join(f"{count} validation image{'s' * (count != 1)} of {name}" for name, count in few)
    return (f"The decision threshold was chosen on {chosen_on}: it may sit far from where it belongs. Give "
            f"validation more {' and '.join(str(name) for name, _ in few)} images (re-split) for a steadier one.")


def small_test_set(num_images: int | None) -> str | None:
    """The sentence the card's limitations and the app's test figures give when the test set has fewer than
    ``SMALL_TEST_SET`` images; None for a larger one, or when the number is not recorded."""
    if num_images is None or num_images >= SMALL_TEST_SET:
        return None
    return (f"The test set is small ({plural(num_images, 'image')}): a few images more or less right move its "
            "test numbers noticeably.")


def few_test_images(metrics: Mapping[str, Any]) -> str | None:
    """A sentence naming the classes with fewer than ``MIN_IMAGES_PER_KIND`` test images (but some), whose recall,
    and the balanced accuracy and ranking figures built on it, one image more or less right moves by a large step,
    however large the test set (2,000 FAKE beside 3 REAL); None when there is none."""
    few = {name: values["support"] for name, values in (metrics.get("per_class") or {}).items()
           if isinstance(values.get("support"), int) and 0 < values["support"] < MIN_IMAGES_PER_KIND}
    if not few:
        return None
    named = ", ".join(f"{markdown_text(name)} has only {plural(count, 'test image')}" for name, count in few.items())
    one = len(few) == 1
    return (f"{named}: each image right or wrong moves {'its' if one else 'a'} recall by 1/{max(few.values())}"
            f"{'' if one else ' or more'}, and the balanced accuracy and ROC AUC with it. Test on more images of "
            f"{'it' if one else 'them'} before trusting those numbers.")


def untested_classes(metrics: Mapping[str, Any]) -> str | None:
    """A sentence naming the classes without test images (``missing_classes``), the worst case of
    ``few_test_images``: nothing measured says how the model does on them; None when there is none."""
    missing = metrics.get("missing_classes") or []
    if not missing:
        return None
    named = ", ".join(map(markdown_text, missing[:-1])) + " or " * (len(missing) > 1) + markdown_text(missing[-1])
    them = "it" if len(missing) == 1 else "them"
    return (f"The model was never tested on {named}: the test set has no image of {them}, so no number here says how "
            "the model does on such images. Test it on some before trusting it there.")


def test_caveats(model_info: Mapping[str, Any], metrics: Mapping[str, Any]) -> list[str]:
    """What the test figures in ``metrics`` do not say of this model, as the card's limitations say it and the app
    beside its figures: a decision threshold chosen on few validation images, classes with no or few test images."""
    class_names, positive = list(model_info["class_names"]), metrics.get("positive_class")
    caveats = (few_threshold_images(metrics.get("threshold_selection"), markdown_text(positive or ""),
                                    markdown_text(next((name for name in class_names if name != positive), ""))),
               untested_classes(metrics), few_test_images(metrics))
    return [text for text in caveats if text]


def figure_warnings(run: ModelRun) -> list[str]:
    """What the model card's limitations say of the test figures (``test_caveats``), and a model that answered one
    class for every test image (``metrics.one_answer_text``): from metrics.json, which holds them all, else
    model.json's summary of it."""
    numbers = run.metrics or dict(run.info.get("test_metrics") or {})
    one = one_answer_text(numbers, code_span)
    return ([f"{one[0].upper()}{one[1:]}."] if one else []) + test_caveats(run.info, numbers)


def few_threshold_images_without_test(run: ModelRun, shown: list[str], positive_index: int) -> str | None:
    """``few_threshold_images`` for a two-class run without test numbers, whose metrics would say how its decision
    threshold was chosen: from the validation images model.json counts, which it was chosen on; ``shown``: the class
    names as the caller shows them."""
    validation = (run.info.get("counts") or {}).get("validation") or {}
    counts = [validation.get(name) for name in run.class_names]
    if len(counts) != 2 or run.info.decision_threshold is None or not all(isinstance(count, int) for count in counts):
        return None
    return few_threshold_images({"num_positive": counts[positive_index], "num_images": sum(counts)},
                                shown[positive_index], shown[1 - positive_index])


# What follows model.json's shortcut warning where a model's answers are given (the app's page, --predict).
SHORTCUT_CONSEQUENCE = "Its answers, and its test figures, may measure that rather than the content."
NO_TEST_METRICS_SHOWN = "No test metrics shown"  # before ``ModelRun.unmeasured``'s why
NO_TEST_METRICS = "No test metrics recorded for this model."


def model_warnings(run: ModelRun) -> list[str]:
    """What the app's page says of the model as a whole above its answers, in its words, for a caller without a page
    (--predict): a demo model, a shortcut, test numbers not its rule's (``ModelRun.unmeasured``), a small or lopsided
    test set (``small_test_set``, ``figure_warnings``), none recorded and a threshold chosen on few images; empty where
    nothing is to be doubted. A run not finished is said where it loads (``run.load_run``)."""
    warnings = [DEMO_WARNING] if run.demo else []
    if shortcut := run.info.get("shortcut_warning"):
        warnings.append(f"{shortcut} {SHORTCUT_CONSEQUENCE}")
    if run.test_metrics():
        warnings += [text for text in (small_test_set(run.num_test_images()), *figure_warnings(run)) if text]
    elif run.unmeasured:
        warnings.append(f"{NO_TEST_METRICS_SHOWN}: {run.unmeasured}")
    elif not run.unfinished:
        said = few_threshold_images_without_test(run, run.class_names, run.info.rule().positive_index)
        warnings += [f"{NO_TEST_METRICS} {said}"] if said else []
    return warnings


def _colour(profile: Mapping[str, Any]) -> str:
    """How many training images were grayscale, in words ("; all in colour"); "" where not counted."""
    if (counts := grayscale_counts(profile)) is None:
        return ""
    images, grayscale = counts
    if grayscale == 0:
        return "; all in colour"
    return "; all grayscale" if grayscale == images else f"; {grayscale:,} of {images:,} grayscale"


def _cifake_sized(profile: dict[str, Any] | None) -> bool:
    """Whether the training images (``training_images``) were all CIFAKE's 32×32."""
    return bool(profile) and profile["min_side"] == profile["max_side"] == 32


def render_card(model_info: Mapping[str, Any], metrics: Mapping[str, Any], title: str,
                split_counts: Mapping[str, Mapping[str, int]] | None = None, metrics_heading: str = "Test metrics"
                ) -> str:
    """Markdown: the model, data and counts, training configuration, metrics, plots, limitations."""
    lines = [*_model_section(model_info, metrics, title),
             *_data_section(model_info, metrics, split_counts),
             *_training_section(model_info),
             *_metrics_section(model_info, metrics, metrics_heading),
             *_per_source_section(model_info, metrics),
             *_by_kind_section(model_info, metrics),
             *_robustness_section(metrics),
             *_plots_section(metrics),
             *_limitations_section(model_info, metrics)]
    return "\n".join(lines) + "\n"


def _model_section(model_info: Mapping[str, Any], metrics: Mapping[str, Any], title: str) -> list[str]:
    """The card's opening: the title, the model and its classes, what it takes as input, when it was created, and
    the demo model's warning."""
    class_names = list(model_info["class_names"])
    positive = metrics.get("positive_class")
    image_size = model_info.get("image_size", "?")
    crops = model_info.get("input_mode") == "crops"
    lines = [f"# {title}", "",
             f"A {model_info.get('backbone', 'Keras')} image classifier "
             f"(weights: {model_info.get('weights', 'unknown')}) "
             f"over {len(class_names)} classes, in label order: {', '.join(map(code_span, class_names))}."
             + (f" Positive class: {code_span(positive)}." if positive else ""),
             "", f"Input: {model_info.get('preprocessing', 'raw RGB 0..255 images of any size')}; "
             + (f"{CROP_GRID}x{CROP_GRID} crops of {image_size} px at native resolution (an image smaller than that "
                "enlarged first), the softmax averaged over them." if crops
                else f"the centre square resized to {image_size} px inside the model.")]
    if model_info.get("created"):
        lines.append(f"Created {model_info['created']}.")
    if is_demo(model_info):
        lines += ["", "**Demo model: trained on synthetic demo images, not on real data. Its numbers say nothing "
                  "about real photos or AI-generated images.**"]
    return lines


def _data_section(model_info: Mapping[str, Any], metrics: Mapping[str, Any],
                  split_counts: Mapping[str, Mapping[str, int]] | None) -> list[str]:
    """The "## Data" section: images per class and split (``split_counts``, else model.json's), the augmented
    copies among the training images, their sizes and formats, the shortcut warning, and what this evaluation read."""
    class_names = list(model_info["class_names"])
    lines = ["", "## Data", ""]
    if counts := split_counts or model_info.get("counts"):
        rows = [[markdown_text(name), *(f"{counts[split].get(name, 0):,}" for split in counts)] for name in class_names]
        rows.append(["**total**", *(f"{sum(counts[split].values()):,}" for split in counts)])
        lines += [*_table(["class", *counts], rows), ""]
    if (copies := model_info.get("augmented_copies")) and counts and TRAIN in counts:
        settings = ", ".join(f"{name} {value}" for name, value in (copies.get("settings") or {}).items())
        lines += [f"{copies['count']:,} of the {plural(sum(counts[TRAIN].values()), 'training image')} "
                  + ("is an augmented copy " if copies["count"] == 1 else "are augmented copies ")
                  + f"made offline (DataAugmentation.py{': ' + settings if settings else ''}): the model saw fewer "
                  "distinct images than that count.", ""]
    if profile := model_info.get("training_images"):
        unseen = unseen_colour(profile)
        lines += [f"Training images: {sides(profile['min_side'], profile['max_side'])}; "
                  f"{', '.join(profile.get('formats') or []) or 'format unknown'}{_colour(profile)}. Images far "
                  "outside this (a side under half the smallest or over twice the largest, another format"
                  + (f", a {unseen} image, as no training image was" if unseen else "")
                  + ") are flagged unfamiliar by the app, --predict and the evaluation, and never called certain.",
                  ""]
    if model_info.get("shortcut_warning"):
        lines += [f"**Warning: {model_info['shortcut_warning']}**", ""]
    skipped = metrics.get("num_skipped") or 0
    lines.append(f"Evaluated on `{metrics['folder']}`: {plural(metrics['num_images'], 'image')}"
                 + (f", {plural(skipped, 'file')} skipped: {skipped_why(skipped)} (listed in "
                    f"{UNREADABLE_FILE} and metrics.json)."
                    if metrics.get("num_skipped") else ", no file skipped."))
    return lines


def _training_section(model_info: Mapping[str, Any]) -> list[str]:
    """The "## Training configuration" section, the run's settings, then its best epoch; nothing where model.json
    has neither."""
    lines: list[str] = []
    if config := model_info.get("config"):
        # A "|" inside a value would end the table cell; GitHub's Markdown takes "\|" even in code.
        lines += ["", "## Training configuration", "", *_table(["setting", "value"], [
            [key, f"`{json.dumps(value, ensure_ascii=False).replace('|', chr(92) + '|')}`"]
            for key, value in config.items()], align="---")]
    if model_info.get("best_epoch"):
        best = ", ".join(f"{key} {_number(value)}" for key, value in model_info["best_epoch"].items())
        penalty = ("; loss and val_loss, training's objective, add the head's L2 penalty"
                   if (model_info.get("config") or {}).get("l2", 1) else "")
        chosen_by = best_epoch_monitor(model_info)
        monitors = any(key.removeprefix("val_") in ("accuracy", "precision", "recall", "f1", "auc")
                       for key in model_info["best_epoch"])
        lines += ["", f"Best epoch (the saved model): {best}. It has the run's lowest {chosen_by}"
                  + (": cross-entropy, class-weighted where class weights are on" if chosen_by == MONITOR else "")
                  + f"{penalty}; learning_rate is the schedule's at the epoch's end."
                  + (" The epoch's other figures are Keras' monitors during training: accuracy, precision, recall and "
                     "F1 of the most probable class, not the decision rule, and AUC over 200 thresholds, an "
                     "approximation of the ROC AUC." if monitors else "")]
    return lines


def _metrics_section(model_info: Mapping[str, Any], metrics: Mapping[str, Any], heading: str) -> list[str]:
    """The metrics under ``heading``: the headline table, the classes without test images, the decision rule the
    numbers follow, and the table per class."""
    class_names = list(model_info["class_names"])
    threshold, positive = metrics.get("decision_threshold"), metrics.get("positive_class")
    average = "of the positive class" if metrics["average"] == "binary" else "macro averages; ROC AUC one-vs-rest"
    # model_info is the one training wrote, before this evaluation added the threshold to model.json.
    rule = DecisionRule.from_model_info({**model_info, "decision_threshold": threshold, "positive_class": positive})
    lines = ["", f"## {heading}", "", *_headline_table(metrics, average, len(class_names))]
    if metrics.get("missing_classes"):
        lines += ["", f"No test images of {', '.join(f'`{name}`' for name in metrics['missing_classes'])}: the "
                  + ("macro averages, balanced accuracy and ROC AUC are over the other classes (precision's also "
                     "over those the model answered, whose answers were all wrong)." if metrics["average"] == "macro"
                     else "figures that need images of both classes (balanced accuracy, ROC AUC, average precision, "
                     "and the positive class's recall and F1 where it is the one missing) are n/a.")]
    if one_answer := one_answer_text(metrics, code_span):
        lines += ["", f"{one_answer[0].upper()}{one_answer[1:]}."]
    lines += ["", _rule_text(rule, class_names, metrics), ""]
    lines += _table(["class", "precision", "recall", "F1", "images"], [
        [markdown_text(name), *(_number(values[key]) for key in ("precision", "recall", "f1")),
         f"{values['support']:,}"]
        for name, values in metrics["per_class"].items()])
    lines += ["", f"Full numbers: [{METRICS_FILE}]({METRICS_FILE}), [{REPORT_FILE}]({REPORT_FILE})."]
    return lines


def _headline_table(metrics: Mapping[str, Any], average: str, num_classes: int) -> list[str]:
    """The headline and ranking metrics with what decides the predicted class: at a decision threshold, the rule's
    numbers beside argmax's; else argmax's alone. ``average`` says what precision, recall and F1 average; the
    balanced accuracy says over how many of the ``num_classes`` classes it is taken, where not over all."""
    threshold, positive = metrics.get("decision_threshold"), metrics.get("positive_class")
    labels = {**METRIC_LABELS, "balanced_accuracy": "balanced_accuracy" + balanced_accuracy_over(metrics, num_classes),
              "majority_baseline": f"majority_baseline (always {code_span(metrics.get('majority_class') or '')})"}
    # The mean recall beside the accuracy, which a lopsided test set inflates (metrics before it lack it).
    headline = ("accuracy", *(("balanced_accuracy",) if "balanced_accuracy" in metrics else ()), "precision",
                "recall", "f1")
    # The accuracy of always answering the most frequent class: a rule's own, so one value (metrics before it lack it).
    ranking = (*(("majority_baseline",) if "majority_baseline" in metrics else ()), "roc_auc", "average_precision",
               "loss", "expected_calibration_error")
    if threshold is None:
        return [f"Predicted class = the most probable one. Precision, recall and F1 are {average}.", "",
                *_table(["metric", "value"], [[labels.get(key, key), _number(metrics[key])]
                                              for key in (*headline, *ranking)])]
    [threshold_text] = distinct_figures([threshold], 4)
    return [f"Predicted class: {code_span(positive)} when P({markdown_text(positive)}) >= {threshold_text}, the "
            "threshold that "
            "maximised balanced accuracy (the mean of the two classes' recalls) on the training run's "
            "validation images (kept in model.json): the rule the app "
            f"answers by. The most probable class (argmax) beside it, for comparison. Precision, recall and "
            f"F1 are {average}.", "", *_table(["metric", "decision rule", "argmax"], [
                [labels.get(key, key), _number(metrics[key]), _number(metrics.get(f"argmax_{key}"))]
                for key in headline]),
            *(f"| {labels.get(key, key)} | {_number(metrics[key])} | |" for key in ranking)]


def _rule_text(rule: DecisionRule, class_names: list[str], metrics: Mapping[str, Any]) -> str:
    """The paragraph saying the decision rule the app answers by, and how often it answers Uncertain and why."""
    text = (f"{rule.describe(list(map(markdown_text, class_names)))} The app answers by this rule; the numbers above "
            "are its numbers, each image scored at the class the rule leans to.")
    if (uncertain := uncertain_text(metrics)) is not None:
        text += (f" It says {uncertain}: below the confidence threshold, unlike the training images, or of a "
                 "size validation found the model at chance on or had no image of (`uncertain` in "
                 "predictions.csv, and `unfamiliar` says which).")
    return text


def _per_source_section(model_info: Mapping[str, Any], metrics: Mapping[str, Any]) -> list[str]:
    """The "## Per source" section: each test folder's numbers, then all of them together; nothing where the
    metrics have no ``sources`` (a run's own test, which ``evaluation.evaluate_run`` scores as one)."""
    if not metrics.get("sources"):
        return []
    class_names, positive = list(model_info["class_names"]), metrics.get("positive_class")
    # The positive class first; of many classes none (metrics.json has each one's): a row would not fit a page.
    ordered = sorted(class_names, key=lambda name: name != positive) if len(class_names) <= FEW_CLASSES else []
    headers = ["source", "images", "accuracy", "AP", "ROC AUC",
               *(f"accuracy on {markdown_text(name)}" for name in ordered)]
    rows = [[label, f"{numbers['num_images']:,}",
             *(_number(numbers[key]) for key in ("accuracy", "average_precision", "roc_auc")),
             *(_number(numbers["class_accuracy"][class_name]) for class_name in ordered)]
            for label, numbers in [*((markdown_text(name), numbers)
                                     for name, numbers in metrics["sources"].items()),
                                   ("**all sources**", metrics["combined"])]]
    return ["", "## Per source", "", "Each test folder on its own, then all of them together (the metrics "
            "above). Accuracy follows the decision rule above; the accuracy on a class is its recall"
            f"{'' if ordered else f' (per class in [{METRICS_FILE}]({METRICS_FILE}))'}; AP and ROC AUC need no "
            "threshold.", "",
            *_table(headers, rows)]


def _by_kind_section(model_info: Mapping[str, Any], metrics: Mapping[str, Any]) -> list[str]:
    """The "## Validation by kind of image" section: the decision rule on validation per source dataset and size
    band, and which of them the app answers Uncertain on; nothing where neither the metrics nor model.json has them."""
    by_kind = validation_by_kind((metrics.get("threshold_selection") or {}).get("by_kind")
                                 or model_info.get("validation_by_kind"))
    if not by_kind:
        return []
    # An upload's size is known, its source is not: only a size band makes the answers Uncertain.
    uncertain, num_classes = {"source": "", "size": ": answers Uncertain"}, len(model_info["class_names"])
    rows = [[f"{kind}: {markdown_text(name)}", f"{numbers['num_images']:,}", _number(numbers["accuracy"]),
             _number(numbers["balanced_accuracy"]), _kind_verdict(by_kind, numbers, uncertain[kind], num_classes)]
            for kind in ("source", "size") for name, numbers in (by_kind.get(kind) or {}).items()]
    if sizes := by_kind.get("size"):  # the bands with no validation image, untested (``run.untested``), in order
        rows = [row for row in rows if not row[0].startswith("size: ")] + [
            next(row for row in rows if row[0] == f"size: {band}") if band in sizes
            else [f"size: {band}", "0", "n/a", "n/a", f"**no validation image{uncertain['size']}**"]
            for band in size_bands()]
    return ["", "## Validation by kind of image", "", "The decision rule on the validation images of each "
            "source dataset (the folder they were split or merged from, by manifest.csv) and each size band "
            "(short side). Where the balanced accuracy is not shown (by its one-sided 95 % lower bound) "
            f"more than {by_kind.get('near_chance_margin', 0.05):.2f} above chance "
            f"({by_kind.get('chance', 0.5):.2f}; of a kind with some of the classes, 1 / their number), on "
            "however few images, or where no validation image was of that size or all were of one class, the "
            "app and --predict answer Uncertain on images of that size, with the reason.", "",
            *_table(["kind", "images", "accuracy", "balanced accuracy", ""], rows)]


def _robustness_section(metrics: Mapping[str, Any]) -> list[str]:
    """The "## Robustness" section: accuracy (and two classes' ROC AUC) per perturbation, against the clean
    images; nothing without --robustness."""
    if not metrics.get("robustness"):
        return []
    clean = metrics["robustness_clean"]
    auc = ["roc_auc"] if "roc_auc" in clean else []  # two classes only
    named = [("clean", clean), *((_PERTURBATION_LABELS[kind].format(float(strength)), values)
                                 for kind, by_strength in metrics["robustness"].items()
                                 for strength, values in by_strength.items())]
    rows = [[name, _number(values["accuracy"]), f"{values['accuracy'] - clean['accuracy']:+.4f}",
             *(_number(values[key]) for key in auc)] for name, values in named]
    left_out = metrics.get("robustness_left_out") or []
    return ["", "## Robustness", "", "The same images again, each perturbation applied to the full-resolution "
            "decoded pixels, as a user's copy would be changed, written losslessly (PNG), then through the "
            "model's resize or crops, scored by the same decision rule; change is against the clean images, "
            "unchanged copies taken the same route." + (
                f" {plural(len(left_out), 'image')} left out, over the pixel limit at full resolution (a large "
                "JPEG evaluated above from its reduced decode): see `robustness_left_out` in metrics.json."
                if left_out else ""), "",
            *_table(["images", "accuracy", "change", *(["ROC AUC"] if auc else [])], rows)]


def robustness_line(metrics: Mapping[str, Any]) -> str | None:
    """--robustness in one line for the terminal: the clean accuracy, and each perturbation's at its strongest (the
    card's "## Robustness" table has every step); None without it."""
    if not metrics.get("robustness"):
        return None
    clean = metrics["robustness_clean"]["accuracy"]
    strongest = []
    for kind, by_strength in metrics["robustness"].items():
        strength, values = list(by_strength.items())[-1]  # mildest first
        accuracy = values["accuracy"]
        strongest.append(f"{_PERTURBATION_LABELS[kind].format(float(strength))} {accuracy:.4f} "
                         f"({accuracy - clean:+.4f})")
    return (f"robustness: accuracy {clean:.4f} clean; at the strongest of each perturbation: {', '.join(strongest)}; "
            f"every step in {EVALUATION_CARD_FILE}")


def _plots_section(metrics: Mapping[str, Any]) -> list[str]:
    """The "## Plots" section: a link to each plot the evaluation drew."""
    return ["", "## Plots", "", *(f"- [{_CAPTIONS.get(kind, kind)}]({file_name})"
                                  for kind, file_name in (metrics.get("plots") or {}).items())]


def _limitations_section(model_info: Mapping[str, Any], metrics: Mapping[str, Any]) -> list[str]:
    """The "## Limitations" section: what the numbers do not say, those that apply to this model and test set."""
    class_names = list(model_info["class_names"])
    image_size = model_info.get("image_size", "?")
    crops = model_info.get("input_mode") == "crops"
    limitations = [
        "These numbers hold for images like the test images above, and nothing else. Evaluate the model on "
        "your own images before trusting it: `python ModelTraining.py --evaluate MODEL.h5 --test-dir DIR`.",
        any(name.upper() in ("FAKE", "REAL") for name in class_names)
        and ("A detector trained on CIFAKE is only known to work on CIFAKE-like images: 32×32 CIFAR-10 photos "
             "against Stable Diffusion 1.4 images." if _cifake_sized(model_info.get("training_images")) else
             "A detector of generated images is only known to work on images like its training images, from the "
             "cameras and generators they came from.")
        + " Other generators, other resolutions, and post-processing (JPEG re-compression, resizing, filters, "
        "screenshots) need their own evaluation.",
        model_info.get("shortcut_warning") and "The training classes differ in image size, format or colour (the "
        "shortcut warning under Data): the numbers above may measure that, not the content.",
        f"The model sees {CROP_GRID}x{CROP_GRID} crops of {image_size} px at native resolution: on a large image "
        "they cover only part of it, and what lies between them is never seen." if crops else
        f"Every image is cropped to its centre square and resized to {image_size} px; what lies outside the square, "
        "and detail a larger image has, is lost before the model sees it.",
        "Probabilities are not certainties: check the reliability diagram (ECE "
        f"{_number(metrics['expected_calibration_error'])}) before reading them as such.",
        small_test_set(metrics["num_images"]),
        *test_caveats(model_info, metrics),
        is_demo(model_info) and DEMO_WARNING]
    return ["", "## Limitations", "", *(f"- {text}" for text in limitations if text)]
