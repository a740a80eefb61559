"""Group commit: queued items of one key are applied together, one batch at a time, each writer told its outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from dicom_core.storage.group_commit import GroupCommit


class Recorder:
    """A flush that records its batches and answers each item doubled (or fails the items it is told to)."""

    def __init__(self, *, delay: float = 0.01, failing: frozenset[int] = frozenset()) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.failing = failing
        self.running = 0
        self.most_running = 0

    async def flush(self, key: str, items: Sequence[int]) -> list[int | BaseException]:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(self.delay)
            self.batches.append(list(items))
            return [ValueError(item) if item in self.failing else 2 * item for item in items]
        finally:
            self.running -= 1


async def test_concurrent_items_of_one_key_are_applied_in_few_batches_and_each_gets_its_result() -> None:
    recorder = Recorder()
    group: GroupCommit[str, int, int] = GroupCommit(recorder.flush, max_items=100)
    results = await asyncio.gather(*(group.submit("study", item) for item in range(20)))
    assert results == [2 * item for item in range(20)]
    assert sorted(item for batch in recorder.batches for item in batch) == list(range(20))
    assert len(recorder.batches) <= 2  # the first writer's batch, then everything that queued meanwhile


async def test_one_key_is_flushed_by_one_writer_at_a_time() -> None:
    recorder = Recorder()
    group: GroupCommit[str, int, int] = GroupCommit(recorder.flush, max_items=3)
    await asyncio.gather(*(group.submit("study", item) for item in range(12)))
    assert recorder.most_running == 1
    assert all(len(batch) <= 3 for batch in recorder.batches)


async def test_different_keys_are_flushed_independently() -> None:
    recorder = Recorder(delay=0.05)
    group: GroupCommit[str, int, int] = GroupCommit(recorder.flush, max_items=10)
    await asyncio.gather(group.submit("a", 1), group.submit("b", 2))
    assert recorder.most_running == 2


async def test_a_failing_item_fails_only_its_own_writer() -> None:
    recorder = Recorder(failing=frozenset({3}))
    group: GroupCommit[str, int, int] = GroupCommit(recorder.flush, max_items=10)
    results = await asyncio.gather(*(group.submit("study", item) for item in range(6)), return_exceptions=True)
    assert isinstance(results[3], ValueError)
    assert [result for index, result in enumerate(results) if index != 3] == [0, 2, 4, 8, 10]


async def test_a_flush_that_raises_fails_every_item_of_its_batch() -> None:
    async def broken(key: str, items: Sequence[int]) -> list[int]:
        raise RuntimeError("storage down")

    group: GroupCommit[str, int, int] = GroupCommit(broken, max_items=10)
    results = await asyncio.gather(*(group.submit("study", item) for item in range(3)), return_exceptions=True)
    assert all(isinstance(result, RuntimeError) for result in results)


async def test_items_that_do_not_fit_wait_for_a_later_batch_in_order() -> None:
    recorder = Recorder()
    # No two even items in one batch (like one row written twice in one transaction).
    group: GroupCommit[str, int, int] = GroupCommit(
        recorder.flush, max_items=10, fits=lambda batch, item: item % 2 == 1 or all(b % 2 for b in batch))
    results = await asyncio.gather(*(group.submit("study", item) for item in range(6)))
    assert results == [0, 2, 4, 6, 8, 10]
    assert all(sum(1 for item in batch if item % 2 == 0) <= 1 for batch in recorder.batches)


async def test_a_cancelled_flushing_writer_leaves_the_others_items_to_the_next_writer() -> None:
    started = asyncio.Event()
    batches: list[list[int]] = []

    async def flush(key: str, items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        if len(batches) == 1:
            started.set()
            await asyncio.sleep(10)  # the first batch hangs until its writer is cancelled
        return [2 * item for item in items]

    group: GroupCommit[str, int, int] = GroupCommit(flush, max_items=10)
    first = asyncio.create_task(group.submit("study", 0))
    await started.wait()
    others = [asyncio.create_task(group.submit("study", item)) for item in (1, 2)]
    await asyncio.sleep(0)
    first.cancel()
    assert await asyncio.gather(*others) == [2, 4]
    with pytest.raises(asyncio.CancelledError):
        await first
    assert 0 not in batches[-1]  # the cancelled writer's own item is not applied for it later


async def test_a_writer_cancelled_while_queued_is_not_applied() -> None:
    release = asyncio.Event()
    batches: list[list[int]] = []

    async def flush(key: str, items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        await release.wait()
        return [2 * item for item in items]

    group: GroupCommit[str, int, int] = GroupCommit(flush, max_items=10)
    first = asyncio.create_task(group.submit("study", 0))
    await asyncio.sleep(0.01)
    queued = asyncio.create_task(group.submit("study", 1))
    last = asyncio.create_task(group.submit("study", 2))
    await asyncio.sleep(0.01)
    queued.cancel()
    release.set()
    assert await first == 0
    assert await last == 4
    assert batches == [[0], [2]]
