"""Keras callbacks for a training run that can be killed at any moment and resumed.

They use only the public callback hooks, so the multi-worker loop drives them through
``keras.callbacks.CallbackList`` as ``Model.fit`` does; what a resumed run needs is in ``state()``.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras

from realvsai.cli import hide_noise, plural, progress, raise_if_ctrl_c
from realvsai.config import CROSS_ENTROPY, MONITOR, monitor_of
from realvsai.errors import UserError
from realvsai.files import atomic_write_text, human_bytes, naming, write_csv

logger = logging.getLogger(__name__)

BACKUP_COMMIT_FILE = "backup.json"  # names the last complete checkpoint: written last, atomically
WEIGHTS_SUFFIX = ".weights.h5"  # model.save_weights' format: model and optimizer variables
# Keras' HDF5 writers (model.save's and save_weights') hand each variable to np.array, whose __array__ takes no copy:
# NumPy 2 warns of Keras' line that this is deprecated, a notice in the terminal of a user with PYTHONWARNINGS=default
# that asks nothing of them (``cli.hide_noise``).
_KERAS_NOISE = ("ignore", re.compile(r"__array__ implementation doesn't accept a copy keyword", re.I),
                DeprecationWarning, re.compile(r"keras\."), 0)


def _save_folder_prefix(path: Path) -> str:
    """The start of the hidden temporary folder's name that ``save_model_atomically`` writes ``path`` in."""
    return f".{path.stem}."


def refuse_if_no_room(variables: Sequence[keras.Variable], path: Path) -> None:
    """An OSError (no space) when the disk of ``path`` cannot hold ``variables`` saved as HDF5: a write that fails
    part way crashes the process in libhdf5 as Keras' open file is closed (exit 139, at times without a word)."""
    def value_bytes(dtype: str) -> int:  # float32 4, bfloat16 2, int64 8, bool 1
        bits = re.search(r"\d+$", str(dtype))
        return int(bits.group()) // 8 if bits else 1

    # The values, and a twentieth and a megabyte more for HDF5's own records.
    values = sum(math.prod(variable.shape) * value_bytes(variable.dtype) for variable in variables)
    needed = values * 21 // 20 + (1 << 20)
    free = shutil.disk_usage(path.parent).free
    if free < needed:
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: saving it needs about {human_bytes(needed)}, "
                      f"{human_bytes(free)} free", str(path))


def save_model_atomically(model: keras.Model, path: Path) -> None:
    """Saves ``model`` as HDF5 (without optimizer) under a temporary name beside ``path``, then renames it.
    A kill in between leaves a hidden ``.<stem>.<random>.tmp`` folder, which ``remove_killed_saves`` removes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    refuse_if_no_room(model.weights, path)
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # HDF5 is the project's format: hide Keras' "legacy format" warning
    hide_noise(_KERAS_NOISE)
    try:
        with tempfile.TemporaryDirectory(prefix=_save_folder_prefix(path), suffix=".tmp", dir=path.parent) as folder:
            temporary = Path(folder) / path.name  # Keras picks the HDF5 writer from the ".h5" suffix
            with naming(path):  # h5py's error of a failed write names no file but in its text
                model.save(temporary, include_optimizer=False)
            os.replace(temporary, path)
    finally:
        absl_logger.setLevel(level)


def remove_killed_saves(path: Path) -> None:
    """Removes the temporary folders that kills during ``save_model_atomically(model, path)`` left beside
    ``path``: hidden ``.<stem>.<8 random characters>.tmp`` folders holding nothing but a file named like ``path``
    (a torn copy). Any other folder or file is left as it is."""
    path = Path(path)
    # tempfile names are prefix + 8 characters of "a-z0-9_" + suffix.
    name = re.compile(re.escape(_save_folder_prefix(path)) + r"[a-z0-9_]{8}\.tmp")
    for folder in path.parent.iterdir():
        if not name.fullmatch(folder.name) or folder.is_symlink() or not folder.is_dir():
            continue
        contents = list(folder.iterdir())
        if all(item.name == path.name and not item.is_symlink() and item.is_file() for item in contents):
            for item in contents:
                item.unlink()
            folder.rmdir()


class StopOnLostCtrlC(keras.callbacks.Callback):
    """Stops training (or a prediction) at the next batch after a Ctrl-C that did not stop it where it landed
    (``cli.raise_if_ctrl_c``: caught on the way), which would otherwise go on to its last epoch (or batch)."""

    async_safe = True  # on JAX Keras calls it in a thread: what it raises reaches fit at the next batch

    def on_train_batch_end(self, batch, logs=None):
        raise_if_ctrl_c()

    def on_test_batch_end(self, batch, logs=None):
        raise_if_ctrl_c()

    def on_predict_batch_end(self, batch, logs=None):
        raise_if_ctrl_c()


# What Keras' progress bar shows. Every metric (precision, recall, AUC, F1, cross-entropy, and validation's of each)
# made its line of an epoch about 390 characters: in a terminal of 120 columns it wrapped, and each step's redraw went
# back over its last row only, leaving the others behind. history.csv and the training curves keep them all. The
# cross-entropies, not Keras' loss and val_loss: they are what picks the best epoch (BestModel's line names
# config.MONITOR) and what the overfitting rule compares; the loss adds the head's L2 penalty.
BAR_METRICS = (CROSS_ENTROPY, "val_accuracy", MONITOR)


class ShortProgressBar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar of ``fit``, showing ``BAR_METRICS`` alone. Keras draws it in place of its own when it is
    among the callbacks; it draws nothing at verbose 0 (--quiet, and a worker other than the chief:
    ``distributed.fit_loop``). On JAX Keras draws it in a thread, as it draws its own: a step's loss is read there,
    not before the next step is sent to the device."""

    async_safe = True

    @staticmethod
    def _shown(logs: Mapping[str, Any] | None) -> dict[str, Any]:
        return {key: value for key, value in (logs or {}).items() if key in BAR_METRICS}

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, self._shown(logs))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, self._shown(logs))


