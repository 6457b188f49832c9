"""Perturbations for --robustness: each does what its name says, at the strength given."""

from __future__ import annotations

import io
import json

import keras
import numpy as np
import pytest
from conftest import PHOTO_LIMIT, predictor, write_phone_photo
from PIL import Image

from realvsai import evaluation, prediction
from realvsai.data import scan_images
from realvsai.evaluation import PERTURBATIONS, perturb
from realvsai.plots import plot_robustness, robustness_figure


@pytest.fixture
def noisy_image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)


def high_frequency_energy(pixels: np.ndarray) -> float:
    return float(np.abs(np.diff(pixels.astype(np.float64), axis=1)).mean())


def test_jpeg_recompression_matches_pillows_save_and_load_at_that_quality(noisy_image):
    buffer = io.BytesIO()
    Image.fromarray(noisy_image).save(buffer, format="JPEG", quality=30)
    expected = np.asarray(Image.open(buffer).convert("RGB"))
    np.testing.assert_array_equal(perturb(noisy_image, "jpeg", 30), expected)


def test_jpeg_recompression_of_an_image_over_pillows_bomb_limit_neither_fails_nor_warns(noisy_image, monkeypatch):
    """The image was decoded under the run's --max-pixels already; its re-encoded copy has the same pixels, so
    Pillow's own limit (89.5 MP warns, 179 MP fails) must not stop it nor print a warning that names no file."""
    import warnings

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 48 x 64 = 3,072 pixels: over twice the limit

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        recompressed = perturb(noisy_image, "jpeg", 30)

    assert recompressed.shape == noisy_image.shape


def test_lower_jpeg_quality_loses_more_of_the_image(noisy_image):
    errors = [np.abs(perturb(noisy_image, "jpeg", quality).astype(int) - noisy_image).mean()
              for quality in PERTURBATIONS["jpeg"]]
    assert errors == sorted(errors)


def test_stronger_blur_removes_more_high_frequencies(noisy_image):
    energies = [high_frequency_energy(perturb(noisy_image, "blur", sigma)) for sigma in PERTURBATIONS["blur"]]
    assert high_frequency_energy(noisy_image) > energies[0] > energies[1]


def test_downscale_shrinks_each_side_by_the_factor_and_keeps_three_channels(noisy_image):
    assert perturb(noisy_image, "downscale", 0.5).shape == (24, 32, 3)
    assert perturb(noisy_image, "downscale", 0.25).shape == (12, 16, 3)
    assert perturb(np.zeros((2, 2, 3), np.uint8), "downscale", 0.25).shape == (1, 1, 3)


def test_unknown_perturbation_is_refused(noisy_image):
    with pytest.raises(ValueError, match="jpeg"):
        perturb(noisy_image, "rotate", 1)


ACCURACIES = {kind: {strength: 0.9 - 0.1 * step for step, strength in enumerate(strengths)}
              for kind, strengths in PERTURBATIONS.items()}


def test_plot_has_one_line_per_perturbation_starting_at_the_clean_accuracy():
    axes = robustness_figure(0.95, ACCURACIES).axes[0]
    legend = {text.get_text() for text in axes.get_legend().get_texts()}
    lines = [line for line in axes.get_lines() if line.get_label() in legend]
    assert len(lines) == len(PERTURBATIONS)
    assert all(line.get_ydata()[0] == 0.95 and len(line.get_ydata()) == 1 + len(PERTURBATIONS[kind])
               for line, kind in zip(lines, PERTURBATIONS, strict=True))


def test_plot_is_saved_as_png(tmp_path):
    path = plot_robustness(0.95, ACCURACIES, tmp_path / "robustness.png")
    with Image.open(path) as image:
        assert image.format == "PNG"


# --- --robustness: the evaluation under each perturbation ----------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    from test_evaluation import tiny_classifier

    return tiny_classifier(2)


@pytest.fixture
def two_sources(tmp_path, make_class_folder):
    return [make_class_folder(tmp_path / "data" / "test", {"FAKE": 4, "REAL": 4}, seed=1),
            make_class_folder(tmp_path / "photos" / "test", {"FAKE": 3, "REAL": 3}, seed=2, size=(48, 40))]


def info(**extra):
    from test_evaluation import model_info

    return model_info(["FAKE", "REAL"], positive_class="FAKE", **extra)


