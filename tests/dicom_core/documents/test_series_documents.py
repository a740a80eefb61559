"""Series metadata documents against Azurite: kept current by STOW, exact under concurrency, self-healing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from pydicom.uid import generate_uid

from dicom_core.delete.service import delete_instance
from dicom_core.documents import document_writes
from dicom_core.documents.known_documents import known_document
from dicom_core.documents.series_documents import (
    SEPARATOR,
    STATE_KEY,
    UNVERIFIED,
    batch_blocks,
    block_id,
    document_name,
    exact_state,
    record,
    series_state,
    stream_document,
    verified_properties,
)
from dicom_core.index.reads import instance_rows, stored_instance
from dicom_core.index.rows import ROW_METADATA
from dicom_core.model.identifiers import InstanceIdentifiers
from dicom_core.storage.blobs import metadata_blob_name, put_json
from dicom_core.storage.clients import Storage
from dicom_core.stow.service import StoreRequest, store_instances
from dicom_core.wado.metadata import json_array
from tests.factories import make_instance, multipart_body

BOUNDARY = "test-boundary"
SOP_INSTANCE_UID = "00080018"
STUDY_DESCRIPTION = "00081030"


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _store(storage: Storage, parts: list[bytes], *, upsert: bool = False) -> None:
    request = StoreRequest(api_version=2, study_uid=None, content_type=f'multipart/related; type="application/dicom"; '
                           f"boundary={BOUNDARY}", accept=None, base_url="http://test", upsert=upsert)
    response = await store_instances(storage, request, _body(multipart_body(parts, BOUNDARY)))
    assert response.status == 200, response.body


async def _held(storage: Storage, study: str, series: str) -> list[str]:
    """The SOP Instance UIDs of the document's records, as stored (duplicates kept, nothing verified)."""
    data = await (await storage.metadata.download_blob(document_name(study, series))).readall()
    return [json.loads(line)[SOP_INSTANCE_UID]["Value"][0] for line in data.split(SEPARATOR) if line]


async def _series_etag(storage: Storage, study: str, series: str) -> str:
    return str((await storage.studies.get_entity(study, f"series|{series}")).metadata["etag"])


async def _exact_for(storage: Storage, study: str, series: str) -> str | None:
    properties = await storage.metadata.get_blob_client(document_name(study, series)).get_blob_properties()
    return exact_state(properties.metadata)


async def _read(storage: Storage, study: str, series: str) -> list[dict]:
    etag = await _series_etag(storage, study, series)
    properties = await verified_properties(storage, study, series, etag)
    text = b"".join([chunk async for chunk in json_array(stream_document(storage, study, series, etag, properties))])
    return json.loads(text)


def _uids(items: list[dict]) -> list[str]:
    return sorted(item[SOP_INSTANCE_UID]["Value"][0] for item in items)


async def _overwrite(storage: Storage, study: str, series: str, records: list[bytes], state: str) -> None:
    """Replace the document by one holding ``records`` and saying it is exact for ``state``."""
    blob = storage.metadata.get_blob_client(document_name(study, series))
    blocks = batch_blocks(records)
    for block, data in blocks.items():
        await blob.stage_block(block, data)
    await blob.commit_block_list(list(blocks), metadata={STATE_KEY: state})


