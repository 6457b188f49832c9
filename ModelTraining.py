"""Step 6: fine-tunes a ResNet (ResNet101 by default) on DATA/train, picks the best epoch on
DATA/validation, and evaluates it on DATA/test.

    DATA/train/<Class>/         ->  OUT/NAME/
    DATA/validation/<Class>/          model.h5             best epoch (lowest val_cross_entropy)
    DATA/test/<Class>/ (optional)     model.json           class names, settings, counts, best epoch
                                      history.csv          one row per epoch, both phases
                                      training_curves.png  cross-entropy and loss, accuracy,
                                                           precision, recall, AUC, F1
                                      logs/                TensorBoard
                                      metrics.json, MODEL_CARD.md, plots,  (when DATA/test exists)
                                        classification_report.txt, predictions.csv,
                                        unreadable.csv (the test files left out, if any)

Two phases, on the same epoch axis:
- phase 1 trains the head on the frozen backbone (--head-epochs)
- phase 2 fine-tunes the backbone (--fine-tune-epochs, all of it or its top --fine-tune-blocks
  residual blocks) at a lower learning rate
- with --weights none the whole network trains from scratch for all the epochs

A run killed at any moment continues from its last finished epoch with --resume --name NAME, on
the data it started on (--data DIR if that moved). Preprocessing is inside the model: it takes raw
RGB images of any size.

Devices:
- every local GPU trains (TensorFlow: MirroredStrategy; KERAS_BACKEND=jax:
  keras.distribution.DataParallel)
- --batch-size counts per device (a GPU, or the machine's CPU without one)
- several machines (TensorFlow): set TF_CONFIG on each (MultiWorkerMirroredStrategy) and start the
  same command on all of them: they take the chief's settings, read the data at the same --data
  path (checked to be the same files), and only the chief writes OUT/NAME

--demo needs no dataset: it makes a small synthetic one in data/demo/ (from photos that ship with
scikit-learn and matplotlib), splits it as DataSplitD2.py does and trains on it into models/demo/
(OUT/demo/), offline, in a few minutes on a laptop CPU; App.py then serves it.

Examples:
    python ModelTraining.py --demo
    python ModelTraining.py --data data --name cifake --image-size 32 --weights none
    python ModelTraining.py --data data --name art --head-epochs 5 --fine-tune-epochs 10
    python ModelTraining.py --resume --name art
    python ModelTraining.py --evaluate models/art/model.h5 --test-dir other_images
    python ModelTraining.py --predict models/art --input my_photos --out my_photos_predicted
    python ModelTraining.py --predict models/art --input holiday.jpg  # one image: answer, why
    python ModelTraining.py --evaluate models/art --test-dir data/test --test-dir photos/test \\
        --robustness
    export TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                      "task": {"type": "worker", "index": 0}}'
    python ModelTraining.py --data data --name big  # on host1; on host2 the same, with "index": 1
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from realvsai.cli import (
    Interrupted,
    bounded,
    describe_os_error,
    exit_script,
    make_parser,
    nonempty_path,
    plural,
    refuse_given_twice,
    run_main,
    setup_logging,
    tensorflow_logs_filtered,
    usage_check,
)
from realvsai.config import (
    BACKBONES,
    INPUT_MODES,
    LIMITS,
    MAX_IMAGE_PIXELS,
    MODEL_JSON_FILE,
    POSITIVE_WORDS,
    PRECISIONS,
    PRESETS,
    UNREADABLE_FILE,
    TrainConfig,
    best_epoch_monitor,
    epochs_problem,
    flag_name,
    resume_command,
    run_name_problem,
    shell_path,
    stopped_runs_hint,
    weights_source,
)
from realvsai.errors import UserError
from realvsai.files import is_inside, not_an_image_name, working_on
from realvsai.layout import class_folder_problem

if TYPE_CHECKING:
    from realvsai.training import RunInterrupted, RunWriteFailed, TrainResult

logger = logging.getLogger("realvsai.train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = TrainConfig()
    parser = make_parser(__doc__)
    data = parser.add_argument_group("data and run")
    data.add_argument("--data", type=nonempty_path, default=argparse.SUPPRESS,
                      help=f"dataset folder with train/ and validation/ (default: {defaults.data}; with --resume, "
                           "the run's own: give it when the dataset moved, it must hold the same files)")
    data.add_argument("--out", type=nonempty_path, default=None,
                      help=f"runs go to OUT/NAME (default: {defaults.out}); with --evaluate or --predict, the folder "
                           "for its outputs (default: eval-<test folders> or predictions-<input> beside the model, "
                           "or a new OUT-2 when it holds results)")
    data.add_argument("--name", type=run_name, default=argparse.SUPPRESS,
                      help="the run's folder name inside OUT: letters, digits, '-', '_', '.' (default: a timestamp)")
    data.add_argument("--resume", action="store_true",
                      help="continue the run --name from its last finished epoch, with its saved settings, on the "
                           "data it started on")
    add_number(data, "--seed", int, help="seeds shuffling, augmentation and weights")
    add_number(data, "--max-pixels", int,
               help="images with more pixels, as the model decodes them (in resize mode a large JPEG reduced: a "
                    "200 MP phone photo passes), are skipped unread and named (decompression bombs); raise it for "
                    "larger scans, in training, --evaluate and --predict as for the split")
    data.add_argument("--demo", action="store_true",
                      help="train the demo (above) with its own small settings: --out, --name, --resume and --quiet "
                           "apply, a training flag is refused")

    model = parser.add_argument_group("model")
    model.add_argument("--backbone", choices=BACKBONES, default=defaults.backbone, help="the ResNet to fine-tune")
    model.add_argument("--weights", type=weights_choice, default=defaults.weights,
                       help="'imagenet' (downloaded once to ~/.keras/models/), a weights file, or 'none' to train "
                            "from scratch")
    add_number(model, "--image-size", int,
               help="side in pixels the backbone sees: images of any size are resized to it (--input-mode "
                    "crops: cut to it at native resolution)")
    model.add_argument("--input-mode", choices=INPUT_MODES, default=defaults.input_mode,
                       help="resize: the whole image (centre square) resized to --image-size; crops: --image-size "
                            "crops at native resolution (random in training; a 3x3 grid, softmax averaged, in "
                            "evaluation, --predict and the app)")
    model.add_argument("--augment", choices=PRESETS, default=defaults.augment,
                       help="augmentation in training only: detector keeps the pixel traces of generated images; "
                            "classic = ImageDataGenerator's rotations, shifts, shear, zoom, flip")
    add_number(model, "--head-units", int, help="units of the head's Dense")
    add_number(model, "--l2", float, help="L2 factor on the head's Dense kernel")
    add_number(model, "--dropout", float, help="dropout rate before the output")
    add_number(model, "--noise", float, help="stddev of the Gaussian noise on the feature map (training only)")

    schedule = parser.add_argument_group("schedule")
    add_number(schedule, "--batch-size", int,
               help="images per step on each device (above), in training, --evaluate and --predict alike; a "
                    "step takes this times the devices")
    add_number(schedule, "--head-epochs", int, help="phase 1: epochs with the backbone frozen")
    add_number(schedule, "--fine-tune-epochs", int, help="phase 2: epochs that fine-tune the backbone too")
    add_number(schedule, "--fine-tune-blocks", int,
               help="residual blocks that fine-tune, counted from the top (0 = the whole backbone)")
    add_number(schedule, "--learning-rate", float,
               help="Adam's start rate in phase 1 (and from scratch); decays linearly over the phase")
    add_number(schedule, "--fine-tune-learning-rate", float,
               help="Adam's start rate in phase 2; decays linearly over the phase")
    schedule.add_argument("--no-class-weights", dest="class_weights", action="store_false", default=argparse.SUPPRESS,
                          help="do not weight the loss by inverse class frequency (weighted by default)")
    schedule.add_argument("--positive-class", type=class_name, default=None,
                          help="two classes only: the class binary precision/recall/F1/AUC are about (default: the one "
                               f"class whose name has a word among {', '.join(sorted(POSITIVE_WORDS))}, e.g. FAKE, "
                               "AiArt, ai_generated); more classes: macro averages")
    add_number(schedule, "--stop-margin", float,
               help="StopTrainingOnValidationLoss: an epoch overfits when the validation cross-entropy exceeds "
                    "training's by more than this and is not the phase's lowest yet")
    add_number(schedule, "--stop-patience", int,
               help="StopTrainingOnValidationLoss: overfitting epochs in a row that end the phase")
    add_number(schedule, "--early-stopping-patience", int,
               help="epochs without a lower validation cross-entropy that end the phase")

    hardware = parser.add_argument_group("hardware")
    hardware.add_argument("--precision", choices=PRECISIONS, default=defaults.precision,
                          help="auto = float32 on CPU; on a GPU mixed_float16 (TensorFlow) or mixed_bfloat16 (JAX)")
    hardware.add_argument("--xla", action="store_true",
                          help="compile the training step with XLA (TensorFlow; default: Keras decides: on for one "
                               "GPU when every layer supports it, off on CPU); JAX always compiles")

    evaluate = parser.add_argument_group("evaluate a saved model instead of training")
    evaluate.add_argument("--evaluate", type=nonempty_path, metavar="MODEL",
                          help="a run folder, its model.h5 or its model.json, to evaluate on --test-dir")
    evaluate.add_argument("--test-dir", type=nonempty_path, action="append",
                          help="folder of class folders to evaluate --evaluate on; give one per source (e.g. each "
                               "generator or photo collection) to report each and all together")
    evaluate.add_argument("--robustness", action="store_true",
                          help="also evaluate after JPEG re-compression (quality 90, 70, 50, 30), Gaussian blur "
                               "(sigma 1, 2) and downscaling (x0.5, x0.25): metrics.json's robustness, "
                               "robustness.png and a table in EVALUATION.md")
    evaluate.add_argument("--predict", type=nonempty_path, metavar="MODEL",
                          help="a run folder, its model.h5 or its model.json: predict every image in --input "
                               "(and its sub-folders), or the one image it names, into OUT/predictions.csv")
    evaluate.add_argument("--input", type=nonempty_path,
                          help="a folder of images, of unknown class, to --predict (sub-folders too), or one image")
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # often the folder of `--predict MODEL photos`, as other tools take it
        needed = ("--input" if args.predict is not None and args.input is None else
                  "--test-dir" if args.evaluate is not None and not args.test_dir else None)
        what = "the image" if needed == "--input" and not not_an_image_name(unknown[0]) else "the folder"
        where = f"; give {what} with {needed} {unknown[0]}" if needed and not unknown[0].startswith("-") else ""
        parser.error(f"unrecognized arguments: {' '.join(unknown)}{where}")
    if args.evaluate is not None and args.predict is not None:
        parser.error("--evaluate and --predict do not go together: give one of --evaluate or --predict")
    if args.demo and (args.evaluate is not None or args.predict is not None):
        parser.error("--demo trains a model; it does not go with --evaluate or --predict")
    if args.predict is not None and args.input is None:
        parser.error("--predict needs --input DIR (or --input IMAGE)")
    if args.input is not None and args.predict is None:
        parser.error("--input goes with --predict MODEL")
    if args.evaluate is not None and args.test_dir is None:
        parser.error("--evaluate needs --test-dir DIR")
    if args.test_dir is not None and args.evaluate is None:
        parser.error("--test-dir goes with --evaluate MODEL")
    if args.test_dir:
        usage_check(parser, lambda: refuse_given_twice(args.test_dir, "--test-dir"))
    if args.robustness and args.evaluate is None:
        parser.error("--robustness goes with --evaluate MODEL --test-dir DIR")
    reading = "evaluate" if args.evaluate is not None else "predict" if args.predict is not None else None
    if reading and args.out is not None and (args.out / MODEL_JSON_FILE).is_file():
        # Not an OUT-2 beside it, as for earlier results: the user named the run's own folder.
        default = "eval-<test folders>" if reading == "evaluate" else "predictions-<input folder>"
        parser.error(f"--out {args.out} is a training run's folder (it holds {MODEL_JSON_FILE}), whose own results "
                     f"--{reading} would be mixed with. Give a folder of its own, or leave --out out for {default} "
                     "beside the model")
    reads = (args.test_dir or []) if reading == "evaluate" else [args.input] if reading == "predict" else []
    flag = "--test-dir" if reading == "evaluate" else "--input"
    if args.out is not None and (read := folder_it_reads(args.out, reads)) is not None:
        parser.error(f"--out {args.out} lies inside {flag} {read}, where its files would be read with the images the "
                     f"next time; leave --out out for a folder beside the model, or choose one outside {read}")
    if args.out is not None and (read := next((read for read in reads if is_inside(read, args.out)), None)):
        # Its claim on the folder it writes would take in what it reads, and refuse it as another run's.
        parser.error(f"--out {args.out} holds {flag} {read}, which the run reads while it writes there; leave --out "
                     f"out for a folder beside the model, or choose one beside {read}")
    if args.out is not None and (problem := class_folder_problem(args.out, "--out", "its results" if reading
                                                                  else "the run's folder")):
        parser.error(f"{problem}; leave --out out for a folder beside the model, or choose one of its own" if reading
                     else f"{problem}; choose a folder of its own, e.g. the default --out models")
    mode = next((mode for mode in MODE_FLAGS if getattr(args, mode)), None)
    ignored = ignored_flags(parser, argv, args, MODE_FLAGS[mode]) if mode else []
    if ignored and mode == "demo":
        from realvsai.demo import DemoConfig

        parser.error(f"{' '.join(ignored)} would be ignored by --demo, which trains with its own small "
                     "settings (only --out, --name, --resume and --quiet apply). To train with yours on the "
                     f"demo data, run --demo once, then: python ModelTraining.py --data {DemoConfig.data_dir} "
                     "--name NAME and your flags")
    if ignored:
        accepted = ", ".join(flag_name(dest) for dest in sorted(MODE_FLAGS[mode]) if dest != mode)
        saved = ("continues the run with the settings it started with" if mode == "resume"
                 else "uses the settings saved with the model")
        parser.error(f"{' '.join(ignored)} would be ignored by --{mode}, which {saved} (only {accepted} apply). "
                     f"Leave {'it' if len(ignored) == 1 else 'them'} out")
    if not mode and weights_source(args.weights) is None:
        unused = [flag for flag in ignored_flags(parser, argv, args, frozenset())
                  if flag in ("--fine-tune-blocks", "--fine-tune-learning-rate")]
        if unused:
            parser.error(f"{' '.join(unused)} would be ignored with --weights none, which trains the whole network "
                         f"from the first epoch at --learning-rate. Leave {'it' if len(unused) == 1 else 'them'} out")
    if args.resume and not args.demo and not hasattr(args, "name"):
        parser.error("--resume needs --name NAME, the run in --out to continue; "
                     f"{stopped_runs_hint(args.out if args.out is not None else TrainConfig.out)}")
    if problem := epochs_problem(args.head_epochs, args.fine_tune_epochs):
        parser.error(problem)
    return args


# What each mode other than training reads of the flags (by their dest); the others set a training it does
# not do, so giving one is refused rather than ignored.
MODE_FLAGS = {
    "demo": frozenset({"demo", "out", "name", "resume", "quiet"}),
    "evaluate": frozenset({"evaluate", "test_dir", "robustness", "out", "batch_size", "max_pixels", "quiet"}),
    "predict": frozenset({"predict", "input", "out", "batch_size", "max_pixels", "quiet"}),
    "resume": frozenset({"resume", "name", "out", "data", "quiet"}),  # --data: the run's dataset, moved
}


def ignored_flags(parser: argparse.ArgumentParser, argv: list[str] | None, args: argparse.Namespace,
                  read: frozenset[str]) -> list[str]:
    """The flags on the command line (even at their default value) whose dest is not in ``read``, the flags a
    mode reads; ``args`` is ``parser``'s parse of ``argv``."""
    # argparse fills in a default only where the namespace has no value yet, so what is still an empty _Unset
    # after a second parse was not on the command line (an "append" flag, --test-dir, copies it and adds to the
    # copy). A flag whose default is SUPPRESS is in ``args`` only when given.
    given = parser.parse_args(argv, argparse.Namespace(**{dest: _Unset() for dest in vars(args)}))
    return [flag_name(dest) for dest, value in vars(given).items()
            if not (isinstance(value, _Unset) and not value) and dest not in read]


