"""What the store and search paths call: a new instance indexed at once, the tag's state checked, errors flagged."""

from __future__ import annotations

from dataclasses import replace

import pytest
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from dicom_core.extended_tags.indexing import index_new_instance, queryable_tag, registered_tags, search_extended
from dicom_core.extended_tags.registry import ExtendedTag, QueryStatus, TagStatus, create_tags, get_tag, save_tag
from dicom_core.index.reads import get_instance
from dicom_core.model.errors import BadRequestError
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance
from dicom_core.model.levels import Level
from dicom_core.search_index.extended import Match
from dicom_core.storage.clients import Storage
from tests.factories import make_instance

STUDY_ID = "00200010"


async def _register(storage: Storage, status: TagStatus, query_status: QueryStatus = QueryStatus.ENABLED) -> None:
    await create_tags(storage, [ExtendedTag(STUDY_ID, "SH", Level.STUDY, status=status, query_status=query_status)])
    await registered_tags(storage, fresh=True)


async def _store(storage: Storage, stow_parts, study_id: str) -> StoredInstance:
    ids = InstanceIdentifiers(generate_uid(), generate_uid(), generate_uid())
    part = make_instance(study=ids.study, series=ids.series, sop=ids.instance, StudyID=study_id)
    assert (await stow_parts(storage, [part])).status in (200, 202)
    row = await get_instance(storage, ids)
    assert row is not None
    return StoredInstance(ids, str(row["Version"]))


def _metadata(study_id: str) -> dict[str, dict[str, object]]:
    return {STUDY_ID: {"vr": "SH", "Value": [study_id]}}


async def test_a_new_instance_is_searchable_at_once(own: Storage, stow_parts) -> None:
    await _register(own, TagStatus.READY)
    stored = await _store(own, stow_parts, "S-1")
    assert await index_new_instance(own, _metadata("S-1"), stored) == []
    tag = await queryable_tag(own, Tag("StudyID"), "StudyID")
    assert tag is not None
    found = await search_extended(own, tag, "StudyID", "s-1", fuzzy=False)
    assert (found.matches, found.erroneous) == ([Match(stored.ids.study)], False)


async def test_an_invalid_value_of_a_new_instance_is_returned_not_indexed_and_no_error_of_the_tag(
    own: Storage, stow_parts,
) -> None:
    await _register(own, TagStatus.READY)
    stored = await _store(own, stow_parts, "OK")
    errors = await index_new_instance(own, _metadata("X" * 17), stored)
    assert [error.tag.path for error in errors] == [STUDY_ID]
    tag = await get_tag(own, STUDY_ID)
    assert tag is not None
    found = await search_extended(own, tag, "StudyID", "X" * 16 + "*", fuzzy=False)
    assert (found.matches, found.erroneous) == ([], False)


async def test_a_strict_store_writes_nothing_when_a_value_is_invalid(own: Storage, stow_parts) -> None:
    await create_tags(own, [ExtendedTag(STUDY_ID, "SH", Level.STUDY, status=TagStatus.READY),
                            ExtendedTag("00200013", "IS", Level.INSTANCE, status=TagStatus.READY)])
    await registered_tags(own, fresh=True)
    stored = await _store(own, stow_parts, "KEPT")
    metadata = {**_metadata("STRICT-1"), "00200013": {"vr": "IS", "Value": [2**40]}}
    assert len(await index_new_instance(own, metadata, stored, strict=True)) == 1
    tag = await get_tag(own, STUDY_ID)
    assert tag is not None
    assert (await search_extended(own, tag, "StudyID", "STRICT-1", fuzzy=False)).matches == []


async def test_a_tag_being_added_indexes_stores_but_refuses_searches(own: Storage, stow_parts) -> None:
    await _register(own, TagStatus.ADDING)
    stored = await _store(own, stow_parts, "A-1")
    await index_new_instance(own, _metadata("A-1"), stored)
    with pytest.raises(BadRequestError, match="not queryable"):
        await queryable_tag(own, Tag("StudyID"), "StudyID")
    tag = await get_tag(own, STUDY_ID)
    assert tag is not None
    await save_tag(own, replace(tag, status=TagStatus.READY))
    await registered_tags(own, fresh=True)
    ready = await queryable_tag(own, Tag("StudyID"), "StudyID")
    assert ready is not None
    assert (await search_extended(own, ready, "StudyID", "A-1", fuzzy=False)).matches == [Match(stored.ids.study)]


async def test_a_disabled_tag_refuses_searches_and_an_unknown_one_is_none(own: Storage) -> None:
    await _register(own, TagStatus.READY, QueryStatus.DISABLED)
    with pytest.raises(BadRequestError, match="disabled"):
        await queryable_tag(own, Tag("StudyID"), "StudyID")
    assert await queryable_tag(own, Tag("StudyTime"), "StudyTime") is None
