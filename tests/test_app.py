"""Tests for App.py through Streamlit's AppTest: what the page shows for each thing a user does.

The app reads its options from ``sys.argv`` in ``main()`` (as ``streamlit run App.py -- ...``
sets it), so each test sets ``sys.argv`` before the run. Models are tiny stand-ins with the
contract's layer names (see test_inference.py).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_script
from streamlit.testing.v1 import AppTest
from test_inference import bright_patch, build_stand_in, encode, load, png_header_only, random_image, write_run

from realvsai import evaluation, inference, model_card, run
from realvsai.run import DEMO_WARNING, read_run

APP = REPO / "App.py"
PNG, JPEG = "image/png", "image/jpeg"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """Two runs: "newest" (the evidence stand-in, threshold 0.73) and "older"."""
    models = tmp_path_factory.mktemp("models")
    write_run(models, "older", created="2024-01-01T00:00:00+00:00")
    write_run(models, "newest", created="2025-06-01T12:00:00+00:00", threshold=0.73, evidence=True)
    return models


@pytest.fixture
def start_app(monkeypatch) -> Callable[..., AppTest]:
    """``start_app("--models", DIR, ...)``: the app as after ``streamlit run App.py -- ...``, run once."""

    def start(*args: object) -> AppTest:
        monkeypatch.setattr(sys, "argv", ["App.py", *map(str, args)])
        app = AppTest.from_file(str(APP), default_timeout=60)
        app.run()
        assert not app.exception, app.exception
        return app

    return start


def upload(app: AppTest, *files: tuple[str, bytes, str]) -> AppTest:
    app.file_uploader[0].set_value(list(files))
    app.run()
    assert not app.exception, app.exception
    return app


def texts(app: AppTest) -> list[str]:
    """Every piece of text the main page shows."""
    return [element.value for kind in ("title", "markdown", "caption", "subheader", "error", "warning", "info")
            for element in getattr(app, kind)] + [bar.proto.text for bar in app.get("progress")]


def verdicts(app: AppTest) -> list[str]:
    return [text.removeprefix("### ") for text in texts(app) if text.startswith("### ")]


# The "newest" stand-in's score for REAL grows with brightness: it calls noise REAL (100%), black
# FAKE (88%), and hesitates on a small bright patch on black (52% REAL).
SURE = ("noise.jpg", encode(random_image(1, 50, 40), "JPEG"), JPEG)
DARK = ("night.png", encode(np.zeros((30, 40, 3), np.uint8)), PNG)
UNSURE = ("patch.png", encode(bright_patch(64)), PNG)


def test_without_a_model_the_app_says_how_to_train_one(start_app, tmp_path):
    (tmp_path / "models").mkdir()
    app = start_app("--models", tmp_path / "models")

    assert any("no trained model" in text for text in texts(app))
    assert "python ModelTraining.py --demo\nstreamlit run App.py" in [block.value for block in app.code]
    assert not app.file_uploader


def test_without_a_model_the_title_presumes_no_classes(start_app, tmp_path):
    """It read "Real or AI?" for a user about to train on, say, benign/malignant/normal scans."""
    (tmp_path / "models").mkdir()
    app = start_app("--models", tmp_path / "models")

    assert [title.value for title in app.title] == ["🔍 Image classifier"]


def test_the_newest_model_opens_with_its_card(start_app, models_dir):
    app = start_app("--models", models_dir)

    assert app.selectbox[0].value == str(models_dir / "newest")
    card = next(text for text in texts(app) if text.startswith("Model **newest**"))
    assert "trained 2025-06-01" in card and "classes FAKE, REAL" in card and "32 px" in card
    assert [(metric.label, metric.value) for metric in app.metric] == [
        ("Test accuracy", "0.910"), ("Test F1 (FAKE)", "0.900"), ("Test ROC AUC", "0.950")]


def test_the_browser_tab_and_the_metrics_speak_of_the_model_served(start_app, tmp_path, monkeypatch):
    """A three-class run: its question in the tab, not "Real vs AI"; its F1 is a macro average and says so."""
    import streamlit

    titles, set_page_config = [], streamlit.set_page_config
    monkeypatch.setattr(streamlit, "set_page_config", lambda **options: (
        titles.append(options.get("page_title")), set_page_config(**options))[1])
    write_run(tmp_path, "scans", class_names=["benign", "malignant", "normal"],
              info={"test_metrics": {"accuracy": 0.8, "f1": 0.7, "roc_auc": 0.9, "recall": 0.72}})
    app = start_app("--models", tmp_path)

    assert titles[-1] == "benign, malignant or normal?"
    assert [metric.label for metric in app.metric] == [
        "Test accuracy", "Test F1 (macro)", "Test ROC AUC (macro)", "Test recall (macro)"]


def test_the_model_flag_opens_that_run_first(start_app, models_dir):
    app = start_app("--models", models_dir, "--model", models_dir / "older" / "model.h5")

    assert app.selectbox[0].value == str(models_dir / "older")
    assert len(app.selectbox[0].options) == 2


def test_a_chosen_run_that_goes_away_is_said_to_be_gone_before_another_answers(start_app, tmp_path):
    """The run chosen in the sidebar was deleted while the page was open: the next rerun answered the same uploads
    with the newest run, and nothing on the page said so."""
    write_run(tmp_path, "older", created="2024-01-01T00:00:00+00:00")
    write_run(tmp_path, "newest", created="2025-06-01T12:00:00+00:00", evidence=True)
    app = start_app("--models", tmp_path)
    app.selectbox[0].set_value(str(tmp_path / "older")).run()
    upload(app, SURE)

    shutil.rmtree(tmp_path / "older")
    app.run()

    assert app.selectbox[0].value == str(tmp_path / "newest")
    gone = [warning.value for warning in app.warning if "no longer available" in warning.value]
    assert len(gone) == 1 and "`older`" in gone[0] and "`newest`" in gone[0]


def test_the_model_flag_opens_the_run_of_a_model_json(start_app, models_dir):
    app = start_app("--models", models_dir, "--model", models_dir / "older" / "model.json")

    assert app.selectbox[0].value == str(models_dir / "older")


def test_app_py_help_says_the_model_flag_takes_a_run_folder_its_model_h5_or_its_model_json():
    finished = run_script("App.py", "--help", timeout=120)

    assert finished.returncode == 0
    assert "--model MODEL a run folder (or its model.h5 or model.json) to open first" in " ".join(
        finished.stdout.split())


def test_a_model_flag_pointing_nowhere_says_so_and_serves_no_other_model(start_app, models_dir, tmp_path):
    """It opened the newest run in --models below the error: uploads were answered by a model the user had not
    asked for, under a card that named it in small print."""
    app = start_app("--models", models_dir, "--model", tmp_path / "missing")

    [error] = app.error
    assert error.value.startswith(f"--model `{tmp_path / 'missing'}`: ") and "does not exist" in error.value
    assert "Or start the app without `--model` to choose among the runs in" in error.value
    assert "--demo Or start" not in error.value  # the loader's advice ends with a command: no full stop to end it
    assert not app.selectbox and not app.get("file_uploader") and not app.exception


def test_one_upload_shows_its_class_probability_and_a_bar_per_class(start_app, models_dir):
    app = upload(start_app("--models", models_dir), SURE)

    assert verdicts(app) == ["REAL"]
    assert "100.0% probability" in texts(app)
    bars = [bar.proto.text for bar in app.get("progress")]
    assert [text.split(":")[0] for text in bars] == ["FAKE", "REAL"]
    assert len(app.get("image")) == 1


def test_several_uploads_are_classified_in_one_model_call(start_app, models_dir, monkeypatch):
    calls = []
    real = inference.Classifier.predict_prepared
    monkeypatch.setattr(inference.Classifier, "predict_prepared",
                        lambda self, batch: calls.append(len(batch)) or real(self, batch))
    files = [(f"photo_{index}.png", encode(random_image(100 + index, 30 + index, 20)), PNG) for index in range(5)]

    app = upload(start_app("--models", models_dir), *files)

    assert calls == [5]
    assert len(verdicts(app)) == 5
    assert app.subheader[0].value.startswith("5 images:")


def test_adding_or_removing_an_upload_classifies_only_what_is_new(start_app, models_dir, monkeypatch):
    """The results were kept by the whole set of uploads: adding or removing one file classified every file on the
    page again (20 photos at 224 px on a CPU: seconds a click)."""
    calls = []
    real = inference.Classifier.predict_prepared
    monkeypatch.setattr(inference.Classifier, "predict_prepared",
                        lambda self, batch: calls.append(len(batch)) or real(self, batch))
    # (upload id, name, bytes, type): a browser keeps a file's id while it stays; set_value would give new ones.
    files = [(f"id-{index}", f"photo_{index}.png", encode(random_image(100 + index, 30 + index, 20)), PNG)
             for index in range(4)]
    app = start_app("--models", models_dir)
    for shown in (files[:3], files, files[1:]):  # three, one more, one less
        app.file_uploader[0]._files = list(shown)
        app.run()
        assert not app.exception, app.exception

    assert calls == [3, 1]
    assert len(verdicts(app)) == 3


def test_a_mask_uploaded_after_its_image_is_left_out_as_one_uploaded_with_it(start_app, models_dir):
    image = ("benign (1).png", encode(random_image(7, 32, 32)), PNG)
    mask = ("benign (1)_mask.png", encode(random_image(8, 32, 32)), PNG)
    app = upload(start_app("--models", models_dir), image)

    upload(app, image, mask)

    assert [error.value.split(" could not")[0] for error in app.error] == ["`benign (1)_mask.png`"]
    assert len(verdicts(app)) == 1


def test_moving_the_threshold_does_not_run_the_model_again(start_app, models_dir, monkeypatch):
    calls = []
    real = inference.Classifier.predict_prepared
    monkeypatch.setattr(inference.Classifier, "predict_prepared",
                        lambda self, batch: calls.append(len(batch)) or real(self, batch))
    app = upload(start_app("--models", models_dir), UNSURE)

    app.slider[0].set_value(0.3).run()

    assert calls == [1]
    assert verdicts(app) == ["REAL"]


def test_a_corrupt_upload_is_named_and_the_others_are_classified(start_app, models_dir):
    app = upload(start_app("--models", models_dir), SURE, ("broken.jpg", b"\xff\xd8\xff\xe0 not really", JPEG), UNSURE)

    assert [error.value.split(" ")[0] for error in app.error] == ["`broken.jpg`"]
    assert "could not be classified: not an image" in app.error[0].value
    assert len(verdicts(app)) == 2


def test_an_upload_of_a_format_not_read_here_is_named_with_what_to_do_and_any_file_is_taken(start_app, models_dir):
    # The uploader took only the names the pipeline reads: an iPhone's HEIC, a scanner's TIFF and a JPEG saved without
    # an extension got Streamlit's "image/heif files are not allowed" and no word of what to do.
    assert not start_app("--models", models_dir).file_uploader[0].proto.type  # any file: the app says what it is
    heic = ("IMG_0001.HEIC", b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(64), "image/heic")
    tiff = ("scan.tiff", encode(random_image(2, 40, 40), "TIFF"), "image/tiff")
    bare = ("photo", SURE[1], "application/octet-stream")

    app = upload(start_app("--models", models_dir), heic, tiff, bare)

    assert [error.value.split(" ")[0] for error in app.error] == ["`IMG_0001.HEIC`", "`scan.tiff`"]
    assert all("image, a format not read here" in error.value and "convert it to" in error.value for error in app.error)
    assert verdicts(app) == ["REAL"]  # the JPEG, by its content


def test_an_image_with_too_many_pixels_is_refused_by_name(start_app, models_dir):
    app = upload(start_app("--models", models_dir), ("huge.png", png_header_only(20_000, 20_000), PNG), SURE)

    assert "`huge.png`" in app.error[0].value and "limit" in app.error[0].value
    assert verdicts(app) == ["REAL"]


def test_a_strip_that_crops_mode_would_enlarge_past_the_pixel_limit_is_refused_by_name(start_app, tmp_path):
    write_run(tmp_path / "models", "crops", info={"input_mode": "crops"})
    strip = ("strip.png", encode(random_image(4, 1, 5000)), PNG)  # 5,000 pixels; 32x160000 once enlarged

    app = upload(start_app("--models", tmp_path / "models", "--max-pixels", 100_000), strip, SURE)

    assert "`strip.png`" in app.error[0].value and "limit of 100,000 pixels" in app.error[0].value
    assert len(verdicts(app)) == 1


def test_an_unexpected_error_for_one_file_leaves_the_app_running(start_app, models_dir, monkeypatch):
    real_load = inference.load_rgb_with_header

    def load(data, max_pixels, image_size=None, crop_size=None):
        if data.startswith(b"GIF89a"):
            raise RuntimeError("decoder exploded")
        return real_load(data, max_pixels, image_size, crop_size)

    monkeypatch.setattr(inference, "load_rgb_with_header", load)
    app = upload(start_app("--models", models_dir), ("odd.bmp", b"GIF89a....", "image/bmp"), SURE)

    assert "`odd.bmp`" in app.error[0].value and "RuntimeError" in app.error[0].value
    assert verdicts(app) == ["REAL"]


def test_the_threshold_defaults_to_the_model_json_value_and_marks_results_uncertain(start_app, models_dir):
    app = upload(start_app("--models", models_dir), UNSURE)

    assert app.slider[0].value == pytest.approx(0.73)
    assert verdicts(app) == [":orange[Uncertain]"]
    assert any(text.startswith("Leaning REAL at 52") and "73% threshold" in text for text in texts(app))

    app.slider[0].set_value(0.5).run()

    assert verdicts(app) == ["REAL"]


@pytest.fixture(scope="module")
def thresholded_models(tmp_path_factory) -> Path:
    """One run, the evidence stand-in, whose model.json calls FAKE from P(FAKE) >= 0.3 (confidence 0.6)."""
    models = tmp_path_factory.mktemp("thresholded")
    write_run(models, "thresholded", evidence=True, info={"positive_class": "FAKE", "decision_threshold": 0.3})
    return models


def test_two_classes_are_decided_at_the_model_json_decision_threshold(start_app, thresholded_models):
    app = upload(start_app("--models", thresholded_models), UNSURE)  # P(FAKE) 0.47: argmax would say REAL

    assert verdicts(app) == ["FAKE"]
    assert list(app.dataframe[0].value["predicted"]) == ["FAKE"]


def test_the_page_states_the_decision_rule(start_app, thresholded_models):
    app = start_app("--models", thresholded_models)

    rule = read_run(thresholded_models / "thresholded").info.rule(0.6)
    assert any(rule.describe(["FAKE", "REAL"]) in text for text in texts(app))


def test_grad_cam_explains_the_class_decided_at_the_threshold(start_app, thresholded_models):
    app = upload(start_app("--models", thresholded_models), UNSURE)

    app.toggle[0].set_value(True).run()

    assert [image.proto.imgs[0].caption for image in app.get("image")][1] == "Grad-CAM: evidence for FAKE"


@pytest.fixture(scope="module")
def demo_models(tmp_path_factory) -> Path:
    """One run trained on the synthetic demo data (model.json's config says "demo": true)."""
    models = tmp_path_factory.mktemp("demo")
    write_run(models, "demo", evidence=True, info={"config": {"epochs": 1, "demo": True}})
    return models


def demo_warnings(app: AppTest) -> list[str]:
    return [warning.value for warning in app.warning if DEMO_WARNING in warning.value]


def test_a_demo_model_is_marked_at_the_top_and_its_metrics_are_no_headline(start_app, demo_models):
    app = start_app("--models", demo_models)

    assert app.main.children[0].type == "title" and app.main.children[1].type == "warning"  # right under the title
    assert DEMO_WARNING in app.main.children[1].value
    assert not app.metric


def test_every_answer_of_a_demo_model_carries_the_demo_warning(start_app, demo_models):
    app = upload(start_app("--models", demo_models), SURE, DARK)

    assert verdicts(app) == ["REAL", "FAKE"]
    assert len(demo_warnings(app)) == 1 + 2  # the top, and one per answer


def test_a_real_model_shows_no_demo_warning(start_app, models_dir):
    app = upload(start_app("--models", models_dir), SURE)

    assert demo_warnings(app) == []


def test_the_grad_cam_toggle_adds_a_heatmap_to_each_image(start_app, models_dir):
    app = upload(start_app("--models", models_dir), SURE, DARK)
    assert len(app.get("image")) == 2

    app.toggle[0].set_value(True).run()

    assert not app.exception
    assert len(app.get("image")) == 4
    captions = [image.proto.imgs[0].caption for image in app.get("image")]
    # Numbered as the table and the notes number them: a phone names every photo image.jpg.
    assert captions == ["1 · noise.jpg", "Grad-CAM: evidence for REAL", "2 · night.png", "Grad-CAM: evidence for FAKE"]


def test_grad_cam_names_the_layer_it_explains_from(start_app, models_dir):
    app = upload(start_app("--models", models_dir), SURE)

    app.toggle[0].set_value(True).run()

    assert any("conv2" in caption.value and "16×16" in caption.value for caption in app.sidebar.caption)


def test_grad_cam_says_so_when_the_model_cannot_localise(start_app, tmp_path):
    write_run(tmp_path, "tiny", model=build_stand_in(image_size=2), image_size=2)  # feature maps 2x2 and 1x1
    app = upload(start_app("--models", tmp_path), SURE)

    app.toggle[0].set_value(True).run()

    assert not app.exception
    assert len(app.get("image")) == 1  # the upload, and no heatmap
    assert any("cannot localise at 2 px" in text and "larger --image-size" in text for text in texts(app))


def captured_downloads(monkeypatch) -> list[tuple[str, str]]:
    """The ``(file name, data)`` of each download button the page shows from now on, in order."""
    import streamlit

    downloads, real_download = [], streamlit.download_button

    def download_button(label, data, *args, **kwargs):
        downloads.append((kwargs.get("file_name"), data))
        return real_download(label, data, *args, **kwargs)

    monkeypatch.setattr(streamlit, "download_button", download_button)
    return downloads


def test_the_table_and_its_csv_list_every_upload(start_app, models_dir, monkeypatch):
    downloads = captured_downloads(monkeypatch)
    formula = ("=cmd.png", encode(np.zeros((30, 40, 3), np.uint8)), PNG)
    app = upload(start_app("--models", models_dir), SURE, ("notes.png", b"plain text", PNG), UNSURE, DARK, formula)

    table = app.dataframe[0].value
    assert list(table["file"]) == ["noise.jpg", "notes.png", "patch.png", "night.png", "=cmd.png"]
    assert list(table["upload"]) == [1, 2, 3, 4, 5]  # the cards' numbers: a phone names every photo image.jpg
    lines = downloads[-1][1].splitlines()
    # The upload's number, predictions.csv's columns in its order, an error column for the uploads it could not
    # classify, and the run that answered with the save of its model.h5 (their own test), here left off each row.
    assert lines[0] == ("upload,file,predicted,probability_FAKE,probability_REAL,uncertain,unfamiliar,error,"
                        "model,model_saved")
    assert {line.split(",")[-2] for line in lines[1:]} == {"newest"}
    lines = [line.rsplit(",", 2)[0] for line in lines]
    assert lines[1].startswith("1,noise.jpg,REAL,0.0000") and lines[1].endswith(",1.000000,false,,")
    assert lines[2].startswith("2,notes.png,,,,,,not an image")
    assert lines[3].startswith("3,patch.png,REAL,0.47") and lines[3].endswith(",true,,")
    assert lines[4] == "4,night.png,FAKE,0.880797,0.119203,false,,"
    assert lines[5] == "5,'=cmd.png,FAKE,0.880797,0.119203,false,,"  # a spreadsheet shows it, never runs it


def test_the_csv_names_the_run_and_the_save_of_its_model_h5_that_answered(start_app, tmp_path, monkeypatch):
    """The page said "Answered by `older`'s model.h5 of ...", but the CSV it downloaded, predictions.csv whichever run
    answered, said nothing of it: two runs' CSVs of the same uploads could not be told apart."""
    downloads = captured_downloads(monkeypatch)
    write_run(tmp_path, "older", created="2024-01-01T00:00:00+00:00")
    write_run(tmp_path, "newest", created="2025-06-01T12:00:00+00:00", evidence=True)
    app = upload(start_app("--models", tmp_path), SURE, ("notes.png", b"plain text", PNG))
    app.selectbox[0].set_value(str(tmp_path / "older")).run()

    [(newest_name, newest_csv), (older_name, older_csv)] = downloads[-2:]
    assert (newest_name, older_name) == ("predictions-newest.csv", "predictions-older.csv")
    header, *rows = csv.reader(io.StringIO(older_csv))
    assert header[-3:] == ["error", "model", "model_saved"]
    saved = answered_by(app)[0].split("'s model.h5 of ")[1].removesuffix(".")
    assert [row[-2:] for row in rows] == [["older", saved]] * 2  # the upload not classified too
    assert [row[-2] for row in list(csv.reader(io.StringIO(newest_csv)))[1:]] == ["newest"] * 2


@pytest.mark.parametrize("given", [".", "model.h5"])
def test_a_run_given_from_inside_its_folder_is_named_in_its_csv_and_the_sidebar(start_app, tmp_path, monkeypatch,
                                                                               given):
    """`streamlit run App.py -- --model .` (or `--model model.h5`) in the run's folder: the run's name was its path's
    last part, which is empty, so the CSV came as predictions-.csv with an empty model column, and the sidebar's
    label began with its date."""
    downloads = captured_downloads(monkeypatch)
    monkeypatch.chdir(write_run(tmp_path, "older", created="2024-01-01T00:00:00+00:00"))
    app = upload(start_app("--models", tmp_path / "none", "--model", given), SURE)

    [label] = app.selectbox[0].proto.options
    assert label.startswith("older · ")
    [(name, text)] = downloads
    assert name == "predictions-older.csv"
    assert [row[-2] for row in list(csv.reader(io.StringIO(text)))[1:]] == ["older"]


def test_an_unreadable_model_file_shows_a_one_line_message_not_a_traceback(start_app, tmp_path):
    folder = write_run(tmp_path, "damaged", model=build_stand_in())
    (folder / "model.h5").write_bytes(b"this is not HDF5")

    app = start_app("--models", tmp_path)

    assert "model.h5 is not a Keras HDF5 model" in app.error[0].value
    assert "\n" not in app.error[0].value and "Traceback" not in app.error[0].value
    assert not app.file_uploader


def test_a_malformed_model_json_skips_that_run_naming_the_file_and_the_field(start_app, tmp_path):
    write_run(tmp_path, "good", created="2024-01-01T00:00:00+00:00")
    folder = write_run(tmp_path, "bad", created="2025-01-01T00:00:00+00:00", info={"image_size": "large"})

    app = start_app("--models", tmp_path)

    skipped = [warning.value for warning in app.sidebar.warning]
    assert len(skipped) == 1 and str(folder / "model.json") in skipped[0] and "image_size" in skipped[0]
    assert not app.exception and app.file_uploader


def test_a_model_json_that_does_not_match_the_model_shows_a_message(start_app, tmp_path):
    folder = write_run(tmp_path, "mismatch", model=build_stand_in())
    info = json.loads((folder / "model.json").read_text())
    info["class_names"] = ["cat", "dog", "fish"]
    (folder / "model.json").write_text(json.dumps(info))

    app = start_app("--models", tmp_path)

    assert "outputs 2 classes" in app.error[0].value


def test_python_app_py_without_streamlit_says_how_to_start_it():
    finished = run_script("App.py", timeout=120)

    assert finished.returncode == 2
    assert "streamlit run App.py" in finished.stderr


def test_app_py_help_lists_its_options():
    finished = run_script("App.py", "--help", timeout=120)

    assert finished.returncode == 0
    assert "--model" in finished.stdout and "--models" in finished.stdout and "streamlit run App.py" in finished.stdout


def test_app_py_help_says_each_default_once_and_prints_no_streamlit_warnings():
    finished = run_script("App.py", "--help", timeout=120)

    assert finished.returncode == 0
    assert "(default: None)" not in finished.stdout
    assert "(default: the newest in --models)" in " ".join(finished.stdout.split())
    assert "No runtime found" not in finished.stderr and "WARNING" not in finished.stderr


def test_results_are_the_same_as_the_model_gives_for_the_original_image(start_app, models_dir):
    image = random_image(7, 70, 45)
    app = upload(start_app("--models", models_dir), ("a.png", encode(image), PNG))

    classifier, _ = load(models_dir / "newest")
    expected = np.asarray(classifier.model(image[None].astype(np.float32), training=False))[0]
    assert list(app.dataframe[0].value["probability_REAL"]) == pytest.approx([expected[1]], abs=1e-5)


# --- unfamiliar uploads ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def thumbnail_models(tmp_path_factory) -> Path:
    """One run whose model.json says it was trained on 32x32 JPEGs."""
    models = tmp_path_factory.mktemp("thumbnail_models")
    write_run(models, "thumbnails", evidence=True,
              info={"training_images": {"min_side": 32, "max_side": 32, "formats": ["JPEG"]}})
    return models


def test_a_run_opened_before_it_finished_training_says_so(start_app, tmp_path):
    run = write_run(tmp_path, "unfinished")
    (run / "backup").mkdir()
    (run / "backup" / "config.json").write_text("{}")  # written as a run starts, removed as it finishes
    app = start_app("--models", tmp_path / "none", "--model", run)  # not among the runs the sidebar skips
    assert any("has not finished training" in warning.value and "best model so far" in warning.value
               for warning in app.warning)


def test_an_upload_unlike_the_training_images_is_warned_about_and_never_certain(start_app, thumbnail_models):
    photo = ("photo.png", encode(random_image(3, 1024, 768)), PNG)
    app = upload(start_app("--models", thumbnail_models), photo)

    warnings = [warning.value for warning in app.warning]
    assert any("never called certain" in text and "1024x768" in text for text in warnings)
    assert verdicts(app) == [":orange[Uncertain]"]  # noise alone is 100% REAL to this model
    assert any("not certain on such images" in text for text in texts(app))
    assert "1 uncertain" in app.subheader[0].value


def test_the_summary_heading_stays_short_and_says_what_unfamiliar_means_beneath_it(start_app, thumbnail_models):
    """The heading over the cards said "3 images: 1 FAKE, 2 REAL (2 uncertain, 2 flagged in the unfamiliar column:
    unlike the training images, or of a size validation found the model at chance on or had no image of)": three
    lines of heading type on a laptop screen, where the count is what a heading is for."""
    photo = ("photo.png", encode(random_image(3, 1024, 768)), PNG)
    thumbnail = ("thumb.jpg", encode(random_image(1, 32, 32), "JPEG"), JPEG)
    app = upload(start_app("--models", thumbnail_models), photo, thumbnail)

    assert app.subheader[0].value == "2 images: 0 FAKE, 2 REAL (1 uncertain, 1 unfamiliar)"
    assert any(text.startswith("Unfamiliar: unlike the training images, or of a size validation found the model at "
                               "chance on or had no image of") for text in texts(app))


def test_an_unfamiliar_upload_leaning_to_a_class_under_50_percent_says_the_threshold_decided_it(start_app,
                                                                                                 tmp_path):
    write_run(tmp_path, "leaning", evidence=True, info={
        "decision_threshold": 0.3, "training_images": {"min_side": 32, "max_side": 32, "formats": ["JPEG"]}})
    app = upload(start_app("--models", tmp_path), UNSURE)  # 48% FAKE: FAKE at the 30% threshold; a 64 px PNG

    assert verdicts(app) == [":orange[Uncertain]"]
    (caption,) = [text for text in texts(app) if text.startswith("Leaning")]
    assert caption.startswith("Leaning FAKE: P(FAKE) 4") and "≥ the decision threshold 30.0%" in caption
    assert caption.endswith("but not certain on such images.")


@pytest.fixture(scope="module")
def chance_models(tmp_path_factory) -> Path:
    """One run whose validation showed it at chance on images 256-1023 px a side."""
    models = tmp_path_factory.mktemp("chance_models")
    by_kind = {"chance": 0.5, "size": {
        "0-63 px": {"num_images": 40, "accuracy": 0.95, "balanced_accuracy": 0.95, "near_chance": False},
        "256-1023 px": {"num_images": 40, "accuracy": 0.5, "balanced_accuracy": 0.52, "near_chance": True}}}
    write_run(models, "chance", evidence=True, info={"validation_by_kind": by_kind})
    return models


def test_an_upload_of_a_kind_validation_shows_at_chance_is_uncertain_with_the_reason(start_app, chance_models):
    large = ("large.png", encode(random_image(3, 400, 300)), PNG)
    small = ("small.png", encode(random_image(4, 40, 30)), PNG)
    app = upload(start_app("--models", chance_models), large, small)

    assert verdicts(app) == [":orange[Uncertain]", "REAL"]  # noise alone is 100% REAL to this model
    warnings = [warning.value for warning in app.warning]
    assert len(warnings) == 1 and "256-1023 px" in warnings[0] and "at chance" in warnings[0]


def test_an_upload_like_the_training_images_gets_no_unfamiliar_warning(start_app, thumbnail_models):
    thumbnail = ("thumb.jpg", encode(random_image(1, 32, 32), "JPEG"), JPEG)
    app = upload(start_app("--models", thumbnail_models), thumbnail)

    assert not [warning for warning in app.warning if "never called certain" in warning.value]
    assert verdicts(app) == ["REAL"]


@pytest.fixture(scope="module")
def colour_models(tmp_path_factory) -> Path:
    """One run whose model.json says none of its training images was grayscale."""
    models = tmp_path_factory.mktemp("colour_models")
    write_run(models, "colour", evidence=True, info={"training_images": {
        "min_side": 32, "max_side": 32, "formats": ["PNG"], "images": 8, "grayscale": 0}})
    return models


def test_a_grayscale_upload_to_a_colour_only_model_is_warned_about_and_never_certain(start_app, colour_models):
    gray = ("gray.png", encode(random_image(3, 32, 32)[..., 0]), PNG)  # mode L: noise, 100% REAL to this model
    colour = ("colour.png", encode(random_image(3, 32, 32)), PNG)
    app = upload(start_app("--models", colour_models), gray, colour)

    assert verdicts(app) == [":orange[Uncertain]", "REAL"]
    warnings = [warning.value for warning in app.warning]
    assert len(warnings) == 1 and "a grayscale image; the model was trained on colour images only" in warnings[0]


def test_app_py_help_imports_neither_tensorflow_nor_scikit_learn():
    finished = subprocess.run([sys.executable, "-X", "importtime", str(REPO / "App.py"), "--help"], cwd=REPO,
                              capture_output=True, text=True, timeout=120)

    imported = {line.rsplit("|", 1)[-1].strip() for line in finished.stderr.splitlines()
                if line.startswith("import time")}
    assert finished.returncode == 0 and "streamlit" in imported
    assert not imported & {"tensorflow", "keras", "sklearn"}


def test_app_py_run_with_python_ends_in_one_error_line_naming_the_streamlit_command():
    """``python App.py`` said how to start the app without the ``error:`` every other refusal begins with."""
    finished = run_script("App.py", timeout=120)

    assert finished.returncode == 2
    assert finished.stderr.strip().splitlines() == [
        "error: App.py is a Streamlit app, not a script: start it with streamlit run App.py [-- --model PATH]"]


def test_a_bad_app_option_is_shown_on_the_page_not_a_blank_one(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["App.py", "--batch-size", "0"])
    app = AppTest.from_file(str(APP), default_timeout=60)
    app.run()

    assert not app.exception, app.exception
    assert "--batch-size" in app.error[0].value and "streamlit run App.py --" in app.error[0].value
    assert app.error[0].value.count("--help") == 1  # the parser's line names it already


def test_the_confidence_slider_of_a_two_class_model_starts_at_one_half(start_app, thresholded_models):
    app = start_app("--models", thresholded_models)  # below 0.5 the Uncertain band would turn inside out

    assert app.slider[0].min == 0.5
    assert "of the way from the decision threshold" in app.slider[0].help


def test_a_damaged_newest_model_points_to_the_others_in_the_sidebar(start_app, tmp_path):
    write_run(tmp_path, "older", created="2024-01-01T00:00:00+00:00")
    folder = write_run(tmp_path, "damaged", created="2025-01-01T00:00:00+00:00")
    (folder / "model.h5").write_bytes(b"this is not HDF5")

    app = start_app("--models", tmp_path)

    assert "model.h5 is not a Keras HDF5 model" in app.error[0].value
    assert "choose another model in the sidebar" in app.error[0].value


def test_a_models_folder_that_does_not_exist_is_named_as_missing(start_app, tmp_path):
    app = start_app("--models", tmp_path / "modles")

    assert any("modles" in text and "no such folder" in text for text in texts(app))
    assert not any("no trained model" in text for text in texts(app))


def test_a_relative_models_folder_is_named_as_typed_not_made_absolute(start_app, tmp_path, monkeypatch):
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    page = texts(start_app("--models", "runs")) + texts(start_app("--models", "modles"))

    assert any("`runs`" in text and "no trained model" in text for text in page), page
    assert any("`modles`" in text and "no such folder" in text for text in page), page
    assert not any(str(tmp_path) in text for text in page), page


def test_the_model_section_says_a_crops_model_sees_native_resolution_crops(start_app, tmp_path):
    write_run(tmp_path / "models", "crops", info={"input_mode": "crops"})
    app = start_app("--models", tmp_path / "models").run()
    assert any("3×3 crops of 32 px at native resolution" in item.value for item in app.markdown)


# --- what the page says beside each figure -----------------------------------------------------


def test_a_verdict_decided_at_the_threshold_compares_p_positive_with_it(start_app, thresholded_models):
    app = upload(start_app("--models", thresholded_models), UNSURE, SURE)  # P(FAKE) 0.47 and 0.00; threshold 0.3

    assert verdicts(app) == ["FAKE", "REAL"]
    reasons = [caption.value for caption in app.caption if caption.value.startswith("P(FAKE) ")]
    assert len(reasons) == 2
    assert reasons[0].startswith("P(FAKE) 47.") and "% ≥ the decision threshold 30.0%" in reasons[0]
    assert reasons[1].startswith("P(FAKE) 0.0% < the decision threshold 30.0%")


def test_the_shortcut_warning_of_model_json_is_shown_under_the_title(start_app, tmp_path):
    shortcut = "Every FAKE training image is a PNG and every REAL one a JPEG: the model may have learnt that."
    write_run(tmp_path, "shortcut", info={"shortcut_warning": shortcut})

    app = start_app("--models", tmp_path)

    assert app.main.children[1].type == "warning" and shortcut in app.main.children[1].value


def test_class_names_are_shown_as_they_are_not_read_as_markdown(start_app, tmp_path):
    """"real|photos *x*" showed as "real|photos x" in italics in the title, the model line and the decision rule."""
    write_run(tmp_path, "odd", class_names=["fake `gen` <b>x", "real|photos *x*"])

    app = start_app("--models", tmp_path)

    shown = [app.title[0].value, *(element.value for element in app.markdown), *(caption.value for caption in
                                                                               app.caption)]
    assert any("photos \\*x\\*" in text for text in shown)
    assert not any("*x*" in text.replace("\\*x\\*", "") for text in shown)


def test_an_answer_s_reason_and_its_warning_show_class_names_as_they_are(start_app, tmp_path):
    """The card's heading was escaped, but the line under it ("Leaning [link](x) at 27.8%, ...") showed a link, and
    "$1 bill" and "$5 bill" turned the text between them into LaTeX."""
    write_run(tmp_path, "odd", class_names=["$1 bill", "[link](x)"], evidence=True)
    app = upload(start_app("--models", tmp_path), UNSURE)

    reason = next(caption.value for caption in app.caption if caption.value.startswith("Leaning"))
    assert "\\[link\\](x)" in reason and "[link](x)" not in reason.replace("\\[link\\](x)", ""), reason
    shown = [*texts(app), *(warning.value for warning in app.warning)]
    assert not any("$1 bill" in text.replace("\\$1 bill", "") for text in shown), shown


def test_the_headline_test_metrics_name_the_number_of_test_images(start_app, tmp_path):
    write_run(tmp_path, "counted", info={"test_metrics": {"accuracy": 0.91, "f1": 0.9, "num_images": 1412}})

    app = start_app("--models", tmp_path)

    assert [metric.label for metric in app.metric] == ["Test accuracy", "Test F1 (FAKE)"]
    assert any("1,412 test images" in text for text in texts(app))


def test_the_headline_precision_recall_and_f1_of_two_classes_name_the_class_they_are_of(start_app, tmp_path):
    """95 % FAKE: "Test precision 1.000" was FAKE's, where the rare REAL's was 0.105; nothing said which."""
    write_run(tmp_path, "rare", info={"positive_class": "REAL", "test_metrics": {
        "accuracy": 0.9, "precision": 0.105, "recall": 0.5, "f1": 0.17, "roc_auc": 0.8, "num_images": 40}})

    app = start_app("--models", tmp_path)

    assert [metric.label for metric in app.metric] == [
        "Test accuracy", "Test F1 (REAL)", "Test ROC AUC", "Test precision (REAL)", "Test recall (REAL)"]


def test_the_headline_test_metrics_carry_the_card_s_warnings_about_them(start_app, tmp_path):
    """The card said the model answered one class for every test image, that REAL had 2 test images and that the
    threshold was chosen on 1 validation image of it; the app's figures stood without a word of it."""
    test = {"accuracy": 0.9, "balanced_accuracy": 0.5, "f1": 0.95, "num_images": 20, "majority_class": "FAKE",
            "majority_baseline": 0.9, "single_answer": "FAKE", "missing_classes": []}
    write_run(tmp_path, "collapsed", info={"test_metrics": test}, metrics={
        **test, "per_class": {"FAKE": {"support": 18}, "REAL": {"support": 2}},
        "threshold_selection": {"num_positive": 30, "num_images": 31}, "positive_class": "FAKE"})

    app = start_app("--models", tmp_path)

    warned = " ".join(warning.value for warning in app.warning)
    assert "The model answered `FAKE` for every test image: always answering `FAKE` scores accuracy 0.90" in warned
    assert "REAL has only 2 test images" in warned
    assert "The decision threshold was chosen on 1 validation image of REAL" in warned


def test_the_headline_test_metrics_stand_at_most_three_a_row(start_app, tmp_path):
    """Six side by side read "0.…" under "Test balan…" in a window 1024 px wide with the sidebar open."""
    write_run(tmp_path, "six", info={"test_metrics": {
        "accuracy": 0.9, "balanced_accuracy": 0.8, "precision": 0.7, "recall": 0.6, "f1": 0.65, "roc_auc": 0.85}})

    app = start_app("--models", tmp_path)

    def blocks(node):
        yield node
        for child in getattr(node, "children", {}).values():
            yield from blocks(child)

    rows = [[element.type for column in block.children.values() for element in column.children.values()]
            for block in blocks(app.main)
            if any(child.type == "column" for child in getattr(block, "children", {}).values())]
    assert [row for row in rows if "metric" in row] == [["metric"] * 3] * 2


@pytest.mark.parametrize("classes", [["FAKE", "REAL"], ["benign", "malignant", "normal"]])
def test_the_headline_test_metrics_show_the_balanced_accuracy_beside_the_accuracy(start_app, tmp_path, classes):
    """150 FAKE and 1 REAL test images all answered FAKE: "Test accuracy 0.993" alone hid a model at chance. The
    balanced accuracy is the mean recall over the classes: no "(macro)" of it."""
    write_run(tmp_path, "lopsided", class_names=classes,
              info={"test_metrics": {"accuracy": 0.9934, "balanced_accuracy": 0.5, "f1": 0.9967, "num_images": 151}})

    app = start_app("--models", tmp_path)

    assert [(metric.label, metric.value) for metric in app.metric][:2] == [
        ("Test accuracy", "0.993"), ("Test balanced accuracy", "0.500")]


def test_the_headline_test_metrics_say_when_the_test_set_is_small_as_the_model_card_does(start_app, tmp_path):
    write_run(tmp_path, "small", info={"test_metrics": {"accuracy": 0.91, "f1": 0.9, "num_images": 120}})

    app = start_app("--models", tmp_path)

    said = model_card.small_test_set(120)
    assert said and "The test set is small (120 images)" in said
    assert any(said in text for text in texts(app))


def test_a_run_without_test_numbers_says_its_threshold_was_chosen_on_few_validation_images(start_app, tmp_path):
    """A split of two images a class has no test images: its app page said "No test metrics recorded" and answered
    at a threshold chosen on 1 validation image of each class, which only the training's log had said."""
    run = write_run(tmp_path, "tiny", info={"test_metrics": None, "decision_threshold": 0.79,
                                            "counts": {"train": {"FAKE": 1, "REAL": 1},
                                                       "validation": {"FAKE": 1, "REAL": 1}}})
    (run / "metrics.json").unlink()

    app = start_app("--models", tmp_path)

    said = model_card.few_threshold_images({"num_positive": 1, "num_images": 2}, "FAKE", "REAL")
    assert said and "1 validation image of FAKE and 1 validation image of REAL" in said
    assert "No test metrics recorded for this model." in texts(app)
    assert said in [warning.value for warning in app.warning]


def test_the_headline_test_metrics_say_how_often_the_app_answered_uncertain_on_the_test_images(start_app, tmp_path):
    """The header showed "Test accuracy 0.733" of a model that answered Uncertain on all 30 test images, as its
    model card said and the app did not."""
    write_run(tmp_path, "doubtful", info={"test_metrics": {"accuracy": 0.733, "f1": 0.7, "num_images": 30,
                                                           "uncertain": 30, "accuracy_when_certain": None}})

    app = start_app("--models", tmp_path)

    assert any("Uncertain on 30 of 30 images" in text for text in texts(app))


def test_the_test_figures_follow_the_confidence_slider(start_app, tmp_path):
    """The caption kept model.json's count of Uncertain test answers (at its 0.60) while the slider and the rule
    beneath it moved to 0.90."""
    by_confidence = {"0.50": [4, 0.55], "0.60": [9, 0.5273], "0.90": [38, 0.5769]}
    write_run(tmp_path, "sliding", info={"positive_class": "FAKE", "decision_threshold": 0.579, "test_metrics": {
        "accuracy": 0.547, "f1": 0.54, "num_images": 64, "uncertain": 9, "accuracy_when_certain": 0.5273,
        "uncertain_by_confidence": by_confidence}})
    app = start_app("--models", tmp_path)
    assert any("Uncertain on 9 of 64 images (accuracy 0.5273 on the other 55)" in text for text in texts(app))

    app.slider[0].set_value(0.9).run()

    assert any("Uncertain on 38 of 64 images (accuracy 0.5769 on the other 26)" in text for text in texts(app))
    assert not any("on 9 of 64" in text for text in texts(app))


def test_a_confidence_off_the_slider_s_steps_is_not_read_from_the_nearest_step(tmp_path):
    """model.json's 0.655 read the "0.66" row (9 Uncertain) where its rule at 0.655 says 8."""
    folder = write_run(tmp_path, "edited", threshold=0.655, info={"test_metrics": {
        "accuracy": 0.5, "num_images": 20, "uncertain": 8, "accuracy_when_certain": 0.5,
        "uncertain_by_confidence": {"0.65": [8, 0.5], "0.66": [9, 0.5]}}})

    said = run.read_run(folder).test_uncertain()

    assert said.startswith("Uncertain on 8 of 20 images"), said


def test_a_run_without_the_figures_per_confidence_says_which_confidence_its_count_is_at(start_app, tmp_path):
    write_run(tmp_path, "older", info={"test_metrics": {"accuracy": 0.547, "f1": 0.54, "num_images": 64,
                                                        "uncertain": 9, "accuracy_when_certain": 0.5273}})
    app = start_app("--models", tmp_path)
    app.slider[0].set_value(0.9).run()

    said = next(text for text in texts(app) if "Uncertain on 9 of 64" in text)
    assert "at the confidence threshold 0.60" in said


def test_model_json_s_test_metrics_count_the_uncertain_answers_the_card_counts():
    assert {"uncertain", "accuracy_when_certain", "uncertain_by_confidence"} <= set(evaluation.SUMMARY_KEYS)


def test_a_large_test_set_is_not_called_small(start_app, tmp_path):
    write_run(tmp_path, "large", info={"test_metrics": {"accuracy": 0.91, "f1": 0.9, "num_images": 5000}})

    app = start_app("--models", tmp_path)

    assert any("5,000 test images" in text for text in texts(app))
    assert not any("test set is small" in text for text in texts(app))


def test_the_summary_counts_an_uncertain_answer_in_its_class_as_predict_does(start_app, models_dir):
    broken = ("broken.jpg", b"\xff\xd8\xff\xe0 not really", JPEG)
    app = upload(start_app("--models", models_dir), SURE, UNSURE, DARK, broken)  # patch.png: REAL, uncertain

    assert app.subheader[0].value == "4 images: 1 FAKE, 2 REAL (1 uncertain); 1 not classified"


def test_runs_that_cannot_be_read_are_named_on_the_page_not_called_missing(start_app, tmp_path):
    folder = tmp_path / "copied"
    folder.mkdir()
    (folder / "model.h5").write_bytes(b"copied without its model.json")

    app = start_app("--models", tmp_path)

    page = [element.value for kind in ("error", "info") for element in getattr(app.main, kind)]
    assert not any("no trained model" in text for text in page)
    assert any("`copied`" in text and "model.json is missing" in text for text in page)


def test_an_upload_over_the_pixel_limit_says_how_the_app_s_limit_is_raised(start_app, models_dir):
    app = upload(start_app("--models", models_dir), ("huge.png", png_header_only(20_000, 20_000), PNG))

    assert "streamlit run App.py -- --max-pixels" in app.error[0].value
    assert "DataSplitD1.py" not in app.error[0].value


def test_an_empty_upload_is_called_empty(start_app, models_dir):
    app = upload(start_app("--models", models_dir), ("empty.png", b"", PNG), SURE)

    assert app.error[0].value == "`empty.png` could not be classified: the file is empty"
    assert list(app.dataframe[0].value["error"]) == ["the file is empty", ""]


def test_the_same_file_uploaded_twice_is_noted_on_its_second_card(start_app, models_dir):
    app = upload(start_app("--models", models_dir), SURE, DARK, SURE)

    assert verdicts(app) == ["REAL", "FAKE", "REAL"]
    notes = [caption.value for caption in app.caption if caption.value.startswith("Same file as")]
    assert notes == ["Same file as upload 1, `noise.jpg`."]


def test_arguments_the_app_does_not_know_are_named_on_the_page_and_in_the_terminal(start_app, models_dir, capsys):
    """``streamlit run App.py models/run`` (no ``--`` and no --model) would open another model without a word. The
    terminal's line (as the README says) was logged while argparse's output was captured for the page, and lost."""
    app = start_app("--models", models_dir, "models/mine", "--modle", "x")

    warnings = [warning.value for warning in app.warning]
    assert any("models/mine --modle x" in text and "--model" in text for text in warnings), warnings
    assert "ignoring unknown arguments: models/mine --modle x" in capsys.readouterr().err


def test_a_models_path_that_is_a_file_is_called_a_file(start_app, tmp_path):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"not a folder")

    app = start_app("--models", photo)

    assert any("a file, not a folder" in info.value for info in app.info)