class _Unset(list):
    """``ignored_flags``' mark of a flag that was not given."""


def folder_it_reads(out: Path, reads: Sequence[Path]) -> Path | None:
    """The folder of ``reads`` that ``out`` is or lies inside, or None. Results written there would be read back: as
    a class folder by --evaluate and training, as input by --predict."""
    return next((read for read in reads
                 if is_inside(out, read) or os.path.realpath(out) == os.path.realpath(read)), None)


def refuse_results_beside_a_model_inside(out_dir: Path, reads: Sequence[Path], flag: str) -> None:
    """UserError when ``out_dir``, the default folder for --evaluate's or --predict's results beside the model, lies
    inside a folder the run reads (``flag``): the model does too. (The run's claim on what it reads would refuse it
    as if another run read there.)"""
    if (read := folder_it_reads(out_dir, reads)) is not None:
        raise UserError(f"the folder for the results beside the model, {out_dir}, lies inside {flag} {read}, where "
                        "its files would be read with the images the next time; give --out a folder outside it.")


def weights_choice(text: str) -> str:
    """argparse type for --weights: an empty text (an unset shell variable) is refused rather than read as the
    current folder."""
    if not text:
        raise argparse.ArgumentTypeError("empty; give imagenet, none or a weights file")
    return text


def class_name(text: str) -> str:
    """argparse type for --positive-class: an empty text (an unset shell variable) is refused rather than read as
    "choose it by name"."""
    if not text:
        raise argparse.ArgumentTypeError("empty; give a class name, or leave the option out to choose it by name")
    return text


