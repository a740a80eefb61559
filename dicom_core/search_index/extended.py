"""Index entries of extended query tags: their keys, writing them for an instance, finding and removing them.

Each tag has two partitions in the Index table. ``x.{path}|v`` holds one entry per (value, target) with the
RowKey ``{encoded index form}!{target}``, so exact values, UID lists, wildcard prefixes and DA/DT/TM ranges
are each one RowKey range; ``x.{path}|w`` holds one entry per word of a person name (fuzzy matching), with the
whole name. The target is the tag's level: the instance (``study|series|instance``) for an instance-level tag,
whose entries hold the instance's Version, so a search keeps only those whose instance row still has it (an
upsert or a delete since makes them stale); the study or ``study|series`` for a study- or series-level tag,
which has the value of the latest stored instance and exactly its entries (`extended_current`). Writing an
instance's entries again (a retried store, a resumed reindex) changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from azure.data.tables import TableEntity

from dicom_core.index.reads import get_row
from dicom_core.index.rows import instance_row_key
from dicom_core.model.dicom_json import JsonDataset
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance
from dicom_core.model.levels import Level
from dicom_core.model.text import name_words, trim
from dicom_core.search_index.extended_current import is_pointer, set_current
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
MAX_ELEMENT_CHARS = 4000
ENTRY_COLUMNS = ["RowKey", "Value", "Name", "Version", "Element"]
_PARTS = {Level.STUDY: 1, Level.SERIES: 2, Level.INSTANCE: 3}


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


def level_target(ids: InstanceIdentifiers, level: Level) -> str:
    """What an entry of a tag of ``level`` points at: the study, ``study|series`` or ``study|series|instance``."""
    return "|".join((ids.study, ids.series, ids.instance)[:_PARTS[level]])


def entries_of(stored: StoredInstance, tag: IndexedTag, metadata: JsonDataset) -> list[dict[str, Any]]:
    """The index entries of one instance for ``tag`` (none when the value is absent; InvalidValueError if bad)."""
    value = first_element_value(metadata, tag)
    if value is None:
        return []
    indexed = index_value(tag.vr, value)
    if not indexed.text:
        return []
    target = level_target(stored.ids, tag.level)
    # The element as stored: a search answers the filtered attribute with it, reading no metadata (a long one is
    # left out, and read from the metadata then).
    stored_element = metadata[tag.json_key]
    element = json.dumps({"vr": stored_element.get("vr", tag.vr), "Value": stored_element["Value"]},
                         separators=(",", ":"))
    element = element if len(element) <= MAX_ELEMENT_CHARS else ""
    entries = [{"PartitionKey": values_partition(tag), "Value": indexed.text, "Version": stored.version,
                "Element": element, "RowKey": f"{encode_key(indexed.text[:KEY_VALUE_CHARS])}{WORD_END}{target}"}]
    entries += [{"PartitionKey": words_partition(tag), "Value": word, "Name": indexed.text, "Version": stored.version,
                 "Element": element, "RowKey": f"{encode_key(word[:WORD_KEY_CHARS])}{WORD_END}{target}"}
                for word in set(indexed.words)]
    return entries


async def write_entries(storage: Storage, entries: list[dict[str, Any]]) -> None:
    """Write index entries: an instance's upserted (those of a partition together, in transactions), a study's or
    series's as its current entries (`extended_current`), the latest version of each study or series winning."""
    per_instance = [entry for entry in entries if _target(str(entry["RowKey"])).count("|") == 2]
    if per_instance:
        await _entries.upsert(storage, per_instance)
    latest: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for entry in entries:
        key = (str(entry["PartitionKey"]), _target(str(entry["RowKey"])))
        if key[1].count("|") < 2:
            held = latest.setdefault(key, [])
            if held and held[0]["Version"] < entry["Version"]:
                held.clear()
            if not held or held[0]["Version"] == entry["Version"]:
                held.append(entry)
    await bounded_gather((set_current(storage, partition, target, str(held[0]["Version"]), held)
                          for (partition, target), held in latest.items()), limit=VERIFY_CONCURRENCY)


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


@dataclass(frozen=True)
class EntryRange:
    """A RowKey range [low, high) of a tag's partition holding every entry that can match a filter."""

    partition: str
    low: str
    high: str


