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
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
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


def run(results: Results, stack: Stack) -> None:
    """C-STORE and STOW of the same files at 1 and 8 in flight; one row per count."""
    options = stack.options
    files = Files(options.dimse_instances, options.ct_side, seed=1)
    mb = files.total_bytes / 1e6
    process, port = start_gateway(stack.azurite)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-dimse-") as folder:
            for associations in ASSOCIATIONS:
                files.renew()
                stow_seconds, stow_failed = asyncio.run(_stow(stack, files, options.stow_batch, associations))
                files.renew()
                paths = []
                for index, data in enumerate(files.data):
                    path = Path(folder) / f"{associations}-{index}.dcm"
                    path.write_bytes(data)
                    paths.append(path)
                store_seconds, store_failed = c_store(port, paths, associations)
                for path in paths:
                    path.unlink()
                store_rate, stow_rate = mb / store_seconds, mb / stow_seconds
                ratio = store_rate / stow_rate
                failed = store_failed + stow_failed
                results.add(Row(
                    operation=f"C-STORE {len(files.data)} × {mb / len(files.data):.2f} MB CT, {associations} "
                              "association(s)",
                    measured=f"{store_rate:.1f} MB/s",
                    baseline=f"STOW-RS of the same files, {options.stow_batch} per request, {associations} in "
                             f"flight: {stow_rate:.1f} MB/s",
                    target=f"≥ {TARGET}×", ratio=ratio, passed=ratio >= TARGET and not failed,
                    note=f"{store_failed} C-STORE and {stow_failed} STOW instance(s) failed" if failed else ""))
    finally:
        _stop(process)
