"""What every script shares: the argument parser, logging, progress bars and exit codes
(0 done, 1 failed with one line on stderr that says how to fix it, 2 bad usage)."""

from __future__ import annotations

import _thread
import argparse
import contextlib
import errno
import logging
import math
import os
import queue
import re
import shlex
import signal
import sys
import threading
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeVar

from tqdm import tqdm

from realvsai.errors import UserError
from realvsai.interrupts import EXIT_FAILED, PYTHONS_OWN, RERUN_ADVICE, end_start_up

EXIT_OK, EXIT_USAGE = 0, 2  # and EXIT_FAILED (1), with which a script interrupted while it starts exits too
T = TypeVar("T")
logger = logging.getLogger("realvsai")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the docstring's layout (folder trees, examples) and appends each default that says something: not
    None or [] (no value: the help says what happens then), not a switch's False, not where the help gives it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        silent = (action.default is None or action.default is False or action.default == []
                  or "(default:" in (action.help or ""))  # "is": a default of 0 is said
        return action.help if silent else super()._get_help_string(action)


def make_parser(doc: str | None, prog: str | None = None,
                quiet: str = "no progress bars or info lines: only results, warnings and errors"
                ) -> argparse.ArgumentParser:
    """A parser whose description is the script's docstring (its help shows every default), with ``--quiet`` (whose
    help is ``quiet``)."""
    parser = _Parser(prog=prog, description=doc, formatter_class=_HelpFormatter)
    parser.add_argument("-q", "--quiet", action="store_true", help=quiet)
    return parser


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose bad command line is one line, naming the help (argparse's usage first, ModelTraining's
    21 lines, buried the line that mattered)."""

    def error(self, message: str):
        if " " in self.prog:  # the app's prog is a whole command
            command = self.prog
        else:  # the script as it was given (``python ../repo/DataZipper.py`` from another folder)
            given = sys.argv[0] if os.path.basename(sys.argv[0]) == self.prog else self.prog
            command = f"python {shlex.quote(given)}"
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} ({command} --help)\n")


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is when a line is logged (a test harness may swap and close it), or past
    the filter to its terminal (``_stderr``)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = printable(self.format(record))
            with _TERMINALS_LOCK:  # the terminal _stderr gives stays open until the line is written
                print(text, file=_stderr())
        except (OSError, ValueError):  # a closed or broken stderr: logging's own report, as StreamHandler does
            self.handleError(record)


# Control characters but the line breaks and tabs the project writes itself, as escapes: a file name's carriage return
# (macOS' "Icon\r") sends the rest of a line over its start on a terminal, an escape byte recolours it.
_CONTROL_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7f, 0xa0)) if chr(code) not in "\n\t"}
_CONTROL_ESCAPES[ord("\r")] = "\\r"


def printable(text: str) -> str:
    """``text`` with the bytes of a file name that is not UTF-8 shown as ``\\xe9``, which any stream can print, and
    its control characters (but line breaks and tabs) as escapes: ``Icon\\r``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace").translate(_CONTROL_ESCAPES)


def columns(text: str) -> int:
    """How many columns ``text`` takes on a terminal: a combining mark (an accent of a name written on macOS, NFD)
    none, a wide character (Chinese, Japanese, Korean) two."""
    return sum(0 if unicodedata.combining(character) else 2 if unicodedata.east_asian_width(character) in "WF" else 1
               for character in text)


def pad(text: str, width: int, right: bool = False) -> str:
    """``text`` filled out with spaces to ``width`` columns (``columns``), on its left where ``right``."""
    filling = " " * (width - columns(text))
    return filling + text if right else text + filling


# Third-party warnings that say nothing to a user, as the first entries of ``warnings.filters`` (``hide_noise``),
# in the form it holds them: (action, message pattern (re.I), category, module pattern, line). Each module that
# calls the code warning one adds its own: images.py Pillow's, callbacks.py Keras'.
_NOISE: list[tuple[str, re.Pattern | None, type[Warning], re.Pattern | None, int]] = []