def test_robustness_reports_every_perturbation_and_plots_it(tmp_path, two_sources, tiny_model):
    metrics = evaluation.evaluate_folders(tiny_model, info(), two_sources, tmp_path / "out", robustness=True)
    assert {kind: list(values) for kind, values in metrics["robustness"].items()} == {
        kind: [f"{strength:g}" for strength in strengths] for kind, strengths in PERTURBATIONS.items()}
    for values in metrics["robustness"].values():
        for numbers in values.values():
            assert set(numbers) == {"accuracy", "roc_auc"} and 0 <= numbers["accuracy"] <= 1
    assert metrics["robustness_clean"]["accuracy"] == pytest.approx(metrics["combined"]["accuracy"])
    with Image.open(tmp_path / "out" / "robustness.png") as image:
        assert image.format == "PNG"
    card = (tmp_path / "out" / "EVALUATION.md").read_text()
    assert "## Robustness" in card and "](robustness.png)" in card
    assert "| JPEG quality 30 |" in card and "| downscale ×0.25 |" in card
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == metrics


def test_evaluate_with_robustness_says_in_its_summary_how_each_perturbation_hurt(tmp_path, capsys, monkeypatch):
    """--evaluate --robustness printed the evaluated line alone: the perturbations' numbers were only in files."""
    import ModelTraining

    metrics = {"accuracy": 0.86, "num_images": 10, "robustness_clean": {"accuracy": 0.86}, "robustness": {
        "jpeg": {"90": {"accuracy": 0.86}, "30": {"accuracy": 0.85}},
        "blur": {"1": {"accuracy": 0.68}, "2": {"accuracy": 0.63}},
        "downscale": {"0.5": {"accuracy": 0.69}, "0.25": {"accuracy": 0.64}}}}
    monkeypatch.setattr(ModelTraining, "evaluate_model_file", lambda *args, **kwargs: (tmp_path, metrics))

    ModelTraining.run_evaluation(ModelTraining.parse_args(["--evaluate", "run", "--test-dir", "test", "--robustness"]))

    assert capsys.readouterr().out.splitlines()[-1] == (
        "robustness: accuracy 0.8600 clean; at the strongest of each perturbation: JPEG quality 30 0.8500 (-0.0100), "
        "Gaussian blur σ=2 0.6300 (-0.2300), downscale ×0.25 0.6400 (-0.2200); every step in EVALUATION.md")


def predictors_built(monkeypatch) -> list:
    """The ``run.Predictor``s made from now on: each compiles the model's predict function (JAX) or traces it
    (TensorFlow) on its first batch, seconds on a CPU and more on a GPU."""
    from realvsai import run

    built = []
    real_init = run.Predictor.__init__

    def init(self, *args, **kwargs):
        built.append(self)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(run.Predictor, "__init__", init)
    return built


def bars_drawn(monkeypatch) -> list:
    """Every progress bar the evaluation and its predictions make from now on (``cli.progress``'s tqdm, drawn into a
    buffer as on a terminal), kept to look at once closed."""
    from tqdm import tqdm

    bars = []

    def drawn(iterable=None, total=None, desc=None, unit="file"):
        bars.append(tqdm(iterable, total=total, desc=desc, unit=unit, file=io.StringIO(), leave=False))
        return bars[-1]

    for module in (evaluation, prediction):
        monkeypatch.setattr(module, "progress", drawn, raising=False)
    return bars


def test_an_evaluation_counts_each_sources_images_under_a_bar(tmp_path, two_sources, tiny_model, monkeypatch):
    """--evaluate predicted its test images with nothing on the screen (Keras' predict at verbose 0): minutes for a
    large test split on a CPU."""
    bars = bars_drawn(monkeypatch)
    evaluation.evaluate_folders(tiny_model, info(), two_sources, tmp_path / "out", batch_size=2)
    assert [(bar.desc, bar.total, bar.n) for bar in bars if bar.unit == "image"] == [
        ("predicting data/test", 8, 8), ("predicting photos/test", 6, 6)]


def test_robustness_counts_the_images_of_each_pass_under_a_bar(tmp_path, two_sources, tiny_model, monkeypatch):
    """Its one bar counted the passes: it stood at 0/9 through the whole first pass over the test images (6 s on 13
    large photos, so over a minute on 162), with no rate nor time left until that pass ended."""
    bars = bars_drawn(monkeypatch)
    evaluation.evaluate_folders(tiny_model, info(), two_sources, tmp_path / "out", batch_size=2, robustness=True)
    passes = 1 + sum(len(strengths) for strengths in PERTURBATIONS.values())  # the unchanged copies, then each
    counted = [(bar.desc, bar.total, bar.n) for bar in bars if bar.unit == "image"][len(two_sources):]
    assert [(total, done) for _, total, done in counted] == [(14, 14)] * 2 * passes  # its copies, then predicting
    assert len({desc for desc, _, _ in counted}) == 2 * passes


