"""Shared fixtures: an Azurite storage emulator and the app served by `python -m local_host`, per test session."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dicom_core.settings import Settings, azurite_connection_string
from dicom_core.storage.clients import Storage, open_storage
from tests.faults.proxy import StorageFaultProxy
from tests.processes import LOOPBACK, TEST_TABLE_SHARDS, accepts_connections, answers_http, stop_process, wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent
AZURITE_BIN = REPO_ROOT / "node_modules" / ".bin" / "azurite"


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
        "DICOMWEB_TABLE_SHARDS": str(TEST_TABLE_SHARDS),
    }


@contextlib.contextmanager
def serve_app(env: dict[str, str], log_folder: Path, *, timers: bool = True) -> Iterator[str]:
    """Serve the function app with `python -m local_host` on a free port (its timers too, unless not); yield its
    base URL."""
    (port,) = free_ports(1)
    base_url = f"http://{LOOPBACK}:{port}"
    log = log_folder / "local_host.log"
    command = [sys.executable, "-m", "local_host", "--host", LOOPBACK, "--port", str(port)]
    command += [] if timers else ["--no-timers"]
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


# --- Registered routes (the OpenAPI document and the CLI tests compare against them) ---------------------------

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


# --- Search (QIDO-RS): storing through the STOW service, and a server that reports search cost -----------------

@pytest.fixture(scope="session")
def stow_parts():
    """An async function storing Part-10 files through `dicom_core.stow.service.store_instances`, as one multipart
    request.

    Call it as ``await stow_parts(storage, [bytes, ...], upsert=False)``; it returns the ServiceResult.
    """
    from dicom_core.stow.service import StoreRequest, store_instances
    from tests.factories import multipart_body

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


# --- Retrieve (WADO-RS): a server of its own for tests that store fixed UIDs (the walkthrough's files) ---------

@pytest.fixture(scope="module")
def isolated_server(storage_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with containers and tables of its own, so fixed UIDs stored here meet no other test's."""
    import uuid  # (kept local: this block is appended to the shared conftest)

    suffix = uuid.uuid4().hex[:10]
    env = {**storage_env, "DICOMWEB_BLOB_CONTAINER": f"files-{suffix}", "DICOMWEB_METADATA_CONTAINER": f"meta-{suffix}",
           "DICOMWEB_TABLE_PREFIX": f"iso{suffix}"}
    with serve_app(env, tmp_path_factory.mktemp("isolated-server")) as base_url:
        yield base_url


# --- Security (CORS and authentication): servers started with settings of a test module's own ------------------

@pytest.fixture(scope="session")
def serve_with_env(
    storage_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., contextlib.AbstractContextManager[str]]:
    """Start a server with extra settings: ``with serve_with_env({"DICOMWEB_X": "y"}) as base_url: ...``.

    It uses the session's Azurite; pass container and table settings too for data apart from other servers'.
    ``timers=False`` starts it without its timers (nothing runs between a test's requests but what they cause).
    """

    def start(env: dict[str, str], *, timers: bool = True) -> contextlib.AbstractContextManager[str]:
        return serve_app({**storage_env, **env}, tmp_path_factory.mktemp("env-server"), timers=timers)

    return start


# --- Delete and consistency: a server whose process a test may kill mid-request --------------------------------

@dataclass(frozen=True)
class AppProcess:
    """A running `python -m local_host`: its base URL and its process."""

    base_url: str
    process: subprocess.Popen[bytes]


@pytest.fixture
def start_app_process(storage_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[dict[str, str]], AppProcess]]:
    """Start servers with extra settings (``start(env)``); each is stopped at teardown unless a test killed it."""
    started: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str]) -> AppProcess:
        (port,) = free_ports(1)
        base_url = f"http://{LOOPBACK}:{port}"
        log = tmp_path / f"local_host-{len(started)}.log"
        command = [sys.executable, "-m", "local_host", "--host", LOOPBACK, "--port", str(port), "--no-timers"]
        with log.open("wb") as output:
            process = subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, **storage_env, **env,
                                                                     "PYTHONUNBUFFERED": "1"},
                                       stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
        started.append(process)
        wait_until(lambda: answers_http(base_url + "/"), process, "python -m local_host", log)
        return AppProcess(base_url, process)

    yield start
    for process in started:
        stop_process(process)


# --- Viewer (OHIF): a server whose output the test reads back --------------------------------------------------

