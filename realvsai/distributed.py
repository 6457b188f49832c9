"""Training on several devices or machines: the strategy, and the one entry point ``fit``.

The "strategy" is ``keras.distribution.DataParallel`` over the local devices on JAX, and a
``tf.distribute.Strategy`` on TensorFlow. ``fit`` is ``model.fit`` on one machine, on either backend;
on several machines (TensorFlow's MultiWorkerMirroredStrategy), where Keras 3's ``model.fit`` fails
(keras-team/keras#20585), ``fit_loop`` computes the same loss and drives the same callbacks: the one
job Keras cannot do. Every worker must run the same collectives in the same order, and only the
chief keeps files; each helper here is a no-op on one machine. A dataset's batch is the global batch.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import math
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from realvsai.cli import plural
from realvsai.config import CROSS_ENTROPY, resume_command
from realvsai.errors import UserError
from realvsai.metrics import class_weight_list

if TYPE_CHECKING:
    import tensorflow as tf

    # What the functions below take: DataParallel (JAX) or a tf.distribute strategy (TensorFlow).
    Strategy = tf.distribute.Strategy | keras.distribution.DataParallel

logger = logging.getLogger(__name__)

_JOBS = ("chief", "worker")  # the task types MultiWorkerMirroredStrategy trains with
_ADDRESS = re.compile(r"^\S+:\d{1,5}$")


def parse_tf_config(environ: Mapping[str, str]) -> tf.distribute.cluster_resolver.ClusterResolver | None:
    """The cluster named by ``environ["TF_CONFIG"]``, or None when it is unset, empty or has no cluster; a
    UserError when it is not a chief/worker cluster of "host:port" addresses with this task in it."""
    text = environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
        cluster, task = config.get("cluster"), config.get("task")
        if not cluster:
            return None
        jobs = {job: tuple(addresses) for job, addresses in cluster.items()
                if job in _JOBS and isinstance(addresses, list) and addresses
                and all(isinstance(address, str) and _ADDRESS.match(address) for address in addresses)}
        valid = (len(jobs) == len(cluster) and len(jobs.get("chief", ())) <= 1 and type(task["index"]) is int
                 and 0 <= task["index"] < len(jobs[task["type"]]))
    except (ValueError, AttributeError, TypeError, KeyError):  # not JSON, not an object, no such task
        valid = False
    if not valid:
        raise UserError(f"TF_CONFIG {text} is not a cluster of 'chief' and 'worker' jobs (lists of \"host:port\" "
                        "addresses, one chief at most) with this machine's task type and index in it. Set it like "
                        '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", '
                        '"index": 0}} (see README, \'Training on several machines\'), or unset it.')
    # Built from the argument rather than TFConfigClusterResolver (which reads os.environ). It must be
    # told the local GPUs, or the workers would train on their CPUs.
    import tensorflow as tf

    return tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec({job: list(addresses) for job, addresses in jobs.items()}), task_type=task["type"],
        task_id=task["index"], rpc_layer="grpc", num_accelerators={"GPU": len(tf.config.list_physical_devices("GPU"))})


def plan_strategy(environ: Mapping[str, str], *, devices: Sequence[str] | None = None,
                  num_gpus: int | None = None) -> str:
    """"multi_worker" for a TF_CONFIG cluster, else "mirrored" over several ``devices`` (e.g. logical CPUs)
    or local GPUs (``num_gpus``, None counts them), else "default"."""
    if parse_tf_config(environ) is not None:
        return "multi_worker"
    if devices:
        return "mirrored" if len(devices) > 1 else "default"
    if num_gpus is None:
        import tensorflow as tf

        num_gpus = len(tf.config.list_physical_devices("GPU"))
    return "mirrored" if num_gpus > 1 else "default"


def select_strategy(environ: Mapping[str, str], *, devices: Sequence[str] | None = None) -> Strategy:
    """On JAX, ``DataParallel`` over ``devices`` (default: every local device). On TensorFlow, the strategy
    ``plan_strategy`` names; call it before any other TensorFlow operation (a cluster sets up its
    collectives before the runtime starts). It blocks until every worker has started."""
    if keras.backend.backend() != "tensorflow":
        if environ.get("TF_CONFIG", "").strip():
            raise UserError("TF_CONFIG is set, but training on several machines runs on TensorFlow "
                            "(MultiWorkerMirroredStrategy), and KERAS_BACKEND is "
                            f"{keras.backend.backend()}. Set KERAS_BACKEND=tensorflow, or unset TF_CONFIG.")
        return keras.distribution.DataParallel(devices=list(devices or keras.distribution.list_devices()))
    import tensorflow as tf

    cluster = parse_tf_config(environ)
    if cluster is not None:
        logger.info("waiting for the %s of the cluster (this is %s %d)",
                    plural(_size(cluster), "worker"), cluster.task_type, cluster.task_id)
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=cluster)
    if plan_strategy({}, devices=devices) == "mirrored":
        return tf.distribute.MirroredStrategy(devices=list(devices) if devices else None)
    return tf.distribute.OneDeviceStrategy(devices[0]) if devices else tf.distribute.get_strategy()


def _cluster_of(strategy: Strategy) -> tf.distribute.cluster_resolver.ClusterResolver | None:
    resolver = getattr(strategy, "cluster_resolver", None)
    return resolver if resolver is not None and resolver.task_type and resolver.cluster_spec().jobs else None


def _size(cluster: tf.distribute.cluster_resolver.ClusterResolver) -> int:
    return sum(cluster.cluster_spec().num_tasks(job) for job in _JOBS if job in cluster.cluster_spec().jobs)


def _is_chief_task(cluster: tf.distribute.cluster_resolver.ClusterResolver) -> bool:
    return cluster.task_type == "chief" or ("chief" not in cluster.cluster_spec().jobs and cluster.task_id == 0)


def num_replicas(strategy: Strategy) -> int:
    """How many devices share each global batch, on all machines together."""
    if isinstance(strategy, keras.distribution.DataParallel):
        return int(np.size(strategy.device_mesh.devices))
    return strategy.num_replicas_in_sync


def _undistributed(strategy: Strategy) -> bool:
    """Whether ``strategy`` is JAX's DataParallel over one device, which trains under no distribution (``scope``)."""
    return isinstance(strategy, keras.distribution.DataParallel) and num_replicas(strategy) == 1


