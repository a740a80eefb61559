"""Series metadata documents against Azurite: kept current by STOW, exact under concurrency, self-healing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from pydicom.uid import generate_uid

from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance
from dicom_core.index.reads import instance_rows, stored_instance
from dicom_core.documents.series_documents import (
    STATE_KEY, add_instance, block_id, document_name, remove_instance, stream_document, verified_properties,
)
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


async def _blocks(storage: Storage, study: str, series: str) -> list[str]:
    committed, _ = await storage.metadata.get_blob_client(document_name(study, series)).get_block_list("committed")
    return [block.id for block in committed]


async def _expected_blocks(storage: Storage, study: str, series: str) -> list[str]:
    rows = await instance_rows(storage, study, series, select=["Version"])
    return [block_id(s.ids.instance, s.version) for s in (stored_instance(study, row) for row in rows)]


async def _read(storage: Storage, study: str, series: str) -> list[dict]:
    etag = (await storage.studies.get_entity(study, f"series|{series}")).metadata["etag"]
    properties = await verified_properties(storage, study, series, etag)
    text = b"".join([chunk async for chunk in json_array(stream_document(storage, study, series, etag, properties))])
    return json.loads(text)


def _uids(items: list[dict]) -> set[str]:
    return {item[SOP_INSTANCE_UID]["Value"][0] for item in items}


async def test_stored_instances_are_the_blocks_of_their_series_document(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    await _store(storage, [make_instance(study=study, series=series) for _ in range(3)])
    assert sorted(await _blocks(storage, study, series)) == sorted(await _expected_blocks(storage, study, series))


async def test_upsert_replaces_the_block_in_place(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    sops = [generate_uid() for _ in range(3)]
    for sop in sops:  # one by one, so the order is known
        await _store(storage, [make_instance(study=study, series=series, sop=sop)])
    before = await _blocks(storage, study, series)
    await _store(storage, [make_instance(study=study, series=series, sop=sops[1], StudyDescription="new")], upsert=True)
    after = await _blocks(storage, study, series)
    assert after[0] == before[0] and after[2] == before[2] and after[1] != before[1]
    assert sorted(after) == sorted(await _expected_blocks(storage, study, series))
    descriptions = {i[SOP_INSTANCE_UID]["Value"][0]: i.get(STUDY_DESCRIPTION) for i in await _read(storage, study, series)}
    assert descriptions[sops[1]] == {"vr": "LO", "Value": ["new"]}


async def test_concurrent_stores_into_one_series_leave_every_block(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    batches = [[make_instance(study=study, series=series) for _ in range(4)] for _ in range(10)]
    await asyncio.gather(*(_store(storage, batch) for batch in batches))
    # Checked on the raw block list: the writers alone are exact, no reader had to repair anything.
    assert sorted(await _blocks(storage, study, series)) == sorted(await _expected_blocks(storage, study, series))
    assert len(await _blocks(storage, study, series)) == 40


async def test_remove_instance_takes_its_block_out(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    sops = [generate_uid() for _ in range(2)]
    await _store(storage, [make_instance(study=study, series=series, sop=sop) for sop in sops])
    await remove_instance(storage, InstanceIdentifiers(study, series, sops[0]))
    blocks = await _blocks(storage, study, series)
    assert len(blocks) == 1 and blocks[0].startswith(block_id(sops[1], "")[:32])


async def test_reader_repairs_a_document_that_missed_a_committed_instance(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    sops = [generate_uid() for _ in range(3)]
    await _store(storage, [make_instance(study=study, series=series, sop=sop) for sop in sops])
    # As if the store of sops[2] had crashed between its Table commit and its document write.
    await remove_instance(storage, InstanceIdentifiers(study, series, sops[2]))
    assert _uids(await _read(storage, study, series)) == set(sops)
    assert sorted(await _blocks(storage, study, series)) == sorted(await _expected_blocks(storage, study, series))


async def test_reader_repairs_a_block_of_a_superseded_version(storage: Storage) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    await _store(storage, [make_instance(study=study, series=series, sop=sop, StudyDescription="current")])
    # As if an older upsert's document write had landed after the newer one's.
    stale = StoredInstance(InstanceIdentifiers(study, series, sop), "0" * 24)
    await add_instance(storage, stale, {SOP_INSTANCE_UID: {"vr": "UI", "Value": [sop]}})
    [item] = await _read(storage, study, series)
    assert item[STUDY_DESCRIPTION]["Value"] == ["current"]


async def test_reader_builds_a_missing_document(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    datas = [make_instance(study=study, series=series) for _ in range(3)]
    await _store(storage, datas)
    await storage.metadata.delete_blob(document_name(study, series))  # as for a series stored before documents
    assert len(await _read(storage, study, series)) == 3


async def test_verified_document_is_not_written_again_by_the_next_reader(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    await _store(storage, [make_instance(study=study, series=series)])
    etag = (await storage.studies.get_entity(study, f"series|{series}")).metadata["etag"]
    first = await verified_properties(storage, study, series, etag)
    second = await verified_properties(storage, study, series, etag)
    assert first.etag == second.etag
    assert first.metadata[STATE_KEY] != "unverified"


async def test_a_store_marks_the_document_unverified(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    await _store(storage, [make_instance(study=study, series=series)])
    await _read(storage, study, series)
    await _store(storage, [make_instance(study=study, series=series)])
    properties = await storage.metadata.get_blob_client(document_name(study, series)).get_blob_properties()
    assert properties.metadata[STATE_KEY] == "unverified"


async def test_series_without_instances_reads_as_an_empty_array(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()  # e.g. every instance deleted, the series row kept
    properties = await verified_properties(storage, study, series, "an-etag")
    text = b"".join([chunk async for chunk in json_array(stream_document(storage, study, series, "an-etag", properties))])
    assert text == b"[]"
