"""The training callbacks on fake logs and a tiny Dense model: stop rules, best model, resume state, backups."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
import stat
import sys
import warnings

import keras
import numpy as np
import pytest
from conftest import read_history_csv

from realvsai import cli, distributed
from realvsai.callbacks import (
    BestModel,
    ResumableEarlyStopping,
    RunBackup,
    StopBeforeDeadline,
    StopOnNonFiniteLoss,
    StopTrainingOnValidationLoss,
    TrainingHistory,
    ValidationProgress,
    read_backup,
    save_model_atomically,
    write_history_csv,
)
from realvsai.config import MONITOR
from realvsai.errors import UserError


def tiny_model(seed: int = 0, policy: str = "float32") -> keras.Model:
    """Built under the dtype ``policy`` (the global one is float32 again afterwards)."""
    keras.utils.set_random_seed(seed)
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"),
                                  keras.layers.Dense(2, activation="softmax")])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy",
                  weighted_metrics=[distributed.cross_entropy()])  # as training compiles it
    return model


def drive(callbacks: list[keras.callbacks.Callback], model: keras.Model, epochs: list[tuple[float, float]],
          first_epoch: int = 0) -> list[int]:
    """Feeds (cross-entropy, validation cross-entropy) pairs as a fit would, as the losses too (no L2 penalty);
    changes the weights each epoch; returns the epochs run."""
    callback_list = keras.callbacks.CallbackList(callbacks, model=model)
    model.stop_training = False
    callback_list.on_train_begin()
    ran = []
    for offset, (loss, val_loss) in enumerate(epochs):
        epoch = first_epoch + offset
        model.set_weights([weight + 1.0 for weight in model.get_weights()])  # "training" moves the weights
        callback_list.on_epoch_end(epoch, {"loss": loss, "val_loss": val_loss, "cross_entropy": loss,
                                           "val_cross_entropy": val_loss})
        ran.append(epoch)
        if model.stop_training:
            break
    callback_list.on_train_end()
    return ran


def assert_weights(actual: list, expected: list) -> None:
    for got, wanted in zip(actual, expected):
        np.testing.assert_allclose(got, wanted)


# --- the stop rule: val_cross_entropy > cross_entropy + margin, and no lower one, for patience epochs in a row --


@pytest.mark.parametrize(("epochs", "patience", "ran"), [
    ([(1.0, 0.9), (0.8, 0.95), (0.6, 0.92), (0.5, 0.7), (0.4, 0.6)], 2, [0, 1, 2]),  # two in a row stop it
    ([(1.0, 1.2), (0.9, 0.95), (0.8, 1.0), (0.7, 0.75), (0.6, 0.8)], 2, [0, 1, 2, 3, 4]),  # never two in a row
    ([(0.5, 0.59), (0.4, 0.49)], 1, [0, 1]),  # a gap within the margin does not count
    ([(1.0, 0.9), (0.8, math.nan), (0.7, math.nan), (0.6, 0.5)], 2, [0, 1, 2]),  # NaN val_loss counts
    # Fine-tuning drives the training loss towards 0 while val_loss still falls: the phase went on learning.
    ([(1.0, 0.9), (0.8, 0.85), (0.6, 0.75), (0.5, 0.7), (0.4, 0.6)], 2, [0, 1, 2, 3, 4]),
], ids=["consecutive", "interrupted", "within-margin", "nan", "val-loss-still-falling"])
def test_stop_rule_stops_after_patience_epochs_of_val_loss_above_loss_plus_margin(epochs, patience, ran):
    rule = StopTrainingOnValidationLoss(margin=0.1, patience=patience)
    assert drive([rule], tiny_model(), epochs) == ran
    assert rule.stopped_epoch == (ran[-1] if len(ran) < len(epochs) else None)


def test_stop_rule_counter_survives_a_restore():
    first = StopTrainingOnValidationLoss(margin=0.1, patience=3)
    drive([first], tiny_model(), [(0.4, 0.6), (0.3, 0.7), (0.2, 0.8)])
    second = StopTrainingOnValidationLoss(margin=0.1, patience=4)
    second.restore(json.loads(json.dumps(first.state())))
    assert drive([second], tiny_model(), [(0.1, 0.65), (0.1, 0.9)], first_epoch=3) == [3, 4]
    assert second.stopped_epoch == 4  # 0.65 is no new best: the run's best, 0.6, came before the restart


def test_early_stopping_counters_survive_a_restore():
    model = tiny_model()
    first = ResumableEarlyStopping(monitor="val_loss", patience=3)
    drive([first], model, [(0.1, 0.5), (0.1, 0.6), (0.1, 0.7)])
    second = ResumableEarlyStopping(monitor="val_loss", patience=3)
    second.restore(json.loads(json.dumps(first.state())))
    assert drive([second], model, [(0.1, 0.8), (0.1, 0.9)], first_epoch=3) == [3]  # third epoch without progress


def test_nan_training_loss_stops_the_run_with_a_clear_error():
    x = np.full((8, 3), np.nan, "float32")  # every prediction, so the loss, is NaN
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    with pytest.raises(UserError) as raised:
        model.fit(x, np.zeros(8, "int32"), epochs=3, batch_size=4, verbose=0, callbacks=[StopOnNonFiniteLoss()])
    assert str(raised.value) == "training loss became NaN at epoch 1; lower --learning-rate or use --precision float32"


# --- the time limit of a command (bench_gpu_cifake.py --time-limit) ----------------------------------------


def timed_epoch(deadline: StopBeforeDeadline, clock: list[float], compiling: bool) -> bool:
    """One epoch of 10 training steps of 1 s and 3 validation steps of 0.5 s (when ``compiling``, the first
    training step takes 60 s and the first validation step 5 s) and 1 s of saves, on the fake ``clock``;
    returns whether it stops training."""
    deadline.model.stop_training = False
    deadline.on_epoch_begin(0)
    for part, steps, seconds, first in (("train", 10, 1.0, 60.0), ("test", 3, 0.5, 5.0)):
        if part == "test":
            deadline.on_test_begin()
        for step in range(steps):
            getattr(deadline, f"on_{part}_batch_begin")(step)
            clock[0] += first if step == 0 and compiling else seconds
            getattr(deadline, f"on_{part}_batch_end")(step)
    deadline.on_test_end()
    clock[0] += 1.0
    deadline.on_epoch_end(0)
    return deadline.model.stop_training


def test_the_time_limit_measures_the_next_epoch_without_the_first_steps_that_compile(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("realvsai.callbacks.time.monotonic", lambda: clock[0])
    # The epoch took 60 + 9 + 5 + 1 + 1 = 76 s, of which the first steps compiled for 63 s: the next takes 12.5 s.
    deadline = StopBeforeDeadline(deadline=1000 + 76 + 15)
    deadline.set_model(tiny_model())
    assert not timed_epoch(deadline, clock, compiling=True)
    assert deadline.seconds[0] == {"train": 69.0, "validation": 6.0, "saves": 1.0, "total": 76.0}
    assert timed_epoch(deadline, clock, compiling=False)  # 12.5 s more would end at 1101, past 1091
    assert deadline.stopped


def test_the_time_limit_does_not_stop_after_the_last_planned_epoch(monkeypatch, caplog):
    """A run that trained all its epochs was not stopped by the time limit: no next epoch to fit in."""
    clock = [1000.0]
    monkeypatch.setattr("realvsai.callbacks.time.monotonic", lambda: clock[0])
    deadline = StopBeforeDeadline(deadline=1000 + 76 + 5)
    deadline.set_model(tiny_model())
    deadline.set_params({"epochs": 1, "steps": 10, "verbose": 0})
    with caplog.at_level(logging.INFO, logger="realvsai"):
        assert not timed_epoch(deadline, clock, compiling=True)  # epoch 1 of 1: 12.5 s more would end past 1081
    assert not deadline.stopped
    assert "time limit" not in caplog.text
    assert deadline.seconds[0]["total"] == 76.0


# --- the bar of fit's validation, where Keras' own shows nothing -------------------------------------------------


class Terminal(io.StringIO):
    """A terminal's screen, which stdout and stderr both draw on."""

    def isatty(self) -> bool:
        return True


