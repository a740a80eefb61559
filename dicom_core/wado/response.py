"""WADO-RS answers as `ServiceResult`s: one body with its length, or parts framed as multipart/related."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field

from dicom_core.storage.blob_reads import Body, BodySource, held_bytes, prefetched
from dicom_core.wire.media_types import MULTIPART_RELATED
from dicom_core.wire.multipart import new_boundary, write_parts
from dicom_core.wire.service_result import ServiceResult

CONTENT_TYPE = "Content-Type"
CONTENT_LENGTH = "Content-Length"
# Answers are written to the socket in pieces of at least this size (the last one excepted).
COALESCE_BYTES = 64 * 1024


@dataclass(frozen=True)
class PartSource:
    """One part of a multipart answer: its headers, how to read its body, and the memory that takes."""

    headers: Mapping[str, str]
    source: BodySource
    cost: int = field(default_factory=lambda: held_bytes(2**63))  # bytes held while read ahead


def typed(media_type: str, transfer_syntax: str) -> str:
    """A media type with its transfer-syntax parameter: `application/dicom; transfer-syntax=1.2.840.10008.1.2.1`."""
    return f"{media_type}; transfer-syntax={transfer_syntax}"


def single_part_response(content_type: str, body: bytes | Body, length: int) -> ServiceResult:
    """A 200 answer of one body, bytes or streamed, with its Content-Length."""
    return ServiceResult(headers={CONTENT_TYPE: content_type, CONTENT_LENGTH: str(length)}, body=body)


def multipart_response(
    payload_type: str, parts: Iterable[PartSource], more: AsyncIterator[list[PartSource]] | None = None
) -> ServiceResult:
    """A 200 multipart/related answer streaming ``parts``, then the batches of ``more``, the next ones read ahead."""
    boundary = new_boundary()
    content_type = f'{MULTIPART_RELATED}; type="{payload_type}"; boundary={boundary}'
    body = coalesced(write_parts(_stream_parts(list(parts), more), boundary))
    return ServiceResult(headers={CONTENT_TYPE: content_type}, body=body)


async def coalesced(body: Body, size: int = COALESCE_BYTES) -> Body:
    """Join small chunks (part headers, small instances) into writes of about ``size`` bytes, the first one at once."""
    # The first chunk goes out at once: the client sees the answer start while the first body is read.
    pending: list[bytes] = []
    pending_bytes = 0
    first = True
    try:
        async for chunk in body:
            if first or (not pending and len(chunk) >= size):
                first = False
                yield chunk
                continue
            pending.append(chunk)
            pending_bytes += len(chunk)
            if pending_bytes >= size:
                yield b"".join(pending)
                pending, pending_bytes = [], 0
    except Exception:
        if pending:  # the parts completed before a later one failed still reach the client
            yield b"".join(pending)
        raise
    if pending:
        yield b"".join(pending)


async def _stream_parts(
    parts: list[PartSource], more: AsyncIterator[list[PartSource]] | None
) -> AsyncIterator[tuple[Mapping[str, str], Body]]:
    later: deque[PartSource] = deque()  # parts of further batches, in the order their bodies come

    async def batches() -> AsyncIterator[list[tuple[BodySource, int]]]:
        assert more is not None
        async for batch in more:
            later.extend(batch)
            yield [(part.source, part.cost) for part in batch]

    bodies = prefetched([part.source for part in parts], costs=[part.cost for part in parts],
                        more=batches() if more is not None else None)
    try:
        for part in parts:
            yield part.headers, await anext(bodies)
        while (body := await anext(bodies, None)) is not None:
            yield later.popleft().headers, body
    finally:
        await bodies.aclose()
