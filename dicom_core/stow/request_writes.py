"""What a STOW request writes once for all its parts: one cleanup entry and one change-feed announcement.

Both must be written before what they cover: the cleanup entry before a part's blobs are uploaded (or an upsert
replaces a version), the announcement before a part's commit. The parts of a request arrive one after another,
so each is a record of the request that its parts extend: a part waits until a write naming it succeeded, and
whichever part finds no write of the request running writes what every waiting part needs, at once. A request
so writes each record once for the parts it stores at the same time (8), and again as later parts arrive, not
once per part.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from dicom_core.index.outbox import (
    ANNOUNCEMENT_TIMEOUT,
    RequestAnnouncement,
    announce_requests,
    withdraw_announcement,
)
from dicom_core.maintenance.blob_cleanup import (
    MAX_ENTRY_TARGETS,
    CleanupEntry,
    CleanupTarget,
    cleanup_delay,
    entry_of,
    write_entries,
)
from dicom_core.storage.clients import Storage

T = TypeVar("T")

# Loop turns a writer waits before taking the queue, so that the parts released by one event join its write.
SETTLE_TURNS = 4
# An entry is extended while it is younger than this share of the cleanup delay (its due time stays), so every
# target is due at least 90 % of the delay after it was named; later targets go to a new entry.
EXTEND_SHARE = 0.1
# A target named longer ago than this share of the delay is named again before a commit that references it.
RENEW_SHARE = 0.5
# The announcement is written again before a commit if its last write is older than this: the sequencer drops an
# announcement ANNOUNCEMENT_TIMEOUT after its last write, and a commit takes far less than the rest.
ANNOUNCEMENT_RENEWAL = ANNOUNCEMENT_TIMEOUT / 3
# Studies one announcement names (about 7,000 characters of its Studies property at most).
MAX_ANNOUNCED_STUDIES = 100


class Coalesced(Generic[T]):
    """Items of one request's parts, written together by whichever part finds no write running."""

    def __init__(self, write: Callable[[list[T]], Awaitable[None]],
                 ready: Callable[[], Awaitable[object]] | None = None) -> None:
        self._write = write
        self._ready = ready
        self._queue: list[tuple[list[T], asyncio.Future[None]]] = []
        self._writing: asyncio.Future[None] | None = None  # done when the running write ends

    async def include(self, items: Iterable[T]) -> None:
        """Return once a write holding ``items`` succeeded (no items: a write of its own); raise if it failed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (list(items), future)
        self._queue.append(entry)
        try:
            while not future.done():
                if self._writing is None:
                    await self._lead(future)
                else:  # woken with every other waiting part at once when the write ends
                    await asyncio.wait((future, self._writing), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            if entry in self._queue:  # cancelled while waiting: nobody writes it now
                self._queue.remove(entry)
            raise
        return future.result()

    async def _lead(self, own: asyncio.Future[None]) -> None:
        writing = self._writing = asyncio.get_running_loop().create_future()
        try:
            if self._ready is not None:
                await self._ready()
            for _ in range(SETTLE_TURNS):
                await asyncio.sleep(0)
            batch, self._queue = self._queue, []
            try:
                await self._write([item for items, _ in batch for item in items])
            except asyncio.CancelledError:
                # The other parts' items go back to the queue; one of those parts writes them.
                self._queue[:0] = [entry for entry in batch if entry[1] is not own]
                raise
            except Exception as exc:
                for _, waiting in batch:
                    if not waiting.done():
                        waiting.set_exception(exc)
            else:
                for _, waiting in batch:
                    if not waiting.done():
                        waiting.set_result(None)
        finally:
            self._writing = None
            writing.set_result(None)


@dataclass(frozen=True)
class _Written:
    """One cleanup entry of the request as last written, and when (monotonic seconds) it was started."""

    entry: CleanupEntry
    started: float


class RequestCleanup:
    """The cleanup entries of one STOW request: every version it uploads or replaces, in as few entries as possible."""

    def __init__(self, storage: Storage, request: str) -> None:
        self.storage = storage
        self.request = request
        self._current: _Written | None = None
        self._named: dict[CleanupTarget, float] = {}  # target -> start of the newest entry naming it
        self._entries = 0
        self._parsing = 0
        self._parsed = asyncio.Event()
        self._parsed.set()
        self._writes: Coalesced[CleanupTarget] = Coalesced(self._write, self._parsed.wait)

    @contextlib.contextmanager
    def parsing(self) -> Iterator[None]:
        """Around reading a part: the request's next write waits for it, so that it can name its version too."""
        self._parsing += 1
        self._parsed.clear()
        try:
            yield
        finally:
            self._parsing -= 1
            if not self._parsing:
                self._parsed.set()

    async def cover(self, targets: Sequence[CleanupTarget]) -> None:
        """Return once written entries name every target not named lately (before its blobs can go)."""
        renew_after = cleanup_delay(self.storage).total_seconds() * RENEW_SHARE
        now = time.monotonic()
        missing = [target for target in targets
                   if target not in self._named or now - self._named[target] > renew_after]
        if missing:
            await self._writes.include(missing)

    async def _write(self, targets: list[CleanupTarget]) -> None:
        started, delay = time.monotonic(), cleanup_delay(self.storage)
        current = self._current
        if current is not None and started - current.started > delay.total_seconds() * EXTEND_SHARE:
            current = None  # too old to extend: its due time would come too early for new targets
        named = set(current.entry.targets) if current is not None else set()
        remaining = [target for target in dict.fromkeys(targets) if target not in named]
        written: list[_Written] = []
        if current is not None and remaining and len(named) < MAX_ENTRY_TARGETS:
            room = MAX_ENTRY_TARGETS - len(named)
            extended = (*current.entry.targets, *remaining[:room])  # same keys, same due time
            written.append(_Written(CleanupEntry(current.entry.partition, current.entry.row, extended),
                                    current.started))
            remaining = remaining[room:]
        due = datetime.now(UTC) + delay
        for start in range(0, len(remaining), MAX_ENTRY_TARGETS):
            self._entries += 1
            name = f"{self.request}-{self._entries}"
            written.append(_Written(entry_of(name, remaining[start:start + MAX_ENTRY_TARGETS], due), started))
        if not written:
            return
        await write_entries(self.storage, [item.entry for item in written])
        self._current = written[-1]
        for item in written:
            for target in item.entry.targets:
                self._named[target] = max(self._named.get(target, item.started), item.started)


