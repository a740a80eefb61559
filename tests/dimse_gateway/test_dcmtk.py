"""A study of 50 instances sent by DCMTK's storescu: found by QIDO and findscu, moved to storescp, fetched by getscu."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, generate_uid

from tests.conftest import REPO_ROOT
from tests.dimse_gateway.conftest import ARCHIVE_AE, GATEWAY_AE, MODALITY_AE, Gateway
from tests.dimse_gateway.scu import dataset_bytes, qido, study_counts
from tests.factories import make_dataset
from tests.processes import accepts_connections, stop_process, wait_until

SERIES = 2
PER_SERIES = 25
TOOL_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class SentStudy:
    """The study storescu sent: its UIDs and the files, by SOP Instance UID."""

    study: str
    series: tuple[str, ...]
    patient_id: str
    files: dict[str, Path]


def run_tool(*arguments: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool; fail with its output unless it exits 0."""
    result = subprocess.run(arguments, cwd=cwd or REPO_ROOT, capture_output=True, text=True,
                            timeout=TOOL_TIMEOUT_SECONDS, check=False)
    assert result.returncode == 0, f"{' '.join(arguments)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
    return result


def scu(tool: str, gateway: Gateway, *arguments: str, files: tuple[str, ...] = ()) -> list[str]:
    """A DCMTK SCU command line calling the gateway as the modality."""
    return [tool, "-aet", MODALITY_AE, "-aec", GATEWAY_AE, *arguments, gateway.host, str(gateway.port), *files]


@pytest.fixture(scope="module")
def sent(gateway: Gateway, dcmtk: None, tmp_path_factory: pytest.TempPathFactory) -> SentStudy:
    """50 instances in 2 series (one explicit, one implicit VR little endian) sent in one storescu run."""
    folder = tmp_path_factory.mktemp("sent")
    study, patient_id = generate_uid(), f"DIMSE-{generate_uid()[-8:]}"
    series = tuple(generate_uid() for _ in range(SERIES))
    files: dict[str, Path] = {}
    for index, series_uid in enumerate(series):
        syntax = ExplicitVRLittleEndian if index == 0 else ImplicitVRLittleEndian
        for number in range(PER_SERIES):
            ds = make_dataset(study=study, series=series_uid, transfer_syntax=syntax, PatientID=patient_id,
                              PatientName="Dimse^Fifty", SeriesNumber=index + 1, InstanceNumber=number + 1,
                              StudyTime="101500")
            path = folder / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(path, implicit_vr=syntax == ImplicitVRLittleEndian, little_endian=True,
                       enforce_file_format=True)
            files[ds.SOPInstanceUID] = path
    run_tool(*scu("storescu", gateway, "--scan-directories", files=(str(folder),)))
    return SentStudy(study, series, patient_id, files)


def test_storescu_study_is_found_by_qido(sent: SentStudy, server: str) -> None:
    assert study_counts(server, sent.study) == (SERIES, SERIES * PER_SERIES)
    instances = qido(server, f"studies/{sent.study}/instances?limit=200")
    assert {result["00080018"]["Value"][0] for result in instances} == set(sent.files)


def findscu(gateway: Gateway, folder: Path, model: str, *keys: str) -> list:
    """The responses of one findscu run (extracted to files)."""
    arguments = [argument for key in keys for argument in ("-k", key)]
    run_tool(*scu("findscu", gateway, model, "-X", "-od", str(folder), *arguments))
    return [dcmread(path) for path in sorted(folder.glob("rsp*.dcm"))]


def test_findscu_finds_the_patient(sent: SentStudy, gateway: Gateway, tmp_path: Path) -> None:
    responses = findscu(gateway, tmp_path, "-P", "QueryRetrieveLevel=PATIENT", f"PatientID={sent.patient_id}",
                        "PatientName", "NumberOfPatientRelatedInstances")
    assert [(str(r.PatientName), int(r.NumberOfPatientRelatedInstances)) for r in responses] == [
        ("Dimse^Fifty", SERIES * PER_SERIES)]


def test_findscu_finds_the_study(sent: SentStudy, gateway: Gateway, tmp_path: Path) -> None:
    responses = findscu(gateway, tmp_path, "-S", "QueryRetrieveLevel=STUDY", f"PatientID={sent.patient_id}",
                        "StudyInstanceUID", "NumberOfStudyRelatedInstances", "StudyTime")
    assert [(r.StudyInstanceUID, int(r.NumberOfStudyRelatedInstances), r.StudyTime) for r in responses] == [
        (sent.study, SERIES * PER_SERIES, "101500")]


def test_findscu_finds_the_series(sent: SentStudy, gateway: Gateway, tmp_path: Path) -> None:
    responses = findscu(gateway, tmp_path, "-S", "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={sent.study}",
                        "SeriesInstanceUID", "SeriesNumber", "NumberOfSeriesRelatedInstances")
    found = sorted((int(r.SeriesNumber), r.SeriesInstanceUID, int(r.NumberOfSeriesRelatedInstances))
                   for r in responses)
    assert found == [(1, sent.series[0], PER_SERIES), (2, sent.series[1], PER_SERIES)]


def test_findscu_finds_the_images_of_a_series(sent: SentStudy, gateway: Gateway, tmp_path: Path) -> None:
    responses = findscu(gateway, tmp_path, "-S", "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={sent.study}",
                        f"SeriesInstanceUID={sent.series[1]}", "SOPInstanceUID", "InstanceNumber")
    assert sorted(int(r.InstanceNumber) for r in responses) == list(range(1, PER_SERIES + 1))
    assert {r.SOPInstanceUID for r in responses} == {
        uid for uid, path in sent.files.items() if dcmread(path).SeriesInstanceUID == sent.series[1]}


