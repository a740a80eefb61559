"""What the maintenance timer runs every few minutes: blob cleanup, the change feed's sequencer, pruning.

Each step is bounded per run and idempotent; a failing step does not keep the others from running (the next
run takes up what is left), and the run fails with the first error afterwards so the host records it. The
repair (`repair.py`) checks one window of the archive per run, from a cursor, on its own hourly timer.
See docs/storage.md.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from dicom_core.changefeed.pruning import prune_done_rows
from dicom_core.changefeed.sequencer import sequence_pending
from dicom_core.maintenance.blob_cleanup import CleanupReport, run_cleanup
from dicom_core.maintenance.index_pruning import prune_index_entries
from dicom_core.storage.clients import Storage

LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True)
class RoutineReport:
    """One run: the cleanup's report, changes appended to the feed, done rows and index entries pruned."""

    cleanup: CleanupReport | None
    appended: int
    done_rows_pruned: int
    index_entries_pruned: int


async def run_maintenance(storage: Storage, *, now: datetime | None = None) -> RoutineReport:
    """Due blob cleanup, then the change feed's sequencer, then pruning of done rows and stale index entries."""
    errors: list[Exception] = []

    async def step(running: Awaitable[_T], name: str) -> _T | None:
        try:
            return await running
        except Exception as exc:
            LOGGER.warning("Maintenance: the %s failed; the next run takes it up", name, exc_info=True)
            errors.append(exc)
            return None

    cleanup = await step(run_cleanup(storage, now=now), "blob cleanup")
    appended = await step(sequence_pending(storage), "change feed sequencer")
    pruned = await step(prune_done_rows(storage, now=now), "pruning of done rows")
    entries = await step(prune_index_entries(storage, now=now), "pruning of stale index entries")
    if errors:
        raise errors[0]
    return RoutineReport(cleanup, appended or 0, pruned or 0, entries or 0)
