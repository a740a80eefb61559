"""Whether the index still holds UID lookup entries of the layout before (a partition per UID: `se.uid|…`,
`i.uid|…`): searches by SeriesInstanceUID and SOPInstanceUID read that layout beside the current one only while
it does.

Nothing writes that layout any more and the reindex (`maintenance/reindex.py`) deletes it, so in an archive that
never had it, or whose reindex has run, a UID lookup is one index query, not two (on Azurite each query scans a
whole shard). The answer is looked up in the data (a query per shard and old index, one entry at most) and
kept per Storage: "none left" for good (nothing writes that layout), "some" until a lookup RECHECK_SECONDS later
finds none, so a process notices a finished reindex within about that time. An archive that has the old layout
still is read in both layouts, as before: no search misses an entry.
"""

from __future__ import annotations

import asyncio
import time
from typing import cast

from azure.core.async_paging import AsyncPageIterator
from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.data.tables import TableEntity
from azure.data.tables.aio import TableClient

from dicom_core.search_index.keys import LEGACY_UID_INDEXES
from dicom_core.storage.clients import Storage

RECHECK_SECONDS = 300.0
# One PartitionKey range per query, which Table Storage serves from its PartitionKey index (it may not serve an
# `or` of two ranges so, and scan the table instead).
_FILTER = "PartitionKey ge @low and PartitionKey lt @high"
_RANGES = tuple({"low": f"{index}|", "high": f"{index}}}"} for index in LEGACY_UID_INDEXES.values())
# Storage id -> (the Storage, when the lookup began, its answer or the lookup under way).
_known: dict[int, tuple[Storage, float, asyncio.Task[bool]]] = {}


async def legacy_uid_entries_exist(storage: Storage) -> bool:
    """Tell whether any UID lookup entry of the layout before is left: this process's answer; "some" older than
    RECHECK_SECONDS is answered while a new lookup runs for the next callers (only the first caller waits)."""
    known = _known.get(id(storage))
    now = time.monotonic()
    if known is not None and known[0] is storage and not _failed(known[2]):
        if known[2].done() and not known[2].result():
            return False  # nothing writes the layout before: none left stays none
        if now - known[1] >= RECHECK_SECONDS and known[2].done():
            _known[id(storage)] = storage, now, asyncio.ensure_future(_any_in_shards(storage))
        if known[2].done():
            return known[2].result()
    else:
        known = storage, now, asyncio.ensure_future(_any_in_shards(storage))
        _known[id(storage)] = known
    return await asyncio.shield(known[2])  # a caller cancelled leaves the lookup to the others


def _failed(task: asyncio.Task[bool]) -> bool:
    return task.done() and (task.cancelled() or task.exception() is not None)


async def _any_in_shards(storage: Storage) -> bool:
    try:
        found = await asyncio.gather(*(_any_in(shard, bounds) for shard in storage.index.shards for bounds in _RANGES))
    except AzureError:
        return True  # unknown: read both layouts, as before, until the next lookup
    return any(found)


async def _any_in(shard: TableClient, bounds: dict[str, str]) -> bool:
    """Whether the shard holds an entry in the PartitionKey range ``bounds`` (Table Storage may answer a page with
    none and a continuation token: the next page is read then)."""
    pages = cast(AsyncPageIterator[TableEntity], shard.query_entities(
        _FILTER, parameters=bounds, select=["PartitionKey"], results_per_page=1).by_page())
    try:
        async for page in pages:
            async for _ in page:
                return True
    except ResourceNotFoundError:
        return False  # a shard not created yet holds nothing
    return False
