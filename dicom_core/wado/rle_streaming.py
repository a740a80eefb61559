"""RLE Lossless instances transcoded to Explicit VR Little Endian while they download.

The stored file comes in one GET (`storage.streamed_blob`); the store path's frame index says where each
frame's fragments are. Once the bytes before Pixel Data have arrived, the new file's header is written (its
Pixel Data length is known: frames × rows × columns × bytes per sample), and each frame is decoded as soon as
its fragments are in and sent at once, so downloading, decoding and sending overlap instead of following
one another (whole-file transcoding, `wado.transcoding`, waits for the last byte before it decodes the first).
Elements after Pixel Data are copied as stored: both syntaxes are explicit VR little endian.

Grey 8/16/32-bit pixel data only (pylibjpeg-rle's fast path, `wado.decoders`); any other file read this way
is transcoded whole from the bytes already read, so it still costs one GET. A frame that fails to decode
after the answer started cuts the answer short (its Content-Length tells the client so).
"""

from __future__ import annotations

import asyncio
import functools
import io
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.tag import ItemTag, SequenceDelimiterTag, Tag
from pydicom.uid import ExplicitVRLittleEndian, RLELossless
from pydicom.valuerep import VR

from dicom_core.model.errors import NotAcceptableError
from dicom_core.model.frames import FrameIndex
from dicom_core.storage.blob_reads import Body, BodySource
from dicom_core.wado.decoders import RLE_NATIVE_BITS, rle_frame

_ITEM = struct.Struct("<HHI")
_PIXEL_DATA = Tag("PixelData")
# Encapsulated Pixel Data in explicit VR little endian: tag, OB, two reserved bytes, undefined length.
_ENCAPSULATED_HEADER = struct.pack("<HH2sHI", _PIXEL_DATA.group, _PIXEL_DATA.element, b"OB", 0, 0xFFFFFFFF)
_OFFSET_TABLES = ("ExtendedOffsetTable", "ExtendedOffsetTableLengths")
_MAX_VALUE_LENGTH = 2**32 - 2  # PS3.5 §7.1.1

Transcoder = Callable[[BinaryIO], BinaryIO]  # a whole file to its transcoded copy, positioned at 0


@dataclass(frozen=True)
class Transcoded:
    """A transcoded file of known ``size`` whose bytes are still being made (``body``, read once)."""

    size: int
    body: BodySource


def streamable_index(stored_syntax: str, target: str, index: FrameIndex | None) -> FrameIndex | None:
    """``index`` if a file stored as ``stored_syntax`` with it is transcoded to ``target`` while it downloads."""
    if stored_syntax.strip() != RLELossless or target.strip() != ExplicitVRLittleEndian:
        return None
    return index if index is not None and index.fragments and index.number_of_frames > 0 else None


async def transcode_streamed(
    chunks: AsyncIterator[bytes], index: FrameIndex, size: int, whole: Transcoder
) -> Transcoded | BinaryIO:
    """Transcode the ``size``-byte RLE file arriving as ``chunks`` to Explicit VR Little Endian.

    Returns once the header is written; where the frames cannot be decoded one by one, the file ``whole``
    (run in a thread on every byte) transcoded.
    """
    source = _Arriving(chunks)
    try:
        fragments = [fragment for frame in index.fragments or () for fragment in frame]
        first = fragments[0][0]
        await source.fill(first)
        start = _pixel_data_start(source.view(0, first), first)
        layout = None if start is None else _layout(source.view(0, start), index)
        last_end = fragments[-1][0] + fragments[-1][1]
        if layout is None or any(a[0] + a[1] > b[0] for a, b in zip(fragments, fragments[1:], strict=False)) \
                or last_end + _ITEM.size > size:
            return await _whole(source, whole)
        header = _header(layout.dataset, layout.pixel_length)
    except BaseException:
        await source.close()
        raise
    total = len(header) + layout.pixel_length + layout.pixel_length % 2 + size - last_end - _ITEM.size
    return Transcoded(total, functools.partial(_frames, source, header, index, layout, last_end, size))


@dataclass(frozen=True)
class _Layout:
    """The stored header's dataset and what the decoded frames look like."""

    dataset: Dataset
    rows: int
    columns: int
    bits: int

    @property
    def frame_length(self) -> int:
        """Bytes of one decoded frame."""
        return self.rows * self.columns * self.bits // 8

    @property
    def pixel_length(self) -> int:
        """Bytes of all decoded frames."""
        return self.frame_length * int(self.dataset.get("NumberOfFrames") or 1)


