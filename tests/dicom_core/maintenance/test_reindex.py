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

from dicom_core.index.reads import series_rows
from dicom_core.index.rows import LAST_INSTANCE, STUDY_ATTRIBUTES_COPY, STUDY_ROW
from dicom_core.maintenance.reindex import LEGACY_WORD_INDEXES, reindex_names
from dicom_core.model.dicom_json import person_name_forms
from dicom_core.model.tags import PATIENT_NAME, REFERRING_PHYSICIAN_NAME
from dicom_core.model.text import name_words
from dicom_core.qido.query import QidoResource
from dicom_core.qido.service import SearchRequest, search_datasets
from dicom_core.search_index.keys import NAME_WORD_INDEXES, encode_key, study_row_keys
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
    assert completed.stdout.startswith("2 studies: 12 name word entries written, 0 entries of the old layout deleted, "
                                       "0 series rows given their study's attributes")
    assert await _found(own, "PatientName=oldlay&fuzzymatching=true") == studies[::-1]
