"""Plots: every one is a valid, non-blank PNG of sensible size, and none leaks a pyplot figure."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import write_image
from matplotlib.colors import to_hex
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
    legend = [text.get_text() for text in (axes.get_legend() or figures[0].legends[0]).get_texts()]
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


def test_curves_left_out_say_why_in_words(tmp_path, caplog):
    """Test images of one class of three: no one-vs-rest curve can be drawn, and the warning says why ("a curve
    needs images of its class and of the others"), not "the labels hold only one side of them"."""
    labels = np.zeros(4, dtype=int)
    probabilities = np.tile([0.5, 0.3, 0.2], (4, 1))
    with caplog.at_level("WARNING", logger="realvsai"):
        plots.plot_roc_curves(labels, probabilities, ["benign", "malignant", "normal"], tmp_path / "roc.png")
    assert ("ROC curve: none for benign, malignant, normal: a curve needs images of its class and of the "
            "others") in caplog.text


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


def test_confident_errors_grid_names_a_file_whose_name_is_not_utf8(tmp_path):
    """A test image named in Latin-1 ended the run's evaluation in matplotlib (a TypeError on its title)."""
    import os

    file = write_image(Path(os.fsdecode(os.fsencode(tmp_path) + b"/t\xe9st.png")), seed=1)
    titles = []
    real_save = plots._save

    def plots_save(figure, path):
        titles.extend(axes.get_title() for axes in figure.axes)
        return real_save(figure, path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "_save", plots_save)
        assert_png(plots.plot_confident_errors([plots.ErrorExample(file, "REAL", "FAKE", 0.9)], tmp_path / "e.png"))

    assert titles[0].startswith("t\\xe9st.png\ntrue REAL")


def test_confident_errors_without_errors_still_writes_an_image(tmp_path):
    assert_png(plots.plot_confident_errors([], tmp_path / "errors.png"), min_height=150)


def test_plots_leave_no_pyplot_figure_open(tmp_path):
    import matplotlib.pyplot as pyplot

    before = pyplot.get_fignums()
    plots.plot_confusion_matrix(LABELS, PROBABILITIES.argmax(axis=1), ["a", "b", "c"], tmp_path / "confusion.png")
    plots.plot_confident_errors([], tmp_path / "errors.png")
    assert pyplot.get_fignums() == before


def many_classes(count: int, images_per_class: int = 20) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Labels, probabilities leaning towards them, and names, every fifth one long (CIFAR-100, ImageNet-like)."""
    rng = np.random.default_rng(count)
    labels = np.repeat(np.arange(count), images_per_class)
    probabilities = np.exp(rng.normal(size=(len(labels), count)) + 1.5 * np.eye(count)[labels])
    names = [f"a rather long class name, number {index} of many, as some datasets name their folders"
             if index % 5 == 0 else f"class_{index:03d}" for index in range(count)]
    return labels, probabilities / probabilities.sum(axis=1, keepdims=True), names


def drawn_figures(monkeypatch) -> list:
    """The figures the plots save, kept as drawn (each is still saved, at the figure's own DPI)."""
    figures, real_save = [], plots._save

    def save(figure, path):
        figure.set_dpi(plots.DPI)
        figures.append(figure)
        return real_save(figure, path)

    monkeypatch.setattr(plots, "_save", save)
    return figures


def assert_tick_labels_apart_and_on_the_canvas(figure, axes) -> None:
    """The shown tick labels lie inside the figure and no two of an axis overlap (a 90° or upright label's box is the
    text's own), as saved."""
    canvas = figure.bbox
    for axis, low, high in ((axes.xaxis, "x0", "x1"), (axes.yaxis, "y0", "y1")):
        boxes = sorted((label.get_window_extent() for label in axis.get_ticklabels() if label.get_text()),
                       key=lambda box: getattr(box, low))
        assert boxes
        for box in boxes:
            assert canvas.x0 - 1 <= box.x0 and box.x1 <= canvas.x1 + 1 and canvas.y0 - 1 <= box.y0
            assert box.y1 <= canvas.y1 + 1
        for before, after in itertools.pairwise(boxes):
            assert getattr(before, high) <= getattr(after, low) + 0.5, (before, after)


def test_a_confusion_matrix_of_100_classes_stays_small_and_its_labels_readable(monkeypatch, tmp_path):
    """100 classes drew a 22320x11100 PNG (248 MP: 130 s, 5 GB) of 20,000 numbers, long names whole, labels piled."""
    figures = drawn_figures(monkeypatch)
    labels, probabilities, names = many_classes(100, 3)

    width, height = assert_png(plots.plot_confusion_matrix(labels, probabilities.argmax(axis=1), names,
                                                           tmp_path / "confusion.png"))

    assert width <= 3200 and height <= 3200
    for axes in figures[0].axes[:2]:
        shown = [label.get_text() for label in axes.get_xticklabels() + axes.get_yticklabels() if label.get_text()]
        assert max(map(len, shown)) <= 24 and any(text.endswith("folders") and "…" in text for text in shown)
        assert_tick_labels_apart_and_on_the_canvas(figures[0], axes)


def test_the_row_of_a_class_without_test_images_reads_n_a_not_zero(monkeypatch, tmp_path):
    """A class with no test image showed 0.00 across its row-normalised row, its recall 0 on the diagonal, while
    metrics.json, the card and the report call that recall n/a (0 of 0)."""
    figures = drawn_figures(monkeypatch)

    plots.plot_confusion_matrix([0, 0, 1, 1], [0, 1, 1, 2], ["a", "b", "c"], tmp_path / "confusion.png")

    counts, rates = figures[0].axes[:2]

    def cells(axes):
        return {(round(text.get_position()[1]), round(text.get_position()[0])): text.get_text() for text in axes.texts}

    assert [cells(rates)[2, column] for column in range(3)] == ["", "", "n/a"]  # n/a on the diagonal, no 0.00
    assert np.ma.getmaskarray(rates.images[0].get_array())[2].all()  # not coloured as 0 either
    assert cells(rates)[0, 0] == "0.50" and cells(rates)[1, 2] == "0.50"
    assert [cells(counts)[2, column] for column in range(3)] == ["0", "0", "0"]  # its counts are 0 indeed


@pytest.mark.parametrize("plot", [plots.plot_roc_curves, plots.plot_precision_recall_curves], ids=["roc", "pr"])
@pytest.mark.parametrize("count", [3, 10, 11, 40])
def test_curves_of_many_classes_have_a_short_legend_of_distinct_colours_and_one_chance_level(monkeypatch, tmp_path,
                                                                                              plot, count):
    """40 classes gave 40 legend entries (80 for precision-recall, a "Chance level" each) over the curves, and
    constrained layout's warning that the axes collapsed; from 11 classes two shared a colour."""
    figures = drawn_figures(monkeypatch)
    labels, probabilities, names = many_classes(count)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert_png(plot(labels, probabilities, names, tmp_path / "curves.png"))

    assert not [str(warning.message) for warning in caught]
    legend = figures[0].axes[0].get_legend() or figures[0].legends[0]
    texts = [text.get_text() for text in legend.get_texts()]
    assert sum("Chance level" in text for text in texts) == 1
    assert len(texts) == (count + 1 if count <= 10 else 6) and max(map(len, texts)) <= 60
    colours = [to_hex(handle.get_color()) for handle in legend.legend_handles]
    assert len(set(colours)) == len(colours)
    for box in (legend.get_window_extent(), figures[0].axes[0].title.get_window_extent()):  # on the canvas
        assert figures[0].bbox.y0 - 1 <= box.y0 and box.y1 <= figures[0].bbox.y1 + 1


def test_class_names_the_font_lacks_give_no_glyph_warning(tmp_path):
    """Matplotlib warned "Glyph ... missing from font(s) DejaVu Sans" once per character and plot, even under
    --quiet; the image draws (the characters as boxes) all the same."""
    names = ["類", "猫 cat", "dog"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plots.plot_confusion_matrix(LABELS, PROBABILITIES.argmax(axis=1), names, tmp_path / "confusion.png")
        plots.plot_roc_curves(LABELS, PROBABILITIES, names, tmp_path / "roc.png")
        plots.plot_precision_recall_curves(LABELS, PROBABILITIES, names, tmp_path / "pr.png")
        plots.plot_class_distribution({"train": dict.fromkeys(names, 5)}, tmp_path / "distribution.png")

    assert not [str(warning.message) for warning in caught if "Glyph" in str(warning.message)]
    assert_png(tmp_path / "confusion.png")


@pytest.mark.parametrize("count", [12, 100])
def test_the_class_distribution_of_many_long_named_classes_fits_its_canvas(monkeypatch, tmp_path, count):
    """The 4.5-inch-tall figure cut long rotated names off, and 100 classes in three splits made it 183 inches wide."""
    figures = drawn_figures(monkeypatch)
    _labels, _probabilities, names = many_classes(count)
    counts = {split: {name: 100 * (index + 1) for index, name in enumerate(names)}
              for split in ("train", "validation", "test")}

    width, height = assert_png(plots.plot_class_distribution(counts, tmp_path / "distribution.png"))

    assert width <= 3200 and height <= 3200
    assert_tick_labels_apart_and_on_the_canvas(figures[0], figures[0].axes[0])


def test_training_curves_count_whole_epochs_and_mark_the_saved_one(monkeypatch, tmp_path):
    """Two epochs were drawn on an axis of 1.0, 1.2, ... 2.0; and nothing showed which epoch's weights model.h5
    holds (the best epoch, not the last)."""
    figures = drawn_figures(monkeypatch)
    rows = [{"epoch": epoch, "phase": "full", "cross_entropy": 1.0 / epoch, "val_cross_entropy": value,
             "accuracy": 0.5 + epoch / 10, "val_accuracy": 0.6} for epoch, value in ((1, 0.9), (2, 0.7), (3, 0.8))]

    assert_png(plots.plot_training_curves(rows, tmp_path / "curves.png", best_epoch=2))

    for axes in figures[0].axes:
        ticks = [tick for tick in axes.get_xticks() if axes.get_xlim()[0] <= tick <= axes.get_xlim()[1]]
        assert ticks and all(float(tick).is_integer() for tick in ticks), ticks
        legend = [text.get_text() for text in axes.get_legend().get_texts()]
        assert "best epoch 2 (model.h5)" in legend
