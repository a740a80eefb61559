"""Streaming reads from Blob Storage in bounded ranges, and a bounded window of prefetched streams.

A retrieve answer is a sequence of bodies (instances, frames, metadata documents). Each body is read in
ranges of at most `CHUNK_BYTES`, and the next bodies are read ahead concurrently into queues of at most
`depth` chunks: up to `window` bodies at once (many small instances hide the latency of as many GETs) but
no more than `budget` bytes of them (few large ones), so memory stays bounded however many bodies there
are and however large each one is.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import tempfile
import weakref
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from http import HTTPStatus
from typing import BinaryIO, cast

from azure.core.exceptions import DecodeError, HttpResponseError, IncompleteReadError, ServiceResponseError
from azure.core.rest import AsyncHttpResponse, HttpRequest
from azure.storage.blob.aio import BlobClient, ContainerClient

from dicom_core.model.errors import NotFoundError
from dicom_core.storage.client_pipelines import send
from dicom_core.storage.lru_cache import LruCache

# Larger ranges mean fewer (billed) GETs; 8 MB measured twice as fast as 4 MB against Azurite.
CHUNK_BYTES = 8 * 1024 * 1024
# Bodies read at once by a multipart answer (the one being sent included), the memory they may hold
# together, and the chunks queued per body.
PREFETCH_WINDOW = 16
PREFETCH_BUDGET_BYTES = 48 * 1024 * 1024
PREFETCH_DEPTH = 1
# Whole files spooled for transcoding or rendering stay in memory up to this size, then go to disk.
SPOOL_MEMORY_BYTES = 8 * 1024 * 1024
# Reads of a local (spooled) file: each read allocates its chunk, and an 8 MB one took 5 ms of page faults
# where 1 MB reads of the same 4 MB took 0.4 ms in all (measured).
FILE_CHUNK_BYTES = 1024 * 1024

# Blob clients kept per container, for the blobs read again and again (frames of the instances being viewed):
# making one (its pipeline of policies) took 0.25 ms, more CPU than the rest of a frame's read in this
# process, and each holds ~31 KB; a container's blob clients share its connections.
BLOB_CLIENTS = 64
# Ranged GETs sent for one read whose body breaks off part-way (the SDK's downloader sends three).
BODY_ATTEMPTS = 3

Body = AsyncGenerator[bytes, None]  # closed (aclose) when a reader stops early
BodySource = Callable[[], Body]


_blob_clients: weakref.WeakKeyDictionary[ContainerClient, LruCache[str, BlobClient]] = weakref.WeakKeyDictionary()


def blob_client(container: ContainerClient, name: str) -> BlobClient:
    """The client of one blob of ``container``, made once and kept for the next reads of it."""
    clients = _blob_clients.get(container)
    if clients is None:
        clients = _blob_clients[container] = LruCache(BLOB_CLIENTS)
    if (client := clients.get(name)) is None:
        client = container.get_blob_client(name)
        clients.put(name, client)
    return client


async def ranged_get(container: ContainerClient, name: str, offset: int, length: int) -> Body:
    """Send one ranged GET of ``length`` bytes from ``offset``; its body's pieces as they arrive (404: no blob).

    Sent through the blob client's own pipeline (its credential, retries and logging), not `download_blob`: the
    downloader that builds and the generated operation's parsing of every response header cost a 512 KB read
    a third of its CPU (measured).
    """
    client = blob_client(container, name)
    request = HttpRequest("GET", client.url, headers={"x-ms-range": f"bytes={offset}-{offset + length - 1}",
                                                      "x-ms-version": client.api_version})
    response = await send(client, request, stream=True)
    if response.status_code in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
        return _pieces(response)
    await response.read()  # the connection goes back to the pool
    if response.status_code == HTTPStatus.NOT_FOUND:
        raise NotFoundError(f"The stored file {name} is missing.")
    raise HttpResponseError(response=response)


async def _pieces(response: AsyncHttpResponse) -> Body:
    """The body of ``response`` as it arrives; closed early (aclose, cancelled), its connection is dropped."""
    try:
        async for piece in response.iter_bytes():
            yield piece
    finally:
        await response.close()  # after the whole body, the connection is back in the pool already


async def read_range(container: ContainerClient, name: str, offset: int, length: int) -> bytes:
    """Return ``length`` bytes of a blob from ``offset`` (one GET, sent again if its body breaks off); 404 if gone."""
    attempts = 1
    while True:
        pieces = await ranged_get(container, name, offset, length)
        try:
            return b"".join([piece async for piece in pieces])
        except (IncompleteReadError, ServiceResponseError, DecodeError):
            if attempts == BODY_ATTEMPTS:
                raise
            attempts += 1


async def stream_range(
    container: ContainerClient, name: str, offset: int, length: int, *, chunk_bytes: int = CHUNK_BYTES
) -> Body:
    """Yield ``length`` bytes of a blob from ``offset``, one ranged GET of at most ``chunk_bytes`` at a time."""
    end = offset + length
    while offset < end:
        size = min(chunk_bytes, end - offset)
        yield await read_range(container, name, offset, size)
        offset += size


async def read_spanned(container: ContainerClient, name: str, ranges: Sequence[tuple[int, int]]) -> Body:
    """Yield the bytes of each of ``ranges`` (in file order, close together) from one ranged GET of their span."""
    if not ranges:
        return
    start = ranges[0][0]
    span = await read_range(container, name, start, ranges[-1][0] + ranges[-1][1] - start)
    for offset, length in ranges:
        yield span[offset - start : offset - start + length]


async def stream_ranges(container: ContainerClient, name: str, ranges: Iterable[tuple[int, int]]) -> Body:
    """Yield the bytes of each of ``ranges`` in turn, each in bounded ranged GETs (`stream_range`)."""
    for offset, length in ranges:
        async for chunk in stream_range(container, name, offset, length):
            yield chunk


async def stream_blob(container: ContainerClient, name: str, size: int) -> Body:
    """Yield a whole blob of known ``size`` in bounded ranges."""
    async for chunk in stream_range(container, name, 0, size):
        yield chunk


async def spool_blob(container: ContainerClient, name: str, size: int) -> BinaryIO:
    """Download a whole blob into a temporary file (in memory while small), positioned at 0."""
    if 0 < size <= min(SPOOL_MEMORY_BYTES, CHUNK_BYTES):
        # One read, kept as it came: BytesIO shares the bytes until written to (writing them was a copy).
        return io.BytesIO(await read_range(container, name, 0, size))
    spool = cast(BinaryIO, tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES))
    try:
        async for chunk in stream_blob(container, name, size):
            spool.write(chunk)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


async def stream_file(file: BinaryIO, *, chunk_bytes: int = FILE_CHUNK_BYTES) -> Body:
    """Yield a local (spooled) file from its current position in chunks, closing it at the end."""
    try:
        while chunk := await asyncio.to_thread(file.read, chunk_bytes):
            yield chunk
    finally:
        file.close()


_END = object()


class _Pump:
    """Runs one body's source in a task, into a queue of at most ``depth`` chunks."""

    def __init__(self, source: BodySource, depth: int, on_first_chunk: Callable[[], None] | None = None) -> None:
        self._queue: asyncio.Queue[object] = asyncio.Queue(depth)
        self._error: BaseException | None = None
        self._on_first_chunk = on_first_chunk
        self.task = asyncio.create_task(self._run(source))

    async def _run(self, source: BodySource) -> None:
        try:
            async with contextlib.aclosing(source()) as body:  # closed at once, also when cancelled
                async for chunk in body:
                    await self._queue.put(chunk)
                    self._first_chunk_arrived()
        except Exception as exc:  # handed to the consumer, which raises it where the body is read
            self._error = exc
        self._first_chunk_arrived()
        await self._queue.put(_END)

    def _first_chunk_arrived(self) -> None:
        if self._on_first_chunk is not None:
            callback, self._on_first_chunk = self._on_first_chunk, None
            callback()

    async def drain(self) -> Body:
        """Yield the body's chunks in order; raise the source's error where it happened."""
        while (chunk := await self._queue.get()) is not _END:
            yield cast(bytes, chunk)
        if self._error is not None:
            raise self._error


