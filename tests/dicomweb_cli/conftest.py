"""Fixtures for the command-line tool's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dicomweb_cli.dicom_folders import DicomFolder, run_cli, write_dicom_folder


@pytest.fixture
def dicom_folder(tmp_path: Path) -> DicomFolder:
    """A fresh folder tree with new UIDs, so each test's instances are new to the server."""
    return write_dicom_folder(tmp_path / "dicom")


@pytest.fixture
def uploaded_folder(server: str, dicom_folder: DicomFolder) -> DicomFolder:
    """`dicom_folder`, uploaded to the session's server with the command-line tool."""
    result = run_cli("--url", f"{server}/v2", "--no-progress", "upload", str(dicom_folder.root))
    assert result.returncode == 0, result.stdout + result.stderr
    return dicom_folder
