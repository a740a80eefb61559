"""A STOW request's own records: one cleanup entry and one change-feed announcement, extended by its parts."""

from __future__ import annotations

import asyncio
import json

from pydicom.uid import generate_uid

from dicom_core.index.outbox import PENDING_PARTITION
from dicom_core.maintenance.blob_cleanup import MAX_ENTRY_TARGETS, CleanupTarget, all_entries
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance, new_version
from dicom_core.storage.clients import Storage
from dicom_core.stow.request_writes import MAX_ANNOUNCED_STUDIES, Coalesced, RequestCleanup, RequestFeed


def _target(study: str | None = None) -> CleanupTarget:
    ids = InstanceIdentifiers(study or generate_uid(), generate_uid(), generate_uid())
    return CleanupTarget.of_version(StoredInstance(ids, new_version()))


async def _announcements(storage: Storage) -> dict[str, tuple[list[str], int]]:
    rows = storage.changes.query_entities("PartitionKey eq @pk", parameters={"pk": PENDING_PARTITION})
    return {str(row["RowKey"]): (json.loads(row["Studies"]), row["Changes"]) async for row in rows}


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


async def test_a_request_into_many_studies_has_an_announcement_per_hundred(own: Storage) -> None:
    request = new_version()
    feed = RequestFeed(own, request)
    studies = [str(generate_uid()) for _ in range(MAX_ANNOUNCED_STUDIES + 20)]
    await asyncio.gather(*(feed.cover(study) for study in studies))
    await feed.cover(studies[-1])

    announced = await _announcements(own)
    assert announced == {request: (studies[:MAX_ANNOUNCED_STUDIES], MAX_ANNOUNCED_STUDIES),
                         f"{request}-2": (studies[MAX_ANNOUNCED_STUDIES:], 21)}
    assert feed.announcement_for(studies[-1]) == f"{request}-2"


async def test_changes_certainly_not_committed_leave_the_count_at_the_end(own: Storage) -> None:
    request, study, other = new_version(), str(generate_uid()), str(generate_uid())
    feed = RequestFeed(own, request)
    await asyncio.gather(feed.cover(study), feed.cover(study), feed.cover(other))
    feed.not_committed(study)
    await feed.finish()
    assert await _announcements(own) == {request: ([study, other], 2)}

    refused = RequestFeed(own, new_version())
    await refused.cover(study)
    refused.not_committed(study)
    await refused.finish()
    assert list(await _announcements(own)) == [request]  # nothing of it was committed: withdrawn