def held_bytes(size: int, depth: int = PREFETCH_DEPTH) -> int:
    """The most memory a prefetched body of ``size`` bytes holds: its queued chunks and the one being read."""
    return min(size, (depth + 1) * CHUNK_BYTES)


async def prefetched(
    sources: Iterable[BodySource], *, costs: Iterable[int] | None = None, window: int = PREFETCH_WINDOW,
    depth: int = PREFETCH_DEPTH, budget: int = PREFETCH_BUDGET_BYTES,
    more: AsyncIterator[list[tuple[BodySource, int]]] | None = None, ramp: bool = True,
) -> AsyncGenerator[Body, None]:
    """Yield the bodies of ``sources`` in order while the next are read ahead, ``window`` and ``budget`` permitting.

    ``costs`` are the bytes each body may hold while read ahead (default: the most any body holds).
    ``more`` yields further (source, cost) batches, fetched while the first ones are read, sent after them.
    With ``ramp``, the read-ahead starts once the first body's first chunk has arrived.
    """
    waiting = deque(zip(sources, costs if costs is not None else itertools.repeat(held_bytes(2**63, depth)),
                        strict=False))
    running: deque[tuple[_Pump, int]] = deque()
    batches = _Batches(more)
    # The first body is read alone until its first chunk arrives: the answer's first bytes come as soon as
    # one GET allows, not when the first of `window` GETs sharing the connection to storage does.
    opened = 1 if ramp else window

    def open_window() -> None:
        nonlocal opened
        opened = window
        start()

    def refill() -> None:
        waiting.extend(batches.ready())
        start()

    def start() -> None:
        held = sum(cost for _, cost in running)
        # One body always runs, whatever it costs; the others start while they fit.
        while waiting and len(running) < opened and (not running or held + waiting[0][1] <= budget):
            source, cost = waiting.popleft()
            running.append((_Pump(source, depth, open_window if opened < window else None), cost))
            held += cost

    try:
        while True:
            if not running and not waiting:
                waiting.extend(await batches.next())
                if not waiting:
                    break
            refill()
            pump = running[0][0]  # stays in the window while it is sent
            yield pump.drain()
            if not pump.task.done():
                pump.task.cancel()  # the consumer stopped before the body's end
            await asyncio.gather(pump.task, return_exceptions=True)
            running.popleft()
            refill()
    finally:
        for pump, _ in running:
            pump.task.cancel()
        await asyncio.gather(*(pump.task for pump, _ in running), return_exceptions=True)
        await batches.close()


