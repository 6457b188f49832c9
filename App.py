"""Step 8: classify images in the browser: upload photos, see the predicted class, its odds and why.

    models/<run>/model.h5, model.json, metrics.json   ->   http://localhost:8501

The app finds the trained models under models/ (each run folder holds model.h5 + model.json, written
by ModelTraining.py), newest first, with a selector in the sidebar.

For every upload:
- the picture, the predicted class with its probability and a bar per class (with more than five,
  for the five most probable, sorted; the title then asks "Which of 40 classes?")
- the Grad-CAM toggle lays a heatmap over it showing where the evidence for the decided class lies,
  over the part of the image the model saw (outlined)
- Grad-CAM's block: the backbone's last or, at small image sizes, its deepest still 4x4 (the sidebar
  names it; with none, the app says it cannot localise)
- the same file uploaded twice is noted on its second card

How it decides (the page states the rule):
- two classes: by P(positive) at the decision threshold chosen on validation (model.json),
  "Uncertain" when P(positive) is close to it (within (confidence threshold - 0.5) / 0.5 of the way
  to 0 or to 1; the page gives the band)
- each such answer says how P(positive) compares with the threshold (so a class decided below 50%
  says why)
- otherwise: the most probable class, "Uncertain" when its probability is below the confidence
  threshold (sidebar slider; its default comes from model.json)

Never called certain: the answer reads "Uncertain" (not certain on such images), with a warning
beside it, for:
- an upload far outside the training images' sizes or formats, or grayscale where no training
  image was (colour where every one was; model.json's training_images)
- one of a kind of image (its size band) on which validation showed the model at chance, or that
  validation had no image of (model.json's validation_by_kind)

The page also shows:
- the test figures with the number of test images, saying so when they are few (as the model card)
- under the title, model.json's shortcut_warning (training classes differ in image size, format
  or colour)
- for a demo model (model.json: "config": {"demo": true}), a warning at the top and beside every
  answer; its test metrics as a plain caption, never as headline figures
- a summary that counts as --predict's does (an uncertain answer in its class too)
- a table of every upload that downloads as CSV (predictions-<run>.csv), with predictions.csv's
  columns and the run and the save of its model.h5 that answered (model, model_saved)

Start it with Streamlit; the app's own options come after "--":

    streamlit run App.py
    streamlit run App.py -- --model models/<run>
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import realvsai  # noqa: F401 (first: the package's check of the Python version, before the requirements)

# isort: split
import numpy as np
import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile

from realvsai import inference
from realvsai.cli import (
    EXIT_USAGE,
    bounded,
    make_parser,
    nonempty_path,
    plural,
    positive_int,
    setup_logging,
    tensorflow_logs_filtered,
)
from realvsai.config import CROP_GRID, FEW_CLASSES, LIMITS, PREDICTIONS_FILE
from realvsai.errors import UserError
from realvsai.files import csv_text
from realvsai.images import RAISE_LIMIT
from realvsai.layout import mask_images
from realvsai.metrics import CONFIDENCE_STEP, DecisionRule
from realvsai.model_card import (
    NO_TEST_METRICS,
    NO_TEST_METRICS_SHOWN,
    SHORTCUT_CONSEQUENCE,
    code_span,
    few_threshold_images_without_test,
    figure_warnings,
    markdown_text,
    small_test_set,
)
from realvsai.prediction import UNFAMILIAR_MEANS, csv_cell, describe_counts
from realvsai.run import (
    DEMO_WARNING,
    HEADLINE_METRICS,
    ModelInfo,
    ModelRun,
    list_runs,
    load_run_model,
    read_run,
)

if not st.runtime.exists():
    # `python App.py --help`: the cache decorators below would warn that no Streamlit runtime runs.
    for name in ("cache_data_api", "cache_resource_api"):
        logging.getLogger(f"streamlit.runtime.caching.{name}").setLevel(logging.ERROR)

logger = logging.getLogger("realvsai.app")
# On a GPU, the served model takes the memory it uses, not nearly all of it (TensorFlow) nor three quarters (JAX), so
# that a training started beside the app fits on the same GPU. Each backend reads its setting when it first uses the
# GPU, after this line; a user's own is kept.
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
DEFAULTS = inference.DEFAULTS
MAX_CARDS = 60  # uploads shown one by one; the table below them lists all of them
# FEW_CLASSES (config.py, as --predict's summary): up to it the page names every class (title, model line, a
# bar, a count and a table column each); with more, it asks "Which of 40 classes?", a card shows this many most
# probable classes, the summary this many most frequent answers, the table the answer's probability (its CSV all).


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The app's options (after ``--`` on the streamlit command line); unknown ones are ignored."""
    parser = make_parser(__doc__, prog="streamlit run App.py --",
                         quiet="no info lines in the terminal: only warnings and errors")
    parser.add_argument("--model", type=nonempty_path, default=argparse.SUPPRESS,
                        help="a run folder (or its model.h5 or model.json) to open first "
                             "(default: the newest in --models)")
    parser.add_argument("--models", type=nonempty_path, default=DEFAULTS.models_dir,
                        help="the folder holding the training runs")
    parser.add_argument("--batch-size", type=positive_int, default=DEFAULTS.batch_size,
                        help="uploads per model call")
    parser.add_argument("--max-pixels", type=bounded(int, LIMITS["max_pixels"]), default=DEFAULTS.max_pixels,
                        help="uploads with more pixels, as the model decodes them (in resize mode a large JPEG "
                             "reduced: a 200 MP phone photo passes), are refused unread (decompression bombs)")
    # Tolerant: whatever else ends up in sys.argv (a test runner's, Streamlit's) must not stop the app.
    args, unknown = parser.parse_known_args(argv)
    args.model = getattr(args, "model", None)  # SUPPRESS: so --help shows the default in words, once
    args.ignored = unknown
    return args


