"""Synthetic studies for the viewer tests: CT, multi-frame, JPEG 2000, PDF, ultrasound cine, SEG and video instances."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import pack_bits
from pydicom.uid import (
    MPEG4HP41,
    UID,
    CTImageStorage,
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
    UltrasoundMultiFrameImageStorage,
    VideoPhotographicImageStorage,
    generate_uid,
)

from tests.factories import h264_stream

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


# --- A study of what viewers need bulk data for: a PDF, an ultrasound cine, a segmentation over CT ----------

US_FRAMES = 10
US_ROWS, US_COLUMNS = 96, 128
SEGMENT_LABEL = "Bone ring"
VIDEO_FRAMES, VIDEO_ROWS, VIDEO_COLUMNS = 30, 96, 128
PDF_TEXT = "Synthetic report"


def build_document_study(patient_name: str, patient_id: str) -> SyntheticStudy:
    """Return a study of five series: 8 CT slices, an encapsulated PDF, an RGB ultrasound cine, a SEG of the CT
    and an H.264 video."""
    study_uid = generate_uid()
    common = {"StudyInstanceUID": study_uid, "PatientName": patient_name, "PatientID": patient_id,
              "StudyDate": "20240302", "StudyTime": "111500", "AccessionNumber": "VIEW-2",
              "StudyDescription": "Viewer documents", "PatientBirthDate": "19700101", "PatientSex": "O"}
    ct = _ct_series(common)
    return SyntheticStudy(study_uid, patient_name, patient_id,
                          (ct, _pdf_series(common), _ultrasound_series(common), _segmentation_series(common, ct),
                           _video_series(common)))


def _pdf_series(common: dict[str, str]) -> SyntheticSeries:
    series_uid = generate_uid()
    ds = _dataset(EncapsulatedPDFStorage, series_uid, common, modality="DOC", series_number=2,
                  description="PDF report", instance_number=1)
    ds.ConversionType, ds.BurnedInAnnotation, ds.DocumentTitle = "WSD", "YES", PDF_TEXT
    ds.ContentDate, ds.ContentTime, ds.AcquisitionDateTime = common["StudyDate"], "111500", "20240302111500"
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    document = minimal_pdf(PDF_TEXT)
    ds.EncapsulatedDocument = document + b"\0" * (len(document) % 2)
    ds.EncapsulatedDocumentLength = len(document)
    return SyntheticSeries(series_uid, "PDF report", (_part10(ds, ExplicitVRLittleEndian),))


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF 1.4 showing ``text`` and 30 numbered lines (over 1 KiB: a BulkDataURI in metadata)."""
    lines = "".join(f" 0 -18 Td (Line {number} of the synthetic report.) Tj" for number in range(1, 31))
    stream = f"BT /F1 36 Tf 72 720 Td ({text}) Tj /F1 12 Tf{lines} ET".encode("ascii")
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    body, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, content in enumerate(objects, start=1):
        offsets.append(len(body))
        body += b"%d 0 obj\n%s\nendobj\n" % (number, content)
    table = len(body)
    body += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    body += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    body += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, table)
    return bytes(body)


def _ultrasound_series(common: dict[str, str]) -> SyntheticSeries:
    series_uid = generate_uid()
    ds = _dataset(UltrasoundMultiFrameImageStorage, series_uid, common, modality="US", series_number=3,
                  description="Ultrasound cine", instance_number=1)
    ds.NumberOfFrames, ds.FrameTime, ds.CineRate = US_FRAMES, 100, 10
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.Rows, ds.Columns, ds.SamplesPerPixel = US_ROWS, US_COLUMNS, 3
    ds.PhotometricInterpretation, ds.PlanarConfiguration = "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    y, x = np.mgrid[0:US_ROWS, 0:US_COLUMNS]
    frames = np.zeros((US_FRAMES, US_ROWS, US_COLUMNS, 3), dtype=np.uint8)
    for frame in range(US_FRAMES):  # a speckled fan with an orange disc that crosses it
        frames[frame, ..., :] = ((x * 7 + y * 13 + frame * 31) % 64)[..., None] * 3 + 20
        disc = np.hypot(x - (40 + frame * 5), y - US_ROWS / 2) <= 14
        frames[frame][disc] = (250, 150, 40)
    ds.PixelData = frames.tobytes()
    return SyntheticSeries(series_uid, "Ultrasound cine", (_part10(ds, ExplicitVRLittleEndian),))


