"""The change feed's query string, validated with the messages of Azure's DICOM service.

``/v1/changefeed``: ``offset`` is a sequence number (entries after it), ``limit`` 1..100 (default 10).
``/v2/changefeed``: ``startTime`` (inclusive) and ``endTime`` (exclusive) must carry a time zone, ``offset``
counts entries inside that window, ``limit`` 1..200 (default 100). Both take ``includemetadata`` (default
true); ``/changefeed/latest`` takes only that. Names are case-insensitive and the first value of a repeated
parameter counts, as in ASP.NET Core's model binding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl

from dicom_core.model.epoch import to_micros
from dicom_core.model.errors import BadRequestError

V1_DEFAULT_LIMIT, V1_MAX_LIMIT = 10, 100
V2_DEFAULT_LIMIT, V2_MAX_LIMIT = 100, 200
MAX_OFFSET = 2**63 - 1
_MAX_INT32 = 2**31 - 1
_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*")
_FRACTION = re.compile(r"(\.[0-9]{6})([0-9]+)")
# A '+' of an unencoded UTC offset arrives as a space: "2023-05-03T10:58:00 02:00".
_SPACED_OFFSET = re.compile(r"^(.*[0-9]) ([0-9]{2}:?[0-9]{2})$")
_MIN_TEXT = "0001-01-01T00:00:00.0000000+00:00"
_MAX_TEXT = "9999-12-31T23:59:59.9999999+00:00"
# DateTimeOffset.MinValue and MaxValue (rounded up to whole µs), the bounds of a window without start or end.
_MIN_US = -62_135_596_800_000_000
_MAX_US = 253_402_300_800_000_000


@dataclass(frozen=True)
class ChangeFeedQuery:
    """A validated change feed request: v1 pages by sequence, v2 by position inside a time window (µs, UTC)."""

    api_version: int
    limit: int
    offset: int = 0
    include_metadata: bool = True
    start_us: int | None = None
    end_us: int | None = None

    @property
    def by_time(self) -> bool:
        """Whether entries are selected by time window (v2) rather than after a sequence number (v1)."""
        return self.api_version >= 2


def parse_feed_query(query_string: str, *, api_version: int) -> ChangeFeedQuery:
    """Parse the query string of ``GET /v{n}/changefeed``; raise BadRequestError with Azure's messages."""
    values = _values(query_string)
    include_metadata = _bool(values, "includeMetadata")
    if api_version < 2:
        return ChangeFeedQuery(
            api_version=api_version, include_metadata=include_metadata,
            offset=_integer(values, "offset", 0, 0, MAX_OFFSET, MAX_OFFSET),
            limit=_integer(values, "limit", V1_DEFAULT_LIMIT, 1, V1_MAX_LIMIT, _MAX_INT32),
        )
    start = _time(values, "StartTime")
    end = _time(values, "EndTime")
    offset = _integer(values, "Offset", 0, 0, MAX_OFFSET, MAX_OFFSET)
    limit = _integer(values, "Limit", V2_DEFAULT_LIMIT, 1, V2_MAX_LIMIT, _MAX_INT32)
    start_us, start_text = start or (_MIN_US, _MIN_TEXT)
    end_us, end_text = end or (_MAX_US, _MAX_TEXT)
    if end_us <= start_us:
        raise BadRequestError(f"The start time '{start_text}' must occur strictly before the end time '{end_text}'.")
    return ChangeFeedQuery(
        api_version=api_version, include_metadata=include_metadata, offset=offset, limit=limit,
        start_us=start[0] if start else None, end_us=end[0] if end else None,
    )


def parse_latest_query(query_string: str) -> bool:
    """Parse the query string of ``GET /v{n}/changefeed/latest``; return includemetadata."""
    return _bool(_values(query_string), "includeMetadata")


def _values(query_string: str) -> dict[str, str]:
    if "<" in query_string or "%3c" in query_string.lower():
        raise BadRequestError("The query string included invalid characters.")
    values: dict[str, str] = {}
    for key, value in parse_qsl(query_string, keep_blank_values=True):
        values.setdefault(key.strip().lower(), value)  # the first value counts
    return values


def _invalid(name: str, reason: str) -> BadRequestError:
    return BadRequestError(f"The query parameter '{name}' is invalid. {reason}")


def _bool(values: dict[str, str], name: str) -> bool:
    raw = values.get(name.lower())
    if raw is None:
        return True
    text = raw.strip().lower()
    if text in ("true", "false"):
        return text == "true"
    raise _invalid(name, f"The value '{raw}' is invalid." if not raw else f"The value '{raw}' is not valid for {name}.")


def _integer(values: dict[str, str], name: str, default: int, low: int, high: int, representable: int) -> int:
    raw = values.get(name.lower())
    if raw is None:
        return default
    if not raw:
        raise _invalid(name, "The value '' is invalid.")
    if not _INTEGER.fullmatch(raw) or not -representable - 1 <= int(raw) <= representable:
        raise _invalid(name, f"The value '{raw}' is not valid for {name}.")
    value = int(raw)
    if not low <= value <= high:
        raise _invalid(name, f"The field {name} must be between {low} and {high}.")
    return value


def _time(values: dict[str, str], name: str) -> tuple[int, str] | None:
    """Microseconds since 1970 (rounded up: bounds compare with whole µs) and the .NET round-trip text."""
    raw = values.get(name.lower())
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    spaced = _SPACED_OFFSET.match(text)
    if spaced and "T" in text:
        text = f"{spaced.group(1)}+{spaced.group(2)}"
    extra = _FRACTION.search(text)
    round_up = bool(extra and extra.group(2).strip("0"))
    if extra:
        text = text[: extra.start()] + extra.group(1) + text[extra.end():]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _invalid(name, f"The value '{raw}' is not valid for {name}.") from None
    if moment.tzinfo is None:
        raise _invalid(name, "Date and time value must specify a time zone.")
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:
        raise _invalid(name, f"The value '{raw}' is not valid for {name}.") from None
    return to_micros(utc) + (1 if round_up else 0), _round_trip_text(utc)


def _round_trip_text(moment: datetime) -> str:
    """.NET's "O" format of a UTC DateTimeOffset: seven fraction digits and +00:00."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0+00:00"
