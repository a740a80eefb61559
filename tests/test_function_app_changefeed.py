"""The change feed end to end: real HTTP over loopback to the local host, real Azurite behind it."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import httpx
import pytest
from pydicom.uid import generate_uid

from dicom_core.wire.media_types import DICOM_JSON
from tests.factories import make_instance, multipart_body

MULTIPART = 'multipart/related; type="application/dicom"; boundary=test-boundary'
SOP_INSTANCE_UID = "00080018"
WRITERS, STORES_PER_WRITER = 8, 5


def _uid() -> str:
    return str(generate_uid())


def _store(server: str, parts: list[bytes], *, method: str = "POST") -> None:
    response = httpx.request(method, f"{server}/v2/studies", content=multipart_body(parts),
                             headers={"Content-Type": MULTIPART, "Accept": DICOM_JSON}, timeout=120)
    assert response.status_code == 200, response.text


def _feed(server: str, version: str = "v2", **params: object) -> list[dict]:
    response = httpx.get(f"{server}/{version}/changefeed", params=params, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def _latest(server: str, **params: object) -> dict:
    response = httpx.get(f"{server}/v2/changefeed/latest", params=params, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def _entries_of(server: str, sop: str) -> list[dict]:
    return [entry for entry in _feed(server, "v1", limit=100, offset=0) if entry["sopInstanceUid"] == sop]


@pytest.fixture(scope="module")
def feed_server(isolated_server: str) -> str:
    """A server with tables of its own, so the feed holds only this module's entries."""
    return isolated_server


def test_a_stored_instance_is_the_latest_entry_created_and_current(feed_server: str) -> None:
    study, series, sop = _uid(), _uid(), _uid()
    _store(feed_server, [make_instance(study=study, series=series, sop=sop)])

    latest = _latest(feed_server)

    assert {key: latest[key] for key in ("studyInstanceUid", "seriesInstanceUid", "sopInstanceUid", "action",
                                         "state")} == {
        "studyInstanceUid": study, "seriesInstanceUid": series, "sopInstanceUid": sop, "action": "Create",
        "state": "Current"}
    assert latest["metadata"][SOP_INSTANCE_UID]["Value"] == [sop]


def test_an_entry_has_azures_fields_and_a_timestamp_with_offset(feed_server: str) -> None:
    _store(feed_server, [make_instance()])

    latest = _latest(feed_server, includemetadata="false")

    assert list(latest) == ["sequence", "studyInstanceUid", "seriesInstanceUid", "sopInstanceUid", "action",
                            "timestamp", "state"]
    assert datetime.fromisoformat(latest["timestamp"]).utcoffset() == timedelta(0)


def test_the_answer_is_json(feed_server: str) -> None:
    response = httpx.get(f"{feed_server}/v1/changefeed", timeout=60)
    assert response.headers["content-type"].startswith("application/json")


def test_an_upsert_makes_the_earlier_entry_replaced_and_its_own_current(feed_server: str) -> None:
    study, series, sop = _uid(), _uid(), _uid()
    _store(feed_server, [make_instance(study=study, series=series, sop=sop)])
    _store(feed_server, [make_instance(study=study, series=series, sop=sop)], method="PUT")

    entries = _entries_of(feed_server, sop)

    assert [(e["action"], e["state"]) for e in entries] == [("Create", "Replaced"), ("Create", "Current")]


def test_v1_pages_by_sequence_number(feed_server: str) -> None:
    before = _latest(feed_server)["sequence"] if _feed(feed_server, "v1") else 0
    sops = [_uid() for _ in range(5)]
    _store(feed_server, [make_instance(sop=sop) for sop in sops])

    first = _feed(feed_server, "v1", offset=before, limit=3)
    second = _feed(feed_server, "v1", offset=first[-1]["sequence"], limit=3)

    assert [e["sequence"] for e in first + second] == list(range(before + 1, before + 6))
    assert sorted(e["sopInstanceUid"] for e in first + second) == sorted(sops)


def test_v2_pages_inside_a_time_window(feed_server: str) -> None:
    _store(feed_server, [make_instance() for _ in range(4)])
    entries = _feed(feed_server, "v1", offset=_latest(feed_server)["sequence"] - 4, limit=4)
    start, end = entries[1]["timestamp"], entries[3]["timestamp"]

    pages = [_feed(feed_server, "v2", startTime=start, endTime=end, offset=offset, limit=1) for offset in range(3)]

    assert [[e["sequence"] for e in page] for page in pages] == [[entries[1]["sequence"]], [entries[2]["sequence"]],
                                                                 []]


def test_includemetadata_false_leaves_metadata_out(feed_server: str) -> None:
    _store(feed_server, [make_instance()])
    assert all("metadata" not in entry for entry in _feed(feed_server, "v2", includemetadata="false"))


@pytest.mark.parametrize(("version", "query", "message"), [
    ("v1", "limit=101", "The field limit must be between 1 and 100."),
    ("v2", "limit=201", "The field Limit must be between 1 and 200."),
    ("v2", "startTime=2023-05-03T10:58:00", "Date and time value must specify a time zone."),
    ("v2", "startTime=2023-05-03T10:59:00Z&endTime=2023-05-03T10:58:00Z", "must occur strictly before"),
    ("v2", "includeMetadata=true-ish", "The value 'true-ish' is not valid for includeMetadata."),
])
def test_invalid_parameters_are_a_bad_request_with_azures_message(
    feed_server: str, version: str, query: str, message: str
) -> None:
    response = httpx.get(f"{feed_server}/{version}/changefeed?{query}", timeout=60)
    assert (response.status_code, message in response.text) == (400, True)


def test_latest_with_an_invalid_includemetadata_is_a_bad_request(feed_server: str) -> None:
    assert httpx.get(f"{feed_server}/v2/changefeed/latest?includeMetadata=asdf", timeout=60).status_code == 400


def test_a_reader_paging_while_eight_clients_store_sees_every_instance_once(feed_server: str) -> None:
    start = _latest(feed_server)["sequence"] if _feed(feed_server, "v1") else 0
    stored: list[str] = []

    async def writer(client: httpx.AsyncClient) -> None:
        for _ in range(STORES_PER_WRITER):
            sop = _uid()
            response = await client.post(f"{feed_server}/v2/studies", content=multipart_body([make_instance(sop=sop)]),
                                         headers={"Content-Type": MULTIPART, "Accept": DICOM_JSON})
            assert response.status_code == 200, response.text
            stored.append(sop)

    async def run() -> list[dict]:
        seen: list[dict] = []
        async with httpx.AsyncClient(timeout=120) as client:
            writers = asyncio.gather(*(writer(client) for _ in range(WRITERS)))
            while True:
                finished = writers.done()  # read before the page: a page after the last write sees it all
                offset = seen[-1]["sequence"] if seen else start
                response = await client.get(f"{feed_server}/v1/changefeed",
                                            params={"offset": offset, "limit": 7, "includemetadata": "false"})
                assert response.status_code == 200, response.text
                seen.extend(response.json())
                if finished and not response.json():
                    await writers
                    return seen

    seen = asyncio.run(run())

    assert [entry["sequence"] for entry in seen] == list(range(start + 1, start + 1 + WRITERS * STORES_PER_WRITER))
    assert sorted(entry["sopInstanceUid"] for entry in seen) == sorted(stored)
