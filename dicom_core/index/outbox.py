"""The write side of the change feed: an outbox row committed with the data, announced before the commit.

Every transaction that changes instances (a store, an upsert, a batch of a delete) also inserts an outbox row
in the study's partition, so a change is recorded atomically with the data. Before that commit, the writer
announces it in the ``pending`` partition of the Changes table: the sequencer (``changefeed/sequencer.py``)
reads only that small partition to find outbox rows, never scans the study partitions, and moves each committed
outbox row into the global feed with the next sequence numbers.

Two kinds of announcement. A *change* announcement (a batch of a delete) names one study and one outbox row,
``change|{change_id}``. A *request* announcement (a STOW request's *intent*) names every study the request may
commit into (a request into many studies has an announcement per 100), how many changes it announced in all,
and the blobs it uploads or replaces (cleanup targets, up to 100 of each: the request's cleanup record); each
transaction of the request inserts one outbox row ``change|{request}|{part}`` with the changes of the request
it commits. The request rewrites its intent when it adds studies, changes or targets, always before the
uploads and commits they cover, so the sequencer can retire it once that many changes reached the feed: it
hands the targets no appended change proves committed to the blob cleanup, then deletes the intent. An
announcement whose outbox rows never all appear (a commit failed or the writer crashed) is retired once it is
older than ``ANNOUNCEMENT_TIMEOUT``. A request that committed into several studies *confirms* at its end, in its
intent, the outbox rows whose transactions answered success (``Landed``): the sequencer appends those without
reading the study partitions, and leaves them in place (see docs/storage.md).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from azure.data.tables import TableEntity

from dicom_core.index.cleanup_entries import CleanupTarget, parse_targets, targets_json
from dicom_core.storage.clients import Storage
from dicom_core.storage.partition_upserts import PartitionUpserts
from dicom_core.storage.tables import delete_entity_quietly

PENDING_PARTITION = "pending"
OUTBOX_PREFIX = "change|"
PART_SEPARATOR = "|"  # between a request's id and the part naming one of its outbox rows
# Longer than any commit's retries can take; an announcement this old without its outbox rows is dead.
ANNOUNCEMENT_TIMEOUT = timedelta(minutes=15)
_RANGE_END = "}"  # sorts right after "|"
# Characters of an intent's Landed property at most (a Table string property holds 32K characters).
MAX_LANDED_CHARS = 30_000

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


@dataclass(frozen=True)
class LandedOutbox:
    """An outbox row a transaction inserted that certainly landed (its answer was success): where, and what."""

    study: str
    change_id: str
    changes: tuple[Change, ...]


@dataclass(frozen=True)
class RequestAnnouncement:
    """What a request announced so far: the studies it may commit into, its number of changes, since when, and
    the blobs it uploads or replaces (to be cleaned up unless a change of it proves them committed)."""

    request: str
    studies: tuple[str, ...]
    changes: int
    announced_at: datetime
    targets: tuple[CleanupTarget, ...] = ()  # versions it uploads: committed when one of its changes names them
    replaced: tuple[CleanupTarget, ...] = ()  # versions its upserts replace: cleaned up in any case
    landed: tuple[LandedOutbox, ...] = ()  # its outbox rows whose transactions answered success (confirmed)


@dataclass(frozen=True)
class Announcement:
    """An announcement as the sequencer reads it; ``changes`` is None for a change announcement (one outbox row)."""

    change_id: str
    studies: tuple[str, ...]
    changes: int | None
    announced_at: datetime | None
    renewed_at: datetime | None
    etag: str
    targets: tuple[CleanupTarget, ...] = ()
    replaced: tuple[CleanupTarget, ...] = ()
    landed: tuple[LandedOutbox, ...] = ()

    def confirms_all(self) -> bool:
        """Whether its confirmed outbox rows hold every change it counts (the sequencer then reads no study)."""
        return bool(self.landed) and self.changes is not None and (
            sum(len(outbox.changes) for outbox in self.landed) >= self.changes)

    def expired(self, now: datetime) -> bool:
        """Whether no commit it covers can still land (it was last written longer ago than the timeout)."""
        written = self.renewed_at or self.announced_at
        return written is None or now - written > ANNOUNCEMENT_TIMEOUT


def outbox_row_key(change_id: str) -> str:
    """RowKey of an outbox row in the study partition (sorts before ``instance|``)."""
    return f"{OUTBOX_PREFIX}{change_id}"


def request_change_id(request: str, part: str) -> str:
    """The change id of one outbox row of a request (``part`` tells its transactions apart)."""
    return f"{request}{PART_SEPARATOR}{part}"


def announcement_of(change_id: str) -> str:
    """The id of the announcement covering an outbox row's change id."""
    return change_id.split(PART_SEPARATOR, 1)[0]


