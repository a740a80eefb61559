"""Command line: ``python -m local_host [--host H] [--port P] [--app module:attribute] [--no-timers]``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
from pathlib import Path

import uvicorn
from starlette.routing import Route

from local_host.functions import load_function_app
from local_host.routes import build_app
from local_host.settings import apply_local_settings, find_settings_file, read_route_prefix
from local_host.timers import TimerFunction, run_timers, timer_functions

logger = logging.getLogger("local_host")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Load the local settings, import the app, and serve it until interrupted."""
    arguments = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The Azure SDK logs every storage request and response at INFO, which would drown the request log.
    logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
    root = Path.cwd()
    settings_file = find_settings_file(root)
    if settings_file is None:
        logger.info("No local.settings.json or local.settings.sample.json in %s", root)
    else:
        applied = apply_local_settings(settings_file, os.environ)
        logger.info("Loaded %d setting(s) from %s; the environment keeps the rest", len(applied), settings_file.name)

    # The settings are in os.environ before the app module is imported: it may read them at import time.
    function_app = load_function_app(arguments.app)
    app = build_app(function_app, read_route_prefix(root))
    for route in app.routes:
        if isinstance(route, Route):
            logger.info("%s: %s %s", route.name, ",".join(sorted(route.methods or ())), route.path)
    timers = [] if arguments.no_timers else timer_functions(function_app)
    logger.info("Serving on http://%s:%d", arguments.host, arguments.port)
    config = uvicorn.Config(app, host=arguments.host, port=arguments.port, access_log=False,
                            timeout_graceful_shutdown=5)
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
