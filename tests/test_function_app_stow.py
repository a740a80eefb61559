"""STOW-RS end to end: real HTTP over loopback to the local host, real Azurite behind it."""

from __future__ import annotations

import hashlib
import io
import subprocess
from xml.etree import ElementTree

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

from dicom_core.wire.media_types import DICOM_JSON
from tests.factories import make_dataset, make_instance, multipart_body, to_bytes
from tests.seed_files import SEED, SEED_STUDY

MULTIPART = 'multipart/related; type="application/dicom"; boundary=test-boundary'

REFERENCED_SOP_SEQUENCE = "00081199"
FAILED_SOP_SEQUENCE = "00081198"
RETRIEVE_URL = "00081190"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILED_ATTRIBUTES_SEQUENCE = "00741048"


def _curl(*args: str) -> tuple[int, str, bytes]:
    """Run curl like the Azure walkthrough does; return status, Content-Type and body."""
    out = subprocess.run(
        ["curl", "--silent", "--show-error", "--location", "--write-out", "\n%{http_code}\n%{content_type}", *args],
        check=True, capture_output=True,
    ).stdout
    body, status, content_type = out.rsplit(b"\n", 2)
    return int(status), content_type.decode(), body


def _items(body: dict, sequence: str) -> list[dict]:
    return body.get(sequence, {}).get("Value", [])


def _post(server: str, body: bytes, path: str = "/v2/studies", content_type: str = MULTIPART,
          method: str = "POST", **headers: str) -> httpx.Response:
    return httpx.request(method, server + path, content=body,
                         headers={"Content-Type": content_type, "Accept": DICOM_JSON, **headers}, timeout=60)


def test_walkthrough_curl_requests_store_the_seed_files(server: str, blobs) -> None:
    assert SEED.is_dir(), f"the walkthrough's sample files are expected in {SEED}"
    accept = "Accept: application/dicom+json"
    multipart = 'Content-Type: multipart/related; type="application/dicom"'
    red, green, blue = (SEED / f"{name}.dcm" for name in ("red-triangle", "green-square", "blue-circle"))

    status, content_type, _ = _curl("--request", "POST", f"{server}/v2/studies", "--header", accept,
                                    "--header", multipart, "--form", f"file1=@{red};type=application/dicom")
    assert (status, content_type) == (200, DICOM_JSON)
    status, _, _ = _curl("--request", "POST", f"{server}/v2/studies/{SEED_STUDY}", "--header", accept,
                         "--header", multipart, "--form", f"file1=@{blue};type=application/dicom")
    assert status == 200
    status, _, _ = _curl("--request", "POST", f"{server}/v2/studies", "--header", accept,
                         "--header", "Content-Type: application/dicom", "--data-binary", f"@{green}")
    assert status == 200
    status, _, _ = _curl("--request", "PUT", f"{server}/v2/studies/{SEED_STUDY}", "--header", accept,
                         "--header", multipart, "--form", f"file1=@{red};type=application/dicom")
    assert status == 200
    status, _, _ = _curl("--request", "POST", f"{server}/v1/studies", "--header", accept,
                         "--header", multipart, "--form", f"file1=@{red};type=application/dicom")
    assert status == 409

    stored = {hashlib.sha256(blobs.read(name)).hexdigest() for name in blobs.names(SEED_STUDY)}
    assert stored == {hashlib.sha256(path.read_bytes()).hexdigest() for path in (red, green, blue)}