@dataclass(frozen=True)
class Settings:
    """What the sidebar controls."""

    rule: DecisionRule  # the model's decision rule with the sidebar's confidence threshold
    explain: bool


# --------------------------------------------------------------------------------- cached work


def file_stamp(path: Path) -> tuple[int, int, int, int]:
    """What tells one version of a file from another: a training saves each better epoch's model.h5 under another
    name and renames it over the last, so every save is another file (device and inode), whatever its date."""
    status = path.stat()
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


class ModelFileChanged(Exception):
    """model.h5 was replaced while it loaded (a training saved a better epoch meanwhile)."""


LOAD_TRIES = 3  # loads of a model.h5 that a training keeps replacing before the page says so
# Loaded models kept, the least recently used dropped first: going round three runs in the sidebar loads each once. A
# ResNet101 at float32 holds about 170 MB (weights alone); a run retrained under its name keeps its old model here
# until it is dropped.
MODELS_KEPT = 3


@st.cache_resource(show_spinner="Loading the model…", max_entries=MODELS_KEPT)
def cached_classifier(model_key: str, stamp: tuple[int, ...], batch_size: int, _run: ModelRun) -> inference.Classifier:
    """The model of ``_run`` (the model.json the page shows, ``model_key``: ``answers_key``) at the version of its
    model.h5 that ``stamp`` (``file_stamp``) names, checked to fit that model.json: loaded once per version of both (a
    retrained run reloads); ModelFileChanged, and nothing cached, when the file loaded is no longer that version."""
    del model_key  # only the cache key
    with tensorflow_logs_filtered(quiet=False):  # the first load starts TensorFlow: its notices tell a user nothing
        model = load_run_model(_run)
        if file_stamp(_run.model_file) != stamp:  # what was loaded may be either version: cached as neither
            raise ModelFileChanged(_run.model_file)
        return inference.Classifier.for_run(model, _run, batch_size)


def classify(classifier: inference.Classifier, model_key: str, uploads: list[UploadedFile], batch_size: int,
             max_pixels: int, info: ModelInfo) -> list[inference.UploadResult]:
    """The uploads' results, each kept in the session by its upload id (unique per upload, stable across reruns: no
    byte is hashed again), the model's ``model_key`` and whether it is a mask beside its image: moving a slider
    classifies nothing again, adding a file classifies it alone, and a removed file's result is let go."""
    masks = mask_images([file.name for file in uploads])
    keys = [(model_key, max_pixels, file.file_id, masks.get(file.name)) for file in uploads]
    kept = st.session_state.get("results", {})
    new = {key: file for key, file in zip(keys, uploads, strict=True) if key not in kept}
    if new:
        fresh = inference.classify_uploads(classifier, ((file.name, file.getvalue()) for file in new.values()),
                                           batch_size=batch_size, max_pixels=max_pixels, info=info,
                                           masks={file.name: key[-1] for key, file in new.items() if key[-1]})
        kept = {**kept, **dict(zip(new, fresh, strict=True))}
    st.session_state["results"] = {key: kept[key] for key in keys}
    return [kept[key] for key in keys]


@st.cache_data(show_spinner=False, max_entries=256)
def explain(_classifier: inference.Classifier, model_key: str, upload_id: str, _result: inference.UploadResult,
            class_index: int) -> np.ndarray:
    """The Grad-CAM overlay of one classified upload, for the class ``class_index``."""
    del upload_id  # only part of the cache key
    return inference.explain_result(_classifier, _result, class_index)


