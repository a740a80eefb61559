"""Blob cleanup: entries written before blobs can become unreferenced, processed once due."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from pydicom.uid import generate_uid

from dicom_core.maintenance.blob_cleanup import (
    CleanupTarget, all_entries, due_entries, entry_for, run_cleanup, schedule_cleanup,
)
from dicom_core.storage.blobs import instance_blob_name, metadata_blob_name, put_json
from dicom_core.maintenance.consistency import check_consistency
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance, new_version
from dicom_core.settings import Settings
from dicom_core.storage.clients import Storage, open_storage
from tests.factories import make_instance

FAR_FUTURE = datetime.now(timezone.utc) + timedelta(days=3650)


@pytest.fixture
async def own(unit_settings: Settings) -> AsyncIterator[Storage]:
    """Storage of this test's own."""
    suffix = uuid.uuid4().hex[:10]
    opened = await open_storage(replace(unit_settings, table_prefix=f"cln{suffix}", blob_container=f"cln-{suffix}",
                                        metadata_container=f"clnm-{suffix}"))
    yield opened
    await opened.close()


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
    await run_cleanup(own, now=FAR_FUTURE)
    [left] = [b.name async for b in own.files.list_blobs()]
    row = await own.studies.get_entity(study, f"instance|{series}|{sop}")
    assert left.endswith(f"/{row['Version']}.dcm")
    assert await check_consistency(own) == []


async def test_entries_not_yet_due_are_not_read(own: Storage) -> None:
    now = datetime.now(timezone.utc)
    await schedule_cleanup(own, [CleanupTarget.of_version(_version())], now=now)
    delay = timedelta(seconds=own.settings.blob_cleanup_delay_seconds)
    assert await due_entries(own, now + delay - timedelta(seconds=1)) == []
    assert len(await due_entries(own, now + delay + timedelta(seconds=1))) == 1


def test_row_keys_sort_by_due_time() -> None:
    target = CleanupTarget.of_version(_version())
    early = entry_for(target, datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc))
    late = entry_for(target, datetime(2024, 1, 2, 3, 4, 5, 7, tzinfo=timezone.utc))
    assert early.partition == late.partition
    assert early.row < late.row
