"""The study partition's Table rows: keys, the commit of stored instances, reads, deletes, the change outbox."""
