"""Fuzzing the QIDO-RS query parser: whatever the query string, `parse_query` gives a query or a 400."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dicom_core.model.errors import BadRequestError
from dicom_core.qido.query import QidoQuery, QidoResource, parse_query

KEYS = st.sampled_from([
    "PatientName", "PatientID", "StudyDate", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "Modality",
    "ModalitiesInStudy", "AccessionNumber", "ReferringPhysicianName", "StudyDescription", "00100010", "0020000D",
    "00080060", "limit", "offset", "fuzzymatching", "includefield", "LIMIT", "patientname", "", "Unknown", "%3C",
])
VALUES = st.one_of(
    st.sampled_from(["", "all", "true", "false", "0", "1", "200", "201", "-1", "20200101", "20200101-20201231",
                     "-20200101", "20201301", "-", "Doe^John", "Jo*", "?", "1.2.3\\1.2.4", "1.2,3", "CT\\MR",
                     "%20", "%", "%zz", "+", "%5E", "\"", "\x00", "9" * 30]),
    st.text(max_size=20),
)
PAIRS = st.tuples(KEYS, VALUES).map(lambda pair: f"{pair[0]}={pair[1]}")
QUERIES = st.one_of(st.lists(PAIRS, max_size=6).map("&".join), st.text(max_size=60))
FUZZ = settings(max_examples=600, deadline=None, database=None)


@FUZZ
@given(query=QUERIES, resource=st.sampled_from(QidoResource), api_version=st.sampled_from([1, 2]))
def test_any_query_string_parses_or_is_a_400(query: str, resource: QidoResource, api_version: int) -> None:
    try:
        parsed = parse_query(resource, query, api_version=api_version)
    except BadRequestError as exc:
        assert exc.status == 400 and exc.message
    else:
        assert isinstance(parsed, QidoQuery)
        assert 0 <= parsed.limit <= 200 and parsed.offset >= 0  # limit=0 asks for no results (204)
