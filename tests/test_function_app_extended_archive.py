"""Extended query tags on an archive of 2,000 stored instances, over HTTP against Azurite: the tags are added to
what is stored, the reindex operation reaches 200 with percentComplete 100, and searches at each level with each
matching kind find exactly what was stored, reading at most two entities per result asked for (the header
X-DicomWeb-Entities-Read; three for instances each in a series of its own), as searches on the built-in attributes
do. Seeding (STOW requests of 50 parts, 4 at a time) and the reindex take most of the module's time."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass

import httpx
import pytest
from pydicom.uid import generate_uid

from dicom_core.wire.media_types import DICOM_JSON
from tests.factories import make_instance, multipart_body
from tests.operations import wait_for_operation

STUDIES, SERIES_PER_STUDY, INSTANCES_PER_SERIES = 200, 2, 5
PARTS_PER_REQUEST = 50
ENTITIES_READ = "X-DicomWeb-Entities-Read"
MULTIPART = 'multipart/related; type="application/dicom"; boundary=test-boundary'
STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
TAGS = [
    {"path": "StudyID", "level": "Study"}, {"path": "StudyTime", "level": "Study"},
    {"path": "OperatorsName", "level": "Series"}, {"path": "FrameOfReferenceUID", "level": "Series"},
    {"path": "InstanceNumber", "level": "Instance"}, {"path": "AcquisitionDate", "level": "Instance"},
]
NAMES = ["Alvarez", "Baker", "Chen", "Dubois", "Eriksen"]


@dataclass(frozen=True)
class Stored:
    """One stored instance and the values of its extended tags."""

    study: str
    series: str
    sop: str
    study_number: int
    series_number: int
    instance_number: int
    frame_of_reference: str

    @property
    def study_id(self) -> str:
        return f"EA{self.study_number:04d}"

    @property
    def study_time(self) -> str:
        return f"{self.study_number % 24:02d}{self.study_number % 60:02d}00"

    @property
    def operator(self) -> str:
        return f"{NAMES[(self.study_number + self.series_number) % len(NAMES)]}^Op{self.study_number}"

    @property
    def acquisition_date(self) -> str:
        return f"2024{1 + self.instance_number:02d}{1 + self.study_number % 28:02d}"


@dataclass(frozen=True)
class Archive:
    """The server, what it stores, and the reindex operation's last answer."""

    server: str
    instances: list[Stored]
    operation: httpx.Response


def _archive_instances() -> list[Stored]:
    found = []
    for study_number in range(STUDIES):
        study = generate_uid()
        for series_number in range(SERIES_PER_STUDY):
            series, frame_of_reference = generate_uid(), generate_uid()
            found += [Stored(study, series, generate_uid(), study_number, series_number, number, frame_of_reference)
                      for number in range(1, INSTANCES_PER_SERIES + 1)]
    return found


def _part(item: Stored) -> bytes:
    return make_instance(study=item.study, series=item.series, sop=item.sop, rows=1, columns=1,
                         StudyID=item.study_id, StudyTime=item.study_time, OperatorsName=item.operator,
                         FrameOfReferenceUID=item.frame_of_reference, InstanceNumber=item.instance_number,
                         AcquisitionDate=item.acquisition_date, PatientID=f"EA-P{item.study_number}")


def _store(server: str, items: list[Stored]) -> None:
    response = httpx.post(f"{server}/v2/studies", content=multipart_body([_part(item) for item in items]),
                          headers={"Content-Type": MULTIPART, "Accept": DICOM_JSON}, timeout=300)
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def archive(serve_with_env: Callable[[dict[str, str]], AbstractContextManager[str]]) -> Iterator[Archive]:
    """2,000 instances (200 studies × 2 series × 5) stored in STOW requests of 50, then the tags added."""
    suffix = uuid.uuid4().hex[:10]
    env = {"DICOMWEB_QUERY_STATS": "true", "DICOMWEB_TABLE_PREFIX": f"xa{suffix}",
           "DICOMWEB_BLOB_CONTAINER": f"xa-files-{suffix}", "DICOMWEB_METADATA_CONTAINER": f"xa-meta-{suffix}"}
    with serve_with_env(env) as server:
        instances = _archive_instances()
        requests = [instances[start:start + PARTS_PER_REQUEST] for start in range(0, len(instances), PARTS_PER_REQUEST)]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda items: _store(server, items), requests))
        added = httpx.post(f"{server}/v2/extendedquerytags", json=TAGS, timeout=30)
        assert added.status_code == 202, added.text
        yield Archive(server, instances, wait_for_operation(added.json()["href"], timeout=300))


