"""Series rows' copies of their study's attributes: written by every store, kept in step when the study changes."""

from __future__ import annotations

from azure.data.tables import UpdateMode
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from dicom_core.index.commit import commit_instance
from dicom_core.index.reads import get_study_row, series_rows
from dicom_core.index.rows import STUDY_ATTRIBUTES_COPY, InstanceRecord
from dicom_core.index.study_copies import refresh_study_copies
from dicom_core.model.dicom_json import metadata_json
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance, new_version
from dicom_core.qido.query import QidoResource
from dicom_core.qido.service import SearchRequest, search_datasets
from dicom_core.search_index.entries import IndexIntents
from dicom_core.storage.clients import Storage
from tests.factories import make_dataset


def _record(study: str, series: str, **attributes: str) -> InstanceRecord:
    ds = make_dataset(study=study, series=series, **attributes)
    stored = StoredInstance(InstanceIdentifiers(study, series, str(ds.SOPInstanceUID)), new_version())
    return InstanceRecord(stored=stored, sop_class_uid=str(CTImageStorage), transfer_syntax=str(ExplicitVRLittleEndian),
                          size=0, metadata=metadata_json(ds))


async def _store(storage: Storage, record: InstanceRecord) -> None:
    """Commit an instance with its index entries, as the store path does."""
    await commit_instance(storage, record, upsert=False, hooks=IndexIntents(storage, record))


async def _copies(storage: Storage, study: str) -> dict[str, str | None]:
    return {str(row["RowKey"]): row.get(STUDY_ATTRIBUTES_COPY) for row in await series_rows(storage, study)}


async def _series_names(storage: Storage, study: str) -> tuple[list[str], int]:
    """The PatientName of each series result of a cross-study series search by the study's UID, and entities read."""
    response = await search_datasets(storage, SearchRequest(QidoResource.ALL_SERIES, 2, f"StudyInstanceUID={study}"))
    return [dataset["00100010"]["Value"][0]["Alphabetic"] for dataset in response.datasets], response.entities_read


async def _series_by_uid(storage: Storage, series: str) -> tuple[str, int]:
    response = await search_datasets(storage, SearchRequest(QidoResource.ALL_SERIES, 2, f"SeriesInstanceUID={series}"))
    return response.datasets[0]["00100010"]["Value"][0]["Alphabetic"], response.entities_read


async def test_every_series_row_holds_the_study_attributes_its_transaction_wrote(own: Storage) -> None:
    study, first, second = (str(generate_uid()) for _ in range(3))
    for series in (first, second):
        await _store(own, _record(study, series, PatientName="Before^Name"))
    study_row = await get_study_row(own, study)
    assert study_row is not None
    assert set((await _copies(own, study)).values()) == {study_row["Attributes"]}


async def test_a_store_that_changes_the_study_attributes_updates_the_other_series_copies(own: Storage) -> None:
    study, first, second = (str(generate_uid()) for _ in range(3))
    for series in (first, second):
        await _store(own, _record(study, series, PatientName="Before^Name"))
    await _store(own, _record(study, first, PatientName="After^Name"))
    study_row = await get_study_row(own, study)
    assert study_row is not None and "After^Name" in study_row["Attributes"]
    assert set((await _copies(own, study)).values()) == {study_row["Attributes"]}
    # Latest wins for every series of the study, each answered from its own row: entry and series row.
    assert await _series_by_uid(own, second) == ("After^Name", 2)


async def test_a_series_row_without_a_copy_is_answered_from_the_study_row(own: Storage) -> None:
    study, series = str(generate_uid()), str(generate_uid())
    await _store(own, _record(study, series, PatientName="Old^Row"))
    (row,) = await series_rows(own, study)
    await own.studies.upsert_entity({key: value for key, value in row.items() if key != STUDY_ATTRIBUTES_COPY},
                                    mode=UpdateMode.REPLACE)
    assert await _series_by_uid(own, series) == ("Old^Row", 3)  # entry, series row, study row
    assert await _series_names(own, study) == (["Old^Row"], 2)  # study row, series row


async def test_refresh_brings_copies_left_behind_in_step(own: Storage) -> None:
    study, first, second = (str(generate_uid()) for _ in range(3))
    for series in (first, second):
        await _store(own, _record(study, series, PatientName="Kept^Name"))
    (row, *_) = await series_rows(own, study)
    await own.studies.update_entity({"PartitionKey": study, "RowKey": row["RowKey"], STUDY_ATTRIBUTES_COPY: "{}"},
                                    mode=UpdateMode.MERGE)
    assert await refresh_study_copies(own, study) == 1
    study_row = await get_study_row(own, study)
    assert study_row is not None
    assert set((await _copies(own, study)).values()) == {study_row["Attributes"]}
    assert await refresh_study_copies(own, study) == 0
