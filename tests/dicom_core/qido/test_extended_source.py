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


async def test_a_series_search_by_a_study_tag_reads_at_most_two_entities_per_result_asked_for(
    own: Storage, stow_parts,
) -> None:
    await _register(own, ExtendedTag(STUDY_ID, "SH", Level.STUDY, status=TagStatus.READY))
    studies = {generate_uid(): [generate_uid() for _ in range(5)] for _ in range(12)}
    parts = [make_instance(study=study, series=series, rows=1, columns=1, StudyID="MANY")
             for study, series_uids in studies.items() for series in series_uids]
    assert (await stow_parts(own, parts)).status == 200
    every_series = {series for series_uids in studies.values() for series in series_uids}
    # A study's series rows are read together (newest first needs them all): pages of 3 or more (5 series a study).
    for limit, offset in [(3, 0), (2, 3), (5, 5), (10, 0), (10, 20), (25, 0), (7, 50)]:
        found, entities = await _search(own, QidoResource.ALL_SERIES, f"StudyID=MANY&limit={limit}&offset={offset}")
        assert len(found) == min(limit, len(every_series) - offset) and set(found) <= every_series
        assert entities <= 2 * (offset + limit), (limit, offset, entities)


async def test_the_series_of_a_few_studies_of_a_study_tag_read_each_entry_and_series_row_once(
    own: Storage, stow_parts,
) -> None:
    await _register(own, ExtendedTag(STUDY_ID, "SH", Level.STUDY, status=TagStatus.READY))
    studies = {generate_uid(): [generate_uid() for _ in range(count)] for count in (1, 3, 2)}
    parts = [make_instance(study=study, series=series, rows=1, columns=1, StudyID="FEW")
             for study, series_uids in studies.items() for series in series_uids]
    assert (await stow_parts(own, parts)).status == 200
    found, entities = await _search(own, QidoResource.ALL_SERIES, "StudyID=FEW&limit=25")
    assert sorted(found) == sorted(series for series_uids in studies.values() for series in series_uids)
    assert entities == 3 + 6
