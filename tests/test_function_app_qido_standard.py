"""QIDO-RS and metadata to the letter of PS3.18 over real HTTP: universal matching, the standard's query
parameters, required result attributes, person-name component groups and null values in DICOM JSON."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_core.wire.media_types import DICOM_JSON
from tests.factories import make_instance, multipart_body

MULTIPART = 'multipart/related; type="application/dicom"; boundary=test-boundary'
STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
TRANSDUCER_DATA = "00185010"


@dataclass(frozen=True)
class Archive:
    """Three studies of one patient of their own: A (empty AccessionNumber), B (none), C ('ACC-C')."""

    server: str
    patient_id: str
    studies: dict[str, str]  # label -> StudyInstanceUID
    series: dict[str, str]
    instance: str  # the instance of study A

    def get(self, path: str, accept: str = DICOM_JSON) -> httpx.Response:
        """GET a path of the server."""
        return httpx.get(self.server + path, headers={"Accept": accept}, timeout=60)

    def labels(self, response: httpx.Response, key: str = STUDY_UID) -> set[str]:
        """The labels of the studies (or series) found."""
        assert response.status_code in (200, 204), response.text
        names = {uid: label for label, uid in {**self.studies, **self.series}.items()}
        return {names[d[key]["Value"][0]] for d in response.json()} if response.status_code == 200 else set()


def _request_attributes() -> Dataset:
    item = Dataset()
    item.RequestedProcedureID = "RP-1"
    item.ScheduledProcedureStepID = "SPS-1"
    return item


@pytest.fixture(scope="module")
def archive(server: str) -> Archive:
    patient_id = f"PS318-{uuid.uuid4().hex[:8]}"
    studies = {label: generate_uid() for label in "ABC"}
    series = {label: generate_uid() for label in ("A1", "B1", "C1")}
    instance = generate_uid()
    common = dict(PatientID=patient_id, SpecificCharacterSet="ISO_IR 192",
                  PatientName="Yamada^Tarou=山田^太郎=やまだ^たろう")
    parts = [
        make_instance(study=studies["A"], series=series["A1"], sop=instance, frames=2, AccessionNumber="",
                      ReferringPhysicianName="", StudyTime="101500", StudyID="S-A", PatientSex="O",
                      PatientBirthDate="19800101", TimezoneOffsetFromUTC="+0100", InstanceNumber="7", SeriesNumber="3",
                      TransducerData="50.80.103.002\\\\", PerformedProcedureStepStartDate="20240101",
                      PerformedProcedureStepStartTime="0930", RequestAttributesSequence=[_request_attributes()],
                      **common),
        make_instance(study=studies["B"], series=series["B1"], ReferringPhysicianName="Ref^Rob", **common),
        make_instance(study=studies["C"], series=series["C1"], AccessionNumber="ACC-C", **common),
    ]
    for part in parts:
        response = httpx.post(f"{server}/v2/studies", content=multipart_body([part]),
                              headers={"Content-Type": MULTIPART, "Accept": DICOM_JSON}, timeout=60)
        assert response.status_code in (200, 202), response.text
    return Archive(server, patient_id, studies, series, instance)


# --- Universal matching (PS3.4 C.2.2.2.3, C.2.2.2.4) ----------------------------------------------------------

@pytest.mark.parametrize("attribute", ["AccessionNumber", "ReferringPhysicianName"])
def test_a_lone_star_matches_empty_and_absent_attributes(archive: Archive, attribute: str) -> None:
    """PS3.4 C.2.2.2.4: '*' alone is universal matching: present but empty, absent and set all match."""
    response = archive.get(f"/v2/studies?PatientID={archive.patient_id}&{attribute}=*")
    assert archive.labels(response) == {"A", "B", "C"}
    series = archive.get(f"/v2/series?PatientID={archive.patient_id}&{attribute}=*")
    assert archive.labels(series, SERIES_UID) == {"A1", "B1", "C1"}


def test_a_zero_length_value_is_universal_matching_and_returned(archive: Archive) -> None:
    """PS3.4 C.2.2.2.3: a zero-length value matches every entity; the attribute is returned (not a 400)."""
    response = archive.get(f"/v2/studies?PatientID={archive.patient_id}&AccessionNumber=&StudyID=")
    assert archive.labels(response) == {"A", "B", "C"}
    by_label = {archive.labels(httpx.Response(200, json=[d])).pop(): d for d in response.json()}
    assert by_label["C"]["00080050"]["Value"] == ["ACC-C"] and by_label["A"]["00200010"]["Value"] == ["S-A"]
    assert "Warning" not in response.headers


# --- Query parameters (PS3.18 §8.3) ---------------------------------------------------------------------------

def test_unknown_parameters_are_ignored_with_a_warning_naming_them(archive: Archive) -> None:
    """PS3.18 §8.3: the origin server shall ignore parameters it does not support; Warning: 299 names them."""
    response = archive.get(f"/v2/studies?PatientID={archive.patient_id}&_=1701234567&nosuch=1&Modality=XX")
    assert archive.labels(response) == {"A", "B", "C"}
    warning = response.headers["Warning"]
    assert warning.startswith("299 ") and "ignored: _, nosuch, Modality." in warning


def test_accept_query_parameter_takes_the_place_of_the_accept_header(archive: Archive) -> None:
    """PS3.18 §8.3.3.1: the accept query parameter overrides the Accept header."""
    path = f"/v2/studies?PatientID={archive.patient_id}"
    assert archive.get(path + "&accept=application/dicom+json", accept="application/dicom").status_code == 200
    assert archive.get(path + "&accept=image/png").status_code == 406


def test_charset_query_parameter_must_name_utf8(archive: Archive) -> None:
    """PS3.18 §8.3.3.2: a supported charset is honoured (DICOM JSON is UTF-8); none supported is a 400."""
    path = f"/v2/studies?PatientID={archive.patient_id}"
    assert archive.get(path + "&charset=utf-8").status_code == 200
    assert archive.get(path + "&charset=ISO-8859-1").status_code == 400


@pytest.mark.parametrize("name", ["emptyvaluematching", "multiplevaluematching"])
def test_unsupported_matching_parameters_run_without_them_and_say_so(archive: Archive, name: str) -> None:
    """PS3.18 Table 8.3.4-1: accepted; not supported, so the search runs without them, with a Warning: 299."""
    response = archive.get(f"/v2/studies?PatientID={archive.patient_id}&{name}=true")
    assert archive.labels(response) == {"A", "B", "C"}
    assert f"The {name} parameter is not supported." in response.headers["Warning"]
    assert "Warning" not in archive.get(f"/v2/studies?PatientID={archive.patient_id}&{name}=false").headers


def test_limit_above_the_maximum_is_capped_with_a_warning(archive: Archive) -> None:
    """PS3.18 §8.3.4.4.1: min(matches - offset, maximum, limit) results, and a Warning: 299 (not a 400)."""
    response = archive.get(f"/v2/studies?PatientID={archive.patient_id}&limit=5000")
    assert archive.labels(response) == {"A", "B", "C"}
    assert "exceeds the maximum of 200" in response.headers["Warning"]


def test_limit_zero_answers_no_results(archive: Archive) -> None:
    """PS3.18 §8.3.4.4.1: min(matches - offset, maximum, limit) results, none for limit=0 (204)."""
    response = archive.get(f"/v2/studies?PatientID={archive.patient_id}&limit=0")
    assert response.status_code == 204, response.text


@pytest.mark.parametrize("limit", ["-1", "ten"])
def test_negative_or_malformed_limit_is_400(archive: Archive, limit: str) -> None:
    """PS3.18 §8.3.4.4.1: only a malformed or negative limit is an error."""
    assert archive.get(f"/v2/studies?limit={limit}").status_code == 400


# --- Required result attributes (PS3.18 §10.6.3) --------------------------------------------------------------

def test_study_results_carry_the_required_attributes(archive: Archive) -> None:
    """PS3.18 §10.6.3 Table 10.6.3-3: StudyTime, StudyID, PatientSex, PatientBirthDate, InstanceAvailability,
    RetrieveURL and TimezoneOffsetFromUTC (where present) by default."""
    [study] = archive.get(f"/v2/studies?StudyInstanceUID={archive.studies['A']}").json()
    values = {key: study[key].get("Value") for key in ("00080030", "00200010", "00100040", "00100030", "00080056",
                                                       "00080201")}
    assert values == {"00080030": ["101500"], "00200010": ["S-A"], "00100040": ["O"], "00100030": ["19800101"],
                      "00080056": ["ONLINE"], "00080201": ["+0100"]}
    url = study["00081190"]["Value"][0]
    assert url == f"{archive.server}/v2/studies/{archive.studies['A']}"
    assert httpx.get(url + "/metadata", headers={"Accept": DICOM_JSON}, timeout=60).status_code == 200


def test_series_results_carry_the_required_attributes(archive: Archive) -> None:
    """PS3.18 §10.6.3 Table 10.6.3-4: RetrieveURL, PerformedProcedureStepStartDate/Time and
    RequestAttributesSequence (where present) by default."""
    [series] = archive.get(f"/v2/studies/{archive.studies['A']}/series").json()
    assert series["00081190"]["Value"] == [
        f"{archive.server}/v2/studies/{archive.studies['A']}/series/{archive.series['A1']}"]
    assert (series["00400244"]["Value"], series["00400245"]["Value"]) == (["20240101"], ["0930"])
    assert series["00400275"]["Value"][0]["00401001"]["Value"] == ["RP-1"]


def test_series_results_never_count_zero_study_instances(archive: Archive) -> None:
    """PS3.18 §10.6.3: a study count in a series result is the study's, or absent (never a made-up 0)."""
    results = archive.get(f"/v2/series?PatientID={archive.patient_id}").json()
    counts = [d.get(key, {}).get("Value") for d in results for key in ("00201206", "00201208")]
    assert len(results) == 3 and all(count is None or count[0] >= 1 for count in counts), counts