class _Announcement:
    """One announcement of a request: up to MAX_ANNOUNCED_STUDIES of its studies, as assigned and as written."""

    def __init__(self, id: str) -> None:
        self.id = id
        self.studies: list[str] = []  # assigned to it so far (written with its next write)
        self.written: RequestAnnouncement | None = None
        self.written_at = 0.0  # monotonic seconds when its last write started
        self.not_committed = 0


@dataclass(frozen=True)
class _Count:
    """A change in the count of one announcement (0: only write it again)."""

    announcement: _Announcement
    changes: int


class RequestFeed:
    """The change-feed announcement of one STOW request: the studies it may commit into, and how many changes.

    A request into more than MAX_ANNOUNCED_STUDIES studies has an announcement per that many (``{request}``,
    then ``{request}-2``, ...), so that no announcement outgrows a Table property.
    """

    def __init__(self, storage: Storage, request: str) -> None:
        self.storage = storage
        self.request = request
        self._announcements: list[_Announcement] = []
        self._of_study: dict[str, _Announcement] = {}
        self._writes: Coalesced[_Count] = Coalesced(self._write)

    def announcement_for(self, study: str) -> str:
        """The id of the announcement that covers the request's commits into ``study`` (its outbox rows name it)."""
        announcement = self._of_study.get(study)
        if announcement is None:
            if not self._announcements or len(self._announcements[-1].studies) >= MAX_ANNOUNCED_STUDIES:
                number = len(self._announcements) + 1
                self._announcements.append(_Announcement(self.request if number == 1 else f"{self.request}-{number}"))
            announcement = self._of_study[study] = self._announcements[-1]
            announcement.studies.append(study)
        return announcement.id

    async def cover(self, study: str) -> None:
        """Return once the announcement counts one more change, into ``study`` (before that change's commit)."""
        self.announcement_for(study)
        await self._writes.include([_Count(self._of_study[study], 1)])

    async def renew(self, study: str) -> None:
        """Write the announcement again if the sequencer could drop it before a commit starting now lands."""
        announcement = self._of_study[study]
        if time.monotonic() - announcement.written_at > ANNOUNCEMENT_RENEWAL.total_seconds():
            await self._writes.include([_Count(announcement, 0)])

    def not_committed(self, study: str) -> None:
        """Count a change it announced whose commit certainly did not happen (refused, or never tried)."""
        self._of_study[study].not_committed += 1

    async def finish(self) -> None:
        """After the last part: take the changes certainly not committed out of the count (or withdraw it)."""
        corrections = []
        for announcement in self._announcements:
            if not announcement.not_committed or announcement.written is None:
                continue
            if announcement.not_committed >= announcement.written.changes:
                await withdraw_announcement(self.storage, announcement.id)  # nothing it announced was committed
            else:
                corrections.append(_Count(announcement, -announcement.not_committed))
            announcement.not_committed = 0
        if corrections:
            await self._writes.include(corrections)

    async def _write(self, counts: list[_Count]) -> None:
        now, started = datetime.now(UTC), time.monotonic()
        changes: dict[str, int] = {}
        for count in counts:
            changes[count.announcement.id] = changes.get(count.announcement.id, 0) + count.changes
        written = [(announcement, RequestAnnouncement(
            announcement.id, tuple(announcement.studies),
            (announcement.written.changes if announcement.written else 0) + changes[announcement.id],
            announcement.written.announced_at if announcement.written else now,
        )) for announcement in self._announcements if announcement.id in changes]
        await announce_requests(self.storage, [state for _, state in written], now)
        for announcement, state in written:
            announcement.written, announcement.written_at = state, started
