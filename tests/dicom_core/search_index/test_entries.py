"""The index table: keys, intents written by the store path, verification at read time, claims, removal."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import UpdateMode
from pydicom import dcmread
from pydicom.uid import generate_uid

from dicom_core.delete.service import delete_study
from dicom_core.index.commit import commit_instance
from dicom_core.index.rows import GENERATION_ROW, STUDY_ROW, InstanceRecord, series_row_key
from dicom_core.model.dicom_json import metadata_json
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance, new_version
from dicom_core.qido.query import QidoResource
from dicom_core.qido.service import SearchRequest, search_datasets
from dicom_core.search_index import keys as search_index_keys
from dicom_core.search_index.claims import CLAIM_TTL
from dicom_core.search_index.entries import IndexIntents, remove_index_entries, write_index_intents
from dicom_core.search_index.keys import (
    ALL_SERIES,
    ALL_STUDIES,
    INSTANCES_BY_UID,
    SERIES_BY_UID,
    IndexEntry,
    IndexKey,
    date_key,
    encode_key,
    entry_entity,
    instance_key,
    inverted_date,
    inverted_time,
    legacy_uid_ranges,
    parse_entries,
    parse_entry,
    partition_key,
    series_keys,
    study_keys,
    uid_entity,
    uid_key,
)
from dicom_core.settings import Settings
from dicom_core.storage import partition_upserts
from dicom_core.storage.clients import Storage, open_storage
from dicom_core.storage.tables import get_entity_or_none
from tests.factories import make_dataset, make_instance, to_bytes

PREFIX_SETTINGS = {"table_prefix": "sidx", "blob_container": "sidx-files", "metadata_container": "sidx-metadata"}


@pytest.fixture(scope="module")
async def index_storage(unit_settings: Settings) -> AsyncIterator[Storage]:
    """A Storage with tables of its own, so index partitions hold only this module's entries."""
    opened = await open_storage(replace(unit_settings, **PREFIX_SETTINGS))
    yield opened
    await opened.close()


@pytest.fixture
async def other_host(unit_settings: Settings) -> AsyncIterator[Storage]:
    """The same tables through other clients, like a second instance of the app (no shared in-process state)."""
    opened = await open_storage(replace(unit_settings, **PREFIX_SETTINGS))
    yield opened
    await opened.close()


async def _entries(storage: Storage, partition: str) -> list[dict]:
    return [dict(e) async for e in storage.index.query_entities("PartitionKey eq @pk", parameters={"pk": partition})]


async def _uid_entries(storage: Storage, index: str, uid: str) -> list[IndexEntry]:
    """The targets of ``uid`` in a UID lookup index: the properties of its entity (blanked ones left out)."""
    key = uid_key(index, uid)
    entity = await get_entity_or_none(storage.index, key.partition, key.row_key(""))
    return [] if entity is None else parse_entries(entity)


async def _targets(storage: Storage, partition: str) -> list[str]:
    return [parse_entry(entry).study for entry in await _entries(storage, partition)]


async def _studies_with(storage: Storage, query: str) -> list[str]:
    response = await search_datasets(storage, SearchRequest(QidoResource.ALL_STUDIES, 2, query))
    return [dataset["0020000D"]["Value"][0] for dataset in response.datasets]


def _record(**attributes) -> InstanceRecord:
    ds = make_dataset(**attributes)
    ids = InstanceIdentifiers(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
    return InstanceRecord(StoredInstance(ids, "v1"), str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID), 1,
                          metadata_json(ds))


def test_encoded_keys_hold_no_reserved_characters_and_keep_prefixes() -> None:
    value = "A/B\\C#D?E|F%G'H\tÉ"
    encoded = encode_key(value)
    assert not set("/\\#?|'\t") & set(encoded.replace("%", ""))
    assert encode_key(value).startswith(encode_key(value[:7]))


