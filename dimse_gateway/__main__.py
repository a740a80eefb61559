"""Run the DIMSE gateway: ``python -m dimse_gateway`` (settings from DICOMWEB_* and DICOMWEB_DIMSE_* variables).

With more than one worker (DICOMWEB_DIMSE_WORKERS or --workers), this process binds the port and starts the other
workers, which listen on the same port (SO_REUSEPORT); each serves the associations the kernel hands it, with its
own storage clients, as the HTTP server's worker processes do. Stopping this process stops them.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
from types import FrameType

from dimse_gateway.server import Gateway
from dimse_gateway.settings import GatewaySettings

# How often a worker checks that the process that started it still runs (it stops when that one is gone).
PARENT_CHECK_SECONDS = 1.0
WORKER_STOP_SECONDS = 10.0


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m dimse_gateway", description=__doc__)
    parser.add_argument("--port", type=int, help="the port to listen on (default: DICOMWEB_DIMSE_PORT or 11112)")
    parser.add_argument("--workers", type=int, help="processes serving the port (default: DICOMWEB_DIMSE_WORKERS "
                                                    "or 1)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    parser.add_argument("--worker-of", type=int, help=argparse.SUPPRESS)  # the first worker's process id
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    settings = GatewaySettings.from_environment()
    if args.port is not None:
        settings = dataclasses.replace(settings, port=args.port)
    if args.workers is not None:
        settings = dataclasses.replace(settings, workers=max(1, args.workers))
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    worker = args.worker_of is not None
    gateway = Gateway(settings, shared_port=worker or settings.workers > 1)
    gateway.start()
    others: list[subprocess.Popen[bytes]] = []
    try:
        if worker:
            while not stopping.wait(PARENT_CHECK_SECONDS) and os.getppid() == args.worker_of:
                pass
            return
        others = [_start_worker(gateway.port, args.log_level) for _ in range(settings.workers - 1)]
        print(f"DIMSE gateway: AE {settings.ae_title} on port {gateway.port}, {settings.workers} worker process(es) "
              "(Ctrl-C stops it)", flush=True)
        stopping.wait()
    finally:
        _stop_workers(others)
        gateway.stop()


def _start_worker(port: int, log_level: str) -> subprocess.Popen[bytes]:
    """Another gateway process on ``port`` (already bound here), with this one's environment and output."""
    return subprocess.Popen([sys.executable, "-m", "dimse_gateway", "--port", str(port), "--log-level", log_level,
                             "--worker-of", str(os.getpid())], stdin=subprocess.DEVNULL)


def _stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for process in workers:
        process.terminate()
    for process in workers:
        try:
            process.wait(WORKER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


if __name__ == "__main__":
    main()
