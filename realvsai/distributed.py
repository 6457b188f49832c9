"""Training on several GPUs or several machines, with the same callbacks and resume as ``model.fit``.

``select_strategy(environ)`` decides how to train from the environment the script was started with:

- ``TF_CONFIG`` names a cluster: ``MultiWorkerMirroredStrategy``. The same script runs on every
  machine; the workers train one model in lock-step (gradients are summed across all of them).
- more than one local GPU: ``MirroredStrategy`` over all of them;
- otherwise the default strategy (one GPU, or the CPU).

``fit_distributed`` is the training loop for the multi-worker case, where Keras 3's ``model.fit``
fails (keras-team/keras#20585: "Attempt to convert a value (PerReplica...) to a Tensor"). It also
runs under the default strategy and ``MirroredStrategy``, so it is tested on one machine and
checked against ``model.fit``. It drives ``keras.callbacks`` as ``model.fit`` does (the same logs,
``model.stop_training``, History), and backs the run up after every epoch, so a run killed at any
moment resumes after its last finished epoch.

Usage, in a training script::

    strategy = select_strategy(os.environ)      # first: before any other TensorFlow call
    with strategy.scope():                      # variables must be created in the scope
        model = build_model(...)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    with worker_folder(strategy, run_dir) as out_dir:   # the chief writes run_dir, others a temp folder
        history = fit_distributed(model, train, validation, epochs=10, strategy=strategy,
                                  callbacks=make_callbacks(out_dir), backup_dir=out_dir / "backup")

The rules of multi-worker code: every worker runs the same TensorFlow operations in the same order
(the same model, data, callbacks and decisions), because each collective operation waits for all
of them; only the chief keeps files. So decisions that depend on files only the chief has go
through ``broadcast_json``, the data is checked with ``check_same_on_every_worker``, and anything
the chief does alone afterwards (evaluation, prediction) uses a model loaded from its file outside
the strategy, never the distributed model (whose ``predict`` would wait for the other workers).

The batch size of the datasets is the global batch: with 2 workers of 1 GPU each and batches of 32,
every GPU computes 16 examples per step, and the result is the same as one GPU with batches of 32.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from realvsai.errors import UserError
from realvsai.files import atomic_write_text

logger = logging.getLogger(__name__)

_JOBS = ("chief", "worker")  # the task types MultiWorkerMirroredStrategy trains with
_ADDRESS = re.compile(r"^\S+:\d{1,5}$")
_EXAMPLE_TF_CONFIG = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                      '"task": {"type": "worker", "index": 0}}')
_CHECKPOINT_NAME = "ckpt"
_COMMIT_FILE = "backup.json"  # names the last complete checkpoint: written last, atomically

# What fit_distributed accepts as input: a dataset of global batches, or a function that makes this
# worker's dataset of per-replica batches (``strategy.distribute_datasets_from_function``).
DatasetOrFunction = tf.data.Dataset | Callable[[tf.distribute.InputContext], tf.data.Dataset]


@dataclass(frozen=True)
class ClusterConfig:
    """The cluster this process belongs to, as ``TF_CONFIG`` describes it.

    ``jobs`` maps ``"chief"``/``"worker"`` to ``host:port`` addresses; this process is
    ``jobs[task_type][task_index]``.
    """

    jobs: Mapping[str, tuple[str, ...]]
    task_type: str
    task_index: int

    @property
    def num_workers(self) -> int:
        return sum(len(addresses) for addresses in self.jobs.values())

    @property
    def is_chief(self) -> bool:
        """The chief writes the files: the ``chief`` task, or worker 0 when there is none."""
        return self.task_type == "chief" or ("chief" not in self.jobs and self.task_index == 0)


def parse_tf_config(environ: Mapping[str, str]) -> ClusterConfig | None:
    """The cluster named by ``environ["TF_CONFIG"]``, or None when it is unset, empty or has no cluster.

    Raises:
        UserError: when TF_CONFIG is not valid JSON or does not describe a chief/worker cluster
            with this process's task in it.
    """
    text = environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    fix = f"Set it like {_EXAMPLE_TF_CONFIG} (see README, 'Training on several machines'), or unset it."
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"TF_CONFIG is not valid JSON ({error.msg} at character {error.pos}). {fix}") from None
    if not isinstance(config, dict):
        raise UserError(f"TF_CONFIG must be a JSON object, not {type(config).__name__}. {fix}")
    cluster = config.get("cluster")
    if not cluster:
        return None
    if not isinstance(cluster, dict):
        raise UserError(f"TF_CONFIG's 'cluster' must map job names to address lists. {fix}")
    jobs: dict[str, tuple[str, ...]] = {}
    for job, addresses in cluster.items():
        if job not in _JOBS:
            raise UserError(f"TF_CONFIG names a '{job}' job, but training on several machines uses only "
                            f"{' and '.join(_JOBS)} tasks. {fix}")
        if (not isinstance(addresses, list) or not addresses
                or not all(isinstance(address, str) and _ADDRESS.match(address) for address in addresses)):
            raise UserError(f"TF_CONFIG's '{job}' job must be a non-empty list of \"host:port\" addresses, "
                            f"got {addresses!r}. {fix}")
        jobs[job] = tuple(addresses)
    if len(jobs.get("chief", ())) > 1:
        raise UserError(f"TF_CONFIG names {len(jobs['chief'])} chiefs; a cluster has at most one. {fix}")
    task = config.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise UserError(f"TF_CONFIG needs a 'task' with this machine's 'type' and 'index'. {fix}")
    task_type, task_index = task["type"], task["index"]
    if task_type not in jobs:
        raise UserError(f"TF_CONFIG's task type '{task_type}' is not a job of its cluster {sorted(jobs)}. {fix}")
    if isinstance(task_index, bool) or not isinstance(task_index, int) or not 0 <= task_index < len(jobs[task_type]):
        raise UserError(f"TF_CONFIG's task index {task_index!r} is not one of the {len(jobs[task_type])} "
                        f"'{task_type}' addresses (counted from 0). {fix}")
    return ClusterConfig(jobs, task_type, task_index)


@dataclass(frozen=True)
class StrategyPlan:
    """Which strategy ``select_strategy`` builds, decided without touching the devices' runtime."""

    kind: str  # "multi_worker", "mirrored" or "default"
    cluster: ClusterConfig | None = None
    devices: tuple[str, ...] = ()  # for "mirrored": the devices; empty = every local GPU


