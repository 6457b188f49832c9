"""Tests for realvsai.cli: exit codes, one-line errors, confirmation, the parser and tables."""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import io
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import unicodedata

import pytest
from conftest import REPO, one_error_line, run_script

from realvsai import cli
from realvsai.errors import UserError


def test_run_main_maps_user_error_to_exit_1_and_one_line(capsys):
    def body():
        raise UserError("data/raw has no class folders. Put each class in its own folder.")

    assert cli.run_main(body) == cli.EXIT_FAILED
    captured = capsys.readouterr()
    assert captured.err == "error: data/raw has no class folders. Put each class in its own folder.\n"
    assert "Traceback" not in captured.err and captured.out == ""


def test_run_main_maps_a_missing_file_to_exit_1(capsys, tmp_path):
    assert cli.run_main((tmp_path / "missing.zip").read_bytes) == cli.EXIT_FAILED
    assert capsys.readouterr().err == f"error: {tmp_path / 'missing.zip'}: no such file or folder. Check the path.\n"


def test_run_main_names_the_install_when_tensorflow_is_missing(capsys, monkeypatch):
    """On a machine set up for JAX alone, training and --predict ended in a ModuleNotFoundError traceback."""
    import sys

    monkeypatch.setitem(sys.modules, "tensorflow", None)  # what an import finds when it is not installed

    def body():
        import tensorflow  # noqa: F401

    assert cli.run_main(body) == 1
    assert capsys.readouterr().err == ("error: this step needs TensorFlow, which reads the images (tf.data) on every "
                                       "Keras backend: pip install tensorflow-cpu (or tensorflow), then run the same "
                                       "command again.\n")


def test_run_main_maps_ctrl_c_to_exit_1_with_a_rerun_hint(capsys):
    def body():
        raise KeyboardInterrupt

    assert cli.run_main(body) == cli.EXIT_FAILED
    assert "interrupted" in capsys.readouterr().err


def test_run_main_prints_the_advice_an_interrupted_script_gives_instead_of_its_own(capsys):
    def body():
        raise cli.Interrupted("Continue the run with: python ModelTraining.py --resume --name k9")

    assert cli.run_main(body) == cli.EXIT_FAILED
    assert capsys.readouterr().err == ("error: interrupted. Continue the run with: python ModelTraining.py --resume "
                                       "--name k9\n")


def drop_a_ctrl_c() -> None:
    """A Ctrl-C that Python loses: its handler runs at the next bytecode, here inside a ``__del__`` (in a run:
    TensorFlow's ``__del__`` methods, JAX's garbage-collection callback, matplotlib's weakref callbacks), where the
    KeyboardInterrupt it raises is printed as "Exception ignored in ..." and dropped."""

    class Garbage:
        def __del__(self):
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)

    Garbage()


def test_run_main_exits_1_on_a_ctrl_c_that_python_dropped_in_a_finalizer(capsys):
    """It was noticed only where the body ended (or a callback looked): a long loop went on to its last step, and
    then the work it had finished was called interrupted."""
    steps = []

    def body() -> None:
        for step in range(100):
            steps.append(step)
            if step == 1:
                drop_a_ctrl_c()
            time.sleep(0.01)  # the step's work, during which other threads run, as they do while files are read

    assert cli.run_main(body) == cli.EXIT_FAILED
    assert capsys.readouterr().err == f"error: interrupted. {cli.RERUN_ADVICE}\n"
    assert len(steps) < 50, f"went on for {len(steps)} of 100 steps"  # at once, but for a loaded machine's delays


def test_a_ctrl_c_that_lands_in_a_garbage_collection_callback_stops_the_body_at_its_next_step(capsys):
    """JAX runs a garbage-collection callback (Keras imports JAX on every backend): a SIGINT that arrived while it
    ran had its KeyboardInterrupt dropped there, and the loop went on to its end."""
    steps, sent = [], []

    def callback(phase: str, info: dict) -> None:
        if len(steps) == 2 and not sent:  # the SIGINT comes while the callback runs: its handler runs here
            sent.append(phase)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            time.sleep(0)

    def body() -> None:
        for step in range(100):
            steps.append(step)
            gc.collect()  # a collection, as allocating does now and then
            time.sleep(0.01)

    gc.callbacks.append(callback)
    try:
        assert cli.run_main(body) == cli.EXIT_FAILED
    finally:
        gc.callbacks.remove(callback)
    assert capsys.readouterr().err == f"error: interrupted. {cli.RERUN_ADVICE}\n"
    assert sent and len(steps) < 50, f"went on for {len(steps)} of 100 steps"


