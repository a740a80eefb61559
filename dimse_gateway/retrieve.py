"""C-MOVE and C-GET: the instances an identifier names, read from Blob Storage as stored and sent by C-STORE.

The identifier's unique keys are searched at its level (the same search as C-FIND); each match's instance
rows give the stored files. C-MOVE opens an association to a configured destination, offering each SOP Class
in the transfer syntaxes of the files (uncompressed ones in both little-endian syntaxes); C-GET sends them
back on the requester's association.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from azure.data.tables import TableEntity
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
)

from dicom_core.index.reads import get_row, instance_rows, stored_instance
from dicom_core.index.rows import instance_row_key
from dicom_core.model.identifiers import StoredInstance
from dicom_core.storage.blob_reads import spool_blob
from dicom_core.storage.blobs import instance_blob_name
from dicom_core.storage.clients import Storage
from dicom_core.storage.concurrency import bounded_gather
from dimse_gateway.core_loop import CoreLoop
from dimse_gateway.find import search_results
from dimse_gateway.identifiers import QueryLevel, search_of
from dimse_gateway.settings import Destination
from dimse_gateway.statuses import CANCELLED, PENDING

LOGGER = logging.getLogger(__name__)
ROW_COLUMNS = ("Version", "TransferSyntaxUid", "Size", "SopClassUid")
ROW_READS_IN_FLIGHT = 16
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
MAX_PRESENTATION_CONTEXTS = 128
Response = tuple[int | Dataset, Dataset | None]


@dataclass(frozen=True)
class StoredFile:
    """One instance to send: where it is stored, its SOP Class, transfer syntax and size."""

    stored: StoredInstance
    sop_class: str
    transfer_syntax: str
    size: int

    @classmethod
    def of_row(cls, study: str, row: TableEntity) -> StoredFile:
        """The stored file an instance row names."""
        return cls(stored_instance(study, row), str(row["SopClassUid"]), str(row["TransferSyntaxUid"]),
                   int(row["Size"]))


def matching_files(core: CoreLoop, identifier: Dataset, *, patient_root: bool) -> list[StoredFile]:
    """The stored files of every instance the identifier's keys match."""
    search = search_of(identifier, patient_root=patient_root)
    uids = [(str(result.StudyInstanceUID), str(result.get("SeriesInstanceUID", "")),
             str(result.get("SOPInstanceUID", ""))) for result in search_results(core, search)]
    return core.run(_files(core.storage, search.level, uids))


async def _files(storage: Storage, level: QueryLevel, uids: list[tuple[str, str, str]]) -> list[StoredFile]:
    if level is QueryLevel.IMAGE:
        columns = ["RowKey", *ROW_COLUMNS]
        rows = await bounded_gather((get_row(storage, study, instance_row_key(series, instance), columns)
                                     for study, series, instance in uids), limit=ROW_READS_IN_FLIGHT)
        return [StoredFile.of_row(study, row) for (study, _, _), row in zip(uids, rows, strict=True) if row]
    series_level = level is QueryLevel.SERIES
    row_lists = await bounded_gather((instance_rows(storage, study, series if series_level else None,
                                                    select=ROW_COLUMNS) for study, series, _ in uids),
                                     limit=ROW_READS_IN_FLIGHT)
    return [StoredFile.of_row(study, row) for (study, _, _), rows in zip(uids, row_lists, strict=True)
            for row in rows]


def read_dataset(core: CoreLoop, file: StoredFile) -> Dataset | None:
    """The stored file read as it is (its own transfer syntax); None when it was deleted meanwhile."""
    try:
        spooled = core.run(spool_blob(core.storage.files, instance_blob_name(file.stored), file.size))
    except Exception:
        LOGGER.warning("Instance %s could not be read for a retrieve", file.stored.ids.instance, exc_info=True)
        return None
    with spooled:
        return dcmread(spooled)


def contexts_for(files: list[StoredFile]) -> list[PresentationContext]:
    """Presentation contexts for sending ``files``: each SOP Class in each stored transfer syntax, one per context.

    A file is sent as stored where its own syntax is accepted; an uncompressed one also offers the other
    little-endian syntax, which it is converted to where only that one is.
    """
    wanted: dict[tuple[str, str], None] = {}
    for file in files:
        wanted[(file.sop_class, file.transfer_syntax)] = None
    for file in files:
        if file.transfer_syntax in UNCOMPRESSED:
            for syntax in UNCOMPRESSED:
                wanted[(file.sop_class, syntax)] = None
    if len(wanted) > MAX_PRESENTATION_CONTEXTS:
        LOGGER.warning("A retrieve needs %d presentation contexts; offering the first %d", len(wanted),
                       MAX_PRESENTATION_CONTEXTS)
    return [build_context(sop_class, syntax) for sop_class, syntax in list(wanted)[:MAX_PRESENTATION_CONTEXTS]]


def handle_move(event: Event, core: CoreLoop, destinations: dict[str, Destination]) -> Iterator[Any]:
    """Answer a C-MOVE: the destination (None, None for an unknown one: 0xA801), the count, then each instance.

    An identifier that cannot be searched raises: pynetdicom answers a failure status (0xC514) and logs why.
    """
    destination = destinations.get(str(event.move_destination or "").strip())
    if destination is None:
        yield None, None
        return
    patient_root = event.request.AffectedSOPClassUID == PatientRootQueryRetrieveInformationModelMove
    files = matching_files(core, event.identifier, patient_root=patient_root)
    yield destination.host, destination.port, {"contexts": contexts_for(files)}
    yield len(files)
    yield from _send(event, core, files)


def handle_get(event: Event, core: CoreLoop) -> Iterator[Any]:
    """Answer a C-GET: the count, then each instance sent on the requester's association (errors raise, as above)."""
    patient_root = event.request.AffectedSOPClassUID == PatientRootQueryRetrieveInformationModelGet
    files = matching_files(core, event.identifier, patient_root=patient_root)
    yield len(files)
    yield from _send(event, core, files)


def _send(event: Event, core: CoreLoop, files: list[StoredFile]) -> Iterator[Response]:
    for file in files:
        if event.is_cancelled:
            yield CANCELLED, None
            return
        dataset = read_dataset(core, file)
        if dataset is not None:
            yield PENDING, dataset
