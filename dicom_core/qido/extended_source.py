"""Where a search driven by an extended tag gets its results: the tag's entries in key order, page by page, each
turned into results by the rows a result needs anyway, so a page reads about two entities per result.

A study- or series-level tag's entries point at studies (series) and are current by construction
(`search_index.extended_current`): an entry and its study (series) row make a result, and a missing row (the
study or series was deleted) drops it. An instance-level tag's entries hold their instance's version: the
instance row read for the result must still have it (an entry of a replaced or deleted instance is read and
skipped: a page of an archive where many values were replaced reads those entries too). Results above the
tag's level are expanded from the rows of the study or series (every series of a study, every instance of a
series). They come in the order of the entries: by value, then by UID.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, replace
from typing import cast

from azure.core.async_paging import AsyncPageIterator
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableEntity

from dicom_core.index.rows import STUDY_ATTRIBUTES_COPY
from dicom_core.model.identifiers import InstanceIdentifiers
from dicom_core.model.levels import Level
from dicom_core.model.tags import MODALITIES_IN_STUDY
from dicom_core.qido.candidates import Hit, needs_study_row
from dicom_core.qido.extended_filters import DrivingFilter
from dicom_core.qido.matching import matches
from dicom_core.qido.query import QidoQuery
from dicom_core.qido.reads import FIRST_EXPANSION, MAX_PAGE, Row, SearchReads, newest_first, parents_for
from dicom_core.search_index.extended import (
    ENTRY_COLUMNS,
    EntryRange,
    entry_element,
    entry_instance,
    entry_match,
    entry_matches,
    entry_ranges,
)
from dicom_core.search_index.keys import study_row_modalities

_QUERY = "PartitionKey eq @p and RowKey ge @low and RowKey lt @high"
# The first page of entries whose results expand reads 1 / FIRST_PAGE_SHARE of the results wanted (a quarter): its
# entries beyond those expanded cost one entity each, so studies of up to 3/4 as many series as the results wanted
# stay within 2 per result.
FIRST_PAGE_SHARE = 4


@dataclass
class _Rate:
    """Entries turned into results so far: how many entries the search reads next, and how many it expands at once.

    Reading and expanding differ when results expand (series of a study-level tag's studies): an entry is one
    entity, but a page is one query into the Table that holds every extended tag's entries (on Azurite a scan of
    all of them), so a page reads ahead and its entries are expanded chunk by chunk at the fan-out so far.
    """

    expands: bool  # results are below the tag's level (an entry may give several)
    entries: int = 0
    results: int = 0

    def to_read(self, wanted: int) -> int:
        """Entries the next page reads for ``wanted`` more results: at the rate so far (double while none gave one);
        before any rate is known, ``wanted``, or 1 / FIRST_PAGE_SHARE of it (at most FIRST_EXPANSION) when results
        expand, so a few matching studies are one page whose unexpanded entries stay within the entity bound."""
        if self.entries == 0:
            return min(FIRST_EXPANSION, max(1, wanted // FIRST_PAGE_SHARE)) if self.expands else max(1, wanted)
        if self.results == 0:
            return self.entries  # none gave a result yet: double what was read
        return max(1, -(-wanted * self.entries // self.results))

    def to_expand(self, wanted: int) -> int:
        """Entries expanded at once for ``wanted`` more results: one before the fan-out is known, then UNDER_ASK of
        what the fan-out so far suggests (an entry of a bigger study than those so far rarely overshoots)."""
        if not self.expands:
            return self.to_read(wanted)
        if self.entries == 0:
            return 1
        if self.results == 0:
            return self.entries
        return parents_for(wanted, self.results / self.entries, estimated=True)


async def extended_hits(reads: SearchReads, query: QidoQuery, driving: DrivingFilter) -> AsyncGenerator[Hit, None]:
    """The verified results of ``query`` in the order of the driving filter's entries."""
    tag = driving.tag.indexed
    rate = _Rate(expands=tag.level is not query.resource.result_level)
    seen: set[str] = set()  # a name's entries under two words it has both fall in one word range
    async for page in _entry_pages(reads, entry_ranges(tag, driving.condition), rate):
        rows = []
        for row in page:
            target = str(row["RowKey"]).rsplit("!", 1)[-1]
            if entry_matches(driving.condition, row) and target not in seen:
                seen.add(target)
                rows.append(row)
        start = 0
        while start < len(rows) and reads.wanted > 0 and not reads.exhausted:
            chunk = rows[start:start + rate.to_expand(reads.wanted)]
            start += len(chunk)
            found = await asyncio.gather(*(_results(reads, query, tag.level, row) for row in chunk))
            rate.entries += len(chunk)
            rate.results += sum(map(len, found))
            for row, hits in zip(chunk, found, strict=True):
                element = entry_element(row)  # the value the filter matched: the result answers it, reading no blob
                for hit in hits:
                    yield replace(hit, known={tag.json_key: element}) if element else hit


