"""Writers of series metadata documents: each batch of changes of one document is one write.

After a request's transactions landed, their series documents get the records of every instance they stored
there (`add_committed`); a delete takes instances out (`remove_instance`). The changes of one document that
this process makes at the same time are one batch (group commit). A small document without blocks (every new
one) is written whole by one Put Blob; a larger one gets the batch's records as one block
(`series_documents.batch_blocks`) and one block-list commit, the list taken from this process's last write of
the document (or read). Both with If-Match (If-None-Match: * for a new document), retried on 412.

A batch keeps the document *verified*: when the document was exact for series row ETag E, and the batch's
transactions took the series row from E through an unbroken chain of ETags to E' (each transaction's ETag
before and after are known from its answer), and every change is exact (new instances, or upserts of
instances whose old record is a block of its own), the commit says the document is exact for E'. Anything
else (a delete, a chain another process broke, a record inside a batch block to replace) commits
`unverified`, and the next reader rebuilds the document from the rows. A writer never fails the store.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, cast

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob.aio import BlobClient

from dicom_core.documents.known_documents import MAX_DOCUMENT_BYTES, forget_document, keep_written
from dicom_core.documents.series_documents import (
    LINKS_KEY,
    SEPARATOR,
    STATE_KEY,
    UNVERIFIED,
    Conflict,
    batch_blocks,
    commit,
    committed_blocks,
    document_name,
    instance_prefix,
    put_whole,
    record,
    series_state,
)
from dicom_core.index.commit import SeriesCommit
from dicom_core.model.bulk_data import has_binary_attributes
from dicom_core.model.dicom_json import JsonDataset, first_value
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance
from dicom_core.model.tags import SOP_INSTANCE_UID
from dicom_core.storage.blobs import blob_properties_or_none
from dicom_core.storage.clients import Storage
from dicom_core.storage.concurrency import jittered_backoff
from dicom_core.storage.group_commit import GroupCommit
from dicom_core.storage.lru_cache import LruCache

LOGGER = logging.getLogger(__name__)

MAX_ATTEMPTS = 40
MAX_BATCH = 100  # submissions (a request's changes of one document) committed together
KNOWN_DOCUMENTS = 128  # documents whose last commit by this process is remembered (about 64 bytes a block)
APPLIED_COMMITS = 4096  # transactions whose records this process wrote lately (each member of one submits them)
# A document without blocks is written whole by one Put Blob per batch up to this size; beyond, the next batch
# stages its content as a block and it grows by blocks.
WHOLE_PUT_BYTES = 256 * 1024
WRITTEN_BYTES = 64 * 1024 * 1024  # content of the documents this process wrote lately (what kept copies grow from)
MAX_AHEAD = 32  # transactions a document may hold ahead of its state (about 70 bytes of blob metadata each)
_ABSENT = "absent"  # the state of a document that does not exist: exact for a series row not yet created


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


_Links = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _DocumentState:
    """A document's committed block list, its ETag (None: absent) and its state (what it is exact for)."""

    etag: str | None
    blocks: list[str]
    state: str
    ahead: _Links  # transactions added ahead of the state (hashed ETags before and after)
    unblocked: bytes = b""  # the content of a document written whole by Put Blob (in no block the list can name)


async def add_committed(storage: Storage, study: str, landed: Sequence[SeriesCommit]) -> None:
    """Put the records of the instances landed transactions stored into a study's series into their documents."""
    changes: dict[str, dict[str, _Change]] = {}
    for commit_ in landed:
        if not commit_.records:
            continue
        series = commit_.records[0].stored.ids.series
        records = {r.stored.ids.instance: r.metadata_text.encode() + SEPARATOR if r.metadata_text
                   else record(r.metadata) for r in commit_.records}
        changes.setdefault(series, {})[commit_.after] = _Change(
            storage, study, series, records, replaced=commit_.replaced, link=(commit_.before, commit_.after))
    await asyncio.gather(*(_quietly_update(*of_series.values()) for of_series in changes.values()))


