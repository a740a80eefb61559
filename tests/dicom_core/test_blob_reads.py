"""Ranged blob reads against Azurite, and the bounded prefetch window."""

from __future__ import annotations

import asyncio
import os

import pytest

from dicom_core.blob_reads import Body, BodySource, prefetched, spool_blob, stream_range
from dicom_core.errors import NotFoundError
from dicom_core.storage import Storage


class _Sources:
    """Sources of ``chunks`` chunks each that record how many run and how far ahead they are read."""

    def __init__(self, count: int, chunks: int) -> None:
        self.count, self.chunks = count, chunks
        self.running = 0
        self.most_running = 0
        self.produced = [0] * count
        self.finished: list[int] = []

    def source(self, index: int) -> BodySource:
        async def body() -> Body:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            try:
                for chunk in range(self.chunks):
                    self.produced[index] += 1
                    yield f"{index}:{chunk};".encode()
            finally:
                self.running -= 1
                self.finished.append(index)

        return body

    def all(self) -> list[BodySource]:
        return [self.source(i) for i in range(self.count)]


async def _drain(bodies: object) -> list[bytes]:
    return [b"".join([chunk async for chunk in body]) async for body in bodies]  # type: ignore[attr-defined]


async def test_prefetched_bodies_come_in_order_and_whole() -> None:
    sources = _Sources(count=20, chunks=5)
    bodies = await _drain(prefetched(sources.all(), costs=[1] * 20, window=4, depth=2))
    assert bodies == [b"".join(f"{i}:{c};".encode() for c in range(5)) for i in range(20)]


async def test_prefetch_runs_at_most_window_sources_at_once() -> None:
    sources = _Sources(count=30, chunks=6)
    await _drain(prefetched(sources.all(), costs=[1] * 30, window=3, depth=1))
    assert sources.most_running == 3
    assert sorted(sources.finished) == list(range(30))


async def test_prefetch_keeps_the_bodies_read_at_once_within_the_budget() -> None:
    sources = _Sources(count=12, chunks=4)
    await _drain(prefetched(sources.all(), costs=[10] * 12, window=16, depth=1, budget=30))
    assert sources.most_running == 3


async def test_a_body_over_the_budget_is_read_alone() -> None:
    sources = _Sources(count=4, chunks=3)
    bodies = await _drain(prefetched(sources.all(), costs=[100, 5, 100, 5], window=16, depth=1, budget=30))
    assert len(bodies) == 4
    assert sources.most_running == 1  # nothing fits beside a large body


async def test_prefetch_reads_at_most_depth_chunks_ahead() -> None:
    sources = _Sources(count=3, chunks=50)
    bodies = prefetched(sources.all(), costs=[1] * 3, window=3, depth=2)
    first = await anext(bodies)
    for _ in range(20):
        await asyncio.sleep(0)  # let the prefetching tasks run as far as they may
    # Each read-ahead body is blocked with `depth` chunks queued and one more in hand.
    assert sources.produced[1] <= 3 and sources.produced[2] <= 3
    assert len([chunk async for chunk in first]) == 50
    await bodies.aclose()


async def test_source_error_is_raised_where_its_body_is_read() -> None:
    async def failing() -> Body:
        yield b"first"
        raise RuntimeError("storage went away")

    bodies = prefetched([failing], window=2, depth=2)
    body = await anext(bodies)
    assert await anext(body) == b"first"
    with pytest.raises(RuntimeError, match="storage went away"):
        await anext(body)
    await bodies.aclose()


async def test_closing_early_cancels_the_read_ahead() -> None:
    sources = _Sources(count=10, chunks=100)
    bodies = prefetched(sources.all(), costs=[1] * 10, window=4, depth=1)
    await anext(bodies)
    for _ in range(10):
        await asyncio.sleep(0)  # the window's sources start and fill their queues
    assert sources.running == 4
    await bodies.aclose()
    assert sources.running == 0
    assert sorted(sources.finished) == [0, 1, 2, 3]


async def test_stream_range_reads_the_range_in_bounded_chunks(storage: Storage) -> None:
    data = os.urandom(1000)
    await storage.files.upload_blob("blob-reads/ranged", data, overwrite=True)
    chunks = [chunk async for chunk in stream_range(storage.files, "blob-reads/ranged", 100, 250, chunk_bytes=64)]
    assert [len(chunk) for chunk in chunks] == [64, 64, 64, 58]
    assert b"".join(chunks) == data[100:350]


async def test_spool_blob_holds_the_whole_blob(storage: Storage) -> None:
    data = os.urandom(5000)
    await storage.files.upload_blob("blob-reads/spooled", data, overwrite=True)
    spool = await spool_blob(storage.files, "blob-reads/spooled", len(data))
    with spool:
        assert spool.read() == data


async def test_missing_blob_is_404(storage: Storage) -> None:
    with pytest.raises(NotFoundError):
        await anext(stream_range(storage.files, "blob-reads/missing", 0, 10))
