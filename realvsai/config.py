"""Names, choices and defaults that the scripts, training, evaluation and the app share, each defined once."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from realvsai.errors import UserError
from realvsai.files import MAX_NAME_BYTES, claimed_by, is_inside, numbered, temporary_of

# A split's files beside its train/ validation/ test/ (splitting).
MANIFEST_NAME = "manifest.csv"  # one row per file the split placed
CHECKS_NAME = ".checks.json"  # each file's check, by source (a re-run of that split and a merge read it), and the
# settings the split was made with (a re-run refused as another split names them)


def is_split_checks(name: str, names_beside: Container[str]) -> bool:
    """Whether a file ``name`` among ``names_beside`` is a split's record of checks (beside its manifest.csv):
    neither zipped nor split nor listed as left out, since only a re-run of that split reads it."""
    return name == CHECKS_NAME and MANIFEST_NAME in names_beside

# A training run's files, in OUT/NAME/.
MODEL_FILE = "model.h5"  # the best epoch, float32, HDF5
MODEL_JSON_FILE = "model.json"  # class names, image size, decision rule, config, test metrics
METRICS_FILE = "metrics.json"
REPORT_FILE = "classification_report.txt"
MODEL_CARD_FILE = "MODEL_CARD.md"
EVALUATION_CARD_FILE = "EVALUATION.md"  # --evaluate's card for a folder other than the run's test split
PREDICTIONS_FILE = "predictions.csv"  # one row per image: --predict and --evaluate
UNREADABLE_FILE = "unreadable.csv"  # --predict's and --evaluate's files left out, with the reason
ROBUSTNESS_PLOT_FILE = "robustness.png"  # --evaluate --robustness: accuracy against perturbation strength
HISTORY_FILE = "history.csv"
# What picks the best epoch and ends a phase (early stopping, the overfitting rule): the cross-entropy, weighted as
# the loss is, without the head's L2 penalty. Keras' loss adds the penalty, which falls as the weights shrink
# whatever the model's answers do, and can outweigh a good model's cross-entropy.
CROSS_ENTROPY = "cross_entropy"
MONITOR = f"val_{CROSS_ENTROPY}"
CURVES_FILE = "training_curves.png"
LOGS_DIR = "logs"  # TensorBoard
BACKUP_DIR = "backup"  # resume state; removed last, when everything else is written: the run is then finished
# In BACKUP_DIR, written first: the run's settings (TrainConfig.to_json), DATA_DIGEST_KEY and BACKEND_KEY.
RUN_CONFIG_FILE = "config.json"
DATA_DIGEST_KEY = "data_digest"  # data.data_digest of the train and validation images the run started on
# The Keras backend the run started on ("tensorflow", "jax"), also in model.json's config: another backend draws
# other random numbers for the same seeds, so a resumed run must go on with the one it started on.
BACKEND_KEY = "backend"
TRAINED_FILE = "trained.json"  # in BACKUP_DIR: training is over (the history and model.json's content)
# The files that make a folder a training run's: its settings from the start, model.h5 from the first epoch on.
RUN_MARKS = (MODEL_FILE, MODEL_JSON_FILE, f"{BACKUP_DIR}/{RUN_CONFIG_FILE}")


def run_mark(folder: Path) -> str | None:
    """The first of ``RUN_MARKS`` that ``folder`` holds (it is a training run's folder), or None."""
    return next((mark for mark in RUN_MARKS if (Path(folder) / mark).is_file()), None)


BACKBONES = ("resnet50", "resnet101", "resnet152")
# "detector" keeps the pixel-level traces that tell generated images apart (whole-pixel shifts,
# flips, rare mild blur/JPEG); "classic" (ImageDataGenerator's rotations, shears, zooms)
# resamples every image and smooths those traces away; "none" trains on the images as they are.
PRESETS = ("classic", "detector", "none")
INPUT_MODES = ("resize", "crops")  # whole image resized, or native-resolution crops (3x3 grid at prediction)
CROP_GRID = 3  # crops mode predicts from CROP_GRID x CROP_GRID crops, evenly spaced, softmax averaged
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")

# Up to this many classes a summary, the model card and the app name each (a count, a column, a bar each); with
# more, the most frequent answers and the most probable classes, the rest in metrics.json and predictions.csv.
FEW_CLASSES = 5
MIN_IMAGE_SIZE = 32  # the smallest side keras.applications' ResNets accept (five stride-2 stages)
CONFIDENCE_THRESHOLD = 0.6  # the app's "Uncertain" rule, recorded in model.json
# Larger images are refused before a pixel is decoded (a guard against decompression bombs); above
# Pillow's 89 megapixels, so 100 MP camera photos still pass. The scripts' --max-pixels changes it. Counted as
# each path decodes an image (images.limit_scale): a JPEG that libjpeg decodes reduced there at that size, so a
# 200 MP phone photo (16320x12240, 2040x1530 at 1/8) passes a resize model's path and the splitters' check.
MAX_IMAGE_PIXELS = 120_000_000
# Words in a class name that mark the AI-generated class (the positive class of the binary metrics).
POSITIVE_WORDS = frozenset({"fake", "generated", "synthetic", "ai"})
# DataDeleter.py deletes inside these without --allow-outside (never this repository's other files).
REPOSITORY = Path(__file__).resolve().parents[1]
DELETABLE_ROOTS = (REPOSITORY / "data", REPOSITORY / "models")
# A run's folder name: one plain name inside OUT, so a run never writes into a folder outside its own.
_RUN_NAME = re.compile(r"[\w-][\w.-]*")


@dataclass(frozen=True)
class Limit:
    """The values a numeric setting may take: ``low`` to ``high``, each end included unless it is ``open``.

    NaN is never inside (every comparison with it is False), nor are infinities (the ends are finite).
    """

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        """``from 0 to 4,294,967,295``: whole numbers in full, an end that is not inside marked ``(excluded)``."""
        low, high = (f"{int(end):,}" if float(end).is_integer() else f"{end:g}" for end in (self.low, self.high))
        return f"from {low}{' (excluded)' * self.low_open} to {high}{' (excluded)' * self.high_open}"


MAX_IMAGE_SIZE = 2048  # a ResNet at 2048 px already needs ~80x the memory of 224 px per image
# The range of every numeric TrainConfig field that a run can use; the flags are checked against them
# when parsed, and TrainConfig.validate against the same table.
LIMITS: dict[str, Limit] = {
    "image_size": Limit(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE),
    "batch_size": Limit(1, 65_536),
    "head_epochs": Limit(0, 100_000),
    "fine_tune_epochs": Limit(0, 100_000),
    "fine_tune_blocks": Limit(0, 1_000),
    "learning_rate": Limit(0, 10, low_open=True),
    "fine_tune_learning_rate": Limit(0, 10, low_open=True),
    "final_learning_rate_fraction": Limit(0, 1),
    "head_units": Limit(1, 1_000_000),
    "l2": Limit(0, 100),
    "dropout": Limit(0, 1, high_open=True),
    "noise": Limit(0, 1_000),
    "stop_margin": Limit(0, 1_000),
    "stop_patience": Limit(1, 100_000),
    "early_stopping_patience": Limit(1, 100_000),
    "seed": Limit(0, 2**32 - 1),
    "max_pixels": Limit(1, 2**62),
}


def weights_source(weights: str | Path | None) -> str | None:
    """``--weights`` as ``keras.applications`` takes it: None (from scratch) for "none" or None, "imagenet" in any
    letter case, else the path of a weights file."""
    return {"none": None, "imagenet": "imagenet"}.get(str(weights).lower(), str(weights))  # str(None): "None"


def flag_name(field_name: str) -> str:
    """The command-line flag of a TrainConfig field: ``image_size`` -> ``--image-size``, ``class_weights`` (on by
    default) -> ``--no-class-weights``."""
    return "--no-class-weights" if field_name == "class_weights" else "--" + field_name.replace("_", "-")


@dataclass(frozen=True)
class Phase:
    """One ``fit``: epochs ``start .. end-1`` of the run's single epoch axis."""

    name: str  # "head", "fine_tune" or "full"
    start: int
    end: int
    learning_rate: float
    train_backbone: bool


# The values each type of TrainConfig field takes (what validate expects), by the type of its default.
_KINDS: dict[type, tuple[str, tuple[type, ...]]] = {
    type(Path()): ("a folder path", (str, Path)), str: ("a string", (str,)), int: ("an integer", (int,)),
    float: ("a number", (int, float)), bool: ("true or false", (bool,)),
}


@dataclass(frozen=True)
class TrainConfig:
    """Every training setting, with its default; saved as model.json's ``config``."""

    data: Path = Path("data")  # DATA/train, DATA/validation (and DATA/test for the final evaluation)
    out: Path = Path("models")  # runs go to OUT/NAME
    name: str = ""  # the run's folder name; empty = a timestamp
    backbone: str = "resnet101"
    weights: str = "imagenet"  # "imagenet", "none" (from scratch) or a path to backbone weights
    image_size: int = 224  # side the backbone sees; inputs of any size are resized to it (crops: cut to it)
    input_mode: str = "resize"  # one of INPUT_MODES; "crops": image_size crops at native resolution
    batch_size: int = 32  # images per step on each device (global batch = this x devices)
    head_epochs: int = 5  # phase 1: backbone frozen (with --weights none: the epochs simply add up)
    fine_tune_epochs: int = 10  # phase 2: backbone trains too
    fine_tune_blocks: int = 0  # residual blocks of the backbone that fine-tune, counted from the top; 0 = all
    learning_rate: float = 1e-3  # head phase, and the from-scratch run
    fine_tune_learning_rate: float = 1e-5
    final_learning_rate_fraction: float = 0.01  # each phase decays linearly to this share of its start
    head_units: int = 1024
    l2: float = 1e-4  # L2 factor on the head's Dense kernel
    dropout: float = 0.4
    noise: float = 0.1  # stddev of the Gaussian noise on the feature map (in training)
    augment: str = "detector"  # one of PRESETS
    class_weights: bool = True  # weight the loss by inverse class frequency
    positive_class: str = ""  # binary metrics' positive class; empty = the class named fake/generated/synthetic/ai
    stop_margin: float = 0.1  # StopTrainingOnValidationLoss: validation cross-entropy > training's + margin, no new
    # low of it, overfits
    stop_patience: int = 3  # ... for this many epochs in a row ends the phase
    early_stopping_patience: int = 5  # epochs without a lower validation cross-entropy (MONITOR) that end the phase
    precision: str = "auto"  # auto: on a GPU mixed_float16 (TensorFlow) or mixed_bfloat16 (JAX); float32 on CPU
    xla: bool = False  # force XLA on TensorFlow (else Keras decides: on for one GPU, off on CPU); JAX always compiles
    seed: int = 42
    max_pixels: int = MAX_IMAGE_PIXELS  # larger images are skipped unread (a guard against decompression bombs)
    demo: bool = False  # trained on realvsai.demo's synthetic images (model card and app say so)

    def validate(self) -> None:
        """Raises UserError for settings of the wrong type or that cannot work together."""
        for field in dataclasses.fields(self):
            value, kind = getattr(self, field.name), type(field.default)
            expected, allowed = _KINDS[kind]
            # bool is an int to Python, but as a count it is a mistake all the same (and a number as a switch).
            if not isinstance(value, allowed) or isinstance(value, bool) != (kind is bool):
                raise UserError(f"{flag_name(field.name)} {value!r}: it must be {expected}.")
        if self.backbone not in BACKBONES:
            raise UserError(f"--backbone {self.backbone}: choose one of {', '.join(BACKBONES)}.")
        if self.augment not in PRESETS:
            raise UserError(f"--augment {self.augment}: choose one of {', '.join(PRESETS)}.")
        if self.input_mode not in INPUT_MODES:
            raise UserError(f"--input-mode {self.input_mode}: choose one of {', '.join(INPUT_MODES)}.")
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision {self.precision}: choose one of {', '.join(PRECISIONS)}.")
        for name, limit in LIMITS.items():
            if getattr(self, name) not in limit:
                raise UserError(f"{flag_name(name)} {getattr(self, name)}: it must be {limit}.")
        if problem := epochs_problem(self.head_epochs, self.fine_tune_epochs):
            raise UserError(f"{problem}.")
        if self.name and run_name_problem(self.name):
            raise UserError(f"--name {run_name_problem(self.name)}.")

    @property
    def pretrained(self) -> bool:
        return weights_source(self.weights) is not None

    @property
    def total_epochs(self) -> int:
        return self.head_epochs + self.fine_tune_epochs

    def precision_policy(self, num_gpus: int, backend: str = "tensorflow") -> str:
        """The dtype policy name for ``precision`` (``auto``: float32 on CPU; on a GPU mixed_float16 on
        TensorFlow, mixed_bfloat16 on JAX, which needs no loss scaling)."""
        if self.precision == "auto":
            return "float32" if num_gpus == 0 else "mixed_float16" if backend == "tensorflow" else "mixed_bfloat16"
        return self.precision

    def model_options(self) -> dict[str, Any]:
        """``model.build_model``'s keyword arguments from these settings (the number of classes comes from the data)."""
        return {name: getattr(self, name) for name in
                ("image_size", "backbone", "weights", "augment", "head_units", "l2", "dropout", "noise", "seed")}

    def phase_names(self) -> list[str]:
        """The run's phases in order: ``["full"]`` from scratch, else ``head`` and/or ``fine_tune``."""
        if not self.pretrained:
            return ["full"]
        return [name for name, epochs in (("head", self.head_epochs), ("fine_tune", self.fine_tune_epochs)) if epochs]

    def plan_phase(self, name: str, head_epochs_run: int = 0) -> Phase:
        """Phase ``name``'s epochs; fine-tuning starts after the epochs the head phase ran (``head_epochs_run``)."""
        if name == "full":
            return Phase(name, 0, self.total_epochs, self.learning_rate, train_backbone=True)
        if name == "head":
            return Phase(name, 0, self.head_epochs, self.learning_rate, train_backbone=False)
        return Phase(name, head_epochs_run, self.total_epochs, self.fine_tune_learning_rate, train_backbone=True)

    def to_json(self) -> dict[str, Any]:
        return {key: str(value) if isinstance(value, Path) else value
                for key, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> TrainConfig:
        """The settings ``to_json`` wrote; other keys are left out, and ``validate`` checks the values' types."""
        fields = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: Path(value) if key in ("data", "out") and isinstance(value, str) else value
                      for key, value in values.items() if key in fields})


