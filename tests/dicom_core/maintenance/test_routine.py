"""The maintenance timer's routine: cleanup, sequencer and pruning in one run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydicom.uid import generate_uid

from dicom_core.changefeed.feed_reads import entries_after
from dicom_core.maintenance.blob_cleanup import all_entries
from dicom_core.maintenance.consistency import check_consistency
from dicom_core.maintenance.routine import run_maintenance
from dicom_core.storage.clients import Storage
from tests.factories import make_instance

FAR_FUTURE = datetime.now(UTC) + timedelta(days=3650)


async def test_a_run_sequences_cleans_up_and_a_later_run_prunes_what_the_feed_no_longer_needs(
        own: Storage, stow_parts) -> None:
    study, series = str(generate_uid()), str(generate_uid())
    assert (await stow_parts(own, [make_instance(study=study, series=series) for _ in range(2)])).status == 200

    first = await run_maintenance(own)
    later = await run_maintenance(own, now=FAR_FUTURE)

    assert (first.appended, first.done_rows_pruned) == (2, 0)
    assert later.appended == 0 and later.done_rows_pruned > 0
    # The request's intent proved both files committed: the cleanup has nothing due, and no entry is left.
    assert later.cleanup is not None and later.cleanup.due == 0 and await all_entries(own) == []
    assert len(await entries_after(own, 0, 100)) == 2
    assert await check_consistency(own) == []
