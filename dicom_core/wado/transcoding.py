"""Transcoding stored instances and their frames to Explicit VR Little Endian or JPEG 2000 Lossless."""

from __future__ import annotations

import shutil
import struct
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, encapsulate_extended, get_frame
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.encoders.base import get_encoder
from pydicom.pixels.utils import decompress, get_nr_frames, pack_bits, unpack_bits
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    AllTransferSyntaxes,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
    RLELossless,
)
from pydicom.valuerep import VR

from dicom_core.model.errors import NotAcceptableError
from dicom_core.model.frames import native_frame_index
from dicom_core.model.uids import normalize_uid
from dicom_core.storage.blob_reads import SPOOL_MEMORY_BYTES
from dicom_core.wado.decoders import plugin_option, rle_frames

ORIGINAL = "*"  # the transfer-syntax parameter value meaning "as stored"
TRANSCODE_TARGETS: frozenset[UID] = frozenset({ExplicitVRLittleEndian, JPEG2000Lossless})

_POSSIBLE = ", ".join([f"'{ORIGINAL}' (as stored)"] + [f"{uid} ({uid.name})" for uid in sorted(TRANSCODE_TARGETS)])
_KNOWN_SYNTAXES = frozenset(AllTransferSyntaxes)
# Decoding these loses nothing more, but the pixels were lossy-compressed once: PS3.3 C.7.6.1.1.5 says so forever.
_LOSSY_METHODS = {JPEGBaseline8Bit: "ISO_10918_1", JPEGExtended12Bit: "ISO_10918_1", JPEGLSNearLossless: "ISO_14495_1"}
# Bytes per swapped unit of each binary VR whose value a big endian file stores in big endian order.
_SWAP_WIDTHS: dict[str, int] = {VR.OW: 2, VR.OL: 4, VR.OF: 4, VR.OD: 8, VR.OV: 8}
# pylibjpeg-openjpeg always codes 6 wavelet resolutions, which needs 2**5 pixels per side.
_JPEG2000_MIN_SIDE = 32
_FLOAT_PIXEL_DATA = ("FloatPixelData", "DoubleFloatPixelData")
_OFFSET_TABLES = ("ExtendedOffsetTable", "ExtendedOffsetTableLengths")
_PIXEL_DATA = Tag("PixelData")
# A native Pixel Data element of an empty value in Explicit VR Little Endian ends with its 4-byte length.
_PIXEL_DATA_HEADERS = {vr: struct.pack("<HH2sHI", _PIXEL_DATA.group, _PIXEL_DATA.element, vr.encode(), 0, 0)
                       for vr in (VR.OB, VR.OW)}
_MAX_VALUE_LENGTH = 2**32 - 2  # PS3.5 §7.1.1: 0xFFFFFFFF means undefined length; values have an even length


@dataclass(frozen=True)
class DecodedFrame:
    """One decoded frame, shaped (rows, columns[, samples]), and the Image Pixel values describing it."""

    pixels: np.ndarray
    properties: dict[str, str | int]  # pydicom's names: rows, bits_stored, photometric_interpretation, ...

    @property
    def photometric_interpretation(self) -> str:
        """The frame's Photometric Interpretation after decoding (YCbCr is converted to RGB)."""
        return str(self.properties["photometric_interpretation"])


def can_decode(transfer_syntax: str) -> bool:
    """Tell whether pixel data in ``transfer_syntax`` can be decoded here."""
    try:
        return bool(get_decoder(UID(_normalized(transfer_syntax))).is_available)
    except (NotImplementedError, ValueError):
        return False


def needs_transcoding(stored: str, requested: str) -> bool:
    """Tell whether answering ``requested`` from a file stored as ``stored`` changes its bytes."""
    wanted = _normalized(requested)
    return wanted != ORIGINAL and wanted != _normalized(stored)