def test_a_run_main_within_a_run_main_leaves_the_outer_one_watching(capsys):
    """A benchmark runs a script's main in its own run_main: the inner one's end must not end the outer's watch.

    The Ctrl-C raised again stops the body within a step of its work, as a watch promises. One long sleep was not
    such a step: the signal sent again could land after the last bytecode before the sleep began, and then waits
    for the sleep's end (once in about 15 runs of this file in two workers: the whole 30 s)."""
    def body() -> None:
        assert cli.run_main(lambda: None) == cli.EXIT_OK
        drop_a_ctrl_c()
        for _ in range(3000):  # ended by the Ctrl-C raised again
            time.sleep(0.01)

    started = time.monotonic()
    assert cli.run_main(body) == cli.EXIT_FAILED
    assert capsys.readouterr().err == f"error: interrupted. {cli.RERUN_ADVICE}\n"
    assert time.monotonic() - started < 20


def test_run_main_ends_a_body_that_finished_as_done_though_a_ctrl_c_came_and_went_during_it(capsys):
    """A Ctrl-C whose KeyboardInterrupt the body's own code caught, to go on, was raised again once the body had
    finished: its complete work was reported as interrupted (exit 1)."""
    def body() -> int:
        with contextlib.suppress(KeyboardInterrupt):  # handled where it landed
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        print("done")
        return cli.EXIT_OK

    assert cli.run_main(body) == cli.EXIT_OK
    assert capsys.readouterr() == ("done\n", "")


def test_run_main_ends_as_interrupted_where_ctrl_c_became_another_error_in_tensorflow_s_code(capsys):
    """A Ctrl-C that lands in TensorFlow's C++ code comes out as another error (ImportError: initialization failed,
    SystemError: bad argument to internal function): 80-200 lines of traceback, where a Ctrl-C gets one line."""
    def body() -> None:
        try:
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        except KeyboardInterrupt:
            raise SystemError("Objects/listobject.c:338: bad argument to internal function") from None

    assert cli.run_main(body) == cli.EXIT_FAILED
    assert capsys.readouterr().err == f"error: interrupted. {cli.RERUN_ADVICE}\n"


def test_run_main_ends_a_script_stopped_by_sigterm_as_one_stopped_by_ctrl_c(capsys):
    """``timeout``, ``docker stop``, Slurm and systemd stop a program with SIGTERM: a training ended then without a
    word (exit 143), where Ctrl-C tells how to go on."""
    def body() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises at the next bytecode

    before = signal.getsignal(signal.SIGTERM)
    assert cli.run_main(body) == cli.EXIT_FAILED
    assert capsys.readouterr().err == f"error: interrupted. {cli.RERUN_ADVICE}\n"
    assert signal.getsignal(signal.SIGTERM) is before


def test_run_main_gives_back_the_ctrl_c_handler_it_found():
    before = signal.getsignal(signal.SIGINT)
    cli.run_main(lambda: None)
    assert signal.getsignal(signal.SIGINT) is before


def test_run_main_returns_the_body_exit_code():
    assert cli.run_main(lambda: None) == cli.EXIT_OK
    assert cli.run_main(lambda: 3) == 3


def test_run_main_keeps_the_traceback_of_a_programming_error():
    def body():
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        cli.run_main(body)


def test_confirm_refuses_without_a_terminal(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    with pytest.raises(UserError, match="--yes"):
        cli.confirm("Delete?", assume_yes=False)


def test_confirm_with_yes_does_not_ask(monkeypatch):
    monkeypatch.setattr("builtins.input", lambda prompt: pytest.fail("asked although --yes was given"))
    assert cli.confirm("Delete?", assume_yes=True)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("answer", "expected"), [("y", True), ("YES", True), ("", False), ("n", False)])
def test_confirm_at_a_terminal_takes_only_yes(monkeypatch, answer, expected):
    monkeypatch.setattr("sys.stdin", _Terminal())
    monkeypatch.setattr("builtins.input", lambda prompt: answer)
    assert cli.confirm("Delete?", assume_yes=False) is expected


def test_confirm_takes_an_end_of_input_at_the_prompt_for_no(monkeypatch):
    def end_of_input(prompt):
        raise EOFError  # Ctrl-D

    monkeypatch.setattr("sys.stdin", _Terminal())
    monkeypatch.setattr("builtins.input", end_of_input)
    assert cli.confirm("Delete?", assume_yes=False) is False


def test_make_parser_adds_quiet_and_shows_defaults():
    parser = cli.make_parser("Doc.")
    parser.add_argument("--batch-size", type=int, default=32, help="images per step")
    assert parser.parse_args(["-q"]).quiet
    assert "(default: 32)" in parser.format_help()