class ValidationProgress(keras.callbacks.Callback):
    """A "validating" bar (``cli.progress``) over each epoch's ``steps`` validation batches: inside ``fit`` Keras'
    own bar stands still while the epoch validates (its ProgbarLogger skips those batches there), for minutes on
    a CPU with a large validation split. Only inside ``fit``, and not where Keras draws nothing (verbose 0:
    --quiet, a worker other than the chief). It is drawn over Keras' unfinished line of the epoch, as wide as the
    terminal, and wiped when validation ends: the lines logged at the epoch's end and Keras' closing line of the
    epoch start on a clean line."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps, self._in_fit, self._bar = steps, False, None

    def on_train_begin(self, logs=None):
        self._in_fit = bool((self.params or {}).get("verbose"))  # no params: a CallbackList made without them

    def on_train_end(self, logs=None):
        self._in_fit = False

    def on_test_begin(self, logs=None):
        if self._in_fit:
            self._bar = progress(None, total=self.steps, desc="validating", unit="batch")

    def on_test_batch_end(self, batch, logs=None):
        if self._bar is not None:
            self._bar.update()

    def on_test_end(self, logs=None):
        if self._bar is not None:
            self._bar.close()  # leave=False: the line is wiped
            self._bar = None


class PredictionProgress(keras.callbacks.Callback):
    """Counts each predicted batch's images on ``bar`` (a ``cli.progress`` bar of images): its rows whose index
    (which ``run.Predictor`` passes through beside each row) is not the padding's -1."""

    async_safe = True  # on JAX Keras calls it in a thread: reading a batch's indices does not hold up the next

    def __init__(self, bar: Any):
        super().__init__()
        self.bar = bar

    def on_predict_batch_end(self, batch, logs=None):
        _, indices = (logs or {})["outputs"]
        self.bar.update(int((keras.ops.convert_to_numpy(indices) >= 0).sum()))


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Ends training with a UserError once the training loss is NaN or infinite; put it before the callbacks that save.

    Not ``keras.callbacks.TerminateOnNaN``: by default it only sets ``stop_training``, so the epoch's end
    still runs (the diverged epoch would be recorded and backed up) and the run ends as if it were done;
    with ``raise_error=True`` it raises a bare RuntimeError, a traceback with no hint for the user.
    """

    # On JAX Keras calls on_train_batch_end in a thread, so reading the loss does not make each step wait for the
    # device; its UserError reaches fit at a later batch, and at the latest before the epoch's end.
    async_safe = True
    epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.on_epoch_end(self.epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss := float(keras.ops.convert_to_numpy(loss))):
            raise UserError(f"training loss became {'NaN' if math.isnan(loss) else 'infinite'} at epoch "
                            f"{epoch + 1}; lower --learning-rate or use --precision float32")


class _Resumable(keras.callbacks.Callback):
    """A stop rule whose counters survive a restart: ``restore(state())`` applies at the next ``on_train_begin``."""

    restored: Mapping[str, Any] = {}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.restored = dict(state)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for key, value in self.restored.items():
            setattr(self, key, value)
        self.restored = {}


class StopTrainingOnValidationLoss(_Resumable):
    """Stops a phase once the validation cross-entropy exceeds training's by ``margin`` without a new lowest of
    the phase (or is NaN) for ``patience`` epochs in a row: ``val_cross_entropy > cross_entropy + margin``
    (config.CROSS_ENTROPY: the losses without the L2 penalty, which would narrow the gap; ``monitor_of`` for a
    run begun before they were logged). The gap alone is no sign of overfitting: fine-tuning drives the training
    loss towards 0 while the validation loss still falls. ``margin`` and ``patience``: --stop-margin and
    --stop-patience (TrainConfig's defaults)."""

    def __init__(self, margin: float, patience: int, monitor: str = MONITOR):
        super().__init__()
        self.margin, self.patience, self.wait, self.best, self.stopped_epoch = margin, patience, 0, math.inf, None
        self.monitor = monitor

    def state(self) -> dict[str, Any]:
        return {"wait": self.wait, "best": None if math.isinf(self.best) else self.best}

    def on_train_begin(self, logs=None):
        self.wait, self.best, self.stopped_epoch = 0, math.inf, None  # patience counts per phase
        super().on_train_begin(logs)
        self.best = math.inf if self.best is None else self.best

    def on_epoch_end(self, epoch, logs=None):
        loss, val_loss = (logs or {}).get(self.monitor.removeprefix("val_")), (logs or {}).get(self.monitor)
        if loss is None or val_loss is None:
            return
        lower = val_loss < self.best  # False for NaN
        if lower:
            self.best = float(val_loss)
        overfits = not math.isfinite(val_loss) or (val_loss > loss + self.margin and not lower)
        self.wait = self.wait + 1 if overfits else 0
        if self.wait >= self.patience:
            self.stopped_epoch, self.model.stop_training = epoch, True
            logger.info("epoch %d: the validation cross-entropy exceeded training's by more than %s, and fell no "
                        "lower, for %s in a row; stopping", epoch + 1, self.margin, plural(self.wait, "epoch"))


class ResumableEarlyStopping(_Resumable, keras.callbacks.EarlyStopping):
    """``keras.callbacks.EarlyStopping`` (counting within each ``fit``) whose counters survive a restart; it
    watches the validation cross-entropy (config.MONITOR) unless told otherwise."""

    def __init__(self, monitor: str = MONITOR, mode: str = "min", **kwargs: Any):
        super().__init__(monitor=monitor, mode=mode, **kwargs)

    def state(self) -> dict[str, Any]:
        best = None if self.best is None or not math.isfinite(self.best) else float(self.best)
        return {"wait": int(self.wait), "best": best, "best_epoch": int(self.best_epoch)}


class StopBeforeDeadline(keras.callbacks.Callback):
    """Ends training after an epoch when the next one would end after ``deadline`` (a ``time.monotonic()``
    value); ``stopped`` tells whether it did. The next epoch is measured by this one with the first training and
    validation step each taking as long as the others: in a command's first epoch those compile the steps.
    ``seconds`` says where each epoch's time went: ``train`` (its steps), ``validation``, ``saves`` (the epoch-end
    work of the callbacks before it: the history, the backup, the best model) and ``total``. Runs after the run's
    backup (``fitting.fit_phases``' ``extra_callbacks``), so the phase is not backed up as done: a resumed run
    goes on. It ends one ``fit``, and never after the fit's last epoch: fit_phases then starts a later phase, if
    any, which it ends after that phase's first epoch."""

    def __init__(self, deadline: float = math.inf):
        super().__init__()
        self.deadline, self.stopped, self.seconds = deadline, False, []
        self._marks: dict[str, float] = {}  # when this epoch's parts began
        self._steps: dict[str, list] = {}  # per part: [steps begun, when the second began]

    def on_epoch_begin(self, epoch, logs=None):
        self._marks, self._steps = {"train": time.monotonic()}, {}

    def on_train_batch_begin(self, batch, logs=None):
        self._step_begins("train")

    def on_test_begin(self, logs=None):
        self._marks["validation"] = time.monotonic()

    def on_test_batch_begin(self, batch, logs=None):
        self._step_begins("validation")

    def on_test_end(self, logs=None):
        self._marks["saves"] = time.monotonic()

    def _step_begins(self, part: str) -> None:
        steps = self._steps.setdefault(part, [0, None])
        steps[0] += 1
        if steps[0] == 2:
            steps[1] = time.monotonic()

    def _without_first_step(self, part: str, began: float, ended: float) -> float:
        count, second = self._steps.get(part, (0, None))
        return (ended - second) * count / (count - 1) if second is not None else ended - began

    def on_epoch_end(self, epoch, logs=None):
        now = time.monotonic()
        began = self._marks["train"]
        validation, saves = self._marks.get("validation", now), self._marks.get("saves", now)
        self.seconds.append({part: round(seconds, 1) for part, seconds in (
            ("train", validation - began), ("validation", saves - validation), ("saves", now - saves),
            ("total", now - began))})
        next_epoch = (self._without_first_step("train", began, validation)
                      + self._without_first_step("validation", validation, saves) + now - saves)
        last = epoch + 1 >= (self.params or {}).get("epochs", math.inf)  # this fit ends here anyway: nothing is stopped
        if not last and now + next_epoch > self.deadline:
            self.stopped = self.model.stop_training = True
            logger.info("epoch %d: another epoch would end past the time limit; training stops here (a resumed run "
                        "goes on from this epoch)", epoch + 1)


class TrainingHistory(keras.callbacks.Callback):
    """One row per epoch (epoch from 1, ``phase``, learning rate, every log), recorded at the epoch's end; ``write``
    rewrites the whole CSV atomically, which ``RunBackup`` calls once the epoch's backup has committed (its
    ``on_commit``), so the file never holds the row of an epoch that a kill between the two would have a resumed run
    train again.

    Not ``keras.callbacks.CSVLogger``: it appends, so after a kill the row of an epoch whose backup never
    completed would stay in the file, and the resumed run would write that epoch a second time.
    """

    def __init__(self, path: Path, rows: Sequence[Mapping[str, Any]] = ()):
        super().__init__()
        self.path, self.rows, self.phase = Path(path), [dict(row) for row in rows], ""

    def on_epoch_end(self, epoch, logs=None):
        row: dict[str, Any] = {"epoch": epoch + 1, "phase": self.phase}
        if getattr(self.model, "optimizer", None) is not None:
            # float() reads a schedule's tensor and a constant rate's variable alike; convert_to_numpy's np.array
            # hands the variable's __array__ a copy keyword it does not take (deprecated in NumPy 2).
            row["learning_rate"] = float(self.model.optimizer.learning_rate)
        self.rows.append({**row, **{key: float(value) for key, value in (logs or {}).items()}})

    def write(self) -> None:
        write_history_csv(self.path, self.rows)


def write_history_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Writes the rows (columns in first-seen order) atomically; no rows, no file."""
    if not rows:
        Path(path).unlink(missing_ok=True)  # a row of an epoch whose backup never completed
        return
    columns = list(dict.fromkeys(key for row in rows for key in row))
    write_csv(Path(path), columns, [[row.get(column, "") for column in columns] for row in rows])


def read_backup(folder: Path) -> dict[str, Any] | None:
    """``RunBackup``'s last commit in ``folder`` (``epoch``, ``checkpoint``, ``state``), or None; a UserError
    when the commit file is damaged."""
    commit = Path(folder) / BACKUP_COMMIT_FILE
    if not commit.is_file():
        return None
    try:
        found = json.loads(commit.read_text(encoding="utf-8"))
    except ValueError:
        found = None
    if not isinstance(found, dict) or not isinstance(found.get("epoch"), int):
        raise UserError(f"{commit} is not a backup this program wrote. Delete {folder} to start the training afresh.")
    return found


class RunBackup(keras.callbacks.Callback):
    """Backs up every model and optimizer variable after each epoch; restores them when ``restore`` is True.

    ``model.save_weights`` writes ``epoch-<n>.weights.h5`` (any backend), then ``backup.json`` (epoch,
    weights file, ``state_fn()``) is replaced atomically: the commit point; older weight files go after
    it. Keras' ``BackupAndRestore`` does not do here: it deletes its backup when ``fit`` ends (a run has a
    ``fit`` per phase, and one killed between phases would start over), and it carries none of the run's
    own state (history rows, stop rules), which must be committed with the weights of the same epoch.

    ``on_commit`` runs once an epoch's backup has committed: what must never show an epoch ahead of the backup
    (``TrainingHistory.write``).
    """

    def __init__(self, folder: Path, state_fn: Callable[[], Any] = dict, restore: bool = False,
                 on_commit: Callable[[], None] = lambda: None):
        super().__init__()
        self.folder, self.state_fn, self.restore, self.on_commit = Path(folder), state_fn, restore, on_commit

    def _build_optimizer(self) -> None:
        # model.fit builds it at the first step; its variables (Adam's moments, the step count) are backed up.
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)

    def on_train_begin(self, logs=None):
        found = read_backup(self.folder) if self.restore else None
        if found is None:
            return
        self._build_optimizer()
        try:
            self.model.load_weights(self.folder / found["checkpoint"])
        except (ValueError, OSError, KeyError) as error:
            raise UserError(f"the backup in {self.folder} does not fit this model ({type(error).__name__}: "
                            f"{str(error).splitlines()[0] if str(error) else ''}). Delete that folder to start the "
                            "training afresh.") from None

    def on_epoch_end(self, epoch, logs=None):
        self._build_optimizer()
        name = f"epoch-{epoch + 1}{WEIGHTS_SUFFIX}"
        self.folder.mkdir(parents=True, exist_ok=True)
        refuse_if_no_room([*self.model.weights, *self.model.optimizer.variables], self.folder / name)
        hide_noise(_KERAS_NOISE)
        with naming(self.folder / name):  # h5py's error of a failed write names no file but in its text
            self.model.save_weights(self.folder / name)  # not yet named by the commit: a torn write is never read
        atomic_write_text(self.folder / BACKUP_COMMIT_FILE, json.dumps(
            {"epoch": epoch + 1, "checkpoint": name, "state": self.state_fn()}, indent=1))
        for old in self.folder.glob(f"*{WEIGHTS_SUFFIX}"):
            if old.name != name:
                old.unlink(missing_ok=True)
        self.on_commit()


def best_epoch_row(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The history row of the run's best epoch: the lowest finite ``monitor_of(rows)``; None when no epoch has
    one."""
    monitor = monitor_of(rows)
    finite = [row for row in rows if math.isfinite(row.get(monitor, math.nan))]
    return min(finite, key=lambda row: row[monitor]) if finite else None


