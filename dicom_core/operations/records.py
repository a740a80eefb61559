"""Operation records in the Table `{prefix}Operations`: id, type, status, progress, resources and a checkpoint.

One entity per operation (PartitionKey ``operation``, RowKey the 32-hex id). Every write after the first is
guarded by the ETag read before it, so two workers never both advance one operation's checkpoint.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableEntity, UpdateMode
from azure.data.tables.aio import TableClient

from dicom_core.storage.clients import Storage
from dicom_core.storage.named_tables import existing_table, named_table
from dicom_core.storage.tables import etag_of, get_entity_or_none, query_all, unchanged_since

OPERATIONS_TABLE = "Operations"
PARTITION = "operation"
_UNFINISHED = "PartitionKey eq @p and ( Status eq @a or Status eq @b )"


class OperationStatus(StrEnum):
    """Where an operation is: Azure's values (camelCase, as its JSON writes them)."""

    NOT_STARTED = "notStarted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        """True once the operation will not change any more."""
        return self in (OperationStatus.SUCCEEDED, OperationStatus.FAILED)


@dataclass(frozen=True)
class Operation:
    """One operation as stored; ``etag`` is what the next write must still find."""

    id: str
    type: str
    status: OperationStatus
    percent_complete: int
    created: datetime
    last_updated: datetime
    resources: tuple[str, ...] = ()  # paths under the API version, e.g. "extendedquerytags/00101010"
    checkpoint: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    lease_owner: str = ""
    lease_until: datetime | None = None
    etag: str = ""


def new_operation_id() -> str:
    """A fresh operation id: a GUID as 32 hex digits, like Azure's."""
    return uuid.uuid4().hex


def is_operation_id(text: str) -> bool:
    """True when ``text`` is a GUID (with or without dashes)."""
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


async def operations_table(storage: Storage) -> TableClient:
    """The Operations Table of ``storage`` (created on first use)."""
    return await named_table(storage, OPERATIONS_TABLE)


async def create_operation(
    storage: Storage, type_: str, resources: list[str], checkpoint: dict[str, Any], *, operation_id: str | None = None,
) -> Operation:
    """Record a new operation, not started; the runner picks it up."""
    now = datetime.now(UTC)
    operation = Operation(operation_id or new_operation_id(), type_, OperationStatus.NOT_STARTED, 0, now, now,
                          tuple(resources), checkpoint)
    table = await operations_table(storage)
    written = await table.create_entity(_entity(operation))
    return replace(operation, etag=str(written.get("etag", "")))


async def get_operation(storage: Storage, operation_id: str) -> Operation | None:
    """The operation with this id, or None."""
    if not is_operation_id(operation_id):
        return None
    entity = await get_entity_or_none(await operations_table(storage), PARTITION, uuid.UUID(operation_id).hex)
    return _operation(entity) if entity is not None else None


async def unfinished_operations(storage: Storage) -> list[Operation]:
    """Every operation not yet succeeded or failed, oldest first."""
    # Spaces inside the parentheses: the SDK finds parameters by splitting the filter at spaces.
    try:
        entities = await query_all(existing_table(storage, OPERATIONS_TABLE), _UNFINISHED,
                                   parameters={"p": PARTITION, "a": OperationStatus.NOT_STARTED.value,
                                               "b": OperationStatus.RUNNING.value})
    except ResourceNotFoundError:
        return []  # no operation was ever started: the timer creates nothing
    return sorted((_operation(entity) for entity in entities), key=lambda operation: operation.created)


async def save_operation(storage: Storage, operation: Operation) -> Operation:
    """Write ``operation`` if nobody wrote it since it was read (ResourceModifiedError otherwise); the new ETag."""
    table = await operations_table(storage)
    saved = replace(operation, last_updated=datetime.now(UTC))
    written = await table.update_entity(_entity(saved), mode=UpdateMode.REPLACE, **unchanged_since(operation.etag))
    return replace(saved, etag=str(written.get("etag", "")))


def _entity(operation: Operation) -> dict[str, Any]:
    return {
        "PartitionKey": PARTITION, "RowKey": operation.id, "Type": operation.type, "Status": operation.status.value,
        "PercentComplete": operation.percent_complete, "CreatedTime": operation.created,
        "LastUpdatedTime": operation.last_updated, "Resources": json.dumps(list(operation.resources)),
        "Checkpoint": json.dumps(operation.checkpoint), "Results": json.dumps(operation.results),
        "LeaseOwner": operation.lease_owner, "LeaseUntil": operation.lease_until or datetime.fromtimestamp(0, UTC),
    }


def _operation(entity: TableEntity) -> Operation:
    lease_until = entity.get("LeaseUntil")
    return Operation(
        id=str(entity["RowKey"]), type=str(entity["Type"]), status=OperationStatus(str(entity["Status"])),
        percent_complete=int(entity.get("PercentComplete") or 0), created=entity["CreatedTime"],
        last_updated=entity["LastUpdatedTime"], resources=tuple(json.loads(str(entity.get("Resources") or "[]"))),
        checkpoint=json.loads(str(entity.get("Checkpoint") or "{}")),
        results=json.loads(str(entity.get("Results") or "{}")), lease_owner=str(entity.get("LeaseOwner") or ""),
        lease_until=lease_until if isinstance(lease_until, datetime) else None, etag=etag_of(entity),
    )