def scope(strategy: Strategy) -> contextlib.AbstractContextManager:
    """``strategy.scope()``, where models, optimizers and metrics are made and trained; on JAX with one device, no
    distribution at all. Under a one-device DataParallel, Keras compiled the train step three times a phase (the
    first step's state not yet on the device, the next one's placed there, each epoch's reset metrics and seed state
    not again), 16 s each for ResNet101 at 32 px on 2 CPU cores; without it, once."""
    return contextlib.nullcontext() if _undistributed(strategy) else strategy.scope()


def needs_full_batches(strategy: Strategy) -> bool:
    """Whether every batch must split evenly over the devices (DataParallel on several; keras-team/keras#21167)."""
    return isinstance(strategy, keras.distribution.DataParallel) and num_replicas(strategy) > 1


def training_steps(count: int, global_batch: int, strategy: Strategy) -> tuple[int, bool]:
    """(steps per epoch, whether each pass leaves out its short last batch) for ``count`` training images.
    The short batch goes whenever a full one exists: XLA (JAX, or TensorFlow with --xla) would compile the
    train step again for its shape (ResNet101 under JAX, 2 CPU cores: 44 s instead of 25 s for the first
    epoch), and each pass shuffles anew, so a different few wait for the next. Fewer images than a batch
    train as one short batch, unless every batch must split evenly over the devices (then 0 steps)."""
    drop = needs_full_batches(strategy) or count >= global_batch
    return (count // global_batch if drop else math.ceil(count / global_batch)), drop


def reads_datasets_as_given(strategy: Strategy) -> bool:
    """Whether training reads the tf.data datasets it is given as they are, in this process: on JAX (Keras turns each
    batch into arrays here) and under TensorFlow's default strategy (one device). MirroredStrategy and
    MultiWorkerMirroredStrategy first rebuild a dataset from its graph for their devices, with caches of their own."""
    if isinstance(strategy, keras.distribution.DataParallel):
        return True
    import tensorflow as tf

    with strategy.scope():  # in the default strategy's scope, no strategy is set
        return not tf.distribute.has_strategy()


def num_workers(strategy: Strategy) -> int:
    """How many machines (processes) train together: 1 except under MultiWorkerMirroredStrategy."""
    cluster = _cluster_of(strategy)
    return 1 if cluster is None else _size(cluster)


def is_chief(strategy: Strategy) -> bool:
    """Whether this process writes the run's files: the chief task, or worker 0 when there is none."""
    cluster = _cluster_of(strategy)
    return cluster is None or _is_chief_task(cluster)


def describe(strategy: Strategy) -> str:
    """One line for the log: which strategy, on which devices, which worker."""
    replicas = num_replicas(strategy)
    if isinstance(strategy, keras.distribution.DataParallel):
        devices = ", ".join(str(device) for device in np.ravel(strategy.device_mesh.devices))
        if _undistributed(strategy):
            return f"one device ({devices})"
        return f"{type(strategy).__name__} over {replicas} devices ({devices})"
    cluster = _cluster_of(strategy)
    if cluster is not None:
        role = " (chief: writes the files)" if _is_chief_task(cluster) else ""
        return (f"MultiWorkerMirroredStrategy: {cluster.task_type} {cluster.task_id}{role} of "
                f"{plural(_size(cluster), 'worker')}, {plural(replicas, 'replica')} in sync")
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return f"MirroredStrategy over {plural(replicas, 'device')} ({', '.join(strategy.extended.worker_devices)})"
    if isinstance(strategy, tf.distribute.OneDeviceStrategy):
        return f"one device ({', '.join(strategy.extended.worker_devices)})"
    return "one device (GPU)" if tf.config.list_physical_devices("GPU") else "one device (CPU)"


@contextlib.contextmanager
def worker_folder(strategy: Strategy, folder: Path) -> Iterator[Path]:
    """``folder`` on the chief, a temporary folder (deleted on leaving) on the other workers; a worker
    whose collectives were aborted (another machine died) leaves with a one-line UserError."""
    chief = is_chief(strategy)
    place = Path(folder) if chief else Path(tempfile.mkdtemp(prefix="realvsai-worker-"))
    if num_workers(strategy) > 1:
        import tensorflow as tf

        stopped: tuple[type[Exception], ...] = (tf.errors.UnavailableError,)
    else:
        stopped = ()  # one machine: no collective to abort
    try:
        yield place
    except stopped as error:
        lines = [line.strip() for line in str(error).splitlines()]
        detail = next((line.split("aborted by: ", 1)[1] for line in lines if "aborted by: " in line),
                      next((line for line in lines if "/job:" in line), type(error).__name__))
        raise UserError(f"a machine of the cluster stopped, so the others cannot go on ({detail}). See that "
                        f"machine's output for why, fix it, and continue the run with {resume_command(Path(folder))} "
                        "on every machine (after its last finished epoch).") from None
    finally:
        if not chief:
            shutil.rmtree(place, ignore_errors=True)


@functools.cache
def _all_reduce(strategy: tf.distribute.Strategy) -> Callable[[list[tf.Tensor], bool], Any]:
    """The sum across replicas, of replica 0's values only when ``first_only`` (a broadcast)."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def reduce(values, first_only):
        def replica(values):
            context = tf.distribute.get_replica_context()
            if first_only:  # replica 0 is the chief's first device: the sum is its value
                first = tf.equal(context.replica_id_in_sync_group, 0)
                values = [tf.where(first, value, tf.zeros_like(value)) for value in values]
            return [context.all_reduce(tf.distribute.ReduceOp.SUM, tf.identity(value)) for value in values]

        return strategy.run(replica, args=(values,))

    def call(values, first_only):
        # Traced once per structure of what it sends (a few per run), on purpose: hide TF's warning.
        def quiet(record: logging.LogRecord) -> bool:
            return "triggered tf.function retracing" not in record.getMessage()

        tf.get_logger().addFilter(quiet)
        try:
            return [strategy.experimental_local_results(value)[0] for value in reduce(list(values), first_only)]
        finally:
            tf.get_logger().removeFilter(quiet)

    return call


def sync_variables(strategy: tf.distribute.Strategy, variables: Sequence[Any]) -> None:
    """Gives every worker the chief's values of ``variables`` (after the chief alone restored a backup or
    read the best model's file). Integers travel as float64 (exact to 2**53)."""
    if num_workers(strategy) == 1 or not variables:
        return
    import tensorflow as tf

    values = [tf.convert_to_tensor(variable) for variable in variables]
    wire = [value if value.dtype.is_floating else tf.cast(value, tf.float64) for value in values]
    for variable, value, received in zip(variables, values, _all_reduce(strategy)(wire, True)):
        variable.assign(tf.cast(received, value.dtype))


def broadcast_json(strategy: Strategy, payload: Any) -> Any:
    """The chief's JSON-ready ``payload`` on every worker (a collective: every worker calls it alike)."""
    if num_workers(strategy) == 1:
        return payload
    import tensorflow as tf

    data = np.frombuffer(json.dumps(payload).encode("utf-8"), np.uint8) if is_chief(strategy) else np.zeros(0, np.uint8)
    (length,) = _all_reduce(strategy)([tf.constant(float(len(data)))], True)
    length = int(length)
    buffer = np.zeros(max(256, 1 << (length - 1).bit_length()), np.float32)  # a power of two: few traces
    buffer[: len(data)] = data
    (received,) = _all_reduce(strategy)([tf.constant(buffer)], True)
    return json.loads(np.asarray(received.numpy()[:length], np.uint8).tobytes().decode("utf-8"))


def any_worker(strategy: Strategy, flag: bool) -> bool:
    """True on every worker when ``flag`` is True on any of them (a collective operation)."""
    if num_workers(strategy) == 1:
        return flag
    import tensorflow as tf

    return float(_all_reduce(strategy)([tf.constant(1.0 if flag else 0.0)], False)[0]) > 0


def chief_decides(strategy: Strategy, task: Callable[[], Any]) -> Any:
    """``task()`` run by the chief alone (on its files); its JSON-ready result, or its UserError, everywhere."""
    if num_workers(strategy) == 1:
        return task()
    outcome = None
    if is_chief(strategy):
        try:
            outcome = {"value": task()}
        except UserError as error:  # told to the others, who would otherwise wait for the chief forever
            outcome = {"error": str(error)}
    outcome = broadcast_json(strategy, outcome)
    if "error" in outcome:
        raise UserError(outcome["error"])
    return outcome["value"]


def check_same_on_every_worker(strategy: Strategy, what: str, value: str) -> None:
    """Stops every worker with a UserError unless ``value`` (e.g. a digest of the data) is the chief's on all."""
    if num_workers(strategy) > 1 and any_worker(strategy, broadcast_json(strategy, value) != value):
        raise UserError(f"the {what} differs between the machines of the cluster, but the workers must read "
                        f"the same {what}. Give every machine the same copy (or a shared folder) and start again.")


@keras.saving.register_keras_serializable(package="realvsai")
class AllReplicasLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """``LossScaleOptimizer`` that skips a step when the gradients overflow on any replica (Keras 3.15's
    checks only the first replica's under MirroredStrategy)."""

    def check_finite(self, grads):
        import tensorflow as tf

        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(grad)) for grad in grads if grad is not None])
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return finite
        return tf.equal(context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(~finite, tf.float32)), 0.0)


