"""Reading the change feed against real Azurite: by sequence, by time window, the latest entry."""

from __future__ import annotations

from datetime import timedelta

from dicom_core.changefeed.feed_reads import entries_after, entries_in_window, latest_entry
from dicom_core.model.epoch import to_micros
from dicom_core.storage.clients import Storage
from tests.dicom_core.changefeed.feed_support import T0, entries_at


async def test_a_time_window_includes_its_start_and_excludes_its_end(feed_storage: Storage) -> None:
    moments = [T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2), T0 + timedelta(seconds=3)]
    await entries_at(feed_storage, moments)

    found = await entries_in_window(feed_storage, to_micros(moments[1]), to_micros(moments[3]), 0, 100)

    assert [e.sequence for e in found] == [2, 3]


async def test_an_offset_counts_entries_inside_the_window(feed_storage: Storage) -> None:
    moments = [T0 + timedelta(seconds=s) for s in range(6)]
    await entries_at(feed_storage, moments)

    found = await entries_in_window(feed_storage, to_micros(moments[1]), to_micros(moments[5]), 2, 100)

    assert [e.sequence for e in found] == [4, 5]


async def test_a_v1_page_holds_the_entries_after_the_offset_sequence(feed_storage: Storage) -> None:
    await entries_at(feed_storage, [T0 + timedelta(seconds=s) for s in range(5)])

    assert [e.sequence for e in await entries_after(feed_storage, 2, 2)] == [3, 4]


async def test_the_latest_entry_is_the_last_appended(feed_storage: Storage) -> None:
    await entries_at(feed_storage, [T0, T0 + timedelta(seconds=1)])

    latest = await latest_entry(feed_storage)

    assert latest is not None and latest.sequence == 2
