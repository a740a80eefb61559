"""STOW-RS: store the instances of a single-part or multipart/related request, streaming, part by part."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.tag import BaseTag

from dicom_core.documents.document_writes import add_committed, add_instance
from dicom_core.extended_tags.indexing import index_new_instance, indexed_attributes
from dicom_core.index.cleanup_entries import CleanupTarget
from dicom_core.index.commit import CommitRows, InstanceExistsError, SeriesCommit, commit_instance
from dicom_core.index.instance_metadata import row_metadata_text
from dicom_core.index.known_studies import knows_study
from dicom_core.index.outbox import LandedOutbox
from dicom_core.index.rows import InstanceRecord
from dicom_core.model.dicom_json import format_tag
from dicom_core.model.errors import (
    BadRequestError,
    NotAcceptableError,
    StorageUnavailableError,
    UnsupportedMediaTypeError,
)
from dicom_core.model.identifiers import StoredInstance, new_version
from dicom_core.model.part10 import InvalidPart10Error, ParsedFile, plainly_not_deflated, read_part10, stored_stream
from dicom_core.search_index.entries import IndexIntents
from dicom_core.search_index.extended import IndexingError
from dicom_core.storage.blobs import (
    delete_instance_blobs,
    frames_blob_name,
    metadata_blob_name,
    put_instance_file,
    put_json,
)
from dicom_core.storage.clients import Storage
from dicom_core.storage.faults import is_storage_unavailable
from dicom_core.stow.blob_spool import BlobSpools, commit_staged, staged_instance
from dicom_core.stow.parts_in_flight import COMMIT_LINGER_SECONDS, PartInFlight, PartsInFlight, PartSlots
from dicom_core.stow.request_intents import PartIntent, RequestIntents
from dicom_core.stow.response import (
    DATASET_DOES_NOT_MATCH_SOP_CLASS,
    INSTANCE_EXISTS,
    PROCESSING_FAILURE,
    VALIDATION_FAILURE,
    VALIDATION_WARNING,
    StoreOutcome,
    store_response,
)
from dicom_core.stow.validation import ERROR_PREFIX, ValidatedInstance, validate_instance
from dicom_core.wire.media_types import DICOM, DICOM_JSON, DICOM_XML, MULTIPART_RELATED, accepts, parse_media_type
from dicom_core.wire.multipart import Part, boundary_from_content_type, iter_parts, single_part
from dicom_core.wire.service_result import ServiceResult

LOGGER = logging.getLogger(__name__)
# A frame index longer than this goes to its own blob (a Table string property holds 32K characters).
MAX_ROW_FRAME_INDEX_CHARS = 30_000
# A part up to this size is announced to the change feed while it uploads (an upload of it outlasting the
# 15-minute announcement timeout would take a link below 80 KB/s); a larger one after its upload.
EARLY_ANNOUNCEMENT_MAX_BYTES = 64 * 1024 * 1024
# A part up to this size is parsed and validated on the event loop, a larger one in a worker thread.
INLINE_READ_MAX_BYTES = 1024 * 1024


@dataclass(frozen=True)
class StoreRequest:
    """The HTTP facts of a STOW request that the service needs."""

    api_version: int
    study_uid: str | None
    content_type: str | None
    accept: str | None
    base_url: str
    upsert: bool = False
    expect_new: bool = False  # an upsert of instances most likely new (index.commit.commit_instance)


async def store_instances(storage: Storage, request: StoreRequest, body: AsyncIterator[bytes]) -> ServiceResult:
    """Store every part of the request body and answer with what happened to each one."""
    answer_type = _answer_type(request.accept)
    media = parse_media_type(request.content_type or "")
    settings = storage.settings
    writes = _RequestWrites.of(storage)
    # Large parts go straight into their blob's staged blocks as they arrive (blob_spool.py), not to local disk.
    spools = BlobSpools(storage, settings.spool_memory_bytes,
                        cover=lambda stored: writes.intents.name(stored.ids.study, [CleanupTarget.of_version(stored)]))
    body = spools.pump(body)
    if media.type == DICOM:
        parts: AsyncIterator[Part] = single_part(body, settings.max_part_bytes, spools.new_spool())
        default_type: str | None = DICOM
    elif media.type == MULTIPART_RELATED:
        if "start" in media.params:
            raise BadRequestError("The multipart/related 'start' parameter is not supported.")
        if "boundary" not in media.params:
            raise UnsupportedMediaTypeError("The multipart/related Content-Type has no boundary parameter.")
        boundary = boundary_from_content_type(media.params)
        parts = iter_parts(body, boundary, max_part_bytes=settings.max_part_bytes,
                           spool_memory_bytes=settings.spool_memory_bytes, new_spool=spools.new_spool)
        default_type = media.params.get("type", DICOM)
    else:
        raise UnsupportedMediaTypeError(
            f"The Content-Type '{request.content_type or ''}' is not supported: send {DICOM} or "
            f'multipart/related; type="{DICOM}".'
        )
    outcomes = await _store_parts(storage, request, parts, default_type, writes)
    if outcomes and all(outcome.storage_unavailable for outcome in outcomes):
        # Nothing could be stored because storage is down: a retryable 503, not a 409 of 272s.
        raise StorageUnavailableError()
    return store_response(outcomes, api_version=request.api_version, study_uid=request.study_uid,
                          base_url=request.base_url, media_type=answer_type)


def _answer_type(accept: str | None) -> str:
    """DICOM JSON, or DICOM XML for clients that accept only that (Weasis asks for XML alone)."""
    if accepts(accept, DICOM_JSON):
        return DICOM_JSON
    if accepts(accept, DICOM_XML):
        return DICOM_XML
    raise NotAcceptableError(f"The request headers are not acceptable: STOW answers with {DICOM_JSON} or {DICOM_XML}.")


class FileRequest:
    """Part-10 files received outside HTTP (DIMSE C-STOREs) stored as the parts of one request, one file per call.

    Files stored at the same time share the request's writes before their commits, as a STOW request's parts do;
    the series documents of what it stored are written when it closes (readers rebuild a document until then).
    """

    def __init__(self, storage: Storage, *, api_version: int, upsert: bool) -> None:
        self._storage = storage
        self._request = StoreRequest(api_version=api_version, study_uid=None, content_type=DICOM, accept=DICOM_JSON,
                                     base_url="", upsert=upsert, expect_new=True)
        self._writes = _RequestWrites.of(storage)
        self._in_flight = PartsInFlight()

    async def store(self, file: BinaryIO, size: int) -> StoreOutcome:
        """Store one file with STOW's validation; return once its instance is committed (or refused)."""
        part = Part(headers={}, content_type=DICOM, file=file, size=size)
        # Files stored at the same time reach their commits together, as a request's parts do: their index writes
        # share transactions. A file stored alone does not wait.
        flight = self._in_flight.join(lambda: None)
        try:
            return await _store_part(self._storage, self._request, part, DICOM, self._writes, flight)
        finally:
            flight.finished()

    async def close(self) -> None:
        """After its last file: correct the change-feed announcement, write the series documents."""
        await asyncio.gather(_finish_announcement(self._writes), self._writes.write_documents(self._storage))


