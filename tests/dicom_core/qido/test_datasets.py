"""What a search result carries: Azure's return sets by version, includefield, filters and URL UIDs."""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword
from pydicom.tag import BaseTag

from dicom_core.qido.query import QidoResource, parse_query
from dicom_core.qido.datasets import return_tags


def tags_for_keywords(*keywords: str) -> set[BaseTag]:
    return {BaseTag(tag_for_keyword(keyword)) for keyword in keywords}


def _returned(resource: QidoResource, query: str = "", api_version: int = 2, **scope: str) -> set[BaseTag]:
    return return_tags(parse_query(resource, query, api_version=api_version, **scope))


def test_v2_studies_return_the_small_set_and_the_computed_attributes() -> None:
    assert _returned(QidoResource.ALL_STUDIES) == tags_for_keywords(
        "StudyInstanceUID", "StudyDate", "StudyDescription", "AccessionNumber", "ReferringPhysicianName",
        "PatientName", "PatientID", "PatientBirthDate", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances")


def test_v1_studies_return_the_large_set() -> None:
    assert tags_for_keywords("SpecificCharacterSet", "StudyTime", "PatientSex", "StudyID", "TimezoneOffsetFromUTC") <= _returned(
        QidoResource.ALL_STUDIES, api_version=1)


def test_all_adds_the_all_set_in_either_version() -> None:
    assert _returned(QidoResource.ALL_SERIES, "includefield=all") >= tags_for_keywords(
        "PatientAge", "AdditionalPatientHistory", "SeriesNumber", "Laterality", "SeriesTime")


def test_cross_study_instances_return_study_series_and_instance_defaults() -> None:
    assert tags_for_keywords("PatientID", "Modality", "SOPInstanceUID") <= _returned(QidoResource.ALL_INSTANCES)


def test_includefield_filters_and_url_uids_are_added() -> None:
    returned = _returned(QidoResource.STUDY_SERIES_INSTANCES, "includefield=00180050&SOPInstanceUID=1.2",
                         study_uid="1.2", series_uid="1.3")
    assert returned == tags_for_keywords("SOPInstanceUID", "SliceThickness", "StudyInstanceUID", "SeriesInstanceUID")
