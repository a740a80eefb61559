"""Storage clients (Blob containers and Tables), created once per event loop and made to exist."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

import aiohttp
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.core.pipeline.transport import AioHttpTransport
from azure.data.tables.aio import TableClient, TableServiceClient
from azure.storage.blob.aio import BlobServiceClient, ContainerClient, LinearRetry

from dicom_core.settings import Settings
from dicom_core.storage.concurrency import bounded_gather
from dicom_core.storage.faults import error_code
from dicom_core.storage.sharded_table import ShardedTable, stored_shard_count, table_names
from dicom_core.storage.table_transactions import TransactionTableService

LOGGER = logging.getLogger(__name__)
T = TypeVar("T")

# Tables created at once when storage is opened: 130 at once (64 shards) made a loaded Azurite reset connections.
TABLES_CREATED_AT_ONCE = 16
_MISSING_RESOURCE_CODES = frozenset({"ContainerNotFound", "TableNotFound"})
# An entity Timestamp with and without fractional seconds, and the patterns the Table SDK parses them with.
ENTITY_TIMESTAMP_FORMATS = (("2000-01-01T00:00:00.000000Z", "%Y-%m-%dT%H:%M:%S.%fZ"),
                            ("2000-01-01T00:00:00Z", "%Y-%m-%dT%H:%M:%SZ"))
# Shards of a new storage's Studies and Index tables when DICOMWEB_TABLE_SHARDS is not set (docs/storage.md, Table
# shards): on Azurite each query scans the Table it names, so at 100,000 instances 64 kept the study-scoped searches
# within 1.5x of a small archive's where 16 let them reach 2.3x; Azure serves a query from its partition, where the
# count changes nothing but the health check's probes (one per Studies shard).
EMULATOR_TABLE_SHARDS = 64
AZURE_TABLE_SHARDS = 16
# Kinds of index partition (search_index/keys.py) kept in a Table of their own each, not hashed into the shards:
# those with one partition per index (or per modality), each growing with the archive, the extended query tags'
# entries (`x.`: every tag's, an entry per instance), and the UID lookup entities (one per series or instance, in one
# partition per UID root: one partition holds every UUID-derived UID). Azurite answers a query by scanning every
# entity of the Table it names, so a PatientID lookup then scans only the many small partitions hashed into its
# shard, and a page of the study list only the study list (docs/storage.md). UID lookups are point reads, flat in
# any Table; hashed, they made the shard they landed in several times the others, for every query of that shard.
INDEX_KINDS_OF_THEIR_OWN = (
    "s.all", "s.date", "s.sid", "s.time", "s.mod", "se.all", "se.mod", "se.num", "se.ppsdate", "se.ppstime", "x.",
    "se.at", "i.at",
)


@dataclass
class Storage:
    """The service's storage: instance files and metadata in Blob Storage, the index in Table Storage.

    ``studies`` and ``index`` are each kept in ``settings.table_shards`` Tables (see sharded_table.py).
    """

    settings: Settings
    blob_service: BlobServiceClient
    table_service: TableServiceClient
    files: ContainerClient
    metadata: ContainerClient
    studies: ShardedTable
    index: ShardedTable
    changes: TableClient
    cleanup: TableClient
    credential: AsyncTokenCredential | None = None

    async def ensure_created(self, *, keep_placement: bool = True, existing: set[str] | None = None) -> None:
        """Create the containers and tables if they do not exist (idempotent).

        The tables are listed first (one request for every shard; ``existing`` when the caller just did) and only
        the missing ones created, so opening storage costs about the same however many shards there are. With
        ``keep_placement``, an index whose shards exist but none of its kinds' own Tables (written before those)
        stays hashed whole. The Cleanup table is created last: once it exists, every shard does, so the shards show
        their count to the next open (`table_shards`), whatever a deployment created before the app.
        """
        if existing is None:
            existing = await existing_tables(self.table_service, [t.table_name for t in self.tables])
        if keep_placement and self._index_predates_kind_tables(existing):
            LOGGER.warning(
                "%s was written before index kinds had Tables of their own: it is read and written where it is until "
                "`python -m dicom_core.maintenance.reshard` (app stopped) moves those kinds", self.index.table_name)
            self.index = self.index.without_kinds()
        for table in (self.studies, self.index):
            shards = {shard.table_name for shard in table.shards}
            # Without the Cleanup table the app never finished creating its tables (a deployment made the first).
            if existing & shards and not shards <= existing and self.cleanup.table_name in existing:
                LOGGER.warning(
                    "%s has %d of its %d shards (DICOMWEB_TABLE_SHARDS changed, or an upgrade gave index kinds Tables "
                    "of their own?): partitions stored elsewhere before are not found until "
                    "`python -m dicom_core.maintenance.reshard` moves them",
                    table.table_name, len(existing & shards), len(shards))
        missing = [t.table_name for t in self.tables if t.table_name not in existing]
        last = [name for name in missing if name == self.cleanup.table_name]
        await asyncio.gather(
            *(_create_container(c) for c in (self.files, self.metadata)),
            bounded_gather((self.table_service.create_table_if_not_exists(name) for name in missing
                            if name not in last), limit=TABLES_CREATED_AT_ONCE),
        )
        for name in last:
            await self.table_service.create_table_if_not_exists(name)

    def _index_predates_kind_tables(self, existing: set[str]) -> bool:
        own = {table.table_name for table in self.index.kinds.values()}
        made_by_app = self.cleanup.table_name in existing  # not only the first shard a deployment creates
        return bool(own) and not existing & own and made_by_app and bool(
            existing & {shard.table_name for shard in self.index.hashed})

    async def close(self) -> None:
        """Close the underlying HTTP sessions."""
        await asyncio.gather(
            self.files.close(), self.metadata.close(), *(t.close() for t in self.tables),
            self.blob_service.close(), self.table_service.close(),
        )
        if self.credential is not None:
            await self.credential.close()

    @property
    def tables(self) -> tuple[TableClient, ...]:
        """Every Table of the service (each shard of the sharded ones)."""
        return (*self.studies.shards, *self.index.shards, self.changes, self.cleanup)

    async def recreating_missing(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run a write; if a container or table was deleted under us, create it again and retry once."""
        try:
            return await operation()
        except ResourceNotFoundError as exc:
            if error_code(exc) not in _MISSING_RESOURCE_CODES:
                raise
            LOGGER.warning("Storage resource missing (%s); creating it again", error_code(exc))
            await self.ensure_created()
            return await operation()


