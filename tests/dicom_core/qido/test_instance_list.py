"""The unfiltered instance list: the series list read in one index page where it can be, only the series the page
needs expanded, the instance rows of a study's series by one query, and at most two entities per result."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import pytest
from pydicom.uid import generate_uid

from dicom_core.model.dicom_json import json_key
from dicom_core.model.tags import SOP_INSTANCE_UID
from dicom_core.qido.query import QidoResource
from dicom_core.qido.service import SearchRequest, SearchResults, search_datasets
from dicom_core.settings import Settings
from dicom_core.storage.clients import Storage, open_storage
from tests.factories import make_instance

Stow = Callable[[Storage, list[bytes]], Awaitable[object]]


async def _archive(unit_settings: Settings, stow_parts: Stow, prefix: str,
                   shape: list[list[int]]) -> AsyncIterator[Storage]:
    """Storage of its own holding one study per item of ``shape``: its series' instance counts."""
    storage = await open_storage(replace(unit_settings, table_prefix=prefix, blob_container=f"{prefix}-files",
                                         metadata_container=f"{prefix}-metadata"))
    for counts in shape:
        study = generate_uid()
        parts = [make_instance(study=study, series=series, rows=1, columns=1)
                 for series, count in ((generate_uid(), count) for count in counts) for _ in range(count)]
        await stow_parts(storage, parts)
    yield storage
    await storage.close()


@pytest.fixture(scope="module")
async def three_instance_series(unit_settings: Settings, stow_parts: Stow) -> AsyncIterator[Storage]:
    """30 studies of two series of three instances each."""
    async for storage in _archive(unit_settings, stow_parts, "ilthree", [[3, 3]] * 30):
        yield storage


@pytest.fixture(scope="module")
async def single_instance_series(unit_settings: Settings, stow_parts: Stow) -> AsyncIterator[Storage]:
    """60 single-instance studies, then one study of a series of 40 instances (the newest)."""
    async for storage in _archive(unit_settings, stow_parts, "ilone", [[1]] * 60 + [[40]]):
        yield storage


async def _instances(storage: Storage, query: str) -> SearchResults:
    return await search_datasets(storage, SearchRequest(QidoResource.ALL_INSTANCES, 2, query))


def _uids(results: SearchResults) -> list[str]:
    return [dataset[json_key(SOP_INSTANCE_UID)]["Value"][0] for dataset in results.datasets]


async def test_the_list_reads_the_series_list_in_one_index_page(three_instance_series: Storage) -> None:
    results = await _instances(three_instance_series, "limit=24")
    # A first page of 12 series entries (half the results wanted) holds the 8 series the page needs.
    assert (len(results.datasets), results.index_queries) == (24, 1)


async def test_the_series_of_one_study_are_expanded_by_one_query(three_instance_series: Storage) -> None:
    results = await _instances(three_instance_series, "limit=24")
    # 4 studies of 2 series: 4 range queries (8 before), 12 entries, 8 series rows and 24 instance rows.
    assert (results.study_ranges, results.entities_read) == (4, 12 + 8 + 24)


@pytest.mark.parametrize(("limit", "offset"), [(10, 0), (24, 0), (7, 35), (20, 100)])
async def test_pages_of_the_list_read_at_most_two_entities_per_result(
    three_instance_series: Storage, limit: int, offset: int,
) -> None:
    every = _uids(await _instances(three_instance_series, "limit=1000"))
    results = await _instances(three_instance_series, f"limit={limit}&offset={offset}")
    assert _uids(results) == every[offset:offset + limit]
    # A series partly on the page is read whole (newest first needs all its rows): at most 2 rows past it.
    assert results.entities_read <= 2 * (offset + limit) + 2


@pytest.mark.parametrize(("limit", "offset"), [(10, 40), (20, 40), (5, 55)])
async def test_single_instance_series_cost_their_entry_and_series_row(
    single_instance_series: Storage, limit: int, offset: int,
) -> None:
    every = _uids(await _instances(single_instance_series, "limit=1000"))
    results = await _instances(single_instance_series, f"limit={limit}&offset={offset}")
    assert _uids(results) == every[offset:offset + limit]
    # The big series (the newest, 40 instances) is all on the offset; each single-instance series costs two.
    assert results.entities_read <= 2 * (offset + limit)


async def test_a_big_series_partly_on_the_page_is_read_whole_and_expanded_alone(
    single_instance_series: Storage,
) -> None:
    results = await _instances(single_instance_series, "limit=10")
    # A first page of 5 entries and their series rows (the fan-out is unknown before them); the big series alone
    # makes the page: its 40 instance rows, one range query.
    assert (len(results.datasets), results.index_queries, results.study_ranges) == (10, 1, 1)
    assert results.entities_read == 5 + 5 + 40


@pytest.fixture(scope="module")
async def nine_series_study(unit_settings: Settings, stow_parts: Stow) -> AsyncIterator[Storage]:
    """One study of nine series of two instances each."""
    async for storage in _archive(unit_settings, stow_parts, "ilnine", [[2] * 9]):
        yield storage


async def test_a_query_names_at_most_seven_series_of_a_study(nine_series_study: Storage) -> None:
    results = await _instances(nine_series_study, "limit=18")
    # Azure allows 15 comparisons in a filter: the partition's and two per series, so 7 series, then 2.
    assert (len(results.datasets), results.study_ranges, results.entities_read) == (18, 2, 9 + 9 + 18)
