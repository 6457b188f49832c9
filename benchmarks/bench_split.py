"""DataSplitD2 (copies, and --link) against ``cp -r`` of the same tree: is the split about as fast as a copy?

Our side does more than ``cp -r``: it reads every file once for its sha256 and a full decode check,
plans the split, writes manifest.csv and skipped.csv, and writes each copy under a temporary name
hard-linked into place (never over another file). Both sides are whole commands (``cp -r SOURCE OUT``
and ``python DataSplitD2.py SOURCE --out OUT --quiet``, Python's start included), so CPU seconds (all of
DataSplitD2's threads) are counted too. Both write to the same disk; each run starts from a flushed disk
(``sync``, not timed) and writes into a folder of its own. No output is deleted until every run is done: on
ext4, creating files within seconds of deleting 100,000 takes up to ten times the kernel time a file, which
billed one run's clean-up to the next (``cp -r`` took 5.5 s after nothing was deleted, 37.4 s after a deletion;
the runs' outputs need about 0.4 GB each for the default zip). The sides alternate, several
repetitions, medians reported, with the ratio to ``cp -r`` (target: copies <= 1.5x). CPU seconds
(user + system, all child processes) are reported too: on a shared machine they vary less than wall
time. The re-run side times the copy split run again on its own output, with nothing left to do (its
first run is not timed): every file is read and its sha256 compared, and only a changed one decoded.

Default data: ../shared/datasets/cifake-trainsplit.zip (100,000 32x32 JPEGs, cifake/train|test/REAL|FAKE),
unpacked once into a temporary folder (not timed). Or give an unpacked train/test folder.

The default run writes benchmarks/results/split.json; a run on other data writes only where --results says.

Example:
    python benchmarks/bench_split.py                                      # 100,000 files
    python benchmarks/bench_split.py ../shared/datasets/cifake-mini --repeats 5   # 10,000 files, quick
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._bench import (  # noqa: E402
    Destination,
    add_results_option,
    existing,
    results_destination,
    run_child,
    zip_entries,
)
from realvsai.cli import format_table, positive_int, run_main  # noqa: E402
from realvsai.layout import find_train_test_root  # noqa: E402

DEFAULT_ZIP = REPO.parent / "shared" / "datasets" / "cifake-trainsplit.zip"
SIDES = ("cp -r", "DataSplitD2 copy", "DataSplitD2 --link", "DataSplitD2 re-run")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, nargs="?", default=None,
                        help=f"an unpacked dataset with train/ and test/ (default: unpack {DEFAULT_ZIP.name})")
    parser.add_argument("--source", dest="source_option", type=Path, default=None, help="same as SOURCE")
    parser.add_argument("--zip", type=Path, default=DEFAULT_ZIP, help="archive to unpack when no SOURCE is given")
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="repetitions of each side (default: %(default)s)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the temporary folders go (default: the system temp folder)")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="DataSplitD2's --workers (default: its own, one thread to check small images such as "
                             "CIFAKE's, one per core to copy them)")
    add_results_option(parser, "split")
    return parser


def cpu_seconds() -> float:
    """User + system seconds of this process and of its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_side(side: str, source: Path, out: Path, workers: int | None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of ``side`` from ``source`` into the fresh folder ``out`` (the re-run
    side: its second run there)."""
    if side == "cp -r":
        command = ["cp", "-r", str(source), str(out)]
    else:
        command = [sys.executable, str(REPO / "DataSplitD2.py"), str(source), "--out", str(out), "--quiet",
                   *(["--workers", str(workers)] if workers else []), *(["--link"] if "--link" in side else [])]
    if side == "DataSplitD2 re-run":
        run_child(command, "the split before the re-run", stdout=subprocess.DEVNULL)
    os.sync()  # start every run with nothing left to flush from the previous one
    cpu, start = cpu_seconds(), time.perf_counter()
    run_child(command, side, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    return wall, cpu_seconds() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    return run_main(lambda: measure(args, results_destination(parser, args, "split", ("source", "source_option",
                                                                                        "zip"))))


def measure(args: argparse.Namespace, destination: Destination) -> None:
    given = args.source or args.source_option
    if given is not None:
        existing(given, "SOURCE", "an unpacked dataset with train/ and test/")
    else:
        zip_entries(args.zip, "--zip")
    with tempfile.TemporaryDirectory(prefix="bench_split_", dir=args.workdir) as work:
        work = Path(work)
        source = args.source or args.source_option
        if source is None:
            print(f"unpacking {args.zip} (not timed) ...", flush=True)
            with zipfile.ZipFile(args.zip) as archive:
                archive.extractall(work / "unpacked")
            source = work / "unpacked"
        source = find_train_test_root(source.resolve())
        files = [path for path in source.rglob("*") if path.is_file()]
        num_files, num_bytes = len(files), sum(path.stat().st_size for path in files)
        print(f"{num_files:,} files, {num_bytes / 1e6:.0f} MB in {source}; {args.repeats} repetitions, "
              f"{args.workers or 'default'} workers", flush=True)

        runs: dict[str, list[tuple[float, float]]] = {side: [] for side in SIDES}
        for repeat in range(args.repeats):
            order = SIDES[repeat % len(SIDES):] + SIDES[:repeat % len(SIDES)]  # alternate who goes first
            for side in order:
                # A folder of its own, and none deleted before the end: see the module's docstring.
                out = work / f"out_{repeat + 1}_{SIDES.index(side) + 1}"
                runs[side].append(run_side(side, source, out, args.workers))
                print(f"  run {repeat + 1} {side:<20} {runs[side][-1][0]:7.2f} s wall {runs[side][-1][1]:7.2f} s CPU",
                      flush=True)

    medians = {side: (statistics.median(wall for wall, _ in runs[side]),
                      statistics.median(cpu for _, cpu in runs[side])) for side in SIDES}
    base_wall, base_cpu = medians["cp -r"]
    rows = [[side, f"{wall:.2f}", f"{wall / base_wall:.2f}x", f"{cpu:.2f}", f"{cpu / base_cpu:.2f}x"]
            for side, (wall, cpu) in medians.items()]
    print()
    print(format_table(["side", "median wall s", "vs cp -r", "median CPU s", "vs cp -r"], rows))
    print()
    destination.write({
        "benchmark": "split",
        "source": str(args.source or args.source_option or args.zip),
        "num_files": num_files,
        "num_bytes": num_bytes,
        "repeats": args.repeats,
        "workers": args.workers or "DataSplitD2's default",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "load_average_at_end": os.getloadavg(),
        "runs": {side: [{"wall_s": wall, "cpu_s": cpu} for wall, cpu in runs[side]] for side in SIDES},
        "median_wall_s": {side: wall for side, (wall, _) in medians.items()},
        "median_cpu_s": {side: cpu for side, (_, cpu) in medians.items()},
        "ratio_wall_vs_cp": {side: wall / base_wall for side, (wall, _) in medians.items()},
    })


if __name__ == "__main__":
    sys.exit(main())
