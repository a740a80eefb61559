"""The identifiers that travel with a stored instance."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class InstanceIdentifiers:
    """Study, series and SOP instance UIDs of one instance (normalized, validated)."""

    study: str
    series: str
    instance: str


@dataclass(frozen=True)
class StoredInstance:
    """An instance's identifiers plus the version naming its blobs."""

    ids: InstanceIdentifiers
    version: str


def new_version() -> str:
    """Return a new version name: sortable by time, unique across writers."""
    return f"{time.time_ns():016x}{secrets.token_hex(4)}"
