"""Series metadata documents: every instance's DICOM JSON of a series in one block blob, kept current at store time.

`{study}/{series}/metadata` in the metadata container holds one record per instance, its DICOM JSON followed
by a newline (JSON text never contains a raw one). A small document is written whole (no blocks); a larger
one holds a block (`batch…` IDs) per writer's batch. Documents written before hold one block per instance,
whose ID names the instance and its version.

The blob metadata `state` says what the document is exact for: the series row ETag (hashed) whose instances
it holds, or `unverified`. Writers (`document_writes.py`) move it along the series row's ETags they
committed themselves; readers trust a document only when its state names the series row's current ETag, and
otherwise rebuild it from the instance rows (`_reconcile`). See docs/storage.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Awaitable, Iterable
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, BlobProperties, BlockState, ContentSettings
from azure.storage.blob.aio import BlobClient, StorageStreamDownloader

from dicom_core.index.instance_metadata import metadata_of_row
from dicom_core.index.reads import get_row, instance_rows, stored_instance
from dicom_core.index.rows import ROW_METADATA, series_row_key
from dicom_core.model.dicom_json import JsonDataset
from dicom_core.model.errors import NotFoundError, ServiceUnavailableError
from dicom_core.model.identifiers import StoredInstance
from dicom_core.storage.blob_reads import Body
from dicom_core.storage.blobs import blob_properties_or_none
from dicom_core.storage.clients import Storage
from dicom_core.storage.concurrency import bounded_gather, jittered_backoff
from dicom_core.storage.faults import error_code
from dicom_core.storage.tables import unchanged_since

LOGGER = logging.getLogger(__name__)

SEPARATOR = b"\n"
STATE_KEY = "dicomwebseriesstate"
# Transactions a writer added ahead of the state (`before>after` pairs of hashed ETags): the state is not exact then.
LINKS_KEY = "dicomwebserieslinks"
UNVERIFIED = "unverified"
DOCUMENT_CONTENT = ContentSettings(content_type="application/x-ndjson")
MAX_ATTEMPTS = 40
TRANSFER_CONCURRENCY = 16
BLOCK_BYTES = 4 * 1024 * 1024  # records of one batch go into blocks of at most this size
BATCH_PREFIX = "batch"  # not hexadecimal: a batch block's ID is never an instance block's
_DIGEST_CHARS = 32  # two of them make a 64-character block ID, the most Blob Storage allows
# BlobNotFound: deleted since it was read (If-Match on a blob that is gone).
_RETRY_CODES = frozenset({"InvalidBlockList", "ConditionNotMet", "BlobAlreadyExists", "BlobModified", "BlobNotFound"})


def document_name(study: str, series: str) -> str:
    """Name of a series' metadata document in the metadata container."""
    return f"{study}/{series}/metadata"


def block_id(instance: str, version: str) -> str:
    """The ID of a block holding one version of one instance alone (documents written before batch blocks)."""
    return _digest(instance) + _digest(version)


def instance_prefix(instance: str) -> str:
    """The start of the IDs of blocks holding one instance alone, whatever its version."""
    return _digest(instance)


def new_batch_id() -> str:
    """A fresh ID for a block holding a batch of records (the same length as every other block ID)."""
    return BATCH_PREFIX + secrets.token_hex(32)[: 2 * _DIGEST_CHARS - len(BATCH_PREFIX)]


def series_state(series_etag: str) -> str:
    """The `state` value of a document that holds exactly the instances of the series row with ``series_etag``."""
    return _digest(series_etag)


def record(metadata: JsonDataset) -> bytes:
    """One instance's record: its compact DICOM JSON and the separator."""
    return json.dumps(metadata, separators=(",", ":")).encode() + SEPARATOR


def record_of_json(data: bytes) -> bytes:
    """The record of a stored DICOM JSON text (re-encoded if it holds a raw newline, so the separator stays unique)."""
    return record(json.loads(data)) if SEPARATOR in data else data + SEPARATOR


