"""Running the timer-triggered functions of a FunctionApp on their NCRONTAB schedules, as `func start` does.

Schedules have the six fields of Azure Functions' NCRONTAB: second, minute, hour, day, month, day of week.
Each field is `*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, or a comma list of those (no month or day
names). Times are UTC (the Functions host's default). A day-of-month and a day-of-week field both restricted
must both match. A schedule may name an app setting, ``%NAME%``, resolved from the environment as the host
resolves it from the app settings (an unset one is an error, as there).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from azure.functions.decorators.timer import TimerTrigger
from azure.functions.timer import TimerRequest

from local_host.functions import registered_functions

logger = logging.getLogger(__name__)

# (lowest, highest) of each field, in order.
_FIELDS = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_SETTING = re.compile(r"%([A-Za-z0-9_.:-]+)%")
_SEARCH_DAYS = 366 * 8  # far enough for any schedule that has a next occurrence (Feb 29 on a given weekday)


@dataclass(frozen=True)
class Schedule:
    """A parsed six-field NCRONTAB expression."""

    expression: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday

    def next_after(self, moment: datetime) -> datetime:
        """The first time strictly after ``moment`` (an aware datetime) that the schedule names, in UTC."""
        start = moment.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
        day = start.date()
        for _ in range(_SEARCH_DAYS):
            if self._matches_day(day):
                earliest = start.timetz() if day == start.date() else time(tzinfo=UTC)
                found = self._first_time_from(earliest)
                if found is not None:
                    return datetime.combine(day, found)
            day += timedelta(days=1)
        raise ValueError("The schedule names no time in the next years")

    def _matches_day(self, day: date) -> bool:
        return day.month in self.months and day.day in self.days and day.isoweekday() % 7 in self.weekdays

    def _first_time_from(self, earliest: time) -> time | None:
        for hour in self.hours:
            if hour < earliest.hour:
                continue
            for minute in self.minutes:
                if (hour, minute) < (earliest.hour, earliest.minute):
                    continue
                for second in self.seconds:
                    candidate = time(hour, minute, second, tzinfo=UTC)
                    if candidate >= earliest:
                        return candidate
        return None


def parse_schedule(expression: str) -> Schedule:
    """Parse a six-field NCRONTAB expression; ValueError names what is not supported."""
    fields = expression.split()
    if len(fields) != len(_FIELDS):
        raise ValueError(f"NCRONTAB {expression!r} must have six fields (second minute hour day month day-of-week)")
    values = [_parse_field(text, low, high, expression) for text, (low, high) in zip(fields, _FIELDS, strict=True)]
    weekdays = frozenset(v % 7 for v in values[5])
    return Schedule(expression, tuple(sorted(values[0])), tuple(sorted(values[1])), tuple(sorted(values[2])),
                    frozenset(values[3]), frozenset(values[4]), weekdays)


def _parse_field(text: str, low: int, high: int, expression: str) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        span, _, step_text = item.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if span == "*":
                first, last = low, high
            elif "-" in span:
                first, last = (int(part) for part in span.split("-", 1))
            else:
                first = int(span)
                last = high if step_text else first
        except ValueError as exc:
            raise ValueError(f"NCRONTAB {expression!r}: {item!r} is not supported (numbers, ranges, steps)") from exc
        top = 7 if (low, high) == (0, 6) else high  # day of week 7 is Sunday too
        if step <= 0 or not low <= first <= last <= top:
            raise ValueError(f"NCRONTAB {expression!r}: {item!r} is outside {low}-{high}")
        values.update(range(first, last + 1, step))
    return values


@dataclass(frozen=True)
class TimerFunction:
    """One timer-triggered function: its name, schedule and handler, and the name of its TimerRequest argument."""

    name: str
    schedule: Schedule
    handler: Callable[..., Any]
    argument: str
    run_on_startup: bool = False


def resolve_settings(expression: str, environ: Mapping[str, str] = os.environ) -> str:
    """Replace each ``%NAME%`` of a binding expression by the app setting's value (ValueError when unset)."""

    def value(match: re.Match[str]) -> str:
        if match.group(1) not in environ:
            raise ValueError(f"{expression!r} names the app setting {match.group(1)}, which is not set")
        return environ[match.group(1)]

    return _SETTING.sub(value, expression)


def timer_functions(function_app: Any, environ: Mapping[str, str] = os.environ) -> list[TimerFunction]:
    """Return the timer-triggered functions of ``function_app``, their schedules' app settings resolved."""
    found = []
    for function in registered_functions(function_app):
        trigger = function.get_trigger()
        if isinstance(trigger, TimerTrigger):
            found.append(TimerFunction(
                name=function.get_function_name(), schedule=parse_schedule(resolve_settings(trigger.schedule, environ)),
                handler=function.get_user_function(), argument=trigger.name,
                run_on_startup=bool(trigger.run_on_startup),
            ))
    return found


async def invoke(timer: TimerFunction, *, past_due: bool = False) -> None:
    """Call a timer function once, logging (not raising) what it raises, as the Functions host does."""
    logger.info("Timer %s: running", timer.name)
    try:
        result = timer.handler(**{timer.argument: TimerRequest(past_due=past_due)})
        if inspect.isawaitable(result):
            await result
    except Exception:
        logger.exception("Timer %s failed", timer.name)


async def run_timers(timers: list[TimerFunction], clock: Callable[[], datetime] | None = None) -> None:
    """Run every timer on its schedule until cancelled; one run of a timer at a time, a missed beat is skipped."""
    now = clock or (lambda: datetime.now(UTC))

    async def run(timer: TimerFunction) -> None:
        if timer.run_on_startup:
            await invoke(timer)
        while True:
            moment = now()
            due = timer.schedule.next_after(moment)
            await asyncio.sleep(max(0.0, (due - moment).total_seconds()))
            await invoke(timer, past_due=(now() - due).total_seconds() > 1)

    for timer in timers:
        logger.info("%s: timer on %r (UTC)", timer.name, timer.schedule.expression)
    await asyncio.gather(*(run(timer) for timer in timers))
