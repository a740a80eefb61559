"""A STOW request's intent: its change-feed announcement and cleanup record in one entity, extended by its parts."""

from __future__ import annotations

import asyncio
import json

from pydicom.uid import generate_uid

from dicom_core.index.cleanup_entries import CleanupTarget, parse_targets
from dicom_core.index.outbox import (
    PENDING_PARTITION,
    Change,
    ChangeAction,
    LandedOutbox,
    pending_announcements,
    request_change_id,
)
from dicom_core.maintenance.blob_cleanup import all_entries
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance, new_version
from dicom_core.storage.clients import Storage
from dicom_core.stow.request_intents import MAX_ANNOUNCED_STUDIES, MAX_INTENT_TARGETS, PartIntent, RequestIntents


def _target(study: str) -> CleanupTarget:
    ids = InstanceIdentifiers(study, generate_uid(), generate_uid())
    return CleanupTarget.of_version(StoredInstance(ids, new_version()))


async def _intents(storage: Storage) -> dict[str, tuple[list[str], int, tuple[CleanupTarget, ...]]]:
    rows = storage.changes.query_entities("PartitionKey eq @pk", parameters={"pk": PENDING_PARTITION})
    return {str(row["RowKey"]): (json.loads(row["Studies"]), row["Changes"],
                                 parse_targets(row["Targets"]) if row.get("Targets") else ()) async for row in rows}


async def test_a_part_names_its_version_and_counts_its_change_in_one_write(own: Storage) -> None:
    request, study = new_version(), str(generate_uid())
    intents = RequestIntents(own, request)
    target = _target(study)
    part = PartIntent(intents, target)
    await part.before_upload(count=True)
    written = await _intents(own)
    part.start()  # counted already: writes nothing more
    await part.before_commit(None)
    assert await _intents(own) == written == {request: ([study], 1, (target,))}


async def test_parts_of_one_moment_share_one_intent_write(own: Storage) -> None:
    request, study = new_version(), str(generate_uid())
    intents = RequestIntents(own, request)
    targets = [_target(study) for _ in range(8)]
    await asyncio.gather(*(PartIntent(intents, target).before_upload(count=True) for target in targets))
    assert await _intents(own) == {request: ([study], 8, tuple(targets))}


async def test_an_upserts_replaced_version_is_named_before_its_commit(own: Storage) -> None:
    request, study = new_version(), str(generate_uid())
    intents = RequestIntents(own, request)
    own_target, replaced = _target(study), _target(study)
    part = PartIntent(intents, own_target)
    await part.before_upload(count=True)
    await part.before_commit(replaced)
    [intent] = await pending_announcements(own)
    assert (intent.targets, intent.replaced) == ((own_target,), (replaced,))


async def test_a_version_one_part_stored_and_another_replaced_is_recorded_as_replaced(own: Storage) -> None:
    request, study = new_version(), str(generate_uid())
    intents = RequestIntents(own, request)
    first = _target(study)
    await PartIntent(intents, first).before_upload(count=True)
    second = PartIntent(intents, _target(study))  # the same instance again in the request, as an upsert
    await second.before_upload(count=True)
    await second.before_commit(first)
    [intent] = await pending_announcements(own)
    assert first in intent.replaced and first not in intent.targets  # no change of the request proves it kept


async def test_a_large_parts_change_is_counted_after_its_upload(own: Storage) -> None:
    request, study = new_version(), str(generate_uid())
    intents = RequestIntents(own, request)
    target = _target(study)
    part = PartIntent(intents, target)
    await part.before_upload(count=False)
    assert await _intents(own) == {request: ([study], 0, (target,))}
    part.start()
    await part.before_commit(None)
    assert await _intents(own) == {request: ([study], 1, (target,))}


