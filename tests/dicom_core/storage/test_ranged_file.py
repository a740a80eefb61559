"""A stored blob read as a seekable file from a thread: exact bytes, whole blocks, only the blocks touched."""

from __future__ import annotations

import asyncio
import io
import os
import uuid

from dicom_core.storage.clients import Storage
from dicom_core.storage.ranged_file import BLOCK_BYTES, RangedBlobFile


async def _file(storage: Storage, data: bytes) -> RangedBlobFile:
    name = f"ranged/{uuid.uuid4().hex}"
    await storage.files.upload_blob(name, data, overwrite=True)
    return RangedBlobFile(storage.files, name, len(data), asyncio.get_running_loop())


async def test_reads_and_seeks_answer_the_blob_bytes(storage: Storage) -> None:
    data = os.urandom(3 * BLOCK_BYTES + 123)
    file = await _file(storage, data)

    def read() -> list[bytes]:
        pieces = [file.read(10)]
        file.seek(BLOCK_BYTES - 5)
        pieces.append(file.read(10))  # across a block boundary
        file.seek(-7, io.SEEK_END)
        pieces.append(file.read(100))  # the end: fewer bytes than asked
        pieces.append(file.read(1))
        return pieces

    assert await asyncio.to_thread(read) == [data[:10], data[BLOCK_BYTES - 5 : BLOCK_BYTES + 5], data[-7:], b""]


async def test_only_the_blocks_read_are_fetched(storage: Storage) -> None:
    file = await _file(storage, bytes(10 * BLOCK_BYTES))

    def read() -> None:
        file.read(100)
        file.seek(9 * BLOCK_BYTES)  # past eight blocks never read
        file.read(100)
        file.seek(0)
        file.read(100)  # kept

    await asyncio.to_thread(read)
    assert file.requests == 2
