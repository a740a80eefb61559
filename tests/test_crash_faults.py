"""Faults at every step beyond the store/delete kill matrix (tests/test_crash_matrix.py).

- Non-kill faults: a store into a new study whose k-th storage request gets a 503 ServerBusy, a connection
  reset, or a reset after the write landed (the answer lost), for every k: the client gets 200, or 503 with
  Retry-After, never another 5xx; after maintenance the instance is wholly there (always, when answered 200)
  or wholly absent, in the change feed once if there, and the checker finds nothing.
- The change feed's sequencer and the blob cleanup killed (SIGKILL, in a process of their own) right before
  their k-th storage request, for every k: a second run finishes the work; every change is in the feed exactly
  once with consecutive numbers, every cleanup entry is processed, nothing referenced is deleted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid

from dicom_core.changefeed.feed_reads import entries_after
from dicom_core.changefeed.sequencer import sequence_pending
from dicom_core.index.outbox import PENDING_PARTITION, ChangeAction
from dicom_core.index.reads import instance_rows, stored_instance
from dicom_core.maintenance.blob_cleanup import all_entries, run_cleanup
from dicom_core.maintenance.consistency import check_consistency
from dicom_core.storage.blobs import instance_blob_name
from dicom_core.storage.clients import Storage
from dicom_core.wire.media_types import DICOM_JSON
from tests.conftest import AppProcess
from tests.factories import make_instance, multipart_body
from tests.faults.proxy import Action, Fault, StorageFaultProxy

REPO_ROOT = Path(__file__).resolve().parent.parent
BOUNDARY = "faults-boundary"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
AS_STORED = "application/dicom; transfer-syntax=*"
FAR_FUTURE = datetime.now(UTC) + timedelta(days=3650)
QUIET_SECONDS = 1.0
FULL = os.environ.get("CRASH_MATRIX", "") == "full"  # `make test-crash`: every step; `make test`: every third
# A maintenance step in a process of its own, started when the test writes a line (after arming the kill).
STEP_SCRIPT = """
import asyncio, sys
from datetime import datetime, timedelta, UTC
from dicom_core.settings import Settings
from dicom_core.storage.clients import open_storage
from dicom_core.changefeed.sequencer import sequence_pending
from dicom_core.maintenance.blob_cleanup import run_cleanup

async def main():
    storage = await open_storage(Settings.from_environment())
    sys.stdin.readline()
    if sys.argv[1] == "sequencer":
        await sequence_pending(storage)
    else:
        await run_cleanup(storage, now=datetime.now(UTC) + timedelta(days=3650))
    await storage.close()

