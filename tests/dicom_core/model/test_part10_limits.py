"""Part-10 files built to exhaust the reader: deflate bombs and deeply nested sequences."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian

from dicom_core.model.part10 import MAX_SEQUENCE_DEPTH, InvalidPart10Error, read_part10
from tests.factories import make_dataset, to_bytes

_ITEM = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
_ENDS = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
_CONTENT_SEQUENCE = struct.pack("<HH", 0x0040, 0xA730) + b"SQ\x00\x00" + struct.pack("<I", 0xFFFFFFFF)


def _nested(depth: int) -> bytes:
    ds = make_dataset()
    del ds.PixelData
    return to_bytes(ds) + (_CONTENT_SEQUENCE + _ITEM) * depth + _ENDS * depth


def _deflated(extra_zeros: int) -> bytes:
    """A deflated file whose dataset ends in an OB element of ``extra_zeros`` zero bytes."""
    plain = to_bytes(make_dataset(transfer_syntax=DeflatedExplicitVRLittleEndian, PixelData=None))
    (group_length,) = struct.unpack_from("<I", plain, 132 + 8)
    start = 132 + 12 + group_length
    dataset = zlib.decompress(plain[start:], -zlib.MAX_WBITS)
    element = struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\x00\x00" + struct.pack("<I", extra_zeros)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return plain[:start] + deflater.compress(dataset + element + b"\x00" * extra_zeros) + deflater.flush()


def test_sequences_nested_to_the_limit_are_read() -> None:
    assert read_part10(io.BytesIO(_nested(MAX_SEQUENCE_DEPTH))).dataset.ContentSequence


@pytest.mark.parametrize("depth", [MAX_SEQUENCE_DEPTH + 1, 5000])
def test_sequences_nested_deeper_are_refused(depth: int) -> None:
    with pytest.raises(InvalidPart10Error):
        read_part10(io.BytesIO(_nested(depth)))


def test_deflated_file_that_inflates_over_the_limit_is_refused() -> None:
    with pytest.raises(InvalidPart10Error, match="inflates to more than"):
        read_part10(io.BytesIO(_deflated(200_000)), max_inflated_bytes=100_000)


def test_deflated_file_within_the_limit_is_read() -> None:
    parsed = read_part10(io.BytesIO(_deflated(50_000)), max_inflated_bytes=100_000)
    assert parsed.transfer_syntax == DeflatedExplicitVRLittleEndian


def test_deflated_stream_that_is_corrupt_is_refused() -> None:
    data = bytearray(_deflated(1000))
    data[-20:] = b"\xff" * 20
    with pytest.raises(InvalidPart10Error):
        read_part10(io.BytesIO(bytes(data)))
