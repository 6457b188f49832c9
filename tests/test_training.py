"""Training: settings and planning (fast), one shared tiny real run, resume after kill -9, MirroredStrategy."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import (
    PHOTO_LIMIT,
    REPO,
    needs_jax,
    read_history_csv,
    run_script,
    sha256,
    snapshot,
    watch_hashing,
    write_image,
    write_phone_photo,
)
from test_cli import drop_a_ctrl_c

import ModelTraining
from realvsai import fitting, image_stats, training
from realvsai import model as model_module
from realvsai.config import Phase, TrainConfig, resolve_run_dir
from realvsai.errors import UserError
from realvsai.metrics import balanced_class_weights, find_positive_class
from realvsai.run import load_run

# --- settings and planning ------------------------------------------------------------------------


def test_a_run_records_how_many_training_images_are_offline_copies_and_their_settings(tmp_path):
    from realvsai.data import scan_images

    for name in ("a.png", "aug_a_0.jpg", "aug_a_1.jpg"):
        write_image(tmp_path / "data" / "train" / "REAL" / name, seed=len(name))
    settings = {"copies": 2, "preset": "classic", "seed": 1, "size": "native", "jpeg_quality": 95}
    (tmp_path / "data" / "augmented-settings.json").write_text(json.dumps(settings))

    copies = training.training_images_record(tmp_path / "data",
                                            scan_images(tmp_path / "data" / "train"))["augmented_copies"]

    assert copies == {"count": 2, "originals": {"REAL": 1}, "settings": settings}


def test_training_hashes_each_file_at_most_once_before_it_trains(tmp_path, monkeypatch):
    """The identical-file check hashes every file that shares its size with a file of another split or class (nearly
    all of CIFAKE's 32 px JPEGs), and counting the augmented copies hashed each copy again: 387,170 hashes of 243,579
    files before CIFAKE's first batch, with two copies of each training image moved into train."""
    from realvsai import files, moving
    from realvsai.moving import CopySource, add_moved_copies

    root = tmp_path / "data"
    for split, count in (("train", 2), ("validation", 1), ("test", 1)):
        for offset, name in ((0, "FAKE"), (100, "REAL")):
            for index in range(count):  # BMPs of one size: every file shares its size with files of other classes
                write_image(root / split / name / f"{index}.bmp", seed=offset + 10 * len(split) + index)
    copies = [write_image(root / "train" / name / f"aug_0_{number}.bmp", seed=1000 + offset + number)
              for offset, name in ((0, "FAKE"), (100, "REAL")) for number in range(2)]
    add_moved_copies(root, [CopySource(sha256(copy), f"train/{copy.parent.name}/0.bmp",
                                       sha256(copy.parent / "0.bmp")) for copy in copies])
    hashed: list[str] = []

    def counted(path):
        hashed.append(os.path.realpath(path))
        return sha256(Path(path))

    class ModelBuilt(Exception):
        """Stops the run once its data is read."""

    def built(*args, **kwargs):
        raise ModelBuilt

    for module in (files, moving):  # the identical-file check hashes through files.same_bytes_across
        monkeypatch.setattr(module, "sha256_file", counted)
    monkeypatch.setattr(model_module, "build_model", built)
    config = TrainConfig(data=root, out=tmp_path / "models", name="once", weights="none", image_size=32)
    with pytest.raises(ModelBuilt):
        training.train(config, verbose=0)

    assert {os.path.realpath(copy) for copy in copies} <= set(hashed)  # the identical-file check read them
    assert [path for path in set(hashed) if hashed.count(path) > 1] == []


def test_counting_the_augmented_copies_reads_the_copies_not_read_yet_under_a_progress_bar(tmp_path, monkeypatch):
    """model.json counts the copies moved into train by their bytes (augmented-copies.csv): each copy the
    identical-file check did not read was hashed with nothing on the screen, before the settings table."""
    from realvsai import moving
    from realvsai.data import scan_images
    from realvsai.moving import CopySource, add_moved_copies

    root = tmp_path / "data"
    copies = []
    for offset, name in ((0, "FAKE"), (100, "REAL")):
        write_image(root / "train" / name / "a.png", seed=offset)
        copies += [write_image(root / "train" / name / f"aug_a_{number}.jpg", seed=offset + 1 + number)
                   for number in range(2)]
    add_moved_copies(root, [CopySource(sha256(copy), f"train/{copy.parent.name}/a.png",
                                       sha256(copy.parent / "a.png")) for copy in copies])
    watch = watch_hashing(monkeypatch, moving)

    record = training.training_images_record(root, scan_images(root / "train"), {copies[0]: sha256(copies[0])})

    assert record["augmented_copies"]["count"] == 4
    assert watch.hashed_outside == [] and watch.bars == [("counting augmented copies", 3)]


@pytest.mark.parametrize("shortcut", ["format", "size"])
def test_the_shortcut_check_of_model_json_leaves_out_the_augmented_copies(tmp_path, shortcut):
    """A copy repeats its source's size and takes the format DataAugmentation.py gave it: counted, the copies hide
    a format shortcut of the originals (every copy a JPEG) and make one of size (a copy's nearest image is its
    source), so the card's warning would say the opposite of the split's."""
    from realvsai.data import scan_images

    train = tmp_path / "data" / "train"
    for index in range(6):
        for offset, name in ((0, "FAKE"), (100, "REAL")):
            if shortcut == "format":  # FAKE's originals PNG, REAL's JPEG, all 32 x 32
                size, suffix = (32, 32), ".png" if name == "FAKE" else ".jpg"
            else:  # the classes' sizes interleaved, so size alone does not tell them apart
                size, suffix = (32 + 2 * index + (name == "REAL"), 40), ".png"
            write_image(train / name / f"{index}{suffix}", seed=offset + index, size=size)
            for copy in range(3):
                write_image(train / name / f"aug_{index}_{copy}.jpg", seed=1000 + offset + 10 * index + copy, size=size)

    record = training.training_images_record(tmp_path / "data", scan_images(train))

    assert record["augmented_copies"] == {"count": 36, "originals": {"FAKE": 6, "REAL": 6}, "settings": None}
    assert record["training_images"]["images"] == 48  # the profile the app compares uploads with: every image
    if shortcut == "format":
        assert record["shortcuts"]["format"] == 1.0 and "file format alone predicts" in record["shortcut_warning"]
    else:
        assert record["shortcuts"]["size"] < 0.5 and record["shortcut_warning"] is None


@pytest.mark.parametrize(("class_names", "expected"), [
    (["FAKE", "REAL"], "FAKE"),
    (["REAL", "FAKE"], "FAKE"),
    (["AiArtData", "RealArt"], "AiArtData"),
    (["real_photos", "ai_generated"], "ai_generated"),
    (["Natural", "SyntheticImages"], "SyntheticImages"),
    (["RAIN", "SUN"], None),  # "ai" inside a word does not count
    (["fake", "generated"], None),  # ambiguous
    (["FAKE", "REAL", "OTHER"], None),  # more than two classes: macro-averaged metrics
])
def test_positive_class_is_the_class_named_like_a_generated_one(class_names, expected):
    assert find_positive_class(class_names) == expected


def test_positive_class_flag_must_name_a_class_of_a_binary_problem():
    assert find_positive_class(["FAKE", "REAL"], "REAL") == "REAL"
    with pytest.raises(UserError, match="no such class"):
        find_positive_class(["FAKE", "REAL"], "Fake")
    with pytest.raises(UserError, match="two classes"):
        find_positive_class(["a", "b", "c"], "a")


def test_positive_class_typed_with_a_composed_accent_names_the_class_a_mac_wrote_decomposed():
    """A split of a Mac's "Généré/" keeps its decomposed accents: --positive-class Généré, typed on Linux or Windows,
    was refused as "no such class; the classes are ['Généré', 'Réel']", which print alike (as --rename takes it)."""
    decomposed, composed = "Ge\u0301ne\u0301re\u0301", "G\u00e9n\u00e9r\u00e9"
    assert find_positive_class([decomposed, "Real"], composed) == decomposed


def test_pretrained_phases_share_one_epoch_axis_and_fine_tuning_takes_the_epochs_the_head_left():
    config = TrainConfig(head_epochs=2, fine_tune_epochs=3)
    assert config.phase_names() == ["head", "fine_tune"]
    head = config.plan_phase("head")
    assert (head.start, head.end, head.learning_rate, head.train_backbone) == (0, 2, 1e-3, False)
    fine_tune = config.plan_phase("fine_tune", head_epochs_run=2)
    assert (fine_tune.start, fine_tune.end, fine_tune.learning_rate) == (2, 5, 1e-5)
    assert (config.plan_phase("fine_tune", head_epochs_run=1).start, config.plan_phase("fine_tune", 1).end) == (1, 5)
    assert TrainConfig(head_epochs=0).phase_names() == ["fine_tune"]
    assert TrainConfig(fine_tune_epochs=0).phase_names() == ["head"]


def test_from_scratch_trains_everything_for_all_epochs_in_one_phase():
    config = TrainConfig(weights="none", head_epochs=2, fine_tune_epochs=6)
    assert config.phase_names() == ["full"]
    full = config.plan_phase("full")
    assert (full.start, full.end, full.learning_rate, full.train_backbone) == (0, 8, 1e-3, True)


def test_learning_rate_decays_linearly_over_the_phase_steps():
    optimizer = fitting.make_optimizer(1e-3, 0.01, decay_steps=40)
    schedule = optimizer.learning_rate if callable(optimizer.learning_rate) else optimizer._learning_rate
    assert float(schedule(0)) == pytest.approx(1e-3)
    assert float(schedule(20)) == pytest.approx(0.505e-3)
    assert float(schedule(40)) == pytest.approx(1e-5)


def test_class_weights_balance_the_classes_and_can_be_turned_off():
    counts = {"FAKE": 600, "REAL": 200}
    weights = balanced_class_weights(counts)
    assert weights == pytest.approx({0: 800 / (2 * 600), 1: 800 / (2 * 200)})
    assert weights[0] * 600 == pytest.approx(weights[1] * 200)  # each class weighs the same in the loss
    assert TrainConfig().class_weights
    assert not ModelTraining.config_from_args(ModelTraining.parse_args(["--no-class-weights"])).class_weights


@pytest.mark.parametrize(("precision", "gpus", "expected"), [
    ("auto", 0, "float32"), ("auto", 1, "mixed_float16"), ("mixed_bfloat16", 0, "mixed_bfloat16"),
    ("float32", 4, "float32"),
])
def test_precision_auto_is_mixed_float16_on_a_gpu_and_float32_on_cpu(precision, gpus, expected):
    assert TrainConfig(precision=precision).precision_policy(gpus) == expected


def test_config_round_trips_through_json():
    config = TrainConfig(data=Path("d"), name="run", weights="none", head_epochs=1)
    assert TrainConfig.from_json(json.loads(json.dumps(config.to_json()))) == config


@pytest.mark.parametrize(("change", "message"), [
    ({"backbone": "vgg16"}, "--backbone"),
    ({"head_epochs": 0, "fine_tune_epochs": 0}, "are both 0"),
    ({"name": "../elsewhere"}, "--name"),
    ({"name": ".."}, "--name"),
    ({"name": "."}, "--name"),
    ({"image_size": 16}, "--image-size"),
    ({"dropout": 1.0}, "--dropout"),
])
def test_invalid_settings_are_user_errors(change, message):
    with pytest.raises(UserError, match=message):
        TrainConfig(**change).validate()


def test_a_folder_that_is_not_a_run_is_refused_as_such_without_advice_to_resume_it(tmp_path):
    """It said "Continue that run with --resume", and --resume said the folder is not a run."""
    (tmp_path / "run1").mkdir()
    (tmp_path / "run1" / "notes.txt").write_text("mine")  # an empty folder is what a killed start leaves: used
    with pytest.raises(UserError, match=r"run1 already exists and is not a run folder .*Choose another") as raised:
        resolve_run_dir(TrainConfig(out=tmp_path, name="run1"), resume=False)
    assert "--resume" not in str(raised.value)


def test_an_unfinished_run_is_refused_without_resume_with_the_command_that_continues_it(tmp_path):
    (tmp_path / "run1" / "backup").mkdir(parents=True)
    (tmp_path / "run1" / "backup" / "config.json").write_text("{}")
    (tmp_path / "run1" / "model.json").write_text("{}")  # written as the run starts
    with pytest.raises(UserError, match=r"run1 holds a run that has not finished \(it was stopped\)\. "
                                        r"Continue it with python ModelTraining\.py --resume --name run1 --out "):
        resolve_run_dir(TrainConfig(out=tmp_path, name="run1"), resume=False)


def test_a_second_start_of_a_run_that_is_training_names_the_process_instead_of_advising_resume(tmp_path):
    """It said "it is training now, or was stopped. Continue it with ... --resume", which the lock then refused."""
    from realvsai.files import working_on

    (tmp_path / "run1" / "backup").mkdir(parents=True)
    (tmp_path / "run1" / "backup" / "config.json").write_text("{}")
    refusal = rf"run1 is training now in ModelTraining\.py \(process {os.getpid()}\); choose another --name\.$"
    with working_on([tmp_path / "run1"], "ModelTraining.py"), pytest.raises(UserError, match=refusal) as refused:
        resolve_run_dir(TrainConfig(out=tmp_path, name="run1"), resume=False)
    assert "--resume" not in str(refused.value)


def test_resume_of_a_finished_or_missing_run_is_refused(tmp_path):
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "model.json").write_text("{}")
    with pytest.raises(UserError, match="finished"):
        resolve_run_dir(TrainConfig(out=tmp_path, name="done"), resume=True)
    with pytest.raises(UserError, match="nothing to resume"):
        resolve_run_dir(TrainConfig(out=tmp_path, name="never"), resume=True)


def test_workers_data_digest_depends_on_the_files_not_on_where_the_data_folder_is(tmp_path, make_class_folder):
    from realvsai import data

    def digest(folder):
        return data.data_digest(folder, data.scan_images(folder / "train"), data.scan_images(folder / "validation"))

    for machine in ("a", "b", "c"):
        make_class_folder(tmp_path / machine / "train", {"FAKE": 2, "REAL": 2})
        make_class_folder(tmp_path / machine / "validation", {"FAKE": 1, "REAL": 1})
    write_image(tmp_path / "c" / "train" / "REAL" / "extra.png", seed=5)
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")


