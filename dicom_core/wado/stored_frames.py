"""Frames as a stored file holds them: slices of native Pixel Data, or the joined fragments of encapsulated ones."""

from __future__ import annotations

from typing import cast

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels.utils import pack_bits, unpack_bits

from dicom_core.model.errors import NotAcceptableError
from dicom_core.model.frames import native_frame_index
from dicom_core.wado.pixel_decoding import number_of_frames, transfer_syntax

OFFSET_TABLES = ("ExtendedOffsetTable", "ExtendedOffsetTableLengths")


def drop_offset_tables(dataset: Dataset) -> None:
    """Remove the Extended Offset Table and its lengths: they describe fragments that are gone."""
    for keyword in OFFSET_TABLES:
        if keyword in dataset:
            delattr(dataset, keyword)


def stored_frame(dataset: Dataset, frame: int) -> bytes:
    """Return a frame's bytes as the dataset holds them: a native slice or the frame's joined fragments."""
    pixels = cast(bytes, dataset.PixelData)
    count = number_of_frames(dataset)
    if transfer_syntax(dataset).is_encapsulated:
        offsets = tuple(dataset[keyword].value for keyword in OFFSET_TABLES) if OFFSET_TABLES[0] in dataset else None
        try:
            return get_frame(pixels, frame - 1, number_of_frames=count, extended_offsets=offsets)
        except Exception as exc:  # malformed encapsulation
            raise NotAcceptableError(f"Frame {frame} cannot be read from the encapsulated pixel data: {exc}") from exc
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    samples, bits = int(dataset.get("SamplesPerPixel") or 1), int(dataset.BitsAllocated)
    index = native_frame_index(
        0, len(pixels), rows=rows, columns=columns, samples=samples, bits_allocated=bits,
        photometric=str(dataset.get("PhotometricInterpretation") or ""), number_of_frames=count,
    )
    if index is not None:
        ((offset, length),) = index.ranges(frame)
        return pixels[offset : offset + length]
    if bits == 1:
        return _bit_packed_frame(pixels, frame, rows * columns * samples)
    raise NotAcceptableError(f"The pixel data is shorter than {count} frame(s) of {rows}x{columns} pixels.")


def _bit_packed_frame(pixels: bytes, frame: int, bits_per_frame: int) -> bytes:
    """Return one frame of 1-bit data packed on its own, starting at a byte boundary (PS3.5 §8.1.1)."""
    first_bit = (frame - 1) * bits_per_frame
    start, end = first_bit // 8, -(-(first_bit + bits_per_frame) // 8)
    if end > len(pixels):
        raise NotAcceptableError(f"The 1-bit pixel data is too short for frame {frame}.")
    bits = cast(np.ndarray, unpack_bits(pixels[start:end]))
    skip = first_bit - start * 8
    return pack_bits(bits[skip : skip + bits_per_frame], pad=False)