def test_help_leaves_out_a_default_of_none_which_says_nothing():
    parser = cli.make_parser("Doc.")
    parser.add_argument("--out", default=None, help="where to write (default: beside the model)")
    assert "(default: None)" not in parser.format_help()


DATA_SCRIPTS = ["DataUnZipper.py", "DataZipper.py", "DataSplitD1.py", "DataSplitD2.py", "DataMerger.py",
                "DataAugmentation.py", "MoveAugmentedImages.py", "DataDeleter.py", "ModelTraining.py"]


@pytest.mark.parametrize("script", DATA_SCRIPTS)
def test_help_gives_each_flag_one_default_and_none_for_a_switch(script):
    # "(default: False)" after a switch says nothing; after a help that gives its own default, it contradicts it.
    process = run_script(script, "--help")
    assert process.returncode == 0
    text = " ".join(process.stdout.split())
    assert "(default: False)" not in text and "(default: [])" not in text
    for flag_help in re.split(r"\s(?=--?[a-z])", text):
        assert flag_help.count("(default:") <= 1, flag_help


def help_blocks(help_text: str) -> list[list[str]]:
    """The description of a --help (between the usage and the options) as its paragraphs and "- " items, each a
    list of lines; a tree or an example (indented 4 or more) is a block of its own."""
    description = re.split(r"\n(?:positional arguments|options):\n", help_text.split("\n\n", 1)[1], maxsplit=1)[0]
    blocks: list[list[str]] = []
    for paragraph in description.split("\n\n"):
        previous = None
        for line in paragraph.splitlines():
            verbatim = line.startswith("    ")
            if previous is not None and verbatim == previous and not line.startswith("- "):
                blocks[-1].append(line)
            else:
                blocks.append([line])
            previous = verbatim
    return blocks


@pytest.mark.parametrize("script", [*DATA_SCRIPTS, "App.py"])
def test_help_description_reads_as_short_lines_and_short_paragraphs(script):
    """After the tree came one paragraph of clauses, up to 30 lines (App.py), in lines up to 116 characters."""
    process = run_script(script, "--help", timeout=120)
    assert process.returncode == 0
    blocks = help_blocks(process.stdout)
    assert blocks, process.stdout
    for block in blocks:
        assert all(len(line) <= 100 for line in block), block
        assert block[0].startswith("    ") or len(block) <= 3, block


def test_setup_logging_quiet_hides_info_and_progress():
    cli.setup_logging(quiet=True)
    assert not cli.logger.isEnabledFor(logging.INFO)
    assert cli.progress([1, 2], total=2).disable
    cli.setup_logging(quiet=False)
    assert cli.logger.isEnabledFor(logging.INFO)


def test_progress_bars_are_drawn_on_a_terminal_only(monkeypatch):
    """In a log (``> log 2>&1``) a bar's redraws and its clearing are carriage returns on one line: the summary
    printed after it ended up on that line, behind the bar's last state."""
    cli.setup_logging(quiet=False)
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    assert list(cli.progress([1, 2], total=2, desc="copying")) == [1, 2]
    assert log.getvalue() == ""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    assert not cli.progress([1, 2], total=2).disable


def test_positive_int_rejects_zero():
    assert cli.positive_int("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match="above 0"):
        cli.positive_int("0")


def test_format_table_right_aligns_numbers():
    table = cli.format_table(["class", "images"], [("REAL", "1,000"), ("FAKE", "5")])
    lines = table.splitlines()
    assert lines[0].split() == ["class", "images"]
    assert lines[2].endswith("1,000") and lines[3].endswith("    5")


def test_format_table_writes_whole_numbers_with_thousands_separators():
    """DataAugmentation's and MoveAugmentedImages' tables gave ``3254`` where the split's and the merge's give
    ``3,254``; a flag stays a word."""
    table = cli.format_table(["class", "images", "moved", "checked"], [("REAL", 3254, 12, True)])
    assert table.splitlines()[2].split() == ["REAL", "3,254", "12", "True"]


def test_a_log_line_that_cannot_be_written_does_not_stop_the_script(monkeypatch):
    class BrokenStream(io.StringIO):
        def write(self, text):
            raise BrokenPipeError("stderr went away")

    cli.setup_logging()
    monkeypatch.setattr(logging, "raiseExceptions", False)  # as in production: report nothing, go on
    monkeypatch.setattr("sys.stderr", BrokenStream())
    logging.getLogger("realvsai.test").warning("this line is lost")  # must not raise


START_UP_NOTICES = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"I0000 00:00:1795649272.053628   16214 port.cc:153] oneDNN custom operations are on. You may see slightly "
    b"different numerical results due to floating-point round-off errors from different computation orders.\n",
    b"I0000 00:00:1795649272.053991   16214 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    b"not be used.\n",
    b"E0000 00:00:1795649275.374318   16214 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed "
    b"call to cuInit: UNKNOWN ERROR (303)\n",
    # With a third class: an op on booleans (no oneDNN kernel without AVX-512) runs on Eigen's instead.
    b"E0000 00:00:1795677975.912190   28337 util.cc:131] oneDNN supports DT_BOOL only on platforms with AVX-512. "
    b"Falling back to the default Eigen-based implementation if present.\n",
]
OTHER_NATIVE_LINE = b"W0000 00:00:1795649275.374318   16214 bfc_allocator.cc:482] Allocator ran out of memory\n"


