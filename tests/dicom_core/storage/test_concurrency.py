"""The bounded gather (at most ``limit`` in flight, results in order) and the jittered backoff's delays."""

from __future__ import annotations

import asyncio

import pytest

from dicom_core.storage import concurrency
from dicom_core.storage.concurrency import bounded_gather, jittered_backoff


class _Counter:
    """Awaitables that record how many of them run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.most_running = 0

    async def value(self, value: int, *, fail: bool = False) -> int:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(0.001 * (value % 3))
            if fail:
                raise ValueError(value)
            return value
        finally:
            self.running -= 1


async def test_results_come_in_order_with_at_most_limit_in_flight() -> None:
    counter = _Counter()

    results = await bounded_gather((counter.value(value) for value in range(20)), limit=4)

    assert results == list(range(20))
    assert counter.most_running == 4


async def test_the_first_exception_is_raised() -> None:
    counter = _Counter()

    with pytest.raises(ValueError):
        await bounded_gather([counter.value(1), counter.value(2, fail=True)], limit=2)


async def test_exceptions_can_take_the_place_of_their_results() -> None:
    counter = _Counter()

    results = await bounded_gather([counter.value(1), counter.value(2, fail=True), counter.value(3)], limit=1,
                                   return_exceptions=True)

    assert results[0] == 1 and results[2] == 3
    assert isinstance(results[1], ValueError)


async def test_nothing_to_await_is_no_results() -> None:
    assert await bounded_gather([], limit=3) == []


@pytest.mark.parametrize(("attempt", "max_seconds", "bound"), [(0, 0.25, 0.005), (3, 0.25, 0.04), (10, 0.25, 0.25),
                                                              (10, 0.2, 0.2)])
async def test_the_backoff_waits_up_to_a_doubling_bound(
    monkeypatch: pytest.MonkeyPatch, attempt: int, max_seconds: float, bound: float,
) -> None:
    bounds: list[tuple[float, float]] = []
    waits: list[float] = []

    def uniform(low: float, high: float) -> float:
        bounds.append((low, high))
        return high

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(concurrency.random, "uniform", uniform)
    monkeypatch.setattr(concurrency.asyncio, "sleep", sleep)

    await jittered_backoff(attempt, max_seconds=max_seconds)

    assert bounds == [(0, pytest.approx(bound))]
    assert waits == [pytest.approx(bound)]