def _search(archive: Archive, path: str) -> tuple[list[dict[str, dict[str, list[str]]]], int]:
    response = httpx.get(f"{archive.server}/v2{path}", timeout=60)
    assert response.status_code in (200, 204), response.text
    return ([] if response.status_code == 204 else response.json()), int(response.headers[ENTITIES_READ])


def test_the_reindex_of_the_archive_succeeds_with_every_instance_processed(archive: Archive) -> None:
    assert archive.operation.status_code == 200, archive.operation.text
    body = archive.operation.json()
    assert (body["status"], body["percentComplete"]) == ("succeeded", 100)
    listed = httpx.get(f"{archive.server}/v2/extendedquerytags", timeout=30).json()
    assert {(tag["status"], tag["queryStatus"]) for tag in listed} == {("ready", "enabled")}


# (resource, query, the predicate of the expected results, the UID attribute a result is told by, entities read
# per result asked for: 2, but 3 where each result is an instance of a series of its own, whose entry, instance row
# and series row it reads, as the built-in attributes' /instances lists do)
_KINDS: list[tuple[str, str, Callable[[Stored], bool], str, int]] = [
    ("studies", "StudyID=EA0042", lambda item: item.study_id == "EA0042", STUDY_UID, 2),
    ("studies", "StudyID=EA01*", lambda item: item.study_id.startswith("EA01"), STUDY_UID, 2),
    ("studies", "StudyTime=050000-080000", lambda item: "050000" <= item.study_time <= "080000", STUDY_UID, 2),
    ("series", "StudyID=EA0042", lambda item: item.study_id == "EA0042", SERIES_UID, 2),
    ("series", "StudyTime=-030000", lambda item: item.study_time <= "030000", SERIES_UID, 2),
    ("series", "OperatorsName=chen&fuzzymatching=true", lambda item: item.operator.startswith("Chen"), SERIES_UID, 2),
    ("series", "OperatorsName=Baker^Op1*", lambda item: item.operator.startswith("Baker^Op1"), SERIES_UID, 2),
    ("instances", "StudyTime=230000-", lambda item: item.study_time >= "230000", SOP_UID, 2),
    ("instances", "OperatorsName=Chen^Op7", lambda item: item.operator == "Chen^Op7", SOP_UID, 2),
    ("instances", "OperatorsName=dub&fuzzymatching=true", lambda item: item.operator.startswith("Dubois"), SOP_UID, 2),
    ("instances", "InstanceNumber=3", lambda item: item.instance_number == 3, SOP_UID, 3),
    ("instances", "AcquisitionDate=20240301-20240305", lambda item: "20240301" <= item.acquisition_date
     <= "20240305", SOP_UID, 3),
]


def _expected(archive: Archive, wanted: Callable[[Stored], bool], uid: str) -> set[str]:
    attribute = {STUDY_UID: "study", SERIES_UID: "series", SOP_UID: "sop"}[uid]
    return {getattr(item, attribute) for item in archive.instances if wanted(item)}


@pytest.mark.parametrize(("resource", "query", "wanted", "uid", "per_result"), _KINDS)
def test_every_match_is_found_once_at_each_level_with_each_matching_kind(
    archive: Archive, resource: str, query: str, wanted: Callable[[Stored], bool], uid: str, per_result: int,
) -> None:
    found: list[str] = []
    while True:
        page, _ = _search(archive, f"/{resource}?{query}&limit=200&offset={len(found)}")
        found += [item[uid]["Value"][0] for item in page]
        if len(page) < 200:
            break
    expected = _expected(archive, wanted, uid)
    assert expected and len(found) == len(set(found)) and set(found) == expected


@pytest.mark.parametrize(("resource", "query", "wanted", "uid", "per_result"), _KINDS)
@pytest.mark.parametrize(("limit", "offset"), [(10, 0), (10, 20)])
def test_a_page_reads_in_proportion_to_the_results_asked_for(
    archive: Archive, resource: str, query: str, wanted: Callable[[Stored], bool], uid: str, per_result: int,
    limit: int, offset: int,
) -> None:
    found, entities = _search(archive, f"/{resource}?{query}&limit={limit}&offset={offset}")
    expected = _expected(archive, wanted, uid)
    assert len(found) == min(limit, max(0, len(expected) - offset))
    assert {item[uid]["Value"][0] for item in found} <= expected
    assert entities <= per_result * (offset + limit), entities


def test_a_uid_list_finds_the_series_of_each_uid(archive: Archive) -> None:
    chosen = archive.instances[::400]
    uids = ",".join(item.frame_of_reference for item in chosen)
    found, entities = _search(archive, f"/series?FrameOfReferenceUID={uids}&limit=10")
    assert {item[SERIES_UID]["Value"][0] for item in found} == {item.series for item in chosen}
    assert entities <= 2 * 10
