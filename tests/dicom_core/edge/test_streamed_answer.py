"""A streamed answer that fails part-way: what was produced is sent, the failure logged once, the connection dropped."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from dicom_core.edge.request_log import current_request_id
from dicom_core.edge.streamed_answer import AnswerCutShortError, cut_short_on_failure


async def _failing_after(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
    raise ValueError("part 3 cannot be transcoded")


async def test_a_body_that_fails_is_cut_short_after_what_it_produced(caplog: pytest.LogCaptureFixture) -> None:
    token = current_request_id.set("request-7")
    body = cut_short_on_failure(_failing_after(b"ab", b"cd"))  # taken while the request is served
    current_request_id.reset(token)
    received: list[bytes] = []
    with caplog.at_level(logging.ERROR, logger="dicomweb"), pytest.raises(AnswerCutShortError):
        async for chunk in body:
            received.append(chunk)
    assert received == [b"ab", b"cd"]
    (record,) = [r for r in caplog.records if r.name == "dicomweb"]
    assert "request-7" in record.getMessage() and "after 4 bytes" in record.getMessage()
    assert "part 3 cannot be transcoded" in record.getMessage()


async def test_a_body_that_ends_passes_through_unchanged() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"whole"

    assert [chunk async for chunk in cut_short_on_failure(body())] == [b"whole"]
