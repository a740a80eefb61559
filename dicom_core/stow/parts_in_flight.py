"""The parts of one STOW request in flight: they reach their commits together, so their index writes batch.

A request's parts are received one after another and held (spooled, parsed, uploaded) within a memory budget of
`store_concurrency` parts of `spool_memory_bytes` each (`PartSlots`): a part weighs its size, so several small parts
(a 0.5 MB CT image) share what one large part takes, up to SMALL_PARTS_PER_SLOT of them; a part gives its share back
once its blobs are uploaded, so the next parts are received while it waits for its commit. Before its commit a part
waits (at most COMMIT_WAIT_SECONDS) until every part received so far reached its commit or failed: the parts then
commit at the same moment, and the index entries and claims of all of them (one study each, in a CR/DX archive)
share the transactions of their partitions instead of going out in waves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

# Small parts held at once per slot of `store_concurrency`: with 8 slots a request of 10 CT images holds all of them
# at once, so their intent and commit writes are shared (with 8 at a time, parts 9 and 10 waited for a slot and
# were named and committed by writes of their own: 1 in flight, 0.46x of the SDK's upload rate; all at once 0.64x).
SMALL_PARTS_PER_SLOT = 4
# The longest a part that reached its commit waits for the request's other parts (a large part still uploading).
COMMIT_WAIT_SECONDS = 1.0
# How long the first of the parts released together waits for the others to join its study's transaction (they
# run right after it, in the same turn of the event loop).
COMMIT_LINGER_SECONDS = 0.001


class PartSlots:
    """The memory budget of one request's parts held at once: `slots` parts of `part_bytes` (a part weighs its size)."""

    def __init__(self, slots: int, part_bytes: int) -> None:
        self._part_bytes = max(1, part_bytes)
        self._free = max(1, slots) * self._part_bytes
        self._least = -(-self._free // (max(1, slots) * SMALL_PARTS_PER_SLOT))  # the lightest a part weighs
        self._released = asyncio.Event()

    def weight(self, size: int) -> int:
        """What a part of ``size`` bytes takes from the budget (a larger one is staged to its blob, not held)."""
        return min(max(size, self._least), self._part_bytes)

    async def acquire(self, weight: int) -> None:
        """Wait until ``weight`` is free and take it."""
        while self._free < weight:
            self._released.clear()
            await self._released.wait()
        self._free -= weight

    def release(self, weight: int) -> None:
        """Give ``weight`` back."""
        self._free += weight
        self._released.set()


class PartsInFlight:
    """The parts of one request received and not yet at their commit (or failed)."""

    def __init__(self) -> None:
        self._pending = 0
        self._waiting = 0
        self._settled = asyncio.Event()
        self._settled.set()

    def join(self, release: Callable[[], None]) -> PartInFlight:
        """A part was received; ``release`` gives its slot back (called once, after its uploads or at its end)."""
        self._pending += 1
        self._settled.clear()
        return PartInFlight(self, release)

    def _arrived(self) -> None:
        self._pending -= 1
        if not self._pending:
            self._settled.set()

    async def _settle(self) -> None:
        self._waiting += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), COMMIT_WAIT_SECONDS)
        finally:
            self._waiting -= 1


class PartInFlight:
    """One received part: its slot, and its place among the parts the request's commits wait for."""

    def __init__(self, parts: PartsInFlight, release: Callable[[], None]) -> None:
        self._parts = parts
        self._release: Callable[[], None] | None = release
        self._pending = True

    def uploaded(self) -> None:
        """Its blobs are uploaded: give its slot back (the next part can be received)."""
        release, self._release = self._release, None
        if release is not None:
            release()

    async def ready_to_commit(self) -> bool:
        """Wait until the other parts received so far are ready too (or COMMIT_WAIT_SECONDS passed); were there any?"""
        # A part alone (no other in flight or waiting) has nobody to share its study's transaction with: no linger.
        accompanied = self._parts._waiting > 0 or self._parts._pending > int(self._pending)
        self._leave()
        await self._parts._settle()
        return accompanied

    def finished(self) -> None:
        """The part is done (stored, refused or failed): nobody waits for it, its slot is free."""
        self._leave()
        self.uploaded()

    def _leave(self) -> None:
        if self._pending:
            self._pending = False
            self._parts._arrived()
