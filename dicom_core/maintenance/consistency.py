"""Consistency checker: walks Blob and Table storage and reports what disagrees.

`python -m dicom_core.maintenance.consistency` (settings from the environment, like the app) prints one line per finding
and exits 1 when there is any. Findings:

- ``orphan-blob``: a version's blob (a thumbnail too) that no instance row references and no cleanup entry (nor a
  STOW request's intent) covers (it would stay for ever);
- ``missing-blob``: an instance row whose ``.dcm`` blob is gone, or its ``.json`` (when the row does not hold the
  DICOM JSON) or ``.frames.json`` (when its frame index is in a blob);
- ``series-count`` / ``study-count``: a series or study row whose InstanceCount, SeriesCount or ModalityCounts
  differ from its instance rows; ``empty-series`` / ``empty-study``: such a row without instances;
  ``instance-without-parent``: an instance row without its series or study row;
- ``orphan-document``: a series metadata document without a series row and without a cleanup entry;
  ``document-mismatch``: a series document that, once reconciled as a reader would, does not hold exactly one
  record of each of the series' instances (that of the row's version where the row holds the JSON);
- ``study-not-listed``: a study row without an ``s.all`` search index entry (unfiltered searches miss it);
  ``series-not-listed`` / ``instance-not-listed``: a series row without its ``se.all`` entry, an instance row
  without its target in the entity a search by SOPInstanceUID reads (or an entry of a layout before the reindex;
  a delete that died after removing entries leaves such rows); ``series-not-indexed`` (only with
  ``--uid-entries``): a series row without its entry for a search by SeriesInstanceUID;
- ``unsequenced-outbox``: a change-feed outbox row older than the announcement timeout that is neither
  announced nor appended to the feed (its change would never reach the feed).

Storage should be quiet while it runs: a store or delete in flight can show up as a finding. ``--repair`` repairs
what it finds (``repair.py``), prints one ``repaired:`` line per subject and the findings left, and exits 1 when
any is left.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableEntity
from azure.storage.blob.aio import ContainerClient

from dicom_core.changefeed.feed_reads import FEED_PARTITION
from dicom_core.changefeed.sequencer import DONE_PREFIX
from dicom_core.documents.series_documents import SEPARATOR, document_name, verified_properties
from dicom_core.index.cleanup_entries import CleanupKind
from dicom_core.index.delete import is_data_row
from dicom_core.index.instance_metadata import kept_in_row
from dicom_core.index.outbox import (
    ANNOUNCEMENT_TIMEOUT,
    OUTBOX_PREFIX,
    PENDING_PARTITION,
    announcement_of,
    pending_announcements,
)
from dicom_core.index.rows import ROW_METADATA, STUDY_ROW
from dicom_core.maintenance.blob_cleanup import all_entries
from dicom_core.model.dicom_json import first_value
from dicom_core.model.tags import SOP_INSTANCE_UID
from dicom_core.search_index.keys import (
    ALL_SERIES,
    ALL_STUDIES,
    INSTANCES_BY_UID,
    SERIES_BY_UID,
    UID_PARTITION_LAYOUT,
    UID_RANGE_LAYOUT,
    legacy_uid_keys,
    parse_entries,
    uid_key,
)
from dicom_core.settings import Settings
from dicom_core.storage.blobs import THUMBNAIL_MARK
from dicom_core.storage.clients import Storage, open_storage
from dicom_core.storage.concurrency import bounded_gather
from dicom_core.storage.sharded_table import partition_kind
from dicom_core.storage.tables import get_entity_or_none, query_all

_VERSION_SUFFIXES = (".frames.json", ".dcm", ".json")
_DOCUMENT_CONCURRENCY = 8


@dataclass(frozen=True)
class Finding:
    """One inconsistency: its kind, what it is about, and what is wrong."""

    kind: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject}: {self.detail}"


@dataclass
class StudyRows:
    """The rows of one study partition."""

    study: TableEntity | None = None
    series: dict[str, TableEntity] = field(default_factory=dict)
    instances: dict[tuple[str, str], TableEntity] = field(default_factory=dict)  # (series, instance) -> row


@dataclass(frozen=True)
class Covered:
    """The blob versions and series documents that cleanup entries and STOW requests' intents account for."""

    versions: frozenset[tuple[str, str, str, str]]
    documents: frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Snapshot:
    """What a check compares: study partitions, their outbox rows, blob names, search entries' targets, cover."""

    studies: dict[str, StudyRows]
    outboxes: list[TableEntity]
    files: set[str]
    metadata: set[str]
    listed: set[tuple[str, ...]]
    covered: Covered


