"""Fixtures for the DIMSE gateway: `python -m dimse_gateway` on a free port beside the HTTP server, on one Azurite."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, free_ports
from tests.processes import LOOPBACK, accepts_connections, stop_process, wait_until

GATEWAY_AE = "DICOMWEB"
# Calling AE titles the gateway accepts; any other is refused.
MODALITY_AE = "MODALITY"
ARCHIVE_AE = "STORESCP"
MAX_PDU_BYTES = 65536


@dataclass(frozen=True)
class Gateway:
    """A running gateway: where it listens, and the C-MOVE destination port it knows as STORESCP."""

    host: str
    port: int
    destination_port: int
    log: Path


@pytest.fixture(scope="session")
def dcmtk() -> None:
    """Fail at once where DCMTK's tools are missing (`make test` installs Debian's dcmtk)."""
    missing = [tool for tool in ("storescu", "findscu", "movescu", "getscu", "storescp", "echoscu")
               if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"DCMTK tools missing: {', '.join(missing)}; run `make test` or apt-get install dcmtk",
                    pytrace=False)


@contextlib.contextmanager
def running_gateway(storage_env: dict[str, str], folder: Path, **settings: str) -> Iterator[Gateway]:
    """`python -m dimse_gateway` on free ports with the session's storage and ``settings`` (DICOMWEB_DIMSE_*)."""
    port, destination_port = free_ports(2)
    log = folder / "gateway.log"
    env = {
        **os.environ, **storage_env, "PYTHONUNBUFFERED": "1",
        "DICOMWEB_DIMSE_AE_TITLE": GATEWAY_AE,
        "DICOMWEB_DIMSE_ALLOWED_CALLING_AE_TITLES": f"{MODALITY_AE},{ARCHIVE_AE}",
        "DICOMWEB_DIMSE_MOVE_DESTINATIONS": f"{ARCHIVE_AE}={LOOPBACK}:{destination_port}",
        "DICOMWEB_DIMSE_MAX_PDU_BYTES": str(MAX_PDU_BYTES),
        "DICOMWEB_DIMSE_HOST": LOOPBACK,
        **settings,
    }
    with log.open("wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "dimse_gateway", "--port", str(port)], cwd=REPO_ROOT,
                                   env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: accepts_connections(port), process, "python -m dimse_gateway", log)
        yield Gateway(LOOPBACK, port, destination_port, log)
    finally:
        stop_process(process)


@pytest.fixture(scope="session")
def gateway(storage_env: dict[str, str], server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The gateway on the HTTP server's storage, accepting MODALITY and STORESCP, moving to STORESCP."""
    with running_gateway(storage_env, tmp_path_factory.mktemp("gateway")) as running:
        yield running
