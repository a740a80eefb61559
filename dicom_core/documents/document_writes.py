"""Writers of series metadata documents: each batch of changes of one document is one block and one commit.

After a store's transaction landed, its series document gets the records of every instance the transaction
stored there (`add_committed`); a delete takes instances out (`remove_instance`). The changes of one document
that this process makes at the same time are one batch (group commit): their records are staged as one block
(`series_documents.batch_blocks`), the block list read once (or taken from this process's last commit of the
document) is changed, and committed once with If-Match (If-None-Match: * for a new document), retried on 412.

A batch keeps the document *verified*: when the document was exact for series row ETag E, and the batch's
transactions took the series row from E through an unbroken chain of ETags to E' (each transaction's ETag
before and after are known from its answer), and every change is exact (new instances, or upserts of
instances whose old record is a block of its own), the commit says the document is exact for E'. Anything
else (a delete, a chain another process broke, a record inside a batch block to replace) commits
`unverified`, and the next reader rebuilds the document from the rows. A writer never fails the store.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob.aio import BlobClient

from dicom_core.documents.series_documents import (
    STATE_KEY,
    UNVERIFIED,
    Conflict,
    batch_blocks,
    commit,
    committed_blocks,
    document_name,
    instance_prefix,
    record,
    series_state,
)
from dicom_core.index.commit import SeriesCommit
from dicom_core.model.dicom_json import JsonDataset
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance
from dicom_core.storage.blobs import blob_properties_or_none
from dicom_core.storage.clients import Storage
from dicom_core.storage.concurrency import jittered_backoff
from dicom_core.storage.group_commit import GroupCommit

LOGGER = logging.getLogger(__name__)

MAX_ATTEMPTS = 40
MAX_BATCH = 100  # changes of one document committed together
KNOWN_DOCUMENTS = 128  # documents whose last commit by this process is remembered (about 64 bytes a block)
APPLIED_COMMITS = 4096  # transactions whose records this process wrote lately (each member of one submits them)
_ABSENT = ""  # the state of a document that does not exist: exact for a series row not yet created


@dataclass(frozen=True)
class _Change:
    """One change of a series document: records added (replacing older versions) and instances taken out."""

    storage: Storage
    study: str
    series: str
    records: dict[str, bytes] = field(default_factory=dict)  # SOP Instance UID -> record
    removed: frozenset[str] = frozenset()
    replaced: frozenset[str] = frozenset()  # instances whose earlier version the records replace
    link: tuple[str | None, str] | None = None  # the series row ETag before (None: created) and after, if known


@dataclass(frozen=True)
class _DocumentState:
    """A document's committed block list, its ETag (None: absent) and its state (what it is exact for)."""

    etag: str | None
    blocks: list[str]
    state: str


async def add_committed(storage: Storage, landed: SeriesCommit, study: str, series: str) -> None:
    """Put the records of the instances one landed transaction stored into a series into its document."""
    records = {r.stored.ids.instance: (r.metadata_text.encode() + b"\n" if r.metadata_text else record(r.metadata))
               for r in landed.records}
    await _quietly_update(_Change(storage, study, series, records, replaced=landed.replaced,
                                  link=(landed.before, landed.after)))


async def add_instance(storage: Storage, stored: StoredInstance, metadata: JsonDataset) -> None:
    """Put a committed instance's record into its series document, with nothing known of its transaction."""
    ids = stored.ids
    await _quietly_update(_Change(storage, ids.study, ids.series, {ids.instance: record(metadata)},
                                  replaced=frozenset({ids.instance})))


async def remove_instance(storage: Storage, ids: InstanceIdentifiers) -> None:
    """Take a deleted instance out of its series document (its next reader rebuilds it if that needs it)."""
    await _quietly_update(_Change(storage, ids.study, ids.series, removed=frozenset({ids.instance})))


async def _quietly_update(change: _Change) -> None:
    # The instance is committed whatever happens here; a document left behind is repaired by its next reader.
    try:
        await _document_writes.submit((id(change.storage), change.study, change.series), change)
    except Exception:
        LOGGER.warning("The metadata document of series %s was not updated; its next reader will repair it",
                       change.series, exc_info=True)


