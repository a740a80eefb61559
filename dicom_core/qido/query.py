"""The QIDO-RS query string: decoded the way clients encode it, validated with Azure's messages, parsed once.

Filters name an attribute by keyword (case-sensitive) or by 8-hex tag. Matching, as in Azure's DICOM service:
exact (case-insensitive; person names also accent-insensitive), DA ranges and, with ``fuzzymatching=true``,
prefix matching on the words of person names. Beyond Azure, as the standard and OHIF expect: wildcards
``*``/``?`` on strings and names, and UID lists (``a\\b`` or ``a,b``).
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from enum import Enum
from urllib.parse import parse_qsl

from pydicom.datadict import dictionary_keyword, dictionary_VR, tag_for_keyword
from pydicom.tag import BaseTag

from dicom_core.model.errors import BadRequestError
from dicom_core.model.levels import QUERYABLE, Level
from dicom_core.model.tags import MODALITIES_IN_STUDY
from dicom_core.model.text import trim
from dicom_core.model.uids import is_valid_uid, normalize_uid

DEFAULT_LIMIT = 100
MAX_LIMIT = 200
WILDCARDS = frozenset("*?")
_HEX_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_DATE = re.compile(r"[0-9]{8}")
_UID_LIST_SEPARATORS = re.compile(r"[\\,]")
_INCLUDE_ALL = "all"

# The attributes each level can be filtered on: Azure's core list (ModalitiesInStudy is computed, not stored).
FILTER_TAGS: dict[Level, tuple[BaseTag, ...]] = {
    Level.STUDY: (*QUERYABLE[Level.STUDY], MODALITIES_IN_STUDY),
    Level.SERIES: QUERYABLE[Level.SERIES],
    Level.INSTANCE: QUERYABLE[Level.INSTANCE],
}
_LEVEL_OF = {tag: level for level, tags in FILTER_TAGS.items() for tag in tags}


class QidoResource(Enum):
    """The six search resources, each with the levels its filters may name and the level of its results."""

    ALL_STUDIES = ((Level.STUDY,), Level.STUDY)
    ALL_SERIES = ((Level.STUDY, Level.SERIES), Level.SERIES)
    ALL_INSTANCES = ((Level.STUDY, Level.SERIES, Level.INSTANCE), Level.INSTANCE)
    STUDY_SERIES = ((Level.SERIES,), Level.SERIES)
    STUDY_INSTANCES = ((Level.SERIES, Level.INSTANCE), Level.INSTANCE)
    STUDY_SERIES_INSTANCES = ((Level.INSTANCE,), Level.INSTANCE)

    @property
    def filter_levels(self) -> tuple[Level, ...]:
        """Levels whose attributes may be filtered on."""
        levels: tuple[Level, ...] = self.value[0]
        return levels

    @property
    def result_level(self) -> Level:
        """Level of each result."""
        level: Level = self.value[1]
        return level


class MatchKind(Enum):
    """How a filter value is compared with stored values."""

    EXACT = "exact"
    WILDCARD = "wildcard"
    FUZZY = "fuzzy"
    RANGE = "range"
    ANY_OF = "any-of"


@dataclass(frozen=True)
class Condition:
    """One filter: an attribute, a match kind, and its value(s) or date bounds (``yyyymmdd``, inclusive)."""

    tag: BaseTag
    kind: MatchKind
    values: tuple[str, ...] = ()
    low: str | None = None
    high: str | None = None

    @property
    def level(self) -> Level:
        """Level the attribute belongs to."""
        return _LEVEL_OF[self.tag]

    @property
    def vr(self) -> str:
        """The attribute's VR."""
        return "CS" if self.tag == MODALITIES_IN_STUDY else dictionary_VR(self.tag)

    @property
    def value(self) -> str:
        """The single value of an exact, wildcard or fuzzy condition."""
        return self.values[0]