@pytest.fixture(scope="session")
def serve_logging_to(
    storage_env: dict[str, str]
) -> Callable[[dict[str, str], Path], contextlib.AbstractContextManager[str]]:
    """Start a server with extra settings, writing its output to ``folder / "local_host.log"``.

    ``with serve_logging_to({"DICOMWEB_X": "y"}, folder) as base_url: ...``
    """

    def start(env: dict[str, str], folder: Path) -> contextlib.AbstractContextManager[str]:
        return serve_app({**storage_env, **env}, folder)

    return start


# --- Robustness: an Azurite of a test module's own that tests stop and start again -----------------------------

class RestartableAzurite:
    """An Azurite on fixed free ports whose data folder survives a stop, so a restart keeps what was stored."""

    def __init__(self, folder: Path) -> None:
        self.location = folder / "data"
        self.location.mkdir()
        self._log = folder / "azurite.log"
        self.blob_port, self.queue_port, self.table_port = free_ports(3)
        self.connection_string = azurite_connection_string(LOOPBACK, self.blob_port, self.table_port)
        self._process: subprocess.Popen[bytes] | None = None
        self.stops = 0  # faults injected

    @property
    def running(self) -> bool:
        """Whether the process is up."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start Azurite (again) and wait until its ports accept connections."""
        command = [
            str(AZURITE_BIN),
            "--blobHost", LOOPBACK, "--blobPort", str(self.blob_port),
            "--queueHost", LOOPBACK, "--queuePort", str(self.queue_port),
            "--tableHost", LOOPBACK, "--tablePort", str(self.table_port),
            "--location", str(self.location),
            "--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry",
        ]  # fmt: skip
        with self._log.open("ab") as output:
            self._process = subprocess.Popen(command, cwd=self.location.parent, stdin=subprocess.DEVNULL,
                                             stdout=output, stderr=subprocess.STDOUT)
        ports = (self.blob_port, self.queue_port, self.table_port)
        wait_until(lambda: all(accepts_connections(port) for port in ports), self._process, "Azurite", self._log)

    def stop(self) -> None:
        """Stop Azurite (SIGTERM, so it writes its data out) and wait until its ports refuse connections."""
        if self._process is not None:
            stop_process(self._process)
            self._process = None
            self.stops += 1


@pytest.fixture(scope="module")
def restartable_azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableAzurite]:
    """A running Azurite of the module's own (apart from the session's) that tests may stop and start."""
    if not AZURITE_BIN.exists():
        pytest.fail(f"{AZURITE_BIN} is missing: run `make test` (it installs node_modules with npm ci)", pytrace=False)
    azurite = RestartableAzurite(tmp_path_factory.mktemp("restartable-azurite"))
    azurite.start()
    try:
        yield azurite
    finally:
        azurite.stop()


@pytest.fixture(scope="module")
def serve_on_restartable(
    restartable_azurite: RestartableAzurite, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[dict[str, str]], contextlib.AbstractContextManager[str]]:
    """Start a server on `restartable_azurite` with extra settings: ``with serve_on_restartable({}) as url``."""

    def start(env: dict[str, str]) -> contextlib.AbstractContextManager[str]:
        storage = {"DICOMWEB_STORAGE_CONNECTION_STRING": restartable_azurite.connection_string,
                   "AzureWebJobsStorage": restartable_azurite.connection_string,
                   "DICOMWEB_TABLE_SHARDS": str(TEST_TABLE_SHARDS)}
        return serve_app({**storage, **env}, tmp_path_factory.mktemp("restartable-server"))

    return start


# --- Storage faults: a proxy in front of the session's Azurite that fails chosen requests (tests/faults) -------

@pytest.fixture
def storage_fault_proxy(azurite: Azurite) -> Iterator[StorageFaultProxy]:
    """A started `tests.faults.proxy.StorageFaultProxy` in front of the session's Azurite, stopped after the test."""
    proxy = StorageFaultProxy(azurite.host, azurite.blob_port, azurite.table_port).start()
    yield proxy
    proxy.stop()


@pytest.fixture
async def storage_of(storage_env: dict[str, str]) -> AsyncIterator[Callable[[dict[str, str]], Awaitable[Storage]]]:
    """Open the storage of a server's settings directly (not through the fault proxy); closed at teardown."""
    opened: list[Storage] = []

    async def open_direct(env: dict[str, str]) -> Storage:
        own = {key: value for key, value in env.items() if key.startswith("DICOMWEB_") and "CONNECTION" not in key}
        storage = await open_storage(Settings.from_environment({**storage_env, **own}))
        opened.append(storage)
        return storage

    yield open_direct
    for storage in opened:
        await storage.close()
