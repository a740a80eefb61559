"""The change feed against real Azurite: outbox rows, the sequencer under concurrency, states and reads."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from dicom_core.changefeed.feed import (
    DONE_PREFIX, FEED_PARTITION, FeedEntry, entries_after, entries_in_window, latest_entry, sequence_pending,
    to_micros,
)
from dicom_core.index.outbox import (
    ANNOUNCEMENT_TIMEOUT, PENDING_PARTITION, Change, ChangeAction, announce_changes, outbox_operation, outbox_row_key,
)
from dicom_core.changefeed.query import ChangeFeedQuery
from dicom_core.changefeed.service import describe_entries, read_change_feed, read_latest
from dicom_core.model.identifiers import new_version
from dicom_core.index.rows import instance_row_key
from dicom_core.settings import Settings
from dicom_core.storage.clients import Storage, open_storage
from tests.factories import make_instance

REPO_ROOT = Path(__file__).resolve().parents[3]
SOP_INSTANCE_UID = "00080018"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def _uid() -> str:
    return str(generate_uid())


@pytest.fixture
async def feed_storage(azurite) -> AsyncIterator[Storage]:
    """A Storage with tables and containers of its own: this test's feed starts empty."""
    suffix = uuid.uuid4().hex[:10]
    opened = await open_storage(Settings(
        storage_connection_string=azurite.connection_string, blob_container=f"cf-{suffix}",
        metadata_container=f"cfm-{suffix}", table_prefix=f"cf{suffix}",
    ))
    yield opened
    await opened.close()


async def _store(stow_parts, storage: Storage, parts: list[bytes], *, upsert: bool = False) -> None:
    response = await stow_parts(storage, parts, upsert=upsert)
    assert response.status == 200, response.body


async def _stored_version(storage: Storage, study: str, series: str, sop: str) -> str:
    row = await storage.studies.get_entity(study, instance_row_key(series, sop))
    return str(row["Version"])


async def _all_entries(storage: Storage) -> list[FeedEntry]:
    return await entries_after(storage, 0, 10_000)


async def _write_outbox(storage: Storage, study: str, changes: list[Change], extra: list | None = None) -> str:
    """Announce and commit an outbox row the way a writer does (with ``extra`` operations in its transaction)."""
    change_id = new_version()
    now = datetime.now(timezone.utc)
    await announce_changes(storage, study, change_id, now)
    await storage.studies.submit_transaction([*(extra or []), outbox_operation(study, change_id, changes, now)])
    return change_id


async def _pending_ids(storage: Storage) -> list[str]:
    rows = storage.changes.query_entities("PartitionKey eq @p", parameters={"p": PENDING_PARTITION})
    return [str(row["RowKey"]) async for row in rows]


async def test_a_store_is_appended_as_a_create_entry_that_is_current(feed_storage: Storage, stow_parts) -> None:
    study, series, sop = _uid(), _uid(), _uid()
    await _store(stow_parts, feed_storage, [make_instance(study=study, series=series, sop=sop)])

    assert await sequence_pending(feed_storage) == 1
    (entry,) = await _all_entries(feed_storage)
    (described,) = await describe_entries(feed_storage, [entry], include_metadata=True)

    assert (entry.sequence, entry.action, entry.study, entry.series, entry.instance) == (
        1, ChangeAction.CREATE, study, series, sop)
    assert entry.version == await _stored_version(feed_storage, study, series, sop)
    assert described["state"] == "Current"
    assert described["metadata"][SOP_INSTANCE_UID]["Value"] == [sop]


async def test_writers_do_not_append_to_the_feed_themselves(feed_storage: Storage, stow_parts) -> None:
    await _store(stow_parts, feed_storage, [make_instance()])

    assert await _all_entries(feed_storage) == []
    assert len(await _pending_ids(feed_storage)) == 1


async def test_a_refused_store_withdraws_its_announcement(feed_storage: Storage, stow_parts) -> None:
    study, series, sop = _uid(), _uid(), _uid()
    await _store(stow_parts, feed_storage, [make_instance(study=study, series=series, sop=sop)])
    refused = await stow_parts(feed_storage, [make_instance(study=study, series=series, sop=sop)])

    assert refused.status == 409
    assert await _pending_ids(feed_storage) == [await _stored_version(feed_storage, study, series, sop)]


