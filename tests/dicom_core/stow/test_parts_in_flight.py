"""The parts of a request in flight: each waits before its commit for the parts received before it."""

from __future__ import annotations

import asyncio
import time

import pytest

from dicom_core.stow import parts_in_flight
from dicom_core.stow.parts_in_flight import SMALL_PARTS_PER_SLOT, PartsInFlight, PartSlots

MIB = 1024 * 1024


async def test_a_part_ready_to_commit_waits_until_the_other_received_part_is_ready_too() -> None:
    parts = PartsInFlight()
    first, second = parts.join(lambda: None), parts.join(lambda: None)
    waiting = asyncio.ensure_future(first.ready_to_commit())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await second.ready_to_commit()
    await asyncio.wait_for(waiting, 1)


async def test_a_part_that_failed_no_longer_holds_the_others_back() -> None:
    parts = PartsInFlight()
    first, second = parts.join(lambda: None), parts.join(lambda: None)
    waiting = asyncio.ensure_future(first.ready_to_commit())
    await asyncio.sleep(0.05)
    second.finished()
    await asyncio.wait_for(waiting, 1)


async def test_the_wait_for_a_part_still_uploading_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parts_in_flight, "COMMIT_WAIT_SECONDS", 0.1)
    parts = PartsInFlight()
    first, _still_uploading = parts.join(lambda: None), parts.join(lambda: None)
    started = time.monotonic()
    await first.ready_to_commit()
    assert 0.09 <= time.monotonic() - started < 1


async def test_a_parts_slot_is_given_back_once_after_its_upload() -> None:
    released: list[int] = []
    part = PartsInFlight().join(lambda: released.append(1))
    part.uploaded()
    part.finished()
    assert released == [1]


async def test_a_lone_part_commits_without_waiting() -> None:
    part = PartsInFlight().join(lambda: None)
    started = time.monotonic()
    await part.ready_to_commit()
    assert time.monotonic() - started < 0.05


async def test_a_lone_part_is_told_it_commits_alone() -> None:
    part = PartsInFlight().join(lambda: None)
    assert await part.ready_to_commit() is False


async def test_parts_ready_together_are_told_they_have_company() -> None:
    parts = PartsInFlight()
    first, second = parts.join(lambda: None), parts.join(lambda: None)
    waiting = asyncio.ensure_future(first.ready_to_commit())
    assert await second.ready_to_commit() is True
    assert await asyncio.wait_for(waiting, 1) is True


async def test_small_parts_are_held_several_per_slot() -> None:
    slots = PartSlots(2, 8 * MIB)
    for _ in range(2 * SMALL_PARTS_PER_SLOT):
        await asyncio.wait_for(slots.acquire(slots.weight(500_000)), 1)
    blocked = asyncio.ensure_future(slots.acquire(slots.weight(500_000)))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    slots.release(slots.weight(500_000))
    await asyncio.wait_for(blocked, 1)


async def test_large_parts_are_held_one_per_slot() -> None:
    slots = PartSlots(2, 8 * MIB)
    await slots.acquire(slots.weight(100 * MIB))
    await slots.acquire(slots.weight(100 * MIB))
    blocked = asyncio.ensure_future(slots.acquire(slots.weight(1)))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    slots.release(slots.weight(100 * MIB))
    await asyncio.wait_for(blocked, 1)
