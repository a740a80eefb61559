"""The consistency checker: silent on consistent storage, one finding per kind of damage."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from dicom_core.changefeed.sequencer import sequence_pending
from dicom_core.documents.series_documents import document_name
from dicom_core.index.outbox import ANNOUNCEMENT_TIMEOUT, outbox_row_key
from dicom_core.index.reads import instance_rows, stored_instance
from dicom_core.index.rows import STUDY_ROW, series_row_key
from dicom_core.maintenance.consistency import Finding, check_consistency
from dicom_core.maintenance.consistency_window import check_window
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance, new_version
from dicom_core.search_index.keys import (
    ALL_STUDIES,
    INSTANCES_BY_UID,
    SERIES_BY_UID,
    instance_key,
    legacy_uid_keys,
    uid_entity,
    uid_key,
)
from dicom_core.storage.blobs import instance_blob_name, put_json, thumbnail_blob_name
from dicom_core.storage.clients import Storage
from tests.factories import make_instance

REPO_ROOT = Path(__file__).resolve().parents[3]


async def _stored(storage: Storage, stow_parts, count: int = 2) -> tuple[str, str]:
    study, series = str(generate_uid()), str(generate_uid())
    parts = [make_instance(study=study, series=series, Modality="CT") for _ in range(count)]
    assert (await stow_parts(storage, parts)).status == 200
    return study, series


async def _kinds(storage: Storage) -> list[str]:
    return [finding.kind for finding in await check_consistency(storage)]


async def test_consistent_storage_has_no_findings(own: Storage, stow_parts) -> None:
    await _stored(own, stow_parts)
    assert await check_consistency(own) == []


async def test_blob_without_row_or_cleanup_entry_is_an_orphan(own: Storage, stow_parts) -> None:
    study, series = await _stored(own, stow_parts)
    stray = StoredInstance(InstanceIdentifiers(study, series, generate_uid()), new_version())
    await own.files.upload_blob(instance_blob_name(stray), b"stray")
    assert await _kinds(own) == ["orphan-blob"]


async def test_thumbnail_of_a_version_no_row_references_is_an_orphan(own: Storage, stow_parts) -> None:
    study, series = await _stored(own, stow_parts)
    stray = StoredInstance(InstanceIdentifiers(study, series, generate_uid()), new_version())
    await own.metadata.upload_blob(thumbnail_blob_name(stray, "1.128x128.jpg"), b"stray")
    assert await _kinds(own) == ["orphan-blob"]


async def test_thumbnail_of_a_stored_version_is_no_finding(own: Storage, stow_parts) -> None:
    study, series = await _stored(own, stow_parts)
    row = (await instance_rows(own, study, series))[0]
    await own.metadata.upload_blob(thumbnail_blob_name(stored_instance(study, row), "1.128x128.jpg"), b"image")
    assert await check_consistency(own) == []


async def test_instance_row_without_its_file_is_reported(own: Storage, stow_parts) -> None:
    study, _ = await _stored(own, stow_parts)
    [blob] = [b.name async for b in own.files.list_blobs(name_starts_with=study)][:1]
    await own.files.delete_blob(blob)
    assert await _kinds(own) == ["missing-blob"]


async def test_study_row_with_a_wrong_count_is_reported(own: Storage, stow_parts) -> None:
    study, _ = await _stored(own, stow_parts)
    row = await own.studies.get_entity(study, STUDY_ROW)
    await own.studies.update_entity({**row, "ModalityCounts": json.dumps({"CT": 1})})
    assert await _kinds(own) == ["study-count"]


async def test_series_row_with_a_wrong_count_is_reported(own: Storage, stow_parts) -> None:
    study, series = await _stored(own, stow_parts)
    row = await own.studies.get_entity(study, series_row_key(series))
    await own.studies.update_entity({**row, "InstanceCount": 5})
    assert await _kinds(own) == ["series-count"]


async def test_study_without_its_unfiltered_index_entry_is_reported(own: Storage, stow_parts) -> None:
    study, _ = await _stored(own, stow_parts)
    async for entry in own.index.query_entities("PartitionKey eq @pk", parameters={"pk": ALL_STUDIES}):
        await own.index.delete_entity(entry["PartitionKey"], entry["RowKey"])
    assert await _kinds(own) == ["study-not-listed"]


@pytest.mark.parametrize("layout", [0, 1], ids=["range-per-uid", "partition-per-uid"])
async def test_instance_without_its_uid_target_is_reported_unless_a_layout_before_has_it(
    own: Storage, stow_parts, layout: int
) -> None:
    study, series = await _stored(own, stow_parts)
    instance = str((await instance_rows(own, study, series))[0]["RowKey"]).split("|")[2]
    await own.index.upsert_entity(uid_entity(instance_key(instance), study, series, instance, blank=True))
    assert await check_consistency(own) == [
        Finding("instance-not-listed", f"{study}/{series}/{instance}", f"no {INSTANCES_BY_UID} index entry")]
    assert [finding.kind for finding in (await check_window(own)).findings] == ["instance-not-listed"]
    legacy = legacy_uid_keys(INSTANCES_BY_UID, instance)[layout]
    await own.index.upsert_entity({"PartitionKey": legacy.partition,
                                   "RowKey": legacy.row_key("", study, series, instance)})
    assert await check_consistency(own) == []
    assert (await check_window(own)).findings == []


async def test_series_without_its_uid_entry_is_reported(own: Storage, stow_parts) -> None:
    study, series = await _stored(own, stow_parts)
    await own.index.upsert_entity(uid_entity(uid_key(SERIES_BY_UID, series), study, series, blank=True))
    assert [finding.kind for finding in await check_consistency(own, uid_entries=True)] == ["series-not-indexed"]


async def test_document_of_a_series_without_row_is_an_orphan(own: Storage, stow_parts) -> None:
    await _stored(own, stow_parts)
    await put_json(own, document_name(generate_uid(), generate_uid()), b"{}\n")
    assert await _kinds(own) == ["orphan-document"]


async def test_old_outbox_row_that_never_reached_the_feed_is_reported(own: Storage, stow_parts) -> None:
    study, _ = await _stored(own, stow_parts)
    long_ago = datetime.now(UTC) - ANNOUNCEMENT_TIMEOUT - timedelta(minutes=1)
    await own.studies.create_entity({"PartitionKey": study, "RowKey": outbox_row_key(new_version()),
                                     "Changes": "[]", "ChangedAt": long_ago})
    assert await _kinds(own) == ["unsequenced-outbox"]


async def test_an_old_confirmed_outbox_row_left_in_place_after_its_append_is_no_finding(own: Storage,
                                                                                        stow_parts) -> None:
    studies = [str(generate_uid()), str(generate_uid())]  # a request into two studies confirms its outbox rows
    assert (await stow_parts(own, [make_instance(study=study) for study in studies])).status == 200
    assert await sequence_pending(own) == 2
    long_ago = datetime.now(UTC) - ANNOUNCEMENT_TIMEOUT - timedelta(minutes=1)
    kept = [row for study in studies async for row in own.studies.query_entities(
        "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
        parameters={"pk": study, "low": "change|", "high": "change}"})]
    assert len(kept) == 2
    for row in kept:
        await own.studies.update_entity({**row, "ChangedAt": long_ago})
    assert await _kinds(own) == []


async def test_command_exits_1_and_prints_one_line_per_finding(own: Storage, stow_parts, azurite) -> None:
    study, series = await _stored(own, stow_parts)
    stray = StoredInstance(InstanceIdentifiers(study, series, generate_uid()), new_version())
    await own.files.upload_blob(instance_blob_name(stray), b"stray")
    settings = own.settings
    env = {"DICOMWEB_STORAGE_CONNECTION_STRING": azurite.connection_string, "PATH": "",
           "DICOMWEB_BLOB_CONTAINER": settings.blob_container,
           "DICOMWEB_METADATA_CONTAINER": settings.metadata_container,
           "DICOMWEB_TABLE_PREFIX": settings.table_prefix}
    completed = subprocess.run([sys.executable, "-m", "dicom_core.maintenance.consistency"], cwd=REPO_ROOT, env=env,
                               capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 1, completed.stderr
    assert completed.stdout.splitlines() == [f"orphan-blob: {instance_blob_name(stray)}: no instance row references it"
                                             " and no cleanup entry covers it", "1 finding(s)"]
