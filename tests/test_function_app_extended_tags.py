"""Extended query tags over HTTP against Azurite: add to stored data, watch the reindex, errors, patch, delete."""

from __future__ import annotations

import time

import httpx
import pytest
from pydicom.datadict import DicomDictionary
from pydicom.uid import generate_uid

from dicom_core.model.levels import ALL_QUERYABLE
from dicom_core.search_index.extended_values import SUPPORTED_VRS
from dicom_core.wire.media_types import DICOM_JSON
from tests.factories import make_dataset, multipart_body, to_bytes
from tests.operations import wait_for_operation

MULTIPART = 'multipart/related; type="application/dicom"; boundary=test-boundary'
PRIVATE = "00091001"


def _store_archive(server: str, count: int) -> None:
    datasets = []
    for number in range(count):
        dataset = make_dataset(study=generate_uid(), InstanceNumber=number)
        dataset.add_new(0x00090010, "LO", "ACME")
        dataset.add_new(int(PRIVATE, 16), "LO", "bad" if number % 10 == 0 else str(number))
        datasets.append(dataset)
    response = httpx.post(f"{server}/v2/studies", content=multipart_body([to_bytes(ds) for ds in datasets]),
                          headers={"Content-Type": MULTIPART, "Accept": DICOM_JSON}, timeout=120)
    assert response.status_code in (200, 202), response.text



@pytest.mark.parametrize("body", [
    "not json", "[]", '[{"level": "Study"}]', '[{"path": "StudyTime"}]', '[{"path": "StudyTime", "level": "Patient"}]',
    '[{"path": "PatientName", "level": "Study"}]', '[{"path": "00081110.00081150", "level": "Study"}]',
    '[{"path": "ReferencedStudySequence", "level": "Study"}]', '[{"path": "StudyTime", "vr": "DA", "level": "Study"}]',
    '[{"path": "StudyTime", "vr": "OB", "level": "Study"}]', f'[{{"path": "{PRIVATE}", "vr": "LO", "level": "Study"}}]',
    '[{"path": "StudyTime", "privateCreator": "X", "level": "Study"}]',
    '[{"path": "StudyTime", "level": "Study"}, {"path": "00080030", "level": "Study"}]',
])
def test_an_invalid_add_is_400_in_plain_text(isolated_server: str, body: str) -> None:
    response = httpx.post(f"{isolated_server}/v2/extendedquerytags", content=body,
                          headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/plain")


def test_more_than_128_tags_is_400(isolated_server: str) -> None:
    candidates = [f"{tag:08X}" for tag, entry in sorted(DicomDictionary.items())
                  if entry[0] in SUPPORTED_VRS and not entry[3] and tag not in ALL_QUERYABLE and tag >> 16 > 0x0008
                  and tag & 0xFFFF][:129]
    body = [{"path": path, "level": "Instance"} for path in candidates]
    response = httpx.post(f"{isolated_server}/v2/extendedquerytags", json=body, timeout=30)
    assert response.status_code == 400 and "128" in response.text


@pytest.mark.parametrize(("method", "path"), [("GET", "StudyTime"), ("DELETE", "00080030"), ("GET", "StudyTime/errors"),
                                              ("PATCH", "StudyTime")])
def test_an_unregistered_tag_is_404(isolated_server: str, method: str, path: str) -> None:
    response = httpx.request(method, f"{isolated_server}/v2/extendedquerytags/{path}",
                             json={"queryStatus": "enabled"}, timeout=30)
    assert response.status_code == 404


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "offset=-1", "limit=x", "color=red"])
def test_an_invalid_page_is_400(isolated_server: str, query: str) -> None:
    response = httpx.get(f"{isolated_server}/v2/extendedquerytags?{query}", timeout=30)
    assert response.status_code == 400


def test_an_invalid_tag_path_is_400(isolated_server: str) -> None:
    assert httpx.get(f"{isolated_server}/v2/extendedquerytags/NoSuchKeyword", timeout=30).status_code == 400


def test_a_tag_added_to_stored_instances_is_reindexed_listed_patched_and_deleted(isolated_server: str) -> None:
    base = f"{isolated_server}/v2/extendedquerytags"
    _store_archive(isolated_server, 50)
    added = httpx.post(base, json=[{"path": PRIVATE, "vr": "IS", "privateCreator": "ACME", "level": "Instance"}],
                       timeout=30)
    assert added.status_code == 202, added.text
    reference = added.json()
    assert set(reference) == {"id", "href"} and added.headers["location"] == reference["href"]
    assert reference["href"].endswith(f"/v2/operations/{reference['id']}")
    adding = httpx.get(f"{base}/{PRIVATE}", timeout=30).json()
    assert adding["status"] == "adding" and adding["operation"]["id"] == reference["id"]
    busy = httpx.post(base, json=[{"path": "StudyTime", "level": "Study"}], timeout=30)
    assert busy.status_code == 409 and reference["id"] in busy.headers["location"]

    done = wait_for_operation(reference["href"])
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["percentComplete"]) == ("succeeded", 100)
    tag = httpx.get(f"{base}/{PRIVATE}", timeout=30).json()
    assert (tag["status"], tag["queryStatus"], tag["errors"]["count"]) == ("ready", "disabled", 5)
    assert tag["privateCreator"] == "ACME" and "operation" not in tag
    errors = httpx.get(tag["errors"]["href"] + "?limit=2&offset=1", timeout=30)
    assert errors.status_code == 200 and len(errors.json()) == 2
    assert set(errors.json()[0]) == {"studyInstanceUid", "seriesInstanceUid", "sopInstanceUid", "createdTime",
                                     "errorMessage"}
    assert httpx.post(base, json=[{"path": PRIVATE, "vr": "IS", "privateCreator": "ACME", "level": "Study"}],
                      timeout=30).status_code == 409

    patched = httpx.patch(f"{base}/{PRIVATE}", json={"QueryStatus": "Enabled"}, timeout=30)
    assert patched.status_code == 200 and patched.json()["queryStatus"] == "enabled"
    assert [t["path"] for t in httpx.get(f"{base}?limit=1", timeout=30).json()] == [PRIVATE]

    assert httpx.delete(f"{base}/{PRIVATE}", timeout=30).status_code == 204
    deadline = time.monotonic() + 120
    while httpx.get(f"{base}/{PRIVATE}", timeout=30).status_code != 404:
        assert time.monotonic() < deadline, "the deleted tag's removal did not finish"
        time.sleep(1)
