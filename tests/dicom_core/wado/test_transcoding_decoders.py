"""Transcoding picks the fastest installed decoder per transfer syntax, not pydicom's first."""

from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from dicom_core.wado.decoders import decoding_plugin


def test_rle_is_decoded_by_pylibjpeg_rle() -> None:
    assert decoding_plugin(RLELossless) == "pylibjpeg"


def test_jpeg_ls_is_decoded_by_charls() -> None:
    assert decoding_plugin(JPEGLSLossless) == "pyjpegls"


def test_jpeg_2000_keeps_pydicoms_order() -> None:
    assert decoding_plugin(JPEG2000Lossless) is None
