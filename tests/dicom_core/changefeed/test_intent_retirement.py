"""Retiring a STOW request's intent: versions no appended change proves committed go to the blob cleanup."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dicom_core.changefeed.sequencer import sequence_pending
from dicom_core.index.cleanup_entries import CleanupTarget, cleanup_delay
from dicom_core.index.outbox import (
    ANNOUNCEMENT_TIMEOUT,
    Change,
    ChangeAction,
    RequestAnnouncement,
    announce_requests,
    outbox_operation,
    pending_announcements,
    request_change_id,
)
from dicom_core.maintenance.blob_cleanup import all_entries, due_entries
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance, new_version
from dicom_core.storage.clients import Storage
from tests.dicom_core.changefeed.feed_support import uid

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _version(study: str) -> CleanupTarget:
    return CleanupTarget.of_version(StoredInstance(InstanceIdentifiers(study, "1.2", uid()), new_version()))


async def _intend(storage: Storage, request: str, study: str, changes: int, targets: list[CleanupTarget],
                  replaced: list[CleanupTarget] | None = None, at: datetime = T0) -> None:
    await announce_requests(storage, [RequestAnnouncement(request, (study,), changes, at, tuple(targets),
                                                          tuple(replaced or ()))], at)


async def _commit(storage: Storage, study: str, request: str, targets: list[CleanupTarget]) -> None:
    changes = [Change(ChangeAction.CREATE, t.series, t.instance, t.version) for t in targets]
    await storage.studies.submit_transaction([outbox_operation(study, request_change_id(request, "a"), changes, T0)])


async def test_versions_whose_changes_reached_the_feed_leave_no_cleanup_work(feed_storage: Storage) -> None:
    request, study = new_version(), uid()
    targets = [_version(study) for _ in range(3)]
    await _intend(feed_storage, request, study, 3, targets)
    await _commit(feed_storage, study, request, targets)

    assert await sequence_pending(feed_storage) == 3
    assert await pending_announcements(feed_storage) == []
    assert await all_entries(feed_storage) == []


async def test_a_version_whose_commit_never_came_is_handed_over_when_the_intent_times_out(
    feed_storage: Storage,
) -> None:
    request, study = new_version(), uid()
    committed, lost = _version(study), _version(study)
    await _intend(feed_storage, request, study, 2, [committed, lost])
    await _commit(feed_storage, study, request, [committed])
    assert await sequence_pending(feed_storage, clock=lambda: T0 + timedelta(minutes=1)) == 1
    assert [a.change_id for a in await pending_announcements(feed_storage)] == [request]  # may still land
    assert await all_entries(feed_storage) == []

    retired_at = T0 + ANNOUNCEMENT_TIMEOUT + timedelta(seconds=1)
    assert await sequence_pending(feed_storage, clock=lambda: retired_at) == 0
    assert await pending_announcements(feed_storage) == []
    [entry] = await all_entries(feed_storage)
    # The committed one was appended by an earlier run (its outbox row is gone): handed over too, and kept by
    # the cleanup when its row names it.
    assert set(entry.targets) == {committed, lost}
    delay = cleanup_delay(feed_storage)
    assert await due_entries(feed_storage, retired_at + delay - timedelta(seconds=1)) == []  # a full delay later
    assert await due_entries(feed_storage, retired_at + delay + timedelta(seconds=1)) == [entry]


async def test_a_replaced_version_is_handed_over_although_a_change_names_it(feed_storage: Storage) -> None:
    request, study = new_version(), uid()
    first, second = _version(study), _version(study)
    await _intend(feed_storage, request, study, 2, [first, second], replaced=[first])  # the request upserted twice
    await _commit(feed_storage, study, request, [first, second])

    assert await sequence_pending(feed_storage) == 2
    [entry] = await all_entries(feed_storage)
    assert entry.targets == (first,)  # unreferenced by the second commit: deleted after the delay


async def test_an_intent_counting_no_change_is_retired_with_its_targets_handed_over(feed_storage: Storage) -> None:
    request, study = new_version(), uid()
    target = _version(study)
    await _intend(feed_storage, request, study, 0, [target], at=datetime.now(UTC))

    assert await sequence_pending(feed_storage) == 0
    assert await pending_announcements(feed_storage) == []
    assert [entry.targets for entry in await all_entries(feed_storage)] == [(target,)]


async def test_an_announcement_of_before_intents_is_retired_as_before(feed_storage: Storage) -> None:
    request, study = new_version(), uid()
    await announce_requests(feed_storage, [RequestAnnouncement(request, (study,), 1, T0)], T0)  # no targets
    await _commit(feed_storage, study, request, [_version(study)])

    assert await sequence_pending(feed_storage) == 1
    assert await pending_announcements(feed_storage) == []
    assert await all_entries(feed_storage) == []
