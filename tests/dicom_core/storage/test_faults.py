"""Which storage exceptions become a 503 with Retry-After."""

from __future__ import annotations

import pytest
from azure.core.exceptions import (
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import TableErrorCode, TableTransactionError

from dicom_core.model.errors import StorageUnavailableError
from dicom_core.storage.faults import error_code, is_storage_unavailable, storage_unavailable


class _Response:
    """Just enough of an azure.core HTTP response for HttpResponseError."""

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code
        self.reason = "test"
        self.headers: dict[str, str] = {}
        self.request = None

    def text(self, encoding: str | None = None) -> str:
        return ""


@pytest.mark.parametrize("exc", [
    ServiceRequestError("connection refused"),
    ServiceResponseError("connection reset"),
    HttpResponseError(response=_Response(503)),
    HttpResponseError(response=_Response(500)),
    ConnectionRefusedError(),
    TimeoutError(),
])
def test_unreachable_or_failing_storage_is_unavailable(exc: Exception) -> None:
    assert is_storage_unavailable(exc)


@pytest.mark.parametrize("exc", [
    ResourceNotFoundError("no such blob"),
    HttpResponseError(response=_Response(409)),
    ValueError("a bug"),
])
def test_client_errors_and_bugs_are_not_unavailability(exc: Exception) -> None:
    assert storage_unavailable(exc) is None


def test_a_wrapped_storage_error_is_found_through_its_cause() -> None:
    try:
        try:
            raise ServiceRequestError("refused")
        except ServiceRequestError as inner:
            raise RuntimeError("store failed") from inner
    except RuntimeError as outer:
        assert is_storage_unavailable(outer)


def test_unavailable_storage_answers_503_with_retry_after() -> None:
    error = storage_unavailable(ServiceRequestError("refused"))
    assert isinstance(error, StorageUnavailableError)
    assert (error.status, int(error.headers["Retry-After"]) > 0) == (503, True)


def test_error_code_is_the_service_code_of_an_sdk_enum() -> None:
    exc = TableTransactionError(message="gone")
    exc.error_code = TableErrorCode.TABLE_NOT_FOUND
    assert error_code(exc) == "TableNotFound"


def test_error_code_is_none_without_one() -> None:
    assert error_code(ValueError("plain")) is None
