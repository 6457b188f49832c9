"""The batch writer of every copy (``files.write_new_files``) on a disk: files with no name until they are on it
(Linux's O_TMPFILE, today) against files under hidden temporary names (before, and where a file system has no
O_TMPFILE).

Both sides write the same files: ``--files`` of the bytes of ``--data``'s images in turn (default: 80,000, as
DataAugmentation.py makes from cifake-mini's train split), in batches of 320 (its 32 images x 10 copies), through
``files.write_new_files`` as the scripts call it: each batch synced once, then named. The "temporary names" side
runs the same function with O_TMPFILE taken away. Each run writes into a folder of its own on a disk that has
settled (``sync``, then a second, not timed), and nothing is deleted until every run is done: on ext4, creating files
within seconds of deleting thousands costs up to ten times the kernel time a file (bench_split.py says more). The
sides alternate, several repetitions, medians reported, with CPU seconds (user + system), which vary less than wall
time on a shared machine.

Measure on a disk (the default folder is the system's temporary folder, on this machine's disk); a RAM disk
(``--workdir /dev/shm``) shows only the system calls saved. The default run writes benchmarks/results/write.json.

Example:
    python benchmarks/bench_write.py                          # 80,000 files, 3 repeats
    python benchmarks/bench_write.py --files 10000 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._bench import (  # noqa: E402
    Destination,
    add_results_option,
    existing,
    format_load,
    results_destination,
    settle,
    write_in_batches,
)
from realvsai import files  # noqa: E402
from realvsai.cli import format_table, positive_int, run_main  # noqa: E402
from realvsai.errors import UserError  # noqa: E402
from realvsai.files import list_images  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "cifake-mini" / "train"
BATCH = 320  # DataAugmentation's batch: 32 images x 10 copies
SIDES = ("no name (O_TMPFILE)", "temporary names")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="a folder whose images give the files' bytes (default: %(default)s)")
    parser.add_argument("--files", type=positive_int, default=80_000, help="files a run writes (default: %(default)s)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="runs of each side (default: %(default)s)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the runs' folders go (default: the system temp folder)")
    add_results_option(parser, "write")
    return parser


def write_files(folder: Path, payloads: list[bytes], unnamed: bool) -> None:
    """Writes ``payloads`` into ``folder`` as ``copy_<n>.jpg``, ``BATCH`` at a time, with or without O_TMPFILE."""
    o_tmpfile = files._O_TMPFILE
    files._O_TMPFILE = o_tmpfile if unnamed else 0
    try:
        write_in_batches(folder, "copy_", payloads, BATCH)
    finally:
        files._O_TMPFILE = o_tmpfile


def main(argv=None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    destination = results_destination(parser, args, "write", ("data", "files"))
    return run_main(lambda: measure(args, destination))


def measure(args: argparse.Namespace, destination: Destination) -> None:
    existing(args.data, "--data", "a folder of images")
    if not files._O_TMPFILE or files._syncfs is None:
        raise UserError("this system writes no file without a name (O_TMPFILE and syncfs are Linux's): there is "
                        "nothing to compare. Run it on Linux.")
    sources = [path.read_bytes() for path in list_images(args.data, recursive=True)]
    if not sources:
        raise UserError(f"{args.data} holds no image. Give --data a folder of images.")
    payloads = [sources[index % len(sources)] for index in range(args.files)]
    wall: dict[str, list[float]] = {side: [] for side in SIDES}
    cpu: dict[str, list[float]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory(prefix="bench_write_", dir=args.workdir) as temporary:
        load_before = os.getloadavg()
        for repeat in range(args.repeats):
            for side in SIDES if repeat % 2 == 0 else tuple(reversed(SIDES)):
                folder = Path(temporary) / f"run_{repeat}_{SIDES.index(side)}"
                folder.mkdir()
                settle()
                started_wall, started_cpu = time.perf_counter(), time.process_time()
                write_files(folder, payloads, unnamed=side == SIDES[0])
                wall[side].append(time.perf_counter() - started_wall)
                cpu[side].append(time.process_time() - started_cpu)
                if sorted(os.listdir(folder)) != sorted(f"copy_{index}.jpg" for index in range(args.files)):
                    raise RuntimeError(f"{folder} does not hold exactly the files written")
                print(f"repeat {repeat + 1} {side:20s} {wall[side][-1]:7.2f} s wall {cpu[side][-1]:7.2f} s cpu",
                      file=sys.stderr)
        load_after = os.getloadavg()
    median_wall = {side: statistics.median(values) for side, values in wall.items()}
    median_cpu = {side: statistics.median(values) for side, values in cpu.items()}
    print(f"{args.files} files of {args.data}'s images, batches of {BATCH}, median of {args.repeats}, in "
          f"{args.workdir or tempfile.gettempdir()}; load average {format_load(load_before)} before, "
          f"{format_load(load_after)} after")
    print(format_table(("side", "median wall s", "best wall s", "median cpu s", "files/s"),
                       [(side, f"{median_wall[side]:.2f}", f"{min(wall[side]):.2f}", f"{median_cpu[side]:.2f}",
                         f"{args.files / median_wall[side]:.0f}") for side in SIDES]))
    ratio = median_wall[SIDES[1]] / median_wall[SIDES[0]]
    print(f"no name vs temporary names: {ratio:.2f}x faster (median wall), "
          f"{median_cpu[SIDES[1]] / median_cpu[SIDES[0]]:.2f}x in CPU seconds")
    destination.write({
        "benchmark": "write", "files": args.files, "batch": BATCH, "repeats": args.repeats,
        "workdir": str(args.workdir or tempfile.gettempdir()),
        "wall_seconds": wall, "cpu_seconds": cpu, "median_wall_seconds": median_wall,
        "median_cpu_seconds": median_cpu, "temporary_names_vs_no_name": ratio,
        "load_average_before": load_before, "load_average_after": load_after,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "date": time.strftime("%Y-%m-%d"),
    })


if __name__ == "__main__":
    sys.exit(main())
