"""Test accuracy of the project's from-scratch recipe on cifake-mini, against the reference baselines.

Splits cifake-mini the way a user would (DataSplitD2's library code: validation = 20% of train,
seed 42; test = cifake-mini's own test split) into a temporary folder, trains with the project's
defaults at ``--image-size 32 --weights none --batch-size 32`` for 8 epochs in all, and evaluates
on the test split with ``realvsai.evaluation``. Prints a table and one JSON line; the default run (cifake-mini,
8 epochs, seed 42) writes benchmarks/results/accuracy.json, any other only where --results says.

References (../shared/baselines, same data and epochs, measured on this kind of machine):
a plain, careful Keras ResNet101 from scratch 0.787; a CIFAKE-paper-style small CNN 0.862;
the predecessor's recipe 0.535.

This takes about 20 minutes of both cores (8 epochs of ResNet101 over 6,400 images).
A 1-epoch smoke run (writes nothing): python benchmarks/bench_accuracy.py --epochs 1

Example:
    python benchmarks/bench_accuracy.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._bench import Destination, add_results_option, existing, results_destination  # noqa: E402
from realvsai.cli import format_table, positive_int, run_main, setup_logging  # noqa: E402
from realvsai.config import TrainConfig  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "cifake-mini"
BASELINES = {"plain Keras ResNet101 from scratch": 0.787, "CIFAKE-paper small CNN": 0.862,
             "predecessor's recipe": 0.535}
TARGET = 0.86


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="a dataset with train/ and test/ class folders (default: %(default)s)")
    parser.add_argument("--epochs", type=positive_int, default=8, help="epochs in all (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=42, help="split and training seed (default: %(default)s)")
    add_results_option(parser, "accuracy")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    setup_logging(quiet=False)
    return run_main(lambda: measure(args, results_destination(parser, args, "accuracy", ("data", "epochs", "seed"))))


def measure(args: argparse.Namespace, destination: Destination) -> None:
    existing(args.data, "--data", "a dataset with train/ and test/ class folders")
    from realvsai import splitting, training

    with tempfile.TemporaryDirectory(prefix="bench-accuracy-") as temporary:
        data_dir = Path(temporary) / "data"
        start = time.perf_counter()
        splitting.split_train_test(args.data, data_dir, val_fraction=0.2, seed=args.seed, mode=splitting.COPY)
        split_seconds = time.perf_counter() - start
        # The project's defaults except what the benchmark fixes; from scratch, the epochs of both
        # phases add up to one run of args.epochs.
        config = dataclasses.replace(TrainConfig(), data=data_dir, out=Path(temporary) / "models", name="bench",
                                     image_size=32, weights="none", batch_size=32, head_epochs=args.epochs,
                                     fine_tune_epochs=0, seed=args.seed)
        start = time.perf_counter()
        result = training.train(config, verbose=2)
        seconds = time.perf_counter() - start
    metrics = result.test_metrics or {}
    accuracy = float(metrics.get("accuracy", float("nan")))
    report = {
        "recipe": "realvsai defaults, --image-size 32 --weights none --batch-size 32",
        "epochs": args.epochs, "epochs_run": len(result.history), "best_epoch": result.model_info.get("best_epoch"),
        "test_accuracy": round(accuracy, 4), "test_f1": metrics.get("f1"), "test_roc_auc": metrics.get("roc_auc"),
        "decision_threshold": metrics.get("decision_threshold"),
        "test_images": metrics.get("num_images"), "train_seconds": round(seconds, 1),
        "split_seconds": round(split_seconds, 1), "config": config.to_json(), "baselines": BASELINES,
        "target": TARGET, "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    rows = [("realvsai (this run)", f"{accuracy:.4f}")] + [(name, f"{value:.3f}") for name, value in BASELINES.items()]
    print(format_table(("recipe", "test accuracy"), rows))
    print(json.dumps({key: report[key] for key in ("epochs", "epochs_run", "test_accuracy", "decision_threshold",
                                                   "train_seconds")}))
    destination.write(report)


if __name__ == "__main__":
    sys.exit(main())
