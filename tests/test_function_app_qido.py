"""QIDO-RS end to end: real HTTP over loopback to the local host, real Azurite behind it, real clients."""

from __future__ import annotations

import subprocess
import uuid

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

from dicom_core.wire.media_types import DICOM_JSON
from tests.factories import make_instance, multipart_body
from tests.seed_files import SEED, SEED_SERIES_A, SEED_STUDY

MULTIPART = 'multipart/related; type="application/dicom"; boundary=test-boundary'
ENTITIES_READ = "X-DicomWeb-Entities-Read"
STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"


def _store(server: str, parts: list[bytes]) -> None:
    response = httpx.put(f"{server}/v2/studies", content=multipart_body(parts),
                         headers={"Content-Type": MULTIPART, "Accept": DICOM_JSON}, timeout=60)
    assert response.status_code == 200, response.text


def _get(server: str, path: str, accept: str = DICOM_JSON) -> httpx.Response:
    return httpx.get(server + path, headers={"Accept": accept}, timeout=60)


def _uids(response: httpx.Response, key: str = STUDY_UID) -> list[str]:
    return [dataset[key]["Value"][0] for dataset in response.json()] if response.status_code == 200 else []


@pytest.fixture(scope="module")
def patient(query_stats_server: str) -> tuple[str, list[str]]:
    """A patient of its own with three studies (two series in the first), stored over HTTP."""
    patient_id = f"QIDO-E2E-{uuid.uuid4().hex[:8]}"
    studies = [generate_uid() for _ in range(3)]
    series = generate_uid()
    first = dict(PatientID=patient_id, PatientName="Ohif^Olga", StudyDate="20230105", StudyDescription="Knee",
                 ReferringPhysicianName="Ref^Rita")
    _store(query_stats_server, [
        make_instance(study=studies[0], series=series, SeriesDescription="Axial", SeriesDate="20230105",
                      Modality="MR", **first),
        make_instance(study=studies[0], Modality="SR", **first),
    ])
    for study, day in zip(studies[1:], ("20230210", "20230315"), strict=True):
        _store(query_stats_server, [make_instance(study=study, PatientID=patient_id, StudyDate=day, Modality="CT")])
    return patient_id, studies


def _curl_json(url: str) -> tuple[int, str]:
    out = subprocess.run(["curl", "--silent", "--show-error", "--globoff", "--header", f"Accept: {DICOM_JSON}",
                          "--write-out", "\n%{http_code}", url], check=True, capture_output=True, text=True).stdout
    body, status = out.rsplit("\n", 1)
    return int(status), body


def test_walkthrough_searches_find_the_seed_study(query_stats_server: str) -> None:
    server = query_stats_server
    assert SEED.is_dir(), f"the walkthrough's sample files are expected in {SEED}"
    _store(server, [(SEED / f"{name}.dcm").read_bytes() for name in ("red-triangle", "green-square", "blue-circle")])
    status, body = _curl_json(f"{server}/v2/studies?StudyInstanceUID={SEED_STUDY}")
    assert status == 200 and SEED_STUDY in body
    status, body = _curl_json(f"{server}/v2/studies?PatientName=Anony%20Mous")
    assert status == 200 and SEED_STUDY in body
    assert SEED_STUDY in _uids(_get(server, "/v2/studies?PatientName=anon&fuzzymatching=true&limit=200"))
    assert len(_uids(_get(server, f"/v2/studies/{SEED_STUDY}/series"), SERIES_UID)) == 2
    assert len(_uids(_get(server, f"/v2/studies/{SEED_STUDY}/instances"), SOP_UID)) == 3
    assert len(_uids(_get(server, f"/v2/studies/{SEED_STUDY}/series/{SEED_SERIES_A}/instances"), SOP_UID)) == 2
    assert _uids(_get(server, f"/v2/series?SeriesInstanceUID={SEED_SERIES_A}"), SERIES_UID) == [SEED_SERIES_A]
    assert len(_uids(_get(server, f"/v2/instances?StudyInstanceUID={SEED_STUDY}"), SOP_UID)) == 3


def test_ohif_study_list_request(query_stats_server: str, patient: tuple[str, list[str]]) -> None:
    patient_id, studies = patient
    response = _get(query_stats_server, "/v2/studies?limit=101&offset=0&fuzzymatching=false"
                    "&includefield=00081030%2C00080060%2C00080090%2C00100030&StudyDate=19700102-20991231"
                    f"&00100020={patient_id}")
    assert (response.status_code, response.headers["content-type"]) == (200, DICOM_JSON)
    assert _uids(response) == studies[::-1]
    first = response.json()[-1]
    assert first["00081030"]["Value"] == ["Knee"]
    assert first["00080061"]["Value"] == ["MR", "SR"]
    assert first["00201208"]["Value"] == [2]
    assert first["00080090"]["Value"] == [{"Alphabetic": "Ref^Rita"}]


def test_ohif_series_request_when_opening_a_study(query_stats_server: str, patient: tuple[str, list[str]]) -> None:
    _, studies = patient
    response = _get(query_stats_server, f"/v2/studies/{studies[0]}/series?includefield=0008103E,00080021")
    assert response.status_code == 200
    [described] = [d for d in response.json() if "0008103E" in d]
    assert (described["0008103E"]["Value"], described["00080021"]["Value"]) == (["Axial"], ["20230105"])
    assert {d["00080060"]["Value"][0] for d in response.json()} == {"MR", "SR"}
    assert all(d["00201209"]["Value"] == [1] for d in response.json())


