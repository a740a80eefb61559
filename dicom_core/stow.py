"""STOW-RS: store the instances of a single-part or multipart/related request, streaming, part by part."""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass

from .blob_store import delete_instance_blobs, frames_blob_name, metadata_blob_name, put_instance_file, put_json
from .errors import BadRequestError, NotAcceptableError, PayloadTooLargeError, UnsupportedMediaTypeError
from .identifiers import StoredInstance, new_version
from .index_store import InstanceExistsError, InstanceRecord, commit_instance
from .media_types import DICOM, DICOM_JSON, MULTIPART_RELATED, accepts, parse_media_type
from .metadata_documents import add_instance
from .multipart import Part, boundary_from_content_type, iter_parts
from .part10 import InvalidPart10Error, read_part10, stored_stream
from .search_index import write_index_intents
from .storage import Storage
from .store_validation import validate_instance
from .stow_response import (
    DATASET_DOES_NOT_MATCH_SOP_CLASS, INSTANCE_EXISTS, PROCESSING_FAILURE, VALIDATION_FAILURE, VALIDATION_WARNING,
    StoreOutcome, StoreResponse, build_store_response,
)

LOGGER = logging.getLogger(__name__)
# A frame index longer than this goes to its own blob (a Table string property holds 32K characters).
MAX_ROW_FRAME_INDEX_CHARS = 30_000


@dataclass(frozen=True)
class StoreRequest:
    """The HTTP facts of a STOW request that the service needs."""

    api_version: int
    study_uid: str | None
    content_type: str | None
    accept: str | None
    base_url: str
    upsert: bool = False


async def store_instances(storage: Storage, request: StoreRequest, body: AsyncIterator[bytes]) -> StoreResponse:
    """Store every part of the request body and report each one."""
    if not accepts(request.accept, DICOM_JSON):
        raise NotAcceptableError(f"The request headers are not acceptable: STOW-RS answers with {DICOM_JSON}.")
    media = parse_media_type(request.content_type or "")
    settings = storage.settings
    if media.type == DICOM:
        parts: AsyncIterator[Part] = _single_part(body, settings.max_part_bytes, settings.spool_memory_bytes)
        default_type: str | None = DICOM
    elif media.type == MULTIPART_RELATED:
        if "start" in media.params:
            raise BadRequestError("The multipart/related 'start' parameter is not supported.")
        if "boundary" not in media.params:
            raise UnsupportedMediaTypeError("The multipart/related Content-Type has no boundary parameter.")
        boundary = boundary_from_content_type(media.params)
        parts = iter_parts(body, boundary, max_part_bytes=settings.max_part_bytes,
                           spool_memory_bytes=settings.spool_memory_bytes)
        default_type = media.params.get("type", DICOM)
    else:
        raise UnsupportedMediaTypeError(
            f"The Content-Type '{request.content_type or ''}' is not supported: send {DICOM} or "
            f'multipart/related; type="{DICOM}".'
        )
    outcomes = await _store_parts(storage, request, parts, default_type)
    return build_store_response(
        outcomes, api_version=request.api_version, study_uid=request.study_uid, base_url=request.base_url
    )


async def _store_parts(
    storage: Storage, request: StoreRequest, parts: AsyncIterator[Part], default_type: str | None
) -> list[StoreOutcome]:
    # At most `store_concurrency` parts are spooled and being stored while the next one is received.
    slots = asyncio.Semaphore(storage.settings.store_concurrency)
    tasks: list[asyncio.Task[StoreOutcome]] = []

    async def store(part: Part) -> StoreOutcome:
        try:
            return await _store_part(storage, request, part, default_type)
        finally:
            part.close()
            slots.release()

    try:
        async for part in parts:
            await slots.acquire()
            tasks.append(asyncio.create_task(store(part)))
    finally:
        # Parts already received are finished even when the body turns out to be malformed later.
        outcomes = await asyncio.gather(*tasks)
    return list(outcomes)