async def check_consistency(storage: Storage, *, reconcile_documents: bool = True,
                            uid_entries: bool = False) -> list[Finding]:
    """Walk every row, blob, cleanup entry and `s.all` entry; return the findings (none when consistent)."""
    outboxes: list[TableEntity] = []
    studies, files, metadata, covered, listed = await asyncio.gather(
        _studies(storage, outboxes), blob_names(storage.files), blob_names(storage.metadata),
        covered_targets(storage), _listed(storage),
    )
    snapshot = Snapshot(studies, outboxes, files, metadata, listed, covered)
    findings = await snapshot_findings(storage, snapshot, reconcile_documents=reconcile_documents)
    if uid_entries:
        findings += await _check_uid_entries(storage, studies)
    return findings


async def covered_targets(storage: Storage) -> Covered:
    """What the cleanup entries and the pending announcements cover (work in flight, read whole)."""
    cleanup, intents = await asyncio.gather(all_entries(storage), pending_announcements(storage))
    # A STOW request's intent (its announcement) is its cleanup record until the sequencer retires it.
    targets = [target for entry in cleanup for target in entry.targets]
    targets += [target for intent in intents for target in (*intent.targets, *intent.replaced)]
    versions = [t for t in targets if t.kind is CleanupKind.VERSION]
    return Covered(frozenset((t.study, t.series, t.instance, t.version) for t in versions),
                   frozenset((t.study, t.series) for t in targets if t.kind is CleanupKind.DOCUMENT))


async def snapshot_findings(storage: Storage, snapshot: Snapshot, *, reconcile_documents: bool = True) -> list[Finding]:
    """The findings about the studies and blob names of ``snapshot`` (a blob's study is in it when it has rows)."""
    studies, files, metadata = snapshot.studies, snapshot.files, snapshot.metadata
    findings: list[Finding] = []
    referenced: set[tuple[str, str, str, str]] = set()
    for uid, rows in sorted(studies.items()):
        findings += _check_rows(uid, rows, snapshot.listed)
        for (series, instance), row in rows.instances.items():
            stem = f"{uid}/{series}/{instance}/{row['Version']}"
            referenced.add((uid, series, instance, str(row["Version"])))
            expected = [(files, f"{stem}.dcm")]
            if not kept_in_row(row):  # its DICOM JSON is in its own blob
                expected.append((metadata, f"{stem}.json"))
            if row.get("FrameIndexInBlob"):
                expected.append((metadata, f"{stem}.frames.json"))
            findings += [Finding("missing-blob", name, "the instance row references it") for names, name in expected
                         if name not in names]
    for name in sorted(files | metadata):
        version = version_of_blob(name)
        if version is not None and version not in referenced and version not in snapshot.covered.versions:
            findings.append(orphan_blob(name))
    for study, series in sorted(document_series(metadata)):
        if series not in studies.get(study, StudyRows()).series and (study, series) not in snapshot.covered.documents:
            findings.append(orphan_document(study, series))
    findings += await _check_outboxes(storage, snapshot.outboxes)
    if reconcile_documents:
        findings += await _check_documents(storage, studies)
    return findings


def orphan_blob(name: str) -> Finding:
    """The finding about a version's blob that nothing references or covers."""
    return Finding("orphan-blob", name, "no instance row references it and no cleanup entry covers it")


def orphan_document(study: str, series: str) -> Finding:
    """The finding about a series document without a series row or a cleanup entry."""
    return Finding("orphan-document", document_name(study, series),
                   "the series has no row and no cleanup entry covers the document")


def document_series(names: Iterable[str]) -> set[tuple[str, str]]:
    """(study, series) of the series metadata documents among blob names."""
    return {(name.split("/")[0], name.split("/")[1]) for name in names
            if name.count("/") == 2 and name.endswith("/metadata")}


async def _check_uid_entries(storage: Storage, studies: dict[str, StudyRows]) -> list[Finding]:
    """Series rows that a search by their UID misses: no target in their UID's entity, no entry of a layout before
    (instances: ``_listed``)."""
    targets = [(study, series) for study, rows in studies.items() for series in rows.series]
    partitions = {uid_key(SERIES_BY_UID, series).partition for _, series in targets}
    pages = await bounded_gather((query_all(storage.index, "PartitionKey eq @pk", parameters={"pk": partition})
                                  for partition in partitions), limit=_DOCUMENT_CONCURRENCY)
    found = {(entry.study, entry.series) for page in pages for entity in page for entry in parse_entries(entity)}

    async def legacy_entry(ids: tuple[str, str]) -> Finding | None:
        for key in legacy_uid_keys(SERIES_BY_UID, ids[-1]):
            if await get_entity_or_none(storage.index, key.partition, key.row_key("", *ids), ["RowKey"]) is not None:
                return None
        return Finding("series-not-indexed", "/".join(ids), f"no {SERIES_BY_UID} index entry")

    results = await bounded_gather((legacy_entry(ids) for ids in targets if ids not in found),
                                   limit=_DOCUMENT_CONCURRENCY)
    return [finding for finding in results if finding is not None]


