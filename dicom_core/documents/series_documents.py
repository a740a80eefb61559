"""Series metadata documents: every instance's DICOM JSON of a series in one block blob, kept current at store time.

`{study}/{series}/metadata` in the metadata container holds one block per instance: the instance's DICOM
JSON followed by a newline (JSON text never contains a raw one). A block's ID is derived from the instance
UID and its version, so the committed block list says which version of which instance the document holds.

- Writers (store, upsert, delete) change the block list after their Table commit, with If-Match on the
  document's ETag (If-None-Match: * for the first), retrying when another writer got there first. The
  concurrent changes of one document in this process are one batch (group commit): its blocks are staged
  together, its changes applied in order to the block list read once, and committed once. The block list
  and ETag come from one Get Block List, or from this process's own last commit of the document (its ETag
  proves nobody changed it since; if somebody did, the commit fails and the list is read). Because a commit
  of the block list discards every uncommitted block not in it, a batch stages its blocks again on every
  attempt. A change that fails (its block could not be staged) fails alone; the others of its batch are
  committed. A writer's commit marks the document *unverified*.
- Readers trust a document only when its `state` metadata names the series row's current ETag. Otherwise
  they reconcile it with the instance rows (which versions should be there), staging only the blocks that
  are missing from the instances' own metadata blobs, and mark it verified, all under If-Match. So a crash
  between a store's commit and its document write, a lost race between two upserts of one instance, or a
  series stored before documents existed, is repaired by the next reader, once. See docs/storage.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, BlobProperties, BlockState, ContentSettings
from azure.storage.blob.aio import BlobClient, StorageStreamDownloader

from dicom_core.index.reads import instance_rows, stored_instance
from dicom_core.model.dicom_json import JsonDataset
from dicom_core.model.errors import ServiceUnavailableError
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance
from dicom_core.storage.blob_reads import Body
from dicom_core.storage.blobs import blob_properties_or_none, metadata_blob_name, read_blob_or_none
from dicom_core.storage.clients import Storage
from dicom_core.storage.concurrency import bounded_gather, jittered_backoff
from dicom_core.storage.faults import error_code
from dicom_core.storage.group_commit import GroupCommit
from dicom_core.storage.tables import unchanged_since

LOGGER = logging.getLogger(__name__)

SEPARATOR = b"\n"
STATE_KEY = "dicomwebseriesstate"
UNVERIFIED = "unverified"
DOCUMENT_CONTENT = ContentSettings(content_type="application/x-ndjson")
MAX_ATTEMPTS = 40
TRANSFER_CONCURRENCY = 16
MAX_BATCH = 100  # changes of one document committed together
KNOWN_DOCUMENTS = 128  # documents whose last commit by this process is remembered (about 64 bytes a block)
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
        properties = await blob_properties_or_none(blob)
        if properties is not None and properties.metadata.get(STATE_KEY) == state:
            return properties
        if not await _reconcile(storage, blob, study, series, state, properties):
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
    return (document.properties.metadata or {}).get(STATE_KEY) == series_state(series_etag)


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
    await _document_writes.submit((id(storage), ids.study, ids.series), _DocumentChange(storage, ids, change, staged))


@dataclass(frozen=True)
class _DocumentChange:
    """One writer's change of a series document, and the blocks it adds."""

    storage: Storage
    ids: InstanceIdentifiers
    change: Change
    staged: dict[str, bytes]


@dataclass(frozen=True)
class _DocumentState:
    """A document's committed block list and the ETag it has with it (None: the document does not exist)."""

    etag: str | None
    blocks: list[str]


async def _flush(_key: object, batch: Sequence[_DocumentChange]) -> list[BaseException | None]:
    """Commit the changes of ``batch`` in order, in one block list commit; a change that fails fails alone."""
    first = batch[0]
    blob = first.storage.metadata.get_blob_client(document_name(first.ids.study, first.ids.series))
    outcomes: list[BaseException | None] = [None] * len(batch)
    state = _known.pop(blob.url, None)  # popped: a flush cancelled mid-commit leaves nothing stale behind
    for attempt in range(MAX_ATTEMPTS):
        remembered = state is not None
        if state is None:
            state = await _read_state(blob)
        try:
            wanted = await _stage_batch(blob, state.blocks, batch, outcomes)
            if wanted == state.blocks and remembered:
                state = None  # nothing to change, by an old list: make sure by the current one
                continue
            if wanted != state.blocks:
                etag = await _commit(blob, state.blocks, wanted, {}, state.etag, {STATE_KEY: UNVERIFIED})
                state = _DocumentState(etag, wanted)
        except _Conflict:
            state = None
            if not remembered:  # a remembered state is merely old: read it again at once
                await jittered_backoff(attempt)
            continue
        _remember(blob.url, state)
        return outcomes
    raise TimeoutError(f"The metadata document of series {first.ids.series} kept changing")


