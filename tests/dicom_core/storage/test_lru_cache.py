"""The bounded least-recently-used map behind the per-process read caches."""

from __future__ import annotations

from dicom_core.storage.lru_cache import LruCache


def test_the_least_recently_used_entry_goes_first_past_the_entry_bound() -> None:
    cache: LruCache[str, int] = LruCache(max_entries=2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # now b is the least recently used
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)


def test_entries_go_until_the_sizes_fit_the_byte_bound() -> None:
    cache: LruCache[str, str] = LruCache(max_entries=10, max_bytes=100)
    cache.put("a", "x", 60)
    cache.put("b", "y", 30)
    cache.put("c", "z", 30)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, "y", "z")


def test_a_value_larger_than_the_byte_bound_is_not_kept() -> None:
    cache: LruCache[str, str] = LruCache(max_entries=10, max_bytes=100)
    cache.put("a", "x", 10)
    cache.put("big", "y", 101)
    assert (cache.get("a"), cache.get("big")) == ("x", None)


def test_putting_a_key_again_replaces_its_value_and_size() -> None:
    cache: LruCache[str, str] = LruCache(max_entries=10, max_bytes=100)
    cache.put("a", "x", 90)
    cache.put("a", "y", 10)
    cache.put("b", "z", 90)
    assert (cache.get("a"), cache.get("b"), len(cache)) == ("y", "z", 2)


def test_discard_forgets_a_key() -> None:
    cache: LruCache[str, int] = LruCache(max_entries=2)
    cache.put("a", 1)
    cache.discard("a")
    cache.discard("never")
    assert cache.get("a") is None