def monitor_of(rows: Sequence[Mapping[str, Any]]) -> str:
    """What picks the best epoch of the run whose history (callbacks.TrainingHistory's rows) is ``rows``: the
    validation cross-entropy (MONITOR), or val_loss for a run begun before the cross-entropy was logged (its
    earlier epochs have no other measure)."""
    return "val_loss" if any("val_loss" in row and MONITOR not in row for row in rows) else MONITOR


def best_epoch_monitor(model_info: Mapping[str, Any]) -> str:
    """What chose the best epoch of the run whose model.json holds ``model_info``: the ``monitor`` it records
    (``monitor_of`` its whole history; a run begun before the cross-entropy was logged and resumed since has best
    epochs that logged both), or for a run from before it was recorded, ``monitor_of`` its best epoch."""
    return model_info.get("monitor") or monitor_of([model_info.get("best_epoch") or {}])


def run_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a run's folder inside OUT, or None when it can."""
    if not _RUN_NAME.fullmatch(name):
        return (f"{name!r} is not a plain folder name: use letters, digits, '-', '_' and '.' (not first), without "
                "'/' or '\\'")
    if (size := len(os.fsencode(name))) > MAX_NAME_BYTES:
        return f"{name[:20]!r}... is {size:,} bytes, longer than a folder name may be ({MAX_NAME_BYTES}): shorten it"
    return None