# --- many classes --------------------------------------------------------------------------------

MANY = [f"class {index:02d} with a rather long folder name" for index in range(40)]


@pytest.fixture(scope="module")
def many_models(tmp_path_factory) -> Path:
    """One run of 40 classes, the evidence stand-in: noise is the last class (100%), black leans to the first (16%)."""
    models = tmp_path_factory.mktemp("many_models")
    write_run(models, "many", evidence=True, class_names=MANY)
    return models


def test_a_model_of_many_classes_asks_a_short_question_in_the_title_the_tab_and_the_model_line(
        start_app, many_models, monkeypatch):
    """The title, the browser tab and the model line listed all 40 names: over 1,500 characters each."""
    import streamlit

    titles, set_page_config = [], streamlit.set_page_config
    monkeypatch.setattr(streamlit, "set_page_config", lambda **options: (
        titles.append(options.get("page_title")), set_page_config(**options))[1])
    app = start_app("--models", many_models)

    assert [title.value for title in app.title] == ["🔍 Which of 40 classes?"]
    assert titles[-1] == "Which of 40 classes?"
    line = next(element.value for element in app.markdown if element.value.startswith("Model **many**"))
    assert "40 classes" in line and MANY[20] not in line and len(line) < 200
    [listed] = [expander for expander in app.expander if expander.label == "The 40 classes"]
    assert listed.markdown[0].value == ", ".join(MANY)  # the full list is one click away


