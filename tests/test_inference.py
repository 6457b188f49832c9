"""Tests for realvsai.inference: run folders, loading, the batched predict path, uploads, Grad-CAM."""

from __future__ import annotations

import io
import json
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import PHOTO_LIMIT, REPO, phone_photo, predictor, traced_peak, transparent_images, write_image
from PIL import Image

from realvsai import image_stats, inference, run
from realvsai.config import CONFIDENCE_THRESHOLD
from realvsai.errors import UserError
from realvsai.metrics import DecisionRule
from realvsai.model import SquareResize

CLASS_NAMES = ["FAKE", "REAL"]
IMAGE_SIZE = 32


# ------------------------------------------------------------------------------ stand-in models


def build_stand_in(class_names=CLASS_NAMES, image_size: int = IMAGE_SIZE, evidence: bool = False, seed: int = 0,
                   augmentation=None):
    """A tiny model with the contract's layer names (``preprocess`` is a Rescaling layer here).

    With ``evidence`` its weights are set by hand: the backbone measures local brightness, and the
    last class's score grows with it, so a bright patch on black is evidence for that class, there.
    ``augmentation`` (a block named "augmentation") goes first, as in the real model. The resize is the real
    model's (the centre square).
    """
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 3))
    pixels = augmentation(inputs) if augmentation is not None else inputs
    pixels = SquareResize(image_size, name="resize")(pixels)
    pixels = keras.layers.Rescaling(1 / 255, name="preprocess")(pixels)
    backbone_inputs = keras.Input((image_size, image_size, 3))
    features = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(backbone_inputs)
    features = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv2")(features)
    backbone = keras.Model(backbone_inputs, features, name="backbone")
    hidden = backbone(pixels, training=False)
    hidden = keras.layers.GaussianNoise(0.1, name="head_noise")(hidden)
    hidden = keras.layers.GlobalAveragePooling2D(name="head_pool")(hidden)
    hidden = keras.layers.Dense(8, activation="relu", name="head_dense")(hidden)
    hidden = keras.layers.Dropout(0.4, name="head_dropout")(hidden)
    outputs = keras.layers.Dense(len(class_names), activation="softmax", name="predictions", dtype="float32")(hidden)
    model = keras.Model(inputs, outputs)
    if evidence:
        conv1, conv2 = backbone.get_layer("conv1"), backbone.get_layer("conv2")
        conv1.set_weights([np.full((3, 3, 3, 4), 1 / 27, np.float32), np.zeros(4, np.float32)])
        conv2.set_weights([np.full((3, 3, 4, 8), 1 / 36, np.float32), np.zeros(8, np.float32)])
        dense = np.zeros((8, 8), np.float32)
        dense[0, 0] = 1.0
        model.get_layer("head_dense").set_weights([dense, np.zeros(8, np.float32)])
        scores = np.zeros((8, len(class_names)), np.float32)
        scores[0, -1] = 40.0
        model.get_layer("predictions").set_weights([scores, np.array([2.0] + [0.0] * (len(class_names) - 1),
                                                                     np.float32)])
    return model


