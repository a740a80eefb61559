"""An accepted association's pynetdicom threads wait for work (reactors.py) instead of waking every millisecond."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dimse_gateway import reactors
from dimse_gateway.server import Gateway
from dimse_gateway.settings import GatewaySettings
from tests.processes import LOOPBACK

IDLE_SECONDS = 1.0
# pynetdicom's polling woke each thread about 1,000 times in IDLE_SECONDS; waiting threads look every 0.1 s.
MAX_WAKE_UPS = 40


@pytest.fixture()
def gateway(storage_env: dict[str, str]) -> Iterator[Gateway]:
    """The gateway in this process, on a free port."""
    settings = GatewaySettings.from_environment({**storage_env, "DICOMWEB_DIMSE_HOST": LOOPBACK})
    running = Gateway(dataclasses.replace(settings, port=0))
    running.start()
    try:
        yield running
    finally:
        running.stop()


def test_an_idle_association_wakes_its_threads_a_few_times_a_second(gateway: Gateway,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    wake_ups = {"dul": 0, "reactor": 0}
    dul_wait, checkpoint_wait = reactors._WaitingDul._wait_for_work, reactors._WorkCheckpoint.wait

    def counted_dul_wait(self: reactors._WaitingDul) -> None:
        wake_ups["dul"] += 1
        dul_wait(self)

    def counted_checkpoint_wait(self: reactors._WorkCheckpoint, timeout: float | None = None) -> bool:
        if threading.current_thread() is self._association:
            wake_ups["reactor"] += 1
        return checkpoint_wait(self, timeout)

    monkeypatch.setattr(reactors._WaitingDul, "_wait_for_work", counted_dul_wait)
    monkeypatch.setattr(reactors._WorkCheckpoint, "wait", counted_checkpoint_wait)
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    association = ae.associate(LOOPBACK, gateway.port, ae_title=gateway.settings.ae_title)
    try:
        assert association.send_c_echo().Status == 0x0000
        wake_ups.update(dul=0, reactor=0)
        time.sleep(IDLE_SECONDS)
        idle = dict(wake_ups)
        assert association.send_c_echo().Status == 0x0000  # the waiting threads were woken by the request
    finally:
        association.release()
    assert 0 < idle["dul"] <= MAX_WAKE_UPS
    assert 0 < idle["reactor"] <= MAX_WAKE_UPS
