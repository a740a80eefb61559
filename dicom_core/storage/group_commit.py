"""Group commit: concurrent writes to one resource of this process are applied together, a batch at a time.

Writers of one key (a study partition, a series metadata document) would each pay a read and a conditional
write, and race one another for the resource's ETag. Instead each writer queues its item; whoever finds no
batch running takes everything queued (up to a limit) and applies it with one `flush`, while the writers
that arrive meanwhile queue up for the next batch. A writer returns when its own item was applied.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")

# A flush returns for each item of its batch, in order, the item's result or the exception it failed with.
Flush = Callable[[K, Sequence[T]], Awaitable[Sequence["R | BaseException"]]]
# Whether an item may join a batch already holding ``batch`` (e.g. one row is written once per transaction).
Fits = Callable[[Sequence[T], T], bool]


@dataclass(eq=False)
class _Entry(Generic[T, R]):
    item: T
    future: asyncio.Future[R]


@dataclass
class _Queue(Generic[T, R]):
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: deque[_Entry[T, R]] = field(default_factory=deque)
    users: int = 0


class GroupCommit(Generic[K, T, R]):
    """Applies the queued items of each key in batches of at most ``max_items``, one batch at a time per key."""

    def __init__(self, flush: Flush[K, T, R], *, max_items: int, fits: Fits[T] | None = None) -> None:
        self._flush = flush
        self._max_items = max_items
        self._fits = fits
        self._queues: dict[tuple[int, K], _Queue[T, R]] = {}

    async def submit(self, key: K, item: T, *, linger: float = 0.0) -> R:
        """Queue ``item`` under ``key`` and return its result once a batch holding it was applied.

        A writer that finds ``key`` idle waits ``linger`` seconds for others to queue before it applies the batch.
        """
        queue_key = (id(asyncio.get_running_loop()), key)
        queue = self._queues.setdefault(queue_key, _Queue())
        entry: _Entry[T, R] = _Entry(item, asyncio.get_running_loop().create_future())
        queue.pending.append(entry)
        idle = queue.users == 0
        queue.users += 1
        try:
            async with queue.lock:
                if idle and linger:
                    await asyncio.sleep(linger)
                while not entry.future.done():
                    await self._apply(key, queue, self._take(queue), entry)
            return entry.future.result()
        except asyncio.CancelledError:
            if entry in queue.pending:  # cancelled while waiting: nobody applies it now
                queue.pending.remove(entry)
            raise
        finally:
            queue.users -= 1
            if queue.users == 0:
                del self._queues[queue_key]

    def _take(self, queue: _Queue[T, R]) -> list[_Entry[T, R]]:
        batch: list[_Entry[T, R]] = []
        skipped: list[_Entry[T, R]] = []
        while queue.pending and len(batch) < self._max_items:
            entry = queue.pending.popleft()
            items = [taken.item for taken in batch]
            if self._fits is None or not batch or self._fits(items, entry.item):
                batch.append(entry)
            else:
                skipped.append(entry)
        queue.pending.extendleft(reversed(skipped))
        return batch

    async def _apply(self, key: K, queue: _Queue[T, R], batch: list[_Entry[T, R]], own: _Entry[T, R]) -> None:
        try:
            outcomes = await self._flush(key, [entry.item for entry in batch])
        except asyncio.CancelledError:
            # The flushing writer was cancelled (its client went away): the others' items go back to the
            # front of the queue and the next writer applies them, so a flush must be safe to repeat.
            queue.pending.extendleft(reversed([entry for entry in batch if entry is not own]))
            raise
        except Exception as exc:
            outcomes = [exc] * len(batch)
        for entry, outcome in zip(batch, outcomes, strict=True):
            if entry.future.done():
                continue
            if isinstance(outcome, BaseException):
                entry.future.set_exception(outcome)
            else:
                entry.future.set_result(outcome)
