"""Index entries of extended query tags: their keys, writing them for an instance, finding and removing them.

Each tag has two partitions in the Index table. ``x.{path}|v`` holds one entry per (value, target) with the
RowKey ``{encoded index form}!{target}``, so exact values, UID lists, wildcard prefixes and DA/DT/TM ranges
are each one RowKey range; ``x.{path}|w`` holds one entry per word of a person name (fuzzy matching). The
target is always the instance (``study|series|instance``) and the entry holds the instance's Version, so a
search keeps only the entries whose instance row still has that version (an upsert or a delete since makes
them stale) and then reduces them to the tag's level. Entries are upserts of fixed keys, so writing an
instance's entries again (a retried store, a resumed reindex) changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from azure.data.tables import TableEntity

from dicom_core.index.reads import get_row
from dicom_core.index.rows import instance_row_key
from dicom_core.model.dicom_json import JsonDataset
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance
from dicom_core.model.levels import Level
from dicom_core.model.text import trim
from dicom_core.search_index.extended_values import ExtendedFilter, InvalidValueError, index_value
from dicom_core.search_index.keys import KEY_VALUE_CHARS, WORD_END, WORD_KEY_CHARS, encode_key, successor
from dicom_core.storage.batch_deletes import RowDelete, delete_rows
from dicom_core.storage.clients import Storage
from dicom_core.storage.concurrency import bounded_gather
from dicom_core.storage.partition_upserts import PartitionUpserts
from dicom_core.storage.tables import query_all

_entries = PartitionUpserts(lambda storage: storage.index)
_RANGE = "PartitionKey eq @p and RowKey ge @low and RowKey lt @high"
# The end of every key range: sorts after every encoded character.
_KEY_END = "~"
VERIFY_CONCURRENCY = 16


@dataclass(frozen=True)
class IndexedTag:
    """An extended query tag as indexing needs it: its path (8 hex digits), VR, level and private creator."""

    path: str
    vr: str
    level: Level
    private_creator: str | None = None

    @property
    def json_key(self) -> str:
        """The tag's key in DICOM JSON."""
        return self.path.upper()


@dataclass(frozen=True)
class Match:
    """A study, series or instance an entry points at (``series``/``instance`` None above their level)."""

    study: str
    series: str | None = None
    instance: str | None = None


@dataclass(frozen=True)
class IndexingError:
    """A stored value of an indexed tag that does not fit the tag's VR."""

    tag: IndexedTag
    message: str


def values_partition(tag: IndexedTag) -> str:
    """The partition of a tag's value entries."""
    return f"x.{tag.path}|v"


def words_partition(tag: IndexedTag) -> str:
    """The partition of a (person name) tag's word entries."""
    return f"x.{tag.path}|w"


def first_element_value(metadata: JsonDataset, tag: IndexedTag) -> Any | None:
    """The first value of the tag's element in an instance's DICOM JSON, or None when absent or empty.

    A private tag's element counts only in a block reserved by the tag's private creator.
    """
    if tag.private_creator is not None:
        group, element = tag.path[:4], int(tag.path[4:], 16)
        creator = metadata.get(f"{group}00{element >> 8:02X}", {}).get("Value") or [None]
        if trim(str(creator[0] or "")) != tag.private_creator:
            return None
    values = metadata.get(tag.json_key, {}).get("Value") or []
    return values[0] if values and values[0] not in (None, "") else None


def entries_of(stored: StoredInstance, tag: IndexedTag, metadata: JsonDataset) -> list[dict[str, Any]]:
    """The index entries of one instance for ``tag`` (none when the value is absent; InvalidValueError if bad)."""
    value = first_element_value(metadata, tag)
    if value is None:
        return []
    indexed = index_value(tag.vr, value)
    if not indexed.text:
        return []
    ids = stored.ids
    target = f"{ids.study}|{ids.series}|{ids.instance}"
    entries = [{"PartitionKey": values_partition(tag), "Value": indexed.text, "Version": stored.version,
                "RowKey": f"{encode_key(indexed.text[:KEY_VALUE_CHARS])}{WORD_END}{target}"}]
    entries += [{"PartitionKey": words_partition(tag), "Value": word, "Version": stored.version,
                 "RowKey": f"{encode_key(word[:WORD_KEY_CHARS])}{WORD_END}{target}"} for word in set(indexed.words)]
    return entries


async def write_entries(storage: Storage, entries: list[dict[str, Any]]) -> None:
    """Upsert index entries (those of a partition together, in transactions)."""
    if entries:
        await _entries.upsert(storage, entries)


