"""The edges of a request end to end: a client that leaves mid-upload, a retrieve whose later part fails."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

from dicom_core.wire.media_types import parse_media_type
from tests.factories import make_dataset, make_instance, multipart_body, to_bytes

BOUNDARY = "edges-boundary"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
POLL_SECONDS = 30
# A hung answer would outlast this many seconds without a byte; a truncated one ends well before.
READ_TIMEOUT_SECONDS = 20


class LoggingServer:
    """A server with data of its own whose output the test reads."""

    def __init__(self, base_url: str, log: Path) -> None:
        self.base_url, self.log = base_url, log

    def request_records(self, request_id: str) -> list[tuple[str, dict[str, object]]]:
        """The log level and JSON record of each request-log line of one request id."""
        records = []
        for line in self.log.read_text(errors="replace").splitlines():
            start = line.find('{"event": "request"')
            if start >= 0 and request_id in line:
                level = line.split()[2]  # "<date> <time> LEVEL [pid] logger: message"
                records.append((level, json.loads(line[start:])))
        return records

    def wait_for_request_record(self, request_id: str) -> tuple[str, dict[str, object]]:
        deadline = time.monotonic() + POLL_SECONDS
        while time.monotonic() < deadline:
            if records := self.request_records(request_id):
                return records[0]
            time.sleep(0.1)
        pytest.fail(f"no request-log line for {request_id} within {POLL_SECONDS} s:\n{self.log.read_text()}")


@pytest.fixture(scope="module")
def logging_server(serve_logging_to: Callable, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoggingServer]:
    suffix = uuid.uuid4().hex[:10]
    folder = tmp_path_factory.mktemp("edges-server")
    env = {"DICOMWEB_BLOB_CONTAINER": f"edges-{suffix}", "DICOMWEB_METADATA_CONTAINER": f"edges-meta-{suffix}",
           "DICOMWEB_TABLE_PREFIX": f"edges{suffix}"}
    with serve_logging_to(env, folder) as base_url:
        yield LoggingServer(base_url, folder / "local_host.log")


def _send_half_and_close(base_url: str, body: bytes, request_id: str) -> None:
    """POST ``body`` with its full Content-Length, send half of it, then close the connection."""
    address = urlsplit(base_url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        head = (f"POST /v2/studies HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Type: {MULTIPART}\r\n"
                f"X-Request-Id: {request_id}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        connection.sendall(head + body[: len(body) // 2])
        time.sleep(0.5)  # the server is reading the body when the client goes


def test_client_leaving_mid_upload_is_logged_as_a_client_abort(logging_server: LoggingServer) -> None:
    study, series, sop, request_id = generate_uid(), generate_uid(), generate_uid(), uuid.uuid4().hex
    # Large enough that blocks of its blob are staged while it arrives (the spool's memory is smaller).
    body = multipart_body([make_instance(study=study, series=series, sop=sop, rows=1200, columns=1200)], BOUNDARY)
    _send_half_and_close(logging_server.base_url, body, request_id)

    level, record = logging_server.wait_for_request_record(request_id)
    assert (level, record["status"]) == ("INFO", 499)
    log = logging_server.log.read_text(errors="replace")
    assert "Unhandled error" not in log and "Traceback" not in log


def test_nothing_of_an_abandoned_upload_is_visible(logging_server: LoggingServer) -> None:
    study, series, sop, request_id = generate_uid(), generate_uid(), generate_uid(), uuid.uuid4().hex
    body = multipart_body([make_instance(study=study, series=series, sop=sop, rows=1200, columns=1200)], BOUNDARY)
    _send_half_and_close(logging_server.base_url, body, request_id)
    logging_server.wait_for_request_record(request_id)

    base = logging_server.base_url
    assert httpx.get(f"{base}/v2/studies?StudyInstanceUID={study}", timeout=30).status_code == 204
    assert httpx.get(f"{base}/v2/instances?SOPInstanceUID={sop}", timeout=30).status_code == 204
    retrieved = httpx.get(f"{base}/v2/studies/{study}/series/{series}/instances/{sop}",
                          headers={"Accept": "application/dicom; transfer-syntax=*"}, timeout=30)
    assert retrieved.status_code == 404


def _corrupt_jpeg_2000(**uids: str) -> bytes:
    """An instance that says its pixels are JPEG 2000 but whose one fragment is no codestream."""
    ds = make_dataset(transfer_syntax=JPEG2000Lossless, **uids)
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(range(256)) * 8])
    ds["PixelData"].VR = "OB"
    return to_bytes(ds)


def test_a_later_part_that_cannot_be_transcoded_ends_the_multipart_answer(logging_server: LoggingServer) -> None:
    study, series, prefix = generate_uid(), generate_uid(), generate_uid(prefix=None)  # 2.25.<n>: room for a suffix
    good = [make_instance(study=study, series=series, sop=f"{prefix}.{n}") for n in (1, 2)]
    corrupt = _corrupt_jpeg_2000(study=study, series=series, sop=f"{prefix}.3")  # the last part, in RowKey order
    stored = httpx.post(f"{logging_server.base_url}/v2/studies", content=multipart_body([*good, corrupt], BOUNDARY),
                        headers={"Content-Type": MULTIPART}, timeout=60)
    assert stored.status_code == 200, stored.text

    request_id = uuid.uuid4().hex
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={ExplicitVRLittleEndian}'
    received, ended_by = b"", "the closing delimiter"
    started = time.monotonic()
    with httpx.stream("GET", f"{logging_server.base_url}/v2/studies/{study}/series/{series}",
                      headers={"Accept": accept, "X-Request-Id": request_id},
                      timeout=httpx.Timeout(60, read=READ_TIMEOUT_SECONDS)) as response:
        assert response.status_code == 200
        boundary = parse_media_type(response.headers["content-type"]).params["boundary"].encode()
        try:
            for chunk in response.iter_raw():
                received += chunk
        except httpx.RemoteProtocolError:
            ended_by = "a dropped connection"
    assert time.monotonic() - started < READ_TIMEOUT_SECONDS
    assert ended_by == "a dropped connection"
    assert b"--" + boundary + b"--" not in received
    assert all(data in received for data in good)  # the parts before the failure arrived whole
    log = logging_server.log.read_text(errors="replace")
    failures = [line for line in log.splitlines() if f"The streamed answer of request {request_id} failed" in line]
    assert len(failures) == 1 and "pixel data cannot be decoded" in failures[0]
