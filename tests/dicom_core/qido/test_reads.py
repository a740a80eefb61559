"""Counted reads of a search: index pages that grow from what the search wants, rows read once, the budget."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from pydicom.uid import generate_uid

from dicom_core.qido.reads import SearchReads
from dicom_core.settings import Settings
from dicom_core.storage.clients import Storage, open_storage
from tests.factories import make_dataset, to_bytes

PARTITION = "test.pages"


@pytest.fixture(scope="module")
async def reads_storage(unit_settings: Settings) -> AsyncIterator[Storage]:
    """A Storage with tables of its own and one index partition of 300 entries."""
    storage = await open_storage(replace(unit_settings, table_prefix="qreads", blob_container="qreads-files",
                                         metadata_container="qreads-metadata"))
    for start in range(0, 300, 100):  # 100 at a time, the most a transaction holds
        await storage.index.submit_transaction(
            [("upsert", {"PartitionKey": PARTITION, "RowKey": f"{i:04d}|1.2"}) for i in range(start, start + 100)])
    yield storage
    await storage.close()


async def test_pages_start_at_what_is_wanted_and_double(reads_storage: Storage) -> None:
    reads = SearchReads(reads_storage, budget=10_000, wanted=20)
    pages = [page async for page in reads.index_pages(PARTITION)]
    assert [(len(page.entities), page.last) for page in pages] == [(20, False), (40, False), (80, False), (160, True)]
    assert reads.entities == 300


async def test_later_pages_are_what_is_still_wanted_at_the_rate_entries_turned_into_results(
    reads_storage: Storage,
) -> None:
    reads = SearchReads(reads_storage, budget=10_000, wanted=40)
    sizes = []
    async for page in reads.index_pages(PARTITION):
        sizes.append(len(page.entities))
        reads.wanted -= len(page.entities) // 4  # one entry in four turned into a result
        if reads.wanted <= 0:
            break
    assert sizes == [40, 120]  # then 30 more wanted, at 4 entries a result


async def test_an_expansion_asks_its_source_for_the_wanted_over_the_fan_out(reads_storage: Storage) -> None:
    reads = SearchReads(reads_storage, budget=10_000, wanted=100)
    assert reads.demand() == 100
    reads.expanded("instances")
    assert reads.demand() == 8  # a few parents first, to learn the fan-out
    reads.expanded("instances", 8, 20)
    reads.wanted = 80
    # 80 at 2.5 instances a series: 32 series, of which UNDER_ASK (3/4), so a batch of larger series than the
    # average so far rarely reads series past the page.
    assert reads.demand() == reads.demand("instances") == 24
    reads.expanded("series")
    reads.expanded("series", 2, 8)
    assert (reads.demand(), reads.demand("series"), reads.demand("instances")) == (6, 6, 24)  # 10 a study


async def test_an_expansion_first_asks_for_at_most_half_the_results_wanted(reads_storage: Storage) -> None:
    reads = SearchReads(reads_storage, budget=10_000, wanted=5)
    reads.expanded("instances")
    assert reads.demand() == 3  # a parent makes one result or more



async def test_a_source_feeding_an_expansion_first_reads_half_the_results_wanted(reads_storage: Storage) -> None:
    reads = SearchReads(reads_storage, budget=10_000, wanted=100)
    reads.expanded("instances")
    first = await anext(aiter(reads.index_pages(PARTITION)))
    # Each parent makes a result or more: half the results wanted usually holds every parent, in one query.
    assert (len(first.entities), reads.index_queries) == (50, 1)
    assert reads.demand() == 8  # their rows are read a few at a time until the fan-out is known


async def test_waiting_parents_whose_rows_count_their_children_give_the_fan_out(reads_storage: Storage) -> None:
    reads = SearchReads(reads_storage, budget=10_000, wanted=100)
    reads.expanded("instances")
    reads.waiting("instances", 8, 40)
    assert reads.demand() == 9  # 60 more at 5 a series: 12, of which UNDER_ASK (3/4)

async def test_a_list_without_expansion_asks_for_what_it_wants(reads_storage: Storage) -> None:
    reads = SearchReads(reads_storage, budget=10_000, wanted=1)
    pages = [page async for page in reads.index_pages(PARTITION)]
    assert [len(page.entities) for page in pages][:3] == [1, 2, 4]  # no floor: one, then double while none came


async def test_a_range_reads_only_its_entries(reads_storage: Storage) -> None:
    reads = SearchReads(reads_storage, budget=10_000, wanted=100)
    pages = [page async for page in reads.index_pages(PARTITION, low="0100", high="0110")]
    assert [e["RowKey"] for page in pages for e in page.entities] == [f"{i:04d}|1.2" for i in range(100, 110)]


async def test_reading_stops_at_the_budget(reads_storage: Storage) -> None:
    reads = SearchReads(reads_storage, budget=60, wanted=20)
    sizes = [len(page.entities) async for page in reads.index_pages(PARTITION)]
    assert (sizes, reads.exhausted) == ([20, 40], True)


async def test_no_page_asks_for_more_than_the_budget_has_left(reads_storage: Storage) -> None:
    reads = SearchReads(reads_storage, budget=50, wanted=20)
    sizes = [len(page.entities) async for page in reads.index_pages(PARTITION)]
    assert (sizes, reads.entities) == ([20, 30], 50)


async def test_a_row_is_read_once_per_search(reads_storage: Storage, stow_parts) -> None:
    study = generate_uid()
    assert (await stow_parts(reads_storage, [to_bytes(make_dataset(study=study))])).status == 200
    reads = SearchReads(reads_storage, budget=10_000)
    first, second = await reads.study(study), await reads.study(study)
    assert (first is second, reads.entities) == (True, 1)


async def test_a_missing_row_costs_nothing(reads_storage: Storage) -> None:
    reads = SearchReads(reads_storage, budget=10_000)
    assert (await reads.study("1.2.3.999"), reads.entities) == (None, 0)
