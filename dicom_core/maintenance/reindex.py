"""Bringing stored studies to the current search layout: `python -m dicom_core.maintenance.reindex`.

Archives stored before name words were indexed whole hold one partition per word prefix of 1-6 characters
(`s.pnw|{prefix}`, `s.refw|{prefix}`, RowKey `{sort}|{study}`), which searches no longer read, and no entries of
a name's leading word pair (`s.pnpair`, `s.refpair`), which wildcard searches read. This writes every study's name
word and word pair entries from its study row (the Attributes it holds), with the sort key its first store
claimed, gives every series row its copy of the study's attributes (which lets a series or instance search
skip the study row) and of its latest instance row (which lets an instance search skip the instance row of a
single-instance series), then deletes the old partitions. Archives stored before lookups by series and SOP instance
UID were point reads hold their entries as RowKey ranges of the partition of the UID's root (`se.root|{root}`,
`i.root|{root}`) or, before that, a partition per UID (`se.uid|{series}`, `i.uid|{instance}`), which searches still
read beside the current ones: this writes every series and instance row's target into the entity of its UID (from
one scan of the row keys) and deletes the old partitions, and those of whole names (`s.pn|{name}`, `s.ref|{name}`),
which searches no longer read (an exact name is found by its word pair). Settings come from the environment, like
the app's.
Idempotent (upserts, and deletes of what it finds): run it again after a failure. With ``--keep-old`` the old
partitions stay: run it so before deploying (the old version keeps answering name searches from them), and
once more without it after (for the studies stored in between).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableEntity, UpdateMode

from dicom_core.index.instance_copies import fill_last_instance_copies
from dicom_core.index.reads import series_rows
from dicom_core.index.rows import STUDY_ROW
from dicom_core.index.study_copies import refresh_study_copies
from dicom_core.search_index.claims import series_sort_key, study_sort_key
from dicom_core.search_index.keys import (
    CLAIMS,
    INSTANCES_BY_UID,
    LEGACY_EXACT_NAME_INDEXES,
    LEGACY_UID_INDEXES,
    SERIES_BY_UID,
    VALUE_LED_INDEXES,
    entry_entity,
    series_row_keys,
    study_row_keys,
    uid_key,
)
from dicom_core.settings import Settings
from dicom_core.storage.batch_deletes import RowDelete, delete_rows
from dicom_core.storage.clients import Storage, open_storage
from dicom_core.storage.concurrency import bounded_gather
from dicom_core.storage.sharded_table import ShardedTable

# The kinds of rows (the first part of their RowKey) that are found by their UID.
INSTANCE_PREFIX, SERIES_PREFIX = "instance", "series"
# The name word indexes of the layout before: one partition per word prefix of 1-6 characters.
LEGACY_WORD_INDEXES = ("s.pnw", "s.refw")
TRANSACTION_MAX = 100  # operations of one entity-group transaction
_PAGE = 1000
_CONCURRENCY = 16


@dataclass(frozen=True)
class ReindexReport:
    """What a run did: studies read, entries written, entries of the old layout deleted, storage requests sent."""

    studies: int
    entries_written: int
    old_entries_deleted: int
    requests: int
    copies_written: int = 0
    uid_entries_written: int = 0
    instance_copies_written: int = 0


@dataclass
class _Tally:
    """Counts of one run."""

    studies: int = 0
    written: int = 0
    deleted: int = 0
    requests: int = 0
    copies: int = 0
    uid_entries: int = 0
    instance_copies: int = 0


async def reindex_names(storage: Storage, *, keep_old: bool = False) -> ReindexReport:
    """Write every study's name word, StudyID and StudyTime entries from its study row, and its series' SeriesNumber
    and procedure step start entries from their rows; then delete the old layout's name entries (unless
    ``keep_old``)."""
    tally = _Tally()
    claims = await _claimed_sort_keys(storage, tally)
    held: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)  # partition -> RowKey -> entry not yet written
    async for page in _pages(storage.studies, "RowKey eq @row", {"row": STUDY_ROW}, ["PartitionKey", "Attributes"],
                             tally):
        copied = await bounded_gather((refresh_study_copies(storage, str(row["PartitionKey"]), fill_missing=True)
                                       for row in page), limit=_CONCURRENCY)
        filled = await bounded_gather((fill_last_instance_copies(storage, str(row["PartitionKey"]))
                                       for row in page), limit=_CONCURRENCY)
        tally.copies += sum(copied)
        tally.instance_copies += sum(filled)
        tally.requests += 4 * len(page) + sum(-(-count // TRANSACTION_MAX) for count in copied) + sum(filled)
        for row in page:
            study = str(row["PartitionKey"])
            sort = claims.get(study)
            if sort is None:
                sort = await study_sort_key(storage, study)
                tally.requests += 2
            tally.studies += 1
            for key in study_row_keys(row):
                if key.index in VALUE_LED_INDEXES:
                    row_key = key.row_key(sort, study)
                    held[key.partition][row_key] = {"PartitionKey": key.partition, "RowKey": row_key}
        series_entries = await bounded_gather((_series_value_entries(storage, str(row["PartitionKey"]), tally)
                                               for row in page), limit=_CONCURRENCY)
        for entries in series_entries:
            for entry in entries:
                held[entry["PartitionKey"]][entry["RowKey"]] = entry
        tally.written += await _write(storage, held, tally, full_only=True)
    tally.written += await _write(storage, held, tally, full_only=False)
    await _write_uid_entries(storage, tally)
    if not keep_old:
        for index in (*LEGACY_WORD_INDEXES, *LEGACY_EXACT_NAME_INDEXES, *sorted(LEGACY_UID_INDEXES)):
            await _delete_partitions(storage, index, tally)
    return ReindexReport(tally.studies, tally.written, tally.deleted, tally.requests, tally.copies, tally.uid_entries,
                         tally.instance_copies)


async def _write_uid_entries(storage: Storage, tally: _Tally) -> None:
    """Merge every series and instance row's target into the lookup entity of its UID, from one key scan."""
    held: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    rows = {"low": f"{INSTANCE_PREFIX}|", "high": f"{SERIES_PREFIX}}}"}  # instance|… < outbox… < series|…
    async for page in _pages(storage.studies, "RowKey ge @low and RowKey lt @high", rows, ["PartitionKey", "RowKey"],
                             tally):
        for row in page:
            kind, *uids = str(row["RowKey"]).split("|")
            index = {INSTANCE_PREFIX: INSTANCES_BY_UID, SERIES_PREFIX: SERIES_BY_UID}.get(kind)
            if index is None or not uids:
                continue
            entity = entry_entity(uid_key(index, uids[-1]), "", str(row["PartitionKey"]), *uids)
            # One operation per entity: the targets of a UID stored in several studies are one merge.
            held[entity["PartitionKey"]].setdefault(entity["RowKey"], {}).update(entity)
        tally.uid_entries += await _write(storage, held, tally, full_only=True)
    tally.uid_entries += await _write(storage, held, tally, full_only=False)


