"""The training callbacks on fake logs and a tiny Dense model: stop rule, best model, resume state, backups."""

from __future__ import annotations

import json
import math
import os
import stat

import keras
import numpy as np
import pytest

from realvsai.callbacks import (
    ResumableEarlyStopping,
    RunBackup,
    StopTrainingOnValidationLoss,
    TrainingHistory,
    read_backup,
    read_history_csv,
    save_model_atomically,
    write_history_csv,
)


def tiny_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    return model


def drive(callback: keras.callbacks.Callback, model: keras.Model, epochs: list[tuple[float, float]],
          first_epoch: int = 0) -> list[int]:
    """Feeds (loss, val_loss) pairs as a fit would; changes the weights each epoch; returns the epochs run."""
    callbacks = keras.callbacks.CallbackList([callback], model=model)
    model.stop_training = False
    callbacks.on_train_begin()
    ran = []
    for offset, (loss, val_loss) in enumerate(epochs):
        epoch = first_epoch + offset
        model.set_weights([weight + 1.0 for weight in model.get_weights()])  # "training" moves the weights
        callbacks.on_epoch_end(epoch, {"loss": loss, "val_loss": val_loss})
        ran.append(epoch)
        if model.stop_training:
            break
    callbacks.on_train_end()
    return ran


def test_stop_rule_stops_after_patience_epochs_of_val_loss_above_loss_plus_margin(tmp_path):
    rule = StopTrainingOnValidationLoss(tmp_path / "model.h5", margin=0.1, patience=2)
    ran = drive(rule, tiny_model(), [(1.0, 0.9), (0.8, 0.85), (0.6, 0.75), (0.5, 0.7), (0.4, 0.6)])
    assert ran == [0, 1, 2, 3]  # epochs 3 and 4 (0-based 2, 3) overfit by more than 0.1 in a row
    assert rule.stopped_epoch == 3


def test_stop_rule_counts_only_consecutive_overfitting_epochs(tmp_path):
    rule = StopTrainingOnValidationLoss(tmp_path / "model.h5", margin=0.1, patience=2)
    ran = drive(rule, tiny_model(), [(1.0, 1.2), (0.9, 0.95), (0.8, 1.0), (0.7, 0.75), (0.6, 0.8)])
    assert ran == [0, 1, 2, 3, 4]
    assert rule.stopped_epoch is None


def test_stop_rule_gap_within_margin_does_not_count(tmp_path):
    rule = StopTrainingOnValidationLoss(tmp_path / "model.h5", margin=0.1, patience=1)
    assert drive(rule, tiny_model(), [(0.5, 0.59), (0.4, 0.49)]) == [0, 1]


def test_stop_rule_saves_and_restores_the_weights_of_the_lowest_val_loss(tmp_path):
    model = tiny_model()
    rule = StopTrainingOnValidationLoss(tmp_path / "model.h5", margin=0.1, patience=5)
    start = model.get_weights()
    drive(rule, model, [(1.0, 0.9), (0.8, 0.7), (0.6, 0.8), (0.5, 0.9)])
    assert rule.best_epoch == 1
    expected = [weight + 2.0 for weight in start]  # the weights after the second epoch
    for restored, wanted in zip(model.get_weights(), expected):
        np.testing.assert_allclose(restored, wanted)
    saved = keras.models.load_model(tmp_path / "model.h5", compile=False)
    for restored, wanted in zip(saved.get_weights(), expected):
        np.testing.assert_allclose(restored, wanted)
    assert [path.name for path in tmp_path.iterdir()] == ["model.h5"]  # no temporary file left


def test_stop_rule_never_takes_a_nan_val_loss_as_best(tmp_path):
    rule = StopTrainingOnValidationLoss(tmp_path / "model.h5", patience=5)
    drive(rule, tiny_model(), [(1.0, 0.9), (0.8, math.nan)])
    assert rule.best_epoch == 0


