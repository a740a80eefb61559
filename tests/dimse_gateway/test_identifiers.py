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
