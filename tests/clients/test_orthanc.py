"""Debian's Orthanc 1.10 with its DICOMweb plugin 1.7 as a client: it stores into, searches, retrieves from and
reads metadata and rendered images of this server through its `/dicom-web/servers/azure/...` routes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from pydicom.uid import generate_uid

from tests.clients import orthanc as orthanc_process
from tests.clients.orthanc import Orthanc
from tests.factories import make_instance

pytestmark = pytest.mark.skipif(
    not orthanc_process.installed() and not orthanc_process.in_ci(), reason=orthanc_process.MISSING
)

SERIES_SIZES = (2, 1)  # instances per series of the study Orthanc pushes


@dataclass(frozen=True)
class PushedStudy:
    """A study Orthanc holds and pushed to this server: its UIDs and the Part-10 bytes uploaded to Orthanc."""

    study: str
    series: tuple[str, ...]
    files: dict[str, bytes]  # SOPInstanceUID -> bytes
    orthanc_id: str
    stow_answer: dict[str, object]


def _upload(client: httpx.Client, data: bytes) -> dict[str, str]:
    response = client.post("/instances", content=data, headers={"Content-Type": "application/dicom"})
    response.raise_for_status()
    answer: dict[str, str] = response.json()
    return answer


@pytest.fixture(scope="module")
def pushed(orthanc: Orthanc, server: str) -> Iterator[PushedStudy]:
    """A synthetic study of two series uploaded to Orthanc, then pushed by it to this server (STOW-RS)."""
    study = generate_uid()
    series = tuple(generate_uid() for _ in SERIES_SIZES)
    files: dict[str, bytes] = {}
    with orthanc.client() as client:
        for series_index, (series_uid, size) in enumerate(zip(series, SERIES_SIZES, strict=True)):
            for number in range(1, size + 1):
                sop = generate_uid()
                files[sop] = make_instance(study=study, series=series_uid, sop=sop, rows=16, columns=16,
                                           SeriesNumber=series_index + 1, InstanceNumber=number,
                                           PatientID="ORTHANC-1", PatientName="Orthanc^Client")
                orthanc_id = _upload(client, files[sop])["ParentStudy"]
        response = client.post(f"/dicom-web/servers/{orthanc.peer}/stow", json={"Resources": [orthanc_id]})
        assert response.status_code == 200, response.text
        yield PushedStudy(study, series, files, orthanc_id, response.json())


def test_orthanc_stores_a_study_into_this_server(pushed: PushedStudy, server: str) -> None:
    response = httpx.get(f"{server}/v2/studies/{pushed.study}/instances", headers={"Accept": "application/dicom+json"})

    assert response.status_code == 200
    assert pushed.stow_answer["InstancesCount"] == str(len(pushed.files))
    stored = {item["00080018"]["Value"][0] for item in response.json()}
    assert stored == set(pushed.files)


def _peer_get(orthanc: Orthanc, uri: str, arguments: dict[str, str] | None = None,
              headers: dict[str, str] | None = None) -> httpx.Response:
    """GET ``uri`` of this server through Orthanc's proxy route `/dicom-web/servers/azure/get`."""
    request: dict[str, object] = {"Uri": uri}
    if arguments:
        request["Arguments"] = arguments
    if headers:
        request["HttpHeaders"] = headers
    with orthanc.client() as client:
        return client.post(f"/dicom-web/servers/{orthanc.peer}/get", json=request)


def _values(results: list[dict[str, dict[str, list[str]]]], tag: str) -> set[str]:
    return {result[tag]["Value"][0] for result in results}


def test_orthanc_finds_the_study(orthanc: Orthanc, pushed: PushedStudy) -> None:
    response = _peer_get(orthanc, "/studies", {"StudyInstanceUID": pushed.study})

    assert response.status_code == 200, response.text
    [study] = response.json()
    assert study["0020000D"]["Value"] == [pushed.study]
    assert study["00100020"]["Value"] == ["ORTHANC-1"]
    assert study["00201208"]["Value"] == [len(pushed.files)]


def test_orthanc_finds_the_series_of_the_study(orthanc: Orthanc, pushed: PushedStudy) -> None:
    response = _peer_get(orthanc, f"/studies/{pushed.study}/series")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/dicom+json")
    assert _values(response.json(), "0020000E") == set(pushed.series)


def test_orthanc_finds_the_instances_of_a_series(orthanc: Orthanc, pushed: PushedStudy) -> None:
    response = _peer_get(orthanc, f"/studies/{pushed.study}/series/{pushed.series[0]}/instances")

    assert response.status_code == 200, response.text
    found = _values(response.json(), "00080018")
    assert len(found) == SERIES_SIZES[0]
    assert found <= set(pushed.files)


def test_orthanc_reads_the_study_metadata(orthanc: Orthanc, pushed: PushedStudy) -> None:
    response = _peer_get(orthanc, f"/studies/{pushed.study}/metadata")

    assert response.status_code == 200, response.text
    assert _values(response.json(), "00080018") == set(pushed.files)


@pytest.mark.parametrize(("accept", "signature"), [("image/jpeg", b"\xff\xd8\xff"), ("image/png", b"\x89PNG\r\n")],
                         ids=["jpeg", "png"])
def test_orthanc_reads_a_rendered_instance(orthanc: Orthanc, pushed: PushedStudy, accept: str,
                                           signature: bytes) -> None:
    sop = next(iter(pushed.files))
    uri = f"/studies/{pushed.study}/series/{pushed.series[0]}/instances/{sop}/rendered"

    response = _peer_get(orthanc, uri, headers={"Accept": accept})

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == accept
    assert response.content.startswith(signature)


def test_orthanc_retrieves_the_study_back_byte_equal_after_the_preamble(orthanc: Orthanc,
                                                                        pushed: PushedStudy) -> None:
    with orthanc.client() as client:
        client.delete(f"/studies/{pushed.orthanc_id}").raise_for_status()
        assert client.get("/instances").json() == []

        response = client.post(f"/dicom-web/servers/{orthanc.peer}/retrieve",
                               json={"Resources": [{"Study": pushed.study}]})
        assert response.status_code == 200, response.text
        retrieved: dict[str, bytes] = {}
        for instance in client.get("/instances").json():
            sop = client.get(f"/instances/{instance}/simplified-tags").json()["SOPInstanceUID"]
            retrieved[sop] = client.get(f"/instances/{instance}/file").content

    assert set(retrieved) == set(pushed.files)
    for sop, data in pushed.files.items():
        assert retrieved[sop][128:] == data[128:]
