"""Keeping the series rows' copies of their study's attributes (`StudyAttributes`) in step with the study row.

Every transaction that writes a series row writes the copy of the study attributes it commits (`rows.py`).
When a transaction changes the study's attributes (a later instance with another PatientName, an upsert),
the study's other series rows would keep the old copy: their updates join the same transaction, each
conditioned on the ETag it was read with, so after every commit each copy equals the study row. A study with
more series than one transaction holds gets the rest right after the commit (`refresh_study_copies`); a crash
in between leaves those copies behind until the study's attributes change again or the reindex runs. A series
row without a copy (stored before copies were kept) is left alone: a search reads its study row.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from collections.abc import Set as AbstractSet

from azure.data.tables import TableEntity, TableTransactionError

from dicom_core.index.reads import get_study_row, series_rows
from dicom_core.index.rows import MAX_TRANSACTION_OPERATIONS, STUDY_ATTRIBUTES_COPY, STUDY_ROW, study_copy_update
from dicom_core.storage.clients import Storage
from dicom_core.storage.tables import Operation

LOGGER = logging.getLogger(__name__)
MAX_REFRESH_ATTEMPTS = 5
# Characters of copies one store transaction carries besides its rows (its payload holds 4 MiB).
MAX_COPY_CHARS = 1_000_000


def stale_copies(
    study: str, rows: Sequence[TableEntity], study_attributes: str, written: AbstractSet[str] = frozenset(), *,
    fill_missing: bool = False,
) -> list[Operation]:
    """Updates of the series ``rows`` (except the RowKeys ``written``) whose copy differs from ``study_attributes``.

    Rows without a copy are left to their fallback unless ``fill_missing``.
    """
    return [study_copy_update(study, row, study_attributes) for row in rows
            if str(row["RowKey"]) not in written and (fill_missing or row.get(STUDY_ATTRIBUTES_COPY))
            and row.get(STUDY_ATTRIBUTES_COPY) != study_attributes]


async def copy_operations(
    storage: Storage, study: str, study_before: TableEntity | None, operations: Sequence[Operation],
) -> tuple[list[Operation], bool]:
    """The copy updates of the study's other series rows that a transaction changing its attributes needs.

    As many as fit beside ``operations``; the flag tells whether some did not (`refresh_study_copies` then).
    Nothing is read unless the transaction changes the attributes of a study that exists.
    """
    written_study = next((op[1] for op in operations if op[1]["RowKey"] == STUDY_ROW), None)
    if study_before is None or written_study is None:
        return [], False
    attributes = str(written_study["Attributes"])
    if study_before.get("Attributes") == attributes:
        return [], False
    rows = await series_rows(storage, study, select=[STUDY_ATTRIBUTES_COPY])
    stale = stale_copies(study, rows, attributes, {str(op[1]["RowKey"]) for op in operations})
    room = min(MAX_TRANSACTION_OPERATIONS - len(operations), MAX_COPY_CHARS // max(1, len(attributes)))
    return stale[:room], len(stale) > room


async def refresh_study_copies(storage: Storage, study: str, *, fill_missing: bool = False) -> int:
    """Bring every series row's copy in step with the study row (``fill_missing``: rows without one too).

    Returns how many copies it wrote.
    """
    updated = 0
    for _ in range(MAX_REFRESH_ATTEMPTS):
        study_row = await get_study_row(storage, study)
        if study_row is None:
            return updated
        rows = await series_rows(storage, study, select=[STUDY_ATTRIBUTES_COPY])
        stale = stale_copies(study, rows, str(study_row.get("Attributes") or "{}"), fill_missing=fill_missing)
        if not stale:
            return updated
        try:
            for start in range(0, len(stale), MAX_TRANSACTION_OPERATIONS):
                chunk = stale[start:start + MAX_TRANSACTION_OPERATIONS]
                await storage.recreating_missing(functools.partial(storage.studies.submit_transaction, chunk))
                updated += len(chunk)
        except TableTransactionError:
            continue  # a store or delete changed a series row meanwhile: read again
    LOGGER.warning("The series rows of study %s kept changing; their study attribute copies may be behind", study)
    return updated
