"""Reading a spooled DICOM Part-10 file once: identifiers, metadata and frame offsets, no pixel data."""

from __future__ import annotations

import io
import os
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

import pydicom
from pydicom import config
from pydicom.dataset import Dataset
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from dicom_core.model.bulk_data import (
    ITEM_HEADER_BYTES,
    MAX_PIECES,
    BulkReferences,
    OwnMedia,
    document_suffix,
    video_suffix,
)
from dicom_core.model.frames import UNDEFINED_LENGTH, FrameIndex, encapsulated_frame_index, native_frame_index
from dicom_core.model.tags import ENCAPSULATED_DOCUMENT, PIXEL_DATA

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

# Values larger than this stay in the file and are never loaded while parsing.
DEFER_BYTES = 16 * 1024
# Group 0002 (File Meta Information) as the very first bytes: a Part-10 file written without preamble.
_FILE_META_START = b"\x02\x00"
# What such a file gets in front when stored, so that every stored file is a conformant Part-10 file.
PREAMBLE = b"\x00" * 128 + b"DICM"
# What a deflated dataset may inflate to unless the caller says otherwise (pydicom inflates it in memory).
DEFAULT_MAX_INFLATED_BYTES = 100 * 1024 * 1024
# Sequences nested deeper than this are refused (real objects, SR trees included, stay far below it); reading and
# converting them to JSON recurses once per level.
MAX_SEQUENCE_DEPTH = 64
_INFLATE_CHUNK_BYTES = 1024 * 1024
# How much of a file is looked at for its File Meta Information before the meta is parsed (it is far shorter).
_META_HEAD_BYTES = 4096
# Explicit VR element headers: tag, VR and a 2-byte length, or for these VRs tag, VR, 2 reserved bytes, 4-byte length.
_SHORT_HEADER_BYTES = 8
_LONG_HEADER_BYTES = 12
_LONG_LENGTH_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})


# Invalid values are reported by store validation, which knows what to do with them; silence pydicom's own.
config.settings.reading_validation_mode = config.IGNORE


class InvalidPart10Error(ValueError):
    """The bytes are not a readable DICOM Part-10 file."""


@dataclass
class ParsedFile:
    """A parsed Part-10 file: its dataset (large values deferred) and where its frames are."""

    dataset: Dataset
    transfer_syntax: UID
    frame_index: FrameIndex | None  # offsets in the stored file (after any added preamble)
    size: int  # of the stored file
    added_preamble: bytes = b""
    bulk: BulkReferences = field(default_factory=BulkReferences)  # binary attributes, filled as metadata is made


def read_part10(file: BinaryIO, *, max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES) -> ParsedFile:
    """Parse the file's elements without loading bulk values; raise InvalidPart10Error if unreadable."""
    file.seek(0, os.SEEK_END)
    size = file.tell()
    file.seek(0)
    if size == 0:
        raise InvalidPart10Error("The part is empty.")
    try:
        # pydicom itself writes files without preamble and 'DICM' for datasets created in memory, and
        # dicomweb-client sends those: read them as long as the File Meta Information is there.
        force = file.read(len(_FILE_META_START)) == _FILE_META_START
        file.seek(0)
        _check_inflated_size(file, force, max_inflated_bytes)
        file.seek(0)
        dataset = pydicom.dcmread(file, defer_size=DEFER_BYTES, force=force)
    except InvalidPart10Error:
        raise
    except Exception as exc:  # pydicom raises many exception types for malformed input (RecursionError too)
        raise InvalidPart10Error(f"The part is not a readable DICOM file: {exc}") from exc
    _check_sequence_depth(dataset)
    meta = getattr(dataset, "file_meta", None)
    transfer_syntax = getattr(meta, "TransferSyntaxUID", None)
    if not transfer_syntax:
        raise InvalidPart10Error("The part has no File Meta Information with a TransferSyntaxUID.")
    if transfer_syntax != DeflatedExplicitVRLittleEndian:  # deflated offsets are not file offsets
        _check_not_truncated(dataset, size)
    frame_index = _frame_index(dataset, UID(transfer_syntax), file)
    media = _own_media(dataset, UID(transfer_syntax), file)
    lengths = _encapsulated_length(dataset, frame_index)
    lengths.update({tell: own.end - tell for tell, own in media.items() if tell not in lengths})
    bulk = BulkReferences(shift=len(PREAMBLE) if force else 0,
                          offsets_valid=transfer_syntax != DeflatedExplicitVRLittleEndian, lengths=lengths, media=media)
    if not force:
        return ParsedFile(dataset, UID(transfer_syntax), frame_index, size, bulk=bulk)
    shifted = frame_index.shifted(len(PREAMBLE)) if frame_index else None
    return ParsedFile(dataset, UID(transfer_syntax), shifted, size + len(PREAMBLE), PREAMBLE, bulk)


