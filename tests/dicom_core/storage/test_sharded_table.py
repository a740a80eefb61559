"""A Table kept in shards, against Azurite: each partition in one fixed shard, every operation routed there."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from azure.data.tables import UpdateMode

from dicom_core.settings import Settings
from dicom_core.storage.clients import INDEX_KINDS_OF_THEIR_OWN, Storage, open_storage
from dicom_core.storage.sharded_table import (
    ShardedTable,
    filter_partition,
    kind_table_name,
    partition_kind,
    shard_index,
    shard_names,
    stored_shard_count,
)
from dicom_core.storage.tables import etag_of, read_properties, unchanged_since

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARDS = 4
# Fixed for good: existing tables were filled by this function, so a change would hide their partitions.
KNOWN_SHARDS = {"1.2.840.10008.1": 15, "s.all": 5, "health": 1, "a": 10, "c": 2}


@pytest.fixture
async def own(unit_settings: Settings) -> AsyncIterator[Storage]:
    """Storage of this test's own, its Studies and Index tables in four shards."""
    opened = await open_storage(replace(unit_settings, table_prefix=f"shard{uuid.uuid4().hex[:10]}",
                                        table_shards=SHARDS))
    yield opened
    await opened.close()


def _partitions(table: ShardedTable, count: int = 1, *, shard: int | None = None) -> list[str]:
    """``count`` new partitions (all in ``shard``, if given)."""
    found: list[str] = []
    while len(found) < count:
        partition = f"p-{uuid.uuid4().hex}"
        if shard is None or table.shards.index(table.shard_of(partition)) == shard:
            found.append(partition)
    return found


async def _rows(storage: Storage, name: str) -> list[tuple[str, str]]:
    """(PartitionKey, RowKey) of every entity in the Table ``name`` itself."""
    async with storage.table_service.get_table_client(name) as table:
        return [(str(e["PartitionKey"]), str(e["RowKey"])) async for e in table.list_entities()]


def test_a_partition_has_the_same_shard_in_every_process() -> None:
    code = ("from dicom_core.storage.sharded_table import shard_index; "
            f"print([shard_index(p, 16) for p in {list(KNOWN_SHARDS)!r}])")
    for seed in ("1", "2"):  # str hashes differ per process unless PYTHONHASHSEED is fixed; this must not
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True, env={**os.environ, "PYTHONHASHSEED": seed})
        assert done.stdout.strip() == str(list(KNOWN_SHARDS.values()))
    assert {partition: shard_index(partition, 16) for partition in KNOWN_SHARDS} == KNOWN_SHARDS
    assert all(shard_index(partition, 1) == 0 for partition in KNOWN_SHARDS)


def test_shard_zero_is_the_unsharded_table() -> None:
    assert shard_names("dicomwebStudies", 1) == ["dicomwebStudies"]
    assert shard_names("dicomwebStudies", 3) == ["dicomwebStudies", "dicomwebStudies1", "dicomwebStudies2"]


def test_a_kind_of_its_own_is_named_by_its_letters_and_digits() -> None:
    assert kind_table_name("dicomwebIndex", "s.all") == "dicomwebIndexSAll"
    assert kind_table_name("dicomwebIndex", "se.ppsdate") == "dicomwebIndexSePpsdate"
    assert kind_table_name("dicomwebIndex", "x.") == "dicomwebIndexX"
    assert partition_kind("s.pnword|d") == "s.pnword"
    assert partition_kind("s.all") == "s.all"


def test_the_stored_shard_count_is_the_highest_shard_of_the_table_plus_one() -> None:
    existing = {"pStudies", "pStudies1", "pStudies15", "pStudiesOld", "pIndex", "pIndex31", "qStudies40"}
    assert stored_shard_count(existing, "pStudies") == 16
    assert stored_shard_count({"pStudies"}, "pStudies") == 1
    assert stored_shard_count({"pStudies7", "pIndex"}, "pStudies") is None  # its first shard is created last