async def add_instance(storage: Storage, stored: StoredInstance, metadata: JsonDataset) -> None:
    """Put a committed instance's record into its series document, with nothing known of its transaction."""
    ids = stored.ids
    await _quietly_update(_Change(storage, ids.study, ids.series, {ids.instance: record(metadata)},
                                  replaced=frozenset({ids.instance})))


async def remove_instance(storage: Storage, ids: InstanceIdentifiers) -> None:
    """Take a deleted instance out of its series document (its next reader rebuilds it if that needs it)."""
    await _quietly_update(_Change(storage, ids.study, ids.series, removed=frozenset({ids.instance})))


async def _quietly_update(*changes: _Change) -> None:
    """Submit changes of one document together (one batch, unless others of this process wait too)."""
    # The instance is committed whatever happens here; a document left behind is repaired by its next reader.
    first = changes[0]
    try:
        await _document_writes.submit((id(first.storage), first.study, first.series), changes)
    except Exception:
        LOGGER.warning("The metadata document of series %s was not updated; its next reader will repair it",
                       first.series, exc_info=True)


async def _flush(_key: object, batch: Sequence[tuple[_Change, ...]]) -> list[BaseException | None]:
    """Commit the changes of ``batch`` as one block and one block list commit."""
    first = batch[0][0]
    blob = first.storage.metadata.get_blob_client(document_name(first.study, first.series))
    changes = _new_changes(blob.url, [change for submitted in batch for change in submitted])
    if not changes:
        return [None] * len(batch)
    state = _known.pop(blob.url, None)  # popped: a flush cancelled mid-commit leaves nothing stale behind
    if state is None and any(c.link is not None and c.link[0] is None for c in changes):
        # One of these created the series row: the document is new (If-None-Match: * checks; else it is read).
        state = _DocumentState(None, [], _ABSENT, ())
    refused = False
    for attempt in range(MAX_ATTEMPTS):
        guessed = state is not None
        if state is None:
            state = await _read_state(blob)
        ordered, exact_for, ahead = _chain(state, changes)
        blocks, exact = _apply(state.blocks, ordered)
        records: dict[str, bytes] = {}
        for change in ordered:
            records.update(change.records)
            for instance in change.removed:
                records.pop(instance, None)
        unblocked = state.unblocked
        if not exact and not state.blocks and unblocked:  # a document held whole: its old records can be taken out
            unblocked, found = _without(unblocked, {i for c in ordered for i in c.records.keys() | c.removed})
            exact = _apply(state.blocks, ordered, found)[1]
        new_state = exact_for if exact and exact_for is not None else UNVERIFIED
        ahead = ahead if new_state != UNVERIFIED else ()
        if not records and blocks == state.blocks and unblocked == state.unblocked \
                and (new_state, ahead) == (state.state, state.ahead):
            break
        metadata = {STATE_KEY: new_state, **({LINKS_KEY: " ".join(f"{b}>{a}" for b, a in ahead)} if ahead else {})}
        whole = b"".join(records.values())
        staged = batch_blocks([unblocked, *records.values()] if unblocked else records.values())
        content = unblocked + whole
        before = state
        try:
            # A small document held whole (no blocks): written whole, one Put Blob instead of a block and a commit.
            if not state.blocks and len(content) <= WHOLE_PUT_BYTES and not (state.etag is None and refused):
                refused = state.etag is None  # once: a blob holding staged blocks only refuses If-None-Match: *
                etag = await put_whole(blob, content, metadata, state.etag)
                state = _DocumentState(etag, [], new_state, ahead, unblocked=content)
            else:
                etag = await commit(blob, state.blocks, blocks + list(staged), staged, state.etag, metadata)
                state = _DocumentState(etag, blocks + list(staged), new_state, ahead)
        except Conflict:
            state = None
            if not guessed:  # a remembered or guessed state is merely old: read it again at once
                await jittered_backoff(attempt)
            continue
        written = (content, _holds_binary(blob.url, before.etag, unblocked) or has_binary_attributes(whole)) \
            if not before.blocks else _grown(blob.url, before, blocks, whole)
        _keep_written(first, blob.url, etag, written, new_state if new_state != UNVERIFIED and not ahead else None)
        break
    else:
        raise TimeoutError(f"The metadata document of series {first.series} kept changing")
    _remember(blob.url, state)
    _applied.update((_applied_key(blob.url, c), None) for c in changes if c.link is not None)
    while len(_applied) > APPLIED_COMMITS:
        _applied.popitem(last=False)
    return [None] * len(batch)


