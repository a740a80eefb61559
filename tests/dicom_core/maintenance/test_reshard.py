"""Resharding: the entities of single tables (or of another shard count) moved into their shards, idempotently."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from azure.data.tables import EdmType, EntityProperty
from pydicom.uid import generate_uid

from dicom_core.index.reads import get_study_row
from dicom_core.maintenance.consistency import check_consistency
from dicom_core.maintenance.reshard import reshard
from dicom_core.settings import Settings
from dicom_core.storage.clients import Storage, open_storage
from dicom_core.storage.sharded_table import ShardedTable, partition_kind, shard_index, shard_names
from tests.factories import make_instance

REPO_ROOT = Path(__file__).resolve().parents[3]
TYPED = {"Text": "x", "Number": 7, "Big": EntityProperty(2**40, EdmType.INT64), "Ratio": 0.5, "Flag": True,
         "When": datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC), "Bytes": b"\x00\x01"}


@pytest.fixture
def settings(unit_settings: Settings) -> Settings:
    """Settings of this test's own tables, unsharded."""
    suffix = uuid.uuid4().hex[:10]
    return replace(unit_settings, table_prefix=f"rs{suffix}", blob_container=f"rs-{suffix}",
                   metadata_container=f"rsm-{suffix}", table_shards=1)


@pytest.fixture
async def single(settings: Settings, stow_parts) -> AsyncIterator[tuple[Storage, list[str]]]:
    """Unsharded storage: a few stored studies (rows, entries), an entity of every type, a 250-entity partition."""
    opened = await open_storage(settings)
    studies = [str(generate_uid()) for _ in range(6)]
    parts = [make_instance(study=study, series=str(generate_uid()), Modality="CT") for study in studies]
    assert (await stow_parts(opened, parts)).status == 200
    await opened.studies.create_entity({"PartitionKey": "typed", "RowKey": "all", **TYPED})
    big = next(f"big{number}" for number in range(100) if shard_index(f"big{number}", 4) != 0)
    for start in range(0, 250, 100):  # more than one transaction's worth
        await opened.index.submit_transaction([("create", {"PartitionKey": big, "RowKey": f"{row:03}"})
                                               for row in range(start, min(start + 100, 250))])
    yield opened, studies
    await opened.close()


async def _sharded(settings: Settings, shards: int) -> Storage:
    return await open_storage(replace(settings, table_shards=shards))


async def _table_rows(storage: Storage, name: str) -> list[dict]:
    async with storage.table_service.get_table_client(name) as table:
        return [dict(entity) async for entity in table.list_entities()]


async def test_the_entities_of_single_tables_move_into_their_shards(settings: Settings, single) -> None:
    old, studies = single
    before = {name: await _table_rows(old, name) for name in (old.studies.table_name, old.index.table_name)}
    sharded = await _sharded(settings, 4)
    try:
        missing = [study for study in studies if await get_study_row(sharded, study) is None]
        assert missing  # 6 studies in 4 shards: some are not in shard 0, where they are now

        report = await reshard(sharded)

        assert report.complete and report.moved == report.misplaced > 0
        for name, rows in before.items():
            shards = shard_names(name, 4)
            after = {index: await _table_rows(sharded, shard) for index, shard in enumerate(shards)}
            assert all(shard_index(row["PartitionKey"], 4) == index for index, held in after.items() for row in held)
            assert sorted(map(repr, (row for held in after.values() for row in held))) == sorted(map(repr, rows))
        assert None not in [await get_study_row(sharded, study) for study in studies]
        assert dict(await sharded.studies.get_entity("typed", "all")) == {"PartitionKey": "typed", "RowKey": "all",
                                                                          **TYPED}
        assert await check_consistency(sharded) == []

        again = await reshard(sharded)
        assert (again.misplaced, again.moved, again.complete) == (0, 0, True)
    finally:
        await sharded.close()


async def test_index_entries_stored_before_their_kinds_had_tables_of_their_own_move_into_them(
    settings: Settings, stow_parts,
) -> None:
    new = await open_storage(settings)
    # The layout before: every index partition hashed into the shards, whatever its kind.
    old = replace(new, index=ShardedTable.of_service(new.table_service, new.index.table_name, settings.table_shards))
    try:
        parts = [make_instance(study=str(generate_uid()), Modality="CT", PatientName="Doe^Jane") for _ in range(3)]
        assert (await stow_parts(old, parts)).status == 200
        assert [await _table_rows(new, table.table_name) for table in new.index.kinds.values()] == \
            [[]] * len(new.index.kinds)

        report = await reshard(new)

        assert report.complete and report.moved == report.misplaced > 0
        for kind, table in new.index.kinds.items():
            assert {partition_kind(row["PartitionKey"]) for row in await _table_rows(new, table.table_name)} <= {kind}
        assert len(await _table_rows(new, new.index.kinds["s.all"].table_name)) == 3
        hashed = await _table_rows(new, new.index.table_name)
        assert hashed and not {partition_kind(row["PartitionKey"]) for row in hashed} & set(new.index.kinds)
        assert await check_consistency(new) == []
    finally:
        await new.close()


