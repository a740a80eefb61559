"""Which index serves a search, and what a search costs in an archive of a thousand studies or more.

The archive is stored through the STOW service (`store_instances`), so the index entries are the ones the
store path writes. Cost is the number of Table entities a search reads; an indexed search must read a small
multiple of offset + limit, however large the archive.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import date, timedelta

import pytest
from pydicom.uid import generate_uid

from dicom_core.qido.index_ranges import study_index_range
from dicom_core.qido.query import QidoResource, parse_query
from dicom_core.qido.service import SearchRequest, search_datasets
from dicom_core.settings import Settings
from dicom_core.storage.clients import Storage, open_storage
from tests.factories import make_instance

STUDIES, SERIES, INSTANCES = QidoResource.ALL_STUDIES, QidoResource.ALL_SERIES, QidoResource.ALL_INSTANCES
# Seeding goes through the whole store path (about 30 storage requests per new study): 1000 studies take
# minutes on a small shared machine; QIDO_SCALE_STUDIES=3000 runs the same assertions on a larger archive.
ARCHIVE_STUDIES = int(os.environ.get("QIDO_SCALE_STUDIES", "1000"))
STUDIES_PER_REQUEST = 25
FAMILY = ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Robinson", "Wright",
          "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall", "Wood", "Jackson", "Clarke"]
GIVEN = ["Oliver", "Amelia", "Harry", "Isla", "Jack", "Ava", "Charlie", "Emily", "Thomas", "Sophia", "Jacob", "Mia"]
MODALITIES = ["CT", "MR", "US", "CR", "DX"]
BIG_STUDY_SERIES, BIG_STUDY_SERIES_INSTANCES = 3, 4
BIG_STUDY_INSTANCES = BIG_STUDY_SERIES * BIG_STUDY_SERIES_INSTANCES


def _index(query: str) -> str | None:
    found = study_index_range(parse_query(STUDIES, query, api_version=2))
    if found is None:
        return None
    if found.low is None or not found.by_word:
        return found.partition
    return f"{found.partition} [{found.low}, {found.high})"


@pytest.mark.parametrize(
    ("query", "index"),
    [
        ("PatientID=P1&AccessionNumber=A1&PatientName=Doe", "s.acc|A1"),
        ("PatientName=Doe^John&PatientID=p1", "s.pid|P1"),
        ("PatientName=Doe^John&StudyDate=20200101", 's.pnpair|D [DOE^JOHN!, DOE^JOHN")'),
        ("PatientName=doe&StudyDate=20200101", 's.pnword|D [DOE!, DOE")'),
        ("PatientName=jo+ander&fuzzymatching=true", "s.pnword|A [ANDER, ANDES)"),
        ("PatientName=Christopherson&fuzzymatching=true", "s.pnword|C [CHRISTOPHERSON, CHRISTOPHERSOO)"),
        ("PatientName=Doe^J*&ReferringPhysicianName=Lee", 's.refword|L [LEE!, LEE")'),
        ("PatientName=Doe^J*", "s.pnpair|D [DOE^J, DOE^K)"),
        ("PatientName=Doe^Johns*", "s.pnpair|D [DOE^JOHNS, DOE^JOHNT)"),
        ("PatientName=Doe^Johns^*", "s.pnpair|D [DOE^JOHNS!, DOE^JOHNS\")"),
        ("PatientName=*Doe^Johns*", None),
        ("PatientName=Doe*^Johns*", 's.pnword|D [DOE, DOF)'),
        ("PatientName=Do?^J*", "s.pnword|D [DO, DP)"),
        ("PatientName=Zz9*", "s.pnword|Z [ZZ9, ZZ:)"),
        ("PatientName=%C3%89l%C3%A9onore*", "s.pnword|E [ELEONORE, ELEONORF)"),
        ("PatientName=%E5%B1%B1%E7%94%B0*", "s.pnword|%E5%B1%B1 [%E5%B1%B1%E7%94%B0, %E5%B1%B1%E7%94%B1)"),
        ("PatientName=*oe&ReferringPhysicianName=le*", "s.refword|L [LE, LF)"),
        ("PatientName=*oe&StudyDate=20200101-", "s.date"),
        ("StudyDate=20200101&ModalitiesInStudy=CT", "s.date"),
        ("ModalitiesInStudy=ct", "s.mod|CT"),
        ("ModalitiesInStudy=CT\\MR", None),
        ("PatientID=P*", None),
        ("StudyDescription=Chest", None),
    ],
)
def test_most_selective_index_serves_a_combination(query: str, index: str | None) -> None:
    assert _index(query) == index


@dataclass
class Archive:
    """A seeded archive and what the tests need to know about it."""

    storage: Storage
    studies: int
    big_study: str
    patient_studies: dict[str, list[str]]

    async def search(self, resource: QidoResource, query: str, **scope: str):
        """Run a search and return (datasets, entities read)."""
        response = await search_datasets(self.storage, SearchRequest(resource, 2, query, **scope))
        return response.datasets, response.entities_read


def _study_parts(i: int) -> tuple[str, str, list[bytes]]:
    patient = f"SC-P{i % max(1, ARCHIVE_STUDIES // 4)}"
    study = generate_uid()
    attributes = dict(
        PatientID=patient, AccessionNumber=f"SC-A{i}",
        StudyDate=(date(2015, 1, 1) + timedelta(days=i)).strftime("%Y%m%d"),
        PatientName=f"{FAMILY[i % len(FAMILY)]}^{GIVEN[i % len(GIVEN)]}",
        ReferringPhysicianName=f"Dr {FAMILY[(i * 7) % len(FAMILY)]}", Modality=MODALITIES[i % len(MODALITIES)],
    )
    return patient, study, [make_instance(study=study, rows=1, columns=1, **attributes)]


@pytest.fixture(scope="module")
async def archive(unit_settings: Settings, stow_parts) -> AsyncIterator[Archive]:
    """ARCHIVE_STUDIES single-instance studies plus one study of 3 series × 4 instances, stored by STOW."""
    storage = await open_storage(replace(unit_settings, table_prefix="scale", blob_container="scale-files",
                                         metadata_container="scale-metadata", store_concurrency=8))
    patients: dict[str, list[str]] = {}
    requests: list[list[bytes]] = []
    for first in range(0, ARCHIVE_STUDIES, STUDIES_PER_REQUEST):
        parts: list[bytes] = []
        for i in range(first, min(first + STUDIES_PER_REQUEST, ARCHIVE_STUDIES)):
            patient, study, study_parts = _study_parts(i)
            patients.setdefault(patient, []).append(study)
            parts += study_parts
        requests.append(parts)
    big = generate_uid()
    requests.append([make_instance(study=big, series=series, rows=1, columns=1, PatientID="SC-BIG", Modality="MR")
                     for series in (generate_uid() for _ in range(BIG_STUDY_SERIES))
                     for _ in range(BIG_STUDY_SERIES_INSTANCES)])
    slots = asyncio.Semaphore(4)

    async def store(parts: list[bytes]) -> None:
        async with slots:
            assert (await stow_parts(storage, parts)).status == 200

    await asyncio.gather(*(store(parts) for parts in requests))
    yield Archive(storage, ARCHIVE_STUDIES + 1, big, patients)
    await storage.close()


@pytest.mark.parametrize(
    ("resource", "query", "limit", "offset"),
    [
        (STUDIES, "", 100, 0),
        (STUDIES, "", 10, 50),
        (STUDIES, "AccessionNumber=SC-A17", 100, 0),
        (STUDIES, "PatientID=SC-P3", 100, 0),
        (STUDIES, "StudyDate=20150201-20150228", 100, 0),
        (STUDIES, "StudyDate=20150101-", 50, 0),
        (STUDIES, "PatientName=Smith^Oliver", 100, 0),
        (STUDIES, "PatientName=smi&fuzzymatching=true", 20, 0),
        (STUDIES, "PatientName=Wil*", 20, 0),
        (STUDIES, "PatientName=Smith^Ol*", 20, 0),
        (STUDIES, "ReferringPhysicianName=wri&fuzzymatching=true", 5, 5),
        (STUDIES, "ModalitiesInStudy=CT", 50, 0),
        (STUDIES, "PatientName=smi&fuzzymatching=true&StudyDate=20150101-", 10, 0),
        (SERIES, "Modality=MR", 50, 0),
        (SERIES, "", 30, 0),
        (SERIES, "", 100, 0),
        (SERIES, "", 20, 40),
        (SERIES, "PatientID=SC-P5", 100, 0),
        (SERIES, "PatientName=smi&fuzzymatching=true", 20, 0),
        (SERIES, "StudyDate=20150101-", 50, 0),
    ],
)
async def test_indexed_search_reads_at_most_two_entities_per_result_asked_for(
    archive: Archive, resource: QidoResource, query: str, limit: int, offset: int
) -> None:
    datasets, entities = await archive.search(resource, f"{query}&limit={limit}&offset={offset}")
    assert datasets, "the archive has results for every query of this table"
    # A series or instance result is answered by its series row (which holds its study's attributes): the
    # entry and one row per result.
    assert entities <= 2 * (offset + limit), (entities, archive.studies)


@pytest.mark.parametrize(("query", "limit", "offset"), [("", 50, 0), ("", 100, 0), ("", 20, 40), ("Modality=CT", 50, 0),
                                                         ("PatientName=jones&fuzzymatching=true", 20, 0)])
async def test_instance_lists_read_at_most_two_entities_per_result_asked_for(
    archive: Archive, query: str, limit: int, offset: int
) -> None:
    datasets, entities = await archive.search(INSTANCES, f"{query}&limit={limit}&offset={offset}")
    # A single-instance series is answered by its entry and its series row (which copies its instance row); a
    # series of n instances by its entry, its series row and n instance rows. The big study's series (4
    # instances each) are among the newest; batches of series are a share of what the fan-out so far suggests, so
    # no series is read past the page; one partly on it is read whole (newest first needs all its rows).
    assert datasets
    assert entities <= 2 * (offset + limit) + BIG_STUDY_SERIES_INSTANCES, entities


@pytest.mark.parametrize("resource", [STUDIES, SERIES, INSTANCES])
@pytest.mark.parametrize("query", ["", "PatientName=smi&fuzzymatching=true", "PatientName=Wil*",
                                   "StudyDate=20150101-"])
@pytest.mark.parametrize("limit", [1, 5, 15, 16, 25])
async def test_small_pages_read_about_the_page_at_every_level(
    archive: Archive, resource: QidoResource, query: str, limit: int
) -> None:
    # Newest first within a study or series needs all its rows: a study's series rows (through a study index)
    # or a series' instance rows are read together, so those of one partly on the page are read past it.
    partly = {STUDIES: 0, SERIES: BIG_STUDY_SERIES - 1, INSTANCES: BIG_STUDY_SERIES - 1 + BIG_STUDY_SERIES_INSTANCES}
    for offset in (0, limit):
        datasets, entities = await archive.search(resource, f"{query}&limit={limit}&offset={offset}")
        assert len(datasets) == limit
        assert entities <= 2 * (offset + limit) + partly[resource], (offset, entities)


@pytest.mark.parametrize(("resource", "rows"), [(QidoResource.STUDY_SERIES, 1), (QidoResource.STUDY_INSTANCES, 2),
                                                 (QidoResource.STUDY_SERIES_INSTANCES, 1)])
async def test_lists_of_a_single_instance_study_read_a_row_or_two_by_one_query(
    archive: Archive, resource: QidoResource, rows: int,
) -> None:
    study = archive.patient_studies["SC-P3"][0]
    (found,), _ = await archive.search(QidoResource.STUDY_SERIES, "", study_uid=study)
    scope = {"study_uid": study, "series_uid": found["0020000E"]["Value"][0]}
    if resource is not QidoResource.STUDY_SERIES_INSTANCES:
        del scope["series_uid"]
    datasets, entities = await archive.search(resource, "", **scope)
    # Its series row (or its instance row); a study's instance list reads its series and instance rows together
    assert (len(datasets), entities) == (1, rows)


async def test_patient_search_finds_every_study_of_the_patient(archive: Archive) -> None:
    datasets, entities = await archive.search(STUDIES, "PatientID=SC-P3")
    assert sorted(d["0020000D"]["Value"][0] for d in datasets) == sorted(archive.patient_studies["SC-P3"])
    assert entities == 2 * len(datasets)  # one entry and one row per study


async def test_study_uid_list_reads_only_those_studies(archive: Archive) -> None:
    uids = archive.patient_studies["SC-P7"][:3] + [archive.big_study]
    datasets, entities = await archive.search(STUDIES, "StudyInstanceUID=" + "\\".join(uids))
    assert (len(datasets), entities) == (4, 4)


async def test_search_scoped_to_a_study_reads_only_its_partition(archive: Archive) -> None:
    datasets, entities = await archive.search(QidoResource.STUDY_INSTANCES, "limit=5", study_uid=archive.big_study)
    # A first page of 2 x 5 of its rows (it has more: not read together), then its series rows and the instance
    # rows of the two series (4 instances each) the page shows.
    assert (len(datasets), entities) == (5, 2 * 5 + 3 + 2 * BIG_STUDY_SERIES_INSTANCES)
    datasets, entities = await archive.search(QidoResource.STUDY_INSTANCES, "limit=8", study_uid=archive.big_study)
    assert (len(datasets), entities) == (8, 3 + 3 * BIG_STUDY_SERIES_INSTANCES)  # all its rows, by one query


@pytest.mark.parametrize(("resource", "limit", "most"), [(SERIES, 3, 1 + 3), (INSTANCES, 12, 1 + 3 + 12),
                                                         (INSTANCES, 4, 1 + 3 + 4)])
async def test_lists_of_a_study_read_its_rows_once(archive: Archive, resource: QidoResource, limit: int,
                                                   most: int) -> None:
    datasets, entities = await archive.search(resource, f"PatientID=SC-BIG&limit={limit}")
    # Its entry, its series rows (holding the study's attributes), the instance rows of the series it shows:
    # each read once, and no study row.
    assert (len(datasets), entities) == (limit, most)


async def test_unindexed_filter_scans_newest_first_within_the_budget(archive: Archive) -> None:
    budget = 300
    storage = replace(archive.storage, settings=replace(archive.storage.settings, query_scan_budget=budget))
    response = await search_datasets(storage, SearchRequest(STUDIES, 2, "StudyDescription=nothing-has-this&limit=10"))
    assert response.datasets == []
    assert budget <= response.entities_read <= budget + 2 * 10 + 1000
    assert response.warning is not None and response.warning.startswith("299 ")


@pytest.mark.parametrize(("resource", "query"), [
    (STUDIES, "StudyID=nothing-has-this"), (STUDIES, "StudyTime=235959.999"), (SERIES, "SeriesNumber=987654"),
    (SERIES, "PerformedProcedureStepStartDate=19000101"), (INSTANCES, "PerformedProcedureStepStartTime=235959.999"),
])
async def test_indexed_required_keys_alone_read_the_index_not_the_budget(archive: Archive, resource: QidoResource,
                                                                          query: str) -> None:
    """PS3.18 Table 10.6.1-5: StudyID, StudyTime, SeriesNumber, PerformedProcedureStepStartDate/Time are answered
    from their index entries, whatever the archive."""
    response = await search_datasets(archive.storage, SearchRequest(resource, 2, f"{query}&limit=10"))
    assert response.datasets == [] and response.warning is None
    assert response.entities_read == 0


@pytest.mark.parametrize(("resource", "query"), [(INSTANCES, "SOPClassUID=1.2.3.987654"),
                                                 (INSTANCES, "InstanceNumber=987654")])
async def test_a_required_key_alone_is_matched_on_rows_within_the_budget(archive: Archive, resource: QidoResource,
                                                                        query: str) -> None:
    """PS3.18 Table 10.6.1-5 keys no index serves are matched on the rows read: alone, the search stops at the
    scan budget with a Warning: 299 (not the Warning of an ignored filter)."""
    budget = 300
    storage = replace(archive.storage, settings=replace(archive.storage.settings, query_scan_budget=budget))
    response = await search_datasets(storage, SearchRequest(resource, 2, f"{query}&limit=10"))
    assert response.datasets == []
    assert budget <= response.entities_read <= budget + 2 * 10 + 1000
    assert response.warning is not None and "stopped after reading" in response.warning
    assert "ignored" not in response.warning