class EpochSeeds(keras.callbacks.Callback):
    """Starts every seeded layer's random stream (its SeedGenerator) at each epoch from (its seed, the epoch)
    alone, so a run resumed at epoch k draws what the uninterrupted run drew; under a tf.distribute
    strategy each replica gets a stream of its own (a SeedGenerator's state is mirrored).

    Keras draws from the state's pair ``[seed, counter]``, and the counter moves one per draw. At epoch e
    it starts at ``e * 2**20`` (up to 2**20 steps an epoch; epochs 2048 apart share a stream, after
    Keras' int32 cast on TensorFlow). Replica r's seed is ``seed + r * 2**40``: still
    the layer's seed modulo 2**40, and after Keras' cast to int32 on TensorFlow (modulo 2**31 - 2) the
    replicas' seeds lie 1024 apart, so no two replicas ever draw from the same pair. (A counter offset
    does not: ``r * 2**32`` is ``r * 4`` modulo 2**31 - 2, so replica r drew replica 0's numbers 4r steps
    later.) DataParallel needs no spreading: it draws one global tensor and gives each device its slice.
    """

    EPOCH_STRIDE = 2**20
    REPLICA_STRIDE = 2**40

    def __init__(self, strategy: Strategy):
        super().__init__()
        self.strategy, self._spread = strategy, None

    def _states(self) -> list:
        return [variable for variable in self.model.variables if variable.name == "seed_generator_state"]

    def on_epoch_begin(self, epoch, logs=None):
        counter = epoch * self.EPOCH_STRIDE
        if isinstance(self.strategy, keras.distribution.DataParallel) or self.strategy.num_replicas_in_sync == 1:
            for state in self._states():
                # np.asarray, not keras.ops.convert_to_numpy: that is np.array, whose copy=True NumPy 2 hands to
                # __array__, and the variable's (Keras', and TensorFlow's under it) takes no copy: deprecated.
                seed = int(np.asarray(state)[0]) % self.REPLICA_STRIDE
                state.assign(np.array([seed, counter]).astype(keras.backend.standardize_dtype(state.dtype)))
            return
        import tensorflow as tf

        if self._spread is None:
            states = self._states()

            def replica(counter):
                replica_id = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int64)
                for state in states:
                    seed = tf.cast(state.value[0], tf.int64) % self.REPLICA_STRIDE + replica_id * self.REPLICA_STRIDE
                    state.assign(tf.cast(tf.stack([seed, counter]), state.dtype))

            self._spread = tf.function(lambda counter: self.strategy.run(replica, args=(counter,)))
        self._spread(tf.constant(counter, tf.int64))


