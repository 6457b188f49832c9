"""Tests for realvsai.distributed: strategy choice, and the multi-worker loop against model.fit.

The loop is checked under the default strategy in this process and under MirroredStrategy over two
logical CPUs in a subprocess; a real two-worker cluster trains in tests/test_multiworker_training.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

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
    model.compile(optimizer=chosen, loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  weighted_metrics=[keras.metrics.SparseCategoricalCrossentropy(name="cross_entropy")])  # as fit's
    return model


def accuracy() -> list[keras.metrics.Metric]:
    return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]


def fit(model: keras.Model, **kwargs) -> keras.callbacks.History:
    """``fit_loop`` on one pass of ``tiny_data`` per epoch (repeated, as training gives it)."""
    kwargs.setdefault("epochs", 2)
    kwargs.setdefault("steps_per_epoch", STEPS)
    return distributed.fit_loop(model, tiny_data().repeat(), tiny_data().repeat(), metrics=accuracy,
                                validation_steps=STEPS, strategy=tf.distribute.get_strategy(), verbose=0, **kwargs)


def fit_keras(model: keras.Model, **kwargs) -> keras.callbacks.History:
    return model.fit(tiny_data(), validation_data=tiny_data(), verbose=0, shuffle=False, **kwargs)


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


def test_no_tf_config_selects_the_default_strategy():
    assert distributed.plan_strategy({}, num_gpus=0) == "default"
    if len(tf.config.list_physical_devices("GPU")) < 2:
        assert distributed.select_strategy({}) is tf.distribute.get_strategy()
        assert distributed.describe(distributed.select_strategy({})).startswith("one device")


def test_several_gpus_select_mirrored_strategy():
    assert distributed.plan_strategy({}, num_gpus=2) == "mirrored"
    assert distributed.plan_strategy({}, num_gpus=1) == "default"


def test_worker_cluster_selects_multi_worker_strategy():
    assert distributed.plan_strategy({"TF_CONFIG": TWO_WORKERS}, num_gpus=0) == "multi_worker"
    cluster = distributed.parse_tf_config({"TF_CONFIG": TWO_WORKERS})
    assert distributed.num_workers(SimpleNamespace(cluster_resolver=cluster)) == 2
    assert (cluster.task_type, cluster.task_id) == ("worker", 1)


def test_tf_config_without_cluster_trains_on_this_machine():
    assert distributed.plan_strategy({"TF_CONFIG": "{}"}, num_gpus=0) == "default"


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
    resolver = distributed.parse_tf_config({"TF_CONFIG": json.dumps({"cluster": cluster, "task": task})})
    assert distributed.is_chief(SimpleNamespace(cluster_resolver=resolver)) is chief


def test_only_the_chief_writes_into_the_worker_folder(tmp_path, monkeypatch):
    with distributed.worker_folder(tf.distribute.get_strategy(), tmp_path / "run") as folder:
        assert folder == tmp_path / "run"
    monkeypatch.setattr(distributed, "is_chief", lambda strategy: False)  # a worker of a cluster
    with distributed.worker_folder(tf.distribute.get_strategy(), tmp_path / "run") as folder:
        assert folder != tmp_path / "run"
        (folder / "model.h5").write_bytes(b"written by a non-chief worker")
    assert not folder.exists()


def test_a_stopped_machine_ends_the_others_with_the_command_that_continues_the_run(tmp_path, monkeypatch):
    """It said to start the command again "with --resume --name RUN": with --out elsewhere than models/ that
    command found no run, and the first command's training flags are refused beside --resume."""
    monkeypatch.setattr(distributed, "num_workers", lambda strategy: 2)
    run = tmp_path / "my runs" / "art"
    with pytest.raises(UserError) as stopped, distributed.worker_folder(tf.distribute.get_strategy(), run):
        raise tf.errors.UnavailableError(None, None, "Collective ops is aborted by: task /job:worker/task:1 died")
    message = str(stopped.value)
    assert "/job:worker/task:1 died" in message
    assert f"python ModelTraining.py --resume --name art --out '{run.parent}' on every machine" in message


# --- the training loop under the default strategy -------------------------------------------------


def test_training_batches_share_one_shape_whenever_a_full_batch_exists():
    """XLA (JAX, or TensorFlow's --xla) compiles the train step again for each batch shape: ResNet101's first
    epoch under JAX took 44 s instead of 25 s on 2 CPU cores with a short last batch (104 s on an H200)."""
    one_device = distributed.select_strategy({})

    assert distributed.training_steps(10, 4, one_device) == (2, True)  # 2 of 10 wait for a later pass
    assert distributed.training_steps(8, 4, one_device) == (2, True)
    assert distributed.training_steps(3, 4, one_device) == (1, False)  # fewer than a batch: the one short batch


def test_loop_lowers_the_training_loss():
    history = fit(tiny_model(), epochs=6)
    assert history.history["loss"][-1] < 0.8 * history.history["loss"][0]


