"""The health check against the session's Azurite, and against storage that is missing or unreachable."""

from __future__ import annotations

import socket
from dataclasses import replace

from dicom_core.edge.health import FILES_CHECK, HEALTHY, INDEX_CHECK, METADATA_CHECK, UNHEALTHY, check_health
from dicom_core.settings import Settings, azurite_connection_string
from dicom_core.storage.clients import Storage, open_storage


async def test_reachable_storage_is_healthy_with_every_check_named(storage: Storage) -> None:
    async def opened() -> Storage:
        return storage

    report = await check_health(opened, timeout_seconds=10)
    assert report.to_json() == {
        "overallStatus": HEALTHY,
        "details": [
            {"name": FILES_CHECK, "status": HEALTHY, "description": "Successfully connected to the blob data store."},
            {"name": METADATA_CHECK, "status": HEALTHY,
             "description": "Successfully connected to the blob data store."},
            {"name": INDEX_CHECK, "status": HEALTHY, "description": "Successfully connected to the table data store."},
        ],
    }
    assert report.http_status == 200


async def test_a_missing_table_makes_only_the_index_check_unhealthy(unit_settings: Settings) -> None:
    own = await open_storage(replace(unit_settings, table_prefix="healthmissing"))
    try:
        await own.table_service.delete_table(own.studies.table_name)

        async def opened() -> Storage:
            return own

        report = await check_health(opened, timeout_seconds=10)
        statuses = {check.name: check.status for check in report.details}
        assert statuses == {FILES_CHECK: HEALTHY, METADATA_CHECK: HEALTHY, INDEX_CHECK: UNHEALTHY}
        assert (report.overall_status, report.http_status) == (UNHEALTHY, 503)
    finally:
        await own.close()


async def test_unreachable_storage_is_unhealthy_within_the_timeout(unit_settings: Settings) -> None:
    with socket.socket() as unused:  # bound, never listening: connections are refused
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        settings = replace(unit_settings, storage_connection_string=azurite_connection_string(
            blob_port=port, table_port=port))
        opened: list[Storage] = []

        async def opening() -> Storage:
            storage = await open_storage(settings)
            opened.append(storage)
            return storage

        report = await check_health(opening, timeout_seconds=1)
    assert [check.status for check in report.details] == [UNHEALTHY] * 3
    assert report.http_status == 503
    assert opened == []
