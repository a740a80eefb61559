"""The health check of `GET /health/check`: can the service reach its Blob containers and its Table?"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables.aio import TableClient
from azure.storage.blob.aio import ContainerClient

from dicom_core.model.errors import STORAGE_RETRY_AFTER_SECONDS
from dicom_core.storage.clients import Storage
from dicom_core.storage.faults import error_code
from dicom_core.wire.media_types import JSON
from dicom_core.wire.service_result import ServiceResult

LOGGER = logging.getLogger(__name__)

HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"
# Check names as Azure's DICOM service reports them, plus ours for the Table index (theirs is SQL).
FILES_CHECK = "DicomBlobHealthCheck"
METADATA_CHECK = "MetadataHealthCheck"
INDEX_CHECK = "TableStorageHealthCheck"
_BLOB_OK = "Successfully connected to the blob data store."
_BLOB_FAILED = "Failed to connect to the blob data store."
_TABLE_OK = "Successfully connected to the table data store."
_TABLE_FAILED = "Failed to connect to the table data store."
# A point read of a row that never exists: "not found" proves the table answers, without reading data. Made in
# every shard of the Studies table: each is a table of its own, and a deleted one hides its studies.
_PROBE_PARTITION, _PROBE_ROW = "health", "check"


@dataclass(frozen=True)
class HealthCheck:
    """The result of checking one dependency."""

    name: str
    status: str
    description: str


@dataclass(frozen=True)
class HealthReport:
    """Every check's result; healthy only when all are."""

    details: tuple[HealthCheck, ...]

    @property
    def overall_status(self) -> str:
        """Return Healthy when every check is, else Unhealthy."""
        return HEALTHY if all(check.status == HEALTHY for check in self.details) else UNHEALTHY

    @property
    def http_status(self) -> int:
        """Return 200 when healthy, else 503."""
        return HTTPStatus.OK if self.overall_status == HEALTHY else HTTPStatus.SERVICE_UNAVAILABLE

    @property
    def headers(self) -> dict[str, str]:
        """Never cached; when unhealthy, a Retry-After like every other answer of unreachable storage."""
        if self.overall_status == HEALTHY:
            return {"Cache-Control": "no-store"}
        return {"Cache-Control": "no-store", "Retry-After": str(STORAGE_RETRY_AFTER_SECONDS)}

    def to_json(self) -> dict[str, Any]:
        """Return the response body, shaped like Azure's: {overallStatus, details[{name, status, description}]}."""
        return {
            "overallStatus": self.overall_status,
            "details": [{"name": c.name, "status": c.status, "description": c.description} for c in self.details],
        }


async def report_health(open_storage: Callable[[], Awaitable[Storage]], timeout_seconds: float) -> ServiceResult:
    """Answer `GET /health/check`: the report as JSON, 200 when healthy, else 503 (see `check_health`)."""
    report = await check_health(open_storage, timeout_seconds)
    body = json.dumps(report.to_json(), ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    return ServiceResult(report.http_status, report.headers, body, JSON)


async def check_health(open_storage: Callable[[], Awaitable[Storage]], timeout_seconds: float) -> HealthReport:
    """Check Blob and Table reachability, each within ``timeout_seconds`` (opening storage included)."""
    try:
        storage = await asyncio.wait_for(open_storage(), timeout_seconds)
    except Exception as exc:  # any failure to connect is the answer, not an error of the check
        LOGGER.warning("Health check: storage could not be opened: %s", _describe(exc))
        return HealthReport((HealthCheck(FILES_CHECK, UNHEALTHY, _BLOB_FAILED),
                             HealthCheck(METADATA_CHECK, UNHEALTHY, _BLOB_FAILED),
                             HealthCheck(INDEX_CHECK, UNHEALTHY, _TABLE_FAILED)))
    checks = await asyncio.gather(
        _bounded(FILES_CHECK, _container_answers(storage.files), timeout_seconds, _BLOB_OK, _BLOB_FAILED),
        _bounded(METADATA_CHECK, _container_answers(storage.metadata), timeout_seconds, _BLOB_OK, _BLOB_FAILED),
        _bounded(INDEX_CHECK, _table_answers(storage), timeout_seconds, _TABLE_OK, _TABLE_FAILED),
    )
    return HealthReport(tuple(checks))


async def _bounded(name: str, probe: Awaitable[None], timeout_seconds: float, ok: str, failed: str) -> HealthCheck:
    try:
        await asyncio.wait_for(probe, timeout_seconds)
    except Exception as exc:
        LOGGER.warning("Health check %s failed: %s", name, _describe(exc))
        return HealthCheck(name, UNHEALTHY, failed)
    return HealthCheck(name, HEALTHY, ok)


async def _container_answers(container: ContainerClient) -> None:
    await container.get_container_properties()


async def _table_answers(storage: Storage) -> None:
    await asyncio.gather(*(_table_answer(shard) for shard in storage.studies.shards))


async def _table_answer(table: TableClient) -> None:
    try:
        await table.get_entity(_PROBE_PARTITION, _PROBE_ROW)
    except ResourceNotFoundError as exc:
        if error_code(exc) == "TableNotFound":
            raise


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