def table_name(settings: Settings, suffix: str) -> str:
    """Return the Table name for ``suffix`` under the configured prefix (alphanumeric, as Tables require)."""
    return f"{settings.table_prefix}{suffix}"


async def existing_tables(service: TableServiceClient, names: list[str], *, any_shards: bool = False) -> set[str]:
    """Which Tables between the first and last of ``names`` exist (with ``any_shards``, past the last's shards too).

    One request for the name range (none found when Tables cannot be listed: a role that may write entities but
    not list tables creates, or finds, each)."""
    low, high = min(names), max(names) + ("~" if any_shards else "")  # "~" sorts after every digit and letter
    try:
        return {table.name async for table in service.query_tables(
            "TableName ge @low and TableName le @high", parameters={"low": low, "high": high})}
    except HttpResponseError:
        return set()


def uses_emulator(settings: Settings) -> bool:
    """Whether storage is the emulator (Azurite): its well-known account is in the connection string."""
    if settings.blob_account_url or settings.table_account_url:
        return False
    connection_string = settings.storage_connection_string.lower()
    return any(marker in connection_string for marker in EMULATOR_MARKERS)


def default_table_shards(settings: Settings) -> int:
    """The shard count of new storage when none is set: more on the emulator, whose every query scans its Table."""
    return EMULATOR_TABLE_SHARDS if uses_emulator(settings) else AZURE_TABLE_SHARDS


async def table_shards(service: TableServiceClient, settings: Settings) -> tuple[int, set[str]]:
    """The shard count (the set one, else the stored tables', else the default) and the existing Tables of this
    storage (listed to find that count)."""
    names = [table_name(settings, suffix) for suffix in ("Changes", "Cleanup", "Studies")]
    names += table_names(table_name(settings, "Index"), 1, INDEX_KINDS_OF_THEIR_OWN)
    existing = await existing_tables(service, names, any_shards=True)
    # Tables found without the Cleanup table were not all made by the app (a deployment creates `{prefix}Studies`
    # first, an open may have stopped half-way): they show no count.
    stored = stored_shard_count(existing, table_name(settings, "Studies")) \
        if table_name(settings, "Cleanup") in existing else None
    return settings.table_shards or stored or default_table_shards(settings), existing


@dataclass(frozen=True)
class ConnectionStringAccess:
    """Reach storage with a connection string (Azurite, or an account that allows shared keys)."""

    connection_string: str


@dataclass(frozen=True)
class IdentityAccess:
    """Reach storage at its account URLs with DefaultAzureCredential: a managed identity in Azure, no keys."""

    blob_account_url: str
    table_account_url: str


StorageAccess = ConnectionStringAccess | IdentityAccess


