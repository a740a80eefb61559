"""Storage Commitment Push Model: the report comes on an association of its own, from the index."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, StorageCommitmentPushModel
from pynetdicom.transport import ThreadedAssociationServer

from tests.dimse_gateway.conftest import ARCHIVE_AE, GATEWAY_AE, Gateway
from tests.dimse_gateway.scu import associated
from tests.factories import make_dataset

WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"


@pytest.fixture
def reports(gateway: Gateway) -> Iterator[queue.Queue[tuple[str, int, Dataset]]]:
    """The requester's own SCP, where the gateway sends its N-EVENT-REPORTs (calling AE, event type, dataset)."""
    received: queue.Queue[tuple[str, int, Dataset]] = queue.Queue()

    def on_report(event: evt.Event) -> int:
        received.put((event.assoc.requestor.ae_title, event.event_type, event.event_information))
        return 0x0000

    ae = AE(ae_title=ARCHIVE_AE)
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    server: ThreadedAssociationServer = ae.start_server(
        (gateway.host, gateway.destination_port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    try:
        yield received
    finally:
        server.shutdown()


def item(sop_class: str, sop_instance: str) -> Dataset:
    """A Referenced SOP Sequence item."""
    ds = Dataset()
    ds.ReferencedSOPClassUID = sop_class
    ds.ReferencedSOPInstanceUID = sop_instance
    return ds


def test_storage_commitment_reports_stored_and_missing_instances(
    gateway: Gateway, reports: queue.Queue[tuple[str, int, Dataset]]
) -> None:
    stored = [make_dataset() for _ in range(2)]
    missing = generate_uid()
    request = Dataset()
    request.TransactionUID = generate_uid()
    request.ReferencedSOPSequence = Sequence([
        *(item(ds.SOPClassUID, ds.SOPInstanceUID) for ds in stored),
        item(SecondaryCaptureImageStorage, missing),
        item(CTImageStorage, stored[0].SOPInstanceUID),  # stored, but as another SOP Class
    ])
    with associated(gateway, calling_ae=ARCHIVE_AE) as association:
        assert [association.send_c_store(ds).Status for ds in stored] == [0, 0]
        status, _ = association.send_n_action(request, 1, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
    assert status.Status == 0x0000
    calling_ae, event_type, report = reports.get(timeout=30)
    assert (calling_ae, event_type) == (GATEWAY_AE, 2)  # failures exist
    assert report.TransactionUID == request.TransactionUID
    assert sorted(i.ReferencedSOPInstanceUID for i in report.ReferencedSOPSequence) == sorted(
        ds.SOPInstanceUID for ds in stored)
    assert sorted((i.ReferencedSOPInstanceUID, i.FailureReason) for i in report.FailedSOPSequence) == sorted(
        [(missing, 0x0112), (stored[0].SOPInstanceUID, 0x0119)])