def fit(model: keras.Model, train: tf.data.Dataset, validation: tf.data.Dataset, *,
        strategy: Strategy, optimizer: keras.optimizers.Optimizer,
        metrics: Callable[[], list[keras.metrics.Metric]], epochs: int, initial_epoch: int, steps_per_epoch: int,
        validation_steps: int, class_weight: Mapping[int, float] | None = None,
        callbacks: Sequence[keras.callbacks.Callback] = (), jit_compile: bool | str = "auto",
        verbose: int | str = "auto") -> None:
    """Trains one phase with sparse categorical cross-entropy on repeated datasets, here or on the cluster;
    ``metrics()`` makes the metrics in ``scope(strategy)``."""
    arguments = dict(epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                     validation_steps=validation_steps, class_weight=class_weight, callbacks=callbacks, verbose=verbose)
    with scope(strategy):  # a Keras distribution must also be in scope while fit runs
        model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(), metrics=metrics(),
                      weighted_metrics=[cross_entropy()], jit_compile=jit_compile)
        if num_workers(strategy) == 1:
            model.fit(train, validation_data=validation, shuffle=False, **arguments)
            return
    fit_loop(model, train, validation, strategy=strategy, metrics=metrics, **arguments)


def cross_entropy() -> keras.metrics.Metric:
    """The loss without the L2 penalty (config.CROSS_ENTROPY), weighted as the loss is: compile's weighted_metrics
    take the class weights (training) and the data's sample weights (validation)."""
    return keras.metrics.SparseCategoricalCrossentropy(name=CROSS_ENTROPY)