class BestModel(keras.callbacks.Callback):
    """The epoch with the lowest validation cross-entropy of the whole run (``best_epoch_row``) in ``filepath``;
    each phase ends with its weights.

    Written once per improvement, as ``export(model)`` (the float32 copy), atomically: ``ModelCheckpoint``
    writes the training model in place, so a kill mid-write would leave no usable best model. The export is
    made once a fit (a phase's layers may train otherwise) and takes each improvement's weights: building
    ResNet101's copy took 1.9 s, setting its weights 0.15 s. The best weights are also kept in memory, to end
    the phase with; the file is read back only after a restart. Put it after ``RunBackup``, so the file never
    holds an epoch a resumed run does not know of.
    """

    def __init__(self, filepath: Path, export: Callable[[keras.Model], keras.Model] | None = None,
                 monitor: str = MONITOR):
        super().__init__()
        self.filepath, self.export, self.monitor = Path(filepath), export, monitor
        self.best, self.best_epoch, self.last_epoch = math.inf, None, None
        self.best_weights: list | None = None
        self._save_on_begin = False
        self._exported: keras.Model | None = None  # this fit's export, made at its first save

    def resume(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if best := best_epoch_row(rows):
            self.best, self.best_epoch, self.last_epoch = best[self.monitor], best["epoch"] - 1, rows[-1]["epoch"] - 1
            # Killed between the restored epoch's backup and this save: save it once the backup restored it.
            self._save_on_begin = self.best_epoch == self.last_epoch

    def _save(self) -> None:
        self.best_weights = self.model.get_weights()
        if self.export is None:
            save_model_atomically(self.model, self.filepath)
            return
        if self._exported is None:
            self._exported = self.export(self.model)
        else:
            self._exported.set_weights(self.best_weights)
        save_model_atomically(self._exported, self.filepath)

    def on_train_begin(self, logs=None):
        self._exported = None
        if self._save_on_begin:  # the backup's on_train_begin has just restored the best epoch
            self._save_on_begin = False
            self._save()

    def on_epoch_end(self, epoch, logs=None):
        self.last_epoch, value = epoch, (logs or {}).get(self.monitor, math.nan)
        if value < self.best:  # False for NaN: a diverged epoch is never "best"
            self.best, self.best_epoch = float(value), epoch
            self._save()
            logger.info("epoch %d: %s %.4f is the best so far; saved to %s", epoch + 1, self.monitor, value,
                        self.filepath)

    def on_train_end(self, logs=None):
        if self.best_epoch is None or self.best_epoch == self.last_epoch:
            return
        if self.best_weights is None:  # the best epoch came before a restart: only its file holds it
            if not self.filepath.is_file():
                return
            # Copied by position from the saved model: a by-name HDF5 load would pair weights wrongly when
            # the backbone's trainability differs from when the file was saved.
            self.best_weights = keras.models.load_model(self.filepath, compile=False).get_weights()
        self.model.set_weights(self.best_weights)
        self.last_epoch = self.best_epoch
        logger.info("restored the weights of epoch %d (%s %.4f)", self.best_epoch + 1, self.monitor, self.best)
