"""The storage fault proxy: requests pass unchanged, and each kind of fault strikes the k-th matching one only."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from azure.core.exceptions import AzureError, HttpResponseError
from azure.data.tables import TableServiceClient
from azure.storage.blob import ContainerClient

from tests.faults.proxy import Action, Fault, StorageFaultProxy

NO_RETRIES = {"retry_total": 0, "connection_timeout": 5, "read_timeout": 5}
DCM_PUT = r"\.dcm(\?|$)"


@pytest.fixture
def containers(azurite, storage_fault_proxy: StorageFaultProxy) -> Iterator[tuple[ContainerClient, ContainerClient]]:
    """A new container, through the proxy (no retries: every fault shows) and directly."""
    name = f"proxy-{uuid.uuid4().hex[:10]}"
    direct = ContainerClient.from_connection_string(azurite.connection_string, name)
    direct.create_container()
    proxied = ContainerClient.from_connection_string(storage_fault_proxy.connection_string, name, **NO_RETRIES)
    yield proxied, direct
    direct.delete_container()


def _exists(container: ContainerClient, name: str) -> bool:
    return container.get_blob_client(name).exists()


def test_requests_pass_through_unchanged(containers, storage_fault_proxy: StorageFaultProxy) -> None:
    proxied, direct = containers
    data = bytes(range(256)) * 4096  # 1 MiB
    proxied.upload_blob("a/1.dcm", data)
    assert direct.download_blob("a/1.dcm").readall() == data
    assert proxied.download_blob("a/1.dcm").readall() == data
    assert ("blob", "PUT", f"/devstoreaccount1/{proxied.container_name}/a/1.dcm") in storage_fault_proxy.requests


def test_server_busy_answers_the_kth_matching_request_with_503_server_busy(
    containers, storage_fault_proxy: StorageFaultProxy
) -> None:
    proxied, direct = containers
    busy = storage_fault_proxy.inject(Fault("blob", "PUT", DCM_PUT, Action.SERVER_BUSY, k=2))
    proxied.upload_blob("b/1.dcm", b"one")
    proxied.upload_blob("b/1.json", b"{}")  # not a matching request: not counted
    with pytest.raises(HttpResponseError) as raised:
        proxied.upload_blob("b/2.dcm", b"two")
    proxied.upload_blob("b/3.dcm", b"three")  # a fault strikes once
    assert (raised.value.status_code, raised.value.error_code) == (503, "ServerBusy")
    assert busy.fired.is_set()
    assert [_exists(direct, f"b/{n}.dcm") for n in (1, 2, 3)] == [True, False, True]


def test_reset_drops_the_connection_before_forwarding(containers, storage_fault_proxy: StorageFaultProxy) -> None:
    proxied, direct = containers
    storage_fault_proxy.inject(Fault("blob", "PUT", DCM_PUT, Action.RESET))
    with pytest.raises(AzureError):
        proxied.upload_blob("c/1.dcm", b"one")
    assert not _exists(direct, "c/1.dcm")


def test_response_lost_forwards_the_write_then_drops_the_connection(
    containers, storage_fault_proxy: StorageFaultProxy
) -> None:
    proxied, direct = containers
    storage_fault_proxy.inject(Fault("blob", "PUT", DCM_PUT, Action.RESPONSE_LOST))
    with pytest.raises(AzureError):
        proxied.upload_blob("d/1.dcm", b"landed")
    assert direct.download_blob("d/1.dcm").readall() == b"landed"


def test_timeout_holds_the_request_until_the_client_gives_up(
    containers, storage_fault_proxy: StorageFaultProxy
) -> None:
    proxied, direct = containers
    storage_fault_proxy.inject(Fault("blob", "PUT", DCM_PUT, Action.TIMEOUT))
    started = time.monotonic()
    with pytest.raises(AzureError):
        proxied.upload_blob("e/1.dcm", b"held", read_timeout=2)
    assert 1.5 < time.monotonic() - started < 30
    assert not _exists(direct, "e/1.dcm")


def test_kill_stops_the_process_before_forwarding(containers, storage_fault_proxy: StorageFaultProxy) -> None:
    proxied, direct = containers
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        storage_fault_proxy.inject(Fault("blob", "PUT", DCM_PUT, Action.KILL, pid=victim.pid))
        with pytest.raises(AzureError):
            proxied.upload_blob("f/1.dcm", b"never")
        assert victim.wait(timeout=10) == -9  # SIGKILL
    finally:
        victim.kill()
    assert not _exists(direct, "f/1.dcm")


def test_a_fault_can_match_the_tables_a_batch_writes(azurite, storage_fault_proxy: StorageFaultProxy) -> None:
    prefix = f"proxy{uuid.uuid4().hex[:10]}"
    service = TableServiceClient.from_connection_string(storage_fault_proxy.connection_string, **NO_RETRIES)
    studies, other = (service.create_table(f"{prefix}{suffix}") for suffix in ("Studies", "Other"))
    busy = storage_fault_proxy.inject(Fault("table", "POST", r"/\$batch$", Action.SERVER_BUSY, body="Studies"))
    try:
        other.submit_transaction([("upsert", {"PartitionKey": "p", "RowKey": "r"})])  # another table's batch
        with pytest.raises(HttpResponseError) as raised:
            studies.submit_transaction([("upsert", {"PartitionKey": "p", "RowKey": "r"})])
        assert (raised.value.status_code, raised.value.error_code) == (503, "ServerBusy")
        assert busy.fired.is_set()
        assert [e["RowKey"] for e in other.list_entities()] == ["r"]
        assert list(studies.list_entities()) == []
    finally:
        for table in (studies, other):
            service.delete_table(table.table_name)


def test_throttling_strikes_about_its_rate_of_requests_with_its_actions(
    containers, storage_fault_proxy: StorageFaultProxy
) -> None:
    proxied, _ = containers
    storage_fault_proxy.throttle(0.25, (Action.SERVER_BUSY,), seed=7)
    failed = 0
    for n in range(80):
        try:
            proxied.upload_blob(f"t/{n}.dcm", b"x")
        except HttpResponseError as exc:
            assert (exc.status_code, exc.error_code) == (503, "ServerBusy")
            failed += 1
    storage_fault_proxy.throttle(0)
    proxied.upload_blob("t/last.dcm", b"x")
    assert failed == len(storage_fault_proxy.throttled) and 8 <= failed <= 35
