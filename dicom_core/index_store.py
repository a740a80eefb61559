"""The study partition in Table Storage: one partition per study holding its study, series and instance rows.

Storing an instance commits its instance row together with its series and study rows (counts, modalities,
latest attributes) in one entity-group transaction guarded by ETags, so counts stay exact however many
writers store into one study at once. See docs/storage.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from azure.core import MatchConditions
from azure.core.exceptions import ResourceNotFoundError, ServiceRequestError, ServiceResponseError
from azure.data.tables import TableEntity, TableTransactionError, UpdateMode

from .change_feed_outbox import Change, ChangeAction, outbox_operation
from .dicom_json import JsonDataset
from .identifiers import InstanceIdentifiers, StoredInstance
from .levels import Level, row_attributes
from .storage import Storage

STUDY_ROW = "study"
MAX_COMMIT_ATTEMPTS = 60
MAX_LOST_COMMIT_ANSWERS = 3
# A row created, changed or deleted (by a delete) since it was read: read again and retry.
RETRY_CODES = frozenset({"EntityAlreadyExists", "UpdateConditionNotSatisfied", "ResourceNotFound"})
_MAX_BACKOFF_SECONDS = 0.25
MODALITY = "00080060"
# A Table string property holds 32K UTF-16 characters; stay below with room for escaping.
MAX_ATTRIBUTES_CHARS = 30_000


def series_row_key(series: str) -> str:
    """RowKey of a series row."""
    return f"series|{series}"


def instance_row_key(series: str, instance: str) -> str:
    """RowKey of an instance row; all instances of a series share the prefix ``instance|{series}|``."""
    return f"instance|{series}|{instance}"


@dataclass
class InstanceRecord:
    """What the store path commits for one validated, uploaded instance."""

    stored: StoredInstance
    sop_class_uid: str
    transfer_syntax: str
    size: int
    metadata: JsonDataset
    frame_index: str = ""  # FrameIndex JSON, or "" when none or kept in a blob
    frame_index_in_blob: bool = False

    @property
    def modality(self) -> str:
        """The instance's Modality, or "" when absent."""
        values = self.metadata.get(MODALITY, {}).get("Value") or [""]
        return str(values[0])


class InstanceExistsError(Exception):
    """The instance is already stored and the request may not replace it (45070)."""


@dataclass(frozen=True)
class CommitRows:
    """The study, series and instance rows a commit is computed from (None: absent), with their ETags."""

    study: TableEntity | None
    series: TableEntity | None
    instance: TableEntity | None


class CommitHooks(Protocol):
    """What must happen around each attempt of a commit (index intents, cleanup entries)."""

    async def before_commit(self, rows: CommitRows) -> None:
        """Runs before every attempt, with the rows this attempt's transaction is conditioned on."""

    async def after_commit(self, rows: CommitRows) -> None:
        """Runs once the transaction computed from ``rows`` committed."""


async def read_commit_rows(storage: Storage, ids: InstanceIdentifiers) -> CommitRows:
    """Read the study, series and instance rows of an instance (three point reads in parallel)."""
    study, series, instance = await asyncio.gather(
        _get(storage, ids.study, STUDY_ROW),
        _get(storage, ids.study, series_row_key(ids.series)),
        _get(storage, ids.study, instance_row_key(ids.series, ids.instance)),
    )
    return CommitRows(study, series, instance)


async def commit_instance(
    storage: Storage, record: InstanceRecord, *, upsert: bool, hooks: CommitHooks | None = None,
) -> StoredInstance | None:
    """Make an uploaded instance visible; return the version it replaced, if any.

    ``hooks.before_commit`` sees the rows of every attempt before its transaction is submitted (so the index
    intents can be completed when a row changed since they were written, e.g. a study deleted meanwhile).
    Its slow first call runs on a first read of the rows; each attempt then reads them again and commits at
    once, under this process's lock of the study, so writers in one process queue instead of racing.
    """
    ids = record.stored.ids
    if hooks is not None:
        first = await read_commit_rows(storage, ids)
        if first.instance is not None and not upsert:
            raise InstanceExistsError(ids.instance)
        await hooks.before_commit(first)
    tried: CommitRows | None = None
    lost_answers = 0
    for attempt in range(MAX_COMMIT_ATTEMPTS):
        async with study_lock(storage, ids.study):
            rows = await read_commit_rows(storage, ids)
            if tried is not None and rows.instance is not None and str(rows.instance["Version"]) == record.stored.version:
                landed = tried  # the previous attempt landed although its answer was an error (e.g. a resend)
                break
            if rows.instance is not None and not upsert:
                raise InstanceExistsError(ids.instance)
            if hooks is not None:
                await hooks.before_commit(rows)  # nothing to do unless the rows changed since the first read
            operations = _operations(record, rows.study, rows.series, rows.instance)
            tried = rows
            try:
                await storage.recreating_missing(lambda: storage.studies.submit_transaction(operations))
                landed = rows
                break
            except TableTransactionError as exc:
                if exc.error_code not in RETRY_CODES:
                    raise
            except (ServiceRequestError, ServiceResponseError):
                # The connection broke around the $batch (seen on a loaded Azurite): it may or may not have landed.
                # The next attempt's read tells (the row names this version), so retrying is safe; a few times only.
                lost_answers += 1
                if lost_answers > MAX_LOST_COMMIT_ANSWERS:
                    raise
        # Another process's writer changed the study first: read again and retry, with jitter.
        await asyncio.sleep(random.uniform(0, min(_MAX_BACKOFF_SECONDS, 0.005 * 2**attempt)))
    else:
        raise TimeoutError(f"Could not commit instance {ids.instance}: study {ids.study} kept changing")
    if hooks is not None:
        await hooks.after_commit(landed)
    return StoredInstance(ids, str(landed.instance["Version"])) if landed.instance is not None else None