asyncio.run(main())
"""


def _steps(recording: list[tuple[str, str, str]]) -> list[tuple[int, tuple[str, str, str], int]]:
    """(k, request, its occurrence among requests of its service and method) for the steps this run strikes."""
    chosen = set(range(1, len(recording) + 1)) if FULL else {*range(1, len(recording) + 1, 3), len(recording)}
    return [(k, recording[k - 1], sum(1 for s, m, _ in recording[:k] if (s, m) == recording[k - 1][:2]))
            for k in sorted(chosen)]


def _env(prefix: str, connection_string: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:10]
    return {"DICOMWEB_BLOB_CONTAINER": f"{prefix}-{suffix}", "DICOMWEB_METADATA_CONTAINER": f"{prefix}m-{suffix}",
            "DICOMWEB_TABLE_PREFIX": f"{prefix}{suffix}", "DICOMWEB_STORAGE_CONNECTION_STRING": connection_string}



def _stow(base_url: str, parts: list[bytes], method: str = "POST") -> httpx.Response:
    return httpx.request(method, f"{base_url}/v2/studies", content=multipart_body(parts, BOUNDARY),
                         headers={"Content-Type": MULTIPART, "Accept": DICOM_JSON}, timeout=120)


@pytest.mark.parametrize("action", [Action.SERVER_BUSY, Action.RESET, Action.RESPONSE_LOST],
                         ids=["server-busy", "reset", "response-lost"])
async def test_a_fault_at_any_step_of_a_store_leaves_it_whole_or_absent_and_never_a_500(
    action: Action, start_app_process: Callable[[dict[str, str]], AppProcess],
    storage_fault_proxy: StorageFaultProxy, storage_of,
) -> None:
    env = _env("flt", storage_fault_proxy.connection_string)
    server = start_app_process(env).base_url
    storage = await storage_of(env)
    assert httpx.get(f"{server}/v2/studies", params={"StudyInstanceUID": "1.2.3"}, timeout=60).status_code == 204
    assert _stow(server, [make_instance()]).status_code == 200  # the first store creates what later ones find
    time.sleep(QUIET_SECONDS)
    mark = len(storage_fault_proxy.requests)
    assert _stow(server, [make_instance()]).status_code == 200
    time.sleep(QUIET_SECONDS)
    recording = storage_fault_proxy.requests[mark:]
    outcomes, unfired = [], []
    for k, (service, method, target), occurrence in _steps(recording):
        study, series, sop = str(generate_uid()), str(generate_uid()), str(generate_uid())
        data = make_instance(study=study, series=series, sop=sop)
        fault = storage_fault_proxy.inject(Fault(service, method, "", action, k=occurrence))
        answer = _stow(server, [data])
        time.sleep(QUIET_SECONDS)
        storage_fault_proxy.clear()
        where = f"{action.value} at request {k} ({method} {target[:100]}): answered {answer.status_code}"
        if not fault.fired.is_set():
            unfired.append(where)  # concurrent requests: this store made one request fewer than the recorded one
        assert answer.status_code in (200, 503), where + answer.text[:300]
        assert answer.status_code == 200 or "retry-after" in answer.headers, where
        await sequence_pending(storage)
        await run_cleanup(storage, now=FAR_FUTURE)
        await sequence_pending(storage)
        retrieved = httpx.get(f"{server}/v2/studies/{study}/series/{series}/instances/{sop}",
                              headers={"Accept": AS_STORED}, timeout=60)
        found = httpx.get(f"{server}/v2/instances", params={"SOPInstanceUID": sop}, headers={"Accept": DICOM_JSON},
                          timeout=60)
        in_feed = [e.action for e in await entries_after(storage, 0, 10_000) if e.instance == sop]
        present = (retrieved.status_code == 200 and retrieved.content == data, found.status_code == 200,
                   in_feed == [ChangeAction.CREATE])
        absent = (retrieved.status_code == 404, found.status_code == 204, in_feed == [])
        assert all(present) or (answer.status_code != 200 and all(absent)), f"{where}: {present} {absent}"
        outcomes.append(answer.status_code)
    assert [str(f) for f in await check_consistency(storage)] == []
    assert await all_entries(storage) == []
    assert len(unfired) <= 1, unfired
    print(f"{action.value}: {len(recording)} steps, answers {outcomes}")


async def _run_killed(step: str, env: dict[str, str], proxy: StorageFaultProxy,
                      kill_at: tuple[str, str, int] | None) -> list[tuple[str, str, str]]:
    """Run a maintenance step in a process of its own through the proxy, killed before the given request."""
    process = subprocess.Popen([sys.executable, "-c", STEP_SCRIPT, step], cwd=REPO_ROOT, stdin=subprocess.PIPE,
                               env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.1)
    kill = None
    if kill_at is not None:
        service, method, occurrence = kill_at
        kill = proxy.inject(Fault(service, method, "", Action.KILL, k=occurrence, pid=process.pid))
    mark = len(proxy.requests)
    assert process.stdin is not None
    try:
        process.stdin.write(b"go\n")
        process.stdin.flush()
    except BrokenPipeError:
        pass
    code = process.wait(timeout=120)
    requests = proxy.requests[mark:]
    proxy.clear()
    if kill is None:
        assert code == 0, process.stderr.read() if process.stderr else ""
    else:
        assert kill.fired.is_set() and code == -9, f"{step}: not killed at {kill_at} ({code})"
    return requests


async def _sequencer_setup(storage: Storage, stow_parts) -> None:
    """Three stores (four instances) announced and committed, none sequenced."""
    for count in (1, 1, 2):
        study, series = str(generate_uid()), str(generate_uid())
        parts = [make_instance(study=study, series=series) for _ in range(count)]
        assert (await stow_parts(storage, parts)).status == 200


async def _cleanup_setup(storage: Storage, stow_parts) -> tuple[str, str, bytes]:
    """A store and an upsert of one instance: cleanup entries for the replaced version and the uploads."""
    study, series, sop = str(generate_uid()), str(generate_uid()), str(generate_uid())
    assert (await stow_parts(storage, [make_instance(study=study, series=series, sop=sop)])).status == 200
    newer = make_instance(study=study, series=series, sop=sop, PatientName="Upserted^Again")
    assert (await stow_parts(storage, [newer], upsert=True)).status == 200
    return study, series, newer


@pytest.mark.parametrize("step", ["sequencer", "cleanup"])
async def test_a_maintenance_step_killed_at_any_request_is_finished_by_the_next_run(
    step: str, storage_fault_proxy: StorageFaultProxy, storage_of, stow_parts,
) -> None:
    async def prepared() -> tuple[dict[str, str], Storage, tuple[str, str, bytes] | None]:
        env = _env("kls", storage_fault_proxy.connection_string)
        storage = await storage_of(env)
        if step == "sequencer":
            await _sequencer_setup(storage, stow_parts)
            return env, storage, None
        return env, storage, await _cleanup_setup(storage, stow_parts)

    env, _, _ = await prepared()
    recording = await _run_killed(step, env, storage_fault_proxy, None)
    for k, (service, method, target), occurrence in _steps(recording):
        env, storage, upserted = await prepared()
        await _run_killed(step, env, storage_fault_proxy, (service, method, occurrence))
        where = f"{step} killed before request {k} of {len(recording)} ({method} {target[:100]})"
        if upserted is None:
            await sequence_pending(storage)
            feed = await entries_after(storage, 0, 1000)
            assert [e.sequence for e in feed] == list(range(1, len(feed) + 1)), where
            assert len(feed) == len({(e.instance, e.version) for e in feed}) == 4, where
            pending = [e async for e in storage.changes.query_entities(
                "PartitionKey eq @pk", parameters={"pk": PENDING_PARTITION})]
            assert pending == [], where
        else:
            study, series, newer = upserted
            await run_cleanup(storage, now=FAR_FUTURE)
            [row] = await instance_rows(storage, study, series)
            blob = storage.files.get_blob_client(instance_blob_name(stored_instance(study, row)))
            assert await (await blob.download_blob()).readall() == newer, where
            assert await all_entries(storage) == [], where
        assert [str(f) for f in await check_consistency(storage)] == [], where
    print(f"{step}: {len(recording)} steps")
