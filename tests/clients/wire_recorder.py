"""A recording reverse proxy over loopback: it forwards each request to the real server unchanged, answers the
client with the server's answer, and keeps the exact bytes the client sent (header block and body framing)."""

from __future__ import annotations

import http.client
import socket
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import BinaryIO

from tests.processes import LOOPBACK

CRLF = b"\r\n"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


@dataclass(frozen=True)
class Recorded:
    """One request as the client sent it, and the status and Content-Type the server answered it with."""

    head: bytes  # request line and header lines, each ending in CRLF, without the blank line
    chunks: tuple[bytes, ...] | None  # the chunk payloads in order when the body was chunked, else None
    body: bytes  # the body without its chunk framing
    status: int
    content_type: str | None

    @property
    def request_line(self) -> str:
        """The request line, e.g. ``GET /v2/studies HTTP/1.1``."""
        return self.head.split(CRLF, 1)[0].decode("latin-1")

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The header lines in the order and spelling the client sent them."""
        lines = self.head.split(CRLF)[1:]
        return [(name, value.strip()) for name, _, value in (line.decode("latin-1").partition(":") for line in lines
                                                            if line)]


def _read_head(reader: BinaryIO) -> bytes | None:
    lines: list[bytes] = []
    while True:
        line = reader.readline(65536)
        if not line:
            return None
        if line == CRLF:
            return b"".join(lines)
        lines.append(line)


def _header(head: bytes, name: str) -> str | None:
    for line in head.split(CRLF)[1:]:
        key, _, value = line.decode("latin-1").partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def _read_chunks(reader: BinaryIO) -> tuple[list[bytes], bytes]:
    """Read a chunked body; return the chunk payloads and the raw framed bytes."""
    chunks: list[bytes] = []
    raw = bytearray()
    while True:
        size_line = reader.readline(1024)
        raw += size_line
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while True:  # trailers, then the blank line
                trailer = reader.readline(65536)
                raw += trailer
                if trailer in (CRLF, b""):
                    return chunks, bytes(raw)
        payload = reader.read(size)
        raw += payload + reader.read(2)
        chunks.append(payload)


@dataclass
class RecordingProxy:
    """Listens on a free loopback port and forwards to ``upstream_port``; ``recorded`` lists what clients sent."""

    upstream_port: int
    recorded: list[Recorded] = field(default_factory=list)
    _server: socket.socket | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        """The port clients connect to."""
        assert self._server is not None
        port: int = self._server.getsockname()[1]
        return port

    def __enter__(self) -> RecordingProxy:
        self._server = socket.create_server((LOOPBACK, 0))
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        assert self._server is not None
        self._server.close()

    def take(self) -> list[Recorded]:
        """Return what was recorded since the last call, and forget it."""
        with self._lock:
            taken, self.recorded = self.recorded, []
        return taken

    def _accept(self) -> None:
        assert self._server is not None
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client, client.makefile("rb") as reader:
            while (head := _read_head(reader)) is not None:
                if (_header(head, "expect") or "").lower() == "100-continue":
                    client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                chunks: list[bytes] | None = None
                if (_header(head, "transfer-encoding") or "").lower() == "chunked":
                    chunks, raw_body = _read_chunks(reader)
                    body = b"".join(chunks)
                else:
                    raw_body = body = reader.read(int(_header(head, "content-length") or 0))
                forwarded = b"".join(line + CRLF for line in head.split(CRLF)
                                     if line and not line.lower().startswith(b"expect:"))
                status, headers, answer = self._forward(forwarded + CRLF + raw_body)
                content_type = next((value for name, value in headers if name.lower() == "content-type"), None)
                with self._lock:
                    self.recorded.append(Recorded(head, tuple(chunks) if chunks is not None else None, body,
                                                  status, content_type))
                lines = [f"HTTP/1.1 {status} {http.client.responses.get(status, '')}"]
                lines += [f"{name}: {value}" for name, value in headers if name.lower() not in _HOP_BY_HOP]
                lines.append(f"Content-Length: {len(answer)}")
                client.sendall("\r\n".join(lines).encode("latin-1") + CRLF + CRLF + answer)
                if (_header(head, "connection") or "").lower() == "close":
                    return

    def _forward(self, request: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        with socket.create_connection((LOOPBACK, self.upstream_port)) as upstream:
            upstream.sendall(request)
            response = http.client.HTTPResponse(upstream)
            response.begin()
            answer = response.read()
            return response.status, response.getheaders(), answer
