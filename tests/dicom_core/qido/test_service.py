"""QIDO-RS searches against real Azurite: matching per attribute and match kind, paging, order, return sets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import pytest
from pydicom.uid import generate_uid

from dicom_core.model.errors import NotAcceptableError
from dicom_core.qido.query import QidoResource
from dicom_core.qido.service import SearchRequest, SearchResults, search, search_datasets
from dicom_core.settings import Settings
from dicom_core.storage.clients import Storage, open_storage
from tests.factories import make_dataset, to_bytes

STUDIES, SERIES, INSTANCES = QidoResource.ALL_STUDIES, QidoResource.ALL_SERIES, QidoResource.ALL_INSTANCES
STUDY_SERIES, STUDY_INSTANCES = QidoResource.STUDY_SERIES, QidoResource.STUDY_INSTANCES
SERIES_INSTANCES = QidoResource.STUDY_SERIES_INSTANCES
STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"

# Study label -> study attributes; series label -> (study, modality, series attributes); instance -> series.
STUDY_ATTRIBUTES = {
    "A": dict(PatientName="Doe^John", PatientID="PID-A", AccessionNumber="ACC-A", StudyDate="20200101",
              ReferringPhysicianName="Smith^Anna", StudyDescription="Chest CT", PatientBirthDate="19800101",
              SpecificCharacterSet="ISO_IR 192", PatientSex="F", StudyTime="120000", PatientAge="040Y"),
    "B": dict(PatientName="Müller^Jürgen", PatientID="pid-b", AccessionNumber="ACC-B", StudyDate="20210615",
              ReferringPhysicianName="Jones^Bob", StudyDescription="Brain MR", PatientBirthDate="19700101"),
    "C": dict(PatientName="Doe^Jane", PatientID="PID/C#?'", AccessionNumber="ACC-C", StudyDate="20220301",
              ReferringPhysicianName="Smith^Carl", StudyDescription="Chest X"),
    "D": dict(PatientName="Jonathan^Rand^Stone Hall^^", PatientID="PID-D", StudyDate="19991231",
              StudyDescription="Abdomen"),
}
SERIES_ATTRIBUTES = {
    "A1": ("A", dict(Modality="CT", ManufacturerModelName="ModelX", PerformedProcedureStepStartDate="20200101")),
    "A2": ("A", dict(Modality="MR", ManufacturerModelName="ModelY", PerformedProcedureStepStartDate="20200102")),
    "B1": ("B", dict(Modality="MR", ManufacturerModelName="ModelY")),
    "C1": ("C", dict(Modality="CT", ManufacturerModelName="modelx")),
    "D1": ("D", dict(Modality="US")),
}
INSTANCES_OF = {"A1a": "A1", "A1b": "A1", "A2a": "A2", "B1a": "B1", "C1a": "C1", "D1a": "D1"}


@dataclass
class Corpus:
    """The stored studies and the label of every UID."""

    storage: Storage
    uids: dict[str, str]  # label -> UID
    labels: dict[str, str]  # UID -> label

    async def search(self, resource: QidoResource, query: str = "", *, api_version: int = 2,
                     study: str | None = None, series: str | None = None) -> SearchResults:
        """Run a search, with the URL's study and series given by label."""
        return await search_datasets(self.storage, SearchRequest(
            resource, api_version, query, study_uid=self.uids.get(study or ""), series_uid=self.uids.get(series or "")))

    async def found(self, resource: QidoResource, query: str = "", **kwargs: str) -> list[str]:
        """The labels of the results, in result order."""
        response = await self.search(resource, query, **kwargs)
        key = {QidoResource.ALL_STUDIES: STUDY_UID, QidoResource.ALL_SERIES: SERIES_UID,
               QidoResource.STUDY_SERIES: SERIES_UID}.get(resource, SOP_UID)
        return [self.labels[dataset[key]["Value"][0]] for dataset in response.datasets]


