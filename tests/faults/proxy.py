"""A storage fault injector for tests: an HTTP proxy in front of Azurite's blob and table services.

The server under test gets `StorageFaultProxy.connection_string` (it names the proxy's ports), so every
storage request it makes passes through the proxy, which forwards it unchanged unless a `Fault` matches it.
A fault names an operation: the service (``blob`` or ``table``), the HTTP method, a regular expression
searched in the decoded path and query, optionally one searched in the request body (a table ``$batch``
carries the names of the tables it writes), and which matching request it strikes (``k``, from 1, once).
What it does to that request (`Action`):

- ``RESET``: the connection is reset (RST) before anything is forwarded;
- ``SERVER_BUSY``: answered 503 with the ``ServerBusy`` error body and headers Azure Storage sends;
- ``TIMEOUT``: held unanswered (and not forwarded) until the client gives up;
- ``RESPONSE_LOST``: forwarded and answered by Azurite (the write landed), then the connection is reset;
- ``KILL``: the process ``pid`` is sent SIGKILL, then the connection is reset (nothing forwarded);
- ``HOLD``: held until the fault's ``release`` event is set (a writer stalled mid-request), then forwarded;
- ``BODY_CUT``: forwarded, and the answer's head and the first half of its body sent, then the connection is reset.

Usage (the ``storage_fault_proxy`` fixture of tests/conftest.py starts one per test)::

    busy = proxy.inject(Fault("table", "POST", r"/\\$batch$", Action.SERVER_BUSY, body=r"Studies"))
    ...  # drive the server
    assert busy.fired.is_set()

`throttle(rate, actions, seed)` strikes, besides, each request with probability ``rate`` with one of ``actions``
(throttled storage: 10 % of requests answered 503 ``ServerBusy`` or reset); `throttle(0)` stops it.

It runs its own event loop in a daemon thread, so synchronous tests drive it; `requests` records every
request it saw as (service, method, decoded target).
"""

from __future__ import annotations

import asyncio
import enum
import os
import random
import re
import signal
import socket
import struct
import threading
import uuid
from dataclasses import dataclass, field
from email.utils import formatdate
from urllib.parse import unquote

from dicom_core.settings import azurite_connection_string

LOOPBACK = "127.0.0.1"
SERVICES = ("blob", "table")
_HEAD_END = b"\r\n\r\n"
_NO_BODY_STATUSES = {204, 304}
HOLD_LIMIT_SECONDS = 120  # a HOLD never outlives a test that forgot to release it


class Action(enum.Enum):
    """What a fault does to the request it strikes."""

    RESET = "reset"
    SERVER_BUSY = "server-busy"
    TIMEOUT = "timeout"
    RESPONSE_LOST = "response-lost"
    KILL = "kill"
    HOLD = "hold"
    BODY_CUT = "body-cut"


@dataclass(eq=False)
class Fault:
    """One fault: which operation's k-th request it strikes, and how; `fired` is set once it has."""

    service: str
    method: str
    path: str
    action: Action
    k: int = 1
    body: str | None = None
    pid: int | None = None
    seen: int = 0
    fired: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)  # ends a HOLD

    def matches(self, service: str, request: _Request) -> bool:
        """Tell whether ``request`` to ``service`` is one of this fault's operation."""
        return (service == self.service and request.method == self.method.upper()
                and re.search(self.path, request.target) is not None
                and (self.body is None or re.search(self.body.encode(), request.body) is not None))


@dataclass(frozen=True)
class _Request:
    method: str
    target: str  # the decoded path and query
    raw: bytes  # as received: head and body
    body: bytes