def check_transcodable(stored: str, requested: str) -> None:
    """Raise NotAcceptableError (406) unless a file stored as ``stored`` can be returned as ``requested``."""
    if not needs_transcoding(stored, requested):
        return
    wanted = _normalized(requested)
    if wanted not in TRANSCODE_TARGETS:
        raise NotAcceptableError(
            f"The transfer syntax {_described(wanted)} cannot be produced; possible are {_POSSIBLE}."
        )
    if not can_decode(stored):
        raise NotAcceptableError(
            f"The instance is stored as {_described(_normalized(stored))}, which cannot be transcoded; "
            f"retrieve it with transfer-syntax={ORIGINAL}."
        )


def read_instance(source: BinaryIO) -> Dataset:
    """Parse the whole Part-10 file in ``source`` (read from its start); NotAcceptableError if unreadable."""
    source.seek(0)
    try:
        # force: files stored without preamble (pydicom's own in-memory files) still have File Meta Information.
        dataset = pydicom.dcmread(source, force=True)
        dataset.file_meta.TransferSyntaxUID  # noqa: B018 - a file without it is not one we can answer from
    except Exception as exc:  # pydicom raises many exception types for malformed input
        raise NotAcceptableError(f"The stored instance cannot be read as DICOM: {exc}") from exc
    return dataset


def transfer_syntax(dataset: Dataset) -> UID:
    """Return the dataset's Transfer Syntax UID, without padding."""
    return UID(_normalized(str(dataset.file_meta.TransferSyntaxUID)))


def number_of_frames(dataset: Dataset) -> int:
    """Return the number of frames of the dataset's Pixel Data (0 when it has none)."""
    if "PixelData" not in dataset:
        return 0
    try:
        return int(get_nr_frames(dataset, warn=False))
    except (TypeError, ValueError) as exc:
        raise NotAcceptableError(f"The instance's Number of Frames is not a number: {exc}") from exc


def check_frames(dataset: Dataset, frames: Sequence[int]) -> None:
    """Raise IndexError for the first 1-based frame number the dataset does not have."""
    available = number_of_frames(dataset)
    for frame in frames:
        if not 1 <= frame <= available:
            raise IndexError(f"The instance has {available} frame(s); frame {frame} does not exist.")


