"""Evaluation: metrics agree with scikit-learn, thresholds, calibration, and the files a run gets."""

from __future__ import annotations

import csv
import dataclasses
import errno
import io
import json
import logging
import os
import shutil
import unicodedata
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import predictor, write_image
from PIL import Image
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.preprocessing import label_binarize

from realvsai import evaluation, metrics, model_card, prediction
from realvsai.data import scan_images
from realvsai.errors import UserError
from realvsai.images import load_rgb
from realvsai.metrics import (
    NUM_ERROR_IMAGES,
    DecisionRule,
    calibration_bins,
    choose_threshold,
    compute_metrics,
    format_summary,
    most_confident_errors,
    threshold_metrics,
    uncertain_text,
)

BINARY_LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 0])
BINARY_PROBABILITIES = np.array(
    [[0.9, 0.1], [0.6, 0.4], [0.45, 0.55], [0.8, 0.2], [0.3, 0.7], [0.55, 0.45], [0.1, 0.9], [0.35, 0.65],
     [0.2, 0.8], [0.3, 0.7]])
THREE_LABELS = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2, 2])
THREE_PROBABILITIES = np.array(
    [[0.7, 0.2, 0.1], [0.3, 0.4, 0.3], [0.1, 0.8, 0.1], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.1, 0.6, 0.3],
     [0.6, 0.1, 0.3], [0.2, 0.5, 0.3], [0.05, 0.05, 0.9], [0.4, 0.3, 0.3]])


def tiny_classifier(num_classes: int, seed: int = 0) -> keras.Model:
    """A stand-in for the ResNet: raw RGB 0..255 of any size in, softmax out."""
    keras.utils.set_random_seed(seed)
    pixels = keras.Input((None, None, 3))
    x = keras.layers.Resizing(8, 8, name="resize")(pixels)
    x = keras.layers.Rescaling(1 / 255)(x)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(pixels, outputs)


def grey_classifier() -> keras.Model:
    """A stand-in whose answer an image's grey level sets: P(REAL) = sigmoid(10 * brightness - 5), brightness 0..1,
    so P(FAKE) is 0.47 at grey 130, 0.29 at 150, 0.10 at 184 and 0.03 at 210 (below 0.5 from grey 128 up)."""
    pixels = keras.Input((None, None, 3))
    brightness = keras.layers.GlobalAveragePooling2D()(keras.layers.Resizing(8, 8, name="resize")(pixels))
    predictions = keras.layers.Dense(2, activation="softmax", name="predictions")
    model = keras.Model(pixels, predictions(brightness))
    predictions.set_weights([np.array([[0.0, 10 / 3 / 255]] * 3, np.float32), np.array([0.0, -5.0], np.float32)])
    return model


def grey_folder(root: Path, levels: dict[str, list[int]]) -> Path:
    """Class folders of one solid grey 32 px image per level: ``grey_folder(root, {"FAKE": [150], "REAL": [220]})``."""
    for class_name, class_levels in levels.items():
        (root / class_name).mkdir(parents=True, exist_ok=True)
        for level in class_levels:
            Image.new("RGB", (32, 32), (level,) * 3).save(root / class_name / f"grey_{level}.png")
    return root


def model_info(class_names: list[str], **extra: object) -> dict:
    return {"class_names": class_names, "image_size": 8, "positive_class": None, "backbone": "tiny",
            "weights": "none", "config": {"epochs": 1, "batch_size": 4}, **extra}


@pytest.fixture(scope="module")
def binary_model() -> keras.Model:
    return tiny_classifier(2)


@pytest.fixture(scope="module")
def three_class_model() -> keras.Model:
    return tiny_classifier(3)


@pytest.fixture
def dataset(tmp_path, make_class_folder) -> Path:
    """A prepared dataset: train/validation/test with FAKE and REAL."""
    root = tmp_path / "data"
    for seed, (split, count) in enumerate((("train", 4), ("validation", 10), ("test", 12))):
        make_class_folder(root / split, {"FAKE": count, "REAL": count}, seed=seed + 1)
    return root


