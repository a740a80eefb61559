"""Reads of one stored instance that retrieve, frames, rendered and metadata share.

Its row (or the 404), the limit on files read whole, and the whole file spooled for work in a thread
(transcoding, decoding frames, rendering).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import BinaryIO, TypeVar

from azure.data.tables import TableEntity

from dicom_core.index.reads import get_instance
from dicom_core.index.rows import instance_row_key
from dicom_core.model.errors import NotAcceptableError, NotFoundError
from dicom_core.model.frames import FrameIndex
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance
from dicom_core.storage.blob_reads import spool_blob
from dicom_core.storage.blobs import instance_blob_name
from dicom_core.storage.clients import Storage
from dicom_core.storage.tables import read_properties

INSTANCE_NOT_FOUND = "The specified instance cannot be found."

T = TypeVar("T")


async def instance_row(storage: Storage, ids: InstanceIdentifiers) -> TableEntity:
    """The instance's row; a 404 when it is not stored."""
    row = await get_instance(storage, ids)
    if row is None:
        raise NotFoundError(INSTANCE_NOT_FOUND)
    return row


async def instance_version(storage: Storage, ids: InstanceIdentifiers) -> str:
    """The version of the instance's stored file, read alone (a lean point read); a 404 when it is not stored."""
    row = await read_properties(storage.studies, ids.study, instance_row_key(ids.series, ids.instance), ["Version"])
    if row is None:
        raise NotFoundError(INSTANCE_NOT_FOUND)
    return str(row["Version"])


def row_frame_index(row: TableEntity) -> FrameIndex | None:
    """The frame index kept in the instance row, if it is there (large ones are kept in a blob of their own)."""
    text = row.get("FrameIndex") or ""
    return FrameIndex.from_json(json.loads(text)) if text else None


def require_transcodable_size(storage: Storage, size: int, doing: str) -> None:
    """Raise a 406 when a file is over the configured limit of files read whole (``doing``: what to them)."""
    limit = storage.settings.max_transcode_bytes
    if size > limit:
        raise NotAcceptableError(
            f"The instance is {size} bytes, over the limit of {limit} bytes that are {doing}: "
            "retrieve it with transfer-syntax=* to get it as stored."
        )


async def with_spooled_file(storage: Storage, stored: StoredInstance, size: int, work: Callable[[BinaryIO], T]) -> T:
    """Spool the stored file of ``stored`` and run ``work`` on it in a thread; the spooled copy is closed after."""
    source = await spool_blob(storage.files, instance_blob_name(stored), size)
    try:
        return await asyncio.to_thread(work, source)
    finally:
        source.close()