@pytest.mark.skipif(os.sep != "/", reason="the digest holds the paths as the system writes them")
@pytest.mark.parametrize("spelling", ["data", "data/", "./data", "{tmp}/data", "x/../data", "../{name}/data", "."])
def test_the_data_digest_of_a_dataset_stays_the_one_its_runs_recorded(tmp_path, monkeypatch, spelling):
    """--resume compares the digest a run recorded as it started with its data's now: one computed another way would
    refuse every run started before ("changed since the run started"), however --data is spelt."""
    from realvsai.data import LabelledImages, data_digest

    monkeypatch.chdir(tmp_path)
    data_dir = Path(spelling.format(tmp=tmp_path, name=tmp_path.name))

    def images(split, names, sizes):
        files = [data_dir / split / class_name / name for class_name, name in names]
        return LabelledImages(files, [["FAKE", "REAL"].index(class_name) for class_name, _ in names],
                              ["FAKE", "REAL"], sizes, [False] * len(files))

    train = images("train", [("FAKE", "a b.png"), ("FAKE", "aug_a b_0.jpg"), ("REAL", "\u00e9t\u00e9.jpg")],
                   [(32, 32), (32, 32), (4032, 3024)])
    validation = images("validation", [("FAKE", "c.webp"), ("REAL", "d.JPG")], [(640, 480), (1, 1)])

    recorded = "5ede3f486f010962bf15c6c82ed9831f0702c05a4f0bbd051f6f50f6f1dee58a"  # as the digest was first computed
    assert data_digest(data_dir, train, validation) == recorded


def test_summary_of_a_worker_that_is_not_the_chief_names_the_chiefs_run_folder():
    result = training.TrainResult(Path("models/run"), None, {"best_epoch": {"epoch": 2, "val_loss": 0.5}}, [], None,
                                  chief=False)
    summary = ModelTraining.summarize(result)
    assert "the chief wrote the run to models/run on its machine" in summary and "best epoch 2" in summary
    assert not summary.startswith("trained")


def test_the_demo_ends_with_the_command_that_serves_its_model(tmp_path, monkeypatch, capsys, cli):
    """``--demo --out DIR`` said ``streamlit run App.py``, which opens the newest run in ./models, not DIR/demo."""
    from realvsai import demo

    run_dir = tmp_path / "my models" / "demo"
    monkeypatch.setattr(demo, "run_demo", lambda config, **_: training.TrainResult(run_dir, None, {}, [], None))
    assert cli(["--demo", "--out", str(run_dir.parent), "--quiet"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.endswith(f"streamlit run App.py -- --model '{run_dir}'")


def test_the_closing_line_says_which_rule_each_accuracy_follows():
    """``val_accuracy 0.9091; test accuracy 0.0000`` set Keras' highest-probability accuracy beside the decision
    threshold's without a word: here the threshold chosen on one validation image."""
    best = {"epoch": 1, "val_loss": 0.5, "val_accuracy": 0.9091}
    test = {"accuracy": 0.0, "decided_by": "threshold", "decision_threshold": 0.401, "argmax_accuracy": 0.5}
    summary = ModelTraining.summarize(training.TrainResult(Path("models/run"), None, {"best_epoch": best}, [], test))
    assert "val_accuracy 0.9091" in summary
    assert "test accuracy 0.0000 at the decision threshold 0.401 (0.5000 by the highest probability" in summary
    argmax = {"accuracy": 0.75, "decided_by": "argmax", "argmax_accuracy": 0.75}
    summary = ModelTraining.summarize(training.TrainResult(Path("models/run"), None, {"best_epoch": best}, [], argmax))
    assert summary.endswith("test accuracy 0.7500")


def test_the_closing_line_gives_the_balanced_accuracy_beside_the_accuracy():
    """On 150 FAKE and 1 REAL test images, "test accuracy 0.9934" was all the closing line said of a model that
    answers FAKE on every image."""
    test = {"accuracy": 0.9934, "balanced_accuracy": 0.5, "decided_by": "threshold", "decision_threshold": 0.5,
            "argmax_accuracy": 0.9934}
    summary = ModelTraining.summarize(training.TrainResult(Path("models/run"), None, {}, [], test))
    assert "test accuracy 0.9934 (balanced accuracy 0.5000) at the decision threshold 0.500" in summary


def test_the_closing_line_says_over_how_many_classes_the_balanced_accuracy_is_taken():
    """Three classes, c without test images: the balanced accuracy is the mean recall of the other two, at chance
    0.50, not 1/3; and n/a where only one class has test images."""
    test = {"accuracy": 0.75, "balanced_accuracy": 0.75, "decided_by": "argmax", "argmax_accuracy": 0.75,
            "class_names": ["a", "b", "c"], "missing_classes": ["c"]}
    summary = ModelTraining.summarize(training.TrainResult(Path("models/run"), None, {}, [], test))
    assert summary.endswith("test accuracy 0.7500 (balanced accuracy 0.7500 over 2 of 3 classes, chance 0.50)")
    test = {**test, "balanced_accuracy": None, "class_names": ["FAKE", "REAL"], "missing_classes": ["REAL"]}
    summary = ModelTraining.summarize(training.TrainResult(Path("models/run"), None, {}, [], test))
    assert summary.endswith("test accuracy 0.7500 (balanced accuracy n/a: no test images of REAL)")


def test_the_closing_line_gives_the_majority_baseline_and_says_when_the_model_answered_one_class():
    """A model answering big for every test image, 9 of 10 of them big, closed on "test accuracy 0.9000 (balanced
    accuracy 0.5000)" and nothing else."""
    test = {"accuracy": 0.9, "balanced_accuracy": 0.5, "decided_by": "argmax", "argmax_accuracy": 0.9,
            "majority_class": "big", "majority_baseline": 0.9, "single_answer": "big"}
    summary = ModelTraining.summarize(training.TrainResult(Path("models/run"), None, {}, [], test))
    assert summary.endswith("test accuracy 0.9000 (balanced accuracy 0.5000), majority baseline 0.9000; the model "
                            "answered big for every test image: always answering big scores accuracy 0.90 here")


def test_the_closing_line_says_on_how_many_test_images_the_app_would_answer_uncertain():
    """The README promises the closing line says it; the test line that did was an info log, hidden by --quiet."""
    test = {"accuracy": 0.75, "decided_by": "argmax", "argmax_accuracy": 0.75, "num_images": 8, "uncertain": 2,
            "accuracy_when_certain": 0.8333}
    summary = ModelTraining.summarize(training.TrainResult(Path("models/run"), None, {}, [], test))
    assert summary.endswith("test accuracy 0.7500; Uncertain on 2 of 8 images (accuracy 0.8333 on the other 6)")


def test_the_closing_line_says_why_a_run_without_a_test_folder_has_no_test_numbers():
    """A run on train/ and validation/ alone ended on its best epoch, with no word of test numbers: the one line
    that said why was an info log, hidden by --quiet."""
    info = {"best_epoch": {"epoch": 1, "val_loss": 0.5, "val_accuracy": 0.75}, "config": {"data": "my data"}}
    summary = ModelTraining.summarize(training.TrainResult(Path("models/run"), None, info, [], None))
    assert summary.endswith("no test numbers: my data has no test folder (evaluate the run on other images with "
                            "python ModelTraining.py --evaluate models/run --test-dir DIR)")


def test_resume_takes_the_runs_saved_settings(tmp_path):
    saved = TrainConfig(out=tmp_path, name="run", weights="none", head_epochs=3, seed=7)
    (tmp_path / "run" / "backup").mkdir(parents=True)
    (tmp_path / "run" / "backup" / "config.json").write_text(json.dumps(saved.to_json()))
    config, run_dir = resolve_run_dir(TrainConfig(out=tmp_path, name="run"), resume=True)
    assert config == saved and run_dir == tmp_path / "run"


def test_validation_classes_must_match_train(tmp_path, make_class_folder):
    make_class_folder(tmp_path / "data" / "train", {"FAKE": 2, "REAL": 2})
    make_class_folder(tmp_path / "data" / "validation", {"FAKE": 1, "Real": 1})
    config = TrainConfig(data=tmp_path / "data", out=tmp_path / "models", name="x", weights="none")
    with pytest.raises(UserError, match=r"missing \['REAL'\].*unexpected \['Real'\]"):
        training.train(config)
    assert not (tmp_path / "models" / "x").exists()


@pytest.fixture
def cli():
    """ModelTraining.main, run in this process."""
    return ModelTraining.main


def test_a_training_says_it_loads_tensorflow_before_that_wait(tmp_path, make_class_folder):
    """A training began with 5-15 s without a word while TensorFlow loaded (here one that then finds no validation
    folder, which is read after it)."""
    make_class_folder(tmp_path / "data" / "train", {"FAKE": 2, "REAL": 2})

    process = run_script("ModelTraining.py", "--data", "data", "--out", "models", "--name", "x", "--weights", "none",
                         "--image-size", "32", cwd=tmp_path)

    assert process.returncode == 1 and "no validation folder" in process.stderr, process.stderr
    assert process.stderr.splitlines()[0] == f"loading TensorFlow to train {Path('models', 'x')}", process.stderr


def test_a_training_without_a_name_says_it_loads_tensorflow_for_a_new_run_in_out(tmp_path, make_class_folder):
    """Without --name the run's name (a timestamp) is not chosen yet: the line named --out as if it were the run."""
    make_class_folder(tmp_path / "data" / "train", {"FAKE": 2, "REAL": 2})

    process = run_script("ModelTraining.py", "--data", "data", "--out", "models", "--weights", "none",
                         "--image-size", "32", cwd=tmp_path)

    assert process.stderr.splitlines()[0] == "loading TensorFlow to train a new run in models", process.stderr


def test_training_refuses_data_it_cannot_read_before_it_lists_its_settings(tmp_path, capsys, cli):
    """``--data nope`` printed the whole settings table (about 30 lines) above the one line that mattered."""
    code = cli(["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "models"), "--name", "x",
                "--weights", "none"])
    err = capsys.readouterr().err
    assert code == 1 and "nope is not an existing folder" in err.strip().splitlines()[-1]
    assert "settings:" not in err


@pytest.mark.parametrize(("flags", "said"), [
    (["--positive-class", "NOPE"], "--positive-class NOPE: no such class"),
    (["--weights", "notes.txt"], "--weights notes.txt is corrupt, truncated or not an HDF5 weights file"),
], ids=["positive_class", "weights"])
def test_training_refuses_settings_it_cannot_use_before_it_lists_them(tmp_path, monkeypatch, capsys, cli,
                                                                       make_class_folder, flags, said):
    """--positive-class NOPE, or a --weights file that holds no weights, printed the settings table (about 30 lines)
    above the one line that mattered, as --data nope did."""
    monkeypatch.chdir(tmp_path)
    for split in ("train", "validation"):
        make_class_folder(tmp_path / "data" / split, {"FAKE": 2, "REAL": 2})
    (tmp_path / "notes.txt").write_text("not weights\n")
    code = cli(["--data", "data", "--out", "models", "--name", "x", "--image-size", "32", *flags])
    err = capsys.readouterr().err
    assert code == 1 and said in err.strip().splitlines()[-1], err
    assert "settings:" not in err
    assert not (tmp_path / "models" / "x").exists()


def test_cli_refuses_an_existing_run_in_one_line(tmp_path, make_class_folder, capsys, cli):
    make_class_folder(tmp_path / "data" / "train", {"FAKE": 2, "REAL": 2})
    (tmp_path / "models" / "taken" / "backup").mkdir(parents=True)
    (tmp_path / "models" / "taken" / "backup" / "config.json").write_text("{}")
    code = cli(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "models"), "--name", "taken", "--quiet"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and error[-1].startswith("error: ") and "--resume" in error[-1]


@pytest.mark.parametrize("out", ["test", "train", "", "test/preds"])
def test_cli_refuses_an_out_inside_data_before_it_trains_or_writes(tmp_path, make_class_folder, capsys, monkeypatch,
                                                                   cli, out):
    """--out "data/my out/test" trained the whole run, then its final evaluation found the run folder among the test
    classes (and --resume repeated it); in train/ the run finished, but the next training found class 't7' empty."""
    data = tmp_path / "data" / "my out"
    for split in ("train", "validation", "test"):
        make_class_folder(data / split, {"FAKE": 2, "REAL": 2})
    monkeypatch.setattr(training, "_train", lambda *args: pytest.fail("trained"))
    before = snapshot(data)
    code = cli(["--data", str(data), "--out", str(data / out), "--name", "t7", "--image-size", "32", "--weights",
                "none", "--quiet"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(error) == 1
    assert error[0] == (f"error: --out {data / out} lies inside --data {data} (the run folder would land among the "
                        "dataset's images); choose an --out outside it, e.g. --out models.")
    assert snapshot(data) == before


def test_resume_of_a_run_inside_its_data_says_to_move_it_out_and_the_move_resumes(tmp_path):
    """A run started with --out inside --data (before that was refused) failed its final evaluation on every
    --resume; so does one whose dataset moved around it (--data NEW, --out inside NEW)."""
    data = tmp_path / "data" / "my out"
    run = data / "test" / "t7"
    (run / "backup").mkdir(parents=True)
    (run / "backup" / "config.json").write_text(json.dumps(TrainConfig(data=data, name="t7", weights="none",
                                                                       out=data / "test").to_json()))
    for given in (None, data):
        with pytest.raises(UserError) as refused:
            resolve_run_dir(TrainConfig(out=data / "test", name="t7"), resume=True, data=given)
        assert str(refused.value) == (
            f"{run} lies inside its dataset {data}, where it would be read as images; move it out of there "
            f"(mkdir -p models && mv {shlex.quote(str(run))} models/), then continue it with: "
            "python ModelTraining.py --resume --name t7"
            + ("" if given is None else f" --data {shlex.quote(str(data))}") + ".")
    (tmp_path / "models").mkdir()
    shutil.move(run, tmp_path / "models")  # as the advice says, from the repository: out of the dataset
    config, run_dir = resolve_run_dir(TrainConfig(out=tmp_path / "models", name="t7"), resume=True)
    assert run_dir == tmp_path / "models" / "t7" and config.data == data


@pytest.mark.parametrize("name", ["..", ".", "", "runs/art", "runs\\art", "/tmp/art", "../art",
                                  pytest.param("x" * 256, id="over_255_bytes")])
@pytest.mark.parametrize("mode", [[], ["--resume"], ["--demo"]], ids=["train", "resume", "demo"])
def test_cli_run_name_must_be_a_plain_folder_name(tmp_path, capsys, monkeypatch, cli, name, mode):
    monkeypatch.chdir(tmp_path)  # --demo would write data/demo/ here
    (tmp_path / "models").mkdir()
    (tmp_path / "history.csv").write_text("a user's file")
    with pytest.raises(SystemExit) as exit_info:
        cli(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "models"), "--name", name, "--quiet", *mode])
    assert exit_info.value.code == 2 and "--name" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["history.csv", "models"]
    assert list((tmp_path / "models").iterdir()) == []


@pytest.mark.parametrize("size", ["7", "31", "0"])
def test_cli_image_size_below_the_backbones_minimum_is_a_command_line_error(tmp_path, capsys, cli, size):
    with pytest.raises(SystemExit) as exit_info:
        cli(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "models"), "--image-size", size, "--quiet"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and "--image-size" in error and "32" in error and "--batch-size" not in error
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("flags", [
    ["--l2", "nan"], ["--l2", "-0.1"], ["--noise", "-1"], ["--noise", "inf"], ["--stop-margin", "nan"],
    ["--stop-margin", "-inf"], ["--learning-rate", "nan"], ["--learning-rate", "inf"], ["--learning-rate", "0"],
    ["--fine-tune-learning-rate", "nan"], ["--fine-tune-learning-rate", "-1e-5"], ["--dropout", "1.5"],
    ["--dropout", "1"], ["--dropout", "nan"], ["--image-size", "100000"], ["--batch-size", "0"],
    ["--batch-size", "1000000"], ["--head-epochs", "-1"], ["--fine-tune-epochs", "-1"],
    ["--head-epochs", "0", "--fine-tune-epochs", "0"], ["--fine-tune-blocks", "-1"], ["--head-units", "0"],
    ["--stop-patience", "0"], ["--early-stopping-patience", "0"], ["--seed", "-1"], ["--l2", "x"],
    ["--max-pixels", str(2**62 + 1)],
], ids=" ".join)
def test_cli_values_no_run_can_use_are_command_line_errors(tmp_path, capsys, cli, flags):
    with pytest.raises(SystemExit) as exit_info:
        cli(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "models"), "--quiet", *flags])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    named = flags[-2] if flags[-2].startswith("--") else flags[0]
    assert exit_info.value.code == 2 and ": error: " in error and named in error
    assert not (tmp_path / "models").exists()


