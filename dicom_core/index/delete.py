"""Deleting rows of a study partition: instance rows in transactions that keep the series and study rows exact.

Each transaction deletes up to `MAX_BATCH_INSTANCES` instance rows of one series (each with `If-Match` on the
ETag it was read with) and, in the same entity-group transaction, updates or deletes that series row and the
study row (`If-Match` too) and inserts one change-feed outbox row. So counts and ModalityCounts are exact after
every transaction, whatever is stored or deleted at the same time: a transaction computed from rows another
writer changed fails as a whole, and the delete reads the scope again. A scope is deleted when a read of it finds
no instance rows; a store that commits into it before that is deleted too (it is ordered before the delete).
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.data.tables import TableEntity, TableTransactionError, UpdateMode

from dicom_core.index.commit import RETRY_CODES
from dicom_core.index.known_studies import forget_study
from dicom_core.index.outbox import OUTBOX_PREFIX, Change, ChangeAction, announce_changes, outbox_operation
from dicom_core.index.reads import get_row, stored_instance
from dicom_core.index.rows import (
    GENERATION_ROW,
    LAST_INSTANCE,
    STUDY_ROW,
    instance_row_key,
    series_row_key,
    without_last_instance,
)
from dicom_core.index.study_lock import study_lock
from dicom_core.model.identifiers import StoredInstance, new_version
from dicom_core.storage.clients import Storage
from dicom_core.storage.concurrency import jittered_backoff
from dicom_core.storage.faults import error_code
from dicom_core.storage.tables import Operation, etag_of, replace_if_unchanged, unchanged_since

# Instance rows per transaction: with the series row, the study row and the outbox row, 100 operations.
MAX_BATCH_INSTANCES = 97
MAX_ROUNDS = 60
_INSTANCE_PREFIX = "instance|"
_SERIES_PREFIX = "series|"
_RANGE_END = "}"  # sorts right after "|"



@dataclass(frozen=True)
class DeleteScope:
    """What a delete removes: a study, one of its series, or one instance."""

    study: str
    series: str | None = None
    instance: str | None = None


@dataclass
class ScopeRows:
    """The rows of a scope as read: the study row, the series rows and the instance rows in scope."""

    study: TableEntity | None
    series: dict[str, TableEntity]
    instances: list[TableEntity]


@dataclass(frozen=True)
class PlannedBatch:
    """One transaction about to be submitted: the versions it unreferences and the series rows it may delete."""

    study: str
    deleted: list[StoredInstance]
    removed_series: list[str]


@dataclass
class DeleteOutcome:
    """What a delete did to the rows."""

    deleted: list[StoredInstance] = field(default_factory=list)
    removed_series: set[str] = field(default_factory=set)
    study_removed: bool = False
    transactions: int = 0
    rounds: int = 0


BeforeBatch = Callable[[PlannedBatch], Awaitable[None]]


async def read_scope(storage: Storage, scope: DeleteScope) -> ScopeRows:
    """Read the study row and the series and instance rows of ``scope`` (change-feed outbox rows are skipped)."""
    if scope.series is None:
        partition = storage.studies.query_entities("PartitionKey eq @pk", parameters={"pk": scope.study})
        entities = [e async for e in partition]
        study = next((e for e in entities if e["RowKey"] == STUDY_ROW), None)
        series = {str(e["RowKey"])[len(_SERIES_PREFIX):]: e
                  for e in entities if str(e["RowKey"]).startswith(_SERIES_PREFIX)}
        instances = [e for e in entities if str(e["RowKey"]).startswith(_INSTANCE_PREFIX)]
        return ScopeRows(study, series, instances)
    if scope.instance is None:
        low = f"{_INSTANCE_PREFIX}{scope.series}|"
        query = "PartitionKey eq @pk and RowKey gt @low and RowKey lt @high"
        parameters = {"pk": scope.study, "low": low, "high": low[:-1] + _RANGE_END}
        instance_rows, study, series_row = await asyncio.gather(
            _all(storage.studies.query_entities(query, parameters=parameters)),
            get_row(storage, scope.study, STUDY_ROW), get_row(storage, scope.study, series_row_key(scope.series)),
        )
    else:
        instance, study, series_row = await asyncio.gather(
            get_row(storage, scope.study, instance_row_key(scope.series, scope.instance)),
            get_row(storage, scope.study, STUDY_ROW), get_row(storage, scope.study, series_row_key(scope.series)),
        )
        instance_rows = [instance] if instance is not None else []
    return ScopeRows(study, {scope.series: series_row} if series_row is not None else {}, instance_rows)


async def bump_generation(storage: Storage, study: str) -> None:
    """Give the study a new generation; a delete calls it after removing index entries, before deleting rows.

    Every commit into the study is conditioned on the generation marker it read before writing its index
    entries, so a commit whose entries this delete may have removed fails, reads the new generation and writes
    its entries again; one that landed before this is seen by the delete's next read of its scope.
    """
    forget_study(storage, study)
    marker = {"PartitionKey": str(study), "RowKey": GENERATION_ROW, "Generation": new_version()}
    await storage.recreating_missing(functools.partial(storage.studies.upsert_entity, marker, mode=UpdateMode.REPLACE))


async def delete_rows(
    storage: Storage, scope: DeleteScope, rows: ScopeRows, *, before_batch: BeforeBatch,
) -> DeleteOutcome:
    """Delete every instance row of ``scope`` (and the series and study rows they empty), batch by batch.

    ``before_batch`` runs before each transaction is submitted (cleanup entries for what it unreferences).
    ``rows`` is a read of the scope; it is read again whenever another writer got in the way, and at the end.
    """
    outcome = DeleteOutcome()
    for attempt in range(MAX_ROUNDS):
        outcome.rounds += 1
        if attempt > 0:
            rows = await read_scope(storage, scope)
        if not rows.instances:
            if scope.series is None and (rows.study is not None or rows.series):
                if not await _delete_leftovers(storage, scope.study, rows, outcome):
                    await jittered_backoff(attempt)
                    continue
            return outcome
        if await _delete_round(storage, rows, before_batch, outcome):
            if scope.instance is not None:
                return outcome  # its one row is gone; a store of it from now on comes after the delete
            continue  # every batch committed: read again, a store may have committed into the scope meanwhile
        await jittered_backoff(attempt)
    raise TimeoutError(f"Could not delete {scope}: it kept changing")


async def _delete_round(storage: Storage, rows: ScopeRows, before_batch: BeforeBatch, outcome: DeleteOutcome) -> bool:
    """Submit the batches of one read of the scope; False when another writer got in the way."""
    study_uid = str(rows.instances[0]["PartitionKey"])
    by_series: dict[str, list[TableEntity]] = {}
    for row in rows.instances:
        by_series.setdefault(str(row["RowKey"]).split("|")[1], []).append(row)
    for series_uid, instance_rows in by_series.items():
        for start in range(0, len(instance_rows), MAX_BATCH_INSTANCES):
            batch_rows = instance_rows[start:start + MAX_BATCH_INSTANCES]
            last = start + MAX_BATCH_INSTANCES >= len(instance_rows)
            if not await _delete_batch(storage, study_uid, series_uid, batch_rows, last, before_batch, outcome):
                return False
    return True


async def _delete_batch(
    storage: Storage, study_uid: str, series_uid: str, instance_rows: list[TableEntity], last_of_series: bool,
    before_batch: BeforeBatch, outcome: DeleteOutcome,
) -> bool:
    """Delete instance rows of one series in one transaction; False when another writer got in the way."""
    now = datetime.now(UTC)
    deleted = [stored_instance(study_uid, row) for row in instance_rows]
    change_id = new_version()
    # Written first (slow, outside the study lock): cleanup entries for what the transaction may unreference,
    # the series document too when the series may go, and the change feed's announcement.
    planned = PlannedBatch(study_uid, deleted, [series_uid] if last_of_series else [])
    await asyncio.gather(before_batch(planned), announce_changes(storage, study_uid, change_id, now))
    async with study_lock(storage, study_uid):
        series, study = await asyncio.gather(
            get_row(storage, study_uid, series_row_key(series_uid)), get_row(storage, study_uid, STUDY_ROW))
        operations, removes_series, removes_study = _batch_operations(study_uid, instance_rows, series, study, now)
        changes = [Change(ChangeAction.DELETE, s.ids.series, s.ids.instance, s.version) for s in deleted]
        operations.append(outbox_operation(study_uid, change_id, changes, now))
        if not await _submitted(storage, operations):
            return False
    outcome.transactions += 1
    outcome.deleted += deleted
    if removes_series:
        outcome.removed_series.add(series_uid)
    outcome.study_removed = outcome.study_removed or removes_study
    return True


def _batch_operations(
    study_uid: str, instance_rows: list[TableEntity], series: TableEntity | None, study: TableEntity | None,
    now: datetime,
) -> tuple[list[Operation], bool, bool]:
    """The deletes of the instance rows and the update or delete of their series and study rows."""
    operations: list[Operation] = [("delete", _keys(row), _if_match(row)) for row in instance_rows]
    removes_series = series is not None and int(series["InstanceCount"]) - len(instance_rows) <= 0
    if series is not None:
        if removes_series:
            operations.append(("delete", _keys(series), _if_match(series)))
        else:
            updated = {**series, "InstanceCount": int(series["InstanceCount"]) - len(instance_rows), "UpdatedAt": now}
            if any(str(row["RowKey"]).endswith(f"|{series.get(LAST_INSTANCE)}") for row in instance_rows):
                updated = without_last_instance(updated)  # its copy would answer for a deleted instance
            operations.append(replace_if_unchanged(updated, etag_of(series)))
    removes_study = False
    if study is not None:
        modalities: dict[str, int] = json.loads(str(study.get("ModalityCounts") or "{}"))
        for row in instance_rows:
            if row.get("Modality"):
                _subtract(modalities, str(row["Modality"]))
        remaining = int(study["InstanceCount"]) - len(instance_rows)
        removes_study = remaining <= 0
        if removes_study:
            operations.append(("delete", _keys(study), _if_match(study)))
        else:
            updated = {
                **study, "InstanceCount": remaining,
                "SeriesCount": int(study["SeriesCount"]) - (1 if removes_series else 0),
                "ModalityCounts": json.dumps(modalities, sort_keys=True), "UpdatedAt": now,
            }
            operations.append(replace_if_unchanged(updated, etag_of(study)))
    return operations, removes_series, removes_study


async def _delete_leftovers(storage: Storage, study_uid: str, rows: ScopeRows, outcome: DeleteOutcome) -> bool:
    """A study scope without instance rows: delete series and study rows left (none when counts are exact)."""
    leftovers = [*rows.series.values(), *([rows.study] if rows.study is not None else [])]
    for start in range(0, len(leftovers), 100):
        operations: list[Operation] = [("delete", _keys(row), _if_match(row)) for row in leftovers[start:start + 100]]
        if not await _submitted(storage, operations):
            return False
    outcome.removed_series.update(rows.series)
    outcome.study_removed = outcome.study_removed or rows.study is not None
    return True


async def _submitted(storage: Storage, operations: list[Operation]) -> bool:
    """Submit one transaction; False when a row changed since it was read (the caller reads again)."""
    try:
        await storage.studies.submit_transaction(operations)
    except TableTransactionError as exc:
        if error_code(exc) not in RETRY_CODES:
            raise
        return False
    return True


def is_data_row(row_key: str) -> bool:
    """Tell a study, series or instance row from a change-feed outbox row."""
    return not row_key.startswith(OUTBOX_PREFIX)


def _keys(row: TableEntity) -> dict[str, Any]:
    return {"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"]}


def _if_match(row: TableEntity) -> dict[str, Any]:
    return unchanged_since(etag_of(row))


def _subtract(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) - 1
    if counts[key] <= 0:
        del counts[key]


async def _all(entities: Any) -> list[TableEntity]:
    return [entity async for entity in entities]