async def _store_part(storage: Storage, request: StoreRequest, part: Part, default_type: str | None) -> StoreOutcome:
    part_type = parse_media_type(part.content_type).type if part.content_type else default_type
    if part_type != DICOM:
        return StoreOutcome(
            failure_reason=VALIDATION_FAILURE, wrong_media_type=True,
            comments=[f"The part's Content-Type '{part.content_type or part_type}' is not {DICOM}."],
        )
    try:
        parsed = await asyncio.to_thread(read_part10, part.file)
        validated = await asyncio.to_thread(
            validate_instance, parsed, api_version=request.api_version, url_study=request.study_uid
        )
    except InvalidPart10Error as exc:
        return StoreOutcome(failure_reason=VALIDATION_FAILURE, comments=[str(exc)])
    outcome = StoreOutcome(ids=validated.ids, sop_class_uid=validated.sop_class_uid)
    if validated.failed or validated.ids is None:
        outcome.failure_reason = VALIDATION_FAILURE
        outcome.comments = validated.errors
        return outcome

    stored = StoredInstance(validated.ids, new_version())
    frame_index = json.dumps(parsed.frame_index.to_json(), separators=(",", ":")) if parsed.frame_index else ""
    frame_index_in_blob = len(frame_index) > MAX_ROW_FRAME_INDEX_CHARS
    record = InstanceRecord(
        stored=stored, sop_class_uid=validated.sop_class_uid or "", transfer_syntax=str(parsed.transfer_syntax),
        size=parsed.size, metadata=validated.metadata,
        frame_index="" if frame_index_in_blob else frame_index, frame_index_in_blob=frame_index_in_blob,
    )
    try:
        uploads = [
            put_instance_file(storage, stored, stored_stream(parsed, part.file), parsed.size),
            put_json(storage, metadata_blob_name(stored), json.dumps(validated.metadata, separators=(",", ":")).encode()),
        ]
        if frame_index_in_blob:
            uploads.append(put_json(storage, frames_blob_name(stored), frame_index.encode()))
        await asyncio.gather(*uploads)
        await write_index_intents(storage, record)  # QIDO's index entries, before the commit makes them true
        replaced = await commit_instance(storage, record, upsert=request.upsert)
    except InstanceExistsError:
        await delete_instance_blobs(storage, stored)
        outcome.failure_reason = INSTANCE_EXISTS
        outcome.comments = [f"The instance {stored.ids.instance} already exists; use PUT to replace it."]
        return outcome
    except Exception:
        LOGGER.exception("Storing instance %s failed", stored.ids.instance)
        await _quietly(delete_instance_blobs(storage, stored))
        outcome.failure_reason = PROCESSING_FAILURE
        outcome.comments = ["The instance could not be stored because of a storage error; retry the request."]
        return outcome
    await add_instance(storage, stored, validated.metadata)  # the series metadata document, for WADO-RS
    if replaced is not None:
        # Superseded version: nothing points at it any more.
        await _quietly(delete_instance_blobs(storage, replaced))
    if validated.implicit_vr:
        outcome.warning_reason = DATASET_DOES_NOT_MATCH_SOP_CLASS
    elif validated.warnings:
        outcome.warning_reason = VALIDATION_WARNING
    outcome.comments = validated.warnings
    outcome.multi_valued_index = validated.multi_valued_index
    return outcome


async def _single_part(body: AsyncIterator[bytes], max_bytes: int, spool_memory_bytes: int) -> AsyncIterator[Part]:
    """Spool a single-part application/dicom body into one Part."""
    file = tempfile.SpooledTemporaryFile(max_size=spool_memory_bytes)
    size = 0
    try:
        async for chunk in body:
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLargeError(f"The DICOM file is larger than the limit of {max_bytes} bytes.")
            file.write(chunk)
    except BaseException:
        file.close()
        raise
    file.seek(0)
    yield Part(headers={}, content_type=DICOM, file=file, size=size)


async def _quietly(operation: object) -> None:
    try:
        await operation  # type: ignore[misc]
    except Exception:
        LOGGER.warning("Cleanup after a failed store did not finish; the cleanup path will remove leftovers",
                       exc_info=True)
