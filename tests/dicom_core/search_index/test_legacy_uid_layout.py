"""Whether UID lookups of the layout before (a partition per UID) are left, as searches by UID ask it."""

from __future__ import annotations

import pytest

from dicom_core.search_index import legacy_uid_layout
from dicom_core.search_index.keys import INSTANCES_BY_UID, SERIES_BY_UID, legacy_uid_key, uid_ranges
from dicom_core.search_index.legacy_uid_layout import legacy_uid_entries_exist
from dicom_core.storage.clients import Storage


def _legacy_entry(index: str, uid: str) -> dict[str, str]:
    return {"PartitionKey": legacy_uid_key(index, uid).partition, "RowKey": f"1.2.3|{uid}"}


async def test_an_index_that_never_had_the_layout_before_has_none_of_it(own: Storage) -> None:
    await own.index.upsert_entity({"PartitionKey": "i.root|1.2.3", "RowKey": "1.2.3.4|1.2|1.2.3"})
    assert await legacy_uid_entries_exist(own) is False


@pytest.mark.parametrize("index", [SERIES_BY_UID, INSTANCES_BY_UID])
async def test_one_entry_of_the_layout_before_is_found(own: Storage, index: str) -> None:
    await own.index.upsert_entity(_legacy_entry(index, "1.2.3.9"))
    assert await legacy_uid_entries_exist(own) is True


async def test_a_finished_reindex_is_noticed_once_the_answer_is_older_than_the_recheck_time(
    own: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = _legacy_entry(INSTANCES_BY_UID, "1.2.3.9")
    await own.index.upsert_entity(entry)
    assert await legacy_uid_entries_exist(own) is True
    await own.index.delete_entity(entry["PartitionKey"], entry["RowKey"])  # what the reindex does
    assert await legacy_uid_entries_exist(own) is True  # the answer is kept
    monkeypatch.setattr(legacy_uid_layout, "RECHECK_SECONDS", 0.0)
    assert await legacy_uid_entries_exist(own) is True  # answered while the new lookup runs
    assert await legacy_uid_entries_exist(own) is False


async def test_none_left_is_kept_for_the_process_life(own: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    assert await legacy_uid_entries_exist(own) is False
    monkeypatch.setattr(legacy_uid_layout, "RECHECK_SECONDS", 0.0)
    await own.index.upsert_entity(_legacy_entry(SERIES_BY_UID, "1.2.3.9"))  # only a version long gone writes it
    assert await legacy_uid_entries_exist(own) is False


def test_uid_ranges_without_the_layout_before_are_the_current_range_only() -> None:
    assert uid_ranges(INSTANCES_BY_UID, "1.2.3.9", legacy=False) == uid_ranges(INSTANCES_BY_UID, "1.2.3.9")[:1]
