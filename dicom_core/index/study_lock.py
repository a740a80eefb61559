"""Each process's lock of a study: its writers read the study's rows and commit one after another."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from dicom_core.storage.clients import Storage


@contextlib.asynccontextmanager
async def study_lock(storage: Storage, study: str) -> AsyncIterator[None]:
    """Hold this process's lock of a study while reading its rows and committing a transaction computed from them.

    Writers of one process into one study would only race each other for the study row's ETag (and retry);
    queued, each commits at the first try. Writers in other processes still meet the ETag condition.
    """
    key = (id(asyncio.get_running_loop()), storage.studies.url, storage.studies.table_name, study)
    entry = _study_locks.setdefault(key, _StudyLock())
    entry.users += 1
    try:
        async with entry.lock:
            yield
    finally:
        entry.users -= 1
        if entry.users == 0:
            del _study_locks[key]


@dataclass
class _StudyLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


_study_locks: dict[tuple[int, str, str, str], _StudyLock] = {}
