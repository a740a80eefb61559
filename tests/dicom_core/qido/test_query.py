"""The QIDO-RS query string: decoding, keys, match kinds, the standard's parameters, and Azure's 400 messages."""

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


def _parse(query: str, resource: QidoResource = STUDIES, api_version: int = 2, *, strict: bool = False):
    return parse_query(resource, query, api_version=api_version, strict=strict)


def _error(query: str, resource: QidoResource = STUDIES, *, strict: bool = True) -> str:
    with pytest.raises(BadRequestError) as raised:
        _parse(query, resource, strict=strict)
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
         "Invalid QIDO-RS query. Duplicate AttributeId 'PatientID'. "
         "Each attribute is only allowed to be specified once."),
        ("PatientID=1&00100020=2", STUDIES,
         "Invalid query: attribute '00100020' has been specified more than once using different ID formats. "
         "Each attribute is only allowed to be specified once."),
        ("PatientID=", STUDIES, "Invalid query: AttributeId 'PatientID' has empty string value that is not supported."),
        ("PatientID=+", STUDIES,
         "Invalid query: AttributeId 'PatientID' has empty string value that is not supported."),
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
def test_bad_query_is_400_with_azures_message_when_strict(query: str, resource: QidoResource, message: str) -> None:
    assert _error(query, resource) == message


def test_range_without_either_end_is_400() -> None:
    assert _error("StudyDate=-").startswith("Invalid query: specified range is invalid.\nBoth parts in the range")


def test_filters_of_parent_levels_are_allowed_on_cross_study_resources() -> None:
    query = _parse("PatientID=1&Modality=CT&SOPInstanceUID=1.2", QidoResource.ALL_INSTANCES)
    assert len(query.conditions) == 3


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("limit=ten", "The query parameter 'Limit' is invalid. The value 'ten' is not valid for Limit."),
        ("limit=-1",
         "The query parameter 'Limit' is invalid. The field Limit must be between 0 and 9223372036854775807."),
        ("offset=-1",
         "The query parameter 'Offset' is invalid. The field Offset must be between 0 and 9223372036854775807."),
        ("fuzzymatching=yes",
         "The query parameter 'FuzzyMatching' is invalid. The value 'yes' is not valid for FuzzyMatching."),
        ("emptyvaluematching=1",
         "The query parameter 'EmptyValueMatching' is invalid. The value '1' is not valid for EmptyValueMatching."),
        ("PatientID=1&PatientID=2",
         "Invalid QIDO-RS query. Duplicate AttributeId 'PatientID'. "
         "Each attribute is only allowed to be specified once."),
        ("PatientID=1&00100020=",
         "Invalid query: attribute '00100020' has been specified more than once using different ID formats. "
         "Each attribute is only allowed to be specified once."),
        ("StudyDate=2020-01-01", "Invalid query: specified Date value '2020-01-01' is invalid for attribute "
         "'StudyDate'. Date should be valid and formatted as yyyyMMdd."),
        ("charset=ISO-8859-1", "The query parameter 'charset' is invalid. The value 'ISO-8859-1' names no supported "
         "character set: search results are DICOM JSON, in UTF-8."),
    ],
)
def test_malformed_values_stay_400_by_default(query: str, message: str) -> None:
    """PS3.18 §8.3.4.4.1 (a negative or malformed limit), §8.3.3.2 (an unsupported charset): 400."""
    assert _error(query, strict=False) == message


def test_unknown_parameters_are_ignored_and_named_in_a_warning() -> None:
    """PS3.18 §8.3: the origin server shall ignore query parameters it does not support."""
    query = _parse("PatientID=1&_=1700000000&foo=bar&patientname=x&includefield=NotAKeyword")
    assert [c.tag for c in query.conditions] == [PATIENT_ID]
    assert query.warnings == ("The following query parameters are not supported and have been ignored: "
                              "includefield=NotAKeyword, _, foo, patientname.",)


