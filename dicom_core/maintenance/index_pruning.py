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
A UID lookup entity (one per UID, a property per target) is rewritten with its live targets only, or deleted when
none is left (If-Match): that also drops the blanks deletes leave. Extended-tag entries are left (docs/storage.md
says why). See docs/storage.md.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableEntity, UpdateMode

from dicom_core.index.delete import bump_generation
from dicom_core.index.reads import get_row
from dicom_core.index.rows import STUDY_ROW, instance_row_key, series_row_key
from dicom_core.search_index.keys import (
    CLAIMS,
    LEGACY_UID_INDEXES,
    TARGET_PREFIX,
    UID_INDEXES,
    IndexEntry,
    parse_entries,
    parse_entry,
    series_row_keys,
    study_row_keys,
    uid_entity,
)
from dicom_core.storage.batch_deletes import RowDelete, delete_rows
from dicom_core.storage.clients import Storage
from dicom_core.storage.concurrency import bounded_gather
from dicom_core.storage.sharded_table import partition_kind
from dicom_core.storage.tables import etag_of, get_entity_or_none, query_all, unchanged_since

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
    # Every property: a UID lookup entity's targets are its properties.
    pages = storage.index.list_entities(results_per_page=limit).by_page(
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
    uid_entities: list[TableEntity] = []
    for entity in page:
        written = entity.metadata.get("timestamp")
        if written is None or written >= old:
            continue
        if partition_kind(str(entity["PartitionKey"])) in UID_INDEXES:
            uid_entities.append(entity)
        elif _target_level(str(entity["PartitionKey"])):
            entry = parse_entry(entity)
            by_study[entry.study].append((entity, entry))
        elif str(entity["PartitionKey"]).startswith(CLAIM_PREFIX):
            claims.append(entity)
    pruned = sum(await bounded_gather((_prune_study(storage, study, entries) for study, entries in by_study.items()),
                                      limit=_CONCURRENCY))
    pruned += sum(await bounded_gather((_prune_claim(storage, claim) for claim in claims), limit=_CONCURRENCY))
    pruned += sum(await bounded_gather((_prune_uid_entity(storage, entity) for entity in uid_entities),
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
    index = partition_kind(partition)
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
            # A lookup entry of a layout before the reindex still serves searches until the reindex moves it.
            valid.append(entry.key in series_row_keys(row) or entry.key.index in LEGACY_UID_INDEXES)
        else:
            valid.append(entry.key in study_row_keys(row))
    duplicates = await bounded_gather((_duplicate(storage, entry, claimed.get(_row_key(entry)))
                                       for _, entry in entries), limit=_CONCURRENCY)
    return [ok and not duplicate for ok, duplicate in zip(valid, duplicates, strict=True)]


async def _duplicate(storage: Storage, entry: IndexEntry, claimed: str | None) -> bool:
    """Whether a study's (series') entry has another sort key than its claim's, and the claimed entry exists."""
    if entry.instance is not None or entry.key.index in UID_INDEXES or entry.key.index in LEGACY_UID_INDEXES:
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


async def _prune_uid_entity(storage: Storage, entity: TableEntity) -> int:
    """Drop the targets of a UID lookup entity whose row is gone, and its blanks: the entity replaced by its live
    targets, or deleted when none is left (both If-Match: a store that wrote it meanwhile keeps it for the next
    round); return how many targets were dropped."""
    entries = parse_entries(entity)
    rows = await _rows_of(storage, entries)
    live = [entry for entry, row in zip(entries, rows, strict=True) if row is not None]
    stale = [entry for entry, row in zip(entries, rows, strict=True) if row is None]
    if not stale and len(live) == sum(name.startswith(TARGET_PREFIX) for name in entity):
        return 0
    keys = {"PartitionKey": str(entity["PartitionKey"]), "RowKey": str(entity["RowKey"])}
    kept = {name: value for entry in live for name, value in uid_entity(entry.key, *_uids(entry)).items()}
    try:
        if live:
            await storage.index.update_entity({**keys, **kept}, mode=UpdateMode.REPLACE,
                                              **unchanged_since(etag_of(entity)))
        else:
            await storage.index.delete_entity(keys["PartitionKey"], keys["RowKey"],
                                              **unchanged_since(etag_of(entity)))
    except (ResourceModifiedError, ResourceNotFoundError):
        return 0
    for study in sorted({entry.study for entry in stale}):
        await bump_generation(storage, study)
    # A commit that landed between the read above and the write: its target is merged back.
    back = [entry for entry, row in zip(stale, await _rows_of(storage, stale), strict=True) if row is not None]
    for entry in back:
        await storage.index.upsert_entity(uid_entity(entry.key, *_uids(entry)), mode=UpdateMode.MERGE)
    return len(stale)


async def _rows_of(storage: Storage, entries: list[IndexEntry]) -> list[TableEntity | None]:
    """The row each entry points at (its key only), or None."""
    return await bounded_gather((get_row(storage, entry.study, _row_key(entry), ["RowKey"]) for entry in entries),
                                limit=_CONCURRENCY)


def _uids(entry: IndexEntry) -> tuple[str, ...]:
    return tuple(uid for uid in (entry.study, entry.series, entry.instance) if uid is not None)


def _row_key(entry: IndexEntry) -> str:
    if entry.instance is not None and entry.series is not None:
        return instance_row_key(entry.series, entry.instance)
    return series_row_key(entry.series) if entry.series is not None else STUDY_ROW
