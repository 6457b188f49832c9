"""What an epoch pays besides its steps: compiling for a short last batch, and saving the best model.

1. **The short last batch.** The first ``model.fit`` epoch of the project's model (``build_model``, training's
   defaults, weights none) on ``--images`` random images at ``--batch-size``, fed by ``arrays.EpochBatches``:
   with each pass's short last batch (what training did before ``distributed.training_steps``) and without
   it (today). Under XLA (JAX; TensorFlow with --xla) the short batch compiles the train step a second time.
   Today's side also runs one step fewer (the short batch's), a small part of the difference.
   Each side runs in a process of its own (a fresh compile), ``--repeats`` times.
2. **The best model's save.** ``callbacks.BestModel`` on an improving epoch of the same model in
   mixed_bfloat16 (its file is the float32 copy): building the copy at every save (before) against
   setting the improvement's weights into the copy the fit made once (today). Median of ``--saves``
   improvements, after the first.

The default sizes write benchmarks/results/epoch_overheads.json; any other run writes only where --results says.

Example:
    KERAS_BACKEND=jax python benchmarks/bench_epoch_overheads.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._bench import Destination, add_results_option, results_destination, run_child  # noqa: E402
from realvsai.cli import format_table, positive_int, run_main  # noqa: E402
from realvsai.config import BACKBONES  # noqa: E402


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=BACKBONES, default="resnet101", help="(default: %(default)s)")
    parser.add_argument("--image-size", type=positive_int, default=32, help="(default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="(default: %(default)s)")
    parser.add_argument("--images", type=positive_int, default=72,
                        help="training images: two full batches and a short one (default: %(default)s)")
    parser.add_argument("--repeats", type=positive_int, default=2, help="processes per side (default: %(default)s)")
    parser.add_argument("--saves", type=positive_int, default=3,
                        help="improvements saved per side (default: %(default)s)")
    add_results_option(parser, "epoch_overheads")
    parser.add_argument("--first-epoch", choices=("short", "full"), help=argparse.SUPPRESS)  # one side's process
    return parser


def build(args: argparse.Namespace):
    from realvsai.config import TrainConfig
    from realvsai.model import build_model

    config = TrainConfig(weights="none", image_size=args.image_size, backbone=args.backbone)
    return build_model(2, **config.model_options())


def first_epoch_seconds(args: argparse.Namespace, short: bool) -> float:
    """Seconds of the first fit epoch, in this process (compiling included)."""
    import keras
    import numpy as np

    from realvsai import arrays

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.images, args.image_size, args.image_size, 3), dtype=np.uint8)
    y = rng.integers(0, 2, args.images).astype(np.int32)
    model = build(args)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy())
    batches = arrays.EpochBatches(x, y, batch_size=args.batch_size, shuffle=True, drop_remainder=not short)
    start = time.perf_counter()
    model.fit(batches, epochs=1, steps_per_epoch=batches.steps, verbose=0)
    return time.perf_counter() - start


def save_seconds(args: argparse.Namespace, once_a_fit: bool) -> float:
    """Median seconds of BestModel's save on an improving epoch, after the first."""
    import keras

    from realvsai.callbacks import BestModel
    from realvsai.config import MONITOR
    from realvsai.model import float32_copy

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build(args)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    with tempfile.TemporaryDirectory() as folder:
        best = BestModel(Path(folder) / "model.h5", export=float32_copy)
        best.set_model(model)
        seconds = []
        for epoch in range(args.saves + 1):
            if not once_a_fit:
                best.on_train_begin()  # forgets the copy, as the code before did at every save
            start = time.perf_counter()
            best.on_epoch_end(epoch, {MONITOR: 1.0 - epoch / 100})
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds[1:])


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.first_epoch:
        return run_main(lambda: print(json.dumps(first_epoch_seconds(args, args.first_epoch == "short"))))
    destination = results_destination(parser, args, "epoch_overheads", ("backbone", "image_size", "batch_size",
                                                                        "images"))
    return run_main(lambda: compare(args, destination))


def compare(args: argparse.Namespace, destination: Destination) -> None:
    """Both sides of both overheads; their figures."""
    import keras

    passed = [flag for name in ("backbone", "image_size", "batch_size", "images")
              for flag in (f"--{name.replace('_', '-')}", str(getattr(args, name)))]
    epochs: dict[str, list[float]] = {"short": [], "full": []}
    for _ in range(args.repeats):
        for side in epochs:  # alternating, so a slower spell of the machine falls on both
            output = run_child([sys.executable, __file__, "--first-epoch", side, *passed],
                               f"the first epoch's process ({side} last batch)")
            epochs[side].append(json.loads(output.strip().splitlines()[-1]))
    saves = {"copy_each_save": save_seconds(args, once_a_fit=False), "copy_once_a_fit": save_seconds(args, True)}

    first = {side: statistics.median(values) for side, values in epochs.items()}
    results = {"backend": keras.backend.backend(), "backbone": args.backbone, "image_size": args.image_size,
               "batch_size": args.batch_size, "images": args.images, "repeats": args.repeats,
               "first_epoch_seconds": {"with_short_batch": round(first["short"], 2),
                                       "without": round(first["full"], 2),
                                       "runs": {side: [round(value, 2) for value in values]
                                                for side, values in epochs.items()}},
               "best_model_save_seconds": {name: round(value, 3) for name, value in saves.items()},
               "date": time.strftime("%Y-%m-%d")}
    print(format_table(("what", "before", "today", "today / before"), [
        ("first epoch, s", f"{first['short']:.1f}", f"{first['full']:.1f}", f"{first['full'] / first['short']:.2f}"),
        ("best-model save, s", f"{saves['copy_each_save']:.2f}", f"{saves['copy_once_a_fit']:.2f}",
         f"{saves['copy_once_a_fit'] / saves['copy_each_save']:.2f}")]))
    destination.write(results)


if __name__ == "__main__":
    sys.exit(main())
