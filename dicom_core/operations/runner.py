"""Running operations: each type's handler does one bounded chunk per call; the runner saves its checkpoint.

A worker claims an operation with a lease (ETag-guarded), then calls the handler of its type with the last
saved checkpoint, saves what the handler returns (ETag-guarded again, renewing the lease), pauses, and goes
on until the operation is done or the worker's time budget is spent. A worker killed mid-chunk leaves the
checkpoint of the last chunk it saved: when its lease runs out, the next worker redoes that one chunk only,
so handlers write idempotently (same keys, same values) and count from the checkpoint, never twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import ResourceModifiedError

from dicom_core.operations.records import Operation, OperationStatus, save_operation, unfinished_operations
from dicom_core.storage.clients import Storage
from dicom_core.storage.concurrency import jittered_backoff
from dicom_core.storage.faults import is_storage_unavailable

LOGGER = logging.getLogger(__name__)

# A worker holds an operation this long past its last saved chunk; a chunk must take less.
LEASE_SECONDS = 60.0
# Between two chunks the worker sleeps this long, so concurrent stores and searches keep their pace.
PAUSE_SECONDS = 0.5
# One run of the timer works at most this long (the Functions timeout is 10 minutes).
BUDGET_SECONDS = 240.0
# A chunk that storage fails (unreachable, 5xx) is retried this many times in a row before the operation fails.
MAX_OUTAGES = 5


@dataclass(frozen=True)
class Step:
    """What a handler did in one chunk: the checkpoint to resume from, progress, and whether it is done."""

    checkpoint: dict[str, Any]
    percent_complete: int
    done: bool = False
    failed: bool = False
    results: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[Storage, Operation], Awaitable[Step]]
_handlers: dict[str, Handler] = {}


def register_handler(type_: str, handler: Handler) -> None:
    """Make ``handler`` the one that works operations of ``type_`` (a feature registers its own at import)."""
    _handlers[type_] = handler


def worker_name() -> str:
    """This process's name as a lease owner: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Pace:
    """How a worker paces itself: the lease it holds, the pause between chunks, the time it works at most."""

    lease_seconds: float = LEASE_SECONDS
    pause_seconds: float = PAUSE_SECONDS
    budget_seconds: float = BUDGET_SECONDS


async def run_operations(storage: Storage, *, worker: str | None = None, pace: Pace = Pace()) -> int:
    """Work the unfinished operations, oldest first, within the pace's budget; how many chunks were done."""
    worker = worker or worker_name()
    deadline = time.monotonic() + pace.budget_seconds
    chunks = 0
    for operation in await unfinished_operations(storage):
        if time.monotonic() >= deadline:
            break
        if operation.type not in _handlers:
            LOGGER.warning("Operation %s has type %r, which no handler works", operation.id, operation.type)
            continue
        claimed = await _claim(storage, operation, worker, pace)
        if claimed is not None:
            chunks += await _work(storage, claimed, pace, deadline)
    return chunks


_background: set[asyncio.Task[int]] = set()


def run_in_background(storage: Storage) -> None:
    """Start working the unfinished operations in this process now (the request that created one need not wait for
    the timer); a run already going in this process is enough."""
    if any(not task.done() for task in _background):
        return
    task = asyncio.ensure_future(_run_logged(storage))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _run_logged(storage: Storage) -> int:
    try:
        return await run_operations(storage)
    except Exception:
        LOGGER.exception("Working the operations in the background failed")
        return 0


async def _claim(storage: Storage, operation: Operation, worker: str, pace: Pace) -> Operation | None:
    now = datetime.now(UTC)
    if operation.lease_owner not in ("", worker) and operation.lease_until and operation.lease_until > now:
        return None  # another worker holds it
    try:
        return await save_operation(storage, replace(
            operation, status=OperationStatus.RUNNING, lease_owner=worker,
            lease_until=now + timedelta(seconds=pace.lease_seconds)))
    except ResourceModifiedError:
        return None  # another worker claimed it first


async def _work(storage: Storage, operation: Operation, pace: Pace, deadline: float) -> int:
    handler, chunks, outages = _handlers[operation.type], 0, 0
    while time.monotonic() < deadline:
        try:
            step = await handler(storage, operation)
            outages = 0
        except Exception as exc:
            if is_storage_unavailable(exc) and outages < MAX_OUTAGES:
                # Storage did not answer (the SDK retried already): the chunk is redone from its checkpoint.
                outages += 1
                LOGGER.warning("Operation %s: storage unavailable (%s); retrying its chunk", operation.id, exc)
                await jittered_backoff(outages, max_seconds=10.0)
                continue
            LOGGER.exception("Operation %s failed", operation.id)
            step = Step(operation.checkpoint, operation.percent_complete, done=True, failed=True)
        status = (OperationStatus.FAILED if step.failed else OperationStatus.SUCCEEDED) if step.done \
            else OperationStatus.RUNNING
        try:
            operation = await save_operation(storage, replace(
                operation, status=status, checkpoint=step.checkpoint, results=step.results or operation.results,
                percent_complete=100 if step.done and not step.failed else min(step.percent_complete, 99),
                lease_until=datetime.now(UTC) + timedelta(seconds=pace.lease_seconds)))
        except ResourceModifiedError:
            LOGGER.warning("Operation %s was taken over by another worker", operation.id)
            return chunks
        chunks += 1
        if step.done:
            return chunks
        await asyncio.sleep(pace.pause_seconds)
    return chunks
