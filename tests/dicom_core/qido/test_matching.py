"""Matching a QIDO-RS condition against stored DICOM JSON values, one table per match kind."""

from __future__ import annotations

import pytest
from pydicom.tag import BaseTag

from dicom_core.model.dicom_json import first_value, person_name_forms, person_name_groups
from dicom_core.model.tags import MODALITIES_IN_STUDY
from dicom_core.qido.matching import fuzzy_name_match, matches, wildcard_match
from dicom_core.qido.query import Condition, MatchKind

PATIENT_NAME = BaseTag(0x00100010)
PATIENT_ID = BaseTag(0x00100020)
STUDY_DATE = BaseTag(0x00080020)
STUDY_UID = BaseTag(0x0020000D)


def _pn(alphabetic: str, **groups: str) -> dict:
    return {"00100010": {"vr": "PN", "Value": [{"Alphabetic": alphabetic, **groups}]}}


@pytest.mark.parametrize(
    ("query", "stored", "expected"),
    [
        ("joh", "John^Doe", True), ("do", "John^Doe", True), ("jo do", "John^Doe", True),
        ("John Doe", "John^Doe", True), ("ohn", "John^Doe", False), ("doe john", "John^Doe", False),
        ("stone", "Jonathan^Rand^Stone Hall^^", True), ("rand stone hall", "Jonathan^Rand^Stone Hall", True),
        ("muller", "Müller^Jürgen", True), ("", "John^Doe", False),
    ],
)
def test_fuzzy_is_a_prefix_match_on_words_in_order(query: str, stored: str, expected: bool) -> None:
    assert fuzzy_name_match(query, stored) is expected


@pytest.mark.parametrize(
    ("pattern", "value", "person_name", "expected"),
    [
        ("Doe*", "DOE^JOHN", True, True), ("*^j?hn", "Doe^John", True, True), ("*smith*", "Doe^John", True, False),
        ("Mu*", "Müller", True, True), ("Mu*", "Müller", False, False), ("ID?", "id1", False, True),
        ("ID?", "ID12", False, False), ("*", "", False, True), ("a.b*", "axb", False, False),
    ],
)
def test_wildcards_match_any_run_and_one_character(pattern: str, value: str, person_name: bool, expected: bool) -> None:
    assert wildcard_match(pattern, value, person_name=person_name) is expected


@pytest.mark.parametrize(
    ("condition", "attributes", "expected"),
    [
        (Condition(PATIENT_NAME, MatchKind.EXACT, ("doe^john",)), _pn("Doe^John"), True),
        (Condition(PATIENT_NAME, MatchKind.EXACT, ("Hall^X^Ta",)), _pn("Hall^X^Tá"), True),
        (Condition(PATIENT_NAME, MatchKind.EXACT, ("Doe",)), _pn("Doe^John"), False),
        (Condition(PATIENT_NAME, MatchKind.EXACT, ("Doe^John",)), _pn("Doe^John^^"), True),
        (Condition(PATIENT_NAME, MatchKind.EXACT, ("Yamada^Tarou=山田^太郎",)),
         _pn("Yamada^Tarou", Ideographic="山田^太郎"), True),
        (Condition(PATIENT_ID, MatchKind.EXACT, ("id1",)), {"00100020": {"vr": "LO", "Value": ["ID1"]}}, True),
        (Condition(PATIENT_ID, MatchKind.EXACT, ("IDA",)), {"00100020": {"vr": "LO", "Value": ["IDÁ"]}}, False),
        (Condition(PATIENT_ID, MatchKind.EXACT, ("ID1",)), {"00100020": {"vr": "LO", "Value": ["ID1\x00"]}}, True),
        (Condition(PATIENT_ID, MatchKind.EXACT, ("ID1",)), {"00100020": {"vr": "LO", "Value": ["ID1", "ID2"]}}, True),
        (Condition(PATIENT_ID, MatchKind.EXACT, ("ID2",)), {"00100020": {"vr": "LO", "Value": ["ID1", "ID2"]}}, False),
        (Condition(PATIENT_ID, MatchKind.EXACT, ("ID1",)), {}, False),
        (Condition(STUDY_DATE, MatchKind.RANGE, low="20200101", high="20201231"),
         {"00080020": {"vr": "DA", "Value": ["20200922"]}}, True),
        (Condition(STUDY_DATE, MatchKind.RANGE, low="20210101"), {"00080020": {"vr": "DA", "Value": ["20200922"]}},
         False),
        (Condition(STUDY_DATE, MatchKind.RANGE, high="20200922"), {"00080020": {"vr": "DA", "Value": ["20200922"]}},
         True),
        (Condition(STUDY_DATE, MatchKind.RANGE, low="20200101"), {}, False),
        (Condition(STUDY_UID, MatchKind.ANY_OF, ("1.2", "1.3")), {"0020000D": {"vr": "UI", "Value": ["1.3"]}}, True),
        (Condition(STUDY_UID, MatchKind.ANY_OF, ("1.2",)), {"0020000D": {"vr": "UI", "Value": ["1.23"]}}, False),
    ],
)
def test_condition_against_stored_values(condition: Condition, attributes: dict, expected: bool) -> None:
    assert matches(condition, attributes) is expected


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (Condition(MODALITIES_IN_STUDY, MatchKind.EXACT, ("mr",)), True),
        (Condition(MODALITIES_IN_STUDY, MatchKind.ANY_OF, ("US", "CT")), True),
        (Condition(MODALITIES_IN_STUDY, MatchKind.ANY_OF, ("US", "XA")), False),
        (Condition(MODALITIES_IN_STUDY, MatchKind.WILDCARD, ("M*",)), True),
    ],
)
def test_modalities_in_study_match_any_modality_of_the_study(condition: Condition, expected: bool) -> None:
    assert matches(condition, {}, {"CT", "MR"}) is expected


