"""Transcoding picks the fastest installed decoder per syntax, not pydicom's first; grey RLE skips pydicom."""

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from dicom_core.wado.decoders import decoding_plugin, rle_frames
from tests.factories import make_dataset


def test_rle_is_decoded_by_pylibjpeg_rle() -> None:
    assert decoding_plugin(RLELossless) == "pylibjpeg"


def test_jpeg_ls_is_decoded_by_charls() -> None:
    assert decoding_plugin(JPEGLSLossless) == "pyjpegls"


def test_jpeg_2000_keeps_pydicoms_order() -> None:
    assert decoding_plugin(JPEG2000Lossless) is None


def _rle(ds: Dataset) -> Dataset:
    ds.compress(RLELossless)
    return ds


def test_grey_rle_frames_are_the_stored_values_in_little_endian() -> None:
    source = _rle(make_dataset(rows=16, columns=24, frames=3))
    frames = rle_frames(source, 3)
    assert frames is not None
    assert [bytes(frame) for frame in frames] == [frame.astype("<u2").tobytes() for frame in source.pixel_array]


def test_colour_rle_is_left_to_pydicom() -> None:
    source = dcmread(get_testdata_file("SC_rgb_rle_16bit_2frame.dcm"))
    assert rle_frames(source, 2) is None
