"""WADO-RS frames and rendered images of one instance.

Frames are read with ranged GETs at the byte ranges the store path recorded (native frames, or the
fragments of encapsulated ones), so a frame of a large multi-frame file costs one small read. Only when a
frame must be transcoded, rendered, or its file has no usable frame index (deflated, 1-bit, unusual
fragmentation) is the whole file read, up to `DICOMWEB_MAX_TRANSCODE_BYTES`.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Sequence
from typing import BinaryIO

from azure.data.tables import TableEntity
from pydicom.datadict import tag_for_keyword

from dicom_core.index.reads import stored_instance
from dicom_core.model.errors import BadRequestError, NotAcceptableError, NotFoundError
from dicom_core.model.frames import FrameIndex
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance
from dicom_core.storage.blob_reads import Body, BodySource, held_bytes, read_spanned, stream_range
from dicom_core.storage.blobs import frames_blob_name, instance_blob_name
from dicom_core.storage.clients import Storage
from dicom_core.wado.frame_bytes import frame_bytes
from dicom_core.wado.instance_reads import (
    instance_row,
    instance_version,
    require_transcodable_size,
    row_frame_index,
    with_spooled_file,
)
from dicom_core.wado.known_frames import KnownFrames, known_frames, remember_frames
from dicom_core.wado.negotiation import AS_STORED, Representation, Resource, frame_syntax, negotiate, negotiate_rendered
from dicom_core.wado.rendered_video import MP4, STORED_STREAMS, render_video
from dicom_core.wado.rendering import GIF, IMAGE_MEDIA_TYPES, render_frame
from dicom_core.wado.rendering_parameters import RenderingParameters
from dicom_core.wado.response import CONTENT_TYPE, PartSource, multipart_response, single_part_response, typed
from dicom_core.wado.transfer_syntaxes import needs_transcoding
from dicom_core.wado.video_streams import is_video_stream
from dicom_core.wire.service_result import ServiceResult

# DICOM JSON keys of the row's attributes that say how many frames an instance without frame index has.
NUMBER_OF_FRAMES = f"{tag_for_keyword('NumberOfFrames'):08X}"
ROWS = f"{tag_for_keyword('Rows'):08X}"
# An instance's rendered answers: its first frame as an image, or all its frames as a GIF or a video.
INSTANCE_RENDERED_MEDIA_TYPES = (*IMAGE_MEDIA_TYPES, MP4)
# Frames read speculatively, before the row says whether they are current, are held whole: up to this much.
SPECULATIVE_BYTES = 8 * 1024 * 1024


async def retrieve_frames(
    storage: Storage, ids: InstanceIdentifiers, frame_list: str, accept: str | None
) -> ServiceResult:
    """The listed frames (1-based, comma separated) of an instance, each part saying its transfer syntax."""
    frames = parse_frame_list(frame_list)
    # The row and, when this process has read the instance before, its frames as of then are read at once:
    # those bytes are sent only if the row still names the version they are of (a version never changes).
    speculation = _speculate(storage, ids, frames, accept)
    if speculation is not None:
        # The frame reads go out first: they take longer than the row's, which then comes while they run.
        await asyncio.sleep(0)
    try:
        # Those frames need the row's Version alone; the whole row (its attributes) only when they cannot be sent.
        if speculation is not None and speculation.version == await instance_version(storage, ids):
            if (answer := await speculation.answer()) is not None:
                return answer
        row = await instance_row(storage, ids)
    finally:
        if speculation is not None:
            await speculation.cancel()
    return await _frames_of_row(storage, ids, row, frames, accept)


async def _frames_of_row(
    storage: Storage, ids: InstanceIdentifiers, row: TableEntity, frames: list[int], accept: str | None
) -> ServiceResult:
    stored_syntax = str(row["TransferSyntaxUid"])
    representation = negotiate(accept, Resource.FRAMES, frozenset({stored_syntax}))
    _require_single_part(representation, frames)
    # A video's fragments are pieces of one stream, not frames: its frames are decoded from the whole file.
    index = None if is_video_stream(stored_syntax) else await _frame_index(storage, row)
    _require_frames(frames, index, row)
    stored = stored_instance(ids.study, row)
    asked = representation.transfer_syntax
    if index is not None:
        remember_frames(storage, ids, KnownFrames(stored.version, stored_syntax, index))
    if index is not None and (asked == AS_STORED or not needs_transcoding(frame_syntax(stored_syntax), asked)):
        label = stored_syntax if asked == AS_STORED else asked
        sources = [_ranged_frame(storage, stored, index.ranges(frame)) for frame in frames]
        lengths = [sum(length for _, length in index.ranges(frame)) for frame in frames]
        costs = [held_bytes(length) for length in lengths]
    else:
        require_transcodable_size(storage, int(row["Size"]), "read whole for frames")
        label, contents = await _decoded_frames(storage, stored, int(row["Size"]), stored_syntax, frames, asked)
        sources = [_bytes_body(content) for content in contents]
        lengths = [len(content) for content in contents]
        costs = [0] * len(contents)  # in memory already
    return _frames_answer(representation, label, sources, lengths, costs)


def _frames_answer(
    representation: Representation, label: str, sources: list[BodySource], lengths: list[int], costs: list[int]
) -> ServiceResult:
    content_type = typed(representation.media_type, label)
    if representation.multipart:
        parts = [PartSource({CONTENT_TYPE: content_type}, s, cost) for s, cost in zip(sources, costs, strict=True)]
        return multipart_response(representation.media_type, parts)
    return single_part_response(content_type, sources[0](), lengths[0])


def _require_single_part(representation: Representation, frames: Sequence[int]) -> None:
    if not representation.multipart and len(frames) > 1:
        raise BadRequestError(
            f"A single-part {representation.media_type} answer holds one frame: ask for "
            f'multipart/related; type="{representation.media_type}" to get {len(frames)}.'
        )


class _Speculation:
    """Frames of a remembered version being read while the instance row is read."""

    def __init__(
        self, version: str, representation: Representation, label: str, reads: asyncio.Future[list[bytes]]
    ) -> None:
        self.version = version
        self._representation = representation
        self._label = label
        self._reads = reads

    async def answer(self) -> ServiceResult | None:
        """The answer made of the frames read; None if reading them failed (the row's path decides then)."""
        try:
            contents = await self._reads
        except Exception:  # e.g. the blob of a version replaced meanwhile, already cleaned up
            return None
        if not self._representation.multipart:  # bytes at hand: sent in one piece, not streamed
            content_type = typed(self._representation.media_type, self._label)
            return single_part_response(content_type, contents[0], len(contents[0]))
        return _frames_answer(self._representation, self._label, [_bytes_body(c) for c in contents],
                              [len(c) for c in contents], [0] * len(contents))

    async def cancel(self) -> None:
        """Stop the reads if they still run."""
        if not self._reads.done():
            self._reads.cancel()
        await asyncio.gather(self._reads, return_exceptions=True)


def _speculate(
    storage: Storage, ids: InstanceIdentifiers, frames: list[int], accept: str | None
) -> _Speculation | None:
    """Start reading the frames of the version this process last saw, when they would be sent as stored."""
    known = known_frames(storage, ids)
    if known is None or any(frame > known.index.number_of_frames for frame in frames):
        return None
    try:
        representation = negotiate(accept, Resource.FRAMES, frozenset({known.stored_syntax}))
    except NotAcceptableError:
        return None  # the row's path answers the 406 (or the 404, if the instance is gone)
    asked = representation.transfer_syntax
    if (not representation.multipart and len(frames) > 1) or (
            asked != AS_STORED and needs_transcoding(frame_syntax(known.stored_syntax), asked)):
        return None
    ranges = [known.index.ranges(frame) for frame in frames]
    if sum(length for frame in ranges for _, length in frame) > SPECULATIVE_BYTES:
        return None
    stored = StoredInstance(ids, known.version)
    reads = asyncio.gather(*(_read_frame(storage, stored, frame) for frame in ranges))
    label = known.stored_syntax if asked == AS_STORED else asked
    return _Speculation(known.version, representation, label, reads)


async def _read_frame(storage: Storage, stored: StoredInstance, ranges: Sequence[tuple[int, int]]) -> bytes:
    return b"".join([chunk async for chunk in _ranged_frame(storage, stored, ranges)()])


async def retrieve_rendered(
    storage: Storage, ids: InstanceIdentifiers, frame: str | None, accept: str | None, parameters: RenderingParameters
) -> ServiceResult:
    """One frame rendered as an image; an instance as its first frame, or as an animated GIF or video of all."""
    if frame is not None and "," in frame:
        raise BadRequestError("Only one frame can be rendered at a time.")
    number = parse_frame_list(frame)[0] if frame is not None else 1
    row = await instance_row(storage, ids)
    offered = IMAGE_MEDIA_TYPES if frame is not None else INSTANCE_RENDERED_MEDIA_TYPES
    if frame is None and str(row.get("TransferSyntaxUid", "")).strip() in STORED_STREAMS:
        offered = (MP4, *IMAGE_MEDIA_TYPES)  # a video's own representation first: `*/*` (a <video> element) gets it
    media_type = negotiate_rendered(accept, offered)
    count = _require_frames([number], await _frame_index(storage, row), row)
    size = int(row["Size"])
    require_transcodable_size(storage, size, "rendered")
    render: Callable[[BinaryIO], bytes]
    if frame is None and (media_type == MP4 or (media_type == GIF and count > 1)):
        render = functools.partial(render_video, media_type=media_type, parameters=parameters)
    else:
        render = functools.partial(render_frame, frame=number, media_type=media_type, parameters=parameters)
    image = await with_spooled_file(storage, stored_instance(ids.study, row), size, render)
    return ServiceResult(headers={CONTENT_TYPE: media_type}, body=image)


def parse_frame_list(text: str) -> list[int]:
    """Parse `1,2,3` into frame numbers; 0, negative, empty or non-numeric numbers are a 400."""
    frames = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) < 1:
            raise BadRequestError(f"The frame list '{text}' must be 1-based frame numbers separated by commas.")
        frames.append(int(item))
    return frames