class _Arriving:
    """The bytes of a file as far as they have arrived, from an offset on (earlier ones are let go)."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._data = bytearray()
        self._base = 0  # file offset of _data[0]

    @property
    def end(self) -> int:
        """File offset of the first byte not arrived yet."""
        return self._base + len(self._data)

    async def fill(self, end: int) -> None:
        """Wait until the bytes up to file offset ``end`` have arrived."""
        while self.end < end:
            chunk = await anext(self._chunks, None)
            if chunk is None:
                raise NotAcceptableError("The stored file is shorter than its frame index says.")
            self._data += chunk

    def view(self, offset: int, end: int) -> bytes:
        """The bytes from file offset ``offset`` to ``end`` (arrived)."""
        return bytes(self._data[offset - self._base : end - self._base])

    def release(self, offset: int) -> None:
        """Let go of the bytes before file offset ``offset``."""
        del self._data[: offset - self._base]
        self._base = offset

    async def rest(self) -> bytes:
        """Every byte still to arrive, with those arrived and not let go."""
        async for chunk in self._chunks:
            self._data += chunk
        return bytes(self._data)

    async def close(self) -> None:
        """Stop the download."""
        close = getattr(self._chunks, "aclose", None)
        if close is not None:
            await close()


def _pixel_data_start(prefix: bytes, first_fragment: int) -> int | None:
    """The offset of the Pixel Data element whose first fragment starts at ``first_fragment``; None if not found."""
    position = prefix.rfind(_ENCAPSULATED_HEADER)
    while position >= 0:
        table_at = position + len(_ENCAPSULATED_HEADER)
        if table_at + _ITEM.size <= len(prefix):
            group, element, length = _ITEM.unpack_from(prefix, table_at)
            fragment_item = table_at + _ITEM.size + length
            if (group << 16 | element) == ItemTag and fragment_item + _ITEM.size == first_fragment:
                return position
        position = prefix.rfind(_ENCAPSULATED_HEADER, 0, position)
    return None


def _layout(stored_header: bytes, index: FrameIndex) -> _Layout | None:
    """The header's dataset if its frames are grey 8/16/32-bit and as many as the index has; else None."""
    try:
        dataset = pydicom.dcmread(io.BytesIO(stored_header), force=True)
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        bits, samples = int(dataset.BitsAllocated), int(dataset.get("SamplesPerPixel") or 1)
        frames = int(dataset.get("NumberOfFrames") or 1)
    except Exception:  # an unreadable header: the whole-file path gives its 406
        return None
    if samples != 1 or bits not in RLE_NATIVE_BITS or frames != index.number_of_frames or min(rows, columns) < 1:
        return None
    layout = _Layout(dataset, rows, columns, bits)
    return layout if layout.pixel_length <= _MAX_VALUE_LENGTH else None


def _header(dataset: Dataset, pixel_length: int) -> bytes:
    """The new file up to the native Pixel Data value: File Meta for Explicit VR LE, Pixel Data's header."""
    for keyword in _OFFSET_TABLES:  # they describe the fragments that are gone
        if keyword in dataset:
            delattr(dataset, keyword)
    for _ in dataset.iterall():  # every element parsed, so each is written with its VR
        pass
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for keyword in ("ImplementationClassUID", "ImplementationVersionName"):  # this service writes the file now
        if keyword in dataset.file_meta:
            delattr(dataset.file_meta, keyword)
    dataset.PixelData = b""
    element = dataset["PixelData"]
    element.VR = VR.OB if int(dataset.BitsAllocated) <= 8 else VR.OW
    element.is_undefined_length = False
    output = io.BytesIO()
    try:
        pydicom.dcmwrite(output, dataset, enforce_file_format=True)
    except Exception as exc:  # values pydicom cannot encode in the new transfer syntax
        raise NotAcceptableError(f"The instance cannot be written as Explicit VR Little Endian: {exc}") from exc
    header = bytearray(output.getvalue())
    header[-4:] = struct.pack("<I", pixel_length + pixel_length % 2)
    return bytes(header)


async def _frames(source: _Arriving, header: bytes, index: FrameIndex, layout: _Layout, last_end: int,
                  size: int) -> Body:
    try:
        yield header
        for number in range(1, index.number_of_frames + 1):
            ranges = index.ranges(number)
            await source.fill(ranges[-1][0] + ranges[-1][1])
            data = b"".join(source.view(offset, offset + length) for offset, length in ranges)
            source.release(ranges[-1][0] + ranges[-1][1])
            frame = await asyncio.to_thread(rle_frame, data, layout.rows, layout.columns, layout.bits)
            if len(frame) != layout.frame_length:
                raise NotAcceptableError(f"Frame {number} decodes to {len(frame)} bytes, not {layout.frame_length}.")
            yield bytes(frame)
        if layout.pixel_length % 2:
            yield b"\x00"
        await source.fill(last_end + _ITEM.size)
        delimiter = source.view(last_end, last_end + _ITEM.size)
        group, element, _ = _ITEM.unpack(delimiter)
        if (group << 16 | element) != SequenceDelimiterTag:
            raise NotAcceptableError("The encapsulated pixel data does not end where its last fragment does.")
        source.release(last_end + _ITEM.size)
        if size > last_end + _ITEM.size:
            yield await source.rest()  # elements after Pixel Data, as stored
    finally:
        await source.close()


async def _whole(source: _Arriving, whole: Transcoder) -> BinaryIO:
    return await asyncio.to_thread(whole, io.BytesIO(await source.rest()))