def select_storage_access(settings: Settings) -> StorageAccess:
    """Choose identity-based access when both account URLs are set, else the connection string."""
    urls = {"DICOMWEB_BLOB_ACCOUNT_URL": settings.blob_account_url,
            "DICOMWEB_TABLE_ACCOUNT_URL": settings.table_account_url}
    given = [name for name, url in urls.items() if url]
    if not given:
        return ConnectionStringAccess(settings.storage_connection_string)
    if len(given) < len(urls):
        missing = next(name for name in urls if name not in given)
        raise ValueError(f"{given[0]} is set but {missing} is not: set both account URLs, or neither.")
    for name, url in urls.items():
        # Bearer tokens travel only over TLS; the SDK would refuse later with a vaguer message.
        if not url.lower().startswith("https://"):
            raise ValueError(f"{name} must be an https:// URL, not {url!r}.")
    return IdentityAccess(settings.blob_account_url, settings.table_account_url)


# Seconds an idle pooled connection may be reused: below the servers' keep-alive timeout (Azurite's Node servers
# close idle connections after 5 s; Azure's front ends wait minutes). aiohttp's default (15 s) hands out the
# oldest pooled connection first, so after a burst and a pause near 5 s every retry of a request met another
# connection the server was closing (ServerDisconnectedError four times over, a 503).
IDLE_CONNECTION_SECONDS = 4.0
# Against Azure, where a dropped connection costs a new TLS handshake at the next request after a lull.
AZURE_IDLE_CONNECTION_SECONDS = 30.0
# The storage emulator's well-known account (in every Azurite connection string) and its shorthand.
EMULATOR_MARKERS = ("devstoreaccount1", "usedevelopmentstorage=true")


class StorageTransport(AioHttpTransport):
    """azure-core's aiohttp transport, with a pool that drops idle connections before the server does."""

    session: aiohttp.ClientSession | None

    def __init__(self, *, idle_seconds: float = IDLE_CONNECTION_SECONDS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._idle_seconds = idle_seconds

    async def open(self) -> None:
        """Create the session (with the short keep-alive) on first use, then open it as azure-core does."""
        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(keepalive_timeout=self._idle_seconds),
                trust_env=_proxy_configured(), cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
            )
        await super().open()


