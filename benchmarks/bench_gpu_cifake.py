"""CIFAKE at full scale, from scratch, with training's recipe: the "cifake" figures of benchmarks/results/gpu.json
(and "cifake_64px" with --image-size 64, "cifake_64px_20epochs" with --epochs 20 too).

The pipeline's own steps, on a machine that may have no TensorFlow (a GPU box set up for JAX): the
archive is unzipped as DataUnZipper.py does and split as DataSplitD2.py does (validation carved out of
each train class, seeded; a train file identical to a test file left out), the splits are decoded into
memory (``realvsai.arrays``), and the model trains with ModelTraining.py's recipe from scratch
(``build_model``, the optimizer and its schedule, the phases and callbacks of ``fitting.fit_phases``,
class weights, the precision policy: mixed_bfloat16 on a GPU under JAX) through ``model.fit``. The
test accuracy is the app's (the decision threshold chosen on validation, as the evaluation chooses it),
with the most-probable-class accuracy beside it. The preset's JPEG step is not part of this input: it
belongs to training's tf.data input (TensorFlow's codec); the preset's model layers all train.

Resumable: the same command continues a stopped run after its last finished epoch, as long as --work survives (on
a lent machine: give the next command while it is still warm), from the images the first decoded
(WORK/decoded-32px.npz: a minute of each command at full scale) and, on JAX, with the steps it compiled
(WORK/jax-cache: half a minute less). The training time adds up across the commands. ``--time-limit`` fits a
command into the time at hand: training stops after the epoch past which another would not end TEST_RESERVE_S
before the limit, and the model is tested all the same (``stopped_by_time_limit`` in the figures); the same
command, with a later limit or none, goes on from there.

Only the default data and settings (--work, --time-limit, --image-size and --epochs aside) merge their figures
into benchmarks/results/gpu.json, as "cifake" at 32 px and the default epochs, "cifake_64px" for --image-size 64,
"cifake_64px_20epochs" for --image-size 64 --epochs 20; any other run merges only into where --results says.

Examples (on the GPU machine, about 10 minutes a command):
    KERAS_BACKEND=jax python benchmarks/bench_gpu_cifake.py --work /tmp/cifake
    KERAS_BACKEND=jax python benchmarks/bench_gpu_cifake.py --work /tmp/cifake64 --image-size 64
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._bench import Destination, add_results_option, results_destination, zip_entries  # noqa: E402
from realvsai.cli import positive_int, run_main, setup_logging  # noqa: E402
from realvsai.config import BACKBONES, BACKUP_DIR, PRECISIONS, PRESETS, TrainConfig  # noqa: E402
from realvsai.errors import UserError  # noqa: E402

DEFAULT_ZIP = REPO.parent / "shared" / "datasets" / "cifake-trainsplit.zip"
WALL_FILE = "wall.json"  # training seconds of the earlier commands, kept in the run folder
# What --time-limit keeps back for testing (the best weights restored, validation and test predicted and scored):
# on an H200 at 64 px a command ended at most 27 s after its last epoch (14 s where it resumed the run, the
# prediction compiled already); a reserve of 60 s kept the 20th epoch out of a command that then ended 77 s before
# its limit.
TEST_RESERVE_S = 40
STARTED = time.monotonic()
logger = logging.getLogger("realvsai.bench_gpu_cifake")


def make_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zip", type=Path, default=DEFAULT_ZIP, help="the CIFAKE archive (default: %(default)s)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cifake-gpu"),
                        help="the unzipped, split data and the run go here (default: %(default)s)")
    parser.add_argument("--image-size", type=positive_int, default=32,
                        help="the side the model sees; it upscales the 32 px images itself (default: %(default)s)")
    parser.add_argument("--epochs", type=positive_int, default=defaults.total_epochs,
                        help="epochs from scratch (default: training's %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="(default: %(default)s)")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate, help="(default: %(default)s)")
    parser.add_argument("--backbone", choices=BACKBONES, default=defaults.backbone, help="(default: %(default)s)")
    parser.add_argument("--augment", choices=PRESETS, default=defaults.augment, help="(default: %(default)s)")
    parser.add_argument("--precision", choices=PRECISIONS, default=defaults.precision,
                        help="(default: %(default)s: mixed_bfloat16 on a GPU under JAX)")
    parser.add_argument("--limit", type=positive_int, default=None,
                        help="train on the first N training images (seeded order) only, to fit the time at hand")
    parser.add_argument("--time-limit", type=positive_int, default=None, metavar="SECONDS",
                        help="stop training when another epoch would end later than SECONDS after this command "
                             f"started, less {TEST_RESERVE_S} s to test the model (default: train every epoch)")
    parser.add_argument("--profile-steps", type=positive_int, default=None, metavar="N",
                        help="on JAX, trace N training steps of this command's first epoch (from its 11th, past the "
                             "compile) into WORK/profile, a Perfetto trace (ui.perfetto.dev) of what the host and "
                             "the device did")
    add_results_option(parser, "gpu")
    return parser


def prepare(archive: Path, work: Path) -> Path:
    """WORK/data/{train,validation,test}: the archive unzipped and split, as steps 1 and 2b of the README do."""
    from realvsai.archives import extract_archive
    from realvsai.splitting import LINK, split_train_test

    data = work / "data"
    if not (data / "test").is_dir():
        extract_archive(archive, work / "raw")
        split_train_test(work / "raw", data, mode=LINK, overwrite=True)
    return data


def decoded_splits(data_dir: Path, image_size: int) -> tuple[list[str], ...]:
    """The class names, then (pixels, labels) of train, validation and test, as ``arrays.load_images`` decodes
    them: kept in WORK/decoded-SIZEpx.npz by the first command, so that the next reads them at once (the scan and
    decode of the 100,000 images took a minute of each command on an H200)."""
    import numpy as np

    from realvsai import arrays, data
    from realvsai.files import atomic_write

    cache = data_dir.parent / f"decoded-{image_size}px.npz"
    if cache.is_file():
        logger.info("reading the decoded splits from %s", cache)
        with np.load(cache) as stored:
            return (stored["class_names"].tolist(), *((stored[f"{split}_x"], stored[f"{split}_y"])
                                                     for split in ("train", "validation", "test")))
    splits = dict(zip(("train", "validation", "test"), data.scan_splits(data_dir)))
    decoded = {split: arrays.load_images(images, image_size) for split, images in splits.items()}
    with atomic_write(cache) as stream:  # a command killed while writing leaves no half cache
        np.savez(stream, class_names=np.array(splits["train"].class_names),
                 **{f"{split}_{part}": array for split, pair in decoded.items() for part, array in zip("xy", pair)})
    return (splits["train"].class_names, *decoded.values())


def keep_compiled_programs(work: Path) -> None:
    """On JAX, the compiled steps kept in WORK/jax-cache (unless JAX_COMPILATION_CACHE_DIR says where): a resumed
    command reads them instead of compiling again (on an H200 its first epoch took 36-42 s with them, 66-90 s
    without)."""
    import keras

    if keras.backend.backend() == "jax" and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        import jax

        jax.config.update("jax_compilation_cache_dir", str(work / "jax-cache"))


def trace_steps(folder: Path, count: int, steps: int):
    """A callback that traces ``count`` training steps of the first epoch it sees, from its 11th (the first
    compiles; fewer where the epoch is short), with jax.profiler into ``folder``: the device's kernels against the
    host's work say what keeps the device waiting."""
    import jax
    import keras

    first = min(10, max(0, steps - count))
    count = min(count, steps - first)

    class TraceSteps(keras.callbacks.Callback):  # begin hooks alone: an end hook would make each step wait (JAX)
        state, epoch = "waiting", 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            if self.state == "waiting" and batch == first:
                jax.profiler.start_trace(str(folder), create_perfetto_trace=True)
                self.state = "tracing"
            elif batch == first + count:
                self._stop()

        def on_test_begin(self, logs=None):  # the epoch's training ended
            self._stop()

        def on_epoch_end(self, epoch, logs=None):  # where no validation follows
            self._stop()

        def _stop(self) -> None:
            if self.state == "tracing":
                jax.profiler.stop_trace()
                self.state = "done"
                which = f"steps {first + 1}-{first + count}" if count > 1 else f"step {first + 1}"
                logger.info("traced training %s of %d of epoch %d into %s", which, steps, self.epoch + 1, folder)

    return TraceSteps()


