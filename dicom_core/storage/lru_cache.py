"""A bounded least-recently-used map for per-process read caches (entries and total size both bounded)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """At most ``max_entries`` values whose sizes add up to at most ``max_bytes``; the least recently used go first."""

    def __init__(self, max_entries: int, max_bytes: int | None = None) -> None:
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        """Return the value of ``key`` (now the most recently used), or None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: K, value: V, size: int = 0) -> None:
        """Keep ``value`` under ``key``, evicting the least recently used; a value over the byte bound is not kept."""
        self.discard(key)
        if self._max_entries < 1 or (self._max_bytes is not None and size > self._max_bytes):
            return
        self._entries[key] = (value, size)
        self._bytes += size
        while len(self._entries) > self._max_entries or (self._max_bytes is not None and self._bytes > self._max_bytes):
            _, (_, evicted) = self._entries.popitem(last=False)
            self._bytes -= evicted

    def discard(self, key: K) -> None:
        """Forget ``key`` if it is kept."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry[1]
