"""Index entries of extended query tags over Azurite: every matching kind answered from key ranges."""

from __future__ import annotations

import pytest
from pydicom.uid import generate_uid

from dicom_core.delete.service import delete_instance
from dicom_core.index.reads import get_instance
from dicom_core.model.identifiers import InstanceIdentifiers, StoredInstance
from dicom_core.model.levels import Level
from dicom_core.search_index.extended import IndexedTag, Match, find_matches, index_instance, remove_entries
from dicom_core.search_index.extended_values import parse_filter
from dicom_core.storage.clients import Storage
from tests.factories import make_instance

STUDY_TIME = IndexedTag("00080030", "TM", Level.STUDY)
STUDY_ID = IndexedTag("00200010", "SH", Level.STUDY)
SERIES_NUMBER = IndexedTag("00200011", "IS", Level.SERIES)
INSTANCE_NUMBER = IndexedTag("00200013", "IS", Level.INSTANCE)
OPERATOR = IndexedTag("00081070", "PN", Level.SERIES)
ACQUISITION_DATE = IndexedTag("00080022", "DA", Level.INSTANCE)
FRAME_OF_REFERENCE = IndexedTag("00200052", "UI", Level.SERIES)


async def _stored(storage: Storage, stow_parts) -> StoredInstance:
    """A stored instance (its row is what a search checks an entry against)."""
    ids = InstanceIdentifiers(generate_uid(), generate_uid(), generate_uid())
    part = make_instance(study=ids.study, series=ids.series, sop=ids.instance)
    assert (await stow_parts(storage, [part])).status == 200
    row = await get_instance(storage, ids)
    assert row is not None
    return StoredInstance(ids, str(row["Version"]))


def _metadata(**values: tuple[str, list[object]]) -> dict[str, dict[str, object]]:
    return {key: {"vr": vr, "Value": value} for key, (vr, value) in values.items()}


async def _find(storage: Storage, tag: IndexedTag, text: str, *, fuzzy: bool = False) -> list[Match]:
    return await find_matches(storage, tag, parse_filter(tag.vr, "X", text, fuzzy=fuzzy))


async def test_an_exact_value_finds_the_study_of_its_level(own: Storage, stow_parts) -> None:
    ids = await _stored(own, stow_parts)
    await index_instance(own, [STUDY_ID], _metadata(**{"00200010": ("SH", ["abc-1"])}), ids)
    assert await _find(own, STUDY_ID, "ABC-1") == [Match(ids.ids.study)]
    assert await _find(own, STUDY_ID, "abc") == []


async def test_a_wildcard_finds_values_by_pattern(own: Storage, stow_parts) -> None:
    first, second = await _stored(own, stow_parts), await _stored(own, stow_parts)
    await index_instance(own, [STUDY_ID], _metadata(**{"00200010": ("SH", ["ABC1"])}), first)
    await index_instance(own, [STUDY_ID], _metadata(**{"00200010": ("SH", ["ABD2"])}), second)
    assert {m.study for m in await _find(own, STUDY_ID, "ab*")} == {first.ids.study, second.ids.study}
    assert await _find(own, STUDY_ID, "a?d*") == [Match(second.ids.study)]


async def test_a_time_range_finds_the_times_inside_it(own: Storage, stow_parts) -> None:
    early, late = await _stored(own, stow_parts), await _stored(own, stow_parts)
    await index_instance(own, [STUDY_TIME], _metadata(**{"00080030": ("TM", ["083000"])}), early)
    await index_instance(own, [STUDY_TIME], _metadata(**{"00080030": ("TM", ["120000.5"])}), late)
    assert await _find(own, STUDY_TIME, "0800-0900") == [Match(early.ids.study)]
    assert await _find(own, STUDY_TIME, "1200-") == [Match(late.ids.study)]
    assert {m.study for m in await _find(own, STUDY_TIME, "-1200")} == {early.ids.study, late.ids.study}


async def test_a_date_range_finds_instances(own: Storage, stow_parts) -> None:
    ids = await _stored(own, stow_parts)
    await index_instance(own, [ACQUISITION_DATE], _metadata(**{"00080022": ("DA", ["20240315"])}), ids)
    expected = [Match(ids.ids.study, ids.ids.series, ids.ids.instance)]
    assert await _find(own, ACQUISITION_DATE, "20240301-20240331") == expected
    assert await _find(own, ACQUISITION_DATE, "20240401-20240430") == []


async def test_numbers_match_by_value_not_text(own: Storage, stow_parts) -> None:
    ids = await _stored(own, stow_parts)
    await index_instance(own, [SERIES_NUMBER], _metadata(**{"00200011": ("IS", ["007"])}), ids)
    assert await _find(own, SERIES_NUMBER, "7") == [Match(ids.ids.study, ids.ids.series)]