def write_to_fd_2(data: bytes) -> None:
    os.write(2, data)


@pytest.mark.parametrize("quiet", [False, True], ids=["default", "quiet"])
def test_tensorflow_start_up_notices_are_hidden_and_the_rest_passes(capfd, quiet):
    """TensorFlow's C++ start-up notices (absl's, oneDNN's, the CUDA probes of a machine without a GPU, one of them
    an 'E' line) say nothing to a user: hidden. Without --quiet, its other log lines and every other line pass."""
    with cli.tensorflow_logs_filtered(quiet):
        for line in [*START_UP_NOTICES, OTHER_NATIVE_LINE, b"training with one device (CPU)\n"]:
            write_to_fd_2(line)
    err = capfd.readouterr().err
    assert "training with one device (CPU)\n" in err
    assert not any(notice.decode().strip() in err for notice in START_UP_NOTICES), err
    assert ("Allocator ran out of memory" in err) is not quiet


def test_a_progress_bar_passes_the_filter_as_it_is_drawn(capfd):
    """A bar redraws its line with a carriage return and no newline: it must show then, not at the line's end."""
    import time

    with cli.tensorflow_logs_filtered(False):
        write_to_fd_2(b"\rcopying:  50%|#####     | 5/10")
        deadline = time.monotonic() + 5.0
        shown = ""
        while "50%" not in shown and time.monotonic() < deadline:
            time.sleep(0.05)
            shown += capfd.readouterr().err
        write_to_fd_2(b"\rcopying: 100%|##########| 10/10\n")
    assert "\rcopying:  50%|#####     | 5/10" in shown
    assert "100%" in capfd.readouterr().err


@contextlib.contextmanager
def fd_2_on_a_terminal(monkeypatch):
    """Puts file descriptor 2 (and ``sys.stderr`` on it, as a script's) on a new pty while the block runs; yields its
    terminal side (for writes that stand for Keras' stdout) and a list that then holds all the terminal showed."""
    import pty
    import select
    import termios

    master, terminal = pty.openpty()
    termios.tcsetwinsize(terminal, (24, 80))  # a new pty is 0 columns wide, where tqdm draws nothing
    saved, shown, done = os.dup(2), [], threading.Event()

    def read() -> None:  # all along: a full pty (17 kB) blocks its writers
        while True:
            if select.select([master], [], [], 0.2)[0]:
                shown.append(os.read(master, 1 << 16))
            elif done.is_set():
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    os.dup2(terminal, 2)
    try:
        with open(2, "w", closefd=False) as stream:
            monkeypatch.setattr(sys, "stderr", stream)
            yield terminal, shown
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        done.set()
        reader.join()  # before the terminal side closes, which drops what is unread
        os.close(terminal)
        os.close(master)


def test_a_progress_bar_is_drawn_inside_the_filter_when_stderr_is_a_terminal(monkeypatch):
    """The filter puts a pipe on file descriptor 2; DataAugmentation.py and ModelTraining.py run inside it, so a bar
    that asked the pipe whether it is a terminal was never drawn (71,871 copies written in 50 s of silence)."""
    monkeypatch.setattr(cli.logger, "level", logging.INFO)
    with fd_2_on_a_terminal(monkeypatch) as (_, shown), cli.tensorflow_logs_filtered(False):
        assert not sys.stderr.isatty()  # the filter's pipe
        with cli.progress(None, total=10, desc="augmenting", unit="copy") as bar:
            drawn = not bar.disable  # closing sets it
            bar.update(5)
    assert drawn, "the bar was hidden"
    assert b"\raugmenting:   0%" in b"".join(shown), shown


