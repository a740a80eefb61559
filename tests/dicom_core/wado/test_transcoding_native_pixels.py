"""Decompressing to Explicit VR Little Endian: the decoded frames written after the rest of the file."""

from __future__ import annotations

import io

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from dicom_core.wado.transcoding import transcode_instance
from tests.factories import make_dataset, to_bytes

TRAILING_PADDING = 0xFFFCFFFC  # Data Set Trailing Padding: the one standard element after Pixel Data


def _rle(ds: Dataset) -> Dataset:
    ds.compress(RLELossless)
    return ds


def _decompressed(ds: Dataset) -> Dataset:
    return dcmread(transcode_instance(io.BytesIO(to_bytes(ds)), ExplicitVRLittleEndian))


def test_multi_frame_pixels_are_the_decoded_frames_in_order() -> None:
    source = _rle(make_dataset(rows=16, columns=24, frames=3))
    result = _decompressed(source)
    assert result.NumberOfFrames == 3
    assert np.array_equal(result.pixel_array, source.pixel_array)


def test_pixel_data_value_length_is_the_decoded_size() -> None:
    result = _decompressed(_rle(make_dataset(rows=16, columns=24, frames=3)))
    assert result["PixelData"].VR == "OW"
    assert len(result.PixelData) == 16 * 24 * 3 * 2


def test_odd_length_eight_bit_pixels_are_padded_to_an_even_length() -> None:
    ds = make_dataset(rows=3, columns=3, BitsAllocated=8, BitsStored=8, HighBit=7)
    pixels = np.arange(9, dtype=np.uint8).reshape(3, 3)
    ds.PixelData = pixels.tobytes()
    result = _decompressed(_rle(ds))
    assert result["PixelData"].VR == "OB"
    assert result.PixelData == pixels.tobytes() + b"\x00"


def test_elements_after_pixel_data_are_kept() -> None:
    source = _rle(make_dataset(rows=16, columns=16, frames=2))
    source.add_new(TRAILING_PADDING, "OB", b"\x00\x00\x00\x00")
    result = _decompressed(source)
    assert result[TRAILING_PADDING].value == b"\x00\x00\x00\x00"
    assert np.array_equal(result.pixel_array, source.pixel_array)