def test_attributes_not_filterable_on_the_resource_are_ignored_and_returned() -> None:
    """PS3.18 §8.3: a matching key the origin server does not support is ignored; its attribute is a return key."""
    query = _parse("Modality=CT&InstanceNumber=5&PatientID=1")
    assert [c.tag for c in query.conditions] == [PATIENT_ID]
    assert query.return_keys == (BaseTag(0x00080060), BaseTag(0x00200013))
    assert "ignored: Modality, InstanceNumber." in query.warnings[0]


@pytest.mark.parametrize(("value", "low", "high"), [
    ("1030", "1030", "1030"), ("0800-1200", "0800", "1200"), ("10:30-", "1030", None), ("-235959.5", None, "235959.5"),
])
def test_a_time_filter_is_a_range_of_its_bounds(value: str, low: str | None, high: str | None) -> None:
    """PS3.18 Table 10.6.1-5 requires StudyTime matching; PS3.4 C.2.2.2.5: a TM value or range."""
    condition = _parse(f"StudyTime={value}").conditions[0]
    assert (condition.kind, condition.low, condition.high) == (MatchKind.RANGE, low, high)


@pytest.mark.parametrize("value", ["25", "1261", "12-11", "noon", "-"])
def test_an_invalid_time_filter_is_400(value: str) -> None:
    """PS3.5 Table 6.2-1 (TM): HHMMSS.FFFFFF or a leading part of it; a range's first bound comes first."""
    with pytest.raises(BadRequestError):
        _parse(f"StudyTime={value}")


@pytest.mark.parametrize("value", ["", "+", "*", "**", "%00"])
def test_an_empty_value_or_a_lone_star_is_universal_matching(value: str) -> None:
    """PS3.4 C.2.2.2.3 (a zero-length value) and C.2.2.2.4 ('*' alone): every entity matches; returned, not matched."""
    query = _parse(f"AccessionNumber={value}&StudyDate={value}")
    assert (query.conditions, query.warnings) == ((), ())
    assert query.return_keys == (BaseTag(0x00080050), STUDY_DATE)


def test_limit_above_the_maximum_is_capped_with_a_warning() -> None:
    """PS3.18 §8.3.4.4.1: the page is min(matches - offset, maximum, limit); the cap is said in a Warning."""
    query = _parse(f"limit={MAX_LIMIT + 300}")
    assert query.limit == MAX_LIMIT
    assert query.warnings == (f"The limit {MAX_LIMIT + 300} exceeds the maximum of {MAX_LIMIT} results per request: "
                              f"at most {MAX_LIMIT} results have been returned. Additional results can be requested "
                              "with offset.",)


def test_limit_zero_asks_for_no_results() -> None:
    """PS3.18 §8.3.4.4.1: only a malformed or negative limit is an error."""
    assert _parse("limit=0").limit == 0


@pytest.mark.parametrize("name", ["emptyvaluematching", "multiplevaluematching"])
def test_unsupported_matching_options_are_accepted_and_said_unsupported(name: str) -> None:
    """PS3.18 Table 8.3.4-1: the origin server accepts them; without support the search runs without them."""
    assert _parse(f"{name}=false").warnings == ()
    [warning] = _parse(f"{name}=TRUE&PatientID=1").warnings
    assert warning.startswith(f"The {name} parameter is not supported.")


def test_accept_parameter_keeps_its_plus() -> None:
    """PS3.18 §8.3.3.1: the accept query parameter lists media types (application/dicom+json)."""
    assert _parse("accept=application/dicom+json&accept=application/json").accept == (
        "application/dicom+json, application/json")
    assert _parse("").accept is None


@pytest.mark.parametrize("charset", ["utf-8", "UTF-8;q=0.5,ISO-8859-1", '"ISO_IR 192"', "iso-8859-1,utf8"])
def test_charset_naming_utf8_is_accepted(charset: str) -> None:
    """PS3.18 §8.3.3.2: DICOM JSON is UTF-8; a charset list naming it is supported."""
    assert _parse(f"charset={charset}").warnings == ()


def test_all_with_other_fields_returns_all_and_the_others() -> None:
    """PS3.18 §8.3.4.3: includefield=all and named attributes; Azure alone rejects the combination."""
    query = _parse("includefield=all,PatientAge")
    assert (query.include_all, query.include_fields) == (True, (BaseTag(0x00101010),))
