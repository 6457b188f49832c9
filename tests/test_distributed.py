"""Tests for realvsai.distributed: strategy choice, the custom training loop, resume, two workers.

The loop is checked under the default strategy in this process, under MirroredStrategy over two
logical CPUs in a subprocess, and as a real two-worker MultiWorkerMirroredStrategy cluster on
127.0.0.1 (two subprocesses, bounded by a timeout).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO

from realvsai import distributed
from realvsai.errors import UserError

NUM_EXAMPLES, BATCH_SIZE = 36, 8  # 5 batches per epoch, the last one of 4 examples
STEPS = 5


def tiny_data(num_examples: int = NUM_EXAMPLES, batch_size: int = BATCH_SIZE) -> tf.data.Dataset:
    """A fixed, learnable two-class problem in fixed order."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(num_examples, 4)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


def tiny_model(seed: int = 0, units: int = 8, optimizer: str = "adam", l2: float = 0.0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    regularizer = keras.regularizers.L2(l2) if l2 else None
    model = keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(units, activation="relu", kernel_regularizer=regularizer),
        keras.layers.Dense(2, activation="softmax", dtype="float32"),
    ])
    chosen = keras.optimizers.Adam(0.01) if optimizer == "adam" else keras.optimizers.SGD(0.1)
    model.compile(optimizer=chosen, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def fit(model: keras.Model, **kwargs) -> keras.callbacks.History:
    kwargs.setdefault("epochs", 2)
    return distributed.fit_distributed(model, tiny_data(), tiny_data(), strategy=tf.distribute.get_strategy(),
                                       verbose=0, **kwargs)


class Recorder(keras.callbacks.Callback):
    """Remembers the hooks called and the logs of every epoch."""

    def __init__(self):
        super().__init__()
        self.events: list[str] = []
        self.logs: dict[int, dict] = {}

    def on_train_begin(self, logs=None):
        self.events.append("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.events.append(f"epoch_begin {epoch}")

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(f"epoch_end {epoch}")
        self.logs[epoch] = dict(logs)

    def on_train_end(self, logs=None):
        self.events.append("train_end")

    @property
    def epochs(self) -> list[int]:
        return sorted(self.logs)


class Interrupted(Exception):
    pass


class InterruptAt(keras.callbacks.Callback):
    """Ends the run as a kill would, when ``epoch`` is about to start."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Interrupted


def weights_close(first: keras.Model, second: keras.Model, atol: float = 1e-6) -> bool:
    return all(np.allclose(a, b, rtol=0, atol=atol) for a, b in zip(first.get_weights(), second.get_weights()))


# --- choosing the strategy -------------------------------------------------------------------------

TWO_WORKERS = json.dumps({"cluster": {"worker": ["127.0.0.1:20001", "127.0.0.1:20002"]},
                          "task": {"type": "worker", "index": 1}})


def assert_same_history(history: dict, expected: dict) -> None:
    """The same metrics, each with the same per-epoch values to 1e-6."""
    assert history.keys() == expected.keys()
    for name, values in expected.items():
        assert history[name] == pytest.approx(values, abs=1e-6), name


def test_no_tf_config_selects_the_default_strategy():
    assert distributed.plan_strategy({}, num_gpus=0).kind == "default"
    if len(tf.config.list_physical_devices("GPU")) < 2:
        assert distributed.select_strategy({}) is tf.distribute.get_strategy()
        assert distributed.describe(distributed.select_strategy({})).startswith("one device")


def test_several_gpus_select_mirrored_strategy():
    assert distributed.plan_strategy({}, num_gpus=2).kind == "mirrored"
    assert distributed.plan_strategy({}, num_gpus=1).kind == "default"


def test_worker_cluster_selects_multi_worker_strategy():
    plan = distributed.plan_strategy({"TF_CONFIG": TWO_WORKERS}, num_gpus=0)
    assert plan.kind == "multi_worker"
    assert plan.cluster.num_workers == 2 and (plan.cluster.task_type, plan.cluster.task_index) == ("worker", 1)


def test_tf_config_without_cluster_trains_on_this_machine():
    assert distributed.plan_strategy({"TF_CONFIG": "{}"}, num_gpus=0).kind == "default"


@pytest.mark.parametrize("tf_config", [
    '{"cluster": {"worker": ["127.0.0.1:20001"]}, "task": {"type": "worker", "index": 0}',  # not JSON
    '["worker"]',
    '{"cluster": {"worker": "127.0.0.1:20001"}, "task": {"type": "worker", "index": 0}}',
    '{"cluster": {"worker": ["127.0.0.1"]}, "task": {"type": "worker", "index": 0}}',
    '{"cluster": {"ps": ["127.0.0.1:20001"], "worker": ["127.0.0.1:20002"]}, "task": {"type": "worker", "index": 0}}',
    '{"cluster": {"worker": ["127.0.0.1:20001"]}}',
    '{"cluster": {"worker": ["127.0.0.1:20001"]}, "task": {"type": "chief", "index": 0}}',
    '{"cluster": {"worker": ["127.0.0.1:20001"]}, "task": {"type": "worker", "index": 1}}',
])
def test_malformed_tf_config_is_a_clear_user_error(tf_config):
    with pytest.raises(UserError, match=r"TF_CONFIG.*Set it like"):
        distributed.select_strategy({"TF_CONFIG": tf_config})


@pytest.mark.parametrize(("cluster", "task", "chief"), [
    ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 0}, True),
    ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 1}, False),
    ({"chief": ["a:1"], "worker": ["b:1"]}, {"type": "chief", "index": 0}, True),
    ({"chief": ["a:1"], "worker": ["b:1"]}, {"type": "worker", "index": 0}, False),
])
def test_chief_is_the_chief_task_or_else_worker_zero(cluster, task, chief):
    assert distributed.is_chief({"TF_CONFIG": json.dumps({"cluster": cluster, "task": task})}) is chief


def test_only_the_chief_writes_into_the_worker_folder(tmp_path):
    with distributed.worker_folder({}, tmp_path / "run") as folder:
        assert folder == tmp_path / "run"
    with distributed.worker_folder({"TF_CONFIG": TWO_WORKERS}, tmp_path / "run") as folder:
        assert folder != tmp_path / "run"
        (folder / "model.h5").write_bytes(b"written by a non-chief worker")
    assert not folder.exists()


# --- the training loop under the default strategy -------------------------------------------------


def test_loop_lowers_the_training_loss():
    history = fit(tiny_model(), epochs=6)
    assert history.history["loss"][-1] < 0.8 * history.history["loss"][0]


def test_callbacks_see_every_epoch_with_the_logs_of_fit():
    recorder = Recorder()
    history = fit(tiny_model(), epochs=3, callbacks=[recorder])
    assert recorder.events == ["train_begin", "epoch_begin 0", "epoch_end 0", "epoch_begin 1", "epoch_end 1",
                               "epoch_begin 2", "epoch_end 2", "train_end"]
    assert set(recorder.logs[2]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history.history["val_loss"] == [recorder.logs[epoch]["val_loss"] for epoch in range(3)]


def test_stop_training_set_by_a_callback_ends_after_that_epoch():
    class StopAfterSecond(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = epoch == 1

    history = fit(tiny_model(), epochs=6, callbacks=[StopAfterSecond()])
    assert len(history.history["loss"]) == 2


def test_early_stopping_stops_at_the_same_epoch_as_in_model_fit():
    def stopper():  # no epoch improves by 1.0, so it stops after `patience` epochs
        return keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, min_delta=1.0)

    expected = tiny_model().fit(tiny_data(), validation_data=tiny_data(), epochs=8, callbacks=[stopper()],
                                verbose=0, shuffle=False)
    history = fit(tiny_model(), epochs=8, callbacks=[stopper()])
    assert len(history.history["loss"]) == len(expected.history["loss"]) < 8


def test_loop_matches_model_fit_for_one_epoch():
    # SGD, L2 regularisation, class weights and a smaller last batch: every part of the loss scaling.
    class_weight = {0: 1.0, 1: 3.0}
    expected_model = tiny_model(optimizer="sgd", l2=0.01)
    expected = expected_model.fit(tiny_data(), validation_data=tiny_data(), epochs=1, verbose=0, shuffle=False,
                                  class_weight=class_weight)
    model = tiny_model(optimizer="sgd", l2=0.01)
    history = fit(model, epochs=1, class_weight=class_weight)
    assert weights_close(model, expected_model)
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert history.history[name][0] == pytest.approx(expected.history[name][0], abs=1e-6), name


def test_loop_matches_model_fit_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        expected = tiny_model().fit(tiny_data(), validation_data=tiny_data(), epochs=2, verbose=0, shuffle=False)
        model = tiny_model()
        history = fit(model, epochs=2)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert history.history["loss"] == pytest.approx(expected.history["loss"], abs=1e-6)


def test_repeated_data_with_steps_trains_as_one_pass_per_epoch():
    expected = fit(tiny_model(), epochs=2)
    history = distributed.fit_distributed(tiny_model(), tiny_data().repeat(), tiny_data().repeat(), epochs=2,
                                          steps_per_epoch=STEPS, validation_steps=STEPS,
                                          strategy=tf.distribute.get_strategy(), verbose=0)
    assert_same_history(history.history, expected.history)


def test_repeated_data_without_steps_is_rejected():
    with pytest.raises(ValueError, match="validation_steps"):
        distributed.fit_distributed(tiny_model(), tiny_data(), tiny_data().repeat(), epochs=1,
                                    strategy=tf.distribute.get_strategy(), verbose=0)


def test_input_function_gives_each_worker_its_own_batches():
    def per_worker(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return tiny_data(batch_size=context.get_per_replica_batch_size(BATCH_SIZE)).shard(
            context.num_input_pipelines, context.input_pipeline_id)

    expected = fit(tiny_model(), epochs=2)
    history = distributed.fit_distributed(tiny_model(), per_worker, per_worker, epochs=2,
                                          strategy=tf.distribute.get_strategy(), verbose=0)
    assert_same_history(history.history, expected.history)


def test_steps_per_epoch_continues_through_the_data_and_restarts_it():
    model = tiny_model()
    fit(model, epochs=2, steps_per_epoch=7)
    assert int(model.optimizer.iterations.numpy()) == 14


def test_project_callbacks_keep_the_best_model_and_the_history(tmp_path):
    from realvsai.callbacks import StopTrainingOnValidationLoss, TrainingHistory, read_history_csv

    stop_rule = StopTrainingOnValidationLoss(tmp_path / "model.h5", margin=10.0, patience=1)
    fit(tiny_model(), epochs=3, callbacks=[stop_rule, TrainingHistory(tmp_path / "history.csv")])
    assert [row["epoch"] for row in read_history_csv(tmp_path / "history.csv")] == [1, 2, 3]
    assert stop_rule.best_epoch is not None
    assert keras.models.load_model(tmp_path / "model.h5").count_params() == tiny_model().count_params()


def test_uncompiled_model_is_rejected():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="compiled"):
        fit(model)


def test_backup_and_restore_callback_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="backup_dir"):
        fit(tiny_model(), callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path))])


# --- backup and resume ----------------------------------------------------------------------------


def test_resume_continues_after_the_last_finished_epoch_with_the_optimizer_state(tmp_path):
    uninterrupted = tiny_model()
    fit(uninterrupted, epochs=4)
    with pytest.raises(Interrupted):
        fit(tiny_model(), epochs=4, backup_dir=tmp_path / "backup", callbacks=[InterruptAt(2)])
    assert distributed.read_backup(tmp_path / "backup")["epoch"] == 2

    recorder = Recorder()
    resumed = tiny_model(seed=7)  # other initial weights: the backup must replace them
    fit(resumed, epochs=4, backup_dir=tmp_path / "backup", callbacks=[recorder])
    assert recorder.epochs == [2, 3]
    assert int(resumed.optimizer.iterations.numpy()) == 4 * STEPS
    assert weights_close(resumed, uninterrupted)  # Adam's moments came back too, or this would differ


def test_backup_is_deleted_after_a_successful_end(tmp_path):
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "notes.txt").write_text("not the loop's file")
    fit(tiny_model(), epochs=2, backup_dir=tmp_path / "backup")
    assert [path.name for path in (tmp_path / "backup").iterdir()] == ["notes.txt"]


def test_keep_backup_leaves_the_last_backup_for_the_caller(tmp_path):
    fit(tiny_model(), epochs=2, backup_dir=tmp_path / "backup", keep_backup=True)
    assert distributed.read_backup(tmp_path / "backup")["epoch"] == 2


def test_interrupted_backup_write_leaves_the_previous_backup_usable(tmp_path, monkeypatch):
    commits = []
    real_write = distributed.atomic_write_text

    def fail_second_commit(path, text):
        commits.append(path)
        if len(commits) == 2:
            raise OSError("killed while writing the backup")
        real_write(path, text)

    monkeypatch.setattr(distributed, "atomic_write_text", fail_second_commit)
    with pytest.raises(OSError, match="killed"):
        fit(tiny_model(), epochs=4, backup_dir=tmp_path / "backup")
    monkeypatch.undo()
    recorder = Recorder()
    fit(tiny_model(), epochs=4, backup_dir=tmp_path / "backup", callbacks=[recorder])
    assert recorder.epochs == [1, 2, 3]


def test_backup_carries_the_callers_state_of_the_last_finished_epoch(tmp_path):
    recorder = Recorder()
    with pytest.raises(Interrupted):
        fit(tiny_model(), epochs=3, backup_dir=tmp_path / "backup", callbacks=[recorder, InterruptAt(2)],
            backup_state=lambda: {"epochs_seen": len(recorder.logs)})
    restored = []
    fit(tiny_model(), epochs=3, backup_dir=tmp_path / "backup", restore_state=restored.append)
    assert restored == [{"epochs_seen": 2}]


def test_backup_of_another_model_is_a_user_error(tmp_path):
    with pytest.raises(Interrupted):
        fit(tiny_model(units=8), epochs=3, backup_dir=tmp_path / "backup", callbacks=[InterruptAt(1)])
    with pytest.raises(UserError, match="does not fit this model"):
        fit(tiny_model(units=16), epochs=3, backup_dir=tmp_path / "backup")


KILLED_SCRIPT = r'''
import os, sys
sys.path[:0] = [sys.argv[2], sys.argv[3]]
import keras
from test_distributed import fit, tiny_model


class KillDuringEpoch(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 2 and batch == 1:
            os._exit(9)  # no cleanup of any kind, as with SIGKILL

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch


fit(tiny_model(), epochs=4, backup_dir=sys.argv[1], callbacks=[KillDuringEpoch()])
'''


@pytest.mark.slow
def test_killed_process_resumes_after_its_last_finished_epoch(tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(KILLED_SCRIPT)
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "backup"), str(REPO), str(REPO / "tests")],
                            capture_output=True, text=True, timeout=180,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 9, result.stderr[-3000:]
    uninterrupted = tiny_model()
    fit(uninterrupted, epochs=4)
    recorder = Recorder()
    resumed = tiny_model(seed=7)
    fit(resumed, epochs=4, backup_dir=tmp_path / "backup", callbacks=[recorder])
    assert recorder.epochs == [2, 3]
    assert weights_close(resumed, uninterrupted)


# --- MirroredStrategy over two logical CPUs (a subprocess: devices are set before TF starts) -------

MIRRORED_SCRIPT = r'''
import json, sys
import tensorflow as tf

tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[1])
import keras
import numpy as np
from realvsai import distributed


def data():  # 33 examples in batches of 8: the last batch has 1 example, so one replica gets none
    rng = np.random.default_rng(0)
    x = rng.normal(size=(33, 4)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, (x[:, 0] > 0).astype("int32"))).batch(8)


def run(strategy, batch_norm):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        layers = [keras.Input((4,)), keras.layers.Dense(8, activation="relu")]
        layers += [keras.layers.BatchNormalization()] if batch_norm else []
        model = keras.Sequential([*layers, keras.layers.Dense(2, activation="softmax")])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    history = distributed.fit_distributed(model, data(), data(), epochs=2, strategy=strategy, verbose=0)
    return history.history, [np.asarray(weight) for weight in model.get_weights()]


mirrored = distributed.select_strategy({}, devices=["/cpu:0", "/cpu:1"])
one_history, one_weights = run(tf.distribute.get_strategy(), batch_norm=False)
mirrored_history, mirrored_weights = run(mirrored, batch_norm=False)
norm_history, norm_weights = run(mirrored, batch_norm=True)
print(json.dumps({
    "describe": distributed.describe(mirrored),
    "max_weight_difference": max(float(np.abs(a - b).max()) for a, b in zip(one_weights, mirrored_weights)),
    "losses": [one_history["val_loss"], mirrored_history["val_loss"]],
    "batch_norm_finite": bool(all(np.isfinite(weight).all() for weight in norm_weights)
                              and np.isfinite(norm_history["loss"] + norm_history["val_loss"]).all()),
}))
'''


def run_two_device_script(folder: Path, source: str) -> dict:
    """Runs ``source`` (which splits the CPU into two logical devices) in a subprocess; its JSON report."""
    script = folder / "script.py"
    script.write_text(source)
    result = subprocess.run([sys.executable, str(script), str(REPO)], capture_output=True, text=True, timeout=240,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def mirrored_report(tmp_path_factory) -> dict:
    return run_two_device_script(tmp_path_factory.mktemp("mirrored"), MIRRORED_SCRIPT)


@pytest.mark.slow
def test_mirrored_loop_matches_one_device(mirrored_report):
    assert mirrored_report["describe"].startswith("MirroredStrategy over 2 devices")
    assert mirrored_report["max_weight_difference"] < 1e-6
    assert mirrored_report["losses"][0] == pytest.approx(mirrored_report["losses"][1], abs=1e-6)


@pytest.mark.slow
def test_mirrored_loop_survives_a_replica_without_examples(mirrored_report):
    assert mirrored_report["batch_norm_finite"]


# --- two workers on 127.0.0.1 ---------------------------------------------------------------------

WORKER_SCRIPT = r'''
"""One worker of the test cluster: trains, is interrupted, resumes; writes what it saw to a report."""
import hashlib, json, os, sys
from pathlib import Path

sys.path.insert(0, sys.argv[2])
from realvsai import distributed
from realvsai.errors import UserError

strategy = distributed.select_strategy(os.environ)  # first, before any other TensorFlow operation

import keras
import numpy as np
import tensorflow as tf

out = Path(sys.argv[1])
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
chief = distributed.is_chief(strategy)
report = {"describe": distributed.describe(strategy), "chief": chief, "epochs": {}, "final": {}, "iterations": {}}


def data():  # 36 examples, global batches of 8: each worker gets 4 of every batch, 2 of the last
    rng = np.random.default_rng(0)
    x = rng.normal(size=(36, 4)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int32"))).batch(8)


def make_model(seed):
    keras.utils.set_random_seed(seed)
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                                  keras.layers.Dropout(0.2, seed=1), keras.layers.Dense(2, activation="softmax")])
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    return model


def digest(model):
    return hashlib.sha256(b"".join(np.asarray(weight).tobytes() for weight in model.get_weights())).hexdigest()


class Interrupted(Exception):
    pass


class Record(keras.callbacks.Callback):
    def __init__(self, run, backup, interrupt_at=None):
        super().__init__()
        self.run, self.backup, self.interrupt_at = run, backup, interrupt_at
        report["epochs"][run] = []

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.interrupt_at:
            raise Interrupted  # on both workers at the same point: the whole cluster is killed

    def on_epoch_end(self, epoch, logs=None):
        report["epochs"][self.run].append({
            "epoch": epoch, "keys": sorted(logs), "loss": logs["loss"], "weights": digest(self.model),
            "backup": sorted(path.name for path in self.backup.iterdir()) if self.backup.is_dir() else []})
        if chief:  # only the chief saves: a legacy HDF5 save must need no collective operation
            self.model.save(out / "best.h5")


distributed.check_same_on_every_worker(strategy, "training data", "the same files")
try:
    distributed.check_same_on_every_worker(strategy, "training data", f"the files of worker {index}")
except UserError as error:
    report["mismatch"] = str(error)

with distributed.worker_folder(strategy, out) as folder:
    for run, interrupt_at, seed in (("full", None, 0), ("interrupted", 2, 0), ("resumed", None, 7)):
        model = make_model(seed)  # the resumed run starts from other weights: the backup must replace them
        backup = folder / ("backup_full" if run == "full" else "backup")
        try:
            distributed.fit_distributed(model, data(), data(), epochs=3, strategy=strategy, verbose=0,
                                        callbacks=[Record(run, backup, interrupt_at)], backup_dir=backup)
        except Interrupted:
            pass
        report["final"][run] = digest(model)
        report["iterations"][run] = int(model.optimizer.iterations.numpy())
    report["folder"] = str(folder)
(out / f"report_{index}.json").write_text(json.dumps(report))
'''

CLUSTER_TIMEOUT = 300


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> dict:
    """Runs two workers on 127.0.0.1 to the end (or kills both at the timeout); returns their reports."""
    folder = tmp_path_factory.mktemp("cluster")
    script, out, temporary = folder / "worker.py", folder / "out", folder / "tmp"
    script.write_text(WORKER_SCRIPT)
    out.mkdir()
    temporary.mkdir()
    addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})
        environ = {**os.environ, "TF_CONFIG": tf_config, "TMPDIR": str(temporary), "TF_CPP_MIN_LOG_LEVEL": "3"}
        processes.append(subprocess.Popen([sys.executable, str(script), str(out), str(REPO)], env=environ,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    deadline = time.monotonic() + CLUSTER_TIMEOUT
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        tails = "\n".join((process.communicate()[0] or "")[-2000:] for process in processes)
        pytest.fail(f"the two workers did not finish within {CLUSTER_TIMEOUT} s:\n{tails}")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    reports = [json.loads((out / f"report_{index}.json").read_text()) for index in range(2)]
    return {"reports": reports, "out": out, "temporary": temporary}


@pytest.mark.slow
def test_two_workers_use_multi_worker_strategy_with_one_chief(cluster):
    chief, worker = cluster["reports"]
    assert chief["describe"].startswith("MultiWorkerMirroredStrategy: worker 0 (chief")
    assert worker["describe"].startswith("MultiWorkerMirroredStrategy: worker 1 of 2 workers")
    assert (chief["chief"], worker["chief"]) == (True, False)


@pytest.mark.slow
def test_two_workers_train_in_lock_step(cluster):
    chief, worker = cluster["reports"]
    assert [entry["epoch"] for entry in chief["epochs"]["full"]] == [0, 1, 2]
    assert chief["epochs"]["full"][0]["keys"] == ["accuracy", "loss", "val_accuracy", "val_loss"]
    for key in ("loss", "weights"):  # identical after every epoch, not only at the end
        assert [entry[key] for entry in chief["epochs"]["full"]] == [entry[key] for entry in worker["epochs"]["full"]]
    assert chief["final"] == worker["final"]


@pytest.mark.slow
def test_only_the_chief_writes_the_best_model_and_the_backup(cluster):
    chief, worker = cluster["reports"]
    assert (cluster["out"] / "best.h5").is_file()
    assert chief["folder"] == str(cluster["out"]) and not Path(worker["folder"]).exists()
    assert chief["epochs"]["full"][1]["backup"] == ["backup.json", "ckpt-1.data-00000-of-00001", "ckpt-1.index"]
    assert all(entry["backup"] == [] for entry in worker["epochs"]["full"])
    assert not (cluster["out"] / "backup_full").exists()  # deleted after the successful end
    assert not [path.name for path in cluster["temporary"].iterdir() if path.name.startswith("realvsai-")]


@pytest.mark.slow
def test_workers_with_different_data_all_stop_with_a_clear_error(cluster):
    for report in cluster["reports"]:
        assert "training data differs between the machines" in report["mismatch"]


@pytest.mark.slow
def test_two_workers_resume_from_the_chiefs_backup(cluster):
    for report in cluster["reports"]:
        assert [entry["epoch"] for entry in report["epochs"]["interrupted"]] == [0, 1]
        assert [entry["epoch"] for entry in report["epochs"]["resumed"]] == [2]
        assert report["iterations"]["resumed"] == report["iterations"]["full"] == 3 * STEPS
        # Weights, Adam's moments and the dropout seeds came back: the end is that of the uninterrupted run.
        assert report["final"]["resumed"] == report["final"]["full"]


# --- replicas: overflow on one replica, random streams (MirroredStrategy over two logical CPUs) -----

REPLICAS_SCRIPT = r'''
import json, sys
import tensorflow as tf

tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[1])
import keras
import numpy as np
from realvsai import distributed
from realvsai.augmentation import build_augmentation

strategy = distributed.select_strategy({}, devices=["/cpu:0", "/cpu:1"])
# A global batch of 4: the first two examples go to replica 0, the last two to replica 1, whose
# inputs are so large that their float16 gradients (times the loss scale) overflow.
x = np.ones((4, 4), "float32")
x[2:] = 1e4
y = np.zeros(4, "int32")


def overflow_model(optimizer):
    keras.mixed_precision.set_global_policy("mixed_float16")
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, kernel_initializer="ones"),
                                  keras.layers.Activation("softmax", dtype="float32")])
        model.compile(optimizer=optimizer(), loss="sparse_categorical_crossentropy")
    keras.mixed_precision.set_global_policy("float32")
    return model


def finite(model):
    return bool(all(np.isfinite(weight).all() for weight in model.get_weights()))


loop_model = overflow_model(lambda: keras.optimizers.SGD(0.1))  # compile wraps it in a LossScaleOptimizer
distributed.fit_distributed(loop_model, tf.data.Dataset.from_tensor_slices((x, y)).batch(4), epochs=1,
                            strategy=strategy, verbose=0)
fit_model = overflow_model(lambda: distributed.AllReplicasLossScaleOptimizer(keras.optimizers.SGD(0.1)))
fit_model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)

with strategy.scope():
    augmentation = build_augmentation("classic", seed=3)
    noisy = keras.Sequential([keras.Input((8, 8, 3)), augmentation, keras.layers.GaussianNoise(1.0, seed=3),
                              keras.layers.Dropout(0.5, seed=3)])
seeds = distributed.DistinctReplicaSeeds(strategy)
seeds.set_model(noisy)
seeds.on_epoch_begin(0)
images = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
outputs = strategy.run(tf.function(lambda batch: noisy(batch, training=True)), args=(tf.constant(images),))
first, second = (np.asarray(output) for output in strategy.experimental_local_results(outputs))
augmented = strategy.run(tf.function(lambda batch: augmentation(batch, training=True)), args=(tf.constant(images),))
first_augmented, second_augmented = (np.asarray(output) for output in strategy.experimental_local_results(augmented))
print(json.dumps({
    "loop_finite": finite(loop_model), "loop_scale": float(loop_model.optimizer.dynamic_scale.numpy()),
    "fit_finite": finite(fit_model), "fit_scale": float(fit_model.optimizer.dynamic_scale.numpy()),
    "augmentation_differs": not np.allclose(first_augmented, second_augmented),
    "noise_differs": not np.allclose(first, second),
}))
'''


@pytest.fixture(scope="module")
def replicas_report(tmp_path_factory) -> dict:
    return run_two_device_script(tmp_path_factory.mktemp("replicas"), REPLICAS_SCRIPT)


@pytest.mark.slow
def test_loop_skips_a_step_whose_gradients_overflow_on_any_replica(replicas_report):
    assert replicas_report["loop_finite"]
    assert replicas_report["loop_scale"] == 2.0**15 / 2  # the step was skipped and the loss scale halved


@pytest.mark.slow
def test_model_fit_loss_scaling_skips_a_step_whose_gradients_overflow_on_any_replica(replicas_report):
    assert replicas_report["fit_finite"]
    assert replicas_report["fit_scale"] == 2.0**15 / 2


@pytest.mark.slow
def test_each_replica_draws_its_own_augmentation_and_noise(replicas_report):
    assert replicas_report["augmentation_differs"]
    assert replicas_report["noise_differs"]