def test_a_card_of_a_many_class_model_shows_its_most_probable_classes_sorted(start_app, many_models):
    """It showed a bar for each of the 40 classes in label order, the answer's among them."""
    app = upload(start_app("--models", many_models), SURE)

    assert verdicts(app) == [MANY[-1]]
    bars = [bar.proto.text for bar in app.get("progress")]
    assert len(bars) == 5 and bars[0].startswith(f"{MANY[-1]}: ")
    shown = [float(text.rsplit(": ", 1)[1].removesuffix("%")) for text in bars]
    assert shown == sorted(shown, reverse=True)
    folded = [expander for expander in app.expander if expander.label.startswith("and ")]
    assert [expander.label for expander in folded] == ["and 35 more classes"]
    rest = folded[0].caption[0].value.split(" · ")
    assert len(rest) == 35 and not set(bars) & set(rest)


def test_the_summary_of_a_many_class_model_names_only_the_classes_answered_most_frequent_first(start_app,
                                                                                                many_models):
    """It counted every class, "3 images: 1 class 00 …, 0 class 01 …, 0 class 02 …", 38 of them zero."""
    other = ("other.jpg", encode(random_image(2, 50, 40), "JPEG"), JPEG)
    app = upload(start_app("--models", many_models), DARK, SURE, other)

    assert app.subheader[0].value == f"3 images: 2 {MANY[-1]}, 1 {MANY[0]} (1 uncertain)"


