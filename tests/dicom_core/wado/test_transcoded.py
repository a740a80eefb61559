"""A single instance retrieved transcoded: one application/dicom body of a known length."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom_core.model.identifiers import InstanceIdentifiers
from dicom_core.storage.clients import Storage
from dicom_core.stow.service import StoreRequest, store_instances
from dicom_core.wado.retrieve import retrieve_instance

TRANSCODED = f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _store_rle_sample(storage: Storage) -> InstanceIdentifiers:
    ds = dcmread(get_testdata_file("SC_rgb_rle_16bit_2frame.dcm"))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    request = StoreRequest(api_version=2, study_uid=None, content_type="application/dicom", accept=None,
                           base_url="http://test")
    assert (await store_instances(storage, request, _body(buffer.getvalue()))).status == 200
    return InstanceIdentifiers(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)


async def test_transcoded_instance_has_the_content_length_of_its_body(storage: Storage) -> None:
    response = await retrieve_instance(storage, await _store_rle_sample(storage), TRANSCODED)
    body = response.body
    assert isinstance(body, bytes)  # a small transcoded file is at hand whole: sent in one piece
    assert response.headers["Content-Length"] == str(len(body))
    assert dcmread(io.BytesIO(body)).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
