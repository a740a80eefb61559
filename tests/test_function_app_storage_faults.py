"""Storage faults end to end: Azurite stopped and started again around (and during) real HTTP requests.

The module has an Azurite of its own (`restartable_azurite`) whose data folder survives a restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from pydicom.uid import generate_uid

from dicom_core.wire.media_types import DICOM_JSON
from tests.factories import make_instance, multipart_body

BOUNDARY = "faults-boundary"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
REFERENCED_SOP_SEQUENCE = "00081199"
FAILED_SOP_SEQUENCE = "00081198"
FAILURE_REASON = "00081197"
REFERENCED_SOP_INSTANCE_UID = "00081155"
PROCESSING_FAILURE = 272
# A generous bound for polling; the assertions never depend on how long anything took.
POLL_SECONDS = 60


class Stored:
    """One instance stored through the server before any fault: its UIDs and bytes."""

    def __init__(self, study: str, series: str, sop: str, data: bytes) -> None:
        self.study, self.series, self.sop, self.data = study, series, sop, data

    @property
    def path(self) -> str:
        return f"/v2/studies/{self.study}/series/{self.series}/instances/{self.sop}"


@pytest.fixture(scope="module")
def fault_server(serve_on_restartable: Callable) -> Iterator[str]:
    """A server on the module's restartable Azurite (default retry and timeout settings)."""
    with serve_on_restartable({}) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def stored(fault_server: str) -> Stored:
    """An instance stored while storage is up."""
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    data = make_instance(study=study, series=series, sop=sop)
    response = _stow(fault_server, multipart_body([data], BOUNDARY))
    assert response.status_code == 200, response.text
    return Stored(study, series, sop, data)


@pytest.fixture(scope="class")
def storage_stopped(restartable_azurite, stored: Stored) -> Iterator[None]:
    """Azurite stopped for a class of tests (after `stored` was stored), started again after them."""
    restartable_azurite.stop()
    try:
        yield
    finally:
        restartable_azurite.start()


def _stow(base_url: str, body: bytes | Iterator[bytes], path: str = "/v2/studies") -> httpx.Response:
    return httpx.post(base_url + path, content=body, headers={"Content-Type": MULTIPART, "Accept": DICOM_JSON},
                      timeout=120)


def _get(base_url: str, path: str, accept: str | None = None) -> httpx.Response:
    return httpx.get(base_url + path, headers={"Accept": accept} if accept else {}, timeout=120)


REQUESTS: dict[str, Callable[[str, Stored], httpx.Response]] = {
    "retrieve instance": lambda url, s: _get(url, s.path, "application/dicom; transfer-syntax=*"),
    "retrieve study": lambda url, s: _get(url, f"/v2/studies/{s.study}"),
    "instance metadata": lambda url, s: _get(url, s.path + "/metadata"),
    "series metadata": lambda url, s: _get(url, f"/v2/studies/{s.study}/series/{s.series}/metadata"),
    "frames": lambda url, s: _get(url, s.path + "/frames/1", "application/octet-stream"),
    "rendered": lambda url, s: _get(url, s.path + "/rendered"),
    "search studies": lambda url, s: _get(url, "/v2/studies?PatientID=TEST-1"),
    "search series of a study": lambda url, s: _get(url, f"/v2/studies/{s.study}/series"),
    "store": lambda url, s: _stow(url, multipart_body([make_instance(), make_instance()], BOUNDARY)),
    "health": lambda url, s: _get(url, "/health/check"),
}


@pytest.mark.usefixtures("storage_stopped")
class TestWhileStorageIsStopped:
    """Requests while Azurite is down (one outage for the class)."""

    @pytest.mark.parametrize("request_name", REQUESTS)
    def test_answers_503_with_retry_after(self, fault_server: str, stored: Stored, request_name: str) -> None:
        response = REQUESTS[request_name](fault_server, stored)
        assert response.status_code == 503, response.text
        assert int(response.headers["Retry-After"]) > 0

    def test_answers_a_readable_message(self, fault_server: str, stored: Stored) -> None:
        response = _get(fault_server, stored.path + "/metadata")
        assert response.headers["content-type"].startswith("text/plain")
        assert "unavailable" in response.text and "retry" in response.text