def screen_lines(text: str) -> list[str]:
    """The lines a terminal shows once ``text`` is drawn: a carriage return goes back to the line's start, a
    backspace one column, and what follows overwrites what is there (colours left out)."""
    lines, column = [""], 0
    for char in re.sub(r"\x1b\[[\d;]*m", "", text):
        if char == "\n":
            lines.append("")
            column = 0
        elif char == "\r":
            column = 0
        elif char == "\b":
            column = max(0, column - 1)
        else:
            lines[-1] = lines[-1][:column] + char + lines[-1][column + 1:]
            column += 1
    return [line.rstrip() for line in lines]


def on_a_terminal(monkeypatch) -> Terminal:
    """stdout and stderr on one ``Terminal``, with the project's bars shown (in the test itself: pytest puts its
    own capture back on sys.stdout and sys.stderr after a fixture's setup)."""
    cli.setup_logging(quiet=False)
    screen = Terminal()
    monkeypatch.setattr(sys, "stdout", screen)
    monkeypatch.setattr(sys, "stderr", screen)
    return screen


def bars_made(monkeypatch) -> list:
    """Every bar the callbacks make (``cli.progress``'s tqdm), kept to look at once closed."""
    bars = []

    def kept(*args, **kwargs):
        bars.append(cli.progress(*args, **kwargs))
        return bars[-1]

    monkeypatch.setattr("realvsai.callbacks.progress", kept)
    return bars


