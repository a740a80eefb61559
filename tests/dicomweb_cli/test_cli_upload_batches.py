"""Grouping files into STOW requests."""

from __future__ import annotations

from pathlib import Path

from dicomweb_cli.dicom_files import LocalInstance
from dicomweb_cli.upload import plan_batches


def instance(name: str, size: int) -> LocalInstance:
    return LocalInstance(Path(name), size, "1.2", "1.2.3", f"1.2.3.{len(name)}")


def names(batches: list[list[LocalInstance]]) -> list[list[str]]:
    return [[str(i.path) for i in batch] for batch in batches]


def test_batches_hold_at_most_the_given_number_of_files() -> None:
    files = [instance(f"f{n}", 10) for n in range(5)]
    assert names(plan_batches(files, max_files=2, max_bytes=1000)) == [["f0", "f1"], ["f2", "f3"], ["f4"]]


def test_batches_hold_at_most_the_given_bytes() -> None:
    files = [instance("a", 60), instance("b", 30), instance("c", 20)]
    assert names(plan_batches(files, max_files=10, max_bytes=100)) == [["a", "b"], ["c"]]


def test_a_file_larger_than_a_batch_goes_alone() -> None:
    files = [instance("small", 10), instance("huge", 500), instance("tiny", 1)]
    assert names(plan_batches(files, max_files=10, max_bytes=100)) == [["small"], ["huge"], ["tiny"]]


def test_no_files_make_no_batches() -> None:
    assert plan_batches([], max_files=10, max_bytes=100) == []
