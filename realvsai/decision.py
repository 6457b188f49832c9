"""The decision rule: how a model's probabilities become an answer, the same in the app, --predict,
--evaluate and the model card.

No TensorFlow here: the rule is a few NumPy comparisons on softmax outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from realvsai.config import CONFIDENCE_THRESHOLD


def positive_index(class_names: Sequence[str], positive_class: str | None) -> int:
    """Column of the positive class: ``positive_class`` by name, or class index 1 when None.

    Raises:
        ValueError: if ``positive_class`` is not one of ``class_names``.
    """
    if positive_class is None:
        return 1
    if positive_class not in class_names:
        raise ValueError(f"positive class {positive_class!r} is not one of the classes {list(class_names)}")
    return list(class_names).index(positive_class)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class DecisionRule:
    """How probabilities become an answer: the one rule of the app, the model card and ``--evaluate``.

    Two classes with a decision threshold t (chosen on validation, kept in model.json): the positive
    class when P(positive) >= t, else the other; Uncertain when P(positive) lies within
    ``confidence_threshold - 0.5`` of t. Otherwise: the most probable class, Uncertain when its
    probability is below ``confidence_threshold``. For two classes at t = 0.5 both say the same (the
    top probability is below c exactly when P(positive) is within c - 0.5 of 0.5), so the threshold
    moves the Uncertain band with it instead of changing its meaning.
    """

    confidence_threshold: float = CONFIDENCE_THRESHOLD
    decision_threshold: float | None = None  # on P(positive); two classes only
    positive_index: int = 1  # column of the positive class (two classes)

    @classmethod
    def from_model_info(cls, info: Mapping[str, Any], confidence_threshold: float | None = None) -> DecisionRule:
        """The rule model.json records (``decision_threshold``, ``positive_class``, ``confidence_threshold``).

        Raises:
            ValueError: if its positive_class is not one of its class_names.
        """
        class_names = list(info["class_names"])
        binary = len(class_names) == 2
        if confidence_threshold is None:
            confidence_threshold = _number(info.get("confidence_threshold"))
        return cls(CONFIDENCE_THRESHOLD if confidence_threshold is None else confidence_threshold,
                   _number(info.get("decision_threshold")) if binary else None,
                   positive_index(class_names, info.get("positive_class") if binary else None))

    def _thresholded(self, probabilities: np.ndarray) -> bool:
        return self.decision_threshold is not None and probabilities.shape[-1] == 2

    def decide(self, probabilities: np.ndarray) -> np.ndarray:
        """The class index of each row of ``probabilities`` (..., classes); one row gives one index."""
        probabilities = np.asarray(probabilities)
        if not self._thresholded(probabilities):
            return np.argmax(probabilities, axis=-1)
        return np.where(probabilities[..., self.positive_index] >= self.decision_threshold,
                        self.positive_index, 1 - self.positive_index)

    def uncertain(self, probabilities: np.ndarray, unfamiliar: np.ndarray | bool | None = None) -> np.ndarray:
        """True for each row of ``probabilities`` whose answer is Uncertain.

        Args:
            probabilities: (..., classes) softmax outputs.
            unfamiliar: True for each image unlike the training images (``image_stats.unfamiliar_reason``):
                however sure the model is, its answer on such an image is never called certain.
        """
        probabilities = np.asarray(probabilities)
        if not self._thresholded(probabilities):
            unsure = np.max(probabilities, axis=-1) < self.confidence_threshold
        else:
            unsure = np.abs(probabilities[..., self.positive_index] - self.decision_threshold) < self.margin
        return unsure if unfamiliar is None else unsure | np.asarray(unfamiliar, dtype=bool)

    @property
    def margin(self) -> float:
        """How close to the decision threshold P(positive) is Uncertain."""
        return self.confidence_threshold - 0.5

    def describe(self, class_names: Sequence[str]) -> str:
        """The rule in one sentence, as the app and the model card state it."""
        if self.decision_threshold is None or len(class_names) != 2:
            return (f"Decision rule: the most probable class; Uncertain when its probability is below the "
                    f"confidence threshold {self.confidence_threshold:.2f}.")
        positive, other = class_names[self.positive_index], class_names[1 - self.positive_index]
        return (f"Decision rule: {positive} when P({positive}) ≥ {self.decision_threshold:.3f} (the decision "
                f"threshold chosen on validation), else {other}; Uncertain when P({positive}) is within "
                f"{self.margin:.2f} of it (the confidence threshold {self.confidence_threshold:.2f} minus 0.5).")
