"""Forwarded headers end to end: the Functions host forwards each request to the worker's own server and passes the
original host as X-Forwarded-Host; RetrieveURLs must name the public host, and a spoofed header only the caller's
own answer. Real HTTP over loopback, real Azurite behind it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from azure.data.tables import TableServiceClient
from azure.storage.blob import ContainerClient
from pydicom.uid import generate_uid

from dicom_core.wire.media_types import DICOM_JSON
from tests.factories import make_instance, multipart_body

MULTIPART = 'multipart/related; type="application/dicom"; boundary=test-boundary'
RETRIEVE_URL = "00081190"
REFERENCED_SOP_SEQUENCE = "00081199"
PUBLIC = {"X-Forwarded-Host": "dicom.contoso.example", "X-Forwarded-Proto": "https",
          "X-Forwarded-Prefix": "/dicomweb"}


def _uid() -> str:
    return str(generate_uid())


def _store(server: str, study: str, **headers: str) -> dict:
    response = httpx.post(f"{server}/v2/studies/{study}", content=multipart_body([make_instance(study=study)]),
                          headers={"Content-Type": MULTIPART, "Accept": DICOM_JSON, **headers}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def _retrieve_urls(answer: dict) -> list[str]:
    items = answer[REFERENCED_SOP_SEQUENCE]["Value"]
    return answer[RETRIEVE_URL]["Value"] + [url for item in items for url in item[RETRIEVE_URL]["Value"]]


@pytest.fixture(scope="module")
def names() -> dict[str, str]:
    """Containers and table prefix of this module's server, so a scan of its storage sees only its data."""
    suffix = uuid.uuid4().hex[:10]
    return {"DICOMWEB_BLOB_CONTAINER": f"fwd-files-{suffix}", "DICOMWEB_METADATA_CONTAINER": f"fwd-meta-{suffix}",
            "DICOMWEB_TABLE_PREFIX": f"fwd{suffix}"}


@pytest.fixture(scope="module")
def forwarded_server(serve_with_env, names: dict[str, str]) -> Iterator[str]:
    """A server with no DICOMWEB_PUBLIC_BASE_URL and storage of its own."""
    with serve_with_env(names) as base_url:
        yield base_url


def _stored_text(connection_string: str, names: dict[str, str]) -> bytes:
    """Every blob and every table entity the server stored, as one byte string to search."""
    out = bytearray()
    for setting in ("DICOMWEB_BLOB_CONTAINER", "DICOMWEB_METADATA_CONTAINER"):
        container = ContainerClient.from_connection_string(connection_string, names[setting])
        for blob in container.list_blobs():
            out += container.download_blob(blob.name).readall()
    tables = TableServiceClient.from_connection_string(connection_string)
    for table in tables.list_tables():
        if table.name.startswith(names["DICOMWEB_TABLE_PREFIX"]):
            for entity in tables.get_table_client(table.name).list_entities():
                out += repr(dict(entity)).encode()
    return bytes(out)


def test_retrieve_urls_name_the_forwarded_host_scheme_and_prefix(forwarded_server: str) -> None:
    study = _uid()
    urls = _retrieve_urls(_store(forwarded_server, study, **PUBLIC))
    assert urls[0] == f"https://dicom.contoso.example/dicomweb/v2/studies/{study}"
    assert urls[1].startswith(f"https://dicom.contoso.example/dicomweb/v2/studies/{study}/series/")


def test_without_forwarded_headers_retrieve_urls_name_the_request_host(forwarded_server: str) -> None:
    study = _uid()
    assert _retrieve_urls(_store(forwarded_server, study))[0] == f"{forwarded_server}/v2/studies/{study}"


def test_a_forwarded_host_that_is_not_a_host_name_is_ignored(forwarded_server: str) -> None:
    study = _uid()
    urls = _retrieve_urls(_store(forwarded_server, study, **{"X-Forwarded-Host": "evil.example/phish?"}))
    assert urls[0] == f"{forwarded_server}/v2/studies/{study}"


def test_the_configured_public_base_url_wins_over_forwarded_headers(public_url_server: str,
                                                                    public_base_url: str) -> None:
    study = _uid()
    urls = _retrieve_urls(_store(public_url_server, study, **PUBLIC))
    assert urls[0] == f"{public_base_url}/v2/studies/{study}"


def test_a_spoofed_forwarded_host_reaches_nothing_but_the_callers_own_answer(
    forwarded_server: str, storage_env: dict[str, str], names: dict[str, str]
) -> None:
    marker = f"spoof-{uuid.uuid4().hex[:8]}.example"
    study = _uid()
    assert marker in _retrieve_urls(_store(forwarded_server, study, **{"X-Forwarded-Host": marker}))[0]

    # The next caller's answers (store, metadata, search, change feed) do not carry it ...
    assert marker not in " ".join(_retrieve_urls(_store(forwarded_server, _uid())))
    reads = [f"/v2/studies/{study}/metadata", f"/v2/studies?StudyInstanceUID={study}",
             "/v2/changefeed?includemetadata=true", "/v1/changefeed?includemetadata=true&limit=100",
             "/v2/changefeed/latest?includemetadata=true"]
    for path in reads:
        response = httpx.get(forwarded_server + path, timeout=120)
        assert response.status_code == 200, (path, response.text)
        assert marker not in response.text, path
    # ... because nothing stored holds a URL built from request headers: not a blob, not a table entity.
    stored = _stored_text(storage_env["DICOMWEB_STORAGE_CONNECTION_STRING"], names)
    assert study.encode() in stored  # the scan does see this server's data
    assert marker.encode() not in stored
    assert b"dicom.contoso.example" not in stored


def test_the_change_feed_holds_no_absolute_url(forwarded_server: str) -> None:
    _store(forwarded_server, _uid(), **PUBLIC)
    response = httpx.get(f"{forwarded_server}/v2/changefeed?includemetadata=true", headers=PUBLIC, timeout=120)
    assert response.status_code == 200 and response.json()
    assert "://" not in response.text
