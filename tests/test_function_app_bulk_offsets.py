"""Instances stored before bulk data (their JSON without binary attributes) get BulkDataURIs from the maintenance
job, read from their stored files without a re-store; the URIs answer exactly the attributes' bytes."""

from __future__ import annotations

import io
import json

import httpx
import pytest
from azure.data.tables import UpdateMode
from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid

from dicom_core.index.reads import get_instance
from dicom_core.index.rows import ROW_METADATA, instance_row_key, series_row_key
from dicom_core.maintenance.bulk_offsets import add_bulk_offsets
from dicom_core.model.dicom_json import metadata_json
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance
from dicom_core.settings import Settings
from dicom_core.storage.blobs import metadata_blob_name, put_json
from dicom_core.storage.clients import Storage, open_storage
from tests.factories import make_binary_dataset, multipart_body, to_bytes

STORE_TYPE = 'multipart/related; type="application/dicom"; boundary=test-boundary'
DICOM_JSON = "application/dicom+json"


def _store(server: str, datasets: list[Dataset]) -> None:
    response = httpx.post(f"{server}/v2/studies", content=multipart_body([to_bytes(d) for d in datasets]),
                          headers={"Content-Type": STORE_TYPE, "Accept": DICOM_JSON}, timeout=60)
    assert response.status_code == 200, response.text


async def _as_stored_before_bulk_data(storage: Storage, ds: Dataset, *, in_blob: bool) -> None:
    """Rewrite an instance's JSON as the store wrote it before bulk data: every binary attribute left out, kept in
    its row or (stored before rows held it) in the version's metadata blob."""
    old = json.dumps(metadata_json(dcmread(io.BytesIO(to_bytes(ds)), defer_size=1024)), separators=(",", ":"))
    ids = InstanceIdentifiers(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
    row = await get_instance(storage, ids)
    assert row is not None
    if in_blob:
        await put_json(storage, metadata_blob_name(StoredInstance(ids, str(row["Version"]))), old.encode())
    await storage.studies.update_entity({"PartitionKey": ids.study, "RowKey": instance_row_key(ids.series,
                                                                                                ids.instance),
                                         ROW_METADATA: "" if in_blob else old}, mode=UpdateMode.MERGE)
    # the series document is rebuilt from the rows, as it held them then
    await storage.studies.update_entity({"PartitionKey": ids.study, "RowKey": series_row_key(ids.series)},
                                        mode=UpdateMode.MERGE)


def _metadata(server: str, path: str) -> list[dict]:
    response = httpx.get(f"{server}{path}/metadata", headers={"Accept": DICOM_JSON})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _expected(ds: Dataset) -> dict[str, bytes]:
    return {"7FE00010": ds.PixelData, "60003000": ds[0x60003000].value, "00420011": ds.EncapsulatedDocument}


@pytest.mark.parametrize("in_blob", [False, True])
async def test_instances_stored_before_bulk_data_get_uris_answering_their_bytes(
    server: str, storage_env: dict[str, str], in_blob: bool,
) -> None:
    study, series = str(generate_uid()), str(generate_uid())
    datasets = [make_binary_dataset(study=study, series=series) for _ in range(2)]
    _store(server, datasets)
    storage = await open_storage(Settings.from_environment(storage_env))
    try:
        for ds in datasets:
            await _as_stored_before_bulk_data(storage, ds, in_blob=in_blob)
        before = _metadata(server, f"/v2/studies/{study}/series/{series}")
        assert all("7FE00010" not in record for record in before)  # answered as Azure does
        report = await add_bulk_offsets(storage, [study])
        again = await add_bulk_offsets(storage, [study])
    finally:
        await storage.close()
    assert (report.instances, report.updated, report.unreadable) == (2, 2, 0)
    assert again.updated == 0 and again.file_requests == 0  # idempotent: records with bulk data are left alone
    by_sop = {ds.SOPInstanceUID: ds for ds in datasets}
    for path in (f"/v2/studies/{study}", f"/v2/studies/{study}/series/{series}"):
        records = _metadata(server, path)
        assert len(records) == 2
        for record in records:
            ds = by_sop[record["00080018"]["Value"][0]]
            for key, value in _expected(ds).items():
                assert httpx.get(record[key]["BulkDataURI"]).content == value
            waveform = record["54000100"]["Value"][0]["54001010"]["BulkDataURI"]
            assert httpx.get(waveform).content == ds.WaveformSequence[0].WaveformData
            assert "InlineBinary" in record["00282000"]
    ds = datasets[0]
    (instance,) = _metadata(server, f"/v2/studies/{study}/series/{series}/instances/{ds.SOPInstanceUID}")
    response = httpx.get(instance["00420011"]["BulkDataURI"])
    assert (response.headers["content-type"], response.content) == ("application/pdf", ds.EncapsulatedDocument)


async def test_the_file_is_read_by_ranges_not_whole(server: str, storage_env: dict[str, str]) -> None:
    ds = make_binary_dataset(rows=512, columns=512)  # 512 KiB of pixel data, never read
    _store(server, [ds])
    storage = await open_storage(Settings.from_environment(storage_env))
    try:
        await _as_stored_before_bulk_data(storage, ds, in_blob=False)
        report = await add_bulk_offsets(storage, [str(ds.StudyInstanceUID)])
    finally:
        await storage.close()
    assert report.updated == 1
    assert report.file_requests <= 2  # the elements before the pixel data, then the last block's end
