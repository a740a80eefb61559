"""Run the DIMSE gateway: ``python -m dimse_gateway`` (settings from DICOMWEB_* and DICOMWEB_DIMSE_* variables)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import threading
from types import FrameType

from dimse_gateway.server import Gateway
from dimse_gateway.settings import GatewaySettings


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m dimse_gateway", description=__doc__)
    parser.add_argument("--port", type=int, help="the port to listen on (default: DICOMWEB_DIMSE_PORT or 11112)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    settings = GatewaySettings.from_environment()
    if args.port is not None:
        settings = dataclasses.replace(settings, port=args.port)
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    gateway = Gateway(settings)
    gateway.start()
    print(f"DIMSE gateway: AE {settings.ae_title} on port {gateway.port} (Ctrl-C stops it)", flush=True)
    try:
        stopping.wait()
    finally:
        gateway.stop()


if __name__ == "__main__":
    main()
