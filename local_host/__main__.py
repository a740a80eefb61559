"""Command line: ``python -m local_host [--host H] [--port P] [--app module:attribute] [--no-timers] [--workers N]``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping
from pathlib import Path

import uvicorn
from starlette.routing import Route

from local_host.functions import load_function_app
from local_host.routes import build_app
from local_host.settings import SAMPLE_SETTINGS_FILE, SETTINGS_FILE, load_settings_files, read_route_prefix
from local_host.timers import TimerFunction, run_timers, timer_functions
from local_host.workers import WorkerRole, serve_worker, supervise

logger = logging.getLogger("local_host")

WORKERS_VARIABLE = "LOCAL_HOST_WORKERS"  # the default of --workers, as uvicorn's WEB_CONCURRENCY is of its own
# Every line names its process: with --workers N, which worker served a request (the access log) or failed.
LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
KEEP_ALIVE_SECONDS = 130  # Kestrel's default KeepAliveTimeout (2 min 10 s)


def _worker_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"a number of processes (1 or more) is needed, not {text!r}")
    return count


def parse_arguments(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> argparse.Namespace:
    """Parse the command line (``environ`` may give the default of --workers)."""
    parser = argparse.ArgumentParser(
        prog="python -m local_host",
        description="Serve the HTTP functions of an Azure Functions app locally (a stand-in for `func start`).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=7071, help="port to listen on (default: %(default)s)")
    parser.add_argument(
        "--app", default="function_app:app", help="the FunctionApp, as module:attribute (default: %(default)s)"
    )
    parser.add_argument(
        "--no-timers", action="store_true", help="do not run the app's timer-triggered functions on their schedules"
    )
    parser.add_argument(
        "--workers", type=_worker_count, default=environ.get(WORKERS_VARIABLE, "1"), metavar="N",
        help=f"processes serving HTTP on the one port; the timers run in one of them (default: ${WORKERS_VARIABLE} "
             "or 1, one process that serves and runs the timers)",
    )
    # How the supervisor of --workers N starts each worker (local_host.workers); not for the command line.
    parser.add_argument("--worker", type=WorkerRole.parse, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Load the local settings, import the app, and serve it until interrupted."""
    arguments = parse_arguments(argv)
    role: WorkerRole | None = arguments.worker
    if role is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle (it sends SIGTERM)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    # The Azure SDK logs every storage request and response at INFO, which would drown the request log.
    logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
    if role is None and arguments.workers > 1:
        forwarded = ["--host", arguments.host, "--port", str(arguments.port), "--app", arguments.app]
        forwarded += ["--no-timers"] if arguments.no_timers else []
        raise SystemExit(supervise(forwarded, arguments.workers, arguments.host, arguments.port))

    first = role is None or role.index == 0  # the process that tells what it serves, and runs the timers
    root = Path.cwd()
    loaded = load_settings_files(root, os.environ)
    if first and loaded.file is None:
        logger.info("No local.settings.json or local.settings.sample.json in %s", root)
    elif first and loaded.file is not None:
        logger.info("Loaded %d setting(s) from %s; the environment keeps the rest", len(loaded.applied),
                    loaded.file.name)
    if first and loaded.from_sample:
        logger.warning("%s lacks %s: using the value(s) of %s", SETTINGS_FILE, ", ".join(loaded.from_sample),
                       SAMPLE_SETTINGS_FILE)

    # The settings are in os.environ before the app module is imported: it may read them at import time.
    function_app = load_function_app(arguments.app)
    app = build_app(function_app, read_route_prefix(root))
    if first:
        for route in app.routes:
            if isinstance(route, Route):
                logger.info("%s: %s %s", route.name, ",".join(sorted(route.methods or ())), route.path)
    timers = [] if arguments.no_timers or not first else timer_functions(function_app)
    # Idle connections are kept as long as the Functions host (Kestrel) keeps them: with uvicorn's 5 s, a client
    # whose own idle expiry is also 5 s (httpx) races the close and sees its next request's connection reset.
    config = uvicorn.Config(app, host=arguments.host, port=arguments.port, access_log=False,
                            timeout_graceful_shutdown=5, timeout_keep_alive=KEEP_ALIVE_SECONDS)
    if role is not None:
        asyncio.run(serve_worker(uvicorn.Server(config), timers, role))
        return
    logger.info("Serving on http://%s:%d", arguments.host, arguments.port)
    asyncio.run(serve(uvicorn.Server(config), timers))


async def serve(server: uvicorn.Server, timers: list[TimerFunction]) -> None:
    """Serve HTTP and run the timer functions on the same event loop (the app's storage clients are per loop)."""
    scheduler = asyncio.create_task(run_timers(timers))
    try:
        await server.serve()
    finally:
        scheduler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await scheduler


if __name__ == "__main__":
    main()