def test_callbacks_see_every_epoch_with_the_logs_of_fit():
    recorder = Recorder()
    history = fit(tiny_model(), epochs=3, callbacks=[recorder])
    assert recorder.events == ["train_begin", "epoch_begin 0", "epoch_end 0", "epoch_begin 1", "epoch_end 1",
                               "epoch_begin 2", "epoch_end 2", "train_end"]
    assert set(recorder.logs[2]) == {"loss", "cross_entropy", "accuracy", "val_loss", "val_cross_entropy",
                                     "val_accuracy"}
    assert history.history["val_loss"] == [recorder.logs[epoch]["val_loss"] for epoch in range(3)]


class ValidationHooks(keras.callbacks.Callback):
    """Remembers the validation hooks called, and the epochs' ends between them."""

    def __init__(self):
        super().__init__()
        self.events: list[str] = []

    def on_test_begin(self, logs=None):
        self.events.append("test_begin")

    def on_test_batch_begin(self, batch, logs=None):
        self.events.append(f"test_batch_begin {batch}")

    def on_test_batch_end(self, batch, logs=None):
        self.events.append(f"test_batch_end {batch}")

    def on_test_end(self, logs=None):
        self.events.append(f"test_end {sorted(logs)}")

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(f"epoch_end {epoch}")


def test_the_loop_calls_the_validation_hooks_as_model_fit_does():
    """callbacks.ValidationProgress draws fit's validation bar from them, StopOnLostCtrlC stops at a validation batch,
    StopBeforeDeadline times the validation: on a cluster all three saw none."""
    expected, hooks = ValidationHooks(), ValidationHooks()
    fit_keras(tiny_model(), epochs=2, callbacks=[expected])
    fit(tiny_model(), epochs=2, callbacks=[hooks])
    assert hooks.events == expected.events
    assert expected.events[:STEPS * 2 + 3] == ["test_begin", *(f"test_batch_{hook} {step}" for step in range(STEPS)
                                                               for hook in ("begin", "end")),
                                               "test_end ['accuracy', 'cross_entropy', 'loss']", "epoch_end 0"]


def test_stop_training_set_by_a_callback_ends_after_that_epoch():
    class StopAfterSecond(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = epoch == 1

    history = fit(tiny_model(), epochs=6, callbacks=[StopAfterSecond()])
    assert len(history.history["loss"]) == 2


def test_early_stopping_stops_at_the_same_epoch_as_in_model_fit():
    def stopper():  # no epoch improves by 1.0, so it stops after `patience` epochs
        return keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, min_delta=1.0)

    expected = fit_keras(tiny_model(), epochs=8, callbacks=[stopper()])
    history = fit(tiny_model(), epochs=8, callbacks=[stopper()])
    assert len(history.history["loss"]) == len(expected.history["loss"]) < 8


def test_loop_matches_model_fit_for_one_epoch():
    # SGD, L2 regularisation, class weights and a smaller last batch: every part of the loss scaling.
    class_weight = {0: 1.0, 1: 3.0}
    expected_model = tiny_model(optimizer="sgd", l2=0.01)
    expected = fit_keras(expected_model, epochs=1, class_weight=class_weight)
    model = tiny_model(optimizer="sgd", l2=0.01)
    history = fit(model, epochs=1, class_weight=class_weight)
    assert weights_close(model, expected_model)
    for name in ("loss", "cross_entropy", "accuracy", "val_loss", "val_cross_entropy", "val_accuracy"):
        assert history.history[name][0] == pytest.approx(expected.history[name][0], abs=1e-6), name


def test_fit_reports_the_cross_entropy_without_the_l2_penalty():
    """What picks the best epoch: the loss fit reports adds the L2 penalty, which falls as the weights shrink
    whatever the model's answers do."""
    from sklearn.metrics import log_loss

    model, recorder = tiny_model(l2=0.5), Recorder()
    distributed.fit(model, tiny_data().repeat(), tiny_data().repeat(), strategy=tf.distribute.get_strategy(),
                    optimizer=keras.optimizers.Adam(0.01), metrics=accuracy, epochs=1, initial_epoch=0,
                    steps_per_epoch=STEPS, validation_steps=STEPS, callbacks=[recorder], verbose=0)
    x, y = next(iter(tiny_data(batch_size=10_000)))
    plain = log_loss(y.numpy(), keras.ops.convert_to_numpy(model(x)), labels=[0, 1])
    logs = recorder.logs[0]
    assert logs["val_cross_entropy"] == pytest.approx(plain, rel=1e-5) and logs["val_loss"] > plain + 0.01


def test_loop_matches_model_fit_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        expected = fit_keras(tiny_model(), epochs=2)
        model = tiny_model()
        history = fit(model, epochs=2)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert history.history["loss"] == pytest.approx(expected.history["loss"], abs=1e-6)


def test_steps_per_epoch_continues_through_the_data():
    model = tiny_model()
    fit(model, epochs=2, steps_per_epoch=7)
    assert int(model.optimizer.iterations.numpy()) == 14