@dataclass(frozen=True)
class _RequestWrites:
    """What one request writes once for all its parts (see request_intents.py)."""

    intents: RequestIntents
    landed: dict[str, list[SeriesCommit]]  # per study, the transactions its parts landed in (for the documents)
    outboxes: dict[str, LandedOutbox]  # the outbox rows of its transactions that answered success, by change id

    @classmethod
    def of(cls, storage: Storage) -> _RequestWrites:
        """A new request's records, under a new id."""
        return cls(RequestIntents(storage, new_version()), {}, {})

    async def write_documents(self, storage: Storage) -> None:
        """Put what the request stored into its series metadata documents: one change per series document."""
        await asyncio.gather(*(add_committed(storage, study, landed) for study, landed in self.landed.items()))


async def _store_parts(
    storage: Storage, request: StoreRequest, parts: AsyncIterator[Part], default_type: str | None,
    writes: _RequestWrites,
) -> list[StoreOutcome]:
    # Parts spooled and being uploaded while the next one is received stay within a memory budget; a part uploaded
    # waits for its commit without its share (parts_in_flight.py).
    slots = PartSlots(storage.settings.store_concurrency, storage.settings.spool_memory_bytes)
    in_flight = PartsInFlight()
    tasks: list[asyncio.Task[StoreOutcome]] = []

    async def store(part: Part, flight: PartInFlight) -> StoreOutcome:
        try:
            return await _store_part(storage, request, part, default_type, writes, flight)
        finally:
            flight.finished()

    def release(part: Part, weight: int) -> None:
        part.close()
        slots.release(weight)

    try:
        async for part in parts:
            weight = slots.weight(part.size)
            await slots.acquire(weight)
            tasks.append(asyncio.create_task(store(part, in_flight.join(functools.partial(release, part, weight)))))
    finally:
        # Parts already received are finished even when the body turns out to be malformed later.
        outcomes = await asyncio.gather(*tasks)
        await asyncio.gather(_finish_announcement(writes), writes.write_documents(storage))
    return list(outcomes)


