"""Fixtures for service-level tests that call dicom_core directly against the session's Azurite."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from dicom_core.settings import Settings
from dicom_core.storage.clients import Storage, open_storage
from tests.processes import TEST_TABLE_SHARDS


@pytest.fixture(scope="session")
def unit_settings(azurite) -> Settings:
    """Settings with their own containers and tables, apart from the HTTP server's."""
    return Settings(
        storage_connection_string=azurite.connection_string, blob_container="unit-files",
        metadata_container="unit-metadata", table_prefix="unit", table_shards=TEST_TABLE_SHARDS,
    )


@pytest.fixture(scope="session")
async def storage(unit_settings: Settings) -> AsyncIterator[Storage]:
    """A Storage opened once for the session."""
    opened = await open_storage(unit_settings)
    yield opened
    await opened.close()


@pytest.fixture
async def small_part_storage(unit_settings: Settings) -> AsyncIterator[Storage]:
    """A Storage whose settings allow parts of at most 4 KiB."""
    opened = await open_storage(replace(unit_settings, max_part_bytes=4096))
    yield opened
    await opened.close()


@pytest.fixture
async def own(unit_settings: Settings) -> AsyncIterator[Storage]:
    """Storage with tables and containers of this test's own: what a test counts or checks is its own data only."""
    suffix = uuid.uuid4().hex[:10]
    opened = await open_storage(replace(unit_settings, table_prefix=f"own{suffix}", blob_container=f"own-{suffix}",
                                        metadata_container=f"ownm-{suffix}"))
    yield opened
    await opened.close()
