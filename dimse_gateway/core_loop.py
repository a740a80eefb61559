"""The core services' event loop: pynetdicom runs each association in a thread of its own, dicom_core is async.

One loop in one thread holds the storage clients; an association's thread runs a coroutine on it and waits.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from dicom_core.settings import Settings
from dicom_core.storage.clients import Storage, open_storage
from dicom_core.wire.api_version import SUPPORTED_VERSIONS

T = TypeVar("T")
# The API version whose rules the gateway stores and searches by: the newest, whose validation is lenient (what a
# modality sends is stored unless the index cannot hold it).
API_VERSION = max(SUPPORTED_VERSIONS)


class CoreLoop:
    """An event loop thread with the storage of ``settings`` opened on it."""

    def __init__(self, settings: Settings) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="dimse-core-loop", daemon=True)
        self._thread.start()
        try:
            self.storage: Storage = self.run(open_storage(settings))
        except BaseException:
            self._stop()
            raise

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop and wait for its result (from any thread but the loop's)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self) -> None:
        """Close the storage clients and stop the loop."""
        try:
            self.run(self.storage.close())
        finally:
            self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
