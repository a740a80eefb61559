"""Searches driven by an extended tag (`qido.extended_source`) on stored instances: the latest stored instance's
value of a study- or series-level tag, and pages that read in proportion to the results asked for."""

from __future__ import annotations

from pydicom.uid import generate_uid

from dicom_core.extended_tags.indexing import registered_tags
from dicom_core.extended_tags.registry import ExtendedTag, TagStatus, create_tags
from dicom_core.model.levels import Level
from dicom_core.qido.query import QidoResource
from dicom_core.qido.service import SearchRequest, search_datasets
from dicom_core.storage.clients import Storage
from tests.factories import make_instance

STUDY_ID, OPERATORS_NAME = "00200010", "00081070"


async def _register(storage: Storage, *tags: ExtendedTag) -> None:
    await create_tags(storage, list(tags))
    await registered_tags(storage, fresh=True)


async def _search(storage: Storage, resource: QidoResource, query: str) -> tuple[list[str], int]:
    results = await search_datasets(storage, SearchRequest(resource, 2, query))
    uid = {QidoResource.ALL_STUDIES: "0020000D", QidoResource.ALL_SERIES: "0020000E"}.get(resource, "00080018")
    return [dataset[uid]["Value"][0] for dataset in results.datasets], results.entities_read


async def test_a_study_tag_takes_the_value_of_the_latest_stored_instance(own: Storage, stow_parts) -> None:
    await _register(own, ExtendedTag(STUDY_ID, "SH", Level.STUDY, status=TagStatus.READY))
    study, series = generate_uid(), generate_uid()
    assert (await stow_parts(own, [make_instance(study=study, series=series, StudyID="FIRST")])).status == 200
    assert (await _search(own, QidoResource.ALL_STUDIES, "StudyID=FIRST"))[0] == [study]
    assert (await stow_parts(own, [make_instance(study=study, series=series, StudyID="SECOND")])).status == 200
    assert (await _search(own, QidoResource.ALL_STUDIES, "StudyID=FIRST"))[0] == []
    assert (await _search(own, QidoResource.ALL_STUDIES, "StudyID=SECOND"))[0] == [study]
    assert (await stow_parts(own, [make_instance(study=study, series=series)])).status == 200  # without a value
    assert (await _search(own, QidoResource.ALL_STUDIES, "StudyID=SECOND"))[0] == [study]


async def test_a_fuzzy_series_search_reads_an_entry_and_a_row_per_result(own: Storage, stow_parts) -> None:
    await _register(own, ExtendedTag(OPERATORS_NAME, "PN", Level.SERIES, status=TagStatus.READY))
    parts = [make_instance(study=generate_uid(), series=generate_uid(), rows=1, columns=1,
                           OperatorsName=f"Chen^Op{number}") for number in range(30)]
    assert (await stow_parts(own, parts)).status == 200
    found, entities = await _search(own, QidoResource.ALL_SERIES, "OperatorsName=chen&fuzzymatching=true&limit=10")
    assert len(found) == 10 and entities <= 2 * 10, entities
