"""Self-healing: each kind of finding, produced in real storage, is repaired; a second run repairs nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydicom.uid import generate_uid

from dicom_core.changefeed.feed_reads import entries_after
from dicom_core.changefeed.sequencer import sequence_pending
from dicom_core.documents.series_documents import STATE_KEY, document_name, series_state
from dicom_core.index.outbox import ANNOUNCEMENT_TIMEOUT, Change, ChangeAction, outbox_operation
from dicom_core.index.reads import instance_rows
from dicom_core.index.rows import STUDY_ROW, series_row_key
from dicom_core.maintenance.blob_cleanup import all_entries, run_cleanup
from dicom_core.maintenance.consistency import check_consistency
from dicom_core.maintenance.repair import run_repair
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance, new_version
from dicom_core.search_index.entries import remove_index_entries
from dicom_core.storage.blobs import instance_blob_name, put_json
from dicom_core.storage.clients import Storage
from dicom_core.storage.tables import get_entity_or_none
from tests.factories import make_instance

REPO_ROOT = Path(__file__).resolve().parents[3]
FAR_FUTURE = datetime.now(UTC) + timedelta(days=3650)


async def _stored(storage: Storage, stow_parts, count: int = 2, series: str | None = None,
                  study: str | None = None) -> tuple[str, str]:
    study, series = study or str(generate_uid()), series or str(generate_uid())
    parts = [make_instance(study=study, series=series, Modality="CT") for _ in range(count)]
    assert (await stow_parts(storage, parts)).status == 200
    return study, series


async def _repaired_twice(storage: Storage, kinds: list[str]) -> list[str]:
    """Assert the findings are of ``kinds``, repair, assert none is left and a second run repairs nothing."""
    assert sorted(f.kind for f in await check_consistency(storage)) == sorted(kinds)
    first = await run_repair(storage)
    assert first.left == [] and first.repaired, first
    assert await check_consistency(storage) == []
    second = await run_repair(storage)
    assert second.repaired == [] and second.left == []
    return [str(repair) for repair in first.repaired]


async def test_an_orphan_blob_is_scheduled_and_then_deleted_by_the_cleanup(own: Storage, stow_parts) -> None:
    study, series = await _stored(own, stow_parts)
    stray = StoredInstance(InstanceIdentifiers(study, series, generate_uid()), new_version())
    await own.files.upload_blob(instance_blob_name(stray), b"stray")

    await _repaired_twice(own, ["orphan-blob"])
    await run_cleanup(own, now=FAR_FUTURE)

    assert not await own.files.get_blob_client(instance_blob_name(stray)).exists()
    assert await all_entries(own) == []


async def test_an_orphan_document_is_scheduled_and_then_deleted_by_the_cleanup(own: Storage, stow_parts) -> None:
    await _stored(own, stow_parts)
    name = document_name(generate_uid(), generate_uid())
    await put_json(own, name, b"{}\n")

    await _repaired_twice(own, ["orphan-document"])
    await run_cleanup(own, now=FAR_FUTURE)

    assert not await own.metadata.get_blob_client(name).exists()


async def test_wrong_study_counts_are_recomputed(own: Storage, stow_parts) -> None:
    study, _ = await _stored(own, stow_parts)
    row = await own.studies.get_entity(study, STUDY_ROW)
    await own.studies.update_entity({**row, "InstanceCount": 7, "SeriesCount": 3,
                                     "ModalityCounts": json.dumps({"CT": 1, "MR": 4})})

    await _repaired_twice(own, ["study-count"])

    row = await own.studies.get_entity(study, STUDY_ROW)
    assert (row["InstanceCount"], row["SeriesCount"], json.loads(row["ModalityCounts"])) == (2, 1, {"CT": 2})


async def test_a_wrong_series_count_is_recomputed(own: Storage, stow_parts) -> None:
    study, series = await _stored(own, stow_parts, count=3)
    row = await own.studies.get_entity(study, series_row_key(series))
    await own.studies.update_entity({**row, "InstanceCount": 1})

    await _repaired_twice(own, ["series-count"])

    assert (await own.studies.get_entity(study, series_row_key(series)))["InstanceCount"] == 3


async def test_a_series_left_without_instances_is_deleted_with_its_document(own: Storage, stow_parts) -> None:
    study, kept = await _stored(own, stow_parts)
    _, emptied = await _stored(own, stow_parts, count=1, study=study)
    [row] = await instance_rows(own, study, emptied)
    await own.studies.delete_entity(study, str(row["RowKey"]))

    await _repaired_twice(own, ["empty-series", "study-count", "document-mismatch"])

    assert await get_entity_or_none(own.studies, study, series_row_key(emptied)) is None
    study_row = await own.studies.get_entity(study, STUDY_ROW)
    assert (study_row["InstanceCount"], study_row["SeriesCount"]) == (2, 1)
    await run_cleanup(own, now=FAR_FUTURE)
    assert not await own.metadata.get_blob_client(document_name(study, emptied)).exists()
    assert await own.metadata.get_blob_client(document_name(study, kept)).exists()
    assert await check_consistency(own) == []


async def test_a_study_left_without_instances_is_deleted_with_its_entries(own: Storage, stow_parts) -> None:
    study, series = await _stored(own, stow_parts)
    for row in await instance_rows(own, study, series):
        await own.studies.delete_entity(study, str(row["RowKey"]))

    await _repaired_twice(own, ["empty-study", "empty-series", "document-mismatch"])

    assert await get_entity_or_none(own.studies, study, STUDY_ROW) is None
    assert await get_entity_or_none(own.studies, study, series_row_key(series)) is None
    await run_cleanup(own, now=FAR_FUTURE)
    assert await check_consistency(own) == []


async def test_a_delete_that_died_after_removing_the_studys_entries_is_listed_again(own: Storage, stow_parts) -> None:
    study, _ = await _stored(own, stow_parts)
    await remove_index_entries(own, study)  # what a study delete does first; it dies before deleting rows

    await _repaired_twice(own, ["study-not-listed", "series-not-listed", "instance-not-listed",
                                "instance-not-listed"])


async def test_a_delete_that_died_after_removing_an_instances_entry_is_listed_again(own: Storage, stow_parts) -> None:
    study, series = await _stored(own, stow_parts)
    row = (await instance_rows(own, study, series))[0]
    await remove_index_entries(own, study, series, str(row["RowKey"]).split("|")[2])

    await _repaired_twice(own, ["instance-not-listed"])


async def test_an_outbox_row_nobody_announces_reaches_the_feed_once(own: Storage, stow_parts) -> None:
    study, series = await _stored(own, stow_parts)
    await sequence_pending(own)
    before = len(await entries_after(own, 0, 1_000))
    long_ago = datetime.now(UTC) - ANNOUNCEMENT_TIMEOUT - timedelta(minutes=1)
    change = Change(ChangeAction.UPDATE, series, str(generate_uid()), new_version())
    await own.studies.submit_transaction([outbox_operation(study, new_version(), [change], long_ago)])

    await _repaired_twice(own, ["unsequenced-outbox"])
    await sequence_pending(own)

    entries = await entries_after(own, 0, 1_000)
    assert len(entries) == before + 1 and entries[-1].instance == change.instance


async def test_a_document_with_records_of_no_instance_is_rebuilt(own: Storage, stow_parts) -> None:
    study, series = await _stored(own, stow_parts)
    blob = own.metadata.get_blob_client(document_name(study, series))
    series_row = await own.studies.get_entity(study, series_row_key(series))
    content = await (await blob.download_blob()).readall()
    stray = json.dumps(json.loads(make_instance_json(study, series))).encode()
    await blob.upload_blob(content + stray + b"\n", overwrite=True,
                           metadata={STATE_KEY: series_state(str(series_row.metadata["etag"]))})

    await _repaired_twice(own, ["document-mismatch"])

    assert (await (await blob.download_blob()).readall()).count(b"\n") == 2


def make_instance_json(study: str, series: str) -> str:
    """A DICOM JSON record of an instance no row knows."""
    return json.dumps({"00080018": {"vr": "UI", "Value": [str(generate_uid())]},
                       "0020000D": {"vr": "UI", "Value": [study]}, "0020000E": {"vr": "UI", "Value": [series]}})


async def test_a_missing_file_is_left_for_an_operator(own: Storage, stow_parts) -> None:
    study, _ = await _stored(own, stow_parts)
    [blob] = [b.name async for b in own.files.list_blobs(name_starts_with=study)][:1]
    await own.files.delete_blob(blob)

    report = await run_repair(own)

    assert report.repaired == [] and [f.kind for f in report.left] == ["missing-blob"]


async def test_a_run_repairs_at_most_its_limit_and_the_next_the_rest(own: Storage, stow_parts) -> None:
    study, series = await _stored(own, stow_parts)
    for _ in range(3):
        stray = StoredInstance(InstanceIdentifiers(study, series, generate_uid()), new_version())
        await own.files.upload_blob(instance_blob_name(stray), b"stray")

    first = await run_repair(own, limit=2)
    second = await run_repair(own, limit=2)

    assert (len(first.repaired), len(first.left), len(second.repaired), len(second.left)) == (2, 1, 1, 0)
    assert await check_consistency(own) == []


async def test_the_command_repairs_and_prints_what_it_repaired(own: Storage, stow_parts, azurite) -> None:
    study, series = await _stored(own, stow_parts)
    stray = StoredInstance(InstanceIdentifiers(study, series, generate_uid()), new_version())
    await own.files.upload_blob(instance_blob_name(stray), b"stray")
    settings = own.settings
    env = {"DICOMWEB_STORAGE_CONNECTION_STRING": azurite.connection_string, "PATH": "",
           "DICOMWEB_BLOB_CONTAINER": settings.blob_container,
           "DICOMWEB_METADATA_CONTAINER": settings.metadata_container,
           "DICOMWEB_TABLE_PREFIX": settings.table_prefix}
    command = [sys.executable, "-m", "dicom_core.maintenance.consistency", "--repair"]

    first = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    second = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)

    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [f"repaired: {instance_blob_name(stray)}: scheduled for cleanup",
                                         "consistent: no findings"]
    assert (second.returncode, second.stdout.splitlines()) == (0, ["consistent: no findings"])