def fit_validated(callback: keras.callbacks.Callback, verbose: int = 1) -> keras.Model:
    """Two epochs of 4 training batches, each validated on 3 batches."""
    x, y = rows_of()
    model = tiny_model()
    model.fit(x, y, batch_size=4, epochs=2, validation_data=(x, y), validation_steps=3, verbose=verbose,
              callbacks=[callback])
    return model


def test_fit_validates_each_epoch_under_a_bar_counting_its_batches(monkeypatch):
    """Inside fit, Keras' bar shows nothing while the epoch validates: on CIFAKE at 100k on a CPU, minutes of a
    finished bar standing still."""
    terminal, bars = on_a_terminal(monkeypatch), bars_made(monkeypatch)
    fit_validated(ValidationProgress(steps=3))
    # n counts only while a bar is shown; disable is set once it is closed.
    assert [(bar.desc, bar.total, bar.n, bar.disable) for bar in bars] == [("validating", 3, 3, True)] * 2
    assert "validating:   0%" in terminal.getvalue()


def test_the_validation_bar_leaves_its_line_to_the_epochs_closing_line(monkeypatch):
    """Drawn over Keras' bar of the epoch, it is wiped before Keras rewrites that line with the validation metrics:
    no line of it is left between the epochs."""
    terminal = on_a_terminal(monkeypatch)
    fit_validated(ValidationProgress(steps=3))
    lines = screen_lines(terminal.getvalue())
    assert "validating" in terminal.getvalue()
    assert not any("validating" in line for line in lines), lines
    assert [line.split()[0] for line in lines if "val_loss" in line] == ["4/4", "4/4"], lines


def test_evaluate_draws_no_validation_bar(monkeypatch):
    """The bar is fit's: an evaluate (or a predict) shows its own progress."""
    on_a_terminal(monkeypatch)
    bars, callback = bars_made(monkeypatch), ValidationProgress(steps=4)
    model = fit_validated(callback)
    bars.clear()
    x, y = rows_of()
    model.evaluate(x, y, batch_size=4, verbose=1, callbacks=[callback])
    assert bars == []


@pytest.mark.parametrize("hidden", ["--quiet", "no terminal", "verbose=0"])
def test_the_validation_bar_is_hidden_where_progress_bars_are(monkeypatch, hidden):
    """--quiet, a stderr that is no terminal (a log), and Keras told to draw nothing (--quiet, or a worker of a
    cluster other than the chief)."""
    cli.setup_logging(quiet=hidden == "--quiet")
    stderr = io.StringIO() if hidden == "no terminal" else Terminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    fit_validated(ValidationProgress(steps=3), verbose=0 if hidden == "verbose=0" else 1)
    assert stderr.getvalue() == ""


# --- what picks the best epoch and ends a phase: the cross-entropy, not the loss with the head's L2 penalty ----


# Epochs of a good model: its weights shrink, and with them the penalty in loss and val_loss (which fall), while
# the validation cross-entropy rises from the first epoch on.
PENALISED = [{"loss": 0.60, "val_loss": 0.50, "cross_entropy": 0.30, "val_cross_entropy": 0.20},
             {"loss": 0.50, "val_loss": 0.48, "cross_entropy": 0.10, "val_cross_entropy": 0.40},
             {"loss": 0.40, "val_loss": 0.46, "cross_entropy": 0.05, "val_cross_entropy": 0.45}]


