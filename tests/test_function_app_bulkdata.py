"""Bulk data end to end: BulkDataURIs in metadata and the bytes they answer, over HTTP to the local host."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid

from dicom_core.model.dicom_json import metadata_json
from tests.factories import make_binary_dataset, multipart_body, to_bytes

STORE_TYPE = 'multipart/related; type="application/dicom"; boundary=test-boundary'
DICOM_JSON = "application/dicom+json"
OCTET_PARTS = 'multipart/related; type="application/octet-stream"'
PIXEL_DATA, OVERLAY_DATA, DOCUMENT = "7FE00010", "60003000", "00420011"
WAVEFORMS, WAVEFORM_DATA = "54000100", "54001010"


@pytest.fixture(scope="module")
def stored(server: str) -> Dataset:
    ds = make_binary_dataset(study=generate_uid())
    response = httpx.post(f"{server}/v2/studies", content=multipart_body([to_bytes(ds)]),
                          headers={"Content-Type": STORE_TYPE, "Accept": DICOM_JSON}, timeout=60)
    assert response.status_code == 200, response.text
    return ds


def _instance(ds: Dataset) -> str:
    return f"/v2/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def _metadata(server: str, ds: Dataset, level: str = "instance") -> dict[str, Any]:
    path = {"instance": _instance(ds), "series": _instance(ds).rsplit("/instances/", 1)[0],
            "study": f"/v2/studies/{ds.StudyInstanceUID}"}[level]
    response = httpx.get(f"{server}{path}/metadata", headers={"Accept": DICOM_JSON})
    assert response.status_code == 200, response.text
    (instance,) = response.json()
    return instance  # type: ignore[no-any-return]


def _uri(metadata: dict[str, Any], key: str) -> str:
    return str(metadata[key]["BulkDataURI"])


@pytest.mark.parametrize("level", ["instance", "series", "study"])
def test_metadata_names_binary_attributes_by_bulk_data_uri(server: str, stored: Dataset, level: str) -> None:
    metadata = _metadata(server, stored, level)
    for key in (PIXEL_DATA, OVERLAY_DATA, DOCUMENT):
        assert _uri(metadata, key).startswith(f"{server}{_instance(stored)}/bulkdata/")
    assert _uri(metadata[WAVEFORMS]["Value"][0], WAVEFORM_DATA).startswith(f"{server}{_instance(stored)}/bulkdata/")


def test_each_bulk_data_uri_answers_the_attribute_bytes(server: str, stored: Dataset) -> None:
    metadata = _metadata(server, stored)
    expected = {PIXEL_DATA: stored.PixelData, OVERLAY_DATA: stored[0x60003000].value,
                DOCUMENT: stored.EncapsulatedDocument}
    for key, value in expected.items():
        response = httpx.get(_uri(metadata, key), headers={"Accept": "application/octet-stream"})
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.content == value
    nested = httpx.get(_uri(metadata[WAVEFORMS]["Value"][0], WAVEFORM_DATA))
    assert nested.content == stored.WaveformSequence[0].WaveformData


def test_small_binary_attributes_are_inline(server: str, stored: Dataset) -> None:
    assert _metadata(server, stored)["00282000"]["vr"] == "OB"
    assert "InlineBinary" in _metadata(server, stored)["00282000"]


def test_multipart_accept_answers_one_octet_stream_part(server: str, stored: Dataset) -> None:
    response = httpx.get(_uri(_metadata(server, stored), DOCUMENT), headers={"Accept": OCTET_PARTS})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(OCTET_PARTS)
    assert stored.EncapsulatedDocument in response.content


def test_a_range_answers_206_with_those_bytes(server: str, stored: Dataset) -> None:
    uri = _uri(_metadata(server, stored), PIXEL_DATA)
    total = len(stored.PixelData)
    response = httpx.get(uri, headers={"Range": "bytes=100-199"})
    assert response.status_code == 206
    assert response.content == stored.PixelData[100:200]
    assert response.headers["content-range"] == f"bytes 100-199/{total}"
    assert httpx.get(uri, headers={"Range": "bytes=-10"}).content == stored.PixelData[-10:]


def test_a_range_outside_the_value_answers_416(server: str, stored: Dataset) -> None:
    uri = _uri(_metadata(server, stored), PIXEL_DATA)
    response = httpx.get(uri, headers={"Range": f"bytes={len(stored.PixelData)}-"})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(stored.PixelData)}"


def test_a_replaced_instance_answers_404_not_its_new_bytes(server: str) -> None:
    ds = make_binary_dataset(study=generate_uid())
    httpx.post(f"{server}/v2/studies", content=multipart_body([to_bytes(ds)]), headers={"Content-Type": STORE_TYPE})
    uri = _uri(_metadata(server, ds), PIXEL_DATA)
    ds.PatientID = "REPLACED-WITH-A-LONGER-ID"
    replaced = httpx.put(f"{server}/v2/studies", content=multipart_body([to_bytes(ds)]),
                         headers={"Content-Type": STORE_TYPE})
    assert replaced.status_code == 200, replaced.text
    assert httpx.get(uri).status_code == 404
    assert httpx.get(_uri(_metadata(server, ds), PIXEL_DATA)).content == ds.PixelData


def test_a_uri_this_service_did_not_hand_out_answers_404(server: str, stored: Dataset) -> None:
    assert httpx.get(f"{server}{_instance(stored)}/bulkdata/nope/12").status_code == 404


def test_dicomweb_client_retrieves_bulk_data(server: str, stored: Dataset) -> None:
    client = DICOMwebClient(f"{server}/v2")
    uri = _uri(_metadata(server, stored), DOCUMENT)
    assert client.retrieve_bulkdata(uri) == [stored.EncapsulatedDocument]


def test_omit_setting_answers_metadata_without_binary_attributes(
    serve_with_env: Callable[[dict[str, str]], AbstractContextManager[str]],
    stored: Dataset,
) -> None:
    without = metadata_json(dcmread(io.BytesIO(to_bytes(stored)), defer_size=1024))
    expected = b"[" + json.dumps(without, separators=(",", ":")).encode() + b"]"
    with serve_with_env({"DICOMWEB_METADATA_BULKDATA": "omit"}) as omitting:
        for path in (_instance(stored), _instance(stored).rsplit("/instances/", 1)[0]):
            response = httpx.get(f"{omitting}{path}/metadata", headers={"Accept": DICOM_JSON})
            assert response.content == expected



def test_bulk_data_uris_follow_the_forwarded_host(server: str, stored: Dataset) -> None:
    response = httpx.get(f"{server}{_instance(stored)}/metadata",
                         headers={"Accept": DICOM_JSON, "X-Forwarded-Host": "dicom.example.org",
                                  "X-Forwarded-Proto": "https"})
    assert _uri(response.json()[0], PIXEL_DATA).startswith(f"https://dicom.example.org{_instance(stored)}/bulkdata/")


def test_search_leaves_binary_attributes_out(server: str, stored: Dataset) -> None:
    response = httpx.get(f"{server}/v2/studies/{stored.StudyInstanceUID}/instances",
                         params={"includefield": "00420011"}, headers={"Accept": DICOM_JSON})
    assert response.status_code == 200
    (result,) = response.json()
    assert DOCUMENT not in result
