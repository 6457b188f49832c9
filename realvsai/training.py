"""Training a classifier on DATA/{train,validation}: one run, from its folder to its model card.

``train`` settles the run folder (``--resume`` continues it), trains (``fitting.fit_phases``), writes the
best epoch's model in float32, then finishes the run. Only the chief of a cluster writes. Outputs in
``OUT/NAME/``: model.h5 (best epoch, float32), model.json (with the decision threshold chosen on validation),
history.csv, training_curves.png, logs/, then the evaluation's files when DATA/test exists.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from realvsai.cli import format_table, plural, raise_if_ctrl_c
from realvsai.config import (
    BACKEND_KEY,
    BACKUP_DIR,
    CONFIDENCE_THRESHOLD,
    CURVES_FILE,
    DATA_DIGEST_KEY,
    HISTORY_FILE,
    MODEL_FILE,
    MODEL_JSON_FILE,
    POSITIVE_WORDS,
    RUN_CONFIG_FILE,
    TRAINED_FILE,
    TrainConfig,
    is_stopped_run,
    monitor_of,
    read_run_config,
    resolve_run_dir,
)
from realvsai.errors import UserError
from realvsai.files import read_json, refuse_unwritable, remove_temporaries, working_on, write_json
from realvsai.layout import TEST, TRAIN, VALIDATION

if TYPE_CHECKING:  # TensorFlow loads only when training starts, so the script's --help is instant
    import keras
    import tensorflow as tf

    from realvsai.data import LabelledImages
    from realvsai.distributed import Strategy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What ``train`` made; on a worker that is not the chief, ``run_dir`` is on the chief's machine."""

    run_dir: Path
    model: keras.Model
    model_info: dict[str, Any]
    history: list[dict[str, Any]]
    test_metrics: dict[str, Any] | None
    chief: bool = True


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``train`` once its run folder is chosen. ``resumable``: ``--resume`` continues the run in
    ``run_dir`` (its settings are saved; on a worker that is not the chief, the chief's run is assumed to be)."""

    def __init__(self, run_dir: Path, resumable: bool):
        super().__init__(f"training {run_dir} was interrupted")
        self.run_dir, self.resumable = run_dir, resumable


class RunWriteFailed(OSError):
    """A file-system error (a full disk, a read-only folder) during ``train`` once its run folder is chosen: the
    ``error``'s number, text and file, with ``run_dir`` and ``resumable`` as ``RunInterrupted`` has them."""

    def __init__(self, error: OSError, run_dir: Path, resumable: bool):
        super().__init__(error.errno, error.strerror, error.filename)
        self.run_dir, self.resumable = run_dir, resumable


def train(config: TrainConfig, *, resume: bool = False, data: Path | None = None, strategy: Strategy | None = None,
          verbose: int | str = "auto") -> TrainResult:
    """Trains a model as ``config`` says and writes the run folder; every worker of a cluster calls it, and
    the chief's ``config`` and ``resume`` count. ``resume`` continues with the run's saved settings, reading
    its data from ``data`` when given (the dataset moved), else from where the run started; either way it must
    hold the files the run started on. ``strategy`` None trains on every local device
    (``distributed.select_strategy``: MirroredStrategy over the GPUs on TensorFlow, DataParallel on JAX).

    Raises:
        UserError: for a bad dataset, a clash with an existing run, a resumed run's changed data, unusable
            weights or a stopped worker.
        RunInterrupted: for Ctrl-C once the run folder is chosen; RunWriteFailed for a file-system error then.
    """
    from realvsai import distributed, fitting
    from realvsai.data import split_folders

    config.validate()
    strategy = strategy or distributed.select_strategy({})
    chosen = distributed.chief_decides(strategy, lambda: [resolve_run_dir(config, resume, data)[0].to_json(), resume])
    config, resume = TrainConfig.from_json(chosen[0]), chosen[1]
    run_dir = Path(config.out) / config.name
    if resume:
        logger.info("resuming %s with the settings it was started with", run_dir)
    if not distributed.is_chief(strategy):
        logger.info("the chief writes the run folder %s (on its machine); this worker keeps no file", run_dir)
    # A second start of this --name (or a --resume of it) would train into the same folder, each run writing some of
    # its files: the chief claims it first (the folder itself is made only once the data is read). It claims its
    # data for reading, so that no merge, move or deletion changes it meanwhile (which --resume would refuse).
    claim = (working_on([run_dir], "ModelTraining.py", reading=split_folders(Path(config.data)))
             if distributed.is_chief(strategy) else contextlib.nullcontext())
    try:
        with claim, distributed.worker_folder(strategy, run_dir) as folder:
            if resume and distributed.is_chief(strategy):
                _remove_killed_writes(folder)
            trained = distributed.chief_decides(strategy, lambda: read_json(folder / BACKUP_DIR / TRAINED_FILE)
                                                ) if resume else None
            if resume and trained is None:  # before the data is read: on a full dataset, minutes
                distributed.chief_decides(strategy, lambda: fitting.refuse_lost_best_model(folder, config))
            if trained is None:
                result, held_out = _train(config, folder, strategy, resume, verbose)
            else:  # killed after training, before the run was finished
                logger.info("%s has finished training; writing what it had not written yet", run_dir)
                # Saved before the kill: a resume with --data finishes the run on the dataset's new place, and
                # model.json, the card and the closing line name that place, as a resume during training does.
                saved = trained["model_info"]
                model_info = {**saved, "config": {**saved["config"], "data": str(config.data)}}
                result = TrainResult(folder, None, model_info, trained["history"], None,
                                     chief=distributed.is_chief(strategy))
                held_out = {}  # scanned by finish, on the chief

            def finish() -> None:
                nonlocal result, held_out
                if trained is not None:  # its threshold and test metrics come from the data it trained on
                    train_images, validation_images, test_images, digest = _scan(config)
                    started = _recorded_start(folder)
                    _refuse_other_data(config, started, digest, train_images, validation_images)
                    # Where --data moved it: a --resume after another kill reads it there, as after an epoch's.
                    _save_settings(folder, config, digest, started["backend"])
                    held_out = _held_out(config, validation_images, test_images)
                result = _finish_run(result.model, result.model_info, result.history, folder, Path(config.data),
                                     config.batch_size, config.max_pixels, held_out)

            # The chief's; the other workers wait for it, and end with its UserError: one that left first would be
            # reported by the chief's TensorFlow as a crashed task ("stopped sending heartbeats").
            distributed.chief_decides(strategy, finish)
    except (KeyboardInterrupt, OSError) as stop:
        saved = not distributed.is_chief(strategy) or is_stopped_run(run_dir)
        if isinstance(stop, OSError):
            raise RunWriteFailed(stop, run_dir, resumable=saved) from stop
        raise RunInterrupted(run_dir, resumable=saved) from stop
    return dataclasses.replace(result, run_dir=run_dir)


def _train(config: TrainConfig, run_dir: Path, strategy: Strategy, resume: bool,
           verbose: int | str) -> tuple[TrainResult, dict[Path, LabelledImages]]:
    """``train``'s training, once the run folder is settled; ``run_dir`` is where this process writes. The
    chief's result holds the best model in float32, which is also in model.h5; beside it, the validation and test
    images as it scanned them (``_held_out``)."""
    import keras

    from realvsai import distributed, fitting
    from realvsai import model as model_module

    # A resumed run's epochs must go on as they began: on the same backend (another draws other random numbers
    # for the same seeds) and over the data of its first (a file added, removed or changed since, or a class,
    # would silently train on other data, or fail on the backup's weights). Older backups record neither.
    backend = keras.backend.backend()
    started = distributed.chief_decides(strategy, lambda: _recorded_start(run_dir)) if resume else None
    _refuse_other_backend(config, started, backend)
    # What the settings point at, before the data is read (minutes on a full dataset) and lines are logged about it
    model_module.check_weights_file(config.weights, config.backbone)
    refuse_unwritable(run_dir)
    policy = _set_up_keras(config, backend)
    train_images, validation_images, test_images, digest, images_record = _read_data(config, strategy)
    _refuse_other_data(config, started, digest, train_images, validation_images)
    class_names = train_images.class_names
    positive_class = _positive_class(class_names, config.positive_class)
    positive_index = class_names.index(positive_class) if positive_class else None
    replicas, workers = distributed.num_replicas(strategy), distributed.num_workers(strategy)
    global_batch = config.batch_size * replicas
    (train_epochs, steps_per_epoch), validation, class_weight = _batches(config, strategy, global_batch, train_images,
                                                                         validation_images, images_record)
    counts = {split: images.counts() for split, images in
              ((TRAIN, train_images), (VALIDATION, validation_images), (TEST, test_images)) if images is not None}

    # Built before the run folder exists: a start that fails on its weights leaves no folder behind.
    with distributed.scope(strategy):
        model = model_module.build_model(len(class_names), **config.model_options())
    run_dir.mkdir(parents=True, exist_ok=True)
    _save_settings(run_dir, config, digest, backend)
    # Listed once every setting proved usable and the run folder took them: never above the line refusing one.
    settings = [(key, str(value)) for key, value in sorted(config.to_json().items())]  # as given: --seed 12345
    logger.info("settings:\n%s", format_table(("setting", "value"), settings))
    model_info: dict[str, Any] = {
        "class_names": class_names,
        "image_size": config.image_size,
        "input_mode": config.input_mode,  # evaluation, --predict and the app predict alike from it
        "positive_class": positive_class,
        "backbone": config.backbone,
        "weights": config.weights,
        "preprocessing": "caffe (RGB to BGR, less the ImageNet channel means), inside the model; input is raw RGB "
                         "0..255 of any size",
        "confidence_threshold": CONFIDENCE_THRESHOLD,
        "created": (resume and _created(run_dir)) or datetime.now().astimezone().isoformat(timespec="seconds"),
        "config": {**config.to_json(), BACKEND_KEY: backend, "precision_policy": policy, "devices": replicas,
                   "machines": workers, "global_batch_size": global_batch, "steps_per_epoch": steps_per_epoch},
        "counts": counts,
        DATA_DIGEST_KEY: digest,  # of the train and validation files' paths, labels and sizes (data.data_digest)
        "versions": _versions(backend),
        **images_record,
    }
    if model_info["shortcut_warning"]:
        logger.warning("%s", model_info["shortcut_warning"])
    # Written now too, so the best model saved during training is usable even if the run never finishes.
    write_json(run_dir / MODEL_JSON_FILE, model_info)
    devices = (f"{plural(replicas, 'device')} of {workers} machines" if workers > 1  # the cluster's line named them
               else distributed.describe(strategy))
    logger.info("training %s on %s (%s), validating on %s; %s per epoch on %s, %s",
                run_dir, plural(len(train_images), "image"), ", ".join(f"{k} {v:,}" for k, v in counts[TRAIN].items()),
                f"{len(validation_images):,}", plural(steps_per_epoch, "step"), devices, policy)
    if not config.pretrained:
        logger.info("--weights none: the whole network trains from the first epoch with BatchNorm in training "
                    "mode, throughout its %s (head + fine-tune) at learning rate %g",
                    plural(config.total_epochs, "epoch"), config.learning_rate)

    history = fitting.fit_phases(model, config, run_dir, strategy, (train_epochs, steps_per_epoch), validation,
                                 class_weight, len(class_names), positive_index, resume, verbose)
    return _keep_best(model, model_info, history, run_dir, strategy), _held_out(config, validation_images, test_images)


def _refuse_other_backend(config: TrainConfig, started: dict[str, str | None] | None, backend: str) -> None:
    """A UserError where a resumed run (``started``: ``_recorded_start``'s) started on another Keras backend than
    ``backend``: another draws other random numbers for the same seeds. An older backup records none."""
    started_backend = started["backend"] if started else None
    if started_backend not in (None, backend):
        raise UserError(f"{Path(config.out) / config.name} started on {started_backend}; resume it with "
                        f"KERAS_BACKEND={started_backend}, or start a new --name.")


def _set_up_keras(config: TrainConfig, backend: str) -> str:
    """Sets the run's dtype policy (returned: ``TrainConfig.precision_policy`` for the local GPUs), its seed, and,
    on TensorFlow without a GPU, op determinism unless --xla."""
    import keras

    num_gpus = sum(device.startswith("gpu") for device in keras.distribution.list_devices())
    policy = config.precision_policy(num_gpus, backend)
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(config.seed)
    if backend == "tensorflow" and not num_gpus:  # not on a GPU, where determinism slows every step
        if config.xla:  # Keras turns XLA off for the whole process once op determinism is on
            logger.info("--xla: TensorFlow's op determinism stays off, so a resumed run comes close to the "
                        "uninterrupted one but may not repeat its numbers exactly")
        else:  # the same numbers on every run, so a resumed run repeats the uninterrupted one
            import tensorflow as tf

            tf.config.experimental.enable_op_determinism()
    return policy


def _read_data(config: TrainConfig, strategy: Strategy
               ) -> tuple[LabelledImages, LabelledImages, LabelledImages | None, str, dict[str, Any]]:
    """``_scan``'s train, validation and test images and data digest, and ``training_images_record``'s record of
    the training images; a UserError on every worker where the data is unusable, or differs between them."""
    from realvsai import distributed

    problem = None
    try:
        file_digests: dict[Path, str] = {}  # each file read once: the copies' count takes the identical-file check's
        train_images, validation_images, test_images, digest = _scan(config, file_digests)
        images_record = training_images_record(Path(config.data), train_images, file_digests)
    except UserError as error:  # raised after the check below, which stops the other workers too
        problem, digest = error, f"unreadable: {error}"
    try:
        distributed.check_same_on_every_worker(strategy, "training data", digest)
    except UserError as error:
        problem = problem or error
    if problem is not None:
        raise problem
    return train_images, validation_images, test_images, digest, images_record


def _positive_class(class_names: list[str], requested: str) -> str | None:
    """The class the binary metrics count as positive (``metrics.find_positive_class``); of two classes with none
    named like the generated one, the second, with a warning that says how to choose; None for more classes."""
    from realvsai import metrics

    positive_class = metrics.find_positive_class(class_names, requested)
    if len(class_names) == 2 and positive_class is None:
        positive_class = class_names[1]
        logger.warning("no class is named like the generated one (a word among %s); the binary metrics count %r "
                       "as positive. Set --positive-class to choose.", ", ".join(sorted(POSITIVE_WORDS)),
                       positive_class)
    return positive_class


def _batches(config: TrainConfig, strategy: Strategy, global_batch: int, train_images: LabelledImages,
             validation_images: LabelledImages, images_record: Mapping[str, Any]
             ) -> tuple[tuple[Callable[[int, bool], tf.data.Dataset], int], tuple[tf.data.Dataset, int],
                        dict[int, float] | None]:
    """``fitting.fit_phases``' ``train``, ``validation`` and ``class_weight`` for batches of ``global_batch``
    images: the training batches' function and steps per epoch, the endless validation batches and their steps,
    and the loss weight of each class (None without --class-weights), by which validation weighs its own mix.
    ``images_record``: ``training_images_record``'s, whose augmented copies the few-images warning leaves out."""
    import tensorflow as tf  # the tf.data input, which feeds model.fit on every backend

    from realvsai import data, distributed, metrics
    from realvsai.augmentation import augment_copies, build_augmentation

    steps_per_epoch, validation_steps, drop_short_batch = _epoch_steps(global_batch, strategy, train_images.counts(),
                                                                       len(validation_images))
    # Repeated, with the steps given to fit: ignore_errors() hides the datasets' length from Keras.
    # The preset's steps without an XLA kernel (the JPEG step) run here, on the CPU, not in the model.
    input_augmentation = build_augmentation(config.augment, seed=config.seed, part="input")
    crops = config.input_mode == "crops"
    reads_as_given = distributed.reads_datasets_as_given(strategy)

    def train_epochs(first_epoch: int, decode_ahead: bool) -> tf.data.Dataset:  # fitting.fit_phases' ``train``
        return data.make_dataset(
            train_images, batch_size=global_batch, image_size=config.image_size, shuffle=True, seed=config.seed,
            augment=functools.partial(augment_copies, input_augmentation) if input_augmentation else None,
            crops="random" if crops else None, first_epoch=first_epoch, drop_remainder=drop_short_batch,
            decode_ahead=decode_ahead and reads_as_given)
    train_counts = train_images.counts()
    validation_dataset = data.make_dataset(validation_images, batch_size=global_batch, image_size=config.image_size,
                                           crops="centre" if crops else None,
                                           drop_remainder=distributed.needs_full_batches(strategy))
    class_weight = metrics.balanced_class_weights(train_counts) if config.class_weights else None
    originals = (images_record.get("augmented_copies") or {}).get("originals")  # less the copies, as they repeat
    _warn_of_few_training_images(train_counts, class_weight, originals)
    if class_weight:
        logger.info("class weights: %s", ", ".join(f"{name} {class_weight[index]:.3f}"
                                                    for index, name in enumerate(train_images.class_names)))
        # Validation balanced by its own counts, as training is by its: the losses and cross-entropies (the best
        # epoch, the stop rule) compare, whatever each split's class mix (a download's own valid/ may differ).
        weights = tf.constant(list(metrics.balanced_class_weights(validation_images.counts()).values()), tf.float32)
        validation_dataset = validation_dataset.map(lambda images, labels: (images, labels, tf.gather(weights, labels)))
    return (train_epochs, steps_per_epoch), (validation_dataset.repeat(), validation_steps), class_weight


# The chance above which an epoch keeps its short last batch rather than leave a class's every image out of it.
CLASS_LEFT_OUT_RISK = 0.01


def _epoch_steps(global_batch: int, strategy: Strategy, train_counts: Mapping[str, int], num_validation: int
                 ) -> tuple[int, int, bool]:
    """(training steps per epoch, validation steps, whether each epoch leaves out its short last training batch)
    for training images of ``train_counts`` (per class) and ``num_validation`` images in batches of ``global_batch``,
    saying what each epoch leaves out. The short batch stays where leaving it out would leave out every image of a
    class in more than ``CLASS_LEFT_OUT_RISK`` of the epochs (a class of one image among 44, in batches of 32: 12
    in 44). A UserError where every batch must split evenly over the devices and the images do not fill one."""
    from realvsai import distributed

    num_train = sum(train_counts.values())
    replicas = distributed.num_replicas(strategy)
    full_batches = distributed.needs_full_batches(strategy)
    steps_per_epoch, drop_short_batch = distributed.training_steps(num_train, global_batch, strategy)
    left_out = num_train % global_batch if drop_short_batch else 0
    # The chance that an epoch's shuffle puts all k images of a class among the left_out it leaves out.
    risks = {name: math.prod((left_out - index) / (num_train - index) for index in range(count))
             for name, count in train_counts.items() if 0 < count <= left_out}
    if not full_batches and risks and max(risks.values()) > CLASS_LEFT_OUT_RISK:
        name = max(risks, key=risks.get)
        logger.info("each epoch keeps its short last batch of %s: %s has %s, which leaving it out would leave out "
                    "of %.0f%% of the epochs", plural(left_out, "training image"), name,
                    plural(train_counts[name], "training image"), 100 * risks[name])
        steps_per_epoch, drop_short_batch = steps_per_epoch + 1, False
    validation_steps = num_validation // global_batch if full_batches else math.ceil(num_validation / global_batch)
    if full_batches:
        if not steps_per_epoch or not validation_steps:
            raise UserError(f"{plural(num_train, 'training image')} and "
                            f"{plural(num_validation, 'validation image')} do not fill one batch of "
                            f"{global_batch} ({global_batch // replicas} on each of {plural(replicas, 'device')}). "
                            "Lower --batch-size, or add images.")
        logger.info("every batch splits evenly over the %s: each epoch leaves out the last %s (a different few "
                    "each epoch) and %s", plural(replicas, "device"),
                    plural(num_train % global_batch, "training image"),
                    plural(num_validation % global_batch, "validation image"))
    elif drop_short_batch and num_train % global_batch:
        logger.info("each epoch trains on %d full batches of %d and leaves out the last %s (a different few each "
                    "epoch): the train step is compiled for one batch shape", steps_per_epoch, global_batch,
                    plural(num_train % global_batch, "training image"))
    return steps_per_epoch, validation_steps, drop_short_batch


def _keep_best(model: keras.Model, model_info: dict[str, Any], history: list[dict[str, Any]], run_dir: Path,
               strategy: Strategy) -> TrainResult:
    """The trained run, its best epoch added to ``model_info``. On the chief, the model becomes a float32 copy
    (saved to model.h5 where no epoch was saved as the best), and the result is backed up (TRAINED_FILE) for a
    ``--resume`` after a kill before the run is finished."""
    from realvsai import distributed
    from realvsai import model as model_module
    from realvsai.callbacks import best_epoch_row, save_model_atomically

    best = best_epoch_row(history)
    model_info["best_epoch"] = dict(best) if best else None
    model_info["monitor"] = monitor_of(history)  # val_loss in a run begun before the cross-entropy was logged
    if not distributed.is_chief(strategy):
        return TrainResult(run_dir, model, model_info, history, None, chief=False)
    # Seconds to a minute before the evaluation's first line on a CPU: the copy, the curves, a compile.
    logger.info("training finished; preparing the model for its evaluation (a float32 copy)")
    # In float32 (the app runs on machines without float16 kernels), and outside the strategy: on several
    # machines the distributed model's predict would wait for the stopped workers.
    model = model_module.float32_copy(model)
    if model_info["best_epoch"] is None:  # no epoch had a finite validation loss, so none was saved as the best
        save_model_atomically(model, run_dir / MODEL_FILE)
    write_json(run_dir / BACKUP_DIR / TRAINED_FILE, {"model_info": model_info, "history": history})
    return TrainResult(run_dir, model, model_info, history, None)


def _scan(config: TrainConfig, file_digests: dict[Path, str] | None = None
          ) -> tuple[LabelledImages, LabelledImages, LabelledImages | None, str]:
    """The run's train, validation and test images (``data.scan_splits``; test None without the folder, and
    ``file_digests`` its files' sha256 where it read them), and the digest of its train and validation images
    (``data.data_digest``)."""
    from realvsai import data

    # Crops mode enlarges an image whose short side is below the crop: the pixel limit holds for that size. Resize
    # mode decodes a large JPEG reduced for the model's side: the limit counts those pixels (images.limit_scale).
    crop_size = config.image_size if config.input_mode == "crops" else None
    train_images, validation_images, test_images = data.scan_splits(
        config.data, crop_size, config.max_pixels, image_size=None if crop_size else config.image_size,
        digests=file_digests)
    return train_images, validation_images, test_images, data.data_digest(Path(config.data), train_images,
                                                                          validation_images)


def _held_out(config: TrainConfig, validation_images: LabelledImages,
              test_images: LabelledImages | None) -> dict[Path, LabelledImages]:
    """The run's validation and test images (``_scan``) by folder, as the final evaluation takes them
    (``evaluation.check_folders``) rather than scanning them again, which would repeat each warning of the scan."""
    data_dir = Path(config.data)
    return {data_dir / VALIDATION: validation_images,
            **({data_dir / TEST: test_images} if test_images is not None else {})}


def _warn_of_few_training_images(counts: Mapping[str, int], class_weight: dict[int, float] | None,
                                 originals: Mapping[str, int] | None = None) -> None:
    """Warns of each class with fewer than ``run.MIN_IMAGES_PER_KIND`` training images (``counts``: images per class,
    in class order; ``originals``: those less DataAugmentation.py's copies, which repeat their sources, where train
    holds some): a model learns little of a class from so few, and its loss weight (``class_weight``, None without
    --class-weights) makes each of them count for many."""
    from realvsai.run import MIN_IMAGES_PER_KIND

    for index, (name, count) in enumerate(counts.items()):
        original = count if originals is None else originals.get(name, count)
        if original < MIN_IMAGES_PER_KIND:
            weight = (f", and its loss weight of {class_weight[index]:.3f} makes each of them count for that many"
                      if class_weight is not None and class_weight[index] > 1 else "")
            with_copies = f" ({count:,} with augmented copies)" if count != original else ""
            logger.warning("%s has only %s%s: a model learns little of a class from so few%s. Add images of it (%d "
                           "or more) and split again.", name, plural(original, "training image"), with_copies, weight,
                           MIN_IMAGES_PER_KIND)


def _refuse_other_data(config: TrainConfig, started: dict[str, Any] | None, digest: str,
                       train_images: LabelledImages, validation_images: LabelledImages) -> None:
    """A UserError where a resumed run's data (``config.data``, of ``digest``, holding ``train_images`` and
    ``validation_images``) is not what it started on (``started``: ``_recorded_start``'s), saying whether that folder
    changed or ``--data`` names another. An older backup records no digest: there the images per class of train/
    and validation/ are compared with the counts its model.json records, which a merge or a deletion changes."""
    if started is None:
        return
    if started["digest"] is None:
        counts = started["counts"]
        if not counts or {TRAIN: train_images.counts(), VALIDATION: validation_images.counts()} == counts:
            return
    elif started["digest"] == digest:
        return
    if Path(started["data"]).resolve() == Path(config.data).resolve():
        raise UserError(f"{config.data} changed since the run started: its train/ and validation/ images are not "
                        "the ones the run was trained on (files or classes added, removed or changed); restore it "
                        "as it was, or start a new --name to train on it as it is now.")
    raise UserError(f"{config.data} does not hold the images the run started on in {started['data']}: its train/ and "
                    "validation/ images are others (files or classes added, removed or changed). Point --data at "
                    "that data, or start a new --name to train on this one.")


def training_images_record(data_dir: Path, train_images: LabelledImages,
                           file_digests: Mapping[Path, str] | None = None) -> dict[str, Any]:
    """model.json's record of ``train_images``: ``augmented_copies``, how many are augmented copies
    (DataAugmentation.py's ``aug_*`` files moved into train by MoveAugmentedImages.py: ``moving.MovedCopies``) and
    the settings they were made with (``DATA/augmented-settings.json``, None without one), None without copies;
    and ``image_stats.training_record``'s ``training_images`` (of every image: the model learns the copies too),
    ``shortcuts`` and ``shortcut_warning`` (of the originals, as the split judged them: a copy repeats its source's
    size and takes the format the augmentation gave it, which would hide a shortcut or make one). A UserError
    naming the file and key for a record of settings that DataAugmentation.py did not write
    (``moving.read_copy_settings``), so the model card never shows one. ``file_digests``: the sha256 of files read
    already (``data.scan_splits``), which are not read again."""
    from realvsai import image_stats
    from realvsai.moving import MOVED_SETTINGS_NAME, moved_copies, read_copy_settings

    moved = moved_copies(data_dir).among(train_images.files, file_digests, desc="counting augmented copies")
    originals = train_images.subset([index for index, path in enumerate(train_images.files) if path not in moved])
    count = len(train_images) - len(originals)
    copies = {"count": count, "originals": originals.counts(),  # per class: the images the copies repeat
              "settings": read_copy_settings(Path(data_dir) / MOVED_SETTINGS_NAME)} if count else None
    return {"augmented_copies": copies, **image_stats.training_record(train_images.facts(), originals.facts())}


def _remove_killed_writes(run_dir: Path) -> None:
    """Removes what a kill in the middle of writing one of the run's files left in ``run_dir``: the hidden
    temporary files of ``files.atomic_write`` (model.json, history.csv, the curves, the evaluation's files) and
    model.h5's temporary folder (``callbacks.remove_killed_saves``); nothing else."""
    from realvsai.callbacks import remove_killed_saves
    from realvsai.evaluation import RESULT_FILES

    remove_temporaries(run_dir, {MODEL_JSON_FILE, HISTORY_FILE, CURVES_FILE, *RESULT_FILES})
    remove_killed_saves(run_dir / MODEL_FILE)


def _created(run_dir: Path) -> str | None:
    """When the run in ``run_dir`` was created: the ``created`` of the model.json it wrote as it started, which a
    resumed run keeps (the card's date, the app's newest-first order); None without one."""
    info = read_json(run_dir / MODEL_JSON_FILE)
    return info.get("created") if isinstance(info, dict) and isinstance(info.get("created"), str) else None


def _recorded_start(run_dir: Path) -> dict[str, Any] | None:
    """What the run in ``run_dir`` started on: the ``digest`` of its data and its Keras ``backend`` (each None where
    its backup holds none), its ``data`` folder, and where no digest is recorded the ``counts`` of its train and
    validation images per class that its model.json records (None without them); None without a backup. A dict, as
    ``chief_decides`` sends it."""
    if not is_stopped_run(run_dir):
        return None
    config, digest, backend = read_run_config(run_dir)
    counts = None
    if digest is None:  # a backup of an older version
        try:
            info = read_json(run_dir / MODEL_JSON_FILE)
        except ValueError:  # damaged: nothing to compare with
            info = None
        recorded = info.get("counts") if isinstance(info, dict) else None
        if isinstance(recorded, dict) and all(isinstance(recorded.get(split), dict) for split in (TRAIN, VALIDATION)):
            counts = {split: recorded[split] for split in (TRAIN, VALIDATION)}
    return {"digest": digest, "backend": backend, "data": str(config.data), "counts": counts}


def _versions(backend: str) -> dict[str, str]:
    """The software a run was trained with, for model.json: the same seed on other versions may give other numbers.
    TensorFlow reads the images (tf.data) on every ``backend``."""
    import importlib
    import platform

    import keras
    import numpy as np

    return {"python": platform.python_version(), "keras": keras.__version__, "numpy": np.__version__,
            **{name: importlib.import_module(name).__version__ for name in dict.fromkeys(("tensorflow", backend))}}


def _save_settings(run_dir: Path, config: TrainConfig, digest: str, backend: str | None) -> None:
    """Saves what ``--resume`` continues the run in ``run_dir`` with (``read_run_config``): its settings, the
    ``digest`` of its data and the Keras ``backend`` it trains on (None where an older backup recorded none)."""
    write_json(run_dir / BACKUP_DIR / RUN_CONFIG_FILE, {**config.to_json(), DATA_DIGEST_KEY: digest,
                                                        BACKEND_KEY: backend})


def _finish_run(model: keras.Model | None, model_info: dict[str, Any], history: list[dict[str, Any]],
                run_dir: Path, data_dir: Path, batch_size: int, max_pixels: int,
                held_out: dict[Path, LabelledImages]) -> TrainResult:
    """What a trained run owes once its best model is in model.h5 (``model``, or None to read it back): the
    curves, model.json with the threshold and accuracy by kind of image chosen on validation, and with
    ``data_dir/test`` the evaluation and card (``evaluation.evaluate_run``, predicting ``batch_size`` images a step,
    reading the images under the run's ``max_pixels``, as ``held_out`` holds them: ``_held_out``). Removing the
    backup comes last: until then ``--resume`` comes back here (the backup's TRAINED_FILE), so a kill never leaves
    a run half-finished."""
    from realvsai import evaluation, plots, run

    raise_if_ctrl_c()  # one that did not stop training (caught on the way) stops the run before its evaluation
    if model is None:
        model = run.load_model(run_dir / MODEL_FILE)  # the one loader: it registers the project's layers first

    fine_tune_start = next((row["epoch"] for row in history if row.get("phase") == "fine_tune"), None)
    plots.plot_training_curves(history, run_dir / CURVES_FILE, fine_tune_start,
                               (model_info.get("best_epoch") or {}).get("epoch"))
    # The evaluation writes model.json's final content: the threshold and validation_by_kind, the test metrics
    # (None without a test folder).
    test_metrics = evaluation.evaluate_run(model, model_info, data_dir, run_dir, batch_size, max_pixels, held_out)
    model_info = read_json(run_dir / MODEL_JSON_FILE)
    # Finished in one step: a kill during the removal would leave part of the backup, which --resume cannot go on
    # from. The hidden folder left by such a kill only takes room (DataDeleter.py removes the run with it).
    removed = run_dir / f".{BACKUP_DIR}.finished"
    shutil.rmtree(removed, ignore_errors=True)
    if (run_dir / BACKUP_DIR).exists():
        os.replace(run_dir / BACKUP_DIR, removed)
    shutil.rmtree(removed, ignore_errors=True)
    return TrainResult(run_dir, model, model_info, history, test_metrics)
