"""Committing stored instances into their study partition (the rows: `rows.py`).

Storing an instance commits its instance row together with its series and study rows (counts, modalities,
latest attributes) in one entity-group transaction guarded by ETags, so counts stay exact however many
writers store into one study at once; the instances one process stores into a study at the same time share
a transaction (group commit). See docs/storage.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.data.tables import TableEntity, TableTransactionError

from dicom_core.index.reads import get_row
from dicom_core.index.rows import (
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
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance
from dicom_core.storage.clients import Storage
from dicom_core.storage.concurrency import jittered_backoff
from dicom_core.storage.faults import error_code
from dicom_core.storage.group_commit import GroupCommit

MAX_COMMIT_ATTEMPTS = 60
MAX_LOST_COMMIT_ANSWERS = 3
# A row created, changed or deleted (by a delete) since it was read: read again and retry.
RETRY_CODES = frozenset({"EntityAlreadyExists", "UpdateConditionNotSatisfied", "ResourceNotFound"})


class InstanceExistsError(Exception):
    """The instance is already stored and the request may not replace it (45070)."""


@dataclass(frozen=True)
class CommitRows:
    """The study, series and instance rows a commit is computed from (None: absent), with their ETags."""

    study: TableEntity | None
    series: TableEntity | None
    instance: TableEntity | None


class CommitHooks(Protocol):
    """What must happen around each attempt of a commit (index intents, cleanup entries)."""

    async def before_commit(self, rows: CommitRows) -> None:
        """Runs before every attempt, with the rows this attempt's transaction is conditioned on."""

    async def after_commit(self, rows: CommitRows) -> None:
        """Runs once the transaction computed from ``rows`` committed."""


async def read_commit_rows(storage: Storage, ids: InstanceIdentifiers) -> CommitRows:
    """Read the study, series and instance rows of an instance (three point reads in parallel)."""
    study, series, instance = await asyncio.gather(
        get_row(storage, ids.study, STUDY_ROW),
        get_row(storage, ids.study, series_row_key(ids.series)),
        get_row(storage, ids.study, instance_row_key(ids.series, ids.instance)),
    )
    return CommitRows(study, series, instance)


async def commit_instance(
    storage: Storage, record: InstanceRecord, *, upsert: bool, hooks: CommitHooks | None = None,
) -> StoredInstance | None:
    """Make an uploaded instance visible; return the version it replaced, if any.

    A group commit: the instances this process is storing into one study at the same time are committed
    together, in one transaction computed from one fresh read of their rows, under this process's lock of
    the study. ``hooks.before_commit`` sees the rows of every attempt before its transaction is submitted
    (the index intents are written then, and completed when a row changed since, e.g. a study deleted
    meanwhile); ``hooks.after_commit`` the rows of the transaction that landed.
    """
    ids = record.stored.ids
    member = _Member(storage, record, upsert, hooks)
    while True:
        landed = await _group_commits.submit(_study_key(storage, ids.study), member)
        if landed is not _COMMIT_ALONE:
            break
        member.alone = True  # its group's transaction failed for good: find out whether this instance is why
    assert isinstance(landed, CommitRows)
    if hooks is not None:
        await hooks.after_commit(landed)
    return StoredInstance(ids, str(landed.instance["Version"])) if landed.instance is not None else None


@dataclass(eq=False)
class _Member:
    """One instance waiting in its study's group commit."""

    storage: Storage
    record: InstanceRecord
    upsert: bool
    hooks: CommitHooks | None
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
# request (or per instance stored without one), one per series and the study's, within the 100 operations of an
# entity-group transaction.
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
    if len(records) + outbox_rows(records) + len(series) + 1 > MAX_TRANSACTION_OPERATIONS:
        return False
    # The series rows and the study row are written once each, with at most MAX_ATTRIBUTES_CHARS of attributes.
    rows_chars = sum(other.record.row_chars for other in batch) + member.record.row_chars
    # A series row holds its own attributes and a copy of the study's.
    return rows_chars + (2 * len(series) + 1) * (MAX_ATTRIBUTES_CHARS + 2_000) <= MAX_GROUP_CHARS


def _study_key(storage: Storage, study: str) -> tuple[str, str, str]:
    return (storage.studies.url, storage.studies.table_name, study)


async def _commit_group(key: tuple[str, str, str], members: Sequence[_Member]) -> list[object]:
    """Commit ``members`` (one study's) in one transaction; each gets the CommitRows it landed on, or an error."""
    storage, study = members[0].storage, key[2]
    outcomes: dict[_Member, object] = {}
    active = list(members)
    lost_answers = 0
    for attempt in range(MAX_COMMIT_ATTEMPTS):
        async with study_lock(storage, study):
            rows = await _read_group_rows(storage, study, active)
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
            copies, copies_left = await copy_operations(storage, study, rows.study, operations)
            operations += copies
            for member in active:
                member.tried = rows.of(member)
            try:
                await storage.recreating_missing(functools.partial(storage.studies.submit_transaction, operations))
                outcomes.update((member, member.tried) for member in active)
                if copies_left:
                    await refresh_study_copies(storage, study)
                break
            except TableTransactionError as exc:
                if error_code(exc) not in RETRY_CODES:
                    for member in active:
                        member.tried = None  # refused as a whole: certainly not landed
                        outcomes[member] = _COMMIT_ALONE if len(active) > 1 else exc
                    break
            except (ServiceRequestError, ServiceResponseError) as exc:
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


async def _before_commit(member: _Member, rows: CommitRows) -> None:
    if member.hooks is not None:
        await member.hooks.before_commit(rows)


@dataclass(frozen=True)
class _GroupRows:
    """The rows a group's transaction is computed from: the study's, each series', each instance's."""

    study: TableEntity | None
    series: dict[str, TableEntity | None]
    instances: dict[str, TableEntity | None]

    def of(self, member: _Member) -> CommitRows:
        """The rows of one member, as a commit of that instance alone would have read them."""
        return CommitRows(self.study, self.series[member.series], self.instances[member.instance])


async def _read_group_rows(storage: Storage, study: str, members: Sequence[_Member]) -> _GroupRows:
    series = sorted({member.series for member in members})
    rows = await asyncio.gather(
        get_row(storage, study, STUDY_ROW),
        *(get_row(storage, study, series_row_key(uid)) for uid in series),
        *(get_row(storage, study, instance_row_key(member.series, member.instance)) for member in members),
    )
    return _GroupRows(rows[0], dict(zip(series, rows[1:1 + len(series)], strict=True)),
                      {member.instance: row for member, row in zip(members, rows[1 + len(series):], strict=True)})


_group_commits: GroupCommit[tuple[str, str, str], _Member, object] = GroupCommit(
    _commit_group, max_items=MAX_GROUP_INSTANCES, fits=_fits)


@contextlib.asynccontextmanager
async def study_lock(storage: Storage, study: str) -> AsyncIterator[None]:
    """Hold this process's lock of a study while reading its rows and committing a transaction computed from them.

    Writers of one process into one study would only race each other for the study row's ETag (and retry);
    queued, each commits at the first try. Writers in other processes still meet the ETag condition.
    """
    key = (id(asyncio.get_running_loop()), storage.studies.url, storage.studies.table_name, study)
    entry = _study_locks.setdefault(key, _StudyLock())
    entry.users += 1
    try:
        async with entry.lock:
            yield
    finally:
        entry.users -= 1
        if entry.users == 0:
            del _study_locks[key]


@dataclass
class _StudyLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


_study_locks: dict[tuple[int, str, str, str], _StudyLock] = {}
