"""Table reads and deletes where a missing entity or table is an answer, against Azurite."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.data.tables import EdmType, EntityProperty, UpdateMode

from dicom_core.storage.clients import Storage
from dicom_core.storage.tables import (
    delete_entity_quietly,
    get_entity_or_none,
    query_all,
    read_etag,
    read_properties,
    upsert_one,
)


def _partition() -> str:
    return f"tables-{uuid.uuid4().hex}"


async def test_an_entity_is_read_whole_or_in_the_selected_properties(storage: Storage) -> None:
    partition = _partition()
    await storage.cleanup.create_entity({"PartitionKey": partition, "RowKey": "a", "One": 1, "Two": "two"})

    whole = await get_entity_or_none(storage.cleanup, partition, "a")
    selected = await get_entity_or_none(storage.cleanup, partition, "a", ["One"])

    assert whole is not None and (whole["One"], whole["Two"]) == (1, "two")
    assert selected is not None and selected["One"] == 1 and "Two" not in selected


async def test_a_missing_entity_or_table_reads_as_none(storage: Storage) -> None:
    missing_table = storage.table_service.get_table_client(f"missing{uuid.uuid4().hex}")

    assert await get_entity_or_none(storage.cleanup, _partition(), "a") is None
    assert await get_entity_or_none(missing_table, "p", "a") is None
    await missing_table.close()


async def test_deleting_twice_or_in_a_missing_table_is_fine(storage: Storage) -> None:
    partition = _partition()
    await storage.cleanup.create_entity({"PartitionKey": partition, "RowKey": "a"})
    missing_table = storage.table_service.get_table_client(f"missing{uuid.uuid4().hex}")

    await delete_entity_quietly(storage.cleanup, partition, "a")
    await delete_entity_quietly(storage.cleanup, partition, "a")
    await delete_entity_quietly(missing_table, partition, "a")
    await missing_table.close()

    assert await get_entity_or_none(storage.cleanup, partition, "a") is None


async def test_a_query_returns_every_match_and_nothing_from_a_missing_table(storage: Storage) -> None:
    partition = _partition()
    for row in ("a", "b", "c"):
        await storage.cleanup.create_entity({"PartitionKey": partition, "RowKey": row, "Value": row.upper()})
    missing_table = storage.table_service.get_table_client(f"missing{uuid.uuid4().hex}")
    query = "PartitionKey eq @pk and RowKey ge @low"

    found = await query_all(storage.cleanup, query, parameters={"pk": partition, "low": "b"}, select=["RowKey"])
    nothing = await query_all(missing_table, query, parameters={"pk": partition, "low": "b"})
    await missing_table.close()

    assert [entity["RowKey"] for entity in found] == ["b", "c"]
    assert all("Value" not in entity for entity in found)
    assert nothing == []


async def test_a_point_read_of_properties_reads_the_selected_ones_as_json(storage: Storage) -> None:
    partition, row = _partition(), "instance|1.2.3|4.5'6"  # the row key of an instance row, and a quote
    await storage.cleanup.create_entity({"PartitionKey": partition, "RowKey": row, "Version": "abc",
                                         "Size": EntityProperty(1 << 40, EdmType.INT64), "Other": "x"})

    properties = await read_properties(storage.cleanup, partition, row, ["Version", "Size"])

    assert properties is not None and properties["Version"] == "abc" and int(properties["Size"]) == 1 << 40
    assert "Other" not in properties


async def test_a_point_read_of_a_missing_entity_or_table_is_none(storage: Storage) -> None:
    missing_table = storage.table_service.get_table_client(f"missing{uuid.uuid4().hex}")

    assert await read_properties(storage.cleanup, _partition(), "a", ["Version"]) is None
    assert await read_properties(missing_table, "p", "a", ["Version"]) is None
    await missing_table.close()


async def test_a_point_read_of_the_etag_gives_what_the_sdks_read_gives(storage: Storage) -> None:
    partition, row = _partition(), "series|1.2.3'4"
    await storage.cleanup.create_entity({"PartitionKey": partition, "RowKey": row, "Value": "x"})

    etag = await read_etag(storage.cleanup, partition, row)

    assert etag is not None and etag == (await storage.cleanup.get_entity(partition, row)).metadata["etag"]


async def test_a_point_read_of_the_etag_of_a_missing_entity_or_table_is_none(storage: Storage) -> None:
    missing_table = storage.table_service.get_table_client(f"missing{uuid.uuid4().hex}")

    assert await read_etag(storage.cleanup, _partition(), "a") is None
    assert await read_etag(missing_table, "p", "a") is None
    await missing_table.close()


def _typed_entity(partition: str, row: str, text: str) -> dict[str, Any]:
    return {"PartitionKey": partition, "RowKey": row, "Text": text, "Count": 7, "Ratio": 2.5, "Flag": True,
            "Big": EntityProperty(1 << 40, EdmType.INT64), "When": datetime(2026, 12, 7, 4, 30, tzinfo=UTC),
            "Bytes": b"\x00\x01", "Quote": "it's é\"\\"}


async def test_a_one_row_upsert_writes_and_replaces_what_the_sdks_upsert_does(storage: Storage) -> None:
    partition = _partition()
    await storage.cleanup.upsert_entity(_typed_entity(partition, "sdk'row", "first"), mode=UpdateMode.REPLACE)
    await upsert_one(storage.cleanup, _typed_entity(partition, "our'row", "first"))
    await upsert_one(storage.cleanup, {"PartitionKey": partition, "RowKey": "our'row", "Text": "second"})
    await storage.cleanup.upsert_entity({"PartitionKey": partition, "RowKey": "sdk'row", "Text": "second"},
                                        mode=UpdateMode.REPLACE)
    await upsert_one(storage.cleanup, _typed_entity(partition, "our new", "typed"))

    ours = await get_entity_or_none(storage.cleanup, partition, "our'row")
    sdks = await get_entity_or_none(storage.cleanup, partition, "sdk'row")
    typed = await get_entity_or_none(storage.cleanup, partition, "our new")
    assert ours is not None and sdks is not None and typed is not None
    assert dict(ours) == {**sdks, "RowKey": "our'row"} == {"PartitionKey": partition, "RowKey": "our'row",
                                                          "Text": "second"}
    sdk_typed = dict(_typed_entity(partition, "our new", "typed"))
    assert {key: (value.value if isinstance(value, EntityProperty) else value) for key, value in typed.items()} == {
        **sdk_typed, "Big": 1 << 40}


async def test_a_one_row_upsert_into_a_missing_table_raises_what_the_sdk_raises(storage: Storage) -> None:
    missing = storage.table_service.get_table_client(f"missing{uuid.uuid4().hex}")
    entity = {"PartitionKey": "p", "RowKey": "r", "Text": "x"}

    with pytest.raises(HttpResponseError) as sdks:
        await missing.upsert_entity(entity, mode=UpdateMode.REPLACE)
    with pytest.raises(HttpResponseError) as ours:
        await upsert_one(missing, entity)
    await missing.close()

    assert type(ours.value) is type(sdks.value)
    assert (ours.value.error_code, ours.value.status_code) == (sdks.value.error_code, sdks.value.status_code)
    assert ours.value.error_code == "TableNotFound"


async def test_a_one_row_merge_upsert_keeps_the_properties_it_does_not_name(storage: Storage) -> None:
    partition = _partition()
    await upsert_one(storage.cleanup, {"PartitionKey": partition, "RowKey": "r", "First": "a"}, UpdateMode.MERGE)
    await upsert_one(storage.cleanup, {"PartitionKey": partition, "RowKey": "r", "Second": "b"}, UpdateMode.MERGE)

    merged = await get_entity_or_none(storage.cleanup, partition, "r")

    assert merged is not None and dict(merged) == {"PartitionKey": partition, "RowKey": "r", "First": "a",
                                                   "Second": "b"}
