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
import logging
import time

from azure.data.tables import TableEntity, UpdateMode

from dicom_core.index.commit import CommitRows, read_commit_rows
from dicom_core.index.known_studies import known_generation
from dicom_core.index.reads import get_row
from dicom_core.index.rows import STUDY_ROW, InstanceRecord, series_row_key
from dicom_core.model.levels import Level, row_attributes
from dicom_core.search_index.claims import claim_new_study, claim_partition, claim_sort_key, forget_claims
from dicom_core.search_index.keys import (
    TARGET_PREFIX,
    UID_INDEXES,
    IndexKey,
    entry_entity,
    instance_key,
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
from dicom_core.storage.sharded_table import partition_kind

LOGGER = logging.getLogger(__name__)

_WRITE_CONCURRENCY = 16
# Entries this process upserted in the last RECENT_SECONDS, or is upserting: (event loop, account, table,
# PartitionKey, RowKey, the target property of a UID lookup entity) -> (when, the study's generation before the
# upsert started, the upsert).
RECENT_SECONDS = 30.0
_RECENT_MAX = 20_000
_recent: dict[tuple[int, str, str, str, str, str], tuple[float, str, asyncio.Future[None]]] = {}
# How long the first writer of an idle index partition waits before it writes: for the entries of the other
# instances of its commit (which arrive within microseconds), and, while other partitions are being written, for
# those of concurrent stores (the other parts of a request reach their commit a few milliseconds apart).
INDEX_LINGER_SECONDS = (0.002, 0.02)
# Concurrent stores' entries of one partition (every new study's ALL_STUDIES entry, say) share a transaction: one
# lane, so whoever finds the partition idle writes alone and everyone arriving meanwhile writes together next.
# Merged: a UID lookup entity gathers one property per target, each written (and blanked) on its own.
_index_rows = PartitionUpserts(lambda storage: storage.index, lanes=1, linger=INDEX_LINGER_SECONDS,
                               mode=UpdateMode.MERGE)

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
        self._early: str | None = None  # the generation the instance's entry was written under during the upload
        self._claimed: tuple[str, str] | None = None  # the sort keys claim_new_study claimed
        self._claim_failed = False  # claim_new_study found the study or series claimed already

    async def during_upload(self) -> None:
        """Write the instance's entry while the blobs upload, if this process knows the study's generation.

        The entry depends on no row, only on the generation it is written under (taken before it is written): the
        first commit attempt that reads the same generation need not write it again; one that reads another does.
        """
        ids = self._record.stored.ids
        generation = known_generation(self._storage, ids.study)
        if generation is not None:
            entry = entry_entity(instance_key(ids.instance), "", ids.study, ids.series, ids.instance)
            await _upsert(self._storage, entry)
            self._early = generation

    async def claim_new_study(self) -> bool:
        """Claim the study's and series' sort keys as a new study's, before the commit; True if both were unclaimed.

        A committed study always has its claim (a delete removes it with the entries, before the rows), so a study
        whose claims this creates is not committed: its commit need not read the study's rows
        (`commit_instance(new_study=True)`); if it was after all, the commit's inserts fail and it reads them.
        """
        ids = self._record.stored.ids
        self._claimed = await claim_new_study(self._storage, ids.study, ids.series)
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
            claimed = await claim_new_study(self._storage, ids.study, ids.series, reuse=not self._rewrite)
        study_sort, series_sort = claimed or await asyncio.gather(
            claim_sort_key(self._storage, ids.study, STUDY_ROW, committed=rows.study is not None,
                   claimed=self._claim_failed) if study_todo else _none(),
            claim_sort_key(self._storage, ids.study, series_row_key(ids.series), committed=rows.series is not None,
                   claimed=self._claim_failed and not rows.study) if series_todo else _none(),
        )
        study_entries = {key: entry_entity(key, study_sort or "", ids.study) for key in study_todo}
        series_entries = {key: entry_entity(key, series_sort or "", ids.study, ids.series) for key in series_todo}
        entries = [*study_entries.values(), *series_entries.values()]
        key = instance_key(ids.instance)
        instance_entry = entry_entity(key, "", ids.study, ids.series, ids.instance)
        # The first attempt may skip what this process wrote moments ago under the same generation; a later one
        # writes for certain.
        once = first and not self._rewrite
        writes = [_upsert_once(self._storage, entry, generation) if once else _upsert(self._storage, entry)
                  for entry in entries]
        if first and (self._rewrite or self._early != generation):
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
            entries.append(entry_entity(instance_key(row_key.split("|")[2]), "", study, *row_key.split("|")[1:]))
        elif row_key.startswith("series|"):
            sort = await claim_sort_key(storage, study, row_key, committed=True)
            uid = row_key.split("|", 1)[1]
            entries += [entry_entity(key, sort, study, uid) for key in series_row_keys(row)]
        elif row_key == STUDY_ROW:
            sort = await claim_sort_key(storage, study, STUDY_ROW, committed=True)
            entries += [entry_entity(key, sort, study) for key in study_row_keys(row)]
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
        return await _delete_entries(storage, [entry_entity(instance_key(instance), "", study, series, instance)])
    forget_claims(study, series)  # this process claims afresh after the delete
    claims = {
        str(claim["RowKey"]): str(claim["SortKey"])
        async for claim in storage.index.query_entities(
            "PartitionKey eq @pk", parameters={"pk": claim_partition(study)}, select=["RowKey", "SortKey"])
    }
    entries: list[dict[str, str]] = []
    for row in await _rows_in_scope(storage, study, series):
        row_key = str(row["RowKey"])
        if row_key.startswith("instance|"):
            _, series_uid, instance_uid = row_key.split("|")
            entries.append(entry_entity(instance_key(instance_uid), "", study, series_uid, instance_uid))
        elif row_key.startswith("series|"):
            uid = row_key.split("|", 1)[1]
            entries.extend(entry_entity(key, claims.get(row_key, ""), study, uid) for key in series_row_keys(row))
        elif row_key == STUDY_ROW:
            entries.extend(entry_entity(key, claims.get(STUDY_ROW, ""), study) for key in study_row_keys(row))
    claim_rows = [series_row_key(series)] if series is not None else list(claims)
    entries.extend({"PartitionKey": claim_partition(study), "RowKey": row_key} for row_key in claim_rows)
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


async def _delete_entries(storage: Storage, entries: list[dict[str, str]]) -> int:
    """Delete ``entries`` (those of one partition, the instances of a series by UID, in shared transactions); blank
    the targets of UID lookup entities instead (a merge of "": another target of the entity stays)."""
    loop, table = id(asyncio.get_running_loop()), storage.index
    by_partition: dict[str, list[RowDelete]] = {}
    blanks: dict[tuple[str, str], dict[str, str]] = {}
    for entry in entries:
        partition, row = entry["PartitionKey"], entry["RowKey"]
        _recent.pop((loop, table.url, table.table_name, partition, row, _target_of(entry)), None)
        if partition_kind(partition) in UID_INDEXES:
            blank = blanks.setdefault((partition, row), {"PartitionKey": partition, "RowKey": row})
            blank.update((name, "") for name in entry if name.startswith(TARGET_PREFIX))
        else:
            by_partition.setdefault(partition, []).append(RowDelete(row))
    deletes = (delete_rows(storage.index, partition, list(dict.fromkeys(rows)))
               for partition, rows in by_partition.items())
    await bounded_gather([*deletes, _index_rows.upsert(storage, blanks.values(), own=True)],
                         limit=_WRITE_CONCURRENCY)
    return len(entries)


def _target_of(entry: dict[str, str]) -> str:
    """The target property of a UID lookup entity's entry ("" for other entries)."""
    return next((name for name in entry if name.startswith(TARGET_PREFIX)), "")


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
    key = (id(asyncio.get_running_loop()), table.url, table.table_name, entry["PartitionKey"], entry["RowKey"],
           _target_of(entry))
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


async def _none() -> None:
    return None
