"""Debian's Orthanc with its DICOMweb plugin as a client of this server: finding, configuring, starting it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.processes import LOOPBACK, answers_http, stop_process, wait_until

# Debian's packages `orthanc` and `orthanc-dicomweb` (`make test` installs them as root where missing).
ORTHANC_BIN = Path(os.environ.get("DICOMWEB_TEST_ORTHANC", shutil.which("Orthanc") or "/usr/sbin/Orthanc"))
DICOMWEB_PLUGIN_PACKAGE = "orthanc-dicomweb"
DICOMWEB_PLUGIN_FALLBACK = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
# The name this server is registered under in Orthanc's DicomWeb.Servers.
PEER = "azure"


def dicomweb_plugin() -> Path | None:
    """Return the DICOMweb plugin library that the Debian package installed, or None."""
    try:
        listed = subprocess.run(["dpkg", "-L", DICOMWEB_PLUGIN_PACKAGE], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        listed = None
    if listed is not None and listed.returncode == 0:
        libraries = [Path(line) for line in listed.stdout.splitlines() if "libOrthancDicomWeb.so" in line]
        # The unversioned name in Orthanc's plugin folder is the one Debian's own configuration loads.
        for library in sorted(libraries, key=lambda path: path.name != "libOrthancDicomWeb.so"):
            if library.is_file():
                return library
    return DICOMWEB_PLUGIN_FALLBACK if DICOMWEB_PLUGIN_FALLBACK.is_file() else None


def configuration(http_port: int, dicom_port: int, storage: Path, plugin: Path, peer_root: str) -> dict[str, Any]:
    """Orthanc's configuration: loopback only, no authentication, the DICOMweb plugin, this server as a peer."""
    return {
        "Name": "dicomweb-test-client",
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [str(plugin)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Servers": {PEER: [peer_root]}},
    }


@dataclass(frozen=True)
class Orthanc:
    """A running Orthanc: its REST API's base URL and the peer name this server has in it."""

    base_url: str
    peer: str

    def client(self) -> httpx.Client:
        """An HTTP client for Orthanc's REST API (never through a proxy from the environment)."""
        return httpx.Client(base_url=self.base_url, timeout=60, trust_env=False)


@contextlib.contextmanager
def run_orthanc(http_port: int, dicom_port: int, folder: Path, peer_root: str) -> Iterator[Orthanc]:
    """Start Orthanc with storage in ``folder`` and this server (``peer_root``) as its DICOMweb peer; stop it after."""
    plugin = dicomweb_plugin()
    if plugin is None:
        raise FileNotFoundError(f"the {DICOMWEB_PLUGIN_PACKAGE} package's plugin library is not installed")
    storage = folder / "storage"
    storage.mkdir()
    config = folder / "orthanc.json"
    config.write_text(json.dumps(configuration(http_port, dicom_port, storage, plugin, peer_root), indent=2))
    log = folder / "orthanc.log"
    with log.open("wb") as output:
        process = subprocess.Popen([str(ORTHANC_BIN), str(config)], cwd=folder, stdin=subprocess.DEVNULL,
                                   stdout=output, stderr=subprocess.STDOUT)
    base_url = f"http://{LOOPBACK}:{http_port}"
    try:
        wait_until(lambda: answers_http(base_url + "/system"), process, "Orthanc", log)
        yield Orthanc(base_url, PEER)
    finally:
        stop_process(process)


def installed() -> bool:
    """Tell whether the Orthanc binary and its DICOMweb plugin are both installed."""
    return ORTHANC_BIN.is_file() and dicomweb_plugin() is not None


def in_ci() -> bool:
    """Tell whether this runs in CI (``CI=true``), where a missing Orthanc is a failure, not a skip."""
    return os.environ.get("CI", "").lower() == "true"


MISSING = (f"{ORTHANC_BIN} or the {DICOMWEB_PLUGIN_PACKAGE} plugin is missing: `make test` installs Debian's orthanc "
           f"and {DICOMWEB_PLUGIN_PACKAGE} as root (or: sudo apt-get install orthanc {DICOMWEB_PLUGIN_PACKAGE})")
