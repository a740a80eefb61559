"""C-STORE: the received instance goes through STOW's validation and commit; a re-sent instance replaces the old one."""

from __future__ import annotations

import logging

from pydicom.dataset import Dataset
from pynetdicom.events import Event

from dicom_core.stow.response import PROCESSING_FAILURE, StoreOutcome
from dicom_core.stow.service import store_file
from dicom_core.wire.api_version import SUPPORTED_VERSIONS
from dimse_gateway.core_loop import CoreLoop

LOGGER = logging.getLogger(__name__)
# PS3.4 B.2.3 and PS3.7 C: the statuses a C-STORE answers with.
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
# An LO element holds 64 characters.
MAX_COMMENT_CHARS = 64
# The lenient validation of the newest API: what modalities send is stored unless the index cannot hold it.
API_VERSION = max(SUPPORTED_VERSIONS)


def handle_store(event: Event, core: CoreLoop) -> Dataset:
    """Store the instance of one C-STORE request and answer its status."""
    # pynetdicom wrote the dataset as received to a Part-10 file (STORE_RECV_CHUNKED_DATASET), not into memory.
    path = event.dataset_path
    with path.open("rb") as file:
        outcome = core.run(store_file(core.storage, file, path.stat().st_size, api_version=API_VERSION,
                                      upsert=True))
    return store_status(outcome)


def store_status(outcome: StoreOutcome) -> Dataset:
    """The C-STORE status of a store's outcome, a failure's first comment as its ErrorComment."""
    status = Dataset()
    if outcome.succeeded:
        status.Status = SUCCESS
        return status
    status.Status = OUT_OF_RESOURCES if outcome.failure_reason == PROCESSING_FAILURE else (
        DATASET_DOES_NOT_MATCH_SOP_CLASS)
    if outcome.comments:
        status.ErrorComment = outcome.comments[0][:MAX_COMMENT_CHARS]
    LOGGER.info("C-STORE of %s refused (0x%04X): %s", outcome.ids.instance if outcome.ids else "an instance",
                status.Status, "; ".join(outcome.comments))
    return status