def hide_noise(*noise: tuple[str, re.Pattern | None, type[Warning], re.Pattern | None, int]) -> None:
    """Adds ``noise`` to the third-party warnings hidden, and puts them all first in the process's warning filters
    where another filter or a reset moved or took them (a test's "error", PYTHONWARNINGS=default): each function that
    calls code that warns one calls it. Not ``warnings.catch_warnings`` around each call, which saves the filter list
    as it finds it and puts that back, and is not thread-safe: two threads' blocks interleaved, one put back a list
    without the other's filter while that one was still opening, and Pillow's warning went through (in 2 of 3 runs
    of 12,000 opens of a 108 MP header in 4 threads). This narrows that race, not closes it: while it puts the
    filters back first (only after something else moved them), another thread's warning can still pass. Any other
    warning passes as the filters say."""
    _NOISE.extend(entry for entry in noise if entry not in _NOISE)
    if warnings.filters[:len(_NOISE)] != _NOISE:
        for action, message, category, module, _ in reversed(_NOISE):
            warnings.filterwarnings(action, message.pattern if message else "", category,
                                    module.pattern if module else "")


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
    """A tqdm bar on stderr (``_stderr``) around ``iterable``, hidden when logging is quiet and where stderr is not a
    terminal (in a log its redraws are carriage returns on one line, which the next line printed would follow)."""
    stream = _stderr()
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):  # no stderr (pythonw), or a closed one
        terminal = False
    shown = logger.isEnabledFor(logging.INFO) and terminal
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not shown, leave=False, file=stream,
                dynamic_ncols=True)


def _stderr() -> TextIO:
    """Where the project's log lines and bars go: ``sys.stderr``, or, when that writes into the pipe of a filter
    (``tensorflow_logs_filtered``) on a terminal, that terminal itself. Keras writes to stdout directly, so a line
    that took the pipe's thread could show after Keras' next one ("epoch 1: ... saved" after the epoch's line)."""
    terminals = _FILTERED_TERMINALS[-1:]  # read once: another thread's filter may end meanwhile
    try:
        into_the_filter = bool(terminals) and sys.stderr.fileno() == 2
    except (AttributeError, ValueError, OSError):  # no stderr (pythonw), a closed one, or one with no file (a test's)
        into_the_filter = False
    return terminals[0] if into_the_filter else sys.stderr


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C with the script's own advice on how to go on, which ``run_main`` prints instead of its own."""


class _CtrlC:
    """``watch_ctrl_c``'s note: whether Ctrl-C was pressed since the watch began, with which signal, whether its
    unraisable hook is running, and whether a Ctrl-C waits for a block to end (``ctrl_c_deferred``)."""

    pressed = in_hook = deferred = False
    signum = signal.SIGINT


class _RaiseAgain:
    """A thread that sends the main thread a signal when ``later`` asks: its handler then runs at the main thread's
    next bytecode, outside the finalizer and the hook that asked (a wait there, ``time.sleep`` or a lock, ends as for
    a Ctrl-C). Started at the first request (most runs make none); ``stop`` ends it, after which it sends nothing."""

    def __init__(self) -> None:
        self._asked: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._tripping = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def later(self, signum: int) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="realvsai-ctrl-c", daemon=True)
            self._thread.start()
        self._asked.put(signum)

    def _run(self) -> None:
        while (signum := self._asked.get()) is not None:
            with self._tripping:
                if self._stopped:
                    continue
                if hasattr(signal, "pthread_kill"):
                    signal.pthread_kill(threading.main_thread().ident, signum)
                else:  # Windows: at the main thread's next bytecode, once a wait it is in ends
                    _thread.interrupt_main(signum)

    def stop(self) -> None:
        with self._tripping:
            self._stopped = True
        if self._thread is not None:
            self._asked.put(None)
            self._thread.join()