@pytest.mark.parametrize("ours", ["log line", "progress bar"])
def test_our_lines_reach_the_terminal_in_order_with_what_keras_writes_to_stdout(monkeypatch, ours):
    """Keras writes its bar and epoch lines straight to stdout, while the filter's thread passed our log lines and
    bars on later: under JAX "epoch 1: ... saved" showed after Keras' line of the epoch, and a bar's wipe too."""
    cli.setup_logging()
    epochs = range(1, 101)  # many: a single one is in order now and then, by chance
    with fd_2_on_a_terminal(monkeypatch) as (terminal, shown), cli.tensorflow_logs_filtered(False):
        for epoch in epochs:
            if ours == "log line":
                cli.logger.info("epoch %d: saved", epoch)
            else:
                with cli.progress(None, total=1, desc=f"validating {epoch}", unit="batch") as bar:
                    bar.update()
            os.write(terminal, f"Epoch {epoch} done\n".encode())  # as Keras' stdout, on the same terminal
    # What the terminal showed, a bar's redraws as one and its wipe (leave=False) named, in order.
    text = re.sub(r"\r {10,}\r", "(wiped)", b"".join(shown).decode())
    found = re.findall(r"epoch \d+: saved|validating \d+:|\(wiped\)|Epoch \d+", text)
    written = [each for i, each in enumerate(found) if not i or each != found[i - 1]]
    ours_each_epoch = ["epoch {}: saved"] if ours == "log line" else ["validating {}:", "(wiped)"]
    expected = [each.format(epoch) for epoch in epochs for each in [*ours_each_epoch, "Epoch {}"]]
    assert written == expected, written


@pytest.mark.parametrize("ours", ["log line", "progress bar"])
def test_our_line_from_another_thread_as_the_filter_ends_neither_raises_nor_is_lost(monkeypatch, ours):
    """The app's sessions are threads, and one loads its model inside the filter: a session that logged (or began a
    bar) as that filter ended found the list of terminals empty by the time it read it (IndexError out of
    logger.exception), or wrote to the terminal's stream just closed (a "Logging error" in place of the line)."""
    cli.setup_logging()
    asking, ended, raised = threading.Event(), threading.Event(), []

    class Stalling:
        """A script's stderr, on which the other thread stops as it asks for the file descriptor, while the filter
        ends (for 1 s where the filter waits for it instead)."""

        def __init__(self, stream):
            self.stream = stream

        def fileno(self) -> int:
            if threading.current_thread() is other:
                asking.set()
                ended.wait(1)
            return self.stream.fileno()

        def __getattr__(self, name):
            return getattr(self.stream, name)

    def write() -> None:
        try:
            if ours == "log line":
                cli.logger.info("from another session")
            else:
                cli.progress(None, total=1, desc="another session's").close()
        except Exception as error:  # whatever it is, the other session's page shows it
            raised.append(error)

    other = threading.Thread(target=write)
    with fd_2_on_a_terminal(monkeypatch) as (_, shown):
        monkeypatch.setattr(sys, "stderr", Stalling(sys.stderr))
        with cli.tensorflow_logs_filtered(False):
            other.start()
            assert asking.wait(10)
        ended.set()
        other.join(10)
    assert raised == []
    if ours == "log line":  # a line of its own: logging's report of a failed write quotes it too
        assert b"from another session" in b"".join(shown).splitlines(), shown


