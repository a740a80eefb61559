"""QIDO-RS on extended query tags over HTTP against Azurite: each matching kind at the tag's level and below,
new stores indexed at once, replaced and deleted instances, disabled tags, indexing errors, v1 and v2 stores."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_core.wire.media_types import DICOM_JSON
from tests.factories import make_dataset, multipart_body, to_bytes
from tests.operations import wait_for_operation

MULTIPART = 'multipart/related; type="application/dicom"; boundary=test-boundary'
STUDY_ID, STUDY_TIME, OPERATORS_NAME = "00200010", "00080030", "00081070"
FRAME_OF_REFERENCE, SERIES_NUMBER, INSTANCE_NUMBER, ACQUISITION_DATE = "00200052", "00200011", "00200013", "00080022"
TAGS = [
    {"path": "StudyID", "level": "Study"}, {"path": "StudyTime", "level": "Study"},
    {"path": "OperatorsName", "level": "Series"}, {"path": "FrameOfReferenceUID", "level": "Series"},
    {"path": "SeriesNumber", "level": "Series"}, {"path": "InstanceNumber", "level": "Instance"},
    {"path": "AcquisitionDate", "level": "Instance"},
]
TOO_LARGE_IS = "99999999999"  # valid IS text, outside the 32-bit range of an extended IS tag


@dataclass(frozen=True)
class Archive:
    """The server, the stored instances by name, and the answer to a search while the tags were being added."""

    server: str
    instances: dict[str, Dataset]
    while_adding: httpx.Response


def _instance(study: str, series: str, **attributes: object) -> Dataset:
    return make_dataset(study=study, series=series, **attributes)


def _store(server: str, datasets: list[Dataset], *, version: int = 2, method: str = "POST") -> httpx.Response:
    return httpx.request(method, f"{server}/v{version}/studies",
                         content=multipart_body([to_bytes(ds) for ds in datasets]),
                         headers={"Content-Type": MULTIPART, "Accept": DICOM_JSON}, timeout=60)



@pytest.fixture(scope="module")
def archive(isolated_server: str) -> Iterator[Archive]:
    """Three studies stored, then the tags added and reindexed (SeriesNumber ends disabled: one value is invalid)."""
    study_a, study_b, study_c = generate_uid(), generate_uid(), generate_uid()
    series_a, series_b, series_c = generate_uid(), generate_uid(), generate_uid()
    instances = {
        "a1": _instance(study_a, series_a, StudyID="ABC-1", StudyTime="083000", OperatorsName="Doe^John",
                        FrameOfReferenceUID="1.2.3.1", SeriesNumber="1", InstanceNumber="1",
                        AcquisitionDate="20240105"),
        "a2": _instance(study_a, series_a, StudyID="ABC-1", StudyTime="083000", OperatorsName="Doe^John",
                        FrameOfReferenceUID="1.2.3.1", SeriesNumber="1", InstanceNumber="2",
                        AcquisitionDate="20240106"),
        "b1": _instance(study_b, series_b, StudyID="ABD-2", StudyTime="101500", OperatorsName="Smith^Jane",
                        FrameOfReferenceUID="1.2.3.2", SeriesNumber=TOO_LARGE_IS, InstanceNumber="3",
                        AcquisitionDate="20240220"),
        "c1": _instance(study_c, series_c, StudyID="XYZ", StudyTime="235959", OperatorsName="Johnson^Al",
                        FrameOfReferenceUID="1.2.3.3", SeriesNumber="7", InstanceNumber="4",
                        AcquisitionDate="20231231"),
    }
    assert _store(isolated_server, list(instances.values())).status_code in (200, 202)
    added = httpx.post(f"{isolated_server}/v2/extendedquerytags", json=TAGS, timeout=30)
    assert added.status_code == 202, added.text
    time.sleep(2.5)  # every registry copy of the server holds the new tags; the reindex has not begun
    while_adding = httpx.get(f"{isolated_server}/v2/studies?StudyID=ABC-1", timeout=30)
    done = wait_for_operation(added.json()["href"])
    assert done.status_code == 200 and done.json()["status"] == "succeeded", done.text
    time.sleep(2.5)  # the Ready status reaches the registry copies
    yield Archive(isolated_server, instances, while_adding)


def _search(archive: Archive, path: str, **headers: str) -> httpx.Response:
    response = httpx.get(f"{archive.server}/v2{path}", headers=headers, timeout=30)
    assert response.status_code in (200, 204), response.text
    return response


def _uids(response: httpx.Response, tag: str) -> set[str]:
    return set() if response.status_code == 204 else {item[tag]["Value"][0] for item in response.json()}


def _studies(archive: Archive, *names: str) -> set[str]:
    return {archive.instances[name].StudyInstanceUID for name in names}


def _series(archive: Archive, *names: str) -> set[str]:
    return {archive.instances[name].SeriesInstanceUID for name in names}


def _sops(archive: Archive, *names: str) -> set[str]:
    return {archive.instances[name].SOPInstanceUID for name in names}


def _first_comment(item: dict[str, dict[str, list[dict[str, dict[str, list[str]]]]]]) -> str:
    return item["00741048"]["Value"][0]["00000902"]["Value"][0]


def test_a_tag_being_added_is_not_queryable(archive: Archive) -> None:
    assert archive.while_adding.status_code == 400 and "not queryable" in archive.while_adding.text


def test_a_study_tag_matches_exactly_at_its_level_and_below(archive: Archive) -> None:
    assert _uids(_search(archive, "/studies?StudyID=abc-1"), "0020000D") == _studies(archive, "a1")
    assert _uids(_search(archive, "/series?StudyID=ABC-1"), "0020000E") == _series(archive, "a1")
    assert _uids(_search(archive, "/instances?00200010=ABC-1"), "00080018") == _sops(archive, "a1", "a2")


def test_a_study_tag_matches_a_wildcard(archive: Archive) -> None:
    assert _uids(_search(archive, "/studies?StudyID=AB*"), "0020000D") == _studies(archive, "a1", "b1")
    assert _uids(_search(archive, "/studies?StudyID=AB?-2"), "0020000D") == _studies(archive, "b1")


def test_a_time_tag_matches_a_range(archive: Archive) -> None:
    assert _uids(_search(archive, "/studies?StudyTime=080000-120000"), "0020000D") == _studies(archive, "a1", "b1")
    assert _uids(_search(archive, "/studies?StudyTime=100000-"), "0020000D") == _studies(archive, "b1", "c1")


def test_a_date_tag_matches_a_range_at_instance_level(archive: Archive) -> None:
    found = _search(archive, "/instances?AcquisitionDate=20240101-20240131")
    assert _uids(found, "00080018") == _sops(archive, "a1", "a2")
    a1 = archive.instances["a1"]
    scoped = _search(archive, f"/studies/{a1.StudyInstanceUID}/series/{a1.SeriesInstanceUID}/instances"
                              "?AcquisitionDate=20240106")
    assert _uids(scoped, "00080018") == _sops(archive, "a2")


def test_a_person_name_tag_matches_fuzzily_at_series_level_and_below(archive: Archive) -> None:
    fuzzy = _search(archive, "/series?OperatorsName=jo&fuzzymatching=true")
    assert _uids(fuzzy, "0020000E") == _series(archive, "a1", "c1")
    exact = _search(archive, "/instances?OperatorsName=doe^john")
    assert _uids(exact, "00080018") == _sops(archive, "a1", "a2")


def test_a_uid_tag_matches_a_uid_list(archive: Archive) -> None:
    found = _search(archive, "/series?FrameOfReferenceUID=1.2.3.1,1.2.3.3")
    assert _uids(found, "0020000E") == _series(archive, "a1", "c1")


def test_an_extended_filter_is_intersected_with_the_other_filters(archive: Archive) -> None:
    a1 = archive.instances["a1"]
    found = _search(archive, f"/instances?StudyID=AB*&SeriesInstanceUID={a1.SeriesInstanceUID}&InstanceNumber=2")
    assert _uids(found, "00080018") == _sops(archive, "a2")


def test_the_filtered_extended_attribute_is_returned(archive: Archive) -> None:
    found = _search(archive, "/instances?InstanceNumber=4&includefield=AcquisitionDate")
    [result] = found.json()
    assert result[INSTANCE_NUMBER]["Value"] == [4] and result[ACQUISITION_DATE]["Value"] == ["20231231"]


def test_an_instance_tag_is_not_a_filter_at_study_level(archive: Archive) -> None:
    found = _search(archive, "/studies?InstanceNumber=4")
    assert "InstanceNumber" in found.headers["warning"]
    assert _studies(archive, "a1", "b1", "c1") <= _uids(found, "0020000D")


def test_a_disabled_tag_is_400_and_re_enabled_answers_with_the_erroneous_header(archive: Archive) -> None:
    tag = httpx.get(f"{archive.server}/v2/extendedquerytags/SeriesNumber", timeout=30).json()
    assert (tag["queryStatus"], tag["errors"]["count"]) == ("disabled", 1)
    refused = httpx.get(f"{archive.server}/v2/series?SeriesNumber=7", timeout=30)
    assert refused.status_code == 400 and "disabled" in refused.text
    patched = httpx.patch(f"{archive.server}/v2/extendedquerytags/SeriesNumber", json={"queryStatus": "enabled"},
                          timeout=30)
    assert patched.status_code == 200
    time.sleep(2.5)  # the registry copies see the tag enabled
    found = _search(archive, "/series?SeriesNumber=7")
    assert _uids(found, "0020000E") == _series(archive, "c1")
    assert found.headers["erroneous-dicom-attributes"] == "SeriesNumber"


def test_a_new_store_is_searchable_at_once(archive: Archive) -> None:
    new = _instance(generate_uid(), generate_uid(), StudyID="NEW-1", InstanceNumber="41")
    assert _store(archive.server, [new]).status_code == 200
    assert _uids(_search(archive, "/studies?StudyID=NEW-1"), "0020000D") == {new.StudyInstanceUID}
    assert _uids(_search(archive, "/instances?InstanceNumber=41"), "00080018") == {new.SOPInstanceUID}


def test_a_replaced_instance_matches_by_its_new_value_only(archive: Archive) -> None:
    study, series = generate_uid(), generate_uid()
    first = _instance(study, series, StudyID="OLD-R", InstanceNumber="51")
    assert _store(archive.server, [first]).status_code == 200
    replaced = _instance(study, series, sop=first.SOPInstanceUID, StudyID="NEW-R", InstanceNumber="52")
    assert _store(archive.server, [replaced], method="PUT").status_code == 200
    assert _search(archive, "/studies?StudyID=OLD-R").status_code == 204
    assert _search(archive, "/instances?InstanceNumber=51").status_code == 204
    assert _uids(_search(archive, "/instances?InstanceNumber=52"), "00080018") == {first.SOPInstanceUID}


def test_a_deleted_instance_never_matches(archive: Archive) -> None:
    gone = _instance(generate_uid(), generate_uid(), StudyID="GONE-1", InstanceNumber="61")
    assert _store(archive.server, [gone]).status_code == 200
    assert _search(archive, "/instances?InstanceNumber=61").status_code == 200
    deleted = httpx.delete(f"{archive.server}/v2/studies/{gone.StudyInstanceUID}/series/{gone.SeriesInstanceUID}"
                           f"/instances/{gone.SOPInstanceUID}", timeout=30)
    assert deleted.status_code == 204
    assert _search(archive, "/instances?InstanceNumber=61").status_code == 204
    assert _search(archive, "/studies?StudyID=GONE-1").status_code == 204


def test_a_v1_store_of_an_invalid_value_is_409_and_nothing_is_stored(archive: Archive) -> None:
    bad = _instance(generate_uid(), generate_uid(), StudyID="V1-BAD", InstanceNumber=TOO_LARGE_IS)
    refused = _store(archive.server, [bad], version=1)
    assert refused.status_code == 409, refused.text
    [failed] = refused.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [43264]
    assert "DICOM100: (0020,0013)" in _first_comment(failed)
    assert httpx.get(f"{archive.server}/v2/studies/{bad.StudyInstanceUID}/metadata", timeout=30).status_code == 404
    assert _search(archive, "/studies?StudyID=V1-BAD").status_code == 204


def test_a_v2_store_of_an_invalid_value_is_stored_with_a_warning(archive: Archive) -> None:
    bad = _instance(generate_uid(), generate_uid(), StudyID="V2-BAD", InstanceNumber=TOO_LARGE_IS)
    stored = _store(archive.server, [bad])
    assert stored.status_code == 202, stored.text
    [item] = stored.json()["00081199"]["Value"]
    assert "DICOM100: (0020,0013)" in _first_comment(item)
    assert _uids(_search(archive, "/studies?StudyID=V2-BAD"), "0020000D") == {bad.StudyInstanceUID}
    # As in Azure's service, a store's invalid value is a warning of its response, not an error of the tag.
    found = _search(archive, "/instances?InstanceNumber=5")
    assert "erroneous-dicom-attributes" not in found.headers


def test_a_v1_store_of_a_value_invalid_for_its_vr_is_409_and_v2_stores_it_with_a_warning(archive: Archive) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pydicom's, as it is given the invalid value on purpose
        invalid = _instance(generate_uid(), generate_uid(), StudyTime="240000")
    refused = _store(archive.server, [invalid], version=1)
    assert refused.status_code == 409, refused.text
    [failed] = refused.json()["00081198"]["Value"]
    assert "DICOM100: (0008,0030)" in _first_comment(failed)
    stored = _store(archive.server, [invalid])
    assert stored.status_code == 202, stored.text