@contextlib.contextmanager
def watch_ctrl_c() -> Iterator[None]:
    """While the block runs, a Ctrl-C that Python drops is raised again, and every Ctrl-C is noted, so that
    ``raise_if_ctrl_c`` stops at one that did not stop the code it landed in.

    Python runs a signal's handler at the main thread's next bytecode, which may be in a finalizer (a ``__del__``,
    a weakref or garbage-collection callback: TensorFlow and matplotlib run many, and JAX, which Keras imports on
    every backend, runs one at each of Python's garbage collections), where it prints the KeyboardInterrupt as
    "Exception ignored in ..." and drops it: the program went on as if never interrupted, to the end of a long
    loop. Here a dropped one is not printed but raised again at once (``_RaiseAgain``) past the finalizer (or
    dropped there and raised again once more), so that it stops the program where an undropped one would, a moment
    later: in a loop, within the step it landed in (the batch, where TensorFlow's or JAX's compiled code runs it).
    Only the main thread may set a handler, and one that is not Python's own (Ctrl-C ignored) is left as it is.
    SIGTERM (``timeout``, ``docker stop``, Slurm, systemd), where it would end the program without a word, counts as
    a Ctrl-C too, so a stopped run says how to go on. The watch takes both over from the guard of a script's start
    (``interrupts.guard_start_up``); once it ends, a Ctrl-C raised again too late is let go, and Python's own handlers
    are back.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    end_start_up()
    found = {number: signal.getsignal(number) for number in PYTHONS_OWN}
    watched = [number for number, handler in found.items() if handler is PYTHONS_OWN[number]]
    printing_hook, again, watching = sys.unraisablehook, _RaiseAgain(), True

    def note(signum: int, frame: object) -> None:
        if not watching:  # raised again as the watch ended: the block is over
            return
        _CtrlC.pressed, _CtrlC.signum = True, signum
        if _CtrlC.deferred:  # raised as ``ctrl_c_deferred`` ends
            return
        if _CtrlC.in_hook:  # ``unprinted`` would drop it as well
            again.later(signum)
            return
        raise KeyboardInterrupt

    def unprinted(unraisable: Any) -> None:
        outer, _CtrlC.in_hook = _CtrlC.in_hook, True
        try:
            if _CtrlC.pressed and issubclass(unraisable.exc_type, KeyboardInterrupt):
                again.later(_CtrlC.signum)  # dropped in a finalizer: raised again past it
            else:
                printing_hook(unraisable)
        finally:
            _CtrlC.in_hook = outer

    _CtrlC.pressed = False
    for number in watched:
        signal.signal(number, note)
    sys.unraisablehook = unprinted
    try:
        yield
    finally:
        watching = False
        again.stop()  # trips nothing more; one it tripped already runs ``note`` on the way, which lets it go
        for number in watched:
            signal.signal(number, found[number])
        sys.unraisablehook = printing_hook
        _CtrlC.pressed = False


@contextlib.contextmanager
def ctrl_c_deferred() -> Iterator[None]:
    """A Ctrl-C (or SIGTERM) during the block, under ``watch_ctrl_c``, stops the program as the block ends, not in
    it: for a record that must be written whole once its work is done (a second or so), which one lost would make
    the same command do that work again."""
    outer, _CtrlC.deferred = _CtrlC.deferred, True
    try:
        yield
    finally:
        _CtrlC.deferred = outer
    if not outer:
        raise_if_ctrl_c()


def raise_if_ctrl_c() -> None:
    """Raises KeyboardInterrupt when Ctrl-C was pressed during ``watch_ctrl_c`` but the program went on (the
    KeyboardInterrupt was caught, or became another error): call it where stopping is safe, and before what must
    not happen once interrupted; never after work that has finished, which a Ctrl-C can no longer stop."""
    if _CtrlC.pressed:
        raise KeyboardInterrupt


def run_main(body: Callable[[], object]) -> int:
    """Runs a script's ``body`` (None or an exit code); the failures a user can cause become one line and exit 1.
    Ctrl-C ends with "interrupted." and ``RERUN_ADVICE``, or an ``Interrupted``'s own advice, also one that Python
    dropped in a finalizer (``watch_ctrl_c`` raises it again) or that became another error. A body that returns
    has finished its work: it ends with its exit code, whatever Ctrl-C its code caught on the way."""
    try:
        with watch_ctrl_c():
            try:
                result = body()
            except Exception:  # a Ctrl-C in TensorFlow's C++ code comes out as another error (SystemError, ...)
                raise_if_ctrl_c()
                raise
    except UserError as error:
        message = str(error)
    except FileNotFoundError as error:
        message = f"{error.filename or error}: no such file or folder. Check the path."
    except PermissionError as error:
        message = (permission_denied(error.filename) if error.filename is not None else
                   "permission denied. Check the owner and mode of the files and folders this command uses.")
    except IsADirectoryError as error:
        message = f"{error.filename or error} is a folder, but a file was expected."
    except OSError as error:  # what else the file system refuses: a path under a file, a long name, a loop...
        message = describe_os_error(error)
    except RuntimeError as error:
        # Path.resolve's "Symlink loop from ..." (before Python 3.13), raised while handling the loop's OSError
        loop = error.__context__
        if not (isinstance(loop, OSError) and loop.errno == errno.ELOOP):
            raise
        message = describe_os_error(loop)
    except KeyboardInterrupt as interrupt:
        message = f"interrupted. {interrupt if isinstance(interrupt, Interrupted) else RERUN_ADVICE}"
    except ModuleNotFoundError as error:
        if error.name != "tensorflow":  # another missing module is the installation's fault, with its traceback
            raise
        message = ("this step needs TensorFlow, which reads the images (tf.data) on every Keras backend: pip install "
                   "tensorflow-cpu (or tensorflow), then run the same command again.")
    else:
        return EXIT_OK if result is None else int(result)
    print(printable(f"error: {message}"), file=sys.stderr)
    return EXIT_FAILED


def permission_denied(path: object) -> str:
    """The line for a file or folder that the user may not read or write (chmod, another owner): ``run_main``'s for
    a PermissionError, and a loader's that must say it as a UserError (the app shows no other)."""
    return f"{_denied(path)}."


