"""C-FIND at PATIENT, STUDY, SERIES and IMAGE level, answered by the QIDO search core page by page."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pynetdicom.events import Event
from pynetdicom.sop_class import PatientRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from dicom_core.model.errors import BadRequestError
from dicom_core.qido.query import MAX_LIMIT
from dicom_core.qido.service import SearchRequest, search_datasets
from dimse_gateway.core_loop import API_VERSION, CoreLoop
from dimse_gateway.identifiers import IdentifierError, QueryLevel, Search, search_of
from dimse_gateway.statuses import CANCELLED, DOES_NOT_MATCH_SOP_CLASS, PENDING, UNABLE_TO_PROCESS, failure

LOGGER = logging.getLogger(__name__)
PATIENT_COUNTS = {"NumberOfPatientRelatedStudies": None, "NumberOfPatientRelatedSeries": "NumberOfStudyRelatedSeries",
                  "NumberOfPatientRelatedInstances": "NumberOfStudyRelatedInstances"}
Response = tuple[int | Dataset, Dataset | None]


class SearchCutShort(RuntimeError):
    """The search stopped at its scan budget (no index serves its keys): the matches answered may be incomplete."""


def search_results(core: CoreLoop, search: Search) -> Iterator[Dataset]:
    """Every result of a search at its level (studies for PATIENT), in QIDO's order, read a page at a time.

    Raises SearchCutShort after the last result when QIDO's scan budget stopped the search. With query stats on
    (DICOMWEB_QUERY_STATS, as QIDO's X-DicomWeb-Entities-Read header), logs the entities its pages read.
    """
    offset = entities = matches = 0
    try:
        while True:
            page = core.run(search_datasets(core.storage, SearchRequest(
                resource=search.level.resource, api_version=API_VERSION,
                query_string=f"{search.query_string}&limit={MAX_LIMIT}&offset={offset}")))
            entities += page.entities_read
            for result in page.datasets:
                dataset = Dataset.from_json(result)
                if search.matches(dataset):
                    matches += 1
                    yield dataset
            if page.warning:
                raise SearchCutShort("The search stopped at its scan budget: add a key an index serves")
            if len(page.datasets) < MAX_LIMIT:
                return
            offset += MAX_LIMIT
    finally:
        if core.storage.settings.query_stats:
            LOGGER.info("C-FIND at %s level: %d matches, %d entities read, %d page(s) of QIDO %s", search.level.name,
                        matches, entities, offset // MAX_LIMIT + 1, search.query_string)


def handle_find(event: Event, core: CoreLoop, ae_title: str) -> Iterator[Response]:
    """Answer one C-FIND request: a pending response per match, then pynetdicom's final success."""
    patient_root = event.request.AffectedSOPClassUID == PatientRootQueryRetrieveInformationModelFind
    try:
        search = search_of(event.identifier, patient_root=patient_root)
        results = search_results(core, search)
        if search.level is QueryLevel.PATIENT:
            results = iter(_patients(list(results)))
        for result in results:
            if event.is_cancelled:
                yield CANCELLED, None
                return
            yield PENDING, _response(search, result, ae_title)
    except (IdentifierError, BadRequestError) as exc:
        yield failure(DOES_NOT_MATCH_SOP_CLASS, str(exc)), None
    except SearchCutShort as exc:
        LOGGER.warning("C-FIND cut short: %s", exc)
        yield failure(UNABLE_TO_PROCESS, str(exc)), None
    except Exception as exc:
        LOGGER.exception("C-FIND failed")
        yield failure(UNABLE_TO_PROCESS, str(exc)), None


def _patients(studies: list[Dataset]) -> list[Dataset]:
    """One result per PatientID: its first study's attributes and the counts over all its studies."""
    patients: dict[str, Dataset] = {}
    for study in studies:
        patient_id = str(study.get("PatientID", "") or "")
        patient = patients.get(patient_id)
        if patient is None:
            patient = patients[patient_id] = study
            for keyword in PATIENT_COUNTS:
                setattr(patient, keyword, 0)
        for keyword, per_study in PATIENT_COUNTS.items():
            count = 1 if per_study is None else int(study.get(per_study, 0) or 0)
            setattr(patient, keyword, int(getattr(patient, keyword)) + count)
    return list(patients.values())


def _response(search: Search, result: Dataset, ae_title: str) -> Dataset:
    """The identifier's keys with the result's values (empty where it has none)."""
    response = Dataset()
    response.QueryRetrieveLevel = search.level.name
    for key in search.keys:
        if key.keyword == "RetrieveAETitle":
            response.RetrieveAETitle = ae_title
        elif key.tag in result:
            response.add(result[key.tag])
        else:
            response.add(DataElement(key.tag, key.VR, [] if key.VR == "SQ" else None))
    if any(element.VR != "SQ" and not str(element.value or "").isascii() for element in response):
        response.SpecificCharacterSet = "ISO_IR 192"
    return response