async def _check_outboxes(storage: Storage, outboxes: list[TableEntity]) -> list[Finding]:
    """Outbox rows old enough that their commit cannot be in flight, neither announced nor in the feed."""
    old = datetime.now(UTC) - ANNOUNCEMENT_TIMEOUT
    candidates = [row for row in outboxes if row.get("ChangedAt") is not None and row["ChangedAt"] < old]
    if not candidates:
        return []
    announced = {str(e["RowKey"]) async for e in storage.changes.query_entities(
        "PartitionKey eq @pk", parameters={"pk": PENDING_PARTITION}, select=["RowKey"])}
    findings = []
    for row in candidates:
        change_id = str(row["RowKey"])[len(OUTBOX_PREFIX):]
        if announcement_of(change_id) in announced:
            continue
        if await get_entity_or_none(storage.changes, FEED_PARTITION, f"{DONE_PREFIX}{change_id}", ["RowKey"]) is None:
            findings.append(Finding("unsequenced-outbox", f"{row['PartitionKey']}/{row['RowKey']}",
                                    "neither announced nor appended to the change feed"))
    return findings


def _check_rows(uid: str, rows: StudyRows, listed: set[tuple[str, ...]]) -> list[Finding]:
    findings = []
    per_series = Counter(series for series, _ in rows.instances)
    for series, row in sorted(rows.series.items()):
        count = per_series.get(series, 0)
        subject = f"{uid}/{series}"
        if count and (uid, series) not in listed:
            findings.append(Finding("series-not-listed", subject, f"no {ALL_SERIES} index entry"))
        if count == 0:
            findings.append(Finding("empty-series", subject, "a series row without instance rows"))
        elif int(row["InstanceCount"]) != count:
            findings.append(Finding("series-count", subject,
                                    f"InstanceCount {row['InstanceCount']}, {count} instance rows"))
    for series, instance in sorted(rows.instances):
        if series not in rows.series or rows.study is None:
            findings.append(Finding("instance-without-parent", f"{uid}/{series}/{instance}",
                                    "its series row or study row is missing"))
        elif (uid, series, instance) not in listed:
            findings.append(Finding("instance-not-listed", f"{uid}/{series}/{instance}",
                                    f"no {INSTANCES_BY_UID} index entry"))
    if rows.study is None:
        return findings
    if not rows.instances:
        findings.append(Finding("empty-study", uid, "a study row without instance rows"))
        return findings
    modalities = Counter(str(r.get("Modality")) for r in rows.instances.values() if r.get("Modality"))
    kept = json.loads(str(rows.study.get("ModalityCounts") or "{}"))
    actual = (len(rows.instances), len(per_series), dict(modalities))
    recorded = (int(rows.study["InstanceCount"]), int(rows.study["SeriesCount"]), kept)
    if actual != recorded:
        findings.append(Finding("study-count", uid, f"row says instances/series/modalities {recorded}, rows {actual}"))
    if (uid,) not in listed:
        findings.append(Finding("study-not-listed", uid, f"no {ALL_STUDIES} index entry"))
    return findings


async def _check_documents(storage: Storage, studies: dict[str, StudyRows]) -> list[Finding]:
    """Reconcile every series document as a reader would, then compare its records with the instance rows."""

    async def check(study: str, series: str, row: TableEntity, rows: StudyRows) -> Finding | None:
        instances = {instance: r for (s, instance), r in rows.instances.items() if s == series}
        await verified_properties(storage, study, series, str(row.metadata["etag"]))
        blob = storage.metadata.get_blob_client(document_name(study, series))
        data = await (await blob.download_blob()).readall()
        records = [(line, first_value(json.loads(line), SOP_INSTANCE_UID) or "") for line in data.split(SEPARATOR)
                   if line]
        # A record of another version than its row's (where the row holds the JSON to compare with).
        stale = [line for line, uid in records if uid in instances and kept_in_row(instances[uid])
                 and line != str(instances[uid][ROW_METADATA]).encode()]
        if sorted(uid for _, uid in records) != sorted(instances) or stale:
            return Finding("document-mismatch", document_name(study, series),
                           f"{len(records)} records after reconciling ({len(stale)} of another version), "
                           f"{len(instances)} instance rows")
        return None

    results = await bounded_gather((check(study, series, row, rows) for study, rows in studies.items()
                                    for series, row in rows.series.items()), limit=_DOCUMENT_CONCURRENCY)
    return [finding for finding in results if finding is not None]