@pytest.fixture(scope="module")
async def corpus(unit_settings: Settings, stow_parts) -> AsyncIterator[Corpus]:
    """The instances stored one by one in label order (so D1a is the newest), in tables of their own."""
    storage = await open_storage(replace(unit_settings, table_prefix="qido", blob_container="qido-files",
                                         metadata_container="qido-metadata"))
    uids = {label: generate_uid() for label in [*STUDY_ATTRIBUTES, *SERIES_ATTRIBUTES, *INSTANCES_OF]}
    for instance, series in INSTANCES_OF.items():
        study, series_attributes = SERIES_ATTRIBUTES[series]
        ds = make_dataset(study=uids[study], series=uids[series], sop=uids[instance],
                          **{**STUDY_ATTRIBUTES[study], **series_attributes})
        assert (await stow_parts(storage, [to_bytes(ds)])).status == 200
    yield Corpus(storage, uids, {uid: label for label, uid in uids.items()})
    await storage.close()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["D", "C", "B", "A"]),
        ("StudyInstanceUID={A}", ["A"]),
        ("StudyInstanceUID={A}\\{B}", ["B", "A"]),
        ("StudyInstanceUID={C},{A},{C}", ["C", "A"]),
        ("StudyInstanceUID=a/b'c", []),
        ("PatientID=PID-A", ["A"]),
        ("PatientID=pid-a", ["A"]),
        ("PatientID=PID%2FC%23%3F%27", ["C"]),
        ("PatientID=PID-*", ["D", "B", "A"]),
        ("PatientID=PID-?", ["D", "B", "A"]),
        ("PatientID=PID-??", []),
        ("AccessionNumber=acc-b", ["B"]),
        ("PatientName=doe^john", ["A"]),
        ("PatientName=Muller^Jurgen", ["B"]),
        ("PatientName=Jonathan^Rand^Stone+Hall", ["D"]),
        ("PatientName=Doe*", ["C", "A"]),
        ("PatientName=*oe^J?n*", ["C"]),
        ("PatientName=*oe^j*n", ["A"]),
        ("PatientName=*hall", ["D"]),
        ("PatientName=jo&fuzzymatching=true", ["D", "A"]),
        ("PatientName=do+jo&fuzzymatching=true", ["A"]),
        ("PatientName=stone+ha&fuzzymatching=true", ["D"]),
        ("PatientName=ohn&fuzzymatching=true", []),
        ("PatientName=jonathan&fuzzymatching=true", ["D"]),
        ("PatientName=doe&fuzzymatching=false", []),
        ("ReferringPhysicianName=smith^anna", ["A"]),
        ("ReferringPhysicianName=smi&fuzzymatching=true", ["C", "A"]),
        ("ReferringPhysicianName=Smith*", ["C", "A"]),
        ("StudyDate=20200101", ["A"]),
        ("StudyDate=20200101-20211231", ["B", "A"]),
        ("StudyDate=20210101-", ["C", "B"]),
        ("StudyDate=-20000101", ["D"]),
        ("PatientBirthDate=19800101", ["A"]),
        ("PatientBirthDate=-19751231", ["B"]),
        ("StudyDescription=chest*", ["C", "A"]),
        ("StudyDescription=Brain+MR", ["B"]),
        ("ModalitiesInStudy=MR", ["B", "A"]),
        ("ModalitiesInStudy=CT\\US", ["D", "C", "A"]),
        ("PatientName=Doe*&StudyDate=20220101-", ["C"]),
        ("PatientID=PID-A&AccessionNumber=ACC-B", []),
    ],
)
async def test_study_search(corpus: Corpus, query: str, expected: list[str]) -> None:
    assert await corpus.found(STUDIES, query.format(**corpus.uids)) == expected