def test_restarted_storage_serves_what_was_stored_before_the_outage(
    fault_server: str, stored: Stored, restartable_azurite
) -> None:
    restartable_azurite.stop()
    assert _get(fault_server, stored.path + "/metadata").status_code == 503
    restartable_azurite.start()

    retrieved = _get(fault_server, stored.path, "application/dicom; transfer-syntax=*")
    assert retrieved.status_code == 200
    assert retrieved.content == stored.data
    found = _get(fault_server, f"/v2/studies?StudyInstanceUID={stored.study}")
    assert [study["0020000D"]["Value"][0] for study in found.json()] == [stored.study]


def test_restarted_storage_accepts_stores_again(fault_server: str, stored: Stored, restartable_azurite) -> None:
    restartable_azurite.stop()
    data = make_instance()
    assert _stow(fault_server, multipart_body([data], BOUNDARY)).status_code == 503
    restartable_azurite.start()

    assert _stow(fault_server, multipart_body([data], BOUNDARY)).status_code == 200


def test_storage_down_when_the_server_first_opens_it_answers_503_then_recovers(
    serve_on_restartable: Callable, stored: Stored, restartable_azurite
) -> None:
    restartable_azurite.stop()
    try:
        with serve_on_restartable({}) as base_url:
            unavailable = _get(base_url, stored.path + "/metadata")
            restartable_azurite.start()
            recovered = _get(base_url, stored.path + "/metadata")
    finally:
        if not restartable_azurite.running:
            restartable_azurite.start()
    assert (unavailable.status_code, "Retry-After" in unavailable.headers) == (503, True)
    assert recovered.status_code == 200


def _segments(parts: list[bytes]) -> list[bytes]:
    """The multipart body cut so that segment i holds part i's delimiter, headers and body."""
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    return [(b"\r\n" if index else b"") + head + part for index, part in enumerate(parts)] + [
        f"\r\n--{BOUNDARY}--\r\n".encode()]


def _wait_for_instances(base_url: str, study: str, count: int) -> None:
    deadline = time.monotonic() + POLL_SECONDS
    while time.monotonic() < deadline:
        response = _get(base_url, f"/v2/studies/{study}/instances")
        if response.status_code == 200 and len(response.json()) >= count:
            return
        time.sleep(0.2)
    pytest.fail(f"{count} instances of {study} were not stored within {POLL_SECONDS} s")


def test_storage_stopping_during_a_multipart_store_leaves_only_whole_instances(
    fault_server: str, restartable_azurite
) -> None:
    study, series = generate_uid(), generate_uid()
    sops = [generate_uid() for _ in range(6)]
    parts = [make_instance(study=study, series=series, sop=sop) for sop in sops]
    segments = _segments(parts)

    def body() -> Iterator[bytes]:
        # Parts 1-3, and the delimiter that completes part 3; once they are stored, storage goes away.
        yield from segments[:4]
        _wait_for_instances(fault_server, study, 3)
        restartable_azurite.stop()
        yield from segments[4:]

    try:
        response = _stow(fault_server, body())
    finally:
        restartable_azurite.start()

    assert response.status_code == 202, response.text
    document = response.json()
    referenced = {item[REFERENCED_SOP_INSTANCE_UID]["Value"][0]
                  for item in document.get(REFERENCED_SOP_SEQUENCE, {}).get("Value", [])}
    failed = {item[REFERENCED_SOP_INSTANCE_UID]["Value"][0]: item[FAILURE_REASON]["Value"][0]
              for item in document.get(FAILED_SOP_SEQUENCE, {}).get("Value", [])}
    assert set(sops[:3]) <= referenced
    assert {failed.get(sop) for sop in sops[4:]} == {PROCESSING_FAILURE}
    assert referenced | set(failed) == set(sops)
    # After the restart: what was reported stored is whole; what failed after the stop is nowhere.
    for sop, data in zip(sops, parts, strict=True):
        retrieved = _get(fault_server, f"/v2/studies/{study}/series/{series}/instances/{sop}",
                         "application/dicom; transfer-syntax=*")
        if sop in referenced:
            assert (retrieved.status_code, retrieved.content == data) == (200, True), sop
        elif sop in sops[4:]:
            assert retrieved.status_code == 404, sop
    listed = {i["00080018"]["Value"][0] for i in _get(fault_server, f"/v2/studies/{study}/instances").json()}
    assert set(sops[4:]).isdisjoint(listed)
