"""Real clients of this server: Debian's Orthanc with its DICOMweb plugin, started per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.clients import orthanc as orthanc_process
from tests.conftest import free_ports


@pytest.fixture(scope="module")
def orthanc(server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[orthanc_process.Orthanc]:
    """Orthanc on free HTTP and DICOM ports with storage of its own, this server registered as its peer `azure`."""
    if not orthanc_process.installed():
        pytest.fail(orthanc_process.MISSING, pytrace=False)
    http_port, dicom_port = free_ports(2)
    folder = tmp_path_factory.mktemp("orthanc")
    with orthanc_process.run_orthanc(http_port, dicom_port, folder, f"{server}/v2/") as running:
        yield running