async def _store_part(
    storage: Storage, request: StoreRequest, part: Part, default_type: str | None, writes: _RequestWrites,
    flight: PartInFlight | None = None,
) -> StoreOutcome:
    part_type = parse_media_type(part.content_type).type if part.content_type else default_type
    if part_type != DICOM:
        return StoreOutcome(
            failure_reason=VALIDATION_FAILURE, wrong_media_type=True,
            comments=[f"The part's Content-Type '{part.content_type or part_type}' is not {DICOM}."],
        )
    try:
        await commit_staged(part.file)  # a large part's blob, staged while it arrived
    except Exception as exc:
        LOGGER.exception("Committing a staged part failed")
        return StoreOutcome(failure_reason=PROCESSING_FAILURE, storage_unavailable=is_storage_unavailable(exc),
                            comments=["The instance could not be stored because of a storage error; retry."])
    try:
        with writes.intents.parsing():  # the request's next intent write waits for this part, to name it too
            extended = await indexed_attributes(storage) if request.api_version < 2 else frozenset()
            read = functools.partial(_read_and_validate, part.file, request, extended,
                                     storage.settings.max_inflated_bytes)
            # A small part is read on the event loop (about a millisecond): a trip to a worker thread cost more CPU
            # than that, and with the GIL the thread's work does not run beside the loop's anyway. Not a deflated
            # one: a small part may inflate to max_inflated_bytes, seconds of parsing that would stall the loop.
            inline = (part.size <= INLINE_READ_MAX_BYTES and staged_instance(part.file) is None
                      and plainly_not_deflated(part.file))
            parsed, validated = read() if inline else await asyncio.to_thread(read)
    except InvalidPart10Error as exc:
        return StoreOutcome(failure_reason=VALIDATION_FAILURE, comments=[str(exc)])
    outcome = StoreOutcome(ids=validated.ids, sop_class_uid=validated.sop_class_uid)
    if validated.failed or validated.ids is None:
        outcome.failure_reason = VALIDATION_FAILURE
        outcome.comments = validated.errors
        return outcome

    staged = staged_instance(part.file)  # a large part already in its blob, under the version chosen then
    stored = staged if staged is not None and staged.ids == validated.ids else StoredInstance(validated.ids,
                                                                                              new_version())
    parsed.bulk.locate(stored)  # the markers name the version whose file holds the bytes
    frame_index = json.dumps(parsed.frame_index.to_json(), separators=(",", ":")) if parsed.frame_index else ""
    frame_index_in_blob = len(frame_index) > MAX_ROW_FRAME_INDEX_CHARS
    metadata_json = json.dumps(validated.metadata, separators=(",", ":"))
    record = InstanceRecord(
        stored=stored, sop_class_uid=validated.sop_class_uid or "", transfer_syntax=str(parsed.transfer_syntax),
        size=parsed.size, metadata=validated.metadata,
        frame_index="" if frame_index_in_blob else frame_index, frame_index_in_blob=frame_index_in_blob,
        metadata_text=row_metadata_text(metadata_json), request=writes.intents.announcement_for(validated.ids.study),
    )
    announced = PartIntent(writes.intents, CleanupTarget.of_version(stored))
    index_intents = IndexIntents(storage, record)
    try:
        uploads = []
        if stored is not staged:
            uploads.append(put_instance_file(storage, stored, stored_stream(parsed, part.file), parsed.size))
        if not record.metadata_text:  # too long for the instance row
            uploads.append(put_json(storage, metadata_blob_name(stored), metadata_json.encode()))
        if frame_index_in_blob:
            uploads.append(put_json(storage, frames_blob_name(stored), frame_index.encode()))
        # Before anything is uploaded, the intent names the version (blobs a crash, a 45070 or a failed commit
        # leaves behind get deleted). The sequencer retires an intent ANNOUNCEMENT_TIMEOUT after its last write
        # unless it found every change it counts: a large file's change is counted after its upload (which may
        # take longer than that), a small one's at once; a commit attempt long after the last write renews it.
        try:
            await announced.before_upload(count=parsed.size <= EARLY_ANNOUNCEMENT_MAX_BYTES)
            await asyncio.gather(*uploads, index_intents.during_upload())
            if flight is not None:
                flight.uploaded()
            announced.start()
            # Extended query tags, after the uploads: the registry copy this reads is at most REGISTRY_SECONDS
            # old as the commit starts, and a new tag's reindex walk starts 3 x that after the tag was added.
            index_errors = await index_new_instance(storage, record.metadata, stored, strict=request.api_version < 2)
            if index_errors and request.api_version < 2:
                raise _InvalidIndexedValueError(index_errors)
            # QIDO's index entries before the commit makes them true; the replaced version in the intent likewise.
            hooks = _StoreCommitHooks(index_intents, announced)
            # A study this process has no rows of is claimed first: if it is new, its commit reads no row.
            new_study = not knows_study(storage, stored.ids.study) and await index_intents.claim_new_study()
            # The request's parts commit together: their index entries share transactions.
            accompanied = flight is not None and await flight.ready_to_commit()
            announced.committing = True
            await commit_instance(storage, record, upsert=request.upsert, hooks=hooks, expect_new=request.expect_new,
                                  new_study=new_study, linger=COMMIT_LINGER_SECONDS if accompanied else 0.0)
        finally:
            await announced.stop()  # only still running if no attempt got as far as committing
    except _InvalidIndexedValueError as exc:
        # v1 refuses an instance whose value of an extended query tag does not fit the tag's VR (Azure: 409).
        await delete_instance_blobs(storage, stored)
        announced.not_committed(blobs_deleted=True)
        outcome.failure_reason = VALIDATION_FAILURE
        outcome.comments = exc.comments
        return outcome
    except InstanceExistsError:
        # Never referenced by a row (the existing row names another version): safe to delete at once, and the
        # request's intent need not name it any more.
        await delete_instance_blobs(storage, stored)
        announced.not_committed(blobs_deleted=True)  # its commit was refused
        outcome.failure_reason = INSTANCE_EXISTS
        outcome.comments = [f"The instance {stored.ids.instance} already exists; use PUT to replace it."]
        return outcome
    except Exception as exc:
        outcome.storage_unavailable = is_storage_unavailable(exc)
        if not announced.committing:
            announced.not_committed()
        # The blobs stay for the intent's cleanup: a commit whose answer was lost may have landed after all.
        LOGGER.exception("Storing instance %s failed", stored.ids.instance)
        outcome.failure_reason = PROCESSING_FAILURE
        outcome.comments = ["The instance could not be stored because of a storage error; retry the request."]
        return outcome
    # The series metadata document, for WADO-RS: the request writes the transactions its parts landed in at its end,
    # in one change per document. A replaced version's blobs go with the intent's cleanup, later: a reader that looked
    # up the old row a moment ago is still reading them.
    writes.outboxes.update((outbox.change_id, outbox) for outbox in hooks.outboxes)
    if hooks.landed is not None:
        landed = writes.landed.setdefault(stored.ids.study, [])
        if all(other is not hooks.landed for other in landed):
            landed.append(hooks.landed)
    else:  # its transaction's answer was lost (it landed all the same): the document's next reader checks it
        await add_instance(storage, stored, validated.metadata)
    if validated.implicit_vr:
        outcome.warning_reason = DATASET_DOES_NOT_MATCH_SOP_CLASS
    elif validated.warnings:
        outcome.warning_reason = VALIDATION_WARNING
    outcome.comments = validated.warnings + _indexing_comments(index_errors)
    if index_errors and outcome.warning_reason is None:
        outcome.warning_reason = VALIDATION_WARNING
    outcome.multi_valued_index = validated.multi_valued_index
    return outcome


