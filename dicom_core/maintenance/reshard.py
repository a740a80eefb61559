"""Move every partition of the Studies and Index tables into its shard: `python -m dicom_core.maintenance.reshard`.

Data written before the tables were sharded (or under another DICOMWEB_TABLE_SHARDS, or before index kinds had
Tables of their own) sits in a Table that its partition no longer names, where reads do not look. This reads every
table of the family (``{prefix}Studies``, ``{prefix}Studies1``…, whichever exist, also beyond the shard count, and
the kinds' own Tables) and moves each entity
that is not in its shard there: a transaction of creates (up to 100 entities of one partition) in the shard,
then a transaction of deletes in the old table, each only if the entity is unchanged since it was read (If-Match).

Safe to re-run, and to run after a crash: an entity found in both places is deleted from the old table when the
copies are equal, and left there (reported as a conflict) when they differ. Run it with the app stopped: a store
into a study that is not moved yet would start a new study partition in its shard. Exits 1 when something was
left behind (a conflict, or an entity that changed while it was moved), so that it is run again.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.data.tables import TableEntity, TableTransactionError
from azure.data.tables.aio import TableClient

from dicom_core.settings import Settings
from dicom_core.storage.clients import Storage, open_storage
from dicom_core.storage.faults import error_code
from dicom_core.storage.sharded_table import ShardedTable
from dicom_core.storage.tables import etag_of, unchanged_since

MAX_OPERATIONS = 100  # the most an entity-group transaction holds
# Characters of the entities of one transaction: well within the 4 MiB payload (JSON escaping adds about a third).
MAX_TRANSACTION_CHARS = 2_000_000
MOVES_IN_FLIGHT = 8
_EXISTS = "EntityAlreadyExists"
_PRECONDITION_FAILED = 412


@dataclass
class ReshardReport:
    """What a run found and did."""

    moved: int = 0  # copied into their shard and deleted from the old table
    misplaced: int = 0  # found outside their shard (a dry run moves none)
    conflicts: list[str] = field(default_factory=list)  # in both places, different: left in the old table
    changed: int = 0  # changed in the old table while moved: left there, for the next run
    # Tables beyond the shard count, emptied and deleted: left there, they would make the next open that has no
    # DICOMWEB_TABLE_SHARDS take their count (`stored_shard_count`).
    emptied: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Whether every entity is in its shard now."""
        return not self.conflicts and not self.changed


async def reshard(storage: Storage, *, dry_run: bool = False) -> ReshardReport:
    """Move the entities of ``storage``'s sharded tables that are not in their partition's shard into it."""
    report = ReshardReport()
    existing = {table.name async for table in storage.table_service.list_tables()}
    for table in (storage.studies, storage.index):
        for name in _family(table, existing):
            async with storage.table_service.get_table_client(name) as source:
                left = await _move_misplaced(source, table, report, dry_run=dry_run)
            if name not in {shard.table_name for shard in table.shards} and not left and not dry_run:
                await storage.table_service.delete_table(name)
                report.emptied.append(name)
    return report


def _family(table: ShardedTable, existing: set[str]) -> list[str]:
    """The existing tables ``name``, ``name1``, ``name2``… (any count), in shard order, then the kinds' own."""
    pattern = re.compile(re.escape(table.table_name) + r"([1-9][0-9]*)?")
    found = [(int(match.group(1) or 0), name) for name in existing if (match := pattern.fullmatch(name))]
    return [name for _, name in sorted(found)] + [own.table_name for own in table.kinds.values()
                                                   if own.table_name in existing]


async def _move_misplaced(source: TableClient, table: ShardedTable, report: ReshardReport, *, dry_run: bool) -> int:
    """Move the entities of ``source`` that belong to another shard; the number left in ``source``."""
    slots = asyncio.Semaphore(MOVES_IN_FLIGHT)
    left, unmoved_before = 0, len(report.conflicts) + report.changed

    async def move(target: TableClient, chunk: list[TableEntity]) -> None:
        try:
            await _move(source, target, chunk, report)
        finally:
            slots.release()

    async with asyncio.TaskGroup() as moves:
        async for target, chunk in _misplaced_chunks(source, table):
            if target is None:
                left += len(chunk)
                continue
            report.misplaced += len(chunk)
            if dry_run:
                left += len(chunk)
                continue
            await slots.acquire()
            moves.create_task(move(target, chunk))
    return left + len(report.conflicts) + report.changed - unmoved_before


