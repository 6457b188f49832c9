"""Predicting a folder: predictions.csv (shared with --evaluate), unreadable files, the unfamiliar flag."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import PHOTO_LIMIT, predictor, run_script, write_image, write_phone_photo
from test_evaluation import model_info, read_only, tiny_classifier
from test_inference import write_run

import ModelTraining
from realvsai import evaluation, model_card, prediction
from realvsai.data import LabelledImages
from realvsai.errors import UserError
from realvsai.metrics import DecisionRule
from realvsai.run import DEMO_WARNING

CLASSES = ["FAKE", "REAL"]
THUMBNAILS = {"min_side": 32, "max_side": 32, "formats": ["JPEG"]}


@pytest.fixture(scope="module")
def binary_model():
    return tiny_classifier(2)


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def test_predict_and_evaluate_agree_on_every_file(tmp_path, make_class_folder, binary_model):
    folder = make_class_folder(tmp_path / "images", {"FAKE": 5, "REAL": 4})
    info = model_info(CLASSES, decision_threshold=0.52)
    evaluation.evaluate_folders(binary_model, info, [folder], tmp_path / "evaluated", batch_size=4)
    prediction.predict_folder(binary_model, info, folder, tmp_path / "predicted", batch_size=3)

    evaluated = {row["file"]: row for row in read_rows(tmp_path / "evaluated" / "predictions.csv")}
    predicted = {row["file"]: row for row in read_rows(tmp_path / "predicted" / "predictions.csv")}
    assert sorted(evaluated) == sorted(predicted) and len(predicted) == 9
    for name, row in predicted.items():
        assert row["predicted"] == evaluated[name]["predicted"]
        assert row["uncertain"] == evaluated[name]["uncertain"]
        for class_name in CLASSES:
            column = f"probability_{class_name}"
            assert float(row[column]) == pytest.approx(float(evaluated[name][column]), abs=1e-4)
    assert {row["true"] for row in evaluated.values()} == set(CLASSES)
    assert all(row["true"] == name.split("/")[0] for name, row in evaluated.items())


def test_predictions_csv_names_files_in_subfolders_relative_to_the_input(tmp_path, binary_model):
    folder = tmp_path / "photos"
    for name in ("a.png", "trip/b.jpg", "trip/day 2/c.png"):
        write_image(folder / name, seed=len(name))
    prediction.predict_folder(binary_model, model_info(CLASSES), folder, tmp_path / "out", batch_size=2)

    rows = read_rows(tmp_path / "out" / "predictions.csv")
    assert [row["file"] for row in rows] == ["a.png", "trip/b.jpg", "trip/day 2/c.png"]
    assert list(rows[0]) == ["file", "predicted", "probability_FAKE", "probability_REAL", "uncertain", "unfamiliar"]



def test_a_few_images_are_not_padded_to_a_large_batch_size(tmp_path, binary_model, monkeypatch):
    """--predict --batch-size 65536 on 6 photos padded their one batch to 65,536 rows: killed for its memory (and
    --evaluate's took 3.5 minutes at 32 px). A batch of fewer images is padded as the app pads one: to a power of
    two."""
    from realvsai.run import Predictor

    seen, predict_indexed = [], Predictor.predict_indexed

    def spy(self, inputs, num_rows, **options):
        seen.append(int(next(iter(inputs))[0][0].shape[0]))
        return predict_indexed(self, inputs, num_rows, **options)

    monkeypatch.setattr(Predictor, "predict_indexed", spy)
    for name in ("a.png", "b.png", "c.png"):
        write_image(tmp_path / "photos" / name, seed=len(seen) + ord(name[0]))
    prediction.predict_folder(binary_model, model_info(CLASSES), tmp_path / "photos", tmp_path / "out",
                              batch_size=4096)
    assert seen == [4]
    assert len(read_rows(tmp_path / "out" / "predictions.csv")) == 3

def test_predicting_a_folder_counts_its_images_under_a_bar(tmp_path, binary_model, monkeypatch):
    """Its bar was Keras' over batches, which said "1/Unknown 4s/step": no total, so no time left."""
    from test_robustness import bars_drawn

    bars = bars_drawn(monkeypatch)
    for index in range(5):
        write_image(tmp_path / "photos" / f"{index}.png", seed=index)
    prediction.predict_folder(binary_model, model_info(CLASSES), tmp_path / "photos", tmp_path / "out", batch_size=2)
    assert [(bar.desc, bar.total, bar.n) for bar in bars if bar.unit == "image"] == [("predicting photos", 5, 5)]


def test_predicted_and_uncertain_follow_the_models_decision_rule(tmp_path, binary_model):
    folder = tmp_path / "photos"
    for index in range(6):
        write_image(folder / f"{index}.png", seed=index)
    info = model_info(CLASSES, positive_class="FAKE", decision_threshold=0.47, confidence_threshold=0.52)
    prediction.predict_folder(binary_model, info, folder, tmp_path / "out", batch_size=4)

    rows = read_rows(tmp_path / "out" / "predictions.csv")
    probabilities = np.array([[float(row["probability_FAKE"]), float(row["probability_REAL"])] for row in rows])
    rule = DecisionRule(confidence_threshold=0.52, decision_threshold=0.47, positive_index=0)
    assert [row["predicted"] for row in rows] == [CLASSES[index] for index in rule.decide(probabilities)]
    assert [row["uncertain"] == "true" for row in rows] == rule.uncertain(probabilities).tolist()


def test_unreadable_files_are_listed_and_the_others_predicted(tmp_path, binary_model, bad_files):
    folder = tmp_path / "photos"
    write_image(folder / "good.png", seed=1)
    bad_files(folder / "broken")
    (folder / "readme.txt").write_text("notes")
    write_image(folder / "huge.png", seed=2, size=(200, 200))
    summary = prediction.predict_folder(binary_model, model_info(CLASSES), folder, tmp_path / "out",
                                        batch_size=2, max_pixels=10_000)

    assert [row["file"] for row in read_rows(tmp_path / "out" / "predictions.csv")] == ["good.png"]
    unreadable = {row["file"]: row["reason"] for row in read_rows(tmp_path / "out" / "unreadable.csv")}
    assert set(unreadable) == {"broken/empty.jpg", "broken/notes.jpg", "broken/truncated.jpg", "readme.txt",
                               "huge.png"}
    assert "10,000 pixels" in unreadable["huge.png"]
    # Not "5 unreadable files": a text file and an image over the limit are neither unreadable (real-or-ai-photos'
    # SOURCE.md and manifest.csv were called so).
    assert f"; 5 files left out, listed in {tmp_path / 'out' / 'unreadable.csv'} with each one's reason" \
        in summary.describe(folder)


def test_predict_leaves_out_segmentation_masks_beside_their_images_as_evaluate_does(tmp_path, binary_model):
    folder = tmp_path / "scans"
    for name in ("benign (1).png", "benign (1)_mask.png", "benign (1)_mask_1.png", "lone_mask.png"):
        write_image(folder / name, seed=len(name))
    summary = prediction.predict_folder(binary_model, model_info(CLASSES), folder, tmp_path / "out", batch_size=2)

    assert [row["file"] for row in read_rows(tmp_path / "out" / "predictions.csv")] == ["benign (1).png",
                                                                                         "lone_mask.png"]
    unreadable = {row["file"]: row["reason"] for row in read_rows(tmp_path / "out" / "unreadable.csv")}
    assert set(unreadable) == {"benign (1)_mask.png", "benign (1)_mask_1.png"}
    assert "segmentation mask of benign (1).png" in unreadable["benign (1)_mask.png"]
    assert "; 2 segmentation masks left out, listed in" in summary.describe(folder)


def test_predict_in_crops_mode_lists_an_image_its_crops_would_enlarge_past_the_limit(tmp_path, binary_model):
    folder = tmp_path / "photos"
    write_image(folder / "photo.png", seed=1, size=(40, 30))
    write_image(folder / "strip.png", seed=2, size=(1, 5000))  # 5,000 pixels; 8x40000 once it covers 8 px crops
    prediction.predict_folder(binary_model, model_info(CLASSES, input_mode="crops"), folder, tmp_path / "out",
                              batch_size=2, max_pixels=100_000)

    assert [row["file"] for row in read_rows(tmp_path / "out" / "predictions.csv")] == ["photo.png"]
    (row,) = read_rows(tmp_path / "out" / "unreadable.csv")
    assert row["file"] == "strip.png" and "8x40000" in row["reason"] and "limit of 100,000 pixels" in row["reason"]


def test_evaluate_in_crops_mode_skips_an_image_its_crops_would_enlarge_past_the_limit(tmp_path, binary_model,
                                                                                       make_class_folder, caplog):
    folder = make_class_folder(tmp_path / "images", {"FAKE": 2, "REAL": 2}, size=(40, 30))
    strip = write_image(folder / "REAL" / "strip.png", seed=2, size=(1, 5000))

    metrics = evaluation.evaluate_folders(binary_model, model_info(CLASSES, input_mode="crops"), [folder],
                                          tmp_path / "out", batch_size=2, max_pixels=100_000)

    assert metrics["num_images"] == 4 and [item["file"] for item in metrics["skipped_files"]] == ["REAL/strip.png"]
    assert "8x40000" in metrics["skipped_files"][0]["reason"]
    assert any(str(strip) in record.getMessage() and "8x40000" in record.getMessage()
               for record in caplog.records if record.levelname == "WARNING")


@pytest.mark.parametrize("input_mode", ["resize", "crops"])
def test_predict_counts_a_phone_photo_at_the_pixels_its_model_decodes(tmp_path, binary_model, input_mode):
    """A 200 MP JPEG (conftest's stand-in) is decoded at 1/8 for a resize model, so the limit counts those pixels;
    a crops model's native pixels are the whole photo's."""
    write_phone_photo(tmp_path / "photos" / "phone.jpg")
    write_image(tmp_path / "photos" / "photo.png", seed=1, size=(40, 30))

    prediction.predict_folder(binary_model, model_info(CLASSES, input_mode=input_mode), tmp_path / "photos",
                              tmp_path / "out", batch_size=2, max_pixels=PHOTO_LIMIT)

    predicted = [row["file"] for row in read_rows(tmp_path / "out" / "predictions.csv")]
    assert predicted == (["phone.jpg", "photo.png"] if input_mode == "resize" else ["photo.png"])
    if input_mode == "crops":
        (row,) = read_rows(tmp_path / "out" / "unreadable.csv")
        assert row["file"] == "phone.jpg" and "2000x1500 pixels is more than the limit" in row["reason"]


@pytest.mark.parametrize("input_mode", ["resize", "crops"])
def test_evaluate_counts_a_phone_photo_at_the_pixels_its_model_decodes(tmp_path, binary_model, make_class_folder,
                                                                       input_mode):
    folder = make_class_folder(tmp_path / "images", {"FAKE": 2, "REAL": 2}, size=(40, 30))
    write_phone_photo(folder / "REAL" / "phone.jpg")

    metrics = evaluation.evaluate_folders(binary_model, model_info(CLASSES, input_mode=input_mode), [folder],
                                          tmp_path / "out", batch_size=2, max_pixels=PHOTO_LIMIT)

    skipped = [item["file"] for item in metrics["skipped_files"]]
    assert (metrics["num_images"], skipped) == ((5, []) if input_mode == "resize" else (4, ["REAL/phone.jpg"]))


def test_a_file_that_fails_to_decode_after_its_header_is_named_not_shifted(tmp_path, binary_model):
    good = [write_image(tmp_path / f"{index}.png", seed=index) for index in range(3)]
    fake = tmp_path / "fake.png"
    fake.write_text("not an image")  # as if it broke after its header was read
    files = [good[0], fake, good[1], good[2]]
    images = LabelledImages(files, [0] * 4, CLASSES, [(32, 32)] * 4, [False] * 4)

    probabilities = prediction.predict_images(predictor(binary_model, 32, 2), images)
    alone = prediction.predict_images(predictor(binary_model, 32, 2),
                                      LabelledImages(good, [0] * 3, CLASSES, [(32, 32)] * 3, [False] * 3))
    assert np.isnan(probabilities[1]).all()
    np.testing.assert_allclose(probabilities[[0, 2, 3]], alone, atol=1e-5)


def test_when_no_file_decodes_after_its_header_every_probability_is_nan(tmp_path, binary_model):
    fake = tmp_path / "fake.png"
    fake.write_text("not an image")  # as if it broke after its header was read
    images = LabelledImages([fake], [0], CLASSES, [(32, 32)], [False])

    probabilities = prediction.predict_images(predictor(binary_model, 32, 2), images)

    assert probabilities.shape == (1, 2) and np.isnan(probabilities).all()
    good = write_image(tmp_path / "good.png", seed=1)  # the model still predicts (on JAX too)
    after = prediction.predict_images(predictor(binary_model, 32, 2),
                                      LabelledImages([good], [0], CLASSES, [(32, 32)], [False]))
    assert np.isfinite(after).all()


def test_a_file_whose_name_is_not_utf8_is_predicted_and_named_by_its_bytes(tmp_path, binary_model):
    folder = tmp_path / "photos"
    write_image(folder / "ok.png", seed=1)
    write_image(Path(os.fsdecode(os.fsencode(folder) + b"/caf\xe9.png")), seed=2)

    prediction.predict_folder(binary_model, model_info(CLASSES), folder, tmp_path / "out", batch_size=2)

    with open(tmp_path / "out" / "predictions.csv", newline="", encoding="utf-8", errors="surrogateescape") as stream:
        rows = list(csv.DictReader(stream))
    assert sorted(os.fsencode(row["file"]) for row in rows) == [b"caf\xe9.png", b"ok.png"]
    assert all(row["predicted"] in CLASSES for row in rows)


def test_unfamiliar_column_names_why_an_image_is_unlike_the_training_images(tmp_path, binary_model):
    folder = tmp_path / "photos"
    write_image(folder / "thumb.jpg", seed=1, size=(32, 32))
    write_image(folder / "photo.png", seed=2, size=(1024, 768))
    info = model_info(CLASSES, training_images=THUMBNAILS, confidence_threshold=0.0)
    summary = prediction.predict_folder(binary_model, info, folder, tmp_path / "out", batch_size=2)

    rows = {row["file"]: row for row in read_rows(tmp_path / "out" / "predictions.csv")}
    assert rows["thumb.jpg"]["unfamiliar"] == "" and rows["thumb.jpg"]["uncertain"] == "false"
    assert "1024x768" in rows["photo.png"]["unfamiliar"] and "PNG" in rows["photo.png"]["unfamiliar"]
    assert rows["photo.png"]["uncertain"] == "true"  # never certain, at a confidence threshold of 0
    assert summary.num_unfamiliar == 1


def test_an_image_of_a_size_validation_shows_at_chance_is_uncertain_with_the_reason(tmp_path, binary_model):
    folder = tmp_path / "photos"
    write_image(folder / "small.png", seed=1, size=(32, 32))
    write_image(folder / "large.png", seed=2, size=(300, 280))
    by_kind = {"chance": 0.5, "size": {
        "0-63 px": {"num_images": 50, "accuracy": 0.9, "balanced_accuracy": 0.9, "near_chance": False},
        "256-1023 px": {"num_images": 50, "accuracy": 0.5, "balanced_accuracy": 0.51, "near_chance": True}}}
    info = model_info(CLASSES, validation_by_kind=by_kind, confidence_threshold=0.0)

    summary = prediction.predict_folder(binary_model, info, folder, tmp_path / "out", batch_size=2)

    rows = {row["file"]: row for row in read_rows(tmp_path / "out" / "predictions.csv")}
    assert rows["small.png"]["unfamiliar"] == "" and rows["small.png"]["uncertain"] == "false"
    assert "256-1023 px" in rows["large.png"]["unfamiliar"] and "at chance" in rows["large.png"]["unfamiliar"]
    assert rows["large.png"]["uncertain"] == "true"
    # The summary names both reasons the column may give: "unlike the training images" alone misled here.
    assert "(1 uncertain, 1 flagged in the unfamiliar column: unlike the training images, or of a size validation " \
           "found the model at chance on or had no image of)" in summary.describe(folder)


def test_without_a_training_profile_no_image_is_unfamiliar(tmp_path, binary_model):
    folder = tmp_path / "photos"
    write_image(folder / "photo.png", seed=2, size=(1024, 768))
    prediction.predict_folder(binary_model, model_info(CLASSES), folder, tmp_path / "out", batch_size=2)

    assert read_rows(tmp_path / "out" / "predictions.csv")[0]["unfamiliar"] == ""


def test_evaluate_writes_the_unfamiliar_column_too(tmp_path, make_class_folder, binary_model):
    folder = make_class_folder(tmp_path / "images", {"FAKE": 2, "REAL": 2})  # 32x32 PNGs
    info = model_info(CLASSES, training_images=THUMBNAILS)
    evaluation.evaluate_folders(binary_model, info, [folder], tmp_path / "evaluated", batch_size=4)

    rows = read_rows(tmp_path / "evaluated" / "predictions.csv")
    assert all(row["unfamiliar"] == "PNG, but the training images were JPEG" for row in rows)


COLOUR_ONLY = {"min_side": 32, "max_side": 32, "formats": ["PNG"], "images": 8, "grayscale": 0}
GRAYSCALE_REASON = "a grayscale image; the model was trained on colour images only"


def test_predict_flags_a_grayscale_image_to_a_colour_only_model(tmp_path, binary_model):
    folder = tmp_path / "photos"
    write_image(folder / "gray.png", seed=1, mode="L")
    write_image(folder / "colour.png", seed=2)
    info = model_info(CLASSES, training_images=COLOUR_ONLY, confidence_threshold=0.0)

    summary = prediction.predict_folder(binary_model, info, folder, tmp_path / "out", batch_size=2)

    rows = {row["file"]: row for row in read_rows(tmp_path / "out" / "predictions.csv")}
    assert rows["gray.png"]["unfamiliar"] == GRAYSCALE_REASON and rows["gray.png"]["uncertain"] == "true"
    assert rows["colour.png"]["unfamiliar"] == "" and rows["colour.png"]["uncertain"] == "false"
    assert summary.num_unfamiliar == 1


def test_evaluate_flags_a_grayscale_image_to_a_colour_only_model(tmp_path, make_class_folder, binary_model):
    folder = make_class_folder(tmp_path / "images", {"FAKE": 2, "REAL": 2})  # 32x32 colour PNGs
    write_image(folder / "REAL" / "gray.png", seed=9, mode="L")
    info = model_info(CLASSES, training_images=COLOUR_ONLY)
    evaluation.evaluate_folders(binary_model, info, [folder], tmp_path / "evaluated", batch_size=4)

    rows = {row["file"]: row for row in read_rows(tmp_path / "evaluated" / "predictions.csv")}
    assert rows["REAL/gray.png"]["unfamiliar"] == GRAYSCALE_REASON and rows["REAL/gray.png"]["uncertain"] == "true"
    assert [name for name, row in rows.items() if row["unfamiliar"]] == ["REAL/gray.png"]


def test_the_decision_rule_never_calls_an_unfamiliar_image_certain():
    rule = DecisionRule(confidence_threshold=0.6)
    probabilities = np.array([[0.99, 0.01], [0.99, 0.01]])

    assert rule.uncertain(probabilities).tolist() == [False, False]
    assert rule.uncertain(probabilities, np.array([True, False])).tolist() == [True, False]


def test_predict_folder_refuses_a_folder_that_already_has_predictions(tmp_path, binary_model):
    write_image(tmp_path / "photos" / "a.png", seed=1)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "predictions.csv").write_text("earlier\n")

    with pytest.raises(UserError, match="already exists"):
        prediction.predict_folder(binary_model, model_info(CLASSES), tmp_path / "photos", tmp_path / "out")
    assert (tmp_path / "out" / "predictions.csv").read_text() == "earlier\n"


