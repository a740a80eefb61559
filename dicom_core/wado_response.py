"""The answer of a retrieve service, independent of the HTTP framework, and the multipart framing of parts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus

from .blob_reads import Body, BodySource, held_bytes, prefetched
from .media_types import MULTIPART_RELATED
from .multipart import new_boundary, write_parts

CONTENT_TYPE = "Content-Type"
CONTENT_LENGTH = "Content-Length"
# Answers are written to the socket in pieces of at least this size (the last one excepted).
COALESCE_BYTES = 64 * 1024


@dataclass
class WadoResponse:
    """Status, headers and a body that is bytes, a stream of chunks, or nothing."""

    status: int = HTTPStatus.OK
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Body | None = None


@dataclass(frozen=True)
class PartSource:
    """One part of a multipart answer: its headers, how to read its body, and the memory that takes."""

    headers: Mapping[str, str]
    source: BodySource
    cost: int = field(default_factory=lambda: held_bytes(2**63))  # bytes held while read ahead


def typed(media_type: str, transfer_syntax: str) -> str:
    """A media type with its transfer-syntax parameter, e.g. `application/dicom; transfer-syntax=1.2.840.10008.1.2.1`."""
    return f"{media_type}; transfer-syntax={transfer_syntax}"


def multipart_response(payload_type: str, parts: Iterable[PartSource]) -> WadoResponse:
    """A 200 multipart/related answer streaming ``parts`` in order, the next ones read ahead."""
    boundary = new_boundary()
    content_type = f'{MULTIPART_RELATED}; type="{payload_type}"; boundary={boundary}'
    body = coalesced(write_parts(_stream_parts(list(parts)), boundary))
    return WadoResponse(headers={CONTENT_TYPE: content_type}, body=body)


async def coalesced(body: Body, size: int = COALESCE_BYTES) -> Body:
    """Join small chunks (part headers, small instances) into writes of about ``size`` bytes."""
    pending: list[bytes] = []
    pending_bytes = 0
    async for chunk in body:
        if not pending and len(chunk) >= size:
            yield chunk
            continue
        pending.append(chunk)
        pending_bytes += len(chunk)
        if pending_bytes >= size:
            yield b"".join(pending)
            pending, pending_bytes = [], 0
    if pending:
        yield b"".join(pending)


async def _stream_parts(parts: list[PartSource]) -> AsyncIterator[tuple[Mapping[str, str], Body]]:
    bodies = prefetched([part.source for part in parts], costs=[part.cost for part in parts])
    try:
        for part in parts:
            yield part.headers, await anext(bodies)
    finally:
        await bodies.aclose()
