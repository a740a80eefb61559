"""Series metadata document writers: a batch of changes is one block and one commit, and stays verified along
the chain of series row ETags it was given."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from azure.storage.blob.aio import BlobClient
from pydicom.uid import generate_uid

from dicom_core.documents import document_writes
from dicom_core.documents.document_writes import add_committed, add_instance, remove_instance
from dicom_core.documents.known_documents import known_document, known_without_binary
from dicom_core.documents.series_documents import (
    SEPARATOR,
    STATE_KEY,
    UNVERIFIED,
    block_id,
    document_name,
    exact_state,
    record,
    series_state,
)
from dicom_core.index.commit import SeriesCommit
from dicom_core.index.rows import InstanceRecord
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance, new_version
from dicom_core.storage.clients import Storage

SOP_INSTANCE_UID = "00080018"
ENCAPSULATED_DOCUMENT = {"00420011": {"vr": "OB", "InlineBinary": "AAAA"}}  # a binary attribute


@pytest.fixture
def by_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Documents grow by blocks from their first batch (none is small enough to be written whole)."""
    monkeypatch.setattr(document_writes, "WHOLE_PUT_BYTES", 0)


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


def _landed(before: str | None, after: str, stored: list[StoredInstance], replaced: frozenset[str] = frozenset(),
            binary: bool = False) -> SeriesCommit:
    records = tuple(InstanceRecord(stored=s, sop_class_uid="", transfer_syntax="", size=0,
                                   metadata=_metadata(s) | (ENCAPSULATED_DOCUMENT if binary else {}))
                    for s in stored)
    return SeriesCommit(before=before, after=after, records=records, replaced=replaced)


async def _blocks(storage: Storage, study: str, series: str) -> list[str]:
    committed, _ = await storage.metadata.get_blob_client(document_name(study, series)).get_block_list("committed")
    return [block.id for block in committed]


async def _held(storage: Storage, study: str, series: str) -> list[str]:
    """The SOP Instance UIDs of the document's records, as stored (duplicates kept)."""
    data = await (await storage.metadata.download_blob(document_name(study, series))).readall()
    return [json.loads(line)[SOP_INSTANCE_UID]["Value"][0] for line in data.split(SEPARATOR) if line]


async def _state(storage: Storage, study: str, series: str) -> str:
    properties = await storage.metadata.get_blob_client(document_name(study, series)).get_blob_properties()
    return str(properties.metadata[STATE_KEY])


async def test_one_transactions_instances_are_one_block_and_one_commit(storage: Storage, commits, by_blocks) -> None:
    study, series = generate_uid(), generate_uid()
    stored = [_stored(study, series) for _ in range(11)]
    await add_committed(storage, study, [_landed(None, "e1", stored)])
    assert len(await _blocks(storage, study, series)) == 1 and len(commits) == 1
    assert sorted(await _held(storage, study, series)) == sorted(s.ids.instance for s in stored)


async def test_several_transactions_submitted_together_are_one_block_and_one_commit(
    storage: Storage, commits, by_blocks,
) -> None:
    study, series = generate_uid(), generate_uid()
    await add_committed(storage, study, [_landed(None, "e1", [_stored(study, series)]),
                                         _landed("e1", "e2", [_stored(study, series)]),
                                         _landed("e2", "e3", [_stored(study, series) for _ in range(3)])])
    assert len(await _blocks(storage, study, series)) == 1 and len(commits) == 1
    assert await _state(storage, study, series) == series_state("e3")


