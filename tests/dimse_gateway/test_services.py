"""The gateway's services with a pynetdicom SCU: echo, store (and replace), find with PS3.4 matching, move errors."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicom_core.documents.series_documents import document_name
from dicom_core.settings import Settings
from dicom_core.storage.clients import open_storage
from dimse_gateway.shared_stores import IDLE_SECONDS
from tests.dimse_gateway.conftest import Gateway
from tests.dimse_gateway.scu import (
    associated,
    find,
    identifier,
    part10_dataset_bytes,
    qido,
    store_series_at_once,
    study_counts,
)
from tests.factories import make_dataset, to_bytes
from tests.processes import DIRECT


def test_c_echo_succeeds(gateway: Gateway) -> None:
    with associated(gateway) as association:
        assert association.is_established
        assert association.send_c_echo().Status == 0x0000


def test_c_store_is_searchable_by_qido_at_once(gateway: Gateway, server: str) -> None:
    study = generate_uid()
    with associated(gateway) as association:
        status = association.send_c_store(make_dataset(study=study))
    assert status.Status == 0x0000
    assert study_counts(server, study) == (1, 1)


def test_a_re_sent_instance_replaces_the_stored_one(gateway: Gateway, server: str) -> None:
    study = generate_uid()
    first = make_dataset(study=study, StudyDescription="First")
    second = make_dataset(study=study, series=first.SeriesInstanceUID, sop=first.SOPInstanceUID,
                          StudyDescription="Second")
    with associated(gateway) as association:
        assert association.send_c_store(first).Status == 0x0000
        assert association.send_c_store(second).Status == 0x0000
    (result,) = qido(server, f"studies?StudyInstanceUID={study}&includefield=StudyDescription")
    assert result["00081030"]["Value"] == ["Second"]
    assert study_counts(server, study) == (1, 1)


def test_eight_concurrent_associations_into_one_study_leave_exact_counts(gateway: Gateway, server: str) -> None:
    study = generate_uid()
    statuses = store_series_at_once(gateway, study, series=8, instances=10)
    assert statuses == [0x0000] * 80
    assert study_counts(server, study) == (8, 80)


@pytest.fixture(scope="module")
def searchable(gateway: Gateway) -> dict[str, Any]:
    """A study of three instances in two series to search with C-FIND, under a patient of its own."""
    study, patient = generate_uid(), f"FIND-{generate_uid()[-10:]}"
    series = (generate_uid(), generate_uid())
    datasets = [
        make_dataset(study=study, series=series[0], PatientID=patient, PatientName="Findable^Anna",
                     StudyDate="20230315", StudyTime="093000", Modality="CT", SeriesNumber=1, InstanceNumber=1),
        make_dataset(study=study, series=series[0], PatientID=patient, PatientName="Findable^Anna",
                     StudyDate="20230315", StudyTime="093000", Modality="CT", SeriesNumber=1, InstanceNumber=2),
        make_dataset(study=study, series=series[1], PatientID=patient, PatientName="Findable^Anna",
                     StudyDate="20230315", StudyTime="093000", Modality="MR", SeriesNumber=2, InstanceNumber=3),
    ]
    with associated(gateway) as association:
        assert [association.send_c_store(ds).Status for ds in datasets] == [0, 0, 0]
    return {"study": study, "patient": patient, "series": series, "sops": [ds.SOPInstanceUID for ds in datasets]}


def test_c_find_study_by_wildcard_name_and_date_range(gateway: Gateway, searchable: dict[str, Any]) -> None:
    matches, status = find(gateway, identifier("STUDY", PatientName="Findable^An*", StudyDate="20230301-20230331",
                                               PatientID=searchable["patient"], StudyInstanceUID=None,
                                               ModalitiesInStudy=None, NumberOfStudyRelatedInstances=None))
    assert status == 0x0000
    assert [(m.StudyInstanceUID, sorted(m.ModalitiesInStudy), m.NumberOfStudyRelatedInstances) for m in matches] == [
        (searchable["study"], ["CT", "MR"], 3)]
    assert matches[0].QueryRetrieveLevel == "STUDY"


def test_c_find_date_range_outside_matches_nothing(gateway: Gateway, searchable: dict[str, Any]) -> None:
    matches, status = find(gateway, identifier("STUDY", PatientID=searchable["patient"], StudyDate="20240101-"))
    assert (matches, status) == ([], 0x0000)


def test_c_find_time_range_is_matched_beside_the_index(gateway: Gateway, searchable: dict[str, Any]) -> None:
    inside, _ = find(gateway, identifier("STUDY", PatientID=searchable["patient"], StudyTime="0900-1000"))
    outside, _ = find(gateway, identifier("STUDY", PatientID=searchable["patient"], StudyTime="1000-"))
    assert (len(inside), len(outside)) == (1, 0)
    assert inside[0].StudyTime == "093000"


def test_c_find_series_by_modality(gateway: Gateway, searchable: dict[str, Any]) -> None:
    matches, _ = find(gateway, identifier("SERIES", StudyInstanceUID=searchable["study"], Modality="MR",
                                          SeriesInstanceUID=None, NumberOfSeriesRelatedInstances=None))
    assert [(m.SeriesInstanceUID, m.NumberOfSeriesRelatedInstances) for m in matches] == [(searchable["series"][1], 1)]


def test_c_find_images_by_uid_list(gateway: Gateway, searchable: dict[str, Any]) -> None:
    wanted = searchable["sops"][:2]
    matches, _ = find(gateway, identifier("IMAGE", StudyInstanceUID=searchable["study"],
                                          SeriesInstanceUID=searchable["series"][0], SOPInstanceUID=wanted))
    assert sorted(m.SOPInstanceUID for m in matches) == sorted(wanted)


def test_c_find_images_by_a_key_no_index_serves(gateway: Gateway, searchable: dict[str, Any]) -> None:
    matches, _ = find(gateway, identifier("IMAGE", StudyInstanceUID=searchable["study"], InstanceNumber="2",
                                          SOPInstanceUID=None))
    assert [(m.SOPInstanceUID, m.InstanceNumber) for m in matches] == [(searchable["sops"][1], 2)]


def test_c_find_patient_level_in_patient_root(gateway: Gateway, searchable: dict[str, Any]) -> None:
    matches, _ = find(gateway, identifier("PATIENT", PatientID=searchable["patient"], PatientName=None,
                                          NumberOfPatientRelatedStudies=None, NumberOfPatientRelatedInstances=None),
                      PatientRootQueryRetrieveInformationModelFind)
    assert [(str(m.PatientName), m.NumberOfPatientRelatedStudies, m.NumberOfPatientRelatedInstances)
            for m in matches] == [("Findable^Anna", 1, 3)]


def test_c_find_patient_level_in_study_root_is_refused(gateway: Gateway) -> None:
    assert find(gateway, identifier("PATIENT", PatientID="X")) == ([], 0xA900)


def test_c_move_to_an_unknown_destination_answers_a801(gateway: Gateway, searchable: dict[str, Any]) -> None:
    with associated(gateway) as association:
        statuses = [int(status.Status) for status, _ in association.send_c_move(
            identifier("STUDY", StudyInstanceUID=searchable["study"]), "NOWHERE",
            StudyRootQueryRetrieveInformationModelMove)]
    assert statuses == [0xA801]


def test_a_c_stored_instance_is_retrievable_by_wado_as_sent(gateway: Gateway, server: str) -> None:
    dataset = make_dataset()
    with associated(gateway) as association:
        assert association.send_c_store(dataset).Status == 0x0000
    url = (f"{server}/v2/studies/{dataset.StudyInstanceUID}/series/{dataset.SeriesInstanceUID}/instances/"
           f"{dataset.SOPInstanceUID}")
    request = urllib.request.Request(url, headers={"Accept": "application/dicom; transfer-syntax=*"})
    with DIRECT.open(request, timeout=30) as response:
        retrieved = response.read()
    assert part10_dataset_bytes(retrieved) == part10_dataset_bytes(to_bytes(dataset))


def test_a_c_stored_instance_is_the_change_feeds_latest_entry(gateway: Gateway, server: str) -> None:
    dataset = make_dataset()
    with associated(gateway) as association:
        assert association.send_c_store(dataset).Status == 0x0000
    with DIRECT.open(f"{server}/v2/changefeed/latest", timeout=30) as response:
        latest = json.loads(response.read())
    assert (latest["sopInstanceUid"], latest["action"], latest["state"]) == (
        dataset.SOPInstanceUID, "Create", "Current")


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


@pytest.fixture(scope="module")
def coded(gateway: Gateway) -> dict[str, Any]:
    """A study with a ProcedureCodeSequence, one series with a RequestAttributesSequence and one without."""
    study, patient = generate_uid(), f"SEQ-{generate_uid()[-10:]}"
    series = (generate_uid(), generate_uid())
    request = Dataset()
    request.RequestedProcedureID = "RP-4711"
    request.ScheduledProcedureStepID = "SPS-1"
    procedure = [_code("24627-2", "LN", "CT Chest"), _code("ZZ1", "99LOCAL", "Local chest protocol")]
    datasets = [
        make_dataset(study=study, series=series[0], PatientID=patient, ProcedureCodeSequence=procedure,
                     RequestAttributesSequence=[request]),
        make_dataset(study=study, series=series[1], PatientID=patient, ProcedureCodeSequence=procedure),
    ]
    with associated(gateway) as association:
        assert [association.send_c_store(ds).Status for ds in datasets] == [0, 0]
    return {"study": study, "patient": patient, "series": series}


@pytest.mark.parametrize(("code", "scheme", "found"), [("24627-2", "LN", 1), ("24627-2", "99LOCAL", 0), ("", "99*", 1)])
def test_c_find_study_by_an_item_of_its_procedure_code_sequence(gateway: Gateway, coded: dict[str, Any], code: str,
                                                               scheme: str, found: int) -> None:
    key = Dataset()
    key.CodeValue, key.CodingSchemeDesignator, key.CodeMeaning = code, scheme, ""
    matches, status = find(gateway, identifier("STUDY", PatientID=coded["patient"], ProcedureCodeSequence=[key],
                                               StudyInstanceUID=None))
    assert (status, [m.StudyInstanceUID for m in matches]) == (0x0000, [coded["study"]] * found)
    if found:  # the sequence is returned with its items
        assert [item.CodeValue for item in matches[0].ProcedureCodeSequence] == ["24627-2", "ZZ1"]


def test_c_find_series_by_its_request_attributes_sequence(gateway: Gateway, coded: dict[str, Any]) -> None:
    key = Dataset()
    key.RequestedProcedureID = "RP-47*"
    matches, _ = find(gateway, identifier("SERIES", StudyInstanceUID=coded["study"], RequestAttributesSequence=[key],
                                          SeriesInstanceUID=None))
    assert [m.SeriesInstanceUID for m in matches] == [coded["series"][0]]


def test_the_series_document_of_c_stores_is_written_once_the_sending_stops(gateway: Gateway,
                                                                           storage_env: dict[str, str]) -> None:
    study, series = generate_uid(), generate_uid()
    with associated(gateway) as association:
        assert [association.send_c_store(make_dataset(study=study, series=series)).Status for _ in range(3)] == [0] * 3

    async def document_exists() -> bool:
        storage = await open_storage(Settings.from_environment(storage_env))
        try:
            return bool(await storage.metadata.get_blob_client(document_name(study, series)).exists())
        finally:
            await storage.close()

    deadline = time.monotonic() + 10 * IDLE_SECONDS
    while not asyncio.run(document_exists()):
        assert time.monotonic() < deadline, "no series document after the gateway's store request went idle"
        time.sleep(0.1)
