"""Concurrency and crash scenarios of store and delete over real HTTP, each ending with the consistency checker.

Every test runs a server (or two) on storage of its own, drives it over loopback, and afterwards runs the
blob cleanup with a `now` far in the future and the checker, which must report nothing. Iteration counts are
printed (run with -s to see them).

The concurrency scenarios run twice: against one process, and against `python -m local_host --workers 2`, where
the writers that race are in different processes (each client has one keep-alive connection, and the server's
access log says which worker process it reached), as they are in Azure with several worker processes and
instances. There only Table ETags and transactions keep the guarantees, not per-process commits or locks.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid

from dicom_core.changefeed.feed_reads import entries_after
from dicom_core.changefeed.sequencer import sequence_pending
from dicom_core.index.outbox import ANNOUNCEMENT_TIMEOUT, ChangeAction
from dicom_core.index.rows import STUDY_ROW
from dicom_core.maintenance.blob_cleanup import run_cleanup
from dicom_core.maintenance.consistency import check_consistency
from dicom_core.settings import Settings
from dicom_core.storage.clients import Storage, open_storage
from dicom_core.wire.media_types import DICOM_JSON
from local_host.__main__ import WORKERS_VARIABLE
from tests.factories import make_instance, multipart_body

FAR_FUTURE = datetime.now(UTC) + timedelta(days=3650)
TIMED_OUT = datetime.now(UTC) + ANNOUNCEMENT_TIMEOUT + timedelta(days=1)
BOUNDARY = "scenario-boundary"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
NUMBER_OF_STUDY_RELATED_INSTANCES = "00201208"
MODALITIES_IN_STUDY = "00080061"
NUMBER_OF_SERIES_RELATED_INSTANCES = "00201209"
SOP_INSTANCE_UID = "00080018"
FAILURE_REASON = "00081197"
FAILED_SOP_SEQUENCE = "00081198"
RACE_ITERATIONS = 8
# Seconds the STORE is sent after the DELETE (negative: before it), so that either may commit first.
STORE_DELAYS = (-0.2, -0.1, -0.05, 0.0, 0.02, 0.05, 0.1, 0.2)
DUPLICATE_ITERATIONS = 5
READER_ITERATIONS = 4
PER_PROCESS = pytest.mark.parametrize("workers", [1, 2], ids=["1-process", "2-processes"])
PROBE_PATH = "/connection-probe/"  # no route has it: a 404 that only the local host's access log records
_ACCESS_LINE = re.compile(r"\[(?P<pid>\d+)\] local_host\.access: (?P<method>[A-Z]+) (?P<path>\S+) \d{3} ")


@pytest.fixture
def own_env() -> dict[str, str]:
    """Settings naming containers and tables of this test's own."""
    suffix = uuid.uuid4().hex[:10]
    return {"DICOMWEB_BLOB_CONTAINER": f"scn-{suffix}", "DICOMWEB_METADATA_CONTAINER": f"scnm-{suffix}",
            "DICOMWEB_TABLE_PREFIX": f"scn{suffix}"}


@pytest.fixture
async def own_storage(own_env: dict[str, str], storage_env: dict[str, str]) -> AsyncIterator[Storage]:
    """The same storage as the test's server, for the checker and direct reads."""
    opened = await open_storage(Settings.from_environment({**storage_env, **own_env}))
    yield opened
    await opened.close()


@pytest.fixture
def workers() -> int:
    """Worker processes of the test's server (PER_PROCESS runs a test with 1 and with 2)."""
    return 1


@pytest.fixture
def service(start_app_process, own_env: dict[str, str], workers: int) -> str:
    """A server on the test's own storage, with `workers` processes."""
    return start_app_process({**own_env, WORKERS_VARIABLE: str(workers)}).base_url


@pytest.fixture
async def clients(service: str, workers: int, tmp_path: Path) -> AsyncIterator[Clients]:
    """Opens clients of `service` on chosen worker processes (read from its log, which start_app_process writes)."""
    [log] = tmp_path.glob("local_host-*.log")
    opened = Clients(service, AccessLog(log), workers)
    yield opened
    await opened.aclose()


