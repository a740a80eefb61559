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
    """Every setting the service reads; docs/configuration.md lists them."""

    storage_connection_string: str
    blob_container: str = "dicomweb"
    metadata_container: str = "dicomweb-metadata"
    table_prefix: str = "dicomweb"
    # Tables the Studies and the Index table are each kept in, by partition (storage/sharded_table.py); None:
    # as many as the stored tables show, else the storage's default (storage/clients.py `default_table_shards`).
    table_shards: int | None = None
    public_base_url: str = ""
    # 1 GiB: what a client at 4.7 MB/s sends within the 230 s an HTTP request may take on Azure (docs/deploy.md).
    max_part_bytes: int = 1 * GIB
    spool_memory_bytes: int = 8 * MIB
    store_concurrency: int = 8
    max_transcode_bytes: int = 100 * MIB
    # With both account URLs set, storage is reached with DefaultAzureCredential (managed identity) instead.
    blob_account_url: str = ""
    table_account_url: str = ""
    health_timeout_seconds: int = 5
    # QIDO: answer with an X-DicomWeb-Entities-Read header; most entities a search reads before it stops.
    query_stats: bool = False
    query_scan_budget: int = 5000
    # QIDO: answer unknown or unsupported parameters, empty values and a limit above 200 with Azure's 400s
    # (default: the standard's way, PS3.18 §8.3: ignored, universal matching, capped; each with a Warning).
    query_strict_parameters: bool = False
    # Metadata: binary attributes as BulkDataURI / InlineBinary (the standard's way), or left out as Azure does.
    metadata_omit_bulk_data: bool = False
    # Blobs an upsert or delete (or a failed store) leaves unreferenced are deleted this long afterwards.
    blob_cleanup_delay_seconds: int = 3600
    # Browser origins allowed to call the API (CORS; `*` for any); none: no CORS headers at all.
    cors_allowed_origins: tuple[str, ...] = ()
    # Authentication: none, function (Functions keys) or entra (bearer tokens checked by the app; see auth.py).
    auth_mode: str = "none"
    auth_tenant_id: str = ""
    auth_authority: str = ""
    auth_audiences: tuple[str, ...] = ()
    auth_reader_role: str = "DicomWeb.Reader"
    auth_writer_role: str = "DicomWeb.Writer"
    auth_clock_skew_seconds: int = 300
    # Storage faults: SDK retries per request and socket timeouts, so an unreachable account fails within seconds.
    storage_retries: int = 3
    storage_connect_timeout_seconds: int = 5
    storage_read_timeout_seconds: int = 60
    # Hostile input: caps on the request and on what a Part-10 file may inflate to; body read idle timeout.
    max_request_bytes: int = 1 * GIB  # the Functions host limit is set above it (Bicep: +1 MiB): the app answers 413
    max_query_string_bytes: int = 8 * 1024
    max_header_bytes: int = 32 * 1024
    max_inflated_bytes: int = 100 * MIB
    body_idle_timeout_seconds: int = 60

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
            table_shards=int_setting(env, "DICOMWEB_TABLE_SHARDS", 0) or None,
            public_base_url=(env.get("DICOMWEB_PUBLIC_BASE_URL") or "").rstrip("/"),
            max_part_bytes=int_setting(env, "DICOMWEB_MAX_PART_BYTES", defaults.max_part_bytes),
            spool_memory_bytes=int_setting(env, "DICOMWEB_SPOOL_MEMORY_BYTES", defaults.spool_memory_bytes),
            store_concurrency=int_setting(env, "DICOMWEB_STORE_CONCURRENCY", defaults.store_concurrency),
            max_transcode_bytes=int_setting(env, "DICOMWEB_MAX_TRANSCODE_BYTES", defaults.max_transcode_bytes),
            blob_account_url=(env.get("DICOMWEB_BLOB_ACCOUNT_URL") or "").strip().rstrip("/"),
            table_account_url=(env.get("DICOMWEB_TABLE_ACCOUNT_URL") or "").strip().rstrip("/"),
            health_timeout_seconds=int_setting(env, "DICOMWEB_HEALTH_TIMEOUT_SECONDS", defaults.health_timeout_seconds),
            query_stats=_bool(env, "DICOMWEB_QUERY_STATS"),
            query_scan_budget=int_setting(env, "DICOMWEB_QUERY_SCAN_BUDGET", defaults.query_scan_budget),
            query_strict_parameters=_bool(env, "DICOMWEB_QUERY_STRICT_PARAMETERS"),
            metadata_omit_bulk_data=(env.get("DICOMWEB_METADATA_BULKDATA") or "").strip().lower() == "omit",
            blob_cleanup_delay_seconds=int_setting(env, "DICOMWEB_BLOB_CLEANUP_DELAY_SECONDS",
                                            defaults.blob_cleanup_delay_seconds),
            cors_allowed_origins=list_setting(env, "DICOMWEB_CORS_ALLOWED_ORIGINS"),
            auth_mode=(env.get("DICOMWEB_AUTH_MODE") or defaults.auth_mode).strip().lower(),
            auth_tenant_id=(env.get("DICOMWEB_AUTH_TENANT_ID") or "").strip(),
            auth_authority=(env.get("DICOMWEB_AUTH_AUTHORITY") or "").strip().rstrip("/"),
            auth_audiences=list_setting(env, "DICOMWEB_AUTH_AUDIENCE"),
            auth_reader_role=(env.get("DICOMWEB_AUTH_READER_ROLE") or defaults.auth_reader_role).strip(),
            auth_writer_role=(env.get("DICOMWEB_AUTH_WRITER_ROLE") or defaults.auth_writer_role).strip(),
            auth_clock_skew_seconds=int_setting(env, "DICOMWEB_AUTH_CLOCK_SKEW_SECONDS",
                                                defaults.auth_clock_skew_seconds),
            storage_retries=int_setting(env, "DICOMWEB_STORAGE_RETRIES", defaults.storage_retries),
            storage_connect_timeout_seconds=int_setting(env, "DICOMWEB_STORAGE_CONNECT_TIMEOUT_SECONDS",
                                                 defaults.storage_connect_timeout_seconds),
            storage_read_timeout_seconds=int_setting(env, "DICOMWEB_STORAGE_READ_TIMEOUT_SECONDS",
                                              defaults.storage_read_timeout_seconds),
            max_request_bytes=int_setting(env, "DICOMWEB_MAX_REQUEST_BYTES", defaults.max_request_bytes),
            max_query_string_bytes=int_setting(env, "DICOMWEB_MAX_QUERY_STRING_BYTES", defaults.max_query_string_bytes),
            max_header_bytes=int_setting(env, "DICOMWEB_MAX_HEADER_BYTES", defaults.max_header_bytes),
            max_inflated_bytes=int_setting(env, "DICOMWEB_MAX_INFLATED_BYTES", defaults.max_inflated_bytes),
            body_idle_timeout_seconds=int_setting(env, "DICOMWEB_BODY_IDLE_TIMEOUT_SECONDS",
                                           defaults.body_idle_timeout_seconds),
        )


def int_setting(env: Mapping[str, str], name: str, default: int) -> int:
    """A positive whole-number setting, or ``default`` when unset."""
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


def _bool(env: Mapping[str, str], name: str) -> bool:
    """A true/false setting: true, 1 or yes (any case) is true; anything else, or nothing, false."""
    return (env.get(name) or "").strip().lower() in ("true", "1", "yes")


def list_setting(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """The items of a comma-separated setting, blanks dropped."""
    return tuple(item.strip() for item in (env.get(name) or "").split(",") if item.strip())