def _read_and_validate(file: BinaryIO, request: StoreRequest, extended: frozenset[BaseTag],
                       max_inflated_bytes: int) -> tuple[ParsedFile, ValidatedInstance]:
    """Parse a part and validate its instance: one trip to a worker thread for both."""
    parsed = read_part10(file, max_inflated_bytes=max_inflated_bytes)
    return parsed, validate_instance(parsed, api_version=request.api_version, url_study=request.study_uid,
                                     extended=extended)


class _InvalidIndexedValueError(Exception):
    """A v1 store's instance has a value of an extended query tag that does not fit the tag's VR."""

    def __init__(self, errors: list[IndexingError]) -> None:
        super().__init__("invalid extended query tag values")
        self.comments = _indexing_comments(errors)


def _indexing_comments(errors: list[IndexingError]) -> list[str]:
    """Azure's comment of each invalid value of an extended query tag: ``DICOM100: (gggg,eeee) - message``."""
    return [f"{ERROR_PREFIX}: {format_tag(BaseTag(int(e.tag.path, 16)))} - {e.message}" for e in errors]


class _StoreCommitHooks:
    """Around each commit attempt of a store: the request's intent and the index intents (see commit_instance)."""

    def __init__(self, intents: IndexIntents, announced: PartIntent) -> None:
        self._intents = intents
        self._announced = announced
        self.landed: SeriesCommit | None = None  # what the landed transaction did to the instance's series
        self.outboxes: tuple[LandedOutbox, ...] = ()  # the outbox rows it inserted for the request

    async def before_commit(self, rows: CommitRows) -> None:
        """Write what this attempt's transaction makes true or unreferenced, before it is submitted."""
        # The version this attempt would replace is named before the transaction can unreference it.
        own = self._announced.own.stored
        replaced = (CleanupTarget.of_version(StoredInstance(own.ids, str(rows.instance["Version"])))
                    if rows.instance is not None else None)
        await asyncio.gather(self._announced.before_commit(replaced), self._intents.before_commit(rows))

    async def after_commit(self, rows: CommitRows) -> None:
        """Repair index entries a racing delete removed from rows this commit created."""
        self.landed, self.outboxes = rows.landed, rows.outboxes
        await self._intents.after_commit(rows)


async def _finish_announcement(writes: _RequestWrites) -> None:
    try:
        await writes.intents.finish(list(writes.outboxes.values()))
    except Exception:
        LOGGER.warning("Could not take refused parts out of the request's change-feed announcement; the sequencer "
                       "drops it after the announcement timeout", exc_info=True)