async def _misplaced_chunks(
    source: TableClient, table: ShardedTable,
) -> AsyncIterator[tuple[TableClient | None, list[TableEntity]]]:
    """``source``'s entities in one-partition chunks a transaction holds, with their shard (None: ``source``)."""
    # A listing comes in key order: the entities of a partition come together.
    chunk: list[TableEntity] = []
    chars = 0
    target: TableClient | None = None
    async for entity in source.list_entities():
        size = sum(len(str(name)) + len(str(value)) for name, value in entity.items())
        if chunk and (entity["PartitionKey"] != chunk[0]["PartitionKey"] or len(chunk) == MAX_OPERATIONS
                      or chars + size > MAX_TRANSACTION_CHARS):
            yield target, chunk
            chunk, chars = [], 0
        if not chunk:
            shard = table.shard_of(str(entity["PartitionKey"]))
            target = None if shard.table_name == source.table_name else shard
        chunk.append(entity)
        chars += size
    if chunk:
        yield target, chunk


async def _move(source: TableClient, target: TableClient, entities: Sequence[TableEntity],
                report: ReshardReport) -> None:
    """Copy ``entities`` (one partition's) into ``target``, then delete from ``source`` those now in both."""
    copied = await _copy(target, entities, report)
    if not copied:
        return
    try:
        await source.submit_transaction([("delete", entity, unchanged_since(etag_of(entity))) for entity in copied])
        report.moved += len(copied)
        return
    except TableTransactionError:
        pass  # one changed since it was read (or is gone): each on its own
    for entity in copied:
        try:
            await source.delete_entity(entity["PartitionKey"], entity["RowKey"], **unchanged_since(etag_of(entity)))
            report.moved += 1
        except HttpResponseError as exc:
            if exc.status_code != _PRECONDITION_FAILED:
                raise
            report.changed += 1


async def _copy(target: TableClient, entities: Sequence[TableEntity], report: ReshardReport) -> list[TableEntity]:
    """Create ``entities`` in ``target``; those now there (created, or found equal), the others reported."""
    try:
        await target.submit_transaction([("create", entity) for entity in entities])
        return list(entities)
    except TableTransactionError as exc:
        if error_code(exc) != _EXISTS:
            raise
    copied = []
    for entity in entities:  # some are there already: an earlier run copied them (or the app wrote them)
        try:
            await target.create_entity(entity)
            copied.append(entity)
        except ResourceExistsError:
            there = await target.get_entity(entity["PartitionKey"], entity["RowKey"])
            if dict(there) == dict(entity):
                copied.append(entity)
            else:
                report.conflicts.append(f"{entity['PartitionKey']}/{entity['RowKey']}: {target.table_name} "
                                        "holds another version; the old one is left where it was")
    return copied


async def _main(dry_run: bool) -> int:
    settings = Settings.from_environment()
    storage = await open_storage(settings, keep_placement=False)
    try:
        report = await reshard(storage, dry_run=dry_run)
    finally:
        await storage.close()
    for conflict in report.conflicts:
        print(f"conflict: {conflict}")
    shards = storage.settings.table_shards
    if dry_run:
        print(f"{report.misplaced} entities outside their shard ({shards} shards); nothing moved")
        return 0
    print(f"moved {report.moved} of {report.misplaced} entities outside their shard ({shards} shards)"
          f"; {len(report.conflicts)} conflict(s), {report.changed} changed meanwhile")
    for name in report.emptied:
        print(f"{name} was beyond the shard count: emptied and deleted")
    return 0 if report.complete else 1


def main(argv: list[str] | None = None) -> None:
    """Command line: reshard the storage the environment's settings name; exit 1 if anything was left behind."""
    parser = argparse.ArgumentParser(prog="python -m dicom_core.maintenance.reshard",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dry-run", action="store_true", help="count the entities outside their shard; move none")
    arguments = parser.parse_args(argv)
    sys.exit(asyncio.run(_main(arguments.dry_run)))


if __name__ == "__main__":
    main()
