"""Series metadata documents: every instance's DICOM JSON of a series in one block blob, kept current at store time.

`{study}/{series}/metadata` in the metadata container holds one block per instance: the instance's DICOM
JSON followed by a newline (JSON text never contains a raw one). A block's ID is derived from the instance
UID and its version, so the committed block list says which version of which instance the document holds.

- Writers (store, upsert, delete) change the block list after their Table commit, with If-Match on the
  document's ETag (If-None-Match: * for the first), retrying when another writer got there first. Because a
  commit of the block list discards every uncommitted block not in it, a writer stages its block again on
  every attempt. A writer's commit marks the document *unverified*.
- Readers trust a document only when its `state` metadata names the series row's current ETag. Otherwise
  they reconcile it with the instance rows (which versions should be there), staging only the blocks that
  are missing from the instances' own metadata blobs, and mark it verified, all under If-Match. So a crash
  between a store's commit and its document write, a lost race between two upserts of one instance, or a
  series stored before documents existed, is repaired by the next reader, once. See docs/storage.md.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, BlobProperties, BlockState, ContentSettings
from azure.storage.blob.aio import BlobClient, StorageStreamDownloader

from .blob_reads import Body
from .blob_store import metadata_blob_name
from .dicom_json import JsonDataset
from .errors import ServiceUnavailableError
from .identifiers import InstanceIdentifiers, StoredInstance
from .index_reads import instance_rows, stored_instance
from .storage import Storage

LOGGER = logging.getLogger(__name__)

SEPARATOR = b"\n"
STATE_KEY = "dicomwebseriesstate"
UNVERIFIED = "unverified"
DOCUMENT_CONTENT = ContentSettings(content_type="application/x-ndjson")
MAX_ATTEMPTS = 40
TRANSFER_CONCURRENCY = 16
_MAX_BACKOFF_SECONDS = 0.25
_DIGEST_CHARS = 32  # two of them make a 64-character block ID, the most Blob Storage allows
# A change of a document's block list: from the committed block IDs to the wanted ones.
Change = Callable[[list[str]], list[str]]
_RETRY_CODES = frozenset({"InvalidBlockList", "ConditionNotMet", "BlobAlreadyExists", "BlobModified"})


def document_name(study: str, series: str) -> str:
    """Name of a series' metadata document in the metadata container."""
    return f"{study}/{series}/metadata"


def block_id(instance: str, version: str) -> str:
    """The block ID of one version of one instance (fixed length, as Blob Storage requires)."""
    return _digest(instance) + _digest(version)


def series_state(series_etag: str) -> str:
    """The `state` value of a document that reflects the series row with ``series_etag``."""
    return _digest(series_etag)


def record(metadata: JsonDataset) -> bytes:
    """One instance's block: its compact DICOM JSON and the separator."""
    return json.dumps(metadata, separators=(",", ":")).encode() + SEPARATOR


async def add_instance(storage: Storage, stored: StoredInstance, metadata: JsonDataset) -> None:
    """Put a committed instance's block into its series document, replacing the block of an older version."""
    new = block_id(stored.ids.instance, stored.version)
    prefix = _digest(stored.ids.instance)

    def change(blocks: list[str]) -> list[str]:
        others = [b for b in blocks if not b.startswith(prefix)]
        if len(others) == len(blocks):
            return [*blocks, new]
        at = next(i for i, b in enumerate(blocks) if b.startswith(prefix))  # an upsert keeps its place
        return [*blocks[:at], new, *[b for b in blocks[at:] if not b.startswith(prefix)]]

    await _quietly_update(storage, stored.ids, change, {new: record(metadata)})


async def remove_instance(storage: Storage, ids: InstanceIdentifiers) -> None:
    """Take a deleted instance's block out of its series document."""
    prefix = _digest(ids.instance)
    await _quietly_update(storage, ids, lambda blocks: [b for b in blocks if not b.startswith(prefix)], {})


async def verified_properties(storage: Storage, study: str, series: str, series_etag: str) -> BlobProperties:
    """Return the properties of the series document once it reflects the series row with ``series_etag``."""
    blob = storage.metadata.get_blob_client(document_name(study, series))
    state = series_state(series_etag)
    for attempt in range(MAX_ATTEMPTS):
        properties = await _properties(blob)
        if properties is not None and properties.metadata.get(STATE_KEY) == state:
            return properties
        if not await _reconcile(storage, blob, study, series, state, properties):
            await _backoff(attempt)
    raise ServiceUnavailableError(f"The metadata of series {series} is being changed by other requests; retry.")


