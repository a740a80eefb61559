"""Study-partition rows: keys, bounded properties, and the group commit of instances stored at once."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator

import pytest
from azure.data.tables import UpdateMode
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from dicom_core.index.commit import InstanceExistsError, commit_instance
from dicom_core.index.known_studies import forget_study
from dicom_core.index.reads import get_study_row, instance_rows, series_rows
from dicom_core.index.rows import (
    MAX_ATTRIBUTES_CHARS,
    STUDY_ROW,
    InstanceRecord,
    attributes_property,
    group_operations,
    instance_row_key,
    series_row_key,
)
from dicom_core.model.dicom_json import metadata_json
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance, new_version
from dicom_core.model.levels import Level
from dicom_core.settings import Settings
from dicom_core.storage.clients import Storage, open_storage
from tests.factories import make_dataset


def test_instance_keys_of_a_series_share_a_prefix_apart_from_series_rows() -> None:
    assert instance_row_key("1.2", "3").startswith("instance|1.2|")
    assert instance_row_key("1.2", "3") < series_row_key("1.2") < "study"


def test_oversized_attributes_drop_the_largest_element() -> None:
    metadata = {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        "00081030": {"vr": "LO", "Value": ["x" * (MAX_ATTRIBUTES_CHARS + 10)]},
    }
    kept = json.loads(attributes_property(metadata, Level.STUDY))
    assert list(kept) == ["00100010"]


def _record(study: str, series: str, sop_class_uid: str = str(CTImageStorage), **attributes: str) -> InstanceRecord:
    ds = make_dataset(study=study, series=series, **attributes)
    stored = StoredInstance(InstanceIdentifiers(str(study), str(series), str(ds.SOPInstanceUID)), new_version())
    return InstanceRecord(stored=stored, sop_class_uid=sop_class_uid, transfer_syntax=str(ExplicitVRLittleEndian),
                          size=0, metadata=metadata_json(ds))


def _counting_transactions(storage: Storage) -> list[int]:
    """Record the operations of each transaction the study table receives (the real client does the work)."""
    sizes: list[int] = []
    submit = storage.studies.submit_transaction

    async def counting(operations, **kwargs):  # type: ignore[no-untyped-def]
        sizes.append(len(operations))
        return await submit(operations, **kwargs)

    storage.studies.submit_transaction = counting  # type: ignore[method-assign]
    return sizes


@pytest.fixture
async def own_storage(unit_settings: Settings) -> AsyncIterator[Storage]:
    """Clients of their own, so counting their transactions sees no other test's."""
    opened = await open_storage(unit_settings)
    yield opened
    await opened.close()


async def test_concurrent_commits_into_one_study_share_transactions_and_keep_counts_exact(own_storage: Storage) -> None:
    study, series_a, series_b = generate_uid(), generate_uid(), generate_uid()
    records = [_record(study, series_a, Modality="CT") for _ in range(14)]
    records += [_record(study, series_b, Modality="MR") for _ in range(10)]
    transactions = _counting_transactions(own_storage)
    await asyncio.gather(*(commit_instance(own_storage, record, upsert=False) for record in records))
    study_row = await get_study_row(own_storage, study)
    assert study_row is not None
    assert (study_row["InstanceCount"], study_row["SeriesCount"]) == (24, 2)
    assert json.loads(study_row["ModalityCounts"]) == {"CT": 14, "MR": 10}
    counts = {row["RowKey"]: row["InstanceCount"] for row in await series_rows(own_storage, study)}
    assert counts == {series_row_key(series_a): 14, series_row_key(series_b): 10}
    assert len(await instance_rows(own_storage, study)) == 24
    assert len(transactions) < len(records)


async def test_the_same_instance_committed_twice_at_once_is_stored_once_and_refused_once(own_storage: Storage) -> None:
    record = _record(generate_uid(), generate_uid())
    twin = InstanceRecord(**{**vars(record), "stored": StoredInstance(record.stored.ids, new_version())})
    results = await asyncio.gather(commit_instance(own_storage, record, upsert=False),
                                   commit_instance(own_storage, twin, upsert=False), return_exceptions=True)
    assert sorted(type(result).__name__ for result in results) == ["InstanceExistsError", "NoneType"]
    study_row = await get_study_row(own_storage, record.stored.ids.study)
    assert study_row is not None and study_row["InstanceCount"] == 1


async def test_an_instance_table_storage_refuses_fails_alone_and_the_rest_of_its_group_is_committed(
    own_storage: Storage,
) -> None:
    study, series = generate_uid(), generate_uid()
    good = [_record(study, series) for _ in range(5)]
    oversized = _record(study, series, sop_class_uid="1." * 600_000)  # an entity over Table Storage's 1 MiB
    results = await asyncio.gather(*(commit_instance(own_storage, record, upsert=False)
                                     for record in [*good[:2], oversized, *good[2:]]), return_exceptions=True)
    assert isinstance(results[2], Exception)
    assert [result for index, result in enumerate(results) if index != 2] == [None] * 5
    study_row = await get_study_row(own_storage, study)
    assert study_row is not None and study_row["InstanceCount"] == 5
    committed = {row["RowKey"] for row in await instance_rows(own_storage, study)}
    assert committed == {instance_row_key(series, record.stored.ids.instance) for record in good}


