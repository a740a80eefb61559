"""StudyID, StudyTime, SeriesNumber and PerformedProcedureStepStartDate/Time, required matching keys of PS3.18
(Table 10.6.1-5), answered from index entries over real HTTP: a search on one alone finds exactly its studies or
series among neighbours, reading about one entry and one row per result, with no scan-budget warning."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import pytest
from pydicom.uid import generate_uid

from dicom_core.wire.media_types import DICOM_JSON
from tests.factories import make_instance, multipart_body

MULTIPART = 'multipart/related; type="application/dicom"; boundary=test-boundary'
STUDY_UID = "0020000D"
SERIES_UID = "0020000E"
NEIGHBOURS = 30
ENTITIES_HEADER = "X-DicomWeb-Entities-Read"


@dataclass(frozen=True)
class Stored:
    """Studies stored with a StudyID and StudyTime of their own: run tag -> StudyInstanceUID by label."""

    server: str
    run: str
    studies: dict[str, str]

    def search(self, query: str, resource: str = "studies") -> tuple[set[str], int, httpx.Response]:
        """The labels found by ``/v2/{resource}?{query}`` and the entities the search read."""
        response = httpx.get(f"{self.server}/v2/{resource}?{query}", headers={"Accept": DICOM_JSON}, timeout=60)
        assert response.status_code in (200, 204), response.text
        labels = set(self.studies)
        by_uid = {uid: label for label, uid in self.studies.items()}
        key = STUDY_UID if resource == "studies" else SERIES_UID
        found = {by_uid.get(d[key]["Value"][0], "other") for d in response.json()} if response.content else set()
        assert found <= labels | {"other"}
        return found, int(response.headers[ENTITIES_HEADER]), response


@pytest.fixture(scope="module")
def stored(query_stats_server: str) -> Stored:
    run = uuid.uuid4().hex[:6].upper()
    studies: dict[str, str] = {}
    parts = []
    # Neighbours share the target's StudyID prefix; their times lie between 23:00 and 23:30 of no other study; their
    # series have numbers 9000-9029, procedure steps on 1901-01-01 onwards at 05:00-05:29.
    for number in range(NEIGHBOURS):
        label = f"n{number}"
        studies[label] = generate_uid()
        studies[f"s{number}"] = generate_uid()
        parts.append(make_instance(study=studies[label], series=studies[f"s{number}"], StudyID=f"{run}{number:02d}",
                                   StudyTime=f"23{number:02d}00.123456", SeriesNumber=str(9000 + number),
                                   PerformedProcedureStepStartDate=f"1901{number // 28 + 1:02d}{number % 28 + 1:02d}",
                                   PerformedProcedureStepStartTime=f"05{number:02d}"))
    studies["target"] = generate_uid()
    parts.append(make_instance(study=studies["target"], StudyID=f"{run}!X", StudyTime="2345"))
    for start in range(0, len(parts), 10):
        response = httpx.post(f"{query_stats_server}/v2/studies", content=multipart_body(parts[start:start + 10]),
                              headers={"Content-Type": MULTIPART, "Accept": DICOM_JSON}, timeout=120)
        assert response.status_code == 200, response.text
    return Stored(query_stats_server, run, studies)


def test_study_id_alone_is_answered_from_the_index(stored: Stored) -> None:
    """PS3.18 Table 10.6.1-5 (StudyID), PS3.4 C.2.2.2.1 single value matching: one study among its neighbours."""
    found, entities, response = stored.search(f"StudyID={stored.run}07")
    assert found == {"n7"}
    assert entities <= 4 and "Warning" not in response.headers


def test_study_id_with_the_index_separator_is_found(stored: Stored) -> None:
    """A StudyID holding '!' (which ends a value in the index's RowKeys) is still one exact value."""
    found, _, _ = stored.search(f"StudyID={quote(stored.run + '!X')}")
    assert found == {"target"}


def test_study_time_range_alone_is_answered_from_the_index(stored: Stored) -> None:
    """PS3.4 C.2.2.2.5 range matching on TM, each bound at its own precision: 23:10 through 23:14:59."""
    found, entities, response = stored.search("StudyTime=2310-2314&limit=50")
    ours = {label for label in found if label != "other"}
    assert ours == {f"n{number}" for number in range(10, 15)}
    assert entities <= 2 * len(response.json()) + 4 and "Warning" not in response.headers


def test_study_time_single_value_matches_at_its_precision(stored: Stored) -> None:
    """PS3.4 C.2.2.2.5: a time of hours and minutes matches every stored time within that minute."""
    found, entities, response = stored.search("StudyTime=2345")
    assert "target" in found and not found & {f"n{number}" for number in range(NEIGHBOURS)}
    assert "Warning" not in response.headers


def test_series_number_alone_is_answered_from_the_index(stored: Stored) -> None:
    """PS3.18 Table 10.6.1-5 (SeriesNumber), an IS value matched as a number: `09007` is 9007."""
    found, entities, response = stored.search("SeriesNumber=09007", "series")
    assert found == {"s7"}
    assert entities <= 4 and "Warning" not in response.headers


def test_procedure_step_start_date_range_alone_is_answered_from_the_index(stored: Stored) -> None:
    """PS3.18 Table 10.6.1-5 (PerformedProcedureStepStartDate), PS3.4 C.2.2.2.5 range matching on DA."""
    found, entities, response = stored.search("PerformedProcedureStepStartDate=19010103-19010105", "series")
    assert found == {"s2", "s3", "s4"}
    assert entities <= 2 * len(response.json()) + 4 and "Warning" not in response.headers


def test_procedure_step_start_time_alone_is_answered_from_the_index(stored: Stored) -> None:
    """PS3.18 Table 10.6.1-5 (PerformedProcedureStepStartTime): 05:20 through 05:21:59 of the neighbours' series."""
    found, entities, response = stored.search("PerformedProcedureStepStartTime=0520-0521&limit=50", "series")
    assert {label for label in found if label != "other"} == {"s20", "s21"}
    assert entities <= 2 * len(response.json()) + 4 and "Warning" not in response.headers


def test_instances_are_found_through_a_series_index(stored: Stored) -> None:
    """/instances with a series-level key reads the indexed series, then their instances."""
    response = httpx.get(f"{stored.server}/v2/instances?SeriesNumber=9011", headers={"Accept": DICOM_JSON},
                         timeout=60)
    assert response.status_code == 200 and len(response.json()) == 1
    assert response.json()[0][SERIES_UID]["Value"] == [stored.studies["s11"]]
    assert int(response.headers[ENTITIES_HEADER]) <= 6
