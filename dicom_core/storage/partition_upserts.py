"""Coalesced Table upserts: the concurrent single-row writes of one partition go in one entity-group transaction.

Every store writes its intent (a change announcement), a delete its cleanup entries, one row each, into a few
shared partitions. Each writer queues its rows (see group_commit.py) in one of a few lanes of the partition, the
one with the fewest writers; whoever finds no transaction of its lane running submits everything queued there,
up to the 100 operations a transaction holds, one operation per row. So a writer that finds the partition idle
writes at once (a single row without a transaction), and a busy partition takes a transaction per lane at a time. A row
a transaction refuses fails alone: the transaction is submitted again without it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.data.tables import TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient

from dicom_core.storage.clients import Storage
from dicom_core.storage.concurrency import jittered_backoff
from dicom_core.storage.faults import error_code
from dicom_core.storage.group_commit import GroupCommit
from dicom_core.storage.tables import upsert_one

MAX_OPERATIONS = 100  # the most an entity-group transaction holds
# A call with at least this many rows of one partition writes them in transactions of its own, concurrently:
# queued behind other writers' transactions, a delete of thousands of versions would be written one at a time.
OWN_TRANSACTION_ROWS = 25
OWN_TRANSACTION_CONCURRENCY = 16
LANES = 4  # transactions of one partition in flight at once (rows of different writers never conflict)

TRANSACTION_ATTEMPTS = 3  # sends of a transaction whose connection failed
REFUSED_ENTITY_STATUS = 400  # the service refused one operation of the transaction (it names which)
MISSING_TABLE = "TableNotFound"

Entity = dict[str, Any]


@dataclass(frozen=True)
class _Upsert:
    """One writer's row, queued for its partition's next transaction."""

    storage: Storage
    entity: Entity

    @property
    def row(self) -> str:
        """The row's RowKey."""
        return str(self.entity["RowKey"])


class PartitionUpserts:
    """Upserts (replacing) rows of one table; concurrent upserts of a partition share a transaction."""

    def __init__(self, table: Callable[[Storage], TableClient], *, lanes: int = LANES,
                 linger: tuple[float, float] = (0.0, 0.0), mode: UpdateMode = UpdateMode.REPLACE) -> None:
        self._table = table
        self._mode = mode  # MERGE: a row's other properties stay (rows that gather one property per writer)
        self._lanes = lanes
        # Seconds the first writer of an idle partition waits for others: alone, and while other partitions are
        # being written (by concurrent stores, whose rows of this partition may be a moment away).
        self._linger = linger
        self._writes: GroupCommit[tuple[int, str, int], _Upsert, None] = GroupCommit(
            self._flush, max_items=MAX_OPERATIONS, fits=_new_row)
        self._writers: dict[tuple[int, str, int], int] = {}  # writers queued or writing, per lane

    async def upsert(self, storage: Storage, entities: Iterable[Entity], *, own: bool = False) -> None:
        """Write ``entities`` (each row at most once); return when all are written, raise if one was not.

        With ``own``, in transactions of their own at once (one per partition and 100 rows), not queued with others.
        """
        by_partition: dict[str, list[Entity]] = {}
        for entity in entities:
            by_partition.setdefault(str(entity["PartitionKey"]), []).append(entity)
        slots = asyncio.Semaphore(OWN_TRANSACTION_CONCURRENCY)

        async def own_transaction(rows: Sequence[Entity]) -> None:
            async with slots:
                await self._submit(storage, rows)

        writes = []
        for partition, rows in by_partition.items():
            if own or len(rows) >= OWN_TRANSACTION_ROWS:
                writes += [own_transaction(rows[start:start + MAX_OPERATIONS])
                           for start in range(0, len(rows), MAX_OPERATIONS)]
            else:
                writes += [self._queue(storage, partition, row) for row in rows]
        results = await asyncio.gather(*writes, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _queue(self, storage: Storage, partition: str, entity: Entity) -> None:
        """Write one row with the other rows queued in the least busy lane of its partition."""
        lanes = [(id(storage), partition, lane) for lane in range(self._lanes)]
        key = min(lanes, key=lambda lane: self._writers.get(lane, 0))
        linger = self._linger[len(self._writers) > (key in self._writers)]
        self._writers[key] = self._writers.get(key, 0) + 1
        try:
            await self._writes.submit(key, _Upsert(storage, entity), linger=linger)
        finally:
            self._writers[key] -= 1
            if not self._writers[key]:
                del self._writers[key]

    async def _flush(self, _key: tuple[int, str, int], batch: Sequence[_Upsert]) -> list[BaseException | None]:
        """Submit ``batch`` as one transaction; a row the service refuses fails alone, the others are retried."""
        outcomes: list[BaseException | None] = [None] * len(batch)
        remaining = list(range(len(batch)))
        while remaining:
            try:
                await self._submit(batch[0].storage, [batch[index].entity for index in remaining])
                return outcomes
            except TableTransactionError as exc:
                if exc.status_code != REFUSED_ENTITY_STATUS:
                    raise
                # The service names the operation it refused (index 0 also when it blames the whole request).
                failed = remaining[exc.index] if 0 <= exc.index < len(remaining) else remaining[0]
                outcomes[failed] = exc
                remaining.remove(failed)
            except Exception as exc:
                if len(remaining) == len(batch):
                    raise
                for index in remaining:  # the last one, written alone, failed
                    outcomes[index] = exc
                return outcomes
        return outcomes

    async def _submit(self, storage: Storage, entities: Sequence[Entity]) -> None:
        table = self._table(storage)
        if len(entities) == 1:  # a transaction of one costs twice a single write (Azurite)
            await storage.recreating_missing(lambda: upsert_one(table, entities[0], self._mode))
            return
        operations = [("upsert", entity, {"mode": self._mode}) for entity in entities]
        try:
            for attempt in range(storage.settings.storage_retries + 1):
                try:
                    await storage.recreating_missing(lambda: table.submit_transaction(operations))
                    break
                except (ServiceRequestError, ServiceResponseError):
                    # The SDK does not retry a POST whose connection broke (the answer may be lost after the write
                    # landed); upserts are idempotent, so this does.
                    if attempt == storage.settings.storage_retries:
                        raise
                    await jittered_backoff(attempt)
        except TableTransactionError as exc:
            # A transaction reports a missing table as its own error, which recreating_missing does not know.
            if error_code(exc) != MISSING_TABLE:
                raise
            await storage.ensure_created()
            await table.submit_transaction(operations)


def _new_row(batch: Sequence[_Upsert], item: _Upsert) -> bool:
    """A transaction writes each row once."""
    return all(queued.row != item.row for queued in batch)
