"""Giving study rows stored before they listed their series that list (`SeriesUids`, see `rows.py`).

A study row without a list has its series read by a range query, so nothing is wrong without one; the reindex
fills them so that searches of older studies read their series by point reads too. The list is written with
`If-Match` on the study row read before its series rows: every store and delete transaction writes the study
row, so one that changed the study meanwhile wins (and the next reindex looks again).
"""

from __future__ import annotations

import functools

from azure.core.exceptions import HttpResponseError
from azure.data.tables import UpdateMode

from dicom_core.index.reads import get_study_row, series_rows
from dicom_core.index.rows import SERIES_UIDS, listed_series, with_series_listed
from dicom_core.storage.clients import Storage
from dicom_core.storage.tables import etag_of, unchanged_since


async def fill_series_list(storage: Storage, study: str) -> bool:
    """Write the study row's list of its series when it has none it can be trusted with; True when written."""
    study_row = await get_study_row(storage, study)
    if study_row is None or listed_series(study_row) is not None:
        return False
    uids = [str(row["RowKey"]).split("|", 1)[1] for row in await series_rows(storage, study, select=[])]
    written = with_series_listed({"PartitionKey": study, "RowKey": study_row["RowKey"]}, uids)
    if len(uids) != int(study_row.get("SeriesCount") or 0) or SERIES_UIDS not in written:
        return False  # counts that disagree are the repair's to correct; a list too long stays absent
    try:
        await storage.recreating_missing(functools.partial(
            storage.studies.update_entity, written, mode=UpdateMode.MERGE, **unchanged_since(etag_of(study_row))))
    except HttpResponseError:
        return False  # changed or deleted since it was read
    return True
