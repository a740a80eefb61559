"""Several gateway processes on one port (DICOMWEB_DIMSE_WORKERS): they share the associations and the storage."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from tests.dimse_gateway.conftest import Gateway, running_gateway
from tests.dimse_gateway.scu import store_series_at_once, study_counts
from tests.processes import accepts_connections

WORKERS = 2
START_SECONDS = 30


def _wait_for_workers(log: Path) -> None:
    """Wait until every worker process logged that it listens."""
    deadline = time.monotonic() + START_SECONDS
    while log.read_text(errors="replace").count("listening on") < WORKERS:
        assert time.monotonic() < deadline, log.read_text(errors="replace")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def two_workers(storage_env: dict[str, str], server: str, tmp_path_factory: pytest.TempPathFactory,
                ) -> Iterator[Gateway]:
    """The gateway as two processes on one port, both listening."""
    folder = tmp_path_factory.mktemp("workers")
    with running_gateway(storage_env, folder, DICOMWEB_DIMSE_WORKERS=str(WORKERS)) as gateway:
        _wait_for_workers(gateway.log)
        yield gateway


def test_eight_associations_over_two_processes_into_one_study_leave_exact_counts(two_workers: Gateway,
                                                                                 server: str) -> None:
    study = generate_uid()
    statuses = store_series_at_once(two_workers, study, series=8, instances=10)
    assert statuses == [0x0000] * 80
    assert study_counts(server, study) == (8, 80)


def test_stopping_the_gateway_stops_its_other_workers(storage_env: dict[str, str], server: str,
                                                      tmp_path: Path) -> None:
    with running_gateway(storage_env, tmp_path, DICOMWEB_DIMSE_WORKERS=str(WORKERS)) as gateway:
        _wait_for_workers(gateway.log)
    assert not accepts_connections(gateway.port)
