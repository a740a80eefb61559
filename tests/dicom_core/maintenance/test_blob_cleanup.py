"""Blob cleanup: entries written before blobs can become unreferenced, processed once due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.data.tables.aio import TableClient
from pydicom.uid import generate_uid

from dicom_core.changefeed.sequencer import sequence_pending
from dicom_core.index.cleanup_entries import (
    CleanupTarget,
    entity_of,
    entry_for,
    entry_of,
    parse_entry,
    schedule_cleanup,
    write_entries,
)
from dicom_core.index.outbox import pending_announcements
from dicom_core.maintenance import blob_cleanup
from dicom_core.maintenance.blob_cleanup import all_entries, due_entries, run_cleanup
from dicom_core.maintenance.consistency import check_consistency
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance, new_version
from dicom_core.storage.blobs import instance_blob_name, metadata_blob_name, put_json
from dicom_core.storage.clients import Storage
from tests.factories import make_instance

FAR_FUTURE = datetime.now(UTC) + timedelta(days=3650)


def _version() -> StoredInstance:
    return StoredInstance(InstanceIdentifiers(generate_uid(), generate_uid(), generate_uid()), new_version())


async def _names(storage: Storage) -> list[str]:
    return [b.name async for b in storage.files.list_blobs()] + [b.name async for b in storage.metadata.list_blobs()]


async def test_blobs_of_a_store_that_never_committed_are_covered_then_deleted(own: Storage) -> None:
    stored = _version()
    await schedule_cleanup(own, [CleanupTarget.of_version(stored)])  # as the store path does, before uploading
    await own.files.upload_blob(instance_blob_name(stored), b"uploaded, never committed")
    await put_json(own, metadata_blob_name(stored), b"{}")
    assert await check_consistency(own) == []  # covered by its entry: not an orphan
    report = await run_cleanup(own, now=FAR_FUTURE)
    assert (report.versions_deleted, await _names(own), await all_entries(own)) == (1, [], [])


async def test_entry_of_a_committed_version_is_dropped_and_its_blobs_kept(own: Storage, stow_parts) -> None:
    assert (await stow_parts(own, [make_instance()])).status == 200
    [intent] = await pending_announcements(own)
    await write_entries(own, [entry_of("committed", intent.targets, datetime.now(UTC))])
    before = await _names(own)
    report = await run_cleanup(own, now=FAR_FUTURE)
    assert (report.kept, report.versions_deleted) == (1, 0)
    assert await _names(own) == before
    assert await all_entries(own) == []


async def test_upsert_keeps_the_replaced_version_until_cleanup(own: Storage, stow_parts) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    assert (await stow_parts(own, [make_instance(study=study, series=series, sop=sop)])).status == 200
    assert (await stow_parts(own, [make_instance(study=study, series=series, sop=sop)], upsert=True)).status == 200
    assert len([b async for b in own.files.list_blobs()]) == 2  # a reader may still be reading the old one
    await sequence_pending(own)  # retires the upsert's intent: the replaced version goes to a cleanup entry
    assert len([b async for b in own.files.list_blobs()]) == 2
    await run_cleanup(own, now=FAR_FUTURE)
    [left] = [b.name async for b in own.files.list_blobs()]
    row = await own.studies.get_entity(study, f"instance|{series}|{sop}")
    assert left.endswith(f"/{row['Version']}.dcm")
    assert await check_consistency(own) == []


async def test_entries_not_yet_due_are_not_read(own: Storage) -> None:
    now = datetime.now(UTC)
    await schedule_cleanup(own, [CleanupTarget.of_version(_version())], now=now)
    delay = timedelta(seconds=own.settings.blob_cleanup_delay_seconds)
    assert await due_entries(own, now + delay - timedelta(seconds=1)) == []
    assert len(await due_entries(own, now + delay + timedelta(seconds=1))) == 1


def test_row_keys_sort_by_due_time() -> None:
    target = CleanupTarget.of_version(_version())
    early = entry_for(target, datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC))
    late = entry_for(target, datetime(2024, 1, 2, 3, 4, 5, 7, tzinfo=UTC))
    assert early.partition == late.partition
    assert early.row < late.row


async def _upload(storage: Storage, stored: StoredInstance) -> None:
    await storage.files.upload_blob(instance_blob_name(stored), b"uploaded, never committed")
    await put_json(storage, metadata_blob_name(stored), b"{}")


async def test_an_entry_naming_several_versions_keeps_the_committed_and_deletes_the_rest(
    own: Storage, stow_parts
) -> None:
    study, series = generate_uid(), generate_uid()
    assert (await stow_parts(own, [make_instance(study=study, series=series) for _ in range(2)])).status == 200
    committed = [target for intent in await pending_announcements(own) for target in intent.targets]
    strays = [StoredInstance(InstanceIdentifiers(study, series, generate_uid()), new_version()), _version()]
    for stray in strays:
        await _upload(own, stray)
    targets = [*committed, *(CleanupTarget.of_version(stray) for stray in strays)]
    await write_entries(own, [entry_of("several", targets, datetime.now(UTC))])

    report = await run_cleanup(own, now=FAR_FUTURE)

    assert (report.kept, report.versions_deleted, report.failed) == (2, 2, 0)
    assert await all_entries(own) == []
    assert await check_consistency(own) == []
    # The committed versions' files (their JSON is in their rows), the series document.
    assert len(await _names(own)) == 3


async def test_versions_of_one_study_are_checked_with_one_range_query(
    own: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    study, series = generate_uid(), generate_uid()
    targets = [CleanupTarget.of_version(StoredInstance(InstanceIdentifiers(study, series, generate_uid()),
                                                       new_version())) for _ in range(30)]
    await schedule_cleanup(own, targets[:10])  # entries in the format of before: one version each
    await write_entries(own, [entry_of("request", targets[10:], datetime.now(UTC))])
    reads: list[str] = []
    query_all, get_row = blob_cleanup.query_all, blob_cleanup.get_row

    async def counting_query(table: Any, query: str, **kwargs: Any) -> Any:
        reads.append(f"query {kwargs['parameters'].get('pk', 'due entries')}")
        return await query_all(table, query, **kwargs)

    async def counting_get(storage: Storage, partition: str, *args: Any) -> Any:
        reads.append(f"get {partition}")
        return await get_row(storage, partition, *args)

    monkeypatch.setattr(blob_cleanup, "query_all", counting_query)
    monkeypatch.setattr(blob_cleanup, "get_row", counting_get)
    report = await run_cleanup(own, now=FAR_FUTURE)

    assert (report.due, report.versions_deleted, report.entries_deleted) == (11, 30, 11)
    assert [read for read in reads if study in read] == [f"query {study}"]
    assert reads.count("query due entries") == 1  # the 16 partitions of the entries: one query


async def test_finished_entries_of_one_partition_are_deleted_in_one_transaction(
    own: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = generate_uid()
    await schedule_cleanup(own, [CleanupTarget.of_version(StoredInstance(
        InstanceIdentifiers(study, generate_uid(), generate_uid()), new_version())) for _ in range(40)])
    transactions: list[int] = []
    submit = TableClient.submit_transaction

    async def counting(self: TableClient, operations: list, **kwargs: Any) -> Any:
        if self.table_name == own.cleanup.table_name:
            transactions.append(len(operations))
        return await submit(self, operations, **kwargs)

    monkeypatch.setattr(TableClient, "submit_transaction", counting)
    report = await run_cleanup(own, now=FAR_FUTURE)

    assert (report.due, report.entries_deleted, transactions) == (40, 40, [40])
    assert await all_entries(own) == []


async def test_an_entry_deleted_meanwhile_does_not_keep_the_others(own: Storage) -> None:
    study = generate_uid()  # one study: its entries share a partition, and a transaction
    entries = await schedule_cleanup(own, [CleanupTarget.of_version(StoredInstance(
        InstanceIdentifiers(study, generate_uid(), generate_uid()), new_version())) for _ in range(5)])
    await own.cleanup.delete_entity(entries[2].partition, entries[2].row)  # as a concurrent run would

    report = await run_cleanup(own, now=FAR_FUTURE)

    assert report.entries_deleted == 4
    assert await all_entries(own) == []


def test_entries_of_both_formats_read_back() -> None:
    targets = [CleanupTarget.of_version(_version()), CleanupTarget.of_document(generate_uid(), generate_uid())]
    due = datetime(2024, 1, 2, tzinfo=UTC)
    several = entry_of("r-1", targets, due)
    assert parse_entry(entity_of(several)) == several
    assert parse_entry(entity_of(entry_for(targets[1], due))) == entry_for(targets[1], due)
