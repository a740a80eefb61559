"""An accepted association's two pynetdicom threads wait for work instead of polling every millisecond.

pynetdicom's DUL thread (socket and state machine) sleeps 1 ms whenever it found nothing to do, and so does the
association's thread (DIMSE messages, release, abort): two wake-ups per millisecond per association, held GIL
and all; 8 open associations cost the gateway a quarter of a core doing nothing. Here the DUL thread waits on
its socket and on a wake-up socket written whenever another thread queues it something, and the association
thread waits on an event set whenever the DUL queues it something. Both still look around every
IDLE_POLL_SECONDS, for what nobody announces (a timer running out, a thread that ended).
"""

from __future__ import annotations

import contextlib
import queue
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pynetdicom.dul import DULServiceProvider

if TYPE_CHECKING:
    from pynetdicom.association import Association

IDLE_POLL_SECONDS = 0.1
# What other threads than the DUL's sleep between their looks at it (pynetdicom's own delay).
OTHER_THREADS_DELAY_SECONDS = 0.001


class _WakingQueue(queue.Queue[Any]):
    """A queue that calls ``wake`` after each put (the consumer waits for it rather than polling)."""

    def __init__(self, wake: Callable[[], None]) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put ``item``, then wake the consumer."""
        super().put(item, block, timeout)
        self._wake()


class _WorkCheckpoint(threading.Event):
    """The association's reactor checkpoint: its reactor waits for work there before each look around.

    pynetdicom's reactor sleeps 1 ms, marks itself paused, then waits on this event (set unless another thread
    pauses the reactor to use the association itself); the wait for work is added to that wait.
    """

    def __init__(self, association: Association) -> None:
        super().__init__()
        self.set()
        self._association = association
        self.work = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        """In the association's own thread, first wait for work (or IDLE_POLL_SECONDS); then as an Event does."""
        if threading.current_thread() is self._association:
            self.work.wait(IDLE_POLL_SECONDS)
            self.work.clear()  # before the reactor looks: what arrives from now on sets it again
        return super().wait(timeout)


class _WaitingDul(DULServiceProvider):
    """pynetdicom's DUL provider whose idle pause waits for its socket or a wake-up (reactors.py)."""

    def __init__(self, association: Association, wake_association: Callable[[], None]) -> None:
        # Socket objects rather than a pipe's descriptors: one closed here fails a late wake-up rather than writing
        # into whatever file reused its number.
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        super().__init__(association)
        self.event_queue = _WakingQueue(self.wake)
        self.to_provider_queue = _WakingQueue(self.wake)
        self.to_user_queue = _WakingQueue(wake_association)
        self._wake_association = wake_association

    # pynetdicom's reactor runs `time.sleep(self._run_loop_delay)` when it found nothing to do: reading the delay
    # is where its own thread waits, and the sleep that follows is none.
    @property
    def _run_loop_delay(self) -> float:
        if threading.current_thread() is not self:
            return OTHER_THREADS_DELAY_SECONDS  # stop_dul, waiting for this thread to end
        self._wait_for_work()
        return 0.0

    @_run_loop_delay.setter
    def _run_loop_delay(self, value: float) -> None:
        """pynetdicom's __init__ sets its delay; the wait replaces it."""

    def wake(self) -> None:
        """Wake the DUL thread if it waits (a byte in its socket pair; a full one has bytes already)."""
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_writer.send(b"\0")

    def kill_dul(self) -> None:
        """Stop the reactor at once."""
        super().kill_dul()
        self.wake()

    def stop_dul(self) -> bool:
        """Stop the reactor if the state machine is idle (Sta1), woken rather than at its next look."""
        if self.state_machine.current_state == "Sta1":
            self._kill_thread = True
            self.wake()
        return super().stop_dul()

    def run_reactor(self) -> None:
        """pynetdicom's reactor; when it ends, the association thread looks at once (and the wake-up sockets close)."""
        try:
            super().run_reactor()
        finally:
            self._wake_association()
            self._wake_reader.close()
            self._wake_writer.close()

    def _wait_for_work(self) -> None:
        """Wait until the socket has data, another thread queued something, or the next look is due."""
        own = self.socket
        raw = own.socket if own is not None and own._is_connected else None
        if raw is None or raw.fileno() < 0:
            time.sleep(OTHER_THREADS_DELAY_SECONDS)
            return
        with contextlib.suppress(OSError, ValueError):  # a socket closed meanwhile: the reactor finds out
            select.select([raw, self._wake_reader], [], [], IDLE_POLL_SECONDS)
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_reader.recv(4096)


def wait_for_work(association: Association) -> None:
    """Make a new acceptor association's threads wait for work (before its thread starts)."""
    checkpoint = _WorkCheckpoint(association)
    dul = _WaitingDul(association, checkpoint.work.set)
    old = association.dul
    dul.socket = old.socket
    dul.artim_timer = old.artim_timer  # the timeouts the association has set already
    dul._idle_timer = old._idle_timer
    for name in ("event_queue", "to_provider_queue", "to_user_queue"):  # the socket's Evt5 (connection open)
        pending: queue.Queue[Any] = getattr(old, name)
        while not pending.empty():
            getattr(dul, name).put(pending.get_nowait())
    association.dul = dul
    association._reactor_checkpoint = checkpoint
    association.dimse.msg_queue = _WakingQueue(checkpoint.work.set)
