"""The current entries of a study- or series-level extended tag: the latest version's entries, exactly, in one
transaction with their pointer row; an older version changes nothing, whichever process writes."""

from __future__ import annotations

from typing import Any

from dicom_core.search_index import extended_current
from dicom_core.search_index.extended_current import is_pointer, set_current
from dicom_core.storage.clients import Storage
from dicom_core.storage.tables import query_all

PARTITION = "x.00200010|v"


def _entry(value: str, target: str, version: str) -> dict[str, Any]:
    return {"PartitionKey": PARTITION, "RowKey": f"{value}!{target}", "Value": value, "Version": version}


async def _entries(storage: Storage) -> dict[str, str]:
    rows = await query_all(storage.index, "PartitionKey eq @p", parameters={"p": PARTITION})
    return {str(row["RowKey"]): str(row["Version"]) for row in rows if not is_pointer(str(row["RowKey"]))}


async def test_a_later_version_replaces_the_entries_and_an_older_one_changes_nothing(own: Storage) -> None:
    await set_current(own, PARTITION, "1.2.3", "0002", [_entry("B", "1.2.3", "0002")])
    await set_current(own, PARTITION, "1.2.3", "0001", [_entry("A", "1.2.3", "0001")])
    assert await _entries(own) == {"B!1.2.3": "0002"}
    await set_current(own, PARTITION, "1.2.3", "0003", [_entry("C", "1.2.3", "0003")])
    assert await _entries(own) == {"C!1.2.3": "0003"}


async def test_a_process_that_never_saw_the_pointer_reads_it_and_keeps_the_latest(own: Storage) -> None:
    await set_current(own, PARTITION, "1.2.4", "0005", [_entry("NEW", "1.2.4", "0005")])
    extended_current._known = type(extended_current._known)(extended_current.MAX_KNOWN_POINTERS)  # another process
    await set_current(own, PARTITION, "1.2.4", "0004", [_entry("OLD", "1.2.4", "0004")])
    assert await _entries(own) == {"NEW!1.2.4": "0005"}
    extended_current._known = type(extended_current._known)(extended_current.MAX_KNOWN_POINTERS)
    await set_current(own, PARTITION, "1.2.4", "0006", [_entry("NEWER", "1.2.4", "0006")])
    assert await _entries(own) == {"NEWER!1.2.4": "0006"}


async def test_an_entry_missing_under_its_pointer_does_not_stop_the_change(own: Storage) -> None:
    await set_current(own, PARTITION, "1.2.5", "0001", [_entry("A", "1.2.5", "0001")])
    await own.index.delete_entity(PARTITION, "A!1.2.5")
    await set_current(own, PARTITION, "1.2.5", "0002", [_entry("B", "1.2.5", "0002")])
    assert await _entries(own) == {"B!1.2.5": "0002"}
