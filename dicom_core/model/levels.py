"""The study/series/instance levels: which attributes each level's index row keeps and which are queryable."""

from __future__ import annotations

from enum import StrEnum

from pydicom.datadict import tag_for_keyword
from pydicom.tag import BaseTag


class Level(StrEnum):
    """A level of the DICOM information model."""

    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


def tags_for_keywords(*keywords: str) -> tuple[BaseTag, ...]:
    """Return the tags of DICOM keywords; an unknown keyword is a KeyError."""
    tags = []
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise KeyError(keyword)
        tags.append(BaseTag(tag))
    return tuple(tags)


# Attributes copied from the latest stored instance into each level's Table row: every attribute of
# Azure's v1/v2 default and `includefield=all` return sets plus what OHIF's lists read, so QIDO can
# answer from rows alone.
ROW_ATTRIBUTES: dict[Level, tuple[BaseTag, ...]] = {
    Level.STUDY: tags_for_keywords(
        "SpecificCharacterSet", "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName",
        "TimezoneOffsetFromUTC", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
        "StudyInstanceUID", "StudyID", "StudyDescription", "AnatomicRegionsInStudyCodeSequence",
        "ProcedureCodeSequence", "NameOfPhysiciansReadingStudy", "AdmittingDiagnosesDescription",
        "ReferencedStudySequence", "PatientAge", "PatientSize", "PatientWeight", "Occupation",
        "AdditionalPatientHistory", "IssuerOfPatientID", "OtherPatientIDsSequence",
    ),
    Level.SERIES: tags_for_keywords(
        "SpecificCharacterSet", "Modality", "TimezoneOffsetFromUTC", "SeriesDescription", "SeriesInstanceUID",
        "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime", "RequestAttributesSequence",
        "SeriesNumber", "Laterality", "SeriesDate", "SeriesTime", "ManufacturerModelName", "Manufacturer",
        "BodyPartExamined",
    ),
    Level.INSTANCE: tags_for_keywords(
        "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "TimezoneOffsetFromUTC", "InstanceNumber",
        "Rows", "Columns", "BitsAllocated", "NumberOfFrames",
    ),
}

# The core queryable attributes of Azure's DICOM service: validated strictly by v1 STOW, and only their
# first value is indexed (a multi-valued one earns the response a Warning header).
QUERYABLE: dict[Level, tuple[BaseTag, ...]] = {
    Level.STUDY: tags_for_keywords(
        "StudyInstanceUID", "PatientName", "PatientID", "PatientBirthDate", "AccessionNumber",
        "ReferringPhysicianName", "StudyDate", "StudyDescription",
    ),
    Level.SERIES: tags_for_keywords(
        "SeriesInstanceUID", "Modality", "PerformedProcedureStepStartDate", "ManufacturerModelName"
    ),
    Level.INSTANCE: tags_for_keywords("SOPInstanceUID"),
}

ALL_QUERYABLE = frozenset(tag for tags in QUERYABLE.values() for tag in tags)


def row_attributes(metadata: dict[str, object], level: Level) -> dict[str, object]:
    """Return the subset of an instance's DICOM JSON that the level's row keeps."""
    keys = (f"{tag:08X}" for tag in ROW_ATTRIBUTES[level])
    return {key: metadata[key] for key in keys if key in metadata}
