"""The DICOM attributes this server names in code, by keyword (PS3.6)."""

from __future__ import annotations

from pydicom.tag import BaseTag, Tag

# Identifying an instance
SOP_CLASS_UID: BaseTag = Tag("SOPClassUID")
SOP_INSTANCE_UID: BaseTag = Tag("SOPInstanceUID")
STUDY_INSTANCE_UID: BaseTag = Tag("StudyInstanceUID")
SERIES_INSTANCE_UID: BaseTag = Tag("SeriesInstanceUID")
PATIENT_ID: BaseTag = Tag("PatientID")

# Searched through the index
PATIENT_NAME: BaseTag = Tag("PatientName")
ACCESSION_NUMBER: BaseTag = Tag("AccessionNumber")
REFERRING_PHYSICIAN_NAME: BaseTag = Tag("ReferringPhysicianName")
STUDY_DATE: BaseTag = Tag("StudyDate")
STUDY_TIME: BaseTag = Tag("StudyTime")
STUDY_ID: BaseTag = Tag("StudyID")
MODALITY: BaseTag = Tag("Modality")
SERIES_NUMBER: BaseTag = Tag("SeriesNumber")
PPS_START_DATE: BaseTag = Tag("PerformedProcedureStepStartDate")
PPS_START_TIME: BaseTag = Tag("PerformedProcedureStepStartTime")
MODALITIES_IN_STUDY: BaseTag = Tag("ModalitiesInStudy")

# Computed by QIDO
NUMBER_OF_STUDY_RELATED_SERIES: BaseTag = Tag("NumberOfStudyRelatedSeries")
NUMBER_OF_STUDY_RELATED_INSTANCES: BaseTag = Tag("NumberOfStudyRelatedInstances")
NUMBER_OF_SERIES_RELATED_INSTANCES: BaseTag = Tag("NumberOfSeriesRelatedInstances")
INSTANCE_AVAILABILITY: BaseTag = Tag("InstanceAvailability")
RETRIEVE_URL: BaseTag = Tag("RetrieveURL")

PIXEL_DATA: BaseTag = Tag("PixelData")
ENCAPSULATED_DOCUMENT: BaseTag = Tag("EncapsulatedDocument")
