"""A whole blob read in one GET whose body is handed on as it arrives, not when all of it has.

The SDK's `download_blob` reads its first GET (up to 32 MB) whole before it returns; work that can start on
the first bytes (decoding the first frame of a file while the last ones are still on the wire) uses this.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from azure.storage.blob.aio import ContainerClient

from dicom_core.storage.blob_reads import Body, ranged_get

# Chunks queued ahead of the reader: the SDK hands on 256 KB pieces.
READ_AHEAD_CHUNKS = 64


async def streamed_blob(container: ContainerClient, name: str, size: int) -> Body:
    """Yield the first ``size`` bytes of a blob from one GET, read ahead in a task while the caller works."""
    pieces = await ranged_get(container, name, 0, size)
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(READ_AHEAD_CHUNKS)
    reader = asyncio.create_task(_read_into(pieces, queue))
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        if not reader.done():
            reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await pieces.aclose()  # stopped early: the connection is dropped, not handed back half read


async def _read_into(pieces: AsyncIterator[bytes], queue: asyncio.Queue[bytes | BaseException | None]) -> None:
    try:
        async for piece in pieces:
            await queue.put(piece)
    except Exception as exc:  # handed to the consumer, which raises it where the body is read
        await queue.put(exc)
        return
    await queue.put(None)