async def test_an_upsert_replaces_the_earlier_entry_and_is_current(feed_storage: Storage, stow_parts) -> None:
    study, series, sop = _uid(), _uid(), _uid()
    await _store(stow_parts, feed_storage, [make_instance(study=study, series=series, sop=sop, SeriesNumber=1)])
    await _store(stow_parts, feed_storage, [make_instance(study=study, series=series, sop=sop, SeriesNumber=2)],
                 upsert=True)

    await sequence_pending(feed_storage)
    entries = await _all_entries(feed_storage)
    described = await describe_entries(feed_storage, entries, include_metadata=True)

    assert [e.action for e in entries] == [ChangeAction.CREATE, ChangeAction.CREATE]
    assert [d["state"] for d in described] == ["Replaced", "Current"]
    # As in Azure's service, every entry carries the metadata of the instance's current version.
    assert [d["metadata"]["00200011"]["Value"] for d in described] == [[2], [2]]


async def test_a_delete_change_marks_the_instance_entries_deleted_without_metadata(
    feed_storage: Storage, stow_parts
) -> None:
    study, series, sop = _uid(), _uid(), _uid()
    await _store(stow_parts, feed_storage, [make_instance(study=study, series=series, sop=sop)])
    version = await _stored_version(feed_storage, study, series, sop)
    await _write_outbox(feed_storage, study, [Change(ChangeAction.DELETE, series, sop, version)],
                        extra=[("delete", {"PartitionKey": study, "RowKey": instance_row_key(series, sop)})])

    await sequence_pending(feed_storage)
    entries = await _all_entries(feed_storage)
    described = await describe_entries(feed_storage, entries, include_metadata=True)

    assert [(d["action"], d["state"]) for d in described] == [("Create", "Deleted"), ("Delete", "Deleted")]
    assert all("metadata" not in d for d in described)


async def test_a_delete_entry_of_an_instance_stored_again_is_replaced(feed_storage: Storage, stow_parts) -> None:
    study, series, sop = _uid(), _uid(), _uid()
    await _store(stow_parts, feed_storage, [make_instance(study=study, series=series, sop=sop)])
    version = await _stored_version(feed_storage, study, series, sop)
    await _write_outbox(feed_storage, study, [Change(ChangeAction.DELETE, series, sop, version)],
                        extra=[("delete", {"PartitionKey": study, "RowKey": instance_row_key(series, sop)})])
    await _store(stow_parts, feed_storage, [make_instance(study=study, series=series, sop=sop)])

    await sequence_pending(feed_storage)
    described = await describe_entries(feed_storage, await _all_entries(feed_storage), include_metadata=False)

    assert [(d["action"], d["state"]) for d in described] == [
        ("Create", "Replaced"), ("Delete", "Replaced"), ("Create", "Current")]


async def test_appended_outbox_rows_and_announcements_are_removed(feed_storage: Storage, stow_parts) -> None:
    study, series, sop = _uid(), _uid(), _uid()
    await _store(stow_parts, feed_storage, [make_instance(study=study, series=series, sop=sop)])
    version = await _stored_version(feed_storage, study, series, sop)

    await sequence_pending(feed_storage)

    assert await _pending_ids(feed_storage) == []
    outbox = [row async for row in feed_storage.studies.query_entities(
        "PartitionKey eq @s and RowKey eq @r", parameters={"s": study, "r": outbox_row_key(version)})]
    assert outbox == []


async def test_an_outbox_left_behind_after_its_append_is_not_appended_again(feed_storage: Storage) -> None:
    study = _uid()
    change_id = await _write_outbox(feed_storage, study, [Change(ChangeAction.CREATE, "1.2", "1.2.3", "v1")])
    await sequence_pending(feed_storage)
    # A sequencer that crashed before its cleanup leaves both behind: put them back.
    await announce_changes(feed_storage, study, change_id, datetime.now(timezone.utc))
    await feed_storage.studies.create_entity(
        outbox_operation(study, change_id, [Change(ChangeAction.CREATE, "1.2", "1.2.3", "v1")], T0)[1])

    assert await sequence_pending(feed_storage) == 0
    assert [e.sequence for e in await _all_entries(feed_storage)] == [1]
    assert await _pending_ids(feed_storage) == []


