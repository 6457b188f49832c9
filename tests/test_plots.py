"""Plots: every one is a valid, non-blank PNG of sensible size, and none leaks a pyplot figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_image
from PIL import Image

from realvsai import plots
from realvsai.metrics import compute_metrics

RNG = np.random.default_rng(0)
LABELS = RNG.integers(0, 3, 60)
# Probabilities that lean towards the true class, so the curves are not trivial.
PROBABILITIES = RNG.dirichlet(np.ones(3), 60) + 0.6 * np.eye(3)[LABELS]
PROBABILITIES /= PROBABILITIES.sum(axis=1, keepdims=True)
BINARY_LABELS = (LABELS == 1).astype(int)
BINARY_PROBABILITIES = np.stack([1 - PROBABILITIES[:, 1], PROBABILITIES[:, 1]], axis=1)


def assert_png(path: Path, min_width: int = 300, min_height: int = 200) -> tuple[int, int]:
    """The file is a decodable PNG, at least this big, and not a single colour."""
    assert path.stat().st_size > 1000
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width >= min_width and height >= min_height
        assert width <= 6000 and height <= 6000
        extrema = image.convert("L").getextrema()
        assert extrema[0] < extrema[1]
    return width, height


def test_confusion_matrix_is_written(tmp_path):
    path = plots.plot_confusion_matrix(LABELS, PROBABILITIES.argmax(axis=1), ["a", "b", "c"],
                                       tmp_path / "confusion.png")
    width, height = assert_png(path)
    assert width > height  # counts and rates side by side


@pytest.mark.parametrize(("labels", "probabilities", "names"), [
    (BINARY_LABELS, BINARY_PROBABILITIES, ["REAL", "FAKE"]),
    (LABELS, PROBABILITIES, ["a", "b", "c"]),
], ids=["binary", "three-class"])
def test_roc_curves_are_written(tmp_path, labels, probabilities, names):
    assert_png(plots.plot_roc_curves(labels, probabilities, names, tmp_path / "roc.png"))


def test_the_one_vs_rest_roc_curves_draw_the_chance_line_once_and_name_their_axes_in_words(monkeypatch, tmp_path):
    """The 3-class ROC legend said "Chance level (AUC = 0.5)" three times, and its axes "(Positive label: 1)"."""
    figures = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: figures.append(figure) or path)

    plots.plot_roc_curves(LABELS, PROBABILITIES, ["a", "b", "c"], tmp_path / "roc.png")

    axes = figures[0].axes[0]
    legend = [text.get_text() for text in axes.get_legend().get_texts()]
    assert sum("Chance level" in label for label in legend) == 1 and len(legend) == 4
    assert "Positive label" not in axes.get_xlabel() + axes.get_ylabel()


@pytest.mark.parametrize(("labels", "probabilities", "names", "threshold"), [
    (BINARY_LABELS, BINARY_PROBABILITIES, ["REAL", "FAKE"], 0.4),
    (LABELS, PROBABILITIES, ["a", "b", "c"], None),
], ids=["binary", "three-class"])
def test_precision_recall_curves_are_written(tmp_path, labels, probabilities, names, threshold):
    path = plots.plot_precision_recall_curves(labels, probabilities, names, tmp_path / "pr.png", threshold=threshold)
    assert_png(path)


def test_curves_of_a_single_class_still_give_an_image(tmp_path):
    labels = np.ones(5, dtype=int)
    probabilities = np.tile([0.3, 0.7], (5, 1))
    assert_png(plots.plot_roc_curves(labels, probabilities, ["A", "B"], tmp_path / "roc.png"))
    assert_png(plots.plot_precision_recall_curves(labels, probabilities, ["A", "B"], tmp_path / "pr.png"))


def test_reliability_diagram_is_written(tmp_path):
    ece = compute_metrics(LABELS, PROBABILITIES, ["a", "b", "c"])["expected_calibration_error"]
    assert_png(plots.plot_reliability_diagram(LABELS, PROBABILITIES, ece, tmp_path / "reliability.png"))


def test_class_distribution_is_written(tmp_path):
    counts = {"train": {"FAKE": 4000, "REAL": 3900}, "validation": {"FAKE": 1000, "REAL": 990},
              "test": {"FAKE": 1000, "REAL": 1000}}
    assert_png(plots.plot_class_distribution(counts, tmp_path / "distribution.png"))


def test_confident_errors_grid_shows_the_images(tmp_path):
    examples = [plots.ErrorExample(write_image(tmp_path / f"image {index}.png", seed=index, size=(32 + index, 32)),
                                   "REAL", "FAKE", 0.99 - index / 100) for index in range(6)]
    examples.append(plots.ErrorExample(tmp_path / "vanished.png", "REAL", "FAKE", 0.5))  # drawn as unreadable
    _width, height = assert_png(plots.plot_confident_errors(examples, tmp_path / "errors.png"))
    assert height > 400  # two rows of four


def test_confident_errors_grid_decodes_under_the_runs_pixel_limit_and_reduced_to_its_thumbnail(tmp_path,
                                                                                                 monkeypatch):
    """A 100 MP photo the run read under a raised --max-pixels is shown too, without decoding it whole."""
    calls = []
    real_load = plots.load_rgb
    monkeypatch.setattr(plots, "load_rgb", lambda *args, **kwargs: calls.append((args, kwargs))
                        or real_load(*args, **kwargs))
    example = plots.ErrorExample(write_image(tmp_path / "photo.jpg", seed=1, size=(900, 600)), "REAL", "FAKE", 0.9)

    plots.plot_confident_errors([example], tmp_path / "errors.png", max_pixels=10**9)

    ((args, kwargs),) = calls
    assert dict(zip(("source", "max_pixels", "image_size"), args), **kwargs) == {
        "source": example.file, "max_pixels": 10**9, "image_size": plots.THUMBNAIL_SIDE}


def test_confident_errors_without_errors_still_writes_an_image(tmp_path):
    assert_png(plots.plot_confident_errors([], tmp_path / "errors.png"), min_height=150)


def test_plots_leave_no_pyplot_figure_open(tmp_path):
    import matplotlib.pyplot as pyplot

    before = pyplot.get_fignums()
    plots.plot_confusion_matrix(LABELS, PROBABILITIES.argmax(axis=1), ["a", "b", "c"], tmp_path / "confusion.png")
    plots.plot_confident_errors([], tmp_path / "errors.png")
    assert pyplot.get_fignums() == before
