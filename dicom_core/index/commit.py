"""Committing stored instances into their study partition (the rows: `rows.py`).

Storing an instance commits its instance row together with its series and study rows (counts, modalities,
latest attributes) in one entity-group transaction guarded by ETags, so counts stay exact however many
writers store into one study at once; the instances one process stores into a study at the same time share
a transaction (group commit). Each commit is also conditioned on the study's generation marker, which a delete
changes after it removed index entries, so a commit never makes rows visible whose entries a delete removed since
they were written. The rows a commit landed are kept per process (with the ETags its answer gave), so the next
commit into the study reads nothing; a stale copy fails its If-Match and is read again. See docs/storage.md.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.data.tables import TableEntity, TableTransactionError

from dicom_core.index.known_studies import forget_study, known_study, remember_rows, study_key
from dicom_core.index.outbox import LandedOutbox, announcement_of, landed_outbox
from dicom_core.index.reads import get_row
from dicom_core.index.rows import (
    GENERATION_ROW,
    MAX_ATTRIBUTES_CHARS,
    MAX_TRANSACTION_OPERATIONS,
    STUDY_ROW,
    InstanceRecord,
    group_operations,
    instance_row_key,
    outbox_rows,
    series_row_key,
)
from dicom_core.index.study_copies import copy_operations, refresh_study_copies
from dicom_core.index.study_lock import study_lock
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance
from dicom_core.storage.clients import Storage
from dicom_core.storage.concurrency import jittered_backoff
from dicom_core.storage.faults import error_code
from dicom_core.storage.group_commit import GroupCommit
from dicom_core.storage.tables import Operation, etag_of, query_all, replace_if_unchanged

MAX_COMMIT_ATTEMPTS = 60
MAX_LOST_COMMIT_ANSWERS = 3
# A row created, changed or deleted (by a delete) since it was read: read again and retry.
RETRY_CODES = frozenset({"EntityAlreadyExists", "UpdateConditionNotSatisfied", "ResourceNotFound"})
# Studies whose rows this process committed last, kept with their ETags (a study row, its marker, its series rows).
_STUDY_RANGE = "PartitionKey eq @pk and RowKey ge @low and RowKey le @high"


class InstanceExistsError(Exception):
    """The instance is already stored and the request may not replace it (45070)."""


@dataclass(frozen=True)
class SeriesCommit:
    """What one landed transaction did to one series: its row's ETag before (None: created) and after, and the
    instances it stored there (their earlier versions replaced where ``replaced`` names them)."""

    before: str | None
    after: str
    records: tuple[InstanceRecord, ...]
    replaced: frozenset[str]


@dataclass(frozen=True)
class CommitRows:
    """The study, series and instance rows a commit is computed from (None: absent), with their ETags."""

    study: TableEntity | None
    series: TableEntity | None
    instance: TableEntity | None
    generation: TableEntity | None = None  # the study's generation marker
    landed: SeriesCommit | None = None  # once committed: what the transaction did to the instance's series
    outboxes: tuple[LandedOutbox, ...] = ()  # once committed: the outbox rows it inserted for the instance's request

    @property
    def generation_value(self) -> str:
        """The study's generation: "" until a delete first changed it (an absent marker reads as "")."""
        return str(self.generation.get("Generation") or "") if self.generation is not None else ""


class CommitHooks(Protocol):
    """What must happen around each attempt of a commit (index intents, cleanup entries)."""

    async def before_commit(self, rows: CommitRows) -> None:
        """Runs before every attempt, with the rows this attempt's transaction is conditioned on."""

    async def after_commit(self, rows: CommitRows) -> None:
        """Runs once the transaction computed from ``rows`` committed."""


async def read_commit_rows(storage: Storage, ids: InstanceIdentifiers) -> CommitRows:
    """Read the study row with its marker, the series and the instance rows of an instance (in parallel)."""
    (study, generation), series, instance = await asyncio.gather(
        read_study_rows(storage, ids.study),
        get_row(storage, ids.study, series_row_key(ids.series)),
        get_row(storage, ids.study, instance_row_key(ids.series, ids.instance)),
    )
    return CommitRows(study, series, instance, generation)


