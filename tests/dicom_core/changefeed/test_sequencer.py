"""The change feed's sequencer against real Azurite: outbox rows appended once, in order, under concurrency."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables.aio import TableClient

from dicom_core.changefeed import sequencer
from dicom_core.changefeed.feed_reads import FEED_PARTITION
from dicom_core.changefeed.sequencer import DONE_PREFIX, sequence_pending
from dicom_core.index.outbox import (
    ANNOUNCEMENT_TIMEOUT,
    Change,
    ChangeAction,
    LandedOutbox,
    RequestAnnouncement,
    announce_changes,
    announce_requests,
    outbox_operation,
    pending_announcements,
    request_change_id,
)
from dicom_core.model.epoch import to_micros
from dicom_core.model.identifiers import new_version
from dicom_core.storage.clients import Storage
from tests.dicom_core.changefeed.feed_support import (
    T0,
    all_entries,
    outbox_rows,
    pending_ids,
    store,
    uid,
    write_outbox,
    write_outboxes,
)
from tests.factories import make_instance

REPO_ROOT = Path(__file__).resolve().parents[3]


async def test_writers_do_not_append_to_the_feed_themselves(feed_storage: Storage, stow_parts) -> None:
    await store(stow_parts, feed_storage, [make_instance()])

    assert await all_entries(feed_storage) == []
    assert len(await pending_ids(feed_storage)) == 1


async def test_a_refused_store_withdraws_its_announcement(feed_storage: Storage, stow_parts) -> None:
    study, series, sop = uid(), uid(), uid()
    await store(stow_parts, feed_storage, [make_instance(study=study, series=series, sop=sop)])
    stored = await pending_ids(feed_storage)
    refused = await stow_parts(feed_storage, [make_instance(study=study, series=series, sop=sop)])

    assert refused.status == 409
    assert len(stored) == 1 and await pending_ids(feed_storage) == stored


async def test_appended_outbox_rows_and_announcements_are_removed(feed_storage: Storage, stow_parts) -> None:
    study, series = uid(), uid()
    await store(stow_parts, feed_storage, [make_instance(study=study, series=series) for _ in range(3)])
    assert len(await outbox_rows(feed_storage, study)) >= 1

    assert await sequence_pending(feed_storage) == 3

    assert await pending_ids(feed_storage) == []
    assert await outbox_rows(feed_storage, study) == []


async def test_an_outbox_left_behind_after_its_append_is_not_appended_again(feed_storage: Storage) -> None:
    study = uid()
    change_id = await write_outbox(feed_storage, study, [Change(ChangeAction.CREATE, "1.2", "1.2.3", "v1")])
    await sequence_pending(feed_storage)
    # A sequencer that crashed before its cleanup leaves both behind: put them back.
    await announce_changes(feed_storage, study, change_id, datetime.now(UTC))
    await feed_storage.studies.create_entity(
        outbox_operation(study, change_id, [Change(ChangeAction.CREATE, "1.2", "1.2.3", "v1")], T0)[1])

    assert await sequence_pending(feed_storage) == 0
    assert [e.sequence for e in await all_entries(feed_storage)] == [1]
    assert await pending_ids(feed_storage) == []


async def test_an_announcement_without_outbox_row_is_kept_until_the_timeout(feed_storage: Storage) -> None:
    await announce_changes(feed_storage, uid(), new_version(), T0)

    assert await sequence_pending(feed_storage, clock=lambda: T0 + ANNOUNCEMENT_TIMEOUT - timedelta(seconds=1)) == 0
    assert len(await pending_ids(feed_storage)) == 1


async def test_an_announcement_without_outbox_row_is_dropped_after_the_timeout(feed_storage: Storage) -> None:
    await announce_changes(feed_storage, uid(), new_version(), T0)

    assert await sequence_pending(feed_storage, clock=lambda: T0 + ANNOUNCEMENT_TIMEOUT + timedelta(seconds=1)) == 0
    assert await pending_ids(feed_storage) == []


async def test_a_commit_landing_after_a_sequencer_run_is_appended_by_the_next(feed_storage: Storage) -> None:
    study, change_id = uid(), new_version()
    await announce_changes(feed_storage, study, change_id, datetime.now(UTC))
    assert await sequence_pending(feed_storage) == 0

    change = Change(ChangeAction.CREATE, "1.2", "1.2.3", change_id)
    await feed_storage.studies.submit_transaction([outbox_operation(study, change_id, [change], T0)])

    assert await sequence_pending(feed_storage) == 1


async def test_an_outbox_larger_than_one_transaction_is_appended_whole_and_in_order(feed_storage: Storage) -> None:
    study, series = uid(), uid()
    changes = [Change(ChangeAction.DELETE, series, f"1.2.{i}", f"v{i}") for i in range(120)]
    change_id = await write_outbox(feed_storage, study, changes)

    assert await sequence_pending(feed_storage) == 120
    entries = await all_entries(feed_storage)
    done = await feed_storage.changes.get_entity(FEED_PARTITION, DONE_PREFIX + change_id)

    assert [e.sequence for e in entries] == list(range(1, 121))
    assert [e.instance for e in entries] == [c.instance for c in changes]
    assert done["Through"] == 120


async def test_timestamps_increase_with_the_sequence_when_the_clock_goes_back(feed_storage: Storage) -> None:
    study = uid()
    await write_outbox(feed_storage, study, [Change(ChangeAction.CREATE, "1.2", "1.2.1", "v1")])
    await sequence_pending(feed_storage, clock=lambda: T0)
    await write_outbox(feed_storage, study, [Change(ChangeAction.CREATE, "1.2", "1.2.2", "v2")])
    await sequence_pending(feed_storage, clock=lambda: T0 - timedelta(hours=1))

    first, second = await all_entries(feed_storage)

    assert (first.timestamp_us, second.timestamp_us) == (to_micros(T0), to_micros(T0) + 1)


async def test_concurrent_sequencers_append_every_change_exactly_once(feed_storage: Storage) -> None:
    instances = await write_outboxes(feed_storage, 70)

    counts = await asyncio.gather(*(sequence_pending(feed_storage) for _ in range(6)))
    entries = await all_entries(feed_storage)

    assert sum(counts) == 70
    assert [e.sequence for e in entries] == list(range(1, 71))
    assert {e.instance for e in entries} == instances


_SEQUENCER_SCRIPT = """
import asyncio, sys
from dicom_core.changefeed.sequencer import sequence_pending
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
    instances = await write_outboxes(feed_storage, 80)
    settings = feed_storage.settings
    arguments = [azurite.connection_string, settings.table_prefix, settings.blob_container,
                 settings.metadata_container]
    processes = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", _SEQUENCER_SCRIPT, *arguments, cwd=REPO_ROOT,
                                             stdout=asyncio.subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [await process.communicate() for process in processes]
    entries = await all_entries(feed_storage)

    assert [process.returncode for process in processes] == [0, 0]
    assert sum(int(stdout) for stdout, _ in outputs) == 80
    assert [e.sequence for e in entries] == list(range(1, 81))
    assert {e.instance for e in entries} == instances


