"""A bounded window of the consistency check: what one run of the repair timer checks, resuming from a cursor.

A run reads one page of about ``rows`` rows of the studies table from where the last run stopped and checks the
studies those rows belong to as the whole-archive check does, each study partition read whole: counts, empty
rows, the search entries a search by study, series or SOP Instance UID needs (point reads, with the sort keys of
the study's claims), the blobs under the study's prefix (missing and orphan blobs, orphan documents), the
series documents and the study's outbox rows. Besides, it reads one page of each blob container from its own
marker, for the orphan blobs and documents of studies that have no rows any more (point reads of their rows).
The continuation tokens are kept in a cursor row of the index table; a listing that ends starts again from the
beginning, so every study and blob is checked once per cycle. What the window covers is no subject of the
archive's size: the cleanup entries and pending announcements (work in flight) are read whole.
The cursor moves on only when the caller saves the window (`save_cursor`), after it repaired what it found.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableEntity, UpdateMode
from azure.storage.blob.aio import ContainerClient

from dicom_core.index.reads import get_row
from dicom_core.index.rows import STUDY_ROW, instance_row_key, series_row_key
from dicom_core.maintenance.consistency import (
    Finding,
    Snapshot,
    StudyRows,
    add_row,
    blob_names,
    covered_targets,
    document_series,
    orphan_blob,
    orphan_document,
    snapshot_findings,
    version_of_blob,
)
from dicom_core.search_index.keys import (
    ALL_SERIES,
    ALL_STUDIES,
    CLAIMS,
    INSTANCES_BY_UID,
    IndexKey,
    instance_key,
    legacy_uid_keys,
    target_property,
)
from dicom_core.storage.clients import Storage
from dicom_core.storage.concurrency import bounded_gather
from dicom_core.storage.tables import get_entity_or_none, query_all

DEFAULT_WINDOW_ROWS = 5_000  # a blob listing page holds at most 5,000 names
CURSOR_PARTITION = "repair"  # in the index table; no search reads it
CURSOR_ROW = "cursor"
_CURSORS = ("Studies", "Files", "Metadata")
_CONCURRENCY = 16


@dataclass(frozen=True)
class Window:
    """One window: its findings, what it read, and the cursor that the next run resumes from."""

    findings: list[Finding]
    studies: int
    rows_read: int
    blobs_listed: int
    next_cursor: dict[str, str]


async def check_window(storage: Storage, *, rows: int = DEFAULT_WINDOW_ROWS) -> Window:
    """Check the studies of the next ``rows`` rows of the studies table and the next page of each container."""
    cursor = await _cursor(storage)
    (page, studies_token), (files_page, files_token), (metadata_page, metadata_token), covered = await asyncio.gather(
        _rows_page(storage, rows, cursor["Studies"]), _blob_page(storage.files, rows, cursor["Files"]),
        _blob_page(storage.metadata, rows, cursor["Metadata"]), covered_targets(storage))
    uids = list(dict.fromkeys(str(row["PartitionKey"]) for row in page))
    studies: dict[str, StudyRows] = {}
    outboxes: list[TableEntity] = []
    partitions = await bounded_gather((query_all(storage.studies, "PartitionKey eq @pk", parameters={"pk": uid})
                                       for uid in uids), limit=_CONCURRENCY)
    for partition in partitions:
        for row in partition:
            add_row(studies, outboxes, row)
    listings = await bounded_gather((blob_names(container, f"{uid}/") for uid in uids
                                     for container in (storage.files, storage.metadata)), limit=_CONCURRENCY)
    files, metadata = set().union(*listings[0::2]), set().union(*listings[1::2])
    listed = set().union(*await bounded_gather((_listed(storage, uid, rows) for uid, rows in studies.items()),
                                               limit=_CONCURRENCY))
    findings = await snapshot_findings(storage, Snapshot(studies, outboxes, files, metadata, listed, covered))
    others = [name for name in files_page | metadata_page if name.split("/")[0] not in studies]
    findings += [finding for finding in await bounded_gather((_orphan(storage, name, covered.versions,
                                                                      covered.documents) for name in sorted(others)),
                                                             limit=_CONCURRENCY) if finding is not None]
    return Window(list(dict.fromkeys(findings)), len(studies), sum(len(p) for p in partitions) + len(page),
                  len(files_page) + len(metadata_page),
                  {"Studies": studies_token, "Files": files_token, "Metadata": metadata_token})


async def save_cursor(storage: Storage, window: Window) -> None:
    """Let the next run resume after ``window``."""
    await storage.index.upsert_entity({"PartitionKey": CURSOR_PARTITION, "RowKey": CURSOR_ROW, **window.next_cursor},
                                      mode=UpdateMode.REPLACE)


async def _cursor(storage: Storage) -> dict[str, str]:
    row = await get_entity_or_none(storage.index, CURSOR_PARTITION, CURSOR_ROW)
    return {name: str(row.get(name) or "") if row else "" for name in _CURSORS}


async def _rows_page(storage: Storage, rows: int, token: str) -> tuple[list[TableEntity], str]:
    """About ``rows`` keys of the studies table from ``token``, and the token after them ("" at the end)."""
    pages = storage.studies.list_entities(results_per_page=rows, select=["PartitionKey"]).by_page(
        continuation_token=token or None)
    return await _first_pages(pages, rows)


async def _blob_page(container: ContainerClient, size: int, token: str) -> tuple[set[str], str]:
    """The names of one page of ``container``'s blobs from ``token``, and the token after them."""
    pages = container.list_blobs(results_per_page=size).by_page(continuation_token=token or None)
    found, after = await _first_pages(pages, size)
    return {blob.name for blob in found}, after