def keep_wall_time(run_dir: Path) -> None:
    """Adds this command's time to RUN/wall.json every few seconds (a killed command loses at most those)."""
    from realvsai.files import read_json, write_json

    earlier, start = (read_json(run_dir / WALL_FILE) or {}).get("seconds", 0.0), time.monotonic()

    def tick() -> None:
        while True:
            write_json(run_dir / WALL_FILE, {"seconds": round(earlier + time.monotonic() - start, 1)})
            time.sleep(5)

    run_dir.mkdir(parents=True, exist_ok=True)
    threading.Thread(target=tick, daemon=True).start()


def train_and_test(args: argparse.Namespace) -> dict:
    import keras
    import numpy as np

    from realvsai import arrays, callbacks, distributed, fitting, metrics, run
    from realvsai.files import read_json
    from realvsai.model import build_model

    config = TrainConfig(data=prepare(args.zip, args.work), out=args.work / "runs", name="cifake", weights="none",
                         backbone=args.backbone, image_size=args.image_size, batch_size=args.batch_size,
                         head_epochs=args.epochs, fine_tune_epochs=0, learning_rate=args.learning_rate,
                         augment=args.augment, precision=args.precision)
    config.validate()
    run_dir = Path(config.out) / config.name
    resume = (run_dir / BACKUP_DIR).is_dir()
    keep_wall_time(run_dir)
    keep_compiled_programs(args.work)
    strategy = distributed.select_strategy({})
    num_gpus = sum(device.startswith("gpu") for device in keras.distribution.list_devices())
    policy = config.precision_policy(num_gpus, keras.backend.backend())
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(config.seed)

    class_names, (x, y), (val_x, val_y), (test_x, test_y) = decoded_splits(config.data, config.image_size)
    if args.limit:
        kept = np.random.default_rng(config.seed).permutation(len(x))[:args.limit]
        x, y = x[kept], y[kept]
    counts = dict(zip(class_names, np.bincount(y, minlength=len(class_names)).tolist()))
    positive_class = metrics.find_positive_class(class_names)
    positive = class_names.index(positive_class)
    class_weight = metrics.balanced_class_weights(counts) if config.class_weights else None
    global_batch = config.batch_size * distributed.num_replicas(strategy)
    full = distributed.needs_full_batches(strategy)
    steps, drop_short_batch = distributed.training_steps(len(x), global_batch, strategy)

    def train_batches(first_epoch: int, decode_ahead: bool) -> arrays.EpochBatches:  # decoded already: arrays
        return arrays.EpochBatches(x, y, batch_size=global_batch, shuffle=True, seed=config.seed,
                                   first_epoch=first_epoch, drop_remainder=drop_short_batch, workers=4)

    validation_batches = arrays.EpochBatches(val_x, val_y, batch_size=global_batch, drop_remainder=full,
                                             class_weight=class_weight)
    with distributed.scope(strategy):
        model = build_model(len(class_names), **config.model_options())
    logger.info("training %s from scratch on %d images (%s), validating on %d, %s, %d steps per epoch%s",
                config.backbone, len(x), counts, len(val_x), policy, steps,
                ", resuming" if resume else "")
    profile = [trace_steps(args.work / "profile", args.profile_steps, steps)] if args.profile_steps else []
    deadline = callbacks.StopBeforeDeadline(STARTED + args.time_limit - TEST_RESERVE_S if args.time_limit else math.inf)
    history = fitting.fit_phases(model, config, run_dir, strategy, (train_batches, steps),
                                 (validation_batches, validation_batches.steps), class_weight, len(class_names),
                                 positive, resume, 2, extra_callbacks=[deadline, *profile])

    # The one predict path of the app, --predict and evaluation (fixed batch shapes: one compile on JAX).
    predictor = run.Predictor(model, run.ModelInfo(tuple(class_names), config.image_size,
                                                   positive_class=positive_class), global_batch)
    probabilities = {name: predictor.predict_arrays(images).astype("float64")
                     for name, images in (("validation", val_x), ("test", test_x))}
    threshold = metrics.choose_threshold(val_y == positive, probabilities["validation"][:, positive])
    scored = metrics.compute_metrics(test_y.tolist(), probabilities["test"], class_names, positive_class, threshold)
    return {"train_images": len(x), "validation_images": len(val_x), "test_images": len(test_x),
            "image_size": config.image_size, "backbone": config.backbone, "batch_size": global_batch,
            "precision_policy": policy, "augment": config.augment, "learning_rate": config.learning_rate,
            "epochs": len(history), "epochs_planned": config.total_epochs, "stopped_by_time_limit": deadline.stopped,
            "epoch_seconds": deadline.seconds,  # this command's epochs, in parts; the first compiles the steps
            "best_epoch": (callbacks.best_epoch_row(history) or {}).get("epoch"),
            "wall_s": (read_json(run_dir / WALL_FILE) or {}).get("seconds"), "decision_threshold": round(threshold, 4),
            "test_accuracy": scored["accuracy"], "test_argmax_accuracy": scored["argmax_accuracy"],
            "test_roc_auc": scored.get("roc_auc")}