async def _announce_request(storage: Storage, request: str, studies: list[str], changes: int,
                            at: datetime | None = None, landed: tuple[LandedOutbox, ...] = ()) -> None:
    at = at or datetime.now(UTC)
    await announce_requests(storage, [RequestAnnouncement(request, tuple(studies), changes, at, landed=landed)], at)


async def _commit_request_outbox(storage: Storage, study: str, request: str, part: str, count: int) -> set[str]:
    """Commit one outbox row of a request with ``count`` changes; return their instance UIDs."""
    return {change.instance for change in (await _commit_landed(storage, study, request, part, count)).changes}


async def _commit_landed(storage: Storage, study: str, request: str, part: str, count: int) -> LandedOutbox:
    """Commit one outbox row of a request with ``count`` changes; return it as its writer confirms it."""
    changes = tuple(Change(ChangeAction.CREATE, "1.2", uid(), f"v{part}") for _ in range(count))
    await storage.studies.submit_transaction([outbox_operation(study, request_change_id(request, part), changes, T0)])
    return LandedOutbox(study, request_change_id(request, part), changes)


async def _done_row(storage: Storage, change_id: str) -> Any:
    return await storage.changes.get_entity(FEED_PARTITION, DONE_PREFIX + change_id)


async def test_a_confirmed_request_is_appended_without_reading_its_studies_and_its_outbox_rows_stay(
    feed_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    request, first, second = new_version(), uid(), uid()
    landed = (await _commit_landed(feed_storage, first, request, "a", 2),
              await _commit_landed(feed_storage, second, request, "b", 1))
    await _announce_request(feed_storage, request, [first, second], 3, landed=landed)
    queries = _count_partition_queries(monkeypatch)

    assert await sequence_pending(feed_storage) == 3

    assert not {first, second} & set(queries)
    entries = await all_entries(feed_storage)
    assert [(e.study, e.instance) for e in entries] == [(o.study, c.instance) for o in landed for c in o.changes]
    assert await pending_ids(feed_storage) == []
    assert len(await outbox_rows(feed_storage, first)) == len(await outbox_rows(feed_storage, second)) == 1
    assert [(await _done_row(feed_storage, o.change_id))[sequencer.KEPT] for o in landed] == [True, True]


async def test_a_confirmed_outbox_read_again_from_its_partition_is_not_appended_again_and_stays(
    feed_storage: Storage,
) -> None:
    request, first, second = new_version(), uid(), uid()
    landed = (await _commit_landed(feed_storage, first, request, "a", 1),
              await _commit_landed(feed_storage, second, request, "b", 1))
    await _announce_request(feed_storage, request, [first, second], 2, landed=landed)
    assert await sequence_pending(feed_storage) == 2
    # A sequencer that read the intent before its confirmation was written reads the partitions.
    await _announce_request(feed_storage, request, [first, second], 2)

    assert await sequence_pending(feed_storage) == 0

    assert [e.sequence for e in await all_entries(feed_storage)] == [1, 2]
    assert await pending_ids(feed_storage) == []
    assert len(await outbox_rows(feed_storage, first)) == len(await outbox_rows(feed_storage, second)) == 1


async def test_a_request_confirming_fewer_changes_than_it_counts_is_read_from_its_partitions(
    feed_storage: Storage,
) -> None:
    request, first, second = new_version(), uid(), uid()
    confirmed = await _commit_landed(feed_storage, first, request, "a", 1)
    unconfirmed = await _commit_landed(feed_storage, second, request, "b", 2)  # its answer was lost
    await _announce_request(feed_storage, request, [first, second], 3, landed=(confirmed,))

    assert await sequence_pending(feed_storage) == 3

    assert {e.instance for e in await all_entries(feed_storage)} == {
        c.instance for o in (confirmed, unconfirmed) for c in o.changes}
    assert await pending_ids(feed_storage) == []
    assert await outbox_rows(feed_storage, first) == await outbox_rows(feed_storage, second) == []


async def test_a_request_committed_into_several_studies_is_appended_whole_and_removed(feed_storage: Storage) -> None:
    request, first, second = new_version(), uid(), uid()
    await _announce_request(feed_storage, request, [first, second], 3)
    instances = await _commit_request_outbox(feed_storage, first, request, "a", 2)
    instances |= await _commit_request_outbox(feed_storage, second, request, "b", 1)

    assert await sequence_pending(feed_storage) == 3

    entries = await all_entries(feed_storage)
    assert [e.sequence for e in entries] == [1, 2, 3] and {e.instance for e in entries} == instances
    assert await pending_ids(feed_storage) == []
    assert await outbox_rows(feed_storage, first) == await outbox_rows(feed_storage, second) == []


async def test_a_request_announcement_stays_until_every_change_it_counts_is_in_the_feed(feed_storage: Storage) -> None:
    request, first, second = new_version(), uid(), uid()
    await _announce_request(feed_storage, request, [first, second], 3)
    await _commit_request_outbox(feed_storage, first, request, "a", 2)

    assert await sequence_pending(feed_storage) == 2
    assert await pending_ids(feed_storage) == [request]  # its other commit may still land

    await _commit_request_outbox(feed_storage, second, request, "b", 1)
    assert await sequence_pending(feed_storage) == 1
    assert await pending_ids(feed_storage) == []
    assert [e.sequence for e in await all_entries(feed_storage)] == [1, 2, 3]


async def test_a_request_that_failed_part_way_is_dropped_after_the_timeout(feed_storage: Storage) -> None:
    request, study = new_version(), uid()
    await _announce_request(feed_storage, request, [study], 3, at=T0)
    await _commit_request_outbox(feed_storage, study, request, "a", 2)

    assert await sequence_pending(feed_storage, clock=lambda: T0 + ANNOUNCEMENT_TIMEOUT - timedelta(seconds=1)) == 2
    assert await pending_ids(feed_storage) == [request]
    assert await sequence_pending(feed_storage, clock=lambda: T0 + ANNOUNCEMENT_TIMEOUT + timedelta(seconds=1)) == 0
    assert await pending_ids(feed_storage) == []


async def test_a_request_announced_again_after_its_announcement_was_removed_is_appended(feed_storage: Storage) -> None:
    request, study = new_version(), uid()
    await _announce_request(feed_storage, request, [study], 1)
    await _commit_request_outbox(feed_storage, study, request, "a", 1)
    assert await sequence_pending(feed_storage) == 1
    assert await pending_ids(feed_storage) == []

    # Its next part: the request writes its announcement again (now counting 2 changes), then commits.
    await _announce_request(feed_storage, request, [study], 2)
    await _commit_request_outbox(feed_storage, study, request, "b", 1)

    assert await sequence_pending(feed_storage) == 1
    assert await pending_ids(feed_storage) == []  # the earlier change counts, by its done row
    assert [e.sequence for e in await all_entries(feed_storage)] == [1, 2]


async def test_an_announcement_written_again_while_a_sequencer_runs_is_kept(
    feed_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    request, study = new_version(), uid()
    await _announce_request(feed_storage, request, [study], 1)
    await _commit_request_outbox(feed_storage, study, request, "a", 1)
    append = sequencer._append

    async def append_while_the_request_announces_more(*args: Any, **kwargs: Any) -> Any:
        appended = await append(*args, **kwargs)
        await _announce_request(feed_storage, request, [study], 2)  # after the sequencer read it
        return appended

    monkeypatch.setattr(sequencer, "_append", append_while_the_request_announces_more)
    assert await sequence_pending(feed_storage) == 1
    monkeypatch.setattr(sequencer, "_append", append)

    assert await pending_ids(feed_storage) == [request]  # deleted only with the ETag it was read with
    await _commit_request_outbox(feed_storage, study, request, "b", 1)
    assert await sequence_pending(feed_storage) == 1
    assert await pending_ids(feed_storage) == []


async def test_outboxes_of_one_study_are_read_with_one_query_and_deleted_in_one_transaction(
    feed_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = uid()
    for _ in range(20):
        request = new_version()
        await _announce_request(feed_storage, request, [study], 1)
        await _commit_request_outbox(feed_storage, study, request, "a", 1)
    queries = _count_partition_queries(monkeypatch)
    transactions: list[int] = []
    submit = TableClient.submit_transaction

    async def counting_transaction(self: TableClient, operations: list, **kwargs: Any) -> Any:
        if self.table_name.startswith(feed_storage.studies.table_name):
            transactions.append(len(operations))
        return await submit(self, operations, **kwargs)

    monkeypatch.setattr(TableClient, "submit_transaction", counting_transaction)

    assert await sequence_pending(feed_storage) == 20
    assert queries == [study]
    assert transactions == [20]
    assert await outbox_rows(feed_storage, study) == [] and await pending_ids(feed_storage) == []


async def test_a_stow_request_into_two_studies_is_sequenced_from_its_confirmation(
    feed_storage: Storage, stow_parts
) -> None:
    studies = [uid(), uid()]
    await store(stow_parts, feed_storage, [make_instance(study=study) for study in studies])
    [announcement] = await pending_announcements(feed_storage)
    confirmed = {(o.study, o.change_id) for o in announcement.landed}
    in_partitions = {(study, key[len("change|"):])
                     for study in studies for key in await outbox_rows(feed_storage, study)}

    assert announcement.confirms_all() and confirmed == in_partitions and len(confirmed) == 2
    assert await sequence_pending(feed_storage) == 2
    assert {e.study for e in await all_entries(feed_storage)} == set(studies)


def _count_partition_queries(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The partitions the sequencer queries from now on (recorded, then queried as usual)."""
    queries: list[str] = []
    query_all = sequencer.query_all

    async def counting(table: Any, query: str, **kwargs: Any) -> Any:
        queries.append(kwargs["parameters"]["pk"])
        return await query_all(table, query, **kwargs)

    monkeypatch.setattr(sequencer, "query_all", counting)
    return queries
