"""Writing the secondary index table `{prefix}Index`: entries that let a search read a page, not the archive.

Table Storage indexes only PartitionKey and RowKey, so each searchable value gets its own partition and each
entry's RowKey starts with an inverted sort key: a newest-first page is one RowKey range read; a name word's
RowKey starts with the word, so the words beginning with a prefix are one range (the keys: `keys.py`). The
store path writes the entries of an instance *before* its study transaction commits (intents), so no committed
study is missing from an index: the transaction is conditioned on the study's generation marker as it was before
the entries were written, and a delete changes the marker after removing entries (`index/commit.py`). A search
verifies every entry against the row it points at and drops stale ones (an upsert that changed a value, a crash
before the commit, a delete). Entries are never deleted by a search: an entry without its row may be an intent
whose commit is a moment away. See docs/storage.md.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from datetime import UTC, datetime, timedelta

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ServiceRequestError
from azure.data.tables import TableEntity, TableTransactionError, UpdateMode

from dicom_core.index.commit import CommitRows, read_commit_rows
from dicom_core.index.reads import get_row
from dicom_core.index.rows import STUDY_ROW, InstanceRecord, series_row_key
from dicom_core.model.levels import Level, row_attributes
from dicom_core.search_index.keys import (
    CLAIMS,
    IndexKey,
    instance_key,
    inverted_time,
    series_keys,
    series_row_keys,
    study_keys,
    study_row_keys,
    study_row_modalities,
)
from dicom_core.storage.batch_deletes import RowDelete, delete_rows
from dicom_core.storage.clients import Storage
from dicom_core.storage.concurrency import bounded_gather
from dicom_core.storage.partition_upserts import PartitionUpserts
from dicom_core.storage.tables import get_entity_or_none

LOGGER = logging.getLogger(__name__)

# A claim older than this whose study (or series) never got committed is taken over by the next first store.
CLAIM_TTL = timedelta(hours=1)
_WRITE_CONCURRENCY = 16
# Entries this process upserted in the last RECENT_SECONDS, or is upserting: (event loop, account, table,
# PartitionKey, RowKey) -> (when, the study's generation before the upsert started, the upsert).
RECENT_SECONDS = 30.0
_RECENT_MAX = 20_000
_recent: dict[tuple[int, str, str, str, str], tuple[float, str, asyncio.Future[None]]] = {}
# How long the first writer of an idle index partition waits before it writes: for the entries of the other
# instances of its commit (which arrive within microseconds), and, while other partitions are being written, for
# those of concurrent stores (the other parts of a request reach their commit a few milliseconds apart).
INDEX_LINGER_SECONDS = (0.002, 0.02)
# Concurrent stores' entries of one partition (every new study's ALL_STUDIES entry, say) share a transaction: one
# lane, so whoever finds the partition idle writes alone and everyone arriving meanwhile writes together next.
_index_rows = PartitionUpserts(lambda storage: storage.index, lanes=1, linger=INDEX_LINGER_SECONDS)

async def write_index_intents(storage: Storage, record: InstanceRecord) -> None:
    """Write the entries of an instance about to be committed (idempotent upserts, concurrently).

    Study- and series-level entries already written for the values the committed rows hold are skipped,
    so storing the 500th instance of a series writes one entry. The store path passes `IndexIntents` to
    `commit_instance` instead, which shares the commit's row reads and completes the entries per attempt.
    """
    await IndexIntents(storage, record).before_commit(await read_commit_rows(storage, record.stored.ids))


class IndexIntents:
    """The index entries of one instance being stored, kept in step with the rows each commit attempt read.

    Used as `commit_instance` hooks. Before every attempt it writes the entries the rows of that attempt do
    not account for (the first attempt writes them all; a later one only what changed, e.g. the study row
    it had found is gone because a delete removed the study and its entries meanwhile). Entries written under
    one generation of the study stay valid while the generation is unchanged: the attempt's transaction is
    conditioned on it, and a delete changes it after removing entries. When an attempt reads another
    generation, every entry is written again, so a created row never lacks its entries.
    """

    def __init__(self, storage: Storage, record: InstanceRecord) -> None:
        self._storage = storage
        self._record = record
        self._study: dict[IndexKey, dict[str, str]] = {}  # study-level key -> the entry written for it
        self._series: dict[IndexKey, dict[str, str]] = {}
        self._instance_written = False
        self._generation: str | None = None  # the study's generation the entries were written under
        self._rewrite = False
        self._claimed: tuple[str, str] | None = None  # the sort keys claim_new_study claimed
        self._claim_failed = False  # claim_new_study found the study or series claimed already

    async def claim_new_study(self) -> bool:
        """Claim the study's and series' sort keys as a new study's, before the commit; True if both were unclaimed.

        A committed study always has its claim (a delete removes it with the entries, before the rows), so a study
        whose claims this creates is not committed: its commit need not read the study's rows
        (`commit_instance(new_study=True)`); if it was after all, the commit's inserts fail and it reads them.
        """
        ids = self._record.stored.ids
        self._claimed = await _claim_new_study(self._storage, ids.study, ids.series)
        self._claim_failed = self._claimed is None
        return self._claimed is not None

    async def before_commit(self, rows: CommitRows) -> None:
        """Write the entries that ``rows`` (about to be committed over) do not account for."""
        ids = self._record.stored.ids
        generation = rows.generation_value
        if self._generation is not None and generation != self._generation:
            # A delete may have removed any entry written so far: all of them are written again, for certain.
            self._study, self._series, self._instance_written, self._rewrite = {}, {}, False, True
            self._claimed, self._claim_failed = None, False  # and the claims
        missing_study, missing_series = _missing_keys(self._record, rows.study, rows.series)
        study_todo, series_todo = missing_study - set(self._study), missing_series - set(self._series)
        first = not self._instance_written
        if not (study_todo or series_todo or first):
            return
        new_study = study_todo and series_todo and rows.study is None and rows.series is None
        claimed = None
        if new_study and self._claimed is not None:
            claimed = self._claimed  # made by claim_new_study just before this commit, under the same generation
        elif new_study and not self._claim_failed:  # after a delete (a new generation), claims made afresh
            claimed = await _claim_new_study(self._storage, ids.study, ids.series, reuse=not self._rewrite)
        study_sort, series_sort = claimed or await asyncio.gather(
            _claim(self._storage, ids.study, STUDY_ROW, committed=rows.study is not None,
                   claimed=self._claim_failed) if study_todo else _none(),
            _claim(self._storage, ids.study, series_row_key(ids.series), committed=rows.series is not None,
                   claimed=self._claim_failed and not rows.study) if series_todo else _none(),
        )
        study_entries = {key: _entry(key, study_sort or "", ids.study) for key in study_todo}
        series_entries = {key: _entry(key, series_sort or "", ids.study, ids.series) for key in series_todo}
        entries = [*study_entries.values(), *series_entries.values()]
        key = instance_key(ids.instance)
        instance_entry = _entry(key, "", ids.study, ids.series, ids.instance)
        # The first attempt may skip what this process wrote moments ago under the same generation; a later one
        # writes for certain.
        once = first and not self._rewrite
        writes = [_upsert_once(self._storage, entry, generation) if once else _upsert(self._storage, entry)
                  for entry in entries]
        if first:
            writes.append(_upsert(self._storage, instance_entry))
        await bounded_gather(writes, limit=_WRITE_CONCURRENCY)
        self._study.update(study_entries)
        self._series.update(series_entries)
        self._instance_written = True
        self._generation = generation

    async def after_commit(self, rows: CommitRows) -> None:
        """Nothing to repair: the transaction that landed was conditioned on the generation the entries saw."""


def _missing_keys(
    record: InstanceRecord, study_row: TableEntity | None, series_row: TableEntity | None,
) -> tuple[set[IndexKey], set[IndexKey]]:
    """The study- and series-level keys of ``record`` that the committed rows' own entries do not cover."""
    ids = record.stored.ids
    old_modalities = study_row_modalities(study_row) if study_row else set()
    new_study = study_keys(row_attributes(record.metadata, Level.STUDY), old_modalities | {record.modality} - {""})
    missing_study = new_study - (study_row_keys(study_row) if study_row else set())
    new_series = series_keys(ids.series, record.modality, row_attributes(record.metadata, Level.SERIES))
    old_series = series_row_keys(series_row) if series_row else set()
    return missing_study, new_series - old_series


