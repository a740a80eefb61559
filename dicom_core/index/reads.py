"""Reads of a study partition for retrieval: one row by key, or the rows of one RowKey range."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableEntity

from dicom_core.index.rows import STUDY_ROW, instance_row_key, series_row_key
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance
from dicom_core.storage.clients import Storage
from dicom_core.storage.tables import get_entity_or_none, query_all, read_etag

# '}' sorts right after '|', so `prefix|` up to `prefix}` is exactly the keys starting with `prefix|`.
_RANGE_END = "}"
_RANGE_FILTER = "PartitionKey eq @study and RowKey gt @low and RowKey lt @high"
# Azure Table Storage allows at most 15 comparisons in a filter: the partition's and two per series.
SERIES_PER_QUERY = 7
# The first batch of `instance_row_batches` is small: a Table query answers a few rows sooner than many.
FIRST_BATCH_ROWS = 16


async def get_row(storage: Storage, study: str, row_key: str, select: list[str] | None = None) -> TableEntity | None:
    """Return one row of the study partition (only the ``select`` properties, if given), or None."""
    return await get_entity_or_none(storage.studies, study, row_key, select)


async def row_etag(storage: Storage, study: str, row_key: str) -> str | None:
    """Return the ETag of one row of the study partition (what a revalidation or a kept copy needs), or None."""
    return await read_etag(storage.studies, study, row_key)


async def get_study_row(storage: Storage, study: str) -> TableEntity | None:
    """Return the study row, or None."""
    return await get_row(storage, study, STUDY_ROW)


async def get_series_row(storage: Storage, study: str, series: str) -> TableEntity | None:
    """Return the series row, or None."""
    return await get_row(storage, study, series_row_key(series))


async def get_instance(storage: Storage, ids: InstanceIdentifiers) -> TableEntity | None:
    """Return the instance row, or None."""
    return await get_row(storage, ids.study, instance_row_key(ids.series, ids.instance))


async def instance_rows(
    storage: Storage, study: str, series: str | None = None, *, select: Sequence[str] | None = None
) -> list[TableEntity]:
    """Return the instance rows of a study, or of one of its series, in RowKey order."""
    return await _range(storage, study, _instance_prefix(series), select)


async def instance_rows_of_series(
    storage: Storage, study: str, series: Sequence[str], *, select: Sequence[str] | None = None
) -> list[TableEntity]:
    """Return the instance rows of some series (at most SERIES_PER_QUERY) of a study in RowKey order, by one query
    (on Azurite every query scans its Table: one for the study instead of one per series)."""
    if len(series) > SERIES_PER_QUERY:
        raise ValueError(f"a filter holds the ranges of at most {SERIES_PER_QUERY} series, not {len(series)}")
    # Spaces around every parameter: the SDK substitutes whitespace-separated words only.
    ranges = " or ".join(f"( RowKey gt @low{i} and RowKey lt @high{i} )" for i in range(len(series)))
    parameters = {"study": study}
    for i, uid in enumerate(series):
        parameters[f"low{i}"], parameters[f"high{i}"] = _key_range(_instance_prefix(uid))
    return await query_all(storage.studies, f"PartitionKey eq @study and ( {ranges} )", parameters=parameters,
                           select=_columns(select))


async def instance_row_batches(
    storage: Storage, study: str, series: str | None = None, *, select: Sequence[str] | None = None,
    first: int = FIRST_BATCH_ROWS,
) -> AsyncGenerator[list[TableEntity], None]:
    """Yield the instance rows of a study or series in RowKey order: at most ``first`` rows, then all the others."""
    low, high = _key_range(_instance_prefix(series))
    parameters, columns = {"study": study, "low": low, "high": high}, _columns(select)
    try:
        pages = storage.studies.query_entities(_RANGE_FILTER, parameters=parameters, select=columns,
                                               results_per_page=first).by_page()
        batch = [row async for row in await anext(pages, _no_rows())]
    except ResourceNotFoundError:
        return  # the table itself is gone: nothing is stored
    yield batch
    token = getattr(pages, "continuation_token", None)
    if token:
        rest = storage.studies.query_entities(_RANGE_FILTER, parameters=parameters, select=columns)
        yield [row async for page in rest.by_page(continuation_token=token) async for row in page]


async def _no_rows() -> AsyncIterator[TableEntity]:
    rows: tuple[TableEntity, ...] = ()
    for row in rows:
        yield row


async def series_rows(storage: Storage, study: str, *, select: Sequence[str] | None = None) -> list[TableEntity]:
    """Return the series rows of a study in RowKey order."""
    return await _range(storage, study, "series|", select)


async def series_and_instance_rows(
    storage: Storage, study: str, *, select: Sequence[str] | None = None, most: int,
) -> tuple[list[TableEntity], bool]:
    """Return at most ``most`` instance rows, then series rows, of a study from one range query (`instance|` RowKeys
    sort right before `series|` ones, with no other rows between), and whether they are all of them."""
    parameters = {"study": study, "low": "instance|", "high": "series" + _RANGE_END}
    columns = ["RowKey", *dict.fromkeys(select)] if select is not None else None
    try:
        pages = storage.studies.query_entities(_RANGE_FILTER, parameters=parameters, select=columns,
                                               results_per_page=max(1, most)).by_page()
        rows = [row async for row in await anext(pages, _no_rows())]
    except ResourceNotFoundError:
        return [], True  # the table itself is gone: nothing is stored
    return rows, not getattr(pages, "continuation_token", None)


def stored_instance(study: str, row: TableEntity) -> StoredInstance:
    """Return the identifiers and version of an instance row."""
    _, series, instance = str(row["RowKey"]).split("|", 2)
    return StoredInstance(InstanceIdentifiers(study, series, instance), str(row["Version"]))


async def _range(storage: Storage, study: str, prefix: str, select: Sequence[str] | None) -> list[TableEntity]:
    low, high = _key_range(prefix)
    parameters = {"study": study, "low": low, "high": high}
    return await query_all(storage.studies, _RANGE_FILTER, parameters=parameters, select=_columns(select))


def _instance_prefix(series: str | None) -> str:
    """The RowKey prefix of a series' instance rows (of every instance row of the study, without a series)."""
    return f"instance|{series}|" if series is not None else "instance|"


def _key_range(prefix: str) -> tuple[str, str]:
    """The exclusive RowKey bounds of the keys that start with ``prefix`` (which ends with '|')."""
    return prefix, prefix[:-1] + _RANGE_END


def _columns(select: Sequence[str] | None) -> list[str] | None:
    return ["RowKey", *select] if select is not None else None