async def _frame_index(storage: Storage, row: TableEntity) -> FrameIndex | None:
    if row.get("FrameIndexInBlob"):
        name = frames_blob_name(stored_instance(row["PartitionKey"], row))
        data = await (await storage.metadata.download_blob(name)).readall()
        return FrameIndex.from_json(json.loads(data))
    return row_frame_index(row)


def _require_frames(frames: Sequence[int], index: FrameIndex | None, row: TableEntity) -> int:
    """The instance's number of frames; a 404 when one of ``frames`` is beyond it."""
    if index is not None:
        count = index.number_of_frames
    else:
        attributes = json.loads(row.get("Attributes") or "{}")
        if ROWS not in attributes:
            raise NotFoundError("The instance has no pixel data, so it has no frames.")
        values = attributes.get(NUMBER_OF_FRAMES, {}).get("Value") or [1]
        count = int(values[0])
    beyond = [frame for frame in frames if frame > count]
    if beyond:
        raise NotFoundError(f"The specified frame cannot be found: the instance has {count} frame(s), not {beyond[0]}.")
    return count


def _ranged_frame(storage: Storage, stored: StoredInstance, ranges: Sequence[tuple[int, int]]) -> BodySource:
    name = instance_blob_name(stored)
    if len(ranges) == 1:
        offset, length = ranges[0]
        return lambda: stream_range(storage.files, name, offset, length)

    # The fragments of one frame lie close together: one read of the span, item headers cut out.
    return lambda: read_spanned(storage.files, name, ranges)


def _bytes_body(content: bytes) -> BodySource:
    async def body() -> Body:
        yield content

    return body


async def _decoded_frames(
    storage: Storage, stored: StoredInstance, size: int, stored_syntax: str, frames: list[int], asked: str
) -> tuple[str, list[bytes]]:
    """Read the whole file and return (transfer syntax, frame bytes): transcoded, or as stored without an index."""
    target = stored_syntax if asked == AS_STORED else asked
    decode = functools.partial(frame_bytes, frames=frames, target=target)
    contents = await with_spooled_file(storage, stored, size, decode)
    return frame_syntax(contents.transfer_syntax), contents.frames
