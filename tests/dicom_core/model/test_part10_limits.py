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


def test_deflated_file_whose_meta_group_length_understates_it_is_still_refused() -> None:
    data = bytearray(_deflated(200_000))
    struct.pack_into("<I", data, 132 + 8, 10)  # the meta "ends" before its TransferSyntaxUID
    with pytest.raises(InvalidPart10Error, match="inflates to more than"):
        read_part10(io.BytesIO(bytes(data)), max_inflated_bytes=100_000)


def test_deflated_file_with_meta_longer_than_the_first_look_is_still_refused() -> None:
    plain = _deflated(200_000)
    (group_length,) = struct.unpack_from("<I", plain, 132 + 8)
    # A 5,000-byte PrivateInformation (0002,0102) at the meta's end: the meta outlasts the bytes looked at first.
    private = struct.pack("<HH", 0x0002, 0x0102) + b"OB\x00\x00" + struct.pack("<I", 5000) + b"\x01" * 5000
    end = 132 + 12 + group_length
    data = bytearray(plain[:end] + private + plain[end:])
    struct.pack_into("<I", data, 132 + 8, group_length + len(private))
    with pytest.raises(InvalidPart10Error, match="inflates to more than"):
        read_part10(io.BytesIO(bytes(data)), max_inflated_bytes=100_000)
