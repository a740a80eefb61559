"""Reading a spooled DICOM Part-10 file once: identifiers, metadata and frame offsets, no pixel data."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import BinaryIO

import pydicom
from pydicom import config
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.uid import DeflatedExplicitVRLittleEndian, UID

from .frames import UNDEFINED_LENGTH, FrameIndex, encapsulated_frame_index, native_frame_index

PIXEL_DATA = BaseTag(0x7FE00010)
# Values larger than this stay in the file and are never loaded while parsing.
DEFER_BYTES = 16 * 1024


# Invalid values are reported by store validation, which knows what to do with them; silence pydicom's own.
config.settings.reading_validation_mode = config.IGNORE


class InvalidPart10Error(ValueError):
    """The bytes are not a readable DICOM Part-10 file."""


@dataclass
class ParsedFile:
    """A parsed Part-10 file: its dataset (large values deferred) and where its frames are."""

    dataset: Dataset
    transfer_syntax: UID
    frame_index: FrameIndex | None
    size: int


def read_part10(file: BinaryIO) -> ParsedFile:
    """Parse the file's elements without loading bulk values; raise InvalidPart10Error if unreadable."""
    file.seek(0, os.SEEK_END)
    size = file.tell()
    file.seek(0)
    if size == 0:
        raise InvalidPart10Error("The part is empty.")
    try:
        dataset = pydicom.dcmread(file, defer_size=DEFER_BYTES)
    except Exception as exc:  # pydicom raises many exception types for malformed input
        raise InvalidPart10Error(f"The part is not a readable DICOM file: {exc}") from exc
    meta = getattr(dataset, "file_meta", None)
    transfer_syntax = getattr(meta, "TransferSyntaxUID", None)
    if not transfer_syntax:
        raise InvalidPart10Error("The part has no File Meta Information with a TransferSyntaxUID.")
    if transfer_syntax != DeflatedExplicitVRLittleEndian:  # deflated offsets are not file offsets
        _check_not_truncated(dataset, size)
    return ParsedFile(dataset, UID(transfer_syntax), _frame_index(dataset, UID(transfer_syntax), file), size)


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
