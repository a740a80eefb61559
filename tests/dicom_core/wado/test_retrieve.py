"""Study, series and instance retrieve at the service level, against Azurite."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom_core.index.reads import FIRST_BATCH_ROWS, instance_row_batches
from dicom_core.model.errors import NotAcceptableError, NotFoundError
from dicom_core.model.identifiers import InstanceIdentifiers
from dicom_core.storage.clients import Storage
from dicom_core.stow.service import StoreRequest, store_instances
from dicom_core.wado.retrieve import retrieve_instance, retrieve_series, retrieve_study
from dicom_core.wire.media_types import parse_media_type
from dicom_core.wire.multipart import iter_parts
from tests.factories import make_instance

ELE_SINGLE_PART = "application/dicom"


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _store(storage: Storage, data: bytes) -> InstanceIdentifiers:
    request = StoreRequest(api_version=2, study_uid=None, content_type="application/dicom", accept=None,
                           base_url="http://test")
    assert (await store_instances(storage, request, _body(data))).status in (200, 202)
    ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
    return InstanceIdentifiers(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)


def _sample(name: str) -> bytes:
    ds = dcmread(get_testdata_file(name))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture
def tiny_transcode_storage(storage: Storage) -> Storage:
    """The session's Storage with settings that transcode files of at most 1 KiB."""
    return replace(storage, settings=replace(storage.settings, max_transcode_bytes=1024))


async def test_transcoding_over_the_limit_is_406_naming_transfer_syntax_star(tiny_transcode_storage: Storage) -> None:
    ids = await _store(tiny_transcode_storage, _sample("MR_small_RLE.dcm"))
    with pytest.raises(NotAcceptableError, match=r"transfer-syntax=\*"):
        await retrieve_instance(tiny_transcode_storage, ids, ELE_SINGLE_PART)


async def test_as_stored_is_not_limited_by_the_transcoding_limit(tiny_transcode_storage: Storage) -> None:
    data = _sample("MR_small_RLE.dcm")
    ids = await _store(tiny_transcode_storage, data)
    response = await retrieve_instance(tiny_transcode_storage, ids, "application/dicom; transfer-syntax=*")
    assert b"".join([chunk async for chunk in response.body]) == data


async def test_undecodable_instance_is_406_before_the_answer_starts(storage: Storage) -> None:
    ids = await _store(storage, _sample("JPEG-lossy.dcm"))  # its JPEG stream is broken: no decoder reads it
    with pytest.raises(NotAcceptableError, match="cannot be decoded"):
        await retrieve_instance(storage, ids, ELE_SINGLE_PART)


async def test_series_of_a_uid_that_prefixes_another_lists_only_its_own(storage: Storage) -> None:
    study, short = generate_uid(), "1.2.3.4"
    await _store(storage, make_instance(study=study, series=short))
    await _store(storage, make_instance(study=study, series=short + "5"))
    response = await retrieve_series(storage, study, short, 'multipart/related; type="application/dicom"')
    body = b"".join([chunk async for chunk in response.body])
    assert body.count(f"Content-Type: application/dicom; transfer-syntax={ExplicitVRLittleEndian}".encode()) == 1


async def test_a_series_of_more_instances_than_the_first_batch_comes_whole_in_uid_order(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    stored = [await _store(storage, make_instance(study=study, series=series)) for _ in range(FIRST_BATCH_ROWS + 3)]
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    response = await retrieve_series(storage, study, series, accept)
    boundary = parse_media_type(response.headers["Content-Type"]).params["boundary"]
    parts = [part async for part in iter_parts(response.body, boundary, max_part_bytes=1 << 20)]
    uids = [dcmread(part.file, stop_before_pixels=True).SOPInstanceUID for part in parts]
    assert uids == sorted(ids.instance for ids in stored)


async def test_instance_rows_come_in_a_small_first_batch_then_the_others(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    for _ in range(5):
        await _store(storage, make_instance(study=study, series=series))
    batches = [len(rows) async for rows in instance_row_batches(storage, study, series, select=["Version"], first=2)]
    assert batches == [2, 3]


async def test_a_missing_study_is_404_when_retrieved_as_stored(storage: Storage) -> None:
    with pytest.raises(NotFoundError, match="study cannot be found"):
        await retrieve_study(storage, generate_uid(), "*/*")
