"""An identifier read as a search: QIDO filters where an index serves the key, PS3.4 matching for the others."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest
from pydicom.dataset import Dataset

from dimse_gateway.identifiers import IdentifierError, QueryLevel, search_of


def identifier(level: str, **keys: object) -> Dataset:
    """A query identifier of ``level`` with ``keys``."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def test_indexed_keys_become_qido_filters_and_every_key_is_included() -> None:
    search = search_of(identifier("STUDY", PatientName="Doe*", StudyDate="20240101-", StudyInstanceUID=["1.2", "1.3"],
                                  AccessionNumber="", StudyTime=""), patient_root=False)
    query = parse_qs(search.query_string)
    assert (query["PatientName"], query["StudyDate"], query["StudyInstanceUID"]) == (
        ["Doe*"], ["20240101-"], ["1.2,1.3"])
    assert "AccessionNumber" not in query
    assert set(query["includefield"][0].split(",")) == {
        "PatientName", "StudyDate", "StudyInstanceUID", "AccessionNumber", "StudyTime"}
    assert search.local == ()


def test_a_lone_asterisk_is_universal_matching() -> None:
    assert "PatientName" not in parse_qs(search_of(identifier("STUDY", PatientName="*"), patient_root=False)
                                         .query_string)


@pytest.mark.parametrize(("key", "stored", "matches"), [
    ("StudyTime", "093000", True),
    ("StudyTime", "100100", False),
    ("InstanceNumber", "2", True),
    ("StudyID", "AB12", True),
])
def test_keys_no_index_serves_are_matched_on_the_results(key: str, stored: str, matches: bool) -> None:
    values = {"StudyTime": "0900-1000", "InstanceNumber": "2", "StudyID": "A?1*"}
    search = search_of(identifier("IMAGE", **{key: values[key]}), patient_root=False)
    result = Dataset()
    setattr(result, key, stored)
    assert search.matches(result) is matches
    assert search.matches(Dataset()) is False  # a result without the attribute does not match


def test_person_names_match_case_insensitively_on_the_results() -> None:
    search = search_of(identifier("IMAGE", PerformingPhysicianName="smith^*"), patient_root=False)
    result = Dataset()
    result.PerformingPhysicianName = "SMITH^JOHN"
    assert search.matches(result)


@pytest.mark.parametrize(("level", "patient_root"), [("PATIENT", False), ("FRAME", True), ("", True)])
def test_a_level_outside_the_information_model_is_refused(level: str, patient_root: bool) -> None:
    with pytest.raises(IdentifierError):
        search_of(identifier(level), patient_root=patient_root)


def test_each_level_names_its_results_by_their_uids() -> None:
    search = search_of(identifier("SERIES"), patient_root=False)
    assert search.level is QueryLevel.SERIES
    assert parse_qs(search.query_string)["includefield"] == ["StudyInstanceUID,SeriesInstanceUID"]


def _code(value: str, scheme: str = "LN", meaning: str = "") -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator = value, scheme
    if meaning:
        item.CodeMeaning = meaning
    return item


@pytest.mark.parametrize(("key", "matches"), [
    (_code("24627-2", "LN"), True),  # every key of the item matches one item
    (_code("24627-2", "DCM"), False),  # each key matches some item, no item matches both
    (_code("", "", "*chest*"), False),  # wildcards match case-sensitively outside person names
    (_code("", "", "*Chest*"), True),
])
def test_a_sequence_key_matches_when_one_item_matches_every_key_of_its_item(key: Dataset, matches: bool) -> None:
    search = search_of(identifier("STUDY", ProcedureCodeSequence=[key]), patient_root=False)
    result = Dataset()
    result.ProcedureCodeSequence = [_code("30746-2", "DCM", "Knee"), _code("24627-2", "LN", "CT Chest")]
    assert search.matches(result) is matches
    assert search.matches(Dataset()) is False  # a result without the sequence does not match


def test_a_sequence_key_without_values_is_a_return_key() -> None:
    search = search_of(identifier("STUDY", ProcedureCodeSequence=[_code("", "")], ReferencedStudySequence=[]),
                       patient_root=False)
    assert search.local == ()
    assert {"ProcedureCodeSequence", "ReferencedStudySequence"} <= set(
        parse_qs(search.query_string)["includefield"][0].split(","))


def test_nested_sequence_keys_are_matched_in_their_items() -> None:
    request = Dataset()
    request.RequestedProcedureID = "RP-1*"
    request.ScheduledProtocolCodeSequence = [_code("P5", "99LOCAL")]
    search = search_of(identifier("SERIES", RequestAttributesSequence=[request]), patient_root=False)
    stored = Dataset()
    stored.RequestedProcedureID = "RP-17"
    stored.ScheduledProtocolCodeSequence = [_code("P4", "99LOCAL"), _code("P5", "99LOCAL")]
    result = Dataset()
    result.RequestAttributesSequence = [stored]
    assert search.matches(result)
    stored.ScheduledProtocolCodeSequence = [_code("P4", "99LOCAL")]
    assert not search.matches(result)


def test_a_sequence_only_lower_levels_keep_is_a_return_key_at_a_higher_level() -> None:
    request = Dataset()
    request.RequestedProcedureID = "RP-1"
    search = search_of(identifier("STUDY", RequestAttributesSequence=[request]), patient_root=False)
    assert search.local == ()  # QIDO returns no series attribute at STUDY level: not matched (documented)
    assert len(search_of(identifier("SERIES", RequestAttributesSequence=[request]), patient_root=False).local) == 1
