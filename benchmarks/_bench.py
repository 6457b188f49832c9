"""What the benchmark scripts share: where their figures go, the checks of the paths they are given, a child
process's failure told as one line, and ready-made files written as DataAugmentation writes its copies.

benchmarks/results/<name>.json holds the figures the README quotes, so only the run its row names writes it: the
default data and sizes (how many repetitions, and where the work goes, may differ). Any other run (a smoke run,
another folder, one part of a benchmark) writes only where ``--results PATH`` says, and otherwise says it wrote
nothing and how to keep its figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from realvsai.errors import UserError
from realvsai.files import atomic_write_text, write_new_files

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def add_results_option(parser: argparse.ArgumentParser, name: str) -> None:
    """``--results PATH``: where the figures go (default: the recorded file for the README's run, else nowhere)."""
    parser.add_argument("--results", type=Path, default=None,
                        help=f"write the figures here (default: benchmarks/results/{name}.json when the data and "
                             "sizes are the README's, otherwise nowhere)")


@dataclass(frozen=True)
class Destination:
    """Where one run's figures go: ``path``, or None where the run differs from the README's in ``differs``."""

    path: Path | None
    recorded: Path
    differs: tuple[str, ...] = ()

    def write(self, results: dict[str, Any]) -> None:
        """Writes ``results`` as JSON to ``path`` (atomically), or says why nothing was written."""
        if self.path is None:
            verb = "differs" if len(self.differs) == 1 else "differ"
            print(f"not written to {self.recorded}: this run's {', '.join(self.differs)} {verb} from the README's "
                  "run, whose figures it holds. Add --results PATH to keep these figures.")
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(results, indent=2, default=str) + "\n")
        print(f"written to {self.path}")


def _same(value: object, default: object) -> bool:
    if isinstance(value, Path) and isinstance(default, Path):  # ../shared/x from the repository is the default too
        return value.resolve() == default.resolve()
    return value == default


def results_destination(parser: argparse.ArgumentParser, args: argparse.Namespace, name: str,
                        measured: Iterable[str]) -> Destination:
    """Where the figures of the run ``args`` go: ``--results`` when given, else benchmarks/results/<name>.json
    when every option in ``measured`` (the data and sizes: what the figures describe) has its default, else
    nowhere."""
    recorded = RESULTS_DIR / f"{name}.json"
    differs = tuple(f"--{dest.replace('_', '-')}" for dest in measured
                    if not _same(getattr(args, dest), parser.get_default(dest)))
    if args.results is not None:
        return Destination(args.results, recorded)
    return Destination(None if differs else recorded, recorded, differs)


def existing(path: Path, flag: str, what: str) -> Path:
    """``path`` when it exists, else UserError naming ``flag`` and ``what`` it should be."""
    if not path.exists():
        raise UserError(f"{path} does not exist. Give {flag} {what}.")
    return path


def zip_entries(archive: Path, flag: str) -> list[zipfile.ZipInfo]:
    """The entries of the zip ``archive``; UserError where it is missing or not a zip."""
    existing(archive, flag, "a zip archive")
    try:
        with zipfile.ZipFile(archive) as zipped:
            return zipped.infolist()
    except (zipfile.BadZipFile, IsADirectoryError):
        raise UserError(f"{archive} is not a zip archive. Give {flag} a .zip file.") from None


def run_child(command: Sequence[str], what: str, stdout: int | None = subprocess.PIPE) -> str:
    """Runs ``command``; its output. A failure raises UserError with the child's last line on stderr."""
    process = subprocess.run(command, stdout=stdout, stderr=subprocess.PIPE, text=True)
    if process.returncode:
        lines = process.stderr.strip().splitlines()
        said = lines[-1].removeprefix("error: ") if lines else f"exit status {process.returncode} and no message"
        raise UserError(f"{what} failed: {said}")
    return process.stdout or ""


def settle() -> None:
    """Lets the disk catch up with the previous run's writes, outside every timing."""
    os.sync()
    time.sleep(1.0)


def format_load(load: tuple[float, float, float]) -> str:
    """A load average (1, 5, 15 min) as ``0.97/1.08/1.14``."""
    return "/".join(f"{value:.2f}" for value in load)


def write_in_batches(folder: Path, prefix: str, payloads: Sequence[bytes], batch: int) -> None:
    """Writes ``payloads`` into ``folder`` as ``<prefix><n>.jpg``, ``batch`` at a time through
    ``files.write_new_files``, as DataAugmentation writes a batch's copies; RuntimeError where a file was there."""
    for start in range(0, len(payloads), batch):
        if not all(write_new_files([(folder / f"{prefix}{index}.jpg", payloads[index])
                                    for index in range(start, min(len(payloads), start + batch))])):
            raise RuntimeError(f"a file in {folder} was there already")