class AccessLog:
    """The server's output, read as it grows: the process id of each request in the access log."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self.requests: list[tuple[int, str, str]] = []  # (pid, method, path)

    def _read(self) -> None:
        with self._path.open("rb") as file:
            file.seek(self._offset)
            text = file.read()
        complete = text.rfind(b"\n") + 1
        self._offset += complete
        for match in _ACCESS_LINE.finditer(text[:complete].decode("utf-8", errors="replace")):
            self.requests.append((int(match["pid"]), match["method"], match["path"]))

    async def pid_of(self, path: str) -> int:
        """The process that served the (unique) ``path``; the line may come a moment after the response."""
        deadline = time.monotonic() + 30
        while True:
            self._read()
            found = [pid for pid, _, logged in self.requests if logged == path]
            if found:
                return found[0]
            assert time.monotonic() < deadline, f"no access-log line for {path}"
            await asyncio.sleep(0.01)

    def pids(self, method: str, path: str) -> Counter[int]:
        """How many requests each process served of ``method`` ``path`` (logged so far)."""
        self._read()
        return Counter(pid for pid, logged_method, logged in self.requests if (logged_method, logged) == (method, path))


class Clients:
    """HTTP clients of one server with one connection each, so each stays with the worker process that accepted it."""

    def __init__(self, base_url: str, log: AccessLog, workers: int) -> None:
        self.log = log
        self._base_url = base_url
        self._workers = workers
        self._open: list[httpx.AsyncClient] = []

    async def spread(self, count: int) -> list[httpx.AsyncClient]:
        """``count`` clients on the server's processes in turn (with 2 processes, neighbours are in different ones).

        The kernel gives a new connection to whichever worker accepts it first: open and probe connections until
        each process has its share. A probe right before a race also rules out a keep-alive connection closed
        (after 5 s idle) and opened again elsewhere.
        """
        share = -(-count // self._workers)
        by_process: dict[int, list[httpx.AsyncClient]] = {}
        deadline = time.monotonic() + 60
        while sum(len(kept) for kept in by_process.values()) < count:
            assert time.monotonic() < deadline, f"not {count} connections over {self._workers} processes: {by_process}"
            client = httpx.AsyncClient(base_url=self._base_url, timeout=300,
                                       limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))
            probe = PROBE_PATH + uuid.uuid4().hex
            assert (await client.get(probe)).status_code == 404
            kept = by_process.setdefault(await self.log.pid_of(probe), [])
            if len(by_process) > self._workers:
                raise AssertionError(f"more processes than {self._workers} served: {sorted(by_process)}")
            if len(kept) < share:
                kept.append(client)
                self._open.append(client)
            else:
                await client.aclose()
        rounds = sorted(by_process.values(), key=len, reverse=True)  # the process with the most comes first
        return [rounds[i % len(rounds)].pop() for i in range(count)]

    async def aclose(self) -> None:
        """Close every client handed out."""
        for client in self._open:
            await client.aclose()
        self._open.clear()

    def assert_writes_in_every_process(self, method: str, path: str) -> None:
        """The access log shows ``method`` ``path`` served by as many processes as the server has."""
        served = self.log.pids(method, path)
        assert len(served) == self._workers, f"{method} {path} by process: {dict(served)}"


async def _findings(storage: Storage) -> list[str]:
    await run_cleanup(storage, now=FAR_FUTURE)
    return [str(finding) for finding in await check_consistency(storage)]


async def _store(client: httpx.AsyncClient, parts: list[bytes], *, method: str = "POST") -> httpx.Response:
    return await client.request(method, "/v2/studies", content=multipart_body(parts, BOUNDARY),
                                headers={"Content-Type": MULTIPART, "Accept": DICOM_JSON})


async def _json(client: httpx.AsyncClient, path: str) -> list[dict]:
    response = await client.get(path, headers={"Accept": DICOM_JSON})
    assert response.status_code in (200, 204), response.text
    return response.json() if response.status_code == 200 else []


# Idle connections are dropped before the server's keep-alive timeout (uvicorn's 5 s), so that a request is never
# sent on a connection the server is closing at that moment (httpx's default expiry is the same 5 s).
KEEPALIVE = httpx.Limits(keepalive_expiry=2)


def _client(base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, timeout=300, limits=KEEPALIVE)


@PER_PROCESS
async def test_sixteen_clients_store_into_a_study_while_a_series_is_deleted(
    service: str, clients: Clients, own_storage: Storage
) -> None:
    study, doomed = generate_uid(), generate_uid()
    kept_series = [generate_uid() for _ in range(5)]
    modality = {kept_series[i]: ("CT", "MR", "CT", "OT", "CT")[i] for i in range(5)}
    doomed_parts = [make_instance(study=study, series=doomed, Modality="SR") for _ in range(30)]
    # 200 instances by 16 clients, 4 instances a request; clients share series.
    planned = [(kept_series[i % 5], generate_uid()) for i in range(200)]
    per_client = [planned[i::16] for i in range(16)]
    async with _client(service) as client:
        assert (await _store(client, doomed_parts)).status_code == 200
        writers = await clients.spread(16)  # with 2 processes: 8 clients in each

        async def store(writer: httpx.AsyncClient, items: list[tuple[str, str]]) -> list[int]:
            statuses = []
            for start in range(0, len(items), 4):
                parts = [make_instance(study=study, series=s, sop=sop, Modality=modality[s])
                         for s, sop in items[start:start + 4]]
                statuses.append((await _store(writer, parts)).status_code)
            return statuses

        async def delete() -> int:
            await asyncio.sleep(0.3)  # into the middle of the stores
            return (await client.delete(f"/v2/studies/{study}/series/{doomed}")).status_code

        stores = (store(writer, items) for writer, items in zip(writers, per_client, strict=True))
        *stored, deleted = await asyncio.gather(*stores, delete())
        assert {status for statuses in stored for status in statuses} == {200}
        assert deleted == 204
        clients.assert_writes_in_every_process("POST", "/v2/studies")

        [found] = await _json(client, f"/v2/studies?StudyInstanceUID={study}")
        assert found[NUMBER_OF_STUDY_RELATED_INSTANCES]["Value"] == [200]
        assert sorted(found[MODALITIES_IN_STUDY]["Value"]) == ["CT", "MR", "OT"]
        series = {s["0020000E"]["Value"][0]: s[NUMBER_OF_SERIES_RELATED_INSTANCES]["Value"][0]
                  for s in await _json(client, f"/v2/studies/{study}/series")}
        assert series == dict(Counter(s for s, _ in planned))
        assert await _json(client, "/v2/studies?ModalitiesInStudy=SR") == []
        for uid in kept_series:
            metadata = await _json(client, f"/v2/studies/{study}/series/{uid}/metadata")
            assert sorted(d[SOP_INSTANCE_UID]["Value"][0] for d in metadata) == sorted(
                sop for s, sop in planned if s == uid)
        assert (await client.get(f"/v2/studies/{study}/series/{doomed}/metadata")).status_code == 404
    row = await own_storage.studies.get_entity(study, STUDY_ROW)
    assert (row["InstanceCount"], row["SeriesCount"]) == (200, 5)
    await sequence_pending(own_storage, max_changes=10_000)
    feed = await entries_after(own_storage, 0, 10_000)
    assert [e.sequence for e in feed] == list(range(1, len(feed) + 1))
    actions = Counter((e.action, e.series == doomed) for e in feed if e.study == study)
    assert actions == {(ChangeAction.CREATE, True): 30, (ChangeAction.CREATE, False): 200,
                       (ChangeAction.DELETE, True): 30}
    assert await _findings(own_storage) == []


@PER_PROCESS
async def test_same_instance_stored_by_two_clients_at_once_is_stored_once(
    service: str, clients: Clients, own_storage: Storage
) -> None:
    for _ in range(DUPLICATE_ITERATIONS):
        study, series, sop = generate_uid(), generate_uid(), generate_uid()
        data = make_instance(study=study, series=series, sop=sop, rows=128, columns=128)
        first, second = await clients.spread(2)  # with 2 processes: one in each
        responses = await asyncio.gather(_store(first, [data]), _store(second, [data]))
        assert sorted(r.status_code for r in responses) == [200, 409]
        [failed] = [r for r in responses if r.status_code == 409]
        assert failed.json()[FAILED_SOP_SEQUENCE]["Value"][0][FAILURE_REASON]["Value"][0] in (45070, 45071)
        blobs = [b.name async for b in own_storage.files.list_blobs(name_starts_with=study)]
        assert len(blobs) == 1
        rows = [e async for e in own_storage.studies.query_entities(
            "PartitionKey eq @pk and RowKey ge 'instance|' and RowKey lt 'instance}'", parameters={"pk": study})]
        assert len(rows) == 1
    clients.assert_writes_in_every_process("POST", "/v2/studies")
    print(f"\nsame instance stored twice at once: {DUPLICATE_ITERATIONS} iterations")
    assert await _findings(own_storage) == []


@PER_PROCESS
async def test_store_racing_a_delete_of_its_study_ends_in_one_of_the_two_orders(
    service: str, clients: Clients, own_storage: Storage
) -> None:
    outcomes: Counter[str] = Counter()
    async with _client(service) as client:
        for iteration in range(RACE_ITERATIONS):
            study, patient = generate_uid(), f"RACE-{iteration}-{uuid.uuid4().hex[:6]}"
            old = [make_instance(study=study, PatientID=patient) for _ in range(3)]
            assert (await _store(client, old)).status_code == 200
            new_sop = generate_uid()
            new = make_instance(study=study, sop=new_sop, PatientID=patient)

            storer, deleter = await clients.spread(2)  # with 2 processes: one in each

            delay = STORE_DELAYS[iteration % len(STORE_DELAYS)]  # vary who goes first

            async def store_later() -> int:
                await asyncio.sleep(max(0.0, delay))
                return (await _store(storer, [new])).status_code

            async def delete_later() -> httpx.Response:
                await asyncio.sleep(max(0.0, -delay))
                return await deleter.delete(f"/v2/studies/{study}")

            stored, deleted = await asyncio.gather(store_later(), delete_later())
            assert (stored, deleted.status_code) == (200, 204)
            found = await _json(client, f"/v2/studies?PatientID={patient}")
            listed = await _json(client, "/v2/studies?limit=200")
            metadata = await client.get(f"/v2/studies/{study}/metadata", headers={"Accept": DICOM_JSON})
            if found:  # the delete, then the store: the study holds the new instance only
                outcomes["delete then store"] += 1
                assert found[0][NUMBER_OF_STUDY_RELATED_INSTANCES]["Value"] == [1]
                assert study in {s["0020000D"]["Value"][0] for s in listed}
                assert [d[SOP_INSTANCE_UID]["Value"][0] for d in metadata.json()] == [new_sop]
            else:  # the store, then the delete: nothing is left
                outcomes["store then delete"] += 1
                assert metadata.status_code == 404
                assert study not in {s["0020000D"]["Value"][0] for s in listed}
                assert await _json(client, f"/v2/instances?SOPInstanceUID={new_sop}") == []
    clients.assert_writes_in_every_process("POST", "/v2/studies")
    print(f"\nstore racing delete of its study: {RACE_ITERATIONS} iterations, {dict(outcomes)}")
    assert await _findings(own_storage) == []


@PER_PROCESS
async def test_reader_during_an_upsert_gets_the_old_or_the_new_file_whole(
    service: str, clients: Clients, own_storage: Storage
) -> None:
    seen: Counter[str] = Counter()
    async with _client(service) as client:
        for _ in range(READER_ITERATIONS):
            study, series, sop = generate_uid(), generate_uid(), generate_uid()
            old = make_instance(study=study, series=series, sop=sop, rows=512, columns=512, StudyDescription="old")
            new = make_instance(study=study, series=series, sop=sop, rows=512, columns=512, StudyDescription="new")
            assert (await _store(client, [old])).status_code == 200
            url = f"/v2/studies/{study}/series/{series}/instances/{sop}"

            upserted = asyncio.Event()
            *readers, upserter = await clients.spread(5)  # with 2 processes: readers in both

            async def read(reader: httpx.AsyncClient = client) -> bytes:
                response = await reader.get(url, headers={"Accept": "application/dicom; transfer-syntax=*"})
                assert response.status_code == 200
                return response.content

            async def read_until_upserted(reader: httpx.AsyncClient) -> list[bytes]:
                bodies = []
                while not upserted.is_set():
                    bodies.append(await read(reader))
                return bodies

            async def upsert() -> int:
                status = (await _store(upserter, [new], method="PUT")).status_code
                upserted.set()
                return status

            *bodies, status = await asyncio.gather(*(read_until_upserted(reader) for reader in readers), upsert())
            assert status == 200
            for body in (b for reader in bodies for b in reader):
                assert body in (old, new)
                seen["old" if body == old else "new"] += 1
            assert await read() == new
    print(f"\nreaders during an upsert: {READER_ITERATIONS} iterations, {dict(seen)}")
    assert await _findings(own_storage) == []


async def test_server_killed_mid_stow_leaves_nothing_half_stored(
    start_app_process, own_env: dict[str, str], own_storage: Storage
) -> None:
    victim = start_app_process({**own_env, WORKERS_VARIABLE: "1"})  # SIGKILL ends the process that serves
    observer = start_app_process(own_env)
    study = generate_uid()
    parts = {str(sop): make_instance(study=study, sop=sop, rows=256, columns=256)
             for sop in (generate_uid() for _ in range(40))}
    body = multipart_body(list(parts.values()), BOUNDARY)
    chunk = 64 * 1024

    async def slow_body() -> AsyncIterator[bytes]:
        for start in range(0, len(body), chunk):
            yield body[start:start + chunk]
            await asyncio.sleep(0.02)

    async with _client(victim.base_url) as sender, _client(observer.base_url) as client:
        request = asyncio.create_task(sender.post("/v2/studies", content=slow_body(),
                                                  headers={"Content-Type": MULTIPART, "Accept": DICOM_JSON}))
        for _ in range(600):
            found = await _json(client, f"/v2/studies?StudyInstanceUID={study}")
            if found and found[0][NUMBER_OF_STUDY_RELATED_INSTANCES]["Value"][0] >= 3:
                break
            await asyncio.sleep(0.05)
        os.kill(victim.process.pid, signal.SIGKILL)
        victim.process.wait(timeout=30)
        with pytest.raises(httpx.HTTPError):
            await request
        # Whatever is visible is whole: every listed instance retrieves byte-exact, and the counts agree.
        instances = await _json(client, f"/v2/studies/{study}/instances")
        visible = {d[SOP_INSTANCE_UID]["Value"][0] for d in instances}
        [found] = await _json(client, f"/v2/studies?StudyInstanceUID={study}")
        assert found[NUMBER_OF_STUDY_RELATED_INSTANCES]["Value"] == [len(visible)]
        for instance in instances:
            sop = instance[SOP_INSTANCE_UID]["Value"][0]
            series = instance["0020000E"]["Value"][0]
            response = await client.get(f"/v2/studies/{study}/series/{series}/instances/{sop}",
                                        headers={"Accept": "application/dicom; transfer-syntax=*"})
            assert response.content == parts[sop]
        metadata = await client.get(f"/v2/studies/{study}/metadata", headers={"Accept": DICOM_JSON})
        assert {d[SOP_INSTANCE_UID]["Value"][0] for d in metadata.json()} == visible
    uploaded = {b.name.split("/")[2] async for b in own_storage.files.list_blobs(name_starts_with=study)}
    print(f"\nkilled mid-STOW: {len(visible)} of {len(parts)} instances committed, {len(uploaded)} uploaded")
    before_cleanup = [str(f) for f in await check_consistency(own_storage)]
    assert before_cleanup == []  # uploads without a commit are covered by the request's intent
    # Once the intent timed out, the sequencer retires it and hands the uncommitted versions to the cleanup.
    await sequence_pending(own_storage, clock=lambda: TIMED_OUT)
    assert await _findings(own_storage) == []
    left = {b.name.split("/")[2] async for b in own_storage.files.list_blobs(name_starts_with=study)}
    assert left == visible

