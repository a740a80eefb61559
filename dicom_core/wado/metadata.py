"""WADO-RS metadata of a study, series or instance: a DICOM JSON array, with an ETag, 304 and gzip.

Series and study metadata come from the precomputed series documents (`documents.series_documents`), never from
the instances' own blobs. The ETag is derived from the ETag of the study, series or instance row, which
changes on every store, upsert and delete below it, so a matching If-None-Match is answered from one
Table read.
"""

from __future__ import annotations

import asyncio
import hashlib
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from http import HTTPStatus

from azure.storage.blob import BlobProperties

from dicom_core.documents.known_documents import (
    has_known_document,
    known_document,
    known_without_binary,
    remembered,
)
from dicom_core.documents.series_documents import (
    SEPARATOR,
    is_current,
    open_document,
    stream_document,
    stream_opened,
    verified_properties,
)
from dicom_core.index.instance_metadata import metadata_of_row
from dicom_core.index.reads import row_etag, series_rows, stored_instance
from dicom_core.index.rows import STUDY_ROW, series_row_key
from dicom_core.model.bulk_data import with_urls, without_bulk_data
from dicom_core.model.errors import NotAcceptableError, NotFoundError
from dicom_core.model.identifiers import InstanceIdentifiers
from dicom_core.storage.blob_reads import Body, BodySource, prefetched
from dicom_core.storage.clients import Storage
from dicom_core.wado.instance_reads import INSTANCE_NOT_FOUND, instance_row
from dicom_core.wado.response import CONTENT_TYPE
from dicom_core.wire.media_types import DICOM_JSON, accepts, parse_accept
from dicom_core.wire.service_result import ServiceResult

GZIP = "gzip"
GZIP_LEVEL = 5
_GZIP_WBITS = 31  # zlib's way of asking for a gzip header and trailer
_INLINE_COMPRESS_BYTES = 256 * 1024  # larger chunks are compressed off the event loop
_GZIP_SUFFIX = "-gzip"
VERIFY_CONCURRENCY = 8
DOCUMENT_PREFETCH = 4
# The Blob SDK reads up to this much of a blob in its first GET, in memory.
DOCUMENT_FIRST_GET_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class MetadataRequest:
    """The request headers a metadata answer depends on."""

    accept: str | None = None
    accept_encoding: str | None = None
    if_none_match: str | None = None
    # Root of BulkDataURIs (`https://host/v2`), or None to leave binary attributes out (Azure's answer).
    bulk_root: str | None = None


async def study_metadata(storage: Storage, study: str, request: MetadataRequest) -> ServiceResult:
    """Every instance's metadata of a study: its series documents one after another."""
    _require_json(request.accept)
    study_etag = await row_etag(storage, study, STUDY_ROW)
    if study_etag is None:
        raise NotFoundError("The specified study cannot be found.")
    tag = _entity_tag(study_etag)
    if matches_entity_tag(request.if_none_match, tag):
        return _not_modified(tag, request)
    rows = await series_rows(storage, study, select=[])
    slots = asyncio.Semaphore(VERIFY_CONCURRENCY)
    uids = [str(r["RowKey"]).split("|", 1)[1] for r in rows]
    etags = [str(r.metadata["etag"]) for r in rows]

    async def verify(series: str, etag: str) -> BlobProperties | bytes:
        if (known := known_document(storage, study, series, etag)) is not None:
            return known  # kept by this process, and still what the series row stands for
        async with slots:
            return await verified_properties(storage, study, series, etag)

    verified = await asyncio.gather(*(verify(s, e) for s, e in zip(uids, etags, strict=True)))
    documents = prefetched(
        [_document_source(storage, study, s, e, p) for s, e, p in zip(uids, etags, verified, strict=True)],
        costs=[0 if isinstance(p, bytes) else min(p.size, DOCUMENT_FIRST_GET_BYTES) for p in verified],
        window=DOCUMENT_PREFETCH,
    )
    return _json_response(_chained(documents), tag, request)


async def series_metadata(storage: Storage, study: str, series: str, request: MetadataRequest) -> ServiceResult:
    """Every instance's metadata of a series, streamed from its document."""
    _require_json(request.accept)
    # A revalidation, or a copy of the document kept by this process, is answered from the row alone;
    # otherwise the document is read at the same time as the row (one round trip, not three) and sent as
    # it is when its state names the row's ETag.
    answered_by_row = bool(request.if_none_match) or has_known_document(storage, study, series)
    opening = open_document(storage, study, series) if not answered_by_row else _nothing()
    etag, document = await asyncio.gather(row_etag(storage, study, series_row_key(series)), opening)
    if etag is None:
        raise NotFoundError("The specified series cannot be found.")
    tag = _entity_tag(etag)
    if matches_entity_tag(request.if_none_match, tag):
        return _not_modified(tag, request)
    if (known := known_document(storage, study, series, etag)) is not None:
        # Without binary attributes (known from the writes) the records are answered as kept, not scanned again.
        records = known if known_without_binary(storage, study, series) else _served(request)(known)
        return await _json_bytes_response(array_of(records), tag, request)
    if answered_by_row:  # the kept copy was for an older row (or none was revalidated): one GET may answer still
        document = await open_document(storage, study, series)
    if document is not None and is_current(document, etag):
        body = stream_opened(document)
    else:
        properties = await verified_properties(storage, study, series, etag)
        body = stream_document(storage, study, series, etag, properties)
    return _json_response(remembered(storage, study, series, etag, body), tag, request)


