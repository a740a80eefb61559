"""`dicomweb download` against the local server: a study or a series into a folder tree, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dicomweb_cli.dicom_folders import DicomFolder, as_stored, run_cli

RETRIEVE_STUDY = ("GET", "v{version}/studies/{study}")
RETRIEVE_SERIES = ("GET", "v{version}/studies/{study}/series/{series}")


@pytest.fixture
def uploaded(uploaded_folder: DicomFolder, registered_routes: frozenset[tuple[str, str]]) -> DicomFolder:
    if not {RETRIEVE_STUDY, RETRIEVE_SERIES} <= registered_routes:
        pytest.skip("the server has no WADO-RS retrieve routes yet")
    return uploaded_folder


def downloaded(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_download_writes_every_instance_of_the_study_byte_for_byte(
    server: str, uploaded: DicomFolder, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run_cli("--url", f"{server}/v2", "download", uploaded.study, "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    expected = {
        f"{study}/{series}/{sop}.dcm": as_stored(uploaded.bytes_of(sop))
        for sop, (study, series) in uploaded.locations.items() if study == uploaded.study
    }
    assert downloaded(out) == expected
    assert "Wrote 4 files" in result.stdout
    assert "Downloading" in result.stderr


def test_download_of_one_series_writes_only_that_series(server: str, uploaded: DicomFolder, tmp_path: Path) -> None:
    out = tmp_path / "out"
    series = uploaded.series[1]
    result = run_cli("--url", f"{server}/v2", "--no-progress", "download", uploaded.study, "--series", series,
                     "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    (three,) = [sop for sop, path in uploaded.files.items() if path.name == "three.dcm"]
    assert downloaded(out) == {f"{uploaded.study}/{series}/{three}.dcm": uploaded.bytes_of(three)}


def test_download_of_an_unknown_study_fails_with_the_servers_answer(
    server: str, uploaded: DicomFolder, tmp_path: Path
) -> None:
    result = run_cli("--url", f"{server}/v2", "--no-progress", "download", "1.2.3.4.5.6.7", "--out", str(tmp_path))
    assert result.returncode == 1
    assert "HTTP 404" in result.stderr
