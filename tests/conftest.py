"""Shared fixtures: an Azurite storage emulator and the app served by `python -m local_host`, per test session."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dicom_core.settings import azurite_connection_string

REPO_ROOT = Path(__file__).resolve().parent.parent
AZURITE_BIN = REPO_ROOT / "node_modules" / ".bin" / "azurite"
LOOPBACK = "127.0.0.1"
START_TIMEOUT_SECONDS = 30.0
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy from the environment


@dataclass(frozen=True)
class Azurite:
    """A running Azurite instance: where it listens and how to connect to it."""

    host: str
    blob_port: int
    queue_port: int
    table_port: int
    location: Path
    connection_string: str


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct loopback ports that were free a moment ago."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


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


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """Start Azurite (blob, queue, table) on free loopback ports with its data in a temporary folder."""
    if not AZURITE_BIN.exists():
        pytest.fail(f"{AZURITE_BIN} is missing: run `make test` (it installs node_modules with npm ci)", pytrace=False)
    folder = tmp_path_factory.mktemp("azurite")
    location = folder / "data"
    location.mkdir()
    log = folder / "azurite.log"
    blob_port, queue_port, table_port = free_ports(3)
    command = [
        str(AZURITE_BIN),
        "--blobHost", LOOPBACK, "--blobPort", str(blob_port),
        "--queueHost", LOOPBACK, "--queuePort", str(queue_port),
        "--tableHost", LOOPBACK, "--tablePort", str(table_port),
        "--location", str(location),
        "--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry",
    ]  # fmt: skip
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=folder, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        ports = (blob_port, queue_port, table_port)
        wait_until(lambda: all(accepts_connections(port) for port in ports), process, "Azurite", log)
        yield Azurite(
            host=LOOPBACK,
            blob_port=blob_port,
            queue_port=queue_port,
            table_port=table_port,
            location=location,
            connection_string=azurite_connection_string(LOOPBACK, blob_port, table_port),
        )
    finally:
        stop_process(process)


@pytest.fixture(scope="session")
def storage_env(azurite: Azurite) -> dict[str, str]:
    """Environment variables that point the app at the session's Azurite."""
    return {
        "DICOMWEB_STORAGE_CONNECTION_STRING": azurite.connection_string,
        "AzureWebJobsStorage": azurite.connection_string,
    }


@contextlib.contextmanager
def serve_app(env: dict[str, str], log_folder: Path) -> Iterator[str]:
    """Serve the function app with `python -m local_host` on a free port; yield its base URL."""
    (port,) = free_ports(1)
    base_url = f"http://{LOOPBACK}:{port}"
    log = log_folder / "local_host.log"
    command = [sys.executable, "-m", "local_host", "--host", LOOPBACK, "--port", str(port)]
    environment = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=environment, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        wait_until(lambda: answers_http(base_url + "/"), process, "python -m local_host", log)
        yield base_url
    finally:
        stop_process(process)


