"""Self-healing: every finding of the consistency checker that storage alone can answer is repaired.

`run_repair` (the repair timer) checks one bounded window of the archive (`consistency_window.py`: about
``rows`` rows of the studies table and one page of each blob container, resuming where the last run stopped
and wrapping around), then repairs at most ``limit`` subjects, each from a fresh read and under ETag
conditions, so a store or delete that changed it meanwhile wins and the next run looks again. The cursor moves
on only when nothing was left for lack of budget. `python -m dicom_core.maintenance.consistency --repair` (an
operator) checks and repairs the whole archive at once. Repairs are idempotent: a repaired subject is no
finding any more, so a second run repairs nothing.

- ``orphan-blob`` / ``orphan-document``: a cleanup entry is written for it (the cleanup deletes it once due,
  unless a row references it by then);
- ``series-count`` / ``study-count`` / ``empty-series`` / ``empty-study`` / ``study-not-listed``: the study is
  set right as its rows say: counts recomputed, rows without instances deleted (after their index entries, as
  a delete does: entries, new generation, rows; their documents scheduled for cleanup), and the entries of every
  row that stays written again (a delete that died after removing entries leaves rows no search finds);
- ``unsequenced-outbox``: the committed outbox row is appended to the feed (exactly once: done rows);
- ``document-mismatch``: the document is marked unverified and rebuilt from the instance rows;
- ``missing-blob`` and ``instance-without-parent`` are left for an operator: a lost file cannot be made again,
  and no write path leaves an instance row without its parents (they change in one transaction).
See docs/storage.md.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableEntity, TableTransactionError

from dicom_core.changefeed.sequencer import sequence_outbox_rows
from dicom_core.documents.series_documents import STATE_KEY, UNVERIFIED, document_name, verified_properties
from dicom_core.index.cleanup_entries import CleanupKind, CleanupTarget, schedule_cleanup
from dicom_core.index.commit import RETRY_CODES
from dicom_core.index.delete import DeleteScope, ScopeRows, bump_generation, read_scope
from dicom_core.index.known_studies import forget_study
from dicom_core.index.reads import get_row, get_study_row
from dicom_core.index.rows import series_row_key
from dicom_core.maintenance.consistency import Finding, version_of_blob
from dicom_core.maintenance.consistency_window import DEFAULT_WINDOW_ROWS, Window, check_window, save_cursor
from dicom_core.search_index.entries import remove_index_entries, restore_index_entries
from dicom_core.storage.clients import Storage
from dicom_core.storage.faults import error_code
from dicom_core.storage.tables import Operation, etag_of, get_entity_or_none, replace_if_unchanged, unchanged_since

LOGGER = logging.getLogger(__name__)

DEFAULT_REPAIR_LIMIT = 100  # subjects (a study, a blob version, an outbox row, a document) per run
STUDY_KINDS = frozenset({"series-count", "study-count", "empty-series", "empty-study", "study-not-listed",
                         "series-not-listed", "instance-not-listed"})
OPERATOR_KINDS = frozenset({"missing-blob", "instance-without-parent"})
_MAX_OPERATIONS = 100


@dataclass(frozen=True)
class Repair:
    """What was done about one subject."""

    subject: str
    action: str

    def __str__(self) -> str:
        return f"repaired: {self.subject}: {self.action}"


@dataclass
class RepairReport:
    """One repair run: what it repaired, and the findings it left (for an operator, failed, or over the limit)."""

    repaired: list[Repair] = field(default_factory=list)
    left: list[Finding] = field(default_factory=list)
    deferred: int = 0  # findings left because the run's limit was reached
    window: Window | None = None  # what the run checked (None: findings given)


async def run_repair(storage: Storage, *, limit: int = DEFAULT_REPAIR_LIMIT,
                     rows: int = DEFAULT_WINDOW_ROWS) -> RepairReport:
    """Check the next window of the archive and repair what it finds (at most ``limit`` subjects)."""
    window = await check_window(storage, rows=rows)
    report = await repair_findings(storage, window.findings, limit=limit)
    report.window = window
    if not report.deferred:
        await save_cursor(storage, window)
    if report.repaired or report.left:
        LOGGER.info("Repair: %d subjects repaired, %d findings left", len(report.repaired), len(report.left))
    return report


async def repair_findings(storage: Storage, findings: Iterable[Finding], *, limit: int = DEFAULT_REPAIR_LIMIT,
                          ) -> RepairReport:
    """Repair ``findings`` (at most ``limit`` subjects), each from a fresh read of its subject."""
    report = RepairReport()
    studies: dict[str, list[Finding]] = {}
    others: list[Finding] = []
    for finding in findings:
        if finding.kind in OPERATOR_KINDS:
            report.left.append(finding)
        elif finding.kind in STUDY_KINDS:
            studies.setdefault(finding.subject.split("/")[0], []).append(finding)
        else:
            others.append(finding)
    budget = limit
    for study, about in studies.items():
        if budget <= 0:
            report.left += about
            report.deferred += len(about)
            continue
        budget -= 1
        await _attempt(report, study, about, _repair_study(storage, study))
    for finding in others:
        if budget <= 0:
            report.left.append(finding)
            report.deferred += 1
            continue
        budget -= 1
        await _attempt(report, finding.subject, [finding], _repair_other(storage, finding))
    return report


async def _attempt(report: RepairReport, subject: str, findings: list[Finding], repairing: Awaitable[str]) -> None:
    """Record what ``repairing`` did about ``subject``; its findings are left when it did nothing or failed."""
    try:
        action = await repairing
    except Exception:  # left for the next run
        LOGGER.warning("Could not repair %s; the next run tries again", subject, exc_info=True)
        report.left += findings
        return
    if action:
        report.repaired.append(Repair(subject, action))
    else:
        report.left += findings


async def _repair_other(storage: Storage, finding: Finding) -> str:
    if finding.kind == "orphan-blob":
        study, series, instance, version = _version_of(finding.subject)
        await schedule_cleanup(storage, [CleanupTarget(CleanupKind.VERSION, study, series, instance, version)])
        return "scheduled for cleanup"
    if finding.kind == "orphan-document":
        study, series = finding.subject.split("/")[:2]
        await schedule_cleanup(storage, [CleanupTarget.of_document(study, series)])
        return "scheduled for cleanup"
    if finding.kind == "unsequenced-outbox":
        study, row_key = finding.subject.split("/", 1)
        row = await get_entity_or_none(storage.studies, study, row_key)
        if row is None:
            return "appended by the sequencer meanwhile"
        appended = await sequence_outbox_rows(storage, [row])
        return f"{appended} change(s) appended to the change feed"
    if finding.kind == "document-mismatch":
        return await _rebuild_document(storage, *finding.subject.split("/")[:2])
    return ""


def _version_of(name: str) -> tuple[str, str, str, str]:
    version = version_of_blob(name)
    if version is None:
        raise ValueError(f"{name} is not a version's blob")
    return version


async def _rebuild_document(storage: Storage, study: str, series: str) -> str:
    """Mark the document unverified (If-Match), so reconciling rebuilds it whole from the instance rows."""
    blob = storage.metadata.get_blob_client(document_name(study, series))
    try:
        properties = await blob.get_blob_properties()
        await blob.set_blob_metadata({STATE_KEY: UNVERIFIED}, etag=properties.etag,
                                     match_condition=MatchConditions.IfNotModified)
    except (ResourceModifiedError, ResourceNotFoundError):
        return ""  # a writer changed it meanwhile: the next run checks again
    row = await get_row(storage, study, series_row_key(series), ["RowKey"])
    if row is None:
        await schedule_cleanup(storage, [CleanupTarget.of_document(study, series)])
        return "its series is gone: scheduled for cleanup"
    await verified_properties(storage, study, series, etag_of(row))
    return "rebuilt from the instance rows"


async def _repair_study(storage: Storage, study: str) -> str:
    """Set a study right as its instance rows say; return what was done."""
    rows = await read_scope(storage, DeleteScope(study))
    per_series = Counter(str(row["RowKey"]).split("|")[1] for row in rows.instances)
    empty = [series for series in rows.series if not per_series[series]]
    study_empty = not rows.instances
    actions = []
    if empty or study_empty:
        # As a delete does: documents scheduled, entries removed, a new generation, then the rows.
        await schedule_cleanup(storage, [CleanupTarget.of_document(study, series) for series in empty])
        if study_empty:
            await remove_index_entries(storage, study)
        for series in empty if not study_empty else []:
            await remove_index_entries(storage, study, series)
        await bump_generation(storage, study)
        rows = await read_scope(storage, DeleteScope(study))
    operations = _corrections(rows)
    for start in range(0, len(operations), _MAX_OPERATIONS):
        chunk = operations[start:start + _MAX_OPERATIONS]
        try:
            await storage.studies.submit_transaction(chunk)
        except TableTransactionError as exc:
            if error_code(exc) not in RETRY_CODES:
                raise
            LOGGER.info("Study %s changed while it was repaired; the next run looks again", study)
            continue
        finally:
            forget_study(storage, study)
        actions.append(f"{len(chunk)} row(s) corrected or deleted")
    if await get_study_row(storage, study) is not None:
        actions.append(f"{await restore_index_entries(storage, study)} index entries written")
    return "; ".join(actions) or "nothing left to do"


def _corrections(rows: ScopeRows) -> list[Operation]:
    """Row operations (If-Match) that make the series and study rows agree with the instance rows."""
    per_series = Counter(str(row["RowKey"]).split("|")[1] for row in rows.instances)
    now = datetime.now(UTC)
    operations: list[Operation] = []
    for series, row in rows.series.items():
        if not per_series[series]:
            operations.append(_delete(row))
        elif int(row["InstanceCount"]) != per_series[series]:
            operations.append(replace_if_unchanged({**row, "InstanceCount": per_series[series], "UpdatedAt": now},
                                                   etag_of(row)))
    if rows.study is None:
        return operations
    if not rows.instances:
        return [*operations, _delete(rows.study)]
    modalities = Counter(str(r["Modality"]) for r in rows.instances if r.get("Modality"))
    counts = {"InstanceCount": len(rows.instances), "SeriesCount": len(per_series),
              "ModalityCounts": json.dumps(dict(sorted(modalities.items())), sort_keys=True)}
    recorded = {"InstanceCount": int(rows.study["InstanceCount"]), "SeriesCount": int(rows.study["SeriesCount"]),
                "ModalityCounts": json.dumps(json.loads(str(rows.study.get("ModalityCounts") or "{}")), sort_keys=True)}
    if counts != recorded:
        operations.append(replace_if_unchanged({**rows.study, **counts, "UpdatedAt": now}, etag_of(rows.study)))
    return operations


def _delete(row: TableEntity) -> Operation:
    return ("delete", {"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"]}, unchanged_since(etag_of(row)))