# ------------------------------------------------------------------------------------- helpers


def results_table(results: Sequence[inference.UploadResult], class_names: Sequence[str], rule: DecisionRule
                  ) -> list[dict[str, Any]]:
    """One row per upload: its number (``upload``, as its card shows it: a phone names every photo image.jpg),
    predictions.csv's columns (file, predicted, ``probability_<class>``, uncertain, unfamiliar) and an ``error`` for
    an upload that could not be classified."""
    rows = []
    for number, result in enumerate(results, start=1):
        row: dict[str, Any] = {"upload": number, "file": result.name, "predicted": None}
        row.update({f"probability_{name}": None for name in class_names})
        row.update(uncertain=None, unfamiliar=result.unfamiliar or "", error=result.error or "")
        if result.ok:
            index, uncertain = result.answer(rule)
            row["predicted"] = class_names[index]
            row.update({f"probability_{name}": float(p) for name, p in zip(class_names, result.probabilities)})
            row["uncertain"] = uncertain
        rows.append(row)
    return rows


def shown_table(rows: Sequence[dict[str, Any]], class_names: Sequence[str]) -> list[dict[str, Any]]:
    """The table as the page shows it: with more than FEW_CLASSES classes, the decided class's ``probability`` in
    place of a ``probability_<class>`` column per class (the CSV keeps them all)."""
    if len(class_names) <= FEW_CLASSES:
        return list(rows)
    per_class = {f"probability_{name}" for name in class_names}
    shown = []
    for row in rows:
        short: dict[str, Any] = {}
        for key, value in row.items():
            if key not in per_class:
                short[key] = value
            if key == "predicted":
                short["probability"] = None if value is None else row[f"probability_{value}"]
        shown.append(short)
    return shown


def summary_counts(results: Sequence[inference.UploadResult], class_names: Sequence[str],
                   rule: DecisionRule) -> str:
    """``1,200 FAKE, 800 REAL (35 uncertain, 2 unfamiliar); 3 not classified``: counted and worded as --predict's
    summary (``prediction.describe_counts``, which names the most frequent answers of more than FEW_CLASSES classes):
    an uncertain answer counts in its decided class too."""
    counts = {name: 0 for name in class_names}
    num_uncertain = num_unfamiliar = num_failed = 0
    for result in results:
        if not result.ok:
            num_failed += 1
            continue
        index, uncertain = result.answer(rule)
        counts[class_names[index]] += 1
        num_uncertain += uncertain
        num_unfamiliar += result.unfamiliar is not None
    if len(class_names) > FEW_CLASSES and not any(counts.values()):  # it would name no class answered
        return f"{num_failed:,} not classified"
    line = describe_counts(counts, num_uncertain, num_unfamiliar, explained=False)  # the page says it beneath
    return line + (f"; {num_failed:,} not classified" if num_failed else "")


# The library's pixel-limit refusal names every script's --max-pixels; a web user gets the app's own.
APP_RAISE_LIMIT = "whoever starts the app sets it: streamlit run App.py -- --max-pixels N"


def in_app_terms(results: Sequence[inference.UploadResult]) -> list[inference.UploadResult]:
    """``results`` with the pixel limit's refusal saying how the app's limit is raised (rather than the scripts')."""
    return [dataclasses.replace(result, error=result.error.replace(RAISE_LIMIT, APP_RAISE_LIMIT))
            if result.error and RAISE_LIMIT in result.error else result for result in results]


def duplicates(uploads: Sequence[UploadedFile]) -> dict[int, int]:
    """For each upload whose bytes an earlier one has, the index of the first of them."""
    sizes = Counter(upload.size for upload in uploads)
    first_by_hash: dict[str, int] = {}
    same_as = {}
    for index, upload in enumerate(uploads):
        if sizes[upload.size] < 2:  # only files of a size seen twice are hashed
            continue
        digest = hashlib.sha256(upload.getvalue()).hexdigest()
        if digest in first_by_hash:
            same_as[index] = first_by_hash[digest]
        else:
            first_by_hash[digest] = index
    return same_as


def results_csv(rows: Sequence[dict[str, Any]], run: ModelRun, stamp: tuple[int, ...]) -> str:
    """The results table as CSV text, written as predictions.csv is, each row ending with the run that answered
    (``model``) and the save of its model.h5 (``model_saved``, as the page's "Answered by" line gives it): the CSVs of
    two runs, or of two saves of one, tell themselves apart."""
    if not rows:
        return ""
    answered = {"model": run.name, "model_saved": saved_at(stamp)}
    return csv_text([*rows[0], *answered],
                    [[csv_cell(value) for value in [*(row[key] for key in rows[0]), *answered.values()]]
                     for row in rows])


