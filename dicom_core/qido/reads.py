"""The reads of one search, counted: index entries in growing pages, rows of study partitions (each read
once), and instance metadata blobs. The count is the search's cost, logged and optionally sent as a header."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar, cast

from azure.core.async_paging import AsyncPageIterator
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableEntity

from dicom_core.index.instance_metadata import metadata_of_version
from dicom_core.index.reads import (
    SERIES_PER_QUERY,
    get_row,
    instance_rows,
    instance_rows_of_series,
    series_and_instance_rows,
    series_rows,
)
from dicom_core.index.rows import (
    LAST_INSTANCE,
    LAST_INSTANCE_PROPERTIES,
    STUDY_ATTRIBUTES_COPY,
    STUDY_ROW,
    instance_row_key,
    series_row_key,
)
from dicom_core.model.dicom_json import JsonDataset
from dicom_core.model.epoch import EPOCH
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance
from dicom_core.storage.clients import Storage
from dicom_core.storage.tables import get_entity_or_none

T = TypeVar("T")
# Instance rows carry the frame index (up to 30,000 characters): a search never needs it.
INSTANCE_COLUMNS = ["Version", "Modality", "Attributes", "CreatedAt", "UpdatedAt"]
SERIES_COLUMNS = ["InstanceCount", "Modality", "Attributes", STUDY_ATTRIBUTES_COPY, "CreatedAt", "UpdatedAt",
                  LAST_INSTANCE, *(LAST_INSTANCE + name for name in LAST_INSTANCE_PROPERTIES)]
MAX_PAGE = 1000  # Table Storage returns at most 1000 entities per request
# Hits a source supplies to an expansion (series of studies, instances of series) before its fan-out is known:
# at most this many, and at most half the results wanted (a parent may make several).
FIRST_EXPANSION = 8
# Parents of an expansion asked for at its fan-out so far: this share of the estimate, so a batch whose parents
# make more results than the average so far rarely reads parents past the page; the last few come one at a time.
UNDER_ASK = 0.75
POINT_READ_CONCURRENCY = 32


@dataclass(frozen=True)
class Row:
    """A row of a study partition with its Attributes parsed."""

    entity: TableEntity
    attributes: JsonDataset

    @property
    def row_key(self) -> str:
        """The row's RowKey."""
        return str(self.entity["RowKey"])

    @property
    def created(self) -> datetime:
        """When the row was first committed."""
        return self.entity.get("CreatedAt") or EPOCH

    @property
    def updated(self) -> datetime:
        """When the row was last committed."""
        return self.entity.get("UpdatedAt") or self.created


@dataclass(frozen=True)
class IndexPage:
    """A page of index entries, and whether it is the last of its range."""

    entities: list[TableEntity]
    last: bool


def first_parents(wanted: int) -> int:
    """Parents an expansion asks for before its fan-out is known."""
    return min(FIRST_EXPANSION, math.ceil(wanted / 2))


def parents_for(results: float, fan_out: float, *, estimated: bool) -> int:
    """Parents (index entries) to read for ``results`` more at ``fan_out`` (> 0) results per parent so far; when
    the parents are expanded (their fan-out ``estimated`` from those so far), UNDER_ASK of that (at least one)."""
    if results <= 0:
        return 0
    if not estimated:
        return math.ceil(results / fan_out)
    return max(1, math.floor(results * UNDER_ASK / fan_out))


def newest_first(rows: list[Row]) -> list[Row]:
    """Sort rows by first commit, newest first (RowKey breaks ties, so pages are stable)."""
    return sorted(sorted(rows, key=lambda row: row.row_key), key=lambda row: row.created, reverse=True)


