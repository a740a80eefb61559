"""Values of extended query tags: checking a stored value against its VR, its index form, and parsing a filter.

The index form of a value is what its entry's key holds: strings trimmed, accent-stripped and upper-cased
(matching is case-insensitive), person names folded with their words apart (fuzzy matching), numbers in a
canonical text, dates and times as written (their text order is their time order, so ranges are key ranges).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import math
import re
from dataclasses import dataclass
from typing import Any

from dicom_core.model.dicom_json import PN_GROUPS
from dicom_core.model.errors import BadRequestError
from dicom_core.model.text import fold, fold_person_name, name_words, trim

# The VRs an extended query tag may have (Azure's list).
SUPPORTED_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "PN", "SH", "SL", "SS",
                           "TM", "UI", "UL", "US"})
RANGE_VRS = frozenset({"DA", "DT", "TM"})
INTEGER_RANGES = {"IS": (-(2**31), 2**31 - 1), "SL": (-(2**31), 2**31 - 1), "SS": (-(2**15), 2**15 - 1),
                  "UL": (0, 2**32 - 1), "US": (0, 2**16 - 1)}
FLOAT_VRS = frozenset({"DS", "FL", "FD"})
NUMERIC_VRS = frozenset(INTEGER_RANGES) | FLOAT_VRS
# Strings where '*' and '?' are wildcards in a filter (not dates, times, numbers, UIDs).
WILDCARD_VRS = frozenset({"AE", "AS", "CS", "LO", "PN", "SH"})
_MAX_CHARS = {"AE": 16, "AS": 4, "CS": 16, "DS": 16, "IS": 12, "LO": 64, "SH": 16, "UI": 64, "DT": 26, "TM": 14}
_PATTERNS = {
    "AS": re.compile(r"\d{3}[DWMY]"),
    "CS": re.compile(r"[A-Z0-9 _]*"),
    "UI": re.compile(r"[0-9]+(\.[0-9]+)*"),
    "DA": re.compile(r"\d{8}"),
    "DT": re.compile(r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?"),
    "TM": re.compile(r"(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?"),
}


class InvalidValueError(ValueError):
    """A stored value that does not fit its VR; the message is what the errors list shows."""


@dataclass(frozen=True)
class IndexValue:
    """The index form of one stored value: the text its entry is keyed by, and for a person name its words."""

    text: str
    words: tuple[str, ...] = ()


def index_value(vr: str, value: Any) -> IndexValue:
    """Check the first value of an element (from DICOM JSON) against ``vr`` and return its index form."""
    if vr == "PN":
        groups = value if isinstance(value, dict) else {"Alphabetic": str(value)}
        for group in PN_GROUPS:
            if len(str(groups.get(group) or "")) > 64:
                raise InvalidValueError(f"Value exceeds the maximum length of 64 for the {group} group of VR PN.")
        alphabetic = next((str(groups[g]) for g in PN_GROUPS if groups.get(g)), "")
        return IndexValue(fold_person_name(alphabetic), tuple(name_words(alphabetic)))
    if vr in NUMERIC_VRS:
        return IndexValue(canonical_number(vr, value))
    text = trim(str(value))
    if len(text) > _MAX_CHARS.get(vr, 64):
        raise InvalidValueError(f"Value length {len(text)} exceeds the maximum length of {_MAX_CHARS.get(vr, 64)} "
                                f"allowed for VR {vr}.")
    if "\\" in text or any(ord(char) < 32 for char in text):
        raise InvalidValueError(f"Value contains invalid character for VR {vr}.")
    pattern = _PATTERNS.get(vr)
    if pattern is not None and not pattern.fullmatch(text):
        raise InvalidValueError(f"Value '{text}' is not a valid {vr} value.")
    if vr == "DA" or vr == "DT" or vr == "TM":
        _check_moment(vr, text)
        return IndexValue(text)
    return IndexValue(text if vr == "UI" else fold(text))


def canonical_number(vr: str, value: Any) -> str:
    """The canonical text of a numeric value (InvalidValueError when it is no number of ``vr``)."""
    try:
        if vr in INTEGER_RANGES:
            number = int(trim(value) if isinstance(value, str) else value)
            low, high = INTEGER_RANGES[vr]
            if not low <= number <= high:
                raise InvalidValueError(f"Value '{number}' is out of the range of VR {vr}.")
            return str(number)
        real = float(trim(value) if isinstance(value, str) else value)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, InvalidValueError):
            raise
        raise InvalidValueError(f"Value '{value}' is not a valid {vr} value.") from exc
    if not math.isfinite(real):
        raise InvalidValueError(f"Value '{value}' is not a valid {vr} value.")
    return repr(real)


def _check_moment(vr: str, text: str) -> None:
    try:
        if vr == "DA":
            dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
        elif vr == "DT" and len(text) >= 8:
            dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
        elif vr == "TM":
            hours, minutes, seconds = int(text[:2]), int(text[2:4] or 0), int(text[4:6] or 0)
            if hours > 23 or minutes > 59 or seconds > 60:
                raise ValueError
    except ValueError as exc:
        raise InvalidValueError(f"Value '{text}' is not a valid {vr} value.") from exc


@dataclass(frozen=True)
class ExtendedFilter:
    """A parsed filter on an extended tag: exact values (several for a UID list), a range, a wildcard, or words."""

    exact: tuple[str, ...] = ()
    low: str | None = None  # a range: low and high inclusive; None is open
    high: str | None = None
    is_range: bool = False
    pattern: str | None = None  # an fnmatch pattern over the index form
    words: tuple[str, ...] = ()  # fuzzy person-name matching: every word a prefix of a word of the name

    @property
    def prefix(self) -> str:
        """The text every match of the wildcard pattern starts with."""
        return re.split(r"[*?\[]", self.pattern or "", maxsplit=1)[0]

    def matches_pattern(self, text: str) -> bool:
        """True when ``text`` (an index form) matches the wildcard pattern."""
        return self.pattern is None or fnmatch.fnmatchcase(text, self.pattern)


def parse_filter(vr: str, name: str, text: str, *, fuzzy: bool = False) -> ExtendedFilter:
    """Parse the value of ``name={text}`` on a tag of ``vr`` (400 when the value does not fit the VR)."""
    text = trim(text)
    if not text:
        raise BadRequestError(f"AttributeId '{name}' has empty string value that is not supported.")
    if vr == "PN" and fuzzy:
        if '"' in text:
            raise BadRequestError(f"Invalid query: the value of AttributeId '{name}' contains '\"'.")
        return ExtendedFilter(words=tuple(name_words(text)))
    if vr in RANGE_VRS and "-" in text.lstrip("+-")[1:] or (vr in RANGE_VRS and text.startswith("-")):
        return _range_filter(vr, name, text)
    if vr in WILDCARD_VRS and ("*" in text or "?" in text):
        folded = fold_person_name(text) if vr == "PN" else fold(text)
        return ExtendedFilter(pattern=folded.replace("[", "[[]"))
    if vr == "UI" and "," in text:
        return ExtendedFilter(exact=tuple(_exact(vr, name, part) for part in text.split(",")))
    return ExtendedFilter(exact=(_exact(vr, name, text),))


def _exact(vr: str, name: str, text: str) -> str:
    try:
        return index_value(vr, text).text
    except InvalidValueError as exc:
        raise BadRequestError(f"Invalid query: the value of AttributeId '{name}' is not valid: {exc}") from exc


def _range_filter(vr: str, name: str, text: str) -> ExtendedFilter:
    cut = text.index("-", 1) if not text.startswith("-") else 0
    low, high = text[:cut].strip(), text[cut + 1:].strip()
    if not low and not high:
        raise BadRequestError(f"Invalid query: the range of AttributeId '{name}' names no bound.")
    low_key = _exact(vr, name, low) if low else None
    high_key = _exact(vr, name, high) if high else None
    if low_key is not None and high_key is not None and low_key > high_key:
        raise BadRequestError(f"Invalid query: the range of AttributeId '{name}' starts after it ends.")
    return ExtendedFilter(low=low_key, high=high_key, is_range=True)
