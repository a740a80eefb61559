"""Limits on what a request may be: query string, headers and body size, and how long a body may stall.

Checked by the app itself, so that an over-limit request gets a clear 4xx on every host (the Functions host
turns a body over its own limit into a 500; uvicorn has no idle timeout on bodies).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from starlette.requests import ClientDisconnect

from dicom_core.model.errors import (
    BadRequestError,
    ClientClosedRequestError,
    HeaderFieldsTooLargeError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UriTooLongError,
)
from dicom_core.settings import Settings

# What each header line costs besides its name and value: ": " and CRLF, as HTTP/1.1 sends it.
_HEADER_LINE_OVERHEAD = 4
_CONTENT_LENGTH = b"content-length"


@dataclass(frozen=True)
class RequestLimits:
    """The caps a request must stay within (docs/api.md, "Limits and errors")."""

    max_request_bytes: int
    max_query_string_bytes: int
    max_header_bytes: int
    body_idle_timeout_seconds: float

    @classmethod
    def of(cls, settings: Settings) -> RequestLimits:
        """The limits the settings choose."""
        return cls(settings.max_request_bytes, settings.max_query_string_bytes, settings.max_header_bytes,
                   settings.body_idle_timeout_seconds)


def check_request_head(limits: RequestLimits, query_string: str, headers: Iterable[tuple[bytes, bytes]]) -> None:
    """Refuse a request whose query string or headers are too long, that has a `<` in its query string, or
    whose Content-Length is over the request limit: 414, 400, 431, 413."""
    if len(query_string) > limits.max_query_string_bytes:
        raise UriTooLongError(f"The query string is longer than the limit of {limits.max_query_string_bytes} bytes.")
    # Like Azure's DICOM service, on every route: '<' (raw or encoded) never belongs in a query.
    if "<" in query_string or "%3c" in query_string.lower():
        raise BadRequestError("The query string included invalid characters.")
    header_bytes = 0
    content_length: bytes | None = None
    for name, value in headers:
        header_bytes += len(name) + len(value) + _HEADER_LINE_OVERHEAD
        if name.lower() == _CONTENT_LENGTH:
            content_length = value
    if header_bytes > limits.max_header_bytes:
        raise HeaderFieldsTooLargeError(f"The request headers are larger than the limit of {limits.max_header_bytes} "
                                        "bytes.")
    if content_length is not None:
        if not content_length.strip().isdigit():
            raise BadRequestError("The Content-Length header is not a number of bytes.")
        if int(content_length) > limits.max_request_bytes:
            raise PayloadTooLargeError(
                f"The request body is larger than the limit of {limits.max_request_bytes} bytes.")


async def limited_body(chunks: AsyncIterator[bytes], limits: RequestLimits) -> AsyncIterator[bytes]:
    """Yield the body's non-empty chunks; 413 once it passes the request limit, 408 when it stalls too long, 499
    when the client goes away before the body is complete."""
    iterator = aiter(chunks)
    received = 0
    while True:
        try:
            async with asyncio.timeout(limits.body_idle_timeout_seconds):  # no task per chunk, as wait_for makes
                chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        except ClientDisconnect:  # Starlette's (and so FastAPI's, the Functions worker's) report of the disconnect
            raise ClientClosedRequestError(
                f"The client closed the connection after {received} bytes of the request body.") from None
        except TimeoutError:
            raise RequestTimeoutError(
                f"The request body stopped arriving: nothing was received for {limits.body_idle_timeout_seconds:g} "
                "seconds.") from None
        received += len(chunk)
        if received > limits.max_request_bytes:
            raise PayloadTooLargeError(
                f"The request body is larger than the limit of {limits.max_request_bytes} bytes.")
        if chunk:
            yield chunk