@pytest.mark.parametrize(
    ("resource", "query", "scope", "expected"),
    [
        (SERIES, "", {}, ["D1", "C1", "B1", "A2", "A1"]),
        (SERIES, "Modality=CT", {}, ["C1", "A1"]),
        (SERIES, "Modality=m*", {}, ["B1", "A2"]),
        (SERIES, "ManufacturerModelName=modelx", {}, ["C1", "A1"]),
        (SERIES, "PerformedProcedureStepStartDate=20200102-", {}, ["A2"]),
        (SERIES, "SeriesInstanceUID={B1}\\{A2}", {}, ["B1", "A2"]),
        (SERIES, "PatientID=PID-A", {}, ["A2", "A1"]),
        (SERIES, "PatientID=PID-A&Modality=CT", {}, ["A1"]),
        (SERIES, "StudyInstanceUID={A}&Modality=MR", {}, ["A2"]),
        (SERIES, "ModalitiesInStudy=MR&Modality=CT", {}, ["A1"]),
        (INSTANCES, "", {}, ["D1a", "C1a", "B1a", "A2a", "A1b", "A1a"]),
        (INSTANCES, "SOPInstanceUID={A1b}", {}, ["A1b"]),
        (INSTANCES, "SOPInstanceUID={A1b}&PatientID=PID-B", {}, []),
        (INSTANCES, "Modality=MR", {}, ["B1a", "A2a"]),
        (INSTANCES, "SeriesInstanceUID={A1}", {}, ["A1b", "A1a"]),
        (INSTANCES, "PatientName=doe^jane", {}, ["C1a"]),
        (INSTANCES, "StudyInstanceUID={A}&SOPInstanceUID={A2a}", {}, ["A2a"]),
        (STUDY_SERIES, "", {"study": "A"}, ["A2", "A1"]),
        (STUDY_SERIES, "Modality=ct", {"study": "A"}, ["A1"]),
        (STUDY_SERIES, "SeriesInstanceUID={B1}", {"study": "A"}, []),
        (STUDY_INSTANCES, "", {"study": "A"}, ["A2a", "A1b", "A1a"]),
        (STUDY_INSTANCES, "Modality=CT", {"study": "A"}, ["A1b", "A1a"]),
        (STUDY_INSTANCES, "SOPInstanceUID={A1a}", {"study": "A"}, ["A1a"]),
        (SERIES_INSTANCES, "", {"study": "A", "series": "A1"}, ["A1b", "A1a"]),
        (SERIES_INSTANCES, "SOPInstanceUID={A1a}", {"study": "A", "series": "A1"}, ["A1a"]),
        (SERIES_INSTANCES, "", {"study": "B", "series": "A1"}, []),
    ],
)
async def test_series_and_instance_search(
    corpus: Corpus, resource: QidoResource, query: str, scope: dict[str, str], expected: list[str]
) -> None:
    assert await corpus.found(resource, query.format(**corpus.uids), **scope) == expected


@pytest.mark.parametrize(("offset", "expected"), [(0, ["D", "C"]), (2, ["B", "A"]), (3, ["A"]), (4, [])])
async def test_pages_are_cut_from_the_newest(corpus: Corpus, offset: int, expected: list[str]) -> None:
    assert await corpus.found(STUDIES, f"limit=2&offset={offset}") == expected


async def test_past_the_end_is_204(corpus: Corpus) -> None:
    assert (await search(corpus.storage, SearchRequest(STUDIES, 2, "offset=100"))).status == 204


async def test_unknown_study_scope_is_empty(corpus: Corpus) -> None:
    response = await search(corpus.storage, SearchRequest(STUDY_SERIES, 2, "", study_uid="1.2.3.4"))
    assert (response.status, response.body) == (204, None)


async def test_study_results_carry_exact_counts_and_modalities(corpus: Corpus) -> None:
    [dataset] = (await corpus.search(STUDIES, "PatientID=PID-A")).datasets
    assert dataset["00080061"] == {"vr": "CS", "Value": ["CT", "MR"]}
    assert (dataset["00201206"]["Value"], dataset["00201208"]["Value"]) == ([2], [3])


async def test_series_results_carry_their_instance_count(corpus: Corpus) -> None:
    datasets = (await corpus.search(STUDY_SERIES, study="A")).datasets
    assert [d["00201209"]["Value"] for d in datasets] == [[1], [2]]


async def test_v2_study_defaults(corpus: Corpus) -> None:
    """PS3.18 §10.6.3 Table 10.6.3-3: the required study attributes (where stored, or computed), and Azure's v2 set."""
    [dataset] = (await corpus.search(STUDIES, "PatientID=PID-A")).datasets
    assert set(dataset) == {"0020000D", "00080020", "00081030", "00080050", "00080090", "00100010", "00100020",
                            "00100030", "00080061", "00201206", "00201208", "00080005", "00080030", "00100040",
                            "00080056", "00081190"}
    assert dataset["00081190"]["Value"] == [f"/v2/studies/{corpus.uids['A']}"]  # no base URL in this test


