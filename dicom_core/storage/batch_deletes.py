"""Deleting many rows of one partition: entity-group transactions of up to 100 deletes, one request each.

A transaction fails as a whole when one of its rows is gone already (another worker deleted it) or, for a
delete conditioned on an ETag, was changed since it was read. Such a row is left out and the others are
submitted again, so a race costs one request more per row it touched, never a row deleted against its ETag.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from azure.data.tables import TableTransactionError
from azure.data.tables.aio import TableClient

from dicom_core.storage.faults import error_code
from dicom_core.storage.tables import Operation, unchanged_since

MAX_OPERATIONS = 100  # the most an entity-group transaction holds
# A row gone already, or changed since its ETag was read: left out, the rest submitted again.
_LEFT_OUT = frozenset({"ResourceNotFound", "UpdateConditionNotSatisfied"})


@dataclass(frozen=True)
class RowDelete:
    """One row to delete, only while it still has ``etag`` when one is given."""

    row: str
    etag: str | None = None


async def delete_rows(table: TableClient, partition: str, rows: Sequence[RowDelete]) -> int:
    """Delete ``rows`` of ``partition`` in transactions of up to 100; return how many were deleted."""
    deleted = 0
    for start in range(0, len(rows), MAX_OPERATIONS):
        deleted += await _delete_chunk(table, partition, list(rows[start:start + MAX_OPERATIONS]))
    return deleted


async def _delete_chunk(table: TableClient, partition: str, rows: list[RowDelete]) -> int:
    while rows:
        try:
            if len(rows) == 1:  # a transaction of one costs twice a single delete (Azurite)
                await _delete_one(table, partition, rows[0])
            else:
                await table.submit_transaction([_operation(partition, row) for row in rows])
            return len(rows)
        except TableTransactionError as exc:
            if error_code(exc) not in _LEFT_OUT:
                raise
            rows = rows[:exc.index] + rows[exc.index + 1:] if 0 <= exc.index < len(rows) else rows[1:]
        except Exception as exc:
            if error_code(exc) not in _LEFT_OUT:
                raise
            return 0
    return 0


def _operation(partition: str, row: RowDelete) -> Operation:
    keys = {"PartitionKey": partition, "RowKey": row.row}
    return ("delete", keys, unchanged_since(row.etag)) if row.etag else ("delete", keys)


async def _delete_one(table: TableClient, partition: str, row: RowDelete) -> None:
    delete = functools.partial(table.delete_entity, partition, row.row)
    await (delete(**unchanged_since(row.etag)) if row.etag else delete())
