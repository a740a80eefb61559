"""DELETE of studies, series and instances through the real HTTP server (Azure's status codes, section 6)."""

from __future__ import annotations

import httpx
import pytest
from pydicom.uid import generate_uid

from dicom_core.wire.media_types import DICOM_JSON
from tests.factories import make_dataset, multipart_body, to_bytes

MULTIPART = 'multipart/related; type="application/dicom"; boundary=test-boundary'


def _store(server: str, datasets: list) -> None:
    response = httpx.post(f"{server}/v2/studies", content=multipart_body([to_bytes(ds) for ds in datasets]),
                          headers={"Content-Type": MULTIPART, "Accept": DICOM_JSON}, timeout=60)
    assert response.status_code == 200, response.text


def _search(server: str, path: str) -> list[dict]:
    response = httpx.get(f"{server}{path}", headers={"Accept": DICOM_JSON}, timeout=60)
    assert response.status_code in (200, 204), response.text
    return response.json() if response.status_code == 200 else []


def test_deleted_instance_answers_204_with_an_empty_body_and_is_gone(server: str) -> None:
    kept, removed = make_dataset(), make_dataset()
    removed.StudyInstanceUID, removed.SeriesInstanceUID = kept.StudyInstanceUID, kept.SeriesInstanceUID
    _store(server, [kept, removed])
    url = (f"{server}/v2/studies/{removed.StudyInstanceUID}/series/{removed.SeriesInstanceUID}"
           f"/instances/{removed.SOPInstanceUID}")
    response = httpx.delete(url, timeout=60)
    assert (response.status_code, response.content) == (204, b"")
    assert httpx.get(url, headers={"Accept": "application/dicom; transfer-syntax=*"}, timeout=60).status_code == 404
    [series] = _search(server, f"/v2/studies/{kept.StudyInstanceUID}/series")
    assert series["00201209"]["Value"] == [1]  # NumberOfSeriesRelatedInstances


def test_deleted_series_leaves_the_search_and_the_study_counts(server: str) -> None:
    study = generate_uid()
    kept, removed = make_dataset(study=study, Modality="CT"), make_dataset(study=study, Modality="MR")
    _store(server, [kept, removed])
    response = httpx.delete(f"{server}/v2/studies/{study}/series/{removed.SeriesInstanceUID}", timeout=60)
    assert response.status_code == 204
    listed = _search(server, f"/v2/studies/{study}/series")
    assert [s["0020000E"]["Value"] for s in listed] == [[kept.SeriesInstanceUID]]
    [found] = _search(server, f"/v2/studies?StudyInstanceUID={study}")
    assert (found["00080061"]["Value"], found["00201208"]["Value"]) == (["CT"], [1])


def test_deleted_study_is_gone_from_retrieve_and_search(server: str) -> None:
    ds = make_dataset(PatientID=f"DEL-{generate_uid()[-12:]}")
    _store(server, [ds])
    assert httpx.delete(f"{server}/v2/studies/{ds.StudyInstanceUID}", timeout=60).status_code == 204
    assert httpx.get(f"{server}/v2/studies/{ds.StudyInstanceUID}/metadata", timeout=60).status_code == 404
    assert _search(server, f"/v2/studies?PatientID={ds.PatientID}") == []
    assert _search(server, f"/v2/instances?SOPInstanceUID={ds.SOPInstanceUID}") == []


def test_second_delete_of_a_study_is_404(server: str) -> None:
    ds = make_dataset()
    _store(server, [ds])
    assert httpx.delete(f"{server}/v2/studies/{ds.StudyInstanceUID}", timeout=60).status_code == 204
    assert httpx.delete(f"{server}/v2/studies/{ds.StudyInstanceUID}", timeout=60).status_code == 404


@pytest.mark.parametrize("path", ["/studies/{s}", "/studies/{s}/series/{s}", "/studies/{s}/series/{s}/instances/{s}"])
def test_delete_of_what_was_never_stored_is_404(server: str, path: str) -> None:
    response = httpx.delete(server + "/v2" + path.format(s=generate_uid()), timeout=60)
    assert response.status_code == 404


@pytest.mark.parametrize("path", ["/studies/1.2.abc", "/studies/1.2/series/x.1",
                                  "/studies/1.2/series/1.3/instances/" + "1" * 65])
def test_delete_with_a_malformed_uid_is_400(server: str, path: str) -> None:
    response = httpx.delete(server + "/v2" + path, timeout=60)
    assert response.status_code == 400
    assert "not a valid DICOM UID" in response.text


def test_delete_works_on_v1(server: str) -> None:
    ds = make_dataset()
    _store(server, [ds])
    assert httpx.delete(f"{server}/v1/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}",
                        timeout=60).status_code == 204


def test_study_stored_again_after_its_delete_is_found_with_new_counts(server: str) -> None:
    ds = make_dataset(PatientID=f"DEL-{generate_uid()[-12:]}")
    _store(server, [ds])
    assert httpx.delete(f"{server}/v2/studies/{ds.StudyInstanceUID}", timeout=60).status_code == 204
    again = make_dataset(study=ds.StudyInstanceUID, PatientID=ds.PatientID)
    _store(server, [again, ds])
    [found] = _search(server, f"/v2/studies?PatientID={ds.PatientID}")
    assert found["00201208"]["Value"] == [2]
