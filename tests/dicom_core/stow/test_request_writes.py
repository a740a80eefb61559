"""A STOW request's records written once for its parts, and its cleanup entries (beyond its intent's room)."""

from __future__ import annotations

import asyncio

from pydicom.uid import generate_uid

from dicom_core.index.cleanup_entries import MAX_ENTRY_TARGETS, CleanupTarget
from dicom_core.maintenance.blob_cleanup import all_entries
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance, new_version
from dicom_core.storage.clients import Storage
from dicom_core.stow.request_writes import Coalesced, RequestCleanup


def _target(study: str | None = None) -> CleanupTarget:
    ids = InstanceIdentifiers(study or generate_uid(), generate_uid(), generate_uid())
    return CleanupTarget.of_version(StoredInstance(ids, new_version()))


async def test_parts_waiting_at_one_moment_share_one_write() -> None:
    writes: list[list[int]] = []

    async def write(items: list[int]) -> None:
        writes.append(items)
        await asyncio.sleep(0.01)

    coalesced: Coalesced[int] = Coalesced(write)
    await asyncio.gather(*(coalesced.include([number]) for number in range(8)))
    await asyncio.gather(*(coalesced.include([number]) for number in range(8, 10)))

    assert writes == [list(range(8)), [8, 9]]


async def test_a_failed_write_fails_every_part_in_it_and_the_next_write_is_tried_again() -> None:
    attempts: list[list[int]] = []

    async def write(items: list[int]) -> None:
        attempts.append(items)
        if len(attempts) == 1:
            raise OSError("storage is down")

    coalesced: Coalesced[int] = Coalesced(write)
    results = await asyncio.gather(*(coalesced.include([number]) for number in range(3)), return_exceptions=True)
    assert [type(result) for result in results] == [OSError] * 3
    await coalesced.include([3])
    assert attempts == [[0, 1, 2], [3]]


async def test_a_request_names_its_versions_in_one_entry_then_in_one_more_per_hundred(own: Storage) -> None:
    cleanup = RequestCleanup(own, new_version())
    first = [_target() for _ in range(MAX_ENTRY_TARGETS + 50)]
    await asyncio.gather(*(cleanup.cover([target]) for target in first))
    later = [_target() for _ in range(10)]
    await cleanup.cover(later)

    entries = sorted(await all_entries(own), key=lambda entry: entry.row)
    assert [len(entry.targets) for entry in entries] == [MAX_ENTRY_TARGETS, 60]  # the second one extended
    assert {target for entry in entries for target in entry.targets} == {*first, *later}
    assert [entry.row.rsplit("-", 1)[1] for entry in entries] == ["1", "2"]


async def test_a_version_named_lately_is_not_written_again(own: Storage) -> None:
    cleanup = RequestCleanup(own, new_version())
    target = _target()
    await cleanup.cover([target])
    before = await all_entries(own)
    await cleanup.cover([target])  # a commit attempt's check: named a moment ago, nothing to write
    assert await all_entries(own) == before
