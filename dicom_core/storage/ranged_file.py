"""A stored blob as a read-only, seekable file for parsing code that runs in a thread.

Reads fetch whole blocks of `BLOCK_BYTES` with one ranged GET each, run on the event loop that owns the storage
clients; a parser that seeks past large values (pydicom with `defer_size`) reads only the blocks holding the
elements it parses, never the whole file.
"""

from __future__ import annotations

import asyncio
import io
from collections import OrderedDict
from typing import TYPE_CHECKING

from azure.storage.blob.aio import ContainerClient

from dicom_core.storage.blob_reads import read_range

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

BLOCK_BYTES = 64 * 1024
_KEPT_BLOCKS = 8


class RangedBlobFile(io.RawIOBase):
    """A blob of known ``size`` read by ranged GETs on ``loop`` (call it from another thread, never the loop's)."""

    def __init__(self, container: ContainerClient, name: str, size: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._container, self._name, self._size, self._loop = container, name, size, loop
        self._position = 0
        self.name = name  # pydicom records it as the dataset's filename
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self.requests = 0  # ranged GETs sent

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        count = max(0, min(len(view), self._size - self._position))
        written = 0
        while written < count:
            index, within = divmod(self._position + written, BLOCK_BYTES)
            block = self._block(index)
            piece = block[within : within + count - written]
            view[written : written + len(piece)] = piece
            written += len(piece)
        self._position += written
        return written

    def _block(self, index: int) -> bytes:
        block = self._blocks.get(index)
        if block is None:
            start = index * BLOCK_BYTES
            length = min(BLOCK_BYTES, self._size - start)
            future = asyncio.run_coroutine_threadsafe(read_range(self._container, self._name, start, length),
                                                      self._loop)
            block = future.result()
            self.requests += 1
            self._blocks[index] = block
            if len(self._blocks) > _KEPT_BLOCKS:
                self._blocks.popitem(last=False)
        self._blocks.move_to_end(index)
        return block
