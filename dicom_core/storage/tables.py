"""Table reads and deletes where "not there" is an answer, not an error: a missing entity or table reads as none."""

from __future__ import annotations

from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableEntity, UpdateMode
from azure.data.tables.aio import TableClient


async def get_entity_or_none(
    table: TableClient, partition: str, row: str, select: list[str] | None = None,
) -> TableEntity | None:
    """Return one entity (only the ``select`` properties, if given), or None when it or its table does not exist."""
    try:
        return await table.get_entity(partition, row, select=select)
    except ResourceNotFoundError:
        return None


async def delete_entity_quietly(table: TableClient, partition: str, row: str) -> None:
    """Delete one entity; one that is gone already (or whose table is) is fine."""
    try:
        await table.delete_entity(partition, row)
    except ResourceNotFoundError:
        pass


async def query_all(
    table: TableClient, query: str, *, parameters: dict[str, Any], select: list[str] | None = None,
) -> list[TableEntity]:
    """Return every entity ``query`` matches (only the ``select`` properties, if given); none when the table is gone."""
    try:
        return [entity async for entity in table.query_entities(query, parameters=parameters, select=select)]
    except ResourceNotFoundError:
        return []


# One operation of an entity-group transaction: (kind, entity) or (kind, entity, keyword arguments).
Operation = tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], dict[str, Any]]


def etag_of(entity: TableEntity) -> str:
    """Return the ETag the service gave ``entity`` when it was read."""
    etag = entity.metadata.get("etag")
    if etag is None:
        raise ValueError("the entity was not read from the service: it has no ETag")
    return str(etag)


def unchanged_since(etag: str) -> dict[str, Any]:
    """The keyword arguments of a write that must fail unless the entity still has ``etag`` (If-Match)."""
    return {"etag": etag, "match_condition": MatchConditions.IfNotModified}


def replace_if_unchanged(entity: dict[str, Any], etag: str) -> Operation:
    """A transaction operation replacing ``entity`` only while it still has ``etag``."""
    return ("update", entity, {"mode": UpdateMode.REPLACE, **unchanged_since(etag)})
