"""Blob reads where a missing blob is an answer, against Azurite."""

from __future__ import annotations

import uuid

from dicom_core.storage.blobs import blob_properties_or_none, read_blob_or_none
from dicom_core.storage.clients import Storage


async def test_a_blob_is_read_whole_and_a_missing_one_is_none(storage: Storage) -> None:
    name = f"blobs-{uuid.uuid4().hex}"
    await storage.metadata.upload_blob(name, b"{}\n")

    assert await read_blob_or_none(storage.metadata, name) == b"{}\n"
    assert await read_blob_or_none(storage.metadata, f"{name}-missing") is None


async def test_a_missing_blob_has_no_properties(storage: Storage) -> None:
    name = f"blobs-{uuid.uuid4().hex}"
    await storage.metadata.upload_blob(name, b"data")

    properties = await blob_properties_or_none(storage.metadata.get_blob_client(name))

    assert properties is not None and properties.size == 4
    assert await blob_properties_or_none(storage.metadata.get_blob_client(f"{name}-missing")) is None
