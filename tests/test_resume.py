"""--resume: which folder is a run, its saved settings, and the data it must read again (fast: stand-in models)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shlex
import shutil
from pathlib import Path

import keras
import pytest
from conftest import follow_deleter_hint, read_history_csv, write_image
from test_cli import drop_a_ctrl_c
from test_training import Killed, tiny_classifier, train_with

import ModelTraining
from realvsai import model as model_module
from realvsai import training
from realvsai.config import TrainConfig, resolve_run_dir
from realvsai.errors import UserError


@pytest.mark.parametrize("files", [{"predictions.csv": "file,class\n", "metrics.json": "{}"}, {"notes.txt": "mine"}],
                         ids=["evaluate-output", "notes"])
def test_resume_refuses_a_folder_that_is_not_a_run_and_keeps_its_files(tmp_path, files):
    folder = tmp_path / "X"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    with pytest.raises(UserError, match=r"X is not a run folder: it has no backup/config.json.*another --name"):
        resolve_run_dir(TrainConfig(out=tmp_path, name="X"), resume=True)
    assert {path.name: path.read_text() for path in folder.iterdir()} == files


@pytest.mark.parametrize("taken_by", ["a finished run", "a training now", "a file"])
def test_a_run_named_by_the_clock_takes_the_next_free_name_where_its_second_is_taken(tmp_path, monkeypatch,
                                                                                       taken_by):
    """Two trainings without --name started in one second got one timestamp: the second was refused over a name the
    user never chose ("holds a finished run. Choose another --name", "is training now")."""
    from datetime import datetime

    from realvsai import config as config_module
    from realvsai.files import working_on

    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 11, 27, 12, 0, 0)

    monkeypatch.setattr(config_module, "datetime", Clock)
    taken = tmp_path / "20261127-120000"
    claim = working_on([taken], "ModelTraining.py") if taken_by == "a training now" else contextlib.nullcontext()
    if taken_by == "a finished run":
        taken.mkdir()
        (taken / "model.json").write_text("{}")
    elif taken_by == "a file":
        taken.write_text("notes")

    with claim:
        config, run_dir = resolve_run_dir(TrainConfig(out=tmp_path, data=tmp_path / "data"), resume=False)

    assert run_dir == tmp_path / "20261127-120000-2" and config.name == "20261127-120000-2"


@pytest.mark.parametrize("left", [[], ["backup/"], ["backup/.config.json.x1y2z3w4.tmp"]],
                         ids=["empty", "backup-folder", "cut-write"])
def test_the_same_command_starts_over_a_run_killed_before_it_saved_its_settings(tmp_path, left):
    """What training leaves between creating the run folder and its first write, backup/config.json: the command
    that started it starts it over (it said the folder exists, to continue with --resume, which then took the
    default settings, --resume taking no training flag)."""
    folder = tmp_path / "run"
    folder.mkdir()
    for name in left:
        (folder / name).parent.mkdir(exist_ok=True)
        if not name.endswith("/"):
            (folder / name).write_text('{"trunc')
    config = TrainConfig(out=tmp_path, name="run", weights="none", seed=3)
    assert resolve_run_dir(config, resume=False) == (config, folder)
    with pytest.raises(UserError, match=r"before it saved its settings.*without --resume"):
        resolve_run_dir(TrainConfig(out=tmp_path, name="run"), resume=True)


def test_a_users_hidden_tmp_file_in_backup_is_no_killed_start_and_is_kept(tmp_path):
    """Any hidden .tmp passed for the temporary of the settings' write, and the run started over in the folder;
    only a name files.temporary_of reads as a write's temporary does now."""
    own = tmp_path / "run" / "backup" / ".notes.tmp"
    own.parent.mkdir(parents=True)
    own.write_text("mine")
    with pytest.raises(UserError, match=r"already exists and is not a run folder .*its files are kept"):
        resolve_run_dir(TrainConfig(out=tmp_path, name="run"), resume=False)
    with pytest.raises(UserError, match=r"is not a run folder: it has no backup/config\.json"):
        resolve_run_dir(TrainConfig(out=tmp_path, name="run"), resume=True)
    assert own.read_text() == "mine"


@pytest.mark.parametrize("text", ['{"backbone": "resnet50", "image_si', '{"image_size": "32"}', '[1, 2]',
                                  '{"data": 5}', '{"head_epochs": true}', '{"weights": null}'],
                         ids=["truncated", "string-number", "not-an-object", "number-path", "bool-int", "null"])
def test_resume_refuses_a_damaged_saved_config_in_one_line_naming_it(tmp_path, text):
    saved = tmp_path / "run" / "backup" / "config.json"
    saved.parent.mkdir(parents=True)
    saved.write_text(text)
    with pytest.raises(UserError, match=r"backup/config\.json") as raised:
        resolve_run_dir(TrainConfig(out=tmp_path, name="run"), resume=True)
    assert "\n" not in str(raised.value) and "another --name" in str(raised.value)


