"""Which layouts before of the UID lookups still hold entries (`se.root|…`/`i.root|…`: a RowKey range per UID;
`se.uid|…`/`i.uid|…`: a partition per UID): searches by SeriesInstanceUID and SOPInstanceUID read those beside
the current point reads only while they do.

Nothing writes those layouts any more and the reindex (`maintenance/reindex.py`) moves and deletes them, so in an
archive that never had them, or whose reindex has run, a UID lookup is point reads only (on Azurite each query
scans a whole shard; a point read does not). The answer is looked up in the data (a query per shard and old index,
one entry at most) and kept per Storage: "none left" for good (nothing writes those layouts), "some" until a lookup
RECHECK_SECONDS later finds fewer, so a process notices a finished reindex within about that time. An old index
with entries left is read as before: no search misses an entry.
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
_OLD_INDEXES = tuple(sorted(LEGACY_UID_INDEXES))
# Storage id -> (the Storage, when the lookup began, its answer or the lookup under way).
_known: dict[int, tuple[Storage, float, asyncio.Task[frozenset[str]]]] = {}


async def legacy_uid_indexes_left(storage: Storage) -> frozenset[str]:
    """The old UID lookup indexes (LEGACY_UID_INDEXES) that hold entries: this process's answer; "some" older than
    RECHECK_SECONDS is answered while a new lookup runs for the next callers (only the first caller waits)."""
    known = _known.get(id(storage))
    now = time.monotonic()
    if known is not None and known[0] is storage and not _failed(known[2]):
        if known[2].done() and not known[2].result():
            return frozenset()  # nothing writes the layouts before: none left stays none
        if now - known[1] >= RECHECK_SECONDS and known[2].done():
            _known[id(storage)] = storage, now, asyncio.ensure_future(_any_in_shards(storage))
        if known[2].done():
            return known[2].result()
    else:
        known = storage, now, asyncio.ensure_future(_any_in_shards(storage))
        _known[id(storage)] = known
    return await asyncio.shield(known[2])  # a caller cancelled leaves the lookup to the others


def _failed(task: asyncio.Task[frozenset[str]]) -> bool:
    return task.done() and (task.cancelled() or task.exception() is not None)


async def _any_in_shards(storage: Storage) -> frozenset[str]:
    try:
        # None of these kinds has a Table of its own: they live in the hashed shards only.
        found = await asyncio.gather(*(_any_in(shard, index) for index in _OLD_INDEXES
                                       for shard in storage.index.hashed))
    except AzureError:
        return LEGACY_UID_INDEXES  # unknown: read every layout, as before, until the next lookup
    shards = len(storage.index.hashed)
    return frozenset(index for number, index in enumerate(_OLD_INDEXES)
                     if any(found[number * shards:(number + 1) * shards]))


async def _any_in(shard: TableClient, index: str) -> bool:
    """Whether the shard holds an entry of the partitions ``{index}|…`` (Table Storage may answer a page with none
    and a continuation token: the next page is read then)."""
    pages = cast(AsyncPageIterator[TableEntity], shard.query_entities(
        _FILTER, parameters={"low": f"{index}|", "high": f"{index}}}"}, select=["PartitionKey"],
        results_per_page=1).by_page())
    try:
        async for page in pages:
            async for _ in page:
                return True
    except ResourceNotFoundError:
        return False  # a shard not created yet holds nothing
    return False