async def test_a_copy_left_by_an_interrupted_run_is_finished_and_a_different_one_is_left(
    settings: Settings, single,
) -> None:
    old, _ = single
    sharded = await _sharded(settings, 4)
    try:
        moved = [f"p{number}" for number in range(40) if shard_index(f"p{number}", 4) != 0][:2]
        for partition in moved:
            await old.studies.create_entity({"PartitionKey": partition, "RowKey": "r", "Value": 1})
        # The first as an interrupted run left it (copied, not deleted); the second written anew in its shard.
        await sharded.studies.create_entity({"PartitionKey": moved[0], "RowKey": "r", "Value": 1})
        await sharded.studies.create_entity({"PartitionKey": moved[1], "RowKey": "r", "Value": 2})

        report = await reshard(sharded)

        assert not report.complete and len(report.conflicts) == 1 and moved[1] in report.conflicts[0]
        old_rows = {row["PartitionKey"]: row for row in await _table_rows(sharded, settings.table_prefix + "Studies")}
        assert moved[0] not in old_rows and old_rows[moved[1]]["Value"] == 1
        assert (await sharded.studies.get_entity(moved[1], "r"))["Value"] == 2
    finally:
        await sharded.close()


async def test_fewer_shards_empty_and_delete_the_tables_beyond_their_count(settings: Settings, single) -> None:
    _, studies = single
    four, two = await _sharded(settings, 4), await _sharded(settings, 2)
    try:
        assert (await reshard(four)).complete
        report = await reshard(two)
        assert report.complete and report.moved > 0
        beyond = [f"{settings.table_prefix}{family}{index}" for family in ("Index", "Studies") for index in (2, 3)]
        assert sorted(report.emptied) == beyond
        left = {table.name async for table in two.table_service.list_tables()}
        assert not left & set(beyond)
        assert None not in [await get_study_row(two, study) for study in studies]
    finally:
        await four.close()
        await two.close()


async def test_command_counts_in_a_dry_run_then_moves(settings: Settings, single, azurite) -> None:
    env = {"DICOMWEB_STORAGE_CONNECTION_STRING": azurite.connection_string, "PATH": "",
           "DICOMWEB_TABLE_PREFIX": settings.table_prefix, "DICOMWEB_TABLE_SHARDS": "4",
           "DICOMWEB_BLOB_CONTAINER": settings.blob_container,
           "DICOMWEB_METADATA_CONTAINER": settings.metadata_container}
    command = [sys.executable, "-m", "dicom_core.maintenance.reshard"]

    dry = subprocess.run([*command, "--dry-run"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert dry.returncode == 0, dry.stderr
    count = int(dry.stdout.split()[0])
    assert count > 0 and dry.stdout.strip().endswith("nothing moved")

    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"moved {count} of {count} entities")


async def test_an_index_written_before_its_kinds_had_tables_is_used_where_it_is_until_the_reshard(
    settings: Settings,
) -> None:
    entry = {"PartitionKey": "s.all", "RowKey": "0001|1.2.3"}
    first = await open_storage(settings, keep_placement=False)
    try:
        # An archive of the version before: its index shards exist, no kind has a Table of its own.
        for table in first.index.kinds.values():
            await first.table_service.delete_table(table.table_name)
        await first.index.hashed[0].create_entity(entry)
    finally:
        await first.close()

    kept = await open_storage(settings)
    try:
        assert not kept.index.kinds
        assert [dict(row) async for row in kept.index.query_entities(
            "PartitionKey eq @pk", parameters={"pk": "s.all"})] == [entry]
        assert not {table.table_name for table in first.index.kinds.values()} & {
            table.name async for table in kept.table_service.list_tables()}
    finally:
        await kept.close()

    moving = await open_storage(settings, keep_placement=False)
    try:
        assert (await reshard(moving)).moved == 1
    finally:
        await moving.close()
    moved = await open_storage(settings)
    try:
        assert moved.index.kinds
        assert [dict(row) async for row in moved.index.query_entities(
            "PartitionKey eq @pk", parameters={"pk": "s.all"})] == [entry]
    finally:
        await moved.close()
