"""StudyID and StudyTime, required matching keys of PS3.18 (Table 10.6.1-5), answered from index entries over
real HTTP: a search on either alone finds exactly its studies among neighbours, reading about one entry and one
row per result, with no scan-budget warning."""

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
NEIGHBOURS = 30
ENTITIES_HEADER = "X-DicomWeb-Entities-Read"


@dataclass(frozen=True)
class Stored:
    """Studies stored with a StudyID and StudyTime of their own: run tag -> StudyInstanceUID by label."""

    server: str
    run: str
    studies: dict[str, str]

    def search(self, query: str) -> tuple[set[str], int, httpx.Response]:
        """The labels found by ``/v2/studies?{query}`` and the entities the search read."""
        response = httpx.get(f"{self.server}/v2/studies?{query}", headers={"Accept": DICOM_JSON}, timeout=60)
        assert response.status_code in (200, 204), response.text
        labels = set(self.studies)
        by_uid = {uid: label for label, uid in self.studies.items()}
        found = {by_uid.get(d[STUDY_UID]["Value"][0], "other") for d in response.json()} if response.content else set()
        assert found <= labels | {"other"}
        return found, int(response.headers[ENTITIES_HEADER]), response


@pytest.fixture(scope="module")
def stored(query_stats_server: str) -> Stored:
    run = uuid.uuid4().hex[:6].upper()
    studies: dict[str, str] = {}
    parts = []
    # Neighbours share the target's StudyID prefix; their times lie between 23:00 and 23:30 of no other study.
    for number in range(NEIGHBOURS):
        label = f"n{number}"
        studies[label] = generate_uid()
        parts.append(make_instance(study=studies[label], StudyID=f"{run}{number:02d}",
                                   StudyTime=f"23{number:02d}00.123456"))
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
