"""A study's instance list reads its series and instance rows with one range query, whatever its series."""

from __future__ import annotations

from pydicom.uid import generate_uid

from dicom_core.model.dicom_json import json_key
from dicom_core.model.tags import SERIES_INSTANCE_UID, SOP_INSTANCE_UID
from dicom_core.qido.query import QidoResource
from dicom_core.qido.service import SearchRequest, SearchResults, search_datasets
from dicom_core.storage.clients import Storage
from tests.factories import make_dataset, to_bytes


async def _instances_of(storage: Storage, study: str, query: str = "") -> SearchResults:
    return await search_datasets(storage, SearchRequest(QidoResource.STUDY_INSTANCES, 2, query, study_uid=study))


def _pairs(results: SearchResults) -> list[tuple[str, str]]:
    return sorted((dataset[json_key(SERIES_INSTANCE_UID)]["Value"][0], dataset[json_key(SOP_INSTANCE_UID)]["Value"][0])
                  for dataset in results.datasets)


async def test_a_study_of_several_multi_instance_series_is_read_by_one_range_query(
    storage: Storage, stow_parts,
) -> None:
    study, series = generate_uid(), [generate_uid() for _ in range(4)]
    datasets = [make_dataset(study=study, series=uid) for uid in series for _ in range(3)]
    assert (await stow_parts(storage, [to_bytes(ds) for ds in datasets])).status == 200
    results = await _instances_of(storage, study)
    assert _pairs(results) == sorted((str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)) for ds in datasets)
    # Its 4 series rows and 12 instance rows, from one query (one per series before)
    assert (results.entities_read, results.study_ranges) == (4 + 12, 1)


async def test_a_study_instance_list_filters_and_pages_over_the_rows_read_together(
    storage: Storage, stow_parts,
) -> None:
    study, series = generate_uid(), [generate_uid() for _ in range(3)]
    datasets = [make_dataset(study=study, series=uid, InstanceNumber=number) for uid in series for number in (1, 2)]
    assert (await stow_parts(storage, [to_bytes(ds) for ds in datasets])).status == 200
    found = await _instances_of(storage, study, "InstanceNumber=2")
    assert _pairs(found) == sorted((str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)) for ds in datasets
                                   if ds.InstanceNumber == 2)
    pages = [_pairs(await _instances_of(storage, study, f"limit=2&offset={offset}")) for offset in (0, 2, 4)]
    assert sorted(pair for page in pages for pair in page) == _pairs(await _instances_of(storage, study))
    assert all(len(page) == 2 for page in pages)