def write_run(models_dir: Path, name: str, model=None, *, created: str | None = "2025-01-02T03:04:05+00:00",
              class_names=CLASS_NAMES, image_size: int = IMAGE_SIZE, threshold: float = 0.6,
              metrics: dict | None = None, evidence: bool = False, info: dict | None = None) -> Path:
    """Writes ``models_dir/name/`` as training does: model.h5, model.json and metrics.json.

    ``info`` adds to (or replaces) model.json's keys.
    """
    folder = Path(models_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    model = model if model is not None else build_stand_in(class_names, image_size, evidence=evidence)
    model.save(folder / "model.h5")
    content = {"class_names": list(class_names), "image_size": image_size, "positive_class": class_names[0],
               "backbone": "stand-in", "weights": "none", "confidence_threshold": threshold,
               "test_metrics": {"accuracy": 0.91, "f1": 0.9, "roc_auc": 0.95}}
    if created is not None:
        content["created"] = created
    (folder / "model.json").write_text(json.dumps({**content, **(info or {})}))
    (folder / "metrics.json").write_text(json.dumps(metrics or {"accuracy": 0.91, "f1": 0.9}))
    return folder


def encode(pixels: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **options)
    return buffer.getvalue()


def predict(classifier: inference.Classifier, images: list[np.ndarray]) -> np.ndarray:
    """Probabilities of decoded images in one batch, through the classifier's own prepare step."""
    return classifier.predict_prepared(np.stack([classifier.prepare(image) for image in images]))


def random_image(seed: int, width: int, height: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def bright_patch(size: int = 64, corner: str = "top_left") -> np.ndarray:
    image = np.zeros((size, size, 3), np.uint8)
    quarter = size // 4
    rows = slice(0, quarter) if corner.startswith("top") else slice(size - quarter, size)
    cols = slice(0, quarter) if corner.endswith("left") else slice(size - quarter, size)
    image[rows, cols] = 255
    return image


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, with almost no pixel data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def load(folder: Path) -> tuple[inference.Classifier, run.ModelRun]:
    """A run folder's classifier, loaded as the app loads it."""
    model, loaded = run.load_run(folder)
    return inference.Classifier.for_run(model, loaded), loaded


@pytest.fixture(scope="module")
def stand_in_run(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("models"), "stand_in")


@pytest.fixture(scope="module")
def classifier(stand_in_run) -> inference.Classifier:
    return load(stand_in_run)[0]


@pytest.fixture(scope="module")
def evidence_classifier(tmp_path_factory) -> inference.Classifier:
    model = build_stand_in(evidence=True)
    return inference.Classifier(model, CLASS_NAMES, IMAGE_SIZE)


# ---------------------------------------------------------------------------------- run folders


def test_list_runs_puts_the_newest_first(tmp_path):
    model = build_stand_in()
    write_run(tmp_path, "older", model, created="2024-05-01T10:00:00+00:00")
    write_run(tmp_path, "newer", model, created="2025-05-01T10:00:00")  # naive: local time
    write_run(tmp_path, "middle", model, created="2024-12-01T10:00:00+02:00")

    runs, skipped = run.list_runs(tmp_path)

    assert [run.name for run in runs] == ["newer", "middle", "older"]
    assert skipped == []


def test_list_runs_skips_a_folder_with_a_broken_model_json_and_says_why(tmp_path):
    write_run(tmp_path, "good")
    broken = write_run(tmp_path, "broken")
    (broken / "model.json").write_text("{not json")
    (tmp_path / "training_in_progress").mkdir()  # no model.h5 yet: ignored, not an error

    runs, skipped = run.list_runs(tmp_path)

    assert [run.name for run in runs] == ["good"]
    assert [folder.name for folder, _ in skipped] == ["broken"]
    assert "model.json" in skipped[0][1]


def test_list_runs_skips_a_run_that_has_not_finished_training_and_says_how_to_finish_it(tmp_path):
    """model.h5 holds the best epoch from the first on: a run still training (or killed) must not be served as
    finished, before its final evaluation chose the decision threshold."""
    write_run(tmp_path, "finished", created="2024-05-01T10:00:00+00:00")
    unfinished = write_run(tmp_path, "unfinished", created="2025-05-01T10:00:00+00:00")
    (unfinished / "backup").mkdir()
    (unfinished / "backup" / "config.json").write_text("{}")  # written as a run starts, removed as it finishes

    runs, skipped = run.list_runs(tmp_path)

    assert [run.name for run in runs] == ["finished"] and [folder for folder, _ in skipped] == [unfinished]
    assert "has not finished training" in skipped[0][1] and "--resume --name unfinished" in skipped[0][1]


def test_a_run_still_training_is_said_to_be_training_not_told_to_resume(tmp_path):
    """After its first epoch, a run that was training at that moment read "Finish it with ... --resume", which the
    training's own claim on the folder then refused."""
    from realvsai.files import working_on

    training = write_run(tmp_path, "training")
    (training / "backup").mkdir()
    (training / "backup" / "config.json").write_text("{}")

    with working_on([training], "ModelTraining.py"):
        (_, why), = run.list_runs(tmp_path)[1]

    assert "is training now in ModelTraining.py" in why and "best model so far" in why and "--resume" not in why
    assert why.endswith(f"no final test numbers yet. Open it with --model {training} to try it as it is"), why


def test_list_runs_names_a_run_without_model_h5_instead_of_leaving_it_out_silently(tmp_path):
    """A run killed in its first epoch (model.json and backup/ written, no best model yet) and a run copied without
    its model.h5 vanished from the app: with no other run, it said to train the demo."""
    killed = write_run(tmp_path, "killed")
    (killed / "model.h5").unlink()
    (killed / "backup").mkdir()
    (killed / "backup" / "config.json").write_text("{}")
    copied = write_run(tmp_path, "copied")
    (copied / "model.h5").unlink()
    (tmp_path / "notes").mkdir()  # not a run: left out as before
    (tmp_path / "notes" / "todo.txt").write_text("train more")

    runs, skipped = run.list_runs(tmp_path)

    assert runs == [] and [folder.name for folder, _ in skipped] == ["copied", "killed"]
    reasons = dict(skipped)
    assert "model.h5 is missing beside its model.json" in reasons[copied]
    assert "before its first epoch ended" in reasons[killed] and "--resume --name killed" in reasons[killed]
    with pytest.raises(UserError, match=r"before its first epoch ended\. Finish it with python ModelTraining\.py "
                                        r"--resume --name killed"):
        run.read_run(killed)


def test_a_model_h5_that_is_a_folder_is_said_to_be_one_not_to_be_missing(tmp_path):
    """A TensorFlow SavedModel saved under the name model.h5 (a folder) was called missing: "copy the run folder
    whole", which the user had done."""
    folder = write_run(tmp_path, "saved_model")
    (folder / "model.h5").unlink()
    (folder / "model.h5" / "variables").mkdir(parents=True)
    (folder / "model.h5" / "saved_model.pb").write_bytes(b"")

    for given in (folder, folder / "model.h5"):
        with pytest.raises(UserError) as refused:
            run.read_run(given)
        message = str(refused.value)
        assert message.startswith(f"{folder / 'model.h5'} is a folder, not a Keras HDF5 file"), message
        assert "missing" not in message


def test_a_stopped_run_whose_model_h5_went_after_epochs_ended_is_not_said_to_have_stopped_in_its_first(tmp_path):
    """The app, --predict and --evaluate said "its training stopped before its first epoch ended. Finish it with ...
    --resume" of a run of 10 epochs whose model.h5 was deleted, and that --resume then refused."""
    stopped = write_run(tmp_path, "stopped")
    (stopped / "model.h5").unlink()
    (stopped / "backup").mkdir()
    (stopped / "backup" / "config.json").write_text("{}")
    (stopped / "history.csv").write_text("epoch,phase,val_cross_entropy\n1,full,0.6\n2,full,0.7\n")

    with pytest.raises(UserError) as refused:
        run.read_run(stopped)
    assert str(refused.value) == (f"{stopped} has no model.h5, though 2 epochs of its training ended: the file was "
                                  "moved or deleted. Put it back and finish the run with python ModelTraining.py "
                                  f"--resume --name stopped --out {tmp_path}, or train a new run under another "
                                  "--name.")


def test_a_run_training_in_its_first_epoch_is_said_to_be_training_not_told_to_resume(tmp_path):
    """The app listed it with "its training is running, or stopped ... Finish it with ... --resume", a command the
    running training's claim then refused."""
    from realvsai.files import working_on

    training = write_run(tmp_path, "training")
    (training / "model.h5").unlink()
    (training / "backup").mkdir()
    (training / "backup" / "config.json").write_text("{}")

    with working_on([training], "ModelTraining.py"):
        reasons = dict(run.list_runs(tmp_path)[1])

    assert f"is training now in ModelTraining.py (process {os.getpid()})" in reasons[training]
    assert "--resume" not in reasons[training]


def test_a_run_that_has_not_finished_shows_no_test_numbers(tmp_path):
    """Stopped between writing metrics.json and adding its decision rule to model.json, a run showed the test
    numbers of the threshold rule beside a caption of the rule it answers by, the most probable class."""
    unfinished = write_run(tmp_path, "unfinished", info={"test_metrics": None},
                           metrics={"accuracy": 0.65, "f1": 0.588, "decision_threshold": 0.474, "num_images": 20})
    (unfinished / "backup").mkdir()
    (unfinished / "backup" / "config.json").write_text("{}")

    opened = run.read_run(unfinished)

    assert opened.unfinished and opened.test_metrics() == {} and opened.num_test_images() is None


def test_a_run_whose_backup_was_cut_short_in_its_removal_is_finished_for_the_app_and_resume_alike(tmp_path):
    """A kill in the last step of a run, removing backup/, left part of it (backup/full/backup.json, or an empty
    backup/): the app skipped the run as "not finished, finish it with --resume", and --resume said it had
    finished, nothing to resume. Only backup/config.json makes a run resumable, for both."""
    from realvsai.config import TrainConfig, resolve_run_dir

    done = write_run(tmp_path, "done")
    (done / "backup" / "full").mkdir(parents=True)
    (done / "backup" / "full" / "backup.json").write_text("{}")

    runs, skipped = run.list_runs(tmp_path)

    assert [found.name for found in runs] == ["done"] and not skipped
    with pytest.raises(UserError, match="has finished training; there is nothing to resume"):
        resolve_run_dir(TrainConfig(out=tmp_path, name="done"), resume=True)


def test_read_run_of_a_file_that_is_no_model_says_so(tmp_path):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"not a model")

    with pytest.raises(UserError, match=r"photo\.jpg is a file, but a run folder \(or its model\.h5 or model\.json\)"):
        run.read_run(photo)


def test_list_runs_of_a_missing_folder_is_empty(tmp_path):
    assert run.list_runs(tmp_path / "nothing") == ([], [])


def test_read_run_of_a_missing_folder_names_the_folder(tmp_path):
    """``--predict models/nonexist`` said models/nonexist/model.h5 does not exist: a file the user never named."""
    with pytest.raises(UserError, match=rf"^{re.escape(str(tmp_path / 'nonexist'))} does not exist\. Give a run "):
        run.read_run(tmp_path / "nonexist")


def test_read_run_takes_the_model_file_as_well_as_the_folder(stand_in_run):
    by_file = run.read_run(stand_in_run / "model.h5")

    assert by_file.path == stand_in_run
    assert by_file.class_names == CLASS_NAMES
    assert by_file.image_size == IMAGE_SIZE
    assert by_file.confidence_threshold == 0.6


def test_read_run_without_model_json_says_it_is_needed(tmp_path):
    (tmp_path / "model.h5").write_bytes(b"")

    with pytest.raises(UserError, match=r"model\.json is missing"):
        run.read_run(tmp_path)


def test_read_run_rejects_a_model_json_without_class_names(tmp_path):
    folder = write_run(tmp_path, "run")
    (folder / "model.json").write_text(json.dumps({"image_size": 32}))

    with pytest.raises(UserError, match="class_names"):
        run.read_run(folder)


@pytest.mark.parametrize(("field", "value"), [
    ("class_names", ["ONLY"]), ("class_names", "FAKE,REAL"), ("image_size", "32"), ("image_size", 0),
    ("input_mode", "tiles"), ("positive_class", "CAT"), ("decision_threshold", 1.5),
    ("decision_threshold", "0.3"), ("confidence_threshold", "high"),
    ("training_images", {"min_side": 32}), ("config", [1, 2]),
    ("training_images", {"min_side": 32, "max_side": 32, "formats": ["PNG"], "images": 8, "grayscale": "some"}),
    ("training_images", {"min_side": 32, "max_side": 32, "formats": ["PNG"], "images": 8, "grayscale": 9}),
    ("training_images", {"min_side": 32, "max_side": 32, "formats": ["PNG"], "images": 8}),  # grayscale not counted
    ("training_images", {"min_side": float("nan"), "max_side": 32, "formats": ["PNG"]}),  # json writes NaN
    ("class_names", ["FAKE", "FAKE"]), ("image_size", True), ("confidence_threshold", 1.5)])
def test_a_malformed_model_json_is_refused_naming_the_file_and_the_field(tmp_path, field, value):
    folder = write_run(tmp_path, "run", model=build_stand_in(), info={field: value})

    with pytest.raises(run.ModelInfoError) as raised:
        run.read_run(folder)

    message = str(raised.value)
    assert str(folder / "model.json") in message and field in message and "\n" not in message


# Fields the model card and the evaluation read, of the wrong type: each ended --evaluate in a traceback after all
# its predicting.
@pytest.mark.parametrize(("field", "value"), [
    ("best_epoch", "2"), ("best_epoch", [2]), ("counts", [1, 2]), ("counts", {"train": [1, 2]}),
    ("counts", {"train": {"FAKE": "3"}}), ("counts", {"train": {"FAKE": -3}}), ("augmented_copies", "3"),
    ("augmented_copies", {"count": "3"}), ("augmented_copies", {"count": 3, "settings": "strong"}),
    ("backbone", 101), ("weights", ["imagenet"]), ("preprocessing", 1), ("created", 2025),
    ("shortcut_warning", ["size"]), ("monitor", "loss"), ("validation_by_kind", "by size"),
    ("validation_by_kind", {"size": [1]}), ("validation_by_kind", {"chance": "half"}),
    ("validation_by_kind", {"size": {"0-63 px": {"num_images": "4", "accuracy": 0.5, "balanced_accuracy": 0.5}}}),
    ("validation_by_kind", {"size": {"0-63 px": {"num_images": 4, "accuracy": 0.5, "balanced_accuracy": None}}}),
    ("validation_by_kind", {"size": {"0-63 px": {"num_images": 4, "balanced_accuracy": 0.5}}}),
    ("validation_by_kind", {"size": {"0-63 px": {"num_images": 4, "accuracy": 0.5, "balanced_accuracy": 0.5,
                                                  "missing_classes": "FAKE"}}})])
def test_a_wrong_typed_field_the_model_card_reads_is_refused_in_one_line_as_model_json_is_read(tmp_path, field,
                                                                                               value):
    folder = write_run(tmp_path, "run", model=build_stand_in(), info={field: value})

    with pytest.raises(run.ModelInfoError) as raised:
        run.read_run(folder)

    message = str(raised.value)
    assert message.startswith(f"{folder / 'model.json'}: {field} must be ") and "\n" not in message, message


def test_the_records_training_writes_beside_the_model_are_read_whether_filled_or_null(tmp_path):
    by_kind = {"chance": 0.5, "near_chance_margin": 0.05, "source_unit": "dataset", "size": {"0-63 px": {
        "num_images": 8, "accuracy": 0.75, "balanced_accuracy": 0.75, "chance": 0.5, "near_chance": True,
        "missing_classes": []}}, "source": {"cifake": {"num_images": 8, "accuracy": 1, "balanced_accuracy": 1}}}
    filled = {"best_epoch": {"epoch": 2, "phase": "head", "val_cross_entropy": 0.4},
              "counts": {"train": {"FAKE": 3, "REAL": 4}, "validation": {"FAKE": 1, "REAL": 0}},
              "augmented_copies": {"count": 2, "settings": {"copies": 1, "preset": "detector"}},
              "backbone": "ResNet101", "weights": "imagenet", "preprocessing": "caffe", "shortcut_warning": "sizes",
              "validation_by_kind": by_kind, "config": {"demo": False, "l2": 0.0001}}
    nulls = {**dict.fromkeys(filled), "augmented_copies": {"count": 2, "settings": None}}

    assert run.read_run(write_run(tmp_path, "filled", info=filled)).info.get("counts") == filled["counts"]
    assert run.read_run(write_run(tmp_path, "nulls", info=nulls)).info.get("best_epoch") is None


def test_evaluate_refuses_a_wrong_typed_best_epoch_before_it_predicts_an_image(tmp_path, make_class_folder, capsys):
    """"best_epoch": "2" ended --evaluate in a traceback from the model card, after predicting every image, and left
    its output folder half-written."""
    import ModelTraining

    folder = write_run(tmp_path / "models", "run", info={"best_epoch": "2"})
    make_class_folder(tmp_path / "test", {"FAKE": 2, "REAL": 2})

    code = ModelTraining.main(["--evaluate", str(folder), "--test-dir", str(tmp_path / "test"), "--quiet"])

    assert code == 1 and capsys.readouterr().err.strip().splitlines() == [
        f"error: {folder / 'model.json'}: best_epoch must be an object of the best epoch's figures or null, not '2'. "
        "Restore the model.json that ModelTraining.py wrote beside the model, or train the model again."]
    assert not (folder / "eval-test").exists()


def test_a_model_json_saved_with_a_byte_order_mark_is_read(tmp_path):
    """Saved by a Windows editor, model.json "cannot be read (Unexpected UTF-8 BOM ...)"."""
    folder = write_run(tmp_path, "run")
    (folder / "model.json").write_text((folder / "model.json").read_text(), encoding="utf-8-sig")

    assert run.read_run(folder).class_names == CLASS_NAMES


def test_an_empty_model_json_is_said_to_be_empty(tmp_path):
    folder = write_run(tmp_path, "run")
    (folder / "model.json").write_text("  \n")

    with pytest.raises(UserError) as refused:
        run.read_run(folder)
    assert str(refused.value) == f"{folder / 'model.json'} is empty. Train the model again or restore the file."


def test_model_info_keeps_every_key_as_read_and_gives_the_decision_rule(tmp_path):
    folder = write_run(tmp_path, "run", info={"decision_threshold": 0.25, "counts": {"train": {"FAKE": 3}}})

    info = run.read_run(folder).info

    assert info.class_names == ("FAKE", "REAL") and info.input_mode == "resize"
    assert info.get("counts") == {"train": {"FAKE": 3}} and info["class_names"] == ["FAKE", "REAL"]
    assert info.rule() == DecisionRule(0.6, 0.25, positive_index=0)


def test_model_json_thresholds_may_be_0_or_1_and_a_null_confidence_threshold_is_the_default():
    def info(**content) -> run.ModelInfo:
        return run.ModelInfo.from_dict({"class_names": CLASS_NAMES, "image_size": IMAGE_SIZE, **content})

    assert info(decision_threshold=0.0, confidence_threshold=None).decision_threshold == 0.0
    assert info(decision_threshold=0.0, confidence_threshold=None).confidence_threshold == CONFIDENCE_THRESHOLD
    assert info(decision_threshold=1.0, confidence_threshold=1.0).rule() == DecisionRule(1.0, 1.0, positive_index=1)


def test_a_crops_mode_model_decodes_an_image_at_its_full_size_and_a_resize_model_reduced_to_its_own():
    crops, resize = (run.ModelInfo(tuple(CLASS_NAMES), IMAGE_SIZE, mode) for mode in ("crops", "resize"))

    assert (crops.crop_size, crops.decode_size) == (IMAGE_SIZE, None)
    assert (resize.crop_size, resize.decode_size) == (None, IMAGE_SIZE)


def test_predict_and_evaluate_refuse_a_malformed_model_json_with_one_line_naming_the_field(tmp_path):
    from conftest import one_error_line, run_script

    folder = write_run(tmp_path, "run", info={"image_size": -3})
    (tmp_path / "in").mkdir()
    Image.fromarray(random_image(1, 32, 32)).save(tmp_path / "in" / "a.png")

    for flags in (["--predict", folder, "--input", tmp_path / "in"],
                  ["--evaluate", folder, "--test-dir", tmp_path / "in"]):
        line = one_error_line(run_script("ModelTraining.py", *flags))
        assert str(folder / "model.json") in line and "image_size" in line


def test_class_score_gradient_is_the_gradient_on_this_backend():
    from keras import ops

    features = np.arange(6, dtype=np.float32).reshape(1, 2, 3)

    value, gradient = inference.class_score_gradient(lambda x: ops.sum(x * x) - ops.mean(x), features)

    assert float(np.asarray(value)) == pytest.approx(float((features**2).sum() - features.mean()))
    np.testing.assert_allclose(np.asarray(gradient), 2 * features - 1 / 6, rtol=1e-6)


@pytest.mark.parametrize("input_mode", ["resize", "crops"])
def test_uploads_are_classified_and_explained_under_jax_without_tensorflow(tmp_path, input_mode):
    pytest.importorskip("jax")
    script = tmp_path / "serve.py"
    script.write_text(
        "import sys\n"
        "class NoTensorFlow:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'tensorflow':\n"
        "            raise ImportError('TensorFlow is blocked in this test')\n"
        "sys.meta_path.insert(0, NoTensorFlow())\n"
        "import numpy as np\n"
        "from test_inference import build_stand_in, encode, random_image\n"
        "from realvsai import inference\n"
        f"classifier = inference.Classifier(build_stand_in(evidence=True), ['FAKE', 'REAL'], 32, {input_mode!r})\n"
        "uploads = [(f'{i}.png', encode(random_image(i, 40 + i, 30))) for i in range(3)]\n"
        "results = inference.classify_uploads(classifier, uploads, batch_size=2)\n"
        "print([round(float(result.probabilities.sum()), 4) for result in results])\n"
        "print(inference.explain_result(classifier, results[0], 1).shape)\n"
        "print('tensorflow' in sys.modules)\n")
    finished = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                              cwd=REPO, env={**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3",
                                             "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])})

    assert finished.returncode == 0, finished.stderr[-3000:]
    assert finished.stdout.splitlines()[-3:] == ["[1.0, 1.0, 1.0]", "(30, 40, 3)", "False"]


@pytest.mark.parametrize("info", [{"config": {"epochs": 1, "demo": True}}, {"demo": True}])
def test_a_run_trained_on_demo_data_is_a_demo(tmp_path, info):
    assert run.read_run(write_run(tmp_path, "demo", info=info)).demo
    assert not run.read_run(write_run(tmp_path, "real", info={"config": {"demo": False}})).demo


@pytest.mark.parametrize(("info", "field"), [({"config": {"epochs": 1, "demo": "no"}}, "config.demo"),
                                             ({"demo": "no"}, "demo"), ({"demo": 1}, "demo")])
def test_a_demo_mark_that_is_not_true_or_false_is_refused_not_taken_for_a_demo(tmp_path, info, field):
    """"demo": "no" turned the demo banner on: any value but false or null read as true."""
    folder = write_run(tmp_path, "run", info=info)

    with pytest.raises(run.ModelInfoError) as refused:
        run.read_run(folder)
    assert str(refused.value).startswith(f"{folder / 'model.json'}: {field} must be true or false, not "), refused.value


def test_the_headline_of_an_older_model_json_is_its_accuracy_at_the_threshold(tmp_path):
    folder = write_run(tmp_path, "run", info={"test_metrics": {"accuracy": 0.9, "f1": 0.8, "precision": 0.7,
                                                               "accuracy_at_threshold": 0.85, "f1_at_threshold": 0.83}})

    assert run.read_run(folder).test_metrics() == {"accuracy": 0.85, "f1": 0.83}


def test_an_older_model_json_with_sources_by_file_still_loads_and_flags_a_size_at_chance(tmp_path):
    by_kind = {"chance": 0.5, "source": {"/home/someone/raw/train/FAKE/00000.jpg": {
                   "num_images": 1, "accuracy": 1.0, "balanced_accuracy": 1.0, "near_chance": False}},
               "size": {"64-255 px": {"num_images": 40, "accuracy": 0.5, "balanced_accuracy": 0.5,
                                      "near_chance": True}}}
    classifier, loaded = load(write_run(tmp_path, "old", info={"validation_by_kind": by_kind}))

    (result,) = inference.classify_uploads(classifier, [("photo.png", encode(random_image(1, 100, 80)))],
                                           info=loaded.info)

    assert result.ok and "64-255 px" in result.unfamiliar
    assert run.validation_by_kind(by_kind) == {"chance": 0.5, "size": by_kind["size"]}  # no per-file rows


def test_a_segmentation_mask_uploaded_beside_its_image_is_left_out_as_predict_leaves_it_out(classifier):
    """The app called a BUSI mask "benign, 99.3 %, certain"; --predict lists it in unreadable.csv."""
    uploads = [(name, encode(random_image(seed, 40, 30)))
               for seed, name in enumerate(("benign (1).png", "benign (1)_mask.png", "lone_mask.png"))]

    image, mask, lone = inference.classify_uploads(classifier, uploads)

    assert image.ok and lone.ok and not mask.ok
    assert mask.error.startswith("a segmentation mask of benign (1).png")


def test_an_upload_of_a_size_no_validation_image_had_is_untested_and_uncertain(tmp_path):
    # CIFAKE's 32 px images merged with photos of 800 px and more: the sides span 32-2000, the bands between are empty.
    band = {"num_images": 40, "accuracy": 0.9, "balanced_accuracy": 0.9, "near_chance": False}
    info = {"training_images": {"min_side": 32, "max_side": 2000, "formats": ["PNG"]},
            "validation_by_kind": {"chance": 0.5, "size": {"0-63 px": band, "256-1023 px": band}}}
    classifier, loaded = load(write_run(tmp_path, "merged", info=info))

    uploads = [("between.png", encode(random_image(1, 200, 150))), ("big.png", encode(random_image(2, 300, 300)))]
    between, validated = inference.classify_uploads(classifier, uploads, info=loaded.info)

    assert between.unfamiliar == "no validation image was of 64-255 px a side: its answers on such images are untested"
    assert between.answer(loaded.info.rule())[1]  # uncertain
    assert validated.unfamiliar is None


def test_an_upload_of_a_size_validation_held_one_class_of_is_untested_and_uncertain(tmp_path):
    # CIFAKE's 32 px images of both classes merged with phone photos that are all REAL: a model that calls every
    # large image REAL scores a perfect recall on that band, and nothing in validation says it can find a FAKE there.
    both = {"num_images": 40, "accuracy": 0.9, "balanced_accuracy": 0.9, "near_chance": False, "missing_classes": []}
    one = {"num_images": 14, "accuracy": 1.0, "balanced_accuracy": 1.0, "near_chance": False,
           "missing_classes": ["FAKE"]}
    info = {"validation_by_kind": {"chance": 0.5, "size": {"0-63 px": both, "256-1023 px": one}}}
    classifier, loaded = load(write_run(tmp_path, "merged", info=info))

    uploads = [("photo.png", encode(random_image(1, 300, 300))), ("small.png", encode(random_image(2, 32, 32)))]
    photo, small = inference.classify_uploads(classifier, uploads, info=loaded.info)

    assert photo.unfamiliar == ("no validation image of FAKE was of 256-1023 px a side: its answers on such images "
                                "are untested")
    assert photo.answer(loaded.info.rule())[1]  # uncertain
    assert small.unfamiliar is None


def test_an_upload_of_a_size_validation_held_some_of_three_classes_of_is_judged_by_them(tmp_path):
    # Ten classes and a few validation images each: a size band nearly always lacks one of them, and every upload
    # of that size read Uncertain (untested), though validation showed the model telling the others apart there.
    some = {"num_images": 20, "accuracy": 0.95, "balanced_accuracy": 0.95, "near_chance": False, "chance": 0.5,
            "missing_classes": ["c"]}
    one = {"num_images": 14, "accuracy": 1.0, "balanced_accuracy": 1.0, "near_chance": False, "chance": 1 / 3,
           "missing_classes": ["b", "c"]}
    info = {"validation_by_kind": {"chance": 1 / 3, "size": {"0-63 px": some, "256-1023 px": one}}}
    classifier, loaded = load(write_run(tmp_path, "three", class_names=("a", "b", "c"), info=info))

    uploads = [("photo.png", encode(random_image(1, 300, 300))), ("small.png", encode(random_image(2, 32, 32)))]
    photo, small = inference.classify_uploads(classifier, uploads, info=loaded.info)

    assert small.unfamiliar is None
    assert photo.unfamiliar == ("no validation image of b, c was of 256-1023 px a side: its answers on such images "
                                "are untested")


def test_a_size_band_near_chance_that_lacks_classes_names_them():
    """A band of one of three classes (1 image) read "not shown above chance (balanced accuracy 1.00 on 1 image,
    chance 0.33)", and one of two of them never said which it lacked: the card's row and every answer's reason."""
    some = {"num_images": 3, "accuracy": 1.0, "balanced_accuracy": 1.0, "near_chance": True, "chance": 0.5,
            "missing_classes": ["c"]}
    one = {"num_images": 1, "accuracy": 1.0, "balanced_accuracy": 1.0, "near_chance": True, "chance": 1 / 3,
           "missing_classes": ["b", "c"]}
    by_kind = {"chance": 1 / 3, "near_chance_margin": 0.05, "size": {"64-255 px": some, "256-1023 px": one}}
    info = run.ModelInfo.from_dict({"class_names": ["a", "b", "c"], "image_size": 32, "validation_by_kind": by_kind})

    assert run.doubt(info, 300, 300, "PNG") == ("no validation image of b, c was of 256-1023 px a side: its answers "
                                                "on such images are untested")
    assert run.doubt(info, 100, 100, "PNG") == ("on validation images of 64-255 px a side the model is not shown "
                                                "above chance (balanced accuracy 1.00 on 3 images, chance 0.50: too "
                                                "few to tell it from luck; no c image among them)")


@pytest.mark.parametrize(("balanced", "verdict"), [(0.52, "at chance"), (0.46, "at chance"), (0.04, "below chance"),
                                                   (0.62, "not shown above chance"),
                                                   (0.55, "at chance")])  # chance + the margin: not above it
def test_a_size_band_far_under_chance_is_called_below_chance(balanced, verdict):
    by_kind = {"chance": 0.5, "near_chance_margin": 0.05, "size": {"0-63 px": {
        "num_images": 40, "accuracy": balanced, "balanced_accuracy": balanced, "near_chance": True}}}

    # Not shown above chance, at 1.00 on 8 images of 4 classes too, read as a contradiction without why.
    luck = ": too few to tell it from luck" if verdict == "not shown above chance" else ""
    assert (f"the model is {verdict} (balanced accuracy {balanced:.2f} on 40 images, chance 0.50{luck})"
            in run.at_chance(by_kind, 32, 32))


@pytest.mark.parametrize(("width", "height", "band"), [
    (63, 900, "0-63 px"), (64, 64, "64-255 px"), (900, 255, "64-255 px"), (256, 300, "256-1023 px"),
    (4000, 1024, "1024+ px")])
def test_an_image_s_size_band_is_that_of_its_short_side(width, height, band):
    assert run.size_band(width, height) == band


# validation_by_kind as runs wrote it before each kind had a "chance" of its own: 1 / classes for every kind.
OLD_THREE_CLASS_KIND = {"num_images": 20, "accuracy": 0.35, "balanced_accuracy": 0.35, "near_chance": True}


def test_an_old_run_s_kind_is_judged_against_the_chance_of_all_its_classes():
    by_kind = {"chance": 1 / 3, "near_chance_margin": 0.05, "size": {"0-63 px": OLD_THREE_CLASS_KIND}}

    assert run.at_chance(by_kind, 32, 32).endswith("(balanced accuracy 0.35 on 20 images, chance 0.33)")


def test_an_old_run_s_kind_that_lacks_a_class_is_untested():
    numbers = {**OLD_THREE_CLASS_KIND, "near_chance": False, "missing_classes": ["c"]}
    by_kind = {"chance": 1 / 3, "size": {"0-63 px": numbers}}

    assert run.untested(by_kind, 32, 32, 3) == ("no validation image of c was of 0-63 px a side: its answers on "
                                                "such images are untested")


def test_test_metrics_fall_back_to_metrics_json(tmp_path):
    folder = write_run(tmp_path, "run", metrics={"accuracy": 0.8, "roc_auc": 0.85, "confusion_matrix": [[1]]})
    info = json.loads((folder / "model.json").read_text())
    del info["test_metrics"]
    (folder / "model.json").write_text(json.dumps(info))

    assert run.read_run(folder).test_metrics() == {"accuracy": 0.8, "roc_auc": 0.85}


# ------------------------------------------------------------------------------------ the model


def test_a_classifier_refuses_class_names_of_another_number_than_the_model_outputs():
    with pytest.raises(UserError, match="outputs 2 classes"):
        inference.Classifier(build_stand_in(), ["a", "b", "c"], IMAGE_SIZE)


def test_a_model_of_more_outputs_than_its_model_json_has_classes_is_refused():
    with pytest.raises(UserError, match=r"outputs 3 classes, but model\.json names 2"):
        run.check_model(build_stand_in(("a", "b", "c")), run.ModelInfo(tuple(CLASS_NAMES), IMAGE_SIZE))


def test_a_keras_model_that_is_not_the_projects_is_refused_by_every_loader(tmp_path, capsys):
    """A plain Keras model beside a model.json: --predict served it (its raw 0..255 pixels straight into a
    classifier trained on none of them: meaningless answers, exit 0), while the app refused it with a traceback."""
    import keras

    import ModelTraining

    inputs = keras.Input((None, None, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    folder = write_run(tmp_path / "models", "foreign", keras.Model(inputs, keras.layers.Dense(2, "softmax")(pooled)))
    write_image(tmp_path / "photos" / "a.png", seed=1)

    with pytest.raises(UserError) as refused:
        run.load_run(folder)
    assert str(refused.value) == (
        f"{folder / 'model.h5'} has no layer named 'resize', so it is not a model ModelTraining.py trained (those "
        "take raw RGB images of any size and resize them inside). Give a run folder that ModelTraining.py wrote.")
    assert ModelTraining.main(["--predict", str(folder), "--input", str(tmp_path / "photos"), "--quiet"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {refused.value}"]


def test_a_keras_model_that_this_project_cannot_rebuild_is_not_called_corrupt(tmp_path):
    """A model.h5 holding a layer class this project does not know (someone's own) was called "corrupt, truncated
    or another kind of file"; it is a sound Keras file that another program saved."""
    import keras

    @keras.saving.register_keras_serializable(package="Theirs")
    class Scale(keras.layers.Layer):
        def call(self, inputs):
            return inputs * 2.0

    inputs = keras.Input((None, None, 3))
    outputs = keras.layers.Dense(2, "softmax")(keras.layers.GlobalAveragePooling2D()(Scale(name="resize")(inputs)))
    folder = write_run(tmp_path / "models", "theirs", keras.Model(inputs, outputs))
    keras.saving.get_custom_objects().pop("Theirs>Scale")  # as in a process that never defined it

    with pytest.raises(UserError) as refused:
        run.load_run(folder)
    message = str(refused.value)
    assert message.startswith(f"{folder / 'model.h5'} holds a Keras model that this project cannot rebuild (")
    assert "corrupt" not in message and message.endswith(
        "): one saved by another program, or by a newer version of this project. Give a run folder that "
        "ModelTraining.py wrote.")


def test_a_keras_archive_of_layers_this_project_does_not_define_is_refused_in_one_line(tmp_path):
    """--model RUN/model.keras holding someone's own layer ended in a traceback (Keras' TypeError, whose message
    runs over many lines with the model's config)."""
    import keras

    @keras.saving.register_keras_serializable(package="TheirsArchive")
    class Scale(keras.layers.Layer):
        def call(self, inputs):
            return inputs * 2.0

    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Dense(2, "softmax")(keras.layers.GlobalAveragePooling2D()(
        Scale(name="resize")(inputs))))
    folder = write_run(tmp_path / "models", "theirs", model)
    model.save(folder / "model.keras")
    keras.saving.get_custom_objects().pop("TheirsArchive>Scale")  # as in a process that never defined it

    with pytest.raises(UserError) as refused:
        run.load_run(folder / "model.keras")
    message = str(refused.value)
    assert message.startswith(f"{folder / 'model.keras'} holds a Keras model that this project cannot rebuild (")
    assert "\n" not in message and "corrupt" not in message


@pytest.mark.parametrize("saved, said", [
    ("model.keras", "is a .keras archive (a zip file), not a Keras HDF5 file"),
    ("model.weights.h5", "holds a model's weights without its architecture")], ids=["keras-archive", "weights"])
def test_a_model_h5_of_another_kind_of_keras_file_is_named_as_what_it_is_not_called_corrupt(tmp_path, saved, said):
    """A .keras file (a zip) renamed model.h5, or a file of save_weights (HDF5 with no model config), was "corrupt,
    truncated or another kind of file"."""
    folder = write_run(tmp_path / "models", "renamed")
    model = build_stand_in()
    (model.save if saved == "model.keras" else model.save_weights)(tmp_path / saved)
    (folder / "model.h5").write_bytes((tmp_path / saved).read_bytes())

    with pytest.raises(UserError) as refused:
        run.load_run(folder)
    message = str(refused.value)
    assert message.startswith(f"{folder / 'model.h5'} {said}"), message
    assert "corrupt" not in message and "\n" not in message


def test_a_model_json_that_names_another_image_size_than_the_model_takes_is_refused(tmp_path):
    """Edited from 32 to 128 px, --predict went on (other probabilities), and the app's card said 128 px."""
    folder = write_run(tmp_path / "models", "edited")
    content = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**content, "image_size": 2 * IMAGE_SIZE}))

    with pytest.raises(UserError) as refused:
        run.load_run(folder)
    assert str(refused.value) == (
        f"{folder / 'model.h5'} takes {IMAGE_SIZE} x {IMAGE_SIZE} px images (its resize layer), but model.json says "
        f"image_size {2 * IMAGE_SIZE}. The files do not belong together: put back the model.json written with that "
        "model.h5.")


@pytest.mark.slow  # a fresh Python process with TensorFlow
def test_the_app_s_loader_reads_a_model_with_the_project_s_augmentation_layers_in_a_fresh_process(tmp_path):
    from realvsai import augmentation
    model = build_stand_in(augmentation=augmentation.build_augmentation("detector", seed=0))
    folder = write_run(tmp_path, "augmented", model)
    image = random_image(13, 40, 30)
    np.save(tmp_path / "image.npy", image)
    expected = np.asarray(model(image[None].astype(np.float32), training=False))

    # A fresh process: custom layers registered in this one would hide a missing import.
    finished = subprocess.run(
        [sys.executable, "-c", "import sys, numpy as np; from realvsai import inference, run; "
         "classifier = inference.Classifier(run.load_run(sys.argv[1])[0], ['FAKE', 'REAL'], 32); "
         "print(classifier.predict_prepared(classifier.prepare(np.load(sys.argv[2]))[None]).tolist()); "
         "print(classifier.grad_cam(np.load(sys.argv[2])).shape)", str(folder), str(tmp_path / "image.npy")],
        capture_output=True, text=True, timeout=300, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"})

    assert finished.returncode == 0, finished.stderr[-2000:]
    probabilities, heatmap_shape = finished.stdout.strip().splitlines()[-2:]
    np.testing.assert_allclose(json.loads(probabilities), expected, atol=1e-5)
    assert heatmap_shape == "(30, 40)"


def test_batched_predictions_equal_single_image_model_calls_on_the_original_images(classifier):
    sizes = [(32, 32), (50, 37), (17, 90), (640, 480), (33, 31)]
    images = [random_image(seed, width, height) for seed, (width, height) in enumerate(sizes)]

    batched = predict(classifier, images)
    single = np.concatenate([np.asarray(classifier.model(image[None].astype(np.float32), training=False))
                             for image in images])

    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_prepare_makes_no_full_size_float_copy_of_a_large_image(classifier):
    """A large upload is cut to its centre square in uint8 and cast inside the model's resize: it makes no
    full-size float32 copy (4 bytes a value) in NumPy memory beside the decoded image."""
    image = random_image(0, 3000, 1000)
    expected = classifier.prepare(image)  # warmed up: the first call traces the layer
    prepared, peak = traced_peak(lambda: classifier.prepare(image))
    assert np.array_equal(prepared, expected)
    # A full-size float32 copy alone is 4 times the image; the square's float32 copy (a third of it here) 1.3.
    assert peak < 2 * image.nbytes, f"prepare took {peak / image.nbytes:.1f} times the uint8 image in Python memory"


def test_model_calls_have_a_few_fixed_batch_shapes_whatever_the_number_and_size_of_images(classifier, monkeypatch):
    # JAX compiles the model once per input shape: the last, smaller batch is padded to the full one.
    shapes = []
    indexed = classifier.predictor._indexed
    real = indexed.predict_on_batch
    monkeypatch.setattr(indexed, "predict_on_batch", lambda inputs: shapes.append(inputs[0].shape) or real(inputs))
    for count, side in ((1, 20), (3, 64), (5, 33), (21, 40)):
        probabilities = predict(classifier, [random_image(count, side, side + 3)] * count)
        assert probabilities.shape == (count, 2) and not np.isnan(probabilities).any()

    batch = classifier.predictor.batch_size
    # Fewer than a batch: the next power of two (a handful of shapes in all); more: whole batches.
    assert batch == 16 and shapes == [(rows, IMAGE_SIZE, IMAGE_SIZE, 3) for rows in (1, 4, 8, 16, 16)]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])  # a PNG's EXIF may follow its pixels: reading it decodes them
def test_an_upload_is_decoded_once_and_judged_gray_from_that_decode(classifier, monkeypatch, fmt):
    from PIL import ImageFile

    from realvsai import images

    loaded = set()  # the image files whose pixels were decoded
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda image: loaded.add(id(image)) or real_load(image))
    gray = np.repeat(random_image(3, 64, 48)[..., :1], 3, axis=-1)
    profile = {"min_side": 32, "max_side": 100, "formats": [fmt], "images": 8, "grayscale": 0}

    upload = encode(gray, fmt)

    (result,) = inference.classify_uploads(classifier, [("scan", upload)], info=with_profile(profile))

    assert len(loaded) == 1 and result.unfamiliar and "a grayscale image" in result.unfamiliar
    assert result.size == (64, 48)
    assert images.read_header(upload, gray=False).grayscale is None  # the header alone: not known


