"""Every request Azurite served, read from its debug logs (``--debug <file>``), in the order it arrived.

Azurite's blob and table services each log a request under an id of its own: a first line with the method,
URL and headers (``...StorageContextMiddleware: RequestMethod=...``), the operation its dispatcher chose
(``DispatchMiddleware: Operation=BlockBlob_Upload``), for a table ``$batch`` the whole request body
(``TableHandler:batch() Raw request string is "..."``) and the status it answered
(``EndMiddleware: ... StatusCode=...``). Every request gets the first line before anything can refuse it,
so counting ids counts requests exactly, and a ``$batch`` body tells which operations the transaction carried.

The logs are written asynchronously: a *mark* is a request of the benchmark's own with a unique URL, sent
to both services and awaited in both logs; the requests between two marks are a phase. ``settle`` marks
until no request arrived between two marks a moment apart, so work that outlives a response is counted.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

SERVICES = ("blob", "table")
MARKER = "benchmark0mark0"
_LINE = re.compile(r"^\S+ (?P<id>[0-9a-f-]{36}) \w+: (?P<message>.*)$")
_START = re.compile(r"^\w+StorageContextMiddleware: RequestMethod=(?P<method>\S+) RequestURL=(?P<url>\S+) "
                    r"RequestHeaders:(?P<headers>\{.*\}) ClientIP=")
_OPERATION = re.compile(r"^DispatchMiddleware: Operation=(?P<operation>\S+)")
_BATCH = re.compile(r"^TableHandler:batch\(\) Raw request string is (?P<body>\".*\")$")
_END = re.compile(r"^EndMiddleware: End response\. TotalTimeInMS=\d+ StatusCode=(?P<status>\d+)")
_SUBREQUEST = re.compile(r"^(?P<method>POST|PUT|PATCH|MERGE|DELETE|GET) (?P<url>\S+) HTTP/1\.1$")
MARK_TIMEOUT_SECONDS = 60.0

BLOB_KINDS = {
    "BlockBlob_Upload": "blob PUT",
    "BlockBlob_StageBlock": "blob PUT block",
    "BlockBlob_CommitBlockList": "blob PUT blocklist",
    "BlockBlob_GetBlockList": "blob GET blocklist",
    "Blob_Download": "blob GET",
    "Blob_GetProperties": "blob HEAD",
    "Blob_SetMetadata": "blob set metadata",
    "Blob_Delete": "blob DELETE",
}
TABLE_KINDS = {
    "Table_QueryEntitiesWithPartitionAndRowKey": "table point read",
    "Table_QueryEntities": "table query",
    "Table_InsertEntity": "table insert",
    "Table_DeleteEntity": "table delete",
    "Table_Batch": "table $batch",
    "Table_Create": "table create table",
    "Table_Query": "table list tables",
}


@dataclass(frozen=True)
class BatchOperation:
    """One operation a table ``$batch`` carried: its kind (as a single request's) and its table."""

    kind: str
    target: str


@dataclass(frozen=True)
class ServedRequest:
    """One request a service served: what it was, what it was for, how it was answered."""

    service: str
    method: str
    path: str
    operation: str
    if_match: bool
    status: int | None
    batch: tuple[BatchOperation, ...] = ()

    @property
    def kind(self) -> str:
        """What the request did, e.g. ``blob PUT``, ``table point read``, ``table upsert (replace)``."""
        if self.service == "blob":
            if self.operation.startswith("Container_"):
                return "blob container " + self.operation.removeprefix("Container_")
            return BLOB_KINDS.get(self.operation, f"blob {self.operation}")
        if self.operation in ("Table_UpdateEntity", "Table_MergeEntity"):
            return _write_kind("replace" if self.operation == "Table_UpdateEntity" else "merge", self.if_match)
        return TABLE_KINDS.get(self.operation, f"table {self.operation or self.method}")

    @property
    def target(self) -> str:
        """The container or table it addressed (``$batch``: the table of its operations)."""
        if self.batch:
            return ",".join(sorted({operation.target for operation in self.batch}))
        return _target(self.path)

    @property
    def failed(self) -> bool:
        """Whether it was answered with an error status (a point read of a missing row is a 404)."""
        return self.status is not None and self.status >= 400


@dataclass
class _Pending:
    method: str
    path: str
    headers: dict[str, str]
    operation: str = ""
    status: int | None = None
    batch: tuple[BatchOperation, ...] = ()


@dataclass(frozen=True)
class Mark:
    """A point in both logs: the position of a marker request in each."""

    positions: tuple[int, ...]


@dataclass
class _ServiceLog:
    """One service's debug log, read as it grows."""

    service: str
    path: Path
    port: int
    offset: int = 0
    rest: bytes = b""
    order: list[str] = field(default_factory=list)
    pending: dict[str, _Pending] = field(default_factory=dict)
    markers: dict[str, int] = field(default_factory=dict)

    def read(self) -> None:
        """Parse what was appended since the last read."""
        if not self.path.exists():
            return
        with self.path.open("rb") as file:
            file.seek(self.offset)
            data = self.rest + file.read()
        self.offset += len(data) - len(self.rest)
        *lines, self.rest = data.split(b"\n")
        for line in lines:
            self._line(line.decode("utf-8", "replace"))

    def _line(self, line: str) -> None:
        matched = _LINE.match(line)
        if matched is None:
            return
        request_id, message = matched["id"], matched["message"]
        start = _START.match(message)
        if start is not None:
            url = urlsplit(start["url"])
            path = unquote(url.path) + (f"?{url.query}" if url.query else "")
            headers = {key.lower(): str(value) for key, value in json.loads(start["headers"]).items()}
            self.pending[request_id] = _Pending(start["method"], path, headers)
            if MARKER in path:
                self.markers[path.rsplit(MARKER, 1)[1].strip("()/")] = len(self.order)
            self.order.append(request_id)
            return
        pending = self.pending.get(request_id)
        if pending is None:
            return
        if (operation := _OPERATION.match(message)) is not None:
            pending.operation = operation["operation"]
        elif (end := _END.match(message)) is not None:
            pending.status = int(end["status"])
        elif (batch := _BATCH.match(message)) is not None:
            pending.batch = batch_operations(json.loads(batch["body"]))

    def served(self, start: int, end: int) -> list[ServedRequest]:
        """The requests after position ``start`` and before ``end``, markers left out."""
        requests = []
        for request_id in self.order[start + 1:end]:
            pending = self.pending[request_id]
            if MARKER in pending.path:
                continue
            if_match = "if-match" in pending.headers
            requests.append(ServedRequest(self.service, pending.method, pending.path, pending.operation, if_match,
                                          pending.status, pending.batch))
        return requests

    def send_marker(self, token: str) -> None:
        """A request of our own, answered with an error (it names nothing), logged like any other."""
        url = f"http://127.0.0.1:{self.port}/devstoreaccount1/{MARKER}{token}"
        if self.service == "table":
            url += "()"
        httpx.get(url, timeout=30)


class RequestLog:
    """The requests the blob and table services of one Azurite served, split into phases by marks."""

    def __init__(self, blob_log: Path, blob_port: int, table_log: Path, table_port: int) -> None:
        self._logs = (_ServiceLog("blob", blob_log, blob_port), _ServiceLog("table", table_log, table_port))

    def mark(self) -> Mark:
        """Send a marker request to each service; return once both logs hold it."""
        token = uuid.uuid4().hex
        for log in self._logs:
            log.send_marker(token)
        deadline = time.monotonic() + MARK_TIMEOUT_SECONDS
        while True:
            for log in self._logs:
                log.read()
            if all(token in log.markers for log in self._logs):
                return Mark(tuple(log.markers[token] for log in self._logs))
            if time.monotonic() > deadline:
                raise TimeoutError(f"the marker request {token} did not reach Azurite's debug logs")
            time.sleep(0.02)

    def settle(self, quiet_seconds: float = 0.3) -> Mark:
        """Mark once no request arrived for ``quiet_seconds`` (what a phase started is then all counted)."""
        deadline = time.monotonic() + MARK_TIMEOUT_SECONDS
        mark = self.mark()
        while True:
            time.sleep(quiet_seconds)
            later = self.mark()
            if not self.between(mark, later) or time.monotonic() > deadline:
                return later
            mark = later

    def between(self, start: Mark, end: Mark) -> list[ServedRequest]:
        """Every request served after ``start`` and before ``end`` (blob service first, each in arrival order)."""
        return [request for log, low, high in zip(self._logs, start.positions, end.positions, strict=True)
                for request in log.served(low, high)]


def batch_operations(body: str) -> tuple[BatchOperation, ...]:
    """The operations of a ``$batch`` request body (a multipart/mixed changeset of HTTP requests)."""
    operations: list[BatchOperation] = []
    lines = body.split("\r\n")
    for index, line in enumerate(lines):
        request = _SUBREQUEST.match(line)
        if request is None:
            continue
        if_match = any(header.lower().startswith("if-match:") for header in _headers(lines[index + 1:]))
        method = request["method"]
        if method == "POST":
            kind = "table insert"
        elif method == "DELETE":
            kind = "table delete"
        elif method == "GET":
            kind = "table point read"
        else:
            kind = _write_kind("replace" if method == "PUT" else "merge", if_match)
        operations.append(BatchOperation(kind, _target(unquote(urlsplit(request["url"]).path))))
    return tuple(operations)


def _headers(lines: Iterable[str]) -> Iterable[str]:
    for line in lines:
        if not line:
            return
        yield line


def _write_kind(mode: str, if_match: bool) -> str:
    """A PUT (replace) or PATCH/MERGE (merge): an update when conditional on If-Match, an upsert otherwise."""
    return f"table update ({mode}, If-Match)" if if_match else f"table upsert ({mode})"


def _target(path: str) -> str:
    """The container or table of a request path (``/devstoreaccount1/{name}...``)."""
    parts = path.split("?", 1)[0].split("/")
    name = parts[2] if len(parts) > 2 else ""
    return name.split("(", 1)[0]
