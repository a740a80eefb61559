"""Streaming multipart/related reader and writer (RFC 2046 section 5.1, DICOM PS3.18 section 8.7.1).

The reader never holds a whole body or part in memory: it keeps a carry-over buffer about as long as
the delimiter and spools each part body to a ``SpooledTemporaryFile``.
"""

from __future__ import annotations

import enum
import re
import tempfile
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import BinaryIO, cast

from dicom_core.model.errors import BadRequestError, PayloadTooLargeError
from dicom_core.wire.media_types import DICOM

MAX_HEADER_BYTES = 16 * 1024
DEFAULT_SPOOL_MEMORY_BYTES = 8 * 1024 * 1024
# The most transport padding (spaces, tabs) accepted between a delimiter and its CRLF.
MAX_PADDING_BYTES = 1024
# RFC 2046 allows 70 boundary characters, but real clients send more (Orthanc's DICOMweb plugin: two UUIDs
# joined by "-", 73), so only a safety bound far above any client's is enforced.
MAX_BOUNDARY_LENGTH = 256
# How much of a client's malformed input an error message quotes.
_QUOTE_LENGTH = 80

CRLF = b"\r\n"
_HEADER_END = CRLF + CRLF
_BCHARS_NOSPACE = r"0-9A-Za-z'()+_,\-./:=?"
_BOUNDARY = re.compile(rf"[{_BCHARS_NOSPACE} ]{{0,{MAX_BOUNDARY_LENGTH - 1}}}[{_BCHARS_NOSPACE}]")
# What may follow "\r\n--boundary": "--" closes the body; padding then CRLF opens the next part.
_DELIMITER_REST = re.compile(rb"(?P<close>--)|[ \t]*(?=\r\n)")
# A tail of the buffer that may still become a _DELIMITER_REST once more bytes arrive.
_DELIMITER_REST_PREFIX = re.compile(rb"-|[ \t]*\r?")


@dataclass
class Part:
    """One part of a multipart body; its body is spooled to ``file``, positioned at 0."""

    headers: dict[str, str]
    content_type: str | None
    file: BinaryIO
    size: int

    def close(self) -> None:
        """Close (and so delete) the spooled body."""
        self.file.close()

    def __enter__(self) -> Part:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def boundary_from_content_type(params: Mapping[str, str]) -> str:
    """Return ``boundary`` if it is 1 to MAX_BOUNDARY_LENGTH bchars (RFC 2046), else raise BadRequestError."""
    boundary = params.get("boundary")
    if boundary is None:
        raise BadRequestError("The multipart Content-Type has no boundary parameter.")
    if not _BOUNDARY.fullmatch(boundary):
        raise BadRequestError(
            f"The multipart boundary {boundary[:_QUOTE_LENGTH]!r} is not 1 to {MAX_BOUNDARY_LENGTH} "
            "characters of digits, letters and '()+_,-./:=? (a space only inside)."
        )
    return boundary


async def iter_parts(
    chunks: AsyncIterator[bytes],
    boundary: str,
    *,
    max_part_bytes: int,
    spool_memory_bytes: int = DEFAULT_SPOOL_MEMORY_BYTES,
    new_spool: Callable[[], BinaryIO] | None = None,
) -> AsyncIterator[Part]:
    """Yield each part of a multipart body as soon as its closing delimiter has arrived (spooled by ``new_spool``)."""
    reader = _Reader(boundary.encode("ascii"), max_part_bytes, spool_memory_bytes, new_spool)
    ready: deque[Part] = deque()
    try:
        async for chunk in chunks:
            ready.extend(reader.feed(chunk))
            while ready:
                yield ready.popleft()
            if reader.done:
                break  # the epilogue is ignored, so it is not read either
        reader.finish()
    finally:
        reader.close()
        for part in ready:
            part.close()


def new_boundary() -> str:
    """Return a random boundary that will not occur in any body."""
    return uuid.uuid4().hex


async def write_parts(
    parts: AsyncIterator[tuple[Mapping[str, str], AsyncIterator[bytes]]], boundary: str
) -> AsyncGenerator[bytes, None]:
    """Yield a multipart/related body: per (headers, chunks) a delimiter, headers and body; then the close delimiter."""
    # The CRLF ending a body belongs to the next delimiter, so it travels with the next small write.
    separator = b""
    async for headers, body in parts:
        lines = [f"--{boundary}"] + [f"{name}: {value}" for name, value in headers.items()]
        if any("\r" in line or "\n" in line for line in lines):
            raise ValueError(f"A part header contains CR or LF: {dict(headers)!r}")
        yield separator + "\r\n".join(lines).encode("utf-8") + _HEADER_END
        async for chunk in body:
            if chunk:
                yield chunk
        separator = CRLF
    yield separator + f"--{boundary}--".encode("ascii") + CRLF


class _State(enum.Enum):
    PREAMBLE = enum.auto()
    HEADERS = enum.auto()
    BODY = enum.auto()
    DONE = enum.auto()