async def test_a_uid_list_finds_each_uid(own: Storage, stow_parts) -> None:
    first, second = await _stored(own, stow_parts), await _stored(own, stow_parts)
    uids = [generate_uid(), generate_uid()]
    for ids, uid in zip((first, second), uids, strict=True):
        await index_instance(own, [FRAME_OF_REFERENCE], _metadata(**{"00200052": ("UI", [uid])}), ids)
    found = await _find(own, FRAME_OF_REFERENCE, ",".join(uids))
    assert {m.series for m in found} == {first.ids.series, second.ids.series}


async def test_fuzzy_person_name_matches_word_prefixes(own: Storage, stow_parts) -> None:
    ids = await _stored(own, stow_parts)
    await index_instance(own, [OPERATOR], _metadata(**{"00081070": ("PN", [{"Alphabetic": "Doe^John"}])}), ids)
    assert await _find(own, OPERATOR, "jo do", fuzzy=True) == [Match(ids.ids.study, ids.ids.series)]
    assert await _find(own, OPERATOR, "ohn", fuzzy=True) == []
    assert await _find(own, OPERATOR, "DOE^JOHN") == [Match(ids.ids.study, ids.ids.series)]


async def test_an_invalid_value_is_an_error_and_not_indexed(own: Storage, stow_parts) -> None:
    ids = await _stored(own, stow_parts)
    errors = await index_instance(own, [INSTANCE_NUMBER], _metadata(**{"00200013": ("IS", ["12a"])}), ids)
    assert [error.tag for error in errors] == [INSTANCE_NUMBER]
    assert await _find(own, INSTANCE_NUMBER, "12") == []


async def test_writing_an_instance_again_leaves_one_entry(own: Storage, stow_parts) -> None:
    ids = await _stored(own, stow_parts)
    for _ in range(2):
        await index_instance(own, [INSTANCE_NUMBER], _metadata(**{"00200013": ("IS", [3])}), ids)
    assert await remove_entries(own, INSTANCE_NUMBER) == 1


async def test_removing_a_tag_leaves_none_of_its_entries(own: Storage, stow_parts) -> None:
    for _ in range(3):
        name = _metadata(**{"00081070": ("PN", [{"Alphabetic": "Roe^Ann"}])})
        await index_instance(own, [OPERATOR], name, await _stored(own, stow_parts))
    assert await remove_entries(own, OPERATOR, limit=2) == 4
    await remove_entries(own, OPERATOR)
    assert await remove_entries(own, OPERATOR) == 0
    assert await _find(own, OPERATOR, "Roe^Ann") == []


async def test_an_entry_of_a_replaced_or_deleted_instance_is_not_a_match(own: Storage, stow_parts) -> None:
    replaced, deleted = await _stored(own, stow_parts), await _stored(own, stow_parts)
    for stored in (replaced, deleted):
        await index_instance(own, [INSTANCE_NUMBER], _metadata(**{"00200013": ("IS", [77])}), stored)
    part = make_instance(study=replaced.ids.study, series=replaced.ids.series, sop=replaced.ids.instance)
    assert (await stow_parts(own, [part], upsert=True)).status == 200
    assert (await delete_instance(own, deleted.ids)).status == 204
    assert await _find(own, INSTANCE_NUMBER, "77") == []


async def test_a_study_has_the_value_of_its_latest_instance_that_has_one(own: Storage, stow_parts) -> None:
    first, later = await _stored(own, stow_parts), await _stored(own, stow_parts)
    later = StoredInstance(InstanceIdentifiers(first.ids.study, later.ids.series, later.ids.instance), later.version)
    await index_instance(own, [STUDY_ID], _metadata(**{"00200010": ("SH", ["LATER"])}), later)
    await index_instance(own, [STUDY_ID], _metadata(**{"00200010": ("SH", ["FIRST"])}), first)  # reindexed late
    await index_instance(own, [STUDY_ID], {}, StoredInstance(first.ids, "f" * 24))  # a newer one without a value
    assert await _find(own, STUDY_ID, "FIRST") == []
    assert await _find(own, STUDY_ID, "LATER") == [Match(first.ids.study)]


async def test_a_private_tag_counts_only_in_its_creators_block(own: Storage, stow_parts) -> None:
    tag = IndexedTag("00091001", "LO", Level.INSTANCE, "ACME")
    ours, theirs = await _stored(own, stow_parts), await _stored(own, stow_parts)
    await index_instance(own, [tag], _metadata(**{"00090010": ("LO", ["ACME"]), "00091001": ("LO", ["x"])}), ours)
    await index_instance(own, [tag], _metadata(**{"00090010": ("LO", ["OTHER"]), "00091001": ("LO", ["x"])}), theirs)
    assert await _find(own, tag, "X") == [Match(ours.ids.study, ours.ids.series, ours.ids.instance)]


@pytest.mark.parametrize(("vr", "text"), [("DA", "2024-01"), ("TM", "2500"), ("IS", "x"), ("DA", "20240201-20240101"),
                                          ("US", "-1"), ("PN", "")])
def test_a_filter_that_does_not_fit_the_vr_is_400(vr: str, text: str) -> None:
    from dicom_core.model.errors import BadRequestError

    with pytest.raises(BadRequestError):
        parse_filter(vr, "X", text)