def _denied(path: object) -> str:
    """What is denied at ``path``, and what to check. A file that is not there (one it could not make, or reach in a
    folder it may not search) names its folder, the one to fix."""
    path = os.fspath(path) if isinstance(path, (str, os.PathLike)) else str(path)
    if not os.path.lexists(path) and os.path.isdir(folder := os.path.dirname(path) or "."):
        return f"{folder}: permission denied for {os.path.basename(path)} in it. Check the folder's owner and mode"
    return f"{path}: permission denied. Check the {'folder' if os.path.isdir(path) else 'file'}'s owner and mode"


def exit_script(code: int) -> NoReturn:
    """Ends a script with ``code``: ``sys.exit``, but once Keras is loaded without the interpreter's teardown (once
    the output is flushed), which skips nothing of the project's: its files are written and closed by then. A
    training stopped in its first epoch on JAX printed its line, then crashed in the teardown of TensorFlow's and
    XLA's runtimes (a segmentation fault, exit 139, which Slurm and ``timeout`` read as a crash); on TensorFlow the
    teardown gave the prompt back 5-10 s after the last line (--predict, a training)."""
    if sys.modules.get("keras") is None:
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(code)


def usage_check(parser: argparse.ArgumentParser, check: Callable[[], T]) -> T:
    """``check()``, its UserError turned into bad usage: argparse's line and exit 2. For what a ``type=`` function
    cannot see, one value at a time: several values together (``--ratios``), a flag given more than once."""
    try:
        return check()
    except UserError as error:
        parser.error(str(error))


def refuse_given_twice(paths: Sequence[Path], flag: str) -> None:
    """UserError where two of ``paths`` (given as ``flag``, or the argument ``SOURCE``) are one folder or file, as the
    file system finds it (``data/test`` and ``data/./test``, a symlink and its target): a bad command line."""
    # realpath, not Path.resolve: a symlink loop raised RuntimeError (before Python 3.13) while the command line
    # was read, before run_main watches; the work then ends on it in one line
    resolved = [Path(os.path.realpath(path)) for path in paths]
    for index, path in enumerate(resolved):
        if path in resolved[:index]:
            raise UserError(f"{flag} {paths[index]} is given twice (also as {paths[resolved.index(path)]}); give each "
                            f"{flag} once")