@pytest.mark.parametrize("size", [(765, 510), (600, 400), (1200, 800), (300, 200)])
def test_the_app_judges_an_upload_gray_as_the_scan_and_predict_do_whatever_scale_it_decodes_at(classifier, size):
    """A gray photo with faint colour noise: the noise averages out in a reduced decode, so the app, which judged
    its own decode (1/8 of 765x510 for a 32 px model), called it gray where --predict's scan, which judges a full
    decode below 512 px, called it colour: the app's answer alone said "a grayscale image"."""
    width, height = size
    rng = np.random.default_rng(3)
    smooth = Image.fromarray(rng.integers(0, 255, (height // 8, width // 8), np.uint8)).resize(size, Image.BICUBIC)
    noisy = np.clip(np.asarray(smooth, np.int16)[..., None] + rng.integers(-6, 7, (height, width, 3)), 0, 255)
    upload = encode(noisy.astype(np.uint8), "JPEG", quality=95, subsampling=0)
    profile = {"min_side": 32, "max_side": 2000, "formats": ["JPEG"], "images": 8, "grayscale": 0}

    (result,) = inference.classify_uploads(classifier, [("scan.jpg", upload)], info=with_profile(profile))

    from realvsai import images

    assert ("a grayscale image" in (result.unfamiliar or "")) is images.read_header(upload).grayscale


def test_predicting_no_images_gives_no_rows(classifier):
    rows = classifier.predictor.predict_arrays(np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.float32))
    assert rows.shape == (0, 2) and rows.dtype == np.float32


# -------------------------------------------------------------------------------------- uploads


def test_classify_uploads_names_each_broken_file_and_classifies_the_others(classifier, bad_files, tmp_path):
    broken = bad_files(tmp_path)
    uploads = [("good1.png", encode(random_image(1, 40, 30)))]
    uploads += [(path.name, path.read_bytes()) for path in broken.values()]
    uploads += [("good2.jpg", encode(random_image(2, 64, 48), "JPEG"))]

    results = inference.classify_uploads(classifier, uploads, batch_size=2)

    assert [result.name for result in results] == [name for name, _ in uploads]
    assert [result.ok for result in results] == [True, False, False, False, True]
    assert all(result.error.startswith(("not an image", "the image data is broken", "the file is empty"))
               for result in results[1:4])
    np.testing.assert_allclose(results[0].probabilities.sum(), 1.0, atol=1e-5)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [12_000, 40_000])  # above our limit; above Pillow's own bomb limit too
def test_classify_uploads_refuses_an_image_with_too_many_pixels_before_decoding_it(classifier, side):
    results = inference.classify_uploads(classifier, [("bomb.png", png_header_only(side, side)),
                                                      ("fine.png", encode(random_image(3, 20, 20)))])

    assert not results[0].ok
    assert "pixels" in results[0].error and "limit" in results[0].error
    assert results[1].ok


def test_classify_uploads_reads_every_kind_of_image_a_user_has(classifier):
    rgb = random_image(4, 24, 16)
    sixteen_bit = io.BytesIO()
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(sixteen_bit, "PNG")
    uploads = [
        ("rgba.png", encode(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]))),
        ("gray.png", encode(rgb[..., 0])),
        ("palette.png", _save(Image.fromarray(rgb).convert("P"), "PNG")),
        ("cmyk.jpg", _save(Image.fromarray(rgb).convert("CMYK"), "JPEG")),
        ("sixteen.png", sixteen_bit.getvalue()),
        ("photo.webp", encode(rgb, "WEBP")),
        ("photo.bmp", encode(rgb, "BMP")),
    ]

    results = inference.classify_uploads(classifier, uploads)

    assert [result.error for result in results] == [None] * len(uploads)
    assert all(result.size == (24, 16) for result in results)


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def test_classify_uploads_turns_an_exif_rotated_photo_upright(classifier):
    image = Image.fromarray(random_image(5, 40, 20))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown

    result = inference.classify_uploads(classifier, [("phone.jpg", _save(image, "JPEG", exif=exif))])[0]

    assert result.size == (20, 40)
    assert result.preview.shape[:2] == (40, 20)