async def _series_value_entries(storage: Storage, study: str, tally: _Tally) -> list[dict[str, Any]]:
    """The value-led entries (SeriesNumber, PerformedProcedureStepStartDate/Time) of a study's series rows."""
    rows = await series_rows(storage, study, select=["RowKey", "Modality", "Attributes"])
    tally.requests += 1
    entries: list[dict[str, Any]] = []
    for row in rows:
        keys = [key for key in series_row_keys(row) if key.index in VALUE_LED_INDEXES]
        if not keys:
            continue
        series = str(row["RowKey"]).split("|", 1)[1]
        sort = await series_sort_key(storage, study, series)
        tally.requests += 1
        entries += [{"PartitionKey": key.partition, "RowKey": key.row_key(sort, study, series)} for key in keys]
    return entries


async def _claimed_sort_keys(storage: Storage, tally: _Tally) -> dict[str, str]:
    """Every study's claimed sort key, from one range read of the claims."""
    query = "PartitionKey ge @low and PartitionKey lt @high and RowKey eq @row"
    parameters = {"low": f"{CLAIMS}|", "high": f"{CLAIMS}}}", "row": STUDY_ROW}
    return {str(claim["PartitionKey"]).split("|", 1)[1]: str(claim["SortKey"])
            async for page in _pages(storage.index, query, parameters, ["PartitionKey", "SortKey"], tally)
            for claim in page}


