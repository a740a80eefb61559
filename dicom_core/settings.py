"""Settings of the service, read from environment variables (the same names as app settings)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

# Azurite's well-known development account (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
DEVELOPMENT_STORAGE = "UseDevelopmentStorage=true"

GIB = 1024**3
MIB = 1024**2


def azurite_connection_string(host: str = "127.0.0.1", blob_port: int = 10000, table_port: int = 10002) -> str:
    """Return the connection string of an Azurite instance listening on the given ports."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://{host}:{blob_port}/{AZURITE_ACCOUNT};"
        f"TableEndpoint=http://{host}:{table_port}/{AZURITE_ACCOUNT};"
    )


@dataclass(frozen=True)
class Settings:
    """Every setting the service reads; see the README's settings table."""

    storage_connection_string: str
    blob_container: str = "dicomweb"
    metadata_container: str = "dicomweb-metadata"
    table_prefix: str = "dicomweb"
    public_base_url: str = ""
    max_part_bytes: int = 2 * GIB
    spool_memory_bytes: int = 8 * MIB
    store_concurrency: int = 4
    max_transcode_bytes: int = 100 * MIB
    # With both account URLs set, storage is reached with DefaultAzureCredential (managed identity) instead.
    blob_account_url: str = ""
    table_account_url: str = ""
    health_timeout_seconds: int = 5
    # QIDO: answer with an X-DicomWeb-Entities-Read header; most entities a search reads before it stops.
    query_stats: bool = False
    query_scan_budget: int = 5000

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (default: the process environment)."""
        env = os.environ if environ is None else environ
        connection = env.get("DICOMWEB_STORAGE_CONNECTION_STRING") or env.get("AzureWebJobsStorage") or ""
        if not connection or connection.strip().rstrip(";").lower() == DEVELOPMENT_STORAGE.lower():
            connection = azurite_connection_string()
        defaults = cls(storage_connection_string=connection)
        return cls(
            storage_connection_string=connection,
            blob_container=env.get("DICOMWEB_BLOB_CONTAINER") or defaults.blob_container,
            metadata_container=env.get("DICOMWEB_METADATA_CONTAINER") or defaults.metadata_container,
            table_prefix=env.get("DICOMWEB_TABLE_PREFIX") or defaults.table_prefix,
            public_base_url=(env.get("DICOMWEB_PUBLIC_BASE_URL") or "").rstrip("/"),
            max_part_bytes=_int(env, "DICOMWEB_MAX_PART_BYTES", defaults.max_part_bytes),
            spool_memory_bytes=_int(env, "DICOMWEB_SPOOL_MEMORY_BYTES", defaults.spool_memory_bytes),
            store_concurrency=_int(env, "DICOMWEB_STORE_CONCURRENCY", defaults.store_concurrency),
            max_transcode_bytes=_int(env, "DICOMWEB_MAX_TRANSCODE_BYTES", defaults.max_transcode_bytes),
            blob_account_url=(env.get("DICOMWEB_BLOB_ACCOUNT_URL") or "").strip().rstrip("/"),
            table_account_url=(env.get("DICOMWEB_TABLE_ACCOUNT_URL") or "").strip().rstrip("/"),
            health_timeout_seconds=_int(env, "DICOMWEB_HEALTH_TIMEOUT_SECONDS", defaults.health_timeout_seconds),
            query_stats=(env.get("DICOMWEB_QUERY_STATS") or "").strip().lower() in ("true", "1", "yes"),
            query_scan_budget=_int(env, "DICOMWEB_QUERY_SCAN_BUDGET", defaults.query_scan_budget),
        )


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"Setting {name} must be a whole number, not {raw!r}") from exc
    if value <= 0:
        raise ValueError(f"Setting {name} must be positive, not {value}")
    return value