def test_stop_rule_resumed_from_its_state_restores_the_best_weights_from_disk(tmp_path):
    model = tiny_model()
    first = StopTrainingOnValidationLoss(tmp_path / "model.h5", margin=0.1, patience=3)
    callbacks = keras.callbacks.CallbackList([first], model=model)
    callbacks.on_train_begin()
    best = [weight + 1.0 for weight in model.get_weights()]
    model.set_weights(best)
    callbacks.on_epoch_end(0, {"loss": 1.0, "val_loss": 0.5})
    model.set_weights([weight + 1.0 for weight in best])
    callbacks.on_epoch_end(1, {"loss": 0.4, "val_loss": 0.6})  # worse, and 0.2 above loss: wait = 1
    state = json.loads(json.dumps(first.state()))  # as the backup stores it; then the process is killed

    resumed_model = tiny_model(seed=1)
    resumed_model.set_weights([weight + 1.0 for weight in best])  # what the backup restores: the last epoch
    second = StopTrainingOnValidationLoss(tmp_path / "model.h5", margin=0.1, patience=3)
    second.restore(state)
    ran = drive(second, resumed_model, [(0.3, 0.7), (0.2, 0.8)], first_epoch=2)
    assert ran == [2, 3]  # wait went 1 -> 2 -> 3 = patience: stopped after epoch 3 (0-based), not 4
    assert second.stopped_epoch == 3 and second.best_epoch == 0
    for restored, wanted in zip(resumed_model.get_weights(), best):
        np.testing.assert_allclose(restored, wanted)


def test_early_stopping_counters_survive_a_restore(tmp_path):
    model = tiny_model()
    first = ResumableEarlyStopping(monitor="val_loss", patience=3)
    callbacks = keras.callbacks.CallbackList([first], model=model)
    callbacks.on_train_begin()
    for epoch, val_loss in enumerate([0.5, 0.6, 0.7]):
        callbacks.on_epoch_end(epoch, {"val_loss": val_loss})
    state = json.loads(json.dumps(first.state()))
    second = ResumableEarlyStopping(monitor="val_loss", patience=3)
    second.restore(state)
    model.stop_training = False
    again = keras.callbacks.CallbackList([second], model=model)
    again.on_train_begin()
    again.on_epoch_end(3, {"val_loss": 0.8})
    assert model.stop_training  # third epoch without improvement across the restart


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


def test_history_csv_round_trip_keeps_phase_and_numbers(tmp_path):
    rows = [{"epoch": 1, "phase": "head", "loss": 0.5, "val_loss": 0.6},
            {"epoch": 2, "phase": "fine_tune", "loss": 0.4, "val_loss": 0.5, "learning_rate": 1e-5}]
    write_history_csv(tmp_path / "history.csv", rows)
    assert read_history_csv(tmp_path / "history.csv") == rows


def test_training_history_writes_a_row_per_epoch_with_phase_and_learning_rate(tmp_path):
    model = tiny_model()
    recorder = TrainingHistory(tmp_path / "history.csv", rows=[{"epoch": 1, "phase": "head", "loss": 0.9}])
    recorder.begin_phase("fine_tune")
    callbacks = keras.callbacks.CallbackList([recorder], model=model)
    callbacks.on_epoch_end(1, {"loss": 0.5, "val_loss": 0.6})
    rows = read_history_csv(tmp_path / "history.csv")
    assert [(row["epoch"], row["phase"]) for row in rows] == [(1, "head"), (2, "fine_tune")]
    assert rows[1]["learning_rate"] == pytest.approx(1e-2)


def test_run_backup_restores_weights_optimizer_epoch_and_state_in_a_new_fit(tmp_path):
    x = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = tiny_model()
    backup = RunBackup(tmp_path / "backup", state_fn=lambda: {"note": "epoch state"})
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[backup])
    metadata = read_backup(tmp_path / "backup")
    assert metadata["epoch"] == 2 and metadata["state"] == {"note": "epoch state"}
    assert sorted(path.name for path in (tmp_path / "backup").iterdir()) == ["latest.weights.h5",
                                                                             "training_metadata.json"]

    resumed = tiny_model(seed=1)
    seen = []
    counter = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: seen.append(epoch))
    resumed.fit(x, y, epochs=3, batch_size=8, verbose=0,
                callbacks=[RunBackup(tmp_path / "backup", state_fn=dict), counter])
    assert seen == [2]  # only the missing third epoch ran
    assert int(resumed.optimizer.iterations.numpy()) == 6  # 2 steps per epoch, optimizer state restored
    assert resumed._initial_epoch is None


def test_read_backup_is_none_without_a_complete_backup(tmp_path):
    assert read_backup(tmp_path / "missing") is None
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "training_metadata.json").write_text('{"epoch": 1}')
    assert read_backup(tmp_path / "half") is None


# --- a diverged run stops with a clear error ----------------------------------------------------------