def _entry(key: IndexKey, sort_key: str, *uids: str) -> dict[str, str]:
    return {"PartitionKey": key.partition, "RowKey": key.row_key(sort_key, *uids)}


async def restore_index_entries(storage: Storage, study: str, series: str | None = None) -> int:
    """Write the entries of every row still in scope; a delete calls it when rows it removed entries of survived.

    A delete removes the entries of the levels it expects to empty before deleting their rows; when a store
    committed into the study (or series) meanwhile, the level stays, and this puts its entries back.
    """
    rows = await _rows_in_scope(storage, study, series)
    entries: list[dict[str, str]] = []
    for row in rows:
        row_key = str(row["RowKey"])
        if row_key.startswith("instance|"):
            entries.append(_entry(instance_key(row_key.split("|")[2]), "", study, *row_key.split("|")[1:]))
        elif row_key.startswith("series|"):
            sort = await _claim(storage, study, row_key, committed=True)
            uid = row_key.split("|", 1)[1]
            entries += [_entry(key, sort, study, uid) for key in series_row_keys(row)]
        elif row_key == STUDY_ROW:
            sort = await _claim(storage, study, STUDY_ROW, committed=True)
            entries += [_entry(key, sort, study) for key in study_row_keys(row)]
    await bounded_gather((_upsert(storage, entry) for entry in entries), limit=_WRITE_CONCURRENCY)
    return len(entries)


