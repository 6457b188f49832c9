"""GPU throughput: ResNet101 training at 224 px in float32, mixed precision, and mixed precision + XLA.

Also measures the input pipeline's images/s (realvsai.data: decode, resize to 224, batch) against
the model's, so you can see whether the GPU waits for data. Runs unchanged on any CUDA machine;
without a GPU it says so and exits 0 (nothing to measure).

Each setting trains the same model (weights=None, the project's head and the --augment preset,
by default training's default, detector, whose JPEG step runs in the input pipeline, so XLA holds)
on one fixed in-memory batch for --steps steps after a warm-up; settings are alternated over
--repeats rounds and the median images/s is reported.

Example:
    python benchmarks/bench_gpu.py                       # cifake-mini's train split
    python benchmarks/bench_gpu.py --data data/train --batch-size 128
    python benchmarks/bench_gpu.py --augment classic
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from realvsai.cli import format_table  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "cifake-mini" / "train"
RESULTS = REPO / "benchmarks" / "results" / "gpu.json"
SETTINGS = (("float32", False), ("mixed_float16", False), ("mixed_float16", True))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="class folders (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step (default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=224, help="the model's input side (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over the settings (default: %(default)s)")
    parser.add_argument("--augment", choices=("detector", "classic", "none"), default="detector",
                        help="augmentation preset, as ModelTraining.py's --augment (default: %(default)s)")
    return parser.parse_args(argv)


def training_rate(precision: str, xla: bool, images, labels, image_size: int, steps: int, augment: str) -> float:
    """Images/s of train steps on one in-memory batch, after a warm-up that compiles the step."""
    import keras

    from realvsai.model import build_model

    keras.mixed_precision.set_dtype_policy(precision)
    try:
        model = build_model(2, image_size=image_size, weights=None, augment=augment)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                      jit_compile=xla)
        if model.jit_compile != xla:
            raise RuntimeError(f"Keras turned XLA off for the {augment!r} preset: a layer does not support it")
        model.train_on_batch(images, labels)  # trace and compile
        model.train_on_batch(images, labels)
        start = time.perf_counter()
        for _ in range(steps):
            loss = model.train_on_batch(images, labels)
        float(loss)  # wait for the device
        return steps * len(labels) / (time.perf_counter() - start)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def input_rate(data_dir: Path, batch_size: int, image_size: int, augment: str) -> float:
    """Images/s of the realvsai.data pipeline alone (with the preset's input part), resizing to image_size."""
    import functools

    import tensorflow as tf

    from realvsai import data
    from realvsai.augmentation import augment_copies, build_augmentation

    images = data.scan_images(data_dir)
    layers = build_augmentation(augment, seed=0, part="input")
    dataset = data.make_dataset(images, batch_size=batch_size, image_size=image_size, shuffle=True,
                                augment=functools.partial(augment_copies, layers) if layers else None)
    dataset = dataset.map(lambda x, y: (tf.image.resize(x, (image_size, image_size)), y))
    for _ in dataset:  # fill the cache
        pass
    start = time.perf_counter()
    count = sum(int(labels.shape[0]) for _, labels in dataset)
    return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import numpy as np
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        print("No NVIDIA GPU here: nothing to measure. Run this on a CUDA machine "
              '(pip install "tensorflow[and-cuda]").')
        return 0
    gpu_name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (args.batch_size, args.image_size, args.image_size, 3)).astype("float32")
    labels = rng.integers(0, 2, args.batch_size).astype("int32")
    rates: dict[str, list[float]] = {f"{p}{' + XLA' if x else ''}": [] for p, x in SETTINGS}
    for _ in range(args.repeats):
        for precision, xla in SETTINGS:
            rate = training_rate(precision, xla, images, labels, args.image_size, args.steps, args.augment)
            rates[f"{precision}{' + XLA' if xla else ''}"].append(rate)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    pipeline = input_rate(args.data, args.batch_size, args.image_size, args.augment) if args.data.is_dir() else None
    baseline = medians["float32"]
    rows = [(name, f"{rate:,.0f}", f"{rate / baseline:.2f}") for name, rate in medians.items()]
    if pipeline is not None:
        rows.append(("input pipeline (decode, resize, batch)", f"{pipeline:,.0f}",
                     f"{pipeline / max(medians.values()):.2f} x the fastest model"))
    print(f"{gpu_name}, ResNet101 at {args.image_size} px, batch {args.batch_size}, {args.augment} augmentation")
    print(format_table(("setting", "images/s", "vs float32"), rows))
    result = {"gpu": gpu_name, "image_size": args.image_size, "batch_size": args.batch_size, "augment": args.augment,
              "training_images_per_second": rates, "median": medians, "input_images_per_second": pipeline,
              "tensorflow": tf.__version__, "platform": platform.platform()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
