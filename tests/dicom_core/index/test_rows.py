"""Series rows' copies of the instance row their last commit wrote: what lets an instance list answer a
single-instance series from its series row, and how a delete keeps the copy from answering for a gone instance."""

from __future__ import annotations

from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from dicom_core.delete.service import delete_instance
from dicom_core.index.commit import commit_instance
from dicom_core.index.reads import get_row
from dicom_core.index.rows import (
    LAST_INSTANCE,
    LAST_INSTANCE_PROPERTIES,
    InstanceRecord,
    instance_row_key,
    series_row_key,
)
from dicom_core.model.dicom_json import metadata_json
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance, new_version
from dicom_core.qido.query import QidoResource
from dicom_core.qido.service import SearchRequest, search_datasets
from dicom_core.search_index.entries import IndexIntents
from dicom_core.storage.clients import Storage
from tests.factories import make_dataset


def _record(study: str, series: str, **attributes: object) -> InstanceRecord:
    ds = make_dataset(study=study, series=series, **attributes)
    stored = StoredInstance(InstanceIdentifiers(study, series, str(ds.SOPInstanceUID)), new_version())
    return InstanceRecord(stored=stored, sop_class_uid=str(CTImageStorage), transfer_syntax=str(ExplicitVRLittleEndian),
                          size=0, metadata=metadata_json(ds))


async def _store(storage: Storage, record: InstanceRecord) -> InstanceIdentifiers:
    await commit_instance(storage, record, upsert=False, hooks=IndexIntents(storage, record))
    return record.stored.ids


async def _series_instances(storage: Storage, series: str) -> tuple[list[tuple[str, int]], int]:
    """(SOPInstanceUID, InstanceNumber) of each result of an instance search by series UID, and entities read."""
    response = await search_datasets(storage, SearchRequest(
        QidoResource.ALL_INSTANCES, 2, f"SeriesInstanceUID={series}&includefield=InstanceNumber"))
    return [(d["00080018"]["Value"][0], d["00200013"]["Value"][0]) for d in response.datasets], response.entities_read


async def test_a_series_row_copies_the_instance_row_its_commit_wrote(own: Storage) -> None:
    study, series = str(generate_uid()), str(generate_uid())
    await _store(own, _record(study, series, InstanceNumber=1))
    last = await _store(own, _record(study, series, InstanceNumber=2))
    series_row = await get_row(own, study, series_row_key(series))
    instance_row = await get_row(own, study, instance_row_key(series, last.instance))
    assert series_row is not None and instance_row is not None
    assert series_row[LAST_INSTANCE] == last.instance
    assert {name: series_row[LAST_INSTANCE + name] for name in LAST_INSTANCE_PROPERTIES} == {
        name: instance_row[name] for name in LAST_INSTANCE_PROPERTIES}


async def test_an_instance_search_answers_a_single_instance_series_from_its_entry_and_series_row(own: Storage) -> None:
    study, series = str(generate_uid()), str(generate_uid())
    only = await _store(own, _record(study, series, InstanceNumber=7))
    assert await _series_instances(own, series) == ([(only.instance, 7)], 2)


async def test_deleting_the_copied_instance_drops_the_copy(own: Storage) -> None:
    study, series = str(generate_uid()), str(generate_uid())
    kept = await _store(own, _record(study, series, InstanceNumber=1))
    gone = await _store(own, _record(study, series, InstanceNumber=2))
    await delete_instance(own, gone)
    series_row = await get_row(own, study, series_row_key(series))
    assert series_row is not None and int(series_row["InstanceCount"]) == 1
    assert not any(name.startswith(LAST_INSTANCE) for name in series_row)
    # The series now holds one instance but no copy: its instance rows are read (entry, series row, instance row).
    assert await _series_instances(own, series) == ([(kept.instance, 1)], 3)


async def test_deleting_another_instance_keeps_the_copy(own: Storage) -> None:
    study, series = str(generate_uid()), str(generate_uid())
    gone = await _store(own, _record(study, series, InstanceNumber=1))
    kept = await _store(own, _record(study, series, InstanceNumber=2))
    await delete_instance(own, gone)
    assert await _series_instances(own, series) == ([(kept.instance, 2)], 2)