def instance_entries(
    stored: StoredInstance, tags: list[IndexedTag], metadata: JsonDataset,
) -> tuple[list[dict[str, Any]], list[IndexingError]]:
    """The entries of one stored instance for ``tags``, and the values that failed validation (no entries)."""
    entries: list[dict[str, Any]] = []
    errors: list[IndexingError] = []
    for tag in tags:
        try:
            entries += entries_of(stored, tag, metadata)
        except InvalidValueError as exc:
            errors.append(IndexingError(tag, str(exc)))
    return entries, errors


async def index_instance(
    storage: Storage, tags: list[IndexedTag], metadata: JsonDataset, stored: StoredInstance,
) -> list[IndexingError]:
    """Write the entries of one stored instance for ``tags``; the values that failed validation (not indexed)."""
    entries, errors = instance_entries(stored, tags, metadata)
    await write_entries(storage, entries)
    return errors


async def remove_entries(storage: Storage, tag: IndexedTag, *, limit: int = 500) -> int:
    """Delete up to ``limit`` entries of ``tag`` per partition; how many were deleted (0: none are left)."""
    deleted = 0
    for partition in (values_partition(tag), words_partition(tag)):
        rows = [entity async for entity in _first(storage.index.query_entities(
            "PartitionKey eq @p", parameters={"p": partition}, select=["RowKey"], results_per_page=limit), limit)]
        deleted += await delete_rows(storage.index, partition, [RowDelete(str(row["RowKey"])) for row in rows])
    return deleted


async def _first(entities: Any, limit: int) -> Any:
    count = 0
    async for entity in entities:
        yield entity
        count += 1
        if count >= limit:
            return


async def find_matches(storage: Storage, tag: IndexedTag, condition: ExtendedFilter) -> list[Match]:
    """The studies, series or instances (by the tag's level) whose current value matches ``condition``.

    Key ranges of the tag's partitions find the entries; a point read of each entry's instance row keeps
    those whose instance still has the entry's version.
    """
    hits = await _current(storage, await _hits(storage, tag, condition))
    return sorted({_at_level(hit.ids, tag.level) for hit in hits}, key=_order)


async def _hits(storage: Storage, tag: IndexedTag, condition: ExtendedFilter) -> set[StoredInstance]:
    if condition.words:
        found: set[StoredInstance] | None = None
        for word in condition.words:
            low = encode_key(word[:WORD_KEY_CHARS])
            hits = {_hit(row) for row in await _range(storage, words_partition(tag), low, successor(low))}
            found = hits if found is None else found & hits
        return found or set()
    rows: list[TableEntity] = []
    partition = values_partition(tag)
    if condition.exact:
        for value in dict.fromkeys(condition.exact):
            low = encode_key(value[:KEY_VALUE_CHARS])
            rows += [row for row in await _range(storage, partition, low + WORD_END, successor(low + WORD_END))
                     if row.get("Value") == value]
    elif condition.is_range:
        low = encode_key(condition.low) if condition.low else ""
        high = successor(encode_key(condition.high)) if condition.high else _KEY_END
        rows = await _range(storage, partition, low, high)
    else:
        low = encode_key(condition.prefix[:KEY_VALUE_CHARS])
        rows = [row for row in await _range(storage, partition, low, successor(low) if low else _KEY_END)
                if condition.matches_pattern(str(row.get("Value", "")))]
    return {_hit(row) for row in rows}


async def _current(storage: Storage, hits: set[StoredInstance]) -> list[StoredInstance]:
    """The hits whose instance row still has the entry's version."""
    ordered = sorted(hits, key=lambda hit: (hit.ids.study, hit.ids.series, hit.ids.instance))
    rows = await bounded_gather((get_row(storage, hit.ids.study, instance_row_key(hit.ids.series, hit.ids.instance),
                                          ["Version"]) for hit in ordered), limit=VERIFY_CONCURRENCY)
    return [hit for hit, row in zip(ordered, rows, strict=True)
            if row is not None and str(row.get("Version")) == hit.version]


async def _range(storage: Storage, partition: str, low: str, high: str) -> list[TableEntity]:
    return await query_all(storage.index, _RANGE, parameters={"p": partition, "low": low, "high": high},
                           select=["RowKey", "Value", "Version"])


def _hit(row: TableEntity) -> StoredInstance:
    study, series, instance = str(row["RowKey"]).rsplit(WORD_END, 1)[1].split("|", 2)
    return StoredInstance(InstanceIdentifiers(study, series, instance), str(row.get("Version", "")))


def _at_level(ids: InstanceIdentifiers, level: Level) -> Match:
    if level is Level.STUDY:
        return Match(ids.study)
    return Match(ids.study, ids.series) if level is Level.SERIES else Match(ids.study, ids.series, ids.instance)


def _order(match: Match) -> tuple[str, str, str]:
    return match.study, match.series or "", match.instance or ""
