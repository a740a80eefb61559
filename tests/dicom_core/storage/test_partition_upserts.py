"""Coalesced Table upserts: concurrent rows of one partition in one transaction; a refused row fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from azure.core.exceptions import HttpResponseError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient
from pydicom.uid import generate_uid

from dicom_core.index.cleanup_entries import CleanupTarget, schedule_cleanup
from dicom_core.index.outbox import PENDING_PARTITION, announce_changes
from dicom_core.maintenance.blob_cleanup import all_entries
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance, new_version
from dicom_core.storage import partition_upserts
from dicom_core.storage.clients import Storage
from dicom_core.storage.partition_upserts import LANES, PartitionUpserts


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The rows of each Table write request made while the test runs (counted, then made as usual)."""
    made: list[int] = []
    transaction, upsert = TableClient.submit_transaction, partition_upserts.upsert_one

    async def counting_transaction(self: TableClient, operations: list, **kwargs: object) -> object:
        made.append(len(operations))
        return await transaction(self, operations, **kwargs)

    async def counting_upsert(table: TableClient, entity: dict, mode: UpdateMode = UpdateMode.REPLACE) -> None:
        made.append(1)
        await upsert(table, entity, mode)

    monkeypatch.setattr(TableClient, "submit_transaction", counting_transaction)
    monkeypatch.setattr(partition_upserts, "upsert_one", counting_upsert)
    yield made


def _version(study: str) -> StoredInstance:
    return StoredInstance(InstanceIdentifiers(study, generate_uid(), generate_uid()), new_version())


async def test_concurrent_announcements_are_written_in_few_transactions(own: Storage, writes: list[int]) -> None:
    change_ids = [new_version() for _ in range(30)]
    now = datetime.now(UTC)
    await asyncio.gather(*(announce_changes(own, str(generate_uid()), change_id, now) for change_id in change_ids))
    rows = [e["RowKey"] async for e in own.changes.query_entities("PartitionKey eq @pk",
                                                                  parameters={"pk": PENDING_PARTITION})]
    assert sorted(rows) == sorted(change_ids)
    assert len(writes) <= 2 * LANES and sum(writes) == 30  # one write per idle lane, then one per lane


async def test_concurrent_cleanup_entries_of_one_study_share_transactions(own: Storage, writes: list[int]) -> None:
    study = generate_uid()
    targets = [CleanupTarget.of_version(_version(study)) for _ in range(20)]
    written = await asyncio.gather(*(schedule_cleanup(own, [target]) for target in targets))
    assert {entry.row for entry in await all_entries(own)} == {entries[0].row for entries in written}
    assert len(writes) <= 2 * LANES


async def test_a_refused_row_fails_alone_and_the_others_are_written(own: Storage) -> None:
    upserts = PartitionUpserts(lambda storage: storage.cleanup)
    rows = [f"row{number}" for number in range(5)]
    entities = [{"PartitionKey": "p", "RowKey": row} for row in rows[:2]] + [{"PartitionKey": "p", "RowKey": "bad/row"}]
    entities += [{"PartitionKey": "p", "RowKey": row} for row in rows[2:]]
    results = await asyncio.gather(*(upserts.upsert(own, [entity]) for entity in entities), return_exceptions=True)
    assert [isinstance(result, HttpResponseError) for result in results] == [False, False, True, False, False, False]
    written = [e["RowKey"] async for e in own.cleanup.query_entities("PartitionKey eq 'p'")]
    assert sorted(written) == rows


async def test_many_entries_of_one_call_are_written_when_the_table_was_deleted(own: Storage) -> None:
    await own.table_service.delete_table(own.cleanup.table_name)
    study = generate_uid()
    entries = await schedule_cleanup(own, [CleanupTarget.of_version(_version(study)) for _ in range(150)])
    assert len({entry.row for entry in await all_entries(own)}) == len(entries) == 150


async def test_a_transaction_whose_answer_was_lost_is_sent_again(own: Storage, storage_fault_proxy) -> None:
    from dataclasses import replace

    from dicom_core.storage.clients import open_storage
    from tests.faults.proxy import Action, Fault

    proxied = await open_storage(replace(own.settings, storage_connection_string=storage_fault_proxy.connection_string))
    lost = storage_fault_proxy.inject(Fault("table", "POST", r"/\$batch$", Action.RESPONSE_LOST,
                                            body=rf"{own.settings.table_prefix}Changes"))
    rows = [{"PartitionKey": "lost-answers", "RowKey": str(n), "N": n} for n in range(30)]  # a transaction
    try:
        await PartitionUpserts(lambda storage: storage.changes).upsert(proxied, rows)
    finally:
        await proxied.close()

    assert lost.fired.is_set()
    written = [e async for e in own.changes.query_entities("PartitionKey eq 'lost-answers'")]
    assert sorted(e["N"] for e in written) == list(range(30))


async def test_merging_upserts_keep_the_properties_other_writers_wrote(own: Storage) -> None:
    merging = PartitionUpserts(lambda storage: storage.cleanup, mode=UpdateMode.MERGE)
    keys = {"PartitionKey": "merge", "RowKey": "row"}
    await asyncio.gather(merging.upsert(own, [{**keys, "a": "1"}]), merging.upsert(own, [{**keys, "b": "2"}]))
    entity = await own.cleanup.get_entity("merge", "row")
    assert (entity["a"], entity["b"]) == ("1", "2")


async def test_own_rows_are_written_at_once_in_one_transaction_per_partition(own: Storage, writes: list[int]) -> None:
    upserts = PartitionUpserts(lambda storage: storage.cleanup, linger=(5.0, 5.0))
    rows = [{"PartitionKey": "own", "RowKey": str(number)} for number in range(3)]
    await asyncio.wait_for(upserts.upsert(own, rows, own=True), timeout=4.0)  # no linger
    assert writes == [3]