def plan_strategy(environ: Mapping[str, str], *, devices: Sequence[str] | None = None,
                  num_gpus: int | None = None) -> StrategyPlan:
    """Decides the strategy: a TF_CONFIG cluster, else several devices, else the default.

    Args:
        environ: the process environment (only ``TF_CONFIG`` is read).
        devices: mirror over exactly these local devices, e.g. ``["/cpu:0", "/cpu:1"]`` after the CPU
            was split into logical devices; None mirrors over the local GPUs when there are several.
        num_gpus: the number of local GPUs; None counts them.
    """
    cluster = parse_tf_config(environ)
    if cluster is not None:
        if devices:
            logger.warning("TF_CONFIG names a cluster, so the devices %s are ignored", list(devices))
        return StrategyPlan("multi_worker", cluster)
    if devices:
        return StrategyPlan("mirrored" if len(devices) > 1 else "default", devices=tuple(devices))
    if num_gpus is None:
        num_gpus = len(tf.config.list_physical_devices("GPU"))
    return StrategyPlan("mirrored") if num_gpus > 1 else StrategyPlan("default")


def select_strategy(environ: Mapping[str, str], *, devices: Sequence[str] | None = None) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy to train with (see ``plan_strategy`` for the rule).

    Call it first, before any other TensorFlow operation: MultiWorkerMirroredStrategy must set up
    the runtime's collective operations before the runtime starts. It blocks until every worker of
    the cluster has started.

    Raises:
        UserError: for a malformed TF_CONFIG.
    """
    plan = plan_strategy(environ, devices=devices)
    if plan.kind == "multi_worker":
        cluster = plan.cluster
        # A resolver built from the parsed argument rather than TFConfigClusterResolver (which reads
        # os.environ). It must be told the local GPUs, or the workers would train on their CPUs.
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec({job: list(addresses) for job, addresses in cluster.jobs.items()}),
            task_type=cluster.task_type, task_id=cluster.task_index, rpc_layer="grpc",
            num_accelerators={"GPU": len(tf.config.list_physical_devices("GPU"))})
        logger.info("waiting for the %d workers of the cluster (this is %s %d)",
                    cluster.num_workers, cluster.task_type, cluster.task_index)
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    if plan.kind == "mirrored":
        return tf.distribute.MirroredStrategy(devices=list(plan.devices) or None)
    if plan.devices:
        return tf.distribute.OneDeviceStrategy(plan.devices[0])
    return tf.distribute.get_strategy()


def _cluster_of(strategy: tf.distribute.Strategy) -> tf.distribute.cluster_resolver.ClusterResolver | None:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type or not resolver.cluster_spec().jobs:
        return None
    return resolver


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """How many machines (processes) train together: 1 except under MultiWorkerMirroredStrategy."""
    resolver = _cluster_of(strategy)
    if resolver is None:
        return 1
    spec = resolver.cluster_spec()
    return sum(spec.num_tasks(job) for job in spec.jobs if job in _JOBS)


def is_chief(strategy_or_environ: tf.distribute.Strategy | Mapping[str, str]) -> bool:
    """Whether this process writes the run's files: always, except on the non-chief workers of a cluster.

    Accepts the strategy, or the environment (TF_CONFIG) before the strategy exists.
    """
    if isinstance(strategy_or_environ, Mapping):
        cluster = parse_tf_config(strategy_or_environ)
        return cluster is None or cluster.is_chief
    resolver = _cluster_of(strategy_or_environ)
    if resolver is None:
        return True
    jobs = resolver.cluster_spec().jobs
    return resolver.task_type == "chief" or ("chief" not in jobs and resolver.task_id == 0)


def describe(strategy: tf.distribute.Strategy) -> str:
    """One line for the log: which strategy, on which devices, which worker."""
    replicas = strategy.num_replicas_in_sync
    resolver = _cluster_of(strategy)
    if resolver is not None:
        role = " (chief: writes the files)" if is_chief(strategy) else ""
        return (f"MultiWorkerMirroredStrategy: {resolver.task_type} {resolver.task_id}{role} of "
                f"{num_workers(strategy)} workers, {replicas} replicas in sync")
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return f"MirroredStrategy over {replicas} devices ({', '.join(strategy.extended.worker_devices)})"
    if isinstance(strategy, tf.distribute.OneDeviceStrategy):
        return f"one device ({', '.join(strategy.extended.worker_devices)})"
    return "one device (GPU)" if tf.config.list_physical_devices("GPU") else "one device (CPU)"


@contextlib.contextmanager
def worker_folder(strategy_or_environ: tf.distribute.Strategy | Mapping[str, str], folder: Path) -> Iterator[Path]:
    """``folder`` on the chief; on the other workers a temporary folder, deleted on leaving.

    Every worker runs the same callbacks (so they take the same decisions and run the same
    collective operations), but only the chief's files are kept.
    """
    if is_chief(strategy_or_environ):
        yield Path(folder)
        return
    temporary = Path(tempfile.mkdtemp(prefix="realvsai-worker-"))
    try:
        yield temporary
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


# --- the training loop ---------------------------------------------------------------------------


def all_replicas_finite(tensors: Sequence[tf.Tensor | None]) -> tf.Tensor:
    """True on every replica when every value of ``tensors`` is finite on every replica.

    Called in a replica context (inside ``strategy.run``); a collective operation there.
    """
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(tensor)) for tensor in tensors if tensor is not None])
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return finite
    failed = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(tf.logical_not(finite), tf.float32))
    return tf.equal(failed, 0.0)


@keras.saving.register_keras_serializable(package="realvsai")
class AllReplicasLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """``LossScaleOptimizer`` that skips a step when the gradients overflow on any replica.

    Keras' own checks only the first replica's gradients under MirroredStrategy (Keras 3.15), so an
    overflow on another replica is summed into the update and turns the weights into NaN.
    """

    def check_finite(self, grads):
        return all_replicas_finite(grads)


class DistinctReplicaSeeds(keras.callbacks.Callback):
    """Gives every replica its own random stream for the model's seeded layers (augmentation, noise, dropout).

    A ``keras.random.SeedGenerator``'s state is mirrored, so without this every replica draws the
    same numbers, and N replicas see 1/N of the randomness. Before every epoch, replica ``r``'s
    state counter moves to ``r * 2**32`` past replica 0's (which draws as one device would). It
    depends only on replica 0's state, so a resumed run (whose backup holds replica 0's state)
    draws what the uninterrupted one would.
    """

    _STRIDE = 2**32  # far more draws than an epoch makes, so the replicas' counters never meet

    def __init__(self, strategy: tf.distribute.Strategy):
        super().__init__()
        self.strategy = strategy
        self._spread = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.strategy.num_replicas_in_sync == 1:
            return
        if self._spread is None:
            # Keras names every SeedGenerator's state variable so.
            states = [variable for variable in self.model.variables if variable.name == "seed_generator_state"]

            def replica():
                replica_id = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int64)
                for state in states:
                    seed, counter = tf.unstack(tf.cast(state.value, tf.int64))
                    state.assign(tf.cast(tf.stack([seed, counter % self._STRIDE + replica_id * self._STRIDE]),
                                         state.dtype))

            self._spread = tf.function(lambda: self.strategy.run(replica))
        self._spread()



class _Unreduced(keras.losses.Loss):
    """A loss function (as ``compile`` accepts it) giving one value per example."""

    def __init__(self, function: Callable[[Any, Any], Any]):
        super().__init__(name=getattr(function, "__name__", "loss"), reduction=None)
        self.function = function

    def call(self, y_true, y_pred):
        # The rank alignment keras.losses.LossFunctionWrapper does (e.g. labels (n,) vs outputs (n, 1)).
        if len(y_pred.shape) == len(y_true.shape) + 1 and y_pred.shape[-1] == 1:
            y_true = keras.ops.expand_dims(y_true, -1)
        return self.function(y_true, y_pred)


def _per_example_loss(model: keras.Model) -> keras.losses.Loss:
    """The compiled loss of ``model`` without its reduction: one value per example."""
    loss = getattr(model, "loss", None)
    if not getattr(model, "compiled", False) or loss is None or getattr(model, "optimizer", None) is None:
        raise ValueError("fit_distributed needs a model compiled with an optimizer and a loss "
                         "(inside strategy.scope()).")
    if isinstance(loss, (dict, list, tuple)):
        raise ValueError("fit_distributed trains single-output models with one loss; got several losses.")
    if isinstance(loss, str):
        if loss in ("crossentropy", "ce"):
            raise ValueError(f"loss={loss!r} is ambiguous here; name it, e.g. 'sparse_categorical_crossentropy'.")
        loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        if loss.reduction not in ("sum_over_batch_size", "mean"):
            raise ValueError(f"fit_distributed averages the loss over the global batch, as Keras' default "
                             f"reduction does; the loss's reduction {loss.reduction!r} is not supported.")
        unreduced = copy.copy(loss)
        unreduced.reduction = None
        return unreduced
    if callable(loss):
        return _Unreduced(loss)
    raise ValueError(f"cannot use the compiled loss {loss!r}")


def _class_weight_vector(class_weight: Mapping[int, float] | None) -> tf.Tensor | None:
    """``class_weight`` as a vector indexed by class id; classes without a weight get 1."""
    if not class_weight:
        return None
    if any(isinstance(key, bool) or not isinstance(key, (int, np.integer)) or key < 0 for key in class_weight):
        raise ValueError(f"class_weight keys must be class ids 0, 1, ...; got {sorted(class_weight)}")
    weights = np.ones(max(class_weight) + 1, np.float32)
    for key, value in class_weight.items():
        weights[int(key)] = value
    return tf.constant(weights)


def _sample_weights(y: tf.Tensor, sample_weight: tf.Tensor | None, class_weights: tf.Tensor | None
                    ) -> tf.Tensor | None:
    """The weight of every example: its class weight (times its own weight, if the data has one)."""
    if class_weights is None:
        return sample_weight
    labels = y
    if len(labels.shape) == 2:  # one-hot (n, classes) or column (n, 1) labels
        labels = tf.argmax(labels, axis=-1) if labels.shape[-1] != 1 else tf.squeeze(labels, -1)
    weights = tf.gather(class_weights, tf.cast(labels, tf.int32))
    return weights if sample_weight is None else weights * tf.cast(sample_weight, weights.dtype)


def _distribute(strategy: tf.distribute.Strategy, data: DatasetOrFunction) -> tuple[Any, int | None, Any]:
    """The distributed dataset, its number of steps when known, and the structure of one element."""
    if not isinstance(data, tf.data.Dataset):
        element_spec = data(tf.distribute.InputContext()).element_spec
        return strategy.distribute_datasets_from_function(data), None, element_spec
    if data.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.AUTO:
        # Our datasets read a list of files through from_tensor_slices, which FILE sharding cannot
        # split; DATA sharding makes each worker keep its share of every global batch. It needs the
        # same element order on every worker: a seeded shuffle, deterministic maps.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        data = data.with_options(options)
    cardinality = int(data.cardinality())
    return strategy.experimental_distribute_dataset(data), (cardinality if cardinality >= 0 else None), \
        data.element_spec


def _is_infinite(data: DatasetOrFunction) -> bool:
    return isinstance(data, tf.data.Dataset) and int(data.cardinality()) == int(tf.data.INFINITE_CARDINALITY)


def _check_created_in_scope(strategy: tf.distribute.Strategy, model: keras.Model) -> None:
    if strategy.num_replicas_in_sync == 1 or not model.weights:
        return
    if not strategy.extended.variable_created_in_scope(model.weights[0].value):
        raise ValueError("the model's variables were not created under strategy.scope(): build and "
                         "compile the model (and its optimizer) inside `with strategy.scope():`.")


def _replica_losses(model: keras.Model, per_example_loss: keras.losses.Loss, x: Any, y: Any,
                    sample_weight: tf.Tensor | None, training: bool) -> tuple[Any, tf.Tensor, tf.Tensor]:
    """Predictions, the (weighted) loss of every example of this replica, and their number."""
    predictions = model(x, training=training)
    losses = per_example_loss(y, predictions)
    if len(losses.shape) > 1:  # e.g. per pixel: Keras averages over all values, so average per example
        losses = tf.reduce_mean(losses, axis=list(range(1, len(losses.shape))))
    if sample_weight is not None:
        losses = losses * tf.cast(tf.reshape(sample_weight, [-1]), losses.dtype)
    return predictions, losses, tf.shape(losses)[0]


def _regularization(model: keras.Model) -> tf.Tensor:
    return tf.add_n([tf.cast(loss, tf.float32) for loss in model.losses]) if model.losses else tf.constant(0.0)


def _make_steps(strategy: tf.distribute.Strategy, model: keras.Model, per_example_loss: keras.losses.Loss,
                loss_tracker: keras.metrics.Mean, class_weights: tf.Tensor | None, train_spec: Any,
                validation_spec: Any) -> tuple[Callable[[Any], tf.Tensor], Callable[[Any], None] | None]:
    """The train step (returns the global batch's loss) and the validation step, as tf.functions."""
    optimizer = model.optimizer
    loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer) and strategy.num_replicas_in_sync > 1

    def gradients(scaled_loss: tf.Tensor, tape: tf.GradientTape) -> list[tf.Tensor]:
        # Zeros for variables the loss does not reach, so both branches of tf.cond below match.
        return [tf.zeros_like(variable) if gradient is None else tf.convert_to_tensor(gradient)
                for variable, gradient in zip(model.trainable_variables, tape.gradient(scaled_loss,
                                                                                       model.trainable_variables))]

    def train_replica(data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        sample_weight = _sample_weights(y, sample_weight, class_weights)
        local_size = tf.shape(tf.nest.flatten(x)[0])[0]
        # The exact size of this step's global batch: the last batch of an epoch is split unevenly
        # (some replicas may get no example at all), so replicas * local size would be wrong.
        global_size = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, tf.cast(local_size, tf.float32))
        global_size = tf.cast(tf.round(global_size), tf.int64)

        def forward_backward(training: bool) -> list[tf.Tensor]:
            with tf.GradientTape() as tape:
                predictions, losses, _ = _replica_losses(model, per_example_loss, x, y, sample_weight, training)
                regularization = _regularization(model)
                # Summed over the replicas: the mean loss over the global batch + the regularisation once.
                loss = (tf.nn.compute_average_loss(losses, global_batch_size=global_size)
                        + tf.nn.scale_regularization_loss(regularization))
                scaled_loss = optimizer.scale_loss(loss)  # mixed precision: LossScaleOptimizer scales it up
            _track(loss_tracker, losses, local_size, regularization)
            model.compute_metrics(x, y, predictions, sample_weight=sample_weight)
            return [loss, *gradients(scaled_loss, tape)]

        # A replica given no example (the last, small batch of an epoch) runs the model in inference
        # mode: in training mode BatchNormalization would average the empty batch into NaN moving
        # statistics. It still adds its share of the regularisation gradient.
        if strategy.num_replicas_in_sync == 1:
            loss, *grads = forward_backward(True)
        else:
            loss, *grads = tf.cond(local_size > 0, lambda: forward_backward(True), lambda: forward_backward(False))
        if loss_scaling:
            # An overflow on any replica becomes every replica's, so that LossScaleOptimizer (which
            # looks at one replica only) skips the step and lowers the scale instead of applying it.
            finite = all_replicas_finite(grads)
            grads = [tf.where(finite, gradient, tf.fill(tf.shape(gradient), tf.constant(np.nan, gradient.dtype)))
                     for gradient in grads]
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(grads, variables))  # sums the gradients across replicas
        return loss

    def validation_replica(data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        predictions, losses, local_size = _replica_losses(model, per_example_loss, x, y, sample_weight, False)
        _track(loss_tracker, losses, local_size, _regularization(model))
        model.compute_metrics(x, y, predictions, sample_weight=sample_weight)

    def train_step(batch):
        per_replica_loss = strategy.run(train_replica, args=(batch,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica_loss, axis=None)

    def validation_step(batch):
        strategy.run(validation_replica, args=(batch,))

    # Traced once for the data's element structure (batch dimension unknown), so the smaller last
    # batch of an epoch does not trace the step again.
    return (tf.function(train_step, input_signature=[train_spec]),
            tf.function(validation_step, input_signature=[validation_spec]) if validation_spec else None)


def _track(loss_tracker: keras.metrics.Mean, losses: tf.Tensor, local_size: tf.Tensor, regularization: tf.Tensor
           ) -> None:
    """Adds this replica's examples to the epoch's mean loss, as model.fit reports it.

    fit's "loss" is the mean over examples of (weighted example loss + regularisation). Each replica
    adds its own sum; the metric's variables are summed across replicas when read.
    """
    size = tf.cast(local_size, losses.dtype)
    local_mean = tf.math.divide_no_nan(tf.reduce_sum(losses), size) + tf.cast(regularization, losses.dtype)
    loss_tracker.update_state(local_mean, sample_weight=size)


def _read_logs(model: keras.Model, loss_tracker: keras.metrics.Mean) -> dict[str, Any]:
    """The epoch's metrics as Python numbers, ``loss`` first (reading sums them across replicas)."""
    logs: dict[str, Any] = {"loss": float(loss_tracker.result())}
    for name, value in model.get_metrics_result().items():
        if name != "loss":  # the model's own tracker; this loop keeps the loss in loss_tracker
            value = np.asarray(keras.ops.convert_to_numpy(value))
            logs[name] = float(value) if value.ndim == 0 else value
    return logs


# --- keeping the workers together ---------------------------------------------------------------


@functools.cache
def _broadcaster(strategy: tf.distribute.Strategy) -> Callable[[list[tf.Tensor]], Any]:
    """The strategy's broadcast function. One per strategy, so calls with the same shapes reuse its
    trace: a new tf.function per call would be traced (and warned about) every time."""

    @tf.function
    def broadcast(values):
        def replica(values):
            context = tf.distribute.get_replica_context()
            # Replica 0 is the chief's first device; only it contributes, so the sum is its value.
            first = tf.equal(context.replica_id_in_sync_group, 0)
            kept = [tf.where(first, value, tf.zeros_like(value)) for value in values]
            # One all-reduce per dtype: the collective packs its tensors into one buffer.
            results = list(kept)
            for dtype in {value.dtype for value in kept}:
                indices = [index for index, value in enumerate(kept) if value.dtype == dtype]
                summed = context.all_reduce(tf.distribute.ReduceOp.SUM, [kept[index] for index in indices])
                for index, value in zip(indices, summed):
                    results[index] = value
            return results

        return strategy.run(replica, args=(values,))

    return broadcast


class _HideRetracingWarning(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning: the broadcast function is traced
    once for each structure of what it sends (a few per run), on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def _broadcast_from_chief(strategy: tf.distribute.Strategy, tensors: Sequence[tf.Tensor]) -> list[tf.Tensor]:
    """The chief's values of ``tensors`` on every worker (a collective: every worker must call it alike)."""
    tensorflow_logger, hide = tf.get_logger(), _HideRetracingWarning()
    tensorflow_logger.addFilter(hide)
    try:
        received = _broadcaster(strategy)(list(tensors))
    finally:
        tensorflow_logger.removeFilter(hide)
    return [strategy.experimental_local_results(value)[0] for value in received]


def _sync_variables(strategy: tf.distribute.Strategy, variables: Sequence[Any]) -> None:
    """Gives every worker the chief's values of ``variables`` (weights, optimizer state).

    Needed wherever a worker may hold other values than the chief: after the chief alone restored a
    backup (the others may not see its folder), and after callbacks that read files only the chief
    has (e.g. the best weights at the end of training). Integers travel as float64 (exact to 2**53).
    """
    if num_workers(strategy) == 1 or not variables:
        return
    values = [tf.convert_to_tensor(variable) for variable in variables]
    wire = [value if value.dtype.is_floating else tf.cast(value, tf.float64) for value in values]
    for variable, value, received in zip(variables, values, _broadcast_from_chief(strategy, wire)):
        variable.assign(tf.cast(received, value.dtype))


def broadcast_json(strategy: tf.distribute.Strategy, payload: Any) -> Any:
    """The chief's JSON-ready ``payload``, on every worker (the others' ``payload`` is ignored).

    For decisions every worker must take alike but only the chief can make, e.g. what ``--resume``
    finds in a run folder that exists on the chief's machine only. A collective operation: every
    worker must call it at the same point.
    """
    if num_workers(strategy) == 1:
        return payload
    data = np.frombuffer(json.dumps(payload).encode("utf-8"), np.uint8) if is_chief(strategy) else np.zeros(0, np.uint8)
    (length,) = _broadcast_from_chief(strategy, [tf.constant(float(len(data)))])
    length = int(length)
    # Padded to a power of two, so that payloads of similar sizes share one trace of the broadcast.
    buffer = np.zeros(max(256, 1 << (length - 1).bit_length()), np.float32)
    buffer[: len(data)] = data
    (received,) = _broadcast_from_chief(strategy, [tf.constant(buffer)])
    return json.loads(np.asarray(received.numpy()[:length], np.uint8).tobytes().decode("utf-8"))


def _any_worker(strategy: tf.distribute.Strategy, flag: bool) -> bool:
    """True on every worker when ``flag`` is True on any of them (a collective operation)."""
    if num_workers(strategy) == 1:
        return flag
    total = _voter(strategy)(tf.constant(1.0 if flag else 0.0))
    return float(strategy.experimental_local_results(total)[0]) > 0


@functools.cache
def _voter(strategy: tf.distribute.Strategy) -> Callable[[tf.Tensor], Any]:
    """The strategy's vote-counting function (one per strategy: traced once)."""

    @tf.function
    def votes(flag):
        # tf.identity: a new tensor on the replica's device (an argument may sit on another job's device).
        return strategy.run(lambda flag: tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, tf.identity(flag)), args=(flag,))

    return votes


def check_same_on_every_worker(strategy: tf.distribute.Strategy, what: str, value: str) -> None:
    """Stops every worker with a UserError unless ``value`` is the same on all of them.

    Workers training together must read the same data in the same order (each keeps its share of
    every batch), so pass e.g. a digest of the sorted file list and labels. A collective operation:
    every worker must call it at the same point.

    Raises:
        UserError: on every worker, when any worker's ``value`` differs from the chief's.
    """
    if num_workers(strategy) == 1:
        return
    if _any_worker(strategy, broadcast_json(strategy, value) != value):
        raise UserError(f"the {what} differs between the machines of the cluster, but the workers must read "
                        f"the same {what}. Give every machine the same copy (or a shared folder) and start again.")


# --- backup and resume ---------------------------------------------------------------------------


def read_backup(folder: Path) -> dict[str, Any] | None:
    """What ``fit_distributed`` backed up in ``folder``: ``{"epoch": epochs finished, "state": ...}``, or None.

    Raises:
        UserError: when ``folder`` holds a damaged ``backup.json``.
    """
    commit = Path(folder) / _COMMIT_FILE
    if not commit.is_file():
        return None
    try:
        found = json.loads(commit.read_text(encoding="utf-8"))
    except ValueError:
        found = None
    if not isinstance(found, dict) or not isinstance(found.get("epoch"), int) \
            or not isinstance(found.get("checkpoint"), str):
        raise UserError(f"{commit} is not a backup this program wrote. Delete {folder} to start the training afresh.")
    return found


class _Backup:
    """The run's state after its last finished epoch, in ``folder``, for resuming a killed run.

    Each backup is a TensorFlow checkpoint of every model and optimizer variable (``ckpt-<epoch>``),
    then ``backup.json`` naming it, with the epoch count and the caller's state: written atomically
    last, it is the commit point, so a kill at any moment leaves the previous backup usable. Every
    worker writes a backup (the same operations everywhere), but only the chief into ``folder``; the
    others write into a temporary folder that is deleted at once. Only the chief reads the backup;
    its values are then sent to every worker, so ``folder`` need not be shared between machines.
    """

    def __init__(self, folder: Path, strategy: tf.distribute.Strategy, model: keras.Model):
        self.folder = Path(folder)
        self.strategy = strategy
        self.chief = is_chief(strategy)
        optimizer = model.optimizer
        if not optimizer.built:
            with strategy.scope():
                optimizer.build(model.trainable_variables)
        # Metric variables are left out: they are reset every epoch (and summing them would need
        # collectives). Seed-generator states are in: a resumed run draws the same noise.
        model_variables, optimizer_variables = (
            [variable for variable in variables if getattr(variable, "synchronization", None) != "on_read"]
            for variables in (model.variables, optimizer.variables))
        self.variables = [*model_variables, *optimizer_variables]
        self.checkpoint = tf.train.Checkpoint(model=model_variables, optimizer=optimizer_variables)

    def restore(self) -> tuple[int, Any] | None:
        """Loads the chief's last backup into every worker; returns (epochs finished, state), or None."""
        found = self._read_commit() if self.chief else None
        found = broadcast_json(self.strategy, found)
        if found is None:
            _sync_variables(self.strategy, self.variables)  # the same starting point everywhere
            return None
        if self.chief:
            path = self.folder / found["checkpoint"]
            try:
                self.checkpoint.read(str(path)).assert_consumed()
            except (AssertionError, ValueError, tf.errors.OpError) as error:
                raise UserError(
                    f"the backup in {self.folder} does not fit this model ({type(error).__name__}: "
                    f"{str(error).splitlines()[0]}). Delete that folder to start the training afresh.") from None
        _sync_variables(self.strategy, self.variables)
        return int(found["epoch"]), found.get("state")

    def _read_commit(self) -> dict[str, Any] | None:
        return read_backup(self.folder)

    def save(self, epochs_finished: int, state: Any) -> None:
        """Backs up the current variables as the state after ``epochs_finished`` epochs."""
        name = f"{_CHECKPOINT_NAME}-{epochs_finished}"
        if not self.chief:
            temporary = Path(tempfile.mkdtemp(prefix="realvsai-backup-"))
            try:
                self.checkpoint.write(str(temporary / name))
            finally:
                shutil.rmtree(temporary, ignore_errors=True)
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self.checkpoint.write(str(self.folder / name))
        atomic_write_text(self.folder / _COMMIT_FILE, json.dumps(
            {"epoch": epochs_finished, "checkpoint": name, "state": state}, indent=1))
        self._delete_checkpoints(keep=name)

    def _delete_checkpoints(self, keep: str | None) -> None:
        for path in self.folder.glob(f"{_CHECKPOINT_NAME}-*"):
            if path.name.split(".")[0] != keep:
                path.unlink(missing_ok=True)

    def remove(self) -> None:
        """Deletes the backup (on the chief) once the training has ended well."""
        if not self.chief or not self.folder.is_dir():
            return
        (self.folder / _COMMIT_FILE).unlink(missing_ok=True)  # first: no half-deleted backup is ever used
        self._delete_checkpoints(keep=None)
        with contextlib.suppress(OSError):
            self.folder.rmdir()  # only when empty: other files are never ours to delete


def fit_distributed(
    model: keras.Model,
    train_data: DatasetOrFunction,
    validation_data: DatasetOrFunction | None = None,
    *,
    epochs: int,
    initial_epoch: int = 0,
    strategy: tf.distribute.Strategy,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    class_weight: Mapping[int, float] | None = None,
    steps_per_epoch: int | None = None,
    validation_steps: int | None = None,
    backup_dir: Path | None = None,
    keep_backup: bool = False,
    backup_state: Callable[[], Any] | None = None,
    restore_state: Callable[[Any], None] | None = None,
    verbose: int | str = "auto",
) -> keras.callbacks.History:
    """Trains ``model`` like ``model.fit`` does, under any strategy, multi-worker included.

    The model and its optimizer must have been created and compiled inside ``strategy.scope()``
    (one loss, any metrics); call this function outside the scope. Per step, each replica's loss is
    the sum of its (class-weighted) example losses divided by the global batch's size, plus the
    regularisation losses divided by the number of replicas, so the summed gradients are exactly
    those of one device seeing the whole batch. After every epoch the callbacks get the same logs as
    from ``model.fit`` (``loss``, the metrics, ``val_loss``, ``val_<metric>``), and training stops
    when ``model.stop_training`` is set (on any worker: all stop after the same epoch).

    Args:
        model: a compiled single-output model (its variables created in ``strategy.scope()``).
        train_data: batches of ``(x, y)`` or ``(x, y, sample_weight)`` of the GLOBAL batch size, in
            the same order on every worker (seeded shuffle); each worker keeps its share of every
            batch. Or a function ``InputContext -> dataset`` giving this worker its own examples in
            per-replica batches (``input_context.get_per_replica_batch_size``).
        validation_data: the same kind of input, evaluated after every epoch; None for none.
        epochs: the epoch to end at (counted from 0, as in ``model.fit``).
        initial_epoch: the epoch to start at, when there is no backup that is further.
        strategy: the strategy the model was built under.
        callbacks: Keras callbacks, driven as ``model.fit`` drives them. Every worker runs them; the
            files they write should go to ``worker_folder`` so that only the chief's are kept.
        class_weight: ``{class id: weight}`` multiplying each training example's loss.
        steps_per_epoch: steps per epoch, continuing through the data (restarted when it runs out);
            None runs through the training data once per epoch. Needed for repeated data.
        validation_steps: validation batches per epoch, from the start of the validation data
            every epoch; None runs through it once. Needed for repeated data.
        backup_dir: back up after every epoch here and resume from it (see ``_Backup``); the backup
            is deleted after a successful end. None: no backup.
        keep_backup: keep the last backup after a successful end too (for a caller that trains in
            phases and deletes the backups itself when the whole run is done).
        backup_state: returns JSON-ready state saved with every backup (e.g. callback counters).
        restore_state: given that state, on every worker, when a backup is resumed (before
            ``on_train_begin``).
        verbose: as in ``model.fit`` (0 silent, 1 progress bar, 2 one line per epoch, "auto" = 1), on
            the chief only.

    Returns:
        The ``keras.callbacks.History`` of the epochs run in this call.

    Raises:
        ValueError: for a model that is not compiled, or data without a batch.
        UserError: for a backup that does not fit the model.
    """
    if epochs < 1 or initial_epoch < 0:
        raise ValueError(f"epochs must be at least 1 and initial_epoch at least 0, got {epochs} and {initial_epoch}")
    callbacks = list(callbacks)
    if any(isinstance(callback, keras.callbacks.BackupAndRestore) for callback in callbacks):
        raise ValueError("BackupAndRestore works only inside model.fit; give fit_distributed a backup_dir instead.")
    per_example_loss = _per_example_loss(model)
    _check_created_in_scope(strategy, model)
    class_weights = _class_weight_vector(class_weight)
    train_batches, train_steps, element_spec = _distribute(strategy, train_data)
    if train_steps is None and steps_per_epoch is None and _is_infinite(train_data):
        raise ValueError("the training data repeats forever: give steps_per_epoch.")
    validation_batches = None
    if validation_data is not None:
        validation_batches = _distribute(strategy, validation_data)[0]
        if validation_steps is None and _is_infinite(validation_data):
            raise ValueError("the validation data repeats forever: give validation_steps.")
    verbose = 1 if verbose == "auto" else int(verbose)
    with strategy.scope():
        # Creates the compiled metrics' (and optimizer's) variables now, in the scope, as model.fit
        # does: creating them inside strategy.run would fail under MultiWorkerMirroredStrategy.
        model._symbolic_build(data_batch=tf.nest.map_structure(
            lambda spec: keras.KerasTensor(tuple(spec.shape), spec.dtype.name), element_spec))
        loss_tracker = keras.metrics.Mean(name="loss")
    train_step, validation_step = _make_steps(
        strategy, model, per_example_loss, loss_tracker, class_weights, train_batches.element_spec,
        None if validation_batches is None else validation_batches.element_spec)

    backup = None if backup_dir is None else _Backup(backup_dir, strategy, model)
    first_epoch = initial_epoch
    if backup is not None:
        restored = backup.restore()
        if restored is not None:
            finished, state = restored
            first_epoch = max(initial_epoch, finished)
            logger.info("resuming from the backup in %s: %d epochs were finished", backup.folder, finished)
            if restore_state is not None and state is not None:
                restore_state(state)
    else:
        _sync_variables(strategy, [*model.variables, *model.optimizer.variables])

    chief, workers = is_chief(strategy), num_workers(strategy)
    callback_list = keras.callbacks.CallbackList(
        callbacks, add_history=True, add_progbar=bool(verbose) and chief, model=model,
        verbose=verbose if chief else 0, epochs=epochs, steps=steps_per_epoch or train_steps)
    model.stop_training = False
    callback_list.on_train_begin()
    logs: dict[str, Any] = {}
    iterator = None
    for epoch in range(first_epoch, epochs):
        model.reset_metrics()
        loss_tracker.reset_state()
        callback_list.on_epoch_begin(epoch)
        if steps_per_epoch is None or iterator is None:
            iterator = iter(train_batches)
        step, restarted = 0, False
        while steps_per_epoch is None or step < steps_per_epoch:
            try:
                batch = next(iterator)
            except StopIteration:
                if steps_per_epoch is None or restarted:
                    break
                iterator, restarted = iter(train_batches), True
                continue
            restarted = False
            callback_list.on_train_batch_begin(step)
            batch_loss = train_step(batch)
            callback_list.on_train_batch_end(step, {"loss": batch_loss})
            step += 1
            if model.stop_training and workers == 1:  # several workers must agree first: after the epoch
                break
        if step == 0:
            raise ValueError("the training data gave no batch; check that the dataset is not empty.")
        logs = _read_logs(model, loss_tracker)
        if validation_batches is not None:
            logs.update({f"val_{name}": value for name, value in _validate(
                model, loss_tracker, validation_batches, validation_steps, validation_step, callback_list).items()})
        callback_list.on_epoch_end(epoch, logs)
        model.stop_training = _any_worker(strategy, bool(model.stop_training))  # all stop after the same epoch
        if backup is not None:
            backup.save(epoch + 1, None if backup_state is None else backup_state())
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    # Callbacks may have set weights from files only the chief has (the best epoch's model).
    _sync_variables(strategy, model.variables)
    if backup is not None and not keep_backup:
        backup.remove()
    return next(callback for callback in callback_list.callbacks if isinstance(callback, keras.callbacks.History))


def _validate(model: keras.Model, loss_tracker: keras.metrics.Mean, batches: Any, steps: int | None,
              validation_step: Callable[[Any], None], callback_list: keras.callbacks.CallbackList) -> dict[str, Any]:
    """A pass over the validation batches (``steps`` of them, or all); the logs without the ``val_`` prefix."""
    model.reset_metrics()
    loss_tracker.reset_state()
    callback_list.on_test_begin()
    for step, batch in enumerate(itertools.islice(batches, steps)):  # islice stops before fetching more
        callback_list.on_test_batch_begin(step)
        validation_step(batch)
        callback_list.on_test_batch_end(step)
    logs = _read_logs(model, loss_tracker)
    callback_list.on_test_end(logs)
    return logs