def test_no_epochs_is_refused_in_the_same_words_on_the_command_line_and_in_settings(tmp_path, capsys, cli):
    """ModelTraining.py said "are both 0", TrainConfig.validate "not both 0"; the command line's is a usage error."""
    with pytest.raises(SystemExit) as exit_info:
        cli(["--data", str(tmp_path / "data"), "--head-epochs", "0", "--fine-tune-epochs", "0", "--quiet"])
    with pytest.raises(UserError) as raised:
        TrainConfig(head_epochs=0, fine_tune_epochs=0).validate()
    problem = "--head-epochs and --fine-tune-epochs are both 0: give at least one epoch to train"
    assert exit_info.value.code == 2 and f"error: {problem} (" in capsys.readouterr().err
    assert str(raised.value) == f"{problem}."


@pytest.mark.parametrize(("terminal", "quiet", "expected"),
                         [(True, False, "auto"), (False, False, 2), (False, True, 0)])
def test_cli_shows_keras_step_bars_on_a_terminal_and_a_line_per_epoch_in_a_log(tmp_path, monkeypatch, cli, terminal,
                                                                               quiet, expected):
    """Redirected to a file, Keras' step bars write a line every 0.05 s, with terminal escape codes."""
    seen = []

    def train(config, **kwargs):
        seen.append(kwargs["verbose"])
        return training.TrainResult(tmp_path, None, {"best_epoch": {"epoch": 1, "val_loss": 0.5}}, [], None,
                                    chief=False)

    monkeypatch.setattr(training, "train", train)
    monkeypatch.setattr("sys.stdout.isatty", lambda: terminal)
    assert cli(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "models"), *(["--quiet"] * quiet)]) == 0
    assert seen == [expected]


def test_cli_seed_out_of_range_names_its_bound_in_full(tmp_path, capsys, cli):
    with pytest.raises(SystemExit) as exit_info:
        cli(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "models"), "--seed", "-1", "--quiet"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and "from 0 to 4,294,967,295" in error and "e+" not in error


@pytest.mark.parametrize("flags", [["--dropout", "0"], ["--l2", "0"], ["--noise", "0"], ["--head-epochs", "0"],
                                   ["--fine-tune-epochs", "0"], ["--learning-rate", "1e-2"], ["--image-size", "32"]],
                         ids=" ".join)
def test_cli_edge_values_a_run_can_use_are_accepted(flags):
    args = ModelTraining.parse_args(flags)
    ModelTraining.config_from_args(args).validate()


def test_cli_malformed_tf_config_is_a_one_line_error(tmp_path, capsys, monkeypatch, cli):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1"]}, "task": {"type": "worker", "index": 0}}')
    code = cli(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "models"), "--quiet"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and error[-1].startswith("error: TF_CONFIG") and "Traceback" not in "\n".join(error)
    assert not (tmp_path / "models").exists()


def test_cli_offline_imagenet_names_the_file_to_put_where(tmp_path, make_class_folder, capsys, monkeypatch, cli):
    def offline(*args, **kwargs):  # what keras.utils.get_file raises for a URLError
        raise Exception("URL fetch failure on https://...: None -- no network")

    monkeypatch.setitem(model_module.APPLICATIONS, "resnet101", offline)
    monkeypatch.setattr(model_module, "KERAS_MODELS_DIR", tmp_path / "keras-cache")
    for split in ("train", "validation"):
        make_class_folder(tmp_path / "data" / split, {"FAKE": 2, "REAL": 2})
    code = cli(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "models"), "--name", "offline",
                "--image-size", "32", "--quiet"])
    error = capsys.readouterr().err
    assert code == 1
    assert "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5" in error and "--weights" in error
    assert "Traceback" not in error


def test_cli_evaluate_on_a_corrupt_model_is_one_line_without_traceback(tmp_path, make_class_folder, capsys, cli):
    run = tmp_path / "models" / "art"
    run.mkdir(parents=True)
    (run / "model.h5").write_bytes(b"\x89HDF\r\n\x1a\n cut off")
    (run / "model.json").write_text(json.dumps({"class_names": ["FAKE", "REAL"], "image_size": 32}))
    test_dir = make_class_folder(tmp_path / "mine", {"FAKE": 2, "REAL": 2})
    code = cli(["--evaluate", str(run / "model.h5"), "--test-dir", str(test_dir), "--quiet"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(error) == 1 and error[0].startswith("error: ")
    assert str(run / "model.h5") in error[0] and "corrupt" in error[0]
    assert not (run / "eval-mine").exists()


def test_cli_corrupt_weights_file_is_one_line_without_traceback(tmp_path, make_class_folder, capsys, cli):
    for split in ("train", "validation"):
        make_class_folder(tmp_path / "data" / split, {"FAKE": 2, "REAL": 2})
    weights = tmp_path / "resnet101_notop.h5"
    weights.write_bytes(b"<html>404 Not Found</html>")
    code = cli(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "models"), "--name", "art",
                "--weights", str(weights), "--image-size", "32", "--quiet"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and error[-1].startswith("error: ") and "Traceback" not in "\n".join(error)
    assert str(weights) in error[-1] and "corrupt" in error[-1]


def test_cli_weights_file_that_does_not_fit_the_backbone_is_one_line(tmp_path, make_class_folder, capsys, cli):
    import h5py

    for split in ("train", "validation"):
        make_class_folder(tmp_path / "data" / split, {"FAKE": 2, "REAL": 2})
    weights = tmp_path / "other_notop.h5"
    with h5py.File(weights, "w") as stream:  # readable HDF5, but not this backbone's weights
        stream["numbers"] = [1, 2, 3]
    code = cli(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "models"), "--name", "art",
                "--weights", str(weights), "--image-size", "32", "--quiet"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and error[-1].startswith("error: --weights") and "resnet101" in error[-1]


@pytest.mark.parametrize("weights", ["corrupt", "missing", "offline imagenet"])
def test_a_failed_start_leaves_no_run_folder(tmp_path, make_class_folder, monkeypatch, capsys, cli, weights):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://...: None -- no network")

    monkeypatch.setitem(model_module.APPLICATIONS, "resnet101", offline)
    monkeypatch.setattr(model_module, "KERAS_MODELS_DIR", tmp_path / "keras-cache")
    for split in ("train", "validation"):
        make_class_folder(tmp_path / "data" / split, {"FAKE": 2, "REAL": 2})
    (tmp_path / "corrupt.h5").write_bytes(b"\x89HDF\r\n\x1a\n cut off")
    flag = {"corrupt": str(tmp_path / "corrupt.h5"), "missing": str(tmp_path / "nope.h5"),
            "offline imagenet": "imagenet"}[weights]
    code = cli(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "models"), "--name", "art",
                "--weights", flag, "--image-size", "32", "--quiet"])
    assert code == 1 and "error: " in capsys.readouterr().err
    assert not (tmp_path / "models" / "art").exists()


@pytest.mark.slow
def test_the_same_command_trains_once_the_weights_file_is_fixed(tmp_path, make_class_folder, capsys, cli):
    for split in ("train", "validation"):
        make_class_folder(tmp_path / "data" / split, {"FAKE": 2, "REAL": 2})
    weights = tmp_path / "resnet50_notop.weights.h5"
    weights.write_bytes(b"\x89HDF\r\n\x1a\n cut off")  # an interrupted copy
    command = ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "models"), "--name", "art",
               "--backbone", "resnet50", "--weights", str(weights), "--image-size", "32", "--batch-size", "4",
               "--head-epochs", "1", "--fine-tune-epochs", "0", "--head-units", "8", "--quiet"]
    assert cli(command) == 1
    keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(weights)
    assert cli(command) == 0, capsys.readouterr().err
    assert (tmp_path / "models" / "art" / "model.h5").is_file()


def tiny_saved_run(run: Path) -> Path:
    """A run folder with a small stand-in classifier (raw RGB of any size in) and its model.json."""
    pixels = keras.Input((None, None, 3))
    x = keras.layers.Resizing(8, 8, name="resize")(pixels)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(x))
    keras.Model(pixels, keras.layers.Dense(2, activation="softmax")(x)).save(run / "model.h5")
    (run / "model.json").write_text(json.dumps({"class_names": ["FAKE", "REAL"], "image_size": 8}))
    return run


def test_cli_evaluate_never_replaces_the_results_in_out(tmp_path, make_class_folder, capsys, cli):
    run = tiny_saved_run(tmp_path / "models" / "art")
    test_dir = make_class_folder(tmp_path / "mine", {"FAKE": 2, "REAL": 2})
    out = tmp_path / "results"
    out.mkdir()
    for name, content in (("metrics.json", b'{"accuracy": 0.97}'), ("EVALUATION.md", b"# earlier"),
                          ("confusion_matrix.png", b"earlier plot")):
        (out / name).write_bytes(content)
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    code = cli(["--evaluate", str(run / "model.h5"), "--test-dir", str(test_dir), "--out", str(out), "--quiet"])
    assert code == 0
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert (tmp_path / "results-2" / "metrics.json").is_file()
    assert str(tmp_path / "results-2") in capsys.readouterr().out


def test_cli_evaluating_twice_keeps_the_first_results_in_the_default_folder(tmp_path, make_class_folder, capsys,
                                                                           cli):
    run = tiny_saved_run(tmp_path / "models" / "art")
    test_dir = make_class_folder(tmp_path / "mine", {"FAKE": 2, "REAL": 2})
    command = ["--evaluate", str(run / "model.h5"), "--test-dir", str(test_dir), "--quiet"]
    assert cli(command) == 0
    first = {path.name: path.read_bytes() for path in (run / "eval-mine").iterdir()}
    assert cli(command) == 0
    assert {path.name: path.read_bytes() for path in (run / "eval-mine").iterdir()} == first
    assert (run / "eval-mine-2" / "metrics.json").is_file()
    assert str(run / "eval-mine-2") in capsys.readouterr().out


def test_cli_evaluate_takes_a_test_dir_per_source_and_robustness(tmp_path, make_class_folder, capsys, cli):
    run = tiny_saved_run(tmp_path / "models" / "art")
    first = make_class_folder(tmp_path / "data" / "test", {"FAKE": 2, "REAL": 2}, seed=1)
    second = make_class_folder(tmp_path / "photos" / "test", {"FAKE": 2, "REAL": 2}, seed=2)
    code = cli(["--evaluate", str(run), "--test-dir", str(first), "--test-dir", str(second), "--robustness",
                "--quiet"])
    assert code == 0
    out = run / "eval-test+test"
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["sources"]) == ["data/test", "photos/test"] and metrics["num_images"] == 8
    assert set(metrics["robustness"]) == {"jpeg", "blur", "downscale"}
    assert (out / "robustness.png").is_file()
    assert str(out) in capsys.readouterr().out


@pytest.mark.parametrize("mode", ["--evaluate", "--predict"])
def test_a_ctrl_c_dropped_during_evaluate_or_predict_still_ends_it_interrupted(tmp_path, make_class_folder,
                                                                              monkeypatch, capsys, cli, mode):
    from realvsai import evaluation, prediction

    run = tiny_saved_run(tmp_path / "models" / "art")
    images = make_class_folder(tmp_path / "mine", {"FAKE": 2, "REAL": 2})
    module, name = (evaluation, "evaluate_folders") if mode == "--evaluate" else (prediction, "predict_folder")
    real = getattr(module, name)

    def dropped_at_its_start(*args, **kwargs):
        drop_a_ctrl_c()
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, dropped_at_its_start)
    code = cli([mode, str(run), "--test-dir" if mode == "--evaluate" else "--input", str(images), "--quiet"])
    error = capsys.readouterr().err.strip().splitlines()
    what = "evaluation" if mode == "--evaluate" else "prediction"
    assert code == 1 and len(error) == 1 and error[0].startswith("error: interrupted. "), error
    assert f"the {what} starts over" in error[0], error[0]  # stopped at once it has no results to name


