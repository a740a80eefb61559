"""Reads of a study partition: the instance rows of some of a study's series by one query."""

from __future__ import annotations

from pydicom.uid import generate_uid

from dicom_core.index.reads import instance_rows, instance_rows_of_series
from dicom_core.storage.clients import Storage
from tests.factories import make_dataset, to_bytes


async def test_instance_rows_of_some_series_are_exactly_theirs(storage: Storage, stow_parts) -> None:
    study, series = generate_uid(), [generate_uid() for _ in range(3)]
    datasets = [make_dataset(study=study, series=uid) for uid in series for _ in range(2)]
    assert (await stow_parts(storage, [to_bytes(ds) for ds in datasets])).status == 200
    rows = await instance_rows_of_series(storage, study, [series[2], series[0]], select=["Version"])
    expected = sorted(f"instance|{ds.SeriesInstanceUID}|{ds.SOPInstanceUID}" for ds in datasets
                      if ds.SeriesInstanceUID != series[1])
    assert [row["RowKey"] for row in rows] == expected  # RowKey order, the third series' rows left out
    assert len(await instance_rows(storage, study)) == 6