def decode_frames(dataset: Dataset, frames: Sequence[int]) -> Iterator[DecodedFrame]:
    """Decode the 1-based ``frames`` in order, YCbCr converted to RGB; NotAcceptableError if impossible."""
    syntax = transfer_syntax(dataset)
    if not can_decode(syntax):
        raise NotAcceptableError(f"Pixel data stored as {_described(syntax)} cannot be decoded.")
    try:
        arrays = get_decoder(syntax).iter_array(dataset, indices=[frame - 1 for frame in frames], as_rgb=True,
                                                **plugin_option(syntax))
        for pixels, properties in arrays:
            yield DecodedFrame(pixels, properties)
    except Exception as exc:  # decoders raise ValueError, RuntimeError, OSError, ... on data they cannot handle
        raise NotAcceptableError(f"The pixel data cannot be decoded: {exc}") from exc


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
    wanted = UID(_normalized(target))
    frames: list[np.ndarray] = []  # decoded frames written after the rest of the file (see _decompress)
    if wanted == JPEG2000Lossless:
        _encode_jpeg2000(dataset, stored)
    elif "PixelData" in dataset and stored.is_compressed:
        frames = _decompress(dataset, stored)
    _prepare_explicit_little_endian(
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
        raise NotAcceptableError(f"The instance cannot be written as {_described(wanted)}: {exc}") from exc
    if frames:
        _append_pixel_data(output, dataset["PixelData"].VR, frames)
    output.seek(0)
    return output


def frame_bytes(source: BinaryIO, frames: Sequence[int], target: str) -> list[bytes]:
    """Return each 1-based frame as native little endian bytes or a JPEG 2000 Lossless codestream (``target``)."""
    dataset = read_instance(source)
    stored = transfer_syntax(dataset)
    check_transcodable(stored, target)
    check_frames(dataset, frames)
    wanted = _normalized(target)
    if not needs_transcoding(stored, target) or (wanted == ExplicitVRLittleEndian and not stored.is_compressed):
        if stored == ExplicitVRBigEndian and wanted == ExplicitVRLittleEndian:
            _prepare_explicit_little_endian(dataset, from_big_endian=True, pixel_data=True)
        return [_stored_frame(dataset, frame) for frame in frames]
    if wanted == ExplicitVRLittleEndian:
        return [_little_endian_bytes(decoded.pixels) for decoded in decode_frames(dataset, frames)]
    return [_jpeg2000_codestream(decoded) for decoded in decode_frames(dataset, frames)]


def _normalized(syntax: str) -> str:
    return normalize_uid(syntax.strip())


def _described(syntax: str) -> str:
    return f"{syntax} ({UID(syntax).name})" if syntax in _KNOWN_SYNTAXES else f"'{syntax}' (unknown)"


def _stored_frame(dataset: Dataset, frame: int) -> bytes:
    """Return a frame's bytes as the dataset holds them: a native slice or the frame's joined fragments."""
    pixels = cast(bytes, dataset.PixelData)
    count = number_of_frames(dataset)
    if transfer_syntax(dataset).is_encapsulated:
        offsets = tuple(dataset[keyword].value for keyword in _OFFSET_TABLES) if _OFFSET_TABLES[0] in dataset else None
        try:
            return get_frame(pixels, frame - 1, number_of_frames=count, extended_offsets=offsets)
        except Exception as exc:  # malformed encapsulation
            raise NotAcceptableError(f"Frame {frame} cannot be read from the encapsulated pixel data: {exc}") from exc
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    samples, bits = int(dataset.get("SamplesPerPixel") or 1), int(dataset.BitsAllocated)
    index = native_frame_index(
        0, len(pixels), rows=rows, columns=columns, samples=samples, bits_allocated=bits,
        photometric=str(dataset.get("PhotometricInterpretation") or ""), number_of_frames=count,
    )
    if index is not None:
        ((offset, length),) = index.ranges(frame)
        return pixels[offset : offset + length]
    if bits == 1:
        return _bit_packed_frame(pixels, frame, rows * columns * samples)
    raise NotAcceptableError(f"The pixel data is shorter than {count} frame(s) of {rows}x{columns} pixels.")


def _bit_packed_frame(pixels: bytes, frame: int, bits_per_frame: int) -> bytes:
    """Return one frame of 1-bit data packed on its own, starting at a byte boundary (PS3.5 §8.1.1)."""
    first_bit = (frame - 1) * bits_per_frame
    start, end = first_bit // 8, -(-(first_bit + bits_per_frame) // 8)
    if end > len(pixels):
        raise NotAcceptableError(f"The 1-bit pixel data is too short for frame {frame}.")
    bits = cast(np.ndarray, unpack_bits(pixels[start:end]))
    skip = first_bit - start * 8
    return pack_bits(bits[skip : skip + bits_per_frame], pad=False)


def _little_endian_bytes(pixels: np.ndarray) -> bytes:
    return np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<")).tobytes()


def _jpeg2000_codestream(decoded: DecodedFrame) -> bytes:
    options: dict[str, Any] = dict(decoded.properties, number_of_frames=1)
    rows, columns = int(options["rows"]), int(options["columns"])
    if min(rows, columns) < _JPEG2000_MIN_SIDE:
        raise NotAcceptableError(
            f"Frames of {rows}x{columns} pixels cannot be encoded as JPEG 2000 Lossless here (the encoder needs "
            f"at least {_JPEG2000_MIN_SIDE} pixels per side); retrieve them with transfer-syntax={ORIGINAL}."
        )
    try:
        return bytes(get_encoder(JPEG2000Lossless).encode(decoded.pixels, **options))
    except Exception as exc:  # the encoder refuses bit depths and photometric interpretations it can't code
        raise NotAcceptableError(f"The pixel data cannot be encoded as JPEG 2000 Lossless: {exc}") from exc


def _decompress(dataset: Dataset, stored: UID) -> list[np.ndarray]:
    """Decode the Pixel Data and describe native frames in place, as pydicom's ``decompress`` does (YCbCr becomes RGB).

    When Pixel Data is the last element its value is left empty and the frames are returned, for
    :func:`_append_pixel_data` to write after the rest: joining them into one value that pydicom then writes
    copied the pixels twice more (a fifth of a transcode, profiled). Otherwise they are its value; [] is returned.
    """
    _keep_lossy_history(dataset, stored)
    if int(dataset.get("BitsAllocated", 8)) == 1:
        # Decoded 1-bit frames are one byte per pixel and must be packed: pydicom's decompress does that.
        try:
            decompress(dataset, as_rgb=True, generate_instance_uid=False, **plugin_option(stored))
        except Exception as exc:  # decoders raise many exception types
            raise NotAcceptableError(f"The pixel data cannot be decoded: {exc}") from exc
        _drop_offset_tables(dataset)
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
    _drop_offset_tables(dataset)
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


def _drop_offset_tables(dataset: Dataset) -> None:
    for keyword in _OFFSET_TABLES:  # they describe the fragments that are gone
        if keyword in dataset:
            delattr(dataset, keyword)


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


def _encode_jpeg2000(dataset: Dataset, stored: UID) -> None:
    """Replace the Pixel Data by JPEG 2000 Lossless codestreams, one fragment per frame, in place."""
    if any(keyword in dataset for keyword in _FLOAT_PIXEL_DATA):
        raise NotAcceptableError("Float pixel data cannot be encoded as JPEG 2000 Lossless.")
    if "PixelData" not in dataset:
        return
    count = number_of_frames(dataset)
    codestreams: list[bytes] = []
    for decoded in decode_frames(dataset, range(1, count + 1)):
        codestreams.append(_jpeg2000_codestream(decoded))
        photometric, samples = decoded.photometric_interpretation, int(decoded.properties["samples_per_pixel"])
    _keep_lossy_history(dataset, stored)
    dataset.PhotometricInterpretation = photometric
    if samples > 1:
        dataset.PlanarConfiguration = 0  # PS3.5 §8.2.4: colour-by-pixel for JPEG 2000
    for keyword in _OFFSET_TABLES:
        if keyword in dataset:
            delattr(dataset, keyword)
    # PS3.5 A.4: a Basic Offset Table can only address 4 GiB; beyond that the Extended Offset Table is needed.
    if sum(len(codestream) + 8 for codestream in codestreams) < 2**32:
        dataset.PixelData = encapsulate(codestreams)
    else:
        dataset.PixelData, dataset.ExtendedOffsetTable, dataset.ExtendedOffsetTableLengths = (
            encapsulate_extended(codestreams)
        )
    dataset["PixelData"].VR = VR.OB
    dataset["PixelData"].is_undefined_length = True


def _keep_lossy_history(dataset: Dataset, stored: UID) -> None:
    method = _LOSSY_METHODS.get(stored)
    if method and "LossyImageCompression" not in dataset:
        dataset.LossyImageCompression = "01"
        dataset.LossyImageCompressionMethod = method


def _prepare_explicit_little_endian(dataset: Dataset, *, from_big_endian: bool, pixel_data: bool) -> None:
    """Parse every element so each has its VR; from a big endian file, byte-swap the binary values too."""
    bits_allocated = int(dataset.get("BitsAllocated") or 8)
    for element in dataset.iterall():  # iterating converts raw elements: a file's own VRs can be missing or wrong
        width = _SWAP_WIDTHS.get(element.VR) if from_big_endian else None
        if width is None or not isinstance(element.value, (bytes, bytearray)) or not element.value:
            continue
        if element.keyword == "PixelData":
            if not pixel_data:
                continue
            # Big endian OW pixel data is swapped per pixel when pixels are wider than a word.
            width = max(width, bits_allocated // 8)
        value = bytes(element.value)
        whole = len(value) // width * width
        swapped = np.frombuffer(value[:whole], dtype=f">u{width}").astype(f"<u{width}").tobytes()
        element.value = swapped + value[whole:]