def test_the_table_of_a_many_class_model_shows_the_answer_s_probability_and_its_csv_every_one(start_app, many_models,
                                                                                                monkeypatch):
    """The table had a column per class: 46 columns for 40 classes."""
    downloads = captured_downloads(monkeypatch)
    app = upload(start_app("--models", many_models), SURE, ("notes.png", b"plain text", PNG))

    table = app.dataframe[0].value
    assert list(table.columns) == ["upload", "file", "predicted", "probability", "uncertain", "unfamiliar", "error"]
    assert table["predicted"].iloc[0] == MANY[-1] and table["probability"].iloc[0] == pytest.approx(1.0, abs=1e-3)
    header = downloads[-1][1].splitlines()[0].split(",")
    assert header == ["upload", "file", "predicted", *(f"probability_{name}" for name in MANY), "uncertain",
                      "unfamiliar", "error", "model", "model_saved"]


def test_the_summary_of_a_many_class_model_names_the_most_frequent_answers_and_counts_the_rest(monkeypatch):
    import importlib.util

    from realvsai.metrics import DecisionRule

    spec = importlib.util.spec_from_file_location("app_under_test", APP)
    app = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, app)  # its dataclasses look their module up
    spec.loader.exec_module(app)
    names = [f"c{index:02d}" for index in range(40)]
    answered = [inference.UploadResult(f"{index}.png", np.eye(40, dtype=np.float32)[index])
                for index in (3, 0, 1, 3, 2, 4, 5, 6)]
    failed = [inference.UploadResult("broken.png", error="not an image")]
    rule = DecisionRule()

    assert app.summary_counts(answered + failed, names, rule) == (
        "2 c03, 1 c00, 1 c01, 1 c02, 1 c04, 2 in 2 other classes (0 uncertain); 1 not classified")
    assert app.summary_counts(failed * 2, names, rule) == "2 not classified"


