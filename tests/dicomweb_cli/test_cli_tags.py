"""`dicomweb tags`: add with --wait, list, show, disable, enable, errors and delete against the local server."""

from __future__ import annotations

import json

from tests.dicomweb_cli.dicom_folders import run_cli


def _tags(server: str, *arguments: str) -> tuple[int, str, str]:
    result = run_cli("--url", f"{server}/v2", "--no-progress", "tags", *arguments)
    return result.returncode, result.stdout, result.stderr


def test_a_tag_is_added_waited_for_listed_switched_and_deleted(isolated_server: str) -> None:
    code, out, err = _tags(isolated_server, "add", "SeriesNumber", "--level", "Series", "--wait")
    assert code == 0, err
    assert (json.loads(out)["status"], json.loads(out)["percentComplete"]) == ("succeeded", 100)
    code, out, _ = _tags(isolated_server, "list")
    assert code == 0 and "00200011" in out and "ready" in out
    assert json.loads(_tags(isolated_server, "disable", "SeriesNumber")[1])["queryStatus"] == "disabled"
    assert json.loads(_tags(isolated_server, "enable", "00200011")[1])["queryStatus"] == "enabled"
    assert json.loads(_tags(isolated_server, "errors", "SeriesNumber")[1]) == []
    assert _tags(isolated_server, "delete", "SeriesNumber")[0] == 0


def test_an_unknown_tag_fails_with_the_services_reason(isolated_server: str) -> None:
    code, _, err = _tags(isolated_server, "show", "PatientAge")
    assert code == 1 and "HTTP 404" in err
