"""GPU training speed: the project's model beside Keras' bare ResNet101, per image size and precision.

Made for a GPU machine set up for JAX alone (no TensorFlow): run it with ``KERAS_BACKEND=jax``; it runs
on any Keras backend. Each setting trains, through ``model.fit``, the project's model (``build_model``
with training's defaults: the detector preset's model layers, the feature noise and the head; the
preset's JPEG step belongs to the input, which is not timed here) or ``keras.applications``' bare
ResNet101 (weights none), both with training's optimizer (``fitting.make_optimizer``), on one random
batch held in device memory: the figures are the models', not the host's. After a warm-up that
compiles the step, settings alternate over --repeats rounds and the median images/s is kept.

Figures merge into benchmarks/results/gpu.json under model, size and precision, with ``project_vs_bare``,
``mixed_vs_float32`` and ``best_images_per_second`` worked out again, so sizes, precisions and models can be
measured in separate runs; a run with another --backbone or --batch-size, or with --cpu, merges only into
where --results says. ``benchmarks/bench_gpu_cifake.py`` adds the
CIFAKE run. Without a GPU it says so and exits 0; ``--cpu`` runs it anyway (a check of the script,
whose figures say "cpu").

Example (on the GPU machine):
    KERAS_BACKEND=jax python benchmarks/bench_gpu.py --sizes 224     # both models, three precisions
    KERAS_BACKEND=jax python benchmarks/bench_gpu.py --sizes 32 --precisions mixed_bfloat16
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._bench import Destination, add_results_option, results_destination  # noqa: E402
from realvsai.cli import format_table, positive_int, run_main  # noqa: E402
from realvsai.config import BACKBONES  # noqa: E402

MODELS = ("project", "bare")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=positive_int, nargs="+", default=[224, 32],
                        help="image sides (default: %(default)s)")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS),
                        help="Keras dtype policies (default: all three)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS),
                        help="the project's model, Keras' bare backbone, or both (default)")
    parser.add_argument("--backbone", choices=BACKBONES, default="resnet101", help="(default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="images per step (default: %(default)s)")
    parser.add_argument("--steps", type=positive_int, default=30,
                        help="timed steps per measurement (default: %(default)s)")
    parser.add_argument("--warmup", type=positive_int, default=3, help="steps before timing (default: %(default)s)")
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="rounds over the settings (default: %(default)s)")
    add_results_option(parser, "gpu")
    parser.add_argument("--cpu", action="store_true", help="run without a GPU too (to check the script)")
    return parser


def device_name() -> str:
    """The first accelerator's name, as the backend reports it."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.devices()[0].device_kind
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "cpu"
    return keras.distribution.list_devices()[0]


def build(kind: str, size: int, precision: str, backbone: str):
    """The compiled model of one setting, its variables in float32 and its compute in ``precision``."""
    import keras

    from realvsai.config import TrainConfig
    from realvsai.fitting import make_optimizer
    from realvsai.model import APPLICATIONS, build_model

    config = TrainConfig(weights="none", image_size=size, backbone=backbone)
    keras.mixed_precision.set_dtype_policy(precision)
    try:
        model = (build_model(2, **config.model_options()) if kind == "project"
                 else APPLICATIONS[backbone](weights=None, input_shape=(size, size, 3), classes=2))
        model.compile(optimizer=make_optimizer(config.learning_rate, config.final_learning_rate_fraction, 10_000,
                                               loss_scaling=precision == "mixed_float16"),
                      loss=keras.losses.SparseCategoricalCrossentropy())
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    return model


def one_batch(batch_size: int, size: int):
    """``model.fit``'s endless input: one random batch, held in device memory, at every step."""
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    batch = (keras.ops.convert_to_tensor(rng.uniform(0, 255, (batch_size, size, size, 3)).astype("float32")),
             keras.ops.convert_to_tensor(rng.integers(0, 2, batch_size).astype("int32")))

    class Same(keras.utils.PyDataset):
        num_batches = None

        def __getitem__(self, index):
            return batch

    return Same()


