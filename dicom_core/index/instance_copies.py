"""Giving series rows stored before they copied an instance row their copy (`LastInstance`, see `rows.py`).

A series row without a copy is answered by reading its instance rows, so nothing is wrong without one; the
reindex fills them so that instance lists of older single-instance series read two entities per result too.
The copy is of the series' most recently updated instance row, written with `If-Match` on the series row as
read: a store or delete that changed the series meanwhile wins (and writes or drops the copy itself).
"""

from __future__ import annotations

import asyncio
import functools

from azure.core.exceptions import HttpResponseError
from azure.data.tables import TableEntity, UpdateMode

from dicom_core.index.reads import instance_rows, series_rows
from dicom_core.index.rows import LAST_INSTANCE, LAST_INSTANCE_PROPERTIES, last_instance_copy
from dicom_core.storage.clients import Storage
from dicom_core.storage.concurrency import bounded_gather
from dicom_core.storage.tables import etag_of, unchanged_since

_WRITES_IN_FLIGHT = 8


async def fill_last_instance_copies(storage: Storage, study: str) -> int:
    """Write the missing instance-row copies of the study's series rows; returns how many it wrote."""
    series, instances = await asyncio.gather(
        series_rows(storage, study, select=[LAST_INSTANCE]),
        instance_rows(storage, study, select=list(LAST_INSTANCE_PROPERTIES)))
    latest: dict[str, TableEntity] = {}
    for row in instances:
        uid = str(row["RowKey"]).split("|")[1]
        if uid not in latest or row["UpdatedAt"] > latest[uid]["UpdatedAt"]:
            latest[uid] = row
    missing = [(row, latest[key]) for row in series if not row.get(LAST_INSTANCE)
               and (key := str(row["RowKey"]).split("|", 1)[1]) in latest]
    written = await bounded_gather((_write_copy(storage, study, row, instance) for row, instance in missing),
                                   limit=_WRITES_IN_FLIGHT)
    return sum(written)


async def _write_copy(storage: Storage, study: str, series_row: TableEntity, instance_row: TableEntity) -> bool:
    entity = {"PartitionKey": study, "RowKey": series_row["RowKey"], **last_instance_copy(instance_row)}
    try:
        await storage.recreating_missing(functools.partial(
            storage.studies.update_entity, entity, mode=UpdateMode.MERGE, **unchanged_since(etag_of(series_row))))
    except HttpResponseError:
        return False  # changed or deleted since it was read: that writer kept the copy right
    return True
