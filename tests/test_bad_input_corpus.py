"""Replays tests/corpus/ (written by tests/make_corpus.py) over loopback: each bad input gets its 4xx, and
storage is the same afterwards, blob for blob and row for row."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient

from dicom_core.changefeed.sequencer import sequence_pending
from dicom_core.maintenance.consistency import check_consistency
from dicom_core.settings import Settings
from dicom_core.storage.clients import open_storage
from tests.processes import TEST_TABLE_SHARDS

CORPUS = Path(__file__).resolve().parent / "corpus"
REQUESTS = json.loads((CORPUS / "requests.json").read_text())
QUERIES = [line.split(" ", 1) for line in (CORPUS / "bad_queries.txt").read_text().splitlines()
           if line and not line.startswith("#")]
# The maintenance timer (every 5 minutes) sequences the change feed and works off cleanup entries at any moment;
# every other table, and every blob, must stay as it was.
UNWATCHED_TABLE_SUFFIXES = ("Changes", "Cleanup")
# The corpus instance (tests/make_corpus.py).
STUDY, SERIES = "1.2.826.0.1.3680043.8.498.1001", "1.2.826.0.1.3680043.8.498.1002"


@dataclass(frozen=True)
class CorpusServer:
    """The server the corpus is replayed against, and where its data lives."""

    base_url: str
    settings: Settings


@pytest.fixture(scope="module")
def corpus_server(serve_with_env: Callable, azurite) -> Iterator[CorpusServer]:
    """A server with containers and tables of its own, holding the corpus instance."""
    suffix = uuid.uuid4().hex[:10]
    settings = Settings(storage_connection_string=azurite.connection_string, blob_container=f"bad-{suffix}",
                        metadata_container=f"bad-meta-{suffix}", table_prefix=f"bad{suffix}",
                        table_shards=TEST_TABLE_SHARDS)
    env = {"DICOMWEB_BLOB_CONTAINER": settings.blob_container,
           "DICOMWEB_METADATA_CONTAINER": settings.metadata_container, "DICOMWEB_TABLE_PREFIX": settings.table_prefix}
    # Without timers: maintenance (the index pruning's cursor, the sequencer) would write between two snapshots.
    with serve_with_env(env, timers=False) as base_url:
        stored = httpx.post(f"{base_url}/v2/studies", content=(CORPUS / "valid-instance.dcm").read_bytes(),
                            headers={"Content-Type": "application/dicom"}, timeout=60)
        assert stored.status_code == 200, stored.text
        # A first read writes the series metadata document back once; afterwards reads change nothing.
        assert httpx.get(f"{base_url}/v2/studies/{STUDY}/series/{SERIES}/metadata", timeout=60).status_code == 200
        # Its change is sequenced now, not by the server's timer between a test's two snapshots: sequencing
        # deletes the outbox row the store left in the study's partition.
        asyncio.run(_sequence_pending(settings))
        assert not [key for rows in _snapshot(settings).values() for key in rows if "/change|" in key]
        yield CorpusServer(base_url, settings)


async def _sequence_pending(settings: Settings) -> None:
    storage = await open_storage(settings)
    try:
        await sequence_pending(storage)
    finally:
        await storage.close()


def _snapshot(settings: Settings) -> dict[str, dict[str, str]]:
    """Every blob (name → ETag) of both containers and every row (keys → ETag) of the watched tables."""
    blobs = BlobServiceClient.from_connection_string(settings.storage_connection_string)
    tables = TableServiceClient.from_connection_string(settings.storage_connection_string)
    with blobs, tables:
        snapshot = {
            container: {blob.name: blob.etag for blob in blobs.get_container_client(container).list_blobs()}
            for container in (settings.blob_container, settings.metadata_container)
        }
        for table in tables.list_tables():
            name = table.name
            if name.startswith(settings.table_prefix) and not name.endswith(UNWATCHED_TABLE_SUFFIXES):
                snapshot[name] = {f"{row['PartitionKey']}/{row['RowKey']}": row.metadata["etag"]
                                  for row in tables.get_table_client(name).list_entities()}
    return snapshot


@pytest.mark.parametrize("bad", REQUESTS, ids=[r["name"] for r in REQUESTS])
def test_bad_store_request_gets_its_4xx_and_changes_nothing(corpus_server: CorpusServer, bad: dict) -> None:
    before = _snapshot(corpus_server.settings)
    headers = {"Accept": "application/dicom+json"}
    if bad["content_type"]:
        headers["Content-Type"] = bad["content_type"]
    response = httpx.request(bad["method"], corpus_server.base_url + bad["path"], headers=headers,
                             content=(CORPUS / bad["body"]).read_bytes(), timeout=120)
    assert response.status_code == bad["status"], response.text
    assert _snapshot(corpus_server.settings) == before


@pytest.mark.parametrize(("status", "query"), QUERIES, ids=[q[:60] for _, q in QUERIES])
def test_bad_query_gets_its_4xx_and_changes_nothing(corpus_server: CorpusServer, status: str, query: str) -> None:
    before = _snapshot(corpus_server.settings)
    response = httpx.get(corpus_server.base_url + query, timeout=60)
    assert response.status_code == int(status), response.text
    assert _snapshot(corpus_server.settings) == before


def test_storage_is_consistent_after_the_corpus(corpus_server: CorpusServer) -> None:
    async def findings() -> list[str]:
        storage = await open_storage(corpus_server.settings)
        try:
            return [str(finding) for finding in await check_consistency(storage)]
        finally:
            await storage.close()

    assert asyncio.run(findings()) == []
