"""Storage clients (Blob containers and Tables), created once per event loop and made to exist."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables.aio import TableClient, TableServiceClient
from azure.storage.blob.aio import BlobServiceClient, ContainerClient

from .settings import Settings

LOGGER = logging.getLogger(__name__)
T = TypeVar("T")

_MISSING_RESOURCE_CODES = frozenset({"ContainerNotFound", "TableNotFound"})


@dataclass
class Storage:
    """The service's storage: instance files and metadata in Blob Storage, the index in Table Storage."""

    settings: Settings
    blob_service: BlobServiceClient
    table_service: TableServiceClient
    files: ContainerClient
    metadata: ContainerClient
    studies: TableClient

    async def ensure_created(self) -> None:
        """Create the containers and tables if they do not exist (idempotent)."""
        await asyncio.gather(
            *(_create_container(c) for c in (self.files, self.metadata)),
            *(self.table_service.create_table_if_not_exists(t.table_name) for t in (self.studies,)),
        )

    async def close(self) -> None:
        """Close the underlying HTTP sessions."""
        await asyncio.gather(
            self.files.close(), self.metadata.close(), self.studies.close(),
            self.blob_service.close(), self.table_service.close(),
        )

    async def recreating_missing(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run a write; if a container or table was deleted under us, create it again and retry once."""
        try:
            return await operation()
        except ResourceNotFoundError as exc:
            if getattr(exc, "error_code", None) not in _MISSING_RESOURCE_CODES:
                raise
            LOGGER.warning("Storage resource missing (%s); creating it again", exc.error_code)
            await self.ensure_created()
            return await operation()


def table_name(settings: Settings, suffix: str) -> str:
    """Return the Table name for ``suffix`` under the configured prefix (alphanumeric, as Tables require)."""
    return f"{settings.table_prefix}{suffix}"


async def open_storage(settings: Settings) -> Storage:
    """Connect to the configured account and make sure every container and table exists."""
    blob_service = BlobServiceClient.from_connection_string(settings.storage_connection_string)
    table_service = TableServiceClient.from_connection_string(settings.storage_connection_string)
    storage = Storage(
        settings=settings,
        blob_service=blob_service,
        table_service=table_service,
        files=blob_service.get_container_client(settings.blob_container),
        metadata=blob_service.get_container_client(settings.metadata_container),
        studies=table_service.get_table_client(table_name(settings, "Studies")),
    )
    await storage.ensure_created()
    return storage


async def _create_container(container: ContainerClient) -> None:
    try:
        await container.create_container()
    except ResourceExistsError:
        pass


_shared: dict[int, Storage] = {}
_lock: dict[int, asyncio.Lock] = {}


async def shared_storage(settings: Settings | None = None) -> Storage:
    """Return this event loop's Storage, opening it on first use (clients are bound to one loop)."""
    loop_id = id(asyncio.get_running_loop())
    storage = _shared.get(loop_id)
    if storage is not None:
        return storage
    lock = _lock.setdefault(loop_id, asyncio.Lock())
    async with lock:
        if loop_id not in _shared:
            _shared[loop_id] = await open_storage(settings or Settings.from_environment())
    return _shared[loop_id]
