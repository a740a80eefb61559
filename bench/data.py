"""Generated DICOM data for the benchmarks (pydicom; no patient data)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

from tests.factories import make_dataset, to_bytes

BOUNDARY = "bench-boundary"
CT_SIDE = 512


@dataclass(frozen=True)
class Instance:
    """A generated Part-10 file and its UIDs."""

    study: str
    series: str
    sop: str
    data: bytes


def ct_pixels(side: int = CT_SIDE, frames: int = 1, seed: int = 0) -> bytes:
    """CT-like 12-bit pixels: a disc of tissue values with noise on an air background (compresses like CT)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:side, :side]
    body = ((x - side / 2) ** 2 + (y - side / 2) ** 2) < (side * 0.42) ** 2
    out = np.empty((frames, side, side), dtype=np.uint16)
    for frame in range(frames):
        noise = rng.normal(0, 20, (side, side))
        out[frame] = np.where(body, 1040 + 60 * np.sin(x / 17 + frame / 9) + noise, 24 + noise / 4).clip(0, 4095)
    return out.tobytes()


def ct_dataset(study: str, series: str, number: int, pixels: bytes, side: int = CT_SIDE, frames: int = 1) -> Dataset:
    """A CT Image Storage dataset of ``side``² 16-bit pixels (12 stored) with the given pixel data."""
    ds = make_dataset(study=study, series=series, rows=side, columns=side, frames=1,
                      PatientName="Bench^CT", PatientID="BENCH-CT", Modality="CT", InstanceNumber=number,
                      StudyID="1", StudyTime="093000", SeriesNumber="2")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.BitsStored, ds.HighBit = 12, 11
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.WindowCenter, ds.WindowWidth = 40, 400
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = pixels
    return ds


def ct_series(count: int, *, study: str | None = None, side: int = CT_SIDE) -> list[Instance]:
    """``count`` CT-like instances (about 0.5 MB each at 512²) in one series of one study."""
    study, series = study or generate_uid(), generate_uid()
    pixels = ct_pixels(side)
    instances = []
    for number in range(count):
        ds = ct_dataset(study, series, number + 1, pixels, side)
        instances.append(Instance(study, series, str(ds.SOPInstanceUID), to_bytes(ds)))
    return instances


def multiframe(frames: int, side: int, transfer_syntax: UID = ExplicitVRLittleEndian, *,
               encoding_plugin: str | None = None) -> Instance:
    """One multi-frame CT-like instance, native or compressed to ``transfer_syntax``."""
    study, series = generate_uid(), generate_uid()
    ds = ct_dataset(study, series, 1, ct_pixels(side, frames), side, frames)
    if transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(transfer_syntax, **({"encoding_plugin": encoding_plugin} if encoding_plugin else {}))
    return Instance(study, series, str(ds.SOPInstanceUID), to_bytes(ds))


def multipart(parts: list[bytes], boundary: str = BOUNDARY) -> bytes:
    """A multipart/related body of application/dicom parts."""
    out = io.BytesIO()
    for part in parts:
        out.write(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        out.write(part)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue()


def multipart_content_type(boundary: str = BOUNDARY) -> str:
    """The Content-Type of :func:`multipart`'s bodies."""
    return f'multipart/related; type="application/dicom"; boundary={boundary}'


def _large_header(study: str, series: str, pixels_bytes: int, side: int) -> bytes:
    """Part-10 bytes of a dataset up to and including the header of a PixelData of ``pixels_bytes``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientID, ds.PatientName, ds.Modality = "BENCH-MEM", "Bench^Memory", "CT"
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.NumberOfFrames = pixels_bytes // (side * side * 2)
    ds.PixelData = b""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    return data[:-4] + pixels_bytes.to_bytes(4, "little")  # the empty PixelData's length, made real


def large_study_body(study: str, total_mb: int, part_mb: int, chunk: int = 1024 * 1024) -> Iterator[bytes]:
    """A multipart body of about ``total_mb`` MB of ``part_mb`` MB instances, generated as it is sent."""
    side = 512
    frame = side * side * 2
    pixels_bytes = max(1, part_mb * 1024 * 1024 // frame) * frame
    block = np.random.default_rng(0).integers(0, 4096, chunk // 2, dtype=np.uint16).tobytes()
    series = generate_uid()
    for _ in range(max(1, total_mb // part_mb)):
        yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + \
            _large_header(study, series, pixels_bytes, side)
        remaining = pixels_bytes
        while remaining:
            piece = block[: min(chunk, remaining)]
            remaining -= len(piece)
            yield piece
        yield b"\r\n"
    yield f"--{BOUNDARY}--\r\n".encode()