async def test_targets_beyond_an_intents_room_go_to_cleanup_entries(own: Storage) -> None:
    request, study = new_version(), str(generate_uid())
    intents = RequestIntents(own, request)
    targets = [_target(study) for _ in range(MAX_INTENT_TARGETS + 5)]
    await asyncio.gather(*(intents.name(study, [target], count=True) for target in targets))
    [(studies, changes, named)] = (await _intents(own)).values()
    entries = await all_entries(own)
    assert (changes, len(named)) == (MAX_INTENT_TARGETS + 5, MAX_INTENT_TARGETS)
    assert {*named, *(t for entry in entries for t in entry.targets)} == set(targets)


async def test_a_request_into_many_studies_has_an_intent_per_hundred(own: Storage) -> None:
    request = new_version()
    intents = RequestIntents(own, request)
    studies = [str(generate_uid()) for _ in range(MAX_ANNOUNCED_STUDIES + 20)]
    await asyncio.gather(*(intents.count(study) for study in studies))
    await intents.count(studies[-1])

    announced = {key: value[:2] for key, value in (await _intents(own)).items()}
    assert announced == {request: (studies[:MAX_ANNOUNCED_STUDIES], MAX_ANNOUNCED_STUDIES),
                         f"{request}-2": (studies[MAX_ANNOUNCED_STUDIES:], 21)}
    assert intents.announcement_for(studies[-1]) == f"{request}-2"


async def test_changes_certainly_not_committed_leave_the_count_at_the_end(own: Storage) -> None:
    request, study, other = new_version(), str(generate_uid()), str(generate_uid())
    intents = RequestIntents(own, request)
    await asyncio.gather(intents.count(study), intents.count(study), intents.count(other))
    intents.not_committed(study, counted=True, deleted=None)
    await intents.finish()
    assert {key: value[:2] for key, value in (await _intents(own)).items()} == {request: ([study, other], 2)}


async def test_a_request_whose_only_part_was_refused_and_deleted_withdraws_its_intent(own: Storage) -> None:
    request, study = new_version(), str(generate_uid())
    intents = RequestIntents(own, request)
    part = PartIntent(intents, _target(study))
    await part.before_upload(count=True)
    part.not_committed(blobs_deleted=True)
    await intents.finish()
    assert request not in await _intents(own)


async def test_a_failed_part_whose_blobs_stay_keeps_its_target_with_no_change_counted(own: Storage) -> None:
    request, study = new_version(), str(generate_uid())
    intents = RequestIntents(own, request)
    target = _target(study)
    part = PartIntent(intents, target)
    await part.before_upload(count=True)
    part.not_committed()
    await intents.finish()
    assert (await _intents(own))[request] == ([study], 0, (target,))  # the sequencer hands the target over


def _landed(study: str, request: str) -> LandedOutbox:
    change = Change(ChangeAction.CREATE, str(generate_uid()), str(generate_uid()), new_version())
    return LandedOutbox(study, request_change_id(request, change.version), (change,))


async def test_a_request_that_landed_in_several_studies_confirms_its_outbox_rows_at_the_end(own: Storage) -> None:
    request, study, other = new_version(), str(generate_uid()), str(generate_uid())
    intents = RequestIntents(own, request)
    await asyncio.gather(intents.count(study), intents.count(other))
    landed = [_landed(study, request), _landed(other, request)]

    await intents.finish(landed)

    [announcement] = await pending_announcements(own)
    assert announcement.landed == tuple(landed) and announcement.changes == 2 and announcement.confirms_all()


async def test_a_request_that_landed_in_one_study_writes_nothing_at_the_end(own: Storage) -> None:
    request, study = new_version(), str(generate_uid())
    intents = RequestIntents(own, request)
    await asyncio.gather(intents.count(study), intents.count(study))
    written = [(a.landed, a.etag) for a in await pending_announcements(own)]

    await intents.finish([_landed(study, request), _landed(study, request)])

    assert [(a.landed, a.etag) for a in await pending_announcements(own)] == written == [((), written[0][1])]
