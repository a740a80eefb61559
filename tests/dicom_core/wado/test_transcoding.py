"""Transcoding checked against pydicom's own decoding of its bundled files and of generated datasets."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import openjpeg
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels.utils import pack_bits
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from dicom_core.model.errors import NotAcceptableError
from dicom_core.wado.frame_bytes import frame_bytes
from dicom_core.wado.transcoding import transcode_instance
from dicom_core.wado.transfer_syntaxes import (
    ORIGINAL,
    TRANSCODE_TARGETS,
)
from tests.factories import make_dataset, to_bytes

# Source files from pydicom.data, by transfer syntax. Files with a side under 32 pixels are not here for the
# JPEG 2000 target: the encoder cannot code them (see test_small_frames_to_jpeg2000_are_not_acceptable).
SOURCES: dict[UID, tuple[str, ...]] = {
    ExplicitVRLittleEndian: ("CT_small.dcm", "examples_palette.dcm", "SC_ybr_full_422_uncompressed.dcm"),
    ImplicitVRLittleEndian: ("MR_small_implicit.dcm", "rtdose.dcm"),
    ExplicitVRBigEndian: ("MR_small_bigendian.dcm", "ExplVR_BigEnd.dcm", "rtdose_expb.dcm", "liver_expb_1frame.dcm"),
    DeflatedExplicitVRLittleEndian: ("image_dfl.dcm",),
    JPEGBaseline8Bit: ("SC_rgb_jpeg_dcmtk.dcm", "examples_ybr_color.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm"),
    JPEGExtended12Bit: ("JPGExtended.dcm",),
    JPEGLosslessSV1: ("SC_rgb_jpeg_gdcm.dcm",),
    JPEGLSLossless: ("MR_small_jpeg_ls_lossless.dcm",),
    JPEGLSNearLossless: ("SC_rgb_jls_lossy_sample.dcm", "JPEGLSNearLossless_16.dcm"),
    JPEG2000Lossless: ("MR_small_jp2klossless.dcm", "examples_jpeg2k.dcm", "J2K_pixelrep_mismatch.dcm"),
    JPEG2000: ("JPEG2000.dcm", "SC_rgb_gdcm_KY.dcm"),
    RLELossless: ("MR_small_RLE.dcm", "SC_rgb_rle_16bit_2frame.dcm", "rtdose_rle.dcm"),
}
TOO_SMALL_FOR_JPEG2000 = {"rtdose.dcm", "rtdose_expb.dcm", "rtdose_rle.dcm", "JPEGLSNearLossless_16.dcm"}
ONE_BIT = {"liver_expb_1frame.dcm"}
TO_NATIVE = [(syntax, name) for syntax, names in SOURCES.items() for name in names if syntax != ExplicitVRLittleEndian]
TO_JPEG2000 = [
    (syntax, name) for syntax, names in SOURCES.items() for name in names
    if syntax != JPEG2000Lossless and name not in TOO_SMALL_FOR_JPEG2000 | ONE_BIT
]
# Attributes that transcoding may change; every other one must come out as it went in.
CHANGED = {"PixelData", "PhotometricInterpretation", "PlanarConfiguration", "LossyImageCompression",
           "LossyImageCompressionMethod"}


def _path(name: str) -> str:
    return str(get_testdata_file(name))


def _transcode(name: str, target: str) -> Dataset:
    with open(_path(name), "rb") as source:
        return dcmread(transcode_instance(source, target))


def _frames(name: str, frames: list[int], target: str) -> list[bytes]:
    with open(_path(name), "rb") as source:
        return frame_bytes(source, frames, target).frames


def _pixels(name: str) -> np.ndarray:
    return dcmread(_path(name)).pixel_array


def test_sources_cover_every_encapsulated_syntax_of_the_bundled_files() -> None:
    bundled = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The folder of the bundled files (get_testdata_files also tries to download the external ones).
        for path in Path(_path("CT_small.dcm")).parent.glob("*.dcm"):
            try:
                ds = dcmread(path, stop_before_pixels=True)
                syntax = UID(ds.file_meta.TransferSyntaxUID)
            except Exception:
                continue
            if syntax.is_encapsulated and "PixelData" in dcmread(path):
                bundled.add(syntax)
    assert bundled <= set(SOURCES)


@pytest.mark.parametrize(("syntax", "name"), TO_NATIVE)
def test_transcoding_to_explicit_vr_little_endian_keeps_the_decoded_pixels(syntax: UID, name: str) -> None:
    assert dcmread(_path(name), stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    result = _transcode(name, ExplicitVRLittleEndian)
    assert result.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert "PixelData" in result and not result["PixelData"].is_undefined_length
    assert np.array_equal(result.pixel_array, _pixels(name))


@pytest.mark.parametrize(("syntax", "name"), TO_JPEG2000)
def test_transcoding_to_jpeg2000_lossless_keeps_the_decoded_pixels(syntax: UID, name: str) -> None:
    assert dcmread(_path(name), stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    result = _transcode(name, JPEG2000Lossless)
    assert result.file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert result["PixelData"].is_undefined_length
    assert np.array_equal(result.pixel_array, _pixels(name))


@pytest.mark.parametrize(("name", "target"), [
    (name, target) for name in ("MR_small_implicit.dcm", "MR_small_bigendian.dcm", "SC_rgb_jpeg_dcmtk.dcm",
                                "examples_overlay.dcm")
    for target in sorted(TRANSCODE_TARGETS)
] + [("examples_jpeg2k.dcm", ExplicitVRLittleEndian)])
def test_transcoding_keeps_every_other_attribute(name: str, target: str) -> None:
    source = dcmread(_path(name))
    result = _transcode(name, target)
    for element in source:
        if element.keyword in CHANGED or element.tag.element == 0:  # group lengths are retired and not written
            continue
        assert result[element.tag].value == element.value, element


def test_transcoded_file_meta_names_the_target_and_keeps_the_instance_uid() -> None:
    source = dcmread(_path("MR_small_RLE.dcm"))
    with open(_path("MR_small_RLE.dcm"), "rb") as file:
        output = transcode_instance(file, ExplicitVRLittleEndian)
    data = output.read()
    result = dcmread(io.BytesIO(data))
    assert data[128:132] == b"DICM"
    assert result.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert result.file_meta.MediaStorageSOPInstanceUID == source.file_meta.MediaStorageSOPInstanceUID
    assert result.SOPInstanceUID == source.SOPInstanceUID


def test_transcoded_file_is_returned_at_position_zero_whatever_the_source_position() -> None:
    with open(_path("MR_small_RLE.dcm"), "rb") as file:
        file.seek(0, os.SEEK_END)
        output = transcode_instance(file, ExplicitVRLittleEndian)
    assert output.tell() == 0
    assert dcmread(output).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


@pytest.mark.parametrize("target", [ORIGINAL, ExplicitVRLittleEndian])
def test_instance_already_in_the_target_is_copied_byte_for_byte(target: str) -> None:
    with open(_path("CT_small.dcm"), "rb") as file:
        original = file.read()
        assert transcode_instance(file, target).read() == original


def test_file_without_preamble_is_transcoded() -> None:
    ds = make_dataset(transfer_syntax=ImplicitVRLittleEndian)
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=True, little_endian=True)  # pydicom's own in-memory form: no preamble
    assert buffer.getvalue()[:2] == b"\x02\x00"
    result = dcmread(transcode_instance(buffer, ExplicitVRLittleEndian))
    assert result.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(result.pixel_array, ds.pixel_array)


def test_decompressed_ycbcr_becomes_rgb_by_pixel() -> None:
    result = _transcode("examples_ybr_color.dcm", ExplicitVRLittleEndian)
    assert result.PhotometricInterpretation == "RGB"
    assert result.PlanarConfiguration == 0
    assert result.NumberOfFrames == 30


def test_decompressed_lossy_source_is_marked_lossy_when_it_was_not() -> None:
    assert "LossyImageCompression" not in dcmread(_path("SC_rgb_jls_lossy_sample.dcm"))
    result = _transcode("SC_rgb_jls_lossy_sample.dcm", ExplicitVRLittleEndian)
    assert (result.LossyImageCompression, result.LossyImageCompressionMethod) == ("01", "ISO_14495_1")


def test_jpeg2000_output_has_one_fragment_per_frame() -> None:
    result = _transcode("SC_rgb_rle_16bit_2frame.dcm", JPEG2000Lossless)
    fragments = list(generate_frames(result.PixelData, number_of_frames=2))
    assert len(fragments) == 2
    assert all(fragment[:4] == b"\xff\x4f\xff\x51" for fragment in fragments)  # J2K SOC and SIZ markers


def test_big_endian_binary_values_are_little_endian_after_transcoding() -> None:
    ds = make_dataset(transfer_syntax=ExplicitVRBigEndian, rows=4, columns=4)
    overlay = np.arange(16, dtype=np.uint16)
    ds.add_new(0x60003000, "OW", overlay.astype(">u2").tobytes())  # Overlay Data, written as a big endian file holds it
    ds.PixelData = np.arange(16, dtype=">u2").tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=False, little_endian=False, enforce_file_format=True)
    result = dcmread(transcode_instance(buffer, ExplicitVRLittleEndian))
    assert result[0x60003000].value == overlay.astype("<u2").tobytes()
    assert result.PixelData == np.arange(16, dtype="<u2").tobytes()


def test_instance_without_pixel_data_is_transcoded() -> None:
    result = _transcode("rtplan.dcm", ExplicitVRLittleEndian)
    assert result.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert result.SOPInstanceUID == dcmread(_path("rtplan.dcm")).SOPInstanceUID


@pytest.mark.parametrize("name", sorted(TOO_SMALL_FOR_JPEG2000))
def test_small_frames_to_jpeg2000_are_not_acceptable(name: str) -> None:
    with pytest.raises(NotAcceptableError, match="32 pixels"):
        _transcode(name, JPEG2000Lossless)


def test_one_bit_pixels_to_jpeg2000_are_not_acceptable() -> None:
    with pytest.raises(NotAcceptableError, match="JPEG 2000"):
        _transcode("liver_1frame.dcm", JPEG2000Lossless)


def test_pixel_data_that_cannot_be_decoded_is_not_acceptable() -> None:
    with pytest.raises(NotAcceptableError, match="cannot be decoded"):
        _transcode("JPEG-lossy.dcm", ExplicitVRLittleEndian)  # pydicom's own decoders fail on this one too


def test_unreadable_source_is_not_acceptable() -> None:
    with pytest.raises(NotAcceptableError, match="cannot be read"):
        transcode_instance(io.BytesIO(b"not a DICOM file"), ExplicitVRLittleEndian)


def test_native_frames_are_slices_of_the_pixel_data() -> None:
    data = to_bytes(make_dataset(rows=4, columns=6, frames=3))
    frames = frame_bytes(io.BytesIO(data), [3, 1], ExplicitVRLittleEndian).frames
    pixels = dcmread(io.BytesIO(data)).PixelData
    assert frames == [pixels[96:144], pixels[0:48]]


def test_big_endian_frames_equal_the_little_endian_file_frames() -> None:
    frames = list(range(1, 16))
    assert _frames("rtdose_expb.dcm", frames, ExplicitVRLittleEndian) == _frames("rtdose.dcm", frames,
                                                                                 ExplicitVRLittleEndian)


def test_big_endian_frame_as_stored_is_unchanged() -> None:
    pixels = dcmread(_path("MR_small_bigendian.dcm")).PixelData
    assert _frames("MR_small_bigendian.dcm", [1], ORIGINAL) == [pixels]


def test_one_bit_frames_are_packed_from_a_byte_boundary() -> None:
    bits = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1] * 3, dtype=np.uint8)
    bits[9:18] ^= 1  # frame 2 differs
    ds = make_dataset(rows=3, columns=3, frames=3)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
    ds.PixelData = pack_bits(bits)
    frames = frame_bytes(io.BytesIO(to_bytes(ds)), [1, 2, 3], ExplicitVRLittleEndian).frames
    assert frames == [pack_bits(bits[i * 9 : (i + 1) * 9], pad=False) for i in range(3)]


@pytest.mark.parametrize("name", ["SC_rgb_rle_2frame.dcm", "examples_ybr_color.dcm", "image_dfl.dcm"])
def test_decoded_frames_equal_pydicom_pixels(name: str) -> None:
    expected = _pixels(name)
    count = int(dcmread(_path(name)).get("NumberOfFrames") or 1)
    expected = expected if count > 1 else expected[np.newaxis]
    frames = _frames(name, [count, 1], ExplicitVRLittleEndian)
    assert frames == [expected[count - 1].tobytes(), expected[0].tobytes()]


@pytest.mark.parametrize("name", ["CT_small.dcm", "SC_rgb_jpeg_dcmtk.dcm", "MR_small_RLE.dcm"])
def test_jpeg2000_frames_decode_to_the_source_pixels(name: str) -> None:
    (codestream,) = _frames(name, [1], JPEG2000Lossless)
    decoded = openjpeg.decode(codestream)
    assert np.array_equal(decoded.astype(_pixels(name).dtype), _pixels(name))


@pytest.mark.parametrize("name", ["examples_jpeg2k.dcm", "SC_rgb_rle_2frame.dcm"])
def test_frames_in_the_stored_syntax_are_the_stored_fragments(name: str) -> None:
    ds = dcmread(_path(name))
    count = int(ds.get("NumberOfFrames") or 1)
    expected = list(generate_frames(ds.PixelData, number_of_frames=count))
    assert _frames(name, list(range(1, count + 1)), ds.file_meta.TransferSyntaxUID) == expected
    assert _frames(name, list(range(1, count + 1)), ORIGINAL) == expected


@pytest.mark.parametrize("name", ["SC_rgb_rle_16bit_2frame.dcm", "MR_small_bigendian.dcm", "examples_ybr_color.dcm"])
@pytest.mark.parametrize("target", sorted(TRANSCODE_TARGETS))
def test_frames_equal_the_frames_of_the_transcoded_instance(name: str, target: str) -> None:
    result = _transcode(name, target)
    count = int(result.get("NumberOfFrames") or 1)
    frames = _frames(name, list(range(1, count + 1)), target)
    if target == JPEG2000Lossless:
        # Fragments are padded to even length; a codestream need not be.
        expected = list(generate_frames(result.PixelData, number_of_frames=count))
        assert [frame + b"\x00" * (len(frame) % 2) for frame in frames] == expected
    else:
        length = len(frames[0])
        assert b"".join(frames) == result.PixelData[: count * length]


@pytest.mark.parametrize("frames", [[0], [2], [1, 3]])
def test_frame_beyond_the_instance_raises_index_error(frames: list[int]) -> None:
    with pytest.raises(IndexError):
        _frames("CT_small.dcm", frames, ExplicitVRLittleEndian)


def test_frames_of_an_instance_without_pixel_data_raise_index_error() -> None:
    with pytest.raises(IndexError):
        _frames("rtplan.dcm", [1], ExplicitVRLittleEndian)


def test_frames_in_an_unsupported_syntax_are_not_acceptable() -> None:
    with pytest.raises(NotAcceptableError):
        _frames("CT_small.dcm", [1], JPEGBaseline8Bit)
