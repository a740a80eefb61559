"""Pruning the sequencer's ``done|`` rows once nothing can need them for exactly-once appends.

A ``done|{change id}`` row records how many changes of one outbox row are in the feed. The sequencer needs it
only while that outbox row can still be read: a sequencer that read the outbox row and appends it (again) must
fail on the done row's ``create``. Once the outbox row is gone (deleted after its append) it never comes back:
every transaction that inserts an outbox row is conditioned on rows it changes (the generation marker, ETags,
inserts), so it lands at most once, and a change id is never reused. A done row is pruned when it was written
more than ``PRUNE_AFTER`` ago (far longer than a sequencer run can hold an outbox row it read) and its outbox
row is absent. A done row marked ``Kept`` guards an outbox row its writer confirmed, which stays in its partition
for good: it is never pruned, and skipped without reading its outbox row. Bounded work: at most ``limit`` done
rows are checked and ``SCAN_FACTOR`` times as many read per run, oldest change ids first (change ids sort by
time), from a cursor (``prune|done``) that moves past the leading rows a run leaves behind only because they are
``Kept``, or pruned, so that rows kept for good are read once, not every run. See docs/storage.md.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableEntity

from dicom_core.changefeed.feed_reads import FEED_PARTITION
from dicom_core.changefeed.sequencer import DONE_PREFIX, KEPT, READ_CONCURRENCY
from dicom_core.index.outbox import outbox_row_key
from dicom_core.storage.batch_deletes import RowDelete, delete_rows
from dicom_core.storage.clients import Storage
from dicom_core.storage.concurrency import bounded_gather
from dicom_core.storage.tables import etag_of, get_entity_or_none

PRUNE_AFTER = timedelta(days=1)
DEFAULT_PRUNE_LIMIT = 1_000
SCAN_FACTOR = 10  # done rows read per run, at most, per row checked
CURSOR_ROW = "prune|done"  # in the feed partition: ``Through``, the done row up to which every one is Kept or gone


def _change_id_before(moment: datetime) -> str:
    """The smallest change id made at ``moment`` (change ids start with their time in hex nanoseconds)."""
    return f"{int(moment.timestamp() * 1_000_000_000):016x}"


async def prune_done_rows(storage: Storage, *, now: datetime | None = None, limit: int = DEFAULT_PRUNE_LIMIT) -> int:
    """Delete up to ``limit`` done rows older than ``PRUNE_AFTER`` whose outbox rows are gone; return how many."""
    old = (now or datetime.now(UTC)) - PRUNE_AFTER
    try:
        cursor = await get_entity_or_none(storage.changes, FEED_PARTITION, CURSOR_ROW)
    except ResourceNotFoundError:
        return 0
    pages = storage.changes.query_entities(
        "PartitionKey eq @pk and RowKey gt @low and RowKey lt @high",
        parameters={"pk": FEED_PARTITION, "low": str(cursor["Through"]) if cursor is not None else DONE_PREFIX,
                    "high": DONE_PREFIX + _change_id_before(old)},
        select=["RowKey", "Study", "Timestamp", KEPT], results_per_page=min(limit, 1_000),
    )
    scanned: list[TableEntity] = []
    candidates: list[TableEntity] = []
    try:
        async for row in pages:
            scanned.append(row)
            written = row.metadata.get("timestamp")
            if written is not None and written < old and not row.get(KEPT):
                candidates.append(row)
            if len(candidates) >= limit or len(scanned) >= limit * SCAN_FACTOR:
                break
    except ResourceNotFoundError:
        return 0

    async def prunable(row: TableEntity) -> RowDelete | None:
        change_id = str(row["RowKey"])[len(DONE_PREFIX):]
        if await get_entity_or_none(storage.studies, str(row["Study"]), outbox_row_key(change_id), ["RowKey"]):
            return None  # its outbox row is still there: a sequencer may read and append it again
        return RowDelete(str(row["RowKey"]), etag_of(row))

    deletes = [d for d in await bounded_gather((prunable(row) for row in candidates), limit=READ_CONCURRENCY) if d]
    pruned = await delete_rows(storage.changes, FEED_PARTITION, deletes) if deletes else 0
    gone = {delete.row for delete in deletes} if pruned == len(deletes) else set()
    passed = None
    for row in scanned:
        if not (row.get(KEPT) or str(row["RowKey"]) in gone):
            break
        passed = str(row["RowKey"])
    if passed is not None:
        await storage.changes.upsert_entity({"PartitionKey": FEED_PARTITION, "RowKey": CURSOR_ROW, "Through": passed})
    return pruned