class StorageFaultProxy:
    """A proxy on two loopback ports in front of Azurite's blob and table ports; see the module docstring."""

    def __init__(self, upstream_host: str, blob_port: int, table_port: int) -> None:
        self._upstream = {"blob": (upstream_host, blob_port), "table": (upstream_host, table_port)}
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self.requests: list[tuple[str, str, str]] = []
        self.ports: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="storage-fault-proxy", daemon=True)
        self._servers: list[asyncio.Server] = []
        self._throttle: tuple[float, tuple[Action, ...], random.Random] = (0.0, (), random.Random())
        self.throttled: list[tuple[str, str, str, Action]] = []  # (service, method, target, action) struck at random

    @property
    def connection_string(self) -> str:
        """The connection string that sends the blob and table requests through the proxy."""
        return azurite_connection_string(LOOPBACK, self.ports["blob"], self.ports["table"])

    def start(self) -> StorageFaultProxy:
        """Listen on a free port per service."""
        self._thread.start()
        for service in SERVICES:
            server = asyncio.run_coroutine_threadsafe(self._listen(service), self._loop).result(timeout=10)
            self._servers.append(server)
            self.ports[service] = server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Stop listening, drop every connection and end the proxy's thread."""
        async def close() -> None:
            for server in self._servers:
                server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def inject(self, fault: Fault) -> Fault:
        """Arm ``fault`` (it counts the matching requests from now on); return it."""
        with self._lock:
            self._faults.append(fault)
        return fault

    def throttle(self, rate: float, actions: tuple[Action, ...] = (), seed: int = 0) -> None:
        """Strike every request with probability ``rate`` with one of ``actions`` (at random, from ``seed``)."""
        with self._lock:
            self._throttle = (rate, actions, random.Random(seed))

    def clear(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self._faults.clear()

    def _strike(self, service: str, request: _Request) -> Fault | None:
        """The fault that strikes ``request``, if one does (each fault strikes once)."""
        with self._lock:
            self.requests.append((service, request.method, request.target))
            striking = None
            for fault in self._faults:
                if fault.fired.is_set() or not fault.matches(service, request):
                    continue
                fault.seen += 1
                if fault.seen == fault.k and striking is None:
                    striking = fault
            rate, actions, chance = self._throttle
            if striking is None and rate > 0 and chance.random() < rate:
                action = chance.choice(actions)
                self.throttled.append((service, request.method, request.target, action))
                striking = Fault(service, request.method, "", action)
            if striking is not None:
                striking.fired.set()
            return striking

    async def _listen(self, service: str) -> asyncio.Server:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await self._serve(service, reader, writer)
            except asyncio.CancelledError:  # the proxy stops: end quietly
                writer.transport.abort()

        return await asyncio.start_server(serve, LOOPBACK, 0)

    async def _serve(self, service: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (request := await _read_request(reader)) is not None:
                fault = self._strike(service, request)
                action = fault.action if fault is not None else None
                if action is Action.KILL:
                    assert fault is not None and fault.pid is not None, "a KILL fault needs the pid"
                    os.kill(fault.pid, signal.SIGKILL)
                if action in (Action.KILL, Action.RESET):
                    _reset(writer)
                    return
                if action is Action.TIMEOUT:
                    await reader.read()  # until the client closes the connection
                    return
                if action is Action.HOLD:
                    assert fault is not None
                    await asyncio.to_thread(fault.release.wait, HOLD_LIMIT_SECONDS)
                if action is Action.SERVER_BUSY:
                    writer.write(_server_busy(service))
                    await writer.drain()
                    continue
                response, keep_open = await self._forward(service, request)
                if action is Action.RESPONSE_LOST:
                    _reset(writer)
                    return
                if action is Action.BODY_CUT:
                    head = response.index(_HEAD_END) + len(_HEAD_END)
                    writer.write(response[: head + (len(response) - head) // 2])
                    await writer.drain()
                    _reset(writer)
                    return
                writer.write(response)
                await writer.drain()
                if not keep_open:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _forward(self, service: str, request: _Request) -> tuple[bytes, bool]:
        """Send ``request`` to Azurite on a connection of its own; return the raw response and whether the
        client's connection may stay open (False when the response ends with its connection)."""
        host, port = self._upstream[service]
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(request.raw)
            await writer.drain()
            head = await reader.readuntil(_HEAD_END)
            status = int(head.split(b" ", 2)[1])
            headers = _headers(head)
            if request.method == "HEAD" or status in _NO_BODY_STATUSES or 100 <= status < 200:
                return head, True
            if "content-length" in headers:
                return head + await reader.readexactly(int(headers["content-length"])), True
            if "chunked" in headers.get("transfer-encoding", "").lower():
                return head + await _read_chunked(reader), True
            return head + await reader.read(), False
        finally:
            writer.close()


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    """The next request on a connection (None once the client closed it)."""
    try:
        head = await reader.readuntil(_HEAD_END)
    except asyncio.IncompleteReadError:
        return None
    method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
    headers = _headers(head)
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
        raw_body = body
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        raw_body = await _read_chunked(reader)
        body = raw_body  # searched as sent: chunk sizes between the pieces do not hide table names
    else:
        body = raw_body = b""
    return _Request(method.upper(), unquote(target), head + raw_body, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    """A chunked body as received, through its last chunk and trailers."""
    received = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        received += line
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                received += trailer
            return bytes(received + b"\r\n")
        received += await reader.readexactly(size + 2)


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines) if name}


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close the connection with a TCP reset (RST), as a dropped connection looks to the client."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _server_busy(service: str) -> bytes:
    """A 503 ServerBusy answer as the storage service sends it (table: JSON; blob: XML)."""
    request_id = str(uuid.uuid4())
    message = f"The server is busy.\nRequestId:{request_id}\nTime:{formatdate(usegmt=True)}"
    if service == "table":
        body = ('{"odata.error":{"code":"ServerBusy","message":{"lang":"en-US","value":"'
                + message.replace("\n", "\\n") + '"}}}').encode()
        content_type = "application/json;odata=minimalmetadata;streaming=true;charset=utf-8"
        server = "Windows-Azure-Table/1.0 Microsoft-HTTPAPI/2.0"
    else:
        body = (f'\ufeff<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code>'
                f"<Message>{message}</Message></Error>").encode()
        content_type = "application/xml"
        server = "Windows-Azure-Blob/1.0 Microsoft-HTTPAPI/2.0"
    head = (f"HTTP/1.1 503 The server is busy.\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"x-ms-error-code: ServerBusy\r\nx-ms-request-id: {request_id}\r\nx-ms-version: 2021-12-02\r\n"
            f"Date: {formatdate(usegmt=True)}\r\nServer: {server}\r\n\r\n")
    return head.encode() + body