def feed(callbacks: list[keras.callbacks.Callback], model: keras.Model, epochs: list[dict[str, float]]) -> list[int]:
    """Feeds each epoch's logs as a fit would; returns the epochs run."""
    callback_list = keras.callbacks.CallbackList(callbacks, model=model)
    model.stop_training = False
    callback_list.on_train_begin()
    ran = []
    for epoch, logs in enumerate(epochs):
        model.set_weights([weight + 1.0 for weight in model.get_weights()])
        callback_list.on_epoch_end(epoch, dict(logs))
        ran.append(epoch)
        if model.stop_training:
            break
    callback_list.on_train_end()
    return ran


def test_the_best_model_is_the_epoch_of_the_lowest_validation_cross_entropy_not_of_the_penalised_loss(tmp_path):
    best = BestModel(tmp_path / "model.h5")
    feed([best], tiny_model(), PENALISED)
    assert best.best_epoch == 0


def test_a_resumed_best_model_knows_the_epoch_of_the_lowest_validation_cross_entropy(tmp_path):
    best = BestModel(tmp_path / "model.h5")
    best.resume([{"epoch": epoch, **logs} for epoch, logs in enumerate(PENALISED, start=1)])
    assert (best.best_epoch, best.best) == (0, 0.20)


def test_early_stopping_counts_epochs_without_a_lower_validation_cross_entropy():
    stopping = ResumableEarlyStopping(patience=2)
    assert feed([stopping], tiny_model(), PENALISED) == [0, 1, 2] and stopping.stopped_epoch == 2


# A run begun before history.csv held the cross-entropy: its rows have the penalised losses alone.
EARLIER_ROWS = [{"epoch": 1, "loss": 0.5, "val_loss": 0.30}, {"epoch": 2, "loss": 0.4, "val_loss": 0.50}]


def test_a_run_begun_before_the_cross_entropy_was_logged_keeps_its_best_epoch_by_val_loss(tmp_path):
    """Resumed, its best epoch was forgotten: the next epoch, however bad, overwrote model.h5 as the best."""
    from realvsai.callbacks import best_epoch_row
    from realvsai.config import monitor_of

    assert monitor_of(EARLIER_ROWS) == "val_loss" and monitor_of([*EARLIER_ROWS[:0], {"epoch": 1}]) == MONITOR
    assert best_epoch_row(EARLIER_ROWS)["epoch"] == 1
    best = BestModel(tmp_path / "model.h5", monitor=monitor_of(EARLIER_ROWS))
    best.resume(EARLIER_ROWS)
    feed([best], tiny_model(), [{"loss": 0.3, "val_loss": 0.9, "cross_entropy": 0.2, "val_cross_entropy": 0.1}])
    assert best.best_epoch == 0 and not (tmp_path / "model.h5").exists()


def test_the_stop_rule_compares_the_cross_entropies_not_the_penalised_losses():
    """val_loss stays within loss + 0.1 while the validation cross-entropy runs 0.3 and 0.4 above training's."""
    rule = StopTrainingOnValidationLoss(margin=0.1, patience=2)
    assert feed([rule], tiny_model(), PENALISED) == [0, 1, 2] and rule.stopped_epoch == 2


# --- the best model ------------------------------------------------------------------------------------


def test_best_model_saves_and_restores_the_weights_of_the_lowest_validation_cross_entropy(tmp_path):
    model = tiny_model()
    best = BestModel(tmp_path / "model.h5")
    start = model.get_weights()
    drive([best], model, [(1.0, 0.9), (0.8, 0.7), (0.6, 0.8), (0.5, math.nan)])  # NaN is never best
    assert best.best_epoch == 1
    expected = [weight + 1.0 + 1.0 for weight in start]  # after the second epoch, added as drive adds (float32)
    assert_weights(model.get_weights(), expected)
    assert_weights(keras.models.load_model(tmp_path / "model.h5", compile=False).get_weights(), expected)
    assert [path.name for path in tmp_path.iterdir()] == ["model.h5"]  # no temporary file left


def test_best_model_resumed_after_the_backup_of_a_new_best_epoch_saves_that_epoch(tmp_path):
    # A kill right after epoch 2's backup committed, before its model was saved: model.h5 holds another model.
    save_model_atomically(tiny_model(seed=5), tmp_path / "model.h5")
    restored = tiny_model(seed=1)  # the weights the backup restores: epoch 2's
    best = BestModel(tmp_path / "model.h5")
    best.resume([{"epoch": 1, "val_cross_entropy": 0.9}, {"epoch": 2, "val_cross_entropy": 0.5}])
    drive([best], restored, [(0.7, 0.8)], first_epoch=2)
    assert best.best_epoch == 1
    assert_weights(keras.models.load_model(tmp_path / "model.h5", compile=False).get_weights(),
                   tiny_model(seed=1).get_weights())