def test_later_moments_and_dates_sort_first() -> None:
    earlier, later = datetime(2020, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC)
    assert inverted_time(later) < inverted_time(earlier)
    assert inverted_date("20240101") < inverted_date("20200101")


@pytest.mark.parametrize(
    ("key", "uids"),
    [
        (IndexKey(ALL_STUDIES), ("1.2",)),
        (date_key("20200922"), ("1.2",)),
        (IndexKey(ALL_SERIES), ("1.2", "1.3")),
        (instance_key("1.4"), ("1.2", "1.3", "1.4")),
        (uid_key(SERIES_BY_UID, "1.3.5"), ("1.2", "1.3.5")),
    ],
)
def test_entries_parse_back_into_key_and_target(key: IndexKey, uids: tuple[str, ...]) -> None:
    [entry] = parse_entries(entry_entity(key, "0123", *uids))
    assert (entry.key, (entry.study, entry.series, entry.instance)[: len(uids)]) == (key, uids)


def test_uids_of_one_root_share_a_partition_and_each_is_an_entity_of_its_own() -> None:
    first, second, longer = instance_key("1.2.40.7"), instance_key("1.2.40.8"), instance_key("1.2.40.71")
    assert first.partition == second.partition == longer.partition == f"{INSTANCES_BY_UID}|1.2.40"
    rows = [key.row_key("", "1.9", "1.8", uid) for key, uid in
            ((first, "1.2.40.7"), (second, "1.2.40.8"), (longer, "1.2.40.71"))]
    assert rows == ["1.2.40.7", "1.2.40.8", "1.2.40.71"]
    assert uid_key(SERIES_BY_UID, "1.2.40.7") in series_keys("1.2.40.7", "CT")


def test_the_targets_of_a_uid_are_properties_of_its_entity_and_a_blank_one_is_none() -> None:
    key = instance_key("1.2.40.7")
    entity = {**uid_entity(key, "1.1", "1.8", "1.2.40.7"), **uid_entity(key, "1.2", "1.9", "1.2.40.7"),
              **uid_entity(key, "1.3", "1.9", "1.2.40.7", blank=True)}
    assert len(entity) == 5  # the keys and three targets
    assert [(entry.study, entry.series, entry.instance) for entry in parse_entries(entity)] == [
        ("1.1", "1.8", "1.2.40.7"), ("1.2", "1.9", "1.2.40.7")]


def test_a_uid_entity_lies_in_no_range_of_the_layout_before() -> None:
    for uid in ("1.2.40.7", "1.2.40", "1.2.40.71"):
        [(partition, low, high), _] = legacy_uid_ranges(INSTANCES_BY_UID, uid, {"i.root", "i.uid"})
        assert low is not None and high is not None
        assert not low <= instance_key("1.2.40.7").row_key("") < high


def test_study_keys_cover_each_indexed_attribute() -> None:
    ds = make_dataset(PatientID="P/1", AccessionNumber="A1", PatientName="Doe^Jo", ReferringPhysicianName="Lee",
                      StudyDate="20200922")
    keys = {(key.partition, key.row_prefix) for key in study_keys(metadata_json(ds), {"CT"})}
    assert keys == {
        ("s.all", ""), ("s.date", "79799077|"), ("s.pid|P%2F1", ""), ("s.acc|A1", ""),
        ("s.pnword|D", "DOE!"), ("s.pnword|J", "JO!"), ("s.pnpair|D", "DOE^JO!"),
        ("s.refword|L", "LEE!"), ("s.mod|CT", ""),
    }


async def test_store_writes_an_entry_for_every_key_of_the_study(index_storage: Storage, stow_parts) -> None:
    ds = make_dataset(PatientID="SIDX-ALL", AccessionNumber="SIDX-ACC", ReferringPhysicianName="Ref^Doc", Modality="MR")
    assert (await stow_parts(index_storage, [to_bytes(ds)])).status == 200
    for key in study_keys(metadata_json(ds), {"MR"}):
        targets = await _targets(index_storage, key.partition)
        assert ds.StudyInstanceUID in targets, key


