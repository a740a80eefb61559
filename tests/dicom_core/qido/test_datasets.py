"""What a search result carries: the standard's required attributes, Azure's return sets by version,
includefield, filters and URL UIDs."""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword
from pydicom.tag import BaseTag

from dicom_core.qido.datasets import return_tags
from dicom_core.qido.query import QidoResource, parse_query


def tags_for_keywords(*keywords: str) -> set[BaseTag]:
    return {BaseTag(tag_for_keyword(keyword)) for keyword in keywords}


def _returned(resource: QidoResource, query: str = "", api_version: int = 2, **scope: str) -> set[BaseTag]:
    return return_tags(parse_query(resource, query, api_version=api_version, **scope))


REQUIRED_STUDY = tags_for_keywords(
    "SpecificCharacterSet", "StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability", "ModalitiesInStudy",
    "ReferringPhysicianName", "TimezoneOffsetFromUTC", "RetrieveURL", "PatientName", "PatientID", "PatientBirthDate",
    "PatientSex", "StudyInstanceUID", "StudyID", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")
REQUIRED_SERIES = tags_for_keywords(
    "SpecificCharacterSet", "Modality", "TimezoneOffsetFromUTC", "SeriesDescription", "RetrieveURL",
    "SeriesInstanceUID", "SeriesNumber", "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "RequestAttributesSequence")
REQUIRED_INSTANCE = tags_for_keywords(
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "InstanceAvailability", "TimezoneOffsetFromUTC",
    "RetrieveURL", "InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames")


def test_v2_studies_return_the_required_attributes_and_azures_small_set() -> None:
    """PS3.18 §10.6.3 Table 10.6.3-3: the required study attributes, whichever the API version."""
    assert _returned(QidoResource.ALL_STUDIES) == REQUIRED_STUDY | tags_for_keywords("StudyDescription")


def test_v2_series_and_instances_return_the_required_attributes() -> None:
    """PS3.18 §10.6.3 Tables 10.6.3-4 and 10.6.3-5."""
    assert _returned(QidoResource.STUDY_SERIES) == REQUIRED_SERIES | tags_for_keywords("ManufacturerModelName")
    assert _returned(QidoResource.ALL_INSTANCES) >= REQUIRED_STUDY | REQUIRED_SERIES | REQUIRED_INSTANCE


def test_v1_studies_return_the_large_set() -> None:
    large = tags_for_keywords("SpecificCharacterSet", "StudyTime", "PatientSex", "StudyID", "TimezoneOffsetFromUTC")
    assert large <= _returned(QidoResource.ALL_STUDIES, api_version=1)


def test_all_adds_the_all_set_in_either_version() -> None:
    assert _returned(QidoResource.ALL_SERIES, "includefield=all") >= tags_for_keywords(
        "PatientAge", "AdditionalPatientHistory", "SeriesNumber", "Laterality", "SeriesTime")


def test_cross_study_instances_return_study_series_and_instance_defaults() -> None:
    assert tags_for_keywords("PatientID", "Modality", "SOPInstanceUID") <= _returned(QidoResource.ALL_INSTANCES)


def test_includefield_filters_and_url_uids_are_added() -> None:
    returned = _returned(QidoResource.STUDY_SERIES_INSTANCES, "includefield=00180050&SOPInstanceUID=1.2",
                         study_uid="1.2", series_uid="1.3")
    assert returned == REQUIRED_INSTANCE | tags_for_keywords("SliceThickness", "StudyInstanceUID", "SeriesInstanceUID")


def test_universal_and_ignored_filters_are_returned() -> None:
    """PS3.4 C.2.2.2.3: a key with universal matching is a return key; so is an ignored filter's attribute."""
    returned = _returned(QidoResource.ALL_STUDIES, "AccessionNumber=*&PatientAge=&00091010=x")
    assert returned >= tags_for_keywords("AccessionNumber", "PatientAge") | {BaseTag(0x00091010)}