@pytest.fixture(scope="session")
def server(storage_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app served over loopback against the session's Azurite; yields its base URL."""
    with serve_app(storage_env, tmp_path_factory.mktemp("server")) as base_url:
        yield base_url


@pytest.fixture(scope="session")
def public_base_url() -> str:
    """The public base URL that `public_url_server` is configured with."""
    return "https://dicom.example.org/archive"


@pytest.fixture(scope="module")
def public_url_server(
    storage_env: dict[str, str], public_base_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A second server whose DICOMWEB_PUBLIC_BASE_URL is `public_base_url`."""
    env = {**storage_env, "DICOMWEB_PUBLIC_BASE_URL": public_base_url}
    with serve_app(env, tmp_path_factory.mktemp("public-url-server")) as base_url:
        yield base_url


class BlobReader:
    """Reads back what the server stored in its files container, straight from Blob Storage."""

    def __init__(self, connection_string: str, container: str) -> None:
        from azure.storage.blob import ContainerClient

        self._container = ContainerClient.from_connection_string(connection_string, container)

    def names(self, prefix: str) -> list[str]:
        """Return the names of the blobs under ``prefix``."""
        return [blob.name for blob in self._container.list_blobs(name_starts_with=prefix)]

    def read(self, name: str) -> bytes:
        """Return one blob's bytes."""
        return self._container.download_blob(name).readall()


@pytest.fixture(scope="session")
def blobs(azurite: Azurite, server: str) -> BlobReader:
    """The server's files container (default name), for byte-exact read-back."""
    return BlobReader(azurite.connection_string, "dicomweb")


# --- Registered routes (deploy issue: the OpenAPI document and the CLI tests compare against them) ---------

_LIST_ROUTES = """
import json
from function_app import app
from local_host.functions import http_functions
print(json.dumps([[sorted(f.methods or ["*"]), f.route] for f in http_functions(app)]))
"""


@pytest.fixture(scope="session")
def registered_routes() -> frozenset[tuple[str, str]]:
    """(METHOD, route template) of every HTTP function that function_app registers.

    Read in a subprocess: a FunctionApp's get_functions() may be called only once per app object.
    """
    import json  # (kept local: this block is appended to the shared conftest)

    completed = subprocess.run(
        [sys.executable, "-c", _LIST_ROUTES], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    if completed.returncode != 0:
        pytest.fail(f"listing function_app's routes failed:\n{completed.stderr}", pytrace=False)
    last_line = completed.stdout.strip().splitlines()[-1]
    return frozenset((method, route) for methods, route in json.loads(last_line) for method in methods)


# --- Search (QIDO issue): storing through the STOW service, and a server that reports search cost -----------

@pytest.fixture(scope="session")
def stow_parts():
    """An async function storing Part-10 files through `dicom_core.stow.store_instances`, as one multipart request.

    Call it as ``await stow_parts(storage, [bytes, ...], upsert=False)``; it returns the StoreResponse.
    """
    from dicom_core.stow import StoreRequest, store_instances
    from factories import multipart_body

    boundary = "qido-seed"

    async def body(data: bytes):
        yield data

    async def store(storage, parts: list[bytes], *, upsert: bool = False):
        request = StoreRequest(api_version=2, study_uid=None, base_url="http://test", upsert=upsert, accept=None,
                               content_type=f'multipart/related; type="application/dicom"; boundary={boundary}')
        return await store_instances(storage, request, body(multipart_body(parts, boundary)))

    return store


@pytest.fixture(scope="module")
def query_stats_server(storage_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with DICOMWEB_QUERY_STATS=true (every search answers with X-DicomWeb-Entities-Read).

    It has containers and tables of its own, so what its tests store (the walkthrough's seed files too) is
    apart from the session `server`'s.
    """
    env = {**storage_env, "DICOMWEB_QUERY_STATS": "true", "DICOMWEB_TABLE_PREFIX": "qidoe2e",
           "DICOMWEB_BLOB_CONTAINER": "qidoe2e-files", "DICOMWEB_METADATA_CONTAINER": "qidoe2e-metadata"}
    with serve_app(env, tmp_path_factory.mktemp("query-stats-server")) as base_url:
        yield base_url


# --- Retrieve (WADO issue): a server of its own for tests that store fixed UIDs (the walkthrough's files) ----

@pytest.fixture(scope="module")
def isolated_server(storage_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with containers and tables of its own, so fixed UIDs stored here meet no other test's."""
    import uuid  # (kept local: this block is appended to the shared conftest)

    suffix = uuid.uuid4().hex[:10]
    env = {**storage_env, "DICOMWEB_BLOB_CONTAINER": f"files-{suffix}", "DICOMWEB_METADATA_CONTAINER": f"meta-{suffix}",
           "DICOMWEB_TABLE_PREFIX": f"iso{suffix}"}
    with serve_app(env, tmp_path_factory.mktemp("isolated-server")) as base_url:
        yield base_url