@pytest.mark.parametrize("mode", ["--evaluate", "--predict"])
def test_a_ctrl_c_dropped_in_the_first_batch_of_evaluate_or_predict_stops_it_there(tmp_path, make_class_folder,
                                                                                   monkeypatch, capsys, cli, mode):
    """It was noticed only once every batch had run (on JAX a Ctrl-C often lands in its garbage-collection
    callback): a long evaluation went on to its end, then called its complete results partial."""
    run = tiny_saved_run(tmp_path / "models" / "art")
    images = make_class_folder(tmp_path / "mine", {"FAKE": 8, "REAL": 8})
    batches = []

    class DroppedInTheFirstBatch(keras.callbacks.Callback):
        def on_predict_batch_end(self, batch, logs=None):
            batches.append(batch)
            if len(batches) == 1:
                drop_a_ctrl_c()
            time.sleep(0.02)  # a batch of a real model takes longer

    real_predict = keras.Model.predict

    def predict(self, *args, callbacks=None, **kwargs):
        return real_predict(self, *args, callbacks=[*(callbacks or []), DroppedInTheFirstBatch()], **kwargs)

    monkeypatch.setattr(keras.Model, "predict", predict)
    code = cli([mode, str(run), "--test-dir" if mode == "--evaluate" else "--input", str(images), "--batch-size", "1",
                "--out", str(tmp_path / "out"), "--quiet"])
    error = capsys.readouterr().err.strip().splitlines()
    what = "evaluation" if mode == "--evaluate" else "prediction"
    assert code == 1 and error == [f"error: interrupted. Run the same command again: the {what} starts over."], error
    assert len(batches) <= 8, f"went on for {len(batches)} of 16 batches"  # the next, but for a loaded machine


@pytest.mark.parametrize("mode", ["--evaluate", "--predict"])
def test_an_evaluation_or_prediction_that_finished_is_not_called_interrupted(tmp_path, make_class_folder,
                                                                            monkeypatch, capsys, cli, mode):
    """A Ctrl-C noted on the way, though the code it landed in handled it, was raised again once every result was
    written: "holds part of this evaluation's results ...: delete them", of complete results. (One handled before
    the last prediction stops the run there: test_prediction's lost SIGTERM.) Here it lands as the results are
    written, every prediction made."""
    from realvsai import plots, prediction

    run = tiny_saved_run(tmp_path / "models" / "art")
    images = make_class_folder(tmp_path / "mine", {"FAKE": 2, "REAL": 2})
    module, name = (plots, "plot_confusion_matrix") if mode == "--evaluate" else (prediction, "write_predictions")
    real = getattr(module, name)

    def handled_on_the_way(*args, **kwargs):
        with contextlib.suppress(KeyboardInterrupt):
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, handled_on_the_way)
    out = tmp_path / "out"
    code = cli([mode, str(run), "--test-dir" if mode == "--evaluate" else "--input", str(images), "--out", str(out),
                "--quiet"])
    assert (code, capsys.readouterr().err) == (0, "")
    assert (out / ("metrics.json" if mode == "--evaluate" else "predictions.csv")).is_file()


