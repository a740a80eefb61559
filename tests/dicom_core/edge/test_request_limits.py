"""Request head checks and the limited body reader."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from starlette.requests import ClientDisconnect

from dicom_core.edge.request_limits import RequestLimits, check_request_head, limited_body
from dicom_core.model.errors import (
    CLIENT_CLOSED_REQUEST,
    BadRequestError,
    ClientClosedRequestError,
    HeaderFieldsTooLargeError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UriTooLongError,
)

LIMITS = RequestLimits(max_request_bytes=100, max_query_string_bytes=50, max_header_bytes=200,
                       body_idle_timeout_seconds=0.2)


async def _collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in limited_body(chunks, LIMITS)])


async def _chunks(*parts: bytes, stall_after: int | None = None, gone_after: int | None = None
                  ) -> AsyncIterator[bytes]:
    for index, part in enumerate(parts):
        if index == stall_after:
            await asyncio.sleep(3600)
        if index == gone_after:
            raise ClientDisconnect()  # as Starlette's Request.stream() reports the client going away
        yield part


def test_query_string_over_the_limit_is_414() -> None:
    with pytest.raises(UriTooLongError):
        check_request_head(LIMITS, "a" * 51, [])


@pytest.mark.parametrize("query", ["PatientName=<x>", "PatientName=%3Cx", "a=%3c"])
def test_less_than_sign_raw_or_encoded_is_400(query: str) -> None:
    with pytest.raises(BadRequestError):
        check_request_head(LIMITS, query, [])


def test_headers_over_the_limit_are_431() -> None:
    with pytest.raises(HeaderFieldsTooLargeError):
        check_request_head(LIMITS, "", [(b"x-filler", b"a" * 200)])


def test_content_length_over_the_request_limit_is_413() -> None:
    with pytest.raises(PayloadTooLargeError):
        check_request_head(LIMITS, "", [(b"content-length", b"101")])


def test_content_length_that_is_no_number_is_400() -> None:
    with pytest.raises(BadRequestError):
        check_request_head(LIMITS, "", [(b"content-length", b"-5")])


def test_request_within_every_limit_passes() -> None:
    check_request_head(LIMITS, "PatientName=Doe", [(b"content-length", b"100"), (b"accept", b"*/*")])


async def test_body_within_the_limit_is_passed_through_without_empty_chunks() -> None:
    assert await _collect(_chunks(b"ab", b"", b"cd")) == b"abcd"


async def test_body_over_the_limit_is_413_while_streaming() -> None:
    with pytest.raises(PayloadTooLargeError):
        await _collect(_chunks(b"a" * 60, b"b" * 60))


async def test_body_that_stalls_is_408() -> None:
    with pytest.raises(RequestTimeoutError):
        await _collect(_chunks(b"a", b"b", stall_after=1))


async def test_client_that_disconnects_mid_body_is_499() -> None:
    with pytest.raises(ClientClosedRequestError) as raised:
        await _collect(_chunks(b"a", b"b", gone_after=1))
    assert raised.value.status == CLIENT_CLOSED_REQUEST
