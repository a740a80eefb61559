"""Helpers of the change feed tests: stores, outbox rows written the way writers write them, the whole feed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from pydicom.uid import generate_uid

from dicom_core.changefeed.feed_reads import FeedEntry, entries_after
from dicom_core.changefeed.sequencer import sequence_pending
from dicom_core.index.outbox import (
    PENDING_PARTITION,
    Change,
    ChangeAction,
    announce_changes,
    outbox_operation,
    outbox_range,
)
from dicom_core.index.rows import instance_row_key
from dicom_core.model.identifiers import new_version
from dicom_core.storage.clients import Storage

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def uid() -> str:
    """A new UID."""
    return str(generate_uid())


async def store(stow_parts, storage: Storage, parts: list[bytes], *, upsert: bool = False) -> None:
    """Store ``parts`` in one STOW request, which must succeed."""
    response = await stow_parts(storage, parts, upsert=upsert)
    assert response.status == 200, response.body


async def stored_version(storage: Storage, study: str, series: str, sop: str) -> str:
    """The version the instance row names."""
    row = await storage.studies.get_entity(study, instance_row_key(series, sop))
    return str(row["Version"])


async def all_entries(storage: Storage) -> list[FeedEntry]:
    """Every entry of the feed, in sequence order."""
    return await entries_after(storage, 0, 10_000)


async def write_outbox(storage: Storage, study: str, changes: list[Change], extra: list | None = None) -> str:
    """Announce and commit an outbox row the way a writer does (with ``extra`` operations in its transaction)."""
    change_id = new_version()
    now = datetime.now(UTC)
    await announce_changes(storage, study, change_id, now)
    await storage.studies.submit_transaction([*(extra or []), outbox_operation(study, change_id, changes, now)])
    return change_id


async def pending_ids(storage: Storage) -> list[str]:
    """The change ids announced and not yet appended."""
    rows = storage.changes.query_entities("PartitionKey eq @p", parameters={"p": PENDING_PARTITION})
    return [str(row["RowKey"]) async for row in rows]


async def entries_at(storage: Storage, moments: list[datetime]) -> list[FeedEntry]:
    """Append one change at each of ``moments`` (the sequencer's clock); return the whole feed."""
    study = uid()
    for index, moment in enumerate(moments):
        await write_outbox(storage, study, [Change(ChangeAction.CREATE, "1.2", f"1.2.{index}", f"v{index}")])
        await sequence_pending(storage, clock=lambda moment=moment: moment)
    return await all_entries(storage)


async def write_outboxes(storage: Storage, count: int) -> set[str]:
    """Write ``count`` one-change outboxes into studies of their own; return their instance UIDs."""
    instances = [uid() for _ in range(count)]
    for start in range(0, count, 20):
        await asyncio.gather(*(
            write_outbox(storage, uid(), [Change(ChangeAction.CREATE, "1.2", instance, "v")])
            for instance in instances[start:start + 20]
        ))
    return set(instances)


async def outbox_rows(storage: Storage, study: str) -> list[str]:
    """The RowKeys of the outbox rows in a study partition."""
    low, high = outbox_range()
    rows = storage.studies.query_entities("PartitionKey eq @s and RowKey ge @low and RowKey lt @high",
                                          parameters={"s": study, "low": low, "high": high})
    return [str(row["RowKey"]) async for row in rows]
