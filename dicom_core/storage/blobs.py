"""Blob Storage layout of instances: `{study}/{series}/{instance}/{version}.dcm` plus metadata sidecars.

The sidecars of a version (in the metadata container) are its DICOM JSON, its frame index when large, and the
thumbnails made of it (`{version}.thumbnail.{variant}`, any number), all deleted with it.

Also the blob reads where a missing blob is an answer (None), not an error.
"""

from __future__ import annotations

import asyncio
import logging
from typing import BinaryIO

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobProperties, ContentSettings
from azure.storage.blob.aio import BlobClient, ContainerClient

from dicom_core.model.identifiers import StoredInstance
from dicom_core.storage.blob_puts import put_blob
from dicom_core.storage.clients import Storage

LOGGER = logging.getLogger(__name__)

DICOM_CONTENT = ContentSettings(content_type="application/dicom")
JSON_CONTENT = ContentSettings(content_type="application/json")
UPLOAD_CONCURRENCY = 4
# A file up to this size is read into memory and sent in one request (a STOW part this small is in memory already);
# a larger one is uploaded by the SDK in blocks, UPLOAD_CONCURRENCY at a time.
SINGLE_PUT_BYTES = 8 * 1024 * 1024
THUMBNAIL_MARK = ".thumbnail."


def _stem(stored: StoredInstance) -> str:
    ids = stored.ids
    return f"{ids.study}/{ids.series}/{ids.instance}/{stored.version}"


def instance_blob_name(stored: StoredInstance) -> str:
    """Name of the instance's Part-10 file in the files container."""
    return f"{_stem(stored)}.dcm"


def metadata_blob_name(stored: StoredInstance) -> str:
    """Name of the instance's DICOM JSON (no bulk data) in the metadata container."""
    return f"{_stem(stored)}.json"


def frames_blob_name(stored: StoredInstance) -> str:
    """Name of the instance's frame index when it is too large for its Table row."""
    return f"{_stem(stored)}.frames.json"


def thumbnail_blob_name(stored: StoredInstance, variant: str) -> str:
    """Name of one thumbnail of the version (``variant``: its frame, size and format) in the metadata container."""
    return f"{thumbnails_prefix(stored)}{variant}"


def thumbnails_prefix(stored: StoredInstance) -> str:
    """The start of the names of every thumbnail of the version."""
    return f"{_stem(stored)}{THUMBNAIL_MARK}"


async def put_instance_file(storage: Storage, stored: StoredInstance, file: BinaryIO, size: int) -> None:
    """Upload the Part-10 bytes exactly as received."""
    name = instance_blob_name(stored)

    async def upload() -> None:
        file.seek(0)  # a retry after a missing container must send the bytes again
        if size <= SINGLE_PUT_BYTES:
            await put_blob(storage.files, name, file.read(size), DICOM_CONTENT)
            return
        await storage.files.upload_blob(name, file, length=size, overwrite=True, content_settings=DICOM_CONTENT,
                                        max_concurrency=UPLOAD_CONCURRENCY)

    await storage.recreating_missing(upload)


async def put_json(storage: Storage, name: str, body: bytes) -> None:
    """Upload a JSON sidecar to the metadata container."""
    await storage.recreating_missing(lambda: put_blob(storage.metadata, name, body, JSON_CONTENT))


async def delete_instance_blobs(storage: Storage, stored: StoredInstance) -> None:
    """Delete every blob of one stored version; missing blobs are fine."""
    await asyncio.gather(
        _delete(storage.files.delete_blob(instance_blob_name(stored))),
        _delete(storage.metadata.delete_blob(metadata_blob_name(stored))),
        _delete(storage.metadata.delete_blob(frames_blob_name(stored))),
    )
    # Thumbnails are listed after the file is gone: one made meanwhile is either listed here or deleted by its
    # maker, which looks for the file after uploading it (thumbnails.py).
    try:
        names = [blob.name async for blob in storage.metadata.list_blobs(name_starts_with=thumbnails_prefix(stored))]
    except ResourceNotFoundError:
        return
    await asyncio.gather(*(delete_blob_if_exists(storage.metadata, name) for name in names))


async def delete_blob_if_exists(container: ContainerClient, name: str) -> None:
    """Delete one blob; a missing one is fine."""
    await _delete(container.delete_blob(name))


async def _delete(operation: object) -> None:
    try:
        await operation  # type: ignore[misc]
    except ResourceNotFoundError:
        pass


async def read_blob_or_none(container: ContainerClient, name: str) -> bytes | None:
    """Return a whole blob's bytes, or None when it (or its container) does not exist."""
    try:
        return await (await container.download_blob(name)).readall()
    except ResourceNotFoundError:
        return None


async def blob_properties_or_none(blob: BlobClient) -> BlobProperties | None:
    """Return a blob's properties, or None when it (or its container) does not exist."""
    try:
        return await blob.get_blob_properties()
    except ResourceNotFoundError:
        return None