def test_best_model_saves_the_model_its_export_function_makes(tmp_path):
    from realvsai.model import float32_copy

    model = tiny_model(policy="mixed_float16")
    drive([BestModel(tmp_path / "model.h5", export=float32_copy)], model, [(1.0, 0.9)])
    saved = keras.models.load_model(tmp_path / "model.h5", compile=False)
    assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}


def test_best_model_makes_its_export_once_a_fit_and_saves_each_improvements_weights_into_it(tmp_path):
    """Building ResNet101's float32 copy took 1.9 s an improvement (2 CPU cores), setting its weights 0.15 s."""
    from realvsai.model import float32_copy

    model = tiny_model(policy="mixed_float16")
    made = []
    best = BestModel(tmp_path / "model.h5", export=lambda model: made.append(1) or float32_copy(model))

    drive([best], model, [(1.0, 0.9), (1.0, 0.8), (1.0, 0.85), (1.0, 0.7)])  # three improvements
    saved = keras.models.load_model(tmp_path / "model.h5", compile=False)
    assert len(made) == 1 and {layer.dtype_policy.name for layer in saved.layers} == {"float32"}
    assert_weights(saved.get_weights(), model.get_weights())  # the last epoch's, the best

    drive([best], model, [(1.0, 0.6)])  # the next phase's fit (its layers may train otherwise): a fresh copy
    assert len(made) == 2
    assert_weights(keras.models.load_model(tmp_path / "model.h5", compile=False).get_weights(), model.get_weights())


def test_save_model_atomically_keeps_the_old_file_when_the_save_fails(tmp_path, monkeypatch):
    model = tiny_model()
    target = tmp_path / "model.h5"
    save_model_atomically(model, target)
    before = target.read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(model, "save", broken_save)
    with pytest.raises(OSError):
        save_model_atomically(model, target)
    assert target.read_bytes() == before
    assert [path.name for path in tmp_path.iterdir()] == ["model.h5"]


def test_a_save_the_disk_cannot_hold_is_refused_before_hdf5_writes_it(tmp_path, monkeypatch):
    """HDF5 crashed the process (exit 139, once without a word) when a disk filled part way through its write:
    Keras leaves the file open, and libhdf5 fails as it is closed. A save that cannot fit is refused first."""
    import errno
    import shutil

    model, saves = tiny_model(), []
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 100, 100))
    monkeypatch.setattr(model, "save", lambda *args, **kwargs: saves.append(args))
    monkeypatch.setattr(model, "save_weights", lambda *args, **kwargs: saves.append(args))

    with pytest.raises(OSError) as full:
        save_model_atomically(model, tmp_path / "model.h5")
    backup = RunBackup(tmp_path / "backup")
    backup.set_model(model)
    with pytest.raises(OSError) as backup_full:
        backup.on_epoch_end(0)

    assert full.value.errno == backup_full.value.errno == errno.ENOSPC and not saves
    assert "100 B free" in str(full.value)
    assert not (tmp_path / "model.h5").exists() and not list((tmp_path / "backup").glob("*.h5"))


def test_saving_the_model_and_its_backup_shows_no_numpy_copy_keyword_notice_and_other_warnings_still_show(tmp_path):
    """Keras' HDF5 writers hand each variable to ``np.array``, whose ``__array__`` takes no ``copy``: NumPy 2 printed
    a DeprecationWarning of Keras' code in the terminal of a user with PYTHONWARNINGS=default, at the first save of
    a run. Only that notice of Keras is hidden: another warning of Keras still shows."""
    model = tiny_model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # as PYTHONWARNINGS=default shows a warning first met
        save_model_atomically(model, tmp_path / "model.h5")
        backup = RunBackup(tmp_path / "backup")
        backup.set_model(model)
        backup.on_epoch_end(0)
        warnings.warn_explicit("another notice", DeprecationWarning, "core.py", 1, module="keras.src.backend")
    assert [str(warning.message) for warning in caught] == ["another notice"]


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask-022", "umask-027"])
def test_saved_model_gets_the_mode_every_other_output_gets(tmp_path, umask):
    previous = os.umask(umask)
    try:
        save_model_atomically(tiny_model(), tmp_path / "model.h5")
        write_history_csv(tmp_path / "history.csv", [{"epoch": 1, "loss": 0.5}])
    finally:
        os.umask(previous)
    mode = stat.S_IMODE((tmp_path / "model.h5").stat().st_mode)
    assert mode == 0o666 & ~umask == stat.S_IMODE((tmp_path / "history.csv").stat().st_mode)


