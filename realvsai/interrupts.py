"""Ctrl-C (and SIGTERM) while one of the project's scripts starts, before ``cli.run_main`` takes them over.

The package's import (a script's first ``from realvsai...``) calls ``guard_start_up``: from then until
``cli.run_main`` begins (``end_start_up``), either signal ends the script at once with run_main's line for an
interrupt and its exit status 1. Before, a Ctrl-C in those imports (0.1-0.2 s of them on a warm disk, more on a cold
one) printed a KeyboardInterrupt traceback and the script died of SIGINT (130 in a shell), and a SIGTERM ended it
without a word. Nothing is written before run_main, so there is nothing to finish: the handler exits itself, which
also cannot be lost in a finalizer as a KeyboardInterrupt can (``cli.watch_ctrl_c``).

Only the project's scripts (a ``.py`` in the repository root or in benchmarks/, run as ``__main__``) are guarded,
from the main thread, and only a signal that has Python's own handling: a program that imports the package as a
library (the tests, Streamlit's app sessions), or that runs with Ctrl-C ignored, keeps its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Any

EXIT_FAILED = 1  # a script's exit status when it failed or was interrupted (``cli.run_main``'s)
RERUN_ADVICE = "Run the same command again: finished work is kept and not redone."

# Python's own handling of each signal guarded here and watched by ``cli.watch_ctrl_c``: another handler is left alone.
PYTHONS_OWN = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
_replaced: dict[int, Any] = {}  # the handlers ``guard_start_up`` replaced, by signal


def guard_start_up() -> None:
    """Ends a starting script of the project at a Ctrl-C or SIGTERM with the interrupted line, until
    ``end_start_up``."""
    if threading.current_thread() is not threading.main_thread() or not _a_script_is_starting():
        return
    for number, handler in PYTHONS_OWN.items():
        if signal.getsignal(number) is handler:
            _replaced[number] = signal.signal(number, _stop_starting)


def end_start_up() -> None:
    """Gives Ctrl-C and SIGTERM back to the handlers ``guard_start_up`` found (``cli.run_main`` watches them from
    here); nothing where it guarded none. Main thread only."""
    while _replaced:
        number, handler = _replaced.popitem()
        if signal.getsignal(number) is _stop_starting:
            signal.signal(number, handler)


def _a_script_is_starting() -> bool:
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    return bool(path) and path.endswith(".py") and os.path.dirname(os.path.realpath(path)) in (
        _ROOT, os.path.join(_ROOT, "benchmarks"))


def _stop_starting(signum: int, frame: object) -> None:
    for stream in (sys.stdout, sys.stderr):  # what a script printed before (its --help)
        with contextlib.suppress(Exception):  # closed, or in the middle of a write this handler interrupted
            stream.flush()
    with contextlib.suppress(OSError):
        os.write(2, f"error: interrupted. {RERUN_ADVICE}\n".encode())
    os._exit(EXIT_FAILED)
