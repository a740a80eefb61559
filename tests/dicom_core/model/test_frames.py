"""Frame byte ranges recorded at store time equal pydicom's own frames."""

from __future__ import annotations

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames

from dicom_core.model.part10 import read_part10
from tests.factories import make_instance


def _read_ranges(path: str, ranges: tuple[tuple[int, int], ...]) -> bytes:
    with open(path, "rb") as file:
        data = file.read()
    return b"".join(data[offset : offset + length] for offset, length in ranges)


@pytest.mark.parametrize("name", ["SC_rgb_rle_2frame.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm"])
def test_encapsulated_frames_match_pydicom(name: str) -> None:
    path = get_testdata_file(name)
    with open(path, "rb") as file:
        index = read_part10(file).frame_index
    ds = dcmread(path)
    expected = list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames") or 1)))
    assert index is not None and index.number_of_frames == len(expected)
    for number, frame in enumerate(expected, start=1):
        assert _read_ranges(path, index.ranges(number)).rstrip(b"\x00") == frame.rstrip(b"\x00")


def test_native_multiframe_frames_match_pixel_data(tmp_path) -> None:
    path = tmp_path / "multi.dcm"
    path.write_bytes(make_instance(rows=4, columns=6, frames=5))
    with open(path, "rb") as file:
        index = read_part10(file).frame_index
    pixels = dcmread(path).PixelData
    frame_length = 4 * 6 * 2
    assert index is not None and index.number_of_frames == 5
    for number in range(1, 6):
        expected = pixels[(number - 1) * frame_length : number * frame_length]
        assert _read_ranges(str(path), index.ranges(number)) == expected


def test_frame_index_survives_json_round_trip() -> None:
    with open(get_testdata_file("SC_rgb_rle_2frame.dcm"), "rb") as file:
        index = read_part10(file).frame_index
    assert index is not None
    assert type(index).from_json(index.to_json()) == index


def test_frame_out_of_range_raises() -> None:
    with open(get_testdata_file("CT_small.dcm"), "rb") as file:
        index = read_part10(file).frame_index
    assert index is not None
    with pytest.raises(IndexError):
        index.ranges(2)
