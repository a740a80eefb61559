"""PS3.18 bulk data and pixel data of a study, series or instance: one multipart/related answer.

`…/bulkdata` answers every value its metadata names by BulkDataURI, `…/pixeldata` the pixel data of each instance
(the top-level PixelData, its video stream for a video). The BulkDataURIs come from the same records metadata is
answered from (the series documents, the instance row), so no file is parsed; each part is one ranged blob read of
a version those records name, with Content-Location set to its BulkDataURI.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dicom_core.model.bulk_data import OCTET_STREAM, BulkLocation, parse_uri_path
from dicom_core.model.errors import NotAcceptableError, NotFoundError
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance
from dicom_core.model.tags import PIXEL_DATA
from dicom_core.storage.blob_reads import Body, BodySource, held_bytes, stream_ranges
from dicom_core.storage.blobs import instance_blob_name
from dicom_core.storage.clients import Storage
from dicom_core.wado.bulkdata import negotiated
from dicom_core.wado.metadata import MetadataRequest, instance_metadata, series_metadata, study_metadata
from dicom_core.wado.response import CONTENT_TYPE, PartSource, multipart_response
from dicom_core.wire.service_result import ServiceResult

CONTENT_LOCATION = "Content-Location"
_PIXEL_DATA_KEY = f"{PIXEL_DATA:08X}"


@dataclass(frozen=True)
class Scope:
    """A study, a series of it, or an instance of that series (the UIDs below the scope are None)."""

    study: str
    series: str | None = None
    instance: str | None = None


@dataclass(frozen=True)
class BulkPart:
    """One value of the answer: its BulkDataURI, the version holding it and where."""

    uri: str
    stored: StoredInstance
    location: BulkLocation


async def scope_bulk_data(
    storage: Storage, scope: Scope, root: str, accept: str | None, *, pixel_data_only: bool = False
) -> ServiceResult:
    """Every bulk data value (or each instance's pixel data) of ``scope``, multipart/related, in the types Accept
    allows (a value of a type it does not allow is left out); 404 if there is none, 406 if Accept allows none."""
    records = await _records(storage, scope, root)
    parts = [part for record in records for part in _parts(record, root, pixel_data_only)]
    if not parts:
        raise NotFoundError(f"The {_level(scope)} has no {'pixel data' if pixel_data_only else 'bulk data'}.")
    sources = []
    media_types = set()
    refused: NotAcceptableError | None = None
    for part in parts:
        try:
            media_type, _ = negotiated(accept, part.location.media_type)
        except NotAcceptableError as exc:
            refused = exc
            continue
        media_types.add(media_type)
        headers = {CONTENT_TYPE: media_type, CONTENT_LOCATION: part.uri}
        sources.append(PartSource(headers, _reader(storage, part), held_bytes(part.location.length)))
    if not sources and refused is not None:
        raise refused
    payload = media_types.pop() if len(media_types) == 1 else OCTET_STREAM
    return multipart_response(payload, sources)


def bulk_parts(record: dict[str, Any], root: str) -> Iterator[BulkPart]:
    """The values one instance's DICOM JSON (URIs under ``root``) names by BulkDataURI, inside sequences too."""
    for value in record.values():
        if not isinstance(value, dict):
            continue
        uri = value.get("BulkDataURI")
        if isinstance(uri, str) and (part := _part(uri, root)) is not None:
            yield part
        for item in value.get("Value") or () if value.get("vr") == "SQ" else ():
            if isinstance(item, dict):
                yield from bulk_parts(item, root)


def _parts(record: dict[str, Any], root: str, pixel_data_only: bool) -> Iterator[BulkPart]:
    if not pixel_data_only:
        yield from bulk_parts(record, root)
        return
    uri = (record.get(_PIXEL_DATA_KEY) or {}).get("BulkDataURI")
    if isinstance(uri, str) and (part := _part(uri, root)) is not None:
        yield part


def _part(uri: str, root: str) -> BulkPart | None:
    named = parse_uri_path(uri.removeprefix(root + "/")) if uri.startswith(root + "/") else None
    return BulkPart(uri, *named) if named is not None else None


async def _records(storage: Storage, scope: Scope, root: str) -> list[dict[str, Any]]:
    request = MetadataRequest(bulk_root=root)
    if scope.series is None:
        result = await study_metadata(storage, scope.study, request)
    elif scope.instance is None:
        result = await series_metadata(storage, scope.study, scope.series, request)
    else:
        ids = InstanceIdentifiers(scope.study, scope.series, scope.instance)
        result = await instance_metadata(storage, ids, request)
    body = result.body
    data = body if isinstance(body, bytes) else b"".join([chunk async for chunk in body]) if body else b"[]"
    records: list[dict[str, Any]] = json.loads(data)
    return records


def _reader(storage: Storage, part: BulkPart) -> BodySource:
    blob = instance_blob_name(part.stored)

    def read() -> Body:
        return stream_ranges(storage.files, blob, part.location.file_ranges(0, part.location.length))
    return read


def _level(scope: Scope) -> str:
    return "study" if scope.series is None else "series" if scope.instance is None else "instance"
