"""Where a search's results come from: the index partition (or UIDs) that serves its most selective filter,
each entry verified against the row it points at, and expanded level by level (study → series → instance).

Every source is an async generator of verified hits in result order (newest first); the search takes the
offset and limit from the front, so what a search reads grows with offset + limit, not with the archive.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass

from dicom_core.model.identifiers import InstanceIdentifiers
from dicom_core.model.levels import Level
from dicom_core.model.tags import (
    ACCESSION_NUMBER,
    MODALITIES_IN_STUDY,
    MODALITY,
    PATIENT_ID,
    PATIENT_NAME,
    REFERRING_PHYSICIAN_NAME,
    SERIES_INSTANCE_UID,
    SOP_INSTANCE_UID,
    STUDY_DATE,
    STUDY_INSTANCE_UID,
)
from dicom_core.model.text import fold, fold_person_name, name_words
from dicom_core.qido.matching import matches
from dicom_core.qido.query import Condition, MatchKind, QidoQuery, QidoResource
from dicom_core.qido.reads import Row, SearchReads, newest_first
from dicom_core.search_index.keys import (
    ALL_SERIES,
    ALL_STUDIES,
    INSTANCES_BY_UID,
    SERIES_BY_MODALITY,
    SERIES_BY_UID,
    STUDIES_BY_ACCESSION,
    STUDIES_BY_DATE,
    STUDIES_BY_MODALITY,
    STUDIES_BY_PATIENT_ID,
    STUDIES_BY_PATIENT_NAME,
    STUDIES_BY_PATIENT_NAME_WORD,
    STUDIES_BY_REFERRING,
    STUDIES_BY_REFERRING_WORD,
    WORD_PREFIX_CHARS,
    IndexEntry,
    inverted_date,
    parse_entry,
    partition_key,
    series_keys,
    study_row_keys,
    study_row_modalities,
)

# Fewest index entries verified at once: a few more rows than asked for beat another round trip.
MIN_SLICE = 8


@dataclass(frozen=True)
class Hit:
    """One result: the UIDs it is about and the rows read for it (a scoped search may skip the study row)."""

    study_uid: str
    study: Row | None = None
    series: Row | None = None
    instance: Row | None = None

    @property
    def series_uid(self) -> str | None:
        """The series UID, from the series or instance row."""
        row = self.series or self.instance
        return None if row is None else row.row_key.split("|")[1]

    @property
    def instance_uid(self) -> str | None:
        """The SOP instance UID, from the instance row."""
        return None if self.instance is None else self.instance.row_key.split("|")[2]


@dataclass(frozen=True)
class IndexRange:
    """An index partition and, for dates, the RowKey range to read."""

    partition: str
    low: str | None = None
    high: str | None = None


def hits(reads: SearchReads, query: QidoQuery) -> tuple[str, AsyncGenerator[Hit, None]]:
    """Choose the source for ``query`` and return its name (for the log) and its verified hits."""
    resource = query.resource
    scope = _one(Hit(query.study_uid or ""))
    if resource is QidoResource.STUDY_SERIES:
        return "study partition", _series_of_studies(reads, query, scope)
    if resource is QidoResource.STUDY_INSTANCES:
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
    source, studies = _study_source(reads, query)
    if studies is not None:
        return source or "", _series_of_studies(reads, query, studies)
    modality = query.condition(MODALITY)
    if modality is not None and modality.kind is MatchKind.EXACT:
        partition = partition_key(SERIES_BY_MODALITY, modality.value)
        return SERIES_BY_MODALITY, _series_from_index(reads, query, partition)
    return ALL_SERIES, _series_from_index(reads, query, ALL_SERIES)


def study_index_range(query: QidoQuery) -> IndexRange | None:
    """The index range serving the query's most selective indexed study-level filter, if any."""
    for index, tag in ((STUDIES_BY_ACCESSION, ACCESSION_NUMBER), (STUDIES_BY_PATIENT_ID, PATIENT_ID)):
        condition = query.condition(tag)
        if condition is not None and condition.kind is MatchKind.EXACT:
            return IndexRange(partition_key(index, condition.value))
    names = ((STUDIES_BY_PATIENT_NAME, STUDIES_BY_PATIENT_NAME_WORD, PATIENT_NAME),
             (STUDIES_BY_REFERRING, STUDIES_BY_REFERRING_WORD, REFERRING_PHYSICIAN_NAME))
    for exact, _, tag in names:
        condition = query.condition(tag)
        if condition is not None and condition.kind is MatchKind.EXACT:
            return IndexRange(partition_key(exact, fold_person_name(condition.value)))
    for _, words, tag in names:
        word = _name_index_word(query.condition(tag))
        if word:
            return IndexRange(partition_key(words, word[:WORD_PREFIX_CHARS]))
    date = query.condition(STUDY_DATE)
    if date is not None:
        return IndexRange(
            STUDIES_BY_DATE,
            low=f"{inverted_date(date.high)}|" if date.high else None,
            high=f"{inverted_date(date.low)}}}" if date.low else None,
        )
    modalities = query.condition(MODALITIES_IN_STUDY)
    if modalities is not None and modalities.kind is MatchKind.EXACT:
        return IndexRange(partition_key(STUDIES_BY_MODALITY, modalities.value))
    return None


def _name_index_word(condition: Condition | None) -> str:
    """The word whose prefix partition holds every name a fuzzy or wildcard condition can match ('' if none)."""
    if condition is None:
        return ""
    if condition.kind is MatchKind.FUZZY:
        return max(name_words(condition.value), key=len, default="")
    if condition.kind is MatchKind.WILDCARD:
        literal = fold(condition.value)
        cut = min((literal.index(char) for char in "*?" if char in literal), default=len(literal))
        # A value matching 'DOE^J*' starts with 'DOE^J', so its first word starts with 'DOE'.
        words = name_words(literal[:cut])
        return words[0] if words else ""
    return ""