def csv_file_name(run: ModelRun) -> str:
    """The downloaded CSV's name: predictions.csv with the name of the run that answered (``predictions-older.csv``)."""
    name = Path(PREDICTIONS_FILE)
    return f"{name.stem}-{run.name}{name.suffix}"


def _shown_names(run: ModelRun) -> list[str]:
    """The run's class names as Markdown that shows them as they are (the page's text is Markdown)."""
    return [markdown_text(name) for name in run.class_names]


def run_labels(runs: Sequence[ModelRun]) -> dict[str, str]:
    """The sidebar's label of each run, by its folder: its name and date, and where another run has that label too (a
    ``--model`` run beside a run of its name under ``--models``, trained the same minute), the folder holding it: the
    browser holds the choice by its label, so two runs of one label would be one choice."""
    labels = {str(run.path): f"{run.name} · {run.created.astimezone():%Y-%m-%d %H:%M}" for run in runs}
    shared = Counter(labels.values())
    return {path: f"{label} · in {Path(path).parent}" if shared[label] > 1 else label for path, label in labels.items()}


def answers_key(run: ModelRun, stamp: tuple[int, ...]) -> str:
    """What the loaded model and the answers of the cached uploads depend on: the version of model.h5 loaded
    (``stamp``, as ``open_model`` loaded) and the model.json read for this page (its classes, size and input mode
    build the model; ``validation_by_kind`` flags uploads). Both as used, not as the files are by now: a training
    writes them while the page reruns."""
    info = json.dumps(run.info.content, sort_keys=True, default=str)
    return f"{run.model_file}:{stamp}:{hashlib.sha256(info.encode()).hexdigest()}"


def saved_at(stamp: tuple[int, ...]) -> str:
    """When the version of model.h5 of ``stamp`` (``file_stamp``'s) was saved, in local time to the second."""
    return f"{datetime.fromtimestamp(stamp[3] / 1e9):%Y-%m-%d %H:%M:%S}"


def model_version(run: ModelRun, stamp: tuple[int, ...]) -> str:
    """The run and the save of its model.h5 that answer, as the page names them: a run retrained under its name, or a
    training's next best epoch, is another save of the same run."""
    return f"{code_span(run.name)}'s model.h5 of {saved_at(stamp)}"


def answers_changed(run: ModelRun, stamp: tuple[int, ...], uploads: Sequence[UploadedFile]) -> str | None:
    """What to say, once, when the uploads answered at the last rerun are answered by another save of the same run's
    model.h5 (a training saved a better epoch, or the run was retrained under its name); None otherwise."""
    answered = (tuple(upload.file_id for upload in uploads), str(run.path), stamp)
    before = st.session_state.get("_answered")
    st.session_state["_answered"] = answered
    if before is None or before[:2] != answered[:2] or before[2] == stamp:
        return None
    return (f"{code_span(run.name)}'s model.h5 was saved again since these uploads were answered (by its save of "
            f"{saved_at(before[2])}): the answers below are the new one's, of {saved_at(stamp)}.")


def _grad_cam_source(classifier: inference.Classifier) -> str:
    if problem := classifier.grad_cam_problem:
        return problem
    layer = classifier.grad_cam_layer
    height, width = layer.output.shape[1:3]
    return (f"Grad-CAM weighs the feature map of {code_span(layer.name)} ({height}×{width} at "
            f"{classifier.image_size} px).")


# ---------------------------------------------------------------------------------- sections


def find_runs(models_dir: Path, explicit: Path | None) -> tuple[list[ModelRun], int, list[tuple[Path, str]]]:
    """The runs to offer, the index of the one to open first (``--model``, else the newest), and the run folders
    skipped, with why; a ``--model`` that cannot be opened ends the page with why."""
    runs, skipped = list_runs(models_dir)
    for folder, reason in skipped:
        st.sidebar.warning(f"Skipped {code_span(folder.name)}: {reason}")
    if explicit is None:
        return runs, 0, skipped
    try:
        chosen = read_run(explicit)
    except UserError as error:  # no other run instead: its answers would pass for the one asked for
        # A paragraph of its own: the loader's advice may end with a command, which takes no full stop.
        st.error(f"--model {code_span(str(explicit))}: {error}\n\nOr start the app without `--model` to choose among "
                 f"the runs in {code_span(str(models_dir))}.")
        st.stop()
    for index, run in enumerate(runs):
        if run.path.resolve() == chosen.path.resolve():
            return runs, index, skipped
    return [chosen, *runs], 0, skipped


