"""Change feed answers against real Azurite: entry states, metadata, and reads that sequence first."""

from __future__ import annotations

import asyncio
import json

from dicom_core.changefeed.query import ChangeFeedQuery
from dicom_core.changefeed.sequencer import sequence_pending
from dicom_core.changefeed.service import describe_entries, read_change_feed, read_latest
from dicom_core.index.outbox import Change, ChangeAction
from dicom_core.index.rows import instance_row_key
from dicom_core.storage.clients import Storage
from tests.dicom_core.changefeed.feed_support import all_entries, store, stored_version, uid, write_outbox
from tests.factories import make_instance

SOP_INSTANCE_UID = "00080018"


async def test_a_store_is_appended_as_a_create_entry_that_is_current(feed_storage: Storage, stow_parts) -> None:
    study, series, sop = uid(), uid(), uid()
    await store(stow_parts, feed_storage, [make_instance(study=study, series=series, sop=sop)])

    assert await sequence_pending(feed_storage) == 1
    (entry,) = await all_entries(feed_storage)
    (described,) = await describe_entries(feed_storage, [entry], include_metadata=True)

    assert (entry.sequence, entry.action, entry.study, entry.series, entry.instance) == (
        1, ChangeAction.CREATE, study, series, sop)
    assert entry.version == await stored_version(feed_storage, study, series, sop)
    assert described["state"] == "Current"
    assert described["metadata"][SOP_INSTANCE_UID]["Value"] == [sop]


async def test_an_upsert_replaces_the_earlier_entry_and_is_current(feed_storage: Storage, stow_parts) -> None:
    study, series, sop = uid(), uid(), uid()
    await store(stow_parts, feed_storage, [make_instance(study=study, series=series, sop=sop, SeriesNumber=1)])
    await store(stow_parts, feed_storage, [make_instance(study=study, series=series, sop=sop, SeriesNumber=2)],
                 upsert=True)

    await sequence_pending(feed_storage)
    entries = await all_entries(feed_storage)
    described = await describe_entries(feed_storage, entries, include_metadata=True)

    assert [e.action for e in entries] == [ChangeAction.CREATE, ChangeAction.CREATE]
    assert [d["state"] for d in described] == ["Replaced", "Current"]
    # As in Azure's service, every entry carries the metadata of the instance's current version.
    assert [d["metadata"]["00200011"]["Value"] for d in described] == [[2], [2]]


async def test_a_delete_change_marks_the_instance_entries_deleted_without_metadata(
    feed_storage: Storage, stow_parts
) -> None:
    study, series, sop = uid(), uid(), uid()
    await store(stow_parts, feed_storage, [make_instance(study=study, series=series, sop=sop)])
    version = await stored_version(feed_storage, study, series, sop)
    await write_outbox(feed_storage, study, [Change(ChangeAction.DELETE, series, sop, version)],
                        extra=[("delete", {"PartitionKey": study, "RowKey": instance_row_key(series, sop)})])

    await sequence_pending(feed_storage)
    entries = await all_entries(feed_storage)
    described = await describe_entries(feed_storage, entries, include_metadata=True)

    assert [(d["action"], d["state"]) for d in described] == [("Create", "Deleted"), ("Delete", "Deleted")]
    assert all("metadata" not in d for d in described)


async def test_a_delete_entry_of_an_instance_stored_again_is_replaced(feed_storage: Storage, stow_parts) -> None:
    study, series, sop = uid(), uid(), uid()
    await store(stow_parts, feed_storage, [make_instance(study=study, series=series, sop=sop)])
    version = await stored_version(feed_storage, study, series, sop)
    await write_outbox(feed_storage, study, [Change(ChangeAction.DELETE, series, sop, version)],
                        extra=[("delete", {"PartitionKey": study, "RowKey": instance_row_key(series, sop)})])
    await store(stow_parts, feed_storage, [make_instance(study=study, series=series, sop=sop)])

    await sequence_pending(feed_storage)
    described = await describe_entries(feed_storage, await all_entries(feed_storage), include_metadata=False)

    assert [(d["action"], d["state"]) for d in described] == [
        ("Create", "Replaced"), ("Delete", "Replaced"), ("Create", "Current")]


async def test_latest_of_an_empty_feed_is_no_content(feed_storage: Storage) -> None:
    assert (await read_latest(feed_storage, include_metadata=True)).status == 204


async def test_a_read_appends_what_is_pending_before_it_answers(feed_storage: Storage, stow_parts) -> None:
    await store(stow_parts, feed_storage, [make_instance()])

    answer = await read_change_feed(feed_storage, ChangeFeedQuery(api_version=1, limit=10))

    assert [entry["sequence"] for entry in json.loads(answer.body or b"")] == [1]


async def test_a_reader_paging_while_eight_writers_store_sees_every_entry_once(
    feed_storage: Storage, stow_parts
) -> None:
    writers_done = asyncio.Event()
    stored: list[str] = []

    async def writer() -> None:
        study = uid()
        for _ in range(6):
            sop = uid()
            await store(stow_parts, feed_storage, [make_instance(study=study, sop=sop)])
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
