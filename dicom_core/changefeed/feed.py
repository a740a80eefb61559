"""The global change feed: one partition of the Changes table, appended to by the sequencer, read by sequence or time.

Writers never touch this partition: they commit an outbox row with their data and announce it in ``pending``
(``change_feed_outbox.py``). ``sequence_pending`` moves committed outbox rows here. Every append is one
entity-group transaction in the ``feed`` partition that updates the ``counter`` row with If-Match, so appends
are serialized however many sequencers run: sequence numbers are 1, 2, 3, ... without gaps or repeats, and a
reader that reads the counter first never sees entry n+1 without entry n. See docs/storage.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import EdmType, EntityProperty, TableEntity, TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient

from dicom_core.index.outbox import ANNOUNCEMENT_TIMEOUT, PENDING_PARTITION, Change, ChangeAction, outbox_row_key
from dicom_core.storage.clients import Storage

LOGGER = logging.getLogger(__name__)
T = TypeVar("T")

FEED_PARTITION = "feed"
COUNTER_ROW = "counter"
SEQUENCE_PREFIX = "seq|"
TIME_PREFIX = "time|"
DONE_PREFIX = "done|"
MAX_TRANSACTION_OPERATIONS = 100  # Table Storage's limit for one entity-group transaction
PENDING_PAGE = 100
READ_CONCURRENCY = 16
DEFAULT_MAX_CHANGES = 10_000
MAX_APPEND_CONFLICTS = 50
_MAX_BACKOFF_SECONDS = 0.2
_RETRY_CODES = frozenset({"EntityAlreadyExists", "UpdateConditionNotSatisfied"})
_MAX_TIME_KEY = 10**17 - 1
_RANGE_FILTER = "PartitionKey eq @partition and RowKey ge @low and RowKey le @high"
_FIRST_FILTER = "PartitionKey eq @partition and RowKey ge @low and RowKey lt @high"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The sequencer's default clock."""
    return datetime.now(timezone.utc)


