"""A synthetic study for the viewer test: CT slices, a multi-frame and a JPEG 2000 instance, with shapes to see."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID, CTImageStorage, ExplicitVRLittleEndian, JPEG2000Lossless, MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage, generate_uid,
)

CT_SLICES = 8
CT_SIDE = 128
CT_SLICE_MM = 2.5
CT_INTERCEPT = -1024
MULTIFRAME_FRAMES = 6
MULTIFRAME_SIDE = 96
JPEG2000_SIDE = 128
AIR_HU, TISSUE_HU, BONE_HU = -1000, 40, 900


@dataclass(frozen=True)
class SyntheticSeries:
    """One series of the study: its UID, what it shows, and its Part-10 files."""

    series_uid: str
    description: str
    files: tuple[bytes, ...]


@dataclass(frozen=True)
class SyntheticStudy:
    """The study the viewer test stores and opens."""

    study_uid: str
    patient_name: str
    patient_id: str
    series: tuple[SyntheticSeries, ...]

    @property
    def files(self) -> list[bytes]:
        """Every instance's Part-10 bytes, series after series."""
        return [file for series in self.series for file in series.files]


def build_study(patient_name: str, patient_id: str) -> SyntheticStudy:
    """Return a study of three series: 8 CT slices, a 6-frame secondary capture, and a JPEG 2000 Lossless image."""
    study_uid = generate_uid()
    common = {"StudyInstanceUID": study_uid, "PatientName": patient_name, "PatientID": patient_id,
              "StudyDate": "20240301", "StudyTime": "101500", "AccessionNumber": "VIEW-1",
              "StudyDescription": "Viewer test", "PatientBirthDate": "19700101", "PatientSex": "O"}
    return SyntheticStudy(study_uid, patient_name, patient_id,
                          (_ct_series(common), _multiframe_series(common), _jpeg2000_series(common)))


def _ct_series(common: dict[str, str]) -> SyntheticSeries:
    series_uid, frame_of_reference = generate_uid(), generate_uid()
    files = []
    for index in range(CT_SLICES):
        ds = _dataset(CTImageStorage, series_uid, common, modality="CT", series_number=1,
                      description="CT phantom", instance_number=index + 1)
        ds.ImagePositionPatient = [-CT_SIDE / 2, -CT_SIDE / 2, index * CT_SLICE_MM]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [1, 1]
        ds.SliceThickness = CT_SLICE_MM
        ds.FrameOfReferenceUID = frame_of_reference
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = CT_INTERCEPT, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.KVP, ds.ImageType = 120, ["ORIGINAL", "PRIMARY", "AXIAL"]
        _set_pixels(ds, _phantom_slice(index) - CT_INTERCEPT, bits_stored=12)
        files.append(_part10(ds, ExplicitVRLittleEndian))
    return SyntheticSeries(series_uid, "CT phantom", tuple(files))


def _multiframe_series(common: dict[str, str]) -> SyntheticSeries:
    series_uid = generate_uid()
    ds = _dataset(MultiFrameGrayscaleWordSecondaryCaptureImageStorage, series_uid, common, modality="OT",
                  series_number=2, description="Multi-frame checkerboard", instance_number=1)
    ds.NumberOfFrames = MULTIFRAME_FRAMES
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.FrameTime = 100
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    frames = np.stack([_checkerboard(MULTIFRAME_SIDE, shift=frame * 4) for frame in range(MULTIFRAME_FRAMES)])
    _set_pixels(ds, frames, bits_stored=12)
    return SyntheticSeries(series_uid, "Multi-frame checkerboard", (_part10(ds, ExplicitVRLittleEndian),))


def _jpeg2000_series(common: dict[str, str]) -> SyntheticSeries:
    series_uid = generate_uid()
    ds = _dataset(SecondaryCaptureImageStorage, series_uid, common, modality="OT", series_number=3,
                  description="JPEG 2000 rings", instance_number=1)
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    _set_pixels(ds, _rings(JPEG2000_SIDE), bits_stored=12)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.compress(JPEG2000Lossless)
    return SyntheticSeries(series_uid, "JPEG 2000 rings", (_part10(ds, JPEG2000Lossless),))


def _dataset(sop_class: UID, series_uid: str, common: dict[str, str], *, modality: str, series_number: int,
             description: str, instance_number: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series_uid
    for keyword, value in common.items():
        setattr(ds, keyword, value)
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.InstanceNumber = instance_number
    ds.SeriesDate, ds.SeriesTime = common["StudyDate"], common["StudyTime"]
    return ds


def _set_pixels(ds: Dataset, pixels: np.ndarray, *, bits_stored: int) -> None:
    """Store ``pixels`` (frames, rows, columns or rows, columns) as unsigned 16-bit MONOCHROME2."""
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()


def _part10(ds: Dataset, transfer_syntax: UID) -> bytes:
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _phantom_slice(index: int) -> np.ndarray:
    """Hounsfield units of a body-like ellipse with a bone ring and a bright dot that moves from slice to slice."""
    y, x = np.mgrid[0:CT_SIDE, 0:CT_SIDE] - CT_SIDE / 2
    image = np.full((CT_SIDE, CT_SIDE), AIR_HU, dtype=np.int32)
    body = (x / 56) ** 2 + (y / 44) ** 2 <= 1
    image[body] = TISSUE_HU + (x[body] * 2).astype(np.int32)
    ring = np.abs(np.hypot(x, y) - 28) <= 3
    image[ring] = BONE_HU
    dot = np.hypot(x - (index * 4 - 14), y + 10) <= 5
    image[dot] = BONE_HU
    return image


def _checkerboard(side: int, *, shift: int) -> np.ndarray:
    y, x = np.mgrid[0:side, 0:side]
    return np.where(((x + shift) // 12 + y // 12) % 2 == 0, 3800, 300)


def _rings(side: int) -> np.ndarray:
    y, x = np.mgrid[0:side, 0:side] - side / 2
    radius = np.hypot(x, y)
    return (2048 + 1800 * np.sin(radius / 4)).astype(np.int32)
