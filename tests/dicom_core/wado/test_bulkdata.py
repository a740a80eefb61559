"""Which bytes of a bulk data value a Range selects, and how Accept frames the answer."""

from __future__ import annotations

import pytest

from dicom_core.model.errors import NotAcceptableError
from dicom_core.wado.bulkdata import negotiated, selected_range


@pytest.mark.parametrize(("header", "expected"), [
    (None, (0, 100)),
    ("bytes=0-9", (0, 10)),
    ("bytes=90-", (90, 10)),
    ("bytes=90-500", (90, 10)),
    ("bytes=-10", (90, 10)),
    ("bytes=-500", (0, 100)),
    ("bytes=0-1,5-6", (0, 100)),  # several ranges: the whole value
    ("items=0-1", (0, 100)),
])
def test_ranges_select_bytes_of_the_value(header: str | None, expected: tuple[int, int]) -> None:
    assert selected_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=9-5", "bytes=-0"])
def test_ranges_outside_the_value_are_unsatisfiable(header: str) -> None:
    assert selected_range(header, 100) is None


@pytest.mark.parametrize(("accept", "multipart"), [
    (None, False),
    ("application/octet-stream", False),
    ("*/*", False),
    ('multipart/related; type="application/octet-stream"', True),
    ("multipart/related; type=application/octet-stream; q=0.5, application/octet-stream", False),
])
def test_accept_chooses_single_part_or_multipart(accept: str | None, multipart: bool) -> None:
    assert negotiated(accept) == ("application/octet-stream", multipart)


def test_other_media_types_are_not_acceptable() -> None:
    with pytest.raises(NotAcceptableError):
        negotiated("application/dicom")


@pytest.mark.parametrize(("accept", "expected"), [
    (None, ("application/pdf", False)),
    ("*/*", ("application/pdf", False)),
    ("application/pdf", ("application/pdf", False)),
    ("application/octet-stream", ("application/octet-stream", False)),
    ('multipart/related; type="application/pdf"', ("application/pdf", True)),
    ("application/octet-stream; q=0.5, application/pdf", ("application/pdf", False)),
])
def test_a_document_answers_its_own_type_unless_octet_stream_is_asked_for(
    accept: str | None, expected: tuple[str, bool],
) -> None:
    assert negotiated(accept, "application/pdf") == expected


def test_a_video_is_not_answered_as_another_video_type() -> None:
    with pytest.raises(NotAcceptableError):
        negotiated("video/mpeg2", "video/mp4")