async def _first_pages(pages: AsyncIterator[AsyncIterator[Any]], size: int) -> tuple[list[Any], str]:
    """Items of ``pages`` until ``size`` are read (a shard's page can be empty), and the token after them."""
    items: list[Any] = []
    try:
        async for page in pages:
            items += [item async for item in page]
            if len(items) >= size:
                break
    except ResourceNotFoundError:
        return [], ""
    token = getattr(pages, "continuation_token", None)  # typed as a plain iterator; it is a page iterator
    return items, str(token) if token else ""


async def _listed(storage: Storage, study: str, rows: StudyRows) -> set[tuple[str, ...]]:
    """The targets among the study's rows that have their `s.all`, `se.all` or SOP Instance UID entry."""
    claims = {str(claim["RowKey"]): str(claim["SortKey"]) for claim in await query_all(
        storage.index, "PartitionKey eq @pk", parameters={"pk": f"{CLAIMS}|{study}"}, select=["RowKey", "SortKey"])}
    # (target, its entry in any layout: partition, RowKey, the property that holds the target or "RowKey")
    wanted: list[tuple[tuple[str, ...], tuple[tuple[str, str, str], ...]]] = []
    if rows.study is not None and STUDY_ROW in claims:
        wanted.append(((study,), ((ALL_STUDIES, IndexKey(ALL_STUDIES).row_key(claims[STUDY_ROW], study), "RowKey"),)))
    for series in rows.series:
        sort = claims.get(series_row_key(series))
        if sort is not None:
            wanted.append(((study, series),
                           ((ALL_SERIES, IndexKey(ALL_SERIES).row_key(sort, study, series), "RowKey"),)))
    for series, instance in rows.instances:
        ids = (study, series, instance)
        key = instance_key(instance)
        wanted.append((ids, ((key.partition, key.row_key("", *ids), target_property(*ids)),
                             *((old.partition, old.row_key("", *ids), "RowKey")
                               for old in legacy_uid_keys(INSTANCES_BY_UID, instance)))))

    async def found(target: tuple[str, ...], entries: tuple[tuple[str, str, str], ...]) -> tuple[str, ...] | None:
        for partition, row_key, holder in entries:
            entity = await get_entity_or_none(storage.index, partition, row_key, [holder])
            if entity is not None and entity.get(holder):
                return target
        return None

    results = await bounded_gather((found(target, entries) for target, entries in wanted), limit=_CONCURRENCY)
    return {target for target in results if target is not None}


async def _orphan(storage: Storage, name: str, versions: frozenset[tuple[str, str, str, str]],
                  documents: frozenset[tuple[str, str]]) -> Finding | None:
    """The finding about a blob of a study outside the window's studies, if nothing references or covers it."""
    version = version_of_blob(name)
    if version is not None:
        study, series, instance, stem = version
        row = await get_row(storage, study, instance_row_key(series, instance), ["Version"])
        referenced = row is not None and str(row["Version"]) == stem
        return None if referenced or version in versions else orphan_blob(name)
    for study, series in document_series([name]):
        if (study, series) not in documents and await get_row(storage, study, series_row_key(series),
                                                              ["RowKey"]) is None:
            return orphan_document(study, series)
    return None