def to_micros(moment: datetime) -> int:
    """Microseconds since 1970 of an aware datetime."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def sequence_row_key(sequence: int) -> str:
    """RowKey of the feed entry with ``sequence``."""
    return f"{SEQUENCE_PREFIX}{sequence:019d}"


def time_row_key(micros: int, sequence: int) -> str:
    """RowKey of the time pointer of an entry (time order is sequence order)."""
    return f"{TIME_PREFIX}{_clamp_time(micros):017d}|{sequence:019d}"


@dataclass(frozen=True)
class FeedEntry:
    """One change as the feed recorded it."""

    sequence: int
    timestamp_us: int
    action: ChangeAction
    study: str
    series: str
    instance: str
    version: str


@dataclass(frozen=True)
class FeedCounter:
    """The counter row: the last sequence and timestamp appended, and the ETag to append after them."""

    last_sequence: int = 0
    last_timestamp_us: int = 0
    etag: str | None = None


@dataclass(frozen=True)
class Outbox:
    """A committed outbox row: the changes of one transaction in a study partition."""

    change_id: str
    study: str
    changes: tuple[Change, ...]


# --- Sequencing --------------------------------------------------------------------------------------------


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
                yield sorted(entities, key=lambda e: (e.get("AnnouncedAt") or _EPOCH, e["RowKey"]))
    except ResourceNotFoundError:
        return  # the table is gone: nothing was announced


async def _committed_outboxes(storage: Storage, announcements: list[TableEntity], now: datetime) -> list[Outbox]:
    async def read(announcement: TableEntity) -> Outbox | None:
        change_id, study = str(announcement["RowKey"]), str(announcement["Study"])
        try:
            row = await storage.studies.get_entity(study, outbox_row_key(change_id))
        except ResourceNotFoundError:
            announced_at = announcement.get("AnnouncedAt")
            if announced_at is None or now - announced_at > ANNOUNCEMENT_TIMEOUT:
                # Its commit failed or its writer died; or it was appended and only this entry was left behind.
                LOGGER.info("Dropping announcement %s of study %s: no outbox row", change_id, study)
                await _quietly_delete(storage.changes, PENDING_PARTITION, change_id)
            return None
        return Outbox(change_id, study, _parse_changes(str(row["Changes"])))

    found = await _bounded(read(announcement) for announcement in announcements)
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
            await _bounded(_get(storage.changes, FEED_PARTITION, DONE_PREFIX + o.change_id) for o in candidates)
            if conflicts or any(o.change_id in partial for o in candidates) else [None] * len(candidates)
        )
        through = {o.change_id: _int(row["Through"]) if row else 0 for o, row in zip(candidates, done)}
        finished = [o for o in candidates if through[o.change_id] >= len(o.changes)]
        operations, count, completed = _append_operations(counter, candidates, through, done, to_micros(clock()))
        if not operations:
            await _clean_up(storage, finished)
            remaining = [o for o in remaining if o not in finished]
            continue
        try:
            await storage.recreating_missing(lambda: storage.changes.submit_transaction(operations))
        except TableTransactionError as exc:
            if exc.error_code not in _RETRY_CODES:
                raise
            conflicts += 1
            if conflicts >= MAX_APPEND_CONFLICTS:
                raise TimeoutError("The change feed kept changing; the next sequencer run will append the rest") from exc
            # Another sequencer appended first: read again what it did, with jitter to spread the herd.
            await asyncio.sleep(random.uniform(0, min(_MAX_BACKOFF_SECONDS, 0.005 * 2**conflicts)))
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


Operation = tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], dict[str, Any]]


def _append_operations(
    counter: FeedCounter, outboxes: list[Outbox], through: dict[str, int], done: Sequence[TableEntity | None],
    now_us: int,
) -> tuple[list[Operation], int, list[Outbox]]:
    """Build one append: the counter, then each outbox's next changes (as many as fit) and its done row."""
    sequence, last_us = counter.last_sequence, counter.last_timestamp_us
    room = MAX_TRANSACTION_OPERATIONS - 1
    body: list[Operation] = []
    completed: list[Outbox] = []
    for outbox, done_row in zip(outboxes, done):
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
        body.append(("create", done_entity) if done_row is None else _if_match(done_entity, done_row.metadata["etag"]))
        room -= 1 + 2 * take
        if start + take == len(outbox.changes):
            completed.append(outbox)
    if not body:
        return [], 0, []
    counter_entity = {"PartitionKey": FEED_PARTITION, "RowKey": COUNTER_ROW,
                      "LastSequence": _int64(sequence), "LastTimestampUs": _int64(last_us)}
    counter_operation: Operation = (
        ("create", counter_entity) if counter.etag is None else _if_match(counter_entity, counter.etag)
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


# --- Reads -------------------------------------------------------------------------------------------------


async def read_counter(storage: Storage) -> FeedCounter:
    """The feed's counter (zero and no ETag while nothing was ever appended)."""
    row = await _get(storage.changes, FEED_PARTITION, COUNTER_ROW)
    if row is None:
        return FeedCounter()
    return FeedCounter(_int(row["LastSequence"]), _int(row["LastTimestampUs"]), row.metadata["etag"])


async def entries_after(storage: Storage, after: int, limit: int) -> list[FeedEntry]:
    """Up to ``limit`` entries with a sequence greater than ``after``, in sequence order."""
    counter = await read_counter(storage)
    return await _sequence_range(storage, after + 1, min(after + limit, counter.last_sequence))


async def entries_in_window(storage: Storage, start_us: int, end_us: int, offset: int, limit: int) -> list[FeedEntry]:
    """Entries with ``start_us <= timestamp < end_us``, skipping the first ``offset`` of them, in time order."""
    counter = await read_counter(storage)
    first = await _first_in_window(storage, start_us, end_us)
    if first is None or first > counter.last_sequence:
        return []
    low = first + offset
    entries = await _sequence_range(storage, low, min(low + limit - 1, counter.last_sequence))
    return [entry for entry in entries if entry.timestamp_us < end_us]


async def latest_entry(storage: Storage) -> FeedEntry | None:
    """The entry with the highest sequence (also the latest by time), or None for an empty feed."""
    counter = await read_counter(storage)
    if counter.last_sequence == 0:
        return None
    row = await _get(storage.changes, FEED_PARTITION, sequence_row_key(counter.last_sequence))
    return _entry(row) if row is not None else None


async def _first_in_window(storage: Storage, start_us: int, end_us: int) -> int | None:
    parameters = {"partition": FEED_PARTITION, "low": f"{TIME_PREFIX}{_clamp_time(start_us):017d}",
                  "high": f"{TIME_PREFIX}{_clamp_time(end_us):017d}"}
    pages = storage.changes.query_entities(_FIRST_FILTER, parameters=parameters, results_per_page=1,
                                           select=["Sequence"]).by_page()
    try:
        async for page in pages:
            async for row in page:
                return _int(row["Sequence"])
    except ResourceNotFoundError:
        return None
    return None


async def _sequence_range(storage: Storage, low: int, high: int) -> list[FeedEntry]:
    if high < low:
        return []
    parameters = {"partition": FEED_PARTITION, "low": sequence_row_key(low), "high": sequence_row_key(high)}
    try:
        return [_entry(row) async for row in storage.changes.query_entities(_RANGE_FILTER, parameters=parameters)]
    except ResourceNotFoundError:
        return []


def _entry(row: TableEntity) -> FeedEntry:
    return FeedEntry(
        sequence=_int(row["Sequence"]), timestamp_us=_int(row["TimestampUs"]), action=ChangeAction(row["Action"]),
        study=str(row["Study"]), series=str(row["Series"]), instance=str(row["Instance"]), version=str(row["Version"]),
    )


# --- Helpers -----------------------------------------------------------------------------------------------


def _clamp_time(micros: int) -> int:
    return min(max(micros, 0), _MAX_TIME_KEY)


def _int64(value: int) -> EntityProperty:
    return EntityProperty(value, EdmType.INT64)


def _int(value: Any) -> int:
    """An integer property as read back (Int64 properties come back as EntityProperty)."""
    return int(value.value if isinstance(value, EntityProperty) else value)


def _if_match(entity: dict[str, Any], etag: str) -> Operation:
    return ("update", entity, {"mode": UpdateMode.REPLACE, "etag": etag, "match_condition": MatchConditions.IfNotModified})


async def _get(table: TableClient, partition: str, row: str) -> TableEntity | None:
    try:
        return await table.get_entity(partition, row)
    except ResourceNotFoundError:
        return None


async def _quietly_delete(table: TableClient, partition: str, row: str) -> None:
    try:
        await table.delete_entity(partition, row)
    except (ResourceNotFoundError, ResourceExistsError):
        pass
    except Exception:
        LOGGER.warning("Could not delete %s/%s; the next sequencer run will", partition, row, exc_info=True)


async def _bounded(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Await ``awaitables`` with at most READ_CONCURRENCY in flight; results in order."""
    slots = asyncio.Semaphore(READ_CONCURRENCY)

    async def run(awaitable: Awaitable[T]) -> T:
        async with slots:
            return await awaitable

    return list(await asyncio.gather(*(run(a) for a in awaitables)))
