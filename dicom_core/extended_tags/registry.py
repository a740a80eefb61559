"""The registry of extended query tags in the Table `{prefix}ExtendedTags`: a row per tag, a row per indexing error.

Tag rows: PartitionKey ``tag``, RowKey the path (8 hex digits). Error rows: PartitionKey ``errors|{path}``,
RowKey ``{study}|{series}|{instance}`` (one per instance, so recording an error again changes nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from azure.data.tables import TableEntity, UpdateMode
from azure.data.tables.aio import TableClient

from dicom_core.model.identifiers import InstanceIdentifiers
from dicom_core.model.levels import Level
from dicom_core.search_index.extended import IndexedTag
from dicom_core.storage.batch_deletes import RowDelete, delete_rows
from dicom_core.storage.clients import Storage
from dicom_core.storage.named_tables import named_table
from dicom_core.storage.tables import delete_entity_quietly, etag_of, get_entity_or_none, query_all, unchanged_since

TAGS_TABLE = "ExtendedTags"
TAG_PARTITION = "tag"
MAX_TAGS = 128


class TagStatus(StrEnum):
    """Where a tag is in its life (Azure's JSON values)."""

    ADDING = "adding"
    READY = "ready"
    DELETING = "deleting"


class QueryStatus(StrEnum):
    """Whether searches may filter on the tag."""

    ENABLED = "enabled"
    DISABLED = "disabled"


@dataclass(frozen=True)
class ExtendedTag:
    """A registered extended query tag."""

    path: str
    vr: str
    level: Level
    private_creator: str | None = None
    status: TagStatus = TagStatus.ADDING
    query_status: QueryStatus = QueryStatus.ENABLED
    operation_id: str = ""
    etag: str = ""

    @property
    def indexed(self) -> IndexedTag:
        """What indexing needs of the tag."""
        return IndexedTag(self.path, self.vr, self.level, self.private_creator)


@dataclass(frozen=True)
class TagError:
    """An instance whose value of the tag failed validation."""

    ids: InstanceIdentifiers
    created: datetime
    message: str


async def tags_table(storage: Storage) -> TableClient:
    """The ExtendedTags Table of ``storage`` (created on first use)."""
    return await named_table(storage, TAGS_TABLE)


async def all_tags(storage: Storage) -> list[ExtendedTag]:
    """Every registered tag, by path."""
    entities = await query_all(await tags_table(storage), "PartitionKey eq @p", parameters={"p": TAG_PARTITION})
    return [_tag(entity) for entity in entities]


async def get_tag(storage: Storage, path: str) -> ExtendedTag | None:
    """The tag with this path, or None."""
    entity = await get_entity_or_none(await tags_table(storage), TAG_PARTITION, path)
    return _tag(entity) if entity is not None else None


async def create_tags(storage: Storage, tags: list[ExtendedTag]) -> None:
    """Insert new tag rows in one transaction (ResourceExistsError-like failure when one exists)."""
    table = await tags_table(storage)
    await table.submit_transaction([("create", _entity(tag)) for tag in tags])


async def save_tag(storage: Storage, tag: ExtendedTag) -> ExtendedTag:
    """Replace a tag row if unchanged since it was read (ResourceModifiedError otherwise)."""
    table = await tags_table(storage)
    written = await table.update_entity(_entity(tag), mode=UpdateMode.REPLACE, **unchanged_since(tag.etag))
    return replace(tag, etag=str(written.get("etag", "")))


async def remove_tag(storage: Storage, path: str) -> None:
    """Delete a tag row."""
    await delete_entity_quietly(await tags_table(storage), TAG_PARTITION, path)


def errors_partition(path: str) -> str:
    """The partition of a tag's error rows."""
    return f"errors|{path}"


async def record_errors(storage: Storage, path: str, errors: list[tuple[InstanceIdentifiers, str]]) -> None:
    """Record (upsert) the instances whose value of the tag failed validation."""
    table, now = await tags_table(storage), datetime.now(UTC)
    for start in range(0, len(errors), 100):
        await table.submit_transaction([("upsert", {
            "PartitionKey": errors_partition(path), "RowKey": f"{ids.study}|{ids.series}|{ids.instance}",
            "CreatedTime": now, "ErrorMessage": message,
        }) for ids, message in errors[start:start + 100]])


async def tag_errors(storage: Storage, path: str) -> list[TagError]:
    """The errors of a tag, by instance."""
    entities = await query_all(await tags_table(storage), "PartitionKey eq @p",
                               parameters={"p": errors_partition(path)})
    return [TagError(InstanceIdentifiers(*str(e["RowKey"]).split("|", 2)), e["CreatedTime"], str(e["ErrorMessage"]))
            for e in entities]


async def error_count(storage: Storage, path: str) -> int:
    """How many instances failed validation for the tag."""
    rows = await query_all(await tags_table(storage), "PartitionKey eq @p", parameters={"p": errors_partition(path)},
                           select=["RowKey"])
    return len(rows)


async def remove_errors(storage: Storage, path: str, *, limit: int = 500) -> int:
    """Delete up to ``limit`` error rows of a tag; how many were deleted."""
    table = await tags_table(storage)
    rows = (await query_all(table, "PartitionKey eq @p", parameters={"p": errors_partition(path)},
                            select=["RowKey"]))[:limit]
    return await delete_rows(table, errors_partition(path), [RowDelete(str(row["RowKey"])) for row in rows])


def _entity(tag: ExtendedTag) -> dict[str, Any]:
    return {"PartitionKey": TAG_PARTITION, "RowKey": tag.path, "Vr": tag.vr, "Level": tag.level.value,
            "PrivateCreator": tag.private_creator or "", "Status": tag.status.value,
            "QueryStatus": tag.query_status.value, "OperationId": tag.operation_id}


def _tag(entity: TableEntity) -> ExtendedTag:
    return ExtendedTag(
        path=str(entity["RowKey"]), vr=str(entity["Vr"]), level=Level(str(entity["Level"])),
        private_creator=str(entity.get("PrivateCreator") or "") or None, status=TagStatus(str(entity["Status"])),
        query_status=QueryStatus(str(entity["QueryStatus"])), operation_id=str(entity.get("OperationId") or ""),
        etag=etag_of(entity),
    )
