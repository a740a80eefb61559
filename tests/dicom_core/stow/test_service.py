"""The STOW service against real Azurite: limits, concurrency and what lands in storage."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from dicom_core.changefeed.sequencer import sequence_pending
from dicom_core.documents.series_documents import document_name
from dicom_core.index.outbox import Announcement, parse_announcement
from dicom_core.index.rows import MAX_ROW_METADATA_CHARS, ROW_METADATA, STUDY_ROW, series_row_key
from dicom_core.maintenance.blob_cleanup import all_entries, run_cleanup
from dicom_core.maintenance.consistency import check_consistency
from dicom_core.model.errors import PayloadTooLargeError
from dicom_core.settings import Settings
from dicom_core.storage.clients import Storage, open_storage
from dicom_core.stow.response import StoreOutcome
from dicom_core.stow.service import FileRequest, StoreRequest, store_instances
from tests.factories import make_instance, multipart_body

BOUNDARY = "test-boundary"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
BASE = "http://test"
FAR_FUTURE = datetime.now(UTC) + timedelta(days=3650)


async def _chunks(data: bytes, size: int = 7919) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def _store(storage: Storage, parts: list[bytes], *, upsert: bool = False):
    request = StoreRequest(api_version=2, study_uid=None, content_type=MULTIPART, accept=None, base_url=BASE,
                           upsert=upsert)
    return await store_instances(storage, request, _chunks(multipart_body(parts, BOUNDARY)))


async def _blob_names(storage: Storage, prefix: str) -> list[str]:
    return [blob.name async for blob in storage.files.list_blobs(name_starts_with=prefix)]


async def test_part_over_limit_is_413(small_part_storage: Storage) -> None:
    with pytest.raises(PayloadTooLargeError):
        await _store(small_part_storage, [make_instance(rows=64, columns=64)])


async def test_concurrent_stores_into_one_study_keep_counts_exact(storage: Storage) -> None:
    study = generate_uid()
    series = [generate_uid() for _ in range(3)]
    modalities = ["CT", "MR", "CT"]
    batches = [
        [make_instance(study=study, series=series[i % 3], Modality=modalities[i % 3]) for _ in range(4)]
        for i in range(12)
    ]
    responses = await asyncio.gather(*(_store(storage, batch) for batch in batches))
    assert {r.status for r in responses} == {200}
    study_row = await storage.studies.get_entity(study, STUDY_ROW)
    assert (study_row["InstanceCount"], study_row["SeriesCount"]) == (48, 3)
    assert json.loads(study_row["ModalityCounts"]) == {"CT": 32, "MR": 16}
    for uid in series:
        assert (await storage.studies.get_entity(study, series_row_key(uid)))["InstanceCount"] == 16
    assert len(await _blob_names(storage, study)) == 48


async def test_same_instance_stored_twice_at_once_keeps_one_blob_and_row(storage: Storage) -> None:
    data = make_instance()
    study = dcmread(io.BytesIO(data)).StudyInstanceUID
    responses = await asyncio.gather(*(_store(storage, [data]) for _ in range(4)))
    assert sorted(r.status for r in responses) == [200, 409, 409, 409]
    assert len(await _blob_names(storage, study)) == 1
    assert (await storage.studies.get_entity(study, STUDY_ROW))["InstanceCount"] == 1


async def test_upsert_keeps_counts_and_moves_modality(storage: Storage) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    assert (await _store(storage, [make_instance(study=study, series=series, sop=sop, Modality="CT")])).status == 200
    replaced = await _store(storage, [make_instance(study=study, series=series, sop=sop, Modality="MR")], upsert=True)
    assert replaced.status == 200
    row = await storage.studies.get_entity(study, STUDY_ROW)
    assert (row["InstanceCount"], json.loads(row["ModalityCounts"])) == (1, {"MR": 1})
    assert len(await _blob_names(storage, study)) == 2  # the replaced version stays for readers until cleanup


async def test_metadata_is_kept_in_the_instance_row_small_binary_values_inline_and_without_a_blob(
    storage: Storage,
) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    assert (await _store(storage, [make_instance(study=study, series=series, sop=sop)])).status == 200
    row = await storage.studies.get_entity(study, f"instance|{series}|{sop}")
    metadata = json.loads(row[ROW_METADATA])
    assert metadata["0020000D"]["Value"] == [study]
    assert set(metadata["7FE00010"]) == {"vr", "InlineBinary"}  # 128 bytes of pixels: inline
    assert [b.name async for b in storage.metadata.list_blobs(name_starts_with=study) if b.name.endswith(".json")] == []


async def test_metadata_too_long_for_the_row_goes_to_its_own_blob(storage: Storage) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    data = make_instance(study=study, series=series, sop=sop, TextValue="x" * (MAX_ROW_METADATA_CHARS + 1))
    assert (await _store(storage, [data])).status == 200
    row = await storage.studies.get_entity(study, f"instance|{series}|{sop}")
    assert row[ROW_METADATA] == ""
    [name] = [b.name async for b in storage.metadata.list_blobs(name_starts_with=study) if b.name.endswith(".json")]
    metadata = json.loads(await (await storage.metadata.download_blob(name)).readall())
    assert metadata["0020000D"]["Value"] == [study]
    assert set(metadata["7FE00010"]) == {"vr", "InlineBinary"}


async def test_deleted_container_is_created_again(unit_settings: Settings) -> None:
    own = await open_storage(replace(unit_settings, blob_container="unit-recreated"))
    try:
        await own.files.delete_container()
        response = await _store(own, [make_instance()])
        assert response.status == 200
    finally:
        await own.close()


async def _pending(storage: Storage) -> list[Announcement]:
    return [parse_announcement(e) async for e in storage.changes.query_entities("PartitionKey eq 'pending'")]


async def test_a_request_writes_one_intent_naming_its_versions_and_counting_its_changes(own: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    assert (await _store(own, [make_instance(study=study, series=series) for _ in range(5)])).status == 200
    rows = [e async for e in own.studies.query_entities(
        "PartitionKey eq @pk and RowKey ge 'instance|' and RowKey lt 'instance}'", parameters={"pk": study})]

    assert await all_entries(own) == []  # no cleanup entry: the intent is the request's cleanup record
    [intent] = await _pending(own)
    assert {target.version for target in intent.targets} == {str(row["Version"]) for row in rows}
    assert (intent.studies, intent.changes) == ((study,), 5)


async def test_retiring_a_committed_requests_intent_leaves_no_cleanup_work(own: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    assert (await _store(own, [make_instance(study=study, series=series) for _ in range(5)])).status == 200
    assert await sequence_pending(own) == 5
    assert await _pending(own) == []
    assert await all_entries(own) == []  # every version it named was proven committed by its change


async def test_an_upsert_names_the_versions_it_replaces_in_its_intent(own: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    sops = [generate_uid() for _ in range(3)]
    assert (await _store(own, [make_instance(study=study, series=series, sop=sop) for sop in sops])).status == 200
    [first] = await _pending(own)
    assert await sequence_pending(own) == 3
    replaced = await _store(own, [make_instance(study=study, series=series, sop=sop) for sop in sops], upsert=True)
    assert replaced.status == 200

    [intent] = await _pending(own)
    assert len(intent.targets) == 3 and set(intent.replaced) == set(first.targets)  # its own 3, the 3 replaced
    assert await sequence_pending(own) == 3
    [entry] = await all_entries(own)  # retired: the replaced versions are no change of it, so handed over
    assert set(entry.targets) == set(first.targets)
    report = await run_cleanup(own, now=FAR_FUTURE)
    assert (report.kept, report.versions_deleted) == (0, 3)
    assert len(await _blob_names(own, study)) == 3


async def test_a_refused_part_is_taken_out_of_its_requests_announcement(own: Storage) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    assert (await _store(own, [make_instance(study=study, series=series, sop=sop)])).status == 200
    assert await sequence_pending(own) == 1
    parts = [make_instance(study=study, series=series, sop=sop), make_instance(study=study, series=series)]
    assert (await _store(own, parts)).status == 202  # one stored, one refused (45070)

    [announcement] = [e async for e in own.changes.query_entities("PartitionKey eq 'pending'")]
    assert announcement["Changes"] == 1
    assert await sequence_pending(own) == 1
    assert [e async for e in own.changes.query_entities("PartitionKey eq 'pending'")] == []
    assert await check_consistency(own) == []


async def _store_files(storage: Storage, files: list[bytes], *, upsert: bool = True) -> list[StoreOutcome]:
    request = FileRequest(storage, api_version=2, upsert=upsert)
    try:
        return list(await asyncio.gather(*(request.store(io.BytesIO(data), len(data)) for data in files)))
    finally:
        await request.close()


async def test_a_file_request_stores_a_part10_file_and_replaces_it_when_asked(storage: Storage) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    first = make_instance(study=study, series=series, sop=sop, StudyDescription="First")
    second = make_instance(study=study, series=series, sop=sop, StudyDescription="Second")
    [stored] = await _store_files(storage, [first])
    [replaced] = await _store_files(storage, [second])
    [refused] = await _store_files(storage, [first], upsert=False)
    assert (stored.succeeded, replaced.succeeded, refused.failure_reason) == (True, True, 45070)
    study_row = await storage.studies.get_entity(study, STUDY_ROW)
    assert study_row["InstanceCount"] == 1


async def test_a_file_request_refuses_a_file_failing_validation(storage: Storage) -> None:
    data = b"\x00" * 128 + b"DICM" + b"\x00" * 64
    [outcome] = await _store_files(storage, [data])
    assert outcome.failure_reason == 43264 and outcome.ids is None


async def test_files_of_one_file_request_reach_the_feed_and_are_kept_by_the_cleanup(own: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    outcomes = await _store_files(own, [make_instance(study=study, series=series) for _ in range(5)])

    assert all(outcome.succeeded for outcome in outcomes)
    assert await sequence_pending(own) == 5
    # The request's intent proved every file committed: nothing is left for the cleanup, and nothing deleted.
    report = await run_cleanup(own, now=FAR_FUTURE)
    assert (report.versions_deleted, report.failed) == (0, 0)
    assert await check_consistency(own) == []


async def test_a_file_request_writes_its_series_documents_when_it_closes(own: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    request = FileRequest(own, api_version=2, upsert=True)
    data = make_instance(study=study, series=series)
    assert (await request.store(io.BytesIO(data), len(data))).succeeded
    document = own.metadata.get_blob_client(document_name(study, series))
    before = await document.exists()
    await request.close()
    assert (before, await document.exists()) == (False, True)