def test_filters_begun_in_two_threads_do_not_cross(capfd):
    """The app's sessions run in threads: a filter begun while another thread's is on must neither hang nor leave
    stderr swapped when both have ended, and each thread's lines pass."""
    import threading

    before, first_inside, results = os.fstat(2), threading.Event(), {}

    def run(name: str, hold_s: float, wait: threading.Event | None) -> None:
        if wait is not None:
            wait.wait()
        with cli.tensorflow_logs_filtered(False):
            first_inside.set()
            write_to_fd_2(f"{name} is here\n".encode())
            write_to_fd_2(START_UP_NOTICES[0])
            threading.Event().wait(hold_s)
        results[name] = True

    # The first ends while the second would be inside: crossed filters wait for each other's pipe for ever.
    threads = [threading.Thread(target=run, args=("first", 0.2, None), daemon=True),
               threading.Thread(target=run, args=("second", 0.6, first_inside), daemon=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert results == {"first": True, "second": True}, "a filter hung"
    assert os.path.samestat(before, os.fstat(2)), "stderr was left swapped"
    err = capfd.readouterr().err
    assert "first is here\n" in err and "second is here\n" in err
    assert START_UP_NOTICES[0].decode().strip() not in err


@pytest.mark.parametrize("text", ["nan", "4.5", "many"])
def test_a_count_that_is_not_a_whole_number_is_refused_without_an_example_unfit_for_the_flag(text):
    """positive_int serves --workers and --copies as well as --batch-size: "e.g. 4" misleads."""
    import argparse

    with pytest.raises(argparse.ArgumentTypeError) as error:
        cli.positive_int(text)
    assert str(error.value) == f"{text!r} is not a whole number; give one above 0"


@pytest.mark.parametrize("kind, text, what", [(float, "fast", "a number"), (float, "", "a number"),
                                               (int, "4.5", "an integer"), (int, "many", "an integer")])
def test_a_training_flag_that_is_no_number_is_refused_with_its_range(kind, text, what):
    """"'nan' is not a number" gave no range, where a number out of range got it."""
    from realvsai.config import LIMITS

    field = "learning_rate" if kind is float else "batch_size"
    with pytest.raises(argparse.ArgumentTypeError) as error:
        cli.bounded(kind, LIMITS[field])(text)
    assert str(error.value) == f"{text!r} is not {what}: give a value {LIMITS[field]}"


OTHER_DIGITS = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")  # Arabic-Indic: int("٣") and float("٣") are 3


def parser_of(script: str, monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """The parser that ``script``'s parse_args builds, caught as it starts to parse."""

    class Built(Exception):
        pass

    def catch(parser: argparse.ArgumentParser, *args, **kwargs):
        raise Built(parser)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", catch)
    with pytest.raises(Built) as built:
        importlib.import_module(script).parse_args([])
    return built.value.args[0]


@pytest.mark.parametrize("script", ["DataSplitD1", "DataSplitD2", "DataMerger", "DataAugmentation", "ModelTraining",
                                    "App"])
def test_every_max_pixels_takes_the_one_range_training_takes(script, monkeypatch):
    """A split took --max-pixels 10**23 (no upper end) that training then refused with its range: one range for
    the one flag, so a value one script takes, every other takes too."""
    from realvsai.config import LIMITS

    limit = LIMITS["max_pixels"]
    (action,) = [action for action in parser_of(script, monkeypatch)._actions if action.dest == "max_pixels"]
    assert action.type(str(int(limit.high))) == limit.high
    for text in (str(int(limit.high) + 1), "0"):
        with pytest.raises(argparse.ArgumentTypeError) as error:
            action.type(text)
        assert str(error.value) == f"{text} is out of range: give a value {limit}"


@pytest.mark.parametrize("script", ["DataUnZipper", "DataSplitD1", "DataSplitD2", "DataMerger", "DataAugmentation",
                                    "ModelTraining", "App"])
def test_every_numeric_flag_refuses_digits_other_than_ascii(script, monkeypatch):
    """--seed ٣ (an Arabic-Indic 3) split with seed 3: Python's int() and float() read the digits of every script,
    so a number typed in another keyboard layout passed unseen."""
    numeric = []
    for action in parser_of(script, monkeypatch)._actions:  # argparse lists its actions nowhere public
        for text in ("3", "32", "0.5"):  # one fits each numeric flag's range
            try:
                value = action.type(text) if callable(action.type) else None
            except (argparse.ArgumentTypeError, ValueError, TypeError):
                continue
            if isinstance(value, (int, float)):
                numeric.append(action.dest)
                with pytest.raises(argparse.ArgumentTypeError, match="ASCII"):
                    action.type(text.translate(OTHER_DIGITS))
                break
    assert numeric, "no numeric flag found"


def test_a_number_in_other_digits_is_one_line_of_bad_usage(capsys):
    import ModelTraining

    with pytest.raises(SystemExit) as stopped:
        ModelTraining.parse_args(["--head-epochs", "٣"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert stopped.value.code == 2 and "argument --head-epochs: '٣' " in error and "digits 0-9" in error, error


@pytest.mark.parametrize("script, args, flag", [
    ("DataMerger", ["{a}", "{a}/../a", "--into", "{b}"], "SOURCE"),
    ("ModelTraining", ["--evaluate", "{b}", "--test-dir", "{a}", "--test-dir", "{a}/../a"], "--test-dir")])
def test_a_folder_given_twice_is_one_line_of_bad_usage(tmp_path, capsys, script, args, flag):
    """Exit 1 (a failure) where --rename given a class twice was exit 2 (a bad command line), as the README says."""
    import importlib

    (tmp_path / "a").mkdir()
    with pytest.raises(SystemExit) as stopped:
        importlib.import_module(script).parse_args([arg.format(a=tmp_path / "a", b=tmp_path / "b") for arg in args])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert stopped.value.code == 2, error
    assert f"{flag} {tmp_path / 'a'}/../a is given twice (also as {tmp_path / 'a'}); give each {flag} once" in error


@pytest.mark.parametrize("together", [False, True], ids=["own-write", "one-write-with-the-bar"])
def test_a_start_up_notice_that_follows_a_progress_bar_on_its_line_is_hidden(capfd, together):
    """DataAugmentation.py's bar is drawn ("\\r..." with no line end) when TensorFlow starts and logs: the notice
    lands on the bar's line, and is hidden there as on a line of its own; the bar and the lines after it pass."""
    import time

    bar = b"\rplanning:  50%|#####     | 5/10"
    with cli.tensorflow_logs_filtered(False):
        if together:
            write_to_fd_2(bar + START_UP_NOTICES[0] + START_UP_NOTICES[1])
        else:
            write_to_fd_2(bar)
            time.sleep(0.2)  # the filter has shown the bar by now, as it must
            for notice in START_UP_NOTICES:
                write_to_fd_2(notice)
        write_to_fd_2(b"\rplanning: 100%|##########| 10/10\n")
        write_to_fd_2(b"made 10 copies\n")
    err = capfd.readouterr().err
    assert not any(notice.decode().strip() in err for notice in START_UP_NOTICES), err
    assert err.startswith(bar.decode()) and "\rplanning: 100%|##########| 10/10\nmade 10 copies\n" in err, err


def test_the_second_line_of_tensorflow_s_cpu_features_notice_is_hidden_too(capfd):
    """cpu_feature_guard's notice is one write of two lines; its second is advice for building TensorFlow."""
    notice = (b"I0000 00:00:1795666076.795466   26559 cpu_feature_guard.cc:227] This TensorFlow binary is optimized "
              b"to use available CPU instructions in performance-critical operations.\nTo enable the following "
              b"instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the appropriate compiler "
              b"flags.\n")
    for quiet in (False, True):
        with cli.tensorflow_logs_filtered(quiet):
            write_to_fd_2(notice)
            write_to_fd_2(b"To enable mixed precision, pass --precision mixed_float16\n")
        assert capfd.readouterr().err == "To enable mixed precision, pass --precision mixed_float16\n"


# --- Ctrl-C while a script starts ------------------------------------------------------------------------------

# Holds a script's import of realvsai.cli (after the package's own) until a signal ends it: the 0.1-0.6 s of imports
# before a script's run_main, made as long as a test needs.
PAUSED_IMPORT = '''
import sys
import time
import unicodedata


class PauseInRealvsaiCli:
    def find_spec(self, name, path=None, target=None):
        if name == "realvsai.cli":
            sys.meta_path.remove(self)
            print("importing", flush=True)
            time.sleep(120)
        return None


sys.meta_path.insert(0, PauseInRealvsaiCli())
'''
RUN_MAIN_SCRIPTS = ["DataUnZipper.py", "DataSplitD1.py", "DataSplitD2.py", "DataMerger.py", "DataAugmentation.py",
                    "MoveAugmentedImages.py", "DataDeleter.py", "DataZipper.py", "ModelTraining.py"]


def stopped_while_importing(tmp_path, script: str, stop: signal.Signals) -> subprocess.CompletedProcess:
    """``script`` (with --help, which it never reaches) sent ``stop`` during its start-up imports."""
    (tmp_path / "sitecustomize.py").write_text(PAUSED_IMPORT)
    process = subprocess.Popen([sys.executable, str(REPO / script), "--help"], cwd=tmp_path, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])})
    try:
        assert process.stdout.readline() == "importing\n", process.communicate()
        process.send_signal(stop)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, "importing\n" + out, err)


@pytest.mark.parametrize("script", RUN_MAIN_SCRIPTS)
def test_ctrl_c_while_a_script_imports_ends_it_with_the_interrupted_line(tmp_path, script):
    """A Ctrl-C in the imports before run_main printed a KeyboardInterrupt traceback (10-30 lines) and the
    process died of SIGINT, where a Ctrl-C anywhere later gets one line and exit 1."""
    stopped = stopped_while_importing(tmp_path, script, signal.SIGINT)
    assert (stopped.returncode, stopped.stderr) == (1, f"error: interrupted. {cli.RERUN_ADVICE}\n"), stopped.stderr
    assert stopped.stdout == "importing\n"


def test_sigterm_while_a_script_imports_ends_it_as_a_ctrl_c_does(tmp_path):
    """SIGTERM counts as a Ctrl-C once run_main runs; before, it ended the script without a word (exit -15)."""
    stopped = stopped_while_importing(tmp_path, "ModelTraining.py", signal.SIGTERM)
    assert (stopped.returncode, stopped.stderr) == (1, f"error: interrupted. {cli.RERUN_ADVICE}\n"), stopped.stderr


def test_a_program_that_imports_the_package_as_a_library_keeps_python_s_ctrl_c(tmp_path):
    """The start-up guard is the project's scripts' own: another program's Ctrl-C stays its KeyboardInterrupt."""
    program = tmp_path / "mine.py"
    program.write_text("import signal\nimport realvsai.cli\n"
                       "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n")
    done = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert (done.stdout, done.returncode) == ("True\n", 0), done.stderr


def test_a_log_line_shows_a_carriage_return_or_escape_in_a_file_name_as_an_escape(tmp_path):
    """macOS' ``Icon\\r`` file: a raw carriage return sent the rest of the line over its start on a terminal (and an
    escape byte in a name could recolour it); the line breaks the project writes itself stay line breaks."""
    assert cli.printable("Icon\r: not an image file\nnext line\tend") == "Icon\\r: not an image file\nnext line\tend"
    assert cli.printable("a\x1b[31mred\x7f\x9b.jpg") == "a\\x1b[31mred\\x7f\\x9b.jpg"


def test_describe_os_error_is_one_line_for_a_library_text_of_several():
    """h5py's text of a failed write spans two lines (its time stamp ends in a newline): the error was not one."""
    error = OSError(5, "Can't synchronously write data (file write failed: time = Sun Nov 29 09:05:58 2026\n, "
                       "filename = 'model.h5', errno = 5)")
    assert "\n" not in cli.describe_os_error(error)


def test_describe_os_error_offers_no_other_place_for_a_file_over_the_size_limit_of_work_that_goes_on_in_place():
    """A training's run folder is where --resume goes on: "choose another place" could not be followed."""
    error = OSError(27, "File too large", "models/run/backup/full/epoch-3.weights.h5")
    line = cli.describe_os_error(error, then="continue the run with: python ModelTraining.py --resume", in_place=True)
    assert "ulimit -f" in line and "another place" not in line


def test_describe_os_error_names_the_folder_and_its_mode_for_a_file_it_could_not_make(tmp_path):
    """A training into a read-only --out ended "<folder>: Permission denied. Fix the cause": which cause?"""
    error = OSError(13, "Permission denied", str(tmp_path / "run"))  # a training's: OSError, not PermissionError
    line = cli.describe_os_error(error, then="run the same command again")
    assert line == (f"{tmp_path}: permission denied for run in it. Check the folder's owner and mode, then run the "
                    "same command again.")


@pytest.mark.parametrize("script", ["DataSplitD1.py", "DataZipper.py", "DataDeleter.py"])
def test_a_symlink_loop_given_as_a_path_ends_in_one_line(tmp_path, script):
    """Python's Path.resolve raises RuntimeError("Symlink loop from ...") for one before 3.13: a traceback."""
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "other")
    (tmp_path / "other").symlink_to(loop)
    line = one_error_line(run_script(script, loop, *(["--yes", "--allow-outside"] if script == "DataDeleter.py"
                                                     else ["--quiet"])))
    assert str(loop) in line, line


