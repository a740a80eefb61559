"""Storage access: connection string (Azurite) or identity-based (Azure), and the clients' connection pool."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from azure.core.rest import HttpRequest
from azure.identity.aio import DefaultAzureCredential

from dicom_core.settings import Settings, azurite_connection_string
from dicom_core.storage.clients import (
    AZURE_IDLE_CONNECTION_SECONDS,
    AZURE_TABLE_SHARDS,
    EMULATOR_TABLE_SHARDS,
    IDLE_CONNECTION_SECONDS,
    ConnectionStringAccess,
    IdentityAccess,
    StorageTransport,
    default_table_shards,
    idle_connection_seconds,
    open_storage,
    select_storage_access,
    storage_service_clients,
)

ROOT = Path(__file__).resolve().parents[3]
# Node's http server default, which Azurite keeps for its blob and table services.
AZURITE_KEEP_ALIVE_SECONDS = 5

BLOB_URL = "https://dicomstore.blob.core.windows.net"
TABLE_URL = "https://dicomstore.table.core.windows.net"


def settings_from(**environ: str) -> Settings:
    return Settings.from_environment(environ)


def test_without_account_urls_the_connection_string_is_used() -> None:
    settings = settings_from(DICOMWEB_STORAGE_CONNECTION_STRING=azurite_connection_string(table_port=20002))
    assert select_storage_access(settings) == ConnectionStringAccess(azurite_connection_string(table_port=20002))


def test_with_no_storage_setting_at_all_azurite_is_used() -> None:
    assert select_storage_access(settings_from()) == ConnectionStringAccess(azurite_connection_string())


def test_with_both_account_urls_identity_access_is_used_even_beside_a_connection_string() -> None:
    settings = settings_from(
        DICOMWEB_BLOB_ACCOUNT_URL=BLOB_URL + "/", DICOMWEB_TABLE_ACCOUNT_URL=TABLE_URL,
        AzureWebJobsStorage="UseDevelopmentStorage=true",
    )
    assert select_storage_access(settings) == IdentityAccess(BLOB_URL, TABLE_URL)


def test_one_account_url_without_the_other_is_a_configuration_error_naming_the_missing_one() -> None:
    with pytest.raises(ValueError, match="DICOMWEB_TABLE_ACCOUNT_URL is not"):
        select_storage_access(settings_from(DICOMWEB_BLOB_ACCOUNT_URL=BLOB_URL))


def test_an_account_url_without_tls_is_refused() -> None:
    settings = settings_from(DICOMWEB_BLOB_ACCOUNT_URL="http://127.0.0.1:10000/devstoreaccount1",
                             DICOMWEB_TABLE_ACCOUNT_URL=TABLE_URL)
    with pytest.raises(ValueError, match="DICOMWEB_BLOB_ACCOUNT_URL must be an https"):
        select_storage_access(settings)


async def test_identity_access_builds_clients_on_the_account_urls_with_default_azure_credential() -> None:
    blob_service, table_service, credential = storage_service_clients(IdentityAccess(BLOB_URL, TABLE_URL))
    try:
        assert isinstance(credential, DefaultAzureCredential)
        assert blob_service.url.startswith(BLOB_URL)
        assert table_service.url.startswith(TABLE_URL)
        assert blob_service.credential is credential
    finally:
        await blob_service.close()
        await table_service.close()
        assert credential is not None
        await credential.close()


async def test_connection_string_access_builds_clients_without_a_token_credential() -> None:
    connection = azurite_connection_string(blob_port=20000, table_port=20002)
    blob_service, table_service, credential = storage_service_clients(ConnectionStringAccess(connection))
    try:
        assert credential is None
        assert blob_service.url.startswith("http://127.0.0.1:20000/devstoreaccount1")
        assert table_service.url.startswith("http://127.0.0.1:20002/devstoreaccount1")
    finally:
        await blob_service.close()
        await table_service.close()


class _KeepAliveServer:
    """A loopback HTTP/1.1 server that answers every request with 200 and counts the connections it accepted."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/"

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


async def _get_twice(transport: StorageTransport, url: str, pause_seconds: float) -> None:
    async with transport:
        for _ in range(2):
            response = await transport.send(HttpRequest("GET", url))
            assert response.status_code == 200
            await asyncio.sleep(pause_seconds)


async def test_storage_transport_reuses_a_connection_between_requests_close_in_time() -> None:
    server = _KeepAliveServer()
    async with server as url:
        await _get_twice(StorageTransport(), url, pause_seconds=0.1)
    assert server.connections == 1


def test_idle_connections_to_azurite_are_dropped_before_its_keep_alive_ends() -> None:
    settings = settings_from(DICOMWEB_STORAGE_CONNECTION_STRING=azurite_connection_string(table_port=20002))
    assert idle_connection_seconds(settings) == IDLE_CONNECTION_SECONDS < AZURITE_KEEP_ALIVE_SECONDS


def test_idle_connections_to_an_azure_account_by_key_are_kept_longer() -> None:
    key_string = ("DefaultEndpointsProtocol=https;AccountName=dicomstore;AccountKey=a2V5;"
                  "EndpointSuffix=core.windows.net")
    settings = settings_from(DICOMWEB_STORAGE_CONNECTION_STRING=key_string)
    assert idle_connection_seconds(settings) == AZURE_IDLE_CONNECTION_SECONDS


