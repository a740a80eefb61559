"""Folders of generated DICOM files with junk beside them, and running `python -m dicomweb_cli` on them."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import generate_uid

from tests.factories import make_instance

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI_TIMEOUT_SECONDS = 300
PREAMBLE = b"\x00" * 128 + b"DICM"


@dataclass(frozen=True)
class DicomFolder:
    """A folder tree of DICOM files (by SOP Instance UID) and the junk files mixed in."""

    root: Path
    study: str
    series: tuple[str, str]
    other_study: str
    files: dict[str, Path]
    locations: dict[str, tuple[str, str]]  # SOP Instance UID -> (study, series)
    junk: tuple[Path, ...]

    def bytes_of(self, sop: str) -> bytes:
        return self.files[sop].read_bytes()


def write_dicom_folder(root: Path) -> DicomFolder:
    """root/a/{one,two}.dcm and root/a/b/c/four (no preamble) in series 1, root/a/b/three.dcm in series 2 of one
    study; root/other/five.dcm in another study; plus a text file, an empty .dcm and random bytes named .dcm."""
    study, other_study = generate_uid(), generate_uid()
    series = (generate_uid(), generate_uid())
    layout = {
        "a/one.dcm": (study, series[0], True),
        "a/two.dcm": (study, series[0], True),
        "a/b/three.dcm": (study, series[1], True),
        "a/b/c/four": (study, series[0], False),
        "other/five.dcm": (other_study, generate_uid(), True),
    }
    files: dict[str, Path] = {}
    locations: dict[str, tuple[str, str]] = {}
    for name, (study_uid, series_uid, preamble) in layout.items():
        sop = generate_uid()
        data = make_instance(study=study_uid, series=series_uid, sop=sop, rows=16, columns=16)
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        # Without preamble: the File Meta Information group is the very first bytes (pydicom writes these).
        path.write_bytes(data if preamble else data[132:])
        files[sop] = path
        locations[sop] = (study_uid, series_uid)
    junk = (root / "a" / "notes.txt", root / "a" / "b" / "empty.dcm", root / "other" / "random.dcm")
    junk[0].write_text("not DICOM\n")
    junk[1].write_bytes(b"")
    junk[2].write_bytes(os.urandom(4096))
    return DicomFolder(root, study, series, other_study, files, locations, junk)


def run_cli(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m dicomweb_cli` and return its exit code and output."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("DICOMWEB_")}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "dicomweb_cli", *arguments], cwd=REPO_ROOT, env=environment,
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_SECONDS, check=False)


def as_stored(data: bytes) -> bytes:
    """The bytes the server keeps for a Part-10 file: one that came without preamble gets one."""
    return data if data[128:132] == b"DICM" else PREAMBLE + data