async def test_v1_study_defaults(corpus: Corpus) -> None:
    [dataset] = (await corpus.search(STUDIES, "PatientID=PID-A", api_version=1)).datasets
    assert {"00080005", "00080020", "00080050", "00100010", "00100020", "00100040", "0020000D"} <= set(dataset)
    assert "00081030" not in dataset  # StudyDescription is v2's default and v1's `all`


async def test_v2_series_defaults_add_the_study_defaults(corpus: Corpus) -> None:
    dataset = (await corpus.search(SERIES, f"SeriesInstanceUID={corpus.uids['A1']}")).datasets[0]
    assert {"0020000E", "00080060", "00081090", "0020000D", "00100020", "00201209"} <= set(dataset)


async def test_v2_instance_defaults_in_a_series_are_the_required_attributes(corpus: Corpus) -> None:
    """PS3.18 §10.6.3 Table 10.6.3-5 (NumberOfFrames and TimezoneOffsetFromUTC are not stored here)."""
    datasets = (await corpus.search(SERIES_INSTANCES, study="A", series="A1")).datasets
    assert [set(d) for d in datasets] == [{STUDY_UID, SERIES_UID, SOP_UID, "00080005", "00080016", "00080056",
                                           "00081190", "00280010", "00280011", "00280100"}] * 2


async def test_includefield_all_returns_the_all_set(corpus: Corpus) -> None:
    [dataset] = (await corpus.search(STUDIES, "PatientID=PID-A&includefield=all")).datasets
    assert {"00081030", "00080030", "00100040", "00101010", "00080005"} <= set(dataset)


async def test_includefield_outside_the_rows_comes_from_the_latest_instance_metadata(corpus: Corpus) -> None:
    response = await corpus.search(STUDIES, "PatientID=PID-A&includefield=00280004,SamplesPerPixel")
    [dataset] = response.datasets
    assert (dataset["00280004"]["Value"], dataset["00280002"]["Value"], response.blobs_read) == (
        ["MONOCHROME2"], [1], 1)


async def test_includefield_of_a_lower_level_attribute_is_left_out_at_study_level(corpus: Corpus) -> None:
    response = await corpus.search(STUDIES, "PatientID=PID-A&includefield=Modality")
    assert ("00080060" in response.datasets[0], response.blobs_read) == (False, 0)


async def test_filtered_attributes_are_returned(corpus: Corpus) -> None:
    [dataset] = (await corpus.search(STUDIES, "PatientID=PID-A&StudyDescription=chest*")).datasets
    assert dataset["00081030"]["Value"] == ["Chest CT"]


async def test_accept_without_dicom_json_is_406(corpus: Corpus) -> None:
    with pytest.raises(NotAcceptableError):
        await search(corpus.storage, SearchRequest(STUDIES, 2, "", accept="application/dicom"))


@pytest.mark.parametrize("value", ["x' or PartitionKey ne 'y", "a/b#c?d|e%f", "' or 1 eq 1 or ''eq'"])
async def test_values_with_quotes_and_operators_match_only_themselves(
    corpus: Corpus, stow_parts, value: str
) -> None:
    ds = make_dataset(PatientID=value)
    assert (await stow_parts(corpus.storage, [to_bytes(ds)])).status == 200
    response = await corpus.search(STUDIES, "PatientID=" + value.replace("%", "%25").replace("#", "%23")
                                   .replace("&", "%26").replace("?", "%3F").replace("\\", "%5C"))
    assert [d[STUDY_UID]["Value"][0] for d in response.datasets] == [ds.StudyInstanceUID]


async def test_series_uid_serves_before_a_study_attribute(corpus: Corpus) -> None:
    response = await corpus.search(SERIES, f"PatientID=PID-A&SeriesInstanceUID={corpus.uids['A1']}")
    assert (response.source, [d[SERIES_UID]["Value"][0] for d in response.datasets]) == ("se.at", [corpus.uids["A1"]])
