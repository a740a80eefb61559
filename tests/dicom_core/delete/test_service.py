"""The delete service against real Azurite: rows, counts, index entries, documents, cleanup entries, races."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableEntity
from pydicom.uid import generate_uid

from dicom_core.delete import service as delete_service
from dicom_core.delete.service import delete_instance, delete_scope, delete_series, delete_study
from dicom_core.documents.series_documents import document_name
from dicom_core.index import delete as index_delete
from dicom_core.index.cleanup_entries import CleanupKind
from dicom_core.index.commit import CommitRows, commit_instance, read_commit_rows
from dicom_core.index.delete import bump_generation
from dicom_core.index.outbox import OUTBOX_PREFIX, ChangeAction
from dicom_core.index.rows import GENERATION_ROW, STUDY_ROW, InstanceRecord, series_row_key
from dicom_core.maintenance.blob_cleanup import all_entries, run_cleanup
from dicom_core.maintenance.consistency import check_consistency
from dicom_core.model.dicom_json import metadata_json
from dicom_core.model.errors import NotFoundError
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance, new_version
from dicom_core.qido.query import QidoResource
from dicom_core.qido.service import SearchRequest, search_datasets
from dicom_core.search_index.entries import IndexIntents, remove_index_entries
from dicom_core.search_index.keys import ALL_STUDIES, instance_key, parse_entries, parse_entry
from dicom_core.storage.clients import Storage
from dicom_core.wado.metadata import MetadataRequest, series_metadata
from tests.factories import make_dataset, make_instance, to_bytes

FAR_FUTURE = datetime.now(UTC) + timedelta(days=3650)


async def _row(storage: Storage, study: str, row_key: str) -> TableEntity | None:
    try:
        return await storage.studies.get_entity(study, row_key)
    except ResourceNotFoundError:
        return None


async def _listed(storage: Storage) -> set[str]:
    entries = storage.index.query_entities("PartitionKey eq @pk", parameters={"pk": ALL_STUDIES})
    return {parse_entry(entry).study async for entry in entries}


async def _found_studies(storage: Storage, query: str = "") -> list[str]:
    response = await search_datasets(storage, SearchRequest(QidoResource.ALL_STUDIES, 2, query))
    return [dataset["0020000D"]["Value"][0] for dataset in response.datasets]


async def _consistent(storage: Storage) -> list[str]:
    await run_cleanup(storage, now=FAR_FUTURE)
    return [str(finding) for finding in await check_consistency(storage)]


async def test_deleting_an_instance_keeps_counts_and_modalities_exact(own: Storage, stow_parts) -> None:
    study, series = generate_uid(), generate_uid()
    kept, removed = make_dataset(study=study, series=series, Modality="CT"), make_dataset(study=study, series=series,
                                                                                          Modality="MR")
    assert (await stow_parts(own, [to_bytes(kept), to_bytes(removed)])).status == 200
    await delete_instance(own, InstanceIdentifiers(study, series, removed.SOPInstanceUID))
    study_row, series_row = await _row(own, study, STUDY_ROW), await _row(own, study, series_row_key(series))
    counts = (study_row["InstanceCount"], study_row["SeriesCount"], json.loads(study_row["ModalityCounts"]))
    assert counts == (1, 1, {"CT": 1})
    assert series_row["InstanceCount"] == 1
    assert await _consistent(own) == []


async def test_deleting_the_last_instance_removes_the_series_and_study_rows(own: Storage, stow_parts) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    assert (await stow_parts(own, [make_instance(study=study, series=series, sop=sop)])).status == 200
    await delete_instance(own, InstanceIdentifiers(study, series, sop))
    assert await _row(own, study, STUDY_ROW) is None
    assert await _row(own, study, series_row_key(series)) is None
    assert study not in await _listed(own)
    assert await _consistent(own) == []


async def test_deleting_a_series_keeps_the_other_series_listed(own: Storage, stow_parts) -> None:
    study, kept, removed = generate_uid(), generate_uid(), generate_uid()
    parts = [make_instance(study=study, series=kept, Modality="CT")] + [
        make_instance(study=study, series=removed, Modality="MR") for _ in range(3)]
    assert (await stow_parts(own, parts)).status == 200
    await delete_series(own, study, removed)
    study_row = await _row(own, study, STUDY_ROW)
    counts = (study_row["InstanceCount"], study_row["SeriesCount"], json.loads(study_row["ModalityCounts"]))
    assert counts == (1, 1, {"CT": 1})
    assert await _found_studies(own, f"StudyInstanceUID={study}") == [study]
    assert await _found_studies(own, "ModalitiesInStudy=MR") == []
    assert await _consistent(own) == []


async def test_deleting_a_study_leaves_no_row_entry_or_blob(own: Storage, stow_parts) -> None:
    study = generate_uid()
    parts = [make_instance(study=study, series=series, PatientID="DEL-STUDY")
             for series in (generate_uid(), generate_uid()) for _ in range(2)]
    assert (await stow_parts(own, parts)).status == 200
    await delete_study(own, study)
    rows = [e async for e in own.studies.query_entities("PartitionKey eq @pk", parameters={"pk": study})]
    left = [str(r["RowKey"]) for r in rows if not str(r["RowKey"]).startswith(OUTBOX_PREFIX)]
    assert left == [GENERATION_ROW]  # the generation marker stays, so a later store sees the delete happened
    assert await _found_studies(own, "PatientID=DEL-STUDY") == []
    assert await _consistent(own) == []
    assert [b.name async for b in own.files.list_blobs(name_starts_with=study)] == []
    assert [b.name async for b in own.metadata.list_blobs(name_starts_with=study)] == []


async def test_blobs_stay_until_the_cleanup_delay_has_passed(own: Storage, stow_parts) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    assert (await stow_parts(own, [make_instance(study=study, series=series, sop=sop)])).status == 200
    await delete_instance(own, InstanceIdentifiers(study, series, sop))
    report = await run_cleanup(own, now=datetime.now(UTC))
    assert report.versions_deleted == 0
    assert len([b async for b in own.files.list_blobs(name_starts_with=study)]) == 1


async def test_delete_records_a_cleanup_entry_for_the_version_and_the_series_document(own: Storage, stow_parts) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    assert (await stow_parts(own, [make_instance(study=study, series=series, sop=sop)])).status == 200
    version = str((await _row(own, study, f"instance|{series}|{sop}"))["Version"])
    await delete_instance(own, InstanceIdentifiers(study, series, sop))
    targets = {(t.kind, t.version) for e in await all_entries(own) for t in e.targets if t.study == study}
    assert (CleanupKind.VERSION, version) in targets
    assert (CleanupKind.DOCUMENT, "") in targets


async def test_absent_instance_is_not_found(own: Storage) -> None:
    with pytest.raises(NotFoundError):
        await delete_instance(own, InstanceIdentifiers(generate_uid(), generate_uid(), generate_uid()))


async def test_second_delete_of_a_series_is_not_found(own: Storage, stow_parts) -> None:
    study, series = generate_uid(), generate_uid()
    assert (await stow_parts(own, [make_instance(study=study, series=series)])).status == 200
    await delete_series(own, study, series)
    with pytest.raises(NotFoundError):
        await delete_series(own, study, series)


async def test_large_series_is_deleted_in_transactions_each_with_one_outbox_row(own: Storage, stow_parts) -> None:
    study, series = generate_uid(), generate_uid()
    count = index_delete.MAX_BATCH_INSTANCES + 5
    for start in range(0, count, 25):
        parts = [make_instance(study=study, series=series) for _ in range(min(25, count - start))]
        assert (await stow_parts(own, parts)).status == 200
    before = {str(e["RowKey"]) async for e in own.studies.query_entities(
        "PartitionKey eq @pk", parameters={"pk": study}) if str(e["RowKey"]).startswith(OUTBOX_PREFIX)}
    outcome = await delete_scope(own, index_delete.DeleteScope(study, series))
    assert (len(outcome.deleted), outcome.transactions) == (count, 2)
    outboxes = [e async for e in own.studies.query_entities("PartitionKey eq @pk", parameters={"pk": study})
                if str(e["RowKey"]).startswith(OUTBOX_PREFIX) and str(e["RowKey"]) not in before]
    changes = [change for outbox in outboxes for change in json.loads(outbox["Changes"])]
    assert {c["action"] for c in changes} == {ChangeAction.DELETE.value}
    assert len(outboxes) == 2 and len({c["instance"] for c in changes}) == count
    assert await _consistent(own) == []


async def test_series_document_no_longer_holds_a_deleted_instance(own: Storage, stow_parts) -> None:
    study, series = generate_uid(), generate_uid()
    kept, removed = generate_uid(), generate_uid()
    parts = [make_instance(study=study, series=series, sop=sop) for sop in (kept, removed)]
    assert (await stow_parts(own, parts)).status == 200
    await delete_instance(own, InstanceIdentifiers(study, series, removed))
    answer = await series_metadata(own, study, series, MetadataRequest())
    body = b"".join([chunk async for chunk in answer.body])
    assert [d["00080018"]["Value"][0] for d in json.loads(body)] == [kept]


async def test_store_that_found_the_study_before_its_delete_recreates_it_listed(own: Storage, stow_parts) -> None:
    study = generate_uid()
    assert (await stow_parts(own, [make_instance(study=study, PatientID="DEL-RACE")])).status == 200
    record = _record(study, PatientID="DEL-RACE")
    intents = IndexIntents(own, record)
    await intents.before_commit(await read_commit_rows(own, record.stored.ids))  # the study row is there: skipped
    await delete_study(own, study)
    await commit_instance(own, record, upsert=False, hooks=intents)
    assert study in await _listed(own)
    assert await _found_studies(own, "PatientID=DEL-RACE") == [study]


async def test_store_whose_entries_a_delete_removed_before_its_commit_writes_them_again(
    own: Storage, stow_parts
) -> None:
    study = generate_uid()
    record = _record(study, PatientID="DEL-REPAIR")
    intents = IndexIntents(own, record)
    await intents.before_commit(await read_commit_rows(own, record.stored.ids))  # a new study: every entry
    assert (await stow_parts(own, [make_instance(study=study, PatientID="DEL-REPAIR")])).status == 200
    await delete_study(own, study)  # removes the entries both stores rely on
    await commit_instance(own, record, upsert=False, hooks=intents)
    assert await _found_studies(own, "PatientID=DEL-REPAIR") == [study]


async def test_store_whose_instance_entry_a_late_delete_removed_writes_it_again(own: Storage, stow_parts) -> None:
    study, series = generate_uid(), generate_uid()
    assert (await stow_parts(own, [make_instance(study=study, series=series)])).status == 200
    record = _record(study, series=series)
    ids = record.stored.ids
    intents = IndexIntents(own, record)
    await intents.before_commit(await read_commit_rows(own, ids))  # the rows are there: its instance entry only
    # A delete of this instance that read it before an earlier delete removed it: it removes the entry, changes
    # the generation, then finds nothing to delete. The store's commit must not land without the entry.
    await remove_index_entries(own, study, ids.series, ids.instance)
    await bump_generation(own, study)
    await commit_instance(own, record, upsert=False, hooks=intents)
    key = instance_key(ids.instance)
    entity = await own.index.get_entity(key.partition, key.row_key(""))
    assert [(entry.study, entry.series) for entry in parse_entries(entity)] == [(study, ids.series)]


async def test_commit_after_a_delete_changed_the_generation_it_read_fails_and_writes_entries_again(
    own: Storage, stow_parts
) -> None:
    study, series = generate_uid(), generate_uid()
    assert (await stow_parts(own, [make_instance(study=study, series=series)])).status == 200
    record = _record(study, series=series)
    ids = record.stored.ids
    intents = IndexIntents(own, record)

    class DeleteBetweenEntriesAndCommit:
        """A delete's entry removal and generation change between the commit's read and its transaction."""

        calls = 0

        async def before_commit(self, rows: CommitRows) -> None:
            await intents.before_commit(rows)
            self.calls += 1
            if self.calls == 1:
                await remove_index_entries(own, study, ids.series, ids.instance)
                await bump_generation(own, study)

        async def after_commit(self, rows: CommitRows) -> None:
            await intents.after_commit(rows)

    hooks = DeleteBetweenEntriesAndCommit()
    await commit_instance(own, record, upsert=False, hooks=hooks)
    assert hooks.calls == 2  # the first transaction was refused: the marker it was conditioned on had changed
    key = instance_key(ids.instance)
    entity = await own.index.get_entity(key.partition, key.row_key(""))
    assert [(entry.study, entry.series) for entry in parse_entries(entity)] == [(study, ids.series)]


async def test_study_that_a_store_kept_alive_during_a_series_delete_stays_listed(
    own: Storage, stow_parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    study, removed = generate_uid(), generate_uid()
    assert (await stow_parts(own, [make_instance(study=study, series=removed, PatientID="DEL-KEPT")])).status == 200
    remove = delete_service.remove_index_entries

    async def remove_then_store(*args, **kwargs):
        removed_count = await remove(*args, **kwargs)  # the whole study's entries: its only series goes
        assert (await stow_parts(own, [make_instance(study=study, PatientID="DEL-KEPT")])).status == 200
        return removed_count

    monkeypatch.setattr(delete_service, "remove_index_entries", remove_then_store)
    await delete_series(own, study, removed)
    assert (await _row(own, study, STUDY_ROW))["InstanceCount"] == 1
    assert await _found_studies(own, "PatientID=DEL-KEPT") == [study]
    assert await _consistent(own) == []


async def test_document_of_a_deleted_series_is_removed_by_cleanup(own: Storage, stow_parts) -> None:
    study, series = generate_uid(), generate_uid()
    assert (await stow_parts(own, [make_instance(study=study, series=series)])).status == 200
    await delete_series(own, study, series)
    report = await run_cleanup(own, now=FAR_FUTURE)
    assert report.documents_deleted == 1
    assert not await own.metadata.get_blob_client(document_name(study, series)).exists()


def _record(study: str, **attributes) -> InstanceRecord:
    ds = make_dataset(study=study, **attributes)
    stored = StoredInstance(InstanceIdentifiers(str(study), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)),
                            new_version())
    return InstanceRecord(stored=stored, sop_class_uid=str(ds.SOPClassUID), transfer_syntax="1.2.840.10008.1.2.1",
                          size=0, metadata=metadata_json(ds))

