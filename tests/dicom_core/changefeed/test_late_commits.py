"""A writer that stalls between its announcement and its commit past the announcement window still reaches the feed.

The sequencer drops the expired announcement; the commit lands after that; the maintenance repair finds the
committed outbox row nobody announces and appends it, exactly once.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest
from pydicom.uid import generate_uid

from dicom_core.changefeed.feed_reads import entries_after
from dicom_core.changefeed.sequencer import sequence_pending
from dicom_core.index import outbox
from dicom_core.maintenance import consistency
from dicom_core.maintenance.consistency import check_consistency
from dicom_core.maintenance.repair import run_repair
from dicom_core.storage.clients import Storage, open_storage
from tests.dicom_core.changefeed.feed_support import pending_ids
from tests.factories import make_instance
from tests.faults.proxy import Action, Fault, StorageFaultProxy

WINDOW = timedelta(seconds=1)


@pytest.fixture
def short_window(monkeypatch: pytest.MonkeyPatch) -> timedelta:
    """The announcement window, shortened to a second for the sequencer and the checker."""
    monkeypatch.setattr(outbox, "ANNOUNCEMENT_TIMEOUT", WINDOW)
    monkeypatch.setattr(consistency, "ANNOUNCEMENT_TIMEOUT", WINDOW)
    return WINDOW


async def test_a_commit_after_its_announcement_expired_is_appended_once_by_the_repair(
        own: Storage, stow_parts, storage_fault_proxy: StorageFaultProxy, short_window: timedelta) -> None:
    proxied = await open_storage(replace(own.settings, storage_connection_string=storage_fault_proxy.connection_string))
    study, series, sop = str(generate_uid()), str(generate_uid()), str(generate_uid())
    stall = storage_fault_proxy.inject(Fault("table", "POST", r"/\$batch$", Action.HOLD,
                                             body=rf"{own.settings.table_prefix}Studies"))
    try:
        storing = asyncio.create_task(stow_parts(proxied, [make_instance(study=study, series=series, sop=sop)]))
        assert await asyncio.to_thread(stall.fired.wait, 60), "the commit never reached storage"
        await asyncio.sleep(short_window.total_seconds() * 1.5)
        await sequence_pending(own)  # the announcement is older than the window: dropped
        assert await pending_ids(own) == []
        stall.release.set()
        assert (await storing).status == 200
    finally:
        stall.release.set()
        await proxied.close()
    assert await sequence_pending(own) == 0  # nothing announces the commit that landed late
    await asyncio.sleep(short_window.total_seconds() * 1.5)

    report = await run_repair(own)
    again = await run_repair(own)
    await sequence_pending(own)

    assert [r.action for r in report.repaired] == ["1 change(s) appended to the change feed"]
    assert again.repaired == []
    assert [(e.study, e.series, e.instance) for e in await entries_after(own, 0, 100)] == [(study, series, sop)]
    assert await check_consistency(own) == []