async def _write(storage: Storage, held: dict[str, dict[str, dict[str, Any]]], tally: _Tally, *,
                 full_only: bool) -> int:
    """Upsert the held entries in transactions of one partition each (only full ones when ``full_only``); count them."""
    batches: list[list[dict[str, Any]]] = []
    for partition, by_row in held.items():
        entries = list(by_row.values())
        cut = len(entries) - len(entries) % TRANSACTION_MAX if full_only else len(entries)
        batches += [entries[start:start + TRANSACTION_MAX] for start in range(0, cut, TRANSACTION_MAX)]
        held[partition] = {str(entry["RowKey"]): entry for entry in entries[cut:]}
    await bounded_gather((_upsert(storage, batch) for batch in batches), limit=_CONCURRENCY)
    tally.requests += len(batches)
    return sum(map(len, batches))


async def _upsert(storage: Storage, batch: list[dict[str, Any]]) -> None:
    """Merged: a UID lookup entity keeps the targets stores added meanwhile (other entries hold no properties)."""
    await storage.recreating_missing(lambda: storage.index.submit_transaction(
        [("upsert", entry, {"mode": UpdateMode.MERGE}) for entry in batch]))


async def _delete_partitions(storage: Storage, index: str, tally: _Tally) -> None:
    """Delete every entry of the partitions ``{index}|…``, a page at a time, in transactions per partition."""
    query = "PartitionKey ge @low and PartitionKey lt @high"
    async for page in _pages(storage.index, query, {"low": f"{index}|", "high": f"{index}}}"},
                             ["PartitionKey", "RowKey"], tally):
        by_partition: dict[str, list[RowDelete]] = defaultdict(list)
        for entry in page:
            by_partition[str(entry["PartitionKey"])].append(RowDelete(str(entry["RowKey"])))
        await bounded_gather((delete_rows(storage.index, partition, rows) for partition, rows in by_partition.items()),
                             limit=_CONCURRENCY)
        tally.requests += sum(-(-len(rows) // TRANSACTION_MAX) for rows in by_partition.values())
        tally.deleted += len(page)


async def _pages(table: ShardedTable, query: str, parameters: dict[str, Any], select: list[str],
                 tally: _Tally) -> AsyncIterator[list[TableEntity]]:
    """The entities ``query`` matches in every shard of ``table``, a page (one request) at a time."""
    for shard in table.shards:
        pages = shard.query_entities(query, parameters=parameters, select=select, results_per_page=_PAGE).by_page()
        try:
            async for page in pages:
                tally.requests += 1
                yield [entity async for entity in page]
        except ResourceNotFoundError:
            continue  # a shard not created yet holds nothing


async def _main(keep_old: bool) -> int:
    storage = await open_storage(Settings.from_environment())
    try:
        report = await reindex_names(storage, keep_old=keep_old)
    finally:
        await storage.close()
    print(f"{report.studies} studies: {report.entries_written} value entries (name words, IDs, times) written, "
          f"{report.old_entries_deleted} entries of the old layout deleted, {report.copies_written} series rows "
          f"given their study's attributes, {report.instance_copies_written} their latest instance row's, "
          f"{report.uid_entries_written} series and instance UID entries written, "
          f"{report.requests} storage requests")
    return 0


def main(argv: list[str] | None = None) -> None:
    """Command line: move the name entries of the storage the environment's settings name to whole words."""
    parser = argparse.ArgumentParser(prog="python -m dicom_core.maintenance.reindex",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--keep-old", action="store_true",
                        help="leave the old layout's partitions (for a run before deploying; run again after)")
    arguments = parser.parse_args(argv)
    sys.exit(asyncio.run(_main(arguments.keep_old)))


if __name__ == "__main__":
    main()
