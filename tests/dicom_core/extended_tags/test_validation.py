"""The checks of `POST /extendedquerytags` bodies and PATCH bodies: every 400 of Azure's service."""

from __future__ import annotations

import json

import pytest

from dicom_core.extended_tags.registry import QueryStatus
from dicom_core.extended_tags.validation import parse_add_body, parse_query_status, parse_tag_path
from dicom_core.model.errors import BadRequestError
from dicom_core.model.levels import Level


def _body(*items: object) -> bytes:
    return json.dumps(list(items)).encode()


def test_a_keyword_or_hex_path_gives_the_tag_with_the_dictionary_vr() -> None:
    by_keyword, by_hex = parse_add_body(_body({"path": "StudyTime", "level": "Study"},
                                              {"path": "00200013", "level": "instance"}))
    assert (by_keyword.path, by_keyword.vr, by_keyword.level) == ("00080030", "TM", Level.STUDY)
    assert (by_hex.path, by_hex.vr, by_hex.level) == ("00200013", "IS", Level.INSTANCE)


def test_a_private_tag_with_vr_and_creator_is_accepted() -> None:
    (tag,) = parse_add_body(_body({"path": "00091001", "vr": "lo", "privateCreator": "ACME", "level": "Series"}))
    assert (tag.vr, tag.private_creator) == ("LO", "ACME")


@pytest.mark.parametrize(("body", "reason"), [
    (b"not json", "not valid"),
    (b"{}", "not valid"),
    (b"[]", "empty"),
    (_body({"level": "Study"}), "'path'"),
    (_body({"path": "StudyTime"}), "'level'"),
    (_body({"path": "StudyTime", "level": "Patient"}), "level 'Patient'"),
    (_body({"path": "StudyTime", "level": "Study"}, {"path": "00080030", "level": "Series"}), "specified before"),
    (_body({"path": "PatientName", "level": "Study"}), "already supported"),
    (_body({"path": "00081110.00081150", "level": "Study"}), "sequence"),
    (_body({"path": "ReferencedStudySequence", "level": "Study"}), "not supported"),
    (_body({"path": "PixelData", "level": "Instance"}), "not supported"),
    (_body({"path": "StudyTime", "vr": "DA", "level": "Study"}), "incorrectly specified"),
    (_body({"path": "StudyTime", "vr": "ZZ", "level": "Study"}), "not supported"),
    (_body({"path": "StudyTime", "privateCreator": "ACME", "level": "Study"}), "standard tag"),
    (_body({"path": "00091001", "vr": "LO", "level": "Study"}), "private creator"),
    (_body({"path": "00091001", "privateCreator": "ACME", "level": "Study"}), "vr"),
    (_body({"path": "00091001", "vr": "OB", "privateCreator": "ACME", "level": "Study"}), "not supported"),
    (_body({"path": "NotAKeyword", "level": "Study"}), "invalid"),
    (_body({"path": "StudyTime", "level": "Study", "color": "red"}), "unknown field"),
])
def test_an_invalid_body_is_400_saying_why(body: bytes, reason: str) -> None:
    with pytest.raises(BadRequestError) as raised:
        parse_add_body(body)
    assert reason.lower() in raised.value.message.lower()


def test_a_sequence_path_is_400() -> None:
    with pytest.raises(BadRequestError, match="sequence"):
        parse_tag_path("00081110.00081150")


@pytest.mark.parametrize("body", [b'{"QueryStatus": "Disabled"}', b'{"queryStatus": "disabled"}'])
def test_a_patch_body_names_the_query_status_in_any_case(body: bytes) -> None:
    assert parse_query_status(body) is QueryStatus.DISABLED


@pytest.mark.parametrize("body", [b"", b"[]", b'{"queryStatus": "maybe"}', b'{"status": "enabled"}'])
def test_an_invalid_patch_body_is_400(body: bytes) -> None:
    with pytest.raises(BadRequestError):
        parse_query_status(body)