@pytest.fixture
def storescp(gateway: Gateway, tmp_path: Path) -> Iterator[Path]:
    """DCMTK's storescp listening as the gateway's C-MOVE destination; yields the folder it writes to."""
    folder = tmp_path / "received"
    folder.mkdir()
    log = tmp_path / "storescp.log"
    with log.open("wb") as output:
        process = subprocess.Popen(["storescp", "-aet", ARCHIVE_AE, "-od", str(folder), str(gateway.destination_port)],
                                   stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: accepts_connections(gateway.destination_port), process, "storescp", log)
        yield folder
    finally:
        stop_process(process)


def assert_received_as_sent(folder: Path, sent: SentStudy, expected: set[str]) -> None:
    """Every expected instance arrived once, its dataset byte-equal to the file sent."""
    received = {dcmread(path, stop_before_pixels=True).SOPInstanceUID: path for path in folder.iterdir()}
    assert set(received) == expected
    for uid in expected:
        assert dataset_bytes(received[uid]) == dataset_bytes(sent.files[uid]), uid


def test_movescu_moves_the_study_to_storescp_as_sent(sent: SentStudy, gateway: Gateway, storescp: Path) -> None:
    run_tool(*scu("movescu", gateway, "-S", "-aem", ARCHIVE_AE, "-k", "QueryRetrieveLevel=STUDY",
                  "-k", f"StudyInstanceUID={sent.study}"))
    assert_received_as_sent(storescp, sent, set(sent.files))


def test_getscu_fetches_a_series_as_sent(sent: SentStudy, gateway: Gateway, tmp_path: Path) -> None:
    run_tool(*scu("getscu", gateway, "-S", "-od", str(tmp_path), "-k", "QueryRetrieveLevel=SERIES",
                  "-k", f"StudyInstanceUID={sent.study}", "-k", f"SeriesInstanceUID={sent.series[0]}"))
    expected = {uid for uid, path in sent.files.items() if dcmread(path).SeriesInstanceUID == sent.series[0]}
    assert_received_as_sent(tmp_path, sent, expected)


def test_a_compressed_instance_is_stored_and_moved_as_received(gateway: Gateway, dcmtk: None, tmp_path: Path) -> None:
    dataset = make_dataset(rows=32, columns=32)
    dataset.compress(RLELossless)
    sent_path = tmp_path / "rle.dcm"
    dataset.save_as(sent_path, enforce_file_format=True)
    # One context offering RLE and the uncompressed syntaxes: the gateway takes RLE, as the file is.
    run_tool(*scu("storescu", gateway, "-xr", files=(str(sent_path),)))
    received = tmp_path / "received"
    received.mkdir()
    log = tmp_path / "storescp.log"
    with log.open("wb") as output:  # +xa: accept every transfer syntax DCMTK knows
        process = subprocess.Popen(["storescp", "+xa", "-aet", ARCHIVE_AE, "-od", str(received),
                                    str(gateway.destination_port)], stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: accepts_connections(gateway.destination_port), process, "storescp", log)
        run_tool(*scu("movescu", gateway, "-S", "-aem", ARCHIVE_AE, "-k", "QueryRetrieveLevel=IMAGE",
                      "-k", f"StudyInstanceUID={dataset.StudyInstanceUID}",
                      "-k", f"SeriesInstanceUID={dataset.SeriesInstanceUID}",
                      "-k", f"SOPInstanceUID={dataset.SOPInstanceUID}"))
    finally:
        stop_process(process)
    (moved,) = received.iterdir()
    assert dcmread(moved).file_meta.TransferSyntaxUID == RLELossless
    assert dataset_bytes(moved) == dataset_bytes(sent_path)


def test_getscu_fetches_a_patient_in_patient_root(sent: SentStudy, gateway: Gateway, tmp_path: Path) -> None:
    run_tool(*scu("getscu", gateway, "-P", "-od", str(tmp_path), "-k", "QueryRetrieveLevel=PATIENT",
                  "-k", f"PatientID={sent.patient_id}"))
    received = {dcmread(path, stop_before_pixels=True).SOPInstanceUID for path in tmp_path.iterdir()}
    assert received == set(sent.files)


def test_findscu_matches_a_sequence_key_on_its_items(gateway: Gateway, dcmtk: None, tmp_path: Path) -> None:
    study, patient_id = generate_uid(), f"SEQ-{generate_uid()[-8:]}"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "24627-2", "LN", "CT Chest"
    path = tmp_path / "coded.dcm"
    make_dataset(study=study, PatientID=patient_id, ProcedureCodeSequence=[code]).save_as(
        path, enforce_file_format=True)
    run_tool(*scu("storescu", gateway, files=(str(path),)))
    keys = ("QueryRetrieveLevel=STUDY", f"PatientID={patient_id}", "StudyInstanceUID")
    (tmp_path / "found").mkdir()
    (tmp_path / "missed").mkdir()
    found = findscu(gateway, tmp_path / "found", "-S", *keys, "ProcedureCodeSequence[0].CodeValue=24627-2",
                    "ProcedureCodeSequence[0].CodingSchemeDesignator=LN")
    missed = findscu(gateway, tmp_path / "missed", "-S", *keys, "ProcedureCodeSequence[0].CodeValue=24627-2",
                     "ProcedureCodeSequence[0].CodingSchemeDesignator=DCM")
    assert ([r.StudyInstanceUID for r in found], missed) == ([study], [])
    assert found[0].ProcedureCodeSequence[0].CodeMeaning == "CT Chest"