# --- runs that change while the page is open ---------------------------------------------------------------------


def probabilities_on_disk(folder: Path, image: np.ndarray) -> list[float]:
    """What the model.h5 in ``folder`` now answers for ``image``, loaded afresh."""
    classifier, _ = load(folder)
    return [float(p) for p in classifier.predict_prepared(np.stack([classifier.prepare(image)]))[0]]


def shown_probabilities(app: AppTest) -> list[float]:
    return [float(p) for p in app.dataframe[0].value[["probability_FAKE", "probability_REAL"]].iloc[0]]


def saving_meanwhile(monkeypatch, change: Callable[[], None]) -> None:
    """``change()`` once, as the page's next model load ends: what a training writes while the page loads."""
    real_load, pending = run.load_model, [change]

    def load_model(path):
        model = real_load(path)
        while pending:
            pending.pop()()
        return model

    monkeypatch.setattr(run, "load_model", load_model)


def test_answers_are_the_loaded_model_h5_s_when_a_training_saves_another_as_the_page_loads_one(start_app, tmp_path,
                                                                                               monkeypatch):
    """A training saves each better epoch over model.h5. One saved while the page loaded the one before left that
    one's answers cached under the new file's date: every later rerun showed them, beside a card of the new file,
    until model.json changed."""
    image = random_image(5, 40, 40)
    folder = write_run(tmp_path, "training", model=build_stand_in(seed=1))
    app = upload(start_app("--models", tmp_path), ("noise.png", encode(image), PNG))
    next_best = tmp_path / "next_best.h5"
    build_stand_in(seed=3).save(next_best)
    build_stand_in(seed=2).save(folder / "model.h5")  # a better epoch, which the next rerun loads
    saving_meanwhile(monkeypatch, lambda: os.replace(next_best, folder / "model.h5"))  # and the one after it

    app.run()
    app.run()  # nothing changed since the one before

    assert not app.exception
    assert shown_probabilities(app) == pytest.approx(probabilities_on_disk(folder, image), abs=1e-5)


