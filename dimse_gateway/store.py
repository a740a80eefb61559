"""C-STORE: the received instance goes through STOW's validation and commit; a re-sent instance replaces the old one.

The C-STOREs of all associations are stored as the parts of shared store requests (shared_stores.py); each is
answered once its instance is committed.
"""

from __future__ import annotations

import logging

from pydicom.dataset import Dataset
from pynetdicom.events import Event

from dicom_core.stow.response import PROCESSING_FAILURE, StoreOutcome
from dimse_gateway.core_loop import CoreLoop
from dimse_gateway.shared_stores import SharedStores
from dimse_gateway.statuses import DOES_NOT_MATCH_SOP_CLASS, OUT_OF_RESOURCES, SUCCESS, failure

LOGGER = logging.getLogger(__name__)


def handle_store(event: Event, core: CoreLoop, stores: SharedStores) -> Dataset:
    """Store the instance of one C-STORE request and answer its status."""
    # pynetdicom wrote the dataset as received to a Part-10 file (STORE_RECV_CHUNKED_DATASET), not into memory.
    path = event.dataset_path
    size = path.stat().st_size
    limit = core.storage.settings.max_part_bytes
    if size > limit:  # STOW's limit on one instance (DICOMWEB_MAX_PART_BYTES)
        return failure(OUT_OF_RESOURCES, f"The instance is over the limit of {limit} bytes")
    with path.open("rb") as file:
        outcome = core.run(stores.store(file, size))
    return store_status(outcome)


def store_status(outcome: StoreOutcome) -> Dataset:
    """The C-STORE status of a store's outcome, a failure's first comment as its ErrorComment."""
    if outcome.succeeded:
        success = Dataset()
        success.Status = SUCCESS
        return success
    code = OUT_OF_RESOURCES if outcome.failure_reason == PROCESSING_FAILURE else DOES_NOT_MATCH_SOP_CLASS
    status = failure(code, outcome.comments[0] if outcome.comments else "The instance was not stored")
    LOGGER.info("C-STORE of %s refused (0x%04X): %s", outcome.ids.instance if outcome.ids else "an instance",
                status.Status, "; ".join(outcome.comments))
    return status
