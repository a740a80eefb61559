"""The change feed: sequencing committed changes, reading the feed, its query parameters and answers."""