def _grown(url: str, before: _DocumentState, blocks: list[str], added: bytes) -> tuple[bytes, bool] | None:
    """A block document's content (and whether it holds a binary attribute) after a commit that appended ``added``
    only, if this process held what it was."""
    held = _written.get(url)
    if blocks != before.blocks or held is None or held[0] != before.etag:
        return None
    grown = held[1] + added if len(held[1]) + len(added) <= MAX_DOCUMENT_BYTES else None
    return None if grown is None else (grown, held[2] or has_binary_attributes(added))


def _holds_binary(url: str, etag: str | None, content: bytes) -> bool:
    """Whether ``content`` (a document as of ``etag``, or part of it) holds a binary attribute: known if it is held."""
    held = _written.get(url)
    return held[2] if held is not None and held[0] == etag else has_binary_attributes(content)


def _keep_written(
    first: _Change, url: str, etag: str, written: tuple[bytes, bool] | None, exact_for: str | None,
) -> None:
    """Hold a document's content as written (the next batch grows it), and keep it for readers when it is exact.

    ``written``: the content and whether it holds a binary attribute (the scan of a kept copy its readers skip).
    A copy kept for an older series row is dropped: the next reader then reads the document with the row.
    """
    if written is None or len(written[0]) > MAX_DOCUMENT_BYTES:
        _written.discard(url)
    else:
        _written.put(url, (etag, *written), len(written[0]))
    if written is not None and exact_for is not None:
        keep_written(first.storage, first.study, first.series, exact_for, *written)
    else:
        forget_document(first.storage, first.study, first.series)


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


def _chain(state: _DocumentState, changes: list[_Change]) -> tuple[list[_Change], str | None, _Links]:
    """The changes in the order to apply them, the state they leave the document exact for, and the links ahead.

    From the state the document is exact for, the changes' transactions (and those added ahead before) are
    followed as long as each one's ETag before is the last one's after. Transactions that do not continue the
    chain yet (one between is still to come, e.g. from a request that finishes later) may wait ahead when they
    only store new instances: such changes commute with every other. Anything else: None, not exact.
    """
    if state.state == UNVERIFIED or any(change.link is None for change in changes):
        return changes, None, ()
    links: dict[str, tuple[str, _Change | None]] = {before: (after, None) for before, after in state.ahead}
    for change in changes:
        assert change.link is not None
        before = _state_of(change.link[0])
        if before in links:
            return changes, None, ()  # two transactions from one ETag: not one chain
        links[before] = (series_state(change.link[1]), change)
    current, ordered = state.state, []
    while current in links:
        current, chained = links.pop(current)
        if chained is not None:
            ordered.append(chained)
    waiting = [change for _, change in links.values() if change is not None]
    if len(links) > MAX_AHEAD or any(change.replaced or change.removed for change in waiting):
        return changes, None, ()
    return ordered + waiting, current, tuple((before, after) for before, (after, _) in links.items())


def _state_of(series_etag: str | None) -> str:
    return _ABSENT if series_etag is None else series_state(series_etag)


def _apply(
    blocks: list[str], changes: list[_Change], taken_out: AbstractSet[str] = frozenset(),
) -> tuple[list[str], bool]:
    """The block list without the blocks the changes take out, and whether every change could be made exactly.

    ``taken_out``: instances whose old records were taken out of a document held whole.
    """
    exact = True
    added: set[str] = set()  # records of the batch replace each other exactly
    for change in changes:
        for instance in change.removed | change.records.keys():
            prefix = instance_prefix(instance)
            kept = [b for b in blocks if not b.startswith(prefix)]
            old_elsewhere = instance in change.removed or instance in change.replaced
            if len(kept) == len(blocks) and old_elsewhere and instance not in added | taken_out:
                exact = False  # its old record is inside a batch block (or nowhere): the reader rebuilds
            blocks = kept
        added = (added | change.records.keys()) - change.removed
    return blocks, exact