def epochs_problem(head_epochs: int, fine_tune_epochs: int) -> str | None:
    """Why a run of these epoch counts cannot train, or None when it can: ModelTraining.py's usage error, and
    ``TrainConfig.validate``'s for settings from elsewhere."""
    if head_epochs + fine_tune_epochs == 0:
        return "--head-epochs and --fine-tune-epochs are both 0: give at least one epoch to train"
    return None


def read_run_config(run_dir: Path) -> tuple[TrainConfig, str | None, str | None]:
    """The settings a run started with, the digest of its data and its Keras backend (each None in backups from
    before it was kept).

    Raises:
        UserError: naming the file when it is not JSON or holds settings no run can use.
    """
    saved = Path(run_dir) / BACKUP_DIR / RUN_CONFIG_FILE
    fix = "Restore the file from a copy, or start a new run with another --name."
    try:
        values = json.loads(saved.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{saved} is damaged ({error}), so the settings of the run are unknown. {fix}") from None
    if not isinstance(values, dict):
        raise UserError(f"{saved} holds a JSON {type(values).__name__}, not the settings of a run. {fix}")
    config = TrainConfig.from_json(values)
    try:
        config.validate()
    except UserError as error:
        raise UserError(f"{saved} holds settings no run can use ({str(error).rstrip('.')}). {fix}") from None
    digest, backend = (values.get(key) for key in (DATA_DIGEST_KEY, BACKEND_KEY))
    return config, digest if isinstance(digest, str) else None, backend if isinstance(backend, str) else None


def command_path(path: Path | str) -> str:
    """``path`` as a command's argument: with ``./`` before a path that begins with a dash, which a script would
    read as an option."""
    text = str(path)
    return os.path.join(".", text) if text.startswith("-") else text


def shell_path(path: Path | str) -> str:
    """``path`` as a word of a command line to copy: ``command_path`` quoted for the shell."""
    return shlex.quote(command_path(path))


def deleter_command(path: Path) -> str:
    """The command line (run from the repository, as every script is) that deletes ``path`` with DataDeleter.py,
    as a message suggests it: with --allow-outside where ``path`` is outside ``DELETABLE_ROOTS``."""
    folder = Path(os.path.realpath(Path(path).parent))  # where DataDeleter.py finds it (deleting.locate)
    inside = any(root == folder or root in folder.parents for root in map(Path.resolve, DELETABLE_ROOTS))
    return f"python DataDeleter.py {shell_path(path)}" + ("" if inside else " --allow-outside")


def resume_command(run_dir: Path, flags: Sequence[str] = ("--resume",), defaults: Any = None) -> str:
    """``python ModelTraining.py --resume --name NAME --out OUT``: the command that continues the run in ``run_dir``,
    leaving out --name and --out where they are ``defaults``' (an object with ``name`` and ``out``: TrainConfig's
    unless given; the demo's with ``flags`` ``--demo --resume``)."""
    defaults = defaults or TrainConfig
    backend = _started_on(run_dir)  # pasted without it, the command runs on TensorFlow, which the resume refuses
    words = [*([f"KERAS_BACKEND={shlex.quote(backend)}"] if backend else []), "python", "ModelTraining.py", *flags]
    if run_dir.name != defaults.name:
        name = shlex.quote(run_dir.name)  # ``--name -run`` would read -run as an option; ``--name=-run`` does not
        words.append(f"--name={name}" if run_dir.name.startswith("-") else f"--name {name}")
    if run_dir.parent != Path(defaults.out):
        words += ["--out", shell_path(run_dir.parent)]
    return " ".join(words)


def is_stopped_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run's saved settings (``BACKUP_DIR/RUN_CONFIG_FILE``): a run that has not finished,
    which --resume continues."""
    return (Path(run_dir) / BACKUP_DIR / RUN_CONFIG_FILE).is_file()


def stopped_runs_hint(out: Path) -> str:
    """What a --resume given no --name should say about ``out``: the command that continues its stopped runs (those
    with saved settings: ``resolve_run_dir`` continues them), or that it holds none."""
    try:
        stopped = sorted(folder for folder in Path(out).iterdir() if is_stopped_run(folder))
    except OSError:  # no such folder (yet), or not one
        stopped = []
    if not stopped:
        return f"{out} holds no stopped run; check --out"
    if len(stopped) == 1:
        return f"{out} holds 1 stopped run: continue it with {resume_command(stopped[0])}"
    others = ", ".join(shlex.quote(folder.name) for folder in stopped[1:])
    return (f"{out} holds {len(stopped)} stopped runs: continue one with {resume_command(stopped[0])} (or --name "
            f"{others})")


def _started_on(run_dir: Path) -> str | None:
    """The Keras backend other than TensorFlow, the default, that the run in ``run_dir`` started on (its saved
    settings say), or None."""
    try:
        values = json.loads((Path(run_dir) / BACKUP_DIR / RUN_CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none saved yet, or damaged: read_run_config says so where it matters
        return None
    backend = values.get(BACKEND_KEY) if isinstance(values, dict) else None
    return backend if isinstance(backend, str) and backend and backend != "tensorflow" else None


def resolve_run_dir(config: TrainConfig, resume: bool, data: Path | None = None,
                    continue_with: Callable[[Path], str] = resume_command) -> tuple[TrainConfig, Path]:
    """The run folder, and the configuration to use (the saved one when resuming, reading ``data`` if given:
    the run's dataset, moved); a UserError if the folder exists and ``resume`` is False (but for what a run killed
    before it saved its settings leaves: that start begins again; an unfinished run's names ``continue_with``'s
    command for it), or ``resume`` finds nothing to resume."""
    if not config.name:
        if resume:
            raise UserError("--resume needs the --name of the run to continue.")
        # A name the user did not choose is never refused: where another run started in the same second (or a file
        # holds the name), the next free one, STAMP-2, ...
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        name = next(name for name in numbered(stamp)
                    if not os.path.lexists(Path(config.out) / name) and claimed_by(Path(config.out) / name) is None)
        config = dataclasses.replace(config, name=name)
    run_dir = Path(config.out) / config.name
    saved = run_dir / BACKUP_DIR / RUN_CONFIG_FILE
    # Not the claim's "wait for it to finish, then run the command again": once it has, a start of its --name is a
    # finished run's, and a --resume has nothing to resume.
    if holder := claimed_by(run_dir):
        raise UserError(f"{run_dir} is training now in {holder}" + (
            ": it goes on there. To continue it here instead, stop that run, then run this command again." if resume
            else "; choose another --name."))
    if not resume:
        _refuse_run_inside_data(run_dir, Path(config.data), None)
        if run_dir.exists() and not saved.is_file() and (run_dir / MODEL_JSON_FILE).is_file():
            raise UserError(f"{run_dir} holds a finished run. Choose another --name, or delete it "
                            f"({deleter_command(run_dir)}) to train it again.")
        if run_dir.exists() and not (run_dir.is_dir() and _left_by_a_killed_start(run_dir)):
            if saved.is_file():
                raise UserError(f"{run_dir} holds a run that has not finished (it was stopped). "
                                f"Continue it with {continue_with(run_dir)}, or choose another --name.")
            raise UserError(f"{run_dir} already exists and is not a run folder (it has neither {MODEL_JSON_FILE} nor "
                            f"{BACKUP_DIR}/{RUN_CONFIG_FILE}); its files are kept. Choose another --name (or --out).")
        return config, run_dir  # a new run, or one killed before it saved its settings started over
    if data is not None:
        config = dataclasses.replace(config, data=Path(data))
    if saved.is_file():
        stored = read_run_config(run_dir)[0]
        _refuse_run_inside_data(run_dir, Path(data if data is not None else stored.data), data)
        if data is None and not Path(stored.data).is_dir():  # a new split would be other data, which is refused
            raise UserError(f"{stored.data}, the data {run_dir} started on, is not there. If it moved, give its new "
                            f"place: {resume_command(run_dir)} --data NEW-PLACE.")
        moved = {} if data is None else {"data": config.data}  # training checks that it holds the same files
        return dataclasses.replace(stored, out=config.out, name=config.name, **moved), run_dir
    if (run_dir / MODEL_JSON_FILE).is_file():
        raise UserError(f"{run_dir} has finished training; there is nothing to resume. Start a new run with "
                        "another --name.")
    if run_dir.is_dir() and _left_by_a_killed_start(run_dir):
        raise UserError(f"{run_dir} was stopped before it saved its settings, so there is nothing to resume: run the "
                        "command that started it again, without --resume (it starts over in that folder).")
    if run_dir.exists():
        raise UserError(f"{run_dir} is not a run folder: it has no {BACKUP_DIR}/{RUN_CONFIG_FILE}, so there is "
                        "nothing to resume, and its files are kept. Check --out and --name, or start a new run "
                        "with another --name.")
    raise UserError(f"{run_dir} does not exist, so there is nothing to resume. Check --out and --name.")


def _refuse_run_inside_data(run_dir: Path, data: Path, moved_data: Path | None) -> None:
    """A UserError when the run folder ``run_dir`` lies inside its dataset ``data`` (``--out`` inside ``--data``):
    there it would be read as a class folder, or a split's, and the run's own evaluation (or the next training)
    would fail on it. A new run is refused before anything is written; a run folder already there (from before
    this was refused), with the move that takes it out and the command that goes on (``moved_data``: the --data
    a resume was given, which it needs again)."""
    if not is_inside(run_dir, data):
        return
    models = Path(TrainConfig.out)
    if not run_dir.exists():
        raise UserError(f"--out {run_dir.parent} lies inside --data {data} (the run folder would land among the "
                        f"dataset's images); choose an --out outside it, e.g. --out {shell_path(models)}.")
    if is_stopped_run(run_dir):
        flags = [] if moved_data is None else [f"--data {shell_path(moved_data)}"]
        then = f"continue it with: {' '.join([resume_command(models / run_dir.name), *flags])}"
    else:
        then = f"choose an --out outside the dataset, e.g. --out {shell_path(models)}"
    raise UserError(f"{run_dir} lies inside its dataset {data}, where it would be read as images; move it out of "
                    f"there (mkdir -p {shell_path(models)} && mv {shell_path(run_dir)} {shell_path(models)}/), "
                    f"then {then}.")


def _left_by_a_killed_start(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds only what a run killed between creating it and writing its settings leaves:
    nothing, or a backup folder with at most the hidden temporary file of that write (``.<name>.<random>.tmp``)."""
    for item in run_dir.iterdir():
        if item.name != BACKUP_DIR or item.is_symlink() or not item.is_dir():
            return False
        if any(temporary_of(part.name) is None for part in item.iterdir()):
            return False
    return True
