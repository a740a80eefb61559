"""Bringing an archive of the layout before (name entries per word prefix, no word pairs, series rows without
their study's attributes) to the current one, from the study rows."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from azure.data.tables import UpdateMode
from pydicom.uid import generate_uid

from dicom_core.index.reads import series_rows
from dicom_core.index.rows import LAST_INSTANCE, STUDY_ATTRIBUTES_COPY, STUDY_ROW
from dicom_core.maintenance.consistency import check_consistency
from dicom_core.maintenance.reindex import LEGACY_WORD_INDEXES, reindex_names
from dicom_core.model.dicom_json import person_name_forms
from dicom_core.model.tags import PATIENT_NAME, REFERRING_PHYSICIAN_NAME
from dicom_core.model.text import name_words
from dicom_core.qido.query import QidoResource
from dicom_core.qido.service import SearchRequest, search_datasets
from dicom_core.search_index.keys import (
    INSTANCES_BY_UID,
    LEGACY_UID_INDEXES,
    NAME_WORD_INDEXES,
    SERIES_BY_NUMBER,
    SERIES_BY_UID,
    STUDIES_BY_STUDY_ID,
    STUDIES_BY_TIME,
    encode_key,
    legacy_uid_keys,
    series_row_keys,
    study_row_keys,
    uid_key,
)
from dicom_core.settings import Settings
from dicom_core.storage.clients import Storage, open_storage
from tests.factories import make_dataset, to_bytes

REPO_ROOT = Path(__file__).resolve().parents[3]
OLD_PREFIX_CHARS = 6


@pytest.fixture
async def own(unit_settings: Settings) -> AsyncIterator[Storage]:
    """Storage of this test's own, its tables in three shards: the migration reads every study in it."""
    suffix = uuid.uuid4().hex[:10]
    opened = await open_storage(replace(unit_settings, table_prefix=f"rix{suffix}", blob_container=f"rix-{suffix}",
                                        metadata_container=f"rixm-{suffix}", table_shards=3))
    yield opened
    await opened.close()


async def _to_old_layout(storage: Storage, study: str) -> int:
    """Replace a stored study's name word entries with those of the layout before; return how many it wrote."""
    row = await storage.studies.get_entity(study, STUDY_ROW)
    sort = str((await storage.index.get_entity(f"claim|{study}", STUDY_ROW))["SortKey"])
    for key in study_row_keys(row):
        if key.index in NAME_WORD_INDEXES:
            await storage.index.delete_entity(key.partition, key.row_key(sort, study))
    attributes = json.loads(row["Attributes"])
    old = {f"{index}|{encode_key(word[:length])}"
           for index, tag in zip(LEGACY_WORD_INDEXES, (PATIENT_NAME, REFERRING_PHYSICIAN_NAME), strict=True)
           for form in person_name_forms(attributes, tag) for word in name_words(form)
           for length in range(1, min(len(word), OLD_PREFIX_CHARS) + 1)}
    for partition in old:
        await storage.index.upsert_entity({"PartitionKey": partition, "RowKey": f"{sort}|{study}"})
    for series in await series_rows(storage, study):
        await storage.studies.upsert_entity({key: value for key, value in series.items()
                                             if key != STUDY_ATTRIBUTES_COPY and not key.startswith(LAST_INSTANCE)},
                                            mode=UpdateMode.REPLACE)
    return len(old)


async def _series_search(storage: Storage, series: str) -> tuple[str, int]:
    """The PatientName a search of a series by UID answers, and the entities it read."""
    response = await search_datasets(storage, SearchRequest(QidoResource.ALL_SERIES, 2, f"SeriesInstanceUID={series}"))
    return response.datasets[0]["00100010"]["Value"][0]["Alphabetic"], response.entities_read


async def _instance_search(storage: Storage, series: str) -> tuple[str, int]:
    """The SOPInstanceUID an instance search of a series by UID answers, and the entities it read."""
    response = await search_datasets(storage, SearchRequest(QidoResource.ALL_INSTANCES, 2,
                                                            f"SeriesInstanceUID={series}"))
    return response.datasets[0]["00080018"]["Value"][0], response.entities_read


async def _old_entries(storage: Storage) -> list[str]:
    return [str(entity["PartitionKey"]) async for entity in storage.index.list_entities(select=["PartitionKey"])
            if str(entity["PartitionKey"]).startswith(tuple(f"{index}|" for index in LEGACY_WORD_INDEXES))]