def test_predict_command_never_replaces_earlier_predictions(tmp_path, capsys):
    run = write_run(tmp_path / "models", "run")
    write_image(tmp_path / "photos" / "a.png", seed=1)
    out = tmp_path / "predicted"
    arguments = ["--predict", str(run), "--input", str(tmp_path / "photos"), "--out", str(out), "--quiet"]

    assert ModelTraining.main(arguments) == 0
    first = (out / "predictions.csv").read_text()
    assert ModelTraining.main(arguments) == 0

    assert (out / "predictions.csv").read_text() == first
    assert (tmp_path / "predicted-2" / "predictions.csv").is_file()
    assert "predicted-2" in capsys.readouterr().out.splitlines()[-1]


@pytest.mark.parametrize("program", ["--predict", "--evaluate"])
def test_a_run_that_has_not_finished_training_is_used_with_a_warning(tmp_path, make_class_folder, capsys, program):
    """Its model.h5 is the best epoch so far and model.json has no decision rule yet: the highest probability
    decided, without a word (the app skips such a run)."""
    run = write_run(tmp_path / "models", "run")
    (run / "backup").mkdir()
    (run / "backup" / "config.json").write_text("{}")  # written as a run starts, removed as it finishes
    make_class_folder(tmp_path / "photos", {"FAKE": 1, "REAL": 1})
    given = ["--input", str(tmp_path / "photos" / "FAKE")] if program == "--predict" else [
        "--test-dir", str(tmp_path / "photos")]
    assert ModelTraining.main([program, str(run), *given, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    [warning] = [line for line in capsys.readouterr().err.splitlines() if "has not finished training" in line]
    assert "best model so far" in warning and "--resume --name run" in warning


# What the app says of a model as a whole (above its answers), by run: model.json's keys, metrics.json, and words
# the app shows for it. --predict has no page: it said none of it.
_SMALL_TEST = {"accuracy": 0.91, "f1": 0.9, "num_images": 120}
_COLLAPSED = {"accuracy": 0.9, "balanced_accuracy": 0.5, "f1": 0.95, "num_images": 20, "majority_class": "FAKE",
              "majority_baseline": 0.9, "single_answer": "FAKE", "missing_classes": []}
DOUBTED_RUNS = {
    "demo": ({"demo": True}, None, [DEMO_WARNING]),
    "shortcut": ({"shortcut_warning": "Every FAKE training image is a PNG and every REAL one a JPEG."}, None,
                 ["Every FAKE training image is a PNG and every REAL one a JPEG."]),
    "edited": ({"decision_threshold": 0.7, "test_metrics": {"accuracy": 0.9, "decision_threshold": 0.5}},
               {"accuracy": 0.9, "decision_threshold": 0.5}, ["No test metrics shown: ", "edited by hand"]),
    "small": ({"test_metrics": _SMALL_TEST}, _SMALL_TEST, [model_card.small_test_set(120)]),
    "collapsed": ({"test_metrics": _COLLAPSED}, {
        **_COLLAPSED, "per_class": {"FAKE": {"support": 18}, "REAL": {"support": 2}},
        "threshold_selection": {"num_positive": 30, "num_images": 31}, "positive_class": "FAKE"},
        ["The model answered `FAKE` for every test image: always answering `FAKE` scores accuracy 0.90",
         "REAL has only 2 test images", "The decision threshold was chosen on 1 validation image of REAL"]),
    "untested": ({"test_metrics": None, "decision_threshold": 0.79, "counts": {
        "train": {"FAKE": 1, "REAL": 1}, "validation": {"FAKE": 1, "REAL": 1}}}, "none",
        ["No test metrics recorded for this model.",
         model_card.few_threshold_images({"num_positive": 1, "num_images": 2}, "FAKE", "REAL")]),
}


@pytest.mark.parametrize("name", DOUBTED_RUNS)
def test_predict_warns_of_what_the_app_says_of_the_model_as_a_whole(tmp_path, capsys, name):
    """A demo model, a shortcut, test numbers edited out of date, a small or lopsided test set, a threshold chosen
    on 1 image a class: the app's page says each above its answers; --predict printed its counts without a word."""
    info, metrics, said = DOUBTED_RUNS[name]
    run = write_run(tmp_path / "models", name, info=info, metrics=None if metrics == "none" else metrics)
    if metrics == "none":  # a split without a test folder: its training writes no metrics.json
        (run / "metrics.json").unlink()
    write_image(tmp_path / "photos" / "a.png", seed=1)

    assert ModelTraining.main(["--predict", str(run), "--input", str(tmp_path / "photos"), "--out",
                               str(tmp_path / "out")]) == 0

    warned = " ".join(line for line in capsys.readouterr().err.splitlines() if not line.startswith("loading"))
    assert all(text in warned for text in said), warned


def test_predict_of_a_model_with_nothing_to_doubt_warns_of_nothing(tmp_path, capsys):
    run = write_run(tmp_path / "models", "sound", info={"test_metrics": {"accuracy": 0.91, "num_images": 5000}},
                    metrics={"accuracy": 0.91, "num_images": 5000, "per_class": {
                        "FAKE": {"support": 2500}, "REAL": {"support": 2500}}})
    write_image(tmp_path / "photos" / "a.png", seed=1)

    assert ModelTraining.main(["--predict", str(run), "--input", str(tmp_path / "photos"), "--out",
                               str(tmp_path / "out")]) == 0

    assert [line for line in capsys.readouterr().err.splitlines() if not line.startswith("loading")] == []


def test_predict_without_input_is_a_usage_error():
    process = run_script("ModelTraining.py", "--predict", "models/run")

    assert process.returncode == 2 and "--predict needs --input" in process.stderr


@pytest.mark.parametrize("program, option", [("--predict", "--input"), ("--evaluate", "--test-dir")])
def test_a_folder_given_without_its_option_is_named_with_the_option_it_needs(capsys, program, option):
    """`--predict models/run photos` (as other tools take it) said only "unrecognized arguments: photos"."""
    with pytest.raises(SystemExit) as exit_:
        ModelTraining.parse_args([program, "models/run", "photos"])
    assert exit_.value.code == 2
    assert f"unrecognized arguments: photos; give the folder with {option} photos (" in capsys.readouterr().err


def test_an_image_given_without_input_is_named_with_the_option_it_needs(capsys):
    with pytest.raises(SystemExit):
        ModelTraining.parse_args(["--predict", "models/run", "holiday.jpg"])
    assert "unrecognized arguments: holiday.jpg; give the image with --input holiday.jpg (" in capsys.readouterr().err


def test_predict_on_a_missing_folder_fails_with_one_line(tmp_path):
    run = write_run(tmp_path / "models", "run")
    process = run_script("ModelTraining.py", "--predict", run, "--input", tmp_path / "missing")

    assert process.returncode == 1 and "is not a folder" in process.stderr


def test_predict_takes_one_image_as_its_input(tmp_path, capsys):
    """``--predict MODEL --input photo.jpg`` was refused ("is not a folder"): a user with one photo to check had to
    make a folder for it first."""
    run = write_run(tmp_path / "models", "run")
    write_image(tmp_path / "photos" / "a.png", seed=1)
    write_image(tmp_path / "photos" / "b.png", seed=2)

    assert ModelTraining.main(["--predict", str(run), "--input", str(tmp_path / "photos" / "a.png"), "--quiet"]) == 0
    assert [row["file"] for row in read_rows(run / "predictions-a" / "predictions.csv")] == ["a.png"]
    summary = capsys.readouterr().out.splitlines()[-1]
    assert summary.startswith(f"predicted 1 image in {tmp_path / 'photos' / 'a.png'}: ")


def test_predict_of_one_image_gives_its_answer_in_the_app_s_words(tmp_path, capsys):
    """For one image the summary alone said "0 FAKE, 1 REAL (0 uncertain)": the answer, but not the probability nor
    the reason the app's card gives for it."""
    run = write_run(tmp_path / "models", "run", evidence=True, info={"decision_threshold": 0.5})
    write_image(tmp_path / "photos" / "a.png", seed=1)

    assert ModelTraining.main(["--predict", str(run), "--input", str(tmp_path / "photos" / "a.png"), "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "a.png: REAL. P(FAKE) 0.0% < the decision threshold 50.0% (chosen on validation)."
    assert lines[1].startswith("predicted 1 image in ")


def test_predict_of_one_image_named_without_its_extension_reads_it_by_its_content_as_the_app_does(tmp_path, capsys):
    run = write_run(tmp_path / "models", "run", evidence=True, info={"decision_threshold": 0.5})
    write_image(tmp_path / "photos" / "a.png", seed=1)
    (tmp_path / "photos" / "a.png").rename(tmp_path / "photos" / "a")

    assert ModelTraining.main(["--predict", str(run), "--input", str(tmp_path / "photos" / "a"), "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("a: REAL. ")


@pytest.mark.parametrize("name, why, then", [
    ("notes.txt", "not an image file (image names end in ", "Give --input an image, or a folder of images."),
    ("scan.tiff", "a TIFF image, a format not read here", "Give --input an image, or a folder of images."),
    # An image it read: "Give --input an image" did not fit (the user did), least of all after a pixel limit's fix.
    ("broken.png", "the file is empty", "Fix that, or give --input another image or a folder of images."),
    ("large.png", "64x64 pixels is more than the limit of 1,000 pixels",
     "Fix that, or give --input another image or a folder of images.")])
def test_predict_on_one_file_it_cannot_predict_says_why_in_one_line(tmp_path, capsys, name, why, then):
    run = write_run(tmp_path / "models", "run")
    (tmp_path / "in").mkdir()
    if name == "large.png":
        write_image(tmp_path / "in" / name, seed=1, size=(64, 64))
    else:
        (tmp_path / "in" / name).write_bytes(b"")

    assert ModelTraining.main(["--predict", str(run), "--input", str(tmp_path / "in" / name), "--out",
                               str(tmp_path / "out"), "--max-pixels", "1000", "--quiet"]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"error: {tmp_path / 'in' / name} could not be predicted: {why}"), line
    assert line.endswith(then), line


def test_predict_on_a_folder_where_no_file_is_a_readable_image_fails_with_one_line_and_the_list(tmp_path, capsys):
    """It ended "predicted 0 images ... (0 uncertain)" with exit 0, as if the job were done."""
    run = write_run(tmp_path / "models", "run")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "notes.jpg").write_text("not an image")
    (tmp_path / "photos" / "empty.png").write_bytes(b"")
    out = tmp_path / "predicted"

    assert ModelTraining.main(["--predict", str(run), "--input", str(tmp_path / "photos"), "--out", str(out),
                               "--quiet"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines  # not a warning before it saying the same: "2 files were left out (...)"
    line = lines[0]
    assert line == (f"error: no file in {tmp_path / 'photos'} could be predicted (2 files there, each listed with "
                    f"why in {out / 'unreadable.csv'}; empty.png: the file is empty). Fix that, or give --input a "
                    "folder of images.")
    assert len(read_rows(out / "unreadable.csv")) == 2


def test_predict_where_no_file_could_be_predicted_writes_no_predictions_csv(tmp_path):
    """It left a predictions.csv of its header alone beside unreadable.csv: a file of results that holds none."""
    run = write_run(tmp_path / "models", "run")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "notes.jpg").write_text("not an image")
    out = tmp_path / "predicted"

    assert ModelTraining.main(["--predict", str(run), "--input", str(tmp_path / "photos"), "--out", str(out),
                               "--quiet"]) == 1
    assert [path.name for path in out.iterdir() if not path.name.startswith(".")] == ["unreadable.csv"]


def test_predict_where_every_image_is_over_max_pixels_says_so_in_its_one_line(tmp_path, capsys):
    """--max-pixels 1 ended "Give --input a folder of images" for a folder of images: the why was in unreadable.csv
    alone, and the line sent the user the wrong way."""
    run = write_run(tmp_path / "models", "run")
    (tmp_path / "photos").mkdir()
    write_image(tmp_path / "photos" / "a.png", seed=1, size=(40, 30))

    assert ModelTraining.main(["--predict", str(run), "--input", str(tmp_path / "photos"), "--out",
                               str(tmp_path / "predicted"), "--max-pixels", "1", "--quiet"]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "; a.png: 40x30 pixels is more than the limit of 1 pixels" in line and "--max-pixels raises it" in line


def test_file_names_that_a_spreadsheet_would_run_as_formulas_are_written_as_text(tmp_path, binary_model):
    folder = tmp_path / "photos"
    write_image(folder / "=1+2.png", seed=1)
    write_image(folder / "-2023 holiday.png", seed=2)
    write_image(folder / "@home.png", seed=3)
    (folder / "+broken.png").write_bytes(b"not an image")
    prediction.predict_folder(binary_model, model_info(CLASSES), folder, tmp_path / "out", batch_size=2)

    names = [row["file"] for row in read_rows(tmp_path / "out" / "predictions.csv")]
    assert sorted(names) == ["'-2023 holiday.png", "'=1+2.png", "'@home.png"]
    assert [row["file"] for row in read_rows(tmp_path / "out" / "unreadable.csv")] == ["'+broken.png"]


def test_class_names_that_a_spreadsheet_would_run_are_written_as_text_as_the_app_writes_them(tmp_path):
    files = [tmp_path / "a.png", tmp_path / "b.png"]
    probabilities = np.array([[0.9, 0.1], [0.25, 0.75]])

    prediction.write_predictions(tmp_path / "predictions.csv", tmp_path, files, probabilities, ["-1", "+1"],
                                 DecisionRule(), [None, "unlike the training images"])

    rows = read_rows(tmp_path / "predictions.csv")
    assert [row["predicted"] for row in rows] == ["'-1", "'+1"]
    assert [row["uncertain"] for row in rows] == ["false", "true"]
    assert rows[1]["probability_+1"] == "0.750000" and rows[1]["unfamiliar"] == "unlike the training images"


def test_an_output_path_that_is_a_file_fails_before_any_image_is_predicted(tmp_path, binary_model, monkeypatch):
    write_image(tmp_path / "photos" / "a.png", seed=1)
    (tmp_path / "taken").write_text("a file where the output folder should go")
    monkeypatch.setattr(prediction, "predict_images", lambda *args, **kwargs: pytest.fail("predicted first"))

    with pytest.raises(UserError, match="a file has that name"):
        prediction.predict_folder(binary_model, model_info(CLASSES), tmp_path / "photos", tmp_path / "taken")


def test_a_read_only_output_folder_fails_in_one_line_before_any_image_is_predicted(tmp_path, monkeypatch, capsys):
    run = write_run(tmp_path / "models", "run")
    write_image(tmp_path / "photos" / "a.png", seed=1)
    out = tmp_path / "read-only"
    out.mkdir()
    read_only(monkeypatch, out)
    monkeypatch.setattr(prediction, "predict_images", lambda *args, **kwargs: pytest.fail("predicted first"))

    code = ModelTraining.main(["--predict", str(run), "--input", str(tmp_path / "photos"), "--out", str(out),
                               "--quiet"])

    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 1 and str(out) in line and "read-only" in line and "--out" in line
    assert "finished work is kept" not in line


def test_evaluate_s_closing_line_names_the_decision_rule_of_its_numbers(tmp_path, make_class_folder, capsys):
    """It printed the metrics as JSON ({"accuracy": 0.995, "f1": 0.9949748743718593, ...}), without the rule that
    decided them, which training's closing line and the model card name."""
    run = write_run(tmp_path / "models", "run", info={"decision_threshold": 0.45})
    make_class_folder(tmp_path / "test", {"FAKE": 2, "REAL": 2})

    assert ModelTraining.main(["--evaluate", str(run), "--test-dir", str(tmp_path / "test"), "--quiet"]) == 0

    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(rf"evaluated {re.escape(str(run))} on {re.escape(str(tmp_path / 'test'))}: accuracy "
                        r"\d\.\d{4} \(balanced accuracy \d\.\d{4}\), majority baseline 0\.5000, F1 \d\.\d{4}, ROC AUC "
                        r"\d\.\d{4} on 4 images \(decided at threshold 0\.450; argmax accuracy \d\.\d{4}\)"
                        r"(; the model answered (FAKE|REAL) for every test image: always answering FAKE(, the most "
                        r"frequent test class,)? scores accuracy 0\.50 here)?; "
                        r"Uncertain on \d of 4 images( \(accuracy \d\.\d{4} on the "
                        rf"other \d\))?; outputs in {re.escape(str(run / 'eval-test'))}", line), line


def test_evaluate_says_its_summary_once(tmp_path, make_class_folder, capsys):
    """A log line "evaluated DIR: accuracy ..." came before the closing line that says the same."""
    run = write_run(tmp_path / "models", "run")
    make_class_folder(tmp_path / "test", {"FAKE": 2, "REAL": 2})

    assert ModelTraining.main(["--evaluate", str(run), "--test-dir", str(tmp_path / "test")]) == 0

    captured = capsys.readouterr()
    assert (captured.out + captured.err).count("F1 ") == 1


def test_evaluate_refused_for_its_classes_announces_no_output_folder(tmp_path, capsys):
    # "eval-test already holds results ...; writing to eval-test-2 instead", then the refusal: a folder that was
    # never made was announced.
    run = write_run(tmp_path / "models", "run")
    write_image(tmp_path / "test" / "DOG" / "a.png", seed=1)
    (run / "eval-test").mkdir()
    (run / "eval-test" / "metrics.json").write_text("{}")

    code = ModelTraining.main(["--evaluate", str(run), "--test-dir", str(tmp_path / "test"), "--quiet"])

    err = capsys.readouterr().err
    assert code == 1 and "DOG" in err and "writing to" not in err
    assert not (run / "eval-test-2").exists()


@pytest.mark.parametrize("program", ["--evaluate", "--predict"])
def test_a_folder_without_images_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch, program):
    """An empty --input, or a --test-dir of empty class folders, was refused once the model had loaded: 10-15 s for
    a ResNet101 on a CPU (after TensorFlow's import), to learn that there was nothing to predict."""
    from realvsai import run as run_module

    run = write_run(tmp_path / "models", "run")
    for name in CLASSES:
        (tmp_path / "empty" / name).mkdir(parents=True)
    loads = []
    monkeypatch.setattr(run_module, "load_run_model", lambda *args: loads.append(args))
    given = ["--test-dir"] if program == "--evaluate" else ["--input"]

    code = ModelTraining.main([program, str(run), *given, str(tmp_path / "empty"), "--quiet"])

    err = capsys.readouterr().err
    assert code == 1 and "no" in err and "image" in err, err
    assert not loads


def test_predict_on_a_missing_input_folder_announces_no_output_folder(tmp_path, capsys):
    run = write_run(tmp_path / "models", "run")
    (run / "predictions-photos").mkdir()
    (run / "predictions-photos" / "predictions.csv").write_text("file\n")

    code = ModelTraining.main(["--predict", str(run), "--input", str(tmp_path / "photos"), "--quiet"])

    err = capsys.readouterr().err
    assert code == 1 and "is not a folder" in err and "writing to" not in err


def test_an_evaluation_says_what_it_predicts_before_that_wait(tmp_path, make_class_folder):
    """--evaluate (and a training's evaluation, on validation then test) predicted 2,000 CIFAKE images for 25-40 s
    without a bar or a word."""
    run = write_run(tmp_path / "models", "run")
    make_class_folder(tmp_path / "test", {"FAKE": 2, "REAL": 1})

    process = run_script("ModelTraining.py", "--evaluate", run, "--test-dir", tmp_path / "test", "--out",
                         tmp_path / "out")

    assert process.returncode == 0, process.stderr
    assert f"predicting 3 images in {tmp_path / 'test'}" in process.stderr.splitlines(), process.stderr


def test_a_prediction_says_it_loads_the_model_before_that_wait(tmp_path):
    """--predict and --evaluate loaded a 180 MB ResNet101 for 10-15 s before their first line or bar."""
    run = write_run(tmp_path / "models", "run")
    write_image(tmp_path / "photos" / "a.png", seed=1)

    process = run_script("ModelTraining.py", "--predict", run, "--input", tmp_path / "photos", "--out",
                         tmp_path / "out")

    assert process.returncode == 0, process.stderr
    assert process.stderr.splitlines()[0] == f"loading the model {run / 'model.h5'}", process.stderr


def test_predict_takes_a_runs_model_json_as_naming_its_run(tmp_path):
    run = write_run(tmp_path / "models", "run")
    write_image(tmp_path / "photos" / "a.png", seed=1)

    process = run_script("ModelTraining.py", "--predict", run / "model.json", "--input", tmp_path / "photos",
                         "--out", tmp_path / "out")

    assert process.returncode == 0, process.stderr
    assert [row["file"] for row in read_rows(tmp_path / "out" / "predictions.csv")] == ["a.png"]


def test_the_predict_command_s_max_pixels_sets_the_limit_its_images_are_read_under(tmp_path):
    run = write_run(tmp_path, "run")
    write_image(tmp_path / "photos" / "a.png", seed=1, size=(40, 30))
    write_image(tmp_path / "photos" / "b.png", seed=2, size=(30, 30))

    process = run_script("ModelTraining.py", "--predict", run, "--input", tmp_path / "photos", "--out",
                         tmp_path / "out", "--max-pixels", "1000")

    assert process.returncode == 0, process.stderr
    assert [row["file"] for row in read_rows(tmp_path / "out" / "predictions.csv")] == ["b.png"]
    (row,) = read_rows(tmp_path / "out" / "unreadable.csv")
    assert row["file"] == "a.png" and "more than the limit of 1,000 pixels" in row["reason"]


def test_the_help_says_evaluate_and_predict_take_a_model_json_too(capsys):
    """read_run takes a run folder, its model.h5 or its model.json; --help named only the first two."""
    with pytest.raises(SystemExit):
        ModelTraining.parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for flag in ("--evaluate MODEL", "--predict MODEL"):
        assert "a run folder, its model.h5 or its model.json" in help_text.split(flag, 2)[2][:200], flag


def test_evaluate_s_default_folder_of_sources_with_long_names_fits_a_name_and_its_numbering(tmp_path,
                                                                                             make_class_folder):
    """eval-<a>+<b>+<c> passed the file system's 255 bytes a name: "Shorten it", of a name the user never chose."""
    run = write_run(tmp_path / "models", "run")
    sources = [make_class_folder(tmp_path / f"{'x' * 100}{index}", {"FAKE": 1, "REAL": 1}) for index in range(3)]
    argv = ["--evaluate", str(run), *(part for source in sources for part in ("--test-dir", str(source))), "--quiet"]

    assert ModelTraining.main(argv) == 0
    assert ModelTraining.main(argv) == 0  # beside the first: numbered

    written = sorted(folder.name for folder in run.iterdir() if folder.name.startswith("eval-"))
    assert len(written) == 2 and all(len(name.encode()) <= 255 for name in written)
    assert written[1] == f"{written[0]}-2"


def test_the_error_grid_of_several_sources_names_each_image_as_predictions_csv_does(tmp_path, make_class_folder,
                                                                                     monkeypatch):
    """Two generators' outputs are often both called 00001.png: the grid titled each tile with the file name alone."""
    from realvsai import plots

    run = write_run(tmp_path / "models", "run")
    for source in ("a", "b"):
        make_class_folder(tmp_path / source / "test", {"FAKE": 3, "REAL": 3})  # the same names in each
    drawn = []
    monkeypatch.setattr(plots, "plot_confident_errors", lambda examples, path, **options: drawn.extend(examples))

    assert ModelTraining.main(["--evaluate", str(run), "--test-dir", str(tmp_path / "a" / "test"), "--test-dir",
                               str(tmp_path / "b" / "test"), "--out", str(tmp_path / "out"), "--quiet"]) == 0

    named = [example.name for example in drawn]
    assert named and all(name.startswith(("a/test/", "b/test/")) for name in named)
    with open(tmp_path / "out" / "predictions.csv", encoding="utf-8") as csv_file:
        assert set(named) <= {row["file"] for row in csv.DictReader(csv_file)}


def test_the_summary_of_many_classes_names_the_classes_answered_most_frequent_first_as_the_app_does(tmp_path):
    # Every class's count, zeros too: a 1,900-character closing line of 40 classes, unlike the app's summary.
    from realvsai.prediction import PredictionSummary

    counts = {f"class {index:02d}": 0 for index in range(40)}
    counts.update({"class 03": 2, "class 07": 9, "class 11": 1, "class 12": 1, "class 20": 4, "class 31": 3,
                   "class 39": 1})
    summary = PredictionSummary(tmp_path / "out", counts, num_uncertain=5, num_unfamiliar=0, unreadable=[])

    line = summary.describe(tmp_path / "in")

    assert (f"predicted 21 images in {tmp_path / 'in'}: 9 class 07, 4 class 20, 3 class 31, 2 class 03, 1 class 11, "
            "2 in 2 other classes (5 uncertain)") in line


def _program_arguments(program: str, folder: Path) -> tuple[list[str], str]:
    """The arguments that give ``program`` (--evaluate or --predict) ``folder``, and its default output folder's
    name."""
    if program == "--evaluate":
        return ["--test-dir", str(folder)], f"eval-{folder.name}"
    return ["--input", str(folder)], f"predictions-{folder.name}"


@pytest.mark.parametrize("program", ["--evaluate", "--predict"])
def test_a_default_output_folder_another_run_is_writing_is_left_to_it(tmp_path, make_class_folder, capsys, program):
    """Two --evaluate runs of one model on folders of one name (both test/) at once both wrote MODEL/eval-test/ and
    both exited 0: the second's results replaced the first's."""
    from realvsai.files import working_on

    run = write_run(tmp_path / "models", "run")
    given, default = _program_arguments(program, make_class_folder(tmp_path / "test", {"FAKE": 2, "REAL": 2}))

    with working_on([run / default], "ModelTraining.py"):
        assert ModelTraining.main([program, str(run), *given, "--quiet"]) == 0
        assert not (run / default).exists()

    assert (run / f"{default}-2" / "predictions.csv").is_file()
    captured = capsys.readouterr()
    assert f"{run / default}-2" in captured.out.splitlines()[-1]
    assert f"{run / default} is being written by ModelTraining.py" in captured.err


@pytest.mark.parametrize("program", ["--evaluate", "--predict"])
def test_an_out_another_run_is_writing_is_refused_in_one_line(tmp_path, make_class_folder, capsys, program):
    from realvsai.files import working_on

    run, out = write_run(tmp_path / "models", "run"), tmp_path / "out"
    given, _ = _program_arguments(program, make_class_folder(tmp_path / "test", {"FAKE": 2, "REAL": 2}))

    with working_on([out], "ModelTraining.py"):
        assert ModelTraining.main([program, str(run), *given, "--out", str(out), "--quiet"]) == 1

    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{out} is being worked on by ModelTraining.py" in errors[0]
    assert not out.exists() and not (tmp_path / "out-2").exists()


@pytest.mark.parametrize("program", ["--evaluate", "--predict"])
@pytest.mark.parametrize("explicit", [False, True], ids=["default", "--out"])
def test_an_evaluation_or_prediction_claims_its_output_folder_while_it_writes(tmp_path, make_class_folder,
                                                                              monkeypatch, program, explicit):
    from realvsai.files import claimed_by

    run, out = write_run(tmp_path / "models", "run"), tmp_path / "out"
    given, default = _program_arguments(program, make_class_folder(tmp_path / "test", {"FAKE": 2, "REAL": 2}))
    module, name = (evaluation, "evaluate_folders") if program == "--evaluate" else (prediction, "predict_folder")
    real, seen = getattr(module, name), []

    def writing(model, info, folders, out_dir, **kwargs):
        seen.append((Path(out_dir), claimed_by(out_dir)))
        return real(model, info, folders, out_dir, **kwargs)

    monkeypatch.setattr(module, name, writing)
    assert ModelTraining.main([program, str(run), *given, *(["--out", str(out)] if explicit else []), "--quiet"]) == 0

    assert seen == [(out if explicit else run / default, f"ModelTraining.py (process {os.getpid()})")]
    assert claimed_by(seen[0][0]) is None


@pytest.mark.parametrize("program", ["--evaluate", "--predict"])
def test_a_folder_another_run_is_writing_is_not_read_until_it_ends(tmp_path, make_class_folder, capsys, program):
    """--evaluate and --predict claimed nothing they read: one started while DataUnZipper still extracted the test
    set (or a deletion emptied it) scored part of it, and exited 0 with figures of a set no one chose."""
    from realvsai.files import working_on

    run = write_run(tmp_path / "models", "run")
    folder = make_class_folder(tmp_path / "test", {"FAKE": 2, "REAL": 2})
    given, default = _program_arguments(program, folder)

    with working_on([folder], "DataUnZipper.py"):
        assert ModelTraining.main([program, str(run), *given, "--quiet"]) == 1

    assert f"{folder} is being worked on by DataUnZipper.py" in capsys.readouterr().err
    assert not (run / default).exists()


def test_an_archive_that_another_run_deletes_is_not_extracted_meanwhile(tmp_path):
    """DataUnZipper claimed only the folder it writes: DataDeleter could remove the archive it was reading."""
    import zipfile

    from realvsai.files import working_on

    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zip_file:
        zip_file.writestr("REAL/a.txt", "a")

    with working_on([archive], "DataDeleter.py"):
        result = run_script("DataUnZipper.py", archive, "--to", tmp_path / "raw")

    assert result.returncode == 1 and f"{archive} is being worked on by DataDeleter.py" in result.stderr
    assert not (tmp_path / "raw").exists()


def swallow_a_ctrl_c() -> None:
    """A Ctrl-C whose KeyboardInterrupt C code clears: TensorFlow's import calls abc's ``__subclasscheck__`` from C++
    (``register_dispatchable_type``), which drops an error raised there. No finalizer sees it, so nothing raises it
    again."""
    import contextlib
    import signal

    with contextlib.suppress(KeyboardInterrupt):
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)


@pytest.mark.parametrize("mode", ["--evaluate", "--predict"])
def test_a_sigterm_lost_while_the_model_loads_still_stops_the_run(tmp_path, monkeypatch, capsys, mode):
    """A SIGTERM in TensorFlow's import (3 of 22 tries, 3-5 s into an --evaluate) was lost there: the evaluation ran
    to its end and exited 0, as if never stopped."""
    from realvsai import run

    models = tmp_path / "models"
    write_run(models, "run")
    write_image(tmp_path / "test" / "FAKE" / "a.png", seed=1)
    write_image(tmp_path / "test" / "REAL" / "b.png", seed=2)
    real_load = run.load_model

    def load_model(path):
        swallow_a_ctrl_c()
        return real_load(path)

    monkeypatch.setattr(run, "load_model", load_model)
    where = ["--test-dir", str(tmp_path / "test")] if mode == "--evaluate" else ["--input", str(tmp_path / "test")]
    code = ModelTraining.main([mode, str(models / "run"), *where, "--out", str(tmp_path / "out"), "--quiet"])

    error = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and error[-1].startswith("error: interrupted."), error
    assert not (tmp_path / "out" / "predictions.csv").exists()