def test_idle_connections_to_account_urls_are_kept_longer() -> None:
    settings = settings_from(DICOMWEB_BLOB_ACCOUNT_URL=BLOB_URL, DICOMWEB_TABLE_ACCOUNT_URL=TABLE_URL)
    assert idle_connection_seconds(settings) == AZURE_IDLE_CONNECTION_SECONDS


def test_new_storage_on_an_azure_account_is_kept_in_sixteen_shards_by_default() -> None:
    key_string = ("DefaultEndpointsProtocol=https;AccountName=dicomstore;AccountKey=a2V5;"
                  "EndpointSuffix=core.windows.net")
    by_key = settings_from(DICOMWEB_STORAGE_CONNECTION_STRING=key_string)
    by_identity = settings_from(DICOMWEB_BLOB_ACCOUNT_URL=BLOB_URL, DICOMWEB_TABLE_ACCOUNT_URL=TABLE_URL)
    assert by_key.table_shards is None and by_identity.table_shards is None
    assert default_table_shards(by_key) == default_table_shards(by_identity) == AZURE_TABLE_SHARDS == 16


async def test_new_storage_on_the_emulator_without_a_shard_count_takes_the_emulators_default(
    unit_settings: Settings,
) -> None:
    fresh = replace(unit_settings, table_prefix=f"dflt{uuid.uuid4().hex[:10]}", table_shards=None)
    storage = await open_storage(fresh)
    try:
        assert storage.settings.table_shards == EMULATOR_TABLE_SHARDS == 64
        assert len(storage.studies.shards) == len(storage.index.hashed) == EMULATOR_TABLE_SHARDS
        listed = {table.name async for table in storage.table_service.list_tables()}
        assert {table.table_name for table in storage.tables} <= listed
    finally:
        await storage.close()


async def test_storage_opened_without_a_shard_count_keeps_the_count_its_tables_show(unit_settings: Settings) -> None:
    stored = replace(unit_settings, table_prefix=f"kept{uuid.uuid4().hex[:10]}", table_shards=3)
    await (await open_storage(stored)).close()

    storage = await open_storage(replace(stored, table_shards=None))
    try:
        assert storage.settings.table_shards == 3
        assert [shard.table_name for shard in storage.studies.shards] == [
            f"{stored.table_prefix}Studies", f"{stored.table_prefix}Studies1", f"{stored.table_prefix}Studies2"]
    finally:
        await storage.close()


def test_a_shard_count_that_is_not_set_is_left_to_the_storage() -> None:
    assert settings_from(DICOMWEB_TABLE_SHARDS="").table_shards is None
    assert settings_from(DICOMWEB_TABLE_SHARDS="32").table_shards == 32


async def test_storage_transport_drops_a_connection_idle_longer_than_azurites_keep_alive_allows() -> None:
    server = _KeepAliveServer()
    async with server as url:
        await _get_twice(StorageTransport(), url, pause_seconds=IDLE_CONNECTION_SECONDS + 0.5)
    assert IDLE_CONNECTION_SECONDS < AZURITE_KEEP_ALIVE_SECONDS
    assert server.connections == 2


_FRESH_PROCESS_OPENS_STORAGE = """
import _strptime, asyncio, sys
from dicom_core.settings import Settings
from dicom_core.storage.clients import ENTITY_TIMESTAMP_FORMATS, open_storage

async def main():
    storage = await open_storage(Settings.from_environment())
    await storage.close()

assert not _strptime._regex_cache, "strptime was set up before storage opened"
asyncio.run(main())
print(all(pattern in _strptime._regex_cache for _, pattern in ENTITY_TIMESTAMP_FORMATS))
"""


def test_opening_storage_sets_up_the_table_sdks_timestamp_parsing(unit_settings: Settings) -> None:
    environ = {**os.environ, "DICOMWEB_STORAGE_CONNECTION_STRING": unit_settings.storage_connection_string,
               "DICOMWEB_TABLE_PREFIX": unit_settings.table_prefix,
               "DICOMWEB_BLOB_CONTAINER": unit_settings.blob_container,
               "DICOMWEB_METADATA_CONTAINER": unit_settings.metadata_container,
               "DICOMWEB_TABLE_SHARDS": str(unit_settings.table_shards)}
    completed = subprocess.run([sys.executable, "-c", _FRESH_PROCESS_OPENS_STORAGE], env=environ, cwd=ROOT,
                               capture_output=True, text=True, timeout=120, check=True)
    assert completed.stdout.strip() == "True"


async def test_tables_a_deployment_made_before_the_app_show_no_shard_count_and_ask_for_no_reshard(
    unit_settings: Settings, caplog: pytest.LogCaptureFixture,
) -> None:
    deployed = replace(unit_settings, table_prefix=f"dep{uuid.uuid4().hex[:10]}", table_shards=None)
    first = await open_storage(replace(deployed, table_shards=2))
    try:  # as infra/main.bicep creates them: the first shards of Studies and Index, and Changes; no Cleanup
        for suffix in ("Studies1", "Index1", "Cleanup"):
            await first.table_service.delete_table(f"{deployed.table_prefix}{suffix}")
        for table in first.index.kinds.values():
            await first.table_service.delete_table(table.table_name)
    finally:
        await first.close()

    caplog.clear()
    storage = await open_storage(deployed)
    try:
        assert storage.settings.table_shards == EMULATOR_TABLE_SHARDS
    finally:
        await storage.close()
    assert not [record for record in caplog.records if "reshard" in record.getMessage()]
