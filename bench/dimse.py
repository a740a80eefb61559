"""The DIMSE gateway's C-STORE over 1 and 8 associations against STOW-RS of the same CT-like files, interleaved.

The gateway (`python -m dimse_gateway`) runs beside the server on the same Azurite, tables and containers. The
SCU is DCMTK's storescu, one process per association, each sending its share of the files from disk (pynetdicom,
one association per thread, where storescu is not installed); STOW sends the same files in multipart batches with
as many requests in flight as associations. Each round gives the files new UIDs first (a new study), so both store
new instances. storescu rather than pynetdicom because the client shares the machine's CPU with the servers:
pynetdicom's SCU spent about 10 ms of CPU per C-STORE (polling threads, Python PDU encoding), the STOW client
(httpx) about 1 ms per instance, so a Python SCU slowed the gateway it measured; a modality is no Python program.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pynetdicom import AE, StoragePresentationContexts, _config

from .environment import ROOT, Azurite, _stop, _wait_for_port, free_port
from .report import Results, Row
from .stack import PREFIX, Stack
from .stow import Files, _stow

TARGET = 1.0
GATEWAY_AE = "DICOMWEB"
ASSOCIATIONS = (1, 8)


def gateway_log(azurite: Azurite, port: int) -> Path:
    """Where the gateway started on ``port`` writes its log."""
    return azurite.location / f"dimse-gateway-{port}.log"


def start_gateway(azurite: Azurite, prefix: str = PREFIX, *, extra_env: dict[str, str] | None = None,
                  log_level: str = "WARNING") -> tuple[subprocess.Popen[bytes], int]:
    """Start ``python -m dimse_gateway`` on a free port over ``azurite``'s storage under ``prefix``."""
    port = free_port()
    env = {
        **os.environ,
        "DICOMWEB_STORAGE_CONNECTION_STRING": azurite.connection_string,
        "DICOMWEB_TABLE_PREFIX": prefix,
        "DICOMWEB_BLOB_CONTAINER": f"{prefix}-files",
        "DICOMWEB_METADATA_CONTAINER": f"{prefix}-metadata",
        "DICOMWEB_DIMSE_HOST": "127.0.0.1",
        "DICOMWEB_DIMSE_MAX_ASSOCIATIONS": str(max(ASSOCIATIONS) * 2),
        **(extra_env or {}),
    }
    log = gateway_log(azurite, port)
    process = subprocess.Popen([sys.executable, "-m", "dimse_gateway", "--port", str(port), "--log-level", log_level],
                               cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, process, log)
    except BaseException:
        _stop(process)
        raise
    return process, port


# storescu -v logs a line per C-STORE response; a success reads "Received Store Response (Success)".
_STORESCU_SUCCESS = re.compile(rb"Received Store Response \(Success\)")


def c_store(port: int, paths: list[Path], associations: int) -> tuple[float, int]:
    """(seconds, instances not stored with status 0) of storing ``paths`` over ``associations`` at once."""
    if shutil.which("storescu"):
        return _storescu(port, paths, associations)
    return _pynetdicom_c_store(port, paths, associations)


def _storescu(port: int, paths: list[Path], associations: int) -> tuple[float, int]:
    """Storing with one storescu process per association (each its share of ``paths``, in one association)."""
    shares = [paths[index::associations] for index in range(associations)]
    start = time.perf_counter()
    processes = [subprocess.Popen(["storescu", "-v", "-aet", "BENCH", "-aec", GATEWAY_AE, "127.0.0.1", str(port),
                                   *map(str, share)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                 for share in shares]
    outputs = [process.communicate()[0] for process in processes]
    seconds = time.perf_counter() - start
    return seconds, len(paths) - sum(len(_STORESCU_SUCCESS.findall(output)) for output in outputs)


def _pynetdicom_c_store(port: int, paths: list[Path], associations: int) -> tuple[float, int]:
    """Storing with pynetdicom's SCU, one association per thread, each file sent from disk as it is (no decoding)."""
    _config.STORE_SEND_CHUNKED_DATASET = True

    def send(share: list[Path]) -> int:
        ae = AE(ae_title="BENCH")
        ae.requested_contexts = StoragePresentationContexts[:100]
        association = ae.associate("127.0.0.1", port, ae_title=GATEWAY_AE, max_pdu=0)
        if not association.is_established:
            return len(share)
        try:
            return sum(1 for path in share if getattr(association.send_c_store(path), "Status", -1) != 0)
        finally:
            association.release()

    shares = [paths[index::associations] for index in range(associations)]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=associations) as pool:
        failed = sum(pool.map(send, shares))
    return time.perf_counter() - start, failed


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children so far (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for process in [pid, *(int(child) for child in children.read_text().split())]:
        with contextlib.suppress(FileNotFoundError):
            fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


@dataclass(frozen=True)
class Measured:
    """One store of the files: its rate, its failures, the serving process's CPU milliseconds per instance."""

    mb_per_second: float
    failed: int
    cpu_ms: float


def _measured(pid: int, instances: int, mb: float, send: Callable[[], tuple[float, int]]) -> Measured:
    before = cpu_seconds(pid)
    seconds, failed = send()
    return Measured(mb / seconds, failed, 1000 * (cpu_seconds(pid) - before) / instances)


def _row(operation: str, store: Measured, baseline: str, stow: Measured) -> Row:
    failed = store.failed + stow.failed
    ratio = store.mb_per_second / stow.mb_per_second
    return Row(
        operation=operation, measured=f"{store.mb_per_second:.1f} MB/s (gateway CPU {store.cpu_ms:.1f} ms/instance)",
        baseline=f"{baseline}: {stow.mb_per_second:.1f} MB/s (server CPU {stow.cpu_ms:.1f} ms/instance)",
        target=f"≥ {TARGET}×", ratio=ratio, passed=ratio >= TARGET and not failed,
        note=f"{store.failed} C-STORE and {stow.failed} STOW instance(s) failed" if failed else "")


def _stow_files(stack: Stack, files: Files, batch: int, concurrency: int) -> tuple[float, int]:
    return asyncio.run(_stow(stack, files, batch, concurrency))


def run(results: Results, stack: Stack) -> None:
    """C-STORE and STOW of the same files at 1 and 8 in flight; one row per count (and STOW one per request)."""
    options = stack.options
    files = Files(options.dimse_instances, options.ct_side, seed=1)
    n, mb = len(files.data), files.total_bytes / 1e6
    process, port = start_gateway(stack.azurite)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-dimse-") as folder:
            for associations in ASSOCIATIONS:
                files.renew()
                stow = _measured(stack.server.pid, n, mb, partial(_stow_files, stack, files, options.stow_batch,
                                                                  associations))
                single = None
                if associations == 1:  # a request per instance: the HTTP client that waits for each answer
                    files.renew()
                    single = _measured(stack.server.pid, n, mb, partial(_stow_files, stack, files, 1, 1))
                files.renew()
                paths = []
                for index, data in enumerate(files.data):
                    path = Path(folder) / f"{associations}-{index}.dcm"
                    path.write_bytes(data)
                    paths.append(path)
                store = _measured(process.pid, n, mb, partial(c_store, port, paths, associations))
                for path in paths:
                    path.unlink()
                operation = f"C-STORE {n} × {mb / n:.2f} MB CT, {associations} association(s)"
                results.add(_row(operation, store, f"STOW-RS of the same files, {options.stow_batch} per request, "
                                                   f"{associations} in flight", stow))
                if single is not None:
                    results.add(_row(operation, store, "STOW-RS of the same files, 1 per request, 1 in flight",
                                     single))
    finally:
        _stop(process)