# --- history and backups -------------------------------------------------------------------------------


def test_training_history_writes_a_row_per_epoch_with_phase_and_learning_rate(tmp_path):
    recorder = TrainingHistory(tmp_path / "history.csv", rows=[{"epoch": 1, "phase": "head", "loss": 0.9}])
    recorder.phase = "fine_tune"
    keras.callbacks.CallbackList([recorder], model=tiny_model()).on_epoch_end(1, {"loss": 0.5, "val_loss": 0.6})
    recorder.write()
    rows = read_history_csv(tmp_path / "history.csv")
    assert [(row["epoch"], row["phase"]) for row in rows] == [(1, "head"), (2, "fine_tune")]
    assert rows[1]["learning_rate"] == pytest.approx(1e-2) and rows[1]["val_loss"] == 0.6


def test_training_history_reads_a_constant_learning_rate_without_numpys_deprecated_array_conversion(tmp_path):
    """A constant learning rate is a Keras variable, whose ``__array__`` takes no ``copy``: through
    ``keras.ops.convert_to_numpy`` (``np.array``) NumPy 2 warned that this is deprecated, on either backend."""
    recorder = TrainingHistory(tmp_path / "history.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keras.callbacks.CallbackList([recorder], model=tiny_model()).on_epoch_end(0, {"loss": 0.5})
    recorder.write()
    assert read_history_csv(tmp_path / "history.csv")[0]["learning_rate"] == pytest.approx(1e-2)


def test_run_backup_restores_weights_optimizer_and_state_in_a_new_fit(tmp_path):
    x = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = tiny_model()
    model.fit(x, y, epochs=2, batch_size=8, verbose=0,
              callbacks=[RunBackup(tmp_path / "backup", state_fn=lambda: {"note": "epoch state"})])
    commit = read_backup(tmp_path / "backup")
    assert commit["epoch"] == 2 and commit["state"] == {"note": "epoch state"}

    resumed = tiny_model(seed=1)
    seen = []
    counter = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: seen.append(epoch))
    resumed.fit(x, y, epochs=3, initial_epoch=commit["epoch"], batch_size=8, verbose=0,
                callbacks=[RunBackup(tmp_path / "backup", restore=True), counter])
    assert seen == [2]
    assert int(resumed.optimizer.iterations.numpy()) == 6  # 2 steps per epoch, optimizer state restored


def test_interrupted_backup_write_leaves_the_previous_backup_usable(tmp_path, monkeypatch):
    x, y = np.ones((8, 3), "float32"), np.zeros(8, "int32")
    model = tiny_model()
    model.fit(x, y, epochs=1, verbose=0, callbacks=[RunBackup(tmp_path, state_fn=lambda: {"epoch": "one"})])
    monkeypatch.setattr("realvsai.callbacks.atomic_write_text", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):  # killed between the checkpoint and its commit
        model.fit(x, y, epochs=2, initial_epoch=1, verbose=0, callbacks=[RunBackup(tmp_path)])
    commit = read_backup(tmp_path)
    assert commit["epoch"] == 1 and commit["state"] == {"epoch": "one"}
    resumed = tiny_model(seed=3)
    resumed.fit(x, y, epochs=1, initial_epoch=1, verbose=0, callbacks=[RunBackup(tmp_path, restore=True)])
    assert int(resumed.optimizer.iterations.numpy()) == 1


def test_damaged_or_mismatched_backup_is_a_user_error(tmp_path):
    assert read_backup(tmp_path / "missing") is None
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "backup.json").write_text("{not json")
    with pytest.raises(UserError, match="not a backup"):
        read_backup(tmp_path / "damaged")
    x, y = np.ones((8, 3), "float32"), np.zeros(8, "int32")
    tiny_model().fit(x, y, epochs=1, verbose=0, callbacks=[RunBackup(tmp_path / "other")])
    wider = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5), keras.layers.Dense(2, activation="softmax")])
    wider.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(UserError, match="does not fit this model"):
        wider.fit(x, y, epochs=2, initial_epoch=1, verbose=0, callbacks=[RunBackup(tmp_path / "other", restore=True)])


