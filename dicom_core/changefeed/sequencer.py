"""The change feed's sequencer: committed outbox rows are appended to the feed with the next sequence numbers.

Writers never touch the feed partition: they commit an outbox row with their data and announce it in ``pending``
(``index/outbox.py``). ``sequence_pending`` moves committed outbox rows into the feed (``feed_reads.py``). Every
append is one entity-group transaction in the ``feed`` partition that updates the ``counter`` row with If-Match, so
appends are serialized however many sequencers run: sequence numbers are 1, 2, 3, ... without gaps or repeats,
and a reader that reads the counter first never sees entry n+1 without entry n. An outbox's ``done|{change id}``
row says how many of its changes were appended. See docs/storage.md.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import EdmType, EntityProperty, TableEntity, TableTransactionError
from azure.data.tables.aio import TableClient

from dicom_core.changefeed.feed_reads import (
    COUNTER_ROW,
    FEED_PARTITION,
    FeedCounter,
    int_property,
    read_counter,
    sequence_row_key,
    time_row_key,
)
from dicom_core.index.outbox import ANNOUNCEMENT_TIMEOUT, PENDING_PARTITION, Change, ChangeAction, outbox_row_key
from dicom_core.model.epoch import EPOCH, to_micros
from dicom_core.storage.clients import Storage
from dicom_core.storage.concurrency import bounded_gather, jittered_backoff
from dicom_core.storage.faults import error_code
from dicom_core.storage.tables import (
    Operation,
    delete_entity_quietly,
    etag_of,
    get_entity_or_none,
    replace_if_unchanged,
)

LOGGER = logging.getLogger(__name__)

DONE_PREFIX = "done|"
MAX_TRANSACTION_OPERATIONS = 100  # Table Storage's limit for one entity-group transaction
PENDING_PAGE = 100
READ_CONCURRENCY = 16
DEFAULT_MAX_CHANGES = 10_000
MAX_APPEND_CONFLICTS = 50
_MAX_BACKOFF_SECONDS = 0.2
_RETRY_CODES = frozenset({"EntityAlreadyExists", "UpdateConditionNotSatisfied"})

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The sequencer's default clock."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Outbox:
    """A committed outbox row: the changes of one transaction in a study partition."""

    change_id: str
    study: str
    changes: tuple[Change, ...]


async def sequence_pending(storage: Storage, *, max_changes: int = DEFAULT_MAX_CHANGES, clock: Clock = utc_now) -> int:
    """Append committed, announced outbox rows to the feed (oldest first); return how many changes were appended."""
    appended = 0
    async for page in _pending_pages(storage):
        outboxes = await _committed_outboxes(storage, page, clock())
        appended += await _append(storage, outboxes, clock)
        if appended >= max_changes:
            break
    return appended


async def _pending_pages(storage: Storage) -> AsyncIterator[list[TableEntity]]:
    pages = storage.changes.query_entities(
        "PartitionKey eq @partition", parameters={"partition": PENDING_PARTITION}, results_per_page=PENDING_PAGE
    ).by_page()
    try:
        async for page in pages:
            entities = [entity async for entity in page]
            if entities:
                yield sorted(entities, key=lambda e: (e.get("AnnouncedAt") or EPOCH, e["RowKey"]))
    except ResourceNotFoundError:
        return  # the table is gone: nothing was announced


async def _committed_outboxes(storage: Storage, announcements: list[TableEntity], now: datetime) -> list[Outbox]:
    async def read(announcement: TableEntity) -> Outbox | None:
        change_id, study = str(announcement["RowKey"]), str(announcement["Study"])
        row = await get_entity_or_none(storage.studies, study, outbox_row_key(change_id))
        if row is None:
            announced_at = announcement.get("AnnouncedAt")
            if announced_at is None or now - announced_at > ANNOUNCEMENT_TIMEOUT:
                # Its commit failed or its writer died; or it was appended and only this entry was left behind.
                LOGGER.info("Dropping announcement %s of study %s: no outbox row", change_id, study)
                await _quietly_delete(storage.changes, PENDING_PARTITION, change_id)
            return None
        return Outbox(change_id, study, _parse_changes(str(row["Changes"])))

    found = await bounded_gather((read(announcement) for announcement in announcements), limit=READ_CONCURRENCY)
    return [outbox for outbox in found if outbox is not None]


def _parse_changes(text: str) -> tuple[Change, ...]:
    return tuple(
        Change(action=ChangeAction(record["action"]), series=record["series"], instance=record["instance"],
               version=record["version"])
        for record in json.loads(text)
    )


async def _append(storage: Storage, outboxes: list[Outbox], clock: Clock) -> int:
    """Append every change of ``outboxes`` not appended yet, one transaction after another."""
    appended, conflicts = 0, 0
    remaining = list(outboxes)
    partial: set[str] = set()
    while remaining:
        # The counter first: the done rows read after it are at least as new as the ETag the append is guarded by.
        counter = await read_counter(storage)
        candidates = _fitting(remaining)
        # Until a conflict, assume nothing of these was appended (the done rows' `create` would fail if it was),
        # except the outboxes this run appended a part of.
        done: list[TableEntity | None] = (
            await bounded_gather((get_entity_or_none(storage.changes, FEED_PARTITION, DONE_PREFIX + o.change_id)
                                  for o in candidates), limit=READ_CONCURRENCY)
            if conflicts or any(o.change_id in partial for o in candidates) else [None] * len(candidates)
        )
        through = {o.change_id: int_property(row["Through"]) if row else 0
                   for o, row in zip(candidates, done, strict=True)}
        finished = [o for o in candidates if through[o.change_id] >= len(o.changes)]
        operations, count, completed = _append_operations(counter, candidates, through, done, to_micros(clock()))
        if not operations:
            await _clean_up(storage, finished)
            remaining = [o for o in remaining if o not in finished]
            continue
        try:
            await storage.recreating_missing(functools.partial(storage.changes.submit_transaction, operations))
        except TableTransactionError as exc:
            if error_code(exc) not in _RETRY_CODES:
                raise
            conflicts += 1
            if conflicts >= MAX_APPEND_CONFLICTS:
                raise TimeoutError(
                    "The change feed kept changing; the next sequencer run will append the rest"
                ) from exc
            # Another sequencer appended first: read again what it did, with jitter to spread the herd.
            await jittered_backoff(conflicts, max_seconds=_MAX_BACKOFF_SECONDS)
            continue
        appended += count
        await _clean_up(storage, [*finished, *completed])
        gone = {o.change_id for o in (*finished, *completed)}
        partial = {o.change_id for o in candidates if o.change_id not in gone}
        remaining = [o for o in remaining if o.change_id not in gone]
    return appended


def _fitting(outboxes: list[Outbox]) -> list[Outbox]:
    """The leading outboxes whose done rows one transaction could hold (each costs 1 + 2 per change)."""
    room, chosen = MAX_TRANSACTION_OPERATIONS - 1, []
    for outbox in outboxes:
        if room < 3:
            break
        chosen.append(outbox)
        room -= 1 + 2 * max(1, len(outbox.changes))
    return chosen




def _append_operations(
    counter: FeedCounter, outboxes: list[Outbox], through: dict[str, int], done: Sequence[TableEntity | None],
    now_us: int,
) -> tuple[list[Operation], int, list[Outbox]]:
    """Build one append: the counter, then each outbox's next changes (as many as fit) and its done row."""
    sequence, last_us = counter.last_sequence, counter.last_timestamp_us
    room = MAX_TRANSACTION_OPERATIONS - 1
    body: list[Operation] = []
    completed: list[Outbox] = []
    for outbox, done_row in zip(outboxes, done, strict=True):
        start = through[outbox.change_id]
        if start >= len(outbox.changes):
            continue
        take = min(len(outbox.changes) - start, (room - 1) // 2)
        if take <= 0:
            break
        for index in range(start, start + take):
            sequence += 1
            last_us = max(now_us, last_us + 1)  # forced monotonic: time order is sequence order
            body.extend(_entry_operations(outbox, index, sequence, last_us))
        done_entity = {"PartitionKey": FEED_PARTITION, "RowKey": DONE_PREFIX + outbox.change_id,
                       "Through": start + take, "Study": outbox.study, "LastSequence": _int64(sequence)}
        # create: a second sequencer including the same outbox fails and reads again.
        body.append(("create", done_entity) if done_row is None
                    else replace_if_unchanged(done_entity, etag_of(done_row)))
        room -= 1 + 2 * take
        if start + take == len(outbox.changes):
            completed.append(outbox)
    if not body:
        return [], 0, []
    counter_entity = {"PartitionKey": FEED_PARTITION, "RowKey": COUNTER_ROW,
                      "LastSequence": _int64(sequence), "LastTimestampUs": _int64(last_us)}
    counter_operation: Operation = (
        ("create", counter_entity) if counter.etag is None else replace_if_unchanged(counter_entity, counter.etag)
    )
    return [counter_operation, *body], sequence - counter.last_sequence, completed


def _entry_operations(outbox: Outbox, index: int, sequence: int, micros: int) -> list[Operation]:
    change = outbox.changes[index]
    entry = {
        "PartitionKey": FEED_PARTITION, "RowKey": sequence_row_key(sequence),
        "Sequence": _int64(sequence), "TimestampUs": _int64(micros), "Action": change.action.value,
        "Study": outbox.study, "Series": change.series, "Instance": change.instance, "Version": change.version,
        "ChangeId": outbox.change_id, "ChangeIndex": index,
    }
    pointer = {"PartitionKey": FEED_PARTITION, "RowKey": time_row_key(micros, sequence), "Sequence": _int64(sequence)}
    return [("create", entry), ("create", pointer)]


async def _clean_up(storage: Storage, outboxes: Sequence[Outbox]) -> None:
    """Delete the outbox rows, then the announcements, of fully appended outboxes (a leftover is harmless)."""
    await asyncio.gather(*(_quietly_delete(storage.studies, o.study, outbox_row_key(o.change_id)) for o in outboxes))
    await asyncio.gather(*(_quietly_delete(storage.changes, PENDING_PARTITION, o.change_id) for o in outboxes))


def _int64(value: int) -> EntityProperty:
    return EntityProperty(value, EdmType.INT64)



async def _quietly_delete(table: TableClient, partition: str, row: str) -> None:
    try:
        await delete_entity_quietly(table, partition, row)
    except ResourceExistsError:
        pass
    except Exception:
        LOGGER.warning("Could not delete %s/%s; the next sequencer run will", partition, row, exc_info=True)
