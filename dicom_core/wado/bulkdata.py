"""WADO-RS bulk data: the bytes of one binary attribute, at the offset and length its BulkDataURI names.

The URI (model/bulk_data.py) names the stored file's version: the instance row is read alongside the ranged blob
read of the value, and the bytes are answered only when the row still names that version, so a replaced or
deleted instance answers 404, never another file's bytes. HTTP `Range` selects bytes of the value (206/416).
A video stream split over several fragments is answered as one body, the item headers between them left out.
A value with a media type of its own (an encapsulated PDF, a video stream) is answered as that type, or as
application/octet-stream when Accept asks for it; single part, or multipart/related with that type.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from http import HTTPStatus

from dicom_core.index.rows import instance_row_key
from dicom_core.model.bulk_data import OCTET_STREAM, parse_location
from dicom_core.model.errors import NotAcceptableError, NotFoundError
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance
from dicom_core.storage.blob_reads import Body, read_range, read_spanned, stream_ranges
from dicom_core.storage.blobs import instance_blob_name
from dicom_core.storage.clients import Storage
from dicom_core.storage.tables import read_properties
from dicom_core.wado.response import CONTENT_TYPE, PartSource, multipart_response, single_part_response
from dicom_core.wire.media_types import parse_accept, unwrap_multipart
from dicom_core.wire.service_result import ServiceResult

# Values up to this size are read at the same time as the row; larger ones are streamed once it has answered.
SPECULATIVE_BYTES = 8 * 1024 * 1024
GONE = "The bulk data cannot be found: its instance was replaced or deleted."
_BYTES_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")


@dataclass(frozen=True)
class BulkDataRequest:
    """One bulk data request: whose bytes, where in the stored file, and the headers that shape the answer."""

    ids: InstanceIdentifiers
    version: str
    location: str  # `{offset}-{length}`
    accept: str | None = None
    range: str | None = None


async def retrieve_bulk_data(storage: Storage, request: BulkDataRequest) -> ServiceResult:
    """The value's bytes as its media type, single part (Range honoured) or multipart/related."""
    location = parse_location(request.location)
    if location is None or not request.version.isalnum():
        raise NotFoundError("The bulk data URI is not one this service handed out.")
    media_type, multipart = negotiated(request.accept, location.media_type)
    offset, length = location.offset, location.length
    selected = (0, length) if multipart else selected_range(request.range, length)
    if selected is None:
        return ServiceResult(status=HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                             headers={"Content-Range": f"bytes */{length}"})
    start, count = selected
    stored = StoredInstance(request.ids, request.version)
    blob = instance_blob_name(stored)
    ranges = location.file_ranges(start, count)  # one, or the pieces of a video stream split over fragments
    early = None
    if 0 < count <= SPECULATIVE_BYTES:
        early = asyncio.ensure_future(read_range(storage.files, blob, *ranges[0]) if len(ranges) == 1
                                      else _joined(read_spanned(storage.files, blob, ranges)))
        await asyncio.sleep(0)  # the blob read goes out first: the row read is the shorter one
    try:
        ids = request.ids
        row = await read_properties(storage.studies, ids.study, instance_row_key(ids.series, ids.instance),
                                    ["Version", "Size"])
        if row is None or str(row["Version"]) != request.version or offset + length > int(row["Size"]):
            raise NotFoundError(GONE)
        data = await early if early is not None else b"" if not count else None
    finally:
        if early is not None:
            early.cancel()
            if early.done() and not early.cancelled():
                early.exception()  # retrieved: a read of a replaced file may fail, and is not answered anyway
    if multipart:
        source = (lambda: _single(data)) if data is not None else (lambda: stream_ranges(storage.files, blob, ranges))
        return multipart_response(media_type, [PartSource({CONTENT_TYPE: media_type}, source)])
    body = data if data is not None else stream_ranges(storage.files, blob, ranges)
    headers = {**single_part_response(media_type, body, count).headers, "Accept-Ranges": "bytes"}
    if (start, count) == (0, length):
        return ServiceResult(headers=headers, body=body)
    headers["Content-Range"] = f"bytes {start}-{start + count - 1}/{length}"
    return ServiceResult(status=HTTPStatus.PARTIAL_CONTENT, headers=headers, body=body)


def negotiated(accept: str | None, own: str = OCTET_STREAM) -> tuple[str, bool]:
    """The media type of the answer (``own``, or application/octet-stream if asked for) and whether it is
    multipart/related; a 406 when Accept allows neither."""
    ranges = parse_accept(accept)
    if not ranges:
        return own, False
    for media in ranges:
        payload, multipart = unwrap_multipart(media)
        if media.quality <= 0:
            continue
        for candidate in dict.fromkeys((own, OCTET_STREAM)):
            if payload.matches(candidate):
                return candidate, multipart
    raise NotAcceptableError(f"This bulk data is {' or '.join(dict.fromkeys((own, OCTET_STREAM)))}, "
                             "single part or multipart/related.")


def selected_range(header: str | None, length: int) -> tuple[int, int] | None:
    """The (start, count) of the value a Range header selects: all of it without one, None when unsatisfiable."""
    match = _BYTES_RANGE.fullmatch((header or "").strip().replace(" ", ""))
    if match is None or not (match[1] or match[2]):
        return (0, length)  # no range, or one this does not handle (several ranges): the whole value (RFC 9110)
    if not match[1]:  # the last n bytes
        count = min(int(match[2]), length)
        return (length - count, count) if count else None
    start = int(match[1])
    end = min(int(match[2]), length - 1) if match[2] else length - 1
    if start >= length or end < start:
        return None
    return (start, end - start + 1)


async def _single(data: bytes) -> Body:
    yield data


async def _joined(chunks: Body) -> bytes:
    return b"".join([chunk async for chunk in chunks])
