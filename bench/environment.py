"""The stack a benchmark runs against: Azurite (blob and table services in processes of their own) and the server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from dicom_core.settings import azurite_connection_string

ROOT = Path(__file__).resolve().parent.parent
AZURITE_BIN = ROOT / "node_modules" / ".bin"
START_TIMEOUT_SECONDS = 60.0
# Azurite keeps a table in one LokiJS collection; 100,000 instances and their index entries need a larger heap.
NODE_HEAP_MB = 8192


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {START_TIMEOUT_SECONDS:.0f} s; see {log}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Azurite:
    """Azurite's blob and table services, each its own Node process (they would share one core otherwise)."""

    location: Path
    blob_port: int
    table_port: int
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    owns_location: bool = True

    @classmethod
    def start(cls, *, in_memory_tables: bool = True, in_memory_blobs: bool = False, debug: bool = False) -> Azurite:
        """Start both services on free ports with a temporary location (``debug``: with Azurite's debug logs)."""
        azurite = cls(Path(tempfile.mkdtemp(prefix="dicomweb-bench-")), free_port(), free_port())
        env = {**os.environ, "NODE_OPTIONS": f"--max-old-space-size={NODE_HEAP_MB}"}
        services = (("azurite-blob", "--blobHost", "--blobPort", azurite.blob_port, in_memory_blobs),
                    ("azurite-table", "--tableHost", "--tablePort", azurite.table_port, in_memory_tables))
        try:
            for command, host_flag, port_flag, port, in_memory in services:
                log = azurite.location / f"{command}.log"
                args = [str(AZURITE_BIN / command), host_flag, "127.0.0.1", port_flag, str(port),
                        "--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry"]
                args += ["--inMemoryPersistence"] if in_memory else ["--location", str(azurite.location / command)]
                args += ["--debug", str(azurite.debug_log(command))] if debug else []
                process = subprocess.Popen(args, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
                azurite.processes.append(process)
                _wait_for_port(port, process, log)
        except BaseException:
            azurite.stop()
            raise
        return azurite

    @property
    def connection_string(self) -> str:
        """The connection string of this Azurite."""
        return azurite_connection_string("127.0.0.1", self.blob_port, self.table_port)

    def debug_log(self, command: str) -> Path:
        """Where ``command`` (azurite-blob or azurite-table) writes its debug log when started with ``debug``."""
        return self.location / f"{command}-debug.log"

    @property
    def pids(self) -> list[int]:
        """Process ids of the blob and table services."""
        return [process.pid for process in self.processes]

    @property
    def table_pid(self) -> int | None:
        """Process id of the table service, when this object started it (else None)."""
        return self.processes[1].pid if len(self.processes) > 1 else None

    def stop(self) -> None:
        """Stop both services and remove their data."""
        for process in self.processes:
            _stop(process)
        if self.owns_location:
            shutil.rmtree(self.location, ignore_errors=True)


@dataclass
class Server:
    """The DICOMweb server (local_host serving function_app) in a process of its own."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, azurite: Azurite, *, prefix: str = "bench", extra_env: dict[str, str] | None = None,
              timers: bool = True) -> Server:
        """Serve the app against ``azurite`` with its own tables and containers (named after ``prefix``)."""
        port = free_port()
        env = {
            **os.environ,
            "DICOMWEB_STORAGE_CONNECTION_STRING": azurite.connection_string,
            "DICOMWEB_TABLE_PREFIX": prefix,
            "DICOMWEB_BLOB_CONTAINER": f"{prefix}-files",
            "DICOMWEB_METADATA_CONTAINER": f"{prefix}-metadata",
            "DICOMWEB_QUERY_STATS": "true",
            **(extra_env or {}),
        }
        log = azurite.location / f"server-{prefix}-{port}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "local_host", "--port", str(port), *([] if timers else ["--no-timers"])],
            cwd=ROOT, env=env,
            stdout=log.open("wb"), stderr=subprocess.STDOUT,
        )
        server = cls(port, process, log)
        try:
            _wait_for_port(port, process, log)
            httpx.get(f"{server.url}/health/check", timeout=30)
        except BaseException:
            server.stop()
            raise
        return server

    @property
    def url(self) -> str:
        """The service root (no version)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.process.pid

    def stop(self) -> None:
        """Stop the server."""
        _stop(self.process)


def peak_rss_mb(pid: int) -> float:
    """The peak resident set size (VmHWM) of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def reset_peak_rss(pid: int) -> bool:
    """Reset a process's VmHWM to its current RSS (Linux ≥ 4.0); False when the kernel does not allow it."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_mb(pid: int) -> float:
    """The current resident set size (VmRSS) of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process and every process under it (a server's workers), so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            # Fields after the command's closing parenthesis: utime and stime are the 12th and 13th of them.
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(child) for child in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # a process that ended meanwhile
    return total