def test_a_symlink_loop_given_as_a_merge_source_ends_in_one_line(tmp_path):
    """DataMerger and --evaluate's --test-dir compare their paths (refuse_given_twice) while the command line is read,
    before run_main watches: Path.resolve's RuntimeError was a traceback there."""
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "other")
    (tmp_path / "other").symlink_to(loop)
    line = one_error_line(run_script("DataMerger.py", loop, "--into", tmp_path / "out", "--quiet"))
    assert str(loop) in line, line


def test_a_permission_error_that_names_no_file_is_one_line_that_makes_sense(capsys):
    """run_main read the error's text as a path: "error: .: permission denied for [Errno 13] Permission denied in
    it"."""
    def body():
        raise PermissionError(13, "Permission denied")

    assert cli.run_main(body) == 1
    line = capsys.readouterr().err.strip()
    assert "[Errno" not in line and " in it" not in line and line.startswith("error: permission denied"), line


def test_a_script_that_loaded_keras_exits_without_the_interpreter_s_teardown_on_any_backend(monkeypatch):
    """On TensorFlow, the prompt came back 5 s after --predict's last line and 10 s after a training's "Next:" line:
    the interpreter's teardown of TensorFlow's runtime, which writes nothing of the project's."""
    import keras

    exited = []

    def _exit(code: int) -> None:
        exited.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(os, "_exit", _exit)
    monkeypatch.setattr(logging, "shutdown", lambda: None)  # the test session's own handlers stay open
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    with pytest.raises(SystemExit):
        cli.exit_script(3)
    assert exited == [3]


@pytest.mark.parametrize("name, same_width", [(unicodedata.normalize("NFD", "Réel"), "Reel"), ("真实", "abcd")])
def test_format_table_aligns_names_by_the_columns_they_take_on_a_terminal(name, same_width):
    """A class folder named on macOS (NFD: 'é' is 'e' and a combining accent) or in Chinese (two columns a
    character) pushed its row's cells out of line: the padding counted characters, not columns."""
    table = cli.format_table(["class", "images"], [(name, 3254), ("REAL", 12)])
    assert table.replace(name, same_width) == cli.format_table(["class", "images"], [(same_width, 3254), ("REAL", 12)])
