"""A streamed answer whose body fails after its 200 was sent: logged once, then its connection dropped.

Once the status line is out, a failure (a later part of a multipart retrieve that cannot be transcoded, a
stored file that cannot be read) can no longer become an error response. Ending the body normally would
hand the client a complete-looking HTTP answer that some multipart readers take as whole; dropping the
connection instead (no closing delimiter, no last chunk) makes every HTTP client report the answer cut short.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from dicom_core.edge.request_log import current_request_id

LOGGER = logging.getLogger("dicomweb")


class AnswerCutShortError(Exception):
    """Raised to the HTTP server so that it drops the connection of an answer whose body failed (already logged)."""


def cut_short_on_failure(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Yield ``body``; if it fails, log the failure under the request's id (its request-log line names the
    method and path) and raise `AnswerCutShortError`. Call it while the request is served."""
    # Taken now: the body is sent after the request's handler returned, outside the request's id.
    return _cut_short_on_failure(body, current_request_id.get())


async def _cut_short_on_failure(body: AsyncIterator[bytes], request_id: str) -> AsyncIterator[bytes]:
    sent = 0
    try:
        async for chunk in body:
            yield chunk
            sent += len(chunk)
    except Exception as exc:
        token = current_request_id.set(request_id)
        try:
            LOGGER.error("The streamed answer of request %s failed after %d bytes; its connection is dropped: %s",
                         request_id, sent, exc, exc_info=exc)
        finally:
            current_request_id.reset(token)
        raise AnswerCutShortError(f"The answer of request {request_id} was cut short after {sent} bytes.") from None