async def _found(storage: Storage, query: str) -> list[str]:
    response = await search_datasets(storage, SearchRequest(QidoResource.ALL_STUDIES, 2, query))
    assert response.warning is None
    return [dataset["0020000D"]["Value"][0] for dataset in response.datasets]


async def test_an_archive_of_the_old_layout_is_found_by_name_after_the_migration(
    own: Storage, stow_parts, azurite
) -> None:
    first = make_dataset(PatientName="Oldlayout^Anna", ReferringPhysicianName="Ref^Rick")
    second = make_dataset(PatientName="Oldlayout^Bert", ReferringPhysicianName="Ref^Rose")
    for ds in (first, second):
        assert (await stow_parts(own, [to_bytes(ds)])).status == 200
    studies = [str(first.StudyInstanceUID), str(second.StudyInstanceUID)]
    old = [await _to_old_layout(own, study) for study in studies]
    assert await _found(own, "PatientName=oldlay&fuzzymatching=true") == []
    assert await _series_search(own, str(first.SeriesInstanceUID)) == ("Oldlayout^Anna", 3)  # entry, series, study
    assert await _instance_search(own, str(first.SeriesInstanceUID)) == (str(first.SOPInstanceUID), 4)  # and instance

    kept = await reindex_names(own, keep_old=True)
    # Per study: two words and a word pair of each name; one series row given its copies.
    assert (kept.studies, kept.entries_written, kept.old_entries_deleted, kept.copies_written,
            kept.instance_copies_written) == (2, 12, 0, 2, 2)
    assert await _series_search(own, str(first.SeriesInstanceUID)) == ("Oldlayout^Anna", 2)  # entry, series
    assert await _instance_search(own, str(first.SeriesInstanceUID)) == (str(first.SOPInstanceUID), 2)
    assert await _found(own, "PatientName=oldlay&fuzzymatching=true") == studies[::-1]
    assert len(await _old_entries(own)) == sum(old)

    report = await reindex_names(own)
    assert (report.studies, report.entries_written, report.old_entries_deleted, report.copies_written,
            report.instance_copies_written) == (2, 12, sum(old), 0, 0)
    assert await _old_entries(own) == []
    assert await _found(own, "PatientName=oldlay&fuzzymatching=true") == studies[::-1]
    assert await _found(own, "PatientName=Oldlayout^A*") == studies[:1]
    assert await _found(own, "ReferringPhysicianName=ro&fuzzymatching=true") == studies[1:]
    assert await _found(own, "PatientName=oldlayout^bert") == studies[1:]

    settings = own.settings
    env = {"DICOMWEB_STORAGE_CONNECTION_STRING": azurite.connection_string, "PATH": "",
           "DICOMWEB_TABLE_PREFIX": settings.table_prefix, "DICOMWEB_TABLE_SHARDS": str(settings.table_shards)}
    completed = subprocess.run([sys.executable, "-m", "dicom_core.maintenance.reindex"], cwd=REPO_ROOT, env=env,
                               capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("2 studies: 12 value entries (name words, IDs, times) written, "
                                       "0 entries of the old layout deleted, "
                                       "0 series rows given their study's attributes")
    assert await _found(own, "PatientName=oldlay&fuzzymatching=true") == studies[::-1]


async def test_studies_and_series_stored_before_the_value_indexes_are_found_after_the_migration(
    own: Storage, stow_parts,
) -> None:
    ds = make_dataset(StudyID="MIGR!1", StudyTime="081500", SeriesNumber="77")
    assert (await stow_parts(own, [to_bytes(ds)])).status == 200
    study, series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
    row = await own.studies.get_entity(study, STUDY_ROW)
    sort = str((await own.index.get_entity(f"claim|{study}", STUDY_ROW))["SortKey"])
    for key in study_row_keys(row):
        if key.index in {STUDIES_BY_STUDY_ID, STUDIES_BY_TIME}:
            await own.index.delete_entity(key.partition, key.row_key(sort, study))
    [series_row] = await series_rows(own, study)
    series_sort = str((await own.index.get_entity(f"claim|{study}", f"series|{series}"))["SortKey"])
    for key in series_row_keys(series_row):
        if key.index == SERIES_BY_NUMBER:
            await own.index.delete_entity(key.partition, key.row_key(series_sort, study, series))
    assert await _found(own, "StudyID=MIGR!1") == [] and await _found(own, "StudyTime=0815") == []
    assert await _found_series(own, "SeriesNumber=77") == []

    report = await reindex_names(own)
    # The two words and the word pair of the PatientName, StudyID, StudyTime, SeriesNumber.
    assert report.entries_written == 6
    assert await _found(own, "StudyID=MIGR!1") == [study]
    assert await _found(own, "StudyTime=0800-0830") == [study]
    assert await _found_series(own, "SeriesNumber=77") == [series]


async def _found_series(storage: Storage, query: str) -> list[str]:
    response = await search_datasets(storage, SearchRequest(QidoResource.ALL_SERIES, 2, query))
    assert response.warning is None
    return [dataset["0020000E"]["Value"][0] for dataset in response.datasets]


async def _to_old_uid_layout(storage: Storage, study: str, series: str, instances: list[str], layout: int) -> None:
    """Replace a stored series' UID lookup entities with entries of a layout before: a RowKey range of the UID's
    root's partition (0), a partition per UID (1)."""
    for index, ids in [(SERIES_BY_UID, (study, series)),
                       *((INSTANCES_BY_UID, (study, series, sop)) for sop in instances)]:
        key, legacy = uid_key(index, ids[-1]), legacy_uid_keys(index, ids[-1])[layout]
        await storage.index.delete_entity(key.partition, key.row_key("", *ids))
        await storage.index.upsert_entity({"PartitionKey": legacy.partition, "RowKey": legacy.row_key("", *ids)})


async def _found_by_uids(storage: Storage, series: str, sop: str) -> tuple[list[str], list[str]]:
    """The series a search by SeriesInstanceUID finds, and the instances a search by SOPInstanceUID finds."""
    found_series = await search_datasets(storage, SearchRequest(QidoResource.ALL_SERIES, 2,
                                                                f"SeriesInstanceUID={series}"))
    found_instances = await search_datasets(storage, SearchRequest(QidoResource.ALL_INSTANCES, 2,
                                                                   f"SOPInstanceUID={sop}"))
    return ([dataset["0020000E"]["Value"][0] for dataset in found_series.datasets],
            [dataset["00080018"]["Value"][0] for dataset in found_instances.datasets])


async def _legacy_uid_entries(storage: Storage) -> list[str]:
    return [str(entity["PartitionKey"]) async for entity in storage.index.list_entities(select=["PartitionKey"])
            if str(entity["PartitionKey"]).startswith(tuple(f"{index}|" for index in LEGACY_UID_INDEXES))]


@pytest.mark.parametrize("layout", [0, 1], ids=["range-per-uid", "partition-per-uid"])
async def test_uid_lookups_of_a_layout_before_are_found_before_and_after_the_migration(
    own: Storage, stow_parts, layout: int
) -> None:
    study, series = generate_uid(), generate_uid()
    instances = [generate_uid() for _ in range(2)]
    parts = [to_bytes(make_dataset(study=study, series=series, sop=sop)) for sop in instances]
    assert (await stow_parts(own, parts)).status == 200
    await _to_old_uid_layout(own, study, series, instances, layout)
    await own.index.upsert_entity({"PartitionKey": "s.pn|OLD^NAME", "RowKey": f"0|{study}"})  # a whole name's
    assert len(await _legacy_uid_entries(own)) == 3
    assert await _found_by_uids(own, series, instances[0]) == ([series], instances[:1])  # read from the old layout

    kept = await reindex_names(own, keep_old=True)
    assert (kept.uid_entries_written, kept.old_entries_deleted) == (3, 0)
    assert await _found_by_uids(own, series, instances[0]) == ([series], instances[:1])  # in both layouts: once

    report = await reindex_names(own)
    assert (report.uid_entries_written, report.old_entries_deleted) == (3, 4)
    assert await _legacy_uid_entries(own) == []
    assert [entity async for entity in own.index.query_entities(
        "PartitionKey eq @pk", parameters={"pk": "s.pn|OLD^NAME"})] == []
    assert await _found_by_uids(own, series, instances[1]) == ([series], instances[1:])
    assert await check_consistency(own, uid_entries=True) == []
    again = await reindex_names(own)
    assert (again.uid_entries_written, again.old_entries_deleted) == (3, 0)