@dataclass
class SearchReads:
    """Counted, cached reads of one search, and how many more results it still wants."""

    storage: Storage
    budget: int
    wanted: int = 0
    entities: int = 0
    blobs: int = 0
    study_ranges: int = 0  # range queries into study partitions (on Azurite, each a scan of a Studies Table)
    index_queries: int = 0  # pages of index ranges (on Azurite, each a scan of an index Table)
    _cache: dict[tuple[str, ...], asyncio.Task[object]] = field(default_factory=dict)
    _slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(POINT_READ_CONCURRENCY))
    # studies whose series and instance rows are read at once, if they are at most this many
    _together: dict[str, int] = field(default_factory=dict)
    _expansions: dict[str, tuple[int, int]] = field(default_factory=dict)  # stage -> (parents, children)
    # stage -> (parents gathered, not yet expanded; their children as their rows count them, 0 if unknown)
    _waiting: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def exhausted(self) -> bool:
        """Tell whether the search has read its budget of entities."""
        return self.entities >= self.budget

    def demand(self, stage: str | None = None) -> int:
        """Parents an expansion ``stage`` still wants (hits of the source, when None): results over the fan-out.

        Stages start in order from the results up (instances of series, then series of studies), so the
        parents of a stage yield results through it and the stages started before it. Parents waiting in the
        stages before ``stage`` (all stages, when None) count as the results they are expected to make.
        """
        fan_out, wanted = 1.0, float(self.wanted)
        for name, (parents, children) in self._expansions.items():
            if name == stage:
                return parents_for(wanted, max(1.0, fan_out * children / parents), estimated=True) if parents \
                    else first_parents(self.wanted)
            waiting, known = self._waiting.get(name, (0, 0))
            if parents == 0 and not known:
                return max(0, first_parents(self.wanted) - waiting)
            wanted -= self._waiting_results(name, fan_out)
            # Before the stage expands anything, its waiting parents' rows count their children: the fan-out so far.
            fan_out *= children / parents if parents else known / waiting
        return parents_for(wanted, max(1.0, fan_out), estimated=bool(self._expansions))

    def first_page(self) -> int:
        """Entries a source's first index page asks for: what it still wants; when it feeds expansions whose
        fan-out is unknown, half the results wanted (each parent makes one result or more).

        Such a page usually holds every parent the search needs, so one index query serves it (on Azurite each is
        a scan of the index Table), and it costs at most half the bound of two entities per result: a parent
        expanded costs its entry, its row and its children's rows, about two per result at worst, and only
        the parents the results still wanted need are expanded (their rows count their children).
        """
        if self._expansions and not any(parents for parents, _ in self._expansions.values()):
            return max(self.demand(), math.ceil(self.outstanding() / 2))
        return self.demand()

    def outstanding(self) -> int:
        """Results still wanted, less those the parents waiting in expansion stages are expected to make."""
        fan_out, wanted = 1.0, float(self.wanted)
        for name, (parents, children) in self._expansions.items():
            wanted -= self._waiting_results(name, fan_out)
            fan_out *= children / parents if parents else 1.0
        return max(0, math.ceil(wanted))

    def _waiting_results(self, stage: str, fan_out: float) -> float:
        """Results the parents waiting in ``stage`` are expected to make (``fan_out``: of the stages after it)."""
        parents, known = self._waiting.get(stage, (0, 0))
        expanded_parents, expanded_children = self._expansions.get(stage, (0, 0))
        children = float(known) if known or not expanded_parents else parents * expanded_children / expanded_parents
        return max(float(parents), children) * max(1.0, fan_out)

    def expanded(self, stage: str, parents: int = 0, children: int = 0) -> None:
        """Count the results an expansion stage made of its parents (none yet: the stage starts)."""
        before = self._expansions.get(stage, (0, 0))
        self._expansions[stage] = (before[0] + parents, before[1] + children)

    def waiting(self, stage: str, parents: int, children: int = 0) -> None:
        """Note how many parents wait in ``stage`` to be expanded together, and their children if known (0: not)."""
        self._waiting[stage] = (parents, children)

    async def study(self, study: str) -> Row | None:
        """The study row, or None."""
        return await self._once(("study", study), lambda: self._point(study, STUDY_ROW))

    async def series(self, study: str, series: str) -> Row | None:
        """A series row, or None."""
        return await self._once(("series", study, series), lambda: self._point(study, series_row_key(series)))

    async def study_of(self, study: str, series: Row) -> Row | None:
        """The study attributes of a series row's study: its copy of them, or (a row without one) the study row.

        A copy answers the study's Attributes only, not its counts or modalities.
        """
        copy = series.entity.get(STUDY_ATTRIBUTES_COPY)
        if not copy:
            return await self.study(study)
        entity = TableEntity(PartitionKey=study, RowKey=STUDY_ROW, Attributes=copy)
        return Row(entity, json.loads(str(copy)))

    async def instance(self, ids: InstanceIdentifiers) -> Row | None:
        """An instance row, or None."""
        key = ("instance", ids.study, ids.series, ids.instance)
        return await self._once(key, lambda: self._point(ids.study, instance_row_key(ids.series, ids.instance)))

    def read_together(self, study: str, most: int) -> None:
        """Have the series and instance rows of ``study`` read together by one range query (their RowKeys are
        adjacent) when they are at most ``most``: one request instead of one per series (each a Table scan on
        Azurite); a bigger study is read series by series after that first page."""
        self._together[study] = most

    async def series_of(self, study: str) -> list[Row]:
        """Every series row of a study."""
        if (together := await self._rows_of(study)) is not None:
            return [row for row in together if row.row_key.startswith("series|")]
        return await self._once(
            ("series-of", study), lambda: self._range(series_rows(self.storage, study, select=SERIES_COLUMNS)))

    def last_instance(self, study: str, series: Row) -> Row | None:
        """The instance row a series row copies (its last stored instance), or None when it has no copy."""
        uid = series.entity.get(LAST_INSTANCE)
        if not uid:
            return None
        entity = TableEntity(PartitionKey=study, RowKey=instance_row_key(series.row_key.split("|", 1)[1], str(uid)),
                             Modality=series.entity.get("Modality") or "",
                             **{name: series.entity.get(LAST_INSTANCE + name) for name in LAST_INSTANCE_PROPERTIES})
        return _row(entity)

    async def instances_of(self, study: str, series: str | None = None) -> list[Row]:
        """The instance rows of a series, or of a whole study."""
        if (together := await self._rows_of(study)) is not None:
            prefix = instance_row_key(series, "") if series else "instance|"
            return [row for row in together if row.row_key.startswith(prefix)]
        return await self._once(
            ("instances-of", study, series or ""),
            lambda: self._range(instance_rows(self.storage, study, series, select=INSTANCE_COLUMNS)),
        )

    async def instances_of_series(self, study: str, series: list[str]) -> list[list[Row]]:
        """The instance rows of each of some series of a study: by one query for up to SERIES_PER_QUERY of them."""
        if len(series) == 1 or study in self._together:
            return list(await asyncio.gather(*(self.instances_of(study, uid) for uid in series)))

        async def read(group: list[str]) -> list[Row]:
            return await self._once(("instances-of", study, *group), lambda: self._range(
                instance_rows_of_series(self.storage, study, group, select=INSTANCE_COLUMNS)))

        groups = [series[start:start + SERIES_PER_QUERY] for start in range(0, len(series), SERIES_PER_QUERY)]
        rows = [row for rows_of_group in await asyncio.gather(*map(read, groups)) for row in rows_of_group]
        return [[row for row in rows if row.row_key.startswith(instance_row_key(uid, ""))] for uid in series]

    async def _rows_of(self, study: str) -> list[Row] | None:
        """The series and instance rows of a study read together, or None (not asked for, or more than allowed)."""
        if study not in self._together:
            return None

        async def read() -> list[Row] | None:
            self.study_ranges += 1
            async with self._slots:
                entities, complete = await series_and_instance_rows(
                    self.storage, study, select=[*INSTANCE_COLUMNS, *SERIES_COLUMNS], most=self._together[study])
            self.entities += len(entities)
            return [_row(entity) for entity in entities] if complete else None

        rows = await self._once(("rows-of", study), read)
        if rows is None:
            self._together.pop(study, None)
        return rows

    async def metadata(self, stored: StoredInstance) -> JsonDataset:
        """The instance's DICOM JSON from its metadata blob ({} when the blob is gone)."""

        async def read() -> JsonDataset:
            self.blobs += 1
            data = await metadata_of_version(self.storage, stored)
            return json.loads(data) if data is not None else {}  # {}: replaced or deleted since the row was read

        ids = stored.ids
        return await self._once(("metadata", ids.study, ids.series, ids.instance, stored.version), read)

    async def index_pages(
        self, partition: str, low: str | None = None, high: str | None = None, *, first_at_least: int = 1,
    ) -> AsyncIterator[IndexPage]:
        """Yield the entries of an index partition in RowKey order (from ``low``, before ``high``), page by page.

        The first page is ``first_page`` (no fixed floor but ``first_at_least``); each further page what it still
        wants at the rate entries turned into results so far (double the last page while none did), so a page
        costs about what it returns. No page asks for more than the budget has left.
        """
        query = "PartitionKey eq @pk"
        query += (" and RowKey ge @low" if low else "") + (" and RowKey lt @high" if high else "")
        parameters = {"pk": partition, "low": low, "high": high}
        # What the source still wants: the results over the fan-out of the expansions that follow it, if any.
        size, token = max(first_at_least, self.first_page()), None
        first_wanted, read = self.outstanding(), 0
        while not self.exhausted:
            size = max(1, min(size, MAX_PAGE, self.budget - self.entities))
            pager = cast(AsyncPageIterator[TableEntity], self.storage.index.query_entities(
                query, parameters=parameters, results_per_page=size, select=["PartitionKey", "RowKey"]
            ).by_page(continuation_token=token))  # typed as a plain AsyncIterator, which has no token
            self.index_queries += 1
            try:
                page = [entity async for entity in await pager.__anext__()]
            except (StopAsyncIteration, ResourceNotFoundError):
                return
            self.entities += len(page)
            read += len(page)
            token = pager.continuation_token
            if page or not token:
                yield IndexPage(page, last=not token)
            if not token:
                return
            outstanding = self.outstanding()
            found = first_wanted - outstanding  # results the pages so far turned (or are expected to turn) into
            size = max(1, parents_for(outstanding, found / read, estimated=bool(self._expansions))) if found > 0 \
                else size * 2

    async def index_entity(self, partition: str, row_key: str) -> TableEntity | None:
        """One entity of the index table with every property (a UID lookup's targets), or None."""
        async with self._slots:
            entity = await get_entity_or_none(self.storage.index, partition, row_key)
        self.entities += entity is not None
        return entity

    async def _point(self, partition: str, row_key: str) -> Row | None:
        async with self._slots:
            entity = await get_row(self.storage, partition, row_key)
        if entity is None:
            return None
        self.entities += 1
        return _row(entity)

    async def _range(self, read: Awaitable[list[TableEntity]]) -> list[Row]:
        self.study_ranges += 1
        async with self._slots:
            entities = await read
        self.entities += len(entities)
        return [_row(entity) for entity in entities]

    async def _once(self, key: tuple[str, ...], read: Callable[[], Awaitable[T]]) -> T:
        task = self._cache.get(key)
        if task is None:
            task = self._cache[key] = asyncio.ensure_future(read())
        return await task  # type: ignore[return-value]


def _row(entity: TableEntity) -> Row:
    return Row(entity, json.loads(str(entity.get("Attributes") or "{}")))
