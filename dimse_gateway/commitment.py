"""Storage Commitment Push Model: N-ACTION asks whether instances are stored; N-EVENT-REPORT answers from the index.

The report goes on an association of its own to the requester's AE title as the C-MOVE destinations name it
(PS3.4 J.3.3: the gateway proposes the SCP role); a requester not in that table gets no report (logged).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE, build_role
from pynetdicom.events import Event
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from dimse_gateway.core_loop import CoreLoop
from dimse_gateway.find import search_results
from dimse_gateway.identifiers import search_of
from dimse_gateway.settings import Destination
from dimse_gateway.statuses import INVALID_ARGUMENT, NO_SUCH_ACTION, SUCCESS

LOGGER = logging.getLogger(__name__)
WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"
REQUEST_STORAGE_COMMITMENT = 1  # Action Type ID
ALL_COMMITTED, FAILURES_EXIST = 1, 2  # Event Type IDs
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
# SOP Instance UIDs per search.
UIDS_PER_SEARCH = 100


@dataclass(frozen=True)
class Reference:
    """An instance the requester asks about."""

    sop_class: str
    sop_instance: str


def handle_n_action(event: Event, core: CoreLoop, ae_title: str,
                    destinations: dict[str, Destination]) -> tuple[int, Dataset | None]:
    """Accept a storage commitment request; its report follows on an association of its own."""
    if event.action_type != REQUEST_STORAGE_COMMITMENT:
        return NO_SUCH_ACTION, None
    request = event.action_information
    try:
        transaction = str(request.TransactionUID)
        references = [Reference(str(item.ReferencedSOPClassUID), str(item.ReferencedSOPInstanceUID))
                      for item in request.ReferencedSOPSequence]
    except AttributeError:
        return INVALID_ARGUMENT, None
    requester = str(event.assoc.requestor.ae_title).strip()
    destination = destinations.get(requester)
    if destination is None:
        LOGGER.warning("Storage commitment of %s: %s is no configured destination, no report is sent", transaction,
                       requester)
        return SUCCESS, None
    threading.Thread(target=_report, args=(core, ae_title, requester, destination, transaction, references),
                     name="dimse-commitment", daemon=True).start()
    return SUCCESS, None


def committed_classes(core: CoreLoop, uids: list[str]) -> dict[str, str]:
    """The SOP Class UID of each of ``uids`` that is stored (an IMAGE-level search of them)."""
    found: dict[str, str] = {}
    for start in range(0, len(uids), UIDS_PER_SEARCH):
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "IMAGE"
        identifier.SOPInstanceUID = uids[start:start + UIDS_PER_SEARCH]
        identifier.SOPClassUID = ""
        for result in search_results(core, search_of(identifier, patient_root=False)):
            found[str(result.SOPInstanceUID)] = str(result.get("SOPClassUID", ""))
    return found


def commitment_report(transaction: str, references: list[Reference], stored: dict[str, str]) -> tuple[int, Dataset]:
    """The N-EVENT-REPORT's event type and dataset: committed references, and failed ones with their reason."""
    report = Dataset()
    report.TransactionUID = transaction
    committed, failed = [], []
    for reference in references:
        item = Dataset()
        item.ReferencedSOPClassUID = reference.sop_class
        item.ReferencedSOPInstanceUID = reference.sop_instance
        stored_class = stored.get(reference.sop_instance)
        if stored_class == reference.sop_class:
            committed.append(item)
            continue
        item.FailureReason = NO_SUCH_OBJECT_INSTANCE if stored_class is None else CLASS_INSTANCE_CONFLICT
        failed.append(item)
    if committed:
        report.ReferencedSOPSequence = Sequence(committed)
    if failed:
        report.FailedSOPSequence = Sequence(failed)
    return (FAILURES_EXIST if failed else ALL_COMMITTED), report


def _report(core: CoreLoop, ae_title: str, requester: str, destination: Destination, transaction: str,
            references: list[Reference]) -> None:
    try:
        stored = committed_classes(core, sorted({reference.sop_instance for reference in references}))
        event_type, report = commitment_report(transaction, references, stored)
        ae = AE(ae_title=ae_title)
        ae.add_requested_context(StorageCommitmentPushModel)
        association = ae.associate(destination.host, destination.port, ae_title=requester,
                                   ext_neg=[build_role(StorageCommitmentPushModel, scp_role=True)])
        if not association.is_established:
            LOGGER.warning("Storage commitment %s: %s did not accept the report's association", transaction, requester)
            return
        try:
            status, _ = association.send_n_event_report(report, event_type, StorageCommitmentPushModel,
                                                        WELL_KNOWN_INSTANCE)
            LOGGER.info("Storage commitment %s reported to %s (event type %d, status 0x%04X)", transaction,
                        requester, event_type, int(status.get("Status", -1)))
        finally:
            association.release()
    except Exception:
        LOGGER.exception("Storage commitment %s could not be reported to %s", transaction, requester)
