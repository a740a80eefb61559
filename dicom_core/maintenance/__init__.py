"""Deferred work: deleting unreferenced blobs and checking the stored data's consistency."""