def test_response_lists_stored_instance_with_retrieve_url(server: str) -> None:
    ds = make_dataset()
    response = _post(server, multipart_body([to_bytes(ds)]))
    assert response.status_code == 200
    assert response.headers["content-type"] == DICOM_JSON
    [item] = _items(response.json(), REFERENCED_SOP_SEQUENCE)
    assert item[REFERENCED_SOP_INSTANCE_UID]["Value"] == [ds.SOPInstanceUID]
    assert item[RETRIEVE_URL]["Value"] == [
        f"{server}/v2/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    ]
    assert item[FAILED_ATTRIBUTES_SEQUENCE] == {"vr": "SQ"}


def test_retrieve_urls_use_the_configured_public_base_url(public_url_server: str, public_base_url: str) -> None:
    ds = make_dataset()
    response = _post(public_url_server, to_bytes(ds), path=f"/v1/studies/{ds.StudyInstanceUID}",
                     content_type="application/dicom")
    assert response.status_code == 200
    assert response.json()[RETRIEVE_URL]["Value"] == [f"{public_base_url}/v1/studies/{ds.StudyInstanceUID}"]


def test_store_into_study_url_adds_top_level_retrieve_url(server: str) -> None:
    ds = make_dataset()
    response = _post(server, multipart_body([to_bytes(ds)]), path=f"/v2/studies/{ds.StudyInstanceUID}")
    assert response.status_code == 200
    assert response.json()[RETRIEVE_URL]["Value"] == [f"{server}/v2/studies/{ds.StudyInstanceUID}"]


def test_stored_blob_is_byte_exact(server: str, blobs) -> None:
    ds = make_dataset(rows=64, columns=64)
    data = to_bytes(ds)
    assert _post(server, data, content_type="application/dicom").status_code == 200
    [name] = blobs.names(f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}/")
    assert name.endswith(".dcm")
    assert blobs.read(name) == data


def test_duplicate_post_fails_with_45070(server: str) -> None:
    data = make_instance()
    assert _post(server, multipart_body([data])).status_code == 200
    response = _post(server, multipart_body([data]))
    assert response.status_code == 409
    [item] = _items(response.json(), FAILED_SOP_SEQUENCE)
    assert item[FAILURE_REASON]["Value"] == [45070]


def test_same_instance_twice_in_one_request_is_202(server: str) -> None:
    data = make_instance()
    response = _post(server, multipart_body([data, data]))
    assert response.status_code == 202
    assert len(_items(response.json(), REFERENCED_SOP_SEQUENCE)) == 1
    assert [i[FAILURE_REASON]["Value"] for i in _items(response.json(), FAILED_SOP_SEQUENCE)] == [[45070]]


def test_put_replaces_the_stored_instance(server: str, blobs) -> None:
    ds = make_dataset(StudyDescription="first")
    assert _post(server, to_bytes(ds), content_type="application/dicom").status_code == 200
    ds.StudyDescription = "second"
    replacement = to_bytes(ds)
    assert _post(server, replacement, content_type="application/dicom", method="PUT").status_code == 200
    url = f"{server}/v2/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    response = httpx.get(url, headers={"Accept": "application/dicom; transfer-syntax=*"}, timeout=30)
    assert response.content == replacement
    # The replaced version stays (a reader may be in the middle of it) until the blob cleanup deletes it.
    assert len(blobs.names(f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}/")) == 2


def test_study_mismatch_fails_with_43264(server: str) -> None:
    response = _post(server, multipart_body([make_instance()]), path=f"/v2/studies/{generate_uid()}")
    assert response.status_code == 409
    [item] = _items(response.json(), FAILED_SOP_SEQUENCE)
    assert item[FAILURE_REASON]["Value"] == [43264]
    assert "does not match" in str(item[FAILED_ATTRIBUTES_SEQUENCE])


def test_invalid_uid_in_file_fails_with_43264(server: str) -> None:
    response = _post(server, multipart_body([make_instance(sop="abc.123")]))
    assert response.status_code == 409
    assert _items(response.json(), FAILED_SOP_SEQUENCE)[0][FAILURE_REASON]["Value"] == [43264]


def test_invalid_study_uid_in_url_is_400(server: str) -> None:
    response = _post(server, multipart_body([make_instance()]), path="/v2/studies/" + "1" * 65)
    assert response.status_code == 400
    assert "not a valid DICOM UID" in response.text


def test_empty_single_part_body_is_409(server: str) -> None:
    response = _post(server, b"", content_type="application/dicom")
    assert response.status_code == 409
    assert _items(response.json(), FAILED_SOP_SEQUENCE)[0][FAILURE_REASON]["Value"] == [43264]


def test_garbage_part_next_to_good_part_is_202_and_stores_the_good_one(server: str, blobs) -> None:
    ds = make_dataset()
    response = _post(server, multipart_body([b"not a DICOM file at all", to_bytes(ds), b""]))
    assert response.status_code == 202
    body = response.json()
    referenced = [i[REFERENCED_SOP_INSTANCE_UID]["Value"] for i in _items(body, REFERENCED_SOP_SEQUENCE)]
    assert referenced == [[ds.SOPInstanceUID]]
    assert [i[FAILURE_REASON]["Value"] for i in _items(body, FAILED_SOP_SEQUENCE)] == [[43264], [43264]]
    assert len(blobs.names(ds.StudyInstanceUID)) == 1


def test_truncated_file_fails_and_stores_nothing(server: str, blobs) -> None:
    ds = make_dataset(rows=64, columns=64)
    response = _post(server, to_bytes(ds)[:-100], content_type="application/dicom")
    assert response.status_code == 409
    assert blobs.names(ds.StudyInstanceUID) == []


def test_form_data_is_415(server: str) -> None:
    response = httpx.post(server + "/v2/studies", files={"file": ("a.dcm", make_instance(), "application/dicom")},
                          headers={"Accept": DICOM_JSON})
    assert response.status_code == 415


def test_non_dicom_parts_only_is_415(server: str) -> None:
    response = _post(server, multipart_body([b"{}"], content_type="application/json"))
    assert response.status_code == 415


def test_accept_application_dicom_is_406(server: str) -> None:
    response = _post(server, multipart_body([make_instance()]), Accept="application/dicom")
    assert response.status_code == 406


def test_accept_dicom_xml_alone_gets_the_response_in_dicom_xml(server: str) -> None:
    # Weasis (weasis-dicom-tools DicomStowRS) asks for application/dicom+xml alone.
    response = _post(server, multipart_body([make_instance(), make_instance()]), Accept="application/dicom+xml")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom+xml"
    root = ElementTree.fromstring(response.content)
    namespace = "{http://dicom.nema.org/PS3.19/models/NativeDICOM}"
    [sequence] = root.findall(f"{namespace}DicomAttribute[@keyword='ReferencedSOPSequence']")
    assert len(sequence.findall(f"{namespace}Item")) == 2


@pytest.mark.parametrize("accept", [None, "*/*", "application/json"])
def test_lenient_accept_gets_dicom_json(server: str, accept: str | None) -> None:
    headers = {"Content-Type": "application/dicom"} | ({"Accept": accept} if accept else {})
    response = httpx.post(server + "/v2/studies", content=make_instance(), headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == DICOM_JSON


def test_zero_parts_is_204(server: str) -> None:
    response = _post(server, multipart_body([]))
    assert response.status_code == 204
    assert response.content == b""


def test_first_part_without_content_type_uses_type_parameter(server: str) -> None:
    response = _post(server, multipart_body([make_instance()], content_type=None))
    assert response.status_code == 200


def test_unquoted_type_and_quoted_boundary_are_accepted(server: str) -> None:
    body = multipart_body([make_instance()], boundary="b:1")
    response = _post(server, body, content_type='multipart/related; type=application/dicom; boundary="b:1"')
    assert response.status_code == 200


def test_body_without_close_delimiter_is_400(server: str) -> None:
    body = multipart_body([make_instance()])[: -len("--test-boundary--\r\n")]
    assert _post(server, body).status_code == 400


def test_unsupported_api_version_is_400(server: str) -> None:
    response = _post(server, multipart_body([make_instance()]), path="/v3/studies")
    assert response.status_code == 400
    assert "v1, v2" in response.text


def test_v2_stores_empty_patient_id_with_warning(server: str) -> None:
    response = _post(server, multipart_body([make_instance(PatientID="")]))
    assert response.status_code == 202
    [item] = _items(response.json(), REFERENCED_SOP_SEQUENCE)
    assert item[WARNING_REASON]["Value"] == [1]


def test_v1_refuses_empty_patient_id(server: str) -> None:
    response = _post(server, multipart_body([make_instance(PatientID="")]), path="/v1/studies")
    assert response.status_code == 409


def test_v2_drops_invalid_attribute_with_warning(server: str) -> None:
    response = _post(server, multipart_body([make_instance(StudyDate="NotAValidStudyDate")]))
    assert response.status_code == 202
    [item] = _items(response.json(), REFERENCED_SOP_SEQUENCE)
    assert "(0008,0020)" in str(item[FAILED_ATTRIBUTES_SEQUENCE])


def test_v1_refuses_invalid_indexed_attribute(server: str) -> None:
    response = _post(server, multipart_body([make_instance(StudyDate="NotAValidStudyDate")]), path="/v1/studies")
    assert response.status_code == 409


def test_implicit_vr_instance_gets_warning_45063(server: str) -> None:
    response = _post(server, multipart_body([make_instance(transfer_syntax=ImplicitVRLittleEndian)]))
    assert response.status_code == 202
    assert _items(response.json(), REFERENCED_SOP_SEQUENCE)[0][WARNING_REASON]["Value"] == [45063]


def test_multi_valued_indexed_attribute_sets_warning_header(server: str) -> None:
    response = _post(server, multipart_body([make_instance(ReferringPhysicianName=["A^B", "C^D"])]))
    assert response.status_code == 200
    assert "only first value is indexed" in response.headers["warning"]


def test_dicomweb_client_streams_a_chunked_body(server: str, blobs) -> None:
    study = generate_uid()
    datasets = [make_dataset(study=study, rows=512, columns=512) for _ in range(3)]  # ~1.5 MB > chunk size
    client = DICOMwebClient(url=f"{server}/v2")
    result = client.store_instances(datasets)
    assert len(_items(result.to_json_dict(), REFERENCED_SOP_SEQUENCE)) == 3
    assert len(blobs.names(study)) == 3
    for name in blobs.names(study):
        assert dcmread(io.BytesIO(blobs.read(name))).StudyInstanceUID == study