def _proxy_configured() -> bool:
    # aiohttp with trust_env reads the proxy variables and ~/.netrc on every request (5 % of a busy
    # server's CPU, profiled); only worth it when a proxy is configured at all.
    return any(os.environ.get(name) for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"))


# Bytes azure-core takes from a blob response per read (its default, 4 KiB, made a 2.5 MB download 600 trips
# through the SDK's async generators: half the CPU of a transcoded retrieve, profiled); larger reads only
# take what has arrived, so this holds no more memory.
BLOB_READ_BLOCK_BYTES = 1024 * 1024

# Seconds between the SDK's retries of one storage request (each way of the jitter: half of it). Short, so
# that an unreachable account fails a request within seconds; the client retries later (503, Retry-After).
RETRY_BACKOFF_SECONDS = 0.5


@dataclass(frozen=True)
class ClientOptions:
    """Bounded retries and socket timeouts of the storage clients (the SDKs' defaults wait minutes)."""

    retries: int = 3
    connect_timeout_seconds: int = 5
    read_timeout_seconds: int = 60
    idle_connection_seconds: float = IDLE_CONNECTION_SECONDS

    @classmethod
    def of(cls, settings: Settings) -> ClientOptions:
        """The options the settings choose (idle connections kept longer when storage is not the emulator)."""
        return cls(settings.storage_retries, settings.storage_connect_timeout_seconds,
                   settings.storage_read_timeout_seconds, idle_connection_seconds(settings))

    def blob_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of a Blob service client: the Blob SDK's own retry policy, linear."""
        retry = LinearRetry(backoff=RETRY_BACKOFF_SECONDS, retry_total=self.retries,  # type: ignore[arg-type]
                            random_jitter_range=RETRY_BACKOFF_SECONDS / 2)  # type: ignore[arg-type]
        transport = StorageTransport(connection_data_block_size=BLOB_READ_BLOCK_BYTES,
                                     idle_seconds=self.idle_connection_seconds, **self._timeouts())
        return {"retry_policy": retry, "transport": transport, **self._timeouts()}

    def table_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of a Table service client: azure-core's retry policy (exponential from 0 s)."""
        return {"retry_total": self.retries, "retry_backoff_factor": RETRY_BACKOFF_SECONDS / 2,
                "transport": StorageTransport(idle_seconds=self.idle_connection_seconds, **self._timeouts()),
                **self._timeouts()}

    def _timeouts(self) -> dict[str, Any]:
        return {"connection_timeout": self.connect_timeout_seconds, "read_timeout": self.read_timeout_seconds}


def idle_connection_seconds(settings: Settings) -> float:
    """How long an idle storage connection is kept: below Azurite's 5 s, or longer against Azure."""
    return IDLE_CONNECTION_SECONDS if uses_emulator(settings) else AZURE_IDLE_CONNECTION_SECONDS


def storage_service_clients(
    access: StorageAccess, options: ClientOptions | None = None,
) -> tuple[BlobServiceClient, TableServiceClient, AsyncTokenCredential | None]:
    """Create (without connecting) the Blob and Table service clients for ``access``, and its credential."""
    options = options or ClientOptions()
    if isinstance(access, ConnectionStringAccess):
        return (BlobServiceClient.from_connection_string(access.connection_string, **options.blob_kwargs()),
                TransactionTableService.from_connection_string(access.connection_string, **options.table_kwargs()),
                None)
    # Imported here: azure.identity (and msal) cost about 90 ms at every cold start that uses a connection string.
    from azure.identity.aio import DefaultAzureCredential

    credential = DefaultAzureCredential()
    return (BlobServiceClient(access.blob_account_url, credential=credential, **options.blob_kwargs()),
            TransactionTableService(access.table_account_url, credential=credential, **options.table_kwargs()),
            credential)


def index_table(table_service: TableServiceClient, settings: Settings, shards: int) -> ShardedTable:
    """The index: lookup partitions hashed into ``shards`` shards, each growing kind in a Table of its own."""
    return ShardedTable.of_service(table_service, table_name(settings, "Index"), shards, INDEX_KINDS_OF_THEIR_OWN)


async def open_storage(settings: Settings, *, keep_placement: bool = True) -> Storage:
    """Connect to the configured account and make sure every container and table exists.

    ``keep_placement=False`` places the index as this version does even where it was written before its kinds had
    Tables of their own (the reshard, which moves it there).
    """
    blob_service, table_service, credential = storage_service_clients(select_storage_access(settings),
                                                                      ClientOptions.of(settings))
    try:
        (shards, existing), _ = await asyncio.gather(table_shards(table_service, settings),
                                                     asyncio.to_thread(prepare_timestamp_parsing))
    except BaseException:
        await asyncio.shield(asyncio.gather(blob_service.close(), table_service.close(),
                                            *([credential.close()] if credential else [])))
        raise
    settings = replace(settings, table_shards=shards)
    storage = Storage(
        settings=settings,
        blob_service=blob_service,
        table_service=table_service,
        files=blob_service.get_container_client(settings.blob_container),
        metadata=blob_service.get_container_client(settings.metadata_container),
        studies=ShardedTable.of_service(table_service, table_name(settings, "Studies"), shards),
        index=index_table(table_service, settings, shards),
        changes=table_service.get_table_client(table_name(settings, "Changes")),
        cleanup=table_service.get_table_client(table_name(settings, "Cleanup")),
        credential=credential,
    )
    try:
        await storage.ensure_created(keep_placement=keep_placement, existing=existing)
    except BaseException:
        # Unreachable storage (or a health check's timeout): don't leave HTTP sessions open on every attempt.
        await asyncio.shield(storage.close())
        raise
    return storage


def prepare_timestamp_parsing() -> None:
    """Parse an entity Timestamp in both of the Table SDK's formats once, while storage opens.

    The SDK decodes every entity's Timestamp with `datetime.strptime`, whose first call in a process builds its
    locale tables and compiles its patterns: ~50 ms of CPU (measured), which otherwise lands on the first request
    that reads a whole entity (e.g. the first series metadata after a store, whose writes decode none).
    """
    for value, pattern in ENTITY_TIMESTAMP_FORMATS:
        datetime.strptime(value, pattern)


async def _create_container(container: ContainerClient) -> None:
    try:
        await container.create_container()
    except ResourceExistsError:
        pass


_shared: dict[int, Storage] = {}
_lock: dict[int, asyncio.Lock] = {}


async def shared_storage(settings: Settings | None = None) -> Storage:
    """Return this event loop's Storage, opening it on first use (clients are bound to one loop)."""
    loop_id = id(asyncio.get_running_loop())
    storage = _shared.get(loop_id)
    if storage is not None:
        return storage
    lock = _lock.setdefault(loop_id, asyncio.Lock())
    async with lock:
        if loop_id not in _shared:
            _shared[loop_id] = await open_storage(settings or Settings.from_environment())
    return _shared[loop_id]
