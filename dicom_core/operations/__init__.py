"""Long-running operations: a record per operation in Table Storage, its status, and a runner working it in chunks."""