async def test_another_instance_of_a_stored_series_writes_only_its_instance_entry(
    index_storage: Storage, other_host: Storage, stow_parts
, monkeypatch: pytest.MonkeyPatch) -> None:
    study, series = generate_uid(), generate_uid()
    assert (await stow_parts(index_storage, [make_instance(study=study, series=series)])).status == 200
    written: list[str] = []

    def counting_upsert(entity: dict) -> None:
        written.append(entity["PartitionKey"])

    _record_single_upserts(monkeypatch, other_host, counting_upsert)
    sop = generate_uid()
    assert (await stow_parts(other_host, [make_instance(study=study, series=series, sop=sop)])).status == 200
    assert written == [instance_key(sop).partition]


async def test_the_instance_entries_of_one_request_share_transactions(
    index_storage: Storage, other_host: Storage, stow_parts
, monkeypatch: pytest.MonkeyPatch) -> None:
    study, series = generate_uid(), generate_uid()
    assert (await stow_parts(index_storage, [make_instance(study=study, series=series)])).status == 200
    root = generate_uid()[:50]
    sops = [f"{root}.{number}" for number in range(1, 11)]  # as a scanner numbers them: one root
    partition = instance_key(sops[0]).partition
    writes: list[int] = []  # entries per write of the instances' partition
    transact = other_host.index.submit_transaction

    def counting_upsert(entity: dict) -> None:
        writes.extend([1] if entity["PartitionKey"] == partition else [])

    async def counting_transaction(operations, **kwargs):
        writes.extend([len(operations)] if operations[0][1]["PartitionKey"] == partition else [])
        return await transact(operations, **kwargs)

    _record_single_upserts(monkeypatch, other_host, counting_upsert)
    other_host.index.submit_transaction = counting_transaction  # type: ignore[method-assign]
    parts = [make_instance(study=study, series=series, sop=sop) for sop in sops]
    assert (await stow_parts(other_host, parts)).status == 200
    assert sum(writes) == len(sops)
    assert len(writes) < len(sops) / 2, writes
    assert [len(await _uid_entries(other_host, INSTANCES_BY_UID, sop)) for sop in sops] == [1] * len(sops)


