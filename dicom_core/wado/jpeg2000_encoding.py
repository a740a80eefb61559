"""Decoded frames encoded as JPEG 2000 Lossless codestreams, one per frame or a whole Pixel Data value."""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.pixels.encoders.base import get_encoder
from pydicom.uid import UID, JPEG2000Lossless
from pydicom.valuerep import VR

from dicom_core.model.errors import NotAcceptableError
from dicom_core.wado.pixel_decoding import DecodedFrame, decode_frames, keep_lossy_history, number_of_frames
from dicom_core.wado.stored_frames import drop_offset_tables
from dicom_core.wado.transfer_syntaxes import ORIGINAL

# pylibjpeg-openjpeg always codes 6 wavelet resolutions, which needs 2**5 pixels per side.
JPEG2000_MIN_SIDE = 32
_FLOAT_PIXEL_DATA = ("FloatPixelData", "DoubleFloatPixelData")


def jpeg2000_codestream(decoded: DecodedFrame) -> bytes:
    """One decoded frame as a JPEG 2000 Lossless codestream; NotAcceptableError where the encoder cannot code it."""
    options: dict[str, Any] = dict(decoded.properties, number_of_frames=1)
    rows, columns = int(options["rows"]), int(options["columns"])
    if min(rows, columns) < JPEG2000_MIN_SIDE:
        raise NotAcceptableError(
            f"Frames of {rows}x{columns} pixels cannot be encoded as JPEG 2000 Lossless here (the encoder needs "
            f"at least {JPEG2000_MIN_SIDE} pixels per side); retrieve them with transfer-syntax={ORIGINAL}."
        )
    try:
        return bytes(get_encoder(JPEG2000Lossless).encode(decoded.pixels, **options))
    except Exception as exc:  # the encoder refuses bit depths and photometric interpretations it can't code
        raise NotAcceptableError(f"The pixel data cannot be encoded as JPEG 2000 Lossless: {exc}") from exc


def encode_jpeg2000(dataset: Dataset, stored: UID) -> None:
    """Replace the Pixel Data by JPEG 2000 Lossless codestreams, one fragment per frame, in place."""
    if any(keyword in dataset for keyword in _FLOAT_PIXEL_DATA):
        raise NotAcceptableError("Float pixel data cannot be encoded as JPEG 2000 Lossless.")
    if "PixelData" not in dataset:
        return
    count = number_of_frames(dataset)
    codestreams: list[bytes] = []
    for decoded in decode_frames(dataset, range(1, count + 1)):
        codestreams.append(jpeg2000_codestream(decoded))
        photometric, samples = decoded.photometric_interpretation, int(decoded.properties["samples_per_pixel"])
    keep_lossy_history(dataset, stored)
    dataset.PhotometricInterpretation = photometric
    if samples > 1:
        dataset.PlanarConfiguration = 0  # PS3.5 §8.2.4: colour-by-pixel for JPEG 2000
    drop_offset_tables(dataset)
    # PS3.5 A.4: a Basic Offset Table can only address 4 GiB; beyond that the Extended Offset Table is needed.
    if sum(len(codestream) + 8 for codestream in codestreams) < 2**32:
        dataset.PixelData = encapsulate(codestreams)
    else:
        dataset.PixelData, dataset.ExtendedOffsetTable, dataset.ExtendedOffsetTableLengths = (
            encapsulate_extended(codestreams)
        )
    dataset["PixelData"].VR = VR.OB
    dataset["PixelData"].is_undefined_length = True
