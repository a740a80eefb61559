"""Tables a feature keeps beside the core ones (operations, extended query tags): created on first use per Storage."""

from __future__ import annotations

import asyncio

from azure.data.tables.aio import TableClient

from dicom_core.storage.clients import Storage, table_name

# (id of the Storage, suffix) -> (the Storage, kept so its id is not reused while cached, and the client).
_clients: dict[tuple[int, str], tuple[Storage, TableClient]] = {}
_locks: dict[tuple[int, str], asyncio.Lock] = {}


async def named_table(storage: Storage, suffix: str) -> TableClient:
    """The Table ``{prefix}{suffix}`` of ``storage``, created if it does not exist (once per process)."""
    key = (id(storage), suffix)
    if (known := _clients.get(key)) is not None and known[0] is storage:
        return known[1]
    async with _locks.setdefault(key, asyncio.Lock()):
        if (known := _clients.get(key)) is not None and known[0] is storage:
            return known[1]
        name = table_name(storage.settings, suffix)
        await storage.table_service.create_table_if_not_exists(name)
        client = storage.table_service.get_table_client(name)
        _clients[key] = (storage, client)
        return client


def existing_table(storage: Storage, suffix: str) -> TableClient:
    """The Table ``{prefix}{suffix}`` of ``storage`` without creating it (a read of a missing one raises not found)."""
    return storage.table_service.get_table_client(table_name(storage.settings, suffix))
