"""Which layouts before of the UID lookups (a RowKey range per UID, a partition per UID) are left, as searches by
UID ask it."""

from __future__ import annotations

import pytest

from dicom_core.search_index import legacy_uid_layout
from dicom_core.search_index.keys import INSTANCES_BY_UID, SERIES_BY_UID, legacy_uid_keys, uid_entity, uid_key
from dicom_core.search_index.legacy_uid_layout import legacy_uid_indexes_left
from dicom_core.storage.clients import Storage


def _legacy_entry(index: str, uid: str, layout: int) -> dict[str, str]:
    """An entry of the range layout (0) or the partition-per-UID layout (1)."""
    key = legacy_uid_keys(index, uid)[layout]
    return {"PartitionKey": key.partition, "RowKey": key.row_key("", "1.2", "1.2.3", uid)}


async def test_an_index_that_never_had_the_layouts_before_has_none_of_them(own: Storage) -> None:
    await own.index.upsert_entity(uid_entity(uid_key(INSTANCES_BY_UID, "1.2.3.4"), "1.2", "1.2.3", "1.2.3.4"))
    assert await legacy_uid_indexes_left(own) == frozenset()


@pytest.mark.parametrize("index", [SERIES_BY_UID, INSTANCES_BY_UID])
@pytest.mark.parametrize("layout", [0, 1])
async def test_one_entry_of_a_layout_before_is_found_in_its_index(own: Storage, index: str, layout: int) -> None:
    entry = _legacy_entry(index, "1.2.3.9", layout)
    await own.index.upsert_entity(entry)
    assert await legacy_uid_indexes_left(own) == {entry["PartitionKey"].split("|")[0]}


async def test_a_finished_reindex_is_noticed_once_the_answer_is_older_than_the_recheck_time(
    own: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = _legacy_entry(INSTANCES_BY_UID, "1.2.3.9", 0)
    await own.index.upsert_entity(entry)
    assert await legacy_uid_indexes_left(own) == {"i.root"}
    await own.index.delete_entity(entry["PartitionKey"], entry["RowKey"])  # what the reindex does
    assert await legacy_uid_indexes_left(own) == {"i.root"}  # the answer is kept
    monkeypatch.setattr(legacy_uid_layout, "RECHECK_SECONDS", 0.0)
    assert await legacy_uid_indexes_left(own) == {"i.root"}  # answered while the new lookup runs
    assert await legacy_uid_indexes_left(own) == frozenset()


async def test_none_left_is_kept_for_the_process_life(own: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    assert await legacy_uid_indexes_left(own) == frozenset()
    monkeypatch.setattr(legacy_uid_layout, "RECHECK_SECONDS", 0.0)
    await own.index.upsert_entity(_legacy_entry(SERIES_BY_UID, "1.2.3.9", 1))  # only a version long gone writes it
    assert await legacy_uid_indexes_left(own) == frozenset()