def test_an_evaluation_with_robustness_compiles_the_models_predict_function_once(tmp_path, two_sources, tiny_model,
                                                                                 monkeypatch):
    """It made one per source and perturbation (18 here): TensorFlow warned of retracing, and each cost a trace."""
    built = predictors_built(monkeypatch)
    evaluation.evaluate_folders(tiny_model, info(), two_sources, tmp_path / "out", robustness=True)
    assert len(built) == 1


def test_a_perturbation_that_changes_nothing_keeps_the_clean_numbers(tmp_path, two_sources, tiny_model,
                                                                      monkeypatch):
    monkeypatch.setattr(evaluation, "perturb", lambda pixels, kind, strength: pixels)
    metrics = evaluation.evaluate_folders(tiny_model, info(), two_sources, tmp_path / "out", robustness=True)
    for values in metrics["robustness"].values():
        for numbers in values.values():
            assert numbers == pytest.approx(metrics["robustness_clean"])


def test_perturb_is_applied_to_every_decoded_image_before_the_model(tmp_path, two_sources, tiny_model, monkeypatch):
    constant = np.full((20, 20, 3), 200, np.uint8)
    seen = []

    def replace(pixels, kind, strength):
        seen.append((pixels.dtype, pixels.shape, kind, strength))
        return constant

    monkeypatch.setattr(evaluation, "perturb", replace)
    images = scan_images(two_sources[1], class_names=["FAKE", "REAL"])
    probabilities = evaluation.predict_perturbed(predictor(tiny_model, 8, 4), images, ("blur", 2))
    expected = keras.ops.convert_to_numpy(tiny_model(constant[None].astype("float32"), training=False))[0]
    np.testing.assert_allclose(probabilities, np.tile(expected, (len(images), 1)), atol=1e-6)
    assert sorted(seen, key=str) == [(np.dtype(np.uint8), (40, 48, 3), "blur", 2)] * len(images)


def test_a_pass_keeps_a_bounded_number_of_copies_on_disk_and_gives_the_same_probabilities(
        tmp_path, make_class_folder, tiny_model, monkeypatch):
    """Each pass wrote a PNG copy of every test image before predicting any: about 6 times a JPEG's size, so a 10 GB
    test folder needed some 57 GB of temporary space. It now copies and predicts a few batches at a time."""
    folder = make_class_folder(tmp_path / "mine", {"FAKE": 5, "REAL": 4})
    images = scan_images(folder, class_names=["FAKE", "REAL"])
    whole = evaluation.predict_perturbed(predictor(tiny_model, 8, 4), images, ("blur", 2))
    monkeypatch.setattr(evaluation, "COPIES_AT_ONCE", 4, raising=False)  # one batch of the predictor's 4
    on_disk = []
    real_copy = evaluation._perturbed_copy

    def copy(path, max_pixels, perturbation, target):
        on_disk.append(len(list(target.parent.iterdir())))
        return real_copy(path, max_pixels, perturbation, target)

    monkeypatch.setattr(evaluation, "_perturbed_copy", copy)
    chunked = evaluation.predict_perturbed(predictor(tiny_model, 8, 4), images, ("blur", 2))

    assert len(on_disk) == 9 and max(on_disk) < 4
    np.testing.assert_allclose(chunked, whole, atol=1e-5)


def test_perturbed_images_are_scored_by_the_same_decision_rule(tmp_path, make_class_folder, tiny_model):
    folder = make_class_folder(tmp_path / "mine", {"FAKE": 6, "REAL": 2})
    # A threshold of 0 calls every image FAKE, clean or perturbed: accuracy = the share of FAKE images.
    metrics = evaluation.evaluate_folders(tiny_model, info(decision_threshold=0.0), [folder], tmp_path / "out",
                                          robustness=True)
    assert metrics["accuracy"] == pytest.approx(0.75)  # the headline follows the decision rule
    assert metrics["decided_by"] == "threshold" and "argmax_accuracy" in metrics
    assert metrics["robustness_clean"]["accuracy"] == pytest.approx(0.75)
    for values in metrics["robustness"].values():
        assert all(numbers["accuracy"] == pytest.approx(0.75) for numbers in values.values())