async def read_study_rows(storage: Storage, study: str) -> tuple[TableEntity | None, TableEntity | None]:
    """Read the study row and its generation marker (adjacent RowKeys: one range query)."""
    rows = await query_all(storage.studies, _STUDY_RANGE,
                           parameters={"pk": study, "low": STUDY_ROW, "high": GENERATION_ROW})
    by_key = {str(row["RowKey"]): row for row in rows}
    return by_key.get(STUDY_ROW), by_key.get(GENERATION_ROW)


def generation_operation(study: str, marker: TableEntity | None) -> Operation:
    """The operation conditioning a transaction on the marker as read: created if absent, else If-Match, unchanged."""
    row = {"PartitionKey": str(study), "RowKey": GENERATION_ROW,
           "Generation": str(marker.get("Generation") or "") if marker is not None else ""}
    return ("create", row) if marker is None else replace_if_unchanged(row, etag_of(marker))


async def commit_instance(
    storage: Storage, record: InstanceRecord, *, upsert: bool, hooks: CommitHooks | None = None,
    expect_new: bool = False, new_study: bool = False, linger: float = 0.0,
) -> StoredInstance | None:
    """Make an uploaded instance visible; return the version it replaced, if any.

    A group commit: the instances this process is storing into one study at the same time are committed
    together, in one transaction computed from one fresh read of their rows, under this process's lock of
    the study. ``hooks.before_commit`` sees the rows of every attempt before its transaction is submitted
    (the index intents are written then, and completed when a row changed since, e.g. a study deleted
    meanwhile); ``hooks.after_commit`` the rows of the transaction that landed. An upsert ``expect_new`` does not
    read its instance row first: its insert fails if the row exists, and the retry reads it and replaces it. A
    ``new_study`` (claims just created) reads no row: its inserts fail if the study exists. ``linger``: seconds a
    commit finding its study idle waits for others (its request's parts) to join its transaction.
    """
    member = _Member(storage, record, upsert, hooks, expect_new=expect_new, new_study=new_study)
    while True:
        landed = await _group_commits.submit(study_key(storage, record.stored.ids.study), member, linger=linger)
        if landed is not _COMMIT_ALONE:
            break
        member.alone = True  # its group's transaction failed for good: find out whether this instance is why
    assert isinstance(landed, CommitRows)
    if hooks is not None:
        await hooks.after_commit(landed)
    return StoredInstance(record.stored.ids, str(landed.instance["Version"])) if landed.instance is not None else None


@dataclass(eq=False)
class _Member:
    """One instance waiting in its study's group commit."""

    storage: Storage
    record: InstanceRecord
    upsert: bool
    hooks: CommitHooks | None
    expect_new: bool = False  # an upsert assuming its instance row absent until its insert fails
    new_study: bool = False  # likewise every row of its study
    alone: bool = False  # committed in a transaction of its own (after its group's transaction failed)
    tried: CommitRows | None = None  # the rows of the last transaction it was part of, whose answer was lost

    @property
    def instance(self) -> str:
        """Its SOP Instance UID."""
        return self.record.stored.ids.instance

    @property
    def series(self) -> str:
        """Its Series Instance UID."""
        return self.record.stored.ids.series


# A member whose group's transaction failed with a non-retryable error: it is committed again on its own.
_COMMIT_ALONE = object()
# At most this many instances in one transaction: an operation each (its row), a change-feed outbox row per
# request (or per instance stored without one), one per series, the study's and its marker's, within the 100
# operations of an entity-group transaction.
MAX_GROUP_INSTANCES = 32
# Characters of row properties in one transaction, well within the 4 MiB payload of an entity-group transaction
# (JSON escaping of the stored JSON texts adds about a third).
MAX_GROUP_CHARS = 2_000_000