async def _entry_pages(reads: SearchReads, ranges: list[EntryRange], rate: _Rate) -> AsyncIterator[list[TableEntity]]:
    """The entries of ``ranges``, each page what the search still wants at the rate entries became results."""
    for part in ranges:
        token = None
        while not reads.exhausted and reads.wanted > 0:
            pager = cast(AsyncPageIterator[TableEntity], reads.storage.index.query_entities(
                _QUERY, parameters={"p": part.partition, "low": part.low, "high": part.high},
                results_per_page=min(MAX_PAGE, rate.to_read(reads.wanted)), select=ENTRY_COLUMNS,
            ).by_page(continuation_token=token))
            try:
                page = [entity async for entity in await pager.__anext__()]
            except (StopAsyncIteration, ResourceNotFoundError):
                break
            reads.entities += len(page)
            token = pager.continuation_token
            if page:
                yield page
            if not token:
                break


async def _results(reads: SearchReads, query: QidoQuery, level: Level, entry: TableEntity) -> list[Hit]:
    """The results one entry gives: its study, series or instance, or those below it at the query's level."""
    match = entry_match(entry)
    result_level = query.resource.result_level
    if level is Level.INSTANCE:
        stored = entry_instance(entry)
        if stored is None:
            return []
        instance = await reads.instance(stored.ids)
        if instance is None or str(instance.entity.get("Version")) != stored.version:
            return []
        return await _with_parents(reads, query, stored.ids, instance)
    if level is Level.SERIES:
        assert match.series is not None
        series, study = await _series_and_study(reads, query, match.study, match.series)
        if series is None or study is None or not _fits(query, Level.STUDY, study) \
                or not _fits(query, Level.SERIES, series):
            return []
        if result_level is Level.SERIES:
            return [Hit(match.study, study=study, series=series)]
        return await _instances(reads, query, study, series)
    study = await reads.study(match.study) if result_level is Level.STUDY or needs_study_row(query) else None
    if result_level is Level.STUDY:
        return [Hit(match.study, study=study)] if study is not None and _fits(query, Level.STUDY, study) else []
    series_rows = await reads.series_of(match.study)
    if not series_rows:
        return []
    if study is None:
        study = await reads.study_of(match.study, next(
            (row for row in series_rows if row.entity.get(STUDY_ATTRIBUTES_COPY)), series_rows[0]))
    if study is None or not _fits(query, Level.STUDY, study):
        return []
    chosen = [row for row in newest_first(series_rows) if _fits(query, Level.SERIES, row)]
    if result_level is Level.SERIES:
        return [Hit(match.study, study=study, series=row) for row in chosen]
    return [hit for found in await asyncio.gather(*(_instances(reads, query, study, row) for row in chosen))
            for hit in found]


async def _with_parents(reads: SearchReads, query: QidoQuery, ids: InstanceIdentifiers, instance: Row) -> list[Hit]:
    series, study = await _series_and_study(reads, query, ids.study, ids.series)
    if series is None or study is None or not all(
            _fits(query, level, row) for level, row in ((Level.STUDY, study), (Level.SERIES, series),
                                                          (Level.INSTANCE, instance))):
        return []
    return [Hit(ids.study, study=study, series=series, instance=instance)]


async def _instances(reads: SearchReads, query: QidoQuery, study: Row, series: Row) -> list[Hit]:
    study_uid = str(study.entity["PartitionKey"])
    rows = await reads.instances_of(study_uid, series.row_key.split("|", 1)[1])
    return [Hit(study_uid, study=study, series=series, instance=row) for row in newest_first(rows)
            if _fits(query, Level.INSTANCE, row)]


async def _series_and_study(reads: SearchReads, query: QidoQuery, study: str, series: str) -> tuple[Row | None,
                                                                                               Row | None]:
    """A series row and its study's attributes: the series row's copy, unless the study row itself is needed."""
    if needs_study_row(query):
        series_row, study_row = await asyncio.gather(reads.series(study, series), reads.study(study))
        return series_row, study_row
    series_row = await reads.series(study, series)
    return series_row, (None if series_row is None else await reads.study_of(study, series_row))


def _fits(query: QidoQuery, level: Level, row: Row) -> bool:
    modalities = study_row_modalities(row.entity) if level is Level.STUDY and query.condition(MODALITIES_IN_STUDY) \
        else set()
    return all(matches(condition, row.attributes, modalities) for condition in query.conditions
               if condition.level is level)