@pytest.mark.parametrize("resume", [False, True], ids=["start", "resume"])
def test_a_training_is_refused_while_another_run_works_on_its_run_folder(tmp_path, resume, make_class_folder):
    """Two starts of one --name (or a start and a --resume) both trained into one folder, each reporting success:
    its history.csv was one run's, its model.h5 and metrics the other's. The run folder is made only after the
    data is read and the model built, so the check that it exists did not see the other run."""
    from realvsai.files import working_on

    make_class_folder(tmp_path / "data" / "train", {"FAKE": 2, "REAL": 2})
    make_class_folder(tmp_path / "data" / "validation", {"FAKE": 2, "REAL": 2})
    config = TrainConfig(data=tmp_path / "data", out=tmp_path / "models", name="run", weights="none")
    if resume:
        saved = tmp_path / "models" / "run" / "backup" / "config.json"
        saved.parent.mkdir(parents=True)
        saved.write_text(json.dumps(config.to_json()))

    with working_on([tmp_path / "models" / "run"], "ModelTraining.py"), pytest.raises(UserError) as refused:
        training.train(config, resume=resume, verbose=0)

    # Not "wait for it to finish, then run the command again": once it has finished, a start of its --name is
    # refused as a finished run, and a --resume finds nothing to resume.
    assert str(refused.value).startswith(f"{tmp_path / 'models' / 'run'} is training now in ModelTraining.py (process "
                                         f"{os.getpid()})")
    assert str(refused.value).endswith("To continue it here instead, stop that run, then run this command again."
                                       if resume else "; choose another --name.")


@pytest.mark.skipif(os.name == "nt", reason="Windows' file locks have no shared mode: a training claims no data")
@pytest.mark.parametrize("resume", [False, True], ids=["start", "resume"])
def test_a_training_keeps_other_runs_from_changing_its_data_while_it_runs(tmp_path, monkeypatch, resume,
                                                                          make_class_folder):
    """A merge or a move of augmented copies into the data of a running training made its --resume refuse the
    changed data; a deletion there failed the training at its next epoch. The deletion of one image went ahead."""
    from realvsai.files import working_on

    data = tmp_path / "data"
    make_class_folder(data / "train", {"FAKE": 2, "REAL": 2})
    make_class_folder(data / "validation", {"FAKE": 2, "REAL": 2})
    image = sorted((data / "train" / "FAKE").iterdir())[0]
    config = TrainConfig(data=data, out=tmp_path / "models", name="run", weights="none")
    if resume:
        saved = tmp_path / "models" / "run" / "backup" / "config.json"
        saved.parent.mkdir(parents=True)
        saved.write_text(json.dumps(config.to_json()))
    refused = []

    def meanwhile(*args, **kwargs):
        for script, path in (("DataMerger.py", data), ("MoveAugmentedImages.py", data),
                             ("DataDeleter.py", data / "train"), ("DataDeleter.py", data / "validation" / "REAL"),
                             ("DataDeleter.py", image)):
            try:
                with working_on([path], script):
                    pass
            except UserError as error:
                refused.append(str(error))
        with working_on([data / "art"], "DataSplitD1.py"):  # a dataset split beside its splits, to merge later
            pass
        raise Killed

    monkeypatch.setattr(training, "_train", meanwhile)
    with pytest.raises(Killed):
        training.train(config, resume=resume, verbose=0)
    assert len(refused) == 5 and all("another run reads" in message for message in refused), refused
    with working_on([data], "DataMerger.py"):  # free again once the training ended
        pass


def test_resume_of_a_run_whose_data_is_gone_asks_for_its_new_place(tmp_path):
    """It said "has no train folder. Run DataSplitD1.py or DataSplitD2.py first": a new split would be other
    data, which a resumed run refuses; what it needs is --data where the same split now is."""
    saved = tmp_path / "run" / "backup" / "config.json"
    saved.parent.mkdir(parents=True)
    saved.write_text(json.dumps(TrainConfig(data=tmp_path / "moved-away", weights="none").to_json()))

    with pytest.raises(UserError) as raised:
        resolve_run_dir(TrainConfig(out=tmp_path, name="run"), resume=True)

    message = str(raised.value)
    assert str(tmp_path / "moved-away") in message and "--resume --name run --out" in message
    assert message.endswith(" --data NEW-PLACE.")
    assert "DataSplit" not in message


