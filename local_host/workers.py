"""Serving with several worker processes on one port (``--workers N``), as the Functions host runs several.

The supervisor (the process started by the user) binds the listening socket and starts N processes of
``python -m local_host`` that inherit it: each imports the function app and serves on its own event loop, and the
kernel hands every new connection to one of them (whichever accepts it first, so a busy process takes fewer).
Only worker 0 runs the timer functions. A worker tells the supervisor it is serving by writing one byte to a pipe.

The supervisor imports no app. On SIGINT or SIGTERM it sends SIGTERM to every worker (uvicorn's graceful shutdown)
and kills what still runs after ``STOP_SECONDS``; a second SIGINT kills at once. A worker that exits before it
served stops them all (exit code 1: the app does not start); one that exits later is replaced (same index, so the
timers come back). A worker whose supervisor is gone (killed with SIGKILL) stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn

from local_host.timers import TimerFunction, run_timers

logger = logging.getLogger(__name__)

STOP_SECONDS = 10.0  # uvicorn's graceful shutdown (5 s) plus the time to finish the last requests' logging
SUPERVISOR_POLL_SECONDS = 0.5  # how often a worker checks that its supervisor is still there
_READY = b"R"
_PACKAGE = __package__ or "local_host"


@dataclass(frozen=True)
class WorkerRole:
    """What the supervisor tells a worker: its index, the inherited listening socket and pipe, the supervisor."""

    index: int
    listen_fd: int
    ready_fd: int
    supervisor_pid: int

    def to_argument(self) -> str:
        """The ``--worker`` argument that carries this role."""
        return f"{self.index},{self.listen_fd},{self.ready_fd},{self.supervisor_pid}"

    @classmethod
    def parse(cls, text: str) -> WorkerRole:
        """Read a ``--worker`` argument."""
        try:
            index, listen_fd, ready_fd, supervisor_pid = (int(part) for part in text.split(","))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"not INDEX,LISTEN_FD,READY_FD,SUPERVISOR_PID: {text!r}") from exc
        return cls(index, listen_fd, ready_fd, supervisor_pid)


# --- the worker side ---------------------------------------------------------------------------------------------


async def serve_worker(server: uvicorn.Server, timers: list[TimerFunction], role: WorkerRole) -> None:
    """Serve on the inherited socket (and run ``timers``) until uvicorn exits or the supervisor is gone."""
    listener = socket.socket(fileno=role.listen_fd)
    tasks = [
        asyncio.create_task(run_timers(timers)),
        asyncio.create_task(_report_ready(server, role.ready_fd)),
        asyncio.create_task(_watch_supervisor(server, role.supervisor_pid)),
    ]
    # uvicorn re-raises the signal it shut down on once it is done; here that must not kill the process (its exit
    # code tells the supervisor how it ended), and Ctrl-C in a terminal reaches the supervisor, which sends SIGTERM.
    for handled in (signal.SIGINT, signal.SIGTERM):
        signal.signal(handled, _ignore_signal)
    try:
        await server.serve(sockets=[listener])
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _ignore_signal(signum: int, frame: FrameType | None) -> None:
    """Signal handler that does nothing (uvicorn re-raises a handled signal after its graceful shutdown)."""


async def _report_ready(server: uvicorn.Server, ready_fd: int) -> None:
    """Write one byte to the supervisor's pipe once uvicorn listens (closing the pipe without it means failure)."""
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        os.write(ready_fd, _READY)
    finally:
        os.close(ready_fd)


async def _watch_supervisor(server: uvicorn.Server, supervisor_pid: int) -> None:
    """Stop serving when the supervisor is gone (this process was handed to another parent)."""
    while os.getppid() == supervisor_pid:
        await asyncio.sleep(SUPERVISOR_POLL_SECONDS)
    logger.warning("The supervisor (pid %d) is gone; this worker stops", supervisor_pid)
    server.should_exit = True


# --- the supervisor ----------------------------------------------------------------------------------------------


@dataclass
class _Worker:
    """One started worker process and the read end of its ready pipe (None once read or closed)."""

    index: int
    process: subprocess.Popen[bytes]
    ready_pipe: int | None
    ready: bool = False


