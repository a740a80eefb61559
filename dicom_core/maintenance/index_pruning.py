"""Pruning stale search index entries: entries whose row is gone or no longer holds the value they index.

Searches verify every entry against its row and drop stale ones, so a stale entry is never served; it only
costs reads (an upsert that changed a patient's name, a delete whose study came back, a store that crashed
before its commit). Each run reads one page of the index table (``limit`` entries, resuming where the last run
stopped: the page's continuation token is kept in a cursor row) and deletes, once older than ``STALE_AFTER``:
the entries of ``s.``, ``se.`` and ``i.`` indexes that their rows do not account for, or that repeat a study's
(series') entry under another sort key than its claim's while the claimed one exists; and sort-key claims whose
study (series) row does not exist. As a delete would: entries first (If-Match), then a new generation of each
study touched, so a store that wrote such an entry as an intent and has not committed yet fails its commit and
writes it again. The rows are then read once more and an entry a commit made valid meanwhile is written back.
Extended-tag entries are left (docs/storage.md says why). See docs/storage.md.
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
    CLAIMS,
    LEGACY_UID_INDEXES,
    SERIES_BY_UID,
    UID_INDEXES,
    IndexEntry,
    legacy_uid_key,
    parse_entry,
    series_row_keys,
    study_row_keys,
)
from dicom_core.storage.batch_deletes import RowDelete, delete_rows
from dicom_core.storage.clients import Storage
from dicom_core.storage.concurrency import bounded_gather
from dicom_core.storage.tables import get_entity_or_none, query_all

STALE_AFTER = timedelta(hours=1)  # far longer than a store takes from writing its entries to its commit
DEFAULT_PRUNE_LIMIT = 1_000
CURSOR_PARTITION = "prune"  # in the index table; no search reads it
CURSOR_ROW = "cursor"
CLAIM_PREFIX = f"{CLAIMS}|"
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
    claims: list[TableEntity] = []
    for entity in page:
        written = entity.metadata.get("timestamp")
        if written is None or written >= old:
            continue
        if _target_level(str(entity["PartitionKey"])):
            entry = parse_entry(entity)
            by_study[entry.study].append((entity, entry))
        elif str(entity["PartitionKey"]).startswith(CLAIM_PREFIX):
            claims.append(entity)
    pruned = sum(await bounded_gather((_prune_study(storage, study, entries) for study, entries in by_study.items()),
                                      limit=_CONCURRENCY))
    pruned += sum(await bounded_gather((_prune_claim(storage, claim) for claim in claims), limit=_CONCURRENCY))
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
    """Whether each entry is accounted for by the row it points at (read once per row) and is no duplicate."""
    keys = list(dict.fromkeys(_row_key(entry) for _, entry in entries))
    rows = dict(zip(keys, await bounded_gather((get_row(storage, study, key) for key in keys), limit=_CONCURRENCY),
                    strict=True))
    claims = await query_all(storage.index, "PartitionKey eq @pk", parameters={"pk": f"{CLAIM_PREFIX}{study}"},
                             select=["RowKey", "SortKey"])
    claimed = {str(claim["RowKey"]): str(claim["SortKey"]) for claim in claims}
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
    duplicates = await bounded_gather((_duplicate(storage, entry, claimed.get(_row_key(entry)))
                                       for _, entry in entries), limit=_CONCURRENCY)
    return [ok and not duplicate for ok, duplicate in zip(valid, duplicates, strict=True)]


async def _duplicate(storage: Storage, entry: IndexEntry, claimed: str | None) -> bool:
    """Whether a study's (series') entry has another sort key than its claim's, and the claimed entry exists."""
    if entry.instance is not None or entry.key.index in UID_INDEXES or entry.key.index in LEGACY_UID_INDEXES.values():
        return False
    if claimed is None or claimed == entry.sort_key:
        return False
    uids = (entry.study, entry.series) if entry.series is not None else (entry.study,)
    return await get_entity_or_none(storage.index, entry.key.partition, entry.key.row_key(claimed, *uids),
                                    ["RowKey"]) is not None


async def _prune_claim(storage: Storage, claim: TableEntity) -> int:
    """Delete a sort-key claim whose study (series) row does not exist (its first store never committed)."""
    study = str(claim["PartitionKey"])[len(CLAIM_PREFIX):]
    if await get_row(storage, study, str(claim["RowKey"]), ["RowKey"]) is not None:
        return 0
    return await delete_rows(storage.index, str(claim["PartitionKey"]),
                             [RowDelete(str(claim["RowKey"]), claim.metadata["etag"])])


def _row_key(entry: IndexEntry) -> str:
    if entry.instance is not None and entry.series is not None:
        return instance_row_key(entry.series, entry.instance)
    return series_row_key(entry.series) if entry.series is not None else STUDY_ROW