def _fits(batch: Sequence[_Member], member: _Member) -> bool:
    if member.alone or any(other.alone for other in batch):
        return False
    if any(other.instance == member.instance for other in batch):
        return False  # a transaction writes a row once
    series = {other.series for other in batch} | {member.series}
    records = [other.record for other in batch] + [member.record]
    if len(records) + outbox_rows(records) + len(series) + 2 > MAX_TRANSACTION_OPERATIONS:  # + study, marker
        return False
    # The series rows and the study row are written once each, with at most MAX_ATTRIBUTES_CHARS of attributes.
    rows_chars = sum(other.record.row_chars for other in batch) + member.record.row_chars
    # A series row holds its own attributes and a copy of the study's.
    return rows_chars + (2 * len(series) + 1) * (MAX_ATTRIBUTES_CHARS + 2_000) <= MAX_GROUP_CHARS


async def _commit_group(key: tuple[str, str, str], members: Sequence[_Member]) -> list[object]:
    """Commit ``members`` (one study's) in one transaction; each gets the CommitRows it landed on, or an error."""
    storage, study = members[0].storage, key[2]
    outcomes: dict[_Member, object] = {}
    active = list(members)
    lost_answers = 0
    for attempt in range(MAX_COMMIT_ATTEMPTS):
        async with study_lock(storage, study):
            # The first attempt trusts this process's copy of the rows; after any failure, every row is read.
            fresh = attempt > 0 or any(member.alone or member.tried is not None for member in active)
            rows = await _read_group_rows(storage, study, active, fresh=fresh)
            waiting = []
            for member in active:
                own = rows.of(member)
                if member.tried is not None and own.instance is not None \
                        and str(own.instance["Version"]) == member.record.stored.version:
                    outcomes[member] = member.tried  # an earlier attempt landed although its answer was an error
                elif own.instance is not None and not member.upsert:
                    outcomes[member] = InstanceExistsError(member.instance)
                else:
                    waiting.append(member)
            # The first attempt writes each member's intents; a later one only what its rows changed since.
            hooked = await asyncio.gather(*(_before_commit(member, rows.of(member)) for member in waiting),
                                          return_exceptions=True)
            active = []
            for member, error in zip(waiting, hooked, strict=True):
                if isinstance(error, BaseException):
                    outcomes[member] = error
                else:
                    active.append(member)
            if not active:
                break
            operations = group_operations([member.record for member in active], rows.study, rows.series,
                                          [rows.instances[member.instance] for member in active])
            operations.append(generation_operation(study, rows.generation))
            copies, copies_left = await copy_operations(storage, study, rows.study, operations)
            operations += copies
            for member in active:
                member.tried = rows.of(member)
            try:
                answers = await storage.recreating_missing(
                    functools.partial(storage.studies.submit_transaction, operations))
                remember_rows(storage, study, rows.series, operations, answers)
                outcomes.update(_landed(active, rows, operations, answers))
                if copies_left:
                    await refresh_study_copies(storage, study)
                break
            except TableTransactionError as exc:
                forget_study(storage, study)
                if error_code(exc) not in RETRY_CODES:
                    for member in active:
                        member.tried = None  # refused as a whole: certainly not landed
                        outcomes[member] = _COMMIT_ALONE if len(active) > 1 else exc
                    break
            except (ServiceRequestError, ServiceResponseError) as exc:
                forget_study(storage, study)
                # The connection broke around the $batch (seen on a loaded Azurite): it may or may not have landed.
                # The next attempt's read tells (the rows name these versions), so retrying is safe; a few times only.
                lost_answers += 1
                if lost_answers > MAX_LOST_COMMIT_ANSWERS:
                    outcomes.update((member, exc) for member in active)
                    break
        # Another process's writer changed the study first: read again and retry, with jitter.
        await jittered_backoff(attempt)
    else:
        timeout = TimeoutError(f"Could not commit into study {study}: it kept changing")
        outcomes.update((member, timeout) for member in active)
    return [outcomes[member] for member in members]


