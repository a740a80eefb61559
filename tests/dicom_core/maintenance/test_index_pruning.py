"""Pruning stale index entries: entries no row accounts for go once old; valid and young entries stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydicom.uid import generate_uid

from dicom_core.index.rows import STUDY_ROW
from dicom_core.maintenance.consistency import check_consistency
from dicom_core.maintenance.index_pruning import CURSOR_PARTITION, STALE_AFTER, prune_index_entries
from dicom_core.search_index.keys import (
    ALL_STUDIES,
    CLAIMS,
    STUDIES_BY_PATIENT_NAME_WORD,
    IndexKey,
    instance_key,
    parse_entries,
    uid_entity,
    word_key,
)
from dicom_core.storage.clients import Storage
from tests.factories import make_instance


def _later() -> datetime:
    """A moment past the stale age of entries written now (taken when used: a long run imports tests early)."""
    return datetime.now(UTC) + STALE_AFTER + timedelta(minutes=5)


async def _entries(storage: Storage) -> set[tuple[str, str]]:
    return {(str(e["PartitionKey"]), str(e["RowKey"])) async for e in storage.index.list_entities()
            if e["PartitionKey"] != CURSOR_PARTITION}


async def _stored(storage: Storage, stow_parts, name: str, *, upsert: bool = False,
                  uids: tuple[str, str, str] | None = None) -> tuple[str, str, str]:
    study, series, sop = uids or (str(generate_uid()), str(generate_uid()), str(generate_uid()))
    result = await stow_parts(storage, [make_instance(study=study, series=series, sop=sop, PatientName=name)],
                              upsert=upsert)
    assert result.status == 200
    return study, series, sop


def _has(entries: set[tuple[str, str]], key: IndexKey) -> bool:
    return any(partition == key.partition and row.startswith(key.row_prefix) for partition, row in entries)


async def test_entries_of_a_value_an_upsert_replaced_are_pruned(own: Storage, stow_parts) -> None:
    uids = await _stored(own, stow_parts, "Old^Name")
    await _stored(own, stow_parts, "New^Name", upsert=True, uids=uids)
    old_word = word_key(STUDIES_BY_PATIENT_NAME_WORD, "OLD")
    assert _has(await _entries(own), old_word)

    pruned = await prune_index_entries(own, now=_later())

    entries = await _entries(own)
    assert pruned > 0 and not _has(entries, old_word)
    assert _has(entries, word_key(STUDIES_BY_PATIENT_NAME_WORD, "NEW"))
    assert await check_consistency(own) == []
    assert await prune_index_entries(own, now=_later()) == 0


async def test_an_entry_of_an_instance_never_committed_is_pruned_once_old(own: Storage, stow_parts) -> None:
    study, series, _ = await _stored(own, stow_parts, "Some^One")
    sop = str(generate_uid())
    intent = uid_entity(instance_key(sop), study, series, sop)
    await own.index.upsert_entity(intent)
    valid = await _entries(own) - {(intent["PartitionKey"], intent["RowKey"])}

    assert await prune_index_entries(own) == 0  # young: it may be an intent whose commit is a moment away
    assert await prune_index_entries(own, now=_later()) == 1

    assert await _entries(own) == valid


async def test_a_claim_of_a_study_never_committed_is_pruned_once_old(own: Storage, stow_parts) -> None:
    study, _, _ = await _stored(own, stow_parts, "Some^One")
    orphan = {"PartitionKey": f"{CLAIMS}|{generate_uid()}", "RowKey": STUDY_ROW, "SortKey": "0" * 16,
              "ClaimedAt": datetime.now(UTC)}
    await own.index.upsert_entity(orphan)

    assert await prune_index_entries(own) == 0
    assert await prune_index_entries(own, now=_later()) == 1

    entries = await _entries(own)
    assert (orphan["PartitionKey"], STUDY_ROW) not in entries and (f"{CLAIMS}|{study}", STUDY_ROW) in entries


async def test_an_entry_under_another_sort_key_than_the_claim_is_pruned(own: Storage, stow_parts) -> None:
    study, _, _ = await _stored(own, stow_parts, "Some^One")
    [claimed] = [row for partition, row in await _entries(own) if partition == ALL_STUDIES]
    duplicate = (ALL_STUDIES, IndexKey(ALL_STUDIES).row_key("0" * 16, study))
    await own.index.upsert_entity({"PartitionKey": duplicate[0], "RowKey": duplicate[1]})

    assert await prune_index_entries(own, now=_later()) == 1

    entries = await _entries(own)
    assert duplicate not in entries and (ALL_STUDIES, claimed) in entries
    assert await check_consistency(own) == []


async def test_a_uid_entity_keeps_its_live_target_and_loses_a_stale_one_and_the_blanks(
    own: Storage, stow_parts
) -> None:
    study, series, sop = await _stored(own, stow_parts, "Some^One")
    key = instance_key(sop)
    other_study, gone_study = str(generate_uid()), str(generate_uid())
    await own.index.upsert_entity(uid_entity(key, other_study, series, sop))  # an intent never committed
    await own.index.upsert_entity(uid_entity(key, gone_study, series, sop, blank=True))  # a delete's blank

    assert await prune_index_entries(own, now=_later()) == 1

    entity = await own.index.get_entity(key.partition, key.row_key(""))
    assert len(entity) == 3  # the keys and the live target: no blank left
    assert [(entry.study, entry.series, entry.instance) for entry in parse_entries(entity)] == [(study, series, sop)]
    assert await check_consistency(own) == []