def test_nan_training_loss_stops_the_run_with_a_clear_error():
    from realvsai.callbacks import StopOnNonFiniteLoss
    from realvsai.errors import UserError

    x = np.full((8, 3), np.nan, "float32")  # every prediction, so the loss, is NaN (no ReLU to turn it into 0)
    y = np.zeros(8, "int32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    with pytest.raises(UserError) as raised:
        model.fit(x, y, epochs=3, batch_size=4, verbose=0, callbacks=[StopOnNonFiniteLoss()])
    assert str(raised.value) == ("training loss became NaN at epoch 1; lower --learning-rate or use "
                                 "--precision float32")


def test_stop_rule_counts_a_nan_val_loss_as_overfitting(tmp_path):
    rule = StopTrainingOnValidationLoss(tmp_path / "model.h5", margin=0.1, patience=2)
    ran = drive(rule, tiny_model(), [(1.0, 0.9), (0.8, math.nan), (0.7, math.nan), (0.6, 0.5)])
    assert ran == [0, 1, 2] and rule.stopped_epoch == 2


# --- a kill at any moment leaves model.h5 the best epoch the committed state names ---------------------


class Killed(Exception):
    pass


def run_epochs(rule: StopTrainingOnValidationLoss, model: keras.Model, epochs: list[tuple[float, float]],
               first_epoch: int = 0, kill_before_commit_of: int | None = None) -> list[dict]:
    """Drives ``rule`` as fit does (epoch begin, training, epoch end, then the backup commit).

    Returns the committed backups (epoch, the rule's state, the weights); the last one is what a
    resume restores. ``kill_before_commit_of`` ends the run (Killed) after that epoch's on_epoch_end.
    """
    callbacks = keras.callbacks.CallbackList([rule], model=model)
    model.stop_training = False
    commits = []
    callbacks.on_train_begin()
    for offset, (loss, val_loss) in enumerate(epochs):
        epoch = first_epoch + offset
        callbacks.on_epoch_begin(epoch)
        model.set_weights([weight + 1.0 for weight in model.get_weights()])
        callbacks.on_epoch_end(epoch, {"loss": loss, "val_loss": val_loss})
        if epoch == kill_before_commit_of:
            raise Killed(commits)
        commits.append({"epoch": epoch, "state": json.loads(json.dumps(rule.state())), "weights": model.get_weights()})
    callbacks.on_train_end()
    return commits


def resume_from(commit: dict, path) -> tuple[StopTrainingOnValidationLoss, keras.Model]:
    model = tiny_model(seed=1)
    model.set_weights(commit["weights"])  # what the backup restores
    rule = StopTrainingOnValidationLoss(path, margin=1.0, patience=5)
    rule.restore(commit["state"])
    return rule, model


def assert_weights(actual: list, expected: list) -> None:
    for got, wanted in zip(actual, expected):
        np.testing.assert_allclose(got, wanted)


def test_kill_after_a_new_best_epoch_before_its_backup_keeps_the_committed_best_model(tmp_path):
    rule = StopTrainingOnValidationLoss(tmp_path / "model.h5", margin=1.0, patience=5)
    with pytest.raises(Killed) as killed:
        run_epochs(rule, tiny_model(), [(1.0, 0.9), (0.8, 0.5)], kill_before_commit_of=1)
    (committed,) = killed.value.args[0]  # epoch 0, the best so far
    rule, resumed = resume_from(committed, tmp_path / "model.h5")
    run_epochs(rule, resumed, [(0.8, 0.95)], first_epoch=1)  # epoch 1 trains again, and is worse this time
    assert rule.best_epoch == 0
    assert_weights(keras.models.load_model(tmp_path / "model.h5", compile=False).get_weights(), committed["weights"])
    assert_weights(resumed.get_weights(), committed["weights"])


def test_kill_after_the_backup_of_a_new_best_epoch_saves_that_epoch_on_resume(tmp_path):
    model = tiny_model()
    rule = StopTrainingOnValidationLoss(tmp_path / "model.h5", margin=1.0, patience=5)
    commits = run_epochs(rule, model, [(1.0, 0.9), (0.8, 0.5)])
    # A kill right after epoch 1's backup committed: simulated by a model.h5 that still holds epoch 0.
    save_model_atomically(tiny_model(seed=5), tmp_path / "model.h5")
    rule, resumed = resume_from(commits[-1], tmp_path / "model.h5")
    run_epochs(rule, resumed, [(0.7, 0.8)], first_epoch=2)
    assert rule.best_epoch == 1
    assert_weights(keras.models.load_model(tmp_path / "model.h5", compile=False).get_weights(),
                   commits[-1]["weights"])
    assert_weights(resumed.get_weights(), commits[-1]["weights"])


def test_stop_rule_saves_the_model_its_export_function_makes(tmp_path):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = tiny_model()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    from realvsai.model import float32_copy

    rule = StopTrainingOnValidationLoss(tmp_path / "model.h5", patience=5, export=float32_copy)
    run_epochs(rule, model, [(1.0, 0.9), (0.9, 1.0)])
    saved = keras.models.load_model(tmp_path / "model.h5", compile=False)
    assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}
