"""WADO-RS Accept negotiation with the headers real clients send."""

from __future__ import annotations

import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from dicom_core.model.errors import NotAcceptableError
from dicom_core.wado.negotiation import Representation, Resource, negotiate, negotiate_as_stored, negotiate_rendered

ELE = frozenset({ExplicitVRLittleEndian})
JPEG_STORED = frozenset({JPEGBaseline8Bit})
MPEG2 = "1.2.840.10008.1.2.4.100"


def _rep(media: str, syntax: str, multipart: bool = True) -> Representation:
    return Representation(media, syntax, multipart)


@pytest.mark.parametrize(("accept", "expected"), [
    ('multipart/related; type="application/dicom"', _rep("application/dicom", ExplicitVRLittleEndian)),
    ("multipart/related; type=application/dicom; transfer-syntax=*", _rep("application/dicom", "*")),
    ('multipart/related; type="application/dicom"; transfer-syntax="*"', _rep("application/dicom", "*")),
    ('multipart/related; type="*/*"', _rep("application/dicom", "*")),
    ("*/*", _rep("application/dicom", "*")),  # curl's default; Azure refuses it on a study
    (None, _rep("application/dicom", "*")),
    (f'multipart/related; type="application/dicom"; transfer-syntax={JPEG2000Lossless}',
     _rep("application/dicom", JPEG2000Lossless)),
])
def test_study_accepts(accept: str | None, expected: Representation) -> None:
    assert negotiate(accept, Resource.STUDY, ELE) == expected


@pytest.mark.parametrize("accept", [
    "application/dicom",  # single part: Azure refuses it for a study
    'multipart/related; type="application/octet-stream"',
    "application/dicom+json",
    'multipart/related; type="application/dicom";q=0',
])
def test_study_refuses(accept: str) -> None:
    with pytest.raises(NotAcceptableError, match="study resource answers"):
        negotiate(accept, Resource.STUDY, ELE)


def test_syntax_that_cannot_be_produced_is_406_naming_what_is_possible() -> None:
    with pytest.raises(NotAcceptableError, match="possible are"):
        negotiate(f'multipart/related; type="application/dicom"; transfer-syntax={MPEG2}', Resource.SERIES, ELE)


def test_syntax_asked_is_fine_when_every_instance_is_stored_in_it() -> None:
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={JPEGBaseline8Bit}'
    assert negotiate(accept, Resource.SERIES, JPEG_STORED).transfer_syntax == JPEGBaseline8Bit


def test_mixed_stored_syntaxes_can_all_be_transcoded() -> None:
    mixed = frozenset({ExplicitVRLittleEndian, RLELossless, JPEGBaseline8Bit})
    assert negotiate('multipart/related; type="application/dicom"', Resource.STUDY, mixed).transfer_syntax == \
        ExplicitVRLittleEndian


def test_instance_accepts_single_part_application_dicom() -> None:
    assert negotiate("application/dicom", Resource.INSTANCE, ELE) == _rep("application/dicom", ExplicitVRLittleEndian,
                                                                           False)


def test_bare_star_on_an_instance_is_multipart_as_stored() -> None:
    assert negotiate("*/*", Resource.INSTANCE, ELE) == _rep("application/dicom", "*")


def test_highest_quality_feasible_range_wins() -> None:
    accept = (f'multipart/related; type="application/dicom"; transfer-syntax={MPEG2}, '
              f'multipart/related; type="application/dicom"; transfer-syntax={JPEG2000Lossless};q=0.5')
    assert negotiate(accept, Resource.STUDY, ELE).transfer_syntax == JPEG2000Lossless


def test_as_stored_of_equal_quality_is_preferred_like_azure() -> None:
    accept = ('multipart/related; type="application/dicom", '
              'multipart/related; type="application/dicom"; transfer-syntax=*')
    assert negotiate(accept, Resource.STUDY, ELE).transfer_syntax == "*"


def test_as_stored_of_lower_quality_is_not_preferred() -> None:
    accept = ('multipart/related; type="application/dicom", '
              'multipart/related; type="application/dicom"; transfer-syntax=*;q=0.4')
    assert negotiate(accept, Resource.STUDY, ELE).transfer_syntax == ExplicitVRLittleEndian


