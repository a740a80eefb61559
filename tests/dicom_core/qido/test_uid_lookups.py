"""Searches by SeriesInstanceUID and SOPInstanceUID: point reads of one entity per UID, which holds every target
the UID was stored in."""

from __future__ import annotations

import pytest
from pydicom.uid import generate_uid

from dicom_core.delete.service import delete_series, delete_study
from dicom_core.qido.query import QidoResource
from dicom_core.qido.service import SearchRequest, SearchResults, search_datasets
from dicom_core.search_index.keys import INSTANCES_BY_UID, SERIES_BY_UID, parse_entries, uid_key
from dicom_core.storage.clients import Storage
from tests.factories import make_instance

SERIES, INSTANCES = QidoResource.ALL_SERIES, QidoResource.ALL_INSTANCES
STUDY_UID, SERIES_UID = "0020000D", "0020000E"


async def _search(storage: Storage, resource: QidoResource, query: str) -> SearchResults:
    return await search_datasets(storage, SearchRequest(resource, 2, query))


def _studies(results: SearchResults) -> list[str]:
    return sorted(dataset[STUDY_UID]["Value"][0] for dataset in results.datasets)


async def _targets(storage: Storage, index: str, uid: str) -> list[str]:
    key = uid_key(index, uid)
    return sorted(entry.study for entry in parse_entries(await storage.index.get_entity(key.partition, uid)))


async def _stored_in_two_studies(storage: Storage, stow_parts, *, same_series: bool) -> tuple[list[str], str, str]:
    """One SOP instance UID (and, with ``same_series``, one series UID) stored in two studies."""
    studies, series, sop = [str(generate_uid()) for _ in range(2)], str(generate_uid()), str(generate_uid())
    for study in studies:
        part = make_instance(study=study, series=series if same_series else str(generate_uid()), sop=sop)
        assert (await stow_parts(storage, [part])).status == 200
    return sorted(studies), series, sop


async def test_a_sop_instance_uid_stored_in_two_studies_is_found_in_both_from_one_entity(
    own: Storage, stow_parts
) -> None:
    studies, _, sop = await _stored_in_two_studies(own, stow_parts, same_series=False)
    assert await _targets(own, INSTANCES_BY_UID, sop) == studies
    assert _studies(await _search(own, INSTANCES, f"SOPInstanceUID={sop}")) == studies


async def test_a_series_uid_stored_in_two_studies_is_found_in_both(own: Storage, stow_parts) -> None:
    studies, series, _ = await _stored_in_two_studies(own, stow_parts, same_series=True)
    assert await _targets(own, SERIES_BY_UID, series) == studies
    assert _studies(await _search(own, SERIES, f"SeriesInstanceUID={series}")) == studies


@pytest.mark.parametrize("level", ["study", "series"])
async def test_deleting_one_target_of_a_uid_keeps_the_other(own: Storage, stow_parts, level: str) -> None:
    studies, series, sop = await _stored_in_two_studies(own, stow_parts, same_series=True)
    if level == "study":
        assert (await delete_study(own, studies[0])).status == 204
    else:
        assert (await delete_series(own, studies[0], series)).status == 204
    assert await _targets(own, INSTANCES_BY_UID, sop) == studies[1:]
    assert await _targets(own, SERIES_BY_UID, series) == studies[1:]
    assert _studies(await _search(own, INSTANCES, f"SOPInstanceUID={sop}")) == studies[1:]
    assert _studies(await _search(own, SERIES, f"SeriesInstanceUID={series}")) == studies[1:]


async def test_a_deleted_uid_is_found_nowhere_and_found_again_once_stored_again(own: Storage, stow_parts) -> None:
    studies, series, sop = await _stored_in_two_studies(own, stow_parts, same_series=True)
    for study in studies:
        assert (await delete_study(own, study)).status == 204
    assert await _targets(own, INSTANCES_BY_UID, sop) == []
    assert (await _search(own, INSTANCES, f"SOPInstanceUID={sop}")).datasets == []
    assert (await stow_parts(own, [make_instance(study=studies[1], series=series, sop=sop)])).status == 200
    assert _studies(await _search(own, INSTANCES, f"SOPInstanceUID={sop}")) == studies[1:]


async def test_a_list_of_uids_reads_one_index_entity_per_uid_stored(own: Storage, stow_parts) -> None:
    study, series = str(generate_uid()), str(generate_uid())
    sops = [str(generate_uid()) for _ in range(3)]
    parts = [make_instance(study=study, series=series, sop=sop) for sop in sops]
    assert (await stow_parts(own, parts)).status == 200
    one = await _search(own, INSTANCES, f"SOPInstanceUID={sops[0]}")
    three = await _search(own, INSTANCES, "SOPInstanceUID=" + "\\".join([*sops, str(generate_uid())]))
    assert len(three.datasets) == 3
    # The rows of the study and series are read once whatever the list; each UID stored adds its entity and row.
    assert three.entities_read - one.entities_read == 2 * 2
