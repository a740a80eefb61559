"""Blob cleanup: blobs that may become unreferenced are recorded first, and deleted once due and unreferenced.

A cleanup entry in the Cleanup table names one version's blobs (``.dcm``, ``.json``, ``.frames.json``) or one
series metadata document, and a due time. It is written *before* the blobs can become unreferenced: by the
store path before uploading (a crash before the commit, a 45070 or a failed store leaves blobs nobody
references), by an upsert for the version it replaces, by a delete for every version and every series document
it removes. `run_cleanup` (a timer function) processes the due entries: a version that an instance row still
references (the store committed, the upsert failed) only loses its entry; otherwise its blobs are deleted, then
the entry. The due time is ``DICOMWEB_BLOB_CLEANUP_DELAY_SECONDS`` after the entry was written, so a reader
that looked up a row just before an upsert or delete still reads a whole file. See docs/storage.md.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableEntity

from dicom_core.documents.series_documents import document_name
from dicom_core.index.reads import get_row
from dicom_core.index.rows import instance_row_key, series_row_key
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance
from dicom_core.storage.blobs import blob_properties_or_none, delete_instance_blobs
from dicom_core.storage.clients import Storage
from dicom_core.storage.concurrency import bounded_gather
from dicom_core.storage.partition_upserts import PartitionUpserts
from dicom_core.storage.tables import delete_entity_quietly, query_all

LOGGER = logging.getLogger(__name__)

PARTITION_PREFIX = "due|"
SHARDS = 16  # entries spread over 16 partitions (by study), each read as one RowKey range up to "now"
_DUE_FORMAT = "%Y%m%dT%H%M%S%fZ"  # fixed width, so RowKeys sort by due time
_CONCURRENCY = 16
_RANGE_END = "}"  # sorts after "|": every RowKey starting with a due time up to "now"
_cleanup_rows = PartitionUpserts(lambda storage: storage.cleanup)


class CleanupKind(enum.StrEnum):
    """What a cleanup entry names."""

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
    """Where a cleanup entry is: its keys, and what it names."""

    partition: str
    row: str
    target: CleanupTarget


@dataclass
class CleanupReport:
    """What one run of the cleanup did."""

    due: int = 0
    kept: int = 0  # still referenced: only the entry was removed
    versions_deleted: int = 0
    documents_deleted: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def cleanup_delay(storage: Storage) -> timedelta:
    """How long after an entry is written its blobs may be deleted."""
    return timedelta(seconds=storage.settings.blob_cleanup_delay_seconds)


def entry_for(target: CleanupTarget, due: datetime) -> CleanupEntry:
    """The entry that names ``target``, due at ``due``."""
    shard = int(hashlib.sha256(target.study.encode()).hexdigest(), 16) % SHARDS
    parts = (due.astimezone(UTC).strftime(_DUE_FORMAT), target.kind.value, target.study, target.series,
             target.instance, target.version)
    return CleanupEntry(f"{PARTITION_PREFIX}{shard:x}", "|".join(parts), target)


def parse_entry(entity: TableEntity | dict[str, object]) -> CleanupEntry:
    """Read an entry back from its keys."""
    _, kind, study, series, instance, version = str(entity["RowKey"]).split("|")
    target = CleanupTarget(CleanupKind(kind), study, series, instance, version)
    return CleanupEntry(str(entity["PartitionKey"]), str(entity["RowKey"]), target)


async def schedule_cleanup(
    storage: Storage, targets: Iterable[CleanupTarget], *, now: datetime | None = None,
) -> list[CleanupEntry]:
    """Record ``targets`` for cleanup after the configured delay; call it before they can become unreferenced."""
    due = (now or datetime.now(UTC)) + cleanup_delay(storage)
    entries = list({entry_for(target, due): None for target in targets})
    # Concurrent stores' entries of one shard share a transaction (partition_upserts.py).
    await _cleanup_rows.upsert(storage, ({"PartitionKey": entry.partition, "RowKey": entry.row} for entry in entries))
    return entries


async def cancel_cleanup(storage: Storage, entries: Iterable[CleanupEntry]) -> None:
    """Drop entries whose blobs were deleted already (missing entries are fine)."""
    await bounded_gather((_delete_entry(storage, entry) for entry in entries), limit=_CONCURRENCY)


async def due_entries(storage: Storage, now: datetime) -> list[CleanupEntry]:
    """Every entry due at ``now``: one RowKey range read per shard."""
    high = now.astimezone(UTC).strftime(_DUE_FORMAT) + _RANGE_END

    async def shard(number: int) -> list[CleanupEntry]:
        query = "PartitionKey eq @pk and RowKey lt @high"
        parameters = {"pk": f"{PARTITION_PREFIX}{number:x}", "high": high}
        return [parse_entry(entity) for entity in await query_all(
            storage.cleanup, query, parameters=parameters, select=["PartitionKey", "RowKey"])]

    shards = await asyncio.gather(*(shard(number) for number in range(SHARDS)))
    return [entry for entries in shards for entry in entries]


async def all_entries(storage: Storage) -> list[CleanupEntry]:
    """Every entry, due or not (the consistency checker reads them)."""
    return [parse_entry(entity) for entity in await query_all(
        storage.cleanup, "PartitionKey ge @low and PartitionKey lt @high",
        parameters={"low": PARTITION_PREFIX, "high": PARTITION_PREFIX[:-1] + _RANGE_END},
        select=["PartitionKey", "RowKey"])]


async def run_cleanup(storage: Storage, *, now: datetime | None = None) -> CleanupReport:
    """Process every entry due at ``now``: delete what nothing references, drop the entry either way."""
    report = CleanupReport()
    entries = await due_entries(storage, now or datetime.now(UTC))
    report.due = len(entries)

    async def process(entry: CleanupEntry) -> None:
        try:
            if entry.target.kind is CleanupKind.VERSION:
                await _clean_version(storage, entry, report)
            else:
                await _clean_document(storage, entry, report)
        except Exception as exc:  # the entry stays and is tried again by the next run
            report.failed += 1
            report.errors.append(f"{entry.row}: {exc}")
            LOGGER.warning("Cleanup of %s failed; the next run tries again", entry.row, exc_info=True)

    await bounded_gather((process(entry) for entry in entries), limit=_CONCURRENCY)
    if report.due:
        LOGGER.info("Blob cleanup: %d due, %d still referenced, %d versions and %d documents deleted, %d failed",
                    report.due, report.kept, report.versions_deleted, report.documents_deleted, report.failed)
    return report


async def _clean_version(storage: Storage, entry: CleanupEntry, report: CleanupReport) -> None:
    target = entry.target
    row = await get_row(storage, target.study, instance_row_key(target.series, target.instance), ["Version"])
    if row is not None and str(row["Version"]) == target.version:
        report.kept += 1
    else:
        await delete_instance_blobs(storage, target.stored)
        report.versions_deleted += 1
    await _delete_entry(storage, entry)


async def _clean_document(storage: Storage, entry: CleanupEntry, report: CleanupReport) -> None:
    target = entry.target
    blob = storage.metadata.get_blob_client(document_name(target.study, target.series))
    properties = await blob_properties_or_none(blob)
    if properties is None:
        await _delete_entry(storage, entry)
        return
    if await get_row(storage, target.study, series_row_key(target.series), ["RowKey"]) is not None:
        report.kept += 1  # the series was stored again: its document is in use
        await _delete_entry(storage, entry)
        return
    try:
        # Only the document read above: a store that re-creates the series meanwhile changes it.
        await blob.delete_blob(etag=properties.etag, match_condition=MatchConditions.IfNotModified)
    except ResourceModifiedError:
        return  # changed since: the next run looks again (the series row will say whether it is in use)
    except ResourceNotFoundError:
        pass
    report.documents_deleted += 1
    await _delete_entry(storage, entry)


async def _delete_entry(storage: Storage, entry: CleanupEntry) -> None:
    await delete_entity_quietly(storage.cleanup, entry.partition, entry.row)
