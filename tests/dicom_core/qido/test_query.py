"""The QIDO-RS query string: decoding, keys, match kinds, and Azure's 400 messages."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from pydicom.tag import BaseTag

from dicom_core.model.errors import BadRequestError
from dicom_core.qido.query import MAX_LIMIT, MatchKind, QidoResource, parse_query

STUDIES = QidoResource.ALL_STUDIES
PATIENT_NAME = BaseTag(0x00100010)
PATIENT_ID = BaseTag(0x00100020)
STUDY_DATE = BaseTag(0x00080020)
STUDY_UID = BaseTag(0x0020000D)
MODALITIES_IN_STUDY = BaseTag(0x00080061)


def _parse(query: str, resource: QidoResource = STUDIES, api_version: int = 2):
    return parse_query(resource, query, api_version=api_version)


def _error(query: str, resource: QidoResource = STUDIES) -> str:
    with pytest.raises(BadRequestError) as raised:
        _parse(query, resource)
    return raised.value.message


def test_values_are_decoded_like_quote_plus_encodes_them() -> None:
    query = _parse(urlencode({"PatientName": "Doe^John Paul"}))  # PatientName=Doe%5EJohn+Paul
    assert query.condition(PATIENT_NAME).values == ("Doe^John Paul",)


def test_keyword_and_tag_number_name_the_same_attribute() -> None:
    assert _parse("PatientID=1").condition(PATIENT_ID) == _parse("00100020=1").condition(PATIENT_ID)


def test_tag_numbers_are_read_in_either_case() -> None:
    assert _parse("0020000d=1.2").condition(STUDY_UID).values == ("1.2",)


def test_defaults_are_limit_100_offset_0_exact_matching() -> None:
    query = _parse("")
    assert (query.limit, query.offset, query.fuzzy, query.conditions) == (100, 0, False, ())


def test_known_parameter_names_are_case_insensitive() -> None:
    query = _parse("LIMIT=5&Offset=3&FuzzyMatching=TRUE")
    assert (query.limit, query.offset, query.fuzzy) == (5, 3, True)


def test_includefield_repeated_and_comma_separated_is_one_list() -> None:
    query = _parse("includefield=00081030,00080060&includefield=PatientAge")
    assert query.include_fields == (BaseTag(0x00081030), BaseTag(0x00080060), BaseTag(0x00101010))


def test_includefield_all() -> None:
    assert _parse("includefield=ALL").include_all


@pytest.mark.parametrize(
    ("query", "kind", "values"),
    [
        ("PatientName=Doe^John", MatchKind.EXACT, ("Doe^John",)),
        ("PatientName=Doe*", MatchKind.WILDCARD, ("Doe*",)),
        ("PatientName=D?e", MatchKind.WILDCARD, ("D?e",)),
        ("PatientName=jo&fuzzymatching=true", MatchKind.FUZZY, ("jo",)),
        ("PatientName=jo*&fuzzymatching=true", MatchKind.WILDCARD, ("jo*",)),
        ("PatientID=ID*", MatchKind.WILDCARD, ("ID*",)),
        ("PatientID=ID1&fuzzymatching=true", MatchKind.EXACT, ("ID1",)),
        ("StudyInstanceUID=1.2\\1.3", MatchKind.ANY_OF, ("1.2", "1.3")),
        ("StudyInstanceUID=1.2,1.3", MatchKind.ANY_OF, ("1.2", "1.3")),
        ("ModalitiesInStudy=CT\\MR", MatchKind.ANY_OF, ("CT", "MR")),
        ("StudyInstanceUID=1.2\\a/b'\\1.3*", MatchKind.ANY_OF, ("1.2",)),
        ("ModalitiesInStudy=CT", MatchKind.EXACT, ("CT",)),
        ("PatientID=ID1%00", MatchKind.EXACT, ("ID1",)),
        ("PatientID=+ID1+", MatchKind.EXACT, ("ID1",)),
    ],
)
def test_match_kind_follows_value_and_fuzzymatching(query: str, kind: MatchKind, values: tuple[str, ...]) -> None:
    [condition] = _parse(query).conditions
    assert (condition.kind, condition.values) == (kind, values)


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [("20200922", "20200922", "20200922"), ("20200101-20201231", "20200101", "20201231"),
     ("20200101-", "20200101", None), ("-20201231", None, "20201231")],
)
def test_dates_are_single_values_or_ranges(value: str, low: str | None, high: str | None) -> None:
    condition = _parse(f"StudyDate={value}").condition(STUDY_DATE)
    assert (condition.kind, condition.low, condition.high) == (MatchKind.RANGE, low, high)


def test_ohif_study_list_query_parses() -> None:
    query = _parse("limit=101&offset=0&fuzzymatching=false&includefield=00081030%2C00080060%2C00080090%2C00100030"
                   "&StudyDate=19700102-20240101&00100020=PID")
    assert (query.limit, len(query.include_fields), query.condition(PATIENT_ID).values) == (101, 4, ("PID",))


MODALITY_NOT_QUERYABLE = (
    "Invalid query: AttributeId Modality is not queryable.  If the parameter is an attribute keyword, check the "
    "casing as they are case-sensitive. The conformance statement has a list of supported query parameters, "
    "attributes and the levels."
)


@pytest.mark.parametrize(
    ("query", "resource", "message"),
    [
        ("Modality=CT", STUDIES, MODALITY_NOT_QUERYABLE),
        ("StudyInstanceUID=1.2", QidoResource.STUDY_SERIES,
         MODALITY_NOT_QUERYABLE.replace("Modality", "StudyInstanceUID")),
        ("patientname=x", STUDIES,
         "Invalid query: unknown query parameter 'patientname'. If the parameter is an attribute keyword, check the "
         "casing as they are case-sensitive. The conformance statement has a list of supported query parameters, "
         "attributes and the levels."),
        ("PatientID=1&PatientID=2", STUDIES,
         "Invalid QIDO-RS query. Duplicate AttributeId 'PatientID'. Each attribute is only allowed to be specified once."),
        ("PatientID=1&00100020=2", STUDIES,
         "Invalid query: attribute '00100020' has been specified more than once using different ID formats. "
         "Each attribute is only allowed to be specified once."),
        ("PatientID=", STUDIES, "Invalid query: AttributeId 'PatientID' has empty string value that is not supported."),
        ("PatientID=+", STUDIES, "Invalid query: AttributeId 'PatientID' has empty string value that is not supported."),
        ("StudyDate=2020-01-01", STUDIES,
         "Invalid query: specified Date value '2020-01-01' is invalid for attribute 'StudyDate'. Date should be valid "
         "and formatted as yyyyMMdd."),
        ("StudyDate=20200230", STUDIES,
         "Invalid query: specified Date value '20200230' is invalid for attribute 'StudyDate'. Date should be valid "
         "and formatted as yyyyMMdd."),
        ("PatientBirthDate=20201231-20200101", STUDIES,
         "Invalid query: specified date range '20201231-20200101' is invalid.\nThe first part date 20201231 should be "
         "lesser than or equal to the second part date 20200101."),
        ("limit=0", STUDIES, "The query parameter 'Limit' is invalid. The field Limit must be between 1 and 200."),
        (f"limit={MAX_LIMIT + 1}", STUDIES,
         "The query parameter 'Limit' is invalid. The field Limit must be between 1 and 200."),
        ("limit=ten", STUDIES, "The query parameter 'Limit' is invalid. The value 'ten' is not valid for Limit."),
        ("offset=-1", STUDIES,
         "The query parameter 'Offset' is invalid. The field Offset must be between 0 and 9223372036854775807."),
        ("fuzzymatching=yes", STUDIES,
         "The query parameter 'FuzzyMatching' is invalid. The value 'yes' is not valid for FuzzyMatching."),
        ("includefield=NotAKeyword", STUDIES, "Invalid query: IncludeField has unknown attribute 'NotAKeyword'."),
        ("includefield=all,PatientAge", STUDIES, "Invalid query: cannot specify included fields in addition to 'all'."),
        ("PatientName=<script>", STUDIES, "The query string included invalid characters."),
        ("PatientName=%3Cscript", STUDIES, "The query string included invalid characters."),
        ('PatientName="jo"&fuzzymatching=true', STUDIES,
         "Invalid query: specified tag 'PatientName' value '\"jo\"' contains unsupported character '\"'. Character is "
         "not supported with Fuzzy match, try exact match or removing the invalid character. "),
    ],
)
def test_bad_query_is_400_with_azures_message(query: str, resource: QidoResource, message: str) -> None:
    assert _error(query, resource) == message


def test_range_without_either_end_is_400() -> None:
    assert _error("StudyDate=-").startswith("Invalid query: specified range is invalid.\nBoth parts in the range")


def test_filters_of_parent_levels_are_allowed_on_cross_study_resources() -> None:
    query = _parse("PatientID=1&Modality=CT&SOPInstanceUID=1.2", QidoResource.ALL_INSTANCES)
    assert len(query.conditions) == 3
