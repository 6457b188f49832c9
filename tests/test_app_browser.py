"""The app in a real browser: ``streamlit run App.py`` driven by headless Chromium.

Chromium is driven through its DevTools protocol over a WebSocket (the ``websockets`` package,
which Streamlit itself depends on), so no browser driver is needed. Skipped when no Chromium is
installed; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO
from test_inference import encode, random_image, write_run

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # about a minute: a server, a browser, TensorFlow

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
SERVER_START_S, PAGE_LOAD_S, RESULT_S = 90, 90, 120


def find_browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition, timeout: float, what: str, interval: float = 0.25):
    """Polls ``condition`` until it returns something truthy; fails naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def http_get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()
    except (OSError, urllib.error.URLError):
        return None


@contextlib.contextmanager
def started(command: list[str], log: Path, **options) -> Iterator[subprocess.Popen]:
    """Runs ``command`` in its own process group, which is ended afterwards."""
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                                   **options)
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


class DevTools:
    """The few Chrome DevTools Protocol calls the test needs, on one page's WebSocket."""

    def __init__(self, websocket) -> None:
        self._socket = websocket
        self._ids = itertools.count(1)

    @classmethod
    @contextlib.contextmanager
    def connect(cls, websocket_url: str) -> Iterator[DevTools]:
        from websockets.sync.client import connect

        with connect(websocket_url, max_size=None, open_timeout=10) as websocket:
            yield cls(websocket)

    def call(self, method: str, **params) -> dict:
        message_id = next(self._ids)
        self._socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:  # events arrive in between; skip them
            reply = json.loads(self._socket.recv(timeout=30))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")


def page_text(devtools: DevTools) -> str:
    return devtools.evaluate("document.body ? document.body.innerText : ''") or ""


@pytest.mark.skipif(find_browser() is None, reason="no Chromium installed")
def test_an_upload_in_a_real_browser_shows_its_label(tmp_path):
    models = tmp_path / "models"
    write_run(models, "demo", evidence=True)  # calls random noise REAL at 100%
    image = tmp_path / "holiday photo.png"
    image.write_bytes(encode(random_image(1, 80, 60)))
    port = free_port()
    server_command = [sys.executable, "-m", "streamlit", "run", str(REPO / "App.py"),
                      "--server.headless", "true", "--server.address", "127.0.0.1", "--server.port", str(port),
                      "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
                      "--", "--models", str(models)]
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}  # as a user has it
    environment["PYTHONPATH"] = str(REPO)
    profile = tmp_path / "chromium-profile"
    browser_command = [find_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                       "--no-first-run", "--disable-background-networking", "--disable-component-update",
                       "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                       "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank"]

    with started(server_command, tmp_path / "streamlit.log", cwd=tmp_path, env=environment) as server, \
            started(browser_command, tmp_path / "chromium.log") as browser:
        def server_up() -> bool:
            if server.poll() is not None:
                pytest.fail(f"streamlit exited: {(tmp_path / 'streamlit.log').read_text(errors='replace')[-2000:]}")
            return http_get(f"http://127.0.0.1:{port}/_stcore/health") == "ok"

        wait_for(server_up, SERVER_START_S, "the Streamlit server")
        active_port = profile / "DevToolsActivePort"
        wait_for(lambda: browser.poll() is None and active_port.is_file() and active_port.read_text().strip(),
                 30, "Chromium's DevTools port")
        devtools_port = active_port.read_text().split()[0]
        targets = json.loads(wait_for(lambda: http_get(f"http://127.0.0.1:{devtools_port}/json/list"), 30,
                                      "Chromium's page list"))
        page = next(target for target in targets if target["type"] == "page")
        with DevTools.connect(page["webSocketDebuggerUrl"]) as devtools:
            devtools.call("Page.navigate", url=f"http://127.0.0.1:{port}/")
            wait_for(lambda: devtools.evaluate("!!document.querySelector('input[type=file]')"), PAGE_LOAD_S,
                     "the file uploader")
            assert "FAKE or REAL?" in page_text(devtools)

            root = devtools.call("DOM.getDocument", depth=0)["root"]["nodeId"]
            node = devtools.call("DOM.querySelector", nodeId=root, selector="input[type=file]")["nodeId"]
            devtools.call("DOM.setFileInputFiles", files=[str(image)], nodeId=node)

            text = wait_for(lambda: (lambda text: "100.0% probability" in text and text)(page_text(devtools)),
                            RESULT_S, "the upload's result")

    assert "holiday photo.png" in text
    assert "\nREAL\n" in f"\n{text}\n"
    assert "Traceback" not in text
    terminal = (tmp_path / "streamlit.log").read_text(errors="replace")  # what the user's terminal showed
    assert "You can now view your Streamlit app" in terminal
    for notice in ("oneDNN custom operations", "absl::InitializeLog", "cpu_feature_guard", "cudart_stub", "cuInit"):
        assert notice not in terminal, terminal