async def _studies(storage: Storage, outboxes: list[TableEntity]) -> dict[str, StudyRows]:
    studies: dict[str, StudyRows] = {}
    try:
        async for row in storage.studies.list_entities():
            add_row(studies, outboxes, row)
    except ResourceNotFoundError:
        pass
    return studies


def add_row(studies: dict[str, StudyRows], outboxes: list[TableEntity], row: TableEntity) -> None:
    """File a row of the studies table under its study (an outbox row among ``outboxes``)."""
    key = str(row["RowKey"])
    if not is_data_row(key):
        outboxes.append(row)
        return
    rows = studies.setdefault(str(row["PartitionKey"]), StudyRows())
    if key == STUDY_ROW:
        rows.study = row
    elif key.startswith("series|"):
        rows.series[key.split("|", 1)[1]] = row
    elif key.startswith("instance|"):
        _, series, instance = key.split("|", 2)
        rows.instances[(series, instance)] = row


async def blob_names(container: ContainerClient, prefix: str | None = None) -> set[str]:
    """The names of the blobs of ``container`` (those starting with ``prefix``); none when it is gone."""
    try:
        return {blob.name async for blob in container.list_blobs(name_starts_with=prefix)}
    except ResourceNotFoundError:
        return set()


async def _listed(storage: Storage) -> set[tuple[str, ...]]:
    """The targets of the `s.all`, `se.all` and SOP instance UID entries (`i.at`, and `i.root`, `i.uid` of the
    layouts before): (study,), (study, series), (study, series, instance). One walk of the index table (it is
    sharded; every property, for the targets of the UID lookup entities).
    """
    listed: set[tuple[str, ...]] = set()
    indexes = {ALL_STUDIES, ALL_SERIES, INSTANCES_BY_UID, UID_RANGE_LAYOUT[INSTANCES_BY_UID],
               UID_PARTITION_LAYOUT[INSTANCES_BY_UID]}
    try:
        async for entity in storage.index.list_entities():
            if partition_kind(str(entity["PartitionKey"])) in indexes:
                listed.update(tuple(uid for uid in (entry.study, entry.series, entry.instance) if uid is not None)
                              for entry in parse_entries(entity))
    except ResourceNotFoundError:
        pass
    return listed


def version_of_blob(name: str) -> tuple[str, str, str, str] | None:
    """(study, series, instance, version) of a version's blob name, or None for other blobs."""
    parts = name.split("/")
    if len(parts) != 4:
        return None
    stem, thumbnail, _ = parts[3].partition(THUMBNAIL_MARK)
    if thumbnail:
        return parts[0], parts[1], parts[2], stem
    for suffix in _VERSION_SUFFIXES:
        if parts[3].endswith(suffix):
            return parts[0], parts[1], parts[2], parts[3][: -len(suffix)]
    return None


async def _main(reconcile_documents: bool, uid_entries: bool, repair: bool) -> int:
    storage = await open_storage(Settings.from_environment())
    try:
        findings = await check_consistency(storage, reconcile_documents=reconcile_documents, uid_entries=uid_entries)
        if repair and findings:
            # Imported here: the repair module builds on this one (and `python -m` runs this one as __main__).
            from dicom_core.maintenance.repair import repair_findings

            report = await repair_findings(storage, findings, limit=len(findings))
            for done in report.repaired:
                print(done)
            findings = report.left
    finally:
        await storage.close()
    for finding in findings:
        print(finding)
    print(f"{len(findings)} finding(s)" if findings else "consistent: no findings")
    return 1 if findings else 0


def main(argv: list[str] | None = None) -> None:
    """Command line: check the storage the environment's settings name (and repair it); exit 1 on findings left."""
    parser = argparse.ArgumentParser(prog="python -m dicom_core.maintenance.consistency",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--no-reconcile", action="store_true",
                        help="do not reconcile series metadata documents (which writes them) before comparing")
    parser.add_argument("--uid-entries", action="store_true",
                        help="also check that every series row has its entry for a search by its UID")
    parser.add_argument("--repair", action="store_true",
                        help="repair what can be repaired (as the repair timer does), print what was repaired and "
                             "the findings left")
    arguments = parser.parse_args(argv)
    sys.exit(asyncio.run(_main(not arguments.no_reconcile, arguments.uid_entries, arguments.repair)))


if __name__ == "__main__":
    main()
