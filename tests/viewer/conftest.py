"""Viewer test fixtures: Debian's Chromium, a server allowing the viewer's origin (CORS), `python -m viewer`."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.processes import LOOPBACK, answers_http, stop_process, wait_until
from tests.viewer.server_log import LoggedServer

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("DICOMWEB_TEST_CHROMIUM", "/usr/bin/chromium"))


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium (never a browser download of the test tool's own)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test-viewer` installs Debian's chromium package", pytrace=False)
    return CHROMIUM


@pytest.fixture(scope="module")
def viewer_origin() -> str:
    """The origin the viewer is served from (a port that was free a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port = sock.getsockname()[1]
    return f"http://{LOOPBACK}:{port}"


@pytest.fixture(scope="module")
def viewer_server(
    serve_logging_to: Callable[[dict[str, str], Path], contextlib.AbstractContextManager[str]],
    viewer_origin: str, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LoggedServer]:
    """A server with storage of its own whose CORS setting allows the viewer's origin."""
    suffix = uuid.uuid4().hex[:10]
    env = {"DICOMWEB_CORS_ALLOWED_ORIGINS": viewer_origin, "DICOMWEB_BLOB_CONTAINER": f"viewer-{suffix}",
           "DICOMWEB_METADATA_CONTAINER": f"viewer-meta-{suffix}", "DICOMWEB_TABLE_PREFIX": f"viewer{suffix}"}
    folder = tmp_path_factory.mktemp("viewer-server")
    with serve_logging_to(env, folder) as base_url:
        yield LoggedServer(base_url, folder / "local_host.log")


@pytest.fixture(scope="module")
def viewer(viewer_server: LoggedServer, viewer_origin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m viewer` serving OHIF for ``viewer_server``; yields the viewer's URL."""
    port = viewer_origin.rsplit(":", 1)[1]
    log = tmp_path_factory.mktemp("viewer") / "viewer.log"
    command = [sys.executable, "-m", "viewer", "--host", LOOPBACK, "--port", port,
               "--dicomweb-root", f"{viewer_server.base_url}/v2"]
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=output,
                                   stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: answers_http(f"{viewer_origin}/app-config.js"), process, "python -m viewer", log)
        yield f"{viewer_origin}/"
    finally:
        stop_process(process)