@dataclass(frozen=True)
class QidoQuery:
    """A validated search: resource, scope from the URL, filters, return attributes and the page asked for."""

    resource: QidoResource
    api_version: int
    conditions: tuple[Condition, ...] = ()
    include_fields: tuple[BaseTag, ...] = ()
    include_all: bool = False
    fuzzy: bool = False
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    study_uid: str | None = None
    series_uid: str | None = None

    def condition(self, tag: BaseTag) -> Condition | None:
        """Return the filter on ``tag``, if any."""
        return next((c for c in self.conditions if c.tag == tag), None)


def parse_query(
    resource: QidoResource, query_string: str, *, api_version: int, study_uid: str | None = None,
    series_uid: str | None = None,
) -> QidoQuery:
    """Parse a raw (still percent-encoded) query string; raise BadRequestError with Azure's messages."""
    if "<" in query_string or "%3c" in query_string.lower():
        raise BadRequestError("The query string included invalid characters.")
    options: dict[str, str] = {}
    include: list[str] = []
    filters: dict[str, str] = {}
    # parse_qsl decodes the way dicomweb-client encodes (quote_plus): '+' is a space, %5E is '^'.
    for raw_key, raw_value in parse_qsl(query_string, keep_blank_values=True):
        key = raw_key.strip()
        name = key.lower()
        if name == "includefield":
            include.extend(part.strip() for part in raw_value.split(",") if part.strip())
        elif name in ("limit", "offset", "fuzzymatching"):
            if name in options:
                raise BadRequestError(_duplicate_message(key))
            options[name] = raw_value.strip()
        elif key:
            if key in filters:
                raise BadRequestError(_duplicate_message(key))
            filters[key] = raw_value
    fuzzy = _parse_bool(options.get("fuzzymatching"), "FuzzyMatching")
    limit = _parse_int(options.get("limit"), "Limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _parse_int(options.get("offset"), "Offset", 0, 0, 2**63 - 1)
    include_all, include_fields = _parse_include_fields(include)
    conditions: dict[BaseTag, Condition] = {}
    for key, value in filters.items():
        condition = _parse_filter(resource, key, value, fuzzy)
        if condition.tag in conditions:
            raise BadRequestError(
                f"Invalid query: attribute '{key}' has been specified more than once using different ID formats. "
                "Each attribute is only allowed to be specified once."
            )
        conditions[condition.tag] = condition
    return QidoQuery(
        resource=resource, api_version=api_version, conditions=tuple(conditions.values()),
        include_fields=include_fields, include_all=include_all, fuzzy=fuzzy, limit=limit, offset=offset,
        study_uid=study_uid, series_uid=series_uid,
    )


def parse_attribute_id(attribute_id: str) -> BaseTag | None:
    """Return the tag named by a keyword (case-sensitive) or 8 hex digits, or None."""
    if _HEX_TAG.fullmatch(attribute_id):
        return BaseTag(int(attribute_id, 16))
    tag = tag_for_keyword(attribute_id)
    return BaseTag(tag) if tag is not None else None


def _duplicate_message(key: str) -> str:
    return f"Invalid QIDO-RS query. Duplicate AttributeId '{key}'. Each attribute is only allowed to be specified once."


def _parse_bool(raw: str | None, name: str) -> bool:
    if raw is None:
        return False
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    raise BadRequestError(f"The query parameter '{name}' is invalid. The value '{raw}' is not valid for {name}.")


def _parse_int(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequestError(
            f"The query parameter '{name}' is invalid. The value '{raw}' is not valid for {name}.") from None
    if not low <= value <= high:
        raise BadRequestError(
            f"The query parameter '{name}' is invalid. The field {name} must be between {low} and {high}.")
    return value


def _parse_include_fields(fields: list[str]) -> tuple[bool, tuple[BaseTag, ...]]:
    if any(field.lower() == _INCLUDE_ALL for field in fields):
        if len(fields) > 1:
            raise BadRequestError("Invalid query: cannot specify included fields in addition to 'all'.")
        return True, ()
    tags: list[BaseTag] = []
    for field in fields:
        tag = parse_attribute_id(field)
        if tag is None:
            raise BadRequestError(f"Invalid query: IncludeField has unknown attribute '{field}'.")
        if tag not in tags:
            tags.append(tag)
    return False, tuple(tags)


def _parse_filter(resource: QidoResource, key: str, raw_value: str, fuzzy: bool) -> Condition:
    tag = parse_attribute_id(key)
    if tag is None:
        raise BadRequestError(
            f"Invalid query: unknown query parameter '{key}'. If the parameter is an attribute keyword, check the "
            "casing as they are case-sensitive. The conformance statement has a list of supported query parameters, "
            "attributes and the levels."
        )
    if _LEVEL_OF.get(tag) not in resource.filter_levels:
        raise BadRequestError(
            f"Invalid query: AttributeId {key} is not queryable.  If the parameter is an attribute keyword, check the "
            "casing as they are case-sensitive. The conformance statement has a list of supported query parameters, "
            "attributes and the levels."
        )
    value = trim(raw_value)
    if not value.strip():
        raise BadRequestError(f"Invalid query: AttributeId '{key}' has empty string value that is not supported.")
    vr = Condition(tag, MatchKind.EXACT).vr
    if vr == "DA":
        return _parse_date_condition(tag, value)
    if vr == "UI":
        # A value that is no valid UID matches nothing stored (and never reaches a key).
        uids = (normalize_uid(uid.strip()) for uid in _UID_LIST_SEPARATORS.split(value))
        return Condition(tag, MatchKind.ANY_OF, tuple(uid for uid in uids if is_valid_uid(uid)))
    if tag == MODALITIES_IN_STUDY and "\\" in value:
        return Condition(tag, MatchKind.ANY_OF, tuple(v.strip() for v in value.split("\\") if v.strip()))
    if WILDCARDS & set(value):
        return Condition(tag, MatchKind.WILDCARD, (value,))
    if vr == "PN" and fuzzy:
        if '"' in value:
            raise BadRequestError(
                f"Invalid query: specified tag '{dictionary_keyword(tag)}' value '{value}' contains unsupported "
                "character '\"'. Character is not supported with Fuzzy match, try exact match or removing the invalid "
                "character. "
            )
        return Condition(tag, MatchKind.FUZZY, (value,))
    return Condition(tag, MatchKind.EXACT, (value,))


def _parse_date_condition(tag: BaseTag, value: str) -> Condition:
    parts = value.split("-")
    if len(parts) == 2:
        low, high = parts[0].strip(), parts[1].strip()
        if not low and not high:
            raise BadRequestError(
                "Invalid query: specified range is invalid.\nBoth parts in the range cannot be empty.\n"
                "For details on valid range queries, please refer to Search Matching section in Conformance Statement "
                "(https://github.com/microsoft/dicom-server/blob/main/docs/resources/"
                "conformance-statement.md#search-matching)."
            )
        if low:
            _check_date(low, tag)
        if high:
            _check_date(high, tag)
        if low and high and low > high:
            raise BadRequestError(
                f"Invalid query: specified date range '{value}' is invalid.\n"
                f"The first part date {low} should be lesser than or equal to the second part date {high}."
            )
        return Condition(tag, MatchKind.RANGE, low=low or None, high=high or None)
    _check_date(value, tag)
    return Condition(tag, MatchKind.RANGE, low=value, high=value)


def _check_date(value: str, tag: BaseTag) -> None:
    try:
        if not _DATE.fullmatch(value):
            raise ValueError(value)
        datetime.datetime.strptime(value, "%Y%m%d")
    except ValueError:
        raise BadRequestError(
            f"Invalid query: specified Date value '{value}' is invalid for attribute '{dictionary_keyword(tag)}'. "
            "Date should be valid and formatted as yyyyMMdd."
        ) from None
