"""Where a search's results come from: the index range (or UIDs) that serves its most selective filter,
each entry verified against the row it points at, and expanded level by level (study → series → instance).

Every source is an async generator of verified hits in result order; the search takes the offset and limit
from the front, so what a search reads grows with offset + limit, not with the archive. The order is newest
first, except for a value-led range (name words, StudyID, StudyTime, the series' value indexes) with as many
entries as the search's limit or more: that one comes in index order (by value or word, newest first within
one), so a page reads offset + limit entries however many names begin alike. A range of fewer entries than the
limit fits in one page and comes newest first (deciding reads `limit` entries, which the page reads anyway).
The rule depends on the limit, never the offset: offset pages of one search with one limit never mix orders
(without a limit, the default limit decides; above the maximum, the maximum). Series or instances of the
studies of a range take it in index order whatever its size (deciding would read `limit` entries where fewer
studies fill the page).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field

from dicom_core.index.rows import STUDY_ATTRIBUTES_COPY
from dicom_core.model.dicom_json import JsonDataset
from dicom_core.model.identifiers import InstanceIdentifiers
from dicom_core.model.levels import Level
from dicom_core.model.tags import (
    MODALITIES_IN_STUDY,
    NUMBER_OF_STUDY_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_SERIES,
    SERIES_INSTANCE_UID,
    SOP_INSTANCE_UID,
    STUDY_INSTANCE_UID,
)
from dicom_core.qido.index_ranges import IndexRange, series_index_range, study_index_range
from dicom_core.qido.index_slices import verification_slices
from dicom_core.qido.matching import matches
from dicom_core.qido.query import QidoQuery, QidoResource
from dicom_core.qido.reads import Row, SearchReads, newest_first
from dicom_core.search_index.keys import (
    ALL_SERIES,
    ALL_STUDIES,
    INSTANCES_BY_UID,
    SERIES_BY_UID,
    IndexEntry,
    legacy_uid_ranges,
    parse_entries,
    parse_entry,
    series_row_keys,
    study_row_keys,
    study_row_modalities,
    uid_key,
)
from dicom_core.search_index.legacy_uid_layout import legacy_uid_indexes_left
from dicom_core.storage.concurrency import bounded_gather
from dicom_core.storage.sharded_table import partition_kind

# Index ranges and rows read at once for a list of UIDs.
UID_READS_IN_FLIGHT = 16


@dataclass(frozen=True)
class Hit:
    """One result: the UIDs it is about and the rows read for it (a scoped search may skip the study row)."""

    study_uid: str
    study: Row | None = None
    series: Row | None = None
    instance: Row | None = None
    known: JsonDataset = field(default_factory=dict)  # attributes its source read with it (an extended tag's value)

    @property
    def series_uid(self) -> str | None:
        """The series UID, from the series or instance row."""
        row = self.series or self.instance
        return None if row is None else row.row_key.split("|")[1]

    @property
    def instance_uid(self) -> str | None:
        """The SOP instance UID, from the instance row."""
        return None if self.instance is None else self.instance.row_key.split("|")[2]


def hits(reads: SearchReads, query: QidoQuery) -> tuple[str, AsyncGenerator[Hit, None]]:
    """Choose the source for ``query`` and return its name (for the log) and its verified hits."""
    resource = query.resource
    scope = _one(Hit(query.study_uid or ""))
    if resource is QidoResource.STUDY_SERIES:
        return "study partition", _series_of_studies(reads, query, scope)
    if resource is QidoResource.STUDY_INSTANCES:
        reads.read_together(query.study_uid or "", 2 * (query.offset + query.limit))
        return "study partition", _instances_of_series(reads, query, _series_of_studies(reads, query, scope))
    if resource is QidoResource.STUDY_SERIES_INSTANCES:
        return "study partition", _instances_of_series(reads, query, scope, series_uid=query.series_uid)
    study_uids = query.condition(STUDY_INSTANCE_UID)
    if resource is QidoResource.ALL_STUDIES:
        source, studies = _study_source(reads, query)
        return source or ALL_STUDIES, studies or _studies_from_index(reads, query, IndexRange(ALL_STUDIES))
    if resource is QidoResource.ALL_INSTANCES and not study_uids and (sops := query.condition(SOP_INSTANCE_UID)):
        return INSTANCES_BY_UID, _instances_by_uid(reads, query, sops.values)
    source, series = _series_source(reads, query)
    if resource is QidoResource.ALL_SERIES:
        return source, series
    return source, _instances_of_series(reads, query, series)


def _series_source(reads: SearchReads, query: QidoQuery) -> tuple[str, AsyncGenerator[Hit, None]]:
    """The series a cross-study search starts from: by UID, through a study index, by Modality, or all."""
    series_uids = query.condition(SERIES_INSTANCE_UID)
    if series_uids is not None and query.condition(STUDY_INSTANCE_UID) is None:
        return SERIES_BY_UID, _series_by_uid(reads, query, series_uids.values)
    index = None if query.condition(STUDY_INSTANCE_UID) is not None else study_index_range(query)
    if index is not None and not needs_study_row(query):
        return partition_kind(index.partition), _series_of_indexed_studies(reads, query, index)
    source, studies = _study_source(reads, query)
    if studies is not None:
        return source or "", _series_of_studies(reads, query, studies)
    series_index = series_index_range(query)
    if series_index is not None:
        return partition_kind(series_index.partition), _series_from_index(reads, query, series_index)
    return ALL_SERIES, _series_from_index(reads, query, IndexRange(ALL_SERIES))


def _study_source(reads: SearchReads, query: QidoQuery) -> tuple[str | None, AsyncGenerator[Hit, None] | None]:
    uids = query.condition(STUDY_INSTANCE_UID)
    if uids is not None:
        return "study UIDs", _studies_by_uid(reads, query, uids.values)
    index = study_index_range(query)
    if index is None:
        return None, None
    return partition_kind(index.partition), _studies_from_index(reads, query, index)


def _matches_level(query: QidoQuery, level: Level, row: Row, modalities: set[str] | None = None) -> bool:
    return all(
        matches(condition, row.attributes, modalities or ())
        for condition in query.conditions if condition.level is level
    )


def _study_matches(query: QidoQuery, row: Row) -> bool:
    modalities = study_row_modalities(row.entity) if query.condition(MODALITIES_IN_STUDY) else set()
    return _matches_level(query, Level.STUDY, row, modalities)


async def _studies_from_index(reads: SearchReads, query: QidoQuery, index: IndexRange) -> AsyncGenerator[Hit, None]:
    accepted: set[str] = set()
    async for entries in verification_slices(reads, query, index):
        rows = await asyncio.gather(*(reads.study(entry.study) for entry in entries))
        for entry, row in zip(entries, rows, strict=True):
            # The first verified entry of a study wins: two first stores racing may leave two sort keys.
            if row is None or entry.study in accepted or entry.key not in study_row_keys(row.entity):
                continue
            if _study_matches(query, row):
                accepted.add(entry.study)
                yield Hit(entry.study, study=row)


async def _studies_by_uid(reads: SearchReads, query: QidoQuery, uids: tuple[str, ...]) -> AsyncGenerator[Hit, None]:
    unique = list(dict.fromkeys(uids))
    rows = await asyncio.gather(*(reads.study(uid) for uid in unique))
    found = [Hit(uid, study=row) for uid, row in zip(unique, rows, strict=True)
             if row is not None and _study_matches(query, row)]
    for hit in _newest_first(found, lambda hit: hit.study):
        yield hit


async def _series_from_index(reads: SearchReads, query: QidoQuery, index: IndexRange) -> AsyncGenerator[Hit, None]:
    accepted: set[tuple[str, str]] = set()
    full_study = needs_study_row(query)
    async for entries in verification_slices(reads, query, index):
        pairs = await asyncio.gather(
            *(_series_and_study(reads, entry.study, entry.series or "", full_study=full_study) for entry in entries))
        for entry, (series, study) in zip(entries, pairs, strict=True):
            target = (entry.study, entry.series or "")
            if study is None or series is None or target in accepted:
                continue
            if entry.key not in series_row_keys(series.entity):
                continue
            if _study_matches(query, study) and _matches_level(query, Level.SERIES, series):
                accepted.add(target)
                yield Hit(entry.study, study=study, series=series)


async def _series_by_uid(reads: SearchReads, query: QidoQuery, uids: tuple[str, ...]) -> AsyncGenerator[Hit, None]:
    full_study = needs_study_row(query)
    # A series found in several layouts (before the reindex) is found once.
    targets = {(entry.study, entry.series or ""): None for entry in await _uid_entries(reads, SERIES_BY_UID, uids)}

    async def target_hit(study_uid: str, series_uid: str) -> Hit | None:
        series, study = await _series_and_study(reads, study_uid, series_uid, full_study=full_study)
        if series is None or study is None:
            return None
        if _study_matches(query, study) and _matches_level(query, Level.SERIES, series):
            return Hit(study_uid, study=study, series=series)
        return None

    found = [hit for hit in await bounded_gather((target_hit(*target) for target in targets),
                                                 limit=UID_READS_IN_FLIGHT) if hit is not None]
    for hit in _newest_first(found, lambda hit: hit.series):
        yield hit


async def _uid_entries(reads: SearchReads, index: str, uids: tuple[str, ...]) -> list[IndexEntry]:
    """The entries of ``uids`` in a UID lookup index: a point read per UID, and the RowKey ranges of the layouts
    before while entries of them are left; all at once (bounded), so a search costs about one round trip."""
    left = await legacy_uid_indexes_left(reads.storage)
    unique = list(dict.fromkeys(uids))

    async def at(uid: str) -> list[IndexEntry]:
        key = uid_key(index, uid)
        entity = await reads.index_entity(key.partition, key.row_key(""))
        return [] if entity is None else parse_entries(entity)

    async def in_range(bounds: tuple[str, str | None, str | None]) -> list[IndexEntry]:
        return [entry async for page in reads.index_pages(*bounds) for entry in map(parse_entry, page.entities)]

    lists = await bounded_gather([*map(at, unique), *(in_range(bounds) for uid in unique
                                                      for bounds in legacy_uid_ranges(index, uid, left))],
                                 limit=UID_READS_IN_FLIGHT)
    return [entry for entries in lists for entry in entries]


def needs_study_row(query: QidoQuery) -> bool:
    """Tell whether results above study level need the study row itself, not the series row's copy of its
    attributes: to match ModalitiesInStudy, or to answer it or a NumberOfStudyRelated* count."""
    wanted = {*query.include_fields, *(condition.tag for condition in query.conditions)}
    return bool(wanted & {MODALITIES_IN_STUDY, NUMBER_OF_STUDY_RELATED_SERIES, NUMBER_OF_STUDY_RELATED_INSTANCES})


async def _series_and_study(
    reads: SearchReads, study: str, series: str, *, full_study: bool,
) -> tuple[Row | None, Row | None]:
    """A series row and its study's attributes: from the series row's copy, unless the study row is needed."""
    if full_study:
        series_row, study_row = await asyncio.gather(reads.series(study, series), reads.study(study))
        return series_row, study_row
    series_row = await reads.series(study, series)
    return series_row, (None if series_row is None else await reads.study_of(study, series_row))


async def _series_of_studies(
    reads: SearchReads, query: QidoQuery, studies: AsyncIterator[Hit]
) -> AsyncGenerator[Hit, None]:
    reads.expanded("series")
    async for chunk in _chunks(reads, "series", studies):
        lists = await asyncio.gather(*(reads.series_of(hit.study_uid) for hit in chunk))
        found = [Hit(hit.study_uid, study=hit.study, series=row) for hit, rows in zip(chunk, lists, strict=True)
                 for row in newest_first(rows) if _matches_level(query, Level.SERIES, row)]
        reads.expanded("series", len(chunk), len(found))
        for series in found:
            yield series


async def _series_of_indexed_studies(
    reads: SearchReads, query: QidoQuery, index: IndexRange,
) -> AsyncGenerator[Hit, None]:
    """The series of the studies an index range serves, each entry verified against its series rows' copy of the
    study attributes: no study row is read (unless none of the study's series rows has a copy)."""
    reads.expanded("series")
    accepted: set[str] = set()
    async for entries in verification_slices(reads, query, index):
        lists = await asyncio.gather(*(reads.series_of(entry.study) for entry in entries))
        studies = await asyncio.gather(*(_study_of_series_rows(reads, entry.study, rows)
                                         for entry, rows in zip(entries, lists, strict=True)))
        found: list[Hit] = []
        parents = 0
        for entry, rows, study in zip(entries, lists, studies, strict=True):
            if study is None or entry.study in accepted or entry.key not in study_row_keys(study.entity):
                continue
            accepted.add(entry.study)
            if _study_matches(query, study):
                parents += 1
                found += [Hit(entry.study, study=study, series=row) for row in newest_first(rows)
                          if _matches_level(query, Level.SERIES, row)]
        reads.expanded("series", parents, len(found))
        for hit in found:
            yield hit


async def _study_of_series_rows(reads: SearchReads, study: str, rows: list[Row]) -> Row | None:
    """The study's attributes from the first of its series rows that has a copy of them, else its study row."""
    if not rows:
        return None  # a study has a series row from its first commit on: no rows, no study
    with_copy = next((row for row in rows if row.entity.get(STUDY_ATTRIBUTES_COPY)), rows[0])
    return await reads.study_of(study, with_copy)


async def _instances_of_series(
    reads: SearchReads, query: QidoQuery, series: AsyncIterator[Hit], *, series_uid: str | None = None
) -> AsyncGenerator[Hit, None]:
    reads.expanded("instances")
    async for chunk in _chunks(reads, "instances", series):
        lists = await _instance_rows(reads, chunk, series_uid)
        found = [Hit(hit.study_uid, study=hit.study, series=hit.series, instance=row)
                 for hit, rows in zip(chunk, lists, strict=True)
                 for row in newest_first(rows) if _matches_level(query, Level.INSTANCE, row)]
        reads.expanded("instances", len(chunk), len(found))
        for instance in found:
            yield instance


async def _instance_rows(reads: SearchReads, chunk: list[Hit], series_uid: str | None) -> list[list[Row]]:
    """The instance rows of each hit's series: the series row's copy when it has one instance, else read, the
    series of one study by one query (a series UID of None: the whole study)."""
    found: dict[int, list[Row]] = {}
    to_read: dict[tuple[str, bool], list[tuple[int, str | None]]] = {}
    for position, hit in enumerate(chunk):
        count = int(hit.series.entity.get("InstanceCount") or 0) if hit.series is not None else 0
        if count == 1 and hit.series is not None and (only := reads.last_instance(hit.study_uid, hit.series)):
            found[position] = [only]
            continue
        uid = series_uid or hit.series_uid
        to_read.setdefault((hit.study_uid, uid is None), []).append((position, uid))

    async def read(study: str, targets: list[tuple[int, str | None]]) -> list[tuple[int, list[Row]]]:
        if targets[0][1] is None:
            rows = await reads.instances_of(study, None)
            return [(position, rows) for position, _ in targets]
        lists = await reads.instances_of_series(study, [uid or "" for _, uid in targets])
        return [(position, rows) for (position, _), rows in zip(targets, lists, strict=True)]

    for pairs in await asyncio.gather(*(read(study, targets) for (study, _), targets in to_read.items())):
        found.update(pairs)
    return [found[position] for position in range(len(chunk))]


async def _instances_by_uid(reads: SearchReads, query: QidoQuery, uids: tuple[str, ...]) -> AsyncGenerator[Hit, None]:
    full_study = needs_study_row(query)
    targets = {  # an instance found in several layouts (before the reindex) is found once
        InstanceIdentifiers(entry.study, entry.series or "", entry.instance or ""): None
        for entry in await _uid_entries(reads, INSTANCES_BY_UID, uids)}

    async def target_hit(ids: InstanceIdentifiers) -> Hit | None:
        instance, (series, study) = await asyncio.gather(
            reads.instance(ids), _series_and_study(reads, ids.study, ids.series, full_study=full_study))
        if instance is None or study is None or series is None:
            return None
        if (_study_matches(query, study) and _matches_level(query, Level.SERIES, series)
                and _matches_level(query, Level.INSTANCE, instance)):
            return Hit(ids.study, study=study, series=series, instance=instance)
        return None

    found = [hit for hit in await bounded_gather(map(target_hit, targets), limit=UID_READS_IN_FLIGHT)
             if hit is not None]
    for hit in _newest_first(found, lambda hit: hit.instance):
        yield hit


def _newest_first(found: list[Hit], row_of: Callable[[Hit], Row | None]) -> list[Hit]:
    """Order hits found by UID the way index entries are: newest row first."""
    rows = newest_first([row for row in map(row_of, found) if row is not None])
    return [next(hit for hit in found if row_of(hit) is row) for row in rows]


async def _one(hit: Hit) -> AsyncGenerator[Hit, None]:
    yield hit


async def _chunks(reads: SearchReads, stage: str, source: AsyncIterator[Hit]) -> AsyncIterator[list[Hit]]:
    """Group ``source`` into lists of about what the search still wants of it, to expand them concurrently."""
    chunk: list[Hit] = []
    children = 0
    async for item in source:
        chunk.append(item)
        count = item.series.entity.get("InstanceCount") if stage == "instances" and item.series else None
        children = children + int(count) if count and children >= 0 else -1  # -1: some unknown
        reads.waiting(stage, len(chunk), max(0, children))
        # Full: enough parents for every result still wanted, or (children unknown) as many as the stage wants.
        if reads.outstanding() <= 0 or len(chunk) >= (32 if children > 0 else max(1, min(reads.demand(stage), 32))):
            reads.waiting(stage, 0)
            yield chunk
            chunk, children = [], 0
    reads.waiting(stage, 0)
    if chunk:
        yield chunk