async def test_an_announcement_without_outbox_row_is_kept_until_the_timeout(feed_storage: Storage) -> None:
    await announce_changes(feed_storage, _uid(), new_version(), T0)

    assert await sequence_pending(feed_storage, clock=lambda: T0 + ANNOUNCEMENT_TIMEOUT - timedelta(seconds=1)) == 0
    assert len(await _pending_ids(feed_storage)) == 1


async def test_an_announcement_without_outbox_row_is_dropped_after_the_timeout(feed_storage: Storage) -> None:
    await announce_changes(feed_storage, _uid(), new_version(), T0)

    assert await sequence_pending(feed_storage, clock=lambda: T0 + ANNOUNCEMENT_TIMEOUT + timedelta(seconds=1)) == 0
    assert await _pending_ids(feed_storage) == []


async def test_a_commit_landing_after_a_sequencer_run_is_appended_by_the_next(feed_storage: Storage) -> None:
    study, change_id = _uid(), new_version()
    await announce_changes(feed_storage, study, change_id, datetime.now(timezone.utc))
    assert await sequence_pending(feed_storage) == 0

    change = Change(ChangeAction.CREATE, "1.2", "1.2.3", change_id)
    await feed_storage.studies.submit_transaction([outbox_operation(study, change_id, [change], T0)])

    assert await sequence_pending(feed_storage) == 1


async def test_an_outbox_larger_than_one_transaction_is_appended_whole_and_in_order(feed_storage: Storage) -> None:
    study, series = _uid(), _uid()
    changes = [Change(ChangeAction.DELETE, series, f"1.2.{i}", f"v{i}") for i in range(120)]
    change_id = await _write_outbox(feed_storage, study, changes)

    assert await sequence_pending(feed_storage) == 120
    entries = await _all_entries(feed_storage)
    done = await feed_storage.changes.get_entity(FEED_PARTITION, DONE_PREFIX + change_id)

    assert [e.sequence for e in entries] == list(range(1, 121))
    assert [e.instance for e in entries] == [c.instance for c in changes]
    assert done["Through"] == 120


async def test_timestamps_increase_with_the_sequence_when_the_clock_goes_back(feed_storage: Storage) -> None:
    study = _uid()
    await _write_outbox(feed_storage, study, [Change(ChangeAction.CREATE, "1.2", "1.2.1", "v1")])
    await sequence_pending(feed_storage, clock=lambda: T0)
    await _write_outbox(feed_storage, study, [Change(ChangeAction.CREATE, "1.2", "1.2.2", "v2")])
    await sequence_pending(feed_storage, clock=lambda: T0 - timedelta(hours=1))

    first, second = await _all_entries(feed_storage)

    assert (first.timestamp_us, second.timestamp_us) == (to_micros(T0), to_micros(T0) + 1)


async def _entries_at(storage: Storage, moments: list[datetime]) -> list[FeedEntry]:
    study = _uid()
    for index, moment in enumerate(moments):
        await _write_outbox(storage, study, [Change(ChangeAction.CREATE, "1.2", f"1.2.{index}", f"v{index}")])
        await sequence_pending(storage, clock=lambda: moment)
    return await _all_entries(storage)


async def test_a_time_window_includes_its_start_and_excludes_its_end(feed_storage: Storage) -> None:
    moments = [T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2), T0 + timedelta(seconds=3)]
    await _entries_at(feed_storage, moments)

    found = await entries_in_window(feed_storage, to_micros(moments[1]), to_micros(moments[3]), 0, 100)

    assert [e.sequence for e in found] == [2, 3]


async def test_an_offset_counts_entries_inside_the_window(feed_storage: Storage) -> None:
    moments = [T0 + timedelta(seconds=s) for s in range(6)]
    await _entries_at(feed_storage, moments)

    found = await entries_in_window(feed_storage, to_micros(moments[1]), to_micros(moments[5]), 2, 100)

    assert [e.sequence for e in found] == [4, 5]


async def test_a_v1_page_holds_the_entries_after_the_offset_sequence(feed_storage: Storage) -> None:
    await _entries_at(feed_storage, [T0 + timedelta(seconds=s) for s in range(5)])

    assert [e.sequence for e in await entries_after(feed_storage, 2, 2)] == [3, 4]


