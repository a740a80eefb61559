"""Pruning done rows: gone once old and their outbox rows are gone; the feed and exactly-once unaffected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dicom_core.changefeed.feed_reads import FEED_PARTITION
from dicom_core.changefeed.pruning import CURSOR_ROW, PRUNE_AFTER, prune_done_rows
from dicom_core.changefeed.sequencer import DONE_PREFIX, sequence_outbox_rows, sequence_pending
from dicom_core.index.outbox import Change, ChangeAction, outbox_operation
from dicom_core.model.identifiers import new_version
from dicom_core.storage.clients import Storage
from tests.dicom_core.changefeed.feed_support import all_entries, store, uid
from tests.factories import make_instance


def _later() -> datetime:
    """A moment past the prune age of rows written now (taken when used: a long run imports tests early)."""
    return datetime.now(UTC) + PRUNE_AFTER + timedelta(hours=1)


async def _done_rows(storage: Storage) -> list[str]:
    rows = storage.changes.query_entities("PartitionKey eq @pk and RowKey gt @low and RowKey lt @high",
                                          parameters={"pk": FEED_PARTITION, "low": DONE_PREFIX, "high": "done}"})
    return [str(row["RowKey"]) async for row in rows]


async def test_old_done_rows_of_sequenced_outboxes_are_pruned_and_the_feed_stays(feed_storage: Storage,
                                                                                 stow_parts) -> None:
    for _ in range(3):
        await store(stow_parts, feed_storage, [make_instance()])
    await sequence_pending(feed_storage)
    feed = await all_entries(feed_storage)
    assert len(await _done_rows(feed_storage)) == 3

    assert await prune_done_rows(feed_storage, now=_later()) == 3

    assert await _done_rows(feed_storage) == [] and await all_entries(feed_storage) == feed


async def test_young_done_rows_are_kept(feed_storage: Storage, stow_parts) -> None:
    await store(stow_parts, feed_storage, [make_instance()])
    await sequence_pending(feed_storage)

    assert await prune_done_rows(feed_storage) == 0
    assert len(await _done_rows(feed_storage)) == 1


async def test_a_done_row_whose_outbox_row_is_still_there_is_kept_so_it_is_not_appended_again(
        feed_storage: Storage) -> None:
    study = uid()
    change_id = new_version()
    await feed_storage.studies.submit_transaction([outbox_operation(
        study, change_id, [Change(ChangeAction.CREATE, "1.2", "1.2.3", "v")], datetime.now(UTC))])
    [row] = [r async for r in feed_storage.studies.query_entities("PartitionKey eq @pk", parameters={"pk": study})]
    assert await sequence_outbox_rows(feed_storage, [row]) == 1
    await feed_storage.studies.create_entity(row)  # as if the outbox row's delete had failed

    assert await prune_done_rows(feed_storage, now=_later()) == 0
    assert await sequence_outbox_rows(feed_storage, [row]) == 0
    assert len(await all_entries(feed_storage)) == 1


async def test_a_run_prunes_at_most_its_limit(feed_storage: Storage, stow_parts) -> None:
    for _ in range(3):
        await store(stow_parts, feed_storage, [make_instance()])
    await sequence_pending(feed_storage)

    assert await prune_done_rows(feed_storage, now=_later(), limit=2) == 2
    assert await prune_done_rows(feed_storage, now=_later(), limit=2) == 1


async def test_a_done_row_of_a_confirmed_outbox_left_in_place_is_never_pruned(
        feed_storage: Storage, stow_parts) -> None:
    await store(stow_parts, feed_storage, [make_instance(), make_instance()])  # two studies: confirmed, kept
    await sequence_pending(feed_storage)
    kept = await _done_rows(feed_storage)
    assert len(kept) == 2

    assert await prune_done_rows(feed_storage, now=_later()) == 0

    assert await _done_rows(feed_storage) == kept


async def test_a_run_moves_its_cursor_past_rows_kept_for_good_and_still_prunes_the_rows_after(
        feed_storage: Storage, stow_parts) -> None:
    await store(stow_parts, feed_storage, [make_instance(), make_instance()])  # two studies: confirmed, kept
    await sequence_pending(feed_storage)
    kept = await _done_rows(feed_storage)
    assert await prune_done_rows(feed_storage, now=_later()) == 0
    cursor = await feed_storage.changes.get_entity(FEED_PARTITION, CURSOR_ROW)
    assert cursor["Through"] == max(kept)
    await store(stow_parts, feed_storage, [make_instance()])  # one study: its outbox row is read and deleted
    await sequence_pending(feed_storage)

    assert await prune_done_rows(feed_storage, now=_later()) == 1

    assert await _done_rows(feed_storage) == kept