def run_name(text: str) -> str:
    """argparse type for --name: one plain folder name, so a run stays inside --out."""
    problem = run_name_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def add_number(group: Any, flag: str, kind: type, help: str) -> None:
    """Adds to ``group`` (a parser or an argument group) the numeric flag of the TrainConfig field of the same
    name, with the field's default and its range from ``config.LIMITS``."""
    field = flag.removeprefix("--").replace("-", "_")
    group.add_argument(flag, type=bounded(kind, LIMITS[field]), default=getattr(TrainConfig(), field), help=help)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the flags describe (flags share the fields' names)."""
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(TrainConfig)
              if hasattr(args, field.name) and getattr(args, field.name) is not None}
    return TrainConfig(**values)


def evaluate_model_file(model_path: Path, test_dirs: list[Path], out_dir: Path | None = None,
                        batch_size: int = TrainConfig.batch_size, robustness: bool = False,
                        max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[Path, dict[str, Any]]:
    """``--evaluate``: metrics and plots of a saved model on folders of class folders (one source each).

    Returns:
        The output folder and the metrics. The folder is ``out_dir`` (default: ``eval-<folder names
        joined by +>`` beside the model), or when that already holds results, a new ``<out_dir>-2`` (``-3``, ...).
    """
    from realvsai import evaluation, run

    writing, claim = None, contextlib.ExitStack()  # the claims of the folders read and written, until it ends
    try:
        claim.enter_context(working_on([], "ModelTraining.py", reading=test_dirs))  # no run writes them meanwhile
        loaded = run.read_run(model_path)  # model.json is checked before Keras loads
        # Refused before the model loads (10-15 s for ResNet101 on a CPU) and before a folder is announced
        scanned = evaluation.check_folders(loaded.info, test_dirs, max_pixels)
        model, loaded = run.load_run(loaded)
        default_name = output_name("eval-" + "+".join(Path(test_dir).resolve().name for test_dir in test_dirs))
        requested = Path(out_dir) if out_dir is not None else loaded.path / default_name
        if out_dir is None:  # a given one was checked with the command line
            refuse_results_beside_a_model_inside(requested, test_dirs, "--test-dir")
        writing = claim.enter_context(evaluation.claimed_output_folder(requested, given=out_dir is not None))
        metrics = evaluation.evaluate_folders(model, loaded.info, [Path(test_dir) for test_dir in test_dirs],
                                              writing, batch_size=batch_size, robustness=robustness,
                                              max_pixels=max_pixels, scanned=scanned)
    except KeyboardInterrupt:
        raise Interrupted(start_over_advice("evaluation", writing)) from None
    except OSError as error:
        raise_with_partial_results(error, "evaluation", writing)
    finally:
        claim.close()
    return writing, metrics


def output_name(name: str) -> str:
    """A default output folder's ``name`` made to fit the file system with room for the ``-2``, ``-3``, ... that
    numbers it beside earlier results (``files.fit_name``: cut short, with a CRC-32 of the whole)."""
    from realvsai.files import MAX_NAME_BYTES, fit_name

    return fit_name(name, MAX_NAME_BYTES - 8)


def partial_results(out_dir: Path | None) -> list[str]:
    """The result files an --evaluate or --predict stopped part way left in ``out_dir``: the same command writes
    beside them (``evaluation.claimed_output_folder``), where they would pass for results."""
    from realvsai.evaluation import RESULT_FILES

    return [name for name in RESULT_FILES if out_dir is not None and (out_dir / name).exists()]


def raise_with_partial_results(error: OSError, what: str, out_dir: Path | None) -> NoReturn:
    """A file-system error (a full disk) of --evaluate or --predict (``what``), as a UserError naming the results
    it left part way to delete before the same command starts over; ``error`` itself where it left none."""
    if not (written := partial_results(out_dir)):
        raise error
    raise UserError(describe_os_error(error, then=f"delete the part of this {what}'s results in {out_dir} "
                                      f"({', '.join(written)}) and run the same command again (the {what} starts "
                                      "over)")) from None


def start_over_advice(what: str, out_dir: Path | None) -> str:
    """Ctrl-C's advice for --evaluate and --predict, which keep nothing of an interrupted run: the same command
    starts over (beside the results it had begun to write: ``partial_results``)."""
    written = partial_results(out_dir)
    if not written:
        return f"Run the same command again: the {what} starts over."
    them = "it" if len(written) == 1 else "them"
    return (f"{out_dir} holds part of this {what}'s results ({', '.join(written)}): delete {them}, then run the "
            f"same command again (the {what} starts over).")


def continued(args: argparse.Namespace, stop: RunInterrupted | RunWriteFailed, machines: int = 1) -> BaseException:
    """What ``run_main`` is told of a Ctrl-C or a file-system error (a full disk) during training: the command
    that continues the run, once it has saved its settings (before that the same command starts it, and a
    resumed run's command already continues it)."""
    if not stop.resumable:
        return stop
    if args.resume:
        return UserError(describe_os_error(stop, in_place=True)) if isinstance(stop, OSError) else stop
    command = continue_command(args, stop.run_dir, machines)
    if isinstance(stop, OSError):
        return UserError(describe_os_error(stop, then=f"continue the run with: {command}", in_place=True))
    return Interrupted(f"Continue the run with: {command}")


def continue_command(args: argparse.Namespace, run_dir: Path, machines: int) -> str:
    """``config.resume_command`` for the run in ``run_dir`` (the demo's with --demo), with how it keeps what was
    done."""
    if args.demo:
        from realvsai.demo import DemoConfig

        command = resume_command(run_dir, ["--demo", "--resume"], DemoConfig)
    else:
        command = resume_command(run_dir)
    where = " on every machine of the cluster" if machines > 1 else ""
    return f"{command}{where} (its finished epochs are kept)"


def keras_verbose(quiet: bool) -> int | str:
    """Keras' ``verbose`` for training: none with --quiet; its step bars on a terminal; a line per epoch in a
    log, where the bars would write a line every 0.05 s, with terminal escape codes."""
    return 0 if quiet else "auto" if sys.stdout.isatty() else 2


def summarize(result: TrainResult) -> str:
    """One line for the end of a run."""
    from realvsai.metrics import balanced_accuracy_over, distinct_figures, one_answer_text, uncertain_text

    best = result.model_info.get("best_epoch") or {}
    parts = [f"trained {result.run_dir}" if result.chief
             else f"this worker has finished; the chief wrote the run to {result.run_dir} on its machine"]
    if best:
        monitor = best_epoch_monitor(result.model_info)
        parts.append(f"best epoch {best.get('epoch')}: {monitor} {best.get(monitor, math.nan):.4f}, "
                     f"val_accuracy {best.get('val_accuracy', math.nan):.4f}")
    test = result.test_metrics or {}
    if test.get("accuracy") is not None:
        line = f"test accuracy {float(test['accuracy']):.4f}"
        if test.get("balanced_accuracy") is not None:  # the mean recall: what a lopsided test set's accuracy hides
            over = balanced_accuracy_over(test, len(test.get("class_names") or ()))
            line += f" (balanced accuracy {float(test['balanced_accuracy']):.4f}{over})"
        elif "balanced_accuracy" in test and test.get("missing_classes"):  # test images of one class alone
            line += f" (balanced accuracy n/a: no test images of {', '.join(test['missing_classes'])})"
        if test.get("decided_by") == "threshold":  # val_accuracy is Keras': the most probable class decides
            line += (f" at the decision threshold {distinct_figures([float(test['decision_threshold'])], 3)[0]} "
                     f"({float(test['argmax_accuracy']):.4f} by the highest probability, as val_accuracy)")
        if test.get("majority_baseline") is not None:  # always answering the most frequent class
            line += f", majority baseline {float(test['majority_baseline']):.4f}"
        parts.append(line)
    if (one_answer := one_answer_text(test)) is not None:
        parts.append(one_answer)
    if (uncertain := uncertain_text(test)) is not None:  # what the app would answer on the test images
        parts.append(uncertain)
    if result.chief and result.test_metrics is None:  # the threshold is chosen on validation all the same
        data = (result.model_info.get("config") or {}).get("data", "the data folder")
        parts.append(f"no test numbers: {data} has no test folder (evaluate the run on other images with python "
                     f"ModelTraining.py --evaluate {shell_path(result.run_dir)} --test-dir DIR)")
    return "; ".join(parts)


def run_training(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    config.validate()
    # 5-15 s without a bar; without --name, the run's name (a time stamp) is chosen later
    logger.info("loading TensorFlow to train %s", Path(config.out) / config.name if config.name
                else f"a new run in {config.out}")
    from realvsai import distributed, training  # TensorFlow loads here, after the settings are checked

    # Before any other TensorFlow call: a TF_CONFIG cluster sets up its collective operations
    # before the runtime starts. Waits until every machine of the cluster has started.
    strategy = distributed.select_strategy(os.environ)
    if distributed.num_workers(strategy) > 1:  # one machine's devices are named in the training line
        logger.info("training with %s", distributed.describe(strategy))
    if not distributed.is_chief(strategy):
        # The chief logs the run; the others would repeat it, naming their temporary folders.
        logger.info("the chief's log follows the run; this worker shows only warnings and errors")
        logging.getLogger("realvsai").setLevel(logging.WARNING)
    try:
        result = training.train(config, resume=args.resume, data=getattr(args, "data", None), strategy=strategy,
                                verbose=keras_verbose(args.quiet))
    except (training.RunInterrupted, training.RunWriteFailed) as stop:
        raise continued(args, stop, distributed.num_workers(strategy)) from None
    print(summarize(result))
    if result.chief:
        print(f"Next: classify images with it in the browser: {serve_command(result.run_dir)}")


def serve_command(run_dir: Path) -> str:
    """The command that opens the run at ``run_dir`` in the app."""
    return f"streamlit run App.py -- --model {shell_path(run_dir)}"


def run_demo(args: argparse.Namespace) -> None:
    from realvsai import demo, training  # TensorFlow loads when the demo trains

    config = demo.DemoConfig(out=args.out or demo.DemoConfig.out, name=getattr(args, "name", demo.DemoConfig.name))
    try:
        result = demo.run_demo(config, resume=args.resume, verbose=keras_verbose(args.quiet))
    except (training.RunInterrupted, training.RunWriteFailed) as stop:
        raise continued(args, stop) from None
    print(summarize(result))
    print(f"synthetic demo data, not a real result; serve the model with: {serve_command(result.run_dir)}")


def run_evaluation(args: argparse.Namespace) -> None:
    out_dir, metrics = evaluate_model_file(args.evaluate, args.test_dir, args.out, batch_size=args.batch_size,
                                           robustness=args.robustness, max_pixels=args.max_pixels)
    from realvsai.metrics import format_summary
    from realvsai.model_card import robustness_line

    folders = ", ".join(str(folder) for folder in args.test_dir)
    print(f"evaluated {args.evaluate} on {folders}: {format_summary(metrics)}; outputs in {out_dir}")
    if line := robustness_line(metrics):
        print(line)


def run_prediction(args: argparse.Namespace) -> None:
    from realvsai import evaluation, model_card, prediction, run

    out_dir, claim = None, contextlib.ExitStack()  # the claims of the folders read and written, until it ends
    try:
        claim.enter_context(working_on([], "ModelTraining.py", reading=[args.input]))  # no run writes it meanwhile
        prediction.check_input(args.input)  # before the model loads and an output folder is announced
        model, loaded = run.load_run(args.predict)  # model.json is checked before Keras loads
        source = args.input.resolve()
        name = source.stem if source.is_file() else source.name  # predictions-photos; holiday.jpg: predictions-holiday
        requested = args.out or loaded.path / output_name(f"predictions-{name}")
        if args.out is None:  # a given one was checked with the command line
            refuse_results_beside_a_model_inside(requested, [args.input], "--input")
        # Earlier predictions are never replaced, nor those of a run writing at the same time.
        out_dir = claim.enter_context(evaluation.claimed_output_folder(requested, given=args.out is not None))
        summary = prediction.predict_folder(model, loaded.info, args.input, out_dir, batch_size=args.batch_size,
                                            max_pixels=args.max_pixels)
    except KeyboardInterrupt:
        raise Interrupted(start_over_advice("prediction", out_dir)) from None
    except OSError as error:
        raise_with_partial_results(error, "prediction", out_dir)
    finally:
        claim.close()
    if not sum(summary.counts.values()):  # every file was unreadable (an empty folder is refused before)
        name, why = summary.unreadable[0]  # the why, for the fix may be a flag (--max-pixels), not other files
        if args.input.is_file():
            raise UserError(prediction.cannot_predict(args.input, why, read=True))
        raise UserError(f"no file in {args.input} could be predicted ({plural(len(summary.unreadable), 'file')} "
                        f"there, each listed with why in {out_dir / UNREADABLE_FILE}; {name}: {why}). Fix that, or "
                        "give --input a folder of images.")
    for warning in model_card.model_warnings(loaded):  # what the app's page says of this model above its answers
        logger.warning("%s", warning)
    if summary.answer:
        print(summary.answer)
    print(summary.describe(args.input))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.quiet)
    # Before TensorFlow loads: hide its start-up chatter; --quiet also its warnings (Python's and absl's).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3" if args.quiet else "2")
    if args.evaluate is not None:
        body = functools.partial(run_evaluation, args)
    elif args.predict is not None:
        body = functools.partial(run_prediction, args)
    else:
        body = functools.partial(run_demo if args.demo else run_training, args)
    with tensorflow_logs_filtered(args.quiet):
        return run_main(body)


if __name__ == "__main__":
    exit_script(main())
