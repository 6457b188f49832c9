"""Training a classifier on DATA/{train,validation}: phases on one epoch axis, resumable at any epoch.

Pretrained: ``head`` trains the head on the frozen backbone, then ``fine_tune`` the backbone (or its
top ``fine_tune_blocks`` blocks); from scratch one phase, ``full``. Each phase: Adam, decaying
linearly; a stop rule ends its phase and the epochs left go to fine-tuning. Every epoch each phase
backs up into ``RUN/backup/<phase>/``; ``--resume`` restores the last finished epoch. Only the
chief of a cluster writes. Outputs in ``OUT/NAME/``: model.h5 (best epoch, float32), model.json,
history.csv, training_curves.png, logs/, then the evaluation's files when DATA/test exists.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from realvsai.cli import format_table
from realvsai.config import (
    BACKUP_DIR,
    CONFIDENCE_THRESHOLD,
    CURVES_FILE,
    HISTORY_FILE,
    LOGS_DIR,
    MODEL_FILE,
    MODEL_JSON_FILE,
    POSITIVE_WORDS,
    TRAINED_FILE,
    TrainConfig,
)
from realvsai.errors import UserError
from realvsai.files import atomic_write_bytes, atomic_write_text
from realvsai.layout import TEST, TRAIN, VALIDATION

if TYPE_CHECKING:  # TensorFlow loads only when training starts, so the script's --help is instant
    import keras
    import tensorflow as tf

    from realvsai.data import LabelledImages
    from realvsai.distributed import Strategy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Phase:
    """One ``fit``: epochs ``start .. end-1`` of the run's single epoch axis."""

    name: str  # "head", "fine_tune" or "full"
    start: int
    end: int
    learning_rate: float
    train_backbone: bool


@dataclass(frozen=True)
class TrainResult:
    """What ``train`` made; on a worker that is not the chief, ``run_dir`` is on the chief's machine."""

    run_dir: Path
    model: keras.Model
    model_info: dict[str, Any]
    history: list[dict[str, Any]]
    test_metrics: dict[str, Any] | None
    chief: bool = True


def select_precision(precision: str, num_gpus: int, backend: str = "tensorflow") -> str:
    """The dtype policy name for ``--precision`` (``auto``: float32 on CPU; on a GPU mixed_float16 on
    TensorFlow, mixed_bfloat16 on JAX, which needs no loss scaling)."""
    if precision == "auto":
        return "float32" if num_gpus == 0 else "mixed_float16" if backend == "tensorflow" else "mixed_bfloat16"
    return precision


