"""`dicomweb upload` against the local server: folders with junk, resuming, failures, progress."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydicom.uid import generate_uid

from tests.dicomweb_cli.dicom_folders import DicomFolder, as_stored, run_cli
from tests.factories import make_instance


def stored_files(blobs: Any, folder: DicomFolder) -> dict[str, list[bytes]]:
    """The blobs the server holds for each instance of the folder, by SOP Instance UID."""
    found: dict[str, list[bytes]] = {sop: [] for sop in folder.files}
    for study in (folder.study, folder.other_study):
        for name in blobs.names(f"{study}/"):
            sop = name.split("/")[2]
            if sop in found:
                found[sop].append(blobs.read(name))
    return found


def test_upload_stores_every_dicom_file_of_nested_folders_and_skips_junk(
    server: str, blobs: Any, dicom_folder: DicomFolder
) -> None:
    result = run_cli("--url", f"{server}/v2", "upload", str(dicom_folder.root))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Found 5 DICOM files" in result.stdout and "skipped 3 other files" in result.stdout
    assert "Stored: 5. Failed: 0." in result.stdout
    stored = stored_files(blobs, dicom_folder)
    assert {sop: [as_stored(path.read_bytes())] for sop, path in dicom_folder.files.items()} == stored


def test_upload_again_after_a_partial_upload_skips_what_the_server_has(
    server: str, blobs: Any, dicom_folder: DicomFolder
) -> None:
    first = run_cli("--url", f"{server}/v2", "upload", str(dicom_folder.root / "a" / "b"))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Stored: 2." in first.stdout

    second = run_cli("--url", f"{server}/v2", "upload", str(dicom_folder.root))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Already on the server: 2 " in second.stdout
    assert "Stored: 3. Failed: 0." in second.stdout
    assert all(len(copies) == 1 for copies in stored_files(blobs, dicom_folder).values())


def test_upload_of_everything_already_there_stores_nothing_and_succeeds(server: str, dicom_folder: DicomFolder) -> None:
    assert run_cli("--url", f"{server}/v2", "upload", str(dicom_folder.root)).returncode == 0
    again = run_cli("--url", f"{server}/v2", "upload", "--batch-files", "2", str(dicom_folder.root))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Already on the server: 5 " in again.stdout and "Stored: 0. Failed: 0." in again.stdout


def test_without_the_search_the_servers_45070_still_counts_as_already_there(
    server: str, dicom_folder: DicomFolder
) -> None:
    assert run_cli("--url", f"{server}/v2", "upload", str(dicom_folder.root)).returncode == 0
    again = run_cli("--url", f"{server}/v2", "upload", "--no-skip-existing", str(dicom_folder.root))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "(0 found by search, 5 answered 45070)" in again.stdout


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_a_file_the_server_rejects_fails_the_run_with_its_reason(server: str, dicom_folder: DicomFolder) -> None:
    bad = dicom_folder.root / "bad.dcm"
    bad.write_bytes(make_instance(study=generate_uid(), sop="1.2.3.abc"))
    result = run_cli("--url", f"{server}/v2", "upload", str(dicom_folder.root))
    assert result.returncode == 1
    assert "Stored: 5. Failed: 1." in result.stdout
    assert re.search(rf"FAILED {re.escape(str(bad))}: failure reason 43264", result.stdout)


def test_the_progress_bar_shows_bytes_files_and_rate(server: str, dicom_folder: DicomFolder) -> None:
    result = run_cli("--url", f"{server}/v2", "upload", "--batch-files", "1", str(dicom_folder.root))
    assert result.returncode == 0
    last = result.stderr.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("Uploading: 100%")
    assert "5/5 files" in last and re.search(r"\d(\.\d+)?[kM]?B/s", last)


def test_an_unreachable_service_fails_after_its_retries(dicom_folder: DicomFolder) -> None:
    result = run_cli("--url", "http://127.0.0.1:9/v2", "--retries", "1", "--no-progress", "upload",
                     str(dicom_folder.root))
    assert result.returncode == 1
    assert "Stored: 0. Failed: 5." in result.stdout and "gave up after 2 attempts" in result.stdout


@pytest.mark.parametrize("arguments", [["upload", "/no/such/folder"], ["search", "series", "--series", "1.2"]])
def test_usage_errors_exit_with_2(server: str, arguments: list[str]) -> None:
    assert run_cli("--url", f"{server}/v2", *arguments).returncode == 2
