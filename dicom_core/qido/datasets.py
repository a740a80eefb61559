"""The attributes each search result carries, and the DICOM JSON of a result built from its rows.

By default a result carries the attributes PS3.18 §10.6.3 requires of its level (Tables 10.6.3-3 to -5)
and Azure's default set of the API version; `includefield=all` adds Azure's "all" set. The includefield
attributes, the filtered ones (universal matching included) and the UIDs of the URL are added. Computed:
ModalitiesInStudy, the NumberOf*Related* counts, InstanceAvailability (ONLINE: every stored instance is)
and RetrieveURL. Attributes outside the rows come from the metadata blob of the result's instance (for a
study or series: its most recently stored instance).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from pydicom.tag import BaseTag

from dicom_core.model.bulk_data import BINARY_VRS
from dicom_core.model.dicom_json import JsonDataset, json_key
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance
from dicom_core.model.levels import ROW_ATTRIBUTES, Level, tags_for_keywords
from dicom_core.model.tags import (
    INSTANCE_AVAILABILITY,
    MODALITIES_IN_STUDY,
    NUMBER_OF_SERIES_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_SERIES,
    RETRIEVE_URL,
    SERIES_INSTANCE_UID,
    SOP_INSTANCE_UID,
    STUDY_INSTANCE_UID,
)
from dicom_core.qido.candidates import Hit
from dicom_core.qido.query import QidoQuery, QidoResource
from dicom_core.qido.reads import Row, SearchReads
from dicom_core.search_index.keys import study_row_modalities

STUDY_COMPUTED = (MODALITIES_IN_STUDY, NUMBER_OF_STUDY_RELATED_SERIES, NUMBER_OF_STUDY_RELATED_INSTANCES)
SERIES_COMPUTED = (NUMBER_OF_SERIES_RELATED_INSTANCES,)
# Computed for any result from its UIDs: where it is retrieved, and that it is (every stored instance is online).
RESULT_COMPUTED = (RETRIEVE_URL, INSTANCE_AVAILABILITY)
_LEVEL_ORDER = (Level.STUDY, Level.SERIES, Level.INSTANCE)

# Azure's return sets (QueryResponseBuilder): v1 defaults, v2 defaults, and the extra of `includefield=all`.
V1_DEFAULTS: dict[Level, tuple[BaseTag, ...]] = {
    Level.STUDY: tags_for_keywords(
        "SpecificCharacterSet", "StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability",
        "ReferringPhysicianName", "TimezoneOffsetFromUTC", "PatientName", "PatientID", "PatientBirthDate",
        "PatientSex", "StudyInstanceUID", "StudyID",
    ),
    Level.SERIES: tags_for_keywords(
        "SpecificCharacterSet", "Modality", "TimezoneOffsetFromUTC", "SeriesDescription", "SeriesInstanceUID",
        "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime", "RequestAttributesSequence",
    ),
    Level.INSTANCE: tags_for_keywords(
        "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "InstanceAvailability", "TimezoneOffsetFromUTC",
        "InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames",
    ),
}
# The standard's required return attributes (PS3.18 §10.6.3), returned whichever the API version.
REQUIRED: dict[Level, tuple[BaseTag, ...]] = {
    Level.STUDY: tags_for_keywords(
        "SpecificCharacterSet", "StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability",
        "ModalitiesInStudy", "ReferringPhysicianName", "TimezoneOffsetFromUTC", "RetrieveURL", "PatientName",
        "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID", "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    Level.SERIES: tags_for_keywords(
        "SpecificCharacterSet", "Modality", "TimezoneOffsetFromUTC", "SeriesDescription", "RetrieveURL",
        "SeriesInstanceUID", "SeriesNumber", "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime", "RequestAttributesSequence",
    ),
    Level.INSTANCE: tags_for_keywords(
        "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "InstanceAvailability", "TimezoneOffsetFromUTC",
        "RetrieveURL", "InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames",
    ),
}
V2_DEFAULTS: dict[Level, tuple[BaseTag, ...]] = {
    Level.STUDY: tags_for_keywords(
        "StudyInstanceUID", "StudyDate", "StudyDescription", "AccessionNumber", "ReferringPhysicianName",
        "PatientName", "PatientID", "PatientBirthDate",
    ),
    Level.SERIES: tags_for_keywords(
        "SeriesInstanceUID", "Modality", "PerformedProcedureStepStartDate", "ManufacturerModelName",
    ),
    Level.INSTANCE: tags_for_keywords("SOPInstanceUID"),
}
ALL_EXTRA: dict[Level, tuple[BaseTag, ...]] = {
    Level.STUDY: tags_for_keywords(
        "StudyDescription", "AnatomicRegionsInStudyCodeSequence", "ProcedureCodeSequence",
        "NameOfPhysiciansReadingStudy", "AdmittingDiagnosesDescription", "ReferencedStudySequence", "PatientAge",
        "PatientSize", "PatientWeight", "Occupation", "AdditionalPatientHistory",
    ),
    Level.SERIES: tags_for_keywords("SeriesNumber", "Laterality", "SeriesDate", "SeriesTime"),
    Level.INSTANCE: (),
}
RESULT_LEVELS: dict[QidoResource, tuple[Level, ...]] = {
    QidoResource.ALL_STUDIES: (Level.STUDY,),
    QidoResource.ALL_SERIES: (Level.STUDY, Level.SERIES),
    QidoResource.ALL_INSTANCES: (Level.STUDY, Level.SERIES, Level.INSTANCE),
    QidoResource.STUDY_SERIES: (Level.SERIES,),
    QidoResource.STUDY_INSTANCES: (Level.SERIES, Level.INSTANCE),
    QidoResource.STUDY_SERIES_INSTANCES: (Level.INSTANCE,),
}


def return_tags(query: QidoQuery) -> set[BaseTag]:
    """Every attribute a result of ``query`` may carry."""
    tags: set[BaseTag] = set()
    for level in RESULT_LEVELS[query.resource]:
        tags.update(REQUIRED[level], (V2_DEFAULTS if query.api_version >= 2 else V1_DEFAULTS)[level])
        if query.include_all:
            tags.update(V1_DEFAULTS[level], ALL_EXTRA[level])
    tags.update(query.include_fields, query.return_keys)
    tags.update(condition.tag for condition in query.conditions)
    if query.study_uid:
        tags.add(STUDY_INSTANCE_UID)
    if query.series_uid:
        tags.add(SERIES_INSTANCE_UID)
    return tags


async def build_datasets(reads: SearchReads, query: QidoQuery, hits: list[Hit], root: str = "") -> list[JsonDataset]:
    """Build the DICOM JSON of every result, reading only what the rows of the hits lack.

    ``root`` is the service's URL with the API version (``https://host/v2``), which RetrieveURL starts with.
    """
    tags = return_tags(query)
    plan = _source_plan(query, tags)
    computed = [tag for tag in RESULT_COMPUTED if tag in tags]
    datasets = await asyncio.gather(*(_dataset(reads, hit, tags, plan) for hit in hits))
    for hit, dataset in zip(hits, datasets, strict=True):
        dataset.update((json_key(tag), _result_element(tag, hit, query.resource.result_level, root))
                       for tag in computed)
    return [dict(sorted(dataset.items())) for dataset in datasets]


def _result_element(tag: BaseTag, hit: Hit, level: Level, root: str) -> dict[str, object]:
    if tag == INSTANCE_AVAILABILITY:
        return {"vr": "CS", "Value": ["ONLINE"]}
    url = f"{root}/studies/{hit.study_uid}"
    if level is not Level.STUDY:
        url += f"/series/{hit.series_uid}"
    if level is Level.INSTANCE:
        url += f"/instances/{hit.instance_uid}"
    return {"vr": "UR", "Value": [url]}


def _source_plan(query: QidoQuery, tags: Iterable[BaseTag]) -> dict[BaseTag, Level | None]:
    """Where each attribute comes from: a level's row, or None for the metadata blob.

    UIDs and RESULT_COMPUTED come from the hit itself. Attributes of a level below the result's are left out
    (Modality at study level would otherwise cost a metadata blob per study), and so are default ones no row
    keeps.
    """
    result_level = query.resource.result_level
    own_and_above = _LEVEL_ORDER[: _LEVEL_ORDER.index(result_level) + 1]
    below = _LEVEL_ORDER[len(own_and_above):]
    plan: dict[BaseTag, Level | None] = {}
    asked = {*query.include_fields, *query.return_keys}
    for tag in set(tags) - {STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID, *RESULT_COMPUTED}:
        if tag in STUDY_COMPUTED:
            plan[tag] = Level.STUDY
        elif tag in SERIES_COMPUTED:
            if result_level is not Level.STUDY:
                plan[tag] = Level.SERIES
        elif level := next((lvl for lvl in reversed(own_and_above) if tag in ROW_ATTRIBUTES[lvl]), None):
            plan[tag] = level  # the result's own level first: SpecificCharacterSet is kept at every level
        elif tag in asked and not any(tag in ROW_ATTRIBUTES[lvl] for lvl in below):
            plan[tag] = None  # asked for by name and kept in no row: the metadata blob
    return plan


async def _dataset(reads: SearchReads, hit: Hit, tags: set[BaseTag], plan: dict[BaseTag, Level | None]) -> JsonDataset:
    rows = await _rows(reads, hit, set(plan.values()))
    metadata: JsonDataset = {}
    if any(level is None and json_key(tag) not in hit.known for tag, level in plan.items()):
        metadata = await _representative_metadata(reads, hit)
    metadata = {**metadata, **hit.known}
    dataset: JsonDataset = {}
    for tag, level in plan.items():
        element = _computed(tag, rows.get(Level.STUDY), rows.get(Level.SERIES))
        if element is None:
            row = rows.get(level) if level is not None else None
            source = metadata if level is None else (row.attributes if row else {})
            element = source.get(json_key(tag))
        if element is not None and element.get("vr") not in BINARY_VRS:  # bulk data is not searched (as Azure)
            dataset[json_key(tag)] = element
    for tag, uid in ((STUDY_INSTANCE_UID, hit.study_uid), (SERIES_INSTANCE_UID, hit.series_uid),
                     (SOP_INSTANCE_UID, hit.instance_uid)):
        if tag in tags and uid:
            dataset[json_key(tag)] = {"vr": "UI", "Value": [uid]}
    return dataset


async def _rows(reads: SearchReads, hit: Hit, levels: set[Level | None]) -> dict[Level, Row | None]:
    rows: dict[Level, Row | None] = {Level.STUDY: hit.study, Level.SERIES: hit.series, Level.INSTANCE: hit.instance}
    if Level.STUDY in levels and rows[Level.STUDY] is None:
        rows[Level.STUDY] = await reads.study(hit.study_uid)
    if Level.SERIES in levels and rows[Level.SERIES] is None and hit.series_uid:
        rows[Level.SERIES] = await reads.series(hit.study_uid, hit.series_uid)
    return rows


def _computed(tag: BaseTag, study: Row | None, series: Row | None) -> dict[str, object] | None:
    if tag == MODALITIES_IN_STUDY and study is not None:
        modalities = sorted(study_row_modalities(study.entity))
        return {"vr": "CS", "Value": modalities} if modalities else None
    counts = {
        NUMBER_OF_STUDY_RELATED_SERIES: (study, "SeriesCount"),
        NUMBER_OF_STUDY_RELATED_INSTANCES: (study, "InstanceCount"),
        NUMBER_OF_SERIES_RELATED_INSTANCES: (series, "InstanceCount"),
    }
    if tag in counts:
        row, name = counts[tag]
        # A series row's copy of the study attributes has no counts: no value rather than a wrong 0.
        return None if row is None or name not in row.entity else {"vr": "IS", "Value": [int(row.entity[name] or 0)]}
    return None


async def _representative_metadata(reads: SearchReads, hit: Hit) -> JsonDataset:
    """The metadata of the result's instance, or of its series' or study's most recently stored instance."""
    row = hit.instance or (None if hit.series is None else reads.last_instance(hit.study_uid, hit.series))
    if row is None:
        rows = await reads.instances_of(hit.study_uid, hit.series_uid)
        row = max(rows, key=lambda r: r.updated, default=None)
    if row is None:
        return {}
    _, series, instance = row.row_key.split("|")
    ids = InstanceIdentifiers(hit.study_uid, series, instance)
    return await reads.metadata(StoredInstance(ids, str(row.entity["Version"])))