def test_classify_uploads_goes_on_when_one_file_fails_unexpectedly(classifier, monkeypatch):
    real_load = inference.load_rgb_with_header

    def load(data, max_pixels, image_size=None, crop_size=None):
        if data == b"boom":
            raise RuntimeError("something nobody expected")
        return real_load(data, max_pixels, image_size, crop_size)

    monkeypatch.setattr(inference, "load_rgb_with_header", load)
    results = inference.classify_uploads(classifier, [("a.png", encode(random_image(6, 8, 8))), ("b.png", b"boom"),
                                                      ("c.png", encode(random_image(7, 8, 8)))])

    assert [result.ok for result in results] == [True, False, True]
    assert "RuntimeError" in results[1].error


def test_classify_uploads_calls_the_model_once_per_batch(classifier, monkeypatch):
    calls = []
    real = classifier.predict_prepared
    monkeypatch.setattr(classifier, "predict_prepared", lambda batch: calls.append(len(batch)) or real(batch))
    uploads = [(f"{index}.png", encode(random_image(index, 10 + index, 12))) for index in range(7)]

    inference.classify_uploads(classifier, uploads, batch_size=3)

    assert calls == [3, 3, 1]


def test_preview_is_no_longer_than_its_limit_and_keeps_the_aspect_ratio():
    preview = inference.preview_image(random_image(8, 1000, 500))  # the app's 384 px

    assert max(preview.shape[:2]) <= 384
    assert preview.shape[1] == 2 * preview.shape[0]