async def test_a_new_study_writes_one_entry_per_name_word_and_reads_none_back(
    index_storage: Storage, other_host: Storage, stow_parts
, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = make_dataset(PatientName="Doe^John Paul=山田^太郎", ReferringPhysicianName="Lee^Anna^Lee", Modality="CT",
                      SpecificCharacterSet="ISO_IR 192")
    written: list[dict] = []
    read_back: list[str] = []
    get = other_host.index.get_entity

    def counting_upsert(entity: dict) -> None:
        written.append(dict(entity))

    async def counting_get(partition, row, **kwargs):
        read_back.append(partition)
        return await get(partition, row, **kwargs)

    _record_single_upserts(monkeypatch, other_host, counting_upsert)
    other_host.index.get_entity = counting_get  # type: ignore[method-assign]
    assert (await stow_parts(other_host, [to_bytes(ds)])).status == 200
    words = sorted((entry["PartitionKey"].split("|")[0], parse_entry(entry).key.row_prefix) for entry in written
                   if entry["PartitionKey"].split("|")[0] in search_index_keys.NAME_WORD_INDEXES)
    assert words == sorted([
        ("s.pnword", "DOE!"), ("s.pnword", "JOHN!"), ("s.pnword", "PAUL!"), ("s.pnword", "%E5%B1%B1%E7%94%B0!"),
        ("s.pnword", "%E5%A4%AA%E9%83%8E!"), ("s.refword", "LEE!"), ("s.refword", "ANNA!"),
        ("s.pnpair", "DOE^JOHN!"), ("s.refpair", "LEE^ANNA!"),
    ])
    # Every entry once: the study's (7 words, 2 word pairs, all, patient ID, date, modality; exact names are found
    # by their word pair), 3 series, 1 instance; none is read back (the commit is conditioned on the study's
    # generation instead).
    assert len(written) == len({(e["PartitionKey"], e["RowKey"]) for e in written}) == 13 + 3 + 1
    assert read_back == []
    for query in ("PatientName=%E5%A4%AA&fuzzymatching=true", "PatientName=Doe^John+Paul=%E5%B1%B1*",
                  "PatientName=doe^john+paul=%E5%B1%B1%E7%94%B0^%E5%A4%AA%E9%83%8E", "PatientName=Doe^John+Paul",
                  "ReferringPhysicianName=*^Anna*", "ReferringPhysicianName=lee^anna^lee"):
        assert await _studies_with(index_storage, query) == [ds.StudyInstanceUID], query


async def test_intents_are_in_place_before_the_commit_and_unseen_until_it(index_storage: Storage) -> None:
    record = _record(PatientID="SIDX-INTENT")
    await write_index_intents(index_storage, record)
    assert record.stored.ids.study in await _targets(index_storage, partition_key("s.pid", "SIDX-INTENT"))
    assert await _studies_with(index_storage, "PatientID=SIDX-INTENT") == []
    await commit_instance(index_storage, record, upsert=False)
    assert await _studies_with(index_storage, "PatientID=SIDX-INTENT") == [record.stored.ids.study]


async def _instance_entry_during_upload(storage: Storage, stow_parts) -> tuple[InstanceRecord, IndexIntents]:
    """An instance of a series this process stored into, its entry written as during its upload."""
    study, series = generate_uid(), generate_uid()
    assert (await stow_parts(storage, [make_instance(study=study, series=series)])).status == 200
    record = _record(study=study, series=series)
    intents = IndexIntents(storage, record)
    await intents.during_upload()
    assert len(await _uid_entries(storage, INSTANCES_BY_UID, record.stored.ids.instance)) == 1
    return record, intents


async def test_an_instance_entry_written_during_the_upload_is_not_written_again_at_the_commit(
    other_host: Storage, stow_parts
, monkeypatch: pytest.MonkeyPatch) -> None:
    record, intents = await _instance_entry_during_upload(other_host, stow_parts)
    partition = instance_key(record.stored.ids.instance).partition
    written: list[str] = []
    transact = other_host.index.submit_transaction

    def counting_upsert(entity: dict) -> None:
        written.append(entity["PartitionKey"])

    async def counting_transaction(operations, **kwargs):
        written.extend(operation[1]["PartitionKey"] for operation in operations)
        return await transact(operations, **kwargs)

    _record_single_upserts(monkeypatch, other_host, counting_upsert)
    other_host.index.submit_transaction = counting_transaction  # type: ignore[method-assign]
    await commit_instance(other_host, record, upsert=False, hooks=intents)
    assert partition not in written
    assert len(await _uid_entries(other_host, INSTANCES_BY_UID, record.stored.ids.instance)) == 1


async def test_an_instance_entry_a_delete_removed_after_the_upload_is_written_again(
    other_host: Storage, stow_parts
) -> None:
    record, intents = await _instance_entry_during_upload(other_host, stow_parts)
    ids = record.stored.ids
    # A delete in another process removes the entry, then gives the study a new generation (this process's copy of
    # the study's rows still holds the old one).
    blank = uid_entity(instance_key(ids.instance), ids.study, ids.series, ids.instance, blank=True)
    await other_host.index.upsert_entity(blank, mode=UpdateMode.MERGE)
    assert await _uid_entries(other_host, INSTANCES_BY_UID, ids.instance) == []
    await other_host.studies.upsert_entity({"PartitionKey": ids.study, "RowKey": GENERATION_ROW,
                                            "Generation": new_version()})
    await commit_instance(other_host, record, upsert=False, hooks=intents)
    assert len(await _uid_entries(other_host, INSTANCES_BY_UID, ids.instance)) == 1


async def test_first_stores_racing_into_a_new_study_agree_on_one_sort_key(
    index_storage: Storage, other_host: Storage, stow_parts
) -> None:
    study = generate_uid()
    parts = [make_instance(study=study, PatientID="SIDX-RACE") for _ in range(4)]
    responses = await asyncio.gather(stow_parts(index_storage, parts[:2]), stow_parts(other_host, parts[2:]))
    assert [r.status for r in responses] == [200, 200]
    assert (await _targets(index_storage, partition_key("s.pid", "SIDX-RACE"))) == [study]
    assert await _studies_with(index_storage, "PatientID=SIDX-RACE") == [study]


@pytest.mark.parametrize("age", [timedelta(days=-400), timedelta(days=400)])
async def test_entry_with_a_sort_key_other_than_the_claimed_one_lists_the_study_once(
    index_storage: Storage, stow_parts, age: timedelta
) -> None:
    ds = make_dataset(PatientID=f"SIDX-SORT{age.days}")
    assert (await stow_parts(index_storage, [to_bytes(ds)])).status == 200
    # A first store that crashed long ago (or on a host whose clock runs ahead) left its own sort key.
    key = IndexKey(partition_key("s.pid", ds.PatientID))
    stray = inverted_time(datetime.now(UTC) - age)
    stray_entry = {"PartitionKey": key.partition, "RowKey": key.row_key(stray, ds.StudyInstanceUID)}
    await index_storage.index.upsert_entity(stray_entry)
    assert len(await _targets(index_storage, key.partition)) == 2
    assert await _studies_with(index_storage, f"PatientID={ds.PatientID}") == [ds.StudyInstanceUID]


async def test_upsert_that_changes_patient_id_moves_the_study_between_ids(index_storage: Storage, stow_parts) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    first = make_instance(study=study, series=series, sop=sop, PatientID="SIDX-OLD")
    assert (await stow_parts(index_storage, [first])).status == 200
    changed = make_instance(study=study, series=series, sop=sop, PatientID="SIDX-NEW")
    assert (await stow_parts(index_storage, [changed], upsert=True)).status == 200
    assert study in await _targets(index_storage, partition_key("s.pid", "SIDX-OLD"))  # stale, never deleted by reads
    assert await _studies_with(index_storage, "PatientID=SIDX-OLD") == []
    assert await _studies_with(index_storage, "PatientID=SIDX-NEW") == [study]


async def test_old_claim_of_a_study_never_committed_is_taken_over(index_storage: Storage) -> None:
    record = _record(PatientID="SIDX-CLAIM")
    partition = f"claim|{record.stored.ids.study}"
    long_ago = datetime.now(UTC) - CLAIM_TTL - timedelta(minutes=5)
    await index_storage.index.upsert_entity({"PartitionKey": partition, "RowKey": STUDY_ROW,
                                             "SortKey": inverted_time(long_ago), "ClaimedAt": long_ago})
    await write_index_intents(index_storage, record)
    claim = await index_storage.index.get_entity(partition, STUDY_ROW)
    assert claim["SortKey"] < inverted_time(long_ago)  # claimed afresh: sorts as newer


async def test_removing_an_instance_removes_its_entry_only(index_storage: Storage, stow_parts) -> None:
    ds = make_dataset(PatientID="SIDX-RM-INSTANCE")
    assert (await stow_parts(index_storage, [to_bytes(ds)])).status == 200
    await remove_index_entries(index_storage, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert await _uid_entries(index_storage, INSTANCES_BY_UID, ds.SOPInstanceUID) == []
    assert len(await _uid_entries(index_storage, SERIES_BY_UID, ds.SeriesInstanceUID)) == 1
    assert await _targets(index_storage, partition_key("s.pid", "SIDX-RM-INSTANCE")) == [ds.StudyInstanceUID]


async def test_removing_a_series_removes_its_entries_and_its_instances(index_storage: Storage, stow_parts) -> None:
    study, kept, removed = generate_uid(), generate_uid(), generate_uid()
    parts = [make_dataset(study=study, series=removed, Modality="SR"), make_dataset(study=study, series=kept)]
    assert (await stow_parts(index_storage, [to_bytes(ds) for ds in parts])).status == 200
    await remove_index_entries(index_storage, study, removed)
    assert await _uid_entries(index_storage, SERIES_BY_UID, removed) == []
    assert await _uid_entries(index_storage, INSTANCES_BY_UID, parts[0].SOPInstanceUID) == []
    assert await _uid_entries(index_storage, SERIES_BY_UID, kept) != []
    assert await _uid_entries(index_storage, INSTANCES_BY_UID, parts[1].SOPInstanceUID) != []
    claims = [e["RowKey"] for e in await _entries(index_storage, f"claim|{study}")]
    assert sorted(claims) == sorted([STUDY_ROW, series_row_key(kept)])


async def test_removing_a_study_removes_every_entry_and_claim(index_storage: Storage, stow_parts) -> None:
    ds = make_dataset(PatientID="SIDX-RM-STUDY", PatientName="Removed^Study", Modality="PT")
    assert (await stow_parts(index_storage, [to_bytes(ds)])).status == 200
    removed = await remove_index_entries(index_storage, ds.StudyInstanceUID)
    keys = study_keys(metadata_json(ds), {"PT"})
    assert removed == len(keys) + 3 + 1 + 2  # study keys, series keys, instance, two claims
    for key in keys:
        assert ds.StudyInstanceUID not in await _targets(index_storage, key.partition)
    assert await _entries(index_storage, f"claim|{ds.StudyInstanceUID}") == []


async def test_study_rows_read_back_keys_the_store_wrote(index_storage: Storage, stow_parts) -> None:
    ds = make_dataset(PatientName="Ünïcode^Näme", StudyDate="20211231")
    assert (await stow_parts(index_storage, [to_bytes(ds)])).status == 200
    row = await index_storage.studies.get_entity(ds.StudyInstanceUID, STUDY_ROW)
    stored = metadata_json(dcmread(io.BytesIO(to_bytes(ds))))
    assert search_index_keys.study_row_keys(row) == study_keys(stored, json.loads(row["ModalityCounts"]))


async def test_a_study_deleted_and_stored_again_gets_claims_of_its_own(index_storage: Storage, stow_parts) -> None:
    ds = make_dataset(PatientID="SIDX-AGAIN")
    assert (await stow_parts(index_storage, [to_bytes(ds)])).status == 200
    first = await index_storage.index.get_entity(f"claim|{ds.StudyInstanceUID}", STUDY_ROW)
    await delete_study(index_storage, ds.StudyInstanceUID)
    assert (await stow_parts(index_storage, [to_bytes(ds)])).status == 200
    again = await index_storage.index.get_entity(f"claim|{ds.StudyInstanceUID}", STUDY_ROW)
    assert again["SortKey"] < first["SortKey"]  # claimed afresh after the delete: sorts as newer
    assert await _studies_with(index_storage, "PatientID=SIDX-AGAIN") == [ds.StudyInstanceUID]


def _record_single_upserts(monkeypatch: pytest.MonkeyPatch, storage: Storage, record: Callable[[dict], None]) -> None:
    """Call ``record`` with each entity the store path upserts alone (not in a transaction) into ``storage``'s index."""
    upsert = partition_upserts.upsert_one

    async def recording(table: object, entity: dict, mode: UpdateMode = UpdateMode.REPLACE) -> None:
        if table is storage.index:
            record(dict(entity))
        await upsert(table, entity, mode)  # type: ignore[arg-type]

    monkeypatch.setattr(partition_upserts, "upsert_one", recording)