def find_positive_class(class_names: Sequence[str], requested: str = "") -> str | None:
    """The positive class of a binary problem: ``requested`` (a UserError if it is not one of two classes),
    else the one class with a word (``AiArt``, ``ai_generated``, ``FAKE``) in ``POSITIVE_WORDS``, else None."""
    if requested:
        if requested not in class_names:
            raise UserError(f"--positive-class {requested}: no such class; the classes are {list(class_names)}.")
        if len(class_names) != 2:
            raise UserError(f"--positive-class applies to two classes; there are {len(class_names)}, whose "
                            "metrics are macro-averaged. Leave it out.")
        return requested
    if len(class_names) != 2:
        return None
    matches = [name for name in class_names
               if POSITIVE_WORDS & {word.lower() for word in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+", name)}]
    return matches[0] if len(matches) == 1 else None


def phase_names(config: TrainConfig) -> list[str]:
    """The run's phases in order: ``["full"]`` from scratch, else ``head`` and/or ``fine_tune``."""
    if not config.pretrained:
        return ["full"]
    return [name for name, epochs in (("head", config.head_epochs), ("fine_tune", config.fine_tune_epochs)) if epochs]


def plan_phase(config: TrainConfig, name: str, head_epochs_run: int = 0) -> Phase:
    """Phase ``name``'s epochs; fine-tuning starts after the epochs the head phase ran (``head_epochs_run``)."""
    if name == "full":
        return Phase(name, 0, config.total_epochs, config.learning_rate, train_backbone=True)
    if name == "head":
        return Phase(name, 0, config.head_epochs, config.learning_rate, train_backbone=False)
    return Phase(name, head_epochs_run, config.total_epochs, config.fine_tune_learning_rate, train_backbone=True)


def loss_class_weights(config: TrainConfig, train_counts: Mapping[str, int]) -> dict[int, float] | None:
    """Per-class loss weights (class index -> weight) that make every class count as much, or None when off."""
    if not config.class_weights:
        return None
    import numpy as np
    from sklearn.utils.class_weight import compute_class_weight

    classes = np.arange(len(train_counts))  # training refuses an empty class, so every class is present
    labels = np.repeat(classes, list(train_counts.values()))
    return dict(enumerate(compute_class_weight("balanced", classes=classes, y=labels).tolist()))


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


def plot_training_curves(rows: Sequence[Mapping[str, Any]], path: Path, fine_tune_start: int | None = None) -> None:
    """Loss, accuracy, precision, recall, AUC and F1 per epoch, with a line at ``fine_tune_start`` (from 1)."""
    from matplotlib.figure import Figure  # saves a PNG through Agg itself: no backend switch

    figure = Figure(figsize=(15, 8), layout="constrained")
    axes = figure.subplots(2, 3).ravel()
    epochs = [row["epoch"] for row in rows]
    for axis, metric in zip(axes, ("loss", "accuracy", "precision", "recall", "auc", "f1")):
        for key, label, style in ((metric, "training", "-o"), (f"val_{metric}", "validation", "-s")):
            values = [row.get(key, math.nan) for row in rows]
            if not all(math.isnan(value) for value in values):
                axis.plot(epochs, values, style, label=label, markersize=3)
        if fine_tune_start is not None:
            axis.axvline(fine_tune_start - 0.5, color="gray", linestyle="--", label="fine-tuning starts")
        axis.set_title(metric)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(Path(path), buffer.getvalue())


def _write_json(path: Path, content: Mapping[str, Any]) -> None:
    atomic_write_text(path, json.dumps(content, indent=2, default=str) + "\n")


def _read_json(path: Path) -> Any:
    """The content of a JSON file this program wrote, or None when there is none."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def resolve_run_dir(config: TrainConfig, resume: bool) -> tuple[TrainConfig, Path]:
    """The run folder, and the configuration to use (the saved one when resuming); a UserError if the
    folder exists and ``resume`` is False, or ``resume`` finds nothing to resume."""
    if not config.name:
        if resume:
            raise UserError("--resume needs the --name of the run to continue.")
        config = dataclasses.replace(config, name=datetime.now().strftime("%Y%m%d-%H%M%S"))
    run_dir = Path(config.out) / config.name
    saved = run_dir / BACKUP_DIR / "config.json"
    if not resume:
        if run_dir.exists():
            raise UserError(f"{run_dir} already exists. Continue that run with --resume, or choose another --name.")
        return config, run_dir
    if saved.is_file():
        stored = TrainConfig.from_json(json.loads(saved.read_text(encoding="utf-8")))
        logger.info("resuming %s with the settings it was started with (other setting flags have no effect)",
                    run_dir)
        return dataclasses.replace(stored, out=config.out, name=config.name), run_dir
    if (run_dir / MODEL_JSON_FILE).is_file():
        raise UserError(f"{run_dir} has finished training; there is nothing to resume. Start a new run with "
                        "another --name.")
    if run_dir.exists():
        return config, run_dir  # killed before its first backup: start it over with these settings
    raise UserError(f"{run_dir} does not exist, so there is nothing to resume. Check --out and --name.")


def _scan_splits(config: TrainConfig) -> tuple[LabelledImages, LabelledImages, LabelledImages | None]:
    """The train, validation and (when there is one) test images of ``config.data``."""
    from realvsai import data

    data_dir = Path(config.data)
    if not (data_dir / TRAIN).is_dir():
        raise UserError(f"{data_dir} has no {TRAIN} folder. Run DataSplitD1.py or DataSplitD2.py first, "
                        "or point --data at the folder that holds train/ and validation/.")
    if not (data_dir / VALIDATION).is_dir():
        raise UserError(f"{data_dir} has no {VALIDATION} folder: the best model and the stop rules are chosen on "
                        "it. Split off one with DataSplitD1.py or DataSplitD2.py.")
    train = data.scan_images(data_dir / TRAIN)
    if len(train.class_names) < 2:
        raise UserError(f"{data_dir / TRAIN} has one class folder ({train.class_names[0]}); a classifier needs "
                        "at least two.")
    empty = [name for name, count in train.counts().items() if count == 0]
    if empty:
        raise UserError(f"{data_dir / TRAIN} has no readable image in {empty}. Add images or remove the folder.")
    validation = data.scan_images(data_dir / VALIDATION, train.class_names)
    test = data.scan_images(data_dir / TEST, train.class_names) if (data_dir / TEST).is_dir() else None
    return train, validation, test


def training_images_record(images: LabelledImages) -> dict[str, Any]:
    """model.json's ``training_images`` (the app flags inputs unlike them), ``shortcuts`` and ``shortcut_warning``."""
    from realvsai import image_stats

    formats = images.formats or [""] * len(images)
    qualities = images.jpeg_qualities or [None] * len(images)
    # The properties the split judges (size, aspect, file size, format, JPEG quality), for data split elsewhere.
    facts = [image_stats.ImageFacts(images.class_names[label], width, height, image_format, path.stat().st_size,
                                    quality)
             for path, label, (width, height), image_format, quality
             in zip(images.files, images.labels, images.sizes, formats, qualities)]
    shortcuts = image_stats.check_shortcuts(facts)
    return {
        "training_images": image_stats.training_profile(facts),
        "shortcuts": {shortcut.feature: shortcut.balanced_accuracy for shortcut in shortcuts},
        "shortcut_warning": image_stats.shortcut_warning(shortcuts, image_stats.class_profiles(facts), facts),
    }


def data_digest(data_dir: Path, *splits: LabelledImages) -> str:
    """Each file's path under ``data_dir``, label and size, in order: what every worker must read alike."""
    digest = hashlib.sha256(json.dumps(splits[0].class_names).encode("utf-8"))
    for images in splits:
        for path, label, size in zip(images.files, images.labels, images.sizes):
            digest.update(f"{os.path.relpath(path, data_dir)}\0{label}\0{size}\n".encode())
    return digest.hexdigest()


def train(config: TrainConfig, *, resume: bool = False, strategy: Strategy | None = None,
          verbose: int | str = "auto") -> TrainResult:
    """Trains a model as ``config`` says and writes the run folder; every worker of a cluster calls it, and
    the chief's ``config`` and ``resume`` count. ``strategy`` None trains on every local device
    (``distributed.select_strategy``: MirroredStrategy over the GPUs on TensorFlow, DataParallel on JAX).

    Raises:
        UserError: for a bad dataset, a clash with an existing run, unusable weights or a stopped worker.
    """
    from realvsai import distributed

    config.validate()
    strategy = strategy or distributed.select_strategy({})
    chosen = distributed.chief_decides(strategy, lambda: [resolve_run_dir(config, resume)[0].to_json(), resume])
    config, resume = TrainConfig.from_json(chosen[0]), chosen[1]
    run_dir = Path(config.out) / config.name
    if not distributed.is_chief(strategy):
        logger.info("the chief writes the run folder %s (on its machine); this worker keeps no file", run_dir)
    with distributed.worker_folder(strategy, run_dir) as folder:
        trained = distributed.chief_decides(strategy, lambda: _read_json(folder / BACKUP_DIR / TRAINED_FILE)
                                            ) if resume else None
        if trained is None:
            result = _train(config, folder, strategy, resume, verbose)
        else:  # killed after training, before the run was finished
            logger.info("%s has finished training; writing what it had not written yet", run_dir)
            result = TrainResult(folder, None, trained["model_info"], trained["history"], None,
                                 chief=distributed.is_chief(strategy))
        if result.chief:
            result = _finish_run(result.model, result.model_info, result.history, folder, Path(config.data))
    return dataclasses.replace(result, run_dir=run_dir)


def _train(config: TrainConfig, run_dir: Path, strategy: Strategy, resume: bool,
           verbose: int | str) -> TrainResult:
    """``train``'s training, once the run folder is settled; ``run_dir`` is where this process writes. The
    chief's result holds the best model in float32, which is also in model.h5."""
    import keras
    import tensorflow as tf  # the tf.data input, which feeds model.fit on every backend

    from realvsai import data, distributed
    from realvsai import model as model_module
    from realvsai.augmentation import augment_copies, build_augmentation
    from realvsai.callbacks import save_model_atomically

    logger.info("settings:\n%s", format_table(("setting", "value"), sorted(config.to_json().items())))
    num_gpus = sum(device.startswith("gpu") for device in keras.distribution.list_devices())
    policy = select_precision(config.precision, num_gpus, keras.backend.backend())
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(config.seed)
    if keras.backend.backend() == "tensorflow" and not num_gpus:
        if config.xla:  # Keras turns XLA off for the whole process once op determinism is on
            logger.info("--xla: TensorFlow's op determinism stays off, so a resumed run comes close to the "
                        "uninterrupted one but may not repeat its numbers exactly")
        else:  # the same numbers on every run, so a resumed run repeats the uninterrupted one (slower on a GPU)
            tf.config.experimental.enable_op_determinism()

    problem = None
    try:
        train_images, validation_images, test_images = _scan_splits(config)
        digest = data_digest(Path(config.data), train_images, validation_images)
    except UserError as error:  # raised after the check below, which stops the other workers too
        problem, digest = error, f"unreadable: {error}"
    try:
        distributed.check_same_on_every_worker(strategy, "training data", digest)
    except UserError as error:
        problem = problem or error
    if problem is not None:
        raise problem
    class_names = train_images.class_names
    positive_class = find_positive_class(class_names, config.positive_class)
    if len(class_names) == 2 and positive_class is None:
        positive_class = class_names[1]
        logger.warning("no class is named like the generated one (fake, generated, synthetic, ai); the binary "
                       "metrics count %r as positive. Set --positive-class to choose.", positive_class)
    positive_index = class_names.index(positive_class) if positive_class else None

    replicas, workers = distributed.num_replicas(strategy), distributed.num_workers(strategy)
    global_batch = config.batch_size * replicas
    full_batches = distributed.needs_full_batches(strategy)
    steps_per_epoch, validation_steps = (
        (len(images) // global_batch if full_batches else math.ceil(len(images) / global_batch))
        for images in (train_images, validation_images))
    if full_batches:
        if not steps_per_epoch or not validation_steps:
            raise UserError(f"{len(train_images)} training and {len(validation_images)} validation images do not "
                            f"fill one batch of {global_batch} ({config.batch_size} on each of {replicas} devices). "
                            "Lower --batch-size, or add images.")
        logger.info("every batch splits evenly over the %d devices: each epoch leaves out the last %d training "
                    "(a different few each epoch) and %d validation images", replicas,
                    len(train_images) % global_batch, len(validation_images) % global_batch)
    # Repeated, with the steps given to fit: ignore_errors() hides the datasets' length from Keras.
    # The preset's steps without an XLA kernel (the JPEG step) run here, on the CPU, not in the model.
    input_augmentation = build_augmentation(config.augment, seed=config.seed, part="input")
    crops = config.input_mode == "crops"
    train_epochs = functools.partial(
        data.make_dataset, train_images, batch_size=global_batch, image_size=config.image_size, shuffle=True,
        seed=config.seed, augment=functools.partial(augment_copies, input_augmentation) if input_augmentation else None,
        crops="random" if crops else None, drop_remainder=full_batches)
    counts = {split: images.counts() for split, images in
              ((TRAIN, train_images), (VALIDATION, validation_images), (TEST, test_images)) if images is not None}
    validation_dataset = data.make_dataset(validation_images, batch_size=global_batch, image_size=config.image_size,
                                           crops="centre" if crops else None, drop_remainder=full_batches)
    class_weight = loss_class_weights(config, counts[TRAIN])
    if class_weight:  # validation weighted like the training loss, so loss and val_loss (and the stop rule) compare
        logger.info("class weights: %s", ", ".join(f"{name} {class_weight[index]:.3f}"
                                                    for index, name in enumerate(class_names)))
        weights = tf.constant(list(class_weight.values()), tf.float32)
        validation_dataset = validation_dataset.map(lambda images, labels: (images, labels, tf.gather(weights, labels)))

    # Built before the run folder exists: a start that fails on its weights leaves no folder behind.
    with strategy.scope():
        model = model_module.build_model(
            len(class_names), image_size=config.image_size, backbone=config.backbone, weights=config.weights,
            augment=config.augment, head_units=config.head_units, l2=config.l2, dropout=config.dropout,
            noise=config.noise, seed=config.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run_dir / BACKUP_DIR / "config.json", config.to_json())
    model_info: dict[str, Any] = {
        "class_names": class_names,
        "image_size": config.image_size,
        "input_mode": config.input_mode,  # evaluation, --predict and the app predict alike from it
        "positive_class": positive_class,
        "backbone": config.backbone,
        "weights": config.weights,
        "preprocessing": "caffe, inside the model; input is raw RGB 0..255 of any size",
        "confidence_threshold": CONFIDENCE_THRESHOLD,
        "created": datetime.now().astimezone().isoformat(timespec="seconds"),
        "config": {**config.to_json(), "precision_policy": policy, "devices": replicas, "machines": workers,
                   "global_batch_size": global_batch, "steps_per_epoch": steps_per_epoch},
        "counts": counts,
        **training_images_record(train_images),
    }
    if model_info["shortcut_warning"]:
        logger.warning("%s", model_info["shortcut_warning"])
    # Written now too, so the best model saved during training is usable even if the run never finishes.
    _write_json(run_dir / MODEL_JSON_FILE, model_info)
    logger.info("training %s on %d images (%s), validating on %d; %d step(s) per epoch on %d device(s)%s, %s",
                run_dir, len(train_images), ", ".join(f"{k} {v}" for k, v in counts[TRAIN].items()),
                len(validation_images), steps_per_epoch, replicas,
                f" of {workers} machines" if workers > 1 else "", policy)
    if not config.pretrained:
        logger.info("--weights none: the whole network trains from the first epoch with BatchNorm in training "
                    "mode, for all %d epochs (head + fine-tune) at learning rate %g", config.total_epochs,
                    config.learning_rate)

    history = _fit_phases(model, config, run_dir, strategy, (train_epochs, steps_per_epoch),
                          (validation_dataset.repeat(), validation_steps), class_weight, len(class_names),
                          positive_index, resume, verbose)

    finite = [row for row in history if math.isfinite(row.get("val_loss", math.nan))]
    model_info["best_epoch"] = dict(min(finite, key=lambda row: row["val_loss"])) if finite else None
    if not distributed.is_chief(strategy):
        return TrainResult(run_dir, model, model_info, history, None, chief=False)
    # In float32 (the app runs on machines without float16 kernels), and outside the strategy: on several
    # machines the distributed model's predict would wait for the stopped workers.
    model = model_module.float32_copy(model)
    if model_info["best_epoch"] is None:  # no epoch had a finite val_loss, so none was saved as the best
        save_model_atomically(model, run_dir / MODEL_FILE)
    _write_json(run_dir / BACKUP_DIR / TRAINED_FILE, {"model_info": model_info, "history": history})
    return TrainResult(run_dir, model, model_info, history, None)


def _finish_run(model: keras.Model | None, model_info: dict[str, Any], history: list[dict[str, Any]],
                run_dir: Path, data_dir: Path) -> TrainResult:
    """What a trained run owes once its best model is in model.h5 (``model``, or None to read it back): the
    curves, model.json, and with ``data_dir/test`` the threshold, evaluation and card. Removing the backup
    comes last: until then ``--resume`` comes back here (the backup's TRAINED_FILE), so a kill never leaves
    a run half-finished."""
    if model is None:
        import keras

        model = keras.models.load_model(run_dir / MODEL_FILE, compile=False)
    fine_tune_start = next((row["epoch"] for row in history if row.get("phase") == "fine_tune"), None)
    plot_training_curves(history, run_dir / CURVES_FILE, fine_tune_start)
    test_metrics = None
    if (data_dir / TEST).is_dir():  # the evaluation writes model.json's final content, with the test metrics
        from realvsai import evaluation

        test_metrics = evaluation.evaluate_run(model, model_info, data_dir, run_dir)
        model_info = json.loads((run_dir / MODEL_JSON_FILE).read_text(encoding="utf-8"))
    else:
        logger.info("%s has no %s folder: skipping the final evaluation", data_dir, TEST)
        _write_json(run_dir / MODEL_JSON_FILE, model_info)
    shutil.rmtree(run_dir / BACKUP_DIR, ignore_errors=True)
    return TrainResult(run_dir, model, model_info, history, test_metrics)


def _fit_phases(model: keras.Model, config: TrainConfig, run_dir: Path, strategy: Strategy,
                train: tuple[Callable[..., tf.data.Dataset], int], validation: tuple[tf.data.Dataset, int],
                class_weight: dict[int, float] | None, num_classes: int, positive_index: int | None,
                resume: bool, verbose: int | str) -> list[dict[str, Any]]:
    """Runs (or resumes) every phase; returns the history rows. ``train`` is (a function of ``first_epoch``
    giving the endless training batches from that epoch on, batches per epoch), ``validation`` (repeated
    dataset, batches per epoch). The model ends with its best weights."""
    import keras

    from realvsai import callbacks, distributed
    from realvsai.model import float32_copy, make_metrics, set_backbone_trainable

    if distributed.num_workers(strategy) > 1 and config.xla:
        logger.warning("--xla applies to model.fit on one machine; the training loop for several machines runs "
                       "without it")
    names = phase_names(config)
    # The last phase with a backup (later phases first), and that backup's commit.
    latest = distributed.chief_decides(strategy, lambda: next(
        ([name, found] for name in reversed(names) if (found := callbacks.read_backup(run_dir / BACKUP_DIR / name))),
        None)) if resume else None
    rows: list[dict[str, Any]] = []
    stop_rule = callbacks.StopTrainingOnValidationLoss(margin=config.stop_margin, patience=config.stop_patience)
    early_stopping = callbacks.ResumableEarlyStopping(monitor="val_loss", patience=config.early_stopping_patience)
    best_model = callbacks.BestModel(run_dir / MODEL_FILE,
                                     export=None if model.dtype_policy.name == "float32" else float32_copy)
    if latest is not None:
        state = latest[1]["state"]
        rows = state["rows"]  # committed together with the weights' epoch, so they match it
        stop_rule.restore(state["stop_rule"])
        early_stopping.restore(state["early_stopping"])
        best_model.resume(rows)
        logger.info("resuming %s after epoch %d (phase %s)", run_dir, latest[1]["epoch"], latest[0])
    callbacks.write_history_csv(run_dir / HISTORY_FILE, rows)
    recorder = callbacks.TrainingHistory(run_dir / HISTORY_FILE, rows)
    tensorboard = keras.callbacks.TensorBoard(log_dir=str(run_dir / LOGS_DIR), write_graph=False, profile_batch=0)

    # Phases before the backed-up one are finished; their weights live on in the later backup.
    for name in names[names.index(latest[0]):] if latest is not None else names:
        phase = plan_phase(config, name, sum(1 for row in recorder.rows if row["phase"] == "head"))
        start, end, restoring = phase.start, phase.end, latest is not None and latest[0] == name
        if restoring:
            start = latest[1]["epoch"]
            if latest[1]["state"]["phase_done"]:
                end = start  # the phase ended (maybe early) just before the kill: only restore it
        if config.pretrained:
            with strategy.scope():
                blocks = set_backbone_trainable(model, phase.train_backbone, config.fine_tune_blocks)
            if phase.train_backbone:
                logger.info("fine-tuning %d residual block(s) of the backbone from epoch %d at learning rate %g",
                            blocks, phase.start + 1, phase.learning_rate)
        recorder.phase = name

        def state_fn(phase_end: int = phase.end) -> dict[str, Any]:
            return {"rows": recorder.rows, "stop_rule": stop_rule.state(), "early_stopping": early_stopping.state(),
                    "phase_done": bool(model.stop_training) or recorder.rows[-1]["epoch"] >= phase_end}

        backup = callbacks.RunBackup(run_dir / BACKUP_DIR / name, state_fn, restore=restoring)
        # Order matters: a NaN loss ends the run before anything is saved, the stop rules decide, the
        # recorder writes the row, the backup commits, and only then is a new best model written.
        phase_callbacks = [callbacks.StopOnNonFiniteLoss(), distributed.EpochSeeds(strategy), stop_rule,
                           early_stopping, recorder, backup, best_model, tensorboard]
        with strategy.scope():
            optimizer = make_optimizer(phase.learning_rate, config.final_learning_rate_fraction,
                                       train[1] * (phase.end - phase.start),
                                       loss_scaling=model.dtype_policy.name == "mixed_float16")
        distributed.fit(model, train[0](first_epoch=start), validation[0], strategy=strategy, optimizer=optimizer,
                        metrics=functools.partial(make_metrics, num_classes, positive_index), epochs=end,
                        initial_epoch=start, steps_per_epoch=train[1], validation_steps=validation[1],
                        class_weight=class_weight, callbacks=phase_callbacks,
                        jit_compile=True if config.xla else "auto", verbose=verbose)
        latest = None
    return recorder.rows
