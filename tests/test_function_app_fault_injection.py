"""Storage faults injected into one storage request of a STOW (tests/faults/proxy.py), over real HTTP.

The server under test reaches Azurite through the fault proxy; the test's own reads go to Azurite directly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydicom.uid import generate_uid

from dicom_core.changefeed.sequencer import sequence_pending
from dicom_core.index.outbox import ANNOUNCEMENT_TIMEOUT
from dicom_core.maintenance.blob_cleanup import run_cleanup
from dicom_core.maintenance.consistency import check_consistency
from dicom_core.settings import Settings
from dicom_core.storage.clients import Storage, open_storage
from dicom_core.wire.media_types import DICOM_JSON
from tests.conftest import REPO_ROOT, AppProcess
from tests.factories import make_instance, multipart_body
from tests.faults.proxy import Action, Fault, StorageFaultProxy

BOUNDARY = "fault-boundary"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
AS_STORED = "application/dicom; transfer-syntax=*"
SOP_INSTANCE_UID = "00080018"
NUMBER_OF_STUDY_RELATED_INSTANCES = "00201208"
FAR_FUTURE = datetime.now(UTC) + timedelta(days=3650)
TIMED_OUT = datetime.now(UTC) + ANNOUNCEMENT_TIMEOUT + timedelta(days=1)
STUDIES_BATCH = {"service": "table", "method": "POST", "path": r"/\$batch(\?|$)", "body": "Studies"}


@pytest.fixture
def own_env() -> dict[str, str]:
    """Containers and tables of the test's own."""
    suffix = uuid.uuid4().hex[:10]
    return {"DICOMWEB_BLOB_CONTAINER": f"flt-{suffix}", "DICOMWEB_METADATA_CONTAINER": f"fltm-{suffix}",
            "DICOMWEB_TABLE_PREFIX": f"flt{suffix}"}


@pytest.fixture
def proxied_env(own_env: dict[str, str], storage_fault_proxy: StorageFaultProxy) -> dict[str, str]:
    """Settings of a server whose storage requests pass through the fault proxy."""
    return {**own_env, "DICOMWEB_STORAGE_CONNECTION_STRING": storage_fault_proxy.connection_string,
            "AzureWebJobsStorage": storage_fault_proxy.connection_string}


@pytest.fixture
async def own_storage(own_env: dict[str, str], storage_env: dict[str, str]) -> AsyncIterator[Storage]:
    """The test's storage, directly (not through the proxy)."""
    opened = await open_storage(Settings.from_environment({**storage_env, **own_env}))
    yield opened
    await opened.close()


def _store(base_url: str, data: bytes) -> httpx.Response:
    return httpx.post(f"{base_url}/v2/studies", content=multipart_body([data], BOUNDARY),
                      headers={"Content-Type": MULTIPART, "Accept": DICOM_JSON}, timeout=120)


def _instances_of(base_url: str, study: str) -> list[str]:
    response = httpx.get(f"{base_url}/v2/studies/{study}/instances", headers={"Accept": DICOM_JSON}, timeout=60)
    assert response.status_code in (200, 204, 404), response.text
    return [d[SOP_INSTANCE_UID]["Value"][0] for d in response.json()] if response.status_code == 200 else []


async def test_stow_whose_batch_fails_once_with_server_busy_stores_the_instance_exactly(
    start_app_process: Callable[[dict[str, str]], AppProcess], proxied_env: dict[str, str],
    storage_fault_proxy: StorageFaultProxy, own_storage: Storage,
) -> None:
    server = start_app_process(proxied_env)
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    data = make_instance(study=study, series=series, sop=sop)
    busy = storage_fault_proxy.inject(Fault(**STUDIES_BATCH, action=Action.SERVER_BUSY))

    response = _store(server.base_url, data)

    assert response.status_code == 200, response.text
    assert busy.fired.is_set()  # the SDK retried the refused transaction
    retrieved = httpx.get(f"{server.base_url}/v2/studies/{study}/series/{series}/instances/{sop}",
                          headers={"Accept": AS_STORED}, timeout=60)
    assert retrieved.content == data
    assert _instances_of(server.base_url, study) == [sop]
    found = httpx.get(f"{server.base_url}/v2/studies?StudyInstanceUID={study}", timeout=60).json()
    assert found[0][NUMBER_OF_STUDY_RELATED_INSTANCES]["Value"] == [1]
    assert [str(f) for f in await check_consistency(own_storage)] == []


async def test_stow_killed_right_before_its_batch_is_invisible_and_left_to_the_cleanup(
    start_app_process: Callable[[dict[str, str]], AppProcess], proxied_env: dict[str, str],
    storage_fault_proxy: StorageFaultProxy, own_storage: Storage, own_env: dict[str, str],
    storage_env: dict[str, str],
) -> None:
    victim = start_app_process(proxied_env)
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    kill = storage_fault_proxy.inject(Fault(**STUDIES_BATCH, action=Action.KILL, pid=victim.process.pid))

    with pytest.raises(httpx.HTTPError):  # the server died with the request
        _store(victim.base_url, make_instance(study=study, series=series, sop=sop))
    assert kill.fired.is_set() and victim.process.wait(timeout=30) == -9

    restarted = start_app_process(proxied_env)
    assert httpx.get(f"{restarted.base_url}/v2/studies?StudyInstanceUID={study}", timeout=60).status_code == 204
    assert _instances_of(restarted.base_url, study) == []
    retrieved = httpx.get(f"{restarted.base_url}/v2/studies/{study}/series/{series}/instances/{sop}",
                          headers={"Accept": AS_STORED}, timeout=60)
    assert retrieved.status_code == 404
    # The checker, as an operator runs it: the uploaded blob is covered by the request's intent, so no finding.
    checker = subprocess.run([sys.executable, "-m", "dicom_core.maintenance.consistency"], cwd=REPO_ROOT,
                             env={**os.environ, **storage_env, **own_env}, capture_output=True, text=True,
                             timeout=120, check=False)
    assert (checker.returncode, checker.stdout.strip()) == (0, "consistent: no findings"), checker.stdout
    uploaded = [b.name async for b in own_storage.files.list_blobs(name_starts_with=study)]
    # Once the intent timed out, the sequencer hands its version to the cleanup, which removes what was uploaded.
    await sequence_pending(own_storage, clock=lambda: TIMED_OUT)
    await run_cleanup(own_storage, now=FAR_FUTURE)
    assert [b.name async for b in own_storage.files.list_blobs(name_starts_with=study)] == []
    assert [str(f) for f in await check_consistency(own_storage)] == []
    print(f"\nkilled before the $batch: {len(uploaded)} blob(s) uploaded, removed by the cleanup")