def fit_loop(model: keras.Model, train: tf.data.Dataset, validation: tf.data.Dataset, *,
             strategy: tf.distribute.Strategy, metrics: Callable[[], list[keras.metrics.Metric]], epochs: int,
             steps_per_epoch: int, validation_steps: int, initial_epoch: int = 0,
             class_weight: Mapping[int, float] | None = None, callbacks: Sequence[keras.callbacks.Callback] = (),
             verbose: int | str = "auto") -> keras.callbacks.History:
    """``model.fit`` for a model compiled in ``strategy.scope()``, under any strategy; class weights weight
    training, the data's sample weights validation. Each worker keeps its share of every global batch
    (DATA sharding), so all must read the same data in the same order."""
    train_batches, validation_batches = _distribute_datasets(strategy, (train, validation))
    optimizer = model.optimizer
    with strategy.scope():  # variables are created in the scope: inside strategy.run would fail
        optimizer.build(model.trainable_variables)
        metric_list = [keras.metrics.Mean(name="loss"), cross_entropy(), *metrics()]
    replica_losses = _replica_losses(model, metric_list, class_weight)
    train_step = _train_step(model, strategy, replica_losses, train_batches.element_spec)
    validation_step = _validation_step(strategy, replica_losses, validation_batches.element_spec)

    chief = is_chief(strategy)
    verbose = 1 if verbose == "auto" else int(verbose)
    callback_list = keras.callbacks.CallbackList(callbacks, add_history=True, add_progbar=bool(verbose) and chief,
                                                 model=model, verbose=verbose if chief else 0, epochs=epochs,
                                                 steps=steps_per_epoch)
    model.stop_training = False
    callback_list.on_train_begin()
    # Callbacks may have restored a backup that only the chief has: every worker starts from its weights.
    sync_variables(strategy, [*model.variables, *optimizer.variables])
    iterator, logs = iter(train_batches), {}
    for epoch in range(initial_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        for step in range(steps_per_epoch):
            callback_list.on_train_batch_begin(step)
            callback_list.on_train_batch_end(step, {"loss": train_step(next(iterator))})
        logs = _read_logs(metric_list)
        validation_logs = _validate(callback_list, validation_step, validation_batches, validation_steps, metric_list)
        logs.update({f"val_{name}": value for name, value in validation_logs.items()})
        callback_list.on_epoch_end(epoch, logs)
        model.stop_training = any_worker(strategy, bool(model.stop_training))  # all stop after the same epoch
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    sync_variables(strategy, model.variables)  # callbacks may have read the best weights from the chief's file
    return next(callback for callback in callback_list.callbacks if isinstance(callback, keras.callbacks.History))


def _distribute_datasets(strategy: tf.distribute.Strategy, datasets: Sequence[tf.data.Dataset]
                         ) -> list[tf.distribute.DistributedDataset]:
    """``datasets`` as ``strategy`` hands them to its replicas, each worker keeping its share of every global batch
    (DATA sharding)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return [strategy.experimental_distribute_dataset(data.with_options(options)) for data in datasets]


def _replica_losses(model: keras.Model, metric_list: list[keras.metrics.Metric],
                    class_weight: Mapping[int, float] | None) -> Callable[[Any, bool], tuple[Any, Any, Any]]:
    """A replica's forward pass over its share of a batch, ``(data, training) -> (losses, regularization, size)``:
    each example's loss (weighted by ``class_weight`` in training, by the data's sample weights in validation), the
    model's regularization losses, and the number of examples; it updates ``metric_list`` as ``model.fit`` would
    (fit's "loss", the cross-entropy, then the compiled metrics)."""
    import tensorflow as tf

    weights = None if not class_weight else tf.constant(class_weight_list(class_weight), tf.float32)

    def replica_losses(data, training: bool):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if weights is not None and training:
            sample_weight = tf.gather(weights, tf.cast(tf.reshape(y, [-1]), tf.int32))
        predictions = model(x, training=training)
        losses = keras.losses.sparse_categorical_crossentropy(y, predictions)
        if sample_weight is not None:
            losses *= tf.cast(tf.reshape(sample_weight, [-1]), losses.dtype)
        regularization = tf.add_n([tf.cast(loss, tf.float32) for loss in model.losses]) if model.losses else 0.0
        size = tf.cast(tf.shape(losses)[0], tf.float32)
        # fit's "loss": the mean of (weighted example loss + regularisation), summed across replicas when read.
        metric_list[0].update_state(tf.math.divide_no_nan(tf.reduce_sum(losses), size) + regularization,
                                    sample_weight=size)
        metric_list[1].update_state(y, predictions, sample_weight=sample_weight)  # as compile's weighted_metrics
        for metric in metric_list[2:]:  # unweighted, as compile's metrics= (not weighted_metrics=) are in fit
            metric.update_state(y, predictions)
        return losses, regularization, size

    return replica_losses


def _train_step(model: keras.Model, strategy: tf.distribute.Strategy, replica_losses: Callable[[Any, bool], Any],
                element_spec: Any) -> Callable[[Any], tf.Tensor]:
    """One training step over a global batch (of ``element_spec``): each replica's gradients of its share of the
    loss (``replica_losses``), applied by the model's optimizer, which sums them across replicas; returns the loss."""
    import tensorflow as tf

    optimizer = model.optimizer

    def train_replica(data):
        context = tf.distribute.get_replica_context()
        local_size = tf.shape(tf.nest.flatten(data)[0])[0]
        global_size = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(local_size, tf.float32))

        def step(training: bool):
            with tf.GradientTape() as tape:
                losses, regularization, _ = replica_losses(data, training)
                loss = (tf.reduce_sum(losses) / global_size
                        + regularization / context.num_replicas_in_sync)
                scaled = optimizer.scale_loss(loss)  # mixed precision: LossScaleOptimizer scales it up
            grads = tape.gradient(scaled, model.trainable_variables)
            return [loss, *(tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                            for v, g in zip(model.trainable_variables, grads))]

        # A replica given no example (the epoch's small last batch) runs in inference mode: in training
        # mode BatchNormalization would average the empty batch into NaN moving statistics.
        loss, *grads = (step(True) if context.num_replicas_in_sync == 1
                        else tf.cond(local_size > 0, lambda: step(True), lambda: step(False)))
        optimizer.apply_gradients(zip(grads, model.trainable_variables))  # sums the gradients across replicas
        return loss

    @tf.function(input_signature=[element_spec], reduce_retracing=True)
    def train_step(batch):
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(train_replica, args=(batch,)), axis=None)

    return train_step