async def remove_index_entries(
    storage: Storage, study: str, series: str | None = None, instance: str | None = None
) -> int:
    """Remove the entries of an instance, a series or a whole study; call it before deleting their rows.

    Returns how many entries it deleted (or found gone). Entries for values the rows no longer hold (an
    earlier upsert) stay behind; searches drop them, as they drop every entry whose row is gone.
    """
    if instance is not None:
        if series is None:
            raise ValueError("An instance is identified by its study, series and SOP instance UIDs")
        return await _delete_entries(storage, [_instance_entry(study, series, instance)])
    for made in [key for key in _claiming if key[3] == study and series in (None, key[4])]:
        del _claiming[made]  # this process claims afresh after the delete
    claims = {
        str(claim["RowKey"]): str(claim["SortKey"])
        async for claim in storage.index.query_entities(
            "PartitionKey eq @pk", parameters={"pk": _claim_partition(study)}, select=["RowKey", "SortKey"])
    }
    entries: list[tuple[str, str]] = []
    for row in await _rows_in_scope(storage, study, series):
        row_key = str(row["RowKey"])
        if row_key.startswith("instance|"):
            entries.append(_instance_entry(study, *row_key.split("|")[1:]))
        elif row_key.startswith("series|"):
            entries.extend(_series_entries(study, row_key, row, claims))
        elif row_key == STUDY_ROW:
            sort = claims.get(STUDY_ROW, "")
            entries.extend((key.partition, key.row_key(sort, study)) for key in study_row_keys(row))
    claim_rows = [series_row_key(series)] if series is not None else list(claims)
    entries.extend((_claim_partition(study), row_key) for row_key in claim_rows)
    return await _delete_entries(storage, entries)


async def _rows_in_scope(storage: Storage, study: str, series: str | None) -> list[TableEntity]:
    """Every row of the study partition, or a series' instance rows and its series row."""
    select = ["RowKey", "Modality", "Attributes", "ModalityCounts"]
    if series is None:
        query, parameters = "PartitionKey eq @pk", {"pk": study}
    else:
        query = "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high"
        parameters = {"pk": study, "low": f"instance|{series}|", "high": f"instance|{series}}}"}
    rows = [row async for row in storage.studies.query_entities(query, parameters=parameters, select=select)]
    if series is not None:
        series_row = await get_row(storage, study, series_row_key(series), select)
        rows += [series_row] if series_row is not None else []
    return rows


def _instance_entry(study: str, series: str, instance: str) -> tuple[str, str]:
    key = instance_key(instance)
    return key.partition, key.row_key("", study, series, instance)


def _series_entries(study: str, row_key: str, row: TableEntity, claims: dict[str, str]) -> list[tuple[str, str]]:
    series = row_key.split("|", 1)[1]
    sort = claims.get(row_key, "")
    return [(key.partition, key.row_key(sort, study, series)) for key in series_row_keys(row)]


async def _delete_entries(storage: Storage, entries: list[tuple[str, str]]) -> int:
    """Delete ``entries``, those of one partition (the instances of a series by UID) in shared transactions."""
    loop, table = id(asyncio.get_running_loop()), storage.index
    by_partition: dict[str, list[RowDelete]] = {}
    for partition, row in entries:
        _recent.pop((loop, table.url, table.table_name, partition, row), None)
        by_partition.setdefault(partition, []).append(RowDelete(row))
    await bounded_gather((delete_rows(storage.index, partition, list(dict.fromkeys(rows)))
                          for partition, rows in by_partition.items()), limit=_WRITE_CONCURRENCY)
    return len(entries)


async def _upsert(storage: Storage, entry: dict[str, str]) -> None:
    """Upsert an entry, whatever this process wrote before (with the entries of its partition being written)."""
    await _index_rows.upsert(storage, [entry])


async def _upsert_once(storage: Storage, entry: dict[str, str], generation: str) -> None:
    """Upsert an entry unless this process upserted it moments ago, or is upserting it, under the same generation.

    The parts of one STOW request that race into a new study all compute the same entries (one claimed sort
    key); this writes each once. A delete in another process that removed it meanwhile changed the study's
    generation after that, so the commit relying on it fails, reads the new generation and writes it again.
    """
    table = storage.index
    key = (id(asyncio.get_running_loop()), table.url, table.table_name, entry["PartitionKey"], entry["RowKey"])
    now = time.monotonic()
    recent = _recent.get(key)
    if recent is not None and now - recent[0] < RECENT_SECONDS and recent[1] == generation:
        future = recent[2]
        if not future.done():
            await asyncio.shield(future)
            return
        if not future.cancelled() and future.exception() is None:
            return
    future = asyncio.ensure_future(_index_rows.upsert(storage, [entry]))
    if len(_recent) >= _RECENT_MAX:
        for old in [k for k, (moment, _, _) in _recent.items() if now - moment >= RECENT_SECONDS]:
            del _recent[old]
    _recent[key] = (now, generation, future)
    await future


