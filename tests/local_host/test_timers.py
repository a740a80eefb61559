"""Timer functions in the local host: NCRONTAB schedules, discovery on the FunctionApp, and running them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import azure.functions as func
import pytest

from local_host.timers import TimerFunction, parse_schedule, resolve_settings, run_timers, timer_functions

UTC = UTC


@pytest.mark.parametrize(("expression", "after", "expected"), [
    ("0 */5 * * * *", datetime(2024, 1, 1, 10, 3, 7, tzinfo=UTC), datetime(2024, 1, 1, 10, 5, tzinfo=UTC)),
    ("0 */5 * * * *", datetime(2024, 1, 1, 10, 5, tzinfo=UTC), datetime(2024, 1, 1, 10, 10, tzinfo=UTC)),
    ("0 */5 * * * *", datetime(2024, 12, 31, 23, 59, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)),
    ("*/10 * * * * *", datetime(2024, 1, 1, 0, 0, 55, tzinfo=UTC), datetime(2024, 1, 1, 0, 1, tzinfo=UTC)),
    ("0 30 9 * * 1-5", datetime(2024, 1, 5, 10, tzinfo=UTC), datetime(2024, 1, 8, 9, 30, tzinfo=UTC)),
    ("0 0 12 * * 0,7", datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 7, 12, tzinfo=UTC)),
    ("0 0 0 29 2 *", datetime(2024, 3, 1, tzinfo=UTC), datetime(2028, 2, 29, tzinfo=UTC)),
    ("15,45 10-12/2 * * * *", datetime(2024, 1, 1, 0, 10, 20, tzinfo=UTC), datetime(2024, 1, 1, 0, 10, 45, tzinfo=UTC)),
])
def test_next_occurrence_of_a_schedule(expression: str, after: datetime, expected: datetime) -> None:
    assert parse_schedule(expression).next_after(after) == expected


@pytest.mark.parametrize("expression",
                         ["0 */5 * * *", "0 */5 * * * * *", "0 61 * * * *", "0 * * * JAN *", "0 */0 * * * *"])
def test_unsupported_or_malformed_schedule_is_refused(expression: str) -> None:
    with pytest.raises(ValueError):
        parse_schedule(expression)


def test_timer_functions_of_the_app_are_found_with_their_schedule() -> None:
    app = func.FunctionApp()

    @app.timer_trigger(schedule="0 */5 * * * *", arg_name="timer")
    async def tick(timer: func.TimerRequest) -> None:
        """A demo timer."""

    @app.route(route="ping")
    async def ping(req):  # type: ignore[no-untyped-def]
        """A demo HTTP function (not a timer)."""

    [timer] = timer_functions(app)
    assert (timer.name, timer.argument, timer.schedule.expression) == ("tick", "timer", "0 */5 * * * *")


def test_a_schedule_naming_an_app_setting_takes_its_value() -> None:
    app = func.FunctionApp()

    @app.timer_trigger(schedule="%TICK_SCHEDULE%", arg_name="timer")
    async def tick(timer: func.TimerRequest) -> None:
        """A demo timer on a schedule from an app setting."""

    [timer] = timer_functions(app, {"TICK_SCHEDULE": "0 0 * * * *"})
    assert timer.schedule.expression == "0 0 * * * *"


def test_a_schedule_naming_an_unset_app_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="UNSET_SCHEDULE"):
        resolve_settings("%UNSET_SCHEDULE%", {})


async def test_a_due_timer_is_called_with_a_timer_request() -> None:
    called: asyncio.Queue[func.TimerRequest] = asyncio.Queue()

    async def handler(timer: func.TimerRequest) -> None:
        await called.put(timer)

    timer = TimerFunction("every_second", parse_schedule("* * * * * *"), handler, "timer")
    runner = asyncio.create_task(run_timers([timer]))
    try:
        request = await asyncio.wait_for(called.get(), timeout=30)
    finally:
        runner.cancel()
    assert isinstance(request, func.TimerRequest)


async def test_a_failing_timer_keeps_its_schedule() -> None:
    calls: asyncio.Queue[int] = asyncio.Queue()

    def handler(timer: func.TimerRequest) -> None:
        calls.put_nowait(1)
        raise RuntimeError("a failing run")

    timer = TimerFunction("failing", parse_schedule("* * * * * *"), handler, "timer", run_on_startup=True)
    runner = asyncio.create_task(run_timers([timer]))
    try:
        received = [await asyncio.wait_for(calls.get(), timeout=30) for _ in range(2)]  # at startup, then on time
    finally:
        runner.cancel()
    assert received == [1, 1]
