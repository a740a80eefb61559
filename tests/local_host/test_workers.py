"""`python -m local_host --workers N`: N processes serve one port, the timers run in one, and every stop stops all.

Each test serves `tests/local_host/multiprocess_app.py` (a route answering its process id, one that blocks its
process, a timer writing its process id to a file) from a folder of its own, without local settings.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from local_host.__main__ import WORKERS_VARIABLE, parse_arguments
from local_host.workers import STOP_SECONDS
from tests.conftest import REPO_ROOT, free_ports
from tests.local_host.multiprocess_app import TIMER_FILE_VARIABLE
from tests.processes import LOOPBACK, answers_http, stop_process, wait_until

APP = "tests.local_host.multiprocess_app:app"
_ACCESS_LINE = re.compile(r"\[(?P<pid>\d+)\] local_host\.access: GET (?P<path>\S+) 200 ")


@dataclass(frozen=True)
class Served:
    """A running `python -m local_host` on the test app: its base URL, process, log and timer file."""

    base_url: str
    process: subprocess.Popen[bytes]
    log: Path
    timer_file: Path

    def pid_answering(self, path: str = "/api/pid") -> int:
        """GET ``path`` on a new connection; return the process id in the answer."""
        response = httpx.get(self.base_url + path, timeout=30, headers={"Connection": "close"})
        response.raise_for_status()
        return int(response.json()["pid"])

    def workers(self) -> set[int]:
        """The process ids of the supervisor's children."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return {int(pid) for pid in children.read_text().split()} if children.exists() else set()

    def timer_runs(self) -> list[int]:
        """The process id of every timer run so far."""
        text = self.timer_file.read_text() if self.timer_file.exists() else ""
        return [int(line) for line in text.split()]

    def access_log_pids(self) -> dict[str, set[int]]:
        """Path -> the process ids that the access log names for successful GETs of it."""
        found: dict[str, set[int]] = {}
        for match in _ACCESS_LINE.finditer(self.log.read_text(errors="replace")):
            found.setdefault(match["path"], set()).add(int(match["pid"]))
        return found


