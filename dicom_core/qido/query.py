"""The QIDO-RS query string: decoded the way clients encode it, validated, parsed once (PS3.18 §8.3).

Filters name an attribute by keyword (case-sensitive) or by 8-hex tag. Matching, as in Azure's DICOM service:
exact (case-insensitive; person names also accent-insensitive), DA ranges and, with ``fuzzymatching=true``,
prefix matching on the words of person names. Beyond Azure, as the standard and OHIF expect: wildcards
``*``/``?`` on strings and names, universal matching (``*`` alone or an empty value), UID lists (``a\\b``
or ``a,b``), and unknown or unsupported parameters ignored with a warning. ``strict`` gives Azure's 400s.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import unquote, unquote_plus

from pydicom.datadict import dictionary_keyword, dictionary_VR, tag_for_keyword
from pydicom.tag import BaseTag

from dicom_core.model.errors import BadRequestError
from dicom_core.model.levels import QUERYABLE, Level
from dicom_core.model.tags import MODALITIES_IN_STUDY
from dicom_core.model.text import trim
from dicom_core.model.uids import is_valid_uid, normalize_uid
from dicom_core.qido.row_filters import ROW_FILTER_TAGS, ROW_FILTERED, parse_time_range

DEFAULT_LIMIT = 100
MAX_LIMIT = 200
WILDCARDS = frozenset("*?")
_HEX_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_DATE = re.compile(r"[0-9]{8}")
_UID_LIST_SEPARATORS = re.compile(r"[\\,]")
_INCLUDE_ALL = "all"
# Query parameters with a value of their own (PS3.18 Table 8.3.4-1), by lower-case name: the name in messages.
_OPTIONS = {"limit": "Limit", "offset": "Offset", "fuzzymatching": "FuzzyMatching",
            "emptyvaluematching": "EmptyValueMatching", "multiplevaluematching": "MultipleValueMatching"}
# Accepted, not supported: what the search does instead when one is true.
_UNSUPPORTED_OPTIONS = {
    "emptyvaluematching": "The emptyvaluematching parameter is not supported. Only non-empty values have been matched.",
    "multiplevaluematching": "The multiplevaluematching parameter is not supported. Only the first value of each "
                             "attribute has been matched.",
}
_MEDIA_PARAMETERS = ("accept", "charset")  # PS3.18 §8.3.3; a repeated one is one list
_UTF8_NAMES = frozenset({"utf-8", "utf8", "iso_ir 192"})
_ZERO_WEIGHT = re.compile(r"q=0(\.0{0,3})?", re.IGNORECASE)

# The attributes each level can be filtered on: Azure's core list (ModalitiesInStudy is computed, not stored).
FILTER_TAGS: dict[Level, tuple[BaseTag, ...]] = {
    Level.STUDY: (*QUERYABLE[Level.STUDY], MODALITIES_IN_STUDY),
    Level.SERIES: QUERYABLE[Level.SERIES],
    Level.INSTANCE: QUERYABLE[Level.INSTANCE],
}
_LEVEL_OF = {tag: level for by_level in (FILTER_TAGS, ROW_FILTER_TAGS) for level, tags in by_level.items()
             for tag in tags}


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
    """A validated search: resource, scope from the URL, filters, return attributes and the page asked for.

    ``return_keys`` are attributes named with universal matching (``*`` or an empty value) or by a filter
    that is not supported: returned like ``includefield``, never matched. ``accept`` is the accept query
    parameter (it takes the place of the Accept header); ``warnings`` say what the search ignored.
    """

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
    return_keys: tuple[BaseTag, ...] = ()
    accept: str | None = None
    warnings: tuple[str, ...] = ()

    def condition(self, tag: BaseTag) -> Condition | None:
        """Return the filter on ``tag``, if any."""
        return next((c for c in self.conditions if c.tag == tag), None)


@dataclass
class _Parsed:
    """What the loop over the parameters collects."""

    options: dict[str, str] = field(default_factory=dict)
    include: list[str] = field(default_factory=list)
    filters: dict[str, str] = field(default_factory=dict)
    media: dict[str, list[str]] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)


def parse_query(
    resource: QidoResource, query_string: str, *, api_version: int, study_uid: str | None = None,
    series_uid: str | None = None, strict: bool = False,
) -> QidoQuery:
    """Parse a raw (still percent-encoded) query string; raise BadRequestError with Azure's messages.

    Unknown and unsupported parameters are ignored and named in a warning (PS3.18 §8.3), or, ``strict``
    (Azure's answers), a 400.
    """
    if "<" in query_string or "%3c" in query_string.lower():
        raise BadRequestError("The query string included invalid characters.")
    parsed = _Parsed()
    for key, raw_value in _parameters(query_string):
        name = key.lower()
        if name == "includefield":
            parsed.include.extend(part.strip() for part in raw_value.split(",") if part.strip())
        elif name in _MEDIA_PARAMETERS:
            parsed.media.setdefault(name, []).append(raw_value)
        elif name in _OPTIONS:
            if name in parsed.options:
                raise BadRequestError(_duplicate_message(key))
            parsed.options[name] = raw_value.strip()
        elif key:
            if key in parsed.filters:
                raise BadRequestError(_duplicate_message(key))
            parsed.filters[key] = raw_value
    if "charset" in parsed.media:
        _check_charset(parsed.media["charset"])
    options = parsed.options
    fuzzy = _parse_bool(options.get("fuzzymatching"), "FuzzyMatching")
    warnings = [text for option, text in _UNSUPPORTED_OPTIONS.items()
                if _parse_bool(options.get(option), _OPTIONS[option])]
    limit = _parse_limit(options.get("limit"), strict, warnings)
    offset = _parse_int(options.get("offset"), "Offset", 0, 0, 2**63 - 1)
    include_all, include_fields = _parse_include_fields(parsed.include, strict, parsed.ignored)
    conditions: dict[BaseTag, Condition] = {}
    return_keys: dict[BaseTag, None] = {}
    for key, value in parsed.filters.items():
        tag = _filter_tag(resource, key, value, strict)
        if tag is None:
            parsed.ignored.append(key)
            continue
        if tag in conditions or tag in return_keys:
            raise BadRequestError(
                f"Invalid query: attribute '{key}' has been specified more than once using different ID formats. "
                "Each attribute is only allowed to be specified once."
            )
        if is_universal(value):
            return_keys[tag] = None  # PS3.4 C.2.2.2.3/C.2.2.2.4: every entity matches; the attribute is returned
        elif _LEVEL_OF.get(tag) not in resource.filter_levels:
            parsed.ignored.append(key)
            return_keys[tag] = None
        else:
            conditions[tag] = _parse_filter(tag, value, fuzzy)
    if parsed.ignored:
        warnings.append(f"The following query parameters are not supported and have been ignored: "
                        f"{', '.join(parsed.ignored)}.")
    return QidoQuery(
        resource=resource, api_version=api_version, conditions=tuple(conditions.values()),
        include_fields=include_fields, include_all=include_all, fuzzy=fuzzy, limit=limit, offset=offset,
        study_uid=study_uid, series_uid=series_uid, return_keys=tuple(return_keys),
        accept=", ".join(parsed.media["accept"]) if "accept" in parsed.media else None,
        warnings=tuple(warnings),
    )


def parse_attribute_id(attribute_id: str) -> BaseTag | None:
    """Return the tag named by a keyword (case-sensitive) or 8 hex digits, or None."""
    if _HEX_TAG.fullmatch(attribute_id):
        return BaseTag(int(attribute_id, 16))
    tag = tag_for_keyword(attribute_id)
    return BaseTag(tag) if tag is not None else None


def _parameters(query_string: str) -> list[tuple[str, str]]:
    return [decode_parameter(part) for part in query_string.split("&") if part]


def decode_parameter(part: str) -> tuple[str, str]:
    """Decode one parameter the way dicomweb-client encodes it (quote_plus: '+' is a space, %5E is '^').

    The accept parameter's media types keep a '+' (application/dicom+json), as clients write it unencoded.
    """
    raw_key, _, raw_value = part.partition("=")
    key = unquote_plus(raw_key).strip()
    return key, unquote(raw_value) if key.lower() == "accept" else unquote_plus(raw_value)


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


def _parse_limit(raw: str | None, strict: bool, warnings: list[str]) -> int:
    """The page size: above MAX_LIMIT it is capped (PS3.18 §8.3.4.4.1: min(matches - offset, max, limit))."""
    if strict:
        return _parse_int(raw, "Limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    limit = _parse_int(raw, "Limit", DEFAULT_LIMIT, 0, 2**63 - 1)
    if limit > MAX_LIMIT:
        warnings.append(f"The limit {limit} exceeds the maximum of {MAX_LIMIT} results per request: at most "
                        f"{MAX_LIMIT} results have been returned. Additional results can be requested with offset.")
    return min(limit, MAX_LIMIT)


def _check_charset(values: list[str]) -> None:
    """Accept a charset query parameter (PS3.18 §8.3.3.2) only when it names UTF-8, the charset of DICOM JSON."""
    for item in (item for value in values for item in value.split(",")):
        name, _, weight = item.partition(";")
        if name.strip().strip('"').lower() in _UTF8_NAMES and not _ZERO_WEIGHT.fullmatch(weight.replace(" ", "")):
            return
    raise BadRequestError(
        f"The query parameter 'charset' is invalid. The value '{','.join(values)}' names no supported character "
        "set: search results are DICOM JSON, in UTF-8.")


def _parse_include_fields(fields: list[str], strict: bool, ignored: list[str]) -> tuple[bool, tuple[BaseTag, ...]]:
    include_all = any(field.lower() == _INCLUDE_ALL for field in fields)
    if include_all and len(fields) > 1 and strict:
        raise BadRequestError("Invalid query: cannot specify included fields in addition to 'all'.")
    tags: list[BaseTag] = []
    for field_name in fields:
        if field_name.lower() == _INCLUDE_ALL:
            continue
        tag = parse_attribute_id(field_name)
        if tag is None:
            if strict:
                raise BadRequestError(f"Invalid query: IncludeField has unknown attribute '{field_name}'.")
            ignored.append(f"includefield={field_name}")
        elif tag not in tags:
            tags.append(tag)
    return include_all, tuple(tags)


def is_universal(value: str) -> bool:
    """An empty value or one of '*' only: universal matching (PS3.4 C.2.2.2.3, C.2.2.2.4)."""
    return not trim(value).strip().strip("*")


def _filter_tag(resource: QidoResource, key: str, value: str, strict: bool) -> BaseTag | None:
    """The attribute a filter names; None for an unknown one (ignored), or, ``strict``, Azure's 400s."""
    tag = parse_attribute_id(key)
    if not strict:
        return tag
    if tag is None:
        raise BadRequestError(
            f"Invalid query: unknown query parameter '{key}'. If the parameter is an attribute keyword, check the "
            "casing as they are case-sensitive. The conformance statement has a list of supported query parameters, "
            "attributes and the levels."
        )
    if _LEVEL_OF.get(tag) not in resource.filter_levels or tag in ROW_FILTERED:  # Azure: extended query tags
        raise BadRequestError(
            f"Invalid query: AttributeId {key} is not queryable.  If the parameter is an attribute keyword, check the "
            "casing as they are case-sensitive. The conformance statement has a list of supported query parameters, "
            "attributes and the levels."
        )
    if not trim(value).strip():
        raise BadRequestError(f"Invalid query: AttributeId '{key}' has empty string value that is not supported.")
    return tag


def _parse_filter(tag: BaseTag, raw_value: str, fuzzy: bool) -> Condition:
    value = trim(raw_value)
    vr = Condition(tag, MatchKind.EXACT).vr
    if vr == "DA":
        return _parse_date_condition(tag, value)
    if vr == "TM":
        low, high = parse_time_range(tag, value)
        return Condition(tag, MatchKind.RANGE, low=low, high=high)
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
