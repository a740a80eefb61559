"""The entries of a study- or series-level extended tag: one value per study (series), the latest stored instance's.

As in Azure's service (the value of the instance with the highest watermark wins), a study- or series-level tag
has the value of the latest stored instance that has one. Its entries in a partition of the tag (values, or the
words of a person name) are keyed by the study (series), not the instance, and a pointer row of the same
partition (``~}{target}``: '}' is encoded in every value key, and '~' ends the open ranges a search reads) names
the version they come from and their RowKeys. Changing them is one entity-group transaction: the pointer (created,
or replaced with If-Match), the new entries and the deletes of the old ones. So a target's entries are always
those of one instance, and a search needs no read to check them: the study (series) row it reads for the result
tells whether the study (series) still exists. An instance older than the pointer's version changes nothing.
Deleting that instance keeps its value (as the study row keeps the attributes of the latest stored instance).
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableTransactionError, UpdateMode

from dicom_core.storage.clients import Storage
from dicom_core.storage.lru_cache import LruCache
from dicom_core.storage.tables import Operation, get_entity_or_none, replace_if_unchanged

POINTER_PREFIX = "~}"
MAX_KNOWN_POINTERS = 4096
# A pointer this process wrote is taken as current this long: more instances of the study (series) with the same
# value write nothing. Past it, the same value is written again under If-Match, which finds a change made since by
# another process (a process that changed it within the time is not seen: its value stays until the next change).
TRUST_SECONDS = 30.0
_ATTEMPTS = 6
_known: LruCache[tuple[str, str, str], _Pointer] = LruCache(MAX_KNOWN_POINTERS)
_locks: dict[tuple[str, str, str], tuple[asyncio.Lock, int]] = {}  # a lock per target, and its users


@dataclass(frozen=True)
class _Pointer:
    """What a pointer row says: the version its target's entries come from, their RowKeys, and its ETag."""

    version: str
    keys: tuple[str, ...]
    etag: str | None  # None: no pointer row (as far as this process knows)
    at: float = 0.0  # when this process wrote or read it (time.monotonic())


def is_pointer(row_key: str) -> bool:
    """Tell whether a RowKey of a tag's partition is a pointer row, not an entry."""
    return row_key.startswith(POINTER_PREFIX)


def pointer_row(partition: str, target: str, version: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The pointer row naming ``entries`` (one instance's, of ``version``) as the current entries of ``target``."""
    keys = sorted(str(entry["RowKey"]) for entry in entries)
    return {"PartitionKey": partition, "RowKey": POINTER_PREFIX + target, "Version": version, "Keys": json.dumps(keys)}


async def set_current(storage: Storage, partition: str, target: str, version: str,
                      entries: list[dict[str, Any]]) -> None:
    """Make ``entries`` (one instance's, of ``version``) the entries of ``target`` in ``partition``, unless a later
    version's are; a process keeps the pointers it wrote (TRUST_SECONDS), so storing more instances of one value
    writes nothing."""
    key = (storage.index.url, partition, target)
    lock, users = _locks.get(key) or (asyncio.Lock(), 0)
    _locks[key] = lock, users + 1
    try:
        async with lock:
            await _set(storage, key, version, entries)
    finally:
        lock, users = _locks[key]
        if users > 1:
            _locks[key] = lock, users - 1
        else:
            del _locks[key]


async def _set(storage: Storage, key: tuple[str, str, str], version: str, entries: list[dict[str, Any]]) -> None:
    _, partition, target = key
    keys = tuple(sorted(str(entry["RowKey"]) for entry in entries))
    pointer = _known.get(key) or _Pointer("", (), None)
    stale: set[str] = set()  # old keys a failed transaction showed missing: deleted by no one
    for _ in range(_ATTEMPTS):
        recent = time.monotonic() - pointer.at < TRUST_SECONDS
        if pointer.version > version or (pointer.etag is not None and pointer.keys == keys and recent):
            return
        row = pointer_row(partition, target, version, entries)
        operations: list[Operation] = [("create", row) if pointer.etag is None
                                       else replace_if_unchanged(row, pointer.etag)]
        operations += [("upsert", entry, {"mode": UpdateMode.REPLACE}) for entry in entries]
        operations += [("delete", {"PartitionKey": partition, "RowKey": old})
                       for old in pointer.keys if old not in keys and old not in stale]
        try:
            answers = await storage.recreating_missing(functools.partial(storage.index.submit_transaction, operations))
        except TableTransactionError:
            fresh = await _read(storage, partition, target)
            if (fresh.version, fresh.keys, fresh.etag) == (pointer.version, pointer.keys, pointer.etag):
                stale.update(pointer.keys)  # the pointer did not change: an old entry was missing
            pointer = fresh
            continue
        etag = answers[0].get("etag") if answers else None
        if etag:
            _known.put(key, _Pointer(version, keys, str(etag), time.monotonic()))
        else:
            _known.discard(key)  # an answer without an ETag: the next write reads the pointer
        return
    _known.discard(key)


async def _read(storage: Storage, partition: str, target: str) -> _Pointer:
    try:
        row = await get_entity_or_none(storage.index, partition, POINTER_PREFIX + target)
    except ResourceNotFoundError:
        row = None
    if row is None:
        return _Pointer("", (), None)
    return _Pointer(str(row.get("Version") or ""), tuple(json.loads(str(row.get("Keys") or "[]"))),
                    str(row.metadata["etag"]), time.monotonic())  # just read: current
