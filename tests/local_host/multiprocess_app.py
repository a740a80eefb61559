"""A FunctionApp for the local host's multi-process tests: which process answers, and where the timer runs.

Served by `python -m local_host --app tests.local_host.multiprocess_app:app`. The timer appends its process id to
the file named by $LOCAL_HOST_TEST_TIMER_FILE, one line a run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import azure.functions as func
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

TIMER_FILE_VARIABLE = "LOCAL_HOST_TEST_TIMER_FILE"

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="pid", methods=["GET"])
async def pid(req: Request) -> Response:
    """Answer with this process's id."""
    return JSONResponse({"pid": os.getpid()})


@app.route(route="block", methods=["GET"])
async def block(req: Request) -> Response:
    """Hold this process's event loop for ``?seconds=`` (no other request is served here meanwhile)."""
    time.sleep(float(req.query_params.get("seconds", "1")))
    return JSONResponse({"pid": os.getpid()})


@app.timer_trigger(schedule="* * * * * *", arg_name="timer", run_on_startup=True)
def every_second(timer: func.TimerRequest) -> None:
    """Append this process's id to the timer file."""
    with Path(os.environ[TIMER_FILE_VARIABLE]).open("a", encoding="utf-8") as file:
        file.write(f"{os.getpid()}\n")