def test_answers_follow_the_model_json_shown_when_a_training_rewrites_it_as_the_page_loads_the_model(
        start_app, tmp_path, monkeypatch):
    """A training's end writes model.json again with what validation found (here: the model is at chance on images
    of this size). Written while the page loaded the model, the answers made with the model.json read before were
    cached under the new file's date: the upload was never flagged, under a card of the new model.json."""
    folder = write_run(tmp_path, "training", evidence=True)
    app = upload(start_app("--models", tmp_path), SURE)
    assert verdicts(app) == ["REAL"]
    by_kind = {"chance": 0.5, "size": {
        "0-63 px": {"num_images": 40, "accuracy": 0.5, "balanced_accuracy": 0.5, "near_chance": True}}}
    final = {**json.loads((folder / "model.json").read_text()), "validation_by_kind": by_kind}
    build_stand_in(evidence=True).save(folder / "model.h5")  # the last save, which the next rerun loads
    saving_meanwhile(monkeypatch, lambda: (folder / "model.json").write_text(json.dumps(final)))

    app.run()
    app.run()  # nothing changed since the one before

    assert verdicts(app) == [":orange[Uncertain]"]
    assert any("at chance" in warning.value and "never called certain" in warning.value for warning in app.warning)


def test_a_model_json_rewritten_to_other_classes_while_the_page_is_open_is_refused_as_at_start(start_app, tmp_path):
    """model.json was checked against model.h5 only as model.h5 loaded: one rewritten to name three classes (copied
    from another run) while the page was open was shown, three classes in the title, over the loaded model's two
    answers."""
    folder = write_run(tmp_path, "run")
    app = upload(start_app("--models", tmp_path), SURE)
    info = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**info, "class_names": ["cat", "dog", "fish"]}))

    app.run()

    assert not app.exception
    assert "outputs 2 classes" in app.error[0].value
    assert not verdicts(app)