async def _stage_batch(
    blob: BlobClient, current: list[str], batch: Sequence[_DocumentChange], outcomes: list[BaseException | None],
) -> list[str]:
    """Stage the blocks of the batch's changes and return the block list they make; failures go to ``outcomes``."""
    staged: set[str] = set(current)
    while True:
        wanted, owners = current, {}
        for index, item in enumerate(batch):
            if outcomes[index] is not None:
                continue
            try:
                wanted = item.change(wanted)
            except Exception as exc:
                outcomes[index] = exc
                continue
            owners.update({block: index for block in item.staged})
        blocks = [block for block in wanted if block not in staged]
        results = await _failures(blob.stage_block(block, batch[owners[block]].staged[block]) for block in blocks)
        for block, failure in zip(blocks, results, strict=True):
            if failure is None:
                staged.add(block)
            elif _is_conflict(failure):
                raise _Conflict from failure
            else:
                outcomes[owners[block]] = failure
        if all(failure is None for failure in results):
            return wanted


async def _failures(operations: Iterable[Awaitable[object]]) -> list[Exception | None]:
    """Run ``operations``, TRANSFER_CONCURRENCY at a time; what each one failed with, or None."""
    results = await bounded_gather(operations, limit=TRANSFER_CONCURRENCY, return_exceptions=True)
    return [result if isinstance(result, Exception) else None for result in results]


async def _read_state(blob: BlobClient) -> _DocumentState:
    """The committed block list and its ETag, from one Get Block List (its response carries the ETag)."""
    headers: dict[str, Any] = {}

    def keep_headers(_response: object, deserialized: object, response_headers: dict[str, Any]) -> object:
        headers.update(response_headers)
        return deserialized

    try:
        committed, _ = await blob.get_block_list("committed", cls=keep_headers)
    except ResourceNotFoundError:
        return _DocumentState(None, [])
    if committed and headers.get("ETag"):
        return _DocumentState(headers["ETag"], [block.id for block in committed])
    # Without committed blocks the answer's ETag is not the blob's (Azure leaves it out; Azurite names a blob
    # that holds only staged blocks, which If-Match then refuses). The properties first: a commit between the
    # two reads then makes ours fail on the ETag instead of dropping what it added.
    properties = await blob_properties_or_none(blob)
    if properties is None:
        return _DocumentState(None, [])
    return _DocumentState(properties.etag, await _committed(blob))


def _remember(url: str, state: _DocumentState) -> None:
    _known[url] = state
    _known.move_to_end(url)
    while len(_known) > KNOWN_DOCUMENTS:
        _known.popitem(last=False)


# The last state this process committed, per document URL. Only a hint: the commit's If-Match checks it.
_known: OrderedDict[str, _DocumentState] = OrderedDict()
_document_writes: GroupCommit[tuple[int, str, str], _DocumentChange, None] = GroupCommit(_flush, max_items=MAX_BATCH)


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
        await _commit(blob, current, kept + missing, staged, properties.etag if properties else None,
                      {STATE_KEY: state})
    except (_Conflict, ResourceModifiedError):
        return False
    LOGGER.info("Repaired the metadata document of series %s: %d blocks added, %d removed",
                series, len(missing), len(current) - len(kept))
    return True


async def _read_records(storage: Storage, instances: dict[str, StoredInstance]) -> dict[str, bytes] | None:
    """Read the records of ``instances`` from their metadata blobs; None if one is gone (changed meanwhile)."""
    async def read(stored: StoredInstance) -> bytes | None:
        data = await read_blob_or_none(storage.metadata, metadata_blob_name(stored))
        if data is None:
            return None
        if SEPARATOR in data:  # not written by this service: re-encode so the separator stays unique
            return record(json.loads(data))
        return data + SEPARATOR

    records = await bounded_gather((read(stored) for stored in instances.values()), limit=TRANSFER_CONCURRENCY)
    if any(r is None for r in records):
        return None
    return {b: r for b, r in zip(instances, records, strict=True) if r is not None}


async def _commit(
    blob: BlobClient, current: list[str], wanted: list[str], staged: dict[str, bytes],
    etag: str | None, metadata: dict[str, str],
) -> str:
    """Stage ``staged`` and commit ``wanted`` if the document still has ``etag``; return the new ETag.

    Raise _Conflict if another writer changed the document (None: if it was created meanwhile).
    """
    committed = set(current)
    try:
        for exc in await _failures(blob.stage_block(block, data) for block, data in staged.items()):
            if exc is not None:
                raise exc
        response = await blob.commit_block_list(
            [BlobBlock(b, BlockState.COMMITTED if b in committed else BlockState.UNCOMMITTED) for b in wanted],
            content_settings=DOCUMENT_CONTENT, metadata=metadata, **_condition(etag),
        )
    except HttpResponseError as exc:
        if _is_conflict(exc):
            raise _Conflict from exc  # e.g. another writer's commit discarded our staged block
        raise
    return str(response["etag"])


def _is_conflict(exc: BaseException) -> bool:
    """Whether a failed request means another writer changed the document meanwhile."""
    if isinstance(exc, (ResourceModifiedError, ResourceExistsError)):
        return True
    return isinstance(exc, HttpResponseError) and error_code(exc) in _RETRY_CODES


class _Conflict(Exception):
    """Another writer changed the document between our read and our commit."""


def _condition(etag: str | None) -> dict[str, Any]:
    if etag is None:
        return {"match_condition": MatchConditions.IfMissing}  # If-None-Match: *
    return unchanged_since(etag)


async def _committed(blob: BlobClient) -> list[str]:
    try:
        committed, _ = await blob.get_block_list("committed")
    except ResourceNotFoundError:
        return []
    return [block.id for block in committed]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_DIGEST_CHARS]
