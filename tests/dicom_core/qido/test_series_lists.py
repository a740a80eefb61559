"""A study's series read through its study row's list of them (point reads), or by range where the row has no
list it can be trusted with: a search finds every series either way."""

from __future__ import annotations

import json

from azure.data.tables import UpdateMode
from pydicom.uid import generate_uid

from dicom_core.delete.service import delete_series
from dicom_core.index.reads import get_study_row
from dicom_core.index.rows import SERIES_UIDS
from dicom_core.model.dicom_json import json_key
from dicom_core.model.tags import SERIES_INSTANCE_UID
from dicom_core.qido.query import QidoResource
from dicom_core.qido.service import SearchRequest, SearchResults, search_datasets
from dicom_core.storage.clients import Storage
from tests.factories import make_dataset, to_bytes

SERIES = 30


async def _store_study(storage: Storage, stow_parts) -> tuple[str, str, list[str]]:
    """A study of SERIES single-instance series for a patient of its own: (PatientID, study, series UIDs)."""
    patient, study = f"LIST-{generate_uid()[-12:]}", generate_uid()
    series = [generate_uid() for _ in range(SERIES)]
    parts = [to_bytes(make_dataset(study=study, series=uid, PatientID=patient)) for uid in series]
    assert (await stow_parts(storage, parts)).status == 200
    return patient, study, series


async def _series_by_patient(storage: Storage, patient: str) -> SearchResults:
    return await search_datasets(storage, SearchRequest(QidoResource.ALL_SERIES, 2, f"PatientID={patient}"))


def _found(results: SearchResults) -> list[str]:
    return sorted(dataset[json_key(SERIES_INSTANCE_UID)]["Value"][0] for dataset in results.datasets)


async def _rewrite_study_row(storage: Storage, study: str, series_uids: str | None) -> None:
    """Replace the study row with ``series_uids`` as its list (None: without one, as a row written before)."""
    row = await get_study_row(storage, study)
    assert row is not None
    written = {name: value for name, value in row.items() if name != SERIES_UIDS}
    if series_uids is not None:
        written[SERIES_UIDS] = series_uids
    await storage.studies.update_entity(written, mode=UpdateMode.REPLACE)


async def test_the_study_row_lists_every_series_a_store_created(storage: Storage, stow_parts) -> None:
    _, study, series = await _store_study(storage, stow_parts)
    row = await get_study_row(storage, study)
    assert row is not None and sorted(json.loads(row[SERIES_UIDS])) == sorted(series)


async def test_a_series_search_by_patient_finds_every_series_of_a_study_with_many(
    storage: Storage, stow_parts,
) -> None:
    patient, _, series = await _store_study(storage, stow_parts)
    results = await _series_by_patient(storage, patient)
    assert _found(results) == sorted(series)
    # Its index entry, its study row, its series rows by point reads: no range query into its partition
    assert (results.entities_read, results.study_ranges) == (1 + 1 + SERIES, 0)


async def test_a_series_search_after_a_series_delete_finds_the_rest(storage: Storage, stow_parts) -> None:
    patient, study, series = await _store_study(storage, stow_parts)
    assert (await delete_series(storage, study, series[3])).status == 204
    row = await get_study_row(storage, study)
    assert row is not None and sorted(json.loads(row[SERIES_UIDS])) == sorted(series[:3] + series[4:])
    assert _found(await _series_by_patient(storage, patient)) == sorted(series[:3] + series[4:])


async def test_a_study_row_without_a_list_has_its_series_read_by_range(storage: Storage, stow_parts) -> None:
    patient, study, series = await _store_study(storage, stow_parts)
    await _rewrite_study_row(storage, study, None)
    results = await _series_by_patient(storage, patient)
    assert (_found(results), results.study_ranges) == (sorted(series), 1)


async def test_a_list_that_disagrees_with_the_series_count_is_not_trusted(storage: Storage, stow_parts) -> None:
    patient, study, series = await _store_study(storage, stow_parts)
    await _rewrite_study_row(storage, study, json.dumps(series[1:]))
    results = await _series_by_patient(storage, patient)
    assert (_found(results), results.study_ranges) == (sorted(series), 1)


async def test_a_new_series_of_a_study_without_a_list_leaves_it_without(storage: Storage, stow_parts) -> None:
    patient, study, series = await _store_study(storage, stow_parts)
    await _rewrite_study_row(storage, study, None)
    added = generate_uid()
    assert (await stow_parts(storage, [to_bytes(make_dataset(study=study, series=added, PatientID=patient))])
            ).status == 200
    row = await get_study_row(storage, study)
    assert row is not None and SERIES_UIDS not in row
    assert _found(await _series_by_patient(storage, patient)) == sorted([*series, added])


async def test_a_study_instance_list_reads_its_series_by_point_and_instances_in_one_range(
    storage: Storage, stow_parts,
) -> None:
    study, series = generate_uid(), [generate_uid() for _ in range(3)]
    parts = [to_bytes(make_dataset(study=study, series=uid)) for uid in series for _ in range(2)]
    assert (await stow_parts(storage, parts)).status == 200
    results = await search_datasets(storage, SearchRequest(QidoResource.STUDY_INSTANCES, 2, "", study_uid=study))
    # Its study row, its 3 series rows, then its 6 instance rows in one range (not one range per series)
    assert (len(results.datasets), results.entities_read, results.study_ranges) == (6, 1 + 3 + 6, 1)


async def test_a_study_instance_list_of_single_instance_series_reads_no_range(storage: Storage, stow_parts) -> None:
    _, study, _ = await _store_study(storage, stow_parts)
    results = await search_datasets(storage, SearchRequest(QidoResource.STUDY_INSTANCES, 2, "", study_uid=study))
    # Its study row and its series rows, each copying its one instance row
    assert (len(results.datasets), results.entities_read, results.study_ranges) == (SERIES, 1 + SERIES, 0)
