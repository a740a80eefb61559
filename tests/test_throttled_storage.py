"""Throttled storage: writers and a delete while 10 % of storage requests fail with 503 ServerBusy or a reset.

The server's storage requests pass through the fault proxy (tests/faults/proxy.py), which strikes each with
probability 10 %. Clients may get 503 with Retry-After (retries exhausted), never 500; every instance whose
store was acknowledged is retrievable byte for byte, searchable and in its series metadata; counts are exact;
after maintenance the checker finds nothing. `make test` runs a reduced size; `make test-crash` the full one
(16 writers, 200 instances, a series of 30 deleted), with CRASH_MATRIX=full.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydicom.uid import generate_uid

from dicom_core.changefeed.feed_reads import entries_after
from dicom_core.changefeed.sequencer import sequence_pending
from dicom_core.index.outbox import ChangeAction
from dicom_core.index.reads import instance_rows
from dicom_core.index.rows import STUDY_ROW
from dicom_core.maintenance.blob_cleanup import run_cleanup
from dicom_core.maintenance.consistency import check_consistency
from dicom_core.maintenance.repair import run_repair
from dicom_core.settings import Settings
from dicom_core.storage.clients import Storage, open_storage
from dicom_core.wire.media_types import DICOM_JSON
from tests.factories import make_instance, multipart_body
from tests.faults.proxy import Action, StorageFaultProxy

FULL = os.environ.get("CRASH_MATRIX", "") == "full"  # as make test-crash sets it
WRITERS, INSTANCES, DOOMED = (16, 200, 30) if FULL else (8, 48, 8)
PER_REQUEST = 4
RATE = 0.10
FAR_FUTURE = datetime.now(UTC) + timedelta(days=3650)
BOUNDARY = "throttled-boundary"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_INSTANCE_UID = "00081155"
NUMBER_OF_STUDY_RELATED_INSTANCES = "00201208"
SOP_INSTANCE_UID = "00080018"


@pytest.fixture
def own_env() -> dict[str, str]:
    """Containers and tables of this test's own."""
    suffix = uuid.uuid4().hex[:10]
    return {"DICOMWEB_BLOB_CONTAINER": f"thr-{suffix}", "DICOMWEB_METADATA_CONTAINER": f"thrm-{suffix}",
            "DICOMWEB_TABLE_PREFIX": f"thr{suffix}"}


@pytest.fixture
async def own_storage(own_env: dict[str, str], storage_env: dict[str, str]) -> AsyncIterator[Storage]:
    """The test's storage, directly (not through the proxy): for maintenance, the checker and direct reads."""
    opened = await open_storage(Settings.from_environment({**storage_env, **own_env}))
    yield opened
    await opened.close()


def _acknowledged(response: httpx.Response) -> set[str]:
    """The SOP instance UIDs a STOW answer says were stored."""
    if response.status_code not in (200, 202):
        return set()
    return {item[REFERENCED_SOP_INSTANCE_UID]["Value"][0]
            for item in response.json().get(REFERENCED_SOP_SEQUENCE, {}).get("Value", [])}


def _unexpected(response: httpx.Response) -> str | None:
    """What is wrong with an answer under throttling: a 5xx other than 503 + Retry-After."""
    if response.status_code >= 500 and (response.status_code != 503 or "retry-after" not in response.headers):
        return f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text[:300]}"
    return None