async def test_a_partition_of_a_kind_of_its_own_is_kept_in_that_kind_s_table(own: Storage) -> None:
    index = own.index
    assert index.shard_of("s.all") is index.kinds["s.all"]
    assert index.shard_of("s.mod|CT") is index.kinds["s.mod"]
    assert index.shard_of("s.pid|x") in index.hashed
    assert index.shard_of("x.00200010|v") is index.shard_of("x.00100020|w") is index.kinds["x."]
    await index.create_entity({"PartitionKey": "s.mod|CT", "RowKey": "r"})
    await index.create_entity({"PartitionKey": "s.pid|x", "RowKey": "r"})

    assert await _rows(own, index.kinds["s.mod"].table_name) == [("s.mod|CT", "r")]
    assert ("s.pid|x", "r") in await _rows(own, index.shard_of("s.pid|x").table_name)
    assert [e["RowKey"] async for e in index.query_entities("PartitionKey eq @pk", parameters={"pk": "s.mod|CT"})] \
        == ["r"]


def test_the_partition_of_a_filter_is_its_one_partition_key_equality() -> None:
    assert filter_partition("PartitionKey eq @pk", {"pk": "a"}) == "a"
    assert filter_partition("PartitionKey eq @study and RowKey gt @low", {"study": "s", "low": "x"}) == "s"
    assert filter_partition("RowKey ge @low and (PartitionKey eq 'it''s or not')", {}) == "it's or not"
    assert filter_partition("PartitionKey eq @pk and ( ( RowKey gt 'a' and RowKey lt 'b' ) or ( RowKey gt 'c' ) )",
                            {"pk": "a"}) == "a"
    for unconfined in ("RowKey eq 'a'", "PartitionKey ge @pk", "PartitionKey eq @pk or RowKey eq 'a'",
                       "PartitionKey eq @pk and PartitionKey eq @other", "not (PartitionKey eq @pk)",
                       "PartitionKey eq @pk and (RowKey gt 'a') or (RowKey lt 'b')",
                       "PartitionKey eq @pk and (RowKey gt 'a') or RowKey lt 'b'"):
        assert filter_partition(unconfined, {"pk": "a", "other": "b"}) is None
    assert filter_partition("PartitionKey eq @missing", {"pk": "a"}) is None


async def test_every_shard_is_a_table_of_the_storage_and_exists(own: Storage) -> None:
    names = {table.table_name for table in own.tables}
    base = own.settings.table_prefix
    assert names == {*shard_names(f"{base}Studies", SHARDS), *shard_names(f"{base}Index", SHARDS),
                     *(kind_table_name(f"{base}Index", kind) for kind in INDEX_KINDS_OF_THEIR_OWN),
                     f"{base}Changes", f"{base}Cleanup"}
    existing = {table.name async for table in own.table_service.list_tables()}
    assert names <= existing


async def test_opening_with_more_shards_than_the_tables_have_warns_to_reshard(
    own: Storage, caplog: pytest.LogCaptureFixture,
) -> None:
    more = await open_storage(replace(own.settings, table_shards=SHARDS + 2))
    await more.close()
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any("has 4 of its 6 shards" in message and "reshard" in message for message in warnings), warnings
    again = await open_storage(replace(own.settings, table_shards=SHARDS + 2))
    await again.close()
    assert len([record for record in caplog.records if "reshard" in record.getMessage()]) == 2  # once per table


async def test_a_transaction_lands_in_its_partitions_shard_only(own: Storage) -> None:
    (partition,) = _partitions(own.studies)
    expected = shard_index(partition, SHARDS)
    await own.studies.submit_transaction([("create", {"PartitionKey": partition, "RowKey": row}) for row in "abc"])

    for index, name in enumerate(shard_names(own.studies.table_name, SHARDS)):
        rows = [row for key, row in await _rows(own, name) if key == partition]
        assert rows == (["a", "b", "c"] if index == expected else [])
    assert (await own.studies.get_entity(partition, "b"))["RowKey"] == "b"


async def test_a_transaction_of_two_partitions_is_refused(own: Storage) -> None:
    first, second = _partitions(own.studies, 2)
    with pytest.raises(ValueError, match="one partition"):
        await own.studies.submit_transaction([("create", {"PartitionKey": first, "RowKey": "a"}),
                                              ("create", {"PartitionKey": second, "RowKey": "a"})])


