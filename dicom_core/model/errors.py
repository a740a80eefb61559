"""Typed errors of the DICOMweb services; the HTTP edge turns them into responses at one place."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

# Not an IANA status: nginx's code for a request its client abandoned, which log tools know.
CLIENT_CLOSED_REQUEST = 499


class DicomWebError(Exception):
    """An error with the HTTP status, readable message and any headers (e.g. WWW-Authenticate) the client should get."""

    status: int = HTTPStatus.INTERNAL_SERVER_ERROR

    def __init__(self, message: str, *, status: int | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})
        if status is not None:
            self.status = status


class BadRequestError(DicomWebError):
    """The request is malformed (400)."""

    status = HTTPStatus.BAD_REQUEST


class UnauthorizedError(DicomWebError):
    """The request has no valid credentials (401); its headers carry the WWW-Authenticate challenge."""

    status = HTTPStatus.UNAUTHORIZED


class ForbiddenError(DicomWebError):
    """The caller is known but lacks the role the request needs (403)."""

    status = HTTPStatus.FORBIDDEN


class NotFoundError(DicomWebError):
    """The resource does not exist (404)."""

    status = HTTPStatus.NOT_FOUND


class NotAcceptableError(DicomWebError):
    """No representation matches the request's Accept header (406)."""

    status = HTTPStatus.NOT_ACCEPTABLE


class RequestTimeoutError(DicomWebError):
    """The client stopped sending its request body (408)."""

    status = HTTPStatus.REQUEST_TIMEOUT


class ClientClosedRequestError(DicomWebError):
    """The client closed the connection before its request body was complete (499, as nginx logs it).

    Nobody reads the answer; the status marks the request as the client's abort in the request log."""

    status = CLIENT_CLOSED_REQUEST


class PayloadTooLargeError(DicomWebError):
    """The request or one of its parts is over the configured limit (413)."""

    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class UriTooLongError(DicomWebError):
    """The query string is over the configured limit (414)."""

    status = HTTPStatus.REQUEST_URI_TOO_LONG


class HeaderFieldsTooLargeError(DicomWebError):
    """The request headers are over the configured limit (431)."""

    status = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE


class UnsupportedMediaTypeError(DicomWebError):
    """The request's Content-Type is not one this route accepts (415)."""

    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class ServiceUnavailableError(DicomWebError):
    """Storage could not be reached; the client may retry (503)."""

    status = HTTPStatus.SERVICE_UNAVAILABLE


# Seconds a client is told to wait before retrying when storage cannot be reached.
STORAGE_RETRY_AFTER_SECONDS = 5


class StorageUnavailableError(ServiceUnavailableError):
    """Blob or Table Storage did not answer (refused, timed out, or failed with 5xx after retries) (503)."""

    def __init__(self, message: str = "The storage of the DICOM service is unavailable; retry the request later.",
                 *, retry_after_seconds: int = STORAGE_RETRY_AFTER_SECONDS) -> None:
        # Retry-After in seconds (RFC 9110 §10.2.3): the client may try again then.
        super().__init__(message, headers={"Retry-After": str(retry_after_seconds)})
        self.retry_after_seconds = retry_after_seconds
