"""Thumbnails at the service level: what a repeated request reads, and their blobs going with their version."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from dicom_core.index.reads import get_instance, stored_instance
from dicom_core.model.identifiers import InstanceIdentifiers
from dicom_core.storage.blobs import (
    delete_instance_blobs,
    instance_blob_name,
    read_blob_or_none,
    thumbnail_blob_name,
    thumbnails_prefix,
)
from dicom_core.storage.clients import Storage
from dicom_core.wado import thumbnails
from tests.factories import make_dataset, to_bytes


async def _thumbnail_names(storage: Storage, ids: InstanceIdentifiers) -> list[str]:
    row = await get_instance(storage, ids)
    assert row is not None
    prefix = thumbnails_prefix(stored_instance(ids.study, row))
    return [blob.name async for blob in storage.metadata.list_blobs(name_starts_with=prefix)]


async def _stored(storage: Storage, stow_parts: Any) -> InstanceIdentifiers:
    ds = make_dataset(rows=10, columns=20)
    result = await stow_parts(storage, [to_bytes(ds)])
    assert result.status == 200
    return InstanceIdentifiers(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)


async def test_second_request_reads_one_blob_and_renders_nothing(
    storage: Storage, stow_parts: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await _stored(storage, stow_parts)
    reads: list[str] = []
    renders: list[str] = []
    read, spool = thumbnails.read_blob_or_none, thumbnails.with_spooled_file

    async def counting_read(container: Any, name: str) -> bytes | None:
        reads.append(name)
        return await read(container, name)

    async def counting_spool(*args: Any) -> Any:
        renders.append("render")
        return await spool(*args)

    monkeypatch.setattr(thumbnails, "read_blob_or_none", counting_read)
    monkeypatch.setattr(thumbnails, "with_spooled_file", counting_spool)
    first = await thumbnails.instance_thumbnail(storage, ids, None, "image/png", None)
    assert (len(reads), len(renders)) == (1, 1)
    second = await thumbnails.instance_thumbnail(storage, ids, None, "image/png", None)
    assert (len(reads), len(renders)) == (2, 1)
    assert second.body == first.body
    assert isinstance(first.body, bytes) and Image.open(io.BytesIO(first.body)).size == (128, 64)


async def test_thumbnails_are_deleted_with_their_version(storage: Storage, stow_parts: Any) -> None:
    ids = await _stored(storage, stow_parts)
    for viewport in ("32,32", "64,64"):
        await thumbnails.instance_thumbnail(storage, ids, None, "image/jpeg", viewport)
    names = await _thumbnail_names(storage, ids)
    assert len(names) == 2
    row = await get_instance(storage, ids)
    assert row is not None
    await delete_instance_blobs(storage, stored_instance(ids.study, row))
    assert await _thumbnail_names(storage, ids) == []


async def test_thumbnail_of_a_version_cleaned_up_meanwhile_is_not_kept(storage: Storage, stow_parts: Any) -> None:
    ids = await _stored(storage, stow_parts)
    row = await get_instance(storage, ids)
    assert row is not None
    stored = stored_instance(ids.study, row)
    kept, late = thumbnail_blob_name(stored, "1.8x8.png"), thumbnail_blob_name(stored, "1.9x9.png")
    await thumbnails._keep(storage, stored, kept, b"image", "image/png")  # the file is there: kept
    assert await read_blob_or_none(storage.metadata, kept) == b"image"
    await storage.files.delete_blob(instance_blob_name(stored))  # as the blob cleanup does
    await thumbnails._keep(storage, stored, late, b"image", "image/png")  # the file is gone: taken back
    assert await read_blob_or_none(storage.metadata, late) is None