async def open_document(storage: Storage, study: str, series: str) -> StorageStreamDownloader[bytes] | None:
    """Start reading a series document, unverified: one GET brings its state and first bytes; None if absent."""
    try:
        return await storage.metadata.get_blob_client(document_name(study, series)).download_blob()
    except ResourceNotFoundError:
        return None


def is_current(document: StorageStreamDownloader[bytes], series_etag: str) -> bool:
    """Whether an opened document reflects the series row with ``series_etag`` (then it can be sent as it is)."""
    return (document.properties.metadata or {}).get(STATE_KEY) == series_state(series_etag)


async def stream_opened(document: StorageStreamDownloader[bytes]) -> Body:
    """Yield the bytes of an opened document (later ranges, if any, are read under its ETag)."""
    async for chunk in document.chunks():
        yield chunk


async def stream_document(storage: Storage, study: str, series: str, series_etag: str, properties: BlobProperties) -> Body:
    """Yield the bytes of a verified series document (re-verified if a writer changed it meanwhile)."""
    blob = storage.metadata.get_blob_client(document_name(study, series))
    for _ in range(MAX_ATTEMPTS):
        try:
            downloader = await blob.download_blob(etag=properties.etag, match_condition=MatchConditions.IfNotModified)
        except ResourceModifiedError:
            # Changed since it was verified: it now holds at least what the verified state held.
            properties = await verified_properties(storage, study, series, series_etag)
            continue
        async for chunk in downloader.chunks():
            yield chunk
        return
    raise ServiceUnavailableError(f"The metadata of series {series} is being changed by other requests; retry.")


async def _quietly_update(storage: Storage, ids: InstanceIdentifiers, change: Change, staged: dict[str, bytes]) -> None:
    # The instance is committed whatever happens here; a document left behind is repaired by its next reader.
    try:
        await _update(storage, ids, change, staged)
    except Exception:
        LOGGER.warning("The metadata document of series %s was not updated; its next reader will repair it",
                       ids.series, exc_info=True)


async def _update(storage: Storage, ids: InstanceIdentifiers, change: Change, staged: dict[str, bytes]) -> None:
    """Apply ``change`` to the document, together with the changes other tasks of this process wait to make."""
    key = (id(storage), ids.study, ids.series)
    writers = _writers.setdefault(key, _SeriesWriters())
    mine = _Pending(change, staged, asyncio.get_running_loop().create_future())
    writers.pending.append(mine)
    writers.users += 1
    try:
        async with writers.lock:
            if not mine.done.done():
                # Group commit: one read-modify-write for every change queued meanwhile, so that the stores of
                # one request into one series don't each race for the same ETag.
                batch, writers.pending = writers.pending, []
                try:
                    await _apply(storage, ids, batch)
                except Exception as exc:
                    for pending in batch:
                        pending.done.set_exception(exc)
                else:
                    for pending in batch:
                        pending.done.set_result(None)
        await mine.done
    finally:
        writers.users -= 1
        if writers.users == 0:
            del _writers[key]


async def _apply(storage: Storage, ids: InstanceIdentifiers, batch: list[_Pending]) -> None:
    blob = storage.metadata.get_blob_client(document_name(ids.study, ids.series))
    staged = {block: data for pending in batch for block, data in pending.staged.items()}
    for attempt in range(MAX_ATTEMPTS):
        properties, current = await asyncio.gather(_properties(blob), _committed(blob))
        wanted = functools.reduce(lambda blocks, pending: pending.change(blocks), batch, current)
        if wanted == current:
            return
        try:
            await _commit(blob, current, wanted, staged, properties, {STATE_KEY: UNVERIFIED})
            return
        except _Conflict:
            await _backoff(attempt)
    raise TimeoutError(f"The metadata document of series {ids.series} kept changing")