def test_a_large_jpeg_is_perturbed_at_its_full_resolution_not_its_reduced_decode(tmp_path, make_class_folder,
                                                                                   tiny_model, monkeypatch):
    from realvsai import data

    make_class_folder(tmp_path, {"FAKE": 2}, suffix=".jpg", size=(400, 300))  # decoded at 1/2 for 64 px
    seen = []
    monkeypatch.setattr(evaluation, "perturb", lambda pixels, kind, strength: seen.append(pixels.shape) or pixels)
    scanned = data.scan_images(tmp_path)

    perturbed = evaluation.predict_perturbed(predictor(tiny_model, 64, 4), scanned, ("jpeg", 90))

    assert seen == [(300, 400, 3)] * 2  # as the user's copy would be changed, not the 150x200 reduced decode
    clean = prediction.predict_images(predictor(tiny_model, 64, 4), scanned)
    np.testing.assert_allclose(perturbed, clean, atol=2e-2)  # unchanged pixels: nearly the clean answer


def test_robustness_leaves_out_a_jpeg_its_full_resolution_decode_would_take_past_the_limit(
        tmp_path, make_class_folder, tiny_model, caplog):
    """A 200 MP JPEG (conftest's stand-in) is evaluated from its 1/8 decode, within the limit; the perturbations
    change the full-resolution pixels, over it: robustness (its clean numbers too) leaves it out, and says so."""
    folder = make_class_folder(tmp_path / "images", {"FAKE": 2, "REAL": 2}, size=(40, 30))
    phone = write_phone_photo(folder / "REAL" / "phone.jpg")

    metrics = evaluation.evaluate_folders(tiny_model, info(), [folder], tmp_path / "out", batch_size=2,
                                          robustness=True, max_pixels=PHOTO_LIMIT)

    assert metrics["num_images"] == 5 and set(metrics["robustness"]) == set(PERTURBATIONS)
    ((left_out),) = metrics["robustness_left_out"]
    assert left_out["file"] == "REAL/phone.jpg" and "2000x1500 pixels is more than the limit" in left_out["reason"]
    assert "1 image left out" in (tmp_path / "out" / "EVALUATION.md").read_text()
    assert any(str(phone) in record.getMessage() and "robustness" in record.getMessage()
               for record in caplog.records if record.levelname == "WARNING")


def test_a_crops_mode_model_is_perturbed_through_its_crops(tmp_path, make_class_folder, monkeypatch):
    from realvsai import data, evaluation, prediction

    make_class_folder(tmp_path, {"FAKE": 2, "REAL": 2}, suffix=".png", size=(48, 40))
    scanned = data.scan_images(tmp_path)
    seen = []
    monkeypatch.setattr(prediction, "predict_images", lambda predictor, images, **kwargs: seen.append(
        (images, predictor.info.input_mode)) or np.full((len(images), 2), 0.5, np.float32))
    evaluation.predict_perturbed(predictor(object(), 32, 4, "crops"), scanned, ("blur", 1))
    images, input_mode = seen[0]
    assert input_mode == "crops"
    assert len(images) == 4 and images.files != scanned.files  # the perturbed copies, through the crops


def test_a_crops_mode_models_robustness_is_measured_through_its_crops(tmp_path, two_sources, monkeypatch):
    from realvsai import prediction

    modes = []

    def record(predictor, images, **kwargs):
        modes.append(predictor.info.input_mode)
        return np.tile(np.float32([0.6, 0.4]), (len(images), 1))

    monkeypatch.setattr(prediction, "predict_images", record)
    evaluation.evaluate_folders(object(), info(input_mode="crops", image_size=32), two_sources, tmp_path / "out",
                                robustness=True)
    # the unchanged copies (the clean numbers' route) and each perturbation, per source
    perturbed = (1 + sum(len(strengths) for strengths in PERTURBATIONS.values())) * len(two_sources)
    assert modes == ["crops"] * (len(two_sources) + perturbed)


def test_the_clean_numbers_take_the_route_of_the_perturbed_copies(tmp_path, two_sources, tiny_model, monkeypatch):
    """robustness_clean was the headline evaluation's, read from the original files (a large JPEG decoded reduced),
    while every perturbed copy is a full-resolution decode written as PNG: the gap held that change of route."""
    monkeypatch.setattr(evaluation, "load_rgb", lambda path, max_pixels: np.zeros((40, 48, 3), np.uint8))
    metrics = evaluation.evaluate_folders(tiny_model, info(), two_sources, tmp_path / "out", robustness=True)
    assert metrics["robustness_clean"] == pytest.approx(metrics["robustness"]["blur"]["1"])  # blank, both
    assert metrics["robustness_clean"]["roc_auc"] == 0.5 != metrics["combined"]["roc_auc"]