async def test_writers_and_a_delete_on_throttled_storage_lose_nothing_acknowledged(
    start_app_process, own_env: dict[str, str], own_storage: Storage, storage_fault_proxy: StorageFaultProxy,
) -> None:
    server = start_app_process({**own_env, "DICOMWEB_STORAGE_CONNECTION_STRING":
                                storage_fault_proxy.connection_string}).base_url
    study, doomed = str(generate_uid()), str(generate_uid())
    kept_series = [str(generate_uid()) for _ in range(4)]
    files: dict[str, tuple[str, bytes]] = {}  # sop -> (series, file)
    for index in range(INSTANCES):
        series, sop = kept_series[index % 4], str(generate_uid())
        files[sop] = (series, make_instance(study=study, series=series, sop=sop, Modality="CT"))
    async with httpx.AsyncClient(base_url=server, timeout=300, limits=httpx.Limits(keepalive_expiry=2)) as client:
        doomed_parts = [make_instance(study=study, series=doomed, Modality="SR") for _ in range(DOOMED)]
        assert (await _stow(client, doomed_parts)).status_code == 200
        storage_fault_proxy.throttle(RATE, (Action.SERVER_BUSY, Action.RESET), seed=19)
        answers: list[httpx.Response] = []
        acknowledged: set[str] = set()
        sops = list(files)

        async def write(mine: list[str]) -> None:
            for start in range(0, len(mine), PER_REQUEST):
                response = await _stow(client, [files[sop][1] for sop in mine[start:start + PER_REQUEST]])
                answers.append(response)
                acknowledged.update(_acknowledged(response))

        async def delete() -> None:
            await asyncio.sleep(0.3)
            answers.append(await client.delete(f"/v2/studies/{study}/series/{doomed}"))

        await asyncio.gather(*(write(sops[i::WRITERS]) for i in range(WRITERS)), delete())
        storage_fault_proxy.throttle(0)
        struck = len(storage_fault_proxy.throttled)
        print(f"{struck} of {len(storage_fault_proxy.requests)} storage requests struck; answers "
              f"{sorted(r.status_code for r in answers)}")
        for response in answers:
            if response.status_code not in (200, 204):
                print(response.request.method, response.status_code, response.headers.get("retry-after"),
                      response.text[:600])
        assert struck > 0
        assert [problem for problem in map(_unexpected, answers) if problem] == []
        delete_answer = (await client.delete(f"/v2/studies/{study}/series/{doomed}")).status_code
        assert delete_answer in (204, 404)  # 404: the throttled delete had finished

        for sop in sorted(acknowledged):
            series, data = files[sop]
            got = await client.get(f"/v2/studies/{study}/series/{series}/instances/{sop}",
                                   headers={"Accept": "application/dicom; transfer-syntax=*"})
            assert got.status_code == 200 and data in got.content, sop
        found = await client.get(f"/v2/studies?StudyInstanceUID={study}", headers={"Accept": DICOM_JSON})
        stored_rows = {str(row["RowKey"]).split("|")[2] for series in kept_series
                       for row in await instance_rows(own_storage, study, series)}
        assert acknowledged <= stored_rows <= set(files)  # unacknowledged ones may have landed, whole
        [study_result] = found.json()
        assert study_result[NUMBER_OF_STUDY_RELATED_INSTANCES]["Value"] == [len(stored_rows)]
        for series in kept_series:
            metadata = await client.get(f"/v2/studies/{study}/series/{series}/metadata", headers={"Accept": DICOM_JSON})
            in_metadata = {d[SOP_INSTANCE_UID]["Value"][0] for d in metadata.json()} if metadata.status_code == 200 \
                else set()
            assert in_metadata == {sop for sop in stored_rows if files[sop][0] == series}
    row = await own_storage.studies.get_entity(study, STUDY_ROW)
    assert row["InstanceCount"] == len(stored_rows)
    await sequence_pending(own_storage)
    await run_cleanup(own_storage, now=FAR_FUTURE)
    # The repair timer, as maintenance runs it: a delete throttled after it removed the entries of a level it
    # expected to empty, while a store kept that level, answers 503 and leaves them to it.
    await run_repair(own_storage)
    creates = [e for e in await entries_after(own_storage, 0, 10_000)
               if e.study == study and e.action is ChangeAction.CREATE and e.series != doomed]
    assert sorted(e.instance for e in creates) == sorted(stored_rows)
    assert [str(finding) for finding in await check_consistency(own_storage)] == []


async def _stow(client: httpx.AsyncClient, parts: list[bytes]) -> httpx.Response:
    return await client.post("/v2/studies", content=multipart_body(parts, BOUNDARY),
                             headers={"Content-Type": MULTIPART, "Accept": DICOM_JSON})