# --- why the project keeps its own callbacks: each Keras built-in next to its replacement, same scenario ----


def rows_of(count: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(seed).normal(size=(count, 3)).astype("float32")
    return x, (x[:, 0] > 0).astype("int32")


def nan_model() -> tuple[keras.Model, np.ndarray, np.ndarray]:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    return model, np.full((8, 3), np.nan, "float32"), np.zeros(8, "int32")  # every loss is NaN


def test_keras_terminate_on_nan_lets_the_nan_epoch_be_recorded_and_ends_fit_as_if_done():
    model, x, y = nan_model()
    ended = []
    recorder = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: ended.append(epoch))
    model.fit(x, y, epochs=3, batch_size=4, verbose=0, callbacks=[keras.callbacks.TerminateOnNaN(), recorder])
    assert ended == [0]  # the diverged epoch reached the recorder (and would reach the backup); no error
    model, x, y = nan_model()
    with pytest.raises(RuntimeError) as raised:  # raise_error=True: a bare RuntimeError, no hint for the user
        model.fit(x, y, epochs=3, batch_size=4, verbose=0, callbacks=[keras.callbacks.TerminateOnNaN(raise_error=True)])
    assert not isinstance(raised.value, UserError)


def test_stop_on_non_finite_loss_ends_the_run_with_a_user_error_before_any_epoch_end():
    model, x, y = nan_model()
    ended = []
    recorder = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: ended.append(epoch))
    with pytest.raises(UserError, match="lower --learning-rate"):
        model.fit(x, y, epochs=3, batch_size=4, verbose=0, callbacks=[StopOnNonFiniteLoss(), recorder])
    assert ended == []


def kill_at_save(model: keras.Model, monkeypatch, call: int, after_writing: bool) -> None:
    """Makes the ``call``-th ``model.save_weights`` raise KeyboardInterrupt (a kill), before or after it writes."""
    save_weights, calls = model.save_weights, []

    def killed(*args, **kwargs):
        calls.append(1)
        if len(calls) == call and not after_writing:
            raise KeyboardInterrupt
        save_weights(*args, **kwargs)
        if len(calls) == call:
            raise KeyboardInterrupt

    monkeypatch.setattr(model, "save_weights", killed)


def epochs_in(path) -> list[int]:
    with open(path, newline="", encoding="utf-8") as stream:
        return [int(row["epoch"]) for row in csv.DictReader(stream)]


def test_keras_csv_logger_with_append_keeps_the_row_of_an_epoch_a_resumed_run_writes_again(tmp_path, monkeypatch):
    x, y = rows_of()
    model = tiny_model()
    kill_at_save(model, monkeypatch, call=3, after_writing=False)  # killed after epoch 3's row, before its backup
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=3, verbose=0, callbacks=[keras.callbacks.CSVLogger(tmp_path / "log.csv", append=True),
                                                        RunBackup(tmp_path / "backup")])
    start = read_backup(tmp_path / "backup")["epoch"]
    assert start == 2
    resumed = tiny_model()
    resumed.fit(x, y, epochs=3, initial_epoch=start, verbose=0,
                callbacks=[keras.callbacks.CSVLogger(tmp_path / "log.csv", append=True),
                           RunBackup(tmp_path / "backup", restore=True)])
    assert epochs_in(tmp_path / "log.csv") == [0, 1, 2, 2]  # the stale row of the killed epoch stays


def test_training_history_resumed_from_the_backup_writes_each_epoch_once(tmp_path, monkeypatch):
    x, y = rows_of()
    model = tiny_model()
    recorder = TrainingHistory(tmp_path / "history.csv")
    kill_at_save(model, monkeypatch, call=3, after_writing=False)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=3, verbose=0,
                  callbacks=[recorder, RunBackup(tmp_path / "backup", lambda: {"rows": recorder.rows},
                                                 on_commit=recorder.write)])
    assert epochs_in(tmp_path / "history.csv") == [1, 2]  # epoch 3's backup never committed: nor its row
    commit = read_backup(tmp_path / "backup")
    resumed = tiny_model()
    recorder = TrainingHistory(tmp_path / "history.csv", commit["state"]["rows"])
    resumed.fit(x, y, epochs=3, initial_epoch=commit["epoch"], verbose=0,
                callbacks=[recorder, RunBackup(tmp_path / "backup", restore=True, on_commit=recorder.write)])
    assert epochs_in(tmp_path / "history.csv") == [1, 2, 3]