class _Batches:
    """Further (source, cost) batches, the next one fetched in a task while the earlier ones are read."""

    def __init__(self, more: AsyncIterator[list[tuple[BodySource, int]]] | None) -> None:
        self._more = more
        self._next: asyncio.Task[list[tuple[BodySource, int]] | None] | None = \
            asyncio.ensure_future(self._fetch()) if more is not None else None

    async def _fetch(self) -> list[tuple[BodySource, int]] | None:
        assert self._more is not None
        return await anext(self._more, None)

    def ready(self) -> list[tuple[BodySource, int]]:
        """The next batch if it has arrived (then the one after is fetched), else nothing."""
        if self._next is None or not self._next.done():
            return []
        batch = self._next.result()  # a failed fetch raises here, cutting the answer off
        self._next = asyncio.ensure_future(self._fetch()) if batch is not None else None
        return batch or []

    async def next(self) -> list[tuple[BodySource, int]]:
        """Wait for the next batch; nothing once they are all read."""
        while self._next is not None:
            await asyncio.wait([self._next])
            if batch := self.ready():
                return batch
        return []

    async def close(self) -> None:
        """Stop fetching."""
        if self._next is not None:
            self._next.cancel()
            await asyncio.gather(self._next, return_exceptions=True)
        if self._more is not None and hasattr(self._more, "aclose"):
            await self._more.aclose()