def destination(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Destination:
    """gpu.json for the README's settings at any --image-size and --epochs (--work and --time-limit aside), else
    nowhere."""
    return results_destination(parser, args, "gpu", ("zip", "batch_size", "learning_rate", "backbone", "augment",
                                                     "precision", "limit"))


def record_name(args: argparse.Namespace) -> str:
    """The run's figures in gpu.json: "cifake" at CIFAKE's own 32 px and the default epochs, "cifake_64px" for
    images upscaled to 64, "cifake_64px_20epochs" for 20 epochs of those."""
    size = "" if args.image_size == 32 else f"_{args.image_size}px"
    epochs = "" if args.epochs == TrainConfig().total_epochs else f"_{args.epochs}epochs"
    return f"cifake{size}{epochs}"


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    setup_logging()
    where = destination(parser, args)

    def body() -> None:
        if args.profile_steps:
            import keras

            if keras.backend.backend() != "jax":
                raise UserError("--profile-steps traces with jax.profiler. Run with KERAS_BACKEND=jax, or leave it "
                                "out.")
        if not (args.work / "data" / "test").is_dir():  # else prepared by an earlier command, the zip not needed
            zip_entries(args.zip, "--zip")
        cifake = train_and_test(args)
        path = where.path
        results = json.loads(path.read_text(encoding="utf-8")) if path and path.is_file() else {}
        results[record_name(args)] = cifake
        print(json.dumps(cifake, indent=2))
        where.write(results)

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
