"""C-STOREs of every association stored as the parts of shared store requests, as a STOW request's parts are.

C-STOREs in flight at the same time (over several associations) share the request's writes before their commits
(cleanup entry, change-feed announcement) and their study's group commit; each C-STORE is answered once its own
instance is committed. A request takes the C-STOREs arriving while it is open: it closes (writes the series
documents of what it stored) once no C-STORE of it is in flight for IDLE_SECONDS, or after MAX_FILES files or
MAX_AGE_SECONDS, when the next C-STORE starts a new one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import BinaryIO

from dicom_core.storage.clients import Storage
from dicom_core.stow.response import StoreOutcome
from dicom_core.stow.service import FileRequest
from dimse_gateway.core_loop import API_VERSION

LOGGER = logging.getLogger(__name__)
# A modality's next C-STORE follows the answer to the last one within milliseconds: a request is kept open over
# that gap, and closed (its documents written, readers stop rebuilding them) soon after the sending stops.
IDLE_SECONDS = 0.5
MAX_FILES = 200
MAX_AGE_SECONDS = 5.0


class _Open:
    """A shared request and its C-STOREs: how many it took, how many are in flight, when the last one ended."""

    def __init__(self, request: FileRequest) -> None:
        self.request = request
        self.started = time.monotonic()
        self.files = 0
        self.in_flight = 0
        self.last_end = self.started

    def full(self) -> bool:
        """Whether the next C-STORE goes to a new request."""
        return self.files >= MAX_FILES or time.monotonic() - self.started >= MAX_AGE_SECONDS


class SharedStores:
    """The gateway's store requests (used on the core loop only): the open one, and those still closing."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._open: _Open | None = None
        self._closing: set[asyncio.Task[None]] = set()

    async def store(self, file: BinaryIO, size: int) -> StoreOutcome:
        """Store one received Part-10 file (an upsert: a re-sent instance replaces the old one); its outcome."""
        current = self._open
        if current is None or current.full():
            self._retire()
            current = self._open = _Open(FileRequest(self._storage, api_version=API_VERSION, upsert=True))
        current.files += 1
        current.in_flight += 1
        try:
            return await current.request.store(file, size)
        finally:
            current.in_flight -= 1
            current.last_end = time.monotonic()
            if current.in_flight == 0:
                if current is not self._open:
                    self._close(current)
                else:
                    asyncio.get_running_loop().call_later(IDLE_SECONDS, self._close_if_idle, current)

    async def close(self) -> None:
        """Close the open request and wait for every request still closing (before the storage closes)."""
        self._retire()
        while self._closing:
            await asyncio.gather(*self._closing)

    def _close_if_idle(self, current: _Open) -> None:
        if current is self._open and not current.in_flight and time.monotonic() - current.last_end >= IDLE_SECONDS:
            self._retire()

    def _retire(self) -> None:
        """No C-STORE joins the open request any more; it closes now, or when its last C-STORE ends."""
        current, self._open = self._open, None
        if current is not None and not current.in_flight:
            self._close(current)

    def _close(self, current: _Open) -> None:
        task = asyncio.create_task(self._closed(current.request))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _closed(request: FileRequest) -> None:
        try:
            await request.close()
        except Exception:
            LOGGER.warning("Closing a store request failed; readers rebuild its series documents", exc_info=True)