class PrefixedReader(io.RawIOBase):
    """A read-only, seekable view of ``prefix`` followed by ``file``, for uploading a file with a preamble added."""

    def __init__(self, prefix: bytes, file: BinaryIO) -> None:
        super().__init__()
        self._prefix, self._file, self._position = prefix, file, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._position
        elif whence == io.SEEK_END:
            self._file.seek(0, io.SEEK_END)
            offset += len(self._prefix) + self._file.tell()
        self._position = max(0, offset)
        return self._position

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        written = 0
        if self._position < len(self._prefix):
            head = self._prefix[self._position : self._position + len(view)]
            view[: len(head)] = head
            written = len(head)
        if written < len(view):
            self._file.seek(self._position + written - len(self._prefix))
            data = self._file.read(len(view) - written)
            view[written : written + len(data)] = data
            written += len(data)
        self._position += written
        return written


def stored_stream(parsed: ParsedFile, file: BinaryIO) -> BinaryIO:
    """Return the bytes to store: the file as received, with a preamble in front if it had none."""
    if not parsed.added_preamble:
        return file
    return io.BufferedReader(PrefixedReader(parsed.added_preamble, file))


def plainly_not_deflated(file: BinaryIO) -> bool:
    """Tell from a file's first bytes that it names no deflated transfer syntax (False when unsure); rewinds it."""
    file.seek(0)
    head = file.read(_META_HEAD_BYTES)
    file.seek(0)
    return _not_deflated(head, head[: len(_FILE_META_START)] == _FILE_META_START)


def _check_inflated_size(file: BinaryIO, force: bool, max_inflated_bytes: int) -> None:
    """Refuse a deflated dataset that inflates to more than ``max_inflated_bytes``, inflating at most that much."""
    if _not_deflated(file.read(_META_HEAD_BYTES), force):
        return
    file.seek(0)
    read_preamble(file, force)
    meta = _read_file_meta_info(file)
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    inflated = 0
    try:
        while not inflater.eof and (pending := inflater.unconsumed_tail or file.read(_INFLATE_CHUNK_BYTES)):
            # A chunk at a time, counted and dropped: memory stays bounded whatever the ratio.
            inflated += len(inflater.decompress(pending, _INFLATE_CHUNK_BYTES))
            if inflated > max_inflated_bytes:
                raise InvalidPart10Error(
                    f"The deflated dataset inflates to more than the limit of {max_inflated_bytes} bytes.")
    except zlib.error as exc:
        raise InvalidPart10Error(f"The deflated dataset is not a valid deflate stream: {exc}") from exc


def _not_deflated(head: bytes, force: bool) -> bool:
    """Tell from a file's first bytes, walking its File Meta Information elements as pydicom reads them (explicit
    VR little endian, until the first element of another group), that they name no deflated transfer syntax; False
    when unsure (the meta does not end within ``head``)."""
    position = 0 if force else len(PREAMBLE)
    while position + _SHORT_HEADER_BYTES <= len(head):
        if head[position : position + 2] != _FILE_META_START:
            return DeflatedExplicitVRLittleEndian.encode() not in head[:position]
        if head[position + 4 : position + 6] in _LONG_LENGTH_VRS:
            if position + _LONG_HEADER_BYTES > len(head):
                return False
            length = int.from_bytes(head[position + 8 : position + _LONG_HEADER_BYTES], "little")
            position += _LONG_HEADER_BYTES + length
        else:
            position += _SHORT_HEADER_BYTES + int.from_bytes(head[position + 6 : position + 8], "little")
    return False