async def test_every_member_of_a_transaction_submitting_it_writes_its_records_once(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    stored = [_stored(study, series) for _ in range(5)]
    landed = _landed(None, "e1", stored)
    await asyncio.gather(*(add_committed(storage, study, [landed]) for _ in stored))
    assert sorted(await _held(storage, study, series)) == sorted(s.ids.instance for s in stored)


async def test_a_chain_of_transactions_from_a_new_series_keeps_the_document_verified(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    await add_committed(storage, study, [_landed(None, "e1", [_stored(study, series)])])
    assert await _state(storage, study, series) == series_state("e1")
    await add_committed(storage, study, [_landed("e1", "e2", [_stored(study, series)])])
    assert await _state(storage, study, series) == series_state("e2")


async def test_transactions_of_one_batch_are_chained_whatever_order_they_were_submitted_in(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    await add_committed(storage, study, [_landed(None, "e1", [_stored(study, series)])])
    later = [("e3", "e4"), ("e2", "e3"), ("e1", "e2")]
    await asyncio.gather(*(add_committed(storage, study, [_landed(b, a, [_stored(study, series)])])
                           for b, a in later))
    assert await _state(storage, study, series) == series_state("e4")
    assert len(await _held(storage, study, series)) == 4


async def _exact_state(storage: Storage, study: str, series: str) -> str | None:
    properties = await storage.metadata.get_blob_client(document_name(study, series)).get_blob_properties()
    return exact_state(properties.metadata)


async def test_a_transaction_ahead_of_a_gap_waits_and_the_document_is_not_exact_until_the_gap_closes(
    storage: Storage,
) -> None:
    study, series = generate_uid(), generate_uid()
    await add_committed(storage, study, [_landed(None, "e1", [_stored(study, series)])])
    await add_committed(storage, study, [_landed("e2", "e3", [_stored(study, series)])])
    assert await _exact_state(storage, study, series) is None
    await add_committed(storage, study, [_landed("e3", "e4", [_stored(study, series)])])
    assert await _exact_state(storage, study, series) is None
    await add_committed(storage, study, [_landed("e1", "e2", [_stored(study, series)])])
    assert await _exact_state(storage, study, series) == series_state("e4")
    assert len(await _held(storage, study, series)) == 4


async def test_an_upsert_ahead_of_a_gap_leaves_the_document_unverified(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    first = _stored(study, series)
    await add_committed(storage, study, [_landed(None, "e1", [first])])
    newer = StoredInstance(first.ids, new_version())
    await add_committed(storage, study, [_landed("e2", "e3", [newer], frozenset({first.ids.instance}))])
    assert await _state(storage, study, series) == UNVERIFIED
    await add_committed(storage, study, [_landed("e1", "e2", [_stored(study, series)])])
    assert await _state(storage, study, series) == UNVERIFIED  # once unverified, only a reader makes it exact


async def test_an_upsert_of_a_record_inside_a_batch_block_leaves_the_document_unverified(
    storage: Storage, by_blocks,
) -> None:
    study, series = generate_uid(), generate_uid()
    stored = [_stored(study, series) for _ in range(2)]
    await add_committed(storage, study, [_landed(None, "e1", stored)])
    newer = StoredInstance(stored[0].ids, new_version())
    await add_committed(storage, study, [_landed("e1", "e2", [newer], frozenset({newer.ids.instance}))])
    assert await _state(storage, study, series) == UNVERIFIED


async def test_an_upsert_of_an_instance_block_replaces_it_and_stays_verified(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    old = _stored(study, series)
    blob = storage.metadata.get_blob_client(document_name(study, series))  # a document written before batch blocks
    await blob.stage_block(block_id(old.ids.instance, old.version), record(_metadata(old)))
    await blob.commit_block_list([block_id(old.ids.instance, old.version)], metadata={STATE_KEY: series_state("e1")})
    newer = StoredInstance(old.ids, new_version())
    await add_committed(storage, study, [_landed("e1", "e2", [newer], frozenset({old.ids.instance}))])
    assert await _state(storage, study, series) == series_state("e2")
    assert await _held(storage, study, series) == [old.ids.instance]
    assert block_id(old.ids.instance, old.version) not in await _blocks(storage, study, series)


async def test_concurrent_adds_to_one_series_leave_every_record_in_few_commits(storage: Storage, commits) -> None:
    study, series = generate_uid(), generate_uid()
    stored = [_stored(study, series) for _ in range(20)]
    await asyncio.gather(*(add_instance(storage, s, _metadata(s)) for s in stored))
    assert sorted(await _held(storage, study, series)) == sorted(s.ids.instance for s in stored)
    assert len(commits) <= 3
    assert await _state(storage, study, series) == UNVERIFIED  # nothing known of their transactions


async def test_cancelled_writers_do_not_lose_the_changes_of_the_others(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    stored = [_stored(study, series) for _ in range(10)]
    tasks = [asyncio.create_task(add_instance(storage, s, _metadata(s))) for s in stored]
    await asyncio.sleep(0)  # every task has queued its change; the first one is committing its batch
    tasks[0].cancel()  # the writer that commits
    tasks[5].cancel()  # a writer that waits
    await asyncio.gather(*tasks, return_exceptions=True)
    held = await _held(storage, study, series)
    assert {s.ids.instance for i, s in enumerate(stored) if i not in (0, 5)} <= set(held)
    assert stored[5].ids.instance not in held


async def test_a_change_made_by_another_process_after_our_commit_is_kept(storage: Storage, by_blocks) -> None:
    study, series = generate_uid(), generate_uid()
    ours, ours_too, theirs, next_one = (_stored(study, series) for _ in range(4))
    await add_instance(storage, ours, _metadata(ours))
    await add_instance(storage, ours_too, _metadata(ours_too))
    blob = storage.metadata.get_blob_client(document_name(study, series))
    committed = await _blocks(storage, study, series)
    await blob.stage_block(block_id(theirs.ids.instance, theirs.version), record(_metadata(theirs)))
    await blob.commit_block_list([*committed, block_id(theirs.ids.instance, theirs.version)])
    await add_instance(storage, next_one, _metadata(next_one))
    assert await _held(storage, study, series) == [s.ids.instance for s in (ours, ours_too, theirs, next_one)]


async def test_removing_an_instance_block_takes_it_out_and_leaves_the_document_unverified(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    kept, removed = _stored(study, series), _stored(study, series)
    blob = storage.metadata.get_blob_client(document_name(study, series))
    for s in (kept, removed):
        await blob.stage_block(block_id(s.ids.instance, s.version), record(_metadata(s)))
    await blob.commit_block_list([block_id(s.ids.instance, s.version) for s in (kept, removed)])
    await remove_instance(storage, removed.ids)
    assert await _held(storage, study, series) == [kept.ids.instance]
    assert await _state(storage, study, series) == UNVERIFIED


async def test_changes_of_different_series_are_committed_separately(storage: Storage) -> None:
    study = generate_uid()
    stored = [_stored(study, series) for series in (generate_uid(), generate_uid()) for _ in range(3)]
    await asyncio.gather(*(add_instance(storage, s, _metadata(s)) for s in stored))
    for series in {s.ids.series for s in stored}:
        assert sorted(await _held(storage, study, series)) == sorted(
            s.ids.instance for s in stored if s.ids.series == series)


async def test_a_document_deleted_after_our_commit_is_created_again(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    ours, next_one = _stored(study, series), _stored(study, series)
    await add_committed(storage, study, [_landed(None, "e1", [ours])])
    await storage.metadata.delete_blob(document_name(study, series))  # as the cleanup of a deleted series does
    await add_committed(storage, study, [_landed("e1", "e2", [next_one])])
    assert await _held(storage, study, series) == [next_one.ids.instance]
    assert await _exact_state(storage, study, series) is None  # not what e2 stands for


async def test_a_new_series_over_a_leftover_document_is_not_exact(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    await add_committed(storage, study, [_landed(None, "e1", [_stored(study, series)])])
    # The series was deleted (its document left behind) and is stored again: its row is created anew.
    await add_committed(storage, study, [_landed(None, "f1", [_stored(study, series)])])
    assert await _exact_state(storage, study, series) is None


async def test_a_document_of_one_put_blob_written_by_another_process_is_kept(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    theirs, ours = _stored(study, series), _stored(study, series)
    await storage.metadata.upload_blob(document_name(study, series), record(_metadata(theirs)),
                                       metadata={STATE_KEY: series_state("e1")})
    await add_committed(storage, study, [_landed("e1", "e2", [ours])])
    assert await _held(storage, study, series) == [theirs.ids.instance, ours.ids.instance]
    assert await _exact_state(storage, study, series) == series_state("e2")


async def test_a_new_series_over_a_document_left_by_another_process_keeps_its_records(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    left, ours = _stored(study, series), _stored(study, series)
    await storage.metadata.upload_blob(document_name(study, series), record(_metadata(left)),
                                       metadata={STATE_KEY: series_state("old")})
    await add_committed(storage, study, [_landed(None, "f1", [ours])])  # assumes a new document: refused, read
    assert await _held(storage, study, series) == [left.ids.instance, ours.ids.instance]
    assert await _exact_state(storage, study, series) is None


async def test_a_small_document_is_written_whole_by_one_put_blob_per_batch(storage: Storage, commits) -> None:
    study, series = generate_uid(), generate_uid()
    stored = [_stored(study, series) for _ in range(3)]
    for number, one in enumerate(stored):
        await add_committed(storage, study, [_landed(f"e{number}" if number else None, f"e{number + 1}", [one])])
    assert commits == [] and await _blocks(storage, study, series) == []
    assert await _held(storage, study, series) == [s.ids.instance for s in stored]
    assert await _exact_state(storage, study, series) == series_state("e3")


async def test_a_document_outgrowing_a_whole_put_continues_in_blocks(storage: Storage, monkeypatch) -> None:
    study, series = generate_uid(), generate_uid()
    first, second = _stored(study, series), _stored(study, series)
    await add_committed(storage, study, [_landed(None, "e1", [first])])
    monkeypatch.setattr(document_writes, "WHOLE_PUT_BYTES", len(record(_metadata(first))))  # now too large
    await add_committed(storage, study, [_landed("e1", "e2", [second])])
    assert len(await _blocks(storage, study, series)) == 1
    assert await _held(storage, study, series) == [first.ids.instance, second.ids.instance]
    assert await _exact_state(storage, study, series) == series_state("e2")


async def test_an_upsert_into_a_document_held_whole_replaces_the_record_and_stays_verified(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    stored = [_stored(study, series) for _ in range(2)]
    await add_committed(storage, study, [_landed(None, "e1", stored)])
    newer = StoredInstance(stored[0].ids, new_version())
    await add_committed(storage, study, [_landed("e1", "e2", [newer], frozenset({newer.ids.instance}))])
    assert sorted(await _held(storage, study, series)) == sorted(s.ids.instance for s in stored)
    assert await _exact_state(storage, study, series) == series_state("e2")


async def test_removing_an_instance_from_a_document_held_whole_takes_its_record_out(storage: Storage) -> None:
    study, series = generate_uid(), generate_uid()
    kept, removed = _stored(study, series), _stored(study, series)
    await add_committed(storage, study, [_landed(None, "e1", [kept, removed])])
    await remove_instance(storage, removed.ids)
    assert await _held(storage, study, series) == [kept.ids.instance]
    assert await _state(storage, study, series) == UNVERIFIED  # a delete's transaction is not known here


async def _document(storage: Storage, study: str, series: str) -> bytes:
    return await (await storage.metadata.download_blob(document_name(study, series))).readall()


async def test_a_document_grown_by_blocks_is_kept_by_its_writer_for_the_first_read(storage: Storage, by_blocks) -> None:
    study, series = generate_uid(), generate_uid()
    await add_committed(storage, study, [_landed(None, "e1", [_stored(study, series) for _ in range(2)])])
    await add_committed(storage, study, [_landed("e1", "e2", [_stored(study, series) for _ in range(2)])])
    assert len(await _blocks(storage, study, series)) == 2
    assert known_document(storage, study, series, "e2") == await _document(storage, study, series)


async def test_a_block_document_changed_by_an_upsert_is_not_kept_from_the_old_copy(storage: Storage, by_blocks) -> None:
    study, series = generate_uid(), generate_uid()
    stored = [_stored(study, series) for _ in range(2)]
    await add_committed(storage, study, [_landed(None, "e1", stored)])
    newer = StoredInstance(stored[0].ids, new_version())
    await add_committed(storage, study, [_landed("e1", "e2", [newer], frozenset({newer.ids.instance}))])
    assert known_document(storage, study, series, "e2") is None


async def test_a_block_document_whose_old_copy_this_process_lacks_is_not_kept(storage: Storage, by_blocks) -> None:
    study, series = generate_uid(), generate_uid()
    blob = storage.metadata.get_blob_client(document_name(study, series))  # written by another process
    await blob.stage_block("batch-other", record(_metadata(_stored(study, series))))
    await blob.commit_block_list(["batch-other"], metadata={STATE_KEY: series_state("e1")})
    await add_committed(storage, study, [_landed("e1", "e2", [_stored(study, series)])])
    assert await _exact_state(storage, study, series) == series_state("e2")
    assert known_document(storage, study, series, "e2") is None


async def test_a_block_document_is_kept_once_a_gap_in_its_transactions_closes(storage: Storage, by_blocks) -> None:
    study, series = generate_uid(), generate_uid()
    await add_committed(storage, study, [_landed(None, "e1", [_stored(study, series)])])
    await add_committed(storage, study, [_landed("e2", "e3", [_stored(study, series)])])
    assert known_document(storage, study, series, "e1") is None  # changed since: not kept for its old row
    await add_committed(storage, study, [_landed("e1", "e2", [_stored(study, series)])])
    kept = known_document(storage, study, series, "e3")
    assert kept is not None and sorted(kept.split(SEPARATOR)) == sorted((await _document(storage, study, series))
                                                                        .split(SEPARATOR))



@pytest.mark.parametrize("grown_by_blocks", [False, True])
@pytest.mark.parametrize("first_binary", [False, True])
async def test_a_kept_document_is_known_to_hold_no_binary_attribute_when_none_of_its_records_has_one(
    storage: Storage, monkeypatch: pytest.MonkeyPatch, grown_by_blocks: bool, first_binary: bool,
) -> None:
    if grown_by_blocks:
        monkeypatch.setattr(document_writes, "WHOLE_PUT_BYTES", 0)
    study, series = generate_uid(), generate_uid()
    await add_committed(storage, study, [_landed(None, "e1", [_stored(study, series)], binary=first_binary)])
    await add_committed(storage, study, [_landed("e1", "e2", [_stored(study, series)])])
    assert known_document(storage, study, series, "e2") is not None
    assert known_without_binary(storage, study, series) is not first_binary
