"""Keras callbacks for a training run that can be killed at any moment and resumed.

- ``StopTrainingOnValidationLoss``: the stop rule the project's users know, made sound. It keeps
  the model of the epoch with the lowest validation loss (saved atomically to HDF5) and stops a
  phase once validation loss exceeds training loss by more than a margin for several epochs.
- ``StopOnNonFiniteLoss``: ends a diverged run with a one-line ``UserError`` (Keras'
  ``TerminateOnNaN`` stops it silently).
- ``ResumableEarlyStopping``: ``keras.callbacks.EarlyStopping`` whose counters survive a restart.
- ``TrainingHistory``: one row per epoch (with its phase and learning rate) in ``history.csv``.
- ``RunBackup``: ``keras.callbacks.BackupAndRestore`` whose files are replaced atomically and whose
  metadata also carries the run's own state (history rows, the counters above).

They use only the public callback hooks (``on_train_begin``, ``on_epoch_end``, ``on_train_end``,
``self.model``, ``model.stop_training``), so a custom training loop can drive them through
``keras.callbacks.CallbackList`` as ``Model.fit`` does.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras

from realvsai.errors import UserError
from realvsai.files import atomic_write_text

logger = logging.getLogger(__name__)


def save_model_atomically(model: keras.Model, path: Path) -> None:
    """Saves ``model`` as legacy HDF5 in a temporary folder beside ``path``, then renames it into place.

    A kill during the save leaves at most a hidden temporary folder; ``path`` is always a complete
    model, with the mode of every other output (0666 minus the umask). The optimizer is left out: the
    file is for inference and fine-tuning restarts its optimizer anyway.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # HDF5 is the project's format: hide Keras' "legacy format" warning
    try:
        # h5py creates the file itself (so with the umask's mode, not mkstemp's 0600), and Keras picks
        # the legacy HDF5 writer from the ".h5" suffix, which the temporary name keeps.
        with tempfile.TemporaryDirectory(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent) as folder:
            temporary = Path(folder) / path.name
            model.save(temporary, include_optimizer=False)
            os.replace(temporary, path)
    finally:
        absl_logger.setLevel(level)


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Ends training with a UserError as soon as the training loss is NaN or infinite.

    A diverged run only gets worse, and a NaN loss is never "worse" to the stop rules (every
    comparison with NaN is False), so it would otherwise train on to the end with NaN weights.
    Put it first, so that no other callback saves or backs up the diverged epoch.
    """

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._check((logs or {}).get("loss"))

    def on_epoch_end(self, epoch, logs=None):
        self._check((logs or {}).get("loss"))

    def _check(self, loss: Any) -> None:
        if loss is None:
            return
        loss = float(keras.ops.convert_to_numpy(loss))
        if not math.isfinite(loss):
            raise UserError(f"training loss became {'NaN' if math.isnan(loss) else 'infinite'} at epoch "
                            f"{self.epoch + 1}; lower --learning-rate or use --precision float32")


class StopTrainingOnValidationLoss(keras.callbacks.Callback):
    """Keeps the best model by validation loss and stops a phase when validation loss runs away.

    After every epoch: when ``val_loss`` is the lowest so far (over the whole run, both phases),
    its weights are kept in memory and the model is saved to ``filepath`` (atomically) at the next
    ``on_epoch_begin`` or ``on_train_end``, that is after the backup of that epoch has committed:
    the file never holds an epoch that a resumed run does not know of. A run killed after that
    commit but before the file was written writes it on resume, from the restored weights. When
    ``val_loss > loss + margin`` (or ``val_loss`` is NaN) for ``patience`` epochs in a row, training
    stops. At the end of each ``fit`` the best weights are put back into the model, so fine-tuning
    starts from the best head and the run ends with its best model.

    ``loss`` and ``val_loss`` must be measured alike: with class weights, give the validation data
    the same weights as sample weights (``realvsai.training`` does), or ``loss`` is a class-weighted
    mean and ``val_loss`` a plain one, and the margin compares two different things.

    Args:
        filepath: where the best model is saved (``.h5``).
        margin: how far (absolute, in loss units) validation loss may exceed training loss before
            an epoch counts as overfitting. Training loss is measured with dropout, noise and
            augmentation on, so a small gap is normal.
        patience: consecutive overfitting epochs that stop the phase.
        restore_best_weights: put the best weights back at the end of each ``fit``.
        export: makes the model to save from the trained one, e.g. ``model.float32_copy`` under mixed
            precision, so the file is the same kind of model whenever the run stops; None saves it as is.
    """

    def __init__(self, filepath: Path, margin: float = 0.1, patience: int = 3, restore_best_weights: bool = True,
                 export: Callable[[keras.Model], keras.Model] | None = None):
        super().__init__()
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        self.filepath = Path(filepath)
        self.margin = margin
        self.patience = patience
        self.restore_best_weights = restore_best_weights
        self.export = export
        self.best_val_loss: float = math.inf
        self.best_epoch: int | None = None
        self.best_logs: dict[str, float] = {}
        self.wait = 0
        self.stopped_epoch: int | None = None
        self._best_weights: list | None = None
        self._last_epoch: int | None = None  # the epoch whose weights the model holds
        self._unsaved = False  # the best epoch is not in filepath yet
        self._resumed = False  # restored, and no epoch has run since
        self._pending_state: dict[str, Any] | None = None
        self._warned = False

    def state(self) -> dict[str, Any]:
        """What a resumed run needs to go on as if never stopped (JSON-ready)."""
        return {"best_val_loss": _finite_or_none(self.best_val_loss), "best_epoch": self.best_epoch,
                "best_logs": self.best_logs, "wait": self.wait, "last_epoch": self._last_epoch}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Takes the state of a killed run; it applies at the next ``on_train_begin``.

        The best weights themselves are read back from ``filepath`` when they are needed.
        """
        self._pending_state = dict(state)

    def on_train_begin(self, logs=None):
        self.wait, self.stopped_epoch = 0, None  # patience counts within a phase
        if self._pending_state is not None:
            state, self._pending_state = self._pending_state, None
            best = state.get("best_val_loss")
            self.best_val_loss = math.inf if best is None else float(best)
            self.best_epoch = state.get("best_epoch")
            self.best_logs = dict(state.get("best_logs") or {})
            self.wait = int(state.get("wait", 0))
            self._best_weights, self._unsaved = None, False
            self._last_epoch = state.get("last_epoch")  # the epoch whose weights the backup restores
            self._resumed = True  # the weights arrive later: BackupAndRestore restores them in its on_train_begin

    def _save_best(self, model_holds_last_epoch: bool = True) -> None:
        """Writes the best model to ``filepath`` unless it is there already."""
        if self._resumed:
            self._resumed = False
            if model_holds_last_epoch and self.best_epoch is not None and self.best_epoch == self._last_epoch:
                # The backup restored the best epoch's weights; perhaps the kill came before they were
                # written. Writing them again is harmless.
                self._best_weights, self._unsaved = self.model.get_weights(), True
        if not self._unsaved:
            return
        current = None
        if not (model_holds_last_epoch and self._last_epoch == self.best_epoch):
            current = self.model.get_weights()
            self.model.set_weights(self._best_weights)
        try:
            save_model_atomically(self.export(self.model) if self.export else self.model, self.filepath)
        finally:
            if current is not None:
                self.model.set_weights(current)
        self._unsaved = False
        if not self.restore_best_weights:
            self._best_weights = None
        logger.info("saved epoch %d (val_loss %.4f) to %s", self.best_epoch + 1, self.best_val_loss, self.filepath)

    def on_epoch_begin(self, epoch, logs=None):
        self._save_best()  # the last epoch's backup has committed, and the model still holds its weights

    def on_epoch_end(self, epoch, logs=None):
        self._save_best(model_holds_last_epoch=False)  # a no-op after on_epoch_begin, as in fit
        logs = logs or {}
        loss, val_loss = logs.get("loss"), logs.get("val_loss")
        self._last_epoch = epoch
        if loss is None or val_loss is None:
            if not self._warned:
                logger.warning("StopTrainingOnValidationLoss needs 'loss' and 'val_loss' in the logs; "
                               "is there validation data?")
                self._warned = True
            return
        if val_loss < self.best_val_loss:  # False for NaN: a diverged epoch is never "best"
            self.best_val_loss, self.best_epoch = float(val_loss), epoch
            self.best_logs = {key: float(value) for key, value in logs.items()}
            self._best_weights, self._unsaved = self.model.get_weights(), True  # saved after its backup
            logger.info("epoch %d: val_loss %.4f is the best so far", epoch + 1, val_loss)
        if not math.isfinite(val_loss) or val_loss > loss + self.margin:
            self.wait += 1
            if self.wait >= self.patience:
                self.stopped_epoch = epoch
                self.model.stop_training = True
                logger.info("epoch %d: val_loss exceeded loss by more than %s for %d epochs in a row; stopping",
                            epoch + 1, self.margin, self.wait)
        else:
            self.wait = 0

    def on_train_end(self, logs=None):
        self._save_best()
        if not self.restore_best_weights or self.best_epoch is None or self._last_epoch == self.best_epoch:
            return
        if self._best_weights is None:
            if not self.filepath.is_file():
                logger.warning("the best model %s is missing; keeping the last weights", self.filepath)
                return
            # A resumed run: the best weights are on disk. They are copied by position from a fresh
            # model, because loading HDF5 weights by trainable status would pair them wrongly when
            # the backbone's trainability differs from when the file was saved.
            self._best_weights = keras.models.load_model(self.filepath, compile=False).get_weights()
        self.model.set_weights(self._best_weights)
        self._last_epoch = self.best_epoch
        logger.info("restored the weights of epoch %d (val_loss %.4f)", self.best_epoch + 1, self.best_val_loss)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """``keras.callbacks.EarlyStopping`` (counting within each ``fit``) whose counters survive a restart."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._pending_state: dict[str, Any] | None = None

    def state(self) -> dict[str, Any]:
        """The counters a resumed run needs (JSON-ready)."""
        best = None if self.best is None else _finite_or_none(float(self.best))
        return {"wait": int(self.wait), "best": best, "best_epoch": int(self.best_epoch)}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Takes the state of a killed run; it applies at the next ``on_train_begin``."""
        self._pending_state = dict(state)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._pending_state is not None:
            state, self._pending_state = self._pending_state, None
            self.wait, self.best, self.best_epoch = int(state["wait"]), state["best"], int(state["best_epoch"])