def test_epoch_seeds_read_a_seed_without_numpys_deprecated_array_conversion():
    """On TensorFlow a seed state's value is a tf.Variable, whose ``__array__`` takes no ``copy``: through
    ``keras.ops.convert_to_numpy`` (``np.array``) NumPy 2 warned at each epoch's start that this is deprecated (a
    DeprecationWarning in the terminal with PYTHONWARNINGS=default)."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dropout(0.5, seed=3)])
    seeds = distributed.EpochSeeds(tf.distribute.get_strategy())
    seeds.set_model(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seeds.on_epoch_begin(2)
    states = [variable for variable in model.variables if variable.name == "seed_generator_state"]
    assert [np.asarray(state).tolist() for state in states] == [[3, 2 * distributed.EpochSeeds.EPOCH_STRIDE]]


def test_loop_resumes_from_a_run_backup_after_the_last_finished_epoch(tmp_path):
    from realvsai.callbacks import RunBackup, read_backup

    uninterrupted = tiny_model()
    fit(uninterrupted, epochs=4)
    with pytest.raises(Interrupted):
        fit(tiny_model(), epochs=4, callbacks=[RunBackup(tmp_path), InterruptAt(2)])
    recorder = Recorder()
    resumed = tiny_model(seed=7)  # other initial weights: the backup must replace them
    fit(resumed, epochs=4, initial_epoch=read_backup(tmp_path)["epoch"],
        callbacks=[RunBackup(tmp_path, restore=True), recorder])
    assert recorder.epochs == [2, 3]
    assert int(resumed.optimizer.iterations.numpy()) == 4 * STEPS
    assert weights_close(resumed, uninterrupted)


def test_fit_trains_one_phase_with_model_fit_on_one_machine():
    model = tiny_model()
    distributed.fit(model, tiny_data().repeat(), tiny_data().repeat(), strategy=tf.distribute.get_strategy(),
                    optimizer=keras.optimizers.SGD(0.1), metrics=accuracy, epochs=2, initial_epoch=0,
                    steps_per_epoch=STEPS, validation_steps=STEPS, verbose=0)
    assert set(model.history.history) == {"loss", "cross_entropy", "accuracy", "val_loss", "val_cross_entropy",
                                          "val_accuracy"}
    assert int(model.optimizer.iterations.numpy()) == 2 * STEPS


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
    metrics = lambda: [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    history = distributed.fit_loop(model, data().repeat(), data().repeat(), epochs=2, steps_per_epoch=5,
                                   validation_steps=5, metrics=metrics, strategy=strategy, verbose=0)
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


loop_model = overflow_model(lambda: distributed.AllReplicasLossScaleOptimizer(keras.optimizers.SGD(0.1)))
batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(4).repeat()
distributed.fit_loop(loop_model, batches, batches, epochs=1, steps_per_epoch=1, validation_steps=1, metrics=list,
                     strategy=strategy, verbose=0)
fit_model = overflow_model(lambda: distributed.AllReplicasLossScaleOptimizer(keras.optimizers.SGD(0.1)))
fit_model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)

with strategy.scope():
    augmentation = build_augmentation("classic", seed=3)
    noisy = keras.Sequential([keras.Input((8, 8, 3)), augmentation, keras.layers.GaussianNoise(1.0, seed=3),
                              keras.layers.Dropout(0.5, seed=3)])
seeds = distributed.EpochSeeds(strategy)
seeds.set_model(noisy)
seeds.on_epoch_begin(0)
images = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
outputs = strategy.run(tf.function(lambda batch: noisy(batch, training=True)), args=(tf.constant(images),))
first, second = (np.asarray(output) for output in strategy.experimental_local_results(outputs))
augmented = strategy.run(tf.function(lambda batch: augmentation(batch, training=True)), args=(tf.constant(images),))
first_augmented, second_augmented = (np.asarray(output) for output in strategy.experimental_local_results(augmented))
# Eight steps on each replica: no replica may draw another's numbers at any step (before, replica 1
# drew replica 0's numbers four steps later).
with strategy.scope():
    noise = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.GaussianNoise(1.0, seed=5),
                              keras.layers.Dropout(0.5, seed=5)])
spread = distributed.EpochSeeds(strategy)
spread.set_model(noise)
spread.on_epoch_begin(0)
step = tf.function(lambda batch: noise(batch, training=True))
draws = [[np.asarray(output) for output in
          strategy.experimental_local_results(strategy.run(step, args=(tf.constant(images),)))] for _ in range(8)]
shared = [(i, j) for i in range(8) for j in range(8) if np.allclose(draws[i][0], draws[j][1])]
print(json.dumps({
    "shared_draws": shared,
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
def test_replicas_never_draw_the_same_random_numbers_at_any_step(replicas_report):
    assert replicas_report["shared_draws"] == []


@pytest.mark.slow
def test_each_replica_draws_its_own_augmentation_and_noise(replicas_report):
    assert replicas_report["augmentation_differs"]
    assert replicas_report["noise_differs"]
