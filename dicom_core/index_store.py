"""The study partition in Table Storage: one partition per study holding its study, series and instance rows.

Storing an instance commits its instance row together with its series and study rows (counts, modalities,
latest attributes) in one entity-group transaction guarded by ETags, so counts stay exact however many
writers store into one study at once. See docs/storage.md.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableEntity, TableTransactionError, UpdateMode

from .dicom_json import JsonDataset
from .identifiers import InstanceIdentifiers, StoredInstance
from .levels import Level, row_attributes
from .storage import Storage

STUDY_ROW = "study"
MAX_COMMIT_ATTEMPTS = 60
_RETRY_CODES = frozenset({"EntityAlreadyExists", "UpdateConditionNotSatisfied"})
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


async def commit_instance(storage: Storage, record: InstanceRecord, *, upsert: bool) -> StoredInstance | None:
    """Make an uploaded instance visible; return the version it replaced, if any."""
    ids = record.stored.ids
    for attempt in range(MAX_COMMIT_ATTEMPTS):
        study, series, instance = await asyncio.gather(
            _get(storage, ids.study, STUDY_ROW),
            _get(storage, ids.study, series_row_key(ids.series)),
            _get(storage, ids.study, instance_row_key(ids.series, ids.instance)),
        )
        if instance is not None and not upsert:
            raise InstanceExistsError(ids.instance)
        operations = _operations(record, study, series, instance)
        try:
            await storage.recreating_missing(lambda: storage.studies.submit_transaction(operations))
        except TableTransactionError as exc:
            if exc.error_code not in _RETRY_CODES:
                raise
            # Another writer changed the study first: read again and retry, with jitter to spread the herd.
            await asyncio.sleep(random.uniform(0, min(_MAX_BACKOFF_SECONDS, 0.005 * 2**attempt)))
            continue
        if instance is None:
            return None
        return StoredInstance(ids, str(instance["Version"]))
    raise TimeoutError(f"Could not commit instance {ids.instance}: study {ids.study} kept changing")


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
    ]


def _add(counts: dict[str, int], key: str, delta: int) -> None:
    counts[key] = counts.get(key, 0) + delta
    if counts[key] <= 0:
        del counts[key]
