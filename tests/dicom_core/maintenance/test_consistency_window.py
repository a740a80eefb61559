"""The repair timer's bounded window: each run reads about its rows and one blob page, resuming from a cursor."""

from __future__ import annotations

from pydicom.uid import generate_uid

from dicom_core.index.rows import STUDY_ROW
from dicom_core.maintenance.consistency import check_consistency
from dicom_core.maintenance.consistency_window import check_window
from dicom_core.maintenance.repair import RepairReport, run_repair
from dicom_core.storage.clients import Storage
from tests.factories import make_instance

STUDIES = 6
WINDOW_ROWS = 4
MAX_RUNS = 30  # far more than a cycle over STUDIES studies takes


async def _studies(storage: Storage, stow_parts) -> list[str]:
    studies = [str(generate_uid()) for _ in range(STUDIES)]
    for study in studies:
        assert (await stow_parts(storage, [make_instance(study=study, series=str(generate_uid()))])).status == 200
    return studies


async def _miscount(storage: Storage, study: str) -> None:
    row = await storage.studies.get_entity(study, STUDY_ROW)
    await storage.studies.update_entity({**row, "InstanceCount": 7})


async def _repaired_by_runs(storage: Storage) -> list[RepairReport]:
    """Repair runs with a small window until the checker finds nothing (at most MAX_RUNS)."""
    runs = []
    while await check_consistency(storage):
        assert len(runs) < MAX_RUNS, "a cycle of windows did not reach every study"
        runs.append(await run_repair(storage, rows=WINDOW_ROWS))
    return runs


async def test_a_window_reads_about_its_rows_of_the_studies_table_and_one_blob_page(own: Storage, stow_parts) -> None:
    await _studies(own, stow_parts)
    rows = [row async for row in own.studies.list_entities(select=["PartitionKey"])]
    blobs = [b async for b in own.files.list_blobs()] + [b async for b in own.metadata.list_blobs()]

    window = await check_window(own, rows=WINDOW_ROWS)

    assert 1 <= window.studies <= 2
    assert window.rows_read <= WINDOW_ROWS + 2 * (len(rows) // STUDIES) < len(rows)
    assert window.blobs_listed <= 2 * WINDOW_ROWS < len(blobs)


async def test_a_finding_past_the_first_window_is_repaired_by_a_later_run(own: Storage, stow_parts) -> None:
    studies = await _studies(own, stow_parts)
    for study in studies:
        await _miscount(own, study)

    runs = await _repaired_by_runs(own)

    assert len(runs[0].repaired) < STUDIES
    assert sorted(repair.subject for run in runs for repair in run.repaired) == sorted(studies)  # each once


async def test_the_cursor_wraps_around_to_studies_a_cycle_has_passed(own: Storage, stow_parts) -> None:
    studies = await _studies(own, stow_parts)
    await _repaired_by_runs(own)
    for _ in range(STUDIES):  # past the first studies
        await run_repair(own, rows=WINDOW_ROWS)
    await _miscount(own, studies[0])

    runs = await _repaired_by_runs(own)

    assert [repair.subject for run in runs for repair in run.repaired] == [studies[0]]
