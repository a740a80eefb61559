"""Ranged blob reads against Azurite, and the bounded prefetch window."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from dicom_core.model.errors import NotFoundError
from dicom_core.storage.blob_reads import (
    Body,
    BodySource,
    blob_client,
    prefetched,
    read_range,
    spool_blob,
    stream_range,
)
from dicom_core.storage.clients import Storage, open_storage
from tests.faults.proxy import Action, Fault


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


async def test_a_blob_client_is_made_once_per_container_and_name(storage: Storage) -> None:
    first = blob_client(storage.files, "blob-reads/kept")
    assert blob_client(storage.files, "blob-reads/kept") is first
    assert blob_client(storage.files, "blob-reads/other") is not first
    assert blob_client(storage.metadata, "blob-reads/kept").container_name == storage.metadata.container_name


async def test_a_kept_blob_client_reads_the_blob_as_it_is_now(storage: Storage) -> None:
    await storage.files.upload_blob("blob-reads/rewritten", b"first", overwrite=True)
    assert await read_range(storage.files, "blob-reads/rewritten", 0, 5) == b"first"
    await storage.files.upload_blob("blob-reads/rewritten", b"again", overwrite=True)
    assert await read_range(storage.files, "blob-reads/rewritten", 0, 5) == b"again"


async def test_spool_blob_holds_the_whole_blob(storage: Storage) -> None:
    data = os.urandom(5000)
    await storage.files.upload_blob("blob-reads/spooled", data, overwrite=True)
    spool = await spool_blob(storage.files, "blob-reads/spooled", len(data))
    with spool:
        assert spool.read() == data


async def test_missing_blob_is_404(storage: Storage) -> None:
    with pytest.raises(NotFoundError):
        await anext(stream_range(storage.files, "blob-reads/missing", 0, 10))


async def test_later_batches_come_after_the_first_sources_in_order() -> None:
    sources = _Sources(7, 2)
    every = sources.all()

    async def batches() -> AsyncIterator[list[tuple[BodySource, int]]]:
        yield [(source, 1) for source in every[2:5]]
        yield []
        yield [(source, 1) for source in every[5:]]

    bodies = await _drain(prefetched(every[:2], costs=[1, 1], window=3, depth=1, more=batches()))
    assert bodies == [f"{i}:0;{i}:1;".encode() for i in range(7)]


async def test_later_batches_alone_make_the_whole_answer() -> None:
    sources = _Sources(3, 1)

    async def batches() -> AsyncIterator[list[tuple[BodySource, int]]]:
        yield [(source, 1) for source in sources.all()]

    assert await _drain(prefetched([], more=batches())) == [b"0:0;", b"1:0;", b"2:0;"]


async def test_a_failed_batch_is_raised_after_the_bodies_before_it() -> None:
    sources = _Sources(1, 1)

    async def batches() -> AsyncIterator[list[tuple[BodySource, int]]]:
        raise RuntimeError("the rows could not be read")
        yield []

    bodies = prefetched(sources.all(), costs=[1], more=batches())
    assert b"".join([chunk async for chunk in await anext(bodies)]) == b"0:0;"
    with pytest.raises(RuntimeError, match="rows could not be read"):
        await anext(bodies)


async def test_read_ahead_starts_once_the_first_body_has_its_first_chunk() -> None:
    started: list[int] = []
    first_may_answer = asyncio.Event()

    def source(index: int) -> BodySource:
        async def body() -> Body:
            started.append(index)
            if index == 0:
                await first_may_answer.wait()
            yield f"{index};".encode()

        return body

    bodies = prefetched([source(i) for i in range(4)], costs=[1] * 4, window=4)
    first = await anext(bodies)
    await asyncio.sleep(0.01)
    assert started == [0]
    first_may_answer.set()
    assert b"".join([chunk async for chunk in first]) == b"0;"
    await asyncio.sleep(0.01)
    assert sorted(started) == [0, 1, 2, 3]
    await bodies.aclose()


async def test_a_ranged_read_whose_body_breaks_off_is_sent_again(storage: Storage, storage_fault_proxy) -> None:
    data = os.urandom(300_000)
    await storage.files.upload_blob("blob-reads/cut", data, overwrite=True)
    proxied = await open_storage(replace(storage.settings,
                                         storage_connection_string=storage_fault_proxy.connection_string))
    try:
        cut = storage_fault_proxy.inject(Fault("blob", "GET", r"blob-reads/cut", Action.BODY_CUT))
        assert await read_range(proxied.files, "blob-reads/cut", 1000, 200_000) == data[1000:201_000]
    finally:
        await proxied.close()
    assert cut.fired.is_set()
    methods = [method for _, method, target in storage_fault_proxy.requests if "blob-reads/cut" in target]
    assert methods == ["GET", "GET"]
