"""Transactions without the email package: the SDK's request bytes, results and exceptions, for less CPU."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.data.tables import TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from dicom_core.storage.clients import Storage
from dicom_core.storage.table_transactions import TransactionTableClient, changeset_answers

_VARYING = re.compile(rb"(batch|changeset)_[0-9a-f-]{36}|\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT")


@pytest.fixture
async def tables(azurite) -> AsyncIterator[tuple[TableClient, TableClient]]:
    """The same new table through the SDK's client and through ours."""
    name = f"tx{uuid.uuid4().hex[:12]}"
    async with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        sdk = await service.create_table(name)
        ours = TransactionTableClient.from_connection_string(azurite.connection_string, name)
        yield sdk, ours
        await ours.close()
        await service.delete_table(name)


def _operations(partition: str) -> list[Any]:
    return [
        ("upsert", {"PartitionKey": partition, "RowKey": "a", "Text": "é\"\\", "Number": 2.5},
         {"mode": UpdateMode.REPLACE}),
        ("create", {"PartitionKey": partition, "RowKey": "b", "Count": 7}),
        ("update", {"PartitionKey": partition, "RowKey": "c", "Text": "x"}, {"mode": UpdateMode.MERGE}),
        ("delete", {"PartitionKey": partition, "RowKey": "d"}),
    ]


async def _sent_body(table: TableClient, operations: list[Any]) -> bytes:
    sent: list[bytes] = []
    try:
        await table.submit_transaction(operations, raw_request_hook=lambda r: sent.append(r.http_request.body))
    except TableTransactionError:
        pass  # the update and the delete find no rows: only the bytes sent matter here
    return _VARYING.sub(b"*", sent[0])


async def test_the_request_body_is_the_sdks_byte_for_byte(tables: tuple[TableClient, TableClient]) -> None:
    sdk, ours = tables
    assert await _sent_body(ours, _operations("p")) == await _sent_body(sdk, _operations("p"))


async def test_a_transaction_answers_each_operations_etag_as_the_sdk_does(
    tables: tuple[TableClient, TableClient],
) -> None:
    sdk, ours = tables
    ours_answer = await ours.submit_transaction(_operations("p")[:2])
    sdk_answer = await sdk.submit_transaction(_operations("q")[:2])
    assert [set(answer) for answer in ours_answer] == [set(answer) for answer in sdk_answer] == [{"etag"}] * 2
    rows = {entity["RowKey"]: entity async for entity in sdk.query_entities("PartitionKey eq 'p'")}
    assert [answer["etag"] for answer in ours_answer] == [rows["a"].metadata["etag"], rows["b"].metadata["etag"]]
    assert rows["a"]["Text"] == "é\"\\" and rows["b"]["Count"] == 7


async def test_a_refused_operation_raises_what_the_sdk_raises(tables: tuple[TableClient, TableClient]) -> None:
    sdk, ours = tables
    await sdk.create_entity({"PartitionKey": "p", "RowKey": "b"})
    operations = [("upsert", {"PartitionKey": "p", "RowKey": "a"}), ("create", {"PartitionKey": "p", "RowKey": "b"})]
    with pytest.raises(TableTransactionError) as from_sdk:
        await sdk.submit_transaction(operations)
    with pytest.raises(TableTransactionError) as from_ours:
        await ours.submit_transaction(operations)
    assert (from_ours.value.index, from_ours.value.error_code, from_ours.value.status_code) == (
        from_sdk.value.index, from_sdk.value.error_code, from_sdk.value.status_code) == (1, "EntityAlreadyExists", 409)
    assert [entity["RowKey"] async for entity in sdk.list_entities()] == ["b"]  # nothing of it was written


async def test_a_missing_table_raises_what_the_sdk_raises(azurite) -> None:
    name = f"gone{uuid.uuid4().hex[:12]}"
    operations = [("upsert", {"PartitionKey": "p", "RowKey": "a"}), ("upsert", {"PartitionKey": "p", "RowKey": "b"})]
    async with TableServiceClient.from_connection_string(azurite.connection_string) as service, \
            TransactionTableClient.from_connection_string(azurite.connection_string, name) as ours:
        with pytest.raises(TableTransactionError) as from_sdk:
            await service.get_table_client(name).submit_transaction(operations)
        with pytest.raises(TableTransactionError) as from_ours:
            await ours.submit_transaction(operations)
    assert from_ours.value.error_code == from_sdk.value.error_code == "TableNotFound"


def test_an_answer_that_is_no_changeset_is_left_to_the_sdks_parser() -> None:
    assert changeset_answers(b"--b\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 400 Bad\r\n\r\n--b--\r\n",
                             "multipart/mixed; boundary=b") is None
    assert changeset_answers(b"{}", "application/json") is None


def test_a_changeset_answer_gives_each_status_and_etag() -> None:
    body = (b"--batchresponse_1\r\nContent-Type: multipart/mixed; boundary=changesetresponse_2\r\n\r\n"
            b"--changesetresponse_2\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
            b"HTTP/1.1 204 No Content\r\nETag: W/\"datetime'1'\"\r\n\r\n\r\n"
            b"--changesetresponse_2\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
            b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n\r\n{}\r\n"
            b"--changesetresponse_2--\r\n--batchresponse_1--\r\n")
    assert changeset_answers(body, "multipart/mixed; boundary=batchresponse_1") == [
        (204, "W/\"datetime'1'\""), (201, None)]


async def test_storage_opens_its_tables_with_transactions_of_its_own(storage: Storage) -> None:
    assert all(isinstance(table, TransactionTableClient) for table in storage.tables)
