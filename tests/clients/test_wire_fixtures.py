"""Every recorded client request (tests/clients/wire_fixtures) replayed byte for byte over a raw socket against
the real server, and answered as that client expects: status, Content-Type, a body the client can parse."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import io
import json
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from urllib.parse import urlsplit

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.clients.record_wire import OHIF_ORIGIN
from tests.clients.wire_fixture import WireFixture, load_all
from tests.factories import make_dataset, multipart_body, to_bytes

FIXTURES = load_all()
CLIENTS = {"curl", "dicomweb-client", "slicer", "orthanc", "weasis", "ohif"}
JPEG = b"\xff\xd8\xff"
PNG = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Answer:
    """The server's answer to one replayed request."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def content_type(self) -> str | None:
        """The Content-Type header, if any."""
        return self.headers.get("Content-Type")


def _instance(study: str, series: str, number: int) -> tuple[str, bytes]:
    """An instance built as the recordings built theirs (64x64), so recorded chunk sizes fit it."""
    sop = generate_uid()
    return sop, to_bytes(make_dataset(study=study, series=series, sop=sop, rows=64, columns=64,
                                      InstanceNumber=number))


@dataclass(frozen=True)
class StoredStudy:
    """The study the GET fixtures read: its UIDs."""

    study: str
    series: str
    instance: str


@pytest.fixture(scope="module")
def wire_server(serve_with_env: Callable[[dict[str, str]], contextlib.AbstractContextManager[str]]) -> Iterator[str]:
    """A server with storage of its own that allows OHIF's origin (the browser fixtures carry it)."""
    suffix = uuid.uuid4().hex[:10]
    env = {"DICOMWEB_CORS_ALLOWED_ORIGINS": OHIF_ORIGIN, "DICOMWEB_BLOB_CONTAINER": f"wire-{suffix}",
           "DICOMWEB_METADATA_CONTAINER": f"wire-meta-{suffix}", "DICOMWEB_TABLE_PREFIX": f"wire{suffix}"}
    with serve_with_env(env) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def stored(wire_server: str) -> StoredStudy:
    """One study of two instances in one series, stored with a plain request."""
    study, series = generate_uid(), generate_uid()
    files = [_instance(study, series, number) for number in (1, 2)]
    content_type = 'multipart/related; type="application/dicom"; boundary=test-boundary'
    response = httpx.post(f"{wire_server}/v2/studies", content=multipart_body([data for _, data in files]),
                          headers={"Content-Type": content_type, "Accept": "application/dicom+json"}, trust_env=False)
    assert response.status_code == 200, response.text
    return StoredStudy(study, series, files[0][0])


def _replay(base_url: str, request: bytes) -> Answer:
    address = urlsplit(base_url)
    with socket.create_connection((address.hostname or "127.0.0.1", address.port or 80), timeout=60) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read()
        if response.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return Answer(response.status, response.headers, body)


def _media_type(content_type: str | None) -> tuple[str, str | None]:
    """(media type, its type parameter) in lower case: what decides how a client parses the body."""
    if content_type is None:
        return "", None
    message = Message()
    message["Content-Type"] = content_type
    kind = message.get_param("type")
    return message.get_content_type(), kind.lower() if isinstance(kind, str) else None


def _parts(answer: Answer) -> list[bytes]:
    """The part bodies of a multipart answer, split on the boundary its Content-Type names."""
    message = Message()
    message["Content-Type"] = answer.content_type or ""
    boundary = message.get_param("boundary")
    assert isinstance(boundary, str), answer.content_type
    delimiter = b"--" + boundary.encode("latin-1")
    sections = answer.body.split(delimiter)
    assert sections[-1].startswith(b"--"), "the close delimiter is missing"
    parts = []
    for section in sections[1:-1]:
        headers, separator, body = section.partition(b"\r\n\r\n")
        assert separator and headers.startswith(b"\r\n"), section[:80]
        parts.append(body.removesuffix(b"\r\n"))
    return parts


def _check_body(fixture: WireFixture, answer: Answer, values: dict[str, str]) -> None:
    """The answer's body parses the way the client parses it."""
    media_type, kind = _media_type(answer.content_type)
    if media_type == "application/dicom+json":
        document = json.loads(answer.body)
        results = document if isinstance(document, list) else [document]
        if fixture.instances:  # a STOW answer lists what was stored
            [result] = results
            assert len(result["00081199"]["Value"]) == fixture.instances
        else:
            assert results and all(isinstance(item, dict) for item in results)
            if "{study}" in fixture.fixture["request"]["line"]:
                assert any(item.get("0020000D", {}).get("Value") == [values["study"]] for item in results)
    elif media_type == "multipart/related" and kind == "application/dicom":
        datasets = [pydicom.dcmread(io.BytesIO(part)) for part in _parts(answer)]
        assert datasets and all(ds.StudyInstanceUID == values["study"] for ds in datasets)
    elif media_type == "multipart/related":
        parts = _parts(answer)
        assert len(parts) == 1 and len(parts[0]) == 64 * 64 * 2  # one 16-bit 64x64 frame
    elif media_type == "image/jpeg":
        assert answer.body.startswith(JPEG)
    elif media_type == "image/png":
        assert answer.body.startswith(PNG)


def test_every_listed_client_has_fixtures() -> None:
    recorded = {fixture.name.split("-stow")[0].split("-search")[0].split("-retrieve")[0].split("-frames")[0]
                .split("-thumbnail")[0] for fixture in FIXTURES}
    assert CLIENTS <= recorded


@pytest.mark.parametrize("fixture", FIXTURES, ids=[fixture.name for fixture in FIXTURES])
def test_client_request_is_answered_as_the_client_expects(fixture: WireFixture, wire_server: str,
                                                          stored: StoredStudy) -> None:
    authority = urlsplit(wire_server).netloc
    values = {"authority": authority, "hostname": authority.split(":")[0], "study": stored.study,
              "series": stored.series, "instance": stored.instance}
    files: list[bytes] = []
    if fixture.instances:  # a STOW: fresh instances of a fresh study
        values["study"], values["series"] = generate_uid(), generate_uid()
        files = [_instance(values["study"], values["series"], number)[1] for number in range(fixture.instances)]

    answer = _replay(wire_server, fixture.request_bytes(values, files))

    expect = fixture.fixture["expect"]
    assert answer.status == expect["status"], answer.body[:500]
    if expect["content_type"] is not None:
        assert _media_type(answer.content_type) == _media_type(expect["content_type"])
    if fixture.header("Origin") and 200 <= answer.status < 300:  # a browser lets the page read only these
        assert answer.headers.get("Access-Control-Allow-Origin") == fixture.header("Origin")
    if 200 <= answer.status < 300:
        _check_body(fixture, answer, values)
