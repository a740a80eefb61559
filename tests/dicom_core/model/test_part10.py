"""Reading Part-10 files once at store time."""

from __future__ import annotations

import io

import pytest
from pydicom.data import get_testdata_file

from dicom_core.model.part10 import InvalidPart10Error, plainly_not_deflated, read_part10, stored_stream
from tests.factories import make_instance


def test_pixel_data_is_not_loaded() -> None:
    parsed = read_part10(io.BytesIO(make_instance(rows=256, columns=256)))
    raw = parsed.dataset.get_item(0x7FE00010, keep_deferred=True)
    assert raw.value is None


@pytest.mark.parametrize("data", [b"", b"garbage" * 100, b"\x00" * 128 + b"DICM" + b"\xff" * 50])
def test_unreadable_bytes_raise(data: bytes) -> None:
    with pytest.raises(InvalidPart10Error):
        read_part10(io.BytesIO(data))


def test_truncated_file_raises() -> None:
    with open(get_testdata_file("MR_truncated.dcm"), "rb") as file, \
            pytest.raises(InvalidPart10Error, match="truncated"):
        read_part10(file)


def test_deflated_file_has_no_frame_index() -> None:
    with open(get_testdata_file("image_dfl.dcm"), "rb") as file:
        assert read_part10(file).frame_index is None


def test_a_deflated_file_is_not_plainly_not_deflated() -> None:
    with open(get_testdata_file("image_dfl.dcm"), "rb") as file:
        file.read(10)
        assert not plainly_not_deflated(file)
        assert file.tell() == 0


@pytest.mark.parametrize("skip", [0, 132], ids=["with preamble", "without preamble"])
def test_an_explicit_little_endian_file_is_plainly_not_deflated(skip: int) -> None:
    assert plainly_not_deflated(io.BytesIO(make_instance()[skip:]))


def test_file_without_preamble_is_stored_with_one() -> None:
    data = make_instance()
    received = io.BytesIO(data[132:])
    parsed = read_part10(received)
    assert stored_stream(parsed, received).read() == data
    assert parsed.size == len(data)
    assert parsed.frame_index == read_part10(io.BytesIO(data)).frame_index


def test_dataset_without_file_meta_is_refused() -> None:
    data = make_instance()
    parsed_meta_length = 132 + int.from_bytes(data[140:144], "little") + 12
    with pytest.raises(InvalidPart10Error):
        read_part10(io.BytesIO(data[parsed_meta_length:]))