def no_model_page(models_dir: Path, skipped: Sequence[tuple[Path, str]]) -> None:
    """What a first-time user sees: how to get a model (or why the runs there cannot be opened)."""
    st.title("🔍 Image classifier")  # the tab's name too (main); a model's own question replaces both
    if skipped:
        folder, reason = skipped[0]
        others = f" (and {len(skipped) - 1} more, listed in the sidebar)" if len(skipped) > 1 else ""
        st.error(f"No run in {code_span(str(models_dir))} can be opened: {code_span(folder.name)}{others} "
                 f"was skipped: {reason}")
    elif not models_dir.is_dir():
        what = "a file, not a folder" if models_dir.is_file() else "no such folder"
        st.info(f"{code_span(str(models_dir))}: {what}. Give `--models` the folder that holds the "
                "training runs (default: `models`), or train a model first.")
    else:
        st.info(f"There is no trained model in {code_span(str(models_dir))} yet.")
    st.markdown("Train one on the small built-in demo dataset (a few minutes on a laptop), then start the app again:")
    st.code("python ModelTraining.py --demo\nstreamlit run App.py", language="bash")
    st.markdown("Trained one somewhere else? Point the app at its folder (the one holding `model.h5` and "
                "`model.json`):")
    st.code("streamlit run App.py -- --model PATH/TO/RUN", language="bash")


def model_selector(runs: list[ModelRun], default: int, skipped: Sequence[tuple[Path, str]]) -> ModelRun:
    """The sidebar's model choice; a chosen run no longer among ``runs`` is said to be gone, with why (``skipped``: the
    run folders ``list_runs`` skipped, with why), naming the run that answers instead."""
    by_path = {str(run.path): run for run in runs}
    labels = run_labels(runs)
    previous = st.session_state.get("model")  # the run chosen before this rerun
    # Set on every run, not only the first: the browser holds the choice by its label (run_labels) and sends it
    # back, and a run retrained under its name has another date. Setting it sends the browser today's label; the old
    # one, sent back with the next click, would match no run: the page would serve the default, calling the run gone.
    st.session_state["model"] = previous if previous in by_path else list(by_path)[default]
    chosen = st.sidebar.selectbox("Model", list(by_path), key="model",
                                  format_func=labels.__getitem__,
                                  help="Trained runs found in the models folder, newest first.")
    if previous is not None and previous not in by_path:  # Streamlit falls back on the default without a word
        # Not chosen again by itself when it comes back: the answers would change without a click.
        name = code_span(Path(previous).name)
        why = {str(folder): reason for folder, reason in skipped}.get(previous)
        gone = ("it can no longer be opened, for the reason below" if why else
                f"its folder {code_span(previous)} no longer holds a trained run" if Path(previous).is_dir() else
                f"its folder {code_span(previous)} was deleted or renamed (a renamed run is listed under its new name)")
        st.warning(f"The model you chose, {name}, is no longer available: {gone}. {code_span(by_path[chosen].name)} "
                   f"answers instead until you choose another model in the sidebar ({name} again, once it is back "
                   "there)." + (f"\n\n{name}: {why}" if why else ""))
    return by_path[chosen]


def open_model(run: ModelRun, batch_size: int, others: bool) -> tuple[inference.Classifier, tuple[int, ...]]:
    """The loaded model and the version of model.h5 it was loaded from (``file_stamp``); an unreadable one ends the
    page with a message instead of a traceback (``others``: whether the sidebar offers other models)."""
    elsewhere = " Or choose another model in the sidebar." if others else ""
    try:
        for _ in range(LOAD_TRIES):
            stamp = file_stamp(run.model_file)
            with contextlib.suppress(ModelFileChanged):  # loaded as a training replaced it: load the new one
                return cached_classifier(answers_key(run, stamp), stamp, batch_size, run), stamp
        st.error(f"{code_span(str(run.model_file))} was replaced each of the {LOAD_TRIES} times the app loaded it: a "
                 f"training is saving it. Rerun the page (press R) in a moment.{elsewhere}")
    except UserError as error:
        st.error(f"{error}{elsewhere}")
    except Exception as error:  # Keras raises many types for a damaged or foreign file; all end here
        logger.exception("cannot load %s", run.model_file)
        st.error(f"Could not load {code_span(str(run.model_file))} ({type(error).__name__}: {error}). "
                 f"Train the model again.{elsewhere}")
    st.stop()


