"""Pruning stale search index entries: entries whose row is gone or no longer holds the value they index.

Searches verify every entry against its row and drop stale ones, so a stale entry is never served; it only
costs reads (an upsert that changed a patient's name, a delete whose study came back, a store that crashed
before its commit). Each run reads one page of the index table (``limit`` entries, resuming where the last run
stopped: the page's continuation token is kept in a cursor row) and deletes the entries of ``s.``, ``se.`` and
``i.`` indexes that are older than ``STALE_AFTER`` and that their rows do not account for, as a delete would:
entries first (If-Match), then a new generation of each study touched, so a store that wrote such an entry as an
intent and has not committed yet fails its commit and writes it again. The rows are then read once more and an
entry a commit made valid meanwhile is written back. See docs/storage.md.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableEntity, UpdateMode

from dicom_core.index.delete import bump_generation
from dicom_core.index.reads import get_row
from dicom_core.index.rows import STUDY_ROW, instance_row_key, series_row_key
from dicom_core.search_index.keys import (
    SERIES_BY_UID,
    IndexEntry,
    legacy_uid_key,
    parse_entry,
    series_row_keys,
    study_row_keys,
)
from dicom_core.storage.batch_deletes import RowDelete, delete_rows
from dicom_core.storage.clients import Storage
from dicom_core.storage.concurrency import bounded_gather

STALE_AFTER = timedelta(hours=1)  # far longer than a store takes from writing its entries to its commit
DEFAULT_PRUNE_LIMIT = 1_000
CURSOR_PARTITION = "prune"  # in the index table; no search reads it
CURSOR_ROW = "cursor"
_CONCURRENCY = 16


async def prune_index_entries(storage: Storage, *, now: datetime | None = None,
                              limit: int = DEFAULT_PRUNE_LIMIT) -> int:
    """Walk about ``limit`` entries of the index table from the cursor; delete the stale ones; return how many."""
    cursor = await _cursor(storage)
    pages = storage.index.list_entities(results_per_page=limit, select=["PartitionKey", "RowKey", "Timestamp"]).by_page(
        continuation_token=str(cursor["Token"]) if cursor and cursor.get("Token") else None)
    page: list[TableEntity] = []
    try:
        async for entities in pages:  # a shard's pages can be empty: read on until ``limit`` entries
            page += [entity async for entity in entities]
            if len(page) >= limit:
                break
    except ResourceNotFoundError:
        return 0
    old = (now or datetime.now(UTC)) - STALE_AFTER
    by_study: dict[str, list[tuple[TableEntity, IndexEntry]]] = defaultdict(list)
    for entity in page:
        written = entity.metadata.get("timestamp")
        if _target_level(str(entity["PartitionKey"])) and written is not None and written < old:
            entry = parse_entry(entity)
            by_study[entry.study].append((entity, entry))
    pruned = sum(await bounded_gather((_prune_study(storage, study, entries) for study, entries in by_study.items()),
                                      limit=_CONCURRENCY))
    token = getattr(pages, "continuation_token", None)  # typed as a plain iterator; it is a page iterator
    await storage.index.upsert_entity({"PartitionKey": CURSOR_PARTITION, "RowKey": CURSOR_ROW,
                                       "Token": str(token) if token else ""}, mode=UpdateMode.REPLACE)
    return pruned


async def _cursor(storage: Storage) -> TableEntity | None:
    """The cursor row (None before the first run)."""
    try:
        return await storage.index.get_entity(CURSOR_PARTITION, CURSOR_ROW)
    except ResourceNotFoundError:
        return None


def _target_level(partition: str) -> str:
    """'s', 'se' or 'i' for the entries of the standard indexes (study, series, instance); '' for others."""
    index = partition.split("|", 1)[0]
    level = index.split(".", 1)[0]
    return level if "." in index and level in ("s", "se", "i") else ""


async def _prune_study(storage: Storage, study: str, entries: list[tuple[TableEntity, IndexEntry]]) -> int:
    stale = [(entity, entry) for (entity, entry), valid in zip(entries, await _validity(storage, study, entries),
                                                              strict=True) if not valid]
    if not stale:
        return 0
    by_partition: dict[str, list[RowDelete]] = defaultdict(list)
    for entity, _ in stale:
        by_partition[str(entity["PartitionKey"])].append(RowDelete(str(entity["RowKey"]), entity.metadata["etag"]))
    deleted = 0
    for partition, rows in by_partition.items():
        deleted += await delete_rows(storage.index, partition, rows)
    await bump_generation(storage, study)
    # A commit that landed between the read above and the delete: its entries are written back.
    for (entity, _), valid in zip(stale, await _validity(storage, study, stale), strict=True):
        if valid:
            await storage.index.upsert_entity({"PartitionKey": entity["PartitionKey"], "RowKey": entity["RowKey"]})
    return deleted


async def _validity(storage: Storage, study: str, entries: list[tuple[TableEntity, IndexEntry]]) -> list[bool]:
    """Whether each entry is accounted for by the row it points at (read once per row)."""
    keys = list(dict.fromkeys(_row_key(entry) for _, entry in entries))
    rows = dict(zip(keys, await bounded_gather((get_row(storage, study, key) for key in keys), limit=_CONCURRENCY),
                    strict=True))
    valid = []
    for _, entry in entries:
        row = rows[_row_key(entry)]
        if row is None:
            valid.append(False)
        elif entry.instance is not None:
            valid.append(True)
        elif entry.series is not None:
            # A lookup entry of the layout before the reindex still serves searches until the reindex moves it.
            valid.append(entry.key in series_row_keys(row) or entry.key == legacy_uid_key(SERIES_BY_UID, entry.series))
        else:
            valid.append(entry.key in study_row_keys(row))
    return valid


def _row_key(entry: IndexEntry) -> str:
    if entry.instance is not None and entry.series is not None:
        return instance_row_key(entry.series, entry.instance)
    return series_row_key(entry.series) if entry.series is not None else STUDY_ROW
