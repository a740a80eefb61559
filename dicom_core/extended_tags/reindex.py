"""The background work of extended query tags: indexing what is stored (reindex) and removing a deleted tag.

Reindex walks every instance row of the Studies table, shard after shard, up to ``CHUNK_INSTANCES`` rows per chunk
(from the next shards too when a shard's page is short); its checkpoint holds the shard, the page's continuation
token and the counts. Each instance's value is read from its row's copy of its metadata (or its metadata blob),
checked against the VR, and indexed (`search_index.extended`: a study's or series's value is the latest stored
instance's, whichever chunk meets it first) or recorded as an error; both are writes of fixed keys, so a chunk
redone after a crash changes nothing.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableEntity

from dicom_core.extended_tags.indexing import REGISTRY_SECONDS
from dicom_core.extended_tags.registry import (
    ExtendedTag,
    QueryStatus,
    TagStatus,
    error_count,
    get_tag,
    record_errors,
    remove_errors,
    remove_tag,
    save_tag,
)
from dicom_core.index.instance_metadata import metadata_of_row
from dicom_core.index.reads import stored_instance
from dicom_core.index.rows import ROW_METADATA, STUDY_ROW
from dicom_core.model.identifiers import InstanceIdentifiers
from dicom_core.model.levels import Level
from dicom_core.operations.records import Operation
from dicom_core.operations.runner import Step, register_handler
from dicom_core.search_index.extended import entries_of, remove_entries, write_entries
from dicom_core.search_index.extended_values import InvalidValueError
from dicom_core.storage.clients import Storage
from dicom_core.storage.concurrency import bounded_gather

REINDEX = "reindex"
DELETE_TAG = "deleteExtendedQueryTag"
CHUNK_INSTANCES = 50
# Metadata reads in flight: few, so concurrent stores and searches keep their pace (with 4, STOW during a reindex
# kept 0.41-0.48x of its pace alone; with 2, 0.63-0.68x).
READ_CONCURRENCY = 2
_INSTANCE_ROWS = "RowKey gt 'instance|' and RowKey lt 'instance}'"
# The walk starts this long after the tags were added: every store that began before then has read a registry
# that holds them (its copy is at most `indexing.REGISTRY_SECONDS` old), so it indexes them itself.
START_DELAY_SECONDS = 3 * REGISTRY_SECONDS


def reindex_checkpoint(paths: list[str]) -> dict[str, Any]:
    """The checkpoint a new reindex of ``paths`` starts from."""
    return {"tags": paths, "shard": 0, "token": None, "processed": 0, "total": None, "errors": 0}


async def reindex_step(storage: Storage, operation: Operation) -> Step:
    """One chunk of a reindex: count the instances first, then a page of instance rows per call."""
    point = dict(operation.checkpoint)
    if point["total"] is None:
        point["total"] = await _count_instances(storage)
        waited = (datetime.now(UTC) - operation.created).total_seconds()
        await asyncio.sleep(max(0.0, START_DELAY_SECONDS - waited))
        return Step(point, 0)
    tags = [tag for tag in await asyncio.gather(*(get_tag(storage, path) for path in point["tags"]))
            if tag is not None and tag.status is TagStatus.ADDING and tag.operation_id == operation.id]
    shards = storage.studies.shards
    if point["shard"] >= len(shards) or not tags:
        await _finish(storage, tags)
        return Step(point, 100, done=True)
    rows: list[TableEntity] = []
    # A shard's last page may be short (with many shards, each holds few instances): the next shards fill the chunk.
    while point["shard"] < len(shards) and len(rows) < CHUNK_INSTANCES:
        pages = shards[point["shard"]].query_entities(
            _INSTANCE_ROWS, select=["PartitionKey", "RowKey", "Version", ROW_METADATA],
            results_per_page=CHUNK_INSTANCES - len(rows),
        ).by_page(continuation_token=point["token"])
        try:
            rows += [row async for row in await anext(pages)]
        except (ResourceNotFoundError, StopAsyncIteration):
            pass
        token = getattr(pages, "continuation_token", None)
        point["shard"], point["token"] = (point["shard"], token) if token else (point["shard"] + 1, None)
    point["errors"] += await _index_rows(storage, tags, rows)
    point["processed"] += len(rows)
    total = max(point["total"], 1)
    return Step(point, min(99, point["processed"] * 100 // total))


async def _count_instances(storage: Storage) -> int:
    total = 0
    for shard in storage.studies.shards:
        try:
            async for row in shard.query_entities("RowKey eq @r", parameters={"r": STUDY_ROW},
                                                  select=["InstanceCount"]):
                total += int(row.get("InstanceCount") or 0)
        except ResourceNotFoundError:
            continue
    return total


async def _index_rows(storage: Storage, tags: list[ExtendedTag], rows: list[TableEntity]) -> int:
    """Index ``tags`` for the instances of ``rows``; how many values failed validation."""
    stored = [stored_instance(str(row["PartitionKey"]), row) for row in rows]
    documents = await bounded_gather((metadata_of_row(storage, s, row) for s, row in zip(stored, rows, strict=True)),
                                     limit=READ_CONCURRENCY)
    entries: list[dict[str, Any]] = []
    errors: dict[str, list[tuple[InstanceIdentifiers, str]]] = {}
    for instance, document in zip(stored, documents, strict=True):
        if document is None:
            continue  # deleted since its row was read
        metadata = json.loads(document)
        for tag in tags:
            try:
                entries += entries_of(instance, tag.indexed, metadata)
            except InvalidValueError as exc:
                errors.setdefault(tag.path, []).append((instance.ids, str(exc)))
    await write_entries(storage, entries)
    for path, failed in errors.items():
        await record_errors(storage, path, failed)
    return sum(len(failed) for failed in errors.values())


async def _finish(storage: Storage, tags: list[ExtendedTag]) -> None:
    """Make the reindexed tags Ready; one with errors gets QueryStatus Disabled, as in Azure's service."""
    for tag in tags:
        errors = await error_count(storage, tag.path)
        current: ExtendedTag | None = tag
        while current is not None and current.status is TagStatus.ADDING:
            query_status = QueryStatus.DISABLED if errors else current.query_status
            try:
                await save_tag(storage, replace(current, status=TagStatus.READY, query_status=query_status))
                break
            except ResourceModifiedError:
                current = await get_tag(storage, tag.path)  # patched or deleted meanwhile: read it again


def delete_checkpoint(tag: ExtendedTag) -> dict[str, Any]:
    """The checkpoint of the removal of ``tag``'s entries and errors."""
    return {"path": tag.path, "vr": tag.vr, "level": tag.level.value, "deleted": 0}


async def delete_step(storage: Storage, operation: Operation) -> Step:
    """One chunk of a tag's removal: some of its entries, then its errors, then its registry row."""
    point = dict(operation.checkpoint)
    tag = ExtendedTag(point["path"], point["vr"], Level(point["level"]))
    deleted = await remove_entries(storage, tag.indexed)
    if not deleted:
        deleted = await remove_errors(storage, tag.path)
    point["deleted"] += deleted
    if deleted:
        return Step(point, 50)
    await remove_tag(storage, tag.path)
    return Step(point, 100, done=True)


register_handler(REINDEX, reindex_step)
register_handler(DELETE_TAG, delete_step)
