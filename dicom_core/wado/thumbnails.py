"""WADO-RS thumbnails (PS3.18 §10.4.1): a small rendered image that represents a study, series, instance or frame.

The representative image is the middle one: a study's middle series (by SeriesNumber), a series' middle image
instance (by InstanceNumber), a multi-frame instance's middle frame. A thumbnail fits in 128×128 unless
`viewport=vw,vh` says otherwise, and is JPEG unless Accept asks for PNG or GIF. Each is kept as a sidecar
blob of the instance version it was made of (`storage/blobs.py`), so asking again costs the row lookups and
one blob read, and a replaced or deleted version's thumbnails go with its blobs in the blob cleanup.

A process also keeps the thumbnails it answered for studies (32 MB), each under the study row ETag read before
choosing its image (every store, upsert and delete in the study changes that ETag): asking again reads the study
row alone, one round trip, and answers the kept image while the ETag is unchanged. Another process reads the
cached blob after the rows, as for series.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass

from azure.data.tables import TableEntity
from azure.storage.blob import ContentSettings
from pydicom.datadict import tag_for_keyword

from dicom_core.index.reads import get_row, instance_rows, series_rows, stored_instance
from dicom_core.index.rows import STUDY_ROW
from dicom_core.model.errors import BadRequestError, NotAcceptableError, NotFoundError
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance
from dicom_core.storage.blobs import (
    blob_properties_or_none,
    delete_blob_if_exists,
    instance_blob_name,
    read_blob_or_none,
    thumbnail_blob_name,
)
from dicom_core.storage.clients import Storage
from dicom_core.storage.lru_cache import LruCache
from dicom_core.storage.tables import etag_of
from dicom_core.wado.frames import NUMBER_OF_FRAMES, ROWS, parse_frame_list
from dicom_core.wado.instance_reads import instance_row, require_transcodable_size, with_spooled_file
from dicom_core.wado.negotiation import negotiate_rendered
from dicom_core.wado.rendering import GIF, IMAGE_MEDIA_TYPES, JPEG, PNG, render_frame
from dicom_core.wado.rendering_parameters import RenderingParameters, Viewport, parse_viewport
from dicom_core.wado.response import CONTENT_TYPE
from dicom_core.wire.service_result import ServiceResult

DEFAULT_SIZE = 128
THUMBNAIL_QUALITY = 90
THUMBNAIL_MEDIA_TYPES = IMAGE_MEDIA_TYPES  # JPEG first: the default
_EXTENSIONS = {JPEG: "jpg", PNG: "png", GIF: "gif"}
_INSTANCE_SELECT = ["Version", "Size", "Attributes"]
# DICOM JSON keys of the row attributes that order series and instances.
_SERIES_NUMBER = f"{tag_for_keyword('SeriesNumber'):08X}"
_INSTANCE_NUMBER = f"{tag_for_keyword('InstanceNumber'):08X}"
MAX_STUDY_THUMBNAILS = 4096
MAX_STUDY_THUMBNAIL_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class StudyThumbnail:
    """A study's thumbnail as this process answered it, and the study row ETag read before choosing it."""

    study_etag: str
    image: bytes


# (metadata container, study, variant) -> the study's thumbnail
_study_choices: LruCache[tuple[str, str, str], StudyThumbnail] = LruCache(MAX_STUDY_THUMBNAILS,
                                                                          MAX_STUDY_THUMBNAIL_BYTES)


async def study_thumbnail(storage: Storage, study: str, accept: str | None, viewport: str | None) -> ServiceResult:
    """The thumbnail of a study: its middle series' thumbnail, or the nearest series' that has images."""
    media_type, size = _negotiate(accept, viewport)
    key = (storage.metadata.url, study, _variant(None, size, media_type))
    row = await get_row(storage, study, STUDY_ROW, select=["RowKey"])  # its ETag is what counts
    chosen = _study_choices.get(key)
    if row is not None and chosen is not None and etag_of(row) == chosen.study_etag:
        return ServiceResult(headers={CONTENT_TYPE: media_type}, body=chosen.image)
    series = sorted(await series_rows(storage, study, select=["Attributes"]), key=_order(_SERIES_NUMBER))
    if row is None or not series:
        raise NotFoundError("The specified study cannot be found.")
    middle = (len(series) - 1) // 2
    for position in sorted(range(len(series)), key=lambda position: abs(position - middle)):
        uid = str(series[position]["RowKey"]).split("|", 1)[1]
        if (image := _middle_image(await instance_rows(storage, study, uid, select=_INSTANCE_SELECT))) is not None:
            answer = await _thumbnail(storage, study, image, None, media_type, size)
            if isinstance(answer.body, bytes):
                _study_choices.put(key, StudyThumbnail(etag_of(row), answer.body), len(answer.body))
            return answer
    raise NotAcceptableError("No instance of the study has pixel data to show in a thumbnail.")


async def series_thumbnail(
    storage: Storage, study: str, series: str, accept: str | None, viewport: str | None
) -> ServiceResult:
    """The thumbnail of a series: its middle image instance's."""
    media_type, size = _negotiate(accept, viewport)
    rows = await instance_rows(storage, study, series, select=_INSTANCE_SELECT)
    if not rows:
        raise NotFoundError("The specified series cannot be found.")
    image = _middle_image(rows)
    if image is None:
        raise NotAcceptableError("No instance of the series has pixel data to show in a thumbnail.")
    return await _thumbnail(storage, study, image, None, media_type, size)


