"""One logical Table kept in N Tables ("shards"): a stable hash of a partition's key names the shard holding it.

Azurite evaluates a query by scanning its whole table (only point reads use an index), so a partition query
slowed down as the archive grew; in a shard it scans a Nth of the entities. Shard 0 is the unsharded table's
own name (``dicomwebStudies``), shard i > 0 that name followed by i (``dicomwebStudies1``), so with one shard
nothing moves, and `python -m dicom_core.maintenance.reshard` moves existing partitions when the count changes.

A table may also keep some kinds of partition (the text of a PartitionKey before its first ``|``) in a Table of
their own each (``{name}{Kind}``, e.g. ``dicomwebIndexSAll`` for ``s.all``): a query of a partition then scans only
entries of its kind on Azurite, and the small partitions hashed into the shards are not scanned with the big ones.
A kind ending with ``.`` stands for every kind that begins with it (``x.``: ``x.00200010``, ``x.00100020``…).

`ShardedTable` is a TableClient by type, so that code written for one takes it. It never runs TableClient's
constructor: a method it does not route fails (AttributeError) instead of acting on one shard.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, overload

from azure.core import MatchConditions
from azure.core.async_paging import AsyncItemPaged, AsyncList
from azure.data.tables import TableEntity, TableItem, UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

# Masked before a filter is read: a quoted literal ('' escapes a quote), whose text may contain anything.
_LITERAL = re.compile(r"'(?:[^']|'')*'")
_PARTITION_CLAUSE = re.compile(r"\bPartitionKey\s+eq\s+(@\w+|'(?:[^']|'')*')", re.IGNORECASE)
_PARTITION_WORD = re.compile(r"\bPartitionKey\b", re.IGNORECASE)
_DISJUNCTION = re.compile(r"\b(?:or|not)\b", re.IGNORECASE)
# A partition's equality and a parenthesised condition on its entities: `PartitionKey eq X and ( ... )`.
_CONFINED_GROUP = re.compile(r"\s*PartitionKey\s+eq\s+\S+\s+and\s+\((.*)\)\s*", re.IGNORECASE | re.DOTALL)


def shard_index(partition: str, shards: int) -> int:
    """The shard of ``partition`` among ``shards``: the first 8 bytes of its UTF-8 SHA-256, modulo (any process)."""
    return int.from_bytes(hashlib.sha256(partition.encode("utf-8")).digest()[:8], "big") % shards


def shard_names(name: str, shards: int) -> list[str]:
    """The Table names of the ``shards`` shards of the table ``name``: ``name`` itself, then ``name`` + 1, 2…"""
    if shards < 1:
        raise ValueError(f"a table has at least one shard, not {shards}")
    return [name, *(f"{name}{index}" for index in range(1, shards))]


def stored_shard_count(existing: Iterable[str], name: str) -> int | None:
    """The shard count the existing Tables of table ``name`` show (its highest shard's number + 1), None if it has
    none."""
    names = set(existing)
    if name not in names:
        return None
    numbers = [int(other[len(name):]) for other in names if other.startswith(name) and other[len(name):].isdigit()]
    return max(numbers, default=0) + 1


def kind_table_name(name: str, kind: str) -> str:
    """The name of the Table of its own that partitions of ``kind`` have: ``name`` and the kind's letters, digits."""
    return name + "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", kind) if part)


def table_names(name: str, shards: int, kinds: Iterable[str] = ()) -> list[str]:
    """Every Table of the table ``name``: its ``shards`` shards, then the Table of each of ``kinds``."""
    return shard_names(name, shards) + [kind_table_name(name, kind) for kind in kinds]


def partition_kind(partition: str) -> str:
    """The kind of a partition: its key up to the first ``|`` (the whole key when it has none)."""
    return partition.split("|", 1)[0]


def filter_partition(query_filter: str, parameters: Mapping[str, Any] | None) -> str | None:
    """The one partition ``query_filter`` is confined to (``PartitionKey eq`` in a conjunction, or followed by
    ``and`` and one parenthesised condition, which may hold disjunctions), else None."""
    masked = _LITERAL.sub(lambda literal: "'" + "_" * (len(literal.group()) - 2) + "'", query_filter)
    clauses = list(_PARTITION_CLAUSE.finditer(masked))
    if len(clauses) != 1 or len(_PARTITION_WORD.findall(masked)) != 1:
        return None
    if _DISJUNCTION.search(masked) and not _one_group(_CONFINED_GROUP.fullmatch(masked)):
        return None
    start, end = clauses[0].span(1)
    operand = query_filter[start:end]
    if not operand.startswith("@"):
        return operand[1:-1].replace("''", "'")
    value = (parameters or {}).get(operand[1:])
    return value if isinstance(value, str) else None