async def _flush(_key: object, batch: Sequence[_Change]) -> list[BaseException | None]:
    """Commit the changes of ``batch`` as one block and one block list commit."""
    first = batch[0]
    blob = first.storage.metadata.get_blob_client(document_name(first.study, first.series))
    changes = _new_changes(blob.url, batch)
    if not changes:
        return [None] * len(batch)
    state = _known.pop(blob.url, None)  # popped: a flush cancelled mid-commit leaves nothing stale behind
    if state is None and changes and all(c.link is not None and c.link[0] is None for c in changes):
        state = _DocumentState(None, [], _ABSENT)  # the series row was created by these: the document is new
    for attempt in range(MAX_ATTEMPTS):
        guessed = state is not None
        if state is None:
            state = await _read_state(blob)
        ordered, exact_for = _chain(state.state, changes)
        blocks, exact = _apply(state.blocks, ordered)
        records: dict[str, bytes] = {}
        for change in ordered:
            records.update(change.records)
            for instance in change.removed:
                records.pop(instance, None)
        metadata = {STATE_KEY: series_state(exact_for) if exact and exact_for is not None else UNVERIFIED}
        if not records and blocks == state.blocks and metadata[STATE_KEY] == state.state:
            break
        staged = batch_blocks(records.values())
        try:
            etag = await commit(blob, state.blocks, blocks + list(staged), staged, state.etag, metadata)
        except Conflict:
            state = None
            if not guessed:  # a remembered or guessed state is merely old: read it again at once
                await jittered_backoff(attempt)
            continue
        state = _DocumentState(etag, blocks + list(staged), metadata[STATE_KEY])
        break
    else:
        raise TimeoutError(f"The metadata document of series {first.series} kept changing")
    _remember(blob.url, state)
    _applied.update((_applied_key(blob.url, c), None) for c in changes if c.link is not None)
    while len(_applied) > APPLIED_COMMITS:
        _applied.popitem(last=False)
    return [None] * len(batch)


def _new_changes(url: str, batch: Sequence[_Change]) -> list[_Change]:
    """The batch's changes but those of a transaction already written (each of its instances' stores submits it)."""
    seen: set[tuple[str, str]] = set()
    changes = []
    for change in batch:
        key = _applied_key(url, change)
        if change.link is not None and (key in seen or key in _applied):
            continue
        seen.add(key)
        changes.append(change)
    return changes


def _applied_key(url: str, change: _Change) -> tuple[str, str]:
    return (url, change.link[1] if change.link is not None else "")


def _chain(state: str, changes: list[_Change]) -> tuple[list[_Change], str | None]:
    """The changes in the order of the series row's ETags, and the last one, if they continue ``state`` unbroken."""
    if any(change.link is None for change in changes):
        return changes, None
    pending = list(changes)
    ordered: list[_Change] = []
    current: str | None = None
    while pending:
        nexts = [c for c in pending if c.link is not None and _state_of(c.link[0]) == (state if current is None
                                                                                      else series_state(current))]
        if len(nexts) != 1:
            return changes, None
        ordered.append(nexts[0])
        pending.remove(nexts[0])
        assert nexts[0].link is not None
        current = nexts[0].link[1]
    return ordered, current


def _state_of(series_etag: str | None) -> str:
    return _ABSENT if series_etag is None else series_state(series_etag)


def _apply(blocks: list[str], changes: list[_Change]) -> tuple[list[str], bool]:
    """The block list without the blocks the changes take out, and whether every change could be made exactly."""
    exact = True
    added: set[str] = set()  # records of the batch replace each other exactly
    for change in changes:
        for instance in change.removed | change.records.keys():
            prefix = instance_prefix(instance)
            kept = [b for b in blocks if not b.startswith(prefix)]
            old_elsewhere = instance in change.removed or instance in change.replaced
            if len(kept) == len(blocks) and old_elsewhere and instance not in added:
                exact = False  # its old record is inside a batch block (or nowhere): the reader rebuilds
            blocks = kept
        added = (added | change.records.keys()) - change.removed
    return blocks, exact


async def _read_state(blob: BlobClient) -> _DocumentState:
    """The committed block list, its ETag and the state it is exact for."""
    properties = await blob_properties_or_none(blob)
    if properties is None:
        return _DocumentState(None, [], _ABSENT)
    headers: dict[str, Any] = {}

    def keep_headers(_response: object, deserialized: object, response_headers: dict[str, Any]) -> object:
        headers.update(response_headers)
        return deserialized

    try:
        committed, _ = await blob.get_block_list("committed", cls=keep_headers)
    except ResourceNotFoundError:
        return _DocumentState(None, [], _ABSENT)
    blocks = [block.id for block in committed]
    if not committed or not headers.get("ETag"):
        # Without committed blocks the answer's ETag is not the blob's (Azure leaves it out; Azurite names a blob
        # that holds only staged blocks): the properties' ETag, under which a commit meanwhile fails ours.
        return _DocumentState(properties.etag, await committed_blocks(blob), UNVERIFIED)
    same = headers["ETag"] == properties.etag  # else changed between the two reads: its state is not known
    return _DocumentState(headers["ETag"], blocks, properties.metadata.get(STATE_KEY, UNVERIFIED) if same
                          else UNVERIFIED)


def _remember(url: str, state: _DocumentState) -> None:
    _known[url] = state
    _known.move_to_end(url)
    while len(_known) > KNOWN_DOCUMENTS:
        _known.popitem(last=False)


# The last state this process committed, per document URL. Only a hint: the commit's If-Match checks it.
_known: OrderedDict[str, _DocumentState] = OrderedDict()
# The transactions (series row ETag after them) whose records this process committed lately, per document.
_applied: OrderedDict[tuple[str, str], None] = OrderedDict()
_document_writes: GroupCommit[tuple[int, str, str], _Change, None] = GroupCommit(_flush, max_items=MAX_BATCH)