def _validation_step(strategy: tf.distribute.Strategy, replica_losses: Callable[[Any, bool], Any],
                     element_spec: Any) -> Callable[[Any], None]:
    """One validation step over a global batch (of ``element_spec``): each replica's share through
    ``replica_losses`` in inference mode, for the metrics it updates."""
    import tensorflow as tf

    @tf.function(input_signature=[element_spec], reduce_retracing=True)
    def validation_step(batch):
        strategy.run(lambda data: replica_losses(data, False), args=(batch,))

    return validation_step


def _validate(callback_list: keras.callbacks.CallbackList, validation_step: Callable[[Any], None],
              batches: Iterable[Any], steps: int, metric_list: list[keras.metrics.Metric]) -> dict[str, float]:
    """Runs ``validation_step`` over the first ``steps`` of ``batches`` between the callbacks' validation hooks, as
    fit's evaluate calls them; returns the validation logs (``_read_logs``)."""
    callback_list.on_test_begin()
    for step, batch in enumerate(itertools.islice(batches, steps)):  # islice stops before fetching more
        callback_list.on_test_batch_begin(step)
        validation_step(batch)
        callback_list.on_test_batch_end(step)
    validation_logs = _read_logs(metric_list)
    callback_list.on_test_end(validation_logs)
    return validation_logs


def _read_logs(metric_list: list[keras.metrics.Metric]) -> dict[str, float]:
    """Each metric's result by name, then resets the metrics for the next steps."""
    logs = {metric.name: float(keras.ops.convert_to_numpy(metric.result())) for metric in metric_list}
    for metric in metric_list:
        metric.reset_state()
    return logs