def sidebar_settings(run: ModelRun, classifier: inference.Classifier) -> Settings:
    """The confidence threshold and the Grad-CAM switch (with the layer it explains from)."""
    # The values the evaluation counted the test images' Uncertain answers at (``DecisionRule.confidences``)
    rule = run.info.rule()
    two_classes, values = rule.at_threshold(len(run.class_names)), rule.confidences(len(run.class_names))
    threshold = st.sidebar.slider(
        "Confidence threshold", min_value=values[0], max_value=values[-1],
        value=max(values[0], run.confidence_threshold), step=CONFIDENCE_STEP, key=f"threshold:{run.path}",
        help=("An answer is Uncertain when P(positive) lies within (this − 0.5) / 0.5 of the way from the decision "
              "threshold to 0 and to 1 (the page states the band); 0.5: never by probability." if two_classes else
              "An answer is Uncertain when its top probability is below this.")
        + " The default comes from the model's model.json.")
    side = DEFAULTS.grad_cam_min_size
    explain_on = st.sidebar.toggle("Explain with Grad-CAM", value=False, key="explain",
                                   help="Colours the regions that made the model choose its class "
                                        "(gradient-weighted class activation map of the backbone's last "
                                        f"block, or of its deepest block still {side}×{side} at small image "
                                        "sizes). Costs about one extra model call per image.")
    if explain_on:
        st.sidebar.caption(_grad_cam_source(classifier))
    return Settings(run.info.rule(threshold), explain_on)


METRICS_A_ROW = 3  # headline tiles side by side: six read "0.…" in a window 1024 px wide with the sidebar open


def metric_name(name: str, class_names: Sequence[str], positive: str) -> str:
    """A headline metric's name: with three classes or more, all but accuracy are macro averages over the classes (the
    balanced accuracy is the mean recall by its name); with two, precision, recall and F1 are the ``positive``
    class's."""
    if name in ("accuracy", "balanced_accuracy", "roc_auc") and len(class_names) == 2:
        return HEADLINE_METRICS[name]
    if len(class_names) == 2:
        return f"{HEADLINE_METRICS[name]} ({positive})"
    return HEADLINE_METRICS[name] + ("" if name in ("accuracy", "balanced_accuracy") else " (macro)")


def model_card(run: ModelRun, settings: Settings) -> None:
    """The chosen model at a glance: classes, image size, test metrics, date, decision rule."""
    shown = _shown_names(run)  # Markdown: "*x*" would turn italic, "<b>" bold
    many = len(shown) > FEW_CLASSES
    question = (f"Which of {len(shown)} classes?" if many
                else f"{', '.join(run.class_names[:-1])} or {run.class_names[-1]}?")
    st.set_page_config(page_title=question)  # the browser tab asks it too (first set to the app's name in main)
    st.title(f"🔍 {question}" if many else f"🔍 {', '.join(shown[:-1])} or {shown[-1]}?")
    if run.demo:
        st.warning(f"**{DEMO_WARNING}** Its answers show how the app works, nothing about your "
                   "images. Train on real data (README, steps 1-6) for a detector.", icon="⚠️")
    if run.unfinished:
        st.warning(run.unfinished, icon="⚠️")
    if run.info.get("shortcut_warning"):
        st.warning(f"**{run.info.get('shortcut_warning')}** {SHORTCUT_CONSEQUENCE}", icon="⚠️")
    with st.container(border=True):
        details = [f"Model **{run.name}**", f"trained {run.created.astimezone():%Y-%m-%d %H:%M}",
                   f"{len(shown)} classes" if many else f"classes {', '.join(shown)}",
                   f"{CROP_GRID}×{CROP_GRID} crops of {run.image_size} px at native resolution"
                   if run.info.input_mode == "crops" else f"{run.image_size} px"]
        backbone = run.info.get("backbone")
        if backbone:
            details.append(str(backbone))
        st.markdown(" · ".join(details))
        if many:
            with st.expander(f"The {len(shown)} classes"):
                st.markdown(", ".join(shown))
        metrics = run.test_metrics()
        num_images = run.num_test_images()
        on_images = plural(num_images, "test image") if num_images is not None else "test images (number not recorded)"
        positive = shown[settings.rule.positive_index] if len(shown) == 2 else ""
        if metrics and run.demo:  # no headline figures: they measure the synthetic test images only
            st.caption(f"Test metrics on {on_images}, synthetic demo images (they say nothing about real ones): "
                       + ", ".join(f"{metric_name(name, shown, positive)} {value:.3f}"
                                   for name, value in metrics.items()))
        elif metrics:
            tiles = list(metrics.items())
            for first in range(0, len(tiles), METRICS_A_ROW):
                row = tiles[first:first + METRICS_A_ROW]
                for column, (name, value) in zip(st.columns(METRICS_A_ROW), row):
                    column.metric(f"Test {metric_name(name, shown, positive)}", f"{value:.3f}")
            uncertain = run.test_uncertain(settings.rule.confidence_threshold)
            st.caption(" ".join(text for text in (f"Measured on {on_images}"
                                                  + (f"; the app's rule said {uncertain}." if uncertain else "."),
                                                  small_test_set(num_images)) if text))
            for warning in figure_warnings(run):
                st.warning(warning, icon="⚠️")
        elif run.unmeasured:
            st.warning(f"{NO_TEST_METRICS_SHOWN}: {run.unmeasured}", icon="⚠️")
        else:
            st.caption(NO_TEST_METRICS)
            if said := few_threshold_images_without_test(run, shown, settings.rule.positive_index):
                st.warning(said, icon="⚠️")
        st.caption(settings.rule.describe(shown))


