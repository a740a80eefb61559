"""The cleanup table's entries: blobs that may become unreferenced (targets), recorded before they can be.

Writers (a STOW request's intent as the sequencer retires it, a delete) name targets here; the blob cleanup
(``maintenance/blob_cleanup.py``) reads the due entries and deletes what no row references. See docs/storage.md.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.data.tables import TableEntity

from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance
from dicom_core.storage.clients import Storage
from dicom_core.storage.partition_upserts import PartitionUpserts

PARTITION_PREFIX = "due|"
SHARDS = 16  # entries spread over 16 partitions (by study), concurrent writers' transactions apart
SET_KIND = "set"  # the RowKey kind of an entry naming several targets (in its Targets property)
MAX_ENTRY_TARGETS = 100  # targets of one entry: well within the 32K characters of a Table string property
_DUE_FORMAT = "%Y%m%dT%H%M%S%fZ"  # fixed width, so RowKeys sort by due time
_cleanup_rows = PartitionUpserts(lambda storage: storage.cleanup)


class CleanupKind(enum.StrEnum):
    """What a cleanup target names."""

    VERSION = "version"  # the blobs of one version of an instance
    DOCUMENT = "document"  # a series metadata document


@dataclass(frozen=True)
class CleanupTarget:
    """Blobs that may become unreferenced: one version of an instance, or one series document."""

    kind: CleanupKind
    study: str
    series: str
    instance: str = ""
    version: str = ""

    @classmethod
    def of_version(cls, stored: StoredInstance) -> CleanupTarget:
        """The blobs of one stored version."""
        return cls(CleanupKind.VERSION, stored.ids.study, stored.ids.series, stored.ids.instance, stored.version)

    @classmethod
    def of_document(cls, study: str, series: str) -> CleanupTarget:
        """The metadata document of a series."""
        return cls(CleanupKind.DOCUMENT, study, series)

    @property
    def stored(self) -> StoredInstance:
        """The version a VERSION target names."""
        return StoredInstance(InstanceIdentifiers(self.study, self.series, self.instance), self.version)


@dataclass(frozen=True)
class CleanupEntry:
    """Where a cleanup entry is: its keys, and the targets it names."""

    partition: str
    row: str
    targets: tuple[CleanupTarget, ...]


def cleanup_delay(storage: Storage) -> timedelta:
    """How long after an entry is written its blobs may be deleted."""
    return timedelta(seconds=storage.settings.blob_cleanup_delay_seconds)


def shard_of(study: str) -> str:
    """The partition of the entries whose (first) target is in ``study``."""
    return f"{PARTITION_PREFIX}{int(hashlib.sha256(study.encode()).hexdigest(), 16) % SHARDS:x}"


def due_key(due: datetime) -> str:
    return due.astimezone(UTC).strftime(_DUE_FORMAT)


def entry_for(target: CleanupTarget, due: datetime) -> CleanupEntry:
    """The entry that names ``target`` alone (in its RowKey), due at ``due``."""
    parts = (due_key(due), target.kind.value, target.study, target.series, target.instance, target.version)
    return CleanupEntry(shard_of(target.study), "|".join(parts), (target,))


def entry_of(name: str, targets: Sequence[CleanupTarget], due: datetime) -> CleanupEntry:
    """One entry naming several ``targets`` (in its Targets property), called ``name`` (no ``|``), due at ``due``."""
    if not targets or len(targets) > MAX_ENTRY_TARGETS:
        raise ValueError(f"an entry names 1 to {MAX_ENTRY_TARGETS} targets, not {len(targets)}")
    return CleanupEntry(shard_of(targets[0].study), f"{due_key(due)}|{SET_KIND}|{name}", tuple(targets))


def entity_of(entry: CleanupEntry) -> dict[str, Any]:
    """The Table entity of an entry."""
    entity: dict[str, Any] = {"PartitionKey": entry.partition, "RowKey": entry.row}
    if entry.row.split("|")[1] == SET_KIND:
        entity["Targets"] = targets_json(entry.targets)
    return entity


def targets_json(targets: Iterable[CleanupTarget]) -> str:
    """The JSON of a Targets property: ``[[kind, study, series, instance, version], ...]``."""
    return json.dumps([[t.kind.value, t.study, t.series, t.instance, t.version] for t in targets],
                      separators=(",", ":"))


def parse_targets(text: str) -> tuple[CleanupTarget, ...]:
    """Read a Targets property."""
    return tuple(CleanupTarget(CleanupKind(kind), study, series, instance, version)
                 for kind, study, series, instance, version in json.loads(text))


def parse_entry(entity: TableEntity | dict[str, object]) -> CleanupEntry:
    """Read an entry back: one target in its RowKey, or several in its Targets property."""
    parts = str(entity["RowKey"]).split("|")
    if parts[1] == SET_KIND:
        targets = parse_targets(str(entity["Targets"]))
    else:
        _, kind, study, series, instance, version = parts
        targets = (CleanupTarget(CleanupKind(kind), study, series, instance, version),)
    return CleanupEntry(str(entity["PartitionKey"]), str(entity["RowKey"]), targets)


async def schedule_cleanup(
    storage: Storage, targets: Iterable[CleanupTarget], *, now: datetime | None = None,
) -> list[CleanupEntry]:
    """Record ``targets`` for cleanup after the configured delay, an entry each; call it before they can go."""
    due = (now or datetime.now(UTC)) + cleanup_delay(storage)
    entries = list({entry_for(target, due): None for target in targets})
    await write_entries(storage, entries)
    return entries


async def write_entries(storage: Storage, entries: Iterable[CleanupEntry]) -> None:
    """Write (or rewrite) entries; concurrent writers' entries of one partition share a transaction."""
    await _cleanup_rows.upsert(storage, (entity_of(entry) for entry in entries))