async def study_sort_key(storage: Storage, study: str) -> str:
    """The sort key of a committed study: the one its first store claimed (a new claim when it has none)."""
    return await _claim(storage, study, STUDY_ROW, committed=True)


async def series_sort_key(storage: Storage, study: str, series: str) -> str:
    """The sort key of a committed series: the one its first store claimed (a new claim when it has none)."""
    return await _claim(storage, study, series_row_key(series), committed=True)


def _claim_partition(study: str) -> str:
    return f"{CLAIMS}|{study}"


# Claims of new studies this process made in the last RECENT_SECONDS, or is making: (event loop, account, table,
# study, series) -> (when, the claim). The parts of one request into one new study share one.
_claiming: dict[tuple[int, str, str, str, str], tuple[float, asyncio.Future[tuple[str, str] | None]]] = {}


async def _claim_new_study(storage: Storage, study: str, series: str, *, reuse: bool = True,
                           ) -> tuple[str, str] | None:
    """Claim the sort keys of a new study and its first series in one transaction; None if either is claimed.

    Callers of this process for one study and series share one attempt and, for RECENT_SECONDS, the claims it
    created (a delete that removed them meanwhile changed the study's generation: the commit relying on them
    fails on its marker and claims again).
    """
    table = storage.index
    key = (id(asyncio.get_running_loop()), table.url, table.table_name, study, series)
    now = time.monotonic()
    known = _claiming.get(key)
    if reuse and known is not None and now - known[0] < RECENT_SECONDS and not (
            known[1].done() and (known[1].cancelled() or known[1].exception() or known[1].result() is None)):
        return await asyncio.shield(known[1])
    if len(_claiming) >= _RECENT_MAX:
        for old in [k for k, (moment, _) in _claiming.items() if now - moment >= RECENT_SECONDS]:
            del _claiming[old]
    future = asyncio.ensure_future(_create_claims(storage, study, series))
    _claiming[key] = (now, future)
    return await asyncio.shield(future)


async def _create_claims(storage: Storage, study: str, series: str) -> tuple[str, str] | None:
    now = datetime.now(UTC)
    claims = [{"PartitionKey": _claim_partition(study), "RowKey": row_key, "SortKey": inverted_time(now),
               "ClaimedAt": now} for row_key in (STUDY_ROW, series_row_key(series))]
    try:
        await storage.recreating_missing(functools.partial(
            storage.index.submit_transaction, [("create", claim) for claim in claims]))
    except (TableTransactionError, ServiceRequestError):
        return None  # claimed already (or the answer was lost): each claim is read or made on its own
    return str(claims[0]["SortKey"]), str(claims[1]["SortKey"])


async def _claim(storage: Storage, study: str, row_key: str, *, committed: bool, claimed: bool = False) -> str:
    """Return the sort key of a study (or series): the one the first store claimed, or a new claim.

    Every store that races to create a study agrees on one sort key this way; the study row's CreatedAt is
    only fixed later, by whichever commit creates the row. ``claimed``: the claim most likely exists (read first).
    """
    partition = _claim_partition(study)
    likely_new = not committed and not claimed
    for _ in range(5):
        now = datetime.now(UTC)
        claim = {"PartitionKey": partition, "RowKey": row_key, "SortKey": inverted_time(now), "ClaimedAt": now}
        if likely_new:
            try:
                await storage.recreating_missing(functools.partial(storage.index.create_entity, claim))
                return str(claim["SortKey"])
            except (ResourceExistsError, ServiceRequestError):
                pass  # a create is a POST, which the SDK does not retry; reading tells whether it landed
        existing = await get_entity_or_none(storage.index, partition, row_key)
        if existing is None:
            likely_new = True
            continue
        if committed or now - existing["ClaimedAt"] < CLAIM_TTL:
            return str(existing["SortKey"])
        # An old claim whose study was never committed (its first store crashed): start afresh.
        try:
            await storage.index.update_entity(
                claim, mode=UpdateMode.REPLACE, etag=existing.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
            return str(claim["SortKey"])
        except ResourceModifiedError:
            likely_new = False
    raise TimeoutError(f"Could not claim a sort key for {study} {row_key}")


async def _none() -> None:
    return None