_OS_ERROR_HINTS = {
    errno.ENOTDIR: "a folder in this path is a file. Move that file away or choose another path",
    errno.EEXIST: "this is a file, but a folder is needed here. Move that file away or choose another path",
    errno.ENAMETOOLONG: "a name in this path is longer than the file system allows (255 bytes a name). "
                        "Shorten it",
    errno.ELOOP: "too many levels of symbolic links (a symlink loop). Remove or fix the link",
    errno.ENOSPC: "no space left on the disk. Free some space",
    errno.EDQUOT: "disk quota exceeded. Free some space",
    errno.EROFS: "the file system is read-only. Choose a writable place",
    errno.EFBIG: "the file grew past the largest file allowed here: the limit of your shell or job (see ulimit -f), or "
                 "the file system's (FAT32 holds 4 GB at most). Raise the limit or choose another place",
}
# For work that can only go on where it is (``describe_os_error``'s ``in_place``): no other place is offered.
_IN_PLACE_HINTS = {
    errno.EROFS: "the file system is read-only. Make it writable",
    errno.EFBIG: _OS_ERROR_HINTS[errno.EFBIG].removesuffix(" or choose another place"),
}


def describe_os_error(error: OSError, then: str = "run the same command again (finished work is kept)",
                      in_place: bool = False) -> str:
    """One line for a file-system error: the path, what went wrong, and how to go on (``then``, once fixed).
    ``in_place``: the work can only go on where it is (a training's run folder), so no other place is offered."""
    if error.errno in (errno.EACCES, errno.EPERM) and error.filename is not None:
        return f"{_denied(error.filename)}, then {then}."
    where = f"{error.filename}: " if error.filename is not None else ""
    hint = ((in_place and _IN_PLACE_HINTS.get(error.errno))
            or _OS_ERROR_HINTS.get(error.errno, f"{' '.join(str(error.strerror or error).split())}. Fix the cause"))
    return f"{where}{hint}, then {then}."


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``count`` and ``noun``, or its plural ``nouns`` (default: noun + "s"): "1 copy", "1,000 copies"."""
    return f"{count:,} {noun if count == 1 else nouns or noun + 's'}"


def default_workers() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        return os.cpu_count() or 1


def nonempty_path(text: str) -> Path:
    """argparse type for a file or folder: an empty text (an unset shell variable) is refused rather than read as
    the current folder."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path; give a file or folder (. for the current folder)")
    return Path(text)


def ascii_number(text: str) -> str:
    """``text``, a numeric flag's value, where it is ASCII (else ArgumentTypeError): every numeric type reads it
    through here. Python's int() and float() (and re's ``\\d``) also read the digits of other scripts, "٣" as 3, so
    a number typed in another keyboard layout would pass unseen."""
    if not text.isascii():
        raise argparse.ArgumentTypeError(f"{text!r} is not written in ASCII; type the number with the digits 0-9")
    return text


