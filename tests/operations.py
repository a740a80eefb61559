"""Waiting on a long-running operation over HTTP, as a client of `/operations/{id}` does."""

from __future__ import annotations

import time

import httpx


def wait_for_operation(href: str, timeout: float = 120) -> httpx.Response:
    """Poll the operation at ``href`` until it stops answering 202 (or ``timeout`` seconds pass); its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(href, timeout=30)
        if response.status_code != 202 or time.monotonic() > deadline:
            return response
        time.sleep(1)
