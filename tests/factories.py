"""Synthetic DICOM instances built with pydicom for tests (no patient data)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def make_dataset(
    *, study: str | None = None, series: str | None = None, sop: str | None = None, rows: int = 8, columns: int = 8,
    frames: int = 1, transfer_syntax: UID = ExplicitVRLittleEndian, **attributes: Any,
) -> Dataset:
    """Return a small 16-bit monochrome Secondary Capture dataset with the given UIDs and attributes."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop or generate_uid()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.PatientName = "Test^Patient"
    ds.PatientID = "TEST-1"
    ds.StudyDate = "20240101"
    ds.Modality = "OT"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    pixels = np.arange(rows * columns * frames, dtype=np.uint16).reshape(frames, rows, columns)
    ds.PixelData = pixels.tobytes()
    for keyword, value in attributes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def to_bytes(ds: Dataset) -> bytes:
    """Encode a dataset as a Part-10 file."""
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian, little_endian=True,
               enforce_file_format=True)
    return buffer.getvalue()


def make_instance(**kwargs: Any) -> bytes:
    """Return the Part-10 bytes of :func:`make_dataset`."""
    return to_bytes(make_dataset(**kwargs))


def multipart_body(
    parts: list[bytes], boundary: str = "test-boundary", content_type: str | None = "application/dicom",
) -> bytes:
    """Build a multipart/related body from raw part bodies."""
    out = bytearray()
    for part in parts:
        out += f"--{boundary}\r\n".encode()
        if content_type:
            out += f"Content-Type: {content_type}\r\n".encode()
        out += b"\r\n" + part + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def make_binary_dataset(**kwargs: Any) -> Dataset:
    """Return :func:`make_dataset` (32x32 pixels) with an overlay, a waveform in a sequence, a PDF and an ICC
    profile."""
    ds = make_dataset(rows=kwargs.pop("rows", 32), columns=kwargs.pop("columns", 32), **kwargs)
    ds.add_new(0x60000010, "US", 128)  # OverlayRows
    ds.add_new(0x60000011, "US", 128)  # OverlayColumns
    ds.add_new(0x60003000, "OW", bytes(range(256)) * 8)  # OverlayData, 128x128 bits
    waveform = Dataset()
    waveform.NumberOfWaveformChannels = 1
    waveform.NumberOfWaveformSamples = 1500
    waveform.WaveformBitsAllocated = 16
    waveform.WaveformData = np.arange(1500, dtype=np.int16).tobytes()
    ds.WaveformSequence = [waveform]
    ds.EncapsulatedDocument = b"%PDF-1.4\n" + b"x" * 3000 + b"\n%%EOF\n"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.ICCProfile = b"\x01\x02" * 50  # small: inline
    return ds


def h264_stream(frames: int = 6, width: int = 64, height: int = 48, codec: str = "h264") -> bytes:
    """An H.264 elementary stream (Annex B, as PS3.5 §8.2.8 encapsulates it) of a bar moving on a ramp, by PyAV.

    ``codec="mpeg2video"`` makes an MPEG-2 video elementary stream of the same pictures instead.
    """
    import av  # noqa: PLC0415 - only video tests need FFmpeg's libraries

    output = io.BytesIO()
    with av.open(output, mode="w", format=codec) as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for number in range(frames):
            pixels = np.zeros((height, width, 3), dtype=np.uint8)
            pixels[..., 1] = (np.arange(width) * 255 // width)[None, :]  # a green ramp behind the bar
            pixels[:, (number * 8) % width: (number * 8) % width + 8] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode(None))
    return output.getvalue()


def make_video_dataset(
    frames: int = 6, width: int = 64, height: int = 48, codec: str = "h264", **attributes: Any
) -> Dataset:
    """A Video Endoscopic instance stored as MPEG-4 AVC/H.264 High Profile 4.1 (or MPEG-2 Main Profile / Main Level
    for ``codec="mpeg2video"``) holding :func:`h264_stream`."""
    from pydicom.encaps import encapsulate  # noqa: PLC0415
    from pydicom.uid import MPEG2MPML, MPEG4HP41, VideoEndoscopicImageStorage  # noqa: PLC0415

    syntax = MPEG2MPML if codec == "mpeg2video" else MPEG4HP41
    ds = make_dataset(rows=height, columns=width, frames=frames, transfer_syntax=syntax, **attributes)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = VideoEndoscopicImageStorage
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_PARTIAL_420", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.FrameTime = 100
    ds.PixelData = encapsulate([h264_stream(frames, width, height, codec)], has_bot=True)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds
