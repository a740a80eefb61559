"""A C-FIND/C-MOVE/C-GET identifier read as a search: QIDO filters where an index serves the key, PS3.4 matching else.

PS3.4 C.2.2.2 matching: single value, wildcard (``*``, ``?``), range (DA, TM, DT), UID list and universal
(an empty key, or ``*`` alone). A key the QIDO filters of the level cover becomes a filter; any other key with
a value is matched here against what the search returns for it. A sequence key whose item has keys with values is
matched here too (C.2.2.2.6: some item of the result's sequence matches every key of the key's first item), on the
sequence the search returns: from the rows that keep it (ProcedureCodeSequence...) or the instance metadata. A
sequence that only rows of a lower level keep (RequestAttributesSequence at STUDY level) is not returned at that
level: its key is a return key only, as QIDO ignores a key it cannot match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlencode

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag

from dicom_core.model.levels import ROW_ATTRIBUTES, Level
from dicom_core.qido.query import FILTER_TAGS, WILDCARDS, QidoResource

QUERY_RETRIEVE_LEVEL: BaseTag = Tag("QueryRetrieveLevel")
SPECIFIC_CHARACTER_SET: BaseTag = Tag("SpecificCharacterSet")
RANGE_VRS = frozenset({"DA", "TM", "DT"})
# Keys that are not attributes of what is searched for.
_NOT_KEYS = frozenset({QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET})


class QueryLevel(Enum):
    """The Query/Retrieve levels."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"

    @property
    def resource(self) -> QidoResource:
        """The QIDO resource that searches the level (studies, grouped by patient, for PATIENT)."""
        return _RESOURCES[self]

    @property
    def depth(self) -> int:
        """How many of the study, series and instance UIDs name a result of the level."""
        return {QueryLevel.SERIES: 2, QueryLevel.IMAGE: 3}.get(self, 1)


_RESOURCES = {QueryLevel.PATIENT: QidoResource.ALL_STUDIES, QueryLevel.STUDY: QidoResource.ALL_STUDIES,
              QueryLevel.SERIES: QidoResource.ALL_SERIES, QueryLevel.IMAGE: QidoResource.ALL_INSTANCES}


class IdentifierError(ValueError):
    """An identifier that cannot be answered (PS3.4: 0xA900, Identifier does not match SOP Class)."""


@dataclass(frozen=True)
class KeyMatch:
    """One key matched here, on the value a result carries for it."""

    tag: BaseTag
    vr: str
    values: tuple[str, ...]

    def matches(self, result: Dataset) -> bool:
        """Whether a result's value of the key matches (any of its values, for a multi-valued one)."""
        element = result.get(self.tag)
        stored = _values(element) if element is not None else ()
        return any(_matches_one(self.vr, key, value) for key in self.values for value in stored)


@dataclass(frozen=True)
class SequenceMatch:
    """A sequence key with keys in its item: matched when one item of the result's sequence matches them all."""

    tag: BaseTag
    keys: tuple[KeyMatch | SequenceMatch, ...]

    def matches(self, result: Dataset) -> bool:
        """Whether some item of the result's sequence matches every key of the item."""
        element = result.get(self.tag)
        items = element.value if element is not None and element.VR == "SQ" and element.value else ()
        return any(all(key.matches(item) for key in self.keys) for item in items)


@dataclass(frozen=True)
class Search:
    """An identifier as a search: its level, QIDO query string, the keys matched here and the keys to return."""

    level: QueryLevel
    query_string: str
    local: tuple[KeyMatch | SequenceMatch, ...]
    keys: tuple[DataElement, ...]

    def matches(self, result: Dataset) -> bool:
        """Whether a QIDO result also matches the keys no index serves."""
        return all(key.matches(result) for key in self.local)


def search_of(identifier: Dataset, *, patient_root: bool) -> Search:
    """Read an identifier as a search; raise IdentifierError for one without a level this model has."""
    raw_level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if raw_level not in QueryLevel.__members__ or (raw_level == "PATIENT" and not patient_root):
        raise IdentifierError(f"Query/Retrieve Level {raw_level!r} is not one of this information model's")
    level = QueryLevel[raw_level]
    filterable = {tag for filter_level in level.resource.filter_levels for tag in FILTER_TAGS[filter_level]}
    filters: dict[str, str] = {}
    local: list[KeyMatch | SequenceMatch] = []
    include: list[str] = []
    keys = tuple(element for element in identifier if element.tag not in _NOT_KEYS and element.tag.group > 0x0002)
    for element in keys:
        keyword = element.keyword or f"{element.tag:08X}"
        include.append(keyword)
        if element.VR == "SQ":
            sequence = _sequence_match(element)
            if sequence is not None and not _kept_below(element.tag, level):
                local.append(sequence)
            continue
        values = _values(element)
        if not values or values == ("*",):
            continue  # universal matching
        if element.tag in filterable:
            filters[keyword] = ",".join(values) if element.VR == "UI" else "\\".join(values)
        else:
            local.append(KeyMatch(element.tag, element.VR, values))
    # A search names each result's UIDs, whatever the identifier asks to return.
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")[:level.depth]:
        if keyword not in include:
            include.append(keyword)
    query = urlencode([*filters.items(), ("includefield", ",".join(include))])
    return Search(level, query, tuple(local), keys)


def _sequence_match(element: DataElement) -> SequenceMatch | None:
    """The match of a sequence key's first item; None when no key of it has a value (universal matching)."""
    if not element.value:
        return None
    keys: list[KeyMatch | SequenceMatch] = []
    for item_element in element.value[0]:
        if item_element.VR == "SQ":
            nested = _sequence_match(item_element)
            if nested is not None:
                keys.append(nested)
            continue
        values = _values(item_element)
        if values and values != ("*",):
            keys.append(KeyMatch(item_element.tag, item_element.VR, values))
    return SequenceMatch(element.tag, tuple(keys)) if keys else None


def _kept_below(tag: BaseTag, level: QueryLevel) -> bool:
    """Whether only rows of levels below the query level keep the attribute (QIDO does not return it there)."""
    result = level.resource.result_level
    below = {Level.STUDY: (Level.SERIES, Level.INSTANCE), Level.SERIES: (Level.INSTANCE,)}.get(result, ())
    own_and_above = [lvl for lvl in (Level.STUDY, Level.SERIES, Level.INSTANCE) if lvl not in below]
    return any(tag in ROW_ATTRIBUTES[lvl] for lvl in below) and not any(tag in ROW_ATTRIBUTES[lvl]
                                                                          for lvl in own_and_above)


def _values(element: DataElement) -> tuple[str, ...]:
    """An element's values as strings, blanks and padding dropped."""
    value = element.value
    if value is None or value == "":
        return ()
    items = list(value) if isinstance(value, (MultiValue, list)) else [value]
    return tuple(text for text in (str(item).strip().rstrip("\x00") for item in items) if text)


def _matches_one(vr: str, key: str, value: str) -> bool:
    if vr == "UI":
        return key == value
    if vr in RANGE_VRS and "-" in key:
        low, _, high = key.partition("-")
        return (not low or value >= low) and (not high or value[: len(high)] <= high)
    if WILDCARDS & set(key):
        pattern = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in key)
        return re.fullmatch(pattern, value, re.IGNORECASE if vr == "PN" else 0) is not None
    return value.casefold() == key.casefold() if vr == "PN" else value == key

