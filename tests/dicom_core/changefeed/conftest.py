"""Fixtures of the change feed tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from dicom_core.settings import Settings
from dicom_core.storage.clients import Storage, open_storage
from tests.processes import TEST_TABLE_SHARDS


@pytest.fixture
async def feed_storage(azurite) -> AsyncIterator[Storage]:
    """A Storage with tables and containers of its own: this test's feed starts empty."""
    suffix = uuid.uuid4().hex[:10]
    opened = await open_storage(Settings(
        storage_connection_string=azurite.connection_string, blob_container=f"cf-{suffix}",
        metadata_container=f"cfm-{suffix}", table_prefix=f"cf{suffix}", table_shards=TEST_TABLE_SHARDS,
    ))
    yield opened
    await opened.close()
