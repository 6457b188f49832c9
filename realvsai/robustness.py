"""Robustness as the field reports it: accuracy again after JPEG re-compression, blur and downscaling.

Detectors of generated images often lean on traces that survive no re-save: a photo shared online
is re-compressed, resized and sometimes blurred. ``--robustness`` re-evaluates the test images after
each perturbation below, applied to the decoded pixels before the model's own resize, and plots
accuracy against strength (robustness.png).

    dataset = data.make_dataset(images, batch_size=64, image_size=224, transform=perturbation("jpeg", 70))
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageFilter

if TYPE_CHECKING:  # TensorFlow loads only when a perturbation is applied
    import tensorflow as tf


# Each perturbation with its strengths, mildest first (JPEG quality, Gaussian sigma in pixels, scale).
PERTURBATIONS: dict[str, tuple[float, ...]] = {
    "jpeg": (90, 70, 50, 30),
    "blur": (1, 2),
    "downscale": (0.5, 0.25),
}
_LABELS = {"jpeg": "JPEG quality {:g}", "blur": "Gaussian blur σ={:g}", "downscale": "downscale ×{:g}"}
_LINE_NAMES = {"jpeg": "JPEG re-compression (quality)", "blur": "Gaussian blur (σ)", "downscale": "downscale (scale)"}
_POINT_LABELS = {"jpeg": "q{:g}", "blur": "σ{:g}", "downscale": "×{:g}"}


def perturb(pixels: np.ndarray, kind: str, strength: float) -> np.ndarray:
    """``pixels`` (H x W x 3 uint8) after one perturbation, as uint8 again.

    JPEG is encoded and decoded with Pillow, the decoder every path of the project matches; the
    downscale is antialiased (Pillow's box filter) and keeps at least one pixel a side.
    """
    image = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    if kind == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(strength))
        with Image.open(buffer) as decoded:
            return np.asarray(decoded.convert("RGB"))
    if kind == "blur":
        return np.asarray(image.filter(ImageFilter.GaussianBlur(radius=strength)))  # radius is sigma
    if kind == "downscale":
        size = (max(1, round(image.width * strength)), max(1, round(image.height * strength)))
        return np.asarray(image.resize(size, Image.Resampling.BOX))
    raise ValueError(f"unknown perturbation {kind!r}; choose one of {', '.join(PERTURBATIONS)}")


def perturbation(kind: str, strength: float) -> Callable[[tf.Tensor], tf.Tensor]:
    """``perturb`` as a tf.data step on one decoded uint8 image (``data.make_dataset``'s ``transform``).

    Evaluation then treats the perturbed pixels exactly as clean ones: same resize or crops, same
    model, same decision rule.
    """
    import tensorflow as tf

    if kind not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {kind!r}; choose one of {', '.join(PERTURBATIONS)}")

    def apply(pixels: np.ndarray) -> np.ndarray:
        # Looked up at call time, so a test can replace perturb and see its effect on the predictions.
        return np.ascontiguousarray(perturb(pixels, kind, strength), dtype=np.uint8)

    def transform(pixels: tf.Tensor) -> tf.Tensor:
        return tf.ensure_shape(tf.numpy_function(apply, [pixels], tf.uint8, stateful=False), [None, None, 3])

    return transform


def label(kind: str, strength: float) -> str:
    """How a perturbation reads in tables and plots: "JPEG quality 70"."""
    return _LABELS[kind].format(strength)


def plot_robustness(clean_accuracy: float, accuracies: Mapping[str, Mapping[float, float]], path: Path) -> Path:
    """Saves ``robustness_figure`` as ``path`` (PNG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    robustness_figure(clean_accuracy, accuracies).savefig(path, dpi=120)
    return path


def robustness_figure(clean_accuracy: float, accuracies: Mapping[str, Mapping[float, float]]) -> Figure:
    """Accuracy against strength, one line per perturbation, all starting from the clean accuracy.

    The x axis is the step (0 = clean images, then each strength, mildest first); each point is
    labelled with its strength, since quality, sigma and scale share no unit.
    """
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.subplots()
    for line, (kind, by_strength) in enumerate(accuracies.items()):
        strengths = list(by_strength)
        steps = range(len(strengths) + 1)
        values = [clean_accuracy, *by_strength.values()]
        axes.plot(steps, values, marker="o", label=_LINE_NAMES[kind])
        for step, strength, value in zip(steps[1:], strengths, values[1:], strict=True):
            # Lines often run close together: each line's labels sit at its own height.
            axes.annotate(_POINT_LABELS[kind].format(strength), (step, value), textcoords="offset points",
                          xytext=(5, 6 - 12 * line), fontsize=8)
    axes.axhline(clean_accuracy, color="grey", linestyle=":", linewidth=1)
    axes.set(xlabel="strength step (0 = clean)", ylabel="accuracy", ylim=(0, 1.02),
             title="Accuracy under perturbation")
    axes.set_xticks(range(1 + max((len(values) for values in accuracies.values()), default=0)))
    axes.legend()
    return figure
