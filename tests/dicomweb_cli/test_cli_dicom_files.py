"""Finding DICOM instances in folder trees."""

from __future__ import annotations

from pathlib import Path

from pydicom.uid import generate_uid

from dicomweb_cli.dicom_files import read_local_instance, scan
from tests.dicomweb_cli.dicom_folders import DicomFolder
from tests.factories import make_dataset, to_bytes


def test_scan_finds_every_instance_in_nested_folders_in_walk_order(dicom_folder: DicomFolder) -> None:
    found = scan([dicom_folder.root])
    assert [i.path.relative_to(dicom_folder.root).as_posix() for i in found.instances] == [
        "a/one.dcm", "a/two.dcm", "a/b/three.dcm", "a/b/c/four", "other/five.dcm"]
    assert {i.instance: i.path for i in found.instances} == dicom_folder.files


def test_scan_skips_files_that_are_not_dicom(dicom_folder: DicomFolder) -> None:
    assert sorted(scan([dicom_folder.root]).skipped) == sorted(dicom_folder.junk)


def test_a_file_without_preamble_is_read_with_its_uids(dicom_folder: DicomFolder) -> None:
    path = dicom_folder.root / "a" / "b" / "c" / "four"
    instance = read_local_instance(path)
    assert instance is not None
    assert (instance.study, instance.series) == (dicom_folder.study, dicom_folder.series[0])
    assert instance.size == path.stat().st_size


def test_a_part10_file_without_sop_instance_uid_is_not_an_instance(tmp_path: Path) -> None:
    ds = make_dataset(study=generate_uid())
    del ds.SOPInstanceUID
    path = tmp_path / "no-sop.dcm"
    path.write_bytes(to_bytes(ds))
    assert read_local_instance(path) is None


def test_scan_takes_single_files_as_well_as_folders(dicom_folder: DicomFolder) -> None:
    one = next(iter(dicom_folder.files.values()))
    assert [i.path for i in scan([one]).instances] == [one]