async def _reconcile(
    storage: Storage, blob: BlobClient, study: str, series: str, state: str, properties: BlobProperties | None
) -> bool:
    """Make the document hold exactly the committed versions and mark it ``state``; False if a writer interfered."""
    rows = await instance_rows(storage, study, series, select=["Version"])
    wanted = {block_id(s.ids.instance, s.version): s for s in (stored_instance(study, row) for row in rows)}
    current = await _committed(blob) if properties is not None else []
    kept = [b for b in current if b in wanted]
    missing = [b for b in wanted if b not in set(current)]
    try:
        if not missing and kept == current and properties is not None:
            await blob.set_blob_metadata({STATE_KEY: state}, etag=properties.etag,
                                         match_condition=MatchConditions.IfNotModified)
            return True
        staged = await _read_records(storage, {b: wanted[b] for b in missing})
        if staged is None:
            return False
        await _commit(blob, current, kept + missing, staged, properties, {STATE_KEY: state})
    except (_Conflict, ResourceModifiedError):
        return False
    LOGGER.info("Repaired the metadata document of series %s: %d blocks added, %d removed",
                series, len(missing), len(current) - len(kept))
    return True


async def _read_records(storage: Storage, instances: dict[str, StoredInstance]) -> dict[str, bytes] | None:
    """Read the records of ``instances`` from their metadata blobs; None if one is gone (changed meanwhile)."""
    slots = asyncio.Semaphore(TRANSFER_CONCURRENCY)

    async def read(stored: StoredInstance) -> bytes | None:
        async with slots:
            try:
                data = await (await storage.metadata.download_blob(metadata_blob_name(stored))).readall()
            except ResourceNotFoundError:
                return None
        if SEPARATOR in data:  # not written by this service: re-encode so the separator stays unique
            return record(json.loads(data))
        return data + SEPARATOR

    records = await asyncio.gather(*(read(stored) for stored in instances.values()))
    if any(r is None for r in records):
        return None
    return {b: r for b, r in zip(instances, records) if r is not None}


async def _commit(
    blob: BlobClient, current: list[str], wanted: list[str], staged: dict[str, bytes],
    properties: BlobProperties | None, metadata: dict[str, str],
) -> None:
    """Stage the new blocks and commit ``wanted`` if the document is still the one read; raise _Conflict if not."""
    committed = set(current)
    slots = asyncio.Semaphore(TRANSFER_CONCURRENCY)

    async def stage(block: str) -> None:
        async with slots:
            await blob.stage_block(block, staged[block])

    try:
        await asyncio.gather(*(stage(block) for block in wanted if block not in committed))
        await blob.commit_block_list(
            [BlobBlock(b, BlockState.COMMITTED if b in committed else BlockState.UNCOMMITTED) for b in wanted],
            content_settings=DOCUMENT_CONTENT, metadata=metadata, **_condition(properties),
        )
    except (ResourceModifiedError, ResourceExistsError) as exc:
        raise _Conflict from exc
    except HttpResponseError as exc:
        if getattr(exc, "error_code", None) in _RETRY_CODES:
            raise _Conflict from exc  # e.g. another writer's commit discarded our staged block
        raise


@dataclass
class _Pending:
    """A document change waiting for its series' writer in this process."""

    change: Change
    staged: dict[str, bytes]
    done: asyncio.Future[None]


@dataclass
class _SeriesWriters:
    """The changes of one series document queued in this process; whoever holds the lock commits them all."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: list[_Pending] = field(default_factory=list)
    users: int = 0


_writers: dict[tuple[int, str, str], _SeriesWriters] = {}


class _Conflict(Exception):
    """Another writer changed the document between our read and our commit."""


def _condition(properties: BlobProperties | None) -> dict[str, Any]:
    if properties is None:
        return {"match_condition": MatchConditions.IfMissing}  # If-None-Match: *
    return {"etag": properties.etag, "match_condition": MatchConditions.IfNotModified}


async def _properties(blob: BlobClient) -> BlobProperties | None:
    try:
        return await blob.get_blob_properties()
    except ResourceNotFoundError:
        return None


async def _committed(blob: BlobClient) -> list[str]:
    try:
        committed, _ = await blob.get_block_list("committed")
    except ResourceNotFoundError:
        return []
    return [block.id for block in committed]


async def _backoff(attempt: int) -> None:
    await asyncio.sleep(random.uniform(0, min(_MAX_BACKOFF_SECONDS, 0.005 * 2**attempt)))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_DIGEST_CHARS]
