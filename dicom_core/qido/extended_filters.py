"""Filters on extended query tags: taken out of the query string before it is parsed, answered from the tags'
index entries (`extended_tags.indexing`), and turned into UID conditions of the tag's level that the candidates
already serve (intersected with the query's own UID filters); the first filter of a cross-study search without
UID filters instead drives the search, its entries read page by page (`extended_source`).

A filter on a registered tag is taken when the tag's level is one the resource filters on (a tag is filtered
at its level and below); otherwise, and for a key given twice, the parameter stays in the query string and
gets the answer of any attribute outside the default set. A filtered extended tag is returned in each result,
from its instance's metadata (the instance row's copy, or its blob), as any attribute no search row keeps.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

from pydicom.tag import BaseTag

from dicom_core.extended_tags.indexing import has_errors, queryable_tag, registered_tags, search_extended
from dicom_core.extended_tags.registry import ExtendedTag
from dicom_core.model.levels import Level
from dicom_core.model.tags import SERIES_INSTANCE_UID, SOP_INSTANCE_UID, STUDY_INSTANCE_UID
from dicom_core.qido.query import (
    FILTER_TAGS,
    Condition,
    MatchKind,
    QidoQuery,
    QidoResource,
    decode_parameter,
    is_universal,
    parse_attribute_id,
)
from dicom_core.search_index.extended import Match
from dicom_core.search_index.extended_values import ExtendedFilter as ValueFilter
from dicom_core.search_index.extended_values import parse_filter
from dicom_core.storage.clients import Storage

ERRONEOUS_ATTRIBUTES_HEADER = "erroneous-dicom-attributes"
_BUILT_IN = frozenset(tag for tags in FILTER_TAGS.values() for tag in tags)
_PAGED_RESOURCES = (QidoResource.ALL_STUDIES, QidoResource.ALL_SERIES, QidoResource.ALL_INSTANCES)
_UID_OF_LEVEL = {Level.STUDY: STUDY_INSTANCE_UID, Level.SERIES: SERIES_INSTANCE_UID, Level.INSTANCE: SOP_INSTANCE_UID}


@dataclass(frozen=True)
class ExtendedFilter:
    """A filter on a queryable extended tag: the tag, its attribute, the key as written and the value."""

    tag: ExtendedTag
    attribute: BaseTag
    name: str
    value: str


@dataclass(frozen=True)
class ExtendedFilters:
    """The query string without the filters on extended tags, and those filters."""

    query_string: str
    filters: tuple[ExtendedFilter, ...] = ()


@dataclass(frozen=True)
class DrivingFilter:
    """The extended filter whose entries a search reads page by page (`qido.extended_source`)."""

    tag: ExtendedTag
    condition: ValueFilter


@dataclass(frozen=True)
class NarrowedQuery:
    """A query with its extended filters as UID conditions (but the driving one, if any), and the filters whose
    tag has indexing errors."""

    query: QidoQuery
    erroneous: tuple[str, ...] = ()
    driving: DrivingFilter | None = None


async def take_extended_filters(
    storage: Storage, resource: QidoResource, query_string: str, *, strict: bool = False,
) -> ExtendedFilters:
    """Take the filters on extended tags out of ``query_string``; 400 for a tag being added, disabled or deleted.

    The registry (a per-process copy) is read only when a key names an attribute outside the default set.
    """
    parts = [part for part in query_string.split("&") if part]
    named = [(part, key, value, parse_attribute_id(key)) for part in parts for key, value in [decode_parameter(part)]]
    outside = [item for item in named if item[3] is not None and item[3] not in _BUILT_IN]
    if not outside:
        return ExtendedFilters(query_string)
    registry = {tag.path: tag for tag in await registered_tags(storage)}
    counts = Counter(attribute for *_, attribute in named)
    taken: dict[str, ExtendedFilter] = {}
    for part, key, value, attribute in outside:
        assert attribute is not None
        tag = registry.get(f"{int(attribute):08X}")
        if (tag is None or tag.level not in resource.filter_levels or counts[attribute] > 1
                or (is_universal(value) and not strict)):
            continue
        queryable = await queryable_tag(storage, attribute, key)
        if queryable is not None:
            taken[part] = ExtendedFilter(queryable, attribute, key, value)
    rest = "&".join(part for part in parts if part not in taken)
    return ExtendedFilters(rest, tuple(taken.values()))


async def narrow_query(storage: Storage, query: QidoQuery, filters: ExtendedFilters) -> NarrowedQuery:
    """Answer the extended filters from their index entries: the first drives a cross-study search that names no
    UIDs (its entries are read as the page needs them); the others' matches are added as UID conditions."""
    if not filters.filters:
        return NarrowedQuery(query)
    conditions = {condition.tag: condition for condition in query.conditions}
    erroneous: list[str] = []
    driving = None
    rest = list(filters.filters)
    if query.resource in _PAGED_RESOURCES and not any(tag in conditions for tag in _UID_OF_LEVEL.values()):
        first = rest.pop(0)
        driving = DrivingFilter(first.tag, parse_filter(first.tag.vr, first.name, first.value, fuzzy=query.fuzzy))
        if await has_errors(storage, first.tag):
            erroneous.append(first.name)
    for item in rest:
        found = await search_extended(storage, item.tag, item.name, item.value, fuzzy=query.fuzzy)
        if found.erroneous:
            erroneous.append(item.name)
        uid_tag = _UID_OF_LEVEL[item.tag.level]
        uids = tuple(dict.fromkeys(uid for match in found.matches if (uid := _uid_at(match, item.tag.level))))
        current = conditions.get(uid_tag)
        if current is not None:
            uids = tuple(uid for uid in current.values if uid in set(uids))
        conditions[uid_tag] = Condition(uid_tag, MatchKind.ANY_OF, uids)
    returned = tuple(dict.fromkeys((*query.return_keys, *(item.attribute for item in filters.filters))))
    return NarrowedQuery(replace(query, conditions=tuple(conditions.values()), return_keys=returned),
                         tuple(erroneous), driving)


def _uid_at(match: Match, level: Level) -> str | None:
    return match.study if level is Level.STUDY else match.series if level is Level.SERIES else match.instance