# ------------------------------------------------------------------------------------- Grad-CAM


def test_grad_cam_heatmap_has_the_image_size_and_values_in_the_unit_range(classifier):
    image = random_image(9, 45, 30)

    heatmap = classifier.grad_cam(image)

    assert heatmap.shape == (30, 45)
    assert heatmap.dtype == np.float32
    assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0


@pytest.mark.parametrize("corner", ["top_left", "bottom_right"])
def test_grad_cam_peaks_where_the_evidence_is(evidence_classifier, corner):
    image = bright_patch(64, corner)
    assert predict(evidence_classifier, [image]).argmax() == 1  # the patch makes it "REAL"

    heatmap = evidence_classifier.grad_cam(image)

    peak_row, peak_col = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    inside = bright_patch(64, corner)[..., 0] > 0
    assert inside[peak_row, peak_col]
    assert heatmap[inside].mean() > 4 * heatmap[~inside].mean()


def test_grad_cam_is_deterministic_and_not_constant(classifier):
    image = random_image(10, 64, 64)

    first, second = classifier.grad_cam(image), classifier.grad_cam(image)

    np.testing.assert_array_equal(first, second)
    assert first.max() - first.min() > 0.1


def test_grad_cam_of_another_class_differs(evidence_classifier):
    image = bright_patch(64)

    assert not np.allclose(evidence_classifier.grad_cam(image, class_index=0),
                           evidence_classifier.grad_cam(image, class_index=1))


