"""HTTP to a DICOMweb service: one client with the bearer token, and retries of transient failures."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx

# Answers worth trying again: the request may well succeed a moment later.
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_BACKOFF_SECONDS = 30.0


@dataclass(frozen=True)
class Endpoint:
    """Where the service is (its base URL, e.g. https://host/v2) and how to talk to it."""

    url: str
    token: str | None = None
    timeout_seconds: float = 300.0
    retries: int = 5
    backoff_seconds: float = 1.0


class TransientError(Exception):
    """A request kept failing transiently until the retries ran out."""


def open_client(endpoint: Endpoint) -> httpx.AsyncClient:
    """Return an HTTP client for ``endpoint`` that sends its bearer token (if any) on every request."""
    headers = {"User-Agent": "dicomweb-cli"}
    if endpoint.token:
        headers["Authorization"] = f"Bearer {endpoint.token}"
    return httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(endpoint.timeout_seconds, connect=30.0),
                             follow_redirects=True, trust_env=True)


async def send_with_retries(
    client: httpx.AsyncClient, build: Callable[[], httpx.Request], endpoint: Endpoint, *, stream: bool = False,
    on_retry: Callable[[int, str], Awaitable[None] | None] | None = None,
) -> httpx.Response:
    """Send a freshly built request until it gets a non-transient answer; raise TransientError when retries run out."""
    attempt = 0
    while True:
        reason: str
        delay = _backoff(endpoint.backoff_seconds, attempt)
        try:
            response = await client.send(build(), stream=stream)
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            if response.status_code not in TRANSIENT_STATUSES:
                return response
            reason = f"HTTP {response.status_code}"
            delay = max(delay, _retry_after(response.headers.get("retry-after")))
            await response.aclose()
        if attempt >= endpoint.retries:
            raise TransientError(f"gave up after {attempt + 1} attempts: {reason}")
        attempt += 1
        if on_retry is not None:
            maybe = on_retry(attempt, reason)
            if maybe is not None:
                await maybe
        await asyncio.sleep(delay)


def _backoff(base: float, attempt: int) -> float:
    """Exponential back-off with full jitter, capped."""
    return random.uniform(0, min(MAX_BACKOFF_SECONDS, base * 2**attempt))


def _retry_after(value: str | None) -> float:
    """Seconds a Retry-After header asks for (a number or an HTTP date), capped; 0 when absent or unreadable."""
    if not value:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return 0.0
    return min(max(seconds, 0.0), MAX_BACKOFF_SECONDS)
