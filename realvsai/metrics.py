"""How probabilities become an answer (``DecisionRule``) and the numbers of an evaluation (scikit-learn's,
imported when first needed, so the app starts without it).

    metrics = compute_metrics(labels, probabilities, ["FAKE", "REAL"], positive_class="FAKE")
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from realvsai.cli import plural
from realvsai.config import CONFIDENCE_THRESHOLD, POSITIVE_WORDS
from realvsai.errors import UserError
from realvsai.layout import class_folder_of

logger = logging.getLogger(__name__)

CALIBRATION_BINS = 15  # equal-width bins over the top-class confidence, as in Guo et al. (2017)
NUM_ERROR_IMAGES = 16  # tiles in the confident-errors grid
CONFIDENCE_STEP = 0.01  # the app's confidence slider moves by this, and the evaluation counts Uncertain at each step


def find_positive_class(class_names: Sequence[str], requested: str = "") -> str | None:
    """The positive class of a binary problem: ``requested`` (a UserError if it is not one of two classes),
    else the one class with a word (``AiArt``, ``ai_generated``, ``FAKE``) in ``POSITIVE_WORDS``, else None."""
    if requested:
        requested = class_folder_of([requested], class_names)[requested]  # "é" typed names a Mac's "e" and accent
        if requested not in class_names:
            raise UserError(f"--positive-class {requested}: no such class; the classes are {list(class_names)}.")
        if len(class_names) != 2:
            raise UserError(f"--positive-class applies to two classes; there are {len(class_names)}, whose "
                            "metrics are macro-averaged. Leave it out.")
        return requested
    if len(class_names) != 2:
        return None
    matches = [name for name in class_names
               if POSITIVE_WORDS & {word.lower() for word in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+", name)}]
    return matches[0] if len(matches) == 1 else None


def balanced_class_weights(counts: Mapping[str, int]) -> dict[int, float]:
    """Per-class loss weights (class index -> weight) that make every class count as much, from each class's
    number of training images (every class has some: training refuses an empty class)."""
    from sklearn.utils.class_weight import compute_class_weight

    classes = np.arange(len(counts))
    labels = np.repeat(classes, list(counts.values()))
    return dict(enumerate(compute_class_weight("balanced", classes=classes, y=labels).tolist()))


def class_weight_list(class_weight: Mapping[int, float]) -> list[float]:
    """``class_weight`` (class index -> weight, as model.fit takes it) as a list by class index, a class it leaves out
    weighing 1.0: what an input without Keras' own weighting gathers each label's weight from."""
    return [class_weight.get(index, 1.0) for index in range(max(class_weight) + 1)]


def positive_index(class_names: Sequence[str], positive_class: str | None) -> int:
    """Column of the positive class: ``positive_class`` by name (ValueError if unknown), or 1 when None."""
    if positive_class is None:
        return 1
    if positive_class not in class_names:
        raise ValueError(f"positive class {positive_class!r} is not one of the classes {list(class_names)}")
    return list(class_names).index(positive_class)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# The end of an unfamiliar image's reason (``DecisionRule.reason``): never called certain.
UNFAMILIAR_ANSWER = "not certain on such images"


def distinct_figures(values: Sequence[float], digits: int, percent: bool = False, rounded: int = 0) -> list[str]:
    """``values`` written with ``digits`` decimals (as percentages where ``percent``), or with more where fewer would
    write two different values alike, or a value short of 0 or 1 as 0 or 1 (the first ``rounded`` values may: a
    probability of 1e-7 is 0.0%): a decision threshold of 0.99999535 read 1.000, and "P(FAKE) is 100.0%" beside
    it an answer of the other class. Six more at most."""
    def written(value: float, decimals: int) -> str:
        return f"{value:.{decimals}%}" if percent else f"{value:.{decimals}f}"

    for decimals in range(digits, digits + 7):
        texts = [written(value, decimals) for value in values]
        alike = len({*texts}) < len({*values})
        at_an_end = any(text in (written(0, decimals), written(1, decimals)) and value not in (0, 1)
                        for value, text in zip(values[rounded:], texts[rounded:], strict=True))
        if not (alike or at_an_end):
            break
    return texts


@dataclass(frozen=True)
class DecisionRule:
    """How probabilities become an answer: the one rule of the app, --predict, --evaluate and the model card.

    Two classes with a decision threshold t: the positive class when P(positive) >= t, Uncertain
    when P(positive) lies in ``band``, the same share (``margin`` / 0.5, from the confidence
    threshold) of the room between t and 0 below it and between t and 1 above it. Otherwise: the
    most probable class, Uncertain below ``confidence_threshold``. At t = 0.5 both say the same.
    """

    confidence_threshold: float = CONFIDENCE_THRESHOLD
    decision_threshold: float | None = None  # on P(positive); two classes only
    positive_index: int = 1  # column of the positive class (two classes)

    @classmethod
    def from_model_info(cls, info: Mapping[str, Any], confidence_threshold: float | None = None) -> DecisionRule:
        """The rule model.json records (ValueError for an unknown positive_class); ``confidence_threshold`` wins."""
        binary = len(info["class_names"]) == 2
        if confidence_threshold is None:
            confidence_threshold = _number(info.get("confidence_threshold"))
        return cls(CONFIDENCE_THRESHOLD if confidence_threshold is None else confidence_threshold,
                   _number(info.get("decision_threshold")) if binary else None,
                   positive_index(info["class_names"], info.get("positive_class") if binary else None))

    def confidences(self, num_classes: int) -> list[float]:
        """The confidence thresholds the app's slider offers, ``CONFIDENCE_STEP`` apart up to 1: from 0.5 where the
        rule decides at a decision threshold (below it the band would turn inside out), else from 0."""
        lowest = 0.5 if self.at_threshold(num_classes) else 0.0
        return [round(lowest + step * CONFIDENCE_STEP, 2) for step in range(round((1 - lowest) / CONFIDENCE_STEP) + 1)]

    def at_threshold(self, num_classes: int) -> bool:
        """Whether the rule decides by P(positive) at its decision threshold (two classes with a threshold), not
        by the most probable class."""
        return self.decision_threshold is not None and num_classes == 2

    def _thresholded(self, probabilities: np.ndarray) -> bool:
        return self.at_threshold(np.shape(probabilities)[-1])

    def decide(self, probabilities: np.ndarray) -> np.ndarray:
        """The class index of each row of ``probabilities`` (..., classes)."""
        if not self._thresholded(probabilities):
            return np.argmax(probabilities, axis=-1)
        return self.decide_positive(np.asarray(probabilities)[..., self.positive_index])

    def decide_positive(self, positive_probabilities: np.ndarray) -> np.ndarray:
        """The class index decided from P(positive) alone, at the decision threshold (two classes)."""
        return np.where(np.asarray(positive_probabilities) >= self.decision_threshold, self.positive_index,
                        1 - self.positive_index)

    def uncertain(self, probabilities: np.ndarray, unfamiliar: np.ndarray | bool | None = None) -> np.ndarray:
        """True for each row whose answer is Uncertain; an ``unfamiliar`` image always is."""
        probabilities = np.asarray(probabilities)
        if not self._thresholded(probabilities):
            unsure = np.max(probabilities, axis=-1) < self.confidence_threshold
        else:
            low, high = self.band
            positive = probabilities[..., self.positive_index]
            unsure = (positive > low) & (positive < high)
        return unsure if unfamiliar is None else unsure | np.asarray(unfamiliar, dtype=bool)

    def reason(self, probabilities: np.ndarray, class_names: Sequence[str], unfamiliar: bool = False) -> str:
        """Why one image's ``probabilities`` get their answer, as the app's card and --predict of one image say it:
        what decided the class (at a decision threshold it may have under 50%), and what made an answer Uncertain
        (an ``unfamiliar`` image always is)."""
        probabilities = np.asarray(probabilities)
        index = int(self.decide(probabilities))
        predicted, probability = class_names[index], float(probabilities[index])
        if not self.at_threshold(len(class_names)):  # the most probable class
            decided = f"{probability:.1%} probability"
            doubt = f"Leaning {predicted} at {probability:.1%}, below the {self.confidence_threshold:.0%} threshold"
        else:
            positive, score = class_names[self.positive_index], float(probabilities[self.positive_index])
            side = "≥" if score >= self.decision_threshold else "<"
            score_text, threshold, low, high = distinct_figures([score, self.decision_threshold, *self.band], 1,
                                                                percent=True, rounded=1)
            decided = f"P({positive}) {score_text} {side} the decision threshold {threshold} (chosen on validation)"
            doubt = (f"Leaning {predicted}: P({positive}) is {score_text}, between {low} and {high}, close to the "
                     f"{threshold} decision threshold")
        if self.uncertain(probabilities):  # by the rule alone
            return f"{doubt}, and {UNFAMILIAR_ANSWER}." if unfamiliar else f"{doubt}."
        if unfamiliar:  # decided as a certain answer is, so said the same way
            return f"Leaning {predicted}: {decided}, but {UNFAMILIAR_ANSWER}."
        return decided

    @property
    def margin(self) -> float:
        """How far from an even answer a probability must be to be certain: confidence threshold minus 0.5."""
        return self.confidence_threshold - 0.5

    @property
    def band(self) -> tuple[float, float]:
        """The P(positive) strictly between these is Uncertain (two classes at a decision threshold).

        A fixed distance from the threshold would not do near 0 or 1: at t = 0.02 a margin of 0.1
        below it would cover every negative answer, so the model could never be sure of one.
        """
        share = 2 * self.margin  # margin / 0.5: 0.5 is the room on either side of an even threshold
        threshold = self.decision_threshold
        return threshold - share * threshold, threshold + share * (1 - threshold)

    def describe(self, class_names: Sequence[str]) -> str:
        """The rule in one sentence, as the app and the model card state it: an image it is not to be trusted on
        (``run.doubt``, the app's "Not to be trusted here") is Uncertain whatever its probabilities."""
        distrusted = "an image it is not to be trusted on"
        if not self.at_threshold(len(class_names)):
            if self.confidence_threshold <= 0:
                return (f"Decision rule: the most probable class; Uncertain only on {distrusted} (the confidence "
                        f"threshold {self.confidence_threshold:.2f}).")
            return (f"Decision rule: the most probable class; Uncertain when its probability is below the "
                    f"confidence threshold {self.confidence_threshold:.2f}, and on {distrusted}.")
        positive, other = class_names[self.positive_index], class_names[1 - self.positive_index]
        threshold, low, high = distinct_figures([self.decision_threshold, *self.band], 3)
        decided = (f"Decision rule: {positive} when P({positive}) ≥ {threshold} (the decision threshold chosen on "
                   f"validation), else {other}; ")
        if self.margin <= 0:  # the band is empty
            return decided + (f"Uncertain only on {distrusted} (the confidence threshold "
                              f"{self.confidence_threshold:.2f} leaves no band).")
        return decided + (f"Uncertain when P({positive}) is between {low} and {high} ({self.margin / 0.5:.0%} "
                          f"of the way from the threshold to 0 and to 1: the confidence threshold "
                          f"{self.confidence_threshold:.2f}), and on {distrusted}.")


def _score(metric: Callable[..., float], *args: Any, **kwargs: Any) -> float | None:
    """A ranking metric, or None where the labels leave it undefined (a single class present)."""
    from sklearn.exceptions import UndefinedMetricWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.filterwarnings("ignore", message=".*(Only one class|No positive class|not defined).*")
        try:
            value = float(metric(*args, **kwargs))
        except ValueError as error:
            logger.warning("%s is undefined here: %s", metric.__name__, error)
            return None
    return None if math.isnan(value) else value


def calibration_bins(labels: Sequence[int], probabilities: np.ndarray) -> list[dict[str, float | int | None]]:
    """Per equal-width bin ``(b / CALIBRATION_BINS, (b + 1) / CALIBRATION_BINS]`` of top-class confidence
    (0 in the first): lower, upper, count, mean confidence and accuracy (None when empty)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidences = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    members = np.clip(np.searchsorted(edges, confidences, side="left") - 1, 0, CALIBRATION_BINS - 1)
    counts = np.bincount(members, minlength=CALIBRATION_BINS)
    confidence_sums = np.bincount(members, confidences, minlength=CALIBRATION_BINS)
    correct_sums = np.bincount(members, correct, minlength=CALIBRATION_BINS)
    return [{"lower": float(edges[index]), "upper": float(edges[index + 1]), "count": int(count),
             "confidence": float(confidence_sums[index] / count) if count else None,
             "accuracy": float(correct_sums[index] / count) if count else None}
            for index, count in enumerate(counts)]


def choose_threshold(labels: Sequence[int] | Sequence[bool], positive_probabilities: Sequence[float]) -> float:
    """The threshold on P(positive) maximising balanced accuracy (the mean of the two classes' recalls: Youden's J)
    on these images, halfway between the two scores it falls between; 0.5 (the most probable class) where that
    does as well or nothing beats chance, else the nearest to it on a tie. ValueError when one class is present.

    Not F1: its best threshold leans to the positive class, and a weak model's slides towards calling every
    image positive (F1 0.667 on balanced data), here calling real photos AI-made.
    """
    from sklearn import metrics as sk

    truth = np.asarray(labels).astype(bool)
    if truth.all() or not truth.any():
        raise ValueError("choosing a threshold needs images of both classes")
    scores = np.asarray(positive_probabilities, np.float64)
    # cuts: every distinct score, from the highest (after an infinite one: nothing positive); at a threshold from a
    # cut down to the next lower score the images decide as at the cut.
    false_positive, true_positive, cuts = sk.roc_curve(truth, scores, drop_intermediate=False)
    candidates = np.append((np.minimum(cuts, 1.0) + np.append(cuts[1:], 0.0)) / 2, 0.5)
    at_half = scores >= 0.5
    gains = np.append(true_positive - false_positive, np.mean(at_half[truth]) - np.mean(at_half[~truth]))
    if gains.max() <= 1e-12:  # nothing beats chance here
        return 0.5
    best = np.flatnonzero(gains >= gains.max() - 1e-12)
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def balanced_accuracy(recalls: Sequence[float], present: Sequence[int]) -> float | None:
    """The mean recall of the ``present`` classes (those with images), which a lopsided test set's accuracy hides
    (150 FAKE and 1 REAL all answered FAKE: accuracy 0.9934, balanced accuracy 0.5); None with fewer than two: one
    class's recall alone says nothing of telling classes apart."""
    return float(np.mean(np.asarray(recalls)[list(present)])) if len(present) > 1 else None


def balanced_accuracy_over(metrics: Mapping[str, Any], num_classes: int) -> str:
    """`` over 2 of 3 classes, chance 0.50``, to follow a balanced accuracy taken over only some of the
    ``num_classes`` classes (the others, ``missing_classes``, have no test image), whose chance is 1 / their number;
    "" where it is over every class, or n/a."""
    over = num_classes - len(metrics.get("missing_classes") or ())
    if metrics.get("balanced_accuracy") is None or not 0 < over < num_classes:
        return ""
    return f" over {over} of {num_classes} classes, chance {1 / over:.2f}"


def threshold_metrics(labels: np.ndarray, scores: np.ndarray, positive: int, threshold: float) -> dict[str, Any]:
    """Accuracy, balanced accuracy (None with images of one class), precision, recall, F1 and confusion matrix when
    P(positive) >= ``threshold`` decides."""
    from sklearn import metrics as sk

    predicted = DecisionRule(decision_threshold=threshold, positive_index=positive).decide_positive(scores)
    precision, recall, f1, _ = sk.precision_recall_fscore_support(labels, predicted, labels=[0, 1], pos_label=positive,
                                                                  average="binary", zero_division=0)
    recalls = sk.recall_score(labels, predicted, labels=[0, 1], average=None, zero_division=0)
    return {"threshold": float(threshold), "accuracy": float(sk.accuracy_score(labels, predicted)),
            "balanced_accuracy": balanced_accuracy(recalls, np.unique(labels).tolist()),
            "precision": float(precision), "recall": float(recall), "f1": float(f1),
            "confusion_matrix": sk.confusion_matrix(labels, predicted, labels=[0, 1]).tolist()}


def _ranking(labels: np.ndarray, probabilities: np.ndarray, present: list[int]) -> dict[str, float | None]:
    """Macro one-vs-rest ROC AUC and average precision over the ``present`` classes (None with fewer than two)."""
    from sklearn import metrics as sk

    if len(present) < 2:
        return {"roc_auc": None, "average_precision": None}
    # One-vs-rest per class, as scikit-learn's macro averages, but only over the classes that have images:
    # a class without any is no evidence either way, and scikit-learn would refuse (AUC) or count it as 0 (AP).
    aucs = [_score(sk.roc_auc_score, labels == index, probabilities[:, index]) for index in present]
    precisions = [_score(sk.average_precision_score, labels == index, probabilities[:, index]) for index in present]
    return {"roc_auc": None if None in aucs else float(np.mean(aucs)),
            "average_precision": None if None in precisions else float(np.mean(precisions))}


def class_numbers(labels: Sequence[int], decided: Sequence[int], class_names: Sequence[str]
                  ) -> dict[str, dict[str, float | int | None]]:
    """Each class's precision, recall, F1 and support when ``decided`` answers: metrics.json's ``per_class``. None
    (shown n/a, never 0) where there is nothing to count: the precision of a class never answered (0 right of 0
    answers), the recall and F1 of a class without images (0 of 0)."""
    from sklearn import metrics as sk

    class_ids = list(range(len(class_names)))
    precision, recall, f1, support = sk.precision_recall_fscore_support(labels, decided, labels=class_ids,
                                                                        zero_division=0)
    answered = np.bincount(np.asarray(decided, np.int64), minlength=len(class_ids))
    return {name: {"precision": float(precision[index]) if answered[index] else None,
                   **({"recall": float(recall[index]), "f1": float(f1[index])} if support[index]
                      else {"recall": None, "f1": None}),
                   "support": int(support[index])}
            for index, name in enumerate(class_names)}


def compute_metrics(labels: Sequence[int], probabilities: np.ndarray, class_names: Sequence[str],
                    positive_class: str | None = None, threshold: float | None = None) -> dict[str, Any]:
    """Every metric as a JSON-ready dict (ValueError for outputs that are not probabilities).

    The headline numbers (accuracy, precision, recall, F1, per class, confusion matrix) are those of the
    ``DecisionRule`` the app answers by: two classes with a ``threshold``, the positive class when
    P(positive) >= threshold; else the most probable class. ``argmax_*`` hold the most probable class's
    as a secondary figure. Two classes: the positive class's numbers; more: macro averages and ROC AUC
    one-vs-rest over the classes that have images (``missing_classes`` names the others), as the balanced
    accuracy is (``balanced_accuracy_over``). ``majority_baseline``: the accuracy of always answering the most
    frequent class (``majority_class``); ``single_answer``: the class the rule gave every image, if one did
    (``one_answer_text``). Undefined metrics are None.
    """
    from sklearn import metrics as sk

    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    sums = probabilities.sum(axis=1)
    # Softmax rows sum to 1 up to float32 rounding; anything further off is not a probability output.
    if (probabilities < 0).any() or not np.allclose(sums, 1.0, atol=1e-3):
        raise ValueError("the model's outputs are not probabilities (negative, or rows not summing to 1); "
                         "the model must end in a softmax")
    probabilities = probabilities / sums[:, None]  # scikit-learn warns about rows a hair away from 1
    class_ids = list(range(len(class_names)))
    binary = len(class_names) == 2
    positive = positive_index(class_names, positive_class) if binary else None
    rule = DecisionRule(decision_threshold=threshold if binary else None,
                        positive_index=1 if positive is None else positive)
    predicted, argmax = rule.decide(probabilities), probabilities.argmax(axis=1)
    present = sorted(set(labels.tolist()))
    counts, answered = np.bincount(labels, minlength=len(class_ids)), np.unique(predicted)
    bins = calibration_bins(labels, probabilities)
    gaps = [entry["count"] * abs(entry["accuracy"] - entry["confidence"]) for entry in bins if entry["count"]]  # ECE's

    def scores(decided: np.ndarray) -> dict[str, float | None]:
        per_class = sk.precision_recall_fscore_support(labels, decided, labels=class_ids, zero_division=0)
        # The positive class's numbers for two classes, else the unweighted means over the classes present; for
        # precision also over those answered: a class with no test image that the model answered is 0 right.
        answered = sorted(set(present) | set(decided.tolist()))
        averaged = {name: float(values[positive] if binary else values[answered if name == "precision" else
                                                                         present].mean())
                    for name, values in zip(("precision", "recall", "f1"), per_class[:3])}
        if binary and positive not in present:  # its recall is 0 of 0, and so its F1 is undefined too
            averaged["recall"] = averaged["f1"] = None
        if binary and not np.any(decided == positive):  # its precision is 0 right of 0 answers
            averaged["precision"] = None
        return {"accuracy": float(sk.accuracy_score(labels, decided)),
                "balanced_accuracy": balanced_accuracy(per_class[1], present), **averaged}

    if binary:
        truth, positive_scores = labels == positive, probabilities[:, positive]
        # Both need images of both classes: of the positive class alone, any scores give an AP of 1.
        ranking = {"roc_auc": _score(sk.roc_auc_score, truth, positive_scores),
                   "average_precision": _score(sk.average_precision_score, truth, positive_scores)
                   if len(present) == 2 else None}
    else:
        ranking = _ranking(labels, probabilities, present)
    metrics: dict[str, Any] = {
        "class_names": list(class_names),
        "num_images": len(labels),
        "loss": float(sk.log_loss(labels, probabilities, labels=class_ids)),
        "decided_by": "threshold" if rule.decision_threshold is not None else "argmax",  # the rule's kind
        **scores(predicted),
        "majority_class": class_names[int(counts.argmax())],  # the first of the most frequent, as np.argmax
        "majority_baseline": float(counts.max() / len(labels)),
        # One class for every image, a collapsed model's tell; one image alone gets one answer whatever the model.
        "single_answer": class_names[int(answered[0])] if len(answered) == 1 and len(labels) > 1 else None,
        "average": "binary" if binary else "macro",
        "positive_class": class_names[positive] if binary else None,
        **ranking,
        "expected_calibration_error": float(sum(gaps) / len(labels)) if gaps else 0.0,
        **{f"argmax_{name}": value for name, value in scores(argmax).items()},
        "missing_classes": [name for index, name in enumerate(class_names) if index not in present],
        "per_class": class_numbers(labels, predicted, class_names),
        "confusion_matrix": sk.confusion_matrix(labels, predicted, labels=class_ids).tolist(),
        "confusion_matrix_axes": "rows: true class, columns: class decided by the decision rule, both in "
                                 "class_names order",
        "argmax_confusion_matrix": sk.confusion_matrix(labels, argmax, labels=class_ids).tolist(),
        "calibration_bins": bins,
    }
    if binary:
        metrics["decision_threshold"] = None if threshold is None else float(threshold)
    return metrics


def most_confident_errors(labels: Sequence[int], probabilities: np.ndarray,
                          predicted: np.ndarray | None = None) -> list[int]:
    """Indices of the wrongly classified images (by ``predicted``, default argmax), the highest probability of
    the predicted class first."""
    probabilities = np.asarray(probabilities)
    predicted = probabilities.argmax(axis=1) if predicted is None else np.asarray(predicted)
    wrong = np.flatnonzero(predicted != np.asarray(labels))
    return wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")][:NUM_ERROR_IMAGES].tolist()


def uncertain_text(metrics: Mapping[str, Any]) -> str | None:
    """``Uncertain on 9 of 18 images (accuracy 0.7778 on the other 9)``: where an evaluation's app answers Uncertain
    (``uncertain``, ``accuracy_when_certain``); None for metrics that do not count it."""
    if not isinstance(metrics.get("uncertain"), int):
        return None
    total, uncertain = metrics["num_images"], metrics["uncertain"]
    rest = total - uncertain
    accuracy = metrics.get("accuracy_when_certain")
    return (f"Uncertain on {uncertain:,} of {plural(total, 'image')}"
            + (f" (accuracy {accuracy:.4f} on the other {rest:,})" if accuracy is not None and uncertain else ""))


def uncertain_by_confidence(rule: DecisionRule, labels: Sequence[int], probabilities: np.ndarray,
                            unfamiliar: np.ndarray) -> dict[str, list[int | float | None]]:
    """What the app's rule would say of these images at each confidence threshold its slider offers
    (``rule.confidences``), keyed ``"0.60"``: how many answers are Uncertain (an ``unfamiliar`` image always is) and
    the accuracy on the others (None where none is left)."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    table: dict[str, list[int | float | None]] = {}
    for confidence in rule.confidences(probabilities.shape[1]):
        at = replace(rule, confidence_threshold=confidence)
        certain = ~at.uncertain(probabilities, unfamiliar)
        accuracy = float(np.mean(at.decide(probabilities)[certain] == labels[certain])) if certain.any() else None
        table[f"{confidence:.2f}"] = [int((~certain).sum()), accuracy]
    return table


def one_answer_text(metrics: Mapping[str, Any], name: Callable[[str], str] = str) -> str | None:
    """``the model answered big for every test image: always answering big scores accuracy 0.90 here``, where the
    decision rule gave one class to every test image (``single_answer``), beside the majority baseline; None where
    it did not (or the metrics do not record it). ``name`` writes a class name (the card's code spans)."""
    answer = metrics.get("single_answer")
    if answer is None:
        return None
    majority = metrics["majority_class"]
    which = "" if majority == answer else ", the most frequent test class,"
    return (f"the model answered {name(answer)} for every test image: always answering {name(majority)}{which} "
            f"scores accuracy {metrics['majority_baseline']:.2f} here")


def skipped_why(count: int) -> str:
    """Why ``count`` files were left out of an evaluation or a prediction, as their summaries say it (each file's own
    reason is in unreadable.csv)."""
    return ("not an image, unreadable, over the pixel limit, or a segmentation mask" if count == 1 else
            "not images, unreadable, over the pixel limit, or segmentation masks")


def format_summary(metrics: Mapping[str, Any]) -> str:
    """One line for a script to print: ``accuracy 0.9120, F1 0.9050, ROC AUC 0.9700 on 2,000 images (...)``,
    the numbers of the decision rule, with the most probable class's accuracy beside them."""
    def number(key: str) -> str:
        return "n/a" if metrics.get(key) is None else f"{metrics[key]:.4f}"

    macro = " (macro)" if metrics.get("average") == "macro" else ""  # as the app and the card label them
    over = balanced_accuracy_over(metrics, len(metrics.get("class_names") or ()))
    balanced = f" (balanced accuracy {number('balanced_accuracy')}{over})" if "balanced_accuracy" in metrics else ""
    baseline = f", majority baseline {number('majority_baseline')}" if "majority_baseline" in metrics else ""
    line = (f"accuracy {number('accuracy')}{balanced}{baseline}, F1{macro} {number('f1')}, ROC AUC{macro} "
            f"{number('roc_auc')} on {plural(metrics['num_images'], 'image')}")
    if metrics.get("decision_threshold") is not None:
        line += (f" (decided at threshold {distinct_figures([metrics['decision_threshold']], 3)[0]}; argmax accuracy "
                 f"{number('argmax_accuracy')})")
    if metrics.get("missing_classes"):
        line += f"; no images of {', '.join(metrics['missing_classes'])}: " + (
            "averaged over the other classes" if macro else "what needs them is n/a")
    if (one_answer := one_answer_text(metrics)) is not None:
        line += f"; {one_answer}"
    if (uncertain := uncertain_text(metrics)) is not None:
        line += f"; {uncertain}"
    if metrics.get("num_skipped"):
        skipped = metrics["num_skipped"]
        line += f"; {plural(skipped, 'file')} skipped ({skipped_why(skipped)})"
    return line
