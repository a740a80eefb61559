"""Stored instances transcoded whole to Explicit VR Little Endian or JPEG 2000 Lossless (a new Part-10 file)."""

from __future__ import annotations

import shutil
import struct
import tempfile
from typing import Any, BinaryIO, cast

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import decompress
from pydicom.tag import Tag
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless
from pydicom.valuerep import VR

from dicom_core.model.errors import NotAcceptableError
from dicom_core.storage.blob_reads import SPOOL_MEMORY_BYTES
from dicom_core.wado.decoders import plugin_option, rle_frames
from dicom_core.wado.jpeg2000_encoding import encode_jpeg2000
from dicom_core.wado.little_endian import prepare_explicit_little_endian
from dicom_core.wado.pixel_decoding import keep_lossy_history, number_of_frames, read_instance, transfer_syntax
from dicom_core.wado.stored_frames import drop_offset_tables
from dicom_core.wado.transfer_syntaxes import check_transcodable, described, needs_transcoding, normalized

_PIXEL_DATA = Tag("PixelData")
# A native Pixel Data element of an empty value in Explicit VR Little Endian ends with its 4-byte length.
_PIXEL_DATA_HEADERS = {vr: struct.pack("<HH2sHI", _PIXEL_DATA.group, _PIXEL_DATA.element, vr.encode(), 0, 0)
                       for vr in (VR.OB, VR.OW)}
_MAX_VALUE_LENGTH = 2**32 - 2  # PS3.5 §7.1.1: 0xFFFFFFFF means undefined length; values have an even length


def transcode_instance(source: BinaryIO, target: str) -> BinaryIO:
    """Return the Part-10 file re-encoded in ``target`` (File Meta updated, all else kept), at position 0."""
    dataset = read_instance(source)
    stored = transfer_syntax(dataset)
    check_transcodable(stored, target)
    output = cast(BinaryIO, tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES))
    if not needs_transcoding(stored, target):
        source.seek(0)
        shutil.copyfileobj(source, output)
        output.seek(0)
        return output
    wanted = UID(normalized(target))
    frames: list[np.ndarray] = []  # decoded frames written after the rest of the file (see _decompress)
    if wanted == JPEG2000Lossless:
        encode_jpeg2000(dataset, stored)
    elif "PixelData" in dataset and stored.is_compressed:
        frames = _decompress(dataset, stored)
    prepare_explicit_little_endian(
        dataset, from_big_endian=stored == ExplicitVRBigEndian, pixel_data=wanted == ExplicitVRLittleEndian
    )
    dataset.file_meta.TransferSyntaxUID = wanted
    # This service writes the file now: pydicom fills in its own implementation identification.
    for keyword in ("ImplementationClassUID", "ImplementationVersionName"):
        if keyword in dataset.file_meta:
            delattr(dataset.file_meta, keyword)
    try:
        pydicom.dcmwrite(output, dataset, enforce_file_format=True)
    except Exception as exc:  # values pydicom cannot encode in the new transfer syntax
        raise NotAcceptableError(f"The instance cannot be written as {described(wanted)}: {exc}") from exc
    if frames:
        _append_pixel_data(output, dataset["PixelData"].VR, frames)
    output.seek(0)
    return output


def _decompress(dataset: Dataset, stored: UID) -> list[np.ndarray]:
    """Decode the Pixel Data and describe native frames in place, as pydicom's ``decompress`` does (YCbCr becomes RGB).

    When Pixel Data is the last element its value is left empty and the frames are returned, for
    :func:`_append_pixel_data` to write after the rest: joining them into one value that pydicom then writes
    copied the pixels twice more (a fifth of a transcode, profiled). Otherwise they are its value; [] is returned.
    """
    keep_lossy_history(dataset, stored)
    if int(dataset.get("BitsAllocated", 8)) == 1:
        # Decoded 1-bit frames are one byte per pixel and must be packed: pydicom's decompress does that.
        try:
            decompress(dataset, as_rgb=True, generate_instance_uid=False, **plugin_option(stored))
        except Exception as exc:  # decoders raise many exception types
            raise NotAcceptableError(f"The pixel data cannot be decoded: {exc}") from exc
        drop_offset_tables(dataset)
        return []
    try:
        frames, properties = _decoded_pixel_data(dataset, stored)
    except Exception as exc:  # decoders raise many exception types
        raise NotAcceptableError(f"The pixel data cannot be decoded: {exc}") from exc
    if not frames:
        raise NotAcceptableError("The pixel data has no frame to decode.")
    if sum(frame.nbytes for frame in frames) > _MAX_VALUE_LENGTH:
        raise NotAcceptableError("The decoded pixel data is over the 4 GiB a native Pixel Data value can hold.")
    dataset.PhotometricInterpretation = properties["photometric_interpretation"]
    if int(properties["samples_per_pixel"]) > 1:
        dataset.PlanarConfiguration = properties["planar_configuration"]
    if "NumberOfFrames" in dataset or len(frames) > 1:
        dataset.NumberOfFrames = len(frames)
    drop_offset_tables(dataset)
    last = max(dataset.keys()) == _PIXEL_DATA
    dataset.PixelData = b"" if last else _even(b"".join(frame.data.cast("B") for frame in frames))
    element = dataset["PixelData"]
    element.VR = VR.OB if int(dataset.BitsAllocated) <= 8 else VR.OW
    element.is_undefined_length = False
    return frames if last else []


def _decoded_pixel_data(dataset: Dataset, stored: UID) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Every frame decoded to little endian (as bytes, shaped or not), and the properties of the decoded pixels."""
    if stored == RLELossless and (grey := rle_frames(dataset, number_of_frames(dataset))) is not None:
        frames = [np.frombuffer(frame, dtype=np.uint8) for frame in grey]
        return frames, {"photometric_interpretation": str(dataset.PhotometricInterpretation), "samples_per_pixel": 1}
    frames = []
    properties: dict[str, Any] = {}  # the decoded pixels' photometric interpretation etc., as of the last frame
    for pixels, frame_properties in get_decoder(stored).iter_array(dataset, as_rgb=True, **plugin_option(stored)):
        frames.append(np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<")))
        properties = frame_properties
    return frames, properties


def _append_pixel_data(output: BinaryIO, vr: str, frames: list[np.ndarray]) -> None:
    """Write ``frames`` as the value of the empty Pixel Data element that ``output`` ends with, and its length."""
    end = output.tell()
    header = _PIXEL_DATA_HEADERS[VR(vr)]
    output.seek(end - len(header))
    if output.read(len(header)) != header:
        raise RuntimeError("The written file does not end with an empty Pixel Data element.")
    length = 0
    for frame in frames:
        length += output.write(frame.data.cast("B"))
    if length % 2:
        length += output.write(b"\x00")
    output.seek(end - 4)
    output.write(struct.pack("<I", length))
    output.seek(0, 2)


def _even(value: bytes) -> bytes:
    return value + b"\x00" if len(value) % 2 else value