def outbox_range(first: str | None = None, last: str | None = None) -> tuple[str, str]:
    """RowKeys ``low <= key < high`` of the outbox rows of the announcements ``first`` to ``last`` (in id order;
    ``last`` None: ``first``'s alone; both None: every outbox row)."""
    if first is None:
        return OUTBOX_PREFIX, OUTBOX_PREFIX[:-1] + _RANGE_END
    return outbox_row_key(first), outbox_row_key(last if last is not None else first) + _RANGE_END


async def announce_changes(storage: Storage, study: str, change_id: str, at: datetime) -> None:
    """Record, before the commit, that ``change_id``'s outbox row may appear in ``study``'s partition."""
    entity = {"PartitionKey": PENDING_PARTITION, "RowKey": change_id, "Study": study, "AnnouncedAt": at}
    await _announcements.upsert(storage, [entity])  # with the concurrent writers' announcements, in one transaction


async def announce_requests(storage: Storage, announcements: Sequence[RequestAnnouncement], now: datetime) -> None:
    """Record (again) what requests may commit, before the commits they cover; ``now`` renews them."""
    await _announcements.upsert(storage, [{
        "PartitionKey": PENDING_PARTITION, "RowKey": announcement.request,
        "Studies": json.dumps(list(announcement.studies), separators=(",", ":")), "Changes": announcement.changes,
        "AnnouncedAt": announcement.announced_at, "RenewedAt": now,
        **({"Targets": targets_json(announcement.targets)} if announcement.targets else {}),
        **({"Replaced": targets_json(announcement.replaced)} if announcement.replaced else {}),
        **({"Landed": landed_json(announcement.landed)} if announcement.landed else {}),
    } for announcement in announcements])


async def withdraw_announcement(storage: Storage, change_id: str) -> None:
    """Remove an announcement none of whose commits happened (e.g. every part of a request refused)."""
    await delete_entity_quietly(storage.changes, PENDING_PARTITION, change_id)


def parse_announcement(entity: TableEntity) -> Announcement:
    """Read an announcement of either kind."""
    studies = tuple(json.loads(str(entity["Studies"]))) if entity.get("Studies") else (str(entity["Study"]),)
    changes = entity.get("Changes")
    return Announcement(
        change_id=str(entity["RowKey"]), studies=studies, changes=int(changes) if changes is not None else None,
        announced_at=entity.get("AnnouncedAt"), renewed_at=entity.get("RenewedAt"),
        etag=str(entity.metadata.get("etag", "")),
        targets=parse_targets(str(entity["Targets"])) if entity.get("Targets") else (),
        replaced=parse_targets(str(entity["Replaced"])) if entity.get("Replaced") else (),
        landed=parse_landed(str(entity["Landed"])) if entity.get("Landed") else (),
    )


async def pending_announcements(storage: Storage) -> list[Announcement]:
    """Every announcement not retired yet (the consistency checker reads the targets of intents)."""
    return [parse_announcement(entity) async for entity in storage.changes.query_entities(
        "PartitionKey eq @pk", parameters={"pk": PENDING_PARTITION})]


def outbox_operation(study: str, change_id: str, changes: Sequence[Change], at: datetime) -> tuple[str, dict[str, Any]]:
    """The transaction operation that inserts the outbox row of ``changes`` (add it to the commit)."""
    records = [{**asdict(change), "action": change.action.value} for change in changes]
    entity = {
        "PartitionKey": study, "RowKey": outbox_row_key(change_id),
        "Changes": json.dumps(records, separators=(",", ":")), "ChangedAt": at,
    }
    return ("create", entity)


def parse_changes(text: str) -> tuple[Change, ...]:
    """The changes of an outbox row's ``Changes`` property."""
    return tuple(Change(action=ChangeAction(record["action"]), series=record["series"], instance=record["instance"],
                        version=record["version"]) for record in json.loads(text))


def landed_outbox(entity: dict[str, Any]) -> LandedOutbox | None:
    """The outbox row an operation's entity inserts (None: the entity is another row)."""
    key = str(entity["RowKey"])
    if not key.startswith(OUTBOX_PREFIX):
        return None
    return LandedOutbox(str(entity["PartitionKey"]), key[len(OUTBOX_PREFIX):], parse_changes(str(entity["Changes"])))


def landed_json(landed: Sequence[LandedOutbox]) -> str:
    """An intent's ``Landed`` property: ``[[study, change id, [[action, series, instance, version], ...]], ...]``."""
    return json.dumps([[outbox.study, outbox.change_id,
                        [[c.action.value, c.series, c.instance, c.version] for c in outbox.changes]]
                       for outbox in landed], separators=(",", ":"))


def parse_landed(text: str) -> tuple[LandedOutbox, ...]:
    """The confirmed outbox rows of an intent's ``Landed`` property."""
    return tuple(LandedOutbox(str(study), str(change_id), tuple(
        Change(ChangeAction(action), str(series), str(instance), str(version))
        for action, series, instance, version in changes)) for study, change_id, changes in json.loads(text))