class Supervisor:
    """Starts the workers, replaces one that fails after it served, and stops them all on a signal."""

    def __init__(self, arguments: list[str], count: int, listener: socket.socket) -> None:
        """``arguments``: the command line each worker gets (before its ``--worker``)."""
        self._arguments = arguments
        self._count = count
        self._listener = listener
        self._workers: list[_Worker] = []
        self._stopping = False
        self._exit_code = 0
        self._announced = False

    def run(self) -> int:
        """Supervise until a signal or a failed start; return the exit code (0 after a signal)."""
        previous = {handled: signal.signal(handled, self._on_signal) for handled in (signal.SIGINT, signal.SIGTERM)}
        try:
            for index in range(self._count):  # one by one: a signal meanwhile stops those already started
                if not self._stopping:
                    self._workers.append(self._start(index))
            while not self._stopping:
                self._watch()
        finally:
            self._stop_all()
            self._listener.close()
            for handled, handler in previous.items():
                signal.signal(handled, handler)
        return self._exit_code

    def _start(self, index: int) -> _Worker:
        read_end, write_end = os.pipe()
        role = WorkerRole(index, self._listener.fileno(), write_end, os.getpid())
        command = [sys.executable, "-m", _PACKAGE, *self._arguments, "--worker", role.to_argument()]
        try:
            process = subprocess.Popen(command, pass_fds=(self._listener.fileno(), write_end),
                                       stdin=subprocess.DEVNULL)
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        timers = index == 0 and "--no-timers" not in self._arguments
        logger.info("Worker %d: started (pid %d)%s", index, process.pid, ", runs the timers" if timers else "")
        return _Worker(index, process, read_end)

    def _watch(self) -> None:
        """Wait up to a moment for ready messages, then look for workers that exited."""
        pipes = {worker.ready_pipe: worker for worker in self._workers if worker.ready_pipe is not None}
        if pipes:
            readable, _, _ = select.select(list(pipes), [], [], 0.2)
        else:
            time.sleep(0.2)
            readable = []
        for pipe in readable:
            worker = pipes[pipe]
            worker.ready = os.read(pipe, 1) == _READY
            os.close(pipe)
            worker.ready_pipe = None
        if not self._announced and all(worker.ready for worker in self._workers):
            self._announced = True
            host, port = self._listener.getsockname()[:2]
            pids = ", ".join(str(worker.process.pid) for worker in self._workers)
            logger.info("Serving on http://%s:%d with %d worker processes (pids %s)", host, port, self._count, pids)
        for position, worker in enumerate(self._workers):
            code = worker.process.poll()
            if code is None or self._stopping:
                continue
            if not worker.ready:
                logger.error("Worker %d (pid %d) exited with code %d before it served; stopping the others",
                             worker.index, worker.process.pid, code)
                self._exit_code = 1
                self._stopping = True
                return
            logger.warning("Worker %d (pid %d) exited with code %d; starting another", worker.index,
                           worker.process.pid, code)
            self._workers[position] = self._start(worker.index)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping and signum == signal.SIGINT:  # a second Ctrl-C: do not wait for the graceful shutdown
            logger.warning("Killing the workers")
            for worker in self._workers:
                _kill(worker.process)
        elif not self._stopping:
            logger.info("Stopping the %d workers (%s)", len(self._workers), signal.Signals(signum).name)
        self._stopping = True

    def _stop_all(self) -> None:
        """SIGTERM to every worker still running, then wait; kill those still there after STOP_SECONDS."""
        self._stopping = True
        for worker in self._workers:
            if worker.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for worker in self._workers:
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("Worker %d (pid %d) did not stop in time; killing it", worker.index,
                               worker.process.pid)
                _kill(worker.process)
                worker.process.wait()
            if worker.ready_pipe is not None:
                os.close(worker.ready_pipe)
                worker.ready_pipe = None


def _kill(process: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()


def bind_listener(host: str, port: int) -> socket.socket:
    """Bind (not yet listen: the workers do) a TCP socket on ``host``:``port`` for the workers to inherit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
    except BaseException:
        listener.close()
        raise
    listener.set_inheritable(True)
    return listener


def supervise(arguments: list[str], count: int, host: str, port: int) -> int:
    """Run ``count`` workers (each started with ``arguments``) on ``host``:``port``; return the exit code."""
    try:
        listener = bind_listener(host, port)
    except OSError as exc:
        logger.error("Cannot listen on %s:%d: %s", host, port, exc)
        return 1
    return Supervisor(arguments, count, listener).run()
