"""A whole blob read in one GET, handed on piece by piece as it arrives."""

from __future__ import annotations

import os
import uuid

import pytest

from dicom_core.model.errors import NotFoundError
from dicom_core.storage.blob_reads import read_range
from dicom_core.storage.clients import Storage
from dicom_core.storage.streamed_blob import streamed_blob


async def _upload(storage: Storage, data: bytes) -> str:
    name = f"streamed/{uuid.uuid4().hex}"
    await storage.files.upload_blob(name, data)
    return name


async def test_a_blob_arrives_whole_in_several_pieces(storage: Storage) -> None:
    data = os.urandom(1024 * 1024 + 7)
    name = await _upload(storage, data)
    pieces = [piece async for piece in streamed_blob(storage.files, name, len(data))]
    assert len(pieces) > 1  # handed on as they come, not joined first
    assert b"".join(pieces) == data


async def test_only_the_first_size_bytes_are_read(storage: Storage) -> None:
    data = os.urandom(4000)
    name = await _upload(storage, data)
    assert b"".join([piece async for piece in streamed_blob(storage.files, name, 1000)]) == data[:1000]


async def test_a_missing_blob_is_a_404(storage: Storage) -> None:
    with pytest.raises(NotFoundError):
        async for _ in streamed_blob(storage.files, f"streamed/{uuid.uuid4().hex}", 10):
            pass


async def test_a_read_stopped_early_leaves_the_client_usable(storage: Storage) -> None:
    data = os.urandom(2 * 1024 * 1024)
    name = await _upload(storage, data)
    pieces = streamed_blob(storage.files, name, len(data))
    first = await anext(pieces)
    await pieces.aclose()
    assert data.startswith(first)
    assert await read_range(storage.files, name, 10, 20) == data[10:30]