async def test_a_store_leaves_its_series_document_exact_and_verified_without_a_reader(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    sops = [generate_uid() for _ in range(3)]
    await _store(storage, [make_instance(study=study, series=series, sop=sop) for sop in sops])
    assert sorted(await _held(storage, study, series)) == sorted(sops)
    assert await _exact_for(storage, study, series) == series_state(await _series_etag(storage, study, series))


async def test_one_request_into_one_series_writes_one_block(storage: Storage, monkeypatch) -> None:
    monkeypatch.setattr(document_writes, "WHOLE_PUT_BYTES", 0)  # documents grow by blocks from the first batch
    study, series = generate_uid(), generate_uid()
    blob = storage.metadata.get_blob_client(document_name(study, series))
    await _store(storage, [make_instance(study=study, series=series) for _ in range(10)])
    committed, _ = await blob.get_block_list("committed")
    assert len(committed) == 1 and len(await _held(storage, study, series)) == 10


async def test_stores_one_after_another_keep_the_document_verified(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    for _ in range(3):
        await _store(storage, [make_instance(study=study, series=series)])
    assert len(await _held(storage, study, series)) == 3
    assert await _exact_for(storage, study, series) == series_state(await _series_etag(storage, study, series))


async def test_concurrent_stores_into_one_series_read_exactly(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    sops = [[generate_uid() for _ in range(4)] for _ in range(10)]
    await asyncio.gather(*(_store(storage, [make_instance(study=study, series=series, sop=sop) for sop in batch])
                           for batch in sops))
    assert _uids(await _read(storage, study, series)) == sorted(sop for batch in sops for sop in batch)


async def test_upsert_serves_the_new_version_only(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    sops = [generate_uid() for _ in range(3)]
    await _store(storage, [make_instance(study=study, series=series, sop=sop) for sop in sops])
    await _store(storage, [make_instance(study=study, series=series, sop=sops[1], StudyDescription="new")], upsert=True)
    items = await _read(storage, study, series)
    assert _uids(items) == sorted(sops)
    descriptions = {i[SOP_INSTANCE_UID]["Value"][0]: i.get(STUDY_DESCRIPTION) for i in items}
    assert descriptions[sops[1]] == {"vr": "LO", "Value": ["new"]}


async def test_a_deleted_instance_is_not_served(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    sops = [generate_uid() for _ in range(3)]
    await _store(storage, [make_instance(study=study, series=series, sop=sop) for sop in sops])
    await delete_instance(storage, InstanceIdentifiers(study, series, sops[0]))
    assert _uids(await _read(storage, study, series)) == sorted(sops[1:])


async def test_reader_rebuilds_a_document_that_missed_a_committed_instance(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    sops = [generate_uid() for _ in range(3)]
    await _store(storage, [make_instance(study=study, series=series, sop=sop) for sop in sops])
    # As if the store of sops[2] had crashed between its Table commit and its document write.
    await _overwrite(storage, study, series, [record(_minimal(sop)) for sop in sops[:2]], UNVERIFIED)
    assert _uids(await _read(storage, study, series)) == sorted(sops)


async def test_reader_rebuilds_a_document_left_exact_for_an_older_row(storage: Storage) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    await _store(storage, [make_instance(study=study, series=series, sop=sop, StudyDescription="old")])
    old_etag = await _series_etag(storage, study, series)
    old_document = await (await storage.metadata.download_blob(document_name(study, series))).readall()
    await _store(storage, [make_instance(study=study, series=series, sop=sop, StudyDescription="current")],
                 upsert=True)
    # As if the upsert's document write had been lost: the document still says what it was exact for.
    await _overwrite(storage, study, series, [old_document], series_state(old_etag))
    [item] = await _read(storage, study, series)
    assert item[STUDY_DESCRIPTION]["Value"] == ["current"]


async def test_reader_rebuilds_a_document_holding_a_record_twice(storage: Storage) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    await _store(storage, [make_instance(study=study, series=series, sop=sop)])
    await _overwrite(storage, study, series, [record(_minimal(sop)), record(_minimal(sop))], UNVERIFIED)
    assert _uids(await _read(storage, study, series)) == [sop]


async def test_reader_builds_a_missing_document(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    datas = [make_instance(study=study, series=series) for _ in range(3)]
    await _store(storage, datas)
    await storage.metadata.delete_blob(document_name(study, series))  # as for a series stored before documents
    assert len(await _read(storage, study, series)) == 3


async def test_a_store_racing_the_reader_serves_a_later_exact_document(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    await _store(storage, [make_instance(study=study, series=series)])
    etag = await _series_etag(storage, study, series)
    await _store(storage, [make_instance(study=study, series=series)])
    await _overwrite(storage, study, series, [], UNVERIFIED)
    properties = await verified_properties(storage, study, series, etag)  # the row read before the second store
    text = b"".join([chunk async for chunk in json_array(stream_document(storage, study, series, etag, properties))])
    assert len(json.loads(text)) == 2
    assert exact_state(properties.metadata) == series_state(await _series_etag(storage, study, series))


async def test_verified_document_is_not_written_again_by_the_next_reader(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    await _store(storage, [make_instance(study=study, series=series)])
    await _overwrite(storage, study, series, [], UNVERIFIED)
    etag = await _series_etag(storage, study, series)
    first = await verified_properties(storage, study, series, etag)
    second = await verified_properties(storage, study, series, etag)
    assert first.etag == second.etag
    assert exact_state(first.metadata) == series_state(etag)


async def test_series_without_instances_reads_as_an_empty_array(storage: Storage) -> None:
    study, series = str(generate_uid()), str(generate_uid())  # e.g. every instance deleted, the series row kept
    await storage.studies.create_entity({"PartitionKey": study, "RowKey": f"series|{series}", "InstanceCount": 0})
    etag = await _series_etag(storage, study, series)
    properties = await verified_properties(storage, study, series, etag)
    text = b"".join([chunk async for chunk in json_array(stream_document(storage, study, series, etag, properties))])
    assert text == b"[]"


def _minimal(sop: str) -> dict:
    return {SOP_INSTANCE_UID: {"vr": "UI", "Value": [sop]}}


async def _make_legacy(storage: Storage, study: str, series: str) -> list[str]:
    """Turn a stored series into what earlier versions stored: metadata blobs, a document of one block per instance."""
    rows = await instance_rows(storage, study, series, select=["Version", ROW_METADATA])
    blob = storage.metadata.get_blob_client(document_name(study, series))
    blocks = []
    for row in rows:
        stored = stored_instance(study, row)
        await put_json(storage, metadata_blob_name(stored), str(row[ROW_METADATA]).encode())
        await storage.studies.update_entity({"PartitionKey": str(study), "RowKey": row["RowKey"], ROW_METADATA: ""})
        blocks.append(block_id(stored.ids.instance, stored.version))
        await blob.stage_block(blocks[-1], str(row[ROW_METADATA]).encode() + SEPARATOR)
    await blob.commit_block_list(blocks, metadata={STATE_KEY: UNVERIFIED})
    return blocks


async def test_a_document_of_instance_blocks_over_metadata_blobs_is_verified_as_it_is(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    sops = [generate_uid() for _ in range(3)]
    await _store(storage, [make_instance(study=study, series=series, sop=sop) for sop in sops])
    blocks = await _make_legacy(storage, study, series)
    assert _uids(await _read(storage, study, series)) == sorted(sops)
    committed, _ = await storage.metadata.get_blob_client(document_name(study, series)).get_block_list("committed")
    assert [block.id for block in committed] == blocks  # only marked verified, nothing rewritten


async def test_an_upsert_into_a_document_of_instance_blocks_replaces_the_record(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    sops = [generate_uid() for _ in range(2)]
    await _store(storage, [make_instance(study=study, series=series, sop=sop) for sop in sops])
    await _make_legacy(storage, study, series)
    await _read(storage, study, series)  # verified as it is
    await _store(storage, [make_instance(study=study, series=series, sop=sops[0], StudyDescription="new")], upsert=True)
    assert await _exact_for(storage, study, series) == series_state(await _series_etag(storage, study, series))
    items = await _read(storage, study, series)
    assert _uids(items) == sorted(sops)
    assert {i[SOP_INSTANCE_UID]["Value"][0]: i.get(STUDY_DESCRIPTION) for i in items}[sops[0]]["Value"] == ["new"]


async def test_a_missing_document_over_metadata_blobs_is_built_from_them(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    sops = [generate_uid() for _ in range(3)]
    await _store(storage, [make_instance(study=study, series=series, sop=sop) for sop in sops])
    await _make_legacy(storage, study, series)
    await storage.metadata.delete_blob(document_name(study, series))
    assert _uids(await _read(storage, study, series)) == sorted(sops)


async def test_a_small_document_written_whole_is_kept_for_its_first_read(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    await _store(storage, [make_instance(study=study, series=series) for _ in range(3)])
    kept = known_document(storage, study, series, await _series_etag(storage, study, series))
    assert kept == await (await storage.metadata.download_blob(document_name(study, series))).readall()


async def test_a_document_kept_by_its_writer_is_not_sent_once_the_series_changed(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    await _store(storage, [make_instance(study=study, series=series)])
    etag = await _series_etag(storage, study, series)
    await storage.studies.update_entity({"PartitionKey": str(study), "RowKey": f"series|{series}"})  # another writer
    assert known_document(storage, study, series, await _series_etag(storage, study, series)) is None
    assert known_document(storage, study, series, etag) is not None