def test_keras_backup_and_restore_deletes_its_backup_when_fit_ends_so_a_two_phase_run_cannot_resume(tmp_path):
    x, y = rows_of()
    tiny_model().fit(x, y, epochs=2, verbose=0, callbacks=[keras.callbacks.BackupAndRestore(tmp_path / "head")])
    assert not (tmp_path / "head").exists()  # phase one done, killed in phase two: nothing to resume phase one from
    tiny_model().fit(x, y, epochs=2, verbose=0, callbacks=[RunBackup(tmp_path / "head", lambda: {"phase_done": True})])
    assert read_backup(tmp_path / "head") == {"epoch": 2, "checkpoint": "epoch-2.weights.h5",
                                              "state": {"phase_done": True}}


def test_keras_backup_and_restore_kept_resumes_an_epoch_from_the_next_epochs_weights_and_no_run_state(tmp_path,
                                                                                                      monkeypatch):
    x, y = rows_of()
    weights_after = {}
    snapshot = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: weights_after.setdefault(epoch, model.get_weights()))
    model = tiny_model()
    kill_at_save(model, monkeypatch, call=2, after_writing=True)  # epoch 2's weights written, its epoch not yet
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=3, verbose=0,
                  callbacks=[snapshot, keras.callbacks.BackupAndRestore(tmp_path / "keras", delete_checkpoint=False)])
    metadata = json.loads((tmp_path / "keras" / "training_metadata.json").read_text())
    assert metadata == {"epoch": 1, "batch": 0}  # no room for the run's own state (history rows, stop rules)
    resumed, began = tiny_model(seed=1), {}
    watch = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: began.setdefault(epoch, resumed.get_weights()))
    resumed.fit(x, y, epochs=3, verbose=0,
                callbacks=[keras.callbacks.BackupAndRestore(tmp_path / "keras", delete_checkpoint=False), watch])
    assert min(began) == 1  # epoch 2 again, but from the weights epoch 2 already produced
    assert_weights(began[1], weights_after[1])

    model = tiny_model()
    weights_after.clear()
    kill_at_save(model, monkeypatch, call=2, after_writing=True)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=3, verbose=0, callbacks=[snapshot, RunBackup(tmp_path / "own")])
    commit = read_backup(tmp_path / "own")
    resumed, began = tiny_model(seed=1), {}
    resumed.fit(x, y, epochs=3, initial_epoch=commit["epoch"], verbose=0,
                callbacks=[RunBackup(tmp_path / "own", restore=True), watch])
    assert min(began) == 1
    assert_weights(began[1], weights_after[0])  # epoch 2 again, from epoch 1's weights


def test_keras_model_checkpoint_saves_the_mixed_precision_training_model_not_the_float32_export(tmp_path):
    from realvsai.model import float32_copy

    x, y = rows_of()
    model = tiny_model(policy="mixed_float16")
    checkpoint = keras.callbacks.ModelCheckpoint(tmp_path / "keras.keras", monitor="val_loss", save_best_only=True)
    best = BestModel(tmp_path / "own.h5", export=float32_copy)
    model.fit(x, y, epochs=1, validation_data=(x, y), verbose=0, callbacks=[checkpoint, best])
    saved = keras.models.load_model(tmp_path / "keras.keras", compile=False)
    assert {layer.dtype_policy.name for layer in saved.layers} == {"mixed_float16"}
    saved = keras.models.load_model(tmp_path / "own.h5", compile=False)
    assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}


def test_a_failed_backup_write_names_its_file(tmp_path, monkeypatch):
    """h5py's error of a failed write (a file-size limit, a disk error) names no file but in its text: the
    training's closing line said what went wrong, not where."""
    import errno

    model = tiny_model()

    def failed_write(*args, **kwargs):
        raise OSError(errno.EFBIG, "Can't synchronously write data (file write failed: ...)")

    monkeypatch.setattr(model, "save_weights", failed_write)
    backup = RunBackup(tmp_path / "backup")
    backup.set_model(model)
    with pytest.raises(OSError) as failed:
        backup.on_epoch_end(0)
    assert failed.value.filename == str(tmp_path / "backup" / "epoch-1.weights.h5")
