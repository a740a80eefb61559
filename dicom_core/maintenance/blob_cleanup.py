"""Blob cleanup: blobs that may become unreferenced are recorded first, and deleted once due and unreferenced.

A cleanup entry in the Cleanup table names blobs that may become unreferenced, *targets*: one version's blobs
(``.dcm``, ``.json``, ``.frames.json``) or one series metadata document; and a due time. It is written *before*
the blobs can become unreferenced: by a STOW request before it uploads (one entry naming every version the
request uploads and every version its upserts replace: a crash before a commit, a 45070 or a failed store
leaves blobs nobody references), by a delete for every version and every series document it removes (an entry
per target). `run_cleanup` (a timer function) processes the due entries: a version that an instance row still
references (the store committed, the upsert failed) is kept; otherwise its blobs are deleted; an entry all of
whose targets are done is deleted. The due time is ``DICOMWEB_BLOB_CLEANUP_DELAY_SECONDS`` after the entry was
written, so a reader that looked up a row just before an upsert or delete still reads a whole file. See
docs/storage.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from dicom_core.documents.series_documents import document_name
from dicom_core.index.cleanup_entries import (
    PARTITION_PREFIX,
    CleanupEntry,
    CleanupKind,
    CleanupTarget,
    due_key,
    parse_entry,
)
from dicom_core.index.reads import get_row
from dicom_core.index.rows import instance_row_key, series_row_key
from dicom_core.storage.batch_deletes import RowDelete, delete_rows
from dicom_core.storage.blobs import blob_properties_or_none, delete_instance_blobs
from dicom_core.storage.clients import Storage
from dicom_core.storage.concurrency import bounded_gather
from dicom_core.storage.tables import query_all

LOGGER = logging.getLogger(__name__)

_CONCURRENCY = 16
_RANGE_END = "}"  # sorts after "|": every RowKey starting with a due time up to "now"
_SELECT = ["PartitionKey", "RowKey", "Targets"]
_RANGE_FILTER = "PartitionKey eq @pk and RowKey ge @low and RowKey le @high"


@dataclass
class CleanupReport:
    """What one run of the cleanup did (entries due; targets kept, deleted, failed)."""

    due: int = 0
    kept: int = 0  # versions still referenced: nothing deleted
    versions_deleted: int = 0
    documents_deleted: int = 0
    failed: int = 0
    entries_deleted: int = 0
    errors: list[str] = field(default_factory=list)

    def fail(self, target: CleanupTarget, exc: BaseException) -> None:
        """Record a target that could not be cleaned up (its entry stays for the next run)."""
        self.failed += 1
        self.errors.append(f"{target}: {exc}")
        LOGGER.warning("Cleanup of %s failed; the next run tries again", target, exc_info=exc)


async def due_entries(storage: Storage, now: datetime) -> list[CleanupEntry]:
    """Every entry due at ``now``: one query over the shards (the table holds only entries not processed yet)."""
    return [parse_entry(entity) for entity in await query_all(
        storage.cleanup, "PartitionKey ge @low and PartitionKey lt @high and RowKey lt @due",
        parameters={"low": PARTITION_PREFIX, "high": PARTITION_PREFIX[:-1] + _RANGE_END,
                    "due": due_key(now) + _RANGE_END}, select=_SELECT)]


async def all_entries(storage: Storage) -> list[CleanupEntry]:
    """Every entry, due or not (the consistency checker reads them)."""
    return [parse_entry(entity) for entity in await query_all(
        storage.cleanup, "PartitionKey ge @low and PartitionKey lt @high",
        parameters={"low": PARTITION_PREFIX, "high": PARTITION_PREFIX[:-1] + _RANGE_END}, select=_SELECT)]


async def run_cleanup(storage: Storage, *, now: datetime | None = None) -> CleanupReport:
    """Process every entry due at ``now``: delete what nothing references, then the entries all done."""
    report = CleanupReport()
    entries = await due_entries(storage, now or datetime.now(UTC))
    report.due = len(entries)
    targets = list(dict.fromkeys(target for entry in entries for target in entry.targets))
    done = await _clean_targets(storage, targets, report)
    await _delete_entries(storage, [entry for entry in entries if done.issuperset(entry.targets)], report)
    if report.due:
        LOGGER.info("Blob cleanup: %d entries due (%d deleted); %d versions still referenced, %d versions and "
                    "%d documents deleted, %d failed", report.due, report.entries_deleted, report.kept,
                    report.versions_deleted, report.documents_deleted, report.failed)
    return report


async def _clean_targets(storage: Storage, targets: list[CleanupTarget], report: CleanupReport) -> set[CleanupTarget]:
    """Clean up every target; return those done (kept or deleted), not those that failed or must wait."""
    by_study: dict[str, list[CleanupTarget]] = {}
    for target in targets:
        if target.kind is CleanupKind.VERSION:
            by_study.setdefault(target.study, []).append(target)
    referenced: dict[str, dict[str, str]] = {}  # study -> instance row key -> the version its row names

    async def read(study: str, versions: list[CleanupTarget]) -> None:
        try:
            referenced[study] = await _named_versions(storage, study, versions)
        except Exception as exc:
            for target in versions:
                report.fail(target, exc)

    await bounded_gather((read(study, versions) for study, versions in by_study.items()), limit=_CONCURRENCY)
    done: set[CleanupTarget] = set()

    async def clean(target: CleanupTarget) -> None:
        try:
            if target.kind is CleanupKind.DOCUMENT:
                if await _clean_document(storage, target, report):
                    done.add(target)
                return
            if target.study not in referenced:
                return  # its rows could not be read: failed above
            if referenced[target.study].get(instance_row_key(target.series, target.instance)) == target.version:
                report.kept += 1
            else:
                await delete_instance_blobs(storage, target.stored)
                report.versions_deleted += 1
            done.add(target)
        except Exception as exc:  # its entry stays and is tried again by the next run
            report.fail(target, exc)

    await bounded_gather((clean(target) for target in targets), limit=_CONCURRENCY)
    return done


async def _named_versions(storage: Storage, study: str, versions: list[CleanupTarget]) -> dict[str, str]:
    """The versions the instance rows of ``versions`` name: a point read for one instance, else one range query."""
    keys = sorted({instance_row_key(target.series, target.instance) for target in versions})
    if len(keys) == 1:
        row = await get_row(storage, study, keys[0], ["Version"])
        return {keys[0]: str(row["Version"])} if row is not None else {}
    rows = await query_all(storage.studies, _RANGE_FILTER, parameters={"pk": study, "low": keys[0], "high": keys[-1]},
                           select=["RowKey", "Version"])
    return {str(row["RowKey"]): str(row["Version"]) for row in rows}


async def _clean_document(storage: Storage, target: CleanupTarget, report: CleanupReport) -> bool:
    """Delete a series document whose series row is gone; False when it changed meanwhile (look again later)."""
    blob = storage.metadata.get_blob_client(document_name(target.study, target.series))
    properties = await blob_properties_or_none(blob)
    if properties is None:
        return True
    if await get_row(storage, target.study, series_row_key(target.series), ["RowKey"]) is not None:
        report.kept += 1  # the series was stored again: its document is in use
        return True
    try:
        # Only the document read above: a store that re-creates the series meanwhile changes it.
        await blob.delete_blob(etag=properties.etag, match_condition=MatchConditions.IfNotModified)
    except ResourceModifiedError:
        return False  # changed since: the next run looks again (the series row will say whether it is in use)
    except ResourceNotFoundError:
        pass
    report.documents_deleted += 1
    return True


async def _delete_entries(storage: Storage, entries: list[CleanupEntry], report: CleanupReport) -> None:
    """Delete finished entries, a transaction of up to 100 per partition (a leftover is processed again)."""
    by_partition: dict[str, list[RowDelete]] = {}
    for entry in entries:
        by_partition.setdefault(entry.partition, []).append(RowDelete(entry.row))

    async def delete(partition: str, rows: list[RowDelete]) -> None:
        try:
            report.entries_deleted += await delete_rows(storage.cleanup, partition, rows)
        except Exception:
            LOGGER.warning("Could not delete cleanup entries of %s; the next run will", partition, exc_info=True)

    await bounded_gather((delete(partition, rows) for partition, rows in by_partition.items()), limit=_CONCURRENCY)