def rerun_as_the_browser_does(app: AppTest, held_label: str) -> AppTest:
    """The next click in a browser that holds the sidebar's choice as ``held_label``: a browser sends back the label
    it shows until the page sets another (AppTest sends the label of the value the page chose)."""
    box = app.selectbox[0]
    states = app._tree.get_widget_states()
    for state in states.widgets:
        if state.id == box.id:
            state.string_value = box.proto.raw_value if box.proto.set_value else held_label
    app._run(states)
    assert not app.exception, app.exception
    return app


def test_a_chosen_run_retrained_under_its_name_stays_chosen_in_a_browser(start_app, tmp_path):
    """A browser holds the sidebar's choice by its label, the run's name and date. Retrained under its name
    (DataDeleter.py, then ModelTraining.py --name), the run has another date; never told, the browser sent the old
    label back with the next click, which no run had: the page served the newest run instead, saying the one chosen,
    `older · 2024-01-01 00:00`, was no longer available."""
    write_run(tmp_path, "older", created="2024-01-01T00:00:00+00:00")
    write_run(tmp_path, "newest", created="2025-06-01T12:00:00+00:00", evidence=True)
    app = start_app("--models", tmp_path)
    app.selectbox[0].set_value(str(tmp_path / "older")).run()
    held = app.selectbox[0].proto.options[app.selectbox[0].index]
    shutil.rmtree(tmp_path / "older")
    write_run(tmp_path, "older", created="2024-02-01T00:00:00+00:00")

    seen = []
    for _ in range(2):  # two clicks
        held = rerun_as_the_browser_does(app, held).selectbox[0].proto.raw_value or held
        card = next(text for text in texts(app) if text.startswith("Model **"))
        seen.append((held, card.split(" · classes")[0], [warning.value for warning in app.warning]))

    # The sidebar shows the run that answers, and nothing is said to be gone.
    assert seen == [("older · 2024-02-01 00:00", "Model **older** · trained 2024-02-01 00:00", [])] * 2