def test_instance_results_carry_the_required_attributes(archive: Archive) -> None:
    """PS3.18 §10.6.3 Table 10.6.3-5: SOPClassUID, InstanceNumber, Rows, Columns, BitsAllocated, NumberOfFrames
    and RetrieveURL by default."""
    [instance] = archive.get(f"/v2/studies/{archive.studies['A']}/series/{archive.series['A1']}/instances").json()
    values = {key: instance[key]["Value"] for key in ("00200013", "00280010", "00280011", "00280100", "00280008")}
    assert values == {"00200013": [7], "00280010": [8], "00280011": [8], "00280100": [16], "00280008": [2]}
    assert "00080016" in instance and instance["00080056"]["Value"] == ["ONLINE"]
    assert instance["00081190"]["Value"] == [f"{archive.server}/v2/studies/{archive.studies['A']}/series/"
                                             f"{archive.series['A1']}/instances/{archive.instance}"]


# --- Required matching keys no index serves (PS3.18 Table 10.6.1-5), matched on the rows -----------------

@pytest.mark.parametrize(("query", "expected"), [
    ("StudyTime=1000-1100", {"A"}), ("StudyTime=101500", {"A"}), ("StudyTime=1100-", set()),
    ("StudyTime=-10:15", {"A"}), ("StudyID=S-A", {"A"}), ("StudyID=s-*", {"A"}), ("StudyID=S-B", set()),
])
def test_study_time_and_study_id_are_matched(archive: Archive, query: str, expected: set[str]) -> None:
    """PS3.18 Table 10.6.1-5 (StudyTime, StudyID required matching keys); PS3.4 C.2.2.2.5 TM range matching."""
    response = archive.get(f"/v2/studies?PatientID={archive.patient_id}&{query}")
    assert archive.labels(response) == expected
    assert "Warning" not in response.headers


