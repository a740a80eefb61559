"""The write side of the change feed: an outbox row committed with the data, announced before the commit.

Every transaction that changes instances (a store, an upsert, a batch of a delete) also inserts one outbox
row ``change|{change_id}`` in the study's partition, so a change is recorded atomically with the data.
Before that commit, the writer announces the change id in the ``pending`` partition of the Changes table:
the sequencer (``changefeed/sequencer.py``) reads only that small partition to find outbox rows, never scans
the study partitions, and moves each committed outbox row into the global feed with the next sequence number.
An announcement whose outbox row never appears (the commit failed or the writer crashed) is dropped once
it is older than ``ANNOUNCEMENT_TIMEOUT``. See docs/storage.md.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from dicom_core.storage.clients import Storage
from dicom_core.storage.partition_upserts import PartitionUpserts
from dicom_core.storage.tables import delete_entity_quietly

PENDING_PARTITION = "pending"
OUTBOX_PREFIX = "change|"
# Longer than any commit's retries can take; an announcement this old without its outbox row is dead.
ANNOUNCEMENT_TIMEOUT = timedelta(minutes=15)

_announcements = PartitionUpserts(lambda storage: storage.changes)


class ChangeAction(enum.StrEnum):
    """What happened to an instance (the feed's ``action``)."""

    CREATE = "Create"
    UPDATE = "Update"
    DELETE = "Delete"


@dataclass(frozen=True)
class Change:
    """One instance's change, as the outbox records it."""

    action: ChangeAction
    series: str
    instance: str
    version: str


def outbox_row_key(change_id: str) -> str:
    """RowKey of an outbox row in the study partition (sorts before ``instance|``)."""
    return f"{OUTBOX_PREFIX}{change_id}"


async def announce_changes(storage: Storage, study: str, change_id: str, at: datetime) -> None:
    """Record, before the commit, that ``change_id``'s outbox row may appear in ``study``'s partition."""
    entity = {"PartitionKey": PENDING_PARTITION, "RowKey": change_id, "Study": study, "AnnouncedAt": at}
    await _announcements.upsert(storage, [entity])  # with the concurrent writers' announcements, in one transaction


async def withdraw_announcement(storage: Storage, change_id: str) -> None:
    """Remove the announcement of a change whose commit certainly did not happen (e.g. a refused POST)."""
    await delete_entity_quietly(storage.changes, PENDING_PARTITION, change_id)


def outbox_operation(study: str, change_id: str, changes: Sequence[Change], at: datetime) -> tuple[str, dict[str, Any]]:
    """The transaction operation that inserts the outbox row of ``changes`` (add it to the commit)."""
    records = [{**asdict(change), "action": change.action.value} for change in changes]
    entity = {
        "PartitionKey": study, "RowKey": outbox_row_key(change_id),
        "Changes": json.dumps(records, separators=(",", ":")), "ChangedAt": at,
    }
    return ("create", entity)
