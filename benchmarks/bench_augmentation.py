"""Offline augmentation: DataAugmentation's tf.data pipeline vs the legacy ImageDataGenerator loop.

Both sides make the same number of copies at the same size from the same images: ours through
``realvsai`` exactly as DataAugmentation.py runs it (scan the headers, build the layers,
decode/augment/encode in tf.data, one write per copy), the legacy side as the original notebook
did, one ``ImageDataGenerator.flow(x, batch_size=1, save_to_dir=...)`` per image with the classic
parameters (``--size N``: both sides resize to N x N first). A third row writes the same number of
ready-made JPEG bytes with our writer, a batch at a time as ours, and nothing else: the floor any one-file-per-copy
method pays. Sides alternate, each run writes into a fresh folder after the disk has settled,
several repetitions, medians reported.

No file is deleted until every run is done: on ext4, creating files within seconds of deleting
thousands (``recently_deleted`` in the inode allocator) costs up to ten times more kernel time per
file, which would bill one run's clean-up to the next. TensorFlow is loaded once, before any
timing, and both sides are warmed up once (Keras's first layer call; the legacy loop's first flow,
which imports SciPy). The objects that exist then are frozen out of garbage collection
(``gc.freeze``): one full collection of TensorFlow's millions of objects pauses for about half a
second and would otherwise land in whichever side happened to trigger it. The load average
before and after the timed runs is printed and saved: other processes on the machine skew the
figures (measure on an idle machine).

By default the whole train split of cifake-mini is augmented (8,000 images x 10 copies = 80,000
files per run, about 40 s for the legacy loop, 3 minutes for the benchmark); ``--images N`` takes
a subset, where our side's fixed start-up (loading the layers, building the tf.data graph: about
0.2 s) weighs more. Only the default data and sizes write benchmarks/results/augmentation.json; any
other run writes only where --results says.

    <temp>/images/train/<Class>/   ../shared/datasets/cifake-mini/train, or a subset of it
    <temp>/run_<n>/train -> images/train, run_<n>/augmented_train/   one per timed run

Example:
    python benchmarks/bench_augmentation.py                    # 8,000 images x 10 copies at 32 px
    python benchmarks/bench_augmentation.py --images 500       # a small run: start-up costs show
    python benchmarks/bench_augmentation.py --size 224 --images 500   # the notebook's 224 px copies
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks._bench import (  # noqa: E402
    Destination,
    add_results_option,
    existing,
    format_load,
    results_destination,
    settle,
    write_in_batches,
)
from DataAugmentation import AugmentConfig  # noqa: E402
from realvsai.cli import format_table, positive_int, run_main  # noqa: E402
from realvsai.files import list_images  # noqa: E402
from realvsai.layout import find_class_folders  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "cifake-mini" / "train"
SIDES = ("ours", "legacy", "floor")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder of class folders (default: %(default)s)")
    parser.add_argument("--images", type=positive_int, default=None,
                        help="source images, split evenly over the classes (default: all of them)")
    parser.add_argument("--copies", type=positive_int, default=10, help="copies per image")
    parser.add_argument("--size", type=positive_int, default=None, help="resize to N x N first (default: native size)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="repetitions of each side")
    parser.add_argument("--preset", default="classic", choices=("classic", "detector"), help="our side's preset")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to copy the images and write the copies (default: the system temp folder; "
                             "/dev/shm takes the disk out of the comparison)")
    add_results_option(parser, "augmentation")
    return parser


def make_subset(source: Path, root: Path, num_images: int | None) -> Path:
    """Copies the first ``num_images`` images (sorted, evenly per class; None: all) into ``root/train/<Class>``."""
    classes = find_class_folders(source)
    per_class = None if num_images is None else max(1, num_images // len(classes))
    for class_name in classes:
        (root / "train" / class_name).mkdir(parents=True)
        for path in list_images(source / class_name)[:per_class]:
            shutil.copy2(path, root / "train" / class_name / path.name)
    return root


def run_ours(data: Path, copies: int, size: int | None, preset: str, seed: int) -> int:
    """What DataAugmentation.py does after parsing its arguments: plan, augment, write, record each copy's source."""
    from realvsai.augmentation import build_augmentation
    from realvsai.moving import plan_copies, record_copy_sources
    from realvsai.offline_augmentation import plan_batches, write_augmented_copies

    plan = plan_copies(data, copies)
    layers = build_augmentation(preset, seed=seed)
    batches = plan_batches(plan.images, seed, image_size=size, batch_size=AugmentConfig.batch_size)
    report = write_augmented_copies(batches, layers, image_size=size)
    record_copy_sources(plan, data, report.made)
    return report.written