def _segmentation_series(common: dict[str, str], ct: SyntheticSeries) -> SyntheticSeries:
    """A binary SEG with one segment (the phantom's bone ring) on every CT slice, written by hand with pydicom."""
    slices = [dcmread(io.BytesIO(file)) for file in ct.files]
    series_uid = generate_uid()
    ds = _dataset(SegmentationStorage, series_uid, common, modality="SEG", series_number=4,
                  description="Segmentation", instance_number=1)
    ds.FrameOfReferenceUID = slices[0].FrameOfReferenceUID
    ds.ImageType, ds.ContentLabel, ds.ContentDescription = ["DERIVED", "PRIMARY"], "BONE", "Bone ring"
    ds.ContentCreatorName, ds.ContentDate, ds.ContentTime = "Test^Writer", common["StudyDate"], "111500"
    ds.Manufacturer, ds.ManufacturerModelName, ds.DeviceSerialNumber = "dicomweb-tests", "pydicom", "1"
    ds.SoftwareVersions, ds.LossyImageCompression, ds.SegmentationType = "1", "00", "BINARY"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = CT_SIDE, CT_SIDE, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    ds.NumberOfFrames = len(slices)
    ds.ReferencedSeriesSequence = [_item(SeriesInstanceUID=ct.series_uid, ReferencedInstanceSequence=[
        _item(ReferencedSOPClassUID=CTImageStorage, ReferencedSOPInstanceUID=s.SOPInstanceUID) for s in slices])]
    ds.SegmentSequence = [_item(
        SegmentNumber=1, SegmentLabel=SEGMENT_LABEL, SegmentAlgorithmType="MANUAL",
        RecommendedDisplayCIELabValue=[53000, 53000, 20000],
        SegmentedPropertyCategoryCodeSequence=[_code("91723000", "Anatomical structure")],
        SegmentedPropertyTypeCodeSequence=[_code("272673000", "Bone")])]
    dimension_organization = generate_uid()
    ds.DimensionOrganizationSequence = [_item(DimensionOrganizationUID=dimension_organization)]
    ds.DimensionIndexSequence = [
        _item(DimensionOrganizationUID=dimension_organization, DimensionIndexPointer=0x0062000B,
              FunctionalGroupPointer=0x0062000A, DimensionDescriptionLabel="ReferencedSegmentNumber"),
        _item(DimensionOrganizationUID=dimension_organization, DimensionIndexPointer=0x00200032,
              FunctionalGroupPointer=0x00209113, DimensionDescriptionLabel="ImagePositionPatient")]
    ds.SharedFunctionalGroupsSequence = [_item(
        PlaneOrientationSequence=[_item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])],
        PixelMeasuresSequence=[_item(PixelSpacing=[1, 1], SliceThickness=CT_SLICE_MM,
                                     SpacingBetweenSlices=CT_SLICE_MM)])]
    purpose = _code("121322", "Source image for image processing operation", scheme="DCM")
    ds.PerFrameFunctionalGroupsSequence = [_item(
        DerivationImageSequence=[_item(
            DerivationCodeSequence=[_code("113076", "Segmentation", scheme="DCM")],
            SourceImageSequence=[_item(ReferencedSOPClassUID=CTImageStorage, ReferencedSOPInstanceUID=s.SOPInstanceUID,
                                       PurposeOfReferenceCodeSequence=[purpose])])],
        FrameContentSequence=[_item(DimensionIndexValues=[1, index + 1])],
        PlanePositionSequence=[_item(ImagePositionPatient=list(s.ImagePositionPatient))],
        SegmentIdentificationSequence=[_item(ReferencedSegmentNumber=1)]) for index, s in enumerate(slices)]
    y, x = np.mgrid[0:CT_SIDE, 0:CT_SIDE] - CT_SIDE / 2
    ring = (np.abs(np.hypot(x, y) - 28) <= 3).astype(np.uint8)
    ds.PixelData = pack_bits(np.stack([ring] * len(slices)))
    ds["PixelData"].VR = "OB"
    return SyntheticSeries(series_uid, "Segmentation", (_part10(ds, ExplicitVRLittleEndian),))


def _video_series(common: dict[str, str]) -> SyntheticSeries:
    """A Video Photographic instance stored as MPEG-4 AVC/H.264: its Pixel Data fragment is the elementary stream."""
    series_uid = generate_uid()
    ds = _dataset(VideoPhotographicImageStorage, series_uid, common, modality="XC", series_number=5,
                  description="Video", instance_number=1)
    ds.NumberOfFrames, ds.FrameTime, ds.CineRate = VIDEO_FRAMES, 100, 10
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.Rows, ds.Columns, ds.SamplesPerPixel = VIDEO_ROWS, VIDEO_COLUMNS, 3
    ds.PhotometricInterpretation, ds.PlanarConfiguration = "YBR_PARTIAL_420", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([h264_stream(VIDEO_FRAMES, VIDEO_COLUMNS, VIDEO_ROWS)], has_bot=True)
    ds["PixelData"].VR = "OB"
    return SyntheticSeries(series_uid, "Video", (_part10(ds, MPEG4HP41),))


def _item(**attributes: object) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def _code(value: str, meaning: str, scheme: str = "SCT") -> Dataset:
    return _item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)