def _study_source(reads: SearchReads, query: QidoQuery) -> tuple[str | None, AsyncGenerator[Hit, None] | None]:
    uids = query.condition(STUDY_INSTANCE_UID)
    if uids is not None:
        return "study UIDs", _studies_by_uid(reads, query, uids.values)
    index = study_index_range(query)
    if index is None:
        return None, None
    return index.partition.split("|", 1)[0], _studies_from_index(reads, query, index)


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
    async for entries in _verification_slices(reads, index.partition, index.low, index.high):
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


async def _series_from_index(reads: SearchReads, query: QidoQuery, partition: str) -> AsyncGenerator[Hit, None]:
    accepted: set[tuple[str, str]] = set()
    async for entries in _verification_slices(reads, partition):
        pairs = await asyncio.gather(*(_study_and_series(reads, entry.study, entry.series or "") for entry in entries))
        for entry, (study, series) in zip(entries, pairs, strict=True):
            target = (entry.study, entry.series or "")
            if study is None or series is None or target in accepted:
                continue
            if entry.key not in series_keys(target[1], str(series.entity.get("Modality") or "")):
                continue
            if _study_matches(query, study) and _matches_level(query, Level.SERIES, series):
                accepted.add(target)
                yield Hit(entry.study, study=study, series=series)


async def _series_by_uid(reads: SearchReads, query: QidoQuery, uids: tuple[str, ...]) -> AsyncGenerator[Hit, None]:
    found = [hit for uid in dict.fromkeys(uids)
             async for hit in _series_from_index(reads, query, partition_key(SERIES_BY_UID, uid))]
    for hit in _newest_first(found, lambda hit: hit.series):
        yield hit


async def _study_and_series(reads: SearchReads, study: str, series: str) -> tuple[Row | None, Row | None]:
    return await asyncio.gather(reads.study(study), reads.series(study, series))


async def _series_of_studies(
    reads: SearchReads, query: QidoQuery, studies: AsyncIterator[Hit]
) -> AsyncGenerator[Hit, None]:
    async for chunk in _chunks(studies, lambda: reads.wanted):
        lists = await asyncio.gather(*(reads.series_of(hit.study_uid) for hit in chunk))
        for hit, rows in zip(chunk, lists, strict=True):
            for row in newest_first(rows):
                if _matches_level(query, Level.SERIES, row):
                    yield Hit(hit.study_uid, study=hit.study, series=row)


async def _instances_of_series(
    reads: SearchReads, query: QidoQuery, series: AsyncIterator[Hit], *, series_uid: str | None = None
) -> AsyncGenerator[Hit, None]:
    async for chunk in _chunks(series, lambda: reads.wanted):
        lists = await asyncio.gather(
            *(reads.instances_of(hit.study_uid, series_uid or hit.series_uid) for hit in chunk))
        for hit, rows in zip(chunk, lists, strict=True):
            for row in newest_first(rows):
                if _matches_level(query, Level.INSTANCE, row):
                    yield Hit(hit.study_uid, study=hit.study, series=hit.series, instance=row)


async def _instances_by_uid(reads: SearchReads, query: QidoQuery, uids: tuple[str, ...]) -> AsyncGenerator[Hit, None]:
    found: list[Hit] = []
    for uid in dict.fromkeys(uids):
        async for page in reads.index_pages(partition_key(INSTANCES_BY_UID, uid)):
            for entry in (parse_entry(entity) for entity in page):
                ids = InstanceIdentifiers(entry.study, entry.series or "", entry.instance or "")
                instance = await reads.instance(ids)
                study, series = await _study_and_series(reads, ids.study, ids.series)
                if instance is None or study is None or series is None:
                    continue
                if (_study_matches(query, study) and _matches_level(query, Level.SERIES, series)
                        and _matches_level(query, Level.INSTANCE, instance)):
                    found.append(Hit(ids.study, study=study, series=series, instance=instance))
    for hit in _newest_first(found, lambda hit: hit.instance):
        yield hit


def _newest_first(found: list[Hit], row_of: Callable[[Hit], Row | None]) -> list[Hit]:
    """Order hits found by UID the way index entries are: newest row first."""
    rows = newest_first([row for row in map(row_of, found) if row is not None])
    return [next(hit for hit in found if row_of(hit) is row) for row in rows]


async def _verification_slices(
    reads: SearchReads, partition: str, low: str | None = None, high: str | None = None
) -> AsyncIterator[list[IndexEntry]]:
    """Index entries in slices of what the search still wants, so rows are read for about the page only."""
    async for page in reads.index_pages(partition, low, high):
        entries = [parse_entry(entity) for entity in page]
        start = 0
        while start < len(entries):
            size = max(MIN_SLICE, reads.wanted)
            yield entries[start:start + size]
            start += size


async def _one(hit: Hit) -> AsyncGenerator[Hit, None]:
    yield hit


async def _chunks(source: AsyncIterator[Hit], size: Callable[[], int]) -> AsyncIterator[list[Hit]]:
    """Group ``source`` into lists of about what the search still wants, to expand them concurrently."""
    chunk: list[Hit] = []
    async for item in source:
        chunk.append(item)
        if len(chunk) >= max(1, min(size(), 32)):
            yield chunk
            chunk = []
    if chunk:
        yield chunk