def _counting_reads(storage: Storage) -> list[str]:
    """Record the point reads and queries the study table receives."""
    reads: list[str] = []
    get, query = storage.studies.get_entity, storage.studies.query_entities

    async def counting_get(partition, row, **kwargs):  # type: ignore[no-untyped-def]
        reads.append(f"get {row}")
        return await get(partition, row, **kwargs)

    def counting_query(query_filter, **kwargs):  # type: ignore[no-untyped-def]
        reads.append(f"query {kwargs.get('parameters', {}).get('low')}")
        return query(query_filter, **kwargs)

    storage.studies.get_entity = counting_get  # type: ignore[method-assign]
    storage.studies.query_entities = counting_query  # type: ignore[method-assign]
    return reads


async def test_a_second_commit_into_a_study_reads_no_row(own_storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    reads = _counting_reads(own_storage)
    await commit_instance(own_storage, _record(study, series), upsert=False)
    assert reads == [f"query {STUDY_ROW}"]  # the study row and its marker: absent, so nothing else is read
    reads.clear()
    await commit_instance(own_storage, _record(study, series), upsert=False)
    assert reads == []  # the first commit's answer gave the ETags; the new instance row is inserted unread
    study_row = await get_study_row(own_storage, study)
    assert study_row is not None and study_row["InstanceCount"] == 2


async def test_a_commit_into_a_study_claimed_as_new_reads_no_row(own_storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    reads = _counting_reads(own_storage)
    await commit_instance(own_storage, _record(study, series), upsert=False, new_study=True)
    assert reads == []  # every row and the marker are created: the inserts fail if the study existed
    study_row = await get_study_row(own_storage, study)
    assert study_row is not None and study_row["InstanceCount"] == 1


async def test_a_study_wrongly_assumed_new_is_read_and_committed_into(own_storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    await commit_instance(own_storage, _record(study, series), upsert=False)
    forget_study(own_storage, study)  # as a process that never committed into it
    transactions = _counting_transactions(own_storage)
    await commit_instance(own_storage, _record(study, series), upsert=False, new_study=True)
    assert len(transactions) == 2  # the inserts refused (the study exists), then computed from a fresh read
    study_row = await get_study_row(own_storage, study)
    assert study_row is not None and study_row["InstanceCount"] == 2


async def test_a_stale_copy_of_the_rows_fails_its_transaction_and_the_commit_reads_them_again(
    own_storage: Storage,
) -> None:
    study, series = generate_uid(), generate_uid()
    await commit_instance(own_storage, _record(study, series), upsert=False)
    # Another process's writer changes the study row this process keeps a copy of.
    await own_storage.studies.update_entity({"PartitionKey": str(study), "RowKey": STUDY_ROW, "Touched": True},
                                            mode=UpdateMode.MERGE)
    transactions = _counting_transactions(own_storage)
    await commit_instance(own_storage, _record(study, series), upsert=False)
    assert len(transactions) == 2  # refused (If-Match), then computed from a fresh read
    study_row = await get_study_row(own_storage, study)
    assert study_row is not None and study_row["InstanceCount"] == 2


async def test_a_post_of_a_stored_instance_is_refused_by_the_insert(own_storage: Storage) -> None:
    record = _record(generate_uid(), generate_uid())
    await commit_instance(own_storage, record, upsert=False)
    twin = dataclasses.replace(record, stored=StoredInstance(record.stored.ids, new_version()))
    transactions = _counting_transactions(own_storage)
    with pytest.raises(InstanceExistsError):
        await commit_instance(own_storage, twin, upsert=False)
    assert len(transactions) == 1  # the insert of the existing row was refused; the re-read found it
    study_row = await get_study_row(own_storage, record.stored.ids.study)
    assert study_row is not None and study_row["InstanceCount"] == 1


def test_a_group_counts_every_instance_and_its_rows_take_the_last_instances_attributes() -> None:
    study, series = str(generate_uid()), str(generate_uid())
    first = _record(study, series, StudyDescription="first", SeriesDescription="first", Modality="CT")
    last = _record(study, series, StudyDescription="last", SeriesDescription="last", Modality="CT")
    operations = group_operations([first, last], None, {series: None}, [None, None])
    rows = {operation[1]["RowKey"]: operation[1] for operation in operations}
    study_row, series_row = rows[STUDY_ROW], rows[series_row_key(series)]
    assert (study_row["InstanceCount"], study_row["SeriesCount"], series_row["InstanceCount"]) == (2, 1, 2)
    assert json.loads(study_row["ModalityCounts"]) == {"CT": 2}
    assert "last" in study_row["Attributes"] and "first" not in study_row["Attributes"]
    assert "last" in series_row["Attributes"] and "first" not in series_row["Attributes"]
