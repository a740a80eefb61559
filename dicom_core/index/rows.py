"""The rows of a study partition in Table Storage: their keys, and the transaction that stores instances into them.

One partition per study (PartitionKey = StudyInstanceUID) holds the study row, a row per series and a row per
instance, each with the attributes QIDO answers with; counts and ModalityCounts are kept on the study and
series rows. A series row also carries a copy of its study row's Attributes (`StudyAttributes`), so a series
or instance result is answered without reading the study row; the transaction that changes the study's
attributes brings the copies of the study's other series in step (`study_copies.py`). How the transaction is
committed: `commit.py`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.data.tables import TableEntity, UpdateMode

from dicom_core.index.outbox import Change, ChangeAction, outbox_operation, request_change_id
from dicom_core.model.dicom_json import JsonDataset
from dicom_core.model.identifiers import StoredInstance
from dicom_core.model.levels import Level, row_attributes
from dicom_core.storage.tables import Operation, etag_of, replace_if_unchanged, unchanged_since

STUDY_ROW = "study"
# The study's generation marker: a delete changes its Generation after removing index entries, and every commit
# is conditioned on the marker it read (see commit.py); it sorts right after the study row and is never deleted.
GENERATION_ROW = "study|generation"
MODALITY = "00080060"
# A Table string property holds 32K UTF-16 characters; stay below with room for escaping.
MAX_ATTRIBUTES_CHARS = 30_000
# An instance's DICOM JSON up to this length is kept in its row (a Table string property holds 32K characters);
# a longer one in its own blob.
MAX_ROW_METADATA_CHARS = 30_000
ROW_METADATA = "Metadata"
MAX_TRANSACTION_OPERATIONS = 100
# The series row's copy of its study row's Attributes ("" or absent: a row stored before copies were kept).
STUDY_ATTRIBUTES_COPY = "StudyAttributes"
# The series row's copy of the instance row its last commit wrote (UID, and the row's properties of the same
# name after the prefix), so a search answers a single-instance series without reading its instance row. A delete
# of that instance drops the copy (`delete.py`); absent: a row stored before copies were kept.
LAST_INSTANCE = "LastInstance"
LAST_INSTANCE_PROPERTIES = ("Version", "Attributes", "CreatedAt", "UpdatedAt")


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
    metadata_text: str = ""  # the DICOM JSON when it is kept in the row ("": in its metadata blob)
    request: str = ""  # the change-feed announcement of the request storing it ("": an outbox row of its own)

    @property
    def modality(self) -> str:
        """The instance's Modality, or "" when absent."""
        values = self.metadata.get(MODALITY, {}).get("Value") or [""]
        return str(values[0])

    @functools.cached_property
    def instance_attributes(self) -> str:
        """The instance row's Attributes property."""
        return attributes_property(self.metadata, Level.INSTANCE)

    @property
    def row_chars(self) -> int:
        """Characters its instance row and its share of a change-feed outbox row add to a transaction, about."""
        return len(self.instance_attributes) + len(self.frame_index) + len(self.metadata_text) + 2_000


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
    return datetime.now(UTC)


def group_operations(
    records: Sequence[InstanceRecord], study: TableEntity | None, series: dict[str, TableEntity | None],
    instances: Sequence[TableEntity | None],
) -> list[Operation]:
    """The transaction storing ``records`` (distinct instances of one study) over the rows read for them.

    Applied in order, as one commit after another would: counts add up, the last record's attributes win.
    """
    now = _now()
    study_now: dict[str, Any] | None = study
    series_now: dict[str, dict[str, Any] | None] = dict(series)
    operations: list[Operation] = []
    last_instance: dict[str, dict[str, Any]] = {}
    for record, instance in zip(records, instances, strict=True):
        ids = record.stored.ids
        new_instance, new_series = instance is None, series_now[ids.series] is None
        instance_row = last_instance[ids.series] = _instance_row(record, instance, now)
        series_now[ids.series] = _series_row(record, series_now[ids.series], new_instance, now)
        study_now = _study_row(record, study_now, instance, new_series, now)
        operations.append(("create", instance_row) if instance is None
                          else replace_if_unchanged(instance_row, etag_of(instance)))
    operations += _outbox_operations(records, now)
    # The series and study rows take the attributes of the last record stored into them (computed once each).
    last_of_series = {record.stored.ids.series: record for record in records}
    study_attributes = attributes_property(records[-1].metadata, Level.STUDY)
    for uid, record in last_of_series.items():
        written = {**(series_now[uid] or {}), "Attributes": attributes_property(record.metadata, Level.SERIES),
                   STUDY_ATTRIBUTES_COPY: study_attributes, **last_instance_copy(last_instance[uid])}
        row = series[uid]
        operations.append(("create", written) if row is None else replace_if_unchanged(written, etag_of(row)))
    assert study_now is not None
    study_now = {**study_now, "Attributes": study_attributes}
    operations.append(("create", study_now) if study is None else replace_if_unchanged(study_now, etag_of(study)))
    return operations