def _check_sequence_depth(dataset: Dataset) -> None:
    """Refuse sequences nested deeper than MAX_SEQUENCE_DEPTH (walked without recursion)."""
    pending: list[tuple[Dataset, int]] = [(dataset, 0)]
    while pending:
        current, depth = pending.pop()
        for tag in current.keys():
            raw = current.get_item(tag, keep_deferred=True)
            if getattr(raw, "VR", None) != "SQ":
                continue
            if depth >= MAX_SEQUENCE_DEPTH:
                raise InvalidPart10Error(f"Sequences are nested deeper than {MAX_SEQUENCE_DEPTH} levels.")
            pending.extend((item, depth + 1) for item in current[tag].value or ())


def _check_not_truncated(dataset: Dataset, size: int) -> None:
    for tag in dataset.keys():
        raw = dataset.get_item(tag, keep_deferred=True)
        tell, length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
        if tell is not None and length not in (None, UNDEFINED_LENGTH) and tell + length > size:
            raise InvalidPart10Error(
                f"The file is truncated: element {BaseTag(tag)} needs {length} bytes at offset {tell}, "
                f"the file has {size} bytes."
            )


def _frame_index(dataset: Dataset, transfer_syntax: UID, file: BinaryIO) -> FrameIndex | None:
    raw = dataset.get_item(PIXEL_DATA, keep_deferred=True) if PIXEL_DATA in dataset else None
    if raw is None or transfer_syntax == DeflatedExplicitVRLittleEndian:
        return None  # no pixels, or offsets inside a deflated stream mean nothing in the stored file
    tell, length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
    if tell is None or length is None:
        return None
    try:
        frames = int(dataset.get("NumberOfFrames") or 1)
        if transfer_syntax.is_encapsulated:
            if length != UNDEFINED_LENGTH:
                return None
            return encapsulated_frame_index(file, tell, frames)
        return native_frame_index(
            tell, length, rows=int(dataset.Rows), columns=int(dataset.Columns),
            samples=int(dataset.get("SamplesPerPixel") or 1), bits_allocated=int(dataset.BitsAllocated),
            photometric=str(dataset.get("PhotometricInterpretation") or ""), number_of_frames=frames,
        )
    except (AttributeError, TypeError, ValueError):
        return None  # pixel description missing or malformed: frames will be decoded at retrieve time


def _own_media(dataset: Dataset, transfer_syntax: UID, file: BinaryIO) -> dict[int, OwnMedia]:
    """The values answered as a media type of their own, by offset: the encapsulated document, and the video stream
    of video pixel data (in up to MAX_PIECES fragments; one in more is answered as the value, its items)."""
    media: dict[int, OwnMedia] = {}
    document = dataset.get_item(ENCAPSULATED_DOCUMENT, keep_deferred=True) if ENCAPSULATED_DOCUMENT in dataset else None
    suffix = document_suffix(dataset.get("MIMETypeOfEncapsulatedDocument"))
    tell, length = getattr(document, "value_tell", None), getattr(document, "length", None)
    if suffix and tell is not None and length not in (None, UNDEFINED_LENGTH):
        media[tell] = OwnMedia(tell, (length,), suffix)
    pixels = dataset.get_item(PIXEL_DATA, keep_deferred=True) if PIXEL_DATA in dataset else None
    suffix, tell = video_suffix(transfer_syntax), getattr(pixels, "value_tell", None)
    if suffix and tell is not None and getattr(pixels, "length", None) == UNDEFINED_LENGTH:
        stream = encapsulated_frame_index(file, tell, 1)
        pieces = stream.fragments[0] if stream is not None and stream.fragments is not None else ()
        contiguous = all(offset == previous + length + ITEM_HEADER_BYTES
                         for (previous, length), (offset, _) in zip(pieces, pieces[1:], strict=False))
        if pieces and len(pieces) <= MAX_PIECES and contiguous:
            media[tell] = OwnMedia(pieces[0][0], tuple(length for _, length in pieces), suffix)
    return media


def _encapsulated_length(dataset: Dataset, frame_index: FrameIndex | None) -> dict[int, int]:
    """The length of encapsulated pixel data (its items, up to the sequence delimiter) by its offset."""
    raw = dataset.get_item(PIXEL_DATA, keep_deferred=True) if PIXEL_DATA in dataset else None
    tell = getattr(raw, "value_tell", None)
    if frame_index is None or frame_index.fragments is None or tell is None:
        return {}
    end = max(offset + length for frame in frame_index.fragments for offset, length in frame)
    return {tell: end - tell}
