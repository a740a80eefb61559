"""The global change feed: one partition of the Changes table, its rows, and reading it by sequence or time.

The sequencer (``sequencer.py``) appends to the ``feed`` partition: entry ``seq|{sequence}`` and its pointer
``time|{µs}|{sequence}`` (time order is sequence order), and the ``counter`` row with the last sequence. Every
append updates the counter, so a reader that reads the counter first never sees entry n+1 without entry n. A time
window is read from its first pointer on, by sequence. See docs/storage.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import EntityProperty, TableEntity

from dicom_core.index.outbox import ChangeAction
from dicom_core.storage.clients import Storage
from dicom_core.storage.tables import get_entity_or_none, query_all

FEED_PARTITION = "feed"
COUNTER_ROW = "counter"
SEQUENCE_PREFIX = "seq|"
TIME_PREFIX = "time|"
_MAX_TIME_KEY = 10**17 - 1
_RANGE_FILTER = "PartitionKey eq @partition and RowKey ge @low and RowKey le @high"
_FIRST_FILTER = "PartitionKey eq @partition and RowKey ge @low and RowKey lt @high"


def sequence_row_key(sequence: int) -> str:
    """RowKey of the feed entry with ``sequence``."""
    return f"{SEQUENCE_PREFIX}{sequence:019d}"


def time_row_key(micros: int, sequence: int) -> str:
    """RowKey of the time pointer of an entry (time order is sequence order)."""
    return f"{TIME_PREFIX}{_clamp_time(micros):017d}|{sequence:019d}"


@dataclass(frozen=True)
class FeedEntry:
    """One change as the feed recorded it."""

    sequence: int
    timestamp_us: int
    action: ChangeAction
    study: str
    series: str
    instance: str
    version: str


@dataclass(frozen=True)
class FeedCounter:
    """The counter row: the last sequence and timestamp appended, and the ETag to append after them."""

    last_sequence: int = 0
    last_timestamp_us: int = 0
    etag: str | None = None


async def read_counter(storage: Storage) -> FeedCounter:
    """The feed's counter (zero and no ETag while nothing was ever appended)."""
    row = await get_entity_or_none(storage.changes, FEED_PARTITION, COUNTER_ROW)
    if row is None:
        return FeedCounter()
    return FeedCounter(int_property(row["LastSequence"]), int_property(row["LastTimestampUs"]), row.metadata["etag"])


async def entries_after(storage: Storage, after: int, limit: int) -> list[FeedEntry]:
    """Up to ``limit`` entries with a sequence greater than ``after``, in sequence order."""
    counter = await read_counter(storage)
    return await _sequence_range(storage, after + 1, min(after + limit, counter.last_sequence))


async def entries_in_window(storage: Storage, start_us: int, end_us: int, offset: int, limit: int) -> list[FeedEntry]:
    """Entries with ``start_us <= timestamp < end_us``, skipping the first ``offset`` of them, in time order."""
    counter = await read_counter(storage)
    first = await _first_in_window(storage, start_us, end_us)
    if first is None or first > counter.last_sequence:
        return []
    low = first + offset
    entries = await _sequence_range(storage, low, min(low + limit - 1, counter.last_sequence))
    return [entry for entry in entries if entry.timestamp_us < end_us]


async def latest_entry(storage: Storage) -> FeedEntry | None:
    """The entry with the highest sequence (also the latest by time), or None for an empty feed."""
    counter = await read_counter(storage)
    if counter.last_sequence == 0:
        return None
    row = await get_entity_or_none(storage.changes, FEED_PARTITION, sequence_row_key(counter.last_sequence))
    return _entry(row) if row is not None else None


async def _first_in_window(storage: Storage, start_us: int, end_us: int) -> int | None:
    parameters = {"partition": FEED_PARTITION, "low": f"{TIME_PREFIX}{_clamp_time(start_us):017d}",
                  "high": f"{TIME_PREFIX}{_clamp_time(end_us):017d}"}
    pages = storage.changes.query_entities(_FIRST_FILTER, parameters=parameters, results_per_page=1,
                                           select=["Sequence"]).by_page()
    try:
        async for page in pages:
            async for row in page:
                return int_property(row["Sequence"])
    except ResourceNotFoundError:
        return None
    return None


async def _sequence_range(storage: Storage, low: int, high: int) -> list[FeedEntry]:
    if high < low:
        return []
    parameters = {"partition": FEED_PARTITION, "low": sequence_row_key(low), "high": sequence_row_key(high)}
    return [_entry(row) for row in await query_all(storage.changes, _RANGE_FILTER, parameters=parameters)]


def _entry(row: TableEntity) -> FeedEntry:
    return FeedEntry(
        sequence=int_property(row["Sequence"]), timestamp_us=int_property(row["TimestampUs"]),
        action=ChangeAction(row["Action"]), study=str(row["Study"]), series=str(row["Series"]),
        instance=str(row["Instance"]), version=str(row["Version"]),
    )


def _clamp_time(micros: int) -> int:
    return min(max(micros, 0), _MAX_TIME_KEY)


def int_property(value: Any) -> int:
    """An integer property as read back (Int64 properties come back as EntityProperty)."""
    return int(value.value if isinstance(value, EntityProperty) else value)
