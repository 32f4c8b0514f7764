"""What the real-browser tests (test_browser.py, test_app_browser.py) share: Debian Chromium
driven by Playwright, a server on a free port of 127.0.0.1 whose kernels import this checkout,
and stopping that server with everything it started.

Never runs ``playwright install`` (it downloads a browser; the tests use Debian's).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    sync_playwright = None


def skip_without_browser() -> None:
    """Skip the calling test module when Chromium or the playwright package is missing."""
    if CHROMIUM is None:
        pytest.skip("no Chromium installed (apt-get install chromium)", allow_module_level=True)
    if sync_playwright is None:
        pytest.skip("the playwright Python package is not importable", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment for a Jupyter or Voila server started by a test: its own runtime
    folder, one thread per kernel, and kernels that import the checkout under test (not
    whatever ``pip install -e`` points at)."""
    return dict(
        os.environ,
        JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"),
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        **extra,
    )


def start_server(cmd: list[str], cwd: Path, env: dict[str, str], log) -> subprocess.Popen:
    """Start ``cmd`` in a process group of its own (see :func:`stop_server`)."""
    return subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop_server(proc: subprocess.Popen) -> None:
    """Stop the server's whole process group: the server and the kernels it started."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


class Budget:
    """One overall time budget for a browser session, and when each phase ended.

    ``budget.left_ms()`` is what remains (at least 1 s), for each Playwright wait;
    ``budget.phase(name)`` records the seconds since the start (printed at the end).
    """

    def __init__(self, seconds: float):
        self.started = time.monotonic()
        self.deadline = self.started + seconds
        self.phases: dict[str, float] = {}

    def left_ms(self) -> float:
        return max(1000.0, (self.deadline - time.monotonic()) * 1000.0)

    def phase(self, name: str) -> None:
        self.phases[name] = round(time.monotonic() - self.started, 1)