def read_only(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Makes ``folder`` refuse new files as a read-only file system does (also for root, whom modes do not stop)."""
    real_open = os.open

    def open_file(path, flags, *args, **kwargs):
        if Path(os.fsdecode(path)).parent == folder and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_file)


# --- metrics ---------------------------------------------------------------------------------


def test_binary_metrics_agree_with_scikit_learn():
    metrics = compute_metrics(BINARY_LABELS, BINARY_PROBABILITIES, ["A", "B"])
    predicted = BINARY_PROBABILITIES.argmax(axis=1)
    assert metrics["positive_class"] == "B"
    assert metrics["accuracy"] == pytest.approx(accuracy_score(BINARY_LABELS, predicted))
    assert metrics["precision"] == pytest.approx(precision_score(BINARY_LABELS, predicted))
    assert metrics["recall"] == pytest.approx(recall_score(BINARY_LABELS, predicted))
    assert metrics["f1"] == pytest.approx(f1_score(BINARY_LABELS, predicted))
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(BINARY_LABELS, BINARY_PROBABILITIES[:, 1]))
    assert metrics["average_precision"] == pytest.approx(
        average_precision_score(BINARY_LABELS, BINARY_PROBABILITIES[:, 1]))
    assert metrics["loss"] == pytest.approx(log_loss(BINARY_LABELS, BINARY_PROBABILITIES))
    assert metrics["confusion_matrix"] == confusion_matrix(BINARY_LABELS, predicted).tolist()
    precision, recall, f1, support = precision_recall_fscore_support(BINARY_LABELS, predicted)
    assert metrics["per_class"]["A"] == pytest.approx(
        {"precision": precision[0], "recall": recall[0], "f1": f1[0], "support": support[0]})
    assert metrics["num_images"] == len(BINARY_LABELS)


def test_positive_class_by_name_scores_its_column():
    metrics = compute_metrics(BINARY_LABELS, BINARY_PROBABILITIES, ["FAKE", "REAL"],
                                         positive_class="FAKE")
    predicted = BINARY_PROBABILITIES.argmax(axis=1)
    assert metrics["positive_class"] == "FAKE"
    assert metrics["precision"] == pytest.approx(precision_score(BINARY_LABELS, predicted, pos_label=0))
    assert metrics["recall"] == pytest.approx(recall_score(BINARY_LABELS, predicted, pos_label=0))
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(BINARY_LABELS == 0, BINARY_PROBABILITIES[:, 0]))


def test_unknown_positive_class_is_rejected():
    with pytest.raises(ValueError, match="CAT"):
        compute_metrics(BINARY_LABELS, BINARY_PROBABILITIES, ["FAKE", "REAL"], positive_class="CAT")


def test_three_class_metrics_are_macro_averages_from_scikit_learn():
    metrics = compute_metrics(THREE_LABELS, THREE_PROBABILITIES, ["a", "b", "c"])
    predicted = THREE_PROBABILITIES.argmax(axis=1)
    precision, recall, f1, _ = precision_recall_fscore_support(THREE_LABELS, predicted, average="macro")
    assert metrics["average"] == "macro"
    assert metrics["positive_class"] is None
    assert (metrics["precision"], metrics["recall"], metrics["f1"]) == pytest.approx((precision, recall, f1))
    assert metrics["roc_auc"] == pytest.approx(
        roc_auc_score(THREE_LABELS, THREE_PROBABILITIES, multi_class="ovr", average="macro"))
    assert metrics["average_precision"] == pytest.approx(
        average_precision_score(label_binarize(THREE_LABELS, classes=[0, 1, 2]), THREE_PROBABILITIES))
    assert metrics["loss"] == pytest.approx(log_loss(THREE_LABELS, THREE_PROBABILITIES))
    assert metrics["confusion_matrix"] == confusion_matrix(THREE_LABELS, predicted).tolist()
    assert metrics["decided_by"] == "argmax" and metrics["missing_classes"] == []


def test_the_headline_metrics_are_those_of_the_decision_rule_and_argmax_is_named_so():
    metrics = compute_metrics(BINARY_LABELS, BINARY_PROBABILITIES, ["A", "B"], threshold=0.45)
    predicted = (BINARY_PROBABILITIES[:, 1] >= 0.45).astype(int)
    argmax = BINARY_PROBABILITIES.argmax(axis=1)
    assert metrics["decision_threshold"] == 0.45 and metrics["decided_by"] == "threshold"
    assert metrics["accuracy"] == pytest.approx(accuracy_score(BINARY_LABELS, predicted))
    assert metrics["f1"] == pytest.approx(f1_score(BINARY_LABELS, predicted))
    assert metrics["confusion_matrix"] == confusion_matrix(BINARY_LABELS, predicted).tolist()
    assert metrics["argmax_accuracy"] == pytest.approx(accuracy_score(BINARY_LABELS, argmax))
    assert metrics["argmax_f1"] == pytest.approx(f1_score(BINARY_LABELS, argmax))
    assert metrics["argmax_confusion_matrix"] == confusion_matrix(BINARY_LABELS, argmax).tolist()
    assert metrics["argmax_accuracy"] != metrics["accuracy"]  # 0.45 and argmax disagree on this data
    assert "at threshold 0.450" in format_summary(metrics) and "argmax accuracy" in format_summary(metrics)


def test_a_class_without_test_images_is_left_out_of_the_macro_averages_and_named():
    labels = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.6, 0.2]])

    metrics = compute_metrics(labels, probabilities, ["a", "b", "c"])

    assert metrics["missing_classes"] == ["c"]
    assert (metrics["precision"], metrics["recall"], metrics["f1"]) == (1.0, 1.0, 1.0)
    assert metrics["roc_auc"] == 1.0 and metrics["average_precision"] == 1.0
    assert "no images of c" in format_summary(metrics)


def test_the_classification_report_says_which_macro_averages_metrics_json_holds_when_a_class_has_no_images():
    labels = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.8, 0.1, 0.1], [0.2, 0.1, 0.7], [0.1, 0.8, 0.1], [0.2, 0.6, 0.2]])
    metrics = compute_metrics(labels, probabilities, ["a", "b", "c"])

    report = evaluation._classification_report(labels, probabilities, probabilities.argmax(axis=1), metrics, "t")

    # c was answered once (wrongly): its precision 0 counts in the macro precision, as the card says.
    assert metrics["precision"] == pytest.approx((1 + 1 + 0) / 3)
    assert ("No test images of c (support 0): the macro recall and F1 of metrics.json, the card and the summary "
            f"leave it out (recall {metrics['recall']:.4f}, F1 {metrics['f1']:.4f}), and their macro precision counts "
            f"it only where the model answered it (precision {metrics['precision']:.4f}); scikit-learn's macro avg "
            "above counts its n/a as 0.") in report


def report_rows(report: str, name: str) -> list[list[str]]:
    """The cells of each row of ``report`` that stands for ``name`` (one per table: the rule's, then argmax's)."""
    return [line.split()[1:] for line in report.splitlines() if line.split()[:1] == [name]]


def test_the_classification_report_shows_n_a_where_metrics_json_has_nothing_to_count():
    """A class never answered showed precision 0.0000 in classification_report.txt, where metrics.json, the summary
    and the card say n/a (0 right of 0 answers), and so did the recall and F1 of a class without test images."""
    labels = np.array([0, 0, 0, 1, 1, 1])
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.45, 0.55], [0.8, 0.2]])
    metrics = compute_metrics(labels, probabilities, ["FAKE", "REAL"], threshold=0.6)
    assert metrics["per_class"]["REAL"]["precision"] is None  # never answered at 0.6; once by argmax

    report = evaluation._classification_report(labels, probabilities, np.zeros(6, int), metrics, "t")

    (rule, argmax) = report_rows(report, "REAL")
    assert rule == ["n/a", "0.0000", "0.0000", "3"]
    assert argmax == ["1.0000", "0.3333", "0.5000", "3"]
    assert report_rows(report, "FAKE")[0] == ["0.5000", "1.0000", "0.6667", "3"]
    assert report.count("n/a: nothing to count (0 of 0)") == 1  # under the rule's table, not argmax's
    assert report_rows(report, "macro")[0] == ["avg", "0.2500", "0.5000", "0.3333", "6"]  # scikit-learn's averages

    three = compute_metrics([0, 0, 1, 1], np.array([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.6, 0.3, 0.1],
                                                    [0.2, 0.6, 0.2]]), ["a", "b", "c"])
    report = evaluation._classification_report(np.array([0, 0, 1, 1]), np.eye(3)[[0, 0, 0, 1]],
                                               np.array([0, 0, 0, 1]), three, "t")
    assert report_rows(report, "c") == [["n/a", "n/a", "n/a", "0"]]
    assert report_rows(report, "b") == [["1.0000", "0.5000", "0.6667", "2"]]


def test_a_decision_threshold_applies_to_two_classes_only():
    metrics = compute_metrics(THREE_LABELS, THREE_PROBABILITIES, ["a", "b", "c"], threshold=0.3)
    assert metrics["decided_by"] == "argmax" and "decision_threshold" not in metrics
    assert metrics["accuracy"] == pytest.approx(accuracy_score(THREE_LABELS, THREE_PROBABILITIES.argmax(axis=1)))


def test_roc_auc_is_none_when_the_labels_hold_one_class():
    metrics = compute_metrics([1, 1, 1], [[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]], ["A", "B"])
    assert metrics["roc_auc"] is None
    json.dumps(metrics, allow_nan=False)  # still valid JSON


@pytest.mark.parametrize("outputs", [[[2.0, -1.0], [0.5, 3.0]],  # logits
                                     [[-0.1, 1.1], [0.3, 0.7]],  # rows sum to 1, one value negative
                                     [[0.6, 0.41], [0.3, 0.7]]])  # a row 0.01 off: more than float32 rounding
def test_outputs_that_are_not_probabilities_are_rejected(outputs):
    with pytest.raises(ValueError, match="softmax"):
        compute_metrics([0, 1], np.array(outputs), ["A", "B"])


def balanced_accuracy(labels, decided) -> float:
    labels, decided = np.asarray(labels, bool), np.asarray(decided, bool)
    return (np.mean(decided[labels]) + np.mean(~decided[~labels])) / 2


def test_choose_threshold_maximises_validation_balanced_accuracy_halfway_between_two_scores():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 300)
    scores = np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0, 1).round(3)  # rounding makes ties
    threshold = choose_threshold(labels, scores)
    candidates = np.unique(np.concatenate([scores, [0.0, 1.0, 0.5]]))
    best = max(balanced_accuracy(labels, scores >= candidate) for candidate in candidates)
    assert balanced_accuracy(labels, scores >= threshold) == pytest.approx(best)
    assert balanced_accuracy(labels, scores >= 0.5) < best  # the search does better than the default
    below, above = scores[scores < threshold].max(), scores[scores >= threshold].min()
    assert threshold == pytest.approx((below + above) / 2)  # not a validation score: as far from both as can be


def test_choose_threshold_keeps_the_most_probable_class_where_nothing_decides_better():
    labels = [0, 0, 1, 1]
    assert choose_threshold(labels, [0.1, 0.3, 0.7, 0.9]) == pytest.approx(0.5)  # any of 0.3 to 0.7 separates them
    assert choose_threshold(labels, [0.9, 0.7, 0.3, 0.1]) == pytest.approx(0.5)  # nothing beats chance


@pytest.mark.parametrize("scores", [[0.2, 0.6], [0.2, 0.5]])  # at 0.5, P(positive) = 0.5 is positive
def test_choose_threshold_keeps_0_5_where_it_decides_as_well_as_the_best_cut(scores):
    assert choose_threshold([0, 1], scores) == 0.5  # not 0.4 or 0.35, halfway between the two scores


def test_choose_threshold_takes_the_one_nearest_0_5_of_equally_good_thresholds():
    # Above 0.3 or above 0.1 both get one class's images all right and half of the other's.
    assert choose_threshold([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(0.35)


def test_a_weak_model_s_threshold_does_not_call_most_negatives_positive():
    """The F1-best threshold of a weak model slides towards "everything is positive" (F1 0.667 on balanced data):
    a ResNet50 run called 34 of 40 real test photos AI-made, at accuracy 0.56 where the most probable class had 0.63.
    Here (ROC AUC about 0.66) it called 73 % of the negatives positive on average, at a balanced accuracy of 0.574.
    """
    def draw(rng, per_class):
        labels = np.repeat([0, 1], per_class)
        return labels, 1 / (1 + np.exp(-rng.normal(0.6 * (labels - 0.5), 1.0)))  # calibrated-looking scores

    called_positive, balanced = [], []
    for seed in range(30):
        rng = np.random.default_rng(seed)
        threshold = choose_threshold(*draw(rng, 100))  # on validation
        labels, scores = draw(rng, 1000)  # on test
        called_positive.append(np.mean(scores[labels == 0] >= threshold))
        balanced.append(balanced_accuracy(labels, scores >= threshold))
    assert np.mean(called_positive) < 0.5 and np.mean(balanced) > 0.59


def test_choose_threshold_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold([1, 1, 1], [0.2, 0.5, 0.9])
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold([0, 0, 0], [0.2, 0.5, 0.9])


def test_threshold_metrics_score_the_positive_class_decided_at_the_threshold():
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1])  # class 0 positive, and the more frequent
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1, 0.6, 0.3, 0.65])
    decided = np.where(scores >= 0.5, 0, 1)

    numbers = threshold_metrics(labels, scores, 0, 0.5)

    assert numbers["f1"] == pytest.approx(f1_score(labels, decided, pos_label=0))
    assert numbers["recall"] == pytest.approx(recall_score(labels, decided, pos_label=0))
    assert numbers["balanced_accuracy"] == pytest.approx((4 / 6 + 1 / 2) / 2)  # not the accuracy, 5 / 8
    assert numbers["confusion_matrix"] == confusion_matrix(labels, decided).tolist()


def test_ece_is_zero_when_confidence_matches_accuracy():
    # 80%-sure answers right 8 times in 10, 60%-sure answers right 6 times in 10.
    labels = [0] * 8 + [1] * 2 + [1] * 6 + [0] * 4
    probabilities = [[0.8, 0.2]] * 10 + [[0.4, 0.6]] * 10
    ece = compute_metrics(labels, probabilities, ["a", "b"])["expected_calibration_error"]
    assert ece == pytest.approx(0.0, abs=1e-12)


def test_ece_is_the_confidence_gap_when_overconfident():
    labels = [0, 1] * 10  # 99%-sure answers right half of the time
    probabilities = [[0.99, 0.01]] * 20
    assert compute_metrics(labels, probabilities, ["a", "b"])["expected_calibration_error"] == pytest.approx(0.49)


def test_calibration_bins_are_15_equal_width_bins_over_top_class_confidence():
    bins = calibration_bins([2, 0, 2], [[0.1, 0.2, 0.7], [0.25, 0.3, 0.45], [0.0, 0.0, 1.0]])
    assert len(bins) == 15
    assert all(entry["upper"] - entry["lower"] == pytest.approx(1 / 15) for entry in bins)
    filled = {index: entry for index, entry in enumerate(bins) if entry["count"]}
    assert sorted(filled) == [6, 10, 14]  # 0.45 in (6/15, 7/15], 0.7 in (10/15, 11/15], 1.0 in the last bin
    assert filled[10]["accuracy"] == 1.0 and filled[6]["accuracy"] == 0.0
    assert filled[6]["confidence"] == pytest.approx(0.45)


def test_a_confidence_on_a_bin_edge_falls_in_the_bin_it_closes():
    bins = calibration_bins([0], [[0.8, 0.2]])  # 0.8 = 12 / 15: in (11/15, 12/15], not (12/15, 13/15]
    assert [index for index, entry in enumerate(bins) if entry["count"]] == [11]


def test_most_confident_errors_come_first():
    order = most_confident_errors(BINARY_LABELS, BINARY_PROBABILITIES)
    predicted = BINARY_PROBABILITIES.argmax(axis=1)
    assert set(order) == set(np.flatnonzero(predicted != BINARY_LABELS))
    confidences = [BINARY_PROBABILITIES[index].max() for index in order]
    assert confidences == sorted(confidences, reverse=True)


def test_the_most_confident_errors_of_a_threshold_rank_by_the_probability_of_the_class_it_decided():
    labels = [1, 1, 1]
    probabilities = np.array([[0.45, 0.55], [0.35, 0.65], [0.9, 0.1]])
    decided = np.array([0, 0, 0])  # at a threshold of 0.3 on P(class 0): each is called 0, wrongly
    assert most_confident_errors(labels, probabilities, decided) == [2, 0, 1]  # P(0): 0.9, 0.45, 0.35


def test_the_confident_errors_grid_takes_the_16_most_confident():
    confidences = np.linspace(0.6, 0.99, 20)
    probabilities = np.stack([confidences, 1 - confidences], axis=1)  # every image called 0, all of class 1

    order = most_confident_errors([1] * 20, probabilities)

    assert NUM_ERROR_IMAGES == 16 and order == list(range(19, 3, -1))


# --- predictions -----------------------------------------------------------------------------


def test_predictions_over_several_batches_keep_the_file_order(tmp_path, make_class_folder, binary_model):
    images = scan_images(make_class_folder(tmp_path / "test", {"FAKE": 5, "REAL": 5}, size=(16, 16)))
    probabilities = prediction.predict_images(predictor(binary_model, 8, 4), images)
    one_by_one = np.concatenate([
        np.asarray(binary_model(load_rgb(path)[None].astype(np.float32), training=False)) for path in images.files])
    np.testing.assert_allclose(probabilities, one_by_one, atol=1e-5)


# --- folders ---------------------------------------------------------------------------------


def test_a_folder_without_one_of_the_model_s_classes_is_evaluated_with_it_missing(tmp_path, make_class_folder,
                                                                                  binary_model):
    # My own real photos alone: as with an empty FAKE/ folder, the class is reported missing, not a mismatch.
    folder = make_class_folder(tmp_path / "mine", {"REAL": 2})
    metrics = evaluation.evaluate_folders(binary_model, model_info(["FAKE", "REAL"]), [folder], tmp_path / "out")
    assert metrics["missing_classes"] == ["FAKE"] and metrics["num_images"] == 2


@pytest.mark.parametrize("folder_classes", [("DOG", "REAL"), ("DOG", "FAKE", "REAL")])
def test_class_name_mismatch_names_both_sides(tmp_path, make_class_folder, binary_model, folder_classes):
    folder = make_class_folder(tmp_path / "mine", dict.fromkeys(folder_classes, 2))
    with pytest.raises(UserError) as caught:
        evaluation.evaluate_folders(binary_model, model_info(["FAKE", "REAL"]), [folder], tmp_path / "out")
    message = str(caught.value)
    assert str(list(folder_classes)) in message and "['FAKE', 'REAL']" in message
    assert not (tmp_path / "out").exists()


def test_model_predicting_other_class_count_fails_clearly(tmp_path, make_class_folder, three_class_model):
    folder = make_class_folder(tmp_path / "mine", {"FAKE": 2, "REAL": 2})
    with pytest.raises(UserError, match="predicts 3 classes"):
        evaluation.evaluate_folders(three_class_model, model_info(["FAKE", "REAL"]), [folder], tmp_path / "out")


def test_same_model_and_folder_give_identical_metrics(tmp_path, make_class_folder, binary_model):
    folder = make_class_folder(tmp_path / "mine", {"FAKE": 9, "REAL": 7})
    info = model_info(["FAKE", "REAL"], decision_threshold=0.5)
    first = evaluation.evaluate_folders(binary_model, info, [folder], tmp_path / "first", batch_size=4)
    second = evaluation.evaluate_folders(binary_model, info, [folder], tmp_path / "second", batch_size=4)
    assert first == second
    assert (tmp_path / "first" / "metrics.json").read_bytes() == (tmp_path / "second" / "metrics.json").read_bytes()


def write_truncated_jpeg(path: Path) -> Path:
    """A JPEG whose header reads fine but whose data stops halfway: the scan keeps it, the decode fails."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 2 // 3])
    return path


def test_a_file_truncated_after_its_header_is_skipped_and_listed_by_the_final_evaluation(tmp_path, dataset,
                                                                                        binary_model):
    broken_test = write_truncated_jpeg(dataset / "test" / "FAKE" / "broken.jpg")
    write_truncated_jpeg(dataset / "validation" / "REAL" / "broken.jpg")
    info = model_info(["FAKE", "REAL"], positive_class="FAKE")

    metrics = evaluation.evaluate_run(binary_model, info, dataset, tmp_path / "run", batch_size=4)

    assert metrics["num_images"] == 24 and metrics["num_skipped"] == 1
    assert metrics["skipped_files"][0]["file"] == "FAKE/broken.jpg"
    assert metrics["decision_threshold"] is not None and metrics["threshold_selection"]["num_skipped"] == 1
    assert (tmp_path / "run" / "MODEL_CARD.md").is_file()
    assert "broken.jpg" not in (tmp_path / "run" / "predictions.csv").read_text()
    assert broken_test.is_file()  # listed, never removed


def test_evaluate_folders_skips_a_file_truncated_after_its_header(tmp_path, make_class_folder, binary_model):
    folder = make_class_folder(tmp_path / "mine", {"FAKE": 3, "REAL": 3})
    write_truncated_jpeg(folder / "REAL" / "broken.jpg")

    metrics = evaluation.evaluate_folders(binary_model, model_info(["FAKE", "REAL"]), [folder], tmp_path / "out")

    assert metrics["num_images"] == 6
    assert [entry["file"] for entry in metrics["skipped_files"]] == ["REAL/broken.jpg"]


def test_broken_files_are_skipped_and_counted(tmp_path, make_class_folder, bad_files, binary_model):
    folder = make_class_folder(tmp_path / "mine", {"FAKE": 3, "REAL": 3})
    broken = bad_files(folder / "FAKE")
    metrics = evaluation.evaluate_folders(binary_model, model_info(["FAKE", "REAL"]), [folder], tmp_path / "out")
    assert metrics["num_images"] == 6
    assert metrics["num_skipped"] == len(broken)
    assert sorted(entry["file"] for entry in metrics["skipped_files"]) == sorted(
        f"FAKE/{path.name}" for path in broken.values())
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["num_skipped"] == len(broken)


def test_evaluate_folders_lists_the_files_it_leaves_out_in_unreadable_csv(tmp_path, make_class_folder, binary_model):
    folder = make_class_folder(tmp_path / "mine", {"FAKE": 3, "REAL": 3})
    (folder / "readme.txt").write_text("notes")
    (folder / "REAL" / "labels.csv").write_text("file,class")
    (folder / "REAL" / ".DS_Store").write_bytes(b"\0")
    write_image(folder / "FAKE" / "day 2" / "extra.png", seed=7)  # evaluated are the images right in a class folder

    metrics = evaluation.evaluate_folders(binary_model, model_info(["FAKE", "REAL"]), [folder], tmp_path / "out")

    with open(tmp_path / "out" / "unreadable.csv", newline="", encoding="utf-8") as stream:
        left_out = {row["file"]: row["reason"] for row in csv.DictReader(stream)}
    assert set(left_out) == {"readme.txt", "REAL/labels.csv", "REAL/.DS_Store", "FAKE/day 2/extra.png"}
    assert "not an image file" in left_out["readme.txt"] and "sub-folder" in left_out["FAKE/day 2/extra.png"]
    assert metrics["num_images"] == 6 and metrics["num_skipped"] == 4
    assert sorted(entry["file"] for entry in metrics["skipped_files"]) == sorted(left_out)


def test_left_out_files_lists_an_image_nested_in_a_class_folder_named_with_decomposed_accents(tmp_path):
    import unicodedata

    from conftest import write_image

    decomposed = unicodedata.normalize("NFD", "réel")
    write_image(tmp_path / decomposed / "a.png", seed=1)
    nested = write_image(tmp_path / decomposed / "sub" / "b.png", seed=2)

    left_out = evaluation.left_out_files(tmp_path, ["réel"])

    assert [path for path, _ in left_out] == [nested]


def test_the_evaluation_says_1_file_was_left_out_for_one_file(tmp_path, make_class_folder, binary_model, caplog):
    folder = make_class_folder(tmp_path / "mine", {"FAKE": 3, "REAL": 3})
    (folder / "readme.txt").write_text("notes")
    caplog.set_level("WARNING", logger="realvsai")

    evaluation.evaluate_folders(binary_model, model_info(["FAKE", "REAL"]), [folder], tmp_path / "out")

    assert ("1 file was left out (not an image, unreadable, over the pixel limit, or a segmentation mask); it is "
            "listed in") in caplog.text


def test_images_of_mixed_sizes_are_evaluated(tmp_path, make_class_folder, binary_model):
    folder = make_class_folder(tmp_path / "mine", {"FAKE": 3, "REAL": 3}, size=(20, 20))
    make_class_folder(tmp_path / "mine", {"FAKE": 2, "REAL": 2}, size=(61, 37), seed=9, suffix=".jpg")
    metrics = evaluation.evaluate_folders(binary_model, model_info(["FAKE", "REAL"]), [folder], tmp_path / "out")
    assert metrics["num_images"] == 10


def test_evaluate_folder_applies_the_threshold_from_model_json(tmp_path, make_class_folder, binary_model):
    folder = make_class_folder(tmp_path / "mine", {"FAKE": 4, "REAL": 4})
    info = model_info(["FAKE", "REAL"], positive_class="FAKE", decision_threshold=0.3)
    metrics = evaluation.evaluate_folders(binary_model, info, [folder], tmp_path / "out")
    assert metrics["decision_threshold"] == 0.3
    assert metrics["threshold_source"] == "model.json"
    assert (tmp_path / "out" / "EVALUATION.md").is_file()


def test_the_evaluation_counts_the_images_the_app_answers_uncertain_and_its_accuracy_on_the_rest(
        tmp_path, make_class_folder, three_class_model):
    """The headline accuracy scores the class each image leans to, but the app says Uncertain below the confidence
    threshold: metrics.json, the summary line and EVALUATION.md say on how many, and how often the app is right
    on the others, as predictions.csv's rows count them."""
    folder = make_class_folder(tmp_path / "mine", {"a": 6, "b": 6, "c": 6})
    info = model_info(["a", "b", "c"])
    first = evaluation.evaluate_folders(three_class_model, info, [folder], tmp_path / "first")
    with open(tmp_path / "first" / "predictions.csv", newline="") as stream:
        top = sorted(max(float(row[f"probability_{name}"]) for name in "abc") for row in csv.DictReader(stream))
    assert first["num_images"] == 18 and top[0] < top[-1]

    threshold = (top[8] + top[9]) / 2  # half the images below it
    metrics = evaluation.evaluate_folders(three_class_model, {**info, "confidence_threshold": threshold}, [folder],
                                          tmp_path / "out")

    with open(tmp_path / "out" / "predictions.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    certain = [row for row in rows if row["uncertain"] == "false"]
    assert metrics["uncertain"] == 18 - len(certain) == 9
    assert metrics["accuracy_when_certain"] == pytest.approx(
        sum(row["true"] == row["predicted"] for row in certain) / len(certain))
    assert "Uncertain on 9 of 18 images" in format_summary(metrics)
    assert "Uncertain on 9 of 18 images" in (tmp_path / "out" / "EVALUATION.md").read_text()


def test_evaluate_folder_never_replaces_a_runs_test_results(tmp_path, make_class_folder, binary_model):
    folder = make_class_folder(tmp_path / "mine", {"FAKE": 2, "REAL": 2})
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.json").write_text("{}")
    (run / "metrics.json").write_text('{"accuracy": 0.9}')
    with pytest.raises(UserError, match="another output folder"):
        evaluation.evaluate_folders(binary_model, model_info(["FAKE", "REAL"]), [folder], run)
    assert (run / "metrics.json").read_text() == '{"accuracy": 0.9}'


def test_evaluate_folders_checks_the_output_folder_can_be_written_before_predicting(tmp_path, make_class_folder,
                                                                                   binary_model, monkeypatch):
    folder = make_class_folder(tmp_path / "mine", {"FAKE": 2, "REAL": 2})
    out = tmp_path / "read-only"
    out.mkdir()
    read_only(monkeypatch, out)
    monkeypatch.setattr(prediction, "predict_images", lambda *args, **kwargs: pytest.fail("predicted first"))

    with pytest.raises(UserError, match="read-only") as caught:
        evaluation.evaluate_folders(binary_model, model_info(["FAKE", "REAL"]), [folder], out)

    assert str(out) in str(caught.value) and "finished work is kept" not in str(caught.value)
    assert not list(out.iterdir())


# --- runs ------------------------------------------------------------------------------------


def test_evaluate_run_writes_every_output(tmp_path, dataset, binary_model):
    run = tmp_path / "models" / "run1"
    metrics = evaluation.evaluate_run(binary_model, model_info(["FAKE", "REAL"]), dataset, run, batch_size=8)
    for name in ("metrics.json", "classification_report.txt", "MODEL_CARD.md", *model_card.PLOT_FILES.values()):
        assert (run / name).stat().st_size > 0, name
    for name in model_card.PLOT_FILES.values():
        with Image.open(run / name) as image:
            assert image.format == "PNG"
    assert json.loads((run / "metrics.json").read_text()) == metrics
    assert metrics["num_images"] == 24
    assert "FAKE" in (run / "classification_report.txt").read_text()


def test_evaluate_run_compiles_the_models_predict_function_once(tmp_path, dataset, binary_model, monkeypatch):
    from test_robustness import predictors_built

    built = predictors_built(monkeypatch)
    evaluation.evaluate_run(binary_model, model_info(["FAKE", "REAL"]), dataset, tmp_path / "run", batch_size=8)
    assert len(built) == 1  # validation's threshold and the test share it


def test_model_json_s_test_numbers_record_the_classes_and_threshold_they_were_measured_by(tmp_path, dataset,
                                                                                        binary_model):
    """So that a model.json edited by hand is told from the training's own where metrics.json is not beside it (a run
    folder copied with model.h5 and model.json alone)."""
    run = tmp_path / "run"
    run.mkdir()
    metrics = evaluation.evaluate_run(binary_model, model_info(["FAKE", "REAL"], positive_class="FAKE"), dataset, run)
    saved = json.loads((run / "model.json").read_text())["test_metrics"]
    assert (saved["class_names"], saved["positive_class"]) == (["FAKE", "REAL"], "FAKE")
    assert saved["decision_threshold"] == metrics["decision_threshold"] is not None


def test_evaluate_run_updates_model_json_keeping_other_keys(tmp_path, dataset, binary_model):
    run = tmp_path / "run"
    run.mkdir()
    info = model_info(["FAKE", "REAL"], positive_class="FAKE", best_epoch={"epoch": 3, "val_loss": 0.5})
    # The run's info replaces what model.json held of it (an earlier best epoch), and leaves the other keys.
    (run / "model.json").write_text(json.dumps({**info, "best_epoch": {"epoch": 2, "val_loss": 0.7},
                                                "created": "2026-01-01T00:00:00"}))
    metrics = evaluation.evaluate_run(binary_model, info, dataset, run)
    saved = json.loads((run / "model.json").read_text())
    assert saved["created"] == "2026-01-01T00:00:00"
    assert saved["best_epoch"] == {"epoch": 3, "val_loss": 0.5}
    assert saved["test_metrics"]["accuracy"] == metrics["accuracy"]  # the decision rule's: the app's headline
    assert saved["test_metrics"]["argmax_accuracy"] == metrics["argmax_accuracy"]
    assert saved["test_metrics"]["f1"] == metrics["f1"]
    assert saved["test_metrics"]["roc_auc"] == metrics["roc_auc"]
    assert saved["decision_threshold"] == metrics["decision_threshold"] is not None


def test_evaluate_run_chooses_the_threshold_on_validation(tmp_path, dataset, binary_model):
    info = model_info(["FAKE", "REAL"], positive_class="FAKE")
    metrics = evaluation.evaluate_run(binary_model, info, dataset, tmp_path / "run")
    validation = scan_images(dataset / "validation", class_names=["FAKE", "REAL"])
    scores = prediction.predict_images(predictor(binary_model, 8, 64), validation)[:, 0]
    expected = choose_threshold(np.asarray(validation.labels) == 0, scores.astype(np.float64))
    assert metrics["decision_threshold"] == pytest.approx(expected)
    assert metrics["threshold_source"] == "validation"
    assert metrics["threshold_selection"]["num_images"] == 20


def test_the_final_evaluation_answers_by_the_threshold_it_chose_on_validation(tmp_path):
    data = tmp_path / "data"
    grey_folder(data / "validation", {"FAKE": [130, 135, 140, 150], "REAL": [210, 220, 230, 240]})
    grey_folder(data / "test", {"FAKE": [131, 136, 141], "REAL": [215, 225, 235]})
    info = model_info(["FAKE", "REAL"], positive_class="FAKE")

    metrics = evaluation.evaluate_run(grey_classifier(), info, data, tmp_path / "run")

    # P(FAKE) is below 0.5 for every image: the most probable class is REAL throughout, the threshold tells them apart.
    assert metrics["decision_threshold"] < 0.5 and metrics["argmax_accuracy"] == 0.5 and metrics["accuracy"] == 1.0
    with open(tmp_path / "run" / "predictions.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [(row["predicted"], row["uncertain"]) for row in rows] == [(row["true"], "false") for row in rows]
    by_kind = json.loads((tmp_path / "run" / "model.json").read_text())["validation_by_kind"]
    assert by_kind["size"]["0-63 px"]["balanced_accuracy"] == 1.0


def test_the_final_evaluation_records_the_validation_accuracy_per_source_and_size(tmp_path, dataset, binary_model):
    from realvsai.layout import ManifestRow, write_manifest

    for index in range(3):  # larger images: a second size band
        big = Image.fromarray(np.full((80, 96, 3), 40 * index, np.uint8))
        big.save(dataset / "validation" / "REAL" / f"big{index}.png")
    rows = [ManifestRow(split, path.parent.name, path.relative_to(dataset).as_posix(), "0" * 64,
                        dataset="cifake" if "img_00" in path.name else "photos")
            for split in ("train", "validation", "test") for path in sorted((dataset / split).rglob("*.png"))]
    write_manifest(dataset / "manifest.csv", rows)
    run = tmp_path / "run"
    run.mkdir()
    info = model_info(["FAKE", "REAL"], positive_class="FAKE")
    (run / "model.json").write_text(json.dumps(info))

    metrics = evaluation.evaluate_run(binary_model, info, dataset, run)

    by_kind = json.loads((run / "model.json").read_text())["validation_by_kind"]
    assert by_kind == metrics["threshold_selection"]["by_kind"] and by_kind["chance"] == 0.5
    assert set(by_kind["source"]) == {"cifake", "photos"} and set(by_kind["size"]) == {"0-63 px", "64-255 px"}
    assert sum(numbers["num_images"] for numbers in by_kind["source"].values()) == 23
    assert by_kind["size"]["64-255 px"]["num_images"] == 3
    assert by_kind["size"]["64-255 px"]["missing_classes"] == ["FAKE"]  # three REAL images: untested there
    assert "## Validation by kind of image" in (run / "MODEL_CARD.md").read_text()
    assert "| source: cifake |" in (run / "MODEL_CARD.md").read_text()


def test_training_s_predictions_csv_flags_a_size_validation_shows_at_chance_as_predict_does(tmp_path,
                                                                                            make_class_folder,
                                                                                            binary_model):
    data = make_class_folder(tmp_path / "data" / "train", {"FAKE": 2, "REAL": 2}).parent
    for name in ("FAKE", "REAL"):  # one picture under both classes: every threshold is at chance on 32 px images
        for index in range(6):
            write_image(data / "validation" / name / f"{index}.png", seed=7)
    make_class_folder(data / "test", {"FAKE": 3, "REAL": 3}, seed=2)
    run = tmp_path / "run"

    info = model_info(["FAKE", "REAL"], confidence_threshold=0.0)  # only the at-chance rule makes an answer uncertain
    metrics = evaluation.evaluate_run(binary_model, info, data, run, batch_size=4)
    prediction.predict_folder(binary_model, json.loads((run / "model.json").read_text()), data / "test",
                              tmp_path / "predicted", batch_size=4)

    assert metrics["threshold_selection"]["by_kind"]["size"]["0-63 px"]["near_chance"]
    columns = ("file", "predicted", "uncertain", "unfamiliar")
    with open(run / "predictions.csv", newline="", encoding="utf-8") as stream:
        trained = [tuple(row[column] for column in columns) for row in csv.DictReader(stream)]
    with open(tmp_path / "predicted" / "predictions.csv", newline="", encoding="utf-8") as stream:
        predicted = [tuple(row[column] for column in columns) for row in csv.DictReader(stream)]
    assert trained == predicted and len(trained) == 6
    assert all(uncertain == "true" and "0-63 px" in unfamiliar and "at chance" in unfamiliar
               for _, _, uncertain, unfamiliar in trained)


def test_training_s_predictions_csv_flags_an_animation_as_predict_does(tmp_path, make_class_folder, binary_model):
    data = make_class_folder(tmp_path / "data" / "train", {"FAKE": 2, "REAL": 2}).parent
    make_class_folder(data / "validation", {"FAKE": 2, "REAL": 2}, seed=1)
    make_class_folder(data / "test", {"FAKE": 1, "REAL": 1}, seed=2)
    first, *rest = [Image.fromarray(np.full((32, 32, 3), 40 * index, np.uint8)) for index in range(3)]
    first.save(data / "test" / "REAL" / "clip.png", save_all=True, append_images=rest, duration=100)  # an APNG
    run = tmp_path / "run"

    evaluation.evaluate_run(binary_model, model_info(["FAKE", "REAL"], confidence_threshold=0.0), data, run,
                            batch_size=4)
    prediction.predict_folder(binary_model, json.loads((run / "model.json").read_text()), data / "test",
                              tmp_path / "predicted", batch_size=4)

    columns = ("file", "uncertain", "unfamiliar")
    with open(run / "predictions.csv", newline="", encoding="utf-8") as stream:
        trained = [tuple(row[column] for column in columns) for row in csv.DictReader(stream)]
    with open(tmp_path / "predicted" / "predictions.csv", newline="", encoding="utf-8") as stream:
        predicted = [tuple(row[column] for column in columns) for row in csv.DictReader(stream)]
    assert trained == predicted
    clip = next(row for row in trained if row[0] == "REAL/clip.png")
    assert clip[1] == "true" and "an animation of 3 frames: only its first is classified" in clip[2]


def test_three_classes_get_the_validation_by_kind_and_its_at_chance_rule_too(tmp_path, make_class_folder,
                                                                                three_class_model):
    names = ["benign", "malignant", "normal"]
    data = make_class_folder(tmp_path / "data" / "train", dict.fromkeys(names, 2)).parent
    for name in names:  # one picture under every class: argmax is at chance on 32 px images
        for index in range(4):
            write_image(data / "validation" / name / f"{index}.png", seed=7)
    make_class_folder(data / "test", dict.fromkeys(names, 2), seed=2)
    run = tmp_path / "run"

    info = model_info(names, confidence_threshold=0.0)  # only the at-chance rule makes an answer uncertain
    evaluation.evaluate_run(three_class_model, info, data, run, batch_size=4)

    by_kind = json.loads((run / "model.json").read_text())["validation_by_kind"]
    assert by_kind["chance"] == pytest.approx(1 / 3) and by_kind["size"]["0-63 px"]["num_images"] == 12
    assert by_kind["size"]["0-63 px"]["near_chance"]
    with open(run / "predictions.csv", newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 6 and all(row["uncertain"] == "true" and "at chance" in row["unfamiliar"] for row in rows)
    assert "## Validation by kind of image" in (run / "MODEL_CARD.md").read_text()


def test_predictions_csv_names_a_symlinked_image_and_class_folder_as_they_are_in_the_folder(tmp_path,
                                                                                           make_class_folder,
                                                                                           binary_model):
    # Named by their targets, a link beside its target read as the same file twice under two labels, and a class
    # folder linked from elsewhere gave absolute paths; --predict names them as they are in the folder.
    folder = make_class_folder(tmp_path / "test", {"FAKE": 2})
    (folder / "REAL").symlink_to(make_class_folder(tmp_path / "elsewhere", {"REAL": 2}, seed=3) / "REAL",
                                 target_is_directory=True)
    (folder / "FAKE" / "link.png").symlink_to(Path("..") / "REAL" / "img_000.png")

    evaluation.evaluate_folders(binary_model, model_info(["FAKE", "REAL"]), [folder], tmp_path / "out")

    with open(tmp_path / "out" / "predictions.csv", newline="", encoding="utf-8") as stream:
        names = sorted(row["file"] for row in csv.DictReader(stream))
    assert names == ["FAKE/img_000.png", "FAKE/img_001.png", "FAKE/link.png", "REAL/img_000.png", "REAL/img_001.png"]


# 8 FAKE in 150 images: 70/15/15 leaves one FAKE in validation, and the threshold is fitted to it. Balanced accuracy
# weighs both classes' recalls alike: on 1 REAL validation image (1,000 FAKE and 3 REAL split 70/15/15) the threshold
# is fitted to that one image as much as to a lone FAKE one, but only a positive class of few images was said.
@pytest.mark.parametrize(("validation", "num_positive", "few"), [({"FAKE": 1, "REAL": 12}, 1, "FAKE"),
                                                                 ({"FAKE": 12, "REAL": 1}, 12, "REAL")],
                         ids=["positive", "other"])
def test_a_threshold_chosen_on_few_images_of_either_class_is_said_in_the_card_and_log(
        tmp_path, make_class_folder, binary_model, caplog, validation, num_positive, few):
    data = make_class_folder(tmp_path / "data" / "train", {"FAKE": 2, "REAL": 2}).parent
    make_class_folder(data / "validation", validation, seed=3)
    make_class_folder(data / "test", {"FAKE": 2, "REAL": 2}, seed=2)
    caplog.set_level("WARNING", logger="realvsai")

    metrics = evaluation.evaluate_run(binary_model, model_info(["FAKE", "REAL"], positive_class="FAKE"), data,
                                      tmp_path / "run", batch_size=4)

    assert metrics["threshold_selection"]["num_positive"] == num_positive
    said = f"The decision threshold was chosen on 1 validation image of {few}"
    assert said in (tmp_path / "run" / "MODEL_CARD.md").read_text() and said in caplog.text


def _validation_by_kind(data_dir: Path) -> dict:
    """``accuracy_by_kind`` of ``data_dir/validation`` with every image decided right."""
    validation = scan_images(data_dir / "validation", class_names=["FAKE", "REAL"])
    return evaluation.accuracy_by_kind(validation, np.asarray(validation.labels), data_dir, 2)


def test_a_split_of_one_source_folder_is_one_source(tmp_path, make_class_folder):
    from realvsai.splitting import split_by_class

    raw = make_class_folder(tmp_path / "downloads" / "photos", {"ai": 12, "real": 12})
    make_class_folder(raw / "ai" / "city", {"night": 4}, seed=5)  # a sub-folder: ai/city/night/img_*.png
    split_by_class(raw, tmp_path / "data", ratios=(0.5, 0.5, 0.0), renames={"ai": "FAKE", "real": "REAL"})

    sources = _validation_by_kind(tmp_path / "data")["source"]

    assert list(sources) == ["photos"]  # the SOURCE folder, by name: no file, no absolute path
    assert sources["photos"]["num_images"] == len(list((tmp_path / "data" / "validation").rglob("*.png")))


def test_two_merged_datasets_are_two_sources(tmp_path, make_class_folder):
    from realvsai.merging import merge_datasets
    from realvsai.splitting import split_by_class, split_train_test

    for group, seed in (("train", 1), ("test", 2)):  # CIFAKE's layout: train/ and test/ of class folders
        make_class_folder(tmp_path / "cifake" / group, {"FAKE": 10, "REAL": 10}, seed=seed)
    make_class_folder(tmp_path / "photos", {"ai": 10, "real": 10}, seed=3)
    split_train_test(tmp_path / "cifake", tmp_path / "data", val_fraction=0.5)
    split_by_class(tmp_path / "photos", tmp_path / "data" / "photos", ratios=(0.5, 0.5, 0.0),
                   renames={"ai": "FAKE", "real": "REAL"})
    merge_datasets([tmp_path / "data" / "photos"], tmp_path / "data")

    sources = _validation_by_kind(tmp_path / "data")["source"]

    assert set(sources) == {"cifake", "photos"}
    assert sources["cifake"]["num_images"] == sources["photos"]["num_images"] == 10


@pytest.mark.parametrize(("per_class", "right_per_class", "near_chance"), [
    (10, (4, 5, 4), True), (10, (9, 9, 8), False),
    (3, (1, 2, 1), True),  # 9 images: under the 10 a kind once needed to be judged at all, so never Uncertain
    (3, (3, 3, 3), False)])
def test_a_kind_of_image_is_near_chance_unless_validation_shows_it_above_chance(tmp_path, per_class, right_per_class,
                                                                             near_chance):
    # 30 validation images of 3 classes: a balanced accuracy of 0.43 is 0.10 above chance (0.33) by luck as often
    # as not at that count; this run's test accuracy was 0.33. Judged on its lower bound, not on the point.
    from realvsai.data import LabelledImages

    labels = np.repeat([0, 1, 2], per_class)
    decided = np.concatenate([np.where(np.arange(per_class) < right, label, (label + 1) % 3)
                              for label, right in enumerate(right_per_class)])
    images = LabelledImages([tmp_path / f"{index}.png" for index in range(len(labels))], labels.tolist(),
                            ["a", "b", "c"], [(32, 32)] * len(labels), [False] * len(labels))

    band = evaluation.accuracy_by_kind(images, decided, tmp_path, 3)["size"]["0-63 px"]

    assert band["balanced_accuracy"] == pytest.approx(np.mean(right_per_class) / per_class)
    assert band["near_chance"] is near_chance


def _band(tmp_path, labels, decided, class_names) -> dict:
    """``accuracy_by_kind``'s numbers of the one size band (32 px) of images with ``labels`` answered ``decided``."""
    from realvsai.data import LabelledImages

    images = LabelledImages([tmp_path / f"{index}.png" for index in range(len(labels))], list(labels),
                            list(class_names), [(32, 32)] * len(labels), [False] * len(labels))
    return evaluation.accuracy_by_kind(images, np.asarray(decided), tmp_path, len(class_names))["size"]["0-63 px"]


@pytest.mark.parametrize(("num_classes", "per_class", "right", "near_chance"), [
    (10, 5, False, True), (40, 5, False, True), (40, 20, False, True), (10, 5, True, False), (40, 1, True, False)])
def test_a_kind_of_image_of_many_classes_all_answered_wrong_is_never_shown_above_chance(
        tmp_path, num_classes, per_class, right, near_chance):
    # Each recall was drawn towards 0.5 (+2 right of +4), which the mean over many classes kept while its spread
    # shrank: every answer wrong on 5 validation images of each of 10 classes passed as above chance (0.10).
    labels = np.repeat(np.arange(num_classes), per_class)
    decided = labels if right else (labels + 1) % num_classes

    band = _band(tmp_path, labels, decided, [f"c{index:02d}" for index in range(num_classes)])

    assert band["balanced_accuracy"] == (1.0 if right else 0.0)
    assert band["near_chance"] is near_chance


@pytest.mark.parametrize(("decided", "near_chance"), [([0] * 20, True), ([0] * 10 + [1] * 10, False)])
def test_a_kind_of_image_of_some_of_the_classes_is_judged_against_the_chance_of_telling_those_apart(
        tmp_path, decided, near_chance):
    # Validation's large photos are of two of three classes: a model that calls each of them "a" has recalls 1 and
    # 0 there, 0.50, which is 1/2's chance, not above the 1/3 of three classes.
    band = _band(tmp_path, [0] * 10 + [1] * 10, decided, ["a", "b", "c"])

    assert band["chance"] == 0.5 and band["missing_classes"] == ["c"]
    assert band["near_chance"] is near_chance


def test_a_size_band_of_one_class_in_validation_names_the_class_it_lacks(tmp_path, make_class_folder):
    make_class_folder(tmp_path / "data" / "validation", {"FAKE": 3, "REAL": 3})  # 32 px: both classes
    for index in range(4):  # larger photos, all REAL
        write_image(tmp_path / "data" / "validation" / "REAL" / f"photo_{index}.png", size=(300, 280), seed=index)

    sizes = _validation_by_kind(tmp_path / "data")["size"]

    assert sizes["0-63 px"]["missing_classes"] == []
    assert sizes["256-1023 px"]["missing_classes"] == ["FAKE"]
    assert sizes["256-1023 px"]["balanced_accuracy"] == 1.0
    assert sizes["256-1023 px"]["near_chance"]  # 4 right of 4: a coin gets that one time in 16


@pytest.mark.parametrize(("labels", "decided", "near_chance"), [
    ([0, 1], [0, 1], True), ([0, 1, 1, 1], [0, 1, 1, 0], True), ([0] * 20 + [1] * 20, [0] * 20 + [1] * 20, False)])
def test_a_handful_of_right_answers_does_not_show_a_kind_above_chance(tmp_path, labels, decided, near_chance):
    """Two of two right passed as "shown above chance": the bound was taken below the raw balanced accuracy, not
    below Agresti-Coull's centre, whose spread it used; a model at chance (test ROC AUC 0.49) then gave a certain
    answer for a screenshot in a band of 4 validation images."""
    from realvsai.data import LabelledImages

    images = LabelledImages([tmp_path / f"{index}.png" for index in range(len(labels))], labels, ["a", "b"],
                            [(32, 32)] * len(labels), [False] * len(labels))

    band = evaluation.accuracy_by_kind(images, np.array(decided), tmp_path, 2)["size"]["0-63 px"]

    assert band["near_chance"] is near_chance


def test_a_kind_s_balanced_accuracy_is_the_mean_recall_of_its_classes_not_its_accuracy(tmp_path):
    band = _band(tmp_path, [0] * 8 + [1] * 2, [0] * 10, ["a", "b"])  # every image answered a

    assert (band["accuracy"], band["balanced_accuracy"]) == (0.8, 0.5)


def test_a_manifest_written_before_the_dataset_column_gives_no_sources(tmp_path, make_class_folder):
    from realvsai.layout import ManifestRow, write_manifest

    make_class_folder(tmp_path / "data" / "validation", {"FAKE": 2, "REAL": 2})
    write_manifest(tmp_path / "data" / "manifest.csv", [
        ManifestRow("validation", path.parent.name, path.relative_to(tmp_path / "data").as_posix(), "0" * 64)
        for path in sorted((tmp_path / "data" / "validation").rglob("*.png"))])

    by_kind = _validation_by_kind(tmp_path / "data")

    assert "source" not in by_kind and "source_unit" not in by_kind and by_kind["size"]["0-63 px"]["num_images"] == 4


def test_the_card_marks_a_size_band_validation_held_one_class_of(tmp_path, dataset, binary_model):
    by_kind = {"chance": 0.5, "near_chance_margin": 0.05, "min_images": 10, "size": {
        "0-63 px": {"num_images": 20, "accuracy": 0.9, "balanced_accuracy": 0.9, "near_chance": False,
                    "missing_classes": []},
        "1024+ px": {"num_images": 14, "accuracy": 1.0, "balanced_accuracy": 1.0, "near_chance": False,
                     "missing_classes": ["FAKE"]}}}
    info = model_info(["FAKE", "REAL"], positive_class="FAKE", validation_by_kind=by_kind)

    evaluation.evaluate_folders(binary_model, info, [dataset / "test"], tmp_path / "out")

    card = (tmp_path / "out" / "EVALUATION.md").read_text()
    assert "| size: 1024+ px | 14 | 1.0000 | 1.0000 | **no FAKE image: answers Uncertain** |" in card
    assert "| size: 0-63 px | 20 | 0.9000 | 0.9000 |  |" in card


def test_the_card_lists_the_size_bands_validation_had_no_image_of_as_answered_uncertain(tmp_path, dataset,
                                                                                        binary_model):
    # The answers on such images are Uncertain ("no validation image was of 256-1023 px a side"), which the section
    # listing why answers are Uncertain by size left out.
    by_kind = {"chance": 0.5, "near_chance_margin": 0.05, "min_images": 10, "size": {
        "0-63 px": {"num_images": 20, "accuracy": 0.9, "balanced_accuracy": 0.9, "near_chance": False,
                    "missing_classes": []},
        "1024+ px": {"num_images": 14, "accuracy": 0.9, "balanced_accuracy": 0.9, "near_chance": False,
                     "missing_classes": []}}}
    info = model_info(["FAKE", "REAL"], positive_class="FAKE", validation_by_kind=by_kind)

    evaluation.evaluate_folders(binary_model, info, [dataset / "test"], tmp_path / "out")

    card = (tmp_path / "out" / "EVALUATION.md").read_text()
    rows = [line for line in card.splitlines() if line.startswith("| size: ")]
    assert rows == ["| size: 0-63 px | 20 | 0.9000 | 0.9000 |  |",
                    "| size: 64-255 px | 0 | n/a | n/a | **no validation image: answers Uncertain** |",
                    "| size: 256-1023 px | 0 | n/a | n/a | **no validation image: answers Uncertain** |",
                    "| size: 1024+ px | 14 | 0.9000 | 0.9000 |  |"]
    assert "or where no validation image was of that size or all were of one class" in card


def test_the_card_names_the_classes_a_size_band_near_chance_lacks(tmp_path, make_class_folder, three_class_model):
    """"not shown above chance" alone, where the band held one class of three (it says nothing of telling them
    apart) or two of them (the README: "the card's row names the classes it lacks")."""
    by_kind = {"chance": 1 / 3, "near_chance_margin": 0.05, "min_images": 10, "size": {
        "0-63 px": {"num_images": 1, "accuracy": 1.0, "balanced_accuracy": 1.0, "near_chance": True, "chance": 1 / 3,
                    "missing_classes": ["b", "c"]},
        "64-255 px": {"num_images": 3, "accuracy": 1.0, "balanced_accuracy": 1.0, "near_chance": True, "chance": 0.5,
                      "missing_classes": ["c"]}}}
    info = model_info(["a", "b", "c"], validation_by_kind=by_kind)

    folder = make_class_folder(tmp_path / "test", {"a": 2, "b": 2, "c": 2})
    evaluation.evaluate_folders(three_class_model, info, [folder], tmp_path / "out")

    card = (tmp_path / "out" / "EVALUATION.md").read_text()
    assert "| size: 0-63 px | 1 | 1.0000 | 1.0000 | **no b, c image: answers Uncertain** |" in card
    assert ("| size: 64-255 px | 3 | 1.0000 | 1.0000 | **not shown above chance, with no c image: answers Uncertain** |"
            in card)


def test_an_old_run_s_per_file_sources_are_left_out_of_its_evaluation_card(tmp_path, dataset, binary_model):
    old = {"chance": 0.5, "near_chance_margin": 0.05, "min_images": 10,  # before sources were datasets
           "source": {f"/home/someone/raw/train/FAKE/{index:05d}.jpg": {
               "num_images": 1, "accuracy": 1.0, "balanced_accuracy": 1.0, "near_chance": False} for index in range(3)},
           "size": {"0-63 px": {"num_images": 20, "accuracy": 0.9, "balanced_accuracy": 0.9, "near_chance": False}}}
    info = model_info(["FAKE", "REAL"], positive_class="FAKE", validation_by_kind=old)

    evaluation.evaluate_folders(binary_model, info, [dataset / "test"], tmp_path / "out")

    card = (tmp_path / "out" / "EVALUATION.md").read_text()
    assert "| size: 0-63 px | 20 |" in card
    assert "source:" not in card and "/home/someone" not in card


@pytest.mark.parametrize("class_names", [["FAKE", "REAL"], ["benign", "malignant", "normal"]])
def test_the_evaluation_counts_the_uncertain_answers_at_every_confidence_the_app_s_slider_offers(
        tmp_path, make_class_folder, binary_model, three_class_model, class_names):
    model = binary_model if len(class_names) == 2 else three_class_model
    make_class_folder(tmp_path / "data" / "validation", dict.fromkeys(class_names, 4), seed=1)
    make_class_folder(tmp_path / "data" / "test", dict.fromkeys(class_names, 5), seed=2)
    info = model_info(class_names, positive_class="FAKE" if len(class_names) == 2 else None)

    metrics = evaluation.evaluate_run(model, info, tmp_path / "data", tmp_path / "run", batch_size=4)

    with open(tmp_path / "run" / "predictions.csv", newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    probabilities = np.array([[float(row[f"probability_{name}"]) for name in class_names] for row in rows])
    unfamiliar = np.array([bool(row["unfamiliar"]) for row in rows])
    labels = np.array([class_names.index(row["true"]) for row in rows])
    table = metrics["uncertain_by_confidence"]
    lowest = 0.5 if len(class_names) == 2 else 0.0
    assert list(table) == [f"{lowest + step / 100:.2f}" for step in range(round((1 - lowest) * 100) + 1)]
    for key, (count, accuracy) in table.items():
        rule = dataclasses.replace(json_rule(tmp_path / "run" / "model.json"), confidence_threshold=float(key))
        uncertain = rule.uncertain(probabilities, unfamiliar)
        decided = rule.decide(probabilities)
        assert count == int(uncertain.sum())
        assert accuracy == (pytest.approx(np.mean(decided[~uncertain] == labels[~uncertain])) if count < len(rows)
                            else None)
    at_default = table[f"{json_rule(tmp_path / 'run' / 'model.json').confidence_threshold:.2f}"]
    assert at_default == [metrics["uncertain"], metrics["accuracy_when_certain"]]
    assert json.loads((tmp_path / "run" / "model.json").read_text())["test_metrics"]["uncertain_by_confidence"] == table


def json_rule(path: Path) -> DecisionRule:
    """The decision rule the model.json at ``path`` records."""
    return DecisionRule.from_model_info(json.loads(path.read_text()))


def test_evaluate_run_without_validation_keeps_argmax(tmp_path, make_class_folder, binary_model):
    make_class_folder(tmp_path / "data" / "test", {"FAKE": 3, "REAL": 3})
    metrics = evaluation.evaluate_run(binary_model, model_info(["FAKE", "REAL"]), tmp_path / "data",
                                      tmp_path / "run")
    assert metrics["decision_threshold"] is None
    assert metrics["decided_by"] == "argmax"
    assert json.loads((tmp_path / "run" / "model.json").read_text())["decision_threshold"] is None


def test_evaluate_run_without_a_test_split_chooses_the_threshold_and_accuracy_by_kind_on_validation(
        tmp_path, dataset, binary_model, caplog):
    """Both come from validation: a split of train/ and validation/ alone got neither (the run's model.json had no
    decision_threshold, so the app decided by the highest probability, and no validation_by_kind)."""
    shutil.rmtree(dataset / "test")
    run = tmp_path / "run"
    run.mkdir()
    info = model_info(["FAKE", "REAL"], positive_class="FAKE")
    (run / "model.json").write_text(json.dumps({**info, "created": "2026-01-01T00:00:00"}))
    caplog.set_level(logging.INFO, logger="realvsai")

    assert evaluation.evaluate_run(binary_model, info, dataset, run) is None

    saved = json.loads((run / "model.json").read_text())
    validation = scan_images(dataset / "validation", class_names=["FAKE", "REAL"])
    scores = prediction.predict_images(predictor(binary_model, 8, 64), validation)[:, 0]
    assert saved["decision_threshold"] == pytest.approx(
        choose_threshold(np.asarray(validation.labels) == 0, scores.astype(np.float64)))
    assert saved["validation_by_kind"]["size"]["0-63 px"]["num_images"] == 20
    assert saved["created"] == "2026-01-01T00:00:00" and "test_metrics" not in saved
    assert sorted(path.name for path in run.iterdir()) == ["model.json"]  # no test numbers, so no card
    assert any(f"{dataset} has no test folder: no test numbers" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("test_split", [True, False])
def test_evaluate_run_predicts_validation_once_with_or_without_a_test_split(tmp_path, dataset, binary_model,
                                                                              monkeypatch, test_split):
    from test_robustness import predictors_built

    if not test_split:
        shutil.rmtree(dataset / "test")
    built, predicted = predictors_built(monkeypatch), []
    real_predict_images = prediction.predict_images

    def predict_images(predictor, images, **kwargs):
        predicted.append(Path(images.files[0]).parent.parent.name)
        return real_predict_images(predictor, images, **kwargs)

    monkeypatch.setattr(prediction, "predict_images", predict_images)

    evaluation.evaluate_run(binary_model, model_info(["FAKE", "REAL"]), dataset, tmp_path / "run", batch_size=8)

    assert predicted == (["validation", "test"] if test_split else ["validation"]) and len(built) == 1


def test_three_class_run_reports_macro_metrics_without_threshold(tmp_path, make_class_folder, three_class_model):
    for split in ("validation", "test"):
        make_class_folder(tmp_path / "data" / split, {"benign": 3, "malignant": 3, "normal": 3})
    info = model_info(["benign", "malignant", "normal"])
    metrics = evaluation.evaluate_run(three_class_model, info, tmp_path / "data", tmp_path / "run")
    assert metrics["average"] == "macro"
    assert "decision_threshold" not in metrics
    saved = json.loads((tmp_path / "run" / "model.json").read_text())
    assert "decision_threshold" not in saved and saved["test_metrics"]["f1"] == metrics["f1"]
    assert (tmp_path / "run" / "roc_curve.png").stat().st_size > 0
    assert "threshold_source" not in metrics and "threshold_selection" not in metrics


# --- model card ------------------------------------------------------------------------------


def test_model_card_says_how_many_training_images_are_offline_copies(tmp_path):
    info = model_info(["FAKE", "REAL"], positive_class="FAKE", counts={"train": {"FAKE": 480, "REAL": 480}},
                      augmented_copies={"count": 640, "settings": {"copies": 2, "preset": "detector", "seed": 1}})
    metrics = {"folder": "data/test", "num_images": 2, "average": "binary", "positive_class": "FAKE",
               "per_class": {}, "expected_calibration_error": 0.1,
               **dict.fromkeys(("accuracy", "precision", "recall", "f1", "roc_auc", "average_precision", "loss"), 0.5)}

    card = model_card.render_card(info, metrics, "Model card: run")

    assert ("640 of the 960 training images are augmented copies made offline (DataAugmentation.py: copies 2, "
            "preset detector, seed 1)") in card


def test_model_card_has_counts_config_metrics_plots_and_limitations(tmp_path, dataset, binary_model):
    info = model_info(["FAKE", "REAL"], positive_class="FAKE",
                      counts={"train": {"FAKE": 4, "REAL": 4}, "validation": {"FAKE": 10, "REAL": 10},
                              "test": {"FAKE": 12, "REAL": 12}},
                      training_images={"min_side": 32, "max_side": 32, "images": 8, "grayscale": 0, "formats": ["PNG"]})
    metrics = evaluation.evaluate_run(binary_model, info, dataset, tmp_path / "run")
    card = (tmp_path / "run" / "MODEL_CARD.md").read_text()
    assert "| FAKE | 4 | 10 | 12 |" in card
    assert "| batch_size | `4` |" in card
    assert f"| accuracy | {metrics['accuracy']:.4f} | {metrics['argmax_accuracy']:.4f} |" in card
    for file_name in model_card.PLOT_FILES.values():
        assert f"]({file_name})" in card
    assert "Stable Diffusion 1.4" in card
    assert "Demo model" not in card


def test_model_card_says_so_when_the_data_was_synthetic_demo_data(tmp_path, dataset, binary_model):
    info = model_info(["FAKE", "REAL"], config={"epochs": 1, "demo": True})
    evaluation.evaluate_run(binary_model, info, dataset, tmp_path / "run")
    assert "synthetic" in (tmp_path / "run" / "MODEL_CARD.md").read_text()


def test_model_card_shows_a_small_learning_rate_as_it_is():
    metrics = {**compute_metrics(BINARY_LABELS, BINARY_PROBABILITIES, ["FAKE", "REAL"]),
               "folder": "data/test", "num_images": len(BINARY_LABELS)}
    info = model_info(["FAKE", "REAL"], best_epoch={"epoch": 3, "val_loss": 0.123456, "learning_rate": 1e-05})
    card = model_card.render_card(info, metrics, "Model card: run")
    assert "Best epoch (the saved model): epoch 3, val_loss 0.1235, learning_rate 1e-05." in card


def test_model_card_says_the_best_epoch_s_figures_are_keras_monitors_not_the_rule_s_numbers():
    """The epoch's val_accuracy 0.6333 and val_auc 0.7689 stood beside the validation numbers of the rule (0.7667)
    and an --evaluate of the validation images (ROC AUC 0.7733), unexplained."""
    metrics = {**compute_metrics(BINARY_LABELS, BINARY_PROBABILITIES, ["FAKE", "REAL"]),
               "folder": "data/test", "num_images": len(BINARY_LABELS)}
    best = {"epoch": 2, "val_accuracy": 0.6333, "val_auc": 0.7689, "val_cross_entropy": 0.6984}
    card = model_card.render_card(model_info(["FAKE", "REAL"], best_epoch=best), metrics, "t")

    assert ("The epoch's other figures are Keras' monitors during training: accuracy, precision, recall and F1 of the "
            "most probable class, not the decision rule, and AUC over 200 thresholds, an approximation of the ROC "
            "AUC.") in card


@pytest.mark.parametrize("name, shown", [("__init__", "\\_\\_init\\_\\_"), ("_blurry_", "\\_blurry\\_"),
                                         ("real_images", "real_images"), ("$1 bill", "\\$1 bill")])
def test_markdown_text_escapes_an_underscore_that_would_emphasise_and_a_dollar_that_would_start_latex(name, shown):
    """The card showed the class __init__ as a bold "init" and _blurry_ in italics; the app read "$1 bill, $5 bill"
    as LaTeX. An underscore inside a word emphasises nothing and stays as it is."""
    assert model_card.markdown_text(name) == shown


def test_macro_precision_counts_a_class_the_model_answered_that_has_no_test_image():
    """Four answers, two of them a class with no test image (all wrong): macro precision was 1.0, over the two
    classes with test images alone."""
    probabilities = np.eye(3)[[0, 2, 1, 2]] * 0.9 + 0.1 / 3
    metrics = compute_metrics([0, 0, 1, 1], probabilities, ["a", "b", "c"])

    assert metrics["precision"] == pytest.approx(2 / 3)  # a 1, b 1, and c 0: its two answers are wrong
    assert metrics["recall"] == pytest.approx(0.5) and metrics["f1"] == pytest.approx(2 / 3)  # over a and b
    assert metrics["argmax_precision"] == pytest.approx(2 / 3)


def test_model_card_names_every_reason_the_app_says_uncertain_for():
    """It named the confidence threshold and unlike images only: a run at chance on its test images' size band said
    Uncertain on 16 of 16 whose top probabilities all passed the threshold."""
    metrics = {**compute_metrics(BINARY_LABELS, BINARY_PROBABILITIES, ["FAKE", "REAL"]),
               "folder": "data/test", "num_images": len(BINARY_LABELS), "uncertain": 2, "accuracy_when_certain": 0.5}
    card = model_card.render_card(model_info(["FAKE", "REAL"]), metrics, "Model card: run")

    assert ("below the confidence threshold, unlike the training images, or of a size validation found the model at "
            "chance on or had no image of") in card


def test_model_card_tells_trainings_losses_from_the_tests_plain_log_loss():
    """val_loss is training's objective (class-weighted, with the head's L2 penalty): beside the test's plain
    cross-entropy under one name it invites a wrong comparison."""
    metrics = {**compute_metrics(BINARY_LABELS, BINARY_PROBABILITIES, ["FAKE", "REAL"]),
               "folder": "data/test", "num_images": len(BINARY_LABELS)}
    info = model_info(["FAKE", "REAL"], best_epoch={"epoch": 3, "loss": 0.4, "val_loss": 0.5, "cross_entropy": 0.3,
                                                    "val_cross_entropy": 0.4, "learning_rate": 1e-05})
    card = model_card.render_card(info, metrics, "Model card: run")

    assert f"| log loss (plain cross-entropy) | {metrics['loss']:.4f} |" in card
    assert "| loss |" not in card
    assert ("It has the run's lowest val_cross_entropy: cross-entropy, class-weighted where class weights are on; "
            "loss and val_loss, training's objective, add the head's L2 penalty; learning_rate is the schedule's at "
            "the epoch's end.") in card


def test_the_model_card_of_a_run_begun_before_the_cross_entropy_was_logged_names_its_own_choice():
    """It said "It has the run's lowest val_cross_entropy" of a best epoch chosen by val_loss."""
    metrics = {**compute_metrics(BINARY_LABELS, BINARY_PROBABILITIES, ["FAKE", "REAL"]),
               "folder": "data/test", "num_images": len(BINARY_LABELS)}
    info = model_info(["FAKE", "REAL"], best_epoch={"epoch": 3, "loss": 0.4, "val_loss": 0.5})
    card = model_card.render_card(info, metrics, "Model card: run")
    assert "It has the run's lowest val_loss" in card and "val_cross_entropy" not in card


def test_the_model_card_names_the_measure_model_json_records_for_a_resumed_best_epoch_that_logged_both():
    """A run begun before the cross-entropy was logged, resumed since: its best epoch logged both measures but was
    chosen by val_loss (model.json's monitor), and the card said it had the lowest val_cross_entropy."""
    metrics = {**compute_metrics(BINARY_LABELS, BINARY_PROBABILITIES, ["FAKE", "REAL"]),
               "folder": "data/test", "num_images": len(BINARY_LABELS)}
    best = {"epoch": 3, "loss": 0.4, "val_loss": 0.5, "cross_entropy": 0.3, "val_cross_entropy": 0.45}
    card = model_card.render_card(model_info(["FAKE", "REAL"], best_epoch=best, monitor="val_loss"), metrics,
                                  "Model card: run")
    assert "It has the run's lowest val_loss;" in card

def test_model_card_names_the_l2_penalty_only_where_the_run_had_one():
    metrics = {**compute_metrics(BINARY_LABELS, BINARY_PROBABILITIES, ["FAKE", "REAL"]),
               "folder": "data/test", "num_images": len(BINARY_LABELS)}
    best = {"epoch": 3, "loss": 0.4, "val_loss": 0.5, "cross_entropy": 0.3, "val_cross_entropy": 0.4}
    with_l2 = model_card.render_card(model_info(["FAKE", "REAL"], best_epoch=best, config={"l2": 1e-4}), metrics, "t")
    without = model_card.render_card(model_info(["FAKE", "REAL"], best_epoch=best, config={"l2": 0}), metrics, "t")

    assert "add the head's L2 penalty" in with_l2 and "L2" not in without.split("## Training configuration")[0]
    assert "class-weighted where class weights are on;" in without


def test_the_rule_at_a_confidence_threshold_of_one_half_is_uncertain_only_on_images_not_to_be_trusted():
    # "never Uncertain" stood on the app's page beside the Uncertain answers on unfamiliar uploads
    rule = DecisionRule(decision_threshold=0.452, positive_index=0, confidence_threshold=0.5)

    assert rule.describe(["FAKE", "REAL"]) == ("Decision rule: FAKE when P(FAKE) ≥ 0.452 (the decision threshold "
                                               "chosen on validation), else REAL; Uncertain only on an image it is "
                                               "not to be trusted on (the confidence threshold 0.50 leaves no band).")
    assert not rule.uncertain(np.array([[0.452, 0.548], [0.2, 0.8]])).any()
    assert rule.uncertain(np.array([[0.2, 0.8]]), np.array([True])).all()


@pytest.mark.parametrize("rule", [DecisionRule(decision_threshold=0.452, positive_index=0),
                                  DecisionRule(confidence_threshold=0.7), DecisionRule()])
def test_every_statement_of_the_rule_says_an_image_not_to_be_trusted_on_is_uncertain(rule):
    assert rule.describe(["FAKE", "REAL"]).endswith("and on an image it is not to be trusted on.")


@pytest.mark.parametrize("probabilities, unfamiliar, reason", [
    ([0.9, 0.1], False, "P(FAKE) 90.0% ≥ the decision threshold 40.0% (chosen on validation)"),
    ([0.1, 0.9], False, "P(FAKE) 10.0% < the decision threshold 40.0% (chosen on validation)"),
    ([0.45, 0.55], False, "Leaning FAKE: P(FAKE) is 45.0%, between 32.0% and 52.0%, close to the 40.0% decision "
                          "threshold."),
    ([0.1, 0.9], True, "Leaning REAL: P(FAKE) 10.0% < the decision threshold 40.0% (chosen on validation), but not "
                       "certain on such images."),
    ([0.45, 0.55], True, "Leaning FAKE: P(FAKE) is 45.0%, between 32.0% and 52.0%, close to the 40.0% decision "
                         "threshold, and not certain on such images."),
], ids=["decided_positive", "decided_other", "in_the_band", "unfamiliar", "in_the_band_and_unfamiliar"])
def test_the_rule_says_why_an_answer_is_what_it_is_at_a_decision_threshold(probabilities, unfamiliar, reason):
    """The reason the app's card and --predict of one image give (``DecisionRule.reason``)."""
    rule = DecisionRule(decision_threshold=0.4, positive_index=0)

    assert rule.reason(np.array(probabilities), ["FAKE", "REAL"], unfamiliar) == reason


def test_a_threshold_near_1_and_a_probability_just_under_it_read_apart():
    """A threshold fitted to one validation image, 0.99999535, read "P(FAKE) is 100.0% ... close to the 100.0%
    decision threshold" beside an answer of REAL, and the rule "FAKE when P(FAKE) ≥ 1.000"."""
    threshold = 0.9999953508377075
    rule = DecisionRule(decision_threshold=threshold, positive_index=0)
    score = 0.999987

    assert rule.reason(np.array([score, 1 - score]), ["FAKE", "REAL"]) == (
        "Leaning REAL: P(FAKE) is 99.9987%, between 79.9996% and 99.9996%, close to the 99.9995% decision threshold.")
    assert rule.describe(["FAKE", "REAL"]).startswith("Decision rule: FAKE when P(FAKE) ≥ 0.999995 ")
    assert metrics.distinct_figures([threshold], 3) == ["0.999995"]
    assert metrics.distinct_figures([0.4, 0.45], 3) == ["0.400", "0.450"]  # as they were
    assert metrics.distinct_figures([1.0, 0.0], 3, percent=True) == ["100.000%", "0.000%"]


@pytest.mark.parametrize("probabilities, unfamiliar, reason", [
    ([0.8, 0.1, 0.1], False, "80.0% probability"),
    ([0.5, 0.3, 0.2], False, "Leaning cat at 50.0%, below the 60% threshold."),
    ([0.8, 0.1, 0.1], True, "Leaning cat: 80.0% probability, but not certain on such images."),
    ([0.5, 0.3, 0.2], True, "Leaning cat at 50.0%, below the 60% threshold, and not certain on such images."),
], ids=["decided", "below_the_confidence_threshold", "unfamiliar", "below_and_unfamiliar"])
def test_the_rule_says_why_an_answer_is_what_it_is_by_the_most_probable_class(probabilities, unfamiliar, reason):
    assert DecisionRule().reason(np.array(probabilities), ["cat", "dog", "fox"], unfamiliar) == reason


def test_format_summary_names_the_headline_numbers_and_skipped_files():
    metrics = compute_metrics(BINARY_LABELS, BINARY_PROBABILITIES, ["A", "B"], threshold=0.45)
    line = format_summary({**metrics, "num_skipped": 2})
    assert f"accuracy {metrics['accuracy']:.4f}" in line and f"ROC AUC {metrics['roc_auc']:.4f}" in line
    assert "threshold 0.450" in line
    assert "2 files skipped (not images, unreadable, over the pixel limit, or segmentation masks)" in line


def test_format_summary_says_macro_of_the_averaged_numbers_of_three_classes():
    """The app and the card say "F1 (macro)" of a 3-class run; the closing lines said "F1" alone."""
    labels = np.array([0, 1, 2, 0, 1, 2])
    probabilities = np.eye(3)[[0, 1, 2, 1, 1, 2]] * 0.8 + 0.2 / 3
    line = format_summary({**compute_metrics(labels, probabilities, ["benign", "malignant", "normal"]),
                           "num_images": 6})
    assert ", F1 (macro) " in line and ", ROC AUC (macro) " in line


def test_an_evaluation_without_uncertain_answers_says_so_without_the_accuracy_on_the_rest():
    assert uncertain_text({"num_images": 18, "uncertain": 0, "accuracy_when_certain": 0.9}) == (
        "Uncertain on 0 of 18 images")
    assert uncertain_text({"num_images": 18, "uncertain": 9, "accuracy_when_certain": 0.7778}) == (
        "Uncertain on 9 of 18 images (accuracy 0.7778 on the other 9)")


def test_format_summary_says_1_file_skipped_for_one_file():
    metrics = compute_metrics(BINARY_LABELS, BINARY_PROBABILITIES, ["A", "B"], threshold=0.45)
    line = format_summary({**metrics, "num_skipped": 1})
    assert "; 1 file skipped (not an image, unreadable, over the pixel limit, or a segmentation mask)" in line


# --- several sources -----------------------------------------------------------------------------


def test_source_names_tell_equal_folder_names_apart_by_their_parent(tmp_path):
    names = evaluation.source_names([tmp_path / "data" / "test", tmp_path / "photos" / "test", tmp_path / "mine"])
    assert names == ["data/test", "photos/test", "mine"]


def test_a_source_folder_given_twice_is_refused(tmp_path):
    with pytest.raises(UserError, match="given twice"):
        evaluation.source_names([tmp_path / "test", tmp_path / "x" / ".." / "test"])


def test_accuracy_on_fake_and_on_real_are_the_recalls_of_the_positive_and_the_other_class():
    numbers = evaluation.source_metrics(BINARY_LABELS, BINARY_PROBABILITIES, ["FAKE", "REAL"], positive_class="FAKE")
    predicted = BINARY_PROBABILITIES.argmax(axis=1)
    assert numbers["accuracy_positive"] == pytest.approx(recall_score(BINARY_LABELS, predicted, pos_label=0))
    assert numbers["accuracy_negative"] == pytest.approx(recall_score(BINARY_LABELS, predicted, pos_label=1))
    assert numbers["class_accuracy"] == {"FAKE": numbers["accuracy_positive"], "REAL": numbers["accuracy_negative"]}
    assert numbers["average_precision"] == pytest.approx(
        average_precision_score(BINARY_LABELS == 0, BINARY_PROBABILITIES[:, 0]))
    assert numbers["roc_auc"] == pytest.approx(roc_auc_score(BINARY_LABELS == 0, BINARY_PROBABILITIES[:, 0]))


def test_source_accuracies_follow_the_decision_threshold():
    numbers = evaluation.source_metrics(BINARY_LABELS, BINARY_PROBABILITIES, ["FAKE", "REAL"], "FAKE", threshold=0.0)
    # P(FAKE) >= 0 for every image: all are called FAKE, as the app would.
    assert numbers["accuracy"] == pytest.approx(np.mean(BINARY_LABELS == 0))
    assert (numbers["accuracy_positive"], numbers["accuracy_negative"]) == (1.0, 0.0)


def test_three_class_sources_give_the_accuracy_on_each_class():
    numbers = evaluation.source_metrics(THREE_LABELS, THREE_PROBABILITIES, ["a", "b", "c"])
    recalls = recall_score(THREE_LABELS, THREE_PROBABILITIES.argmax(axis=1), average=None)
    assert numbers["class_accuracy"] == pytest.approx(dict(zip(["a", "b", "c"], recalls)))
    assert "accuracy_positive" not in numbers


def test_each_source_is_scored_alone_and_all_of_them_together(tmp_path, make_class_folder, binary_model):
    first = make_class_folder(tmp_path / "data" / "test", {"FAKE": 5, "REAL": 3}, seed=1)
    second = make_class_folder(tmp_path / "photos" / "test", {"FAKE": 2, "REAL": 6}, seed=2, size=(40, 24))
    info = model_info(["FAKE", "REAL"], positive_class="FAKE")
    metrics = evaluation.evaluate_folders(binary_model, info, [first, second], tmp_path / "out", batch_size=4)
    assert list(metrics["sources"]) == ["data/test", "photos/test"]
    for name, folder in (("data/test", first), ("photos/test", second)):
        alone = evaluation.evaluate_folders(binary_model, info, [folder], tmp_path / name.replace("/", "-"))
        source = metrics["sources"][name]
        assert source["num_images"] == alone["num_images"] == 8
        assert source["accuracy"] == pytest.approx(alone["accuracy"])
        assert source["roc_auc"] == pytest.approx(alone["roc_auc"])
        assert source["accuracy_positive"] == pytest.approx(alone["per_class"]["FAKE"]["recall"])
    assert metrics["num_images"] == metrics["combined"]["num_images"] == 16
    assert metrics["combined"]["accuracy"] == pytest.approx(metrics["accuracy"])
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == metrics


def test_every_number_of_an_evaluation_follows_the_decision_rule_of_model_json(tmp_path):
    # At the threshold 0.1 on P(FAKE) the first three FAKE images are FAKE; grey 184 (0.098) is REAL, wrong and
    # Uncertain (P(FAKE) within 0.08 to 0.28); the most probable class is REAL for every image.
    folder = grey_folder(tmp_path / "mine", {"FAKE": [130, 140, 150, 184], "REAL": [220, 230, 240]})
    info = model_info(["FAKE", "REAL"], positive_class="FAKE", decision_threshold=0.1)

    metrics = evaluation.evaluate_folders(grey_classifier(), info, [folder], tmp_path / "out")

    assert metrics["accuracy"] == pytest.approx(6 / 7) and metrics["argmax_accuracy"] == pytest.approx(3 / 7)
    assert metrics["combined"]["accuracy"] == metrics["sources"]["mine"]["accuracy"] == pytest.approx(6 / 7)
    assert metrics["sources"]["mine"]["accuracy_positive"] == 0.75
    assert (metrics["uncertain"], metrics["accuracy_when_certain"]) == (1, 1.0)


def test_evaluation_card_has_a_row_per_source_and_one_for_all(tmp_path, make_class_folder, binary_model):
    first = make_class_folder(tmp_path / "a" / "test", {"FAKE": 2, "REAL": 2}, seed=1)
    second = make_class_folder(tmp_path / "b" / "test", {"FAKE": 2, "REAL": 2}, seed=2)
    metrics = evaluation.evaluate_folders(binary_model, model_info(["FAKE", "REAL"], positive_class="FAKE"),
                                          [first, second], tmp_path / "out")
    card = (tmp_path / "out" / "EVALUATION.md").read_text()
    assert "| source | images | accuracy | AP | ROC AUC | accuracy on FAKE | accuracy on REAL |" in card
    source = metrics["sources"]["a/test"]
    numbers = [source[key] for key in ("accuracy", "average_precision", "roc_auc", "accuracy_positive",
                                       "accuracy_negative")]
    assert "| a/test | 4 | " + " | ".join(f"{value:.4f}" for value in numbers) + " |" in card
    assert "| **all sources** | 8 |" in card


def test_training_s_own_evaluation_stays_one_source(tmp_path, dataset, binary_model):
    metrics = evaluation.evaluate_run(binary_model, model_info(["FAKE", "REAL"]), dataset, tmp_path / "run")
    assert "sources" not in metrics and "## Per source" not in (tmp_path / "run" / "MODEL_CARD.md").read_text()


@pytest.mark.parametrize(("input_mode", "said", "not_said"), [
    ("crops", "3x3 crops of 8 px at native resolution", "resized to 8 px"),
    ("resize", "the centre square resized to 8 px", "crops of")])
def test_the_model_card_describes_the_input_the_model_sees(input_mode, said, not_said):
    metrics = compute_metrics(BINARY_LABELS, BINARY_PROBABILITIES, ["FAKE", "REAL"], "FAKE")

    card = model_card.render_card(model_info(["FAKE", "REAL"], input_mode=input_mode), {**metrics, "folder": "x"}, "c")

    assert said in card and not_said not in card


def test_model_card_shows_the_training_images_and_the_shortcut_warning():
    metrics = {**compute_metrics(BINARY_LABELS, BINARY_PROBABILITIES, ["FAKE", "REAL"]),
               "folder": "data/test", "num_images": len(BINARY_LABELS)}
    warning = "shortcut: image format alone predicts the class with 100% balanced accuracy (...)."
    info = model_info(["FAKE", "REAL"], training_images={"min_side": 32, "max_side": 512, "formats": ["JPEG", "PNG"]},
                      shortcuts={"size": 0.5, "format": 1.0}, shortcut_warning=warning)
    card = model_card.render_card(info, metrics, "Model card: run")
    assert "Training images: 32-512 px a side; JPEG, PNG." in card
    assert warning in card
    plain = model_card.render_card(model_info(["FAKE", "REAL"], training_images={"min_side": 32, "max_side": 32,
                                                                                 "formats": ["PNG"]},
                                              shortcut_warning=None), metrics, "Model card: run")
    assert "Training images: 32 px a side; PNG." in plain and "shortcut" not in plain


def test_model_card_says_a_grayscale_image_is_flagged_for_a_model_trained_on_colour_images_only():
    metrics = {**compute_metrics(BINARY_LABELS, BINARY_PROBABILITIES, ["FAKE", "REAL"]),
               "folder": "data/test", "num_images": len(BINARY_LABELS)}
    colour = {"min_side": 32, "max_side": 32, "formats": ["PNG"], "images": 900, "grayscale": 0}

    card = model_card.render_card(model_info(["FAKE", "REAL"], training_images=colour), metrics, "c")
    mixed = model_card.render_card(model_info(["FAKE", "REAL"], training_images=colour | {"grayscale": 12}),
                                   metrics, "c")
    old = model_card.render_card(model_info(["FAKE", "REAL"], training_images={
        "min_side": 32, "max_side": 32, "formats": ["PNG"]}), metrics, "c")

    assert "Training images: 32 px a side; PNG; all in colour." in card
    assert "a grayscale image, as no training image was" in card
    assert "Training images: 32 px a side; PNG; 12 of 900 grayscale." in mixed and "as no training image" not in mixed
    assert "Training images: 32 px a side; PNG. " in old and "grayscale" not in old


def test_model_card_words_the_small_test_set_with_the_function_the_app_calls():
    metrics = {**compute_metrics(BINARY_LABELS, BINARY_PROBABILITIES, ["FAKE", "REAL"]),
               "folder": "data/test", "num_images": len(BINARY_LABELS)}

    card = model_card.render_card(model_info(["FAKE", "REAL"]), metrics, "c")

    assert f"- {model_card.small_test_set(len(BINARY_LABELS))}" in card
    assert model_card.small_test_set(5000) is None and model_card.small_test_set(None) is None


def test_a_test_set_is_small_under_1000_images():
    assert model_card.small_test_set(999) is not None and model_card.small_test_set(1000) is None


def test_the_small_test_set_sentence_names_the_test_numbers_it_speaks_of():
    """--predict prints it too, above answers with no test numbers near: "move these numbers" pointed at nothing."""
    assert model_card.small_test_set(120) == ("The test set is small (120 images): a few images more or less right "
                                              "move its test numbers noticeably.")


def test_a_threshold_chosen_on_fewer_than_10_validation_images_of_either_class_is_said_to_be():
    """The README's "chosen on fewer than 10 validation images of either class": 9 of one class is few, 10 is not."""
    few = model_card.few_threshold_images({"num_positive": 9, "num_images": 19}, "REAL", "FAKE")
    assert few.startswith("The decision threshold was chosen on 9 validation images of REAL:")
    assert model_card.few_threshold_images({"num_positive": 10, "num_images": 20}, "REAL", "FAKE") is None
    assert "9 validation images of FAKE" in model_card.few_threshold_images({"num_positive": 10, "num_images": 19},
                                                                             "REAL", "FAKE")


def test_a_file_that_fails_to_decode_is_judged_under_the_evaluations_pixel_limit(tmp_path):
    from conftest import png_header_only

    write_image(tmp_path / "REAL" / "changed.png", seed=1)
    write_image(tmp_path / "REAL" / "fine.png", seed=2)
    images = scan_images(tmp_path, max_pixels=10**9)
    (tmp_path / "REAL" / "changed.png").write_bytes(png_header_only(20_000, 20_000))  # after the scan: 400 MP
    probabilities = np.array([[np.nan], [1.0]])  # changed.png did not decode

    kept, _ = evaluation.without_failed(images, probabilities)

    ((path, reason),) = kept.skipped
    assert path.name == "changed.png" and "limit" not in reason


@pytest.mark.parametrize(("sides", "cifake"), [((32, 32), True), ((816, 2912), False)])
def test_the_cards_limitation_for_a_real_or_fake_detector_names_cifake_only_for_cifake_sized_images(sides, cifake):
    """A model trained on 816-2912 px photos (classes ai and real) was said to be "A detector trained on CIFAKE"."""
    metrics = {**compute_metrics(BINARY_LABELS, BINARY_PROBABILITIES, ["ai", "real"]),
               "folder": "data/test", "num_images": len(BINARY_LABELS)}
    profile = {"min_side": sides[0], "max_side": sides[1], "images": 40, "grayscale": 0, "formats": ["JPEG"]}

    card = model_card.render_card(model_info(["ai", "real"], training_images=profile), metrics, "Model card: run")

    assert ("trained on CIFAKE" in card) is cifake
    assert "Other generators, other resolutions, and post-processing" in card


@pytest.mark.parametrize("only", ["FAKE", "REAL"])
def test_a_test_folder_of_one_class_scores_nothing_it_cannot_measure(only):
    """A FAKE-only folder showed average precision 1.0 whatever the model did, a REAL-only one FAKE's recall 0/0 as
    0.0000 and AP 0.0, both said "averaged over the other classes" of two classes' positive-class numbers."""
    probabilities = np.random.default_rng(3).dirichlet([1, 1], size=10)
    labels = [["FAKE", "REAL"].index(only)] * 10

    metrics = compute_metrics(labels, probabilities, ["FAKE", "REAL"], positive_class="FAKE", threshold=0.5)

    assert metrics["roc_auc"] is None and metrics["average_precision"] is None
    if only == "REAL":  # FAKE, the positive class, has no image: its recall (and F1) is 0/0
        assert metrics["recall"] is None and metrics["f1"] is None and metrics["argmax_recall"] is None
        assert metrics["per_class"]["FAKE"]["recall"] is None
    else:
        assert metrics["recall"] == metrics["per_class"]["FAKE"]["recall"] is not None
    summary = format_summary(metrics)
    assert "averaged" not in summary and f"no images of {'REAL' if only == 'FAKE' else 'FAKE'}" in summary
    card = model_card.render_card(model_info(["FAKE", "REAL"]), {**metrics, "folder": "x", "num_images": 10}, "card")
    assert "macro averages" not in card


@pytest.mark.parametrize("answer", ["FAKE", "REAL"])
def test_the_precision_of_a_class_the_rule_never_answers_is_none_not_zero(answer):
    """A model that answers one class on every image (a lopsided set's majority) had the other class's precision,
    0 right of 0 answers, shown as 0.0000 beside its recall; a class without images already had its recall n/a."""
    labels = [0] * 9 + [1]  # 9 FAKE, 1 REAL
    column = ["FAKE", "REAL"].index(answer)
    probabilities = np.full((10, 2), 0.1)
    probabilities[:, column] = 0.9
    never = "REAL" if answer == "FAKE" else "FAKE"

    metrics = compute_metrics(labels, probabilities, ["FAKE", "REAL"], positive_class="FAKE", threshold=0.5)

    assert metrics["per_class"][never]["precision"] is None
    assert metrics["per_class"][never]["recall"] == 0.0 and metrics["per_class"][never]["f1"] == 0.0
    assert metrics["per_class"][answer]["precision"] == pytest.approx(0.9 if answer == "FAKE" else 0.1)
    if never == "FAKE":  # the positive class: the headline precision is its
        assert metrics["precision"] is None and metrics["argmax_precision"] is None and metrics["f1"] == 0.0
    json.dumps(metrics, allow_nan=False)
    card = model_card.render_card(model_info(["FAKE", "REAL"]), {**metrics, "folder": "x"}, "card")
    assert f"| {never} | n/a | 0.0000 | 0.0000 | " in card


def test_a_lopsided_test_set_reports_balanced_accuracy_beside_accuracy():
    """1,000 FAKE and 3 REAL split 70/15/15: a model answering FAKE on all 151 test images scored "accuracy
    0.9934, F1 0.9967" in the summary, the card and model.json, with no number that says it tells nothing apart."""
    labels = np.array([0] * 150 + [1])
    probabilities = np.tile([0.9, 0.1], (151, 1))

    metrics = compute_metrics(labels, probabilities, ["FAKE", "REAL"], positive_class="FAKE", threshold=0.5)

    assert metrics["accuracy"] == pytest.approx(150 / 151)
    assert metrics["balanced_accuracy"] == metrics["argmax_balanced_accuracy"] == pytest.approx(0.5)
    assert "balanced accuracy 0.5000" in format_summary(metrics)
    card = model_card.render_card(model_info(["FAKE", "REAL"]), {**metrics, "folder": "x"}, "card")
    assert "| balanced_accuracy | 0.5000 | 0.5000 |" in card
    assert "balanced_accuracy" in evaluation.SUMMARY_KEYS  # model.json's test_metrics, which the app shows


def test_balanced_accuracy_is_the_mean_recall_of_the_classes_with_test_images():
    metrics = compute_metrics(THREE_LABELS, THREE_PROBABILITIES, ["a", "b", "c"])
    recalls = recall_score(THREE_LABELS, THREE_PROBABILITIES.argmax(axis=1), average=None)
    assert metrics["balanced_accuracy"] == pytest.approx(recalls.mean())
    without_c = THREE_LABELS != 2
    metrics = compute_metrics(THREE_LABELS[without_c], THREE_PROBABILITIES[without_c], ["a", "b", "c"])
    recalls = recall_score(THREE_LABELS[without_c], THREE_PROBABILITIES[without_c].argmax(axis=1), labels=[0, 1],
                           average=None)
    assert metrics["balanced_accuracy"] == pytest.approx(recalls.mean())


@pytest.mark.parametrize("only", ["FAKE", "REAL"])
def test_the_balanced_accuracy_of_two_classes_one_without_test_images_is_n_a(only):
    """REAL-only test images: the card showed "balanced_accuracy 0.4333", REAL's recall alone, right above its note
    that the figures needing images of both classes are n/a."""
    probabilities = np.random.default_rng(3).dirichlet([1, 1], size=10)
    labels = np.full(10, ["FAKE", "REAL"].index(only))

    metrics = compute_metrics(labels, probabilities, ["FAKE", "REAL"], positive_class="FAKE", threshold=0.5)

    assert metrics["balanced_accuracy"] is None and metrics["argmax_balanced_accuracy"] is None
    assert "(balanced accuracy n/a)" in format_summary(metrics)
    card = model_card.render_card(model_info(["FAKE", "REAL"]), {**metrics, "folder": "x"}, "card")
    assert "| balanced_accuracy | n/a | n/a |" in card and "(balanced accuracy, ROC AUC" in card
    assert threshold_metrics(labels, probabilities[:, 0], 0, 0.5)["balanced_accuracy"] is None


def test_a_balanced_accuracy_over_some_of_the_classes_says_over_how_many():
    """Three classes, c without test images: "balanced accuracy 0.7500" read as over the three, whose chance is 1/3;
    it is the mean recall of a and b, whose chance is 1/2."""
    labels = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.2, 0.6, 0.2]])

    metrics = compute_metrics(labels, probabilities, ["a", "b", "c"])

    assert metrics["balanced_accuracy"] == pytest.approx(0.75)
    assert "(balanced accuracy 0.7500 over 2 of 3 classes, chance 0.50)" in format_summary(metrics)
    card = model_card.render_card(model_info(["a", "b", "c"]), {**metrics, "folder": "x"}, "card")
    assert "| balanced_accuracy over 2 of 3 classes, chance 0.50 | 0.7500 |" in card
    every = compute_metrics(THREE_LABELS, THREE_PROBABILITIES, ["a", "b", "c"])
    assert "over" not in format_summary(every).split("(balanced accuracy")[1].split(")")[0]


@pytest.mark.parametrize("answer", ["big", "small"])
def test_a_model_answering_one_class_for_every_test_image_is_said_so_beside_the_majority_baseline(answer):
    """Every answer big, 9 of 10 test images big: "test: accuracy 0.9000 (balanced accuracy 0.5000)", no remark, and
    no output gave the accuracy of always answering the most frequent class."""
    labels = np.array([0] * 9 + [1])
    probabilities = np.tile([0.9, 0.1] if answer == "big" else [0.1, 0.9], (10, 1))

    metrics = compute_metrics(labels, probabilities, ["big", "small"])

    assert (metrics["majority_class"], metrics["majority_baseline"], metrics["single_answer"]) == ("big", 0.9, answer)
    said = ("answered big for every test image: always answering big scores accuracy 0.90 here" if answer == "big"
            else "answered small for every test image: always answering big, the most frequent test class, scores "
            "accuracy 0.90 here")
    summary = format_summary(metrics)
    assert "majority baseline 0.9000" in summary and f"; the model {said}" in summary
    card = model_card.render_card(model_info(["big", "small"]), {**metrics, "folder": "x"}, "card")
    assert "| majority_baseline (always `big`) | 0.9000 |" in card
    assert f"The model {said}".replace("big", "`big`").replace("small", "`small`") + "." in card
    assert {"majority_class", "majority_baseline", "single_answer"} <= set(evaluation.SUMMARY_KEYS)  # model.json


def test_a_model_answering_several_classes_gets_the_majority_baseline_and_no_remark():
    metrics = compute_metrics(BINARY_LABELS, BINARY_PROBABILITIES, ["A", "B"], threshold=0.45)

    assert (metrics["majority_class"], metrics["majority_baseline"], metrics["single_answer"]) == ("A", 0.5, None)
    assert "majority baseline 0.5000" in format_summary(metrics)
    assert "every test image" not in format_summary(metrics)
    card = model_card.render_card(model_info(["A", "B"]), {**metrics, "folder": "x"}, "card")
    assert "| majority_baseline (always `A`) | 0.5000 | |" in card and "every test image" not in card


def test_the_card_names_a_class_of_few_test_images_whatever_the_test_set_s_size():
    """2,000 FAKE and 3 REAL test images: the card called no test set small, while REAL's recall, the balanced
    accuracy and ROC AUC rest on 3 images."""
    labels = np.array([0] * 2000 + [1] * 3)
    probabilities = np.tile([0.7, 0.3], (2003, 1))
    probabilities[-2:] = [0.2, 0.8]
    metrics = {**compute_metrics(labels, probabilities, ["FAKE", "REAL"], positive_class="FAKE", threshold=0.5),
               "folder": "data/test"}

    card = model_card.render_card(model_info(["FAKE", "REAL"]), metrics, "card")

    limitations = card.split("## Limitations")[1]
    assert "REAL has only 3 test images" in limitations and "FAKE has only" not in limitations


@pytest.mark.parametrize(("labels", "class_names", "untested"), [
    ([0] * 20, ["FAKE", "REAL"], "The model was never tested on REAL: the test set has no image of it"),
    ([0] * 20 + [1] * 3, list("abcd"), "The model was never tested on c or d: the test set has no image of them"),
], ids=["one", "two"])
def test_the_card_names_a_class_the_model_was_never_tested_on(labels, class_names, untested):
    """A class of 3 test images was a limitation of the card, one of none, the worst case, went unsaid."""
    probabilities = np.random.default_rng(0).dirichlet(np.ones(len(class_names)), size=len(labels))
    positive = "FAKE" if len(class_names) == 2 else None
    metrics = {**compute_metrics(labels, probabilities, class_names, positive_class=positive), "folder": "data/test"}

    card = model_card.render_card(model_info(class_names), metrics, "card")

    assert untested in card.split("## Limitations")[1]


def test_the_cards_tables_keep_their_columns_whatever_the_class_and_source_names():
    """A class "real|photos *x*" made its rows one cell longer than the table (and its name italic), a source
    folder named so did the same to the per-source table, which then did not render at all."""
    import re as regex

    names = ["fake `gen` <b>x", "real|photos *x*"]
    metrics = {**compute_metrics(BINARY_LABELS, BINARY_PROBABILITIES, names, names[0], 0.5),
               "folder": "data/test", "num_images": len(BINARY_LABELS)}
    source = {"num_images": 10, "accuracy": 0.5, "average_precision": 0.5, "roc_auc": 0.5,
              "class_accuracy": dict.fromkeys(names, 0.5)}
    metrics["sources"], metrics["combined"] = {"src |1 *x*": source}, source
    info = model_info(names, positive_class=names[0], counts={"train": dict.fromkeys(names, 4)})

    card = model_card.render_card(info, metrics, "card")

    for table in regex.findall(r"(?m)(?:^\|.*\|\n)+", card):
        widths = {len(regex.findall(r"(?<!\\)\|", line)) for line in table.splitlines()}
        assert len(widths) == 1, table
    prose = regex.sub(r"``.*?``|`[^`]*`", "", card)  # code spans show their text as it is
    assert "*x*" not in prose.replace("\\*x\\*", "")  # never emphasis


def test_a_dataset_folder_of_a_train_split_alone_is_never_advised_as_the_test_dir(tmp_path, make_class_folder):
    # Its train split is what the model learnt: an evaluation there says nothing of new images.
    make_class_folder(tmp_path / "data" / "train", {"FAKE": 2, "REAL": 2})

    with pytest.raises(UserError) as refused:
        evaluation.check_folders(model_info(["FAKE", "REAL"]), [tmp_path / "data"])

    message = str(refused.value)
    assert "is a dataset folder" in message and "--test-dir" not in message
    assert "no test or validation split" in message


def test_the_per_source_table_of_many_classes_has_no_column_per_class(tmp_path):
    # A column per class made a 2,245-character row of 40 classes; metrics.json keeps every class's accuracy.
    class_names = [f"class {index:02d}" for index in range(40)]
    numbers = {"num_images": 80, "accuracy": 0.5, "average_precision": 0.6, "roc_auc": 0.7,
               "class_accuracy": dict.fromkeys(class_names, 0.5)}
    metrics = {"folder": "data/test", "num_images": 80, "average": "macro", "per_class": {},
               "expected_calibration_error": 0.1, "sources": {"a/test": numbers, "b/test": numbers},
               "combined": numbers,
               **dict.fromkeys(("accuracy", "precision", "recall", "f1", "roc_auc", "average_precision", "loss"), 0.5)}

    card = model_card.render_card(model_info(class_names), metrics, "Model card: run")

    assert "| source | images | accuracy | AP | ROC AUC |\n" in card
    assert "| a/test | 80 | 0.5000 | 0.6000 | 0.7000 |\n" in card
    assert "accuracy on class" not in card and "per class in [metrics.json](metrics.json)" in card


def test_images_in_two_test_folders_at_once_are_named_before_they_count_twice(tmp_path, make_class_folder, caplog):
    """``--test-dir data/test --test-dir photos`` where photos held copies of data/test's images: each was scored in
    both, the headline numbers counted it twice, and nothing said so."""
    first = make_class_folder(tmp_path / "data" / "test", {"FAKE": 3, "REAL": 3})
    second = tmp_path / "photos"
    for path in sorted((first / "REAL").iterdir())[:2]:
        (second / "REAL").mkdir(parents=True, exist_ok=True)
        (second / "REAL" / f"copy_{path.name}").write_bytes(path.read_bytes())
    write_image(second / "FAKE" / "own.png", seed=99)

    with caplog.at_level("WARNING", logger="realvsai"):
        evaluation.check_folders(model_info(["FAKE", "REAL"]), [first, second])

    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"2 images in {second} are identical to images in {first} (e.g. ")
    assert "each is scored once per folder" in warnings[0]


def test_the_free_folder_beside_a_relative_output_folder_is_named_as_typed(tmp_path, monkeypatch):
    """A second --evaluate printed "outputs in /home/me/project/models/run/eval-test-2" for models/run/eval-test."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "run" / "eval-test").mkdir(parents=True)
    (tmp_path / "models" / "run" / "eval-test" / evaluation.RESULT_FILES[0]).write_text("{}")

    with evaluation.claimed_output_folder(Path("models/run/eval-test"), given=False) as folder:
        assert folder == Path("models/run/eval-test-2")


def test_an_evaluation_on_a_terminal_counts_under_its_bar_without_a_line_that_says_the_same(
        tmp_path, make_class_folder, binary_model, monkeypatch):
    """"predicting 2,000 images in data/test", then the bar "predicting test: 40%| 800/2000": the line is for a log,
    where no bar is drawn."""
    import io
    import sys

    from realvsai import cli

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    folder = make_class_folder(tmp_path / "test", {"FAKE": 3, "REAL": 3})
    cli.setup_logging(quiet=False)
    for stream, bar_shown in ((io.StringIO(), False), (Terminal(), True)):
        monkeypatch.setattr(sys, "stderr", stream)
        evaluation.evaluate_folders(binary_model, model_info(["FAKE", "REAL"]), [folder], tmp_path / f"out{bar_shown}")
        said = stream.getvalue()
        assert ("predicting test:" in said) == bar_shown, said
        assert (f"predicting 6 images in {folder}" in said) != bar_shown, said


def test_the_classification_report_aligns_class_names_by_the_columns_they_take_on_a_terminal():
    """A class folder named in Chinese (two columns a character) or on macOS (NFD) pushed its row of
    classification_report.txt out of line with the header: the padding counted characters, not columns."""
    labels = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.8, 0.2], [0.3, 0.7], [0.1, 0.9], [0.6, 0.4]])

    def report(names):
        return evaluation._classification_report(labels, probabilities, probabilities.argmax(axis=1),
                                                 compute_metrics(labels, probabilities, names), "t")

    wide, accented = "真实真实真实真", unicodedata.normalize("NFD", "générée")
    assert report([wide, accented]).replace(wide, "abcdefghijklmn").replace(accented, "generee") == report(
        ["abcdefghijklmn", "generee"])