def test_ctrl_c_during_evaluate_says_it_starts_over_and_names_its_incomplete_results(tmp_path, make_class_folder,
                                                                                    monkeypatch, capsys, cli):
    """"Finished work is kept and not redone" was untrue: the same command starts over, beside the part written."""
    from realvsai import evaluation

    run = tiny_saved_run(tmp_path / "models" / "art")
    test_dir = make_class_folder(tmp_path / "mine", {"FAKE": 2, "REAL": 2})

    def interrupted_while_writing(model, info, folders, out_dir, **kwargs):
        out_dir.mkdir(parents=True)
        (out_dir / "confusion_matrix.png").write_bytes(b"a plot")
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluation, "evaluate_folders", interrupted_while_writing)
    code = cli(["--evaluate", str(run), "--test-dir", str(test_dir), "--quiet"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and error == [f"error: interrupted. {run / 'eval-mine'} holds part of this evaluation's results "
                                   "(confusion_matrix.png): delete it, then run the same command again (the "
                                   "evaluation starts over)."]


def test_a_full_disk_during_evaluate_names_its_incomplete_results_to_delete(tmp_path, make_class_folder, monkeypatch,
                                                                          capsys, cli):
    """It said "run the same command again (finished work is kept)": the same command wrote to eval-mine-2 beside a
    folder of half the results, which looked like results."""
    import errno

    from realvsai import evaluation

    run = tiny_saved_run(tmp_path / "models" / "art")
    test_dir = make_class_folder(tmp_path / "mine", {"FAKE": 2, "REAL": 2})

    def disk_full_while_writing(model, info, folders, out_dir, **kwargs):
        out_dir.mkdir(parents=True)
        (out_dir / "predictions.csv").write_text("file\n")
        raise OSError(errno.ENOSPC, "No space left on device", str(out_dir / "confusion_matrix.png"))

    monkeypatch.setattr(evaluation, "evaluate_folders", disk_full_while_writing)
    code = cli(["--evaluate", str(run), "--test-dir", str(test_dir), "--quiet"])
    error = capsys.readouterr().err.strip().splitlines()
    out = run / "eval-mine"
    assert code == 1 and error == [f"error: {out / 'confusion_matrix.png'}: no space left on the disk. Free some "
                                   f"space, then delete the part of this evaluation's results in {out} "
                                   "(predictions.csv) and run the same command again (the evaluation starts over)."]


@pytest.mark.parametrize("flags", [[], ["--test-dir", "t", "--input", "i"]], ids=["alone", "with-their-folders"])
def test_evaluate_and_predict_together_is_bad_usage_asking_for_one(capsys, flags):
    with pytest.raises(SystemExit) as stopped:
        ModelTraining.parse_args(["--evaluate", "run", "--predict", "run", *flags])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert stopped.value.code == 2 and "give one of --evaluate or --predict (" in error, error


@pytest.mark.parametrize("mode", ["--evaluate", "--predict"])
def test_evaluate_or_predict_out_a_run_folder_is_bad_usage(tmp_path, make_class_folder, capsys, cli, mode):
    """--evaluate RUN --out RUN wrote to RUN-2 without a word: the run folder's own results are not replaced."""
    run = tiny_saved_run(tmp_path / "models" / "art")
    images = make_class_folder(tmp_path / "mine", {"FAKE": 2, "REAL": 2})
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    with pytest.raises(SystemExit) as stopped:
        cli([mode, str(run), "--test-dir" if mode == "--evaluate" else "--input", str(images), "--out", str(run),
             "--quiet"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert stopped.value.code == 2 and f"--out {run}" in error and "run's folder" in error, error
    assert {path.name: path.read_bytes() for path in run.iterdir()} == before
    assert sorted(path.name for path in run.parent.iterdir()) == ["art"]


@pytest.mark.parametrize("mode", ["--evaluate", "--predict"])
@pytest.mark.parametrize("inside", ["", "preds", "REAL/preds"])
def test_evaluate_or_predict_out_inside_the_folder_it_reads_is_bad_usage(tmp_path, make_class_folder, capsys, cli,
                                                                         mode, inside):
    """--predict RUN --input "data/my out/test" --out "data/my out/test/preds" was accepted: the next --evaluate and
    training found a class 'preds' there, and the next --predict listed predictions.csv as an unreadable input."""
    run = tiny_saved_run(tmp_path / "models" / "art")
    images = make_class_folder(tmp_path / "data" / "my out" / "test", {"FAKE": 2, "REAL": 2})
    before = snapshot(images)
    reads = "--test-dir" if mode == "--evaluate" else "--input"
    command = [mode, str(run), reads, str(images), "--quiet"]
    with pytest.raises(SystemExit) as stopped:
        cli([*command, "--out", str(images / inside)])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert stopped.value.code == 2, error
    assert (f"error: --out {images / inside} lies inside {reads} {images}, where its files would be read with the "
            "images the next time; leave --out out for a folder beside the model, or choose one outside "
            f"{images} (") in error, error
    assert snapshot(images) == before
    assert cli(command) == 0 and snapshot(images) == before  # the advice, followed


@pytest.mark.parametrize("mode", ["--evaluate", "--predict"])
@pytest.mark.parametrize("out, where", [("REAL", "is"), ("REAL/results", "lies inside")])
def test_evaluate_or_predict_out_in_a_class_folder_of_images_is_bad_usage(tmp_path, make_class_folder, capsys, mode,
                                                                          out, where):
    """--evaluate RUN --test-dir mine --out flat/REAL wrote its PNG plots among the images of another dataset's
    class REAL, where the next split, training or evaluation of flat read them as images of REAL."""
    images = make_class_folder(tmp_path / "mine", {"FAKE": 2, "REAL": 2})
    flat = make_class_folder(tmp_path / "flat", {"FAKE": 2, "REAL": 2}, seed=3)
    reads = "--test-dir" if mode == "--evaluate" else "--input"
    with pytest.raises(SystemExit) as stopped:
        ModelTraining.parse_args([mode, str(tmp_path / "models" / "art"), reads, str(images), "--out", str(flat / out)])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert stopped.value.code == 2, error
    assert f"error: --out {flat / out} {where} a class folder of images (" in error, error


@pytest.mark.parametrize("mode", [[], ["--demo"]])
@pytest.mark.parametrize("out, where", [("REAL", "is"), ("REAL/models", "lies inside")])
def test_a_training_out_in_a_class_folder_of_images_is_bad_usage(tmp_path, make_class_folder, capsys, mode, out,
                                                                   where):
    """--out flat/REAL made the run's folder among the images of another dataset's class REAL, where the next split
    or training of flat read its plots as images of REAL."""
    data = make_class_folder(tmp_path / "mine", {"FAKE": 2, "REAL": 2})
    flat = make_class_folder(tmp_path / "flat", {"FAKE": 2, "REAL": 2}, seed=3)
    with pytest.raises(SystemExit) as stopped:
        ModelTraining.parse_args([*mode, *([] if mode else ["--data", str(data)]), "--out", str(flat / out)])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert stopped.value.code == 2, error
    assert f"error: --out {flat / out} {where} a class folder of images (" in error, error
    assert "the run's folder there would be read" in error, error
    assert "; choose a folder of its own, e.g. the default --out models" in error, error


@pytest.mark.parametrize("mode", ["--evaluate", "--predict"])
def test_evaluate_or_predict_out_that_holds_earlier_results_is_not_taken_for_a_class_folder(tmp_path,
                                                                                             make_class_folder, mode):
    """An --evaluate's folder holds its PNG plots beside predictions.csv: given as --out again, it is not a class
    folder of images (the run writes OUT-2 beside it)."""
    images = make_class_folder(tmp_path / "mine", {"FAKE": 2, "REAL": 2})
    earlier = tmp_path / "evaluation"
    write_image(earlier / "confusion_matrix.png", seed=1)
    (earlier / "predictions.csv").write_text("file,predicted\n")
    reads = "--test-dir" if mode == "--evaluate" else "--input"
    args = ModelTraining.parse_args([mode, str(tmp_path / "models" / "art"), reads, str(images), "--out", str(earlier)])
    assert args.out == earlier


@pytest.mark.parametrize("mode", ["--evaluate", "--predict"])
def test_evaluate_or_predict_out_around_the_folder_it_reads_is_bad_usage(tmp_path, make_class_folder, capsys, cli,
                                                                         mode):
    """--test-dir data/test --out data said another run read data and to wait for it to finish: the run's own claim
    on what it reads, inside the folder it writes. No wait helped."""
    run = tiny_saved_run(tmp_path / "models" / "art")
    images = make_class_folder(tmp_path / "data" / "test", {"FAKE": 2, "REAL": 2})
    reads = "--test-dir" if mode == "--evaluate" else "--input"
    with pytest.raises(SystemExit) as stopped:
        cli([mode, str(run), reads, str(images), "--out", str(tmp_path / "data"), "--quiet"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert stopped.value.code == 2 and "another run" not in error, error
    assert f"error: --out {tmp_path / 'data'} holds {reads} {images}, which" in error, error
    assert sorted(path.name for path in (tmp_path / "data").iterdir()) == ["test"]


@pytest.mark.parametrize("mode", ["--evaluate", "--predict"])
def test_evaluate_or_predict_of_a_model_inside_the_folder_it_reads_says_to_give_an_out_outside_it(
        tmp_path, make_class_folder, capsys, cli, mode):
    """--predict models/art --input models said another run read models and to wait for it to finish: the run's
    own claim on what it reads, around its default output folder beside the model. No wait helped."""
    images = make_class_folder(tmp_path / "photos", {"FAKE": 2, "REAL": 2})
    run = tiny_saved_run(images / "REAL" / "art")
    before = snapshot(images)
    reads = "--test-dir" if mode == "--evaluate" else "--input"
    command = [mode, str(run), reads, str(images), "--quiet"]
    assert cli(command) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "another run" not in error
    beside = run / ("eval-" if mode == "--evaluate" else "predictions-")
    assert (f"error: the folder for the results beside the model, {beside}" in error
            and f"lies inside {reads} {images}" in error and "give --out a folder outside it" in error), error
    assert snapshot(images) == before
    assert cli([*command, "--out", str(tmp_path / "out")]) == 0  # the advice, followed

@pytest.mark.parametrize("splits", [("train", "validation", "test"), ("Train", "Valid", "TEST")])
def test_evaluate_on_a_dataset_folder_names_its_test_split_not_a_rename(tmp_path, make_class_folder, capsys, cli,
                                                                       splits):
    """--test-dir "data/my out" said "class folders ['test', 'train', 'validation'] ... Rename the folders (or
    re-split with --rename OLD=NEW)": followed, that damages the split; what it needs is the test split."""
    run = tiny_saved_run(tmp_path / "models" / "art")
    data = tmp_path / "data" / "my out"
    for split in splits:
        make_class_folder(data / split, {"FAKE": 2, "REAL": 2})
    before = snapshot(data)
    code = cli(["--evaluate", str(run), "--test-dir", str(data), "--quiet"])
    error = capsys.readouterr().err.strip().splitlines()
    found = ", ".join(sorted(splits))
    assert code == 1 and error == [f"error: {data} is a dataset folder (it holds the split folders {found}), not one "
                                   f"folder per class: give its test split, --test-dir "
                                   f"{shlex.quote(str(data / splits[2]))}."]
    assert snapshot(data) == before
    assert cli(["--evaluate", str(run), "--test-dir", str(data / splits[2]), "--quiet"]) == 0  # the advice, followed


def test_cli_robustness_without_evaluate_is_a_command_line_error(tmp_path, capsys, cli):
    with pytest.raises(SystemExit) as exit_info:
        cli(["--data", str(tmp_path / "data"), "--robustness", "--quiet"])
    assert exit_info.value.code == 2 and "--robustness" in capsys.readouterr().err


# --- one tiny real run, shared by the tests below -------------------------------------------------


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """ResNet101 from scratch at 32 px on three classes, one broken image in train, one epoch per phase."""
    root = tmp_path_factory.mktemp("run")
    classes = ("cat", "dog", "fox")
    for split, count in (("train", 4), ("validation", 2), ("test", 2)):
        for index, name in enumerate(classes):
            for number in range(count):
                # Mixed sizes: resized in the pipeline.
                write_image(root / "data" / split / name / f"{number}.png",
                            seed=len(split) * 1000 + index * 100 + number, size=(32 + 8 * number, 32))
    broken = root / "data" / "train" / "cat" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    records = _Records()
    logging.getLogger("realvsai").addHandler(records)
    logging.getLogger("realvsai").setLevel(logging.INFO)
    config = TrainConfig(data=root / "data", out=root / "models", name="tiny", weights="none", image_size=32,
                         batch_size=4, head_epochs=1, fine_tune_epochs=1, head_units=16)
    try:
        result = training.train(config, verbose=0)
    finally:
        logging.getLogger("realvsai").removeHandler(records)
    return {"root": root, "result": result, "run": root / "models" / "tiny", "broken": broken,
            "log": records.messages}


@pytest.mark.slow
def test_training_writes_every_output(trained_run):
    run = trained_run["run"]
    for name in ("model.h5", "model.json", "history.csv", "training_curves.png", "metrics.json"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    assert (run / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if __import__("importlib").util.find_spec("tensorboard"):
        assert list((run / "logs").rglob("events.out.tfevents.*"))
    assert not (run / "backup").exists()  # the resume state goes once the run has finished


@pytest.mark.slow
def test_model_json_describes_the_run_as_the_contract_says(trained_run):
    info = json.loads((trained_run["run"] / "model.json").read_text())
    assert info["class_names"] == ["cat", "dog", "fox"] and info["positive_class"] is None
    assert info["image_size"] == 32 and info["backbone"] == "resnet101" and info["weights"] == "none"
    assert info["preprocessing"].startswith("caffe") and info["confidence_threshold"] == 0.6
    assert "(RGB to BGR, less the ImageNet channel means)" in info["preprocessing"]  # "caffe" alone said little
    assert info["counts"]["train"] == {"cat": 4, "dog": 4, "fox": 4}  # the broken file is not counted
    assert info["config"]["batch_size"] == 4 and info["config"]["steps_per_epoch"] == 3
    assert info["best_epoch"]["epoch"] in (1, 2) and "val_loss" in info["best_epoch"]
    assert "test_metrics" in info  # added by the evaluation on data/test


def test_model_json_records_the_data_and_the_software_the_run_was_trained_with(trained_run):
    """The data's digest was kept only in the backup, which a finished run removes, and no version was recorded:
    two runs of the same seed on changed data, or under a newer Keras, could not be told apart."""
    import platform

    info = json.loads((trained_run["run"] / "model.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{64}", info["data_digest"])
    libraries = {"tensorflow", keras.backend.backend()}  # TensorFlow reads the images on every backend
    assert info["versions"] == {"python": platform.python_version(), "keras": keras.__version__,
                                "numpy": np.__version__,
                                **{name: importlib.import_module(name).__version__ for name in libraries}}


@pytest.mark.slow
def test_history_has_both_epochs_with_macro_metrics(trained_run):
    rows = read_history_csv(trained_run["run"] / "history.csv")
    assert [row["epoch"] for row in rows] == [1, 2] and {row["phase"] for row in rows} == {"full"}
    for key in ("loss", "accuracy", "precision", "recall", "auc", "f1", "val_loss", "val_f1", "learning_rate"):
        assert all(key in row for row in rows), key
    assert rows[1]["learning_rate"] < rows[0]["learning_rate"]  # decaying


@pytest.mark.slow
def test_broken_training_image_is_skipped_with_a_warning_naming_it(trained_run):
    assert any(str(trained_run["broken"]) in message for message in trained_run["log"])
    assert any("--weights none" in message for message in trained_run["log"])  # the log says how it trains


@pytest.mark.slow
def test_a_training_says_it_prepares_its_best_model_before_that_wait(trained_run):
    """After the last epoch's bar, 30-60 s passed without a word on CIFAKE (the float32 copy of ResNet101, the
    curves, and the compile of the evaluation's first batch) before the evaluation's first line."""
    log, validation = trained_run["log"], trained_run["root"] / "data" / "validation"
    said = [index for index, message in enumerate(log) if message.startswith("training finished; ")]
    assert said and said[0] < log.index(f"predicting 6 images in {validation}"), log


@pytest.mark.slow
def test_reloaded_model_gives_the_same_predictions(trained_run):
    batch = np.random.default_rng(1).uniform(0, 255, (3, 40, 36, 3)).astype("float32")
    model, run = load_run(trained_run["run"])
    info = run.info
    expected = keras.ops.convert_to_numpy(trained_run["result"].model(batch, training=False))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(batch, training=False)), expected, atol=1e-5)
    assert info["class_names"] == ["cat", "dog", "fox"]


@pytest.mark.slow
def test_evaluate_flag_evaluates_a_saved_model_on_a_folder(trained_run, capsys):
    test_dir = trained_run["root"] / "data" / "test"
    out = trained_run["root"] / "evaluation"
    code = ModelTraining.main(["--evaluate", str(trained_run["run"] / "model.h5"), "--test-dir", str(test_dir),
                               "--out", str(out), "--quiet"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 6 and metrics["class_names"] == ["cat", "dog", "fox"]
    assert "accuracy" in capsys.readouterr().out


# --- resume after kill -9, in the right phase -----------------------------------------------------


@pytest.mark.slow
def test_a_phase_its_stop_rule_ended_before_a_kill_is_restored_on_resume_not_trained_on():
    """Head epochs 0..4, stopped by its rule after 3 (the backup: 3 epochs done, the phase done), then killed:
    --resume restores the head and trains none of epochs 3 and 4, which the rule gave to fine-tuning."""
    head, latest = Phase("head", 0, 5, 1e-3, False), ["head", {"epoch": 3, "state": {"phase_done": True}}]
    assert fitting._epochs_to_run(head, latest) == (3, 3, True)
    latest[1]["state"]["phase_done"] = False  # killed within the phase: it goes on to its end
    assert fitting._epochs_to_run(head, latest) == (3, 5, True)
    assert fitting._epochs_to_run(Phase("fine_tune", 3, 8, 1e-4, True), latest) == (3, 8, False)


def test_resume_after_kill_continues_in_the_fine_tune_phase_and_ends_with_the_requested_epochs(tmp_path):
    for split, count in (("train", 16), ("validation", 4)):
        for index, name in enumerate(("FAKE", "REAL")):
            for number in range(count):
                write_image(tmp_path / "data" / split / name / f"{number}.png", seed=index * 100 + number)
    weights = tmp_path / "backbone.weights.h5"  # a stand-in for ImageNet weights: two real phases
    keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(weights)
    arguments = ["--data", tmp_path / "data", "--out", tmp_path / "models", "--name", "killed", "--weights", weights,
                 "--backbone", "resnet50", "--image-size", "32", "--batch-size", "4", "--head-epochs", "1",
                 "--fine-tune-epochs", "3", "--augment", "none", "--head-units", "8", "--quiet"]
    run = tmp_path / "models" / "killed"
    process = subprocess.Popen([sys.executable, str(REPO / "ModelTraining.py"), *map(str, arguments)], cwd=REPO,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = run / "backup" / "fine_tune" / "backup.json"
    deadline = time.monotonic() + 600
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    done_before_kill = len(read_history_csv(run / "history.csv"))
    assert 2 <= done_before_kill < 4

    resumed = run_script("ModelTraining.py", "--resume", "--name", "killed", "--out", tmp_path / "models",
                         timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "phase fine_tune" in resumed.stderr  # "resuming ... after epoch N (phase fine_tune)"
    rows = read_history_csv(run / "history.csv")
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4]
    assert [row["phase"] for row in rows] == ["head", "fine_tune", "fine_tune", "fine_tune"]
    info = json.loads((run / "model.json").read_text())
    assert info["config"]["fine_tune_epochs"] == 3 and info["best_epoch"]["epoch"] in (1, 2, 3, 4)
    keras.models.load_model(run / "model.h5", compile=False)
    assert not (run / "backup").exists()


# --- MirroredStrategy on two logical CPUs ---------------------------------------------------------

_MIRRORED = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from realvsai import distributed, training
    devices = [device.name for device in tf.config.list_logical_devices("CPU")]
    strategy = distributed.select_strategy({}, devices=devices)
    config = training.TrainConfig(data=Path(sys.argv[1]), out=Path(sys.argv[2]), name="mirrored", weights="none",
                                  backbone="resnet50", image_size=32, batch_size=2, head_epochs=1,
                                  fine_tune_epochs=0, augment="none", head_units=8)
    result = training.train(config, strategy=strategy, verbose=0)
    print(json.dumps({"strategy": type(strategy).__name__, "replicas": strategy.num_replicas_in_sync,
                      "global_batch": result.model_info["config"]["global_batch_size"],
                      "epochs": len(result.history), "loss": result.history[0]["loss"]}))
""")


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="MirroredStrategy is TensorFlow's; JAX's DataParallel has its own test")
def test_mirrored_strategy_trains_over_two_logical_devices(tmp_path, make_class_folder):
    for split in ("train", "validation"):
        make_class_folder(tmp_path / "data" / split, {"FAKE": 4, "REAL": 4})
    process = subprocess.run([sys.executable, "-c", _MIRRORED, str(tmp_path / "data"), str(tmp_path / "models")],
                             cwd=REPO, capture_output=True, text=True, timeout=600,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)})
    assert process.returncode == 0, process.stderr[-3000:]
    report = json.loads(process.stdout.strip().splitlines()[-1])
    assert report["strategy"] == "MirroredStrategy" and report["replicas"] == 2
    assert report["global_batch"] == 4 and report["epochs"] == 1 and np.isfinite(report["loss"])
    assert (tmp_path / "models" / "mirrored" / "model.h5").is_file()


# --- the fit wiring, through train with stand-in models (fast) ------------------------------------


def tiny_classifier(num_classes: int, **ignored) -> keras.Model:
    """A stand-in for build_model with its contract (raw RGB of any size in, float32 softmax out), in seconds."""
    inputs = keras.Input((None, None, 3), name="image")
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    hidden = keras.layers.Dense(4, activation="relu")(features)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(hidden)
    return keras.Model(inputs, outputs)


def constant_classifier(num_classes: int, **ignored) -> keras.Model:
    """Predicts the same probabilities for every image, whatever the training does (no trainable weight)."""
    inputs = keras.Input((None, None, 3), name="image")
    dense = keras.layers.Dense(2, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant([1.0, 0.0]),
                               trainable=False)
    outputs = keras.layers.Softmax(dtype="float32")(dense(keras.layers.GlobalAveragePooling2D()(inputs)))
    return keras.Model(inputs, outputs)


def nan_classifier(num_classes: int, **ignored) -> keras.Model:
    inputs = keras.Input((None, None, 3), name="image")
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(float("nan"))(inputs))
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax", dtype="float32")(features))


def train_with(builder, monkeypatch, tmp_path, make_class_folder, counts=None, validation_counts=None, verbose=0,
               **settings) -> training.TrainResult:
    monkeypatch.setattr(model_module, "build_model", builder)
    for split, split_counts in (("train", counts), ("validation", validation_counts or counts)):
        make_class_folder(tmp_path / "data" / split, split_counts or {"FAKE": 4, "REAL": 4}, seed=len(split))
    config = TrainConfig(data=tmp_path / "data", out=tmp_path / "models", name="run", weights="none",
                         **{"batch_size": 4, "head_epochs": 1, "fine_tune_epochs": 0, **settings})
    return training.train(config, verbose=verbose)


@pytest.mark.parametrize("problem", ["out-under-a-file", "weights-missing"])
def test_what_the_settings_point_at_is_checked_before_the_data_is_read(tmp_path, monkeypatch, make_class_folder,
                                                                       problem):
    """An --out under a file, or a --weights file that is not there, failed only once the whole dataset was scanned
    (minutes on a full one), after lines about it ("class weights: FAKE 1.000, REAL 1.000")."""
    import errno

    from realvsai import data

    make_class_folder(tmp_path / "data" / "train", {"FAKE": 2, "REAL": 2})
    make_class_folder(tmp_path / "data" / "validation", {"FAKE": 2, "REAL": 2})
    (tmp_path / "afile").write_text("mine")
    monkeypatch.setattr(data, "scan_splits", lambda *args, **kwargs: pytest.fail("the data was read first"))
    settings = ({"out": tmp_path / "afile" / "models", "weights": "none"} if problem == "out-under-a-file"
                else {"out": tmp_path / "models", "weights": str(tmp_path / "missing.h5")})
    config = TrainConfig(data=tmp_path / "data", name="run", **settings)

    with pytest.raises((OSError, UserError)) as failed:
        training.train(config, verbose=0)

    if problem == "out-under-a-file":
        assert isinstance(failed.value, OSError) and failed.value.errno == errno.ENOTDIR
    else:
        assert str(failed.value).startswith(f"--weights {tmp_path / 'missing.h5'}: no such file")


def test_keras_bar_shows_the_cross_entropies_and_validation_accuracy_alone_so_that_its_line_fits_a_terminal(
        tmp_path, make_class_folder, monkeypatch, capsys):
    """Every metric (precision, recall, AUC, F1, cross-entropy, and validation's of each) made Keras' line of an
    epoch about 390 characters: in a terminal of 120 columns it wrapped, and each step's redraw went back over its
    last row only, leaving the others behind. history.csv keeps them all. The cross-entropies, not Keras' loss and
    val_loss: they are what picks the best epoch ("val_cross_entropy ... is the best so far") and what the
    overfitting rule compares; the loss adds the head's L2 penalty, and fell in epochs where the cross-entropy rose."""
    result = train_with(tiny_classifier, monkeypatch, tmp_path, make_class_folder, verbose=1)

    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in re.split(r"[\r\n\b]+", capsys.readouterr().out)]
    (epoch_line,) = [line for line in lines if "val_accuracy" in line]
    assert sorted(re.findall(r"(\w+): [0-9.e+-]+", epoch_line)) == ["cross_entropy", "val_accuracy",
                                                                      "val_cross_entropy"]
    assert len(re.sub(r"^\s*\d+/\d+", "3125/3125", epoch_line)) <= 120  # CIFAKE: 100,000 images, batch 32
    assert {"precision", "auc", "f1", "val_f1", "val_cross_entropy"} <= set(result.history[0])


def test_an_epochs_lines_follow_keras_closing_line_of_that_epoch_on_a_line_of_their_own(
        tmp_path, make_class_folder, monkeypatch):
    """On a terminal Keras' bar of an epoch was still unfinished when the epoch's end logged its lines: "25/25 ...
    cross_entropy: 0.9406epoch 2: val_cross_entropy 0.7570 is the best so far; saved to ...", and Keras' closing line
    of the epoch came after them."""
    import io
    import sys

    from realvsai import cli

    terminal = io.StringIO()  # Keras writes to stdout, the project's lines go to stderr: one terminal shows both
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setattr(sys, "stderr", terminal)
    cli.setup_logging(quiet=False)
    train_with(tiny_classifier, monkeypatch, tmp_path, make_class_folder, verbose=1)

    before, found, _ = terminal.getvalue().partition("epoch 1: val_cross_entropy")
    assert found and before.endswith("\n"), repr(before[-200:])
    assert "val_accuracy" in before.splitlines()[-1]  # Keras' closing line of epoch 1, just before


def test_the_final_evaluation_reads_validation_and_test_under_the_runs_max_pixels(tmp_path, make_class_folder,
                                                                                   monkeypatch):
    """Training skipped the images over its --max-pixels; the threshold, the accuracy by kind and the card's test
    numbers were computed on them all the same, under the default limit."""
    make_class_folder(tmp_path / "data" / "test", {"FAKE": 3, "REAL": 3}, seed=9)
    for split in ("validation", "test"):
        write_image(tmp_path / "data" / split / "REAL" / "large.png", seed=7, size=(60, 60))  # 3,600 pixels

    result = train_with(tiny_classifier, monkeypatch, tmp_path, make_class_folder, max_pixels=2000)

    assert result.model_info["counts"]["validation"] == {"FAKE": 4, "REAL": 4}
    assert result.test_metrics["threshold_selection"]["num_images"] == 8
    assert result.test_metrics["num_images"] == 6
    assert [entry["file"] for entry in result.test_metrics["skipped_files"]] == ["REAL/large.png"]


def test_class_weighted_loss_and_val_loss_are_comparable(tmp_path, make_class_folder, monkeypatch):
    # Imbalanced 3:1, so weighting changes the mean loss; val_loss is weighted like loss.
    result = train_with(constant_classifier, monkeypatch, tmp_path, make_class_folder, {"FAKE": 12, "REAL": 4})
    (row,) = result.history
    assert row["loss"] == pytest.approx(row["val_loss"], abs=1e-5)


def test_validation_of_another_class_mix_is_weighted_by_its_own_counts(tmp_path, make_class_folder, monkeypatch):
    """Validation took the train split's weights: on a balanced validation split (a download's own valid/) of a 3:1
    train split, REAL counted three times FAKE in val_loss and the cross-entropy that picks the best epoch and
    stops a phase, which then compared a skewed validation figure with training's balanced one."""
    result = train_with(constant_classifier, monkeypatch, tmp_path, make_class_folder, {"FAKE": 12, "REAL": 4},
                        validation_counts={"FAKE": 4, "REAL": 4})
    (row,) = result.history
    assert row["loss"] == pytest.approx(row["val_loss"], abs=1e-5)


def test_a_nan_training_loss_ends_the_run_with_a_one_line_user_error(tmp_path, make_class_folder, monkeypatch):
    with pytest.raises(UserError, match=r"^training loss became NaN at epoch 1; lower --learning-rate or use "
                                        r"--precision float32$"):
        train_with(nan_classifier, monkeypatch, tmp_path, make_class_folder)


class Killed(Exception):
    pass


def test_training_from_scratch_for_one_epoch_says_1_epoch(tmp_path, make_class_folder, monkeypatch, caplog):
    monkeypatch.setattr(model_module, "build_model", tiny_classifier)

    def stop(*args, **kwargs):
        raise Killed  # the line is logged before the first epoch: no need to train

    monkeypatch.setattr(fitting, "fit_phases", stop)
    make_class_folder(tmp_path / "data" / "train", {"FAKE": 2, "REAL": 2})
    make_class_folder(tmp_path / "data" / "validation", {"FAKE": 1, "REAL": 1}, seed=1)
    config = TrainConfig(data=tmp_path / "data", out=tmp_path / "models", name="run", weights="none", batch_size=4,
                         head_epochs=1, fine_tune_epochs=0)
    caplog.set_level(logging.INFO, logger="realvsai")

    with pytest.raises(Killed):
        training.train(config, verbose=0)

    assert any("throughout its 1 epoch (head + fine-tune)" in record.getMessage() for record in caplog.records)


def test_the_training_line_writes_its_counts_as_every_summary_does(tmp_path, make_class_folder, monkeypatch, caplog):
    """``training ... on 13,026 images (FAKE 6508, REAL 6518), validating on 1624``: the per-class and validation
    counts lacked the thousands separators of the total beside them, and of every other summary."""
    def stop(*args, **kwargs):
        raise Killed  # the line is logged before the first epoch: no need to train

    monkeypatch.setattr(model_module, "build_model", tiny_classifier)
    monkeypatch.setattr(fitting, "fit_phases", stop)
    make_class_folder(tmp_path / "data" / "train", {"FAKE": 1000, "REAL": 2}, size=(8, 8))
    make_class_folder(tmp_path / "data" / "validation", {"FAKE": 1000, "REAL": 1}, seed=1, size=(8, 8))
    config = TrainConfig(data=tmp_path / "data", out=tmp_path / "models", name="run", weights="none", batch_size=4,
                         image_size=32, class_weights=False)
    caplog.set_level(logging.INFO, logger="realvsai")

    with pytest.raises(Killed):
        training.train(config, verbose=0)

    (line,) = [record.getMessage() for record in caplog.records if record.getMessage().startswith("training ")]
    assert "on 1,002 images (FAKE 1,000, REAL 2), validating on 1,001;" in line
    assert " steps per epoch on one device (" in line  # which one: the CPU, a GPU


def test_the_user_is_told_the_training_step_compiles_before_its_first_step(tmp_path, make_class_folder, monkeypatch,
                                                                         caplog):
    """Keras shows its first progress bar once the first step is done, and that step compiles the training step
    first: a minute of nothing on the screen after the decoding bar (ResNet101 at 32 px on a CPU)."""
    from realvsai import data, distributed

    said_before_fit, make_dataset = [], data.make_dataset

    def fit(*args, **kwargs):
        said_before_fit.extend(record.getMessage() for record in caplog.records)
        raise Killed

    def made(images, **options):  # the training images are decoded as their dataset is made, under a bar
        dataset = make_dataset(images, **options)
        if options.get("shuffle"):
            logging.getLogger("realvsai").info("training images decoded")
        return dataset

    monkeypatch.setattr(distributed, "fit", fit)
    monkeypatch.setattr(data, "make_dataset", made)
    caplog.set_level(logging.INFO, logger="realvsai")

    with pytest.raises(Killed):
        train_with(tiny_classifier, monkeypatch, tmp_path, make_class_folder)

    (line,) = [message for message in said_before_fit if message.startswith("compiling the training step")]
    assert "its first step takes longer than the rest" in line  # on JAX too: the train step compiles once
    assert said_before_fit[-2:] == ["training images decoded", line]  # said as Keras begins, not before the bar


def test_each_epochs_validation_is_counted_under_a_bar_of_its_batches(tmp_path, make_class_folder, monkeypatch):
    """Keras' bar stands still while fit validates: minutes after each epoch on CIFAKE at 100k on a CPU."""
    from realvsai import distributed
    from realvsai.callbacks import ValidationProgress

    fitted = []

    def fit(*args, validation_steps, callbacks, **kwargs):
        fitted.append((validation_steps, [each.steps for each in callbacks if isinstance(each, ValidationProgress)]))
        raise Killed

    monkeypatch.setattr(distributed, "fit", fit)
    with pytest.raises(Killed):
        train_with(tiny_classifier, monkeypatch, tmp_path, make_class_folder, validation_counts={"FAKE": 3, "REAL": 3})
    assert fitted == [(2, [2])]  # 6 validation images in batches of 4


def test_a_class_of_few_training_images_is_warned_of_with_the_weight_that_makes_each_count_for_many(
        tmp_path, make_class_folder, monkeypatch, caplog):
    """1 REAL image beside 30 FAKE trained with REAL's loss weighted 15.5, and only an info line listed the weights:
    the model learns next to nothing of a class from one image, while each of its steps swings the loss."""
    monkeypatch.setattr(model_module, "build_model", tiny_classifier)

    def stop(*args, **kwargs):
        raise Killed  # the warning comes before the first epoch: no need to train

    monkeypatch.setattr(fitting, "fit_phases", stop)
    make_class_folder(tmp_path / "data" / "train", {"FAKE": 30, "REAL": 1})
    make_class_folder(tmp_path / "data" / "validation", {"FAKE": 1, "REAL": 1}, seed=1)
    config = TrainConfig(data=tmp_path / "data", out=tmp_path / "models", name="run", weights="none", batch_size=4,
                         head_epochs=1, fine_tune_epochs=0)

    with pytest.raises(Killed):
        training.train(config, verbose=0)

    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert any("REAL has only 1 training image" in message and "15.500" in message and "FAKE" not in message
               for message in warnings), warnings


def test_a_test_split_without_a_class_folder_is_evaluated_with_the_class_reported_missing(tmp_path, make_class_folder,
                                                                                        monkeypatch, caplog):
    """DataSplitD1 leaves a class of two images without test images; training refused that split, asking for a
    rename, while an empty test/rare/ folder trained and was evaluated."""
    monkeypatch.setattr(model_module, "build_model", tiny_classifier)
    data_dir = tmp_path / "data"
    make_class_folder(data_dir / "train", {"benign tumour": 3, "maligné ñ": 3, "rare": 2})
    make_class_folder(data_dir / "validation", {"benign tumour": 1, "maligné ñ": 1, "rare": 1}, seed=1)
    make_class_folder(data_dir / "test", {"benign tumour": 2, "maligné ñ": 2}, seed=2)
    config = TrainConfig(data=data_dir, out=tmp_path / "models", name="run", weights="none", batch_size=4,
                         head_epochs=1, fine_tune_epochs=0)

    result = training.train(config, verbose=0)

    assert result.test_metrics["missing_classes"] == ["rare"] and result.test_metrics["num_images"] == 4
    assert any("'rare'" in record.getMessage() and str(data_dir / "test") in record.getMessage()
               for record in caplog.records if record.levelname == "WARNING")


def test_a_run_without_a_test_split_still_chooses_its_threshold_and_accuracy_by_kind_on_validation(
        tmp_path, make_class_folder, monkeypatch, caplog):
    """Both come from validation, yet a split made by hand with train/ and validation/ alone finished with no
    decision_threshold (the app and --predict decided by the highest probability) and no validation_by_kind (so
    they could not say Uncertain for an image of a kind the model was poor at)."""
    caplog.set_level(logging.INFO, logger="realvsai")

    result = train_with(tiny_classifier, monkeypatch, tmp_path, make_class_folder)

    run = tmp_path / "models" / "run"
    model_json = json.loads((run / "model.json").read_text())
    assert result.test_metrics is None and "test_metrics" not in model_json
    assert isinstance(model_json["decision_threshold"], float)
    assert model_json["validation_by_kind"]["size"]["0-63 px"]["num_images"] == 8
    assert result.model_info == model_json
    assert not (run / "metrics.json").exists() and not (run / "MODEL_CARD.md").exists()
    assert any(f"{tmp_path / 'data'} has no test folder: no test numbers" in record.getMessage()
               for record in caplog.records)
    assert not (run / "backup").exists()


@pytest.mark.parametrize("finished_on_resume", [False, True])
def test_a_run_warns_once_of_what_its_scan_of_validation_and_test_found(tmp_path, make_class_folder, monkeypatch,
                                                                        caplog, finished_on_resume):
    """The final evaluation scanned validation and test again, after training's scan (or, finishing a run killed
    in it, after --resume's scan of the data it checks): "data/test has no readable image of class 'REAL'" and each
    broken file's "skipping" line were logged twice by one command."""
    from realvsai import evaluation

    make_class_folder(tmp_path / "data" / "test", {"FAKE": 3}, seed=9)
    (tmp_path / "data" / "test" / "REAL").mkdir()
    for split in ("validation", "test"):
        (tmp_path / "data" / split / "FAKE").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / split / "FAKE" / "empty.png").write_bytes(b"")
    if finished_on_resume:
        def killed_while_evaluating(*args, **kwargs):
            raise Killed

        with monkeypatch.context() as patch, pytest.raises(Killed):
            patch.setattr(evaluation, "evaluate_run", killed_while_evaluating)
            train_with(tiny_classifier, monkeypatch, tmp_path, make_class_folder)
        caplog.clear()
        result = training.train(TrainConfig(out=tmp_path / "models", name="run"), resume=True, verbose=0)
    else:
        result = train_with(tiny_classifier, monkeypatch, tmp_path, make_class_folder)

    assert result.test_metrics["missing_classes"] == ["REAL"]
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert sum("has no readable image of class 'REAL'" in message for message in warnings) == 1, warnings
    for split in ("validation", "test"):
        assert sum(f"skipping {tmp_path / 'data' / split / 'FAKE' / 'empty.png'}" in message
                   for message in warnings) == 1, warnings


def test_the_final_evaluation_predicts_in_batches_of_the_runs_batch_size(tmp_path, make_class_folder, monkeypatch):
    """--batch-size means one thing in training, --evaluate and --predict: the evaluation at the end of training
    took 64 images a step whatever it said (a GPU that fits only 8 at 224 px would run out of memory there)."""
    from realvsai import prediction

    batch_sizes = []
    real_predict_images = prediction.predict_images

    def predict_images(predictor, images, **kwargs):
        batch_sizes.append(predictor.batch_size)
        return real_predict_images(predictor, images, **kwargs)

    monkeypatch.setattr(prediction, "predict_images", predict_images)
    make_class_folder(tmp_path / "data" / "test", {"FAKE": 2, "REAL": 2}, seed=3)

    train_with(tiny_classifier, monkeypatch, tmp_path, make_class_folder, batch_size=2)

    assert batch_sizes and set(batch_sizes) == {2}  # validation's threshold, then the test


def test_model_saved_mid_run_under_mixed_precision_is_float32(tmp_path, make_class_folder, monkeypatch):
    from realvsai import callbacks

    real_backup, backups = callbacks.RunBackup.on_epoch_end, []

    def kill_after_second_backup(self, epoch, logs=None):  # the first epoch's best model is already written
        real_backup(self, epoch, logs)
        backups.append(epoch)
        if len(backups) == 2:
            raise Killed

    monkeypatch.setattr(callbacks.RunBackup, "on_epoch_end", kill_after_second_backup)
    try:
        with pytest.raises(Killed):
            train_with(tiny_classifier, monkeypatch, tmp_path, make_class_folder, head_epochs=3,
                       precision="mixed_float16")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    saved = keras.models.load_model(tmp_path / "models" / "run" / "model.h5", compile=False)
    assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}


def test_mixed_float16_training_checks_every_replica_for_overflow():
    from realvsai import distributed

    optimizer = fitting.make_optimizer(1e-3, 0.01, 10, loss_scaling=True)
    # TensorFlow's strategies scale each replica's gradients; JAX's DataParallel checks one global gradient.
    expected = (distributed.AllReplicasLossScaleOptimizer if keras.backend.backend() == "tensorflow"
                else keras.optimizers.LossScaleOptimizer)
    assert type(optimizer) is expected
    assert not isinstance(fitting.make_optimizer(1e-3, 0.01, 10), keras.optimizers.LossScaleOptimizer)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="op determinism is TensorFlow's")
@pytest.mark.parametrize("xla", [False, True])
def test_op_determinism_is_turned_on_for_a_cpu_run_unless_xla_is_asked_for(tmp_path, monkeypatch, xla):
    """Keras turns XLA off in a process with op determinism on, so --xla would be dropped without a word."""
    import tensorflow as tf

    turned_on = []
    monkeypatch.setattr(tf.config.experimental, "enable_op_determinism", lambda: turned_on.append(True))
    config = TrainConfig(data=tmp_path / "missing", out=tmp_path / "models", name="run", weights="none", xla=xla)

    with pytest.raises(UserError, match="missing is not an existing folder"):  # stops right after the setup
        training.train(config, verbose=0)

    assert turned_on == ([] if xla else [True])


def test_model_json_records_the_training_images_and_a_format_shortcut(tmp_path):
    from realvsai import data

    for index in range(6):
        write_image(tmp_path / "train" / "FAKE" / f"f{index}.png", seed=index, size=(64, 48))
        write_image(tmp_path / "train" / "REAL" / f"r{index}.jpg", seed=100 + index, size=(40, 30 + index))
    record = image_stats.training_record(data.scan_images(tmp_path / "train").facts())
    assert record["training_images"] == {"min_side": 30, "max_side": 64, "formats": ["JPEG", "PNG"],
                                          "images": 12, "grayscale": 0}
    assert record["shortcuts"]["format"] == 1.0
    assert "shortcut" in record["shortcut_warning"] and "format" in record["shortcut_warning"]
    json.dumps(record)  # model.json takes it as it is


def test_model_json_names_a_jpeg_quality_shortcut_as_the_split_does(tmp_path):
    """Same size and format in both classes, only the JPEG quality differs: training's check sees it too."""
    from PIL import Image

    from realvsai import data

    rng = np.random.default_rng(0)
    for index in range(8):
        for class_name, quality in (("FAKE", 95), ("REAL", 60)):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            (tmp_path / "train" / class_name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(tmp_path / "train" / class_name / f"{index}.jpg", quality=quality)

    record = image_stats.training_record(data.scan_images(tmp_path / "train").facts())

    assert record["shortcuts"]["jpeg_quality"] == 1.0 and record["shortcuts"]["size"] < 0.9
    assert "JPEG quality alone predicts the class" in record["shortcut_warning"]
    assert "FAKE 95, REAL 60" in record["shortcut_warning"]  # each class's range, as the split's warning gives


def test_model_json_has_no_shortcut_warning_when_classes_look_alike(tmp_path):
    from realvsai import data

    for index in range(6):
        for class_name in ("FAKE", "REAL"):
            write_image(tmp_path / "train" / class_name / f"{index}.png", seed=index + len(class_name),
                        size=(32 + index, 32))
    record = image_stats.training_record(data.scan_images(tmp_path / "train").facts())
    assert record["shortcut_warning"] is None and record["shortcuts"]["size"] < 0.9


def test_input_mode_flag_sets_the_config_and_rejects_other_modes(capsys):
    assert ModelTraining.config_from_args(ModelTraining.parse_args(["--input-mode", "crops"])).input_mode == "crops"
    assert TrainConfig().input_mode == "resize"
    with pytest.raises(SystemExit) as raised:
        ModelTraining.parse_args(["--input-mode", "tiles"])
    assert raised.value.code == 2
    with pytest.raises(UserError, match="--input-mode"):
        TrainConfig(input_mode="tiles").validate()


def test_crops_mode_training_skips_an_image_its_crops_would_enlarge_past_the_pixel_limit(tmp_path, make_class_folder,
                                                                                         monkeypatch, caplog):
    from PIL import Image

    from realvsai import data

    for split in ("train", "validation"):
        make_class_folder(tmp_path / "data" / split, {"FAKE": 2, "REAL": 2})
    strip = tmp_path / "data" / "train" / "REAL" / "strip.png"
    Image.new("RGB", (1, 120_000)).save(strip)  # 0.12 megapixels; 122.9 once its short side covers 32 px crops
    scanned = []

    class Scanned(Exception):
        pass

    def stop_after_the_scan(data_dir, *splits):
        scanned.extend(splits)
        raise Scanned  # no training: the scan is what is tested

    monkeypatch.setattr(data, "data_digest", stop_after_the_scan)
    config = TrainConfig(data=tmp_path / "data", out=tmp_path / "models", name="crops", weights="none",
                         image_size=32, input_mode="crops")
    with pytest.raises(Scanned):
        training.train(config, verbose=0)

    assert len(scanned[0]) == 4 and strip not in scanned[0].files
    assert any(str(strip) in record.getMessage() and "limit" in record.getMessage()
               for record in caplog.records if record.levelname == "WARNING")


@pytest.mark.slow
def test_crops_mode_run_records_its_input_mode_and_the_training_images(tmp_path):
    for split, count in (("train", 4), ("validation", 2), ("test", 2)):
        for index, name in enumerate(("FAKE", "REAL")):
            for number in range(count):
                write_image(tmp_path / "data" / split / name / f"{number}.png", seed=index * 100 + number,
                            size=(48 + 8 * number, 40))
    config = TrainConfig(data=tmp_path / "data", out=tmp_path / "models", name="crops", weights="none",
                         backbone="resnet50", image_size=32, batch_size=4, head_epochs=1, fine_tune_epochs=0,
                         head_units=16, input_mode="crops")  # ResNet50: the input mode, not the depth, is tested

    result = training.train(config, verbose=0)

    info = json.loads((result.run_dir / "model.json").read_text())
    assert info["input_mode"] == "crops" and info["config"]["input_mode"] == "crops"
    assert info["training_images"] == {"min_side": 40, "max_side": 72, "formats": ["PNG"], "images": 8,
                                     "grayscale": 0}
    assert 0.0 <= result.test_metrics["accuracy"] <= 1.0


def test_a_run_killed_in_its_final_evaluation_finishes_it_on_resume(tmp_path, make_class_folder, monkeypatch):
    from realvsai import evaluation

    make_class_folder(tmp_path / "data" / "test", {"FAKE": 3, "REAL": 3}, seed=9)
    real_evaluate = evaluation.evaluate_run

    def killed_while_evaluating(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(evaluation, "evaluate_run", killed_while_evaluating)
    with pytest.raises(Killed):
        train_with(tiny_classifier, monkeypatch, tmp_path, make_class_folder, head_epochs=2)
    run = tmp_path / "models" / "run"
    saved = (run / "model.h5").read_bytes()
    monkeypatch.setattr(evaluation, "evaluate_run", real_evaluate)
    monkeypatch.setattr(model_module, "build_model", lambda *args, **kwargs: pytest.fail("trained again"))
    result = training.train(TrainConfig(out=tmp_path / "models", name="run"), resume=True, verbose=0)

    model_json = json.loads((run / "model.json").read_text())
    assert result.test_metrics is not None and model_json["test_metrics"]["accuracy"] == result.test_metrics["accuracy"]
    assert "decision_threshold" in model_json and model_json["best_epoch"]["epoch"] in (1, 2)
    assert (run / "metrics.json").is_file() and (run / "MODEL_CARD.md").is_file()
    assert (run / "model.h5").read_bytes() == saved  # the best model of the run, not retrained
    assert [row["epoch"] for row in read_history_csv(run / "history.csv")] == [1, 2]
    assert not (run / "backup").exists()
    with pytest.raises(UserError, match="finished"):
        resolve_run_dir(TrainConfig(out=tmp_path / "models", name="run"), resume=True)


def project_layer_classifier(num_classes: int, **settings) -> keras.Model:
    """A stand-in that holds one of the project's registered layers, as model.h5 always does."""
    pixels = keras.Input((None, None, 3))
    x = model_module.SquareResize(8, name="resize")(pixels)
    x = keras.layers.Rescaling(1 / 255)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(pixels, keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x))


@pytest.mark.slow
def test_a_run_killed_in_its_final_evaluation_finishes_on_resume_in_a_new_process(tmp_path, make_class_folder,
                                                                                   monkeypatch):
    from realvsai import evaluation

    make_class_folder(tmp_path / "data" / "test", {"FAKE": 3, "REAL": 3}, seed=9)

    def killed_while_evaluating(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(evaluation, "evaluate_run", killed_while_evaluating)
    with pytest.raises(Killed):
        train_with(project_layer_classifier, monkeypatch, tmp_path, make_class_folder)

    # A new process has imported nothing of the project's model yet: model.h5's layers must still load.
    process = run_script("ModelTraining.py", "--resume", "--name", "run", "--out", tmp_path / "models", "--quiet")

    assert process.returncode == 0, process.stderr
    assert (tmp_path / "models" / "run" / "MODEL_CARD.md").is_file()
    assert not (tmp_path / "models" / "run" / "backup").exists()


# --- Keras 3 on JAX: model.fit under keras.distribution.DataParallel --------------------------------

JAX_TRAINING_SCRIPT = r'''
import json, logging, sys
from pathlib import Path

sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[1] + "/tests")
import jax
import keras

from realvsai import model as model_module, training
from realvsai.config import TrainConfig
from test_training import tiny_classifier

model_module.build_model = tiny_classifier
root = Path(sys.argv[2])
config = TrainConfig(data=root / "data", out=root / "models", name="run", weights="none", batch_size=2,
                     head_epochs=2, fine_tune_epochs=0)
compiled = []
counter = logging.Handler()
counter.emit = lambda record: compiled.append(record.getMessage().split(" with ")[0])
logging.getLogger("jax").addHandler(counter)
with jax.log_compiles(True):
    result = training.train(config, verbose=0)
print(json.dumps({"backend": keras.backend.backend(), "devices": result.model_info["config"]["devices"],
                  "epochs": [row["epoch"] for row in result.history],
                  "compiled": [compiled.count(f"Compiling jit({step})") for step in ("train_step", "test_step")]}))
'''


@needs_jax
def test_training_runs_model_fit_on_jax_over_several_devices(tmp_path, make_class_folder):
    for split in ("train", "validation"):
        make_class_folder(tmp_path / "data" / split, {"FAKE": 5, "REAL": 4}, seed=len(split))
    script = tmp_path / "train_on_jax.py"
    script.write_text(JAX_TRAINING_SCRIPT)
    environ = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3",
               "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}  # two CPU devices for DataParallel
    process = subprocess.run([sys.executable, str(script), str(REPO), str(tmp_path)], capture_output=True, text=True,
                             timeout=300, env=environ)
    assert process.returncode == 0, process.stderr[-3000:]
    report = json.loads(process.stdout.strip().splitlines()[-1])
    assert report == {"backend": "jax", "devices": 2, "epochs": [1, 2], "compiled": [1, 1]}  # each step once
    run = tmp_path / "models" / "run"
    assert (run / "model.h5").is_file() and json.loads((run / "model.json").read_text())["best_epoch"]


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="counts JAX's compilations (CI's KERAS_BACKEND=jax pass)")
def test_a_phase_on_one_jax_device_compiles_its_train_and_test_steps_once(tmp_path, make_class_folder, monkeypatch,
                                                                         caplog):
    """Under a one-device DataParallel, Keras compiled the train step three times a phase and the test step twice:
    the first step's state was not yet placed on the device, the second's was, and each epoch's new seed state and
    reset metrics were not again. ResNet101 at 32 px under JAX on 2 CPU cores: 16 s a compilation."""
    import jax

    with jax.log_compiles(True), caplog.at_level(logging.WARNING, logger="jax"):
        train_with(noisy_classifier, monkeypatch, tmp_path, make_class_folder, head_epochs=3)

    compiled = [record.getMessage().split(" with ")[0] for record in caplog.records
                if record.getMessage().startswith("Compiling jit(")]
    assert (compiled.count("Compiling jit(train_step)"), compiled.count("Compiling jit(test_step)")) == (1, 1)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX's strategy (CI's KERAS_BACKEND=jax pass)")
def test_the_log_names_one_jax_device_as_one_device_not_a_distribution():
    from realvsai import distributed

    strategy = distributed.select_strategy({})
    assert distributed.describe(strategy) == f"one device ({keras.distribution.list_devices()[0]})"


@pytest.mark.slow
@needs_jax
@pytest.mark.skipif(keras.backend.backend() == "jax",
                    reason="under KERAS_BACKEND=jax every training test here, and every script they run, is on JAX")
def test_model_training_trains_resnet101_under_keras_backend_jax(tmp_path, make_class_folder):
    for split, count in (("train", 4), ("validation", 2)):
        make_class_folder(tmp_path / "data" / split, {"FAKE": count, "REAL": count}, seed=len(split))
    process = subprocess.run(
        [sys.executable, str(REPO / "ModelTraining.py"), "--data", str(tmp_path / "data"), "--out",
         str(tmp_path / "models"), "--name", "jax", "--weights", "none", "--image-size", "32", "--batch-size", "4",
         "--head-epochs", "1", "--fine-tune-epochs", "1", "--head-units", "16", "--quiet"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
        env={**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)})
    assert process.returncode == 0, process.stderr[-3000:]
    run = tmp_path / "models" / "jax"
    model_json = json.loads((run / "model.json").read_text())
    assert (run / "model.h5").is_file() and model_json["best_epoch"]["epoch"] in (1, 2)
    assert [row["epoch"] for row in read_history_csv(run / "history.csv")] == [1, 2]


# --- resume is the uninterrupted run ---------------------------------------------------------------


def noisy_classifier(num_classes: int, seed: int = 0, **ignored) -> keras.Model:
    """A stand-in whose training draws random numbers in the model (noise, dropout), as build_model's does."""
    inputs = keras.Input((None, None, 3), name="image")
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.GaussianNoise(0.5, seed=seed)(features))
    hidden = keras.layers.Dropout(0.5, seed=seed)(hidden)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(hidden)
    return keras.Model(inputs, outputs)


def test_a_run_stopped_after_an_epoch_and_resumed_matches_the_uninterrupted_run(tmp_path, make_class_folder,
                                                                              monkeypatch):
    from realvsai import callbacks

    settings = dict(head_epochs=4, augment="detector", stop_patience=9, early_stopping_patience=9, seed=0)
    uninterrupted = train_with(noisy_classifier, monkeypatch, tmp_path / "whole", make_class_folder,
                               {"FAKE": 7, "REAL": 6}, **settings).history
    real_backup = callbacks.RunBackup.on_epoch_end

    def killed_after_the_second_epoch(self, epoch, logs=None):
        real_backup(self, epoch, logs)
        if epoch == 1:
            raise Killed

    monkeypatch.setattr(callbacks.RunBackup, "on_epoch_end", killed_after_the_second_epoch)
    with pytest.raises(Killed):
        train_with(noisy_classifier, monkeypatch, tmp_path / "killed", make_class_folder, {"FAKE": 7, "REAL": 6},
                   **settings)
    monkeypatch.setattr(callbacks.RunBackup, "on_epoch_end", real_backup)
    resumed = training.train(TrainConfig(out=tmp_path / "killed" / "models", name="run"), resume=True,
                             verbose=0).history

    def losses(history):
        return [(row["epoch"], row["loss"], row["val_loss"]) for row in history]

    assert len(uninterrupted) == 4 and losses(resumed) == losses(uninterrupted)


def test_quiet_prints_no_tensorflow_absl_or_cuda_log_line(tmp_path, make_class_folder):
    # Other images in each split (the same ones in both are warned of), and 10 a class (fewer are warned of).
    for seed, split in enumerate(("train", "validation")):
        make_class_folder(tmp_path / "data" / split, {"FAKE": 10, "REAL": 10}, seed=seed)
    environ = {key: value for key, value in os.environ.items() if not key.startswith("TF_CPP")}
    process = subprocess.run(  # TensorFlow starts (data, model), then the missing weights file ends the run
        [sys.executable, str(REPO / "ModelTraining.py"), "--data", str(tmp_path / "data"), "--out",
         str(tmp_path / "models"), "--weights", str(tmp_path / "missing.h5"), "--image-size", "32", "--quiet"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**environ, "PYTHONPATH": str(REPO)})
    lines = process.stderr.strip().splitlines()
    assert process.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: --weights"), process.stderr


def test_a_run_shows_no_tensorflow_start_up_notice_without_quiet(tmp_path):
    """Without --quiet too: absl's notice, oneDNN's, and the CUDA probes of a machine without a GPU (one an 'E'
    line, 'failed call to cuInit') are not the user's business; the run's error is, alone: the device it would
    have trained on ("training with one device (CPU)", which came before the error) is named once training
    starts, in the training line. Only the line that says TensorFlow loads (5-15 s) comes before it."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("TF_CPP")}
    process = subprocess.run(  # TensorFlow starts (the devices), then the missing data folder ends the run
        [sys.executable, str(REPO / "ModelTraining.py"), "--data", str(tmp_path / "nowhere"), "--out",
         str(tmp_path / "models")], capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**environ, "PYTHONPATH": str(REPO)})
    lines = process.stderr.strip().splitlines()
    assert process.returncode == 1 and len(lines) == 2 and lines[1].startswith("error: "), process.stderr
    assert lines[0].startswith("loading TensorFlow to train "), process.stderr
    for notice in ("absl::InitializeLog", "oneDNN", "cudart_stub", "cuInit"):
        assert notice not in process.stderr, process.stderr


@pytest.mark.parametrize("flags", [[], ["--batch-size", "8"]], ids=["default", "given"])
def test_evaluate_takes_the_batch_size_every_program_takes(monkeypatch, tmp_path, flags):
    seen = {}

    def evaluate(model_path, test_dirs, out_dir=None, batch_size=None, robustness=False, max_pixels=None):
        seen["batch_size"] = batch_size
        return tmp_path, {"accuracy": 1.0, "num_images": 1}

    monkeypatch.setattr(ModelTraining, "evaluate_model_file", evaluate)
    assert ModelTraining.main(["--evaluate", str(tmp_path / "model.h5"), "--test-dir", str(tmp_path), *flags]) == 0
    assert seen["batch_size"] == (int(flags[1]) if flags else TrainConfig().batch_size)


def test_model_json_is_written_at_the_start_and_at_the_end_only(tmp_path, make_class_folder, monkeypatch):
    make_class_folder(tmp_path / "data" / "test", {"FAKE": 3, "REAL": 3}, seed=9)
    real_replace, written = os.replace, []

    def replace(source, destination, *args, **kwargs):
        written.append(Path(destination).name)
        return real_replace(source, destination, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    result = train_with(tiny_classifier, monkeypatch, tmp_path, make_class_folder, head_epochs=2)
    model_json = json.loads((tmp_path / "models" / "run" / "model.json").read_text())
    assert written.count("model.json") == 2
    assert model_json["best_epoch"] == result.model_info["best_epoch"] and "test_metrics" in model_json


@pytest.mark.parametrize("flags", [["--image-size", "64"], ["--head-epochs", "1"], ["--data", "mydata"],
                                   ["--no-class-weights"], ["--seed", "7"], ["--xla"]])
def test_demo_refuses_a_training_setting_it_would_ignore(flags, capsys):
    with pytest.raises(SystemExit) as stopped:
        ModelTraining.parse_args(["--demo", *flags])
    assert stopped.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert flags[0] in message and "--demo" in message and "--data data/demo" in message


def test_demo_takes_its_own_flags():
    args = ModelTraining.parse_args(["--demo", "--out", "o", "--name", "d", "--resume", "--quiet"])
    assert args.demo and args.resume and args.name == "d"


def test_training_reads_its_split_under_the_max_pixels_it_is_given(tmp_path, make_class_folder):
    """A split made with --max-pixels above the default holds images training skipped, and training refused the
    flag (--max-pixels went with --evaluate and --predict only): no way to train on them."""
    for split in ("train", "validation"):
        make_class_folder(tmp_path / "data" / split, {"FAKE": 2, "REAL": 2}, size=(30, 30))
        write_image(tmp_path / "data" / split / "REAL" / "large.png", seed=7, size=(40, 40))
    args = ModelTraining.parse_args(["--data", str(tmp_path / "data"), "--max-pixels", "1000"])
    config = ModelTraining.config_from_args(args)

    train, validation, _, _ = training._scan(config)

    assert config.max_pixels == 1000 and train.max_pixels == 1000
    assert len(train) == len(validation) == 4 and [path.name for path, _ in train.skipped] == ["large.png"]
    assert len(training._scan(dataclasses.replace(config, max_pixels=2000))[0]) == 5


@pytest.mark.parametrize("mode", [["--evaluate", "run", "--test-dir", "t"], ["--predict", "run", "--input", "i"]],
                         ids=["evaluate", "predict"])
@pytest.mark.parametrize("flags", [["--resume", "--name", "foo"], ["--image-size", "64"], ["--head-epochs", "7"],
                                   ["--data", "/nonexistent"], ["--seed", "3"], ["--weights", "imagenet"],
                                   ["--xla"], ["--no-class-weights"]])
def test_evaluate_and_predict_refuse_a_training_setting_they_would_ignore(mode, flags, capsys):
    with pytest.raises(SystemExit) as stopped:
        ModelTraining.parse_args([*mode, *flags])
    assert stopped.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert flags[0] in message and mode[0] in message


@pytest.mark.parametrize("flags", [["--evaluate", "run", "--test-dir", "t", "--test-dir", "u", "--robustness"],
                                   ["--predict", "run", "--input", "i"]], ids=["evaluate", "predict"])
def test_evaluate_and_predict_take_their_own_flags(flags):
    args = ModelTraining.parse_args([*flags, "--out", "o", "--batch-size", "8", "--max-pixels", "1000", "--quiet"])
    assert args.batch_size == 8 and args.max_pixels == 1000 and args.quiet


@pytest.mark.parametrize("flags", [["--head-epochs", "8"], ["--image-size", "64"], ["--batch-size", "8"],
                                   ["--seed", "3"], ["--weights", "none"], ["--xla"], ["--no-class-weights"]])
def test_resume_refuses_a_training_setting_it_would_ignore(flags, capsys):
    """``--resume --name RUN --head-epochs 8`` trained the saved 4 epochs; only a line hidden by --quiet said so."""
    with pytest.raises(SystemExit) as stopped:
        ModelTraining.parse_args(["--resume", "--name", "run", *flags])
    assert stopped.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert flags[0] in message and "--resume" in message and "settings" in message


@pytest.mark.parametrize("input_mode, kept", [("resize", 5), ("crops", 4)])
def test_training_counts_a_phone_photo_at_the_pixels_its_input_mode_decodes(tmp_path, make_class_folder,
                                                                             input_mode, kept):
    """A resize model's pipeline decodes a 200 MP JPEG (conftest's stand-in) at 1/8; crops mode at full size."""
    for split in ("train", "validation"):
        make_class_folder(tmp_path / "data" / split, {"FAKE": 2, "REAL": 2}, size=(30, 30))
        write_phone_photo(tmp_path / "data" / split / "REAL" / "phone.jpg")
    config = TrainConfig(data=tmp_path / "data", image_size=32, input_mode=input_mode, max_pixels=PHOTO_LIMIT)

    train, validation, _, _ = training._scan(config)

    assert len(train) == len(validation) == kept
    assert [path.name for path, _ in train.skipped] == ([] if input_mode == "resize" else ["phone.jpg"])


def test_resume_takes_its_own_flags():
    args = ModelTraining.parse_args(["--resume", "--name", "run", "--out", "o", "--data", "moved", "--quiet"])
    assert args.resume and args.name == "run" and args.data == Path("moved") and args.quiet


@pytest.mark.parametrize("flags", [["--fine-tune-blocks", "3"], ["--fine-tune-learning-rate", "1e-4"]])
def test_training_from_scratch_refuses_a_fine_tuning_flag_it_would_ignore(flags, capsys):
    """From scratch the whole network trains at --learning-rate from the first epoch: these changed nothing."""
    with pytest.raises(SystemExit) as stopped:
        ModelTraining.parse_args(["--weights", "none", *flags])
    assert stopped.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert flags[0] in message and "--weights none" in message and "--learning-rate" in message
    assert ModelTraining.parse_args(["--weights", "imagenet", *flags])


def test_resume_without_name_is_bad_usage(capsys):
    with pytest.raises(SystemExit) as stopped:
        ModelTraining.parse_args(["--resume", "--out", "models"])
    assert stopped.value.code == 2 and "--resume needs --name" in capsys.readouterr().err


def test_resume_without_name_names_the_command_that_continues_each_stopped_run_in_out(tmp_path, capsys):
    """Back at a stopped training with its --name forgotten, the user was told only that --resume needs one."""
    models = tmp_path / "models"
    for name in ("art", "cifake32"):
        (models / name / "backup").mkdir(parents=True)
        (models / name / "backup" / "config.json").write_text("{}")
    (models / "finished").mkdir()
    (models / "finished" / "model.json").write_text("{}")
    with pytest.raises(SystemExit) as stopped:
        ModelTraining.parse_args(["--resume", "--out", str(models)])
    message = capsys.readouterr().err
    assert stopped.value.code == 2, message
    assert (f"{models} holds 2 stopped runs: continue one with python ModelTraining.py --resume --name art --out "
            f"{models} (or --name cifake32)" in message), message


@pytest.mark.parametrize("counts, steps, drops", [
    ({"big": 42, "three": 1, "two": 1}, 2, False),  # three's one image: left out of an epoch 12 times in 44
    ({"FAKE": 22, "REAL": 22}, 1, True),  # a class of 22 is never left out whole: the XLA-friendly full batches
])
def test_an_epoch_keeps_its_short_last_batch_where_leaving_it_out_could_leave_a_class_out(caplog, counts, steps,
                                                                                          drops):
    """44 training images in batches of 32: each epoch left out the last 12, and a class of one image was left out
    of the whole of a one-epoch run, which its card then reported as trained on."""
    import tensorflow as tf

    with caplog.at_level(logging.INFO, logger="realvsai.training"):
        assert training._epoch_steps(32, tf.distribute.get_strategy(), counts, 8)[::2] == (steps, drops)
    if not drops:
        assert "keeps its short last batch of 12 training images: three has 1 training image" in caplog.text


def test_the_few_training_images_warning_counts_the_originals_not_the_augmented_copies(caplog):
    """7 REAL images with 14 augmented copies moved in: the warning that REAL had only 7 training images went, though
    the model still saw only 7 images of it (each copy repeats its source)."""
    with caplog.at_level(logging.WARNING, logger="realvsai.training"):
        training._warn_of_few_training_images({"FAKE": 133, "REAL": 21}, {0: 0.579, 1: 3.667},
                                              originals={"FAKE": 133, "REAL": 7})
    [warning] = [record.getMessage() for record in caplog.records]
    assert warning.startswith("REAL has only 7 training images (21 with augmented copies): a model learns little")
