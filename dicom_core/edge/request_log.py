"""A request id per HTTP request, carried by every log record made while serving it, and one JSON log line per request.

The line is JSON in the log message itself, so it stays structured wherever the message goes: the local
server's console, or Application Insights' `traces` table (`parse_json(message)`), which the Functions host
feeds from APPLICATIONINSIGHTS_CONNECTION_STRING. Query strings are not logged: they can hold patient names.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

LOGGER = logging.getLogger("dicomweb.request")

REQUEST_ID_HEADER = "X-Request-Id"
# A caller's own id is kept (so its logs and ours join up) when it is a plain token.
_INCOMING_ID_HEADERS = ("x-request-id", "x-ms-client-request-id")
_INCOMING_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

current_request_id: ContextVar[str] = ContextVar("dicomweb_request_id", default="")


class _Url(Protocol):
    path: str


class HttpRequest(Protocol):
    """What is read of a request (Starlette's and FastAPI's Request have it)."""

    method: str
    url: _Url
    headers: Mapping[str, str]


class HttpResponse(Protocol):
    """What is read and set on a response (Starlette's Response has it)."""

    status_code: int
    headers: MutableMapping[str, str]


Req = TypeVar("Req", bound=HttpRequest)
Resp = TypeVar("Resp", bound=HttpResponse)


def request_id_for(headers: Mapping[str, str]) -> str:
    """Return the caller's request id if it sent a well-formed one, else a new random id."""
    for name in _INCOMING_ID_HEADERS:
        value = headers.get(name, "").strip()
        if _INCOMING_ID.fullmatch(value):
            return value
    return uuid.uuid4().hex


def request_record(request_id: str, method: str, path: str, status: int, duration_ms: float) -> dict[str, Any]:
    """Return the fields of one request's log line."""
    return {"event": "request", "request_id": request_id, "method": method, "path": path, "status": status,
            "duration_ms": round(duration_ms, 1)}


def log_requests(handler: Callable[[Req], Awaitable[Resp]]) -> Callable[[Req], Awaitable[Resp]]:
    """Wrap an HTTP handler: set the request id, answer it in X-Request-Id, and log one JSON line when it returns."""
    install_record_factory()

    @functools.wraps(handler)
    async def wrapper(req: Req) -> Resp:
        request_id = request_id_for(req.headers)
        token = current_request_id.set(request_id)
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(req)
            status = response.status_code
            response.headers[REQUEST_ID_HEADER] = request_id
            return response
        finally:
            # Time to the response's start: a streamed body is still being sent.
            record = request_record(request_id, req.method, req.url.path, status,
                                    (time.perf_counter() - started) * 1000)
            # request_id reaches the record through the factory; the other fields as attributes too.
            extra = {name: value for name, value in record.items() if name != "request_id"}
            LOGGER.log(logging.ERROR if status >= 500 else logging.INFO, json.dumps(record), extra=extra)
            current_request_id.reset(token)

    return wrapper


_installed = False


def install_record_factory() -> None:
    """Give every LogRecord a ``request_id`` attribute (empty outside a request); idempotent."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = current_request_id.get()
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