async def instance_metadata(storage: Storage, ids: InstanceIdentifiers, request: MetadataRequest) -> ServiceResult:
    """One instance's metadata, as an array of one."""
    _require_json(request.accept)
    row = await instance_row(storage, ids)
    stored = stored_instance(ids.study, row)
    tag = _entity_tag(stored.version)
    if matches_entity_tag(request.if_none_match, tag):
        return _not_modified(tag, request)
    data = await metadata_of_row(storage, stored, row)  # kept in the row, or (large or stored before) its blob
    if data is None:
        raise NotFoundError(INSTANCE_NOT_FOUND)  # replaced or deleted meanwhile
    return _json_response(_single(data + SEPARATOR), tag, request)


async def json_array(records: Body) -> Body:
    """Turn separator-terminated JSON records into one JSON array, streaming."""
    yield b"["
    pending = b""
    async for chunk in records:
        if not chunk:
            continue
        text = pending + chunk.replace(SEPARATOR, b",")
        pending = text[-1:]
        if len(text) > 1:
            yield text[:-1]
    if pending not in (b"", b","):  # a last record without separator
        yield pending
    yield b"]"


def array_of(records: bytes) -> bytes:
    """Turn separator-terminated JSON records held whole into one JSON array (what `json_array` streams)."""
    joined = records.replace(SEPARATOR, b",")
    end = len(joined) - 1 if joined.endswith(b",") else len(joined)
    return b"".join((b"[", memoryview(joined)[:end], b"]"))  # one copy of the records, not two


async def gzipped(body: Body) -> Body:
    """Compress a stream as gzip."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
    async for chunk in body:
        data = compressor.compress(chunk) if len(chunk) <= _INLINE_COMPRESS_BYTES \
            else await asyncio.to_thread(compressor.compress, chunk)
        if data:
            yield data
    yield compressor.flush()


def _require_json(accept: str | None) -> None:
    if not accepts(accept, DICOM_JSON):
        raise NotAcceptableError(f"The request headers are not acceptable: metadata is {DICOM_JSON}.")


def _wants_gzip(accept_encoding: str | None) -> bool:
    return any(coding.type in (GZIP, "*") and coding.quality > 0 for coding in parse_accept(accept_encoding))


def _entity_tag(row_etag: str) -> str:
    return hashlib.sha256(row_etag.encode()).hexdigest()[:32]


def _header_tag(tag: str, gzip: bool) -> str:
    # Strong ETags differ between encodings of one resource (RFC 9110 §8.8.3); `-gzip` as Apache does.
    return f'"{tag}{_GZIP_SUFFIX}"' if gzip else f'"{tag}"'


def matches_entity_tag(if_none_match: str | None, tag: str) -> bool:
    """Weak comparison of If-None-Match with the current tag, whatever the encoding it was sent with."""
    for candidate in (if_none_match or "").split(","):
        value = candidate.strip().removeprefix("W/").strip('"')
        if value == "*" or value.removesuffix(_GZIP_SUFFIX) == tag:
            return True
    return False


def _not_modified(tag: str, request: MetadataRequest) -> ServiceResult:
    headers = {"ETag": _header_tag(tag, _wants_gzip(request.accept_encoding)), "Vary": "Accept-Encoding"}
    return ServiceResult(status=HTTPStatus.NOT_MODIFIED, headers=headers)


def _json_response(records: Body, tag: str, request: MetadataRequest) -> ServiceResult:
    gzip = _wants_gzip(request.accept_encoding)
    headers = {CONTENT_TYPE: DICOM_JSON, "ETag": _header_tag(tag, gzip), "Vary": "Accept-Encoding"}
    body = json_array(_by_records(records, _served(request)))
    if gzip:
        headers["Content-Encoding"] = GZIP
        body = gzipped(body)
    return ServiceResult(headers=headers, body=body)


async def _json_bytes_response(array: bytes, tag: str, request: MetadataRequest) -> ServiceResult:
    """A JSON array held whole, answered in one piece (gzipped off the event loop when large)."""
    gzip = _wants_gzip(request.accept_encoding)
    headers = {CONTENT_TYPE: DICOM_JSON, "ETag": _header_tag(tag, gzip), "Vary": "Accept-Encoding"}
    if gzip:
        headers["Content-Encoding"] = GZIP
        array = await asyncio.to_thread(_gzip, array) if len(array) > _INLINE_COMPRESS_BYTES else _gzip(array)
    return ServiceResult(headers=headers, body=array)


def _served(request: MetadataRequest) -> Callable[[bytes], bytes]:
    """How stored records are answered: markers made URLs under the request's root, or binary attributes left out."""
    root = request.bulk_root
    return without_bulk_data if root is None else lambda records: with_urls(records, root)


async def _by_records(records: Body, transform: Callable[[bytes], bytes]) -> Body:
    """Apply ``transform`` to whole records (chunks end anywhere; a marker may straddle two of them)."""
    pending = b""
    async for chunk in records:
        data = pending + chunk if pending else chunk
        cut = data.rfind(SEPARATOR) + 1
        pending = data[cut:]
        if cut:
            yield transform(data[:cut])
    if pending:
        yield transform(pending)


def _gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
    return compressor.compress(data) + compressor.flush()


def _document_source(
    storage: Storage, study: str, series: str, etag: str, verified: BlobProperties | bytes
) -> BodySource:
    if isinstance(verified, bytes):
        return lambda: _single(verified)
    return lambda: remembered(storage, study, series, etag, stream_document(storage, study, series, etag, verified))


async def _chained(bodies: AsyncIterator[Body]) -> Body:
    async for body in bodies:
        async for chunk in body:
            yield chunk


async def _nothing() -> None:
    return None


async def _single(data: bytes) -> Body:
    yield data