def entry_ranges(tag: IndexedTag, condition: ExtendedFilter) -> list[EntryRange]:
    """The key ranges whose entries (checked with `entry_matches`) are the matches of ``condition``, in order."""
    if condition.words:
        low = encode_key(max(condition.words, key=len)[:WORD_KEY_CHARS])
        return [EntryRange(words_partition(tag), low, successor(low))]
    partition = values_partition(tag)
    if condition.exact:
        lows = [encode_key(value[:KEY_VALUE_CHARS]) + WORD_END for value in dict.fromkeys(condition.exact)]
        return [EntryRange(partition, low, successor(low)) for low in sorted(set(lows))]
    if condition.is_range:
        low = encode_key(condition.low) if condition.low else ""
        return [EntryRange(partition, low, successor(encode_key(condition.high)) if condition.high else _KEY_END)]
    low = encode_key(condition.prefix[:KEY_VALUE_CHARS])
    return [EntryRange(partition, low, successor(low) if low else _KEY_END)]


def entry_matches(condition: ExtendedFilter, row: TableEntity) -> bool:
    """Tell whether an entry read from one of ``condition``'s ranges is a match (keys hold value prefixes only)."""
    if is_pointer(str(row["RowKey"])):
        return False
    value = str(row.get("Value", ""))
    if condition.words:
        name = row.get("Name")
        words = name_words(str(name)) if name else [value]
        return all(any(word.startswith(wanted) for word in words) for wanted in condition.words)
    if condition.exact:
        return value in condition.exact
    return condition.is_range or condition.matches_pattern(value)


def entry_instance(row: TableEntity) -> StoredInstance | None:
    """The instance and version of an entry of an instance-level tag (None for a study's or series's entry)."""
    parts = _target(str(row["RowKey"])).split("|")
    if len(parts) != 3:
        return None
    return StoredInstance(InstanceIdentifiers(*parts), str(row.get("Version", "")))


def entry_element(row: TableEntity) -> JsonDataset:
    """The DICOM JSON element an entry was made of, by the tag's key ({} for an entry written without it)."""
    element = row.get("Element")
    return {} if not element else json.loads(str(element))


def entry_match(row: TableEntity) -> Match:
    """The study, series or instance an entry points at."""
    parts = _target(str(row["RowKey"])).split("|")
    return Match(parts[0], *parts[1:])


async def find_matches(storage: Storage, tag: IndexedTag, condition: ExtendedFilter) -> list[Match]:
    """Every study, series or instance (by the tag's level) whose current value matches ``condition``.

    Key ranges of the tag's partitions find the entries; for an instance-level tag, a point read of each entry's
    instance row keeps those whose instance still has the entry's version.
    """
    rows = [row for part in entry_ranges(tag, condition) for row in await _range(storage, part)
            if entry_matches(condition, row)]
    if tag.level is not Level.INSTANCE:
        return sorted({entry_match(row) for row in rows}, key=_order)
    hits = {hit for row in rows if (hit := entry_instance(row)) is not None}
    return sorted({_instance_match(hit) for hit in await _current(storage, hits)}, key=_order)


def _instance_match(hit: StoredInstance) -> Match:
    return Match(hit.ids.study, hit.ids.series, hit.ids.instance)


async def _current(storage: Storage, hits: set[StoredInstance]) -> list[StoredInstance]:
    """The hits whose instance row still has the entry's version."""
    ordered = sorted(hits, key=lambda hit: (hit.ids.study, hit.ids.series, hit.ids.instance))
    rows = await bounded_gather((get_row(storage, hit.ids.study, instance_row_key(hit.ids.series, hit.ids.instance),
                                          ["Version"]) for hit in ordered), limit=VERIFY_CONCURRENCY)
    return [hit for hit, row in zip(ordered, rows, strict=True)
            if row is not None and str(row.get("Version")) == hit.version]


async def _range(storage: Storage, part: EntryRange) -> list[TableEntity]:
    return await query_all(storage.index, _RANGE, parameters={"p": part.partition, "low": part.low, "high": part.high},
                           select=ENTRY_COLUMNS)


def _target(row_key: str) -> str:
    return row_key.rsplit(WORD_END, 1)[1]


def _order(match: Match) -> tuple[str, str, str]:
    return match.study, match.series or "", match.instance or ""