def legacy_generator():
    """ImageDataGenerator with the notebook's classic parameters."""
    from keras.src.legacy.preprocessing.image import ImageDataGenerator  # benchmarks only: the old way

    return ImageDataGenerator(rotation_range=20, width_shift_range=0.2, height_shift_range=0.2,
                              shear_range=0.2, zoom_range=0.2, horizontal_flip=True, fill_mode="nearest")


def run_legacy(data: Path, copies: int, size: int | None) -> int:
    """The notebook's loop: one ImageDataGenerator.flow per image, one saved JPEG per next()."""
    generator = legacy_generator()
    written = 0
    for class_name in find_class_folders(data / "train"):
        output = data / "augmented_train" / class_name
        output.mkdir(parents=True, exist_ok=True)
        for path in list_images(data / "train" / class_name):
            with Image.open(path) as image:
                image = image.convert("RGB")
                if size:
                    image = image.resize((size, size), Image.BILINEAR)
                pixels = np.asarray(image, dtype=np.float32)[None]
            flow = generator.flow(pixels, batch_size=1, save_to_dir=str(output),
                                  save_prefix=f"aug_{path.stem}", save_format="jpeg")
            for _ in range(copies):
                next(flow)
                written += 1
    return written


def run_floor(data: Path, payloads: list[bytes], batch: int) -> int:
    """Only the file writing of ours: the same number of ready-made JPEGs, ``batch`` at a time through
    ``files.write_new_files``, as ours writes a batch's copies."""
    output = data / "augmented_train" / "ALL"
    output.mkdir(parents=True)
    write_in_batches(output, "aug_", payloads, batch)
    return len(payloads)


def output_stats(data: Path) -> tuple[int, list[tuple[int, int]]]:
    files = list_images(data / "augmented_train", recursive=True)
    sizes = set()
    for path in files:
        with Image.open(path) as image:
            sizes.add(image.size)
    return len(files), sorted(sizes)