def _landed(
    members: Sequence[_Member], rows: _GroupRows, operations: Sequence[Any], answers: Sequence[Mapping[str, Any]],
) -> Iterator[tuple[_Member, CommitRows]]:
    """Each member's rows, with what the landed transaction did to its series (from the answers' ETags)."""
    etags = {str(operation[1]["RowKey"]): str(answer.get("etag") or "")
             for operation, answer in zip(operations, answers, strict=False)}
    commits: dict[str, SeriesCommit | None] = {}
    for uid in {member.series for member in members}:
        after, row = etags.get(series_row_key(uid), ""), rows.series[uid]
        ours = [member for member in members if member.series == uid]
        commits[uid] = SeriesCommit(
            before=str(row.metadata["etag"]) if row is not None else None, after=after,
            records=tuple(member.record for member in ours),
            replaced=frozenset(member.instance for member in ours if rows.instances[member.instance] is not None),
        ) if after else None
    outboxes = [outbox for outbox in (landed_outbox(operation[1]) for operation in operations) if outbox is not None]
    for member in members:
        assert member.tried is not None
        request = member.record.request
        yield member, replace(member.tried, landed=commits[member.series], outboxes=tuple(
            outbox for outbox in outboxes if request and announcement_of(outbox.change_id) == request))


async def _before_commit(member: _Member, rows: CommitRows) -> None:
    if member.hooks is not None:
        await member.hooks.before_commit(rows)


@dataclass(frozen=True)
class _GroupRows:
    """The rows a group's transaction is computed from: the study's, its marker, each series', each instance's."""

    study: TableEntity | None
    generation: TableEntity | None
    series: dict[str, TableEntity | None]
    instances: dict[str, TableEntity | None]

    def of(self, member: _Member) -> CommitRows:
        """The rows of one member, as a commit of that instance alone would have read them."""
        return CommitRows(self.study, self.series[member.series], self.instances[member.instance], self.generation)


async def _read_group_rows(storage: Storage, study: str, members: Sequence[_Member], *, fresh: bool) -> _GroupRows:
    """The rows of a group's transaction: all read when ``fresh``; else this process's copy where it has one.

    Not fresh, an instance row is assumed absent unless the instance is upserted (the transaction's insert of
    it fails if it exists, and the retry reads it), and so is every row of a study whose row is absent.
    """
    uids = sorted({member.series for member in members})
    known = None if fresh else known_study(storage, study)
    study_row: TableEntity | None
    generation: TableEntity | None
    series: dict[str, TableEntity] = {}
    if known is not None:
        study_row, generation, series = known.study, known.generation, dict(known.series)
    elif fresh:
        (study_row, generation), rest = await asyncio.gather(read_study_rows(storage, study), asyncio.gather(
            *(get_row(storage, study, series_row_key(uid)) for uid in uids),
            *(get_row(storage, study, instance_row_key(member.series, member.instance)) for member in members),
        ))
        return _GroupRows(study_row, generation, dict(zip(uids, rest[:len(uids)], strict=True)),
                          {member.instance: row for member, row in zip(members, rest[len(uids):], strict=True)})
    elif all(member.new_study for member in members):  # their claims were just created: the inserts check it
        study_row, generation = None, None
    else:
        study_row, generation = await read_study_rows(storage, study)
    instances: dict[str, TableEntity | None] = {member.instance: None for member in members}
    if study_row is None:
        return _GroupRows(None, generation, {uid: None for uid in uids}, instances)
    missing = [uid for uid in uids if uid not in series]
    upserted = [member for member in members if member.upsert and not member.expect_new]
    read = await asyncio.gather(
        *(get_row(storage, study, series_row_key(uid)) for uid in missing),
        *(get_row(storage, study, instance_row_key(member.series, member.instance)) for member in upserted),
    )
    series_rows: dict[str, TableEntity | None] = {uid: series.get(uid) for uid in uids}
    series_rows.update(zip(missing, read[:len(missing)], strict=True))
    instances.update((member.instance, row) for member, row in zip(upserted, read[len(missing):], strict=True))
    return _GroupRows(study_row, generation, series_rows, instances)


_group_commits: GroupCommit[tuple[str, str, str], _Member, object] = GroupCommit(
    _commit_group, max_items=MAX_GROUP_INSTANCES, fits=_fits)
