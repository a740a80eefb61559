"""DELETE of a study, a series or an instance: gone from search and retrieve at once, blobs after the delay.

Order, so that a crash at any point leaves nothing visible half-deleted and nothing behind for ever:
1. read the scope (404 when it holds no instance);
2. remove the search index entries of what is expected to go (the study, when the delete empties it; the
   series, when it empties that; else the instance), so no search finds rows about to disappear; then give
   the study a new generation, so a store whose entries were removed meanwhile fails its commit and writes
   them again, and read the scope again (a store that committed before that is deleted too);
3. delete the rows in transactions (`index.delete`), each preceded by cleanup entries for the versions it
   unreferences and the series documents of the series rows it deletes, and carrying a change-feed outbox row;
4. if a store committed into a study or series whose entries step 2 removed (it was stored during the delete,
   so it stays), write that level's entries back;
5. take the deleted instances out of the metadata documents of series that remain.
See docs/storage.md.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from dicom_core.documents.document_writes import remove_instance
from dicom_core.index.cleanup_entries import CleanupTarget, schedule_cleanup
from dicom_core.index.delete import (
    DeleteOutcome,
    DeleteScope,
    PlannedBatch,
    ScopeRows,
    bump_generation,
    delete_rows,
    read_scope,
)
from dicom_core.index.known_studies import forget_study
from dicom_core.index.reads import get_series_row, get_study_row
from dicom_core.model.errors import NotFoundError
from dicom_core.model.identifiers import InstanceIdentifiers
from dicom_core.search_index.entries import remove_index_entries, restore_index_entries
from dicom_core.storage.clients import Storage
from dicom_core.storage.concurrency import bounded_gather
from dicom_core.wire.service_result import ServiceResult

LOGGER = logging.getLogger(__name__)
_DOCUMENT_CONCURRENCY = 8


async def delete_study(storage: Storage, study: str) -> ServiceResult:
    """Delete every instance of a study: 204, or 404 when it has none."""
    return await _deleted(storage, DeleteScope(study))


async def delete_series(storage: Storage, study: str, series: str) -> ServiceResult:
    """Delete every instance of a series: 204, or 404 when it has none."""
    return await _deleted(storage, DeleteScope(study, series))


async def delete_instance(storage: Storage, ids: InstanceIdentifiers) -> ServiceResult:
    """Delete one instance: 204, or 404 when it is not stored."""
    return await _deleted(storage, DeleteScope(ids.study, ids.series, ids.instance))


async def _deleted(storage: Storage, scope: DeleteScope) -> ServiceResult:
    await delete_scope(storage, scope)
    return ServiceResult(HTTPStatus.NO_CONTENT)


async def delete_scope(storage: Storage, scope: DeleteScope) -> DeleteOutcome:
    """Delete the instances of a study, series or instance and say what went; 404 when there were none."""
    level = "instance" if scope.instance is not None else "series" if scope.series is not None else "study"
    not_found = f"The specified {level} cannot be found."
    rows = await read_scope(storage, scope)
    if not rows.instances and not (scope.series is None and rows.study is not None):
        raise NotFoundError(not_found)
    index_scope = _index_scope(scope, rows)
    await remove_index_entries(storage, index_scope.study, index_scope.series, index_scope.instance)
    await bump_generation(storage, scope.study)
    rows = await read_scope(storage, scope)

    async def before_batch(batch: PlannedBatch) -> None:
        targets = [CleanupTarget.of_version(stored) for stored in batch.deleted]
        targets += [CleanupTarget.of_document(batch.study, series) for series in batch.removed_series]
        await schedule_cleanup(storage, targets)

    outcome = await delete_rows(storage, scope, rows, before_batch=before_batch)
    forget_study(storage, scope.study)
    if not outcome.deleted and not outcome.study_removed:
        raise NotFoundError(not_found)  # another request deleted it meanwhile
    await _restore_surviving_entries(storage, index_scope)
    await _update_documents(storage, outcome)
    LOGGER.info("Deleted %d instance(s) of study %s in %d transaction(s), %d round(s)",
                len(outcome.deleted), scope.study, outcome.transactions, outcome.rounds)
    return outcome


def _index_scope(scope: DeleteScope, rows: ScopeRows) -> DeleteScope:
    """The widest level the delete empties, as read: its index entries go before its rows."""
    if scope.series is None or rows.study is None:
        return DeleteScope(scope.study)
    if scope.instance is None:
        return DeleteScope(scope.study) if int(rows.study["SeriesCount"]) <= 1 else scope
    if int(rows.study["InstanceCount"]) <= 1:
        return DeleteScope(scope.study)
    series = rows.series.get(scope.series)
    if series is None or int(series["InstanceCount"]) <= 1:
        return DeleteScope(scope.study, scope.series)
    return scope


async def _restore_surviving_entries(storage: Storage, index_scope: DeleteScope) -> None:
    """Write back the entries of a study or series that stayed because a store committed into it meanwhile."""
    if index_scope.instance is not None:
        return
    if index_scope.series is None:
        survived = await get_study_row(storage, index_scope.study) is not None
    else:
        survived = await get_series_row(storage, index_scope.study, index_scope.series) is not None
    if survived:
        restored = await restore_index_entries(storage, index_scope.study, index_scope.series)
        LOGGER.info("A store committed into %s during its delete: %d index entries written back", index_scope, restored)


async def _update_documents(storage: Storage, outcome: DeleteOutcome) -> None:
    """Take deleted instances out of the documents of series that remain (the others' documents go by cleanup)."""
    remaining = [s for s in outcome.deleted if s.ids.series not in outcome.removed_series]
    await bounded_gather((remove_instance(storage, stored.ids) for stored in remaining), limit=_DOCUMENT_CONCURRENCY)
