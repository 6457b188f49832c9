"""Input pipeline speed: does realvsai.data keep the model fed, and how much faster is it than ImageDataGenerator?

(a) Training throughput (images/s) of the project's ResNet101 (32 px, weights none, batch 32,
    compiled as ModelTraining.py compiles it) fed from the image files through ``realvsai.data``
    (scan, parallel decode, cache, seeded shuffle, prefetch) vs the same model fed one fixed batch
    from memory (no input cost at all). Target: files / memory >= 0.9.
(b) Input pipeline alone (images/s; decode, resize to 224, batch 32, no model): ``realvsai.data``
    plus the 224 px resize vs the predecessor's ``ImageDataGenerator(rescale=1/255, rotation 20,
    shifts 0.2, shear 0.2, zoom 0.2, horizontal flip).flow_from_directory(target_size=(224, 224))``.
    Ours is timed over whole epochs after a warm-up epoch (the decoded images are cached then, as
    in training from the second epoch on); its first, cold epoch is reported too. Target: >= 20x.

The two sides of each comparison alternate, several repetitions each after a warm-up; medians
are reported. A run of both parts on the default data and sizes writes benchmarks/results/pipeline.json;
any other run (--skip one part included) writes only where --results says.

Example:
    python benchmarks/bench_pipeline.py --steps 10 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._bench import Destination, add_results_option, existing, results_destination  # noqa: E402
from realvsai.cli import format_table, positive_int, run_main  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "cifake-mini" / "train"


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder of class folders (default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="images per batch (default: %(default)s)")
    parser.add_argument("--image-size", type=positive_int, default=32,
                        help="(a): the model's input side (default: %(default)s)")
    parser.add_argument("--steps", type=positive_int, default=10,
                        help="(a): training steps per measurement (default: %(default)s)")
    parser.add_argument("--legacy-batches", type=positive_int, default=20,
                        help="(b): ImageDataGenerator batches per measurement (default: %(default)s)")
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="measurements of each side (default: %(default)s)")
    parser.add_argument("--skip", choices=("training", "input"), help="leave out one part")
    add_results_option(parser, "pipeline")
    return parser


def training_throughput(data: Path, batch_size: int, image_size: int, steps: int, repeats: int) -> dict:
    """(a): images/s of model.fit fed from files (realvsai.data) vs from one in-memory batch, alternated."""
    import keras
    import tensorflow as tf

    from realvsai import data as data_module
    from realvsai.model import build_model, make_metrics

    keras.utils.set_random_seed(0)
    images = data_module.scan_images(data)
    from_files = data_module.make_dataset(images, batch_size=batch_size, image_size=image_size, shuffle=True,
                                          seed=0).repeat()
    batch = next(iter(from_files))
    from_memory = tf.data.Dataset.from_tensors(batch).repeat()  # the same tensors every step: no input cost
    model = build_model(len(images.class_names), image_size=image_size, weights=None, augment="detector")
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(),
                  metrics=make_metrics(len(images.class_names), 0))
    sides = {"files (realvsai.data)": from_files, "memory (one fixed batch)": from_memory}
    for dataset in sides.values():  # warm-up: traces the training step, fills the decode threads
        model.fit(dataset, steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0)
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, dataset in sides.items():
            start = time.perf_counter()
            model.fit(dataset, steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0)
            seconds[name].append(time.perf_counter() - start)
    # The best run as well as the median: on a shared machine other processes only ever slow a run down.
    rates = {name: steps * batch_size / statistics.median(values) for name, values in seconds.items()}
    best = {name: steps * batch_size / min(values) for name, values in seconds.items()}
    files, memory = sides
    return {"images_per_second": rates, "best_images_per_second": best, "seconds": seconds,
            "ratio_files_to_memory": rates[files] / rates[memory], "ratio_best": best[files] / best[memory],
            "target_ratio": 0.9, "steps": steps, "batch_size": batch_size, "image_size": image_size}


def input_throughput(data: Path, batch_size: int, legacy_batches: int, repeats: int) -> dict:
    """(b): images/s of realvsai.data + resize to 224 vs ImageDataGenerator.flow_from_directory, alternated."""
    import tensorflow as tf
    from keras.src.legacy.preprocessing.image import ImageDataGenerator  # benchmarks only: the predecessor

    from realvsai import data as data_module

    images = data_module.scan_images(data)
    made = time.perf_counter()
    # What the model's Resizing layer does on the accelerator; here on the CPU, in the pipeline. Made, the dataset
    # holds every image decoded (make_dataset's decode_ahead): part of the cold first epoch.
    ours = data_module.make_dataset(images, batch_size=batch_size, image_size=224, shuffle=True, seed=0).map(
        lambda pixels, labels: (tf.image.resize(pixels, (224, 224)), labels), num_parallel_calls=tf.data.AUTOTUNE)
    made = time.perf_counter() - made
    legacy = ImageDataGenerator(rescale=1 / 255, rotation_range=20, width_shift_range=0.2, height_shift_range=0.2,
                                shear_range=0.2, zoom_range=0.2, horizontal_flip=True, fill_mode="nearest")
    flow = legacy.flow_from_directory(str(data), target_size=(224, 224), batch_size=batch_size,
                                      class_mode="categorical", shuffle=True, seed=0)

    def our_epoch() -> tuple[int, float]:
        start, count = time.perf_counter(), 0
        for pixels, _ in ours:
            count += int(pixels.shape[0])
        return count, time.perf_counter() - start

    def legacy_batches_run() -> tuple[int, float]:
        start, count = time.perf_counter(), 0
        for _ in range(legacy_batches):
            count += len(next(flow)[0])
        return count, time.perf_counter() - start

    cold_count, cold_seconds = our_epoch()  # with the decoding of every file: the first epoch of a run
    cold_seconds += made
    legacy_batches_run()  # warm-up
    rates: dict[str, list[float]] = {"realvsai.data": [], "ImageDataGenerator": []}
    for _ in range(repeats):
        count, seconds = our_epoch()
        rates["realvsai.data"].append(count / seconds)
        count, seconds = legacy_batches_run()
        rates["ImageDataGenerator"].append(count / seconds)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    return {"images_per_second": medians, "all_rates": rates, "cold_first_epoch_images_per_second":
            cold_count / cold_seconds, "ratio": medians["realvsai.data"] / medians["ImageDataGenerator"],
            "target_ratio": 20, "images": len(images), "batch_size": batch_size, "target_size": 224}


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    destination = results_destination(parser, args, "pipeline", ("data", "batch_size", "image_size", "skip"))
    return run_main(lambda: measure(args, destination))


def measure(args: argparse.Namespace, destination: Destination) -> None:
    existing(args.data, "--data", "a folder of class folders")
    results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "data": str(args.data)}
    if args.skip != "training":
        training = training_throughput(args.data, args.batch_size, args.image_size, args.steps, args.repeats)
        results["training"] = training
        print(format_table(("(a) training, ResNet101 32 px", "images/s (median)", "images/s (best)"),
                           [(name, f"{rate:.1f}", f"{training['best_images_per_second'][name]:.1f}")
                            for name, rate in training["images_per_second"].items()]))
        print(f"ratio files / memory: {training['ratio_files_to_memory']:.2f} median, {training['ratio_best']:.2f} "
              "best (target >= 0.9)\n")
    if args.skip != "input":
        inputs = input_throughput(args.data, args.batch_size, args.legacy_batches, args.repeats)
        results["input"] = inputs
        rows = [(name, f"{rate:.0f}") for name, rate in inputs["images_per_second"].items()]
        rows.append(("realvsai.data, first epoch (cold)", f"{inputs['cold_first_epoch_images_per_second']:.0f}"))
        print(format_table(("(b) input pipeline to 224 px", "images/s"), rows))
        print(f"ratio realvsai.data / ImageDataGenerator: {inputs['ratio']:.1f}x (target >= 20x)")
    destination.write(results)


if __name__ == "__main__":
    sys.exit(main())
