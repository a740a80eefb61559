"""Which bytes of a bulk data value a Range selects, and how Accept frames the answer."""

from __future__ import annotations

import pytest

from dicom_core.model.errors import NotAcceptableError
from dicom_core.wado.bulkdata import selected_range, wants_multipart


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
    assert wants_multipart(accept) is multipart


def test_other_media_types_are_not_acceptable() -> None:
    with pytest.raises(NotAcceptableError):
        wants_multipart("application/dicom")