def batch_blocks(records: Iterable[bytes]) -> dict[str, bytes]:
    """Records joined into as few blocks of at most BLOCK_BYTES as they fit, under new batch IDs."""
    blocks: dict[str, bytes] = {}
    pending: list[bytes] = []
    size = 0
    for data in records:
        if pending and size + len(data) > BLOCK_BYTES:
            blocks[new_batch_id()] = b"".join(pending)
            pending, size = [], 0
        pending.append(data)
        size += len(data)
    if pending:
        blocks[new_batch_id()] = b"".join(pending)
    return blocks


async def verified_properties(storage: Storage, study: str, series: str, series_etag: str) -> BlobProperties:
    """Return the properties of the series document once it is exact for ``series_etag`` or a later row."""
    blob = storage.metadata.get_blob_client(document_name(study, series))
    accepted = {series_state(series_etag)}
    current = series_etag
    for attempt in range(MAX_ATTEMPTS):
        properties = await blob_properties_or_none(blob)
        if properties is not None and exact_state(properties.metadata) in accepted:
            return properties
        outcome = await _reconcile(storage, blob, study, series, current, properties)
        if isinstance(outcome, str):  # the series changed meanwhile: rebuild for its newer row, which is fine too
            current = outcome
            accepted.add(series_state(current))
        elif not outcome:
            await jittered_backoff(attempt)
    raise ServiceUnavailableError(f"The metadata of series {series} is being changed by other requests; retry.")


async def open_document(storage: Storage, study: str, series: str) -> StorageStreamDownloader[bytes] | None:
    """Start reading a series document, unverified: one GET brings its state and first bytes; None if absent."""
    try:
        return await storage.metadata.get_blob_client(document_name(study, series)).download_blob()
    except ResourceNotFoundError:
        return None


def is_current(document: StorageStreamDownloader[bytes], series_etag: str) -> bool:
    """Whether an opened document reflects the series row with ``series_etag`` (then it can be sent as it is)."""
    return exact_state(document.properties.metadata or {}) == series_state(series_etag)


def exact_state(metadata: dict[str, str]) -> str | None:
    """The series state a document's metadata says it is exact for, if it says so."""
    return None if metadata.get(LINKS_KEY) else metadata.get(STATE_KEY)


async def stream_opened(document: StorageStreamDownloader[bytes]) -> Body:
    """Yield the bytes of an opened document (later ranges, if any, are read under its ETag)."""
    async for chunk in document.chunks():
        yield chunk


async def stream_document(
    storage: Storage, study: str, series: str, series_etag: str, properties: BlobProperties
) -> Body:
    """Yield the bytes of a verified series document (re-verified if a writer changed it meanwhile)."""
    blob = storage.metadata.get_blob_client(document_name(study, series))
    for _ in range(MAX_ATTEMPTS):
        try:
            downloader = await blob.download_blob(etag=properties.etag, match_condition=MatchConditions.IfNotModified)
        except ResourceModifiedError:
            # Changed since it was verified: verify it again (for the row then, or a later one).
            properties = await verified_properties(storage, study, series, series_etag)
            continue
        async for chunk in downloader.chunks():
            yield chunk
        return
    raise ServiceUnavailableError(f"The metadata of series {series} is being changed by other requests; retry.")


async def _reconcile(
    storage: Storage, blob: BlobClient, study: str, series: str, series_etag: str, properties: BlobProperties | None
) -> bool | str:
    """Make the document hold exactly the instances of the series row with ``series_etag`` and say so.

    True when done; False if a writer changed the document meanwhile; the row's new ETag if the series changed
    while its instance rows were read (they then belong to no one ETag).
    """
    rows = await instance_rows(storage, study, series, select=["Version", ROW_METADATA])
    row = await get_row(storage, study, series_row_key(series), select=["RowKey"])
    if row is None:
        raise NotFoundError("The specified series cannot be found.")
    if str(row.metadata["etag"]) != series_etag:
        return str(row.metadata["etag"])
    # Rows unchanged from before the query to after it: they are the instances of `series_etag`.
    wanted = {block_id(s.ids.instance, s.version): (s, r) for r in rows for s in [stored_instance(study, r)]}
    current = await committed_blocks(blob) if properties is not None else []
    kept = [b for b in current if b in wanted]  # blocks of one instance's current version: still exact
    covered = set(kept)
    missing = [entry for b, entry in wanted.items() if b not in covered]
    state = {STATE_KEY: series_state(series_etag)}
    try:
        # Only marked when its blocks are its whole content (a document created by one Put Blob has none).
        if not missing and kept == current and properties is not None and (current or not properties.size):
            await blob.set_blob_metadata(state, etag=properties.etag, match_condition=MatchConditions.IfNotModified)
            return True
        records = await _records(storage, missing)
        if records is None:
            return False
        staged = batch_blocks(records)
        await commit(blob, current, kept + list(staged), staged, properties.etag if properties else None, state)
    except (Conflict, ResourceModifiedError):
        return False
    LOGGER.info("Rebuilt the metadata document of series %s: %d instances read, %d blocks dropped",
                series, len(missing), len(current) - len(kept))
    return True