@contextlib.asynccontextmanager
async def study_lock(storage: Storage, study: str) -> AsyncIterator[None]:
    """Hold this process's lock of a study while reading its rows and committing a transaction computed from them.

    Writers of one process into one study would only race each other for the study row's ETag (and retry);
    queued, each commits at the first try. Writers in other processes still meet the ETag condition.
    """
    key = (id(asyncio.get_running_loop()), storage.studies.url, storage.studies.table_name, study)
    entry = _study_locks.setdefault(key, _StudyLock())
    entry.users += 1
    try:
        async with entry.lock:
            yield
    finally:
        entry.users -= 1
        if entry.users == 0:
            del _study_locks[key]


@dataclass
class _StudyLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


_study_locks: dict[tuple[int, str, str, str], _StudyLock] = {}


async def get_instance_row(storage: Storage, ids: InstanceIdentifiers) -> TableEntity | None:
    """Return the committed row of an instance, or None."""
    return await _get(storage, ids.study, instance_row_key(ids.series, ids.instance))


async def _get(storage: Storage, partition: str, row: str) -> TableEntity | None:
    try:
        return await storage.studies.get_entity(partition, row)
    except ResourceNotFoundError:
        return None


def attributes_property(metadata: JsonDataset, level: Level) -> str:
    """Return the level's attributes as JSON, leaving out the largest elements until it fits in a property."""
    attributes = row_attributes(metadata, level)
    text = json.dumps(attributes, separators=(",", ":"))
    while len(text) > MAX_ATTRIBUTES_CHARS and attributes:
        largest = max(attributes, key=lambda key: len(json.dumps(attributes[key])))
        del attributes[largest]
        text = json.dumps(attributes, separators=(",", ":"))
    return text


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _conditional_update(entity: dict[str, Any], existing: TableEntity) -> tuple[str, dict[str, Any], dict[str, Any]]:
    return (
        "update", entity,
        {"mode": UpdateMode.REPLACE, "etag": existing.metadata["etag"], "match_condition": MatchConditions.IfNotModified},
    )


def _operations(
    record: InstanceRecord, study: TableEntity | None, series: TableEntity | None, instance: TableEntity | None
) -> list[tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], dict[str, Any]]]:
    ids, now = record.stored.ids, _now()
    new_instance = instance is None
    new_series = series is None
    instance_row = {
        "PartitionKey": ids.study, "RowKey": instance_row_key(ids.series, ids.instance),
        "Version": record.stored.version, "SopClassUid": record.sop_class_uid,
        "TransferSyntaxUid": record.transfer_syntax, "Size": record.size, "Modality": record.modality,
        "Attributes": attributes_property(record.metadata, Level.INSTANCE),
        "FrameIndex": record.frame_index, "FrameIndexInBlob": record.frame_index_in_blob,
        "CreatedAt": instance["CreatedAt"] if instance else now, "UpdatedAt": now,
    }
    series_row = {
        "PartitionKey": ids.study, "RowKey": series_row_key(ids.series),
        "InstanceCount": (series["InstanceCount"] if series else 0) + (1 if new_instance else 0),
        "Modality": record.modality,
        "Attributes": attributes_property(record.metadata, Level.SERIES),
        "CreatedAt": series["CreatedAt"] if series else now, "UpdatedAt": now,
    }
    modalities: dict[str, int] = json.loads(study["ModalityCounts"]) if study else {}
    if instance is not None and instance.get("Modality"):
        _add(modalities, str(instance["Modality"]), -1)
    if record.modality:
        _add(modalities, record.modality, 1)
    study_row = {
        "PartitionKey": ids.study, "RowKey": STUDY_ROW,
        "InstanceCount": (study["InstanceCount"] if study else 0) + (1 if new_instance else 0),
        "SeriesCount": (study["SeriesCount"] if study else 0) + (1 if new_series else 0),
        "ModalityCounts": json.dumps(modalities, sort_keys=True),
        "Attributes": attributes_property(record.metadata, Level.STUDY),
        "CreatedAt": study["CreatedAt"] if study else now, "UpdatedAt": now,
    }
    return [
        ("create", instance_row) if instance is None else _conditional_update(instance_row, instance),
        ("create", series_row) if series is None else _conditional_update(series_row, series),
        ("create", study_row) if study is None else _conditional_update(study_row, study),
        # The change feed's outbox row, atomic with the data; an upsert is a Create of the new version (as in Azure).
        outbox_operation(ids.study, record.stored.version,
                         [Change(ChangeAction.CREATE, ids.series, ids.instance, record.stored.version)], now),
    ]


def _add(counts: dict[str, int], key: str, delta: int) -> None:
    counts[key] = counts.get(key, 0) + delta
    if counts[key] <= 0:
        del counts[key]