def last_instance_copy(instance_row: dict[str, Any]) -> dict[str, Any]:
    """The series row's properties copying ``instance_row`` (see LAST_INSTANCE)."""
    return {LAST_INSTANCE: str(instance_row["RowKey"]).rsplit("|", 1)[1],
            **{LAST_INSTANCE + name: instance_row[name] for name in LAST_INSTANCE_PROPERTIES}}


def without_last_instance(series_row: dict[str, Any]) -> dict[str, Any]:
    """The series row without its copy of an instance row."""
    return {name: value for name, value in series_row.items() if not name.startswith(LAST_INSTANCE)}


def study_copy_update(study: str, series_row: TableEntity, study_attributes: str) -> Operation:
    """An operation setting a series row's copy of the study attributes, only while the row is as read."""
    written = {"PartitionKey": study, "RowKey": series_row["RowKey"],
               STUDY_ATTRIBUTES_COPY: study_attributes}
    return ("update", written, {"mode": UpdateMode.MERGE, **unchanged_since(etag_of(series_row))})


def outbox_rows(records: Sequence[InstanceRecord]) -> int:
    """How many change-feed outbox rows a transaction storing ``records`` inserts."""
    return len({record.request or record.stored.version for record in records})


def _outbox_operations(records: Sequence[InstanceRecord], now: datetime) -> list[Operation]:
    """The change feed's outbox rows, atomic with the data: one per request, named after its first version.

    A version is committed by one transaction only, so the name is unique. An upsert is a Create of the new
    version (as in Azure's service). A record without request gets an outbox row of its own, ``change|{version}``.
    """
    by_request: dict[str, list[InstanceRecord]] = {}
    for record in records:
        by_request.setdefault(record.request or record.stored.version, []).append(record)
    operations: list[Operation] = []
    for key, members in by_request.items():
        ids = members[0].stored.ids
        change_id = request_change_id(key, min(m.stored.version for m in members)) if members[0].request else key
        changes = [Change(ChangeAction.CREATE, m.stored.ids.series, m.stored.ids.instance, m.stored.version)
                   for m in members]
        operations.append(outbox_operation(ids.study, change_id, changes, now))
    return operations


def instance_operations(
    record: InstanceRecord, study: TableEntity | None, series: TableEntity | None, instance: TableEntity | None
) -> list[Operation]:
    """The transaction storing one instance over its rows, as a commit of it alone would."""
    return group_operations([record], study, {record.stored.ids.series: series}, [instance])


def _instance_row(record: InstanceRecord, instance: TableEntity | None, now: datetime) -> dict[str, Any]:
    ids = record.stored.ids
    return {
        "PartitionKey": ids.study, "RowKey": instance_row_key(ids.series, ids.instance),
        "Version": record.stored.version, "SopClassUid": record.sop_class_uid,
        "TransferSyntaxUid": record.transfer_syntax, "Size": record.size, "Modality": record.modality,
        "Attributes": record.instance_attributes,
        "FrameIndex": record.frame_index, "FrameIndexInBlob": record.frame_index_in_blob,
        ROW_METADATA: record.metadata_text,
        "CreatedAt": instance["CreatedAt"] if instance else now, "UpdatedAt": now,
    }


def _series_row(
    record: InstanceRecord, series: dict[str, Any] | None, new_instance: bool, now: datetime,
) -> dict[str, Any]:
    ids = record.stored.ids
    return {
        "PartitionKey": ids.study, "RowKey": series_row_key(ids.series),
        "InstanceCount": (series["InstanceCount"] if series else 0) + (1 if new_instance else 0),
        "Modality": record.modality,
        "CreatedAt": series["CreatedAt"] if series else now, "UpdatedAt": now,
    }


def _study_row(
    record: InstanceRecord, study: dict[str, Any] | None, instance: TableEntity | None, new_series: bool,
    now: datetime,
) -> dict[str, Any]:
    modalities: dict[str, int] = json.loads(study["ModalityCounts"]) if study else {}
    if instance is not None and instance.get("Modality"):
        _add(modalities, str(instance["Modality"]), -1)
    if record.modality:
        _add(modalities, record.modality, 1)
    return {
        "PartitionKey": record.stored.ids.study, "RowKey": STUDY_ROW,
        "InstanceCount": (study["InstanceCount"] if study else 0) + (1 if instance is None else 0),
        "SeriesCount": (study["SeriesCount"] if study else 0) + (1 if new_series else 0),
        "ModalityCounts": json.dumps(modalities, sort_keys=True),
        "CreatedAt": study["CreatedAt"] if study else now, "UpdatedAt": now,
    }


def _add(counts: dict[str, int], key: str, delta: int) -> None:
    counts[key] = counts.get(key, 0) + delta
    if counts[key] <= 0:
        del counts[key]
