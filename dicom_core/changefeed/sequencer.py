"""The change feed's sequencer: committed outbox rows are appended to the feed with the next sequence numbers.

Writers never touch the feed partition: they commit outbox rows with their data and announce them in ``pending``
(``index/outbox.py``). ``sequence_pending`` moves committed outbox rows into the feed (``feed_reads.py``). Every
append is one entity-group transaction in the ``feed`` partition that updates the ``counter`` row with If-Match, so
appends are serialized however many sequencers run: sequence numbers are 1, 2, 3, ... without gaps or repeats,
and a reader that reads the counter first never sees entry n+1 without entry n. An outbox's ``done|{change id}``
row says how many of its changes were appended. An announcement is deleted once every change it counts is in the
feed, or once it is older than the timeout (no commit it covers can land any more); a STOW request's intent
first hands the blobs it named that no appended change proves committed to the cleanup (``intent_retirement.py``).
An announcement that confirms every change it counts (``Landed``: outbox rows whose transactions answered success)
is appended from what it confirms, without reading the study partitions, and those outbox rows stay where they are
(their done rows, marked ``Kept``, stay with them). See docs/storage.md.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import EdmType, EntityProperty, TableEntity, TableTransactionError

from dicom_core.changefeed.feed_reads import (
    COUNTER_ROW,
    FEED_PARTITION,
    FeedCounter,
    int_property,
    read_counter,
    sequence_row_key,
    time_row_key,
)
from dicom_core.changefeed.intent_retirement import committed_versions, hand_over_targets
from dicom_core.index.outbox import (
    OUTBOX_PREFIX,
    PENDING_PARTITION,
    Announcement,
    Change,
    announcement_of,
    outbox_range,
    parse_announcement,
    parse_changes,
)
from dicom_core.model.epoch import EPOCH, to_micros
from dicom_core.storage.batch_deletes import RowDelete, delete_rows
from dicom_core.storage.clients import Storage
from dicom_core.storage.concurrency import bounded_gather, jittered_backoff
from dicom_core.storage.faults import error_code
from dicom_core.storage.tables import Operation, etag_of, get_entity_or_none, query_all, replace_if_unchanged

LOGGER = logging.getLogger(__name__)

DONE_PREFIX = "done|"
KEPT = "Kept"  # on a done row: its outbox row stays in its partition (pruning keeps the done row)
MAX_TRANSACTION_OPERATIONS = 100  # Table Storage's limit for one entity-group transaction
PENDING_PAGE = 100
READ_CONCURRENCY = 16
DEFAULT_MAX_CHANGES = 10_000
MAX_APPEND_CONFLICTS = 50
_MAX_BACKOFF_SECONDS = 0.2
_RETRY_CODES = frozenset({"EntityAlreadyExists", "UpdateConditionNotSatisfied"})
_RANGE_FILTER = "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high"
_RANGE_END = "}"  # sorts right after "|"

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
    kept: bool = False  # confirmed by its writer: appended without a read, and left in its partition


async def sequence_pending(storage: Storage, *, max_changes: int = DEFAULT_MAX_CHANGES, clock: Clock = utc_now) -> int:
    """Append committed, announced outbox rows to the feed (oldest first); return how many changes were appended."""
    appended = 0
    async for page in _pending_pages(storage):
        announcements = [parse_announcement(entity) for entity in page]
        count, in_feed = await _append(storage, await _committed_outboxes(storage, announcements), clock)
        appended += count
        await _clean_up(storage, announcements, in_feed, clock())
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


async def _committed_outboxes(storage: Storage, announcements: list[Announcement]) -> list[Outbox]:
    """The outbox rows the announcements cover, in their order: those their writers confirmed as they are, the
    others with one range query per study partition."""
    confirmed = [Outbox(outbox.change_id, outbox.study, outbox.changes, kept=True)
                 for announcement in announcements if announcement.confirms_all() for outbox in announcement.landed]
    by_study: dict[str, list[Announcement]] = {}
    for announcement in announcements:
        if not announcement.confirms_all():
            for study in announcement.studies:
                by_study.setdefault(study, []).append(announcement)

    async def read(study: str, covering: list[Announcement]) -> list[Outbox]:
        # The rows of the covering announcements' ids (ids start with their time: confirmed rows kept in the
        # partition by older requests sort before them).
        ids = {announcement.change_id for announcement in covering}
        low, high = outbox_range(min(ids), max(ids))
        rows = await query_all(storage.studies, _RANGE_FILTER, parameters={"pk": study, "low": low, "high": high},
                               select=["RowKey", "Changes"])
        found = [(str(row["RowKey"])[len(OUTBOX_PREFIX):], row) for row in rows]
        return [Outbox(change_id, study, parse_changes(str(row["Changes"])))
                for change_id, row in found if announcement_of(change_id) in ids]

    read_studies = await bounded_gather((read(study, covering) for study, covering in by_study.items()),
                                        limit=READ_CONCURRENCY)
    order = {announcement.change_id: index for index, announcement in enumerate(announcements)}
    return sorted((outbox for outboxes in [confirmed, *read_studies] for outbox in outboxes),
                  key=lambda outbox: (order[announcement_of(outbox.change_id)], outbox.change_id))


async def _append(storage: Storage, outboxes: list[Outbox], clock: Clock) -> tuple[int, list[Outbox]]:
    """Append every change of ``outboxes`` not appended yet, one transaction after another.

    Return how many changes this call appended, and the outboxes whose every change is in the feed now.
    """
    appended, conflicts = 0, 0
    remaining = list(outboxes)
    partial: set[str] = set()
    in_feed: list[Outbox] = []
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
        # Outboxes appended whole already: their done rows say whether they stay in their partitions.
        finished = [replace(o, kept=bool(row is not None and row.get(KEPT)))
                    for o, row in zip(candidates, done, strict=True) if through[o.change_id] >= len(o.changes)]
        operations, count, completed = _append_operations(counter, candidates, through, done, to_micros(clock()))
        if not operations:
            in_feed += finished
            ended = {o.change_id for o in finished}
            remaining = [o for o in remaining if o.change_id not in ended]
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
        in_feed += [*finished, *completed]
        gone = {o.change_id for o in (*finished, *completed)}
        partial = {o.change_id for o in candidates if o.change_id not in gone}
        remaining = [o for o in remaining if o.change_id not in gone]
    return appended, in_feed


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
                       "Through": start + take, "Study": outbox.study, "LastSequence": _int64(sequence),
                       **({KEPT: True} if outbox.kept else {})}
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


async def _clean_up(storage: Storage, announcements: list[Announcement], in_feed: list[Outbox], now: datetime) -> None:
    """Delete the outbox rows in the feed, then the announcements that are done (a leftover is harmless).

    Outbox rows go in a transaction per study partition, announcements in transactions in ``pending``, each
    with If-Match: a request that announced more changes meanwhile keeps its announcement.
    """
    await _delete_outboxes(storage, in_feed)
    appended: dict[str, int] = {}
    for outbox in in_feed:
        key = announcement_of(outbox.change_id)
        appended[key] = appended.get(key, 0) + len(outbox.changes)

    async def done(announcement: Announcement) -> bool:
        if announcement.change_id in appended and (announcement.changes is None
                                                   or appended[announcement.change_id] >= announcement.changes):
            return True  # every change it counts is in the feed
        if announcement.expired(now):
            # Its commits failed or its writer died; or it was appended and only this entry was left behind.
            LOGGER.info("Dropping announcement %s of %s: not all its outbox rows appeared", announcement.change_id,
                        ", ".join(announcement.studies))
            return True
        if announcement.changes is None:
            return False  # its one outbox row is not committed yet
        if announcement.changes == 0:
            return True  # an intent that counts no change (yet): its targets go to the cleanup
        # Some of its changes may have been appended by earlier runs (their outbox rows are gone): count them.
        try:
            return await _appended_changes(storage, announcement.change_id) >= announcement.changes
        except Exception:
            LOGGER.warning("Could not count the appended changes of %s; the next sequencer run will",
                           announcement.change_id, exc_info=True)
            return False

    finished = await bounded_gather((done(announcement) for announcement in announcements), limit=READ_CONCURRENCY)
    retiring = [a for a, gone in zip(announcements, finished, strict=True) if gone]
    with_targets = [a for a in retiring if a.targets or a.replaced]
    handed = await hand_over_targets(storage, with_targets, committed_versions((o.study, o.changes) for o in in_feed),
                                     now)
    rows = [RowDelete(a.change_id, a.etag or None) for a in retiring
            if not (a.targets or a.replaced) or a.change_id in handed]
    await _quietly(delete_rows(storage.changes, PENDING_PARTITION, rows), PENDING_PARTITION)


async def sequence_outbox_rows(storage: Storage, rows: Sequence[TableEntity], *, clock: Clock = utc_now) -> int:
    """Append committed outbox rows that no announcement covers any more (their writer stalled past the window).

    The done rows keep it exactly once, as for announced rows; return how many changes were appended.
    """
    outboxes = [Outbox(str(row["RowKey"])[len(OUTBOX_PREFIX):], str(row["PartitionKey"]),
                       parse_changes(str(row["Changes"]))) for row in rows]
    appended, in_feed = await _append(storage, outboxes, clock)
    await _delete_outboxes(storage, in_feed)
    return appended


async def _delete_outboxes(storage: Storage, in_feed: list[Outbox]) -> None:
    """Delete the outbox rows whose changes are all in the feed (not those kept), a transaction per partition."""
    by_study: dict[str, list[RowDelete]] = {}
    for outbox in (outbox for outbox in in_feed if not outbox.kept):
        by_study.setdefault(outbox.study, []).append(RowDelete(OUTBOX_PREFIX + outbox.change_id))
    await bounded_gather((_quietly(delete_rows(storage.studies, study, rows), study)
                          for study, rows in by_study.items()), limit=READ_CONCURRENCY)


async def _appended_changes(storage: Storage, request: str) -> int:
    """How many changes of a request's outbox rows are in the feed (their done rows say)."""
    low = f"{DONE_PREFIX}{request}|"
    rows = await query_all(storage.changes, "PartitionKey eq @pk and RowKey gt @low and RowKey lt @high",
                           parameters={"pk": FEED_PARTITION, "low": low, "high": low[:-1] + _RANGE_END},
                           select=["Through"])
    return sum(int_property(row["Through"]) for row in rows)


def _int64(value: int) -> EntityProperty:
    return EntityProperty(value, EdmType.INT64)


async def _quietly(deleting: Awaitable[int], partition: str) -> None:
    try:
        await deleting
    except Exception:
        LOGGER.warning("Could not delete rows of %s; the next sequencer run will", partition, exc_info=True)