async def _read_state(blob: BlobClient) -> _DocumentState:
    """The committed block list, its ETag and the state it is exact for."""
    properties = await blob_properties_or_none(blob)
    if properties is None:
        return _DocumentState(None, [], _ABSENT, ())
    headers: dict[str, Any] = {}

    def keep_headers(_response: object, deserialized: object, response_headers: dict[str, Any]) -> object:
        headers.update(response_headers)
        return deserialized

    try:
        committed, _ = await blob.get_block_list("committed", cls=keep_headers)
    except ResourceNotFoundError:
        return _DocumentState(None, [], _ABSENT, ())
    blocks = [block.id for block in committed]
    if not committed or not headers.get("ETag"):
        # Without committed blocks the answer's ETag is not the blob's (Azure leaves it out; Azurite names a blob
        # that holds only staged blocks): the properties' ETag, under which a commit meanwhile fails ours. A
        # document created by one Put Blob has content but no blocks: read it, to stage it with the next batch.
        blocks = await committed_blocks(blob)
        unblocked = await _content(blob, properties.etag) if not blocks and properties.size else b""
        return _DocumentState(properties.etag, blocks, _state_of_properties(properties.metadata) if not blocks
                              else UNVERIFIED, _ahead_of(properties.metadata) if not blocks else (), unblocked)
    if headers["ETag"] != properties.etag:  # changed between the two reads: its state is not known
        return _DocumentState(headers["ETag"], blocks, UNVERIFIED, ())
    return _DocumentState(headers["ETag"], blocks, _state_of_properties(properties.metadata),
                          _ahead_of(properties.metadata))


def _without(content: bytes, instances: set[str]) -> tuple[bytes, set[str]]:
    """A whole document's records but those of ``instances``, and which of them it held."""
    kept, found = [], set()
    for line in content.split(SEPARATOR):
        if not line:
            continue
        uid = first_value(json.loads(line), SOP_INSTANCE_UID) or ""
        if uid in instances:
            found.add(uid)
        else:
            kept.append(line + SEPARATOR)
    return b"".join(kept), found


def _state_of_properties(metadata: dict[str, str]) -> str:
    return metadata.get(STATE_KEY, UNVERIFIED)


def _ahead_of(metadata: dict[str, str]) -> _Links:
    return cast(_Links, tuple(tuple(link.split(">", 1)) for link in metadata.get(LINKS_KEY, "").split()
                              if ">" in link))


async def _content(blob: BlobClient, etag: str) -> bytes:
    """A document's bytes as of ``etag`` (b"" if it changed since: the commit under that ETag then fails)."""
    try:
        downloader = await blob.download_blob(etag=etag, match_condition=MatchConditions.IfNotModified)
        return await downloader.readall()
    except (ResourceModifiedError, ResourceNotFoundError):
        return b""


def _remember(url: str, state: _DocumentState) -> None:
    _known[url] = state
    _known.move_to_end(url)
    while len(_known) > KNOWN_DOCUMENTS:
        _known.popitem(last=False)


# The last state this process committed, per document URL. Only a hint: the commit's If-Match checks it.
_known: OrderedDict[str, _DocumentState] = OrderedDict()
# The content of documents this process wrote lately, per URL, with the blob ETag it is the content of and whether
# it holds a binary attribute.
_written: LruCache[str, tuple[str, bytes, bool]] = LruCache(KNOWN_DOCUMENTS, WRITTEN_BYTES)
# The transactions (series row ETag after them) whose records this process committed lately, per document.
_applied: OrderedDict[tuple[str, str], None] = OrderedDict()
_document_writes: GroupCommit[tuple[int, str, str], tuple[_Change, ...], None] = GroupCommit(
    _flush, max_items=MAX_BATCH)
