"""Peak server memory during one large multipart STOW: `python bench/stow_memory.py URL PID [--total-mb N] [--part-mb M]`.

Streams a generated multipart/related body of about N MB (instances of about M MB each, fresh UIDs) to a
running server and prints the server process's peak RSS (VmHWM) before and after, and the throughput.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

BOUNDARY = "bench-boundary"
CHUNK = 1024 * 1024


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def _header(study: str, pixels_bytes: int, side: int) -> bytes:
    """Part-10 bytes of a dataset up to and including the PixelData element header."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "BENCH", "Bench^Memory", "OT"
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.NumberOfFrames = pixels_bytes // (side * side * 2)
    ds.PixelData = b""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    # Patch the empty PixelData length (last 4 bytes of the file) to the real length.
    return data[:-4] + pixels_bytes.to_bytes(4, "little")


def body(total_mb: int, part_mb: int) -> Iterator[bytes]:
    """Yield a multipart body of about total_mb MB made of part_mb MB instances, never holding it whole."""
    side = 512
    frame = side * side * 2
    pixels_bytes = max(1, part_mb * 1024 * 1024 // frame) * frame
    block = np.random.default_rng(0).integers(0, 4096, CHUNK // 2, dtype=np.uint16).tobytes()
    study = generate_uid()
    for _ in range(max(1, total_mb // part_mb)):
        yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + _header(study, pixels_bytes, side)
        remaining = pixels_bytes
        while remaining:
            piece = block[: min(CHUNK, remaining)]
            remaining -= len(piece)
            yield piece
        yield b"\r\n"
    yield f"--{BOUNDARY}--\r\n".encode()


def main() -> None:
    """Run one STOW and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url", help="service root, e.g. http://127.0.0.1:7071/v2")
    parser.add_argument("pid", type=int, help="server process id (its /proc status is read)")
    parser.add_argument("--total-mb", type=int, default=1024)
    parser.add_argument("--part-mb", type=int, default=10)
    args = parser.parse_args()
    before = _peak_rss_mb(args.pid)
    start = time.perf_counter()
    response = httpx.post(
        f"{args.url}/studies", content=body(args.total_mb, args.part_mb), timeout=3600,
        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
                 "Accept": "application/dicom+json"},
    )
    seconds = time.perf_counter() - start
    stored = len(response.json().get("00081199", {}).get("Value", [])) if response.content else 0
    print(f"status {response.status_code}, {stored} instances stored, {args.total_mb} MB in {seconds:.1f} s "
          f"({args.total_mb / seconds:.0f} MB/s); server peak RSS before {before:.0f} MB, after {_peak_rss_mb(args.pid):.0f} MB")


if __name__ == "__main__":
    main()