def upload_section() -> list[UploadedFile]:
    """The file uploader; returns the uploaded files (possibly none)."""
    # Any file: one of a format not read here (an iPhone's HEIC) gets a card saying what to do, not Streamlit's
    # "image/heif files are not allowed"; a JPEG saved without an extension is read by its content.
    files = st.file_uploader("Upload images", accept_multiple_files=True, key="uploads",
                             help="JPG (or JFIF), PNG, WebP or BMP; one or many at once.")
    if not files:
        st.caption("Drop one or more images above. Each one gets a predicted class with its probability; "
                   "switch on Grad-CAM in the sidebar to see where the evidence lies.")
    return list(files or [])


def result_card(result: inference.UploadResult, upload: UploadedFile, number: int, classifier: inference.Classifier,
                key: str, run: ModelRun, settings: Settings, note: str | None = None) -> None:
    """Upload ``number``: its picture (and heatmap), the verdict and a bar per class (with more than FEW_CLASSES
    classes, for the most probable, the others folded away); ``note`` above them. ``key``: the answers'
    (``answers_key``)."""
    with st.container(border=True):
        if note:
            st.caption(note)
        if not result.ok:
            st.error(f"{code_span(result.name)} could not be classified: {result.error}")
            return
        index, uncertain = result.answer(settings.rule)
        predicted = run.class_names[index]
        columns = st.columns([1, 1, 1.2] if settings.explain else [1, 1.6])
        columns[0].image(result.preview, caption=f"{number} · {result.name}", width="stretch")
        if settings.explain and classifier.grad_cam_layer is None:
            columns[1].info(_grad_cam_source(classifier))
        elif settings.explain:
            try:
                overlay = explain(classifier, key, upload.file_id, result, index)
                columns[1].image(overlay,
                                 caption=f"Grad-CAM: evidence for {predicted}", width="stretch")
            except Exception as error:  # an explanation that fails must not take the verdict with it
                logger.exception("Grad-CAM failed for %s", result.name)
                columns[1].warning(f"Grad-CAM failed for {code_span(result.name)} ({type(error).__name__}: {error}).")
        with columns[-1]:
            st.markdown("### :orange[Uncertain]" if uncertain else f"### {markdown_text(predicted)}")
            shown = _shown_names(run)
            st.caption(settings.rule.reason(result.probabilities, shown, result.unfamiliar is not None))
            if result.unfamiliar:  # it may name classes
                st.warning(f"Not to be trusted here ({markdown_text(result.unfamiliar)}): its answer may mean nothing "
                           "on such images, so it is never called certain.", icon="⚠️")
            if run.demo:
                st.warning(DEMO_WARNING, icon="⚠️")
            bars = list(zip(shown, result.probabilities))
            if len(bars) > FEW_CLASSES:  # the most probable first, the rest folded away
                bars = sorted(bars, key=lambda bar: -bar[1])
                bars, rest = bars[:FEW_CLASSES], bars[FEW_CLASSES:]
            else:
                rest = []
            for name, value in bars:
                st.progress(float(np.clip(value, 0.0, 1.0)), text=f"{name}: {value:.1%}")
            if rest:
                with st.expander(f"and {plural(len(rest), 'more class', 'more classes')}"):
                    st.caption(" · ".join(f"{name}: {value:.1%}" for name, value in rest))