def test_grad_cam_explains_from_the_deepest_layer_of_at_least_4x4(classifier):
    # The stand-in's backbone: conv1 32x32, conv2 16x16 (its output).
    assert classifier.grad_cam_layer.name == "conv2"


def test_grad_cam_of_a_model_whose_feature_maps_are_all_below_4x4_has_no_layer_and_says_it_cannot_localise():
    classifier = inference.Classifier(build_stand_in(image_size=2), CLASS_NAMES, 2)  # conv1 2x2, conv2 1x1

    assert classifier.grad_cam_layer is None
    with pytest.raises(ValueError, match="cannot localise") as raised:
        classifier.grad_cam(random_image(14, 20, 20))
    # The app's note in the same words (it wrote "4×4" and advice, this error "4x4" and none).
    assert str(raised.value) == classifier.grad_cam_problem and "smaller than 4×4" in str(raised.value)
    assert "--image-size" in str(raised.value)


def test_grad_cam_of_a_224_px_resnet_uses_its_last_block():
    from realvsai import model as model_module
    model = model_module.build_model(2, image_size=224, backbone="resnet101", weights=None, augment="none")

    layer = inference.Classifier(model, CLASS_NAMES, 224).grad_cam_layer

    assert layer.name == "conv5_block3_out"
    assert layer is model.get_layer("backbone").layers[-1]


@pytest.mark.slow  # a ResNet101 forward and backward pass
def test_grad_cam_of_a_32_px_resnet_is_not_a_flat_tint():
    from realvsai import model as model_module
    # At 32 px ResNet's last block is 1x1: a heatmap from it is one colour whatever the image.
    model = model_module.build_model(2, image_size=32, backbone="resnet101", weights=None, augment="none")
    classifier = inference.Classifier(model, CLASS_NAMES, 32)

    heatmap = classifier.grad_cam(random_image(15, 48, 40))

    assert heatmap.std() > 0.01
    assert classifier.grad_cam_layer.name == "conv3_block4_out"  # 4x4


def test_overlay_keeps_the_image_size_and_colours_the_hot_area():
    image = np.full((40, 60, 3), 128, np.uint8)
    heatmap = np.zeros((40, 60), np.float32)
    heatmap[:10, :10] = 1.0

    overlay = inference.overlay_heatmap(image, heatmap)

    assert overlay.shape == image.shape and overlay.dtype == np.uint8
    assert not np.array_equal(overlay[0, 0], overlay[-1, -1])


def test_explain_result_returns_an_overlay_of_the_preview_size(classifier):
    (result,) = inference.classify_uploads(classifier, [("wide.png", encode(random_image(11, 800, 200)))])

    overlay = inference.explain_result(classifier, result)

    assert overlay.shape == result.preview.shape == (67, 267, 3)  # 800x200 reduced by 3 to fit 384 px


# ---------------------------------------------------------------------------- the decision rule


def test_two_classes_are_decided_by_p_positive_at_the_decision_threshold():
    rule = DecisionRule(confidence_threshold=0.6, decision_threshold=0.3, positive_index=0)

    assert rule.decide(np.array([[0.4, 0.6], [0.29, 0.71], [0.3, 0.7]])).tolist() == [0, 1, 0]
    assert rule.decide(np.array([0.4, 0.6])) == 0


def test_without_a_decision_threshold_the_most_probable_class_is_decided():
    rule = DecisionRule(confidence_threshold=0.6)

    assert rule.decide(np.array([[0.4, 0.6], [0.7, 0.3]])).tolist() == [1, 0]
    assert rule.decide(np.array([0.2, 0.5, 0.3])) == 1


def test_at_a_threshold_uncertain_means_p_positive_within_the_confidence_margin_of_it():
    # Confidence 0.6 is a margin of 0.1 on either side of the threshold 0.3.
    rule = DecisionRule(confidence_threshold=0.6, decision_threshold=0.3, positive_index=0)
    probabilities = np.array([[0.25, 0.75], [0.35, 0.65], [0.45, 0.55], [0.15, 0.85]])

    assert rule.uncertain(probabilities).tolist() == [True, True, False, False]


@pytest.mark.parametrize(("threshold", "certain", "uncertain"), [
    (0.02, [0.0, 0.01, 0.3, 0.5, 1.0], [0.017, 0.019, 0.02, 0.1, 0.2]),
    (0.98, [0.0, 0.5, 0.7, 0.99, 1.0], [0.8, 0.9, 0.97, 0.98, 0.981]),
])
def test_near_0_or_1_the_uncertain_band_leaves_room_for_certain_answers_on_both_sides(threshold, certain, uncertain):
    rule = DecisionRule(confidence_threshold=0.6, decision_threshold=threshold, positive_index=1)

    def as_rows(values):
        return np.array([[1 - value, value] for value in values])

    assert not rule.uncertain(as_rows(certain)).any()
    assert rule.uncertain(as_rows(uncertain)).all()
    low, high = rule.band
    assert f"between {low:.3f} and {high:.3f}" in rule.describe(CLASS_NAMES)


def test_without_a_threshold_uncertain_means_the_top_probability_below_the_confidence_threshold():
    rule = DecisionRule(confidence_threshold=0.6)

    assert rule.uncertain(np.array([[0.45, 0.55], [0.35, 0.65]])).tolist() == [True, False]
    assert rule.uncertain(np.array([[0.5, 0.3, 0.2], [0.7, 0.2, 0.1]])).tolist() == [True, False]


def test_a_top_probability_equal_to_the_confidence_threshold_is_certain():
    rule = DecisionRule(confidence_threshold=0.75)  # 0.75 and 0.25: exact in binary floating point

    assert rule.uncertain(np.array([[0.75, 0.25], [0.74, 0.26]])).tolist() == [False, True]
    assert rule.uncertain(np.array([[0.25, 0.75, 0.0], [0.25, 0.5, 0.25]])).tolist() == [False, True]


def test_the_edges_of_the_uncertain_band_around_a_threshold_are_certain():
    # Confidence 0.75 is half the way from the threshold 0.5 to 0 and to 1: the band is (0.25, 0.75).
    rule = DecisionRule(confidence_threshold=0.75, decision_threshold=0.5, positive_index=1)
    rows = np.array([[0.75, 0.25], [0.74, 0.26], [0.26, 0.74], [0.25, 0.75]])

    assert rule.band == (0.25, 0.75)
    assert rule.uncertain(rows).tolist() == [False, True, True, False]


def test_a_decision_threshold_never_decides_between_three_classes():
    rule = DecisionRule(confidence_threshold=0.6, decision_threshold=0.1, positive_index=0)
    rows = np.array([[0.2, 0.5, 0.3]])  # P(class 0) is above the threshold, but three classes take the most probable

    assert rule.decide(rows).tolist() == [1]
    assert rule.uncertain(rows).tolist() == [True]


def test_a_run_decides_with_the_threshold_and_positive_class_of_its_model_json(tmp_path):
    folder = write_run(tmp_path, "run", info={"positive_class": "FAKE", "decision_threshold": 0.3})

    rule = run.read_run(folder).info.rule(0.6)
    assert rule == DecisionRule(0.6, 0.3, positive_index=0)


def test_a_run_without_a_decision_threshold_decides_by_the_most_probable_class(tmp_path):
    folder = write_run(tmp_path, "run", info={"decision_threshold": None})

    rule = run.read_run(folder).info.rule(0.7)
    assert rule == DecisionRule(0.7, None, positive_index=0)


def test_read_run_rejects_a_positive_class_that_is_not_a_class(tmp_path):
    folder = write_run(tmp_path, "run", info={"positive_class": "CAT", "decision_threshold": 0.3})

    with pytest.raises(UserError, match="positive_class"):
        run.read_run(folder)


THRESHOLD_LABELS = np.array([0, 0, 1, 1, 0, 1])
THRESHOLD_PROBABILITIES = np.array([[0.4, 0.6], [0.2, 0.8], [0.35, 0.65], [0.6, 0.4], [0.31, 0.69], [0.29, 0.71]])


def test_evaluation_at_the_threshold_predicts_what_the_app_decides():
    from sklearn.metrics import confusion_matrix

    from realvsai.metrics import compute_metrics

    rule = DecisionRule(0.6, 0.3, positive_index=0)

    metrics = compute_metrics(THRESHOLD_LABELS, THRESHOLD_PROBABILITIES, CLASS_NAMES, "FAKE", 0.3)

    decided = rule.decide(THRESHOLD_PROBABILITIES)
    assert metrics["confusion_matrix"] == confusion_matrix(THRESHOLD_LABELS, decided).tolist()


def test_the_model_card_states_the_rule_the_app_decides_with():
    from realvsai import model_card
    from realvsai.metrics import compute_metrics

    metrics = compute_metrics(THRESHOLD_LABELS, THRESHOLD_PROBABILITIES, CLASS_NAMES, "FAKE", 0.3)
    info = {"class_names": CLASS_NAMES, "image_size": 32, "positive_class": "FAKE", "confidence_threshold": 0.6,
            "decision_threshold": 0.3}

    card = model_card.render_card(info, {**metrics, "folder": "data/test"}, "Model card")

    assert DecisionRule(0.6, 0.3, positive_index=0).describe(CLASS_NAMES) in card


# -------------------------------------------------------------------------------- the real model


@pytest.mark.slow  # about 10 s alone, twice that on a busy machine
def test_a_real_resnet_run_folder_loads_predicts_and_explains(tmp_path):
    from realvsai import model as model_module
    # 64 px gives ResNet's last block a 2x2 map, so Grad-CAM explains from the last 4x4 one.
    model = model_module.build_model(2, image_size=64, backbone="resnet50", weights=None, augment="none")
    folder = write_run(tmp_path, "resnet", model, image_size=64)

    classifier, run = load(folder)
    assert run.image_size == 64
    image = random_image(12, 96, 80)
    probabilities = predict(classifier, [image])
    heatmap = classifier.grad_cam(image)

    np.testing.assert_allclose(probabilities, model(image[None].astype(np.float32), training=False), atol=1e-5)
    assert classifier.model.get_layer("backbone").output.shape[1:3] == (2, 2)
    assert classifier.grad_cam_layer.name == "conv4_block6_out"
    assert heatmap.shape == (80, 96) and heatmap.min() >= 0.0 and heatmap.max() <= 1.0
    assert heatmap.max() - heatmap.min() > 0.1
    np.testing.assert_array_equal(heatmap, classifier.grad_cam(image))


