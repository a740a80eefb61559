"""Blob and Table Storage: clients, fault mapping, instance blobs, table helpers, group commits, caches."""