@pytest.mark.parametrize("accept", [
    "multipart/related; type=application/octet-stream; transfer-syntax=*",  # cornerstone
    'multipart/related; type="application/octet-stream"; transfer-syntax="*"',  # OHIF
    'multipart/related; type="*/*"',  # dicomweb-client's default for frames
])
def test_viewer_frame_accepts_get_stored_frames(accept: str) -> None:
    assert negotiate(accept, Resource.FRAMES, JPEG_STORED) == _rep("application/octet-stream", "*")


def test_frames_default_to_explicit_vr_little_endian() -> None:
    assert negotiate("application/octet-stream", Resource.FRAMES, JPEG_STORED) == \
        _rep("application/octet-stream", ExplicitVRLittleEndian, False)


@pytest.mark.parametrize("stored", [ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian])
def test_native_stored_frames_are_served_as_explicit_vr_little_endian(stored: str) -> None:
    assert negotiate("application/octet-stream", Resource.FRAMES, frozenset({stored})).transfer_syntax == \
        ExplicitVRLittleEndian


def test_jp2_frames_default_to_jpeg_2000_lossless() -> None:
    assert negotiate('multipart/related; type="image/jp2"', Resource.FRAMES, ELE) == _rep("image/jp2", JPEG2000Lossless)


def test_jp2_as_stored_needs_jpeg_2000_stored() -> None:
    with pytest.raises(NotAcceptableError, match="not as image/jp2"):
        negotiate('multipart/related; type="image/jp2"; transfer-syntax=*', Resource.FRAMES, ELE)


def test_stored_compressed_media_type_is_served_as_stored() -> None:
    assert negotiate('multipart/related; type="image/jpeg"', Resource.FRAMES, JPEG_STORED) == _rep("image/jpeg", "*")


def test_compressed_media_type_of_another_syntax_is_406() -> None:
    with pytest.raises(NotAcceptableError):
        negotiate('multipart/related; type="image/dicom-rle"', Resource.FRAMES, JPEG_STORED)


def test_bare_jp2_is_refused_like_azure() -> None:
    with pytest.raises(NotAcceptableError):
        negotiate("image/jp2", Resource.FRAMES, ELE)


def test_several_media_ranges_in_one_header() -> None:
    accept = 'multipart/related; type="image/jls";q=0.9, multipart/related; type="application/octet-stream";q=0.5'
    assert negotiate(accept, Resource.FRAMES, JPEG_STORED).media_type == "application/octet-stream"


@pytest.mark.parametrize(("accept", "expected"), [
    (None, "image/jpeg"), ("image/png", "image/png"), ("*/*", "image/jpeg"), ("image/*", "image/jpeg"),
    ("image/avif,image/webp,image/png,*/*;q=0.8", "image/png"),  # a browser's <img>
])
def test_rendered_media_type(accept: str | None, expected: str) -> None:
    assert negotiate_rendered(accept) == expected


def test_rendered_refuses_other_images() -> None:
    with pytest.raises(NotAcceptableError):
        negotiate_rendered("image/gif")


@pytest.mark.parametrize("accept", [
    None, "*/*", 'multipart/related; type="application/dicom"; transfer-syntax=*',
    f'multipart/related; type="application/dicom"; transfer-syntax=*, multipart/related; type="application/dicom"; '
    f'transfer-syntax={JPEG2000Lossless}; q=0.5',
])
def test_as_stored_answer_is_known_before_the_rows(accept: str | None) -> None:
    for stored in (ELE, JPEG_STORED, frozenset({RLELossless, MPEG2})):
        assert negotiate_as_stored(accept, Resource.STUDY) == negotiate(accept, Resource.STUDY, stored)


@pytest.mark.parametrize(("accept", "resource"), [
    ('multipart/related; type="application/dicom"', Resource.SERIES),  # Explicit VR Little Endian: may transcode
    ("application/dicom", Resource.STUDY),  # refused: the rows' path says why
    ('multipart/related; type="application/octet-stream"; transfer-syntax=*', Resource.FRAMES),
])
def test_answer_that_depends_on_the_rows_is_not_known_before_them(accept: str, resource: Resource) -> None:
    assert negotiate_as_stored(accept, resource) is None
