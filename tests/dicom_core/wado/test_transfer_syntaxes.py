"""Which transfer syntaxes can be decoded, and which retrieve targets a stored syntax can be answered in."""

from __future__ import annotations

import pytest
from pydicom.uid import (
    MPEG2MPML,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSNearLossless,
    RLELossless,
)

from dicom_core.model.errors import NotAcceptableError
from dicom_core.wado.transfer_syntaxes import ORIGINAL, can_decode, check_transcodable, needs_transcoding


@pytest.mark.parametrize(("stored", "requested", "expected"), [
    (JPEG2000Lossless, ORIGINAL, False),
    (JPEG2000Lossless, JPEG2000Lossless, False),
    (ExplicitVRLittleEndian, f"{ExplicitVRLittleEndian}\x00", False),
    (JPEG2000Lossless, ExplicitVRLittleEndian, True),
    (ImplicitVRLittleEndian, ExplicitVRLittleEndian, True),
])
def test_needs_transcoding_only_when_the_bytes_change(stored: str, requested: str, expected: bool) -> None:
    assert needs_transcoding(stored, requested) is expected


@pytest.mark.parametrize(("syntax", "expected"), [
    (ExplicitVRBigEndian, True), (DeflatedExplicitVRLittleEndian, True), (JPEGLSNearLossless, True),
    (HTJ2KLossless, True), (RLELossless, True), (MPEG2MPML, False), ("1.2.3.4", False),
])
def test_can_decode(syntax: str, expected: bool) -> None:
    assert can_decode(syntax) is expected


def test_unsupported_target_is_not_acceptable_and_names_what_is_possible() -> None:
    with pytest.raises(NotAcceptableError) as raised:
        check_transcodable(ExplicitVRLittleEndian, JPEGBaseline8Bit)
    assert all(possible in raised.value.message for possible in ("'*'", ExplicitVRLittleEndian, JPEG2000Lossless))


def test_undecodable_stored_syntax_is_not_acceptable_but_as_stored_is() -> None:
    check_transcodable(MPEG2MPML, ORIGINAL)
    check_transcodable(MPEG2MPML, MPEG2MPML)
    with pytest.raises(NotAcceptableError, match="transfer-syntax=\\*"):
        check_transcodable(MPEG2MPML, ExplicitVRLittleEndian)
