"""Reading back what `python -m local_host` logged of each request: the app's JSON request lines and the access log."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

# `dicom_core.edge.request_log` writes one JSON object per request through the "dicomweb.request" logger.
_REQUEST_LINE = re.compile(r" dicomweb\.request: (\{.*\})\s*$")
# `local_host.access_log` logs every HTTP request, those no function answered (router 404/405) included.
_ACCESS_LINE = re.compile(r" local_host\.access: (?P<method>[A-Z]+) (?P<path>\S+) (?P<status>\d{3}) ")


@dataclass(frozen=True)
class LoggedServer:
    """A DICOMweb server started for a test, and the file its output goes to."""

    base_url: str
    log: Path


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the server logged it."""

    method: str
    path: str
    status: int
    request_id: str = ""  # only the app's JSON lines have one


def log_size(log: Path) -> int:
    """Return the log's current length, to read only what is logged after this moment."""
    return log.stat().st_size


def app_requests(log: Path, start: int = 0) -> list[LoggedRequest]:
    """Return the app's JSON request lines logged from byte ``start`` on."""
    found = []
    for line in _read_from(log, start):
        match = _REQUEST_LINE.search(line)
        if match:
            record = json.loads(match.group(1))
            found.append(LoggedRequest(record["method"], record["path"], int(record["status"]), record["request_id"]))
    return found


def access_log_requests(log: Path, start: int = 0) -> list[LoggedRequest]:
    """Return the local host's access-log lines logged from byte ``start`` on."""
    found = []
    for line in _read_from(log, start):
        match = _ACCESS_LINE.search(line)
        if match:
            found.append(LoggedRequest(match["method"], match["path"], int(match["status"])))
    return found


def _read_from(log: Path, start: int) -> list[str]:
    with log.open("rb") as file:
        file.seek(start)
        return file.read().decode("utf-8", errors="replace").splitlines()
