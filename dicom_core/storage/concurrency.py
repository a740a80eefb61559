"""Many storage requests at once, a bounded number in flight; and the jittered wait before retrying a lost race."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Iterable
from typing import Literal, TypeVar, overload

T = TypeVar("T")

# Retries after a lost race (an ETag changed, a row created meanwhile) wait up to BACKOFF_BASE_SECONDS * 2**attempt.
BACKOFF_BASE_SECONDS = 0.005
MAX_BACKOFF_SECONDS = 0.25


@overload
async def bounded_gather(
    awaitables: Iterable[Awaitable[T]], *, limit: int, return_exceptions: Literal[False] = False,
) -> list[T]: ...


@overload
async def bounded_gather(
    awaitables: Iterable[Awaitable[T]], *, limit: int, return_exceptions: Literal[True],
) -> list[T | Exception]: ...


async def bounded_gather(
    awaitables: Iterable[Awaitable[T]], *, limit: int, return_exceptions: bool = False,
) -> list[T] | list[T | Exception]:
    """Await ``awaitables`` with at most ``limit`` in flight; their results in order.

    The first exception is raised (the others keep running, as with `asyncio.gather`); with
    ``return_exceptions`` each failed awaitable's exception takes the place of its result instead.
    """
    slots = asyncio.Semaphore(limit)

    async def run(awaitable: Awaitable[T]) -> T | Exception:
        async with slots:
            if not return_exceptions:
                return await awaitable
            try:
                return await awaitable
            except Exception as exc:  # the caller asked for it in the result's place
                return exc

    return list(await asyncio.gather(*(run(awaitable) for awaitable in awaitables)))


async def jittered_backoff(attempt: int, *, max_seconds: float = MAX_BACKOFF_SECONDS) -> None:
    """Wait a random time up to ``BACKOFF_BASE_SECONDS * 2**attempt`` (at most ``max_seconds``): racing writers part."""
    await asyncio.sleep(random.uniform(0, min(max_seconds, BACKOFF_BASE_SECONDS * 2**attempt)))
