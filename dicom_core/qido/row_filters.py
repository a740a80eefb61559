"""Required matching keys no index serves (PS3.18 Table 10.6.1-5): matched on the attributes of the rows the
candidates read, as any filter beside the one an index serves, so they add no index entries to a store.

Times (TM) are matched by range (PS3.4 C.2.2.2.5), each bound at its own precision: ``1030-1100`` matches
10:30:00 through 11:00:59.999999. Integer strings (IS) are compared as numbers. Within a study or series the
answer is exact; a search with only such keys may stop at the scan budget.
"""

from __future__ import annotations

import re

from pydicom.datadict import dictionary_keyword
from pydicom.tag import BaseTag

from dicom_core.model.errors import BadRequestError
from dicom_core.model.levels import Level, tags_for_keywords

# By level: the keys of Table 10.6.1-5 that each level's row keeps and no index serves.
ROW_FILTER_TAGS: dict[Level, tuple[BaseTag, ...]] = {
    Level.STUDY: tags_for_keywords("StudyTime", "StudyID"),
    Level.SERIES: tags_for_keywords("SeriesNumber", "PerformedProcedureStepStartTime"),
    Level.INSTANCE: tags_for_keywords("SOPClassUID", "InstanceNumber"),
}
ROW_FILTERED = frozenset(tag for tags in ROW_FILTER_TAGS.values() for tag in tags)
# HH, HHMM, HHMMSS or HHMMSS.F{1,6} (colons of the old ACR-NEMA form are dropped before).
_TIME = re.compile(r"([01][0-9]|2[0-3])([0-5][0-9]([0-5][0-9](\.[0-9]{1,6})?)?)?")


def parse_time_range(tag: BaseTag, value: str) -> tuple[str | None, str | None]:
    """The bounds of a TM filter, a single time or a range (``a-b``, ``a-``, ``-b``); 400 when invalid."""
    parts = [part.strip().replace(":", "") for part in value.split("-")]
    if len(parts) == 1:
        _check_time(tag, parts[0])
        return parts[0], parts[0]
    if len(parts) != 2 or not any(parts):
        raise BadRequestError(f"Invalid query: specified time range '{value}' is invalid.")
    low, high = (part or None for part in parts)
    for bound in (low, high):
        if bound is not None:
            _check_time(tag, bound)
    if low is not None and high is not None and low[:len(high)] > high:
        raise BadRequestError(f"Invalid query: specified time range '{value}' is invalid. "
                              f"The first part time {low} should be lesser than or equal to the second part {high}.")
    return low, high


def time_in_range(value: str, low: str | None, high: str | None) -> bool:
    """Tell whether a stored time lies within the bounds, each compared at its own precision."""
    time = value.strip().replace(":", "")
    return (low is None or time[:len(low)] >= low) and (high is None or time[:len(high)] <= high)


def same_number(value: str, wanted: str) -> bool:
    """Tell whether two integer strings name the same number (`05` is `5`); else compare the text."""
    try:
        return int(value) == int(wanted)
    except ValueError:
        return value.strip() == wanted.strip()


def _check_time(tag: BaseTag, value: str) -> None:
    if not _TIME.fullmatch(value):
        raise BadRequestError(
            f"Invalid query: specified Time value '{value}' is invalid for attribute '{dictionary_keyword(tag)}'. "
            "Time should be valid and formatted as HHmmss.FFFFFF (or a leading part of it).")
