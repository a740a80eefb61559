"""What this process remembers to answer frames and series metadata sooner never outlives the version it is of."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from dataclasses import replace

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from dicom_core.delete.service import delete_instance
from dicom_core.documents import document_writes
from dicom_core.model.errors import NotFoundError
from dicom_core.model.identifiers import InstanceIdentifiers
from dicom_core.storage.clients import Storage, open_storage
from dicom_core.stow.service import StoreRequest, store_instances
from dicom_core.wado.frames import retrieve_frames
from dicom_core.wado.known_frames import known_frames
from dicom_core.wado.metadata import MetadataRequest, series_metadata, study_metadata
from tests.factories import make_dataset, to_bytes

FRAME_AS_STORED = "application/octet-stream; transfer-syntax=*"
JSON = MetadataRequest(accept="application/dicom+json", accept_encoding="identity")
SOP_INSTANCE_UID = "00080018"
INSTANCE_NUMBER = "00200013"


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _store(storage: Storage, data: bytes, *, upsert: bool = False) -> InstanceIdentifiers:
    request = StoreRequest(api_version=2, study_uid=None, content_type="application/dicom", accept=None,
                           base_url="http://test", upsert=upsert)
    assert (await store_instances(storage, request, _body(data))).status == 200
    ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
    return InstanceIdentifiers(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)


def _multiframe(ids: InstanceIdentifiers | None, value: int, **attributes: object) -> bytes:
    """A 3-frame 4×4 instance whose pixels are all ``value``."""
    ds = make_dataset(study=ids.study if ids else None, series=ids.series if ids else None,
                      sop=ids.instance if ids else None, rows=4, columns=4, frames=3, **attributes)
    ds.PixelData = np.full((3, 4, 4), value, dtype=np.uint16).tobytes()
    return to_bytes(ds)


async def _frame(storage: Storage, ids: InstanceIdentifiers, number: int) -> bytes:
    response = await retrieve_frames(storage, ids, str(number), FRAME_AS_STORED)
    if isinstance(response.body, bytes):
        return response.body
    return b"".join([chunk async for chunk in response.body])  # type: ignore[union-attr]


async def _metadata(storage: Storage, ids: InstanceIdentifiers) -> list[dict[str, object]]:
    response = await series_metadata(storage, ids.study, ids.series, JSON)
    if isinstance(response.body, bytes):
        return json.loads(response.body)
    return json.loads(b"".join([chunk async for chunk in response.body]))  # type: ignore[union-attr]


async def test_a_frame_read_again_is_the_same_frame(storage: Storage) -> None:
    ids = await _store(storage, _multiframe(None, 7))
    first = await _frame(storage, ids, 2)
    assert known_frames(storage, ids) is not None
    assert await _frame(storage, ids, 2) == first == np.full(16, 7, dtype=np.uint16).tobytes()


async def test_a_remembered_frame_costs_one_read_of_the_row_version_and_one_ranged_get(
        own: Storage, storage_fault_proxy) -> None:
    ids = await _store(own, _multiframe(None, 7))
    proxied = await open_storage(replace(own.settings, storage_connection_string=storage_fault_proxy.connection_string))
    try:
        first = await _frame(proxied, ids, 2)
        storage_fault_proxy.requests.clear()
        assert await _frame(proxied, ids, 2) == first
    finally:
        await proxied.close()
    requests = [(service, method, "$select=Version" in target and "," not in target.split("$select=")[1])
                for service, method, target in storage_fault_proxy.requests]
    assert sorted(requests) == [("blob", "GET", False), ("table", "GET", True)]


async def test_a_replaced_instance_answers_the_frames_of_its_new_version(storage: Storage) -> None:
    ids = await _store(storage, _multiframe(None, 7))
    await _frame(storage, ids, 3)  # remembered
    await _store(storage, _multiframe(ids, 9), upsert=True)
    assert await _frame(storage, ids, 3) == np.full(16, 9, dtype=np.uint16).tobytes()


async def test_a_deleted_instance_has_no_frames_even_when_remembered(storage: Storage) -> None:
    ids = await _store(storage, _multiframe(None, 7))
    await _frame(storage, ids, 1)
    await delete_instance(storage, ids)
    with pytest.raises(NotFoundError):
        await _frame(storage, ids, 1)


async def test_a_frame_beyond_the_remembered_count_is_still_404(storage: Storage) -> None:
    ids = await _store(storage, _multiframe(None, 7))
    await _frame(storage, ids, 1)
    with pytest.raises(NotFoundError):
        await _frame(storage, ids, 4)


async def test_series_metadata_read_again_holds_an_instance_stored_since(storage: Storage) -> None:
    ids = await _store(storage, _multiframe(None, 1))
    assert len(await _metadata(storage, ids)) == 1  # remembered
    other = await _store(storage, _multiframe(InstanceIdentifiers(ids.study, ids.series, generate_uid()), 2))
    uids = {item[SOP_INSTANCE_UID]["Value"][0] for item in await _metadata(storage, ids)}  # type: ignore[index]
    assert uids == {ids.instance, other.instance}


async def test_series_metadata_read_again_drops_an_instance_deleted_since(storage: Storage) -> None:
    ids = await _store(storage, _multiframe(None, 1))
    other = await _store(storage, _multiframe(InstanceIdentifiers(ids.study, ids.series, generate_uid()), 2))
    assert len(await _metadata(storage, ids)) == 2
    await delete_instance(storage, other)
    uids = [item[SOP_INSTANCE_UID]["Value"][0] for item in await _metadata(storage, ids)]  # type: ignore[index]
    assert uids == [ids.instance]


async def test_series_metadata_read_again_shows_an_upsert_since(storage: Storage) -> None:
    ids = await _store(storage, _multiframe(None, 1, InstanceNumber=1))
    await _metadata(storage, ids)
    await _store(storage, _multiframe(ids, 1, InstanceNumber=2), upsert=True)
    numbers = [item[INSTANCE_NUMBER]["Value"][0] for item in await _metadata(storage, ids)]  # type: ignore[index]
    assert numbers == [2]


async def test_remembered_series_metadata_is_the_document_as_read(storage: Storage) -> None:
    ids = await _store(storage, _multiframe(None, 1))
    first = await series_metadata(storage, ids.study, ids.series, JSON)
    # Streamed from the document, or (a document its writer wrote whole) sent from the writer's copy.
    streamed = first.body if isinstance(first.body, bytes) else b"".join([chunk async for chunk in first.body])
    second = await series_metadata(storage, ids.study, ids.series, JSON)
    assert second.body == streamed and second.headers["ETag"] == first.headers["ETag"]


async def test_study_metadata_read_again_holds_an_instance_stored_since(storage: Storage) -> None:
    ids = await _store(storage, _multiframe(None, 1))
    assert len(await _metadata(storage, ids)) == 1  # the series document is remembered
    other = await _store(storage, _multiframe(InstanceIdentifiers(ids.study, ids.series, generate_uid()), 2))
    response = await study_metadata(storage, ids.study, JSON)
    items = json.loads(b"".join([chunk async for chunk in response.body]))  # type: ignore[union-attr]
    assert {item[SOP_INSTANCE_UID]["Value"][0] for item in items} == {ids.instance, other.instance}


async def test_series_metadata_of_a_document_grown_by_blocks_follows_stores_upserts_and_deletes(
    storage: Storage, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(document_writes, "WHOLE_PUT_BYTES", 0)  # its writer keeps what it appended to blocks
    ids = await _store(storage, _multiframe(None, 1, InstanceNumber=1))
    other = await _store(storage, _multiframe(InstanceIdentifiers(ids.study, ids.series, generate_uid()), 2))
    assert {item[SOP_INSTANCE_UID]["Value"][0] for item in await _metadata(storage, ids)} \
        == {ids.instance, other.instance}  # type: ignore[index]
    await _store(storage, _multiframe(ids, 1, InstanceNumber=2), upsert=True)
    await delete_instance(storage, other)
    numbers = [item[INSTANCE_NUMBER]["Value"][0] for item in await _metadata(storage, ids)]  # type: ignore[index]
    assert numbers == [2]


async def test_series_metadata_kept_for_a_row_another_process_changed_is_read_again(storage: Storage) -> None:
    ids = await _store(storage, _multiframe(None, 1))
    await _metadata(storage, ids)  # kept
    await storage.studies.update_entity({"PartitionKey": str(ids.study), "RowKey": f"series|{ids.series}"})
    assert [item[SOP_INSTANCE_UID]["Value"][0] for item in await _metadata(storage, ids)] \
        == [ids.instance]  # type: ignore[index]
