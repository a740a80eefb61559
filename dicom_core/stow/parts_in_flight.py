"""The parts of one STOW request in flight: they reach their commits together, so their index writes batch.

A request's parts are received one after another and at most `store_concurrency` of them are held (spooled,
parsed, uploaded) at once; a part gives its slot back once its blobs are uploaded, so the next parts are received
while it waits for its commit. Before its commit a part waits (at most COMMIT_WAIT_SECONDS) until every part
received so far reached its commit or failed: the parts then commit at the same moment, and the index entries and
claims of all of them (one study each, in a CR/DX archive) share the transactions of their partitions instead of
going out in waves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

# The longest a part that reached its commit waits for the request's other parts (a large part still uploading).
COMMIT_WAIT_SECONDS = 1.0
# How long the first of the parts released together waits for the others to join its study's transaction (they
# run right after it, in the same turn of the event loop).
COMMIT_LINGER_SECONDS = 0.001


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