def test_a_large_jpeg_upload_is_classified_from_its_reduced_decode_and_reported_at_its_size(classifier):
    from realvsai.images import load_rgb

    coarse = Image.fromarray(random_image(8, 51, 38)).resize((800, 600), Image.BILINEAR)
    data = _save(coarse, "JPEG", quality=90)
    profile = {"min_side": 500, "max_side": 900, "formats": ["JPEG"]}

    result = inference.classify_uploads(classifier, [("photo.jpg", data)], info=with_profile(profile))[0]

    reduced = load_rgb(data, image_size=IMAGE_SIZE)
    assert reduced.shape == (75, 100, 3)  # 1/8: 75 px is still twice the model's 32
    np.testing.assert_allclose(result.probabilities, predict(classifier, [reduced])[0], atol=1e-6)
    assert result.size == (800, 600) and result.unfamiliar is None  # the file's size, not the decoded one


def test_a_crops_mode_model_predicts_alike_in_evaluation_prediction_and_the_app(tmp_path):
    from realvsai import prediction
    from realvsai.data import grid_crops, scan_images
    from realvsai.images import load_rgb

    model = build_stand_in(seed=3)
    sizes = [(96, 64), (40, 40), (20, 30)]  # larger than the crop, about its size, smaller (enlarged)
    paths = []
    for index, (width, height) in enumerate(sizes):
        path = tmp_path / "in" / "REAL" / f"{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(random_image(20 + index, width, height)))
        paths.append(path)
    expected = np.stack([np.asarray(model(np.asarray(grid_crops(load_rgb(path), IMAGE_SIZE)), training=False)).mean(0)
                         for path in paths])
    info = {"class_names": CLASS_NAMES, "image_size": IMAGE_SIZE, "input_mode": "crops"}
    scanned = scan_images(tmp_path / "in", ["REAL"])

    by_evaluation = prediction.predict_images(predictor(model, IMAGE_SIZE, 2, "crops", CLASS_NAMES), scanned)
    prediction.predict_folder(model, info, tmp_path / "in", tmp_path / "out", batch_size=2)
    rows = (tmp_path / "out" / "predictions.csv").read_text().splitlines()[1:]
    by_predict = np.array([[float(value) for value in row.split(",")[2:4]] for row in rows])
    classifier = inference.Classifier(model, CLASS_NAMES, IMAGE_SIZE, "crops")
    by_app = [result.probabilities for result in
              inference.classify_uploads(classifier, [(path.name, path.read_bytes()) for path in paths], batch_size=2)]

    np.testing.assert_allclose(by_evaluation, expected, atol=1e-5)
    np.testing.assert_allclose(by_predict, expected, atol=1e-5)
    np.testing.assert_allclose(np.stack(by_app), expected, atol=1e-5)
    resized = predict(inference.Classifier(model, CLASS_NAMES, IMAGE_SIZE), [load_rgb(paths[0])])
    assert not np.allclose(resized[0], expected[0], atol=1e-5)  # crops mode is not the resize path


@pytest.mark.parametrize("input_mode", ["resize", "crops"])
def test_a_transparent_image_is_judged_on_white_alike_in_evaluation_prediction_and_the_app(tmp_path, input_mode):
    """Evaluation, --predict and the app judged a cut-out by the colours stored under its transparent pixels (black,
    or junk), which no user sees: each now takes it as shown on white, as the app's preview shows it."""
    from realvsai import prediction
    from realvsai.data import grid_crops, scan_images

    model = build_stand_in(seed=3)
    kinds = transparent_images()
    for name, (data, _) in kinds.items():
        (tmp_path / "in" / "REAL").mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / "REAL" / name).write_bytes(data)
    names = sorted(kinds)
    shown = [kinds[name][1] for name in names]
    if input_mode == "crops":
        expected = np.stack([np.asarray(model(np.asarray(grid_crops(pixels, IMAGE_SIZE)), training=False)).mean(0)
                             for pixels in shown])
    else:
        expected = np.asarray(model(np.stack(shown).astype(np.float32), training=False))
    info = {"class_names": CLASS_NAMES, "image_size": IMAGE_SIZE, "input_mode": input_mode}
    scanned = scan_images(tmp_path / "in", ["REAL"])
    assert [path.name for path in scanned.files] == names

    by_evaluation = prediction.predict_images(predictor(model, IMAGE_SIZE, 4, input_mode, CLASS_NAMES), scanned)
    prediction.predict_folder(model, info, tmp_path / "in", tmp_path / "out", batch_size=4)
    rows = {row.split(",")[0]: [float(value) for value in row.split(",")[2:4]]
            for row in (tmp_path / "out" / "predictions.csv").read_text().splitlines()[1:]}
    by_predict = np.array([rows[f"REAL/{name}"] for name in names])
    classifier = inference.Classifier(model, CLASS_NAMES, IMAGE_SIZE, input_mode)
    results = inference.classify_uploads(classifier, [(name, kinds[name][0]) for name in names], batch_size=4)

    np.testing.assert_allclose(by_evaluation, expected, atol=1e-5)
    np.testing.assert_allclose(by_predict, expected, atol=1e-5)
    np.testing.assert_allclose(np.stack([result.probabilities for result in results]), expected, atol=1e-5)
    for result, pixels in zip(results, shown, strict=True):
        np.testing.assert_array_equal(result.preview, pixels)  # the card shows what the model judged


def test_grad_cam_of_a_crops_mode_model_explains_its_native_resolution_crops():
    model = build_stand_in(evidence=True)
    image = np.zeros((96, 96, 3), np.uint8)
    image[:24, :24] = 255  # inside the top-left crop of the 3x3 grid of 32 px crops
    crops = inference.Classifier(model, CLASS_NAMES, IMAGE_SIZE, "crops")

    heatmap = crops.grad_cam(image, class_index=1)

    assert heatmap.shape == (96, 96)
    peak_row, peak_col = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    assert peak_row < 24 and peak_col < 24
    resized = inference.Classifier(model, CLASS_NAMES, IMAGE_SIZE).grad_cam(image, class_index=1)
    assert not np.allclose(heatmap, resized, atol=1e-3)  # not the whole image resized to 32 px


def test_grad_cam_covers_only_the_centre_square_the_model_sees():
    classifier = inference.Classifier(build_stand_in(evidence=True), CLASS_NAMES, IMAGE_SIZE)
    image = np.zeros((64, 96, 3), np.uint8)
    image[:16, 16:32] = 255  # the top-left corner of the centre square (columns 16..79)
    image[:, :16] = 255  # outside it: the model never sees these pixels

    heatmap = classifier.grad_cam(image, class_index=1)

    assert heatmap.shape == (64, 96)
    assert heatmap[:, :16].max() == 0 and heatmap[:, 80:].max() == 0
    peak_row, peak_col = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    assert peak_row < 16 and 16 <= peak_col < 32


def test_the_explained_upload_outlines_the_region_the_model_saw(tmp_path):
    classifier = inference.Classifier(build_stand_in(evidence=True), CLASS_NAMES, IMAGE_SIZE)
    result = inference.classify_uploads(classifier, [("wide.png", encode(random_image(3, 96, 64)))])[0]

    overlay = inference.explain_result(classifier, result, class_index=1)

    assert overlay.shape == (64, 96, 3)
    assert (overlay[:, 16] == 255).all() and (overlay[:, 79] == 255).all()  # the frame of the centre square
    assert not (overlay[:, 40] == 255).all()


def test_the_explained_upload_leaves_what_the_model_never_saw_as_it_is():
    """Outside the seen square the heatmap's zero colour was laid over the picture: "no evidence" there, where the
    model saw nothing at all."""
    classifier = inference.Classifier(build_stand_in(evidence=True), CLASS_NAMES, IMAGE_SIZE)
    result = inference.classify_uploads(classifier, [("wide.png", encode(random_image(3, 96, 64)))])[0]

    overlay = inference.explain_result(classifier, result, class_index=1)

    assert np.array_equal(overlay[:, :16], result.preview[:, :16])
    assert np.array_equal(overlay[:, 80:], result.preview[:, 80:])
    assert not np.array_equal(overlay[1:-1, 17:79], result.preview[1:-1, 17:79])


@pytest.mark.parametrize("shape", [(1, 5000), (5000, 1)])
def test_classify_uploads_in_crops_mode_refuses_a_strip_its_crops_would_enlarge_past_the_pixel_limit(shape):
    classifier = inference.Classifier(build_stand_in(), CLASS_NAMES, IMAGE_SIZE, "crops")
    uploads = [("strip.png", encode(random_image(4, *shape))), ("fine.png", encode(random_image(3, 40, 40)))]

    strip, fine = inference.classify_uploads(classifier, uploads, max_pixels=100_000)  # 5,000 px; enlarged 5.1 M

    assert not strip.ok and "limit of 100,000 pixels" in strip.error and "160000" in strip.error
    assert fine.ok


def test_a_phone_photo_over_the_limit_whole_is_classified_from_the_reduced_decode_the_model_takes():
    """A 200 MP photo (here conftest's 2000x1500 under PHOTO_LIMIT) decodes at 1/8 for a resize model: the limit
    counts those pixels. Crops mode takes its native pixels, so there it is counted whole and refused."""
    uploads = [("phone.jpg", phone_photo()), ("fine.png", encode(random_image(3, 40, 40)))]

    phone, fine = inference.classify_uploads(inference.Classifier(build_stand_in(), CLASS_NAMES, IMAGE_SIZE), uploads,
                                             max_pixels=PHOTO_LIMIT)
    assert phone.ok and fine.ok and phone.size == (2000, 1500) and phone.decoded_shape == (188, 250)

    crops = inference.Classifier(build_stand_in(), CLASS_NAMES, IMAGE_SIZE, "crops")
    phone, fine = inference.classify_uploads(crops, uploads, max_pixels=PHOTO_LIMIT)
    assert not phone.ok and "2000x1500 pixels is more than the limit of 1,000,000 pixels" in phone.error and fine.ok


@pytest.mark.parametrize("shape", [(1, 5000), (5000, 1)])
def test_a_thin_strip_explained_in_crops_mode_gets_its_frames(shape):
    classifier = inference.Classifier(build_stand_in(evidence=True), CLASS_NAMES, IMAGE_SIZE, "crops")
    result = inference.classify_uploads(classifier, [("strip.png", encode(random_image(4, *shape)))])[0]

    overlay = inference.explain_result(classifier, result, class_index=1)

    assert overlay.shape == (*result.preview.shape[:2], 3)
    assert (overlay == 255).all(axis=-1).any()  # frames drawn, the last crop's at the far end too