def test_resume_of_a_run_whose_data_is_gone_names_the_whole_command_with_its_out(tmp_path):
    """It said "give its new place: --resume --name run --data NEW-PLACE": a run under --out 'my models', resumed
    with those flags, was looked for in models/ and was not there."""
    out = tmp_path / "my models"
    saved = out / "run" / "backup" / "config.json"
    saved.parent.mkdir(parents=True)
    saved.write_text(json.dumps(TrainConfig(data=tmp_path / "moved-away", weights="none").to_json()))

    with pytest.raises(UserError) as raised:
        resolve_run_dir(TrainConfig(out=out, name="run"), resume=True)

    assert str(raised.value).endswith(f"give its new place: python ModelTraining.py --resume --name run --out "
                                      f"'{out}' --data NEW-PLACE."), str(raised.value)


def test_cli_resume_of_a_damaged_saved_config_is_one_error_line(tmp_path, capsys):
    saved = tmp_path / "run" / "backup" / "config.json"
    saved.parent.mkdir(parents=True)
    saved.write_text('{"image_size": "32"}')
    code = ModelTraining.main(["--resume", "--name", "run", "--out", str(tmp_path), "--quiet"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(error) == 1 and error[0].startswith("error: ") and str(saved) in error[0]


# --- the data a resumed run reads ---------------------------------------------------------------------


def killed_after_epochs(tmp_path, monkeypatch, make_class_folder, epochs: int = 1):
    """A run of a stand-in model in tmp_path/models/run (``epochs`` + 1 epochs), killed once the backup of epoch
    ``epochs`` has committed."""
    from realvsai import callbacks

    real_backup = callbacks.RunBackup.on_epoch_end

    def killed(self, epoch, logs=None):
        real_backup(self, epoch, logs)
        if epoch + 1 == epochs:
            raise Killed

    monkeypatch.setattr(callbacks.RunBackup, "on_epoch_end", killed)
    with pytest.raises(Killed):
        train_with(tiny_classifier, monkeypatch, tmp_path, make_class_folder, head_epochs=epochs + 1)
    monkeypatch.setattr(callbacks.RunBackup, "on_epoch_end", real_backup)
    return tmp_path / "models" / "run"


@pytest.mark.parametrize("killed_in", [1, 2], ids=["first-epoch", "second-epoch"])
def test_a_run_killed_before_an_epoch_s_backup_committed_has_no_history_row_of_that_epoch(tmp_path, monkeypatch,
                                                                                          make_class_folder, killed_in):
    """history.csv got an epoch's row before its backup committed: a kill -9 between the two left a row of an epoch
    that --resume trains again (and a run killed so in its first epoch was said to have ended one)."""
    from realvsai import callbacks

    real_backup = callbacks.RunBackup.on_epoch_end

    def killed(self, epoch, logs=None):
        if epoch + 1 == killed_in:
            raise Killed  # the row of the epoch is recorded, its backup not yet committed
        real_backup(self, epoch, logs)

    monkeypatch.setattr(callbacks.RunBackup, "on_epoch_end", killed)
    with pytest.raises(Killed):
        train_with(tiny_classifier, monkeypatch, tmp_path, make_class_folder, head_epochs=3)
    run = tmp_path / "models" / "run"
    committed = callbacks.read_backup(run / "backup" / "full")  # --weights none: one phase
    history = run / "history.csv"

    assert ([row["epoch"] for row in committed["state"]["rows"]] if committed else []) == list(range(1, killed_in))
    assert ([row["epoch"] for row in read_history_csv(history)] if history.exists() else []) == list(
        range(1, killed_in))


def test_a_resume_that_only_restores_a_finished_phase_decodes_no_training_image_for_it(tmp_path, monkeypatch,
                                                                                     make_class_folder):
    """Killed once a phase's last epoch was backed up (in the next phase's first epoch, or before the run wrote that
    training was over), --resume restores that phase without an epoch of it, yet decoded every training image into
    its cache all the same, under a bar (CIFAKE's: 22 s on 2 cores), and then again for the phase after it."""
    from realvsai import callbacks, data

    decoded, real_fill, real_backup = [], data._fill_cache, callbacks.RunBackup.on_epoch_end
    monkeypatch.setattr(data, "_fill_cache", lambda dataset, count: (decoded.append(count), real_fill(dataset, count)))

    def killed(self, epoch, logs=None):
        real_backup(self, epoch, logs)
        raise Killed

    monkeypatch.setattr(callbacks.RunBackup, "on_epoch_end", killed)
    with pytest.raises(Killed):
        train_with(tiny_classifier, monkeypatch, tmp_path, make_class_folder)  # one epoch: the phase's last
    monkeypatch.setattr(callbacks.RunBackup, "on_epoch_end", real_backup)
    assert decoded == [8]  # before its epoch
    decoded.clear()

    result = training.train(TrainConfig(out=tmp_path / "models", name="run"), resume=True, verbose=0)

    assert [row["epoch"] for row in result.history] == [1] and (tmp_path / "models" / "run" / "model.h5").is_file()
    assert decoded == []


def test_a_resume_whose_best_epoch_s_model_is_gone_is_refused_in_one_line_and_trains_nothing(tmp_path, monkeypatch,
                                                                                            make_class_folder):
    """With model.h5 deleted after a kill, --resume trained on, ended with exit 0 and a run without model.h5, and
    evaluated the last epoch's weights as the best epoch's."""
    from realvsai import callbacks

    run = killed_after_epochs(tmp_path, monkeypatch, make_class_folder, epochs=2)
    monkeypatch.setattr(callbacks, "best_epoch_row", lambda rows: rows[0] if rows else None)  # epoch 1, not the last
    (run / "model.h5").unlink()
    assert refused_resume(run) == (f"{run / 'model.h5'}, the model of the run's best epoch (1), is missing, so the "
                                   "run cannot go on: put the file back, or train a new run under another --name.")


def snapshot(folder):
    return {path: path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def refused_resume(run: Path, data: Path | None = None) -> str:
    """The one line that refuses a --resume of ``run`` (in tmp_path/models, named run), which leaves its files as
    they were."""
    before = snapshot(run)
    with pytest.raises(UserError) as refused:
        training.train(TrainConfig(out=run.parent, name=run.name), resume=True, data=data, verbose=0)
    assert snapshot(run) == before
    return str(refused.value)


@pytest.mark.parametrize("change", ["image", "class"])
def test_resume_refuses_training_data_changed_since_the_run_started(tmp_path, monkeypatch, make_class_folder,
                                                                    change):
    run = killed_after_epochs(tmp_path, monkeypatch, make_class_folder)
    write_image(tmp_path / "data" / "train" / ("FAKE" if change == "image" else "OTHER") / "added.png", seed=77)
    if change == "class":
        write_image(tmp_path / "data" / "validation" / "OTHER" / "added.png", seed=78)
    assert re.search(r"data changed since the run started.*start a new --name", refused_resume(run))


@contextlib.contextmanager
def killed_before_the_curves(monkeypatch):
    """Expects the training inside to be killed once its training is over (its backup holds trained.json), as it
    begins its curves and evaluation."""
    from realvsai import plots

    real_plot = plots.plot_training_curves

    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(plots, "plot_training_curves", killed)
    with pytest.raises(Killed):
        yield
    monkeypatch.setattr(plots, "plot_training_curves", real_plot)


def killed_after_training(tmp_path, monkeypatch, make_class_folder):
    """A one-epoch run of a stand-in model in tmp_path/models/run, killed once its training was over."""
    with killed_before_the_curves(monkeypatch):
        train_with(tiny_classifier, monkeypatch, tmp_path, make_class_folder)
    run = tmp_path / "models" / "run"
    assert (run / "backup" / "trained.json").is_file()
    return run


@pytest.mark.parametrize("data", ["changed", "other"])
def test_a_run_killed_after_training_finishes_only_on_the_data_it_trained_on(tmp_path, monkeypatch,
                                                                           make_class_folder, data):
    """Killed once training was over (before its curves and evaluation), --resume finished the run on whatever data
    it found: a threshold and test metrics from other images, under the card of the run's own, without a word."""
    run = killed_after_training(tmp_path, monkeypatch, make_class_folder)
    other = None
    if data == "changed":
        write_image(tmp_path / "data" / "validation" / "FAKE" / "added.png", seed=77)
    else:
        other = tmp_path / "other"
        make_class_folder(other / "train", {"FAKE": 5, "REAL": 4})
        make_class_folder(other / "validation", {"FAKE": 4, "REAL": 4})
    assert re.search((r"changed since the run started" if data == "changed" else
                      r"does not hold the images the run started on") + ".*start a new --name",
                     refused_resume(run, data=other))


@pytest.mark.parametrize("key", ["data_digest", "backend"])
def test_a_run_whose_backup_records_no_data_digest_or_backend_resumes_as_before(tmp_path, monkeypatch,
                                                                                make_class_folder, key):
    run = killed_after_epochs(tmp_path, monkeypatch, make_class_folder)
    saved = run / "backup" / "config.json"
    saved.write_text(json.dumps({name: value for name, value in json.loads(saved.read_text()).items()
                                 if name != key}))
    result = training.train(TrainConfig(out=tmp_path / "models", name="run"), resume=True, verbose=0)
    assert [row["epoch"] for row in result.history] == [1, 2]


def test_a_run_begun_before_the_cross_entropy_was_logged_names_val_loss_when_a_resumed_epoch_is_best(
        tmp_path, monkeypatch, make_class_folder):
    """Killed under an older version (its backup's rows have val_loss alone) and resumed: its best epoch was still
    chosen by val_loss, but a best epoch of the resumed ones, which log both, was said to have the lowest
    val_cross_entropy, in the summary and in model.json's record the model card reads."""
    run = killed_after_epochs(tmp_path, monkeypatch, make_class_folder)
    backup = run / "backup" / "full" / "backup.json"
    content = json.loads(backup.read_text())
    content["state"]["rows"] = [{**{key: value for key, value in row.items() if "cross_entropy" not in key},
                                 "val_loss": 1e9} for row in content["state"]["rows"]]  # epoch 1: never the best
    content["state"]["early_stopping"]["best"] = 1e9
    backup.write_text(json.dumps(content))

    result = training.train(TrainConfig(out=tmp_path / "models", name="run"), resume=True, verbose=0)

    assert result.model_info["best_epoch"]["epoch"] == 2
    assert "best epoch 2: val_loss " in ModelTraining.summarize(result)
    assert json.loads((run / "model.json").read_text())["monitor"] == "val_loss"


@pytest.mark.parametrize("killed", ["in-training", "after-training"])
def test_a_run_whose_backup_records_no_data_digest_is_refused_where_its_data_now_holds_other_counts(
        tmp_path, monkeypatch, make_class_folder, killed):
    """A run killed under an older version, whose backup holds no digest of its data, resumed after a merge into
    that data: it finished without a word, its threshold and test numbers from images its model.json's counts (and
    the card's) do not hold."""
    run = (killed_after_epochs if killed == "in-training" else killed_after_training)(tmp_path, monkeypatch,
                                                                                       make_class_folder)
    saved = run / "backup" / "config.json"
    saved.write_text(json.dumps({name: value for name, value in json.loads(saved.read_text()).items()
                                 if name != "data_digest"}))
    write_image(tmp_path / "data" / "validation" / "FAKE" / "merged.png", seed=77)
    assert re.search(r"data changed since the run started.*start a new --name", refused_resume(run))


def test_a_run_records_the_keras_backend_it_started_on(tmp_path, monkeypatch, make_class_folder):
    run = killed_after_epochs(tmp_path, monkeypatch, make_class_folder)
    backend = keras.backend.backend()
    assert json.loads((run / "backup" / "config.json").read_text())["backend"] == backend
    result = training.train(TrainConfig(out=tmp_path / "models", name="run"), resume=True, verbose=0)
    assert json.loads((run / "model.json").read_text())["config"]["backend"] == backend
    assert result.model_info["config"]["backend"] == backend


def test_a_resume_says_once_that_it_takes_the_runs_saved_settings(tmp_path, monkeypatch, make_class_folder, caplog):
    run = killed_after_epochs(tmp_path, monkeypatch, make_class_folder)
    with caplog.at_level("INFO", logger="realvsai"):
        training.train(TrainConfig(out=tmp_path / "models", name="run"), resume=True, verbose=0)
    said = [record.getMessage() for record in caplog.records if "settings it was started with" in record.getMessage()]
    assert said == [f"resuming {run} with the settings it was started with"]


def test_a_resumed_run_keeps_the_time_it_was_created(tmp_path, monkeypatch, make_class_folder):
    """model.json's created (the card's date, the app's "trained ..." and its newest-first order) became the time
    of the resume."""
    run = killed_after_epochs(tmp_path, monkeypatch, make_class_folder)
    info = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(json.dumps({**info, "created": "2026-01-02T03:04:05+00:00"}))  # killed long ago

    result = training.train(TrainConfig(out=tmp_path / "models", name="run"), resume=True, verbose=0)

    assert json.loads((run / "model.json").read_text())["created"] == "2026-01-02T03:04:05+00:00"
    assert result.model_info["created"] == "2026-01-02T03:04:05+00:00"


def test_resume_on_another_keras_backend_is_refused_in_one_line(tmp_path, monkeypatch, make_class_folder):
    """Killed on TensorFlow and resumed under KERAS_BACKEND=jax, the run went on with other random numbers."""
    run = killed_after_epochs(tmp_path, monkeypatch, make_class_folder)
    other = "jax" if keras.backend.backend() == "tensorflow" else "tensorflow"
    saved = run / "backup" / "config.json"
    saved.write_text(json.dumps({**json.loads(saved.read_text()), "backend": other}))  # as if started there
    assert refused_resume(run) == (f"{run} started on {other}; resume it with KERAS_BACKEND={other}, or start a new "
                                   "--name.")


@pytest.mark.parametrize("backend, prefix", [("jax", "KERAS_BACKEND=jax "), ("tensorflow", ""), (None, "")])
def test_the_command_that_continues_a_run_names_the_keras_backend_it_started_on(tmp_path, backend, prefix):
    """A run interrupted under KERAS_BACKEND=jax printed "Continue the run with: python ModelTraining.py --resume
    ...", which, pasted, ran on TensorFlow and was refused ("started on jax; resume it with KERAS_BACKEND=jax")."""
    from realvsai.config import resume_command

    run = tmp_path / "models" / "run"
    (run / "backup").mkdir(parents=True)
    (run / "backup" / "config.json").write_text(json.dumps({**TrainConfig(name="run").to_json(), "backend": backend}))

    assert resume_command(run) == (f"{prefix}python ModelTraining.py --resume --name run --out "
                                   f"{shlex.quote(str(tmp_path / 'models'))}")


def test_cli_resume_reads_the_runs_moved_data_from_the_data_flag(tmp_path, monkeypatch, make_class_folder, capsys):
    run = killed_after_epochs(tmp_path, monkeypatch, make_class_folder)
    shutil.move(tmp_path / "data", tmp_path / "moved")
    resume = ["--resume", "--name", "run", "--out", str(tmp_path / "models"), "--quiet"]
    assert ModelTraining.main(resume) == 1
    assert (f"give its new place: python ModelTraining.py --resume --name run --out {tmp_path / 'models'} --data "
            "NEW-PLACE." in capsys.readouterr().err)  # and it does so:
    assert ModelTraining.main([*resume, "--data", str(tmp_path / "moved")]) == 0
    assert json.loads((run / "model.json").read_text())["config"]["data"] == str(tmp_path / "moved")


def test_a_run_killed_after_training_and_resumed_on_its_moved_data_names_the_new_place(tmp_path, monkeypatch,
                                                                                        make_class_folder, capsys):
    """Finished on the moved data, the run's closing line said the old folder had no test folder, and its
    model.json named the old folder as its data: both came from what the run had saved before the kill."""
    run = killed_after_training(tmp_path, monkeypatch, make_class_folder)
    shutil.move(tmp_path / "data", tmp_path / "moved")

    assert ModelTraining.main(["--resume", "--name", "run", "--out", str(tmp_path / "models"), "--data",
                               str(tmp_path / "moved"), "--quiet"]) == 0

    assert f"no test numbers: {tmp_path / 'moved'} has no test folder" in capsys.readouterr().out
    assert json.loads((run / "model.json").read_text())["config"]["data"] == str(tmp_path / "moved")


def test_the_model_card_of_a_run_killed_after_training_and_resumed_on_its_moved_data_names_the_new_place(
        tmp_path, monkeypatch, make_class_folder):
    """The card's training configuration named the old folder, where the run had finished on the moved one."""
    make_class_folder(tmp_path / "data" / "test", {"FAKE": 2, "REAL": 2}, seed=9)
    run = killed_after_training(tmp_path, monkeypatch, make_class_folder)
    shutil.move(tmp_path / "data", tmp_path / "moved")

    training.train(TrainConfig(out=tmp_path / "models", name="run"), resume=True, data=tmp_path / "moved", verbose=0)

    card = (run / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert f"| data | `{json.dumps(str(tmp_path / 'moved'))}` |" in card
    assert str(tmp_path / "data") not in card


def test_a_run_killed_again_while_finishing_on_its_moved_data_resumes_there_without_data(tmp_path, monkeypatch,
                                                                                         make_class_folder):
    """Killed after training, resumed with --data NEW and killed again in its evaluation, the run still recorded the
    old folder: --resume refused with "OLD, the data run started on, is not there", where one killed in an epoch
    goes on from NEW."""
    run = killed_after_training(tmp_path, monkeypatch, make_class_folder)
    shutil.move(tmp_path / "data", tmp_path / "moved")
    with killed_before_the_curves(monkeypatch):
        training.train(TrainConfig(out=tmp_path / "models", name="run"), resume=True, data=tmp_path / "moved",
                       verbose=0)

    training.train(TrainConfig(out=tmp_path / "models", name="run"), resume=True, verbose=0)

    assert json.loads((run / "model.json").read_text())["config"]["data"] == str(tmp_path / "moved")
    assert not (run / "backup").exists()


def test_resume_refuses_a_data_flag_naming_other_data_and_says_it_is_other_data(tmp_path, monkeypatch,
                                                                                make_class_folder):
    """It said "OTHER changed since the run started", of a folder the run had never seen."""
    killed_after_epochs(tmp_path, monkeypatch, make_class_folder)
    make_class_folder(tmp_path / "other" / "train", {"FAKE": 5, "REAL": 4})
    make_class_folder(tmp_path / "other" / "validation", {"FAKE": 4, "REAL": 4})
    with pytest.raises(UserError) as refused:
        training.train(TrainConfig(out=tmp_path / "models", name="run"), resume=True, data=tmp_path / "other",
                       verbose=0)
    assert str(refused.value) == (
        f"{tmp_path / 'other'} does not hold the images the run started on in {tmp_path / 'data'}: its train/ and "
        "validation/ images are others (files or classes added, removed or changed). Point --data at that data, "
        "or start a new --name to train on this one.")


def test_starting_over_a_finished_run_says_it_is_finished_not_to_resume_it(tmp_path):
    """--demo run twice said "continue that run with --resume", and --resume then said "nothing to resume"."""
    run_dir = tmp_path / "models" / "demo"
    run_dir.mkdir(parents=True)
    (run_dir / "model.json").write_text("{}")  # a finished run: its backup is gone
    with pytest.raises(UserError) as error:
        resolve_run_dir(TrainConfig(out=tmp_path / "models", name="demo"), resume=False)
    message = str(error.value)
    assert "finished" in message and "--resume" not in message
    assert follow_deleter_hint(message) == 0 and not run_dir.exists()  # outside the repository's models/ too


# --- what an interrupted run leaves, and what continues it ---------------------------------------------


def stopped_after_the_first_epoch(tmp_path, monkeypatch, make_class_folder, capsys, out: Path,
                                  stop: BaseException) -> tuple[int, list[str]]:
    """ModelTraining.main on a tiny run "k9" into ``out``, ``stop`` raised once the first epoch is backed up (the
    backup callback is restored after): its exit code and the lines it wrote to stderr."""
    from realvsai import callbacks

    monkeypatch.setattr(model_module, "build_model", tiny_classifier)
    for split in ("train", "validation"):
        make_class_folder(tmp_path / "data" / split, {"FAKE": 4, "REAL": 4}, seed=len(split))
    real_backup = callbacks.RunBackup.on_epoch_end

    def stopped(self, epoch, logs=None):
        real_backup(self, epoch, logs)
        raise stop

    monkeypatch.setattr(callbacks.RunBackup, "on_epoch_end", stopped)
    code = ModelTraining.main(["--data", str(tmp_path / "data"), "--out", str(out), "--name", "k9", "--weights",
                               "none", "--batch-size", "4", "--head-epochs", "2", "--fine-tune-epochs", "0", "--quiet"])
    monkeypatch.setattr(callbacks.RunBackup, "on_epoch_end", real_backup)
    return code, error_lines(capsys)


def error_lines(capsys) -> list[str]:
    """What a --quiet run printed on stderr but the warnings of its classes' few training images (4 each here)."""
    return [line for line in capsys.readouterr().err.strip().splitlines() if "a model learns little" not in line]


def test_ctrl_c_during_training_names_the_command_that_continues_the_run(tmp_path, monkeypatch, make_class_folder,
                                                                          capsys):
    """It said "Run the same command again", which then refused: the run folder already exists."""
    out = tmp_path / "my runs"
    code, error = stopped_after_the_first_epoch(tmp_path, monkeypatch, make_class_folder, capsys, out,
                                                KeyboardInterrupt())
    assert code == 1 and len(error) == 1 and error[0].startswith("error: interrupted. "), error
    found = re.search(r"python ModelTraining\.py (--resume --name k9 --out \S+ \S+)", error[0])
    assert found and shlex.split(found.group(1)) == ["--resume", "--name", "k9", "--out", str(out)], error[0]

    assert ModelTraining.main([*shlex.split(found.group(1)), "--quiet"]) == 0, capsys.readouterr().err
    assert json.loads((out / "k9" / "model.json").read_text())["best_epoch"]["epoch"] in (1, 2)
    assert not (out / "k9" / "backup").exists()  # finished


def tiny_run_command(tmp_path, monkeypatch, make_class_folder, out: Path, splits=("train", "validation"),
                     epochs: int = 1) -> list[str]:
    """ModelTraining's arguments for a tiny run "k9" of a stand-in model into ``out``, on new data in tmp_path."""
    monkeypatch.setattr(model_module, "build_model", tiny_classifier)
    for split in splits:
        make_class_folder(tmp_path / "data" / split, {"FAKE": 4, "REAL": 4}, seed=len(split))
    return ["--data", str(tmp_path / "data"), "--out", str(out), "--name", "k9", "--weights", "none", "--batch-size",
            "4", "--head-epochs", str(epochs), "--fine-tune-epochs", "0", "--quiet"]


def test_a_ctrl_c_dropped_in_the_final_evaluation_still_stops_the_run_with_its_continue_command(
        tmp_path, monkeypatch, make_class_folder, capsys):
    """Twice in seven tries a Ctrl-C at the end of training or the start of its evaluation was lost (its
    handler ran inside a finalizer) and the run finished with exit code 0, as if never interrupted."""
    from realvsai import evaluation

    out = tmp_path / "runs"
    command = tiny_run_command(tmp_path, monkeypatch, make_class_folder, out, ("train", "validation", "test"))
    real_evaluate = evaluation.evaluate_run

    def dropped_at_its_start(*args, **kwargs):
        drop_a_ctrl_c()
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate_run", dropped_at_its_start)
    code = ModelTraining.main(command)
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and error[-1] == (f"error: interrupted. Continue the run with: python ModelTraining.py --resume "
                                       f"--name k9 --out {out} (its finished epochs are kept)"), error
    assert not any("KeyboardInterrupt" in line or "Exception ignored" in line for line in error), error

    monkeypatch.setattr(evaluation, "evaluate_run", real_evaluate)
    assert ModelTraining.main(["--resume", "--name", "k9", "--out", str(out), "--quiet"]) == 0
    assert (out / "k9" / "MODEL_CARD.md").is_file() and not (out / "k9" / "backup").exists()


def test_a_ctrl_c_dropped_during_an_epoch_stops_the_training_there_not_after_its_last_epoch(
        tmp_path, monkeypatch, make_class_folder, capsys):
    from realvsai import callbacks

    out = tmp_path / "runs"
    command = tiny_run_command(tmp_path, monkeypatch, make_class_folder, out, epochs=3)
    real_backup = callbacks.RunBackup.on_epoch_end

    def dropped_after_the_first_backup(self, epoch, logs=None):
        real_backup(self, epoch, logs)
        if epoch == 0:
            drop_a_ctrl_c()

    monkeypatch.setattr(callbacks.RunBackup, "on_epoch_end", dropped_after_the_first_backup)
    code = ModelTraining.main(command)
    error = error_lines(capsys)
    assert code == 1 and len(error) == 1 and "--resume --name k9" in error[0], error
    assert [row["epoch"] for row in read_history_csv(out / "k9" / "history.csv")] == [1]


def test_a_full_disk_during_training_names_the_command_that_continues_the_run(tmp_path, monkeypatch,
                                                                             make_class_folder, capsys):
    """It said "run the same command again (finished work is kept)", which then refused: the run folder exists."""
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "runs" / "k9" / "history.csv"))
    code, error = stopped_after_the_first_epoch(tmp_path, monkeypatch, make_class_folder, capsys, tmp_path / "runs",
                                                full)
    assert code == 1 and len(error) == 1 and "no space left" in error[0].lower(), error
    assert "--resume --name k9" in error[0] and "run the same command again" not in error[0], error[0]


def test_a_read_only_run_folder_during_training_says_to_make_it_writable(tmp_path, monkeypatch, make_class_folder,
                                                                          capsys):
    """It said "Choose a writable place", where the run can only go on in its own folder."""
    read_only = OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / "runs" / "k9" / "history.csv"))
    code, error = stopped_after_the_first_epoch(tmp_path, monkeypatch, make_class_folder, capsys, tmp_path / "runs",
                                                read_only)
    assert code == 1 and len(error) == 1, error
    assert "the file system is read-only. Make it writable, then continue the run with: " in error[0], error[0]


