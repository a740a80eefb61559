"""The entries of an index range a search reads, page by page, in the order its results take (see the
docstring of qido/candidates.py), and in slices of what the search still wants of them."""

from __future__ import annotations

from collections.abc import AsyncIterator

from dicom_core.qido.index_ranges import IndexRange
from dicom_core.qido.query import QidoQuery
from dicom_core.qido.reads import SearchReads
from dicom_core.search_index.keys import IndexEntry, parse_entry


async def verification_slices(
    reads: SearchReads, query: QidoQuery, index: IndexRange,
) -> AsyncIterator[list[IndexEntry]]:
    """Index entries in slices of what the search still wants, so rows are read for about the page only."""
    # Results below the entries' level: any value-led range in index order (see qido/candidates.py).
    newest_first_below = query.limit if index.level is query.resource.result_level else 0
    async for entries in index_entries(reads, index, newest_first_below=newest_first_below):
        start = 0
        while start < len(entries):
            size = max(1, reads.demand())  # 0: the estimates fell short, the search still pulls
            yield entries[start:start + size]
            start += size


async def index_entries(
    reads: SearchReads, index: IndexRange, *, newest_first_below: int,
) -> AsyncIterator[list[IndexEntry]]:
    """The entries of an index range, page by page; a value-led range of fewer than ``newest_first_below``
    entries (the search's limit), newest first.

    Whether a value-led range is answered newest first depends on its number of entries and the limit only,
    not on the offset, so offset pages of one search never mix the two orders.
    """
    held_up_to = newest_first_below - 1  # the most entries a range answered newest first has
    held: list[IndexEntry] | None = [] if index.by_word else None
    first = newest_first_below if index.by_word else 1  # a value-led range's first page: is it below the limit?
    async for page in reads.index_pages(index.partition, index.low, index.high, first_at_least=first):
        entries = [parse_entry(entity) for entity in page.entities]
        if held is None:
            yield entries
            continue
        held += entries
        if page.last and len(held) <= held_up_to:
            yield sorted(held, key=lambda entry: (entry.sort_key, entry.study))
            held = None
        elif page.last or len(held) > held_up_to:
            yield held
            held = None
    if held:
        yield held
