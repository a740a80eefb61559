"""How a STOW request writes records for all its parts at once, and its cleanup entries beyond its intent's room.

A request's records (its intent, ``request_intents.py``; cleanup entries for targets its intent has no room for)
must be written before what they cover. The parts of a request arrive one after another, so each is a record
of the request that its parts extend: a part waits until a write naming it succeeded, and whichever part finds
no write of the request running writes what every waiting part needs, at once (``Coalesced``). A request so
writes each record once for the parts it stores at the same time (up to 32 small ones), and again as later parts
arrive, not once per part.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from dicom_core.index.cleanup_entries import (
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


class PartsBeingRead:
    """The parts of a request being read now: its next write waits for them, so that it names them too."""

    def __init__(self) -> None:
        self._reading = 0
        self._done = asyncio.Event()
        self._done.set()

    @contextlib.contextmanager
    def parsing(self) -> Iterator[None]:
        """Around reading a part."""
        self._reading += 1
        self._done.clear()
        try:
            yield
        finally:
            self._reading -= 1
            if not self._reading:
                self._done.set()

    async def wait(self) -> None:
        """Return once no part is being read."""
        await self._done.wait()


@dataclass(frozen=True)
class _Written:
    """One cleanup entry of the request as last written, and when (monotonic seconds) it was started."""

    entry: CleanupEntry
    started: float


class RequestCleanup:
    """The cleanup entries of one STOW request: every version it uploads or replaces, in as few entries as possible."""

    def __init__(self, storage: Storage, request: str, reading: PartsBeingRead | None = None) -> None:
        self.storage = storage
        self.request = request
        self._current: _Written | None = None
        self._named: dict[CleanupTarget, float] = {}  # target -> start of the newest entry naming it
        self._entries = 0
        self.reading = reading or PartsBeingRead()
        self._writes: Coalesced[CleanupTarget] = Coalesced(self._write, self.reading.wait)

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
