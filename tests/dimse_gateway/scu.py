"""pynetdicom SCU helpers for the gateway tests, and what QIDO says about a study."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, StoragePresentationContexts
from pynetdicom.association import Association
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from tests.dimse_gateway.conftest import GATEWAY_AE, MODALITY_AE, Gateway
from tests.factories import make_dataset
from tests.processes import DIRECT


@contextmanager
def associated(gateway: Gateway, calling_ae: str = MODALITY_AE, **kwargs: Any) -> Iterator[Association]:
    """An association with the gateway proposing storage, Q/R and Verification; released afterwards."""
    ae = AE(ae_title=calling_ae)
    ae.requested_contexts = [*StoragePresentationContexts[:120]]
    for sop_class in (Verification, StorageCommitmentPushModel, StudyRootQueryRetrieveInformationModelFind,
                      PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelMove):
        ae.add_requested_context(sop_class)
    association = ae.associate(gateway.host, gateway.port, ae_title=GATEWAY_AE, **kwargs)
    try:
        yield association
    finally:
        if association.is_established:
            association.release()


def find(gateway: Gateway, identifier: Dataset, model: str = StudyRootQueryRetrieveInformationModelFind,
         ) -> tuple[list[Dataset], int]:
    """The matches of a C-FIND and its final status."""
    with associated(gateway) as association:
        assert association.is_established
        matches: list[Dataset] = []
        final = -1
        for status, found in association.send_c_find(identifier, model):
            if status.Status in (0xFF00, 0xFF01):
                matches.append(found)
            else:
                final = int(status.Status)
        return matches, final


def identifier(level: str, **keys: Any) -> Dataset:
    """A query identifier: the level and the keys (None: a return key)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, "" if value is None else value)
    return ds


def qido(server: str, path: str) -> list[dict[str, Any]]:
    """A QIDO-RS search through the HTTP server: its DICOM JSON results ([] for 204)."""
    with DIRECT.open(f"{server}/v2/{path}", timeout=30) as response:
        body = response.read()
    return json.loads(body) if body else []


def study_counts(server: str, study: str) -> tuple[int, int]:
    """NumberOfStudyRelatedSeries and NumberOfStudyRelatedInstances of a study, as QIDO answers them (0, 0: none)."""
    results = qido(server, f"studies?StudyInstanceUID={study}")
    if not results:
        return 0, 0
    (result,) = results
    return int(result["00201206"]["Value"][0]), int(result["00201208"]["Value"][0])


def store_series_at_once(gateway: Gateway, study: str, series: int, instances: int) -> list[int]:
    """C-STORE ``series`` new series of ``instances`` into ``study``, each over its own association, all at once;
    every C-STORE's status."""

    def send_series(_: int) -> list[int]:
        uid = generate_uid()
        with associated(gateway) as association:
            return [int(association.send_c_store(make_dataset(study=study, series=uid, InstanceNumber=n)).Status)
                    for n in range(instances)]

    with ThreadPoolExecutor(max_workers=series) as pool:
        return [status for statuses in pool.map(send_series, range(series)) for status in statuses]


def part10_dataset_bytes(data: bytes) -> bytes:
    """The bytes of a Part-10 file after its File Meta Information (as every group length is written)."""
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00"
    group_length = int.from_bytes(data[140:144], "little")
    return data[144 + group_length:]


def dataset_bytes(path: Path) -> bytes:
    """The bytes of a Part-10 file on disk after its File Meta Information."""
    return part10_dataset_bytes(path.read_bytes())