def test_first_value_of_a_person_name_is_its_alphabetic_group() -> None:
    assert first_value(_pn("Doe^John", Ideographic="ド^ジョン"), PATIENT_NAME) == "Doe^John"


def test_person_name_forms_are_alphabetic_and_whole() -> None:
    assert person_name_forms(_pn("Doe^John", Ideographic="X^Y"), PATIENT_NAME) == ["Doe^John", "Doe^John=X^Y"]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [("山田*", True), ("*太郎", True), ("山田^太?", True), ("やまだ*", True), ("Yamada*", True), ("太郎*", False)],
)
def test_wildcards_match_each_component_group_alike(pattern: str, expected: bool) -> None:
    """PS3.4 C.2.2.2.4 and C.2.2.2.1.1: a person name's component groups are matched alike; `山田*` finds the
    ideographic group of `Yamada^Tarou=山田^太郎`."""
    name = _pn("Yamada^Tarou", Ideographic="山田^太郎", Phonetic="やまだ^たろう")
    assert matches(Condition(PATIENT_NAME, MatchKind.WILDCARD, (pattern,)), name) is expected


def test_exact_match_finds_the_ideographic_group_alone() -> None:
    """PS3.4 C.2.2.2.1: each component group of a person name is a value to compare with."""
    name = _pn("Yamada^Tarou", Ideographic="山田^太郎")
    assert matches(Condition(PATIENT_NAME, MatchKind.EXACT, ("山田^太郎",)), name)


def test_person_name_groups_are_the_non_empty_ones() -> None:
    assert person_name_groups(_pn("Doe^John", Ideographic="", Phonetic="ド"), PATIENT_NAME) == ["Doe^John", "ド"]


@pytest.mark.parametrize(
    ("stored", "low", "high", "expected"),
    [
        ("103045", "1030", "1100", True), ("110059.5", "1030", "1100", True), ("110100", "1030", "1100", False),
        ("102959", "1030", None, False), ("10:30:00", "1030", None, True), ("235959.999", None, "2359", True),
        ("103045", "103045.5", None, False),
    ],
)
def test_a_time_range_compares_each_bound_at_its_precision(stored: str, low: str | None, high: str | None,
                                                           expected: bool) -> None:
    """PS3.4 C.2.2.2.5: range matching of TM values (StudyTime, a required key of PS3.18 Table 10.6.1-5)."""
    study_time = BaseTag(0x00080030)
    condition = Condition(study_time, MatchKind.RANGE, low=low, high=high)
    assert matches(condition, {"00080030": {"vr": "TM", "Value": [stored]}}) is expected


@pytest.mark.parametrize(("wanted", "expected"), [("5", True), ("05", True), ("50", False)])
def test_an_integer_string_matches_by_number(wanted: str, expected: bool) -> None:
    """PS3.4 C.2.2.2.1 single value matching of InstanceNumber (IS), stored as a JSON number (PS3.18 F.2.3)."""
    instance_number = BaseTag(0x00200013)
    condition = Condition(instance_number, MatchKind.EXACT, (wanted,))
    assert matches(condition, {"00200013": {"vr": "IS", "Value": [5]}}) is expected