async def test_a_partition_query_sees_its_partition_only(own: Storage) -> None:
    first, neighbour = _partitions(own.index, 2, shard=1)  # the same shard: the filter, not the shard, parts them
    (elsewhere,) = _partitions(own.index, shard=2)
    for partition in (first, neighbour, elsewhere):
        await own.index.submit_transaction([("upsert", {"PartitionKey": partition, "RowKey": f"r{number:02}"})
                                            for number in range(5)])

    found = [(e["PartitionKey"], e["RowKey"]) async for e in own.index.query_entities(
        "PartitionKey eq @pk and RowKey ge @low", parameters={"pk": first, "low": "r02"})]
    assert found == [(first, "r02"), (first, "r03"), (first, "r04")]


async def test_a_partition_query_resumes_by_page_token(own: Storage) -> None:
    (partition,) = _partitions(own.index)
    await own.index.submit_transaction([("create", {"PartitionKey": partition, "RowKey": f"r{number:02}"})
                                        for number in range(7)])
    query, parameters = "PartitionKey eq @pk", {"pk": partition}

    pages = own.index.query_entities(query, parameters=parameters, results_per_page=3).by_page()
    first = [e["RowKey"] async for e in await anext(pages)]
    token = getattr(pages, "continuation_token", None)
    rest = own.index.query_entities(query, parameters=parameters, results_per_page=3).by_page(continuation_token=token)
    assert first == ["r00", "r01", "r02"]
    assert [e["RowKey"] async for page in rest async for e in page] == [f"r{number:02}" for number in range(3, 7)]


async def test_a_query_without_one_partition_is_refused(own: Storage) -> None:
    for query in ("RowKey eq @row", "PartitionKey ge @row", "PartitionKey eq @row or RowKey eq @row"):
        with pytest.raises(ValueError, match="one partition"):
            own.studies.query_entities(query, parameters={"row": "a"})


async def test_listing_reads_every_shard_and_resumes_by_page_token(own: Storage) -> None:
    partitions = [partition for shard in range(SHARDS) for partition in _partitions(own.studies, 2, shard=shard)]
    for partition in partitions:
        await own.studies.upsert_entity({"PartitionKey": partition, "RowKey": "r"})
    expected = sorted((partition, "r") for partition in partitions)

    assert sorted([(e["PartitionKey"], e["RowKey"]) async for e in own.studies.list_entities()]) == expected
    pages = own.studies.list_entities(results_per_page=3).by_page()
    first = [(e["PartitionKey"], e["RowKey"]) async for e in await anext(pages)]
    token = getattr(pages, "continuation_token", None)
    rest = own.studies.list_entities(results_per_page=3).by_page(continuation_token=token)
    assert sorted(first + [(e["PartitionKey"], e["RowKey"]) async for page in rest async for e in page]) == expected


async def test_single_entity_operations_go_to_the_partitions_shard(own: Storage) -> None:
    (partition,) = _partitions(own.index)
    shard_name = own.index.shard_of(partition).table_name
    await own.index.create_entity({"PartitionKey": partition, "RowKey": "a", "Value": 1})
    await own.index.upsert_entity({"PartitionKey": partition, "RowKey": "b", "Value": 2}, mode=UpdateMode.REPLACE)
    row = await own.index.get_entity(partition, "a")
    await own.index.update_entity({**row, "Value": 3}, **unchanged_since(etag_of(row)))
    assert sorted(await _rows(own, shard_name)) == [(partition, "a"), (partition, "b")]
    assert (await own.index.get_entity(partition, "a"))["Value"] == 3

    await own.index.delete_entity(partition, "a")
    await own.index.delete_entity({"PartitionKey": partition, "RowKey": "b"})
    assert await _rows(own, shard_name) == []


async def test_deleting_and_creating_the_table_covers_every_shard(own: Storage) -> None:
    await own.index.delete_table()
    existing = {table.name async for table in own.table_service.list_tables()}
    assert not existing & set(shard_names(own.index.table_name, SHARDS))

    await own.index.create_table()
    existing = {table.name async for table in own.table_service.list_tables()}
    assert set(shard_names(own.index.table_name, SHARDS)) <= existing


async def test_a_point_read_of_properties_reads_the_partitions_shard(own: Storage) -> None:
    partition = _partitions(own.studies, shard=3)[0]
    await own.studies.create_entity({"PartitionKey": partition, "RowKey": "r", "Version": "v1"})

    assert await read_properties(own.studies, partition, "r", ["Version"]) == {"Version": "v1"}