def answered_by(app: AppTest) -> list[str]:
    return [caption.value for caption in app.caption if caption.value.startswith("Answered by ")]


def test_the_answers_name_the_model_that_gave_them_clicks_after_the_chosen_run_went_away(start_app, tmp_path):
    """The chosen run deleted, the next rerun said once that another run answered the same uploads; from the click
    after it on, nothing beside the answers said which model gave them, only the card at the top of the page."""
    write_run(tmp_path, "older", created="2024-01-01T00:00:00+00:00")
    write_run(tmp_path, "newest", created="2025-06-01T12:00:00+00:00", evidence=True)
    app = start_app("--models", tmp_path)
    app.selectbox[0].set_value(str(tmp_path / "older")).run()
    upload(app, SURE)
    assert [text.split("'s model.h5 of ")[0] for text in answered_by(app)] == ["Answered by `older`"]

    shutil.rmtree(tmp_path / "older")
    app.run()
    app.run()

    assert [text.split("'s model.h5 of ")[0] for text in answered_by(app)] == ["Answered by `newest`"]


def test_answers_that_changed_as_the_chosen_run_s_model_h5_was_saved_again_say_so(start_app, tmp_path):
    """A training saved the chosen run's model.h5 again (a better epoch, or the run retrained under its name): the
    same uploads' answers changed at the next click, under the same run's name, without a word."""
    folder = write_run(tmp_path, "training", model=build_stand_in(seed=1))
    app = upload(start_app("--models", tmp_path), SURE)
    assert not [info.value for info in app.info if "saved again" in info.value]

    build_stand_in(seed=2).save(folder / "model.h5")
    app.run()

    [said] = [info.value for info in app.info if "saved again" in info.value]
    assert said.startswith("`training`'s model.h5 was saved again") and "the answers below are the new one's" in said
    app.run()
    assert not [info.value for info in app.info if "saved again" in info.value]  # said once


def test_two_runs_of_one_name_and_date_have_labels_of_their_own_and_each_can_be_chosen(start_app, tmp_path):
    """`--model backup/older` beside `models/older`, trained the same minute (a copy): the sidebar listed both as
    `older · 2024-01-01 00:00`, and the browser, which holds the choice by its label, sent it back at the next click
    as the last run of that label: `models/older` answered though the page had opened `backup/older`."""
    write_run(tmp_path / "models", "older", created="2024-01-01T00:00:00+00:00", evidence=True)
    write_run(tmp_path / "backup", "older", created="2024-01-01T00:00:00+00:00")
    app = start_app("--models", tmp_path / "models", "--model", tmp_path / "backup" / "older")

    labels = app.selectbox[0].proto.options
    assert len(set(labels)) == 2 and all(label.startswith("older · 2024-01-01 00:00") for label in labels)
    for chosen in ("backup", "models", "backup"):
        app.selectbox[0].set_value(str(tmp_path / chosen / "older")).run()
        upload(app, SURE)
        assert app.selectbox[0].value == str(tmp_path / chosen / "older")


@pytest.mark.parametrize("went", ["deleted", "renamed", "lost its model.h5", "emptied"])
def test_the_run_that_answers_after_the_chosen_one_went_away_is_named_with_why_it_went(start_app, tmp_path, went):
    """The page said the chosen run was "no longer available (its folder was removed, or it can no longer be opened:
    the sidebar says why)": two guesses, the reason left to find among the sidebar's notes."""
    write_run(tmp_path, "older", created="2024-01-01T00:00:00+00:00")
    write_run(tmp_path, "newest", created="2025-06-01T12:00:00+00:00", evidence=True)
    app = start_app("--models", tmp_path)
    app.selectbox[0].set_value(str(tmp_path / "older")).run()

    if went == "deleted":
        shutil.rmtree(tmp_path / "older")
    elif went == "renamed":
        (tmp_path / "older").rename(tmp_path / "older-v1")
    elif went == "lost its model.h5":
        (tmp_path / "older" / "model.h5").unlink()
    else:
        for name in ("model.h5", "model.json"):
            (tmp_path / "older" / name).unlink()
    app.run()

    [gone] = [warning.value for warning in app.warning if "no longer available" in warning.value]
    assert gone.startswith("The model you chose, `older`, is no longer available: ")
    assert "`newest` answers instead" in gone
    why = {"deleted": "was deleted or renamed", "renamed": "was deleted or renamed",
           "lost its model.h5": f"`older`: {tmp_path / 'older' / 'model.h5'} is missing beside its model.json",
           "emptied": f"its folder `{tmp_path / 'older'}` no longer holds a trained run"}[went]
    assert why in gone


def test_a_chosen_run_that_comes_back_is_offered_again_and_the_run_said_to_answer_still_answers(start_app, tmp_path):
    """Renamed away and back while the page was open: the page said `newest` answered instead; it goes on answering
    (a run the user did not pick again does not take over the answers unannounced), and `older` is there to pick."""
    write_run(tmp_path, "older", created="2024-01-01T00:00:00+00:00")
    write_run(tmp_path, "newest", created="2025-06-01T12:00:00+00:00", evidence=True)
    app = upload(start_app("--models", tmp_path), SURE)
    app.selectbox[0].set_value(str(tmp_path / "older")).run()
    (tmp_path / "older").rename(tmp_path / "older-v1")
    app.run()
    (tmp_path / "older-v1").rename(tmp_path / "older")

    app.run()

    assert app.selectbox[0].value == str(tmp_path / "newest")
    assert [label.split(" · ")[0] for label in app.selectbox[0].options] == ["newest", "older"]
    assert [text.split("'s model.h5 of ")[0] for text in answered_by(app)] == ["Answered by `newest`"]
    assert not [warning.value for warning in app.warning if "no longer available" in warning.value]


def test_switching_among_three_runs_loads_each_model_once(start_app, tmp_path, monkeypatch):
    """Two models were kept loaded: going round three runs in the sidebar loaded a model at every switch (a ResNet101:
    seconds each). A fourth run goes beyond what is kept (a ResNet101 holds about 170 MB)."""
    loaded = []
    real_load = run.load_model
    monkeypatch.setattr(run, "load_model", lambda path: loaded.append(Path(path).parent.name) or real_load(path))
    names = ["first", "second", "third"]
    for day, name in enumerate(names, start=1):
        write_run(tmp_path, name, created=f"2024-01-0{day}T00:00:00+00:00")
    app = start_app("--models", tmp_path)

    for name in names * 2:
        app.selectbox[0].set_value(str(tmp_path / name)).run()

    assert sorted(loaded) == names
    write_run(tmp_path, "fourth", created="2024-01-04T00:00:00+00:00")
    for name in [*names, "fourth"] * 2:
        app.selectbox[0].set_value(str(tmp_path / name)).run()
    assert len(loaded) > 4  # kept: a bounded number


@pytest.mark.parametrize("set_by_user", [False, True])
def test_the_served_model_takes_the_gpu_memory_it_needs_not_all_of_it(start_app, tmp_path, monkeypatch, set_by_user):
    """On a GPU, TensorFlow takes nearly all its memory and JAX three quarters of it when the app loads a model: a
    training started beside the app on the same GPU then ran out of memory. The app asks both to take what they use
    (read when the backend first uses the GPU); a user's own setting is kept."""
    for name in ("TF_FORCE_GPU_ALLOW_GROWTH", "XLA_PYTHON_CLIENT_PREALLOCATE"):
        if set_by_user:
            monkeypatch.setenv(name, "mine")
        else:
            monkeypatch.delenv(name, raising=False)
    (tmp_path / "models").mkdir()
    start_app("--models", tmp_path / "models")

    expected = ("mine", "mine") if set_by_user else ("true", "false")
    assert (os.environ.get("TF_FORCE_GPU_ALLOW_GROWTH"), os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE")) == expected