def rate(model, data, batch_size: int, steps: int) -> float:
    """Images/s of ``steps`` train steps through model.fit (which waits for the device at the epoch's end)."""
    start = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0)
    return steps * batch_size / (time.perf_counter() - start)


def merge(results: dict[str, Any], measured: dict[tuple[str, int, str], float]) -> dict[str, Any]:
    """``results`` with the ``measured`` medians in, and the ratios and bests worked out again from all."""
    speeds = results.setdefault("images_per_second", {})
    for (kind, size, precision), value in measured.items():
        speeds.setdefault(kind, {}).setdefault(str(size), {})[precision] = round(value, 1)
    project, bare = speeds.get("project", {}), speeds.get("bare", {})
    results["project_vs_bare"] = {size: {precision: round(value / bare[size][precision], 3)
                                         for precision, value in by_precision.items() if precision in bare[size]}
                                  for size, by_precision in project.items() if size in bare}
    results["mixed_vs_float32"] = {kind: {size: {precision: round(value / by_precision["float32"], 3)
                                                 for precision, value in by_precision.items() if precision != "float32"}
                                          for size, by_precision in by_size.items() if "float32" in by_precision}
                                   for kind, by_size in speeds.items()}
    results["best_images_per_second"] = {
        size: dict(zip(("model", "precision", "images_per_second"), max(
            ((kind, precision, value) for kind, by_size in speeds.items()
             for precision, value in by_size.get(size, {}).items()), key=lambda item: item[2])))
        for size in sorted({size for by_size in speeds.values() for size in by_size}, key=int)}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    destination = results_destination(parser, args, "gpu", ("backbone", "batch_size", "cpu"))
    return run_main(lambda: measure(args, destination))


def measure(args: argparse.Namespace, destination: Destination) -> None:
    import keras

    if not any(device.startswith("gpu") for device in keras.distribution.list_devices()) and not args.cpu:
        print("No GPU here: nothing to measure. Run this on a GPU machine (KERAS_BACKEND=jax with jax[cuda12], "
              "or TensorFlow with CUDA), or add --cpu to check the script on this one.")
        return
    settings = [(kind, size, precision) for size in args.sizes for precision in args.precisions for kind in args.models]
    models, data = {}, {}
    for setting in settings:  # compiled once each, before any timing
        kind, size, precision = setting
        data.setdefault(size, one_batch(args.batch_size, size))
        models[setting] = build(kind, size, precision, args.backbone)
        models[setting].fit(data[size], epochs=1, steps_per_epoch=args.warmup, shuffle=False, verbose=0)
        print(f"compiled {kind} {size} px {precision}", flush=True)
    rates: dict[tuple[str, int, str], list[float]] = {setting: [] for setting in settings}
    for _ in range(args.repeats):
        for setting in settings:
            rates[setting].append(rate(models[setting], data[setting[1]], args.batch_size, args.steps))
    medians = {setting: statistics.median(values) for setting, values in rates.items()}

    merged_into = destination.path
    results = json.loads(merged_into.read_text(encoding="utf-8")) if merged_into and merged_into.is_file() else {}
    backend = keras.backend.backend()
    facts = {"device": device_name() if not args.cpu else "cpu", "backend": backend, "keras": keras.__version__,
             backend: importlib.metadata.version(backend), "backbone": args.backbone,
             "batch_size": args.batch_size, "steps": args.steps, "repeats": args.repeats}
    if results and any(results.get(key) != value for key, value in facts.items() if key in results):
        results = {key: value for key, value in results.items() if key == "cifake"}  # another machine or setup
    results = merge({**results, **facts}, medians)

    print(f"{facts['device']}, Keras {keras.__version__} on {backend}, {args.backbone}, batch {args.batch_size}")
    print(format_table(("model", "size", "precision", "images/s", "project / bare"), [
        (kind, size, precision, f"{medians[(kind, size, precision)]:,.0f}",
         results["project_vs_bare"].get(str(size), {}).get(precision, "") if kind == "project" else "")
        for kind, size, precision in settings]))
    destination.write(results)


if __name__ == "__main__":
    sys.exit(main())