async def _records(storage: Storage, instances: list[tuple[StoredInstance, Any]]) -> list[bytes] | None:
    """The records of ``instances`` (from their rows, or metadata blobs); None if a blob is gone (replaced)."""
    texts = await bounded_gather((metadata_of_row(storage, stored, row) for stored, row in instances),
                                 limit=TRANSFER_CONCURRENCY)
    if any(text is None for text in texts):
        return None
    return [record_of_json(text) for text in texts if text is not None]


async def commit(
    blob: BlobClient, current: list[str], wanted: list[str], staged: dict[str, bytes],
    etag: str | None, metadata: dict[str, str],
) -> str:
    """Stage ``staged`` and commit ``wanted`` if the document still has ``etag``; return the new ETag.

    Raise Conflict if another writer changed the document (None: if it was created meanwhile).
    """
    committed = set(current)
    try:
        for exc in await failures(blob.stage_block(block, data) for block, data in staged.items()):
            if exc is not None:
                raise exc
        response = await blob.commit_block_list(
            [BlobBlock(b, BlockState.COMMITTED if b in committed else BlockState.UNCOMMITTED) for b in wanted],
            content_settings=DOCUMENT_CONTENT, metadata=metadata, **_condition(etag),
        )
    except HttpResponseError as exc:
        if is_conflict(exc):
            raise Conflict from exc  # e.g. another writer's commit discarded our staged block
        raise
    return str(response["etag"])


async def put_whole(blob: BlobClient, data: bytes, metadata: dict[str, str], etag: str | None) -> str:
    """Write the whole document in one Put Blob if it still has ``etag`` (None: if it does not exist).

    Return its new ETag; raise Conflict if another writer changed (or created, or deleted) it.
    """
    try:
        response = await blob.upload_blob(data, overwrite=etag is not None, content_settings=DOCUMENT_CONTENT,
                                          metadata=metadata, **(unchanged_since(etag) if etag is not None else {}))
    except HttpResponseError as exc:
        if is_conflict(exc):
            raise Conflict from exc
        raise
    return str(response["etag"])


async def failures(operations: Iterable[Awaitable[object]]) -> list[Exception | None]:
    """Run ``operations``, TRANSFER_CONCURRENCY at a time; what each one failed with, or None."""
    results = await bounded_gather(operations, limit=TRANSFER_CONCURRENCY, return_exceptions=True)
    return [result if isinstance(result, Exception) else None for result in results]


def is_conflict(exc: BaseException) -> bool:
    """Whether a failed request means another writer changed the document meanwhile."""
    if isinstance(exc, (ResourceModifiedError, ResourceExistsError)):
        return True
    return isinstance(exc, HttpResponseError) and error_code(exc) in _RETRY_CODES


class Conflict(Exception):
    """Another writer changed the document between our read and our commit."""


def _condition(etag: str | None) -> dict[str, Any]:
    if etag is None:
        return {"match_condition": MatchConditions.IfMissing}  # If-None-Match: *
    return unchanged_since(etag)


async def committed_blocks(blob: BlobClient) -> list[str]:
    """The IDs of a document's committed blocks ([] when it does not exist)."""
    try:
        committed, _ = await blob.get_block_list("committed")
    except ResourceNotFoundError:
        return []
    return [block.id for block in committed]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_DIGEST_CHARS]