class _Reader:
    """Push parser: ``feed`` it bytes, get back the parts completed by them."""

    def __init__(self, boundary: bytes, max_part_bytes: int, spool_memory_bytes: int,
                 new_spool: Callable[[], BinaryIO] | None = None) -> None:
        self._delimiter = CRLF + b"--" + boundary
        self._boundary = boundary.decode("ascii")
        # A leading CRLF lets the first delimiter, which may open the body without one, match like the others.
        self._buffer = bytearray(CRLF)
        self._state = _State.PREAMBLE
        self._max_part_bytes = max_part_bytes
        self._new_spool = new_spool or (
            lambda: cast(BinaryIO, tempfile.SpooledTemporaryFile(max_size=spool_memory_bytes)))
        self._headers: dict[str, str] = {}
        self._file: BinaryIO | None = None
        self._size = 0

    @property
    def done(self) -> bool:
        """Tell whether the close delimiter has been read."""
        return self._state is _State.DONE

    def feed(self, data: bytes) -> list[Part]:
        """Parse ``data``; return the parts it completed."""
        self._buffer += data
        completed: list[Part] = []
        while self._step(completed):
            pass
        return completed

    def finish(self) -> None:
        """Raise BadRequestError unless the body ended after its close delimiter."""
        if self._state is _State.DONE:
            return
        if self._state is _State.HEADERS:
            raise BadRequestError("A part's header block has no terminating empty line before the body ends.")
        if self._state is _State.PREAMBLE and self._delimiter not in self._buffer:
            raise BadRequestError(f"The multipart body has no opening delimiter --{self._boundary}.")
        raise BadRequestError(f"The multipart body ends before its close delimiter --{self._boundary}--.")

    def close(self) -> None:
        """Close the part in progress, if any."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def _step(self, completed: list[Part]) -> bool:
        """Advance by one delimiter or header block; return False when more bytes are needed."""
        if self._state is _State.DONE:
            return False
        if self._state is _State.HEADERS:
            return self._read_headers()
        close = self._read_to_delimiter()
        if close is None:
            return False
        if self._state is _State.BODY:
            completed.append(self._complete_part())
        self._state = _State.DONE if close else _State.HEADERS
        return not close

    def _read_to_delimiter(self) -> bool | None:
        """Consume up to the next delimiter line; return whether it is the close one, None if not here yet."""
        buffer = self._buffer
        search_from = 0
        while (start := buffer.find(self._delimiter, search_from)) >= 0:
            rest = start + len(self._delimiter)
            if match := _DELIMITER_REST.match(buffer, rest):
                self._consume(start)
                # Keep the delimiter line's CRLF: _read_headers expects the header block to start with it.
                del buffer[: match.end() - start]
                return match["close"] is not None
            if _DELIMITER_REST_PREFIX.fullmatch(buffer, rest):
                if len(buffer) - rest > MAX_PADDING_BYTES:
                    raise BadRequestError(
                        f"A delimiter line --{self._boundary} has over {MAX_PADDING_BYTES} bytes of padding."
                    )
                self._consume(start)
                return None
            # The boundary text followed by anything else is not a delimiter line, just content.
            search_from = start + 1
        self._consume(len(buffer) - (len(self._delimiter) - 1))
        return None

    def _consume(self, length: int) -> None:
        """Drop the first ``length`` buffered bytes, writing them to the part in progress if there is one."""
        if length <= 0:
            return
        if self._file is not None:
            if self._size + length > self._max_part_bytes:
                raise PayloadTooLargeError(f"A part is larger than the limit of {self._max_part_bytes} bytes.")
            with memoryview(self._buffer) as buffer, buffer[:length] as head:  # released before the buffer shrinks
                self._file.write(head)
            self._size += length
        del self._buffer[:length]

    def _read_headers(self) -> bool:
        """Parse the header block (it starts at the delimiter line's CRLF); return False if incomplete."""
        end = self._buffer.find(_HEADER_END)
        # Without a terminator yet, the block is at least the buffer less the CRLF and a partial terminator.
        block_size = end - len(CRLF) if end >= 0 else len(self._buffer) - len(CRLF) - (len(_HEADER_END) - 1)
        if block_size > MAX_HEADER_BYTES:
            raise BadRequestError(f"A part's header block is larger than {MAX_HEADER_BYTES} bytes.")
        if end < 0:
            return False
        self._headers = _parse_headers(bytes(self._buffer[len(CRLF) : end]))
        del self._buffer[: end + len(_HEADER_END)]
        self._file = self._new_spool()
        self._size = 0
        self._state = _State.BODY
        return True

    def _complete_part(self) -> Part:
        """Hand the part in progress over to a Part, rewound."""
        assert self._file is not None
        file, self._file = self._file, None
        file.seek(0)
        return Part(self._headers, self._headers.get("content-type"), file, self._size)


def _parse_headers(block: bytes) -> dict[str, str]:
    """Parse ``Name: value`` lines; names lower-cased, values stripped, repeated names joined with ", "."""
    headers: dict[str, str] = {}
    if not block:
        return headers
    # Header values are ASCII in practice; UTF-8 keeps non-ASCII file names in Content-Disposition readable.
    for line in block.decode("utf-8", errors="replace").split("\r\n"):
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or not name:
            raise BadRequestError(f"A part header line is not 'Name: value': {line[:_QUOTE_LENGTH]!r}.")
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


async def single_part(body: AsyncIterator[bytes], max_bytes: int, file: BinaryIO) -> AsyncIterator[Part]:
    """Spool a single-part application/dicom body into one Part, in ``file``."""
    size = 0
    try:
        async for chunk in body:
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLargeError(f"The DICOM file is larger than the limit of {max_bytes} bytes.")
            file.write(chunk)
    except BaseException:
        file.close()
        raise
    file.seek(0)
    yield Part(headers={}, content_type=DICOM, file=file, size=size)