def _one_group(match: re.Match[str] | None) -> bool:
    """Whether a `_CONFINED_GROUP` match's parentheses close only at its end (one group, not `(a) or (b)`)."""
    if match is None:
        return False
    depth = 0
    for character in match.group(1):
        depth += {"(": 1, ")": -1}.get(character, 0)
        if depth < 0:
            return False
    return depth == 0


class ShardedTable(TableClient):
    """A Table kept in shards: each operation goes to the shard of its PartitionKey.

    ``shards`` lists every Table: the hashed shards, then those of ``kinds`` (a partition of such a kind goes there).
    """

    def __init__(self, shards: Sequence[TableClient], name: str | None = None,
                 kinds: Mapping[str, TableClient] | None = None) -> None:
        if not shards:
            raise ValueError("a sharded table needs at least one shard")
        self.hashed: tuple[TableClient, ...] = tuple(shards)
        self.kinds: dict[str, TableClient] = dict(kinds or {})
        self.shards: tuple[TableClient, ...] = (*self.hashed, *self.kinds.values())
        self.table_name = name or shards[0].table_name

    @classmethod
    def of_service(cls, service: TableServiceClient, name: str, shards: int,
                   kinds: Iterable[str] = ()) -> ShardedTable:
        """The table ``name`` of ``service`` in ``shards`` shards, and a Table of its own for each partition kind
        of ``kinds`` (clients only: nothing is created)."""
        return cls([service.get_table_client(shard) for shard in shard_names(name, shards)], name,
                   {kind: service.get_table_client(kind_table_name(name, kind)) for kind in kinds})

    def without_kinds(self) -> ShardedTable:
        """The same table with every partition hashed into the shards (its layout before kinds had Tables)."""
        return ShardedTable(self.hashed, self.table_name)

    @property
    def url(self) -> str:
        """The shards' account URL (with ``table_name``, a key that tells this table from any other)."""
        return str(self.shards[0].url)

    def shard_of(self, partition: str) -> TableClient:
        """The shard holding ``partition``: its kind's own Table (or its kind family's), else the hashed shard of
        its key."""
        if self.kinds:
            kind = partition_kind(partition)
            own = self.kinds.get(kind) or self.kinds.get(kind.split(".", 1)[0] + ".")
            if own is not None:
                return own
        return self.hashed[shard_index(partition, len(self.hashed))]

    async def get_entity(
        self, partition_key: str, row_key: str, *, select: str | list[str] | None = None, **kwargs: Any,
    ) -> TableEntity:
        """Read one entity from its partition's shard."""
        return await self.shard_of(partition_key).get_entity(partition_key, row_key, select=select, **kwargs)

    def query_entities(
        self, query_filter: str, *, results_per_page: int | None = None, select: str | list[str] | None = None,
        parameters: dict[str, Any] | None = None, **kwargs: Any,
    ) -> AsyncItemPaged[TableEntity]:
        """Query one partition (the filter has ``PartitionKey eq``); its shard's pager, so ``by_page`` works."""
        partition = filter_partition(query_filter, parameters)
        if partition is None:
            raise ValueError(f"a query of a sharded table names one partition (PartitionKey eq …), not: "
                             f"{query_filter!r}; list_entities reads every shard")
        return self.shard_of(partition).query_entities(
            query_filter, results_per_page=results_per_page, select=select, parameters=parameters, **kwargs)

    def list_entities(
        self, *, results_per_page: int | None = None, select: str | list[str] | None = None, **kwargs: Any,
    ) -> AsyncItemPaged[TableEntity]:
        """Every entity of every shard, shard after shard (each shard's in key order); pages resume by token."""

        async def page(token: str | None) -> tuple[int, Any, AsyncIterator[AsyncIterator[TableEntity]]]:
            shard, shard_token = json.loads(token) if token else (0, None)
            pages = self.shards[shard].list_entities(
                results_per_page=results_per_page, select=select, **kwargs).by_page(continuation_token=shard_token)
            return shard, shard_token, pages

        async def extract(opened: tuple[int, Any, AsyncIterator[AsyncIterator[TableEntity]]]
                          ) -> tuple[str | None, AsyncIterator[TableEntity]]:
            shard, _, pages = opened
            entities = [entity async for entity in await anext(pages)]
            after = getattr(pages, "continuation_token", None)
            if after is None:
                shard, after = shard + 1, None
            token = json.dumps([shard, after]) if shard < len(self.shards) else None
            return token, AsyncList(entities)

        return AsyncItemPaged(page, extract)

    async def create_entity(self, entity: Mapping[str, Any], **kwargs: Any) -> Mapping[str, Any]:
        """Insert an entity into its partition's shard."""
        return await self._shard_of_entity(entity).create_entity(entity, **kwargs)

    async def update_entity(
        self, entity: Mapping[str, Any], mode: str | UpdateMode = UpdateMode.MERGE, *, etag: str | None = None,
        match_condition: MatchConditions | None = None, **kwargs: Any,
    ) -> Mapping[str, Any]:
        """Update an entity in its partition's shard."""
        return await self._shard_of_entity(entity).update_entity(
            entity, mode, etag=etag, match_condition=match_condition, **kwargs)

    async def upsert_entity(
        self, entity: Mapping[str, Any], mode: str | UpdateMode = UpdateMode.MERGE, **kwargs: Any,
    ) -> Mapping[str, Any]:
        """Insert or update an entity in its partition's shard."""
        return await self._shard_of_entity(entity).upsert_entity(entity, mode, **kwargs)

    @overload
    async def delete_entity(
        self, partition_key: str, row_key: str, *, etag: str | None = None,
        match_condition: MatchConditions | None = None, **kwargs: Any,
    ) -> None: ...

    @overload
    async def delete_entity(
        self, entity: Mapping[str, Any], *, etag: str | None = None,
        match_condition: MatchConditions | None = None, **kwargs: Any,
    ) -> None: ...

    async def delete_entity(self, *args: Any, **kwargs: Any) -> None:
        """Delete an entity (given by its keys, or itself) from its partition's shard."""
        entity = kwargs.get("entity", args[0] if args else None)
        if isinstance(entity, Mapping):
            partition = entity["PartitionKey"]
        else:
            partition = kwargs["partition_key"] if "partition_key" in kwargs else args[0]
        await self.shard_of(str(partition)).delete_entity(*args, **kwargs)

    async def submit_transaction(
        self, operations: Iterable[Any] | AsyncIterable[Any], **kwargs: Any,
    ) -> list[Mapping[str, Any]]:
        """Submit an entity-group transaction (one partition, as the service requires) to that partition's shard."""
        if isinstance(operations, AsyncIterable):
            listed = [operation async for operation in operations]
        else:
            listed = list(operations)
        partitions = {str(operation[1]["PartitionKey"]) for operation in listed}
        if len(partitions) > 1:
            raise ValueError(f"a transaction writes one partition, not {len(partitions)}: {sorted(partitions)}")
        shard = self.shard_of(partitions.pop()) if partitions else self.hashed[0]
        return await shard.submit_transaction(listed, **kwargs)

    async def create_table(self, **kwargs: Any) -> TableItem:
        """Create every shard (ResourceExistsError if one exists); the first shard's table item."""
        items = await asyncio.gather(*(shard.create_table(**kwargs) for shard in self.shards))
        return items[0]

    async def delete_table(self, **kwargs: Any) -> None:
        """Delete every shard (a missing one is fine)."""
        await asyncio.gather(*(shard.delete_table(**kwargs) for shard in self.shards))

    async def close(self) -> None:
        """Close every shard's client."""
        await asyncio.gather(*(shard.close() for shard in self.shards))

    async def __aenter__(self) -> ShardedTable:
        """Open every shard's client."""
        for shard in self.shards:
            await shard.__aenter__()
        return self

    async def __aexit__(self, *args: Any) -> None:
        """Close every shard's client."""
        await self.close()

    def _shard_of_entity(self, entity: Mapping[str, Any]) -> TableClient:
        return self.shard_of(str(entity["PartitionKey"]))
