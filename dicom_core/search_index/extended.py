"""Index entries of extended query tags: their keys, writing them for an instance, finding and removing them.

Each tag has two partitions in the Index table. ``x.{path}|v`` holds one entry per (value, target) with the
RowKey ``{encoded index form}!{target}``, so exact values, UID lists, wildcard prefixes and DA/DT/TM ranges
are each one RowKey range; ``x.{path}|w`` holds one entry per word of a person name (fuzzy matching). The
target is the study, ``study|series`` or ``study|series|instance`` of the tag's level. Entries are upserts of
fixed keys, so writing an instance's entries again (a retried store, a resumed reindex) changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from azure.data.tables import TableEntity

from dicom_core.model.dicom_json import JsonDataset
from dicom_core.model.identifiers import InstanceIdentifiers
from dicom_core.model.levels import Level
from dicom_core.search_index.extended_values import ExtendedFilter, InvalidValueError, index_value
from dicom_core.search_index.keys import KEY_VALUE_CHARS, WORD_END, WORD_KEY_CHARS, encode_key, successor
from dicom_core.storage.batch_deletes import RowDelete, delete_rows
from dicom_core.storage.clients import Storage
from dicom_core.storage.partition_upserts import PartitionUpserts
from dicom_core.storage.tables import query_all

_entries = PartitionUpserts(lambda storage: storage.index)
_RANGE = "PartitionKey eq @p and RowKey ge @low and RowKey lt @high"
# The end of every key range: sorts after every encoded character.
_KEY_END = "~"


@dataclass(frozen=True)
class IndexedTag:
    """An extended query tag as indexing needs it: its path (8 hex digits), VR and level."""

    path: str
    vr: str
    level: Level

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


def _target(tag: IndexedTag, ids: InstanceIdentifiers) -> str:
    parts = {Level.STUDY: 1, Level.SERIES: 2, Level.INSTANCE: 3}[tag.level]
    return "|".join((ids.study, ids.series, ids.instance)[:parts])


def first_element_value(metadata: JsonDataset, tag: IndexedTag) -> Any | None:
    """The first value of the tag's element in an instance's DICOM JSON, or None when absent or empty."""
    values = metadata.get(tag.json_key, {}).get("Value") or []
    return values[0] if values and values[0] not in (None, "") else None


def entries_of(tag: IndexedTag, metadata: JsonDataset, ids: InstanceIdentifiers) -> list[dict[str, Any]]:
    """The index entries of one instance for ``tag`` (none when the value is absent; InvalidValueError if bad)."""
    value = first_element_value(metadata, tag)
    if value is None:
        return []
    indexed = index_value(tag.vr, value)
    if not indexed.text:
        return []
    target = _target(tag, ids)
    entries = [{"PartitionKey": values_partition(tag), "Value": indexed.text,
                "RowKey": f"{encode_key(indexed.text[:KEY_VALUE_CHARS])}{WORD_END}{target}"}]
    entries += [{"PartitionKey": words_partition(tag), "Value": word,
                 "RowKey": f"{encode_key(word[:WORD_KEY_CHARS])}{WORD_END}{target}"} for word in set(indexed.words)]
    return entries


async def write_entries(storage: Storage, entries: list[dict[str, Any]]) -> None:
    """Upsert index entries (those of a partition together, in transactions)."""
    if entries:
        await _entries.upsert(storage, entries)


async def index_instance(
    storage: Storage, tags: list[IndexedTag], metadata: JsonDataset, ids: InstanceIdentifiers,
) -> list[IndexingError]:
    """Write the entries of one stored instance for ``tags``; the values that failed validation (not indexed)."""
    entries: list[dict[str, Any]] = []
    errors: list[IndexingError] = []
    for tag in tags:
        try:
            entries += entries_of(tag, metadata, ids)
        except InvalidValueError as exc:
            errors.append(IndexingError(tag, str(exc)))
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
    """The studies, series or instances (by the tag's level) whose entries match ``condition``: key ranges only."""
    if condition.words:
        found: set[Match] | None = None
        for word in condition.words:
            low = encode_key(word[:WORD_KEY_CHARS])
            hits = {_match(row) for row in await _range(storage, words_partition(tag), low, successor(low))}
            found = hits if found is None else found & hits
        return sorted(found or set(), key=_order)
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
    return sorted({_match(row) for row in rows}, key=_order)


async def _range(storage: Storage, partition: str, low: str, high: str) -> list[TableEntity]:
    return await query_all(storage.index, _RANGE, parameters={"p": partition, "low": low, "high": high},
                           select=["RowKey", "Value"])


def _match(row: TableEntity) -> Match:
    target = str(row["RowKey"]).rsplit(WORD_END, 1)[1]
    study, series, instance = (*target.split("|"), None, None)[:3]
    return Match(str(study), series, instance)


def _order(match: Match) -> tuple[str, str, str]:
    return match.study, match.series or "", match.instance or ""