def main(argv=None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    destination = results_destination(parser, args, "augmentation", ("data", "images", "copies", "size", "preset",
                                                                      "seed"))
    return run_main(lambda: measure(args, destination))


def measure(args: argparse.Namespace, destination: Destination) -> None:
    existing(args.data, "--data", "a folder of class folders")
    import tensorflow as tf  # noqa: F401  (loaded once, outside every timing)

    from realvsai import augmentation

    wall: dict[str, list[float]] = {side: [] for side in SIDES}
    cpu: dict[str, list[float]] = {side: [] for side in SIDES}
    files_on_disk: dict[str, int] = {}
    sizes: dict[str, list] = {}
    with tempfile.TemporaryDirectory(prefix="bench_augmentation_", dir=args.workdir) as temporary:
        root = Path(temporary)
        images = make_subset(args.data, root / "images", args.images)
        num_sources = len(list_images(images / "train", recursive=True))
        outputs = num_sources * args.copies
        sources = [path.read_bytes() for path in list_images(images / "train", recursive=True)]
        payloads = [sources[index % num_sources] for index in range(outputs)]  # JPEGs of the right size
        # Warm-up, untimed: TensorFlow's first ops and Keras's first layer build happen once per process,
        # and so does the legacy loop's first flow (it imports SciPy for the affine transform).
        augmentation.build_augmentation(args.preset, seed=0)(np.zeros((1, 32, 32, 3), np.float32), training=True)
        warm_up = root / "warm_up"
        warm_up.mkdir()
        next(legacy_generator().flow(np.zeros((1, 32, 32, 3), np.float32), batch_size=1,
                                     save_to_dir=str(warm_up), save_format="jpeg"))
        gc.collect()
        gc.freeze()  # see the module docstring
        load_before = os.getloadavg()
        for repeat in range(args.repeats):
            order = SIDES if repeat % 2 == 0 else tuple(reversed(SIDES))
            for side in order:
                data = root / f"run_{repeat}_{side}"
                data.mkdir()
                (data / "train").symlink_to(images / "train", target_is_directory=True)
                settle()
                started_wall, started_cpu = time.perf_counter(), time.process_time()
                if side == "ours":
                    run_ours(data, args.copies, args.size, args.preset, args.seed)
                elif side == "legacy":
                    run_legacy(data, args.copies, args.size)
                else:
                    run_floor(data, payloads, AugmentConfig.batch_size * args.copies)
                wall[side].append(time.perf_counter() - started_wall)
                cpu[side].append(time.process_time() - started_cpu)
                files_on_disk[side], sizes[side] = output_stats(data)
                print(f"repeat {repeat + 1} {side:6s} {wall[side][-1]:7.2f} s wall {cpu[side][-1]:7.2f} s cpu  "
                      f"{files_on_disk[side]} files", file=sys.stderr)

        load_after = os.getloadavg()

    median_wall = {side: statistics.median(values) for side, values in wall.items()}
    median_cpu = {side: statistics.median(values) for side, values in cpu.items()}
    best_wall = {side: min(values) for side, values in wall.items()}
    ratio = median_wall["legacy"] / median_wall["ours"]
    names = {"ours": f"DataAugmentation ({args.preset}, tf.data)", "legacy": "ImageDataGenerator.flow loop (legacy)",
             "floor": "only writing the files (ours)"}
    rows = [(names[side], f"{median_wall[side]:.2f}", f"{best_wall[side]:.2f}", f"{median_cpu[side]:.2f}",
             f"{outputs / median_wall[side]:.0f}", files_on_disk[side]) for side in SIDES]
    size_text = f"{args.size}x{args.size}" if args.size else f"native size {sizes['ours']}"
    print(f"{num_sources} images x {args.copies} copies = {outputs} outputs at {size_text}, "
          f"median of {args.repeats}, {os.cpu_count()} CPUs, in {args.workdir or tempfile.gettempdir()}; "
          f"load average (1, 5, 15 min) {format_load(load_before)} before, {format_load(load_after)} after")
    print(format_table(("side", "median wall s", "best wall s", "median cpu s", "copies/s", "files on disk"), rows))
    print(f"speed-up, median wall: {ratio:.1f}x (target >= 5x); best wall: "
          f"{best_wall['legacy'] / best_wall['ours']:.1f}x; "
          f"median cpu: {median_cpu['legacy'] / median_cpu['ours']:.1f}x; "
          f"legacy vs the file-writing floor: {median_wall['legacy'] / median_wall['floor']:.1f}x")
    if files_on_disk["legacy"] < outputs:
        print(f"note: the legacy loop lost {outputs - files_on_disk['legacy']} copies to its random file names "
              "(save_prefix_index_hash collides)")
    destination.write({
        "benchmark": "augmentation",
        "images": num_sources, "copies": args.copies, "outputs": outputs, "preset": args.preset, "size": args.size,
        "output_sizes": sizes, "wall_seconds": wall, "cpu_seconds": cpu,
        "median_wall_seconds": median_wall, "best_wall_seconds": best_wall, "median_cpu_seconds": median_cpu,
        "speedup_wall": ratio, "workdir": str(args.workdir or tempfile.gettempdir()),
        "files_on_disk": files_on_disk,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_before": load_before, "load_average_after": load_after},
    })


if __name__ == "__main__":
    sys.exit(main())
