"""What the store and search paths call: index a new instance's extended tags, find matches for a filter on one.

The registry is read at most once per ``REGISTRY_SECONDS`` per process: a store reads no extra row, and a tag
added within that time is still indexed for the instance, because its reindex starts later than that.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from pydicom.tag import BaseTag

from dicom_core.extended_tags.registry import ExtendedTag, QueryStatus, TagStatus, all_tags, error_count
from dicom_core.model.dicom_json import JsonDataset
from dicom_core.model.errors import BadRequestError
from dicom_core.model.identifiers import StoredInstance
from dicom_core.search_index.extended import (
    IndexedTag,
    IndexingError,
    Match,
    find_matches,
    instance_entries,
    write_entries,
)
from dicom_core.search_index.extended_values import parse_filter
from dicom_core.storage.clients import Storage

REGISTRY_SECONDS = 2.0
_cache: dict[int, tuple[float, Storage, list[ExtendedTag]]] = {}
_reading: dict[int, tuple[Storage, asyncio.Task[list[ExtendedTag]]]] = {}


async def registered_tags(storage: Storage, *, fresh: bool = False) -> list[ExtendedTag]:
    """The registered tags, read again when the process's copy is older than ``REGISTRY_SECONDS``.

    Concurrent callers that find the copy old share one read.
    """
    known = _cache.get(id(storage))
    if not fresh and known is not None and known[1] is storage and time.monotonic() - known[0] < REGISTRY_SECONDS:
        return known[2]
    pending = _reading.get(id(storage))
    if fresh or pending is None or pending[0] is not storage or pending[1].done():
        pending = storage, asyncio.ensure_future(_read_registry(storage, time.monotonic()))
        _reading[id(storage)] = pending
    return await asyncio.shield(pending[1])  # a caller cancelled leaves the read to the others


async def _read_registry(storage: Storage, started: float) -> list[ExtendedTag]:
    tags = await all_tags(storage)
    _cache[id(storage)] = (started, storage, tags)  # the copy is as old as the moment its read began
    return tags


async def index_new_instance(
    storage: Storage, metadata: JsonDataset, stored: StoredInstance, *, strict: bool = False,
) -> list[IndexingError]:
    """Index a stored instance's values of every tag being added or ready; return the invalid values (not indexed).

    The store path calls it with the instance's DICOM JSON and version, before its rows commit (a search keeps
    only entries whose instance row has their version). ``strict`` (a v1 store, which refuses the instance when
    a value is invalid): with an invalid value, nothing is written. As in Azure's service, an invalid value of a
    store is a warning of its response, not an error of the tag (those come from reindexing). No tag
    registered: no request.
    """
    tags = await _indexed_tags(storage)
    if not tags:
        return []
    entries, errors = instance_entries(stored, tags, metadata)
    if not (strict and errors):
        await write_entries(storage, entries)
    return errors


async def indexed_attributes(storage: Storage) -> frozenset[BaseTag]:
    """The attributes of the tags being added or ready: a v1 store refuses an instance with an invalid value of one."""
    return frozenset(BaseTag(int(tag.path, 16)) for tag in await _indexed_tags(storage))


async def _indexed_tags(storage: Storage) -> list[IndexedTag]:
    return [tag.indexed for tag in await registered_tags(storage) if tag.status is not TagStatus.DELETING]


@dataclass(frozen=True)
class ExtendedSearch:
    """The matches of a filter on an extended tag, and whether the tag has indexing errors (a response header)."""

    tag: ExtendedTag
    matches: list[Match]
    erroneous: bool


async def queryable_tag(storage: Storage, attribute: BaseTag, name: str) -> ExtendedTag | None:
    """The registered tag a QIDO filter names, None when it is not registered; 400 while adding or disabled."""
    path = f"{int(attribute):08X}"
    tag = next((tag for tag in await registered_tags(storage) if tag.path == path), None)
    if tag is None:
        return None
    if tag.status is not TagStatus.READY:
        raise BadRequestError(f"AttributeId {name} is not queryable.")
    if tag.query_status is QueryStatus.DISABLED:
        raise BadRequestError(f"Query is disabled on specified attribute '{name}'.")
    return tag


async def search_extended(storage: Storage, tag: ExtendedTag, name: str, value: str, *, fuzzy: bool) -> ExtendedSearch:
    """The studies, series or instances (the tag's level) whose value matches ``value``: index key ranges only."""
    condition = parse_filter(tag.vr, name, value, fuzzy=fuzzy)
    matches = await find_matches(storage, tag.indexed, condition)
    return ExtendedSearch(tag, matches, await has_errors(storage, tag))


async def has_errors(storage: Storage, tag: ExtendedTag) -> bool:
    """Tell whether the tag has indexing errors (a search on it answers with the erroneous attributes header)."""
    return await error_count(storage, tag.path) > 0
