"""Which storage exceptions mean "storage is unavailable, retry later": the one place they are told apart.

The Azure SDKs have already retried (a bounded number of times, see `clients.py`) when one of these reaches
the service, so the request gives up with a 503 and a Retry-After instead of a 500.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from dicom_core.model.errors import StorageUnavailableError

# Raised when storage refuses or drops the connection, or does not answer in time.
_UNREACHABLE = (ServiceRequestError, ServiceResponseError, ConnectionError, asyncio.TimeoutError)


def is_storage_unavailable(exc: BaseException) -> bool:
    """Tell whether ``exc`` (or what caused it) says storage could not be reached or failed on its side (5xx)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (StorageUnavailableError, *_UNREACHABLE)):
            return True
        if isinstance(current, HttpResponseError):
            status = current.status_code or 0
            return status >= HTTPStatus.INTERNAL_SERVER_ERROR
        current = current.__cause__ or current.__context__
    return False


def storage_unavailable(exc: BaseException) -> StorageUnavailableError | None:
    """Return the 503 error that ``exc`` amounts to, or None when it is no storage outage."""
    if isinstance(exc, StorageUnavailableError):
        return exc
    return StorageUnavailableError() if is_storage_unavailable(exc) else None


def error_code(exc: BaseException) -> str | None:
    """Return the storage service's error code of ``exc`` ("TableNotFound", "UpdateConditionNotSatisfied", ...)."""
    code = getattr(exc, "error_code", None)  # set by the SDKs on HttpResponseError, not declared there
    if code is None:
        return None
    return str(getattr(code, "value", code))  # the SDKs' error-code enums compare by value
