"""What a STOW request's intent leaves when the request dies at each stage, and how maintenance repairs it.

Maintenance runs as the timer does once the intent timed out: the sequencer retires it and hands the versions no
appended change proves committed to the blob cleanup, which deletes what no row references once due.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from pydicom.uid import generate_uid

from dicom_core.changefeed.feed_reads import entries_after
from dicom_core.changefeed.sequencer import sequence_pending
from dicom_core.index.cleanup_entries import CleanupTarget
from dicom_core.index.outbox import ANNOUNCEMENT_TIMEOUT, pending_announcements
from dicom_core.maintenance.blob_cleanup import all_entries, run_cleanup
from dicom_core.maintenance.consistency import check_consistency
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance, new_version
from dicom_core.storage.blobs import put_instance_file
from dicom_core.storage.clients import Storage
from dicom_core.stow.request_intents import PartIntent, RequestIntents
from dicom_core.stow.service import StoreRequest, store_instances
from tests.factories import make_instance, multipart_body

TIMED_OUT = datetime.now(UTC) + ANNOUNCEMENT_TIMEOUT + timedelta(days=1)
FAR_FUTURE = datetime.now(UTC) + timedelta(days=3650)
BOUNDARY = "intent-boundary"


async def _maintain(storage: Storage) -> None:
    await sequence_pending(storage)
    await sequence_pending(storage, clock=lambda: TIMED_OUT)
    await run_cleanup(storage, now=FAR_FUTURE)


async def _intend(storage: Storage) -> StoredInstance:
    """What a request did up to its intent: the version it is about to upload is named, its change counted."""
    stored = StoredInstance(InstanceIdentifiers(generate_uid(), generate_uid(), generate_uid()), new_version())
    await PartIntent(RequestIntents(storage, new_version()), CleanupTarget.of_version(stored)).before_upload(count=True)
    return stored


async def _files(storage: Storage) -> list[str]:
    return [blob.name async for blob in storage.files.list_blobs()]


async def test_a_request_dead_after_its_intent_leaves_nothing(own: Storage) -> None:
    await _intend(own)
    assert await check_consistency(own) == []
    await _maintain(own)
    assert (await pending_announcements(own), await all_entries(own), await _files(own)) == ([], [], [])
    assert await entries_after(own, 0, 10) == []


async def test_a_request_dead_between_upload_and_commit_leaves_no_orphan(own: Storage) -> None:
    stored = await _intend(own)
    data = make_instance(study=stored.ids.study, series=stored.ids.series, sop=stored.ids.instance)
    await put_instance_file(own, stored, io.BytesIO(data), len(data))
    assert await check_consistency(own) == []  # the intent covers the uploaded blob
    await _maintain(own)
    assert (await pending_announcements(own), await all_entries(own), await _files(own)) == ([], [], [])
    assert await entries_after(own, 0, 10) == []
    assert await check_consistency(own) == []


async def test_a_committed_requests_intent_retired_after_the_timeout_keeps_its_instance_once_in_the_feed(
    own: Storage,
) -> None:
    study = generate_uid()
    request = StoreRequest(api_version=2, study_uid=None, content_type=(
        f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'), accept=None, base_url="http://test")

    async def body():
        yield multipart_body([make_instance(study=study)], BOUNDARY)

    assert (await store_instances(own, request, body())).status == 200
    await _maintain(own)
    await sequence_pending(own)
    assert [entry.study for entry in await entries_after(own, 0, 10)] == [study]
    assert (await pending_announcements(own), await all_entries(own), len(await _files(own))) == ([], [], 1)
    assert await check_consistency(own) == []