def test_dicomweb_client_pages_to_the_end(query_stats_server: str, patient: tuple[str, list[str]]) -> None:
    patient_id, studies = patient
    client = DICOMwebClient(url=f"{query_stats_server}/v2")
    found = client.search_for_studies(search_filters={"PatientID": patient_id}, limit=2, get_remaining=True)
    assert [d[STUDY_UID]["Value"][0] for d in found] == studies[::-1]
    series = client.search_for_series(search_filters={"PatientID": patient_id}, limit=1, get_remaining=True)
    assert len({d[SERIES_UID]["Value"][0] for d in series}) == 4
    instances = client.search_for_instances(study_instance_uid=studies[0], limit=1, get_remaining=True,
                                            fields=["PatientID", "StudyDate"])
    assert [d["00100020"]["Value"] for d in instances] == [[patient_id]] * 2


def test_dicomweb_client_fuzzy_search_with_a_quote_plus_encoded_name(
    query_stats_server: str, patient: tuple[str, list[str]]
) -> None:
    _, studies = patient
    client = DICOMwebClient(url=f"{query_stats_server}/v2")
    found = client.search_for_studies(search_filters={"PatientName": "ohif olg"}, fuzzymatching=True, limit=200)
    assert studies[0] in [d[STUDY_UID]["Value"][0] for d in found]


def test_every_search_reports_the_entities_it_read(query_stats_server: str, patient: tuple[str, list[str]]) -> None:
    patient_id, _ = patient
    response = _get(query_stats_server, f"/v2/studies?PatientID={patient_id}")
    assert int(response.headers[ENTITIES_READ]) == 6  # three entries, three study rows


@pytest.mark.parametrize(("level", "entities"), [
    ("studies", 6),  # three entries, three study rows
    ("series", 7),  # three entries, four series rows (which hold their study's attributes)
    ("instances", 7),  # three entries, four series rows (each copies its one instance row)
])
def test_patient_lists_read_their_entries_and_rows_only(
    query_stats_server: str, patient: tuple[str, list[str]], level: str, entities: int
) -> None:
    patient_id, _ = patient
    response = _get(query_stats_server, f"/v2/{level}?PatientID={patient_id}&includefield=PatientName")
    assert int(response.headers[ENTITIES_READ]) == entities
    first = [d for d in response.json() if d[STUDY_UID]["Value"][0] == patient[1][0]]
    assert first and all(d["00100010"]["Value"][0]["Alphabetic"] == "Ohif^Olga" for d in first)


@pytest.mark.parametrize("level", ["studies", "series"])
def test_lists_read_at_most_two_entities_per_result_asked_for(
    query_stats_server: str, patient: tuple[str, list[str]], level: str
) -> None:
    for limit, offset in ((20, 0), (2, 1)):
        response = _get(query_stats_server, f"/v2/{level}?limit={limit}&offset={offset}")
        assert response.status_code == 200
        assert int(response.headers[ENTITIES_READ]) <= 2 * max(limit + offset, 16)


def test_entities_read_header_is_off_by_default(server: str) -> None:
    response = _get(server, "/v2/studies?limit=1")
    assert response.status_code in (200, 204) and ENTITIES_READ not in response.headers


def test_past_the_end_is_204_without_a_body(query_stats_server: str, patient: tuple[str, list[str]]) -> None:
    response = _get(query_stats_server, f"/v2/studies?PatientID={patient[0]}&offset=3")
    assert (response.status_code, response.content) == (204, b"")


def test_v1_route_answers_with_the_v1_default_attributes(
    query_stats_server: str, patient: tuple[str, list[str]],
) -> None:
    response = _get(query_stats_server, f"/v1/studies?PatientID={patient[0]}&limit=1")
    assert response.status_code == 200 and "00100040" not in response.json()[0]  # no PatientSex stored
    assert {"00080020", "00100020", "0020000D"} <= set(response.json()[0])


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v2/studies?limit=-1", "The query parameter 'Limit' is invalid. The field Limit must be between 0 and"),
        ("/v2/studies?charset=ISO-8859-1", "The query parameter 'charset' is invalid."),
        ("/v2/studies?PatientID=%3Cx", "The query string included invalid characters."),
        ("/v2/studies?StudyDate=2023",
         "Invalid query: specified Date value '2023' is invalid for attribute 'StudyDate'."),
        ("/v2/series?fuzzymatching=maybe", "The query parameter 'FuzzyMatching' is invalid."),
        ("/v2/studies/not-a-uid/series", "The StudyInstanceUID 'not-a-uid' is not a valid DICOM UID"),
        ("/v3/studies", "The API version 'v3' is not supported."),
    ],
)
def test_bad_request_is_400_with_a_plain_text_message(query_stats_server: str, path: str, message: str) -> None:
    response = _get(query_stats_server, path)
    assert (response.status_code, response.headers["content-type"].split(";")[0]) == (400, "text/plain")
    assert response.text.startswith(message)


def test_accept_that_excludes_dicom_json_is_406(query_stats_server: str) -> None:
    assert _get(query_stats_server, "/v2/studies", accept="application/dicom").status_code == 406