def integer(text: str) -> int:
    """argparse type for a whole number of any sign (a seed)."""
    try:
        return int(ascii_number(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def bounded(kind: type, limit: Any) -> Callable[[str], Any]:
    """argparse type for a numeric flag: a ``kind`` inside ``limit`` (a ``config.Limit``: the one range of that
    flag, so never NaN or infinite, and a value one script takes every other takes too)."""

    def parse(text: str) -> Any:
        try:
            value = kind(ascii_number(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}: give "
                                             f"a value {limit}") from None
        if value not in limit:
            raise argparse.ArgumentTypeError(f"{text} is out of range: give a value {limit}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def positive_int(text: str) -> int:
    """argparse type for an integer above zero."""
    try:
        value = int(ascii_number(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give one above 0") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a whole number above 0")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(ascii_number(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def fraction(text: str) -> float:
    """argparse type for a share strictly between 0 and 1 (nan and inf refused)."""
    value = _finite_float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is outside (0, 1); give a share such as 0.2")
    return value


def share(text: str) -> float:
    """argparse type for a finite share of at least 0 (one of several that add up to 1)."""
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative; give shares of at least 0, e.g. 0.7 0.15 0.15")
    return value


def expansion_ratio(text: str) -> float:
    """argparse type for a finite ratio of at least 1 (a stored file expands exactly once)."""
    value = _finite_float(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of at least 1, e.g. 200 "
                                         "(a stored file expands exactly once)")
    return value


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def byte_count(text: str) -> int:
    """argparse type for a size of at least one byte: ``5000000``, ``500M``, ``100G`` (units are powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", ascii_number(text), re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; write e.g. 5000000, 500M or 100G")
    num_bytes = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if num_bytes < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is less than one byte; write e.g. 5000000, 500M or 100G")
    return num_bytes


def confirm(question: str, assume_yes: bool) -> bool:
    """True when ``assume_yes``, or when a person at a terminal answers yes (UserError without a terminal)."""
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        raise UserError("no terminal to confirm on. Add --yes to go ahead without asking.")
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:  # Ctrl-D
        print()
        return False
    return answer.strip().lower() in ("y", "yes")


def format_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain-text table with right-aligned numbers, for the summaries the scripts print; a whole number (not a
    flag) with thousands separators, as the scripts' summary lines write counts."""
    rows = [[f"{cell:,}" if isinstance(cell, int) and not isinstance(cell, bool) else str(cell) for cell in row]
            for row in rows]
    widths = [max(columns(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(pad(str(cell), width) for cell, width in zip(header, widths)),
             "  ".join("-" * width for width in widths)]
    lines += ["  ".join(pad(cell, width, right=cell.replace(",", "").replace(".", "").isdigit())
                        for cell, width in zip(row, widths)) for row in rows]
    return "\n".join(lines)


# What TensorFlow's C++ code logs through absl straight to file descriptor 2, whatever TF_CPP_MIN_LOG_LEVEL
# says (TensorFlow 2.21): "I0000 00:00:1795432379.166 30569 port.cc:153] oneDNN ...", and absl's notice before
# the first; and libjpeg's own line for a broken JPEG (the scripts name the file and say what is wrong with it).
_ABSL_NOTICE = rb"WARNING: All log messages before absl::InitializeLog\(\) is called"
_ABSL_LINE = rb"[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ "
_ABSL = _ABSL_NOTICE + rb"|" + _ABSL_LINE + rb"[\w.-]+:\d+\] "
# cpu_feature_guard's notice goes on for a second line.
_CPU_FEATURES_ADVICE = (rb"To enable the following instructions: .* rebuild TensorFlow with the appropriate "
                        rb"compiler flags\.$")
_NATIVE_LOG_LINE = re.compile(rb"^(" + _ABSL + rb"|" + _CPU_FEATURES_ADVICE + rb"|"
                              rb"Improper call to JPEG library in state \d+$|Corrupt JPEG data: )")
_NATIVE_LOG_STARTS = (b"I", b"W", b"E", b"F", b"C", b"T")  # the first letter of every line _NATIVE_LOG_LINE matches
# Of those, the notices of every start, which tell a user nothing: absl's, oneDNN's (also an "E" line where an op
# on booleans falls back to Eigen's kernel, as a 3-class run's does), and the CUDA probes of a machine without a
# GPU, one of them an "E" line (the scripts say themselves which devices they use).
_START_UP = (_ABSL_NOTICE + rb"|" + _ABSL_LINE + rb"(port\.cc:\d+\] oneDNN custom operations|cudart_stub\.cc:\d+\] |"
             rb"cuda_platform\.cc:\d+\] failed call to cuInit|cpu_feature_guard\.cc:\d+\] |"
             rb"util\.cc:\d+\] oneDNN supports \w+ only on platforms with )")
_START_UP_NOTICE = re.compile(rb"^(" + _START_UP + rb"|" + _CPU_FEATURES_ADVICE + rb")")
# An absl line can also land on a line begun already: a progress bar's, drawn with no line end.
_NATIVE_LOG_WITHIN, _START_UP_NOTICE_WITHIN = re.compile(_ABSL), re.compile(_START_UP)


# One filter at a time: each swaps the process's stderr, so two threads' (the app's sessions) would cross.
_STDERR_FILTER = threading.RLock()
# The terminals behind the filters on now (a stream on a dup of the stderr each replaced), innermost last: the
# project's own lines and bars go there directly (``_stderr``); only other writers' lines take the filter's pipe.
_FILTERED_TERMINALS: list[TextIO] = []
# Held while a log line is written to one of them and while one is taken off the list, to be closed: the app's
# sessions are threads, and one that logged as another's filter ended wrote to the stream just closed.
_TERMINALS_LOCK = threading.RLock()


@contextlib.contextmanager
def tensorflow_logs_filtered(quiet: bool) -> Iterator[None]:
    """Filters this process's stderr while the block runs: TensorFlow's start-up notices never show, and with
    ``quiet`` (--quiet) none of its log lines (its Python loggers' below ERROR, and the absl lines of its C++ code,
    which TF_CPP_MIN_LOG_LEVEL does not reach). Every other line passes as it comes, a progress bar's redraw too,
    whichever thread writes it; on a terminal the project's own lines and bars skip the filter (``_stderr``). A
    block begun in another thread waits for this one to end."""
    with _STDERR_FILTER, _filtered_stderr(quiet):
        yield


@contextlib.contextmanager
def _filtered_stderr(quiet: bool) -> Iterator[None]:
    if quiet:
        logging.getLogger("absl").setLevel(logging.ERROR)
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
    hidden, within = (_NATIVE_LOG_LINE, _NATIVE_LOG_WITHIN) if quiet else (_START_UP_NOTICE, _START_UP_NOTICE_WITHIN)
    sys.stderr.flush()
    stderr = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward() -> None:
        held, passing = b"", False  # the line under way, unless it shows already (passing)
        while chunk := os.read(read_end, 1 << 16):
            *lines, held = (held + chunk).split(b"\n")
            for line in lines:
                if not passing and hidden.match(line):
                    pass
                elif found := within.search(line):  # the hidden line takes the rest, its line end too
                    os.write(stderr, line[:found.start()] + (b"" if b"\r" in line or passing else b"\n"))
                else:
                    os.write(stderr, line + b"\n")
                passing = False
            # A line's start passes at once unless a hidden line may begin so: a bar's redraw ("\r...") shows
            # as it is drawn. (C++ writes a log line whole, so what is held waits for no more than that write.)
            if held and (passing or held[:1] not in _NATIVE_LOG_STARTS):
                if found := within.search(held):  # shown up to a hidden line, which is judged once it ends
                    os.write(stderr, held[:found.start()])
                    held, passing = held[found.start():], False
                else:
                    os.write(stderr, held)
                    held, passing = b"", True
        if held and (passing or not hidden.match(held)):
            os.write(stderr, held)
        os.close(read_end)

    thread = threading.Thread(target=forward, daemon=True)
    thread.start()
    try:
        with _listed_if_a_terminal(stderr):
            yield
    finally:
        sys.stderr.flush()
        os.dup2(stderr, 2)  # closes the pipe's write end: the thread reads what is left, then stops
        thread.join()
        os.close(stderr)


@contextlib.contextmanager
def _listed_if_a_terminal(fd: int) -> Iterator[None]:
    """While the block runs, a stream on ``fd`` is the last of ``_FILTERED_TERMINALS`` if ``fd`` is a terminal."""
    if not os.isatty(fd):
        yield
        return
    # closefd=False: the filter closes fd itself, after it has put it back on file descriptor 2.
    with open(fd, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace", closefd=False) as terminal:
        _FILTERED_TERMINALS.append(terminal)
        try:
            yield
        finally:
            with _TERMINALS_LOCK:
                _FILTERED_TERMINALS.remove(terminal)
