"""Starting and stopping the test suite's helper processes (Azurite, servers, the viewer), shared by conftest files."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

LOOPBACK = "127.0.0.1"
START_TIMEOUT_SECONDS = 30.0
# The tests' shard count: the test modules open fresh storage hundreds of times, each creating every Table (47 at
# 16 shards, 143 at the emulator's default of 64); what a test checks does not depend on the count.
TEST_TABLE_SHARDS = 16
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy from the environment


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Terminate ``process``, killing it if it has not exited within 10 seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def wait_until(ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    """Poll ``ready`` until it is true; fail with the process's log if it exits or the timeout passes."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not ready():
        exited = process.poll() is not None
        if exited or time.monotonic() > deadline:
            stop_process(process)
            reason = f"exited with code {process.returncode}" if exited else f"was not up in {START_TIMEOUT_SECONDS} s"
            output = log.read_text(errors="replace") if log.exists() else "(no output)"
            pytest.fail(f"{what} {reason}; its output ({log}):\n{output}", pytrace=False)
        time.sleep(0.1)


def accepts_connections(port: int) -> bool:
    """Return whether something accepts TCP connections on the loopback ``port``."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def answers_http(url: str) -> bool:
    """Return whether ``url`` answers a GET with any HTTP status."""
    try:
        with DIRECT.open(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False