def with_profile(profile: dict, **content) -> run.ModelInfo:
    return run.ModelInfo.from_dict({"class_names": CLASS_NAMES, "image_size": IMAGE_SIZE,
                                    "training_images": profile, **content})


def phone_jpeg(image: np.ndarray) -> bytes:
    """A JPEG with a second picture, as phones save them: Pillow opens it as format MPO."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "MPO", save_all=True, append_images=[Image.fromarray(image[::2, ::2])])
    return buffer.getvalue()


def test_a_phone_jpeg_that_pillow_reads_as_mpo_is_a_familiar_jpeg(classifier):
    data = phone_jpeg(random_image(16, 40, 32))
    assert Image.open(io.BytesIO(data)).format == "MPO"
    profile = {"min_side": 32, "max_side": 48, "formats": ["JPEG"]}

    result = inference.classify_uploads(classifier, [("phone.jpg", data)], info=with_profile(profile))[0]

    assert result.ok and result.unfamiliar is None
    assert image_stats.unfamiliar_reason(profile, 40, 32, "PNG") is not None  # another format still is unfamiliar


def animated(image_format: str, frames: int = 3) -> bytes:
    """An animated WebP or PNG (APNG) of ``frames`` different 40x32 frames."""
    buffer = io.BytesIO()
    first, *rest = [Image.fromarray(random_image(20 + index, 40, 32)) for index in range(frames)]
    first.save(buffer, image_format, save_all=True, append_images=rest, duration=100, lossless=True)
    return buffer.getvalue()


@pytest.mark.parametrize("image_format", ["WEBP", "PNG"])
def test_an_animated_upload_says_its_first_frame_alone_is_classified(classifier, image_format):
    profile = {"min_side": 32, "max_side": 48, "formats": [image_format]}

    result = inference.classify_uploads(classifier, [("clip", animated(image_format))], info=with_profile(profile))[0]

    assert result.ok and result.unfamiliar == "an animation of 3 frames: only its first is classified"


COLOUR_ONLY = {"min_side": 32, "max_side": 48, "formats": ["PNG"], "images": 8, "grayscale": 0}


def test_doubt_flags_a_grayscale_image_to_a_model_trained_on_colour_images_only():
    info = with_profile(COLOUR_ONLY)

    assert run.doubt(info, 40, 32, "PNG", grayscale=True) == \
        "a grayscale image; the model was trained on colour images only"
    assert run.doubt(info, 40, 32, "PNG", grayscale=False) is None
    assert run.doubt(with_profile({"min_side": 32, "max_side": 48, "formats": ["PNG"]}), 40, 32, "PNG",
                     grayscale=True) is None  # a model.json written before the counts


def test_doubt_flags_an_animation_of_two_frames_or_more():
    info = run.ModelInfo(tuple(CLASS_NAMES), IMAGE_SIZE)

    assert run.doubt(info, 40, 32, "WEBP", frames=2) == "an animation of 2 frames: only its first is classified"
    assert run.doubt(info, 40, 32, "WEBP", frames=1) is None


def test_a_grayscale_upload_to_a_model_trained_on_colour_images_only_is_unfamiliar(classifier):
    gray = encode(random_image(16, 40, 32)[..., 0])  # mode L

    result = inference.classify_uploads(classifier, [("gray.png", gray)], info=with_profile(COLOUR_ONLY))[0]

    assert result.ok and result.unfamiliar == "a grayscale image; the model was trained on colour images only"


@pytest.mark.parametrize("shape", [(20, 30), (31, 33), (7, 90), (90, 7), (3, 5000), (1, 1), (40, 48)])
def test_the_apps_grid_crops_are_the_pipelines(shape):
    import tensorflow as tf

    from realvsai import data

    image = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3)).astype(np.float32)
    expected = data.grid_crops(tf.constant(image), 32).numpy()
    np.testing.assert_allclose(inference.grid_crops(image, 32), expected, atol=1e-3)


def test_grid_crops_of_a_long_strip_take_the_memory_of_the_crops():
    """Enlarging the whole 3x50000 strip to 32x533334 took 204 MB on TensorFlow, and on JAX (jax.image.resize
    weighs every input pixel of an axis against every output pixel) failed allocating 106 GB."""

    strip = np.random.default_rng(1).integers(0, 256, (3, 50_000, 3)).astype(np.uint8)
    crops, peak = traced_peak(lambda: inference.grid_crops(strip, 32))
    assert crops.shape == (9, 32, 32, 3) and peak < 20 * 2**20


@pytest.mark.slow
def test_the_app_memory_benchmark_measures_reduced_and_full_decoding_of_a_large_upload(tmp_path):
    results = tmp_path / "app_memory.json"

    process = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_app_memory.py"), "--size", "3000x2000",
                              "--image-size", "32", "--uploads", "2", "--repeats", "1", "--results", str(results)],
                             capture_output=True, text=True, timeout=600)

    assert process.returncode == 0, process.stderr[-2000:]
    measured = json.loads(results.read_text())
    assert (measured["photo"]["width"], measured["photo"]["height"]) == (3000, 2000)
    pair = measured["uploads"]["2"]
    assert pair["reduced / full"]["max_probability_difference"] < 1e-2  # other pixels, the same verdict
    assert pair["full"]["upload_peak_mib"] < pair["full"]["peak_rss_mib"] / 2  # the model not counted
    assert pair["reduced"]["upload_peak_mib"] < pair["full"]["upload_peak_mib"] / 2  # decoded at 1/8 of each side


@pytest.mark.parametrize("edit", [{"class_names": CLASS_NAMES[::-1]}, {"positive_class": CLASS_NAMES[1]}],
                         ids=["class-names-reordered", "positive-class-swapped"])
def test_a_model_json_whose_classes_differ_from_its_evaluation_s_is_refused(tmp_path, edit):
    """model.json edited by hand, its class names reordered or its positive class swapped: every answer turned into
    the other class, exit 0, without a word. metrics.json, the run's own evaluation, still names them as trained."""
    evaluated = {"class_names": CLASS_NAMES, "positive_class": CLASS_NAMES[0], "accuracy": 0.9}
    folder = write_run(tmp_path / "models", "edited", metrics=evaluated, info=edit)

    with pytest.raises(UserError) as refused:
        run.read_run(folder)
    field = next(iter(edit))
    assert str(refused.value).startswith(f"{folder / 'model.json'}: {field} ") and "metrics.json" in str(refused.value)
    assert run.read_run(write_run(tmp_path / "models", "as-trained", metrics=evaluated)).class_names == CLASS_NAMES


@pytest.mark.parametrize("record", ["metrics.json", "model.json's test_metrics"])
def test_a_model_json_whose_threshold_is_not_the_one_its_test_numbers_were_measured_at_shows_no_test_numbers(
        tmp_path, record):
    """model.json's decision_threshold edited by hand (0.474 to 0.3): the app answered by the new threshold and showed
    the test numbers measured at the old one as that rule's."""
    measured = {"accuracy": 0.9, "f1": 0.9, "num_images": 20, "decision_threshold": 0.474}
    info = {"decision_threshold": 0.3}
    if record == "metrics.json":
        folder = write_run(tmp_path, "edited", metrics=measured, info=info)
    else:
        folder = write_run(tmp_path, "edited", info={**info, "test_metrics": measured})
        (folder / "metrics.json").unlink()

    opened = run.read_run(folder)

    assert opened.test_metrics() == {} and opened.num_test_images() is None
    assert "0.474" in opened.unmeasured and "0.3" in opened.unmeasured and "--evaluate" in opened.unmeasured


def test_a_model_json_whose_threshold_was_edited_names_an_evaluate_command_that_runs(tmp_path):
    """The advice 'measure this rule with python ModelTraining.py --evaluate RUN' left out --test-dir, which
    --evaluate needs: pasted, it stopped at a usage error. It names the run's own test folder."""
    import shlex

    import ModelTraining

    data = tmp_path / "my data"
    (data / "test").mkdir(parents=True)
    measured = {"accuracy": 0.9, "num_images": 20, "decision_threshold": 0.474}
    folder = write_run(tmp_path, "edited", metrics=measured,
                       info={"decision_threshold": 0.3, "config": {"data": str(data)}})

    command = run.read_run(folder).unmeasured.split("python ModelTraining.py ")[1]
    args = ModelTraining.parse_args(shlex.split(command))

    assert args.test_dir == [data / "test"] and args.evaluate == folder


def test_a_model_json_whose_threshold_was_edited_says_where_the_evaluation_it_advises_writes_its_numbers(tmp_path):
    """Followed, the advised --evaluate wrote its numbers in the run's eval-test/ folder, and the app went on saying
    "No test metrics shown" as before, with no word that it would."""
    folder = write_run(tmp_path, "edited", metrics={"accuracy": 0.9, "num_images": 20, "decision_threshold": 0.474},
                       info={"decision_threshold": 0.3})

    said = run.read_run(folder).unmeasured

    assert "writes its numbers in a folder of the run's own (eval-...), not in these records" in said, said


def test_a_model_json_whose_classes_differ_from_those_its_test_numbers_record_is_refused_without_metrics_json(
        tmp_path):
    """With metrics.json beside it a model.json whose class names were reordered by hand was refused; without it
    (a run folder copied with model.h5 and model.json alone) every answer turned into the other class's."""
    measured = {"accuracy": 0.9, "class_names": CLASS_NAMES, "positive_class": CLASS_NAMES[0]}
    folder = write_run(tmp_path, "edited", info={"class_names": CLASS_NAMES[::-1], "test_metrics": measured})
    (folder / "metrics.json").unlink()

    with pytest.raises(UserError) as refused:
        run.read_run(folder)
    assert str(refused.value).startswith(f"{folder / 'model.json'}: class_names ")


@pytest.mark.parametrize("file_name", ["model.h5", "model.json"])
def test_a_run_file_that_cannot_be_read_is_said_to_be_unreadable_not_corrupt(tmp_path, permissions_bind, file_name):
    """A model.h5 of chmod 000 was called "corrupt, truncated or another kind of file", with the advice to train the
    model again: hours, for a file that is whole (and a model.json said to need training again)."""
    folder = write_run(tmp_path, "locked")
    (folder / file_name).chmod(0)
    try:
        with pytest.raises(UserError) as refused:
            run.load_run(folder)
    finally:
        (folder / file_name).chmod(0o644)
    message = str(refused.value)
    assert message.startswith(f"{folder / file_name}: permission denied"), message
    assert "corrupt" not in message and "train" not in message.lower()