class TrainingHistory(keras.callbacks.Callback):
    """Collects one row per epoch (epoch number from 1, phase, learning rate, every log) into a CSV file.

    The whole file is rewritten atomically each epoch, so it is never half a row. Call
    ``begin_phase`` before each phase's ``fit``.
    """

    def __init__(self, path: Path, rows: Sequence[Mapping[str, Any]] = ()):
        super().__init__()
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = [dict(row) for row in rows]
        self.phase = ""

    def begin_phase(self, phase: str) -> None:
        self.phase = phase

    def on_epoch_end(self, epoch, logs=None):
        row: dict[str, Any] = {"epoch": epoch + 1, "phase": self.phase}
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None:
            row["learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        row.update({key: float(value) for key, value in (logs or {}).items()})
        self.rows.append(row)
        write_history_csv(self.path, self.rows)


def write_history_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Writes the rows (columns in first-seen order) atomically; no rows, no file."""
    if not rows:
        Path(path).unlink(missing_ok=True)  # a row of an epoch whose backup never completed
        return
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def read_history_csv(path: Path) -> list[dict[str, Any]]:
    """The rows of ``history.csv`` (numbers as float, ``epoch`` as int, empty cells left out)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as stream:
        for row in csv.DictReader(stream):
            parsed: dict[str, Any] = {}
            for key, value in row.items():
                if value in ("", None):
                    continue
                parsed[key] = value if key == "phase" else int(value) if key == "epoch" else float(value)
            rows.append(parsed)
    return rows


class RunBackup(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` that can be killed at any moment, and that carries the run's own state.

    Keras writes the backup weights in place, so a kill during that write would leave a torn file
    and no way to resume. Here both files are written under temporary names and renamed into
    place: the weights first, then the metadata (the commit point). A kill between the two renames
    leaves the previous epoch's metadata with this epoch's weights, so at worst that epoch is
    trained once more. The metadata also holds ``state_fn()``, read back by ``read_backup``.

    Args:
        backup_dir: a folder used by this callback alone (one per training phase).
        state_fn: returns a JSON-ready dict saved with every backup.
    """

    def __init__(self, backup_dir: Path, state_fn: Callable[[], Mapping[str, Any]]):
        super().__init__(str(backup_dir), save_freq="epoch", double_checkpoint=False, delete_checkpoint=False)
        self.state_fn = state_fn

    def _save_model(self):
        # Overrides BackupAndRestore's in-place write (a private hook; tests/test_callbacks.py pins it).
        folder = Path(self.backup_dir)
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / ".latest.tmp.weights.h5"  # save_weights requires the .weights.h5 suffix
        self.model.save_weights(str(temporary), overwrite=True)
        os.replace(temporary, self._weights_path)
        metadata = {"epoch": self._current_epoch, "batch": self._last_batch_seen, "state": dict(self.state_fn())}
        atomic_write_text(Path(self._training_metadata_path), json.dumps(metadata, indent=1))

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        # BackupAndRestore sets the model's initial epoch for the fit it restores and Keras never
        # clears it, so the next phase's fit would start from this phase's epoch.
        self.model._initial_epoch = None


def read_backup(backup_dir: Path) -> dict[str, Any] | None:
    """The metadata of ``RunBackup``'s last complete backup in ``backup_dir``, or None when there is none.

    ``"epoch"`` is the number of epochs finished (so the next epoch's index); ``"state"`` is what
    ``state_fn`` returned then.
    """
    path = Path(backup_dir) / "training_metadata.json"
    if not path.is_file() or not (Path(backup_dir) / "latest.weights.h5").is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
