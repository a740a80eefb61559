"""Blob and Table Storage: clients, fault mapping, instance blobs, table helpers, bounded concurrency and backoff,
group commits, caches."""