@pytest.mark.parametrize(("query", "expected"), [
    ("SeriesNumber=3", {"A1"}), ("SeriesNumber=03", {"A1"}), ("SeriesNumber=4", set()),
    ("PerformedProcedureStepStartTime=0900-1000", {"A1"}), ("PerformedProcedureStepStartTime=1000-", set()),
])
def test_series_number_and_procedure_step_start_time_are_matched(archive: Archive, query: str,
                                                                 expected: set[str]) -> None:
    """PS3.18 Table 10.6.1-5 (SeriesNumber, PerformedProcedureStepStartTime required matching keys)."""
    response = archive.get(f"/v2/series?PatientID={archive.patient_id}&{query}")
    assert archive.labels(response, SERIES_UID) == expected
    assert "Warning" not in response.headers


@pytest.mark.parametrize(("query", "found"), [
    ("InstanceNumber=7", True), ("InstanceNumber=8", False),
    ("SOPClassUID=1.2.840.10008.5.1.4.1.1.7", True), ("SOPClassUID=1.2.840.10008.5.1.4.1.1.2", False),
])
def test_instance_number_and_sop_class_are_matched_within_a_series(archive: Archive, query: str, found: bool) -> None:
    """PS3.18 Table 10.6.1-5 (InstanceNumber, SOPClassUID required matching keys), exact within a series."""
    path = f"/v2/studies/{archive.studies['A']}/series/{archive.series['A1']}/instances?{query}"
    response = archive.get(path)
    assert response.status_code == (200 if found else 204) and "Warning" not in response.headers
    if found:
        assert [d[SOP_UID]["Value"][0] for d in response.json()] == [archive.instance]


