"""Content-Type and Accept parsing as real clients write the headers."""

from __future__ import annotations

import pytest

from dicom_core.wire.media_types import accepts, parse_accept, parse_media_type


def test_quoted_parameters_are_unquoted() -> None:
    media = parse_media_type('multipart/related; type="application/dicom"; boundary="a;b"')
    assert media.type == "multipart/related"
    assert media.params == {"type": "application/dicom", "boundary": "a;b"}


def test_parameter_names_are_case_insensitive() -> None:
    assert parse_media_type("Multipart/Related; Type=application/dicom").params == {"type": "application/dicom"}


def test_accept_list_sorted_by_quality() -> None:
    ranges = parse_accept("application/json;q=0.5, application/dicom+json")
    assert [r.type for r in ranges] == ["application/dicom+json", "application/json"]


@pytest.mark.parametrize("accept", [None, "", "*/*", "application/*", "application/json", "application/dicom+json",
                                    "application/dicom+json, application/json"])
def test_dicom_json_is_accepted_by(accept: str | None) -> None:
    assert accepts(accept, "application/dicom+json")


@pytest.mark.parametrize("accept", ["application/dicom", "application/data", "image/*", "application/dicom+json;q=0"])
def test_dicom_json_is_refused_by(accept: str) -> None:
    assert not accepts(accept, "application/dicom+json")
