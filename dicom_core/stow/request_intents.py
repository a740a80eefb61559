"""A STOW request's intent: one record that is both its change-feed announcement and its cleanup record.

Before a part uploads, the request's intent (the ``pending`` announcement of ``index/outbox.py``) names the
version it will write (a cleanup target) and, for a part small enough that its upload cannot outlast the
announcement timeout, counts its change; a larger part's change is counted after its upload. Before each commit
attempt it also names the version an upsert replaces. So a store writes one record before its commit where it
wrote a cleanup entry and an announcement. The sequencer retires the intent once every change it counts is in
the feed (or it timed out) and hands the targets no appended change proves committed to the blob cleanup
(``changefeed/intent_retirement.py``): only failed stores and upserts leave cleanup work. An intent names up to
MAX_INTENT_TARGETS targets; the rest go to cleanup entries of the request as before (``request_writes.py``).
A request that committed into several studies confirms, at its end, the outbox rows whose transactions answered
success (one more write of its intent): the sequencer then reads none of those study partitions and deletes none of
those outbox rows, where it would pay a query and a delete per study (``changefeed/sequencer.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from dicom_core.index.cleanup_entries import CleanupTarget, cleanup_delay
from dicom_core.index.outbox import (
    ANNOUNCEMENT_TIMEOUT,
    MAX_LANDED_CHARS,
    LandedOutbox,
    RequestAnnouncement,
    announce_requests,
    announcement_of,
    landed_json,
    withdraw_announcement,
)
from dicom_core.storage.clients import Storage
from dicom_core.stow.request_writes import RENEW_SHARE, Coalesced, PartsBeingRead, RequestCleanup

# The intent is written again before a commit if its last write is older than this: the sequencer retires an
# intent ANNOUNCEMENT_TIMEOUT after its last write, and a commit takes far less than the rest.
ANNOUNCEMENT_RENEWAL = ANNOUNCEMENT_TIMEOUT / 3
# Studies one intent names (about 7,000 characters of its Studies property at most).
MAX_ANNOUNCED_STUDIES = 100
# Targets one intent names (at most ~25,500 characters of its Targets property, below the 32K of a string).
MAX_INTENT_TARGETS = 100
# A request confirms its landed outbox rows when they are in at least this many studies: the confirmation costs
# one write; for one study the sequencer reads and deletes the rows of every request into it at once anyway.
MIN_CONFIRMED_STUDIES = 2


class _Intent:
    """One intent of a request: up to MAX_ANNOUNCED_STUDIES of its studies and their targets, as assigned."""

    def __init__(self, id: str) -> None:
        self.id = id
        self.studies: list[str] = []  # assigned to it so far (written with its next write)
        self.targets: dict[CleanupTarget, bool] = {}  # likewise; True: a version an upsert replaces
        self.written: RequestAnnouncement | None = None
        self.written_at = 0.0  # monotonic seconds when its last write started
        self.not_committed = 0
        self.landed: list[LandedOutbox] = []  # outbox rows of it whose transactions answered success (confirmed)
        self.landed_chars = 2  # of its Landed property


@dataclass(frozen=True)
class _Count:
    """A change in the count of one intent (0: only write it again, with what was assigned to it)."""

    intent: _Intent
    changes: int


class RequestIntents:
    """The intents of one STOW request: the studies it may commit into, how many changes, the blobs it writes.

    A request into more than MAX_ANNOUNCED_STUDIES studies has an intent per that many (``{request}``, then
    ``{request}-2``, ...), so that no intent outgrows a Table property.
    """

    def __init__(self, storage: Storage, request: str) -> None:
        self.storage = storage
        self.request = request
        self._intents: list[_Intent] = []
        self._of_study: dict[str, _Intent] = {}
        self._reading = PartsBeingRead()
        self._writes: Coalesced[_Count] = Coalesced(self._write, self._reading.wait)
        self._overflow = RequestCleanup(storage, request, self._reading)  # targets beyond the intents' room
        self._overflowed: set[CleanupTarget] = set()
        self._written: dict[CleanupTarget, bool] = {}  # named by a write of its intent that succeeded (how)

    @contextlib.contextmanager
    def parsing(self) -> Iterator[None]:
        """Around reading a part: the request's next write waits for it, so that it can name its version too."""
        with self._reading.parsing():
            yield

    def announcement_for(self, study: str) -> str:
        """The id of the intent that covers the request's commits into ``study`` (its outbox rows name it)."""
        return self._intent(study).id

    def _intent(self, study: str) -> _Intent:
        intent = self._of_study.get(study)
        if intent is None:
            if not self._intents or len(self._intents[-1].studies) >= MAX_ANNOUNCED_STUDIES:
                number = len(self._intents) + 1
                self._intents.append(_Intent(self.request if number == 1 else f"{self.request}-{number}"))
            intent = self._of_study[study] = self._intents[-1]
            intent.studies.append(study)
        return intent

    async def name(self, study: str, targets: Sequence[CleanupTarget], *, replaced: Sequence[CleanupTarget] = (),
                   count: bool = False) -> None:
        """Return once a fresh write of the intent of ``study`` names ``targets`` and the ``replaced`` versions (and
        counts one more change)."""
        intent = self._intent(study)
        targets = [*targets, *replaced]
        stale = time.monotonic() - intent.written_at > self._renewal_seconds()
        overflow = [target for target in targets
                    if target in self._overflowed or (target not in intent.targets
                                                      and len(intent.targets) >= MAX_INTENT_TARGETS)]
        self._overflowed.update(overflow)
        for target in targets:
            if target not in overflow:
                intent.targets[target] = intent.targets.get(target, False) or target in replaced
        unwritten = [target for target in targets if target not in overflow
                     and (target not in self._written or self._written[target] < (target in replaced))]
        writes = [self._overflow.cover(overflow)] if overflow else []
        if count or unwritten or stale:
            writes.append(self._writes.include([_Count(intent, 1 if count else 0)]))
        await asyncio.gather(*writes)

    async def count(self, study: str) -> None:
        """Return once the intent counts one more change, into ``study`` (a large part's, after its upload)."""
        await self._writes.include([_Count(self._intent(study), 1)])

    def not_committed(self, study: str, *, counted: bool, deleted: CleanupTarget | None) -> None:
        """A change whose commit certainly did not happen (refused, or never tried), maybe with its blobs deleted."""
        intent = self._of_study[study]
        if counted:
            intent.not_committed += 1
        if deleted is not None:
            intent.targets.pop(deleted, None)  # nothing left to clean up (written so with the next write)

    async def finish(self, landed: Sequence[LandedOutbox] = ()) -> None:
        """After the last part: take the changes certainly not committed out of the count (or withdraw the intent);
        for a request that committed into several studies, confirm the outbox rows its transactions landed."""
        confirmed = self._confirm(landed) if len({o.study for o in landed}) >= MIN_CONFIRMED_STUDIES else set()
        corrections = []
        for intent in self._intents:
            if not intent.not_committed or intent.written is None:
                if intent.id in confirmed:
                    corrections.append(_Count(intent, 0))
                continue
            if intent.not_committed >= intent.written.changes and not intent.targets:
                await withdraw_announcement(self.storage, intent.id)  # nothing it announced was committed
            else:  # an intent counting no change is retired by the next sequencer run, its targets handed over
                corrections.append(_Count(intent, -intent.not_committed))
            intent.not_committed = 0
        if corrections:
            await self._writes.include(corrections)

    def _confirm(self, landed: Sequence[LandedOutbox]) -> set[str]:
        """Add landed outbox rows to their intents (as many as its Landed property holds); the ids of those changed."""
        changed = set()
        for outbox in landed:
            intent = self._of_study.get(outbox.study)
            chars = len(landed_json([outbox]))
            if intent is None or intent.id != announcement_of(outbox.change_id) or outbox in intent.landed \
                    or intent.landed_chars + chars > MAX_LANDED_CHARS:
                continue  # the sequencer finds a row left out by reading its study partition, as before
            intent.landed.append(outbox)
            intent.landed_chars += chars
            changed.add(intent.id)
        return changed

    def _renewal_seconds(self) -> float:
        # Also renames the targets before a commit, as a cleanup entry of the request would (request_writes.py).
        return min(ANNOUNCEMENT_RENEWAL.total_seconds(), cleanup_delay(self.storage).total_seconds() * RENEW_SHARE)

    async def _write(self, counts: list[_Count]) -> None:
        now, started = datetime.now(UTC), time.monotonic()
        changes: dict[str, int] = {}
        for count in counts:
            changes[count.intent.id] = changes.get(count.intent.id, 0) + count.changes
        written = [(intent, RequestAnnouncement(
            intent.id, tuple(intent.studies),
            (intent.written.changes if intent.written else 0) + changes[intent.id],
            intent.written.announced_at if intent.written else now,
            tuple(target for target, replaced in intent.targets.items() if not replaced),
            tuple(target for target, replaced in intent.targets.items() if replaced),
            tuple(intent.landed),
        )) for intent in self._intents if intent.id in changes]
        await announce_requests(self.storage, [state for _, state in written], now)
        for intent, state in written:
            intent.written, intent.written_at = state, started
            self._written.update({**dict.fromkeys(state.targets, False), **dict.fromkeys(state.replaced, True)})


