"""What every script shares: the argument parser, logging, progress bars and exit codes
(0 done, 1 failed with one line on stderr that says how to fix it, 2 bad usage)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

from realvsai.errors import UserError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
T = TypeVar("T")
logger = logging.getLogger("realvsai")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the docstring's layout (folder trees, examples) and appends every default."""


def make_parser(doc: str | None, prog: str | None = None) -> argparse.ArgumentParser:
    """A parser whose description is the script's docstring (its help shows every default), with ``--quiet``."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=_HelpFormatter)
    parser.add_argument("-q", "--quiet", action="store_true", help="print only warnings and errors, no progress bars")
    return parser


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is when a line is logged (a test harness may swap and close it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr)
        except (OSError, ValueError):  # a closed or broken stderr: logging's own report, as StreamHandler does
            self.handleError(record)


def setup_logging(quiet: bool = False) -> None:
    """Sends the project's log lines to stderr: INFO and up, or WARNING and up when ``quiet``."""
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def progress(
    iterable: Iterable[T], total: int | None = None, desc: str | None = None, unit: str = "file"
) -> Iterable[T]:
    """A tqdm bar on stderr around ``iterable``, hidden when logging is quiet."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not logger.isEnabledFor(logging.INFO),
                dynamic_ncols=True, leave=False, file=sys.stderr)


def run_main(body: Callable[[], object]) -> int:
    """Runs a script's ``body`` (None or an exit code); the failures a user can cause become one line and exit 1."""
    try:
        result = body()
    except UserError as error:
        message = str(error)
    except FileNotFoundError as error:
        message = f"{error.filename or error}: no such file or folder. Check the path."
    except PermissionError as error:
        message = f"{error.filename or error}: permission denied. Check the file's owner and mode."
    except IsADirectoryError as error:
        message = f"{error.filename or error} is a folder, but a file was expected."
    except KeyboardInterrupt:
        message = "interrupted. Run the same command again: finished work is kept and not redone."
    else:
        return EXIT_OK if result is None else int(result)
    print(f"error: {message}", file=sys.stderr)
    return EXIT_FAILED


def default_workers() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        return os.cpu_count() or 1


def existing_folder(text: str) -> Path:
    """argparse type for a folder that must exist (exit 2 with a clear message otherwise)."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not an existing folder")
    return path


def positive_int(text: str) -> int:
    """argparse type for an integer above zero."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a whole number above 0")
    return value


def confirm(question: str, assume_yes: bool) -> bool:
    """True when ``assume_yes``, or when a person at a terminal answers yes (UserError without a terminal)."""
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        raise UserError("no terminal to confirm on. Add --yes to go ahead without asking.")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def format_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain-text table with right-aligned numbers, for the summaries the scripts print."""
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(header, widths)),
             "  ".join("-" * width for width in widths)]
    lines += ["  ".join(cell.rjust(width) if cell.replace(",", "").replace(".", "").isdigit() else cell.ljust(width)
                        for cell, width in zip(row, widths)) for row in rows]
    return "\n".join(lines)
