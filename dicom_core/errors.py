"""Typed errors of the DICOMweb services; the HTTP edge turns them into responses at one place."""

from __future__ import annotations

from http import HTTPStatus


class DicomWebError(Exception):
    """An error with the HTTP status and readable message the client should get."""

    status: int = HTTPStatus.INTERNAL_SERVER_ERROR

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequestError(DicomWebError):
    """The request is malformed (400)."""

    status = HTTPStatus.BAD_REQUEST


class NotFoundError(DicomWebError):
    """The resource does not exist (404)."""

    status = HTTPStatus.NOT_FOUND


class NotAcceptableError(DicomWebError):
    """No representation matches the request's Accept header (406)."""

    status = HTTPStatus.NOT_ACCEPTABLE


class ConflictError(DicomWebError):
    """The request conflicts with stored data (409)."""

    status = HTTPStatus.CONFLICT


class PayloadTooLargeError(DicomWebError):
    """The request or one of its parts is over the configured limit (413)."""

    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class UnsupportedMediaTypeError(DicomWebError):
    """The request's Content-Type is not one this route accepts (415)."""

    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class ServiceUnavailableError(DicomWebError):
    """Storage could not be reached; the client may retry (503)."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