async def instance_thumbnail(
    storage: Storage, ids: InstanceIdentifiers, frame: str | None, accept: str | None, viewport: str | None
) -> ServiceResult:
    """The thumbnail of an instance (its middle frame) or of one of its frames (1-based)."""
    if frame is not None and "," in frame:
        raise BadRequestError("A thumbnail shows one frame: ask for one.")
    number = parse_frame_list(frame)[0] if frame is not None else None
    media_type, size = _negotiate(accept, viewport)
    row = await instance_row(storage, ids)
    if ROWS not in _attributes(row):
        raise NotAcceptableError("The instance has no pixel data to show in a thumbnail.")
    if number is not None and number > _frames(row):
        raise NotFoundError(f"The specified frame cannot be found: the instance has {_frames(row)} frame(s), "
                            f"not {number}.")
    return await _thumbnail(storage, ids.study, row, number, media_type, size)


def _negotiate(accept: str | None, viewport: str | None) -> tuple[str, Viewport]:
    """The media type and size of a thumbnail request: its parameter checked first (400), then Accept (406)."""
    size = parse_viewport(viewport) or Viewport(DEFAULT_SIZE, DEFAULT_SIZE)
    if size.region is not None:
        raise BadRequestError("A thumbnail's viewport is its size alone: vw,vh.")
    return negotiate_rendered(accept, THUMBNAIL_MEDIA_TYPES), size


async def _thumbnail(
    storage: Storage, study: str, row: TableEntity, frame: int | None, media_type: str, size: Viewport
) -> ServiceResult:
    """The cached thumbnail of the row's version, or a new one rendered and cached."""
    stored = stored_instance(study, row)
    number = frame if frame is not None else _middle_frame(row)
    name = thumbnail_blob_name(stored, _variant(number, size, media_type))
    headers = {CONTENT_TYPE: media_type}
    if (cached := await read_blob_or_none(storage.metadata, name)) is not None:
        return ServiceResult(headers=headers, body=cached)
    row_size = int(row["Size"])
    require_transcodable_size(storage, row_size, "rendered")
    parameters = RenderingParameters(quality=THUMBNAIL_QUALITY, viewport=size)
    render = functools.partial(render_frame, frame=number, media_type=media_type, parameters=parameters)
    try:
        image = await with_spooled_file(storage, stored, row_size, render)
    except IndexError as exc:  # the file has fewer frames than its row said
        raise NotFoundError(f"The specified frame cannot be found: {exc}") from exc
    await _keep(storage, stored, name, image, media_type)
    return ServiceResult(headers=headers, body=image)


async def _keep(storage: Storage, stored: StoredInstance, name: str, image: bytes, media_type: str) -> None:
    """Cache a thumbnail; take it back if its version was cleaned up meanwhile (then nothing would delete it)."""

    async def upload() -> None:
        await storage.metadata.upload_blob(name, image, overwrite=True,
                                           content_settings=ContentSettings(content_type=media_type))

    await storage.recreating_missing(upload)
    if await blob_properties_or_none(storage.files.get_blob_client(instance_blob_name(stored))) is None:
        await delete_blob_if_exists(storage.metadata, name)


def _variant(frame: int | None, size: Viewport, media_type: str) -> str:
    """The name of one thumbnail among those of a version (a study's choice: without its frame)."""
    return f"{frame if frame is not None else 'study'}.{size.width}x{size.height}.{_EXTENSIONS[media_type]}"


def _middle_frame(row: TableEntity) -> int:
    return (_frames(row) - 1) // 2 + 1


def _middle_image(rows: Sequence[TableEntity]) -> TableEntity | None:
    """The middle instance by InstanceNumber among those with pixel data; None when none has."""
    images = sorted((row for row in rows if ROWS in _attributes(row)), key=_order(_INSTANCE_NUMBER))
    return images[(len(images) - 1) // 2] if images else None


def _order(key: str) -> functools.partial[tuple[int, float, str]]:
    return functools.partial(_position, key)


def _position(key: str, row: TableEntity) -> tuple[int, float, str]:
    """Where a row sorts: by the number under ``key`` (rows without one last), then by RowKey."""
    number = _number(row, key)
    return (0, number, str(row["RowKey"])) if number is not None else (1, 0.0, str(row["RowKey"]))


def _frames(row: TableEntity) -> int:
    return max(1, int(_number(row, NUMBER_OF_FRAMES) or 1))


def _number(row: TableEntity, key: str) -> float | None:
    """The first value of the row attribute ``key`` as a number, or None."""
    values = _attributes(row).get(key, {}).get("Value") or [None]
    try:
        return float(str(values[0])) if values[0] is not None else None
    except ValueError:
        return None


def _attributes(row: TableEntity) -> dict[str, dict[str, list[object]]]:
    attributes: dict[str, dict[str, list[object]]] = json.loads(row.get("Attributes") or "{}")
    return attributes
