"""Retiring a STOW request's intent: the blobs it named that no appended change proves committed go to the cleanup.

A request's announcement is also its cleanup record (``index/outbox.py``): it names every version the request
uploads and every version its upserts replace. When the sequencer retires it (every change it counts is in the
feed, or it timed out, so no commit it covers can still land), a version that one of its appended changes names
was committed and is referenced by its row (a later upsert or delete that unreferences it names it itself); any
other target (an upload whose commit failed or never came) and every version its upserts replaced (recorded apart:
a part's commit proves nothing about the version another part replaced) gets a cleanup entry due the
cleanup delay from now, which deletes its blobs unless a row names them by then. Only those cost a write.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime

from dicom_core.index.cleanup_entries import (
    MAX_ENTRY_TARGETS,
    CleanupEntry,
    CleanupKind,
    CleanupTarget,
    cleanup_delay,
    entry_of,
    write_entries,
)
from dicom_core.index.outbox import Announcement, Change, ChangeAction
from dicom_core.storage.clients import Storage

LOGGER = logging.getLogger(__name__)

Version = tuple[str, str, str, str]  # study, series, instance, version


def committed_versions(outboxes: Iterable[tuple[str, Sequence[Change]]]) -> set[Version]:
    """The versions that appended changes (per study, its outbox's changes) show committed."""
    return {(study, change.series, change.instance, change.version)
            for study, changes in outboxes for change in changes if change.action is not ChangeAction.DELETE}


def _unproven(target: CleanupTarget, committed: set[Version]) -> bool:
    return target.kind is not CleanupKind.VERSION or (
        (target.study, target.series, target.instance, target.version) not in committed)


async def hand_over_targets(storage: Storage, retiring: Sequence[Announcement], committed: set[Version],
                            now: datetime) -> set[str]:
    """Write cleanup entries for the retiring intents' unproven targets; return the ids now safe to delete."""
    due = now + cleanup_delay(storage)
    entries: list[CleanupEntry] = []
    for announcement in retiring:
        rest = [*(target for target in announcement.targets if _unproven(target, committed)), *announcement.replaced]
        entries += [entry_of(f"{announcement.change_id}-retired-{start // MAX_ENTRY_TARGETS + 1}",
                             rest[start:start + MAX_ENTRY_TARGETS], due)
                    for start in range(0, len(rest), MAX_ENTRY_TARGETS)]
    if entries:
        try:
            await write_entries(storage, entries)
        except Exception:
            LOGGER.warning("Could not hand retired intents' targets to the cleanup; the next sequencer run will",
                           exc_info=True)
            return {a.change_id for a in retiring
                    if not a.replaced and not any(_unproven(t, committed) for t in a.targets)}
    return {announcement.change_id for announcement in retiring}