async def test_the_latest_entry_is_the_last_appended(feed_storage: Storage) -> None:
    await _entries_at(feed_storage, [T0, T0 + timedelta(seconds=1)])

    latest = await latest_entry(feed_storage)

    assert latest is not None and latest.sequence == 2


async def test_latest_of_an_empty_feed_is_no_content(feed_storage: Storage) -> None:
    assert (await read_latest(feed_storage, include_metadata=True)).status == 204


async def test_a_read_appends_what_is_pending_before_it_answers(feed_storage: Storage, stow_parts) -> None:
    await _store(stow_parts, feed_storage, [make_instance()])

    answer = await read_change_feed(feed_storage, ChangeFeedQuery(api_version=1, limit=10))

    assert [entry["sequence"] for entry in json.loads(answer.body or b"")] == [1]


async def _outboxes(storage: Storage, count: int) -> set[str]:
    """Write ``count`` one-change outboxes into studies of their own; return their instance UIDs."""
    instances = [_uid() for _ in range(count)]
    for start in range(0, count, 20):
        await asyncio.gather(*(
            _write_outbox(storage, _uid(), [Change(ChangeAction.CREATE, "1.2", instance, "v")])
            for instance in instances[start:start + 20]
        ))
    return set(instances)


async def test_concurrent_sequencers_append_every_change_exactly_once(feed_storage: Storage) -> None:
    instances = await _outboxes(feed_storage, 70)

    counts = await asyncio.gather(*(sequence_pending(feed_storage) for _ in range(6)))
    entries = await _all_entries(feed_storage)

    assert sum(counts) == 70
    assert [e.sequence for e in entries] == list(range(1, 71))
    assert {e.instance for e in entries} == instances


_SEQUENCER_SCRIPT = """
import asyncio, sys
from dicom_core.changefeed.feed import sequence_pending
from dicom_core.settings import Settings
from dicom_core.storage.clients import open_storage

async def main():
    storage = await open_storage(Settings(storage_connection_string=sys.argv[1], table_prefix=sys.argv[2],
                                          blob_container=sys.argv[3], metadata_container=sys.argv[4]))
    counts = await asyncio.gather(*(sequence_pending(storage, max_changes=10_000) for _ in range(3)))
    await storage.close()
    print(sum(counts))

asyncio.run(main())
"""


async def test_sequencers_in_two_processes_append_every_change_exactly_once(
    feed_storage: Storage, azurite
) -> None:
    instances = await _outboxes(feed_storage, 80)
    settings = feed_storage.settings
    arguments = [azurite.connection_string, settings.table_prefix, settings.blob_container,
                 settings.metadata_container]
    processes = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", _SEQUENCER_SCRIPT, *arguments, cwd=REPO_ROOT,
                                             stdout=asyncio.subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [await process.communicate() for process in processes]
    entries = await _all_entries(feed_storage)

    assert [process.returncode for process in processes] == [0, 0]
    assert sum(int(stdout) for stdout, _ in outputs) == 80
    assert [e.sequence for e in entries] == list(range(1, 81))
    assert {e.instance for e in entries} == instances


async def test_a_reader_paging_while_eight_writers_store_sees_every_entry_once(
    feed_storage: Storage, stow_parts
) -> None:
    writers_done = asyncio.Event()
    stored: list[str] = []

    async def writer() -> None:
        study = _uid()
        for _ in range(6):
            sop = _uid()
            await _store(stow_parts, feed_storage, [make_instance(study=study, sop=sop)])
            stored.append(sop)

    async def reader() -> list[dict]:
        seen: list[dict] = []
        while True:
            finished = writers_done.is_set()  # read before the page: a page after the last write sees it all
            answer = await read_change_feed(
                feed_storage, ChangeFeedQuery(api_version=1, limit=7, offset=seen[-1]["sequence"] if seen else 0))
            page = json.loads(answer.body or b"")
            seen.extend(page)
            if finished and not page:
                return seen
            await asyncio.sleep(0)

    async def write_all() -> None:
        await asyncio.gather(*(writer() for _ in range(8)))
        writers_done.set()

    seen, _ = await asyncio.gather(reader(), write_all())

    assert [entry["sequence"] for entry in seen] == list(range(1, 49))
    assert sorted(entry["sopInstanceUid"] for entry in seen) == sorted(stored)
