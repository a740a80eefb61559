"""What every service returns to the HTTP edge: a status, headers and a body, independent of the HTTP framework."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus


@dataclass(frozen=True)
class ServiceResult:
    """An answer as the edge sends it: the body is bytes, a stream of chunks, or nothing.

    ``media_type`` is the Content-Type the edge adds after the headers (None: the headers carry it, if any).
    """

    status: int = HTTPStatus.OK
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | AsyncIterator[bytes] | None = None
    media_type: str | None = None
