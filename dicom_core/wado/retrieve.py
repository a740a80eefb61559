"""WADO-RS retrieve of studies, series and instances: stored files streamed from Blob Storage, or transcoded.

Each instance is sent as stored when the asked transfer syntax is `*` or its own, and transcoded otherwise,
instance by instance, so a study of mixed syntaxes can be retrieved in one (beyond Azure, which refuses
to transcode more than one instance). Everything that can refuse the request (404, 406) is decided from
the index rows before the first byte is sent.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, replace
from typing import BinaryIO

from azure.data.tables import TableEntity

from dicom_core.index.reads import instance_row_batches, instance_rows, stored_instance
from dicom_core.model.errors import NotFoundError
from dicom_core.model.frames import FrameIndex
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance
from dicom_core.storage.blob_reads import SPOOL_MEMORY_BYTES, Body, BodySource, held_bytes, stream_blob, stream_file
from dicom_core.storage.blobs import instance_blob_name
from dicom_core.storage.clients import Storage
from dicom_core.storage.streamed_blob import streamed_blob
from dicom_core.wado.instance_reads import (
    instance_row,
    require_transcodable_size,
    row_frame_index,
    with_spooled_file,
)
from dicom_core.wado.negotiation import AS_STORED, Representation, Resource, negotiate, negotiate_as_stored
from dicom_core.wado.response import CONTENT_TYPE, PartSource, multipart_response, single_part_response, typed
from dicom_core.wado.rle_streaming import Transcoded, streamable_index, transcode_streamed
from dicom_core.wado.transcoding import transcode_instance
from dicom_core.wado.transfer_syntaxes import check_transcodable, needs_transcoding
from dicom_core.wire.media_types import DICOM
from dicom_core.wire.service_result import ServiceResult

ROW_COLUMNS = ("Version", "TransferSyntaxUid", "Size")
FRAME_INDEX = "FrameIndex"  # read too where instances may be transcoded: RLE is then decoded while it downloads


@dataclass(frozen=True)
class InstancePlan:
    """How one instance is sent: as stored, or transcoded to ``syntax``."""

    stored: StoredInstance
    size: int
    stored_syntax: str
    syntax: str  # the transfer syntax of the bytes sent
    streamed_index: FrameIndex | None = None  # set when it is transcoded while it downloads (wado.rle_streaming)

    @property
    def transcoded(self) -> bool:
        """Whether the stored file has to be transcoded."""
        return self.syntax != self.stored_syntax

    @property
    def cost(self) -> int:
        """The memory its body holds while read ahead (a transcode spools its input and output as well)."""
        return held_bytes(self.size) + (2 * SPOOL_MEMORY_BYTES if self.transcoded else 0)


async def retrieve_study(storage: Storage, study: str, accept: str | None) -> ServiceResult:
    """All instances of a study as multipart/related application/dicom."""
    return await _retrieve_instances(storage, study, None, accept, Resource.STUDY)


async def retrieve_series(storage: Storage, study: str, series: str, accept: str | None) -> ServiceResult:
    """All instances of a series as multipart/related application/dicom."""
    return await _retrieve_instances(storage, study, series, accept, Resource.SERIES)


async def _retrieve_instances(
    storage: Storage, study: str, series: str | None, accept: str | None, resource: Resource
) -> ServiceResult:
    not_found = f"The specified {resource.value} cannot be found."
    representation = negotiate_as_stored(accept, resource)
    if representation is None:  # the answer depends on the stored syntaxes: every row first
        rows = await instance_rows(storage, study, series, select=(*ROW_COLUMNS, FRAME_INDEX))
        if not rows:
            raise NotFoundError(not_found)
        return _multipart(storage, study, rows, accept, resource)
    # Sent as stored, nothing but a 404 can refuse it: the answer starts with the first few rows while the
    # others are read.
    batches = instance_row_batches(storage, study, series, select=ROW_COLUMNS)
    try:
        first: list[TableEntity] = await anext(batches, [])
    except BaseException:
        await batches.aclose()
        raise
    if not first:
        await batches.aclose()
        raise NotFoundError(not_found)
    return multipart_response(DICOM, _parts(storage, study, first, representation),
                              _later_parts(storage, study, batches, representation))


async def _later_parts(
    storage: Storage, study: str, batches: AsyncGenerator[list[TableEntity], None], representation: Representation
) -> AsyncIterator[list[PartSource]]:
    async with contextlib.aclosing(batches):
        async for rows in batches:
            yield _parts(storage, study, rows, representation)


async def retrieve_instance(storage: Storage, ids: InstanceIdentifiers, accept: str | None) -> ServiceResult:
    """One instance, as a single application/dicom body or one multipart part, as the Accept header asks."""
    row = await instance_row(storage, ids)
    representation = negotiate(accept, Resource.INSTANCE, frozenset({str(row["TransferSyntaxUid"])}))
    plan = plan_instance(storage, ids.study, row, representation)
    content_type = typed(DICOM, plan.syntax)
    size = plan.size
    body: BodySource = functools.partial(instance_body, storage, plan)
    transcoded: BinaryIO | Transcoded | None = None
    if plan.streamed_index is not None:  # the answer starts once the header is written
        transcoded = await _streamed(storage, plan)
    elif plan.transcoded:
        # One instance is transcoded before answering, so that a failure is a 406, not a cut-off body.
        transcoded = await _transcoded(storage, plan)
    if isinstance(transcoded, Transcoded):
        size, body = transcoded.size, transcoded.body
    elif transcoded is not None:
        size = transcoded.seek(0, os.SEEK_END)
        transcoded.seek(0)
        if size <= SPOOL_MEMORY_BYTES and not representation.multipart:
            # In memory already: sent in one write, not read back in chunks by a thread.
            with transcoded:
                return single_part_response(content_type, transcoded.read(), size)
        body = functools.partial(stream_file, transcoded)
    if representation.multipart:
        return multipart_response(DICOM, [PartSource({CONTENT_TYPE: content_type}, body)])
    # Also for a transcoded file: a chunked body had the server copy every chunk once more to frame it.
    return single_part_response(content_type, body(), size)


def plan_instance(storage: Storage, study: str, row: TableEntity, representation: Representation) -> InstancePlan:
    """Decide how to send one instance; raise a 406 if it cannot be sent in the negotiated syntax."""
    stored_syntax = str(row["TransferSyntaxUid"])
    asked = representation.transfer_syntax
    plan = InstancePlan(stored_instance(study, row), int(row["Size"]), stored_syntax,
                        stored_syntax if asked == AS_STORED or not needs_transcoding(stored_syntax, asked) else asked)
    if plan.transcoded:
        check_transcodable(stored_syntax, asked)
        require_transcodable_size(storage, plan.size, "transcoded")
        if (index := streamable_index(stored_syntax, plan.syntax, row_frame_index(row))) is not None:
            return replace(plan, streamed_index=index)
    return plan


async def instance_body(storage: Storage, plan: InstancePlan) -> Body:
    """Yield the bytes of one instance: the stored file, or its transcoded copy."""
    if not plan.transcoded:
        async for chunk in stream_blob(storage.files, instance_blob_name(plan.stored), plan.size):
            yield chunk
        return
    transcoded = await _streamed(storage, plan) if plan.streamed_index is not None else await _transcoded(storage, plan)
    body = transcoded.body() if isinstance(transcoded, Transcoded) else stream_file(transcoded)
    async with contextlib.aclosing(body):  # stops its download when the answer stops early
        async for chunk in body:
            yield chunk


async def _streamed(storage: Storage, plan: InstancePlan) -> Transcoded | BinaryIO:
    """Transcode while the one GET of the stored file arrives (the whole file where frames cannot be)."""
    assert plan.streamed_index is not None
    chunks = streamed_blob(storage.files, instance_blob_name(plan.stored), plan.size)
    return await transcode_streamed(chunks, plan.streamed_index, plan.size,
                                    functools.partial(transcode_instance, target=plan.syntax))


async def _transcoded(storage: Storage, plan: InstancePlan) -> BinaryIO:
    return await with_spooled_file(storage, plan.stored, plan.size,
                                   functools.partial(transcode_instance, target=plan.syntax))


def _multipart(
    storage: Storage, study: str, rows: list[TableEntity], accept: str | None, resource: Resource
) -> ServiceResult:
    syntaxes = frozenset(str(row["TransferSyntaxUid"]) for row in rows)
    representation = negotiate(accept, resource, syntaxes)
    return multipart_response(DICOM, _parts(storage, study, rows, representation))


def _parts(storage: Storage, study: str, rows: list[TableEntity], representation: Representation) -> list[PartSource]:
    return [_part(storage, plan_instance(storage, study, row, representation)) for row in rows]


def _part(storage: Storage, plan: InstancePlan) -> PartSource:
    return PartSource({CONTENT_TYPE: typed(DICOM, plan.syntax)}, functools.partial(instance_body, storage, plan),
                      plan.cost)