class PartIntent:
    """One part's place in its request's intent: its version named before its uploads, its change counted."""

    def __init__(self, intents: RequestIntents, own: CleanupTarget) -> None:
        self.intents = intents
        self.own = own
        self.committing = False  # commit_instance was called: from then on, whether it landed is uncertain
        self._counted = False
        self._task: asyncio.Task[None] | None = None

    async def before_upload(self, *, count: bool) -> None:
        """Name the part's version (and count its change, for a part whose upload is short) before uploading."""
        await self.intents.name(self.own.study, [self.own], count=count)
        self._counted = count

    def start(self) -> None:
        """Have the intent count this change (once), unless it does already."""
        if not self._counted and self._task is None:
            self._task = asyncio.create_task(self.intents.count(self.own.study))

    async def before_commit(self, replaced: CleanupTarget | None) -> None:
        """Wait until the intent counts this change, names a replaced version, and is fresh for a commit now."""
        if self._task is not None:
            await self._task
        await self.intents.name(self.own.study, [self.own], replaced=[replaced] if replaced is not None else [])

    def not_committed(self, *, blobs_deleted: bool = False) -> None:
        """This change's commit certainly did not happen: the request takes it out of its count at the end."""
        task = self._task
        counted = self._counted or (task is not None and task.done() and not task.cancelled()
                                    and task.exception() is None)
        self.intents.not_committed(self.own.study, counted=counted, deleted=self.own if blobs_deleted else None)

    async def stop(self) -> None:
        """Cancel the count's write if no commit attempt waited for it."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
