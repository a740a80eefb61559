"""Change feed answers: entries of the feed with their state and metadata, in the JSON of Azure's DICOM service.

The state is read when the feed is read, from the instance's row: no row → ``Deleted``; the row holds the
entry's version → ``Current``; another version → ``Replaced`` (a ``Delete`` entry of an instance stored again
is ``Replaced`` too). As in Azure's service, ``metadata`` is the *current* version's DICOM JSON and is left
out when the instance no longer exists or ``includemetadata=false``.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
from datetime import timedelta
from http import HTTPStatus
from typing import Any

from dicom_core.changefeed.feed_reads import FeedEntry, entries_after, entries_in_window, latest_entry
from dicom_core.changefeed.query import ChangeFeedQuery
from dicom_core.changefeed.sequencer import sequence_pending
from dicom_core.index.instance_metadata import metadata_of_version
from dicom_core.index.outbox import ChangeAction
from dicom_core.index.reads import get_instance
from dicom_core.model.bulk_data import without_bulk_data
from dicom_core.model.epoch import EPOCH as _EPOCH
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance
from dicom_core.storage.clients import Storage
from dicom_core.wire.service_result import ServiceResult

LOGGER = logging.getLogger(__name__)
JSON = "application/json; charset=utf-8"
# What a read appends from the outbox before it answers; the timer appends the rest.
READ_SEQUENCE_BUDGET = 500
READ_CONCURRENCY = 16
_VERY_EARLY_US = -(2**62)
_VERY_LATE_US = 2**62


class ChangeState(enum.StrEnum):
    """The feed's ``state`` of an entry."""

    CURRENT = "Current"
    REPLACED = "Replaced"
    DELETED = "Deleted"


async def read_change_feed(storage: Storage, query: ChangeFeedQuery) -> ServiceResult:
    """Answer ``GET /v{n}/changefeed``: a JSON array of entries (possibly empty)."""
    await _sequence_quietly(storage)
    if query.by_time:
        start = query.start_us if query.start_us is not None else _VERY_EARLY_US
        end = query.end_us if query.end_us is not None else _VERY_LATE_US
        entries = await entries_in_window(storage, start, end, query.offset, query.limit)
    else:
        entries = await entries_after(storage, query.offset, query.limit)
    return _json(await describe_entries(storage, entries, include_metadata=query.include_metadata))


async def read_latest(storage: Storage, *, include_metadata: bool) -> ServiceResult:
    """Answer ``GET /v{n}/changefeed/latest``: one entry, or 204 while the feed is empty."""
    await _sequence_quietly(storage)
    entry = await latest_entry(storage)
    if entry is None:
        return ServiceResult(HTTPStatus.NO_CONTENT)
    (described,) = await describe_entries(storage, [entry], include_metadata=include_metadata)
    return _json(described)


async def describe_entries(
    storage: Storage, entries: list[FeedEntry], *, include_metadata: bool
) -> list[dict[str, Any]]:
    """Entries as Azure's JSON objects, with their state (and the current metadata) read now."""
    slots = asyncio.Semaphore(READ_CONCURRENCY)
    instances = list(dict.fromkeys(InstanceIdentifiers(e.study, e.series, e.instance) for e in entries))

    async def current(ids: InstanceIdentifiers) -> tuple[str | None, Any]:
        async with slots:
            row = await get_instance(storage, ids)
            if row is None:
                return None, None
            version = str(row["Version"])
            return version, (await _metadata(storage, StoredInstance(ids, version)) if include_metadata else None)

    found = dict(zip(instances, await asyncio.gather(*(current(ids) for ids in instances)), strict=True))
    described = []
    for entry in entries:
        version, metadata = found[InstanceIdentifiers(entry.study, entry.series, entry.instance)]
        item: dict[str, Any] = {
            "sequence": entry.sequence, "studyInstanceUid": entry.study, "seriesInstanceUid": entry.series,
            "sopInstanceUid": entry.instance, "action": entry.action.value,
            "timestamp": format_timestamp(entry.timestamp_us), "state": state_of(entry, version).value,
        }
        if metadata is not None:
            item["metadata"] = metadata
        described.append(item)
    return described


def state_of(entry: FeedEntry, current_version: str | None) -> ChangeState:
    """The state of ``entry`` given the instance's current version (None: the instance does not exist)."""
    if current_version is None:
        return ChangeState.DELETED
    if entry.action is not ChangeAction.DELETE and current_version == entry.version:
        return ChangeState.CURRENT
    return ChangeState.REPLACED


def format_timestamp(micros: int) -> str:
    """A feed timestamp as Azure writes a UTC DateTimeOffset: ISO 8601, fraction without trailing zeros, +00:00."""
    moment = _EPOCH + timedelta(microseconds=micros)
    fraction = f"{moment.microsecond:06d}".rstrip("0")
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "+00:00"


def _json(value: Any) -> ServiceResult:
    return ServiceResult(HTTPStatus.OK, body=json.dumps(value, separators=(",", ":")).encode(), media_type=JSON)


async def _metadata(storage: Storage, stored: StoredInstance) -> Any:
    data = await metadata_of_version(storage, stored)
    # Binary attributes left out, as in Azure's change feed (stored metadata may hold BulkDataURI markers).
    return json.loads(without_bulk_data(data)) if data is not None else None  # None: replaced or deleted meanwhile


async def _sequence_quietly(storage: Storage) -> None:
    """Append what is pending so the answer is fresh; a failure here must not fail the read."""
    try:
        await sequence_pending(storage, max_changes=READ_SEQUENCE_BUDGET)
    except Exception:
        LOGGER.warning("Sequencing the change feed before a read failed; answering from the feed as it is",
                       exc_info=True)
