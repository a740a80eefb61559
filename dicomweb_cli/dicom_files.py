"""Finding DICOM Part-10 files in folders and reading the three UIDs that identify each instance."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom

from dicom_core.model.uids import normalize_uid

_PREAMBLE_LENGTH = 128
_MAGIC = b"DICM"
# Group 0002 (File Meta Information) as the very first bytes: a Part-10 file written without preamble, which
# pydicom writes and the server accepts.
_FILE_META_START = b"\x02\x00"
_IDENTIFYING_KEYWORDS = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]


@dataclass(frozen=True)
class LocalInstance:
    """A DICOM file on disk and the instance it holds."""

    path: Path
    size: int
    study: str
    series: str
    instance: str


@dataclass
class FolderScan:
    """What a walk over the given paths found: instances, and files that are not DICOM instances."""

    instances: list[LocalInstance]
    skipped: list[Path]


def scan(paths: Iterable[Path]) -> FolderScan:
    """Walk files and folders (recursively, in name order); keep DICOM instances, note everything else."""
    result = FolderScan([], [])
    for path in _walk(paths):
        instance = read_local_instance(path)
        if instance is None:
            result.skipped.append(path)
        else:
            result.instances.append(instance)
    return result


def looks_like_part10(head: bytes) -> bool:
    """Tell from a file's first 132 bytes whether it is a Part-10 file (with or without preamble)."""
    return head[_PREAMBLE_LENGTH:_PREAMBLE_LENGTH + len(_MAGIC)] == _MAGIC or head.startswith(_FILE_META_START)


def read_local_instance(path: Path) -> LocalInstance | None:
    """Return the file's instance, or None if it is not a readable DICOM file with all three UIDs."""
    try:
        with path.open("rb") as file:
            head = file.read(_PREAMBLE_LENGTH + len(_MAGIC))
            if not looks_like_part10(head):
                return None
            file.seek(0)
            dataset = pydicom.dcmread(file, stop_before_pixels=True, specific_tags=_IDENTIFYING_KEYWORDS,
                                      force=not head[_PREAMBLE_LENGTH:].startswith(_MAGIC))
        uids = [normalize_uid(str(dataset.get(keyword, "") or "")) for keyword in _IDENTIFYING_KEYWORDS]
        size = path.stat().st_size
    except Exception:  # pydicom raises many types for malformed files
        return None
    if not all(uids):
        return None  # e.g. a DICOMDIR: Part-10, but not an instance
    study, series, instance = uids
    return LocalInstance(path=path, size=size, study=study, series=series, instance=instance)


def _walk(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            for folder, folders, files in os.walk(path):
                folders.sort()
                for name in sorted(files):
                    yield Path(folder) / name
        elif path.is_file():
            yield path
