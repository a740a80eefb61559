"""`GET /operations/{id}`: an operation's status and progress in Azure's JSON shape (202 while it runs, 200 after)."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from dicom_core.model.errors import NotFoundError
from dicom_core.operations.records import Operation, OperationStatus, get_operation
from dicom_core.storage.clients import Storage
from dicom_core.wire.service_result import ServiceResult

JSON = "application/json; charset=utf-8"


def operation_href(base_url: str, api_version: int, operation_id: str) -> str:
    """The URL of an operation's status."""
    return f"{base_url}/v{api_version}/operations/{operation_id}"


def operation_reference(base_url: str, api_version: int, operation_id: str) -> ServiceResult:
    """202 with Azure's OperationReference ``{"id", "href"}`` and a Location header: an operation was started."""
    href = operation_href(base_url, api_version, operation_id)
    return json_result({"id": operation_id, "href": href}, HTTPStatus.ACCEPTED, {"Location": href})


def describe_operation(operation: Operation, base_url: str, api_version: int) -> dict[str, Any]:
    """An operation as Azure writes it; v1 says ``completed`` where v2 says ``succeeded``."""
    status = operation.status.value
    if operation.status is OperationStatus.SUCCEEDED and api_version < 2:
        status = "completed"
    described: dict[str, Any] = {
        "operationId": operation.id, "type": operation.type,
        "createdTime": operation.created.isoformat(), "lastUpdatedTime": operation.last_updated.isoformat(),
        "status": status, "percentComplete": operation.percent_complete,
        "resources": [f"{base_url}/v{api_version}/{path}" for path in operation.resources],
    }
    if operation.results:
        described["results"] = operation.results
    return described


async def operation_status(storage: Storage, operation_id: str, base_url: str, api_version: int) -> ServiceResult:
    """The operation's description: 202 with a Location header while it runs, 200 once it is done; 404 unknown."""
    operation = await get_operation(storage, operation_id)
    if operation is None:
        raise NotFoundError(f"The specified operation '{operation_id}' could not be found.")
    body = describe_operation(operation, base_url, api_version)
    if operation.status.terminal:
        return json_result(body)
    return json_result(body, HTTPStatus.ACCEPTED, {"Location": operation_href(base_url, api_version, operation.id)})


def json_result(value: Any, status: int = HTTPStatus.OK, headers: dict[str, str] | None = None) -> ServiceResult:
    """A JSON answer (not DICOM JSON), as Azure gives for operations and extended query tags."""
    return ServiceResult(status, headers or {}, json.dumps(value, separators=(",", ":")).encode(), JSON)
