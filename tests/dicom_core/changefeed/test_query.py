"""The change feed's query parameters: defaults, ranges and Azure's 400 messages for v1 and v2."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dicom_core.changefeed.query import ChangeFeedQuery, parse_feed_query, parse_latest_query
from dicom_core.model.epoch import to_micros
from dicom_core.model.errors import BadRequestError


def _micros(*args: int) -> int:
    return to_micros(datetime(*args, tzinfo=UTC))


def _error(query: str, version: int) -> str:
    with pytest.raises(BadRequestError) as caught:
        parse_feed_query(query, api_version=version)
    return caught.value.message


def test_v1_defaults_to_ten_entries_after_sequence_zero_with_metadata() -> None:
    assert parse_feed_query("", api_version=1) == ChangeFeedQuery(api_version=1, limit=10, offset=0,
                                                                   include_metadata=True)


def test_v2_defaults_to_a_hundred_entries_of_all_time() -> None:
    assert parse_feed_query("", api_version=2) == ChangeFeedQuery(api_version=2, limit=100)


def test_v1_offset_and_limit_are_read() -> None:
    query = parse_feed_query("offset=41&limit=100&includemetadata=false", api_version=1)
    assert (query.offset, query.limit, query.include_metadata) == (41, 100, False)


def test_v1_limit_over_100_is_rejected_with_azures_message() -> None:
    assert _error("limit=101", 1) == (
        "The query parameter 'limit' is invalid. The field limit must be between 1 and 100.")


def test_v2_limit_over_200_is_rejected_with_azures_message() -> None:
    assert _error("limit=201", 2) == (
        "The query parameter 'Limit' is invalid. The field Limit must be between 1 and 200.")


def test_v2_accepts_a_limit_of_200() -> None:
    assert parse_feed_query("limit=200", api_version=2).limit == 200


@pytest.mark.parametrize("query", ["limit=0", "limit=-1", "limit=blah", "offset=-1", "offset=blah",
                                   "offset=92233720368547758070", "limit=", "includeMetadata=0",
                                   "includeMetadata=true-ish", "includeMetadata=boolean"])
@pytest.mark.parametrize("version", [1, 2])
def test_invalid_limit_offset_or_includemetadata_is_a_bad_request(query: str, version: int) -> None:
    assert _error(query, version).startswith("The query parameter ")


def test_an_unparseable_value_names_the_parameter() -> None:
    assert _error("offset=blah", 2) == (
        "The query parameter 'Offset' is invalid. The value 'blah' is not valid for Offset.")


def test_parameter_names_are_case_insensitive() -> None:
    query = parse_feed_query("LIMIT=5&IncludeMetadata=False&starttime=2024-01-01T00:00:00Z", api_version=2)
    assert (query.limit, query.include_metadata, query.start_us) == (5, False, _micros(2024, 1, 1))


def test_the_first_of_repeated_values_counts() -> None:
    assert parse_feed_query("limit=5&limit=500", api_version=2).limit == 5


def test_v2_times_are_converted_to_utc_microseconds() -> None:
    query = parse_feed_query("startTime=2023-05-03T12:58:00%2B02:00&endTime=2023-05-03T11:00:00.5Z", api_version=2)
    assert (query.start_us, query.end_us) == (_micros(2023, 5, 3, 10, 58), _micros(2023, 5, 3, 11, 0, 0) + 500_000)


def test_an_unencoded_plus_of_a_utc_offset_is_read_as_plus() -> None:
    query = parse_feed_query("startTime=2023-05-03T12:58:00+02:00", api_version=2)
    assert query.start_us == _micros(2023, 5, 3, 10, 58)


def test_a_time_finer_than_a_microsecond_is_rounded_up() -> None:
    query = parse_feed_query("startTime=2023-05-03T10:58:00.0000001Z", api_version=2)
    assert query.start_us == _micros(2023, 5, 3, 10, 58) + 1


@pytest.mark.parametrize("parameter", ["startTime", "endTime"])
def test_a_time_without_time_zone_is_rejected(parameter: str) -> None:
    name = parameter[0].upper() + parameter[1:]
    assert _error(f"{parameter}=2023-05-03T10:58:00", 2) == (
        f"The query parameter '{name}' is invalid. Date and time value must specify a time zone.")


@pytest.mark.parametrize("query", ["startTime=foo&endTime=2023-05-03T10:58:00Z",
                                   "startTime=2023-05-03T10:58:00Z&endTime=bar"])
def test_an_unparseable_time_is_a_bad_request(query: str) -> None:
    assert "is not valid for" in _error(query, 2)


def test_an_end_equal_to_the_start_is_rejected_with_both_times() -> None:
    assert _error("startTime=2023-05-03T10:58:00Z&endTime=2023-05-03T10:58:00Z", 2) == (
        "The start time '2023-05-03T10:58:00.0000000+00:00' must occur strictly before the end time "
        "'2023-05-03T10:58:00.0000000+00:00'.")


def test_an_end_before_the_start_is_a_bad_request() -> None:
    assert "must occur strictly before" in _error("startTime=2023-05-03T10:59:00Z&endTime=2023-05-03T10:58:00Z", 2)


def test_v1_ignores_time_parameters() -> None:
    assert parse_feed_query("startTime=2023-05-03T10:58:00", api_version=1).start_us is None


def test_a_less_than_sign_in_the_query_string_is_rejected() -> None:
    assert _error("limit=%3Cscript", 2) == "The query string included invalid characters."


def test_latest_reads_includemetadata() -> None:
    assert parse_latest_query("includemetadata=false") is False
    assert parse_latest_query("") is True


def test_latest_rejects_an_invalid_includemetadata() -> None:
    with pytest.raises(BadRequestError, match="includeMetadata"):
        parse_latest_query("includeMetadata=asdf")