@contextlib.contextmanager
def serve(folder: Path, *arguments: str, new_session: bool = False) -> Iterator[Served]:
    """Serve the test app with ``arguments`` until the block ends (then stop it if a test has not)."""
    (port,) = free_ports(1)
    base_url = f"http://{LOOPBACK}:{port}"
    log, timer_file = folder / "local_host.log", folder / "timer-runs.txt"
    command = [sys.executable, "-m", "local_host", "--host", LOOPBACK, "--port", str(port), "--app", APP, *arguments]
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1",
                   TIMER_FILE_VARIABLE: str(timer_file)}
    environment.pop(WORKERS_VARIABLE, None)
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=folder, env=environment, stdin=subprocess.DEVNULL, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=new_session)
    try:
        wait_until(lambda: answers_http(base_url + "/api/pid"), process, "python -m local_host", log)
        yield Served(base_url, process, log, timer_file)
    finally:
        stop_process(process)


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def eventually(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Wait until ``condition`` holds; fail naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {seconds} s: {what}")
        time.sleep(0.05)


def wait_for_workers(served: Served, count: int) -> set[int]:
    """Wait until the supervisor has ``count`` children that all reported ready; return their process ids.

    A worker killed before it reported ready is a failed start, which stops them all; so a test that kills one
    waits for the supervisor's "Serving on" line, not only for the children to exist (a timer can run first).
    """
    ready = f"with {count} worker processes (pids "
    eventually(lambda: len(served.workers()) == count and ready in served.log.read_text(errors="replace"), 60,
               f"{count} workers ready")
    return served.workers()


def test_workers_default_to_one_or_the_environment() -> None:
    assert parse_arguments([], environ={}).workers == 1
    assert parse_arguments([], environ={WORKERS_VARIABLE: "3"}).workers == 3
    assert parse_arguments(["--workers", "2"], environ={WORKERS_VARIABLE: "3"}).workers == 2
    for wrong in ("0", "many"):
        with pytest.raises(SystemExit):
            parse_arguments(["--workers", wrong], environ={})


def test_one_worker_is_the_process_itself(tmp_path: Path) -> None:
    with serve(tmp_path, "--workers", "1") as served:
        assert served.pid_answering() == served.process.pid
        eventually(lambda: served.timer_runs() != [], 30, "a timer run")
        assert set(served.timer_runs()) == {served.process.pid}


def test_requests_in_a_row_land_in_different_processes_and_the_access_log_names_them(tmp_path: Path) -> None:
    with serve(tmp_path, "--workers", "2") as served:
        workers = wait_for_workers(served, 2)
        answered: list[int] = []
        while set(answered) != workers and len(answered) < 200:  # each on a new connection
            answered.append(served.pid_answering())
        assert set(answered) == workers, f"{len(answered)} requests all answered by {set(answered)}"
        assert served.process.pid not in answered  # the supervisor serves nothing itself
        eventually(lambda: served.access_log_pids().get("/api/pid") == workers, 10, "access-log lines of both")
    print(f"\n{len(answered)} requests in a row reached both workers")


def test_a_busy_worker_leaves_new_connections_to_the_other(tmp_path: Path) -> None:
    with serve(tmp_path, "--workers", "2") as served:
        wait_for_workers(served, 2)
        blocked: list[int] = []
        holder = threading.Thread(target=lambda: blocked.append(served.pid_answering("/api/block?seconds=3")))
        holder.start()
        time.sleep(0.5)  # the request is in its time.sleep now, holding its worker's event loop
        started = time.monotonic()
        answered = [served.pid_answering() for _ in range(3)]
        took = time.monotonic() - started
        holder.join()
    assert took < 2.0, f"the requests waited for the blocked worker ({took:.1f} s)"
    assert blocked and blocked[0] not in answered


def test_timers_run_in_one_process_only(tmp_path: Path) -> None:
    with serve(tmp_path, "--workers", "3") as served:
        workers = wait_for_workers(served, 3)
        started = time.monotonic()
        time.sleep(3.0)
        runs = served.timer_runs()
        elapsed = time.monotonic() - started
    assert len(set(runs)) == 1 and set(runs) <= workers
    assert 2 <= len(runs) <= elapsed + 3  # every second (and at startup) once, not once per worker


def test_a_worker_that_dies_is_replaced_and_the_timers_move_with_it(tmp_path: Path) -> None:
    with serve(tmp_path, "--workers", "2") as served:
        workers = wait_for_workers(served, 2)
        eventually(lambda: served.timer_runs() != [], 30, "a timer run")
        [timer_worker] = set(served.timer_runs())
        os.kill(timer_worker, signal.SIGKILL)
        eventually(lambda: len(served.workers() - workers) == 1 and timer_worker not in served.workers(), 30,
                   "a replacement worker")
        [replacement] = served.workers() - workers
        eventually(lambda: served.timer_runs()[-1] == replacement, 30, "a timer run in the replacement")
        assert set(served.timer_runs()) == {timer_worker, replacement}
        answered = {served.pid_answering() for _ in range(40)}
        assert answered <= workers - {timer_worker} | {replacement}
        assert served.process.poll() is None


@pytest.mark.parametrize("stop", ["SIGTERM to the supervisor", "Ctrl-C (SIGINT to the process group)"])
def test_a_stop_signal_stops_every_process(tmp_path: Path, stop: str) -> None:
    with serve(tmp_path, "--workers", "3", new_session=True) as served:
        workers = wait_for_workers(served, 3)
        served.pid_answering()
        started = time.monotonic()
        if stop.startswith("SIGTERM"):
            served.process.send_signal(signal.SIGTERM)
        else:
            os.killpg(served.process.pid, signal.SIGINT)
        code = served.process.wait(timeout=STOP_SECONDS + 10)
        took = time.monotonic() - started
    assert code == 0
    assert not [pid for pid in workers if alive(pid)]
    assert took < 5, f"stopping took {took:.1f} s"


def test_workers_of_a_killed_supervisor_stop_by_themselves(tmp_path: Path) -> None:
    with serve(tmp_path, "--workers", "2") as served:
        workers = wait_for_workers(served, 2)
        served.process.kill()
        served.process.wait(timeout=10)
        eventually(lambda: not any(alive(pid) for pid in workers), 15, "the orphaned workers to exit")


def test_an_app_that_does_not_start_stops_every_process(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    command = [sys.executable, "-m", "local_host", "--port", str(port), "--app", "tests.local_host.missing:app",
               "--workers", "2"]
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    completed = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=60,
                               check=False)
    assert completed.returncode == 1
    assert "before it served" in completed.stderr
    assert "No module named 'tests.local_host.missing'" in completed.stderr
    leftover = subprocess.run(["pgrep", "-f", "tests.local_host.missing"], capture_output=True, text=True, check=False)
    assert leftover.stdout.strip() == ""