def test_a_malformed_time_is_400(archive: Archive) -> None:
    """PS3.5 Table 6.2-1: a TM value is HHMMSS.FFFFFF or a leading part of it."""
    assert archive.get("/v2/studies?StudyTime=2561").status_code == 400


# --- Person names (PS3.4 C.2.2.2.4) ---------------------------------------------------------------------------

@pytest.mark.parametrize("pattern", ["山田*", "*太郎", "やまだ^*", "Yamada*"])
def test_person_name_wildcards_match_every_component_group(archive: Archive, pattern: str) -> None:
    """PS3.4 C.2.2.2.4: a wildcard on a person name matches on each component group alike."""
    response = archive.get(f"/v2/studies?PatientID={archive.patient_id}&PatientName={quote(pattern)}")
    assert archive.labels(response) == {"A", "B", "C"}
    unscoped = archive.get(f"/v2/studies?PatientName={quote(pattern)}&limit=200")
    assert {"A", "B", "C"} <= {label for label, uid in archive.studies.items()
                               if uid in {d[STUDY_UID]["Value"][0] for d in unscoped.json()}}


# --- Null values in DICOM JSON (PS3.18 F.2.5) -----------------------------------------------------------------

def _transducer_data(datasets: list[dict]) -> list[object]:
    [values] = [d[TRANSDUCER_DATA]["Value"] for d in datasets if TRANSDUCER_DATA in d]
    return values


@pytest.mark.parametrize(
    "path",
    [
        "/v2/studies/{A}/metadata",
        "/v2/studies/{A}/series/{A1}/metadata",
        "/v2/studies/{A}/series/{A1}/instances/{I}/metadata",
        "/v2/studies/{A}/instances?includefield=TransducerData",
        "/v2/instances?SOPInstanceUID={I}&includefield=00185010",
    ],
)
def test_empty_values_of_a_multi_valued_attribute_are_null(archive: Archive, path: str) -> None:
    """PS3.18 F.2.5: TransducerData `50.80.103.002\\\\` is ["50.80.103.002", null, null], in metadata and search."""
    response = archive.get(path.format(A=archive.studies["A"], A1=archive.series["A1"], I=archive.instance))
    assert response.status_code == 200, response.text
    assert _transducer_data(response.json()) == ["50.80.103.002", None, None]


# --- Azure's answers, behind DICOMWEB_QUERY_STRICT_PARAMETERS ------------------------------------------------

@pytest.fixture(scope="module")
def strict_server(serve_with_env: Callable) -> Iterator[str]:
    suffix = uuid.uuid4().hex[:8]
    env = {"DICOMWEB_QUERY_STRICT_PARAMETERS": "true", "DICOMWEB_TABLE_PREFIX": f"strict{suffix}",
           "DICOMWEB_BLOB_CONTAINER": f"strict-{suffix}", "DICOMWEB_METADATA_CONTAINER": f"strict-meta-{suffix}"}
    with serve_with_env(env) as base_url:
        yield base_url


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("Modality=CT", "Invalid query: AttributeId Modality is not queryable."),
        ("StudyTime=1030", "Invalid query: AttributeId StudyTime is not queryable."),
        ("nosuch=1", "Invalid query: unknown query parameter 'nosuch'."),
        ("limit=201", "The query parameter 'Limit' is invalid. The field Limit must be between 1 and 200."),
        ("PatientID=", "Invalid query: AttributeId 'PatientID' has empty string value that is not supported."),
        ("includefield=NotAKeyword", "Invalid query: IncludeField has unknown attribute 'NotAKeyword'."),
    ],
)
def test_strict_setting_keeps_azures_400s(strict_server: str, query: str, message: str) -> None:
    """Azure's answers for clients that depend on them; the standard (PS3.18 §8.3) is the default."""
    response = httpx.get(f"{strict_server}/v2/studies?{query}", headers={"Accept": DICOM_JSON}, timeout=60)
    assert response.status_code == 400 and response.text.startswith(message)
