"""Extended query tags: the registry of attributes made searchable, and the reindex that indexes stored data."""
