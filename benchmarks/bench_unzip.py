"""Unzipping: DataUnZipper's checked, atomic, resumable extraction vs `unzip -q` and `ZipFile.extractall`.

Each side extracts the whole archive into a fresh folder in one work folder (same disk for all);
the sides alternate (their order rotates each round), dirty pages are flushed before each timed
run, and the extracted tree is deleted after it, untimed. Ours runs in-process through
``realvsai.archives.extract_archive`` with logging quiet (as ``DataUnZipper.py --quiet``), so
every check (zip slip, symlinks, bombs, existing files, free space) and the CRC-32 of every entry
are inside the time. `unzip` is skipped when it is not installed. Beside the wall time, each run's CPU time
(user + system, of this process and of `unzip`) is kept: other work on the machine stretches the wall time
of a run far more than its CPU time, so the CPU ratio says more on a busy machine.

The default archive's run writes benchmarks/results/unzip.json; a run on another zip writes only where
--results says.

Example:
    python benchmarks/bench_unzip.py ../shared/datasets/cifake-trainsplit.zip --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._bench import Destination, add_results_option, results_destination, run_child, zip_entries  # noqa: E402
from realvsai.archives import extract_archive  # noqa: E402
from realvsai.cli import format_table, positive_int, run_main, setup_logging  # noqa: E402
from realvsai.errors import UserError  # noqa: E402

DEFAULT_ARCHIVE = REPO.parent / "shared" / "datasets" / "cifake-trainsplit.zip"
OURS = "DataUnZipper (realvsai)"


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("archive", type=Path, nargs="?", default=DEFAULT_ARCHIVE,
                        help="the zip to extract (default: %(default)s)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="runs of each side (default: %(default)s)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where the fresh folders go (default: the system's temp folder)")
    add_results_option(parser, "unzip")
    return parser


def sides(archive: Path) -> dict[str, Callable[[Path], None]]:
    found = {OURS: lambda target: extract_archive(archive, target)}
    if shutil.which("unzip"):
        found["unzip -q"] = lambda target: run_child(["unzip", "-q", str(archive), "-d", str(target)], "unzip")
    found["ZipFile.extractall"] = lambda target: _extractall(archive, target)
    return found


def _extractall(archive: Path, target: Path) -> None:
    with zipfile.ZipFile(archive) as zip_file:
        zip_file.extractall(target)


def cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads) and of its finished children (`unzip`)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def main(argv=None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    setup_logging(quiet=True)
    return run_main(lambda: measure(args, results_destination(parser, args, "unzip", ("archive",))))


def measure(args: argparse.Namespace, destination: Destination) -> None:
    archive = args.archive.resolve()
    infos = zip_entries(archive, "ARCHIVE")
    num_files = sum(not info.is_dir() for info in infos)
    runners = sides(archive)
    names = list(runners)
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu_times: dict[str, list[float]] = {name: [] for name in names}
    load_before = os.getloadavg()
    if args.work_dir is not None:
        Path(args.work_dir).mkdir(parents=True, exist_ok=True)  # /dev/shm/bench on a fresh machine
    work = Path(tempfile.mkdtemp(prefix="bench_unzip_", dir=args.work_dir))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so `timeout` still lets the cleanup below run
    try:
        for round_index in range(args.repeats):
            order = names[round_index % len(names):] + names[:round_index % len(names)]
            for name in order:
                target = work / f"round{round_index}_{names.index(name)}"
                os.sync()  # the previous run's dirty pages must not be written back during this one
                start, cpu_start = time.perf_counter(), cpu_seconds()
                runners[name](target)
                times[name].append(time.perf_counter() - start)
                cpu_times[name].append(cpu_seconds() - cpu_start)
                if count_files(target) != num_files:
                    raise UserError(f"{name} extracted {count_files(target)} files of {archive}'s {num_files}: "
                                    "check the archive with unzip -t")
                shutil.rmtree(target)
                print(f"round {round_index + 1}: {name:<24} {times[name][-1]:7.2f} s, CPU {cpu_times[name][-1]:5.2f} s",
                      file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    medians = {name: statistics.median(values) for name, values in times.items()}
    cpu_medians = {name: statistics.median(values) for name, values in cpu_times.items()}
    rows = [(name, f"{medians[name]:.2f}", " ".join(f"{value:.2f}" for value in times[name]),
             f"{medians[OURS] / medians[name]:.2f}", f"{cpu_medians[name]:.2f}",
             f"{cpu_medians[OURS] / cpu_medians[name]:.2f}") for name in names]
    print(f"{archive.name}: {num_files:,} files, {sum(info.file_size for info in infos) / 1e6:.1f} MB; "
          f"{args.repeats} rounds, alternated; load average before {load_before[0]:.1f}, after {load_after[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    print(format_table(["side", "median s", "runs s", "ours / this", "median CPU s", "CPU ours / this"], rows))
    destination.write({
        "archive": str(archive), "files": num_files, "repeats": args.repeats, "seconds": times,
        "median_seconds": medians, "ratio_ours_to": {name: medians[OURS] / medians[name] for name in names},
        "cpu_seconds": cpu_times, "median_cpu_seconds": cpu_medians,
        "cpu_ratio_ours_to": {name: cpu_medians[OURS] / cpu_medians[name] for name in names},
        "load_average_before": load_before, "load_average_after": load_after, "cpus": os.cpu_count(),
        "python": platform.python_version(), "platform": platform.platform(),
    })


if __name__ == "__main__":
    sys.exit(main())
