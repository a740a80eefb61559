"""`dicomweb search`: query paths, table output, and QIDO-RS against the local server."""

from __future__ import annotations

import json

import pytest

from dicomweb_cli.search import SearchQuery, format_table
from tests.dicomweb_cli.dicom_folders import DicomFolder, run_cli

SEARCH_STUDIES = ("GET", "v{version}/studies")
SEARCH_STUDY_INSTANCES = ("GET", "v{version}/studies/{study}/instances")


@pytest.mark.parametrize(("query", "path"), [
    (SearchQuery("studies"), "/studies"),
    (SearchQuery("series"), "/series"),
    (SearchQuery("series", study="1.2"), "/studies/1.2/series"),
    (SearchQuery("instances"), "/instances"),
    (SearchQuery("instances", study="1.2"), "/studies/1.2/instances"),
    (SearchQuery("instances", study="1.2", series="1.3"), "/studies/1.2/series/1.3/instances"),
])
def test_each_level_and_scope_queries_its_resource(query: SearchQuery, path: str) -> None:
    assert query.path() == path


def test_a_series_scope_without_its_study_is_refused() -> None:
    with pytest.raises(ValueError, match="--series needs --study"):
        SearchQuery("instances", series="1.3").path()


def test_query_parameters_carry_filters_fields_fuzzy_and_paging() -> None:
    query = SearchQuery("studies", filters=(("PatientID", "X"),), include_fields=("StudyDescription",), fuzzy=True)
    assert query.params(offset=20, limit=10) == [
        ("PatientID", "X"), ("includefield", "StudyDescription"), ("fuzzymatching", "true"), ("limit", "10"),
        ("offset", "20")]


def test_the_table_shows_names_alphabetically_and_multiple_values_with_backslashes() -> None:
    row = {"0020000D": {"vr": "UI", "Value": ["1.2.3"]}, "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^J"}]},
           "00080061": {"vr": "CS", "Value": ["CT", "MR"]}}
    header, line = format_table([row], "studies").splitlines()
    assert header.split() == ["StudyInstanceUID", "StudyDate", "PatientName", "PatientID", "AccessionNumber",
                              "ModalitiesInStudy", "NumberOfStudyRelatedInstances"]
    assert line.split() == ["1.2.3", "Doe^J", "CT\\MR"]


@pytest.fixture
def uploaded(uploaded_folder: DicomFolder, registered_routes: frozenset[tuple[str, str]]) -> DicomFolder:
    if not {SEARCH_STUDIES, SEARCH_STUDY_INSTANCES} <= registered_routes:
        pytest.skip("the server has no QIDO-RS routes yet")
    return uploaded_folder


def test_search_for_a_study_prints_it_in_a_table(server: str, uploaded: DicomFolder) -> None:
    result = run_cli("--url", f"{server}/v2", "search", "studies", "-f", f"StudyInstanceUID={uploaded.study}")
    assert result.returncode == 0, result.stdout + result.stderr
    header, *rows = result.stdout.strip().splitlines()
    assert header.startswith("StudyInstanceUID")
    assert len(rows) == 1 and rows[0].startswith(uploaded.study)


def test_search_for_the_instances_of_a_study_as_json(server: str, uploaded: DicomFolder) -> None:
    result = run_cli("--url", f"{server}/v2", "search", "instances", "--study", uploaded.study, "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    sops = {row["00080018"]["Value"][0] for row in json.loads(result.stdout)}
    assert sops == {sop for sop, (study, _) in uploaded.locations.items() if study == uploaded.study}


def test_search_with_all_pages_follows_offsets_across_pages(server: str, uploaded: DicomFolder) -> None:
    result = run_cli("--url", f"{server}/v2", "search", "instances", "--study", uploaded.study, "--all",
                     "--page-size", "3", "--format", "json")
    paged = run_cli("--url", f"{server}/v2", "search", "instances", "--study", uploaded.study, "--format", "json")
    assert len(json.loads(result.stdout)) == 4
    assert sorted(json.dumps(r, sort_keys=True) for r in json.loads(result.stdout)) == sorted(
        json.dumps(r, sort_keys=True) for r in json.loads(paged.stdout))
