"""Fitting the model over a run's phases on one epoch axis, resumable at any epoch.

Pretrained: ``head`` trains the head on the frozen backbone, then ``fine_tune`` the backbone (or its
top ``fine_tune_blocks`` blocks); from scratch one phase, ``full`` (``TrainConfig.plan_phase``). Each
phase: Adam, decaying linearly; a stop rule ends its phase and the epochs left go to fine-tuning. Every
epoch each phase backs up into ``RUN/backup/<phase>/``; a resumed run restores the last finished epoch.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from realvsai.config import BACKUP_DIR, HISTORY_FILE, LOGS_DIR, MODEL_FILE, Phase, TrainConfig, monitor_of
from realvsai.errors import UserError

if TYPE_CHECKING:
    import keras

    from realvsai.callbacks import BestModel, ResumableEarlyStopping, StopTrainingOnValidationLoss, TrainingHistory
    from realvsai.distributed import Strategy

logger = logging.getLogger(__name__)


def make_optimizer(learning_rate: float, final_fraction: float, decay_steps: int,
                   loss_scaling: bool = False) -> keras.optimizers.Optimizer:
    """Adam, decaying linearly over ``decay_steps`` to ``final_fraction`` of the start; ``loss_scaling``
    (mixed_float16) wraps it in a LossScaleOptimizer (on TensorFlow ``distributed.AllReplicasLossScaleOptimizer``)."""
    import keras

    from realvsai.distributed import AllReplicasLossScaleOptimizer

    adam = keras.optimizers.Adam(keras.optimizers.schedules.PolynomialDecay(
        learning_rate, decay_steps=max(1, decay_steps), end_learning_rate=learning_rate * final_fraction, power=1.0))
    if not loss_scaling:
        return adam
    # On JAX, DataParallel computes one global gradient, which Keras' own optimizer checks whole.
    return (AllReplicasLossScaleOptimizer if keras.backend.backend() == "tensorflow"
            else keras.optimizers.LossScaleOptimizer)(adam)


def fit_phases(model: keras.Model, config: TrainConfig, run_dir: Path, strategy: Strategy,
                train: tuple[Callable[..., Any], int], validation: tuple[Any, int],
                class_weight: dict[int, float] | None, num_classes: int, positive_index: int | None,
                resume: bool, verbose: int | str,
                extra_callbacks: Sequence[keras.callbacks.Callback] = ()) -> list[dict[str, Any]]:
    """Runs (or resumes) every phase; returns the history rows. ``train`` is (a function of ``first_epoch`` and
    ``decode_ahead`` giving the endless training batches from that epoch on, batches per epoch): ``decode_ahead``
    is False for a phase resumed as it ended, which trains no epoch, so its batches are never read (``data.
    make_dataset`` then decodes no image into its cache for it). ``validation`` is (endless batches, batches per
    epoch); the batches are a tf.data dataset (``data.make_dataset``) or, without TensorFlow,
    ``arrays.EpochBatches``. ``extra_callbacks`` run after the run's own, so an epoch they stop
    training after is backed up as unfinished business: a resumed run goes on. The model ends with its best
    weights."""
    from realvsai import callbacks, distributed
    from realvsai.model import make_metrics

    if distributed.num_workers(strategy) > 1 and config.xla:
        logger.warning("--xla applies to model.fit on one machine; the training loop for several machines runs "
                       "without it")
    names = config.phase_names()
    latest = _latest_backup(run_dir, names, strategy) if resume else None
    stop_rule, early_stopping, best_model, recorder = _callbacks_across_phases(model, config, run_dir, latest)
    tensorboard = _tensorboard(run_dir / LOGS_DIR)

    # Phases before the backed-up one are finished; their weights live on in the later backup.
    for name in names[names.index(latest[0]):] if latest is not None else names:
        phase = config.plan_phase(name, sum(1 for row in recorder.rows if row["phase"] == "head"))
        start, end, restoring = _epochs_to_run(phase, latest)
        _set_trainable_for_phase(model, config, phase, strategy)
        recorder.phase = name

        def state_fn(phase_end: int = phase.end) -> dict[str, Any]:
            return {"rows": recorder.rows, "stop_rule": stop_rule.state(), "early_stopping": early_stopping.state(),
                    "phase_done": bool(model.stop_training) or recorder.rows[-1]["epoch"] >= phase_end}

        backup = callbacks.RunBackup(run_dir / BACKUP_DIR / name, state_fn, restore=restoring,
                                     on_commit=recorder.write)
        # Order matters: Keras' bar closes the epoch's line before any line of its end is logged (on a terminal
        # they went on the bar's unfinished line), a NaN loss ends the run before anything is saved, the stop rules
        # decide, the recorder records the row, the backup commits (then history.csv gets the row), and only then
        # is a new best model written.
        phase_callbacks = [callbacks.ValidationProgress(validation[1]), callbacks.ShortProgressBar(),
                           callbacks.StopOnLostCtrlC(), callbacks.StopOnNonFiniteLoss(),
                           distributed.EpochSeeds(strategy), stop_rule, early_stopping, recorder, backup, best_model,
                           *tensorboard, *extra_callbacks]
        with distributed.scope(strategy):
            optimizer = make_optimizer(phase.learning_rate, config.final_learning_rate_fraction,
                                       train[1] * (phase.end - phase.start),
                                       loss_scaling=model.dtype_policy.name == "mixed_float16")
        trains = end > start  # a phase resumed as it ended trains no epoch: no image is decoded ahead for it
        batches = train[0](first_epoch=start, decode_ahead=trains)  # which may decode every image, under a bar
        if trains:
            logger.info("%s", compile_notice(config.backbone))
        distributed.fit(model, batches, validation[0], strategy=strategy, optimizer=optimizer,
                        metrics=functools.partial(make_metrics, num_classes, positive_index), epochs=end,
                        initial_epoch=start, steps_per_epoch=train[1], validation_steps=validation[1],
                        class_weight=class_weight, callbacks=phase_callbacks,
                        jit_compile=True if config.xla else "auto", verbose=verbose)
        latest = None
    return recorder.rows


def _latest_backup(run_dir: Path, names: list[str], strategy: Strategy) -> list[Any] | None:
    """[phase name, its backup (``callbacks.read_backup``)] of the last of the phases ``names`` with a backup in
    ``run_dir`` (later phases first), as the chief read it; None where none has one."""
    from realvsai import distributed

    return distributed.chief_decides(strategy, lambda: _read_latest_backup(run_dir, names))


def _read_latest_backup(run_dir: Path, names: list[str]) -> list[Any] | None:
    from realvsai import callbacks

    return next(([name, found] for name in reversed(names)
                 if (found := callbacks.read_backup(run_dir / BACKUP_DIR / name))), None)


def refuse_lost_best_model(run_dir: Path, config: TrainConfig) -> None:
    """A UserError where the run in ``run_dir`` to resume backed up an epoch after its best one, and the best one's
    model.h5 is gone: the resumed run would train on and end without it, its last weights taken for the best epoch's.
    (Where the best epoch is the last backed up, the resumed run saves it again from the backup.)"""
    from realvsai import callbacks

    latest = _read_latest_backup(run_dir, config.phase_names())
    if latest is None or (run_dir / MODEL_FILE).is_file():
        return
    rows = latest[1]["state"]["rows"]
    best = callbacks.best_epoch_row(rows)
    if best and best["epoch"] != rows[-1]["epoch"]:
        raise UserError(f"{run_dir / MODEL_FILE}, the model of the run's best epoch ({best['epoch']}), is missing, so "
                        "the run cannot go on: put the file back, or train a new run under another --name.")


def _callbacks_across_phases(model: keras.Model, config: TrainConfig, run_dir: Path, latest: list[Any] | None
                   ) -> tuple[StopTrainingOnValidationLoss, ResumableEarlyStopping, BestModel, TrainingHistory]:
    """The callbacks that go on across the phases: the stop rule, early stopping, the best model's writer and the
    history's recorder, as the ``latest`` backup (``_latest_backup``'s; None for a new run) left them. Writes
    history.csv as far as that backup goes."""
    from realvsai import callbacks
    from realvsai.model import float32_copy

    # The rows are committed together with the weights' epoch, so they match it.
    rows: list[dict[str, Any]] = latest[1]["state"]["rows"] if latest is not None else []
    monitor = monitor_of(rows)  # val_loss for a run begun before the cross-entropy was logged
    stop_rule = callbacks.StopTrainingOnValidationLoss(margin=config.stop_margin, patience=config.stop_patience,
                                                       monitor=monitor)
    early_stopping = callbacks.ResumableEarlyStopping(monitor=monitor, patience=config.early_stopping_patience)
    best_model = callbacks.BestModel(run_dir / MODEL_FILE, monitor=monitor,
                                     export=None if model.dtype_policy.name == "float32" else float32_copy)
    if latest is not None:
        state = latest[1]["state"]
        stop_rule.restore(state["stop_rule"])
        early_stopping.restore(state["early_stopping"])
        best_model.resume(rows)
        logger.info("resuming %s after epoch %d (phase %s)", run_dir, latest[1]["epoch"], latest[0])
    callbacks.write_history_csv(run_dir / HISTORY_FILE, rows)
    return stop_rule, early_stopping, best_model, callbacks.TrainingHistory(run_dir / HISTORY_FILE, rows)


def _epochs_to_run(phase: Phase, latest: list[Any] | None) -> tuple[int, int, bool]:
    """(first epoch, end epoch, whether to restore the backup) of ``phase``: where the ``latest`` backup
    (``_latest_backup``'s) is this phase's, from the epoch it backed up, and no further when the phase had ended."""
    start, end, restoring = phase.start, phase.end, latest is not None and latest[0] == phase.name
    if restoring:
        start = latest[1]["epoch"]
        if latest[1]["state"]["phase_done"]:
            end = start  # the phase ended (maybe early) just before the kill: only restore it
    return start, end, restoring


def _set_trainable_for_phase(model: keras.Model, config: TrainConfig, phase: Phase, strategy: Strategy) -> None:
    """Freezes a pretrained backbone for ``phase``, or unfreezes it (its top ``fine_tune_blocks`` blocks) and says
    so; a model trained from scratch trains whole throughout."""
    from realvsai import distributed
    from realvsai.model import set_backbone_trainable

    if not config.pretrained:
        return
    with distributed.scope(strategy):
        blocks = set_backbone_trainable(model, phase.train_backbone, config.fine_tune_blocks)
    if phase.train_backbone:
        logger.info("fine-tuning %d residual block(s) of the backbone from epoch %d at learning rate %g",
                    blocks, phase.start + 1, phase.learning_rate)


# How long the first step of a phase may take on a CPU, where it compiles the training step: measured on 2 cores at
# 32 px, from scratch, 26 s for ResNet50, 51 s for ResNet101, 72 s for ResNet152 (the steps after it: 0.4-0.7 s).
CPU_COMPILE_TIMES = {"resnet50": "half a minute", "resnet101": "a minute", "resnet152": "a minute and a half"}


def compile_notice(backbone: str) -> str:
    """The line said before a phase's first step: Keras shows its progress bar once that step is done, and it
    compiles the training step first, with nothing on the screen (once on either backend: ``distributed.scope``)."""
    import keras

    line = "compiling the training step: its first step takes longer than the rest"
    if not any(device.startswith("gpu") for device in keras.distribution.list_devices()):
        line += f", up to about {CPU_COMPILE_TIMES.get(backbone, 'a minute')} on a CPU"
    return line


def _tensorboard(log_dir: Path) -> list[keras.callbacks.Callback]:
    """Keras' TensorBoard callback writing to ``log_dir``; none without TensorFlow (its ``tf.summary``)."""
    import keras

    try:
        import tensorflow  # noqa: F401
    except ImportError:
        logger.info("no TensorBoard logs in %s: TensorBoard writes them with TensorFlow, which is not installed",
                    log_dir)
        return []
    tensorboard = keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False, profile_batch=0)
    tensorboard.async_safe = True  # it writes once an epoch: its per-batch hook writes nothing, reads no loss
    return [tensorboard]
