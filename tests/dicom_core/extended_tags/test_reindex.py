"""Reindex over Azurite: a tag added to an archive of stored instances is indexed, errors listed, exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from pydicom.tag import BaseTag
from pydicom.uid import generate_uid

from dicom_core.extended_tags import reindex
from dicom_core.extended_tags.indexing import queryable_tag, registered_tags, search_extended
from dicom_core.extended_tags.registry import QueryStatus, TagStatus, get_tag, tag_errors
from dicom_core.extended_tags.service import add_tags, delete_tag
from dicom_core.model.errors import BadRequestError
from dicom_core.model.levels import Level
from dicom_core.operations.records import OperationStatus, get_operation
from dicom_core.operations.runner import Pace, run_operations
from dicom_core.search_index.extended import IndexedTag, values_partition
from dicom_core.storage.clients import Storage
from dicom_core.storage.tables import query_all
from tests.factories import make_dataset, to_bytes

REPO = Path(__file__).resolve().parents[3]
FAST = Pace(pause_seconds=0.0)
STUDIES, PER_STUDY = 5, 10
INSTANCE_NUMBER = "00200013"
PRIVATE = "00091001"
PRIVATE_CREATOR_ELEMENT = 0x00090010
PRIVATE_TAG = {"path": PRIVATE, "vr": "IS", "privateCreator": "ACME", "level": "Study"}


async def _store_archive(storage: Storage, stow_parts) -> list[str]:
    """Store 50 instances in 5 studies; the last study's private value (LO) is no IS."""
    studies = [generate_uid() for _ in range(STUDIES)]
    parts = []
    for index, study in enumerate(studies):
        series = generate_uid()
        for number in range(1, PER_STUDY + 1):
            dataset = make_dataset(study=study, series=series, InstanceNumber=number)
            dataset.add_new(PRIVATE_CREATOR_ELEMENT, "LO", "ACME")
            dataset.add_new(int(PRIVATE, 16), "LO", "abc" if index == STUDIES - 1 else str(index))
            parts.append(to_bytes(dataset))
    result = await stow_parts(storage, parts)
    assert result.status in (200, 202)  # 202: v2 stores invalid non-core values with a warning
    return studies


async def _add(storage: Storage, *items: dict[str, str]) -> str:
    result = await add_tags(storage, json.dumps(list(items)).encode(), "http://test", 2)
    assert result.status == 202
    return str(json.loads(result.body)["id"])  # type: ignore[arg-type]


async def _entries(storage: Storage, path: str) -> int:
    partition = values_partition(IndexedTag(path, "IS", Level.INSTANCE))
    return len(await query_all(storage.index, "PartitionKey eq @p", parameters={"p": partition}, select=["RowKey"]))


async def test_a_reindex_indexes_every_stored_instance_and_lists_bad_values(own: Storage, stow_parts) -> None:
    studies = await _store_archive(own, stow_parts)
    operation_id = await _add(own, {"path": "InstanceNumber", "level": "Instance"},
                              PRIVATE_TAG)
    await run_operations(own, pace=FAST)
    operation = await get_operation(own, operation_id)
    assert operation is not None
    assert (operation.status, operation.percent_complete) == (OperationStatus.SUCCEEDED, 100)
    assert operation.checkpoint["processed"] == STUDIES * PER_STUDY
    await registered_tags(own, fresh=True)
    tag = await queryable_tag(own, reindex_tag(INSTANCE_NUMBER), "InstanceNumber")
    assert tag is not None
    found = await search_extended(own, tag, "InstanceNumber", "7", fuzzy=False)
    assert sorted(match.study for match in found.matches) == sorted(studies)
    assert not found.erroneous
    errors = await tag_errors(own, PRIVATE)
    assert {error.ids.study for error in errors} == {studies[-1]} and len(errors) == PER_STUDY
    private = await get_tag(own, PRIVATE)
    assert private is not None and (private.status, private.query_status) == (TagStatus.READY, QueryStatus.DISABLED)
    with pytest.raises(BadRequestError, match="disabled"):
        await queryable_tag(own, reindex_tag(PRIVATE), PRIVATE)


def reindex_tag(path: str) -> BaseTag:
    return BaseTag(int(path, 16))


async def test_a_deleted_tag_loses_its_entries_and_its_row(own: Storage, stow_parts) -> None:
    await _store_archive(own, stow_parts)
    await _add(own, {"path": "InstanceNumber", "level": "Instance"})
    await run_operations(own, pace=FAST)
    assert await _entries(own, INSTANCE_NUMBER) == STUDIES * PER_STUDY
    assert (await delete_tag(own, "InstanceNumber")).status == 204
    await run_operations(own, pace=FAST)
    assert await _entries(own, INSTANCE_NUMBER) == 0
    assert await get_tag(own, INSTANCE_NUMBER) is None


_WORKER = """
import asyncio, sys
from dicom_core.extended_tags import reindex
from dicom_core.operations.runner import Pace, run_operations
from dicom_core.settings import Settings
from dicom_core.storage.clients import open_storage

reindex.CHUNK_INSTANCES = 10
connection, files, metadata, prefix = sys.argv[1:5]
async def main():
    storage = await open_storage(Settings(storage_connection_string=connection, blob_container=files,
                                          metadata_container=metadata, table_prefix=prefix))
    await run_operations(storage, worker="doomed", pace=Pace(lease_seconds=2.0, pause_seconds=1.0))
asyncio.run(main())
"""


async def test_a_worker_killed_mid_reindex_is_resumed_and_finishes_exactly_once(
    own: Storage, stow_parts, monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _store_archive(own, stow_parts)
    operation_id = await _add(own, {"path": "InstanceNumber", "level": "Instance"})
    settings = own.settings
    worker = subprocess.Popen([sys.executable, "-c", _WORKER, settings.storage_connection_string,
                               settings.blob_container, settings.metadata_container, settings.table_prefix],
                              cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 60
        while True:
            operation = await get_operation(own, operation_id)
            assert operation is not None and time.monotonic() < deadline and worker.poll() is None
            if operation.checkpoint["processed"] >= 10:
                break
            await asyncio.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    interrupted = await get_operation(own, operation_id)
    assert interrupted is not None and interrupted.status is OperationStatus.RUNNING
    assert interrupted.checkpoint["processed"] < STUDIES * PER_STUDY
    monkeypatch.setattr(reindex, "CHUNK_INSTANCES", 10)
    assert await run_operations(own, worker="survivor", pace=FAST) == 0  # the dead worker's lease still holds
    await asyncio.sleep(2.5)
    await run_operations(own, worker="survivor", pace=FAST)
    finished = await get_operation(own, operation_id)
    assert finished is not None and finished.status is OperationStatus.SUCCEEDED
    assert finished.checkpoint["processed"] == STUDIES * PER_STUDY
    assert await _entries(own, INSTANCE_NUMBER) == STUDIES * PER_STUDY


async def test_a_chunk_reads_on_into_the_next_shards_when_a_shards_rows_run_out(
    own: Storage, stow_parts, monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _store_archive(own, stow_parts)  # 5 studies of 10 instances: a shard holds at most what its studies hold
    operation = await get_operation(own, await _add(own, {"path": "InstanceNumber", "level": "Instance"}))
    assert operation is not None
    monkeypatch.setattr(reindex, "CHUNK_INSTANCES", 25)
    counted = {**operation.checkpoint, "total": STUDIES * PER_STUDY}

    step = await reindex.reindex_step(own, replace(operation, checkpoint=counted))

    assert step.checkpoint["processed"] == 25 and step.checkpoint["shard"] > 0
    assert await _entries(own, INSTANCE_NUMBER) == 25
