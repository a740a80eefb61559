"""Series metadata documents: concurrent changes of one document in this process are committed as batches."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from azure.storage.blob import BlobBlock, BlockState
from azure.storage.blob.aio import BlobClient
from pydicom.uid import generate_uid

from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance, new_version
from dicom_core.documents.series_documents import _update, add_instance, block_id, document_name, record, remove_instance
from dicom_core.storage.clients import Storage

SOP_INSTANCE_UID = "00080018"


class BrokenChange(Exception):
    """Raised by a change on purpose."""


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The block list commits made while the test runs (counted, then made as usual)."""
    made: list[str] = []
    commit = BlobClient.commit_block_list

    async def counting(self: BlobClient, *args: object, **kwargs: object) -> object:
        made.append(self.blob_name)
        return await commit(self, *args, **kwargs)

    monkeypatch.setattr(BlobClient, "commit_block_list", counting)
    yield made


def _stored(study: str, series: str) -> StoredInstance:
    return StoredInstance(InstanceIdentifiers(study, series, generate_uid()), new_version())


def _metadata(stored: StoredInstance) -> dict:
    return {SOP_INSTANCE_UID: {"vr": "UI", "Value": [stored.ids.instance]}}


async def _blocks(storage: Storage, study: str, series: str) -> list[str]:
    committed, _ = await storage.metadata.get_blob_client(document_name(study, series)).get_block_list("committed")
    return [block.id for block in committed]


def _block(stored: StoredInstance) -> str:
    return block_id(stored.ids.instance, stored.version)


async def _commit_elsewhere(storage: Storage, stored: StoredInstance) -> None:
    """Add a block to the document as another process would: read, stage, commit, without this process's state."""
    blob = storage.metadata.get_blob_client(document_name(stored.ids.study, stored.ids.series))
    committed, _ = await blob.get_block_list("committed")
    await blob.stage_block(_block(stored), record(_metadata(stored)))
    await blob.commit_block_list([BlobBlock(b.id, BlockState.COMMITTED) for b in committed]
                                 + [BlobBlock(_block(stored), BlockState.UNCOMMITTED)])


async def test_concurrent_adds_to_one_series_leave_every_block_in_few_commits(storage: Storage, commits) -> None:
    study, series = generate_uid(), generate_uid()
    stored = [_stored(study, series) for _ in range(20)]
    await asyncio.gather(*(add_instance(storage, s, _metadata(s)) for s in stored))
    assert sorted(await _blocks(storage, study, series)) == sorted(_block(s) for s in stored)
    assert len(commits) <= 3


async def test_a_failing_change_fails_alone_and_the_rest_of_its_batch_is_committed(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    stored = [_stored(study, series) for _ in range(6)]

    def broken(blocks: list[str]) -> list[str]:
        raise BrokenChange

    failing = _update(storage, InstanceIdentifiers(study, series, generate_uid()), broken, {})
    results = await asyncio.gather(*(add_instance(storage, s, _metadata(s)) for s in stored[:3]), failing,
                                   *(add_instance(storage, s, _metadata(s)) for s in stored[3:]),
                                   return_exceptions=True)
    assert [type(result) for result in results] == [type(None)] * 3 + [BrokenChange] + [type(None)] * 3
    assert sorted(await _blocks(storage, study, series)) == sorted(_block(s) for s in stored)


async def test_cancelled_writers_do_not_lose_the_changes_of_the_others(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    stored = [_stored(study, series) for _ in range(10)]
    tasks = [asyncio.create_task(add_instance(storage, s, _metadata(s))) for s in stored]
    await asyncio.sleep(0)  # every task has queued its change; the first one is committing its batch
    tasks[0].cancel()  # the writer that commits
    tasks[5].cancel()  # a writer that waits
    await asyncio.gather(*tasks, return_exceptions=True)
    blocks = await _blocks(storage, study, series)
    assert {_block(s) for i, s in enumerate(stored) if i not in (0, 5)} <= set(blocks)
    assert _block(stored[5]) not in blocks


async def test_a_change_made_by_another_process_after_our_commit_is_kept(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    ours, theirs, next_one = (_stored(study, series) for _ in range(3))
    await add_instance(storage, ours, _metadata(ours))
    await _commit_elsewhere(storage, theirs)
    await add_instance(storage, next_one, _metadata(next_one))
    assert await _blocks(storage, study, series) == [_block(ours), _block(theirs), _block(next_one)]


async def test_removing_a_block_another_process_added_after_our_commit_takes_it_out(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    ours, theirs = _stored(study, series), _stored(study, series)
    await add_instance(storage, ours, _metadata(ours))
    await _commit_elsewhere(storage, theirs)
    await remove_instance(storage, theirs.ids)
    assert await _blocks(storage, study, series) == [_block(ours)]


async def test_changes_of_different_series_are_committed_separately(storage: Storage) -> None:
    study = generate_uid()
    stored = [_stored(study, series) for series in (generate_uid(), generate_uid()) for _ in range(3)]
    await asyncio.gather(*(add_instance(storage, s, _metadata(s)) for s in stored))
    for series in {s.ids.series for s in stored}:
        assert sorted(await _blocks(storage, study, series)) == sorted(
            _block(s) for s in stored if s.ids.series == series)


async def test_a_document_deleted_after_our_commit_is_created_again(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    ours, next_one = _stored(study, series), _stored(study, series)
    await add_instance(storage, ours, _metadata(ours))
    await storage.metadata.delete_blob(document_name(study, series))  # as the cleanup of a deleted series does
    await add_instance(storage, next_one, _metadata(next_one))
    assert await _blocks(storage, study, series) == [_block(next_one)]