def test_resume_removes_what_a_kill_in_the_middle_of_a_write_left_in_the_run_folder(tmp_path, monkeypatch,
                                                                                     make_class_folder):
    run = killed_after_epochs(tmp_path, monkeypatch, make_class_folder)
    torn_model = run / ".model.l8m92q4n.tmp" / "model.h5"  # save_model_atomically's folder, cut by kill -9
    torn_model.parent.mkdir()
    torn_model.write_bytes(b"\x89HDF\r\n\x1a\n cut off")
    for name in (".model.json.dm7mdq8e.tmp", ".history.csv.a1b2c3d4.tmp", ".metrics.json.zz_9x0y1.tmp"):
        (run / name).write_bytes(b"")  # files.atomic_write's temporary files
    kept = {"notes.txt": b"mine", ".model.json.bak": b"{}", ".mine.x1y2z3w4.tmp": b"mine", "model.tmp": b"mine",
            ".model.abcdefgh.tmp/notes.txt": b"mine", ".model.l8m92q4.tmp/model.h5": b"not eight characters"}
    for name, content in kept.items():
        (run / name).parent.mkdir(exist_ok=True)
        (run / name).write_bytes(content)

    training.train(TrainConfig(out=tmp_path / "models", name="run"), resume=True, verbose=0)

    assert not torn_model.parent.exists()
    left = {".model.json.dm7mdq8e.tmp", ".history.csv.a1b2c3d4.tmp", ".metrics.json.zz_9x0y1.tmp"}
    assert not left & {path.name for path in run.iterdir()}
    assert {name: (run / name).read_bytes() for name in kept} == kept
