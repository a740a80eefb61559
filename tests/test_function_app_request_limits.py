"""Request limits end to end: body and part size (413), headers (431), a stalled body (408), hostile values."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from pydicom.uid import generate_uid

from tests.factories import make_instance, multipart_body

BOUNDARY = "limits-boundary"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
MAX_REQUEST = 64 * 1024
MAX_PART = 24 * 1024
MAX_HEADERS = 4 * 1024


@pytest.fixture(scope="module")
def limited_server(serve_with_env: Callable) -> Iterator[str]:
    """A server with small limits, a 1-second body idle timeout, and data of its own."""
    suffix = uuid.uuid4().hex[:10]
    env = {"DICOMWEB_MAX_REQUEST_BYTES": str(MAX_REQUEST), "DICOMWEB_MAX_PART_BYTES": str(MAX_PART),
           "DICOMWEB_MAX_HEADER_BYTES": str(MAX_HEADERS), "DICOMWEB_BODY_IDLE_TIMEOUT_SECONDS": "1",
           "DICOMWEB_BLOB_CONTAINER": f"limits-{suffix}", "DICOMWEB_METADATA_CONTAINER": f"limits-meta-{suffix}",
           "DICOMWEB_TABLE_PREFIX": f"limits{suffix}"}
    with serve_with_env(env) as base_url:
        yield base_url


def _instance_of(size: int, study: str) -> bytes:
    """A Part-10 file of about ``size`` bytes (its pixel data makes up the size)."""
    side = int((size // 2) ** 0.5)
    return make_instance(study=study, rows=side, columns=side)


def _study_is_empty(base_url: str, study: str) -> bool:
    return httpx.get(f"{base_url}/v2/studies?StudyInstanceUID={study}", timeout=30).status_code == 204


def test_content_length_over_the_request_limit_is_413_before_reading(limited_server: str) -> None:
    study = generate_uid()
    body = multipart_body([_instance_of(MAX_PART - 4096, study) for _ in range(4)], BOUNDARY)
    assert len(body) > MAX_REQUEST
    response = httpx.post(f"{limited_server}/v2/studies", content=body, headers={"Content-Type": MULTIPART},
                          timeout=60)
    assert response.status_code == 413
    assert _study_is_empty(limited_server, study)


def test_chunked_body_over_the_request_limit_is_413(limited_server: str) -> None:
    study = generate_uid()
    # Parts over the part limit would be refused on their own; these are each within it.
    body = multipart_body([_instance_of(MAX_PART - 4096, study) for _ in range(4)], BOUNDARY)

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked, counted as it arrives
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    response = httpx.post(f"{limited_server}/v2/studies", content=chunks(), headers={"Content-Type": MULTIPART},
                          timeout=60)
    assert response.status_code == 413
    assert "request body is larger" in response.text


def test_part_over_the_part_limit_is_413(limited_server: str) -> None:
    study = generate_uid()
    body = multipart_body([_instance_of(MAX_PART + 4096, study)], BOUNDARY)
    assert len(body) < MAX_REQUEST
    response = httpx.post(f"{limited_server}/v2/studies", content=body, headers={"Content-Type": MULTIPART},
                          timeout=60)
    assert response.status_code == 413
    assert _study_is_empty(limited_server, study)


def test_headers_over_the_header_limit_are_431(limited_server: str) -> None:
    response = httpx.get(f"{limited_server}/v2/studies", headers={"X-Filler": "a" * (MAX_HEADERS + 100)}, timeout=30)
    assert response.status_code == 431


def test_body_that_stops_arriving_is_408(limited_server: str) -> None:
    study = generate_uid()
    body = multipart_body([make_instance(study=study)], BOUNDARY)
    address = urlsplit(limited_server)
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        head = (f"POST /v2/studies HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Type: {MULTIPART}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        connection.sendall(head + body[: len(body) // 2])  # and then nothing more
        answer = b""
        while b"\r\n\r\n" not in answer:
            received = connection.recv(4096)
            if not received:
                break
            answer += received
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert _study_is_empty(limited_server, study)


def test_odata_injection_in_a_search_value_matches_nothing(limited_server: str) -> None:
    stored = httpx.post(f"{limited_server}/v2/studies", content=make_instance(PatientID="SAFE-1"),
                        headers={"Content-Type": "application/dicom"}, timeout=60)
    assert stored.status_code == 200
    response = httpx.get(f"{limited_server}/v2/studies", params={"PatientID": "x' or PartitionKey ne '"}, timeout=30)
    assert response.status_code == 204