def results_section(results: list[inference.UploadResult], uploads: list[UploadedFile],
                    classifier: inference.Classifier, stamp: tuple[int, ...], run: ModelRun,
                    settings: Settings) -> None:
    """The model that answered and a card per upload (the first MAX_CARDS of them); ``stamp``: the version of model.h5
    that answered (``file_stamp``)."""
    st.subheader(f"{plural(len(results), 'image')}: "
                 f"{summary_counts(results, _shown_names(run), settings.rule)}")
    if any(result.ok and result.unfamiliar is not None for result in results):
        st.caption(f"Unfamiliar: {UNFAMILIAR_MEANS}; such an answer is never called certain.")
    st.caption(f"Answered by {model_version(run, stamp)}.")  # the card is at the top, and the model may change
    changed = answers_changed(run, stamp, uploads)
    if changed:
        st.info(changed, icon="🔄")
    key = answers_key(run, stamp)
    same_as = duplicates(uploads)
    for number, (result, upload) in enumerate(list(zip(results, uploads))[:MAX_CARDS]):
        first = same_as.get(number)
        note = None if first is None else f"Same file as upload {first + 1}, {code_span(uploads[first].name)}."
        try:
            result_card(result, upload, number + 1, classifier, key, run, settings, note)
        except Exception as error:  # one odd upload must not take the page down
            logger.exception("cannot show %s", result.name)
            st.error(f"{code_span(result.name)}: unexpected error ({type(error).__name__}: {error})")
    if len(results) > MAX_CARDS:
        st.caption(f"Showing the first {MAX_CARDS} of {len(results)} uploads; the table below lists all of them.")


def batch_table(results: list[inference.UploadResult], run: ModelRun, stamp: tuple[int, ...],
                settings: Settings) -> None:
    """Every upload in one table (with many classes, the answer's probability rather than every class's), downloadable
    as CSV with every class's, naming the run and the save of its model.h5 (``stamp``) that answered."""
    rows = results_table(results, run.class_names, settings.rule)
    st.subheader("All results")
    if run.demo:
        st.caption(DEMO_WARNING)
    bars = {f"probability_{name}": f"P({name})" for name in run.class_names} if len(run.class_names) <= FEW_CLASSES \
        else {"probability": "P(predicted)"}
    probability_columns = {column: st.column_config.ProgressColumn(label, min_value=0.0, max_value=1.0, format="%.3f")
                           for column, label in bars.items()}
    st.dataframe(shown_table(rows, run.class_names), hide_index=True, column_config=probability_columns)
    st.download_button("Download CSV", data=results_csv(rows, run, stamp), file_name=csv_file_name(run),
                       mime="text/csv", icon=":material/download:", on_click="ignore", key="download")


# -------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    st.set_page_config(page_title="Image classifier", page_icon="🔍", layout="wide")
    usage = io.StringIO()
    try:
        with contextlib.redirect_stderr(usage), contextlib.redirect_stdout(usage):
            args = parse_args(argv)
    except SystemExit as stop:  # argparse's exit would end Streamlit's script thread, leaving a blank page
        if not stop.code:  # --help
            st.code(usage.getvalue(), language=None)
            return 0
        # The parser's one line, which names the help (`streamlit run App.py -- --help`).
        st.error(f"{usage.getvalue().strip().splitlines()[-1]} The app's options come after `--`.")
        return int(stop.code)
    setup_logging(args.quiet)
    if args.ignored:  # `streamlit run App.py models/run` would open another model without a word
        logger.warning("ignoring unknown arguments: %s", " ".join(args.ignored))
        st.warning(f"Ignored {code_span(' '.join(args.ignored))}: the app takes `--model RUN`, `--models FOLDER`, "
                   "`--batch-size`, `--max-pixels` and `--quiet`, after `--` (`streamlit run App.py -- --model RUN`).")
    runs, default, skipped = find_runs(args.models, args.model)
    if not runs:
        no_model_page(args.models, skipped)
        return 0
    run = model_selector(runs, default, skipped)
    classifier, stamp = open_model(run, args.batch_size, others=len(runs) > 1)
    settings = sidebar_settings(run, classifier)
    model_card(run, settings)
    uploads = upload_section()
    if not uploads:
        return 0
    with st.spinner(f"Classifying {plural(len(uploads), 'image')}…"):
        results = classify(classifier, answers_key(run, stamp), uploads, args.batch_size, args.max_pixels, run.info)
    results = in_app_terms(results)
    results_section(results, uploads, classifier, stamp, run, settings)
    batch_table(results, run, stamp, settings)
    return 0


if __name__ == "__main__":
    if st.runtime.exists():
        main()  # under Streamlit: no sys.exit, which would end the script run rather than a process
    else:
        parse_args()  # so that `python App.py --help` shows the options
        print("error: App.py is a Streamlit app, not a script: start it with streamlit run App.py [-- --model PATH]",
              file=sys.stderr)
        sys.exit(EXIT_USAGE)
